//! Folders: create, rename, delete, subscribe, list. UIDVALIDITY is taken
//! from a mailbox-wide counter, so a folder deleted and created again under
//! the same name never shows a client an old UIDVALIDITY.

use rusqlite::{Connection, OptionalExtension, Row, Transaction};
use serde::{Deserialize, Serialize};

use super::{Mailbox, log_change};
use crate::error::{Error, Result};
use crate::time;
use crate::types::{FolderId, FolderName, ModSeq, Role};

/// A folder as the protocol layers see it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Folder {
    /// Row id (stable for the folder's life).
    pub id: FolderId,
    /// Full name, `/`-separated.
    pub name: String,
    /// Special use, if any.
    pub role: Option<Role>,
    /// IMAP UIDVALIDITY: fixed for the folder's life.
    pub uid_validity: u32,
    /// The UID the next message will get.
    pub uid_next: u32,
    /// Highest MODSEQ of any change in this folder.
    pub highest_modseq: ModSeq,
    /// Whether the user subscribed to it.
    pub subscribed: bool,
    /// Messages in the folder.
    pub total: u64,
    /// Messages without `$seen`.
    pub unseen: u64,
}

/// Counts come from the counters the schema's triggers keep (v3).
const SELECT: &str = "SELECT f.id, f.name, f.role, f.uid_validity, f.uid_next, f.highest_modseq,
        f.subscribed, f.total, f.unseen
    FROM folders f";

fn from_row(r: &Row<'_>) -> rusqlite::Result<Folder> {
    Ok(Folder {
        id: FolderId(r.get(0)?),
        name: r.get(1)?,
        role: r
            .get::<_, Option<String>>(2)?
            .as_deref()
            .and_then(Role::parse),
        uid_validity: r.get(3)?,
        uid_next: r.get(4)?,
        highest_modseq: r.get::<_, i64>(5)? as ModSeq,
        subscribed: r.get(6)?,
        total: r.get::<_, i64>(7)? as u64,
        unseen: r.get::<_, i64>(8)? as u64,
    })
}

pub(crate) fn by_id(conn: &Connection, id: FolderId) -> Result<Folder> {
    conn.prepare_cached(&format!("{SELECT} WHERE f.id = ?1"))?
        .query_row([id.0], from_row)
        .optional()?
        .ok_or_else(|| Error::NotFound(format!("folder {}", id.0)))
}

pub(crate) fn by_role(conn: &Connection, role: Role) -> Result<Folder> {
    conn.prepare_cached(&format!("{SELECT} WHERE f.role = ?1"))?
        .query_row([role.as_str()], from_row)
        .optional()?
        .ok_or_else(|| Error::NotFound(format!("folder with role {}", role.as_str())))
}

fn id_by_name(conn: &Connection, name: &str) -> Result<Option<FolderId>> {
    Ok(conn
        .prepare_cached("SELECT id FROM folders WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?
        .map(FolderId))
}

/// Inserts one folder row with a fresh UIDVALIDITY.
pub(crate) fn insert_folder(
    tx: &Transaction<'_>,
    name: &str,
    role: Option<Role>,
    modseq: ModSeq,
) -> Result<FolderId> {
    let next: i64 = tx.query_row(
        "SELECT value FROM meta WHERE key = 'next_uid_validity'",
        [],
        |r| r.get(0),
    )?;
    let uid_validity = next.max(time::now()).clamp(1, u32::MAX as i64);
    tx.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'next_uid_validity'",
        [uid_validity + 1],
    )?;
    tx.execute(
        "INSERT INTO folders (name, role, uid_validity, highest_modseq, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        rusqlite::params![
            name,
            role.map(Role::as_str),
            uid_validity,
            modseq as i64,
            time::iso(time::now())
        ],
    )?;
    let id = tx.last_insert_rowid();
    log_change(tx, modseq, "folder", id, None, "created")?;
    Ok(FolderId(id))
}

/// Creates the missing ancestors of `name`, outermost first.
fn create_parents(tx: &Transaction<'_>, name: &FolderName, modseq: ModSeq) -> Result<()> {
    let mut missing = Vec::new();
    let mut cur = name.parent();
    while let Some(p) = cur {
        if id_by_name(tx, p.as_str())?.is_some() {
            break;
        }
        cur = p.parent();
        missing.push(p);
    }
    for n in missing.iter().rev() {
        insert_folder(tx, n.as_str(), None, modseq)?;
    }
    Ok(())
}

impl Mailbox {
    /// Every folder, sorted by name (INBOX first).
    pub fn folders(&self) -> Result<Vec<Folder>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "{SELECT} ORDER BY f.role != 'inbox' OR f.role IS NULL, f.name"
        ))?;
        let rows = stmt.query_map([], from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Looks a folder up by its full name.
    pub fn folder_by_name(&self, name: &FolderName) -> Result<Folder> {
        let id = id_by_name(&self.conn, name.as_str())?
            .ok_or_else(|| Error::NotFound(format!("folder {name}")))?;
        by_id(&self.conn, id)
    }

    /// Creates a folder, and any missing parents (as IMAP CREATE does).
    pub fn create_folder(&mut self, name: &FolderName) -> Result<Folder> {
        let id = self.write(|tx, modseq| {
            if id_by_name(tx, name.as_str())?.is_some() {
                return Err(Error::AlreadyExists(format!("folder {name}")));
            }
            create_parents(tx, name, modseq)?;
            insert_folder(tx, name.as_str(), None, modseq)
        })?;
        by_id(&self.conn, id)
    }

    /// Renames a folder and its children. The inbox cannot be renamed here
    /// (IMAP's "RENAME INBOX" moves messages instead; that is the bridge's).
    pub fn rename_folder(&mut self, id: FolderId, to: &FolderName) -> Result<Folder> {
        self.write(|tx, modseq| {
            let from = by_id(tx, id)?;
            if from.role == Some(Role::Inbox) {
                return Err(Error::Invalid("the inbox cannot be renamed".into()));
            }
            if from.name == to.as_str() {
                return Ok(());
            }
            if id_by_name(tx, to.as_str())?.is_some() {
                return Err(Error::AlreadyExists(format!("folder {to}")));
            }
            let prefix = format!("{}/", from.name);
            if to.as_str().starts_with(&prefix) {
                return Err(Error::Invalid("a folder cannot move inside itself".into()));
            }
            let children: Vec<(i64, String)> = tx
                .prepare("SELECT id, name FROM folders WHERE substr(name, 1, ?2) = ?1")?
                .query_map(rusqlite::params![prefix, prefix.len() as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            let mut set = tx.prepare_cached(
                "UPDATE folders SET name = ?2, highest_modseq = ?3 WHERE id = ?1",
            )?;
            set.execute(rusqlite::params![id.0, to.as_str(), modseq as i64])?;
            log_change(tx, modseq, "folder", id.0, None, "updated")?;
            for (cid, cname) in children {
                let new = format!("{}/{}", to.as_str(), &cname[prefix.len()..]);
                set.execute(rusqlite::params![cid, new, modseq as i64])?;
                log_change(tx, modseq, "folder", cid, None, "updated")?;
            }
            create_parents(tx, to, modseq)
        })?;
        by_id(&self.conn, id)
    }

    /// Deletes a folder. Its messages leave it; an email in no other folder
    /// is destroyed. The inbox and folders with children cannot be deleted.
    pub fn delete_folder(&mut self, id: FolderId) -> Result<()> {
        self.write(|tx, modseq| {
            let f = by_id(tx, id)?;
            if f.role == Some(Role::Inbox) {
                return Err(Error::Invalid("the inbox cannot be deleted".into()));
            }
            let has_children: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM folders WHERE substr(name, 1, ?2) = ?1)",
                rusqlite::params![format!("{}/", f.name), f.name.len() as i64 + 1],
                |r| r.get(0),
            )?;
            if has_children {
                return Err(Error::Invalid(format!(
                    "folder {} has child folders; delete them first",
                    f.name
                )));
            }
            let uids: Vec<u32> = tx
                .prepare("SELECT uid FROM mailbox_messages WHERE folder_id = ?1")?
                .query_map([id.0], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            super::keywords::remove_members(tx, id, &uids, modseq)?;
            tx.execute("DELETE FROM folders WHERE id = ?1", [id.0])?;
            log_change(tx, modseq, "folder", id.0, None, "destroyed")?;
            Ok(())
        })
    }

    /// Per folder: its threads (those with an email in it) and its unread
    /// threads (with an email in it that lacks `$seen`), for each folder
    /// with mail: counters, not a count.
    pub fn thread_counts(&self) -> Result<Vec<(FolderId, u64, u64)>> {
        // Kept by triggers (schema v7) in every write's transaction.
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, threads, unread_threads FROM folders WHERE threads > 0 ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                FolderId(r.get(0)?),
                r.get::<_, i64>(1)? as u64,
                r.get::<_, i64>(2)? as u64,
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Subscribes to, or unsubscribes from, a folder.
    pub fn set_subscribed(&mut self, id: FolderId, subscribed: bool) -> Result<()> {
        self.write(|tx, modseq| {
            let n = tx.execute(
                "UPDATE folders SET subscribed = ?2, highest_modseq = ?3 WHERE id = ?1",
                rusqlite::params![id.0, subscribed, modseq as i64],
            )?;
            if n == 0 {
                return Err(Error::NotFound(format!("folder {}", id.0)));
            }
            log_change(tx, modseq, "folder", id.0, None, "updated")
        })
    }
}
