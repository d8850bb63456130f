//! End to end: list copies and notices are DKIM-signed with the key `vraagbaak dkim keygen`
//! wrote, and an independent verifier (Python's dkimpy, `tests/scripts/dkim_verify.py`)
//! accepts them as delivered, and after a relay adds a Received header; a changed
//! subject fails.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

const VERIFY: &str = "tests/scripts/dkim_verify.py";

/// Whether dkimpy (and PyNaCl, for Ed25519) can be imported; when not, [`skip`] says so
/// (and fails under CI).
fn dkimpy_available(test: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import dkim, nacl"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return true;
    }
    skip(
        test,
        "python3 with dkimpy and pynacl is missing \
(python3 -m pip install dkimpy pynacl; .ci/run installs them)",
    );
    false
}

/// The record `dkim keygen` printed: (name, TXT value).
fn record(stdout: &str) -> (String, String) {
    let line = stdout
        .lines()
        .find(|l| l.contains(" IN TXT "))
        .unwrap_or_else(|| panic!("no TXT record in {stdout}"));
    let (name, value) = line.split_once(" IN TXT ").unwrap();
    let value: String = value
        .split('"')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s)
        .collect();
    (name.trim().trim_end_matches('.').to_string(), value)
}

fn verify(dir: &Path, n: usize, raw: &[u8], rec: &(String, String)) -> (bool, String) {
    let f = dir.join(format!("copy-{n}.eml"));
    std::fs::write(&f, raw).unwrap();
    let out = Command::new("python3")
        .args([VERIFY, f.to_str().unwrap(), &rec.0, &rec.1])
        .output()
        .expect("run the verifier");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn signed_copies_verify(algorithm: &str) {
    let sink = Sink::start();
    let mut env = TestEnv::new(sink.port, Opts::web());
    let key = env.path().join(format!("forum-{algorithm}.pem"));
    env.opts.list_extra = format!(
        "dkim_selector = \"vb1\"\ndkim_key = {:?}\n",
        key.display().to_string()
    );
    env.write_config();
    let out = env.cli(&["dkim", "keygen", "forum", "--algorithm", algorithm]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let rec = record(&out.stdout);
    assert_eq!(rec.0, "vb1._domainkey.lists.example.org");
    assert!(rec.1.starts_with(&format!(
        "v=DKIM1; k={}; p=",
        if algorithm == "rsa" { "rsa" } else { "ed25519" }
    )));
    // A second keygen never overwrites the key.
    let again = env.cli(&["dkim", "keygen", "forum"]);
    assert_ne!(again.code, Some(0));
    assert!(again.stderr.contains("never overwritten"), "{again:?}");
    assert_eq!(env.cli(&["check-config"]).code, Some(0));

    let members = [member(1), member(2)];
    env.add_members(&members);
    let d = Daemon::start(&mut env);
    let body = "Wie weet raad over het leefloon?\r\nGroeten,\r\nAn\r\n";
    let m = message(&members[0], "Vraag over leefloon", "dkim-1@ocmw.be", body);
    assert_eq!(post(d.port, &members[0], LIST, &m), 250);
    assert!(wait_until(WAIT, || sink.count() == 2));
    // A notice (the welcome text, sent as single mail) is signed too.
    let newcomer = member(3);
    let out = env.cli(&["members", "add", "forum", "--welcome", &newcomer]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(wait_until(WAIT, || sink.count() == 3));
    drop(d);

    for (n, copy) in sink.messages().iter().enumerate() {
        let text = String::from_utf8_lossy(&copy.data);
        assert!(text.starts_with("DKIM-Signature: "), "{text}");
        let (ok, why) = verify(env.path(), n, &copy.data, &rec);
        assert!(ok, "copy for {} does not verify: {why}", copy.rcpt);
        // The relay adds trace fields on top: still valid.
        let mut relayed = b"Received: from lists.example.org (localhost [127.0.0.1])\r\n\tby relay.example.org (Postfix) with ESMTP id 4F1A2; Mon, 23 Nov 2026 10:00:00 +0100\r\n"
            .to_vec();
        relayed.extend_from_slice(&copy.data);
        let (ok, why) = verify(env.path(), n + 100, &relayed, &rec);
        assert!(ok, "relayed copy does not verify: {why}");
        if text.contains("List-Unsubscribe-Post") {
            let sig = text.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
            assert!(
                sig.contains("list-unsubscribe"),
                "one-click fields are signed"
            );
            // A changed subject is caught.
            let forged = text.replacen("Subject: ", "Subject: Dringend: ", 1);
            let (ok, _) = verify(env.path(), n + 200, forged.as_bytes(), &rec);
            assert!(!ok, "a changed subject must fail");
        }
    }
}

#[test]
fn rsa_signed_copies_verify_with_dkimpy() {
    if dkimpy_available("rsa_signed_copies_verify_with_dkimpy") {
        signed_copies_verify("rsa");
    }
}

#[test]
fn ed25519_signed_copies_verify_with_dkimpy() {
    if dkimpy_available("ed25519_signed_copies_verify_with_dkimpy") {
        signed_copies_verify("ed25519");
    }
}
