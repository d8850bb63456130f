//! The store: sled trees and their key layouts. This folder is the only place that touches
//! sled; one file per family of trees (spool, members, posts, queue, digests, archive index,
//! IMAP state, forgetting), each adding typed operations to [`Store`].
//!
//! Trees (keys are byte strings; numbers are big-endian so ranges sort):
//! - `spool`      `<id>` → envelope + raw bytes of a message acknowledged but not yet routed
//! - `members`    `<list>\0<addr>` → [`Member`]
//! - `posts`      `<list>\0<seq>` → [`PostMeta`]
//! - `raw`        `<list>\0<seq>` → the raw bytes of an accepted post
//! - `msgid`      `<list>\0<message-id>` → `p<seq>` (accepted) or `h<id>` (held)
//! - `held`       `<id>` → [`Held`] (a post waiting for a moderator)
//! - `queue`      `<list>\0<seq>\0<addr>` → [`QueueRow`] (one pending recipient of one post)
//! - `queue_due`  `<next_ms><queue key>` → `` (the queue ordered by due time: a delivery pass
//!   reads the rows it sends, not the whole queue; stale entries are dropped when met)
//! - `fanout`     `<list>\0<seq><chunk>` → recipients of a post not queued yet, in chunks of
//!   1,024 (see `fanout.rs`: a large fan-out becomes queue rows as delivery needs them)
//! - `failures`   `<list>\0<seq>\0<addr>` → [`Failure`] (a recipient given up on)
//! - `outmail`    `<id>` → [`OutMail`] (a single message to send: owner notices, forwards)
//! - `quarantine` `<id>` → [`Quarantined`] (kept for the owners, never distributed)
//! - `meta`       counters (`seq\0<list>`), last owner summary (`summary\0<list>`),
//!   reports sent once (`reported\0<marker>`: a post that failed for every member)
//! - `member_uid` `<uid>` → `<list>\0<addr>` (finds the member of a one-click unsubscribe URL)
//! - `pending`    `<id>` → [`Pending`] (a subscribe/unsubscribe request awaiting confirmation)
//! - `ratelimit`  `<bucket>\0<addr>` → recent send times (limits mail to one address)
//! - `events`     `<list>\0<id>` → [`MemberEvent`] (joins and leaves for the daily summary)
//! - `imap`       `state\0<account>` → [`ImapState`]; `seen\0<account>\0<message-id>` → uid
//!   (what an IMAP poller has stored, written with the stored message itself)
//! - `arch_msg`   `<list>\0<seq>` → [`ArchMsg`] (a post as the archive's thread index sees it)
//! - `arch_thread` `<list>\0<thread>` → [`ArchThread`] (thread id = seq of its first post)
//! - `arch_id`    `<list>\0<message-id>` → thread (also ids only referenced: phantoms)
//! - `arch_subj`  `<list>\0<base subject>` → the latest thread with that subject
//! - `arch_month` `<list>\0<yyyy-mm>\0<thread>` → messages of the thread in that month
//!   (the archive index is derived: `archive rebuild` clears and recomputes it)
//! - `thread_of`  `<list>\0<message-id>` → thread id (the thread a post belongs to, written
//!   with the post; see `mutes.rs`; not derived: rebuilding the archive leaves it)
//! - `threads`    `<list>\0<thread>` → [`ThreadInfo`] (root Message-ID and subject)
//! - `mutes`      `<list>\0<thread><addr>` → [`Mute`] (a member muted a thread)
//!
//! `<list>` is the lower-cased posting address and `<addr>` a lower-cased member address.
//! Everything that changes the meaning of an acknowledged message happens in one sled
//! transaction, and every acknowledgement waits for [`Store::flush`].

use crate::clock::now_ms;
use crate::config::Language;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use std::path::Path;

mod archive;
mod changes;
mod digests;
mod fanout;
mod forget;
mod imap;
mod members;
mod mutes;
mod posts;
mod queue;
mod spool;

pub use archive::*;
pub use changes::*;
pub use digests::*;
pub use forget::*;
pub use imap::*;
pub use members::*;
pub use mutes::*;
pub use posts::*;
pub use queue::*;
pub use spool::*;

/// A failure of the storage engine, kept opaque so that no sled type is in the store's API.
#[derive(Debug)]
pub struct DbError(sled::Error);

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for DbError {}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(DbError),
    #[error("corrupt record in tree {tree}: {msg}")]
    Corrupt { tree: &'static str, msg: String },
    #[error("the database at {path} is in use by another process (is `vraagbaak serve` running?)")]
    Locked { path: String },
    /// A token's request was confirmed by someone else meanwhile: nothing was applied.
    #[error("request {id} was already confirmed")]
    AlreadyUsed { id: u64 },
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Db(DbError(e))
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

fn abort_corrupt(tree: &'static str, msg: String) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(StoreError::Corrupt { tree, msg })
}

fn tx_err(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => e.into(),
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

fn rate_key(bucket: &str, addr: &str) -> Vec<u8> {
    let mut k = bucket.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(addr.to_lowercase().as_bytes());
    k
}

fn imap_state_key(account: &str) -> Vec<u8> {
    [b"state\0".as_slice(), account.as_bytes()].concat()
}

fn imap_seen_key(account: &str, message_id: &str) -> Vec<u8> {
    [
        b"seen\0".as_slice(),
        account.as_bytes(),
        b"\0",
        message_id.as_bytes(),
    ]
    .concat()
}

/// The marker of a report sent once (`Change::ReportOnce`).
fn report_key(marker: &str) -> Vec<u8> {
    [b"reported\0".as_slice(), marker.as_bytes()].concat()
}

fn summary_key(list: &str) -> Vec<u8> {
    [b"summary\0".as_slice(), &list_prefix(list)].concat()
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
    queue_due: sled::Tree,
    fanout: sled::Tree,
    failures: sled::Tree,
    outmail: sled::Tree,
    quarantine: sled::Tree,
    meta: sled::Tree,
    member_uid: sled::Tree,
    pending: sled::Tree,
    ratelimit: sled::Tree,
    events: sled::Tree,
    imap: sled::Tree,
    arch_msg: sled::Tree,
    arch_thread: sled::Tree,
    arch_id: sled::Tree,
    arch_subj: sled::Tree,
    arch_month: sled::Tree,
    digests: sled::Tree,
    thread_of: sled::Tree,
    threads: sled::Tree,
    mutes: sled::Tree,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store> {
        forget::restore_compaction(path)?;
        let db = sled::Config::new()
            .path(path)
            .flush_every_ms(Some(200))
            // sled caches up to 1 GiB by default; the working set (queue rows, thread
            // index) is small, and the archive reads raw posts once each.
            .cache_capacity(64 << 20)
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
                e => e.into(),
            })?;
        let t = |n: &str| db.open_tree(n);
        let store = Store {
            spool: t("spool")?,
            members: t("members")?,
            posts: t("posts")?,
            raw: t("raw")?,
            msgid: t("msgid")?,
            held: t("held")?,
            queue: t("queue")?,
            queue_due: t("queue_due")?,
            fanout: t("fanout")?,
            failures: t("failures")?,
            outmail: t("outmail")?,
            quarantine: t("quarantine")?,
            meta: t("meta")?,
            member_uid: t("member_uid")?,
            pending: t("pending")?,
            ratelimit: t("ratelimit")?,
            events: t("events")?,
            imap: t("imap")?,
            arch_msg: t("arch_msg")?,
            arch_thread: t("arch_thread")?,
            arch_id: t("arch_id")?,
            arch_subj: t("arch_subj")?,
            arch_month: t("arch_month")?,
            digests: t("digests")?,
            thread_of: t("thread_of")?,
            threads: t("threads")?,
            mutes: t("mutes")?,
            db,
        };
        forget::remove_compaction_leftovers(path)?;
        store.index_queue()?;
        Ok(store)
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
        // sled's ids start at 0; ours start at 1 so that 0 can mean "not yet assigned".
        Ok(self.db.generate_id()? + 1)
    }

    /// A fresh id (unique in this database) for a record that needs its id before it is
    /// stored: a held post whose moderation token is in the owners' notice.
    pub fn new_id(&self) -> Result<u64> {
        self.next_id()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn env() -> Envelope {
        Envelope {
            mail_from: "a@example.org".into(),
            rcpt: "forum@lists.example.org".into(),
            source: "test".into(),
            received_ms: 1,
            approved: false,
            poster_confirmed: false,
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
            from_rewrite: false,
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
                    changes: vec![],
                    thread: None,
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
                    changes: vec![],
                    thread: None,
                },
            )
            .unwrap();
        assert_eq!(r, Applied::Duplicate);
        assert_eq!(s.pending_for_post(l, 1).unwrap(), 2);
        assert!(s.spooled_ids().unwrap().is_empty());

        let due = s.due(now_ms() + 1, 10, &|_| false).unwrap().rows;
        assert_eq!(due.len(), 2);
        assert_eq!(due[0].0.addr, "B@Example.org");
        s.record_results(
            &[
                (due[0].0.clone(), DeliveryResult::Delivered),
                (
                    due[1].0.clone(),
                    DeliveryResult::Failed(Failure {
                        at_ms: 1,
                        attempts: 1,
                        error: "550".into(),
                    }),
                ),
            ],
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(s.pending_for_post(l, 1).unwrap(), 0);
        assert_eq!(s.failures_for_post(l, 1).unwrap(), 1);
    }

    #[test]
    fn members_are_case_insensitive() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).unwrap();
        let m = Member::new("Jan.Peeters@Example.ORG".into(), Some("Jan".into()), |_| 77);
        assert!(s.add_member("forum@x.org", &m).unwrap());
        assert!(!s.add_member("forum@x.org", &m).unwrap());
        assert!(s
            .is_member("FORUM@x.org", "jan.peeters@example.org")
            .unwrap());
        assert!(!s
            .is_member("other@x.org", "jan.peeters@example.org")
            .unwrap());
        assert_eq!(s.members("forum@x.org").unwrap()[0].address, m.address);
        let (l, found) = s.member_by_uid(77).unwrap().unwrap();
        assert_eq!(
            (l.as_str(), found.address.as_str()),
            ("forum@x.org", m.address.as_str())
        );
        assert!(s
            .remove_member("forum@x.org", "JAN.PEETERS@example.org")
            .unwrap());
        assert!(s.member_by_uid(77).unwrap().is_none());
        assert_eq!(s.member_count("forum@x.org").unwrap(), 0);
    }

    /// Opens a store that was just closed in this process: sled's flusher thread may hold
    /// the file lock for a moment after the last handle is dropped.
    pub(crate) fn reopen(p: &Path) -> Store {
        for _ in 0..100 {
            match Store::open(p) {
                Err(StoreError::Locked { .. }) => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                r => return r.unwrap(),
            }
        }
        Store::open(p).unwrap()
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
        let s = reopen(&p);
        let ids = s.spooled_ids().unwrap();
        assert_eq!(ids.len(), 1);
        assert_eq!(s.spooled(ids[0]).unwrap().unwrap().raw, b"hello");
    }
}
