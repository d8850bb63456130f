//! vraagbaak: a mailing-list forum server.
//!
//! Data flows one way: `inbound` (SMTP/LMTP listener, `inject`) → `store` (spool, durable)
//! → `pipeline` (route, classify, policy) → `store` (posts, delivery queue) → `outbound`
//! (relay or outbox). `compose` builds the list copy; `admin` runs administrative commands
//! for the command line and the daemon's control socket; `daemon` wires it all together.

pub mod admin;
pub mod compose;
pub mod config;
pub mod daemon;
pub mod inbound;
pub mod outbound;
pub mod pipeline;
pub mod router;
pub mod store;
