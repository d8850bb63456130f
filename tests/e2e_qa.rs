//! End to end, through the real SMTP listener: a question is marked solved by its asker's
//! reply (`[opgelost]`), the answer that reply answers becomes the accepted one, and the
//! state shows on the thread, month and front pages; a stranger's `[opgelost]` changes
//! nothing; `#heropend` reopens; the state survives `archive rebuild --reindex`.

mod common;

use common::*;
use std::path::{Path, PathBuf};

fn public() -> Opts {
    Opts {
        posting: "open",
        list_extra: "archive = \"public\"\n".into(),
        language: "nl",
        ..Opts::default()
    }
}

fn site(env: &TestEnv) -> PathBuf {
    env.data_dir.join("archive/forum")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

fn raw(from: &str, subject: &str, id: &str, parent: Option<&str>, body: &str) -> Vec<u8> {
    let refs = parent
        .map(|p| format!("In-Reply-To: <{p}>\r\nReferences: <q1@ocmw-gent.be> <{p}>\r\n"))
        .unwrap_or_default();
    format!(
        "From: {from}\r\nTo: {LIST}\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\n{refs}\
Date: Mon, 02 Nov 2026 10:00:00 +0100\r\nMIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

/// The thread list entry of thread 1 on a page (front or month).
fn entry_of_thread_1(html: &str) -> String {
    html.split("<li>")
        .filter(|li| li.contains("href=\"t/1.html\"") || li.contains("href=\"../t/1.html\""))
        .map(|li| li.split("</li>").next().unwrap_or("").to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn solved_by_the_askers_reply_shown_everywhere_and_kept_by_reindex() {
    let sink = Sink::start();
    let mut env = TestEnv::new(sink.port, public());
    let d = Daemon::start(&mut env);
    let dir = site(&env);
    let thread = dir.join("t/1.html");
    let asker = "An Peeters <an.peeters@ocmw-gent.be>";
    let subject = "Leefloon voor een cliënt met schulden";
    let re = format!("Re: [forum] {subject}");
    let send = |from: &str, subject: &str, id: &str, parent: Option<&str>, body: &str| {
        let env_from = from
            .split('<')
            .nth(1)
            .and_then(|a| a.split('>').next())
            .unwrap_or(from)
            .to_string();
        let code = post(
            d.port,
            &env_from,
            LIST,
            &raw(from, subject, id, parent, body),
        );
        assert_eq!(code, 250, "{id}");
    };
    send(
        asker,
        subject,
        "q1@ocmw-gent.be",
        None,
        "Heeft iemand ervaring hiermee?",
    );
    send(
        "Carla Claes <carla@ocmw-brugge.be>",
        &re,
        "r1@ocmw-brugge.be",
        Some("q1@ocmw-gent.be"),
        "Contacteer de schuldbemiddeling.",
    );
    send(
        "Dirk Dewulf <dirk@ocmw-aalst.be>",
        &re,
        "r2@ocmw-aalst.be",
        Some("q1@ocmw-gent.be"),
        "Bij ons gaat dat via het sociaal huis, met een budgetbeheer.",
    );
    // A question nobody answers, dated weeks ago: listed as open on the front page.
    send(
        "Bart Baert <bart@ocmw-leuven.be>",
        "Vraag over huurwaarborg",
        "q2@ocmw-leuven.be",
        None,
        "Wie kent de regels voor de huurwaarborg?",
    );
    assert!(
        wait_until(WAIT, || read(&thread).matches("<article").count() == 3
            && dir.join("t/4.html").exists()),
        "thread page: {}\n{}",
        read(&thread),
        d.stderr()
    );
    assert!(read(&thread).contains("2 antwoorden"), "{}", read(&thread));
    // The front page is written after the thread pages of the same pass.
    let front_has = |what: &str| {
        wait_until(WAIT, || {
            entry_of_thread_1(&read(&dir.join("index.html"))).contains(what)
                && read(&dir.join("index.html")).contains("t/4.html")
        })
    };
    assert!(front_has("2 antwoorden"));
    let front = read(&dir.join("index.html"));
    assert!(
        entry_of_thread_1(&front).contains("2 antwoorden"),
        "{front}"
    );
    let open_section = front
        .split("id=\"open\"")
        .nth(1)
        .and_then(|s| s.split("</section>").next())
        .unwrap_or("");
    assert!(open_section.contains("t/4.html"), "open questions: {front}");
    assert!(open_section.contains("Nog geen antwoord"), "{open_section}");
    assert!(!open_section.contains("t/1.html"), "{open_section}");

    // Someone else's [opgelost] is posted as usual and changes nothing.
    send(
        "Bart Baert <bart@ocmw-leuven.be>",
        &format!("{re} [opgelost]"),
        "r3@ocmw-leuven.be",
        Some("r2@ocmw-aalst.be"),
        "Dit lijkt me opgelost.",
    );
    assert!(wait_until(WAIT, || read(&thread)
        .matches("<article")
        .count()
        == 4));
    assert!(read(&thread).contains("3 antwoorden"), "{}", read(&thread));
    assert!(!read(&thread).contains("Opgelost"), "{}", read(&thread));

    // The asker replies to Dirk's answer with [opgelost]: solved, Dirk's is the best answer.
    send(
        asker,
        &format!("{re} [opgelost]"),
        "r4@ocmw-gent.be",
        Some("r2@ocmw-aalst.be"),
        "Dank je Dirk, zo doen we het.",
    );
    assert!(
        wait_until(WAIT, || read(&thread).contains("Opgelost")),
        "{}",
        read(&thread)
    );
    let page = read(&thread);
    assert!(
        page.contains("<a href=\"#m3\">Beste antwoord: Dirk Dewulf →</a>"),
        "{page}"
    );
    let m3 = page.split("id=\"m3\"").next().unwrap_or("");
    assert!(
        m3.ends_with("accepted\" "),
        "Dirk's message is highlighted: {page}"
    );
    assert_eq!(page.matches(" accepted\"").count(), 1, "{page}");
    // schema.org QAPage on the public archive, with the accepted answer.
    let ld = page
        .split("<script type=\"application/ld+json\">")
        .nth(1)
        .and_then(|s| s.split("</script>").next())
        .expect("QAPage markup");
    let ld: serde_json::Value = serde_json::from_str(ld).expect("valid JSON-LD");
    assert_eq!(ld["@type"], "QAPage");
    assert_eq!(
        ld["mainEntity"]["acceptedAnswer"]["author"]["name"],
        "Dirk Dewulf"
    );
    assert_eq!(ld["mainEntity"]["answerCount"], 4);
    assert!(front_has("Opgelost"));
    let front = read(&dir.join("index.html"));
    let solved_section = front
        .split("id=\"solved\"")
        .nth(1)
        .and_then(|s| s.split("</section>").next())
        .unwrap_or("");
    assert!(solved_section.contains("t/1.html"), "{front}");
    let month = read(&dir.join("2026-11/index.html"));
    assert!(entry_of_thread_1(&month).contains("Opgelost"), "{month}");

    // Recomputing the thread index gives the same state.
    let out = env.cli(&["archive", "rebuild", "forum", "--reindex"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let page = read(&thread);
    assert!(page.contains("Beste antwoord: Dirk Dewulf"), "{page}");
    assert!(entry_of_thread_1(&read(&dir.join("2026-11/index.html"))).contains("Opgelost"));

    // `#heropend` from the asker reopens it.
    send(
        asker,
        &re,
        "r5@ocmw-gent.be",
        Some("r4@ocmw-gent.be"),
        "#heropend\n\nToch nog een vraag: geldt dit ook bij een verhuis?",
    );
    assert!(
        wait_until(WAIT, || read(&thread).contains("5 antwoorden")),
        "{}",
        read(&thread)
    );
    let page = read(&thread);
    assert!(!page.contains("Beste antwoord"), "{page}");
    assert!(!page.contains("application/ld+json"), "{page}");
    assert!(front_has("5 antwoorden"));

    // An owner marks it solved with Carla's answer (a message URL), from the command line;
    // the owner's mark is durable: a reindex keeps it.
    let out = env.cli(&[
        "archive",
        "solved",
        "forum",
        "https://lists.example.org/archive/forum/t/1.html#m2",
    ]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.contains("message 2 the accepted answer"),
        "{out:?}"
    );
    assert!(
        read(&thread).contains("Beste antwoord: Carla Claes"),
        "{}",
        read(&thread)
    );
    let out = env.cli(&["archive", "rebuild", "forum", "--reindex"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        read(&thread).contains("Beste antwoord: Carla Claes"),
        "{}",
        read(&thread)
    );
    let out = env.cli(&["archive", "reopen", "forum", "1"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        !read(&thread).contains("Beste antwoord"),
        "{}",
        read(&thread)
    );
    let out = env.cli(&["archive", "solved", "forum", "t/1.html#m99"]);
    assert_ne!(out.code, Some(0), "{out:?}");
}

/// `stats.html` for a fixture of 20 questions over two months, against a count by hand.
/// Question i (0..20) is asked on day i+1 (October for i < 8, November after); it is
/// answered when i % 3 != 0, (i + 1) × 10 minutes later; its asker marks it solved when
/// also i % 4 == 1; it is tagged #leefloon when i is even and #huurwaarborg when i % 5 == 0.
#[test]
fn figures_for_the_federation_match_a_count_by_hand() {
    let sink = Sink::start();
    let mut env = TestEnv::new(sink.port, public());
    let d = Daemon::start(&mut env);
    let dir = site(&env);
    let mut total = 0;
    let date = |i: usize, minutes: usize| {
        let (month, day) = if i < 8 {
            ("Oct", i + 1)
        } else {
            ("Nov", i - 7)
        };
        format!(
            "{day:02} {month} 2026 {:02}:{:02}:00 +0000",
            10 + minutes / 60,
            minutes % 60
        )
    };
    let send = |from: &str, subject: &str, id: &str, parent: Option<&str>, when: String| {
        let refs = parent
            .map(|p| format!("In-Reply-To: <{p}>\r\nReferences: <{p}>\r\n"))
            .unwrap_or_default();
        let m = format!(
            "From: {from}\r\nTo: {LIST}\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\n{refs}\
Date: Mon, {when}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nTekst.\r\n"
        );
        let addr = from
            .split('<')
            .nth(1)
            .and_then(|a| a.split('>').next())
            .unwrap_or(from);
        assert_eq!(post(d.port, addr, LIST, m.as_bytes()), 250, "{id}");
    };
    for i in 0..20 {
        let mut subject = format!("Vraag {i}");
        if i % 2 == 0 {
            subject.push_str(" #leefloon");
        }
        if i % 5 == 0 {
            subject.push_str(" #huurwaarborg");
        }
        let asker = format!("Vrager {i} <vrager{i}@ocmw.be>");
        let q = format!("q{i}@ocmw.be");
        send(&asker, &subject, &q, None, date(i, 0));
        total += 1;
        if i % 3 != 0 {
            let a = format!("a{i}@ocmw.be");
            let re = format!("Re: [forum] {subject}");
            send(
                "Helper <helper@ocmw.be>",
                &re,
                &a,
                Some(&q),
                date(i, (i + 1) * 10),
            );
            total += 1;
            if i % 4 == 1 {
                let s = format!("s{i}@ocmw.be");
                send(
                    &asker,
                    &format!("{re} [opgelost]"),
                    &s,
                    Some(&a),
                    date(i, (i + 1) * 10 + 5),
                );
                total += 1;
            }
        }
    }
    let stats = dir.join("stats.html");
    assert!(
        wait_until(WAIT, || d.stderr().matches("post accepted").count()
            == total),
        "{}",
        d.stderr()
    );
    // Every post is stored: a rebuild (which waits for the archive writer) has them all.
    let out = env.cli(&["archive", "rebuild", "forum"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let page = read(&stats);
    let row = |label: &str| -> String {
        page.split(&format!("<th scope=\"row\">{label}</th>"))
            .nth(1)
            .and_then(|r| r.split("</tr>").next())
            .unwrap_or_else(|| panic!("no row for {label}: {page}"))
            .to_string()
    };
    // By hand. October (i = 0..7): 8 questions; answered 1, 2, 4, 5, 7 (5 = 62 %); solved 1
    // and 5 (2 = 25 %); waits 20, 30, 50, 60, 80 min: median 50 min; #leefloon 0, 2, 4, 6
    // (4), #huurwaarborg 0, 5 (2).
    let oct = row("oktober 2026");
    assert!(
        oct.starts_with("<td>8</td><td>5 (62%)</td><td>2 (25%)</td><td>50 min</td>"),
        "{oct}"
    );
    assert!(oct.contains("#leefloon</a> (4), <a class=\"tag\" href=\"tags/huurwaarborg.html\">#huurwaarborg</a> (2)"), "{oct}");
    // November (i = 8..19): 12 questions; answered 8, 10, 11, 13, 14, 16, 17, 19 (8 = 66 %);
    // solved 13 and 17 (9 has no answer) (2 = 16 %); waits 90, 110, 120, 140, 150, 170,
    // 180, 200: median (140 + 150) / 2 = 145 min = 2 u 25 min; #leefloon 8, 10, 12, 14, 16,
    // 18 (6), #huurwaarborg 10, 15 (2).
    let nov = row("november 2026");
    assert!(
        nov.starts_with("<td>12</td><td>8 (66%)</td><td>2 (16%)</td><td>2 u 25 min</td>"),
        "{nov}"
    );
    assert!(
        nov.contains("#leefloon</a> (6)") && nov.contains("#huurwaarborg</a> (2)"),
        "{nov}"
    );
    // No names on the page.
    assert!(
        !page.contains("Vrager") && !page.contains("Helper"),
        "{page}"
    );
    // The same figures on the command line.
    let out = env.cli(&["stats", "forum"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let line = |m: &str| {
        out.stdout
            .lines()
            .find(|l| l.trim_start().starts_with(m))
            .unwrap_or_else(|| panic!("no {m} in {}", out.stdout))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert!(
        line("2026-10").starts_with("2026-10 8 5 ( 62%) 2 ( 25%) 0h50 #leefloon (4)"),
        "{}",
        out.stdout
    );
    assert!(
        line("2026-11").starts_with("2026-11 12 8 ( 66%) 2 ( 16%) 2h25"),
        "{}",
        out.stdout
    );
    // Tag pages list their questions.
    let tag = read(&dir.join("tags/huurwaarborg.html"));
    assert_eq!(tag.matches("<li>").count(), 4, "{tag}");
    assert!(read(&dir.join("tags/index.html")).contains("#leefloon"));
}

/// A new question gets its asker alone one mail naming the earlier question like it; an
/// unrelated question gets none.
#[test]
fn similar_earlier_questions_are_mailed_to_the_asker_only() {
    let sink = Sink::start();
    let opts = Opts {
        posting: "open",
        list_extra: "archive = \"public\"\narchive_url = \"https://lists.example.org/archive/forum\"\nsuggest_similar = true\n".into(),
        ..Opts::default()
    };
    let mut env = TestEnv::new(sink.port, opts);
    let (asker, other) = (member(1), member(2));
    env.add_members(&[asker.clone(), other.clone()]);
    let d = Daemon::start(&mut env);
    let send = |from: &str, subject: &str, id: &str, parent: Option<&str>, body: &str| {
        let code = post(d.port, from, LIST, &raw(from, subject, id, parent, body));
        assert_eq!(code, 250, "{id}");
    };
    send(
        &other,
        "Leefloon bij verhuis naar een andere gemeente",
        "q1@ocmw-gent.be",
        None,
        "Een cliënt verhuist volgende maand. Loopt het leefloon door in de nieuwe gemeente?",
    );
    send(
        &other,
        "Parkeerkaart voor bezoekers van het OCMW",
        "p1@ocmw-gent.be",
        None,
        "Waar vragen bezoekers een parkeerkaart aan?",
    );
    assert!(wait_until(WAIT, || d
        .stderr()
        .matches("post accepted")
        .count()
        == 2));
    let similar = |to: &str| -> Vec<Received> {
        sink.messages()
            .into_iter()
            .filter(|m| {
                m.rcpt == to && subject_of(&m.data).contains("Earlier questions like yours")
            })
            .collect()
    };
    // Let the archive index both before the new question comes.
    assert!(wait_until(WAIT, || site(&env).join("t/2.html").exists()));
    send(
        &asker,
        "Verhuis van een cliënt met leefloon",
        "q2@ocmw-leuven.be",
        None,
        "Mijn cliënt verhuist naar een andere gemeente: wie betaalt dan het leefloon?",
    );
    assert!(
        wait_until(WAIT, || similar(&asker).len() == 1),
        "{}",
        d.stderr()
    );
    let m = String::from_utf8_lossy(&similar(&asker)[0].data).replace("=\r\n", "");
    assert!(
        m.contains("Leefloon bij verhuis naar een andere gemeente"),
        "{m}"
    );
    assert!(
        m.contains("https://lists.example.org/archive/forum/t/1.html"),
        "{m}"
    );
    assert!(!m.contains("Parkeerkaart"), "{m}");
    assert!(
        similar(&other).is_empty(),
        "only the asker is told: {}",
        String::from_utf8_lossy(&similar(&other)[0].data)
    );
    // The list copies carry nothing of it.
    assert!(sink
        .messages()
        .iter()
        .filter(|m| subject_of(&m.data).contains("Verhuis van een"))
        .all(|m| !String::from_utf8_lossy(&m.data).contains("t/1.html")));

    // An unrelated question: no mail.
    send(
        &asker,
        "Openingsuren van het sociaal huis tijdens de feestdagen",
        "q3@ocmw-leuven.be",
        None,
        "Zijn jullie open tussen kerst en nieuwjaar?",
    );
    assert!(wait_until(WAIT, || site(&env).join("t/4.html").exists()));
    // The suggestions step runs every 5 s after the archive: give it two rounds.
    std::thread::sleep(std::time::Duration::from_secs(11));
    assert_eq!(similar(&asker).len(), 1, "nothing similar, no mail");
}

/// An owner marks a question solved by mail (`opgelost URL` to -request, confirmed from the
/// owner's address); the same from a member changes nothing.
#[test]
fn an_owner_marks_a_question_solved_by_mail_after_confirming() {
    let sink = Sink::start();
    let mut env = TestEnv::new(sink.port, public());
    let d = Daemon::start(&mut env);
    let dir = site(&env);
    let thread = dir.join("t/1.html");
    let request = "forum-request@lists.example.org";
    let send =
        |from: &str, rcpt: &str, subject: &str, id: &str, parent: Option<&str>, body: &str| {
            let addr = from
                .split('<')
                .nth(1)
                .and_then(|a| a.split('>').next())
                .unwrap_or(from);
            assert_eq!(
                post(d.port, addr, rcpt, &raw(from, subject, id, parent, body)),
                250,
                "{id}"
            );
        };
    send(
        "An <an@ocmw-gent.be>",
        LIST,
        "Leefloon en verhuis",
        "q1@ocmw-gent.be",
        None,
        "Wie weet het?",
    );
    send(
        "Kris Wouters <kris@ocmw-aalst.be>",
        LIST,
        "Re: [forum] Leefloon en verhuis",
        "r1@ocmw-aalst.be",
        Some("q1@ocmw-gent.be"),
        "Zo zit het.",
    );
    assert!(wait_until(WAIT, || read(&thread)
        .matches("<article")
        .count()
        == 2));
    let url = "https://lists.example.org/archive/forum/t/1.html#m2";
    let mails_to = |to: &str| -> Vec<Received> {
        sink.messages()
            .into_iter()
            .filter(|m| m.rcpt.eq_ignore_ascii_case(to))
            .collect()
    };
    // A member (not an owner) is told it is for owners; nothing changes.
    send(
        "Kris Wouters <kris@ocmw-aalst.be>",
        request,
        "opgelost",
        "c1@ocmw-aalst.be",
        None,
        &format!("opgelost {url}"),
    );
    assert!(wait_until(WAIT, || mails_to("kris@ocmw-aalst.be").len() == 1));
    let answer =
        String::from_utf8_lossy(&mails_to("kris@ocmw-aalst.be")[0].data).replace("=\r\n", "");
    assert!(answer.contains("beheerders"), "{answer}");
    // The owner: a confirmation first, then the mark.
    send(
        OWNER,
        request,
        "opgelost",
        "c2@example.org",
        None,
        &format!("opgelost {url}"),
    );
    assert!(
        wait_until(WAIT, || mails_to(OWNER).len() == 1),
        "{}",
        d.stderr()
    );
    assert!(!read(&thread).contains("Beste antwoord"));
    let confirm = confirm_address_in(&mails_to(OWNER)[0].data);
    send(
        OWNER,
        &confirm,
        "Re: bevestig",
        "c3@example.org",
        None,
        "ja",
    );
    assert!(
        wait_until(WAIT, || read(&thread)
            .contains("Beste antwoord: Kris Wouters")),
        "{}\n{}",
        read(&thread),
        d.stderr()
    );
    // `heropend 1` reopens it the same way.
    send(
        OWNER,
        request,
        "heropend",
        "c4@example.org",
        None,
        "heropend 1",
    );
    assert!(wait_until(WAIT, || mails_to(OWNER).len() >= 3));
    let confirm = mails_to(OWNER)
        .iter()
        .rev()
        .find(|m| String::from_utf8_lossy(&m.data).contains("forum-confirm+"))
        .map(|m| confirm_address_in(&m.data))
        .expect("a second confirmation");
    send(
        OWNER,
        &confirm,
        "Re: bevestig",
        "c5@example.org",
        None,
        "ja",
    );
    assert!(
        wait_until(WAIT, || !read(&thread).contains("Beste antwoord")),
        "{}",
        read(&thread)
    );
}
