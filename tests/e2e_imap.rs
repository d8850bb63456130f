//! End to end: receiving by IMAP from a real Dovecot started by the test, fanning out to a
//! real SMTP sink, with the real binary.

mod common;

use common::dovecot::{self, Dovecot};
use common::*;
use std::time::{Duration, Instant};

fn imap_table(d: &Dovecot, mailbox: &str, after: &str, password_file: &std::path::Path) -> String {
    format!(
        r#"[[imap]]
name = "provider"
host = "127.0.0.1"
port = {port}
tls = "none"
username = "{user}"
password_file = {pw:?}
mailbox = "{mailbox}"
list = "forum"
after = "{after}"
poll_interval = "1s"
"#,
        port = d.port,
        user = dovecot::USER,
        pw = password_file.display().to_string(),
    )
}

struct Setup {
    sink: Sink,
    env: TestEnv,
    dovecot: Dovecot,
    members: Vec<String>,
    _tmp: tempfile::TempDir,
}

fn setup(mailbox: &str, after: &str, password: &str) -> Setup {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dovecot = Dovecot::start(tmp.path());
    if mailbox != "INBOX" {
        dovecot.create(mailbox);
    }
    let pw = tmp.path().join("imap-password");
    std::fs::write(&pw, format!("{password}\n")).expect("password file");
    let sink = Sink::start();
    let env = TestEnv::new(
        sink.port,
        Opts {
            extra: imap_table(&dovecot, mailbox, after, &pw),
            ..Opts::default()
        },
    );
    let members: Vec<String> = (0..5).map(member).collect();
    env.add_members(&members);
    Setup {
        sink,
        env,
        dovecot,
        members,
        _tmp: tmp,
    }
}

fn post_from(members: &[String], subject: &str, mid: &str) -> Vec<u8> {
    message(
        &members[0],
        subject,
        mid,
        "Een vraag via de mailbox bij de provider.",
    )
}

/// Waits until every member has `n` copies of the post with `mid`.
fn wait_copies(s: &Setup, mid: &str, n: usize, within: Duration) {
    let want = format!("<{mid}>");
    let ok = wait_until(within, || {
        s.members.iter().all(|m| {
            s.sink
                .messages()
                .iter()
                .filter(|r| r.rcpt == *m && String::from_utf8_lossy(&r.data).contains(&want))
                .count()
                >= n
        })
    });
    assert!(ok, "not every member got {mid}");
}

/// Copies of `mid` per member, after the queue drained.
fn copies(s: &Setup, mid: &str) -> Vec<usize> {
    assert!(s.env.wait_queue_empty());
    std::thread::sleep(Duration::from_millis(500));
    let want = format!("<{mid}>");
    s.members
        .iter()
        .map(|m| {
            s.sink
                .messages()
                .iter()
                .filter(|r| r.rcpt == *m && String::from_utf8_lossy(&r.data).contains(&want))
                .count()
        })
        .collect()
}

#[test]
fn appended_message_is_delivered_once_and_moved() {
    if !dovecot::available("appended_message_is_delivered_once_and_moved") {
        return;
    }
    let mut s = setup("INBOX", "move:Processed", dovecot::PASSWORD);
    let _d = Daemon::start(&mut s.env);
    s.dovecot.append(
        "INBOX",
        &post_from(&s.members, "Via IMAP", "imap-1@ocmw.be"),
    );
    wait_copies(&s, "imap-1@ocmw.be", 1, WAIT);
    assert!(wait_until(WAIT, || s.dovecot.count("Processed") == 1));
    assert_eq!(s.dovecot.count("INBOX"), 0);
    assert_eq!(copies(&s, "imap-1@ocmw.be"), vec![1; 5]);
    // `imap test` reports the account.
    let out = s.env.cli(&["imap", "test", "provider"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.contains("IDLE") && out.stdout.contains("0 messages"),
        "{}",
        out.stdout
    );
}

#[test]
fn crash_between_storing_and_moving_posts_nothing_twice() {
    if !dovecot::available("crash_between_storing_and_moving_posts_nothing_twice") {
        return;
    }
    let mut s = setup("INBOX", "move:Processed", dovecot::PASSWORD);
    s.env.daemon_env = vec![("VRAAGBAAK_CRASH_AT".into(), "imap-after-store".into())];
    let mut d = Daemon::start(&mut s.env);
    s.dovecot.append(
        "INBOX",
        &post_from(&s.members, "Crash", "imap-crash@ocmw.be"),
    );
    assert!(
        wait_until(WAIT, || !d.running()),
        "the fault injection did not stop the daemon"
    );
    // Stored, but still in the INBOX: the crash came before the move.
    assert_eq!(s.dovecot.count("INBOX"), 1);
    s.env.daemon_env.clear();
    let _d = Daemon::start(&mut s.env);
    wait_copies(&s, "imap-crash@ocmw.be", 1, WAIT);
    assert!(wait_until(WAIT, || s.dovecot.count("Processed") == 1));
    assert_eq!(s.dovecot.count("INBOX"), 0);
    assert_eq!(copies(&s, "imap-crash@ocmw.be"), vec![1; 5], "posted once");
}

#[test]
fn poller_recovers_after_dovecot_was_down_30s() {
    if !dovecot::available("poller_recovers_after_dovecot_was_down_30s") {
        return;
    }
    let mut s = setup("INBOX", "delete", dovecot::PASSWORD);
    let d = Daemon::start(&mut s.env);
    s.dovecot.append(
        "INBOX",
        &post_from(&s.members, "Voor", "imap-before@ocmw.be"),
    );
    wait_copies(&s, "imap-before@ocmw.be", 1, WAIT);
    s.dovecot.stop();
    // The provider's delivery agent keeps delivering while IMAP is down.
    let new = s.dovecot.maildir("INBOX").join("new");
    std::fs::create_dir_all(&new).expect("maildir new");
    std::fs::write(
        new.join("1700000000.M1P1.test"),
        post_from(&s.members, "Tijdens", "imap-during@ocmw.be"),
    )
    .expect("deliver into the maildir");
    std::thread::sleep(Duration::from_secs(30));
    let t = Instant::now();
    s.dovecot.restart();
    // Backoff is capped; with 30 s of failures behind it the next attempt is < 40 s away.
    wait_copies(&s, "imap-during@ocmw.be", 1, Duration::from_secs(120));
    eprintln!("recovered {:?} after dovecot came back", t.elapsed());
    assert_eq!(copies(&s, "imap-before@ocmw.be"), vec![1; 5]);
    assert_eq!(copies(&s, "imap-during@ocmw.be"), vec![1; 5]);
    assert!(
        wait_until(WAIT, || s.dovecot.count("INBOX") == 0),
        "deleted"
    );
    let log = d.stderr();
    assert!(
        log.contains("imap account unavailable"),
        "the outage was logged"
    );
    assert!(!log.contains("panicked"));
}

#[test]
fn uidvalidity_reset_reposts_nothing() {
    if !dovecot::available("uidvalidity_reset_reposts_nothing") {
        return;
    }
    let mut s = setup("Forum", "flag", dovecot::PASSWORD);
    let _d = Daemon::start(&mut s.env);
    let first = post_from(&s.members, "Eerste", "imap-first@ocmw.be");
    s.dovecot.append("Forum", &first);
    wait_copies(&s, "imap-first@ocmw.be", 1, WAIT);
    let before = s.dovecot.uidvalidity("Forum");
    // The provider recreates the mailbox: same old message, new UIDVALIDITY, one new one.
    std::thread::sleep(Duration::from_millis(1100));
    s.dovecot.delete("Forum");
    s.dovecot.create("Forum");
    s.dovecot.append("Forum", &first);
    s.dovecot.append(
        "Forum",
        &post_from(&s.members, "Tweede", "imap-second@ocmw.be"),
    );
    assert_ne!(s.dovecot.uidvalidity("Forum"), before, "a new UIDVALIDITY");
    wait_copies(&s, "imap-second@ocmw.be", 1, WAIT);
    assert_eq!(
        copies(&s, "imap-first@ocmw.be"),
        vec![1; 5],
        "not re-posted"
    );
    assert_eq!(copies(&s, "imap-second@ocmw.be"), vec![1; 5]);
}

#[test]
fn wrong_password_gives_one_clear_line() {
    if !dovecot::available("wrong_password_gives_one_clear_line") {
        return;
    }
    let mut s = setup("INBOX", "flag", "not-the-password");
    let out = s.env.cli(&["imap", "test", "provider"]);
    assert_eq!(out.code, Some(69), "{out:?}");
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "{:?}", out.stderr);
    assert!(
        lines[0].contains("provider") && lines[0].contains("login"),
        "{}",
        lines[0]
    );
    assert!(!out.stderr.contains("not-the-password"));
    let d = Daemon::start(&mut s.env);
    assert!(wait_until(WAIT, || d
        .stderr()
        .contains("imap account unavailable")));
    // Dovecot delays each failed login by 2 s; the poller tries again, quietly.
    std::thread::sleep(Duration::from_secs(5));
    let log = d.stderr();
    let errors = log.matches("imap account unavailable").count();
    assert_eq!(errors, 1, "{log}");
    assert!(log.contains("provider"));
    assert!(!log.contains("not-the-password") && !log.contains("panicked"));
}

#[test]
fn a_24_mb_message_comes_through() {
    if !dovecot::available("a_24_mb_message_comes_through") {
        return;
    }
    let mut s = setup("INBOX", "delete", dovecot::PASSWORD);
    let _d = Daemon::start(&mut s.env);
    // 24 MB of base64 lines, as a big scanned attachment would be.
    let line = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAx\r\n";
    let body = line.repeat(24 * 1024 * 1024 / line.len());
    let raw = post_from(&s.members, "Groot bestand", "imap-big@ocmw.be");
    let mut big = raw;
    big.extend_from_slice(body.as_bytes());
    s.dovecot.append("INBOX", &big);
    wait_copies(&s, "imap-big@ocmw.be", 1, WAIT);
    assert_eq!(copies(&s, "imap-big@ocmw.be"), vec![1; 5]);
    let got = s.sink.messages();
    let copy = got.iter().find(|m| m.rcpt == s.members[1]).expect("a copy");
    assert!(
        copy.data.len() > 24 * 1024 * 1024 - 1024,
        "{} bytes",
        copy.data.len()
    );
}

#[test]
fn implicit_tls_and_starttls_with_a_private_ca() {
    if !dovecot::available("implicit_tls_and_starttls_with_a_private_ca") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = Dovecot::start_tls(tmp.path());
    let ca = d.dir.join("ca.pem");
    let account = |name: &str, tls: &str, port: u16, ca: Option<&std::path::Path>| {
        format!(
            "[[imap]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"{tls}\"\n\
username = \"{}\"\npassword = \"{}\"\nlist = \"forum\"\nafter = \"delete\"\npoll_interval = \"1s\"\n{}",
            dovecot::USER,
            dovecot::PASSWORD,
            ca.map(|c| format!("ca_file = {:?}\n", c.display().to_string()))
                .unwrap_or_default()
        )
    };
    let tls_port = d.tls_port.expect("imaps port");
    let sink = Sink::start();
    let mut env = TestEnv::new(
        sink.port,
        Opts {
            extra: account("imaps", "implicit", tls_port, Some(&ca))
                + &account("starttls", "starttls", d.port, Some(&ca))
                + &account("untrusted", "implicit", tls_port, None),
            ..Opts::default()
        },
    );
    // Both TLS modes log in; without the CA the certificate is refused, in one line.
    for name in ["imaps", "starttls"] {
        let out = env.cli(&["imap", "test", name]);
        assert_eq!(out.code, Some(0), "{name}: {out:?}");
    }
    let out = env.cli(&["imap", "test", "untrusted"]);
    assert_eq!(out.code, Some(69), "{out:?}");
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("untrusted") && out.stderr.contains("TLS"),
        "{}",
        out.stderr
    );
    // And a message comes through over TLS.
    let members: Vec<String> = (0..3).map(member).collect();
    env.add_members(&members);
    env.opts.extra = account("imaps", "implicit", tls_port, Some(&ca));
    let _daemon = Daemon::start(&mut env);
    d.append(
        "INBOX",
        &message(&members[0], "Over TLS", "imap-tls@ocmw.be", "via imaps"),
    );
    assert!(wait_until(WAIT, || members
        .iter()
        .all(|m| sink.count_for(m) == 1)));
}
