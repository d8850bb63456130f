//! `stats` and `status`: what an owner or an operator looks at.

use super::*;

pub(super) async fn show_stats(ctx: &Ctx, cmd: Command) -> crate::store::Result<Reply> {
    let Command::Stats { list } = cmd else {
        return Ok(misrouted());
    };
    let Some(l) = ctx.svc.cfg.list(&list) else {
        return Ok(unknown(&list));
    };
    Ok(Reply::ok(stats(l, &ctx.svc.store)?))
}

pub(super) async fn show_status(ctx: &Ctx, cmd: Command) -> crate::store::Result<Reply> {
    let Command::Status = cmd else {
        return Ok(misrouted());
    };
    let out = crate::status::report(&ctx.svc, ctx.inbound.relay.size(), !ctx.local)?;
    Ok(Reply {
        // As `systemctl status`: 3 when the program is not running.
        code: if ctx.local { 3 } else { EX_OK },
        out,
        err: String::new(),
    })
}
