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

/// A name server that reads every query and never answers.
struct DeadResolver {
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl DeadResolver {
    fn start() -> DeadResolver {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        sock.set_read_timeout(Some(std::time::Duration::from_millis(100)))
            .expect("timeout");
        let addr = sock.local_addr().expect("addr");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = sock.recv_from(&mut buf);
            }
        });
        DeadResolver { addr, stop }
    }
}

impl Drop for DeadResolver {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// With a resolver that never answers, posts from twenty domains still reach every
/// member: their DMARC lookups are made at once, each pass waits at most the lookup
/// timeout (2 s here), and a failed lookup counts as p=reject (the From is rewritten).
/// Looked up one post after another, as before, they took longer than the test waits.
#[test]
fn a_dead_resolver_delays_posts_by_one_timeout_not_one_each() {
    let dead = DeadResolver::start();
    let sink = Sink::start();
    let opts = Opts {
        dns_server: Some(dead.addr),
        ..Opts::default()
    };
    let mut env = TestEnv::new(sink.port, opts);
    let authors: Vec<String> = (0..20).map(|i| format!("lid@ocmw-{i}.example")).collect();
    env.add_members(&authors);
    let d = Daemon::start(&mut env);
    let t = std::time::Instant::now();
    for (i, a) in authors.iter().enumerate() {
        let raw = format!(
            "From: Lid {i} <{a}>\r\nTo: {LIST}\r\nSubject: Vraag {i}\r\n\
Message-ID: <dead-dns-{i}@ocmw.example>\r\n\r\nWie weet raad?\r\n"
        );
        assert_eq!(post(d.port, a, LIST, raw.as_bytes()), 250);
    }
    let all = authors.len() * authors.len();
    assert!(
        wait_until(WAIT, || sink.count() == all),
        "{} of {all} copies delivered",
        sink.count()
    );
    eprintln!(
        "400 copies of 20 posts delivered {:?} after the first post",
        t.elapsed()
    );
    let m = sink.messages();
    let from = MessageParser::default().parse(&m[0].data).and_then(|p| {
        p.from()
            .and_then(|f| f.first())
            .and_then(|a| a.address().map(str::to_string))
    });
    assert_eq!(
        from.as_deref(),
        Some(LIST),
        "a failed lookup rewrites the From"
    );
}
