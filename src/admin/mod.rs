//! Administrative commands, run the same way from the command line and by the daemon.
//!
//! Only one process may open the store. So while `vraagbaak serve` runs, the command
//! line sends each command over a Unix socket in the data directory (mode 0600: who may
//! read the data may administer it) and the daemon executes it; when no daemon runs, the
//! command line opens the store itself and executes the same code.
//!
//! Protocol: one JSON [`Command`] per line; for `Inject`, `raw_len` bytes follow the line.
//! The answer is one JSON [`Reply`] line.

use crate::clock::now_ms;
use crate::commands::Plan;
use crate::config::valid_address;
use crate::inbound::{Inbound, Verdict};
use crate::store::{Change, Member, MemberSettings};
use crate::Services;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

mod archive;
mod mail;
mod members;
mod moderation;
mod report;

/// sysexits(3) codes, as MTAs expect from a delivery command.
pub const EX_OK: i32 = 0;
pub const EX_USAGE: i32 = 64;
pub const EX_DATAERR: i32 = 65;
pub const EX_NOUSER: i32 = 67;
pub const EX_NOINPUT: i32 = 66;
pub const EX_SOFTWARE: i32 = 70;
pub const EX_TEMPFAIL: i32 = 75;
pub const EX_NOPERM: i32 = 77;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Command {
    MembersAdd {
        list: String,
        members: Vec<NewMember>,
        /// Send each new member the welcome text.
        #[serde(default)]
        welcome: bool,
    },
    MembersRemove {
        list: String,
        addrs: Vec<String>,
    },
    MembersList {
        list: String,
        /// With delivery state and bounce records.
        #[serde(default)]
        bounces: bool,
    },
    /// Members as CSV: address,name,joined,digest,nomail,language.
    MembersExport {
        list: String,
    },
    MembersSet {
        list: String,
        addr: String,
        /// `digest`, `digest-plain` or `nomail`.
        setting: String,
        on: bool,
        /// For `nomail`: the date it ends by itself (`2026-12-01`).
        #[serde(default)]
        until: Option<String>,
    },
    /// Re-enables and zeroes the bounce records of members (`all`: of every member), in
    /// one transaction.
    MembersBouncesReset {
        list: String,
        #[serde(default)]
        addrs: Vec<String>,
        #[serde(default)]
        all: bool,
    },
    /// One message for a list address: `list` is a list's name or address (a post), or
    /// `rcpt` any address of a list (`-request`, `-join`, a VERP bounce address, ...);
    /// `sender` is the envelope sender (empty for a bounce).
    Inject {
        list: String,
        raw_len: usize,
        #[serde(default)]
        sender: String,
        #[serde(default)]
        rcpt: Option<String>,
    },
    QueueList,
    QueueRetry,
    /// Forget a member: every trace of the address goes, posts are relabelled or deleted;
    /// on `list` only, or (`all_lists`) also on every other list the address is a member
    /// of or has posts on.
    MembersForget {
        list: String,
        addr: String,
        #[serde(default)]
        all_lists: bool,
    },
    /// The owner's view of a list: members, settings, posts per month, bounces, held.
    Stats {
        list: String,
    },
    Status,
    /// Makes and queues every pending digest now (of one list, or all).
    DigestSend {
        #[serde(default)]
        list: Option<String>,
    },
    ModerateList,
    ModerateApprove {
        id: u64,
        /// Also add the sender as a member.
        #[serde(default)]
        member: bool,
    },
    ModerateReject {
        id: u64,
        /// Told to the poster.
        #[serde(default)]
        reason: Option<String>,
    },
    /// Render a list's archive (or every list's) from the store.
    ArchiveRebuild {
        #[serde(default)]
        list: Option<String>,
        /// Recompute the thread index first.
        #[serde(default)]
        reindex: bool,
    },
    /// An owner marks a question solved (with an accepted answer) or reopens it.
    ArchiveMark {
        list: String,
        /// The thread's number or archive URL (a message URL names the answer too).
        thread: String,
        #[serde(default)]
        answer: Option<u64>,
        solved: bool,
    },
    /// Every thread as a tree, or as JSON.
    ArchiveThreads {
        list: String,
        #[serde(default)]
        json: bool,
    },
    /// Load an mbox file (an absolute path the daemon can read) into a list's archive.
    ArchiveImport {
        list: String,
        path: std::path::PathBuf,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Reply {
    pub code: i32,
    pub out: String,
    pub err: String,
}

impl Reply {
    fn ok(out: String) -> Reply {
        Reply {
            code: EX_OK,
            out,
            err: String::new(),
        }
    }
    pub fn fail(code: i32, err: impl Into<String>) -> Reply {
        Reply {
            code,
            out: String::new(),
            err: err.into(),
        }
    }
}

/// What a command needs.
pub struct Ctx {
    pub svc: Services,
    pub inbound: Arc<Inbound>,
    /// Run by the command line itself (not in the daemon): progress bars may be shown.
    pub local: bool,
}

/// Executes one command. `raw` is the message for `Inject`.
pub async fn execute(ctx: &Ctx, cmd: Command, raw: Vec<u8>) -> Reply {
    match run(ctx, cmd, raw).await {
        Ok(r) => r,
        Err(e) => Reply::fail(EX_TEMPFAIL, format!("store error: {e}")),
    }
}

async fn run(ctx: &Ctx, cmd: Command, raw: Vec<u8>) -> crate::store::Result<Reply> {
    // One handler per command, grouped by what it acts on.
    match cmd {
        c @ Command::MembersAdd { .. } => members::add(ctx, c).await,
        c @ Command::MembersRemove { .. } => members::remove(ctx, c).await,
        c @ Command::MembersList { .. } => members::list(ctx, c).await,
        c @ Command::MembersExport { .. } => members::export(ctx, c).await,
        c @ Command::MembersSet { .. } => members::set(ctx, c).await,
        c @ Command::MembersBouncesReset { .. } => members::bounces_reset(ctx, c).await,
        c @ Command::Inject { .. } => mail::inject(ctx, c, raw).await,
        c @ Command::QueueList => mail::queue_list(ctx, c).await,
        c @ Command::QueueRetry => mail::queue_retry(ctx, c).await,
        c @ Command::MembersForget { .. } => members::forget(ctx, c).await,
        c @ Command::Stats { .. } => report::show_stats(ctx, c).await,
        c @ Command::Status => report::show_status(ctx, c).await,
        c @ Command::DigestSend { .. } => mail::digest_send(ctx, c).await,
        c @ Command::ModerateList => moderation::list(ctx, c).await,
        c @ Command::ModerateApprove { .. } => moderation::approve(ctx, c).await,
        c @ Command::ModerateReject { .. } => moderation::reject(ctx, c).await,
        c @ Command::ArchiveRebuild { .. } => archive::rebuild(ctx, c).await,
        c @ Command::ArchiveMark { .. } => archive::mark(ctx, c).await,
        c @ Command::ArchiveThreads { .. } => archive::threads(ctx, c).await,
        c @ Command::ArchiveImport { .. } => archive::import(ctx, c).await,
    }
}

/// The list key of a configured list name or address.
fn list_key(ctx: &Ctx, name: &str) -> Option<String> {
    ctx.svc.cfg.list(name).map(|l| l.key().to_string())
}

fn unknown(name: &str) -> Reply {
    Reply::fail(EX_NOUSER, format!("no list {name:?} in the configuration"))
}

/// A handler given a command of another group: a bug in the dispatch table, not a panic.
fn misrouted() -> Reply {
    Reply::fail(EX_SOFTWARE, "command handed to the wrong handler")
}

/// Runs long store or file work (archive, import, forget, digests) off the async threads;
/// a panic in it becomes an error.
async fn blocking<T: Send + 'static>(
    svc: &Services,
    f: impl FnOnce(&Services) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let svc = svc.clone();
    tokio::task::spawn_blocking(move || f(&svc))
        .await
        .map_err(|e| anyhow::anyhow!("task failed: {e}"))?
}

/// The members as CSV (RFC 4180, with a header line): `members export` and an owner's
/// `export` by mail.
pub fn members_csv(members: &[Member]) -> String {
    let mut out = String::from("address,name,joined,digest,nomail,language\n");
    for m in members {
        let joined = chrono::DateTime::from_timestamp_millis(m.joined_ms)
            .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{},{},{},{},{},{}",
            csv_field(&m.address),
            csv_field(m.name.as_deref().unwrap_or("")),
            joined,
            if m.digest { "on" } else { "off" },
            if m.nomail { "on" } else { "off" },
            m.language.map(|l| l.code()).unwrap_or("")
        );
    }
    out
}

/// A CSV field (RFC 4180): quoted when it holds a comma, quote or line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Who may use a socket and what it takes.
#[derive(Debug, Clone, Copy)]
pub enum Access {
    /// The control socket: every command, for the daemon's own user (mode 0600).
    Control,
    /// The inject socket: messages only; for a group (mode 0660) or every local user
    /// (mode 0666), as the SMTP listener on the loopback is.
    Inject { gid: Option<u32> },
}

/// Serves commands on a Unix socket until `shutdown`.
pub async fn serve_socket(
    path: &Path,
    live: crate::Live,
    access: Access,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)?;
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = match access {
            Access::Control => 0o600,
            Access::Inject { gid: Some(gid) } => {
                std::os::unix::fs::chown(path, None, Some(gid))?;
                0o660
            }
            Access::Inject { gid: None } => 0o666,
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    let inject_only = matches!(access, Access::Inject { .. });
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => break,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            // Out of descriptors (or the like) is a moment, not the end: the socket must
            // work again as soon as descriptors are free, or every admin command and
            // `inject` would fail until a restart.
            Err(e) => {
                tracing::warn!(error = %e, "cannot accept on the control socket; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        // Each connection on the configuration current when it connects (SIGHUP).
        let g = live.now();
        let ctx = Arc::new(Ctx {
            svc: g.svc.clone(),
            inbound: g.inbound.clone(),
            local: false,
        });
        tokio::spawn(async move {
            if let Err(e) = handle(stream, ctx, inject_only).await {
                tracing::debug!(error = %e, "control connection ended with an error");
            }
        });
    }
    let _ = std::fs::remove_file(path);
    Ok(())
}

const MAX_COMMAND_LINE: u64 = 64 * 1024 * 1024;

async fn handle(
    stream: tokio::net::UnixStream,
    ctx: Arc<Ctx>,
    inject_only: bool,
) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    // The inject socket is open to other users: its command line is small.
    let max_line = if inject_only {
        64 * 1024
    } else {
        MAX_COMMAND_LINE
    };
    (&mut r).take(max_line).read_line(&mut line).await?;
    let reply = match serde_json::from_str::<Command>(&line) {
        Ok(cmd) if inject_only && !matches!(cmd, Command::Inject { .. }) => Reply::fail(
            EX_NOPERM,
            "this socket takes messages only; administrative commands use the control socket",
        ),
        Ok(cmd) => {
            let mut raw = Vec::new();
            if let Command::Inject { raw_len, .. } = &cmd {
                let max = ctx.svc.cfg.smtp.max_message_size;
                if *raw_len > max {
                    let reply = Reply::fail(EX_DATAERR, format!("message larger than {max} bytes"));
                    return write_reply(&mut w, &reply).await;
                }
                raw.resize(*raw_len, 0);
                r.read_exact(&mut raw).await?;
            }
            // Commands scan and commit the store: on the blocking pool, never on the
            // threads that serve SMTP sessions.
            let rt = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || rt.block_on(execute(&ctx, cmd, raw)))
                .await
                .unwrap_or_else(|e| Reply::fail(EX_SOFTWARE, format!("command failed: {e}")))
        }
        Err(e) => Reply::fail(EX_USAGE, format!("bad command: {e}")),
    };
    write_reply(&mut w, &reply).await
}

async fn write_reply(
    w: &mut tokio::net::unix::OwnedWriteHalf,
    reply: &Reply,
) -> std::io::Result<()> {
    let mut s = serde_json::to_string(reply).map_err(std::io::Error::other)?;
    s.push('\n');
    w.write_all(s.as_bytes()).await?;
    w.shutdown().await
}

/// Sends a command to a running daemon. `Err` with `NotFound`/`ConnectionRefused` means
/// no daemon is listening.
pub async fn call(path: &Path, cmd: &Command, raw: &[u8]) -> std::io::Result<Reply> {
    let mut s = tokio::net::UnixStream::connect(path).await?;
    let mut line = serde_json::to_string(cmd).map_err(std::io::Error::other)?;
    line.push('\n');
    s.write_all(line.as_bytes()).await?;
    s.write_all(raw).await?;
    s.flush().await?;
    let mut out = String::new();
    BufReader::new(s).read_to_string(&mut out).await?;
    serde_json::from_str(out.trim()).map_err(std::io::Error::other)
}

/// Parses a member import file: one member a line, as `addr`, `Name <addr>` or `addr,Name`
/// (CSV). Blank lines and `#` comments are skipped. Returns the members and, for each bad
/// line, its number and what is wrong with it.
/// A member to add: address and optional display name.
pub type NewMember = (String, Option<String>);

pub fn parse_member_lines(text: &str) -> (Vec<NewMember>, Vec<(usize, String)>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    let mut first = true;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim().trim_start_matches('\u{feff}');
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let header_allowed = std::mem::take(&mut first);
        let parsed = if let (Some(lt), true) = (line.rfind('<'), line.ends_with('>')) {
            let addr = line[lt + 1..line.len() - 1].trim().to_string();
            let name = line[..lt].trim().trim_matches('"').trim().to_string();
            Some((addr, (!name.is_empty()).then_some(name)))
        } else if let Some(delim) = line.chars().find(|c| matches!(c, ',' | ';' | '\t')) {
            // A spreadsheet's CSV line (RFC 4180 quoting, as `members export` writes it):
            // the address first, then the name; further columns are ignored.
            let mut r = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .delimiter(delim as u8)
                .from_reader(line.as_bytes());
            let rec = r.records().next().and_then(|r| r.ok());
            let field = |i: usize| {
                rec.as_ref()
                    .and_then(|r| r.get(i))
                    .map(|f| f.trim().trim_matches('"').trim().to_string())
                    .unwrap_or_default()
            };
            let (addr, name) = (field(0), field(1));
            if header_allowed && !addr.contains('@') {
                // A header line (`address,name`, `e-mail;naam`).
                continue;
            }
            Some((addr, (!name.is_empty()).then_some(name)))
        } else {
            Some((line.to_string(), None))
        };
        match parsed {
            Some((addr, name)) if valid_address(&addr) => good.push((addr, name)),
            Some((addr, _)) => bad.push((n, format!("not an e-mail address: {addr:?}"))),
            None => bad.push((n, "unreadable line".into())),
        }
    }
    (good, bad)
}

/// `stats LIST` (and an owner's `stats` by mail).
pub fn stats(
    list: &crate::config::ListConfig,
    store: &crate::store::Store,
) -> crate::store::Result<String> {
    let now = now_ms();
    let members = store.members(list.key())?;
    let count = |f: &dyn Fn(&crate::store::Member) -> bool| members.iter().filter(|m| f(m)).count();
    let digest = count(&|m| m.digest);
    let plain = count(&|m| m.digest && m.digest_plain);
    let vacation = count(&|m| m.on_vacation(now));
    let until = count(&|m| m.on_vacation(now) && m.nomail_until.is_some());
    let disabled = count(&|m| m.bounce.as_ref().is_some_and(|b| b.disabled_ms.is_some()));
    let scored = count(&|m| {
        m.bounce.as_ref().is_some_and(|b| {
            b.disabled_ms.is_none() && crate::bounce::current_score(list, b, now) > 0.0
        })
    });
    let bounces: u64 = members
        .iter()
        .filter_map(|m| m.bounce.as_ref())
        .map(|b| u64::from(b.received))
        .sum();
    let mut months: std::collections::BTreeMap<String, usize> = Default::default();
    let posts = store.posts(list.key())?;
    for p in &posts {
        let m = crate::archive::month_of(p.received_ms, list.timezone);
        *months.entry(m).or_default() += 1;
    }
    let held = store
        .held_heads()?
        .iter()
        .filter(|h| h.list.eq_ignore_ascii_case(list.key()))
        .count();
    // One issue may be stored as several digests (without the threads members muted).
    let digests: Vec<_> = store
        .digests(list.key())?
        .into_iter()
        .filter(|d| d.variant_of.is_none())
        .collect();
    let mut out = String::new();
    let _ = writeln!(out, "{} ({})", list.name, list.address);
    let _ = writeln!(out, "members:           {}", members.len());
    let _ = writeln!(out, "  digest:          {digest} ({plain} plain text)");
    let _ = writeln!(
        out,
        "  nomail:          {vacation} ({until} with an end date)"
    );
    let _ = writeln!(out, "  bounce-disabled: {disabled}");
    let _ = writeln!(
        out,
        "  bouncing:        {scored} with a score, {bounces} bounces received in all"
    );
    let _ = writeln!(out, "held posts:        {held}");
    let _ = writeln!(
        out,
        "digests sent:      {}{}",
        digests.len(),
        digests
            .iter()
            .max_by_key(|d| (d.volume, d.issue))
            .map(|d| format!(" (last: vol {}, issue {})", d.volume, d.issue))
            .unwrap_or_default()
    );
    let _ = writeln!(out, "posts:             {}", posts.len());
    for (m, n) in months {
        let _ = writeln!(out, "  {m}  {n:>6}");
    }
    // Questions and answers, from the archive's thread index (kept when the list has an
    // archive): no names, no per-person figures.
    let threads: Vec<crate::store::ArchThread> = store
        .arch_threads_rev(list.key())
        .collect::<crate::store::Result<_>>()?;
    let tz = list.timezone;
    let figures = crate::archive::qa::figures(&threads, |ms| crate::archive::month_of(ms, tz));
    if !figures.is_empty() {
        let _ = writeln!(
            out,
            "questions:         month    asked answered  solved  median first answer  tags"
        );
        for f in figures {
            let pct = |n: usize| (n * 100).checked_div(f.questions).unwrap_or(0);
            let median = f
                .median_first_answer_min
                .map_or_else(|| "-".to_string(), |m| format!("{}h{:02}", m / 60, m % 60));
            let tags: Vec<String> = f.tags.iter().map(|(t, n)| format!("#{t} ({n})")).collect();
            let _ = writeln!(
                out,
                "  {}  {:>6} {:>4} ({:>3}%) {:>3} ({:>3}%)  {median:>8}  {}",
                f.month,
                f.questions,
                f.answered,
                pct(f.answered),
                f.solved,
                pct(f.solved),
                tags.join(", ")
            );
        }
    }
    Ok(out)
}

/// `members list LIST --bounces`: every member's delivery state and bounce record.
pub fn bounce_table(list: &crate::config::ListConfig, members: &[crate::store::Member]) -> String {
    let now = now_ms();
    let day = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|d| d.format("%Y-%m-%d").to_string())
            .unwrap_or_else(|| "-".into())
    };
    let mut out = format!(
        "{:<40} {:<22} {:>5} {:>8} {:<24} {:>7}\n",
        "address", "delivery", "score", "bounces", "last bounce", "notices"
    );
    let (mut disabled, mut bouncing) = (0, 0);
    for m in members {
        let b = m.bounce.as_ref();
        let delivery = match b.and_then(|b| b.disabled_ms) {
            Some(t) => {
                disabled += 1;
                format!("disabled {}", day(t))
            }
            None if m.on_vacation(now) => match m.nomail_until {
                Some(u) => format!("nomail until {}", day(u)),
                None => "nomail".to_string(),
            },
            None => "enabled".to_string(),
        };
        let score = b.map_or(0.0, |b| crate::bounce::current_score(list, b, now));
        if score > 0.0 && b.is_some_and(|b| b.disabled_ms.is_none()) {
            bouncing += 1;
        }
        let last = b.map_or("-".to_string(), |b| {
            format!(
                "{} {} {}",
                day(b.last_received_ms),
                b.last_kind,
                b.last_status.as_deref().unwrap_or("")
            )
        });
        let _ = writeln!(
            out,
            "{:<40} {:<22} {:>5.1} {:>8} {:<24} {:>7}",
            m.address,
            delivery,
            score,
            b.map_or(0, |b| b.received),
            last.trim_end(),
            b.map_or(0, |b| b.notices)
        );
    }
    let _ = writeln!(
        out,
        "{} members, {} disabled for bounces, {} with a bounce score (threshold {:.1})",
        members.len(),
        disabled,
        bouncing,
        list.bounce_score_threshold
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_lines() {
        let text = "# leden\njan@ocmw.be\nAn Peeters <an.peeters@ocmw-gent.be>\n\
piet@ocmw.be,Piet Janssens\n\"Els\" <els@x.be>\nnot an address\n\n@y.be,Naam\n";
        let (good, bad) = parse_member_lines(text);
        assert_eq!(
            good,
            vec![
                ("jan@ocmw.be".to_string(), None),
                (
                    "an.peeters@ocmw-gent.be".to_string(),
                    Some("An Peeters".to_string())
                ),
                (
                    "piet@ocmw.be".to_string(),
                    Some("Piet Janssens".to_string())
                ),
                ("els@x.be".to_string(), Some("Els".to_string())),
            ]
        );
        assert_eq!(bad.len(), 2);
        assert_eq!(bad[0].0, 6);
        assert_eq!(bad[1].0, 8);
        // What `members export` writes reads back: header skipped, quoted names whole.
        let export = "address,name,joined,digest,nomail,language\n\
kris@ocmw-brugge.be,\"Wouters, Kris\",2026-01-01T00:00:00Z,off,off,\n\
an@ocmw-gent.be;An Claes\n";
        let (good, bad) = parse_member_lines(export);
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(
            good,
            vec![
                (
                    "kris@ocmw-brugge.be".to_string(),
                    Some("Wouters, Kris".to_string())
                ),
                ("an@ocmw-gent.be".to_string(), Some("An Claes".to_string())),
            ]
        );
    }
}
