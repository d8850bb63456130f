//! End to end: subscribing by mail, confirmations, one-click unsubscribe, moderation by
//! reply, member settings, through the real listener, the real binary and a real SMTP sink
//! (and, for one-click, a real HTTP request to the daemon's web endpoint).

mod common;

use common::*;
use mail_parser::MessageParser;
use std::time::Duration;

/// The trimmed values of header `name`.
fn headers(raw: &[u8], name: &str) -> Vec<String> {
    MessageParser::default()
        .parse(raw)
        .map(|m| {
            m.headers_raw()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().replace("\r\n", "").replace('\n', ""))
                .collect()
        })
        .unwrap_or_default()
}

fn header(raw: &[u8], name: &str) -> String {
    headers(raw, name).into_iter().next().unwrap_or_default()
}

/// The decoded text of the first text part.
fn text(raw: &[u8]) -> String {
    MessageParser::default()
        .parse(raw)
        .and_then(|m| m.body_text(0).map(|t| t.into_owned()))
        .unwrap_or_default()
}

fn subject(raw: &[u8]) -> String {
    MessageParser::default()
        .parse(raw)
        .and_then(|m| m.subject().map(str::to_string))
        .unwrap_or_default()
}

/// A mail from `from` (also the envelope sender) to `rcpt`; asserts it is accepted.
fn send(port: u16, from: &str, rcpt: &str, subject: &str, body: &str) {
    let mid = format!("{:016x}@client.example.net", rand_u64());
    let code = post(port, from, rcpt, &message(from, subject, &mid, body));
    assert_eq!(code, 250, "mail from {from} to {rcpt} not accepted");
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// The token in a confirmation mail's Reply-To: `forum-confirm+TOKEN@...`.
fn confirm_token(raw: &[u8]) -> String {
    let rt = header(raw, "Reply-To");
    let start = rt
        .find("forum-confirm+")
        .unwrap_or_else(|| panic!("no confirm address in Reply-To: {rt:?}"))
        + "forum-confirm+".len();
    let token: String = rt[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    assert_eq!(token.len(), 40, "token {token:?}");
    token
}

/// The path of the login link in a mail's text.
fn login_path(body: &str) -> String {
    let start = body.find("/login/forum/").expect("a login link");
    body[start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect()
}

fn members(env: &TestEnv) -> Vec<String> {
    let out = env.cli(&["members", "list", "forum"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let mut v: Vec<String> = out.stdout.lines().map(|l| l.to_lowercase()).collect();
    v.sort();
    v
}

/// The path of the https/http URL in a List-Unsubscribe value.
fn unsubscribe_path(value: &str) -> String {
    let start = value
        .find("<http")
        .expect("an http URL in List-Unsubscribe")
        + 1;
    let end = start + value[start..].find('>').expect("closing >");
    let url = &value[start..end];
    let after_scheme = &url[url.find("://").expect("scheme") + 3..];
    after_scheme[after_scheme.find('/').expect("path")..].to_string()
}

fn start(opts: Opts) -> (Sink, TestEnv, Daemon) {
    let sink = Sink::start();
    let mut env = TestEnv::new(sink.port, opts);
    let d = Daemon::start(&mut env);
    (sink, env, d)
}

const STRANGER: &str = "nieuw.lid@ocmw-gent.be";

#[test]
fn subscribe_by_mail_needs_confirmation_then_welcomes() {
    let (sink, env, d) = start(Opts {
        http: true,
        ..Opts::default()
    });
    // The body of a mail to -join is not read: this is one subscribe, not three commands.
    send(
        d.port,
        STRANGER,
        "forum-join@lists.example.org",
        "graag lid",
        "subscribe\nhelp\nunsubscribe\n",
    );
    let got = wait_mails(&sink, STRANGER, 1);
    let c = &got[0];
    assert_eq!(c.from, "forum-bounces@lists.example.org", "envelope sender");
    assert_eq!(header(&c.data, "Auto-Submitted"), "auto-replied");
    let token = confirm_token(&c.data);
    assert!(subject(&c.data).contains(&format!("confirm {token}")));
    assert!(
        text(&c.data).contains(&format!("/confirm/{token}")),
        "the confirmation mail carries a link"
    );
    assert!(
        members(&env).is_empty(),
        "nobody is subscribed before confirming"
    );

    // Replying to the confirmation mail (Reply-To: forum-confirm+TOKEN@) confirms.
    send(
        d.port,
        STRANGER,
        &format!("forum-confirm+{token}@lists.example.org"),
        &format!("Re: {}", subject(&c.data)),
        "> quoted text of the confirmation\n",
    );
    let got = wait_mails(&sink, STRANGER, 2);
    let welcome = &got[1];
    assert_eq!(header(&welcome.data, "Auto-Submitted"), "auto-replied");
    assert!(
        text(&welcome.data).contains("forum-leave@lists.example.org"),
        "the welcome says how to leave"
    );
    assert_eq!(members(&env), vec![STRANGER.to_string()]);
    // The owner is told (notify_owners = "each" by default), without the list being shown.
    let owner = wait_mails(&sink, OWNER, 1);
    assert!(text(&owner[0].data).contains(STRANGER));

    // The same token again: a clear answer, nothing changes.
    send(
        d.port,
        STRANGER,
        "forum-request@lists.example.org",
        "",
        &format!("confirm {token}\n"),
    );
    let got = wait_mails(&sink, STRANGER, 3);
    assert!(
        text(&got[2].data).to_lowercase().contains("already"),
        "reused token answer: {}",
        text(&got[2].data)
    );
    assert_eq!(members(&env), vec![STRANGER.to_string()]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(mails_for(&sink, STRANGER).len(), 3, "one answer per mail");
    assert_eq!(mails_for(&sink, OWNER).len(), 1, "no second join notice");
}

#[test]
fn unsubscribe_by_mail_is_confirmed_too() {
    let (sink, env, d) = start(Opts::default());
    let m = "an.peeters@ocmw-leuven.be";
    env.add_members(&[m.to_string(), "blijft@ocmw.be".to_string()]);
    send(d.port, m, "forum-leave@lists.example.org", "weg", "");
    let got = wait_mails(&sink, m, 1);
    let token = confirm_token(&got[0].data);
    assert_eq!(members(&env).len(), 2, "not removed before confirming");
    // Confirm with a command to -request instead of a reply.
    send(
        d.port,
        m,
        "forum-request@lists.example.org",
        "",
        &format!("confirm {token}\n"),
    );
    let got = wait_mails(&sink, m, 2);
    assert!(text(&got[1].data).contains("forum-join@lists.example.org"));
    assert_eq!(members(&env), vec!["blijft@ocmw.be".to_string()]);
    // mlmmj-style sub-address: forum+unsubscribe@ from someone who is not a member says so
    // to that address only.
    send(d.port, m, "forum+unsubscribe@lists.example.org", "", "");
    let got = wait_mails(&sink, m, 3);
    assert!(header(&got[2].data, "Reply-To").is_empty() || !got[2].data.is_empty());
    assert_eq!(members(&env), vec!["blijft@ocmw.be".to_string()]);
}

#[test]
fn one_click_removes_exactly_that_member() {
    let (sink, env, d) = start(Opts {
        http: true,
        ..Opts::default()
    });
    let (a, b, c) = ("a@ocmw-a.be", "b@ocmw-b.be", "c@ocmw-c.be");
    env.add_members(&[a.to_string(), b.to_string(), c.to_string()]);
    send(d.port, a, LIST, "Vraag over leefloon", "Wie weet raad?");
    for r in [a, b, c] {
        wait_mails(&sink, r, 1);
    }
    let copy_b = &mails_for(&sink, b)[0];
    let lu = header(&copy_b.data, "List-Unsubscribe");
    assert!(
        lu.contains("<mailto:forum-leave@lists.example.org>"),
        "{lu}"
    );
    assert_eq!(
        header(&copy_b.data, "List-Unsubscribe-Post"),
        "List-Unsubscribe=One-Click"
    );
    let path_b = unsubscribe_path(&lu);
    let path_a = unsubscribe_path(&header(&mails_for(&sink, a)[0].data, "List-Unsubscribe"));
    assert_ne!(path_a, path_b, "each member has an own URL");
    assert!(
        !path_b.contains('@') && !path_b.contains("ocmw"),
        "no address in the URL"
    );

    // GET shows a page with a button and changes nothing.
    let (status, page) = http(env.http_port, "GET", &path_b, "");
    assert_eq!(status, 200);
    let lower = page.to_lowercase().replace("&#x2f;", "/");
    assert!(
        lower.contains("<form") && lower.contains("post") && lower.contains(&path_b),
        "a form that posts to the same URL: {page}"
    );
    assert_eq!(members(&env).len(), 3);

    // A forged token (one character changed) does nothing.
    let mut forged = path_a.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'a' { b'b' } else { b'a' };
    let (status, _) = http(
        env.http_port,
        "POST",
        std::str::from_utf8(&forged).unwrap(),
        "List-Unsubscribe=One-Click",
    );
    assert_eq!(status, 404);
    assert_eq!(members(&env).len(), 3);

    // RFC 8058: the POST removes that member at once, and nobody else.
    let (status, page) = http(env.http_port, "POST", &path_b, "List-Unsubscribe=One-Click");
    assert_eq!(status, 200, "{page}");
    assert!(!page.contains(b), "the page shows no address");
    assert_eq!(members(&env), vec![a.to_string(), c.to_string()]);
    // Again: nothing more happens.
    let (status, _) = http(env.http_port, "POST", &path_b, "List-Unsubscribe=One-Click");
    assert_ne!(status, 200);
    assert_eq!(members(&env), vec![a.to_string(), c.to_string()]);
    // The member gets a goodbye.
    let got = wait_mails(&sink, b, 2);
    assert!(text(&got[1].data).contains("forum-join@lists.example.org"));
}

#[test]
fn bad_tokens_fail_clearly_and_change_nothing() {
    let (sink, env, d) = start(Opts {
        http: true,
        extra: "[commands]\nconfirm_expiry = \"3s\"\n".into(),
        ..Opts::default()
    });
    let x = "x@ocmw-x.be";
    let y = "y@ocmw-y.be";
    send(d.port, x, "forum-join@lists.example.org", "", "");
    let token = confirm_token(&wait_mails(&sink, x, 1)[0].data);

    // Forged: one character changed.
    let mut f = token.clone().into_bytes();
    f[10] = if f[10] == b'a' { b'b' } else { b'a' };
    let forged = String::from_utf8(f).unwrap();
    send(
        d.port,
        x,
        "forum-request@lists.example.org",
        "",
        &format!("confirm {forged}\n"),
    );
    let a = wait_mails(&sink, x, 2);
    assert!(
        text(&a[1].data).to_lowercase().contains("not valid"),
        "{}",
        text(&a[1].data)
    );

    // A token for another address: y cannot use x's token.
    send(
        d.port,
        y,
        "forum-request@lists.example.org",
        "",
        &format!("confirm {token}\n"),
    );
    let a = wait_mails(&sink, y, 1);
    assert!(
        text(&a[0].data).contains("another address"),
        "{}",
        text(&a[0].data)
    );
    assert!(members(&env).is_empty());

    // Expired, by mail and on the web.
    std::thread::sleep(Duration::from_secs(4));
    send(
        d.port,
        x,
        &format!("forum-confirm+{token}@lists.example.org"),
        "Re: confirm",
        "",
    );
    let a = wait_mails(&sink, x, 3);
    assert!(
        text(&a[2].data).to_lowercase().contains("expired"),
        "{}",
        text(&a[2].data)
    );
    let (status, _) = http(env.http_port, "POST", &format!("/confirm/{token}"), "");
    assert_eq!(status, 410);
    let (status, _) = http(env.http_port, "GET", &format!("/confirm/{forged}"), "");
    assert_eq!(status, 404);
    assert!(members(&env).is_empty(), "no token changed anything");
}

#[test]
fn confirmation_mails_to_a_stranger_are_limited() {
    let (sink, env, d) = start(Opts {
        extra: "[commands]\nmax_confirmations_per_address = 3\n".into(),
        ..Opts::default()
    });
    let mut c = SmtpClient::connect(d.port);
    assert_eq!(c.cmd("EHLO client.example.net").code, 250);
    // 25 requesters ask for the stranger, and 25 forged mails "from" the stranger ask too.
    for i in 0..50 {
        let (from, rcpt, body) = if i % 2 == 0 {
            (
                format!("requester{i}@example.net"),
                "forum-request@lists.example.org",
                format!("subscribe {STRANGER}\n"),
            )
        } else {
            (
                STRANGER.to_string(),
                "forum-join@lists.example.org",
                String::new(),
            )
        };
        let m = message(&from, "", &format!("r{i}@example.net"), &body);
        assert_eq!(c.transaction(&from, &[rcpt], &m).code, 250);
    }
    c.quit();
    // Every requester gets its one answer...
    for i in (0..50).step_by(2) {
        wait_mails(&sink, &format!("requester{i}@example.net"), 1);
    }
    assert!(env.wait_queue_empty());
    // ...and the stranger at most the configured number of mails.
    let n = mails_for(&sink, STRANGER).len();
    assert!((1..=3).contains(&n), "{n} mails to the stranger");
    assert!(members(&env).is_empty());
    let later: Vec<String> = (40..50)
        .step_by(2)
        .map(|i| text(&mails_for(&sink, &format!("requester{i}@example.net"))[0].data))
        .collect();
    assert!(
        later.iter().all(|t| t.to_lowercase().contains("too many")),
        "later requesters hear of the limit: {later:?}"
    );
}

/// `+tag` spellings of one mailbox share its limit: 50 forged requesters asking for
/// `nieuw.lid+N@`, each for another tag, get the mailbox at most the per-mailbox limit.
#[test]
fn confirmation_limits_count_the_mailbox_not_its_tags() {
    let (sink, env, d) = start(Opts {
        extra: "[commands]\nmax_confirmations_per_address = 3\n".into(),
        ..Opts::default()
    });
    let (local, domain) = STRANGER.split_once('@').unwrap();
    let mut c = SmtpClient::connect(d.port);
    assert_eq!(c.cmd("EHLO client.example.net").code, 250);
    for i in 0..50 {
        let from = format!("forger{i}@example{i}.net");
        let m = message(
            &from,
            "",
            &format!("t{i}@example.net"),
            &format!("subscribe {local}+{i}@{domain}\n"),
        );
        assert_eq!(
            c.transaction(&from, &["forum-request@lists.example.org"], &m)
                .code,
            250
        );
    }
    c.quit();
    for i in (0..50).step_by(7) {
        wait_mails(&sink, &format!("forger{i}@example{i}.net"), 1);
    }
    assert!(env.wait_queue_empty());
    let to_mailbox = sink
        .messages()
        .into_iter()
        .filter(|m| {
            let r = m.rcpt.to_lowercase();
            r.ends_with(&format!("@{domain}")) && r.starts_with(&format!("{local}+"))
        })
        .count();
    assert!(
        (1..=3).contains(&to_mailbox),
        "{to_mailbox} mails to one mailbox"
    );
    assert!(members(&env).is_empty());
}

#[test]
fn held_post_approved_by_reply_is_delivered_once() {
    let (sink, env, d) = start(Opts::default());
    let (a, b) = ("a@ocmw-a.be", "b@ocmw-b.be");
    env.add_members(&[a.to_string(), b.to_string()]);
    let outsider = "gast@cawv.be";
    send(
        d.port,
        outsider,
        LIST,
        "Vraag van buiten",
        "Mag ik iets vragen?",
    );
    let notice = &wait_mails(&sink, OWNER, 1)[0];
    let body = text(&notice.data);
    let token = token_after(&body, "approve");
    assert!(header(&notice.data, "Reply-To").contains("forum-request@lists.example.org"));
    assert!(
        String::from_utf8_lossy(&notice.data).contains("message/rfc822"),
        "post attached"
    );
    // The poster hears it waits.
    wait_mails(&sink, outsider, 1);
    assert_eq!(mails_for(&sink, a).len(), 0);

    // Someone else cannot approve with the token.
    send(
        d.port,
        a,
        "forum-request@lists.example.org",
        "Re: held",
        &format!("approve {token}\n"),
    );
    wait_mails(&sink, a, 1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(mails_for(&sink, b).len(), 0, "not approved by a member");

    // The owner approves by replying (the quote below is ignored), adding the sender.
    send(
        d.port,
        OWNER,
        "forum-request@lists.example.org",
        &format!("Re: {}", subject(&notice.data)),
        &format!("approve {token} member\n\n> {body}\n"),
    );
    let copies_b = wait_mails(&sink, b, 1);
    assert_eq!(subject(&copies_b[0].data), "[forum] Vraag van buiten");
    wait_mails(&sink, OWNER, 2);
    assert!(members(&env).contains(&outsider.to_string()));
    // Approving again: "already handled", no second copy.
    send(
        d.port,
        OWNER,
        "forum-request@lists.example.org",
        "",
        &format!("approve {token}\n"),
    );
    assert!(wait_until(WAIT, || mails_for(&sink, OWNER)
        .iter()
        .any(|m| text(&m.data).contains("already handled"))));
    assert!(env.wait_queue_empty());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(mails_for(&sink, b).len(), 1, "delivered once");
    let to_a: Vec<_> = mails_for(&sink, a)
        .into_iter()
        .filter(|m| subject(&m.data).contains("Vraag van buiten"))
        .collect();
    assert_eq!(to_a.len(), 1);

    // A rejection by reply tells the poster, with the reason.
    send(d.port, "ander@cawv.be", LIST, "Reclame", "Koop nu");
    let held_notice = |s: &Sink| {
        mails_for(s, OWNER)
            .into_iter()
            .find(|m| subject(&m.data).contains("Reclame"))
    };
    assert!(wait_until(WAIT, || held_notice(&sink).is_some()));
    let t2 = token_after(&text(&held_notice(&sink).unwrap().data), "approve");
    send(
        d.port,
        OWNER,
        "forum-request@lists.example.org",
        "",
        &format!("reject {t2} geen reclame aub\n"),
    );
    let r = wait_mails(&sink, "ander@cawv.be", 2);
    assert!(text(&r[1].data).contains("geen reclame aub"));
    assert!(env.cli(&["moderate", "list"]).stdout.trim().is_empty());
}

#[test]
fn dutch_commands_get_dutch_answers() {
    // The list speaks English; the member writes Dutch.
    let (sink, env, d) = start(Opts::default());
    let m = "jan@ocmw-brugge.be";
    env.add_members(&[m.to_string()]);
    send(d.port, m, "forum-request@lists.example.org", "hulp", "");
    let a = wait_mails(&sink, m, 1);
    assert_eq!(header(&a[0].data, "Content-Language"), "nl");
    assert!(
        text(&a[0].data).contains("afmelden"),
        "{}",
        text(&a[0].data)
    );
    // English words: English answer.
    send(d.port, m, "forum-request@lists.example.org", "help", "");
    let a = wait_mails(&sink, m, 2);
    assert_eq!(header(&a[1].data, "Content-Language"), "en");
    // A Dutch subscribe: the confirmation is Dutch too.
    send(
        d.port,
        "els@ocmw-brugge.be",
        "forum-request@lists.example.org",
        "",
        "aanmelden\n",
    );
    let a = wait_mails(&sink, "els@ocmw-brugge.be", 1);
    assert_eq!(header(&a[0].data, "Content-Language"), "nl");
    // Settings in Dutch.
    send(
        d.port,
        m,
        "forum-request@lists.example.org",
        "",
        "instellen vakantie aan\n",
    );
    // Without a DKIM signature of its own domain, a `set` is confirmed first (in Dutch).
    let a = wait_mails(&sink, m, 3);
    assert_eq!(header(&a[2].data, "Content-Language"), "nl");
    send(
        d.port,
        m,
        &confirm_address_in(&a[2].data),
        "Re: bevestig",
        "ok",
    );
    let a = wait_mails(&sink, m, 4);
    assert_eq!(header(&a[3].data, "Content-Language"), "nl");
    let csv = env.cli(&["members", "export", "forum"]).stdout;
    assert!(csv.contains("jan@ocmw-brugge.be,,"), "{csv}");
    assert!(
        csv.lines()
            .any(|l| l.starts_with(m) && l.contains(",off,on,")),
        "{csv}"
    );
}

#[test]
fn nomail_members_get_no_posts_until_they_are_back() {
    let (sink, env, d) = start(Opts::default());
    let (a, v) = ("a@ocmw-a.be", "vakantie@ocmw-v.be");
    env.add_members(&[a.to_string(), v.to_string()]);
    send(
        d.port,
        v,
        "forum-request@lists.example.org",
        "set nomail on",
        "",
    );
    let c = wait_mails(&sink, v, 1);
    send(
        d.port,
        v,
        &confirm_address_in(&c[0].data),
        "Re: confirm",
        "ok",
    );
    wait_mails(&sink, v, 2);
    send(d.port, a, LIST, "Eerste", "een");
    wait_mails(&sink, a, 1);
    assert!(env.wait_queue_empty());
    assert_eq!(
        mails_for(&sink, v).len(),
        2,
        "only the confirmation and the answer"
    );
    let out = env.cli(&["members", "set", "forum", v, "nomail", "off"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    send(d.port, a, LIST, "Tweede", "twee");
    let got = wait_mails(&sink, v, 3);
    assert_eq!(subject(&got[2].data), "[forum] Tweede");
}

#[test]
fn import_sends_welcomes_only_when_asked() {
    let (sink, env, _d) = start(Opts::default());
    let f = env.path().join("leden.txt");
    std::fs::write(&f, "stil@ocmw.be\nStil Twee <stil2@ocmw.be>\n").unwrap();
    let out = env.cli(&["members", "import", "forum", f.to_str().unwrap()]);
    assert_eq!(out.code, Some(0), "{out:?}");
    std::fs::write(&f, "welkom@ocmw.be\n").unwrap();
    let out = env.cli(&[
        "members",
        "import",
        "--welcome",
        "forum",
        f.to_str().unwrap(),
    ]);
    assert_eq!(out.code, Some(0), "{out:?}");
    wait_mails(&sink, "welkom@ocmw.be", 1);
    assert!(env.wait_queue_empty());
    assert_eq!(mails_for(&sink, "stil@ocmw.be").len(), 0);
    assert_eq!(mails_for(&sink, "stil2@ocmw.be").len(), 0);
    assert_eq!(members(&env).len(), 3);
}

#[test]
fn unknown_commands_get_one_answer_and_automatic_mail_none() {
    let (sink, env, d) = start(Opts::default());
    let p = "vraag@ocmw.be";
    send(
        d.port,
        p,
        "forum-request@lists.example.org",
        "Vraagje",
        "Hoe werkt dit?\nsubscribe\nfoo\nbar\n",
    );
    let a = wait_mails(&sink, p, 1);
    let t = text(&a[0].data);
    assert!(t.contains("Hoe werkt dit?"), "names the line: {t}");
    assert!(t.contains("set nomail"), "includes the help text: {t}");
    // An auto-reply to the request address is never answered (and kept).
    let auto = format!(
        "From: {p}\r\nSubject: Out of office\r\nAuto-Submitted: auto-replied\r\n\
Message-ID: <auto1@ocmw.be>\r\n\r\nsubscribe\r\n"
    );
    assert_eq!(
        post(
            d.port,
            p,
            "forum-request@lists.example.org",
            auto.as_bytes()
        ),
        250
    );
    // A bounce (empty envelope sender) neither.
    let b = message(p, "help", "bounce1@ocmw.be", "help\n");
    assert_eq!(post(d.port, "", "forum-request@lists.example.org", &b), 250);
    assert!(env.wait_queue_empty());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(mails_for(&sink, p).len(), 1);
    assert!(members(&env).is_empty());
}

#[test]
fn archive_command_mails_a_login_link_to_members_only() {
    let (sink, env, d) = start(Opts {
        http: true,
        ..Opts::default()
    });
    let (m, stranger) = (member(1), "buiten@example.com");
    env.add_members(std::slice::from_ref(&m));
    send(
        d.port,
        &m,
        "forum-request@lists.example.org",
        "archive",
        "archive",
    );
    let mail = wait_mails(&sink, &m, 1);
    let body = text(&mail[0].data);
    let path = login_path(&body);
    let (status, page) = http(env.http_port, "GET", &path, "");
    assert_eq!(status, 200, "{page}");
    let (status, _) = http(env.http_port, "POST", &path, "");
    assert_eq!(status, 303, "the link logs in and redirects to the archive");
    let (status, _) = http(env.http_port, "POST", &path, "");
    assert_eq!(status, 410, "once");
    // A stranger asking by mail is told they are not a member, and gets no link.
    send(
        d.port,
        stranger,
        "forum-request@lists.example.org",
        "archive",
        "archive",
    );
    let mail = wait_mails(&sink, stranger, 1);
    assert!(!text(&mail[0].data).contains("/login/"));
}

/// The archive's login form (`POST /login/forum`) gives a member and a stranger the same
/// answer: the same status, header fields (but for `Date`) and page, byte for byte. Only the
/// member is mailed a link, and it works.
#[test]
fn login_form_answers_members_and_strangers_alike_and_mails_members_only() {
    let (sink, env, _d) = start(Opts::web());
    let (m, stranger) = (member(1), "buiten@example.com");
    env.add_members(std::slice::from_ref(&m));
    let form = |addr: &str| format!("address={}", addr.replace('@', "%40"));
    let answer = |addr: &str| http_response(env.http_port, "POST", "/login/forum", &form(addr));
    let (for_stranger, for_member) = (answer(stranger), answer(&m));
    // The answers without the Date field, which names the second it was sent.
    let without_date = |r: &str| -> String {
        r.split_inclusive("\r\n")
            .filter(|l| !l.to_ascii_lowercase().starts_with("date:"))
            .collect()
    };
    assert!(
        for_member.starts_with("HTTP/1.1 200 "),
        "not a page: {for_member}"
    );
    assert_eq!(
        without_date(&for_stranger),
        without_date(&for_member),
        "the answer tells who is a member"
    );
    // The member's link arrives (the work is done after the answer) and opens a login.
    let mail = wait_mails(&sink, &m, 1);
    let body = text(&mail[0].data);
    let path = login_path(&body);
    let (status, page) = http(env.http_port, "GET", &path, "");
    assert_eq!(status, 200, "{page}");
    // The stranger gets nothing: not when the member's mail is out, nor later.
    assert!(env.wait_queue_empty());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(mails_for(&sink, stranger).len(), 0);
    assert_eq!(mails_for(&sink, &m).len(), 1);
}

/// Two `set` commands in one mail both take effect: each is applied to the member's
/// record as it is inside the transaction, not to a copy read before the other.
#[test]
fn two_settings_in_one_mail_both_survive() {
    let (sink, env, d) = start(Opts::default());
    let m = member(1);
    env.add_members(std::slice::from_ref(&m));
    send(
        d.port,
        &m,
        "forum-request@lists.example.org",
        "",
        "set digest on\nset nomail on\n",
    );
    // One confirmation for both; both carried out when it comes back.
    let c = wait_mails(&sink, &m, 1);
    let t = text(&c[0].data);
    assert!(
        t.contains("set digest on") && t.contains("set nomail on"),
        "{t}"
    );
    send(
        d.port,
        &m,
        &confirm_address_in(&c[0].data),
        "Re: confirm",
        "ok",
    );
    wait_mails(&sink, &m, 2);
    let out = env.cli(&["members", "export", "forum"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with(&m))
        .unwrap_or_else(|| panic!("{m} not exported: {}", out.stdout));
    let f: Vec<&str> = line.split(',').collect();
    assert_eq!((f[3], f[4]), ("on", "on"), "digest and nomail: {line}");
}

/// A confirmation token used at the same moment by mail and on the web acts once: one
/// member, one welcome, one owner notice; the other way gets an "already used" answer.
#[test]
fn a_token_confirmed_by_mail_and_web_at_once_acts_once() {
    let (sink, env, d) = start(Opts {
        http: true,
        ..Opts::default()
    });
    send(d.port, STRANGER, "forum-join@lists.example.org", "lid", "");
    let token = confirm_token(&wait_mails(&sink, STRANGER, 1)[0].data);
    let web_port = env.http_port;
    let path = format!("/confirm/{token}");
    let web = std::thread::spawn(move || http(web_port, "POST", &path, "").0);
    send(
        d.port,
        STRANGER,
        &format!("forum-confirm+{token}@lists.example.org"),
        "Re: bevestig",
        "",
    );
    let web_status = web.join().expect("web thread");
    assert!(env.wait_queue_empty());
    std::thread::sleep(Duration::from_millis(500));
    assert!(env.wait_queue_empty());
    assert_eq!(members(&env), vec![STRANGER.to_string()]);
    let got = mails_for(&sink, STRANGER);
    let welcomes = got
        .iter()
        .filter(|r| text(&r.data).contains("forum-leave@lists.example.org"))
        .count();
    assert_eq!(
        welcomes,
        1,
        "one welcome: {:?}",
        got.iter().map(|r| subject(&r.data)).collect::<Vec<_>>()
    );
    assert_eq!(mails_for(&sink, OWNER).len(), 1, "one join notice");
    let mail_said_used = got
        .iter()
        .any(|r| text(&r.data).to_lowercase().contains("already"));
    assert!(
        web_status == 410 || mail_said_used,
        "the second confirmation is told it was already handled (web {web_status})"
    );
}

/// Two POSTs of one login link at the same moment make one session.
#[test]
fn one_login_link_used_twice_at_once_makes_one_session() {
    let (sink, env, d) = start(Opts {
        http: true,
        ..Opts::default()
    });
    let m = member(1);
    env.add_members(std::slice::from_ref(&m));
    send(
        d.port,
        &m,
        "forum-request@lists.example.org",
        "archive",
        "archive",
    );
    let body = text(&wait_mails(&sink, &m, 1)[0].data);
    let path = login_path(&body);
    let port = env.http_port;
    let posts: Vec<_> = (0..2)
        .map(|_| {
            let p = path.clone();
            std::thread::spawn(move || http_response(port, "POST", &p, ""))
        })
        .collect();
    let answers: Vec<String> = posts
        .into_iter()
        .map(|t| t.join().expect("thread"))
        .collect();
    let sessions = answers
        .iter()
        .filter(|a| a.to_ascii_lowercase().contains("set-cookie:"))
        .count();
    assert_eq!(sessions, 1, "answers: {answers:#?}");
}

/// A GET with a cookie; the whole response.
fn get_with_cookie(port: u16, path: &str, cookie: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

/// Tokens name a membership, not an address: after leaving and joining again, the old
/// one-click link and the old archive session are refused, and the new membership works.
#[test]
fn tokens_of_an_earlier_membership_are_refused_after_rejoining() {
    let (sink, env, d) = start(Opts {
        http: true,
        ..Opts::default()
    });
    let m = member(1);
    env.add_members(std::slice::from_ref(&m));
    // A session for the members-only archive.
    send(
        d.port,
        &m,
        "forum-request@lists.example.org",
        "archive",
        "archive",
    );
    let login = login_path(&text(&wait_mails(&sink, &m, 1)[0].data));
    let answer = http_response(env.http_port, "POST", &login, "");
    let cookie = answer
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("set-cookie")
                .then(|| value.trim().split(';').next().unwrap_or("").to_string())
        })
        .unwrap_or_else(|| panic!("no session cookie: {answer}"));
    let page = get_with_cookie(env.http_port, "/members/forum/", &cookie);
    assert!(
        page.starts_with("HTTP/1.1 200"),
        "the session works: {page:.300}"
    );
    // A post: the member's copy carries its one-click link.
    send(d.port, &m, LIST, "Vraag", "Wie weet raad?");
    let copy = wait_mails(&sink, &m, 2);
    let old_link = unsubscribe_path(&header(&copy[1].data, "List-Unsubscribe"));
    // Leave and join again.
    assert_eq!(env.cli(&["members", "remove", "forum", &m]).code, Some(0));
    env.add_members(std::slice::from_ref(&m));
    let page = get_with_cookie(env.http_port, "/members/forum/", &cookie);
    assert!(
        !page.starts_with("HTTP/1.1 200"),
        "the old session is refused: {page:.300}"
    );
    let (status, _) = http(
        env.http_port,
        "POST",
        &old_link,
        "List-Unsubscribe=One-Click",
    );
    assert_ne!(status, 200);
    assert_eq!(members(&env), vec![m.clone()], "still a member");
    // The new membership's own link works.
    send(d.port, &m, LIST, "Nog een vraag", "Iemand?");
    let copy = wait_mails(&sink, &m, 3);
    let new_link = unsubscribe_path(&header(&copy[2].data, "List-Unsubscribe"));
    assert_ne!(new_link, old_link);
    let (status, _) = http(
        env.http_port,
        "POST",
        &new_link,
        "List-Unsubscribe=One-Click",
    );
    assert_eq!(status, 200);
    assert!(members(&env).is_empty());
}
