//! The SMTP and LMTP listener: the front door for list mail.
//!
//! [`serve`] accepts connections on an already-bound listener and runs one [`Session`] per
//! connection in its own task. The session loop is ours; `smtp-proto` only parses command
//! lines and un-stuffs the DATA section.
//!
//! - Only list addresses ([`crate::router::route`]) are accepted as recipients: this is
//!   never an open relay.
//! - A message is acknowledged only after [`Inbound::accept`] has stored and flushed it.
//!   SMTP gives one reply for the transaction, LMTP (RFC 2033) one per accepted recipient.
//! - Pipelining (RFC 2920): every complete command in the input buffer is answered, and
//!   the replies are sent together once no complete command is left.
//! - Everything a client can make us hold is bounded: command lines ([`MAX_LINE`] bytes),
//!   messages (`smtp.max_message_size`, larger ones are read to the end and discarded; a
//!   post whose list copies would be larger than the relay's `SIZE` is refused with `552`
//!   after DATA, and our EHLO advertises that smaller limit),
//!   silence (`smtp.idle_timeout`), errors ([`MAX_ERRORS`]), transactions
//!   ([`MAX_TRANSACTIONS`]) and connections (`smtp.max_connections`).

use super::{Inbound, Verdict};
use smtp_proto::request::receiver::{DataReceiver, DummyDataReceiver};
use smtp_proto::{Request, MAIL_BODY_7BIT, MAIL_BODY_8BITMIME, MAIL_SMTPUTF8};
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// Longest command line accepted, LF included; a longer one closes the connection.
pub const MAX_LINE: usize = 4096;
/// Bad commands (and refused recipients) tolerated in one session before `421`.
pub const MAX_ERRORS: u32 = 10;
/// Transactions (MAIL commands) allowed in one session.
pub const MAX_TRANSACTIONS: u32 = 100;
/// How long sessions in the middle of a transaction may take to finish after shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long a closing connection is drained so the client can read our last reply.
const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// At most this much is read and thrown away while draining a closing connection.
const CLOSE_DRAIN_MAX: usize = 1 << 20;
/// Size of one read from the socket.
const READ_CHUNK: usize = 16 * 1024;
/// Pending replies are written out once they reach this size, pipelining or not.
const OUT_FLUSH: usize = 16 * 1024;
/// Delay after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves SMTP (`lmtp` false) or LMTP (`lmtp` true) on an already-bound listener until
/// `shutdown` becomes `true` or its sender is dropped.
///
/// On shutdown it stops accepting, closes idle sessions with `421`, and gives sessions in
/// the middle of a message a short grace period before aborting them. A failing or
/// panicking session never takes the listener down.
pub async fn serve(
    listener: TcpListener,
    live: crate::Live,
    lmtp: bool,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let proto = proto_name(lmtp);
    // The connection cap is the start's; each session takes the configuration current when
    // it connects (SIGHUP) and keeps it to its end.
    let max = live.now().inbound.cfg.smtp.max_connections;
    let permits = Arc::new(Semaphore::new(max));
    // Refusals take a moment too (write, linger); bound them so a flood cannot pile them up.
    let refusals = Arc::new(Semaphore::new(max));
    let mut sessions: JoinSet<()> = JoinSet::new();
    let per_ip = crate::limits::PerIp::default();
    // The DATA budget is the start's, like the connection cap.
    let kib = live.now().inbound.cfg.smtp.data_memory.div_ceil(1024);
    let memory: DataMemory = Arc::new(Semaphore::new(kib.min(Semaphore::MAX_PERMITS)));
    if let Ok(addr) = listener.local_addr() {
        tracing::debug!(proto, %addr, "serving");
    }
    loop {
        while let Some(done) = sessions.try_join_next() {
            log_join(proto, done);
        }
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|&stop| stop) => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(proto, error = %e, "cannot accept a connection");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let inbound = live.now().inbound.clone();
        let slot = per_ip.take(peer.ip(), inbound.cfg.smtp.max_connections_per_ip);
        let refusal: &'static [u8] = match (permits.clone().try_acquire_owned(), slot) {
            (Ok(permit), Some(slot)) => {
                let session = Session::new(inbound, lmtp, peer, memory.clone());
                let shutdown = shutdown.clone();
                sessions.spawn(async move {
                    let (_permit, _slot) = (permit, slot);
                    session.run(stream, shutdown).await;
                });
                continue;
            }
            (Err(_), _) => {
                tracing::warn!(proto, max, "too many connections, refusing one");
                b"421 4.3.2 Too many connections, try again later\r\n"
            }
            (Ok(_), None) => {
                tracing::warn!(proto, "too many connections from one address, refusing one");
                b"421 4.7.0 Too many connections from your address, try again later\r\n"
            }
        };
        if let Ok(permit) = refusals.clone().try_acquire_owned() {
            let idle = inbound.cfg.smtp.idle_timeout;
            sessions.spawn(async move {
                let _permit = permit;
                let mut conn = Conn::new(stream, idle);
                let mut out = refusal.to_vec();
                if conn.write(&mut out).await.is_ok() {
                    conn.close().await;
                }
            });
        }
    }
    drop(listener);
    tracing::info!(
        proto,
        sessions = sessions.len(),
        "shutting down the listener"
    );
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while let Some(done) = sessions.join_next().await {
            log_join(proto, done);
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            proto,
            sessions = sessions.len(),
            "sessions did not finish in time, aborting them"
        );
        sessions.shutdown().await;
    }
    Ok(())
}

fn log_join(proto: &str, done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        if e.is_panic() {
            tracing::error!(proto, "an SMTP session panicked; the listener carries on");
        }
    }
}

fn proto_name(lmtp: bool) -> &'static str {
    if lmtp {
        "lmtp"
    } else {
        "smtp"
    }
}

/// What the session loop does after a command.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    Continue,
    /// `354` was queued: read the message.
    Data,
    /// The last reply is queued: flush and close.
    Close,
}

/// One client connection's protocol state.
struct Session {
    inbound: Arc<Inbound>,
    /// The listener's DATA memory budget.
    memory: DataMemory,
    lmtp: bool,
    peer: SocketAddr,
    /// The name the client gave in HELO/EHLO/LHLO; `None` until it greeted.
    helo: Option<String>,
    /// The reverse-path of the current transaction (`""` for `<>`).
    mail_from: Option<String>,
    /// Accepted recipients of the current transaction, in RCPT order.
    rcpts: Vec<String>,
    errors: u32,
    transactions: u32,
    /// Replies not yet written, CRLF-terminated.
    out: Vec<u8>,
}

impl Session {
    /// Prepends the `Received:` trace field every SMTP server adds (RFC 5321 4.4). The
    /// recipient is left out: it is one of ours, and the field reaches every member.
    fn with_trace(&self, msg: Vec<u8>) -> Vec<u8> {
        let helo: String = self
            .helo
            .as_deref()
            .unwrap_or("unknown")
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(255)
            .collect();
        let with = if self.lmtp { "LMTP" } else { "ESMTP" };
        let mut out = format!(
            "Received: from {helo} ([{}])\r\n\tby {} (vraagbaak) with {with};\r\n\t{}\r\n",
            self.peer.ip(),
            self.inbound.cfg.smtp.hostname,
            chrono::Utc::now().to_rfc2822()
        )
        .into_bytes();
        out.extend_from_slice(&msg);
        out
    }

    fn new(inbound: Arc<Inbound>, lmtp: bool, peer: SocketAddr, memory: DataMemory) -> Session {
        Session {
            memory,
            inbound,
            lmtp,
            peer,
            helo: None,
            mail_from: None,
            rcpts: Vec::new(),
            errors: 0,
            transactions: 0,
            out: Vec::new(),
        }
    }

    fn proto(&self) -> &'static str {
        proto_name(self.lmtp)
    }

    fn hostname(&self) -> &str {
        &self.inbound.cfg.smtp.hostname
    }

    fn max_size(&self) -> usize {
        self.inbound.cfg.smtp.max_message_size
    }

    /// Queues one reply line (CRLF is added; CR/LF inside `line` are neutralised).
    fn reply(&mut self, line: &str) {
        let safe = line
            .bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b });
        self.out.extend(safe);
        self.out.extend_from_slice(b"\r\n");
    }

    /// Queues an error reply and counts it; closes the session once there were too many.
    fn bad(&mut self, line: &str) -> Action {
        self.reply(line);
        self.errors += 1;
        if self.errors >= MAX_ERRORS {
            tracing::debug!(proto = self.proto(), peer = %self.peer, "too many errors, closing");
            self.reply("421 4.7.0 Too many errors, closing connection");
            return Action::Close;
        }
        Action::Continue
    }

    fn reset_transaction(&mut self) {
        self.mail_from = None;
        self.rcpts.clear();
    }

    /// Runs the session to its end; errors are logged, never returned.
    async fn run(mut self, stream: TcpStream, mut shutdown: watch::Receiver<bool>) {
        let (proto, peer) = (self.proto(), self.peer);
        tracing::debug!(proto, %peer, "connection opened");
        let mut conn = Conn::new(stream, self.inbound.cfg.smtp.idle_timeout);
        let deadline = self.inbound.cfg.smtp.session_timeout;
        let talked = tokio::time::timeout(deadline, self.converse(&mut conn, &mut shutdown)).await;
        let talked = talked.unwrap_or_else(|_| {
            // An acknowledged message is already stored; one in the middle of DATA is not
            // (the client's MTA keeps it and tries again).
            let r = format!(
                "421 4.4.2 {} Session too long, closing connection",
                self.hostname()
            );
            self.reply(&r);
            Ok(())
        });
        match talked {
            Ok(()) => {
                // The last reply is queued: send it, then close politely.
                if conn.write(&mut self.out).await.is_ok() {
                    conn.close().await;
                }
            }
            Err(e) => tracing::debug!(proto, %peer, error = %e, "session ended with an error"),
        }
        tracing::debug!(proto, %peer, "connection closed");
    }

    /// The command loop. Returns `Ok` when the session should end with the queued replies;
    /// an `Err` means the connection is gone or unusable.
    async fn converse(
        &mut self,
        conn: &mut Conn,
        shutdown: &mut watch::Receiver<bool>,
    ) -> io::Result<()> {
        let greeting = format!(
            "220 {} {} vraagbaak",
            self.hostname(),
            if self.lmtp { "LMTP" } else { "ESMTP" }
        );
        self.reply(&greeting);
        loop {
            match conn.next_line() {
                Line::Complete(range) => {
                    match self.handle_command(conn.line(range)) {
                        Action::Continue => {}
                        Action::Close => return Ok(()),
                        Action::Data => {
                            conn.write(&mut self.out).await?;
                            // The budget is held until the message is stored and answered.
                            let (end, _held) =
                                read_data(conn, self.max_size(), &self.memory).await?;
                            if !self.finish_data(end).await {
                                return Ok(());
                            }
                        }
                    }
                    if self.out.len() >= OUT_FLUSH {
                        conn.write(&mut self.out).await?;
                    }
                }
                Line::TooLong => {
                    self.reply("500 5.5.6 Line too long");
                    return Ok(());
                }
                Line::Incomplete => {
                    // Nothing complete left to answer: send the replies, then wait (RFC 2920).
                    conn.write(&mut self.out).await?;
                    match conn.fill(Some(shutdown)).await? {
                        Fill::Data => {}
                        // The client hung up; everything it asked for was answered.
                        Fill::Eof => return Ok(()),
                        Fill::Idle => {
                            let r = format!(
                                "421 4.4.2 {} Idle timeout, closing connection",
                                self.hostname()
                            );
                            self.reply(&r);
                            return Ok(());
                        }
                        Fill::Shutdown => {
                            let r = format!(
                                "421 4.3.2 {} Service shutting down, closing connection",
                                self.hostname()
                            );
                            self.reply(&r);
                            return Ok(());
                        }
                    }
                }
            }
        }
    }

    /// Answers one command line (LF included); queues the replies.
    fn handle_command(&mut self, line: &[u8]) -> Action {
        let req = match Request::parse(&mut line.iter()) {
            Ok(req) => req,
            Err(e) => return self.bad(&parse_error_reply(&e)),
        };
        match req {
            Request::Ehlo { .. } | Request::Helo { .. } if self.lmtp => {
                self.bad("500 5.5.1 This is LMTP: use LHLO")
            }
            Request::Lhlo { .. } if !self.lmtp => self.bad("500 5.5.1 This is SMTP: use EHLO"),
            Request::Ehlo { host } | Request::Lhlo { host } => {
                self.reset_transaction();
                self.helo = Some(host.into_owned());
                let ehlo = [
                    self.hostname().to_string(),
                    "PIPELINING".into(),
                    "8BITMIME".into(),
                    "SMTPUTF8".into(),
                    // Below the relay's SIZE when it has one: a post we take must fit it.
                    format!("SIZE {}", self.inbound.post_limit()),
                    "ENHANCEDSTATUSCODES".into(),
                ];
                for (i, cap) in ehlo.iter().enumerate() {
                    let sep = if i + 1 == ehlo.len() { ' ' } else { '-' };
                    self.reply(&format!("250{sep}{cap}"));
                }
                Action::Continue
            }
            Request::Helo { host } => {
                self.reset_transaction();
                self.helo = Some(host.into_owned());
                let r = format!("250 {}", self.hostname());
                self.reply(&r);
                Action::Continue
            }
            Request::Mail { from } => {
                if self.helo.is_none() {
                    let hello = if self.lmtp { "LHLO" } else { "EHLO/HELO" };
                    return self.bad(&format!("503 5.5.1 Error: send {hello} first"));
                }
                if self.mail_from.is_some() {
                    return self.bad("503 5.5.1 Error: nested MAIL command");
                }
                if from.size > self.inbound.post_limit() {
                    self.reply("552 5.3.4 Message size exceeds fixed maximum message size");
                    return Action::Continue;
                }
                let allowed = MAIL_BODY_7BIT | MAIL_BODY_8BITMIME | MAIL_SMTPUTF8;
                if from.flags & !allowed != 0
                    || from.trans_id.is_some()
                    || from.by != 0
                    || from.env_id.is_some()
                    || from.solicit.is_some()
                    || from.mtrk.is_some()
                    || from.auth.is_some()
                    || from.hold_for != 0
                    || from.hold_until != 0
                    || from.mt_priority != 0
                {
                    return self.bad("555 5.5.4 Unsupported MAIL parameter");
                }
                if self.transactions >= MAX_TRANSACTIONS {
                    self.reply("421 4.7.0 Too many transactions, closing connection");
                    return Action::Close;
                }
                self.transactions += 1;
                self.mail_from = Some(from.address.into_owned());
                self.reply("250 2.1.0 OK");
                Action::Continue
            }
            Request::Rcpt { to } => {
                if self.mail_from.is_none() {
                    return self.bad("503 5.5.1 Error: need MAIL command");
                }
                if to.flags != 0 || to.orcpt.is_some() || to.rrvs != 0 {
                    return self.bad("555 5.5.4 Unsupported RCPT parameter");
                }
                if self.rcpts.len() >= self.inbound.cfg.smtp.max_recipients {
                    self.reply("452 4.5.3 Too many recipients");
                    return Action::Continue;
                }
                let addr = to.address;
                if crate::router::route(&self.inbound.cfg, &addr).is_none() {
                    tracing::debug!(
                        proto = self.proto(),
                        domain = addr.rsplit_once('@').map_or("", |(_, d)| d),
                        "recipient refused"
                    );
                    return self.bad(&format!(
                        "550 5.1.1 <{}>: recipient address rejected: no such list here",
                        printable(&addr)
                    ));
                }
                self.rcpts.push(addr.into_owned());
                self.reply("250 2.1.5 OK");
                Action::Continue
            }
            Request::Data => {
                if self.mail_from.is_none() {
                    return self.bad("503 5.5.1 Error: need MAIL command");
                }
                if self.rcpts.is_empty() {
                    return self.bad("503 5.5.1 Error: need RCPT command");
                }
                self.reply("354 End data with <CR><LF>.<CR><LF>");
                Action::Data
            }
            Request::Rset => {
                self.reset_transaction();
                self.reply("250 2.0.0 OK");
                Action::Continue
            }
            Request::Noop { .. } => {
                self.reply("250 2.0.0 OK");
                Action::Continue
            }
            Request::Quit => {
                self.reply("221 2.0.0 Bye");
                Action::Close
            }
            Request::Help { .. } => {
                let hello = if self.lmtp { "LHLO" } else { "EHLO HELO" };
                self.reply(&format!(
                    "214 2.0.0 Commands: {hello} MAIL RCPT DATA RSET NOOP QUIT HELP VRFY"
                ));
                Action::Continue
            }
            Request::Vrfy { .. } => {
                self.reply("252 2.5.2 Cannot VRFY user");
                Action::Continue
            }
            Request::Expn { .. } => {
                self.bad("502 5.5.1 EXPN not available: lists are never expanded")
            }
            Request::Bdat { .. }
            | Request::Auth { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. }
            | Request::StartTls => self.bad("502 5.5.1 Command not implemented"),
        }
    }

    /// Answers the end of a DATA section. Returns `false` when the session must end.
    async fn finish_data(&mut self, end: DataEnd) -> bool {
        let proto = self.proto();
        let keep_going = match end {
            DataEnd::Complete(msg) => {
                let mail_from = self.mail_from.clone().unwrap_or_default();
                let msg = self.with_trace(msg);
                // One verdict per RCPT, in order; `accept` stores one copy per list address,
                // so an address given twice is stored once (and answered twice in LMTP).
                let verdicts = self
                    .inbound
                    .accept(proto, &mail_from, &self.rcpts, &msg)
                    .await;
                let stored = verdicts.iter().filter(|v| **v == Verdict::Stored).count();
                tracing::info!(
                    proto,
                    bytes = msg.len(),
                    rcpts = self.rcpts.len(),
                    stored,
                    "message received"
                );
                if self.lmtp {
                    for i in 0..self.rcpts.len() {
                        let r = verdicts
                            .get(i)
                            .map_or_else(try_later_reply, Verdict::smtp_reply);
                        self.reply(&r);
                    }
                } else {
                    // Short (a broken accept) means not stored: the summary says try later.
                    let all = if verdicts.len() == self.rcpts.len() {
                        verdicts
                    } else {
                        Vec::new()
                    };
                    let r = smtp_summary(&all);
                    self.reply(&r);
                }
                true
            }
            DataEnd::NoRoom => {
                tracing::warn!(
                    proto,
                    "messages being received fill smtp.data_memory; one deferred"
                );
                let n = if self.lmtp { self.rcpts.len() } else { 1 };
                for _ in 0..n {
                    self.reply("452 4.3.1 Insufficient system storage, try again later");
                }
                true
            }
            DataEnd::TooBig => {
                tracing::info!(proto, max = self.max_size(), "message too big, refused");
                let n = if self.lmtp { self.rcpts.len() } else { 1 };
                for _ in 0..n {
                    self.reply("552 5.3.4 Message size exceeds fixed maximum message size");
                }
                true
            }
            DataEnd::Idle => {
                let r = format!(
                    "421 4.4.2 {} Idle timeout, closing connection",
                    self.hostname()
                );
                self.reply(&r);
                false
            }
        };
        self.reset_transaction();
        keep_going
    }
}

fn try_later_reply() -> String {
    Verdict::try_later().smtp_reply()
}

/// The single SMTP reply for a transaction: `250` only when every copy was stored; a
/// temporary failure anywhere makes the client retry the whole transaction (the pipeline
/// de-duplicates by Message-ID); otherwise the first refusal.
fn smtp_summary(verdicts: &[Verdict]) -> String {
    if verdicts.is_empty() {
        return try_later_reply();
    }
    if verdicts.iter().all(|v| *v == Verdict::Stored) {
        return Verdict::Stored.smtp_reply();
    }
    verdicts
        .iter()
        .find(|v| matches!(v, Verdict::TryLater { .. }))
        .or_else(|| {
            verdicts
                .iter()
                .find(|v| matches!(v, Verdict::Refused { .. } | Verdict::TooBig { .. }))
        })
        .map_or_else(try_later_reply, Verdict::smtp_reply)
}

/// The reply for a command line smtp-proto could not parse.
fn parse_error_reply(e: &smtp_proto::Error) -> String {
    use smtp_proto::Error as E;
    match e {
        E::SyntaxError { .. }
        | E::InvalidSenderAddress
        | E::InvalidRecipientAddress
        | E::InvalidParameter { .. } => format!("501 5.5.4 {e}"),
        E::UnsupportedParameter { param } => {
            format!("555 5.5.4 Unsupported parameter: {}", printable(param))
        }
        _ => "500 5.5.2 Syntax error, command unrecognized".into(),
    }
}

/// Client text made safe to echo in a reply: printable, at most 256 characters.
fn printable(s: &str) -> String {
    s.chars()
        .take(256)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// How a DATA section ended.
#[derive(Debug)]
enum DataEnd {
    /// The un-stuffed message, without the terminating `.` line.
    Complete(Vec<u8>),
    /// It grew past the maximum size; it was read to the end and thrown away.
    TooBig,
    /// Messages being received already hold `smtp.data_memory`; read to the end and
    /// thrown away (the client tries again later).
    NoRoom,
    /// The client went silent.
    Idle,
}

/// Reads a DATA section up to `CRLF.CRLF`, un-stuffing dots, holding at most about
/// `max_size` bytes (plus one read) in memory. Bytes after the end stay in `conn`.
/// The memory a message being received holds, counted in KiB against `smtp.data_memory`
/// over all sessions, so that many clients sending large messages at once cannot raise
/// the process's memory past that budget.
pub type DataMemory = Arc<Semaphore>;

/// Makes sure `msg` has room for `more` bytes, within the budget; false when the budget
/// has no room (nothing is allocated then).
fn grow_within(
    msg: &mut Vec<u8>,
    more: usize,
    memory: &DataMemory,
    held: &mut Vec<tokio::sync::OwnedSemaphorePermit>,
) -> bool {
    let want = msg.len() + more;
    if want <= msg.capacity() {
        return true;
    }
    // Grow as a Vec would (doubling), but count it first.
    let new_cap = want.max(msg.capacity() * 2).max(64 * 1024);
    let kib = (new_cap - msg.capacity()).div_ceil(1024);
    let Ok(kib) = u32::try_from(kib) else {
        return false;
    };
    match memory.clone().try_acquire_many_owned(kib) {
        Ok(p) => {
            held.push(p);
            msg.reserve_exact(new_cap - msg.len());
            true
        }
        Err(_) => false,
    }
}

async fn read_data(
    conn: &mut Conn,
    max_size: usize,
    memory: &DataMemory,
) -> io::Result<(DataEnd, Vec<tokio::sync::OwnedSemaphorePermit>)> {
    let mut held = Vec::new();
    let mut no_room = false;
    let mut receiver = DataReceiver::new();
    let mut msg = Vec::new();
    // The receiver only recognises a dot at the start of a line after CRLF; the DATA
    // command's own line ended with one, so tell it, and a first line `.` or `..x` works.
    receiver.ingest(&mut b"\r\n".iter(), &mut msg);
    msg.clear();
    let mut discard: Option<DummyDataReceiver> = None;
    loop {
        let pending = conn.pending();
        if discard.is_none() && !grow_within(&mut msg, pending.len(), memory, &mut held) {
            no_room = true;
            discard = Some(DummyDataReceiver::new_data(&receiver));
            msg = Vec::new();
            held.clear();
        }
        let mut bytes = pending.iter();
        let done = match discard.as_mut() {
            Some(d) => d.ingest(&mut bytes),
            None => receiver.ingest(&mut bytes, &mut msg),
        };
        let consumed = pending.len() - bytes.as_slice().len();
        conn.consume(consumed);
        if discard.is_none() && msg.len() > max_size {
            discard = Some(DummyDataReceiver::new_data(&receiver));
            msg = Vec::new();
            held.clear();
        }
        if done {
            let end = match discard {
                Some(_) if no_room => DataEnd::NoRoom,
                Some(_) => DataEnd::TooBig,
                None => DataEnd::Complete(msg),
            };
            return Ok((end, held));
        }
        match conn.fill(None).await? {
            Fill::Data => {}
            Fill::Eof => return Err(io::ErrorKind::UnexpectedEof.into()),
            Fill::Idle => return Ok((DataEnd::Idle, Vec::new())),
            // Not asked for: a message in progress is allowed to finish.
            Fill::Shutdown => {}
        }
    }
}

/// What [`Conn::next_line`] found in the input buffer.
enum Line {
    Complete(Range<usize>),
    Incomplete,
    TooLong,
}

/// What [`Conn::fill`] got.
enum Fill {
    Data,
    Eof,
    Idle,
    Shutdown,
}

/// A client socket with its input buffer.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Start of the unconsumed input in `buf`.
    start: usize,
    idle: Duration,
}

impl Conn {
    fn new(stream: TcpStream, idle: Duration) -> Conn {
        Conn {
            stream,
            buf: Vec::with_capacity(READ_CHUNK),
            start: 0,
            idle,
        }
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
    }

    fn line(&self, range: Range<usize>) -> &[u8] {
        self.buf.get(range).unwrap_or_default()
    }

    /// Takes the next complete line (LF included) off the input buffer.
    fn next_line(&mut self) -> Line {
        let pending = self.pending();
        match pending.iter().position(|&b| b == b'\n') {
            Some(lf) if lf < MAX_LINE => {
                let range = self.start..self.start + lf + 1;
                self.start = range.end;
                Line::Complete(range)
            }
            Some(_) => Line::TooLong,
            None if pending.len() >= MAX_LINE => Line::TooLong,
            None => Line::Incomplete,
        }
    }

    /// Reads more input, waiting at most the idle timeout, and, when given `shutdown`,
    /// giving up when it is signalled.
    async fn fill(&mut self, shutdown: Option<&mut watch::Receiver<bool>>) -> io::Result<Fill> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + READ_CHUNK, 0);
        let idle = self.idle;
        let Conn { stream, buf, .. } = self;
        let read = tokio::time::timeout(idle, stream.read(&mut buf[old..]));
        let got = match shutdown {
            Some(rx) => tokio::select! {
                r = read => Some(r),
                _ = rx.wait_for(|&stop| stop) => None,
            },
            None => Some(read.await),
        };
        let (n, fill) = match got {
            None => (0, Ok(Fill::Shutdown)),
            Some(Err(_elapsed)) => (0, Ok(Fill::Idle)),
            Some(Ok(Err(e))) => (0, Err(e)),
            Some(Ok(Ok(0))) => (0, Ok(Fill::Eof)),
            Some(Ok(Ok(n))) => (n, Ok(Fill::Data)),
        };
        self.buf.truncate(old + n);
        fill
    }

    /// Writes and clears `out`; a client that does not read for the idle timeout is an error.
    async fn write(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        if out.is_empty() {
            return Ok(());
        }
        match tokio::time::timeout(self.idle, self.stream.write_all(out)).await {
            Ok(r) => r?,
            Err(_) => return Err(io::ErrorKind::TimedOut.into()),
        }
        out.clear();
        Ok(())
    }

    /// Closes politely: sends FIN, then reads (and discards) what the client still sends
    /// for a moment, so that the kernel does not answer it with a reset that could destroy
    /// our last reply before the client read it.
    async fn close(mut self) {
        let deadline = tokio::time::Instant::now() + CLOSE_LINGER;
        if tokio::time::timeout_at(deadline, self.stream.shutdown())
            .await
            .is_err()
        {
            return;
        }
        let mut chunk = vec![0u8; READ_CHUNK];
        let mut drained = 0;
        while drained < CLOSE_DRAIN_MAX {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => drained += n,
                _ => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(reason: &str) -> Verdict {
        Verdict::Refused {
            reason: reason.into(),
            quarantined: true,
        }
    }

    #[test]
    fn summary_of_verdicts() {
        assert!(smtp_summary(&[Verdict::Stored, Verdict::Stored]).starts_with("250 "));
        let later = Verdict::TryLater {
            reason: "busy".into(),
        };
        assert!(smtp_summary(&[Verdict::Stored, later.clone()]).starts_with("451 "));
        assert!(smtp_summary(&[refused("bad"), later]).starts_with("451 "));
        assert_eq!(
            smtp_summary(&[refused("first"), refused("second")]),
            "550 5.6.0 first"
        );
        assert!(smtp_summary(&[]).starts_with("451 "));
    }

    #[test]
    fn parse_errors_become_replies() {
        let reply = |l: &[u8]| match Request::parse(&mut l.iter()) {
            Err(e) => parse_error_reply(&e),
            Ok(r) => format!("parsed {}", r.name()),
        };
        assert!(reply(b"XYZZY\r\n").starts_with("500 5.5.2 "));
        assert!(reply(b"\x00\xff\x01\r\n").starts_with("500 5.5.2 "));
        assert!(reply(b"MAIL FROM:x@y.z\r\n").starts_with("501 5.5.4 "));
        let r = reply(b"MAIL FROM:<a@b.c> X\x01Y=1\r\n");
        assert!(r.starts_with("555 5.5.4 ") && !r.contains('\x01'), "{r}");
    }

    #[test]
    fn printable_strips_controls() {
        assert_eq!(printable("a\r\nb\x00"), "a??b?");
        assert_eq!(printable(&"x".repeat(1000)).len(), 256);
    }
}
