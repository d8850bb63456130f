//! Getting bytes in durably. No list logic lives here: a listener checks that a recipient
//! is ours ([`crate::router`]), and hands the message to [`accept`], which stores it in the
//! spool and flushes before the listener may acknowledge it.

pub mod imap;
pub mod inject;
pub mod smtp;

use crate::clock::now_ms;
use crate::config::Config;
use crate::router;
use crate::store::{Envelope, ImapMark, Store, StoreError};
use std::sync::Arc;
use tokio::sync::Notify;

/// Room for the list's header fields and footer, under which a post is surely not too big
/// for the relay without composing its copy.
const COPY_SLACK: usize = 64 * 1024;

/// What the inbound side shares: config, store, a bell to wake the pipeline, and what the
/// relay accepts (its `SIZE`, read by the delivery side).
pub struct Inbound {
    pub cfg: Arc<Config>,
    pub store: Store,
    pub wake: Arc<Notify>,
    pub relay: Arc<crate::outbound::RelayLimits>,
}

/// The verdict on one message for one recipient, as an SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Stored durably (`250 2.0.0`).
    Stored,
    /// Refused for its content (`550 5.6.0` / sysexits 65): the reason, for the client.
    /// The message was kept in quarantine when `quarantined` is set.
    Refused { reason: String, quarantined: bool },
    /// Could not store it now; the client should try later (`451 4.3.0` / sysexits 75).
    TryLater { reason: String },
    /// A post whose list copies would be larger than the relay accepts (`552 5.3.4` /
    /// sysexits 65): refused before it is stored, so that it never fails for every member.
    TooBig { max: usize },
}

impl Verdict {
    /// The store could not take the message now.
    pub fn try_later() -> Verdict {
        Verdict::TryLater {
            reason: "cannot store the message now, try again later".into(),
        }
    }

    /// The SMTP reply line (without CRLF).
    pub fn smtp_reply(&self) -> String {
        match self {
            Verdict::Stored => "250 2.0.0 Message accepted".into(),
            Verdict::Refused { reason, .. } => format!("550 5.6.0 {reason}"),
            Verdict::TryLater { reason } => format!("451 4.3.0 {reason}"),
            Verdict::TooBig { max } => format!(
                "552 5.3.4 Message too big for this list: its copies to the members would be \
                 larger than the mail relay accepts (at most {max} bytes per post)"
            ),
        }
    }
}

/// Checks the minimum a message needs to be a post: a header section of well-formed fields
/// (no NUL bytes) with a From. Anything else is refused at the door with a reason.
pub fn sanity_check(raw: &[u8]) -> Result<(), String> {
    if raw.contains(&0) {
        return Err("message contains NUL bytes".into());
    }
    let mut saw_field = false;
    let mut saw_from = false;
    for line in raw.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if !saw_field {
                return Err("message starts with a continuation line, not a header".into());
            }
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err("message has no header section (a line without a field name)".into());
        };
        let name = &line[..colon];
        // (An mbox "From " separator in front is refused here; `inject` strips it first.)
        if name.is_empty() || !name.iter().all(|&b| (33..=126).contains(&b)) {
            return Err("message has a malformed header field name".into());
        }
        saw_field = true;
        if name.eq_ignore_ascii_case(b"from") {
            saw_from = true;
        }
    }
    if !saw_field {
        return Err("message has no headers".into());
    }
    if !saw_from {
        return Err("message has no From header".into());
    }
    Ok(())
}

impl Inbound {
    /// The largest post a list takes now: our `smtp.max_message_size`, and below the relay's
    /// `SIZE` by [`crate::outbound::COPY_MARGIN`] when the relay advertises one. This is
    /// what our EHLO advertises.
    pub fn post_limit(&self) -> usize {
        let ours = self.cfg.smtp.max_message_size;
        self.relay.copy_limit().map_or(ours, |r| r.min(ours))
    }

    /// Whether the list copy of `raw` (composed as delivery will compose it) would be
    /// larger than the relay accepts; `Some(limit)` when it would.
    fn too_big_for_relay(&self, list: &crate::config::ListConfig, raw: &[u8]) -> Option<usize> {
        let limit = self.relay.copy_limit()?;
        if raw.len() > limit {
            return Some(limit.min(self.cfg.smtp.max_message_size));
        }
        // The footer may re-encode a part (base64 grows by a third): compose it to know.
        if raw.len() + raw.len() / 2 + COPY_SLACK <= limit {
            return None;
        }
        let copy = crate::compose::list_copy(
            list,
            &crate::compose::normalize_crlf(raw),
            self.cfg.http.is_some(),
            true,
        );
        (copy.len() > limit).then(|| limit.min(self.cfg.smtp.max_message_size))
    }

    /// Stores `raw` for each recipient in `rcpts` (already routed by the listener) and
    /// flushes; returns one verdict per recipient, in order. Only `Stored` may be
    /// acknowledged. A message that fails [`sanity_check`] is kept in quarantine and refused.
    pub async fn accept(
        &self,
        source: &str,
        mail_from: &str,
        rcpts: &[String],
        raw: &[u8],
    ) -> Vec<Verdict> {
        let received_ms = now_ms();
        let env = |rcpt: &str| Envelope {
            mail_from: mail_from.to_string(),
            rcpt: rcpt.to_string(),
            source: source.to_string(),
            received_ms,
            approved: false,
            poster_confirmed: false,
        };
        let insane = sanity_check(raw).err();
        if let Some(reason) = &insane {
            let first = rcpts.first().map(String::as_str).unwrap_or("");
            let stored = match self.store.quarantine(reason, env(first), raw) {
                Ok(id) => match self.store.flush_async().await {
                    Ok(()) => {
                        tracing::warn!(quarantine_id = id, source, reason = %reason, "refused malformed message, kept in quarantine");
                        true
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot flush the store");
                        false
                    }
                },
                Err(e) => {
                    tracing::error!(error = %e, "cannot store a malformed message in quarantine");
                    false
                }
            };
            // Refuse only what we kept; otherwise the client keeps it and tries again.
            let v = if stored {
                Verdict::Refused {
                    reason: reason.clone(),
                    quarantined: true,
                }
            } else {
                Verdict::try_later()
            };
            return vec![v; rcpts.len()];
        }
        // One stored copy per list address, not per recipient: any number of VERP bounce
        // addresses of one list share one copy (the bounce is about one message), so a
        // transaction cannot multiply one message by `max_recipients` on disk.
        let mut verdicts: Vec<Verdict> = Vec::with_capacity(rcpts.len());
        let mut stored_for: Vec<(String, String, usize)> = Vec::new();
        let mut wrote = false;
        for rcpt in rcpts {
            let Some((list, route)) = router::route(&self.cfg, rcpt) else {
                verdicts.push(Verdict::Refused {
                    reason: "no such list address".into(),
                    quarantined: false,
                });
                continue;
            };
            if route == router::Route::Post {
                if let Some(max) = self.too_big_for_relay(list, raw) {
                    tracing::info!(
                        source,
                        bytes = raw.len(),
                        max,
                        "post refused: its list copies would be larger than the relay accepts"
                    );
                    verdicts.push(Verdict::TooBig { max });
                    continue;
                }
            }
            let class = match route {
                router::Route::Bounces { .. } => (list.key().to_string(), "bounces".to_string()),
                r => (list.key().to_string(), format!("{r:?}")),
            };
            if let Some((_, _, i)) = stored_for
                .iter()
                .find(|(k, d, _)| *k == class.0 && *d == class.1)
            {
                let v = verdicts[*i].clone();
                verdicts.push(v);
                continue;
            }
            let res: Result<Verdict, StoreError> = self.store.spool(env(rcpt), raw).map(|id| {
                tracing::debug!(spool_id = id, source, "spooled");
                Verdict::Stored
            });
            match res {
                Ok(v) => {
                    wrote = true;
                    stored_for.push((class.0, class.1, verdicts.len()));
                    verdicts.push(v);
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot store incoming message");
                    verdicts.push(Verdict::try_later());
                }
            }
        }
        if wrote {
            if let Err(e) = self.store.flush_async().await {
                tracing::error!(error = %e, "cannot flush the store");
                for v in verdicts.iter_mut() {
                    if *v == Verdict::Stored {
                        *v = Verdict::try_later();
                    }
                }
            }
        }
        if verdicts.contains(&Verdict::Stored) {
            self.wake.notify_one();
        }
        verdicts
    }
}

impl Inbound {
    /// Stores a message fetched over IMAP for `rcpt` (a list address; `None` when no list
    /// could be found for it: the message is kept in quarantine), together with its mark
    /// (UID, Message-ID), and flushes. Only after `Ok` may the poller touch the message on
    /// the server. Malformed messages are kept in quarantine, like at the SMTP door.
    pub async fn accept_imap(
        &self,
        mail_from: &str,
        rcpt: Option<&str>,
        raw: &[u8],
        mark: &ImapMark,
    ) -> Result<Verdict, StoreError> {
        let env = Envelope {
            mail_from: mail_from.to_string(),
            rcpt: rcpt.unwrap_or("").to_string(),
            source: format!("imap:{}", mark.account),
            received_ms: now_ms(),
            approved: false,
            poster_confirmed: false,
        };
        let reason = match (sanity_check(raw), rcpt) {
            (Err(r), _) => Some(r),
            (Ok(()), None) => Some("no list address in the recipient headers".to_string()),
            (Ok(()), Some(_)) => None,
        };
        self.store
            .store_imap(Some(env), reason.as_deref(), raw, mark)?;
        self.store.flush_async().await?;
        Ok(match reason {
            Some(reason) => {
                tracing::warn!(account = %mark.account, uid = mark.uid, reason = %reason, "fetched message kept in quarantine");
                Verdict::Refused {
                    reason,
                    quarantined: true,
                }
            }
            None => {
                self.wake.notify_one();
                Verdict::Stored
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanity() {
        assert!(sanity_check(b"From: a@b.c\r\nSubject: x\r\n\r\nbody").is_ok());
        assert!(sanity_check(b"From: a@b.c\nSubject: x\n folded\n\nbody").is_ok());
        assert!(sanity_check(b"just some text\r\n\r\n").is_err());
        assert!(sanity_check(b"").is_err());
        assert!(sanity_check(b"Subject: x\r\n\r\nbody").is_err());
        assert!(sanity_check(b"From: a\x00b\r\n\r\n").is_err());
        assert!(sanity_check(b" folded first\r\nFrom: a@b.c\r\n\r\n").is_err());
        assert!(sanity_check(b"\xff\xfe\x01garbage: \r\n\r\n").is_err());
    }
}
