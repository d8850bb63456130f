//! Being forgotten (GDPR art. 17): `forget` by mail (confirmed like unsubscribing) or
//! `vraagbaak members forget LIST ADDR`.
//!
//! Everything keyed by the address goes (member record, one-click id, pending requests,
//! bounce history, queued and failed deliveries, rate-limit counters, events, held and
//! quarantined mail); in every stored post, digest and queued mail the address and the
//! member's name become a neutral label, and the member's own posts get that label as
//! author, or are deleted with `forget_posts = "delete"`. The archive is then written anew
//! from the store (its pages, feed, search index, mbox files and message downloads), so
//! nothing derived keeps the old name. `vraagbaak store compact` (daemon stopped) rewrites
//! the database so that no deleted record survives in sled's log files.
//!
//! A request that came by mail is recorded (in the same transaction as its confirmation)
//! and carried out by the pipeline task, so a crash cannot lose it; it is idempotent.

use crate::config::{ForgetPosts, Language, ListConfig};
use crate::store::{Forget, ForgetReport};
use crate::Services;

/// The neutral author of a forgotten member's posts.
pub fn label(list: &ListConfig) -> (String, String) {
    let name = match list.language {
        Language::Nl => "Vergeten lid",
        Language::En => "Former member",
    };
    (name.to_string(), "forgotten-member@invalid".to_string())
}

/// Forgets `addr` on `list` and rewrites the list's archive.
pub fn run(svc: &Services, list: &ListConfig, addr: &str) -> anyhow::Result<ForgetReport> {
    let store = &svc.store;
    // The name as the member gave it, else as their posts showed it.
    let name = match store.member(list.key(), addr)?.and_then(|m| m.name) {
        Some(n) => Some(n),
        None => store
            .posts(list.key())?
            .into_iter()
            .find(|p| p.from_addr.eq_ignore_ascii_case(addr))
            .and_then(|p| p.from_name),
    };
    let (label_name, label_addr) = label(list);
    let report = store.forget(
        list.key(),
        &Forget {
            addr: addr.to_string(),
            name,
            label_addr,
            label_name,
            delete_posts: list.forget_posts == ForgetPosts::Delete,
        },
    )?;
    svc.archive.rewrite(list)?;
    tracing::info!(
        list = %list.local(),
        domain = addr.rsplit('@').next().unwrap_or(""),
        member = report.member,
        records = report.records,
        relabelled = report.relabelled,
        posts_deleted = report.posts_deleted,
        "member forgotten"
    );
    Ok(report)
}

/// Carries out the forget requests confirmed by mail or on the web.
pub fn run_requested(svc: &Services) -> anyhow::Result<usize> {
    let mut n = 0;
    for (list, addr) in svc.store.forget_requests()? {
        if let Some(l) = svc.cfg.list(&list) {
            run(svc, l, &addr)?;
            n += 1;
        }
        svc.store.forget_request_done(&list, &addr)?;
    }
    Ok(n)
}
