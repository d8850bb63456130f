//! End to end: owners run the list by mail to `-request`, through the real listener, the
//! real binary and a real SMTP sink. Membership changes wait for the owner's confirmation
//! by reply unless the mail carries a DKIM signature of the owner's domain that verifies
//! (the key published through the daemon's `[dns] records` table, the mail signed here
//! with mail-auth); a stranger using the same words gets the unknown-command answer.

mod common;

use common::*;
use mail_auth::common::crypto::Ed25519Key;
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner};
use mail_parser::{MessageParser, MimeHeaders};
use std::time::Duration;

const REQUEST: &str = "forum-request@lists.example.org";

fn text(raw: &[u8]) -> String {
    MessageParser::default()
        .parse(raw)
        .and_then(|m| m.body_text(0).map(|t| t.replace("\r\n", "\n")))
        .unwrap_or_default()
}

fn members(env: &TestEnv) -> Vec<String> {
    let out = env.cli(&["members", "list", "forum"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    // `Name <address>` lines: the addresses.
    let mut v: Vec<String> = out
        .stdout
        .lines()
        .map(|l| {
            let l = l.to_lowercase();
            match (l.rfind('<'), l.strip_suffix('>')) {
                (Some(i), Some(_)) => l[i + 1..l.len() - 1].to_string(),
                _ => l,
            }
        })
        .collect();
    v.sort();
    v
}

fn start(opts: Opts) -> (Sink, TestEnv, Daemon) {
    let sink = Sink::start();
    let mut env = TestEnv::new(sink.port, opts);
    let d = Daemon::start(&mut env);
    (sink, env, d)
}

/// A request from the owner with a CSV attachment.
fn with_csv(from: &str, body: &str, csv: &str) -> Vec<u8> {
    format!(
        "From: Owner <{from}>\r\nTo: {REQUEST}\r\nSubject: beheer\r\nMessage-ID: <csv-{n}@example.org>\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n\
--b1\r\nContent-Type: text/csv; charset=utf-8\r\nContent-Disposition: attachment; filename=\"leden.csv\"\r\n\r\n{csv}\r\n\
--b1--\r\n",
        n = csv.len()
    )
    .into_bytes()
}

#[test]
fn forged_owner_mail_without_dkim_changes_nothing_until_the_owner_confirms() {
    let (sink, env, d) = start(Opts::default());
    let csv = "address,name\r\nan.claes@ocmw-gent.be,An Claes\r\n\"kris@ocmw-brugge.be\",\"Wouters, Kris\"\r\n";
    let raw = with_csv(OWNER, "add\r\npiet@ocmw-aalst.be\r\n", csv);
    // The address after `add` and the attachment: the line names some, so the attachment
    // is not read; a second `add` with no addresses reads it.
    assert_eq!(post(d.port, OWNER, REQUEST, &raw), 250);
    let first = wait_mails(&sink, OWNER, 1);
    let t = text(&first[0].data);
    assert!(t.contains("+ piet@ocmw-aalst.be"), "lists the change: {t}");
    assert!(
        members(&env).is_empty(),
        "nothing changes before confirming"
    );
    let raw = with_csv(OWNER, "toevoegen\r\n", csv);
    assert_eq!(post(d.port, OWNER, REQUEST, &raw), 250);
    let second = wait_mails(&sink, OWNER, 2);
    let t2 = text(&second[1].data);
    assert!(
        t2.contains("+ An Claes <an.claes@ocmw-gent.be>")
            && t2.contains("+ Wouters, Kris <kris@ocmw-brugge.be>"),
        "the CSV's members: {t2}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        members(&env).is_empty(),
        "nothing changes before confirming"
    );
    // Someone else replying with the owner's token changes nothing either.
    let addr = confirm_address_in(&first[0].data);
    let m = message(
        "eve@evil.example",
        "Re: confirm",
        "eve-1@evil.example",
        "ok",
    );
    assert_eq!(post(d.port, "eve@evil.example", &addr, &m), 250);
    let e = wait_mails(&sink, "eve@evil.example", 1);
    let te = text(&e[0].data);
    assert!(te.contains("sent to another address"), "{te}");
    assert!(
        members(&env).is_empty(),
        "a forged confirmation changes nothing"
    );
    // The owner confirms the first: exactly that member, welcomed.
    let m = message(OWNER, "Re: confirm", "own-1@example.org", "ok");
    assert_eq!(post(d.port, OWNER, &addr, &m), 250);
    assert!(wait_until(WAIT, || members(&env) == ["piet@ocmw-aalst.be"]));
    let w = wait_mails(&sink, "piet@ocmw-aalst.be", 1);
    assert!(text(&w[0].data).to_lowercase().contains("welcome"));
    let answer = wait_mails(&sink, OWNER, 3);
    let a = text(&answer[2].data);
    assert!(a.contains("Added 1 member(s): piet@ocmw-aalst.be"), "{a}");
    // The second, through its confirmation address too.
    let addr2 = confirm_address_in(&second[1].data);
    let m = message(OWNER, "Re: confirm", "own-2@example.org", "ok");
    assert_eq!(post(d.port, OWNER, &addr2, &m), 250);
    assert!(wait_until(WAIT, || members(&env).len() == 3));
    let list = env.cli(&["members", "list", "forum"]).stdout;
    assert!(
        list.contains("Wouters, Kris <kris@ocmw-brugge.be>"),
        "{list}"
    );
    // Used once.
    let m = message(OWNER, "Re: confirm", "own-3@example.org", "ok");
    assert_eq!(post(d.port, OWNER, &addr, &m), 250);
    let again = wait_mails(&sink, OWNER, 5);
    assert!(text(&again[4].data).contains("already used"));
}

/// An Ed25519 key for the owner's domain: the signer and its `p=` value.
fn owner_key() -> (Vec<u8>, String) {
    use base64::Engine;
    let pkcs8 = Ed25519Key::generate_pkcs8().expect("key");
    let key = Ed25519Key::from_pkcs8_der(&pkcs8).expect("key");
    let p = base64::engine::general_purpose::STANDARD.encode(key.public_key());
    (pkcs8, p)
}

fn signed(pkcs8: &[u8], domain: &str, unsigned: &[u8]) -> Vec<u8> {
    let key = Ed25519Key::from_pkcs8_der(pkcs8).expect("key");
    let sig = DkimSigner::from_key(key)
        .domain(domain)
        .selector("vb")
        .headers(["From", "To", "Subject", "Message-ID", "Content-Type"])
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed)
        .sign(unsigned)
        .expect("sign");
    let mut raw = sig.to_header().into_bytes();
    raw.extend_from_slice(unsigned);
    raw
}

#[test]
fn a_dkim_signed_owner_mail_applies_at_once() {
    let (pkcs8, p) = owner_key();
    let opts = Opts {
        dns_records: vec![
            (
                "vb._domainkey.example.org".into(),
                format!("v=DKIM1; k=ed25519; p={p}"),
            ),
            // The same key for another domain: its signatures verify, but do not align.
            (
                "vb._domainkey.evil.example".into(),
                format!("v=DKIM1; k=ed25519; p={p}"),
            ),
        ],
        ..Opts::default()
    };
    let (sink, env, d) = start(opts);
    env.add_members(&["oud@ocmw-gent.be".to_string()]);
    let body =
        "add Jan Peeters <jan@ocmw-leuven.be>\nremove oud@ocmw-gent.be\nremove nooit@ocmw.be\n";
    let raw = signed(
        &pkcs8,
        "example.org",
        &message(OWNER, "beheer", "dkim-own-1@example.org", body),
    );
    assert_eq!(post(d.port, OWNER, REQUEST, &raw), 250);
    let a = wait_mails(&sink, OWNER, 1);
    assert!(
        wait_until(WAIT, || members(&env) == ["jan@ocmw-leuven.be"]),
        "{}\n{}",
        text(&a[0].data),
        d.stderr()
    );
    let t = text(&a[0].data);
    assert!(t.contains("Added 1 member(s): jan@ocmw-leuven.be"), "{t}");
    assert!(t.contains("Removed 1 member(s): oud@ocmw-gent.be"), "{t}");
    assert!(
        t.contains("Not members, nothing changed for 1: nooit@ocmw.be"),
        "{t}"
    );
    assert!(!t.contains("confirm"), "no confirmation asked: {t}");
    wait_mails(&sink, "jan@ocmw-leuven.be", 1);
    wait_mails(&sink, "oud@ocmw-gent.be", 1);
    // The same signature on a changed body does not verify: asked to confirm instead.
    let raw = signed(
        &pkcs8,
        "example.org",
        &message(OWNER, "beheer", "dkim-own-2@example.org", "add x@ocmw.be\n"),
    );
    let tampered = String::from_utf8_lossy(&raw).replace("add x@ocmw.be", "add eve@evil.example");
    assert_eq!(post(d.port, OWNER, REQUEST, tampered.as_bytes()), 250);
    let b = wait_mails(&sink, OWNER, 2);
    let t = text(&b[1].data);
    assert!(
        t.contains("+ eve@evil.example") && t.contains("confirm"),
        "{t}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(members(&env), ["jan@ocmw-leuven.be"]);
    // A valid signature of another domain does not count for the owner's From.
    let raw = signed(
        &pkcs8,
        "evil.example",
        &message(OWNER, "beheer", "dkim-own-3@example.org", "add y@ocmw.be\n"),
    );
    assert_eq!(post(d.port, OWNER, REQUEST, &raw), 250);
    let c = wait_mails(&sink, OWNER, 3);
    assert!(text(&c[2].data).contains("+ y@ocmw.be"));
    assert_eq!(members(&env), ["jan@ocmw-leuven.be"]);
    assert!(
        !d.stderr().contains("jan@ocmw-leuven.be"),
        "no addresses in the log"
    );
}

#[test]
fn a_stranger_using_owner_words_gets_the_unknown_command_answer() {
    let (sink, env, d) = start(Opts::default());
    let stranger = "eve@evil.example";
    let ask = |line: &str, n: usize| {
        let m = message(stranger, "x", &format!("eve-{n}@evil.example"), line);
        assert_eq!(post(d.port, stranger, REQUEST, &m), 250);
        let got = wait_mails(&sink, stranger, n);
        text(&got[n - 1].data).replace(&format!("\"{line}\""), "\"LINE\"")
    };
    let owner_words = ask("add eve@evil.example", 1);
    let nonsense = ask("frobnicate eve@evil.example", 2);
    assert_eq!(owner_words, nonsense);
    assert!(
        owner_words.contains("Not understood: \"LINE\""),
        "{owner_words}"
    );
    assert_eq!(ask("members", 3), ask("frobnicate", 4));
    assert!(!owner_words.contains("You are an owner"));
    assert!(members(&env).is_empty());
}

#[test]
fn owners_read_members_held_posts_bounces_and_stats_by_mail() {
    let (sink, env, d) = start(Opts::default());
    env.add_members(&[
        "an@ocmw-gent.be".to_string(),
        "kris@ocmw-brugge.be".to_string(),
    ]);
    // A post from a non-member is held.
    let m = message(
        "gast@elders.be",
        "Vraag van buiten",
        "held-1@elders.be",
        "Hallo",
    );
    assert_eq!(post(d.port, "gast@elders.be", LIST, &m), 250);
    assert!(wait_until(WAIT, || env
        .cli(&["moderate", "list"])
        .stdout
        .contains("Vraag van buiten")));
    let m = message(
        OWNER,
        "beheer",
        "read-1@example.org",
        "leden gent\nheld\nbounces\nstats\nexport\nhelp\n",
    );
    assert_eq!(post(d.port, OWNER, REQUEST, &m), 250);
    let got = wait_until(WAIT, || {
        mails_for(&sink, OWNER)
            .iter()
            .any(|m| text(&m.data).contains("Posts waiting for approval"))
    });
    assert!(got, "an answer to the owner");
    let a = mails_for(&sink, OWNER)
        .into_iter()
        .find(|m| text(&m.data).contains("Posts waiting for approval"))
        .map(|m| m.data)
        .unwrap_or_default();
    let t = text(&a);
    assert!(
        t.contains("Members (1):\n\nan@ocmw-gent.be"),
        "the filter: {t}"
    );
    assert!(
        !t.contains("kris@ocmw-brugge.be"),
        "only those matching: {t}"
    );
    assert!(t.contains("From:    gast@elders.be") && t.contains("Vraag van buiten"));
    assert!(t.contains("Members with bounces: none."), "{t}");
    assert!(t.contains("members:           2"), "stats: {t}");
    assert!(
        t.contains("You are an owner of this list"),
        "owners' help: {t}"
    );
    // The CSV attachment.
    let msg = MessageParser::default().parse(&a).expect("parse");
    let csv = msg
        .attachments()
        .find(|p| p.attachment_name() == Some("forum-members.csv"))
        .map(|p| String::from_utf8_lossy(p.contents()).into_owned())
        .expect("a CSV attachment");
    assert!(csv.starts_with("address,name,joined,digest,nomail,language"));
    assert!(csv.contains("an@ocmw-gent.be") && csv.contains("kris@ocmw-brugge.be"));
    // The approve line in the answer works by reply.
    let token = token_after(&t, "approve");
    let m = message(
        OWNER,
        "Re: held",
        "read-2@example.org",
        &format!("approve {token}"),
    );
    assert_eq!(post(d.port, OWNER, REQUEST, &m), 250);
    wait_mails(&sink, "an@ocmw-gent.be", 1);
    wait_mails(&sink, "kris@ocmw-brugge.be", 1);
    assert!(env.cli(&["moderate", "list"]).stdout.trim().is_empty());
}

/// A member's `set` with a forged From waits for the member's confirmation; the same
/// command signed by the member's own domain applies at once.
#[test]
fn a_forged_set_waits_for_the_member_and_a_signed_one_applies() {
    let (pkcs8, p) = owner_key();
    let opts = Opts {
        dns_records: vec![(
            "vb._domainkey.example.org".into(),
            format!("v=DKIM1; k=ed25519; p={p}"),
        )],
        ..Opts::default()
    };
    let (sink, env, d) = start(opts);
    let lid = "lid@example.org";
    env.add_members(&[lid.to_string()]);
    let settings = || {
        env.cli(&["members", "export", "forum"])
            .stdout
            .lines()
            .find(|l| l.starts_with(lid))
            .map(|l| l.split(',').skip(3).take(2).collect::<Vec<_>>().join(","))
            .unwrap_or_default()
    };
    assert_eq!(settings(), "off,off");
    // Forged: not signed. A confirmation to the member; nothing changes.
    let m = message(lid, "x", "set-1@evil.example", "set nomail on\n");
    assert_eq!(post(d.port, "eve@evil.example", REQUEST, &m), 250);
    let c = wait_mails(&sink, lid, 1);
    let t = text(&c[0].data);
    assert!(t.contains("set nomail on") && t.contains("forged"), "{t}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(settings(), "off,off", "nothing before the member confirms");
    // The member does not want it, so does not confirm; a signed `set digest on` of the
    // member's own applies at once.
    let raw = signed(
        &pkcs8,
        "example.org",
        &message(lid, "x", "set-2@example.org", "set digest on\n"),
    );
    assert_eq!(post(d.port, lid, REQUEST, &raw), 250);
    let a = wait_mails(&sink, lid, 2);
    assert!(
        text(&a[1].data).contains("digest is now on"),
        "{}",
        text(&a[1].data)
    );
    assert_eq!(settings(), "on,off");
    // Confirming the first one later carries out exactly that command.
    let ok = message(lid, "Re: confirm", "set-3@example.org", "ok");
    assert_eq!(post(d.port, lid, &confirm_address_in(&c[0].data), &ok), 250);
    assert!(wait_until(WAIT, || settings() == "on,on"));
}

/// 60 posts held in an hour: the owners get a few notices of their own and then one
/// summary with an approve line per post, not 60 mails with 60 posts attached.
#[test]
fn a_flood_of_held_posts_is_a_few_mails_to_the_owners() {
    let (sink, env, d) = start(Opts::default());
    let mut c = SmtpClient::connect(d.port);
    assert_eq!(c.cmd("EHLO flood.example").code, 250);
    for i in 0..60 {
        let from = format!("gast{i}@elders{i}.example");
        let m = message(
            &from,
            &format!("Reclame {i}"),
            &format!("f{i}@x.example"),
            "Koop nu.",
        );
        assert_eq!(c.transaction(&from, &[LIST], &m).code, 250);
    }
    c.quit();
    assert!(wait_until(WAIT, || env
        .cli(&["moderate", "list"])
        .stdout
        .lines()
        .count()
        == 60));
    // The summary follows within a maintenance round.
    assert!(wait_until(WAIT, || mails_for(&sink, OWNER).iter().any(
        |m| text(&m.data).contains("wait for approval (more than a few")
    )));
    assert!(env.wait_queue_empty());
    std::thread::sleep(Duration::from_secs(6));
    let to_owner = mails_for(&sink, OWNER);
    assert!(to_owner.len() <= 5, "{} mails to the owner", to_owner.len());
    let bytes: usize = to_owner.iter().map(|m| m.data.len()).sum();
    assert!(bytes < 100_000, "{bytes} bytes to the owner");
    // Every held post is named somewhere with its approve line, or waits for the next
    // hourly summary; those named by the summary are not attached.
    let summary = to_owner
        .iter()
        .map(|m| text(&m.data))
        .find(|t| t.contains("more than a few"))
        .unwrap_or_default();
    let approves = summary.matches("approve ").count();
    assert!(approves >= 1, "{summary}");
    let token = token_after(&summary, "approve");
    let m = message(
        OWNER,
        "Re: held",
        "flood-ok@example.org",
        &format!("approve {token}"),
    );
    assert_eq!(post(d.port, OWNER, REQUEST, &m), 250);
    assert!(wait_until(WAIT, || env
        .cli(&["moderate", "list"])
        .stdout
        .lines()
        .count()
        == 59));
}
