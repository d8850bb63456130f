//! End to end: the daemon killed (aborted, as by `kill -9`) at each named crash point,
//! then started again. Nothing acknowledged is lost, nothing is posted twice, and the store
//! opens. The crash points exist only in the test suite's build (`test-hooks`).

mod common;

use common::*;
use std::process::Command;

/// Starts the daemon with a crash point armed; `act` makes it reach the point; waits until
/// it has died; disarms the point.
fn crash_at(env: &mut TestEnv, point: &str, act: impl FnOnce(&Daemon)) {
    env.daemon_env = vec![("VRAAGBAAK_CRASH_AT".into(), point.into())];
    let mut d = Daemon::start(env);
    act(&d);
    assert!(
        wait_until(WAIT, || !d.running()),
        "the daemon did not reach {point}"
    );
    assert!(d.stderr().contains("crash point reached"), "{}", d.stderr());
    env.daemon_env.clear();
}

fn members(n: usize) -> Vec<String> {
    (1..=n).map(member).collect()
}

/// Between the `250` and the pipeline's decision, and between the decision and its flush:
/// after the restart every member gets the post exactly once.
#[test]
fn a_crash_around_the_decision_loses_nothing_and_posts_once() {
    for point in ["pipeline-before-decide", "pipeline-before-flush"] {
        let sink = Sink::start();
        let mut env = TestEnv::new(sink.port, Opts::default());
        let all = members(5);
        env.add_members(&all);
        crash_at(&mut env, point, |d| {
            let raw = message(&all[0], "Vraag", "crash-1@ocmw.be", "Wie weet raad?");
            assert_eq!(post(d.port, &all[0], LIST, &raw), 250, "acknowledged");
        });
        let _d = Daemon::start(&mut env);
        assert!(
            wait_until(WAIT, || sink.count() == all.len()),
            "{point}: {} copies",
            sink.count()
        );
        assert!(env.wait_queue_empty());
        std::thread::sleep(std::time::Duration::from_millis(500));
        for m in &all {
            assert_eq!(sink.count_for(m), 1, "{point}: {m}");
        }
    }
}

/// While a digest is being made (built, not yet stored): after the restart it is made
/// again and every digest member gets it once.
#[test]
fn a_crash_while_a_digest_is_made_sends_it_once() {
    let sink = Sink::start();
    let mut env = TestEnv::new(sink.port, Opts::default());
    let (poster, reader) = (member(1), member(2));
    env.add_members(&[poster.clone(), reader.clone()]);
    let out = env.cli(&["members", "set", "forum", &reader, "digest", "on"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let mut d = Daemon::start(&mut env);
    let raw = message(&poster, "Vraag", "digest-crash@ocmw.be", "Wie weet raad?");
    assert_eq!(post(d.port, &poster, LIST, &raw), 250);
    assert!(wait_until(WAIT, || sink.count_for(&poster) == 1));
    d.kill9();
    let config = env_config(&env);
    crash_at(&mut env, "digest-before-store", |_| {
        // `digest send` goes through the daemon's control socket; the daemon dies.
        let _ = env_cli_digest_send(&config);
    });
    let _d = Daemon::start(&mut env);
    let out = env.cli(&["digest", "send"]);
    assert!(out.stdout.contains("1 digest(s) queued"), "{out:?}");
    assert!(wait_until(WAIT, || sink.count_for(&reader) == 1));
    assert!(env.wait_queue_empty());
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(sink.count_for(&reader), 1, "one digest");
    let d = &sink.messages()[sink.messages().len() - 1];
    assert_eq!(subject_of(&d.data), "Forum Digest, Vol 1, Issue 1");
}

fn env_config(env: &TestEnv) -> std::path::PathBuf {
    env.config.clone()
}

fn env_cli_digest_send(config: &std::path::Path) -> std::process::Output {
    Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(["digest", "send"])
        .env_remove("VRAAGBAAK_CONFIG")
        .output()
        .expect("run vraagbaak")
}

/// In the middle of a forget confirmed by mail (the store done, the archive not yet): the
/// request is carried out again after the restart.
#[test]
fn a_crash_in_the_middle_of_a_forget_finishes_it_after_restart() {
    let sink = Sink::start();
    let mut env = TestEnv::new(sink.port, Opts::default());
    let addr = "an@ocmw.be";
    env.add_members(&[format!("Anna <{addr}>"), member(1)]);
    let mut d = Daemon::start(&mut env);
    let cmd = message(addr, "forget", "fc1@ocmw.be", "forget\r\n");
    assert_eq!(
        post(d.port, addr, "forum-request@lists.example.org", &cmd),
        250
    );
    assert!(wait_until(WAIT, || sink.count_for(addr) == 1));
    let confirm = sink
        .messages()
        .into_iter()
        .rfind(|m| m.rcpt == addr)
        .expect("a confirmation");
    let confirm_addr = confirm_address_in(&confirm.data);
    d.kill9();
    crash_at(&mut env, "forget-before-archive", |d| {
        let reply = message(addr, "Re: confirm", "fc2@ocmw.be", "ja");
        assert_eq!(post(d.port, addr, &confirm_addr, &reply), 250);
    });
    let d = Daemon::start(&mut env);
    assert!(
        wait_until(WAIT, || d.stderr().contains("member forgotten")),
        "{}",
        d.stderr()
    );
    let out = env.cli(&["members", "list", "forum"]);
    assert!(!out.stdout.contains(addr), "{out:?}");
}

/// In the middle of a compaction (the old database moved aside, the new one not yet in
/// place): the store opens with everything in it.
#[test]
fn a_crash_in_the_middle_of_a_compaction_leaves_a_store_that_opens() {
    let sink = Sink::start();
    let env = TestEnv::new(sink.port, Opts::default());
    env.write_config();
    env.add_members(&members(3));
    let out = Command::new(BIN)
        .arg("--config")
        .arg(env_config(&env))
        .args(["store", "compact"])
        .env("VRAAGBAAK_CRASH_AT", "compact-between-renames")
        .env_remove("VRAAGBAAK_CONFIG")
        .output()
        .expect("run vraagbaak");
    assert!(!out.status.success(), "the compaction was to crash");
    let list = env.cli(&["members", "list", "forum"]);
    assert_eq!(list.code, Some(0), "{list:?}");
    assert_eq!(list.stdout.lines().count(), 3, "{list:?}");
    let again = env.cli(&["store", "compact"]);
    assert_eq!(again.code, Some(0), "{again:?}");
    assert_eq!(
        env.cli(&["members", "list", "forum"])
            .stdout
            .lines()
            .count(),
        3
    );
}
