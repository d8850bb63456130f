//! The archive's thread index (derived: `archive rebuild` clears and recomputes it).

use super::*;

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
    /// This post marks its thread solved or reopened, by the asker or an owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qa: Option<PostMark>,
}

/// A post that marks its thread: solved (with the answer it replies to, unless that is the
/// question) or reopened.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PostMark {
    pub solved: bool,
    pub accepted: Option<u64>,
}

/// A question's solved state, part of the thread index.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Solved {
    /// The accepted answer's seq; none when the question was marked solved as such.
    pub accepted: Option<u64>,
    pub at_ms: i64,
    pub by_owner: bool,
}

/// An owner's `opgelost`/`heropend` command for a thread: durable (not part of the derived
/// index, which `archive rebuild --reindex` clears), folded into the state by time.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QaOwnerMark {
    pub at_ms: i64,
    pub solved: bool,
    pub accepted: Option<u64>,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solved: Option<Solved>,
    /// When the first answer came (the earliest message after the question).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_answer_ms: Option<i64>,
    /// The question's tags (`#leefloon` in its subject, and the list's keyword tags).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The question's own words (subject, then its text without quotes and signature),
    /// folded, stopwords left out: what similar questions are found by.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_terms: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub body_terms: Vec<String>,
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

impl Store {
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

    /// The live (not merged) thread just before (`later` false) or after `id`, in the
    /// order threads started: a thread page's previous and next links.
    pub fn arch_thread_beside(
        &self,
        list: &str,
        id: u64,
        later: bool,
    ) -> Result<Option<ArchThread>> {
        let p = list_prefix(list);
        let here = post_key(list, id);
        let mut range = if later {
            let mut from = here;
            from.push(0);
            self.arch_thread.range(from..)
        } else {
            self.arch_thread.range(p.clone()..here)
        };
        loop {
            let next = if later {
                range.next()
            } else {
                range.next_back()
            };
            let Some(kv) = next else {
                return Ok(None);
            };
            let (k, v) = kv?;
            if !k.starts_with(&p) {
                return Ok(None);
            }
            let t: ArchThread = decode("arch_thread", &v)?;
            if t.merged_into.is_none() && !t.seqs.is_empty() {
                return Ok(Some(t));
            }
        }
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
    /// An owner's mark for a thread, kept with the others; the thread is noted for the
    /// archive writer to settle and render again.
    pub fn add_qa_owner_mark(&self, list: &str, thread: u64, mark: QaOwnerMark) -> Result<()> {
        self.meta
            .transaction(|mt| qa_owner_mark_in(mt, list, thread, &mark))
            .map_err(tx_err)?;
        self.flush()
    }

    pub fn qa_owner_marks(&self, list: &str, thread: u64) -> Result<Vec<QaOwnerMark>> {
        match self.meta.get(qa_key(b"qa\0", list, thread))? {
            Some(v) => decode("meta", &v),
            None => Ok(Vec::new()),
        }
    }

    /// Threads with an owner mark the archive has not settled yet.
    pub fn qa_dirty(&self, list: &str) -> Result<Vec<u64>> {
        let p = [b"qadirty\0".as_slice(), &list_prefix(list)].concat();
        let mut out = Vec::new();
        for k in self.meta.scan_prefix(&p).keys() {
            let k = k?;
            if let Some(b) = k.get(p.len()..).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
                out.push(u64::from_be_bytes(b));
            }
        }
        Ok(out)
    }

    pub fn qa_settled(&self, list: &str, thread: u64) -> Result<()> {
        self.meta.remove(qa_key(b"qadirty\0", list, thread))?;
        Ok(())
    }

    /// Stores one thread of the index as it is now (after its state was settled).
    pub fn arch_put_thread(&self, list: &str, t: &ArchThread) -> Result<()> {
        self.arch_thread.insert(post_key(list, t.id), encode(t))?;
        Ok(())
    }

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
}

fn qa_key(prefix: &[u8], list: &str, thread: u64) -> Vec<u8> {
    [prefix, &list_prefix(list), &thread.to_be_bytes()].concat()
}

/// Inside a transaction on `meta`: adds an owner's mark to the thread's and notes the
/// thread for the archive writer.
pub(super) fn qa_owner_mark_in(
    mt: &sled::transaction::TransactionalTree,
    list: &str,
    thread: u64,
    mark: &QaOwnerMark,
) -> std::result::Result<(), ConflictableTransactionError<StoreError>> {
    let k = qa_key(b"qa\0", list, thread);
    let mut marks: Vec<QaOwnerMark> = match mt.get(&k)? {
        Some(v) => decode("meta", &v).map_err(ConflictableTransactionError::Abort)?,
        None => Vec::new(),
    };
    marks.push(mark.clone());
    mt.insert(k.as_slice(), encode(&marks))?;
    mt.insert(
        qa_key(b"qadirty\0", list, thread).as_slice(),
        b"".as_slice(),
    )?;
    Ok(())
}
