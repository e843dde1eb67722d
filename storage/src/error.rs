//! The storage layer's one error type.

use std::path::PathBuf;

/// Everything that can go wrong below the protocol layers.
///
/// Variants are grouped by who is at fault: the caller (bad input, not found,
/// wrong credentials) or the server (I/O, database, corruption). Protocol
/// layers map each variant once to their own error classes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The password does not open this alias (the verifier did not match).
    #[error("wrong password")]
    WrongPassword,
    /// The key given does not decrypt this file; nothing was written.
    #[error("the key does not open {0}: wrong key, or not a Cofre database")]
    WrongKey(PathBuf),
    /// The alias address is not in the directory.
    #[error("no such alias: {0}")]
    NoSuchAlias(String),
    /// The alias address is already in the directory.
    #[error("alias already exists: {0}")]
    AliasExists(String),
    /// A folder, email or UID that the caller named does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A folder with that name or role already exists.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The caller's input breaks a rule (bad name, bad keyword, bad address).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A message is larger than the configured maximum.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size of the refused message.
        size: u64,
        /// The configured maximum.
        limit: u64,
    },
    /// Storing this would take the mailbox over its quota.
    #[error("over quota: {used} + {adding} bytes exceeds {quota}")]
    OverQuota {
        /// Bytes in use now.
        used: u64,
        /// Bytes the operation would add.
        adding: u64,
        /// The alias's quota.
        quota: u64,
    },
    /// The database was written by a newer Cofre than this one.
    #[error("schema version {found} is newer than this build understands ({supported})")]
    SchemaTooNew {
        /// The version found in the file.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// The session does not exist (never did, logged out, expired or
    /// revoked): log in again.
    #[error("no such session (expired, revoked or logged out)")]
    NoSession,
    /// The server cannot serve this now (shutting down); try again later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Stored data failed an integrity check (bad seal, bad wrapped key).
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The operating system refused a file operation.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// SQLite or SQLCipher returned an error.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

impl Error {
    /// True when the caller, not the server, is at fault.
    pub fn is_user_error(&self) -> bool {
        !matches!(
            self,
            Error::Io(_)
                | Error::Sqlite(_)
                | Error::Corrupt(_)
                | Error::SchemaTooNew { .. }
                | Error::Unavailable(_)
        )
    }
}

/// Result with the storage error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
