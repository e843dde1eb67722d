//! Cofre's IMAP4rev2 and POP3 bridge. It speaks IMAP to mail clients and turns every
//! command into calls over the link; it holds no mail itself.
//!
//! - `parse`: commands from bytes (our own parser; ARCHITECTURE.md says why),
//! - `session`: the protocol state machine, driven from parsed commands,
//! - `login`: logging in and SASL PLAIN, shared by IMAP and POP3,
//! - `render`: FETCH data (ENVELOPE, BODYSTRUCTURE, sections) from bytes,
//! - `thread`: RFC 5256 threading,
//! - `server`: sockets, TLS, framing, IDLE, limits; `compress` COMPRESS=DEFLATE,
//! - `pop3`: the POP3 server beside IMAP (its own session and listener).

pub mod compress;
pub mod date;
pub mod login;
pub mod mutf7;
pub mod parse;
pub mod pop3;
pub mod render;
pub mod server;
pub mod session;
pub mod thread;

pub use server::{ServerConfig, serve};
pub use session::{Config, Next, Session};
