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
//! - `meta`       counters (`seq\0<list>`), last owner summary (`summary\0<list>`)
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
//!
//! `<list>` is the lower-cased posting address and `<addr>` a lower-cased member address.
//! Everything that changes the meaning of an acknowledged message happens in one sled
//! transaction, and every acknowledgement waits for [`Store::flush`].

use crate::config::Language;
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
    #[error("{0}")]
    Io(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

fn abort_corrupt(tree: &'static str, msg: String) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(StoreError::Corrupt { tree, msg })
}

/// Takes the list's next post number inside a transaction.
fn next_seq(
    metat: &sled::transaction::TransactionalTree,
    seq_key: &[u8],
) -> std::result::Result<u64, ConflictableTransactionError<StoreError>> {
    let seq = match metat.get(seq_key)? {
        Some(v) => {
            let b: [u8; 8] = v
                .as_ref()
                .try_into()
                .map_err(|_| abort_corrupt("meta", "sequence counter is not 8 bytes".into()))?;
            u64::from_be_bytes(b) + 1
        }
        None => 1,
    };
    metat.insert(seq_key, &seq.to_be_bytes())?;
    Ok(seq)
}

/// Stores a post under the list's next seq, with its raw bytes and its Message-ID, inside
/// a transaction; returns the seq.
#[allow(clippy::too_many_arguments)]
fn insert_post(
    posts: &sled::transaction::TransactionalTree,
    rawt: &sled::transaction::TransactionalTree,
    msgid: &sled::transaction::TransactionalTree,
    metat: &sled::transaction::TransactionalTree,
    meta: &PostMeta,
    raw: &[u8],
    mk: &[u8],
    seq_key: &[u8],
) -> std::result::Result<u64, ConflictableTransactionError<StoreError>> {
    let seq = next_seq(metat, seq_key)?;
    let mut m = meta.clone();
    m.seq = seq;
    let pk = post_key(&m.list, seq);
    posts.insert(pk.as_slice(), encode(&m))?;
    rawt.insert(pk.as_slice(), raw)?;
    let mut mv = b"p".to_vec();
    mv.extend_from_slice(&seq.to_be_bytes());
    msgid.insert(mk, mv)?;
    Ok(seq)
}

fn tx_err(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StoreError::Db(e),
    }
}

/// Milliseconds since the Unix epoch, as the daemon's clock reads it: the wall clock plus
/// `VRAAGBAAK_CLOCK_OFFSET` seconds when that is set. The offset lets tests (and an owner
/// trying out bounce or vacation settings) move the clock without changing the system's.
pub fn now_ms() -> i64 {
    static OFFSET_MS: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let offset = *OFFSET_MS.get_or_init(|| {
        std::env::var("VRAAGBAAK_CLOCK_OFFSET")
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .map_or(0, |s| s.saturating_mul(1000))
    });
    chrono::Utc::now().timestamp_millis().saturating_add(offset)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Member {
    /// The address as the member wrote it.
    pub address: String,
    #[serde(default)]
    pub name: Option<String>,
    pub joined_ms: i64,
    /// The member's id in its one-click unsubscribe URL (see `tokens`); 0 = not yet given.
    #[serde(default)]
    pub uid: u64,
    /// Wants digests instead of single posts.
    #[serde(default)]
    pub digest: bool,
    /// Digests as one plain-text mail (RFC 1153) instead of MIME (`set digest plain`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub digest_plain: bool,
    /// Receives no posts for now (vacation); stays a member.
    #[serde(default)]
    pub nomail: bool,
    /// When `nomail` ends by itself (`set nomail until DATE`); none: until turned off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nomail_until: Option<i64>,
    /// Language of texts to this member, when it differs from the list's.
    #[serde(default)]
    pub language: Option<Language>,
    /// Bounces counted against this address (see `bounce`); none when it never bounced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounce: Option<BounceInfo>,
}

/// A member's bounce record: the score and, once it reached the list's threshold, the
/// state of the notices that precede removal.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BounceInfo {
    pub score: f64,
    /// The last bounce that counted (at most one a day counts).
    pub last_ms: i64,
    /// How much the last counted day added (0.5 soft, 1.0 hard): a hard bounce after a
    /// soft one on the same day adds the difference.
    #[serde(default)]
    pub last_weight: f64,
    /// Bounces received, counted or not.
    pub received: u32,
    /// The last bounce: `hard`, `soft` or `policy` (not the member's fault; not counted),
    /// and its status code (`5.1.1`), when it had one.
    pub last_kind: String,
    #[serde(default)]
    pub last_status: Option<String>,
    pub last_received_ms: i64,
    /// Delivery disabled since; `None` while the member still receives posts.
    #[serde(default)]
    pub disabled_ms: Option<i64>,
    /// Notices sent since delivery was disabled, and when the last went out.
    #[serde(default)]
    pub notices: u32,
    #[serde(default)]
    pub last_notice_ms: i64,
}

impl Member {
    /// Whether the member is on vacation at `now` (`nomail`, until `nomail_until`).
    pub fn on_vacation(&self, now: i64) -> bool {
        self.nomail && self.nomail_until.is_none_or(|u| now < u)
    }

    /// Whether mail from the list (posts and digests) goes to this member at `now`: not on
    /// vacation, not disabled by bounces.
    pub fn receives_mail(&self, now: i64) -> bool {
        !self.on_vacation(now) && self.bounce.as_ref().is_none_or(|b| b.disabled_ms.is_none())
    }
}

impl Member {
    pub fn new(address: String, name: Option<String>, uid: u64) -> Member {
        Member {
            address,
            name,
            joined_ms: now_ms(),
            uid,
            digest: false,
            digest_plain: false,
            nomail: false,
            nomail_until: None,
            language: None,
            bounce: None,
        }
    }
}

/// A subscribe or unsubscribe request waiting for the address to confirm it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Pending {
    /// `subscribe` or `unsubscribe`.
    pub action: String,
    pub list: String,
    /// The address concerned: the one that must confirm.
    pub address: String,
    #[serde(default)]
    pub name: Option<String>,
    pub expires_ms: i64,
    #[serde(default)]
    pub language: Option<Language>,
    /// When it was confirmed; a used token is kept until it expires, to say "already used".
    #[serde(default)]
    pub used_ms: Option<i64>,
}

/// How far an IMAP poller got in its mailbox.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImapState {
    pub uidvalidity: u32,
    /// The highest UID stored (spooled or quarantined) under this UIDVALIDITY.
    pub last_uid: u32,
}

/// Which IMAP message a stored message is, recorded in the same transaction.
#[derive(Debug, Clone)]
pub struct ImapMark {
    pub account: String,
    pub uidvalidity: u32,
    pub uid: u32,
    pub message_id: Option<String>,
}

/// A join or leave, kept for the owners' daily summary.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberEvent {
    pub at_ms: i64,
    /// `joined` or `left`.
    pub kind: String,
    pub address: String,
    /// How: `mail`, `web`, `admin`, `moderator`.
    pub via: String,
}

/// One change to list state, applied with others (and the mail they cause) in one
/// transaction: a crash never leaves a member added without the welcome queued, or a token
/// used without its effect.
#[derive(Debug, Clone)]
pub enum Change {
    /// Adds a member; an existing member is left as it is.
    AddMember {
        list: String,
        member: Member,
    },
    RemoveMember {
        list: String,
        addr: String,
    },
    /// Replaces an existing member's record (settings); nothing when it is not a member.
    UpdateMember {
        list: String,
        member: Member,
    },
    PutPending {
        id: u64,
        pending: Pending,
    },
    /// Marks a pending request confirmed.
    UsePending {
        id: u64,
        at_ms: i64,
    },
    /// Counts one mail to `addr` in `bucket`, forgetting hits older than `since_ms`.
    RateHit {
        bucket: String,
        addr: String,
        at_ms: i64,
        since_ms: i64,
    },
    /// Moves a held post to the spool, approved.
    ReleaseHeld {
        id: u64,
    },
    DiscardHeld {
        id: u64,
    },
    Event {
        list: String,
        event: MemberEvent,
    },
    /// A confirmed `forget`: carried out by the pipeline task (see `forget`).
    RequestForget {
        list: String,
        addr: String,
    },
    /// The daily summary went out: events up to `upto` are removed.
    SummarySent {
        list: String,
        upto: u64,
        at_ms: i64,
    },
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
    /// The list copy carries the list's From (DMARC, `from_rewrite`); decided once, when
    /// the post is accepted, so that every copy and every retry says the same.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_rewrite: bool,
}

/// What to forget, and what to put in its place.
#[derive(Debug, Clone)]
pub struct Forget {
    pub addr: String,
    /// The member's display name as it appears in mail (replaced when 4 characters or more).
    pub name: Option<String>,
    pub label_addr: String,
    pub label_name: String,
    pub delete_posts: bool,
}

impl Forget {
    /// `raw` with every occurrence of the address (any case) and the name replaced; `None`
    /// when neither occurs.
    pub fn relabel(&self, raw: &[u8]) -> Option<Vec<u8>> {
        let mut out = replace_ci(raw, self.addr.as_bytes(), self.label_addr.as_bytes());
        if let Some(n) = self
            .name
            .as_deref()
            .filter(|n| n.trim().chars().count() >= 4)
        {
            out = replace_ci(&out, n.trim().as_bytes(), self.label_name.as_bytes());
        }
        (out != raw).then_some(out)
    }

    /// [`Forget::relabel`] for a record stored with its raw message (metadata and message
    /// each relabelled, the length prefix written anew).
    pub fn relabel_record(&self, v: &[u8]) -> Option<Vec<u8>> {
        let n = u32::from_be_bytes(v.get(..4)?.try_into().ok()?) as usize;
        let (head, raw) = (v.get(4..4 + n)?, v.get(4 + n..)?);
        let (h2, r2) = (self.relabel(head), self.relabel(raw));
        if h2.is_none() && r2.is_none() {
            return None;
        }
        let head = h2.unwrap_or_else(|| head.to_vec());
        let raw = r2.unwrap_or_else(|| raw.to_vec());
        let mut out = Vec::with_capacity(4 + head.len() + raw.len());
        out.extend_from_slice(&(head.len() as u32).to_be_bytes());
        out.extend_from_slice(&head);
        out.extend_from_slice(&raw);
        Some(out)
    }

    /// A whole stored message: its base64 and quoted-printable parts are decoded and
    /// relabelled too (text parts with the label, re-encoded; binary attachments with an
    /// `x` mask of the same length, so that offsets inside the file stay right), nested
    /// messages likewise; then the plain bytes as in [`Forget::relabel`].
    pub fn relabel_message(&self, raw: &[u8]) -> Option<Vec<u8>> {
        let encoded = self.relabel_encoded(raw, 0);
        let base = encoded.as_deref().unwrap_or(raw);
        match (self.relabel(base), encoded.is_some()) {
            (Some(v), _) => Some(v),
            (None, true) => Some(base.to_vec()),
            (None, false) => None,
        }
    }

    fn relabel_encoded(&self, raw: &[u8], depth: usize) -> Option<Vec<u8>> {
        use base64::Engine;
        use mail_parser::{Encoding, PartType};
        if depth > 8 {
            return None;
        }
        let needle = self.addr.to_ascii_lowercase().into_bytes();
        let has = |b: &[u8]| {
            b.len() >= needle.len()
                && b.windows(needle.len())
                    .any(|w| w.eq_ignore_ascii_case(&needle))
        };
        let msg = mail_parser::MessageParser::default().parse(raw)?;
        let mut edits: Vec<(usize, usize, Vec<u8>)> = Vec::new();
        for p in msg.parts.iter() {
            let (s, e) = (p.offset_body as usize, p.offset_end as usize);
            if s > e || e > raw.len() {
                continue;
            }
            let replacement = match (&p.body, p.encoding) {
                (PartType::Message(_), _) => self.relabel_encoded(&raw[s..e], depth + 1),
                (PartType::Multipart(_), _) | (_, Encoding::None) => None,
                (body, enc) => {
                    let decoded = p.contents();
                    if !has(decoded) {
                        continue;
                    }
                    let text = matches!(body, PartType::Text(_) | PartType::Html(_));
                    let new = if text {
                        self.relabel(decoded).unwrap_or_else(|| decoded.to_vec())
                    } else {
                        let mask: Vec<u8> = self
                            .addr
                            .bytes()
                            .map(|c| if c == b'@' { b'@' } else { b'x' })
                            .collect();
                        replace_ci(decoded, self.addr.as_bytes(), &mask)
                    };
                    Some(match enc {
                        Encoding::QuotedPrintable => quoted_printable::encode(&new),
                        _ => {
                            let b64 = base64::engine::general_purpose::STANDARD.encode(&new);
                            let mut o = Vec::with_capacity(b64.len() + b64.len() / 38);
                            for chunk in b64.as_bytes().chunks(76) {
                                o.extend_from_slice(chunk);
                                o.extend_from_slice(b"\r\n");
                            }
                            o
                        }
                    })
                }
            };
            if let Some(r) = replacement {
                edits.push((s, e, r));
            }
        }
        if edits.is_empty() {
            return None;
        }
        edits.sort_by_key(|x| x.0);
        let mut out = Vec::with_capacity(raw.len());
        let mut pos = 0;
        for (s, e, r) in edits {
            if s < pos {
                continue;
            }
            out.extend_from_slice(&raw[pos..s]);
            out.extend_from_slice(&r);
            pos = e;
        }
        out.extend_from_slice(&raw[pos..]);
        Some(out)
    }

    /// A post of the forgotten member: its author fields become the label, and the rest
    /// is relabelled as in [`Forget::relabel`].
    pub fn relabel_author(&self, raw: &[u8]) -> Vec<u8> {
        let (fields, body) = crate::compose::split_message(raw);
        let mut out = Vec::with_capacity(raw.len());
        for fl in &fields {
            let n = fl.name.to_ascii_lowercase();
            if matches!(n.as_str(), "from" | "sender" | "reply-to" | "return-path") {
                out.extend_from_slice(
                    format!("{}: {} <{}>\r\n", fl.name, self.label_name, self.label_addr)
                        .as_bytes(),
                );
            } else {
                out.extend_from_slice(fl.raw);
            }
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
        self.relabel_message(&out).unwrap_or(out)
    }
}

/// Replaces every ASCII-case-insensitive occurrence of `from` in `hay` by `to`.
fn replace_ci(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    if from.is_empty() || hay.len() < from.len() {
        return hay.to_vec();
    }
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay.len() - i >= from.len() && hay[i..i + from.len()].eq_ignore_ascii_case(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

/// What [`Store::forget`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForgetReport {
    pub member: bool,
    pub records: usize,
    pub relabelled: usize,
    pub posts_deleted: usize,
}

/// Where a list's digests stand (`meta` tree, `digest\0<list>`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DigestState {
    /// Volume and issue of the last digest sent (0/0: none yet). A new volume starts each
    /// calendar year (in the list's time zone) with issue 1, as in Mailman.
    pub volume: u32,
    pub issue: u32,
    /// The year of `volume`.
    pub year: i32,
    /// The first post not yet in a digest.
    pub next_seq: u64,
    /// When the last digest was made (or digests began).
    pub last_ms: i64,
}

/// A digest as stored: which posts it holds; its two forms are stored beside it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DigestMeta {
    pub list: String,
    pub id: u64,
    pub volume: u32,
    pub issue: u32,
    pub first_seq: u64,
    pub last_seq: u64,
    pub created_ms: i64,
    pub recipients: u64,
}

/// Queue rows of a digest use the post queue with these bits in the sequence number, so
/// that delivery, retries, bounces and crash recovery are the posts' own.
const DIGEST_SEQ: u64 = 1 << 63;
const DIGEST_PLAIN_SEQ: u64 = 1 << 62;

/// The queue sequence number for digest `id` in its MIME or plain form.
pub fn digest_queue_seq(id: u64, plain: bool) -> u64 {
    DIGEST_SEQ | if plain { DIGEST_PLAIN_SEQ } else { 0 } | (id & (DIGEST_PLAIN_SEQ - 1))
}

/// The digest (id, plain) a queue sequence number stands for; `None` for a post.
pub fn digest_of_queue_seq(seq: u64) -> Option<(u64, bool)> {
    (seq & DIGEST_SEQ != 0).then_some((seq & (DIGEST_PLAIN_SEQ - 1), seq & DIGEST_PLAIN_SEQ != 0))
}

fn forget_key(list: &str, addr: &str) -> Vec<u8> {
    [
        b"forget\0".as_slice(),
        list_prefix(list).as_slice(),
        addr.to_ascii_lowercase().as_bytes(),
    ]
    .concat()
}

fn digest_state_key(list: &str) -> Vec<u8> {
    [b"digest\0".as_slice(), list_prefix(list).as_slice()].concat()
}

/// A month and its threads with the number of their messages that month.
pub type MonthThreads = (String, Vec<(u64, u32)>);

/// A post as the archive's thread index sees it: small, so that a thread or a month can be
/// laid out without parsing its messages.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ArchMsg {
    pub seq: u64,
    pub thread: u64,
    pub message_id: String,
    /// Parent ids, oldest first (References, In-Reply-To).
    pub refs: Vec<String>,
    pub subject: String,
    /// The author's name as the archive shows it (never an address); empty when unknown.
    pub author: String,
    pub date_ms: i64,
    /// `yyyy-mm` of `date_ms`.
    pub month: String,
}

/// A thread of the archive. Its id is the seq of the post that started it, so its URL never
/// changes; when a later post joins two threads, the younger is merged into the older and
/// keeps a page that points there.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ArchThread {
    pub id: u64,
    pub subject: String,
    /// The base subject (RFC 5256) the subject fallback compares.
    pub base: String,
    /// The earliest post's subject says it is a reply (a reply that arrived first).
    pub root_is_reply: bool,
    pub first_ms: i64,
    pub last_ms: i64,
    pub seqs: Vec<u64>,
    #[serde(default)]
    pub merged_into: Option<u64>,
}

/// The archive index changes for one post, written in one transaction.
#[derive(Debug, Default)]
pub struct ArchWrite {
    pub msgs: Vec<ArchMsg>,
    pub threads: Vec<ArchThread>,
    pub ids: Vec<(String, u64)>,
    /// (base subject, thread): the latest thread of a base subject.
    pub subjects: Vec<(String, u64)>,
    /// (month, thread, messages of that thread in that month); 0 removes the row.
    pub months: Vec<(String, u64, u32)>,
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

/// What became of a spooled message; applied atomically with its removal from the spool.
pub enum Outcome {
    /// A post for the list: stored, numbered, and queued for these recipients.
    Accept {
        meta: PostMeta,
        raw: Vec<u8>,
        recipients: Vec<String>,
        notices: Vec<OutMail>,
    },
    /// Waiting for a moderator; the owners (and the poster) get `notices`; `changes` count
    /// the notice to the poster against its rate limit.
    Hold {
        held: Held,
        notices: Vec<OutMail>,
        changes: Vec<Change>,
    },
    /// Kept for the owners, never distributed.
    Quarantine { reason: String },
    /// Something to send that is not a post (a forward to the owners).
    Send { mail: Vec<OutMail> },
    /// Changes to list state (a mail command) and the mail they cause.
    Changes {
        changes: Vec<Change>,
        mail: Vec<OutMail>,
    },
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
    /// A mail command was carried out.
    Done,
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
}

impl Store {
    pub fn open(path: &Path) -> Result<Store> {
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
        // sled's ids start at 0; ours start at 1 so that 0 can mean "not yet assigned".
        Ok(self.db.generate_id()? + 1)
    }

    /// A fresh id (unique in this database) for a record that needs its id before it is
    /// stored: a held post whose moderation token is in the owners' notice.
    pub fn new_id(&self) -> Result<u64> {
        self.next_id()
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
            Outcome::Changes { changes, mail } => {
                self.commit_inner(Some(spool_id), changes, mail)?;
                Ok(Applied::Done)
            }
            Outcome::Hold {
                mut held,
                notices,
                changes,
            } => {
                let recs = self.outmail_records(notices)?;
                if held.id == 0 {
                    held.id = self.next_id()?;
                }
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
                let held_now = r.map_err(tx_err)?;
                if held_now && !changes.is_empty() {
                    // Only rate-limit counts: losing them in a crash costs one extra notice.
                    self.commit_inner(None, changes, Vec::new())?;
                }
                match held_now {
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
                    let seq = insert_post(posts, rawt, msgid, metat, &meta, &raw, &mk, &seq_key)?;
                    for addr in &recipients {
                        // The address as the member gave it: a local part may be
                        // case-sensitive (RFC 5321 2.4); members are unique ignoring case.
                        let qk = QueueKey {
                            list: meta.list.clone(),
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
        let mk = member_key(list, &m.address);
        let rec = encode(m);
        (&self.members, &self.member_uid)
            .transaction(|(members, uids)| {
                if members.get(&mk)?.is_some() {
                    return Ok(false);
                }
                members.insert(mk.as_slice(), rec.as_slice())?;
                if m.uid != 0 {
                    uids.insert(&m.uid.to_be_bytes(), mk.as_slice())?;
                }
                Ok(true)
            })
            .map_err(tx_err)
    }

    pub fn remove_member(&self, list: &str, addr: &str) -> Result<bool> {
        let mk = member_key(list, addr);
        (&self.members, &self.member_uid)
            .transaction(|(members, uids)| {
                let Some(v) = members.remove(mk.as_slice())? else {
                    return Ok(false);
                };
                let m: Member =
                    decode("members", &v).map_err(ConflictableTransactionError::Abort)?;
                if m.uid != 0 {
                    uids.remove(&m.uid.to_be_bytes())?;
                }
                Ok(true)
            })
            .map_err(tx_err)
    }

    /// The list and member a one-click uid belongs to.
    pub fn member_by_uid(&self, uid: u64) -> Result<Option<(String, Member)>> {
        let Some(mk) = self.member_uid.get(uid.to_be_bytes())? else {
            return Ok(None);
        };
        let list = mk
            .iter()
            .position(|&b| b == 0)
            .and_then(|z| std::str::from_utf8(&mk[..z]).ok())
            .map(str::to_string);
        let (Some(list), Some(v)) = (list, self.members.get(&mk)?) else {
            return Ok(None);
        };
        Ok(Some((list, decode("members", &v)?)))
    }

    /// Gives every member without a uid one (`uid(list, addr)`), for data from before uids.
    pub fn assign_member_uids(&self, uid: impl Fn(&str, &str) -> u64) -> Result<usize> {
        let mut n = 0;
        for kv in self.members.iter() {
            let (k, v) = kv?;
            let mut m: Member = decode("members", &v)?;
            if m.uid != 0 {
                continue;
            }
            let Some(list) = k
                .iter()
                .position(|&b| b == 0)
                .and_then(|z| std::str::from_utf8(&k[..z]).ok())
            else {
                continue;
            };
            m.uid = uid(list, &m.address);
            let rec = encode(&m);
            (&self.members, &self.member_uid)
                .transaction(|(members, uids)| {
                    members.insert(k.as_ref(), rec.as_slice())?;
                    uids.insert(&m.uid.to_be_bytes(), k.as_ref())?;
                    Ok(())
                })
                .map_err(tx_err)?;
            n += 1;
        }
        Ok(n)
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

    // ---- IMAP polling -----------------------------------------------------------------

    pub fn imap_state(&self, account: &str) -> Result<Option<ImapState>> {
        self.imap
            .get(imap_state_key(account))?
            .map(|v| decode("imap", &v))
            .transpose()
    }

    /// Whether a message with this Message-ID was already stored from this account.
    pub fn imap_seen(&self, account: &str, message_id: &str) -> Result<bool> {
        Ok(self.imap.contains_key(imap_seen_key(account, message_id))?)
    }

    /// Stores a fetched message in the spool (or, with `quarantine`, in the quarantine) and
    /// records its UID and Message-ID for the account, in one transaction; `envelope: None`
    /// records the mark only (a message found to be stored already). Flush before acting
    /// on the server.
    pub fn store_imap(
        &self,
        envelope: Option<Envelope>,
        quarantine: Option<&str>,
        raw: &[u8],
        mark: &ImapMark,
    ) -> Result<()> {
        let id = self.next_id()?;
        let rec = match (&envelope, quarantine) {
            (Some(env), Some(reason)) => Some(encode_with_raw(
                &Quarantined {
                    id,
                    reason: reason.to_string(),
                    envelope: env.clone(),
                    raw: Vec::new(),
                },
                raw,
            )),
            (Some(env), None) => Some(encode_with_raw(env, raw)),
            (None, _) => None,
        };
        let sk = imap_state_key(&mark.account);
        (&self.spool, &self.quarantine, &self.imap)
            .transaction(|(spool, quar, imap)| {
                match (&rec, quarantine) {
                    (Some(r), Some(_)) => {
                        quar.insert(&id.to_be_bytes(), r.as_slice())?;
                    }
                    (Some(r), None) => {
                        spool.insert(&id.to_be_bytes(), r.as_slice())?;
                    }
                    (None, _) => {}
                }
                let mut st = match imap.get(&sk)? {
                    Some(v) => decode::<ImapState>("imap", &v)
                        .map_err(ConflictableTransactionError::Abort)?,
                    None => ImapState {
                        uidvalidity: mark.uidvalidity,
                        last_uid: 0,
                    },
                };
                if st.uidvalidity != mark.uidvalidity {
                    st = ImapState {
                        uidvalidity: mark.uidvalidity,
                        last_uid: 0,
                    };
                }
                st.last_uid = st.last_uid.max(mark.uid);
                imap.insert(sk.as_slice(), encode(&st))?;
                if let Some(mid) = &mark.message_id {
                    imap.insert(imap_seen_key(&mark.account, mid), &mark.uid.to_be_bytes())?;
                }
                Ok(())
            })
            .map_err(tx_err)
    }

    // ---- requests, limits, events -------------------------------------------------------

    pub fn pending(&self, id: u64) -> Result<Option<Pending>> {
        self.pending
            .get(id.to_be_bytes())?
            .map(|v| decode("pending", &v))
            .transpose()
    }

    /// How many mails `addr` got in `bucket` since `since_ms`.
    pub fn rate_hits(&self, bucket: &str, addr: &str, since_ms: i64) -> Result<usize> {
        let Some(v) = self.ratelimit.get(rate_key(bucket, addr))? else {
            return Ok(0);
        };
        let hits: Vec<i64> = decode("ratelimit", &v)?;
        Ok(hits.iter().filter(|&&t| t >= since_ms).count())
    }

    /// The events waiting for a list's daily summary, with their ids.
    pub fn events(&self, list: &str) -> Result<Vec<(u64, MemberEvent)>> {
        let mut out = Vec::new();
        for kv in self.events.scan_prefix(list_prefix(list)) {
            let (k, v) = kv?;
            let id = k
                .len()
                .checked_sub(8)
                .and_then(|i| k[i..].try_into().ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            out.push((id, decode("events", &v)?));
        }
        Ok(out)
    }

    /// When the last daily summary of a list went out.
    pub fn last_summary_ms(&self, list: &str) -> Result<Option<i64>> {
        Ok(self
            .meta
            .get(summary_key(list))?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(i64::from_be_bytes))
    }

    /// Forgets confirmed or expired requests and rate-limit hits older than `before_ms`.
    pub fn purge(&self, before_ms: i64) -> Result<usize> {
        let mut n = 0;
        for kv in self.pending.iter() {
            let (k, v) = kv?;
            let p: Pending = decode("pending", &v)?;
            if p.expires_ms < before_ms {
                self.pending.remove(k)?;
                n += 1;
            }
        }
        for kv in self.ratelimit.iter() {
            let (k, v) = kv?;
            let hits: Vec<i64> = decode("ratelimit", &v)?;
            if hits.iter().all(|&t| t < before_ms) {
                self.ratelimit.remove(k)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Applies changes and queues mail in one transaction (no spooled message involved:
    /// the web endpoint and administrative commands).
    pub fn commit(&self, changes: Vec<Change>, mail: Vec<OutMail>) -> Result<()> {
        self.commit_inner(None, changes, mail)
    }

    fn commit_inner(
        &self,
        spool_id: Option<u64>,
        changes: Vec<Change>,
        mail: Vec<OutMail>,
    ) -> Result<()> {
        let recs = self.outmail_records(mail)?;
        // Ids for released posts and events, drawn before the transaction (which may rerun).
        let mut ids = Vec::new();
        for c in &changes {
            if matches!(c, Change::ReleaseHeld { .. } | Change::Event { .. }) {
                ids.push(self.next_id()?);
            }
        }
        let trees = [
            &self.spool,
            &self.members,
            &self.member_uid,
            &self.pending,
            &self.ratelimit,
            &self.held,
            &self.msgid,
            &self.outmail,
            &self.events,
            &self.meta,
        ];
        let r: std::result::Result<(), TransactionError<StoreError>> =
            trees.as_slice().transaction(|t| {
                let (spool, members, uids, pending, rate, held, msgid, out, events, meta) = (
                    &t[0], &t[1], &t[2], &t[3], &t[4], &t[5], &t[6], &t[7], &t[8], &t[9],
                );
                if let Some(id) = spool_id {
                    spool.remove(&id.to_be_bytes())?;
                }
                let mut ids = ids.iter();
                for c in &changes {
                    match c {
                        Change::AddMember { list, member } => {
                            let mk = member_key(list, &member.address);
                            if members.get(&mk)?.is_none() {
                                members.insert(mk.as_slice(), encode(member))?;
                                if member.uid != 0 {
                                    uids.insert(&member.uid.to_be_bytes(), mk.as_slice())?;
                                }
                            }
                        }
                        Change::RemoveMember { list, addr } => {
                            let mk = member_key(list, addr);
                            if let Some(v) = members.remove(mk.as_slice())? {
                                let m: Member = decode("members", &v)
                                    .map_err(ConflictableTransactionError::Abort)?;
                                if m.uid != 0 {
                                    uids.remove(&m.uid.to_be_bytes())?;
                                }
                            }
                        }
                        Change::UpdateMember { list, member } => {
                            let mk = member_key(list, &member.address);
                            if members.get(&mk)?.is_some() {
                                members.insert(mk.as_slice(), encode(member))?;
                            }
                        }
                        Change::PutPending { id, pending: p } => {
                            pending.insert(&id.to_be_bytes(), encode(p))?;
                        }
                        Change::UsePending { id, at_ms } => {
                            if let Some(v) = pending.get(id.to_be_bytes())? {
                                let mut p: Pending = decode("pending", &v)
                                    .map_err(ConflictableTransactionError::Abort)?;
                                p.used_ms = Some(*at_ms);
                                pending.insert(&id.to_be_bytes(), encode(&p))?;
                            }
                        }
                        Change::RateHit {
                            bucket,
                            addr,
                            at_ms,
                            since_ms,
                        } => {
                            let k = rate_key(bucket, addr);
                            let mut hits: Vec<i64> = match rate.get(&k)? {
                                Some(v) => decode("ratelimit", &v)
                                    .map_err(ConflictableTransactionError::Abort)?,
                                None => Vec::new(),
                            };
                            hits.retain(|&t| t >= *since_ms);
                            hits.push(*at_ms);
                            rate.insert(k.as_slice(), encode(&hits))?;
                        }
                        Change::ReleaseHeld { id } => {
                            let new_spool = ids.next().copied().unwrap_or(0);
                            let Some(v) = held.remove(&id.to_be_bytes())? else {
                                continue;
                            };
                            let (h, raw): (Held, &[u8]) = decode_head("held", &v)
                                .map_err(ConflictableTransactionError::Abort)?;
                            let mut env = h.envelope.clone();
                            env.approved = true;
                            msgid.remove(msgid_key(&h.list, &h.message_id))?;
                            spool.insert(&new_spool.to_be_bytes(), encode_with_raw(&env, raw))?;
                        }
                        Change::DiscardHeld { id } => {
                            held.remove(&id.to_be_bytes())?;
                        }
                        Change::Event { list, event } => {
                            let id = ids.next().copied().unwrap_or(0);
                            let mut k = list_prefix(list);
                            k.extend_from_slice(&id.to_be_bytes());
                            events.insert(k, encode(event))?;
                        }
                        Change::SummarySent { list, at_ms, .. } => {
                            meta.insert(summary_key(list), &at_ms.to_be_bytes())?;
                        }
                        Change::RequestForget { list, addr } => {
                            meta.insert(forget_key(list, addr), b"".as_slice())?;
                        }
                    }
                }
                for (k, v) in &recs {
                    out.insert(k, v.as_slice())?;
                }
                Ok(())
            });
        r.map_err(tx_err)?;
        // Summary events are removed outside the transaction (a TransactionalTree cannot
        // scan); a crash in between repeats them in the next summary, it loses none.
        for c in &changes {
            if let Change::SummarySent { list, upto, .. } = c {
                for kv in self.events.scan_prefix(list_prefix(list)).keys() {
                    let k = kv?;
                    let id = k
                        .len()
                        .checked_sub(8)
                        .and_then(|i| k[i..].try_into().ok())
                        .map(u64::from_be_bytes)
                        .unwrap_or(0);
                    if id <= *upto {
                        self.events.remove(k)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// One held post.
    pub fn held_one(&self, id: u64) -> Result<Option<Held>> {
        let Some(v) = self.held.get(id.to_be_bytes())? else {
            return Ok(None);
        };
        let (mut h, raw) = decode_with_raw::<Held>("held", &v)?;
        h.raw = raw;
        Ok(Some(h))
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

    /// Stores a post that is only archived, never distributed (`archive import-mbox`):
    /// posts, raw and msgid in one transaction, under the list's next seq. None when the
    /// Message-ID is already on the list.
    pub fn import_post(&self, mut meta: PostMeta, raw: &[u8]) -> Result<Option<u64>> {
        let mk = msgid_key(&meta.list, &meta.message_id);
        let seq_key = [b"seq\0".as_slice(), list_prefix(&meta.list).as_slice()].concat();
        meta.recipients = 0;
        let r = (&self.posts, &self.raw, &self.msgid, &self.meta).transaction(
            |(posts, rawt, msgid, metat)| {
                if msgid.get(&mk)?.is_some() {
                    return Ok(None);
                }
                let seq = insert_post(posts, rawt, msgid, metat, &meta, raw, &mk, &seq_key)?;
                Ok(Some(seq))
            },
        );
        r.map_err(tx_err)
    }

    /// The highest seq given out on a list (0 when none).
    pub fn last_seq(&self, list: &str) -> Result<u64> {
        let seq_key = [b"seq\0".as_slice(), list_prefix(list).as_slice()].concat();
        Ok(match self.meta.get(seq_key)? {
            Some(v) => {
                u64::from_be_bytes(v.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                    tree: "meta",
                    msg: "sequence counter is not 8 bytes".into(),
                })?)
            }
            None => 0,
        })
    }

    // ---- forgetting ----------------------------------------------------------------------

    /// Removes every trace of `addr` from `list`'s data (GDPR art. 17): the member record
    /// and its one-click id, pending requests, queued and failed deliveries, queued mail to
    /// the address, rate-limit counters, join/leave events, its held posts; in every stored
    /// post, digest, queued, held, quarantined and spooled mail the address (and `name`,
    /// when given) becomes `label_addr` / `label_name`, and its own posts get
    /// `label_name <label_addr>` as author, or are deleted with `delete_posts`. The
    /// archive's index is derived and must be rebuilt after. Deleted records stay in
    /// sled's log files until [`Store::compact`].
    pub fn forget(&self, list: &str, f: &Forget) -> Result<ForgetReport> {
        let mut r = ForgetReport::default();
        let addr_lc = f.addr.to_ascii_lowercase();
        let is = |a: &str| a.eq_ignore_ascii_case(&f.addr);
        r.member = self.remove_member(list, &f.addr)?;
        for kv in self.pending.iter() {
            let (k, v) = kv?;
            if decode::<Pending>("pending", &v).is_ok_and(|p| is(&p.address)) {
                self.pending.remove(k)?;
                r.records += 1;
            }
        }
        for tree in [&self.queue, &self.failures] {
            for k in tree.iter().keys() {
                let k = k?;
                if QueueKey::decode(&k).is_some_and(|q| is(&q.addr)) {
                    tree.remove(k)?;
                    r.records += 1;
                }
            }
        }
        for k in self.ratelimit.iter().keys() {
            let k = k?;
            if k.ends_with(addr_lc.as_bytes()) {
                self.ratelimit.remove(k)?;
                r.records += 1;
            }
        }
        for kv in self.events.iter() {
            let (k, v) = kv?;
            if decode::<MemberEvent>("events", &v).is_ok_and(|e| is(&e.address)) {
                self.events.remove(k)?;
                r.records += 1;
            }
        }
        // Mail waiting to go out: to the address, gone; about it, relabelled.
        for kv in self.outmail.iter() {
            let (k, v) = kv?;
            let (mut m, raw) = decode_with_raw::<OutMail>("outmail", &v)?;
            if m.kind == "forgotten" {
                // The last word to the member: that they are forgotten.
                continue;
            }
            if m.rcpts.iter().any(|a| is(a)) {
                self.outmail.remove(k)?;
                r.records += 1;
            } else if let Some(new) = f.relabel(&raw) {
                m.raw = Vec::new();
                self.outmail.insert(k, encode_with_raw(&m, &new))?;
                r.relabelled += 1;
            }
        }
        // Held posts from the address go; everything else that mentions it (others' held
        // posts, quarantined and spooled mail) is relabelled, never dropped.
        for kv in self.held.iter() {
            let (k, v) = kv?;
            let (h, _) = decode_with_raw::<Held>("held", &v)?;
            if is(&h.from_addr) {
                self.held.remove(k)?;
                r.records += 1;
            } else if let Some(new) = f.relabel_record(&v) {
                self.held.insert(k, new)?;
                r.relabelled += 1;
            }
        }
        for tree in [&self.quarantine, &self.spool] {
            for kv in tree.iter() {
                let (k, v) = kv?;
                if let Some(new) = f.relabel_record(&v) {
                    tree.insert(k, new)?;
                    r.relabelled += 1;
                }
            }
        }
        for kv in self.posts.scan_prefix(list_prefix(list)) {
            let (k, v) = kv?;
            let mut meta: PostMeta = decode("posts", &v)?;
            let own = is(&meta.from_addr);
            if own && f.delete_posts {
                self.posts.remove(&k)?;
                self.raw.remove(&k)?;
                self.msgid.remove(msgid_key(list, &meta.message_id))?;
                r.posts_deleted += 1;
                continue;
            }
            // Message-IDs made from an address (git send-email's `...git.jan@example.org`)
            // are relabelled like the copies of them in the raw messages, so that replies
            // still find their parents.
            let new_id = f
                .relabel(meta.message_id.as_bytes())
                .map(|b| String::from_utf8_lossy(&b).into_owned());
            if let Some(id) = &new_id {
                if let Some(v) = self.msgid.remove(msgid_key(list, &meta.message_id))? {
                    self.msgid.insert(msgid_key(list, id), v)?;
                }
                meta.message_id = id.clone();
            }
            if own {
                meta.from_addr = f.label_addr.clone();
                meta.from_name = Some(f.label_name.clone());
            }
            if own || new_id.is_some() {
                self.posts.insert(&k, encode(&meta))?;
            }
            if let Some(raw) = self.raw.get(&k)? {
                let new = if own {
                    Some(f.relabel_author(&raw))
                } else {
                    f.relabel_message(&raw)
                };
                if let Some(new) = new {
                    self.raw.insert(&k, new)?;
                    r.relabelled += 1;
                }
            }
        }
        for kv in self.digests.scan_prefix(list_prefix(list)) {
            let (k, v) = kv?;
            if k.last() != Some(&b'm') {
                if let Some(new) = f.relabel_message(&v) {
                    self.digests.insert(k, new)?;
                    r.relabelled += 1;
                }
            }
        }
        self.flush()?;
        Ok(r)
    }

    /// Forget requests confirmed by mail or on the web, not yet carried out: (list, addr).
    pub fn forget_requests(&self) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for k in self.meta.scan_prefix(b"forget\0").keys() {
            let k = k?;
            let rest = String::from_utf8_lossy(&k[b"forget\0".len()..]).into_owned();
            if let Some((l, a)) = rest.split_once('\0') {
                out.push((l.to_string(), a.to_string()));
            }
        }
        Ok(out)
    }

    pub fn forget_request_done(&self, list: &str, addr: &str) -> Result<()> {
        self.meta.remove(forget_key(list, addr))?;
        self.flush()
    }

    /// Rewrites the whole database into a fresh one and puts it in place of the old, so
    /// that nothing deleted survives in sled's log files (sled reclaims space only
    /// eventually). Needs the store closed by everyone else (the daemon stopped).
    pub fn compact(path: &Path) -> Result<()> {
        let tmp = path.with_extension("compact");
        let old = path.with_extension("old");
        let _ = std::fs::remove_dir_all(&tmp);
        let _ = std::fs::remove_dir_all(&old);
        {
            let from = Store::open(path)?;
            let to = sled::Config::new().path(&tmp).open()?;
            to.import(from.db.export());
            to.flush()?;
        }
        let io = |what: &str, e: std::io::Error| StoreError::Io(format!("compaction: {what}: {e}"));
        std::fs::rename(path, &old).map_err(|e| io("moving the old database aside", e))?;
        std::fs::rename(&tmp, path).map_err(|e| io("putting the new database in place", e))?;
        std::fs::remove_dir_all(&old).map_err(|e| io("removing the old database", e))?;
        Ok(())
    }

    // ---- digests -----------------------------------------------------------------------

    pub fn digest_state(&self, list: &str) -> Result<Option<DigestState>> {
        self.meta
            .get(digest_state_key(list))?
            .map(|v| decode("meta", &v))
            .transpose()
    }

    pub fn set_digest_state(&self, list: &str, st: &DigestState) -> Result<()> {
        self.meta.insert(digest_state_key(list), encode(st))?;
        Ok(())
    }

    /// Stores a digest (its MIME and plain forms), its queue rows and the list's new digest
    /// state in one transaction: a crash leaves either no digest (made again, with the same
    /// number, on restart) or one whose undelivered rows are sent on restart.
    pub fn create_digest(
        &self,
        st: &DigestState,
        meta: &DigestMeta,
        mime: &[u8],
        plain: &[u8],
        recipients: &[(String, bool)],
    ) -> Result<()> {
        let now = now_ms();
        let row = encode(&QueueRow {
            attempts: 0,
            first_ms: now,
            next_ms: now,
            last_error: None,
        });
        let base = post_key(&meta.list, meta.id);
        let keys = [
            [base.as_slice(), b"m"].concat(),
            [base.as_slice(), b"t"].concat(),
            [base.as_slice(), b"p"].concat(),
        ];
        let rows: Vec<Vec<u8>> = recipients
            .iter()
            .map(|(addr, plain)| {
                QueueKey {
                    list: meta.list.clone(),
                    seq: digest_queue_seq(meta.id, *plain),
                    addr: addr.clone(),
                }
                .encode()
            })
            .collect();
        let (st_key, st_val, m) = (digest_state_key(&meta.list), encode(st), encode(meta));
        (&self.meta, &self.digests, &self.queue)
            .transaction(|(mt, dt, qt)| {
                mt.insert(st_key.as_slice(), st_val.as_slice())?;
                dt.insert(keys[0].as_slice(), m.as_slice())?;
                dt.insert(keys[1].as_slice(), mime)?;
                dt.insert(keys[2].as_slice(), plain)?;
                for k in &rows {
                    qt.insert(k.as_slice(), row.as_slice())?;
                }
                Ok(())
            })
            .map_err(tx_err)
    }

    /// A stored digest's MIME (`plain = false`) or RFC 1153 form.
    pub fn digest_raw(&self, list: &str, id: u64, plain: bool) -> Result<Option<Vec<u8>>> {
        let k = [
            post_key(list, id).as_slice(),
            if plain { b"p" } else { b"t" },
        ]
        .concat();
        Ok(self.digests.get(k)?.map(|v| v.to_vec()))
    }

    pub fn digests(&self, list: &str) -> Result<Vec<DigestMeta>> {
        let mut out = Vec::new();
        for kv in self.digests.scan_prefix(list_prefix(list)) {
            let (k, v) = kv?;
            if k.last() == Some(&b'm') {
                out.push(decode("digests", &v)?);
            }
        }
        Ok(out)
    }

    // ---- archive index ---------------------------------------------------------------

    /// The last seq the archive has indexed and rendered.
    pub fn archived_upto(&self, list: &str) -> Result<u64> {
        let k = [b"archived\0".as_slice(), list_prefix(list).as_slice()].concat();
        Ok(match self.meta.get(k)? {
            Some(v) => u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8])),
            None => 0,
        })
    }

    pub fn set_archived_upto(&self, list: &str, seq: u64) -> Result<()> {
        let k = [b"archived\0".as_slice(), list_prefix(list).as_slice()].concat();
        self.meta.insert(k, &seq.to_be_bytes())?;
        Ok(())
    }

    pub fn arch_msg(&self, list: &str, seq: u64) -> Result<Option<ArchMsg>> {
        self.arch_msg
            .get(post_key(list, seq))?
            .map(|v| decode("arch_msg", &v))
            .transpose()
    }

    pub fn arch_thread(&self, list: &str, id: u64) -> Result<Option<ArchThread>> {
        self.arch_thread
            .get(post_key(list, id))?
            .map(|v| decode("arch_thread", &v))
            .transpose()
    }

    /// The thread an id (of a post, or only referenced) belongs to.
    pub fn arch_id(&self, list: &str, message_id: &str) -> Result<Option<u64>> {
        Ok(self
            .arch_id
            .get(msgid_key(list, message_id))?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes)))
    }

    pub fn arch_subject(&self, list: &str, base: &str) -> Result<Option<u64>> {
        Ok(self
            .arch_subj
            .get(msgid_key(list, base))?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes)))
    }

    /// Threads, newest first (by id, i.e. by the seq that started them).
    pub fn arch_threads_rev(&self, list: &str) -> impl Iterator<Item = Result<ArchThread>> {
        self.arch_thread
            .scan_prefix(list_prefix(list))
            .values()
            .rev()
            .map(|v| decode("arch_thread", &v?))
    }

    /// Every month with its threads: (month, [(thread, messages in that month)]), oldest first.
    pub fn arch_months(&self, list: &str) -> Result<Vec<MonthThreads>> {
        let p = list_prefix(list);
        let mut out: Vec<(String, Vec<(u64, u32)>)> = Vec::new();
        for kv in self.arch_month.scan_prefix(&p) {
            let (k, v) = kv?;
            let rest = &k[p.len()..];
            if rest.len() < 9 {
                continue;
            }
            let month = String::from_utf8_lossy(&rest[..rest.len() - 9]).into_owned();
            let t = u64::from_be_bytes(rest[rest.len() - 8..].try_into().unwrap_or([0; 8]));
            let n = u32::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 4]));
            match out.last_mut() {
                Some((m, ts)) if *m == month => ts.push((t, n)),
                _ => out.push((month, vec![(t, n)])),
            }
        }
        Ok(out)
    }

    /// How many messages of one thread are in one month.
    pub fn arch_month_count(&self, list: &str, month: &str, thread: u64) -> Result<u32> {
        let mut k = list_prefix(list);
        k.extend_from_slice(month.as_bytes());
        k.push(0);
        k.extend_from_slice(&thread.to_be_bytes());
        Ok(match self.arch_month.get(k)? {
            Some(v) => u32::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 4])),
            None => 0,
        })
    }

    /// The threads of one month with their message counts in it.
    pub fn arch_month(&self, list: &str, month: &str) -> Result<Vec<(u64, u32)>> {
        let mut p = list_prefix(list);
        p.extend_from_slice(month.as_bytes());
        p.push(0);
        let mut out = Vec::new();
        for kv in self.arch_month.scan_prefix(&p) {
            let (k, v) = kv?;
            let rest = &k[p.len()..];
            if let (Ok(t), Ok(n)) = (<[u8; 8]>::try_from(rest), <[u8; 4]>::try_from(v.as_ref())) {
                out.push((u64::from_be_bytes(t), u32::from_be_bytes(n)));
            }
        }
        Ok(out)
    }

    /// Writes index changes (of one post, or of a batch of posts) in one transaction.
    pub fn arch_write(&self, list: &str, w: &ArchWrite) -> Result<()> {
        let msgs: Vec<(Vec<u8>, Vec<u8>)> = w
            .msgs
            .iter()
            .map(|m| (post_key(list, m.seq), encode(m)))
            .collect();
        let threads: Vec<(Vec<u8>, Vec<u8>)> = w
            .threads
            .iter()
            .map(|t| (post_key(list, t.id), encode(t)))
            .collect();
        let ids: Vec<(Vec<u8>, [u8; 8])> = w
            .ids
            .iter()
            .map(|(id, t)| (msgid_key(list, id), t.to_be_bytes()))
            .collect();
        let months: Vec<(Vec<u8>, u32)> = w
            .months
            .iter()
            .map(|(m, t, n)| {
                let mut k = list_prefix(list);
                k.extend_from_slice(m.as_bytes());
                k.push(0);
                k.extend_from_slice(&t.to_be_bytes());
                (k, *n)
            })
            .collect();
        let subj: Vec<(Vec<u8>, [u8; 8])> = w
            .subjects
            .iter()
            .map(|(b, t)| (msgid_key(list, b), t.to_be_bytes()))
            .collect();
        (
            &self.arch_msg,
            &self.arch_thread,
            &self.arch_id,
            &self.arch_subj,
            &self.arch_month,
        )
            .transaction(|(am, at, ai, asj, amo)| {
                for (k, v) in &msgs {
                    am.insert(k.as_slice(), v.as_slice())?;
                }
                for (k, v) in &threads {
                    at.insert(k.as_slice(), v.as_slice())?;
                }
                for (k, v) in &ids {
                    ai.insert(k.as_slice(), v)?;
                }
                for (k, v) in &subj {
                    asj.insert(k.as_slice(), v)?;
                }
                for (k, n) in &months {
                    if *n == 0 {
                        amo.remove(k.as_slice())?;
                    } else {
                        amo.insert(k.as_slice(), &n.to_be_bytes())?;
                    }
                }
                Ok(())
            })
            .map_err(tx_err)
    }

    /// Forgets a list's archive index (for `archive rebuild`).
    pub fn arch_clear(&self, list: &str) -> Result<()> {
        let p = list_prefix(list);
        for t in [
            &self.arch_msg,
            &self.arch_thread,
            &self.arch_id,
            &self.arch_subj,
            &self.arch_month,
        ] {
            let keys: Vec<sled::IVec> = t.scan_prefix(&p).keys().collect::<sled::Result<_>>()?;
            let mut b = sled::Batch::default();
            for k in keys {
                b.remove(k);
            }
            t.apply_batch(b)?;
        }
        self.set_archived_upto(list, 0)
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
    /// Records delivery results; `reports` (delivery reports for refused recipients) are
    /// spooled in the same transaction, so a refusal is scored exactly once.
    pub fn record_results(
        &self,
        results: &[(QueueKey, DeliveryResult)],
        reports: &[(Envelope, Vec<u8>)],
    ) -> Result<()> {
        let mut q = sled::Batch::default();
        let mut f = sled::Batch::default();
        let mut sp = sled::Batch::default();
        for (env, raw) in reports {
            sp.insert(&self.next_id()?.to_be_bytes(), encode_with_raw(env, raw));
        }
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
        (&self.queue, &self.failures, &self.spool)
            .transaction(|(qt, ft, st)| {
                qt.apply_batch(&q)?;
                ft.apply_batch(&f)?;
                st.apply_batch(&sp)?;
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
        )
        .unwrap();
        assert_eq!(s.pending_for_post(l, 1).unwrap(), 0);
        assert_eq!(s.failures_for_post(l, 1).unwrap(), 1);
    }

    #[test]
    fn forget_relabels_records_and_keeps_them_readable() {
        let f = Forget {
            addr: "Jan@Ocmw.be".into(),
            name: Some("Jan Peeters".into()),
            label_addr: "forgotten-member@invalid".into(),
            label_name: "Former member".into(),
            delete_posts: false,
        };
        let env = Envelope {
            mail_from: "jan@ocmw.be".into(),
            rcpt: "forum@x.org".into(),
            source: "smtp".into(),
            received_ms: 1,
            approved: false,
        };
        let rec = encode_with_raw(
            &env,
            b"From: Jan Peeters <JAN@ocmw.be>\r\n\r\nhoi jan@ocmw.be\r\n",
        );
        let new = f.relabel_record(&rec).unwrap();
        let (e, raw) = decode_with_raw::<Envelope>("spool", &new).unwrap();
        assert_eq!(e.mail_from, "forgotten-member@invalid");
        assert_eq!(
            raw,
            b"From: Former member <forgotten-member@invalid>\r\n\r\nhoi forgotten-member@invalid\r\n"
        );
        assert!(f
            .relabel_record(&encode_with_raw(&env.clone(), b"x"))
            .is_some());
        let other = Envelope {
            mail_from: "an@ocmw.be".into(),
            ..env
        };
        assert!(f
            .relabel_record(&encode_with_raw(&other, b"nothing here"))
            .is_none());
    }

    #[test]
    fn forget_relabels_encoded_parts() {
        use base64::Engine;
        let f = Forget {
            addr: "jan@ocmw.be".into(),
            name: None,
            label_addr: "forgotten-member@invalid".into(),
            label_name: "Former member".into(),
            delete_posts: false,
        };
        let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
        let raw = format!(
            "From: an@x.be\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n\
--B\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n\
--B\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--B--\r\n",
            b64("Vraag van Jan@ocmw.be over leefloon".as_bytes()),
            b64(b"\x00\x01bin jan@ocmw.be bin\xff"),
        );
        let out = f.relabel_message(raw.as_bytes()).unwrap();
        let m = mail_parser::MessageParser::default().parse(&out).unwrap();
        assert_eq!(
            m.body_text(0).unwrap(),
            "Vraag van forgotten-member@invalid over leefloon"
        );
        let att = m.attachment(0).unwrap().contents();
        assert_eq!(att, b"\x00\x01bin xxx@xxxxxxx bin\xff");
        assert!(f
            .relabel_message(b"From: an@x.be\r\n\r\nniets\r\n")
            .is_none());
    }

    #[test]
    fn members_are_case_insensitive() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).unwrap();
        let m = Member::new("Jan.Peeters@Example.ORG".into(), Some("Jan".into()), 77);
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
