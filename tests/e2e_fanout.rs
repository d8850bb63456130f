//! End to end: the real `vraagbaak` binary, relaying to a real SMTP sink on 127.0.0.1.
//!
//! Each test starts its own sink, temp directory and daemon (`vraagbaak serve` as a child
//! process, SIGKILLed when the test ends), posts over SMTP or `inject`, administers with the
//! command line, and checks what the sink received.

mod common;

use common::*;
use mail_parser::MessageParser;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The trimmed values of every header field called `name` (case-insensitive).
fn header_values(raw: &[u8], name: &str) -> Vec<String> {
    let msg = MessageParser::default()
        .parse(raw)
        .expect("a list copy mail-parser can parse");
    msg.headers_raw()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

/// The single value of header `name`; panics when it is absent or repeated.
fn header(raw: &[u8], name: &str) -> String {
    let v = header_values(raw, name);
    assert_eq!(
        v.len(),
        1,
        "expected exactly one {name} header, got {v:?} in:\n{}",
        String::from_utf8_lossy(raw)
    );
    v.into_iter().next().unwrap()
}

/// The decoded Subject.
fn subject(raw: &[u8]) -> String {
    MessageParser::default()
        .parse(raw)
        .and_then(|m| m.subject().map(str::to_string))
        .unwrap_or_default()
}

/// The copies the sink received of the post with this Message-ID (without brackets).
fn copies_of(sink: &Sink, message_id: &str) -> Vec<Received> {
    of_post(&sink.messages(), message_id)
}

/// The messages in `all` with this Message-ID (without brackets).
fn of_post(all: &[Received], message_id: &str) -> Vec<Received> {
    let want = format!("<{message_id}>");
    all.iter()
        .filter(|m| {
            m.data.windows(want.len()).any(|w| w == want.as_bytes())
                && header_values(&m.data, "Message-ID").contains(&want)
        })
        .cloned()
        .collect()
}

/// Starts a sink, a config and `n` members (added with `members add` before `serve`),
/// then the daemon.
fn setup(n: usize, behaviour: SinkBehaviour, opts: Opts) -> (Sink, TestEnv, Daemon, Vec<String>) {
    let sink = Sink::with(behaviour);
    let mut env = TestEnv::new(sink.port, opts);
    let members: Vec<String> = (0..n).map(member).collect();
    for chunk in members.chunks(200) {
        env.add_members(chunk);
    }
    let daemon = Daemon::start(&mut env);
    (sink, env, daemon, members)
}

/// Asserts that every member got exactly one message and nobody else got any.
fn assert_one_each(sink: &Sink, members: &[String]) {
    let counts = sink.counts_by_rcpt();
    let missing: Vec<&String> = members
        .iter()
        .filter(|m| !counts.contains_key(*m))
        .collect();
    let dup: Vec<(&String, &usize)> = counts.iter().filter(|(_, c)| **c != 1).collect();
    let set: HashSet<&String> = members.iter().collect();
    let strangers: Vec<&String> = counts.keys().filter(|k| !set.contains(k)).collect();
    assert!(missing.is_empty(), "members without a copy: {missing:?}");
    assert!(
        dup.is_empty(),
        "recipients with other than one copy: {dup:?}"
    );
    assert!(strangers.is_empty(), "copies to non-members: {strangers:?}");
    assert_eq!(sink.count(), members.len());
}

// ---- 1 -----------------------------------------------------------------------------------

/// Test 1: a 750-member list; every member gets exactly one copy, with the list headers.
#[test]
fn fanout_750_members_exactly_once_with_list_headers() {
    fanout_750();
}

/// A 750-member list imported from a file, a post and a reply: every member must get exactly
/// one copy of each.
fn fanout_750() {
    let t0 = Instant::now();
    let sink = Sink::start();
    let mut env = TestEnv::new(sink.port, Opts::default());

    // The import file: a comment, 750 members (some as `Name <addr>`, one as CSV) and one
    // bad line in the middle.
    let mut lines = vec!["# e2e members".to_string()];
    let mut bad_line = 0;
    let named = [7usize, 257, 507];
    for i in 0..750 {
        if i == 400 {
            lines.push("this is not an address".into());
            bad_line = lines.len();
        }
        lines.push(if named.contains(&i) {
            format!("Member Number {i} <{}>", member(i))
        } else if i == 100 {
            format!("{},Honderd Lid", member(i))
        } else {
            member(i)
        });
    }
    let file = env.path().join("members.txt");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let out = env.cli(&["members", "import", "forum", file.to_str().unwrap()]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let expect = format!("{}:{bad_line}: skipped", file.display());
    assert!(
        out.stderr.contains(&expect),
        "bad line {bad_line} not reported as {expect:?}: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("not an e-mail address"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("750 good lines, 1 skipped"),
        "{}",
        out.stderr
    );
    assert!(
        out.stdout.contains("750 added, 0 already members"),
        "{out:?}"
    );

    let daemon = Daemon::start(&mut env);
    let listed = env.cli(&["members", "list", "forum"]);
    assert_eq!(listed.code, Some(0), "{listed:?}");
    assert_eq!(listed.stdout.lines().count(), 750, "{}", listed.stdout);
    for i in named {
        let want = format!("Member Number {i} <{}>", member(i));
        assert!(
            listed.stdout.lines().any(|l| l == want),
            "{want:?} not in members list"
        );
    }
    assert!(listed
        .stdout
        .lines()
        .any(|l| l == format!("Honderd Lid <{}>", member(100))));
    assert!(!listed.stdout.contains("this is not"));

    // The post: carries another list's List-Id and a Reply-To, both replaced.
    let mut msg = message(
        "Member Zero <member0@example.net>",
        "Vraag over leefloon",
        "e2e-fanout-1@example.net",
        "Dag collega's,\nwie weet hoe dit zit?\n.\nEen regel met een punt.\n",
    );
    let extra = b"List-Id: Other <other.lists.example.com>\r\nReply-To: me@example.net\r\n";
    msg.splice(0..0, extra.iter().copied());
    assert_eq!(post(daemon.port, &member(0), LIST, &msg), 250);
    let members: Vec<String> = (0..750).map(member).collect();
    assert!(
        wait_until(WAIT, || sink.count() >= 750),
        "only {} of 750 copies arrived",
        sink.count()
    );
    assert!(env.wait_queue_empty(), "queue did not empty");
    assert_one_each(&sink, &members);

    for m in sink.messages() {
        let d = &m.data;
        let who = &m.rcpt;
        assert_eq!(
            m.from,
            verp(&env, who),
            "envelope sender of the copy to {who}"
        );
        assert_eq!(header(d, "List-Id"), "Forum <forum.lists.example.org>");
        assert_eq!(header(d, "List-Post"), "<mailto:forum@lists.example.org>");
        assert!(header(d, "List-Help").contains("mailto:forum-request@lists.example.org"));
        assert!(header(d, "List-Subscribe").contains("mailto:forum-join@lists.example.org"));
        assert!(header(d, "List-Unsubscribe").contains("mailto:forum-leave@lists.example.org"));
        assert!(header(d, "List-Owner").contains("mailto:forum-owner@lists.example.org"));
        assert_eq!(header(d, "Precedence"), "list");
        assert_eq!(header(d, "X-Loop"), LIST);
        assert_eq!(header(d, "Reply-To"), LIST);
        assert_eq!(header(d, "Message-ID"), "<e2e-fanout-1@example.net>");
        assert_eq!(header(d, "From"), "Member Zero <member0@example.net>");
        assert_eq!(header(d, "Subject"), "[forum] Vraag over leefloon");
        let body = MessageParser::default()
            .parse(d)
            .and_then(|p| p.body_text(0).map(|b| b.replace("\r\n", "\n")))
            .unwrap_or_default();
        assert!(body.contains("wie weet hoe dit zit?"), "{body}");
        assert!(body.contains("\n.\nEen regel met een punt."), "{body}");
        assert!(body.contains(FOOTER), "footer missing: {body}");
        assert!(
            body.contains("forum-leave@lists.example.org"),
            "unsubscribe address missing in the footer: {body}"
        );
    }

    // A reply keeps a single prefix.
    let reply = message(
        "member5@example.net",
        "Re: [forum] x",
        "e2e-fanout-2@example.net",
        "Antwoord.\n",
    );
    assert_eq!(post(daemon.port, &member(5), LIST, &reply), 250);
    let reply_rcpts = || {
        let all = sink.messages();
        let want = b"<e2e-fanout-2@example.net>";
        all.iter()
            .filter(|m| m.data.windows(want.len()).any(|w| w == want))
            .map(|m| m.rcpt.clone())
            .collect::<HashSet<String>>()
            .len()
    };
    assert!(
        wait_until(WAIT, || reply_rcpts() >= 750),
        "only {} of 750 members got the reply",
        reply_rcpts()
    );
    assert!(env.wait_queue_empty());
    let all = sink.messages();
    let second = of_post(&all, "e2e-fanout-2@example.net");
    let rcpts: HashSet<String> = second.iter().map(|m| m.rcpt.clone()).collect();
    let want: HashSet<String> = members.iter().cloned().collect();
    assert_eq!(rcpts, want, "recipients of the reply");
    for m in &second {
        assert_eq!(header(&m.data, "Subject"), "Re: [forum] x");
        assert_eq!(subject(&m.data), "Re: [forum] x");
        assert_eq!(m.from, verp(&env, &m.rcpt));
    }
    let first = of_post(&all, "e2e-fanout-1@example.net");
    assert_eq!(
        first.len() + second.len(),
        all.len(),
        "copies of something else"
    );
    assert_eq!(
        second.len(),
        750,
        "duplicates among the copies of the reply"
    );
    assert_eq!(all.len(), 1500);
    drop(daemon);
    eprintln!("fanout_750: {:?}", t0.elapsed());
}

// ---- 2 -----------------------------------------------------------------------------------

#[test]
fn non_member_post_is_held_until_approved() {
    let t0 = Instant::now();
    let (sink, env, daemon, members) = setup(20, SinkBehaviour::default(), Opts::default());
    let msg = message(
        "A Stranger <stranger@example.com>",
        "Mag ik iets vragen?",
        "e2e-held-1@example.com",
        "Ik ben geen lid.\n",
    );
    assert_eq!(post(daemon.port, "stranger@example.com", LIST, &msg), 250);

    // The owners get a notice through the relay.
    assert!(
        wait_until(WAIT, || sink.count_for(OWNER) >= 1),
        "no notice to the owner; sink has {} messages",
        sink.count()
    );
    let notice = sink
        .messages()
        .into_iter()
        .find(|m| m.rcpt == OWNER)
        .unwrap();
    assert_eq!(notice.from, "forum-bounces@lists.example.org");
    assert!(
        subject(&notice.data).contains("Mag ik iets vragen?"),
        "{}",
        subject(&notice.data)
    );
    let text = String::from_utf8_lossy(&notice.data);
    assert!(text.contains("stranger@example.com"), "{text}");
    assert!(text.contains("moderate approve"), "{text}");

    // Held: nothing for the members, and `moderate list` shows it.
    let listed = env.cli(&["moderate", "list"]);
    assert_eq!(listed.code, Some(0), "{listed:?}");
    let line = listed
        .stdout
        .lines()
        .find(|l| l.contains("stranger@example.com"))
        .unwrap_or_else(|| panic!("held post not listed: {listed:?}"));
    assert!(line.contains("Mag ik iets vragen?"), "{line}");
    let id = line.split('\t').next().unwrap().trim().to_string();
    id.parse::<u64>()
        .unwrap_or_else(|_| panic!("no id in {line:?}"));
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        members.iter().all(|m| sink.count_for(m) == 0),
        "a member received a held post"
    );
    // Only the owners' notice and, to the poster, "your post waits for approval".
    assert!(wait_until(WAIT, || sink.count_for("stranger@example.com") == 1));
    assert_eq!(sink.count(), 2, "only the two notices may have been sent");

    // Approved: every member gets it once.
    let out = env.cli(&["moderate", "approve", &id]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        wait_until(WAIT, || sink.count() > members.len() + 1),
        "approved post not delivered: {} messages",
        sink.count()
    );
    assert!(env.wait_queue_empty());
    let copies = copies_of(&sink, "e2e-held-1@example.com");
    let mut by: HashMap<String, usize> = HashMap::new();
    for c in &copies {
        *by.entry(c.rcpt.clone()).or_insert(0) += 1;
        assert_eq!(c.from, verp(&env, &c.rcpt));
        assert_eq!(subject(&c.data), "[forum] Mag ik iets vragen?");
    }
    assert_eq!(copies.len(), members.len(), "{by:?}");
    assert!(members.iter().all(|m| by.get(m) == Some(&1)), "{by:?}");
    assert_eq!(sink.count(), members.len() + 2);
    let after = env.cli(&["moderate", "list"]);
    assert!(
        !after.stdout.contains("stranger@example.com"),
        "still held after approval: {after:?}"
    );
    // A second approval of the same id is refused.
    let again = env.cli(&["moderate", "approve", &id]);
    assert_ne!(again.code, Some(0), "{again:?}");
    drop(daemon);
    eprintln!("non_member_post_is_held_until_approved: {:?}", t0.elapsed());
}

// ---- 3 -----------------------------------------------------------------------------------

#[test]
fn same_message_id_twice_is_delivered_once() {
    let t0 = Instant::now();
    let (sink, env, daemon, members) = setup(30, SinkBehaviour::default(), Opts::default());
    let msg = message(
        "member1@example.net",
        "Dubbel",
        "e2e-dup-1@example.net",
        "Twee keer verstuurd.\n",
    );
    assert_eq!(post(daemon.port, &member(1), LIST, &msg), 250);
    assert_eq!(post(daemon.port, &member(1), LIST, &msg), 250);
    assert!(
        wait_until(WAIT, || daemon.stderr().contains("duplicate Message-ID")),
        "the second post was not recognised as a duplicate"
    );
    assert!(wait_until(WAIT, || sink.count() >= members.len()));
    assert!(env.wait_queue_empty());
    std::thread::sleep(Duration::from_millis(300));
    assert_one_each(&sink, &members);
    drop(daemon);
    eprintln!(
        "same_message_id_twice_is_delivered_once: {:?}",
        t0.elapsed()
    );
}

// ---- 4 -----------------------------------------------------------------------------------

#[test]
fn foreign_recipients_are_refused() {
    let (sink, _env, daemon, _members) = setup(3, SinkBehaviour::default(), Opts::default());
    let mut c = SmtpClient::connect(daemon.port);
    assert_eq!(c.cmd("EHLO client.example.net").code, 250);
    assert_eq!(c.cmd("MAIL FROM:<member0@example.net>").code, 250);
    for foreign in [
        "someone@example.com",
        "forum@example.com",
        "forum@lists.example.org.evil.example",
        "victim%example.com@lists.example.org",
        "other@lists.example.org",
    ] {
        let r = c.cmd(&format!("RCPT TO:<{foreign}>"));
        assert_eq!(r.code, 550, "RCPT {foreign}: {r:?}");
    }
    // Without an accepted recipient there is no DATA.
    let r = c.cmd("DATA");
    assert!(r.code >= 500, "DATA without recipients: {r:?}");
    // The list itself is accepted in the same session.
    assert_eq!(c.cmd("RCPT TO:<forum@lists.example.org>").code, 250);
    assert_eq!(c.cmd("RSET").code, 250);
    c.quit();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sink.count(), 0, "something was relayed");
}

// ---- 5 -----------------------------------------------------------------------------------

#[test]
fn temporary_failures_are_retried_until_delivered() {
    let t0 = Instant::now();
    // Even members get 451 on their first two RCPTs: retried after ~1 s, then ~2 s.
    let even = |a: &str| {
        a.strip_prefix("member")
            .and_then(|r| r.split('@').next())
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|n| n % 2 == 0)
    };
    let behaviour = SinkBehaviour {
        tempfail: Some((Arc::new(even), 2)),
        ..Default::default()
    };
    let (sink, env, daemon, members) = setup(100, behaviour, Opts::default());
    let deferred: HashSet<String> = members.iter().filter(|m| even(m)).cloned().collect();
    assert_eq!(deferred.len(), 50);
    let msg = message(
        "member1@example.net",
        "Uitgesteld",
        "e2e-retry-1@example.net",
        "Later.\n",
    );
    assert_eq!(post(daemon.port, &member(1), LIST, &msg), 250);

    // In between, `queue list` shows exactly the deferred ones, with the 451 as last error.
    let mut seen = String::new();
    let observed = wait_until(WAIT, || {
        let out = env.cli(&["queue", "list"]);
        let rows: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with(LIST)).collect();
        let addrs: HashSet<String> = rows
            .iter()
            .filter_map(|l| l.split('\t').nth(2).map(str::to_string))
            .collect();
        seen = out.stdout.clone();
        addrs == deferred
            && rows
                .iter()
                .all(|l| !l.contains("attempts=0") && l.contains("451"))
    });
    assert!(observed, "queue never showed the 50 deferred rows:\n{seen}");
    assert_eq!(parse_queue_summary(&seen), Some((50, 0)));

    assert!(
        wait_until(WAIT, || sink.count() >= 100),
        "{} of 100 delivered",
        sink.count()
    );
    assert!(env.wait_queue_empty());
    assert_one_each(&sink, &members);
    // Each deferred recipient was refused exactly twice, with backoff in between.
    let events = sink.rcpt_events();
    for d in &deferred {
        let mine: Vec<_> = events.iter().filter(|e| &e.rcpt == d).collect();
        let codes: Vec<u16> = mine.iter().map(|e| e.code).collect();
        assert_eq!(codes, vec![451, 451, 250], "RCPT replies for {d}");
        let first = mine[1].at - mine[0].at;
        let second = mine[2].at - mine[1].at;
        assert!(
            first >= Duration::from_millis(800),
            "{d}: retried after {first:?}"
        );
        assert!(
            second >= Duration::from_millis(1700),
            "{d}: then after {second:?}"
        );
    }
    drop(daemon);
    eprintln!(
        "temporary_failures_are_retried_until_delivered: {:?}",
        t0.elapsed()
    );
}

// ---- 6 -----------------------------------------------------------------------------------

#[test]
fn permanent_failures_are_not_retried() {
    let t0 = Instant::now();
    let rejected = |a: &str| {
        a.strip_prefix("member")
            .and_then(|r| r.split('@').next())
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|n| n % 5 == 0)
    };
    let behaviour = SinkBehaviour {
        reject: Some(Arc::new(rejected)),
        ..Default::default()
    };
    let (sink, env, daemon, members) = setup(100, behaviour, Opts::default());
    let msg = message(
        "member1@example.net",
        "Sommigen niet",
        "e2e-perm-1@example.net",
        "Niet voor iedereen bereikbaar.\n",
    );
    assert_eq!(post(daemon.port, &member(1), LIST, &msg), 250);
    let (bad, good): (Vec<String>, Vec<String>) =
        members.iter().cloned().partition(|m| rejected(m));
    assert_eq!(bad.len(), 20);
    assert!(
        wait_until(WAIT, || sink.count() >= good.len()
            && sink.rcpt_count(550) >= bad.len()),
        "{} delivered, {} refused",
        sink.count(),
        sink.rcpt_count(550)
    );
    assert!(env.wait_queue_empty(), "the queue kept rows");
    assert!(
        wait_until(WAIT, || daemon.stderr().contains("failed=20")),
        "no `fan-out finished ... failed=20` in the log"
    );
    // Longer than retry_base: a retried recipient would show up again.
    std::thread::sleep(Duration::from_millis(2500));
    assert_one_each(&sink, &good);
    for b in &bad {
        assert_eq!(sink.count_for(b), 0, "{b} got a copy");
        let n = sink.rcpt_events().iter().filter(|e| &e.rcpt == b).count();
        assert_eq!(n, 1, "{b} was tried {n} times");
    }
    assert_eq!(env.queue_len(), (0, 0));
    drop(daemon);
    eprintln!("permanent_failures_are_not_retried: {:?}", t0.elapsed());
}

// ---- 7 -----------------------------------------------------------------------------------

#[test]
fn kill_9_in_the_middle_of_a_fanout() {
    let t0 = Instant::now();
    let behaviour = SinkBehaviour {
        data_delay: Duration::from_millis(5),
        ..Default::default()
    };
    let opts = Opts {
        connections: 2,
        ..Default::default()
    };
    let sink = Sink::with(behaviour);
    let mut env = TestEnv::new(sink.port, opts);
    let members: Vec<String> = (0..750).map(member).collect();
    let file = env.path().join("members.txt");
    std::fs::write(&file, members.join("\n")).unwrap();
    let out = env.cli(&["members", "import", "forum", file.to_str().unwrap()]);
    assert_eq!(out.code, Some(0), "{out:?}");

    let mut daemon = Daemon::start(&mut env);
    let msg = message(
        "member3@example.net",
        "Tijdens de crash",
        "e2e-crash-1@example.net",
        "Kill -9.\n",
    );
    assert_eq!(post(daemon.port, &member(3), LIST, &msg), 250);
    let started = wait_until(WAIT, || sink.count() >= 100);
    let at_kill = sink.count();
    assert!(started, "fan-out did not start: {at_kill} copies");
    daemon.kill9();
    assert!(
        at_kill < 700,
        "fan-out too fast to interrupt: {at_kill} copies before kill -9"
    );
    assert!(!daemon.running());
    let at_kill = sink.count();
    drop(daemon);

    // Restart on the same data directory: the store must open, and the rest be sent.
    let daemon = Daemon::start(&mut env);
    assert!(
        wait_until(WAIT, || sink.counts_by_rcpt().len() >= members.len()),
        "after restart only {} of {} members have a copy",
        sink.counts_by_rcpt().len(),
        members.len()
    );
    assert!(env.wait_queue_empty(), "queue did not empty after restart");
    let counts = sink.counts_by_rcpt();
    let missing: Vec<&String> = members
        .iter()
        .filter(|m| !counts.contains_key(*m))
        .collect();
    assert!(missing.is_empty(), "lost members: {missing:?}");
    assert_eq!(counts.len(), members.len(), "copies to non-members");
    let total = sink.count();
    let duplicates = total - members.len();
    eprintln!(
        "kill -9 after {at_kill} copies; {total} copies in all; {duplicates} duplicates; \
         most copies of one member: {}",
        counts.values().max().unwrap()
    );
    assert!(
        duplicates <= 2 * 256,
        "{duplicates} duplicates after kill -9"
    );
    assert!(counts.values().all(|&c| c <= 2), "a member got 3+ copies");
    for m in sink.messages() {
        assert_eq!(header(&m.data, "Message-ID"), "<e2e-crash-1@example.net>");
        assert_eq!(m.from, verp(&env, &m.rcpt));
    }
    drop(daemon);
    eprintln!("kill_9_in_the_middle_of_a_fanout: {:?}", t0.elapsed());
}

// ---- 8 -----------------------------------------------------------------------------------

#[test]
fn bad_input_is_refused_and_the_daemon_survives() {
    let t0 = Instant::now();
    let (sink, env, mut daemon, members) = setup(5, SinkBehaviour::default(), Opts::default());
    let mut c = SmtpClient::connect(daemon.port);
    assert_eq!(c.cmd("EHLO client.example.net").code, 250);

    // No headers at all.
    let r = c.transaction(
        "member0@example.net",
        &[LIST],
        b"just some text\r\nwithout any header\r\n",
    );
    assert!((500..600).contains(&r.code), "headerless: {r:?}");

    // Binary garbage (with NUL bytes and high bytes, no line structure to speak of).
    let mut x: u32 = 0x1234_5678;
    let mut garbage: Vec<u8> = (0..20_000)
        .map(|i| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            if i % 97 == 96 {
                b'\n'
            } else {
                match (x >> 16) as u8 {
                    b'\r' | b'\n' => 0,
                    b => b,
                }
            }
        })
        .collect();
    garbage.extend_from_slice(b"\r\n");
    let r = c.transaction("member0@example.net", &[LIST], &garbage);
    assert!((500..600).contains(&r.code), "garbage: {r:?}");

    // 30 MB (the limit is the default 25 MB): 552 after the data.
    let mut big =
        b"From: member0@example.net\r\nSubject: big\r\nMessage-ID: <big@example.net>\r\n\r\n"
            .to_vec();
    let line = [b'x'; 76];
    while big.len() < 30 * 1024 * 1024 {
        big.extend_from_slice(&line);
        big.extend_from_slice(b"\r\n");
    }
    let r = c.transaction("member0@example.net", &[LIST], &big);
    assert_eq!(r.code, 552, "30 MB: {r:?}");
    // The session goes on.
    assert_eq!(c.cmd("NOOP").code, 250);
    c.quit();
    assert!(daemon.running(), "the daemon died:\n{}", daemon.stderr());

    // And a normal post still goes through.
    let msg = message(
        "member2@example.net",
        "Nog steeds hier",
        "e2e-after-bad@example.net",
        "Alles goed.\n",
    );
    assert_eq!(post(daemon.port, &member(2), LIST, &msg), 250);
    assert!(wait_until(WAIT, || sink.count() >= members.len()));
    assert!(env.wait_queue_empty());
    assert_one_each(&sink, &members);
    for m in sink.messages() {
        assert_eq!(subject(&m.data), "[forum] Nog steeds hier");
    }
    assert!(daemon.running());
    drop(daemon);
    eprintln!(
        "bad_input_is_refused_and_the_daemon_survives: {:?}",
        t0.elapsed()
    );
}

// ---- 9 -----------------------------------------------------------------------------------

#[test]
fn check_config_names_file_and_key() {
    let env = TestEnv::new(free_port(), Opts::default());
    let good = env.cli(&["check-config"]);
    assert_eq!(good.code, Some(0), "{good:?}");
    assert!(good.stdout.contains("configuration is valid"), "{good:?}");

    let base = env.config_text();
    let cases = [
        (
            "unknown-key.toml",
            base.replace("name = \"Forum\"", "name = \"Forum\"\npostign = \"open\""),
            vec!["list[0]", "postign"],
        ),
        (
            "bad-posting.toml",
            base.replace("posting = \"members\"", "posting = \"everyone\""),
            vec!["list[0].posting", "everyone"],
        ),
    ];
    for (name, text, needles) in cases {
        assert_ne!(text, base, "{name}: the replacement did not apply");
        let path = env.path().join(name);
        std::fs::write(&path, &text).unwrap();
        let out = run_cli(&path, &["check-config"], None);
        assert!(
            out.code.is_some_and(|c| c != 0),
            "{name}: check-config accepted it: {out:?}"
        );
        let file = path.display().to_string();
        assert!(
            out.stderr.contains(&file),
            "{name}: file not named: {}",
            out.stderr
        );
        for n in needles {
            assert!(
                out.stderr.contains(n),
                "{name}: {n:?} not in {}",
                out.stderr
            );
        }
    }
}

// ---- 10 ----------------------------------------------------------------------------------

#[test]
fn inject_posts_through_the_running_daemon() {
    let t0 = Instant::now();
    let (sink, env, daemon, members) = setup(10, SinkBehaviour::default(), Opts::default());
    // LF line ends, as an MTA pipe hands them over.
    let msg = String::from_utf8(message(
        "member4@example.net",
        "Via inject",
        "e2e-inject-1@example.net",
        "Gepijpt.\n",
    ))
    .unwrap()
    .replace("\r\n", "\n");
    let out = env.cli_stdin(&["inject", "forum"], msg.as_bytes());
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(wait_until(WAIT, || sink.count() >= members.len()));
    assert!(env.wait_queue_empty());
    assert_one_each(&sink, &members);
    for m in sink.messages() {
        assert_eq!(subject(&m.data), "[forum] Via inject");
        assert_eq!(m.from, verp(&env, &m.rcpt));
    }

    let out = env.cli_stdin(&["inject", "forum"], b"\x00\x01\x02 garbage \xff\xfe\n\n");
    assert_eq!(out.code, Some(65), "{out:?}");
    let out = env.cli_stdin(&["inject", "nosuchlist"], msg.as_bytes());
    assert_eq!(out.code, Some(67), "{out:?}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sink.count(), members.len(), "something more was delivered");
    drop(daemon);
    eprintln!(
        "inject_posts_through_the_running_daemon: {:?}",
        t0.elapsed()
    );
}

/// A list larger than one fan-out chunk (1,024): the post is queued a chunk at a time as
/// delivery proceeds; kill -9 in the middle of it and a restart still give every member the
/// post once, duplicates bounded by what was in flight, and the queue (rows and planned
/// recipients) ends empty.
#[test]
fn fanout_beyond_one_chunk_survives_kill9_with_every_member_served() {
    let n = 3_000;
    let (sink, mut env, mut daemon, members) = setup(n, SinkBehaviour::default(), Opts::default());
    let msg = message(
        &member(0),
        "Groot bericht",
        "groot-1@ocmw.be",
        "Voor iedereen.\n",
    );
    assert_eq!(post(daemon.port, &member(0), LIST, &msg), 250);
    assert!(
        wait_until(WAIT, || sink.count() > 1_500),
        "only {} copies arrived",
        sink.count()
    );
    daemon.kill9();
    let before = sink.count();
    let daemon = Daemon::start(&mut env);
    assert!(
        wait_until(WAIT, || sink.counts_by_rcpt().len() == n),
        "{} of {n} members got the post",
        sink.counts_by_rcpt().len()
    );
    assert!(env.wait_queue_empty(), "queue did not empty");
    let counts = sink.counts_by_rcpt();
    let twice: usize = counts.values().map(|c| c - 1).sum();
    // At most what was in flight or unrecorded at the kill: one batch of results (256), the
    // results channel (256) and one copy per connection.
    assert!(
        twice <= 600,
        "{twice} duplicates (sent before the kill: {before})"
    );
    assert!(members.iter().all(|m| counts.contains_key(m)));
    assert!(daemon.stderr().contains("fan-out finished"));
}
