//! End to end: digests and vacation, through the real listener, the real binary and a real
//! SMTP sink. A digest member of a list with 30 posts gets exactly one digest holding all
//! 30, which Python's `email` package reads as a multipart/digest; plain-text (RFC 1153)
//! digests; digests due by the clock (moved with `VRAAGBAAK_CLOCK_OFFSET`) and by size; a
//! crash while a digest is being delivered neither loses nor repeats it; nomail members get
//! nothing, and `nomail until` ends on time.

mod common;

use common::*;
use std::process::Command;
use std::sync::Arc;

const CHECK: &str = "tests/scripts/digest_check.py";

fn digests_for(sink: &Sink, rcpt: &str) -> Vec<Received> {
    mails_for(sink, rcpt)
        .into_iter()
        .filter(|m| subject_of(&m.data).contains("Digest, Vol"))
        .collect()
}

/// Python's reading of a MIME digest (see `tests/scripts/digest_check.py`).
fn python_reads(env: &TestEnv, data: &[u8]) -> serde_json::Value {
    let f = env.path().join(format!("digest-{}.eml", data.len()));
    std::fs::write(&f, data).unwrap();
    let out = Command::new("python3")
        .args([CHECK, f.to_str().unwrap()])
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "not a MIME digest: {text}");
    serde_json::from_str(&text).expect("json from digest_check.py")
}

/// How many posts Python finds in a MIME digest.
fn posts_in(env: &TestEnv, data: &[u8]) -> usize {
    python_reads(env, data)["posts"]
        .as_array()
        .map_or(0, Vec::len)
}

fn set(env: &TestEnv, addr: &str, args: &[&str]) {
    let mut a = vec!["members", "set", "forum", addr];
    a.extend_from_slice(args);
    let out = env.cli(&a);
    assert_eq!(out.code, Some(0), "{out:?}");
}

fn post_n(d: &Daemon, from: &str, n: usize, tag: &str) {
    for i in 0..n {
        let m = message(
            from,
            &format!("Vraag {i} over {tag}"),
            &format!("{tag}-{i}@ocmw.be"),
            &format!("Tekst van vraag {i}.\r\n------------------------------\r\nna de streep"),
        );
        assert_eq!(post(d.port, from, LIST, &m), 250);
    }
}

#[test]
fn thirty_posts_make_one_digest_per_digest_member() {
    let sink = Sink::start();
    let mut env = TestEnv::new(sink.port, Opts::web());
    let (poster, reader, digest, plain, away, away_digest) = (
        member(0),
        member(1),
        member(2),
        member(3),
        member(4),
        member(5),
    );
    env.add_members(&[
        poster.clone(),
        reader.clone(),
        digest.clone(),
        plain.clone(),
        away.clone(),
        away_digest.clone(),
    ]);
    set(&env, &digest, &["digest", "on"]);
    set(&env, &plain, &["digest", "plain"]);
    set(&env, &away, &["nomail", "on"]);
    set(&env, &away_digest, &["digest", "on"]);
    set(&env, &away_digest, &["nomail", "on"]);
    let d = Daemon::start(&mut env);
    post_n(&d, &poster, 30, "leefloon");
    assert!(wait_until(WAIT, || mails_for(&sink, &reader).len() == 30));
    assert!(env.wait_queue_empty());
    // Not yet due (07:00 tomorrow at the earliest): nothing for digest members.
    assert!(mails_for(&sink, &digest).is_empty());

    let out = env.cli(&["digest", "send", "forum"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("1 digest(s) queued"), "{out:?}");
    assert!(wait_until(WAIT, || digests_for(&sink, &digest).len() == 1
        && digests_for(&sink, &plain).len() == 1));
    assert!(env.wait_queue_empty());

    // The MIME digest, as Python reads it: every post once, in order, as message/rfc822.
    let dg = &digests_for(&sink, &digest)[0];
    assert_eq!(subject_of(&dg.data), "Forum Digest, Vol 1, Issue 1");
    let v = python_reads(&env, &dg.data);
    let posts = v["posts"].as_array().unwrap();
    assert_eq!(posts.len(), 30, "{v}");
    for (i, p) in posts.iter().enumerate() {
        assert_eq!(p["subject"], format!("Vraag {i} over leefloon"));
        assert_eq!(p["message_id"], format!("<leefloon-{i}@ocmw.be>"));
        assert_eq!(p["received"], false, "trace fields are not passed on");
    }
    assert!(v["toc"]
        .as_str()
        .unwrap()
        .contains("30. Vraag 29 over leefloon"));
    assert!(v["footer"].as_str().unwrap().contains(FOOTER));
    let text = String::from_utf8_lossy(&dg.data);
    for h in [
        "List-Id: ",
        "List-Post: ",
        "List-Unsubscribe: <http",
        "List-Unsubscribe-Post: ",
    ] {
        assert!(text.contains(h), "digest lacks {h}");
    }
    assert_eq!(dg.from, verp(&env, &digest));

    // The plain digest (RFC 1153): one text/plain mail with every post.
    let pd = &digests_for(&sink, &plain)[0];
    let m = mail_parser::MessageParser::default()
        .parse(&pd.data)
        .unwrap();
    assert!(
        m.parts.len() == 1 && m.body_text(0).is_some(),
        "a single text/plain part"
    );
    let body = m.body_text(0).unwrap().replace("\r\n", "\n");
    assert!(body.contains("Message: 30\n"), "{body}");
    assert!(body.contains("Subject: Vraag 29 over leefloon"));
    assert!(
        body.contains("\n ------------------------------\nna de streep"),
        "a 30-dash line in a post is escaped"
    );
    assert!(body.contains("End of Forum Digest, Vol 1, Issue 1\n*****"));
    assert_eq!(
        body.matches("\n------------------------------\n").count(),
        30
    );

    // Digest members got no single posts; nomail members got nothing at all.
    for m in [&digest, &plain] {
        assert_eq!(mails_for(&sink, m).len(), 1, "{m}");
    }
    assert!(mails_for(&sink, &away).is_empty());
    assert!(mails_for(&sink, &away_digest).is_empty());

    // Nothing pending: no digest. One more post: the next issue.
    let out = env.cli(&["digest", "send"]);
    assert!(out.stdout.contains("0 digest(s) queued"), "{out:?}");
    post_n(&d, &poster, 1, "huur");
    assert!(wait_until(WAIT, || mails_for(&sink, &reader).len() == 31));
    let out = env.cli(&["digest", "send"]);
    assert!(out.stdout.contains("1 digest(s) queued"), "{out:?}");
    assert!(wait_until(WAIT, || digests_for(&sink, &digest).len() == 2));
    let second = &digests_for(&sink, &digest)[1];
    assert_eq!(subject_of(&second.data), "Forum Digest, Vol 1, Issue 2");
    assert_eq!(posts_in(&env, &second.data), 1);

    // The owner's view.
    let out = env.cli(&["stats", "forum"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let month = chrono::Utc::now().format("%Y-%m").to_string();
    for line in [
        "members:           6",
        "digest:          3 (1 plain text)",
        "nomail:          2 (0 with an end date)",
        "bounce-disabled: 0",
        "held posts:        0",
        "digests sent:      2 (last: vol 1, issue 2)",
        "posts:             31",
    ] {
        assert!(out.stdout.contains(line), "{line:?} not in\n{}", out.stdout);
    }
    assert!(out.stdout.contains(&month), "{}", out.stdout);
}

#[test]
fn digests_go_out_at_digest_time_and_when_they_grow_too_big() {
    let sink = Sink::start();
    let mut env = TestEnv::new(
        sink.port,
        Opts {
            list_extra: "digest_time = \"07:00\"\ntimezone = \"Europe/Brussels\"\n".into(),
            ..Opts::default()
        },
    );
    let (poster, digest) = (member(0), member(1));
    env.add_members(&[poster.clone(), digest.clone()]);
    set(&env, &digest, &["digest", "on"]);
    let d = Daemon::start(&mut env);
    post_n(&d, &poster, 3, "tijd");
    assert!(wait_until(WAIT, || mails_for(&sink, &poster).len() == 3));
    drop(d);
    assert!(digests_for(&sink, &digest).is_empty());
    // A day later the digest time has passed: the daemon sends it by itself.
    env.daemon_env
        .push(("VRAAGBAAK_CLOCK_OFFSET".into(), "90000".into()));
    let d = Daemon::start(&mut env);
    assert!(wait_until(WAIT, || digests_for(&sink, &digest).len() == 1));
    let v = python_reads(&env, &digests_for(&sink, &digest)[0].data);
    assert_eq!(v["posts"].as_array().unwrap().len(), 3);
    drop(d);

    // Size: with digest_max_size small, a big enough post sends it at once.
    env.daemon_env.clear();
    env.opts.list_extra = "digest_max_size = 2000\n".into();
    env.write_config();
    let d = Daemon::start(&mut env);
    post_n(&d, &poster, 1, "klein");
    let big = message(
        &poster,
        "Lang verhaal",
        "groot@ocmw.be",
        &"tekst ".repeat(500),
    );
    assert_eq!(post(d.port, &poster, LIST, &big), 250);
    assert!(wait_until(WAIT, || digests_for(&sink, &digest).len() == 2));
    let second = &digests_for(&sink, &digest)[1];
    assert_eq!(subject_of(&second.data), "Forum Digest, Vol 1, Issue 2");
    assert_eq!(posts_in(&env, &second.data), 2);
}

#[test]
fn a_crash_while_a_digest_is_delivered_neither_loses_nor_repeats_it() {
    let slow = member(2);
    let s2 = slow.clone();
    // The relay refuses the slow member's RCPT for a while (451): the digest waits in
    // the queue when the daemon is killed.
    let sink = Sink::with(SinkBehaviour {
        tempfail: Some((Arc::new(move |r: &str| r == s2), 3)),
        ..Default::default()
    });
    let mut env = TestEnv::new(sink.port, Opts::default());
    let (poster, quick) = (member(0), member(1));
    env.add_members(&[poster.clone(), quick.clone(), slow.clone()]);
    set(&env, &quick, &["digest", "on"]);
    set(&env, &slow, &["digest", "on"]);
    let mut d = Daemon::start(&mut env);
    post_n(&d, &poster, 5, "crash");
    assert!(wait_until(WAIT, || mails_for(&sink, &poster).len() == 5));
    let out = env.cli(&["digest", "send", "forum"]);
    assert!(out.stdout.contains("1 digest(s) queued"), "{out:?}");
    assert!(wait_until(WAIT, || digests_for(&sink, &quick).len() == 1));
    assert!(wait_until(WAIT, || sink
        .rcpt_events()
        .iter()
        .any(|e| e.rcpt == slow && e.code == 451)));
    // Killed once the quick member's delivery is on record and the slow one's is not.
    assert!(wait_until(WAIT, || env.queue_len() == (1, 0)));
    d.kill9();
    let d = Daemon::start(&mut env);
    assert!(wait_until(WAIT, || digests_for(&sink, &slow).len() == 1));
    assert!(env.wait_queue_empty());
    // The same digest, once each; no second one was made.
    assert_eq!(digests_for(&sink, &quick).len(), 1);
    assert_eq!(digests_for(&sink, &slow).len(), 1);
    for m in [&quick, &slow] {
        let dg = &digests_for(&sink, m)[0];
        assert_eq!(subject_of(&dg.data), "Forum Digest, Vol 1, Issue 1");
        assert_eq!(posts_in(&env, &dg.data), 5);
    }
    let out = env.cli(&["digest", "send"]);
    assert!(out.stdout.contains("0 digest(s) queued"), "{out:?}");
    drop(d);
}

#[test]
fn nomail_until_ends_on_time() {
    let sink = Sink::start();
    let mut env = TestEnv::new(sink.port, Opts::default());
    let (poster, away, by_mail) = (member(0), member(1), member(2));
    env.add_members(&[poster.clone(), away.clone(), by_mail.clone()]);
    // Tomorrow in the list's time zone (Europe/Brussels): the UTC date is a day behind
    // between midnight there and midnight in UTC.
    let tomorrow = (chrono::Utc::now()
        .with_timezone(&chrono_tz::Europe::Brussels)
        .date_naive()
        + chrono::Duration::days(1))
    .format("%Y-%m-%d")
    .to_string();
    set(&env, &away, &["nomail", "on", "--until", &tomorrow]);
    let d = Daemon::start(&mut env);
    // The other member pauses by mail, in Dutch.
    let cmd = message(
        &by_mail,
        "vakantie",
        "cmd-1@ocmw.be",
        &format!("instellen vakantie tot {tomorrow}\r\n"),
    );
    assert_eq!(
        post(d.port, &by_mail, "forum-request@lists.example.org", &cmd),
        250
    );
    // Confirmed first (no DKIM signature of the member's domain), then carried out.
    assert!(wait_until(WAIT, || mails_for(&sink, &by_mail).len() == 1));
    let confirm = confirm_address_in(&mails_for(&sink, &by_mail)[0].data);
    let ok = message(&by_mail, "Re: bevestig", "cmd-2@ocmw.be", "ok");
    assert_eq!(post(d.port, &by_mail, &confirm, &ok), 250);
    assert!(wait_until(WAIT, || mails_for(&sink, &by_mail).len() == 2));
    let answer = mail_parser::MessageParser::default()
        .parse(&mails_for(&sink, &by_mail)[1].data)
        .and_then(|m| m.body_text(0).map(|t| t.into_owned()))
        .unwrap_or_default();
    let until_nl = chrono::NaiveDate::parse_from_str(&tomorrow, "%Y-%m-%d")
        .unwrap()
        .format("%d-%m-%Y")
        .to_string();
    assert!(
        answer.contains(&format!("staat aan tot {until_nl}")),
        "{answer}"
    );
    let out = env.cli(&["members", "list", "forum", "--bounces"]);
    assert!(out.stdout.contains("nomail until"), "{out:?}");
    post_n(&d, &poster, 1, "vandaag");
    assert!(wait_until(WAIT, || mails_for(&sink, &poster).len() == 1));
    assert!(env.wait_queue_empty());
    assert!(mails_for(&sink, &away).is_empty());
    assert_eq!(
        mails_for(&sink, &by_mail).len(),
        2,
        "only the confirmation and the answer"
    );
    drop(d);
    // Two days on, the vacation is over by itself.
    env.daemon_env
        .push(("VRAAGBAAK_CLOCK_OFFSET".into(), (2 * 86_400).to_string()));
    let d = Daemon::start(&mut env);
    post_n(&d, &poster, 1, "overmorgen");
    assert!(wait_until(WAIT, || mails_for(&sink, &away).len() == 1));
    assert!(wait_until(WAIT, || mails_for(&sink, &by_mail).len() == 3));
    drop(d);
}

/// A digest ends with the last week's questions nobody answered yet: not the answered ones,
/// not replies, and not the questions it holds itself (they are in its table of contents).
#[test]
fn a_digest_ends_with_the_weeks_unanswered_questions() {
    let sink = Sink::start();
    let mut env = TestEnv::new(sink.port, Opts::web());
    let (poster, other, digest, plain) = (member(0), member(1), member(2), member(3));
    env.add_members(&[poster.clone(), other.clone(), digest.clone(), plain.clone()]);
    set(&env, &digest, &["digest", "on"]);
    set(&env, &plain, &["digest", "plain"]);
    let d = Daemon::start(&mut env);
    let send = |from: &str, subject: &str, id: &str, reply_to: Option<&str>| {
        let mut m = message(from, subject, id, "Tekst.");
        if let Some(p) = reply_to {
            let h = format!("In-Reply-To: <{p}>\r\nReferences: <{p}>\r\n");
            m.splice(0..0, h.into_bytes());
        }
        assert_eq!(post(d.port, from, LIST, &m), 250);
    };
    send(&poster, "Vraag over huurwaarborg", "open-1@ocmw.be", None);
    send(&poster, "Vraag over leefloon", "answered-1@ocmw.be", None);
    send(
        &other,
        "Re: [forum] Vraag over leefloon",
        "reply-1@ocmw.be",
        Some("answered-1@ocmw.be"),
    );
    assert!(wait_until(WAIT, || mails_for(&sink, &poster).len() >= 2));
    assert!(env.wait_queue_empty());
    let out = env.cli(&["digest", "send", "forum"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(wait_until(WAIT, || digests_for(&sink, &digest).len() == 1));
    // The open question is in this digest's contents: not listed again at its end.
    assert!(
        !String::from_utf8_lossy(&digests_for(&sink, &digest)[0].data).contains("No answer yet")
    );

    send(&poster, "Vraag over verhuis", "new-1@ocmw.be", None);
    assert!(wait_until(WAIT, || mails_for(&sink, &other).len() >= 3));
    assert!(env.wait_queue_empty());
    let out = env.cli(&["digest", "send", "forum"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(wait_until(WAIT, || digests_for(&sink, &digest).len() == 2
        && digests_for(&sink, &plain).len() == 2));
    for who in [&digest, &plain] {
        let dg = digests_for(&sink, who)
            .into_iter()
            .find(|m| subject_of(&m.data).contains("Issue 2"))
            .expect("the second digest");
        // Quoted-printable: join soft line breaks before reading.
        let text = String::from_utf8_lossy(&dg.data).replace("=\r\n", "");
        let tail = text
            .split("No answer yet")
            .nth(1)
            .unwrap_or_else(|| panic!("no open questions in the digest to {who}: {text}"));
        let section = tail
            .split("------------------------------")
            .next()
            .unwrap_or(tail);
        let section = section.split("To unsubscribe").next().unwrap_or(section);
        assert!(section.contains("Vraag over huurwaarborg"), "{section}");
        assert!(!section.contains("leefloon"), "{section}");
        assert!(!section.contains("verhuis"), "{section}");
    }
}
