//! The maintenance task: everything the daemon does by the clock rather than because mail
//! came in. Digests that are due, bounce notices and removals, forget requests confirmed by
//! mail or on the web, and, hourly, the owners' daily summaries and the purge of expired
//! requests and old rate-limit counts. The pipeline task only drains the spool.
//!
//! Each step commits its own transactions; member records are changed by intents applied
//! inside the transaction (`Change::EditMember`), so a bounce scored by the pipeline and a
//! notice sent here never overwrite each other.

use crate::clock::now_ms;
use crate::{bounce, commands, Services};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

/// How often the clock-driven work is looked at.
const TICK: Duration = Duration::from_secs(5);
/// How often the owners' summaries and the purge run.
const HOURLY: Duration = Duration::from_secs(3600);

/// Runs until `shutdown`, waking delivery when a step queued mail.
pub async fn run(svc: Services, wake_out: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
    let mut last_hourly: Option<Instant> = None;
    loop {
        let hourly = last_hourly.is_none_or(|t| t.elapsed() >= HOURLY);
        if hourly {
            last_hourly = Some(Instant::now());
        }
        let s = svc.clone();
        match tokio::task::spawn_blocking(move || pass(&s, hourly)).await {
            Ok(n) if n > 0 => wake_out.notify_one(),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "maintenance panicked; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// One round of maintenance; returns how many things queued mail or changed state. Each
/// step's failure is logged and tried again next round; the others still run.
pub fn pass(svc: &Services, hourly: bool) -> usize {
    let mut n = 0;
    match bounce_maintenance(svc) {
        Ok(k) => n += k,
        Err(e) => tracing::error!(error = %e, "bounce notices could not be checked"),
    }
    match crate::digest::run_all(svc, now_ms(), false, None) {
        Ok(k) => n += k,
        Err(e) => tracing::error!(error = %e, "digests could not be made"),
    }
    match crate::forget::run_requested(svc) {
        Ok(k) => n += k,
        Err(e) => tracing::error!(error = %format!("{e:#}"), "a forget request failed; retrying"),
    }
    if hourly {
        match housekeeping(svc) {
            Ok(k) => n += k,
            Err(e) => tracing::error!(error = %e, "housekeeping failed"),
        }
    }
    n
}

/// Sends the bounce notices that are due and removes members whose last notice went
/// unanswered.
pub fn bounce_maintenance(svc: &Services) -> crate::store::Result<usize> {
    let now = now_ms();
    let mut n = 0;
    for l in svc.cfg.lists.iter().filter(|l| l.process_bounces) {
        let (changes, mail) = bounce::maintain(svc.ctx(), l, now)?;
        if changes.is_empty() && mail.is_empty() {
            continue;
        }
        n += changes.len();
        svc.store.commit(changes, mail)?;
        svc.store.flush()?;
    }
    Ok(n)
}

/// The owners' daily summaries, and forgetting expired requests and old rate-limit counts.
fn housekeeping(svc: &Services) -> crate::store::Result<usize> {
    let mut sent = 0;
    for l in &svc.cfg.lists {
        if let Some((changes, mail)) = commands::owner_summary(svc.ctx(), l)? {
            svc.store.commit(changes, mail)?;
            sent += 1;
        }
    }
    // Keep used and expired tokens a day, so that a late click says "already used" or
    // "expired" rather than "not valid".
    let keep = (svc.cfg.commands.rate_window.as_millis() as i64).max(86_400_000);
    svc.store.purge(now_ms() - keep)?;
    svc.store.flush()?;
    Ok(sent)
}
