//! Members, their pending requests (tokens), rate limits and join/leave events.

use super::*;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Member {
    /// The address as the member wrote it.
    pub address: String,
    #[serde(default)]
    pub name: Option<String>,
    pub joined_ms: i64,
    /// The member's id in its one-click unsubscribe URL (see `tokens`); 0 = not yet given.
    #[serde(default)]
    pub uid: u64,
    /// Wants digests instead of single posts.
    #[serde(default)]
    pub digest: bool,
    /// Digests as one plain-text mail (RFC 1153) instead of MIME (`set digest plain`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub digest_plain: bool,
    /// Receives no posts for now (vacation); stays a member.
    #[serde(default)]
    pub nomail: bool,
    /// When `nomail` ends by itself (`set nomail until DATE`); none: until turned off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nomail_until: Option<i64>,
    /// Language of texts to this member, when it differs from the list's.
    #[serde(default)]
    pub language: Option<Language>,
    /// Bounces counted against this address (see `bounce`); none when it never bounced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounce: Option<BounceInfo>,
}

/// A member's bounce record: the score and, once it reached the list's threshold, the
/// state of the notices that precede removal.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BounceInfo {
    pub score: f64,
    /// The last bounce that counted (at most one a day counts).
    pub last_ms: i64,
    /// How much the last counted day added (0.5 soft, 1.0 hard): a hard bounce after a
    /// soft one on the same day adds the difference.
    #[serde(default)]
    pub last_weight: f64,
    /// Bounces received, counted or not.
    pub received: u32,
    /// The last bounce: `hard`, `soft` or `policy` (not the member's fault; not counted),
    /// and its status code (`5.1.1`), when it had one.
    pub last_kind: String,
    #[serde(default)]
    pub last_status: Option<String>,
    pub last_received_ms: i64,
    /// Delivery disabled since; `None` while the member still receives posts.
    #[serde(default)]
    pub disabled_ms: Option<i64>,
    /// Notices sent since delivery was disabled, and when the last went out.
    #[serde(default)]
    pub notices: u32,
    #[serde(default)]
    pub last_notice_ms: i64,
}

impl Member {
    /// Whether the member is on vacation at `now` (`nomail`, until `nomail_until`).
    pub fn on_vacation(&self, now: i64) -> bool {
        self.nomail && self.nomail_until.is_none_or(|u| now < u)
    }

    /// Whether mail from the list (posts and digests) goes to this member at `now`: not on
    /// vacation, not disabled by bounces.
    pub fn receives_mail(&self, now: i64) -> bool {
        !self.on_vacation(now) && self.bounce.as_ref().is_none_or(|b| b.disabled_ms.is_none())
    }
}

impl Member {
    /// A new membership from now, its id made by `uid` from the join time (see
    /// [`crate::tokens::Secret::membership_uid`]).
    pub fn new(address: String, name: Option<String>, uid: impl FnOnce(i64) -> u64) -> Member {
        let joined_ms = now_ms();
        Member {
            uid: uid(joined_ms),
            address,
            name,
            joined_ms,
            digest: false,
            digest_plain: false,
            nomail: false,
            nomail_until: None,
            language: None,
            bounce: None,
        }
    }
}

/// A subscribe or unsubscribe request waiting for the address to confirm it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Pending {
    /// `subscribe` or `unsubscribe`.
    pub action: String,
    pub list: String,
    /// The address concerned: the one that must confirm.
    pub address: String,
    #[serde(default)]
    pub name: Option<String>,
    pub expires_ms: i64,
    #[serde(default)]
    pub language: Option<Language>,
    /// When it was confirmed; a used token is kept until it expires, to say "already used".
    #[serde(default)]
    pub used_ms: Option<i64>,
    /// An owner's membership changes (`add`, `remove` by mail), carried out together when
    /// the owner confirms.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ops: Vec<MemberOp>,
    /// A member's `set` command lines, carried out when the member confirms.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<String>,
}

/// One membership change an owner asked for by mail.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberOp {
    /// Added (true) or removed.
    pub add: bool,
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A join or leave, kept for the owners' daily summary.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberEvent {
    pub at_ms: i64,
    /// `joined` or `left`.
    pub kind: String,
    pub address: String,
    /// How: `mail`, `web`, `admin`, `moderator`.
    pub via: String,
}

/// The id at the end of an `events` key.
pub(super) fn event_id(k: &[u8]) -> u64 {
    k.len()
        .checked_sub(8)
        .and_then(|i| k[i..].try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

impl Store {
    /// Adds a member; returns false if the address was already a member.
    pub fn add_member(&self, list: &str, m: &Member) -> Result<bool> {
        let mk = member_key(list, &m.address);
        let rec = encode(m);
        (&self.members, &self.member_uid)
            .transaction(|(members, uids)| {
                if members.get(&mk)?.is_some() {
                    return Ok(false);
                }
                members.insert(mk.as_slice(), rec.as_slice())?;
                if m.uid != 0 {
                    uids.insert(&m.uid.to_be_bytes(), mk.as_slice())?;
                }
                Ok(true)
            })
            .map_err(tx_err)
    }

    pub fn remove_member(&self, list: &str, addr: &str) -> Result<bool> {
        let mk = member_key(list, addr);
        (&self.members, &self.member_uid)
            .transaction(|(members, uids)| {
                let Some(v) = members.remove(mk.as_slice())? else {
                    return Ok(false);
                };
                let m: Member =
                    decode("members", &v).map_err(ConflictableTransactionError::Abort)?;
                if m.uid != 0 {
                    uids.remove(&m.uid.to_be_bytes())?;
                }
                Ok(true)
            })
            .map_err(tx_err)
    }

    /// The list and member a one-click uid belongs to.
    pub fn member_by_uid(&self, uid: u64) -> Result<Option<(String, Member)>> {
        let Some(mk) = self.member_uid.get(uid.to_be_bytes())? else {
            return Ok(None);
        };
        let list = mk
            .iter()
            .position(|&b| b == 0)
            .and_then(|z| std::str::from_utf8(&mk[..z]).ok())
            .map(str::to_string);
        let (Some(list), Some(v)) = (list, self.members.get(&mk)?) else {
            return Ok(None);
        };
        Ok(Some((list, decode("members", &v)?)))
    }

    /// Gives every member without a uid one (`uid(list, addr)`), for data from before uids.
    pub fn assign_member_uids(&self, uid: impl Fn(&str, &str) -> u64) -> Result<usize> {
        let mut n = 0;
        for kv in self.members.iter() {
            let (k, v) = kv?;
            let mut m: Member = decode("members", &v)?;
            if m.uid != 0 {
                continue;
            }
            let Some(list) = k
                .iter()
                .position(|&b| b == 0)
                .and_then(|z| std::str::from_utf8(&k[..z]).ok())
            else {
                continue;
            };
            m.uid = uid(list, &m.address);
            let rec = encode(&m);
            (&self.members, &self.member_uid)
                .transaction(|(members, uids)| {
                    members.insert(k.as_ref(), rec.as_slice())?;
                    uids.insert(&m.uid.to_be_bytes(), k.as_ref())?;
                    Ok(())
                })
                .map_err(tx_err)?;
            n += 1;
        }
        Ok(n)
    }

    pub fn member(&self, list: &str, addr: &str) -> Result<Option<Member>> {
        self.members
            .get(member_key(list, addr))?
            .map(|v| decode("members", &v))
            .transpose()
    }

    pub fn is_member(&self, list: &str, addr: &str) -> Result<bool> {
        Ok(self.members.contains_key(member_key(list, addr))?)
    }

    pub fn members(&self, list: &str) -> Result<Vec<Member>> {
        self.members
            .scan_prefix(list_prefix(list))
            .values()
            .map(|v| decode("members", &v?))
            .collect()
    }

    pub fn member_count(&self, list: &str) -> Result<usize> {
        Ok(self.members.scan_prefix(list_prefix(list)).count())
    }

    pub fn pending(&self, id: u64) -> Result<Option<Pending>> {
        self.pending
            .get(id.to_be_bytes())?
            .map(|v| decode("pending", &v))
            .transpose()
    }

    /// How many mails `addr` got in `bucket` since `since_ms`.
    pub fn rate_hits(&self, bucket: &str, addr: &str, since_ms: i64) -> Result<usize> {
        let Some(v) = self.ratelimit.get(rate_key(bucket, addr))? else {
            return Ok(0);
        };
        let hits: Vec<i64> = decode("ratelimit", &v)?;
        Ok(hits.iter().filter(|&&t| t >= since_ms).count())
    }

    /// The events waiting for a list's daily summary, with their ids.
    pub fn events(&self, list: &str) -> Result<Vec<(u64, MemberEvent)>> {
        let mut out = Vec::new();
        for kv in self.events.scan_prefix(list_prefix(list)) {
            let (k, v) = kv?;
            out.push((event_id(&k), decode("events", &v)?));
        }
        Ok(out)
    }

    /// When the last daily summary of a list went out.
    pub fn last_summary_ms(&self, list: &str) -> Result<Option<i64>> {
        Ok(self
            .meta
            .get(summary_key(list))?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(i64::from_be_bytes))
    }

    /// Forgets confirmed or expired requests and rate-limit hits older than `before_ms`.
    pub fn purge(&self, before_ms: i64) -> Result<usize> {
        let mut n = 0;
        for kv in self.pending.iter() {
            let (k, v) = kv?;
            let p: Pending = decode("pending", &v)?;
            if p.expires_ms < before_ms {
                self.pending.remove(k)?;
                n += 1;
            }
        }
        for kv in self.ratelimit.iter() {
            let (k, v) = kv?;
            let hits: Vec<i64> = decode("ratelimit", &v)?;
            if hits.iter().all(|&t| t < before_ms) {
                self.ratelimit.remove(k)?;
                n += 1;
            }
        }
        Ok(n)
    }
}
