//! `vraagbaak status`: what the running daemon is doing, for the person on call.
//!
//! The process-wide facts (when it started, what it listens on, its reloads, its last
//! warnings and errors) live in one [`Board`] per process: they describe the process, not
//! a configuration generation, and the log's ring buffer has to exist before the daemon
//! does. Everything else (queue, spool, held posts) is read from the store when asked.

use crate::bounce::mask_addresses;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// How many warnings and errors `status` shows.
const RECENT: usize = 10;

/// One logged warning or error.
#[derive(Debug, Clone)]
pub struct Logged {
    pub at_ms: i64,
    pub level: Level,
    pub target: String,
    /// The message and its fields, addresses masked.
    pub text: String,
}

/// What the process knows about itself.
#[derive(Default)]
pub struct Board {
    inner: Mutex<Facts>,
}

#[derive(Default)]
struct Facts {
    started_ms: i64,
    config: Option<String>,
    listeners: Vec<(String, String)>,
    reloads: Vec<(i64, Result<(), String>)>,
    recent: VecDeque<Logged>,
}

/// The process's board.
pub fn board() -> &'static Board {
    static BOARD: OnceLock<Board> = OnceLock::new();
    BOARD.get_or_init(Board::default)
}

impl Board {
    fn with<T>(&self, f: impl FnOnce(&mut Facts) -> T) -> T {
        match self.inner.lock() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// The daemon started, on `config` (`None`: the embedded default).
    pub fn started(&self, config: Option<&std::path::Path>) {
        let now = crate::clock::now_ms();
        self.with(|f| {
            f.started_ms = now;
            f.config = config.map(|p| p.display().to_string());
            f.listeners.clear();
            f.reloads.clear();
        });
    }

    pub fn listening(&self, protocol: &str, addr: &str) {
        self.with(|f| f.listeners.push((protocol.into(), addr.into())));
    }

    /// A SIGHUP's outcome.
    pub fn reloaded(&self, outcome: Result<(), String>) {
        let now = crate::clock::now_ms();
        self.with(|f| {
            f.reloads.push((now, outcome));
            let n = f.reloads.len();
            if n > 5 {
                f.reloads.drain(..n - 5);
            }
        });
    }

    fn logged(&self, l: Logged) {
        self.with(|f| {
            if f.recent.len() == RECENT {
                f.recent.pop_front();
            }
            f.recent.push_back(l);
        });
    }
}

/// A tracing layer that keeps the last warnings and errors on the [`board`].
pub struct RecentErrors;

impl<S: Subscriber> Layer<S> for RecentErrors {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        if level > Level::WARN {
            return;
        }
        let mut v = Fields::default();
        event.record(&mut v);
        board().logged(Logged {
            at_ms: crate::clock::now_ms(),
            level,
            target: event.metadata().target().to_string(),
            text: mask_addresses(&v.0),
        });
    }
}

/// `message key=value ...`, at most 300 characters.
#[derive(Default)]
struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if self.0.len() > 300 {
            return;
        }
        if field.name() == "message" {
            let rest = std::mem::take(&mut self.0);
            self.0 = format!("{value:?}");
            if !rest.is_empty() {
                self.0.push(' ');
                self.0.push_str(&rest);
            }
        } else {
            if !self.0.is_empty() {
                self.0.push(' ');
            }
            let _ = write!(self.0, "{}={value:?}", field.name());
        }
    }
}

/// A moment in UTC for the report.
fn at(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "-".into())
}

fn ago(ms: i64, now: i64) -> String {
    let s = ((now - ms) / 1000).max(0);
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h {:02} min", s / 3600, s / 60 % 60),
        _ => format!("{} days", s / 86_400),
    }
}

fn count(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// What the queue holds, for the report.
#[derive(Debug, Default)]
pub struct QueueFigures {
    pub recipients: usize,
    pub planned: usize,
    pub mails: usize,
    pub oldest_ms: Option<i64>,
    pub retrying: usize,
    pub last_error: Option<(i64, String)>,
}

/// Reads the queue's figures from the store.
pub fn queue_figures(store: &crate::store::Store) -> crate::store::Result<QueueFigures> {
    let mut q = QueueFigures::default();
    let rows = store.queue_rows()?;
    q.recipients = rows.len();
    for (_, r) in &rows {
        q.oldest_ms = Some(q.oldest_ms.map_or(r.first_ms, |o: i64| o.min(r.first_ms)));
        if r.attempts > 0 {
            q.retrying += 1;
            if let Some(e) = &r.last_error {
                // Newest attempt first: its next try is the furthest away.
                if q.last_error.as_ref().is_none_or(|(n, _)| r.next_ms > *n) {
                    q.last_error = Some((r.next_ms, e.clone()));
                }
            }
        }
    }
    q.planned = store.planned()?.iter().map(|p| p.2).sum();
    let mails = store.outmails()?;
    q.mails = mails.len();
    for m in &mails {
        q.oldest_ms = Some(q.oldest_ms.map_or(m.first_ms, |o| o.min(m.first_ms)));
        if m.attempts > 0 {
            q.retrying += 1;
        }
    }
    Ok(q)
}

/// The report. `running`: asked of the daemon (else the store was opened directly, and
/// only the store's figures mean anything).
pub fn report(
    svc: &crate::Services,
    relay_size: Option<u64>,
    running: bool,
) -> crate::store::Result<String> {
    let now = crate::clock::now_ms();
    let cfg = &svc.cfg;
    let store = &svc.store;
    let mut out = String::new();
    if running {
        board().with(|f| {
            let _ = writeln!(
                out,
                "vraagbaak {} running, pid {}, up {} (since {})",
                env!("CARGO_PKG_VERSION"),
                std::process::id(),
                ago(f.started_ms, now),
                at(f.started_ms)
            );
            let _ = writeln!(
                out,
                "config:     {}",
                f.config.as_deref().unwrap_or("(embedded default)")
            );
            for (when, r) in &f.reloads {
                let _ = match r {
                    Ok(()) => writeln!(out, "  reloaded  {}", at(*when)),
                    Err(e) => writeln!(
                        out,
                        "  reload FAILED {} ({}); the previous one runs",
                        at(*when),
                        mask_addresses(e)
                    ),
                };
            }
            for (proto, addr) in &f.listeners {
                let _ = writeln!(out, "listening:  {proto:<5} {addr}");
            }
        });
    } else {
        let _ = writeln!(
            out,
            "vraagbaak is NOT running (no daemon answers on {}); figures from the store:",
            cfg.control_socket().display()
        );
    }
    let _ = writeln!(out, "data_dir:   {}", cfg.data_dir.display());
    let _ = writeln!(
        out,
        "relay:      {}{}",
        cfg.delivery.relay,
        match (running, relay_size) {
            _ if cfg.delivery.relay.starts_with("outbox:") =>
                " (each copy written as a file)".into(),
            (false, _) => String::new(),
            (true, Some(s)) => format!(" (accepts up to {s} bytes)"),
            (true, None) => " (no SIZE announced, or not reached yet)".into(),
        }
    );
    let spooled = store.spooled_ids()?.len();
    let quarantined = store.quarantined()?.len();
    let _ = writeln!(
        out,
        "spool:      {spooled} waiting to be decided; quarantine: {quarantined}{}",
        if quarantined > 0 {
            " (see the log for each reason)"
        } else {
            ""
        }
    );
    let q = queue_figures(store)?;
    let _ = writeln!(
        out,
        "queue:      {} queued, {} more planned, {}; {} being retried",
        count(q.recipients, "recipient"),
        q.planned,
        count(q.mails, "single mail"),
        q.retrying
    );
    if let Some(o) = q.oldest_ms {
        let _ = writeln!(out, "  oldest:   queued {} ago ({})", ago(o, now), at(o));
    }
    if let Some((_, e)) = &q.last_error {
        let _ = writeln!(out, "  last error: {}", mask_addresses(e));
    }
    let held = store.held_heads()?;
    for l in &cfg.lists {
        let members = store.member_count(l.key())?;
        let h = held
            .iter()
            .filter(|h| h.list.eq_ignore_ascii_case(l.key()))
            .count();
        let _ = writeln!(
            out,
            "list:       {} ({members} members, {h} held post{})",
            l.address,
            if h == 1 { "" } else { "s" }
        );
    }
    if running {
        board().with(|f| {
            if f.recent.is_empty() {
                let _ = writeln!(out, "recent warnings and errors: none");
            } else {
                let _ = writeln!(out, "recent warnings and errors (newest last):");
                for l in &f.recent {
                    let _ = writeln!(
                        out,
                        "  {} {:<5} {}: {}",
                        at(l.at_ms),
                        l.level,
                        l.target,
                        l.text
                    );
                }
            }
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(ago(0, 5_000), "5 s");
        assert_eq!(ago(0, 600_000), "10 min");
        assert_eq!(ago(0, 3 * 3_600_000 + 120_000), "3 h 02 min");
        assert_eq!(ago(0, 3 * 86_400_000), "3 days");
    }
}
