//! Changes to list state, applied with the mail they cause in one transaction.

use super::*;

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

impl Store {
    /// Applies changes and queues mail in one transaction (no spooled message involved:
    /// the web endpoint and administrative commands).
    pub fn commit(&self, changes: Vec<Change>, mail: Vec<OutMail>) -> Result<()> {
        self.commit_inner(None, changes, mail)
    }

    pub(super) fn commit_inner(
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
}
