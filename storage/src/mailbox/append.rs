//! Storing messages: byte-exact skeletons, deduplicated attachment bodies,
//! threading, keywords, UIDs and the search indexes.

use rusqlite::{OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::parse::{self, Addr, Analysis};
use super::search::trigram_tokens;
use super::{Mailbox, folders, log_change};
use crate::error::{Error, Result};
use crate::time;
use crate::types::{EmailId, FolderId, Keyword, ModSeq, Uid};

/// How a message is appended.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct AppendOptions {
    /// Keywords (flags) to set on it.
    pub keywords: Vec<Keyword>,
    /// Internal (received) date as Unix seconds; now if `None`.
    pub received_at: Option<i64>,
    /// Idempotency key: appending twice with the same key stores it once.
    /// The queue drain and retried writes use it.
    pub delivery_ref: Option<String>,
}

/// What an append produced.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The email's id.
    pub email_id: EmailId,
    /// Its UID in the folder it was appended to.
    pub uid: Uid,
    /// The MODSEQ of the write.
    pub modseq: ModSeq,
    /// True when `delivery_ref` matched an email stored earlier.
    pub duplicate: bool,
}

/// A message prepared outside the transaction (parsing and hashing are the
/// expensive part and need no lock).
struct Prepared<'a> {
    raw: &'a [u8],
    analysis: Analysis,
    /// Address fields as searched: from, to, cc, bcc.
    addr_texts: [String; 4],
    /// Trigram tokens per searchable column, in `email_grams` order, for a
    /// bulk append (indexed in its own transaction); `None` when the email
    /// joins the index backlog.
    grams: Option<[String; 7]>,
    skeleton: Vec<u8>,
    skeleton_compressed: bool,
    /// (offset in skeleton, sha256, encoded body bytes)
    blobs: Vec<(usize, [u8; 32], &'a [u8])>,
    options: &'a AppendOptions,
}

/// Compresses when that saves at least 10%.
fn maybe_compress(data: &[u8], enabled: bool) -> Option<Vec<u8>> {
    if !enabled || data.len() < 256 {
        return None;
    }
    let c = zstd::bulk::compress(data, 1).ok()?;
    (c.len() <= data.len() / 10 * 9).then_some(c)
}

fn prepare<'a>(
    raw: &'a [u8],
    options: &'a AppendOptions,
    compress: bool,
    bulk: bool,
) -> Prepared<'a> {
    let analysis = parse::analyse(raw);
    let mut skeleton = Vec::with_capacity(raw.len());
    let mut blobs = Vec::with_capacity(analysis.dedup_ranges.len());
    let mut pos = 0;
    for &(start, end) in &analysis.dedup_ranges {
        skeleton.extend_from_slice(&raw[pos..start]);
        let body = &raw[start..end];
        blobs.push((skeleton.len(), Sha256::digest(body).into(), body));
        pos = end;
    }
    skeleton.extend_from_slice(&raw[pos..]);
    let (skeleton, skeleton_compressed) = match maybe_compress(&skeleton, compress) {
        Some(c) => (c, true),
        None => (skeleton, false),
    };
    let addr_texts = [
        parse::addrs_text(&analysis.from),
        parse::addrs_text(&analysis.to),
        parse::addrs_text(&analysis.cc),
        parse::addrs_text(&analysis.bcc),
    ];
    let grams = bulk.then(|| {
        [
            trigram_tokens(&analysis.subject),
            trigram_tokens(&addr_texts[0]),
            trigram_tokens(&addr_texts[1]),
            trigram_tokens(&addr_texts[2]),
            trigram_tokens(&addr_texts[3]),
            trigram_tokens(&analysis.body_text),
            trigram_tokens(&analysis.headers_text),
        ]
    });
    Prepared {
        raw,
        analysis,
        addr_texts,
        grams,
        skeleton,
        skeleton_compressed,
        blobs,
        options,
    }
}

/// A batch this large is indexed in its own transaction (imports), rather
/// than put on the index backlog.
const BULK: usize = 16;

/// Prepares a batch, on two threads when it is large enough to be worth it
/// (parsing, hashing, compressing and computing trigrams is a fifth of the
/// cost of an append, and needs no lock).
fn prepare_all<'a>(messages: &'a [(&'a [u8], AppendOptions)], compress: bool) -> Vec<Prepared<'a>> {
    let bulk = messages.len() >= BULK;
    let one = |part: &'a [(&'a [u8], AppendOptions)]| -> Vec<Prepared<'a>> {
        part.iter()
            .map(|(raw, o)| prepare(raw, o, compress, bulk))
            .collect()
    };
    if !bulk {
        return one(messages);
    }
    let (first, second) = messages.split_at(messages.len() / 2);
    std::thread::scope(|s| {
        let other = s.spawn(|| one(second));
        let mut out = one(first);
        match other.join() {
            Ok(rest) => out.extend(rest),
            // A panic while preparing is a bug; prepare that half here so
            // the append still completes or fails on its own terms.
            Err(_) => out.extend(one(second)),
        }
        out
    })
}

/// Stores address lists as `name US email` entries joined by RS: lossless for
/// names with commas or quotes, and never shown to anyone in this form.
pub(crate) fn encode_addrs(list: &[Addr]) -> String {
    list.iter()
        .map(|a| format!("{}\u{1f}{}", a.name.as_deref().unwrap_or(""), a.email))
        .collect::<Vec<_>>()
        .join("\u{1e}")
}

/// Reverses [`encode_addrs`].
pub(crate) fn decode_addrs(s: &str) -> Vec<Addr> {
    if s.is_empty() {
        return Vec::new();
    }
    s.split('\u{1e}')
        .map(|e| {
            let (name, email) = e.split_once('\u{1f}').unwrap_or(("", e));
            Addr {
                name: (!name.is_empty()).then(|| name.to_string()),
                email: email.to_string(),
            }
        })
        .collect()
}

fn sort_key(list: &[Addr]) -> String {
    list.first()
        .map(|a| {
            a.name
                .clone()
                .unwrap_or_else(|| a.email.clone())
                .to_lowercase()
        })
        .unwrap_or_default()
}

impl Mailbox {
    /// Appends one message to a folder.
    pub fn append(
        &mut self,
        folder: FolderId,
        raw: &[u8],
        options: &AppendOptions,
    ) -> Result<Appended> {
        let mut out = self.append_batch(folder, &[(raw, options.clone())])?;
        out.pop()
            .ok_or_else(|| Error::Corrupt("append returned nothing".into()))
    }

    /// Appends several messages in one transaction: all or none. Bulk
    /// imports use it; it is several times faster than one at a time.
    pub fn append_batch(
        &mut self,
        folder: FolderId,
        messages: &[(&[u8], AppendOptions)],
    ) -> Result<Vec<Appended>> {
        let limit = self.options.max_message_size;
        let mut adding = 0u64;
        for (raw, _) in messages {
            if raw.is_empty() {
                return Err(Error::Invalid("a message cannot be empty".into()));
            }
            if raw.len() as u64 > limit {
                return Err(Error::TooLarge {
                    size: raw.len() as u64,
                    limit,
                });
            }
            adding += raw.len() as u64;
        }
        if let Some(quota) = self.options.quota {
            let used = self.usage()?;
            if used + adding > quota {
                return Err(Error::OverQuota {
                    used,
                    adding,
                    quota,
                });
            }
        }
        let compress = self.options.compress;
        let prepared = prepare_all(messages, compress);
        let appended = self.write(|tx, modseq| {
            folders::by_id(tx, folder)?;
            let appended = prepared
                .iter()
                .map(|p| store(tx, folder, p, modseq, compress))
                .collect::<Result<Vec<_>>>()?;
            // Index last, all together: FTS5 flushes its pending terms to
            // disk whenever another statement opens a savepoint, so
            // interleaving index inserts with the other writes would write
            // (and later merge) one tiny index segment per message.
            for (p, a) in prepared.iter().zip(&appended) {
                if !a.duplicate {
                    index(tx, a.email_id, p)?;
                }
            }
            Ok(appended)
        })?;
        let deferred = prepared.iter().zip(&appended);
        let deferred = deferred
            .filter(|(p, a)| p.grams.is_none() && !a.duplicate)
            .count();
        self.index_backlog.set(self.index_backlog.get() + deferred);
        Ok(appended)
    }
}

fn store(
    tx: &Transaction<'_>,
    folder: FolderId,
    p: &Prepared<'_>,
    modseq: ModSeq,
    compress: bool,
) -> Result<Appended> {
    if let Some(r) = &p.options.delivery_ref
        && let Some(existing) = find_delivery(tx, folder, r)?
    {
        return Ok(existing);
    }
    let a = &p.analysis;
    let thread_id = resolve_thread(tx, a)?;
    let thread_had_emails: bool = tx
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM emails WHERE thread_id = ?1)")?
        .query_row([thread_id], |r| r.get(0))?;
    let received = time::iso(p.options.received_at.unwrap_or_else(time::now));
    tx.prepare_cached(
        "INSERT INTO emails (thread_id, message_id, in_reply_to, references_ids, subject,
            sort_subject, from_list, sender_list, reply_to_list, to_list, cc_list, bcc_list,
            sort_from, sort_to, sent_at, sent_day, received_at, size, has_attachment, preview,
            delivery_ref, modseq)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
            ?18, ?19, ?20, ?21, ?22)",
    )?
    .execute(params![
        thread_id,
        a.message_id,
        a.in_reply_to.join(" "),
        a.references.join(" "),
        a.subject,
        a.base_subject,
        encode_addrs(&a.from),
        encode_addrs(&a.sender),
        encode_addrs(&a.reply_to),
        encode_addrs(&a.to),
        encode_addrs(&a.cc),
        encode_addrs(&a.bcc),
        sort_key(&a.from),
        sort_key(&a.to),
        a.sent_at.map(time::iso),
        a.sent_day,
        received,
        p.raw.len() as i64,
        a.has_attachment,
        a.preview,
        p.options.delivery_ref,
        modseq as i64,
    ])?;
    let email_id = tx.last_insert_rowid();
    tx.prepare_cached(
        "INSERT INTO email_bodies (email_id, compressed, skeleton) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![email_id, p.skeleton_compressed, p.skeleton])?;
    for (seq, (offset, sha, body)) in p.blobs.iter().enumerate() {
        let blob_id = upsert_blob(tx, sha, body, compress)?;
        tx.prepare_cached(
            "INSERT INTO email_blobs (email_id, seq, offset, blob_id) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![email_id, seq as i64, *offset as i64, blob_id])?;
    }
    let mut kw =
        tx.prepare_cached("INSERT OR IGNORE INTO keywords (email_id, keyword) VALUES (?1, ?2)")?;
    for k in &p.options.keywords {
        kw.execute(params![email_id, k.as_str()])?;
    }
    log_change(tx, modseq, "email", email_id, None, "created")?;
    let thread_op = if thread_had_emails {
        "updated"
    } else {
        "created"
    };
    log_change(tx, modseq, "thread", thread_id, None, thread_op)?;
    let uid = add_member(tx, folder, EmailId(email_id), modseq)?;
    Ok(Appended {
        email_id: EmailId(email_id),
        uid,
        modseq,
        duplicate: false,
    })
}

/// Stores an email's searchable text, and indexes it now (bulk appends) or
/// puts it on the index backlog (see [`flush_backlog`]).
fn index(tx: &Transaction<'_>, email: EmailId, p: &Prepared<'_>) -> Result<()> {
    let a = &p.analysis;
    let [from_t, to_t, cc_t, bcc_t] = &p.addr_texts;
    tx.prepare_cached(
        "INSERT INTO email_text (id, subject, from_text, to_text, cc_text, bcc_text, body, headers)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        email.0,
        a.subject,
        from_t,
        to_t,
        cc_t,
        bcc_t,
        a.body_text,
        a.headers_text
    ])?;
    let Some(g) = &p.grams else {
        tx.prepare_cached("INSERT INTO index_backlog (id) VALUES (?1)")?
            .execute([email.0])?;
        return Ok(());
    };
    insert_grams(tx, email.0, g)?;
    insert_words(
        tx,
        email.0,
        [&a.subject, from_t, to_t, cc_t, bcc_t, &a.body_text],
    )
}

fn insert_grams(tx: &Transaction<'_>, email: i64, g: &[String; 7]) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO email_grams (rowid, subject, from_text, to_text, cc_text, bcc_text, body, headers)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![email, g[0], g[1], g[2], g[3], g[4], g[5], g[6]])?;
    Ok(())
}

fn insert_words(tx: &Transaction<'_>, email: i64, w: [&String; 6]) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO email_words (rowid, subject, from_text, to_text, cc_text, bcc_text, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![email, w[0], w[1], w[2], w[3], w[4], w[5]])?;
    Ok(())
}

/// Indexes the oldest `limit` emails on the backlog, in one go: one FTS5
/// segment per batch instead of one per message, and nothing at all for
/// mail expunged before its turn. Returns how many emails it indexed.
pub(super) fn flush_backlog(tx: &Transaction<'_>, limit: usize) -> Result<usize> {
    let texts: Vec<(i64, [String; 7])> = tx
        .prepare_cached(
            "SELECT t.id, t.subject, t.from_text, t.to_text, t.cc_text, t.bcc_text, t.body,
                    t.headers
             FROM index_backlog b JOIN email_text t ON t.id = b.id ORDER BY b.id LIMIT ?1",
        )?
        .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
            Ok((
                r.get(0)?,
                [
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                ],
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    // Grams for every email, then words for every email: see the note on
    // FTS5's pending terms in `append_batch`.
    for (id, t) in &texts {
        insert_grams(tx, *id, &std::array::from_fn(|i| trigram_tokens(&t[i])))?;
    }
    for (id, t) in &texts {
        insert_words(tx, *id, [&t[0], &t[1], &t[2], &t[3], &t[4], &t[5]])?;
    }
    let mut done = tx.prepare_cached("DELETE FROM index_backlog WHERE id = ?1")?;
    for (id, _) in &texts {
        done.execute([id])?;
    }
    Ok(texts.len())
}

fn find_delivery(tx: &Transaction<'_>, folder: FolderId, r: &str) -> Result<Option<Appended>> {
    let found: Option<(i64, i64)> = tx
        .prepare_cached("SELECT id, modseq FROM emails WHERE delivery_ref = ?1")?
        .query_row([r], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let Some((email_id, modseq)) = found else {
        return Ok(None);
    };
    let uid: Option<u32> = tx
        .prepare_cached("SELECT uid FROM mailbox_messages WHERE folder_id = ?1 AND email_id = ?2")?
        .query_row(params![folder.0, email_id], |r| r.get(0))
        .optional()?;
    let uid = match uid {
        Some(u) => Uid::try_from(u)?,
        // Stored earlier but since moved out of this folder: still a
        // duplicate; report its UID wherever it is now.
        None => {
            let any: u32 = tx.query_row(
                "SELECT uid FROM mailbox_messages WHERE email_id = ?1 LIMIT 1",
                [email_id],
                |r| r.get(0),
            )?;
            Uid::try_from(any)?
        }
    };
    Ok(Some(Appended {
        email_id: EmailId(email_id),
        uid,
        modseq: modseq as ModSeq,
        duplicate: true,
    }))
}

/// Adds an email to a folder with the folder's next UID.
pub(crate) fn add_member(
    tx: &Transaction<'_>,
    folder: FolderId,
    email: EmailId,
    modseq: ModSeq,
) -> Result<Uid> {
    let uid: i64 = tx
        .prepare_cached(
            "UPDATE folders SET uid_next = uid_next + 1, highest_modseq = ?2
             WHERE id = ?1 RETURNING uid_next - 1",
        )?
        .query_row(params![folder.0, modseq as i64], |r| r.get(0))
        .optional()?
        .ok_or_else(|| Error::NotFound(format!("folder {}", folder.0)))?;
    if uid >= u32::MAX as i64 {
        return Err(Error::Invalid("folder has used every UID".into()));
    }
    tx.prepare_cached(
        "INSERT INTO mailbox_messages (folder_id, uid, email_id, modseq) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![folder.0, uid, email.0, modseq as i64])?;
    log_change(
        tx,
        modseq,
        "member",
        email.0,
        Some((folder, uid as u32)),
        "created",
    )?;
    Uid::try_from(uid)
}

fn upsert_blob(tx: &Transaction<'_>, sha: &[u8; 32], body: &[u8], compress: bool) -> Result<i64> {
    let existing: Option<i64> = tx
        .prepare_cached("UPDATE blobs SET refcount = refcount + 1 WHERE sha256 = ?1 RETURNING id")?
        .query_row([sha.as_slice()], |r| r.get(0))
        .optional()?;
    if let Some(id) = existing {
        return Ok(id);
    }
    let (data, compressed) = match maybe_compress(body, compress) {
        Some(c) => (std::borrow::Cow::Owned(c), true),
        None => (std::borrow::Cow::Borrowed(body), false),
    };
    tx.prepare_cached(
        "INSERT INTO blobs (sha256, size, refcount, compressed, data) VALUES (?1, ?2, 1, ?3, ?4)",
    )?
    .execute(params![
        sha.as_slice(),
        body.len() as i64,
        compressed,
        data.as_ref()
    ])?;
    Ok(tx.last_insert_rowid())
}

/// Finds the thread a message belongs to: by Message-ID links first, then
/// (for replies only) by base subject; otherwise a new thread.
fn resolve_thread(tx: &Transaction<'_>, a: &Analysis) -> Result<i64> {
    let mut lookup =
        tx.prepare_cached("SELECT thread_id FROM message_ids WHERE message_id = ?1")?;
    let linked = a
        .message_id
        .iter()
        .chain(a.in_reply_to.iter())
        .chain(a.references.iter().rev())
        .filter(|id| !id.is_empty())
        .find_map(|id| {
            lookup
                .query_row([id], |r| r.get::<_, i64>(0))
                .optional()
                .ok()
                .flatten()
        });
    let is_reply = !a.in_reply_to.is_empty()
        || !a.references.is_empty()
        || a.subject.trim().to_lowercase() != a.base_subject;
    let thread = match linked {
        Some(t) => t,
        None => {
            let by_subject = if is_reply && !a.base_subject.is_empty() {
                tx.prepare_cached(
                    "SELECT id FROM threads WHERE base_subject = ?1 ORDER BY id DESC LIMIT 1",
                )?
                .query_row([&a.base_subject], |r| r.get(0))
                .optional()?
            } else {
                None
            };
            match by_subject {
                Some(t) => t,
                None => {
                    tx.prepare_cached("INSERT INTO threads (base_subject) VALUES (?1)")?
                        .execute([&a.base_subject])?;
                    tx.last_insert_rowid()
                }
            }
        }
    };
    let mut remember = tx.prepare_cached(
        "INSERT OR IGNORE INTO message_ids (message_id, thread_id) VALUES (?1, ?2)",
    )?;
    for id in a
        .message_id
        .iter()
        .chain(a.in_reply_to.iter())
        .chain(a.references.iter())
        .filter(|id| !id.is_empty())
    {
        remember.execute(params![id, thread])?;
    }
    Ok(thread)
}
