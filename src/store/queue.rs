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

impl Store {
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
        let mut sp = sled::Batch::default();
        for (env, raw) in reports {
            sp.insert(&self.next_id()?.to_be_bytes(), encode_with_raw(env, raw));
        }
        let keys: Vec<Vec<u8>> = results.iter().map(|(k, _)| k.encode()).collect();
        (&self.queue, &self.failures, &self.spool)
            .transaction(|(qt, ft, st)| {
                for (k, (_, r)) in keys.iter().zip(results) {
                    // A row removed while it was being delivered (its recipient forgotten)
                    // stays removed: no retry, no failure record.
                    if qt.get(k)?.is_none() {
                        continue;
                    }
                    match r {
                        DeliveryResult::Delivered => {
                            qt.remove(k.as_slice())?;
                        }
                        DeliveryResult::Retry(row) => {
                            qt.insert(k.as_slice(), encode(row))?;
                        }
                        DeliveryResult::Failed(fail) => {
                            qt.remove(k.as_slice())?;
                            ft.insert(k.as_slice(), encode(fail))?;
                        }
                    }
                }
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
