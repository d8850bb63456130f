//! A real Dovecot (Debian's `dovecot-imapd`) for the IMAP tests: started by the test on a
//! free 127.0.0.1 port with its own config, a passwd-file user and a temporary mail
//! directory; no system service is involved. `.ci/run` installs the package.
//!
//! Also a small IMAP client (async-imap on a private tokio runtime) to append, list and
//! recreate mailboxes as a mail provider would.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const DOVECOT: &str = "/usr/sbin/dovecot";
pub const USER: &str = "forum";
pub const PASSWORD: &str = "geheim-wachtwoord";

/// Whether the tests can run here; when not, [`super::skip`] says so (and fails under CI).
pub fn available(test: &str) -> bool {
    if Path::new(DOVECOT).exists() {
        return true;
    }
    super::skip(
        test,
        &format!("{DOVECOT} not installed (apt-get install dovecot-imapd; .ci/run installs it)"),
    );
    false
}

pub struct Dovecot {
    pub dir: PathBuf,
    /// Plain IMAP (with STARTTLS when started with TLS).
    pub port: u16,
    /// Implicit TLS (imaps), when started with TLS.
    pub tls_port: Option<u16>,
    child: Option<Child>,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1 signed by it, in `dir`: `ca.pem`,
/// `cert.pem`, `key.pem`.
pub fn make_certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=vraagbaak test CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .expect("ext.cnf");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "cert.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

fn id(args: &[&str]) -> String {
    Command::new("id")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

impl Dovecot {
    /// Writes the config under `dir` and starts Dovecot, without TLS.
    pub fn start(dir: &Path) -> Dovecot {
        Self::start_with(dir, false)
    }

    /// Like [`Dovecot::start`], with STARTTLS on `port` and implicit TLS on `tls_port`,
    /// with a certificate for 127.0.0.1 from a test CA (`dir/dovecot/ca.pem`).
    pub fn start_tls(dir: &Path) -> Dovecot {
        Self::start_with(dir, true)
    }

    fn start_with(dir: &Path, with_tls: bool) -> Dovecot {
        use std::os::unix::fs::PermissionsExt;
        let dir = dir.join("dovecot");
        let mail = dir.join("mail");
        std::fs::create_dir_all(&mail).expect("mail dir");
        let port = super::free_port();
        let root = id(&["-u"]) == "0";
        // Dovecot will not run mail processes as root: as root, they run as its own user.
        let (login, internal, uid, gid) = if root {
            (
                "dovenull".to_string(),
                "dovecot".to_string(),
                id(&["-u", "dovecot"]),
                id(&["-g", "dovecot"]),
            )
        } else {
            let me = id(&["-un"]);
            (me.clone(), me, id(&["-u"]), id(&["-g"]))
        };
        // The login and mail processes must reach their directories.
        let mut p = dir.clone();
        while p.parent().is_some() && p.starts_with(std::env::temp_dir()) {
            let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755));
            p.pop();
        }
        if root {
            let (u, g) = (uid.parse().ok(), gid.parse().ok());
            std::os::unix::fs::chown(&mail, u, g).expect("chown mail dir");
        }
        let tls_port = with_tls.then(super::free_port);
        let ssl = if with_tls {
            make_certificates(&dir);
            format!(
                "ssl = yes\nssl_cert = <{d}/cert.pem\nssl_key = <{d}/key.pem\n",
                d = dir.display()
            )
        } else {
            "ssl = no\n".to_string()
        };
        let conf = format!(
            r#"protocols = imap
listen = 127.0.0.1
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
{ssl}
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{d}/mail/%u
first_valid_uid = 0
default_login_user = {login}
default_internal_user = {internal}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={d}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps}
  }}
}}
"#,
            d = dir.display(),
            imaps = tls_port.unwrap_or(0),
        );
        std::fs::write(dir.join("dovecot.conf"), conf).expect("write dovecot.conf");
        let pw = dir.join("passwd");
        std::fs::write(&pw, format!("{USER}:{{PLAIN}}{PASSWORD}::::::\n")).expect("passwd");
        let _ = std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644));
        let mut d = Dovecot {
            dir,
            port,
            tls_port,
            child: None,
        };
        d.run();
        d
    }

    fn run(&mut self) {
        let child = Command::new(DOVECOT)
            .arg("-F")
            .arg("-c")
            .arg(self.dir.join("dovecot.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dovecot");
        self.child = Some(child);
        let deadline = Instant::now() + super::WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "dovecot did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dovecot.log")).unwrap_or_default()
    }

    /// Stops Dovecot (SIGTERM, and waits).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    /// The Maildir of a mailbox (`INBOX` or another folder), for delivering a message the
    /// way a provider's delivery agent does while IMAP is down.
    pub fn maildir(&self, mailbox: &str) -> PathBuf {
        let base = self.dir.join("mail").join(USER);
        if mailbox == "INBOX" {
            base
        } else {
            base.join(format!(".{mailbox}"))
        }
    }

    /// Runs `f` with a logged-in IMAP session.
    pub fn with<T>(
        &self,
        f: impl for<'a> FnOnce(
            &'a mut async_imap::Session<tokio::net::TcpStream>,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + 'a>>,
    ) -> T {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .expect("connect to dovecot");
            let mut c = async_imap::Client::new(tcp);
            c.read_response().await.expect("greeting");
            let mut s = c
                .login(USER, PASSWORD)
                .await
                .map_err(|(e, _)| e)
                .expect("login");
            let r = f(&mut s).await;
            let _ = s.logout().await;
            r
        })
    }

    /// APPENDs a message to `mailbox`.
    pub fn append(&self, mailbox: &str, raw: &[u8]) {
        let (mb, raw) = (mailbox.to_string(), raw.to_vec());
        self.with(move |s| {
            Box::pin(async move {
                s.append(&mb, None, None, &raw).await.expect("APPEND");
            })
        })
    }

    /// The number of messages in `mailbox` (0 when it does not exist).
    pub fn count(&self, mailbox: &str) -> u32 {
        let mb = mailbox.to_string();
        self.with(move |s| {
            Box::pin(async move { s.examine(&mb).await.map(|m| m.exists).unwrap_or(0) })
        })
    }

    pub fn uidvalidity(&self, mailbox: &str) -> u32 {
        let mb = mailbox.to_string();
        self.with(move |s| {
            Box::pin(async move {
                s.examine(&mb)
                    .await
                    .ok()
                    .and_then(|m| m.uid_validity)
                    .unwrap_or(0)
            })
        })
    }

    pub fn create(&self, mailbox: &str) {
        let mb = mailbox.to_string();
        self.with(move |s| Box::pin(async move { s.create(&mb).await.expect("CREATE") }))
    }

    pub fn delete(&self, mailbox: &str) {
        let mb = mailbox.to_string();
        self.with(move |s| Box::pin(async move { s.delete(&mb).await.expect("DELETE") }))
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- dovecot.log:\n{}", self.log());
        }
        self.stop();
    }
}
