//! Client privacy, end to end: a corpus of our own with rijksregisternummers in all their
//! spellings (valid and invalid check digits, births before and after 2000), IBANs and old
//! Belgian account numbers (valid and invalid), phone numbers in Belgian and international
//! forms, Outlook and HTML signatures with and without `-- `, and confidentiality
//! disclaimers, in plain text, quoted-printable HTML and base64. After `archive
//! import-mbox` and after a live post through the real SMTP listener, no valid identifier
//! is in any file of the public or the private archive (every file: pages, search index,
//! `.eml` downloads and the month mbox, decoded as well as raw, Atom), every invalid one is
//! left as written, and a search for a masked number finds nothing.
//!
//! Then the six routes by which member addresses reached public files, each as a test
//! after a live post: the address is in no public file in any spelling (plain, `%40`,
//! `=40`, `&#64;`, across HTML elements).
//!
//! And the poster: told by one short mail (only them) when the archive masked a number;
//! with `pii_posts = "hold"` the post waits for the poster's confirmation by reply, and the
//! owners see nothing of it.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use vraagbaak::archive::search::Searcher;

/// Valid identifiers, as written in the corpus, with the digits (and letters) that must
/// not be found in any archive file once separators are taken out.
const VALID: &[(&str, &str)] = &[
    ("85.07.30-033.28", "85073003328"),
    ("85073003328", "85073003328"),
    ("850730 033 28", "85073003328"),
    ("90 01 01 123 95", "90010112395"),
    // Born in 2005: the check digits are computed over 2 followed by the nine digits.
    ("05.03.15-456.25", "05031545625"),
    ("BE68 5390 0754 7034", "BE68539007547034"),
    ("BE68539007547034", "BE68539007547034"),
    ("NL91 ABNA 0417 1643 00", "NL91ABNA0417164300"),
    ("539-0075470-34", "539007547034"),
    ("0486 12 34 56", "486123456"),
    ("+32 477 65 43 21", "477654321"),
    ("0032 471 11 22 33", "471112233"),
    ("0496/55.66.77", "496556677"),
    ("09 265 11 22", "92651122"),
    ("+44 20 7946 0958", "2079460958"),
];

/// Invalid check digits: not identifiers, left exactly as written.
const INVALID: &[&str] = &[
    "85.07.30-033.29",
    "85073003329",
    "05.03.15-456.00",
    "BE68 5390 0754 7035",
    "NL91 ABNA 0417 1643 01",
    "539-0075470-35",
];

fn lists() -> Opts {
    Opts {
        posting: "open",
        language: "nl",
        list_extra: "archive = \"public\"\n".into(),
        extra_lists: format!(
            "[[list]]\naddress = \"besloten@{LIST_DOMAIN}\"\nname = \"Besloten\"\n\
language = \"nl\"\nposting = \"open\"\narchive = \"private\"\nowners = [\"{OWNER}\"]\n"
        ),
        ..Opts::default()
    }
}

fn head(from: &str, subject: &str, id: &str, extra: &str) -> String {
    format!(
        "From: {from}\r\nTo: {LIST}\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\n\
Date: Mon, 02 Nov 2026 10:00:00 +0100\r\nMIME-Version: 1.0\r\n{extra}"
    )
}

/// The corpus: six messages between them holding every identifier above.
fn corpus(tag: &str) -> Vec<Vec<u8>> {
    let plain = format!(
        "{}Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
Dag collega's,\r\n\r\nMijn cliënt (rijksregisternummer 85.07.30-033.28, ook genoteerd als\r\n\
85073003328 of 850730 033 28) heeft een vraag over zijn leefloon. Zijn partner heeft\r\n\
90 01 01 123 95 en het kind 05.03.15-456.25.\r\n\r\n\
Betalingen op BE68 5390 0754 7034 (of BE68539007547034), vroeger 539-0075470-34, en\r\n\
een Nederlandse rekening NL91 ABNA 0417 1643 00.\r\n\r\n\
Met vriendelijke groeten,\r\n\r\nAn Peeters\r\nMaatschappelijk werker\r\nOCMW Gent\r\n\
Tel. 0486 12 34 56\r\nOnderbergen 86, 9000 Gent\r\n",
        head(
            "An Peeters <an@ocmw-gent.be>",
            "Leefloon en schulden",
            &format!("{tag}1@ocmw-gent.be"),
            ""
        )
    );
    // Outlook: no `-- `, a signature table, a disclaimer, quoted-printable HTML.
    let outlook_html = "<html><body><div class=3D\"WordSection1\"><p class=3DMsoNormal>Wij h=\r\n\
ebben zo'n dossier gehad; bel me gerust.</p><p class=3DMsoNormal>Vriendelijke groeten=\r\n\
</p><div id=3D\"Signature\"><p>Kris Wouters<br>OCMW Antwerpen<br>T +32 477 65 43 21<=\r\n\
br>M 0032 471 11 22 33</p></div><p style=3D\"font-size:8pt\">Dit bericht is vertrou=\r\n\
welijk en uitsluitend bestemd voor de geadresseerde. Bel 0496/55.66.77 bij vergissi=\r\n\
ng.</p></div></body></html>";
    let outlook = format!(
        "{}In-Reply-To: <{tag}1@ocmw-gent.be>\r\nReferences: <{tag}1@ocmw-gent.be>\r\n\
Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
{outlook_html}\r\n",
        head(
            "Kris Wouters <kris@ocmw-antwerpen.be>",
            "RE: Leefloon en schulden",
            &format!("{tag}2@ocmw-antwerpen.be"),
            ""
        )
    );
    // base64 plain text with a `-- ` signature, a landline and a UK number.
    let b64_text = "Bij ons kwam dat ook voor. Bel het onthaal op 09 265 11 22.\r\n\r\n\
-- \r\nLies Maes\r\nOCMW Brugge\r\nLonden: +44 20 7946 0958\r\n";
    let b64 = format!(
        "{}In-Reply-To: <{tag}1@ocmw-gent.be>\r\nReferences: <{tag}1@ocmw-gent.be>\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
        head(
            "Lies Maes <lies@ocmw-brugge.be>",
            "Antw: Leefloon en schulden",
            &format!("{tag}3@ocmw-brugge.be"),
            ""
        ),
        wrap76(&data_encoding::BASE64.encode(b64_text.as_bytes()))
    );
    // A Gmail HTML signature in a multipart/alternative.
    let gmail = format!(
        "{}Content-Type: multipart/alternative; boundary=\"b1\"\r\n\r\n--b1\r\n\
Content-Type: text/plain; charset=utf-8\r\n\r\nIk zoek ervaring met huurwaarborg.\r\n\r\n\
Groetjes,\r\nJan\r\n--b1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n\
<div dir=\"ltr\">Ik zoek ervaring met huurwaarborg.<br><br>Groetjes,<br>\
<div class=\"gmail_signature\">Jan Claes<br>OCMW Leuven<br>0486 12 34 56</div></div>\r\n--b1--\r\n",
        head(
            "Jan Claes <jan@ocmw-leuven.be>",
            "Huurwaarborg bij het OCMW",
            &format!("{tag}4@ocmw-leuven.be"),
            ""
        )
    );
    // Numbers with wrong check digits, in a thread of their own: left as written.
    let invalid = format!(
        "{}Content-Type: text/plain; charset=utf-8\r\n\r\nDossiernummers: {}.\r\n",
        head(
            "Els Jacobs <els@ocmw-mechelen.be>",
            "Dossiernummers van de stad",
            &format!("{tag}5@ocmw-mechelen.be"),
            ""
        ),
        INVALID.join(", ")
    );
    // An identifier in the subject.
    let subject = format!(
        "{}Content-Type: text/plain; charset=utf-8\r\n\r\nZie onderwerp.\r\n",
        head(
            "Els Jacobs <els@ocmw-mechelen.be>",
            "Cliënt 85.07.30-033.28 en rekening BE68 5390 0754 7034",
            &format!("{tag}6@ocmw-mechelen.be"),
            ""
        )
    );
    vec![
        plain.into_bytes(),
        outlook.into_bytes(),
        b64.into_bytes(),
        gmail.into_bytes(),
        invalid.into_bytes(),
        subject.into_bytes(),
    ]
}

fn wrap76(s: &str) -> String {
    s.as_bytes()
        .chunks(76)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("\r\n")
}

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

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
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

/// Every text a file shows: its bytes as text; for HTML also without tags and entities;
/// for `.eml` and `.mbox` also every message's decoded subject and text parts.
fn texts_of(p: &Path) -> Vec<String> {
    let bytes = std::fs::read(p).unwrap_or_default();
    let raw = String::from_utf8_lossy(&bytes).into_owned();
    let name = p.to_string_lossy();
    let mut out = vec![];
    if name.ends_with(".html") || name.ends_with(".xml") || name.ends_with(".atom") {
        out.push(untagged(&raw));
    }
    if name.ends_with(".eml") || name.ends_with(".mbox") {
        let parts: Vec<&str> = if name.ends_with(".mbox") {
            raw.split("\nFrom ").collect()
        } else {
            vec![raw.as_str()]
        };
        for m in parts {
            if let Some(msg) = mail_parser::MessageParser::default().parse(m.as_bytes()) {
                out.push(msg.subject().unwrap_or("").to_string());
                for i in 0..msg.text_body.len() + msg.html_body.len() {
                    if let Some(t) = msg.body_text(i) {
                        out.push(t.into_owned());
                    }
                    if let Some(h) = msg.body_html(i) {
                        out.push(untagged(&h));
                    }
                }
            }
        }
    }
    out.push(raw);
    out
}

/// HTML as rendered text: tags dropped, the entities that spell `@` and digits decoded.
fn untagged(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    let mut s = out
        .replace("&#64;", "@")
        .replace("&#x40;", "@")
        .replace("&commat;", "@");
    s = s.replace("&nbsp;", " ").replace("&#43;", "+");
    s
}

/// Text with separators taken out, upper case: how a number is looked for.
fn squeezed(s: &str) -> String {
    s.chars()
        .filter(|c| !" \t\r\n.-/\u{a0}".contains(*c))
        .flat_map(char::to_uppercase)
        .collect()
}

/// (file, identifier) for every valid identifier found in a file under `dir`.
fn identifiers_in(dir: &Path) -> BTreeMap<String, Vec<&'static str>> {
    let mut found = BTreeMap::new();
    for f in files(dir) {
        let texts: Vec<String> = texts_of(&f).iter().map(|t| squeezed(t)).collect();
        let hits: Vec<&str> = VALID
            .iter()
            .filter(|(_, digits)| texts.iter().any(|t| t.contains(digits)))
            .map(|(written, _)| *written)
            .collect();
        if !hits.is_empty() {
            found.insert(f.display().to_string(), hits);
        }
    }
    found
}

fn all_text(dir: &Path, ext: &str) -> String {
    files(dir)
        .iter()
        .filter(|f| f.to_string_lossy().ends_with(ext))
        .flat_map(|f| texts_of(f))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `copies`: how many times the corpus is in the archive.
fn check_archive(site: &Path, what: &str, copies: usize) {
    assert!(
        site.join("t/1.html").exists(),
        "{what}: no archive at {}",
        site.display()
    );
    let found = identifiers_in(site);
    assert!(
        found.is_empty(),
        "{what}: identifiers in the archive: {found:#?}"
    );
    let html = all_text(site, ".html");
    let eml = all_text(site, ".eml");
    let mbox = all_text(site, ".mbox");
    for inv in INVALID {
        for (kind, text) in [("pages", &html), ("downloads", &eml), ("mbox", &mbox)] {
            assert!(
                text.contains(inv),
                "{what}: invalid {inv:?} not left as written in the {kind}"
            );
        }
    }
    for label in [
        "[rijksregisternummer]",
        "[rekeningnummer]",
        "[telefoonnummer]",
    ] {
        assert!(html.contains(label), "{what}: no {label} on the pages");
        assert!(eml.contains(label), "{what}: no {label} in the downloads");
    }
    // Signatures are dimmed, the disclaimer folded.
    assert!(
        html.contains("Vertrouwelijkheidsmelding"),
        "{what}: disclaimer not folded"
    );
    // The search: a masked number finds nothing; an invalid one finds its thread.
    // (Short parts such as `00` are not terms, so a spaced-out query may also find the
    // thread of the invalid numbers, which are left as written; no other thread.)
    for (written, squeezed) in VALID {
        for q in [*written, *squeezed] {
            let r = Searcher::open(site).search(q, 1);
            let subjects: Vec<String> = r
                .hits
                .iter()
                .filter_map(|h| h.record.as_ref().map(|r| r.subject.clone()))
                .filter(|s| s != "Dossiernummers van de stad")
                .collect();
            assert!(
                subjects.is_empty(),
                "{what}: a search for {q:?} found {subjects:?}"
            );
        }
    }
    let r = Searcher::open(site).search("85073003329", 1);
    assert_eq!(
        r.total, copies,
        "{what}: the invalid number is not searchable as written"
    );
    for word in ["0486", "Onderbergen", "vertrouwelijk", "geadresseerde"] {
        let r = Searcher::open(site).search(word, 1);
        assert_eq!(
            r.total, 0,
            "{what}: signature or disclaimer word {word:?} is indexed"
        );
    }
    assert_eq!(
        Searcher::open(site).search("huurwaarborg", 1).total,
        copies,
        "{what}: search works"
    );
}

#[test]
fn no_valid_identifier_in_any_archive_file_after_import_and_a_live_post() {
    let sink = Sink::start();
    let mut env = TestEnv::new(sink.port, lists());
    let public = env.data_dir.join("archive/forum");
    let private = env.data_dir.join("archive-private/besloten");
    // Import into both lists.
    for list in ["forum", "besloten"] {
        let file = env.path().join(format!("{list}.mbox"));
        std::fs::write(&file, mbox_of(&corpus(&format!("imp-{list}-")))).unwrap();
        let out = env.cli(&["archive", "import-mbox", list, file.to_str().unwrap()]);
        assert_eq!(out.code, Some(0), "{out:?}");
    }
    check_archive(&public, "public archive after import", 1);
    check_archive(&private, "private archive after import", 1);
    // Then the same corpus live, through SMTP, into the running daemon.
    env.add_members(&[member(1)]);
    let d = Daemon::start(&mut env);
    let before = files(&public).len();
    for (list, rcpt) in [
        ("forum", LIST.to_string()),
        ("besloten", format!("besloten@{LIST_DOMAIN}")),
    ] {
        for m in corpus(&format!("live-{list}-")) {
            assert_eq!(post(d.port, "sender@ocmw.example", &rcpt, &m), 250);
        }
    }
    let live_in = |site: &Path| {
        files(site)
            .iter()
            .filter(|f| f.to_string_lossy().ends_with(".eml"))
            .count()
            >= 12
    };
    assert!(
        wait_until(Duration::from_secs(60), || live_in(&public)
            && live_in(&private)),
        "the live posts were not archived"
    );
    assert!(files(&public).len() > before);
    std::thread::sleep(Duration::from_secs(1));
    check_archive(&public, "public archive after live posts", 2);
    check_archive(&private, "private archive after live posts", 2);
    // The members got the list copy as written (the archive masks, the list does not).
    assert!(
        wait_until(Duration::from_secs(30), || sink.messages().iter().any(
            |m| String::from_utf8_lossy(&m.data).contains("85.07.30-033.28")
        )),
        "list copies did not carry the post as written"
    );
    drop(d);
}

// ---- the six address routes ---------------------------------------------------------------

/// Posts `raw` live and checks that `local@domain` is in no public file in any spelling.
fn address_route(tag: &str, address: &str, raw: String) {
    let sink = Sink::start();
    let mut env = TestEnv::new(
        sink.port,
        Opts {
            posting: "open",
            list_extra: "archive = \"public\"\n".into(),
            ..Opts::default()
        },
    );
    let d = Daemon::start(&mut env);
    let site = env.data_dir.join("archive/forum");
    assert_eq!(
        post(d.port, "poster@ocmw.example", LIST, raw.as_bytes()),
        250,
        "{tag}"
    );
    assert!(
        wait_until(Duration::from_secs(60), || site.join("m/1.eml").exists()
            && site.join("search").exists()),
        "{tag}: not archived"
    );
    std::thread::sleep(Duration::from_millis(500));
    let (local, domain) = address.split_once('@').unwrap_or((address, ""));
    let spellings = [
        address.to_string(),
        format!("{local}%40{domain}"),
        format!("{local}=40{domain}"),
        format!("{local}&#64;{domain}"),
        format!("{local}&#x40;{domain}"),
    ];
    // The scan must see the address in the post as sent (a check of the check).
    let sent = env.path().join("sent.eml");
    std::fs::write(&sent, &raw).unwrap();
    let seen = texts_of(&sent).iter().any(|t| {
        let lower = t.to_ascii_lowercase();
        spellings
            .iter()
            .any(|s| lower.contains(&s.to_ascii_lowercase()))
    });
    assert!(
        seen,
        "{tag}: the scan does not see the address in the post as sent"
    );
    let mut found = vec![];
    for f in files(&site) {
        // File names count too (an attachment saved under its own name).
        let path = f
            .strip_prefix(&site)
            .unwrap_or(&f)
            .to_string_lossy()
            .into_owned();
        let mut texts = texts_of(&f);
        texts.push(path.replace('_', "@"));
        texts.push(path);
        for t in texts {
            let lower = t.to_ascii_lowercase();
            for s in &spellings {
                if lower.contains(&s.to_ascii_lowercase()) {
                    found.push(format!("{}: {s}", f.display()));
                }
            }
            // Across elements or encodings the address may lose its `@` but keep both
            // halves next to each other.
            if lower.contains(&format!("{local}@{domain}")) {
                found.push(format!("{}: joined", f.display()));
            }
        }
    }
    found.sort();
    found.dedup();
    assert!(
        found.is_empty(),
        "{tag}: the address is in public files: {found:#?}"
    );
    drop(d);
}

fn plain_post(subject: &str, id: &str, extra: &str, body: &str) -> String {
    format!(
        "From: Poster <poster@ocmw.example>\r\nTo: {LIST}\r\nSubject: {subject}\r\n\
Message-ID: <{id}>\r\n{extra}Date: Mon, 02 Nov 2026 10:00:00 +0100\r\nMIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    )
}

#[test]
fn route_1_an_address_in_the_subject() {
    address_route(
        "subject",
        "lid31@ocmw-31.example",
        plain_post(
            "Vraag van lid31@ocmw-31.example over leefloon",
            "r1@ocmw.example",
            "",
            "Tekst.",
        ),
    );
}

#[test]
fn route_2_message_ids_that_carry_an_address() {
    // git send-email builds IDs from the author's address; the reply's References too.
    address_route(
        "message-id",
        "lid32@ocmw-32.example",
        plain_post(
            "[PATCH] formulier",
            "20261102100000.1234-1-lid32@ocmw-32.example",
            "In-Reply-To: <20261101.99-lid32@ocmw-32.example>\r\n\
References: <20261101.99-lid32@ocmw-32.example>\r\nResent-Message-ID: <x-lid32@ocmw-32.example>\r\n",
            "Tekst.",
        ),
    );
}

#[test]
fn route_3_encoded_words_in_headers() {
    address_route(
        "encoded word",
        "lid33@ocmw-33.example",
        plain_post(
            "=?utf-8?q?Vraag_van_lid33=40ocmw-33=2Eexample?=",
            "r3@ocmw.example",
            "Cc: =?utf-8?q?lid33=40ocmw-33=2Eexample?= <x@ocmw.example>\r\n\
Keywords: =?utf-8?b?bGlkMzNAb2Ntdy0zMy5leGFtcGxl?=\r\n",
            "Tekst.",
        ),
    );
}

#[test]
fn route_4_percent_and_entity_encoded_addresses() {
    address_route(
        "percent",
        "lid34@ocmw-34.example",
        plain_post(
            "Formulier",
            "r4@ocmw.example",
            "",
            "Zie https://formulier.example/?mail=lid34%40ocmw-34.example&x=1 en\r\n\
mailto:lid34%40ocmw-34.example en lid34&#64;ocmw-34.example.",
        ),
    );
}

#[test]
fn route_5_an_address_split_over_html_elements() {
    let raw = format!(
        "From: Poster <poster@ocmw.example>\r\nTo: {LIST}\r\nSubject: Contact\r\n\
Message-ID: <r5@ocmw.example>\r\nDate: Mon, 02 Nov 2026 10:00:00 +0100\r\nMIME-Version: 1.0\r\n\
Content-Type: text/html; charset=utf-8\r\n\r\n<p>Mail <span>lid36</span>@<span>ocmw-36.example</span> \
of <b>lid36</b>&#64;<i>ocmw-36</i>.example</p>\r\n"
    );
    address_route("across elements", "lid36@ocmw-36.example", raw);
}

#[test]
fn route_6_attachment_names() {
    let raw = format!(
        "From: Poster <poster@ocmw.example>\r\nTo: {LIST}\r\nSubject: Brief\r\n\
Message-ID: <r6@ocmw.example>\r\nDate: Mon, 02 Nov 2026 10:00:00 +0100\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n\
In bijlage.\r\n--b\r\nContent-Type: application/pdf; name=\"brief lid37@ocmw-37.example.pdf\"\r\n\
Content-Disposition: attachment; filename*=utf-8''brief%20lid37%40ocmw-37.example.pdf\r\n\
Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b--\r\n"
    );
    address_route("attachment name", "lid37@ocmw-37.example", raw);
}

// ---- the poster is told; or the post waits for the poster --------------------------------

const POSTER: &str = "an@ocmw-gent.be";

fn identifier_post(id: &str) -> Vec<u8> {
    format!(
        "From: An Peeters <{POSTER}>\r\nTo: {LIST}\r\nSubject: Leefloon voor mijn cliënt\r\n\
Message-ID: <{id}>\r\nDate: Mon, 02 Nov 2026 10:00:00 +0100\r\nMIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\r\nCliënt 85.07.30-033.28 vraagt leefloon.\r\n"
    )
    .into_bytes()
}

fn is_note(m: &Received) -> bool {
    subject_of(&m.data).contains("afgeschermd")
}

#[test]
fn the_poster_alone_is_told_that_a_number_was_masked() {
    let sink = Sink::start();
    let mut env = TestEnv::new(
        sink.port,
        Opts {
            posting: "open",
            language: "nl",
            list_extra: "archive = \"public\"\n".into(),
            ..Opts::default()
        },
    );
    env.add_members(&[member(1), member(2), POSTER.to_string()]);
    let d = Daemon::start(&mut env);
    assert_eq!(
        post(d.port, POSTER, LIST, &identifier_post("n1@ocmw-gent.be")),
        250
    );
    assert!(
        wait_until(Duration::from_secs(30), || sink
            .messages()
            .iter()
            .any(is_note)),
        "no note to the poster: {:?}",
        sink.messages()
            .iter()
            .map(|m| subject_of(&m.data))
            .collect::<Vec<_>>()
    );
    assert!(wait_until(Duration::from_secs(30), || sink
        .count_for(&member(2))
        == 1));
    let notes: Vec<Received> = sink.messages().into_iter().filter(is_note).collect();
    assert_eq!(notes.len(), 1, "exactly one note");
    assert_eq!(notes[0].rcpt, POSTER, "only the poster gets the note");
    let text = String::from_utf8_lossy(&notes[0].data).into_owned();
    assert!(text.contains("rijksregisternummer"), "{text}");
    assert!(
        text.contains("kregen je bericht zoals je het schreef"),
        "{text}"
    );
    assert!(
        !text.contains("85.07.30-033.28"),
        "the note must not repeat the number: {text}"
    );
    // The members' copy is as written.
    let copy = sink
        .messages()
        .into_iter()
        .find(|m| m.rcpt == member(1))
        .expect("member copy");
    assert!(String::from_utf8_lossy(&copy.data).contains("85.07.30-033.28"));
    // A post without an identifier (or with an invalid one) brings no note.
    let clean = String::from_utf8_lossy(&identifier_post("n2@ocmw-gent.be"))
        .replace("85.07.30-033.28", "85.07.30-033.29");
    assert_eq!(post(d.port, POSTER, LIST, clean.as_bytes()), 250);
    assert!(wait_until(Duration::from_secs(30), || sink
        .count_for(&member(2))
        == 2));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(sink.messages().into_iter().filter(is_note).count(), 1);
    drop(d);
}

#[test]
fn with_pii_posts_hold_the_post_waits_for_the_posters_confirmation() {
    let sink = Sink::start();
    let mut env = TestEnv::new(
        sink.port,
        Opts {
            posting: "open",
            language: "nl",
            list_extra: "archive = \"public\"\npii_posts = \"hold\"\n".into(),
            ..Opts::default()
        },
    );
    env.add_members(&[member(1), member(2), POSTER.to_string()]);
    let d = Daemon::start(&mut env);
    assert_eq!(
        post(d.port, POSTER, LIST, &identifier_post("h1@ocmw-gent.be")),
        250
    );
    let ask = |m: &Received| subject_of(&m.data).contains("wacht op jou");
    assert!(
        wait_until(Duration::from_secs(30), || sink.messages().iter().any(ask)),
        "no confirmation request: {:?}",
        sink.messages()
            .iter()
            .map(|m| subject_of(&m.data))
            .collect::<Vec<_>>()
    );
    std::thread::sleep(Duration::from_secs(2));
    // Nothing reached the members, and the owners were shown nothing.
    assert_eq!(sink.count_for(&member(1)), 0, "the post did not wait");
    assert_eq!(sink.count_for(OWNER), 0, "the owners were sent something");
    let request = sink.messages().into_iter().find(ask).expect("request");
    assert_eq!(request.rcpt, POSTER);
    let text = String::from_utf8_lossy(&request.data).into_owned();
    assert!(
        !text.contains("85.07.30-033.28"),
        "the request must not repeat the number"
    );
    assert!(
        !env.data_dir.join("archive/forum/m/1.eml").exists(),
        "archived before confirmed"
    );
    // The owners' list of held posts shows it with its subject, masked, and no content.
    let held = env.cli(&["moderate", "list"]);
    assert!(held.stdout.contains("national number"), "{held:?}");
    // A confirmation from someone else does nothing.
    let confirm = confirm_address_in(&request.data);
    let reply = |from: &str| {
        format!(
            "From: {from}\r\nTo: {confirm}\r\nSubject: Re: bevestig\r\n\
Message-ID: <c-{from}>\r\n\r\nja\r\n"
        )
        .into_bytes()
    };
    assert_eq!(
        post(
            d.port,
            "intruder@example.net",
            &confirm,
            &reply("intruder@example.net")
        ),
        250
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        sink.count_for(&member(1)),
        0,
        "a stranger released the post"
    );
    // The poster's reply releases it: the members get it as written, once.
    assert_eq!(post(d.port, POSTER, &confirm, &reply(POSTER)), 250);
    assert!(
        wait_until(Duration::from_secs(30), || sink.count_for(&member(1)) == 1),
        "the poster's confirmation did not release the post"
    );
    let copy = sink
        .messages()
        .into_iter()
        .find(|m| m.rcpt == member(1))
        .expect("member copy");
    assert!(String::from_utf8_lossy(&copy.data).contains("85.07.30-033.28"));
    let page = env.data_dir.join("archive/forum/t/1.html");
    assert!(wait_until(Duration::from_secs(30), || page.exists()));
    let html = std::fs::read_to_string(&page).unwrap_or_default();
    assert!(html.contains("[rijksregisternummer]") && !html.contains("033.28"));
    // Confirmed posts bring no second note, and the token does not work twice.
    assert_eq!(post(d.port, POSTER, &confirm, &reply(POSTER)), 250);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sink.count_for(&member(1)), 1, "posted twice");
    assert_eq!(sink.count_for(OWNER), 0, "the owners were sent something");
    drop(d);
}
