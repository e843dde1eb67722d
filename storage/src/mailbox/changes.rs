//! Changes since a MODSEQ: what JMAP `/changes` and IMAP CONDSTORE/QRESYNC
//! (including VANISHED UIDs) are answered from.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, params};

use super::Mailbox;
use crate::error::Result;
use crate::types::{EmailId, FolderId, ModSeq, ThreadId, Uid};

/// Objects changed since a MODSEQ, each listed once.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// The MODSEQ asked about.
    pub since: ModSeq,
    /// The mailbox's MODSEQ now.
    pub current: ModSeq,
    /// Emails created since (and not destroyed since).
    pub emails_created: Vec<EmailId>,
    /// Emails that existed before and changed (keywords, folders).
    pub emails_updated: Vec<EmailId>,
    /// Emails that existed before and are gone.
    pub emails_destroyed: Vec<EmailId>,
    /// Folders created since.
    pub folders_created: Vec<FolderId>,
    /// Folders renamed, (un)subscribed, or whose contents changed.
    pub folders_updated: Vec<FolderId>,
    /// Folders deleted since.
    pub folders_destroyed: Vec<FolderId>,
    /// Threads that got their first email since.
    pub threads_created: Vec<ThreadId>,
    /// Threads that existed before whose emails changed (one joined or
    /// left).
    pub threads_updated: Vec<ThreadId>,
    /// Threads that existed before and have no email now.
    pub threads_destroyed: Vec<ThreadId>,
    /// Thread changes are logged from this MODSEQ on: asked from an
    /// earlier one, the thread lists above are incomplete.
    pub threads_since: ModSeq,
}

/// What changed in one folder since a MODSEQ (IMAP CONDSTORE/QRESYNC).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct FolderChanges {
    /// Messages still present whose MODSEQ is newer: UID, that MODSEQ, and
    /// the email (a new UID's email is what a client will fetch next).
    pub changed: Vec<(Uid, ModSeq, EmailId)>,
    /// UIDs expunged since, in order.
    pub vanished: Vec<Uid>,
    /// The mailbox's highest MODSEQ when this was read: ask from here next.
    pub highest: ModSeq,
}

/// What the log says of one object in the range: whether it began there
/// (its first entry is a creation) and whether it ended there (its last
/// is a destruction). A thread can end and begin again; an email or a
/// folder id is never reused.
#[derive(Default)]
struct Ops {
    seen: bool,
    created: bool,
    destroyed: bool,
}

impl Ops {
    fn record(&mut self, op: &str) {
        if !self.seen {
            self.created = op == "created";
            self.seen = true;
        }
        self.destroyed = op == "destroyed";
    }
}

fn classify(
    ops: BTreeMap<i64, Ops>,
    created: &mut Vec<i64>,
    updated: &mut Vec<i64>,
    destroyed: &mut Vec<i64>,
) {
    for (id, o) in ops {
        match (o.created, o.destroyed) {
            (true, true) => {}
            (true, false) => created.push(id),
            (false, true) => destroyed.push(id),
            (false, false) => updated.push(id),
        }
    }
}

impl Mailbox {
    /// Every email and folder changed after `since`.
    pub fn changes_since(&self, since: ModSeq) -> Result<Changes> {
        let mut emails: BTreeMap<i64, Ops> = BTreeMap::new();
        let mut folders: BTreeMap<i64, Ops> = BTreeMap::new();
        let mut threads: BTreeMap<i64, Ops> = BTreeMap::new();
        let mut stmt = self.conn.prepare_cached(
            // The MODSEQ index finds the few recent rows; left to itself
            // the planner may walk the whole log in id order instead.
            "SELECT kind, object_id, folder_id, op FROM changes INDEXED BY changes_modseq
             WHERE modseq > ?1 ORDER BY id",
        )?;
        let mut rows = stmt.query([since as i64])?;
        while let Some(r) = rows.next()? {
            let kind: String = r.get(0)?;
            let op: String = r.get(3)?;
            let (map, id) = match kind.as_str() {
                "email" => (&mut emails, r.get::<_, i64>(1)?),
                "folder" => (&mut folders, r.get::<_, i64>(1)?),
                "thread" => (&mut threads, r.get::<_, i64>(1)?),
                // A membership change is a change of the folder's contents.
                "member" => match r.get::<_, Option<i64>>(2)? {
                    Some(f) => {
                        folders.entry(f).or_default();
                        continue;
                    }
                    None => continue,
                },
                _ => continue,
            };
            map.entry(id).or_default().record(&op);
        }
        let mut out = Changes {
            since,
            current: self.highest_modseq()?,
            threads_since: self
                .conn
                .query_row(
                    "SELECT value FROM meta WHERE key = 'thread_log_since'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .optional()?
                .unwrap_or(0) as ModSeq,
            ..Changes::default()
        };
        let (mut c, mut u, mut d) = (Vec::new(), Vec::new(), Vec::new());
        classify(emails, &mut c, &mut u, &mut d);
        out.emails_created = c.drain(..).map(EmailId).collect();
        out.emails_updated = u.drain(..).map(EmailId).collect();
        out.emails_destroyed = d.drain(..).map(EmailId).collect();
        classify(folders, &mut c, &mut u, &mut d);
        out.folders_created = c.drain(..).map(FolderId).collect();
        out.folders_updated = u.drain(..).map(FolderId).collect();
        out.folders_destroyed = d.drain(..).map(FolderId).collect();
        classify(threads, &mut c, &mut u, &mut d);
        out.threads_created = c.into_iter().map(ThreadId).collect();
        out.threads_updated = u.into_iter().map(ThreadId).collect();
        out.threads_destroyed = d.into_iter().map(ThreadId).collect();
        Ok(out)
    }

    /// Messages of one folder changed or expunged after `since`.
    /// A folder that no longer exists is `NotFound` (a session that had
    /// it selected must be told).
    pub fn folder_changes(&self, folder: FolderId, since: ModSeq) -> Result<FolderChanges> {
        super::folders::by_id(&self.conn, folder)?;
        let mut out = FolderChanges::default();
        let mut stmt = self.conn.prepare_cached(
            "SELECT uid, modseq, email_id FROM mailbox_messages
             WHERE folder_id = ?1 AND modseq > ?2 ORDER BY uid",
        )?;
        let mut rows = stmt.query(params![folder.0, since as i64])?;
        while let Some(r) = rows.next()? {
            out.changed.push((
                Uid::try_from(r.get::<_, u32>(0)?)?,
                r.get::<_, i64>(1)? as ModSeq,
                EmailId(r.get(2)?),
            ));
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT DISTINCT uid FROM changes WHERE folder_id = ?1 AND modseq > ?2
             AND kind = 'member' AND op = 'destroyed' ORDER BY uid",
        )?;
        let mut rows = stmt.query(params![folder.0, since as i64])?;
        while let Some(r) = rows.next()? {
            out.vanished.push(Uid::try_from(r.get::<_, u32>(0)?)?);
        }
        out.highest = self.highest_modseq()?;
        Ok(out)
    }
}
