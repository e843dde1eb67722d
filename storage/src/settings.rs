//! An alias's settings, kept as records in its encrypted mailbox (kind
//! `Setting`), each under a fixed id.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::types::FolderName;

/// The record id of the POP3 settings.
pub const POP3: i64 = 1;

/// How POP3 treats the maildrop (the Inbox).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pop3Settings {
    /// Where messages retrieved whole (RETR) go when the session ends;
    /// `None` leaves them in the Inbox (the default).
    pub move_retrieved_to: Option<FolderName>,
    /// Whether messages retrieved in an earlier session are left out of
    /// the maildrop (they stay in the Inbox, marked `$pop3retrieved`).
    pub hide_retrieved: bool,
}

/// The keyword a message retrieved over POP3 gets while
/// `hide_retrieved` is on.
pub const RETRIEVED_KEYWORD: &str = "$pop3retrieved";

impl Pop3Settings {
    /// The settings as stored.
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Settings from stored bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Pop3Settings> {
        postcard::from_bytes(bytes).map_err(|e| Error::Corrupt(format!("POP3 settings: {e}")))
    }
}
