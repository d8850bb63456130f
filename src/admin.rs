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
    let list_key = |name: &str| ctx.svc.cfg.list(name).map(|l| l.key().to_string());
    let unknown =
        |name: &str| Reply::fail(EX_NOUSER, format!("no list {name:?} in the configuration"));
    Ok(match cmd {
        Command::MembersAdd {
            list,
            members,
            welcome,
        } => {
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
            Reply {
                code: if err.is_empty() { EX_OK } else { EX_DATAERR },
                out: if welcome {
                    format!("{added} added ({welcomed} welcomed), {already} already members\n")
                } else {
                    format!("{added} added, {already} already members\n")
                },
                err,
            }
        }
        Command::MembersRemove { list, addrs } => {
            let Some(key) = list_key(&list) else {
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
            Reply::ok(out)
        }
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
            let Some(key) = list_key(&list) else {
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
        Command::MembersExport { list } => {
            let Some(key) = list_key(&list) else {
                return Ok(unknown(&list));
            };
            let out = members_csv(&ctx.svc.store.members(&key)?);
            Reply::ok(out)
        }
        Command::MembersSet {
            list,
            addr,
            setting,
            on,
            until,
        } => {
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
            Reply::ok(format!("{setting} {shown} for {addr}\n"))
        }
        Command::MembersBouncesReset { list, addrs, all } => {
            let Some(key) = list_key(&list) else {
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
            Reply {
                code: if err.is_empty() { EX_OK } else { EX_NOUSER },
                out: format!(
                    "bounce records reset for {} members ({had} had one); delivery is on\n",
                    targets.len()
                ),
                err,
            }
        }
        Command::Inject {
            list, sender, rcpt, ..
        } => {
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
            match v.first() {
                Some(Verdict::Stored) => Reply::ok(String::new()),
                Some(Verdict::Refused { reason, .. }) => Reply::fail(EX_DATAERR, reason.clone()),
                Some(Verdict::TryLater { reason }) => Reply::fail(EX_TEMPFAIL, reason.clone()),
                Some(v @ Verdict::TooBig { .. }) => Reply::fail(EX_DATAERR, v.smtp_reply()),
                None => Reply::fail(EX_SOFTWARE, "no verdict"),
            }
        }
        Command::QueueList => {
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
            Reply::ok(out)
        }
        Command::QueueRetry => {
            let n = ctx.svc.store.retry_all_now()?;
            ctx.svc.store.flush_async().await?;
            ctx.inbound.wake.notify_one();
            Reply::ok(format!("{n} queued deliveries made due now\n"))
        }
        Command::MembersForget {
            list,
            addr,
            all_lists,
        } => {
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
            match r {
                Ok(out) => Reply::ok(out),
                Err(e) => Reply::fail(EX_TEMPFAIL, format!("forget failed: {e:#}")),
            }
        }
        Command::Stats { list } => {
            let Some(l) = ctx.svc.cfg.list(&list) else {
                return Ok(unknown(&list));
            };
            Reply::ok(stats(l, &ctx.svc.store)?)
        }
        Command::Status => {
            let out = crate::status::report(&ctx.svc, ctx.inbound.relay.size(), !ctx.local)?;
            Reply {
                // As `systemctl status`: 3 when the program is not running.
                code: if ctx.local { 3 } else { EX_OK },
                out,
                err: String::new(),
            }
        }
        Command::DigestSend { list } => {
            let only = match list.as_deref() {
                None => None,
                Some(name) => match list_key(name) {
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
            Reply::ok(format!("{n} digest(s) queued{when}\n"))
        }
        Command::ModerateList => {
            let mut out = String::new();
            for h in ctx.svc.store.held_heads()? {
                let _ = writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{}",
                    h.id, h.list, h.from_addr, h.subject, h.reason
                );
            }
            Reply::ok(out)
        }
        Command::ModerateApprove { id, member } => moderate(ctx, id, true, member, None).await?,
        Command::ModerateReject { id, reason } => {
            moderate(ctx, id, false, false, reason.as_deref()).await?
        }
        Command::ArchiveRebuild { list, reindex } => {
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
            archive_reply(r)
        }
        Command::ArchiveMark {
            list,
            thread,
            answer,
            solved,
        } => {
            let Some(l) = ctx.svc.cfg.list(&list).cloned() else {
                return Ok(unknown(&list));
            };
            let r = blocking(&ctx.svc, move |svc| {
                svc.archive.owner_mark(&l, &thread, answer, solved)
            })
            .await;
            archive_reply(r)
        }
        Command::ArchiveThreads { list, json } => {
            let Some(l) = ctx.svc.cfg.list(&list).cloned() else {
                return Ok(unknown(&list));
            };
            let r = blocking(&ctx.svc, move |svc| {
                let threads = svc.archive.threads(&l)?;
                Ok(crate::archive::print_threads(&threads, json))
            })
            .await;
            archive_reply(r)
        }
        Command::ArchiveImport { list, path } => {
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
            archive_reply(r)
        }
    })
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

fn archive_reply(r: anyhow::Result<String>) -> Reply {
    match r {
        Ok(out) => Reply::ok(out),
        Err(e) => Reply::fail(EX_SOFTWARE, format!("{e:#}")),
    }
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
    use chrono::TimeZone;
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
        let m = list
            .timezone
            .timestamp_millis_opt(p.received_ms)
            .single()
            .map_or_else(|| "?".to_string(), |d| d.format("%Y-%m").to_string());
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
    let month_of = |ms: i64| {
        tz.timestamp_millis_opt(ms)
            .single()
            .map_or_else(|| "?".to_string(), |d| d.format("%Y-%m").to_string())
    };
    let figures = crate::archive::qa::figures(&threads, month_of);
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
