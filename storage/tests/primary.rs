//! The primary's core: sessions hold keys, mail for a live alias lands at
//! once, mail for an offline one is sealed and drained at the next login,
//! and mailbox threads are capped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use cofre_storage::mailbox::{AppendOptions, Filter, Query};
use cofre_storage::primary::{Delivery, Primary, PrimaryConfig};
use cofre_storage::{AliasAddress, Error, Password, Role};

fn primary(
    dir: &std::path::Path,
    config: PrimaryConfig,
) -> (Primary, Vec<(AliasAddress, Password)>) {
    let store = common::store(dir);
    let mut aliases = Vec::new();
    for a in ["ana@example.com", "bo@example.com"] {
        let address = AliasAddress::try_from(a).unwrap();
        let (_, pw) = store.create_alias(&address, None).unwrap();
        aliases.push((address, pw));
    }
    (Primary::new(Arc::new(store), config), aliases)
}

fn inbox_count(p: &Primary, s: cofre_storage::primary::SessionId) -> usize {
    p.call(s, |mb| {
        let inbox = mb.folder_by_role(Role::Inbox)?.id;
        Ok(mb.search(&Query::in_folder(inbox, Filter::All))?.len())
    })
    .unwrap()
}

#[test]
fn offline_mail_is_sealed_and_online_mail_lands_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (p, aliases) = primary(tmp.path(), PrimaryConfig::default());
    let (ana, pw) = &aliases[0];
    let msg = || common::msg("x@y.z", "ana@example.com", "hi", "body");

    // Offline: sealed into the queue.
    let d = p.deliver(ana, msg(), AppendOptions::default()).unwrap();
    assert!(matches!(d, Delivery::Queued(_)));
    assert_eq!(p.store().queued(ana).unwrap(), 1);

    // Login drains it.
    let s = p.login(ana, pw).unwrap();
    assert_eq!(p.store().queued(ana).unwrap(), 0);
    assert_eq!(inbox_count(&p, s), 1);

    // Online: straight into the inbox, the queue untouched.
    let d = p.deliver(ana, msg(), AppendOptions::default()).unwrap();
    assert!(
        matches!(d, Delivery::Stored(a) if a.uid.get() == 2),
        "{d:?}"
    );
    assert_eq!(p.store().queued(ana).unwrap(), 0);
    assert_eq!(inbox_count(&p, s), 2);

    // After the last session ends, mail is sealed again.
    p.logout(s);
    assert!(matches!(p.call(s, |_| Ok(())), Err(Error::NoSession)));
    let d = p.deliver(ana, msg(), AppendOptions::default()).unwrap();
    assert!(matches!(d, Delivery::Queued(_)));
    let s2 = p.login(ana, pw).unwrap();
    assert_eq!(inbox_count(&p, s2), 3);
}

#[test]
fn sessions_are_counted_per_alias_and_wrong_passwords_open_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (p, aliases) = primary(tmp.path(), PrimaryConfig::default());
    let (ana, pw) = &aliases[0];
    assert!(matches!(
        p.login(ana, &Password::new("nope")),
        Err(Error::WrongPassword)
    ));
    assert_eq!(p.session_count(), 0);
    let s1 = p.login(ana, pw).unwrap();
    let s2 = p.login(ana, pw).unwrap();
    assert_eq!(p.session_count(), 2);
    p.logout(s1);
    // One session left: still live, mail still lands at once.
    let d = p
        .deliver(
            ana,
            common::msg("a@b.c", "ana@example.com", "x", "y"),
            AppendOptions::default(),
        )
        .unwrap();
    assert!(matches!(d, Delivery::Stored(_)));
    p.logout(s2);
    p.logout(s2);
    assert_eq!(p.session_count(), 0);
}

#[test]
fn one_alias_session_cannot_reach_another_alias() {
    let tmp = tempfile::tempdir().unwrap();
    let (p, aliases) = primary(tmp.path(), PrimaryConfig::default());
    let ana = p.login(&aliases[0].0, &aliases[0].1).unwrap();
    p.deliver(
        &aliases[1].0,
        common::msg("a@b.c", "bo@example.com", "for bo", "secret"),
        AppendOptions::default(),
    )
    .unwrap();
    // Ana's session sees only Ana's mailbox.
    assert_eq!(inbox_count(&p, ana), 0);
    assert!(matches!(
        p.store().unlock(&aliases[1].0, &aliases[0].1),
        Err(Error::WrongPassword)
    ));
}

#[test]
fn open_mailboxes_are_capped_least_recently_used_first() {
    let tmp = tempfile::tempdir().unwrap();
    let (p, aliases) = primary(
        tmp.path(),
        PrimaryConfig {
            max_open: 1,
            ..Default::default()
        },
    );
    let a = p.login(&aliases[0].0, &aliases[0].1).unwrap();
    assert_eq!(p.open_mailboxes(), 1);
    let b = p.login(&aliases[1].0, &aliases[1].1).unwrap();
    assert_eq!(p.open_mailboxes(), 1, "the cap holds");
    // The evicted mailbox reopens on demand, with its data.
    p.deliver(
        &aliases[0].0,
        common::msg("a@b.c", "ana@example.com", "x", "y"),
        AppendOptions::default(),
    )
    .unwrap();
    assert_eq!(inbox_count(&p, a), 1);
    assert_eq!(inbox_count(&p, b), 0);
    assert_eq!(p.open_mailboxes(), 1);
}

#[test]
fn many_threads_write_through_one_mailbox_thread_without_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let (p, aliases) = primary(
        tmp.path(),
        PrimaryConfig {
            queue_depth: 2,
            ..Default::default()
        },
    );
    let p = Arc::new(p);
    let s = p.login(&aliases[0].0, &aliases[0].1).unwrap();
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let p = Arc::clone(&p);
            let address = aliases[0].0.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    let raw = common::msg("a@b.c", "ana@example.com", &format!("t{t} m{i}"), "x");
                    assert!(matches!(
                        p.deliver(&address, raw, AppendOptions::default()).unwrap(),
                        Delivery::Stored(_)
                    ));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(inbox_count(&p, s), 100);
}

#[test]
fn session_ids_cannot_be_guessed_from_one_another() {
    let tmp = tempfile::tempdir().unwrap();
    let (p, aliases) = primary(tmp.path(), PrimaryConfig::default());
    let (ana, ana_pw) = &aliases[0];
    let (bo, bo_pw) = &aliases[1];
    let a = p.login(ana, ana_pw).unwrap();
    let b = p.login(bo, bo_pw).unwrap();
    let a2 = p.login(ana, ana_pw).unwrap();
    // Ids are random, not a counter a neighbour could step along.
    for guess in [a.0.wrapping_add(1), a.0.wrapping_sub(1), b.0 ^ 1, 0, 1] {
        let forged = cofre_storage::primary::SessionId(guess);
        if forged == a || forged == b || forged == a2 {
            continue;
        }
        assert!(matches!(
            p.call(forged, |mb| mb.folders()),
            Err(Error::NoSession)
        ));
    }
    assert!(a.0.abs_diff(b.0) > 1 << 40 && b.0.abs_diff(a2.0) > 1 << 40);
    // The debug form never shows the capability itself.
    assert!(!format!("{a:?}").contains(&a.0.to_string()));
    assert!(!format!("{a:?}").contains(&format!("{:x}", a.0)));
}

#[test]
fn online_delivery_writes_no_queue_file_and_the_depth_gauge_follows_the_queue() {
    let tmp = tempfile::tempdir().unwrap();
    let (p, aliases) = primary(tmp.path(), PrimaryConfig::default());
    let (bo, pw) = &aliases[1];
    let record = p.store().alias(bo).unwrap();
    let queue_file = p.store().queue_path(&record);
    assert_eq!(p.store().queue_depth().unwrap(), 0);
    let msg = || common::msg("x@y.z", "bo@example.com", "hi", "body");

    let s = p.login(bo, pw).unwrap();
    let d = p.deliver(bo, msg(), AppendOptions::default()).unwrap();
    assert!(matches!(d, Delivery::Stored(_)));
    assert!(!queue_file.exists(), "no queue file for a live alias");
    p.logout(s);

    for _ in 0..3 {
        p.deliver(bo, msg(), AppendOptions::default()).unwrap();
    }
    assert!(queue_file.exists());
    assert_eq!(p.store().queue_depth().unwrap(), 3);
    let s = p.login(bo, pw).unwrap();
    assert_eq!(p.store().queue_depth().unwrap(), 0);
    assert_eq!(inbox_count(&p, s), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_queued_work_and_then_refuses_more() {
    let tmp = tempfile::tempdir().unwrap();
    let (p, aliases) = primary(tmp.path(), PrimaryConfig::default());
    let p = Arc::new(p);
    let (ana, pw) = &aliases[0];
    let s = p.login(ana, pw).unwrap();
    let inbox = p
        .call(s, |mb| Ok(mb.folder_by_role(Role::Inbox)?.id))
        .unwrap();
    let mut writes = Vec::new();
    for i in 0..20 {
        let p = Arc::clone(&p);
        writes.push(tokio::spawn(async move {
            let raw = common::msg("x@y.z", "ana@example.com", &format!("m{i}"), "body");
            p.write_async(s, move |mb| {
                mb.append(inbox, &raw, &AppendOptions::default())
            })
            .await
        }));
    }
    let acked: usize = {
        let mut n = 0;
        for w in writes {
            if w.await.unwrap().is_ok() {
                n += 1;
            }
        }
        n
    };
    let p2 = Arc::clone(&p);
    tokio::task::spawn_blocking(move || p2.shutdown())
        .await
        .unwrap();
    assert_eq!(p.open_mailboxes(), 0);
    assert!(matches!(
        p.call(s, |mb| mb.folders()),
        Err(Error::Unavailable(_))
    ));
    // Everything acknowledged is in the mailbox when it is opened again.
    let store = p.store();
    let unlocked = store.unlock(ana, pw).unwrap();
    let mb = store.open_mailbox(&unlocked).unwrap();
    let inbox = mb.folder_by_role(Role::Inbox).unwrap().id;
    assert_eq!(
        mb.search(&Query::in_folder(inbox, Filter::All))
            .unwrap()
            .len(),
        acked
    );
    assert_eq!(acked, 20);
}

#[test]
fn api_tokens_resume_sessions_until_they_expire_or_are_revoked() {
    use cofre_storage::keys::derive_subkey;
    use std::time::Duration;
    let tmp = tempfile::tempdir().unwrap();
    let (p, aliases) = primary(tmp.path(), PrimaryConfig::default());
    let p = p.with_token_key(derive_subkey(
        b"cluster secret of some length",
        "token-seal",
    ));
    let (ana, pw) = &aliases[0];
    let (bo, _) = &aliases[1];

    let grant = p.issue_token(ana, pw, Duration::from_secs(3600)).unwrap();
    assert_eq!(inbox_count(&p, grant.session), 0);
    assert!(matches!(
        p.issue_token(ana, &Password::new("wrong"), Duration::from_secs(60)),
        Err(Error::WrongPassword)
    ));

    // Another gateway resumes from the sealed keys alone.
    let s = p
        .resume(ana, &grant.jti, grant.expires_at, &grant.sealed)
        .unwrap();
    assert_eq!(inbox_count(&p, s), 0);

    // Ana's sealed keys open nothing for Bo; any change to the token fails.
    let refused = |r: Result<_, Error>| matches!(r, Err(Error::WrongPassword));
    assert!(refused(p.resume(
        bo,
        &grant.jti,
        grant.expires_at,
        &grant.sealed
    )));
    assert!(refused(p.resume(
        ana,
        "other-jti",
        grant.expires_at,
        &grant.sealed
    )));
    assert!(refused(p.resume(
        ana,
        &grant.jti,
        grant.expires_at + 10,
        &grant.sealed
    )));
    let mut tampered = grant.sealed.clone();
    tampered[30] ^= 1;
    assert!(refused(p.resume(
        ana,
        &grant.jti,
        grant.expires_at,
        &tampered
    )));
    // A primary with another cluster's key cannot open it.
    let other = Primary::new(Arc::clone(p.store()), PrimaryConfig::default())
        .with_token_key(derive_subkey(b"another cluster secret!!", "token-seal"));
    assert!(refused(other.resume(
        ana,
        &grant.jti,
        grant.expires_at,
        &grant.sealed
    )));
    // Expired: refused.
    assert!(refused(p.resume(ana, &grant.jti, 1, &grant.sealed)));

    // Revoked: every session of the token ends, and it cannot come back.
    p.revoke(&grant.jti, grant.expires_at).unwrap();
    assert!(matches!(
        p.call(s, |mb| mb.folders()),
        Err(Error::NoSession)
    ));
    assert!(matches!(
        p.call(grant.session, |mb| mb.folders()),
        Err(Error::NoSession)
    ));
    assert!(refused(p.resume(
        ana,
        &grant.jti,
        grant.expires_at,
        &grant.sealed
    )));
    assert_eq!(p.session_count(), 0, "no key stays in memory");

    // A token that expires ends its session by itself.
    let short = p.issue_token(ana, pw, Duration::from_secs(1)).unwrap();
    std::thread::sleep(Duration::from_millis(2100));
    assert!(matches!(
        p.call(short.session, |mb| mb.folders()),
        Err(Error::NoSession)
    ));
    assert_eq!(p.session_count(), 0);
}

/// New mail joins the search-index backlog; the mailbox's thread indexes it
/// once the mailbox is quiet, and at once when the backlog grows large.
#[test]
fn the_mailbox_thread_indexes_new_mail_when_quiet_or_plentiful() {
    let tmp = tempfile::tempdir().unwrap();
    let (p, aliases) = primary(tmp.path(), PrimaryConfig::default());
    let (ana, pw) = &aliases[0];
    let s = p.login(ana, pw).unwrap();
    let backlog = || p.call(s, |mb| Ok(mb.index_backlog())).unwrap();
    for i in 0..100 {
        let m = common::msg("x@y.z", "ana@example.com", &format!("n{i}"), "body");
        p.deliver(ana, m, AppendOptions::default()).unwrap();
        assert!(backlog() < 64, "a large backlog is indexed at once");
    }
    let start = std::time::Instant::now();
    while backlog() > 0 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(5),
            "a quiet mailbox indexes its backlog"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
