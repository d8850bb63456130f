//! End to end: posts accepted by the real daemon are archived, threaded and rendered
//! incrementally; `archive import-mbox`, `rebuild` and `threads` on the command line; no
//! address and nothing executable anywhere in the generated archive.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

fn public() -> Opts {
    Opts {
        posting: "open",
        list_extra: "archive = \"public\"\n".into(),
        ..Opts::default()
    }
}

fn site(env: &TestEnv) -> PathBuf {
    env.data_dir.join("archive/forum")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The e-mail addresses in a text: `local@domain.tld` with an alphanumeric on each side of
/// the `@` and a dot in the domain. Header lines that carry Message-IDs (which look like
/// addresses but name messages; the archive makes them opaque) are skipped in .eml and
/// .mbox files.
fn addresses(text: &str, mail_file: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_ids = false;
    for line in text.lines() {
        if mail_file {
            let lower = line.to_ascii_lowercase();
            if lower.starts_with("message-id:")
                || lower.starts_with("resent-message-id:")
                || lower.starts_with("in-reply-to:")
                || lower.starts_with("references:")
            {
                in_ids = true;
                continue;
            }
            if in_ids && (line.starts_with(' ') || line.starts_with('\t')) {
                continue;
            }
            in_ids = false;
        }
        let b = line.as_bytes();
        for (i, &c) in b.iter().enumerate() {
            if c != b'@' || i == 0 || i + 1 >= b.len() {
                continue;
            }
            let local_ok = |ch: u8| ch.is_ascii_alphanumeric() || b"._%+-".contains(&ch);
            let dom_ok = |ch: u8| ch.is_ascii_alphanumeric() || b".-".contains(&ch);
            if !b[i - 1].is_ascii_alphanumeric() || !b[i + 1].is_ascii_alphanumeric() {
                continue;
            }
            let mut s = i;
            while s > 0 && local_ok(b[s - 1]) {
                s -= 1;
            }
            let mut e = i + 1;
            while e < b.len() && dom_ok(b[e]) {
                e += 1;
            }
            let domain = line[i + 1..e].trim_end_matches('.');
            if domain.contains('.') && domain.rsplit('.').next().is_some_and(|t| t.len() >= 2) {
                out.push(line[s..e].to_string());
            }
        }
    }
    out
}

/// Fails with the file and the address if any address is in the archive.
fn assert_no_addresses(dir: &Path) {
    let mut found = BTreeMap::new();
    for f in files(dir) {
        let bytes = std::fs::read(&f).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        let name = f.to_string_lossy();
        let mail = name.ends_with(".eml") || name.ends_with(".mbox");
        let a = addresses(&text, mail);
        if !a.is_empty() {
            found.insert(f.display().to_string(), a);
        }
    }
    assert!(found.is_empty(), "addresses in the archive: {found:#?}");
}

/// Fails if any HTML page of the archive carries something a browser would run.
fn assert_nothing_executable(dir: &Path) {
    for f in files(dir) {
        let name = f.to_string_lossy().to_string();
        if !name.ends_with(".html") {
            continue;
        }
        let html = read(&f).to_ascii_lowercase();
        // Our own script tag (search page) is the only one allowed.
        let scripts = html.matches("<script").count();
        let ours = html
            .matches("<script src=\"../static/search.js\"></script>")
            .count()
            + html
                .matches("<script src=\"static/search.js\"></script>")
                .count();
        assert_eq!(scripts, ours, "{name}: a <script> from a mail");
        // Text from mails is escaped, so markup is only in tags: look at every tag.
        for tag in tags(&html) {
            if tag.starts_with("</") {
                continue;
            }
            let tag_name: String = tag
                .trim_start_matches(['<', '/'])
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            assert!(
                ![
                    "iframe", "object", "embed", "svg", "math", "img", "video", "audio", "style",
                    "base", "frame", "frameset", "applet", "picture", "source",
                ]
                .contains(&tag_name.as_str()),
                "{name}: <{tag_name}> in {tag}"
            );
            // Our own search form (GET to our own search page) is the only form.
            if tag_name == "form" || tag_name == "input" {
                assert!(
                    tag.contains("class=\"search\"")
                        && tag.contains("search.html\" method=\"get\"")
                        || tag.contains("type=\"search\""),
                    "{name}: {tag}"
                );
                continue;
            }
            if tag_name == "link" {
                assert!(
                    tag.contains("href=\"../static/")
                        || tag.contains("href=\"static/")
                        || tag.contains("rel=\"alternate\""),
                    "{name}: {tag}"
                );
            }
            if tag_name == "meta" {
                assert!(!tag.contains("http-equiv=\"refresh"), "{name}: {tag}");
            }
            for bad in [
                "javascript:",
                "vbscript:",
                "data:",
                "expression(",
                "srcdoc",
                "style=",
                "url(",
            ] {
                assert!(!tag.contains(bad), "{name}: {bad:?} in {tag}");
            }
            // No event handler attribute: ` on...=` inside a tag.
            let b = tag.as_bytes();
            for i in 0..b.len().saturating_sub(3) {
                if b[i].is_ascii_whitespace() && b[i + 1] == b'o' && b[i + 2] == b'n' {
                    let rest: String = tag[i + 3..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphabetic())
                        .collect();
                    let after = tag[i + 3 + rest.len()..].trim_start();
                    assert!(
                        rest.is_empty() || !after.starts_with('='),
                        "{name}: event handler in {tag}"
                    );
                }
            }
            // Links go to http(s), to the archive itself (relative) or to an anchor.
            if let Some(p) = tag.find("href=\"") {
                let v = &tag[p + 6..];
                assert!(
                    v.starts_with("http://")
                        || v.starts_with("https://")
                        || v.starts_with('#')
                        || v.starts_with("../")
                        || !v.contains(':'),
                    "{name}: link {tag}"
                );
            }
        }
    }
}

/// The tags (`<...>`) of an HTML text.
fn tags(html: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(s) = rest.find('<') {
        let after = &rest[s..];
        let e = after.find('>').map(|e| e + 1).unwrap_or(after.len());
        out.push(&after[..e]);
        rest = &after[e..];
    }
    out
}

fn mtime(p: &Path) -> SystemTime {
    std::fs::metadata(p)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

fn raw(from: &str, subject: &str, id: &str, extra: &str, body: &str) -> Vec<u8> {
    dated(
        from,
        subject,
        id,
        "Mon, 02 Nov 2026 10:00:00 +0100",
        extra,
        body,
    )
}

fn threads_json(env: &TestEnv) -> Vec<serde_json::Value> {
    let out = env.cli(&["archive", "threads", "forum", "--json"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

#[test]
fn posts_are_archived_as_threads_and_only_touched_pages_change() {
    let sink = Sink::start();
    let mut env = TestEnv::new(sink.port, public());
    env.add_members(&[member(1), member(2)]);
    let d = Daemon::start(&mut env);
    let dir = site(&env);
    let an = "\"An Peeters\" <an.peeters@ocmw-gent.be>";
    let q = raw(
        an,
        "Leefloon voor een cliënt met schulden",
        "q1@ocmw-gent.be",
        "",
        "Dag collega's,\n\nHeeft iemand ervaring met een cliënt die ... Mail me op an.peeters@ocmw-gent.be.\n\n-- \nAn Peeters\nOCMW Gent",
    );
    assert_eq!(post(d.port, "an.peeters@ocmw-gent.be", LIST, &q), 250);
    let other = raw(
        "Bart <bart@ocmw-leuven.be>",
        "Vraag over huurwaarborg",
        "q2@ocmw-leuven.be",
        "",
        "Wie kent de regels voor de huurwaarborg?",
    );
    assert_eq!(post(d.port, "bart@ocmw-leuven.be", LIST, &other), 250);
    assert!(
        wait_until(WAIT, || dir.join("t/2.html").exists()
            && dir.join("t/1.html").exists()),
        "thread pages not written:\n{}",
        d.stderr()
    );
    let b_page = dir.join("t/2.html");
    let b_before = (mtime(&b_page), read(&b_page));
    std::thread::sleep(Duration::from_millis(1100));

    // A reply with In-Reply-To, and an Outlook reply without any reference.
    let r1 = raw(
        "Carla <carla@ocmw-brugge.be>",
        "Re: [forum] Leefloon voor een cliënt met schulden",
        "r1@ocmw-brugge.be",
        "In-Reply-To: <q1@ocmw-gent.be>\r\nReferences: <q1@ocmw-gent.be>\r\n",
        "> Heeft iemand ervaring\n\nJa, contacteer de schuldbemiddeling.",
    );
    assert_eq!(post(d.port, "carla@ocmw-brugge.be", LIST, &r1), 250);
    let r2 = raw(
        "Dirk <dirk@ocmw-aalst.be>",
        "AW: [forum] Leefloon voor een cliënt met schulden",
        "r2@ocmw-aalst.be",
        "",
        "Bij ons gaat dat via het sociaal huis.",
    );
    assert_eq!(post(d.port, "dirk@ocmw-aalst.be", LIST, &r2), 250);
    let a_page = dir.join("t/1.html");
    assert!(
        wait_until(WAIT, || read(&a_page).matches("<article").count() == 3),
        "thread page: {}",
        read(&a_page)
    );
    let page = read(&a_page);
    for anchor in ["id=\"m1\"", "id=\"m3\"", "id=\"m4\""] {
        assert!(page.contains(anchor), "{anchor} in {page}");
    }
    assert!(page.contains("An Peeters") && page.contains("Carla") && page.contains("Dirk"));
    assert!(page.contains("schuldbemiddeling"));
    // The thread page of B was not rewritten; the front page and the month were.
    assert_eq!(
        (mtime(&b_page), read(&b_page)),
        b_before,
        "an untouched thread page changed"
    );
    let month = dir.join("2026-11/index.html");
    assert!(
        wait_until(WAIT, || read(&month).contains("2 threads, 4 messages")),
        "{}",
        read(&month)
    );
    assert!(
        read(&month).contains("href=\"../t/1.html\"")
            && read(&month).contains("href=\"../t/2.html\"")
    );
    assert!(wait_until(WAIT, || read(&dir.join("index.html"))
        .contains("Leefloon voor een cliënt met schulden")));
    // One render pass writes these files one after the other: wait for each.
    let atom = || read(&dir.join("atom.xml"));
    assert!(
        wait_until(WAIT, || atom().contains("<feed")
            && atom().matches("<entry>").count() == 2),
        "{}",
        atom()
    );
    let mbox_count = || {
        let mbox = read(&dir.join("2026-11/2026-11.mbox"));
        mbox.matches("\nFrom vraagbaak ").count() + usize::from(mbox.starts_with("From vraagbaak "))
    };
    assert!(
        wait_until(WAIT, || mbox_count() == 4),
        "{} messages in the mbox",
        mbox_count()
    );
    assert!(dir.join("m/1.eml").exists() && dir.join("search/t-le.js").exists());

    // The tree: the In-Reply-To reply under the question, the Outlook reply too (subject
    // fallback), the other question alone.
    let v = threads_json(&env);
    let parent = |id: &str| {
        v.iter()
            .find(|m| m["message_id"] == id)
            .map(|m| m["parent"].clone())
            .unwrap_or_else(|| panic!("{id} missing in {v:?}"))
    };
    assert_eq!(parent("q1@ocmw-gent.be"), serde_json::Value::Null);
    assert_eq!(parent("r1@ocmw-brugge.be"), "q1@ocmw-gent.be");
    assert_eq!(parent("r2@ocmw-aalst.be"), "q1@ocmw-gent.be");
    assert_eq!(parent("q2@ocmw-leuven.be"), serde_json::Value::Null);

    assert_no_addresses(&dir);
    assert_nothing_executable(&dir);
    // Served by the web endpoint? Not configured here; the files are the product.
    drop(d);
}

/// An mbox of the given messages.
fn mbox_of(msgs: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in msgs {
        out.extend_from_slice(b"From someone Mon Nov  2 10:00:00 2026\n");
        out.extend_from_slice(
            &String::from_utf8_lossy(m)
                .replace("\r\n", "\n")
                .into_bytes(),
        );
        out.extend_from_slice(b"\n");
    }
    out
}

#[test]
fn import_mbox_then_rebuild_gives_the_same_archive() {
    let env = TestEnv::new(free_port(), public());
    let msgs = vec![
        raw("A <a@x.example>", "Vraag", "i1@x.example", "", "Eerste vraag over budgetbeheer."),
        raw("B <b@x.example>", "Re: Vraag", "i2@x.example", "In-Reply-To: <i1@x.example>\r\n", "Antwoord."),
        raw("B <b@x.example>", "Re: Vraag", "i2@x.example", "In-Reply-To: <i1@x.example>\r\n", "Antwoord."),
        b"From: C <c@x.example>\r\nSubject: zonder id\r\nDate: Tue, 03 Nov 2026 10:00:00 +0000\r\n\r\nGeen Message-ID.\r\n".to_vec(),
        b"\r\n".to_vec(),
    ];
    let file = env.path().join("old.mbox");
    std::fs::write(&file, mbox_of(&msgs)).unwrap();
    let out = env.cli(&["archive", "import-mbox", "forum", file.to_str().unwrap()]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.contains("read 5 messages, imported 3"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("already in the archive"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("empty message"), "{}", out.stdout);
    assert!(
        out.stdout.contains("1 without a Message-ID were given one"),
        "{}",
        out.stdout
    );
    let dir = site(&env);
    assert!(read(&dir.join("t/1.html")).contains("budgetbeheer"));
    // Importing again adds nothing.
    let again = env.cli(&["archive", "import-mbox", "forum", file.to_str().unwrap()]);
    assert!(again.stdout.contains("imported 0"), "{again:?}");

    let before = threads_json(&env);
    let snapshot: BTreeMap<PathBuf, Vec<u8>> = files(&dir)
        .into_iter()
        .map(|f| (f.clone(), std::fs::read(&f).unwrap()))
        .collect();
    // Recomputing the thread index from the posts gives the same threads, ids and files.
    let out = env.cli(&["archive", "rebuild", "forum", "--reindex"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.contains("0 files written"),
        "a rebuild of an unchanged archive wrote files: {}",
        out.stdout
    );
    assert_eq!(threads_json(&env), before);
    let after: BTreeMap<PathBuf, Vec<u8>> = files(&dir)
        .into_iter()
        .map(|f| (f.clone(), std::fs::read(&f).unwrap()))
        .collect();
    assert_eq!(snapshot, after);
    // A deleted page comes back.
    std::fs::remove_file(dir.join("index.html")).unwrap();
    let out = env.cli(&["archive", "rebuild"]);
    assert!(out.stdout.contains("1 files written"), "{out:?}");
    assert_no_addresses(&dir);
}

#[test]
fn private_archives_are_written_outside_the_public_root() {
    let env = TestEnv::new(free_port(), Opts::default());
    let file = env.path().join("one.mbox");
    std::fs::write(
        &file,
        mbox_of(&[raw(
            "A <a@x.example>",
            "Cliëntdossier",
            "p1@x.example",
            "",
            "Vertrouwelijk.",
        )]),
    )
    .unwrap();
    let out = env.cli(&["archive", "import-mbox", "forum", file.to_str().unwrap()]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(env.data_dir.join("archive-private/forum/t/1.html").exists());
    assert!(!env.data_dir.join("archive").join("forum").exists());
}

#[test]
fn hostile_mail_is_archived_without_anything_executable() {
    let env = TestEnv::new(free_port(), public());
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hostile");
    let mut msgs: Vec<Vec<u8>> = files(&fixtures)
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "eml"))
        .map(|f| std::fs::read(f).unwrap())
        .collect();
    assert!(msgs.len() >= 10, "hostile fixtures missing");
    // A 5 MB line.
    let mut long =
        b"From: Long <long@x.example>\r\nSubject: lang\r\nMessage-ID: <long@x.example>\r\n\r\n"
            .to_vec();
    long.extend(std::iter::repeat_n(b'x', 5 << 20));
    long.extend_from_slice(b" end@x.example\r\n");
    msgs.push(long);
    let n = msgs.len();
    let file = env.path().join("hostile.mbox");
    let mut mbox = Vec::new();
    for m in &msgs {
        vraagbaak::archive::mbox::append(&mut mbox, m, 1_793_000_000_000);
    }
    std::fs::write(&file, mbox).unwrap();
    let out = env.cli(&["archive", "import-mbox", "forum", file.to_str().unwrap()]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.contains(&format!("read {n} messages")),
        "{}",
        out.stdout
    );
    let dir = site(&env);
    let articles: usize = files(&dir.join("t"))
        .iter()
        .map(|f| read(f).matches("<article").count())
        .sum();
    let imported: usize = out
        .stdout
        .split("imported ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    assert_eq!(
        articles, imported,
        "every imported message is on a thread page"
    );
    assert_nothing_executable(&dir);
    assert_no_addresses(&dir);
    // Attachments are stored under safe names inside the archive.
    for f in files(&dir.join("a")) {
        assert!(f.starts_with(&dir), "{}", f.display());
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        assert!(!name.starts_with('.') && !name.contains(".."), "{name}");
        let ext = name.rsplit('.').next().unwrap_or("");
        assert!(
            !["html", "htm", "svg", "xml", "js", "xhtml"].contains(&ext),
            "{name}"
        );
    }
}

/// The real corpora: every message of mime-edge and of the fedora month is stored and on a
/// page; nothing panics. (The linux-man archive is run by the benchmark, in release mode.)
#[test]
fn real_corpora_are_archived_completely() {
    let corpora = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpora");
    if !corpora.exists() {
        skip(
            "real_corpora_are_archived_completely",
            &format!("{} not found", corpora.display()),
        );
        return;
    }
    let env = TestEnv::new(free_port(), public());
    let mut msgs = Vec::new();
    for f in files(&corpora.join("mime-edge")) {
        if f.extension().is_some_and(|e| e == "eml") {
            msgs.push(std::fs::read(&f).unwrap());
        }
    }
    let mut mbox = Vec::new();
    for m in &msgs {
        vraagbaak::archive::mbox::append(&mut mbox, m, 1_793_000_000_000);
    }
    let edge = env.path().join("edge.mbox");
    std::fs::write(&edge, mbox).unwrap();
    let out = env.cli(&["archive", "import-mbox", "forum", edge.to_str().unwrap()]);
    assert_eq!(out.code, Some(0), "{out:?}");
    eprintln!("mime-edge: {}", out.stdout);
    // Every message is stored, except a byte-for-byte copy (the corpus has one: two files
    // with the same bytes), which is reported as a duplicate.
    let distinct = msgs.iter().collect::<std::collections::BTreeSet<_>>().len();
    let copies = msgs.len() - distinct;
    assert!(
        out.stdout.contains(&format!(
            "read {} messages, imported {distinct}, skipped {copies}",
            msgs.len()
        )),
        "{}",
        out.stdout
    );
    if copies > 0 {
        assert!(
            out.stdout.contains(&format!(
                "skipped {copies}: its Message-ID is already in the archive"
            )),
            "{}",
            out.stdout
        );
    }

    let gz = std::fs::read(corpora.join("fedora-devel-2010-01.mbox.gz")).unwrap();
    let mut fedora = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&gz[..]), &mut fedora)
        .unwrap();
    let f = env.path().join("fedora.mbox");
    std::fs::write(&f, fedora).unwrap();
    let out = env.cli(&["archive", "import-mbox", "forum", f.to_str().unwrap()]);
    assert_eq!(out.code, Some(0), "{out:?}");
    eprintln!("fedora: {}", out.stdout);
    assert!(
        out.stdout.contains("read 292 messages, imported 292"),
        "{}",
        out.stdout
    );

    let dir = site(&env);
    let stored = threads_json(&env).len();
    let articles: usize = files(&dir.join("t"))
        .iter()
        .map(|f| read(f).matches("<article").count())
        .sum();
    assert_eq!(articles, stored, "every stored message is on a thread page");
    assert_nothing_executable(&dir);
    assert_no_addresses(&dir);
}

/// Attachments are downloads whatever the URL's spelling: `/%61/` for `/a/`, a doubled
/// slash, an upper-case extension; all served with `Content-Disposition: attachment` and
/// `nosniff`, never inline.
#[test]
fn attachments_are_downloads_however_the_url_is_encoded() {
    let sink = Sink::start();
    let mut env = TestEnv::new(
        sink.port,
        Opts {
            http: true,
            ..public()
        },
    );
    let d = Daemon::start(&mut env);
    let pdf = "JVBERi0xLjQKJcfsj6IKMSAwIG9iago8PC9UeXBlL0NhdGFsb2c+PgplbmRvYmoKdHJhaWxlcgo8PC9Sb290IDEgMCBSPj4KJSVFT0YK";
    let raw = format!(
        "From: An <an@ocmw-gent.be>\r\nTo: {LIST}\r\nSubject: Met bijlage\r\nMessage-ID: <dl-1@ocmw-gent.be>\r\n\
Date: Mon, 01 Jan 2024 10:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nZie bijlage.\r\n\
--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"brief.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\n{pdf}\r\n--b--\r\n"
    );
    assert_eq!(post(d.port, "an@ocmw-gent.be", LIST, raw.as_bytes()), 250);
    let root = site(&env);
    let found = || {
        files(&root)
            .into_iter()
            .find(|p| p.to_string_lossy().contains("/a/"))
    };
    assert!(wait_until(WAIT, || found().is_some()), "no attachment file");
    let file = found().unwrap_or_default();
    let rel = file
        .strip_prefix(&root)
        .unwrap_or(&file)
        .to_string_lossy()
        .into_owned();
    let plain = format!("/archive/forum/{rel}");
    let (stem, ext) = plain.rsplit_once('.').unwrap_or((&plain, ""));
    for path in [
        plain.clone(),
        plain.replace("/a/", "/%61/"),
        plain.replace("/archive/forum/", "/archive//forum/"),
        format!("{stem}.{}", ext.to_uppercase()),
    ] {
        let head = response_head(env.http_port, &path);
        if !head.starts_with("http/1.1 200") {
            // A spelling the file server does not resolve is a 404: nothing is shown.
            assert!(head.starts_with("http/1.1 404"), "{path}: {head}");
            continue;
        }
        assert!(
            head.contains("content-disposition: attachment"),
            "{path}: {head}"
        );
        assert!(
            head.contains("x-content-type-options: nosniff"),
            "{path}: {head}"
        );
        assert!(!head.contains("application/pdf"), "{path}: {head}");
    }
    let head = response_head(env.http_port, &plain.replace("/a/", "/%61/"));
    assert!(
        head.starts_with("http/1.1 200"),
        "the encoded path is served: {head}"
    );
}

/// The status line and headers of a GET, lower-cased (the body may be binary).
fn response_head(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read");
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(out.len());
    String::from_utf8_lossy(&out[..end]).to_lowercase()
}

fn dated(from: &str, subject: &str, id: &str, date: &str, extra: &str, body: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: {LIST}\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\n{extra}\
Date: {date}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: 8bit\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

/// An S/MIME-signed reply (the signature part is never published).
fn signed(from: &str, id: &str, parent: &str, body: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: {LIST}\r\nSubject: Re: Zomervraag\r\nMessage-ID: <{id}>\r\n\
In-Reply-To: <{parent}>\r\nReferences: <{parent}>\r\nDate: Tue, 07 Jul 2026 14:00:00 +0200\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"s\"\r\n\r\n\
--s\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n\
--s\r\nContent-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\nContent-Transfer-Encoding: base64\r\n\
Content-Disposition: attachment; filename=\"smime.p7s\"\r\n\r\nMIAGCSqGSIb3DQEHAqCAMIACAQEx\r\n--s--\r\n"
    )
    .into_bytes()
}

/// What a reader meets on the pages: dates in the list's time zone and language (equal to
/// the "Op ... schreef" line a Brussels mail client writes, in summer and in winter, also
/// for a reply sent from another zone), month buckets by local time, singular and plural,
/// the "digitally signed" note once per thread, images' descriptions, an overview of a
/// long thread, previous/next links (also on an older page when a new thread starts), and
/// `/archive/forum` without its slash leading to the archive.
#[test]
fn pages_read_in_local_time_with_plurals_navigation_and_redirects() {
    let sink = Sink::start();
    let mut env = TestEnv::new(
        sink.port,
        Opts {
            http: true,
            language: "nl",
            ..public()
        },
    );
    let d = Daemon::start(&mut env);
    let dir = site(&env);
    let an = "\"An Peeters\" <an@ocmw-gent.be>";
    // Summer (CEST, +02:00): asked at 09:12 Brussels time.
    let q1 = dated(
        an,
        "Zomervraag",
        "zomer@ocmw-gent.be",
        "Tue, 07 Jul 2026 09:12:00 +0200",
        "",
        "Wie weet dit?",
    );
    assert_eq!(post(d.port, "an@ocmw-gent.be", LIST, &q1), 250);
    // A reply sent from New York at 05:30 -04:00 (11:30 in Brussels), quoting the
    // question with the line a Brussels client writes.
    let r1 = dated(
        "Bart <bart@ocmw-leuven.be>",
        "Re: Zomervraag",
        "zomer-r1@ocmw-leuven.be",
        "Tue, 07 Jul 2026 05:30:00 -0400",
        "In-Reply-To: <zomer@ocmw-gent.be>\r\nReferences: <zomer@ocmw-gent.be>\r\n",
        "Zo doe je dat.\n\nOp di 7 jul. 2026 om 09:12 schreef An Peeters:\n> Wie weet dit?",
    );
    assert_eq!(post(d.port, "bart@ocmw-leuven.be", LIST, &r1), 250);
    // Two signed replies and an HTML one with a logo: five messages in all.
    for (i, who) in ["carla@ocmw-brugge.be", "dirk@ocmw-aalst.be"]
        .iter()
        .enumerate()
    {
        let m = signed(
            &format!("X <{who}>"),
            &format!("zomer-s{i}@x.example"),
            "zomer@ocmw-gent.be",
            "Ondertekend antwoord.",
        );
        assert_eq!(post(d.port, who, LIST, &m), 250);
    }
    let html = format!(
        "From: Eva <eva@ocmw-mol.be>\r\nTo: {LIST}\r\nSubject: Re: Zomervraag\r\nMessage-ID: <zomer-h@ocmw-mol.be>\r\n\
In-Reply-To: <zomer@ocmw-gent.be>\r\nDate: Tue, 07 Jul 2026 15:00:00 +0200\r\nMIME-Version: 1.0\r\n\
Content-Type: text/html; charset=utf-8\r\n\r\n<p>Met groet</p><p><img src=\"cid:image001.png@01DA\" alt=\"Logo Stad Antwerpen\"></p>\r\n"
    );
    assert_eq!(post(d.port, "eva@ocmw-mol.be", LIST, html.as_bytes()), 250);
    // Winter (CET, +01:00).
    let q2 = dated(
        an,
        "Wintervraag",
        "winter@ocmw-gent.be",
        "Tue, 10 Nov 2026 09:12:00 +0100",
        "",
        "En dit?",
    );
    assert_eq!(post(d.port, "an@ocmw-gent.be", LIST, &q2), 250);
    let r2 = dated(
        "Bart <bart@ocmw-leuven.be>",
        "Re: Wintervraag",
        "winter-r1@ocmw-leuven.be",
        "Tue, 10 Nov 2026 10:00:00 +0100",
        "In-Reply-To: <winter@ocmw-gent.be>\r\nReferences: <winter@ocmw-gent.be>\r\n",
        "Zo.\n\nOp di 10 nov. 2026 om 09:12 schreef An Peeters:\n> En dit?",
    );
    assert_eq!(post(d.port, "bart@ocmw-leuven.be", LIST, &r2), 250);

    let id_of = |mid: &str| -> u64 {
        threads_json(&env)
            .iter()
            .find(|m| m["message_id"] == mid)
            .and_then(|m| m["thread"].as_u64())
            .unwrap_or(0)
    };
    let page = |id: u64| read(&dir.join(format!("t/{id}.html")));
    assert!(
        wait_until(WAIT, || {
            let w = id_of("winter@ocmw-gent.be");
            let s = page(id_of("zomer@ocmw-gent.be"));
            w > 0
                && page(w).matches("<article").count() == 2
                && s.matches("<article").count() == 5
                && s.contains("rel=\"next\"")
        }),
        "threads not archived:\n{}",
        d.stderr()
    );
    let (summer, winter) = (id_of("zomer@ocmw-gent.be"), id_of("winter@ocmw-gent.be"));
    let s = page(summer);
    let w = page(winter);
    // The page's dates are the quoted "Op ... schreef" times, summer and winter.
    assert!(s.contains(">di 7 jul. 2026, 09:12</time>"), "{s}");
    assert!(s.contains("Op di 7 jul. 2026 om 09:12 schreef"), "{s}");
    assert!(w.contains(">di 10 nov. 2026, 09:12</time>"), "{w}");
    assert!(w.contains("Op di 10 nov. 2026 om 09:12 schreef"), "{w}");
    // The reply from New York, in Brussels time.
    assert!(s.contains(">di 7 jul. 2026, 11:30</time>"), "{s}");
    assert!(
        !s.contains(", 05:30</time>") && !s.contains(", 07:12</time>"),
        "{s}"
    );
    // The signature note once, the logo's description, the overview of five messages.
    let note = "Dit bericht was digitaal ondertekend";
    assert_eq!(s.matches(note).count(), 1, "{s}");
    assert!(s.contains("[afbeelding: Logo Stad Antwerpen]"), "{s}");
    assert!(!s.contains("cid:"), "{s}");
    assert!(s.contains("Wie schreef wanneer"), "{s}");
    assert!(!w.contains("Wie schreef wanneer"), "{w}");
    assert!(
        s.contains("5 berichten") && w.contains("2 berichten"),
        "{s}\n{w}"
    );
    // Previous and next, and the way back to the month.
    assert!(
        s.contains(&format!("rel=\"next\" href=\"{winter}.html\"")),
        "{s}"
    );
    assert!(!s.contains("rel=\"prev\""), "{s}");
    assert!(
        w.contains(&format!("rel=\"prev\" href=\"{summer}.html\"")),
        "{w}"
    );
    assert!(!w.contains("rel=\"next\""), "{w}");
    assert!(s.contains("Terug naar juli 2026"), "{s}");
    // Just before midnight UTC on 31 October is 1 November in Brussels.
    let late = dated(
        an,
        "Nachtvraag",
        "nacht@ocmw-gent.be",
        "Sat, 31 Oct 2026 23:30:00 +0000",
        "",
        "Laat.",
    );
    assert_eq!(post(d.port, "an@ocmw-gent.be", LIST, &late), 250);
    let nov_page = dir.join("2026-11/index.html");
    assert!(
        wait_until(WAIT, || page(winter).contains("rel=\"next\"")
            && read(&nov_page).contains("Nachtvraag")
            && page(id_of("nacht@ocmw-gent.be")).contains("<article")),
        "the older page did not get its next link:\n{}",
        page(winter)
    );
    let night = id_of("nacht@ocmw-gent.be");
    assert!(
        page(night).contains(">zo 1 nov. 2026, 00:30</time>"),
        "{}",
        page(night)
    );
    let nov = read(&dir.join("2026-11/index.html"));
    assert!(
        nov.contains("Nachtvraag") && nov.contains("2 gesprekken, 3 berichten"),
        "{nov}"
    );
    assert!(
        !dir.join("2026-10/index.html").exists(),
        "an October page for a November post"
    );
    let jul = read(&dir.join("2026-07/index.html"));
    assert!(jul.contains("1 gesprek, 5 berichten"), "{jul}");
    assert!(jul.contains("Deze maand downloaden (mbox)"), "{jul}");
    assert!(s.contains("Origineel bericht (.eml)"), "{s}");

    // `/archive/forum` leads to the archive's front page.
    let head = response_head(env.http_port, "/archive/forum");
    assert!(head.starts_with("http/1.1 3"), "{head}");
    assert!(head.contains("location: /archive/forum/\r\n"), "{head}");
    let head = response_head(env.http_port, "/archive/forum/t");
    assert!(head.contains("location: /archive/forum/t/\r\n"), "{head}");
    assert!(response_head(env.http_port, "/archive/forum/").starts_with("http/1.1 200"));
}
