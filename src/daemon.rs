//! `vraagbaak serve`: every part in one tokio process, sharing one store.

use crate::admin;
use crate::config::Config;
use crate::inbound;
use crate::store::Store;
use crate::{http, outbound, pipeline, Services};
use anyhow::Context as _;
use std::sync::Arc;
use tokio::sync::{watch, Notify};

/// Opens the store in `cfg.data_dir`, creating the directory.
pub fn open_store(cfg: &Config) -> anyhow::Result<Store> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("cannot create data_dir {}", cfg.data_dir.display()))?;
    Ok(Store::open(&cfg.db_path())?)
}

/// Runs until SIGINT or SIGTERM.
/// Runs the daemon on `cfg`, read from `path` (`None`: the embedded default), until SIGTERM
/// or Ctrl-C; SIGHUP reads `path` again (see [`reload`]).
pub async fn serve(cfg: Config, path: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let cfg = Arc::new(cfg);
    crate::status::board().started(path.as_deref());
    let store = open_store(&cfg)?;
    let svc = Services::new(cfg.clone(), store.clone())?;
    let secret = svc.secret.clone();
    let n = store.assign_member_uids(|l, a| secret.member_uid(l, a))?;
    if n > 0 {
        store.flush()?;
        tracing::info!(members = n, "gave members their one-click unsubscribe ids");
    }
    crate::digest::init(&svc)?;
    let dkim = Arc::new(crate::dkim::Keys::load(&cfg).map_err(anyhow::Error::msg)?);
    if !dkim.is_empty() {
        tracing::info!("DKIM signing on");
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let wake_in = Arc::new(Notify::new());
    let wake_out = Arc::new(Notify::new());
    // The relay's SIZE, known before the first post is taken (within a few seconds; a
    // relay that does not answer is asked again by the delivery side).
    let limits = Arc::new(outbound::RelayLimits::default());
    let probe_timeout = cfg.delivery.timeout.min(std::time::Duration::from_secs(5));
    outbound::probe_once(&cfg, &limits, probe_timeout).await;
    let g = crate::Generation::new(svc.clone(), dkim.clone(), wake_in.clone(), limits.clone());
    let inbound = g.inbound.clone();
    let live = crate::Live::new(g);

    let mut tasks = Vec::new();
    let mut listen = |addr: &str, lmtp: bool| -> anyhow::Result<()> {
        if addr.is_empty() {
            return Ok(());
        }
        let std_listener = std::net::TcpListener::bind(addr)
            .with_context(|| format!("cannot listen on {addr}"))?;
        std_listener.set_nonblocking(true)?;
        let l = tokio::net::TcpListener::from_std(std_listener)?;
        let protocol = if lmtp { "lmtp" } else { "smtp" };
        tracing::info!(addr, protocol, "listening");
        crate::status::board().listening(protocol, addr);
        let (ib, rx) = (live.clone(), stop_rx.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = inbound::smtp::serve(l, ib, lmtp, rx).await {
                tracing::error!(error = %e, "listener stopped");
            }
        }));
        Ok(())
    };
    listen(&cfg.smtp.listen, false)?;
    if let Some(l) = &cfg.lmtp {
        listen(&l.listen, true)?;
    }

    if let Some(h) = &cfg.http {
        let std_listener = std::net::TcpListener::bind(&h.listen)
            .with_context(|| format!("cannot listen on {}", h.listen))?;
        std_listener.set_nonblocking(true)?;
        let l = tokio::net::TcpListener::from_std(std_listener)?;
        tracing::info!(addr = %h.listen, protocol = "http", "listening");
        crate::status::board().listening("http", &h.listen);
        let (s, w, rx) = (live.clone(), wake_out.clone(), stop_rx.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = http::serve(l, s, w, rx).await {
                tracing::error!(error = %e, "web endpoint stopped");
            }
        }));
    }
    for acct in &cfg.imap {
        tracing::info!(account = %acct.name, host = %acct.host, mailbox = %acct.mailbox, "polling imap");
        crate::status::board()
            .listening("imap", &format!("{} {} (polled)", acct.host, acct.mailbox));
        tasks.push(tokio::spawn(inbound::imap::run(
            inbound.clone(),
            acct.clone(),
            stop_rx.clone(),
        )));
    }
    tasks.push(tokio::spawn(crate::maintenance::run(
        live.clone(),
        wake_out.clone(),
        stop_rx.clone(),
    )));
    tasks.push(tokio::spawn(pipeline::run(
        live.clone(),
        wake_in.clone(),
        wake_out.clone(),
        stop_rx.clone(),
    )));
    tasks.push(tokio::spawn(outbound::run(
        live.clone(),
        limits.clone(),
        wake_out.clone(),
        stop_rx.clone(),
    )));
    tasks.push(tokio::spawn(archive_writer(live.clone(), stop_rx.clone())));
    let sock = cfg.control_socket();
    crate::status::board().listening("admin", &sock.display().to_string());
    let rx = stop_rx.clone();
    let l = live.clone();
    tasks.push(tokio::spawn(async move {
        if let Err(e) = admin::serve_socket(&sock, l, admin::Access::Control, rx).await {
            tracing::error!(error = %e, path = %sock.display(), "control socket stopped");
        }
    }));
    // Pipe mode: messages only, for the MTA's pipe user (`[inject]`).
    let gid = match &cfg.inject.group {
        Some(g) => Some(crate::config::group_id(g).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let sock = cfg.inject_socket();
    crate::status::board().listening("pipe", &sock.display().to_string());
    let rx = stop_rx.clone();
    let l = live.clone();
    tasks.push(tokio::spawn(async move {
        if let Err(e) = admin::serve_socket(&sock, l, admin::Access::Inject { gid }, rx).await {
            tracing::error!(error = %e, path = %sock.display(), "inject socket stopped");
        }
    }));
    tracing::info!(
        lists = cfg.lists.len(),
        relay = %cfg.delivery.relay,
        data_dir = %cfg.data_dir.display(),
        "vraagbaak running"
    );

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = hup.recv() => {
                reload(&live, path.as_deref()).await;
                // New lists may have mail waiting; new texts apply to the next mail.
                wake_in.notify_one();
                wake_out.notify_one();
            }
        }
    }
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let all = futures_join(tasks);
    if tokio::time::timeout(std::time::Duration::from_secs(15), all)
        .await
        .is_err()
    {
        tracing::warn!("some tasks did not stop within 15 s");
    }
    store.flush()?;
    Ok(())
}

/// Keeps the archives up to date: woken when posts are stored, and once a minute in case a
/// bell was missed. A failed pass is logged and tried again; the posts stay in the store.
async fn archive_writer(live: crate::Live, mut shutdown: watch::Receiver<bool>) {
    let svc = live.svc();
    loop {
        let s = live.svc();
        let t = std::time::Instant::now();
        match tokio::task::spawn_blocking(move || s.archive.update_all()).await {
            Ok(Ok(st)) if st.messages > 0 => tracing::info!(
                messages = st.messages,
                threads = st.threads,
                files = st.files_written,
                ms = t.elapsed().as_millis() as u64,
                "archive updated"
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %format!("{e:#}"), "archive update failed; retrying")
            }
            Err(e) => tracing::error!(error = %e, "archive update panicked; retrying"),
        }
        tokio::select! {
            _ = svc.archive_wake.notified() => {}
            _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// SIGHUP: reads the configuration file again and, when it is valid, makes it current for
/// every task from its next unit of work (lists added, changed or removed; texts and
/// archive templates; DKIM keys; the DNS table). What is bound at start stays until a
/// restart, and is said in the log when it differs: the data directory, the listeners'
/// addresses, the relay and its connections, IMAP accounts. A bad file changes nothing;
/// the error is logged with the file, the key and what was expected. Queued copies of a
/// removed list stay queued (delivered if it comes back), nothing is dropped.
pub async fn reload(live: &crate::Live, path: Option<&std::path::Path>) {
    let Some(path) = path else {
        tracing::warn!("SIGHUP: running on the embedded configuration; nothing to reload");
        return;
    };
    let path = path.to_path_buf();
    let old = live.now();
    let loaded = tokio::task::spawn_blocking(move || -> anyhow::Result<crate::Generation> {
        let cfg = Arc::new(Config::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?);
        let was = &old.svc.cfg;
        let fixed = [
            ("data_dir", was.data_dir != cfg.data_dir),
            ("smtp.listen", was.smtp.listen != cfg.smtp.listen),
            (
                "lmtp.listen",
                was.lmtp.as_ref().map(|l| &l.listen) != cfg.lmtp.as_ref().map(|l| &l.listen),
            ),
            (
                "http.listen",
                was.http.as_ref().map(|h| &h.listen) != cfg.http.as_ref().map(|h| &h.listen),
            ),
            ("delivery.relay", was.delivery.relay != cfg.delivery.relay),
            (
                "delivery.connections",
                was.delivery.connections != cfg.delivery.connections,
            ),
            (
                "smtp.max_connections",
                was.smtp.max_connections != cfg.smtp.max_connections,
            ),
            ("imap", was.imap.len() != cfg.imap.len()),
            ("inject", was.inject_socket() != cfg.inject_socket()),
        ];
        for (key, changed) in fixed {
            if changed {
                tracing::warn!(key, "SIGHUP: this setting changes only with a restart");
            }
        }
        let svc = old.svc.reloaded(cfg.clone())?;
        crate::digest::init(&svc)?;
        let dkim = Arc::new(crate::dkim::Keys::load(&cfg).map_err(anyhow::Error::msg)?);
        Ok(crate::Generation::new(
            svc,
            dkim,
            old.inbound.wake.clone(),
            old.inbound.relay.clone(),
        ))
    })
    .await;
    match loaded {
        Ok(Ok(g)) => {
            let lists = g.svc.cfg.lists.len();
            live.replace(g);
            tracing::info!(lists, "SIGHUP: configuration reloaded");
            crate::status::board().reloaded(Ok(()));
        }
        Ok(Err(e)) => {
            let e = format!("{e:#}");
            tracing::error!(error = %e, "SIGHUP: configuration not reloaded; the running one stays");
            crate::status::board().reloaded(Err(e));
        }
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP: reload panicked; the running one stays");
            crate::status::board().reloaded(Err(e.to_string()));
        }
    }
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}
