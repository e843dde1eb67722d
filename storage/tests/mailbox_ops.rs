//! Folders, keywords, copy/move/expunge, changes, threads and attachment
//! deduplication.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use cofre_storage::mailbox::{AppendOptions, Filter, Query, RecordKind, RecordWrite};
use cofre_storage::{Error, FolderName, Keyword, Mailbox, Role, Uid};

fn name(s: &str) -> FolderName {
    FolderName::try_from(s).unwrap()
}

fn uid(n: u32) -> Uid {
    Uid::try_from(n).unwrap()
}

fn blob_rows(mb: &Mailbox) -> u64 {
    mb.storage_stats().unwrap().blobs
}

fn with_attachment(subject: &str, attachment: &str) -> Vec<u8> {
    format!(
        "From: a@b.c\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=q\r\n\r\n\
         --q\r\nContent-Type: text/plain\r\n\r\n{subject} text\r\n--q\r\nContent-Type: application/zip\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{attachment}\r\n--q--\r\n"
    )
    .into_bytes()
}

#[test]
fn default_folders_have_roles_and_distinct_uidvalidity() {
    let (_d, mb) = common::mailbox();
    let folders = mb.folders().unwrap();
    let names: Vec<_> = folders.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        ["INBOX", "Archive", "Drafts", "Junk", "Sent", "Trash"]
    );
    for role in Role::ALL {
        assert_eq!(mb.folder_by_role(role).unwrap().role, Some(role));
    }
    let mut v: Vec<_> = folders.iter().map(|f| f.uid_validity).collect();
    v.dedup();
    assert_eq!(v.len(), 6);
    assert!(folders.iter().all(|f| f.uid_next == 1 && f.subscribed));
}

#[test]
fn folder_lifecycle() {
    let (_d, mut mb) = common::mailbox();
    let child = mb.create_folder(&name("Work/Projects/Cofre")).unwrap();
    assert!(mb.folder_by_name(&name("Work")).is_ok(), "parents created");
    assert!(matches!(
        mb.create_folder(&name("Work")),
        Err(Error::AlreadyExists(_))
    ));
    let work = mb.folder_by_name(&name("Work")).unwrap();
    let a = mb
        .append(
            child.id,
            &common::msg("a@b.c", "d@e.f", "x", "y"),
            &AppendOptions::default(),
        )
        .unwrap();
    let renamed = mb.rename_folder(work.id, &name("Jobs")).unwrap();
    assert_eq!(renamed.name, "Jobs");
    let moved = mb.folder_by_name(&name("Jobs/Projects/Cofre")).unwrap();
    assert_eq!(moved.id, child.id);
    assert_eq!(
        moved.uid_validity, child.uid_validity,
        "rename keeps UIDVALIDITY"
    );
    assert_eq!(mb.email_at(moved.id, a.uid).unwrap(), a.email_id);
    assert!(
        mb.rename_folder(work.id, &name("Jobs/Projects/Inside"))
            .is_err()
    );
    let inbox = mb.folder_by_role(Role::Inbox).unwrap();
    assert!(mb.rename_folder(inbox.id, &name("Other")).is_err());
    assert!(mb.delete_folder(inbox.id).is_err());
    assert!(mb.delete_folder(work.id).is_err(), "has children");
    mb.set_subscribed(moved.id, false).unwrap();
    assert!(!mb.folder(moved.id).unwrap().subscribed);
    mb.delete_folder(moved.id).unwrap();
    assert!(
        matches!(mb.summary(a.email_id), Err(Error::NotFound(_))),
        "email only there is destroyed"
    );
    let again = mb.create_folder(&name("Jobs/Projects/Cofre")).unwrap();
    assert!(
        again.uid_validity > child.uid_validity,
        "a re-created folder gets a new UIDVALIDITY"
    );
}

#[test]
fn keywords_copy_move_expunge_and_uids_never_reused() {
    let (_d, mut mb) = common::mailbox();
    let inbox = mb.folder_by_role(Role::Inbox).unwrap().id;
    let archive = mb.folder_by_role(Role::Archive).unwrap().id;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(
            mb.append(
                inbox,
                &common::msg("a@b.c", "d@e.f", &format!("m{i}"), "x"),
                &common::with_keywords(&["$seen"]),
            )
            .unwrap(),
        );
    }
    assert_eq!(
        ids.iter().map(|a| a.uid.get()).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    let f = mb.folder(inbox).unwrap();
    assert_eq!((f.total, f.unseen, f.uid_next), (4, 0, 5));

    mb.set_keywords(
        &[ids[0].email_id],
        &[Keyword::deleted(), Keyword::flagged()],
        &[Keyword::seen()],
    )
    .unwrap();
    let s = mb.summary(ids[0].email_id).unwrap();
    assert_eq!(s.keywords, [Keyword::deleted(), Keyword::flagged()]);
    assert_eq!(mb.folder(inbox).unwrap().unseen, 1);
    mb.replace_keywords(ids[1].email_id, &[Keyword::try_from("$Junk").unwrap()])
        .unwrap();
    assert_eq!(
        mb.summary(ids[1].email_id).unwrap().keywords,
        [Keyword::try_from("$junk").unwrap()]
    );

    let copied = mb.copy(inbox, &[uid(2), uid(3)], archive).unwrap();
    assert_eq!(copied, [(uid(2), uid(1)), (uid(3), uid(2))]);
    assert_eq!(mb.summary(ids[1].email_id).unwrap().folders.len(), 2);
    assert_eq!(
        mb.copy(inbox, &[uid(2)], archive).unwrap(),
        [(uid(2), uid(1))],
        "already there"
    );
    assert!(matches!(
        mb.copy(inbox, &[uid(99)], archive),
        Err(Error::NotFound(_))
    ));

    let moved = mb.move_messages(inbox, &[uid(4)], archive).unwrap();
    assert_eq!(moved, [(uid(4), uid(3))]);
    assert!(mb.email_at(inbox, uid(4)).is_err());

    let expunged = mb.expunge(inbox, None).unwrap();
    assert_eq!(expunged, [uid(1)]);
    assert!(matches!(
        mb.summary(ids[0].email_id),
        Err(Error::NotFound(_))
    ));
    // UIDs are never reused.
    let next = mb
        .append(
            inbox,
            &common::msg("a@b.c", "d@e.f", "new", "x"),
            &AppendOptions::default(),
        )
        .unwrap();
    assert_eq!(next.uid, uid(5));
    // Expunge limited to some UIDs (UID EXPUNGE).
    mb.set_keywords(
        &[ids[1].email_id, next.email_id],
        &[Keyword::deleted()],
        &[],
    )
    .unwrap();
    assert_eq!(mb.expunge(inbox, Some(&[uid(5)])).unwrap(), [uid(5)]);
    assert!(mb.email_at(inbox, uid(2)).is_ok());
    // Removing from one folder keeps the copy in the other.
    mb.remove_from_folder(inbox, &[uid(2)]).unwrap();
    assert_eq!(
        mb.summary(ids[1].email_id).unwrap().folders,
        [(archive, uid(1))]
    );
}

#[test]
fn changes_since_a_modseq() {
    let (_d, mut mb) = common::mailbox();
    let inbox = mb.folder_by_role(Role::Inbox).unwrap().id;
    let a = mb
        .append(
            inbox,
            &common::msg("a@b.c", "d@e.f", "a", "x"),
            &AppendOptions::default(),
        )
        .unwrap();
    let b = mb
        .append(
            inbox,
            &common::msg("a@b.c", "d@e.f", "b", "x"),
            &AppendOptions::default(),
        )
        .unwrap();
    let state = mb.highest_modseq().unwrap();
    assert_eq!(mb.folder(inbox).unwrap().highest_modseq, state);

    let c = mb
        .append(
            inbox,
            &common::msg("a@b.c", "d@e.f", "c", "x"),
            &AppendOptions::default(),
        )
        .unwrap();
    mb.set_keywords(&[a.email_id], &[Keyword::seen()], &[])
        .unwrap();
    mb.set_keywords(&[b.email_id], &[Keyword::deleted()], &[])
        .unwrap();
    mb.expunge(inbox, None).unwrap();
    let t = mb
        .append(
            inbox,
            &common::msg("a@b.c", "d@e.f", "temp", "x"),
            &AppendOptions::default(),
        )
        .unwrap();
    mb.destroy_emails(&[t.email_id]).unwrap();
    let f = mb.create_folder(&name("New")).unwrap();

    let ch = mb.changes_since(state).unwrap();
    assert_eq!(ch.emails_created, [c.email_id]);
    assert_eq!(ch.emails_updated, [a.email_id]);
    assert_eq!(
        ch.emails_destroyed,
        [b.email_id],
        "created-then-destroyed is not reported"
    );
    assert_eq!(ch.folders_created, [f.id]);
    assert_eq!(ch.folders_updated, [inbox]);
    assert!(ch.current > state);

    let fc = mb.folder_changes(inbox, state).unwrap();
    let ms = mb.summary(a.email_id).unwrap().modseq;
    assert_eq!(
        fc.changed.iter().map(|(u, _, _)| *u).collect::<Vec<_>>(),
        [a.uid, c.uid]
    );
    assert!(fc.changed.contains(&(a.uid, ms, a.email_id)));
    assert_eq!(fc.highest, mb.highest_modseq().unwrap());
    assert_eq!(
        fc.vanished,
        [b.uid, t.uid],
        "VANISHED includes every expunged UID"
    );
    let none = mb.changes_since(mb.highest_modseq().unwrap()).unwrap();
    assert!(
        none.emails_created.is_empty()
            && none.emails_updated.is_empty()
            && none.folders_updated.is_empty()
    );
    // A no-op keyword change does not touch the email.
    let before = mb.summary(a.email_id).unwrap().modseq;
    mb.set_keywords(&[a.email_id], &[Keyword::seen()], &[])
        .unwrap();
    assert_eq!(mb.summary(a.email_id).unwrap().modseq, before);
}

#[test]
fn threads_follow_references_then_subjects() {
    let (_d, mut mb) = common::mailbox();
    let inbox = mb.folder_by_role(Role::Inbox).unwrap().id;
    let add = |mb: &mut Mailbox, raw: &str| {
        let a = mb
            .append(inbox, raw.as_bytes(), &AppendOptions::default())
            .unwrap();
        mb.summary(a.email_id).unwrap().thread_id
    };
    let t1 = add(&mut mb, "Message-ID: <1@x>\r\nSubject: Plan\r\n\r\nx");
    let t2 = add(
        &mut mb,
        "Message-ID: <2@x>\r\nIn-Reply-To: <1@x>\r\nSubject: other words\r\n\r\nx",
    );
    let t3 = add(
        &mut mb,
        "Message-ID: <3@x>\r\nReferences: <1@x> <2@x>\r\nSubject: Re: Plan\r\n\r\nx",
    );
    let t4 = add(&mut mb, "Message-ID: <4@x>\r\nSubject: Re: Plan\r\n\r\nx");
    let t5 = add(&mut mb, "Message-ID: <5@x>\r\nSubject: Plan\r\n\r\nx");
    // A reply that arrives before its parent: the parent joins its thread.
    let t7 = add(
        &mut mb,
        "Message-ID: <7@x>\r\nIn-Reply-To: <6@x>\r\nSubject: Re: Late\r\n\r\nx",
    );
    let t6 = add(&mut mb, "Message-ID: <6@x>\r\nSubject: Late\r\n\r\nx");
    assert_eq!([t2, t3], [t1, t1]);
    assert_eq!(t4, t1, "a reply with no references joins by subject");
    assert_ne!(t5, t1, "a non-reply with the same subject starts a thread");
    assert_eq!(t6, t7);
}

#[test]
fn identical_attachments_are_stored_once_and_freed_with_the_last_reference() {
    let (_d, mut mb) = common::mailbox();
    let inbox = mb.folder_by_role(Role::Inbox).unwrap().id;
    let att = "UEsDBBQAAAAIAFZ".repeat(400);
    let other = "AAAAAAAAAAAAAAAB".repeat(400);
    let r1 = with_attachment("first", &att);
    let r2 = with_attachment("second", &att);
    let r3 = with_attachment("third", &other);
    let a = mb.append(inbox, &r1, &AppendOptions::default()).unwrap();
    let b = mb.append(inbox, &r2, &AppendOptions::default()).unwrap();
    assert_eq!(blob_rows(&mb), 1, "one copy for two messages");
    mb.append(inbox, &r3, &AppendOptions::default()).unwrap();
    assert_eq!(blob_rows(&mb), 2);
    mb.destroy_emails(&[a.email_id]).unwrap();
    assert_eq!(blob_rows(&mb), 2);
    assert_eq!(
        mb.raw(b.email_id).unwrap(),
        r2,
        "the other message keeps its attachment"
    );
    mb.destroy_emails(&[b.email_id]).unwrap();
    assert_eq!(blob_rows(&mb), 1, "freed with the last reference");
    let hits = mb.search(&Query::in_folder(inbox, Filter::All)).unwrap();
    assert_eq!(hits.len(), 1);
}

#[test]
fn idempotent_append_with_a_delivery_reference() {
    let (_d, mut mb) = common::mailbox();
    let inbox = mb.folder_by_role(Role::Inbox).unwrap().id;
    let opts = AppendOptions {
        delivery_ref: Some("smtp:abc".into()),
        ..Default::default()
    };
    let raw = common::msg("a@b.c", "d@e.f", "once", "x");
    let first = mb.append(inbox, &raw, &opts).unwrap();
    let second = mb.append(inbox, &raw, &opts).unwrap();
    assert!(!first.duplicate && second.duplicate);
    assert_eq!(first.email_id, second.email_id);
    assert_eq!(mb.email_count().unwrap(), 1);
}

#[test]
fn quota_is_enforced() {
    let (_d, mut mb) = common::mailbox();
    let inbox = mb.folder_by_role(Role::Inbox).unwrap().id;
    let raw = common::msg("a@b.c", "d@e.f", "q", &"x".repeat(500));
    mb.set_quota(Some(raw.len() as u64 * 2));
    mb.append(inbox, &raw, &AppendOptions::default()).unwrap();
    mb.append(inbox, &raw, &AppendOptions::default()).unwrap();
    let err = mb
        .append(inbox, &raw, &AppendOptions::default())
        .unwrap_err();
    assert!(matches!(err, Error::OverQuota { .. }), "{err}");
    assert_eq!(mb.usage().unwrap(), raw.len() as u64 * 2);
}

#[test]
fn mime_structure_and_parts() {
    let (_d, mut mb) = common::mailbox();
    let inbox = mb.folder_by_role(Role::Inbox).unwrap().id;
    let raw = b"From: a@b.c\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"o\"\r\n\r\n--o\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9\r\n--o\r\n\
Content-Type: message/rfc822\r\n\r\nSubject: inner\r\nContent-Type: multipart/alternative; boundary=i\r\n\r\n\
--i\r\nContent-Type: text/plain\r\n\r\nplain\r\n--i\r\nContent-Type: text/html\r\n\r\n<b>html</b>\r\n--i--\r\n\r\n\
--o\r\nContent-Type: image/png; name=\"dot.png\"\r\nContent-Disposition: attachment; filename=\"dot.png\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\niVBORw0K\r\n--o--\r\n";
    let a = mb.append(inbox, raw, &AppendOptions::default()).unwrap();
    let root = mb.structure(a.email_id).unwrap();
    assert_eq!(
        (root.media_type.as_str(), root.media_subtype.as_str()),
        ("multipart", "mixed")
    );
    assert_eq!(root.children.len(), 3);
    let text = &root.children[0];
    assert_eq!(text.params, [("charset".to_string(), "utf-8".to_string())]);
    assert_eq!(text.transfer_encoding.as_deref(), Some("quoted-printable"));
    assert_eq!(&raw[text.body_start..text.body_end], b"caf=C3=A9");
    let msg = &root.children[1];
    assert!(msg.is_message);
    let inner = &msg.children[0];
    assert_eq!(inner.media_subtype, "alternative");
    assert_eq!(
        &raw[inner.children[1].body_start..inner.children[1].body_end],
        b"<b>html</b>"
    );
    let img = &root.children[2];
    assert_eq!(img.filename.as_deref(), Some("dot.png"));
    assert_eq!(img.disposition.as_deref(), Some("attachment"));
    assert_eq!(
        mb.part_decoded(a.email_id, &[0]).unwrap(),
        "café".as_bytes()
    );
    assert_eq!(mb.part_decoded(a.email_id, &[2]).unwrap(), b"\x89PNG\r\n");
    assert_eq!(
        mb.part_decoded(a.email_id, &[1, 0, 1]).unwrap(),
        b"<b>html</b>"
    );
    assert!(mb.part_decoded(a.email_id, &[5]).is_err());
}

#[test]
fn a_large_batch_keeps_order_and_bytes() {
    let (_d, mut mb) = common::mailbox();
    let inbox = mb.folder_by_role(Role::Inbox).unwrap().id;
    let raws: Vec<Vec<u8>> = (0..41)
        .map(|i| {
            common::msg(
                "a@b.c",
                "d@e.f",
                &format!("batch {i}"),
                &format!("body number {i}"),
            )
        })
        .collect();
    let batch: Vec<(&[u8], AppendOptions)> = raws
        .iter()
        .map(|r| (r.as_slice(), AppendOptions::default()))
        .collect();
    let appended = mb.append_batch(inbox, &batch).unwrap();
    assert_eq!(appended.len(), 41);
    for (i, a) in appended.iter().enumerate() {
        assert_eq!(a.uid.get() as usize, i + 1);
        assert_eq!(mb.raw(a.email_id).unwrap(), raws[i]);
    }
    let hits = mb
        .search(&Query::in_folder(
            inbox,
            Filter::Contains(cofre_storage::mailbox::TextField::Body, "number 40".into()),
        ))
        .unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].uid.unwrap().get(), 41);
}

#[test]
fn usage_follows_every_append_copy_and_destroy() {
    let (_d, mut mb) = common::mailbox();
    let inbox = mb.folder_by_role(Role::Inbox).unwrap().id;
    let archive = mb.folder_by_role(Role::Archive).unwrap().id;
    assert_eq!(mb.usage().unwrap(), 0);
    let raws: Vec<Vec<u8>> = (0..5)
        .map(|i| {
            common::msg(
                "a@b.c",
                "d@e.f",
                &format!("usage {i}"),
                &"x".repeat(100 * i),
            )
        })
        .collect();
    let mut ids = Vec::new();
    for r in &raws[..2] {
        ids.push(mb.append(inbox, r, &Default::default()).unwrap().email_id);
    }
    let batch: Vec<(&[u8], cofre_storage::mailbox::AppendOptions)> = raws[2..]
        .iter()
        .map(|r| (r.as_slice(), Default::default()))
        .collect();
    ids.extend(
        mb.append_batch(inbox, &batch)
            .unwrap()
            .iter()
            .map(|a| a.email_id),
    );
    let total: u64 = raws.iter().map(|r| r.len() as u64).sum();
    assert_eq!(mb.usage().unwrap(), total);
    // A copy is the same email: no more bytes.
    mb.copy(inbox, &[uid(1)], archive).unwrap();
    assert_eq!(mb.usage().unwrap(), total);
    mb.destroy_emails(&ids[..2]).unwrap();
    assert_eq!(
        mb.usage().unwrap(),
        total - raws[0].len() as u64 - raws[1].len() as u64
    );
    mb.destroy_emails(&ids[2..]).unwrap();
    assert_eq!(mb.usage().unwrap(), 0);
}

#[test]
fn folder_counters_follow_every_change() {
    use cofre_storage::Keyword;
    use cofre_storage::mailbox::{Filter, Query};
    let (_d, mut mb) = common::mailbox();
    let inbox = mb.folder_by_role(Role::Inbox).unwrap().id;
    let archive = mb.folder_by_role(Role::Archive).unwrap().id;
    let work = mb.create_folder(&name("Work")).unwrap().id;
    let check = |mb: &Mailbox, step: &str| {
        for f in mb.folders().unwrap() {
            let total = mb
                .search(&Query::in_folder(f.id, Filter::All))
                .unwrap()
                .len() as u64;
            let unseen = mb
                .search(&Query::in_folder(
                    f.id,
                    Filter::Not(Box::new(Filter::Keyword(Keyword::seen()))),
                ))
                .unwrap()
                .len() as u64;
            assert_eq!(
                (f.total, f.unseen),
                (total, unseen),
                "{} after {step}",
                f.name
            );
        }
    };
    let mut ids = Vec::new();
    for i in 0..6 {
        let kw = if i % 2 == 0 { &["$seen"][..] } else { &[][..] };
        let raw = common::msg("a@b.c", "d@e.f", &format!("count {i}"), "x");
        ids.push(
            mb.append(inbox, &raw, &common::with_keywords(kw))
                .unwrap()
                .email_id,
        );
    }
    check(&mb, "appends");
    mb.copy(inbox, &[uid(1), uid(2), uid(3)], archive).unwrap();
    check(&mb, "copy");
    mb.set_keywords(&ids[..4], &[Keyword::seen()], &[]).unwrap();
    check(&mb, "marking seen");
    mb.set_keywords(&ids[2..], &[], &[Keyword::seen()]).unwrap();
    check(&mb, "marking unseen");
    mb.replace_keywords(ids[1], &[Keyword::flagged()]).unwrap();
    check(&mb, "replacing keywords");
    mb.move_messages(inbox, &[uid(4), uid(5)], work).unwrap();
    check(&mb, "move");
    mb.set_keywords(&ids, &[Keyword::deleted()], &[]).unwrap();
    mb.expunge(archive, Some(&[uid(1)])).unwrap();
    check(&mb, "expunge");
    mb.destroy_emails(&ids[..2]).unwrap();
    check(&mb, "destroy");
    mb.delete_folder(work).unwrap();
    check(&mb, "folder deleted");
    let inbox_now = mb.folder(inbox).unwrap();
    assert!(inbox_now.total > 0);
}

/// Threads are in the change log: a reply updates its thread, a new
/// conversation creates one, and the last email leaving destroys it.
#[test]
fn thread_changes_and_the_thread_filter() {
    let (_d, mut mb) = common::mailbox();
    let inbox = mb.folder_by_role(Role::Inbox).unwrap().id;
    let opts = AppendOptions::default();
    let first = mb
        .append(inbox, &common::msg("a@b.c", "d@e.f", "plans", "x"), &opts)
        .unwrap();
    let lone = mb
        .append(inbox, &common::msg("a@b.c", "d@e.f", "lone", "x"), &opts)
        .unwrap();
    let thread_of = |mb: &Mailbox, e| mb.summary(e).unwrap().thread_id;
    let (plans, lone_thread) = (
        thread_of(&mb, first.email_id),
        thread_of(&mb, lone.email_id),
    );
    let state = mb.highest_modseq().unwrap();
    assert_eq!(mb.changes_since(0).unwrap().threads_since, 0);

    let reply = b"From: d@e.f\r\nTo: a@b.c\r\nSubject: Re: plans\r\nMessage-ID: <r@test>\r\n\
                  In-Reply-To: <plans@test>\r\n\r\nyes\r\n";
    let reply = mb.append(inbox, reply, &opts).unwrap();
    assert_eq!(thread_of(&mb, reply.email_id), plans);
    let fresh = mb
        .append(inbox, &common::msg("a@b.c", "d@e.f", "fresh", "x"), &opts)
        .unwrap();
    let fresh_thread = thread_of(&mb, fresh.email_id);
    mb.destroy_emails(&[lone.email_id]).unwrap();

    let ch = mb.changes_since(state).unwrap();
    assert_eq!(ch.threads_created, [fresh_thread]);
    assert_eq!(ch.threads_updated, [plans]);
    assert_eq!(ch.threads_destroyed, [lone_thread]);

    let q = Query::everywhere(Filter::Threads(vec![plans]));
    let hits: Vec<_> = mb.search(&q).unwrap().iter().map(|h| h.email_id).collect();
    assert_eq!(hits, [first.email_id, reply.email_id]);
}

/// Uploads are kept in the mailbox and read back by id.
#[test]
fn uploads_are_kept_and_read_back() {
    let (_d, mut mb) = common::mailbox();
    let id = mb.put_upload(b"bytes for later").unwrap();
    assert_eq!(mb.upload(id).unwrap(), b"bytes for later");
    assert!(matches!(mb.upload(id + 1), Err(Error::NotFound(_))));
}

/// Records: created with the next id, replaced, destroyed into a
/// tombstone; each change carries a MODSEQ above the state before it, and
/// a batch with a bad write changes nothing.
#[test]
fn records_keep_their_history() {
    let (_d, mut mb) = common::mailbox();
    let empty = mb.records(RecordKind::Identity).unwrap();
    assert_eq!((empty.records.len(), empty.state), (0, 0));

    let ids = mb
        .write_records(
            RecordKind::Identity,
            &[
                RecordWrite::Create(b"one".to_vec()),
                RecordWrite::Create(b"two".to_vec()),
                RecordWrite::Put(0, b"default".to_vec()),
            ],
        )
        .unwrap();
    assert_eq!(ids, [1, 2]);
    let before = mb.records(RecordKind::Identity).unwrap();
    let live: Vec<_> = before
        .records
        .iter()
        .map(|r| (r.id, r.data.clone()))
        .collect();
    assert_eq!(
        live,
        [
            (0, Some(b"default".to_vec())),
            (1, Some(b"one".to_vec())),
            (2, Some(b"two".to_vec()))
        ]
    );
    // Kinds are apart.
    assert!(
        mb.records(RecordKind::Submission)
            .unwrap()
            .records
            .is_empty()
    );

    mb.write_records(
        RecordKind::Identity,
        &[
            RecordWrite::Put(1, b"uno".to_vec()),
            RecordWrite::Destroy(2),
        ],
    )
    .unwrap();
    let after = mb.records(RecordKind::Identity).unwrap();
    assert!(after.state > before.state);
    assert_eq!(
        mb.records_state(RecordKind::Identity).unwrap(),
        after.state,
        "the state without reading the records agrees"
    );
    let changed: Vec<_> = after
        .records
        .iter()
        .filter(|r| r.modseq > before.state)
        .map(|r| (r.id, r.data.clone(), r.created <= before.state))
        .collect();
    assert_eq!(changed, [(1, Some(b"uno".to_vec()), true), (2, None, true)]);

    // A destroyed record stays destroyed, and a failing batch is undone.
    let bad = mb.write_records(
        RecordKind::Identity,
        &[
            RecordWrite::Create(b"three".to_vec()),
            RecordWrite::Destroy(2),
        ],
    );
    assert!(matches!(bad, Err(Error::NotFound(_))));
    assert!(matches!(
        mb.write_records(RecordKind::Identity, &[RecordWrite::Put(2, b"x".to_vec())]),
        Err(Error::NotFound(_))
    ));
    assert_eq!(mb.records(RecordKind::Identity).unwrap(), after);
}

/// The thread counters stay equal to a count from scratch through a
/// long run of appends (new threads and replies, seen or not), copies,
/// moves, expunges, `$seen` set and cleared, destroys and a folder
/// deleted.
#[test]
fn thread_counters_follow_every_change() {
    let (_d, mut mb) = common::mailbox();
    let inbox = mb.folder_by_role(Role::Inbox).unwrap().id;
    let archive = mb.folder_by_role(Role::Archive).unwrap().id;
    let extra = mb.create_folder(&name("Extra")).unwrap().id;
    let seen: Keyword = "$seen".try_into().unwrap();
    let counted = |mb: &Mailbox| {
        let mut out = Vec::new();
        for f in mb.folders().unwrap() {
            let emails: Vec<_> = mb
                .folder_index(f.id)
                .unwrap()
                .iter()
                .map(|(_, e)| *e)
                .collect();
            let mut threads = std::collections::BTreeMap::new();
            for s in mb.summaries(&emails).unwrap() {
                let unread = threads.entry(s.thread_id).or_insert(false);
                *unread |= !s.keywords.contains(&"$seen".try_into().unwrap());
            }
            if !threads.is_empty() {
                let unread = threads.values().filter(|u| **u).count() as u64;
                out.push((f.id, threads.len() as u64, unread));
            }
        }
        out.sort_by_key(|(f, ..)| f.0);
        out
    };
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut deleted = false;
    for step in 0..400 {
        let folders = if deleted {
            vec![inbox, archive]
        } else {
            vec![inbox, archive, extra]
        };
        let f = folders[next(folders.len() as u64) as usize];
        let index = mb.folder_index(f).unwrap();
        let pick = |r: u64| index.get(r as usize % index.len().max(1)).copied();
        match next(9) {
            0..=2 => {
                // A new thread, or a reply to one of a few earlier ones.
                let topic = next(12);
                let raw = format!(
                    "From: a@b.c\r\nSubject: t{topic}\r\nMessage-ID: <s{step}@x>\r\n\
                     References: <s{}@x>\r\n\r\nbody {step}\r\n",
                    topic
                );
                let kw: &[&str] = if next(2) == 0 { &["$seen"] } else { &[] };
                mb.append(f, raw.as_bytes(), &common::with_keywords(kw))
                    .unwrap();
            }
            3 => {
                if let Some((uid, _)) = pick(next(100)) {
                    let to = folders[next(folders.len() as u64) as usize];
                    mb.copy(f, &[uid], to).unwrap();
                }
            }
            4 => {
                if let Some((uid, _)) = pick(next(100)) {
                    let to = folders[next(folders.len() as u64) as usize];
                    if to != f {
                        mb.move_messages(f, &[uid], to).unwrap();
                    }
                }
            }
            5 => {
                if let Some((uid, _)) = pick(next(100)) {
                    mb.expunge(f, Some(&[uid])).unwrap();
                }
            }
            6 | 7 => {
                if let Some((_, e)) = pick(next(100)) {
                    let (add, remove) = if next(2) == 0 {
                        (vec![seen.clone()], vec![])
                    } else {
                        (vec![], vec![seen.clone()])
                    };
                    mb.set_keywords(&[e], &add, &remove).unwrap();
                }
            }
            _ => {
                if let Some((_, e)) = pick(next(100)) {
                    mb.destroy_emails(&[e]).unwrap();
                }
            }
        }
        if step == 300 {
            mb.delete_folder(extra).unwrap();
            deleted = true;
        }
        assert_eq!(mb.thread_counts().unwrap(), counted(&mb), "step {step}");
    }
}

/// Thread counts per folder: a thread counts once however many of its
/// emails a folder holds, and is unread while one of them lacks `$seen`.
#[test]
fn thread_counts_per_folder() {
    let (_d, mut mb) = common::mailbox();
    let inbox = mb.folder_by_role(Role::Inbox).unwrap().id;
    let archive = mb.folder_by_role(Role::Archive).unwrap().id;
    let opts = AppendOptions::default();
    let first = mb
        .append(inbox, &common::msg("a@b.c", "d@e.f", "plans", "x"), &opts)
        .unwrap();
    let reply = b"From: d@e.f\r\nSubject: Re: plans\r\nMessage-ID: <r@test>\r\n\
                  In-Reply-To: <plans@test>\r\n\r\nyes\r\n";
    mb.append(inbox, reply, &common::with_keywords(&["$seen"]))
        .unwrap();
    mb.append(
        archive,
        &common::msg("a@b.c", "d@e.f", "old", "x"),
        &common::with_keywords(&["$seen"]),
    )
    .unwrap();
    let counts = mb.thread_counts().unwrap();
    let of = |f| {
        counts
            .iter()
            .find(|(g, ..)| *g == f)
            .map(|(_, t, u)| (*t, *u))
    };
    assert_eq!(
        of(inbox),
        Some((1, 1)),
        "one thread, unread by its first email"
    );
    assert_eq!(of(archive), Some((1, 0)));
    mb.set_keywords(&[first.email_id], &[Keyword::seen()], &[])
        .unwrap();
    let counts = mb.thread_counts().unwrap();
    assert_eq!(
        counts
            .iter()
            .find(|(g, ..)| *g == inbox)
            .map(|(_, t, u)| (*t, *u)),
        Some((1, 0))
    );
}
