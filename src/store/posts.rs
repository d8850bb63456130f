//! Posts (metadata and raw bytes), their Message-IDs, and held posts.

use super::*;

/// Takes the list's next post number inside a transaction.
pub(super) fn next_seq(
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
pub(super) fn insert_post(
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Held {
    pub list: String,
    pub id: u64,
    pub reason: String,
    pub message_id: String,
    pub from_addr: String,
    pub subject: String,
    pub envelope: Envelope,
    /// Waits for its poster, not for a moderator (`pii_posts = "hold"`): the owners are
    /// not shown its content.
    #[serde(default)]
    pub poster_confirms: bool,
    /// The owners had a notice of it of its own; otherwise the next hourly summary of held
    /// posts names it. (Posts held before summaries existed were all notified.)
    #[serde(default = "notified_before")]
    pub notified: bool,
    #[serde(skip)]
    pub raw: Vec<u8>,
}

fn notified_before() -> bool {
    true
}

impl Store {
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

    /// Every held post without its bytes (`raw` empty): for listings and counts, which
    /// must not copy every held message.
    pub fn held_heads(&self) -> Result<Vec<Held>> {
        self.held
            .iter()
            .values()
            .map(|v| Ok(decode_head::<Held>("held", &v?)?.0))
            .collect()
    }

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
}
