//! `archive ...`: rebuild, owners' solved marks, the thread tree, mbox import.

use super::*;

pub(super) async fn rebuild(ctx: &Ctx, cmd: Command) -> crate::store::Result<Reply> {
    let Command::ArchiveRebuild { list, reindex } = cmd else {
        return Ok(misrouted());
    };
    let lists: Vec<crate::config::ListConfig> = match &list {
        Some(name) => match ctx.svc.cfg.list(name) {
            Some(l) => vec![l.clone()],
            None => return Ok(unknown(name)),
        },
        None => ctx.svc.cfg.lists.clone(),
    };
    let r = blocking(&ctx.svc, move |svc| {
        let mut out = String::new();
        for l in &lists {
            if svc.cfg.list_archive_dir(l).is_none() {
                let _ = writeln!(out, "{}: archive is off", l.address);
                continue;
            }
            let t = std::time::Instant::now();
            let s = svc.archive.rebuild(l, reindex)?;
            let _ = writeln!(
                out,
                "{}: {} messages, {} threads, {} pages rendered, {} files written in {:.2} s",
                l.address,
                s.messages,
                s.threads,
                s.pages,
                s.files_written,
                t.elapsed().as_secs_f64()
            );
        }
        Ok(out)
    })
    .await;
    Ok(archive_reply(r))
}

pub(super) async fn mark(ctx: &Ctx, cmd: Command) -> crate::store::Result<Reply> {
    let Command::ArchiveMark {
        list,
        thread,
        answer,
        solved,
    } = cmd
    else {
        return Ok(misrouted());
    };
    let Some(l) = ctx.svc.cfg.list(&list).cloned() else {
        return Ok(unknown(&list));
    };
    let r = blocking(&ctx.svc, move |svc| {
        svc.archive.owner_mark(&l, &thread, answer, solved)
    })
    .await;
    Ok(archive_reply(r))
}

pub(super) async fn threads(ctx: &Ctx, cmd: Command) -> crate::store::Result<Reply> {
    let Command::ArchiveThreads { list, json } = cmd else {
        return Ok(misrouted());
    };
    let Some(l) = ctx.svc.cfg.list(&list).cloned() else {
        return Ok(unknown(&list));
    };
    let r = blocking(&ctx.svc, move |svc| {
        let threads = svc.archive.threads(&l)?;
        Ok(crate::archive::print_threads(&threads, json))
    })
    .await;
    Ok(archive_reply(r))
}

pub(super) async fn import(ctx: &Ctx, cmd: Command) -> crate::store::Result<Reply> {
    let Command::ArchiveImport { list, path } = cmd else {
        return Ok(misrouted());
    };
    let Some(l) = ctx.svc.cfg.list(&list).cloned() else {
        return Ok(unknown(&list));
    };
    let local = ctx.local;
    let r = blocking(&ctx.svc, move |svc| {
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let bar = if local {
            indicatif::ProgressBar::new(len)
        } else {
            indicatif::ProgressBar::hidden()
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} importing [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        let t = std::time::Instant::now();
        let tick = |n: u64| bar.set_position(n);
        let report = crate::archive::import::import(&svc.cfg, &svc.store, &l, &path, &tick)?;
        bar.finish_and_clear();
        let mut out = report.summary();
        let _ = writeln!(out, "stored in {:.2} s", t.elapsed().as_secs_f64());
        if svc.cfg.list_archive_dir(&l).is_some() {
            let t = std::time::Instant::now();
            let s = svc.archive.update(&l)?;
            let _ = writeln!(
                out,
                "archive: {} messages, {} threads, {} files written in {:.2} s",
                s.messages,
                s.threads,
                s.files_written,
                t.elapsed().as_secs_f64()
            );
        }
        Ok(out)
    })
    .await;
    Ok(archive_reply(r))
}

fn archive_reply(r: anyhow::Result<String>) -> Reply {
    match r {
        Ok(out) => Reply::ok(out),
        Err(e) => Reply::fail(EX_SOFTWARE, format!("{e:#}")),
    }
}
