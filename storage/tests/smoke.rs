//! Smoke test: the main paths of a mailbox work together.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use cofre_storage::Role;
use cofre_storage::mailbox::{AppendOptions, Filter, Query, TextField};

#[test]
fn append_read_search_export() {
    let (dir, mut mb) = common::mailbox();
    let inbox = mb.folder_by_role(Role::Inbox).unwrap();
    let raw = common::msg(
        "ana@example.org",
        "bob@example.net",
        "Quarterly numbers",
        "The margin grew.",
    );
    let a = mb
        .append(inbox.id, &raw, &AppendOptions::default())
        .unwrap();
    assert_eq!(mb.raw(a.email_id).unwrap(), raw);
    let s = mb.summary(a.email_id).unwrap();
    assert_eq!(s.subject, "Quarterly numbers");
    let hits = mb
        .search(&Query::in_folder(
            inbox.id,
            Filter::Contains(TextField::Body, "MARGIN".into()),
        ))
        .unwrap();
    assert_eq!(hits.len(), 1);
    let hits = mb
        .search(&Query::in_folder(
            inbox.id,
            Filter::Words(TextField::Text, "margin quarterly".into()),
        ))
        .unwrap();
    assert_eq!(hits.len(), 1);
    let out = dir.path().join("export.db");
    cofre_storage::export::export(&mb, &cofre_storage::Password::new("pw 'quote"), &out).unwrap();
    assert!(out.exists());
}
