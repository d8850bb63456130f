//! Support for end-to-end tests that run the real `vraagbaak` binary.
//!
//! - [`Sink`]: a real SMTP server (tokio, on 127.0.0.1:0, its own runtime) that the daemon
//!   relays list copies to. It records every accepted message with its envelope, and can be
//!   told to answer RCPT with `451` the first N times or `550` always for some recipients,
//!   and to pause before answering each DATA.
//! - [`TestEnv`]: a temporary directory with a config file for one sink (the list
//!   [`LIST`], and more lists when a test asks: [`Opts::extra_lists`]); runs admin
//!   commands ([`TestEnv::cli`]).
//! - [`Daemon`]: `vraagbaak serve` as a child process, killed when dropped.
//! - [`SmtpClient`] and [`post`]: a tiny blocking SMTP client to talk to the daemon.
//! - [`wait_until`]: polling with a deadline.
//! - [`skip`]: how a test says it cannot run here (a server, browser, verifier or corpus is
//!   missing); under CI that is a failure instead.
//!
//! Everything listens on and connects to 127.0.0.1 only, and every wait is bounded.

#![allow(dead_code)]

pub mod dovecot;

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener as StdListener, TcpStream as StdStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_vraagbaak");
/// The longest any single wait in these tests may take.
pub const WAIT: Duration = Duration::from_secs(60);
/// The list every test configures.
pub const LIST: &str = "forum@lists.example.org";
pub const LIST_DOMAIN: &str = "lists.example.org";
pub const OWNER: &str = "owner@example.org";
pub const FOOTER: &str = "Footer text of the e2e forum.";

/// Polls `pred` every 20 ms until it is true (returns true) or `timeout` passes (false).
pub fn wait_until(timeout: Duration, mut pred: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if pred() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Says that `test` cannot run here and why: prints `SKIPPED: <test>: <why>` to stderr.
/// When the environment variable `CI` is `true` (or `1`) it panics with the same text, so
/// that a missing server, browser, verifier or corpus fails the run instead of passing it
/// unseen. The caller returns after it.
pub fn skip(test: &str, why: &str) {
    skip_or_fail(std::env::var("CI").ok().as_deref(), test, why);
}

/// [`skip`] with the value of `CI` given, so that the rule can be tested without setting
/// the process's environment.
pub fn skip_or_fail(ci: Option<&str>, test: &str, why: &str) {
    let line = format!("SKIPPED: {test}: {why}");
    eprintln!("{line}");
    if ci.is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1") {
        panic!("{line}");
    }
}

/// A free TCP port on 127.0.0.1 (bound and released at once).
pub fn free_port() -> u16 {
    let l = StdListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// `memberN@example.net`.
pub fn member(i: usize) -> String {
    format!("member{i}@example.net")
}

/// The VERP envelope sender the list uses for a copy to `rcpt`:
/// `forum-bounces+l=d+MAC@`, the MAC made with the data directory's `secret.key` (created
/// here when no command or daemon made it yet; the daemon then reads the same one).
pub fn verp(env: &TestEnv, rcpt: &str) -> String {
    let (l, d) = rcpt.rsplit_once('@').expect("address with @");
    format!(
        "forum-bounces+{l}={d}+{}@{LIST_DOMAIN}",
        verp_mac(env, rcpt)
    )
}

/// The MAC in the VERP address of `rcpt` on the test list.
pub fn verp_mac(env: &TestEnv, rcpt: &str) -> String {
    std::fs::create_dir_all(&env.data_dir).expect("data dir");
    let secret = vraagbaak::tokens::Secret::load_or_create(&env.data_dir.join("secret.key"))
        .expect("secret.key");
    secret.verp_mac(LIST, rcpt)
}

/// A plain-text message with CRLF line ends.
pub fn message(from: &str, subject: &str, message_id: &str, body: &str) -> Vec<u8> {
    let body = body.replace("\r\n", "\n").replace('\n', "\r\n");
    format!(
        "From: {from}\r\nTo: {LIST}\r\nSubject: {subject}\r\nMessage-ID: <{message_id}>\r\n\
Date: Mon, 01 Jan 2024 10:00:00 +0000\r\nMIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

// ---- the SMTP sink -----------------------------------------------------------------------

/// A predicate on a recipient address.
pub type AddrPred = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// How the sink answers.
#[derive(Clone, Default)]
pub struct SinkBehaviour {
    /// Recipients matching the predicate get `451 4.3.0` on their first N RCPTs.
    pub tempfail: Option<(AddrPred, u32)>,
    /// Recipients matching the predicate always get `550 5.1.1`.
    pub reject: Option<AddrPred>,
    /// Recipients matching the predicate always get `554 5.7.1` (refused as spam).
    pub reject_spam: Option<AddrPred>,
    /// Pause before answering the end of each DATA.
    pub data_delay: Duration,
    /// `SIZE` advertised in EHLO (default 64 MiB); a message larger than it gets
    /// `552 5.3.4` after DATA.
    pub size: Option<usize>,
    /// Answers the end of DATA with this reply (e.g. `552 5.3.4 ...`) when it returns one
    /// for the message: a relay refusing the message itself, for every recipient.
    pub refuse_data: Option<DataPred>,
}

/// A reply chosen for a message's content (`None`: accept it).
pub type DataPred = Arc<dyn Fn(&[u8]) -> Option<String> + Send + Sync>;

/// One message accepted by the sink, for one recipient.
#[derive(Clone, Debug)]
pub struct Received {
    pub from: String,
    pub rcpt: String,
    pub data: Vec<u8>,
}

/// One RCPT the sink answered.
#[derive(Clone, Debug)]
pub struct RcptEvent {
    pub rcpt: String,
    pub code: u16,
    pub at: Instant,
}

struct SinkShared {
    behaviour: SinkBehaviour,
    tempfailed: Mutex<HashMap<String, u32>>,
    messages: Arc<Mutex<Vec<Received>>>,
    rcpts: Arc<Mutex<Vec<RcptEvent>>>,
}

/// A real SMTP server on 127.0.0.1, in its own tokio runtime; stopped when dropped.
pub struct Sink {
    pub port: u16,
    pub messages: Arc<Mutex<Vec<Received>>>,
    pub rcpts: Arc<Mutex<Vec<RcptEvent>>>,
    rt: Option<tokio::runtime::Runtime>,
}

const SINK_IDLE: Duration = Duration::from_secs(120);
const SINK_MAX_DATA: usize = 64 * 1024 * 1024;

impl Sink {
    /// A sink that accepts everything.
    pub fn start() -> Sink {
        Sink::with(SinkBehaviour::default())
    }

    pub fn with(behaviour: SinkBehaviour) -> Sink {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("sink runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("sink bind");
        let port = listener.local_addr().expect("sink addr").port();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let rcpts = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new(SinkShared {
            behaviour,
            tempfailed: Mutex::new(HashMap::new()),
            messages: messages.clone(),
            rcpts: rcpts.clone(),
        });
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let sh = shared.clone();
                tokio::spawn(async move {
                    let _ = sink_session(stream, sh).await;
                });
            }
        });
        Sink {
            port,
            messages,
            rcpts,
            rt: Some(rt),
        }
    }

    /// A snapshot of every accepted message.
    pub fn messages(&self) -> Vec<Received> {
        self.messages.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.messages.lock().unwrap().len()
    }

    /// Messages accepted for `rcpt` (case-insensitive).
    pub fn count_for(&self, rcpt: &str) -> usize {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.rcpt.eq_ignore_ascii_case(rcpt))
            .count()
    }

    /// How many messages each recipient (lower-cased) got.
    pub fn counts_by_rcpt(&self) -> HashMap<String, usize> {
        let mut h = HashMap::new();
        for m in self.messages.lock().unwrap().iter() {
            *h.entry(m.rcpt.to_ascii_lowercase()).or_insert(0) += 1;
        }
        h
    }

    /// Every RCPT answered so far.
    pub fn rcpt_events(&self) -> Vec<RcptEvent> {
        self.rcpts.lock().unwrap().clone()
    }

    /// How many RCPTs were answered with `code`.
    pub fn rcpt_count(&self, code: u16) -> usize {
        self.rcpts
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.code == code)
            .count()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// The address inside `<...>` after `FROM:`/`TO:`, or the first word after the colon.
fn path_arg(line: &str) -> String {
    let after = line.split_once(':').map_or("", |(_, r)| r).trim();
    if let Some(rest) = after.strip_prefix('<') {
        rest.split('>').next().unwrap_or("").to_string()
    } else {
        after.split_whitespace().next().unwrap_or("").to_string()
    }
}

/// Reads the next line (LF included) into `line`, at most [`SINK_IDLE`] waiting; `false`
/// when the client closed the connection.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    line: &mut Vec<u8>,
) -> io::Result<bool> {
    line.clear();
    let n = tokio::time::timeout(SINK_IDLE, r.read_until(b'\n', line))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    Ok(n > 0)
}

async fn sink_session(stream: tokio::net::TcpStream, sh: Arc<SinkShared>) -> io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut r = tokio::io::BufReader::new(r);
    w.write_all(b"220 sink.test ESMTP e2e sink\r\n").await?;
    let mut from: Option<String> = None;
    let mut rcpts: Vec<String> = Vec::new();
    let mut line = Vec::new();
    loop {
        if !read_line(&mut r, &mut line).await? {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        let verb = text
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let verb = verb.split(':').next().unwrap_or("").to_string();
        let reply: String = match verb.as_str() {
            "EHLO" => {
                from = None;
                rcpts.clear();
                format!(
                    "250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE {}",
                    sh.behaviour.size.unwrap_or(SINK_MAX_DATA)
                )
            }
            "HELO" => {
                from = None;
                rcpts.clear();
                "250 sink.test".into()
            }
            "MAIL" => {
                from = Some(path_arg(&text));
                rcpts.clear();
                "250 2.1.0 OK".into()
            }
            "RCPT" => {
                if from.is_none() {
                    "503 5.5.1 need MAIL".into()
                } else {
                    let rcpt = path_arg(&text);
                    let b = &sh.behaviour;
                    let code = if b.reject.as_ref().is_some_and(|p| p(&rcpt)) {
                        550
                    } else if b.reject_spam.as_ref().is_some_and(|p| p(&rcpt)) {
                        554
                    } else if let Some((p, n)) = &b.tempfail {
                        let mut tf = sh.tempfailed.lock().unwrap();
                        let c = tf.entry(rcpt.to_ascii_lowercase()).or_insert(0);
                        if p(&rcpt) && *c < *n {
                            *c += 1;
                            451
                        } else {
                            250
                        }
                    } else {
                        250
                    };
                    sh.rcpts.lock().unwrap().push(RcptEvent {
                        rcpt: rcpt.clone(),
                        code,
                        at: Instant::now(),
                    });
                    match code {
                        550 => format!("550 5.1.1 <{rcpt}>: no such user"),
                        554 => "554 5.7.1 Message rejected as spam".into(),
                        451 => "451 4.3.0 try again later".into(),
                        _ => {
                            rcpts.push(rcpt);
                            "250 2.1.5 OK".into()
                        }
                    }
                }
            }
            "DATA" => {
                if from.is_none() || rcpts.is_empty() {
                    "503 5.5.1 need MAIL and RCPT".into()
                } else {
                    w.write_all(b"354 go ahead\r\n").await?;
                    let mut data = Vec::new();
                    loop {
                        if !read_line(&mut r, &mut line).await? {
                            return Ok(());
                        }
                        if line == b".\r\n" || line == b".\n" {
                            break;
                        }
                        if data.len() <= SINK_MAX_DATA {
                            let l = line.strip_prefix(b".").unwrap_or(&line);
                            data.extend_from_slice(l);
                        }
                    }
                    if !sh.behaviour.data_delay.is_zero() {
                        tokio::time::sleep(sh.behaviour.data_delay).await;
                    }
                    let f = from.take().unwrap_or_default();
                    let limit = sh.behaviour.size.unwrap_or(SINK_MAX_DATA);
                    let refusal = sh.behaviour.refuse_data.as_ref().and_then(|p| p(&data));
                    let reply = if data.len() > limit {
                        "552 5.3.4 Message size exceeds fixed limit".to_string()
                    } else if let Some(r) = refusal {
                        r
                    } else {
                        let mut all = sh.messages.lock().unwrap();
                        for rcpt in rcpts.drain(..) {
                            all.push(Received {
                                from: f.clone(),
                                rcpt,
                                data: data.clone(),
                            });
                        }
                        "250 2.0.0 queued".to_string()
                    };
                    rcpts.clear();
                    reply
                }
            }
            "RSET" => {
                from = None;
                rcpts.clear();
                "250 2.0.0 OK".into()
            }
            "NOOP" => "250 2.0.0 OK".into(),
            "QUIT" => {
                w.write_all(b"221 2.0.0 bye\r\n").await?;
                let _ = w.shutdown().await;
                return Ok(());
            }
            _ => "500 5.5.2 unrecognized command".into(),
        };
        w.write_all(reply.as_bytes()).await?;
        w.write_all(b"\r\n").await?;
    }
}

// ---- the daemon and its configuration ----------------------------------------------------

/// What the config file of a test says.
#[derive(Clone, Debug)]
pub struct Opts {
    pub connections: usize,
    pub retry_base: &'static str,
    pub posting: &'static str,
    /// `None`: the default (25 MB).
    pub max_message_size: Option<usize>,
    /// Run the web endpoint (one-click unsubscribe, confirmation links) on a free port.
    pub http: bool,
    /// The list's language.
    pub language: &'static str,
    /// More TOML tables, e.g. a `[commands]` table.
    pub extra: String,
    /// More keys for the `[[list]]` table.
    pub list_extra: String,
    /// More keys for the `[smtp]` table.
    pub smtp_extra: String,
    /// More lists: whole `[[list]]` tables, written after the test's list.
    pub extra_lists: String,
    /// TXT records the daemon's DNS answers with (`[dns] records`); the tests never ask
    /// the network (`offline = true`), so any other name has no record.
    pub dns_records: Vec<(String, String)>,
    /// A name server to ask instead (`[dns] servers`, timeout 2 s), not offline.
    pub dns_server: Option<std::net::SocketAddr>,
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            connections: 8,
            retry_base: "1s",
            posting: "members",
            max_message_size: None,
            http: false,
            language: "en",
            extra: String::new(),
            list_extra: String::new(),
            smtp_extra: String::new(),
            extra_lists: String::new(),
            dns_records: Vec::new(),
            dns_server: None,
        }
    }
}

impl Opts {
    /// The defaults with the web endpoint on (one-click fields, confirmation links).
    pub fn web() -> Opts {
        Opts {
            http: true,
            ..Opts::default()
        }
    }
}

/// The messages the sink received for `rcpt`, in order.
pub fn mails_for(sink: &Sink, rcpt: &str) -> Vec<Received> {
    sink.messages()
        .into_iter()
        .filter(|m| m.rcpt.eq_ignore_ascii_case(rcpt))
        .collect()
}

/// Waits until `rcpt` has received `n` messages; returns them.
pub fn wait_mails(sink: &Sink, rcpt: &str, n: usize) -> Vec<Received> {
    assert!(
        wait_until(WAIT, || mails_for(sink, rcpt).len() >= n),
        "{rcpt} received {} messages, expected {n}",
        mails_for(sink, rcpt).len()
    );
    mails_for(sink, rcpt)
}

/// The 40-character token after `word ` in a text.
pub fn token_after(text: &str, word: &str) -> String {
    let i = text
        .find(&format!("{word} "))
        .unwrap_or_else(|| panic!("no `{word} TOKEN` in:\n{text}"));
    let t: String = text[i + word.len() + 1..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    assert_eq!(t.len(), 40, "token after {word}: {t:?}");
    t
}

/// The decoded subject of a received mail.
pub fn subject_of(data: &[u8]) -> String {
    mail_parser::MessageParser::default()
        .parse(data)
        .and_then(|m| m.subject().map(str::to_string))
        .unwrap_or_default()
}

/// A temporary directory with a config file for one sink.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub smtp_port: u16,
    pub sink_port: u16,
    /// The web endpoint's port (used when `opts.http`).
    pub http_port: u16,
    pub opts: Opts,
    /// Extra environment for the next `Daemon::start`.
    pub daemon_env: Vec<(String, String)>,
    starts: usize,
}

/// The exit code and output of a command.
#[derive(Debug)]
pub struct CliOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl TestEnv {
    pub fn new(sink_port: u16, opts: Opts) -> TestEnv {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("vraagbaak.toml");
        let data_dir = dir.path().join("data");
        let env = TestEnv {
            config,
            data_dir,
            smtp_port: free_port(),
            http_port: free_port(),
            daemon_env: Vec::new(),
            sink_port,
            opts,
            starts: 0,
            dir,
        };
        env.write_config();
        env
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The config text for the current ports and options (absolute paths only).
    pub fn config_text(&self) -> String {
        let o = &self.opts;
        let size = o
            .max_message_size
            .map(|s| format!("max_message_size = {s}\n"))
            .unwrap_or_default()
            + &o.smtp_extra;
        let http = if o.http {
            format!(
                "[http]\nlisten = \"127.0.0.1:{p}\"\nbase_url = \"http://127.0.0.1:{p}\"\n",
                p = self.http_port
            )
        } else {
            String::new()
        };
        let mut dns = match o.dns_server {
            Some(a) => format!("[dns]\ntimeout = \"2s\"\nservers = [\"{a}\"]\n[dns.records]\n"),
            None => String::from("[dns]\noffline = true\n[dns.records]\n"),
        };
        for (name, txt) in &o.dns_records {
            dns.push_str(&format!("{name:?} = {txt:?}\n"));
        }
        format!(
            r#"data_dir = {data:?}

{http}
{extra}
{dns}

[smtp]
listen = "127.0.0.1:{port}"
hostname = "{LIST_DOMAIN}"
idle_timeout = "30s"
{size}
[delivery]
relay = "smtp://127.0.0.1:{sink}"
connections = {conns}
retry_base = "{retry}"
retry_max = "8s"
give_up_after = "1h"
timeout = "10s"

[[list]]
address = "{LIST}"
name = "Forum"
language = "{language}"
posting = "{posting}"
subject_prefix = "[forum]"
reply_to = "list"
owners = ["{OWNER}"]
footer = "{FOOTER}"
{list_extra}
{extra_lists}
"#,
            extra = o.extra,
            list_extra = o.list_extra,
            extra_lists = o.extra_lists,
            language = o.language,
            data = self.data_dir.display().to_string(),
            port = self.smtp_port,
            sink = self.sink_port,
            conns = o.connections,
            retry = o.retry_base,
            posting = o.posting,
        )
    }

    pub fn write_config(&self) {
        std::fs::write(&self.config, self.config_text()).expect("write config");
    }

    /// Runs `vraagbaak --config <ours> ARGS`.
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        run_cli(&self.config, args, None)
    }

    /// Runs `vraagbaak --config <ours> ARGS` with `stdin` as standard input.
    pub fn cli_stdin(&self, args: &[&str], stdin: &[u8]) -> CliOutput {
        run_cli(&self.config, args, Some(stdin.to_vec()))
    }

    /// `members add` (daemon or store); panics unless it succeeds.
    pub fn add_members(&self, addrs: &[String]) {
        let mut args = vec!["members", "add", "forum"];
        args.extend(addrs.iter().map(String::as_str));
        let out = self.cli(&args);
        assert_eq!(out.code, Some(0), "members add failed: {out:?}");
    }

    /// `(recipients, messages)` queued, from `queue list`.
    pub fn queue_len(&self) -> (usize, usize) {
        let out = self.cli(&["queue", "list"]);
        assert_eq!(out.code, Some(0), "queue list failed: {out:?}");
        parse_queue_summary(&out.stdout)
            .unwrap_or_else(|| panic!("no summary line in queue list: {out:?}"))
    }

    /// Waits until `queue list` reports nothing queued.
    pub fn wait_queue_empty(&self) -> bool {
        wait_until(WAIT, || self.queue_len() == (0, 0))
    }
}

/// Parses `N recipients and M messages queued`.
pub fn parse_queue_summary(stdout: &str) -> Option<(usize, usize)> {
    let last = stdout.lines().rev().find(|l| l.contains("queued"))?;
    let w: Vec<&str> = last.split_whitespace().collect();
    match w.as_slice() {
        [n, "recipients", "and", m, "messages", "queued"] => {
            Some((n.parse().ok()?, m.parse().ok()?))
        }
        _ => None,
    }
}

fn reader_thread(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// Runs the binary with `--config config ARGS`, killing it after [`WAIT`].
pub fn run_cli(config: &Path, args: &[&str], stdin: Option<Vec<u8>>) -> CliOutput {
    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("VRAAGBAAK_CONFIG")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = config.parent() {
        cmd.current_dir(dir);
    }
    let mut child = cmd.spawn().expect("spawn vraagbaak");
    let writer = stdin.map(|data| {
        let mut si = child.stdin.take().expect("stdin pipe");
        std::thread::spawn(move || {
            let _ = si.write_all(&data);
        })
    });
    let out = reader_thread(child.stdout.take().expect("stdout pipe"));
    let err = reader_thread(child.stderr.take().expect("stderr pipe"));
    let deadline = Instant::now() + WAIT;
    let status = loop {
        match child.try_wait().expect("try_wait") {
            Some(s) => break s,
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("vraagbaak {args:?} did not finish within {WAIT:?}");
            }
        }
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    CliOutput {
        code: status.code(),
        stdout: String::from_utf8_lossy(&out.join().unwrap_or_default()).into_owned(),
        stderr: String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned(),
    }
}

/// `vraagbaak serve` as a child process; killed (SIGKILL) when dropped.
pub struct Daemon {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts the daemon on `env`'s config and waits until it accepts SMTP connections and
    /// its control socket exists. Should the port have been taken meanwhile, picks another.
    pub fn start(env: &mut TestEnv) -> Daemon {
        for attempt in 0..5 {
            env.write_config();
            env.starts += 1;
            let log = env.path().join(format!("serve-{}.log", env.starts));
            let stderr = std::fs::File::create(&log).expect("create log");
            let child = Command::new(BIN)
                .arg("--config")
                .arg(&env.config)
                .arg("serve")
                .env("RUST_LOG", "info")
                .envs(env.daemon_env.iter().map(|(k, v)| (k, v)))
                .env_remove("VRAAGBAAK_CONFIG")
                .current_dir(env.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .expect("spawn vraagbaak serve");
            let mut d = Daemon {
                child,
                port: env.smtp_port,
                log,
            };
            let sock = env.data_dir.join("control.sock");
            let deadline = Instant::now() + WAIT;
            loop {
                if let Ok(Some(status)) = d.child.try_wait() {
                    let err = d.stderr();
                    if err.contains("cannot listen") && attempt < 4 {
                        env.smtp_port = free_port();
                        env.http_port = free_port();
                        break;
                    }
                    panic!("vraagbaak serve exited early ({status}):\n{err}");
                }
                if d.stderr().contains("vraagbaak running")
                    && sock.exists()
                    && StdStream::connect(("127.0.0.1", d.port)).is_ok()
                {
                    return d;
                }
                if Instant::now() >= deadline {
                    panic!("vraagbaak serve not ready within {WAIT:?}:\n{}", d.stderr());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("could not start vraagbaak serve on a free port");
    }

    /// What the daemon wrote to standard error so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `kill -9`, and reap it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The full addresses a daemon log names outside the list domain (members, posters,
/// owners): the log at its default level must have none (they are masked, or only the
/// domain is logged). Every daemon of every test is checked when it is dropped.
pub fn addresses_in_log(log: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in log.lines() {
        for (i, _) in line.match_indices('@') {
            let is_part = |c: char| c.is_ascii_alphanumeric() || "._+-=".contains(c);
            let start = line[..i]
                .char_indices()
                .rev()
                .take_while(|(_, c)| is_part(*c))
                .last()
                .map_or(i, |(j, _)| j);
            let end = line[i + 1..]
                .char_indices()
                .take_while(|(_, c)| c.is_ascii_alphanumeric() || ".-".contains(*c))
                .last()
                .map_or(i + 1, |(j, c)| i + 1 + j + c.len_utf8());
            let (local, domain) = (&line[start..i], line[i + 1..end].trim_end_matches('.'));
            // Masked forms (`j…@`, `*@`) and the list's own addresses are fine.
            if local.is_empty()
                || !domain.contains('.')
                || domain.eq_ignore_ascii_case(LIST_DOMAIN)
                || domain.ends_with(&format!(".{LIST_DOMAIN}"))
            {
                continue;
            }
            found.push(format!("{local}@{domain}"));
        }
    }
    found
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        if !std::thread::panicking() {
            let found = addresses_in_log(&self.stderr());
            if !found.is_empty() {
                panic!(
                    "the daemon's log names full addresses at its default level: {:?} (see {})",
                    &found[..found.len().min(5)],
                    self.log.display()
                );
            }
        }
        if std::thread::panicking() {
            let err = self.stderr();
            let tail: Vec<&str> = err.lines().rev().take(40).collect();
            eprintln!("--- last lines of {}:", self.log.display());
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

// ---- a tiny SMTP client ------------------------------------------------------------------

/// A reply: its code and its (joined) text.
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

/// A blocking SMTP client with timeouts.
pub struct SmtpClient {
    reader: BufReader<StdStream>,
    writer: StdStream,
}

impl SmtpClient {
    /// Connects and reads the greeting (which must be 220).
    pub fn connect(port: u16) -> SmtpClient {
        let s = StdStream::connect(("127.0.0.1", port)).expect("connect to the daemon");
        s.set_read_timeout(Some(WAIT)).expect("read timeout");
        s.set_write_timeout(Some(WAIT)).expect("write timeout");
        let writer = s.try_clone().expect("clone stream");
        let mut c = SmtpClient {
            reader: BufReader::new(s),
            writer,
        };
        let g = c.read_reply();
        assert_eq!(g.code, 220, "greeting: {g:?}");
        c
    }

    pub fn read_reply(&mut self) -> Reply {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).expect("read a reply");
            assert!(
                n > 0,
                "connection closed while waiting for a reply ({text})"
            );
            let line = line.trim_end();
            let code: u16 = line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| panic!("not an SMTP reply: {line:?}"));
            text.push_str(line.get(4..).unwrap_or(""));
            if line.as_bytes().get(3) != Some(&b'-') {
                return Reply { code, text };
            }
            text.push('\n');
        }
    }

    /// Sends one command line and reads its reply.
    pub fn cmd(&mut self, line: &str) -> Reply {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .expect("write a command");
        self.read_reply()
    }

    /// Writes bytes as they are (no stuffing, no reply read).
    pub fn write_raw(&mut self, data: &[u8]) {
        self.writer.write_all(data).expect("write");
    }

    /// Sends a message (after a 354), dot-stuffed and terminated; reads the final reply.
    pub fn send_data(&mut self, data: &[u8]) -> Reply {
        let mut out = Vec::with_capacity(data.len() + data.len() / 50 + 8);
        let mut at_line_start = true;
        for &b in data {
            if at_line_start && b == b'.' {
                out.push(b'.');
            }
            out.push(b);
            at_line_start = b == b'\n';
        }
        if !data.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        self.writer.write_all(&out).expect("write the message");
        self.read_reply()
    }

    /// One transaction; returns the first refusal or the reply after the data.
    pub fn transaction(&mut self, mail_from: &str, rcpts: &[&str], data: &[u8]) -> Reply {
        let r = self.cmd(&format!("MAIL FROM:<{mail_from}>"));
        if r.code != 250 {
            let _ = self.cmd("RSET");
            return r;
        }
        for rc in rcpts {
            let r = self.cmd(&format!("RCPT TO:<{rc}>"));
            if r.code != 250 {
                let _ = self.cmd("RSET");
                return r;
            }
        }
        let r = self.cmd("DATA");
        if r.code != 354 {
            let _ = self.cmd("RSET");
            return r;
        }
        self.send_data(data)
    }

    pub fn quit(mut self) {
        let _ = self.writer.write_all(b"QUIT\r\n");
        let mut rest = String::new();
        let _ = self.reader.read_to_string(&mut rest);
    }
}

/// Posts `data` to `rcpt` in a session of its own; returns the final reply code.
pub fn post(port: u16, mail_from: &str, rcpt: &str, data: &[u8]) -> u16 {
    let mut c = SmtpClient::connect(port);
    let r = c.cmd("EHLO client.example.net");
    assert_eq!(r.code, 250, "EHLO: {r:?}");
    let r = c.transaction(mail_from, &[rcpt], data);
    c.quit();
    r.code
}

/// A plain HTTP/1.1 request to the daemon's web endpoint; returns the whole response as
/// read from the socket (status line, header fields, body).
pub fn http_response(port: u16, method: &str, path: &str, body: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to http");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("write request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read response");
    out
}

/// A plain HTTP/1.1 request to the daemon's web endpoint; returns (status, body).
pub fn http(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    let out = http_response(port, method, path, body);
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    (status, body)
}

/// The first `forum-confirm+TOKEN@...` address in a mail (folded lines joined).
pub fn confirm_address_in(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data).replace("\r\n ", " ");
    let start = text.find("forum-confirm+").expect("a confirm address");
    text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || "-+@.".contains(*c))
        .collect()
}

#[cfg(test)]
mod log_tests {
    use super::addresses_in_log;

    #[test]
    fn addresses_in_log_lines_are_found_and_masked_ones_are_not() {
        let log = "WARN x: delivery failed error=550 5.1.1 <member7@ocmw-gent.be>: rejected\n\
INFO y: list=forum@lists.example.org rcpt=j…@ocmw.be domain=ocmw.be from=*@x.be\n\
INFO z: bounces forum-bounces+a=b.be+mac@lists.example.org\n";
        assert_eq!(addresses_in_log(log), ["member7@ocmw-gent.be"]);
    }
}

#[cfg(test)]
mod skip_tests {
    use super::skip_or_fail;

    #[test]
    fn outside_ci_a_skip_only_says_so() {
        for ci in [None, Some(""), Some("false"), Some("0"), Some("yes")] {
            skip_or_fail(ci, "some_test", "nothing missing really");
        }
    }

    #[test]
    #[should_panic(expected = "SKIPPED: some_test: /usr/sbin/dovecot not installed")]
    fn under_ci_true_a_skip_fails() {
        skip_or_fail(Some("true"), "some_test", "/usr/sbin/dovecot not installed");
    }

    #[test]
    #[should_panic(expected = "SKIPPED: some_test: no corpus")]
    fn under_ci_1_a_skip_fails() {
        skip_or_fail(Some("1"), "some_test", "no corpus");
    }
}
