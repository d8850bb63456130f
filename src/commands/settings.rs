//! `set` commands, and questions marked solved or reopened by mail.

use super::*;

impl<'a> Plan<'a> {
    /// An owner's `opgelost URL` / `heropend URL`: checked against the archive's threads,
    /// then confirmed by the owner's own address before anything changes (a From line can
    /// be forged; the confirmation cannot).
    pub(super) fn request_qa_mark(
        &mut self,
        requester: &str,
        solved: bool,
        thread: &str,
        hint: Option<Language>,
    ) -> crate::store::Result<()> {
        let (t, answer) =
            match crate::archive::qa::owner_target(self.ctx.store, self.key(), thread, None)? {
                Ok((t, accepted)) => (t, accepted.unwrap_or(0)),
                Err(why) => {
                    let mut r = Res::new("invalid").reason(why);
                    r.line = Some(thread.to_string());
                    self.results.push(r);
                    return Ok(());
                }
            };
        let action = format!(
            "qa:{}:{}:{answer}",
            if solved { "solved" } else { "reopen" },
            t.id
        );
        let vars = minijinja::context! {
            solved, subject => t.subject.clone(), thread => t.id,
            answer => (answer != 0).then_some(answer),
        };
        self.confirm_own(
            requester,
            hint,
            Kind::OwnerAction,
            &action,
            "confirm-owner",
            vars,
        )?;
        Ok(())
    }

    /// Carries out one `set` command for member `addr`: an intent applied to the record
    /// inside the transaction, so that every `set` of one mail survives, whatever else
    /// changes the record meanwhile.
    pub(super) fn apply_set(&mut self, addr: &str, cmd: Cmd) {
        let list = self.list;
        let mut st = MemberSettings::default();
        let (setting, value) = match cmd {
            Cmd::SetNomailUntil(d) => {
                let until = start_of_day_ms(list, d);
                if until <= now_ms() {
                    self.results.push(
                        Res::new("invalid").reason("that date has passed; nothing was changed"),
                    );
                    return;
                }
                st.nomail = Some(true);
                st.nomail_until = Some(Some(until));
                ("nomail-until", d.format("%d-%m-%Y").to_string())
            }
            Cmd::SetDigestPlain(plain) => {
                st.digest = Some(true);
                st.digest_plain = Some(plain);
                ("digest", if plain { "plain" } else { "on" }.to_string())
            }
            Cmd::SetNomail(v) => {
                st.nomail = Some(v);
                st.nomail_until = Some(None);
                // "I want mail again" also ends a stop for bounces.
                st.clear_bounce = !v;
                ("nomail", if v { "on" } else { "off" }.to_string())
            }
            Cmd::SetDigest(v) => {
                st.digest = Some(v);
                ("digest", if v { "on" } else { "off" }.to_string())
            }
            Cmd::SetLanguage(l) => {
                st.language = Some(Some(l));
                ("language", l.code().to_string())
            }
            _ => return,
        };
        self.changes.push(Change::SetMember {
            list: list.key().to_string(),
            addr: addr.to_string(),
            settings: st,
        });
        let mut r = Res::new("set");
        r.setting = Some(setting);
        r.value = Some(value);
        self.results.push(r);
    }

    /// A member's `set` lines sent without a DKIM signature of their domain: one
    /// confirmation request to the member's own address, holding the lines.
    pub(super) fn request_settings(
        &mut self,
        requester: &str,
        lines: Vec<String>,
        hint: Option<Language>,
    ) -> crate::store::Result<()> {
        let vars = minijinja::context! { commands => lines.clone(), address => requester };
        // Counted as confirmations (a forged `set` must not become a mail bomb).
        if let Some(p) = self.confirm_own(
            requester,
            hint,
            Kind::Settings,
            "settings",
            "confirm-settings",
            vars,
        )? {
            p.commands = lines;
        }
        Ok(())
    }

    /// The welcome text for a member added by an owner.
    /// The thread a request mail replies to (its In-Reply-To or References name a post of
    /// the list), and its subject; `None` when it replies to none.
    pub(super) fn replied_thread(
        &self,
        refs: &[String],
    ) -> crate::store::Result<Option<(u64, Option<String>)>> {
        let (store, key) = (self.ctx.store, self.key());
        let mut ours = false;
        for r in refs {
            if store.thread_of(key, r)?.is_some() || store.seen_message_id(key, r)? {
                ours = true;
                break;
            }
        }
        if !ours {
            return Ok(None);
        }
        let place = store.place_in_thread(key, "", refs)?;
        let subject = store.thread_info(key, place.thread)?.map(|i| i.subject);
        Ok(Some((place.thread, subject)))
    }
}
