//! The JSON shapes of the API: what clients send and receive, with their
//! OpenAPI schemas. They are the API's own types, translated from and to
//! storage types, so that the storage engine can change without the API
//! changing under its clients.

use cofre_storage::mailbox::{EmailSummary, Folder};
use cofre_storage::time::iso;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Credentials for a new API token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    /// The alias address.
    #[schema(example = "hello@example.com")]
    pub address: String,
    /// Its password.
    pub password: String,
}

/// A new API token.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    /// The bearer token for `Authorization: Bearer …`.
    pub token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// When it expires (RFC 3339).
    pub expires_at: String,
    /// The alias it opens.
    pub address: String,
}

/// A folder with its counters.
#[derive(Debug, Serialize, ToSchema)]
pub struct FolderView {
    /// Stable id.
    pub id: i64,
    /// Full name, `/`-separated.
    pub name: String,
    /// Special use: inbox, drafts, sent, trash, junk, archive.
    pub role: Option<String>,
    /// Messages in it.
    pub total: u64,
    /// Messages not seen yet.
    pub unseen: u64,
    /// Whether the user subscribed to it.
    pub subscribed: bool,
    /// IMAP UIDVALIDITY (never changes for this folder).
    pub uid_validity: u32,
    /// The UID the next message will get.
    pub uid_next: u32,
    /// Highest modification sequence of anything in it.
    pub highest_modseq: u64,
}

impl From<Folder> for FolderView {
    fn from(f: Folder) -> FolderView {
        FolderView {
            id: f.id.0,
            name: f.name,
            role: f.role.map(|r| r.as_str().to_ascii_lowercase()),
            total: f.total,
            unseen: f.unseen,
            subscribed: f.subscribed,
            uid_validity: f.uid_validity,
            uid_next: f.uid_next,
            highest_modseq: f.highest_modseq,
        }
    }
}

/// A new folder.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateFolder {
    /// Full name; missing parents are created.
    #[schema(example = "Work/Projects")]
    pub name: String,
}

/// Changes to a folder.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateFolder {
    /// A new full name.
    pub name: Option<String>,
    /// Subscribe or unsubscribe.
    pub subscribed: Option<bool>,
}

/// A name and an address.
#[derive(Debug, Serialize, ToSchema)]
pub struct AddressView {
    /// Display name.
    pub name: Option<String>,
    /// The address.
    pub email: String,
}

/// Where a message is filed.
#[derive(Debug, Serialize, ToSchema)]
pub struct Placement {
    /// The folder.
    pub folder_id: i64,
    /// The message's UID in it.
    pub uid: u32,
}

/// A message's envelope and state.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageView {
    /// Stable id.
    pub id: i64,
    /// Its conversation.
    pub thread_id: i64,
    /// The Message-ID header, without angle brackets.
    pub message_id: Option<String>,
    /// Subject.
    pub subject: String,
    /// From.
    pub from: Vec<AddressView>,
    /// To.
    pub to: Vec<AddressView>,
    /// Cc.
    pub cc: Vec<AddressView>,
    /// Reply-To.
    pub reply_to: Vec<AddressView>,
    /// The Date header (RFC 3339).
    pub sent_at: Option<String>,
    /// When it arrived (RFC 3339).
    pub received_at: String,
    /// Size in bytes.
    pub size: u64,
    /// Whether it has attachments.
    pub has_attachment: bool,
    /// The start of its text.
    pub preview: String,
    /// Keywords (`$seen`, `$flagged`, …, and custom ones).
    pub keywords: Vec<String>,
    /// Folders it is filed in.
    pub folders: Vec<Placement>,
    /// Modification sequence of its last change.
    pub modseq: u64,
}

fn addresses(list: Vec<cofre_storage::mailbox::Addr>) -> Vec<AddressView> {
    list.into_iter()
        .map(|a| AddressView {
            name: a.name,
            email: a.email,
        })
        .collect()
}

impl From<EmailSummary> for MessageView {
    fn from(e: EmailSummary) -> MessageView {
        MessageView {
            id: e.id.0,
            thread_id: e.thread_id.0,
            message_id: e.message_id,
            subject: e.subject,
            from: addresses(e.from),
            to: addresses(e.to),
            cc: addresses(e.cc),
            reply_to: addresses(e.reply_to),
            sent_at: e.sent_at.map(iso),
            received_at: iso(e.received_at),
            size: e.size,
            has_attachment: e.has_attachment,
            preview: e.preview,
            keywords: e.keywords.iter().map(|k| k.as_str().to_string()).collect(),
            folders: e
                .folders
                .iter()
                .map(|(f, u)| Placement {
                    folder_id: f.0,
                    uid: u.get(),
                })
                .collect(),
            modseq: e.modseq,
        }
    }
}

/// One page of messages.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessagePage {
    /// The messages, in the requested order.
    pub messages: Vec<MessageView>,
    /// Pass as `cursor` to get the next page; absent on the last one.
    pub next_cursor: Option<String>,
}

/// A stored message.
#[derive(Debug, Serialize, ToSchema)]
pub struct Stored {
    /// The message's id.
    pub id: i64,
    /// Its UID in the folder.
    pub uid: u32,
    /// The mailbox's modification sequence after the write.
    pub modseq: u64,
}

/// Keywords to add to and remove from messages.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeywordChange {
    /// The messages.
    #[schema(min_items = 1, max_items = 10000)]
    pub ids: Vec<i64>,
    /// Keywords to add (`$seen`, `$flagged`, or custom atoms).
    #[serde(default)]
    pub add: Vec<String>,
    /// Keywords to remove.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// Messages to move or copy between folders.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    /// The messages.
    #[schema(min_items = 1, max_items = 10000)]
    pub ids: Vec<i64>,
    /// The folder they are in.
    pub from: i64,
    /// The folder they go to.
    pub to: i64,
}

/// Messages to delete for good.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Delete {
    /// The messages.
    #[schema(min_items = 1, max_items = 10000)]
    pub ids: Vec<i64>,
}

/// The mailbox's modification sequence after a change.
#[derive(Debug, Serialize, ToSchema)]
pub struct Changed {
    /// The new highest modification sequence.
    pub modseq: u64,
}

/// A message's UID before and after a move or copy.
#[derive(Debug, Serialize, ToSchema)]
pub struct UidPair {
    /// Its UID in the source folder.
    pub from_uid: u32,
    /// Its UID in the target folder.
    pub to_uid: u32,
}

/// UIDs in the target folder after a move or copy.
#[derive(Debug, Serialize, ToSchema)]
pub struct Transferred {
    /// One pair per message, in the order given.
    pub uids: Vec<UidPair>,
}

/// Storage use.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuotaView {
    /// Bytes used by messages.
    pub used: u64,
    /// The limit, if any.
    pub limit: Option<u64>,
}

/// A whole message as bytes (RFC 5322). Only its schema is used: handlers
/// send and take the bytes themselves.
#[derive(Debug, ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct RawMessage(#[allow(dead_code)] Vec<u8>);

/// How POP3 treats the Inbox (the maildrop) for this alias.
#[derive(Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Pop3SettingsView {
    /// The folder messages retrieved over POP3 (RETR) are moved to when
    /// the session ends; null leaves them in the Inbox (the default).
    pub move_retrieved_to: Option<String>,
    /// Leave messages retrieved in an earlier POP3 session out of later
    /// ones (they stay in the Inbox for IMAP and the API).
    pub hide_retrieved: bool,
}

/// One backup of the alias's mailbox.
#[derive(Debug, Serialize, ToSchema)]
pub struct BackupView {
    /// Its id (random; never derived from the address).
    pub id: String,
    /// When it was taken (RFC 3339).
    pub created_at: String,
    /// SHA-256 of the encrypted backup file, hex.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    /// Kept whatever the retention says: the mailbox as it was before a
    /// restore that is not confirmed yet.
    pub held: bool,
}

/// What a restore did.
#[derive(Debug, Serialize, ToSchema)]
pub struct RestoreView {
    /// The backup now in place.
    pub restored: String,
    /// The backup of the mailbox as it was, held until the restore is
    /// confirmed.
    pub replaced: BackupView,
}

/// What a backup run did.
#[derive(Debug, Serialize, ToSchema)]
pub struct BackupRunView {
    /// True when a new version was stored; false when the mailbox had not
    /// changed since `backup`.
    pub stored: bool,
    /// The new version, or the latest one when nothing changed.
    pub backup: BackupView,
}

impl From<cofre_storage::backup::BackupRecord> for BackupView {
    fn from(b: cofre_storage::backup::BackupRecord) -> Self {
        BackupView {
            id: b.id,
            created_at: cofre_storage::time::iso(b.created_at),
            sha256: b.sha256,
            size: b.size,
            held: b.held,
        }
    }
}
