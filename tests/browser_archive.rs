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
    browser_with(&[], None).await
}

/// [`browser`] with more Chromium arguments (a window size, a colour scheme), and as a
/// phone of `phone` CSS pixels (width, height; ChromeDriver's mobile emulation: a headless
/// window is at least 500 pixels wide).
async fn browser_with(
    extra: &[String],
    phone: Option<(u32, u32)>,
) -> (std::process::Child, tempfile::TempDir, fantoccini::Client) {
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
    let mut args: Vec<String> = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.push(format!("--user-data-dir={}", profile.path().display()));
    args.extend(extra.iter().cloned());
    let mut caps = serde_json::Map::new();
    let mut options = serde_json::json!({ "binary": CHROMIUM, "args": args });
    if let Some((width, height)) = phone {
        options["mobileEmulation"] = serde_json::json!({
            "deviceMetrics": { "width": width, "height": height, "pixelRatio": 3, "touch": true },
            "userAgent": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0 Mobile Safari/537.36",
        });
    }
    caps.insert("goog:chromeOptions".into(), options);
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
    // The cookie cannot be read by scripts. (chromedriver now and then answers a script
    // right after a navigation with an unknown error: ask again, a few times.)
    let mut v = client.execute("return document.cookie;", vec![]).await;
    for _ in 0..5 {
        if v.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        v = client.execute("return document.cookie;", vec![]).await;
    }
    let v = v.expect("execute");
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

// ---- search that answers questions ---------------------------------------------------------

/// A plain-text post, a reply when `parent` is given.
fn mail(from: &str, subject: &str, id: &str, parent: Option<&str>, body: &str) -> Vec<u8> {
    mail_at(
        "Mon, 02 Nov 2026 10:00:00 +0000",
        from,
        subject,
        id,
        parent,
        body,
    )
}

/// [`mail`] with its own Date.
fn mail_at(
    date: &str,
    from: &str,
    subject: &str,
    id: &str,
    parent: Option<&str>,
    body: &str,
) -> Vec<u8> {
    let refs = parent
        .map(|p| format!("In-Reply-To: <{p}>\r\nReferences: <{p}>\r\n"))
        .unwrap_or_default();
    let body = body.replace("\r\n", "\n").replace('\n', "\r\n");
    format!(
        "From: {from}\r\nTo: {LIST}\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\n{refs}\
Date: {date}\r\nMIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

/// A public Dutch list with the web endpoint, open to any poster.
fn public_nl(sink: &Sink) -> TestEnv {
    TestEnv::new(
        sink.port,
        Opts {
            http: true,
            posting: "open",
            language: "nl",
            list_extra: "archive = \"public\"\n".into(),
            ..Opts::default()
        },
    )
}

/// What the page's script found: (total, thread ids shown, status line).
async fn results(client: &fantoccini::Client, url: &str) -> (u64, Vec<u64>, String) {
    client.goto(url).await.expect("goto search");
    client
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#search-app[data-state=done]"))
        .await
        .unwrap_or_else(|e| panic!("{url}: search did not finish: {e}"));
    let v = client
        .execute(
            "return [VB.result.total, VB.result.ids, document.getElementById('search-status').textContent];",
            vec![],
        )
        .await
        .expect("execute");
    let ids = v[1]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_u64()).collect())
        .unwrap_or_default();
    (
        v[0].as_u64().unwrap_or(u64::MAX),
        ids,
        v[2].as_str().unwrap_or("").to_string(),
    )
}

/// The reference implementation's answer for the same query: (total, ids of the page).
fn reference(site: &Path, q: &str, page: usize) -> (u64, Vec<u64>) {
    let r = vraagbaak::archive::search::Searcher::open(site).search(q, page);
    (r.total as u64, r.hits.iter().map(|h| h.id).collect())
}

#[test]
fn search_finds_threads_once_ranked_with_snippets_pages_and_from_disk() {
    if !browser_available("search_finds_threads_once_ranked_with_snippets_pages_and_from_disk") {
        return;
    }
    let _one = ONE_BROWSER.lock().unwrap_or_else(|p| p.into_inner());
    let sink = Sink::start();
    runtime().block_on(search_answers_questions(&sink));
}

async fn search_answers_questions(sink: &Sink) {
    let mut env = public_nl(sink);
    env.add_members(&[member(1), member(2)]);
    let d = Daemon::start(&mut env);
    let an = "An Peeters <an.peeters@ocmw-gent.example>";
    let kris = "Kris Wouters <kris.wouters@caw.example>";
    let q1 = "Leefloon voor een cliënt in schuldbemiddeling";
    let mut posts: Vec<(&str, Vec<u8>)> = vec![
        (
            "an.peeters@ocmw-gent.example",
            mail(
                an,
                q1,
                "q1@ocmw-gent.example",
                None,
                "Heeft iemand ervaring met een aanvraag leefloon voor een cliënt in collectieve \
schuldenregeling?\n\nMail me op an.peeters@ocmw-gent.example.\n-- \nAn Peeters\nHandtekeningwoord OCMW Gent",
            ),
        ),
        (
            "kris.wouters@caw.example",
            mail(
                kris,
                &format!("Re: {q1}"),
                "r1@caw.example",
                Some("q1@ocmw-gent.example"),
                "Ja, de schuldbemiddelaar moet akkoord gaan.\n\nOp 2 nov. 2026 schreef An Peeters \
<an.peeters@ocmw-gent.example>:\n> Heeft iemand ervaring met citaatwoord?\n",
            ),
        ),
        // Outlook: no References, joins by subject.
        (
            "kris.wouters@caw.example",
            mail(
                kris,
                &format!("Antw: {q1}"),
                "r2@caw.example",
                None,
                "Wij vragen eerst een budgetbegeleiding aan.",
            ),
        ),
        (
            "an.peeters@ocmw-gent.example",
            mail(
                an,
                "Client zonder verblijfsvergunning",
                "q2@ocmw-gent.example",
                None,
                "Mijn client heeft geen papieren en een kind; kan hij dringende medische hulp krijgen?",
            ),
        ),
        (
            "an.peeters@ocmw-gent.example",
            mail(
                an,
                "Huurwaarborg via het OCMW",
                "q3@ocmw-gent.example",
                None,
                "Wie schiet een huurwaarborg voor?",
            ),
        ),
        (
            "kris.wouters@caw.example",
            mail(
                kris,
                "RE: Huurwaarborg via het OCMW",
                "r3@caw.example",
                Some("q3@ocmw-gent.example"),
                "Het OCMW, na een sociaal onderzoek.",
            ),
        ),
    ];
    let fillers: Vec<Vec<u8>> = (1..=22)
        .map(|i| {
            mail(
                kris,
                &if i <= 3 {
                    format!("Vraag {i} over de huurwaarborg #gezin")
                } else {
                    format!("Vraag {i} over de huurwaarborg")
                },
                &format!("f{i}@caw.example"),
                None,
                &format!("Dit is vraag nummer {i} over een huurwaarborg voor een gezin."),
            )
        })
        .collect();
    for f in &fillers {
        posts.push(("kris.wouters@caw.example", f.clone()));
    }
    for (from, raw) in &posts {
        assert_eq!(post(d.port, from, LIST, raw), 250);
    }
    let site = env.data_dir.join("archive/forum");
    let meta = || std::fs::read_to_string(site.join("search/meta.js")).unwrap_or_default();
    assert!(
        wait_until(WAIT, || meta().contains("\"n\":25,")),
        "25 threads indexed: {}",
        meta()
    );
    // Answers counted per thread, whatever order the updates ran in.
    let q1_id = reference(&site, "schuldenregeling", 1).1[0];
    let rec = |id: u64| {
        std::fs::read_to_string(site.join(format!("search/x/{id}.js"))).unwrap_or_default()
    };
    assert!(
        wait_until(WAIT, || rec(q1_id).contains("\"a\":2,")),
        "{}",
        rec(q1_id)
    );

    // No address, no name of an author, nothing quoted and no signature in the index.
    for f in files(&site.join("search"))
        .into_iter()
        .chain(files(&site.join("search/x")))
    {
        if f.is_dir() {
            continue;
        }
        let text = std::fs::read_to_string(&f).expect("read").to_lowercase();
        for bad in [
            "@",
            "peeters",
            "wouters",
            "citaatwoord",
            "handtekeningwoord",
            "schreef",
        ] {
            assert!(!text.contains(bad), "{bad} in {}", f.display());
        }
    }
    for q in ["citaatwoord", "handtekeningwoord", "peeters", "kris"] {
        assert_eq!(reference(&site, q, 1).0, 0, "{q}");
    }

    let (mut driver, _profile, client) = browser().await;
    let base = format!("http://127.0.0.1:{}/archive/forum/", env.http_port);

    // A word of the question: that thread once, its subject without Re:/Antw:, its answer
    // count, a snippet with the word highlighted, a link to the thread page.
    let (total, ids, status) =
        results(&client, &format!("{base}search.html?q=schuldenregeling")).await;
    assert_eq!((total, ids.clone()), (1, vec![q1_id]), "{status}");
    assert_eq!(status, "1 resultaat voor 'schuldenregeling'");
    let li = client
        .find(Locator::Css("#search-results li"))
        .await
        .expect("a result");
    let a = li.find(Locator::Css("a")).await.expect("link");
    assert_eq!(a.text().await.expect("text"), q1);
    let href = a.attr("href").await.expect("href").unwrap_or_default();
    assert_eq!(href, format!("t/{q1_id}.html"));
    let answers = li.find(Locator::Css(".answers")).await.expect("answers");
    assert_eq!(answers.text().await.expect("text"), "2 antwoorden");
    let marks = li
        .find_all(Locator::Css(".snippet mark"))
        .await
        .expect("marks");
    assert_eq!(marks.len(), 1);
    assert_eq!(marks[0].text().await.expect("text"), "schuldenregeling");
    let snip = li
        .find(Locator::Css(".snippet"))
        .await
        .expect("snippet")
        .text()
        .await
        .expect("text");
    let want: String = vraagbaak::archive::search::Searcher::open(&site)
        .search("schuldenregeling", 1)
        .hits[0]
        .snippet
        .iter()
        .map(|(t, _)| t.as_str())
        .collect();
    assert_eq!(snip, want, "the browser's snippet is the reference's");
    assert!(
        snip.contains("cliënt in collectieve schuldenregeling?"),
        "{snip}"
    );
    a.click().await.expect("open the thread");
    client
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::XPath(
            "//*[contains(text(), 'schuldbemiddelaar moet akkoord')]",
        ))
        .await
        .expect("the thread page with the answer");

    // cliënt and client: the same threads in the same order; the open question says so.
    let with = results(&client, &format!("{base}search.html?q=cli%C3%ABnt")).await;
    let without = results(&client, &format!("{base}search.html?q=client")).await;
    assert_eq!((with.0, &with.1), (without.0, &without.1));
    assert_eq!(with.0, 2, "{}", with.2);
    assert_eq!(without.2, "2 resultaten voor 'client'");
    assert_eq!(with.2, "2 resultaten voor 'cliënt'");
    assert_eq!((with.0, with.1.clone()), reference(&site, "cliënt", 1));
    let states: Vec<String> = {
        let mut v = Vec::new();
        for e in client
            .find_all(Locator::Css("#search-results .answers"))
            .await
            .expect("answers")
        {
            v.push(e.text().await.expect("text"));
        }
        v
    };
    assert!(
        states.contains(&"Nog geen antwoord".to_string()),
        "{states:?}"
    );
    assert!(states.contains(&"2 antwoorden".to_string()), "{states:?}");
    let (_, ids, _) = results(&client, &format!("{base}search.html?q=ocmw")).await;
    assert_eq!(ids.len(), 1);
    let one = client
        .find(Locator::Css("#search-results .answers"))
        .await
        .expect("answers");
    assert_eq!(one.text().await.expect("text"), "1 antwoord");

    // één folds to een, a stopword: not every thread, none.
    let (total, ids, status) =
        results(&client, &format!("{base}search.html?q=%C3%A9%C3%A9n")).await;
    assert_eq!((total, ids.len()), (0, 0));
    assert!(status.starts_with("0 resultaten voor 'één'"), "{status}");
    assert_eq!(reference(&site, "een", 1).0, 0);

    // A tag filters: `#gezin` alone lists its three questions; with a word, only those of
    // them with it; the tag page's form searches within its tag.
    let (total, ids, status) = results(&client, &format!("{base}search.html?q=%23gezin")).await;
    assert_eq!(total, 3, "{status}");
    assert_eq!((total, ids), reference(&site, "#gezin", 1));
    assert_eq!(
        reference(&site, "gezin", 1).0,
        22,
        "the word is in every filler"
    );
    let (total, ids, status) =
        results(&client, &format!("{base}search.html?q=gezin&tag=gezin")).await;
    assert_eq!(total, 3, "{status}");
    assert_eq!((total, ids), reference(&site, "#gezin gezin", 1));
    assert_eq!(
        results(&client, &format!("{base}search.html?q=%23onbekend+gezin"))
            .await
            .0,
        0
    );
    client
        .goto(&format!("{base}tags/gezin.html"))
        .await
        .expect("the tag page");
    client
        .find(Locator::Css("#q-tag"))
        .await
        .expect("the tag page's search field")
        .send_keys("vraag")
        .await
        .expect("type");
    client
        .find(Locator::Css("form.in-tag button[type=submit]"))
        .await
        .expect("button")
        .click()
        .await
        .expect("search within the tag");
    client
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#search-app[data-state=done]"))
        .await
        .expect("results within the tag");
    let v = client
        .execute("return VB.result.total;", vec![])
        .await
        .expect("execute");
    assert_eq!(v.as_u64(), Some(3), "within #gezin");

    // Paging: 23 threads on huurwaarborg, 20 and 3, none twice; the same as the reference.
    let (total, page1, status) =
        results(&client, &format!("{base}search.html?q=huurwaarborg")).await;
    assert_eq!(total, 23, "{status}");
    assert_eq!(status, "23 resultaten voor 'huurwaarborg'");
    assert_eq!(page1.len(), 20);
    assert_eq!((total, page1.clone()), reference(&site, "huurwaarborg", 1));
    // The thread with the word in its subject and an answer first.
    let q3 = reference(&site, "huurwaarborg ocmw", 1).1;
    assert_eq!(page1[0], q3[0]);
    let next = client
        .find(Locator::Css("#search-pager a[rel=next]"))
        .await
        .expect("next");
    let next_href = next.attr("href").await.expect("href").unwrap_or_default();
    next.click().await.expect("next page");
    client
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#search-app[data-state=done]"))
        .await
        .expect("page 2");
    let v = client
        .execute(
            "return [VB.result.total, VB.result.ids, VB.result.page];",
            vec![],
        )
        .await
        .expect("execute");
    let page2: Vec<u64> = v[1]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_u64())
        .collect();
    assert_eq!(v[2], 2, "{next_href}");
    assert_eq!(page2.len(), 3);
    assert_eq!((23, page2.clone()), reference(&site, "huurwaarborg", 2));
    let all: std::collections::BTreeSet<u64> = page1.iter().chain(&page2).copied().collect();
    assert_eq!(all.len(), 23, "a thread shown twice");
    client
        .find(Locator::Css("#search-pager a[rel=prev]"))
        .await
        .expect("a link back");

    // From disk: the same results, and the links and paging work there too.
    let file_base = format!("file://{}/", site.display());
    let from_disk = results(&client, &format!("{file_base}search.html?q=cli%C3%ABnt")).await;
    assert_eq!(
        (from_disk.0, &from_disk.1),
        (with.0, &with.1),
        "{}",
        from_disk.2
    );
    let (_, disk1, _) = results(&client, &format!("{file_base}search.html?q=huurwaarborg")).await;
    assert_eq!(disk1, page1);
    client
        .find(Locator::Css("#search-pager a[rel=next]"))
        .await
        .expect("next")
        .click()
        .await
        .expect("click");
    client
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#search-app[data-state=done]"))
        .await
        .expect("page 2 from disk");
    let v = client
        .execute("return VB.result.ids;", vec![])
        .await
        .expect("execute");
    let disk2: Vec<u64> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_u64())
        .collect();
    assert_eq!(disk2, page2);
    client
        .find(Locator::Css("#search-results li a"))
        .await
        .expect("a result")
        .click()
        .await
        .expect("open");
    client
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::XPath(
            "//*[contains(text(), 'huurwaarborg voor een gezin')]",
        ))
        .await
        .expect("a thread page from disk");

    client.close().await.expect("close");
    let _ = driver.kill();
    let _ = driver.wait();

    // The index the posts built one by one is the one a rebuild writes.
    let snapshot = |dir: &Path| -> Vec<(std::path::PathBuf, Vec<u8>)> {
        files(dir)
            .into_iter()
            .chain(files(&dir.join("x")))
            .filter(|f| f.is_file())
            .map(|f| {
                let b = std::fs::read(&f).expect("read");
                (f, b)
            })
            .collect()
    };
    let before = snapshot(&site.join("search"));
    let out = env.cli(&["archive", "rebuild", "forum"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(
        snapshot(&site.join("search")),
        before,
        "incremental and rebuilt index differ"
    );
    drop(d);
}

/// axe-core, installed by `npm ci --prefix tests/browser` (see `.ci/run`).
const AXE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/browser/node_modules/axe-core/axe.min.js"
);

/// Where the screenshots go: `target/screenshots/`, or `$VRAAGBAAK_SCREENSHOTS`.
fn screenshot_dir() -> std::path::PathBuf {
    std::env::var_os("VRAAGBAAK_SCREENSHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots"))
}

/// A long Outlook reply as Outlook sends it: hard-wrapped text, a closing without `-- `
/// (greeting, name, function, organisation, phone, address), a confidentiality disclaimer,
/// and the whole question below "Van: ... Verzonden: ...".
fn outlook_reply() -> Vec<u8> {
    let body = "\
Dag An,

Wij hadden vorig jaar een gelijkaardig dossier: een cliënt met een leefloon en
een lopende collectieve schuldenregeling, die een huurwaarborg nodig had voor
een sociale woning. De schuldbemiddelaar moest akkoord gaan, maar dat ging
vlot toen we een kort verslag van de sociale toestand meestuurden.

Wat bij ons werkte:
- eerst contact met de schuldbemiddelaar (telefonisch, dat gaat sneller);
- het verslag met de huurprijs en het budgetplan;
- de waarborg via het OCMW voorschieten, terug te betalen in maandelijkse
  schijven die in het budgetplan passen.

Het comité vroeg wel een bewijs dat de huurwaarborg geblokkeerd op een
rekening staat. Laat gerust weten als je het model van ons verslag wil.

Met vriendelijke groeten,

Kris Wouters
Maatschappelijk werker
OCMW Antwerpen - Sociale dienst
T 03 338 12 34
Lange Gasthuisstraat 33, 2000 Antwerpen

Dit bericht is vertrouwelijk en uitsluitend bestemd voor de geadresseerde.
Indien u dit bericht per vergissing ontving, verwijder het dan en breng de
afzender op de hoogte.

Van: An Peeters
Verzonden: dinsdag 7 juli 2026 09:12
Aan: forum
Onderwerp: Huurwaarborg bij collectieve schuldenregeling #huurwaarborg

Dag collega's,

Heeft iemand ervaring met een huurwaarborg voor een cliënt in collectieve
schuldenregeling? Hoe pakken jullie dat aan?

Groetjes,
An
";
    let body = body.replace('\n', "\r\n");
    format!(
        "From: Kris Wouters <kris.wouters@ocmw-antwerpen.be>\r\nTo: {LIST}\r\n\
Subject: RE: Huurwaarborg bij collectieve schuldenregeling #huurwaarborg\r\n\
Message-ID: <outlook-1@ocmw-antwerpen.be>\r\nIn-Reply-To: <vraag-1@ocmw-gent.be>\r\n\
References: <vraag-1@ocmw-gent.be>\r\nDate: Tue, 07 Jul 2026 11:40:00 +0200\r\nMIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{body}"
    )
    .into_bytes()
}

#[test]
fn archive_reads_on_a_phone_and_a_desktop_light_and_dark_without_accessibility_violations() {
    let name =
        "archive_reads_on_a_phone_and_a_desktop_light_and_dark_without_accessibility_violations";
    if !browser_available(name) {
        return;
    }
    if !Path::new(AXE).exists() {
        // The version locked in tests/browser, from the npm registry, when npm is here.
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");
        let _ = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix", dir])
            .stdout(Stdio::null())
            .status();
    }
    if !Path::new(AXE).exists() {
        skip(
            name,
            &format!("{AXE} not installed (npm ci --prefix tests/browser; .ci/run does)"),
        );
        return;
    }
    let _one = ONE_BROWSER.lock().unwrap_or_else(|p| p.into_inner());
    let sink = Sink::start();
    runtime().block_on(reading(&sink));
}

/// The axe-core violations of the page open in `client`, as "rule: target" lines.
async fn axe_violations(client: &fantoccini::Client, axe: &str) -> Vec<String> {
    client.execute(axe, vec![]).await.expect("load axe-core");
    let v = client
        .execute_async(
            "var done = arguments[arguments.length - 1];\
             axe.run(document, { resultTypes: ['violations'] }).then(function (r) {\
               done(r.violations.map(function (v) {\
                 return v.id + ': ' + v.nodes.map(function (n) { return n.target.join(' '); }).join(', ');\
               }));\
             }, function (e) { done(['axe failed: ' + e]); });",
            vec![],
        )
        .await
        .expect("axe.run");
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| x.as_str().unwrap_or("?").to_string())
                .collect()
        })
        .unwrap_or_else(|| vec![format!("axe returned {v}")])
}

/// 7 July 2026 at `time` Brussels summer time, as a Date field's value.
fn on_7_july(time: &str) -> String {
    format!("Tue, 07 Jul 2026 {time}:00 +0200")
}

async fn reading(sink: &Sink) {
    let mut env = public_nl(sink);
    let d = Daemon::start(&mut env);
    let question = mail_at(
        &on_7_july("09:12"),
        "An Peeters <an@ocmw-gent.be>",
        "Huurwaarborg bij collectieve schuldenregeling #huurwaarborg",
        "vraag-1@ocmw-gent.be",
        None,
        "Dag collega's,\n\nHeeft iemand ervaring met een huurwaarborg voor een cliënt in collectieve\nschuldenregeling? Hoe pakken jullie dat aan?\n\nGroetjes,\nAn",
    );
    assert_eq!(post(d.port, "an@ocmw-gent.be", LIST, &question), 250);
    assert_eq!(
        post(
            d.port,
            "kris.wouters@ocmw-antwerpen.be",
            LIST,
            &outlook_reply()
        ),
        250
    );
    let thanks = mail_at(
        &on_7_july("13:05"),
        "An Peeters <an@ocmw-gent.be>",
        "Re: Huurwaarborg bij collectieve schuldenregeling [opgelost]",
        "dank-1@ocmw-gent.be",
        Some("outlook-1@ocmw-antwerpen.be"),
        "Dank je Kris, dat helpt.\n\n> Wat bij ons werkte:\n> - eerst contact met de schuldbemiddelaar",
    );
    assert_eq!(post(d.port, "an@ocmw-gent.be", LIST, &thanks), 250);
    let other = mail_at(
        &on_7_july("16:30"),
        "Bart <bart@ocmw-leuven.be>",
        "Huurwaarborg en leefloon: wie betaalt?",
        "vraag-2@ocmw-leuven.be",
        None,
        "Wie betaalt de huurwaarborg als de cliënt een leefloon krijgt?",
    );
    assert_eq!(post(d.port, "bart@ocmw-leuven.be", LIST, &other), 250);
    let site = env.data_dir.join("archive/forum");
    assert!(
        wait_until(WAIT, || std::fs::read_to_string(site.join("t/1.html"))
            .is_ok_and(
                |p| p.matches("<article").count() == 3 && p.contains("rel=\"next\"")
            )),
        "thread not archived:\n{}",
        d.stderr()
    );
    let base = format!("http://127.0.0.1:{}/archive/forum/", env.http_port);
    let axe = std::fs::read_to_string(AXE).expect("read axe-core");
    let shots = screenshot_dir();
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    let pages = [
        ("front", "index.html".to_string()),
        ("month", "2026-07/index.html".to_string()),
        ("thread", "t/1.html".to_string()),
        ("search", "search.html?q=huurwaarborg".to_string()),
        ("tag", "tags/huurwaarborg.html".to_string()),
        ("figures", "stats.html".to_string()),
    ];
    for (scheme, flags) in [
        (
            "light",
            vec!["--blink-settings=preferredColorScheme=1".to_string()],
        ),
        (
            "dark",
            vec![
                "--force-dark-mode".to_string(),
                "--blink-settings=preferredColorScheme=0".to_string(),
            ],
        ),
    ] {
        for (w, h) in [(390u32, 844u32), (1366, 900)] {
            let mut args = flags.clone();
            let phone = (w < 500).then_some((w, h));
            if phone.is_none() {
                args.push(format!("--window-size={w},{h}"));
            }
            let (mut driver, _profile, client) = browser_with(&args, phone).await;
            for (what, rel) in &pages {
                let url = format!("{base}{rel}");
                client.goto(&url).await.expect("goto");
                if *what == "search" {
                    client
                        .wait()
                        .at_most(Duration::from_secs(20))
                        .for_element(Locator::Css("#search-app[data-state=done]"))
                        .await
                        .unwrap_or_else(|e| panic!("{url}: search did not finish: {e}"));
                    let shown = client
                        .find(Locator::Css("#search-results"))
                        .await
                        .expect("results")
                        .text()
                        .await
                        .expect("text");
                    // Local days in the list's language, singular and plural right.
                    assert!(
                        shown.contains("Opgelost · 2 antwoorden · 7 jul. 2026")
                            && shown.contains("Nog geen antwoord · 7 jul. 2026"),
                        "{shown}"
                    );
                }
                let v = client
                    .execute(
                        "return [window.innerWidth, document.documentElement.scrollWidth, \
                         matchMedia('(prefers-color-scheme: dark)').matches, \
                         getComputedStyle(document.body).backgroundColor];",
                        vec![],
                    )
                    .await
                    .expect("execute");
                let (inner, scroll) = (v[0].as_u64().unwrap_or(0), v[1].as_u64().unwrap_or(0));
                assert_eq!(inner, u64::from(w), "{url}: the viewport is not {w} wide");
                // Nothing wider than the screen: no sideways scrolling on a phone.
                assert!(scroll <= inner, "{url} at {w}px: {scroll}px wide");
                assert_eq!(
                    v[2].as_bool(),
                    Some(scheme == "dark"),
                    "{url}: colour scheme not {scheme}"
                );
                let violations = axe_violations(&client, &axe).await;
                assert!(
                    violations.is_empty(),
                    "{url} ({scheme}, {w}x{h}): axe-core: {violations:#?}"
                );
                if matches!(*what, "thread" | "search") {
                    let png = client.screenshot().await.expect("screenshot");
                    let file = shots.join(format!("{what}-{w}x{h}-{scheme}.png"));
                    std::fs::write(&file, png).expect("write screenshot");
                }
            }
            // The Outlook reply itself, scrolled into view on the thread page.
            client.goto(&format!("{base}t/1.html")).await.expect("goto");
            client
                .execute(
                    "document.querySelectorAll('article.message')[1].scrollIntoView();",
                    vec![],
                )
                .await
                .expect("scroll");
            let png = client.screenshot().await.expect("screenshot");
            std::fs::write(shots.join(format!("reply-{w}x{h}-{scheme}.png")), png)
                .expect("write screenshot");
            client.close().await.expect("close");
            let _ = driver.kill();
            let _ = driver.wait();
        }
    }
    eprintln!("screenshots in {}", shots.display());
}
