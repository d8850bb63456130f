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
    /// Changes some of a member's settings on the record as it is inside the transaction,
    /// so that two changes in one mail (or a command racing a bounce) both survive;
    /// nothing when it is not a member.
    SetMember {
        list: String,
        addr: String,
        settings: MemberSettings,
    },
    /// Any other read-modify-write of one member's record (bounce scoring, notices), run
    /// on the record as stored inside the transaction; nothing when it is not a member.
    EditMember {
        list: String,
        addr: String,
        edit: MemberFn,
    },
    PutPending {
        id: u64,
        pending: Pending,
    },
    /// Marks a pending request confirmed. The transaction fails with
    /// [`StoreError::AlreadyUsed`] when it was confirmed meanwhile (a click and a mail at
    /// once): a token acts once.
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
    /// A held post its poster confirmed (`pii_posts = "hold"`): back to the spool, where
    /// the list's posting policy still applies.
    PosterReleaseHeld {
        id: u64,
    },
    ReleaseHeld {
        id: u64,
    },
    DiscardHeld {
        id: u64,
    },
    /// Held posts the owners' summary named.
    HeldNotified {
        ids: Vec<u64>,
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
    /// Queues `mail` unless a mail with the same `marker` was queued before (the marker is
    /// kept in `meta`, written in the same transaction): a report to the owners about one
    /// post that failed is sent once, however many copies or bounces tell of it.
    ReportOnce {
        marker: String,
        mail: OutMail,
    },
    /// An owner's confirmed solved/reopened mark for a thread (see `add_qa_owner_mark`).
    QaOwnerMark {
        list: String,
        thread: u64,
        mark: QaOwnerMark,
    },
    /// How far a clock-driven step has read a list's posts (`similar`: the questions whose
    /// similar earlier questions were looked for), moved with the mail it caused.
    Cursor {
        name: String,
        list: String,
        seq: u64,
    },
    /// A member stops receiving a thread (nothing when it is not a member, or muted it
    /// already).
    Mute {
        list: String,
        addr: String,
        thread: u64,
        at_ms: i64,
    },
    /// A member receives a thread again.
    Unmute {
        list: String,
        addr: String,
        thread: u64,
    },
    /// The daily summary went out: events up to `upto` are removed.
    SummarySent {
        list: String,
        upto: u64,
        at_ms: i64,
    },
}

/// Some of a member's settings; `None` leaves one as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemberSettings {
    pub digest: Option<bool>,
    pub digest_plain: Option<bool>,
    pub nomail: Option<bool>,
    /// `Some(None)` removes the end date of `nomail`.
    pub nomail_until: Option<Option<i64>>,
    pub language: Option<Option<Language>>,
    /// Forgets the bounce record (mail turned back on, delivery re-enabled).
    pub clear_bounce: bool,
}

impl MemberSettings {
    fn apply(&self, m: &mut Member) {
        if let Some(v) = self.digest {
            m.digest = v;
        }
        if let Some(v) = self.digest_plain {
            m.digest_plain = v;
        }
        if let Some(v) = self.nomail {
            m.nomail = v;
        }
        if let Some(v) = self.nomail_until {
            m.nomail_until = v;
        }
        if let Some(v) = self.language {
            m.language = v;
        }
        if self.clear_bounce {
            m.bounce = None;
        }
    }
}

/// A read-modify-write of a member record for [`Change::EditMember`]. sled may run a
/// transaction more than once, so the function must depend only on the record it is given.
#[derive(Clone)]
pub struct MemberFn(pub std::sync::Arc<dyn Fn(&mut Member) + Send + Sync>);

impl std::fmt::Debug for MemberFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemberFn(..)")
    }
}

impl MemberFn {
    pub fn new(f: impl Fn(&mut Member) + Send + Sync + 'static) -> MemberFn {
        MemberFn(std::sync::Arc::new(f))
    }
}

/// Reads a member inside a transaction, edits it and writes it back.
fn edit_member(
    members: &sled::transaction::TransactionalTree,
    list: &str,
    addr: &str,
    f: impl Fn(&mut Member),
) -> std::result::Result<(), ConflictableTransactionError<StoreError>> {
    let mk = member_key(list, addr);
    if let Some(v) = members.get(&mk)? {
        let mut m: Member = decode("members", &v).map_err(ConflictableTransactionError::Abort)?;
        f(&mut m);
        members.insert(mk.as_slice(), encode(&m))?;
    }
    Ok(())
}

fn cursor_key(name: &str, list: &str) -> Vec<u8> {
    [
        b"cursor\0".as_slice(),
        name.as_bytes(),
        b"\0",
        &list_prefix(list),
    ]
    .concat()
}

impl Store {
    /// Where [`Change::Cursor`] `name` stands for `list` (none: never moved).
    pub fn cursor(&self, name: &str, list: &str) -> Result<Option<u64>> {
        Ok(self
            .meta
            .get(cursor_key(name, list))?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes))
    }

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
        // The mail of each ReportOnce, encoded (and given its id) before the transaction.
        let mut once = Vec::new();
        for c in &changes {
            if let Change::ReportOnce { marker, mail } = c {
                let rec = self.outmail_records(vec![mail.clone()])?;
                once.push((report_key(marker), rec));
            }
        }
        // Ids for released posts and events, drawn before the transaction (which may rerun).
        let mut ids = Vec::new();
        for c in &changes {
            if matches!(
                c,
                Change::ReleaseHeld { .. }
                    | Change::PosterReleaseHeld { .. }
                    | Change::Event { .. }
            ) {
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
            &self.mutes,
        ];
        let r: std::result::Result<(), TransactionError<StoreError>> =
            trees.as_slice().transaction(|t| {
                let (spool, members, uids, pending, rate, held, msgid, out, events, meta) = (
                    &t[0], &t[1], &t[2], &t[3], &t[4], &t[5], &t[6], &t[7], &t[8], &t[9],
                );
                let mutes = &t[10];
                if let Some(id) = spool_id {
                    spool.remove(&id.to_be_bytes())?;
                }
                let mut ids = ids.iter();
                let mut once = once.iter();
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
                        Change::PutPending { id, pending: p } => {
                            pending.insert(&id.to_be_bytes(), encode(p))?;
                        }
                        Change::UsePending { id, at_ms } => {
                            let used = || {
                                ConflictableTransactionError::Abort(StoreError::AlreadyUsed {
                                    id: *id,
                                })
                            };
                            let v = pending.get(id.to_be_bytes())?.ok_or_else(used)?;
                            let mut p: Pending = decode("pending", &v)
                                .map_err(ConflictableTransactionError::Abort)?;
                            if p.used_ms.is_some() {
                                return Err(used());
                            }
                            p.used_ms = Some(*at_ms);
                            pending.insert(&id.to_be_bytes(), encode(&p))?;
                        }
                        Change::SetMember {
                            list,
                            addr,
                            settings,
                        } => {
                            edit_member(members, list, addr, |m| settings.apply(m))?;
                        }
                        Change::EditMember { list, addr, edit } => {
                            edit_member(members, list, addr, |m| (edit.0)(m))?;
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
                        Change::ReleaseHeld { id } | Change::PosterReleaseHeld { id } => {
                            let new_spool = ids.next().copied().unwrap_or(0);
                            let Some(v) = held.remove(&id.to_be_bytes())? else {
                                continue;
                            };
                            let (h, raw): (Held, &[u8]) = decode_head("held", &v)
                                .map_err(ConflictableTransactionError::Abort)?;
                            let mut env = h.envelope.clone();
                            if matches!(c, Change::ReleaseHeld { .. }) {
                                env.approved = true;
                            } else {
                                env.poster_confirmed = true;
                            }
                            msgid.remove(msgid_key(&h.list, &h.message_id))?;
                            spool.insert(&new_spool.to_be_bytes(), encode_with_raw(&env, raw))?;
                        }
                        Change::DiscardHeld { id } => {
                            held.remove(&id.to_be_bytes())?;
                        }
                        Change::HeldNotified { ids } => {
                            for id in ids {
                                let Some(v) = held.get(id.to_be_bytes())? else {
                                    continue;
                                };
                                let (mut h, raw): (Held, &[u8]) = decode_head("held", &v)
                                    .map_err(ConflictableTransactionError::Abort)?;
                                h.notified = true;
                                held.insert(&id.to_be_bytes(), encode_with_raw(&h, raw))?;
                            }
                        }
                        Change::Event { list, event } => {
                            let id = ids.next().copied().unwrap_or(0);
                            let mut k = list_prefix(list);
                            k.extend_from_slice(&id.to_be_bytes());
                            events.insert(k, encode(event))?;
                        }
                        Change::ReportOnce { .. } => {
                            let Some((key, recs)) = once.next() else {
                                continue;
                            };
                            if meta.get(key)?.is_none() {
                                meta.insert(key.as_slice(), &now_ms().to_be_bytes())?;
                                for (k, v) in recs {
                                    out.insert(k, v.as_slice())?;
                                }
                            }
                        }
                        Change::SummarySent { list, at_ms, .. } => {
                            meta.insert(summary_key(list), &at_ms.to_be_bytes())?;
                        }
                        Change::RequestForget { list, addr } => {
                            meta.insert(forget_key(list, addr), b"".as_slice())?;
                        }
                        Change::QaOwnerMark { list, thread, mark } => {
                            archive::qa_owner_mark_in(meta, list, *thread, mark)?
                        }
                        Change::Cursor { name, list, seq } => {
                            meta.insert(cursor_key(name, list), &seq.to_be_bytes())?;
                        }
                        Change::Mute {
                            list,
                            addr,
                            thread,
                            at_ms,
                        } => mutes::mute(members, mutes, list, addr, *thread, *at_ms)?,
                        Change::Unmute { list, addr, thread } => {
                            mutes::unmute(mutes, list, addr, *thread)?
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
                    if event_id(&k) <= *upto {
                        self.events.remove(k)?;
                    }
                }
            }
        }
        Ok(())
    }
}
