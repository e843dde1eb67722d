//! Backups on the primary: an encrypted, verified copy stored under a
//! random name; an unchanged mailbox not stored twice; writers going on
//! during a backup of a large mailbox, which is a consistent snapshot; a
//! run killed half-way leaving nothing listed; retention, deletion,
//! download and restore.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use cofre_storage::backup::{self, BackupOutcome};
use cofre_storage::db::{self, Mode};
use cofre_storage::mailbox::{AppendOptions, Filter, Query};
use cofre_storage::primary::{Primary, PrimaryConfig, SessionId};
use cofre_storage::{AliasAddress, Error, Role};

fn primary(dir: &std::path::Path) -> (Primary, SessionId) {
    primary_with(dir, PrimaryConfig::default())
}

fn primary_with(dir: &std::path::Path, config: PrimaryConfig) -> (Primary, SessionId) {
    let store = common::store(dir);
    let address = AliasAddress::try_from("ana@example.com").unwrap();
    let (_, pw) = store.create_alias(&address, None).unwrap();
    PASSWORD.with(|p| *p.borrow_mut() = Some(pw.clone()));
    let p = Primary::new(Arc::new(store), config);
    let s = p.login(&address, &pw).unwrap();
    (p, s)
}

thread_local! {
    /// The test alias's password, for reading backups with its key.
    static PASSWORD: std::cell::RefCell<Option<cofre_storage::Password>> = const { std::cell::RefCell::new(None) };
}

fn append(p: &Primary, s: SessionId, raw: Vec<u8>) {
    p.write(s, move |mb| {
        let inbox = mb.folder_by_role(Role::Inbox)?.id;
        mb.append(inbox, &raw, &AppendOptions::default())
    })
    .unwrap();
}

/// Appends `n` messages, subjects `"{subject} {i}"`.
fn fill(p: &Primary, s: SessionId, n: usize, subject: &str, body: &str) {
    for i in 0..n {
        append(
            p,
            s,
            common::msg("x@y.z", "ana@example.com", &format!("{subject} {i}"), body),
        );
    }
}

/// None of `needles`, the address or SQLite's header is in `bytes`.
fn assert_ciphertext_only(bytes: &[u8], needles: &[&[u8]]) {
    for needle in needles
        .iter()
        .chain(&[&b"ana@example.com"[..], b"SQLite format"])
    {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == *needle),
            "{} in the backup",
            String::from_utf8_lossy(needle)
        );
    }
}

/// The backup file and the mailbox's data key.
fn file_and_key(p: &Primary, id: &str) -> (std::path::PathBuf, cofre_storage::SecretKey) {
    let address = AliasAddress::try_from("ana@example.com").unwrap();
    let alias = p.store().alias(&address).unwrap();
    let path = backup::path_of(&p.store().backup_dir(&alias), id);
    let pw = PASSWORD.with(|p| p.borrow().clone()).unwrap();
    let key = p.store().unlock(&address, &pw).unwrap().keys.data_key;
    (path, key)
}

/// How many emails a backup file holds, read without changing a byte.
fn emails_in(path: &std::path::Path, key: &cofre_storage::SecretKey) -> i64 {
    let conn = db::open_read_only(path, key).unwrap();
    conn.query_row("SELECT count(*) FROM emails", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_backup_is_an_encrypted_verified_copy_stored_once_per_change() {
    let tmp = tempfile::tempdir().unwrap();
    let (p, s) = primary(tmp.path());
    fill(&p, s, 20, "plaintext-marker", "secret body words");
    let BackupOutcome::Stored(first) = p.backup(s).unwrap() else {
        panic!("the first backup is stored");
    };
    assert_eq!(first.id.len(), 32, "a random id, not the address");
    let (path, key) = file_and_key(&p, &first.id);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len() as u64, first.size);
    assert_eq!(backup::sha256_file(&path).unwrap(), first.sha256);
    assert_ciphertext_only(&bytes, &[b"plaintext-marker", b"secret body"]);
    assert_eq!(
        emails_in(&path, &key),
        20,
        "it opens with the key and holds the mail"
    );
    let wrong = cofre_storage::SecretKey::from_bytes([7; 32]);
    assert!(matches!(
        db::open(&path, Some(&wrong), Mode::Existing),
        Err(Error::WrongKey(_))
    ));

    // The copies' bytes never repeat (a fresh IV per page), so the
    // mailbox's change marker, not their hash, tells an unchanged mailbox.
    let (path2, _) = file_and_key(&p, &first.id);
    let twin = path2.with_extension("twin");
    backup::snapshot(
        &p.store().mailbox_path(
            &p.store()
                .alias(&AliasAddress::try_from("ana@example.com").unwrap())
                .unwrap(),
        ),
        &key,
        &twin,
    )
    .unwrap();
    assert_ne!(backup::sha256_file(&twin).unwrap(), first.sha256);
    std::fs::remove_file(&twin).unwrap();
    // Unchanged: not stored again.
    let again = p.backup(s).unwrap();
    assert_eq!(again, BackupOutcome::Unchanged(first.clone()));
    assert_eq!(p.backups(s).unwrap(), std::slice::from_ref(&first));
    // One changed message: a new version beside the first.
    p.write(s, |mb| {
        let e = mb.search(&Query::everywhere(Filter::All))?[0].email_id;
        mb.set_keywords(&[e], &["$seen".try_into()?], &[])
    })
    .unwrap();
    let BackupOutcome::Stored(second) = p.backup(s).unwrap() else {
        panic!("a change makes a new version");
    };
    assert_ne!(second.sha256, first.sha256);
    assert_eq!(p.backups(s).unwrap(), [first, second]);
}

#[test]
fn writers_go_on_during_a_backup_which_is_a_consistent_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let (p, s) = primary(tmp.path());
    let before = 2000;
    let batch: Vec<Vec<u8>> = (0..before)
        .map(|i| {
            common::msg(
                "x@y.z",
                "ana@example.com",
                &format!("old {i}"),
                &"words ".repeat(400),
            )
        })
        .collect();
    p.write(s, move |mb| {
        let inbox = mb.folder_by_role(Role::Inbox)?.id;
        let items: Vec<(&[u8], AppendOptions)> = batch
            .iter()
            .map(|r| (r.as_slice(), AppendOptions::default()))
            .collect();
        mb.append_batch(inbox, &items)
    })
    .unwrap();
    let p = Arc::new(p);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (p, done) = (Arc::clone(&p), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut n = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                append(
                    &p,
                    s,
                    common::msg("x@y.z", "ana@example.com", &format!("new {n}"), "during"),
                );
                n += 1;
            }
            n
        })
    };
    // Let the writer get going, then back up under it.
    while p
        .call(s, |mb| {
            Ok(mb.search(&Query::everywhere(Filter::All))?.len())
        })
        .unwrap()
        < before + 3
    {
        std::thread::yield_now();
    }
    let outcome = p.backup(s).unwrap();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let written = writer.join().unwrap();
    let BackupOutcome::Stored(b) = outcome else {
        panic!("stored")
    };
    // No write lost.
    let live = p
        .call(s, |mb| {
            Ok(mb.search(&Query::everywhere(Filter::All))?.len())
        })
        .unwrap();
    assert_eq!(live, before + written);
    // The copy is one moment of the mailbox: every email it holds is
    // whole (its body readable), counters agree with the rows, and it
    // holds the old mail and a prefix of the new.
    let (path, key) = file_and_key(&p, &b.id);
    let copy = cofre_storage::Mailbox::open(&path, &key, Default::default()).unwrap();
    let all = copy.search(&Query::everywhere(Filter::All)).unwrap();
    assert!(
        all.len() >= before && all.len() <= before + written,
        "{}",
        all.len()
    );
    let inbox = copy.folder_by_role(Role::Inbox).unwrap();
    assert_eq!(inbox.total as usize, all.len(), "counters agree with rows");
    let news: Vec<usize> = copy
        .summaries(&all.iter().map(|h| h.email_id).collect::<Vec<_>>())
        .unwrap()
        .iter()
        .filter_map(|e| e.subject.strip_prefix("new ").and_then(|n| n.parse().ok()))
        .collect();
    let mut sorted = news.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (0..news.len()).collect::<Vec<_>>(),
        "a prefix of the writes"
    );
    for h in all.iter().step_by(97) {
        copy.raw(h.email_id).unwrap();
    }
}

#[test]
fn a_run_killed_half_way_leaves_nothing_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let (p, s) = primary(tmp.path());
    append(
        &p,
        s,
        common::msg("x@y.z", "ana@example.com", "one", "body"),
    );
    let address = AliasAddress::try_from("ana@example.com").unwrap();
    let dir = p.store().backup_dir(&p.store().alias(&address).unwrap());
    std::fs::create_dir_all(&dir).unwrap();
    // What a process killed during VACUUM INTO leaves behind.
    let stale = dir.join(".tmp-0123456789abcdef0123456789abcdef");
    std::fs::write(&stale, b"half a snapshot").unwrap();
    assert!(p.backups(s).unwrap().is_empty());
    let BackupOutcome::Stored(b) = p.backup(s).unwrap() else {
        panic!("stored")
    };
    assert!(!stale.exists(), "the stale temporary file is gone");
    let files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files.contains(&format!("{}.bak", b.id)));
    assert!(files.contains(&backup::LOCK_FILE.to_string()));
}

/// The names of the files in the alias's backup folder, sorted.
fn files_in_backup_dir(p: &Primary) -> Vec<String> {
    let address = AliasAddress::try_from("ana@example.com").unwrap();
    let dir = p.store().backup_dir(&p.store().alias(&address).unwrap());
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn stored(p: &Primary, s: SessionId) -> backup::BackupRecord {
    match p.backup(s).unwrap() {
        BackupOutcome::Stored(b) => b,
        other => panic!("expected a new version, got {other:?}"),
    }
}

fn emails_now(p: &Primary, s: SessionId) -> usize {
    p.call(s, |mb| mb.search(&Query::everywhere(Filter::All)))
        .unwrap()
        .len()
}

#[test]
fn retention_lets_old_versions_go_with_their_files() {
    let tmp = tempfile::tempdir().unwrap();
    let config = PrimaryConfig {
        retention: backup::Retention {
            last: 2,
            daily: 1,
            weekly: 1,
        },
        ..PrimaryConfig::default()
    };
    let (p, s) = primary_with(tmp.path(), config);
    let mut ids = Vec::new();
    for i in 0..4 {
        append(
            &p,
            s,
            common::msg("x@y.z", "ana@example.com", &format!("m{i}"), "b"),
        );
        ids.push(stored(&p, s).id);
    }
    let listed: Vec<String> = p.backups(s).unwrap().into_iter().map(|b| b.id).collect();
    assert_eq!(listed, ids[2..], "the two most recent (all of today's)");
    let mut want: Vec<String> = ids[2..].iter().map(|id| format!("{id}.bak")).collect();
    want.push(backup::LOCK_FILE.to_string());
    want.sort();
    assert_eq!(
        files_in_backup_dir(&p),
        want,
        "pruned versions leave no file"
    );
}

#[test]
fn a_backup_is_downloaded_in_pieces_and_deleted_with_its_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (p, s) = primary(tmp.path());
    append(
        &p,
        s,
        common::msg("x@y.z", "ana@example.com", "one", "body"),
    );
    let b = stored(&p, s);
    let (path, _) = file_and_key(&p, &b.id);
    let mut got = Vec::new();
    loop {
        let piece = p.backup_bytes(s, &b.id, got.len() as u64, 1000).unwrap();
        if piece.is_empty() {
            break;
        }
        assert!(piece.len() <= 1000);
        got.extend(piece);
    }
    assert_eq!(
        got,
        std::fs::read(&path).unwrap(),
        "the download is the file"
    );
    assert!(matches!(
        p.backup_bytes(s, "0123", 0, 10),
        Err(Error::NotFound(_))
    ));
    p.delete_backup(s, &b.id).unwrap();
    assert!(p.backups(s).unwrap().is_empty());
    assert!(!path.exists());
    assert!(matches!(p.delete_backup(s, &b.id), Err(Error::NotFound(_))));
}

#[test]
fn a_restore_puts_a_version_back_and_holds_the_replaced_mailbox_until_confirmed() {
    let tmp = tempfile::tempdir().unwrap();
    let (p, s) = primary(tmp.path());
    for i in 0..5 {
        append(
            &p,
            s,
            common::msg("x@y.z", "ana@example.com", &format!("old {i}"), "b"),
        );
    }
    let five = stored(&p, s);
    for i in 0..3 {
        append(
            &p,
            s,
            common::msg("x@y.z", "ana@example.com", &format!("new {i}"), "b"),
        );
    }
    let (validity, modseq) = p
        .call(s, |mb| {
            Ok((
                mb.folder_by_role(Role::Inbox)?.uid_validity,
                mb.highest_modseq()?,
            ))
        })
        .unwrap();
    assert_eq!(emails_now(&p, s), 8);

    let held = p.restore(s, &five.id).unwrap();
    assert!(held.held, "the replaced mailbox is held");
    assert_eq!(emails_now(&p, s), 5, "the five messages of the version");
    let (validity2, modseq2, changes) = p
        .call(s, move |mb| {
            Ok((
                mb.folder_by_role(Role::Inbox)?.uid_validity,
                mb.highest_modseq()?,
                mb.changes_since(modseq)?,
            ))
        })
        .unwrap();
    assert!(validity2 > validity, "IMAP clients see a new UIDVALIDITY");
    assert!(
        modseq2 > modseq,
        "MODSEQs go on past the replaced mailbox's"
    );
    assert!(
        changes.log_since > modseq,
        "changes since a state before the restore cannot be told"
    );
    // The replaced file is unlinked off the restore's path, and soon.
    let alias = p
        .store()
        .alias(&AliasAddress::try_from("ana@example.com").unwrap())
        .unwrap();
    let mailbox = p.store().mailbox_path(&alias);
    let replaced = mailbox.with_extension(cofre_storage::primary::REPLACED);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while replaced.exists() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(!replaced.exists(), "the replaced file is removed");
    assert!(
        !mailbox
            .with_extension(cofre_storage::primary::STAGED)
            .exists()
    );
    // The mailbox is writable again, and what it was is in the held copy.
    append(&p, s, common::msg("x@y.z", "ana@example.com", "after", "b"));
    assert_eq!(emails_now(&p, s), 6);
    let (held_path, key) = file_and_key(&p, &held.id);
    assert_eq!(emails_in(&held_path, &key), 8);
    let listed = p.backups(s).unwrap();
    assert!(listed.iter().any(|b| b.id == held.id && b.held));

    // Held, it outlives the retention; confirmed, it is a version again.
    p.confirm_restore(s).unwrap();
    assert!(p.backups(s).unwrap().iter().all(|b| !b.held));

    // A damaged version is refused before anything changes.
    let (five_path, _) = file_and_key(&p, &five.id);
    let mut bytes = std::fs::read(&five_path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&five_path, &bytes).unwrap();
    assert!(matches!(p.restore(s, &five.id), Err(Error::Corrupt(_))));
    assert_eq!(emails_now(&p, s), 6, "the live mailbox is untouched");
}

#[test]
fn the_daily_round_backs_up_live_mailboxes_whose_latest_is_old() {
    let tmp = tempfile::tempdir().unwrap();
    let (p, s) = primary(tmp.path());
    append(&p, s, common::msg("x@y.z", "ana@example.com", "one", "b"));
    let round = p.backup_due(86_400);
    assert_eq!(round.len(), 1);
    assert_eq!(round[0].0.as_str(), "ana@example.com");
    assert!(matches!(round[0].1, Ok(BackupOutcome::Stored(_))));
    assert!(p.backup_due(86_400).is_empty(), "taken today: not due");
    // Due again (age 0), but unchanged: nothing copied.
    let round = p.backup_due(0);
    assert!(matches!(round[0].1, Ok(BackupOutcome::Unchanged(_))));
    assert_eq!(p.backups(s).unwrap().len(), 1);
    // No session, no key: nothing to back up.
    p.logout(s);
    assert!(p.backup_due(0).is_empty());
}

#[test]
fn deleting_an_alias_leaves_nothing_of_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (p, s) = primary(tmp.path());
    append(&p, s, common::msg("x@y.z", "ana@example.com", "one", "b"));
    stored(&p, s);
    append(&p, s, common::msg("x@y.z", "ana@example.com", "two", "b"));
    stored(&p, s);
    let address = AliasAddress::try_from("ana@example.com").unwrap();
    let alias = p.store().alias(&address).unwrap();
    p.store()
        .enqueue(&address, b"Subject: queued\r\n\r\nsealed\r\n")
        .unwrap();
    // What a restore cut short leaves beside the mailbox: the staged
    // copy, or the replaced file not yet unlinked.
    for cut_short in [
        cofre_storage::primary::STAGED,
        cofre_storage::primary::REPLACED,
    ] {
        let left = p.store().mailbox_path(&alias).with_extension(cut_short);
        std::fs::write(&left, b"a restore's file").unwrap();
    }
    p.logout(s);
    p.shutdown();
    p.store().delete_alias(&address).unwrap();

    let mut left = Vec::new();
    let mut dirs = vec![tmp.path().to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path.to_string_lossy().contains(&alias.mailbox_id) {
                left.push(path.clone());
            }
            if path.is_dir() {
                dirs.push(path);
            }
        }
    }
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(p.store().directory().backups(alias.id).unwrap().is_empty());
}

#[test]
fn a_backup_task_of_another_process_is_waited_for_not_raced() {
    let tmp = tempfile::tempdir().unwrap();
    let (p, s) = primary(tmp.path());
    append(&p, s, common::msg("x@y.z", "ana@example.com", "one", "b"));
    let address = AliasAddress::try_from("ana@example.com").unwrap();
    let dir = p.store().backup_dir(&p.store().alias(&address).unwrap());
    std::fs::create_dir_all(&dir).unwrap();
    // Another process (a command-line run beside the server) holds the
    // mailbox's backup lock.
    let other = std::fs::File::create(dir.join(".lock")).unwrap();
    other.lock().unwrap();
    assert!(matches!(p.backup(s), Err(Error::Unavailable(_))));
    drop(other);
    let b = stored(&p, s);
    assert_eq!(
        files_in_backup_dir(&p),
        [".lock".to_string(), format!("{}.bak", b.id)]
    );
}

/// A store that cannot be reached: the run fails with "unavailable",
/// nothing is listed, no temporary copy stays on disk, the mailbox goes on
/// — and the alias cannot be deleted while its objects might remain.
#[test]
fn an_unreachable_store_lists_nothing_and_keeps_the_mailbox() {
    let tmp = tempfile::tempdir().unwrap();
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bucket = cofre_storage::s3::Bucket::new(cofre_storage::s3::S3Config {
        endpoint: format!("http://127.0.0.1:{port}"),
        bucket: "cofre".into(),
        region: "us-east-1".into(),
        access_key: "k".into(),
        secret_key: zeroize::Zeroizing::new("s".into()),
        prefix: String::new(),
        part_size: cofre_storage::s3::MIN_PART_SIZE,
        path_style: true,
        ca_file: None,
    })
    .unwrap();
    let store = cofre_storage::Store::open(
        tmp.path(),
        cofre_storage::StoreConfig {
            kdf: cofre_storage::KdfParams::INSECURE_FOR_TESTS,
            backup_store: Some(Arc::new(bucket)),
            ..cofre_storage::StoreConfig::default()
        },
    )
    .unwrap();
    let address = AliasAddress::try_from("ana@example.com").unwrap();
    let (_, pw) = store.create_alias(&address, None).unwrap();
    let p = Primary::new(Arc::new(store), PrimaryConfig::default());
    let s = p.login(&address, &pw).unwrap();
    append(
        &p,
        s,
        common::msg("x@y.z", "ana@example.com", "one", "body"),
    );

    let err = p.backup(s).unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    assert!(p.backups(s).unwrap().is_empty(), "nothing listed");
    assert_eq!(
        files_in_backup_dir(&p),
        vec![backup::LOCK_FILE.to_string()],
        "no temporary copy left"
    );
    append(
        &p,
        s,
        common::msg("x@y.z", "ana@example.com", "two", "body"),
    );
    assert_eq!(emails_now(&p, s), 2);
    assert!(matches!(
        p.store().delete_alias(&address),
        Err(Error::Unavailable(_))
    ));
    assert!(
        p.store().alias(&address).is_ok(),
        "the alias is still there"
    );
}

#[test]
fn a_backup_is_the_mailbox_file_itself_copied_under_a_pinned_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let (p, s) = primary(tmp.path());
    fill(&p, s, 50, "m", "body");
    let b = stored(&p, s);
    // Nothing written since: the live file is what was copied, byte for
    // byte (already encrypted; no page decrypted and encrypted again).
    let (path, _) = file_and_key(&p, &b.id);
    let live = p.store().mailbox_path(
        &p.store()
            .alias(&AliasAddress::try_from("ana@example.com").unwrap())
            .unwrap(),
    );
    assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(&live).unwrap());
}

#[test]
fn a_mailbox_whose_structure_is_damaged_is_not_backed_up() {
    let tmp = tempfile::tempdir().unwrap();
    let (p, s) = primary(tmp.path());
    fill(&p, s, 10, "m", "body");
    let address = AliasAddress::try_from("ana@example.com").unwrap();
    let live = p.store().mailbox_path(&p.store().alias(&address).unwrap());
    let pw = PASSWORD.with(|p| p.borrow().clone()).unwrap();
    let key = p.store().unlock(&address, &pw).unwrap().keys.data_key;
    // Damage no page's HMAC can show: SQLite itself writes an index whose
    // order its schema then contradicts (as a bug in SQLite, or in us,
    // could). `integrity_check` finds the index out of order.
    {
        let conn = db::open(&live, Some(&key), Mode::Existing).unwrap();
        conn.execute_batch(
            "CREATE TABLE scratch (a INTEGER);
             CREATE INDEX scratch_a ON scratch (a);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200)
               INSERT INTO scratch SELECT i FROM n;
             PRAGMA writable_schema = ON;
             UPDATE sqlite_schema SET sql = 'CREATE INDEX scratch_a ON scratch (a DESC)'
               WHERE name = 'scratch_a';
             PRAGMA writable_schema = OFF;",
        )
        .unwrap();
    }
    append(&p, s, common::msg("x@y.z", "ana@example.com", "later", "b"));
    assert!(
        matches!(p.backup(s), Err(Error::Corrupt(_))),
        "a copy that fails integrity_check is not a backup"
    );
    assert!(p.backups(s).unwrap().is_empty(), "nothing is listed");
    assert_eq!(
        files_in_backup_dir(&p),
        vec![backup::LOCK_FILE.to_string()],
        "no copy left, temporary or kept"
    );
}

#[test]
fn a_pinned_snapshot_keeps_every_checkpoint_off_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.sqlite");
    let key = cofre_storage::SecretKey::generate();
    let mut mb = cofre_storage::Mailbox::create(&path, &key, Default::default()).unwrap();
    let inbox = mb.folder_by_role(Role::Inbox).unwrap().id;
    mb.append(
        inbox,
        &common::msg("x@y.z", "a@b.c", "before", "body"),
        &AppendOptions::default(),
    )
    .unwrap();
    let reader = backup::open_reader(&path, &key).unwrap();
    let (_, pinned) = backup::checkpoint(&mb, reader).unwrap();
    let pinned = pinned.expect("nobody else reads: the whole WAL folds in");
    let file = std::fs::read(&path).unwrap();
    // Past the automatic checkpoint's 1,000 pages, and a checkpoint asked
    // for: none of it reaches the file while the snapshot is pinned.
    for i in 0..400 {
        mb.append(
            inbox,
            &common::msg(
                "x@y.z",
                "a@b.c",
                &format!("during {i}"),
                &"words ".repeat(2000),
            ),
            &AppendOptions::default(),
        )
        .unwrap();
    }
    assert!(
        !backup::fold_wal(&mb).unwrap(),
        "the pinned reader keeps the WAL out"
    );
    assert!(std::fs::read(&path).unwrap() == file, "the file held still");
    drop(pinned);
    assert!(backup::fold_wal(&mb).unwrap());
    assert!(
        std::fs::read(&path).unwrap() != file,
        "the writes went in after"
    );
}

/// SQLCipher's own page check of a file: the pages it reports failing.
fn sqlcipher_page_failures(path: &std::path::Path, key: &cofre_storage::SecretKey) -> usize {
    let conn = db::open_read_only(path, key).unwrap();
    let mut stmt = conn.prepare("PRAGMA cipher_integrity_check").unwrap();
    stmt.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .count()
}

#[test]
fn pages_are_authenticated_as_sqlcipher_does_and_a_damaged_one_stops_the_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let (p, s) = primary(tmp.path());
    fill(&p, s, 30, "m", &"words ".repeat(300));
    let b = stored(&p, s);
    let (path, key) = file_and_key(&p, &b.id);
    let out = tmp.path().join("copy");
    // Ours and SQLCipher's agree on a whole file: every page passes.
    assert_eq!(sqlcipher_page_failures(&path, &key), 0);
    let sha = cofre_storage::pages::copy_checked(&path, &out, Some(&key)).unwrap();
    assert_eq!(sha, b.sha256);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&path).unwrap());
    // One bit flipped, in page 1 (after the salt) or any other: both
    // refuse it.
    let bytes = std::fs::read(&path).unwrap();
    let pages = bytes.len() / cofre_storage::pages::PAGE_SIZE;
    for at in [20, bytes.len() / 2, bytes.len() - 1] {
        let mut damaged = bytes.clone();
        damaged[at] ^= 1;
        let file = tmp.path().join("damaged");
        std::fs::write(&file, &damaged).unwrap();
        let err = cofre_storage::pages::copy_checked(&file, &out, Some(&key)).unwrap_err();
        let page = at / cofre_storage::pages::PAGE_SIZE + 1;
        assert!(
            matches!(&err, Error::Corrupt(m) if m == &format!("page {page} fails its HMAC")),
            "{err}"
        );
        if at != 20 {
            // (SQLCipher will not open a file whose first page fails.)
            assert_eq!(sqlcipher_page_failures(&file, &key), 1, "of {pages} pages");
        }
    }
    // Another key's pages fail from the first.
    let wrong = cofre_storage::SecretKey::from_bytes([7; 32]);
    assert!(cofre_storage::pages::copy_checked(&path, &out, Some(&wrong)).is_err());
}

#[test]
fn a_mailbox_mostly_of_free_pages_is_backed_up_compacted() {
    let tmp = tempfile::tempdir().unwrap();
    let (p, s) = primary(tmp.path());
    fill(&p, s, 200, "m", &"words ".repeat(2000));
    // Most of the mail deleted: its pages stay in the file, free.
    p.write(s, |mb| {
        let all: Vec<_> = mb
            .search(&Query::everywhere(Filter::All))?
            .iter()
            .map(|h| h.email_id)
            .collect();
        mb.destroy_emails(&all[10..])
    })
    .unwrap();
    let b = stored(&p, s);
    let live = p.store().mailbox_path(
        &p.store()
            .alias(&AliasAddress::try_from("ana@example.com").unwrap())
            .unwrap(),
    );
    let live_size = std::fs::metadata(&live).unwrap().len();
    assert!(
        b.size * 2 < live_size,
        "VACUUM INTO left the free pages behind: {} of {live_size} bytes",
        b.size
    );
    let (path, key) = file_and_key(&p, &b.id);
    // `VACUUM INTO` writes the copy encrypted under the mailbox's key.
    assert_ciphertext_only(
        &std::fs::read(&path).unwrap(),
        &[b"words words", b"Subject: m"],
    );
    assert_eq!(emails_in(&path, &key), 10);
    // Such a copy restores like any other (its pages checked on the way).
    append(
        &p,
        s,
        common::msg("x@y.z", "ana@example.com", "after", "body"),
    );
    p.restore(s, &b.id).unwrap();
    assert_eq!(emails_now(&p, s), 10);
}
