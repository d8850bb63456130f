//! From spool to decision: route, classify, apply the posting policy.
//!
//! Each spooled message is decided on its own and the decision is applied with its removal
//! from the spool in one store transaction ([`Store::apply`]), so a crash at any point
//! either leaves the message in the spool (decided again on restart) or fully applied.

use crate::bounce;
use crate::commands::{self, Incoming, Via};
use crate::compose::normalize_crlf;
use crate::config::{Config, ListConfig, Posting};
use crate::router::{self, Route};
use crate::store::{Applied, Change, Held, OutMail, Outcome, PostMeta, SpoolItem};
use crate::Services;
use mail_parser::MessageParser;
use std::sync::Arc;
use tokio::sync::{watch, Notify};

/// Subject beginnings of out-of-office replies (Dutch, French, English, German), compared
/// case-insensitively after an optional `[list]` tag. Single words count only with a colon
/// after them, so that "Absence of ..." or "Afwezigheid van een cliënt" stay questions.
/// The reason a post waits for its poster (`pii_posts = "hold"`); the texts know it.
pub const POSTER_CONFIRMS: &str = "it contains a national number or an account number";

const OOF_PHRASES: &[&str] = &[
    "automatisch antwoord",
    "automatische antwoord",
    "out of office",
    "out of the office",
    "automatic reply",
    "auto-reply",
    "autoreply",
    "auto reply",
    "réponse automatique",
    "reponse automatique",
    "automatische antwort",
    "abwesenheitsnotiz",
];
const OOF_WORDS: &[&str] = &["afwezig", "absence", "absent", "abwesenheit", "auto"];

/// Whether a subject is an out-of-office reply's.
pub fn out_of_office_subject(subject: &str) -> bool {
    let mut s = subject.trim();
    if s.starts_with('[') {
        if let Some(end) = s.find(']') {
            s = s[end + 1..].trim_start();
        }
    }
    let lower = s.to_lowercase();
    OOF_PHRASES.iter().any(|p| lower.starts_with(p))
        || OOF_WORDS.iter().any(|w| {
            lower
                .strip_prefix(w)
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
        })
}

/// Why a message to the posting or request address is not for the list: a loop, or
/// automatic mail (RFC 3834 and what auto-responders really send). The reason names the
/// signal, never the content.
fn classify(list: &ListConfig, msg: &mail_parser::Message) -> Option<String> {
    let own_id = list.list_id().to_ascii_lowercase();
    for (name, value) in msg.headers_raw() {
        let v = value.trim().to_ascii_lowercase();
        let is = |h: &str| name.eq_ignore_ascii_case(h);
        if is("list-id") && v.contains(&format!("<{own_id}>")) {
            return Some("mail loop: carries our own List-Id".into());
        }
        if is("x-loop") && v.contains(&list.address.to_ascii_lowercase()) {
            return Some("mail loop: carries our own X-Loop".into());
        }
        // RFC 3834: anything automatic never reaches the list.
        if is("auto-submitted") && !v.is_empty() && v != "no" {
            return Some(format!("automatic message (Auto-Submitted: {v})"));
        }
        if is("precedence") && matches!(v.as_str(), "bulk" | "junk" | "list" | "auto_reply") {
            return Some(format!("automatic message (Precedence: {v})"));
        }
        if is("x-autoreply") || is("x-autorespond") || is("x-autoresponder") {
            return Some(format!("automatic message ({name})"));
        }
        // Exchange marks its own automatic replies so; people's mail does not carry it.
        if is("x-auto-response-suppress") && (v.contains("all") || v.contains("oof")) {
            return Some("automatic message (X-Auto-Response-Suppress)".into());
        }
        if is("return-path") && v.trim_matches(['<', '>', ' ']).is_empty() {
            return Some("bounce or automatic message (Return-Path: <>)".into());
        }
    }
    if msg.subject().is_some_and(out_of_office_subject) {
        return Some("automatic message (out-of-office subject)".into());
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

/// Decides what becomes of one spooled message. Pure apart from store reads and DMARC
/// lookups (answered by `dns`, which the pass has filled beforehand). A store error is
/// returned, never turned into a decision: the message stays spooled and is tried again.
/// What a decision scored, logged by [`process`] once it is committed (a log line that says
/// a bounce was recorded must never be followed by a crash that loses it).
#[derive(Debug, Default)]
pub struct Scored {
    list: String,
    format: &'static str,
    severity: &'static str,
    status: String,
    effect: String,
    domain: String,
}

pub fn decide(
    svc: &Services,
    item: &SpoolItem,
    dns: &dyn crate::dns::Resolver,
    scored: &mut Option<Scored>,
) -> crate::store::Result<Outcome> {
    let cfg: &Config = &svc.cfg;
    let Some((list, route)) = router::route(cfg, &item.envelope.rcpt) else {
        return Ok(Outcome::Quarantine {
            reason: "recipient is no longer a list address of this configuration".into(),
        });
    };
    let raw = normalize_crlf(&item.raw).into_owned();
    let Some(msg) = MessageParser::default().parse(&raw) else {
        return Ok(Outcome::Quarantine {
            reason: "message could not be parsed".into(),
        });
    };
    match route {
        Route::Bounces { member, mac } => decide_bounce(svc, list, member, mac, &raw, &msg, scored),
        Route::Owner => {
            if let Some(reason) = classify(list, &msg) {
                return Ok(Outcome::Quarantine { reason });
            }
            let mut fwd = format!("X-Loop: {}\r\n", list.sub_address("owner")).into_bytes();
            fwd.extend_from_slice(&raw);
            Ok(Outcome::Send {
                mail: vec![out_mail(list, "owner-forward", fwd)],
            })
        }
        Route::Request(word) => decide_request(svc, list, item, &raw, &msg, request_via(word), dns),
        Route::Confirm(token) => {
            decide_request(svc, list, item, &raw, &msg, Via::Confirm(token), dns)
        }
        Route::Post => decide_post(svc, item, list, &raw, &msg, dns),
    }
}

fn request_via(word: &str) -> Via {
    match word {
        "join" => Via::Join,
        "leave" => Via::Leave,
        "help" => Via::Help,
        _ => Via::Request,
    }
}

/// A bounce: scored against the member its VERP address names, when that address carries
/// a valid MAC (see [`router::verp`]) and the report is in a format we read. A bounce is
/// not kept once it counted: it holds the member's address and often the list copy, and
/// only its verdict matters. A bounce without a valid MAC (forged, or to the plain
/// `-bounces` address, where only bounces of notices arrive) or in a format we do not
/// read scores nobody: it is kept in quarantine and forwarded to the owners, who can judge
/// it. Other bounces that cannot be scored are kept in quarantine.
fn decide_bounce(
    svc: &Services,
    list: &ListConfig,
    verp: Option<String>,
    mac: Option<String>,
    raw: &[u8],
    msg: &mail_parser::Message,
    scored: &mut Option<Scored>,
) -> crate::store::Result<Outcome> {
    let report = bounce::parse(raw);
    // A vacation responder answering the envelope sender is not a bounce.
    if report.format == "unknown" && vacation_reply(msg) {
        return Ok(Outcome::Quarantine {
            reason: "automatic reply to a list copy (not a bounce)".into(),
        });
    }
    if !list.process_bounces {
        return Ok(Outcome::Quarantine {
            reason: "bounce; bounce processing is off for this list".into(),
        });
    }
    let verified = match (&verp, &mac) {
        (Some(m), Some(k)) => svc.secret.verify_verp(list.key(), m, k),
        _ => false,
    };
    let member_addr = match verp {
        Some(m) if verified => m,
        Some(_) => {
            return Ok(unscored_bounce(
                list,
                raw,
                if mac.is_some() {
                    "bounce to a VERP address whose MAC does not verify (forged?)"
                } else {
                    "bounce to a VERP address without a MAC"
                },
            ))
        }
        None => {
            return Ok(unscored_bounce(
                list,
                raw,
                "bounce to the plain bounce address (no member named by VERP)",
            ))
        }
    };
    if report.format == "unknown" {
        return Ok(unscored_bounce(
            list,
            raw,
            "bounce in a format that is not recognised",
        ));
    }
    if report.format == "dsn" && report.failures.is_empty() {
        return Ok(Outcome::Quarantine {
            reason: "delivery report without a failure (delivered or relayed)".into(),
        });
    }
    // The report's own line for this member, else its first.
    let lower = member_addr.to_ascii_lowercase();
    let own = report
        .failures
        .iter()
        .find(|f| f.recipient.as_deref().map(str::to_ascii_lowercase) == Some(lower.clone()))
        .or(report.failures.first());
    if let Some(f) = own.filter(|f| f.scope == bounce::Scope::Message) {
        // About the post, not the mailbox: nobody is scored; the owners hear of it once.
        let (message_id, subject) = bounce::returned_message(raw);
        let status = f.status.clone().unwrap_or_else(|| "5.0.0".into());
        let failure = bounce::MessageFailure {
            message_id,
            post: format!("day {}", crate::clock::now_ms().div_euclid(86_400_000)),
            subject: subject.unwrap_or_default(),
            reason: bounce::MessageFailure::reason_for(Some(&status), &f.diagnostic),
            status: status.clone(),
            diagnostic: f.diagnostic.clone(),
            by_relay: false,
            failed: 1,
            attempted: 1,
        };
        tracing::info!(
            list = %list.local(),
            format = report.format,
            status = %status,
            domain = lower.rsplit('@').next().unwrap_or(""),
            "bounce about the message, not the member: not scored"
        );
        let changes = bounce::message_report(svc.ctx(), list, &failure)
            .map(|(marker, mail)| Change::ReportOnce { marker, mail })
            .into_iter()
            .collect();
        return Ok(Outcome::Changes {
            changes,
            mail: Vec::new(),
        });
    }
    let Some(member) = svc.store.member(list.key(), &member_addr)? else {
        return Ok(Outcome::Quarantine {
            reason: "bounce for an address that is not a member".into(),
        });
    };
    // The report's own line for this member, else its worst.
    let addr = member.address.to_ascii_lowercase();
    let failure = report
        .failures
        .iter()
        .find(|f| f.recipient.as_deref().map(str::to_ascii_lowercase) == Some(addr.clone()))
        .or_else(|| {
            report.failures.iter().max_by_key(|f| match f.severity {
                bounce::Severity::Hard => 2,
                bounce::Severity::Soft => 1,
                bounce::Severity::Policy => 0,
            })
        });
    let (sev, status) = match failure {
        Some(f) => (f.severity, f.status.clone()),
        None => (bounce::Severity::Soft, None),
    };
    let (changes, mail, effect) = bounce::record(svc.ctx(), list, member, sev, status.as_deref());
    *scored = Some(Scored {
        list: list.local().to_string(),
        format: report.format,
        severity: sev.name(),
        status: status.unwrap_or_else(|| "-".into()),
        effect: format!("{effect:?}"),
        domain: addr.rsplit('@').next().unwrap_or("").to_string(),
    });
    Ok(Outcome::Changes { changes, mail })
}

/// A bounce that scores nobody: kept in quarantine and forwarded to the owners (with
/// `X-Loop`, from the null sender so that the forward itself can never bounce back here).
/// A bounce that carries our own forward's `X-Loop` (a forward that bounced) is only kept.
fn unscored_bounce(list: &ListConfig, raw: &[u8], why: &str) -> Outcome {
    let owner = list.sub_address("owner");
    let marker = format!("x-loop: {}", owner.to_ascii_lowercase());
    let looped = raw
        .to_ascii_lowercase()
        .windows(marker.len())
        .any(|w| w == marker.as_bytes());
    tracing::warn!(list = %list.local(), reason = why, "bounce not scored");
    if looped || list.owners.is_empty() {
        return Outcome::Quarantine {
            reason: format!("{why}; not scored"),
        };
    }
    let mut fwd = format!("X-Loop: {owner}\r\n").into_bytes();
    fwd.extend_from_slice(raw);
    let mut mail = out_mail(list, "bounce-forward", fwd);
    mail.mail_from = String::new();
    Outcome::QuarantineAndSend {
        reason: format!("{why}; not scored, forwarded to the owners"),
        mail: vec![mail],
    }
}

/// Whether a message that is not a delivery report is someone's automatic reply (an
/// out-of-office), rather than an MTA's bounce in a format we do not know.
fn vacation_reply(msg: &mail_parser::Message) -> bool {
    let daemon = author(msg).is_some_and(|(a, _)| {
        let l = a.split('@').next().unwrap_or("").to_ascii_lowercase();
        l.contains("mailer-daemon") || l.contains("postmaster") || l == "mail-daemon"
    });
    if daemon {
        return false;
    }
    msg.subject().is_some_and(out_of_office_subject)
        || msg.headers_raw().any(|(name, value)| {
            let is = |h: &str| name.eq_ignore_ascii_case(h);
            is("x-autoreply")
                || is("x-autorespond")
                || is("x-autoresponder")
                || (is("auto-submitted") && value.trim().eq_ignore_ascii_case("auto-replied"))
        })
}

/// A mail to the owners.
fn out_mail(list: &ListConfig, kind: &str, raw: Vec<u8>) -> OutMail {
    commands::out_mail(list, kind, list.owners.clone(), raw)
}

/// Whether a sender must never get an automatic answer (RFC 3834 5.2): bounces and mail
/// from mailer daemons and no-reply addresses.
fn unanswerable(envelope_from: &str, from: &str) -> Option<&'static str> {
    if envelope_from.is_empty() {
        return Some("request with an empty envelope sender (a bounce?); not answered");
    }
    let local = from
        .rsplit_once('@')
        .map_or(from, |(l, _)| l)
        .to_ascii_lowercase();
    if matches!(
        local.as_str(),
        "mailer-daemon" | "postmaster" | "noreply" | "no-reply" | "donotreply" | "do-not-reply"
    ) || local.ends_with("-bounces")
        || local.starts_with("owner-")
    {
        return Some("request from a mailer daemon or no-reply address; not answered");
    }
    None
}

/// A mail command (to `-request`, `-join`, `-leave`, `-confirm+TOKEN`): its changes and the
/// mail they cause.
fn decide_request(
    svc: &Services,
    list: &ListConfig,
    item: &SpoolItem,
    raw: &[u8],
    msg: &mail_parser::Message,
    via: Via,
    dns: &dyn crate::dns::Resolver,
) -> crate::store::Result<Outcome> {
    if let Some(reason) = classify(list, msg) {
        return Ok(Outcome::Quarantine { reason });
    }
    let Some((requester, name)) = author(msg) else {
        return Ok(Outcome::Quarantine {
            reason: "request without a usable From address".into(),
        });
    };
    if let Some(reason) = unanswerable(&item.envelope.mail_from, &requester) {
        return Ok(Outcome::Quarantine {
            reason: reason.into(),
        });
    }
    // A signature of the sender's own domain lets an owner's `add`/`remove` and a
    // member's `set` act without a confirmation round (From can be forged, DKIM cannot).
    let owner = via == Via::Request && commands::is_owner(list, &requester);
    let dkim_aligned = via == Via::Request && {
        let domain = requester.rsplit_once('@').map_or("", |x| x.1);
        let v = crate::dkim::verify::verify_aligned(raw, domain, dns);
        tracing::debug!(list = %list.local(), verdict = ?v, "request: DKIM");
        matches!(v, crate::dkim::verify::Verdict::Aligned(_))
    };
    let attachments = if owner { member_files(msg) } else { Vec::new() };
    let mail = Incoming {
        attachments,
        dkim_aligned,
        requester,
        name,
        message_id: msg.message_id().map(str::to_string),
        subject: msg.subject().unwrap_or("").to_string(),
        body: msg.body_text(0).map(|b| b.into_owned()).unwrap_or_default(),
        references: crate::threading::references(msg),
    };
    let plan = commands::handle(svc.ctx(), list, &via, &mail)?;
    Ok(Outcome::Changes {
        changes: plan.changes,
        mail: plan.mail,
    })
}

/// The attachments of an owner's request that may be member lists: text parts (CSV or
/// plain text, by type or file name), at most 1 MB each.
fn member_files(msg: &mail_parser::Message) -> Vec<String> {
    use mail_parser::MimeHeaders;
    msg.attachments()
        .filter(|a| {
            let name = a.attachment_name().unwrap_or("").to_ascii_lowercase();
            let ctype = a
                .content_type()
                .map(|c| {
                    format!("{}/{}", c.ctype(), c.subtype().unwrap_or_default())
                        .to_ascii_lowercase()
                })
                .unwrap_or_default();
            name.ends_with(".csv")
                || name.ends_with(".txt")
                || matches!(
                    ctype.as_str(),
                    "text/csv" | "text/plain" | "application/csv" | "text/comma-separated-values"
                )
        })
        .filter(|a| a.contents().len() <= 1 << 20)
        .map(|a| match a.text_contents() {
            Some(t) => t.to_string(),
            None => String::from_utf8_lossy(a.contents()).into_owned(),
        })
        .collect()
}

fn decide_post(
    svc: &Services,
    item: &SpoolItem,
    list: &ListConfig,
    raw: &[u8],
    msg: &mail_parser::Message,
    dns: &dyn crate::dns::Resolver,
) -> crate::store::Result<Outcome> {
    let (cfg, store) = (&*svc.cfg, &svc.store);
    let mut raw = raw.to_vec();
    if let Some(reason) = classify(list, msg) {
        return Ok(Outcome::Quarantine { reason });
    }
    // A post with a null reverse-path is a bounce or an auto-reply (RFC 3834 3.1.5 asks
    // responders to use one). `inject` has no envelope to tell, so only the listeners count.
    if item.envelope.mail_from.is_empty() && item.envelope.source != "inject" {
        return Ok(Outcome::Quarantine {
            reason: "bounce or automatic message (empty envelope sender)".into(),
        });
    }
    let Some((from_addr, from_name)) = author(msg) else {
        return Ok(Outcome::Quarantine {
            reason: "no usable From address".into(),
        });
    };
    let message_id = match msg.message_id() {
        Some(id) if !id.trim().is_empty() => id.trim().to_string(),
        _ => {
            // As an MTA does for local submissions: give it one, so replies can thread. It
            // is made from the content, so the same bytes sent again (a sender's MTA that
            // lost our 250 and retries) get the same id and are posted once.
            let id = content_message_id(&raw, &cfg.smtp.hostname);
            let mut with = format!("Message-ID: <{id}>\r\n").into_bytes();
            with.extend_from_slice(&raw);
            raw = with;
            id
        }
    };
    // One line, always: the subject goes into notices and the archive.
    let subject: String = msg
        .subject()
        .unwrap_or("")
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let key = list.key();
    // A national number or an account number: masked in the archive, and the poster is
    // told; with `pii_posts = "hold"` the post waits for the poster's confirmation.
    let identifiers = crate::redact::told_in(msg, list.redaction());
    let answerable = unanswerable(&item.envelope.mail_from, &from_addr).is_none();
    if !identifiers.is_empty()
        && list.pii_posts == crate::config::PiiPosts::Hold
        && !item.envelope.approved
        && !item.envelope.poster_confirmed
    {
        let id = store.new_id()?;
        let held = Held {
            list: key.to_string(),
            id,
            reason: POSTER_CONFIRMS.into(),
            message_id,
            from_addr,
            // Owners see held posts' subjects; this one they see masked.
            subject: crate::redact::mask_str(&subject, list.redaction(), list.language)
                .into_owned(),
            envelope: item.envelope.clone(),
            poster_confirms: true,
            notified: true,
            raw,
        };
        let mut plan = commands::Plan::new(svc.ctx(), list);
        if answerable {
            plan.ask_poster_to_confirm(&held, &identifiers)?;
        }
        tracing::info!(list = %list.local(), held_id = id, "post with an identifier waits for its poster");
        return Ok(Outcome::Hold {
            held,
            notices: plan.mail,
            changes: plan.changes,
        });
    }
    let policy_hold = match list.posting {
        _ if item.envelope.approved => None,
        Posting::Open => None,
        Posting::Moderated => Some("the list is moderated"),
        Posting::Members => match store.is_member(key, &from_addr)? {
            true => None,
            false => Some("the sender is not a member"),
        },
    };
    if let Some(reason) = policy_hold {
        let id = store.new_id()?;
        let mut held = Held {
            list: key.to_string(),
            id,
            reason: reason.into(),
            message_id,
            from_addr,
            subject,
            envelope: item.envelope.clone(),
            poster_confirms: false,
            notified: false,
            raw,
        };
        let (notices, changes) = held_notices(svc, list, &mut held);
        return Ok(Outcome::Hold {
            held,
            notices,
            changes,
        });
    }
    // The thread it goes into, and who muted a thread its References reach (see
    // `store::mutes`): written with the post, so that later replies find it.
    let place = store.place_in_thread(key, &message_id, &crate::threading::references(msg))?;
    let mut muted = std::collections::HashSet::new();
    for t in &place.reaches {
        muted.extend(store.muted_by(key, *t)?);
    }
    let recipients: Vec<String> = match store.members(key) {
        // Members on vacation (nomail) or disabled by bounces get nothing; digest members
        // get the post in their next digest (when the list sends digests at all: a setting
        // must never silently stop a member's mail). Members who muted the thread get
        // nothing of it, in no form (their digests leave it out too).
        Ok(m) => {
            let now = crate::clock::now_ms();
            let digests = list.digest != crate::config::DigestPeriod::Off;
            m.into_iter()
                .filter(|m| m.receives_mail(now) && !(m.digest && digests))
                .filter(|m| !muted.contains(&m.address.to_lowercase()))
                .map(|m| m.address)
                .collect()
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read members; message stays spooled");
            return Ok(Outcome::Quarantine {
                reason: format!("members could not be read: {e}"),
            });
        }
    };
    if !muted.is_empty() {
        tracing::debug!(list = %list.local(), muted = muted.len(), "members who muted the thread are left out");
    }
    // DMARC: decided now, once, so that every copy and every retry carries the same From.
    let (from_rewrite, dmarc) = crate::dmarc::rewrite(list, dns, &from_addr);
    if list.from_rewrite == crate::config::FromRewrite::Dmarc {
        tracing::info!(
            list = %list.local(),
            domain = from_addr.rsplit('@').next().unwrap_or(""),
            policy = dmarc.name(),
            from_rewrite,
            "author domain's DMARC policy"
        );
    }
    // The poster hears once that the archive masks what they wrote (not again after they
    // confirmed a held post: they were told then).
    let mut notices = Vec::new();
    let mut changes_for_note = Vec::new();
    if !identifiers.is_empty() && answerable && !item.envelope.poster_confirmed {
        let mut plan = commands::Plan::new(svc.ctx(), list);
        plan.tell_poster_masked(&from_addr, &subject, &identifiers, &message_id);
        notices = plan.mail;
        changes_for_note = plan.changes;
    }
    Ok(Outcome::Accept {
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
            from_rewrite,
        },
        raw,
        recipients,
        notices,
        changes: changes_for_note,
        thread: Some(place),
    })
}

/// The Message-ID given to a post that has none: a hash of its bytes.
fn content_message_id(raw: &[u8], hostname: &str) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(raw);
    let hex: String = h[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}.vraagbaak@{hostname}")
}

/// Individual notices to the owners per list and hour; beyond them, one summary an hour
/// (`maintenance`) names the held posts, so that a flood of held posts is not a flood of
/// mail to the owners.
pub const HELD_NOTICES_PER_HOUR: usize = 3;

/// The rate bucket of the owners' held notices of `list`.
pub fn held_notice_bucket(list: &ListConfig) -> String {
    format!("held-notice:{}", list.key())
}

/// The mails about a held post: to the owners (with the post attached and the token to
/// approve or reject it by reply; beyond [`HELD_NOTICES_PER_HOUR`] the hourly summary
/// names it instead) and to the poster (counted against the reply limit).
fn held_notices(svc: &Services, list: &ListConfig, h: &mut Held) -> (Vec<OutMail>, Vec<Change>) {
    let cfg = &*svc.cfg;
    let mut notices = Vec::new();
    let mut changes = Vec::new();
    let now = crate::clock::now_ms();
    let bucket = held_notice_bucket(list);
    let sent = svc
        .store
        .rate_hits(&bucket, "*", now - 3_600_000)
        .unwrap_or(HELD_NOTICES_PER_HOUR);
    let own_notice = !list.owners.is_empty() && sent < HELD_NOTICES_PER_HOUR;
    let token = commands::moderation_token(&svc.secret, list.key(), h.id, &h.from_addr);
    let vars = minijinja::context! {
        subject => h.subject.clone(), from => h.from_addr.clone(), reason => h.reason.clone(),
        token, held_id => h.id,
    };
    if own_notice {
        match svc
            .texts
            .render(cfg, list, list.language, "held-owner", vars)
        {
            Ok(text) => {
                notices.push(commands::owner_mail(
                    cfg,
                    list,
                    "held-notice",
                    text,
                    Some(list.sub_address("request")),
                    Some(&h.raw),
                ));
                h.notified = true;
                changes.push(Change::RateHit {
                    bucket,
                    addr: "*".into(),
                    at_ms: now,
                    since_ms: now - 3_600_000,
                });
            }
            Err(e) => tracing::error!(error = %e, "cannot render the held notice"),
        }
    }
    // The poster hears that the post waits, unless that would answer an automatic mail.
    let mut plan = commands::Plan::new(svc.ctx(), list);
    if unanswerable(&h.envelope.mail_from, &h.from_addr).is_none() {
        plan.held_notice(h);
    }
    notices.extend(plan.mail);
    changes.extend(plan.changes);
    (notices, changes)
}

/// Decides and applies one spooled message. Idempotent: a message no longer in the spool
/// was already applied. A store error leaves it in the spool (the caller tries again).
pub fn process(
    svc: &Services,
    spool_id: u64,
    dns: &dyn crate::dns::Resolver,
) -> crate::store::Result<Applied> {
    let (cfg, store) = (&*svc.cfg, &svc.store);
    // A decision taken on a token that someone else used meanwhile (a click at the same
    // moment) applies nothing; decided again, it sees the token used.
    let mut attempts = 0;
    let mut scored = None;
    let (applied, list, quarantine_reason) = loop {
        let Some(item) = store.spooled(spool_id)? else {
            return Ok(Applied::Dropped);
        };
        crate::failpoint::hit("pipeline-before-decide");
        // A parser panic on hostile input must cost one message (kept in quarantine),
        // never the pipeline: without this, the message would be retried forever.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            scored = None;
            decide(svc, &item, dns, &mut scored)
        }))
        .unwrap_or_else(|_| {
            Ok(Outcome::Quarantine {
                reason: "internal error while reading the message (parser panic)".into(),
            })
        })?;
        let list = router::route(cfg, &item.envelope.rcpt).map(|(l, _)| l.local().to_string());
        let quarantine_reason = match &outcome {
            Outcome::Quarantine { reason } | Outcome::QuarantineAndSend { reason, .. } => {
                reason.clone()
            }
            _ => String::new(),
        };
        match store.apply(spool_id, outcome) {
            Err(crate::store::StoreError::AlreadyUsed { .. }) if attempts < 3 => attempts += 1,
            r => break (r?, list, quarantine_reason),
        }
    };
    crate::failpoint::hit("pipeline-before-flush");
    // Durable before anything acts on it: outbound may read the new queue rows at once, and
    // a decision lost in a crash after some copies went out would be taken again (a new
    // number, every copy sent twice).
    store.flush()?;
    let list = list.as_deref().unwrap_or("-");
    match &applied {
        Applied::Posted { seq } => {
            tracing::info!(list, seq, "post accepted");
            svc.archive_wake.notify_one();
        }
        Applied::Duplicate => {
            tracing::info!(list, spool_id, "duplicate Message-ID, not posted again")
        }
        Applied::Held { id } => tracing::info!(list, held_id = id, "post held for moderation"),
        Applied::Quarantined { id } => {
            tracing::warn!(list, quarantine_id = id, reason = %quarantine_reason, "dropped, kept in quarantine")
        }
        Applied::Sent => tracing::info!(list, "forwarded to the owners"),
        Applied::Done => {
            if let Some(s) = scored {
                tracing::info!(
                    list = %s.list,
                    format = s.format,
                    severity = s.severity,
                    status = %s.status,
                    effect = %s.effect,
                    domain = %s.domain,
                    "bounce recorded"
                );
            }
            tracing::info!(list, "request handled");
            // A confirmed owner's mark may change a thread's state.
            svc.archive_wake.notify_one();
        }
        Applied::Dropped => {}
    }
    Ok(applied)
}

/// Spooled messages whose decision failed on a store error, and when each is tried again.
#[derive(Debug, Default)]
pub struct Retries(std::collections::HashMap<u64, (u32, std::time::Instant)>);

impl Retries {
    fn due(&self, id: u64, now: std::time::Instant) -> bool {
        self.0.get(&id).is_none_or(|(_, at)| *at <= now)
    }

    /// Backs `id` off: 1 s, 2 s, 4 s ... up to 5 minutes.
    fn failed(&mut self, id: u64, now: std::time::Instant) -> u32 {
        let e = self.0.entry(id).or_insert((0, now));
        e.0 = e.0.saturating_add(1);
        let secs = 1u64 << e.0.saturating_sub(1).min(9);
        e.1 = now + std::time::Duration::from_secs(secs.min(300));
        e.0
    }

    /// When the next backed-off message is due, if any.
    pub fn next_due(&self) -> Option<std::time::Instant> {
        self.0.values().map(|(_, at)| *at).min()
    }
}

/// The TXT names whose answers the DMARC decisions of these spooled posts need.
fn prefetch_names(svc: &Services, ids: &[u64]) -> Vec<String> {
    let mut names = Vec::new();
    for &id in ids {
        let Ok(Some(item)) = svc.store.spooled(id) else {
            continue;
        };
        let Some((list, route)) = router::route(&svc.cfg, &item.envelope.rcpt) else {
            continue;
        };
        if let Route::Request(_) = route {
            // A request: the keys of its DKIM signatures (see `decide_request`).
            names.extend(crate::dkim::verify::key_names(&item.raw));
            continue;
        }
        if route != Route::Post {
            continue;
        }
        if list.from_rewrite != crate::config::FromRewrite::Dmarc {
            continue;
        }
        let from = MessageParser::default()
            .parse_headers(&item.raw)
            .and_then(|m| {
                m.from()
                    .and_then(|f| f.first())
                    .and_then(|a| a.address())
                    .map(str::to_string)
            });
        if let Some(domain) = from
            .as_deref()
            .and_then(|a| a.rsplit_once('@'))
            .map(|x| x.1)
        {
            names.extend(crate::dmarc::names(domain));
        }
    }
    names.sort();
    names.dedup();
    names
}

/// Processes every spooled message that is due (oldest first): the DMARC policies their
/// authors' domains need (and the DKIM keys of requests) are looked up first, all at once
/// and within the DNS timeout, so a resolver that never answers delays a pass by that
/// timeout, not each post by it. A message whose decision fails on a store error stays
/// spooled and is tried again later with backoff, while the others go on. Returns how many
/// were applied.
pub fn drain(svc: &Services, retries: &mut Retries) -> crate::store::Result<usize> {
    let now = std::time::Instant::now();
    let ids: Vec<u64> = svc
        .store
        .spooled_ids()?
        .into_iter()
        .filter(|id| retries.due(*id, now))
        .collect();
    let names = prefetch_names(svc, &ids);
    let dns = crate::dns::Prefetched::new(svc.dns.clone(), names, svc.cfg.dns.timeout);
    let mut n = 0;
    for id in ids {
        match process(svc, id, &dns) {
            Ok(_) => {
                retries.0.remove(&id);
                n += 1;
            }
            Err(e) => {
                let attempt = retries.failed(id, now);
                tracing::error!(spool_id = id, attempt, error = %e, "cannot decide a spooled message; it stays spooled and is tried again");
            }
        }
    }
    Ok(n)
}

/// The pipeline task: drains the spool whenever inbound rings, and once at start (a
/// restart resumes what a crash left). Wakes the outbound side after each pass.
pub async fn run(
    live: crate::Live,
    wake_in: Arc<Notify>,
    wake_out: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut retries = Retries::default();
    loop {
        // Each pass on the configuration current when it starts (SIGHUP).
        let s = live.svc();
        let mut r = std::mem::take(&mut retries);
        let pass = tokio::task::spawn_blocking(move || {
            let n = drain(&s, &mut r);
            (n, r)
        })
        .await;
        let mut again = false;
        match pass {
            Ok((n, r)) => {
                retries = r;
                // Also after passes with nothing spooled: the bell may have been rung for
                // mail queued by a command (welcome texts, a moderation).
                wake_out.notify_one();
                match n {
                    // A pass can spool more (a moderator's approval puts the post back): go
                    // round again at once rather than at the next bell.
                    Ok(n) => again = n > 0,
                    Err(e) => tracing::error!(error = %e, "pipeline pass failed; retrying"),
                }
            }
            Err(e) => tracing::error!(error = %e, "pipeline task panicked; retrying"),
        }
        if again {
            continue;
        }
        let wait = retries
            .next_due()
            .map_or(std::time::Duration::from_secs(5), |t| {
                t.saturating_duration_since(std::time::Instant::now())
            })
            .min(std::time::Duration::from_secs(5));
        tokio::select! {
            _ = wake_in.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::out_of_office_subject as oof;

    #[test]
    fn out_of_office_subjects() {
        for s in [
            "Automatisch antwoord: [forum] Vraag over leefloon",
            "Out of Office: Re: [forum] x",
            "Afwezig: vraag",
            "AFWEZIG : tot 12/8",
            "Réponse automatique : [forum] x",
            "Abwesenheitsnotiz: x",
            "[forum] Automatic reply: x",
            "Absence: x",
        ] {
            assert!(oof(s), "{s}");
        }
        for s in [
            "Afwezigheid van een cliënt op de zitting",
            "Absence of income documents",
            "Re: [forum] Automatisch antwoorden instellen in Outlook?",
            "Vraag over vakantiegeld",
            "éé",
        ] {
            assert!(!oof(s), "{s}");
        }
    }
}
