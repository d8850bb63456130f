//! From spool to decision: route, classify, apply the posting policy.
//!
//! Each spooled message is decided on its own and the decision is applied with its removal
//! from the spool in one store transaction ([`Store::apply`]), so a crash at any point
//! either leaves the message in the spool (decided again on restart) or fully applied.

use crate::compose::{self, normalize_crlf};
use crate::config::{Config, Language, ListConfig, Posting};
use crate::router::{self, Route};
use crate::store::{now_ms, Applied, Held, OutMail, Outcome, PostMeta, SpoolItem, Store};
use mail_parser::MessageParser;
use std::sync::Arc;
use tokio::sync::{watch, Notify};

/// Why a message to the posting address is not a post.
fn classify(list: &ListConfig, msg: &mail_parser::Message) -> Option<String> {
    let own_id = list.list_id().to_ascii_lowercase();
    for (name, value) in msg.headers_raw() {
        let v = value.trim().to_ascii_lowercase();
        if name.eq_ignore_ascii_case("list-id") && v.contains(&format!("<{own_id}>")) {
            return Some("mail loop: carries our own List-Id".into());
        }
        if name.eq_ignore_ascii_case("x-loop") && v.contains(&list.address.to_ascii_lowercase()) {
            return Some("mail loop: carries our own X-Loop".into());
        }
        // RFC 3834: anything automatic never reaches the list.
        if name.eq_ignore_ascii_case("auto-submitted") && !v.is_empty() && v != "no" {
            return Some(format!("automatic message (Auto-Submitted: {v})"));
        }
        if name.eq_ignore_ascii_case("precedence") && matches!(v.as_str(), "bulk" | "junk" | "list")
        {
            return Some(format!("automatic message (Precedence: {v})"));
        }
    }
    None
}

/// The address part of the first From mailbox, and its display name.
fn author(msg: &mail_parser::Message) -> Option<(String, Option<String>)> {
    let a = msg.from()?.first()?;
    let addr = a.address()?.trim().to_string();
    if !crate::config::valid_address(&addr) {
        return None;
    }
    Some((addr, a.name().map(str::to_string)))
}

/// Decides what becomes of one spooled message. Pure apart from store reads.
pub fn decide(cfg: &Config, store: &Store, spool_id: u64, item: &SpoolItem) -> Outcome {
    let Some((list, route)) = router::route(cfg, &item.envelope.rcpt) else {
        return Outcome::Quarantine {
            reason: "recipient is no longer a list address of this configuration".into(),
        };
    };
    let raw = normalize_crlf(&item.raw).into_owned();
    let Some(msg) = MessageParser::default().parse(&raw) else {
        return Outcome::Quarantine {
            reason: "message could not be parsed".into(),
        };
    };
    match route {
        Route::Bounces { member } => Outcome::Quarantine {
            reason: match member {
                Some(_) => "bounce for a member (VERP); kept for bounce processing".into(),
                None => "bounce without VERP address; kept for bounce processing".into(),
            },
        },
        Route::Owner | Route::Request(_) => {
            if let Some(reason) = classify(list, &msg) {
                return Outcome::Quarantine { reason };
            }
            // Until mail commands are handled by the software, requests (join, leave, help)
            // reach the owners, who act with `vraagbaak members add/remove`.
            let (kind, header) = match route {
                Route::Request(word) => (
                    "request-forward",
                    format!("X-Vraagbaak-Request: {word}\r\n"),
                ),
                _ => ("owner-forward", String::new()),
            };
            let mut fwd = format!("X-Loop: {}\r\n{header}", list.sub_address("owner")).into_bytes();
            fwd.extend_from_slice(&raw);
            Outcome::Send {
                mail: vec![out_mail(list, kind, fwd)],
            }
        }
        Route::Post => decide_post(cfg, store, spool_id, item, list, &raw, &msg),
    }
}

fn out_mail(list: &ListConfig, kind: &str, raw: Vec<u8>) -> OutMail {
    let now = now_ms();
    OutMail {
        id: 0,
        mail_from: list.sub_address("bounces"),
        rcpts: list.owners.clone(),
        attempts: 0,
        first_ms: now,
        next_ms: now,
        last_error: None,
        kind: kind.into(),
        raw,
    }
}

fn decide_post(
    cfg: &Config,
    store: &Store,
    spool_id: u64,
    item: &SpoolItem,
    list: &ListConfig,
    raw: &[u8],
    msg: &mail_parser::Message,
) -> Outcome {
    let mut raw = raw.to_vec();
    if let Some(reason) = classify(list, msg) {
        return Outcome::Quarantine { reason };
    }
    let Some((from_addr, from_name)) = author(msg) else {
        return Outcome::Quarantine {
            reason: "no usable From address".into(),
        };
    };
    let message_id = match msg.message_id() {
        Some(id) if !id.trim().is_empty() => id.trim().to_string(),
        _ => {
            // As an MTA does for local submissions: give it one, so replies can thread.
            let id = format!(
                "{}.{}.vraagbaak@{}",
                item.envelope.received_ms, spool_id, cfg.smtp.hostname
            );
            let mut with = format!("Message-ID: <{id}>\r\n").into_bytes();
            with.extend_from_slice(&raw);
            raw = with;
            id
        }
    };
    let subject = msg.subject().unwrap_or("").to_string();
    let key = list.key();
    let policy_hold = match list.posting {
        _ if item.envelope.approved => None,
        Posting::Open => None,
        Posting::Moderated => Some("the list is moderated"),
        Posting::Members => match store.is_member(key, &from_addr) {
            Ok(true) => None,
            Ok(false) => Some("the sender is not a member"),
            Err(_) => Some("membership could not be checked"),
        },
    };
    if let Some(reason) = policy_hold {
        let notice = held_notice(cfg, list, reason, &from_addr, &subject, &raw);
        return Outcome::Hold {
            held: Held {
                list: key.to_string(),
                id: 0,
                reason: reason.into(),
                message_id,
                from_addr,
                subject,
                envelope: item.envelope.clone(),
                raw,
            },
            notices: list
                .owners
                .is_empty()
                .then(Vec::new)
                .unwrap_or_else(|| vec![out_mail(list, "held-notice", notice)]),
        };
    }
    let recipients = match store.members(key) {
        Ok(m) => m.into_iter().map(|m| m.address).collect(),
        Err(e) => {
            tracing::error!(error = %e, "cannot read members; message stays spooled");
            return Outcome::Quarantine {
                reason: format!("members could not be read: {e}"),
            };
        }
    };
    Outcome::Accept {
        meta: PostMeta {
            list: key.to_string(),
            seq: 0,
            message_id,
            from_addr,
            from_name,
            subject,
            date: msg.date().map(|d| d.to_rfc3339()),
            received_ms: item.envelope.received_ms,
            recipients: 0,
        },
        raw,
        recipients,
        notices: Vec::new(),
    }
}

/// The mail to the owners about a held post, with the post attached (message/rfc822).
fn held_notice(
    cfg: &Config,
    list: &ListConfig,
    reason: &str,
    from: &str,
    subject: &str,
    raw: &[u8],
) -> Vec<u8> {
    let (subj, text) = match list.language {
        Language::Nl => (
            format!("{} Bericht wacht op goedkeuring: {}", list.name, subject),
            format!(
                "Een bericht aan {} wacht op goedkeuring.\r\n\r\nAfzender: {}\r\nOnderwerp: {}\r\nReden: {}\r\n\r\n\
Keur goed of weiger met:\r\n  vraagbaak moderate list\r\n  vraagbaak moderate approve ID\r\n  vraagbaak moderate reject ID\r\n\r\n\
Het bericht zit als bijlage bij deze mail.\r\n",
                list.address,
                from,
                subject,
                reason_nl(reason)
            ),
        ),
        Language::En => (
            format!("{} Post held for approval: {}", list.name, subject),
            format!(
                "A post to {} is waiting for approval.\r\n\r\nSender: {}\r\nSubject: {}\r\nReason: {}\r\n\r\n\
Approve or reject with:\r\n  vraagbaak moderate list\r\n  vraagbaak moderate approve ID\r\n  vraagbaak moderate reject ID\r\n\r\n\
The post is attached to this mail.\r\n",
                list.address, from, subject, reason
            ),
        ),
    };
    let boundary = format!("=_vraagbaak_held_{:016x}", rand::random::<u64>());
    let mut m = format!(
        "From: {name} <{owner}>\r\nTo: {owners}\r\nSubject: {subj}\r\nDate: {date}\r\n\
Message-ID: <held.{rnd:016x}@{host}>\r\nAuto-Submitted: auto-generated\r\nPrecedence: bulk\r\n\
X-Loop: {addr}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n\
--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{text}\r\n\
--{boundary}\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment\r\n\r\n",
        name = compose::phrase(&list.name),
        owner = list.sub_address("owner"),
        owners = list.owners.join(", "),
        subj = compose::encode_header_text(&subj),
        date = chrono::Utc::now().to_rfc2822(),
        rnd = rand::random::<u64>(),
        host = cfg.smtp.hostname,
        addr = list.address,
    )
    .into_bytes();
    m.extend_from_slice(raw);
    if !raw.ends_with(b"\n") {
        m.extend_from_slice(b"\r\n");
    }
    m.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    m
}

fn reason_nl(reason: &str) -> &str {
    match reason {
        "the list is moderated" => "de lijst is gemodereerd",
        "the sender is not a member" => "de afzender is geen lid",
        _ => reason,
    }
}

/// Decides and applies one spooled message. Idempotent: a message no longer in the spool
/// was already applied.
pub fn process(cfg: &Config, store: &Store, spool_id: u64) -> crate::store::Result<Applied> {
    let Some(item) = store.spooled(spool_id)? else {
        return Ok(Applied::Dropped);
    };
    // A parser panic on hostile input must cost one message (kept in quarantine), never the
    // pipeline: without this, the message would be retried forever.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        decide(cfg, store, spool_id, &item)
    }))
    .unwrap_or_else(|_| Outcome::Quarantine {
        reason: "internal error while reading the message (parser panic)".into(),
    });
    let list = router::route(cfg, &item.envelope.rcpt).map(|(l, _)| l.local().to_string());
    let applied = store.apply(spool_id, outcome)?;
    // Durable before anything acts on it: outbound may read the new queue rows at once, and
    // a decision lost in a crash after some copies went out would be taken again (a new
    // number, every copy sent twice).
    store.flush()?;
    let list = list.as_deref().unwrap_or("-");
    match &applied {
        Applied::Posted { seq } => tracing::info!(list, seq, "post accepted"),
        Applied::Duplicate => {
            tracing::info!(list, spool_id, "duplicate Message-ID, not posted again")
        }
        Applied::Held { id } => tracing::info!(list, held_id = id, "post held for moderation"),
        Applied::Quarantined { id } => {
            tracing::warn!(list, quarantine_id = id, "message quarantined")
        }
        Applied::Sent => tracing::info!(list, "forwarded to the owners"),
        Applied::Dropped => {}
    }
    Ok(applied)
}

/// Processes every spooled message (oldest first). Returns how many were applied.
pub fn drain(cfg: &Config, store: &Store) -> crate::store::Result<usize> {
    let ids = store.spooled_ids()?;
    let n = ids.len();
    for id in ids {
        process(cfg, store, id)?;
    }
    Ok(n)
}

/// The pipeline task: drains the spool whenever inbound rings, and once at start (a
/// restart resumes what a crash left). Wakes the outbound side after each pass.
pub async fn run(
    cfg: Arc<Config>,
    store: Store,
    wake_in: Arc<Notify>,
    wake_out: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (c, s) = (cfg.clone(), store.clone());
        match tokio::task::spawn_blocking(move || drain(&c, &s)).await {
            Ok(Ok(n)) if n > 0 => wake_out.notify_one(),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "pipeline pass failed; retrying"),
            Err(e) => tracing::error!(error = %e, "pipeline task panicked; retrying"),
        }
        tokio::select! {
            _ = wake_in.notified() => {}
            _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
            _ = shutdown.changed() => return,
        }
    }
}
