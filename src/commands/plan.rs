//! The plan engine: rate limits, the mails a decision sends, and owners' notices.

use super::*;

impl<'a> Plan<'a> {
    pub fn new(ctx: Ctx<'a>, list: &'a ListConfig) -> Plan<'a> {
        Plan {
            ctx,
            list,
            changes: Vec::new(),
            mail: Vec::new(),
            results: Vec::new(),
            hits: HashMap::new(),
            joined: Vec::new(),
            left: Vec::new(),
            owner_ops: Vec::new(),
            attachment: None,
            attachment_read: false,
            confirmed_lang: None,
            now: now_ms(),
        }
    }

    pub(super) fn key(&self) -> &str {
        self.list.key()
    }

    /// The list's language (pages answering a plan are in it).
    pub fn language(&self) -> Language {
        self.list.language
    }

    pub(super) fn bucket(&self, b: &str) -> String {
        format!("{b}:{}", self.key())
    }

    pub fn is_member(&self, addr: &str) -> crate::store::Result<bool> {
        let lc = addr.to_lowercase();
        if self.joined.contains(&lc) {
            return Ok(true);
        }
        if self.left.contains(&lc) {
            return Ok(false);
        }
        self.ctx.store.is_member(self.key(), addr)
    }

    /// The start of the window `bucket` counts in.
    pub(super) fn since(&self, bucket: &str) -> i64 {
        if bucket == CONFIRM_ALL {
            return self.now - 3_600_000;
        }
        self.now - self.ctx.cfg.commands.rate_window.as_millis() as i64
    }

    /// Whether one more mail to `addr`'s mailbox in `bucket` stays within `limit`. A
    /// confirmation also stays within the list's limit per hour over all addresses.
    pub(super) fn within(
        &self,
        bucket: &str,
        addr: &str,
        limit: u32,
    ) -> crate::store::Result<bool> {
        if bucket == CONFIRM {
            let hourly = self.ctx.cfg.commands.max_confirmations_per_hour;
            if !self.within(CONFIRM_ALL, "*", hourly)? {
                return Ok(false);
            }
        }
        let (b, addr) = (self.bucket(bucket), mailbox(addr));
        let stored = self.ctx.store.rate_hits(&b, &addr, self.since(bucket))? as u32;
        let planned = self.hits.get(&(b, addr)).copied().unwrap_or(0);
        Ok(stored + planned < limit)
    }

    pub(super) fn hit(&mut self, bucket: &str, addr: &str) {
        if bucket == CONFIRM {
            self.hit(CONFIRM_ALL, "*");
        }
        let (b, addr) = (self.bucket(bucket), mailbox(addr));
        *self.hits.entry((b.clone(), addr.clone())).or_default() += 1;
        let since_ms = self.since(bucket);
        self.changes.push(Change::RateHit {
            bucket: b,
            addr,
            at_ms: self.now,
            since_ms,
        });
    }

    pub(super) fn lang_for(&self, addr: &str, hint: Option<Language>) -> Language {
        if let Ok(Some(m)) = self.ctx.store.member(self.key(), addr) {
            if let Some(l) = m.language {
                return l;
            }
        }
        hint.unwrap_or(self.list.language)
    }

    /// Renders and queues a text mail to one person. Returns false (and sends nothing)
    /// when the template fails; the caller checks limits first.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn send(
        &mut self,
        to: &str,
        lang: Language,
        template: &str,
        vars: Value,
        auto: &str,
        reply_to: Option<String>,
        in_reply_to: Option<&str>,
        attach: Option<&[u8]>,
    ) -> bool {
        let text = match self
            .ctx
            .texts
            .render(self.ctx.cfg, self.list, lang, template, vars)
        {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(template, error = %e, "cannot render a text; not sent");
                return false;
            }
        };
        let raw = texts::build(MailSpec {
            list: self.list,
            to: vec![to.to_string()],
            lang,
            text,
            auto,
            reply_to,
            in_reply_to: in_reply_to.map(str::to_string),
            attach,
            file: None,
            hostname: &self.ctx.cfg.smtp.hostname,
        });
        self.mail
            .push(out_mail(self.list, template, vec![to.to_string()], raw));
        true
    }

    /// A text to a person, counted against the per-address reply limit.
    pub(super) fn reply(
        &mut self,
        to: &str,
        lang: Language,
        template: &str,
        vars: Value,
        re: Option<&str>,
    ) {
        match self.within(REPLY, to, self.ctx.cfg.commands.max_replies_per_address) {
            Ok(true) => {
                if self.send(to, lang, template, vars, "auto-replied", None, re, None) {
                    self.hit(REPLY, to);
                }
            }
            Ok(false) => tracing::info!(template, "reply limit reached for an address; not sent"),
            Err(e) => tracing::error!(error = %e, "cannot read rate limits; not sent"),
        }
    }

    /// Tells the owners of a join or leave, as the list says (each, daily, none).
    pub(super) fn notify_owners(&mut self, kind: &str, addr: &str, via: &str) {
        match self.list.notify_owners {
            NotifyOwners::None => {}
            // An owner's own `add`/`remove` (maybe hundreds at once) is answered to that
            // owner; a notice per member to every owner would be a flood.
            NotifyOwners::Each if via == "owner" => {}
            NotifyOwners::Daily => self.changes.push(Change::Event {
                list: self.key().to_string(),
                event: MemberEvent {
                    at_ms: self.now,
                    kind: kind.into(),
                    address: addr.into(),
                    via: via.into(),
                },
            }),
            NotifyOwners::Each => {
                if self.list.owners.is_empty() {
                    return;
                }
                let count = self.ctx.store.member_count(self.key()).unwrap_or(0) as i64
                    + self.joined.len() as i64
                    - self.left.len() as i64;
                let vars = minijinja::context! {
                    kind, address => addr, via, members_count => count.max(0),
                };
                match self.ctx.texts.render(
                    self.ctx.cfg,
                    self.list,
                    self.list.language,
                    "owner-event",
                    vars,
                ) {
                    Ok(text) => self.mail.push(owner_mail(
                        self.ctx.cfg,
                        self.list,
                        "owner-event",
                        text,
                        None,
                        None,
                    )),
                    Err(e) => tracing::error!(error = %e, "cannot render the owners' notice"),
                }
            }
        }
    }
}

/// The owners' daily summary of joins and leaves, when one is due (`notify_owners =
/// "daily"`, events waiting, the last summary a day ago or more).
pub fn owner_summary(
    ctx: Ctx,
    list: &ListConfig,
) -> crate::store::Result<Option<(Vec<Change>, Vec<OutMail>)>> {
    if list.notify_owners != NotifyOwners::Daily || list.owners.is_empty() {
        return Ok(None);
    }
    let now = now_ms();
    if let Some(last) = ctx.store.last_summary_ms(list.key())? {
        if now - last < 24 * 3600 * 1000 {
            return Ok(None);
        }
    }
    let events = ctx.store.events(list.key())?;
    let Some(upto) = events.iter().map(|(id, _)| *id).max() else {
        return Ok(None);
    };
    let rows: Vec<BTreeMap<&str, String>> = events
        .iter()
        .map(|(_, e)| {
            let at = chrono::DateTime::from_timestamp_millis(e.at_ms)
                .map(|d| d.format("%d-%m-%Y %H:%M UTC").to_string())
                .unwrap_or_default();
            BTreeMap::from([
                ("kind", e.kind.clone()),
                ("address", e.address.clone()),
                ("via", e.via.clone()),
                ("at", at),
            ])
        })
        .collect();
    let joined = events.iter().filter(|(_, e)| e.kind == "joined").count();
    let vars = minijinja::context! {
        events => rows, joined_count => joined, left_count => events.len() - joined,
        members_count => ctx.store.member_count(list.key())?,
    };
    let text = match ctx
        .texts
        .render(ctx.cfg, list, list.language, "owner-summary", vars)
    {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot render the owners' summary");
            return Ok(None);
        }
    };
    Ok(Some((
        vec![Change::SummarySent {
            list: list.key().to_string(),
            upto,
            at_ms: now,
        }],
        vec![owner_mail(ctx.cfg, list, "owner-summary", text, None, None)],
    )))
}

/// A notice to the owners of a list (`Auto-Submitted: auto-generated`).
pub fn owner_mail(
    cfg: &Config,
    list: &ListConfig,
    kind: &str,
    text: texts::Text,
    reply_to: Option<String>,
    attach: Option<&[u8]>,
) -> OutMail {
    let raw = texts::build(MailSpec {
        list,
        to: list.owners.clone(),
        lang: list.language,
        text,
        auto: "auto-generated",
        reply_to,
        in_reply_to: None,
        attach,
        file: None,
        hostname: &cfg.smtp.hostname,
    });
    out_mail(list, kind, list.owners.clone(), raw)
}

/// A pending request of `kind` for `addr` on `list` (stored by the returned change) and
/// the token that confirms it.
pub fn pending_token(
    ctx: Ctx,
    list: &ListConfig,
    kind: Kind,
    action: &str,
    addr: &str,
    expires_ms: i64,
    language: Option<Language>,
) -> crate::store::Result<(String, Change)> {
    let id = ctx.store.new_id()?;
    let expires_s = u32::try_from(expires_ms / 1000).unwrap_or(u32::MAX);
    let token = ctx.secret.issue(kind, id, expires_s, list.key(), addr);
    let change = Change::PutPending {
        id,
        pending: Pending {
            action: action.into(),
            list: list.key().to_string(),
            address: addr.to_string(),
            name: None,
            expires_ms,
            language,
            used_ms: None,
            ops: Vec::new(),
            commands: Vec::new(),
        },
    };
    Ok((token, change))
}

/// The mailbox an address reaches, as rate limits count it: lower case, without a
/// subaddress (`jan+1@`, RFC 5233), and for Gmail without the dots it ignores, so that one
/// mailbox is one counter however its address is spelled.
pub fn mailbox(addr: &str) -> String {
    let lc = addr.trim().to_lowercase();
    let Some((local, domain)) = lc.rsplit_once('@') else {
        return lc;
    };
    let local = local.split('+').next().unwrap_or(local);
    let local = if matches!(domain, "gmail.com" | "googlemail.com") {
        local.replace('.', "")
    } else {
        local.to_string()
    };
    if local.is_empty() {
        return lc;
    }
    format!("{local}@{domain}")
}

/// A moment for texts to people, in the list's time zone with its name:
/// `01-01-2027 10:00 CET`.
pub fn date_text(list: &ListConfig, ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| {
            d.with_timezone(&list.timezone)
                .format("%d-%m-%Y %H:%M %Z")
                .to_string()
        })
        .unwrap_or_default()
}

/// A single mail from the list software (envelope sender: the bounce address).
pub fn out_mail(list: &ListConfig, kind: &str, rcpts: Vec<String>, raw: Vec<u8>) -> OutMail {
    let now = now_ms();
    OutMail {
        id: 0,
        mail_from: list.sub_address("bounces"),
        rcpts,
        attempts: 0,
        first_ms: now,
        next_ms: now,
        last_error: None,
        kind: kind.into(),
        raw,
    }
}

/// The moderation token of a held post (bound to its list and sender).
pub fn moderation_token(secret: &Secret, list: &str, held_id: u64, from: &str) -> String {
    secret.issue(Kind::Moderate, held_id, 0, list, from)
}

pub fn is_owner(list: &ListConfig, addr: &str) -> bool {
    list.owners.iter().any(|o| o.eq_ignore_ascii_case(addr))
}
