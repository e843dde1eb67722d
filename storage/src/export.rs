//! The portable export: a copy of a mailbox that the user can open with the
//! standard `sqlcipher` tool and their password, and leave with.
//!
//! The copy is re-keyed with the password itself as an ordinary SQLCipher
//! passphrase in SQLCipher 3 compatibility mode (the widest-read format:
//! SQLCipher 3.x opens it as is; 4.x with `PRAGMA cipher_compatibility = 3`).
//! The search indexes are dropped (older tools lack FTS5) and a `messages`
//! table is added with every message's exact bytes, uncompressed, with its
//! folder, UID, date and keywords, so no Cofre code is needed to read it.

use std::path::Path;

use rusqlite::params;

use crate::error::{Error, Result};
use crate::keys::Password;
use crate::mailbox::Mailbox;
use crate::types::{EmailId, FolderId};

const MESSAGES_TABLE: &str = "CREATE TABLE export.messages (
    email_id    INTEGER NOT NULL,
    folder      TEXT NOT NULL,
    uid         INTEGER NOT NULL,
    received_at TEXT NOT NULL,
    keywords    TEXT NOT NULL,
    raw         BLOB NOT NULL,
    PRIMARY KEY (folder, uid)
)";

/// Writes the export of `mailbox` to `out`, keyed with `password`.
pub fn export(mailbox: &Mailbox, password: &Password, out: &Path) -> Result<()> {
    if out.exists() {
        return Err(Error::AlreadyExists(format!("{}", out.display())));
    }
    let out_str = out
        .to_str()
        .ok_or_else(|| Error::Invalid("export path must be UTF-8".into()))?;
    let conn = mailbox.conn();
    conn.execute(
        "ATTACH DATABASE ?1 AS export KEY ?2",
        params![out_str, password.expose()],
    )?;
    let result = (|| -> Result<()> {
        conn.execute_batch("PRAGMA export.cipher_compatibility = 3;")?;
        conn.query_row("SELECT sqlcipher_export('export')", [], |_| Ok(()))?;
        conn.execute_batch(
            "DROP TABLE IF EXISTS export.email_grams;
             DROP TABLE IF EXISTS export.email_words;",
        )?;
        conn.execute_batch(MESSAGES_TABLE)?;
        let members: Vec<(i64, String, u32, String)> = conn
            .prepare(
                "SELECT m.email_id, f.name, m.uid, e.received_at FROM mailbox_messages m
                 JOIN folders f ON f.id = m.folder_id JOIN emails e ON e.id = m.email_id
                 ORDER BY f.name, m.uid",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<rusqlite::Result<_>>()?;
        conn.execute_batch("BEGIN")?;
        for (email, folder, uid, received) in members {
            let raw = mailbox.raw(EmailId(email))?;
            let keywords: String = conn.query_row(
                "SELECT COALESCE(group_concat(keyword, ' '), '') FROM
                     (SELECT keyword FROM keywords WHERE email_id = ?1 ORDER BY keyword)",
                [email],
                |r| r.get(0),
            )?;
            conn.prepare_cached(
                "INSERT INTO export.messages (email_id, folder, uid, received_at, keywords, raw)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![email, folder, uid, received, keywords, raw])?;
        }
        conn.execute_batch("COMMIT")?;
        conn.execute_batch("VACUUM export;")?;
        Ok(())
    })();
    if result.is_err() && !conn.is_autocommit() {
        let _rollback = conn.execute_batch("ROLLBACK");
    }
    conn.execute_batch("DETACH DATABASE export;")?;
    if result.is_err() {
        let _cleanup = std::fs::remove_file(out);
    }
    result
}

/// Messages read from the mailbox per step of an mbox export.
const MBOX_STEP: usize = 256;

/// Writes one folder as an mbox, in UID order, in the mboxrd form mail
/// clients import: each message after a `From MAILER-DAEMON <received
/// date>` line, with LF line ends, lines that begin with `From ` (after
/// any number of `>`) quoted with one more `>`, and a blank line after it.
/// Returns how many messages were written.
pub fn mbox(mailbox: &Mailbox, folder: FolderId, out: &mut impl std::io::Write) -> Result<u64> {
    if !mailbox.folders()?.iter().any(|f| f.id == folder) {
        return Err(Error::NotFound(format!("folder {}", folder.0)));
    }
    let index = mailbox.folder_index(folder)?;
    let mut n = 0;
    for step in index.chunks(MBOX_STEP) {
        let ids: Vec<EmailId> = step.iter().map(|(_, e)| *e).collect();
        let received: std::collections::HashMap<EmailId, i64> = mailbox
            .summaries(&ids)?
            .into_iter()
            .map(|s| (s.id, s.received_at))
            .collect();
        for id in ids {
            let raw = mailbox.raw(id)?;
            let date = crate::time::asctime(received.get(&id).copied().unwrap_or(0));
            writeln!(out, "From MAILER-DAEMON {date}")?;
            write_mboxrd(&raw, out)?;
            n += 1;
        }
    }
    out.flush()?;
    Ok(n)
}

/// One message's lines, LF-ended and `From `-quoted (mboxrd).
fn write_mboxrd(raw: &[u8], out: &mut impl std::io::Write) -> Result<()> {
    let mut lines = raw.split(|&c| c == b'\n').peekable();
    while let Some(line) = lines.next() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if lines.peek().is_none() && line.is_empty() {
            // The final line end of the message.
            break;
        }
        let unquoted = line.iter().position(|&c| c != b'>').map(|i| &line[i..]);
        if unquoted.is_some_and(|l| l.starts_with(b"From ")) {
            out.write_all(b">")?;
        }
        out.write_all(line)?;
        out.write_all(b"\n")?;
    }
    out.write_all(b"\n")?;
    Ok(())
}

#[cfg(test)]
mod mbox_tests {
    use super::*;

    #[test]
    fn from_lines_are_quoted_and_line_ends_are_lf() {
        let mut out = Vec::new();
        write_mboxrd(
            b"Subject: x\r\n\r\nFrom here\r\n>From there\r\nFromage\r\nlast",
            &mut out,
        )
        .unwrap();
        assert_eq!(
            out,
            b"Subject: x\n\n>From here\n>>From there\nFromage\nlast\n\n"
        );
    }
}
