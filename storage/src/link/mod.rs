//! The link between the primary and its secondaries: one versioned message
//! enum, its binary encoding, the node handshake, and the dispatcher that
//! turns a request into a call on the [`Primary`].
//!
//! Bytes in, values out: no socket here. The WebSocket transport carries
//! one [`Frame`] per binary WebSocket message; the in-process link calls
//! [`dispatch`] directly with the same types.
//!
//! Frames are postcard-encoded (compact, binary-safe: a message body costs
//! its length plus a varint). Every frame that arrives is bounded by
//! [`Limits`] before it is decoded, and every validated type (addresses,
//! folder names, keywords) is validated again as it is decoded.

pub mod route;
pub mod wire;
pub mod ws;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::Error;
use crate::keys::{Password, constant_time_eq, random_bytes};
use std::sync::Arc;

use crate::mailbox::{
    AppendOptions, Appended, Changes, EmailSummary, Folder, FolderChanges, Mailbox, Query,
    RecordKind, RecordWrite, Records, SearchHit,
};
use crate::primary::{Changed, Delivery, Primary, SessionId, TokenGrant};
use crate::types::{AliasAddress, EmailId, FolderId, FolderName, Keyword, ModSeq, Uid};

/// The protocol version; a peer with another version is refused.
pub const PROTOCOL_VERSION: u16 = 3;

/// Size limits on what a peer may send.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest frame accepted, in bytes. Default 64 MiB: the 50 MiB message
    /// limit plus room for the request around it.
    pub max_frame: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame: 64 << 20,
        }
    }
}

/// Everything that crosses the link.
#[derive(Debug, Serialize, Deserialize)]
pub enum Frame {
    /// Secondary → primary, first frame: who I am, proven.
    Hello(Hello),
    /// Primary → secondary, answer to a good `Hello`: proven back.
    Welcome(Hello),
    /// Primary → secondary: the handshake failed; the link closes.
    Refused(String),
    /// Secondary → primary.
    Request(Request),
    /// Primary → secondary, one per request.
    Response(Response),
    /// Primary → secondary, unasked: something changed.
    Event(Event),
}

impl Frame {
    /// Takes the message body out of a frame that carries one (an append, a
    /// delivery, a raw read's answer), leaving it empty.
    pub fn take_body(&mut self) -> Option<Vec<u8>> {
        match self {
            Frame::Request(Request {
                op: Op::Append { raw, .. } | Op::Deliver { raw, .. } | Op::Upload { data: raw, .. },
                ..
            })
            | Frame::Response(Response {
                result: Ok(Reply::Raw(raw)),
                ..
            }) => Some(std::mem::take(raw)),
            _ => None,
        }
    }

    /// Puts a body back into a frame that carries one; gives it back if the
    /// frame has no place for it.
    pub fn put_body(&mut self, body: Vec<u8>) -> Result<(), Vec<u8>> {
        match self {
            Frame::Request(Request {
                op: Op::Append { raw, .. } | Op::Deliver { raw, .. } | Op::Upload { data: raw, .. },
                ..
            })
            | Frame::Response(Response {
                result: Ok(Reply::Raw(raw)),
                ..
            }) => {
                *raw = body;
                Ok(())
            }
            _ => Err(body),
        }
    }
}

/// A handshake message: version, node name, a fresh nonce, and an
/// HMAC-SHA256 over them keyed with the cluster secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub version: u16,
    /// The sender's node name (for logs).
    pub node: String,
    /// Random, fresh per handshake.
    pub nonce: [u8; 32],
    /// HMAC-SHA256(secret, role ‖ version ‖ node ‖ nonce ‖ peer nonce).
    pub proof: [u8; 32],
}

/// A request: an id the response will carry, and an operation.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    /// Chosen by the secondary, unique per link.
    pub id: u64,
    /// The operation.
    pub op: Op,
}

/// Every operation a secondary can ask of the primary.
#[derive(Debug, Serialize, Deserialize)]
pub enum Op {
    /// Prove a password; opens a session and drains the sealed queue.
    Login {
        /// The alias.
        address: AliasAddress,
        /// Its password.
        password: Password,
    },
    /// Prove a password and get an API token's contents (a session, and
    /// the keys sealed under the cluster's token key).
    IssueToken {
        /// The alias.
        address: AliasAddress,
        /// Its password.
        password: Password,
        /// How long the token lives, in seconds.
        ttl_secs: u64,
    },
    /// Open a session from an API token's sealed keys.
    Resume {
        /// The alias.
        address: AliasAddress,
        /// The token's id.
        jti: String,
        /// Its expiry, Unix seconds.
        expires_at: i64,
        /// The sealed keys it carries.
        sealed: Vec<u8>,
    },
    /// Revoke an API token everywhere.
    Revoke {
        /// The token's id.
        jti: String,
        /// Its expiry (the revocation is kept until then).
        expires_at: i64,
    },
    /// The portable export of the session's mailbox (its bytes come back
    /// as `Raw`), keyed with the alias's password, which must be given.
    Export {
        /// The session.
        session: SessionId,
        /// The alias's password.
        password: Password,
    },
    /// Replace an alias's password; every session and token of it ends.
    ChangePassword {
        /// The alias.
        address: AliasAddress,
        /// Its current password.
        current: Password,
    },
    /// Administration (domains, aliases, quotas, forwards, webhooks).
    Admin(crate::admin::AdminOp),
    /// Whether this primary's directory holds an alias (the shard map:
    /// each primary's directory lists the aliases it owns).
    Locate {
        /// The alias.
        address: AliasAddress,
    },
    /// End a session.
    Logout {
        /// The session.
        session: SessionId,
    },
    /// Deliver mail (from MX): into the inbox if live, else sealed.
    Deliver {
        /// The recipient alias.
        address: AliasAddress,
        /// The message's bytes.
        raw: Vec<u8>,
        /// Idempotency key: a retried delivery is stored once.
        delivery_ref: Option<String>,
    },
    /// List folders.
    Folders {
        /// The session.
        session: SessionId,
    },
    /// Create a folder (and missing parents).
    CreateFolder {
        /// The session.
        session: SessionId,
        /// Its name.
        name: FolderName,
    },
    /// Rename a folder.
    RenameFolder {
        /// The session.
        session: SessionId,
        /// The folder.
        folder: FolderId,
        /// Its new name.
        name: FolderName,
    },
    /// Delete a folder.
    DeleteFolder {
        /// The session.
        session: SessionId,
        /// The folder.
        folder: FolderId,
    },
    /// Subscribe or unsubscribe.
    Subscribe {
        /// The session.
        session: SessionId,
        /// The folder.
        folder: FolderId,
        /// Subscribed or not.
        subscribed: bool,
    },
    /// Append a message.
    Append {
        /// The session.
        session: SessionId,
        /// The folder.
        folder: FolderId,
        /// The message's bytes.
        raw: Vec<u8>,
        /// Keywords, date and idempotency key.
        options: AppendOptions,
    },
    /// A message's exact bytes.
    Raw {
        /// The session.
        session: SessionId,
        /// The email.
        email: EmailId,
    },
    /// Several messages' exact bytes, in order (answered with `Raws`; an
    /// email that no longer exists gets `None`). For readers that go
    /// through a mailbox in order (POP3), one job instead of many.
    Raws {
        /// The session.
        session: SessionId,
        /// The emails.
        emails: Vec<EmailId>,
    },
    /// Header summaries.
    Summaries {
        /// The session.
        session: SessionId,
        /// The emails.
        emails: Vec<EmailId>,
    },
    /// (UID, email) of every message of a folder.
    FolderIndex {
        /// The session.
        session: SessionId,
        /// The folder.
        folder: FolderId,
    },
    /// Search.
    Search {
        /// The session.
        session: SessionId,
        /// The query.
        query: Query,
    },
    /// Add and remove keywords.
    SetKeywords {
        /// The session.
        session: SessionId,
        /// The emails.
        emails: Vec<EmailId>,
        /// Keywords to add.
        add: Vec<Keyword>,
        /// Keywords to remove.
        remove: Vec<Keyword>,
    },
    /// Copy messages.
    Copy {
        /// The session.
        session: SessionId,
        /// Source folder.
        from: FolderId,
        /// Their UIDs.
        uids: Vec<Uid>,
        /// Target folder.
        to: FolderId,
    },
    /// Move messages.
    Move {
        /// The session.
        session: SessionId,
        /// Source folder.
        from: FolderId,
        /// Their UIDs.
        uids: Vec<Uid>,
        /// Target folder.
        to: FolderId,
    },
    /// Expunge `$deleted` messages (all, or only these UIDs).
    Expunge {
        /// The session.
        session: SessionId,
        /// The folder.
        folder: FolderId,
        /// Limit to these UIDs.
        only: Option<Vec<Uid>>,
    },
    /// Destroy emails.
    Destroy {
        /// The session.
        session: SessionId,
        /// The emails.
        emails: Vec<EmailId>,
    },
    /// Bytes used and the quota.
    Usage {
        /// The session.
        session: SessionId,
    },
    /// Changes since a MODSEQ.
    Changes {
        /// The session.
        session: SessionId,
        /// The MODSEQ.
        since: ModSeq,
    },
    /// Each folder's thread and unread-thread counts.
    ThreadCounts {
        /// The session.
        session: SessionId,
    },
    /// Keep bytes for later use (a JMAP blob upload); answered with
    /// `Uploaded`.
    Upload {
        /// The session.
        session: SessionId,
        /// The bytes.
        data: Vec<u8>,
    },
    /// An upload's bytes (as `Raw`).
    ReadUpload {
        /// The session.
        session: SessionId,
        /// The upload.
        id: i64,
    },
    /// The end of a POP3 session, in one transaction: retrieved messages
    /// get keywords and perhaps move, deleted ones leave the folder
    /// (answered with `Done`).
    Pop3Commit {
        /// The session.
        session: SessionId,
        /// The maildrop.
        folder: FolderId,
        /// Messages marked deleted.
        deleted: Vec<Uid>,
        /// Messages retrieved whole.
        retrieved: Vec<Uid>,
        /// Keywords the retrieved messages get.
        keywords: Vec<Keyword>,
        /// Where retrieved messages go, if anywhere.
        move_to: Option<FolderId>,
    },
    /// A backup run of the session's mailbox (answered with `Backup`).
    Backup {
        /// The session.
        session: SessionId,
    },
    /// The session's alias's backups (answered with `Backups`).
    Backups {
        /// The session.
        session: SessionId,
    },
    /// Up to `len` bytes of a backup's encrypted file from `offset`
    /// (answered with `Raw`; empty past the end): a download in pieces.
    BackupBytes {
        /// The session.
        session: SessionId,
        /// The backup.
        id: String,
        /// Where the piece starts.
        offset: u64,
        /// Its largest size.
        len: u32,
    },
    /// Deletes one of the session's alias's backups (answered with `Done`).
    DeleteBackup {
        /// The session.
        session: SessionId,
        /// The backup.
        id: String,
    },
    /// Puts a backup back as the session's mailbox (answered with
    /// `Backups` holding the held backup of the replaced mailbox).
    Restore {
        /// The session.
        session: SessionId,
        /// The backup.
        id: String,
    },
    /// Confirms the last restore: the replaced mailbox's backup is no
    /// longer held (answered with `Done`).
    ConfirmRestore {
        /// The session.
        session: SessionId,
    },
    /// Takes the alias's maildrop lock for a POP3 session (answered with
    /// `Done`, or `AlreadyExists` while another session holds it); the
    /// session's logout releases it.
    LockMaildrop {
        /// The session.
        session: SessionId,
    },
    /// One folder as an mbox (answered with `Raw`).
    Mbox {
        /// The session.
        session: SessionId,
        /// The folder.
        folder: FolderId,
    },
    /// The records of a kind (answered with `Records`).
    Records {
        /// The session.
        session: SessionId,
        /// Which records.
        kind: RecordKind,
    },
    /// The state of a kind's records (answered with `ModSeq`), without
    /// reading them.
    RecordsState {
        /// The session.
        session: SessionId,
        /// Which records.
        kind: RecordKind,
    },
    /// Changes records of a kind, all or none (answered with `Ids`: the
    /// created records' ids).
    WriteRecords {
        /// The session.
        session: SessionId,
        /// Which records.
        kind: RecordKind,
        /// The changes, in order.
        writes: Vec<RecordWrite>,
    },
    /// One folder's changes since a MODSEQ.
    FolderChanges {
        /// The session.
        session: SessionId,
        /// The folder.
        folder: FolderId,
        /// The MODSEQ.
        since: ModSeq,
    },
}

impl Op {
    /// The operation's name, for metrics and logs (never its arguments).
    pub fn name(&self) -> &'static str {
        match self {
            Op::Login { .. } => "login",
            Op::IssueToken { .. } => "issue_token",
            Op::Resume { .. } => "resume",
            Op::Revoke { .. } => "revoke",
            Op::Locate { .. } => "locate",
            Op::Admin(_) => "admin",
            Op::ChangePassword { .. } => "change_password",
            Op::Export { .. } => "export",
            Op::Mbox { .. } => "mbox",
            Op::Logout { .. } => "logout",
            Op::Deliver { .. } => "deliver",
            Op::Folders { .. } => "folders",
            Op::CreateFolder { .. } => "create_folder",
            Op::RenameFolder { .. } => "rename_folder",
            Op::DeleteFolder { .. } => "delete_folder",
            Op::Subscribe { .. } => "subscribe",
            Op::Append { .. } => "append",
            Op::Raw { .. } => "raw",
            Op::Raws { .. } => "raws",
            Op::Summaries { .. } => "summaries",
            Op::FolderIndex { .. } => "folder_index",
            Op::Search { .. } => "search",
            Op::SetKeywords { .. } => "set_keywords",
            Op::Copy { .. } => "copy",
            Op::Move { .. } => "move",
            Op::Expunge { .. } => "expunge",
            Op::Destroy { .. } => "destroy",
            Op::Usage { .. } => "usage",
            Op::Changes { .. } => "changes",
            Op::FolderChanges { .. } => "folder_changes",
            Op::ThreadCounts { .. } => "thread_counts",
            Op::Upload { .. } => "upload",
            Op::ReadUpload { .. } => "read_upload",
            Op::LockMaildrop { .. } => "lock_maildrop",
            Op::Backup { .. } => "backup",
            Op::Backups { .. } => "backups",
            Op::BackupBytes { .. } => "backup_bytes",
            Op::DeleteBackup { .. } => "delete_backup",
            Op::Restore { .. } => "restore",
            Op::ConfirmRestore { .. } => "confirm_restore",
            Op::Pop3Commit { .. } => "pop3_commit",
            Op::Records { .. } => "records",
            Op::RecordsState { .. } => "records_state",
            Op::WriteRecords { .. } => "write_records",
        }
    }
}

/// The answer to one request.
#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    /// The request's id.
    pub id: u64,
    /// What happened.
    pub result: Result<Reply, LinkError>,
}

/// Successful results.
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    /// Done, nothing to return.
    Done,
    /// A new session.
    Session(SessionId),
    /// Whether this primary owns the alias.
    Holds(bool),
    /// An API token's contents.
    Token(TokenGrant),
    /// A new password, to show once.
    Password(Password),
    /// The result of an administrative operation.
    Admin(crate::admin::AdminReply),
    /// Where delivered mail went.
    Delivery(Delivery),
    /// Folders.
    Folders(Vec<Folder>),
    /// One folder.
    Folder(Folder),
    /// An append.
    Appended(Appended),
    /// Message bytes.
    Raw(Vec<u8>),
    /// What a backup run did.
    Backup(crate::backup::BackupOutcome),
    /// Backups, oldest first.
    Backups(Vec<crate::backup::BackupRecord>),
    /// Several messages' bytes, `None` for those gone.
    Raws(Vec<Option<Vec<u8>>>),
    /// Summaries.
    Summaries(Vec<EmailSummary>),
    /// A folder's index.
    FolderIndex(Vec<(Uid, EmailId)>),
    /// Search hits.
    Hits(Vec<SearchHit>),
    /// A MODSEQ.
    ModSeq(ModSeq),
    /// (source UID, new UID) pairs.
    UidPairs(Vec<(Uid, Uid)>),
    /// UIDs expunged, and the MODSEQ of the expunge.
    Expunged {
        /// The UIDs.
        uids: Vec<Uid>,
        /// The mailbox's MODSEQ after the expunge.
        modseq: ModSeq,
    },
    /// Bytes used, and the quota if any.
    Usage {
        /// Bytes used.
        used: u64,
        /// The limit.
        quota: Option<u64>,
    },
    /// Mailbox changes.
    Changes(Changes),
    /// Folder changes.
    FolderChanges(FolderChanges),
    /// An upload's id.
    Uploaded(i64),
    /// (folder, threads, unread threads) for each folder with mail.
    ThreadCounts(Vec<(FolderId, u64, u64)>),
    /// Records of a kind.
    Records(Records),
    /// Ids of what was created.
    Ids(Vec<i64>),
}

/// Unsolicited news from the primary, for IDLE, JMAP push and web clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// An alias's mailbox changed.
    Changed(Changed),
}

/// Why a request failed, as the secondary may tell its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// Wrong password.
    WrongPassword,
    /// No such alias, folder, email or session.
    NotFound,
    /// Already exists.
    AlreadyExists,
    /// Invalid input.
    Invalid,
    /// Message too large.
    TooLarge,
    /// Over quota.
    OverQuota,
    /// The session is gone (expired, revoked, logged out, or the primary
    /// restarted): open a new one.
    NoSession,
    /// The primary cannot serve this now (shutting down); retry later.
    Unavailable,
    /// The primary failed; details are in its log, not here.
    Internal,
}

/// A failed request: a stable code and a message fit for the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct LinkError {
    /// What kind of failure.
    pub code: ErrorCode,
    /// Human-readable; never internal details.
    pub message: String,
}

impl From<Error> for LinkError {
    fn from(e: Error) -> LinkError {
        let code = match &e {
            Error::WrongPassword => ErrorCode::WrongPassword,
            Error::NoSuchAlias(_) | Error::NotFound(_) => ErrorCode::NotFound,
            Error::AliasExists(_) | Error::AlreadyExists(_) => ErrorCode::AlreadyExists,
            Error::Invalid(_) => ErrorCode::Invalid,
            Error::TooLarge { .. } => ErrorCode::TooLarge,
            Error::OverQuota { .. } => ErrorCode::OverQuota,
            Error::Unavailable(_) => ErrorCode::Unavailable,
            Error::NoSession => ErrorCode::NoSession,
            _ => ErrorCode::Internal,
        };
        let message = if code == ErrorCode::Internal {
            "internal error".to_string()
        } else {
            e.to_string()
        };
        LinkError { code, message }
    }
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Larger than [`Limits::max_frame`].
    #[error("frame of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not a frame of this protocol version.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// Encodes a frame.
pub fn encode(frame: &Frame) -> Vec<u8> {
    // Serializing owned data into a Vec cannot fail.
    postcard::to_stdvec(frame).unwrap_or_default()
}

/// Decodes a frame, refusing oversized and malformed input (and input with
/// trailing bytes).
pub fn decode(bytes: &[u8], limits: Limits) -> Result<Frame, DecodeError> {
    if bytes.len() > limits.max_frame {
        return Err(DecodeError::TooLarge {
            size: bytes.len(),
            limit: limits.max_frame,
        });
    }
    match postcard::take_from_bytes::<Frame>(bytes) {
        Ok((frame, [])) => Ok(frame),
        Ok((_, rest)) => Err(DecodeError::Malformed(format!(
            "{} trailing bytes",
            rest.len()
        ))),
        Err(e) => Err(DecodeError::Malformed(e.to_string())),
    }
}

/// Which side of the handshake a proof is for (so one cannot be replayed as
/// the other).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The secondary's `Hello`.
    Secondary,
    /// The primary's `Welcome`.
    Primary,
}

fn proof(
    secret: &[u8],
    side: Side,
    version: u16,
    node: &str,
    nonce: &[u8; 32],
    peer: &[u8; 32],
) -> [u8; 32] {
    // HMAC accepts keys of any length; were that ever to fail, an all-zero
    // proof matches nothing and the handshake is refused.
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(secret) else {
        return [0; 32];
    };
    mac.update(match side {
        Side::Secondary => b"cofre/link/hello\0",
        Side::Primary => b"cofre/link/welcome",
    });
    mac.update(&version.to_be_bytes());
    mac.update(&(node.len() as u64).to_be_bytes());
    mac.update(node.as_bytes());
    mac.update(nonce);
    mac.update(peer);
    mac.finalize().into_bytes().into()
}

/// Makes a handshake message. `peer_nonce` is the other side's nonce (all
/// zeros for the secondary's first `Hello`, which has not seen one yet: the
/// primary's `Welcome` then binds both nonces).
pub fn hello(secret: &[u8], side: Side, node: &str, peer_nonce: &[u8; 32]) -> Hello {
    let nonce: [u8; 32] = random_bytes();
    Hello {
        version: PROTOCOL_VERSION,
        node: node.to_string(),
        nonce,
        proof: proof(secret, side, PROTOCOL_VERSION, node, &nonce, peer_nonce),
    }
}

/// Checks a handshake message; the error says why, for the log and for a
/// `Refused` frame.
pub fn verify(secret: &[u8], side: Side, h: &Hello, peer_nonce: &[u8; 32]) -> Result<(), String> {
    if h.version != PROTOCOL_VERSION {
        return Err(format!(
            "protocol version {} is not {PROTOCOL_VERSION}: upgrade the older node",
            h.version
        ));
    }
    let want = proof(secret, side, h.version, &h.node, &h.nonce, peer_nonce);
    if !constant_time_eq(&want, &h.proof) {
        return Err("wrong cluster secret".into());
    }
    Ok(())
}

/// The work of a [`MailboxJob`].
pub type JobFn = Box<dyn FnOnce(&mut Mailbox) -> crate::Result<Reply> + Send>;

/// An operation on one session's mailbox, ready to run on its thread.
pub struct MailboxJob {
    /// Whose mailbox.
    pub session: SessionId,
    /// Whether it writes (and so announces a change).
    pub writes: bool,
    /// The work.
    pub run: JobFn,
}

impl std::fmt::Debug for MailboxJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailboxJob")
            .field("writes", &self.writes)
            .finish_non_exhaustive()
    }
}

#[allow(clippy::result_large_err)]
fn job(
    session: SessionId,
    writes: bool,
    run: impl FnOnce(&mut Mailbox) -> crate::Result<Reply> + Send + 'static,
) -> Result<MailboxJob, Op> {
    Ok(MailboxJob {
        session,
        writes,
        run: Box::new(run),
    })
}

/// Turns an operation on a session's mailbox into a job for the mailbox's
/// thread; gives back any other operation (login, delivery, ...). The `Op`
/// given back is large, but it is moved once and never stored.
#[allow(clippy::result_large_err)]
pub fn mailbox_job(op: Op) -> Result<MailboxJob, Op> {
    match op {
        Op::Folders { session } => job(session, false, |mb| Ok(Reply::Folders(mb.folders()?))),
        Op::CreateFolder { session, name } => job(session, true, move |mb| {
            Ok(Reply::Folder(mb.create_folder(&name)?))
        }),
        Op::RenameFolder {
            session,
            folder,
            name,
        } => job(session, true, move |mb| {
            Ok(Reply::Folder(mb.rename_folder(folder, &name)?))
        }),
        Op::DeleteFolder { session, folder } => job(session, true, move |mb| {
            mb.delete_folder(folder)?;
            Ok(Reply::Done)
        }),
        Op::Subscribe {
            session,
            folder,
            subscribed,
        } => job(session, true, move |mb| {
            mb.set_subscribed(folder, subscribed)?;
            Ok(Reply::Done)
        }),
        Op::Append {
            session,
            folder,
            raw,
            options,
        } => job(session, true, move |mb| {
            Ok(Reply::Appended(mb.append(folder, &raw, &options)?))
        }),
        Op::Raw { session, email } => job(session, false, move |mb| Ok(Reply::Raw(mb.raw(email)?))),
        Op::Raws { session, emails } => job(session, false, move |mb| {
            let mut out = Vec::with_capacity(emails.len());
            for e in emails {
                out.push(match mb.raw(e) {
                    Ok(r) => Some(r),
                    Err(crate::Error::NotFound(_)) => None,
                    Err(other) => return Err(other),
                });
            }
            Ok(Reply::Raws(out))
        }),
        Op::Summaries { session, emails } => job(session, false, move |mb| {
            Ok(Reply::Summaries(mb.summaries(&emails)?))
        }),
        Op::FolderIndex { session, folder } => job(session, false, move |mb| {
            Ok(Reply::FolderIndex(mb.folder_index(folder)?))
        }),
        Op::Search { session, query } => job(session, false, move |mb| {
            Ok(Reply::Hits(mb.search(&query)?))
        }),
        Op::SetKeywords {
            session,
            emails,
            add,
            remove,
        } => job(session, true, move |mb| {
            Ok(Reply::ModSeq(mb.set_keywords(&emails, &add, &remove)?))
        }),
        Op::Copy {
            session,
            from,
            uids,
            to,
        } => job(session, true, move |mb| {
            Ok(Reply::UidPairs(mb.copy(from, &uids, to)?))
        }),
        Op::Move {
            session,
            from,
            uids,
            to,
        } => job(session, true, move |mb| {
            Ok(Reply::UidPairs(mb.move_messages(from, &uids, to)?))
        }),
        Op::Expunge {
            session,
            folder,
            only,
        } => job(session, true, move |mb| {
            let uids = mb.expunge(folder, only.as_deref())?;
            // Read on the mailbox's one thread right after the write: no
            // other write can come between.
            let modseq = mb.highest_modseq()?;
            Ok(Reply::Expunged { uids, modseq })
        }),
        Op::Destroy { session, emails } => job(session, true, move |mb| {
            mb.destroy_emails(&emails)?;
            Ok(Reply::Done)
        }),
        Op::Usage { session } => job(session, false, |mb| {
            Ok(Reply::Usage {
                used: mb.usage()?,
                quota: mb.options().quota,
            })
        }),
        Op::Changes { session, since } => job(session, false, move |mb| {
            Ok(Reply::Changes(mb.changes_since(since)?))
        }),
        Op::ThreadCounts { session } => job(session, false, |mb| {
            Ok(Reply::ThreadCounts(mb.thread_counts()?))
        }),
        Op::Upload { session, data } => job(session, true, move |mb| {
            Ok(Reply::Uploaded(mb.put_upload(&data)?))
        }),
        Op::ReadUpload { session, id } => {
            job(session, false, move |mb| Ok(Reply::Raw(mb.upload(id)?)))
        }
        Op::Pop3Commit {
            session,
            folder,
            deleted,
            retrieved,
            keywords,
            move_to,
        } => job(session, true, move |mb| {
            mb.pop3_commit(folder, &deleted, &retrieved, &keywords, move_to)?;
            Ok(Reply::Done)
        }),
        Op::Mbox { session, folder } => job(session, false, move |mb| {
            let mut out = Vec::new();
            crate::export::mbox(mb, folder, &mut out)?;
            Ok(Reply::Raw(out))
        }),
        Op::RecordsState { session, kind } => job(session, false, move |mb| {
            Ok(Reply::ModSeq(mb.records_state(kind)?))
        }),
        Op::Records { session, kind } => job(session, false, move |mb| {
            Ok(Reply::Records(mb.records(kind)?))
        }),
        Op::WriteRecords {
            session,
            kind,
            writes,
        } => job(session, true, move |mb| {
            Ok(Reply::Ids(mb.write_records(kind, &writes)?))
        }),
        Op::FolderChanges {
            session,
            folder,
            since,
        } => job(session, false, move |mb| {
            Ok(Reply::FolderChanges(mb.folder_changes(folder, since)?))
        }),
        other => Err(other),
    }
}

/// Carries out an operation that is not a mailbox job (it may block: a
/// password check, a sealed delivery).
fn primary_op(primary: &Primary, op: Op) -> Result<Reply, LinkError> {
    Ok(match op {
        Op::Login { address, password } => Reply::Session(primary.login(&address, &password)?),
        Op::IssueToken {
            address,
            password,
            ttl_secs,
        } => Reply::Token(primary.issue_token(
            &address,
            &password,
            std::time::Duration::from_secs(ttl_secs),
        )?),
        Op::Resume {
            address,
            jti,
            expires_at,
            sealed,
        } => Reply::Session(primary.resume(&address, &jti, expires_at, &sealed)?),
        Op::Revoke { jti, expires_at } => {
            primary.revoke(&jti, expires_at)?;
            Reply::Done
        }
        Op::Admin(op) => Reply::Admin(primary.admin(op)?),
        Op::Export { session, password } => Reply::Raw(primary.export(session, &password)?),
        Op::ChangePassword { address, current } => {
            Reply::Password(primary.change_password(&address, &current)?)
        }
        Op::Locate { address } => Reply::Holds(match primary.store().alias(&address) {
            Ok(_) => true,
            Err(Error::NoSuchAlias(_)) => false,
            Err(e) => return Err(e.into()),
        }),
        Op::Logout { session } => {
            primary.logout(session);
            Reply::Done
        }
        Op::LockMaildrop { session } => {
            primary.lock_maildrop(session)?;
            Reply::Done
        }
        Op::Backup { session } => Reply::Backup(primary.backup(session)?),
        Op::Backups { session } => Reply::Backups(primary.backups(session)?),
        Op::BackupBytes {
            session,
            id,
            offset,
            len,
        } => Reply::Raw(primary.backup_bytes(session, &id, offset, len as usize)?),
        Op::DeleteBackup { session, id } => {
            primary.delete_backup(session, &id)?;
            Reply::Done
        }
        Op::Restore { session, id } => Reply::Backups(vec![primary.restore(session, &id)?]),
        Op::ConfirmRestore { session } => {
            primary.confirm_restore(session)?;
            Reply::Done
        }
        Op::Deliver {
            address,
            raw,
            delivery_ref,
        } => Reply::Delivery(primary.deliver(
            &address,
            raw,
            AppendOptions {
                delivery_ref,
                ..AppendOptions::default()
            },
        )?),
        other => {
            return Err(LinkError {
                code: ErrorCode::Internal,
                message: format!("{} is a mailbox operation", other.name()),
            });
        }
    })
}

/// Carries out one operation on the primary, on the caller's thread
/// (which it may block).
pub fn dispatch(primary: &Primary, op: Op) -> Result<Reply, LinkError> {
    match mailbox_job(op) {
        Ok(MailboxJob {
            session,
            writes: true,
            run,
        }) => Ok(primary.write(session, run)?),
        Ok(MailboxJob { session, run, .. }) => Ok(primary.call(session, run)?),
        Err(op) => primary_op(primary, op),
    }
}

/// Carries out one operation on the primary from async code: mailbox jobs
/// go straight to the mailbox's thread; operations that block run on the
/// blocking pool.
pub async fn dispatch_async(primary: &Arc<Primary>, op: Op) -> Result<Reply, LinkError> {
    match mailbox_job(op) {
        Ok(MailboxJob {
            session,
            writes: true,
            run,
        }) => Ok(primary.write_async(session, run).await?),
        Ok(MailboxJob { session, run, .. }) => Ok(primary.call_async(session, run).await?),
        // Forgetting a session only takes a lock: no need for a thread.
        Err(Op::Logout { session }) => {
            primary.logout(session);
            Ok(Reply::Done)
        }
        Err(Op::LockMaildrop { session }) => {
            primary.lock_maildrop(session)?;
            Ok(Reply::Done)
        }
        Err(op) => {
            let primary = Arc::clone(primary);
            tokio::task::spawn_blocking(move || primary_op(&primary, op))
                .await
                .unwrap_or_else(|_| {
                    Err(LinkError {
                        code: ErrorCode::Internal,
                        message: "internal error".into(),
                    })
                })
        }
    }
}

/// Decodes one whole request frame, runs it with [`dispatch`] (blocking),
/// and encodes the response frame; a frame that is not a well-formed
/// request yields `Err`. The WebSocket transport does the same in steps
/// (`wire::Assembler`, then [`dispatch_async`]); this one-call form is for
/// callers that hold a complete frame, such as the protocol tests.
///
/// It takes the frame's bytes by value and frees them once decoded, so a
/// large message is held once, not twice, while it is stored.
pub fn handle(
    primary: &Primary,
    bytes: impl AsRef<[u8]>,
    limits: Limits,
) -> Result<Vec<u8>, DecodeError> {
    let frame = decode(bytes.as_ref(), limits)?;
    drop(bytes);
    match frame {
        Frame::Request(Request { id, op }) => Ok(encode(&Frame::Response(Response {
            id,
            result: dispatch(primary, op),
        }))),
        other => Err(DecodeError::Malformed(format!(
            "expected a request, got {}",
            frame_kind(&other)
        ))),
    }
}

fn frame_kind(f: &Frame) -> &'static str {
    match f {
        Frame::Hello(_) => "Hello",
        Frame::Welcome(_) => "Welcome",
        Frame::Refused(_) => "Refused",
        Frame::Request(_) => "Request",
        Frame::Response(_) => "Response",
        Frame::Event(_) => "Event",
    }
}
