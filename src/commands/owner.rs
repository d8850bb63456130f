//! Owners' commands by mail to `-request`: the list run without a shell.
//!
//! Reading commands (`members`, `export`, `held`, `bounces`, `stats`) are answered to the
//! owner's own address, so a forged From only sends the owner their own list. Commands
//! that change membership (`add`, `remove`) are collected over the whole mail and carried
//! out together: at once when the mail carries a DKIM signature that verifies and aligns
//! with the owner's From domain ([`crate::dkim::verify`]), otherwise after the owner
//! confirms by reply (From can be forged; the confirmation cannot). To anyone who is not
//! an owner these words are not commands at all: they get the answer an unknown command
//! gets, so the answer does not tell a stranger that the address is an owner's.

use super::{address_arg, Cmd, LineParse, Plan, Res};
use crate::admin::{parse_member_lines, NewMember};
use crate::config::{valid_address, Language};
use crate::store::MemberOp;
use crate::tokens::Kind;
use std::fmt::Write;

/// At most this many membership changes in one mail (a federation's whole roster fits).
pub const MAX_OPS: usize = 5_000;

/// The owner-only command words.
pub fn is_word(w: &str) -> bool {
    matches!(
        w,
        "add"
            | "toevoegen"
            | "remove"
            | "verwijderen"
            | "verwijder"
            | "members"
            | "who"
            | "leden"
            | "export"
            | "exporteren"
            | "exporteer"
            | "held"
            | "wachtend"
            | "bounces"
            | "onbestelbaar"
            | "stats"
            | "cijfers"
            | "statistieken"
    )
}

/// Parses an owner command line whose (lower-case) first word is `w`. Prose that happens
/// to start with one of the words (more arguments than the command takes) is not a
/// command.
pub fn parse(w: &str, args: &[&str], line: &str) -> LineParse {
    let dutch = matches!(
        w,
        "toevoegen"
            | "verwijderen"
            | "verwijder"
            | "leden"
            | "exporteren"
            | "exporteer"
            | "wachtend"
            | "onbestelbaar"
            | "cijfers"
            | "statistieken"
    );
    let cmd = |cmd: Cmd| LineParse::Cmd { cmd, dutch };
    let bare = |c: Cmd| {
        if args.is_empty() {
            cmd(c)
        } else {
            LineParse::NotCommand
        }
    };
    match w {
        "add" | "toevoegen" => {
            let rest = line.split_once(char::is_whitespace).map_or("", |x| x.1);
            match members_on_line(rest) {
                Ok(m) => cmd(Cmd::OwnerAdd(m)),
                Err(e) => LineParse::Invalid(e),
            }
        }
        "remove" | "verwijderen" | "verwijder" => {
            let rest = line.split_once(char::is_whitespace).map_or("", |x| x.1);
            match members_on_line(rest) {
                Ok(m) => cmd(Cmd::OwnerRemove(m.into_iter().map(|m| m.0).collect())),
                Err(e) => LineParse::Invalid(e),
            }
        }
        "members" | "who" | "leden" => match args {
            [] => cmd(Cmd::OwnerMembers(None)),
            [f] if !f.contains('?') => cmd(Cmd::OwnerMembers(Some(f.to_lowercase()))),
            _ => LineParse::NotCommand,
        },
        "export" | "exporteren" | "exporteer" => bare(Cmd::OwnerExport),
        "held" | "wachtend" => bare(Cmd::OwnerHeld),
        "bounces" | "onbestelbaar" => bare(Cmd::OwnerBounces),
        _ => bare(Cmd::OwnerStats),
    }
}

/// The members named after `add`/`remove`: `Name <addr>`, or addresses separated by
/// spaces, commas or semicolons. Nothing is fine (the addresses follow on the next
/// lines, or in a CSV attachment).
fn members_on_line(rest: &str) -> Result<Vec<NewMember>, String> {
    let rest = rest.trim();
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    if rest.contains('<') {
        // `Jan <jan@x>, Piet <piet@y>`: each `Name <address>` up to its `>`.
        let mut out = Vec::new();
        for part in rest.split_inclusive('>') {
            let part = part.trim().trim_start_matches([',', ';']).trim();
            if part.is_empty() {
                continue;
            }
            match member_line(part) {
                Some(m) => out.push(m),
                None => return Err(format!("not an e-mail address: {part}")),
            }
        }
        return Ok(out);
    }
    rest.split(|c: char| c.is_whitespace() || c == ',' || c == ';')
        .filter(|w| !w.is_empty())
        .map(|w| {
            let a = address_arg(w);
            if valid_address(&a) {
                Ok((a, None))
            } else {
                Err(format!("not an e-mail address: {a}"))
            }
        })
        .collect()
}

/// One member line (`addr`, `Name <addr>`, `addr,Name`), as the import file reads it.
pub fn member_line(line: &str) -> Option<NewMember> {
    let (mut good, bad) = parse_member_lines(line);
    (good.len() == 1 && bad.is_empty()).then(|| good.remove(0))
}

/// Adds an address line to the `add`/`remove` before it; false when `cmd` is not one or
/// `line` is not an address line.
pub fn continues(cmd: &mut Cmd, line: &str) -> bool {
    let n = match cmd {
        Cmd::OwnerAdd(m) => m.len(),
        Cmd::OwnerRemove(a) => a.len(),
        _ => return false,
    };
    let Some(m) = member_line(line).filter(|_| n < MAX_OPS) else {
        return false;
    };
    match cmd {
        Cmd::OwnerAdd(v) => v.push(m),
        Cmd::OwnerRemove(v) => v.push(m.0),
        _ => {}
    }
    true
}

/// `add`/`remove` with the members of a CSV (or plain text) attachment when the line named
/// none: queued for [`finish`].
pub fn queue(plan: &mut Plan, add: bool, members: Vec<NewMember>, attachments: &[String]) {
    let mut members = members;
    // The attachment belongs to the first `add` or `remove` that names nobody.
    if members.is_empty() && !std::mem::replace(&mut plan.attachment_read, true) {
        for text in attachments {
            let (good, bad) = parse_member_lines(text);
            members.extend(good);
            for (n, why) in bad.into_iter().take(20) {
                let mut r = Res::new("invalid").reason(&why);
                r.line = Some(format!("attachment line {n}"));
                plan.results.push(r);
            }
        }
    }
    if members.is_empty() {
        plan.results.push(Res::new("invalid").reason(if add {
            "expected addresses after \"add\", one per line, or a CSV attachment"
        } else {
            "expected addresses after \"remove\", one per line, or a CSV attachment"
        }));
        return;
    }
    let mut dropped = 0;
    for (address, name) in members {
        // One change per address, the last one written: `add a` then `remove a` removes.
        plan.owner_ops
            .retain(|o| !o.address.eq_ignore_ascii_case(&address));
        if plan.owner_ops.len() >= MAX_OPS {
            dropped += 1;
            continue;
        }
        plan.owner_ops.push(MemberOp {
            add,
            address,
            name: if add { name } else { None },
        });
    }
    if dropped > 0 {
        let mut r = Res::new("truncated");
        r.count = Some(dropped);
        plan.results.push(r);
    }
}

/// After every command of the mail: the membership changes at once (a valid aligned DKIM
/// signature) or one confirmation request for all of them.
pub fn finish(
    plan: &mut Plan,
    requester: &str,
    dkim_aligned: bool,
    hint: Option<Language>,
) -> crate::store::Result<()> {
    let ops = std::mem::take(&mut plan.owner_ops);
    if ops.is_empty() {
        return Ok(());
    }
    if dkim_aligned {
        return apply(plan, &ops, "owner");
    }
    let shown: Vec<String> = ops.iter().take(50).map(op_line).collect();
    let vars = minijinja::context! {
        ops => shown, count => ops.len(), more => ops.len().saturating_sub(50),
        adds => ops.iter().filter(|o| o.add).count(),
        removes => ops.iter().filter(|o| !o.add).count(),
    };
    // Counted as answers (owners do this several times a day), not as confirmations.
    let limit = plan.ctx.cfg.commands.max_replies_per_address;
    let pending = plan.confirm_own_in(
        super::REPLY,
        limit,
        requester,
        hint,
        Kind::OwnerAction,
        "owner-members",
        "confirm-owner-members",
        vars,
    )?;
    if let Some(pending) = pending {
        let count = ops.len();
        pending.ops = ops;
        // The confirmation mail is the answer (as for a member's own requests).
        let mut r = Res::new("owner-confirm-sent");
        r.count = Some(count);
        r.silent = true;
        plan.results.push(r);
    }
    Ok(())
}

fn op_line(o: &MemberOp) -> String {
    let who = match &o.name {
        Some(n) => format!("{n} <{}>", o.address),
        None => o.address.clone(),
    };
    format!("{} {who}", if o.add { "+" } else { "-" })
}

/// Carries out an owner's membership changes: new members get the welcome text (with how
/// to leave), removed ones the goodbye.
pub fn apply(plan: &mut Plan, ops: &[MemberOp], via: &str) -> crate::store::Result<()> {
    let (mut added, mut already, mut removed, mut missing) = (vec![], vec![], vec![], vec![]);
    for o in ops {
        let member = plan.is_member(&o.address)?;
        match (o.add, member) {
            (true, true) => already.push(o.address.clone()),
            (true, false) => {
                plan.add_member(&o.address, o.name.clone(), None, via);
                let lang = plan.list.language;
                plan.welcome(&o.address, lang, None);
                added.push(o.address.clone());
            }
            (false, true) => {
                plan.remove_member(&o.address, via);
                let lang = plan.lang_for(&o.address, None);
                let vars = minijinja::context! { address => o.address.clone() };
                plan.reply(&o.address, lang, "goodbye", vars, None);
                removed.push(o.address.clone());
            }
            (false, false) => missing.push(o.address.clone()),
        }
    }
    for (kind, addrs) in [
        ("owner-added", added),
        ("owner-already", already),
        ("owner-removed", removed),
        ("owner-not-member", missing),
    ] {
        if addrs.is_empty() {
            continue;
        }
        let mut r = Res::new(kind);
        r.count = Some(addrs.len());
        if addrs.len() <= 30 {
            r.value = Some(addrs.join(", "));
        }
        plan.results.push(r);
    }
    Ok(())
}

/// A report in the answer: a heading from the results text (by `what`) and `text`.
fn report(plan: &mut Plan, what: &'static str, count: usize, text: String) {
    let mut r = Res::new("owner-report");
    r.setting = Some(what);
    r.count = Some(count);
    r.value = Some(format!("{}\n", text.trim_end()));
    plan.results.push(r);
}

/// `members [filter]`: who is on the list, with their delivery state.
pub fn members(plan: &mut Plan, filter: Option<&str>) -> crate::store::Result<()> {
    let now = crate::clock::now_ms();
    let all = plan.ctx.store.members(plan.key())?;
    let mut out = String::new();
    let mut n = 0;
    for m in &all {
        let name = m.name.as_deref().unwrap_or("");
        if let Some(f) = filter {
            if !m.address.to_lowercase().contains(f) && !name.to_lowercase().contains(f) {
                continue;
            }
        }
        n += 1;
        let mut flags = Vec::new();
        if m.digest {
            flags.push(if m.digest_plain {
                "digest (plain)"
            } else {
                "digest"
            });
        }
        if m.on_vacation(now) {
            flags.push("nomail");
        }
        if m.bounce.as_ref().is_some_and(|b| b.disabled_ms.is_some()) {
            flags.push("disabled (bounces)");
        }
        let who = if name.is_empty() {
            m.address.clone()
        } else {
            format!("{name} <{}>", m.address)
        };
        let _ = if flags.is_empty() {
            writeln!(out, "{who}")
        } else {
            writeln!(out, "{who}  [{}]", flags.join(", "))
        };
    }
    report(plan, "members", n, out);
    Ok(())
}

/// `export`: every member as a CSV attachment (the same columns as `members export`).
pub fn export(plan: &mut Plan) -> crate::store::Result<()> {
    let all = plan.ctx.store.members(plan.key())?;
    let csv = crate::admin::members_csv(&all);
    let name = format!("{}-members.csv", plan.list.local());
    report(plan, "export", all.len(), String::new());
    plan.attachment = Some((name, csv.into_bytes()));
    Ok(())
}

/// `held`: the posts that wait for approval, each with the lines that approve or reject
/// it by reply.
pub fn held(plan: &mut Plan) -> crate::store::Result<()> {
    let key = plan.key().to_string();
    let held: Vec<_> = plan
        .ctx
        .store
        .held_heads()?
        .into_iter()
        .filter(|h| h.list.eq_ignore_ascii_case(&key))
        .collect();
    let mut out = String::new();
    let mut waiting_for_poster = 0;
    let mut n = 0;
    for h in &held {
        // Those wait for their poster (a masked number); owners are not shown them.
        if h.poster_confirms {
            waiting_for_poster += 1;
            continue;
        }
        n += 1;
        let token = super::moderation_token(plan.ctx.secret, &key, h.id, &h.from_addr);
        let _ = writeln!(
            out,
            "{n}. {}\n   From:    {}\n   Subject: {}\n   Reason:  {}\n   approve {token}\n   reject {token}\n",
            super::date_text(plan.list, h.envelope.received_ms),
            h.from_addr,
            h.subject,
            h.reason
        );
    }
    report(plan, "held", n, out);
    if waiting_for_poster > 0 {
        let mut r = Res::new("owner-held-poster");
        r.count = Some(waiting_for_poster);
        plan.results.push(r);
    }
    Ok(())
}

/// `bounces`: the members with a bounce record.
pub fn bounces(plan: &mut Plan) -> crate::store::Result<()> {
    let bouncing: Vec<_> = plan
        .ctx
        .store
        .members(plan.key())?
        .into_iter()
        .filter(|m| m.bounce.is_some())
        .collect();
    let text = if bouncing.is_empty() {
        String::new()
    } else {
        crate::admin::bounce_table(plan.list, &bouncing)
    };
    report(plan, "bounces", bouncing.len(), text);
    Ok(())
}

/// `stats`: the figures `vraagbaak stats` prints.
pub fn stats(plan: &mut Plan) -> crate::store::Result<()> {
    let text = crate::admin::stats(plan.list, plan.ctx.store)?;
    report(plan, "stats", 0, text);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{parse_request, parse_request_as, Cmd};

    #[test]
    fn owner_words_are_commands_for_owners_only() {
        let body = "add Jan Peeters <jan@ocmw-a.be>\npiet@ocmw-b.be, \"An\"\nremove oud@ocmw.be\nleden gent\nwachtend\nBedankt\n";
        let r = parse_request_as("", body, 20, true);
        assert_eq!(
            r.cmds.iter().map(|c| c.0.clone()).collect::<Vec<_>>(),
            vec![
                Cmd::OwnerAdd(vec![
                    ("jan@ocmw-a.be".into(), Some("Jan Peeters".into())),
                    ("piet@ocmw-b.be".into(), Some("An".into())),
                ]),
                Cmd::OwnerRemove(vec!["oud@ocmw.be".into()]),
                Cmd::OwnerMembers(Some("gent".into())),
                Cmd::OwnerHeld,
            ]
        );
        assert_eq!(r.dutch, None, "English and Dutch words mixed");
        // From anyone else the same mail is an unknown first line.
        let r = parse_request("", body, 20);
        assert!(r.cmds.is_empty());
        assert_eq!(
            r.unknown.as_deref(),
            Some("add Jan Peeters <jan@ocmw-a.be>")
        );
        // Prose starting with an owner word is not a command, even from an owner.
        let r = parse_request_as("", "Who knows the rules for this?\n", 20, true);
        assert!(r.cmds.is_empty() && r.unknown.is_some());
        let r = parse_request_as("stats", "export\nadd a@x.be b@y.be;c@z.be\n", 20, true);
        assert_eq!(r.cmds.len(), 3);
        assert_eq!(
            r.cmds[2].0,
            Cmd::OwnerAdd(vec![
                ("a@x.be".into(), None),
                ("b@y.be".into(), None),
                ("c@z.be".into(), None)
            ])
        );
        let r = parse_request_as("", "add me please\n", 20, true);
        assert_eq!(r.invalid.len(), 1);
        let r = parse_request_as("", "add Jan <jan@x.be>, Piet Smet <piet@y.be>\n", 20, true);
        assert_eq!(
            r.cmds[0].0,
            Cmd::OwnerAdd(vec![
                ("jan@x.be".into(), Some("Jan".into())),
                ("piet@y.be".into(), Some("Piet Smet".into()))
            ])
        );
        // A bare `add` in the Subject and another in the body each keep their lines.
        let r = parse_request_as("add", "remove old@x.be\nadd\nnew@x.be\n", 20, true);
        assert_eq!(
            r.cmds.iter().map(|c| c.0.clone()).collect::<Vec<_>>(),
            vec![
                Cmd::OwnerAdd(vec![]),
                Cmd::OwnerRemove(vec!["old@x.be".into()]),
                Cmd::OwnerAdd(vec![("new@x.be".into(), None)]),
            ]
        );
    }
}
