//! The SMTP/LMTP listener, spoken to over real TCP on 127.0.0.1.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use vraagbaak::config::Config;
use vraagbaak::inbound::{smtp, Inbound};
use vraagbaak::store::Store;

/// Every wait in these tests is bounded by this.
const WAIT: Duration = Duration::from_secs(10);
const MAX_SIZE: usize = 1_048_576;
const LIST: &str = "forum@lists.example.org";

struct Server {
    addr: SocketAddr,
    inbound: Arc<Inbound>,
    stop: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

async fn start(lmtp: bool) -> Server {
    start_with(lmtp, "max_connections = 3").await
}

/// A server whose `[smtp]` table has `limits` instead of `max_connections = 3`.
async fn start_with(lmtp: bool, limits: &str) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = format!(
        r#"
data_dir = {data:?}
[smtp]
listen = ""
hostname = "lists.example.org"
max_message_size = {MAX_SIZE}
max_recipients = 5
{limits}
idle_timeout = "2s"
[delivery]
relay = "outbox:{data}/outbox"
[[list]]
address = "{LIST}"
name = "Forum"
"#,
        data = dir.path().display().to_string(),
    );
    let cfg = Arc::new(Config::parse(&toml, "test.toml").expect("test config"));
    let store = Store::open(&cfg.db_path()).expect("store");
    let g = vraagbaak::Generation::new(
        vraagbaak::Services::new(cfg.clone(), store).expect("services"),
        Arc::new(vraagbaak::dkim::Keys::load(&cfg).expect("no keys")),
        Arc::new(Notify::new()),
        Arc::new(vraagbaak::outbound::RelayLimits::default()),
    );
    let inbound = g.inbound.clone();
    let live = vraagbaak::Live::new(g);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(smtp::serve(listener, live, lmtp, rx));
    Server {
        addr,
        inbound,
        stop,
        task,
        _dir: dir,
    }
}

impl Server {
    /// A fresh connection is greeted and answers NOOP: the listener is alive. Sessions of
    /// clients that just left may hold the (small) connection limit for a moment.
    async fn assert_alive(&self) {
        let mut attempts = 0;
        let mut c = loop {
            let mut c = Client::connect(self.addr).await;
            let r = c.reply().await;
            if r.code == 220 {
                break c;
            }
            assert_eq!(r.code, 421, "unexpected greeting {r:?}");
            attempts += 1;
            assert!(attempts < 50, "still no room after {attempts} attempts");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        c.cmd_expect("NOOP", 250).await;
        c.cmd_expect("QUIT", 221).await;
        assert!(!self.task.is_finished(), "the listener task ended");
    }
}

struct Client {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
}

/// One (possibly multi-line) reply: its code and its lines without the code.
#[derive(Debug)]
struct Reply {
    code: u16,
    lines: Vec<String>,
}

impl Reply {
    fn text(&self) -> String {
        self.lines.join("\n")
    }
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        Client::connect_from(addr, std::net::Ipv4Addr::LOCALHOST).await
    }

    /// Connects from the loopback address `from` (any of 127.0.0.0/8 is local).
    async fn connect_from(addr: SocketAddr, from: std::net::Ipv4Addr) -> Client {
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        sock.bind(SocketAddr::from((from, 0))).expect("bind");
        let s = timeout(WAIT, sock.connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        let (r, w) = s.into_split();
        Client {
            r: BufReader::new(r),
            w,
        }
    }

    async fn send(&mut self, data: &[u8]) {
        timeout(WAIT, self.w.write_all(data))
            .await
            .expect("write timed out")
            .expect("write");
    }

    /// Reads one reply; `None` on end of stream.
    async fn try_reply(&mut self) -> Option<Reply> {
        let mut code = None;
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = timeout(WAIT, self.r.read_line(&mut line))
                .await
                .expect("no reply within the time limit")
                .ok()?;
            if n == 0 {
                assert!(lines.is_empty(), "connection closed mid-reply: {lines:?}");
                return None;
            }
            assert!(line.ends_with("\r\n"), "reply line without CRLF: {line:?}");
            let line = line.trim_end();
            assert!(line.len() >= 4, "short reply line {line:?}");
            let c: u16 = line[..3].parse().expect("reply code");
            assert!(
                code.is_none() || code == Some(c),
                "mixed codes in one reply"
            );
            code = Some(c);
            lines.push(line[4..].to_string());
            match line.as_bytes()[3] {
                b' ' => break,
                b'-' => continue,
                other => panic!("bad separator {other:?} in {line:?}"),
            }
        }
        Some(Reply {
            code: code.unwrap_or_default(),
            lines,
        })
    }

    async fn reply(&mut self) -> Reply {
        self.try_reply()
            .await
            .expect("connection closed, expected a reply")
    }

    async fn expect(&mut self, code: u16) -> Reply {
        let r = self.reply().await;
        assert_eq!(r.code, code, "unexpected reply {r:?}");
        r
    }

    async fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    async fn cmd_expect(&mut self, line: &str, code: u16) -> Reply {
        let r = self.cmd(line).await;
        assert_eq!(r.code, code, "after {line:?}: {r:?}");
        r
    }

    async fn expect_greeting(&mut self) -> Reply {
        self.expect(220).await
    }

    /// Asserts that the server closed the connection (after any replies already read).
    async fn expect_closed(&mut self) {
        let mut rest = Vec::new();
        let res = timeout(WAIT, self.r.read_to_end(&mut rest))
            .await
            .expect("the server did not close the connection");
        if res.is_ok() {
            assert!(
                rest.is_empty(),
                "unexpected bytes before close: {:?}",
                String::from_utf8_lossy(&rest)
            );
        }
    }

    async fn ehlo(&mut self) -> Reply {
        self.expect_greeting().await;
        self.cmd_expect("EHLO client.example.com", 250).await
    }
}

fn message(subject: &str, body: &str) -> String {
    format!(
        "From: Jan <jan@example.com>\r\nTo: {LIST}\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@example.com>\r\n\r\n{body}"
    )
}

/// Dot-stuffs `msg` and appends the terminator, as a client does.
fn stuffed(msg: &str) -> String {
    let mut out = String::new();
    for line in msg.split_inclusive("\r\n") {
        if line.starts_with('.') {
            out.push('.');
        }
        out.push_str(line);
    }
    if !out.ends_with("\r\n") {
        out.push_str("\r\n");
    }
    out.push_str(".\r\n");
    out
}

fn spooled_raws(inbound: &Inbound) -> Vec<(String, String, Vec<u8>)> {
    let store = &inbound.store;
    store
        .spooled_ids()
        .expect("spooled ids")
        .into_iter()
        .map(|id| {
            let item = store.spooled(id).expect("read spool").expect("spool item");
            (
                item.envelope.rcpt,
                item.envelope.source,
                strip_trace(&item.raw),
            )
        })
        .collect()
}

/// The message as the client sent it: the listener adds one `Received:` field (three
/// lines) in front, naming the client's HELO and address and our host name.
fn strip_trace(raw: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(raw);
    assert!(
        text.starts_with("Received: from "),
        "no trace field: {text:.80}"
    );
    let lines: Vec<&str> = text.splitn(4, "\r\n").collect();
    assert_eq!(lines.len(), 4, "trace field is three lines");
    assert!(
        lines[1].starts_with("\tby lists.example.org (vraagbaak) with "),
        "{}",
        lines[1]
    );
    assert!(lines[0].contains("([127.0.0.1])"), "{}", lines[0]);
    raw[lines[0].len() + lines[1].len() + lines[2].len() + 6..].to_vec()
}

#[tokio::test]
async fn happy_path_stores_unstuffed_message() {
    let srv = start(false).await;
    let mut c = Client::connect(srv.addr).await;
    let greeting = c.expect_greeting().await;
    assert_eq!(greeting.text(), "lists.example.org ESMTP vraagbaak");
    let ehlo = c.cmd_expect("EHLO client.example.com", 250).await;
    let caps = ehlo.text();
    for cap in [
        "PIPELINING",
        "8BITMIME",
        "SMTPUTF8",
        "SIZE 1048576",
        "ENHANCEDSTATUSCODES",
    ] {
        assert!(ehlo.lines.iter().any(|l| l == cap), "{cap} missing: {caps}");
    }
    for cap in ["STARTTLS", "AUTH", "CHUNKING"] {
        assert!(!caps.contains(cap), "{cap} advertised: {caps}");
    }
    c.cmd_expect("MAIL FROM:<jan@example.com>", 250).await;
    c.cmd_expect(&format!("RCPT TO:<{LIST}>"), 250).await;
    let r = c.cmd_expect("DATA", 354).await;
    assert!(r.text().contains("<CR><LF>.<CR><LF>"));
    let msg = message(
        "happy",
        "First line.\r\n.leading dot\r\n..two dots\r\n.\tdot tab\r\nLast.\r\n",
    );
    c.send(stuffed(&msg).as_bytes()).await;
    let r = c.expect(250).await;
    assert!(r.text().starts_with("2.0.0"), "{r:?}");

    let spooled = spooled_raws(&srv.inbound);
    assert_eq!(spooled.len(), 1);
    let (rcpt, source, raw) = &spooled[0];
    assert_eq!(rcpt, LIST);
    assert_eq!(source, "smtp");
    assert_eq!(String::from_utf8_lossy(raw), msg);
    assert!(raw.windows(16).any(|w| w == b"\r\n.leading dot\r\n"));

    // The transaction was reset: RCPT needs a new MAIL; the HELO is kept.
    c.cmd_expect(&format!("RCPT TO:<{LIST}>"), 503).await;
    c.cmd_expect("MAIL FROM:<>", 250).await;
    c.cmd_expect("RSET", 250).await;
    c.cmd_expect("DATA", 503).await;
    c.cmd_expect("QUIT", 221).await;
    c.expect_closed().await;
    srv.assert_alive().await;
}

#[tokio::test]
async fn pipelined_transaction_in_one_write_and_split_commands() {
    let srv = start(false).await;
    let mut c = Client::connect(srv.addr).await;
    c.ehlo().await;
    c.send(
        format!(
            "MAIL FROM:<jan@example.com> SIZE=300 BODY=8BITMIME\r\nRCPT TO:<{LIST}>\r\n\
             RCPT TO:<forum-owner@lists.example.org>\r\nRCPT TO:<nobody@example.com>\r\nDATA\r\n"
        )
        .as_bytes(),
    )
    .await;
    c.expect(250).await;
    c.expect(250).await;
    c.expect(250).await;
    let r = c.expect(550).await;
    assert!(r.text().starts_with("5.1.1"), "{r:?}");
    c.expect(354).await;
    let msg = message("pipelined", "Hello\r\n");
    c.send(stuffed(&msg).as_bytes()).await;
    c.expect(250).await;
    let spooled = spooled_raws(&srv.inbound);
    assert_eq!(spooled.len(), 2, "one spool entry per accepted recipient");
    assert!(spooled.iter().all(|(_, _, raw)| raw == msg.as_bytes()));

    // A command split across TCP segments, and a message split mid-terminator.
    c.send(b"MA").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.send(b"IL FROM:<jan@exa").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.send(b"mple.com>\r\nRCPT TO:<forum@lists.example.org>\r")
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.send(b"\nDATA\r\n").await;
    c.expect(250).await;
    c.expect(250).await;
    c.expect(354).await;
    let msg = message("split", "Split\r\n");
    c.send(msg.as_bytes()).await;
    c.send(b"\r\n.").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    // QUIT pipelined right behind the terminator.
    c.send(b"\r\nQUIT\r\n").await;
    c.expect(250).await;
    c.expect(221).await;
    c.expect_closed().await;
    assert_eq!(spooled_raws(&srv.inbound).len(), 3);
    srv.assert_alive().await;
}

#[tokio::test]
async fn recipients_are_only_our_lists() {
    let srv = start(false).await;
    let mut c = Client::connect(srv.addr).await;
    c.ehlo().await;
    // RCPT before MAIL.
    let r = c.cmd_expect(&format!("RCPT TO:<{LIST}>"), 503).await;
    assert!(r.text().starts_with("5.5.1"), "{r:?}");
    c.cmd_expect("MAIL FROM:<jan@example.com>", 250).await;
    for rcpt in [
        "forum@example.com",
        "someone@gmail.com",
        "other@lists.example.org",
        "forum-nothing@lists.example.org",
    ] {
        let r = c.cmd_expect(&format!("RCPT TO:<{rcpt}>"), 550).await;
        assert_eq!(
            r.text(),
            format!("5.1.1 <{rcpt}>: recipient address rejected: no such list here")
        );
    }
    // Case does not matter; list sub-addresses are ours.
    c.cmd_expect("RCPT TO:<FORUM@Lists.Example.ORG>", 250).await;
    c.cmd_expect("RCPT TO:<forum-bounces@lists.example.org>", 250)
        .await;
    // Nothing was stored for the refused ones.
    c.cmd_expect("RSET", 250).await;
    assert!(spooled_raws(&srv.inbound).is_empty());
    // At most max_recipients (5) per transaction.
    c.cmd_expect("MAIL FROM:<jan@example.com>", 250).await;
    for _ in 0..5 {
        c.cmd_expect(&format!("RCPT TO:<{LIST}>"), 250).await;
    }
    let r = c.cmd_expect(&format!("RCPT TO:<{LIST}>"), 452).await;
    assert_eq!(r.text(), "4.5.3 Too many recipients");
    c.cmd_expect("QUIT", 221).await;
    srv.assert_alive().await;
}

#[tokio::test]
async fn oversized_message_is_refused_and_session_goes_on() {
    let srv = start(false).await;
    let mut c = Client::connect(srv.addr).await;
    c.ehlo().await;
    // Declared too big up front.
    let r = c
        .cmd_expect(
            &format!("MAIL FROM:<jan@example.com> SIZE={}", MAX_SIZE + 1),
            552,
        )
        .await;
    assert!(r.text().starts_with("5.3.4"), "{r:?}");
    // Not declared, but 3 MB.
    c.cmd_expect("MAIL FROM:<jan@example.com>", 250).await;
    c.cmd_expect(&format!("RCPT TO:<{LIST}>"), 250).await;
    c.cmd_expect("DATA", 354).await;
    let line = format!("{}\r\n", "x".repeat(998));
    let mut big = message("big", "").into_bytes();
    while big.len() < 3 * 1024 * 1024 {
        big.extend_from_slice(line.as_bytes());
    }
    big.extend_from_slice(b".\r\n");
    c.send(&big).await;
    let r = c.expect(552).await;
    assert_eq!(
        r.text(),
        "5.3.4 Message size exceeds fixed maximum message size"
    );
    c.cmd_expect("NOOP", 250).await;
    assert!(spooled_raws(&srv.inbound).is_empty());
    // The same session still takes a normal message.
    c.cmd_expect("MAIL FROM:<jan@example.com>", 250).await;
    c.cmd_expect(&format!("RCPT TO:<{LIST}>"), 250).await;
    c.cmd_expect("DATA", 354).await;
    c.send(stuffed(&message("small", "ok\r\n")).as_bytes())
        .await;
    c.expect(250).await;
    assert_eq!(spooled_raws(&srv.inbound).len(), 1);
    srv.assert_alive().await;
}

#[tokio::test]
async fn malformed_messages_are_refused_and_quarantined() {
    let srv = start(false).await;
    let mut c = Client::connect(srv.addr).await;
    c.ehlo().await;
    let garbage: &[u8] = b"\x00\x01\x02binary\xff\xfe garbage\r\nno headers here\r\n.\r\n";
    c.cmd_expect("MAIL FROM:<jan@example.com>", 250).await;
    c.cmd_expect(&format!("RCPT TO:<{LIST}>"), 250).await;
    c.cmd_expect("DATA", 354).await;
    c.send(garbage).await;
    let r = c.expect(550).await;
    assert!(r.text().starts_with("5.6.0"), "{r:?}");
    // An empty message: the terminator right after DATA.
    c.cmd_expect("MAIL FROM:<>", 250).await;
    c.cmd_expect(&format!("RCPT TO:<{LIST}>"), 250).await;
    c.cmd_expect("DATA", 354).await;
    c.send(b".\r\n").await;
    let r = c.expect(550).await;
    assert!(r.text().starts_with("5.6.0"), "{r:?}");
    c.cmd_expect("NOOP", 250).await;

    assert!(spooled_raws(&srv.inbound).is_empty());
    let q = srv.inbound.store.quarantined().expect("quarantine");
    assert_eq!(q.len(), 2, "{q:?}");
    assert!(q.iter().any(
        |m| strip_trace(&m.raw) == b"\x00\x01\x02binary\xff\xfe garbage\r\nno headers here\r\n"
    ));
    assert!(q.iter().any(|m| strip_trace(&m.raw).is_empty()));
    srv.assert_alive().await;
}

#[tokio::test]
async fn nonsense_commands_get_500_then_421() {
    let srv = start(false).await;
    let mut c = Client::connect(srv.addr).await;
    c.expect_greeting().await;
    let mut nonsense = Vec::new();
    for i in 0..10 {
        match i % 3 {
            0 => nonsense.extend_from_slice(b"XYZZY plugh\r\n"),
            1 => nonsense.extend_from_slice(b"\x00\x01\xff\xfe\x80 garbage\r\n"),
            _ => nonsense.extend_from_slice(b"\r\n"),
        }
    }
    c.send(&nonsense).await;
    for _ in 0..10 {
        let r = c.expect(500).await;
        assert_eq!(r.text(), "5.5.2 Syntax error, command unrecognized");
    }
    let r = c.expect(421).await;
    assert!(r.text().starts_with("4.7.0"), "{r:?}");
    c.expect_closed().await;
    srv.assert_alive().await;
}

#[tokio::test]
async fn other_commands() {
    let srv = start(false).await;
    let mut c = Client::connect(srv.addr).await;
    c.expect_greeting().await;
    // MAIL before EHLO.
    c.cmd_expect("MAIL FROM:<jan@example.com>", 503).await;
    c.cmd_expect("LHLO client.example.com", 500).await;
    let r = c.cmd_expect("HELO client.example.com", 250).await;
    assert_eq!(r.text(), "lists.example.org");
    c.cmd_expect("HELP", 214).await;
    c.cmd_expect("VRFY forum", 252).await;
    c.cmd_expect(&format!("EXPN {LIST}"), 502).await;
    c.cmd_expect("STARTTLS", 502).await;
    c.cmd_expect("AUTH PLAIN AGZvbwBiYXI=", 502).await;
    c.cmd_expect("MAIL FROM:jan@example.com", 501).await;
    c.cmd_expect("MAIL FROM:<jan@example.com> FOO=BAR", 555)
        .await;
    c.cmd_expect("MAIL FROM:<jan@example.com>", 250).await;
    c.cmd_expect("MAIL FROM:<jan@example.com>", 503).await;
    c.cmd_expect("QUIT", 221).await;
    c.expect_closed().await;
    srv.assert_alive().await;
}

#[tokio::test]
async fn overlong_line_is_refused_and_closed() {
    let srv = start(false).await;
    let mut c = Client::connect(srv.addr).await;
    c.expect_greeting().await;
    c.send("A".repeat(10 * 1024).as_bytes()).await;
    let r = c.expect(500).await;
    assert_eq!(r.text(), "5.5.6 Line too long");
    c.expect_closed().await;
    srv.assert_alive().await;
}

#[tokio::test]
async fn silent_clients_are_timed_out() {
    let srv = start(false).await;
    // Silent after connecting.
    let mut c = Client::connect(srv.addr).await;
    c.expect_greeting().await;
    let r = c.expect(421).await;
    assert!(
        r.text().starts_with("4.4.2 lists.example.org Idle timeout"),
        "{r:?}"
    );
    c.expect_closed().await;
    // Silent in the middle of a message: nothing is stored.
    let mut c = Client::connect(srv.addr).await;
    c.ehlo().await;
    c.cmd_expect("MAIL FROM:<jan@example.com>", 250).await;
    c.cmd_expect(&format!("RCPT TO:<{LIST}>"), 250).await;
    c.cmd_expect("DATA", 354).await;
    c.send(message("stalled", "half a mess").as_bytes()).await;
    let r = c.expect(421).await;
    assert!(r.text().starts_with("4.4.2"), "{r:?}");
    c.expect_closed().await;
    assert!(spooled_raws(&srv.inbound).is_empty());
    srv.assert_alive().await;
}

#[tokio::test]
async fn connection_limit() {
    let srv = start(false).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = Client::connect(srv.addr).await;
        c.expect_greeting().await;
        held.push(c);
    }
    let mut fourth = Client::connect(srv.addr).await;
    let r = fourth.expect(421).await;
    assert_eq!(r.text(), "4.3.2 Too many connections, try again later");
    fourth.expect_closed().await;
    // The held ones still work.
    for c in held.iter_mut() {
        c.cmd_expect("NOOP", 250).await;
    }
    // Once one leaves, there is room again (its session needs a moment to end).
    let mut gone = held.pop().expect("a held client");
    gone.cmd_expect("QUIT", 221).await;
    gone.expect_closed().await;
    drop(gone);
    let mut greeted = false;
    for _ in 0..50 {
        let mut c = Client::connect(srv.addr).await;
        let r = c.reply().await;
        if r.code == 220 {
            greeted = true;
            break;
        }
        assert_eq!(r.code, 421);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(greeted, "no room after a client left");
}

#[tokio::test]
async fn lmtp_replies_per_recipient() {
    let srv = start(true).await;
    let mut c = Client::connect(srv.addr).await;
    let r = c.expect_greeting().await;
    assert_eq!(r.text(), "lists.example.org LMTP vraagbaak");
    c.cmd_expect("EHLO client.example.com", 500).await;
    c.cmd_expect("HELO client.example.com", 500).await;
    // No MAIL before LHLO.
    c.cmd_expect("MAIL FROM:<jan@example.com>", 503).await;
    let r = c.cmd_expect("LHLO client.example.com", 250).await;
    assert!(r.lines.iter().any(|l| l == "PIPELINING"), "{r:?}");
    c.cmd_expect("MAIL FROM:<jan@example.com>", 250).await;
    c.cmd_expect(&format!("RCPT TO:<{LIST}>"), 250).await;
    c.cmd_expect("RCPT TO:<nobody@lists.example.org>", 550)
        .await;
    c.cmd_expect("RCPT TO:<forum-owner@lists.example.org>", 250)
        .await;
    c.cmd_expect("DATA", 354).await;
    let msg = message("lmtp", "Hallo\r\n");
    c.send(stuffed(&msg).as_bytes()).await;
    for _ in 0..2 {
        let r = c.expect(250).await;
        assert_eq!(r.text(), "2.0.0 Message accepted");
    }
    // Exactly two: the next reply is NOOP's.
    let r = c.cmd_expect("NOOP", 250).await;
    assert_eq!(r.text(), "2.0.0 OK");
    let spooled = spooled_raws(&srv.inbound);
    assert_eq!(spooled.len(), 2);
    assert!(spooled
        .iter()
        .all(|(_, source, raw)| source == "lmtp" && raw == msg.as_bytes()));

    // A malformed message: one refusal per recipient.
    c.cmd_expect("MAIL FROM:<>", 250).await;
    c.cmd_expect(&format!("RCPT TO:<{LIST}>"), 250).await;
    c.cmd_expect("RCPT TO:<forum-bounces@lists.example.org>", 250)
        .await;
    c.cmd_expect("DATA", 354).await;
    c.send(b"garbage\r\n.\r\n").await;
    c.expect(550).await;
    c.expect(550).await;
    let r = c.cmd_expect("NOOP", 250).await;
    assert_eq!(r.text(), "2.0.0 OK");

    // The same list twice: one reply per RCPT, but stored once.
    c.cmd_expect("MAIL FROM:<jan@example.com>", 250).await;
    c.cmd_expect(&format!("RCPT TO:<{LIST}>"), 250).await;
    c.cmd_expect("RCPT TO:<Forum@Lists.Example.org>", 250).await;
    c.cmd_expect("DATA", 354).await;
    c.send(stuffed(&message("twice", "Twice\r\n")).as_bytes())
        .await;
    c.expect(250).await;
    c.expect(250).await;
    let r = c.cmd_expect("NOOP", 250).await;
    assert_eq!(r.text(), "2.0.0 OK");
    assert_eq!(spooled_raws(&srv.inbound).len(), 3);
    c.cmd_expect("QUIT", 221).await;
    c.expect_closed().await;
    srv.assert_alive().await;
}

#[tokio::test]
async fn shutdown_closes_idle_sessions_and_stops_listening() {
    let srv = start(false).await;
    let mut c = Client::connect(srv.addr).await;
    c.ehlo().await;
    srv.stop.send(true).expect("the listener is listening");
    let r = c.expect(421).await;
    assert!(r.text().starts_with("4.3.2"), "{r:?}");
    c.expect_closed().await;
    let res = timeout(WAIT, srv.task)
        .await
        .expect("serve did not return after shutdown")
        .expect("serve panicked");
    assert!(res.is_ok(), "{res:?}");
    assert!(TcpStream::connect(srv.addr).await.is_err());
}

/// Everything nasty against one server in a row, then a fresh client is still served.
#[tokio::test]
async fn survives_abuse_in_a_row() {
    let srv = start(false).await;
    for abuse in [
        &b"XYZZY\r\nXYZZY\r\nXYZZY\r\nXYZZY\r\nXYZZY\r\nXYZZY\r\nXYZZY\r\nXYZZY\r\nXYZZY\r\nXYZZY\r\n"[..],
        &[b'A'; 9000][..],
        b"\x00\x00\x00\x00\r\n\xff\xff\r\n",
        b"EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<forum@lists.example.org>\r\nDATA\r\nFrom: a@b.c\r\n\r\nhi\r\n.\r\nQUIT\r\n",
    ] {
        let mut s = timeout(WAIT, TcpStream::connect(srv.addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        // Abrupt: write and hang up without reading.
        let _ = s.write_all(abuse).await;
        drop(s);
    }
    assert!(!srv.task.is_finished());
    srv.assert_alive().await;
}

/// 200 slowloris connections from one address hold only that address's share: the rest
/// of them are refused at once, and a client at another address is greeted.
#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let srv = start_with(false, "max_connections = 300\nmax_connections_per_ip = 20").await;
    let one = std::net::Ipv4Addr::new(127, 0, 0, 1);
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..200 {
        let mut c = Client::connect_from(srv.addr, one).await;
        let r = c.reply().await;
        match r.code {
            220 => held.push(c),
            421 => {
                assert_eq!(
                    r.text(),
                    "4.7.0 Too many connections from your address, try again later"
                );
                refused += 1;
            }
            _ => panic!("{r:?}"),
        }
    }
    assert_eq!((held.len(), refused), (20, 180));
    // The slow ones send a byte now and then, keeping their sessions open.
    for c in held.iter_mut() {
        c.send(b"N").await;
    }
    let mut other = Client::connect_from(srv.addr, std::net::Ipv4Addr::new(127, 0, 0, 2)).await;
    other.expect_greeting().await;
    other.cmd_expect("NOOP", 250).await;
}

/// A session that never stops talking still ends at `session_timeout`.
#[tokio::test]
async fn a_session_ends_at_its_deadline_however_busy() {
    let srv = start_with(false, "max_connections = 3\nsession_timeout = \"2s\"").await;
    let mut c = Client::connect(srv.addr).await;
    c.expect_greeting().await;
    let started = std::time::Instant::now();
    loop {
        c.send(b"NOOP\r\n").await;
        let r = c.reply().await;
        if r.code == 421 {
            assert!(r.text().contains("Session too long"), "{r:?}");
            break;
        }
        assert_eq!(r.code, 250, "{r:?}");
        assert!(started.elapsed() < WAIT, "no deadline");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c.expect_closed().await;
    srv.assert_alive().await;
}
