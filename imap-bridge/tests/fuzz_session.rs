//! A fuzz run over the session state machine, in the authenticated and the
//! selected states: sequences of commands assembled from IMAP's grammar
//! (valid and broken) and raw bytes, sent to a real server. Every command
//! must get its tagged answer (or a BYE), and the server must stay up.
//! `FUZZ_CASES` sets the number of sequences (default 64; CI runs more).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Client, message, server};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const NAMES: &[&str] = &[
    "FETCH",
    "UID FETCH",
    "STORE",
    "UID STORE",
    "SEARCH",
    "UID SEARCH",
    "COPY",
    "UID MOVE",
    "MOVE",
    "EXPUNGE",
    "UID EXPUNGE",
    "SELECT",
    "EXAMINE",
    "STATUS",
    "LIST",
    "LSUB",
    "CREATE",
    "DELETE",
    "RENAME",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "APPEND",
    "NOOP",
    "CHECK",
    "CLOSE",
    "UNSELECT",
    "SORT",
    "UID SORT",
    "THREAD",
    "ENABLE",
    "ID",
    "NAMESPACE",
    "GETQUOTAROOT",
    "GETQUOTA",
    "CAPABILITY",
    "ESEARCH",
    "COMPRESS",
    "XYZZY",
];

const ARGS: &[&str] = &[
    "1",
    "*",
    "1:*",
    "2:4",
    "4294967295",
    "0",
    "1,3:*",
    "INBOX",
    "Trash",
    "\"a b\"",
    "\"\"",
    "Work/Sub",
    "&AOQ-",
    "&bad",
    "(FLAGS)",
    "(UID FLAGS ENVELOPE BODYSTRUCTURE)",
    "BODY[]",
    "BODY.PEEK[1.MIME]",
    "BODY[HEADER.FIELDS (SUBJECT)]<0.10>",
    "BINARY[1]",
    "BINARY.SIZE[2]",
    "RFC822",
    "FULL",
    "+FLAGS",
    "-FLAGS.SILENT",
    "FLAGS",
    "(\\Seen \\Deleted)",
    "($x)",
    "(\\Bogus)",
    "ALL",
    "UNSEEN",
    "OR",
    "NOT",
    "SUBJECT",
    "HEADER",
    "SINCE",
    "1-Jan-2020",
    "LARGER",
    "UID",
    "(CHANGEDSINCE 1)",
    "(UNCHANGEDSINCE 0)",
    "(CONDSTORE)",
    "RETURN",
    "(MIN MAX COUNT ALL)",
    "(REVERSE DATE)",
    "UTF-8",
    "REFERENCES",
    "ORDEREDSUBJECT",
    "(MESSAGES UIDNEXT SIZE DELETED)",
    "\"*\"",
    "%",
    "(",
    ")",
    "[",
    "]",
    "{3+}\r\nabc",
    "{0+}\r\n",
    "QRESYNC",
    "(QRESYNC (1 1 1:*))",
    "NIL",
    "DEFLATE",
    "\"12-Mar-2021 10:00:00 +0000\"",
];

fn command() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => (
            proptest::sample::select(NAMES),
            proptest::collection::vec(proptest::sample::select(ARGS), 0..6)
        )
            .prop_map(|(name, args)| {
                let mut s = name.to_string();
                for a in args {
                    s.push(' ');
                    s.push_str(a);
                }
                s.into_bytes()
            }),
        1 => proptest::collection::vec(
            any::<u8>().prop_filter("no line ends", |b| *b != b'\n' && *b != b'\r'),
            0..80
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_commands_always_get_an_answer() {
    let s = server().await;
    {
        let mut c = Client::login(&s, 0).await;
        for i in 0..4 {
            c.append("INBOX", "", &message(&format!("f{i}"), "body"))
                .await;
        }
        c.ok("CREATE Work/Sub").await;
    }
    let cases: u32 = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (any::<bool>(), proptest::collection::vec(command(), 1..12));
    let handle = tokio::runtime::Handle::current();
    let s = &s;
    let result = runner.run(&strategy, |(select, cmds)| {
        tokio::task::block_in_place(|| {
            handle.block_on(async {
                let mut c = Client::login(s, 0).await;
                if select {
                    c.ok("SELECT INBOX").await;
                }
                for (i, cmd) in cmds.iter().enumerate() {
                    let tag = format!("z{i}");
                    let mut line = format!("{tag} ").into_bytes();
                    line.extend_from_slice(cmd);
                    line.extend_from_slice(b"\r\n");
                    c.send(&line).await;
                    // Every command ends in its tagged answer, an untagged
                    // BAD (no tag could be read), or BYE.
                    loop {
                        let r = tokio::time::timeout(Duration::from_secs(10), c.response())
                            .await
                            .expect("an answer");
                        if r.starts_with("+ ") {
                            // A continuation (IDLE, AUTHENTICATE): end it.
                            c.send(b"DONE\r\n").await;
                            continue;
                        }
                        if r.starts_with(&format!("{tag} OK DEFLATE")) {
                            // The rest of this connection is compressed;
                            // compress_deflate_carries_the_session covers it.
                            return Ok(());
                        }
                        if r.starts_with(&format!("{tag} ")) || r.starts_with("* BAD") {
                            break;
                        }
                        if r.starts_with("* BYE") {
                            return Ok(());
                        }
                    }
                }
                // The server still serves this connection.
                c.ok("NOOP").await;
                Ok(())
            })
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // And new connections.
    let mut c = Client::login(s, 1).await;
    c.ok("SELECT INBOX").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_caps_say_bye() {
    let s = common::server_with(|c| c.max_per_ip = 2).await;
    let (_a, _) = Client::connect(s.addr).await;
    let (_b, _) = Client::connect(s.addr).await;
    let (_c, greeting) = Client::connect(s.addr).await;
    assert!(greeting.starts_with("* BYE [UNAVAILABLE]"), "{greeting}");
    drop(_a);
    // The slot frees when the connection ends.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_d, greeting) = Client::connect(s.addr).await;
    assert!(greeting.starts_with("* OK"), "{greeting}");
}
