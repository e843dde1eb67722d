//! Opening SQLCipher databases the one way Cofre does, and the SQL functions
//! that search needs (`regexp`, `contains_ci`, `header_has`).

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use regex::Regex;
use rusqlite::functions::FunctionFlags;
use rusqlite::{Connection, OpenFlags};

use crate::error::{Error, Result};
use crate::keys::SecretKey;

/// Most page cache one connection may hold, in KiB. Writes and searches
/// need room (index merges thrash a small cache, and every page read from
/// disk is decrypted again); SQLite fills the cache only as pages are used,
/// and `Mailbox::release_memory` empties it when a mailbox goes idle, so
/// thousands of idle mailboxes stay cheap.
pub const CACHE_KIB: i64 = 8192;

/// Whether opening may create the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The file must already exist.
    Existing,
    /// The file must not exist yet; it is created.
    Create,
}

/// Opens (or creates) a database keyed with a raw 256-bit key, proves the key
/// by reading the schema before anything is written, then sets the pragmas
/// every Cofre database uses. `key = None` opens an unencrypted file (the
/// sealed queue, whose rows are encrypted one by one).
pub fn open(path: &Path, key: Option<&SecretKey>, mode: Mode) -> Result<Connection> {
    let exists = path.exists();
    match mode {
        Mode::Existing if !exists => {
            return Err(Error::NotFound(format!("{}", path.display())));
        }
        Mode::Create if exists => {
            return Err(Error::AlreadyExists(format!("{}", path.display())));
        }
        _ => {}
    }
    sqlcipher_ready()?;
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    // SQLCipher reports a failed HMAC on stderr unless told not to; the
    // caller gets a typed error instead.
    conn.execute_batch("PRAGMA cipher_log_level = NONE;")?;
    if let Some(key) = key {
        conn.execute_batch(&key.sqlcipher_pragma("main"))?;
        // Page authentication with HMAC-SHA256 rather than SQLCipher 4's
        // default SHA-512: the CPUs we run on hash SHA-256 in hardware (SHA
        // extensions), about twice as fast. Not stored in the file, so every
        // open must say it; this function is the only place files are opened.
        conn.execute_batch("PRAGMA cipher_hmac_algorithm = HMAC_SHA256;")?;
    }
    prove_key(&conn, path)?;
    configure(&conn)?;
    Ok(conn)
}

/// Opens an existing keyed database that nothing writes — a copy (a
/// backup) — read-only and immutable, and proves the key: not a byte of
/// it changes, not even its journal mode (which a read-write open would
/// switch to WAL), and no `-wal` or `-shm` file appears beside it (which
/// a read-only open of a copy of a WAL-mode file would create).
pub fn open_read_only(path: &Path, key: &SecretKey) -> Result<Connection> {
    if !path.exists() {
        return Err(Error::NotFound(format!("{}", path.display())));
    }
    sqlcipher_ready()?;
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(immutable_uri(path)?, flags)?;
    conn.execute_batch("PRAGMA cipher_log_level = NONE;")?;
    conn.execute_batch(&key.sqlcipher_pragma("main"))?;
    conn.execute_batch("PRAGMA cipher_hmac_algorithm = HMAC_SHA256;")?;
    prove_key(&conn, path)?;
    conn.execute_batch(&format!("PRAGMA cache_size = -{CACHE_KIB};"))?;
    Ok(conn)
}

/// `file:` URI of `path` with `immutable=1` (RFC 3986 escapes for all but
/// unreserved characters and `/`).
fn immutable_uri(path: &Path) -> Result<String> {
    let path = path
        .to_str()
        .ok_or_else(|| Error::Invalid("database path must be UTF-8".into()))?;
    let mut uri = String::from("file:");
    for b in path.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'.' | b'_' | b'~' => {
                uri.push(b as char)
            }
            _ => uri.push_str(&format!("%{b:02X}")),
        }
    }
    uri.push_str("?immutable=1");
    Ok(uri)
}

/// Waits, once per process, until SQLCipher can take a key.
///
/// SQLite marks itself initialised and releases its lock before it runs
/// SQLCipher's one-time setup (crypto provider, private heap), so a key set
/// on another thread in that window is refused with "An error occurred with
/// PRAGMA key or rekey". The first open probes an in-memory database until
/// a key takes, and every other open waits for that probe.
fn sqlcipher_ready() -> Result<()> {
    static READY: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    READY
        .get_or_init(|| {
            let mut last = String::new();
            // The setup takes microseconds; a second is generous.
            for _ in 0..1000 {
                match Connection::open_in_memory()
                    .and_then(|c| c.execute_batch("PRAGMA key = 'probe';"))
                {
                    Ok(()) => return Ok(()),
                    Err(e) => last = e.to_string(),
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(last)
        })
        .clone()
        .map_err(|e| Error::Unavailable(format!("SQLCipher did not initialise: {e}")))
}

/// Reads the schema: the first read is where a wrong key shows.
fn prove_key(conn: &Connection, path: &Path) -> Result<()> {
    match conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
        r.get::<_, i64>(0)
    }) {
        Ok(_) => Ok(()),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::NotADatabase =>
        {
            Err(Error::WrongKey(path.to_path_buf()))
        }
        Err(e) => Err(e.into()),
    }
}

fn configure(conn: &Connection) -> Result<()> {
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL;
         PRAGMA busy_timeout = 5000;
         PRAGMA synchronous = NORMAL;
         PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -{CACHE_KIB};"
    ))?;
    register_functions(conn)?;
    // An append, a keyword change or a summary read each use more distinct
    // statements than rusqlite's default cache of 16 holds; past it every
    // statement (and the triggers it fires) was compiled again each time
    // (14% of CPU time under the IMAP benchmark's mixed load).
    conn.set_prepared_statement_cache_capacity(256);
    Ok(())
}

/// Registers the scalar functions search uses.
pub fn register_functions(conn: &Connection) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    // regexp(pattern, text): Rust `regex` syntax; the compiled pattern is
    // cached per statement. An invalid pattern is an error, not a non-match.
    conn.create_scalar_function("regexp", 2, flags, |ctx| {
        let re: Arc<Regex> = ctx.get_or_create_aux(0, |v| -> Result<Regex, BoxError> {
            let pattern = v.as_str()?;
            Ok(regex::RegexBuilder::new(pattern)
                .size_limit(1 << 20)
                .build()?)
        })?;
        let text = match ctx.get_raw(1) {
            rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t),
            _ => return Ok(false),
        };
        Ok(re.is_match(&text))
    })?;
    // contains_ci(haystack, needle): Unicode case-insensitive substring, for
    // needles too short for the trigram index.
    conn.create_scalar_function("contains_ci", 2, flags, |ctx| {
        let hay = match ctx.get_raw(0) {
            rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).to_lowercase(),
            _ => return Ok(false),
        };
        let needle = ctx.get::<String>(1)?.to_lowercase();
        Ok(hay.contains(&needle))
    })?;
    // header_has(headers, name, needle): `headers` holds one "Name: value"
    // line per field; true when a field called `name` (any case) contains
    // `needle` (any case). An empty needle asks whether the field exists.
    conn.create_scalar_function("header_has", 3, flags, |ctx| {
        let headers = match ctx.get_raw(0) {
            rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
            _ => return Ok(false),
        };
        let name = ctx.get::<String>(1)?;
        let needle = ctx.get::<String>(2)?.to_lowercase();
        Ok(headers.lines().any(|line| {
            line.split_once(':').is_some_and(|(n, v)| {
                n.trim().eq_ignore_ascii_case(name.trim())
                    && (needle.is_empty() || v.to_lowercase().contains(&needle))
            })
        }))
    })?;
    Ok(())
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_key_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.sqlite");
        let key = SecretKey::generate();
        let conn = open(&path, Some(&key), Mode::Create).unwrap();
        conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
            .unwrap();
        drop(conn);
        let before = std::fs::read(&path).unwrap();
        let err = open(&path, Some(&SecretKey::generate()), Mode::Existing).unwrap_err();
        assert!(matches!(err, Error::WrongKey(_)), "{err}");
        assert!(err.to_string().contains("does not open"));
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert!(open(&path, Some(&key), Mode::Existing).is_ok());
        assert!(matches!(
            open(&path, Some(&key), Mode::Create),
            Err(Error::AlreadyExists(_))
        ));
    }

    #[test]
    fn search_functions() {
        let conn = Connection::open_in_memory().unwrap();
        register_functions(&conn).unwrap();
        let q = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, bool>(0)).unwrap();
        assert!(q("SELECT regexp('^inv[o0]ice #\\d+$', 'invoice #42')"));
        assert!(!q("SELECT regexp('^invoice$', 'an invoice')"));
        assert!(
            conn.query_row("SELECT regexp('(', 'x')", [], |r| r.get::<_, bool>(0))
                .is_err()
        );
        assert!(q("SELECT contains_ci('ÉCOLE Normale', 'école')"));
        assert!(q(
            "SELECT header_has('Subject: Hi\nX-Spam: YES', 'x-spam', 'yes')"
        ));
        assert!(q(
            "SELECT header_has('Subject: Hi\nX-Spam: YES', 'X-SPAM', '')"
        ));
        assert!(!q("SELECT header_has('Subject: Hi', 'X-Spam', '')"));
    }
}
