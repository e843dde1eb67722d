//! Cofre's storage engine: everything that touches `data/`.
//!
//! It owns the per-alias SQLCipher mailboxes ([`Mailbox`]), the directory of
//! aliases and their wrapped keys ([`Directory`]), key derivation and the
//! unwrapped-key cache ([`keys`]), the sealed inbound queue ([`queue`]), the
//! portable export, and the [`Store`] that ties them together for a data
//! directory.
//!
//! It deliberately knows nothing about IMAP, JMAP, SMTP or HTTP: its API is
//! typed Rust (folders, emails, keywords, UIDs, MODSEQs, filters), and the
//! protocol crates translate. It does no async I/O: callers run it on
//! threads of their own.

pub mod admin;
pub mod backup;
pub mod db;
pub mod directory;
mod error;
pub mod export;
pub mod import;
pub mod keys;
pub mod link;
pub mod mailbox;
pub mod net;
pub mod outbound;
pub mod pages;
pub mod primary;
pub mod queue;
pub mod s3;
pub mod settings;
pub mod store;
pub mod throttle;
pub mod time;
pub mod tls;
pub mod types;
pub mod webhook;

pub use directory::{AliasRecord, Directory};
pub use error::{Error, Result};
pub use keys::{AliasKeys, KdfParams, Password, SecretKey};
pub use mailbox::{Mailbox, MailboxOptions};
pub use store::{Store, StoreConfig, Unlocked};
pub use types::{
    AliasAddress, Day, EmailId, FolderId, FolderName, Keyword, ModSeq, Role, ThreadId, Uid,
};
