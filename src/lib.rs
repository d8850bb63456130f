//! vraagbaak: a mailing-list forum server.
//!
//! Data flows one way: `inbound` (SMTP/LMTP listener, `inject`) → `store` (spool, durable)
//! → `pipeline` (route, classify, policy) → `store` (posts, delivery queue) → `outbound`
//! (relay or outbox). `compose` builds the list copy; `admin` runs administrative commands
//! for the command line and the daemon's control socket; `daemon` wires it all together.
//! `threading` and `archive` turn stored posts into the static HTML archive (store → archive).

pub mod admin;
pub mod archive;
pub mod bounce;
pub mod clock;
pub mod commands;
pub mod compose;
pub mod config;
pub mod daemon;
pub mod digest;
pub mod dkim;
pub mod dmarc;
pub mod dns;
pub mod failpoint;
pub mod forget;
pub mod http;
pub mod inbound;
pub mod maintenance;
pub mod mta;
pub mod outbound;
pub mod pipeline;
pub mod redact;
pub mod router;
pub mod store;
pub mod texts;
pub mod threading;
pub mod tokens;

/// What the parts of the daemon share: the configuration, the store, the token key and the
/// texts.
#[derive(Clone)]
pub struct Services {
    pub cfg: std::sync::Arc<config::Config>,
    pub store: store::Store,
    pub secret: tokens::Secret,
    pub texts: std::sync::Arc<texts::Texts>,
    pub archive: std::sync::Arc<archive::Archive>,
    /// Rung when posts were stored, so the archive writer renders them.
    pub archive_wake: std::sync::Arc<tokio::sync::Notify>,
    /// TXT lookups (DMARC policies).
    pub dns: std::sync::Arc<dyn dns::Resolver>,
}

impl Services {
    /// Loads the token key (creating it) and the texts for an opened store.
    pub fn new(cfg: std::sync::Arc<config::Config>, store: store::Store) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let secret = tokens::Secret::load_or_create(&cfg.secret_path())
            .with_context(|| format!("cannot read or create {}", cfg.secret_path().display()))?;
        let texts = texts::Texts::load(&cfg).map_err(anyhow::Error::msg)?;
        let archive = archive::Archive::new(
            cfg.clone(),
            store.clone(),
            secret.derive(b"archive message-id"),
        )
        .map_err(anyhow::Error::msg)?;
        let dns = dns::from_config(&cfg.dns).map_err(anyhow::Error::msg)?;
        Ok(Services {
            dns: std::sync::Arc::new(dns),
            cfg,
            store,
            secret,
            texts: std::sync::Arc::new(texts),
            archive: std::sync::Arc::new(archive),
            archive_wake: std::sync::Arc::new(tokio::sync::Notify::new()),
        })
    }

    pub fn ctx(&self) -> commands::Ctx<'_> {
        commands::Ctx {
            cfg: &self.cfg,
            store: &self.store,
            secret: &self.secret,
            texts: &self.texts,
        }
    }
}
