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
pub mod limits;
pub mod maintenance;
pub mod mta;
pub mod outbound;
pub mod pipeline;
pub mod redact;
pub mod router;
pub mod status;
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

    /// The same services for a new configuration (`SIGHUP`): texts, templates, the
    /// archive's view of the lists and the DNS table are loaded again; the store, the token
    /// key, the archive's writer lock and its bell stay, so that nothing in flight is cut.
    pub fn reloaded(&self, cfg: std::sync::Arc<config::Config>) -> anyhow::Result<Self> {
        let texts = texts::Texts::load(&cfg).map_err(anyhow::Error::msg)?;
        let archive = self
            .archive
            .reloaded(cfg.clone())
            .map_err(anyhow::Error::msg)?;
        let dns = dns::from_config(&cfg.dns).map_err(anyhow::Error::msg)?;
        Ok(Services {
            dns: std::sync::Arc::new(dns),
            cfg,
            store: self.store.clone(),
            secret: self.secret.clone(),
            texts: std::sync::Arc::new(texts),
            archive: std::sync::Arc::new(archive),
            archive_wake: self.archive_wake.clone(),
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

/// What the daemon's tasks read their configuration through: one generation of services,
/// replaced as a whole when `SIGHUP` brings a valid new configuration. A task takes the
/// current generation at the start of each unit of work (a pipeline pass, a delivery, a
/// connection, a request), so work under way finishes on the generation it began with.
#[derive(Clone)]
pub struct Live(std::sync::Arc<std::sync::RwLock<std::sync::Arc<Generation>>>);

/// One configuration's services.
pub struct Generation {
    pub svc: Services,
    pub dkim: std::sync::Arc<dkim::Keys>,
    pub inbound: std::sync::Arc<inbound::Inbound>,
}

impl Generation {
    /// The generation of `svc`'s configuration, its inbound side on `svc`'s store: `wake`
    /// rings the pipeline, `relay` holds the relay's SIZE as probed (both outlive
    /// generations).
    pub fn new(
        svc: Services,
        dkim: std::sync::Arc<dkim::Keys>,
        wake: std::sync::Arc<tokio::sync::Notify>,
        relay: std::sync::Arc<outbound::RelayLimits>,
    ) -> Generation {
        let inbound = std::sync::Arc::new(inbound::Inbound {
            cfg: svc.cfg.clone(),
            store: svc.store.clone(),
            wake,
            relay,
        });
        Generation { svc, dkim, inbound }
    }
}

impl Live {
    pub fn new(g: Generation) -> Live {
        Live(std::sync::Arc::new(std::sync::RwLock::new(
            std::sync::Arc::new(g),
        )))
    }

    /// The current generation.
    pub fn now(&self) -> std::sync::Arc<Generation> {
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The current services.
    pub fn svc(&self) -> Services {
        self.now().svc.clone()
    }

    /// Makes `g` the current generation.
    pub fn replace(&self, g: Generation) {
        let mut w = match self.0.write() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        };
        *w = std::sync::Arc::new(g);
    }
}
