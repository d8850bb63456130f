//! Receiving by IMAP: for a list address that is a mailbox at a provider.
//!
//! One poller per `[[imap]]` account (async-imap over tokio, TLS by rustls with the
//! webpki roots). Each pass selects the mailbox and fetches, one message at a time, every
//! UID above the last one stored. A message is handed to the inbound path and stored
//! durably together with its UID and Message-ID ([`Inbound::accept_imap`]); only then is it
//! deleted, moved or flagged on the server. So:
//! - a crash after storing and before the server action does not fetch it again (the UID
//!   record), and a message seen again anyway (the server action was lost, or the mailbox
//!   was recreated with a new UIDVALIDITY) is recognised by its Message-ID and not stored a
//!   second time;
//! - at the start of each pass, messages stored earlier but still waiting for their server
//!   action get it.
//!
//! Between passes the poller waits in IDLE when the server offers it (at most
//! `poll_interval`), otherwise sleeps `poll_interval`. Lost connections are retried with
//! capped exponential backoff and jitter, for as long as it takes. Passwords are never
//! logged: errors come from the server's words or ours, never from the config.

use super::{Inbound, Verdict};
use crate::config::{ImapAfter, ImapConfig, ImapTls};
use crate::router;
use crate::store::ImapMark;
use futures::TryStreamExt;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::rustls;

/// Any connection the client can run on: plain TCP (loopback only) or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug> Io for T {}

type Session = async_imap::Session<Box<dyn Io>>;

/// Timeout of connecting, logging in and each command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait between attempts to reconnect.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// An error of one session, in words fit for the log (never containing the password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImapError {
    /// The server refused the login: retrying soon will not help.
    Login(String),
    /// Anything else: connection, TLS, protocol, timeouts, the store.
    Other(String),
}

impl fmt::Display for ImapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImapError::Login(e) => write!(f, "login refused: {e}"),
            ImapError::Other(e) => f.write_str(e),
        }
    }
}

fn other(what: &str) -> impl Fn(async_imap::error::Error) -> ImapError + '_ {
    move |e| ImapError::Other(format!("{what}: {e}"))
}

async fn timed<T>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, ImapError>>,
) -> Result<T, ImapError> {
    tokio::time::timeout(COMMAND_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| Err(ImapError::Other(format!("{what}: timed out"))))
}

fn tls_connector(
    ca_file: Option<&std::path::Path>,
) -> Result<tokio_rustls::TlsConnector, ImapError> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(f) = ca_file {
        let pem = std::fs::read(f)
            .map_err(|e| ImapError::Other(format!("ca_file {}: {e}", f.display())))?;
        let mut n = 0;
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            let c = c.map_err(|e| ImapError::Other(format!("ca_file {}: {e}", f.display())))?;
            roots
                .add(c)
                .map_err(|e| ImapError::Other(format!("ca_file {}: {e}", f.display())))?;
            n += 1;
        }
        if n == 0 {
            return Err(ImapError::Other(format!(
                "ca_file {}: no PEM certificate in it",
                f.display()
            )));
        }
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ImapError::Other(format!("TLS setup: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
}

async fn tls(tcp: TcpStream, acct: &ImapConfig) -> Result<Box<dyn Io>, ImapError> {
    let host = acct.host.as_str();
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| ImapError::Other(format!("TLS: bad server name {host:?}: {e}")))?;
    let s = tls_connector(acct.ca_file.as_deref())?
        .connect(name, tcp)
        .await
        .map_err(|e| ImapError::Other(format!("TLS handshake with {host}: {e}")))?;
    Ok(Box::new(s))
}

async fn greeting<T: Io>(c: &mut async_imap::Client<T>) -> Result<(), ImapError> {
    match c.read_response().await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(ImapError::Other("the server closed the connection".into())),
        Err(e) => Err(ImapError::Other(format!("reading the greeting: {e}"))),
    }
}

/// Connects and logs in.
pub async fn login(acct: &ImapConfig) -> Result<Session, ImapError> {
    let password = acct.read_password().map_err(ImapError::Login)?;
    timed("connecting", async {
        let tcp = TcpStream::connect((acct.host.as_str(), acct.port()))
            .await
            .map_err(|e| {
                ImapError::Other(format!("connecting to {}:{}: {e}", acct.host, acct.port()))
            })?;
        let _ = tcp.set_nodelay(true);
        let client: async_imap::Client<Box<dyn Io>> = match acct.tls {
            ImapTls::None => {
                let mut c = async_imap::Client::new(Box::new(tcp) as Box<dyn Io>);
                greeting(&mut c).await?;
                c
            }
            ImapTls::Implicit => {
                let mut c = async_imap::Client::new(tls(tcp, acct).await?);
                greeting(&mut c).await?;
                c
            }
            ImapTls::Starttls => {
                let mut c = async_imap::Client::new(tcp);
                greeting(&mut c).await?;
                c.run_command_and_check_ok("STARTTLS", None)
                    .await
                    .map_err(other("STARTTLS"))?;
                async_imap::Client::new(tls(c.into_inner(), acct).await?)
            }
        };
        client
            .login(&acct.username, &password)
            .await
            .map_err(|(e, _)| match e {
                async_imap::error::Error::No(m) | async_imap::error::Error::Bad(m) => {
                    ImapError::Login(m)
                }
                e => ImapError::Other(format!("login: {e}")),
            })
    })
    .await
}

/// `vraagbaak imap test`: logs in, and reports capabilities and the mailbox.
pub async fn test(acct: &ImapConfig) -> Result<String, ImapError> {
    let mut s = login(acct).await?;
    let caps = timed("CAPABILITY", async {
        s.capabilities().await.map_err(other("CAPABILITY"))
    })
    .await?;
    let mut names: Vec<String> = caps.iter().map(|c| format!("{c:?}")).collect();
    names.sort();
    let mb = timed("EXAMINE", async {
        s.examine(&acct.mailbox).await.map_err(other("EXAMINE"))
    })
    .await?;
    let _ = s.logout().await;
    Ok(format!(
        "account {}: logged in to {}:{} as {}\ncapabilities: {}\nmailbox {}: {} messages, UIDVALIDITY {}\n",
        acct.name,
        acct.host,
        acct.port(),
        acct.username,
        names.join(" "),
        acct.mailbox,
        mb.exists,
        mb.uid_validity.unwrap_or(0)
    ))
}

/// Runs the poller for one account until `shutdown`.
pub async fn run(inbound: Arc<Inbound>, acct: ImapConfig, mut shutdown: watch::Receiver<bool>) {
    let mut backoff = Duration::from_secs(1);
    let mut last_error: Option<ImapError> = None;
    loop {
        let mut connected = false;
        let r = session(&inbound, &acct, &mut shutdown, &mut connected).await;
        if *shutdown.borrow() {
            return;
        }
        if connected {
            backoff = Duration::from_secs(1);
        }
        match r {
            Ok(()) => return,
            Err(e) => {
                // One line per distinct problem; the same problem again is logged quietly.
                if last_error.as_ref() != Some(&e) {
                    tracing::error!(account = %acct.name, error = %e, retry_in_s = backoff.as_secs(), "imap account unavailable");
                } else {
                    tracing::debug!(account = %acct.name, error = %e, "imap account still unavailable");
                }
                last_error = Some(e);
            }
        }
        let jitter = 0.8 + rand::random::<f64>() * 0.4;
        let wait = backoff.mul_f64(jitter);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
        if matches!(last_error, Some(ImapError::Login(_))) {
            backoff = MAX_BACKOFF;
        }
    }
}

/// One connection: passes until an error or `shutdown`.
async fn session(
    inbound: &Inbound,
    acct: &ImapConfig,
    shutdown: &mut watch::Receiver<bool>,
    connected: &mut bool,
) -> Result<(), ImapError> {
    let mut s = login(acct).await?;
    *connected = true;
    tracing::info!(account = %acct.name, "imap account connected");
    let caps = timed("CAPABILITY", async {
        s.capabilities().await.map_err(other("CAPABILITY"))
    })
    .await?;
    let idle = caps.has_str("IDLE");
    let can_move = caps.has_str("MOVE");
    let uidplus = caps.has_str("UIDPLUS");
    if let ImapAfter::Move(folder) = &acct.after {
        // Create it when missing; an error here means it exists (or MOVE will say why).
        let _ = timed("CREATE", async {
            s.create(folder).await.map_err(other("CREATE"))
        })
        .await;
    }
    loop {
        let n = pass(inbound, acct, &mut s, can_move, uidplus).await?;
        if n > 0 {
            tracing::info!(account = %acct.name, messages = n, "fetched from imap");
        }
        if *shutdown.borrow() {
            let _ = s.logout().await;
            return Ok(());
        }
        if idle {
            let mut h = s.idle();
            timed("IDLE", async { h.init().await.map_err(other("IDLE")) }).await?;
            let stop = {
                let (wait, _interrupt) = h.wait_with_timeout(acct.poll_interval);
                tokio::select! {
                    r = wait => { r.map_err(other("IDLE"))?; false }
                    _ = shutdown.changed() => true,
                }
            };
            s = timed("DONE", async { h.done().await.map_err(other("IDLE DONE")) }).await?;
            if stop {
                let _ = s.logout().await;
                return Ok(());
            }
        } else {
            tokio::select! {
                _ = tokio::time::sleep(acct.poll_interval) => {}
                _ = shutdown.changed() => {
                    let _ = s.logout().await;
                    return Ok(());
                }
            }
        }
    }
}

/// The list address a fetched message is for: a recipient header naming one of our
/// addresses (so that `forum-request@` mail in a catch-all mailbox is a request), else the
/// configured list's address.
fn recipient(
    inbound: &Inbound,
    acct: &ImapConfig,
    msg: Option<&mail_parser::Message>,
) -> Option<String> {
    let cfg = &inbound.cfg;
    let wanted = acct.list.as_deref().and_then(|l| cfg.list(l));
    if let Some(m) = msg {
        let mut cands: Vec<String> = Vec::new();
        for (name, value) in m.headers_raw() {
            if ["delivered-to", "x-original-to", "envelope-to"]
                .iter()
                .any(|h| name.eq_ignore_ascii_case(h))
            {
                cands.push(value.trim().trim_matches(['<', '>']).to_string());
            }
        }
        for a in [m.to(), m.cc()].into_iter().flatten() {
            cands.extend(a.iter().filter_map(|x| x.address()).map(str::to_string));
        }
        for c in cands {
            if let Some((l, _)) = router::route(cfg, &c) {
                if wanted.is_none_or(|w| w.address == l.address) {
                    return Some(c);
                }
            }
        }
    }
    wanted.map(|l| l.address.clone())
}

/// Fetches and stores every new message; applies the server action to stored ones.
/// Returns how many were fetched.
async fn pass(
    inbound: &Inbound,
    acct: &ImapConfig,
    s: &mut Session,
    can_move: bool,
    uidplus: bool,
) -> Result<usize, ImapError> {
    let store = &inbound.store;
    let mb = timed("SELECT", async {
        s.select(&acct.mailbox).await.map_err(other("SELECT"))
    })
    .await?;
    let uidvalidity = mb.uid_validity.unwrap_or(0);
    let state = store
        .imap_state(&acct.name)
        .map_err(|e| ImapError::Other(format!("store: {e}")))?;
    let last = match state {
        Some(st) if st.uidvalidity == uidvalidity => st.last_uid,
        Some(st) => {
            tracing::warn!(account = %acct.name, old = st.uidvalidity, new = uidvalidity, "UIDVALIDITY changed: the mailbox was recreated; messages already stored are recognised by Message-ID");
            0
        }
        None => 0,
    };
    // Stored earlier, server action not done (a crash in between): do it now.
    if last > 0 {
        let query = match acct.after {
            ImapAfter::Flag => format!("UID 1:{last} UNSEEN"),
            _ => format!("UID 1:{last}"),
        };
        let mut pending: Vec<u32> = timed("UID SEARCH", async {
            s.uid_search(&query).await.map_err(other("UID SEARCH"))
        })
        .await?
        .into_iter()
        .filter(|&u| u <= last)
        .collect();
        pending.sort_unstable();
        for uid in pending {
            after(acct, s, uid, can_move, uidplus).await?;
        }
    }
    let mut uids: Vec<u32> = timed("UID SEARCH", async {
        s.uid_search(format!("UID {}:*", last + 1))
            .await
            .map_err(other("UID SEARCH"))
    })
    .await?
    .into_iter()
    // `n:*` always matches the last message, even when its UID is below n.
    .filter(|&u| u > last)
    .collect();
    uids.sort_unstable();
    let mut n = 0;
    for uid in uids {
        // One message at a time: memory is bounded by the largest message, not the mailbox.
        let fetched: Vec<async_imap::types::Fetch> = timed("UID FETCH", async {
            s.uid_fetch(uid.to_string(), "(UID BODY.PEEK[])")
                .await
                .map_err(other("UID FETCH"))?
                .try_collect()
                .await
                .map_err(other("UID FETCH"))
        })
        .await?;
        let Some(raw) = fetched
            .iter()
            .find(|f| f.uid == Some(uid))
            .and_then(|f| f.body())
        else {
            continue; // expunged meanwhile
        };
        let parsed = mail_parser::MessageParser::default().parse_headers(raw);
        let message_id = parsed
            .as_ref()
            .and_then(|m| m.message_id())
            .map(str::to_string);
        let mark = ImapMark {
            account: acct.name.clone(),
            uidvalidity,
            uid,
            message_id: message_id.clone(),
        };
        let seen = match &message_id {
            Some(mid) => store
                .imap_seen(&acct.name, mid)
                .map_err(|e| ImapError::Other(format!("store: {e}")))?,
            None => false,
        };
        if seen {
            store
                .store_imap(None, None, raw, &mark)
                .map_err(|e| ImapError::Other(format!("store: {e}")))?;
            store
                .flush_async()
                .await
                .map_err(|e| ImapError::Other(format!("store: {e}")))?;
            tracing::info!(account = %acct.name, uid, "message stored before; not stored again");
        } else {
            let mail_from = parsed
                .as_ref()
                .and_then(|m| {
                    m.return_path()
                        .as_text()
                        .map(|t| t.trim().trim_matches(['<', '>']).to_string())
                        .or_else(|| m.from()?.first()?.address().map(str::to_string))
                })
                .unwrap_or_default();
            let rcpt = recipient(inbound, acct, parsed.as_ref());
            let v = inbound
                .accept_imap(&mail_from, rcpt.as_deref(), raw, &mark)
                .await
                .map_err(|e| ImapError::Other(format!("store: {e}")))?;
            if v == Verdict::Stored {
                n += 1;
            }
        }
        // The crash test dies here: between storing and the server action.
        crate::failpoint::hit("imap-after-store");
        after(acct, s, uid, can_move, uidplus).await?;
    }
    Ok(n)
}

/// The server action for a stored message.
async fn after(
    acct: &ImapConfig,
    s: &mut Session,
    uid: u32,
    can_move: bool,
    uidplus: bool,
) -> Result<(), ImapError> {
    let set = uid.to_string();
    timed("server action", async {
        match &acct.after {
            ImapAfter::Flag => {
                let _: Vec<_> = s
                    .uid_store(&set, "+FLAGS.SILENT (\\Seen)")
                    .await
                    .map_err(other("UID STORE"))?
                    .try_collect()
                    .await
                    .map_err(other("UID STORE"))?;
            }
            ImapAfter::Move(folder) if can_move => {
                s.uid_mv(&set, folder).await.map_err(other("UID MOVE"))?;
            }
            ImapAfter::Move(_) | ImapAfter::Delete => {
                if let ImapAfter::Move(folder) = &acct.after {
                    s.uid_copy(&set, folder).await.map_err(other("UID COPY"))?;
                }
                let _: Vec<_> = s
                    .uid_store(&set, "+FLAGS.SILENT (\\Deleted)")
                    .await
                    .map_err(other("UID STORE"))?
                    .try_collect()
                    .await
                    .map_err(other("UID STORE"))?;
                if uidplus {
                    let _: Vec<_> = s
                        .uid_expunge(&set)
                        .await
                        .map_err(other("UID EXPUNGE"))?
                        .try_collect()
                        .await
                        .map_err(other("UID EXPUNGE"))?;
                } else {
                    let _: Vec<_> = s
                        .expunge()
                        .await
                        .map_err(other("EXPUNGE"))?
                        .try_collect()
                        .await
                        .map_err(other("EXPUNGE"))?;
                }
            }
        }
        Ok(())
    })
    .await
}
