//! Protocol traces from RFC examples, replayed against the server: `C:`
//! lines are sent, `S:` lines must come back byte for byte, except where a
//! trace writes `{?}` for a value this run chose (UIDVALIDITY, MODSEQ,
//! internal dates). Traces live in `tests/traces/`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Client, server};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// Whether `line` matches `pattern`, where `{?}` matches any run of bytes.
fn matches(pattern: &str, line: &str) -> bool {
    let parts: Vec<&str> = pattern.split("{?}").collect();
    let Some(rest) = line.strip_prefix(parts[0]) else {
        return false;
    };
    let mut rest = rest;
    for (i, part) in parts.iter().enumerate().skip(1) {
        let last = i == parts.len() - 1;
        if last {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(p) if !part.is_empty() => rest = &rest[p + part.len()..],
            _ => return false,
        }
    }
    rest.is_empty()
}

/// The RFC 9051 §8 message: a 342-byte header, 92 lines of body.
fn sample_message() -> Vec<u8> {
    let mut m = b"Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\r\n\
From: Terry Gray <gray@cac.washington.edu>\r\n\
Subject: IMAP4rev2 WG mtg summary and minutes\r\n\
To: imap@cac.washington.edu\r\n\
cc: minutes@CNRI.Reston.VA.US, John Klensin <KLENSIN@MIT.EDU>\r\n\
Message-Id: <B27397-0100000@cac.washington.edu>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n\r\n"
        .to_vec();
    for i in 0..92 {
        let width = if i < 84 { 31 } else { 30 };
        m.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, width));
        m.extend_from_slice(b"\r\n");
    }
    m
}

async fn replay(name: &str, seed: &[u8]) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/traces")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let s = server().await;
    {
        let mut c = Client::login(&s, 0).await;
        c.append("INBOX", "", seed).await;
    }
    let (user, pass) = &s.users[0];
    let stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let mut r = tokio::io::BufReader::new(stream);
    let mut pending_c: Vec<String> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(c) = line.strip_prefix("C:") {
            pending_c.push(
                c.strip_prefix(' ')
                    .unwrap_or(c)
                    .replace("{USER}", user)
                    .replace("{PASS}", &format!("\"{pass}\"")),
            );
            continue;
        }
        let expected = line
            .strip_prefix("S:")
            .unwrap_or_else(|| panic!("{name}:{}: not C: or S:", n + 1));
        let expected = expected.strip_prefix(' ').unwrap_or(expected);
        if !pending_c.is_empty() {
            let mut bytes = pending_c.join("\r\n").into_bytes();
            bytes.extend_from_slice(b"\r\n");
            r.get_mut().write_all(&bytes).await.unwrap();
            pending_c.clear();
        }
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), r.read_until(b'\n', &mut got))
            .await
            .unwrap_or_else(|_| panic!("{name}:{}: no answer for {expected:?}", n + 1))
            .unwrap();
        let got = String::from_utf8_lossy(&got);
        let got = got.strip_suffix("\r\n").unwrap_or(&got);
        assert!(
            matches(expected, got),
            "{name}:{}:\nexpected {expected:?}\n     got {got:?}",
            n + 1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9051_sample_session() {
    replay("rfc9051-sample.trace", &sample_message()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc4315_uidplus() {
    replay("rfc4315-uidplus.trace", b"Subject: one\r\n\r\nx\r\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc7162_condstore() {
    replay("rfc7162-condstore.trace", b"Subject: one\r\n\r\nx\r\n").await;
}

#[test]
fn patterns() {
    assert!(matches("a {?} c", "a bb c"));
    assert!(matches("x{?}", "xyz"));
    assert!(!matches("a {?} c", "a bb d"));
    assert!(matches("[{?}] {?} +0000", "[1] 17-Jul-1996 09:00:00 +0000"));
}
