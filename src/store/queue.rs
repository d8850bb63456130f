//! The delivery queue (one row per post and recipient), failures, and single mails.

use super::*;

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

/// A due delivery: one recipient of one post.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QueueKey {
    pub list: String,
    pub seq: u64,
    pub addr: String,
}

impl QueueKey {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut k = post_key(&self.list, self.seq);
        k.push(0);
        k.extend_from_slice(self.addr.as_bytes());
        k
    }
    pub(super) fn decode(k: &[u8]) -> Option<QueueKey> {
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

/// The `queue_due` key of a row: its due time first, so the index sorts by it.
pub(super) fn due_key(next_ms: i64, queue_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + queue_key.len());
    k.extend_from_slice(&(next_ms.max(0) as u64).to_be_bytes());
    k.extend_from_slice(queue_key);
    k
}

impl Store {
    /// Builds the due-time index of a queue stored before it existed (once, at open).
    pub(super) fn index_queue(&self) -> Result<()> {
        const DONE: &[u8] = b"queue_due\0v1";
        if self.meta.contains_key(DONE)? {
            return Ok(());
        }
        let mut b = sled::Batch::default();
        for kv in self.queue.iter() {
            let (k, v) = kv?;
            let row: QueueRow = decode("queue", &v)?;
            b.insert(due_key(row.next_ms, &k), b"".as_slice());
        }
        self.queue_due.apply_batch(b)?;
        self.meta.insert(DONE, b"".as_slice())?;
        Ok(())
    }

    /// What is due at `now_ms`, read in due-time order: at most `limit` rows for which
    /// `skip` is false (rows in flight are skipped without counting), the due out-mails
    /// with their bytes, and when the next not-yet-due item is. A pass costs the rows it
    /// returns (plus those it skips), not the size of the queue.
    pub fn due(&self, now_ms: i64, limit: usize, skip: &dyn Fn(&QueueKey) -> bool) -> Result<Due> {
        let mut due = Due::default();
        let end = due_key(now_ms.saturating_add(1), b"");
        for kv in self.queue_due.range(..end.clone()) {
            if due.rows.len() >= limit {
                break;
            }
            let (ik, _) = kv?;
            let (Some(at), Some(key)) = (
                ik.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()),
                ik.get(8..).and_then(QueueKey::decode),
            ) else {
                self.queue_due.remove(&ik)?;
                continue;
            };
            if skip(&key) {
                due.skipped += 1;
                continue;
            }
            // An entry whose row is gone (delivered, forgotten) or was rescheduled to
            // another time is left over: drop it.
            let row = match self.queue.get(key.encode())? {
                Some(v) => decode::<QueueRow>("queue", &v)?,
                None => {
                    self.queue_due.remove(&ik)?;
                    continue;
                }
            };
            if (row.next_ms.max(0) as u64).to_be_bytes() != at {
                self.queue_due.remove(&ik)?;
                if row.next_ms > now_ms {
                    continue;
                }
            }
            due.rows.push((key, row));
        }
        if let Some(kv) = self.queue_due.range(end..).next() {
            let (ik, _) = kv?;
            if let Some(at) = ik.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
                due_later(&mut due.next_ms, u64::from_be_bytes(at) as i64);
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

    /// Copies of `(list, seq)` still to be delivered: queued rows and planned recipients.
    pub fn pending_for_post(&self, list: &str, seq: u64) -> Result<usize> {
        Ok(self.queue.scan_prefix(post_key(list, seq)).count()
            + self.planned_for_post(list, seq)?)
    }

    pub fn failures_for_post(&self, list: &str, seq: u64) -> Result<usize> {
        Ok(self.failures.scan_prefix(post_key(list, seq)).count())
    }

    /// Records the results of one batch of attempts in one write: delivered rows removed,
    /// temporary failures rescheduled, permanent failures moved to `failures`. `reports`
    /// (delivery reports for refused recipients) are spooled in the same transaction, so a
    /// refusal is scored exactly once; `once` (reports to the owners about a post that
    /// failed as a message) are queued in it too, each unless its marker was seen before.
    pub fn record_results(
        &self,
        results: &[(QueueKey, DeliveryResult)],
        reports: &[(Envelope, Vec<u8>)],
        once: &[(String, OutMail)],
    ) -> Result<()> {
        let mut sp = sled::Batch::default();
        for (env, raw) in reports {
            sp.insert(&self.next_id()?.to_be_bytes(), encode_with_raw(env, raw));
        }
        let mut reps = Vec::new();
        for (marker, mail) in once {
            reps.push((
                report_key(marker),
                self.outmail_records(vec![mail.clone()])?,
            ));
        }
        let keys: Vec<Vec<u8>> = results.iter().map(|(k, _)| k.encode()).collect();
        (
            &self.queue,
            &self.failures,
            &self.spool,
            &self.meta,
            &self.outmail,
            &self.queue_due,
        )
            .transaction(|(qt, ft, st, mt, ot, dt)| {
                for (k, (_, r)) in keys.iter().zip(results) {
                    // A row removed while it was being delivered (its recipient forgotten)
                    // stays removed: no retry, no failure record.
                    let Some(v) = qt.get(k)? else {
                        continue;
                    };
                    // Its index entry goes with its old due time; a retry gets a new one.
                    let old: QueueRow =
                        decode("queue", &v).map_err(ConflictableTransactionError::Abort)?;
                    dt.remove(due_key(old.next_ms, k))?;
                    match r {
                        DeliveryResult::Delivered => {
                            qt.remove(k.as_slice())?;
                        }
                        DeliveryResult::Retry(row) => {
                            qt.insert(k.as_slice(), encode(row))?;
                            dt.insert(due_key(row.next_ms, k), b"".as_slice())?;
                        }
                        DeliveryResult::Failed(fail) => {
                            qt.remove(k.as_slice())?;
                            ft.insert(k.as_slice(), encode(fail))?;
                        }
                    }
                }
                st.apply_batch(&sp)?;
                for (key, recs) in &reps {
                    if mt.get(key)?.is_none() {
                        mt.insert(key.as_slice(), &now_ms().to_be_bytes())?;
                        for (k, v) in recs {
                            ot.insert(k, v.as_slice())?;
                        }
                    }
                }
                Ok(())
            })
            .map_err(tx_err)
    }

    /// The recipients of a post given up on, with why.
    pub fn failures_of_post(&self, list: &str, seq: u64) -> Result<Vec<(String, Failure)>> {
        let mut out = Vec::new();
        for kv in self.failures.scan_prefix(post_key(list, seq)) {
            let (k, v) = kv?;
            if let Some(key) = QueueKey::decode(&k) {
                out.push((key.addr, decode("failures", &v)?));
            }
        }
        Ok(out)
    }

    /// Whether a report with this marker was queued (see `Change::ReportOnce`).
    pub fn reported(&self, marker: &str) -> Result<bool> {
        Ok(self.meta.get(report_key(marker))?.is_some())
    }

    /// Makes every pending row and out-mail due now (`queue retry`). Returns how many.
    pub fn retry_all_now(&self) -> Result<usize> {
        let now = now_ms();
        let mut n = 0;
        for kv in self.queue.iter() {
            let (k, v) = kv?;
            let mut row: QueueRow = decode("queue", &v)?;
            let old = due_key(row.next_ms, &k);
            row.next_ms = now;
            let (new, rec) = (due_key(now, &k), encode(&row));
            (&self.queue, &self.queue_due)
                .transaction(|(qt, dt)| {
                    qt.insert(k.as_ref(), rec.as_slice())?;
                    dt.remove(old.as_slice())?;
                    dt.insert(new.as_slice(), b"".as_slice())?;
                    Ok(())
                })
                .map_err(tx_err)?;
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

    /// Writes a mail's delivery state (attempts, next try, last error). Its bytes stay as
    /// stored (a forget may have relabelled them while it was being sent), and a mail
    /// removed meanwhile (to a forgotten address) stays removed.
    pub fn outmail_update(&self, m: &OutMail) -> Result<()> {
        self.outmail.fetch_and_update(m.id.to_be_bytes(), |old| {
            let old = old?;
            Some(match decode_head::<OutMail>("outmail", old) {
                Ok((_, raw)) => encode_with_raw(m, raw),
                Err(_) => old.to_vec(),
            })
        })?;
        Ok(())
    }
}

/// What [`Store::due`] found.
#[derive(Debug, Default)]
pub struct Due {
    pub rows: Vec<(QueueKey, QueueRow)>,
    /// Due rows passed over because `skip` said so (in flight).
    pub skipped: usize,
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
