//! vraagbaak: a mailing-list forum server.
//!
//! Data flows one way: `inbound` (SMTP/LMTP listener, `inject`) → `store` (spool, durable)
//! → `pipeline` (route, classify, policy) → `store` (posts, delivery queue) → `outbound`
//! (relay or outbox). See `docs/architecture.md`.

pub mod config;
pub mod inbound;
pub mod router;
pub mod store;
