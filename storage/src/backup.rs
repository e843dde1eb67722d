//! Backups of a mailbox (DESIGN.md, Backups): a snapshot of its
//! encrypted file — never a decrypted byte —, verified, hashed, and moved
//! into place under a random name.
//!
//! The snapshot is taken one of two ways, both consistent and neither
//! blocking readers:
//!
//! - **A copy of the file as it is** (the usual way). Under the mailbox's
//!   writer the WAL is folded into the file (`wal_checkpoint(PASSIVE)`)
//!   and a read transaction begun on a connection of its own; the writer
//!   goes on at once. That reader, having found the WAL fully folded in,
//!   holds SQLite's read lock 0, and SQLite copies WAL pages back into the
//!   file only under that lock taken exclusively: while the reader lasts
//!   no checkpoint touches the file, new writes stay in the WAL, and the
//!   file's bytes are one moment of the mailbox. They are copied as they
//!   are — already encrypted and authenticated page by page — by the
//!   kernel, while the same bytes are read once more from the page cache
//!   to check every page's HMAC and take the SHA-256 on two cores
//!   ([`pages::copy_checked`]); meanwhile the pinned reader runs
//!   `integrity_check` over the same snapshot (its structure, which no
//!   page's HMAC speaks for); the file's size and modification time
//!   before and after show nothing moved, and the copy must open with the
//!   key. About a plain file copy's speed: decrypting and re-encrypting a
//!   gigabyte is what `VACUUM INTO` costs (nine times slower here).
//! - **`VACUUM INTO`**, which SQLCipher writes encrypted under the same
//!   key, verified with `integrity_check`: used when a quarter or more of
//!   the file is free pages (deleted mail), which it leaves behind, or when
//!   the WAL could not be folded in (a long reader elsewhere).
//!
//! An unchanged mailbox is not stored twice, but the test cannot be the
//! copies' SHA-256: `VACUUM INTO` encrypts every page under a fresh random
//! IV, so two of its copies of the same content never share a byte
//! pattern (a test shows it). The mailbox's change marker — its highest
//! MODSEQ, which every change of mail, folders, keywords or records
//! advances, and its uploads — is the test instead, checked before any
//! copy is made; the SHA-256 of each copy is kept to verify the file
//! wherever it travels.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::db::{self, Mode};
use crate::error::{Error, Result};
use crate::keys::{SecretKey, random_bytes};
use crate::mailbox::Mailbox;
use crate::pages;
use crate::s3::Bucket;
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
    /// Kept whatever the retention says: the mailbox as it was before a
    /// restore, until the restore is confirmed.
    #[serde(default)]
    pub held: bool,
}

/// What a backup run did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackupOutcome {
    /// A new version was stored.
    Stored(BackupRecord),
    /// The mailbox equals its latest backup: nothing was stored.
    Unchanged(BackupRecord),
}

/// Step 3, run by the mailbox's thread (the single writer): the WAL
/// folded into the file, the mailbox's change marker, and — when all of
/// the WAL went in — `reader` (a connection to the mailbox of its own,
/// opened beforehand with [`open_reader`]) pinned to this moment of the
/// file. The writer is free again as soon as this returns.
pub fn checkpoint(mb: &Mailbox, reader: Connection) -> Result<(String, Option<Pinned>)> {
    let pinned = if fold_wal(mb)? {
        Some(Pinned::begin(reader)?)
    } else {
        None
    };
    let (uploads, last_upload): (i64, i64) = mb.conn().query_row(
        "SELECT count(*), COALESCE(MAX(id), 0) FROM uploads",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let marker = format!(
        "{}:{}:{uploads}:{last_upload}",
        crate::mailbox::schema::CURRENT,
        mb.highest_modseq()?
    );
    Ok((marker, pinned))
}

/// Folds the WAL into the mailbox file as far as no reader of an older
/// state holds it back (`wal_checkpoint(PASSIVE)`: it never waits, so the
/// writer is held only for the copying of pages); true when all of it
/// went in.
pub fn fold_wal(mb: &Mailbox) -> Result<bool> {
    let (log, done): (i64, i64) =
        mb.conn()
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(1)?, r.get(2)?))
            })?;
    Ok(log >= 0 && log == done)
}

/// A connection to the mailbox at `mailbox` for [`checkpoint`] to pin.
pub fn open_reader(mailbox: &Path, key: &SecretKey) -> Result<Connection> {
    db::open(mailbox, Some(key), Mode::Existing)
}

/// A read transaction begun when the mailbox's WAL was wholly in its file:
/// until dropped, the file's bytes do not change (see the module's doc).
pub struct Pinned {
    conn: Connection,
    /// The file's length the transaction sees (pages × page size).
    len: u64,
    /// How many of its pages are free.
    free_pages: u64,
    /// How many pages it has.
    pages: u64,
}

impl Pinned {
    fn begin(conn: Connection) -> Result<Pinned> {
        conn.execute_batch("BEGIN")?;
        // The first read takes the snapshot (and the read lock).
        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))?;
        // SQLCipher answers `page_size` itself, as text.
        let pragma = |name: &str| -> Result<u64> {
            let v: rusqlite::types::Value =
                conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))?;
            match v {
                rusqlite::types::Value::Integer(n) => Ok(n.max(0) as u64),
                rusqlite::types::Value::Text(t) => t
                    .parse()
                    .map_err(|_| Error::Corrupt(format!("PRAGMA {name} answered {t}"))),
                other => Err(Error::Corrupt(format!("PRAGMA {name} answered {other:?}"))),
            }
        };
        let (pages, free_pages, page_size) = (
            pragma("page_count")?,
            pragma("freelist_count")?,
            pragma("page_size")?,
        );
        Ok(Pinned {
            conn,
            len: pages * page_size,
            free_pages,
            pages,
        })
    }

    /// True when enough of the file is free pages that `VACUUM INTO`,
    /// which leaves them behind, is worth its cost.
    fn mostly_free(&self) -> bool {
        self.free_pages * 4 >= self.pages.max(1)
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        // Ending a read transaction cannot lose anything; closing the
        // connection would end it too.
        let _ = self.conn.execute_batch("COMMIT");
    }
}

/// Step 4, the usual way: the pinned mailbox file (`len` bytes, as its
/// snapshot sees it) copied byte for byte to
/// `out` (synced) in one read that also takes its SHA-256 (on another
/// core) and authenticates every page under `key` ([`pages::copy_checked`]:
/// a damaged page stops the run). `None` when the file did not hold still
/// after all (its length or modification time moved): the caller takes
/// the other way.
pub fn copy_pinned(
    mailbox: &Path,
    key: &SecretKey,
    len: u64,
    out: &Path,
) -> Result<Option<String>> {
    let stamp = |p: &Path| -> Result<(u64, SystemTime)> {
        let m = std::fs::metadata(p)?;
        Ok((m.len(), m.modified()?))
    };
    let before = stamp(mailbox)?;
    let sha256 = pages::copy_checked(mailbox, out, Some(key))?;
    let after = stamp(mailbox)?;
    if before != after || before.0 != len {
        tracing::warn!(
            "the mailbox file moved while it was copied; taking the snapshot with VACUUM INTO"
        );
        return Ok(None);
    }
    Ok(Some(sha256))
}

/// Step 4 the other way: a consistent, encrypted copy of the mailbox file
/// at `out` written by `VACUUM INTO`, through a connection of its own.
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

/// Step 5 for a `VACUUM INTO` copy: it opens with the key and passes
/// `integrity_check`. Read-only: the copy's bytes stay as they are (its
/// SHA-256 may be taken meanwhile).
pub fn verify(copy: &Path, key: &SecretKey) -> Result<()> {
    integrity(&db::open_read_only(copy, key)?)
}

/// `PRAGMA integrity_check` of what `conn` sees: [`Error::Corrupt`] with
/// SQLite's first finding unless it answers `ok`.
fn integrity(conn: &Connection) -> Result<()> {
    let result: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if result != "ok" {
        return Err(Error::Corrupt(format!(
            "the mailbox fails integrity_check: {result}"
        )));
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

/// Where one mailbox's backups are kept: its folder under
/// `data/backups/` — which also holds the temporary snapshot of a run
/// and the task lock — and, when an S3-compatible store is configured,
/// the store, where the versions themselves then live (as
/// `<prefix><mailbox id>/<backup id>.bak`: random ids, never an address).
pub struct Target {
    dir: PathBuf,
    s3: Option<(Arc<Bucket>, String)>,
}

impl Target {
    /// The target of the mailbox whose backup folder is `dir` and whose
    /// random id is `mailbox_id`.
    pub fn new(dir: PathBuf, mailbox_id: &str, bucket: Option<Arc<Bucket>>) -> Target {
        Target {
            dir,
            s3: bucket.map(|b| {
                let prefix = b.key(&format!("{mailbox_id}/"));
                (b, prefix)
            }),
        }
    }

    /// The mailbox's local backup folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// True when versions live in an S3-compatible store.
    pub fn is_remote(&self) -> bool {
        self.s3.is_some()
    }

    fn object(&self, id: &str) -> Option<(&Bucket, String)> {
        self.s3
            .as_ref()
            .map(|(b, prefix)| (b.as_ref(), format!("{prefix}{id}.bak")))
    }

    /// Keeps a verified copy as the version `id`: renamed into place,
    /// synced (local), or uploaded and checked (S3; the local copy goes).
    fn put(&self, tmp: TempFile, id: &str) -> Result<()> {
        match self.object(id) {
            None => {
                std::fs::File::open(tmp.path())?.sync_all()?;
                std::fs::rename(tmp.path(), path_of(&self.dir, id))?;
                tmp.keep();
                std::fs::File::open(&self.dir)?.sync_all()?;
            }
            Some((bucket, key)) => bucket.put_file(&key, tmp.path())?,
        }
        Ok(())
    }

    /// Up to `len` bytes of version `id` from `offset`; empty past its end.
    pub fn read(&self, id: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        use std::io::{Seek, SeekFrom};
        match self.object(id) {
            None => {
                let mut f = std::fs::File::open(path_of(&self.dir, id))?;
                f.seek(SeekFrom::Start(offset))?;
                let mut out = Vec::with_capacity(len.min(1 << 24));
                f.take(len as u64).read_to_end(&mut out)?;
                Ok(out)
            }
            Some((bucket, key)) => bucket.get_range(&key, offset, len as u64),
        }
    }

    /// Deletes version `id` (already gone is not an error).
    pub fn delete(&self, id: &str) -> Result<()> {
        match self.object(id) {
            None => remove_if_there(&path_of(&self.dir, id)),
            Some((bucket, key)) => bucket.delete(&key),
        }
    }

    /// Removes every version whose id is not in `keep` (a run or a prune
    /// cut short after the record went).
    pub fn remove_others(&self, keep: &std::collections::HashSet<String>) -> Result<()> {
        for id in self.ids()? {
            if !keep.contains(&id) {
                self.delete(&id)?;
            }
        }
        Ok(())
    }

    /// The ids of the versions stored.
    pub fn ids(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        match &self.s3 {
            None => {
                if !self.dir.exists() {
                    return Ok(out);
                }
                for entry in std::fs::read_dir(&self.dir)? {
                    let name = entry?.file_name().to_string_lossy().into_owned();
                    if let Some(id) = name.strip_suffix(".bak") {
                        out.push(id.to_string());
                    }
                }
            }
            Some((bucket, prefix)) => {
                for o in bucket.list(prefix)? {
                    if let Some(id) = o.key[prefix.len()..].strip_suffix(".bak") {
                        out.push(id.to_string());
                    }
                }
            }
        }
        Ok(out)
    }

    /// Removes everything: every version, and the local folder.
    pub fn remove_all(&self) -> Result<()> {
        if let Some((bucket, prefix)) = &self.s3 {
            for o in bucket.list(prefix)? {
                bucket.delete(&o.key)?;
            }
        }
        if self.dir.exists() {
            std::fs::remove_dir_all(&self.dir)?;
        }
        Ok(())
    }
}

/// A backup run (steps 4 to 6) for a mailbox whose change marker is
/// `marker`: unchanged since `latest`, nothing is copied; else a snapshot
/// into a temporary file in the local folder — the pinned file copied as
/// it is, or `VACUUM INTO` (see the module's doc) —, verified, hashed,
/// and kept in the target. The caller records the returned backup.
pub fn run(
    mailbox: &Path,
    key: &SecretKey,
    target: &Target,
    marker: &str,
    latest: Option<&BackupRecord>,
    pinned: Option<Pinned>,
) -> Result<BackupOutcome> {
    if let Some(l) = latest.filter(|l| l.marker == marker) {
        return Ok(BackupOutcome::Unchanged(l.clone()));
    }
    let dir = target.dir();
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
    let copied = match pinned.filter(|p| !p.mostly_free()) {
        Some(pinned) => {
            let len = pinned.len;
            // The snapshot being copied passes `integrity_check` on its
            // own connection meanwhile: its structure, which no page's
            // HMAC speaks for. The pin lasts until both are done.
            let (copied, checked) = std::thread::scope(|scope| {
                let check = scope.spawn(move || (integrity(&pinned.conn), pinned));
                let copied = copy_pinned(mailbox, key, len, &tmp_path);
                let checked = check
                    .join()
                    .map_err(|_| Error::Corrupt("checking the snapshot failed".into()));
                (copied, checked)
            });
            let (checked, pinned) = checked?;
            // Checkpoints may go on while the copy is opened.
            drop(pinned);
            checked?;
            copied?
        }
        None => None,
    };
    let sha256 = match copied {
        Some(sha256) => {
            // Every page was authenticated on the way and the snapshot
            // passed `integrity_check`; the copy opens.
            drop(db::open_read_only(&tmp_path, key)?);
            sha256
        }
        None => {
            // What a copy that did not hold still left.
            remove_if_there(&tmp_path)?;
            snapshot(mailbox, key, &tmp_path)?;
            // The check and the hash read the copy side by side (two cores).
            let (verified, sha256) = std::thread::scope(|scope| {
                let hash = scope.spawn(|| sha256_file(&tmp_path));
                let verified = verify(&tmp_path, key);
                (verified, hash.join())
            });
            verified?;
            sha256.map_err(|_| Error::Corrupt("hashing the backup failed".into()))??
        }
    };
    let size = std::fs::metadata(&tmp_path)?.len();
    let record = BackupRecord {
        id: new_id(),
        created_at: time::now(),
        sha256,
        size,
        marker: marker.to_string(),
        held: false,
    };
    target.put(tmp, &record.id)?;
    Ok(BackupOutcome::Stored(record))
}

/// A backup copied to `staged` for a restore, and checked: the key opens
/// it, and it hashes to the record's SHA-256 — that of the file that
/// was verified when it was taken. From a local folder the key is tried
/// before anything is copied, and the copy hashed and its pages
/// authenticated as it is read ([`pages::copy_checked`]); from a store the
/// download is hashed as it arrives, then the key tried on the copy. Every page is authenticated
/// again (SQLCipher's HMAC) as the restored mailbox reads it.
pub fn stage(target: &Target, record: &BackupRecord, key: &SecretKey, staged: &Path) -> Result<()> {
    let checked = match target.object(&record.id) {
        None => {
            let backup = path_of(target.dir(), &record.id);
            drop(db::open_read_only(&backup, key)?);
            pages::copy_checked(&backup, staged, Some(key))
        }
        Some((bucket, object)) => (|| {
            let mut out = HashingWriter {
                file: std::fs::File::create(staged)?,
                hash: Sha256::new(),
            };
            bucket.get_into(&object, &mut out)?;
            out.file.sync_all()?;
            Ok(hex::encode(out.hash.finalize()))
        })(),
    }
    .and_then(|hashed| {
        if hashed != record.sha256 {
            return Err(Error::Corrupt(
                "the backup does not match its SHA-256".into(),
            ));
        }
        if target.is_remote() {
            drop(db::open_read_only(staged, key)?);
        }
        Ok(())
    });
    if checked.is_err() {
        let _ = std::fs::remove_file(staged);
    }
    checked
}

/// A file written and hashed at once.
struct HashingWriter {
    file: std::fs::File,
    hash: Sha256,
}

impl std::io::Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Syncs a file's contents to disk.
pub fn sync_file(path: &Path) -> Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .sync_all()?;
    Ok(())
}

/// The file in a mailbox's backup folder whose lock one backup task (of
/// any process) holds at a time.
pub const LOCK_FILE: &str = ".lock";

/// Where a backup's file is in a local folder.
pub fn path_of(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.bak"))
}

/// A file removed when dropped (a half-written snapshot never stays),
/// unless kept.
struct TempFile(Option<PathBuf>);

/// Removes a file; one already gone is fine.
pub(crate) fn remove_if_there(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

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

/// How many versions a mailbox keeps: the `last` most recent backups,
/// the newest backup of each of the `daily` most recent days that have
/// one, and of each of the `weekly` most recent weeks (Monday to Sunday,
/// UTC). The newest backup and any held one (the mailbox as it was before
/// a restore that is not yet confirmed) are always kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// The most recent versions kept, whatever their day. Default 3.
    pub last: usize,
    /// Daily versions kept. Default 7.
    pub daily: usize,
    /// Weekly versions kept. Default 4.
    pub weekly: usize,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            last: 3,
            daily: 7,
            weekly: 4,
        }
    }
}

impl Retention {
    /// The ids of `backups` this retention lets go.
    pub fn prune(&self, backups: &[BackupRecord]) -> Vec<String> {
        // Given oldest first; a stable sort keeps the later of two taken
        // in the same second first.
        let mut newest_first: Vec<&BackupRecord> = backups.iter().rev().collect();
        newest_first.sort_by_key(|b| std::cmp::Reverse(b.created_at));
        let day = |b: &BackupRecord| b.created_at.div_euclid(86_400);
        // 1970-01-01 was a Thursday: three days on, weeks start on Monday.
        let week = |b: &BackupRecord| (day(b) + 3).div_euclid(7);
        let mut keep = std::collections::HashSet::new();
        for (period, count) in [
            (&day as &dyn Fn(&BackupRecord) -> i64, self.daily),
            (&week, self.weekly),
        ] {
            let mut seen = Vec::new();
            for b in &newest_first {
                let p = period(b);
                if seen.last() != Some(&p) {
                    if seen.len() == count {
                        break;
                    }
                    seen.push(p);
                    keep.insert(b.id.as_str());
                }
            }
        }
        for b in newest_first.iter().take(self.last.max(1)) {
            keep.insert(b.id.as_str());
        }
        newest_first
            .iter()
            .filter(|b| !b.held && !keep.contains(b.id.as_str()))
            .map(|b| b.id.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(id: &str, created_at: i64) -> BackupRecord {
        BackupRecord {
            id: id.into(),
            created_at,
            sha256: String::new(),
            size: 0,
            marker: String::new(),
            held: false,
        }
    }

    const DAY: i64 = 86_400;
    // A Monday, 00:00 UTC.
    const MONDAY: i64 = 1_764_547_200;

    #[test]
    fn keeps_the_newest_of_each_recent_day_and_week() {
        // Two a day for 21 days, from a Monday on.
        let mut all = Vec::new();
        for d in 0..21 {
            all.push(at(&format!("{d}-am"), MONDAY + d * DAY + 3_600));
            all.push(at(&format!("{d}-pm"), MONDAY + d * DAY + 50_000));
        }
        let r = Retention {
            last: 1,
            daily: 3,
            weekly: 2,
        };
        let gone: std::collections::HashSet<String> = r.prune(&all).into_iter().collect();
        let kept: Vec<&str> = all
            .iter()
            .filter(|b| !gone.contains(&b.id))
            .map(|b| b.id.as_str())
            .collect();
        // Days 18, 19, 20 (newest of each); weeks 3 (day 20) and 2 (day 13).
        assert_eq!(kept, vec!["13-pm", "18-pm", "19-pm", "20-pm"]);
    }

    #[test]
    fn the_newest_and_held_versions_always_stay() {
        let mut old = at("before-restore", MONDAY - 30 * DAY);
        old.held = true;
        let all = vec![old, at("a", MONDAY), at("b", MONDAY + 10)];
        let none = Retention {
            last: 0,
            daily: 0,
            weekly: 0,
        };
        assert_eq!(none.prune(&all), vec!["a".to_string()]);
        let two = Retention { last: 2, ..none };
        assert!(two.prune(&all).is_empty());
    }
}
