//! The primary as a real process behind a real link: killed with SIGKILL in
//! the middle of a stream of writes, every acknowledged write is there after
//! a restart, nothing is half-written, and the client reconnects by itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cofre_storage::link::ws::{ClientError, LinkClient, LinkConfig};
use cofre_storage::link::{Op, Reply};
use cofre_storage::mailbox::AppendOptions;
use cofre_storage::{AliasAddress, Password};
use common::{Proc, SECRET, create_alias};
use zeroize::Zeroizing;

fn start_primary(data: &Path, link: &str) -> (Proc, String) {
    let mut p = Proc::start(
        &["--data", data.to_str().unwrap(), "primary", "--link", link],
        &[("COFRE_CLUSTER_SECRET", SECRET)],
    );
    let url = p.wait_for("link listening on ");
    (p, url)
}

fn message(i: usize) -> Vec<u8> {
    format!("Subject: write {i}\r\nMessage-ID: <w{i}@test>\r\n\r\nbody of write {i}\r\n")
        .into_bytes()
}

#[test]
fn acknowledged_writes_survive_sigkill_and_the_link_comes_back() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let password = Password::new(create_alias(&data, "ana@example.com"));
    let ana = AliasAddress::try_from("ana@example.com").unwrap();

    // A wrong secret is refused by the real process too.
    let (mut primary, url) = start_primary(&data, "127.0.0.1:0");
    let addr = url.trim_start_matches("ws://").to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = |secret: &str| {
        LinkConfig::new(
            Arc::new(Zeroizing::new(secret.as_bytes().to_vec())),
            "test-gateway",
        )
    };
    let refused = rt
        .block_on(LinkClient::connect(&url, config("not the secret at all")))
        .err()
        .unwrap();
    assert!(matches!(refused, ClientError::Refused(_)), "{refused}");

    let client = rt
        .block_on(LinkClient::connect(&url, config(SECRET)))
        .unwrap();
    let login = |client: &LinkClient| {
        let Reply::Session(s) = rt
            .block_on(client.request(Op::Login {
                address: ana.clone(),
                password: password.clone(),
            }))
            .unwrap()
        else {
            panic!()
        };
        let Reply::Folders(f) = rt
            .block_on(client.request(Op::Folders { session: s }))
            .unwrap()
        else {
            panic!()
        };
        (s, f.into_iter().find(|f| f.name == "INBOX").unwrap().id)
    };
    let (session, inbox) = login(&client);

    // Stream writes; SIGKILL the primary once 30 are acknowledged.
    let (acked_tx, acked_rx) = std::sync::mpsc::channel::<usize>();
    let writer = {
        let client = client.clone();
        rt.spawn(async move {
            let mut attempted = 0;
            for i in 0.. {
                attempted = i + 1;
                let op = Op::Append {
                    session,
                    folder: inbox,
                    raw: message(i),
                    options: AppendOptions {
                        delivery_ref: Some(format!("w{i}")),
                        ..Default::default()
                    },
                };
                match client.request(op).await {
                    Ok(Reply::Appended(_)) => acked_tx.send(i).unwrap(),
                    Ok(other) => panic!("{other:?}"),
                    Err(ClientError::LinkDown(_)) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            attempted
        })
    };
    let mut acked = Vec::new();
    while acked.len() < 30 {
        acked.push(acked_rx.recv_timeout(Duration::from_secs(20)).unwrap());
    }
    primary.child.kill().unwrap();
    primary.child.wait().unwrap();
    let attempted = rt.block_on(writer).unwrap();
    acked.extend(acked_rx.try_iter());
    assert!(
        rt.block_on(client.wait_for(false, Duration::from_secs(5))),
        "the client saw the link drop"
    );
    let err = rt
        .block_on(client.request(Op::Folders { session }))
        .unwrap_err();
    assert!(
        matches!(err, ClientError::LinkDown(_)),
        "errors during the outage: {err}"
    );

    // Restart on the same address; the client reconnects without help.
    let (mut primary, _) = start_primary(&data, &addr);
    assert!(
        rt.block_on(client.wait_for(true, Duration::from_secs(20))),
        "reconnected"
    );
    let (session, inbox) = login(&client);
    let Reply::FolderIndex(index) = rt
        .block_on(client.request(Op::FolderIndex {
            session,
            folder: inbox,
        }))
        .unwrap()
    else {
        panic!()
    };
    let mut stored = Vec::new();
    for (_, email) in &index {
        let Reply::Raw(raw) = rt
            .block_on(client.request(Op::Raw {
                session,
                email: *email,
            }))
            .unwrap()
        else {
            panic!()
        };
        let text = String::from_utf8(raw.clone()).unwrap();
        let i: usize = text.split_whitespace().nth(2).unwrap().parse().unwrap();
        assert_eq!(raw, message(i), "whole or absent, never half-written");
        stored.push(i);
    }
    stored.sort();
    for i in &acked {
        assert!(
            stored.contains(i),
            "acknowledged write {i} lost (stored {stored:?})"
        );
    }
    assert!(stored.len() <= attempted);
    let mut unique = stored.clone();
    unique.dedup();
    assert_eq!(unique, stored, "no write applied twice");
    primary.child.kill().unwrap();
    primary.child.wait().unwrap();
}
