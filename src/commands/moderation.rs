//! Held posts: approving and rejecting by reply, and the poster's own confirmation.

use super::*;

impl<'a> Plan<'a> {
    /// Approves or rejects a held post. The poster hears of a rejection.
    pub fn moderate(&mut self, h: &Held, approve: bool, add_member: bool, reason: Option<&str>) {
        if approve {
            self.changes.push(Change::ReleaseHeld { id: h.id });
            if add_member && !self.is_member(&h.from_addr).unwrap_or(true) {
                self.add_member(&h.from_addr, None, None, "moderator");
                let lang = self.list.language;
                self.welcome(&h.from_addr.clone(), lang, None);
            }
            let mut r = Res::new("approved");
            r.subject = Some(h.subject.clone());
            r.value = add_member.then(|| "member".to_string());
            self.results.push(r);
        } else {
            self.changes.push(Change::DiscardHeld { id: h.id });
            if !h.envelope.mail_from.is_empty() {
                let lang = self.lang_for(&h.from_addr, None);
                let vars = minijinja::context! { subject => h.subject.clone(), reason };
                let re = Some(h.message_id.clone());
                self.reply(&h.from_addr.clone(), lang, "rejected", vars, re.as_deref());
            }
            let mut r = Res::new("rejected");
            r.subject = Some(h.subject.clone());
            self.results.push(r);
        }
    }

    /// Asks the poster of a post held for its identifiers (`pii_posts = "hold"`) to
    /// confirm it by reply; rate-limited like every confirmation (past the limit the post
    /// waits for an owner's `approve`). The token is bound to the held record and the
    /// poster's address, so the held record is all the state there is.
    pub fn ask_poster_to_confirm(
        &mut self,
        h: &Held,
        kinds: &[crate::redact::Kind],
    ) -> crate::store::Result<()> {
        let limit = self.ctx.cfg.commands.max_confirmations_per_address;
        if !self.within(CONFIRM, &h.from_addr, limit)? {
            tracing::info!(
                held_id = h.id,
                "confirmation limit reached; the post waits for an owner"
            );
            return Ok(());
        }
        let lang = self.lang_for(&h.from_addr, None);
        let expires_ms = self.now + self.ctx.cfg.commands.confirm_expiry.as_millis() as i64;
        let expires_s = u32::try_from(expires_ms / 1000).unwrap_or(u32::MAX);
        let token = self.ctx.secret.issue(
            Kind::PosterRelease,
            h.id,
            expires_s,
            self.key(),
            &h.from_addr,
        );
        let confirm_address = self.list.sub_address(&format!("confirm+{token}"));
        let labels: Vec<&str> = kinds.iter().map(|k| k.label(lang)).collect();
        let vars = minijinja::context! {
            subject => h.subject.clone(), kinds => labels, token,
            confirm_address => confirm_address.clone(), expires => date_text(self.list, expires_ms),
        };
        let re = Some(h.message_id.as_str());
        if self.send(
            &h.from_addr,
            lang,
            "confirm-post",
            vars,
            "auto-replied",
            Some(confirm_address),
            re,
            None,
        ) {
            self.hit(CONFIRM, &h.from_addr);
        }
        Ok(())
    }

    /// A poster's confirmation of a post held for its identifiers: by mail the token must
    /// come back from the poster's own address.
    pub(super) fn poster_release(
        &mut self,
        t: &Token,
        requester: &str,
    ) -> crate::store::Result<()> {
        let fail = match self.ctx.store.held_one(t.id)? {
            None => Some(TokenFail::NoHeld),
            Some(h) if !h.poster_confirms => Some(TokenFail::Forged),
            Some(h) if !self.ctx.secret.verify(t, &h.list, &h.from_addr) => Some(TokenFail::Forged),
            Some(h) if !h.list.eq_ignore_ascii_case(self.key()) => Some(TokenFail::OtherList),
            Some(h) if !h.from_addr.eq_ignore_ascii_case(requester) => {
                Some(TokenFail::OtherAddress)
            }
            Some(_) if t.expired(self.now) => Some(TokenFail::Expired),
            Some(h) => {
                self.changes.push(Change::PosterReleaseHeld { id: h.id });
                let mut r = Res::new("post-confirmed");
                r.subject = Some(h.subject.clone());
                self.results.push(r);
                None
            }
        };
        if let Some(f) = fail {
            self.results
                .push(Res::new("token-invalid").reason(f.code()));
        }
        Ok(())
    }

    /// Tells a poster that the archive masks the national number or account number their
    /// post holds (the list copy reached the members as written). Counted against the
    /// per-address reply limit.
    pub fn tell_poster_masked(
        &mut self,
        to: &str,
        subject: &str,
        kinds: &[crate::redact::Kind],
        message_id: &str,
    ) {
        let lang = self.lang_for(to, None);
        let labels: Vec<&str> = kinds.iter().map(|k| k.label(lang)).collect();
        let subject = crate::redact::mask_str(subject, self.list.redaction(), lang).into_owned();
        let vars = minijinja::context! { subject, kinds => labels };
        self.reply(to, lang, "pii-masked", vars, Some(message_id));
    }

    /// Tells a poster that the post waits for a moderator.
    pub fn held_notice(&mut self, h: &Held) {
        let lang = self.lang_for(&h.from_addr, None);
        let vars = minijinja::context! { subject => h.subject.clone(), reason => h.reason.clone() };
        let re = Some(h.message_id.clone());
        self.reply(&h.from_addr.clone(), lang, "held", vars, re.as_deref());
    }

    /// Checks a moderation token.
    pub fn check_moderation(&self, text: &str) -> crate::store::Result<Result<Held, TokenFail>> {
        let Some(t) = Token::parse(text).filter(|t| t.kind == Kind::Moderate) else {
            return Ok(Err(TokenFail::Forged));
        };
        let Some(h) = self.ctx.store.held_one(t.id)? else {
            return Ok(Err(TokenFail::NoHeld));
        };
        if !self.ctx.secret.verify(&t, &h.list, &h.from_addr) {
            return Ok(Err(TokenFail::Forged));
        }
        if !h.list.eq_ignore_ascii_case(self.key()) {
            return Ok(Err(TokenFail::OtherList));
        }
        Ok(Ok(h))
    }
}
