//! The maintenance task: everything the daemon does by the clock rather than because mail
//! came in. Digests that are due, bounce notices and removals, forget requests confirmed by
//! mail or on the web, and, hourly, the owners' daily summaries and the purge of expired
//! requests and old rate-limit counts. The pipeline task only drains the spool.
//!
//! Each step commits its own transactions; member records are changed by intents applied
//! inside the transaction (`Change::EditMember`), so a bounce scored by the pipeline and a
//! notice sent here never overwrite each other.

use crate::clock::now_ms;
use crate::store::{ArchThread, Change};
use crate::{bounce, commands, Services};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

/// How often the clock-driven work is looked at.
const TICK: Duration = Duration::from_secs(5);
/// How often the owners' summaries and the purge run.
const HOURLY: Duration = Duration::from_secs(3600);

/// Runs until `shutdown`, waking delivery when a step queued mail.
pub async fn run(live: crate::Live, wake_out: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
    let mut last_hourly: Option<Instant> = None;
    loop {
        let hourly = last_hourly.is_none_or(|t| t.elapsed() >= HOURLY);
        if hourly {
            last_hourly = Some(Instant::now());
        }
        let s = live.svc();
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
    match similar_questions(svc) {
        Ok(k) => n += k,
        Err(e) => tracing::error!(error = %e, "similar questions could not be looked up"),
    }
    match crate::forget::run_requested(svc) {
        Ok(k) => n += k,
        Err(e) => tracing::error!(error = %format!("{e:#}"), "a forget request failed; retrying"),
    }
    for l in &svc.cfg.lists {
        let summary = held_summary(svc, l).and_then(|s| match s {
            Some((changes, mail)) => svc.store.commit(changes, mail).map(|_| 1),
            None => Ok(0),
        });
        match summary {
            Ok(k) => n += k,
            Err(e) => tracing::error!(error = %e, "the held posts' summary could not be made"),
        }
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

/// Questions a list mails their asker about, at most, per rate window (a day by default).
const SIMILAR_PER_ASKER: u32 = 3;
/// Earlier questions named in one such mail.
const SIMILAR_MAX: usize = 5;

/// For each new question the archive has indexed since the last pass (lists with
/// `suggest_similar`), its asker alone gets one short mail naming up to five earlier
/// questions like it, when any is similar enough. Reads the thread index, so it follows the
/// archive writer; the cursor moves with the mail, in one transaction.
fn similar_questions(svc: &Services) -> crate::store::Result<usize> {
    let store = &svc.store;
    let mut sent = 0;
    for l in svc.cfg.lists.iter().filter(|l| l.suggest_similar) {
        let key = l.key();
        let Some(base) = archive_base(svc, l) else {
            continue;
        };
        let upto = store.archived_upto(key)?;
        let Some(from) = store.cursor("similar", key)? else {
            // Starts now: questions from before are not answered with suggestions.
            store.commit(
                vec![Change::Cursor {
                    name: "similar".into(),
                    list: key.into(),
                    seq: upto,
                }],
                Vec::new(),
            )?;
            continue;
        };
        if upto <= from {
            continue;
        }
        let threads: Vec<ArchThread> = store
            .arch_threads_rev(key)
            .collect::<crate::store::Result<_>>()?;
        for seq in from + 1..=upto {
            let mut changes = vec![Change::Cursor {
                name: "similar".into(),
                list: key.into(),
                seq,
            }];
            let mut mail = Vec::new();
            let question = threads.iter().find(|t| t.id == seq && !t.root_is_reply);
            let asker = store.post(key, seq)?;
            if let (Some(q), Some(p)) = (question, asker) {
                let found = crate::archive::qa::similar(q, &threads, SIMILAR_MAX);
                let since = now_ms() - svc.cfg.commands.rate_window.as_millis() as i64;
                let allowed = store.rate_hits(&rate_bucket(key), &p.from_addr, since)?
                    < SIMILAR_PER_ASKER as usize;
                if !found.is_empty() && allowed {
                    if let Some(m) = similar_mail(svc, l, &p, q, &found, &base) {
                        changes.push(Change::RateHit {
                            bucket: rate_bucket(key),
                            addr: p.from_addr.clone(),
                            at_ms: now_ms(),
                            since_ms: since,
                        });
                        mail.push(m);
                        sent += 1;
                        tracing::info!(list = %l.local(), seq, suggestions = found.len(), "similar earlier questions mailed to the asker");
                    }
                }
            }
            store.commit(changes, mail)?;
        }
        store.flush()?;
    }
    Ok(sent)
}

fn rate_bucket(list: &str) -> String {
    format!("similar:{list}")
}

/// Where the list's thread pages are, as a member reaches them: its `archive_url`, else
/// the members' archive on the web endpoint for a members-only archive.
fn archive_base(svc: &Services, l: &crate::config::ListConfig) -> Option<String> {
    if let Some(u) = &l.archive_url {
        return Some(u.trim_end_matches('/').to_string());
    }
    match (l.archive, svc.cfg.base_url()) {
        (crate::config::ArchiveMode::Private, Some(b)) => {
            Some(format!("{b}/members/{}", l.local()))
        }
        _ => None,
    }
}

fn similar_mail(
    svc: &Services,
    l: &crate::config::ListConfig,
    p: &crate::store::PostMeta,
    q: &ArchThread,
    found: &[&ArchThread],
    base: &str,
) -> Option<crate::store::OutMail> {
    let lang = svc
        .store
        .member(l.key(), &p.from_addr)
        .ok()
        .flatten()
        .and_then(|m| m.language)
        .unwrap_or(l.language);
    let items: Vec<minijinja::Value> = found
        .iter()
        .map(|t| {
            minijinja::context! {
                subject => t.subject.clone(),
                url => format!("{base}/t/{}.html", t.id),
                solved => t.solved.is_some(),
                answers => t.seqs.len().saturating_sub(1),
            }
        })
        .collect();
    let vars = minijinja::context! { question => q.subject.clone(), similar => items };
    let text = match svc.texts.render(&svc.cfg, l, lang, "similar", vars) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot render the similar-questions mail");
            return None;
        }
    };
    let raw = crate::texts::build(crate::texts::MailSpec {
        list: l,
        to: vec![p.from_addr.clone()],
        lang,
        text,
        auto: "auto-generated",
        reply_to: None,
        in_reply_to: Some(p.message_id.clone()),
        attach: None,
        file: None,
        hostname: &svc.cfg.smtp.hostname,
    });
    Some(commands::out_mail(
        l,
        "similar",
        vec![p.from_addr.clone()],
        raw,
    ))
}

/// One mail to the owners naming the held posts that had no notice of their own (more were
/// held in an hour than [`crate::pipeline::HELD_NOTICES_PER_HOUR`]), at most once an hour,
/// with the lines that approve or reject each; the posts themselves are not attached.
fn held_summary(
    svc: &Services,
    l: &crate::config::ListConfig,
) -> crate::store::Result<Option<(Vec<crate::store::Change>, Vec<crate::store::OutMail>)>> {
    if l.owners.is_empty() {
        return Ok(None);
    }
    // Every round: the cheap check first, then the held posts' heads only.
    let now = now_ms();
    let bucket = format!("held-summary:{}", l.key());
    if svc.store.rate_hits(&bucket, "*", now - 3_600_000)? > 0 {
        return Ok(None);
    }
    let waiting: Vec<crate::store::Held> = svc
        .store
        .held_heads()?
        .into_iter()
        .filter(|h| h.list.eq_ignore_ascii_case(l.key()) && !h.notified && !h.poster_confirms)
        .collect();
    if waiting.is_empty() {
        return Ok(None);
    }
    let posts: Vec<minijinja::Value> = waiting
        .iter()
        .take(100)
        .map(|h| {
            minijinja::context! {
                from => h.from_addr.clone(), subject => h.subject.clone(),
                reason => h.reason.clone(), held_id => h.id,
                token => commands::moderation_token(&svc.secret, l.key(), h.id, &h.from_addr),
            }
        })
        .collect();
    let vars = minijinja::context! {
        posts, count => waiting.len(), more => waiting.len().saturating_sub(100),
    };
    let text = match svc
        .texts
        .render(&svc.cfg, l, l.language, "held-summary", vars)
    {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot render the held posts' summary");
            return Ok(None);
        }
    };
    let mail = commands::owner_mail(
        &svc.cfg,
        l,
        "held-summary",
        text,
        Some(l.sub_address("request")),
        None,
    );
    let changes = vec![
        crate::store::Change::HeldNotified {
            ids: waiting.iter().take(100).map(|h| h.id).collect(),
        },
        crate::store::Change::RateHit {
            bucket,
            addr: "*".into(),
            at_ms: now,
            since_ms: now - 3_600_000,
        },
    ];
    Ok(Some((changes, vec![mail])))
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
