//! Fan-out benchmark: one 20 KB post to 10,000 members, through the real pipeline and
//! delivery workers, over SMTP on 127.0.0.1 to a local sink that accepts everything.
//!
//! `cargo bench --bench fanout` (env: `FANOUT_MEMBERS`, default 10000; `FANOUT_CONNECTIONS`,
//! default 8; `FANOUT_HTTP=1` adds an `[http]` section, so that every copy gets its own
//! one-click List-Unsubscribe fields; `FANOUT_DKIM=rsa` or `ed25519` signs every copy with
//! a fresh key). Prints recipients per second. The sink runs in the same process and on the
//! same cores as vraagbaak, so the figure includes the sink's own cost.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{watch, Notify};
use vraagbaak::config::Config;
use vraagbaak::inbound::Inbound;
use vraagbaak::store::{Member, Store};

/// A minimal SMTP sink: accepts every transaction and counts messages.
async fn sink(listener: tokio::net::TcpListener, count: Arc<AtomicUsize>) {
    while let Ok((stream, _)) = listener.accept().await {
        let count = count.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let (r, mut w) = stream.into_split();
            let mut r = BufReader::new(r);
            let mut line = Vec::new();
            if w.write_all(b"220 sink ESMTP\r\n").await.is_err() {
                return;
            }
            loop {
                line.clear();
                match r.read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let cmd = line.get(..4).map(|c| c.to_ascii_uppercase());
                let reply: &[u8] = match cmd.as_deref() {
                    Some(b"EHLO") => b"250-sink\r\n250-8BITMIME\r\n250 SIZE 52428800\r\n",
                    Some(b"DATA") => {
                        if w.write_all(b"354 go\r\n").await.is_err() {
                            return;
                        }
                        loop {
                            line.clear();
                            match r.read_until(b'\n', &mut line).await {
                                Ok(0) | Err(_) => return,
                                Ok(_) if line == b".\r\n" => break,
                                Ok(_) => {}
                            }
                        }
                        count.fetch_add(1, Ordering::Relaxed);
                        b"250 2.0.0 queued\r\n"
                    }
                    Some(b"QUIT") => {
                        let _ = w.write_all(b"221 bye\r\n").await;
                        return;
                    }
                    _ => b"250 2.0.0 ok\r\n",
                };
                if w.write_all(reply).await.is_err() {
                    return;
                }
            }
        });
    }
}

fn post_20k() -> Vec<u8> {
    let mut m = String::from(
        "From: Jan Peeters <jan@ocmw.be>\r\nTo: forum@lists.example.org\r\n\
Subject: Vraag over leefloon en verhuis naar een andere gemeente\r\n\
Message-ID: <bench-1@ocmw.be>\r\nDate: Sun, 22 Nov 2026 10:00:00 +0100\r\n\
MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
    );
    let para = "Dag collega's, een cliënt verhuist volgende maand naar een andere gemeente \
en vraagt of het leefloon doorloopt. Wie heeft hier ervaring mee?\r\n";
    while m.len() < 20 * 1024 {
        m.push_str(para);
    }
    m.into_bytes()
}

/// A memory figure of this process from `/proc/self/status` (`VmHWM`: the peak resident
/// set so far; `VmRSS`: now), in MB.
fn status_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn peak_rss_mb() -> f64 {
    status_mb("VmHWM:")
}

fn rss_mb() -> f64 {
    status_mb("VmRSS:")
}

/// In the child process: adds the members to the store at `db` and exits.
fn setup(db: &str, members: usize) -> anyhow::Result<()> {
    let store = Store::open(std::path::Path::new(db))?;
    let list = "forum@lists.example.org";
    for i in 0..members {
        store.add_member(
            list,
            &Member::new(format!("lid{i:05}@ocmw{}.be", i % 300), None, |_| {
                i as u64 + 1
            }),
        )?;
    }
    store.add_member(list, &Member::new("jan@ocmw.be".into(), None, |_| 0))?;
    store.flush()?;
    Ok(())
}

fn main() {
    let members: usize = std::env::var("FANOUT_MEMBERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let connections: usize = std::env::var("FANOUT_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    if let Ok(db) = std::env::var("FANOUT_SETUP_DB") {
        if let Err(e) = setup(&db, members) {
            eprintln!("adding members failed: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start tokio: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(members, connections)) {
        eprintln!("benchmark failed: {e:#}");
        std::process::exit(1);
    }
}

async fn run(members: usize, connections: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let count = Arc::new(AtomicUsize::new(0));
    tokio::spawn(sink(listener, count.clone()));

    let dkim = match std::env::var("FANOUT_DKIM").as_deref() {
        Ok(alg @ ("rsa" | "ed25519")) => {
            let a = if alg == "rsa" {
                vraagbaak::dkim::Algorithm::Rsa
            } else {
                vraagbaak::dkim::Algorithm::Ed25519
            };
            let (pem, _) = vraagbaak::dkim::generate(a).map_err(anyhow::Error::msg)?;
            let path = dir.path().join("dkim.pem");
            std::fs::write(&path, pem)?;
            format!(
                "dkim_selector = \"vb1\"\ndkim_key = {:?}\n",
                path.display().to_string()
            )
        }
        _ => String::new(),
    };
    let text = format!(
        r#"
data_dir = "{dir}"
{http}
[dns]
offline = true
[smtp]
listen = ""
hostname = "lists.example.org"
[delivery]
relay = "smtp://127.0.0.1:{port}"
connections = {connections}
[[list]]
address = "forum@lists.example.org"
name = "Forum OCMW"
posting = "members"
subject_prefix = "[forum]"
owners = ["beheer@example.org"]
{dkim}
"#,
        dir = dir.path().display(),
        http = if std::env::var("FANOUT_HTTP").is_ok_and(|v| v == "1") {
            "[http]\nlisten = \"127.0.0.1:0\"\nbase_url = \"https://lists.example.org\"\n"
        } else {
            ""
        }
    );
    let cfg = Arc::new(Config::parse(&text, "bench.toml")?);
    let list = "forum@lists.example.org";
    // The members are added by another process, as `members import` would: what is
    // measured is a daemon started on a store that holds them.
    let status = std::process::Command::new(std::env::current_exe()?)
        .env("FANOUT_SETUP_DB", cfg.db_path())
        .env("FANOUT_MEMBERS", members.to_string())
        .status()?;
    anyhow::ensure!(status.success(), "adding the members failed");
    let store = Store::open(&cfg.db_path())?;
    let expected = members + 1;
    let members_rss = peak_rss_mb();

    let (_stop_tx, stop_rx) = watch::channel(false);
    let wake_in = Arc::new(Notify::new());
    let wake_out = Arc::new(Notify::new());
    let svc = vraagbaak::Services::new(cfg.clone(), store.clone())?;
    let limits = Arc::new(vraagbaak::outbound::RelayLimits::default());
    let dkim = Arc::new(vraagbaak::dkim::Keys::load(&cfg).map_err(anyhow::Error::msg)?);
    let live = vraagbaak::Live::new(vraagbaak::Generation::new(
        svc.clone(),
        dkim,
        wake_in.clone(),
        limits.clone(),
    ));
    tokio::spawn(vraagbaak::pipeline::run(
        live.clone(),
        wake_in.clone(),
        wake_out.clone(),
        stop_rx.clone(),
    ));
    tokio::spawn(vraagbaak::outbound::run(
        live,
        limits.clone(),
        wake_out,
        stop_rx,
    ));
    let inbound = Inbound {
        cfg: cfg.clone(),
        store: store.clone(),
        wake: wake_in,
        relay: limits,
    };
    let post = post_20k();
    println!(
        "fan-out: one {} byte post to {expected} members, {connections} relay connections",
        post.len()
    );
    let start = Instant::now();
    let v = inbound
        .accept("bench", "jan@ocmw.be", &[list.to_string()], &post)
        .await;
    let stored = start.elapsed();
    let stored_rss = peak_rss_mb();
    // RSS over time, with the copies the sink has taken, to see where memory goes.
    let sampler = {
        let count = count.clone();
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            let t0 = Instant::now();
            while count.load(Ordering::Relaxed) < expected
                && t0.elapsed() < Duration::from_secs(600)
            {
                samples.push((
                    t0.elapsed().as_secs_f64(),
                    count.load(Ordering::Relaxed),
                    rss_mb(),
                ));
                std::thread::sleep(Duration::from_millis(500));
            }
            samples
        })
    };
    anyhow::ensure!(
        v == [vraagbaak::inbound::Verdict::Stored],
        "post not stored: {v:?}"
    );
    let deadline = start + Duration::from_secs(600);
    while count.load(Ordering::Relaxed) < expected {
        anyhow::ensure!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let all = start.elapsed();
    // Wait until the queue is recorded empty (the last batch is flushed).
    while !store.queue_rows()?.is_empty() || !store.planned()?.is_empty() {
        anyhow::ensure!(Instant::now() < deadline, "queue never drained");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let recorded = start.elapsed();
    if std::env::var("FANOUT_TIMELINE").is_ok_and(|v| v == "1") {
        for (t, n, mb) in sampler.join().unwrap_or_default() {
            println!("  {t:6.1} s  {n:7} copies  RSS {mb:5.0} MB");
        }
    }
    println!(
        "peak RSS: {members_rss:.0} MB with the store open, {stored_rss:.0} MB once the \
         post is stored, {:.0} MB after the fan-out",
        peak_rss_mb()
    );
    let secs = all.as_secs_f64();
    println!(
        "stored and acknowledged in {:.1} ms",
        stored.as_secs_f64() * 1e3
    );
    println!(
        "all {expected} copies accepted by the sink in {secs:.2} s: {:.0} recipients/s, {:.1} MB/s",
        expected as f64 / secs,
        (expected * post.len()) as f64 / secs / 1e6
    );
    println!("queue recorded empty after {:.2} s", recorded.as_secs_f64());
    Ok(())
}
