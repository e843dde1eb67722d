//! A fuzz run over the SMTP session state machine, on the MX and on
//! submission: sequences of commands assembled from SMTP's grammar (valid
//! and broken, with DATA messages and BDAT chunks of the announced size),
//! sent to a real server. Every command must get a well-formed reply (or
//! the connection closes after a 221/421/500), and the server must stay up.
//! `FUZZ_CASES` sets the number of sequences (default 64; CI runs more).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Client, node};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// Command verbs. DATA and BDAT come as their own steps, with the message
/// or chunk a client sends after them.
const VERBS: &[&str] = &[
    "EHLO",
    "HELO",
    "MAIL FROM:",
    "RCPT TO:",
    "RSET",
    "NOOP",
    "QUIT",
    "VRFY",
    "EXPN",
    "HELP",
    "STARTTLS",
    "AUTH",
    "mail from:",
    "rcpt to:",
    "XYZZY",
    "",
];

const ARGS: &[&str] = &[
    "<ana@example.com>",
    "<bo@example.com>",
    "<ANA@EXAMPLE.COM>",
    "<nobody@example.com>",
    "<x@far.example>",
    "<>",
    "<@route.example:ana@example.com>",
    "<\"quoted local\"@example.com>",
    "<josé@exämple.org>",
    "ana@example.com",
    "<unterminated@example.com",
    "<a@>",
    "<@b>",
    "SIZE=10",
    "SIZE=99999999999",
    "SIZE=x",
    "BODY=8BITMIME",
    "BODY=BINARYMIME",
    "SMTPUTF8",
    "NOTIFY=NEVER",
    "PLAIN",
    "LOGIN",
    "PLAIN AGFuYQB3cm9uZw==",
    "PLAIN ====",
    "CRAM-MD5",
    "LAST",
    "0",
    "5",
    "client.example",
    "[127.0.0.1]",
    "\u{0}",
    "\u{7f}",
    "é",
];

/// One step: a command line, the message for a DATA, the chunk of a BDAT.
#[derive(Debug, Clone)]
enum Step {
    Line(String),
    Data(Vec<String>),
    Bdat(u8, bool),
    Raw(Vec<u8>),
}

fn step() -> impl Strategy<Value = Step> {
    let line = (
        prop::sample::select(VERBS),
        prop::collection::vec(prop::sample::select(ARGS), 0..4),
    )
        .prop_map(|(v, a)| {
            let sep = if v.ends_with(':') { "" } else { " " };
            Step::Line(format!("{v}{sep}{}", a.join(" ")).trim_end().to_string())
        });
    let data = prop::collection::vec(
        prop::sample::select(
            &[
                "Subject: fuzz",
                "",
                ".",
                "..",
                ".leading dot",
                "plain line",
                "caf\u{e9}",
            ][..],
        ),
        0..8,
    )
    .prop_map(|l| Step::Data(l.into_iter().map(str::to_string).collect()));
    let bdat = (0u8..40, any::<bool>()).prop_map(|(n, last)| Step::Bdat(n, last));
    // Raw bytes without a line end (a line end could announce a BDAT
    // whose chunk never comes).
    let raw = prop::collection::vec(any::<u8>().prop_filter("no LF", |b| *b != b'\n'), 0..80)
        .prop_map(Step::Raw);
    prop_oneof![6 => line, 2 => data, 1 => bdat, 1 => raw]
}

/// Whether a reply is well formed: lines of a 3-digit code and `-` or ` `.
fn well_formed(reply: &str) -> bool {
    !reply.is_empty()
        && reply.lines().all(|l| {
            l.len() >= 3
                && l.as_bytes()[..3].iter().all(u8::is_ascii_digit)
                && matches!(l.as_bytes().get(3), None | Some(b' ') | Some(b'-'))
        })
}

async fn run_case(addr: std::net::SocketAddr, steps: &[Step]) -> Result<(), String> {
    let mut c = Client::connect(addr).await;
    for s in steps {
        let reply = match s {
            Step::Line(l) => c.cmd(l).await,
            Step::Raw(bytes) => {
                let mut b = bytes.clone();
                b.extend_from_slice(b"\r\n");
                c.r.get_mut()
                    .write_all(&b)
                    .await
                    .map_err(|e| e.to_string())?;
                c.reply().await
            }
            Step::Data(lines) => {
                let r = c.cmd("DATA").await;
                if r.starts_with("354") {
                    let mut body = String::new();
                    for l in lines {
                        // Stuffed as a client must.
                        if l.starts_with('.') {
                            body.push('.');
                        }
                        body.push_str(l);
                        body.push_str("\r\n");
                    }
                    body.push_str(".\r\n");
                    c.r.get_mut()
                        .write_all(body.as_bytes())
                        .await
                        .map_err(|e| e.to_string())?;
                    c.reply().await
                } else {
                    r
                }
            }
            Step::Bdat(n, last) => {
                let mut b =
                    format!("BDAT {n}{}\r\n", if *last { " LAST" } else { "" }).into_bytes();
                b.extend(std::iter::repeat_n(b'z', usize::from(*n)));
                c.r.get_mut()
                    .write_all(&b)
                    .await
                    .map_err(|e| e.to_string())?;
                c.reply().await
            }
        };
        if reply.is_empty() {
            // Closed: only after a reply that said so.
            return Ok(());
        }
        if !well_formed(&reply) {
            return Err(format!("{s:?} got {reply:?}"));
        }
        if reply.starts_with("221")
            || reply.starts_with("421")
            || reply.starts_with("500 5.5.2 Line")
        {
            let mut rest = String::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), c.r.read_line(&mut rest)).await;
            return Ok(());
        }
    }
    Ok(())
}

#[test]
fn every_command_is_answered_and_the_server_stays_up() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (mx, sub) = rt.block_on(async {
        let mx = node(&["ana@example.com", "bo@example.com"], None).await;
        let sub = node(
            &["ana@example.com"],
            Some(vec![("*".into(), "127.0.0.1:9".into())]),
        )
        .await;
        (mx, sub)
    });
    let cases = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(64);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let addrs = [mx.addr, sub.addr];
    runner
        .run(
            &(any::<bool>(), prop::collection::vec(step(), 1..14)),
            |(on_sub, steps)| {
                let addr = addrs[usize::from(on_sub)];
                let r = rt.block_on(async {
                    tokio::time::timeout(Duration::from_secs(30), run_case(addr, &steps)).await
                });
                match r {
                    Err(_) => Err(TestCaseError::fail(format!("hung on {steps:?}"))),
                    Ok(Err(e)) => Err(TestCaseError::fail(e)),
                    Ok(Ok(())) => Ok(()),
                }
            },
        )
        .unwrap();
    // Still serving.
    rt.block_on(async {
        for addr in addrs {
            let mut c = Client::connect(addr).await;
            assert!(c.cmd("NOOP").await.starts_with("250"));
        }
    });
}
