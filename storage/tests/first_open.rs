//! The first mailboxes a process opens, opened at the same instant from many
//! threads, all open: SQLCipher finishes its one-time setup after SQLite
//! marks itself initialised, and a key set in between used to be refused
//! ("An error occurred with PRAGMA key or rekey").
//!
//! This must stay the only test in its binary: it is about the first opens.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Barrier};

use cofre_storage::{Mailbox, MailboxOptions, SecretKey};

#[test]
fn many_threads_can_open_the_first_mailboxes_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let threads = 16;
    let start = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let path = dir.path().join(format!("{i}.sqlite"));
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                Mailbox::create(&path, &SecretKey::generate(), MailboxOptions::default())
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
        })
        .collect();
    let failures: Vec<String> = handles
        .into_iter()
        .filter_map(|h| h.join().unwrap().err())
        .collect();
    assert!(failures.is_empty(), "{failures:?}");
}
