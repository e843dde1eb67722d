//! Cofre's mail exchanger: receives mail for our aliases over SMTP
//! (RFC 5321 with PIPELINING, SIZE, 8BITMIME, SMTPUTF8,
//! ENHANCEDSTATUSCODES, CHUNKING and STARTTLS) and delivers it over the
//! link; it holds no mail itself.
//!
//! - `parse`: command lines from bytes,
//! - `session`: the protocol state machine and delivery,
//! - `server`: sockets, TLS, DATA and BDAT framing, limits and timeouts,
//! - `auth`: SPF/DKIM/ARC/DMARC checks, DKIM signing and ARC sealing,
//! - `dns`: the resolver setup and a fixture DNS server for tests,
//! - `outbound`, `client`, `srs`: the queue worker, the SMTP client and
//!   sender rewriting for forwarded mail,
//! - `webhook`: payloads, signatures and HTTP posts for aliases' webhooks.

pub mod auth;
pub mod client;
pub mod dns;
pub mod outbound;
pub mod parse;
pub mod server;
pub mod session;
pub mod srs;
pub mod vacation;
pub mod webhook;

pub use server::{ServerConfig, serve};
pub use session::{Config, Next, Session};
