//! The directory (`data/directory.sqlite`): domains, aliases, password
//! verifiers, wrapped keys, queue public keys, quotas, forwarding recipients
//! and webhooks. It holds no message and no usable key: every key in it is
//! wrapped under a key derived from a password the server never stores.
//!
//! With a master key (`COFRE_MASTER_KEY`), the directory itself is a
//! SQLCipher file too, so alias addresses are not readable on disk either.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::db::{self, Mode};
use crate::error::{Error, Result};
use crate::keys::{KdfParams, SecretKey};
use crate::time;
use crate::types::AliasAddress;

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE domains (
    name       TEXT PRIMARY KEY,
    created_at TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE aliases (
    id               INTEGER PRIMARY KEY,
    address          TEXT NOT NULL UNIQUE,
    domain           TEXT NOT NULL REFERENCES domains (name),
    mailbox_id       TEXT NOT NULL UNIQUE,
    kdf_m_kib        INTEGER NOT NULL,
    kdf_t            INTEGER NOT NULL,
    kdf_p            INTEGER NOT NULL,
    salt             BLOB NOT NULL,
    verifier_hash    BLOB NOT NULL,
    wrapped_data_key BLOB NOT NULL,
    public_key       TEXT NOT NULL,
    wrapped_identity BLOB NOT NULL,
    key_epoch        INTEGER NOT NULL DEFAULT 1,
    quota            INTEGER,
    primary_node     TEXT NOT NULL DEFAULT 'local',
    created_at       TEXT NOT NULL
);
CREATE INDEX aliases_domain ON aliases (domain);

CREATE TABLE forwards (
    alias_id  INTEGER NOT NULL REFERENCES aliases (id) ON DELETE CASCADE,
    recipient TEXT NOT NULL,
    PRIMARY KEY (alias_id, recipient)
) WITHOUT ROWID;

CREATE TABLE webhooks (
    id         INTEGER PRIMARY KEY,
    alias_id   INTEGER NOT NULL REFERENCES aliases (id) ON DELETE CASCADE,
    url        TEXT NOT NULL,
    secret     BLOB NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX webhooks_alias ON webhooks (alias_id);
"#,
    r#"
CREATE TABLE revoked_tokens (
    jti        TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
"#,
    r#"
ALTER TABLE aliases ADD COLUMN keep_copy INTEGER NOT NULL DEFAULT 1;
"#,
    r#"
CREATE TABLE vacations (
    alias_id  INTEGER PRIMARY KEY REFERENCES aliases (id) ON DELETE CASCADE,
    enabled   INTEGER NOT NULL,
    from_date INTEGER,
    to_date   INTEGER,
    subject   TEXT,
    text_body TEXT,
    html_body TEXT
);
"#,
    r#"
CREATE TABLE backups (
    id         TEXT PRIMARY KEY,
    alias_id   INTEGER NOT NULL REFERENCES aliases (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    sha256     TEXT NOT NULL,
    size       INTEGER NOT NULL,
    marker     TEXT NOT NULL,
    held       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX backups_alias ON backups (alias_id, created_at);
"#,
];

/// One alias as the directory stores it.
#[derive(Clone, PartialEq, Eq)]
pub struct AliasRecord {
    /// Row id.
    pub id: i64,
    /// The address.
    pub address: AliasAddress,
    /// 24 hex digits naming the mailbox and queue files.
    pub mailbox_id: String,
    /// Argon2id parameters used for this alias.
    pub kdf: KdfParams,
    /// Argon2id salt.
    pub salt: Vec<u8>,
    /// SHA-256 of the auth verifier.
    pub verifier_hash: Vec<u8>,
    /// The mailbox data key, wrapped under the KEK.
    pub wrapped_data_key: Vec<u8>,
    /// The age X25519 recipient that MX seals queued mail to.
    pub public_key: String,
    /// The matching identity, wrapped under the KEK.
    pub wrapped_identity: Vec<u8>,
    /// Bumped at each password change (invalidates cached keys and tokens).
    pub key_epoch: i64,
    /// Quota in bytes.
    pub quota: Option<u64>,
    /// Which primary owns the mailbox (the shard map).
    pub primary_node: String,
    /// When it was created.
    pub created_at: String,
}

impl std::fmt::Debug for AliasRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AliasRecord")
            .field("id", &self.id)
            .field("address", &self.address)
            .field("mailbox_id", &self.mailbox_id)
            .finish_non_exhaustive()
    }
}

/// The secrets of an alias that change together at a password change.
pub struct KeyMaterial {
    /// Argon2id parameters.
    pub kdf: KdfParams,
    /// Argon2id salt.
    pub salt: Vec<u8>,
    /// SHA-256 of the verifier.
    pub verifier_hash: Vec<u8>,
    /// Wrapped data key.
    pub wrapped_data_key: Vec<u8>,
    /// Wrapped queue identity.
    pub wrapped_identity: Vec<u8>,
}

/// A webhook registration.
#[derive(Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Row id.
    pub id: i64,
    /// Where to POST.
    pub url: String,
    /// HMAC-SHA256 signing secret.
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("id", &self.id)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// The open directory database.
pub struct Directory {
    conn: Connection,
}

const ALIAS_SELECT: &str = "SELECT id, address, mailbox_id, kdf_m_kib, kdf_t, kdf_p, salt,
    verifier_hash, wrapped_data_key, public_key, wrapped_identity, key_epoch, quota,
    primary_node, created_at FROM aliases";

fn alias_from_row(r: &Row<'_>) -> rusqlite::Result<AliasRecord> {
    let address: String = r.get(1)?;
    Ok(AliasRecord {
        id: r.get(0)?,
        address: AliasAddress::try_from(address.as_str()).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, Box::new(e))
        })?,
        mailbox_id: r.get(2)?,
        kdf: KdfParams {
            m_kib: r.get(3)?,
            t: r.get(4)?,
            p: r.get(5)?,
        },
        salt: r.get(6)?,
        verifier_hash: r.get(7)?,
        wrapped_data_key: r.get(8)?,
        public_key: r.get(9)?,
        wrapped_identity: r.get(10)?,
        key_epoch: r.get(11)?,
        quota: r.get::<_, Option<i64>>(12)?.map(|q| q as u64),
        primary_node: r.get(13)?,
        created_at: r.get(14)?,
    })
}

impl Directory {
    /// Opens the directory, creating it on first use.
    pub fn open(path: &Path, master_key: Option<&SecretKey>) -> Result<Directory> {
        let mode = if path.exists() {
            Mode::Existing
        } else {
            Mode::Create
        };
        let mut conn = db::open(path, master_key, mode)?;
        let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if found > MIGRATIONS.len() as i64 {
            return Err(Error::SchemaTooNew {
                found,
                supported: MIGRATIONS.len() as i64,
            });
        }
        for v in found..MIGRATIONS.len() as i64 {
            let tx = conn.transaction()?;
            tx.execute_batch(MIGRATIONS[v as usize])?;
            tx.execute_batch(&format!("PRAGMA user_version = {}", v + 1))?;
            tx.commit()?;
        }
        Ok(Directory { conn })
    }

    /// Hosted domains with how many aliases each has.
    pub fn domains(&self) -> Result<Vec<(String, u64)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT d.name, (SELECT count(*) FROM aliases a WHERE a.domain = d.name)
             FROM domains d ORDER BY d.name",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Whether a domain is hosted.
    pub fn has_domain(&self, name: &str) -> Result<bool> {
        Ok(self
            .conn
            .query_row("SELECT 1 FROM domains WHERE name = ?1", [name], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Hosts a domain (lower-case DNS name).
    pub fn add_domain(&mut self, name: &str) -> Result<()> {
        let n = self.conn.execute(
            "INSERT OR IGNORE INTO domains (name, created_at) VALUES (?1, ?2)",
            params![name, time::iso(time::now())],
        )?;
        if n == 0 {
            return Err(Error::AlreadyExists(format!("domain {name}")));
        }
        Ok(())
    }

    /// Stops hosting a domain; refused while it has aliases.
    pub fn remove_domain(&mut self, name: &str) -> Result<()> {
        let aliases: i64 = self.conn.query_row(
            "SELECT count(*) FROM aliases WHERE domain = ?1",
            [name],
            |r| r.get(0),
        )?;
        if aliases > 0 {
            return Err(Error::Invalid(format!(
                "domain {name} still has {aliases} aliases; delete them first"
            )));
        }
        if self
            .conn
            .execute("DELETE FROM domains WHERE name = ?1", [name])?
            == 0
        {
            return Err(Error::NotFound(format!("domain {name}")));
        }
        Ok(())
    }

    /// Records a revoked API token until it would have expired anyway
    /// (and forgets tokens whose expiry has passed).
    pub fn revoke_token(&mut self, jti: &str, expires_at: i64) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "DELETE FROM revoked_tokens WHERE expires_at < ?1",
            params![time::now()],
        )?;
        tx.execute(
            "INSERT OR REPLACE INTO revoked_tokens (jti, expires_at) VALUES (?1, ?2)",
            params![jti, expires_at],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Whether an API token was revoked.
    pub fn is_revoked(&self, jti: &str) -> Result<bool> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM revoked_tokens WHERE jti = ?1",
                params![jti],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Adds an alias (and its domain, if new).
    pub fn insert_alias(
        &mut self,
        address: &AliasAddress,
        mailbox_id: &str,
        public_key: &str,
        keys: &KeyMaterial,
        quota: Option<u64>,
    ) -> Result<AliasRecord> {
        let tx = self.conn.transaction()?;
        let now = time::iso(time::now());
        tx.execute(
            "INSERT OR IGNORE INTO domains (name, created_at) VALUES (?1, ?2)",
            params![address.domain(), now],
        )?;
        let inserted = tx.execute(
            "INSERT INTO aliases (address, domain, mailbox_id, kdf_m_kib, kdf_t, kdf_p, salt,
                verifier_hash, wrapped_data_key, public_key, wrapped_identity, quota, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                address.as_str(),
                address.domain(),
                mailbox_id,
                keys.kdf.m_kib,
                keys.kdf.t,
                keys.kdf.p,
                keys.salt,
                keys.verifier_hash,
                keys.wrapped_data_key,
                public_key,
                keys.wrapped_identity,
                quota.map(|q| q as i64),
                now
            ],
        );
        match inserted {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                return Err(Error::AliasExists(address.to_string()));
            }
            other => {
                other?;
            }
        }
        tx.commit()?;
        self.alias(address)
    }

    /// Looks an alias up by address.
    pub fn alias(&self, address: &AliasAddress) -> Result<AliasRecord> {
        self.conn
            .prepare_cached(&format!("{ALIAS_SELECT} WHERE address = ?1"))?
            .query_row([address.as_str()], alias_from_row)
            .optional()?
            .ok_or_else(|| Error::NoSuchAlias(address.to_string()))
    }

    /// Every alias, by address.
    pub fn aliases(&self) -> Result<Vec<AliasRecord>> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("{ALIAS_SELECT} ORDER BY address"))?;
        let rows = stmt.query_map([], alias_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Replaces an alias's key material (password change) and bumps its epoch.
    pub fn replace_keys(&mut self, id: i64, keys: &KeyMaterial) -> Result<()> {
        let n = self.conn.execute(
            "UPDATE aliases SET kdf_m_kib = ?2, kdf_t = ?3, kdf_p = ?4, salt = ?5,
                verifier_hash = ?6, wrapped_data_key = ?7, wrapped_identity = ?8,
                key_epoch = key_epoch + 1
             WHERE id = ?1",
            params![
                id,
                keys.kdf.m_kib,
                keys.kdf.t,
                keys.kdf.p,
                keys.salt,
                keys.verifier_hash,
                keys.wrapped_data_key,
                keys.wrapped_identity
            ],
        )?;
        if n == 0 {
            return Err(Error::NotFound(format!("alias {id}")));
        }
        Ok(())
    }

    /// Removes an alias with its forwards and webhooks.
    pub fn delete_alias(&mut self, id: i64) -> Result<()> {
        self.conn
            .execute("DELETE FROM aliases WHERE id = ?1", [id])?;
        Ok(())
    }

    /// Sets or clears an alias's quota.
    pub fn set_quota(&mut self, id: i64, quota: Option<u64>) -> Result<()> {
        self.conn.execute(
            "UPDATE aliases SET quota = ?2 WHERE id = ?1",
            params![id, quota.map(|q| q as i64)],
        )?;
        Ok(())
    }

    /// Whether arriving mail is stored in the alias's mailbox (it always
    /// is when the alias has no forward and no webhook).
    pub fn keep_copy(&self, alias_id: i64) -> Result<bool> {
        Ok(self.conn.query_row(
            "SELECT keep_copy FROM aliases WHERE id = ?1",
            [alias_id],
            |r| r.get(0),
        )?)
    }

    /// Sets whether arriving mail is stored in the alias's mailbox.
    pub fn set_keep_copy(&mut self, alias_id: i64, keep: bool) -> Result<()> {
        self.conn.execute(
            "UPDATE aliases SET keep_copy = ?2 WHERE id = ?1",
            params![alias_id, keep],
        )?;
        Ok(())
    }

    /// An alias's vacation response (disabled and empty if never set).
    pub fn vacation(&self, alias_id: i64) -> Result<crate::admin::Vacation> {
        Ok(self
            .conn
            .query_row(
                "SELECT enabled, from_date, to_date, subject, text_body, html_body
                 FROM vacations WHERE alias_id = ?1",
                [alias_id],
                |r| {
                    Ok(crate::admin::Vacation {
                        enabled: r.get(0)?,
                        from_date: r.get(1)?,
                        to_date: r.get(2)?,
                        subject: r.get(3)?,
                        text_body: r.get(4)?,
                        html_body: r.get(5)?,
                    })
                },
            )
            .optional()?
            .unwrap_or_default())
    }

    /// An alias's backups, oldest first.
    pub fn backups(&self, alias_id: i64) -> Result<Vec<crate::backup::BackupRecord>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, created_at, sha256, size, marker, held FROM backups
             WHERE alias_id = ?1 ORDER BY created_at, rowid",
        )?;
        let rows = stmt.query_map([alias_id], |r| {
            Ok(crate::backup::BackupRecord {
                id: r.get(0)?,
                created_at: r.get(1)?,
                sha256: r.get(2)?,
                size: r.get::<_, i64>(3)? as u64,
                marker: r.get(4)?,
                held: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Records a backup once its file is in place.
    pub fn add_backup(&mut self, alias_id: i64, b: &crate::backup::BackupRecord) -> Result<()> {
        self.conn.execute(
            "INSERT INTO backups (id, alias_id, created_at, sha256, size, marker, held)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                b.id,
                alias_id,
                b.created_at,
                b.sha256,
                b.size as i64,
                b.marker,
                b.held
            ],
        )?;
        Ok(())
    }

    /// Forgets a backup (its file goes first).
    pub fn remove_backup(&mut self, alias_id: i64, id: &str) -> Result<()> {
        let n = self.conn.execute(
            "DELETE FROM backups WHERE alias_id = ?1 AND id = ?2",
            params![alias_id, id],
        )?;
        if n == 0 {
            return Err(Error::NotFound(format!("backup {id}")));
        }
        Ok(())
    }

    /// Holds or releases an alias's backups: `id` alone held, or none
    /// when `None` (a restore confirmed).
    pub fn hold_backup(&mut self, alias_id: i64, id: Option<&str>) -> Result<()> {
        self.conn.execute(
            "UPDATE backups SET held = (id IS ?2) WHERE alias_id = ?1",
            params![alias_id, id],
        )?;
        Ok(())
    }

    /// Replaces an alias's vacation response.
    pub fn set_vacation(&mut self, alias_id: i64, v: &crate::admin::Vacation) -> Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO vacations
                 (alias_id, enabled, from_date, to_date, subject, text_body, html_body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                alias_id,
                v.enabled,
                v.from_date,
                v.to_date,
                v.subject,
                v.text_body,
                v.html_body
            ],
        )?;
        Ok(())
    }

    /// Adds a forwarding recipient.
    pub fn add_forward(&mut self, alias_id: i64, recipient: &AliasAddress) -> Result<()> {
        self.conn.execute(
            "INSERT OR IGNORE INTO forwards (alias_id, recipient) VALUES (?1, ?2)",
            params![alias_id, recipient.as_str()],
        )?;
        Ok(())
    }

    /// Removes a forwarding recipient.
    pub fn remove_forward(&mut self, alias_id: i64, recipient: &AliasAddress) -> Result<()> {
        self.conn.execute(
            "DELETE FROM forwards WHERE alias_id = ?1 AND recipient = ?2",
            params![alias_id, recipient.as_str()],
        )?;
        Ok(())
    }

    /// The forwarding recipients of an alias.
    pub fn forwards(&self, alias_id: i64) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT recipient FROM forwards WHERE alias_id = ?1 ORDER BY recipient",
        )?;
        let rows = stmt.query_map([alias_id], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Registers a webhook URL with a signing secret.
    pub fn add_webhook(&mut self, alias_id: i64, url: &str, secret: &[u8]) -> Result<i64> {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(Error::Invalid(format!(
                "webhook URL {url:?} must be http(s)"
            )));
        }
        self.conn.execute(
            "INSERT INTO webhooks (alias_id, url, secret, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![alias_id, url, secret, time::iso(time::now())],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Removes a webhook.
    pub fn remove_webhook(&mut self, alias_id: i64, id: i64) -> Result<()> {
        self.conn.execute(
            "DELETE FROM webhooks WHERE alias_id = ?1 AND id = ?2",
            params![alias_id, id],
        )?;
        Ok(())
    }

    /// The webhooks of an alias.
    pub fn webhooks(&self, alias_id: i64) -> Result<Vec<Webhook>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, url, secret FROM webhooks WHERE alias_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([alias_id], |r| {
            Ok(Webhook {
                id: r.get(0)?,
                url: r.get(1)?,
                secret: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}
