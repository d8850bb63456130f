//! Joining, leaving, confirming, forgetting and archive logins: every change of
//! membership waits for the confirmation of the address concerned.

use super::*;

impl<'a> Plan<'a> {
    pub(super) fn add_member(
        &mut self,
        addr: &str,
        name: Option<String>,
        lang: Option<Language>,
        via: &str,
    ) {
        let mut m = Member::new(addr.to_string(), name, |joined| {
            self.ctx.secret.membership_uid(self.key(), addr, joined)
        });
        m.language = lang.filter(|l| *l != self.list.language);
        self.changes.push(Change::AddMember {
            list: self.key().to_string(),
            member: m,
        });
        let lc = addr.to_lowercase();
        self.left.retain(|a| a != &lc);
        self.joined.push(lc);
        self.notify_owners("joined", addr, via);
    }

    /// The membership id of `addr`: of a membership this plan makes, else the stored one.
    pub(super) fn uid_of(&self, addr: &str) -> u64 {
        let made = self.changes.iter().rev().find_map(|c| match c {
            Change::AddMember { member, .. } if member.address.eq_ignore_ascii_case(addr) => {
                Some(member.uid)
            }
            _ => None,
        });
        made.or_else(|| {
            self.ctx
                .store
                .member(self.key(), addr)
                .ok()
                .flatten()
                .map(|m| m.uid)
                .filter(|u| *u != 0)
        })
        .unwrap_or_else(|| self.ctx.secret.member_uid(self.key(), addr))
    }

    pub(super) fn remove_member(&mut self, addr: &str, via: &str) {
        self.changes.push(Change::RemoveMember {
            list: self.key().to_string(),
            addr: addr.to_string(),
        });
        let lc = addr.to_lowercase();
        self.joined.retain(|a| a != &lc);
        self.left.push(lc);
        self.notify_owners("left", addr, via);
    }

    /// The welcome text, with the member's one-click unsubscribe link when there is a web
    /// endpoint.
    pub(super) fn welcome(&mut self, addr: &str, lang: Language, re: Option<&str>) {
        let url = self.ctx.cfg.base_url().map(|b| {
            let uid = self.uid_of(addr);
            format!("{b}/u/{}", self.ctx.secret.one_click(uid, self.key(), addr))
        });
        let vars = minijinja::context! { address => addr, unsubscribe_url => url };
        self.reply(addr, lang, "welcome", vars, re);
    }

    /// `subscribe [addr]` / `unsubscribe [addr]` from `requester`: a confirmation request to
    /// the address concerned.
    pub(super) fn request_change(
        &mut self,
        subscribe: bool,
        target: Option<String>,
        requester: &str,
        name: Option<String>,
        hint: Option<Language>,
    ) -> crate::store::Result<()> {
        let target = target.unwrap_or_else(|| requester.to_string());
        let own = target.eq_ignore_ascii_case(requester);
        let member = self.is_member(&target)?;
        let c = &self.ctx.cfg.commands;
        let (per_addr, per_req) = (
            c.max_confirmations_per_address,
            c.max_confirmations_per_requester,
        );
        let nothing_to_do = subscribe == member;
        if nothing_to_do && own {
            // About the asker's own address: say so in the answer.
            let kind = if subscribe {
                "already-member"
            } else {
                "not-member"
            };
            self.results.push(Res::new(kind).addr(&target));
            return Ok(());
        }
        if !self.within(CONFIRM, &target, per_addr)?
            || (!own && !self.within(CONFIRM_BY, requester, per_req)?)
        {
            tracing::info!(
                list = %self.list.local(),
                "confirmation limit reached; nothing sent"
            );
            // Not even a "too many requests" answer to the address itself: that would be
            // one more mail to someone who may never have asked for any.
            let mut r = Res::new("rate-limited").addr(&target);
            r.silent = own;
            self.results.push(r);
            return Ok(());
        }
        let lang = self.lang_for(&target, hint);
        let sent = if nothing_to_do {
            // Someone asked for another address: tell that address, and answer the asker
            // exactly as if a confirmation had gone out (membership is nobody else's business).
            let t = if subscribe {
                "already-member"
            } else {
                "not-member"
            };
            let vars = minijinja::context! { address => target.clone() };
            self.send(&target, lang, t, vars, "auto-replied", None, None, None)
        } else {
            let id = self.ctx.store.new_id()?;
            let expires_ms = self.now + self.ctx.cfg.commands.confirm_expiry.as_millis() as i64;
            let expires_s = u32::try_from(expires_ms / 1000).unwrap_or(u32::MAX);
            let kind = if subscribe {
                Kind::Subscribe
            } else {
                Kind::Unsubscribe
            };
            let token = self
                .ctx
                .secret
                .issue(kind, id, expires_s, self.key(), &target);
            self.changes.push(Change::PutPending {
                id,
                pending: Pending {
                    action: if subscribe {
                        "subscribe"
                    } else {
                        "unsubscribe"
                    }
                    .into(),
                    list: self.key().to_string(),
                    address: target.clone(),
                    name: if own { name } else { None },
                    expires_ms,
                    language: hint,
                    used_ms: None,
                    ops: Vec::new(),
                    commands: Vec::new(),
                },
            });
            let confirm_address = format!(
                "{}-confirm+{}@{}",
                self.list.local(),
                token,
                self.list.domain()
            );
            let confirm_url = self
                .ctx
                .cfg
                .base_url()
                .map(|b| format!("{b}/confirm/{token}"));
            let expires = date_text(self.list, expires_ms);
            let vars = minijinja::context! {
                address => target.clone(), token, confirm_address => confirm_address.clone(),
                confirm_url, expires, by_other => !own,
            };
            let t = if subscribe {
                "confirm-subscribe"
            } else {
                "confirm-unsubscribe"
            };
            self.send(
                &target,
                lang,
                t,
                vars,
                "auto-replied",
                Some(confirm_address),
                None,
                None,
            )
        };
        if sent {
            self.hit(CONFIRM, &target);
            if !own {
                self.hit(CONFIRM_BY, requester);
            }
            let mut r = Res::new("confirm-sent").addr(&target);
            r.silent = own;
            self.results.push(r);
        }
        Ok(())
    }

    /// A pending request for `addr` and the token that confirms it (see [`pending_token`]).
    pub(super) fn pending_token(
        &mut self,
        kind: Kind,
        action: &str,
        addr: &str,
        expires_ms: i64,
        language: Option<Language>,
    ) -> crate::store::Result<String> {
        let (token, change) = pending_token(
            self.ctx, self.list, kind, action, addr, expires_ms, language,
        )?;
        self.changes.push(change);
        Ok(token)
    }

    /// A one-time login link to the members-only archive, mailed to `member` (who must be
    /// one: the caller checks, and answers a non-member the same way on the web).
    pub fn archive_login(&mut self, member: &str) -> crate::store::Result<()> {
        // Counted as answers (20 a day), not as confirmations (3): a member may log in from
        // several devices.
        if !self.within(REPLY, member, self.ctx.cfg.commands.max_replies_per_address)? {
            tracing::info!(list = %self.list.local(), "login link limit reached; nothing sent");
            return Ok(());
        }
        let Some(base) = self.ctx.cfg.base_url() else {
            self.results
                .push(Res::new("invalid").reason("this server has no web address for the archive"));
            return Ok(());
        };
        // One hour, and once.
        let expires_ms = self.now + 3_600_000;
        let token = self.pending_token(Kind::Login, "login", member, expires_ms, None)?;
        let lang = self.lang_for(member, None);
        let vars = minijinja::context! {
            address => member,
            login_url => format!("{base}/login/{}/{token}", self.list.local()),
            expires => date_text(self.list, expires_ms),
            days => self.list.archive_session_days,
        };
        if self.send(
            member,
            lang,
            "archive-login",
            vars,
            "auto-replied",
            None,
            None,
            None,
        ) {
            self.hit(REPLY, member);
            let mut r = Res::new("login-sent").addr(member);
            r.silent = true;
            self.results.push(r);
        }
        Ok(())
    }

    /// `forget`: a confirmation to the sender's own address (never for another address).
    pub(super) fn request_forget(
        &mut self,
        requester: &str,
        hint: Option<Language>,
    ) -> crate::store::Result<()> {
        let keeps = self.list.forget_posts == crate::config::ForgetPosts::Keep;
        let vars = minijinja::context! { address => requester, keeps_posts => keeps };
        self.confirm_own(
            requester,
            hint,
            Kind::Forget,
            "forget",
            "confirm-forget",
            vars,
        )?;
        Ok(())
    }

    /// Asks `requester` to confirm `action` at their own address (rate-limited like every
    /// confirmation): the pending request, and the mail `template` with `vars` and the
    /// token, confirmation address and link.
    pub(super) fn confirm_own(
        &mut self,
        requester: &str,
        hint: Option<Language>,
        kind: Kind,
        action: &str,
        template: &str,
        vars: minijinja::Value,
    ) -> crate::store::Result<Option<&mut Pending>> {
        let limit = self.ctx.cfg.commands.max_confirmations_per_address;
        self.confirm_own_in(
            CONFIRM, limit, requester, hint, kind, action, template, vars,
        )
    }

    /// As [`Plan::confirm_own`], counted in `bucket` against `limit`. Returns the pending
    /// request it made (none when the limit is reached), for the caller to add the work
    /// it carries.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn confirm_own_in(
        &mut self,
        bucket: &str,
        limit: u32,
        requester: &str,
        hint: Option<Language>,
        kind: Kind,
        action: &str,
        template: &str,
        vars: minijinja::Value,
    ) -> crate::store::Result<Option<&mut Pending>> {
        if !self.within(bucket, requester, limit)? {
            let mut r = Res::new("rate-limited").addr(requester);
            r.silent = true;
            self.results.push(r);
            return Ok(None);
        }
        let lang = self.lang_for(requester, hint);
        let expires_ms = self.now + self.ctx.cfg.commands.confirm_expiry.as_millis() as i64;
        let at = self.changes.len();
        let token = self.pending_token(kind, action, requester, expires_ms, hint)?;
        let confirm_address = self.list.sub_address(&format!("confirm+{token}"));
        // The web page confirms memberships and forgetting; owners' actions and settings
        // are confirmed by reply only.
        let confirm_url = self
            .ctx
            .cfg
            .base_url()
            .filter(|_| !matches!(kind, Kind::OwnerAction | Kind::Settings))
            .map(|b| format!("{b}/confirm/{token}"));
        let base = minijinja::context! {
            token, confirm_address => confirm_address.clone(),
            confirm_url, expires => date_text(self.list, expires_ms),
        };
        let vars = minijinja::value::merge_maps([vars, base]);
        if self.send(
            requester,
            lang,
            template,
            vars,
            "auto-replied",
            Some(confirm_address),
            None,
            None,
        ) {
            self.hit(bucket, requester);
            let mut r = Res::new("confirm-sent").addr(requester);
            r.silent = true;
            self.results.push(r);
        }
        Ok(match self.changes.get_mut(at) {
            Some(Change::PutPending { pending, .. }) => Some(pending),
            _ => None,
        })
    }

    /// Checks a confirmation token; on success returns the pending request and its id.
    pub fn check_pending(
        &self,
        text: &str,
        expect_list: bool,
    ) -> crate::store::Result<Result<(u64, Pending), TokenFail>> {
        let Some(t) = Token::parse(text) else {
            return Ok(Err(TokenFail::Forged));
        };
        if !matches!(
            t.kind,
            Kind::Subscribe
                | Kind::Unsubscribe
                | Kind::Reenable
                | Kind::Forget
                | Kind::OwnerAction
                | Kind::Settings
        ) {
            return Ok(Err(TokenFail::Forged));
        }
        let Some(p) = self.ctx.store.pending(t.id)? else {
            return Ok(Err(TokenFail::Forged));
        };
        if !self.ctx.secret.verify(&t, &p.list, &p.address) {
            return Ok(Err(TokenFail::Forged));
        }
        if expect_list && !p.list.eq_ignore_ascii_case(self.key()) {
            return Ok(Err(TokenFail::OtherList));
        }
        if p.used_ms.is_some() {
            return Ok(Err(TokenFail::Used));
        }
        if t.expired(self.now) || p.expires_ms < self.now {
            return Ok(Err(TokenFail::Expired));
        }
        Ok(Ok((t.id, p)))
    }

    /// Carries out a confirmed request. `re` is the Message-ID of the confirming mail.
    pub fn confirm(&mut self, id: u64, p: Pending, via: &str, re: Option<&str>) {
        self.changes.push(Change::UsePending {
            id,
            at_ms: self.now,
        });
        self.confirmed_lang = self.confirmed_lang.or(p.language);
        let member = self.is_member(&p.address).unwrap_or(false);
        let lang = self.lang_for(&p.address, p.language);
        if p.action == "forget" {
            // Delivery stops now; the rest is done by the pipeline task (see `forget`).
            self.changes.push(Change::RemoveMember {
                list: self.key().to_string(),
                addr: p.address.clone(),
            });
            self.changes.push(Change::RequestForget {
                list: self.key().to_string(),
                addr: p.address.clone(),
            });
            let vars = minijinja::context! { address => p.address.clone() };
            if self.send(
                &p.address,
                lang,
                "forgotten",
                vars,
                "auto-replied",
                None,
                re,
                None,
            ) {
                if let Some(m) = self.mail.last_mut() {
                    m.kind = "forgotten".into();
                }
            }
            let mut r = Res::new("forgotten").addr(&p.address);
            r.silent = true;
            self.results.push(r);
            return;
        }
        if p.action == "settings" {
            if !member {
                self.results.push(Res::new("not-member-set"));
                return;
            }
            for line in &p.commands {
                if let LineParse::Cmd { cmd, .. } = parse_line(line) {
                    self.apply_set(&p.address, cmd);
                }
            }
            return;
        }
        if p.action == "owner-members" {
            // Still an owner when confirming (the configuration may have changed).
            if !is_owner(self.list, &p.address) {
                self.results
                    .push(Res::new("token-invalid").reason(TokenFail::NotOwner.code()));
                return;
            }
            if let Err(e) = owner::apply(self, &p.ops, "owner") {
                tracing::error!(error = %e, "cannot read members; the owner's changes were not made");
                self.results.push(
                    Res::new("invalid")
                        .reason("a store error; nothing was changed, please try again"),
                );
            }
            return;
        }
        if let Some(rest) = p.action.strip_prefix("qa:") {
            // `qa:<solved|reopen>:<thread>:<answer or 0>`, made by `request_qa_mark`.
            let parts: Vec<&str> = rest.split(':').collect();
            let parsed = match parts.as_slice() {
                [what, t, a] => t
                    .parse::<u64>()
                    .ok()
                    .zip(a.parse::<u64>().ok())
                    .map(|(t, a)| (*what == "solved", t, a)),
                _ => None,
            };
            match parsed {
                Some((solved, thread, answer)) => {
                    self.changes.push(Change::QaOwnerMark {
                        list: self.key().to_string(),
                        thread,
                        mark: crate::store::QaOwnerMark {
                            at_ms: self.now,
                            solved,
                            accepted: (answer != 0 && solved).then_some(answer),
                        },
                    });
                    let mut r = Res::new("qa-marked");
                    r.value = Some(if solved { "solved" } else { "reopened" }.into());
                    r.count = Some(thread as usize);
                    self.results.push(r);
                }
                None => self
                    .results
                    .push(Res::new("token-invalid").reason(TokenFail::Forged.code())),
            }
            return;
        }
        if p.action == "reenable" {
            match self.ctx.store.is_member(self.key(), &p.address) {
                Ok(true) => {
                    self.changes.push(Change::SetMember {
                        list: self.key().to_string(),
                        addr: p.address.clone(),
                        settings: MemberSettings {
                            clear_bounce: true,
                            ..MemberSettings::default()
                        },
                    });
                    self.results.push(Res::new("reenabled").addr(&p.address));
                }
                _ => self.results.push(Res::new("not-member").addr(&p.address)),
            }
            return;
        }
        if p.action == "subscribe" {
            if member {
                self.results
                    .push(Res::new("already-member").addr(&p.address));
                return;
            }
            self.add_member(&p.address, p.name.clone(), p.language, via);
            self.welcome(&p.address, lang, re);
            let mut r = Res::new("subscribed").addr(&p.address);
            r.silent = true;
            self.results.push(r);
        } else {
            if !member {
                self.results.push(Res::new("not-member").addr(&p.address));
                return;
            }
            self.remove_member(&p.address, via);
            let vars = minijinja::context! { address => p.address.clone() };
            self.reply(&p.address, lang, "goodbye", vars, re);
            let mut r = Res::new("unsubscribed").addr(&p.address);
            r.silent = true;
            self.results.push(r);
        }
    }

    pub fn welcome_member(&mut self, addr: &str) {
        let lang = self.list.language;
        self.welcome(addr, lang, None);
    }

    /// RFC 8058 one-click: removes the member the token names, at once.
    pub fn one_click(&mut self, text: &str) -> crate::store::Result<Result<String, TokenFail>> {
        let Some(t) = Token::parse(text).filter(|t| t.kind == Kind::OneClick) else {
            return Ok(Err(TokenFail::Forged));
        };
        let Some((list, m)) = self.ctx.store.member_by_uid(t.id)? else {
            return Ok(Err(TokenFail::NotMember));
        };
        if !list.eq_ignore_ascii_case(self.key()) {
            return Ok(Err(TokenFail::OtherList));
        }
        if !self.ctx.secret.verify(&t, &list, &m.address) {
            return Ok(Err(TokenFail::Forged));
        }
        let lang = m.language.unwrap_or(self.list.language);
        self.remove_member(&m.address, "web");
        let vars = minijinja::context! { address => m.address.clone() };
        self.reply(&m.address, lang, "goodbye", vars, None);
        Ok(Ok(m.address))
    }
}
