//! Uploads: bytes a client sends before it says what they are for (a JMAP
//! blob upload that an `Email/import` then files). They live in the
//! mailbox file, so they are encrypted like the mail and reach every
//! gateway; each is kept for [`UPLOAD_TTL_SECS`].

use rusqlite::{OptionalExtension, params};

use super::Mailbox;
use crate::error::{Error, Result};
use crate::time;

/// How long an upload is kept (RFC 8620 §6.1 asks for at least an hour).
pub const UPLOAD_TTL_SECS: i64 = 24 * 3600;

/// Most bytes of uploads one mailbox holds at a time.
pub const UPLOADS_MAX_BYTES: u64 = 256 << 20;

impl Mailbox {
    /// Keeps `data` as a new upload (dropping expired ones first); its id.
    pub fn put_upload(&mut self, data: &[u8]) -> Result<i64> {
        let now = time::now();
        let tx = self.conn.transaction()?;
        tx.prepare_cached("DELETE FROM uploads WHERE created_at < ?1")?
            .execute([now - UPLOAD_TTL_SECS])?;
        let held: i64 = tx
            .prepare_cached("SELECT COALESCE(SUM(length(data)), 0) FROM uploads")?
            .query_row([], |r| r.get(0))?;
        if held as u64 + data.len() as u64 > UPLOADS_MAX_BYTES {
            return Err(Error::TooLarge {
                size: held as u64 + data.len() as u64,
                limit: UPLOADS_MAX_BYTES,
            });
        }
        tx.prepare_cached("INSERT INTO uploads (created_at, data) VALUES (?1, ?2)")?
            .execute(params![now, data])?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(id)
    }

    /// An upload's bytes, if it exists and has not expired.
    pub fn upload(&self, id: i64) -> Result<Vec<u8>> {
        self.conn
            .prepare_cached("SELECT data FROM uploads WHERE id = ?1 AND created_at >= ?2")?
            .query_row(params![id, time::now() - UPLOAD_TTL_SECS], |r| r.get(0))
            .optional()?
            .ok_or_else(|| Error::NotFound(format!("upload {id}")))
    }
}
