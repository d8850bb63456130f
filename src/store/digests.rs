//! Digests: each list's digest state and the stored digests.

use super::*;

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
    /// A digest of the same issue without the threads its members muted: the id of the
    /// issue's first digest (see `digest::run`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant_of: Option<u64>,
}

/// One digest to store with [`Store::create_digests`].
#[derive(Debug, Clone)]
pub struct NewDigest {
    pub meta: DigestMeta,
    pub mime: Vec<u8>,
    pub plain: Vec<u8>,
    /// (address, wants the plain form).
    pub recipients: Vec<(String, bool)>,
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

pub(super) fn digest_state_key(list: &str) -> Vec<u8> {
    [b"digest\0".as_slice(), list_prefix(list).as_slice()].concat()
}

impl Store {
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
        self.create_digests(
            st,
            &[NewDigest {
                meta: meta.clone(),
                mime: mime.to_vec(),
                plain: plain.to_vec(),
                recipients: recipients.to_vec(),
            }],
        )
    }

    /// [`Store::create_digest`] for the digests of one issue (one per set of muted threads
    /// among its members), all in one transaction with the list's new digest state.
    pub fn create_digests(&self, st: &DigestState, digests: &[NewDigest]) -> Result<()> {
        let now = now_ms();
        let Some(first) = digests.first() else {
            return Ok(());
        };
        struct Rec<'a> {
            keys: [Vec<u8>; 3],
            meta: Vec<u8>,
            d: &'a NewDigest,
            // Two queue seqs: one per form of the digest.
            by_form: [Vec<String>; 2],
        }
        let recs: Vec<Rec> = digests
            .iter()
            .map(|d| {
                let base = post_key(&d.meta.list, d.meta.id);
                let mut by_form: [Vec<String>; 2] = [Vec::new(), Vec::new()];
                for (addr, plain) in &d.recipients {
                    by_form[usize::from(*plain)].push(addr.clone());
                }
                Rec {
                    keys: [
                        [base.as_slice(), b"m"].concat(),
                        [base.as_slice(), b"t"].concat(),
                        [base.as_slice(), b"p"].concat(),
                    ],
                    meta: encode(&d.meta),
                    d,
                    by_form,
                }
            })
            .collect();
        let (st_key, st_val) = (digest_state_key(&first.meta.list), encode(st));
        (
            &self.meta,
            &self.digests,
            &self.queue,
            &self.queue_due,
            &self.fanout,
        )
            .transaction(|(mt, dt, qt, due, plan)| {
                mt.insert(st_key.as_slice(), st_val.as_slice())?;
                for r in &recs {
                    dt.insert(r.keys[0].as_slice(), r.meta.as_slice())?;
                    dt.insert(r.keys[1].as_slice(), r.d.mime.as_slice())?;
                    dt.insert(r.keys[2].as_slice(), r.d.plain.as_slice())?;
                    for (plain, addrs) in [false, true].into_iter().zip(&r.by_form) {
                        let seq = digest_queue_seq(r.d.meta.id, plain);
                        let list = &r.d.meta.list;
                        fanout::queue_recipients(qt, due, plan, list, seq, addrs, now)?;
                    }
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
}
