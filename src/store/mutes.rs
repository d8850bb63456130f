//! Muted threads: which thread each post belongs to, and who muted which thread.
//!
//! A thread is named by its root Message-ID (normalized, without angle brackets), and in
//! keys and tokens by [`thread_id`] of it. Where a post belongs is decided when the post is
//! accepted, from its own index (`thread_of`), not from the archive's: the archive threads
//! after the post is stored (and may be off), and merges threads later, which would change
//! a thread's id under a member's mute. A post's thread is the thread of its nearest
//! ancestor we stored (In-Reply-To first, then References from the newest), else the
//! thread of the oldest id it references (a thread that started off the list), else a new
//! thread of its own. It is written with the post, in the transaction that accepts it, and
//! never changes afterwards; `archive rebuild --reindex` does not touch it.
//!
//! A reply is left out for a member who muted any thread its References reach (a reply
//! that joins two threads is muted by a mute on either).

use super::*;
use crate::tokens::thread_id;

/// A thread as the mutes see it (`threads` tree).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ThreadInfo {
    /// The root Message-ID, normalized.
    pub root: String,
    /// The subject of the first post we stored in it.
    pub subject: String,
}

/// Where a new post goes: decided before it is accepted, written with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadPlace {
    /// The post's own Message-ID, normalized.
    pub message_id: String,
    /// Its thread.
    pub thread: u64,
    /// The thread's root Message-ID.
    pub root: String,
    /// Every thread the post's References reach (its own included, first).
    pub reaches: Vec<u64>,
}

/// One member's mute of one thread (`mutes` tree).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Mute {
    pub at_ms: i64,
}

fn thread_key(list: &str, thread: u64) -> Vec<u8> {
    let mut k = list_prefix(list);
    k.extend_from_slice(&thread.to_be_bytes());
    k
}

fn mute_key(list: &str, thread: u64, addr: &str) -> Vec<u8> {
    let mut k = thread_key(list, thread);
    k.extend_from_slice(addr.to_lowercase().as_bytes());
    k
}

/// Writes a post's place inside the transaction that accepts it.
pub(super) fn write_place(
    thread_of: &sled::transaction::TransactionalTree,
    threads: &sled::transaction::TransactionalTree,
    list: &str,
    place: &ThreadPlace,
    subject: &str,
) -> std::result::Result<(), ConflictableTransactionError<StoreError>> {
    if place.message_id.is_empty() {
        return Ok(());
    }
    thread_of.insert(
        msgid_key(list, &place.message_id),
        &place.thread.to_be_bytes(),
    )?;
    let tk = thread_key(list, place.thread);
    if threads.get(&tk)?.is_none() {
        let info = ThreadInfo {
            root: place.root.clone(),
            subject: subject.to_string(),
        };
        threads.insert(tk, encode(&info))?;
    }
    Ok(())
}

/// Inside a commit: mutes `thread` for a member (nothing when it is not a member).
pub(super) fn mute(
    members: &sled::transaction::TransactionalTree,
    mutes: &sled::transaction::TransactionalTree,
    list: &str,
    addr: &str,
    thread: u64,
    at_ms: i64,
) -> std::result::Result<(), ConflictableTransactionError<StoreError>> {
    if members.get(member_key(list, addr))?.is_none() {
        return Ok(());
    }
    let k = mute_key(list, thread, addr);
    if mutes.get(&k)?.is_none() {
        mutes.insert(k, encode(&Mute { at_ms }))?;
    }
    Ok(())
}

pub(super) fn unmute(
    mutes: &sled::transaction::TransactionalTree,
    list: &str,
    addr: &str,
    thread: u64,
) -> std::result::Result<(), ConflictableTransactionError<StoreError>> {
    mutes.remove(mute_key(list, thread, addr))?;
    Ok(())
}

impl Store {
    /// The thread of a stored post (or of one whose place was decided), by Message-ID.
    pub fn thread_of(&self, list: &str, message_id: &str) -> Result<Option<u64>> {
        let id = crate::threading::normalize_id(message_id);
        Ok(self
            .thread_of
            .get(msgid_key(list, &id))?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes)))
    }

    pub fn thread_info(&self, list: &str, thread: u64) -> Result<Option<ThreadInfo>> {
        self.threads
            .get(thread_key(list, thread))?
            .map(|v| decode("threads", &v))
            .transpose()
    }

    /// The thread that a message with Message-ID `own` and parent ids `refs` (oldest
    /// first, In-Reply-To last: [`crate::threading::references`]) belongs to.
    pub fn place_in_thread(&self, list: &str, own: &str, refs: &[String]) -> Result<ThreadPlace> {
        let own = crate::threading::normalize_id(own);
        let mut reaches = Vec::new();
        // Placed before (the same post again): it keeps its place.
        let mut nearest = if own.is_empty() {
            None
        } else {
            self.thread_of(list, &own)?
        };
        for r in refs.iter().rev() {
            if let Some(t) = self.thread_of(list, r)? {
                nearest.get_or_insert(t);
                if !reaches.contains(&t) {
                    reaches.push(t);
                }
            }
        }
        let (thread, root) = match nearest {
            Some(t) => {
                let root = match self.thread_info(list, t)? {
                    Some(i) => i.root,
                    None => refs.first().cloned().unwrap_or_else(|| own.clone()),
                };
                (t, root)
            }
            None => {
                let root = refs.first().cloned().unwrap_or_else(|| own.clone());
                (thread_id(list, &root), root)
            }
        };
        reaches.retain(|t| *t != thread);
        reaches.insert(0, thread);
        Ok(ThreadPlace {
            message_id: own,
            thread,
            root,
            reaches,
        })
    }

    /// The members who muted `thread` (addresses as lower-cased in the key).
    pub fn muted_by(&self, list: &str, thread: u64) -> Result<Vec<String>> {
        let p = thread_key(list, thread);
        let mut out = Vec::new();
        for k in self.mutes.scan_prefix(&p).keys() {
            let k = k?;
            out.push(String::from_utf8_lossy(&k[p.len()..]).into_owned());
        }
        Ok(out)
    }

    /// Whether `addr` muted `thread`.
    pub fn is_muted(&self, list: &str, thread: u64, addr: &str) -> Result<bool> {
        Ok(self.mutes.contains_key(mute_key(list, thread, addr))?)
    }

    /// Every mute of a list: (thread, lower-cased address).
    pub fn list_mutes(&self, list: &str) -> Result<Vec<(u64, String)>> {
        let p = list_prefix(list);
        let mut out = Vec::new();
        for k in self.mutes.scan_prefix(&p).keys() {
            let k = k?;
            let rest = &k[p.len()..];
            if rest.len() > 8 {
                let t = u64::from_be_bytes(rest[..8].try_into().unwrap_or([0; 8]));
                out.push((t, String::from_utf8_lossy(&rest[8..]).into_owned()));
            }
        }
        Ok(out)
    }

    /// The threads `addr` muted on `list`.
    pub fn mutes_of(&self, list: &str, addr: &str) -> Result<Vec<u64>> {
        let addr = addr.to_lowercase();
        Ok(self
            .list_mutes(list)?
            .into_iter()
            .filter(|(_, a)| *a == addr)
            .map(|(t, _)| t)
            .collect())
    }

    /// Removes every mute of `addr` on `list` (forgetting); returns how many.
    pub(super) fn remove_mutes_of(&self, list: &str, addr: &str) -> Result<usize> {
        let mut n = 0;
        for t in self.mutes_of(list, addr)? {
            if self.mutes.remove(mute_key(list, t, addr))?.is_some() {
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: &str = "forum@lists.example.org";

    fn place(s: &Store, own: &str, refs: &[&str], subject: &str) -> ThreadPlace {
        let refs: Vec<String> = refs.iter().map(|r| r.to_string()).collect();
        let p = s.place_in_thread(L, own, &refs).unwrap();
        (&s.thread_of, &s.threads)
            .transaction(|(a, b)| write_place(a, b, L, &p, subject))
            .map_err(tx_err)
            .unwrap();
        p
    }

    #[test]
    fn replies_find_their_thread() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).unwrap();
        let q = place(&s, "<q@x>", &[], "Vraag");
        assert_eq!(q.root, "q@x");
        assert_eq!(q.thread, thread_id(L, "q@x"));
        assert_eq!(q.reaches, [q.thread]);
        // A reply by In-Reply-To only, one by References, a reply to a reply.
        let a = place(&s, "a@x", &["q@x"], "Re: Vraag");
        let b = place(&s, "b@x", &["q@x", "a@x"], "Re: Vraag");
        let c = place(&s, "c@x", &["a@x"], "Re: Vraag");
        for p in [&a, &b, &c] {
            assert_eq!((p.thread, p.root.as_str()), (q.thread, "q@x"));
        }
        assert_eq!(s.thread_of(L, "<c@x>").unwrap(), Some(q.thread));
        assert_eq!(
            s.thread_info(L, q.thread).unwrap().unwrap().subject,
            "Vraag"
        );
        // References whose root was never on the list (a reply that was sent to a
        // colleague first and then to the list), and replies to those.
        let f = place(&s, "f@x", &["elders@y", "tussen@y"], "Re: Elders");
        assert_eq!(f.root, "elders@y");
        let g = place(&s, "g@x", &["elders@y"], "Re: Elders");
        assert_eq!(g.thread, f.thread);
        // A new question is a new thread, even with the same subject.
        let n = place(&s, "n@x", &[], "Vraag");
        assert_ne!(n.thread, q.thread);
        // A reply joining two threads belongs to its parent's and reaches both.
        let j = place(&s, "j@x", &["q@x", "n@x"], "Re: Vraag");
        assert_eq!(j.thread, n.thread);
        assert_eq!(j.reaches, [n.thread, q.thread]);
        // The same post placed again keeps its place.
        assert_eq!(place(&s, "j@x", &[], "x").thread, n.thread);
    }

    #[test]
    fn mutes_are_per_member_and_thread() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).unwrap();
        s.add_member(L, &Member::new("An@Ocmw.be".into(), None, |_| 5))
            .unwrap();
        let mute = |addr: &str, t: u64| {
            s.commit(
                vec![Change::Mute {
                    list: L.into(),
                    addr: addr.into(),
                    thread: t,
                    at_ms: 1,
                }],
                vec![],
            )
            .unwrap()
        };
        mute("an@ocmw.be", 7);
        // Not a member: nothing.
        mute("piet@ocmw.be", 7);
        assert_eq!(s.muted_by(L, 7).unwrap(), ["an@ocmw.be"]);
        assert!(s.is_muted(L, 7, "AN@ocmw.be").unwrap());
        assert!(!s.is_muted(L, 8, "an@ocmw.be").unwrap());
        assert!(s.muted_by("other@x", 7).unwrap().is_empty());
        assert_eq!(s.mutes_of(L, "an@ocmw.be").unwrap(), [7]);
        s.commit(
            vec![Change::Unmute {
                list: L.into(),
                addr: "An@ocmw.be".into(),
                thread: 7,
            }],
            vec![],
        )
        .unwrap();
        assert!(s.muted_by(L, 7).unwrap().is_empty());
        mute("an@ocmw.be", 9);
        assert_eq!(s.remove_mutes_of(L, "an@ocmw.be").unwrap(), 1);
        assert!(s.list_mutes(L).unwrap().is_empty());
    }
}
