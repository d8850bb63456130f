//! The `vraagbaak` command: the daemon and its administration.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use vraagbaak::admin::{self, Command, Reply, EX_TEMPFAIL, EX_USAGE};
use vraagbaak::config::{Config, ConfigError};
use vraagbaak::inbound::Inbound;

const DEFAULT_CONFIG: &str = "config/vraagbaak.toml";

#[derive(Parser)]
#[command(name = "vraagbaak", version, about = "A mailing-list forum server")]
struct Cli {
    /// The configuration file. Without it, config/vraagbaak.toml when it exists, else the
    /// embedded default.
    #[arg(long, global = true, env = "VRAAGBAAK_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon: listeners, pipeline, delivery.
    Serve,
    /// Validate the configuration and exit (non-zero on an error).
    CheckConfig,
    /// Manage members.
    #[command(subcommand)]
    Members(MembersCmd),
    /// Read one message on standard input and hand it to the daemon, routed like an SMTP
    /// recipient (for an MTA's pipe: an alias or a pipe(8) transport). Exit codes follow
    /// sysexits: 0 stored, 65 refused, 67 no such address, 75 try again later.
    Inject {
        /// A list's name or any of its addresses; default: `--recipient`, or the
        /// `ORIGINAL_RECIPIENT`/`RECIPIENT` that Postfix's local(8) sets.
        target: Option<String>,
        /// The envelope sender (Postfix pipe: `${sender}`); default: `SENDER` from the
        /// environment; empty for a bounce.
        #[arg(long)]
        sender: Option<String>,
        /// The envelope recipient (Postfix pipe: `${original_recipient}`).
        #[arg(long)]
        recipient: Option<String>,
    },
    /// Inspect the delivery queue.
    #[command(subcommand)]
    Queue(QueueCmd),
    /// Held posts.
    #[command(subcommand)]
    Moderate(ModerateCmd),
    /// IMAP accounts.
    #[command(subcommand)]
    Imap(ImapCmd),
    /// The web archive.
    #[command(subcommand)]
    Archive(ArchiveCmd),
    /// DKIM keys for signing list mail.
    #[command(subcommand)]
    Dkim(DkimCmd),
    /// Digests.
    #[command(subcommand)]
    Digest(DigestCmd),
    /// The database itself.
    #[command(subcommand)]
    Store(StoreCmd),
    /// The owner's view of LIST: members, digest/nomail counts, bounces, held posts, posts
    /// per month.
    Stats { list: String },
    /// What the running daemon is doing: listeners, reloads, spool, queue depth and its
    /// oldest copy, held posts, the last warnings and errors. Exit 3 when it is not
    /// running (the store's figures are still shown).
    Status,
    /// The MTA configuration that puts vraagbaak behind an MTA.
    #[command(subcommand)]
    Mta(MtaCmd),
}

#[derive(Subcommand)]
enum MtaCmd {
    /// Prints the main.cf and master.cf lines, the transport map and the recipient map
    /// (exactly the addresses vraagbaak handles) for the configured lists.
    Postfix {
        /// Where the two map files go.
        #[arg(long, default_value = "/etc/postfix")]
        dir: String,
        /// Pipe mode: a pipe(8) transport running `vraagbaak inject` instead of LMTP.
        #[arg(long)]
        pipe: bool,
        /// The user the pipe command runs as (pipe mode).
        #[arg(long, default_value = "vraagbaak")]
        pipe_user: String,
    },
}

#[derive(Subcommand)]
enum StoreCmd {
    /// Rewrite the database into fresh files, so that deleted records (after `members
    /// forget`) are gone from disk too. Stop the daemon first.
    Compact,
}

#[derive(Subcommand)]
enum DigestCmd {
    /// Make and send the pending digest of LIST (of every list without LIST) now, whether
    /// or not it is due (Mailman's `mailman digests --send`).
    Send { list: Option<String> },
}

#[derive(Subcommand)]
enum DkimCmd {
    /// Write a new private key for LIST (at its `dkim_key`, or data_dir/dkim/) and print the
    /// DNS TXT record to publish and the config keys to set. Never overwrites a key.
    Keygen {
        list: String,
        /// `rsa` (2048 bits, understood by every receiver) or `ed25519` (RFC 8463; sign
        /// with both only if you publish both).
        #[arg(long, default_value = "rsa", value_parser = ["rsa", "ed25519"])]
        algorithm: String,
    },
}

#[derive(Subcommand)]
enum ArchiveCmd {
    /// Render a list's archive (every list's without LIST) from the store; only files
    /// whose bytes change are written.
    Rebuild {
        list: Option<String>,
        /// Also recompute the thread index from the posts (after an upgrade that changed
        /// threading; thread ids come out the same, as they depend only on post order).
        #[arg(long)]
        reindex: bool,
    },
    /// Print every thread of LIST as a tree (Message-ID, date, author, subject).
    Threads {
        list: String,
        /// One JSON object per message: message_id, parent (or null), thread, depth, date,
        /// author, subject.
        #[arg(long)]
        json: bool,
    },
    /// Load an mbox file (a Mailman, Google Groups or public-inbox export) into LIST's
    /// archive. Nothing is sent to members.
    ImportMbox { list: String, file: PathBuf },
    /// Mark a question solved, as an owner: THREAD is its number or its archive URL
    /// (`.../t/12.html`); a message URL (`.../t/12.html#m15`) or `--answer 15` makes that
    /// message the accepted answer.
    Solved {
        list: String,
        thread: String,
        #[arg(long)]
        answer: Option<u64>,
    },
    /// Reopen a question marked solved.
    Reopen { list: String, thread: String },
}

#[derive(Subcommand)]
enum ImapCmd {
    /// Log in to ACCOUNT, show its capabilities and its mailbox's message count, and exit.
    Test { account: String },
}

#[derive(Subcommand)]
enum MembersCmd {
    /// Add members (addresses, or `Name <addr>`). No confirmation is asked.
    Add {
        list: String,
        addrs: Vec<String>,
        /// Send each new member the welcome text.
        #[arg(long)]
        welcome: bool,
    },
    /// Remove members.
    Remove { list: String, addrs: Vec<String> },
    /// List members.
    List {
        list: String,
        /// One line per member with delivery state and bounce record: score, bounces
        /// received, the last one (date, hard/soft/policy, status), notices sent.
        #[arg(long)]
        bounces: bool,
    },
    /// Import members from a file: one per line, `addr`, `Name <addr>` or `addr,Name`.
    /// No welcome mails unless --welcome.
    Import {
        list: String,
        file: PathBuf,
        /// Send each new member the welcome text.
        #[arg(long)]
        welcome: bool,
    },
    /// Forget a member (GDPR): the member record, requests, bounce history, queued mail and
    /// every index keyed by the address go; in stored posts, digests and the archive the
    /// name and address become a neutral label (`forget_posts = "delete"`: the member's
    /// posts go). On LIST only: other lists keep the member and their posts as they are.
    Forget {
        list: String,
        addr: String,
        /// Also forget the address on every other list it is a member of or has posts on.
        #[arg(long)]
        all_lists: bool,
    },
    /// Write the members as CSV (address,name,joined,digest,nomail,language) to stdout.
    Export { list: String },
    /// Bounce records: `members bounces reset LIST ADDR...|--all`.
    #[command(subcommand)]
    Bounces(BouncesCmd),
    /// Change a member's setting: `members set LIST ADDR digest on|off|plain|mime`,
    /// `members set LIST ADDR nomail on|off [--until DATE]`.
    Set {
        list: String,
        addr: String,
        #[arg(value_parser = ["digest", "nomail"])]
        setting: String,
        /// `on`, `off`; for digest also `plain` (RFC 1153 text) or `mime`.
        #[arg(value_parser = ["on", "off", "plain", "mime"])]
        value: String,
        /// With `nomail on`: the date it ends by itself (2026-12-01).
        #[arg(long)]
        until: Option<String>,
    },
}

#[derive(Subcommand)]
enum BouncesCmd {
    /// Turn delivery back on for members disabled by bounces and forget their bounce
    /// records (score, bounces received, notices), in one step.
    Reset {
        list: String,
        /// The members; or --all.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        addrs: Vec<String>,
        /// Every member of LIST.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand)]
enum QueueCmd {
    /// Show pending deliveries.
    List,
    /// Make every pending delivery due now.
    Retry,
}

#[derive(Subcommand)]
enum ModerateCmd {
    /// Show held posts.
    List,
    /// Approve a held post: it is delivered like any post.
    Approve {
        id: u64,
        /// Also add the sender to the members.
        #[arg(long)]
        member: bool,
    },
    /// Reject (discard) a held post; the poster is told.
    Reject {
        id: u64,
        /// The reason, told to the poster.
        #[arg(long)]
        reason: Option<String>,
    },
}

fn load_config(path: Option<&PathBuf>) -> Result<Config, ConfigError> {
    match path {
        Some(p) => Config::load(p),
        None if std::path::Path::new(DEFAULT_CONFIG).exists() => {
            Config::load(std::path::Path::new(DEFAULT_CONFIG))
        }
        None => Config::embedded(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    {
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        tracing_subscriber::registry()
            .with(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            )
            // The last warnings and errors, for `vraagbaak status`.
            .with(vraagbaak::status::RecentErrors)
            .init();
    }
    let cfg = match load_config(cli.config.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(78); // EX_CONFIG
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(70);
        }
    };
    let code = rt.block_on(run(cli.cmd, cfg, cli.config));
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

async fn run(cmd: Cmd, cfg: Config, config_path: Option<PathBuf>) -> i32 {
    let (command, raw) = match cmd {
        Cmd::Serve => {
            // SIGHUP reads the same file again.
            let path = config_path.or_else(|| {
                let d = PathBuf::from(DEFAULT_CONFIG);
                d.exists().then_some(d)
            });
            return match vraagbaak::daemon::serve(cfg, path).await {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    1
                }
            };
        }
        Cmd::Dkim(DkimCmd::Keygen { list, algorithm }) => {
            let Some(l) = cfg.list(&list) else {
                eprintln!("error: no list {list:?} in the configuration");
                return admin::EX_NOUSER;
            };
            let alg = if algorithm == "ed25519" {
                vraagbaak::dkim::Algorithm::Ed25519
            } else {
                vraagbaak::dkim::Algorithm::Rsa
            };
            return match vraagbaak::dkim::keygen(&cfg, l, alg) {
                Ok(text) => {
                    print!("{text}");
                    0
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    73 // EX_CANTCREAT
                }
            };
        }
        Cmd::Mta(MtaCmd::Postfix {
            dir,
            pipe,
            pipe_user,
        }) => {
            let pipe = pipe.then(|| vraagbaak::mta::PipeOpts {
                exe: std::env::current_exe()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|_| "/usr/local/bin/vraagbaak".into()),
                config: config_path
                    .as_ref()
                    .and_then(|p| std::fs::canonicalize(p).ok())
                    .map_or_else(|| DEFAULT_CONFIG.to_string(), |p| p.display().to_string()),
                user: pipe_user,
            });
            let opts = vraagbaak::mta::PostfixOpts { dir, pipe };
            return match vraagbaak::mta::postfix(&cfg, &opts) {
                Ok(text) => {
                    print!("{text}");
                    0
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    78
                }
            };
        }
        Cmd::CheckConfig => {
            if let Err(e) = vraagbaak::texts::Texts::load(&cfg) {
                eprintln!("error: {e}");
                return 78;
            }
            if let Err(e) = vraagbaak::dkim::Keys::load(&cfg) {
                eprintln!("error: {e}");
                return 78;
            }
            println!(
                "configuration is valid: {} list(s), data_dir {}, relay {}",
                cfg.lists.len(),
                cfg.data_dir.display(),
                cfg.delivery.relay
            );
            return 0;
        }
        Cmd::Imap(ImapCmd::Test { account }) => {
            let Some(acct) = cfg.imap.iter().find(|a| a.name == account) else {
                eprintln!("error: no [[imap]] account named {account:?} in the configuration");
                return admin::EX_NOUSER;
            };
            return match vraagbaak::inbound::imap::test(acct).await {
                Ok(report) => {
                    print!("{report}");
                    0
                }
                Err(e) => {
                    eprintln!("error: imap account {}: {e}", acct.name);
                    69 // EX_UNAVAILABLE
                }
            };
        }
        Cmd::Members(MembersCmd::Add {
            list,
            addrs,
            welcome,
        }) => {
            let (members, bad) = admin::parse_member_lines(&addrs.join("\n"));
            if !bad.is_empty() {
                for (_, why) in &bad {
                    eprintln!("error: {why}");
                }
                return EX_USAGE;
            }
            (
                Command::MembersAdd {
                    list,
                    members,
                    welcome,
                },
                Vec::new(),
            )
        }
        Cmd::Members(MembersCmd::Remove { list, addrs }) => {
            (Command::MembersRemove { list, addrs }, Vec::new())
        }
        Cmd::Digest(DigestCmd::Send { list }) => (Command::DigestSend { list }, Vec::new()),
        Cmd::Stats { list } => (Command::Stats { list }, Vec::new()),
        Cmd::Status => (Command::Status, Vec::new()),
        Cmd::Members(MembersCmd::Forget {
            list,
            addr,
            all_lists,
        }) => (
            Command::MembersForget {
                list,
                addr,
                all_lists,
            },
            Vec::new(),
        ),
        Cmd::Store(StoreCmd::Compact) => {
            return match vraagbaak::store::Store::compact(&cfg.db_path()) {
                Ok(()) => {
                    println!("database rewritten: {}", cfg.db_path().display());
                    0
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    EX_TEMPFAIL
                }
            };
        }
        Cmd::Members(MembersCmd::List { list, bounces }) => {
            (Command::MembersList { list, bounces }, Vec::new())
        }
        Cmd::Members(MembersCmd::Export { list }) => (Command::MembersExport { list }, Vec::new()),
        Cmd::Members(MembersCmd::Bounces(BouncesCmd::Reset { list, addrs, all })) => (
            Command::MembersBouncesReset { list, addrs, all },
            Vec::new(),
        ),
        Cmd::Members(MembersCmd::Set {
            list,
            addr,
            setting,
            value,
            until,
        }) => (
            Command::MembersSet {
                list,
                addr,
                setting: match value.as_str() {
                    "plain" | "mime" => "digest-plain".to_string(),
                    _ => setting,
                },
                on: value == "on" || value == "plain",
                until,
            },
            Vec::new(),
        ),
        Cmd::Members(MembersCmd::Import {
            list,
            file,
            welcome,
        }) => {
            let text = match std::fs::read(&file) {
                Ok(b) => String::from_utf8_lossy(&b).into_owned(),
                Err(e) => {
                    eprintln!("error: cannot read {}: {e}", file.display());
                    return 66; // EX_NOINPUT
                }
            };
            let (members, bad) = admin::parse_member_lines(&text);
            for (n, why) in &bad {
                eprintln!("{}:{n}: skipped: {why}", file.display());
            }
            eprintln!(
                "{}: {} good lines, {} skipped",
                file.display(),
                members.len(),
                bad.len()
            );
            (
                Command::MembersAdd {
                    list,
                    members,
                    welcome,
                },
                Vec::new(),
            )
        }
        Cmd::Inject {
            target,
            sender,
            recipient,
        } => {
            let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
            let rcpt = recipient
                .or_else(|| target.clone().filter(|t| t.contains('@')))
                .or_else(|| {
                    target
                        .is_none()
                        .then(|| env("ORIGINAL_RECIPIENT").or_else(|| env("RECIPIENT")))
                        .flatten()
                });
            let list = match (target, &rcpt) {
                (Some(t), _) => t,
                (None, Some(r)) => r.clone(),
                (None, None) => {
                    eprintln!(
                        "error: name a list or an address (inject forum, or --recipient ADDR)"
                    );
                    return admin::EX_USAGE;
                }
            };
            let sender = sender.or_else(|| env("SENDER")).unwrap_or_default();
            let limit = cfg.inject.timeout;
            let read = vraagbaak::inbound::inject::read_stdin(cfg.smtp.max_message_size);
            let raw = match tokio::time::timeout(limit, read).await {
                Ok(Ok(raw)) => raw,
                Ok(Err((code, why))) => {
                    eprintln!("error: {why}");
                    return code;
                }
                Err(_) => {
                    eprintln!("error: standard input not read within {limit:?}");
                    return admin::EX_TEMPFAIL;
                }
            };
            let cmd = Command::Inject {
                list,
                raw_len: raw.len(),
                sender,
                rcpt,
            };
            (cmd, raw)
        }
        Cmd::Archive(ArchiveCmd::Rebuild { list, reindex }) => {
            (Command::ArchiveRebuild { list, reindex }, Vec::new())
        }
        Cmd::Archive(ArchiveCmd::Solved {
            list,
            thread,
            answer,
        }) => (
            Command::ArchiveMark {
                list,
                thread,
                answer,
                solved: true,
            },
            Vec::new(),
        ),
        Cmd::Archive(ArchiveCmd::Reopen { list, thread }) => (
            Command::ArchiveMark {
                list,
                thread,
                answer: None,
                solved: false,
            },
            Vec::new(),
        ),
        Cmd::Archive(ArchiveCmd::Threads { list, json }) => {
            (Command::ArchiveThreads { list, json }, Vec::new())
        }
        Cmd::Archive(ArchiveCmd::ImportMbox { list, file }) => {
            // The daemon may be the one reading it: give it a path that does not depend on
            // our working directory.
            let path = match std::fs::canonicalize(&file) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("error: cannot read {}: {e}", file.display());
                    return admin::EX_NOINPUT;
                }
            };
            (Command::ArchiveImport { list, path }, Vec::new())
        }
        Cmd::Queue(QueueCmd::List) => (Command::QueueList, Vec::new()),
        Cmd::Queue(QueueCmd::Retry) => (Command::QueueRetry, Vec::new()),
        Cmd::Moderate(ModerateCmd::List) => (Command::ModerateList, Vec::new()),
        Cmd::Moderate(ModerateCmd::Approve { id, member }) => {
            (Command::ModerateApprove { id, member }, Vec::new())
        }
        Cmd::Moderate(ModerateCmd::Reject { id, reason }) => {
            (Command::ModerateReject { id, reason }, Vec::new())
        }
    };
    let reply = if matches!(command, Command::Inject { .. }) {
        inject(cfg, command, raw).await
    } else {
        dispatch(cfg, command, raw).await
    };
    print!("{}", reply.out);
    if !reply.err.is_empty() {
        eprint!("error: {}", reply.err);
        if !reply.err.ends_with('\n') {
            eprintln!();
        }
    }
    reply.code
}

/// A message from an MTA's pipe: through the inject socket (which the pipe's user may
/// open, unlike the control socket), else as any command; given up after
/// `[inject] timeout` with 75, so that the MTA keeps the message and tries again.
async fn inject(cfg: Config, cmd: Command, raw: Vec<u8>) -> Reply {
    let limit = cfg.inject.timeout;
    let sock = cfg.inject_socket();
    let attempt = async {
        if sock.exists() {
            match admin::call(&sock, &cmd, &raw).await {
                Ok(r) => return r,
                // No daemon behind the socket: as any command (the store, if we may).
                Err(e)
                    if e.kind() == std::io::ErrorKind::ConnectionRefused
                        || e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Reply::fail(
                        EX_TEMPFAIL,
                        format!(
                            "cannot hand the message to the daemon through {}: {e} \
                             (see [inject] in the README)",
                            sock.display()
                        ),
                    )
                }
            }
        }
        dispatch(cfg, cmd, raw).await
    };
    match tokio::time::timeout(limit, attempt).await {
        Ok(r) => r,
        Err(_) => Reply::fail(
            EX_TEMPFAIL,
            format!("the daemon did not take the message within {limit:?}; try again later"),
        ),
    }
}

/// Runs a command in the daemon when one is running, else against the store directly.
async fn dispatch(cfg: Config, cmd: Command, raw: Vec<u8>) -> Reply {
    let sock = cfg.control_socket();
    for attempt in 0..3 {
        if sock.exists() {
            match admin::call(&sock, &cmd, &raw).await {
                Ok(r) => return r,
                Err(e)
                    if e.kind() == std::io::ErrorKind::ConnectionRefused
                        || e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Reply::fail(EX_TEMPFAIL, format!("the daemon did not answer: {e}"))
                }
            }
        }
        match vraagbaak::daemon::open_store(&cfg) {
            Ok(store) => {
                let cfg = Arc::new(cfg);
                let inbound = Arc::new(Inbound {
                    cfg: cfg.clone(),
                    store: store.clone(),
                    wake: Arc::new(tokio::sync::Notify::new()),
                    // Without the daemon the relay's SIZE is not known: no limit but ours.
                    relay: Arc::new(vraagbaak::outbound::RelayLimits::default()),
                });
                let svc = match vraagbaak::Services::new(cfg, store) {
                    Ok(s) => s,
                    Err(e) => return Reply::fail(EX_TEMPFAIL, format!("{e:#}")),
                };
                let ctx = admin::Ctx {
                    svc,
                    inbound,
                    local: true,
                };
                return admin::execute(&ctx, cmd, raw).await;
            }
            // The daemon is starting (it holds the lock but has no socket yet): wait.
            Err(_) if attempt < 2 => {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await
            }
            Err(e) => return Reply::fail(EX_TEMPFAIL, format!("{e:#}")),
        }
    }
    Reply::fail(
        EX_TEMPFAIL,
        "neither the daemon nor the store could be reached",
    )
}
