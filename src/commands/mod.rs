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
//!
//! The files, in the order a request meets them: `parse` (the commands of a Subject and
//! body), this file ([`handle`]: which address, which commands, one [`Plan`]), `plan` (rate
//! limits and the mails a plan sends), `membership` (join, leave, confirm, forget, archive
//! logins), `settings` (`set`, solved/reopened), `moderation` (held posts), `owner` (owners'
//! commands) and `answers` (the one answer mail).

use crate::clock::now_ms;
use crate::config::{valid_address, Config, Language, ListConfig, NotifyOwners};
use crate::store::{Change, Held, Member, MemberEvent, MemberSettings, OutMail, Pending, Store};
use crate::texts::{self, MailSpec, Texts};
use crate::tokens::{Kind, Secret, Token};
use minijinja::Value;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

mod answers;
mod membership;
mod moderation;
mod owner;
mod parse;
mod plan;
mod settings;

use answers::*;
pub use parse::*;
pub use plan::*;

/// What deciding needs.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    pub cfg: &'a Config,
    pub store: &'a Store,
    pub secret: &'a Secret,
    pub texts: &'a Texts,
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
