//! Backups of a mailbox (DESIGN.md, Backups): a snapshot taken with
//! `VACUUM INTO` — which SQLCipher writes encrypted under the mailbox's
//! own key —, verified (it opens with the key and passes
//! `integrity_check`), hashed, and moved into place under a random name.
//!
//! An unchanged mailbox is not stored twice, but the test cannot be the
//! copies' SHA-256: SQLCipher encrypts every page under a fresh random IV,
//! so two copies of the same content never share a byte pattern (a test
//! shows it). The mailbox's change marker — its highest MODSEQ, which
//! every change of mail, folders, keywords or records advances, and its
//! uploads — is the test instead, checked before any copy is made; the
//! SHA-256 of each copy is kept to verify the file wherever it travels.
//!
//! The snapshot is SQLite's: `VACUUM INTO` reads the database inside one
//! read transaction, which in WAL mode sees one consistent state and
//! blocks neither readers nor the writer. The mailbox's writer is held only
//! for the `wal_checkpoint(PASSIVE)` that precedes it (the caller runs
//! [`checkpoint`] as a job of the mailbox's thread).

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::db::{self, Mode};
use crate::error::{Error, Result};
use crate::keys::{SecretKey, random_bytes};
use crate::mailbox::Mailbox;
use crate::time;

/// One backup of a mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRecord {
    /// Its random id (also its object's name: never the address).
    pub id: String,
    /// When it was taken (Unix seconds).
    pub created_at: i64,
    /// SHA-256 of the backup file, hex.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    /// The mailbox's change marker when the copy began.
    pub marker: String,
}

/// What a backup run did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackupOutcome {
    /// A new version was stored.
    Stored(BackupRecord),
    /// The mailbox equals its latest backup: nothing was stored.
    Unchanged(BackupRecord),
}

/// Step 3: a passive checkpoint on the mailbox's own connection (run by
/// its thread, the single writer), and the mailbox's change marker.
pub fn checkpoint(mb: &Mailbox) -> Result<String> {
    mb.conn()
        .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
    let (uploads, last_upload): (i64, i64) = mb.conn().query_row(
        "SELECT count(*), COALESCE(MAX(id), 0) FROM uploads",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(format!(
        "{}:{}:{uploads}:{last_upload}",
        crate::mailbox::schema::CURRENT,
        mb.highest_modseq()?
    ))
}

/// Step 4: a consistent, encrypted copy of the mailbox file at `out`, read
/// through a connection of its own.
pub fn snapshot(mailbox: &Path, key: &SecretKey, out: &Path) -> Result<()> {
    let out_str = out
        .to_str()
        .ok_or_else(|| Error::Invalid("backup path must be UTF-8".into()))?;
    let conn = db::open(mailbox, Some(key), Mode::Existing)?;
    // The copy is keyed like the source but takes SQLCipher's default page
    // HMAC, not the one `db::open` sets per connection: make the default
    // ours (a process-wide setting; every Cofre connection sets its own
    // anyway), so the copy opens like any mailbox — and, restored, is one.
    conn.execute_batch("PRAGMA cipher_default_hmac_algorithm = HMAC_SHA256;")?;
    conn.execute("VACUUM INTO ?1", [out_str])?;
    Ok(())
}

/// Step 5: the copy opens with the key and passes `integrity_check`.
pub fn verify(copy: &Path, key: &SecretKey) -> Result<()> {
    let conn = db::open(copy, Some(key), Mode::Existing)?;
    let result: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if result != "ok" {
        return Err(Error::Corrupt(format!("backup copy: {result}")));
    }
    Ok(())
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// A fresh random backup id.
pub fn new_id() -> String {
    hex::encode(random_bytes::<16>())
}

/// A backup run on a local folder (steps 4 to 6) for a mailbox whose
/// change marker is `marker`: unchanged since `latest`, nothing is copied;
/// else snapshot into a temporary file beside the backups, verify, hash,
/// and move into place as `<id>.bak`, synced. The caller records the
/// returned backup.
pub fn run_local(
    mailbox: &Path,
    key: &SecretKey,
    dir: &Path,
    marker: &str,
    latest: Option<&BackupRecord>,
) -> Result<BackupOutcome> {
    if let Some(l) = latest.filter(|l| l.marker == marker) {
        return Ok(BackupOutcome::Unchanged(l.clone()));
    }
    std::fs::create_dir_all(dir)?;
    // A run killed half-way left its temporary file: never listed, and
    // gone now.
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(".tmp-") {
            std::fs::remove_file(entry.path())?;
        }
    }
    let tmp = TempFile(Some(dir.join(format!(".tmp-{}", new_id()))));
    let tmp_path = tmp.path().to_path_buf();
    snapshot(mailbox, key, &tmp_path)?;
    verify(&tmp_path, key)?;
    let sha256 = sha256_file(&tmp_path)?;
    let size = std::fs::metadata(&tmp_path)?.len();
    let record = BackupRecord {
        id: new_id(),
        created_at: time::now(),
        sha256,
        size,
        marker: marker.to_string(),
    };
    std::fs::File::open(&tmp_path)?.sync_all()?;
    std::fs::rename(&tmp_path, path_of(dir, &record.id))?;
    tmp.keep();
    std::fs::File::open(dir)?.sync_all()?;
    Ok(BackupOutcome::Stored(record))
}

/// Where a backup's file is in a local folder.
pub fn path_of(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.bak"))
}

/// A file removed when dropped (a half-written snapshot never stays),
/// unless kept.
struct TempFile(Option<PathBuf>);

impl TempFile {
    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }

    /// The file was moved into place: nothing to remove.
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}
