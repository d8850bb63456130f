//! The archive in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`, driven over WebDriver with fantoccini) opens the front page, a month,
//! every thread page (hostile mails among them) and the search page, served by the daemon's
//! web endpoint on 127.0.0.1.
//!
//! It checks that no script from a mail ran (the payloads set `window.__pwned`, change the
//! title or open alerts), that no request left the archive's origin (a trap server on
//! another loopback port that every payload points at must see no connection, and the
//! browser's own resource list holds only archive URLs), and that search finds a word of a
//! known message, also with accents folded.
//!
//! Without Chromium the test is skipped with a message, except under CI (`CI` set), where
//! `.ci/run` installs it and a skip would hide a failure.

mod common;

use common::*;
use fantoccini::{ClientBuilder, Locator};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A loopback server that counts connections: nothing should ever connect.
fn trap() -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind trap");
    let port = l.local_addr().expect("trap addr").port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            if s.is_ok() {
                h.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    (port, hits)
}

fn hostile_messages(trap: u16) -> Vec<Vec<u8>> {
    let t = format!("http://127.0.0.1:{trap}");
    let html = |id: &str, body: String| -> Vec<u8> {
        format!(
            "From: Mallory <mallory@evil.example>\r\nTo: {LIST}\r\nSubject: Hostile {id}\r\n\
Message-ID: <{id}@evil.example>\r\nDate: Mon, 02 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n\
Content-Type: text/html; charset=utf-8\r\n\r\n{body}\r\n"
        )
        .into_bytes()
    };
    vec![
        html("script", format!("<p>hi</p><script>window.__pwned=1;document.title='pwned';fetch('{t}/s')</script>")),
        html("onerror", format!("<img src=\"{t}/img.png\" onerror=\"window.__pwned=2\">")),
        html("svg", "<svg onload=\"window.__pwned=3\"><circle r=\"5\"/></svg>".into()),
        html("iframe", format!("<iframe src=\"{t}/frame\"></iframe><iframe srcdoc=\"<script>parent.__pwned=4</script>\"></iframe>")),
        html("jsurl", "<a id=\"x\" href=\"javascript:window.__pwned=5\">click</a>".into()),
        html("style", format!("<style>body{{background:url('{t}/bg')}}</style><div style=\"background:url({t}/bg2)\">x</div>")),
        html("meta", format!("<meta http-equiv=\"refresh\" content=\"0;url={t}/r\"><base href=\"{t}/\"><link rel=\"stylesheet\" href=\"{t}/css\">")),
        html("form", format!("<form action=\"{t}/f\"><input name=q autofocus onfocus=\"window.__pwned=6\"></form>")),
        html("object", format!("<object data=\"{t}/o\"></object><embed src=\"{t}/e\"><video src=\"{t}/v\" autoplay></video>")),
        html("data", "<a href=\"data:text/html,<script>alert(1)</script>\">d</a><img src=\"data:image/svg+xml,<svg onload=alert(1)>\">".into()),
    ]
}

fn known_message() -> Vec<u8> {
    format!(
        "From: An Peeters <an@ocmw-gent.be>\r\nTo: {LIST}\r\nSubject: Kwijtschelding van schulden\r\n\
Message-ID: <known@ocmw-gent.be>\r\nDate: Tue, 03 Nov 2026 09:00:00 +0000\r\nMIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
Heeft iemand ervaring met collectieve schuldenregeling voor een cliënt in budgetbegeleiding?\r\n"
    )
    .into_bytes()
}

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_in_headless_chromium_runs_nothing_from_mail_and_finds_words() {
    if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have {CHROMIUM} and {CHROMEDRIVER} (.ci/run installs them)"
        );
        eprintln!("skipped: {CHROMIUM} or {CHROMEDRIVER} not installed (apt-get install chromium chromium-driver)");
        return;
    }
    let (trap_port, trap_hits) = trap();
    let mut env = TestEnv::new(
        free_port(),
        Opts {
            http: true,
            posting: "open",
            list_extra: "archive = \"public\"\n".into(),
            ..Opts::default()
        },
    );
    let mut mbox = Vec::new();
    let mut msgs = hostile_messages(trap_port);
    msgs.push(known_message());
    for m in &msgs {
        vraagbaak::archive::mbox::append(&mut mbox, m, 1_793_000_000_000);
    }
    let file = env.path().join("browser.mbox");
    std::fs::write(&file, mbox).expect("write mbox");
    let out = env.cli(&[
        "archive",
        "import-mbox",
        "forum",
        file.to_str().expect("path"),
    ]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let _daemon = Daemon::start(&mut env);
    let base = format!("http://127.0.0.1:{}/archive/forum/", env.http_port);

    let wd_port = free_port();
    let mut driver = Command::new(CHROMEDRIVER)
        .arg(format!("--port={wd_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    assert!(
        wait_until(WAIT, || std::net::TcpStream::connect((
            "127.0.0.1",
            wd_port
        ))
        .is_ok()),
        "chromedriver did not listen"
    );
    let profile = tempfile::tempdir().expect("profile dir");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-extensions",
                format!("--user-data-dir={}", profile.path().display()),
            ]
        }),
    );
    // Both ring (ours) and aws-lc (a fantoccini default) may be linked: pick ring.
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let client = ClientBuilder::rustls()
        .expect("rustls")
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{wd_port}"))
        .await
        .expect("WebDriver session");

    let site = env.data_dir.join("archive/forum");
    let mut pages = vec![
        base.clone() + "index.html",
        base.clone() + "2026-11/index.html",
    ];
    for f in files(&site.join("t")) {
        let name = f.file_name().expect("name").to_string_lossy().to_string();
        pages.push(format!("{base}t/{name}"));
    }
    assert!(pages.len() >= 2 + msgs.len(), "pages: {pages:?}");
    for url in &pages {
        client.goto(url).await.expect("goto");
        // Let anything that would run, run.
        tokio::time::sleep(Duration::from_millis(150)).await;
        if let Ok(text) = client.get_alert_text().await {
            panic!("{url}: an alert opened: {text}");
        }
        let v = client
            .execute(
                "return [typeof window.__pwned, document.title, \
                 performance.getEntriesByType('resource').map(function (e) { return e.name; })];",
                vec![],
            )
            .await
            .expect("execute");
        assert_eq!(v[0], "undefined", "{url}: a script from a mail ran");
        assert!(
            !v[1].as_str().unwrap_or("").contains("pwned"),
            "{url}: title changed"
        );
        for r in v[2].as_array().into_iter().flatten() {
            let r = r.as_str().unwrap_or("");
            assert!(
                r.starts_with(&base),
                "{url}: a request left the archive: {r}"
            );
        }
        // Clicking a javascript: link (if one survived) must do nothing.
        if let Ok(a) = client.find(Locator::Css("a#x")).await {
            let _ = a.click().await;
            let v = client
                .execute("return typeof window.__pwned;", vec![])
                .await
                .expect("execute");
            assert_eq!(v, "undefined", "{url}: a link ran a script");
        }
    }

    // Search: a word of the known message, with and without its accent.
    for q in ["kwijtschelding", "client", "cliënt", "budgetbegel"] {
        client
            .goto(&format!("{base}search.html?q={q}"))
            .await
            .expect("goto search");
        let first = client
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css("#search-results li a"))
            .await
            .unwrap_or_else(|e| panic!("no result for {q:?}: {e}"));
        let text = first.text().await.expect("text");
        assert!(text.contains("Kwijtschelding"), "{q}: {text}");
        let href = first.attr("href").await.expect("href").unwrap_or_default();
        client
            .goto(&format!("{base}{}", href.trim_start_matches("./")))
            .await
            .expect("open result");
        let body = client.source().await.expect("source");
        assert!(body.contains("schuldenregeling"), "{q}: result page");
    }
    client
        .goto(&format!("{base}search.html?q=onbestaandwoord"))
        .await
        .expect("goto");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(client
        .find_all(Locator::Css("#search-results li"))
        .await
        .expect("find")
        .is_empty());

    client.close().await.expect("close");
    let _ = driver.kill();
    let _ = driver.wait();
    assert_eq!(
        trap_hits.load(Ordering::SeqCst),
        0,
        "the browser connected to a URL from a mail"
    );
}
