//! A fuzz run over the POP3 session: sequences of commands assembled from
//! POP3's grammar (valid and broken) and raw bytes, before and after
//! login, sent to a real server. Every command must get exactly one
//! status line (`+OK`/`-ERR`, or the `+ ` of AUTH), a multi-line answer
//! must end, the maildrop must not change without QUIT, and the server
//! must stay up. `FUZZ_CASES` sets the number of sequences (default 64).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Client, message, server};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const VERBS: &[&str] = &[
    "USER", "PASS", "APOP", "AUTH", "STLS", "CAPA", "STAT", "LIST", "UIDL", "TOP", "RETR", "DELE",
    "RSET", "NOOP", "XTND", "", "stat", "Retr", "LAST",
];

const ARGS: &[&str] = &[
    "1",
    "2",
    "3",
    "0",
    "-1",
    "99999999999999999999",
    "x",
    "1 2",
    "1 0",
    "1 -5",
    "PLAIN",
    "PLAIN =",
    "PLAIN AGFuYQBiYWQ=",
    "*",
    " ",
    "\t",
    "ü",
    "1 1 1",
];

fn line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => (prop::sample::select(VERBS), prop::option::of(prop::sample::select(ARGS)))
            .prop_map(|(v, a)| match a {
                Some(a) => format!("{v} {a}").into_bytes(),
                None => v.as_bytes().to_vec(),
            }),
        // Raw bytes without line ends (a line end would split the line).
        1 => prop::collection::vec(any::<u8>().prop_filter("no line end", |b| *b != b'\n' && *b != b'\r'), 0..300),
    ]
}

/// Whether a command's answer is multi-line when it succeeds.
fn multi(l: &[u8]) -> bool {
    let s = String::from_utf8_lossy(l).to_ascii_uppercase();
    let mut w = s.split(' ').filter(|x| !x.is_empty());
    matches!(
        (w.next(), w.next()),
        (Some("CAPA" | "RETR" | "TOP"), _) | (Some("LIST" | "UIDL" | "AUTH"), None)
    )
}

async fn read_line(r: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut l = Vec::new();
    match tokio::time::timeout(Duration::from_secs(10), r.read_until(b'\n', &mut l)).await {
        Ok(Ok(n)) if n > 0 => Some(l),
        Ok(_) => None,
        Err(_) => panic!("no answer within 10 s"),
    }
}

#[test]
fn random_command_sequences_are_always_answered() {
    let cases = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s = rt.block_on(async {
        let s = server().await;
        let mut imap = Client::login(&s, 0).await;
        for i in 0..3 {
            imap.append("INBOX", "", &message(&format!("m{i}"), ".dot\r\nbody"))
                .await;
        }
        s
    });
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    // Logged-in sequences first: the sequences before login fail logins,
    // and after 20 failures the shared throttle refuses this IP.
    let sequences = prop::collection::vec(line(), 1..25);
    for log_in in [true, false] {
        runner
            .run(&sequences, |lines| {
                rt.block_on(async {
                    let stream = TcpStream::connect(s.pop3).await.unwrap();
                    let mut r = BufReader::new(stream);
                    assert!(read_line(&mut r).await.unwrap().starts_with(b"+OK"));
                    if log_in {
                        // The last case's session may still be ending
                        // (the lock goes with it): try again briefly.
                        let (u, p) = &s.users[0];
                        let mut tries = 0;
                        loop {
                            r.get_mut()
                                .write_all(format!("USER {u}\r\nPASS {p}\r\n").as_bytes())
                                .await
                                .unwrap();
                            read_line(&mut r).await.unwrap();
                            let l = read_line(&mut r).await.unwrap();
                            if l.starts_with(b"+OK") {
                                break;
                            }
                            tries += 1;
                            assert!(
                                tries < 100 && l.starts_with(b"-ERR [IN-USE]"),
                                "{}",
                                String::from_utf8_lossy(&l)
                            );
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                    for l in &lines {
                        let mut cmd = l.clone();
                        cmd.extend_from_slice(b"\r\n");
                        r.get_mut().write_all(&cmd).await.unwrap();
                        let Some(status) = read_line(&mut r).await else {
                            panic!("closed after {:?}", String::from_utf8_lossy(l));
                        };
                        if status.starts_with(b"+ ") {
                            // AUTH PLAIN waits for its response: cancel.
                            r.get_mut().write_all(b"*\r\n").await.unwrap();
                            let e = read_line(&mut r).await.unwrap();
                            assert!(e.starts_with(b"-ERR"), "{}", String::from_utf8_lossy(&e));
                            continue;
                        }
                        assert!(
                            status.starts_with(b"+OK") || status.starts_with(b"-ERR"),
                            "{:?} -> {:?}",
                            String::from_utf8_lossy(l),
                            String::from_utf8_lossy(&status)
                        );
                        if status.starts_with(b"+OK") && multi(l) {
                            while read_line(&mut r).await.unwrap() != b".\r\n" {}
                        }
                    }
                    // No QUIT: whatever was marked stays.
                });
                Ok(())
            })
            .unwrap();
    }
    // The maildrop is whole and the server still answers.
    rt.block_on(async {
        let mut imap = Client::login(&s, 0).await;
        let r = imap.ok("STATUS INBOX (MESSAGES)").await.join("");
        assert!(r.contains("MESSAGES 3"), "{r}");
    });
}
