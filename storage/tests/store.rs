//! A data directory as a whole: aliases, passwords and keys, the key cache,
//! the sealed queue and its exactly-once drain, deletion, and the export as
//! the standard `sqlcipher` tool sees it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};

use cofre_storage::store::DrainStep;
use cofre_storage::{
    AliasAddress, Error, KdfParams, Password, Role, SecretKey, Store, StoreConfig,
};

fn hash_tree(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(hash_tree(&p));
        } else {
            out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
        }
    }
    out.sort();
    out
}

#[test]
fn wrong_password_is_refused_clearly_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = common::store(tmp.path());
    let (address, _pw, u) = common::alias(&store, "hello@example.com");
    drop(store.open_mailbox(&u).unwrap());
    let before = hash_tree(tmp.path());
    let err = store
        .unlock(&address, &Password::new("not-the-password"))
        .unwrap_err();
    assert!(matches!(err, Error::WrongPassword));
    assert_eq!(err.to_string(), "wrong password");
    assert_eq!(
        hash_tree(tmp.path()),
        before,
        "a failed login changes no file"
    );
    let err = store
        .unlock(
            &AliasAddress::try_from("nobody@example.com").unwrap(),
            &Password::new("x"),
        )
        .unwrap_err();
    assert!(matches!(err, Error::NoSuchAlias(_)));
    // A wrong data key, even with the right file, fails before any write.
    let path = store.mailbox_path(&u.alias);
    let err = cofre_storage::Mailbox::open(&path, &SecretKey::generate(), Default::default())
        .unwrap_err();
    assert!(matches!(err, Error::WrongKey(_)), "{err}");
    assert_eq!(hash_tree(tmp.path()), before);
}

#[test]
fn aliases_cannot_open_each_other() {
    let tmp = tempfile::tempdir().unwrap();
    let store = common::store(tmp.path());
    let (a, pa, ua) = common::alias(&store, "a@example.com");
    let (b, pb, ub) = common::alias(&store, "b@example.com");
    assert_ne!(ua.alias.mailbox_id, ub.alias.mailbox_id);
    assert!(store.unlock(&b, &pa).is_err());
    assert!(store.unlock(&a, &pb).is_err());
    let err = cofre_storage::Mailbox::open(
        &store.mailbox_path(&ub.alias),
        &ua.keys.data_key,
        Default::default(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::WrongKey(_)));
    assert!(matches!(
        store.create_alias(&a, None),
        Err(Error::AliasExists(_))
    ));
}

#[test]
fn password_change_rewraps_without_rewriting_the_mailbox() {
    let tmp = tempfile::tempdir().unwrap();
    let store = common::store(tmp.path());
    let (address, old, u) = common::alias(&store, "hello@example.com");
    let mut mb = store.open_mailbox(&u).unwrap();
    let inbox = mb.folder_by_role(Role::Inbox).unwrap().id;
    let raw = common::msg("a@b.c", "hello@example.com", "kept", "still here");
    mb.append(inbox, &raw, &Default::default()).unwrap();
    drop(mb);
    let path = store.mailbox_path(&u.alias);
    let file_before = std::fs::read(&path).unwrap();
    let new = store.change_password(&address, &old).unwrap();
    assert_ne!(new.expose(), old.expose());
    assert_eq!(
        std::fs::read(&path).unwrap(),
        file_before,
        "mailbox untouched"
    );
    assert!(
        matches!(store.unlock(&address, &old), Err(Error::WrongPassword)),
        "old password stops working, cache included"
    );
    let u2 = store.unlock(&address, &new).unwrap();
    assert!(u2.alias.key_epoch > u.alias.key_epoch);
    let mb = store.open_mailbox(&u2).unwrap();
    let id = mb.folder_index(inbox).unwrap()[0].1;
    assert_eq!(mb.raw(id).unwrap(), raw);
    assert!(matches!(
        store.change_password(&address, &old),
        Err(Error::WrongPassword)
    ));
}

#[test]
fn the_key_cache_fills_on_unlock_refuses_a_wrong_password_and_empties_on_delete() {
    // (That a hit needs the same password and key epoch is unit-tested in
    // keys.rs; `cofre bench` measures what a hit saves.)
    let tmp = tempfile::tempdir().unwrap();
    let store = common::store(tmp.path());
    let address = AliasAddress::try_from("hello@example.com").unwrap();
    let (_, pw) = store.create_alias(&address, None).unwrap();
    assert!(store.key_cache().is_empty());
    store.unlock(&address, &pw).unwrap();
    assert_eq!(store.key_cache().len(), 1);
    let u = store.unlock(&address, &pw).unwrap();
    assert!(store.open_mailbox(&u).is_ok());
    assert!(matches!(
        store.unlock(&address, &Password::new("wrong")),
        Err(Error::WrongPassword)
    ));
    store.delete_alias(&address).unwrap();
    assert!(store.key_cache().is_empty());
}

#[test]
fn deleting_an_alias_removes_every_file() {
    let tmp = tempfile::tempdir().unwrap();
    let store = common::store(tmp.path());
    let (address, _pw, u) = common::alias(&store, "gone@example.com");
    let (_keep, _kpw, ku) = common::alias(&store, "kept@example.com");
    store
        .enqueue(
            &address,
            &common::msg("a@b.c", "gone@example.com", "q", "q"),
        )
        .unwrap();
    std::fs::create_dir_all(store.backup_dir(&u.alias)).unwrap();
    std::fs::write(store.backup_dir(&u.alias).join("b1"), b"x").unwrap();
    drop(store.open_mailbox(&u).unwrap());
    store.delete_alias(&address).unwrap();
    let names: Vec<String> = hash_tree(tmp.path()).into_iter().map(|(n, _)| n).collect();
    assert!(
        names.iter().all(|n| !n.contains(&u.alias.mailbox_id)),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n.contains(&ku.alias.mailbox_id)));
    assert!(matches!(store.alias(&address), Err(Error::NoSuchAlias(_))));
}

#[test]
fn the_directory_can_be_encrypted_with_a_master_key() {
    let tmp = tempfile::tempdir().unwrap();
    let master = SecretKey::generate();
    let config = StoreConfig {
        kdf: KdfParams::INSECURE_FOR_TESTS,
        master_key: Some(master.clone()),
        ..Default::default()
    };
    {
        let store = Store::open(tmp.path(), config.clone()).unwrap();
        store
            .create_alias(
                &AliasAddress::try_from("secret-name@example.com").unwrap(),
                None,
            )
            .unwrap();
    }
    for (name, bytes) in hash_tree(tmp.path()) {
        assert!(
            !bytes.windows(11).any(|w| w == b"secret-name"),
            "{name} shows the address"
        );
    }
    let wrong = StoreConfig {
        master_key: Some(SecretKey::generate()),
        ..config.clone()
    };
    assert!(matches!(
        Store::open(tmp.path(), wrong),
        Err(Error::WrongKey(_))
    ));
    let store = Store::open(tmp.path(), config).unwrap();
    assert_eq!(store.directory().aliases().unwrap().len(), 1);
}

#[test]
fn queued_mail_is_sealed_and_drained_into_the_inbox() {
    let tmp = tempfile::tempdir().unwrap();
    let store = common::store(tmp.path());
    let (address, _pw, u) = common::alias(&store, "hello@example.com");
    for i in 0..3 {
        store
            .enqueue(
                &address,
                &common::msg("a@b.c", "hello@example.com", &format!("queued {i}"), "x"),
            )
            .unwrap();
    }
    assert_eq!(store.queued(&address).unwrap(), 3);
    assert!(matches!(
        store.enqueue(&address, b""),
        Err(Error::Invalid(_))
    ));
    let mut mb = store.open_mailbox(&u).unwrap();
    assert_eq!(store.drain(&u, &mut mb).unwrap(), 3);
    assert_eq!(store.queued(&address).unwrap(), 0);
    assert_eq!(store.drain(&u, &mut mb).unwrap(), 0);
    let inbox = mb.folder_by_role(Role::Inbox).unwrap().id;
    let ids: Vec<_> = mb
        .folder_index(inbox)
        .unwrap()
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    let subjects: Vec<_> = mb
        .summaries(&ids)
        .unwrap()
        .into_iter()
        .map(|s| s.subject)
        .collect();
    assert_eq!(subjects, ["queued 0", "queued 1", "queued 2"]);
}

const QUEUED: usize = 70;

/// Kills a real child process at each step of the drain, then drains again:
/// every message arrives exactly once.
#[test]
fn drain_is_exactly_once_even_when_the_process_dies() {
    if let Ok(step) = std::env::var("COFRE_TEST_CRASH_AT") {
        return crash_child(&step);
    }
    for step in ["opened", "appended", "removed"] {
        let tmp = tempfile::tempdir().unwrap();
        let store = common::store(tmp.path());
        let (address, pw, _) = common::alias(&store, "hello@example.com");
        for i in 0..QUEUED {
            store
                .enqueue(
                    &address,
                    &common::msg("a@b.c", "hello@example.com", &format!("n{i}"), "x"),
                )
                .unwrap();
        }
        drop(store);
        let status = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "drain_is_exactly_once_even_when_the_process_dies",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("COFRE_TEST_CRASH_AT", step)
            .env("COFRE_TEST_DIR", tmp.path())
            .env("COFRE_TEST_PASSWORD", pw.expose())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(!status.success(), "the child must die at {step}");
        let store = common::store(tmp.path());
        let u = store.unlock(&address, &pw).unwrap();
        let mut mb = store.open_mailbox(&u).unwrap();
        store.drain(&u, &mut mb).unwrap();
        assert_eq!(
            store.queued(&address).unwrap(),
            0,
            "queue purged after crash at {step}"
        );
        let inbox = mb.folder_by_role(Role::Inbox).unwrap().id;
        let ids: Vec<_> = mb
            .folder_index(inbox)
            .unwrap()
            .into_iter()
            .map(|(_, e)| e)
            .collect();
        let mut subjects: Vec<_> = mb
            .summaries(&ids)
            .unwrap()
            .into_iter()
            .map(|s| s.subject)
            .collect();
        subjects.sort();
        let mut want: Vec<_> = (0..QUEUED).map(|i| format!("n{i}")).collect();
        want.sort();
        assert_eq!(
            subjects, want,
            "each message exactly once after a crash at {step}"
        );
    }
}

fn crash_child(step: &str) {
    let dir = std::path::PathBuf::from(std::env::var("COFRE_TEST_DIR").unwrap());
    let pw = Password::new(std::env::var("COFRE_TEST_PASSWORD").unwrap());
    let store = common::store(&dir);
    let address = AliasAddress::try_from("hello@example.com").unwrap();
    let u = store.unlock(&address, &pw).unwrap();
    let mut mb = store.open_mailbox(&u).unwrap();
    let target = match step {
        "opened" => DrainStep::Opened,
        "appended" => DrainStep::Appended,
        _ => DrainStep::Removed,
    };
    // The second batch for "opened" (so one batch is fully done), the first
    // otherwise.
    let mut seen = 0;
    let skip = usize::from(target == DrainStep::Opened);
    let _ = store.drain_with(&u, &mut mb, |s| {
        if s == target {
            if seen == skip {
                std::process::abort();
            }
            seen += 1;
        }
    });
    std::process::exit(0);
}

#[test]
fn the_export_opens_in_the_standard_sqlcipher_tool() {
    let tmp = tempfile::tempdir().unwrap();
    let store = common::store(tmp.path());
    let (_address, pw, u) = common::alias(&store, "hello@example.com");
    let mut mb = store.open_mailbox(&u).unwrap();
    let inbox = mb.folder_by_role(Role::Inbox).unwrap().id;
    let raw1 = common::msg(
        "Ana <ana@example.org>",
        "hello@example.com",
        "Exported one",
        "first body",
    );
    let raw2 = b"Subject: lf only\n\nbare\nlines\n".to_vec();
    mb.append(inbox, &raw1, &common::with_keywords(&["$seen", "$flagged"]))
        .unwrap();
    mb.append(inbox, &raw2, &Default::default()).unwrap();
    let out = tmp.path().join("export.db");
    store.export(&u, &pw, &out).unwrap();
    assert!(matches!(
        store.export(&u, &pw, &out),
        Err(Error::AlreadyExists(_))
    ));

    let run = |key: &str, sql: &str| -> (bool, String) {
        let mut child = Command::new("sqlcipher")
            .arg(&out)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the sqlcipher command-line tool must be installed (scripts/test installs it)");
        use std::io::Write;
        let script = format!("PRAGMA key = '{}';\n{sql}\n", key.replace('\'', "''"));
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let o = child.wait_with_output().unwrap();
        let text =
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
        (o.status.success() && !text.contains("Error"), text)
    };
    let (ok, text) = run(
        pw.expose(),
        "SELECT folder, uid, keywords, hex(raw) FROM messages ORDER BY uid;",
    );
    assert!(ok, "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(
        lines[0],
        format!("INBOX|1|$flagged $seen|{}", hex::encode_upper(&raw1))
    );
    assert_eq!(lines[1], format!("INBOX|2||{}", hex::encode_upper(&raw2)));
    // Every mail table reads in the old tool.
    for table in [
        "folders",
        "emails",
        "keywords",
        "mailbox_messages",
        "threads",
        "message_ids",
        "blobs",
        "email_blobs",
        "changes",
        "meta",
    ] {
        let (ok, text) = run(pw.expose(), &format!("SELECT count(*) FROM {table};"));
        assert!(ok, "{table}: {text}");
    }
    let (ok, text) = run(pw.expose(), "SELECT subject FROM emails ORDER BY id;");
    assert!(ok && text.contains("Exported one"), "{text}");
    let (ok, _) = run("wrong password", "SELECT count(*) FROM messages;");
    assert!(!ok, "a wrong password does not open the export");
}

#[test]
fn forwards_webhooks_and_quotas_live_in_the_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let store = common::store(tmp.path());
    let (address, _pw, u) = common::alias(&store, "hello@example.com");
    let id = u.alias.id;
    let mut dir = store.directory();
    let fwd = AliasAddress::try_from("me@elsewhere.example").unwrap();
    dir.add_forward(id, &fwd).unwrap();
    dir.add_forward(id, &fwd).unwrap();
    assert_eq!(dir.forwards(id).unwrap(), ["me@elsewhere.example"]);
    dir.remove_forward(id, &fwd).unwrap();
    assert!(dir.forwards(id).unwrap().is_empty());
    let hook = dir
        .add_webhook(id, "https://hooks.example/mail", b"signing-secret")
        .unwrap();
    assert!(matches!(
        dir.add_webhook(id, "ftp://x", b"s"),
        Err(Error::Invalid(_))
    ));
    let hooks = dir.webhooks(id).unwrap();
    assert_eq!(hooks.len(), 1);
    assert_eq!(
        (
            hooks[0].id,
            hooks[0].url.as_str(),
            hooks[0].secret.as_slice()
        ),
        (hook, "https://hooks.example/mail", &b"signing-secret"[..])
    );
    assert!(
        !format!("{:?}", hooks[0]).contains("signing-secret"),
        "secrets are not printed"
    );
    dir.set_quota(id, Some(1234)).unwrap();
    assert_eq!(dir.alias(&address).unwrap().quota, Some(1234));
    drop(dir);
    // Deleting the alias takes its forwards and webhooks with it.
    store.delete_alias(&address).unwrap();
    assert!(store.directory().webhooks(id).unwrap().is_empty());
}
