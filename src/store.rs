//! The store: sled trees and their key layouts. This is the only module that touches sled.
//!
//! Trees (keys are byte strings; numbers are big-endian so ranges sort):
//! - `spool`      `<id>` → envelope + raw bytes of a message acknowledged but not yet routed
//! - `members`    `<list>\0<addr>` → [`Member`]
//! - `posts`      `<list>\0<seq>` → [`PostMeta`]
//! - `raw`        `<list>\0<seq>` → the raw bytes of an accepted post
//! - `msgid`      `<list>\0<message-id>` → `p<seq>` (accepted) or `h<id>` (held)
//! - `held`       `<id>` → [`Held`] (a post waiting for a moderator)
//! - `queue`      `<list>\0<seq>\0<addr>` → [`QueueRow`] (one pending recipient of one post)
//! - `failures`   `<list>\0<seq>\0<addr>` → [`Failure`] (a recipient given up on)
//! - `outmail`    `<id>` → [`OutMail`] (a single message to send: owner notices, forwards)
//! - `quarantine` `<id>` → [`Quarantined`] (kept for the owners, never distributed)
//! - `meta`       counters (`seq\0<list>`)
//!
//! `<list>` is the lower-cased posting address and `<addr>` a lower-cased member address.
//! Everything that changes the meaning of an acknowledged message happens in one sled
//! transaction, and every acknowledgement waits for [`Store::flush`].

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sled::Error),
    #[error("corrupt record in tree {tree}: {msg}")]
    Corrupt { tree: &'static str, msg: String },
    #[error("the database at {path} is in use by another process (is `vraagbaak serve` running?)")]
    Locked { path: String },
}

pub type Result<T> = std::result::Result<T, StoreError>;

fn abort_corrupt(tree: &'static str, msg: String) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(StoreError::Corrupt { tree, msg })
}

fn tx_err(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StoreError::Db(e),
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Member {
    /// The address as the member wrote it.
    pub address: String,
    #[serde(default)]
    pub name: Option<String>,
    pub joined_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    /// The SMTP reverse-path (`MAIL FROM`), empty for `<>`.
    pub mail_from: String,
    /// The recipient this copy was accepted for.
    pub rcpt: String,
    /// Where it came from: `smtp`, `lmtp`, `inject`, `imap:<account>`.
    pub source: String,
    pub received_ms: i64,
    /// Approved by a moderator: the posting policy is not applied again.
    #[serde(default)]
    pub approved: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpoolItem {
    pub envelope: Envelope,
    #[serde(skip)]
    pub raw: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PostMeta {
    pub list: String,
    pub seq: u64,
    pub message_id: String,
    pub from_addr: String,
    #[serde(default)]
    pub from_name: Option<String>,
    pub subject: String,
    /// The Date header as RFC 3339, when it parsed.
    #[serde(default)]
    pub date: Option<String>,
    pub received_ms: i64,
    pub recipients: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Held {
    pub list: String,
    pub id: u64,
    pub reason: String,
    pub message_id: String,
    pub from_addr: String,
    pub subject: String,
    pub envelope: Envelope,
    #[serde(skip)]
    pub raw: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct QueueRow {
    pub attempts: u32,
    pub first_ms: i64,
    pub next_ms: i64,
    #[serde(default)]
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failure {
    pub at_ms: i64,
    pub attempts: u32,
    pub error: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutMail {
    pub id: u64,
    /// Envelope sender; empty for `<>` (notices that must never bounce back to us).
    pub mail_from: String,
    pub rcpts: Vec<String>,
    pub attempts: u32,
    pub first_ms: i64,
    pub next_ms: i64,
    #[serde(default)]
    pub last_error: Option<String>,
    /// What this is, for `queue list` and logs: `owner-notice`, `owner-forward`, ...
    pub kind: String,
    #[serde(skip)]
    pub raw: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Quarantined {
    pub id: u64,
    pub reason: String,
    pub envelope: Envelope,
    #[serde(skip)]
    pub raw: Vec<u8>,
}

/// A due delivery: one recipient of one post.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QueueKey {
    pub list: String,
    pub seq: u64,
    pub addr: String,
}

impl QueueKey {
    fn encode(&self) -> Vec<u8> {
        let mut k = post_key(&self.list, self.seq);
        k.push(0);
        k.extend_from_slice(self.addr.as_bytes());
        k
    }
    fn decode(k: &[u8]) -> Option<QueueKey> {
        let z = k.iter().position(|&b| b == 0)?;
        let list = std::str::from_utf8(&k[..z]).ok()?.to_string();
        let rest = &k[z + 1..];
        if rest.len() < 9 || rest[8] != 0 {
            return None;
        }
        let seq = u64::from_be_bytes(rest[..8].try_into().ok()?);
        let addr = std::str::from_utf8(&rest[9..]).ok()?.to_string();
        Some(QueueKey { list, seq, addr })
    }
}

fn list_prefix(list: &str) -> Vec<u8> {
    let mut k = list.to_ascii_lowercase().into_bytes();
    k.push(0);
    k
}

fn member_key(list: &str, addr: &str) -> Vec<u8> {
    let mut k = list_prefix(list);
    k.extend_from_slice(addr.to_lowercase().as_bytes());
    k
}

fn post_key(list: &str, seq: u64) -> Vec<u8> {
    let mut k = list_prefix(list);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn msgid_key(list: &str, message_id: &str) -> Vec<u8> {
    let mut k = list_prefix(list);
    k.extend_from_slice(message_id.as_bytes());
    k
}

/// Records with raw bytes are stored as `<u32 json length><json><raw>`: the metadata stays
/// small to decode, and the bytes are never re-encoded.
fn encode_with_raw<T: Serialize>(meta: &T, raw: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(meta).unwrap_or_default();
    let mut v = Vec::with_capacity(4 + json.len() + raw.len());
    v.extend_from_slice(&(json.len() as u32).to_be_bytes());
    v.extend_from_slice(&json);
    v.extend_from_slice(raw);
    v
}

fn decode_with_raw<T: DeserializeOwned>(tree: &'static str, v: &[u8]) -> Result<(T, Vec<u8>)> {
    let (meta, raw) = decode_head(tree, v)?;
    Ok((meta, raw.to_vec()))
}

/// The metadata of a record with raw bytes, and the bytes, without copying them.
fn decode_head<'v, T: DeserializeOwned>(tree: &'static str, v: &'v [u8]) -> Result<(T, &'v [u8])> {
    let corrupt = |msg: String| StoreError::Corrupt { tree, msg };
    if v.len() < 4 {
        return Err(corrupt("record shorter than its header".into()));
    }
    let n = u32::from_be_bytes([v[0], v[1], v[2], v[3]]) as usize;
    if v.len() < 4 + n {
        return Err(corrupt("record shorter than its metadata".into()));
    }
    let meta = serde_json::from_slice(&v[4..4 + n]).map_err(|e| corrupt(e.to_string()))?;
    Ok((meta, &v[4 + n..]))
}

fn decode<T: DeserializeOwned>(tree: &'static str, v: &[u8]) -> Result<T> {
    serde_json::from_slice(v).map_err(|e| StoreError::Corrupt {
        tree,
        msg: e.to_string(),
    })
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Serializing our own plain structs to JSON cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

/// What became of a spooled message; applied atomically with its removal from the spool.
pub enum Outcome {
    /// A post for the list: stored, numbered, and queued for these recipients.
    Accept {
        meta: PostMeta,
        raw: Vec<u8>,
        recipients: Vec<String>,
        notices: Vec<OutMail>,
    },
    /// Waiting for a moderator; the owners get `notices`.
    Hold { held: Held, notices: Vec<OutMail> },
    /// Kept for the owners, never distributed.
    Quarantine { reason: String },
    /// Something to send that is not a post (a forward to the owners).
    Send { mail: Vec<OutMail> },
}

/// The result of applying an [`Outcome`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Posted {
        seq: u64,
    },
    /// A post with this Message-ID was already stored; nothing was done.
    Duplicate,
    Held {
        id: u64,
    },
    Quarantined {
        id: u64,
    },
    Dropped,
    Sent,
}

#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    spool: sled::Tree,
    members: sled::Tree,
    posts: sled::Tree,
    raw: sled::Tree,
    msgid: sled::Tree,
    held: sled::Tree,
    queue: sled::Tree,
    failures: sled::Tree,
    outmail: sled::Tree,
    quarantine: sled::Tree,
    meta: sled::Tree,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store> {
        let db = sled::Config::new()
            .path(path)
            .flush_every_ms(Some(200))
            .open()
            .map_err(|e| match e {
                sled::Error::Io(ref io)
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        || io.to_string().contains("lock") =>
                {
                    StoreError::Locked {
                        path: path.display().to_string(),
                    }
                }
                e => StoreError::Db(e),
            })?;
        let t = |n: &str| db.open_tree(n);
        Ok(Store {
            spool: t("spool")?,
            members: t("members")?,
            posts: t("posts")?,
            raw: t("raw")?,
            msgid: t("msgid")?,
            held: t("held")?,
            queue: t("queue")?,
            failures: t("failures")?,
            outmail: t("outmail")?,
            quarantine: t("quarantine")?,
            meta: t("meta")?,
            db,
        })
    }

    /// Makes every write so far durable. Acknowledgements wait for this.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    /// [`Store::flush`] without blocking the async runtime.
    pub async fn flush_async(&self) -> Result<()> {
        self.db.flush_async().await?;
        Ok(())
    }

    fn next_id(&self) -> Result<u64> {
        Ok(self.db.generate_id()?)
    }

    // ---- spool -------------------------------------------------------------------------

    /// Stores a received message; call [`Store::flush`] before acknowledging it.
    pub fn spool(&self, envelope: Envelope, raw: &[u8]) -> Result<u64> {
        let id = self.next_id()?;
        self.spool
            .insert(id.to_be_bytes(), encode_with_raw(&envelope, raw))?;
        Ok(id)
    }

    pub fn spooled_ids(&self) -> Result<Vec<u64>> {
        let mut ids = Vec::new();
        for kv in self.spool.iter().keys() {
            let k = kv?;
            if let Ok(b) = <[u8; 8]>::try_from(k.as_ref()) {
                ids.push(u64::from_be_bytes(b));
            }
        }
        Ok(ids)
    }

    pub fn spooled(&self, id: u64) -> Result<Option<SpoolItem>> {
        match self.spool.get(id.to_be_bytes())? {
            None => Ok(None),
            Some(v) => {
                let (envelope, raw) = decode_with_raw::<Envelope>("spool", &v)?;
                Ok(Some(SpoolItem { envelope, raw }))
            }
        }
    }

    /// Applies the outcome of routing spool entry `id` and removes the entry, atomically.
    /// Safe to call again for the same id after a crash: a missing entry means it was done.
    pub fn apply(&self, spool_id: u64, outcome: Outcome) -> Result<Applied> {
        let sk = spool_id.to_be_bytes();
        match outcome {
            Outcome::Quarantine { reason } => {
                let Some(item) = self.spooled(spool_id)? else {
                    return Ok(Applied::Dropped);
                };
                let id = self.next_id()?;
                let q = Quarantined {
                    id,
                    reason,
                    envelope: item.envelope,
                    raw: Vec::new(),
                };
                let rec = encode_with_raw(&q, &item.raw);
                (&self.spool, &self.quarantine)
                    .transaction(|(spool, quar)| {
                        spool.remove(&sk)?;
                        quar.insert(&id.to_be_bytes(), rec.as_slice())?;
                        Ok(())
                    })
                    .map_err(tx_err)?;
                Ok(Applied::Quarantined { id })
            }
            Outcome::Send { mail } => {
                let recs = self.outmail_records(mail)?;
                (&self.spool, &self.outmail)
                    .transaction(|(spool, out)| {
                        spool.remove(&sk)?;
                        for (k, v) in &recs {
                            out.insert(k, v.as_slice())?;
                        }
                        Ok(())
                    })
                    .map_err(tx_err)?;
                Ok(Applied::Sent)
            }
            Outcome::Hold { mut held, notices } => {
                let recs = self.outmail_records(notices)?;
                held.id = self.next_id()?;
                let hk = held.id.to_be_bytes();
                let mk = msgid_key(&held.list, &held.message_id);
                let mut hv = b"h".to_vec();
                hv.extend_from_slice(&hk);
                let rec = encode_with_raw(&held, &held.raw);
                let r = (&self.spool, &self.held, &self.msgid, &self.outmail).transaction(
                    |(spool, heldt, msgid, out)| {
                        if msgid.get(&mk)?.is_some() {
                            spool.remove(&sk)?;
                            return Ok(false);
                        }
                        spool.remove(&sk)?;
                        heldt.insert(&hk, rec.as_slice())?;
                        msgid.insert(mk.as_slice(), hv.as_slice())?;
                        for (k, v) in &recs {
                            out.insert(k, v.as_slice())?;
                        }
                        Ok(true)
                    },
                );
                match r.map_err(tx_err)? {
                    true => Ok(Applied::Held { id: held.id }),
                    false => Ok(Applied::Duplicate),
                }
            }
            Outcome::Accept {
                mut meta,
                raw,
                recipients,
                notices,
            } => {
                let recs = self.outmail_records(notices)?;
                let now = now_ms();
                meta.recipients = recipients.len() as u64;
                let row = encode(&QueueRow {
                    attempts: 0,
                    first_ms: now,
                    next_ms: now,
                    last_error: None,
                });
                let mk = msgid_key(&meta.list, &meta.message_id);
                let seq_key = [b"seq\0".as_slice(), list_prefix(&meta.list).as_slice()].concat();
                let trees = (
                    &self.spool,
                    &self.posts,
                    &self.raw,
                    &self.msgid,
                    &self.queue,
                    &self.meta,
                    &self.outmail,
                );
                let r = trees.transaction(|(spool, posts, rawt, msgid, queue, metat, out)| {
                    spool.remove(&sk)?;
                    if msgid.get(&mk)?.is_some() {
                        return Ok(None);
                    }
                    let seq = match metat.get(&seq_key)? {
                        Some(v) => {
                            let b: [u8; 8] = v.as_ref().try_into().map_err(|_| {
                                abort_corrupt("meta", "sequence counter is not 8 bytes".into())
                            })?;
                            u64::from_be_bytes(b) + 1
                        }
                        None => 1,
                    };
                    metat.insert(seq_key.as_slice(), &seq.to_be_bytes())?;
                    let mut m = meta.clone();
                    m.seq = seq;
                    let pk = post_key(&m.list, seq);
                    posts.insert(pk.as_slice(), encode(&m))?;
                    rawt.insert(pk.as_slice(), raw.as_slice())?;
                    let mut mv = b"p".to_vec();
                    mv.extend_from_slice(&seq.to_be_bytes());
                    msgid.insert(mk.as_slice(), mv)?;
                    for addr in &recipients {
                        // The address as the member gave it: a local part may be
                        // case-sensitive (RFC 5321 2.4); members are unique ignoring case.
                        let qk = QueueKey {
                            list: m.list.clone(),
                            seq,
                            addr: addr.clone(),
                        };
                        queue.insert(qk.encode(), row.as_slice())?;
                    }
                    for (k, v) in &recs {
                        out.insert(k, v.as_slice())?;
                    }
                    Ok(Some(seq))
                });
                match r.map_err(tx_err)? {
                    Some(seq) => Ok(Applied::Posted { seq }),
                    None => Ok(Applied::Duplicate),
                }
            }
        }
    }

    fn outmail_records(&self, mail: Vec<OutMail>) -> Result<Vec<([u8; 8], Vec<u8>)>> {
        mail.into_iter()
            .map(|mut m| {
                m.id = self.next_id()?;
                Ok((m.id.to_be_bytes(), encode_with_raw(&m, &m.raw)))
            })
            .collect()
    }

    // ---- members -----------------------------------------------------------------------

    /// Adds a member; returns false if the address was already a member.
    pub fn add_member(&self, list: &str, m: &Member) -> Result<bool> {
        let prev = self
            .members
            .compare_and_swap(
                member_key(list, &m.address),
                None as Option<&[u8]>,
                Some(encode(m)),
            )?
            .is_ok();
        Ok(prev)
    }

    pub fn remove_member(&self, list: &str, addr: &str) -> Result<bool> {
        Ok(self.members.remove(member_key(list, addr))?.is_some())
    }

    pub fn member(&self, list: &str, addr: &str) -> Result<Option<Member>> {
        self.members
            .get(member_key(list, addr))?
            .map(|v| decode("members", &v))
            .transpose()
    }

    pub fn is_member(&self, list: &str, addr: &str) -> Result<bool> {
        Ok(self.members.contains_key(member_key(list, addr))?)
    }

    pub fn members(&self, list: &str) -> Result<Vec<Member>> {
        self.members
            .scan_prefix(list_prefix(list))
            .values()
            .map(|v| decode("members", &v?))
            .collect()
    }

    pub fn member_count(&self, list: &str) -> Result<usize> {
        Ok(self.members.scan_prefix(list_prefix(list)).count())
    }

    // ---- posts -------------------------------------------------------------------------

    pub fn post(&self, list: &str, seq: u64) -> Result<Option<PostMeta>> {
        self.posts
            .get(post_key(list, seq))?
            .map(|v| decode("posts", &v))
            .transpose()
    }

    pub fn raw(&self, list: &str, seq: u64) -> Result<Option<Vec<u8>>> {
        Ok(self.raw.get(post_key(list, seq))?.map(|v| v.to_vec()))
    }

    pub fn posts(&self, list: &str) -> Result<Vec<PostMeta>> {
        self.posts
            .scan_prefix(list_prefix(list))
            .values()
            .map(|v| decode("posts", &v?))
            .collect()
    }

    /// Whether a Message-ID has been seen (posted or held) on this list.
    pub fn seen_message_id(&self, list: &str, message_id: &str) -> Result<bool> {
        Ok(self.msgid.contains_key(msgid_key(list, message_id))?)
    }

    // ---- held --------------------------------------------------------------------------

    pub fn held(&self) -> Result<Vec<Held>> {
        self.held
            .iter()
            .values()
            .map(|v| {
                let (mut h, raw) = decode_with_raw::<Held>("held", &v?)?;
                h.raw = raw;
                Ok(h)
            })
            .collect()
    }

    /// Moves a held post back into the spool, approved, atomically; its Message-ID is
    /// released so that the post is not taken for a duplicate of itself.
    pub fn release_held(&self, id: u64) -> Result<Option<Held>> {
        let hk = id.to_be_bytes();
        let Some(v) = self.held.get(hk)? else {
            return Ok(None);
        };
        let (mut h, raw) = decode_with_raw::<Held>("held", &v)?;
        let spool_id = self.next_id()?;
        let mut env = h.envelope.clone();
        env.approved = true;
        let rec = encode_with_raw(&env, &raw);
        let mk = msgid_key(&h.list, &h.message_id);
        (&self.held, &self.msgid, &self.spool)
            .transaction(|(heldt, msgid, spool)| {
                heldt.remove(&hk)?;
                msgid.remove(mk.as_slice())?;
                spool.insert(&spool_id.to_be_bytes(), rec.as_slice())?;
                Ok(())
            })
            .map_err(tx_err)?;
        h.raw = raw;
        Ok(Some(h))
    }

    /// Removes a held post (rejected by a moderator).
    pub fn discard_held(&self, id: u64) -> Result<Option<Held>> {
        let Some(v) = self.held.remove(id.to_be_bytes())? else {
            return Ok(None);
        };
        let (mut h, raw) = decode_with_raw::<Held>("held", &v)?;
        h.raw = raw;
        Ok(Some(h))
    }

    // ---- delivery queue ----------------------------------------------------------------

    /// One pass over the queue and the single messages: what is due at `now_ms` (at most
    /// `limit` rows; out-mails with their bytes) and when the next not-yet-due item is.
    pub fn due(&self, now_ms: i64, limit: usize) -> Result<Due> {
        let mut due = Due::default();
        for kv in self.queue.iter() {
            let (k, v) = kv?;
            let row: QueueRow = decode("queue", &v)?;
            if row.next_ms > now_ms {
                due_later(&mut due.next_ms, row.next_ms);
            } else if due.rows.len() < limit {
                if let Some(key) = QueueKey::decode(&k) {
                    due.rows.push((key, row));
                }
            }
        }
        for v in self.outmail.iter().values() {
            let v = v?;
            let (mut m, raw): (OutMail, &[u8]) = decode_head("outmail", &v)?;
            if m.next_ms > now_ms {
                due_later(&mut due.next_ms, m.next_ms);
            } else {
                m.raw = raw.to_vec();
                due.mails.push(m);
            }
        }
        Ok(due)
    }

    /// All pending rows (for `queue list`).
    pub fn queue_rows(&self) -> Result<Vec<(QueueKey, QueueRow)>> {
        let mut out = Vec::new();
        for kv in self.queue.iter() {
            let (k, v) = kv?;
            if let Some(key) = QueueKey::decode(&k) {
                out.push((key, decode("queue", &v)?));
            }
        }
        Ok(out)
    }

    pub fn pending_for_post(&self, list: &str, seq: u64) -> Result<usize> {
        Ok(self.queue.scan_prefix(post_key(list, seq)).count())
    }

    pub fn failures_for_post(&self, list: &str, seq: u64) -> Result<usize> {
        Ok(self.failures.scan_prefix(post_key(list, seq)).count())
    }

    /// Records the results of one batch of attempts in one write: delivered rows removed,
    /// temporary failures rescheduled, permanent failures moved to `failures`.
    pub fn record_results(&self, results: &[(QueueKey, DeliveryResult)]) -> Result<()> {
        let mut q = sled::Batch::default();
        let mut f = sled::Batch::default();
        for (key, r) in results {
            let k = key.encode();
            match r {
                DeliveryResult::Delivered => q.remove(k),
                DeliveryResult::Retry(row) => q.insert(k, encode(row)),
                DeliveryResult::Failed(fail) => {
                    q.remove(k.clone());
                    f.insert(k, encode(fail));
                }
            }
        }
        (&self.queue, &self.failures)
            .transaction(|(qt, ft)| {
                qt.apply_batch(&q)?;
                ft.apply_batch(&f)?;
                Ok(())
            })
            .map_err(tx_err)
    }

    /// Makes every pending row and out-mail due now (`queue retry`). Returns how many.
    pub fn retry_all_now(&self) -> Result<usize> {
        let now = now_ms();
        let mut n = 0;
        for kv in self.queue.iter() {
            let (k, v) = kv?;
            let mut row: QueueRow = decode("queue", &v)?;
            row.next_ms = now;
            self.queue.insert(k, encode(&row))?;
            n += 1;
        }
        for kv in self.outmail.iter() {
            let (k, v) = kv?;
            let (mut m, raw) = decode_with_raw::<OutMail>("outmail", &v)?;
            m.next_ms = now;
            self.outmail.insert(k, encode_with_raw(&m, &raw))?;
            n += 1;
        }
        Ok(n)
    }

    // ---- single messages ---------------------------------------------------------------

    pub fn outmails(&self) -> Result<Vec<OutMail>> {
        self.outmail
            .iter()
            .values()
            .map(|v| {
                let (mut m, raw) = decode_with_raw::<OutMail>("outmail", &v?)?;
                m.raw = raw;
                Ok(m)
            })
            .collect()
    }

    pub fn outmail_done(&self, id: u64) -> Result<()> {
        self.outmail.remove(id.to_be_bytes())?;
        Ok(())
    }

    pub fn outmail_update(&self, m: &OutMail) -> Result<()> {
        self.outmail
            .insert(m.id.to_be_bytes(), encode_with_raw(m, &m.raw))?;
        Ok(())
    }

    // ---- quarantine --------------------------------------------------------------------

    /// Keeps a message that was refused before spooling (malformed), for the owners.
    pub fn quarantine(&self, reason: &str, envelope: Envelope, raw: &[u8]) -> Result<u64> {
        let id = self.next_id()?;
        let q = Quarantined {
            id,
            reason: reason.to_string(),
            envelope,
            raw: Vec::new(),
        };
        self.quarantine
            .insert(id.to_be_bytes(), encode_with_raw(&q, raw))?;
        Ok(id)
    }

    pub fn quarantined(&self) -> Result<Vec<Quarantined>> {
        self.quarantine
            .iter()
            .values()
            .map(|v| {
                let (mut q, raw) = decode_with_raw::<Quarantined>("quarantine", &v?)?;
                q.raw = raw;
                Ok(q)
            })
            .collect()
    }
}

/// What [`Store::due`] found.
#[derive(Debug, Default)]
pub struct Due {
    pub rows: Vec<(QueueKey, QueueRow)>,
    pub mails: Vec<OutMail>,
    /// The earliest attempt time of anything not yet due.
    pub next_ms: Option<i64>,
}

fn due_later(next: &mut Option<i64>, t: i64) {
    *next = Some(next.map_or(t, |n| n.min(t)));
}

/// The result of one delivery attempt for one recipient.
#[derive(Debug, Clone)]
pub enum DeliveryResult {
    Delivered,
    Retry(QueueRow),
    Failed(Failure),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Envelope {
        Envelope {
            mail_from: "a@example.org".into(),
            rcpt: "forum@lists.example.org".into(),
            source: "test".into(),
            received_ms: 1,
            approved: false,
        }
    }

    fn meta(mid: &str) -> PostMeta {
        PostMeta {
            list: "forum@lists.example.org".into(),
            seq: 0,
            message_id: mid.into(),
            from_addr: "a@example.org".into(),
            from_name: None,
            subject: "s".into(),
            date: None,
            received_ms: 1,
            recipients: 0,
        }
    }

    #[test]
    fn accept_is_atomic_numbered_and_deduplicated() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).unwrap();
        let l = "forum@lists.example.org";
        let id = s.spool(env(), b"raw1").unwrap();
        let r = s
            .apply(
                id,
                Outcome::Accept {
                    meta: meta("<1@x>"),
                    raw: b"raw1".to_vec(),
                    recipients: vec!["B@Example.org".into(), "c@example.org".into()],
                    notices: vec![],
                },
            )
            .unwrap();
        assert_eq!(r, Applied::Posted { seq: 1 });
        assert!(s.spooled(id).unwrap().is_none());
        assert_eq!(s.pending_for_post(l, 1).unwrap(), 2);
        assert_eq!(s.raw(l, 1).unwrap().unwrap(), b"raw1");
        assert_eq!(s.post(l, 1).unwrap().unwrap().recipients, 2);
        let id2 = s.spool(env(), b"raw1").unwrap();
        let r = s
            .apply(
                id2,
                Outcome::Accept {
                    meta: meta("<1@x>"),
                    raw: b"raw1".to_vec(),
                    recipients: vec!["b@example.org".into()],
                    notices: vec![],
                },
            )
            .unwrap();
        assert_eq!(r, Applied::Duplicate);
        assert_eq!(s.pending_for_post(l, 1).unwrap(), 2);
        assert!(s.spooled_ids().unwrap().is_empty());

        let due = s.due(now_ms() + 1, 10).unwrap().rows;
        assert_eq!(due.len(), 2);
        assert_eq!(due[0].0.addr, "B@Example.org");
        s.record_results(&[
            (due[0].0.clone(), DeliveryResult::Delivered),
            (
                due[1].0.clone(),
                DeliveryResult::Failed(Failure {
                    at_ms: 1,
                    attempts: 1,
                    error: "550".into(),
                }),
            ),
        ])
        .unwrap();
        assert_eq!(s.pending_for_post(l, 1).unwrap(), 0);
        assert_eq!(s.failures_for_post(l, 1).unwrap(), 1);
    }

    #[test]
    fn members_are_case_insensitive() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).unwrap();
        let m = Member {
            address: "Jan.Peeters@Example.ORG".into(),
            name: Some("Jan".into()),
            joined_ms: 0,
        };
        assert!(s.add_member("forum@x.org", &m).unwrap());
        assert!(!s.add_member("forum@x.org", &m).unwrap());
        assert!(s
            .is_member("FORUM@x.org", "jan.peeters@example.org")
            .unwrap());
        assert!(!s
            .is_member("other@x.org", "jan.peeters@example.org")
            .unwrap());
        assert_eq!(s.members("forum@x.org").unwrap()[0].address, m.address);
        assert!(s
            .remove_member("forum@x.org", "JAN.PEETERS@example.org")
            .unwrap());
        assert_eq!(s.member_count("forum@x.org").unwrap(), 0);
    }

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("db");
        {
            let s = Store::open(&p).unwrap();
            s.spool(env(), b"hello").unwrap();
            s.flush().unwrap();
        }
        let s = Store::open(&p).unwrap();
        let ids = s.spooled_ids().unwrap();
        assert_eq!(ids.len(), 1);
        assert_eq!(s.spooled(ids[0]).unwrap().unwrap().raw, b"hello");
    }
}
