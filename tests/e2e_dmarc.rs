//! End to end: with `from_rewrite = "dmarc"` (the default), a post from a domain that
//! publishes `p=reject` goes out with the list's From and the author reachable by reply;
//! from a `p=none` domain it goes out unchanged. The daemon's DNS answers from a fixed
//! table (`[dns] records`, offline).

mod common;

use common::*;
use mail_parser::MessageParser;

fn copy_for<'a>(all: &'a [Received], rcpt: &str, mid: &str) -> &'a Received {
    all.iter()
        .find(|m| m.rcpt == rcpt && String::from_utf8_lossy(&m.data).contains(mid))
        .unwrap_or_else(|| panic!("no copy of {mid} for {rcpt}"))
}

#[test]
fn p_reject_rewrites_the_from_and_p_none_does_not() {
    let sink = Sink::start();
    let opts = Opts {
        dns_records: vec![
            (
                "_dmarc.example.com".into(),
                "v=DMARC1; p=reject; rua=mailto:dmarc@example.com".into(),
            ),
            ("_dmarc.example.net".into(), "v=DMARC1; p=none".into()),
        ],
        ..Opts::default()
    };
    let mut env = TestEnv::new(sink.port, opts);
    let (strict, relaxed, reader) = ("a@example.com", "b@example.net", "lezer@ocmw.be");
    env.add_members(&[strict.into(), relaxed.into(), reader.into()]);
    let d = Daemon::start(&mut env);

    let post1 = b"From: Anna Peeters <a@example.com>\r\nTo: forum@lists.example.org\r\n\
Subject: Vraag over leefloon\r\nMessage-ID: <dmarc-1@example.com>\r\n\r\nWie weet raad?\r\n";
    assert_eq!(post(d.port, strict, LIST, post1), 250);
    let post2 = b"From: Bert <b@example.net>\r\nTo: forum@lists.example.org\r\n\
Subject: Antwoord\r\nMessage-ID: <dmarc-2@example.net>\r\n\r\nZo doe je dat.\r\n";
    assert_eq!(post(d.port, relaxed, LIST, post2), 250);
    assert!(wait_until(WAIT, || sink.count() == 6));
    let all = sink.messages();

    let c = copy_for(&all, reader, "dmarc-1@example.com");
    let m = MessageParser::default().parse(&c.data).unwrap();
    let from = m.from().unwrap().first().unwrap();
    assert_eq!(from.address(), Some(LIST));
    assert_eq!(from.name(), Some("Anna Peeters via Forum"));
    // The reader's "reply" goes to the list (Reply-To), "reply all" reaches the author too.
    let reply_to: Vec<_> = m
        .reply_to()
        .unwrap()
        .iter()
        .filter_map(|a| a.address())
        .collect();
    assert_eq!(reply_to, [LIST]);
    let cc: Vec<_> = m.cc().unwrap().iter().filter_map(|a| a.address()).collect();
    assert_eq!(cc, [strict]);
    assert!(
        d.stderr().contains("policy=\"reject\" from_rewrite=true"),
        "{}",
        d.stderr()
    );

    let c = copy_for(&all, reader, "dmarc-2@example.net");
    let m = MessageParser::default().parse(&c.data).unwrap();
    let from = m.from().unwrap().first().unwrap();
    assert_eq!(from.address(), Some(relaxed));
    assert_eq!(from.name(), Some("Bert"));
    assert!(m.cc().is_none());
    assert!(d.stderr().contains("policy=\"none\" from_rewrite=false"));
    // The archive keeps the author as the author.
    let out = env.cli(&["archive", "threads", "forum", "--json"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("Anna Peeters"), "{}", out.stdout);
}
