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
    /// The log tells changes from this MODSEQ on (a restore replaced the
    /// mailbox at it): asked from an earlier one, every list above is
    /// incomplete.
    #[serde(default)]
    pub log_since: ModSeq,
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
    /// The folder's UIDVALIDITY now: a client holding another must forget
    /// its UIDs (a restore from backup renews it).
    #[serde(default)]
    pub uid_validity: u32,
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
    /// A MODSEQ kept in `meta`, 0 when unset.
    fn meta(&self, key: &str) -> Result<ModSeq> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| {
                r.get::<_, i64>(0)
            })
            .optional()?
            .unwrap_or(0) as ModSeq)
    }

    /// The change log tells changes from this MODSEQ on (0: from the
    /// start); a restore moves it to the moment the file was put back.
    pub fn log_since(&self) -> Result<ModSeq> {
        self.meta("log_since")
    }

    /// This file has just replaced a newer state of the mailbox (a restore
    /// from backup) whose highest MODSEQ was `previous`: MODSEQs go on past
    /// it, so no state a client holds comes round again; the change log
    /// counts from there (an earlier state cannot be followed, JMAP says
    /// `cannotCalculateChanges`); and every folder takes a new
    /// UIDVALIDITY, so IMAP clients forget what they cached. Returns the
    /// new highest MODSEQ.
    pub fn restored_over(&mut self, previous: ModSeq) -> Result<ModSeq> {
        let tx = self.conn.transaction()?;
        let current: i64 =
            tx.query_row("SELECT value FROM meta WHERE key = 'modseq'", [], |r| {
                r.get(0)
            })?;
        let modseq = current.max(previous as i64) + 1;
        tx.execute("UPDATE meta SET value = ?1 WHERE key = 'modseq'", [modseq])?;
        tx.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('log_since', ?1)",
            [modseq],
        )?;
        let next: i64 = tx.query_row(
            "SELECT value FROM meta WHERE key = 'next_uid_validity'",
            [],
            |r| r.get(0),
        )?;
        let highest: i64 = tx.query_row(
            "SELECT COALESCE(MAX(uid_validity), 0) FROM folders",
            [],
            |r| r.get(0),
        )?;
        let first = next.max(highest + 1).max(crate::time::now());
        let ids: Vec<i64> = {
            let mut stmt = tx.prepare("SELECT id FROM folders ORDER BY id")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        for (i, id) in ids.iter().enumerate() {
            let v = (first + i as i64).clamp(1, u32::MAX as i64);
            tx.execute(
                "UPDATE folders SET uid_validity = ?1, highest_modseq = ?2 WHERE id = ?3",
                params![v, modseq, id],
            )?;
        }
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'next_uid_validity'",
            [first + ids.len() as i64],
        )?;
        tx.commit()?;
        Ok(modseq as ModSeq)
    }

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
        let log_since = self.log_since()?;
        let mut out = Changes {
            since,
            current: self.highest_modseq()?,
            threads_since: self.meta("thread_log_since")?.max(log_since),
            log_since,
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
        let f = super::folders::by_id(&self.conn, folder)?;
        let mut out = FolderChanges {
            uid_validity: f.uid_validity,
            ..FolderChanges::default()
        };
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
