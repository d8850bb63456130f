//! End to end: being forgotten. On a store that has seen the member post, bounce and be in
//! a digest, `members forget` and a compaction leave the address (and the name) nowhere in
//! the data directory: every file is scanned, the database's included. By mail, `forget`
//! is confirmed like unsubscribing and ends with the member gone and relabelled.

mod common;

use common::*;
use std::path::{Path, PathBuf};

const ADDR: &str = "jan.peeters@ocmw-gent.be";
const NAME: &str = "Jan Peeters";

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// The files under `dir` whose bytes contain `needle` (ASCII case-insensitive).
fn containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let n = needle.to_ascii_lowercase().into_bytes();
    files(dir)
        .into_iter()
        .filter(|p| {
            let b = std::fs::read(p).unwrap_or_default().to_ascii_lowercase();
            b.windows(n.len()).any(|w| w == n.as_slice())
        })
        .collect()
}

fn post_as(d: &Daemon, from: &str, name: &str, subject: &str, id: &str, body: &str) {
    let raw = format!(
        "From: {name} <{from}>\r\nTo: {LIST}\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\n\
Date: Mon, 23 Nov 2026 09:00:00 +0100\r\n\r\n{body}\r\n"
    );
    assert_eq!(post(d.port, from, LIST, raw.as_bytes()), 250);
}

#[test]
fn after_forget_and_compaction_the_address_is_nowhere_in_the_data_directory() {
    let sink = Sink::start();
    let mut env = TestEnv::new(sink.port, Opts::web());
    let (other, reader) = (member(1), member(2));
    env.add_members(&[format!("{NAME} <{ADDR}>"), other.clone(), reader.clone()]);
    let out = env.cli(&["members", "set", "forum", &reader, "digest", "on"]);
    assert_eq!(out.code, Some(0));
    let d = Daemon::start(&mut env);
    // The member posts twice; a colleague answers, quoting name and address.
    post_as(
        &d,
        ADDR,
        NAME,
        "Vraag over leefloon",
        "q1@ocmw-gent.be",
        "Wie weet raad?\r\n\r\nJan Peeters\r\nOCMW Gent",
    );
    post_as(
        &d,
        ADDR,
        NAME,
        "Nog een vraag",
        "q2@ocmw-gent.be",
        "En dit?",
    );
    post_as(
        &d,
        &other,
        "An Claes",
        "Re: Vraag over leefloon",
        "a1@ocmw.be",
        &format!(
            "Dag Jan,\r\n\r\nZo doe je dat.\r\n\r\n{NAME} <{ADDR}> schreef:\r\n> Wie weet raad?"
        ),
    );
    assert!(wait_until(WAIT, || sink.count_for(ADDR) == 3));
    // A bounce for the member (Postfix's DSN, to the member's VERP address).
    let dsn = std::fs::read("tests/fixtures/bounces/postfix-5.1.1.eml").unwrap();
    assert_eq!(post(d.port, "", &verp(&env, ADDR), &dsn), 250);
    assert!(wait_until(WAIT, || d.stderr().contains("bounce recorded")));
    // The member takes digests too; a digest holding the member's posts goes to both, and
    // the next one waits (with the member's settings, queue rows and posts) when forgotten.
    let out = env.cli(&["members", "set", "forum", ADDR, "digest", "plain"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let out = env.cli(&["digest", "send", "forum"]);
    assert!(out.stdout.contains("1 digest(s) queued"), "{out:?}");
    assert!(wait_until(WAIT, || sink.count_for(&reader) == 1
        && sink.count_for(ADDR) == 4));
    assert!(env.wait_queue_empty());
    post_as(
        &d,
        ADDR,
        NAME,
        "Re: Vraag over leefloon",
        "q3@ocmw-gent.be",
        "Bedankt, An!",
    );
    assert!(wait_until(WAIT, || sink.count_for(&other) == 4));
    let archive = env.data_dir.join("archive-private");
    assert!(wait_until(WAIT, || !containing(&archive, NAME).is_empty()));
    assert!(
        !containing(&env.data_dir, ADDR).is_empty(),
        "the store holds the address before"
    );

    let out = env.cli(&["members", "forget", "forum", ADDR]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("member record removed"), "{out:?}");
    assert!(
        containing(&archive, NAME).is_empty(),
        "{:?}",
        containing(&archive, NAME)
    );
    assert!(containing(&archive, ADDR).is_empty());
    // The posts stay (forget_posts = "keep"), by "Former member", in the same threads.
    let t = env.cli(&["archive", "threads", "forum", "--json"]);
    assert_eq!(t.stdout.matches("Former member").count(), 3, "{}", t.stdout);
    assert_eq!(
        t.stdout.matches("\"message_id\"").count(),
        4,
        "{}",
        t.stdout
    );
    let out = env.cli(&["members", "list", "forum"]);
    assert!(!out.stdout.contains(ADDR));
    drop(d);

    // sled keeps overwritten records in its log files until it reuses the space; say what
    // a compaction is needed for.
    eprintln!(
        "before compaction, files with the address: {:?}",
        containing(&env.data_dir, ADDR)
    );
    let out = env.cli(&["store", "compact"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    for needle in [ADDR, "jan.peeters=ocmw-gent.be", NAME] {
        let found = containing(&env.data_dir, needle);
        assert!(found.is_empty(), "{needle:?} still in {found:?}");
    }
    // The list still works on the compacted store.
    let d = Daemon::start(&mut env);
    let before = sink.count_for(&other);
    post_as(&d, &other, "An Claes", "Verder", "a2@ocmw.be", "Nog iets.");
    assert!(wait_until(WAIT, || sink.count_for(&other) == before + 1));
    assert_eq!(
        sink.count_for(ADDR),
        4,
        "nothing more to the forgotten address"
    );
}

#[test]
fn forget_by_mail_is_confirmed_first() {
    let sink = Sink::start();
    let mut env = TestEnv::new(sink.port, Opts::default());
    env.add_members(&[format!("{NAME} <{ADDR}>"), member(1)]);
    let d = Daemon::start(&mut env);
    post_as(&d, ADDR, NAME, "Vraag", "q9@ocmw-gent.be", "Wie weet raad?");
    assert!(wait_until(WAIT, || sink.count_for(ADDR) == 1));
    let cmd = message(ADDR, "forget", "f1@ocmw-gent.be", "forget\r\n");
    assert_eq!(
        post(d.port, ADDR, "forum-request@lists.example.org", &cmd),
        250
    );
    assert!(
        wait_until(WAIT, || sink.count_for(ADDR) == 2),
        "{}",
        d.stderr()
    );
    // Nothing happened yet.
    let out = env.cli(&["members", "list", "forum"]);
    assert!(out.stdout.contains(ADDR));
    let confirm = sink
        .messages()
        .into_iter()
        .rfind(|m| m.rcpt == ADDR)
        .unwrap();
    let confirm_addr = confirm_address_in(&confirm.data);
    let reply = message(ADDR, "Re: confirm", "f2@ocmw-gent.be", "ja");
    assert_eq!(post(d.port, ADDR, &confirm_addr, &reply), 250);
    assert!(wait_until(WAIT, || d.stderr().contains("member forgotten")));
    let out = env.cli(&["members", "list", "forum"]);
    assert!(!out.stdout.contains(ADDR), "{out:?}");
    let t = env.cli(&["archive", "threads", "forum", "--json"]);
    assert!(t.stdout.contains("Former member"), "{}", t.stdout);
    assert!(!t.stdout.contains(NAME));
    // The last mail to the address says it is forgotten.
    assert!(wait_until(WAIT, || sink.count_for(ADDR) == 3));
    let last = sink
        .messages()
        .into_iter()
        .rfind(|m| m.rcpt == ADDR)
        .unwrap();
    assert!(String::from_utf8_lossy(&last.data).contains("erased your data"));
}
