//! Delivery: the durable queue's workers.
//!
//! A dispatcher reads due rows from the store and hands them to `delivery.connections`
//! workers; each worker keeps one relay connection open across messages and sends one
//! transaction per recipient (the envelope sender is that recipient's VERP address). A
//! collector records results in batches: delivered rows are removed, temporary failures are
//! rescheduled with exponential backoff, permanent failures are moved to `failures`. One
//! durable write per batch, never one per recipient; a crash can therefore re-send at most
//! the results of one unflushed batch, and never loses a recipient.
//!
//! Failures are classified by scope (`bounce::scope`): a refusal about the member's
//! mailbox becomes a delivery report spooled for scoring, in the same transaction as the
//! result; a refusal about the message (too big, its content, or one status for many
//! copies of one post: [`bounce::mass_refusal`]) scores nobody and is reported once to
//! the owners. The relay's `SIZE` (RFC 1870) is read from its EHLO answer at start-up and
//! every [`PROBE_INTERVAL`] ([`probe_size`]); a copy larger than that is not attempted and
//! fails as a message at once, and the SMTP edge refuses posts whose copies would be.
//!
//! Relay connections are opened by us with `TCP_NODELAY` and handed to lettre: lettre writes
//! the message and the final `.` in separate writes, and with Nagle's algorithm on, each
//! message would otherwise wait for the relay's delayed ACK (~40 ms, the stall mlmmj has).

use crate::clock::now_ms;
use crate::compose;
use crate::config::{Config, Relay};
use crate::router;
use crate::store::{
    digest_of_queue_seq, DeliveryResult, Envelope as Spooled, Failure, OutMail, QueueKey, QueueRow,
    Store,
};
use crate::tokens::{Kind, Secret};
use crate::{bounce, Services};
use lettre::address::{Address, Envelope};
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::extension::ClientId;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify};

/// Results are written to the store when this many are pending, or after [`BATCH_DELAY`].
const BATCH_SIZE: usize = 256;
const BATCH_DELAY: Duration = Duration::from_millis(100);
/// Due rows taken per dispatcher pass: enough to keep every worker busy until the next pass,
/// few enough that a fan-out to 100,000 members never holds more than this in memory.
const PASS_ROWS: usize = 4096;
/// A relay connection unused this long is closed (Postfix closes idle ones at 300 s).
const IDLE_CLOSE: Duration = Duration::from_secs(30);
/// How often the relay's EHLO is read again for its `SIZE`; after a failed probe, sooner.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(600);
const PROBE_RETRY: Duration = Duration::from_secs(60);
/// What a list copy may add to a post (our header fields, the footer, the member's
/// List-Unsubscribe fields and the DKIM signature), beyond the copy as composed: the SMTP
/// edge refuses a post whose composed copy plus this is larger than the relay's `SIZE`.
pub const COPY_MARGIN: usize = 16 * 1024;

/// What the relay accepts, as its EHLO says: shared by the delivery workers and the SMTP
/// edge. Unknown (no probe answered yet, an outbox, or no `SIZE` advertised) is no limit.
#[derive(Debug, Default)]
pub struct RelayLimits {
    /// RFC 1870 `SIZE`; 0: unknown or no fixed limit.
    size: AtomicU64,
}

impl RelayLimits {
    pub fn size(&self) -> Option<u64> {
        match self.size.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n),
        }
    }

    pub fn set_size(&self, size: Option<u64>) {
        self.size.store(size.unwrap_or(0), Ordering::Relaxed);
    }

    /// The largest list copy (composed, before [`COPY_MARGIN`]) that may be accepted.
    pub fn copy_limit(&self) -> Option<usize> {
        self.size().map(|s| {
            usize::try_from(s)
                .unwrap_or(usize::MAX)
                .saturating_sub(COPY_MARGIN)
        })
    }
}

/// Reads the relay's EHLO answer on a short session of its own (greeting, EHLO, QUIT,
/// each within `timeout`) and returns its `SIZE`: `None` when it advertises none or
/// `SIZE 0` (no fixed limit).
pub async fn probe_size(
    host: &str,
    port: u16,
    hostname: &str,
    timeout: Duration,
) -> Result<Option<u64>, String> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port)))
        .await
        .map_err(|_| format!("connecting to the relay {host}:{port} timed out"))?
        .map_err(|e| format!("cannot connect to the relay {host}:{port}: {e}"))?;
    let (r, mut w) = stream.into_split();
    let mut r = tokio::io::BufReader::new(r);
    // One reply, all its lines; at most 100 lines of at most 1000 bytes.
    async fn reply<R: tokio::io::AsyncBufRead + Unpin>(
        r: &mut R,
        timeout: Duration,
    ) -> Result<Vec<u8>, String> {
        let mut all = Vec::new();
        for _ in 0..100 {
            let mut line = Vec::new();
            let n = tokio::time::timeout(timeout, async {
                let mut limited = tokio::io::AsyncReadExt::take(&mut *r, 1000);
                limited.read_until(b'\n', &mut line).await
            })
            .await
            .map_err(|_| "the relay did not answer in time".to_string())?
            .map_err(|e| format!("reading the relay's answer: {e}"))?;
            if n == 0 {
                return Err("the relay closed the connection".into());
            }
            all.extend_from_slice(&line);
            if line.get(3) != Some(&b'-') {
                return Ok(all);
            }
        }
        Err("the relay's answer is too long".into())
    }
    let greeting = reply(&mut r, timeout).await?;
    if !greeting.starts_with(b"220") {
        return Err(format!(
            "the relay greeted with {:?}",
            String::from_utf8_lossy(&greeting).trim()
        ));
    }
    let ehlo = format!("EHLO {hostname}\r\n");
    tokio::time::timeout(timeout, w.write_all(ehlo.as_bytes()))
        .await
        .map_err(|_| "the relay did not take EHLO in time".to_string())?
        .map_err(|e| format!("writing EHLO: {e}"))?;
    let answer = reply(&mut r, timeout).await?;
    let _ = tokio::time::timeout(timeout, w.write_all(b"QUIT\r\n")).await;
    if !answer.starts_with(b"250") {
        return Err(format!(
            "the relay answered EHLO with {:?}",
            String::from_utf8_lossy(&answer).trim()
        ));
    }
    let ehlo = smtp_proto::EhloResponse::<String>::parse(&mut answer.iter())
        .map_err(|e| format!("cannot read the relay's EHLO answer: {e}"))?;
    Ok(
        (ehlo.capabilities & smtp_proto::EXT_SIZE != 0 && ehlo.size > 0)
            .then_some(ehlo.size as u64),
    )
}

/// Asks the relay for its `SIZE` once and records it; logs when it changed.
pub async fn probe_once(cfg: &Config, limits: &RelayLimits, timeout: Duration) -> bool {
    let Relay::Smtp { host, port } = cfg.relay() else {
        return true;
    };
    match probe_size(&host, port, &cfg.smtp.hostname, timeout).await {
        Ok(size) => {
            if size != limits.size() {
                match size {
                    Some(n) => tracing::info!(
                        size = n,
                        post_limit = n.saturating_sub(COPY_MARGIN as u64),
                        "relay accepts messages up to its SIZE; larger posts are refused"
                    ),
                    None => tracing::info!("relay advertises no message size limit"),
                }
            }
            limits.set_size(size);
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the relay's message size limit; keeping the last known");
            false
        }
    }
}

/// Reads the relay's `SIZE` again every [`PROBE_INTERVAL`] (sooner after a failure).
async fn probe_loop(
    cfg: Arc<Config>,
    limits: Arc<RelayLimits>,
    mut shutdown: watch::Receiver<bool>,
) {
    if !matches!(cfg.relay(), Relay::Smtp { .. }) {
        return;
    }
    loop {
        let ok = probe_once(&cfg, &limits, cfg.delivery.timeout).await;
        let wait = if ok { PROBE_INTERVAL } else { PROBE_RETRY };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
    }
}

enum Job {
    Post {
        key: QueueKey,
        row: QueueRow,
        sender: String,
        copy: Arc<compose::ListCopy>,
        /// This member's own fields (one-click unsubscribe), put in front of the copy.
        prefix: Option<String>,
        /// This member's thread token, for the copy's slots (the footer's mute link).
        token: Option<String>,
    },
    Mail(OutMail),
}

enum Done {
    Post(QueueKey, DeliveryResult),
    Mail(OutMail, MailResult),
}

enum MailResult {
    Sent,
    Retry(String),
    Failed(String),
}

/// The outcome of one SMTP transaction.
enum Attempt {
    Ok,
    Temporary(String),
    Permanent(String),
}

/// A list copy, built once per post, with the post's thread (for the members' mute links).
#[derive(Clone)]
struct Cached {
    copy: Arc<compose::ListCopy>,
    thread: Option<u64>,
}

/// List copies by (list, seq), with how many due rows used each in the last pass.
type CopyCache = HashMap<(String, u64), (Cached, usize)>;

#[derive(Default)]
struct InFlight {
    rows: HashSet<QueueKey>,
    mails: HashSet<u64>,
}

/// Runs the delivery side until `shutdown`.
pub async fn run(
    live: crate::Live,
    limits: Arc<RelayLimits>,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    // The relay and the number of connections are the start's; lists, texts and DKIM keys
    // are read from the current generation for every pass and every copy (SIGHUP).
    let first = live.now();
    let (cfg, store, secret) = (
        first.svc.cfg.clone(),
        first.svc.store.clone(),
        first.svc.secret.clone(),
    );
    let dkim = first.dkim.clone();
    drop(first);
    let relay = cfg.relay();
    let prober = tokio::spawn(probe_loop(cfg.clone(), limits.clone(), shutdown.clone()));
    let workers = cfg.delivery.connections.max(1);
    // Many workers take from one queue: a multi-consumer channel.
    let (job_tx, job_rx) = async_channel::bounded::<Job>(workers * 64);
    // Small, so that few results wait unrecorded: after a crash, at most the unrecorded ones
    // (this channel plus one batch plus one per worker) can be sent twice.
    let (done_tx, done_rx) = mpsc::channel::<Done>(BATCH_SIZE);
    let inflight = Arc::new(Mutex::new(InFlight::default()));

    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let cpu = Arc::new(tokio::sync::Semaphore::new(cores));
    let mut handles = Vec::new();
    for n in 0..workers {
        let w = Worker {
            live: live.clone(),
            cfg: cfg.clone(),
            dkim: dkim.clone(),
            cpu: cpu.clone(),
            relay: relay.clone(),
            limits: limits.clone(),
            conn: None,
            n,
        };
        handles.push(tokio::spawn(w.run(
            job_rx.clone(),
            done_tx.clone(),
            shutdown.clone(),
        )));
    }
    drop(done_tx);
    let collector = tokio::spawn(collect(
        live.clone(),
        done_rx,
        inflight.clone(),
        wake.clone(),
    ));

    let mut copies: CopyCache = HashMap::new();
    'outer: loop {
        if *shutdown.borrow() {
            break;
        }
        let now = now_ms();
        let c = live.now().svc.cfg.clone();
        let (s, inf, k) = (store.clone(), inflight.clone(), secret.clone());
        let pass = tokio::task::spawn_blocking(move || {
            due_jobs(&c, &s, &k, &inf, now, &mut copies).map(|p| (p, copies))
        })
        .await;
        let pass = match pass {
            Ok(Ok((pass, c))) => {
                copies = c;
                pass
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot read the delivery queue");
                copies = HashMap::new();
                Pass::default()
            }
            Err(e) => {
                tracing::error!(error = %e, "delivery dispatcher panicked");
                copies = HashMap::new();
                Pass::default()
            }
        };
        let Pass {
            jobs,
            next_ms,
            in_flight,
        } = pass;
        for job in jobs {
            tokio::select! {
                r = job_tx.send(job) => if r.is_err() { break 'outer },
                _ = shutdown.changed() => break 'outer,
            }
        }
        let wait = match next_ms {
            // Due rows exist but are in flight: the collector rings when they are done.
            _ if in_flight => Duration::from_secs(1),
            Some(t) => Duration::from_millis((t - now_ms()).max(0) as u64),
            None => Duration::from_secs(5),
        }
        .min(Duration::from_secs(5));
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => break,
        }
    }
    drop(job_tx);
    for h in handles {
        let _ = h.await;
    }
    let _ = collector.await;
    prober.abort();
}

/// One dispatcher pass.
#[derive(Default)]
struct Pass {
    jobs: Vec<Job>,
    /// When the next not-yet-due row or mail is due.
    next_ms: Option<i64>,
    /// Some due work was skipped because it is in flight.
    in_flight: bool,
}

/// Due rows and mails that are not in flight, as jobs; marks them in flight. List copies are
/// built once per post and cached between passes (`copies`; evicted when no row needs them).
fn due_jobs(
    cfg: &Config,
    store: &Store,
    secret: &Secret,
    inflight: &Mutex<InFlight>,
    now: i64,
    copies: &mut CopyCache,
) -> crate::store::Result<Pass> {
    let mut jobs = Vec::new();
    let mut in_flight = false;
    // Lock before reading the queue: the collector removes delivered rows from the store
    // first and from `inflight` after, so a read taken before the lock could see rows that
    // are already delivered but no longer marked in flight, and send them again.
    let mut inf = inflight.lock().unwrap_or_else(|p| p.into_inner());
    let mut due = {
        let rows = &inf.rows;
        store.due(now, PASS_ROWS, &|k| rows.contains(k))?
    };
    // A large fan-out is queued a chunk at a time: when fewer rows than a pass are due or
    // in flight, the next chunks become rows (and are read at once).
    let short = PASS_ROWS.saturating_sub(due.rows.len() + due.skipped);
    if short > 0 && store.materialise(short)? > 0 {
        let rows = &inf.rows;
        due = store.due(now, PASS_ROWS, &|k| rows.contains(k))?;
    }
    in_flight |= due.skipped > 0;
    for (_, used) in copies.values_mut() {
        *used = 0;
    }
    for (key, row) in due.rows {
        let Some(list) = cfg.list(&key.list) else {
            tracing::warn!(list = %key.list, "queued rows for a list that is no longer configured");
            continue;
        };
        let ck = (key.list.clone(), key.seq);
        let cached = match copies.get_mut(&ck) {
            Some((c, used)) => {
                *used += 1;
                c.clone()
            }
            None => {
                let c = if let Some((id, plain)) = digest_of_queue_seq(key.seq) {
                    // A digest is stored ready to send.
                    let Some(raw) = store.digest_raw(&key.list, id, plain)? else {
                        tracing::error!(list = %key.list, digest = id, "queued digest is not stored");
                        continue;
                    };
                    Cached {
                        copy: Arc::new(compose::ListCopy::plain(raw)),
                        thread: None,
                    }
                } else {
                    let Some(raw) = store.raw(&key.list, key.seq)? else {
                        tracing::error!(list = %key.list, seq = key.seq, "queued post has no stored body");
                        continue;
                    };
                    let meta = store.post(&key.list, key.seq)?;
                    let rewrite = meta.as_ref().is_some_and(|m| m.from_rewrite);
                    let thread = match &meta {
                        Some(m) => store.thread_of(&key.list, &m.message_id)?,
                        None => None,
                    };
                    // Each member's own link only where the post's thread is known (posts
                    // stored before threads were recorded get the mail instructions).
                    let links = match (cfg.base_url(), thread) {
                        (Some(b), Some(_)) => compose::ThreadLinks::Web(b),
                        _ => compose::ThreadLinks::Mail,
                    };
                    Cached {
                        copy: Arc::new(compose::list_copy_with(
                            list,
                            &raw,
                            cfg.http.is_some(),
                            rewrite,
                            links,
                        )),
                        thread,
                    }
                };
                copies.insert(ck, (c.clone(), 1));
                c
            }
        };
        let sender = router::verp(list, secret, &key.addr);
        let (prefix, token) = match cfg.base_url() {
            Some(b) => {
                // The membership's own id (a token for an earlier membership of the same
                // address names nobody); a digest or notice row of a non-member gets one
                // that names nobody either.
                let uid = store
                    .member(list.key(), &key.addr)?
                    .map(|m| m.uid)
                    .filter(|u| *u != 0)
                    .unwrap_or_else(|| secret.member_uid(list.key(), &key.addr));
                let one_click = secret.issue(Kind::OneClick, uid, 0, list.key(), &key.addr);
                let url = format!("{b}/u/{one_click}");
                let token = match (cached.thread, cached.copy.slots.is_empty()) {
                    (Some(t), false) => Some(secret.thread_token(uid, t, list.key(), &key.addr)),
                    _ => None,
                };
                (Some(compose::unsubscribe_fields(list, &url)), token)
            }
            None => (None, None),
        };
        inf.rows.insert(key.clone());
        jobs.push(Job::Post {
            key,
            row,
            sender,
            copy: cached.copy,
            prefix,
            token,
        });
    }
    copies.retain(|_, (_, used)| *used > 0);
    for m in due.mails {
        if inf.mails.insert(m.id) {
            jobs.push(Job::Mail(m));
        } else {
            in_flight = true;
        }
    }
    Ok(Pass {
        jobs,
        next_ms: due.next_ms,
        in_flight,
    })
}

struct Worker {
    live: crate::Live,
    /// The current generation's, taken again for every job.
    cfg: Arc<Config>,
    dkim: Arc<crate::dkim::Keys>,
    /// Shared by all workers: one permit per core for CPU work.
    cpu: Arc<tokio::sync::Semaphore>,
    relay: Relay,
    limits: Arc<RelayLimits>,
    conn: Option<AsyncSmtpConnection>,
    n: usize,
}

impl Worker {
    async fn run(
        mut self,
        jobs: async_channel::Receiver<Job>,
        done: mpsc::Sender<Done>,
        shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let next = tokio::time::timeout(IDLE_CLOSE, jobs.recv()).await;
            let job = match next {
                Ok(Ok(job)) => job,
                Ok(Err(_)) => break,
                Err(_) => {
                    self.close().await;
                    continue;
                }
            };
            if *shutdown.borrow() {
                // Not attempted: the row stays due in the store and is sent after restart.
                break;
            }
            {
                let g = self.live.now();
                self.cfg = g.svc.cfg.clone();
                self.dkim = g.dkim.clone();
            }
            let d = match job {
                Job::Post {
                    key,
                    row,
                    sender,
                    copy,
                    prefix,
                    token,
                } => {
                    let local = key.list.split('@').next().unwrap_or("");
                    let label = match digest_of_queue_seq(key.seq) {
                        Some((id, _)) => format!("{local}-digest-{id:06}"),
                        None => format!("{local}-{:06}", key.seq),
                    };
                    // The member's own fields go in front of the shared copy; the DKIM
                    // signature, over both, in front of all.
                    let prefix = prefix.unwrap_or_default();
                    // The member's token in the copy's slots (a few bytes each; a base64
                    // body's last line or two are encoded here).
                    let fills = match &token {
                        Some(t) => copy.fills(t),
                        None => copy.fills(""),
                    };
                    let signs = self.dkim.signs(Some(&key.list), None);
                    // The signer reads the body from one slice (mail-auth's chained
                    // iterator hashes the rest of the slice the header ends in): with DKIM
                    // and a token, the member's copy is made whole first.
                    let whole =
                        (signs && !fills.is_empty()).then(|| Arc::new(copy.parts(&fills).concat()));
                    let sig = if signs {
                        let (d, l, p, c, w) = (
                            self.dkim.clone(),
                            key.list.clone(),
                            prefix.clone(),
                            copy.clone(),
                            whole.clone(),
                        );
                        self.off_thread(move || {
                            let body = w.as_deref().unwrap_or(&c.bytes);
                            d.sign_for_list(&l, &[p.as_bytes(), body.as_slice()])
                        })
                        .await
                        .unwrap_or_default()
                    } else {
                        String::new()
                    };
                    let own;
                    let msg: &[u8] = if prefix.is_empty() && sig.is_empty() && fills.is_empty() {
                        &copy.bytes
                    } else {
                        let mut parts = vec![sig.as_bytes(), prefix.as_bytes()];
                        match &whole {
                            Some(w) => parts.push(w.as_slice()),
                            None => parts.extend(copy.parts(&fills)),
                        }
                        own = parts.concat();
                        &own
                    };
                    let a = self
                        .deliver(&sender, std::slice::from_ref(&key.addr), msg, &label)
                        .await;
                    Done::Post(key, result_for(&self.cfg, row, a))
                }
                Job::Mail(m) => {
                    let label = format!("{}-{:06}", m.kind, m.id);
                    let signed = if self.dkim.signs(None, Some(&m.mail_from)) {
                        let (d, from, raw) =
                            (self.dkim.clone(), m.mail_from.clone(), m.raw.clone());
                        self.off_thread(move || {
                            d.sign_for_sender(&from, &[raw.as_slice()])
                                .map(|sig| [sig.as_bytes(), raw.as_slice()].concat())
                        })
                        .await
                    } else {
                        None
                    };
                    let raw = signed.as_deref().unwrap_or(&m.raw);
                    let a = self.deliver(&m.mail_from, &m.rcpts, raw, &label).await;
                    let r = match a {
                        Attempt::Ok => MailResult::Sent,
                        Attempt::Permanent(e) => MailResult::Failed(e),
                        Attempt::Temporary(e) if expired(&self.cfg, m.first_ms, now_ms()) => {
                            MailResult::Failed(format!("gave up: {e}"))
                        }
                        Attempt::Temporary(e) => MailResult::Retry(e),
                    };
                    Done::Mail(m, r)
                }
            };
            if done.send(d).await.is_err() {
                break;
            }
        }
        self.close().await;
    }

    /// Runs CPU work (DKIM signing: ~0.4 ms an RSA copy) on the blocking pool, at most one
    /// job per core at a time, so that the async threads only wait on sockets.
    async fn off_thread<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Option<T> + Send + 'static,
    ) -> Option<T> {
        let permit = self.cpu.clone().acquire_owned().await.ok()?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f()
        })
        .await
        .ok()
        .flatten()
    }

    async fn close(&mut self) {
        if let Some(mut c) = self.conn.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), c.quit()).await;
        }
    }

    /// One transaction (or, with an outbox, one file per recipient named `<label>-<rcpt>.eml`).
    async fn deliver(&mut self, from: &str, to: &[String], msg: &[u8], label: &str) -> Attempt {
        match &self.relay {
            Relay::Outbox(dir) => write_outbox(dir, from, to, msg, label).await,
            Relay::Smtp { host, port } => {
                let (host, port) = (host.clone(), *port);
                if let Some(max) = self.limits.size() {
                    if msg.len() as u64 > max {
                        // It would be refused after the whole transfer: fail it at once, as a
                        // refusal of the message (not of the member).
                        return Attempt::Permanent(format!(
                            "552 5.3.4 copy of {} bytes is larger than the relay accepts \
                             (SIZE {max}); not attempted",
                            msg.len()
                        ));
                    }
                }
                let envelope = match envelope(from, to) {
                    Ok(e) => e,
                    Err(e) => return Attempt::Permanent(e),
                };
                // A reused connection may have been closed by the relay meanwhile: on a
                // network error with a reused connection, reconnect once at once.
                for fresh in [false, true] {
                    let reused = self.conn.is_some() && !fresh;
                    if self.conn.is_none() || fresh {
                        self.close().await;
                        match connect(&host, port, &self.cfg).await {
                            Ok(c) => self.conn = Some(c),
                            Err(e) => return Attempt::Temporary(e),
                        }
                    }
                    let Some(conn) = self.conn.as_mut() else {
                        return Attempt::Temporary("no connection".into());
                    };
                    let limit = self.cfg.delivery.timeout * 4;
                    let r = tokio::time::timeout(limit, conn.send(&envelope, msg)).await;
                    match r {
                        Ok(Ok(_)) => return Attempt::Ok,
                        Ok(Err(e)) => {
                            // Whatever state the transaction is in, start clean next time.
                            self.close().await;
                            if e.is_permanent() {
                                return Attempt::Permanent(e.to_string());
                            }
                            if e.is_transient() || !reused {
                                return Attempt::Temporary(e.to_string());
                            }
                            tracing::debug!(
                                worker = self.n,
                                "reused relay connection failed; reconnecting"
                            );
                        }
                        Err(_) => {
                            self.conn = None;
                            return Attempt::Temporary("relay timed out".into());
                        }
                    }
                }
                Attempt::Temporary("relay connection failed".into())
            }
        }
    }
}

fn envelope(from: &str, to: &[String]) -> Result<Envelope, String> {
    let from = if from.is_empty() {
        None
    } else {
        Some(
            from.parse::<Address>()
                .map_err(|e| format!("invalid sender address: {e}"))?,
        )
    };
    let to = to
        .iter()
        .map(|t| {
            t.parse::<Address>()
                .map_err(|e| format!("invalid recipient address: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Envelope::new(from, to).map_err(|e| e.to_string())
}

async fn connect(host: &str, port: u16, cfg: &Config) -> Result<AsyncSmtpConnection, String> {
    let t = cfg.delivery.timeout;
    let stream = tokio::time::timeout(t, tokio::net::TcpStream::connect((host, port)))
        .await
        .map_err(|_| format!("connecting to the relay {host}:{port} timed out"))?
        .map_err(|e| format!("cannot connect to the relay {host}:{port}: {e}"))?;
    stream
        .set_nodelay(true)
        .map_err(|e| format!("cannot set TCP_NODELAY: {e}"))?;
    let hello = ClientId::Domain(cfg.smtp.hostname.clone());
    tokio::time::timeout(
        t,
        AsyncSmtpConnection::connect_with_transport(Box::new(stream), &hello),
    )
    .await
    .map_err(|_| format!("relay {host}:{port} did not greet in time"))?
    .map_err(|e| format!("relay {host}:{port} refused the session: {e}"))
}

/// Writes one copy per recipient into the outbox, as a local delivery agent would (with
/// Return-Path and Delivered-To on top); written to a temporary name, then renamed.
async fn write_outbox(
    dir: &PathBuf,
    from: &str,
    to: &[String],
    msg: &[u8],
    label: &str,
) -> Attempt {
    if let Err(e) = tokio::fs::create_dir_all(dir).await {
        return Attempt::Temporary(format!("cannot create outbox {}: {e}", dir.display()));
    }
    for rcpt in to {
        let safe: String = rcpt
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "@.-_+".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let name = format!("{label}-{safe}.eml");
        let mut data = format!("Return-Path: <{from}>\r\nDelivered-To: {rcpt}\r\n").into_bytes();
        data.extend_from_slice(msg);
        let tmp = dir.join(format!(".{name}.tmp"));
        if let Err(e) = tokio::fs::write(&tmp, &data).await {
            return Attempt::Temporary(format!("cannot write to the outbox: {e}"));
        }
        if let Err(e) = tokio::fs::rename(&tmp, dir.join(&name)).await {
            return Attempt::Temporary(format!("cannot write to the outbox: {e}"));
        }
    }
    Attempt::Ok
}

/// Exponential backoff: `retry_base * 2^(attempts-1)`, capped at `retry_max`, ±10% jitter.
fn backoff(cfg: &Config, attempts: u32) -> Duration {
    let base = cfg.delivery.retry_base.as_millis() as f64;
    let max = cfg.delivery.retry_max.as_millis() as f64;
    let d = (base * 2f64.powi(attempts.saturating_sub(1).min(30) as i32)).min(max);
    let jitter = 0.9 + rand::random::<f64>() * 0.2;
    Duration::from_millis((d * jitter) as u64)
}

/// Whether something first tried at `first_ms` has been failing for longer than
/// `delivery.give_up_after`.
fn expired(cfg: &Config, first_ms: i64, now: i64) -> bool {
    now - first_ms > cfg.delivery.give_up_after.as_millis() as i64
}

fn result_for(cfg: &Config, mut row: QueueRow, a: Attempt) -> DeliveryResult {
    match a {
        Attempt::Ok => DeliveryResult::Delivered,
        Attempt::Permanent(error) => DeliveryResult::Failed(Failure {
            at_ms: now_ms(),
            attempts: row.attempts + 1,
            error,
        }),
        Attempt::Temporary(error) => {
            row.attempts += 1;
            let now = now_ms();
            if expired(cfg, row.first_ms, now) {
                return DeliveryResult::Failed(Failure {
                    at_ms: now,
                    attempts: row.attempts,
                    error: format!("gave up after {} attempts: {error}", row.attempts),
                });
            }
            row.next_ms = now + backoff(cfg, row.attempts).as_millis() as i64;
            row.last_error = Some(error);
            DeliveryResult::Retry(row)
        }
    }
}

/// Records results in batches: one store transaction and one flush per batch.
async fn collect(
    live: crate::Live,
    mut rx: mpsc::Receiver<Done>,
    inflight: Arc<Mutex<InFlight>>,
    wake: Arc<Notify>,
) {
    let mut batch: Vec<Done> = Vec::new();
    let mut open = true;
    while open || !batch.is_empty() {
        if open {
            let deadline = tokio::time::sleep(BATCH_DELAY);
            tokio::pin!(deadline);
            while batch.len() < BATCH_SIZE {
                tokio::select! {
                    d = rx.recv() => match d {
                        Some(d) => batch.push(d),
                        None => { open = false; break; }
                    },
                    _ = &mut deadline, if !batch.is_empty() => break,
                }
            }
        }
        if batch.is_empty() {
            continue;
        }
        let items = std::mem::take(&mut batch);
        let svc = live.svc();
        let (s, inf) = (svc.clone(), inflight.clone());
        match tokio::task::spawn_blocking(move || record(&s, &inf, items)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "cannot record delivery results"),
            Err(e) => tracing::error!(error = %e, "recording delivery results panicked"),
        }
        wake.notify_one();
    }
}

/// How the failed copies of one post in a batch stand.
#[derive(Default)]
struct Tally {
    /// Rows of the post this batch takes out of the queue (delivered or given up).
    done: usize,
    /// Permanent failures in this batch, by status.
    by_status: HashMap<String, usize>,
}

/// The status of a relay's refusal (`5.0.0` from a bare `550`).
fn status_of(error: &str) -> String {
    bounce::status_from_reply(error).unwrap_or_else(|| "5.0.0".into())
}

/// Whether each permanent failure of a post's copies is about the message; for the
/// fan-out rule ([`bounce::mass_refusal`]) the post's earlier failures count too. Returns,
/// by status, `(failed, attempted)` for the statuses that are message-level by that rule.
fn mass_statuses(
    store: &Store,
    list: &str,
    seq: u64,
    t: &Tally,
) -> crate::store::Result<HashMap<String, (usize, usize)>> {
    let mut out = HashMap::new();
    if t.by_status.is_empty() || digest_of_queue_seq(seq).is_some() {
        return Ok(out);
    }
    let Some(meta) = store.post(list, seq)? else {
        return Ok(out);
    };
    // The batch's rows are still queued: copies attempted before it, plus its own.
    let pending = store.pending_for_post(list, seq)?;
    let recipients = usize::try_from(meta.recipients).unwrap_or(usize::MAX);
    let attempted = recipients.saturating_sub(pending) + t.done;
    let mut earlier: HashMap<String, usize> = HashMap::new();
    for (_, f) in store.failures_of_post(list, seq)? {
        *earlier.entry(status_of(&f.error)).or_insert(0) += 1;
    }
    for (st, n) in &t.by_status {
        let failed = n + earlier.get(st).copied().unwrap_or(0);
        if bounce::mass_refusal(failed, attempted) {
            out.insert(st.clone(), (failed, attempted));
        }
    }
    Ok(out)
}

fn record(
    svc: &Services,
    inflight: &Mutex<InFlight>,
    items: Vec<Done>,
) -> crate::store::Result<()> {
    let (cfg, store) = (&*svc.cfg, &svc.store);
    let mut rows = Vec::new();
    let mut posts: HashSet<(String, u64)> = HashSet::new();
    let mut mails = Vec::new();
    let mut reports = Vec::new();
    let mut once: Vec<(String, OutMail)> = Vec::new();
    let mut tallies: HashMap<(String, u64), Tally> = HashMap::new();
    for d in items {
        match d {
            Done::Post(k, r) => {
                let t = tallies.entry((k.list.clone(), k.seq)).or_default();
                match &r {
                    DeliveryResult::Delivered => t.done += 1,
                    DeliveryResult::Failed(f) => {
                        t.done += 1;
                        *t.by_status.entry(status_of(&f.error)).or_insert(0) += 1;
                    }
                    DeliveryResult::Retry(_) => {}
                }
                posts.insert((k.list.clone(), k.seq));
                rows.push((k, r));
            }
            Done::Mail(m, r) => mails.push((m, r)),
        }
    }
    let mut mass: HashMap<(String, u64), HashMap<String, (usize, usize)>> = HashMap::new();
    for ((list, seq), t) in &tallies {
        let m = mass_statuses(store, list, *seq, t)?;
        if !m.is_empty() {
            mass.insert((list.clone(), *seq), m);
        }
    }
    let mut markers = HashSet::new();
    for (k, r) in rows.iter_mut() {
        let DeliveryResult::Failed(f) = r else {
            continue;
        };
        let Some(list) = cfg.list(&k.list) else {
            continue;
        };
        let domain = k.addr.rsplit('@').next().unwrap_or("");
        let status = status_of(&f.error);
        let by_mass = mass
            .get(&(k.list.clone(), k.seq))
            .and_then(|m| m.get(&status))
            .copied();
        let message_level =
            bounce::scope(Some(&status), &f.error) == bounce::Scope::Message || by_mass.is_some();
        if !message_level {
            tracing::warn!(list = %k.list, seq = k.seq, domain, error = %bounce::mask_addresses(&f.error), "delivery failed permanently");
            // Scored like a bounce that came back by mail: one path for both.
            let envelope = Spooled {
                mail_from: String::new(),
                rcpt: router::verp(list, &svc.secret, &k.addr),
                source: "relay".into(),
                received_ms: now_ms(),
                approved: false,
                poster_confirmed: false,
            };
            let raw = bounce::relay_report(list, &cfg.smtp.hostname, &k.addr, &f.error);
            reports.push((envelope, raw));
            continue;
        }
        tracing::warn!(list = %k.list, seq = k.seq, domain, status = %status, error = %bounce::mask_addresses(&f.error), "list copy refused as a message: no member scored, the owners are told");
        let meta = match digest_of_queue_seq(k.seq) {
            Some(_) => None,
            None => store.post(&k.list, k.seq)?,
        };
        let (failed, attempted) = by_mass.unwrap_or((1, 1));
        let failure = bounce::MessageFailure {
            message_id: meta.as_ref().map(|m| m.message_id.clone()),
            post: match digest_of_queue_seq(k.seq) {
                Some((id, _)) => format!("digest {id}"),
                None => format!("seq {}", k.seq),
            },
            subject: meta.as_ref().map(|m| m.subject.clone()).unwrap_or_default(),
            reason: if by_mass.is_some()
                && bounce::scope(Some(&status), &f.error) == bounce::Scope::Member
            {
                "many"
            } else {
                bounce::MessageFailure::reason_for(Some(&status), &f.error)
            },
            status,
            diagnostic: f.error.clone(),
            by_relay: true,
            failed,
            attempted,
        };
        if let Some((marker, mail)) = bounce::message_report(svc.ctx(), list, &failure) {
            if markers.insert(marker.clone()) {
                once.push((marker, mail));
            }
        }
        f.error = format!("refused as a message, not scored: {}", f.error);
    }
    let res = (|| {
        store.record_results(&rows, &reports, &once)?;
        for (mut m, r) in mails.iter().map(|(m, r)| (m.clone(), r)) {
            match r {
                MailResult::Sent => store.outmail_done(m.id)?,
                MailResult::Failed(e) => {
                    tracing::warn!(kind = %m.kind, error = %bounce::mask_addresses(e), "single message could not be delivered");
                    store.outmail_done(m.id)?
                }
                MailResult::Retry(e) => {
                    m.attempts += 1;
                    m.last_error = Some(e.clone());
                    m.next_ms = now_ms() + backoff(cfg, m.attempts).as_millis() as i64;
                    store.outmail_update(&m)?
                }
            }
        }
        store.flush()
    })();
    // Whatever happened, these are no longer in flight: on error they are still due in the
    // store and will be tried again.
    {
        let mut inf = inflight.lock().unwrap_or_else(|p| p.into_inner());
        for (k, _) in &rows {
            inf.rows.remove(k);
        }
        for (m, _) in &mails {
            inf.mails.remove(&m.id);
        }
    }
    res?;
    for (list, seq) in posts {
        if let Some((id, _)) = digest_of_queue_seq(seq) {
            if !store.post_pending(&list, seq)? {
                let l = list.split('@').next().unwrap_or("");
                tracing::info!(list = l, digest = id, "digest delivered");
            }
            continue;
        }
        if !store.post_pending(&list, seq)? {
            let total = store.post(&list, seq)?.map_or(0, |p| p.recipients);
            let failed = store.failures_for_post(&list, seq)?;
            let l = list.split('@').next().unwrap_or("");
            tracing::info!(
                list = l,
                seq,
                recipients = total,
                failed,
                "fan-out finished"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Outcome, PostMeta};

    /// One status for many copies of one post makes the refusal the post's: counted over
    /// the copies attempted so far, earlier batches' failures included.
    #[test]
    fn one_status_for_many_copies_is_about_the_message() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).unwrap();
        let l = "forum@lists.example.org";
        let env = Spooled {
            mail_from: "a@example.org".into(),
            rcpt: l.into(),
            source: "test".into(),
            received_ms: 1,
            approved: false,
            poster_confirmed: false,
        };
        let id = s.spool(env, b"raw").unwrap();
        let rcpts: Vec<String> = (0..6).map(|i| format!("m{i}@example.net")).collect();
        s.apply(
            id,
            Outcome::Accept {
                meta: PostMeta {
                    list: l.into(),
                    seq: 0,
                    message_id: "<p@x>".into(),
                    from_addr: "a@example.org".into(),
                    from_name: None,
                    subject: "s".into(),
                    date: None,
                    received_ms: 1,
                    recipients: 0,
                    from_rewrite: false,
                },
                raw: b"raw".to_vec(),
                recipients: rcpts.clone(),
                notices: vec![],
                changes: vec![],
                thread: None,
            },
        )
        .unwrap();
        let fail = |e: &str| {
            DeliveryResult::Failed(Failure {
                at_ms: 1,
                attempts: 1,
                error: e.into(),
            })
        };
        let key = |i: usize| QueueKey {
            list: l.into(),
            seq: 1,
            addr: rcpts[i].clone(),
        };
        let refusal = "permanent error (554): 5.0.0 transaction failed";
        // A first batch: one delivered, one refused: not (yet) many.
        let t = Tally {
            done: 2,
            by_status: HashMap::from([("5.0.0".to_string(), 1)]),
        };
        assert!(mass_statuses(&s, l, 1, &t).unwrap().is_empty());
        s.record_results(
            &[(key(0), DeliveryResult::Delivered), (key(1), fail(refusal))],
            &[],
            &[],
        )
        .unwrap();
        // The next batch: two more refused the same way (3 of 4 tried).
        let t = Tally {
            done: 2,
            by_status: HashMap::from([("5.0.0".to_string(), 2)]),
        };
        let m = mass_statuses(&s, l, 1, &t).unwrap();
        assert_eq!(m.get("5.0.0"), Some(&(3, 4)));
        // A different status is counted on its own.
        let t = Tally {
            done: 2,
            by_status: HashMap::from([("5.1.1".to_string(), 2)]),
        };
        assert!(mass_statuses(&s, l, 1, &t).unwrap().is_empty());
        assert_eq!(status_of(refusal), "5.0.0");
        assert_eq!(status_of("550 no"), "5.0.0");
    }

    #[test]
    fn relay_limits() {
        let r = RelayLimits::default();
        assert_eq!((r.size(), r.copy_limit()), (None, None));
        r.set_size(Some(100_000));
        assert_eq!(r.copy_limit(), Some(100_000 - COPY_MARGIN));
        r.set_size(None);
        assert_eq!(r.size(), None);
    }

    /// The probe reads SIZE from a relay's EHLO answer (and none when it has none).
    #[tokio::test]
    async fn probe_reads_the_relays_size() {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        for (caps, want) in [
            (
                "250-PIPELINING\r\n250-SIZE 10240000\r\n250 8BITMIME\r\n",
                Some(10_240_000),
            ),
            ("250-PIPELINING\r\n250 8BITMIME\r\n", None),
            ("250 SIZE 0\r\n", None),
        ] {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = l.local_addr().unwrap().port();
            let server = tokio::spawn(async move {
                let (s, _) = l.accept().await.unwrap();
                let (r, mut w) = s.into_split();
                let mut r = tokio::io::BufReader::new(r);
                w.write_all(b"220 relay ESMTP\r\n").await.unwrap();
                let mut line = String::new();
                r.read_line(&mut line).await.unwrap();
                assert!(line.starts_with("EHLO "), "{line}");
                w.write_all(format!("250-relay.test\r\n{caps}").as_bytes())
                    .await
                    .unwrap();
                line.clear();
                let _ = r.read_line(&mut line).await;
            });
            let got = probe_size(
                "127.0.0.1",
                port,
                "lists.example.org",
                Duration::from_secs(5),
            )
            .await
            .unwrap();
            assert_eq!(got, want, "{caps}");
            server.await.unwrap();
        }
    }
}
