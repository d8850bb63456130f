//! End to end: muting a thread, through the real listener, the real binary, its web
//! endpoint and a real SMTP sink. One member mutes a thread with the link in its copy's
//! footer (a GET shows a page and changes nothing, the POST mutes), another with the mail
//! command `mute` sent to `-request` as a reply into the thread; neither gets further
//! copies of that thread (replies by References or by In-Reply-To only, deeper replies),
//! both still get the other threads and a new thread; unmuting (the page's button, the
//! mail command `unmute`) brings the thread back. A digest member who muted a thread gets
//! a digest without it, while another digest member gets the whole issue.

mod common;

use common::*;

const REQUEST: &str = "forum-request@lists.example.org";

/// The Message-IDs of the posts (list copies) `rcpt` received.
fn copies_for(sink: &Sink, rcpt: &str) -> Vec<String> {
    mails_for(sink, rcpt)
        .iter()
        .filter(|m| subject_of(&m.data).contains("[forum]"))
        .filter_map(|m| {
            mail_parser::MessageParser::default()
                .parse_headers(&m.data)
                .and_then(|h| h.message_id().map(str::to_string))
        })
        .collect()
}

/// A post with its parent ids (`refs` oldest first; In-Reply-To the last when `irt`).
fn reply(from: &str, subject: &str, id: &str, refs: &[&str], irt: bool, body: &str) -> Vec<u8> {
    let mut h = String::new();
    if !refs.is_empty() {
        let r: Vec<String> = refs.iter().map(|r| format!("<{r}>")).collect();
        h.push_str(&format!("References: {}\r\n", r.join(" ")));
        if irt {
            h.push_str(&format!("In-Reply-To: <{}>\r\n", refs[refs.len() - 1]));
        }
    } else if irt {
        panic!("In-Reply-To needs a parent");
    }
    format!(
        "From: {from}\r\nTo: {LIST}\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\n{h}\
Date: Mon, 01 Jan 2024 10:00:00 +0000\r\nMIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

/// Only In-Reply-To (as some clients write it).
fn reply_irt_only(from: &str, subject: &str, id: &str, parent: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: {LIST}\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\n\
In-Reply-To: <{parent}>\r\nDate: Mon, 01 Jan 2024 10:00:00 +0000\r\n\r\nJa.\r\n"
    )
    .into_bytes()
}

/// A mail command sent as a reply to the list copy `parent` (of thread `refs`).
fn command_reply(from: &str, word: &str, refs: &[&str]) -> Vec<u8> {
    let r: Vec<String> = refs.iter().map(|r| format!("<{r}>")).collect();
    format!(
        "From: {from}\r\nTo: {REQUEST}\r\nSubject: Re: [forum] Vraag over leefloon\r\n\
Message-ID: <cmd-{word}-{}@ocmw.be>\r\nIn-Reply-To: {}\r\nReferences: {}\r\n\r\n{word}\r\n\r\n\
On Monday someone wrote:\r\n> Dag collega's\r\n",
        rand_suffix(),
        r[r.len() - 1],
        r.join(" ")
    )
    .into_bytes()
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The member's own mute path (`/m/TOKEN`) from the footer of its copy of `message_id`.
fn mute_path(sink: &Sink, rcpt: &str, message_id: &str) -> String {
    let m = mails_for(sink, rcpt)
        .into_iter()
        .find(|m| String::from_utf8_lossy(&m.data).contains(&format!("Message-ID: <{message_id}>")))
        .unwrap_or_else(|| panic!("{rcpt} has no copy of {message_id}"));
    let parsed = mail_parser::MessageParser::default()
        .parse(&m.data)
        .unwrap();
    let text = parsed.body_text(0).unwrap().into_owned();
    let line = text
        .lines()
        .find(|l| l.starts_with("Stop receiving this thread: "))
        .unwrap_or_else(|| panic!("no mute link in the footer:\n{text}"));
    let at = line.find("/m/").expect("a /m/ link");
    let path = &line[at..];
    assert_eq!(path.len(), 3 + 48, "{line}");
    path.to_string()
}

fn answers_for(sink: &Sink, rcpt: &str) -> Vec<String> {
    mails_for(sink, rcpt)
        .iter()
        .filter(|m| subject_of(&m.data) == "Reply from Forum")
        .map(|m| {
            mail_parser::MessageParser::default()
                .parse(&m.data)
                .and_then(|p| p.body_text(0).map(|t| t.into_owned()))
                .unwrap_or_default()
        })
        .collect()
}

#[test]
fn muted_members_get_no_more_of_that_thread_and_unmuting_brings_it_back() {
    let sink = Sink::start();
    let mut env = TestEnv::new(sink.port, Opts::web());
    let (poster, web, mail, other) = (member(0), member(1), member(2), member(3));
    env.add_members(&[poster.clone(), web.clone(), mail.clone(), other.clone()]);
    let d = Daemon::start(&mut env);
    let hp = env.http_port;

    let send = |m: Vec<u8>| assert_eq!(post(d.port, &poster, LIST, &m), 250);
    send(reply(
        &poster,
        "Vraag over leefloon",
        "a-1@ocmw.be",
        &[],
        false,
        "Dag collega's",
    ));
    send(reply(
        &poster,
        "Vraag over huurwaarborg",
        "b-1@ocmw.be",
        &[],
        false,
        "Wie weet",
    ));
    assert!(wait_until(WAIT, || copies_for(&sink, &other).len() == 2));
    assert!(env.wait_queue_empty());

    // Each member's own link, the same in every copy of the thread, another per thread.
    let link = mute_path(&sink, &web, "a-1@ocmw.be");
    assert_ne!(link, mute_path(&sink, &other, "a-1@ocmw.be"));
    assert_ne!(link, mute_path(&sink, &web, "b-1@ocmw.be"));

    // A GET (a link scanner) only shows the page with its button.
    let (status, page) = http(hp, "GET", &link, "");
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Stop receiving this thread"), "{page}");
    assert!(page.contains("Vraag over leefloon"), "{page}");
    assert!(page.contains("method=\"post\""), "{page}");
    let (status, _) = http(
        hp,
        "GET",
        "/m/aaaaaaaabbbbbbbbccccccccddddddddeeeeeeeeffffffff",
        "",
    );
    assert_eq!(status, 404);
    send(reply(
        &poster,
        "Re: Vraag over leefloon",
        "a-2@ocmw.be",
        &["a-1@ocmw.be"],
        true,
        "Ja",
    ));
    assert!(wait_until(WAIT, || copies_for(&sink, &other).len() == 3));
    assert!(env.wait_queue_empty());
    assert!(copies_for(&sink, &web).contains(&"a-2@ocmw.be".to_string()));

    // The POST mutes; the page answers with a button to unmute.
    let (status, page) = http(hp, "POST", &link, "do=mute");
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("You no longer receive this thread"), "{page}");
    assert!(page.contains("name=\"do\" value=\"unmute\""), "{page}");
    // Again: the same (muting is idempotent); a GET now shows the state.
    assert_eq!(http(hp, "POST", &link, "do=mute").0, 200);
    assert!(http(hp, "GET", &link, "")
        .1
        .contains("Receive this thread again"));

    // The other member mutes by mail: `mute` as a reply into the thread, to -request.
    let cmd = command_reply(&mail, "mute", &["a-1@ocmw.be", "a-2@ocmw.be"]);
    assert_eq!(post(d.port, &mail, REQUEST, &cmd), 250);
    assert!(wait_until(WAIT, || answers_for(&sink, &mail).len() == 1));
    let answer = &answers_for(&sink, &mail)[0];
    assert!(
        answer.contains("You no longer receive the thread \"Vraag over leefloon\""),
        "{answer}"
    );
    // A command that replies to nothing of the list changes nothing and says so.
    let stray = format!(
        "From: {mail}\r\nTo: {REQUEST}\r\nSubject: mute\r\nMessage-ID: <stray@ocmw.be>\r\n\r\n"
    );
    assert_eq!(post(d.port, &mail, REQUEST, stray.as_bytes()), 250);
    assert!(wait_until(WAIT, || answers_for(&sink, &mail).len() == 2));
    assert!(answers_for(&sink, &mail)[1].contains("work only as a reply"));

    // Further posts: replies by References, by In-Reply-To only, a deeper reply; a reply in
    // the other thread; a new thread with the same subject.
    send(reply(
        &poster,
        "Re: Vraag over leefloon",
        "a-3@ocmw.be",
        &["a-1@ocmw.be", "a-2@ocmw.be"],
        true,
        "Nog iets",
    ));
    send(reply_irt_only(
        &poster,
        "Re: Vraag over leefloon",
        "a-4@ocmw.be",
        "a-3@ocmw.be",
    ));
    send(reply(
        &poster,
        "Re: Vraag over leefloon",
        "a-5@ocmw.be",
        &["a-4@ocmw.be"],
        false,
        "x",
    ));
    send(reply(
        &poster,
        "Re: Vraag over huurwaarborg",
        "b-2@ocmw.be",
        &["b-1@ocmw.be"],
        true,
        "y",
    ));
    send(reply(
        &poster,
        "Vraag over leefloon",
        "c-1@ocmw.be",
        &[],
        false,
        "Een nieuwe vraag",
    ));
    assert!(wait_until(WAIT, || copies_for(&sink, &other).len() == 8));
    assert!(env.wait_queue_empty());
    for m in [&web, &mail] {
        let got = copies_for(&sink, m);
        for id in ["a-3@ocmw.be", "a-4@ocmw.be", "a-5@ocmw.be"] {
            assert!(
                !got.contains(&id.to_string()),
                "{m} got {id} of the muted thread"
            );
        }
        for id in ["b-1@ocmw.be", "b-2@ocmw.be", "c-1@ocmw.be"] {
            assert!(got.contains(&id.to_string()), "{m} misses {id}: {got:?}");
        }
    }
    // The poster (who muted nothing) got everything.
    assert_eq!(copies_for(&sink, &poster).len(), 8);

    // Unmuting: the page's button, and the mail command.
    let (status, page) = http(hp, "POST", &link, "do=unmute");
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("You receive this thread again"), "{page}");
    let cmd = command_reply(&mail, "unmute", &["a-1@ocmw.be", "a-2@ocmw.be"]);
    assert_eq!(post(d.port, &mail, REQUEST, &cmd), 250);
    assert!(wait_until(WAIT, || answers_for(&sink, &mail).len() == 3));
    assert!(answers_for(&sink, &mail)[2]
        .contains("You receive the thread \"Vraag over leefloon\" again"));
    send(reply(
        &poster,
        "Re: Vraag over leefloon",
        "a-6@ocmw.be",
        &["a-1@ocmw.be", "a-5@ocmw.be"],
        true,
        "Terug",
    ));
    assert!(wait_until(WAIT, || copies_for(&sink, &other).len() == 9));
    assert!(env.wait_queue_empty());
    for m in [&web, &mail] {
        assert!(
            copies_for(&sink, m).contains(&"a-6@ocmw.be".to_string()),
            "{m}"
        );
    }
    // No address in the daemon's log lines about muting.
    let log = d.stderr();
    assert!(log.contains("member muted a thread on the web"), "{log}");
    for l in log.lines().filter(|l| l.contains("muted")) {
        assert!(!l.contains(&web), "{l}");
    }
}

#[test]
fn digests_leave_out_a_muted_thread_for_that_member_only() {
    let sink = Sink::start();
    let mut env = TestEnv::new(sink.port, Opts::web());
    let (poster, muter, all) = (member(0), member(1), member(2));
    env.add_members(&[poster.clone(), muter.clone(), all.clone()]);
    for m in [&muter, &all] {
        let out = env.cli(&["members", "set", "forum", m, "digest", "on"]);
        assert_eq!(out.code, Some(0), "{out:?}");
    }
    let d = Daemon::start(&mut env);
    let send = |m: Vec<u8>| assert_eq!(post(d.port, &poster, LIST, &m), 250);
    send(reply(
        &poster,
        "Vraag over leefloon",
        "a-1@ocmw.be",
        &[],
        false,
        "Dag",
    ));
    send(reply(
        &poster,
        "Vraag over huurwaarborg",
        "b-1@ocmw.be",
        &[],
        false,
        "Wie",
    ));
    assert!(wait_until(WAIT, || copies_for(&sink, &poster).len() == 2));
    // The first digest has both; the digest member mutes thread a by replying to its post
    // in the digest.
    let out = env.cli(&["digest", "send", "forum"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let digests = |rcpt: &str| -> Vec<String> {
        mails_for(&sink, rcpt)
            .iter()
            .filter(|m| subject_of(&m.data).contains("Digest, Vol"))
            .map(|m| String::from_utf8_lossy(&m.data).into_owned())
            .collect()
    };
    assert!(wait_until(WAIT, || digests(&muter).len() == 1
        && digests(&all).len() == 1));
    assert!(digests(&muter)[0].contains("Message-ID: <a-1@ocmw.be>"));
    let cmd = command_reply(&muter, "stil", &["a-1@ocmw.be"]);
    assert_eq!(post(d.port, &muter, REQUEST, &cmd), 250);
    assert!(wait_until(WAIT, || mails_for(&sink, &muter)
        .iter()
        .any(|m| subject_of(&m.data) == "Antwoord van Forum")));

    send(reply(
        &poster,
        "Re: Vraag over leefloon",
        "a-2@ocmw.be",
        &["a-1@ocmw.be"],
        true,
        "1",
    ));
    send(reply(
        &poster,
        "Re: Vraag over huurwaarborg",
        "b-2@ocmw.be",
        &["b-1@ocmw.be"],
        true,
        "2",
    ));
    send(reply(
        &poster,
        "Re: Vraag over leefloon",
        "a-3@ocmw.be",
        &["a-1@ocmw.be", "a-2@ocmw.be"],
        true,
        "3",
    ));
    assert!(wait_until(WAIT, || copies_for(&sink, &poster).len() == 5));
    let out = env.cli(&["digest", "send", "forum"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(wait_until(WAIT, || digests(&muter).len() == 2
        && digests(&all).len() == 2));
    assert!(env.wait_queue_empty());
    let (mine, whole) = (&digests(&muter)[1], &digests(&all)[1]);
    for id in ["a-2@ocmw.be", "a-3@ocmw.be"] {
        assert!(
            !mine.contains(&format!("Message-ID: <{id}>")),
            "muted {id} in the digest"
        );
        assert!(
            whole.contains(&format!("Message-ID: <{id}>")),
            "{id} missing"
        );
    }
    assert!(mine.contains("Message-ID: <b-2@ocmw.be>"));
    assert!(whole.contains("Message-ID: <b-2@ocmw.be>"));
    // The same issue for both, one issue counted.
    assert!(
        subject_of(mine.as_bytes()).ends_with("Issue 2"),
        "{}",
        subject_of(mine.as_bytes())
    );
    assert_eq!(subject_of(mine.as_bytes()), subject_of(whole.as_bytes()));
    let stats = env.cli(&["stats", "forum"]);
    assert!(stats.stdout.contains("digests sent:      2"), "{stats:?}");
}
