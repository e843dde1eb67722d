//! Append then read returns the identical bytes, for any message: a varied
//! hand-made corpus, generated messages (proptest), and a 20 MB attachment.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use cofre_storage::mailbox::AppendOptions;
use cofre_storage::{Error, Mailbox, Role};
use proptest::prelude::*;

fn corpus() -> Vec<Vec<u8>> {
    let b64 = "TG9yZW0gaXBzdW0gZG9sb3Igc2l0IGFtZXQsIGNvbnNlY3RldHVyIGFkaXBpc2NpbmcgZWxpdA==\r\n"
        .repeat(60);
    vec![
        // Plain, CRLF.
        b"From: a@b.c\r\nSubject: hi\r\n\r\nbody\r\n".to_vec(),
        // Bare LF line endings, and a mix.
        b"From: a@b.c\nSubject: lf only\n\nline one\nline two\n".to_vec(),
        b"From: a@b.c\r\nSubject: mixed\n\r\nx\ry\r\nz\n".to_vec(),
        // 8-bit in headers and body, invalid UTF-8 included.
        b"From: J\xc3\xbcrgen <j@b.c>\r\nSubject: caf\xe9 \xff\xfe\r\n\r\n\xe4\xf6\xfc\x00 nul\r\n".to_vec(),
        // RFC 2047 encoded words, folded headers.
        b"Subject: =?utf-8?B?w6nDqcOp?=\r\n =?iso-8859-1?q?=E9t=E9?=\r\nTo: x@y.z,\r\n\tw@y.z\r\n\r\nb\r\n".to_vec(),
        // Multipart with an attachment, and a nested message/rfc822.
        format!(
            "From: a@b.c\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"OUT\"\r\n\r\n\
             preamble\r\n--OUT\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n--OUT\r\n\
             Content-Type: application/pdf; name=\"x.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}--OUT\r\n\
             Content-Type: message/rfc822\r\n\r\nFrom: inner@b.c\r\nSubject: inner\r\n\
             Content-Type: multipart/alternative; boundary=\"IN\"\r\n\r\n--IN\r\nContent-Type: text/plain\r\n\r\n\
             inner text\r\n--IN\r\nContent-Type: text/html\r\n\r\n<p>inner</p>\r\n--IN--\r\n\r\n--OUT--\r\nepilogue\r\n"
        )
        .into_bytes(),
        // Broken MIME: missing final boundary, unknown encoding, bad base64.
        b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not base64!!!\r\n--zz\r\nContent-Transfer-Encoding: x-unknown\r\n\r\n\xff\r\n".to_vec(),
        // No header/body separator at all; no trailing newline.
        b"Subject: no body".to_vec(),
        // Not MIME at all.
        b"\x00\x01\x02garbage\xff\xfe\xfd".to_vec(),
        // Only a body.
        b"\r\n\r\njust a body".to_vec(),
        // Truncated in the middle of a header and of a multipart.
        b"From: a@b.c\r\nContent-Type: multipart/mixed; bound".to_vec(),
    ]
}

#[test]
fn corpus_round_trips_byte_for_byte() {
    let (_d, mut mb) = common::mailbox();
    let inbox = mb.folder_by_role(Role::Inbox).unwrap().id;
    for raw in corpus() {
        let a = mb.append(inbox, &raw, &AppendOptions::default()).unwrap();
        assert_eq!(mb.raw(a.email_id).unwrap(), raw);
        assert_eq!(mb.summary(a.email_id).unwrap().size, raw.len() as u64);
    }
}

#[test]
fn twenty_megabyte_attachment_round_trips() {
    let (_d, mut mb) = common::mailbox();
    let inbox = mb.folder_by_role(Role::Inbox).unwrap().id;
    // Pseudo-random bytes, base64-encoded in 76-column lines: incompressible.
    let mut x = 0x1234_5678_9abc_def0u64;
    let mut line = String::new();
    let mut body = String::with_capacity(21 << 20);
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    while body.len() < 20 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        line.push(A[(x & 63) as usize] as char);
        if line.len() == 76 {
            body.push_str(&line);
            body.push_str("\r\n");
            line.clear();
        }
    }
    let raw = format!(
        "From: a@b.c\r\nSubject: big\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n\
         --B\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--B\r\nContent-Type: application/octet-stream\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{body}--B--\r\n"
    )
    .into_bytes();
    assert!(raw.len() > 20 << 20);
    let a = mb.append(inbox, &raw, &AppendOptions::default()).unwrap();
    assert!(
        mb.raw(a.email_id).unwrap() == raw,
        "20 MB message differs after storage"
    );
    assert!(mb.summary(a.email_id).unwrap().has_attachment);
}

fn header_line() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(vec![
            "From",
            "To",
            "Subject",
            "X-Custom",
            "Content-Type",
            "Date",
            "Message-ID",
        ]),
        prop::collection::vec(any::<u8>(), 0..60),
        prop::sample::select(vec![&b"\r\n"[..], &b"\n"[..], &b"\r\n\t"[..]]),
    )
        .prop_map(|(name, value, eol)| {
            let mut v = name.as_bytes().to_vec();
            v.extend_from_slice(b": ");
            v.extend(value.into_iter().filter(|b| *b != b'\n' && *b != b'\r'));
            v.extend_from_slice(eol);
            v
        })
}

fn message() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // Header block + arbitrary body.
        (
            prop::collection::vec(header_line(), 0..8),
            prop::sample::select(vec![&b"\r\n"[..], &b"\n"[..], &b""[..]]),
            prop::collection::vec(any::<u8>(), 0..4000),
        )
            .prop_map(|(h, sep, body)| {
                let mut v: Vec<u8> = h.concat();
                v.extend_from_slice(sep);
                v.extend(body);
                v
            }),
        // Multipart with a generated attachment big enough to be deduplicated.
        (
            prop::collection::vec(any::<u8>(), 0..200),
            prop::collection::vec(prop::sample::select(b"ABCDEFabcdef0123456789+/".to_vec()), 1000..5000),
            any::<bool>(),
        )
            .prop_map(|(text, att, crlf)| {
                let nl = if crlf { "\r\n" } else { "\n" };
                let mut v = format!(
                    "Subject: gen{nl}Content-Type: multipart/mixed; boundary=Q{nl}{nl}--Q{nl}Content-Type: text/plain{nl}{nl}"
                )
                .into_bytes();
                v.extend(text);
                v.extend(format!("{nl}--Q{nl}Content-Type: image/png{nl}Content-Transfer-Encoding: base64{nl}{nl}").bytes());
                v.extend(att);
                v.extend(format!("{nl}--Q--{nl}").bytes());
                v
            }),
        // Pure noise.
        prop::collection::vec(any::<u8>(), 1..3000),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn any_message_round_trips(raw in message().prop_filter("non-empty", |m| !m.is_empty())) {
        let (_d, mut mb) = common::mailbox();
        let inbox = mb.folder_by_role(Role::Inbox).unwrap().id;
        let a = mb.append(inbox, &raw, &AppendOptions::default()).unwrap();
        prop_assert_eq!(mb.raw(a.email_id).unwrap(), raw.clone());
        // Once more, so the second copy's attachment is deduplicated.
        let b = mb.append(inbox, &raw, &AppendOptions::default()).unwrap();
        prop_assert_eq!(mb.raw(b.email_id).unwrap(), raw);
    }
}

#[test]
fn bad_input_is_refused_clearly_or_stored_verbatim() {
    let dir = tempfile::tempdir().unwrap();
    let mut mb = Mailbox::create(
        &dir.path().join("m.sqlite"),
        &cofre_storage::SecretKey::generate(),
        cofre_storage::MailboxOptions {
            max_message_size: 1 << 20,
            ..Default::default()
        },
    )
    .unwrap();
    let inbox = mb.folder_by_role(Role::Inbox).unwrap().id;
    let err = mb
        .append(inbox, b"", &AppendOptions::default())
        .unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err}");
    assert!(err.to_string().contains("empty"));
    let big = vec![b'a'; (1 << 20) + 1];
    let err = mb
        .append(inbox, &big, &AppendOptions::default())
        .unwrap_err();
    assert!(
        matches!(err, Error::TooLarge { size, limit } if size == (1 << 20) + 1 && limit == 1 << 20)
    );
    assert_eq!(mb.email_count().unwrap(), 0, "nothing was stored");
    // A batch with one bad message stores none of it.
    let ok = common::msg("a@b.c", "d@e.f", "fine", "fine");
    let err = mb
        .append_batch(
            inbox,
            &[
                (&ok[..], AppendOptions::default()),
                (&b""[..], AppendOptions::default()),
            ],
        )
        .unwrap_err();
    assert!(matches!(err, Error::Invalid(_)));
    assert_eq!(mb.email_count().unwrap(), 0);
}

#[test]
fn hundred_megabytes_over_the_default_limit_is_refused() {
    let (_d, mut mb) = common::mailbox();
    let inbox = mb.folder_by_role(Role::Inbox).unwrap().id;
    let raw = vec![b'x'; 100 << 20];
    let err = mb
        .append(inbox, &raw, &AppendOptions::default())
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("exceeds the limit of 52428800 bytes"),
        "{err}"
    );
}
