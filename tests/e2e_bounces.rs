//! End to end: bounces from real MTAs' formats, through the real listener, scored against
//! the right member; the threshold disables delivery with one notice; reminders, removal,
//! re-enabling; refusals by the relay itself.

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

#[test]
fn bounces_in_each_mtas_format_count_against_the_right_member() {
    let sink = Sink::start();
    let mut env = TestEnv::new(sink.port, Opts::default());
    let files = [
        ("postfix-5.1.1.eml", 1.0, "hard 5.1.1"),
        ("postfix-delayed-4.4.1.eml", 0.5, "soft 4.4.1"),
        ("exim-dsn-5.2.2.eml", 1.0, "hard 5.2.2"),
        ("exim-text-550.eml", 1.0, "hard 5.0.0"),
        ("exchange-5.1.10.eml", 1.0, "hard 5.1.10"),
        ("gmail-5.1.1.eml", 1.0, "hard 5.1.1"),
        ("gmail-spam-5.7.1.eml", 0.0, "policy 5.7.1"),
        ("qmail-5.1.1.eml", 1.0, "hard 5.1.1"),
        ("unknown-format.eml", 0.5, "soft"),
        ("vacation-to-verp.eml", 0.0, "-"),
    ];
    let raws: Vec<(Vec<u8>, String)> = files
        .iter()
        .map(|(f, _, _)| {
            let raw = fixture(f);
            let to = to_of(&raw);
            (raw, to)
        })
        .collect();
    let members: Vec<String> = raws
        .iter()
        .map(|(_, to)| {
            let m = to.split_once('+').unwrap().1.split_once('@').unwrap().0;
            let (l, d) = m.rsplit_once('=').unwrap();
            format!("{l}@{d}")
        })
        .chain(["bystander@ocmw-gent.be".to_string()])
        .collect();
    env.add_members(&members);
    let d = Daemon::start(&mut env);
    for (raw, to) in &raws {
        assert_eq!(post(d.port, "", to, raw), 250, "{to}");
    }
    // A DSN to the plain bounce address (a notice bounced): the report names the member.
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
        wait_until(WAIT, || d.stderr().matches("bounce recorded").count() == 10),
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
    assert_eq!(score(&row(&env, "bystander@ocmw-gent.be")), 1.0);
    // Nobody was mailed about any of it (all far below the threshold), and no bounce
    // reached the list.
    assert!(sink.messages().is_empty(), "{:?}", sink.messages().len());
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
    let (verp, hard) = hard_bounce("jan.peeters");
    let soft = String::from_utf8_lossy(&fixture("unknown-format.eml"))
        .replace("tom.deckers=ocmw-kortrijk.be", "jan.peeters=ocmw-gent.be")
        .into_bytes();
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
    let (verp, hard) = hard_bounce("jan.peeters");
    // Two days of hard bounces: yesterday (clock one day behind) and today.
    env.daemon_env
        .push(("VRAAGBAAK_CLOCK_OFFSET".into(), "-86400".into()));
    let d = Daemon::start(&mut env);
    assert_eq!(post(d.port, "", &verp, &hard), 250);
    assert!(wait_until(WAIT, || d.stderr().contains("bounce recorded")));
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
fn refusals_by_the_relay_count_unless_they_are_about_spam() {
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
    assert!(wait_until(WAIT, || d
        .stderr()
        .matches("bounce recorded")
        .count()
        == 2));
    let r = row(&env, rejected);
    assert_eq!(score(&r), 1.0, "{r}");
    assert!(r.contains("hard 5.1.1"), "{r}");
    let r = row(&env, spam);
    assert_eq!(score(&r), 0.0, "{r}");
    assert!(r.contains("policy 5.7.1"), "{r}");
    assert_eq!(score(&row(&env, &poster)), 0.0);
}
