//! End to end: being forgotten. On a store that has seen the member post, bounce and be in
//! a digest, `members forget` and a compaction leave the address (and the name) nowhere in
//! the data directory: every file is scanned, the database's included. By mail, `forget`
//! is confirmed like unsubscribing and ends with the member gone and relabelled.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

// ---- two lists, and two members whose addresses and names overlap ------------------------

const AN: &str = "an@ocmw.be";
const AN_NAME: &str = "Anna";
const JAN: &str = "jan@ocmw.be";
const JAN_NAME: &str = "Joanna Jansen";
/// The second list (Dutch, so its label is "Vergeten lid").
const B: &str = "praat@lists.example.org";

/// Whole-address occurrences of `addr` in `hay` (any ASCII case): not preceded by atext or
/// `.`, not followed by a letter, digit, `-`, `_` or a `.` joined to a letter or digit.
fn whole_addr(hay: &[u8], addr: &str) -> usize {
    let n = addr.len();
    let atext = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&b);
    (0..hay.len().saturating_sub(n - 1))
        .filter(|&i| {
            hay[i..i + n].eq_ignore_ascii_case(addr.as_bytes())
                && (i == 0 || !atext(hay[i - 1]))
                && match hay.get(i + n) {
                    None => true,
                    Some(&c) if c.is_ascii_alphanumeric() || c == b'-' || c == b'_' => false,
                    Some(b'.') => !hay.get(i + n + 1).is_some_and(u8::is_ascii_alphanumeric),
                    _ => true,
                }
        })
        .count()
}

/// Whole-word occurrences of `word` in `hay` (exact case).
fn whole_word(hay: &[u8], word: &str) -> usize {
    let s = String::from_utf8_lossy(hay);
    s.match_indices(word)
        .filter(|(i, _)| {
            let before = s[..*i].chars().next_back();
            let after = s[i + word.len()..].chars().next();
            !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
        })
        .count()
}

fn post_to(d: &Daemon, list: &str, from: &str, name: &str, subject: &str, id: &str, body: &str) {
    let raw = format!(
        "From: {name} <{from}>\r\nTo: {list}\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\n\
Date: Mon, 23 Nov 2026 09:00:00 +0100\r\n\r\n{body}\r\n"
    );
    assert_eq!(post(d.port, from, list, raw.as_bytes()), 250);
}

fn members(env: &TestEnv, list: &str) -> String {
    env.cli(&["members", "list", list]).stdout
}

/// What the store holds, read with the daemon stopped.
#[derive(Debug, Clone, PartialEq)]
struct Stored {
    /// (list, seq) → (author, raw message).
    posts: std::collections::BTreeMap<(String, u64), (String, Vec<u8>)>,
    /// (list, author, subject) → raw message.
    held: std::collections::BTreeMap<(String, String, String), Vec<u8>>,
    /// (envelope sender, recipients, raw) of each queued mail.
    mails: Vec<(String, String, Vec<u8>)>,
    /// (list, seq, recipient) of each queued delivery.
    rows: Vec<(String, u64, String)>,
}

impl Stored {
    fn read(env: &TestEnv) -> Stored {
        let s = vraagbaak::store::Store::open(&env.data_dir.join("db")).expect("open the store");
        let mut st = Stored {
            posts: Default::default(),
            held: Default::default(),
            mails: Vec::new(),
            rows: Vec::new(),
        };
        for list in [LIST, B] {
            for p in s.posts(list).unwrap() {
                let raw = s.raw(list, p.seq).unwrap().unwrap();
                st.posts
                    .insert((list.to_string(), p.seq), (p.from_addr, raw));
            }
        }
        for h in s.held().unwrap() {
            st.held.insert(
                (h.list.clone(), h.from_addr.clone(), h.subject.clone()),
                h.raw,
            );
        }
        for m in s.outmails().unwrap() {
            st.mails.push((m.mail_from, m.rcpts.join(","), m.raw));
        }
        st.mails.sort();
        for (k, _) in s.queue_rows().unwrap() {
            st.rows.push((k.list, k.seq, k.addr));
        }
        st.rows.sort();
        st
    }

    fn posts_of(&self, list: &str, author: &str) -> Vec<(u64, Vec<u8>)> {
        self.posts
            .iter()
            .filter(|((l, _), (a, _))| l == list && a == author)
            .map(|((_, seq), (_, raw))| (*seq, raw.clone()))
            .collect()
    }

    fn rows_of(&self, list: &str, addr: &str) -> usize {
        self.rows
            .iter()
            .filter(|(l, _, a)| l == list && a == addr)
            .count()
    }

    fn mails_to(&self, bounces: &str, addr: &str) -> Vec<Vec<u8>> {
        self.mails
            .iter()
            .filter(|(from, to, _)| from == bounces && to == addr)
            .map(|m| m.2.clone())
            .collect()
    }
}

/// Every file under the lists' archive folders, with its bytes.
fn archive_files(env: &TestEnv) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    files(&env.data_dir.join("archive-private"))
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect()
}

#[test]
fn forgetting_on_one_list_leaves_other_lists_and_other_members_alone() {
    // An's and Joanna's deliveries are refused for now (451), so their rows stay queued.
    let pred: AddrPred = Arc::new(|a: &str| a == AN || a == JAN);
    let sink = Sink::with(SinkBehaviour {
        tempfail: Some((pred, u32::MAX)),
        ..SinkBehaviour::default()
    });
    let mut env = TestEnv::new(
        sink.port,
        Opts {
            posting: "moderated",
            extra_lists: format!(
                "[[list]]\naddress = \"{B}\"\nname = \"Praat\"\nlanguage = \"nl\"\n\
posting = \"moderated\"\nowners = [\"{OWNER}\"]\n"
            ),
            ..Opts::default()
        },
    );
    let reader = member(3);
    let people = [
        format!("{AN_NAME} <{AN}>"),
        format!("{JAN_NAME} <{JAN}>"),
        reader.clone(),
    ];
    env.add_members(&people);
    let mut args = vec!["members", "add", "praat"];
    args.extend(people.iter().map(String::as_str));
    assert_eq!(env.cli(&args).code, Some(0));
    let mut d = Daemon::start(&mut env);

    // On both lists: An asks, Joanna answers quoting her (and gives her own address), and
    // each has a second post that stays held.
    for list in [LIST, B] {
        let l = list.split('@').next().unwrap();
        post_to(
            &d,
            list,
            AN,
            AN_NAME,
            "Vraag over leefloon",
            &format!("q1.{l}@ocmw.be"),
            "Wie weet raad?\r\n\r\nGroet,\r\nAnna",
        );
        post_to(
            &d,
            list,
            JAN,
            JAN_NAME,
            "Re: Vraag over leefloon",
            &format!("r1.{l}@ocmw.be"),
            &format!(
                "Zo doe je dat; mail me op {JAN}.\r\n\r\nJoanna\r\n\r\n\
Op ma 23 nov. 2026 om 09:00 schreef {AN_NAME} <{AN}>:\r\n> Wie weet raad?"
            ),
        );
        post_to(
            &d,
            list,
            AN,
            AN_NAME,
            "Nog een vraag",
            &format!("q2.{l}@ocmw.be"),
            "En dit?\r\nAnna",
        );
        post_to(
            &d,
            list,
            JAN,
            JAN_NAME,
            "Nog iets",
            &format!("r2.{l}@ocmw.be"),
            &format!("Vraag het aan {JAN}.\r\nJoanna"),
        );
    }
    let held = |env: &TestEnv| env.cli(&["moderate", "list"]).stdout;
    assert!(
        wait_until(WAIT, || held(&env).lines().count() == 8),
        "{}",
        held(&env)
    );
    // The first two of each list are approved, in order (the answer after the question).
    for subject in ["Vraag over leefloon", "Re: Vraag over leefloon"] {
        for line in held(&env).lines() {
            let f: Vec<&str> = line.split('\t').collect();
            if f.get(3) == Some(&subject) {
                let out = env.cli(&["moderate", "approve", f[0]]);
                assert_eq!(out.code, Some(0), "{out:?}");
            }
        }
        let n = if subject.starts_with("Re") { 4 } else { 2 };
        assert!(
            wait_until(WAIT, || sink.count_for(&reader) == n),
            "{}",
            d.stderr()
        );
    }
    let archive = env.data_dir.join("archive-private");
    for l in ["forum", "praat"] {
        let dir = archive.join(l);
        assert!(wait_until(WAIT, || dir.exists()
            && containing(&dir, "Wie weet raad").len() >= 2
            && !containing(&dir, JAN_NAME).is_empty()));
    }
    // Settled: only An's and Joanna's deliveries and notices wait (two posts, two lists).
    assert!(
        wait_until(WAIT, || env.queue_len() == (8, 8)),
        "{:?}",
        env.queue_len()
    );
    let q = env.cli(&["queue", "list"]).stdout;
    assert!(
        q.contains(&format!("{B}\t")) && q.contains(&format!("\t{AN}\tattempts")),
        "{q}"
    );
    drop(d);
    let before = Stored::read(&env);
    let files_before = archive_files(&env);
    for list in [LIST, B] {
        assert_eq!(before.posts_of(list, AN).len(), 1, "{before:?}");
        assert_eq!(before.posts_of(list, JAN).len(), 1);
        for a in [AN, JAN] {
            assert_eq!(before.rows_of(list, a), 2, "{:?}", before.rows);
        }
    }
    let bounces = |list: &str| list.replacen('@', "-bounces@", 1);
    for list in [LIST, B] {
        for a in [AN, JAN] {
            // The notices that their two posts wait for a moderator.
            assert_eq!(before.mails_to(&bounces(list), a).len(), 2, "{a} on {list}");
        }
    }
    assert_eq!(before.held.len(), 4);

    // Forgotten on the first list only.
    d = Daemon::start(&mut env);
    let out = env.cli(&["members", "forget", "forum", AN]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout
            .contains(&format!("{LIST}: forgotten: member record removed")),
        "{out:?}"
    );
    assert!(!out.stdout.contains(B), "{out:?}");
    assert!(
        whole_addr(members(&env, "forum").as_bytes(), AN) == 0
            && members(&env, "forum").contains(JAN)
    );
    assert!(
        whole_addr(members(&env, "praat").as_bytes(), AN) == 1
            && members(&env, "praat").contains(JAN)
    );
    drop(d);
    let after = Stored::read(&env);
    // List B: every post, held post, queue row and queued mail as it was.
    let of = |st: &Stored, list: &str| {
        (
            st.posts
                .iter()
                .filter(|((l, _), _)| l == list)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<Vec<_>>(),
            st.held
                .iter()
                .filter(|((l, _, _), _)| l == list)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<Vec<_>>(),
            st.rows
                .iter()
                .filter(|(l, _, _)| l == list)
                .cloned()
                .collect::<Vec<_>>(),
            st.mails
                .iter()
                .filter(|(f, _, _)| *f == bounces(list))
                .cloned()
                .collect::<Vec<_>>(),
        )
    };
    let (a, b) = (of(&after, B), of(&before, B));
    assert!(a.0 == b.0, "list B's posts changed");
    assert!(a.1 == b.1, "list B's held posts changed");
    assert_eq!(a.2, b.2, "list B's queue rows changed");
    assert!(
        a.3 == b.3,
        "list B's queued mail changed: before {:?}, after {:?}",
        b.3.iter()
            .map(|(f, r, raw)| (f, r, raw.len()))
            .collect::<Vec<_>>(),
        a.3.iter()
            .map(|(f, r, raw)| (f, r, raw.len()))
            .collect::<Vec<_>>()
    );
    // List A: An's rows, held post and queued mail are gone, Joanna's are not.
    assert_eq!(after.rows_of(LIST, AN), 0);
    assert_eq!(after.rows_of(LIST, JAN), 2);
    assert!(after.mails_to(&bounces(LIST), AN).is_empty());
    assert_eq!(
        after.mails_to(&bounces(LIST), JAN),
        before.mails_to(&bounces(LIST), JAN)
    );
    assert!(!after.held.keys().any(|(l, a, _)| l == LIST && a == AN));
    let jan_held = (LIST.to_string(), JAN.to_string(), "Nog iets".to_string());
    assert_eq!(after.held.get(&jan_held), before.held.get(&jan_held));
    // Joanna's post on A: exactly An's name and address replaced, every other byte kept.
    let (jseq, jraw) = before.posts_of(LIST, JAN).remove(0);
    let want = String::from_utf8(jraw).unwrap().replace(
        &format!("schreef {AN_NAME} <{AN}>:"),
        "schreef Former member <forgotten-member@invalid>:",
    );
    let got = &after.posts[&(LIST.to_string(), jseq)].1;
    assert_eq!(String::from_utf8_lossy(got), want);
    assert!(whole_addr(got, JAN) >= 2 && got.windows(6).any(|w| w == b"Joanna"));
    let (aseq, _) = before.posts_of(LIST, AN).remove(0);
    let (author, araw) = &after.posts[&(LIST.to_string(), aseq)];
    assert_eq!(author, "forgotten-member@invalid");
    assert_eq!(
        whole_addr(araw, AN) + whole_word(araw, AN_NAME),
        0,
        "{}",
        String::from_utf8_lossy(araw)
    );
    // The archive: list B's files all as they were; on A, Joanna's download differs only
    // by An's name.
    let files_after = archive_files(&env);
    for (p, b) in &files_before {
        if p.starts_with(archive.join("praat")) {
            assert!(files_after.get(p) == Some(b), "{} changed", p.display());
        }
    }
    let eml = archive.join("forum").join("m").join(format!("{jseq}.eml"));
    let (eb, ea) = (&files_before[&eml], &files_after[&eml]);
    assert_eq!(
        String::from_utf8_lossy(ea),
        // (The download hides addresses, but the label is not one.)
        String::from_utf8_lossy(eb).replace(
            &format!("schreef {AN_NAME} <…@…>:"),
            "schreef Former member <forgotten-member@invalid>:"
        )
    );

    // Then on every list she is still on (B): nothing of An's address or name is left in
    // the lists' posts, held and queued mail, or archive files; Joanna keeps everything.
    d = Daemon::start(&mut env);
    let out = env.cli(&["members", "forget", "forum", AN, "--all-lists"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout
            .contains(&format!("{LIST}: forgotten: member record not found")),
        "{out:?}"
    );
    assert!(
        out.stdout
            .contains(&format!("{B}: forgotten: member record removed")),
        "{out:?}"
    );
    assert!(
        whole_addr(members(&env, "praat").as_bytes(), AN) == 0
            && members(&env, "praat").contains(JAN)
    );
    drop(d);
    let last = Stored::read(&env);
    for (k, (_, raw)) in &last.posts {
        assert_eq!(
            whole_addr(raw, AN),
            0,
            "{k:?}: {}",
            String::from_utf8_lossy(raw)
        );
        assert_eq!(
            whole_word(raw, AN_NAME),
            0,
            "{k:?}: {}",
            String::from_utf8_lossy(raw)
        );
        let was = &before.posts[k].1;
        assert_eq!(whole_addr(raw, JAN), whole_addr(was, JAN), "{k:?}");
        assert_eq!(
            whole_word(raw, "Joanna"),
            whole_word(was, "Joanna"),
            "{k:?}"
        );
    }
    for (k, raw) in &last.held {
        assert_ne!(k.1, AN);
        assert_eq!(whole_addr(raw, AN), 0, "{k:?}");
        assert_eq!(
            Some(raw),
            before.held.get(k),
            "Joanna's held posts keep every byte"
        );
    }
    assert_eq!(last.held.len(), 2);
    for (from, to, raw) in &last.mails {
        assert_eq!(whole_addr(to.as_bytes(), AN), 0);
        assert_eq!(whole_addr(raw, AN), 0, "mail from {from} to {to}");
    }
    for list in [LIST, B] {
        assert_eq!(last.rows_of(list, AN), 0);
        assert_eq!(last.rows_of(list, JAN), 2);
        assert_eq!(
            last.mails_to(&bounces(list), JAN),
            before.mails_to(&bounces(list), JAN)
        );
    }
    let files_last = archive_files(&env);
    for (p, b) in &files_last {
        assert_eq!(whole_addr(b, AN), 0, "{}", p.display());
        assert_eq!(whole_word(b, AN_NAME), 0, "{}", p.display());
        if let Some(was) = files_before.get(p) {
            assert_eq!(whole_addr(b, JAN), whole_addr(was, JAN), "{}", p.display());
            assert_eq!(
                whole_word(b, "Joanna"),
                whole_word(was, "Joanna"),
                "{}",
                p.display()
            );
        }
    }
    assert!(files_last.values().any(|b| whole_word(b, "Joanna") > 0));
}
