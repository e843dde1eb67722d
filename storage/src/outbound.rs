//! The outbound queue (`data/outbound.sqlite`): mail accepted from our
//! aliases (submission) for other servers, kept until each recipient's
//! server took it, bounced it, or the retry time ran out.
//!
//! Unlike the inbound queue it cannot be sealed to a user: the server must
//! read the mail to send it. The file is SQLCipher-encrypted under a key
//! derived from the cluster secret (so a copied disk does not reveal it
//! when the secret is kept off that disk, in `COFRE_CLUSTER_SECRET`), and
//! every commit is synced: a 250 to the submitting client is a promise.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::db::{self, Mode};
use crate::error::{Error, Result};
use crate::keys::SecretKey;

/// One message for one destination domain, with the recipients there
/// still waiting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundItem {
    /// Row id.
    pub id: i64,
    /// The message's row (shared by the items of all its domains).
    pub message: i64,
    /// The envelope sender ("" for a bounce, which is never bounced).
    pub from: String,
    /// Destination domain (what MX lookup and static routes key on).
    pub domain: String,
    /// Recipients at that domain not yet delivered or refused.
    pub rcpts: Vec<String>,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// When it was queued, Unix seconds.
    pub created_at: i64,
    /// When it is next due, Unix seconds.
    pub next_at: i64,
    /// What the last attempt ran into.
    pub last_error: Option<String>,
}

/// The DKIM signing key of one domain. It lives beside the outbound
/// queue, under the same key, because the node that sends is the node
/// that signs.
#[derive(Clone, PartialEq, Eq)]
pub struct DkimKey {
    /// The signing domain (`d=`).
    pub domain: String,
    /// The selector (`s=`): the key is published at
    /// `<selector>._domainkey.<domain>`.
    pub selector: String,
    /// The RSA private key, PKCS#1 DER.
    pub private_key: zeroize::Zeroizing<Vec<u8>>,
    /// The RSA public key, PKCS#1 DER (what the DNS record carries).
    pub public_key: Vec<u8>,
    /// When it was made, Unix seconds.
    pub created_at: i64,
}

impl std::fmt::Debug for DkimKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkimKey")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .finish_non_exhaustive()
    }
}

/// A view of what waits in an outbound queue, for the admin API (which
/// does not depend on the process that sends).
pub trait OutboundView: Send + Sync + std::fmt::Debug {
    /// Every waiting item, oldest first.
    fn pending(&self) -> std::result::Result<Vec<OutboundItem>, String>;
    /// The latest webhook posts for an alias, newest first, with their
    /// attempts.
    fn webhook_deliveries(
        &self,
        alias: &str,
    ) -> std::result::Result<Vec<crate::webhook::WebhookDelivery>, String>;
}

/// What [`Submit::submit`] returns: the SMTP reply of the submission
/// path (`250 …` when every copy is stored or queued).
pub type SubmitFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send + 'a>>;

/// Sends mail for an alias logged in through another front end (JMAP's
/// `EmailSubmission`); the process that runs the SMTP services provides
/// it, so the HTTP API needs no SMTP code of its own.
pub trait Submit: Send + Sync + std::fmt::Debug {
    /// Submits `raw` from `mail_from` to `rcpts` on behalf of `alias`,
    /// whose link session is `session`.
    fn submit<'a>(
        &'a self,
        alias: &'a crate::AliasAddress,
        session: crate::primary::SessionId,
        mail_from: &'a str,
        rcpts: &'a [String],
        raw: &'a [u8],
    ) -> SubmitFuture<'a>;
}

/// The outbound queue file.
pub struct Outbound {
    pub(crate) conn: Connection,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound").finish_non_exhaustive()
    }
}

impl Outbound {
    /// Opens (or creates) the queue file with its key.
    pub fn open(path: &Path, key: &SecretKey) -> Result<Outbound> {
        let mode = if path.exists() {
            Mode::Existing
        } else {
            Mode::Create
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let conn = db::open(path, Some(key), mode)?;
        conn.execute_batch(
            "PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS messages (
                 id  INTEGER PRIMARY KEY,
                 raw BLOB NOT NULL
             );
             CREATE TABLE IF NOT EXISTS items (
                 id         INTEGER PRIMARY KEY,
                 message    INTEGER NOT NULL REFERENCES messages (id),
                 sender     TEXT NOT NULL,
                 domain     TEXT NOT NULL,
                 rcpts      TEXT NOT NULL,
                 attempts   INTEGER NOT NULL DEFAULT 0,
                 created_at INTEGER NOT NULL,
                 next_at    INTEGER NOT NULL,
                 last_error TEXT
             );
             CREATE INDEX IF NOT EXISTS items_due ON items (next_at);
             CREATE TABLE IF NOT EXISTS vacation_replies (
                 alias   TEXT NOT NULL,
                 sender  TEXT NOT NULL,
                 sent_at INTEGER NOT NULL,
                 PRIMARY KEY (alias, sender)
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS dkim_keys (
                 domain      TEXT PRIMARY KEY,
                 selector    TEXT NOT NULL,
                 private_key BLOB NOT NULL,
                 public_key  BLOB NOT NULL,
                 created_at  INTEGER NOT NULL
             ) WITHOUT ROWID;",
        )?;
        conn.execute_batch(crate::webhook::SCHEMA)?;
        Ok(Outbound { conn })
    }

    /// Whether `alias` may send its vacation reply to `sender` now: not
    /// when it did within `every` seconds (RFC 3834 §2). A yes is
    /// recorded, so the next answer is no until `every` has passed.
    pub fn vacation_due(
        &mut self,
        alias: &str,
        sender: &str,
        now: i64,
        every: i64,
    ) -> Result<bool> {
        let sender = sender.to_ascii_lowercase();
        let tx = self.conn.transaction()?;
        let last: Option<i64> = tx
            .query_row(
                "SELECT sent_at FROM vacation_replies WHERE alias = ?1 AND sender = ?2",
                rusqlite::params![alias, sender],
                |r| r.get(0),
            )
            .optional()?;
        if last.is_some_and(|t| now - t < every) {
            return Ok(false);
        }
        tx.execute(
            "INSERT OR REPLACE INTO vacation_replies (alias, sender, sent_at) VALUES (?1, ?2, ?3)",
            rusqlite::params![alias, sender, now],
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// Queues a message for its recipients, one item per domain, in one
    /// transaction; returns the items' ids.
    pub fn enqueue(
        &mut self,
        from: &str,
        rcpts: &[String],
        raw: &[u8],
        now: i64,
    ) -> Result<Vec<i64>> {
        let mut by_domain: Vec<(String, Vec<String>)> = Vec::new();
        for r in rcpts {
            let domain = r
                .rsplit_once('@')
                .map(|(_, d)| d.to_ascii_lowercase())
                .ok_or_else(|| Error::Invalid(format!("recipient without a domain: {r}")))?;
            match by_domain.iter_mut().find(|(d, _)| *d == domain) {
                Some((_, list)) => list.push(r.clone()),
                None => by_domain.push((domain, vec![r.clone()])),
            }
        }
        let tx = self.conn.transaction()?;
        tx.execute("INSERT INTO messages (raw) VALUES (?1)", [raw])?;
        let message = tx.last_insert_rowid();
        let mut ids = Vec::new();
        for (domain, list) in by_domain {
            tx.execute(
                "INSERT INTO items (message, sender, domain, rcpts, created_at, next_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                params![message, from, domain, encode(&list), now],
            )?;
            ids.push(tx.last_insert_rowid());
        }
        tx.commit()?;
        Ok(ids)
    }

    /// The DKIM key of `domain`, if one was made.
    pub fn dkim_key(&self, domain: &str) -> Result<Option<DkimKey>> {
        Ok(self
            .conn
            .query_row(
                "SELECT domain, selector, private_key, public_key, created_at
                 FROM dkim_keys WHERE domain = ?1",
                [domain.to_ascii_lowercase()],
                |r| {
                    Ok(DkimKey {
                        domain: r.get(0)?,
                        selector: r.get(1)?,
                        private_key: zeroize::Zeroizing::new(r.get(2)?),
                        public_key: r.get(3)?,
                        created_at: r.get(4)?,
                    })
                },
            )
            .optional()?)
    }

    /// Stores `key` as its domain's key, replacing the one before.
    pub fn put_dkim_key(&mut self, key: &DkimKey) -> Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO dkim_keys
                 (domain, selector, private_key, public_key, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                key.domain.to_ascii_lowercase(),
                key.selector,
                key.private_key.as_slice(),
                key.public_key,
                key.created_at
            ],
        )?;
        Ok(())
    }

    /// Items due at `now`, oldest first, at most `limit`.
    pub fn due(&self, now: i64, limit: usize) -> Result<Vec<OutboundItem>> {
        self.select(
            "WHERE next_at <= ?1 ORDER BY next_at, id LIMIT ?2",
            params![now, i64::try_from(limit).unwrap_or(i64::MAX)],
        )
    }

    /// Every item, oldest first.
    pub fn all(&self) -> Result<Vec<OutboundItem>> {
        self.select("ORDER BY id", params![])
    }

    /// When the next item is due, if any.
    pub fn next_due(&self) -> Result<Option<i64>> {
        Ok(self
            .conn
            .query_row("SELECT min(next_at) FROM items", [], |r| r.get(0))
            .optional()?
            .flatten())
    }

    fn select(&self, tail: &str, p: impl rusqlite::Params) -> Result<Vec<OutboundItem>> {
        let sql = format!(
            "SELECT id, message, sender, domain, rcpts, attempts, created_at, next_at, last_error
             FROM items {tail}"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(p, |r| {
            Ok(OutboundItem {
                id: r.get(0)?,
                message: r.get(1)?,
                from: r.get(2)?,
                domain: r.get(3)?,
                rcpts: decode(&r.get::<_, String>(4)?),
                attempts: r.get(5)?,
                created_at: r.get(6)?,
                next_at: r.get(7)?,
                last_error: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// A message's bytes.
    pub fn message(&self, message: i64) -> Result<Vec<u8>> {
        self.conn
            .query_row("SELECT raw FROM messages WHERE id = ?1", [message], |r| {
                r.get(0)
            })
            .optional()?
            .ok_or_else(|| Error::NotFound(format!("outbound message {message}")))
    }

    /// After an attempt: the recipients still waiting (none: the item is
    /// done and removed, with its message once no item needs it), when to
    /// try again, and why.
    pub fn update(
        &mut self,
        id: i64,
        waiting: &[String],
        next_at: i64,
        error: Option<&str>,
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        if waiting.is_empty() {
            let message: Option<i64> = tx
                .query_row("SELECT message FROM items WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .optional()?;
            tx.execute("DELETE FROM items WHERE id = ?1", [id])?;
            if let Some(m) = message {
                tx.execute(
                    "DELETE FROM messages WHERE id = ?1
                     AND NOT EXISTS (SELECT 1 FROM items WHERE message = ?1)",
                    [m],
                )?;
            }
        } else {
            tx.execute(
                "UPDATE items SET rcpts = ?2, attempts = attempts + 1, next_at = ?3,
                     last_error = ?4 WHERE id = ?1",
                params![id, encode(waiting), next_at, error],
            )?;
        }
        tx.commit()?;
        Ok(())
    }
}

fn encode(list: &[String]) -> String {
    list.join("\n")
}

fn decode(s: &str) -> Vec<String> {
    s.split('\n')
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_per_domain_survive_reopening_and_finish_with_their_message() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("outbound.sqlite");
        let key = SecretKey::generate();
        let rcpts = ["a@x.example", "b@y.example", "c@X.example"].map(String::from);
        let ids = {
            let mut q = Outbound::open(&path, &key).unwrap_or_else(|e| panic!("{e}"));
            q.enqueue(
                "me@ours.example",
                &rcpts,
                b"Subject: hi\r\n\r\nsecret body\r\n",
                100,
            )
            .unwrap_or_else(|e| panic!("{e}"))
        };
        assert_eq!(ids.len(), 2, "one item per domain");
        let bytes = std::fs::read(&path).unwrap_or_default();
        assert!(
            !bytes.windows(11).any(|w| w == b"secret body"),
            "encrypted at rest"
        );
        assert!(
            Outbound::open(&path, &SecretKey::generate()).is_err(),
            "wrong key"
        );

        let mut q = Outbound::open(&path, &key).unwrap_or_else(|e| panic!("{e}"));
        let due = q.due(100, 10).unwrap_or_default();
        assert_eq!(due.len(), 2);
        assert_eq!(due[0].rcpts, ["a@x.example", "c@X.example"]);
        assert_eq!(q.due(99, 10).unwrap_or_default().len(), 0);
        let msg = due[0].message;
        q.update(due[0].id, &["c@X.example".into()], 160, Some("451 later"))
            .unwrap_or_else(|e| panic!("{e}"));
        q.update(due[1].id, &[], 0, None)
            .unwrap_or_else(|e| panic!("{e}"));
        let left = q.all().unwrap_or_default();
        assert_eq!(left.len(), 1);
        assert_eq!((left[0].attempts, left[0].next_at), (1, 160));
        assert_eq!(left[0].last_error.as_deref(), Some("451 later"));
        assert!(q.message(msg).is_ok(), "still needed");
        q.update(left[0].id, &[], 0, None)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(q.message(msg).is_err(), "freed with its last item");
        assert_eq!(q.next_due().unwrap_or(Some(-1)), None);
    }
}
