//! Nothing under `data/` holds a message's plaintext: after a realistic
//! workload (deliveries, queueing, drain, flag changes, deletes, an export),
//! every byte of every file is scanned for the messages' subjects, bodies,
//! addresses and attachment bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use cofre_storage::Role;
use cofre_storage::mailbox::{AppendOptions, Filter, Query, TextField};

const SECRETS: &[&str] = &[
    "Zanzibar-merger-plan",
    "the launch codes are 7734",
    "whistleblower@source.example",
    "Ingrid Bergstrom-Nakamura",
    "ATTACHMENT-PLAINTEXT-MARKER",
];

fn workload_messages() -> Vec<Vec<u8>> {
    let attachment = "ATTACHMENT-PLAINTEXT-MARKER ".repeat(200);
    let mut v = vec![
        "From: Ingrid Bergstrom-Nakamura <whistleblower@source.example>\r\nTo: hello@example.com\r\n\
         Subject: Zanzibar-merger-plan\r\nMessage-ID: <s1@source.example>\r\n\r\n\
         the launch codes are 7734\r\n"
            .as_bytes()
            .to_vec(),
        format!(
            "From: whistleblower@source.example\r\nTo: hello@example.com\r\nSubject: files\r\n\
             MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n--XX\r\n\
             Content-Type: text/plain\r\n\r\nsee attached\r\n--XX\r\n\
             Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=a.txt\r\n\r\n\
             {attachment}\r\n--XX--\r\n"
        )
        .into_bytes(),
    ];
    for i in 0..50 {
        v.push(common::msg(
            "Ingrid Bergstrom-Nakamura <whistleblower@source.example>",
            "hello@example.com",
            &format!("Zanzibar-merger-plan part {i}"),
            &"the launch codes are 7734. ".repeat(40),
        ));
    }
    v
}

fn scan(dir: &Path, found: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            scan(&path, found);
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        for s in SECRETS {
            let needle = s.as_bytes();
            if bytes.windows(needle.len()).any(|w| w == needle) {
                found.push(format!("{} contains {s:?}", path.display()));
            }
        }
    }
}

#[test]
fn the_scan_finds_plaintext_when_it_is_there() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("sub")).unwrap();
    std::fs::write(
        tmp.path().join("sub/control"),
        b"xx the launch codes are 7734 xx",
    )
    .unwrap();
    let mut found = Vec::new();
    scan(tmp.path(), &mut found);
    assert_eq!(found.len(), 1);
}

#[test]
fn no_plaintext_anywhere_under_data() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let store = common::store(&data);
    let (address, password, unlocked) = common::alias(&store, "hello@example.com");
    let msgs = workload_messages();

    // Offline delivery: sealed into the queue.
    for m in &msgs[..10] {
        store.enqueue(&address, m).unwrap();
    }
    // Online: straight into the mailbox, then the queue drains into it.
    let mut mb = store.open_mailbox(&unlocked).unwrap();
    let inbox = mb.folder_by_role(Role::Inbox).unwrap().id;
    for m in &msgs[10..] {
        mb.append(inbox, m, &AppendOptions::default()).unwrap();
    }
    // Scan while the WAL is hot (before any checkpoint), and the queue full.
    let mut found = Vec::new();
    scan(&data, &mut found);
    assert!(found.is_empty(), "plaintext on disk:\n{}", found.join("\n"));

    assert_eq!(store.drain(&unlocked, &mut mb).unwrap(), 10);
    let hits = mb
        .search(&Query::in_folder(
            inbox,
            Filter::Contains(TextField::Text, "launch codes".into()),
        ))
        .unwrap();
    assert_eq!(
        hits.len(),
        51,
        "the workload really is readable with the key"
    );
    let ids: Vec<_> = hits.iter().take(5).map(|h| h.email_id).collect();
    mb.set_keywords(&ids, &[cofre_storage::Keyword::seen()], &[])
        .unwrap();
    mb.destroy_emails(&ids[..2]).unwrap();

    let export = data.join("export.db");
    store.export(&unlocked, &password, &export).unwrap();
    assert!(std::fs::metadata(&export).unwrap().len() > 0);
    let wal = std::fs::read_dir(data.join("mailboxes"))
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| e.path().to_string_lossy().ends_with("-wal"));
    assert!(wal, "the workload left a WAL file to scan");

    scan(&data, &mut found);
    assert!(found.is_empty(), "plaintext on disk:\n{}", found.join("\n"));
}
