//! Mail commands, confirmations, one-click unsubscribe and moderation by reply.
//!
//! Everything here decides; nothing writes. A decision is a [`Plan`]: the store changes and
//! the mails they cause, applied by the caller in one transaction (the pipeline together
//! with the request's removal from the spool, the web endpoint and the command line with
//! [`Store::commit`]).
//!
//! Rules that keep the list from being abused:
//! - subscribing and unsubscribing by mail always needs a confirmation by the address
//!   concerned (double opt-in); the answer to a request for someone else's address is the
//!   same whether or not that address is a member;
//! - every mail to an address counts against a per-address limit, and confirmation
//!   requests also against a per-requester limit ([`crate::config::CommandsConfig`]);
//! - automatic mail (RFC 3834) and bounces are never answered (the pipeline quarantines
//!   them before they get here).

use crate::clock::now_ms;
use crate::config::{valid_address, Config, Language, ListConfig, NotifyOwners};
use crate::store::{Change, Held, Member, MemberEvent, MemberSettings, OutMail, Pending, Store};
use crate::texts::{self, MailSpec, Texts};
use crate::tokens::{Kind, Secret, Token};
use minijinja::Value;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

mod owner;

/// What deciding needs.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    pub cfg: &'a Config,
    pub store: &'a Store,
    pub secret: &'a Secret,
    pub texts: &'a Texts,
}

// ---- parsing ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    Subscribe(Option<String>),
    Unsubscribe(Option<String>),
    Confirm(String),
    Help,
    Info,
    /// `forget`: remove every trace of the sender's address (confirmed first).
    Forget,
    /// `archive`: a one-time login link for the members-only archive.
    Archive,
    SetNomail(bool),
    /// `set nomail until DATE`: vacation that ends by itself at the start of DATE.
    SetNomailUntil(chrono::NaiveDate),
    SetDigest(bool),
    /// `set digest plain` (RFC 1153, one text mail) or `set digest mime` (the default).
    SetDigestPlain(bool),
    SetLanguage(Language),
    /// `stil`/`mute` (true) or `volg`/`unmute` (false): the thread the mail replies to.
    Mute(bool),
    Approve {
        token: String,
        member: bool,
    },
    /// An owner's `opgelost URL` (or `heropend URL`): marks a question solved, with the
    /// answer a message URL names, or reopens it; confirmed by the owner first.
    QaMark {
        solved: bool,
        thread: String,
    },
    Reject {
        token: String,
        reason: Option<String>,
    },
    /// Owners only ([`owner`]): `add` members (on the line, on the lines after it, or in
    /// a CSV attachment).
    OwnerAdd(Vec<crate::admin::NewMember>),
    /// `remove` members.
    OwnerRemove(Vec<String>),
    /// `members [filter]`.
    OwnerMembers(Option<String>),
    /// `export`: the members as a CSV attachment.
    OwnerExport,
    /// `held`: posts waiting for approval, with their approve/reject lines.
    OwnerHeld,
    /// `bounces`: members with a bounce record.
    OwnerBounces,
    /// `stats`.
    OwnerStats,
    End,
}

/// What one line is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineParse {
    /// Not a command word: reading stops here.
    NotCommand,
    /// A command; `dutch` when written with a Dutch word.
    Cmd { cmd: Cmd, dutch: bool },
    /// A command word with arguments that do not fit; why.
    Invalid(String),
}

fn on_off(w: Option<&str>) -> Option<bool> {
    match w?.to_lowercase().as_str() {
        "on" | "aan" | "yes" | "ja" | "true" | "1" => Some(true),
        "off" | "uit" | "no" | "nee" | "false" | "0" => Some(false),
        _ => None,
    }
}

/// A date as people write it here: `2026-12-01`, `01-12-2026`, `1/12/2026`, `1.12.2026`.
pub fn parse_date(w: &str) -> Option<chrono::NaiveDate> {
    ["%Y-%m-%d", "%d-%m-%Y", "%d/%m/%Y", "%d.%m.%Y"]
        .iter()
        .find_map(|f| chrono::NaiveDate::parse_from_str(w.trim(), f).ok())
}

/// The start of `date` in the list's time zone, as Unix milliseconds.
pub fn start_of_day_ms(list: &ListConfig, date: chrono::NaiveDate) -> i64 {
    use chrono::TimeZone;
    let midnight = date.and_time(chrono::NaiveTime::MIN);
    list.timezone
        .from_local_datetime(&midnight)
        .earliest()
        .map_or_else(
            || midnight.and_utc().timestamp_millis(),
            |d| d.timestamp_millis(),
        )
}

fn address_arg(w: &str) -> String {
    w.trim_matches(|c| c == '<' || c == '>' || c == '"' || c == ',')
        .strip_prefix("mailto:")
        .map(str::to_string)
        .unwrap_or_else(|| {
            w.trim_matches(|c| c == '<' || c == '>' || c == '"' || c == ',')
                .to_string()
        })
}

/// Parses one line (case-insensitive; English and Dutch words).
pub fn parse_line(line: &str) -> LineParse {
    let words: Vec<&str> = line.split_whitespace().collect();
    let Some(first) = words.first() else {
        return LineParse::NotCommand;
    };
    let w = first.trim_end_matches(':').to_lowercase();
    let args = &words[1..];
    let cmd = |cmd: Cmd, dutch: bool| LineParse::Cmd { cmd, dutch };
    let addr = |args: &[&str]| -> Result<Option<String>, String> {
        match args {
            [] => Ok(None),
            [a] => {
                let a = address_arg(a);
                if valid_address(&a) {
                    Ok(Some(a))
                } else {
                    Err(format!("not an e-mail address: {a}"))
                }
            }
            _ => Err("expected at most one address".into()),
        }
    };
    match w.as_str() {
        "subscribe" | "join" | "aanmelden" | "inschrijven" => match addr(args) {
            Ok(a) => cmd(
                Cmd::Subscribe(a),
                matches!(w.as_str(), "aanmelden" | "inschrijven"),
            ),
            Err(e) => LineParse::Invalid(e),
        },
        "unsubscribe" | "leave" | "signoff" | "afmelden" | "uitschrijven" => match addr(args) {
            Ok(a) => cmd(
                Cmd::Unsubscribe(a),
                matches!(w.as_str(), "afmelden" | "uitschrijven"),
            ),
            Err(e) => LineParse::Invalid(e),
        },
        "confirm" | "bevestig" | "bevestigen" => match args {
            [t] => cmd(Cmd::Confirm(t.to_string()), w != "confirm"),
            _ => LineParse::Invalid("expected the code from the confirmation mail".into()),
        },
        "help" | "hulp" | "?" => cmd(Cmd::Help, w == "hulp"),
        "archive" | "archief" if args.is_empty() => cmd(Cmd::Archive, w == "archief"),
        "forget" | "vergeet" | "vergeten" => match args {
            [] => cmd(Cmd::Forget, w != "forget"),
            [m] if matches!(m.to_lowercase().as_str(), "me" | "mij" | "mijn") => {
                cmd(Cmd::Forget, w != "forget")
            }
            _ => LineParse::Invalid(
                "forget works only for your own address: send just \"forget\"".into(),
            ),
        },
        "info" | "informatie" => cmd(Cmd::Info, w == "informatie"),
        "opgelost" | "solved" | "heropend" | "heropen" | "reopen" | "reopened" => match args {
            [t] => cmd(
                Cmd::QaMark {
                    solved: matches!(w.as_str(), "opgelost" | "solved"),
                    thread: t.to_string(),
                },
                matches!(w.as_str(), "opgelost" | "heropend" | "heropen"),
            ),
            _ => LineParse::Invalid(
                "expected the question's archive URL or thread number (owners only)".into(),
            ),
        },
        "mute" | "stil" | "dempen" if args.is_empty() => cmd(Cmd::Mute(true), w != "mute"),
        "unmute" | "volg" | "volgen" if args.is_empty() => cmd(Cmd::Mute(false), w != "unmute"),
        "niet" if args.len() == 1 && args[0].eq_ignore_ascii_case("stil") => {
            cmd(Cmd::Mute(false), true)
        }
        "set" | "instellen" | "zet" => {
            let dutch = w != "set";
            let what = args.first().map(|s| s.to_lowercase());
            match what.as_deref() {
                Some("nomail" | "vakantie" | "vacation" | "geenmail") => {
                    let until = args.get(1).map(|w| w.to_lowercase());
                    match (on_off(args.get(1).copied()), until.as_deref(), args.len()) {
                        (Some(v), _, 2) => cmd(Cmd::SetNomail(v), dutch),
                        (_, Some("until" | "tot"), 3) => match parse_date(args[2]) {
                            Some(d) => cmd(Cmd::SetNomailUntil(d), dutch),
                            None => LineParse::Invalid(
                                "expected a date such as 2026-12-01 or 01-12-2026".into(),
                            ),
                        },
                        _ => LineParse::Invalid(
                            "expected: set nomail on|off, or set nomail until DATE".into(),
                        ),
                    }
                }
                Some("digest" | "samenvatting") => {
                    let mode = args.get(1).map(|w| w.to_lowercase());
                    match (on_off(args.get(1).copied()), mode.as_deref(), args.len()) {
                        (Some(v), _, 2) => cmd(Cmd::SetDigest(v), dutch),
                        (_, Some("plain" | "tekst" | "text"), 2) => {
                            cmd(Cmd::SetDigestPlain(true), dutch)
                        }
                        (_, Some("mime"), 2) => cmd(Cmd::SetDigestPlain(false), dutch),
                        _ => LineParse::Invalid("expected: set digest on|off|plain|mime".into()),
                    }
                }
                Some("language" | "taal" | "lang") => {
                    match (args.get(1).and_then(|l| Language::from_code(l)), args.len()) {
                        (Some(l), 2) => cmd(Cmd::SetLanguage(l), dutch),
                        _ => LineParse::Invalid("expected: set language nl|en".into()),
                    }
                }
                _ => LineParse::Invalid(
                    "expected: set nomail|digest on|off, or set language nl|en".into(),
                ),
            }
        }
        "approve" | "goedkeuren" | "goedkeuring" => match args {
            [t] => cmd(
                Cmd::Approve {
                    token: t.to_string(),
                    member: false,
                },
                w != "approve",
            ),
            [t, m] if matches!(m.to_lowercase().as_str(), "member" | "lid") => cmd(
                Cmd::Approve {
                    token: t.to_string(),
                    member: true,
                },
                w != "approve",
            ),
            _ => LineParse::Invalid("expected: approve TOKEN [member]".into()),
        },
        "reject" | "weigeren" | "afwijzen" => match args {
            [] => LineParse::Invalid("expected: reject TOKEN [reason]".into()),
            [t, rest @ ..] => {
                let reason = rest.join(" ");
                cmd(
                    Cmd::Reject {
                        token: t.to_string(),
                        reason: (!reason.is_empty()).then_some(reason),
                    },
                    w != "reject",
                )
            }
        },
        "end" | "stop" | "einde" => cmd(Cmd::End, w == "einde"),
        w if owner::is_word(w) => owner::parse(w, args, line.trim()),
        _ => LineParse::NotCommand,
    }
}

/// The commands found in a request mail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// Commands with the line they came from.
    pub cmds: Vec<(Cmd, String)>,
    /// Lines with a command word that could not be used, and why.
    pub invalid: Vec<(String, String)>,
    /// The first line that was not a command, when no command came before it.
    pub unknown: Option<String>,
    /// Command lines beyond the limit, not carried out.
    pub truncated: usize,
    /// Dutch command words were used (and no English ones).
    pub dutch: Option<bool>,
}

/// Strips `Re:`/`Antw:`/`Fwd:` and a `[list]` prefix from a subject.
fn bare_subject(s: &str) -> &str {
    let mut s = s.trim();
    loop {
        let before = s;
        for p in [
            "re:", "aw:", "antw:", "sv:", "fw:", "fwd:", "doorst:", "tr:",
        ] {
            if s.get(..p.len()).is_some_and(|h| h.eq_ignore_ascii_case(p)) {
                s = s[p.len()..].trim_start();
            }
        }
        if s.starts_with('[') {
            if let Some(end) = s.find(']') {
                s = s[end + 1..].trim_start();
            }
        }
        if s == before {
            return s;
        }
    }
}

/// Reads the commands of a mail to `-request`: the Subject, then the first lines of the
/// text body, up to the first line that is not a command, a signature (`-- `) or `end`.
/// Quoted lines (`>`) and empty lines are skipped.
pub fn parse_request(subject: &str, body: &str, max: usize) -> Request {
    parse_request_as(subject, body, max, false)
}

/// As [`parse_request`]; `owner` when the sender is an owner of the list: only then are
/// the owners' words commands, and address lines after `add`/`remove` continue it.
pub fn parse_request_as(subject: &str, body: &str, max: usize, owner: bool) -> Request {
    let parse_line = |line: &str| {
        let first = line.split_whitespace().next().unwrap_or("");
        if !owner && owner::is_word(&first.trim_end_matches(':').to_lowercase()) {
            LineParse::NotCommand
        } else {
            parse_line(line)
        }
    };
    let mut r = Request::default();
    let (mut nl, mut en) = (0, 0);
    let mut push = |r: &mut Request, cmd: Cmd, dutch: bool, line: &str| {
        // The same command twice (in the Subject and again in the body, as many people
        // write it) is carried out once: one confirmation mail, not two.
        // (`add`/`remove` are kept: the address lines after each belong to it.)
        let lists = matches!(cmd, Cmd::OwnerAdd(_) | Cmd::OwnerRemove(_));
        if !lists && r.cmds.iter().any(|(c, _)| *c == cmd) {
            return;
        }
        if dutch {
            nl += 1
        } else {
            en += 1
        }
        if r.cmds.len() + r.invalid.len() >= max {
            r.truncated += 1;
        } else {
            r.cmds.push((cmd, line.to_string()));
        }
    };
    let subj = bare_subject(subject);
    match parse_line(subj) {
        LineParse::Cmd { cmd: Cmd::End, .. } => {}
        LineParse::Cmd { cmd, dutch } => push(&mut r, cmd, dutch, subj),
        // A subject is prose more often than not: only a whole command counts. A reply to a
        // confirmation mail carries `(confirm TOKEN)` at its end.
        _ => {
            let lower = subj.to_ascii_lowercase();
            if let Some(i) = lower.rfind("confirm ") {
                let t: String = subj[i + 8..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .collect();
                if Token::parse(&t).is_some() {
                    push(&mut r, Cmd::Confirm(t), false, subj);
                }
            }
        }
    }
    for raw in body.lines() {
        if raw == "-- " || raw == "--" || raw.trim_end() == "-- " {
            break;
        }
        let line = raw.trim();
        if line.is_empty() || line.starts_with('>') {
            continue;
        }
        match parse_line(line) {
            LineParse::Cmd { cmd: Cmd::End, .. } => break,
            LineParse::Cmd { cmd, dutch } => push(&mut r, cmd, dutch, line),
            LineParse::Invalid(why) => {
                if r.cmds.len() + r.invalid.len() >= max {
                    r.truncated += 1;
                } else {
                    r.invalid.push((line.to_string(), why));
                }
            }
            LineParse::NotCommand => {
                // An address line after `add`/`remove` belongs to it.
                if r.cmds
                    .last_mut()
                    .is_some_and(|(c, _)| owner::continues(c, line))
                {
                    continue;
                }
                if r.cmds.is_empty() && r.invalid.is_empty() {
                    r.unknown = Some(line.chars().take(200).collect());
                }
                break;
            }
        }
    }
    r.dutch = match (nl, en) {
        (0, 0) => None,
        (_, 0) => Some(true),
        (0, _) => Some(false),
        _ => None,
    };
    r
}

// ---- deciding --------------------------------------------------------------------------

/// Which address of the list a request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// `-request`: commands in Subject and body.
    Request,
    /// `-join`, `-subscribe`, `+subscribe`: the mail is the command.
    Join,
    /// `-leave`, `-unsubscribe`, `+unsubscribe`: the mail is the command.
    Leave,
    /// `-confirm+TOKEN`: the mail confirms.
    Confirm(String),
    /// `+help`.
    Help,
}

/// One line of the answer, for `results.txt`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Res {
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub setting: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
    /// Needs no answer of its own (the confirmation mail or the welcome is the answer).
    #[serde(skip)]
    pub silent: bool,
}

impl Res {
    fn new(kind: &'static str) -> Res {
        Res {
            kind,
            ..Res::default()
        }
    }
    fn addr(mut self, a: &str) -> Res {
        self.address = Some(a.to_string());
        self
    }
    fn reason(mut self, r: &str) -> Res {
        self.reason = Some(r.to_string());
        self
    }
}

/// Why a token does nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFail {
    /// Not one of ours, altered, or unknown.
    Forged,
    Expired,
    Used,
    /// Valid, but for another list than the address it was sent to.
    OtherList,
    /// A moderation token whose post was already handled.
    NoHeld,
    /// A one-click token whose member is no longer on the list.
    NotMember,
    /// A confirmation by mail from another address than the one the token was sent to.
    OtherAddress,
    /// A moderation command from someone who is not an owner of the list.
    NotOwner,
}

impl TokenFail {
    pub fn code(self) -> &'static str {
        match self {
            TokenFail::Forged => "forged",
            TokenFail::Expired => "expired",
            TokenFail::Used => "used",
            TokenFail::OtherList => "other-list",
            TokenFail::NoHeld => "no-held",
            TokenFail::NotMember => "not-member",
            TokenFail::OtherAddress => "other-address",
            TokenFail::NotOwner => "not-owner",
        }
    }
}

/// Store changes and mail, to be applied together.
pub struct Plan<'a> {
    ctx: Ctx<'a>,
    pub list: &'a ListConfig,
    pub changes: Vec<Change>,
    pub mail: Vec<OutMail>,
    pub results: Vec<Res>,
    /// Mails counted in this plan, per (bucket, address), not yet in the store.
    hits: HashMap<(String, String), u32>,
    /// Membership changes made in this plan, so that later commands see them.
    joined: Vec<String>,
    left: Vec<String>,
    /// An owner's `add`/`remove` of this mail, carried out or confirmed together at its end.
    owner_ops: Vec<crate::store::MemberOp>,
    /// A file for the answer (an owner's `export`): name and bytes.
    attachment: Option<(String, Vec<u8>)>,
    /// The request's attached member list was read (by the first bare `add`/`remove`).
    attachment_read: bool,
    /// The language of the request a confirmation carries out: its answer speaks it.
    confirmed_lang: Option<Language>,
    now: i64,
}

/// Rate-limit buckets.
const CONFIRM: &str = "confirm";
const CONFIRM_BY: &str = "confirm-by";
/// Every confirmation request of a list, per hour.
const CONFIRM_ALL: &str = "confirm-all";
const REPLY: &str = "reply";

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

    fn key(&self) -> &str {
        self.list.key()
    }

    /// The list's language (pages answering a plan are in it).
    pub fn language(&self) -> Language {
        self.list.language
    }

    fn bucket(&self, b: &str) -> String {
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
    fn since(&self, bucket: &str) -> i64 {
        if bucket == CONFIRM_ALL {
            return self.now - 3_600_000;
        }
        self.now - self.ctx.cfg.commands.rate_window.as_millis() as i64
    }

    /// Whether one more mail to `addr`'s mailbox in `bucket` stays within `limit`. A
    /// confirmation also stays within the list's limit per hour over all addresses.
    fn within(&self, bucket: &str, addr: &str, limit: u32) -> crate::store::Result<bool> {
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

    fn hit(&mut self, bucket: &str, addr: &str) {
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

    fn lang_for(&self, addr: &str, hint: Option<Language>) -> Language {
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
    fn send(
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
    fn reply(&mut self, to: &str, lang: Language, template: &str, vars: Value, re: Option<&str>) {
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
    fn notify_owners(&mut self, kind: &str, addr: &str, via: &str) {
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

    fn add_member(&mut self, addr: &str, name: Option<String>, lang: Option<Language>, via: &str) {
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
    fn uid_of(&self, addr: &str) -> u64 {
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

    fn remove_member(&mut self, addr: &str, via: &str) {
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
    fn welcome(&mut self, addr: &str, lang: Language, re: Option<&str>) {
        let url = self.ctx.cfg.base_url().map(|b| {
            let uid = self.uid_of(addr);
            format!("{b}/u/{}", self.ctx.secret.one_click(uid, self.key(), addr))
        });
        let vars = minijinja::context! { address => addr, unsubscribe_url => url };
        self.reply(addr, lang, "welcome", vars, re);
    }

    /// `subscribe [addr]` / `unsubscribe [addr]` from `requester`: a confirmation request to
    /// the address concerned.
    fn request_change(
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
    fn pending_token(
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
    fn request_forget(
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
    fn confirm_own(
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
    fn confirm_own_in(
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

    /// An owner's `opgelost URL` / `heropend URL`: checked against the archive's threads,
    /// then confirmed by the owner's own address before anything changes (a From line can
    /// be forged; the confirmation cannot).
    fn request_qa_mark(
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

    /// Carries out one `set` command for member `addr`: an intent applied to the record
    /// inside the transaction, so that every `set` of one mail survives, whatever else
    /// changes the record meanwhile.
    fn apply_set(&mut self, addr: &str, cmd: Cmd) {
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
    fn request_settings(
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
    fn replied_thread(
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
    fn poster_release(&mut self, t: &Token, requester: &str) -> crate::store::Result<()> {
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

/// A request mail, already classified as not automatic.
pub struct Incoming {
    /// The From address: answers go there.
    pub requester: String,
    pub name: Option<String>,
    pub message_id: Option<String>,
    pub subject: String,
    /// The text of the body (the first text part).
    pub body: String,
    /// The ids it replies to, oldest first, In-Reply-To last
    /// ([`crate::threading::references`]): the thread `stil`/`mute` acts on.
    pub references: Vec<String>,
    /// The text of its attachments that may be member lists (an owner's CSV), else empty.
    pub attachments: Vec<String>,
    /// It carries a valid DKIM signature aligned with the From domain.
    pub dkim_aligned: bool,
}

/// Decides what a request mail does. Returns the plan (changes and mail).
pub fn handle<'a>(
    ctx: Ctx<'a>,
    list: &'a ListConfig,
    via: &Via,
    mail: &Incoming,
) -> crate::store::Result<Plan<'a>> {
    let mut plan = Plan::new(ctx, list);
    let requester = mail.requester.as_str();
    let re = mail.message_id.as_deref();
    let (cmds, parsed) = match via {
        Via::Join => (vec![(Cmd::Subscribe(None), "subscribe".into())], None),
        Via::Leave => (vec![(Cmd::Unsubscribe(None), "unsubscribe".into())], None),
        Via::Help => (vec![(Cmd::Help, "help".into())], None),
        Via::Confirm(t) => (vec![(Cmd::Confirm(t.clone()), "confirm".into())], None),
        Via::Request => {
            let r = parse_request_as(
                &mail.subject,
                &mail.body,
                ctx.cfg.commands.max_commands,
                is_owner(list, requester),
            );
            (r.cmds.clone(), Some(r))
        }
    };
    let hint = match parsed.as_ref().and_then(|r| r.dutch) {
        Some(true) => Some(Language::Nl),
        Some(false) if list.language == Language::En => Some(Language::En),
        _ => None,
    };
    let (mut show_help, mut show_info, mut forget_asked) = (false, false, false);
    let mut set_lines: Vec<String> = Vec::new();
    for (cmd, line) in cmds {
        match cmd {
            Cmd::Subscribe(t) => {
                plan.request_change(true, t, requester, mail.name.clone(), hint)?
            }
            Cmd::Unsubscribe(t) => plan.request_change(false, t, requester, None, hint)?,
            Cmd::Archive => {
                if plan.is_member(requester)? {
                    plan.archive_login(requester)?;
                } else {
                    plan.results.push(Res::new("not-member-set"));
                }
            }
            // Once per mail, even when both subject and body say it.
            Cmd::Forget if forget_asked => {}
            Cmd::Forget => {
                forget_asked = true;
                plan.request_forget(requester, hint)?
            }
            Cmd::Confirm(t) if Token::parse(&t).is_some_and(|t| t.kind == Kind::PosterRelease) => {
                if let Some(t) = Token::parse(&t) {
                    plan.poster_release(&t, requester)?;
                }
            }
            Cmd::Confirm(t) => match plan.check_pending(&t, true)? {
                // By mail, the token must come back from the address it was sent to (the
                // link in the confirmation mail serves forwarded and aliased mailboxes).
                Ok((_, p)) if !p.address.eq_ignore_ascii_case(requester) => plan
                    .results
                    .push(Res::new("token-invalid").reason(TokenFail::OtherAddress.code())),
                Ok((id, p)) => plan.confirm(id, p, "mail", re),
                Err(f) => plan
                    .results
                    .push(Res::new("token-invalid").reason(f.code())),
            },
            Cmd::Help => {
                show_help = true;
                plan.results.push(Res::new("help"));
            }
            Cmd::Info => {
                show_info = true;
                plan.results.push(Res::new("info"));
            }
            Cmd::SetNomail(_)
            | Cmd::SetNomailUntil(_)
            | Cmd::SetDigest(_)
            | Cmd::SetDigestPlain(_)
            | Cmd::SetLanguage(_) => {
                if !ctx.store.is_member(list.key(), requester)? {
                    plan.results.push(Res::new("not-member-set"));
                    continue;
                }
                if mail.dkim_aligned {
                    plan.apply_set(requester, cmd);
                } else {
                    // A From line can be forged: the member confirms first (one
                    // confirmation for every `set` of the mail).
                    set_lines.push(line.clone());
                }
            }
            Cmd::Mute(on) => {
                if !ctx.store.is_member(list.key(), requester)? {
                    plan.results.push(Res::new("not-member-set"));
                    continue;
                }
                match plan.replied_thread(&mail.references)? {
                    Some((thread, subject)) => {
                        let (list_key, addr) = (list.key().to_string(), requester.to_string());
                        plan.changes.push(if on {
                            Change::Mute {
                                list: list_key,
                                addr,
                                thread,
                                at_ms: now_ms(),
                            }
                        } else {
                            Change::Unmute {
                                list: list_key,
                                addr,
                                thread,
                            }
                        });
                        let mut r = Res::new(if on { "muted" } else { "unmuted" });
                        r.subject = subject;
                        plan.results.push(r);
                    }
                    None => plan.results.push(Res::new("mute-no-thread")),
                }
            }
            Cmd::QaMark { .. } if !is_owner(list, requester) => {
                plan.results.push(Res::new("owner-only"))
            }
            Cmd::QaMark { solved, thread } => {
                plan.request_qa_mark(requester, solved, &thread, hint)?
            }
            Cmd::Approve { .. } | Cmd::Reject { .. } if !is_owner(list, requester) => plan
                .results
                .push(Res::new("token-invalid").reason(TokenFail::NotOwner.code())),
            Cmd::Approve { token, member } => match plan.check_moderation(&token)? {
                Ok(h) => plan.moderate(&h, true, member, None),
                Err(f) => plan
                    .results
                    .push(Res::new("token-invalid").reason(f.code())),
            },
            Cmd::Reject { token, reason } => match plan.check_moderation(&token)? {
                Ok(h) => plan.moderate(&h, false, false, reason.as_deref()),
                Err(f) => plan
                    .results
                    .push(Res::new("token-invalid").reason(f.code())),
            },
            Cmd::OwnerAdd(m) => owner::queue(&mut plan, true, m, &mail.attachments),
            Cmd::OwnerRemove(a) => owner::queue(
                &mut plan,
                false,
                a.into_iter().map(|a| (a, None)).collect(),
                &mail.attachments,
            ),
            Cmd::OwnerMembers(f) => owner::members(&mut plan, f.as_deref())?,
            Cmd::OwnerExport => owner::export(&mut plan)?,
            Cmd::OwnerHeld => owner::held(&mut plan)?,
            Cmd::OwnerBounces => owner::bounces(&mut plan)?,
            Cmd::OwnerStats => owner::stats(&mut plan)?,
            Cmd::End => break,
        }
        let _ = line;
    }
    owner::finish(&mut plan, requester, mail.dkim_aligned, hint)?;
    if !set_lines.is_empty() {
        plan.request_settings(requester, set_lines, hint)?;
    }
    if let Some(r) = &parsed {
        // The From of a request may be forged: the answer may reach someone who never
        // wrote it, so it quotes little of it (a few lines, short, no links).
        for (line, why) in r.invalid.iter().take(QUOTED_LINES) {
            let mut x = Res::new("invalid").reason(why);
            x.line = Some(quoted(line));
            plan.results.push(x);
            show_help = true;
        }
        if r.invalid.len() > QUOTED_LINES {
            let mut x = Res::new("truncated");
            x.count = Some(r.invalid.len() - QUOTED_LINES);
            plan.results.push(x);
        }
        if let Some(u) = &r.unknown {
            let mut x = Res::new("unknown");
            x.line = Some(quoted(u));
            plan.results.push(x);
            show_help = true;
        }
        if r.truncated > 0 {
            let mut x = Res::new("truncated");
            x.count = Some(r.truncated);
            plan.results.push(x);
        }
        if r.cmds.is_empty() && r.invalid.is_empty() && r.unknown.is_none() {
            plan.results.push(Res::new("no-commands"));
            show_help = true;
        }
    }
    // The language of the request a confirmation carried out, else the member's or the
    // words'; it may have just been changed by `set language`.
    let lang = plan.lang_for(requester, plan.confirmed_lang.or(hint));
    let lang = plan
        .changes
        .iter()
        .rev()
        .find_map(|c| match c {
            Change::SetMember { settings, .. } => settings.language.flatten(),
            _ => None,
        })
        .unwrap_or(lang);
    if plan.results.iter().any(|r| !r.silent) {
        answer(&mut plan, requester, lang, show_help, show_info, re)?;
    }
    Ok(plan)
}

/// At most this many lines of a request are quoted in its answer.
const QUOTED_LINES: usize = 3;

/// A line of a request as its answer quotes it: at most 80 characters, links replaced, so
/// that a forged request cannot make the list carry someone's spam to a victim.
fn quoted(line: &str) -> String {
    let words: Vec<String> = line
        .split_whitespace()
        .map(|w| {
            let lw = w.to_ascii_lowercase();
            let link = lw.contains("://")
                || lw.starts_with("www.")
                || lw.contains("<http")
                || (lw.contains('.') && lw.contains('/') && !lw.contains('@'));
            if link {
                "[link]".to_string()
            } else {
                w.to_string()
            }
        })
        .collect();
    let mut q: String = words.join(" ").chars().take(80).collect();
    if words.join(" ").chars().count() > 80 {
        q.push_str("...");
    }
    q
}

pub fn is_owner(list: &ListConfig, addr: &str) -> bool {
    list.owners.iter().any(|o| o.eq_ignore_ascii_case(addr))
}

/// The one answer to a request mail: results, then help and info texts when asked for.
fn answer(
    plan: &mut Plan,
    to: &str,
    lang: Language,
    show_help: bool,
    show_info: bool,
    re: Option<&str>,
) -> crate::store::Result<()> {
    let ctx = plan.ctx;
    let results: Vec<&Res> = plan.results.iter().filter(|r| !r.silent).collect();
    let only_texts = results.iter().all(|r| r.kind == "help" || r.kind == "info");
    let render = |name: &str, vars: Value| ctx.texts.render(ctx.cfg, plan.list, lang, name, vars);
    let mut parts: Vec<texts::Text> = Vec::new();
    if !only_texts {
        match render(
            "results",
            minijinja::context! { results => Value::from_serialize(&results), show_help },
        ) {
            Ok(t) => parts.push(t),
            Err(e) => tracing::error!(error = %e, "cannot render results"),
        }
    }
    if show_info {
        let m = ctx.store.member(plan.list.key(), to)?;
        let vars = minijinja::context! {
            member => m.is_some(),
            digest => m.as_ref().is_some_and(|m| m.digest),
            nomail => m.as_ref().is_some_and(|m| m.on_vacation(now_ms())),
            nomail_until => m.as_ref().and_then(|m| m.nomail_until.filter(|_| m.nomail)).map(|ms| date_text(plan.list, ms)),
            digest_plain => m.as_ref().is_some_and(|m| m.digest_plain),

            member_language => m.as_ref().and_then(|m| m.language).unwrap_or(plan.list.language).code(),
            owners_count => plan.list.owners.len(),
            address => to,
        };
        match render("info", vars) {
            Ok(t) => parts.push(t),
            Err(e) => tracing::error!(error = %e, "cannot render info"),
        }
    }
    if show_help {
        match render(
            "help",
            minijinja::context! { owner => is_owner(plan.list, to) },
        ) {
            Ok(t) => parts.push(t),
            Err(e) => tracing::error!(error = %e, "cannot render help"),
        }
    }
    let Some(first) = parts.first() else {
        return Ok(());
    };
    let text = texts::Text {
        subject: first.subject.clone(),
        body: parts
            .iter()
            .map(|p| p.body.trim_end())
            .collect::<Vec<_>>()
            .join("\n\n")
            + "\n",
    };
    if !plan.within(REPLY, to, ctx.cfg.commands.max_replies_per_address)? {
        tracing::info!("reply limit reached for an address; answer not sent");
        return Ok(());
    }
    let raw = texts::build(MailSpec {
        list: plan.list,
        to: vec![to.to_string()],
        lang,
        text,
        auto: "auto-replied",
        reply_to: None,
        in_reply_to: re.map(str::to_string),
        attach: None,
        file: plan
            .attachment
            .as_ref()
            .map(|(name, bytes)| (name.as_str(), "text/csv; charset=utf-8", bytes.as_slice())),
        hostname: &ctx.cfg.smtp.hostname,
    });
    plan.mail
        .push(out_mail(plan.list, "answer", vec![to.to_string()], raw));
    plan.hit(REPLY, to);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_lines_carry_no_links() {
        assert_eq!(
            quoted("Buy now at https://spam.example/x and www.spam.example"),
            "Buy now at [link] and [link]"
        );
        assert_eq!(quoted("subscribe jan@ocmw.be"), "subscribe jan@ocmw.be");
        assert_eq!(quoted("visit spam.example/cheap now"), "visit [link] now");
        let long = "x".repeat(300);
        assert_eq!(quoted(&long).chars().count(), 83);
    }

    #[test]
    fn mailboxes_count_once_however_spelled() {
        assert_eq!(mailbox("Stranger+1@Example.ORG"), "stranger@example.org");
        assert_eq!(mailbox("stranger+x+y@example.org"), "stranger@example.org");
        assert_eq!(
            mailbox("j.an.peeters+lijst@gmail.com"),
            "janpeeters@gmail.com"
        );
        assert_eq!(
            mailbox("jan.peeters@ocmw-gent.be"),
            "jan.peeters@ocmw-gent.be"
        );
        assert_eq!(mailbox("+x@example.org"), "+x@example.org");
        assert_eq!(mailbox("*"), "*");
    }

    #[test]
    fn mute_words() {
        for (line, cmd, dutch) in [
            ("stil", Cmd::Mute(true), true),
            ("Mute", Cmd::Mute(true), false),
            ("dempen", Cmd::Mute(true), true),
            ("volg", Cmd::Mute(false), true),
            ("niet stil", Cmd::Mute(false), true),
            ("UNMUTE", Cmd::Mute(false), false),
        ] {
            assert_eq!(parse_line(line), LineParse::Cmd { cmd, dutch }, "{line}");
        }
        // Prose that starts with the word is not a command (a subject "Stil staan bij ...").
        for line in [
            "stil staan bij armoede",
            "volg je de opleiding?",
            "niet dringend",
        ] {
            assert_eq!(parse_line(line), LineParse::NotCommand, "{line}");
        }
        let r = parse_request(
            "Re: [forum] Vraag over leefloon",
            "stil\r\n\r\nOp ma schreef An:\r\n> ...",
            10,
        );
        assert_eq!(r.cmds, [(Cmd::Mute(true), "stil".to_string())]);
        assert_eq!(r.dutch, Some(true));
    }

    #[test]
    fn lines() {
        assert_eq!(
            parse_line("SUBSCRIBE"),
            LineParse::Cmd {
                cmd: Cmd::Subscribe(None),
                dutch: false
            }
        );
        assert_eq!(
            parse_line("aanmelden <jan@ocmw.be>"),
            LineParse::Cmd {
                cmd: Cmd::Subscribe(Some("jan@ocmw.be".into())),
                dutch: true
            }
        );
        assert!(matches!(
            parse_line("subscribe not-an-address"),
            LineParse::Invalid(_)
        ));
        assert_eq!(
            parse_line("instellen vakantie aan"),
            LineParse::Cmd {
                cmd: Cmd::SetNomail(true),
                dutch: true
            }
        );
        assert_eq!(
            parse_line("set language EN"),
            LineParse::Cmd {
                cmd: Cmd::SetLanguage(Language::En),
                dutch: false
            }
        );
        assert!(matches!(
            parse_line("set colour blue"),
            LineParse::Invalid(_)
        ));
        assert_eq!(parse_line("Beste collega's,"), LineParse::NotCommand);
        assert_eq!(
            parse_line("reject abc te commercieel"),
            LineParse::Cmd {
                cmd: Cmd::Reject {
                    token: "abc".into(),
                    reason: Some("te commercieel".into())
                },
                dutch: false
            }
        );
    }

    #[test]
    fn request_reading_rules() {
        let body =
            "\r\n> subscribe quoted\r\nhelp\r\n\r\nset nomail on\r\nBedankt!\r\nunsubscribe\r\n";
        let r = parse_request("Re: [forum] vraag", body, 20);
        assert_eq!(
            r.cmds.iter().map(|c| c.0.clone()).collect::<Vec<_>>(),
            vec![Cmd::Help, Cmd::SetNomail(true)]
        );
        assert!(
            r.unknown.is_none(),
            "stopping after commands is not an error"
        );
        let r = parse_request("", "Graag wil ik me afmelden.\nGroeten\n", 20);
        assert!(r.cmds.is_empty());
        assert_eq!(r.unknown.as_deref(), Some("Graag wil ik me afmelden."));
        let r = parse_request("afmelden", "hulp\n-- \nhelp\n", 20);
        assert_eq!(r.cmds.len(), 2);
        assert_eq!(r.dutch, Some(true));
        let many: String = (0..30).map(|i| format!("subscribe a{i}@x.be\n")).collect();
        let r = parse_request("", &many, 20);
        assert_eq!((r.cmds.len(), r.truncated), (20, 10));
        let t = Secret::from_bytes([1; 32]).issue(Kind::Subscribe, 9, 0, "l", "a@b.c");
        let r = parse_request(&format!("Re: Bevestig je aanmelding (confirm {t})"), "", 20);
        assert_eq!(r.cmds.len(), 1);
        assert_eq!(r.cmds[0].0, Cmd::Confirm(t));
        // Non-ASCII subjects (byte offsets inside a character) are read, not a panic.
        let r = parse_request("éé vraag", "ö\n", 20);
        assert_eq!(r.unknown.as_deref(), Some("ö"));
        let r = parse_request("subscribe", "subscribe\nhelp\n", 20);
        assert_eq!(
            r.cmds.iter().map(|c| c.0.clone()).collect::<Vec<_>>(),
            vec![Cmd::Subscribe(None), Cmd::Help],
            "once, though written twice"
        );
        let r = parse_request("Set up of the meeting", "end\nsubscribe\n", 20);
        assert!(r.cmds.is_empty() && r.unknown.is_none());
    }
}
