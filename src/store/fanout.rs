//! Fan-out plans: the recipients of a post (or a digest) that are not queue rows yet.
//!
//! Accepting a post to 100,000 members as 200,000 queue and index rows in one sled
//! transaction held every write of that transaction in memory (measured: RSS from 186 MB to
//! 1.1 GB before the first copy left) and made every delivery pass slower while the queue
//! was large. Instead, the accepting transaction writes the first [`CHUNK`] recipients as
//! queue rows and the rest as plan chunks of [`CHUNK`] addresses, one record each; the
//! dispatcher turns chunks into rows ([`Store::materialise`]) as the due queue runs short,
//! each chunk in one transaction (removed with its rows inserted), so a crash never loses or
//! doubles a recipient and the memory a fan-out takes is bounded by the chunk, not the list.
//!
//! Tree `fanout`: `<list>\0<seq><chunk u32>` → `<u32 count><i64 first_ms><json [addr]>`.
//! `seq` is the queue's (a digest's carries its flag bits), so a chunk's rows are
//! `<list>\0<seq>\0<addr>` like any other.

use super::*;
use sled::transaction::{TransactionalTree, UnabortableTransactionError};

/// Recipients per plan chunk, and queued at once when a post is accepted.
pub(super) const CHUNK: usize = 1024;

fn plan_key(list: &str, seq: u64, chunk: u32) -> Vec<u8> {
    let mut k = post_key(list, seq);
    k.extend_from_slice(&chunk.to_be_bytes());
    k
}

/// The list and queue seq of a plan key.
fn decode_plan_key(k: &[u8]) -> Option<(String, u64)> {
    let z = k.iter().position(|&b| b == 0)?;
    let list = std::str::from_utf8(&k[..z]).ok()?.to_string();
    let seq = u64::from_be_bytes(k.get(z + 1..z + 9)?.try_into().ok()?);
    Some((list, seq))
}

fn encode_chunk(first_ms: i64, addrs: &[String]) -> Vec<u8> {
    let json = encode(&addrs);
    let mut v = Vec::with_capacity(12 + json.len());
    v.extend_from_slice(&(addrs.len() as u32).to_be_bytes());
    v.extend_from_slice(&first_ms.to_be_bytes());
    v.extend_from_slice(&json);
    v
}

/// How many recipients a chunk holds, without decoding it.
fn chunk_len(v: &[u8]) -> usize {
    v.get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, |b| u32::from_be_bytes(b) as usize)
}

fn decode_chunk(v: &[u8]) -> Result<(i64, Vec<String>)> {
    let corrupt = |msg: &str| StoreError::Corrupt {
        tree: "fanout",
        msg: msg.into(),
    };
    let first_ms = v
        .get(4..12)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(i64::from_be_bytes)
        .ok_or_else(|| corrupt("chunk shorter than its header"))?;
    let addrs: Vec<String> = decode("fanout", v.get(12..).unwrap_or_default())?;
    Ok((first_ms, addrs))
}

fn row_for(first_ms: i64, next_ms: i64) -> Vec<u8> {
    encode(&QueueRow {
        attempts: 0,
        first_ms,
        next_ms,
        last_error: None,
    })
}

/// Inside a transaction: one queue row for `addr`, with its entry in the due index. The
/// address as the member gave it: a local part may be case-sensitive (RFC 5321 2.4);
/// members are unique ignoring case.
fn insert_row(
    queue: &TransactionalTree,
    due: &TransactionalTree,
    list: &str,
    seq: u64,
    addr: &str,
    now: i64,
    row: &[u8],
) -> std::result::Result<(), UnabortableTransactionError> {
    let k = QueueKey {
        list: list.to_string(),
        seq,
        addr: addr.to_string(),
    }
    .encode();
    due.insert(due_key(now, &k), b"".as_slice())?;
    queue.insert(k, row)?;
    Ok(())
}

/// Inside a transaction: queues `addrs` for `(list, seq)` due at `now`, the first
/// [`CHUNK`] as rows and the rest as plan chunks.
pub(super) fn queue_recipients(
    queue: &TransactionalTree,
    due: &TransactionalTree,
    plan: &TransactionalTree,
    list: &str,
    seq: u64,
    addrs: &[String],
    now: i64,
) -> std::result::Result<(), UnabortableTransactionError> {
    let row = row_for(now, now);
    let (first, rest) = addrs.split_at(addrs.len().min(CHUNK));
    for addr in first {
        insert_row(queue, due, list, seq, addr, now, &row)?;
    }
    for (n, chunk) in rest.chunks(CHUNK).enumerate() {
        plan.insert(
            plan_key(list, seq, n as u32),
            encode_chunk(now, chunk).as_slice(),
        )?;
    }
    Ok(())
}

impl Store {
    /// Turns plan chunks into queue rows, oldest post first, until at least `want` rows
    /// were added or no chunk is left; returns how many were added. Each chunk moves in one
    /// transaction, so running this twice at once (or crashing in it) adds every row once.
    pub fn materialise(&self, want: usize) -> Result<usize> {
        let mut added = 0;
        while added < want {
            let Some(kv) = self.fanout.iter().next() else {
                break;
            };
            let (k, _) = kv?;
            let Some((list, seq)) = decode_plan_key(&k) else {
                tracing::error!("unreadable fan-out plan key; removed");
                self.fanout.remove(&k)?;
                continue;
            };
            let n = (&self.fanout, &self.queue, &self.queue_due)
                .transaction(|(plan, queue, due)| {
                    let Some(v) = plan.get(&k)? else {
                        return Ok(0);
                    };
                    let (first_ms, addrs) =
                        decode_chunk(&v).map_err(ConflictableTransactionError::Abort)?;
                    let now = now_ms();
                    let row = row_for(first_ms, now);
                    for addr in &addrs {
                        insert_row(queue, due, &list, seq, addr, now, &row)?;
                    }
                    plan.remove(&k)?;
                    Ok(addrs.len())
                })
                .map_err(tx_err)?;
            added += n;
        }
        Ok(added)
    }

    /// Whether any copy of `(list, seq)` is still to be delivered (queued or planned).
    pub fn post_pending(&self, list: &str, seq: u64) -> Result<bool> {
        let p = post_key(list, seq);
        Ok(self
            .queue
            .scan_prefix(&p)
            .keys()
            .next()
            .transpose()?
            .is_some()
            || self
                .fanout
                .scan_prefix(&p)
                .keys()
                .next()
                .transpose()?
                .is_some())
    }

    /// Recipients of `(list, seq)` in plan chunks, not queued yet.
    pub fn planned_for_post(&self, list: &str, seq: u64) -> Result<usize> {
        let mut n = 0;
        for v in self.fanout.scan_prefix(post_key(list, seq)).values() {
            n += chunk_len(&v?);
        }
        Ok(n)
    }

    /// Every post with planned recipients: (list, queue seq, recipients not queued yet).
    pub fn planned(&self) -> Result<Vec<(String, u64, usize)>> {
        let mut out: Vec<(String, u64, usize)> = Vec::new();
        for kv in self.fanout.iter() {
            let (k, v) = kv?;
            let Some((list, seq)) = decode_plan_key(&k) else {
                continue;
            };
            match out.last_mut() {
                Some((l, s, n)) if *l == list && *s == seq => *n += chunk_len(&v),
                _ => out.push((list, seq, chunk_len(&v))),
            }
        }
        Ok(out)
    }

    /// Removes `is(addr)` from `list`'s plan chunks; returns how many were removed.
    pub(super) fn unplan(&self, list: &str, is: &dyn Fn(&str) -> bool) -> Result<usize> {
        let mut removed = 0;
        for kv in self.fanout.scan_prefix(list_prefix(list)) {
            let (k, v) = kv?;
            let (first_ms, addrs) = decode_chunk(&v)?;
            let keep: Vec<String> = addrs.iter().filter(|a| !is(a)).cloned().collect();
            if keep.len() == addrs.len() {
                continue;
            }
            removed += addrs.len() - keep.len();
            let new = (!keep.is_empty()).then(|| encode_chunk(first_ms, &keep));
            // Only if the chunk is still as read: one materialised meanwhile is now queue
            // rows, which the caller removes after this (so it must run first).
            let _ = self.fanout.compare_and_swap(&k, Some(v), new)?;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue_all(s: &Store, list: &str, seq: u64, addrs: &[String]) {
        (&s.queue, &s.queue_due, &s.fanout)
            .transaction(|(q, d, p)| {
                queue_recipients(q, d, p, list, seq, addrs, now_ms())?;
                Ok::<_, ConflictableTransactionError<StoreError>>(())
            })
            .unwrap();
    }

    #[test]
    fn a_large_fan_out_is_queued_a_chunk_at_a_time_and_every_recipient_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).unwrap();
        let l = "forum@example.org";
        let addrs: Vec<String> = (0..CHUNK * 3 + 5).map(|i| format!("m{i}@x.be")).collect();
        queue_all(&s, l, 7, &addrs);
        assert_eq!(s.queue_rows().unwrap().len(), CHUNK);
        assert_eq!(s.planned_for_post(l, 7).unwrap(), CHUNK * 2 + 5);
        assert_eq!(
            s.planned().unwrap(),
            vec![(l.to_string(), 7, CHUNK * 2 + 5)]
        );
        assert_eq!(s.pending_for_post(l, 7).unwrap(), addrs.len());
        // One chunk when one row is wanted; then the rest.
        assert_eq!(s.materialise(1).unwrap(), CHUNK);
        assert_eq!(s.queue_rows().unwrap().len(), CHUNK * 2);
        assert_eq!(s.materialise(usize::MAX).unwrap(), CHUNK + 5);
        assert_eq!(s.materialise(usize::MAX).unwrap(), 0);
        let mut queued: Vec<String> = s
            .queue_rows()
            .unwrap()
            .into_iter()
            .map(|(k, _)| k.addr)
            .collect();
        queued.sort();
        let mut want = addrs.clone();
        want.sort();
        assert_eq!(queued, want);
        // Every row is due now, in the index.
        let due = s.due(now_ms(), usize::MAX, &|_| false).unwrap();
        assert_eq!(due.rows.len(), addrs.len());
        assert!(s.post_pending(l, 7).unwrap());
    }

    #[test]
    fn forget_takes_the_address_out_of_planned_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).unwrap();
        let l = "forum@example.org";
        let mut addrs: Vec<String> = (0..CHUNK * 2).map(|i| format!("m{i}@x.be")).collect();
        addrs.push("An@ocmw.be".into());
        addrs.push("jan@ocmw.be".into());
        queue_all(&s, l, 1, &addrs);
        assert_eq!(
            s.unplan(l, &|a| a.eq_ignore_ascii_case("an@ocmw.be"))
                .unwrap(),
            1
        );
        assert_eq!(s.unplan("other@example.org", &|_| true).unwrap(), 0);
        s.materialise(usize::MAX).unwrap();
        let queued: Vec<String> = s
            .queue_rows()
            .unwrap()
            .into_iter()
            .map(|(k, _)| k.addr)
            .collect();
        assert_eq!(queued.len(), addrs.len() - 1);
        assert!(!queued.iter().any(|a| a == "An@ocmw.be"));
        assert!(queued.iter().any(|a| a == "jan@ocmw.be"));
    }
}
