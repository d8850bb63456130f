//! Behind a real Postfix: a private Postfix instance (its own config, queue and data
//! directories under a temporary directory, loopback ports only, no system service),
//! configured with what `vraagbaak mta postfix` prints, in front of vraagbaak (LMTP) and as
//! its relay (the return door), delivering the members' copies to a test sink through a
//! transport map.
//!
//! - a post sent into Postfix reaches every member once (and the copies per second are
//!   printed);
//! - members the sink refuses make Postfix itself write the DSNs, which come back through
//!   Postfix to the VERP address and score exactly those members;
//! - mail to an unknown address at the list domain is refused by Postfix at RCPT, so no
//!   bounce is ever generated (no backscatter);
//! - a post above the size Postfix accepts is refused to its sender and scores nobody;
//! - the recipient map `mta postfix` prints accepts, as Postfix reads it (`postmap -q`),
//!   exactly the addresses vraagbaak's router handles.
//!
//! Needs Debian's `postfix` and root (Postfix's master starts as root and drops to the
//! `postfix` user); `.ci/run` installs it. Without either the test says so and is skipped,
//! except under CI.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const POSTFIX: &str = "/usr/sbin/postfix";

/// The services of a Postfix 3.7 master.cf, none chrooted (the queue is not
/// /var/spool/postfix); the front door (`smtpd` on the loopback) is added per test.
const SERVICES: &str = "\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
";

fn uid() -> Option<u32> {
    let out = Command::new("id").arg("-u").output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn postfix_available(test: &str) -> bool {
    if !Path::new(POSTFIX).exists() {
        skip(
            test,
            "Postfix is not installed (apt-get install postfix; .ci/run does)",
        );
        return false;
    }
    if uid() != Some(0) {
        skip(test, "a private Postfix instance needs root to start");
        return false;
    }
    true
}

/// A running private Postfix; stopped when dropped.
struct Postfix {
    etc: PathBuf,
    log: PathBuf,
    queue: PathBuf,
}

impl Postfix {
    /// Configures and starts an instance under `dir`: the front door on `front`, the
    /// lines and maps of `mta` (the output of `vraagbaak mta postfix --dir <etc>`), and
    /// everything that is not a list domain sent to the sink.
    fn start(dir: &Path, front: u16, mta: &str, sink: u16) -> Postfix {
        let etc = dir.join("etc");
        let queue = dir.join("queue");
        let data = dir.join("data");
        for d in [&etc, &queue, &data] {
            std::fs::create_dir_all(d).expect("create postfix dirs");
        }
        // The postfix user must reach the queue; the data directory is its own.
        chmod_755(dir);
        run("chown", &["postfix", data.to_str().unwrap()]);
        let log = dir.join("maillog");
        let sections = vraagbaak::mta::sections(mta);
        let optional = |name: &str| -> String {
            sections
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.clone())
                .unwrap_or_default()
        };
        let section = |name: &str| -> String {
            sections
                .iter()
                .find(|(n, _)| n == name || n.ends_with(name))
                .map(|(_, t)| t.clone())
                .unwrap_or_else(|| panic!("no section {name} in:\n{mta}"))
        };
        let main = format!(
            "compatibility_level = 3.6\nqueue_directory = {q}\ndata_directory = {d}\n\
mail_owner = postfix\nsetgid_group = postdrop\ninet_interfaces = 127.0.0.1\n\
inet_protocols = ipv4\nmyhostname = mx.test.example\nmydomain = test.example\n\
mydestination =\nmynetworks = 127.0.0.0/8\nlocal_recipient_maps =\nalias_maps =\n\
alias_database =\nmaillog_file = {log}\nmaillog_file_prefixes = {dir}\n\
smtp_tls_security_level = none\nsmtpd_tls_security_level = none\n\
# The front door is the world's MX: it relays only to the list domains.\n\
smtpd_relay_restrictions = reject_unauth_destination\n\
# Retry a deferred delivery quickly in a test.\n\
queue_run_delay = 2s\nminimal_backoff_time = 2s\nmaximal_backoff_time = 4s\n\
# --- from vraagbaak mta postfix ---\n{ours}{pipe}",
            q = queue.display(),
            d = data.display(),
            log = log.display(),
            dir = dir.display(),
            ours = section("main.cf"),
            pipe = optional("main.cf (pipe)"),
        );
        std::fs::write(etc.join("main.cf"), main).expect("main.cf");
        let master = format!(
            "127.0.0.1:{front} inet n - n - - smtpd\n{SERVICES}\n# --- from vraagbaak mta postfix ---\n{}{}",
            section("master.cf"),
            optional("master.cf (pipe)")
        );
        std::fs::write(etc.join("master.cf"), master).expect("master.cf");
        let transport = etc.join("vraagbaak_transport");
        std::fs::write(
            &transport,
            format!(
                "{}# the test: every other domain is the members' and goes to the sink\n\
* smtp:[127.0.0.1]:{sink}\n",
                section("vraagbaak_transport")
            ),
        )
        .expect("transport");
        std::fs::write(
            etc.join("vraagbaak_recipients"),
            section("vraagbaak_recipients"),
        )
        .expect("recipients");
        let c = etc.to_str().unwrap().to_string();
        let c = c.as_str();
        run("postmap", &["-c", c, transport.to_str().unwrap()]);
        let pf = Postfix { etc, log, queue };
        let out = Command::new(POSTFIX)
            .args(["-c", c, "start"])
            .output()
            .expect("run postfix start");
        assert!(
            out.status.success(),
            "postfix start: {out:?}\n{}",
            pf.maillog()
        );
        let up = wait_until(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", front)).is_ok()
        });
        assert!(up, "Postfix does not listen on {front}:\n{}", pf.maillog());
        pf
    }

    fn maillog(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Messages in Postfix's queue (active, incoming, deferred, hold).
    fn queued(&self) -> usize {
        ["incoming", "active", "deferred", "hold", "maildrop"]
            .iter()
            .map(|d| count_files(&self.queue.join(d)))
            .sum()
    }

    fn postmap_q(&self, table: &str, key: &str) -> bool {
        let out = Command::new("postmap")
            .args(["-c", self.etc.to_str().unwrap(), "-q", key, table])
            .output()
            .expect("postmap -q");
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "OK"
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new(POSTFIX)
            .args(["-c", self.etc.to_str().unwrap_or(""), "stop"])
            .output();
        // `stop` waits for the master; make sure nothing of the instance survives.
        let _ = Command::new(POSTFIX)
            .args(["-c", self.etc.to_str().unwrap_or(""), "abort"])
            .output();
    }
}

fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                n += 1;
            }
        }
    }
    n
}

fn chmod_755(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(out.status.success(), "{cmd} {args:?}: {out:?}");
}

/// `members list --bounces`: (address, score) of every member with a line.
fn scores(env: &TestEnv) -> Vec<(String, f64)> {
    let out = env.cli(&["members", "list", "forum", "--bounces"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    out.stdout
        .lines()
        .skip(1)
        .filter_map(|l| {
            let (a, rest) = l.split_once(' ')?;
            let score = rest
                .split_whitespace()
                .find_map(|w| w.contains('.').then(|| w.parse::<f64>().ok()).flatten())?;
            a.contains('@').then(|| (a.to_ascii_lowercase(), score))
        })
        .collect()
}

fn scored(env: &TestEnv) -> Vec<String> {
    let mut s: Vec<String> = scores(env)
        .into_iter()
        .filter(|(_, s)| *s > 0.0)
        .map(|(a, _)| a)
        .collect();
    s.sort();
    s
}

const MEMBERS: usize = 750;
const MAX_SIZE: usize = 1_000_000;

#[test]
fn behind_a_real_postfix_copies_dsns_unknown_recipients_and_sizes() {
    const TEST: &str = "behind_a_real_postfix_copies_dsns_unknown_recipients_and_sizes";
    if !postfix_available(TEST) {
        return;
    }
    let dead: Vec<String> = (1..=3).map(|i| format!("dead{i}@gone.example")).collect();
    let sink = Sink::with(SinkBehaviour {
        reject: Some(std::sync::Arc::new(|a: &str| a.contains("@gone."))),
        ..SinkBehaviour::default()
    });
    let front = free_port();
    let back = free_port();
    let lmtp = free_port();
    // vraagbaak relays to Postfix's return door (TestEnv's "sink port" is its relay).
    let mut env = TestEnv::new(
        back,
        Opts {
            posting: "open",
            max_message_size: Some(MAX_SIZE),
            connections: 8,
            extra: format!("[lmtp]\nlisten = \"127.0.0.1:{lmtp}\"\n"),
            ..Opts::default()
        },
    );
    let pfdir = env.path().join("postfix");
    let etc = pfdir.join("etc");
    let mta = env.cli(&["mta", "postfix", "--dir", etc.to_str().unwrap()]);
    assert_eq!(mta.code, Some(0), "{mta:?}");
    assert!(
        !mta.stdout.contains("NOTE:"),
        "the relay is the return door: {}",
        mta.stdout
    );
    let mut members: Vec<String> = (0..MEMBERS).map(member).collect();
    members.extend(dead.iter().cloned());
    env.add_members(&members);
    let pf = Postfix::start(&pfdir, front, &mta.stdout, sink.port);
    let d = Daemon::start(&mut env);

    // The recipient map, as Postfix reads it, accepts what the router routes, no more.
    let map = format!("regexp:{}", etc.join("vraagbaak_recipients").display());
    let v = verp(&env, "jan@ocmw.be");
    for a in [
        LIST,
        "forum-request@lists.example.org",
        "FORUM-Owner@lists.example.org",
        "forum-join@lists.example.org",
        "forum-leave@lists.example.org",
        "forum+unsubscribe@lists.example.org",
        "forum-bounces@lists.example.org",
        v.as_str(),
        "forum-confirm+ABCDEF123@lists.example.org",
        "postmaster@lists.example.org",
    ] {
        assert!(pf.postmap_q(&map, a), "Postfix's map refuses {a}");
    }
    for a in [
        "nobody@lists.example.org",
        "forum-x@lists.example.org",
        "forum+x@lists.example.org",
        "xforum@lists.example.org",
        "forum@lists.example.org.evil",
        "forum-confirm+@lists.example.org",
    ] {
        assert!(!pf.postmap_q(&map, a), "Postfix's map accepts {a}");
    }

    // A post into Postfix's front door reaches every member once, through Postfix twice.
    let t0 = Instant::now();
    let body = message(
        "An Peeters <an@ocmw-gent.be>",
        "Leefloon en huur",
        "pf1@ocmw-gent.be",
        "Heeft iemand ervaring?",
    );
    assert_eq!(post(front, "an@ocmw-gent.be", LIST, &body), 250);
    let all = wait_until(Duration::from_secs(120), || sink.count() >= MEMBERS);
    let took = t0.elapsed();
    assert!(
        all,
        "{} of {MEMBERS} copies arrived\n{}",
        sink.count(),
        pf.maillog()
    );
    println!(
        "{MEMBERS} copies through Postfix (in: Postfix -> LMTP; out: return door -> Postfix -> sink) \
in {:.2} s: {:.0} copies/s",
        took.as_secs_f64(),
        MEMBERS as f64 / took.as_secs_f64()
    );
    for m in &members[..MEMBERS] {
        assert_eq!(sink.count_for(m), 1, "{m}");
    }

    // The refused members: Postfix writes the DSNs, they come back through Postfix to the
    // VERP addresses, and exactly those members are scored.
    let mut want = dead.clone();
    want.sort();
    let ok = wait_until(Duration::from_secs(60), || scored(&env) == want);
    assert!(
        ok,
        "scored {:?}, expected {want:?}\n{}",
        scored(&env),
        pf.maillog()
    );
    assert!(
        pf.maillog().contains("sender non-delivery notification"),
        "the DSNs were not Postfix's own"
    );

    // An unknown address at the list domain: refused at RCPT; nothing is queued, so no
    // bounce can go to the (forged) sender.
    assert!(wait_until(Duration::from_secs(30), || pf.queued() == 0));
    let before = sink.count();
    let mut c = SmtpClient::connect(front);
    assert_eq!(c.cmd("EHLO forger.example").code, 250);
    assert_eq!(c.cmd("MAIL FROM:<victim@innocent.example>").code, 250);
    let r = c.cmd("RCPT TO:<nobody@lists.example.org>");
    assert_eq!(r.code, 550, "{r:?}");
    c.quit();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(pf.queued(), 0, "Postfix queued something");
    assert_eq!(sink.count(), before);
    assert_eq!(sink.count_for("victim@innocent.example"), 0, "backscatter");

    // Too large for Postfix's front door: the sender is refused there, nobody is scored.
    let front_limit = vraagbaak::mta::front_limit(MAX_SIZE);
    let big_body = "x".repeat(76) + "\r\n";
    let big = message(
        "An Peeters <an@ocmw-gent.be>",
        "Groot",
        "pf2@ocmw-gent.be",
        &big_body.repeat(front_limit / big_body.len() + 100),
    );
    assert!(big.len() > front_limit && big.len() < MAX_SIZE);
    let mut c = SmtpClient::connect(front);
    let ehlo = c.cmd("EHLO client.example");
    assert!(
        ehlo.text.contains(&format!("SIZE {front_limit}")),
        "{ehlo:?}"
    );
    let r = c.transaction("an@ocmw-gent.be", &[LIST], &big);
    assert_eq!(r.code, 552, "{r:?}");
    c.quit();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(sink.count(), before, "the large post went somewhere");
    assert_eq!(scored(&env), want, "a refused post scored members");
    assert_eq!(pf.queued(), 0);
    drop(d);
    drop(pf);
}

/// Whether every directory above `p` may be searched by any user.
fn reachable_by_all(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.ancestors().skip(1).all(|d| {
        d.as_os_str().is_empty()
            || std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0)
    })
}

/// This test's vraagbaak binary where the unprivileged pipe user can run it.
fn binary_for_others(dir: &Path) -> PathBuf {
    let bin = PathBuf::from(BIN);
    if reachable_by_all(&bin) {
        return bin;
    }
    let copy = dir.join("vraagbaak");
    std::fs::copy(&bin, &copy).expect("copy the binary");
    copy
}

#[test]
fn pipe_mode_through_a_real_postfix_as_an_unprivileged_user() {
    const TEST: &str = "pipe_mode_through_a_real_postfix_as_an_unprivileged_user";
    if !postfix_available(TEST) {
        return;
    }
    let dead = "dead@gone.example".to_string();
    let sink = Sink::with(SinkBehaviour {
        reject: Some(std::sync::Arc::new(|a: &str| a.contains("@gone."))),
        ..SinkBehaviour::default()
    });
    let front = free_port();
    let back = free_port();
    let mut env = TestEnv::new(back, Opts::default());
    // The pipe runs as `nobody`: the temporary directory (config, socket) must be
    // reachable; the inject socket lives there, open to local users like the SMTP port.
    chmod_755(env.path());
    let sock = env.path().join("inject.sock");
    env.opts.posting = "open";
    env.opts.extra = format!(
        "[inject]\nsocket = {:?}\ntimeout = \"20s\"\n",
        sock.display()
    );
    env.write_config();
    let pfdir = env.path().join("postfix");
    let etc = pfdir.join("etc");
    std::fs::create_dir_all(&pfdir).unwrap();
    let bin = binary_for_others(&pfdir);
    chmod_755(&pfdir);
    // `mta postfix --pipe`, run as the pipe will run it (its own path in argv).
    let out = Command::new(&bin)
        .args(["--config", env.config.to_str().unwrap()])
        .args(["mta", "postfix", "--pipe", "--pipe-user", "nobody"])
        .args(["--dir", etc.to_str().unwrap()])
        .output()
        .expect("mta postfix --pipe");
    assert!(out.status.success(), "{out:?}");
    let mta = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(mta.contains("lists.example.org vraagbaak:"), "{mta}");
    assert!(mta.contains("user=nobody argv="), "{mta}");
    let members: Vec<String> = vec![member(1), member(2), dead.clone()];
    env.add_members(&members);
    let pf = Postfix::start(&pfdir, front, &mta, sink.port);
    let d = Daemon::start(&mut env);
    assert!(wait_until(Duration::from_secs(10), || sock.exists()));

    // A post, through Postfix and the pipe, as nobody.
    let body = message(
        "An Peeters <an@ocmw-gent.be>",
        "Vraag via pipe",
        "pipe1@ocmw-gent.be",
        "Werkt dit?",
    );
    assert_eq!(post(front, "an@ocmw-gent.be", LIST, &body), 250);
    assert!(
        wait_until(Duration::from_secs(60), || sink.count_for(&member(1)) == 1
            && sink.count_for(&member(2)) == 1),
        "the post did not arrive through the pipe\n{}\n{}",
        pf.maillog(),
        d.stderr()
    );
    assert!(
        pf.maillog().contains("relay=vraagbaak") && pf.maillog().contains("status=sent"),
        "not delivered through the pipe transport:\n{}",
        pf.maillog()
    );

    // A -request command: its answer comes back to the requester.
    let help = format!(
        "From: Jan <jan@ocmw-leuven.be>\r\nTo: forum-request@{LIST_DOMAIN}\r\nSubject: help\r\n\
Message-ID: <pipe2@ocmw-leuven.be>\r\n\r\nhelp\r\n"
    );
    assert_eq!(
        post(
            front,
            "jan@ocmw-leuven.be",
            &format!("forum-request@{LIST_DOMAIN}"),
            help.as_bytes()
        ),
        250
    );
    assert!(
        wait_until(Duration::from_secs(60), || sink
            .count_for("jan@ocmw-leuven.be")
            == 1),
        "no answer to the -request mail\n{}",
        pf.maillog()
    );

    // A bounce: the member the sink refuses gets Postfix's DSN, which comes back through
    // the pipe (null sender, the VERP recipient) and scores that member only.
    let ok = wait_until(Duration::from_secs(60), || {
        scored(&env) == vec![dead.clone()]
    });
    assert!(ok, "scored {:?}\n{}", scored(&env), pf.maillog());
    assert!(wait_until(Duration::from_secs(30), || pf.queued() == 0));
    drop(d);
    drop(pf);
}

#[test]
fn inject_gives_up_with_75_when_the_daemon_hangs() {
    let mut env = TestEnv::new(free_port(), Opts::default());
    let sock = env.path().join("inject.sock");
    env.opts.extra = format!(
        "[inject]\nsocket = {:?}\ntimeout = \"2s\"\n",
        sock.display()
    );
    env.write_config();
    // A daemon that takes the connection and never answers.
    let listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
    let holder = std::thread::spawn(move || {
        let conn = listener.accept();
        std::thread::sleep(Duration::from_secs(15));
        drop(conn);
    });
    let t0 = Instant::now();
    let out = env.cli_stdin(
        &["inject", "forum"],
        &message("a@x.example", "s", "hang@x.example", "b"),
    );
    let took = t0.elapsed();
    assert_eq!(out.code, Some(75), "{out:?}");
    assert!(out.stderr.contains("within"), "{out:?}");
    // Given up long before the daemon would have let go (not a performance limit).
    assert!(took < Duration::from_secs(12), "took {took:?}");
    let _ = holder.join();
    // Without any daemon and with a recipient that no list has: 67, not a hang.
    std::fs::remove_file(&sock).unwrap();
    let out = env.cli_stdin(
        &["inject", "--recipient", "nobody@lists.example.org"],
        &message("a@x.example", "s", "n@x.example", "b"),
    );
    assert_eq!(out.code, Some(67), "{out:?}");
}
