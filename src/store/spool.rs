//! The spool: messages acknowledged but not yet decided, and the decision applied with
//! their removal in one transaction; the quarantine.

use super::*;

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
    /// The poster confirmed the post after hearing that it holds a national number or an
    /// account number (`pii_posts = "hold"`): it is not held for that again.
    #[serde(default)]
    pub poster_confirmed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpoolItem {
    pub envelope: Envelope,
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

/// What became of a spooled message; applied atomically with its removal from the spool.
pub enum Outcome {
    /// A post for the list: stored, numbered, and queued for these recipients.
    Accept {
        meta: PostMeta,
        raw: Vec<u8>,
        recipients: Vec<String>,
        notices: Vec<OutMail>,
        /// Rate-limit counts for the notices (committed after the post).
        changes: Vec<Change>,
        /// The thread the post goes into (see `mutes.rs`); written with it.
        thread: Option<ThreadPlace>,
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
    /// Kept in quarantine and, in the same transaction, `mail` queued (a forward of it to
    /// the owners: a bounce that cannot be scored).
    QuarantineAndSend { reason: String, mail: Vec<OutMail> },
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

impl Store {
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

    /// Moves spool entry `spool_id` to quarantine and queues `mail`, in one transaction.
    fn quarantine_spooled(
        &self,
        spool_id: u64,
        reason: String,
        mail: Vec<OutMail>,
    ) -> Result<Applied> {
        let sk = spool_id.to_be_bytes();
        let Some(item) = self.spooled(spool_id)? else {
            return Ok(Applied::Dropped);
        };
        let recs = self.outmail_records(mail)?;
        let id = self.next_id()?;
        let q = Quarantined {
            id,
            reason,
            envelope: item.envelope,
            raw: Vec::new(),
        };
        let rec = encode_with_raw(&q, &item.raw);
        (&self.spool, &self.quarantine, &self.outmail)
            .transaction(|(spool, quar, out)| {
                spool.remove(&sk)?;
                quar.insert(&id.to_be_bytes(), rec.as_slice())?;
                for (k, v) in &recs {
                    out.insert(k, v.as_slice())?;
                }
                Ok(())
            })
            .map_err(tx_err)?;
        Ok(Applied::Quarantined { id })
    }

    /// Applies the outcome of routing spool entry `id` and removes the entry, atomically.
    /// Safe to call again for the same id after a crash: a missing entry means it was done.
    pub fn apply(&self, spool_id: u64, outcome: Outcome) -> Result<Applied> {
        let sk = spool_id.to_be_bytes();
        match outcome {
            Outcome::Quarantine { reason } => self.quarantine_spooled(spool_id, reason, Vec::new()),
            Outcome::QuarantineAndSend { reason, mail } => {
                self.quarantine_spooled(spool_id, reason, mail)
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
                changes,
                thread,
            } => {
                let recs = self.outmail_records(notices)?;
                let now = now_ms();
                meta.recipients = recipients.len() as u64;
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
                    &self.queue_due,
                    &self.fanout,
                    &self.thread_of,
                    &self.threads,
                );
                let r = trees.transaction(
                    |(spool, posts, rawt, msgid, queue, metat, out, due, plan, tof, threads)| {
                        spool.remove(&sk)?;
                        if msgid.get(&mk)?.is_some() {
                            return Ok(None);
                        }
                        let seq =
                            insert_post(posts, rawt, msgid, metat, &meta, &raw, &mk, &seq_key)?;
                        if let Some(place) = &thread {
                            mutes::write_place(tof, threads, &meta.list, place, &meta.subject)?;
                        }
                        // The first chunk as queue rows, the rest planned (see `fanout.rs`).
                        fanout::queue_recipients(
                            queue,
                            due,
                            plan,
                            &meta.list,
                            seq,
                            &recipients,
                            now,
                        )?;
                        for (k, v) in &recs {
                            out.insert(k, v.as_slice())?;
                        }
                        Ok(Some(seq))
                    },
                );
                match r.map_err(tx_err)? {
                    Some(seq) => {
                        if !changes.is_empty() {
                            // Only rate-limit counts: losing them in a crash costs one extra
                            // notice.
                            self.commit_inner(None, changes, Vec::new())?;
                        }
                        Ok(Applied::Posted { seq })
                    }
                    None => Ok(Applied::Duplicate),
                }
            }
        }
    }

    pub(super) fn outmail_records(&self, mail: Vec<OutMail>) -> Result<Vec<([u8; 8], Vec<u8>)>> {
        mail.into_iter()
            .map(|mut m| {
                m.id = self.next_id()?;
                Ok((m.id.to_be_bytes(), encode_with_raw(&m, &m.raw)))
            })
            .collect()
    }

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
