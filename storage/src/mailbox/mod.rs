//! One alias's mailbox: a SQLCipher database opened with the raw data key.
//!
//! The API is typed Rust with no protocol knowledge: folders, emails,
//! keywords, UIDs, MODSEQs, search and changes. IMAP, JMAP and REST are
//! built on top of it elsewhere. Every write runs in one immediate
//! transaction that takes the next MODSEQ, so a write is whole or absent.

mod append;
mod changes;
mod folders;
mod keywords;
pub mod parse;
mod read;
mod records;
pub mod schema;
pub mod search;
mod uploads;

use std::cell::Cell;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, Transaction, TransactionBehavior};

use crate::db::{self, Mode};
use crate::error::Result;
use crate::keys::SecretKey;
use crate::types::{FolderId, ModSeq, Role};

pub use append::{AppendOptions, Appended};
pub use changes::{Changes, FolderChanges};
pub use folders::Folder;
pub use parse::Addr;
pub use read::{EmailSummary, MimePart, part_decoded_of, structure_of};
pub use records::{Record, RecordKind, RecordWrite, Records, SUBMISSION_TTL_SECS};
pub use search::{Filter, Query, SearchHit, Sort, SortKey, TextField};
pub use uploads::{UPLOAD_TTL_SECS, UPLOADS_MAX_BYTES};

/// Tunables of a mailbox, with the defaults a server uses.
#[derive(Debug, Clone)]
pub struct MailboxOptions {
    /// Largest message accepted, in bytes. Default 50 MiB.
    pub max_message_size: u64,
    /// Compress message skeletons and attachment bodies with zstd when it
    /// saves at least 10%. Default on.
    pub compress: bool,
    /// Quota in bytes (sum of message sizes), if any.
    pub quota: Option<u64>,
}

impl Default for MailboxOptions {
    fn default() -> Self {
        MailboxOptions {
            max_message_size: 50 * 1024 * 1024,
            compress: true,
            quota: None,
        }
    }
}

/// Counts of what a mailbox stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageStats {
    /// Distinct emails.
    pub emails: u64,
    /// Sum of message sizes (what quotas count).
    pub usage: u64,
    /// Distinct deduplicated attachment bodies.
    pub blobs: u64,
    /// Bytes of deduplicated attachment bodies, before compression.
    pub blob_bytes: u64,
}

/// An open mailbox. Not `Sync`: one writer owns it; readers open their own.
pub struct Mailbox {
    conn: Connection,
    path: PathBuf,
    options: MailboxOptions,
    /// Emails on the index backlog, at least (exact after open and flush;
    /// an expunge may leave it high, never low).
    index_backlog: Cell<usize>,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox").field("path", &self.path).finish()
    }
}

impl Mailbox {
    /// Creates a new mailbox file with the default folders.
    pub fn create(path: &Path, key: &SecretKey, options: MailboxOptions) -> Result<Mailbox> {
        let mut conn = db::open(path, Some(key), Mode::Create)?;
        schema::migrate(&mut conn)?;
        let mut mb = Mailbox {
            conn,
            path: path.to_path_buf(),
            options,
            index_backlog: Cell::new(0),
        };
        mb.write(|tx, modseq| {
            for role in Role::ALL {
                folders::insert_folder(tx, role.default_name(), Some(role), modseq)?;
            }
            Ok(())
        })?;
        Ok(mb)
    }

    /// Opens an existing mailbox; a wrong key fails with
    /// [`Error::WrongKey`](crate::Error::WrongKey) before anything is written.
    pub fn open(path: &Path, key: &SecretKey, options: MailboxOptions) -> Result<Mailbox> {
        let mut conn = db::open(path, Some(key), Mode::Existing)?;
        schema::migrate(&mut conn)?;
        let backlog: i64 =
            conn.query_row("SELECT count(*) FROM index_backlog", [], |r| r.get(0))?;
        Ok(Mailbox {
            conn,
            path: path.to_path_buf(),
            options,
            index_backlog: Cell::new(backlog as usize),
        })
    }

    /// How many emails wait for the search indexes (at least; the mailbox's
    /// owner calls [`flush_index`](Self::flush_index) when it is quiet or
    /// this grows large).
    pub fn index_backlog(&self) -> usize {
        self.index_backlog.get()
    }

    /// Indexes every email on the backlog in one transaction; returns how
    /// many. Searches call it first, so they never miss mail.
    pub fn flush_index(&self) -> Result<usize> {
        self.flush_index_some(usize::MAX)
    }

    /// Indexes the oldest `limit` emails on the backlog in one transaction
    /// (a step short enough not to hold up the writes queued behind it);
    /// returns how many.
    pub fn flush_index_some(&self, limit: usize) -> Result<usize> {
        if self.index_backlog.get() == 0 || limit == 0 {
            return Ok(0);
        }
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
        let n = append::flush_backlog(&tx, limit)?;
        tx.commit()?;
        // Fewer than asked for: nothing is left.
        let left = if n < limit {
            0
        } else {
            self.index_backlog.get().saturating_sub(n).max(1)
        };
        self.index_backlog.set(left);
        Ok(n)
    }

    /// Gives back the page cache this connection filled (up to
    /// [`db::CACHE_KIB`]); the primary calls it when a mailbox goes idle, so
    /// an idle mailbox costs tens of KiB however busy it was.
    pub fn release_memory(&self) -> Result<()> {
        self.conn.execute_batch("PRAGMA shrink_memory;")?;
        Ok(())
    }

    /// Where the file lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The options this mailbox was opened with.
    pub fn options(&self) -> &MailboxOptions {
        &self.options
    }

    /// Changes the quota enforced on appends.
    pub fn set_quota(&mut self, quota: Option<u64>) {
        self.options.quota = quota;
    }

    /// The raw connection, for the backup and export code in this crate.
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Runs `f` with every commit reaching the disk before it returns
    /// (`synchronous = FULL`), for writes someone was promised would be
    /// kept — mail answered with SMTP 250, a drain that then empties the
    /// queue. Other writes commit to the OS only (`NORMAL`): safe from a
    /// process crash, and in WAL mode never corrupting on power loss.
    pub fn durably<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.conn.execute_batch("PRAGMA synchronous = FULL")?;
        let out = f(self);
        let restored = self.conn.execute_batch("PRAGMA synchronous = NORMAL");
        let out = out?;
        restored?;
        Ok(out)
    }

    /// The highest MODSEQ handed out so far (the JMAP state).
    pub fn highest_modseq(&self) -> Result<ModSeq> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'modseq'", [], |r| {
                r.get::<_, i64>(0)
            })? as ModSeq)
    }

    /// Bytes used: the sum of the sizes of all stored messages.
    pub fn usage(&self) -> Result<u64> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'usage'", [], |r| {
                r.get::<_, i64>(0)
            })? as u64)
    }

    /// What the mailbox stores, counted.
    pub fn storage_stats(&self) -> Result<StorageStats> {
        Ok(self.conn.query_row(
            "SELECT (SELECT count(*) FROM emails), (SELECT COALESCE(SUM(size), 0) FROM emails),
                    (SELECT count(*) FROM blobs), (SELECT COALESCE(SUM(size), 0) FROM blobs)",
            [],
            |r| {
                Ok(StorageStats {
                    emails: r.get::<_, i64>(0)? as u64,
                    usage: r.get::<_, i64>(1)? as u64,
                    blobs: r.get::<_, i64>(2)? as u64,
                    blob_bytes: r.get::<_, i64>(3)? as u64,
                })
            },
        )?)
    }

    /// Number of distinct emails.
    pub fn email_count(&self) -> Result<u64> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM emails", [], |r| r.get::<_, i64>(0))?
            as u64)
    }

    /// Runs `f` in an immediate transaction with a fresh MODSEQ; commits on
    /// `Ok`, rolls back on `Err`.
    pub(crate) fn write<T>(
        &mut self,
        f: impl FnOnce(&Transaction<'_>, ModSeq) -> Result<T>,
    ) -> Result<T> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let modseq: i64 = tx
            .prepare_cached(
                "UPDATE meta SET value = value + 1 WHERE key = 'modseq' RETURNING value",
            )?
            .query_row([], |r| r.get(0))?;
        let out = f(&tx, modseq as ModSeq)?;
        tx.commit()?;
        Ok(out)
    }

    /// The folder with a role (every mailbox has all six).
    pub fn folder_by_role(&self, role: Role) -> Result<Folder> {
        folders::by_role(&self.conn, role)
    }

    /// Looks a folder up by id.
    pub fn folder(&self, id: FolderId) -> Result<Folder> {
        folders::by_id(&self.conn, id)
    }
}

/// Row ids as a JSON array, for `json_each` in SQL: one statement for any
/// number of ids.
pub(crate) fn id_list(ids: impl IntoIterator<Item = i64>) -> String {
    let mut s = String::from("[");
    for (i, id) in ids.into_iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&id.to_string());
    }
    s.push(']');
    s
}

/// Records one change-log row.
pub(crate) fn log_change(
    tx: &Transaction<'_>,
    modseq: ModSeq,
    kind: &str,
    object_id: i64,
    folder: Option<(FolderId, u32)>,
    op: &str,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO changes (modseq, kind, object_id, folder_id, uid, op)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(rusqlite::params![
        modseq as i64,
        kind,
        object_id,
        folder.map(|f| f.0.0),
        folder.map(|f| f.1),
        op
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(mb: &Mailbox) -> i64 {
        mb.conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap_or(-1)
    }

    #[test]
    fn durably_syncs_its_commits_and_then_goes_back() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let key = SecretKey::generate();
        let mut mb = Mailbox::create(&dir.path().join("m"), &key, MailboxOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(level(&mb), 1, "NORMAL by default");
        let inside = mb.durably(|mb| Ok(level(mb))).unwrap_or(-1);
        assert_eq!(inside, 2, "FULL inside");
        assert_eq!(level(&mb), 1);
        let failed: Result<()> = mb.durably(|_| Err(crate::Error::Invalid("no".into())));
        assert!(failed.is_err());
        assert_eq!(level(&mb), 1, "NORMAL again after a failure");
    }
}
