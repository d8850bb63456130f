//! Parsing request mails: the commands of a Subject and body, in English and Dutch.

use super::*;

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

pub(super) fn on_off(w: Option<&str>) -> Option<bool> {
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

pub(super) fn address_arg(w: &str) -> String {
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
pub(super) fn bare_subject(s: &str) -> &str {
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
