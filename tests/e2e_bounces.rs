//! End to end: bounces from real MTAs' formats, through the real listener, scored against
//! the right member; the threshold disables delivery with one notice; reminders, removal,
//! re-enabling; refusals by the relay itself. Refusals about the message (too big, spam)
//! score nobody and reach the owners once; forged and unrecognised bounces are kept and
//! forwarded, never scored; `members bounces reset`; the relay's SIZE at our edge.

mod common;

use common::*;
use std::path::Path;
use std::sync::Arc;

const FIXTURES: &str = "tests/fixtures/bounces";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(FIXTURES).join(name)).expect("bounce fixture")
}

/// The `To:` of a fixture: the VERP address it was sent to.
fn to_of(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let line = text
        .lines()
        .find(|l| l.starts_with("To:"))
        .expect("a To: line");
    line[3..]
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_string()
}

/// `members list --bounces`, as (address → the rest of its line).
fn bounce_rows(env: &TestEnv) -> Vec<(String, String)> {
    let out = env.cli(&["members", "list", "forum", "--bounces"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    out.stdout
        .lines()
        .skip(1)
        .filter_map(|l| {
            let (a, rest) = l.split_once(' ')?;
            a.contains('@')
                .then(|| (a.to_string(), rest.trim().to_string()))
        })
        .collect()
}

fn row(env: &TestEnv, addr: &str) -> String {
    bounce_rows(env)
        .into_iter()
        .find(|(a, _)| a.eq_ignore_ascii_case(addr))
        .map(|(_, r)| r)
        .unwrap_or_else(|| panic!("{addr} is not in members list --bounces"))
}

/// The score column of a row.
fn score(row: &str) -> f64 {
    row.split_whitespace()
        .find_map(|w| w.contains('.').then(|| w.parse::<f64>().ok()).flatten())
        .unwrap_or_else(|| panic!("no score in {row:?}"))
}

/// Bounce notices (not list posts) the sink got for `rcpt`.
fn notices_for(sink: &Sink, rcpt: &str) -> usize {
    sink.messages()
        .iter()
        .filter(|m| {
            m.rcpt.eq_ignore_ascii_case(rcpt) && subject_of(&m.data).contains("is paused for you")
        })
        .count()
}

fn owner_mails(sink: &Sink, word: &str) -> usize {
    sink.messages()
        .iter()
        .filter(|m| m.rcpt == OWNER && subject_of(&m.data).contains(&format!("{word} for bounces")))
        .count()
}

/// The member a fixture's `To:` (its VERP address, made without a MAC) names.
fn member_of(to: &str) -> String {
    let m = to.split_once('+').unwrap().1.split_once('@').unwrap().0;
    let (l, d) = m.rsplit_once('=').unwrap();
    format!("{l}@{d}")
}

/// Mail the owners got whose subject contains `word`.
fn owner_mail_with(sink: &Sink, word: &str) -> Vec<Received> {
    sink.messages()
        .into_iter()
        .filter(|m| m.rcpt == OWNER && subject_of(&m.data).contains(word))
        .collect()
}

/// Bounces forwarded to the owners unscored: with our X-Loop, from the null sender.
fn forwards(sink: &Sink) -> Vec<Received> {
    sink.messages()
        .into_iter()
        .filter(|m| {
            m.rcpt == OWNER
                && String::from_utf8_lossy(&m.data)
                    .starts_with("X-Loop: forum-owner@lists.example.org\r\n")
        })
        .collect()
}

#[test]
fn bounces_in_each_mtas_format_count_against_the_right_member() {
    let sink = Sink::start();
    let mut env = TestEnv::new(sink.port, Opts::default());
    // (fixture, score, last bounce shown): a refusal as spam is about the message (no
    // record, one report to the owners); a format nobody documents is forwarded, unscored.
    let files = [
        ("postfix-5.1.1.eml", 1.0, "hard 5.1.1"),
        ("postfix-delayed-4.4.1.eml", 0.5, "soft 4.4.1"),
        ("exim-dsn-5.2.2.eml", 1.0, "hard 5.2.2"),
        ("exim-text-550.eml", 1.0, "hard 5.0.0"),
        ("exchange-5.1.10.eml", 1.0, "hard 5.1.10"),
        ("gmail-5.1.1.eml", 1.0, "hard 5.1.1"),
        ("gmail-spam-5.7.1.eml", 0.0, "-"),
        ("qmail-5.1.1.eml", 1.0, "hard 5.1.1"),
        ("unknown-format.eml", 0.0, "-"),
        ("vacation-to-verp.eml", 0.0, "-"),
    ];
    let raws: Vec<(Vec<u8>, String)> = files
        .iter()
        .map(|(f, _, _)| {
            let raw = fixture(f);
            let member = member_of(&to_of(&raw));
            (raw, member)
        })
        .collect();
    let members: Vec<String> = raws
        .iter()
        .map(|(_, m)| m.clone())
        .chain(["bystander@ocmw-gent.be".to_string()])
        .collect();
    env.add_members(&members);
    let d = Daemon::start(&mut env);
    for (raw, member) in &raws {
        assert_eq!(post(d.port, "", &verp(&env, member), raw), 250, "{member}");
    }
    // A DSN to the plain bounce address (where only notices' bounces come): it names a
    // member, but nothing proves it came back for a copy to that member: not scored.
    let plain = String::from_utf8_lossy(&fixture("postfix-5.1.1.eml"))
        .replace("jan.peeters", "bystander")
        .replace("+bystander=ocmw-gent.be@", "@");
    assert_eq!(
        post(
            d.port,
            "",
            "forum-bounces@lists.example.org",
            plain.as_bytes()
        ),
        250
    );
    assert!(
        wait_until(WAIT, || d.stderr().matches("bounce recorded").count() == 7
            && d.stderr().contains("bounce about the message")
            && d.stderr().matches("bounce not scored").count() == 2),
        "{}",
        d.stderr()
    );
    assert!(wait_until(WAIT, || d
        .stderr()
        .contains("automatic reply to a list copy")));
    for ((f, want, last), m) in files.iter().zip(&members) {
        let r = row(&env, m);
        assert!(
            (score(&r) - want).abs() < 1e-9,
            "{f}: {m} has {r:?}, expected score {want}"
        );
        assert!(r.contains(last), "{f}: {m}: {r:?} should show {last}");
        assert!(r.starts_with("enabled"), "{f}: {r:?}");
    }
    assert_eq!(score(&row(&env, "bystander@ocmw-gent.be")), 0.0);
    // The owners got the spam refusal once and the two unscored bounces forwarded; no
    // member was mailed (all far below the threshold), and no bounce reached the list.
    assert!(wait_until(WAIT, || sink.count() == 3), "{}", sink.count());
    assert!(env.wait_queue_empty());
    assert_eq!(owner_mail_with(&sink, "refused as a message").len(), 1);
    let fw = forwards(&sink);
    assert_eq!(fw.len(), 2, "{:?}", sink.messages());
    assert!(fw.iter().all(|m| m.from.is_empty()), "forwarded from <>");
    assert_eq!(sink.messages().len(), 3);
}

fn threshold_opts(extra: &str) -> Opts {
    Opts {
        http: true,
        list_extra: format!("bounce_score_threshold = 2.0\n{extra}"),
        ..Opts::default()
    }
}

/// The Postfix fixture, for `member@ocmw-gent.be`.
fn hard_bounce(member_local: &str) -> (String, Vec<u8>) {
    let raw =
        String::from_utf8_lossy(&fixture("postfix-5.1.1.eml")).replace("jan.peeters", member_local);
    (to_of(raw.as_bytes()), raw.into_bytes())
}

#[test]
fn passing_the_threshold_disables_with_exactly_one_notice_until_re_enabled() {
    let sink = Sink::start();
    let mut env = TestEnv::new(sink.port, threshold_opts(""));
    let (bouncer, others) = ("jan.peeters@ocmw-gent.be", [member(1), member(2)]);
    env.add_members(&[bouncer.to_string(), others[0].clone(), others[1].clone()]);
    let d = Daemon::start(&mut env);
    let (_, hard) = hard_bounce("jan.peeters");
    let verp = verp(&env, bouncer);
    // A delay report (4.4.1) for this member's copy: soft.
    let soft = fixture("postfix-delayed-4.4.1.eml");
    // Sends `raw` to the VERP address `times` times; waits until all are recorded.
    let bounce = |d: &Daemon, raw: &[u8], times: usize| {
        let before = d.stderr().matches("bounce recorded").count();
        for _ in 0..times {
            assert_eq!(post(d.port, "", &verp, raw), 250);
        }
        assert!(wait_until(WAIT, || d
            .stderr()
            .matches("bounce recorded")
            .count()
            == before + times));
    };
    // Today: a soft bounce (0.5), then hard ones: the day counts as one hard bounce (1.0).
    bounce(&d, &soft, 1);
    bounce(&d, &hard, 3);
    let r = row(&env, bouncer);
    assert_eq!(score(&r), 1.0, "{r}");
    assert!(r.starts_with("enabled"), "{r}");
    assert_eq!(notices_for(&sink, bouncer), 0);

    // The threshold (2.0) is reached on another day: restart with the clock a day on.
    drop(d);
    env.daemon_env
        .push(("VRAAGBAAK_CLOCK_OFFSET".into(), "86400".into()));
    let d = Daemon::start(&mut env);
    bounce(&d, &hard, 3);
    assert!(wait_until(WAIT, || notices_for(&sink, bouncer) >= 1));
    assert!(wait_until(WAIT, || owner_mails(&sink, "delivery disabled") >= 1));
    let r = row(&env, bouncer);
    assert!(r.starts_with("disabled"), "{r}");
    assert_eq!(score(&r), 2.0, "{r}");

    // A post now reaches the others, not the disabled member.
    let mid = "after-disable@ocmw.be";
    assert_eq!(
        post(
            d.port,
            &others[0],
            LIST,
            &message(&others[0], "Vraag", mid, "Wie weet raad?")
        ),
        250
    );
    assert!(wait_until(WAIT, || sink
        .messages()
        .iter()
        .filter(|m| String::from_utf8_lossy(&m.data).contains(mid))
        .count()
        == 2));
    assert!(env.wait_queue_empty());
    assert_eq!(notices_for(&sink, bouncer), 1, "exactly one notice");
    assert_eq!(owner_mails(&sink, "delivery disabled"), 1);
    assert!(!sink
        .messages()
        .iter()
        .any(|m| m.rcpt == bouncer && String::from_utf8_lossy(&m.data).contains(mid)));

    // The notice's link turns delivery back on, once.
    let notice = sink
        .messages()
        .into_iter()
        .find(|m| m.rcpt == bouncer)
        .expect("the notice");
    let text = String::from_utf8_lossy(&notice.data).replace("=\r\n", "");
    let start = text
        .find("/confirm/")
        .expect("a confirm link in the notice");
    let path: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '/')
        .collect();
    let (status, page) = http(env.http_port, "GET", &path, "");
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Turn delivery back on"), "{page}");
    let (status, page) = http(env.http_port, "POST", &path, "");
    assert_eq!(status, 200);
    assert!(page.contains("You receive mail from"), "{page}");
    let (status, _) = http(env.http_port, "POST", &path, "");
    assert_ne!(status, 200, "a used link does nothing");
    let r = row(&env, bouncer);
    assert!(r.starts_with("enabled"), "{r}");
    assert_eq!(score(&r), 0.0);
    let mid2 = "after-reenable@ocmw.be";
    assert_eq!(
        post(
            d.port,
            &others[0],
            LIST,
            &message(&others[0], "Vraag 2", mid2, "En nu?")
        ),
        250
    );
    assert!(wait_until(WAIT, || sink.messages().iter().any(|m| m.rcpt
        == bouncer
        && String::from_utf8_lossy(&m.data).contains(mid2))));
}

#[test]
fn unanswered_notices_end_in_removal_and_the_owners_are_told() {
    let sink = Sink::start();
    let mut env = TestEnv::new(
        sink.port,
        threshold_opts(
            "bounce_you_are_disabled_warnings = 2\nbounce_you_are_disabled_warnings_interval = \"2s\"\n",
        ),
    );
    let bouncer = "jan.peeters@ocmw-gent.be";
    env.add_members(&[bouncer.to_string(), member(1)]);
    let (_, hard) = hard_bounce("jan.peeters");
    let verp = verp(&env, bouncer);
    // Two days of hard bounces: yesterday (clock one day behind) and today.
    env.daemon_env
        .push(("VRAAGBAAK_CLOCK_OFFSET".into(), "-86400".into()));
    let d = Daemon::start(&mut env);
    assert_eq!(post(d.port, "", &verp, &hard), 250);
    // "bounce recorded" is logged when the bounce is decided; "request handled" once the
    // decision is committed and flushed: only then may the daemon be killed.
    assert!(wait_until(WAIT, || d.stderr().contains("bounce recorded")
        && d.stderr().contains("request handled")));
    drop(d);
    env.daemon_env.clear();
    let d = Daemon::start(&mut env);
    assert_eq!(post(d.port, "", &verp, &hard), 250);
    assert!(wait_until(WAIT, || owner_mails(&sink, "member removed") == 1));
    assert_eq!(
        notices_for(&sink, bouncer),
        2,
        "the first notice and one reminder"
    );
    assert_eq!(owner_mails(&sink, "delivery disabled"), 1);
    assert!(bounce_rows(&env).iter().all(|(a, _)| a != bouncer));
    assert!(d
        .stderr()
        .contains("member removed after unanswered bounce notices"));
    assert!(!d.stderr().contains(bouncer), "no full address in the log");
}

#[test]
fn refusals_by_the_relay_count_unless_they_are_about_the_message() {
    let rejected = "weg@ocmw-gent.be";
    let spam = "streng@ocmw-gent.be";
    let sink = Sink::with(SinkBehaviour {
        reject: Some(Arc::new(move |r: &str| r == rejected)),
        reject_spam: Some(Arc::new(move |r: &str| r == spam)),
        ..Default::default()
    });
    let mut env = TestEnv::new(sink.port, Opts::default());
    let poster = member(1);
    env.add_members(&[rejected.to_string(), spam.to_string(), poster.clone()]);
    let d = Daemon::start(&mut env);
    let m = message(&poster, "Vraag", "relay-refusal@ocmw.be", "Wie weet raad?");
    assert_eq!(post(d.port, &poster, LIST, &m), 250);
    assert!(wait_until(WAIT, || d.stderr().contains("bounce recorded")
        && d.stderr().contains("list copy refused as a message")));
    assert!(env.wait_queue_empty());
    let r = row(&env, rejected);
    assert_eq!(score(&r), 1.0, "{r}");
    assert!(r.contains("hard 5.1.1"), "{r}");
    // "554 5.7.1 Message rejected as spam" is about the post: no record for the member,
    // one report to the owners.
    let r = row(&env, spam);
    assert_eq!(score(&r), 0.0, "{r}");
    assert!(!r.contains("5.7.1"), "{r}");
    assert_eq!(score(&row(&env, &poster)), 0.0);
    assert!(wait_until(WAIT, || owner_mail_with(
        &sink,
        "refused as a message"
    )
    .len()
        == 1));
    assert_eq!(d.stderr().matches("bounce recorded").count(), 1);
    // The relay's replies are logged without the members' addresses.
    let log = d.stderr();
    assert!(log.contains("***@ocmw-gent.be"), "{log}");
    assert!(!log.contains(rejected) && !log.contains(spam), "{log}");
}

/// A relay that refuses every copy of one post as too big (Postfix's default
/// `message_size_limit` below ours): nobody is scored, the owners hear of it once, also
/// when a receiving server's DSN about the same post comes back by mail later.
#[test]
fn a_post_refused_as_too_big_for_everyone_scores_nobody_and_is_reported_once() {
    let sink = Sink::with(SinkBehaviour {
        refuse_data: Some(Arc::new(|data: &[u8]| {
            String::from_utf8_lossy(data)
                .contains("BIG-POST-BODY")
                .then(|| "552 5.3.4 Message size exceeds fixed maximum message size".into())
        })),
        ..Default::default()
    });
    let mut env = TestEnv::new(sink.port, Opts::default());
    let members: Vec<String> = (1..=6).map(member).collect();
    env.add_members(&members);
    let d = Daemon::start(&mut env);
    let big = message(
        &members[0],
        "Groot",
        "big-post@ocmw.be",
        &format!("BIG-POST-BODY\r\n{}", "x".repeat(5000)),
    );
    assert_eq!(post(d.port, &members[0], LIST, &big), 250);
    assert!(wait_until(WAIT, || d
        .stderr()
        .matches("list copy refused as a message")
        .count()
        == members.len()));
    assert!(env.wait_queue_empty());
    for m in &members {
        let r = row(&env, m);
        assert_eq!(score(&r), 0.0, "{m}: {r}");
        assert!(!r.contains("5.3.4"), "{m}: {r}");
    }
    assert!(wait_until(WAIT, || owner_mail_with(
        &sink,
        "refused as a message"
    )
    .len()
        == 1));
    let report = &owner_mail_with(&sink, "refused as a message")[0];
    let text = String::from_utf8_lossy(&report.data).replace("=\r\n", "");
    assert!(text.contains("5.3.4"), "{text}");
    // A receiving server's DSN about the same post (5.3.4), to a member's valid VERP
    // address: scores nobody, and the owners already know.
    let dsn = String::from_utf8_lossy(&fixture("postfix-5.1.1.eml"))
        .replace("5.1.1", "5.3.4")
        .replace("<q1@ocmw-brugge.be>", "<big-post@ocmw.be>");
    assert_eq!(
        post(d.port, "", &verp(&env, &members[2]), dsn.as_bytes()),
        250
    );
    assert!(wait_until(WAIT, || d
        .stderr()
        .contains("bounce about the message, not the member")));
    assert!(env.wait_queue_empty());
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(owner_mail_with(&sink, "refused as a message").len(), 1);
    assert_eq!(score(&row(&env, &members[2])), 0.0);
    assert!(!d.stderr().contains("bounce recorded"));
    // A later post gets through to all (the members were not disabled).
    let ok = message(&members[0], "Klein", "small-post@ocmw.be", "Kort.");
    assert_eq!(post(d.port, &members[0], LIST, &ok), 250);
    assert!(wait_until(WAIT, || sink
        .messages()
        .iter()
        .filter(|m| String::from_utf8_lossy(&m.data).contains("small-post@ocmw.be"))
        .count()
        == members.len()));
}

/// A relay with a smaller `SIZE` than ours: our EHLO says less, a post whose copies would
/// not fit is refused at our door (552 5.3.4) and nothing is queued; a smaller one goes.
#[test]
fn the_relays_size_is_enforced_at_our_smtp_edge() {
    let sink = Sink::with(SinkBehaviour {
        size: Some(100_000),
        ..Default::default()
    });
    let mut env = TestEnv::new(sink.port, Opts::default());
    let poster = member(1);
    env.add_members(&[poster.clone(), member(2)]);
    let d = Daemon::start(&mut env);
    assert!(
        d.stderr().contains("relay accepts messages up to its SIZE"),
        "{}",
        d.stderr()
    );
    let mut c = SmtpClient::connect(d.port);
    let ehlo = c.cmd("EHLO client.example.net");
    let size: usize = ehlo
        .text
        .lines()
        .find_map(|l| l.strip_prefix("SIZE "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no SIZE in {ehlo:?}"));
    assert!(size <= 100_000 - 16 * 1024, "{size}");
    let body = "Een lange bijlage.\r\n".repeat(150_000 / 20);
    let big = message(&poster, "Groot", "too-big@ocmw.be", &body);
    assert!(big.len() > 150_000);
    let r = c.transaction(&poster, &[LIST], &big);
    assert_eq!(r.code, 552, "{r:?}");
    assert!(r.text.starts_with("5.3.4"), "{r:?}");
    // Declared up front, it is refused at MAIL already.
    let r = c.cmd(&format!("MAIL FROM:<{poster}> SIZE={}", big.len()));
    assert_eq!(r.code, 552, "{r:?}");
    c.quit();
    assert_eq!(env.queue_len(), (0, 0));
    assert!(d
        .stderr()
        .contains("post refused: its list copies would be larger"));
    let small = message(&poster, "Klein", "small@ocmw.be", "Kort.");
    assert_eq!(post(d.port, &poster, LIST, &small), 250);
    assert!(wait_until(WAIT, || sink.count() == 2));
    assert!(env.wait_queue_empty());
    assert!(!sink
        .messages()
        .iter()
        .any(|m| String::from_utf8_lossy(&m.data).contains("too-big@ocmw.be")));
}

/// Anyone can send mail to a VERP address: without the right MAC, or in no format we
/// read, a bounce is kept and forwarded to the owners, never scored.
#[test]
fn forged_and_unrecognised_bounces_are_forwarded_not_scored() {
    let sink = Sink::start();
    let mut env = TestEnv::new(sink.port, threshold_opts(""));
    let victim = "jan.peeters@ocmw-gent.be";
    env.add_members(&[victim.to_string(), member(1)]);
    let d = Daemon::start(&mut env);
    let (_, hard) = hard_bounce("jan.peeters");
    let good = verp(&env, victim);
    let mac = verp_mac(&env, victim);
    let wrong: String = mac
        .chars()
        .map(|c| if c == 'a' { 'b' } else { 'a' })
        .collect();
    let forged = good.replace(&mac, &wrong);
    let no_mac = good.replace(&format!("+{mac}"), "");
    assert_ne!(forged, good);
    // A DSN that would count as hard, to a forged MAC and to the old form without one,
    // on several days' worth of tries.
    for rcpt in [&forged, &no_mac, &forged, &forged] {
        assert_eq!(post(d.port, "", rcpt, &hard), 250, "{rcpt}");
    }
    // An unrecognised bounce to the member's true VERP address.
    let unknown = String::from_utf8_lossy(&fixture("unknown-format.eml")).into_owned();
    assert_eq!(post(d.port, "", &good, unknown.as_bytes()), 250);
    assert!(
        wait_until(WAIT, || d.stderr().matches("bounce not scored").count()
            == 5),
        "{}",
        d.stderr()
    );
    assert!(wait_until(WAIT, || forwards(&sink).len() == 5));
    assert!(d.stderr().contains("MAC does not verify"));
    assert!(d.stderr().contains("without a MAC"));
    assert!(d.stderr().contains("format that is not recognised"));
    assert_eq!(d.stderr().matches("dropped, kept in quarantine").count(), 5);
    let r = row(&env, victim);
    assert_eq!(score(&r), 0.0, "{r}");
    assert!(r.starts_with("enabled"), "{r}");
    assert!(!d.stderr().contains("bounce recorded"));
    // The same DSN to the true address counts.
    assert_eq!(post(d.port, "", &good, &hard), 250);
    assert!(wait_until(WAIT, || d.stderr().contains("bounce recorded")));
    assert_eq!(score(&row(&env, victim)), 1.0);
    assert_eq!(forwards(&sink).len(), 5);
}

/// `members bounces reset`: re-enables and zeroes the given members, or all.
#[test]
fn members_bounces_reset_re_enables_and_zeroes() {
    let sink = Sink::start();
    let mut env = TestEnv::new(
        sink.port,
        Opts {
            list_extra: "bounce_score_threshold = 1.0\n".into(),
            ..Opts::default()
        },
    );
    let (a, b, c) = (member(1), member(2), member(3));
    env.add_members(&[a.clone(), b.clone(), c.clone()]);
    let d = Daemon::start(&mut env);
    for m in [&a, &b] {
        let (_, hard) = hard_bounce("jan.peeters");
        assert_eq!(post(d.port, "", &verp(&env, m), &hard), 250);
    }
    assert!(wait_until(WAIT, || d
        .stderr()
        .matches("bounce recorded")
        .count()
        == 2));
    for m in [&a, &b] {
        let r = row(&env, m);
        assert!(r.starts_with("disabled"), "{m}: {r}");
    }
    // Through the daemon's control socket.
    let out = env.cli(&["members", "bounces", "reset", "forum", &a]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("reset for 1 members"), "{out:?}");
    let r = row(&env, &a);
    assert!(r.starts_with("enabled"), "{r}");
    assert_eq!(score(&r), 0.0);
    assert!(!r.contains("5.1.1"), "{r}");
    assert!(row(&env, &b).starts_with("disabled"));
    // Neither addresses nor --all, both, or a stranger.
    let out = env.cli(&["members", "bounces", "reset", "forum"]);
    assert_ne!(out.code, Some(0), "{out:?}");
    let out = env.cli(&["members", "bounces", "reset", "forum", &b, "--all"]);
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(row(&env, &b).starts_with("disabled"));
    let out = env.cli(&["members", "bounces", "reset", "forum", "nobody@example.net"]);
    assert_eq!(out.code, Some(67), "{out:?}");
    assert!(out.stderr.contains("not a member"), "{out:?}");
    let out = env.cli(&["members", "bounces", "reset", "forum", "--all"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.contains("reset for 3 members (1 had one)"),
        "{out:?}"
    );
    for m in [&a, &b, &c] {
        let r = row(&env, m);
        assert!(r.starts_with("enabled"), "{m}: {r}");
        assert_eq!(score(&r), 0.0);
    }
    // And without a daemon, on the store itself.
    drop(d);
    let (_, hard) = hard_bounce("jan.peeters");
    let d = Daemon::start(&mut env);
    assert_eq!(post(d.port, "", &verp(&env, &c), &hard), 250);
    assert!(wait_until(WAIT, || row(&env, &c).starts_with("disabled")));
    drop(d);
    let out = env.cli(&["members", "bounces", "reset", "forum", &c]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(row(&env, &c).starts_with("enabled"));
}
