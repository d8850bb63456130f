//! End to end: auto-replies and loops never reach the list and are never answered.

mod common;

use common::*;
use std::time::Duration;

/// The daemon's log lines about dropped messages.
fn dropped(d: &Daemon) -> usize {
    d.stderr().matches("dropped, kept in quarantine").count()
}

#[test]
fn fifty_vacation_replies_produce_no_post_and_no_answer() {
    let sink = Sink::start();
    let mut env = TestEnv::new(sink.port, Opts::default());
    let members: Vec<String> = (0..50).map(member).collect();
    env.add_members(&members);
    let d = Daemon::start(&mut env);
    let post = message(
        &members[0],
        "Vraag over leefloon",
        "oof-post@ocmw.be",
        "Wie weet raad?",
    );
    assert_eq!(post_msg(d.port, &members[0], LIST, &post), 250);
    assert!(wait_until(WAIT, || sink.count() == 50));
    // Every member's responder answers, each in its own dialect, to the list (Reply-To)
    // or to the request address.
    for (i, m) in members.iter().enumerate() {
        let (extra, subject, env_from) = match i % 10 {
            0 => (
                "Auto-Submitted: auto-replied\r\n",
                "Re: [forum] Vraag over leefloon",
                m.as_str(),
            ),
            1 => (
                "X-Autoreply: yes\r\n",
                "Re: [forum] Vraag over leefloon",
                m.as_str(),
            ),
            2 => (
                "Precedence: bulk\r\n",
                "Re: [forum] Vraag over leefloon",
                m.as_str(),
            ),
            3 => (
                "X-Auto-Response-Suppress: All\r\n",
                "Automatic reply: [forum] Vraag",
                m.as_str(),
            ),
            4 => (
                "",
                "Automatisch antwoord: [forum] Vraag over leefloon",
                m.as_str(),
            ),
            5 => ("", "Afwezig: [forum] Vraag over leefloon", m.as_str()),
            6 => ("", "Réponse automatique : [forum] Vraag", m.as_str()),
            7 => ("", "Abwesenheitsnotiz: [forum] Vraag", m.as_str()),
            8 => ("", "Out of Office: [forum] Vraag over leefloon", ""),
            _ => (
                "X-Autorespond: on\r\n",
                "Re: [forum] Vraag over leefloon",
                m.as_str(),
            ),
        };
        let raw = format!(
            "From: {m}\r\nTo: {LIST}\r\nSubject: {subject}\r\nMessage-ID: <oof-{i}@ocmw.be>\r\n\
In-Reply-To: <oof-post@ocmw.be>\r\n{extra}\r\nIk ben afwezig tot maandag.\r\n"
        );
        let rcpt = if i % 4 == 3 {
            "forum-request@lists.example.org"
        } else {
            LIST
        };
        assert_eq!(post_msg(d.port, env_from, rcpt, raw.as_bytes()), 250);
    }
    assert!(
        wait_until(WAIT, || dropped(&d) == 50),
        "{} of 50 dropped",
        dropped(&d)
    );
    assert!(env.wait_queue_empty());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        sink.count(),
        50,
        "no post and no answer beyond the one post"
    );
}

#[test]
fn a_loop_between_two_lists_ends_at_the_first_hop() {
    let sink = Sink::start();
    let other = "andere@lists.example.org";
    let mut env = TestEnv::new(
        sink.port,
        Opts {
            list_extra: format!(
                "\n[[list]]\naddress = \"{other}\"\nname = \"Andere\"\nposting = \"open\"\n"
            ),
            ..Opts::default()
        },
    );
    // Each list is a member of the other.
    env.add_members(&[member(1), other.to_string()]);
    let out = env.cli(&["members", "add", "andere", LIST, &member(2)]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let d = Daemon::start(&mut env);
    let post = message(&member(1), "Rondje", "loop-1@ocmw.be", "Gaat dit rond?");
    assert_eq!(post_msg(d.port, &member(1), LIST, &post), 250);
    // The copy for the other list goes back in, as the MTA would deliver it...
    assert!(wait_until(WAIT, || sink.count_for(other) == 1));
    let copy = sink
        .messages()
        .into_iter()
        .find(|m| m.rcpt == other)
        .unwrap();
    assert_eq!(post_msg(d.port, &copy.from, other, &copy.data), 250);
    // ...and stops there: a list copy (Precedence: list, another list's List-Id and X-Loop)
    // is never posted again, so the other list's members and we see nothing more.
    assert!(wait_until(WAIT, || dropped(&d) == 1), "{}", d.stderr());
    assert!(d.stderr().contains("Precedence: list"));
    assert!(env.wait_queue_empty());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sink.count_for(&member(1)), 1, "posted once on our list");
    assert_eq!(sink.count_for(&member(2)), 0, "not on the other list");
    assert_eq!(sink.count_for(LIST), 0, "nothing came back");
    // Were it taken further by hand, our own X-Loop (kept by other lists) stops it here.
    let mut looped = b"X-Loop: andere@lists.example.org\r\n".to_vec();
    looped.extend_from_slice(&copy.data);
    let looped = String::from_utf8_lossy(&looped).replace("Precedence: list\r\n", "");
    assert_eq!(post_msg(d.port, &copy.from, LIST, looped.as_bytes()), 250);
    assert!(wait_until(WAIT, || d.stderr().contains("mail loop")));
}

fn post_msg(port: u16, from: &str, rcpt: &str, data: &[u8]) -> u16 {
    post(port, from, rcpt, data)
}
