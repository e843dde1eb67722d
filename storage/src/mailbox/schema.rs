//! The mailbox schema and its forward-only migrations.
//!
//! `PRAGMA user_version` records how many entries of [`MIGRATIONS`] a file has
//! had applied. Opening a file applies the rest, each in its own transaction.
//! Entries are never edited once released: a change is a new entry.

use rusqlite::Connection;

use crate::error::{Error, Result};

/// Every migration, oldest first. Version N means the first N were applied.
pub const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6, V7];

/// The schema version this build writes.
pub const CURRENT: i64 = MIGRATIONS.len() as i64;

/// Version 1: folders, emails, membership, keywords, threads, deduplicated
/// blobs, the change log and the substring (trigram) index.
const V1: &str = r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO meta (key, value) VALUES ('modseq', 1), ('next_uid_validity', 0);

CREATE TABLE folders (
    id             INTEGER PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    role           TEXT UNIQUE,
    uid_validity   INTEGER NOT NULL,
    uid_next       INTEGER NOT NULL DEFAULT 1,
    highest_modseq INTEGER NOT NULL,
    subscribed     INTEGER NOT NULL DEFAULT 1,
    sort_order     INTEGER NOT NULL DEFAULT 0,
    created_at     TEXT NOT NULL
);

CREATE TABLE threads (
    id           INTEGER PRIMARY KEY,
    base_subject TEXT NOT NULL
);
CREATE INDEX threads_base_subject ON threads (base_subject);

-- Message-IDs seen in this mailbox (own and referenced), for threading.
CREATE TABLE message_ids (
    message_id TEXT PRIMARY KEY,
    thread_id  INTEGER NOT NULL REFERENCES threads (id)
) WITHOUT ROWID;

CREATE TABLE emails (
    id             INTEGER PRIMARY KEY,
    thread_id      INTEGER NOT NULL REFERENCES threads (id),
    message_id     TEXT,
    in_reply_to    TEXT NOT NULL DEFAULT '',
    references_ids TEXT NOT NULL DEFAULT '',
    subject        TEXT NOT NULL DEFAULT '',
    sort_subject   TEXT NOT NULL DEFAULT '',
    from_list      TEXT NOT NULL DEFAULT '',
    sender_list    TEXT NOT NULL DEFAULT '',
    reply_to_list  TEXT NOT NULL DEFAULT '',
    to_list        TEXT NOT NULL DEFAULT '',
    cc_list        TEXT NOT NULL DEFAULT '',
    bcc_list       TEXT NOT NULL DEFAULT '',
    sort_from      TEXT NOT NULL DEFAULT '',
    sort_to        TEXT NOT NULL DEFAULT '',
    sent_at        TEXT,
    sent_day       TEXT,
    received_at    TEXT NOT NULL,
    size           INTEGER NOT NULL,
    has_attachment INTEGER NOT NULL DEFAULT 0,
    preview        TEXT NOT NULL DEFAULT '',
    delivery_ref   TEXT UNIQUE,
    modseq         INTEGER NOT NULL
);
CREATE INDEX emails_thread ON emails (thread_id);
CREATE INDEX emails_message_id ON emails (message_id);
CREATE INDEX emails_received ON emails (received_at);
CREATE INDEX emails_sent ON emails (sent_at);
CREATE INDEX emails_sent_day ON emails (sent_day);
CREATE INDEX emails_size ON emails (size);
CREATE INDEX emails_sort_subject ON emails (sort_subject);
CREATE INDEX emails_sort_from ON emails (sort_from);
CREATE INDEX emails_sort_to ON emails (sort_to);
CREATE INDEX emails_has_attachment ON emails (has_attachment);
CREATE INDEX emails_modseq ON emails (modseq);

-- The message bytes (minus deduplicated attachment bodies), apart from the
-- summary rows so that scans and lookups of `emails` stay small.
CREATE TABLE email_bodies (
    email_id   INTEGER PRIMARY KEY REFERENCES emails (id) ON DELETE CASCADE,
    compressed INTEGER NOT NULL DEFAULT 0,
    skeleton   BLOB NOT NULL
);

CREATE TABLE keywords (
    email_id INTEGER NOT NULL REFERENCES emails (id) ON DELETE CASCADE,
    keyword  TEXT NOT NULL,
    PRIMARY KEY (email_id, keyword)
) WITHOUT ROWID;
CREATE INDEX keywords_keyword ON keywords (keyword, email_id);

CREATE TABLE mailbox_messages (
    folder_id INTEGER NOT NULL REFERENCES folders (id) ON DELETE CASCADE,
    uid       INTEGER NOT NULL,
    email_id  INTEGER NOT NULL REFERENCES emails (id) ON DELETE CASCADE,
    modseq    INTEGER NOT NULL,
    PRIMARY KEY (folder_id, uid)
) WITHOUT ROWID;
CREATE INDEX mailbox_messages_email ON mailbox_messages (email_id);
CREATE INDEX mailbox_messages_modseq ON mailbox_messages (folder_id, modseq);

-- Attachment bodies, deduplicated by SHA-256 of their encoded bytes.
CREATE TABLE blobs (
    id         INTEGER PRIMARY KEY,
    sha256     BLOB NOT NULL UNIQUE,
    size       INTEGER NOT NULL,
    refcount   INTEGER NOT NULL,
    compressed INTEGER NOT NULL DEFAULT 0,
    data       BLOB NOT NULL
);

-- Where each blob goes back into its email's skeleton.
CREATE TABLE email_blobs (
    email_id INTEGER NOT NULL REFERENCES emails (id) ON DELETE CASCADE,
    seq      INTEGER NOT NULL,
    offset   INTEGER NOT NULL,
    blob_id  INTEGER NOT NULL REFERENCES blobs (id),
    PRIMARY KEY (email_id, seq)
) WITHOUT ROWID;
CREATE INDEX email_blobs_blob ON email_blobs (blob_id);

-- The change log: one row per changed object per write, MODSEQ-ordered.
-- kind: 'email' | 'folder' | 'member'; op: 'created' | 'updated' | 'destroyed'.
CREATE TABLE changes (
    id        INTEGER PRIMARY KEY,
    modseq    INTEGER NOT NULL,
    kind      TEXT NOT NULL,
    object_id INTEGER NOT NULL,
    folder_id INTEGER,
    uid       INTEGER,
    op        TEXT NOT NULL
);
CREATE INDEX changes_modseq ON changes (modseq);
CREATE INDEX changes_folder ON changes (folder_id, modseq);

-- The searchable text of each email, decoded. Substring checks, header
-- conditions and regular expressions read it.
CREATE TABLE email_text (
    id        INTEGER PRIMARY KEY REFERENCES emails (id) ON DELETE CASCADE,
    subject   TEXT NOT NULL,
    from_text TEXT NOT NULL,
    to_text   TEXT NOT NULL,
    cc_text   TEXT NOT NULL,
    bcc_text  TEXT NOT NULL,
    body      TEXT NOT NULL,
    headers   TEXT NOT NULL
);

-- Substring search (IMAP SEARCH semantics): an index of the case-folded
-- trigrams of each column, computed by Cofre (`search::trigram_tokens`),
-- each trigram once per column, spelled as the hex of its UTF-8 bytes. The
-- index keeps columns but no positions: a query asks for the emails whose
-- column holds every trigram of the needle, then checks `email_text`.
-- (FTS5's own trigram tokenizer hashes three-byte terms into a few thousand
-- buckets; long, distinct terms keep its pending-terms hash fast.)
CREATE VIRTUAL TABLE email_grams USING fts5 (
    subject, from_text, to_text, cc_text, bcc_text, body, headers,
    content = '', contentless_delete = 1, detail = column,
    tokenize = 'ascii'
);
INSERT INTO email_grams (email_grams, rank) VALUES ('hashsize', 4194304);
"#;

/// Version 2: a word index for JMAP's word search (which words are in which
/// field; no positions, as word search needs none), filled from the stored
/// text.
const V2: &str = r#"
CREATE VIRTUAL TABLE email_words USING fts5 (
    subject, from_text, to_text, cc_text, bcc_text, body,
    content = '', contentless_delete = 1, detail = column,
    tokenize = 'unicode61 remove_diacritics 2'
);
INSERT INTO email_words (email_words, rank) VALUES ('hashsize', 4194304);
INSERT INTO email_words (rowid, subject, from_text, to_text, cc_text, bcc_text, body)
    SELECT rowid, subject, from_text, to_text, cc_text, bcc_text, body FROM email_text;
"#;

/// Version 3: counters kept by triggers in the same transactions that
/// change what they count — the bytes the mailbox uses (quota checks and
/// usage reports read one row instead of summing every email) and each
/// folder's total and unseen messages (folder lists and IMAP STATUS read
/// them instead of counting).
const V3: &str = r#"
ALTER TABLE folders ADD COLUMN total INTEGER NOT NULL DEFAULT 0;
ALTER TABLE folders ADD COLUMN unseen INTEGER NOT NULL DEFAULT 0;
UPDATE folders SET
    total = (SELECT count(*) FROM mailbox_messages m WHERE m.folder_id = folders.id),
    unseen = (SELECT count(*) FROM mailbox_messages m WHERE m.folder_id = folders.id
        AND NOT EXISTS (SELECT 1 FROM keywords k
                        WHERE k.email_id = m.email_id AND k.keyword = '$seen'));
CREATE TRIGGER membership_insert AFTER INSERT ON mailbox_messages BEGIN
    UPDATE folders SET total = total + 1,
        unseen = unseen + NOT EXISTS (SELECT 1 FROM keywords
                                      WHERE email_id = NEW.email_id AND keyword = '$seen')
    WHERE id = NEW.folder_id;
END;
CREATE TRIGGER membership_delete AFTER DELETE ON mailbox_messages BEGIN
    UPDATE folders SET total = total - 1,
        unseen = unseen - NOT EXISTS (SELECT 1 FROM keywords
                                      WHERE email_id = OLD.email_id AND keyword = '$seen')
    WHERE id = OLD.folder_id;
END;
CREATE TRIGGER seen_insert AFTER INSERT ON keywords WHEN NEW.keyword = '$seen' BEGIN
    UPDATE folders SET unseen = unseen - 1
    WHERE id IN (SELECT folder_id FROM mailbox_messages WHERE email_id = NEW.email_id);
END;
CREATE TRIGGER seen_delete AFTER DELETE ON keywords WHEN OLD.keyword = '$seen' BEGIN
    UPDATE folders SET unseen = unseen + 1
    WHERE id IN (SELECT folder_id FROM mailbox_messages WHERE email_id = OLD.email_id);
END;
INSERT INTO meta (key, value) SELECT 'usage', COALESCE(SUM(size), 0) FROM emails;
CREATE TRIGGER emails_usage_insert AFTER INSERT ON emails BEGIN
    UPDATE meta SET value = value + NEW.size WHERE key = 'usage';
END;
CREATE TRIGGER emails_usage_delete AFTER DELETE ON emails BEGIN
    UPDATE meta SET value = value - OLD.size WHERE key = 'usage';
END;
"#;

/// Version 4: emails whose text waits for the search indexes. An append
/// stores the text (`email_text`) and a row here; the mailbox's thread
/// indexes the backlog in batches, when the mailbox is quiet, when the
/// backlog is large, and before any search, so a search never misses mail
/// (`Mailbox::flush_index`).
const V4: &str = r#"
CREATE TABLE index_backlog (
    id INTEGER PRIMARY KEY REFERENCES emails (id) ON DELETE CASCADE
);
"#;

/// Version 5: threads join the change log (kind `thread`, logged when an
/// email joins or leaves one). The log had no thread rows before, so the
/// MODSEQ at migration is recorded: thread changes since an earlier state
/// cannot be told, and JMAP says so (`cannotCalculateChanges`). A
/// mailbox that never had mail has had no thread to miss.
///
/// And uploads: bytes a client sent ahead of using them (a JMAP blob
/// upload, then `Email/import`), kept in the encrypted file for a day.
const V5: &str = r#"
INSERT INTO meta (key, value)
    SELECT 'thread_log_since', value FROM meta
    WHERE key = 'modseq' AND EXISTS (SELECT 1 FROM changes WHERE kind = 'email');
CREATE TABLE uploads (
    id         INTEGER PRIMARY KEY,
    created_at INTEGER NOT NULL,
    data       BLOB NOT NULL
);
"#;

/// Version 6: records, the account's objects that are not mail (sending
/// identities, sent submissions), as opaque bytes with the MODSEQs of
/// their creation and last change; destroyed ones keep a row without data.
const V6: &str = r#"
CREATE TABLE records (
    kind       TEXT NOT NULL,
    id         INTEGER NOT NULL,
    data       BLOB,
    created    INTEGER NOT NULL,
    modseq     INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (kind, id)
) WITHOUT ROWID;
"#;

/// Version 7: thread counts kept like the message counts. `folder_threads`
/// holds, for each folder and thread with mail in it, how many of the
/// folder's memberships are that thread's and how many of those are
/// unseen; triggers keep it in step with memberships and `$seen`, and keep
/// each folder's `threads` and `unread_threads` in step with it (a thread
/// is unread in a folder while one of its emails there is unseen). An
/// email's thread never changes once stored, and memberships are removed
/// before their email, so the triggers see every change. (No UPSERT: the
/// portable export must open in older SQLCipher tools.)
const V7: &str = r#"
CREATE TABLE folder_threads (
    folder_id INTEGER NOT NULL,
    thread_id INTEGER NOT NULL,
    emails    INTEGER NOT NULL,
    unseen    INTEGER NOT NULL,
    PRIMARY KEY (folder_id, thread_id)
) WITHOUT ROWID;
ALTER TABLE folders ADD COLUMN threads INTEGER NOT NULL DEFAULT 0;
ALTER TABLE folders ADD COLUMN unread_threads INTEGER NOT NULL DEFAULT 0;
INSERT INTO folder_threads (folder_id, thread_id, emails, unseen)
    SELECT m.folder_id, e.thread_id, count(*),
           sum(NOT EXISTS (SELECT 1 FROM keywords k
                           WHERE k.email_id = m.email_id AND k.keyword = '$seen'))
    FROM mailbox_messages m JOIN emails e ON e.id = m.email_id
    GROUP BY m.folder_id, e.thread_id;
UPDATE folders SET
    threads = (SELECT count(*) FROM folder_threads t WHERE t.folder_id = folders.id),
    unread_threads = (SELECT count(*) FROM folder_threads t
                      WHERE t.folder_id = folders.id AND t.unseen > 0);

CREATE TRIGGER folder_threads_insert AFTER INSERT ON folder_threads BEGIN
    UPDATE folders SET threads = threads + 1,
        unread_threads = unread_threads + (NEW.unseen > 0)
    WHERE id = NEW.folder_id;
END;
CREATE TRIGGER folder_threads_update AFTER UPDATE OF unseen ON folder_threads BEGIN
    UPDATE folders SET unread_threads = unread_threads + (NEW.unseen > 0) - (OLD.unseen > 0)
    WHERE id = NEW.folder_id;
END;
CREATE TRIGGER folder_threads_delete AFTER DELETE ON folder_threads BEGIN
    UPDATE folders SET threads = threads - 1,
        unread_threads = unread_threads - (OLD.unseen > 0)
    WHERE id = OLD.folder_id;
END;

CREATE TRIGGER membership_thread_insert AFTER INSERT ON mailbox_messages BEGIN
    INSERT OR IGNORE INTO folder_threads (folder_id, thread_id, emails, unseen)
        SELECT NEW.folder_id, thread_id, 0, 0 FROM emails WHERE id = NEW.email_id;
    UPDATE folder_threads SET emails = emails + 1,
        unseen = unseen + NOT EXISTS (SELECT 1 FROM keywords
                                      WHERE email_id = NEW.email_id AND keyword = '$seen')
    WHERE folder_id = NEW.folder_id
      AND thread_id = (SELECT thread_id FROM emails WHERE id = NEW.email_id);
END;
CREATE TRIGGER membership_thread_delete AFTER DELETE ON mailbox_messages BEGIN
    UPDATE folder_threads SET emails = emails - 1,
        unseen = unseen - NOT EXISTS (SELECT 1 FROM keywords
                                      WHERE email_id = OLD.email_id AND keyword = '$seen')
    WHERE folder_id = OLD.folder_id
      AND thread_id = (SELECT thread_id FROM emails WHERE id = OLD.email_id);
    DELETE FROM folder_threads
    WHERE folder_id = OLD.folder_id
      AND thread_id = (SELECT thread_id FROM emails WHERE id = OLD.email_id)
      AND emails <= 0;
END;
CREATE TRIGGER seen_thread_insert AFTER INSERT ON keywords WHEN NEW.keyword = '$seen' BEGIN
    UPDATE folder_threads SET unseen = unseen -
        (SELECT count(*) FROM mailbox_messages m
         WHERE m.email_id = NEW.email_id AND m.folder_id = folder_threads.folder_id)
    WHERE thread_id = (SELECT thread_id FROM emails WHERE id = NEW.email_id)
      AND folder_id IN (SELECT folder_id FROM mailbox_messages WHERE email_id = NEW.email_id);
END;
CREATE TRIGGER seen_thread_delete AFTER DELETE ON keywords WHEN OLD.keyword = '$seen' BEGIN
    UPDATE folder_threads SET unseen = unseen +
        (SELECT count(*) FROM mailbox_messages m
         WHERE m.email_id = OLD.email_id AND m.folder_id = folder_threads.folder_id)
    WHERE thread_id = (SELECT thread_id FROM emails WHERE id = OLD.email_id)
      AND folder_id IN (SELECT folder_id FROM mailbox_messages WHERE email_id = OLD.email_id);
END;
"#;

/// Brings a database to [`CURRENT`], refusing one from a newer build.
pub fn migrate(conn: &mut Connection) -> Result<()> {
    migrate_to(conn, CURRENT)
}

/// Applies migrations up to `target` (tests use it to build old versions).
pub fn migrate_to(conn: &mut Connection, target: i64) -> Result<()> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > CURRENT {
        return Err(Error::SchemaTooNew {
            found,
            supported: CURRENT,
        });
    }
    for version in found..target.min(CURRENT) {
        let tx = conn.transaction()?;
        tx.execute_batch(MIGRATIONS[version as usize])?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", version + 1))?;
        tx.commit()?;
    }
    Ok(())
}
