//! Records: an account's small objects that are not mail — the sending
//! identities it defines, the submissions it sent, its settings. The mailbox keeps
//! each as opaque bytes (the gateway's JSON) in the encrypted file, with
//! the MODSEQ of its creation and of its last change; a destroyed record
//! stays as a tombstone (no data) so a client can learn what went away.

use rusqlite::{OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};

use super::Mailbox;
use crate::error::{Error, Result};
use crate::time;
use crate::types::ModSeq;

/// What a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordKind {
    /// A sending identity (JMAP `Identity`).
    Identity,
    /// A message sent (JMAP `EmailSubmission`).
    Submission,
    /// A setting of the account (id 1: POP3's options).
    Setting,
}

/// How long a submission's record is kept once sent.
pub const SUBMISSION_TTL_SECS: i64 = 30 * 24 * 3600;

impl RecordKind {
    fn as_str(self) -> &'static str {
        match self {
            RecordKind::Identity => "identity",
            RecordKind::Submission => "submission",
            RecordKind::Setting => "setting",
        }
    }

    /// How long a live record of this kind is kept, if not for ever.
    fn ttl(self) -> Option<i64> {
        match self {
            RecordKind::Identity | RecordKind::Setting => None,
            RecordKind::Submission => Some(SUBMISSION_TTL_SECS),
        }
    }
}

/// One record, live or destroyed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Its id, unique within its kind.
    pub id: i64,
    /// Its bytes; `None` once destroyed.
    pub data: Option<Vec<u8>>,
    /// The MODSEQ that created it.
    pub created: ModSeq,
    /// The MODSEQ of its last change (its destruction included).
    pub modseq: ModSeq,
    /// When it was created (Unix seconds).
    pub created_at: i64,
}

/// One change to the records of a kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordWrite {
    /// A new record with the next free id.
    Create(Vec<u8>),
    /// The record with this id, created or replaced (not a destroyed one).
    Put(i64, Vec<u8>),
    /// Destroys the record with this id.
    Destroy(i64),
}

/// The records of a kind and the state they are in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Records {
    /// Every record ever made and not yet forgotten, by id; destroyed
    /// ones have no data.
    pub records: Vec<Record>,
    /// The highest MODSEQ among them (0 when there are none), or the
    /// moment a restore put the mailbox back if later: changes since a
    /// state are the records whose `modseq` is above it.
    pub state: ModSeq,
    /// Changes are told from this MODSEQ on (see
    /// [`Mailbox::log_since`]); from an earlier state they cannot be.
    #[serde(default)]
    pub since: ModSeq,
}

impl Mailbox {
    /// The records of a kind, tombstones included.
    pub fn records(&self, kind: RecordKind) -> Result<Records> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, data, created, modseq, created_at FROM records
             WHERE kind = ?1 ORDER BY id",
        )?;
        let records = stmt
            .query_map([kind.as_str()], |r| {
                Ok(Record {
                    id: r.get(0)?,
                    data: r.get(1)?,
                    created: r.get::<_, i64>(2)? as ModSeq,
                    modseq: r.get::<_, i64>(3)? as ModSeq,
                    created_at: r.get(4)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let since = self.log_since()?;
        let state = records.iter().map(|r| r.modseq).max().unwrap_or(0);
        Ok(Records {
            records,
            state: state.max(since),
            since,
        })
    }

    /// The state of a kind's records alone, without reading them: what
    /// [`records`](Self::records) would say in `Records::state`.
    pub fn records_state(&self, kind: RecordKind) -> Result<ModSeq> {
        let highest: i64 = self
            .conn
            .prepare_cached("SELECT COALESCE(MAX(modseq), 0) FROM records WHERE kind = ?1")?
            .query_row([kind.as_str()], |r| r.get(0))?;
        Ok((highest as ModSeq).max(self.log_since()?))
    }

    /// Applies `writes` in one transaction (all or none); the ids of the
    /// records created, in order. Live records of a kind that expires and
    /// are older than its lifetime are destroyed in the same transaction.
    pub fn write_records(&mut self, kind: RecordKind, writes: &[RecordWrite]) -> Result<Vec<i64>> {
        let k = kind.as_str();
        self.write(|tx, modseq| {
            let now = time::now();
            let modseq = modseq as i64;
            if let Some(ttl) = kind.ttl() {
                tx.prepare_cached(
                    "UPDATE records SET data = NULL, modseq = ?1
                     WHERE kind = ?2 AND data IS NOT NULL AND created_at < ?3",
                )?
                .execute(params![modseq, k, now - ttl])?;
            }
            let mut created = Vec::new();
            for w in writes {
                match w {
                    RecordWrite::Create(data) => {
                        let id: i64 = tx
                            .prepare_cached(
                                "SELECT COALESCE(MAX(id), 0) + 1 FROM records WHERE kind = ?1",
                            )?
                            .query_row([k], |r| r.get(0))?;
                        insert(tx, k, id, data, modseq, now)?;
                        created.push(id);
                    }
                    RecordWrite::Put(id, data) => match live(tx, k, *id)? {
                        Some(true) => {
                            tx.prepare_cached(
                                "UPDATE records SET data = ?1, modseq = ?2
                                 WHERE kind = ?3 AND id = ?4",
                            )?
                            .execute(params![data, modseq, k, id])?;
                        }
                        Some(false) => {
                            return Err(Error::NotFound(format!("{k} {id} was destroyed")));
                        }
                        None => insert(tx, k, *id, data, modseq, now)?,
                    },
                    RecordWrite::Destroy(id) => {
                        if live(tx, k, *id)? != Some(true) {
                            return Err(Error::NotFound(format!("{k} {id}")));
                        }
                        tx.prepare_cached(
                            "UPDATE records SET data = NULL, modseq = ?1
                             WHERE kind = ?2 AND id = ?3",
                        )?
                        .execute(params![modseq, k, id])?;
                    }
                }
            }
            Ok(created)
        })
    }
}

/// Whether the record exists and is live (`None`: it never existed).
fn live(tx: &Transaction<'_>, kind: &str, id: i64) -> Result<Option<bool>> {
    Ok(tx
        .prepare_cached("SELECT data IS NOT NULL FROM records WHERE kind = ?1 AND id = ?2")?
        .query_row(params![kind, id], |r| r.get(0))
        .optional()?)
}

fn insert(
    tx: &Transaction<'_>,
    kind: &str,
    id: i64,
    data: &[u8],
    modseq: i64,
    now: i64,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO records (kind, id, data, created, modseq, created_at)
         VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
    )?
    .execute(params![kind, id, data, modseq, now])?;
    Ok(())
}
