//! Bounces: reading delivery reports and keeping each member's bounce score.
//!
//! Every list copy leaves with the member's VERP address as envelope sender
//! (`forum-bounces+member=domain+MAC@host`, see [`crate::router::verp`]), so whatever comes
//! back names the member without parsing, and only what comes back to an address with a
//! valid MAC can count. What it says is read from the report:
//! - RFC 3464 `multipart/report; report-type=delivery-status` (Postfix, modern Exim,
//!   Exchange, Gmail, Sendmail, and the reports we write ourselves for relay refusals):
//!   `Action` and `Status` of each recipient; 5.x.x is hard, 4.x.x (or `Action: delayed`) soft;
//! - qmail's QSBMF and Exim's classic text bounce, which carry no machine-readable fields;
//! - anything else (format `unknown`) counts for nobody: the pipeline forwards it to the
//!   owners.
//!
//! Refusals for policy reasons (status class X.7, RFC 3463 "security or policy", or a
//! diagnostic that speaks of spam, blocklists or reputation) say something about the list's
//! mail, not the member's mailbox: they are recorded but never counted. Refusals about the
//! message itself ([`scope`]: too big, its content) are not even recorded on the member:
//! the owners are told once per post ([`message_report`]).
//!
//! Scoring follows Mailman 3: hard 1.0, soft 0.5, at most one bounce counted per day; a
//! score without a new bounce for `bounce_info_stale_after` is forgotten; at
//! `bounce_score_threshold` delivery is disabled and the member gets a notice with a
//! re-enable link, reply address and command; after `bounce_you_are_disabled_warnings`
//! notices, `bounce_you_are_disabled_warnings_interval` apart, without a reaction, the
//! member is removed and the owners are told.
//!
//! No parser crate reads DSNs (mail-parser gives the parts, not the per-recipient fields;
//! flufl.bounce and Sympa's bounce parser are Python and Perl), so the field blocks of
//! `message/delivery-status` are read here, in a few lines.

use crate::clock::now_ms;
use crate::commands::{self, Ctx};
use crate::config::ListConfig;
use crate::store::{BounceInfo, Change, Member, MemberEvent, MemberFn, OutMail};
use crate::tokens::Kind;
use mail_parser::{MessageParser, MimeHeaders};

/// How a bounce counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The mailbox does not exist or refuses for good (5.x.x): 1.0.
    Hard,
    /// Full mailbox, delay (4.x.x): 0.5.
    Soft,
    /// Refused for policy or spam reasons: about our mail, not the member; not counted.
    Policy,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Hard => "hard",
            Severity::Soft => "soft",
            Severity::Policy => "policy",
        }
    }
    fn weight(self) -> f64 {
        match self {
            Severity::Hard => 1.0,
            Severity::Soft => 0.5,
            Severity::Policy => 0.0,
        }
    }
}

/// One failed recipient in a report.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// `Final-Recipient` (or `Original-Recipient`) address, when the report names one.
    pub recipient: Option<String>,
    /// Enhanced status code (RFC 3463), `5.1.1`.
    pub status: Option<String>,
    pub severity: Severity,
    /// About the member's mailbox or about the message (see [`scope`]).
    pub scope: Scope,
    /// The remote server's words, as the report gives them (may be empty).
    pub diagnostic: String,
}

/// What a bounce says.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// `dsn`, `qmail`, `exim`, or `unknown`.
    pub format: &'static str,
    pub failures: Vec<Failure>,
}

/// Spam and reputation words in diagnostics of refusals that are not about the mailbox.
const POLICY_WORDS: &[&str] = &[
    "spam",
    "blocklist",
    "blacklist",
    "block list",
    "black list",
    "reputation",
    "rbl",
    "spamhaus",
    "dmarc",
    "unauthenticated",
    "content rejected",
    "message rejected due to",
    "policy",
    "virus",
];

/// Classifies a status code and diagnostic text.
pub fn severity(status: Option<&str>, diagnostic: &str) -> Severity {
    let d = diagnostic.to_ascii_lowercase();
    let policy_text = POLICY_WORDS.iter().any(|w| d.contains(w));
    match status {
        Some(s) if s.split('.').nth(1) == Some("7") => Severity::Policy,
        _ if policy_text => Severity::Policy,
        Some(s) if s.starts_with('5') => Severity::Hard,
        Some(_) => Severity::Soft,
        None => Severity::Soft,
    }
}

/// The first enhanced status code (`5.1.1`, RFC 3463) in a text.
pub fn find_status(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if matches!(b[i], b'2' | b'4' | b'5')
            && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'.'))
            && b.get(i + 1) == Some(&b'.')
        {
            let mut j = i + 2;
            let n1 = b[j..].iter().take_while(|c| c.is_ascii_digit()).count();
            j += n1;
            if (1..=3).contains(&n1) && b.get(j) == Some(&b'.') {
                let n2 = b[j + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
                let end = j + 1 + n2;
                let after_ok = b
                    .get(end)
                    .is_none_or(|c| !(c.is_ascii_alphanumeric() || *c == b'.'));
                if (1..=3).contains(&n2) && after_ok {
                    return Some(text[i..end].to_string());
                }
            }
        }
        i += 1;
    }
    None
}

/// A status from a plain SMTP reply code when no enhanced code is given (`550` → `5.0.0`).
pub fn status_from_reply(text: &str) -> Option<String> {
    find_status(text).or_else(|| {
        let t = text.trim_start();
        let c = t.as_bytes();
        (c.len() >= 3 && matches!(c[0], b'4' | b'5') && c[1..3].iter().all(u8::is_ascii_digit))
            .then(|| format!("{}.0.0", c[0] as char))
    })
}

/// The field blocks of a `message/delivery-status` body: per-message, then per-recipient.
fn field_blocks(text: &str) -> Vec<Vec<(String, String)>> {
    let mut blocks = Vec::new();
    let mut cur: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            if !cur.is_empty() {
                blocks.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = cur.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            cur.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    if !cur.is_empty() {
        blocks.push(cur);
    }
    blocks
}

/// `rfc822; a@b` or `<a@b>` → `a@b`.
fn address_field(v: &str) -> Option<String> {
    let v = v.split_once(';').map_or(v, |(_, a)| a);
    let a = v
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim();
    (a.contains('@') && !a.contains(char::is_whitespace)).then(|| a.to_string())
}

/// Reads a bounce.
pub fn parse(raw: &[u8]) -> Report {
    let Some(msg) = MessageParser::default().parse(raw) else {
        return Report {
            format: "unknown",
            failures: Vec::new(),
        };
    };
    // RFC 3464: a message/delivery-status part, anywhere (some MTAs nest the report).
    for part in msg.parts.iter() {
        let Some(ct) = part.content_type() else {
            continue;
        };
        let sub = ct.subtype().unwrap_or("").to_ascii_lowercase();
        if !ct.ctype().eq_ignore_ascii_case("message")
            || !matches!(sub.as_str(), "delivery-status" | "global-delivery-status")
        {
            continue;
        }
        let text = String::from_utf8_lossy(part.contents());
        let mut failures = Vec::new();
        for block in field_blocks(&text).iter().skip(1) {
            let get = |k: &str| block.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
            let action = get("action").unwrap_or("failed").to_ascii_lowercase();
            let action = action.split_whitespace().next().unwrap_or("");
            if matches!(action, "delivered" | "relayed" | "expanded") {
                continue;
            }
            let diagnostic = get("diagnostic-code").unwrap_or("");
            let status = get("status").and_then(find_status).or_else(|| {
                status_from_reply(diagnostic.split_once(';').map_or(diagnostic, |x| x.1))
            });
            let mut sev = severity(status.as_deref(), diagnostic);
            if action == "delayed" && sev == Severity::Hard {
                sev = Severity::Soft;
            }
            let recipient = get("final-recipient")
                .and_then(address_field)
                .or_else(|| get("original-recipient").and_then(address_field));
            failures.push(Failure {
                recipient,
                scope: scope(status.as_deref(), diagnostic),
                status,
                severity: sev,
                diagnostic: diagnostic.to_string(),
            });
        }
        return Report {
            format: "dsn",
            failures,
        };
    }
    let body = msg
        .body_text(0)
        .map(|b| b.replace("\r\n", "\n"))
        .unwrap_or_default();
    if body.contains("This is the qmail-send program") {
        return qmail(&body);
    }
    if body.contains("This message was created automatically by mail delivery software") {
        return exim(&body);
    }
    Report {
        format: "unknown",
        failures: Vec::new(),
    }
}

/// qmail's QSBMF (cr.yp.to/proto/qsbmf.txt): recipient paragraphs `<addr>:` up to the
/// `--- Below this line` break; permanent unless the report says the mail was delayed.
fn qmail(body: &str) -> Report {
    let text = body.split("--- ").next().unwrap_or(body);
    let delayed = text.contains("has not been delivered yet") || text.contains("delayed");
    let mut failures = Vec::new();
    for para in text.split("\n\n") {
        let para = para.trim();
        let Some(first) = para.lines().next() else {
            continue;
        };
        let Some(addr) = first
            .strip_prefix('<')
            .and_then(|r| r.strip_suffix(">:"))
            .filter(|a| a.contains('@'))
        else {
            continue;
        };
        let rest: String = para.lines().skip(1).collect::<Vec<_>>().join(" ");
        // `Sorry, no mailbox here by that name. (#5.1.1)`, `Remote host said: 550 ...`
        let status = find_status(&rest.replace("(#", "( "))
            .or_else(|| rest.split("said:").nth(1).and_then(status_from_reply))
            .or(Some(if delayed { "4.0.0" } else { "5.0.0" }.to_string()));
        let mut sev = severity(status.as_deref(), &rest);
        if delayed && sev == Severity::Hard {
            sev = Severity::Soft;
        }
        failures.push(Failure {
            recipient: Some(addr.to_string()),
            scope: scope(status.as_deref(), &rest),
            status,
            severity: sev,
            diagnostic: rest.trim().to_string(),
        });
    }
    Report {
        format: "qmail",
        failures,
    }
}

/// Exim's classic text bounce: "The following address(es) failed:" then each address,
/// indented, with the remote server's answer below it.
fn exim(body: &str) -> Report {
    let permanent = body.contains("permanent error");
    let section = body
        .split("------ This is a copy of the message")
        .next()
        .unwrap_or(body);
    let mut failures = Vec::new();
    let mut lines = section
        .lines()
        .skip_while(|l| !l.contains("failed:") && !l.contains("could not be delivered"))
        .skip(1)
        .peekable();
    while let Some(l) = lines.next() {
        let t = l.trim();
        // An address line is indented by two and is nothing but the address.
        if !(l.starts_with("  ") && !l.starts_with("    ") && t.contains('@')) {
            continue;
        }
        let addr = t
            .trim_start_matches('<')
            .trim_end_matches('>')
            .trim_end_matches(':');
        let mut detail = String::new();
        while let Some(n) = lines.peek() {
            if n.starts_with("    ") {
                detail.push_str(n.trim());
                detail.push(' ');
                lines.next();
            } else {
                break;
            }
        }
        let status = find_status(&detail)
            .or_else(|| {
                detail
                    .rsplit(": ")
                    .find_map(|s| status_from_reply(s).filter(|_| s.trim().len() >= 3))
            })
            .or(Some(if permanent { "5.0.0" } else { "4.0.0" }.to_string()));
        failures.push(Failure {
            recipient: Some(addr.to_string()),
            status: status.clone(),
            severity: severity(status.as_deref(), &detail),
            scope: scope(status.as_deref(), &detail),
            diagnostic: detail.trim().to_string(),
        });
    }
    Report {
        format: "exim",
        failures,
    }
}

/// A DSN (RFC 3464) for a recipient our relay refused, so that refusals at the relay and
/// bounces that come back later are counted by one path.
pub fn relay_report(list: &ListConfig, hostname: &str, rcpt: &str, error: &str) -> Vec<u8> {
    let status = status_from_reply(error).unwrap_or_else(|| "5.0.0".into());
    let diag: String = error
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(500)
        .collect();
    let boundary = format!("vb-{:016x}", rand::random::<u64>());
    format!(
        "From: Mail Delivery System <{bounces}>\r\n\
To: {bounces}\r\n\
Subject: Undelivered list copy (refused by the relay)\r\n\
Auto-Submitted: auto-replied\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"{boundary}\"\r\n\
\r\n\
--{boundary}\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
The relay refused a list copy for one recipient.\r\n\
\r\n\
--{boundary}\r\n\
Content-Type: message/delivery-status\r\n\
\r\n\
Reporting-MTA: dns; {hostname}\r\n\
\r\n\
Final-Recipient: rfc822; {rcpt}\r\n\
Action: failed\r\n\
Status: {status}\r\n\
Diagnostic-Code: smtp; {diag}\r\n\
\r\n\
--{boundary}--\r\n",
        bounces = list.sub_address("bounces"),
    )
    .into_bytes()
}

// ---- scope: the member's mailbox, or the message ----------------------------------------

/// What a failure is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The member's mailbox or address: scored against the member.
    Member,
    /// The message itself (its size or content): the same post would fail for anyone, so
    /// no member is scored; the owners are told once per post and status.
    Message,
}

/// Words of a diagnostic that speak of the message's content.
const CONTENT_WORDS: &[&str] = &[
    "spam",
    "unsolicited",
    "virus",
    "malware",
    "phish",
    "infected",
    "content",
    "attachment",
    "message rejected",
    "message refused",
    "bulk mail",
];

/// Words of a diagnostic that speak of our sending host or of the recipient's policy: even
/// beside content words ("client host blocked using zen.spamhaus.org"), such a refusal is
/// not about this one post.
const HOST_OR_RECIPIENT_WORDS: &[&str] = &[
    "spamhaus",
    "blocklist",
    "blacklist",
    "block list",
    "black list",
    "rbl",
    "client host",
    "reputation",
    "relay access denied",
    "relaying denied",
    "recipient address rejected",
    "access denied",
    "sender address rejected",
];

/// Classifies a failure by what it is about. Message-level are:
/// - `X.3.4` (message too big for the system) and `X.2.3` (larger than the mailbox's
///   administrative limit): a smaller post would be delivered;
/// - `X.6.x` (media and conversion: the content);
/// - any other status whose diagnostic speaks of the content (spam, virus, malware,
///   phishing, attachment, "message rejected"), unless it is an address status (`X.1.x`)
///   or the diagnostic speaks of our host's reputation (block lists) or the recipient's
///   policy ("relay access denied", "recipient address rejected"): `5.7.1 Message
///   rejected as spam` is about the post, `5.7.1 Relay access denied` and `5.7.1 client
///   host blocked using zen.spamhaus.org` are not (they stay per-member policy refusals,
///   recorded and never counted).
///
/// A status given by the relay to many copies of one post is message-level too; that rule
/// needs the whole fan-out and is applied by `outbound`.
pub fn scope(status: Option<&str>, diagnostic: &str) -> Scope {
    let d = diagnostic.to_ascii_lowercase();
    let mut parts = status.unwrap_or("").split('.').skip(1);
    let (subject, detail) = (parts.next(), parts.next());
    match (subject, detail) {
        (Some("3"), Some("4")) | (Some("2"), Some("3")) | (Some("6"), _) => Scope::Message,
        (Some("1"), _) => Scope::Member,
        _ if CONTENT_WORDS.iter().any(|w| d.contains(w))
            && !HOST_OR_RECIPIENT_WORDS.iter().any(|w| d.contains(w)) =>
        {
            Scope::Message
        }
        _ => Scope::Member,
    }
}

/// The relay's refusals of one post by status: at least this many copies ...
pub const MASS_MIN_COPIES: usize = 3;
/// ... and at least this share (in percent) of the copies attempted so far in the fan-out
/// refused with the same status make the refusal message-level.
pub const MASS_MIN_PERCENT: usize = 50;

/// Whether `refused` copies with one status out of `attempted` make a message-level
/// refusal (see [`MASS_MIN_COPIES`]).
pub fn mass_refusal(refused: usize, attempted: usize) -> bool {
    refused >= MASS_MIN_COPIES && refused * 100 >= attempted.max(1) * MASS_MIN_PERCENT
}

/// The Message-ID and Subject of the message a bounce returns (its `message/rfc822` or
/// `text/rfc822-headers` part), when it has one.
pub fn returned_message(raw: &[u8]) -> (Option<String>, Option<String>) {
    let Some(msg) = MessageParser::default().parse(raw) else {
        return (None, None);
    };
    for part in msg.parts.iter() {
        if let mail_parser::PartType::Message(m) = &part.body {
            if m.message_id().is_some() {
                return (
                    m.message_id().map(str::to_string),
                    m.subject().map(str::to_string),
                );
            }
        }
        let Some(ct) = part.content_type() else {
            continue;
        };
        let sub = ct.subtype().unwrap_or("").to_ascii_lowercase();
        if ct.ctype().eq_ignore_ascii_case("text") && sub == "rfc822-headers"
            || ct.ctype().eq_ignore_ascii_case("message") && sub == "global-headers"
        {
            if let Some(h) = MessageParser::default().parse_headers(part.contents()) {
                return (
                    h.message_id().map(str::to_string),
                    h.subject().map(str::to_string),
                );
            }
        }
    }
    (None, None)
}

/// A post that failed as a message, for the owners' report.
#[derive(Debug, Clone)]
pub struct MessageFailure {
    /// The post's Message-ID (without `<>`), when known.
    pub message_id: Option<String>,
    /// What else tells the post apart when it has none: `seq 12`, `digest 3`, a day.
    pub post: String,
    pub subject: String,
    pub status: String,
    pub diagnostic: String,
    /// `too-big`, `content` or `many`.
    pub reason: &'static str,
    /// Refused by our relay (true) or by a receiving server, reported by mail.
    pub by_relay: bool,
    pub failed: usize,
    pub attempted: usize,
}

impl MessageFailure {
    /// Why a message-level failure is one, for the report (`many` when only the fan-out
    /// rule made it one).
    pub fn reason_for(status: Option<&str>, diagnostic: &str) -> &'static str {
        let mut parts = status.unwrap_or("").split('.').skip(1);
        match (parts.next(), parts.next()) {
            (Some("3"), Some("4")) | (Some("2"), Some("3")) => "too-big",
            _ if scope(status, diagnostic) == Scope::Message => "content",
            _ => "many",
        }
    }
}

/// The report to the owners about a post that failed as a message, and the marker that
/// makes it go once (per list, post and status; see `Change::ReportOnce`). `None` when the
/// list has no owners or the text cannot be rendered.
pub fn message_report(
    ctx: Ctx,
    list: &ListConfig,
    f: &MessageFailure,
) -> Option<(String, OutMail)> {
    if list.owners.is_empty() {
        return None;
    }
    let post = f
        .message_id
        .as_deref()
        .map(|id| id.trim().trim_start_matches('<').trim_end_matches('>'))
        .unwrap_or(&f.post);
    let marker = format!("{}\0{post}\0{}", list.key().to_ascii_lowercase(), f.status);
    let diagnostic: String = mask_addresses(&f.diagnostic)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    let vars = minijinja::context! {
        subject => f.subject.clone(),
        message_id => f.message_id.clone(),
        status => f.status.clone(),
        diagnostic,
        reason => f.reason,
        by_relay => f.by_relay,
        failed => f.failed,
        attempted => f.attempted,
    };
    match ctx
        .texts
        .render(ctx.cfg, list, list.language, "message-failed", vars)
    {
        Ok(text) => Some((
            marker,
            commands::owner_mail(ctx.cfg, list, "message-failed", text, None, None),
        )),
        Err(e) => {
            tracing::error!(error = %e, "cannot render the owners' report on a refused post");
            None
        }
    }
}

/// A text (a relay's reply, a diagnostic) with the local part of every address in it
/// replaced by `***`, the domain kept: for logs at info and warn level.
pub fn mask_addresses(text: &str) -> String {
    let local_char = |c: char| c.is_alphanumeric() || ".!#$%&'*+/=?^_`{|}~-\"".contains(c);
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '@' {
            // Take back the local part already written.
            let mut n = 0;
            while out.ends_with(|c: char| local_char(c)) {
                out.pop();
                n += 1;
            }
            if n > 0 {
                out.push_str("***");
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

// ---- scoring ---------------------------------------------------------------------------

const DAY_MS: i64 = 86_400_000;

/// What one bounce did to a member's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Counted; the score is below the threshold.
    Counted,
    /// Not counted: a bounce already counted today, a policy refusal, or the member is
    /// already disabled.
    NotCounted,
    /// Counted, and the score reached the threshold: delivery is now disabled.
    Disabled,
}

/// Adds one bounce to `info` (created when absent) at `now`.
pub fn score(
    list: &ListConfig,
    info: &mut Option<BounceInfo>,
    sev: Severity,
    status: Option<&str>,
    now: i64,
) -> Effect {
    let b = info.get_or_insert_with(|| BounceInfo {
        score: 0.0,
        last_ms: 0,
        last_weight: 0.0,
        received: 0,
        last_kind: String::new(),
        last_status: None,
        last_received_ms: 0,
        disabled_ms: None,
        notices: 0,
        last_notice_ms: 0,
    });
    b.received = b.received.saturating_add(1);
    b.last_kind = sev.name().into();
    b.last_status = status.map(str::to_string);
    b.last_received_ms = now;
    if b.disabled_ms.is_some() || sev == Severity::Policy {
        return Effect::NotCounted;
    }
    let stale = list.bounce_info_stale_after.as_millis() as i64;
    if b.last_ms > 0 && now - b.last_ms > stale {
        b.score = 0.0;
        b.last_weight = 0.0;
    }
    let w = sev.weight();
    if b.last_ms > 0 && b.last_ms.div_euclid(DAY_MS) == now.div_euclid(DAY_MS) {
        // One count a day; a hard bounce after a soft one that day makes it a hard day.
        if w <= b.last_weight {
            return Effect::NotCounted;
        }
        b.score += w - b.last_weight;
    } else {
        b.score += w;
    }
    b.last_weight = w;
    b.last_ms = now;
    if b.score + 1e-9 >= list.bounce_score_threshold {
        b.disabled_ms = Some(now);
        Effect::Disabled
    } else {
        Effect::Counted
    }
}

/// The score as it stands at `now` (a stale score counts as 0).
pub fn current_score(list: &ListConfig, b: &BounceInfo, now: i64) -> f64 {
    if b.disabled_ms.is_none() && now - b.last_ms > list.bounce_info_stale_after.as_millis() as i64
    {
        0.0
    } else {
        b.score
    }
}

/// Changes and mail for one bounce of `member` (the store's record, as read before).
///
/// The score is applied by a [`Change::EditMember`] intent to the record as it is stored
/// inside the transaction, so a `members set`, a re-enable link or a notice committed
/// between the read and this commit survives. The notice (and the owners' mail) is
/// composed from the record as read: should a re-enable land in between, the member may
/// get one notice while delivery stays on; its link then says the token is used or
/// re-enables a member already enabled, both harmless.
pub fn record(
    ctx: Ctx,
    list: &ListConfig,
    member: Member,
    sev: Severity,
    status: Option<&str>,
) -> (Vec<Change>, Vec<OutMail>, Effect) {
    let now = now_ms();
    let mut seen = member;
    let effect = score(list, &mut seen.bounce, sev, status, now);
    let mut changes = Vec::new();
    let mut mail = Vec::new();
    if effect == Effect::Disabled {
        if let Some(b) = seen.bounce.as_mut() {
            b.notices = 1;
            b.last_notice_ms = now;
        }
        notice(ctx, list, &seen, &mut changes, &mut mail);
        if list.bounce_notify_owner_on_disable {
            owner_notice(ctx, list, &seen, "disabled", &mut mail);
        }
    }
    changes.push(score_change(list, &seen.address, sev, status, now));
    (changes, mail, effect)
}

/// The intent that scores one bounce at `now` on the member's stored record (and, when it
/// disables delivery, counts the first notice as sent).
pub fn score_change(
    list: &ListConfig,
    addr: &str,
    sev: Severity,
    status: Option<&str>,
    now: i64,
) -> Change {
    let l = std::sync::Arc::new(list.clone());
    let status = status.map(str::to_string);
    Change::EditMember {
        list: list.key().to_string(),
        addr: addr.to_string(),
        // Depends only on the record it is given (the store may run it more than once, on a conflict).
        edit: MemberFn::new(move |m| {
            if score(&l, &mut m.bounce, sev, status.as_deref(), now) == Effect::Disabled {
                if let Some(b) = m.bounce.as_mut() {
                    b.notices = 1;
                    b.last_notice_ms = now;
                }
            }
        }),
    }
}

/// The intent that counts one more notice at `now`, if the stored record still calls for
/// it (still disabled, the interval passed, notices left).
fn notice_change(list: &ListConfig, addr: &str, now: i64) -> Change {
    let interval = list.bounce_you_are_disabled_warnings_interval.as_millis() as i64;
    let warnings = list.bounce_you_are_disabled_warnings;
    Change::EditMember {
        list: list.key().to_string(),
        addr: addr.to_string(),
        edit: MemberFn::new(move |m| {
            if let Some(b) = m.bounce.as_mut() {
                if b.disabled_ms.is_some()
                    && now - b.last_notice_ms >= interval
                    && b.notices < warnings
                {
                    b.notices += 1;
                    b.last_notice_ms = now;
                }
            }
        }),
    }
}

/// The notice to a member whose delivery is disabled: how to turn it back on.
fn notice(
    ctx: Ctx,
    list: &ListConfig,
    member: &Member,
    changes: &mut Vec<Change>,
    mail: &mut Vec<OutMail>,
) {
    let Some(b) = &member.bounce else { return };
    let interval = list.bounce_you_are_disabled_warnings_interval.as_millis() as i64;
    let left = list
        .bounce_you_are_disabled_warnings
        .saturating_sub(b.notices);
    // Valid until the member would be removed.
    let removal_ms = b.last_notice_ms + interval * (i64::from(left) + 1);
    let token = match commands::pending_token(
        ctx,
        list,
        Kind::Reenable,
        "reenable",
        &member.address,
        removal_ms,
        member.language,
    ) {
        Ok((token, change)) => {
            changes.push(change);
            token
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot draw an id for a re-enable token");
            return;
        }
    };
    let lang = member.language.unwrap_or(list.language);
    let vars = minijinja::context! {
        address => member.address.clone(),
        score => format!("{:.1}", b.score),
        status => b.last_status.clone(),
        token => token.clone(),
        confirm_address => list.sub_address(&format!("confirm+{token}")),
        confirm_url => ctx.cfg.base_url().map(|u| format!("{u}/confirm/{token}")),
        notices_left => left,
        removal => commands::date_text(list, removal_ms),
    };
    match ctx
        .texts
        .render(ctx.cfg, list, lang, "bounce-disabled", vars)
    {
        Ok(text) => {
            let raw = crate::texts::build(crate::texts::MailSpec {
                list,
                to: vec![member.address.clone()],
                lang,
                text,
                auto: "auto-generated",
                reply_to: Some(list.sub_address(&format!("confirm+{token}"))),
                in_reply_to: None,
                attach: None,
                file: None,
                hostname: &ctx.cfg.smtp.hostname,
            });
            mail.push(commands::out_mail(
                list,
                "bounce-notice",
                vec![member.address.clone()],
                raw,
            ));
        }
        Err(e) => tracing::error!(error = %e, "cannot render the bounce notice"),
    }
}

fn owner_notice(ctx: Ctx, list: &ListConfig, member: &Member, kind: &str, mail: &mut Vec<OutMail>) {
    if list.owners.is_empty() {
        return;
    }
    let b = member.bounce.as_ref();
    let vars = minijinja::context! {
        kind,
        address => member.address.clone(),
        score => b.map(|b| format!("{:.1}", b.score)),
        status => b.and_then(|b| b.last_status.clone()),
        received => b.map(|b| b.received),
        notices => b.map(|b| b.notices),
    };
    match ctx
        .texts
        .render(ctx.cfg, list, list.language, "bounce-owner", vars)
    {
        Ok(text) => mail.push(commands::owner_mail(
            ctx.cfg,
            list,
            "bounce-owner",
            text,
            None,
            None,
        )),
        Err(e) => tracing::error!(error = %e, "cannot render the owners' bounce notice"),
    }
}

/// Due work for disabled members of `list` at `now`: another notice, or removal after the
/// last one went unanswered.
pub fn maintain(
    ctx: Ctx,
    list: &ListConfig,
    now: i64,
) -> crate::store::Result<(Vec<Change>, Vec<OutMail>)> {
    let mut changes = Vec::new();
    let mut mail = Vec::new();
    let interval = list.bounce_you_are_disabled_warnings_interval.as_millis() as i64;
    for mut m in ctx.store.members(list.key())? {
        let Some(b) = m.bounce.as_mut() else { continue };
        if b.disabled_ms.is_none() || now - b.last_notice_ms < interval {
            continue;
        }
        if b.notices < list.bounce_you_are_disabled_warnings {
            b.notices += 1;
            b.last_notice_ms = now;
            tracing::info!(
                list = %list.local(),
                notice = b.notices,
                domain = m.address.rsplit('@').next().unwrap_or(""),
                "bounce notice repeated"
            );
            notice(ctx, list, &m, &mut changes, &mut mail);
            changes.push(notice_change(list, &m.address, now));
        } else {
            tracing::info!(
                list = %list.local(),
                domain = m.address.rsplit('@').next().unwrap_or(""),
                "member removed after unanswered bounce notices"
            );
            if list.bounce_notify_owner_on_removal {
                owner_notice(ctx, list, &m, "removed", &mut mail);
            }
            changes.push(Change::RemoveMember {
                list: list.key().to_string(),
                addr: m.address.clone(),
            });
            changes.push(Change::Event {
                list: list.key().to_string(),
                event: MemberEvent {
                    at_ms: now,
                    kind: "left".into(),
                    address: m.address.clone(),
                    via: "bounces".into(),
                },
            });
        }
    }
    Ok((changes, mail))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> ListConfig {
        crate::config::Config::embedded().unwrap().lists[0].clone()
    }

    /// Each fixture: (file, format, recipient, status, severity).
    #[test]
    fn fixtures_from_each_mta() {
        use Severity::*;
        let cases: &[(&[u8], &str, &str, &str, Severity)] = &[
            (
                include_bytes!("../tests/fixtures/bounces/postfix-5.1.1.eml"),
                "dsn",
                "jan.peeters@ocmw-gent.be",
                "5.1.1",
                Hard,
            ),
            (
                include_bytes!("../tests/fixtures/bounces/postfix-delayed-4.4.1.eml"),
                "dsn",
                "els.maes@ocmw-aalst.be",
                "4.4.1",
                Soft,
            ),
            (
                include_bytes!("../tests/fixtures/bounces/exim-dsn-5.2.2.eml"),
                "dsn",
                "piet.janssens@ocmw-leuven.be",
                "5.2.2",
                Hard,
            ),
            (
                include_bytes!("../tests/fixtures/bounces/exim-text-550.eml"),
                "exim",
                "karel.wouters@ocmw-hasselt.be",
                "5.0.0",
                Hard,
            ),
            (
                include_bytes!("../tests/fixtures/bounces/exchange-5.1.10.eml"),
                "dsn",
                "sofie.declercq@ocmw-antwerpen.be",
                "5.1.10",
                Hard,
            ),
            (
                include_bytes!("../tests/fixtures/bounces/gmail-5.1.1.eml"),
                "dsn",
                "lotte.peeters@gmail.com",
                "5.1.1",
                Hard,
            ),
            (
                include_bytes!("../tests/fixtures/bounces/gmail-spam-5.7.1.eml"),
                "dsn",
                "bram.vermeulen@gmail.com",
                "5.7.1",
                Policy,
            ),
            (
                include_bytes!("../tests/fixtures/bounces/qmail-5.1.1.eml"),
                "qmail",
                "ines.desmet@ocmw-mechelen.be",
                "5.1.1",
                Hard,
            ),
        ];
        for (raw, format, rcpt, status, sev) in cases {
            let raw = crate::compose::normalize_crlf(raw);
            let r = parse(&raw);
            assert_eq!(r.format, *format, "{rcpt}");
            assert_eq!(r.failures.len(), 1, "{rcpt}: {r:?}");
            let f = &r.failures[0];
            assert_eq!(f.recipient.as_deref(), Some(*rcpt));
            assert_eq!(f.status.as_deref(), Some(*status), "{rcpt}");
            assert_eq!(f.severity, *sev, "{rcpt}");
        }
        let r = parse(include_bytes!(
            "../tests/fixtures/bounces/unknown-format.eml"
        ));
        assert_eq!((r.format, r.failures.len()), ("unknown", 0));
        // Our own report for a relay refusal reads back as what the relay said.
        let l = list();
        for (err, st, sev) in [
            (
                "permanent error (550): 5.1.1 <x@y.be>: user unknown",
                "5.1.1",
                Hard,
            ),
            (
                "554 5.7.1 Service unavailable; client host blocked using zen.spamhaus.org",
                "5.7.1",
                Policy,
            ),
            ("550 rejected: message looks like spam", "5.0.0", Policy),
        ] {
            let r = parse(&relay_report(&l, "lists.example.org", "x@y.be", err));
            assert_eq!(r.format, "dsn");
            assert_eq!(r.failures[0].status.as_deref(), Some(st), "{err}");
            assert_eq!(r.failures[0].severity, sev, "{err}");
        }
    }

    /// What a refusal is about: the member's mailbox, or the message.
    #[test]
    fn scopes() {
        use Scope::*;
        for (status, diag, want) in [
            (
                Some("5.3.4"),
                "552 5.3.4 Message size exceeds fixed limit",
                Message,
            ),
            (
                Some("4.3.4"),
                "452 4.3.4 message too big for system",
                Message,
            ),
            (
                Some("5.2.3"),
                "552 5.2.3 message length exceeds administrative limit",
                Message,
            ),
            (Some("5.6.0"), "554 5.6.0 malformed MIME", Message),
            (Some("5.7.1"), "554 5.7.1 Message rejected as spam", Message),
            (
                Some("5.7.0"),
                "550 5.7.0 virus found in attachment",
                Message,
            ),
            (
                Some("5.0.0"),
                "550 rejected: message looks like spam",
                Message,
            ),
            // About our host or the recipient's policy, not this post.
            (
                Some("5.7.1"),
                "554 5.7.1 <x@y.be>: Relay access denied",
                Member,
            ),
            (
                Some("5.7.1"),
                "554 5.7.1 Service unavailable; client host blocked using zen.spamhaus.org",
                Member,
            ),
            (
                Some("5.7.1"),
                "550 5.7.1 Recipient address rejected: access denied",
                Member,
            ),
            (Some("5.7.1"), "rejected", Member),
            // Address statuses are always the member's.
            (Some("5.1.1"), "550 5.1.1 user unknown (spam trap)", Member),
            (Some("5.2.2"), "552 5.2.2 mailbox full", Member),
            (None, "", Member),
        ] {
            assert_eq!(scope(status, diag), want, "{status:?} {diag}");
        }
        let r = parse(&crate::compose::normalize_crlf(include_bytes!(
            "../tests/fixtures/bounces/gmail-spam-5.7.1.eml"
        )));
        assert_eq!(r.failures[0].scope, Message);
        let r = parse(&crate::compose::normalize_crlf(include_bytes!(
            "../tests/fixtures/bounces/postfix-5.1.1.eml"
        )));
        assert_eq!(r.failures[0].scope, Member);
        assert_eq!(
            returned_message(&crate::compose::normalize_crlf(include_bytes!(
                "../tests/fixtures/bounces/postfix-5.1.1.eml"
            )))
            .0
            .as_deref(),
            Some("q1@ocmw-brugge.be")
        );
        // One status for many copies of one post: at least 3, and half of those tried.
        assert!(!mass_refusal(2, 2));
        assert!(mass_refusal(3, 3));
        assert!(mass_refusal(3, 6));
        assert!(!mass_refusal(3, 7));
        assert!(mass_refusal(500, 1000));
        assert_eq!(MessageFailure::reason_for(Some("5.3.4"), ""), "too-big");
        assert_eq!(MessageFailure::reason_for(Some("5.7.1"), "spam"), "content");
        assert_eq!(MessageFailure::reason_for(Some("5.0.0"), "no"), "many");
    }

    #[test]
    fn addresses_are_masked_for_the_log() {
        assert_eq!(
            mask_addresses("permanent error (550): 5.1.1 <jan.peeters@ocmw-gent.be>: no such user"),
            "permanent error (550): 5.1.1 <***@ocmw-gent.be>: no such user"
        );
        assert_eq!(mask_addresses("a+b@x.be, c@y.be"), "***@x.be, ***@y.be");
        assert_eq!(mask_addresses("552 5.3.4 too big"), "552 5.3.4 too big");
    }

    #[test]
    fn status_codes() {
        assert_eq!(
            find_status("550 5.1.1 <a@b>: unknown").as_deref(),
            Some("5.1.1")
        );
        assert_eq!(
            find_status("smtp; 550 5.1.10 RESOLVER").as_deref(),
            Some("5.1.10")
        );
        assert_eq!(find_status("version 1.5.1.2 of x"), None);
        assert_eq!(find_status("at 10.4.2.1"), None);
        assert_eq!(
            status_from_reply("550 no such user").as_deref(),
            Some("5.0.0")
        );
        assert_eq!(
            status_from_reply("452 4.2.2 full").as_deref(),
            Some("4.2.2")
        );
    }

    #[test]
    fn severities() {
        assert_eq!(severity(Some("5.1.1"), "user unknown"), Severity::Hard);
        assert_eq!(severity(Some("4.2.2"), "mailbox full"), Severity::Soft);
        assert_eq!(severity(Some("5.7.1"), "rejected"), Severity::Policy);
        assert_eq!(
            severity(Some("5.0.0"), "554 message looks like spam"),
            Severity::Policy
        );
        assert_eq!(severity(None, ""), Severity::Soft);
    }

    #[test]
    fn one_count_a_day_and_the_threshold() {
        let l = list();
        let mut info = None;
        let day = 86_400_000;
        let t0 = 20_000 * day + 1000;
        assert_eq!(
            score(&l, &mut info, Severity::Soft, None, t0),
            Effect::Counted
        );
        // The same day: another soft one does not count; a hard one upgrades the day.
        assert_eq!(
            score(&l, &mut info, Severity::Soft, None, t0 + 10),
            Effect::NotCounted
        );
        assert_eq!(
            score(&l, &mut info, Severity::Hard, None, t0 + 20),
            Effect::Counted
        );
        assert_eq!(
            score(&l, &mut info, Severity::Hard, None, t0 + 30),
            Effect::NotCounted
        );
        assert!((info.as_ref().unwrap().score - 1.0).abs() < 1e-9);
        assert_eq!(
            score(&l, &mut info, Severity::Policy, None, t0 + day),
            Effect::NotCounted
        );
        for d in 1..4 {
            assert_eq!(
                score(&l, &mut info, Severity::Hard, None, t0 + d * day),
                Effect::Counted
            );
        }
        assert_eq!(
            score(&l, &mut info, Severity::Hard, None, t0 + 4 * day),
            Effect::Disabled
        );
        assert!(info.as_ref().unwrap().disabled_ms.is_some());
        assert_eq!(
            score(&l, &mut info, Severity::Hard, None, t0 + 5 * day),
            Effect::NotCounted
        );
        assert_eq!(info.as_ref().unwrap().received, 10);
    }

    /// A bounce scored from a record read before a `members set` (and the other way round)
    /// loses neither: the score and the setting are intents applied to the stored record.
    #[test]
    fn scoring_and_settings_committed_from_old_reads_both_survive() {
        use crate::store::{MemberSettings, Store};
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = crate::config::Config::embedded().unwrap();
        cfg.data_dir = dir.path().to_path_buf();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let secret = crate::tokens::Secret::from_bytes([3; 32]);
        let texts = crate::texts::Texts::load(&cfg).unwrap();
        let ctx = Ctx {
            cfg: &cfg,
            store: &store,
            secret: &secret,
            texts: &texts,
        };
        let l = &cfg.lists[0];
        let digest_on = |addr: &str| Change::SetMember {
            list: l.key().to_string(),
            addr: addr.to_string(),
            settings: MemberSettings {
                digest: Some(true),
                ..Default::default()
            },
        };
        for (i, setting_first) in [(1, true), (2, false)] {
            let addr = format!("lid{i}@ocmw.be");
            store
                .add_member(l.key(), &Member::new(addr.clone(), None, |_| 0))
                .unwrap();
            // Both read before either commits.
            let read = store.member(l.key(), &addr).unwrap().unwrap();
            let (changes, mail, effect) = record(ctx, l, read, Severity::Hard, Some("5.1.1"));
            assert_eq!(effect, Effect::Counted);
            if setting_first {
                store.commit(vec![digest_on(&addr)], Vec::new()).unwrap();
                store.commit(changes, mail).unwrap();
            } else {
                store.commit(changes, mail).unwrap();
                store.commit(vec![digest_on(&addr)], Vec::new()).unwrap();
            }
            let m = store.member(l.key(), &addr).unwrap().unwrap();
            assert!(m.digest, "{addr}: the setting survives");
            let b = m.bounce.expect("the bounce survives");
            assert!((b.score - 1.0).abs() < 1e-9, "{addr}: {b:?}");
            assert_eq!(b.last_status.as_deref(), Some("5.1.1"));
        }
    }

    #[test]
    fn stale_scores_are_forgotten() {
        let l = list();
        let mut info = None;
        let day = 86_400_000;
        for d in 0..4 {
            score(&l, &mut info, Severity::Hard, None, d * day);
        }
        assert!((info.as_ref().unwrap().score - 4.0).abs() < 1e-9);
        assert_eq!(current_score(&l, info.as_ref().unwrap(), 12 * day), 0.0);
        // Eight days later the old score is gone: this bounce starts again at 1.
        assert_eq!(
            score(&l, &mut info, Severity::Hard, None, 11 * day),
            Effect::Counted
        );
        assert!((info.as_ref().unwrap().score - 1.0).abs() < 1e-9);
    }
}
