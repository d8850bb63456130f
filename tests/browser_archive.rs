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

/// One browser at a time: two Chromiums on a 2-core machine make page loads slow enough
/// to race the checks.
static ONE_BROWSER: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Whether Chromium and ChromeDriver are here; when not, [`skip`] says so (and fails under
/// CI).
fn browser_available(test: &str) -> bool {
    if Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists() {
        return true;
    }
    skip(
        test,
        &format!(
            "{CHROMIUM} or {CHROMEDRIVER} not installed \
(apt-get install chromium chromium-driver; .ci/run installs them)"
        ),
    );
    false
}

/// ChromeDriver with a headless Chromium session on a fresh profile.
async fn browser() -> (std::process::Child, tempfile::TempDir, fantoccini::Client) {
    let wd_port = free_port();
    let driver = Command::new(CHROMEDRIVER)
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
    (driver, profile, client)
}

#[test]
fn archive_in_headless_chromium_runs_nothing_from_mail_and_finds_words() {
    if !browser_available("archive_in_headless_chromium_runs_nothing_from_mail_and_finds_words") {
        return;
    }
    let _one = ONE_BROWSER.lock().unwrap_or_else(|p| p.into_inner());
    runtime().block_on(hostile_mail_and_search());
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

async fn hostile_mail_and_search() {
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

    let (mut driver, _profile, client) = browser().await;

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
        let found = client
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::XPath("//*[contains(text(), 'schuldenregeling')]"))
            .await;
        assert!(found.is_ok(), "{q}: result page");
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

/// Presses the page's submit button.
async fn submit(client: &fantoccini::Client) {
    client
        .find(Locator::Css("button[type=submit]"))
        .await
        .expect("button")
        .click()
        .await
        .expect("click");
}

/// The login link in the last mail the sink got for `rcpt`.
fn login_link(sink: &Sink, rcpt: &str) -> String {
    let m = sink
        .messages()
        .into_iter()
        .rfind(|m| m.rcpt == rcpt)
        .expect("a mail with the link");
    let text = mail_parser::MessageParser::default()
        .parse(&m.data)
        .and_then(|p| p.body_text(0).map(|t| t.into_owned()))
        .unwrap_or_default();
    let start = text.find("http://").expect("a link");
    text[start..]
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn members_only_archive_opens_with_a_mailed_one_time_link() {
    if !browser_available("members_only_archive_opens_with_a_mailed_one_time_link") {
        return;
    }
    let _one = ONE_BROWSER.lock().unwrap_or_else(|p| p.into_inner());
    // The sink runs its own runtime: made and dropped outside the browser's.
    let sink = Sink::start();
    runtime().block_on(members_only(&sink));
}

async fn members_only(sink: &Sink) {
    let mut env = TestEnv::new(
        sink.port,
        Opts {
            http: true,
            list_extra: "archive = \"private\"\n".into(),
            ..Opts::default()
        },
    );
    let (member_addr, stranger) = (member(1), "buiten@example.com".to_string());
    env.add_members(&[member_addr.clone(), member(2)]);
    let d = Daemon::start(&mut env);
    let post_raw = message(
        &member_addr,
        "Dossier over leefloon",
        "priv-1@ocmw.be",
        "Vertrouwelijk.",
    );
    assert_eq!(post(d.port, &member_addr, LIST, &post_raw), 250);
    let site = env.data_dir.join("archive-private/forum");
    assert!(wait_until(WAIT, || site.join("index.html").exists()));
    let base = format!("http://127.0.0.1:{}", env.http_port);
    let mut pages = vec![
        format!("{base}/members/forum/"),
        format!("{base}/members/forum/index.html"),
    ];
    for f in files(&site.join("t")) {
        let name = f.file_name().expect("name").to_string_lossy().to_string();
        pages.push(format!("{base}/members/forum/t/{name}"));
    }
    // Also a path that tries to climb out of the folder.
    pages.push(format!("{base}/members/forum/..%2f..%2fsecret.key"));

    let (mut driver, _profile, client) = browser().await;
    // A non-member sees no page of the archive, only the login form.
    for url in &pages {
        client.goto(url).await.expect("goto");
        let src = client.source().await.expect("source");
        assert!(
            !src.contains("Dossier over leefloon"),
            "{url} shown without login"
        );
        assert!(
            src.contains("name=\"address\""),
            "{url}: not the login form: {src}"
        );
    }
    // The form answers a stranger and a member alike; only the member gets a link.
    let mut answers = Vec::new();
    for who in [&stranger, &member_addr] {
        client
            .goto(&format!("{base}/login/forum"))
            .await
            .expect("login page");
        let input = client
            .find(Locator::Css("input[name=address]"))
            .await
            .expect("input");
        input.send_keys(who).await.expect("type");
        submit(&client).await;
        // The answer page (a new document, not the form we came from).
        let h1 = client
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::XPath("//h1[not(contains(., 'archive'))]"))
            .await
            .expect("an answer page");
        let _ = h1;
        answers.push(
            client
                .find(Locator::Css("body"))
                .await
                .expect("body")
                .text()
                .await
                .expect("text"),
        );
    }
    assert_eq!(
        answers[0], answers[1],
        "the page tells nothing about membership"
    );
    assert!(wait_until(WAIT, || sink.count_for(&member_addr) == 2));
    assert_eq!(sink.count_for(&stranger), 0);
    let link = login_link(sink, &member_addr);
    assert!(link.starts_with(&format!("{base}/login/forum/")), "{link}");

    // The member follows the link: one button, then the archive.
    client.goto(&link).await.expect("open link");
    submit(&client).await;
    let found = client
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::XPath(
            "//*[contains(text(), 'Dossier over leefloon')]",
        ))
        .await;
    let src = client.source().await.expect("source");
    assert!(found.is_ok(), "not in the archive: {src}");
    assert_eq!(
        client.current_url().await.expect("url").as_str(),
        format!("{base}/members/forum/")
    );
    for url in &pages[..pages.len() - 1] {
        client.goto(url).await.expect("goto");
        assert!(
            !client
                .source()
                .await
                .expect("source")
                .contains("name=\"address\""),
            "{url}: still the login form"
        );
    }
    // The cookie cannot be read by scripts.
    let v = client
        .execute("return document.cookie;", vec![])
        .await
        .expect("execute");
    assert_eq!(v, "", "the session cookie is HttpOnly");

    // The link works once: in a fresh browser, it opens nothing.
    client.close().await.expect("close");
    let _ = driver.kill();
    let _ = driver.wait();
    let (mut driver, _profile2, client) = browser().await;
    client.goto(&link).await.expect("open link again");
    let src = client.source().await.expect("source");
    assert!(
        !src.contains("button type=\"submit\""),
        "a used link offers a login: {src}"
    );
    client.goto(&pages[0]).await.expect("goto");
    assert!(client
        .source()
        .await
        .expect("source")
        .contains("name=\"address\""));
    client.close().await.expect("close");
    let _ = driver.kill();
    let _ = driver.wait();
    drop(d);
}
