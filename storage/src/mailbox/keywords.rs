//! Keywords (flags), copy, move, expunge and destruction.

use std::collections::BTreeSet;

use rusqlite::{OptionalExtension, Transaction, params};

use super::append::add_member;
use super::{Mailbox, folders, log_change};
use crate::error::{Error, Result};
use crate::types::{EmailId, FolderId, Keyword, ModSeq, Uid};

impl Mailbox {
    /// Adds and removes keywords on emails; returns the write's MODSEQ.
    /// Emails whose keywords do not change keep their MODSEQ.
    pub fn set_keywords(
        &mut self,
        emails: &[EmailId],
        add: &[Keyword],
        remove: &[Keyword],
    ) -> Result<ModSeq> {
        self.write(|tx, modseq| {
            for &e in emails {
                ensure_email(tx, e)?;
                let mut changed = 0;
                let mut ins = tx.prepare_cached(
                    "INSERT OR IGNORE INTO keywords (email_id, keyword) VALUES (?1, ?2)",
                )?;
                for k in add {
                    changed += ins.execute(params![e.0, k.as_str()])?;
                }
                let mut del =
                    tx.prepare_cached("DELETE FROM keywords WHERE email_id = ?1 AND keyword = ?2")?;
                for k in remove {
                    changed += del.execute(params![e.0, k.as_str()])?;
                }
                if changed > 0 {
                    touch_email(tx, e, modseq)?;
                }
            }
            Ok(modseq)
        })
    }

    /// Replaces an email's whole keyword set.
    pub fn replace_keywords(&mut self, email: EmailId, keywords: &[Keyword]) -> Result<ModSeq> {
        self.write(|tx, modseq| {
            ensure_email(tx, email)?;
            let old: BTreeSet<String> = tx
                .prepare_cached("SELECT keyword FROM keywords WHERE email_id = ?1")?
                .query_map([email.0], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let new: BTreeSet<String> = keywords.iter().map(|k| k.as_str().to_string()).collect();
            if old != new {
                tx.execute("DELETE FROM keywords WHERE email_id = ?1", [email.0])?;
                let mut ins =
                    tx.prepare_cached("INSERT INTO keywords (email_id, keyword) VALUES (?1, ?2)")?;
                for k in &new {
                    ins.execute(params![email.0, k])?;
                }
                touch_email(tx, email, modseq)?;
            }
            Ok(modseq)
        })
    }

    /// Copies messages to another folder; returns (source UID, new UID)
    /// pairs. An email already in the target keeps its UID there.
    pub fn copy(&mut self, from: FolderId, uids: &[Uid], to: FolderId) -> Result<Vec<(Uid, Uid)>> {
        self.write(|tx, modseq| copy_in(tx, from, uids, to, modseq))
    }

    /// Moves messages to another folder (copy, then remove from the source,
    /// in one transaction); returns (source UID, new UID) pairs.
    pub fn move_messages(
        &mut self,
        from: FolderId,
        uids: &[Uid],
        to: FolderId,
    ) -> Result<Vec<(Uid, Uid)>> {
        if from == to {
            return Err(Error::Invalid(
                "source and target folder are the same".into(),
            ));
        }
        self.write(|tx, modseq| {
            let pairs = copy_in(tx, from, uids, to, modseq)?;
            let moved: Vec<u32> = pairs.iter().map(|(s, _)| s.get()).collect();
            remove_members(tx, from, &moved, modseq)?;
            Ok(pairs)
        })
    }

    /// The end of a POP3 session (RFC 1939's UPDATE state), in one
    /// transaction: the `retrieved` messages get `keywords` and then, if
    /// `move_to` is given, go to that folder; the `deleted` ones leave
    /// `folder` (an email left in no folder is destroyed). Messages gone
    /// from the folder meanwhile (expunged over IMAP) are passed over.
    pub fn pop3_commit(
        &mut self,
        folder: FolderId,
        deleted: &[Uid],
        retrieved: &[Uid],
        keywords: &[Keyword],
        move_to: Option<FolderId>,
    ) -> Result<()> {
        self.write(|tx, modseq| {
            folders::by_id(tx, folder)?;
            let gone: BTreeSet<u32> = deleted.iter().map(|u| u.get()).collect();
            let mut kept = Vec::new();
            for &uid in retrieved.iter().filter(|u| !gone.contains(&u.get())) {
                let email: Option<i64> = tx
                    .prepare_cached(
                        "SELECT email_id FROM mailbox_messages WHERE folder_id = ?1 AND uid = ?2",
                    )?
                    .query_row(params![folder.0, uid.get()], |r| r.get(0))
                    .optional()?;
                let Some(email) = email else { continue };
                let mut changed = 0;
                for k in keywords {
                    changed += tx
                        .prepare_cached(
                            "INSERT OR IGNORE INTO keywords (email_id, keyword) VALUES (?1, ?2)",
                        )?
                        .execute(params![email, k.as_str()])?;
                }
                if changed > 0 {
                    touch_email(tx, EmailId(email), modseq)?;
                }
                kept.push(uid);
            }
            if let Some(to) = move_to.filter(|t| *t != folder) {
                copy_in(tx, folder, &kept, to, modseq)?;
                let moved: Vec<u32> = kept.iter().map(|u| u.get()).collect();
                remove_members(tx, folder, &moved, modseq)?;
            }
            let gone: Vec<u32> = gone.into_iter().collect();
            remove_members(tx, folder, &gone, modseq)
        })
    }

    /// Removes the messages flagged `$deleted` from a folder (all of them, or
    /// only those among `only`); returns the expunged UIDs. An email left in
    /// no folder is destroyed.
    pub fn expunge(&mut self, folder: FolderId, only: Option<&[Uid]>) -> Result<Vec<Uid>> {
        self.write(|tx, modseq| {
            folders::by_id(tx, folder)?;
            let mut uids: Vec<u32> = tx
                .prepare_cached(
                    "SELECT m.uid FROM mailbox_messages m JOIN keywords k
                     ON k.email_id = m.email_id AND k.keyword = '$deleted'
                     WHERE m.folder_id = ?1 ORDER BY m.uid",
                )?
                .query_map([folder.0], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            if let Some(only) = only {
                let allowed: BTreeSet<u32> = only.iter().map(|u| u.get()).collect();
                uids.retain(|u| allowed.contains(u));
            }
            remove_members(tx, folder, &uids, modseq)?;
            uids.into_iter().map(Uid::try_from).collect()
        })
    }

    /// Takes messages out of a folder whatever their keywords (JMAP's
    /// mailboxIds change). An email left in no folder is destroyed.
    pub fn remove_from_folder(&mut self, folder: FolderId, uids: &[Uid]) -> Result<()> {
        let uids: Vec<u32> = uids.iter().map(|u| u.get()).collect();
        self.write(|tx, modseq| remove_members(tx, folder, &uids, modseq))
    }

    /// Destroys emails outright, from every folder (JMAP Email/set destroy).
    pub fn destroy_emails(&mut self, ids: &[EmailId]) -> Result<()> {
        self.write(|tx, modseq| {
            for &e in ids {
                ensure_email(tx, e)?;
                let members: Vec<(i64, u32)> = tx
                    .prepare_cached(
                        "SELECT folder_id, uid FROM mailbox_messages WHERE email_id = ?1",
                    )?
                    .query_map([e.0], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<_>>()?;
                for (f, uid) in members {
                    remove_members(tx, FolderId(f), &[uid], modseq)?;
                }
            }
            Ok(())
        })
    }
}

fn ensure_email(tx: &Transaction<'_>, e: EmailId) -> Result<()> {
    let exists: bool = tx
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM emails WHERE id = ?1)")?
        .query_row([e.0], |r| r.get(0))?;
    if exists {
        Ok(())
    } else {
        Err(Error::NotFound(format!("email {}", e.0)))
    }
}

/// Gives an email and all its memberships a new MODSEQ.
fn touch_email(tx: &Transaction<'_>, e: EmailId, modseq: ModSeq) -> Result<()> {
    tx.prepare_cached("UPDATE emails SET modseq = ?2 WHERE id = ?1")?
        .execute(params![e.0, modseq as i64])?;
    let members: Vec<(i64, u32)> = tx
        .prepare_cached(
            "UPDATE mailbox_messages SET modseq = ?2 WHERE email_id = ?1 RETURNING folder_id, uid",
        )?
        .query_map(params![e.0, modseq as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (f, uid) in members {
        tx.prepare_cached("UPDATE folders SET highest_modseq = ?2 WHERE id = ?1")?
            .execute(params![f, modseq as i64])?;
        log_change(
            tx,
            modseq,
            "member",
            e.0,
            Some((FolderId(f), uid)),
            "updated",
        )?;
    }
    log_change(tx, modseq, "email", e.0, None, "updated")
}

fn copy_in(
    tx: &Transaction<'_>,
    from: FolderId,
    uids: &[Uid],
    to: FolderId,
    modseq: ModSeq,
) -> Result<Vec<(Uid, Uid)>> {
    folders::by_id(tx, from)?;
    folders::by_id(tx, to)?;
    let mut pairs = Vec::with_capacity(uids.len());
    for &uid in uids {
        let email: i64 = tx
            .prepare_cached(
                "SELECT email_id FROM mailbox_messages WHERE folder_id = ?1 AND uid = ?2",
            )?
            .query_row(params![from.0, uid.get()], |r| r.get(0))
            .optional()?
            .ok_or_else(|| Error::NotFound(format!("UID {} in folder {}", uid.get(), from.0)))?;
        let existing: Option<u32> = tx
            .prepare_cached(
                "SELECT uid FROM mailbox_messages WHERE folder_id = ?1 AND email_id = ?2",
            )?
            .query_row(params![to.0, email], |r| r.get(0))
            .optional()?;
        let new_uid = match existing {
            Some(u) => Uid::try_from(u)?,
            None => {
                let u = add_member(tx, to, EmailId(email), modseq)?;
                log_change(tx, modseq, "email", email, None, "updated")?;
                u
            }
        };
        pairs.push((uid, new_uid));
    }
    Ok(pairs)
}

/// Removes memberships, logs them as expunged, and destroys emails that are
/// left in no folder.
pub(crate) fn remove_members(
    tx: &Transaction<'_>,
    folder: FolderId,
    uids: &[u32],
    modseq: ModSeq,
) -> Result<()> {
    if uids.is_empty() {
        return Ok(());
    }
    for &uid in uids {
        let email: Option<i64> = tx
            .prepare_cached(
                "DELETE FROM mailbox_messages WHERE folder_id = ?1 AND uid = ?2 RETURNING email_id",
            )?
            .query_row(params![folder.0, uid], |r| r.get(0))
            .optional()?;
        let Some(email) = email else { continue };
        log_change(
            tx,
            modseq,
            "member",
            email,
            Some((folder, uid)),
            "destroyed",
        )?;
        let still_filed: bool = tx
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM mailbox_messages WHERE email_id = ?1)")?
            .query_row([email], |r| r.get(0))?;
        if still_filed {
            log_change(tx, modseq, "email", email, None, "updated")?;
        } else {
            destroy_email_row(tx, email, modseq)?;
        }
    }
    tx.prepare_cached("UPDATE folders SET highest_modseq = ?2 WHERE id = ?1")?
        .execute(params![folder.0, modseq as i64])?;
    Ok(())
}

/// Deletes an email's row, its index entries, and releases its blobs.
fn destroy_email_row(tx: &Transaction<'_>, email: i64, modseq: ModSeq) -> Result<()> {
    let blobs: Vec<i64> = tx
        .prepare_cached("SELECT blob_id FROM email_blobs WHERE email_id = ?1")?
        .query_map([email], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    tx.prepare_cached("DELETE FROM email_blobs WHERE email_id = ?1")?
        .execute([email])?;
    for b in blobs {
        tx.prepare_cached("UPDATE blobs SET refcount = refcount - 1 WHERE id = ?1")?
            .execute([b])?;
        tx.prepare_cached("DELETE FROM blobs WHERE id = ?1 AND refcount <= 0")?
            .execute([b])?;
    }
    tx.prepare_cached("DELETE FROM email_text WHERE id = ?1")?
        .execute([email])?;
    // An email still on the index backlog has nothing in the indexes.
    let waiting = tx
        .prepare_cached("DELETE FROM index_backlog WHERE id = ?1")?
        .execute([email])?;
    if waiting == 0 {
        tx.prepare_cached("DELETE FROM email_grams WHERE rowid = ?1")?
            .execute([email])?;
        tx.prepare_cached("DELETE FROM email_words WHERE rowid = ?1")?
            .execute([email])?;
    }
    let thread: i64 = tx
        .prepare_cached("DELETE FROM emails WHERE id = ?1 RETURNING thread_id")?
        .query_row([email], |r| r.get(0))?;
    log_change(tx, modseq, "email", email, None, "destroyed")?;
    let thread_left: bool = tx
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM emails WHERE thread_id = ?1)")?
        .query_row([thread], |r| r.get(0))?;
    let thread_op = if thread_left { "updated" } else { "destroyed" };
    log_change(tx, modseq, "thread", thread, None, thread_op)
}
