//! `moderate ...`: held posts listed, approved and rejected.

use super::*;

pub(super) async fn list(ctx: &Ctx, cmd: Command) -> crate::store::Result<Reply> {
    let Command::ModerateList = cmd else {
        return Ok(misrouted());
    };
    let mut out = String::new();
    for h in ctx.svc.store.held_heads()? {
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}",
            h.id, h.list, h.from_addr, h.subject, h.reason
        );
    }
    Ok(Reply::ok(out))
}

pub(super) async fn approve(ctx: &Ctx, cmd: Command) -> crate::store::Result<Reply> {
    let Command::ModerateApprove { id, member } = cmd else {
        return Ok(misrouted());
    };
    moderate(ctx, id, true, member, None).await
}

pub(super) async fn reject(ctx: &Ctx, cmd: Command) -> crate::store::Result<Reply> {
    let Command::ModerateReject { id, reason } = cmd else {
        return Ok(misrouted());
    };
    moderate(ctx, id, false, false, reason.as_deref()).await
}

/// Approves or rejects held post `id`, as a reply with its token would.
async fn moderate(
    ctx: &Ctx,
    id: u64,
    approve: bool,
    member: bool,
    reason: Option<&str>,
) -> crate::store::Result<Reply> {
    let Some(h) = ctx.svc.store.held_one(id)? else {
        return Ok(Reply::fail(EX_DATAERR, format!("no held post {id}")));
    };
    let Some(l) = ctx.svc.cfg.list(&h.list) else {
        return Ok(Reply::fail(
            EX_DATAERR,
            format!(
                "held post {id} belongs to {}, which is no longer configured",
                h.list
            ),
        ));
    };
    let mut plan = Plan::new(ctx.svc.ctx(), l);
    plan.moderate(&h, approve, member, reason);
    ctx.svc.store.commit(plan.changes, plan.mail)?;
    ctx.svc.store.flush_async().await?;
    ctx.inbound.wake.notify_one();
    tracing::info!(held_id = id, approve, "held post moderated");
    Ok(Reply::ok(format!(
        "{}: {}\n",
        if approve { "approved" } else { "rejected" },
        h.subject
    )))
}
