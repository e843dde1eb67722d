//! The link protocol on bytes alone: encoding, limits, malformed input, the
//! node handshake, and requests carried out on a primary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use cofre_storage::link::{
    self, DecodeError, ErrorCode, Frame, Limits, Op, Reply, Request, Response, Side,
};
use cofre_storage::mailbox::{AppendOptions, Filter, Query, TextField};
use cofre_storage::primary::{Delivery, Primary, PrimaryConfig, SessionId};
use cofre_storage::{AliasAddress, Password, Role};
use proptest::prelude::*;

fn request(id: u64, op: Op) -> Vec<u8> {
    link::encode(&Frame::Request(Request { id, op }))
}

fn reply(primary: &Primary, id: u64, op: Op) -> Result<Reply, link::LinkError> {
    let bytes = link::handle(primary, request(id, op), Limits::default()).unwrap();
    match link::decode(&bytes, Limits::default()).unwrap() {
        Frame::Response(Response { id: got, result }) => {
            assert_eq!(got, id, "the response carries the request's id");
            result
        }
        other => panic!("not a response: {other:?}"),
    }
}

#[test]
fn message_bodies_cross_the_link_without_overhead() {
    let raw: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let op = Op::Deliver {
        address: AliasAddress::try_from("a@example.com").unwrap(),
        raw: raw.clone(),
        delivery_ref: Some("mx:1".into()),
    };
    let bytes = request(7, op);
    assert!(
        bytes.len() < raw.len() + 40,
        "{} bytes for a {} byte body",
        bytes.len(),
        raw.len()
    );
    match link::decode(&bytes, Limits::default()).unwrap() {
        Frame::Request(Request {
            id: 7,
            op: Op::Deliver { raw: got, .. },
        }) => assert_eq!(got, raw),
        other => panic!("{other:?}"),
    }
}

#[test]
fn oversized_malformed_and_invalid_frames_are_refused() {
    let small = Limits { max_frame: 100 };
    let big = request(
        1,
        Op::Logout {
            session: SessionId(1),
        },
    );
    assert!(matches!(
        link::decode(&[0u8; 101], small),
        Err(DecodeError::TooLarge {
            size: 101,
            limit: 100
        })
    ));
    assert!(matches!(
        link::decode(&[0xff, 0xff, 0xff], Limits::default()),
        Err(DecodeError::Malformed(_))
    ));
    let mut trailing = big.clone();
    trailing.push(0);
    assert!(matches!(
        link::decode(&trailing, Limits::default()),
        Err(DecodeError::Malformed(_))
    ));
    // A well-formed frame carrying an invalid address is refused while decoding.
    let login = request(
        2,
        Op::Login {
            address: AliasAddress::try_from("a@example.com").unwrap(),
            password: Password::new("p"),
        },
    );
    let at = login
        .windows(13)
        .position(|w| w == b"a@example.com")
        .unwrap();
    let mut bad = login.clone();
    bad[at + 1] = b' ';
    let err = link::decode(&bad, Limits::default()).unwrap_err();
    assert!(matches!(err, DecodeError::Malformed(_)), "{err}");
    // A primary given something other than a request says so.
    let tmp = tempfile::tempdir().unwrap();
    let primary = Primary::new(
        Arc::new(common::store(tmp.path())),
        PrimaryConfig::default(),
    );
    let not_request = link::encode(&Frame::Refused("x".into()));
    assert!(link::handle(&primary, &not_request, Limits::default()).is_err());
}

#[test]
fn the_handshake_needs_the_cluster_secret_and_the_same_version() {
    let secret = b"cluster secret";
    let hello = link::hello(secret, Side::Secondary, "gateway-1", &[0; 32]);
    assert!(link::verify(secret, Side::Secondary, &hello, &[0; 32]).is_ok());
    assert_eq!(
        link::verify(b"other", Side::Secondary, &hello, &[0; 32]).unwrap_err(),
        "wrong cluster secret"
    );
    // A proof for one side is no proof for the other.
    assert!(link::verify(secret, Side::Primary, &hello, &[0; 32]).is_err());
    // The primary's answer binds the secondary's nonce.
    let welcome = link::hello(secret, Side::Primary, "primary", &hello.nonce);
    assert!(link::verify(secret, Side::Primary, &welcome, &hello.nonce).is_ok());
    assert!(link::verify(secret, Side::Primary, &welcome, &[1; 32]).is_err());
    let mut old = hello.clone();
    old.version = 0;
    let err = link::verify(secret, Side::Secondary, &old, &[0; 32]).unwrap_err();
    assert!(err.contains("protocol version 0"), "{err}");
    // Handshake frames survive encoding.
    match link::decode(
        &link::encode(&Frame::Hello(hello.clone())),
        Limits::default(),
    )
    .unwrap()
    {
        Frame::Hello(h) => assert_eq!(h.proof, hello.proof),
        other => panic!("{other:?}"),
    }
}

#[test]
fn requests_are_carried_out_on_the_primary() {
    let tmp = tempfile::tempdir().unwrap();
    let store = common::store(tmp.path());
    let ana = AliasAddress::try_from("ana@example.com").unwrap();
    let bo = AliasAddress::try_from("bo@example.com").unwrap();
    let (_, ana_pw) = store.create_alias(&ana, None).unwrap();
    let (_, bo_pw) = store.create_alias(&bo, None).unwrap();
    let primary = Primary::new(Arc::new(store), PrimaryConfig::default());

    // Offline delivery is sealed; a retried delivery with the same key is not doubled.
    let raw = common::msg(
        "x@y.z",
        "ana@example.com",
        "Over the link",
        "link body text",
    );
    let r = reply(
        &primary,
        1,
        Op::Deliver {
            address: ana.clone(),
            raw: raw.clone(),
            delivery_ref: Some("mx:42".into()),
        },
    )
    .unwrap();
    assert!(matches!(r, Reply::Delivery(Delivery::Queued(_))));

    let err = reply(
        &primary,
        2,
        Op::Login {
            address: ana.clone(),
            password: bo_pw.clone(),
        },
    )
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::WrongPassword);
    let Reply::Session(s) = reply(
        &primary,
        3,
        Op::Login {
            address: ana.clone(),
            password: ana_pw.clone(),
        },
    )
    .unwrap() else {
        panic!()
    };

    let Reply::Folders(folders) = reply(&primary, 4, Op::Folders { session: s }).unwrap() else {
        panic!()
    };
    let inbox = folders
        .iter()
        .find(|f| f.role == Some(Role::Inbox))
        .unwrap();
    assert_eq!(inbox.total, 1, "the login drained the queue");

    let Reply::Hits(hits) = reply(
        &primary,
        5,
        Op::Search {
            session: s,
            query: Query::in_folder(
                inbox.id,
                Filter::Contains(TextField::Body, "BODY TEXT".into()),
            ),
        },
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(hits.len(), 1);
    let Reply::Raw(got) = reply(
        &primary,
        6,
        Op::Raw {
            session: s,
            email: hits[0].email_id,
        },
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(got, raw);

    let r = reply(
        &primary,
        7,
        Op::Append {
            session: s,
            folder: inbox.id,
            raw: b"Subject: two\r\n\r\nx".to_vec(),
            options: AppendOptions::default(),
        },
    )
    .unwrap();
    assert!(matches!(r, Reply::Appended(a) if a.uid.get() == 2));
    let r = reply(
        &primary,
        8,
        Op::Deliver {
            address: ana.clone(),
            raw: b"Subject: live\r\n\r\ny".to_vec(),
            delivery_ref: None,
        },
    )
    .unwrap();
    assert!(matches!(r, Reply::Delivery(Delivery::Stored(a)) if a.uid.get() == 3));

    // Errors are classified, and internal details stay inside.
    let err = reply(
        &primary,
        9,
        Op::CreateFolder {
            session: s,
            name: "INBOX".try_into().unwrap(),
        },
    )
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::AlreadyExists);
    let err = reply(
        &primary,
        10,
        Op::Raw {
            session: SessionId(999),
            email: hits[0].email_id,
        },
    )
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::NoSession);

    // Bo's session sees Bo's mailbox only.
    let Reply::Session(b) = reply(
        &primary,
        11,
        Op::Login {
            address: bo.clone(),
            password: bo_pw,
        },
    )
    .unwrap() else {
        panic!()
    };
    let Reply::Summaries(none) = reply(
        &primary,
        12,
        Op::Summaries {
            session: b,
            emails: vec![hits[0].email_id],
        },
    )
    .unwrap() else {
        panic!()
    };
    assert!(none.is_empty(), "Bo's mailbox has no email with Ana's id");
    reply(&primary, 13, Op::Logout { session: s }).unwrap();
    assert_eq!(
        reply(&primary, 14, Op::Folders { session: s })
            .unwrap_err()
            .code,
        ErrorCode::NoSession
    );
}

proptest! {
    #[test]
    fn no_bytes_make_decoding_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = link::decode(&bytes, Limits::default());
    }

    #[test]
    fn frames_round_trip(id in any::<u64>(), k in "[a-z$]{1,20}") {
        let op = Op::SetKeywords { session: SessionId(u128::from(id)), emails: vec![], add: vec![k.as_str().try_into().unwrap()], remove: vec![] };
        let bytes = link::encode(&Frame::Request(Request { id, op }));
        match link::decode(&bytes, Limits::default()).unwrap() {
            Frame::Request(Request { id: got, op: Op::SetKeywords { add, .. } }) => {
                prop_assert_eq!(got, id);
                prop_assert_eq!(add[0].as_str(), k.as_str());
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }
}
