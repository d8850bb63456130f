//! `members ...`: add, remove, list, export, settings, bounce records, forget.

use super::*;

pub(super) async fn add(ctx: &Ctx, cmd: Command) -> crate::store::Result<Reply> {
    let Command::MembersAdd {
        list,
        members,
        welcome,
    } = cmd
    else {
        return Ok(misrouted());
    };
    let Some(l) = ctx.svc.cfg.list(&list) else {
        return Ok(unknown(&list));
    };
    let key = l.key().to_string();
    let (mut added, mut already) = (0, 0);
    let mut err = String::new();
    let mut plan = Plan::new(ctx.svc.ctx(), l);
    for (addr, name) in members {
        if !valid_address(&addr) {
            let _ = writeln!(err, "not an e-mail address: {addr:?}");
            continue;
        }
        let secret = &ctx.svc.secret;
        let m = Member::new(addr.clone(), name, |joined| {
            secret.membership_uid(&key, &addr, joined)
        });
        if ctx.svc.store.add_member(&key, &m)? {
            added += 1;
            if welcome {
                plan.welcome_member(&addr);
            }
        } else {
            already += 1;
        }
    }
    let welcomed = plan.mail.len();
    if !plan.mail.is_empty() {
        ctx.svc.store.commit(plan.changes, plan.mail)?;
    }
    ctx.svc.store.flush_async().await?;
    if welcomed > 0 {
        ctx.inbound.wake.notify_one();
    }
    tracing::info!(list = %key, added, already, welcomed, "members added");
    Ok(Reply {
        code: if err.is_empty() { EX_OK } else { EX_DATAERR },
        out: if welcome {
            format!("{added} added ({welcomed} welcomed), {already} already members\n")
        } else {
            format!("{added} added, {already} already members\n")
        },
        err,
    })
}

pub(super) async fn remove(ctx: &Ctx, cmd: Command) -> crate::store::Result<Reply> {
    let Command::MembersRemove { list, addrs } = cmd else {
        return Ok(misrouted());
    };
    let Some(key) = list_key(ctx, &list) else {
        return Ok(unknown(&list));
    };
    let mut out = String::new();
    let mut missing = 0;
    for a in &addrs {
        if !ctx.svc.store.remove_member(&key, a)? {
            missing += 1;
            let _ = writeln!(out, "not a member: {a}");
        }
    }
    ctx.svc.store.flush_async().await?;
    let _ = writeln!(out, "{} removed", addrs.len() - missing);
    Ok(Reply::ok(out))
}

pub(super) async fn list(ctx: &Ctx, cmd: Command) -> crate::store::Result<Reply> {
    Ok(match cmd {
        Command::MembersList {
            list,
            bounces: true,
        } => {
            let Some(l) = ctx.svc.cfg.list(&list) else {
                return Ok(unknown(&list));
            };
            Reply::ok(bounce_table(l, &ctx.svc.store.members(l.key())?))
        }
        Command::MembersList { list, .. } => {
            let Some(key) = list_key(ctx, &list) else {
                return Ok(unknown(&list));
            };
            let mut out = String::new();
            for m in ctx.svc.store.members(&key)? {
                match &m.name {
                    Some(n) if !n.is_empty() => {
                        let _ = writeln!(out, "{} <{}>", n, m.address);
                    }
                    _ => {
                        let _ = writeln!(out, "{}", m.address);
                    }
                }
            }
            Reply::ok(out)
        }
        _ => misrouted(),
    })
}

pub(super) async fn export(ctx: &Ctx, cmd: Command) -> crate::store::Result<Reply> {
    let Command::MembersExport { list } = cmd else {
        return Ok(misrouted());
    };
    let Some(key) = list_key(ctx, &list) else {
        return Ok(unknown(&list));
    };
    let out = members_csv(&ctx.svc.store.members(&key)?);
    Ok(Reply::ok(out))
}

pub(super) async fn set(ctx: &Ctx, cmd: Command) -> crate::store::Result<Reply> {
    let Command::MembersSet {
        list,
        addr,
        setting,
        on,
        until,
    } = cmd
    else {
        return Ok(misrouted());
    };
    let Some(l) = ctx.svc.cfg.list(&list) else {
        return Ok(unknown(&list));
    };
    let key = l.key().to_string();
    if !ctx.svc.store.is_member(&key, &addr)? {
        return Ok(Reply::fail(EX_NOUSER, format!("not a member: {addr}")));
    }
    let mut st = MemberSettings::default();
    let mut shown = if on { "on" } else { "off" }.to_string();
    match setting.as_str() {
        "digest" => st.digest = Some(on),
        "digest-plain" => {
            st.digest = Some(true);
            st.digest_plain = Some(on);
        }
        "nomail" if until.is_some() => {
            let text = until.as_deref().unwrap_or_default();
            let Some(d) = crate::commands::parse_date(text) else {
                return Ok(Reply::fail(
                    EX_USAGE,
                    format!("--until {text:?}: expected a date such as 2026-12-01"),
                ));
            };
            let ms = crate::commands::start_of_day_ms(l, d);
            if ms <= now_ms() {
                return Ok(Reply::fail(
                    EX_USAGE,
                    format!("--until {text}: that date has passed"),
                ));
            }
            st.nomail = Some(true);
            st.nomail_until = Some(Some(ms));
            shown = format!("on until {}", d.format("%Y-%m-%d"));
        }
        "nomail" => {
            st.nomail = Some(on);
            st.nomail_until = Some(None);
            // Turning mail back on also ends a stop for bounces (and its score).
            st.clear_bounce = !on;
        }
        other => {
            return Ok(Reply::fail(
                EX_USAGE,
                format!("unknown setting {other:?}: expected digest or nomail"),
            ))
        }
    }
    ctx.svc.store.commit(
        vec![Change::SetMember {
            list: key,
            addr: addr.clone(),
            settings: st,
        }],
        Vec::new(),
    )?;
    ctx.svc.store.flush_async().await?;
    Ok(Reply::ok(format!("{setting} {shown} for {addr}\n")))
}

pub(super) async fn bounces_reset(ctx: &Ctx, cmd: Command) -> crate::store::Result<Reply> {
    let Command::MembersBouncesReset { list, addrs, all } = cmd else {
        return Ok(misrouted());
    };
    let Some(key) = list_key(ctx, &list) else {
        return Ok(unknown(&list));
    };
    if all != addrs.is_empty() {
        return Ok(Reply::fail(
            EX_USAGE,
            "give member addresses or --all, not both",
        ));
    }
    let mut err = String::new();
    let targets: Vec<Member> = if all {
        ctx.svc.store.members(&key)?
    } else {
        let mut found = Vec::new();
        for a in &addrs {
            match ctx.svc.store.member(&key, a)? {
                Some(m) => found.push(m),
                None => {
                    let _ = writeln!(err, "not a member: {a}");
                }
            }
        }
        found
    };
    let had = targets.iter().filter(|m| m.bounce.is_some()).count();
    let changes: Vec<Change> = targets
        .iter()
        .map(|m| Change::SetMember {
            list: key.clone(),
            addr: m.address.clone(),
            settings: MemberSettings {
                clear_bounce: true,
                ..Default::default()
            },
        })
        .collect();
    if !changes.is_empty() {
        ctx.svc.store.commit(changes, Vec::new())?;
        ctx.svc.store.flush_async().await?;
    }
    tracing::info!(list = %key, members = targets.len(), had, "bounce records reset");
    Ok(Reply {
        code: if err.is_empty() { EX_OK } else { EX_NOUSER },
        out: format!(
            "bounce records reset for {} members ({had} had one); delivery is on\n",
            targets.len()
        ),
        err,
    })
}

pub(super) async fn forget(ctx: &Ctx, cmd: Command) -> crate::store::Result<Reply> {
    let Command::MembersForget {
        list,
        addr,
        all_lists,
    } = cmd
    else {
        return Ok(misrouted());
    };
    let Some(l) = ctx.svc.cfg.list(&list).cloned() else {
        return Ok(unknown(&list));
    };
    let r = blocking(&ctx.svc, move |svc| {
        let mut lists = vec![l.clone()];
        if all_lists {
            for o in crate::forget::lists_of(svc, &addr)? {
                if !o.key().eq_ignore_ascii_case(l.key()) {
                    lists.push(o.clone());
                }
            }
        }
        let mut out = String::new();
        for l in &lists {
            let r = crate::forget::run(svc, l, &addr)?;
            let _ = writeln!(
                out,
                "{}: forgotten: member record {}, {} other records removed, {} stored \
                 messages relabelled, {} posts deleted; the archive was written anew.",
                l.address,
                if r.member { "removed" } else { "not found" },
                r.records,
                r.relabelled,
                r.posts_deleted
            );
        }
        out.push_str(
            "Stop the daemon and run `vraagbaak store compact` to erase the old \
             records from the database files too.\n",
        );
        Ok(out)
    })
    .await;
    Ok(match r {
        Ok(out) => Reply::ok(out),
        Err(e) => Reply::fail(EX_TEMPFAIL, format!("forget failed: {e:#}")),
    })
}
