//! The sealed inbound queue (`data/queue/<mailbox id>.sqlite`).
//!
//! Mail for an alias with no live session is sealed to the alias's X25519
//! public key in the `age` format before it touches the disk, so not even
//! the server can read it until the alias logs in. The file itself is plain
//! SQLite: every message row is already ciphertext, and nothing else in it
//! (an id, a receive time, a size) is message content.

use std::path::Path;
use std::str::FromStr;

use rusqlite::{Connection, params};
use zeroize::Zeroizing;

use crate::db::{self, Mode};
use crate::error::{Error, Result};
use crate::keys::random_bytes;

/// One sealed message waiting in the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedItem {
    /// Row id in the queue file.
    pub id: i64,
    /// Unique reference, used as the idempotency key of its delivery.
    pub reference: String,
    /// When it arrived, Unix seconds.
    pub received_at: i64,
}

/// An alias's queue file.
pub struct Queue {
    conn: Connection,
}

impl Queue {
    /// Opens the queue file, creating it if needed.
    pub fn open(path: &Path) -> Result<Queue> {
        let mode = if path.exists() {
            Mode::Existing
        } else {
            Mode::Create
        };
        let conn = db::open(path, None, mode)?;
        // Everything here was acknowledged to a sender: commits reach the
        // disk, not only the OS.
        conn.execute_batch("PRAGMA synchronous = FULL;")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS queue (
                 id          INTEGER PRIMARY KEY,
                 reference   TEXT NOT NULL UNIQUE,
                 received_at INTEGER NOT NULL,
                 sealed      BLOB NOT NULL
             );",
        )?;
        Ok(Queue { conn })
    }

    /// Seals `raw` to `public_key` (an age X25519 recipient) and stores it;
    /// returns its reference. Needs no password.
    pub fn enqueue(&self, public_key: &str, raw: &[u8], received_at: i64) -> Result<String> {
        let recipient = age::x25519::Recipient::from_str(public_key)
            .map_err(|e| Error::Corrupt(format!("alias public key: {e}")))?;
        let sealed = age::encrypt(&recipient, raw)
            .map_err(|e| Error::Corrupt(format!("sealing failed: {e}")))?;
        let reference = hex::encode(random_bytes::<16>());
        self.conn.execute(
            "INSERT INTO queue (reference, received_at, sealed) VALUES (?1, ?2, ?3)",
            params![reference, received_at, sealed],
        )?;
        Ok(reference)
    }

    /// The waiting items, oldest first.
    pub fn pending(&self) -> Result<Vec<QueuedItem>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, reference, received_at FROM queue ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok(QueuedItem {
                id: r.get(0)?,
                reference: r.get(1)?,
                received_at: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Opens one item with the alias's identity.
    pub fn open_item(&self, identity: &str, id: i64) -> Result<Zeroizing<Vec<u8>>> {
        let identity = age::x25519::Identity::from_str(identity)
            .map_err(|e| Error::Corrupt(format!("alias identity: {e}")))?;
        let sealed: Vec<u8> = self
            .conn
            .prepare_cached("SELECT sealed FROM queue WHERE id = ?1")?
            .query_row([id], |r| r.get(0))?;
        age::decrypt(&identity, &sealed)
            .map(Zeroizing::new)
            .map_err(|e| Error::Corrupt(format!("queued message {id} does not open: {e}")))
    }

    /// Deletes delivered items.
    pub fn remove(&mut self, ids: &[i64]) -> Result<()> {
        let tx = self.conn.transaction()?;
        for id in ids {
            tx.prepare_cached("DELETE FROM queue WHERE id = ?1")?
                .execute([id])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Number of waiting items.
    pub fn len(&self) -> Result<usize> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM queue", [], |r| r.get::<_, i64>(0))?
            as usize)
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Reclaims the space of delivered rows (called after a drain).
    pub fn compact(&self) -> Result<()> {
        self.conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE); VACUUM;")?;
        Ok(())
    }
}

/// Makes a new X25519 key pair: (public recipient, secret identity).
pub fn generate_keypair() -> (String, Zeroizing<String>) {
    use age::secrecy::ExposeSecret;
    let identity = age::x25519::Identity::generate();
    let public = identity.to_public().to_string();
    let secret = Zeroizing::new(identity.to_string().expose_secret().to_string());
    (public, secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_items_open_only_with_the_identity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.sqlite");
        let (public, secret) = generate_keypair();
        let (_, other) = generate_keypair();
        let mut q = Queue::open(&path).unwrap();
        q.enqueue(&public, b"Subject: queued secret\r\n\r\nbody", 5)
            .unwrap();
        let items = q.pending().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].received_at, 5);
        assert_eq!(
            q.open_item(&secret, items[0].id).unwrap().as_slice(),
            b"Subject: queued secret\r\n\r\nbody"
        );
        assert!(q.open_item(&other, items[0].id).is_err());
        let bytes = std::fs::read(&path).unwrap();
        assert!(!bytes.windows(13).any(|w| w == b"queued secret"));
        q.remove(&[items[0].id]).unwrap();
        assert!(q.is_empty().unwrap());
    }
}
