//! Mail in and out: `inject`, the delivery queue, digests made now.

use super::*;

pub(super) async fn inject(ctx: &Ctx, cmd: Command, raw: Vec<u8>) -> crate::store::Result<Reply> {
    let Command::Inject {
        list, sender, rcpt, ..
    } = cmd
    else {
        return Ok(misrouted());
    };
    // Routed exactly like an SMTP recipient: a post, a request, a confirmation or
    // a bounce, by the address it was sent to.
    let rcpt = match rcpt.filter(|r| !r.is_empty()) {
        Some(r) => r,
        None if list.contains('@') => list.clone(),
        None => match ctx.svc.cfg.list(&list) {
            Some(l) => l.address.clone(),
            None => return Ok(unknown(&list)),
        },
    };
    if crate::router::route(&ctx.svc.cfg, &rcpt).is_none() {
        return Ok(Reply::fail(EX_NOUSER, format!("no list handles {rcpt}")));
    }
    let v = ctx.inbound.accept("inject", &sender, &[rcpt], &raw).await;
    Ok(match v.first() {
        Some(Verdict::Stored) => Reply::ok(String::new()),
        Some(Verdict::Refused { reason, .. }) => Reply::fail(EX_DATAERR, reason.clone()),
        Some(Verdict::TryLater { reason }) => Reply::fail(EX_TEMPFAIL, reason.clone()),
        Some(v @ Verdict::TooBig { .. }) => Reply::fail(EX_DATAERR, v.smtp_reply()),
        None => Reply::fail(EX_SOFTWARE, "no verdict"),
    })
}

pub(super) async fn queue_list(ctx: &Ctx, cmd: Command) -> crate::store::Result<Reply> {
    let Command::QueueList = cmd else {
        return Ok(misrouted());
    };
    let mut out = String::new();
    let rows = ctx.svc.store.queue_rows()?;
    let now = now_ms();
    for (k, r) in &rows {
        let _ = writeln!(
            out,
            "{}\t{}\t{}\tattempts={}\tnext_in={}s\t{}",
            k.list,
            k.seq,
            k.addr,
            r.attempts,
            ((r.next_ms - now) / 1000).max(0),
            r.last_error.as_deref().unwrap_or("")
        );
    }
    let mut planned = 0;
    for (list, seq, n) in ctx.svc.store.planned()? {
        planned += n;
        let _ = writeln!(
            out,
            "{list}\t{seq}\t({n} more recipients, queued as delivery proceeds)"
        );
    }
    let mails = ctx.svc.store.outmails()?;
    for m in &mails {
        let _ = writeln!(
            out,
            "mail\t{}\t{}\tattempts={}\tnext_in={}s\t{}",
            m.kind,
            m.rcpts.join(","),
            m.attempts,
            ((m.next_ms - now) / 1000).max(0),
            m.last_error.as_deref().unwrap_or("")
        );
    }
    let _ = writeln!(
        out,
        "{} recipients and {} messages queued",
        rows.len() + planned,
        mails.len()
    );
    Ok(Reply::ok(out))
}

pub(super) async fn queue_retry(ctx: &Ctx, cmd: Command) -> crate::store::Result<Reply> {
    let Command::QueueRetry = cmd else {
        return Ok(misrouted());
    };
    let n = ctx.svc.store.retry_all_now()?;
    ctx.svc.store.flush_async().await?;
    ctx.inbound.wake.notify_one();
    Ok(Reply::ok(format!("{n} queued deliveries made due now\n")))
}

pub(super) async fn digest_send(ctx: &Ctx, cmd: Command) -> crate::store::Result<Reply> {
    let Command::DigestSend { list } = cmd else {
        return Ok(misrouted());
    };
    let only = match list.as_deref() {
        None => None,
        Some(name) => match list_key(ctx, name) {
            Some(k) => Some(k),
            None => return Ok(unknown(name)),
        },
    };
    let sent = blocking(&ctx.svc, move |svc| {
        Ok(crate::digest::send_now(svc, only.as_deref())?)
    })
    .await;
    let n = match sent {
        Ok(n) => n,
        Err(e) => return Ok(Reply::fail(EX_TEMPFAIL, format!("store error: {e:#}"))),
    };
    ctx.inbound.wake.notify_one();
    let when = if ctx.local {
        "; they are sent when the daemon runs"
    } else {
        ""
    };
    Ok(Reply::ok(format!("{n} digest(s) queued{when}\n")))
}
