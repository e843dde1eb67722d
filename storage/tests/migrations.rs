//! Migrations run at open, forward only, from every earlier schema version,
//! and keep the data (and UIDVALIDITY/UIDs) of the version they start from.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use cofre_storage::db::{self, Mode};
use cofre_storage::mailbox::schema::{self, CURRENT};
use cofre_storage::mailbox::search::trigram_tokens;
use cofre_storage::mailbox::{Filter, Query, TextField};
use cofre_storage::{Error, Mailbox, MailboxOptions, Role, SecretKey};

/// Builds a file at `version` holding one message, written with the SQL of
/// that version (as an old build would have).
fn file_at_version(version: i64, path: &std::path::Path, key: &SecretKey) {
    let mut conn = db::open(path, Some(key), Mode::Create).unwrap();
    schema::migrate_to(&mut conn, version).unwrap();
    if version == 0 {
        return;
    }
    conn.execute_batch(
        "INSERT INTO folders (id, name, role, uid_validity, uid_next, highest_modseq, created_at)
             VALUES (1, 'INBOX', 'inbox', 1700000000, 8, 2, '2023-11-14T22:13:20Z');
         INSERT INTO threads (id, base_subject) VALUES (1, 'legacy letter');
         INSERT INTO emails (id, thread_id, subject, sort_subject, received_at, size, modseq)
             VALUES (1, 1, 'Legacy letter', 'legacy letter', '2023-11-14T22:13:20Z', 48, 2);
         INSERT INTO email_bodies (email_id, skeleton)
             VALUES (1, CAST('Subject: Legacy letter' || char(13,10,13,10) || 'written by version one' AS BLOB));
         INSERT INTO mailbox_messages (folder_id, uid, email_id, modseq) VALUES (1, 7, 1, 2);
         INSERT INTO email_text (id, subject, from_text, to_text, cc_text, bcc_text, body, headers)
             VALUES (1, 'Legacy letter', '', '', '', '', 'written by version one', 'Subject: Legacy letter');
         UPDATE meta SET value = 2 WHERE key = 'modseq';",
    )
    .unwrap();
    if version >= 2 {
        // From v2 on, appends also fill the word index.
        conn.execute_batch(
            "INSERT INTO email_words (rowid, subject, from_text, to_text, cc_text, bcc_text, body)
                 VALUES (1, 'Legacy letter', '', '', '', '', 'written by version one');",
        )
        .unwrap();
    }
    conn.execute(
        "INSERT INTO email_grams (rowid, subject, body) VALUES (1, ?1, ?2)",
        [
            trigram_tokens("Legacy letter"),
            trigram_tokens("written by version one"),
        ],
    )
    .unwrap();
}

#[test]
fn every_earlier_version_migrates_to_the_current_one() {
    const { assert!(CURRENT >= 2) };
    for version in 1..CURRENT {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.sqlite");
        let key = SecretKey::generate();
        file_at_version(version, &path, &key);
        let mb = Mailbox::open(&path, &key, MailboxOptions::default()).unwrap();
        let inbox = mb.folder_by_role(Role::Inbox).unwrap();
        assert_eq!(
            (inbox.uid_validity, inbox.uid_next),
            (1_700_000_000, 8),
            "UIDVALIDITY/UIDNEXT kept from v{version}"
        );
        let (uid, id) = mb.folder_index(inbox.id).unwrap()[0];
        assert_eq!(uid.get(), 7);
        assert_eq!(
            mb.raw(id).unwrap(),
            b"Subject: Legacy letter\r\n\r\nwritten by version one"
        );
        // The word index added in v2 was filled from the old rows.
        let hits = mb
            .search(&Query::in_folder(
                inbox.id,
                Filter::Words(TextField::Body, "version".into()),
            ))
            .unwrap();
        assert_eq!(hits.len(), 1, "word index there from v{version}");
        let hits = mb
            .search(&Query::in_folder(
                inbox.id,
                Filter::Contains(TextField::Subject, "gacy".into()),
            ))
            .unwrap();
        assert_eq!(hits.len(), 1);
        assert!(mb.highest_modseq().unwrap() >= 2);
        // The folder counters added in v3 start from the stored rows.
        assert_eq!(
            (inbox.total, inbox.unseen),
            (1, 1),
            "counters from v{version}"
        );
        // The usage counter added in v3 starts from the stored sizes.
        assert_eq!(mb.usage().unwrap(), 48, "usage counted from v{version}");
    }
}

#[test]
fn an_empty_keyed_file_migrates_from_version_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.sqlite");
    let key = SecretKey::generate();
    file_at_version(0, &path, &key);
    let mb = Mailbox::open(&path, &key, MailboxOptions::default()).unwrap();
    assert!(mb.folders().unwrap().is_empty());
    let conn = db::open(&path, Some(&key), Mode::Existing).unwrap();
    let v: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, CURRENT);
}

#[test]
fn a_file_from_a_newer_build_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.sqlite");
    let key = SecretKey::generate();
    drop(Mailbox::create(&path, &key, MailboxOptions::default()).unwrap());
    let conn = db::open(&path, Some(&key), Mode::Existing).unwrap();
    conn.execute_batch(&format!("PRAGMA user_version = {}", CURRENT + 1))
        .unwrap();
    drop(conn);
    let err = Mailbox::open(&path, &key, MailboxOptions::default()).unwrap_err();
    assert!(matches!(err, Error::SchemaTooNew { .. }), "{err}");
}
