//! Vacation replies on real sockets: A's alias is away; mail from B's
//! alias gets one automatic reply (delivered to B through A's outbound
//! queue), a second message from the same sender gets none, and list,
//! bulk, automatic and Bcc'd mail get none at all.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use cofre_storage::admin::{AdminOp, Vacation};
use cofre_storage::{AliasAddress, Role};
use common::{Client, eventually, node};

fn message(extra: &str, to: &str, id: &str) -> Vec<u8> {
    format!(
        "From: Orig <orig@else.example>\r\nTo: {to}\r\nSubject: plans\r\nMessage-ID: <{id}@else.example>\r\n{extra}\r\nhello\r\n"
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_reply_per_sender_and_none_to_automatic_mail() {
    let b = node(&["orig@else.example"], None).await;
    let a = common::forwarding_mx(
        &["away@a.example"],
        vec![("else.example".into(), b.addr.to_string())],
        &[],
    )
    .await;
    a.primary
        .admin(AdminOp::SetVacation {
            address: AliasAddress::try_from("away@a.example").unwrap(),
            vacation: Vacation {
                enabled: true,
                subject: Some("Away until Monday".into()),
                text_body: Some("I am away; I will answer on Monday.".into()),
                ..Vacation::default()
            },
        })
        .unwrap();
    let orig = b.login(0);
    let sender = a.sender.clone().unwrap();
    let mut c = Client::connect(a.addr).await;
    let r = c
        .send(
            "orig@else.example",
            &["away@a.example"],
            &message("", "away@a.example", "m1"),
        )
        .await;
    assert!(r.starts_with("250"), "{r}");
    eventually("the reply reaches the sender", || {
        !b.folder(orig, Role::Inbox).is_empty()
    })
    .await;
    let reply = String::from_utf8(b.folder(orig, Role::Inbox).remove(0)).unwrap();
    assert!(
        reply.contains("Return-Path: <>"),
        "null envelope sender: {reply}"
    );
    assert!(reply.contains("From: <away@a.example>"), "{reply}");
    assert!(reply.contains("Subject: Away until Monday"), "{reply}");
    assert!(reply.contains("Auto-Submitted: auto-replied"), "{reply}");
    assert!(reply.contains("In-Reply-To: <m1@else.example>"), "{reply}");
    use base64::Engine;
    let body = reply.split("\r\n\r\n").nth(1).unwrap().replace("\r\n", "");
    let text = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    assert_eq!(text, b"I am away; I will answer on Monday.");
    eventually("the queue empties", || sender.pending().unwrap().is_empty()).await;

    // No second reply to the same sender, and none to these: each would
    // be queued before the 250.
    for (extra, to, id) in [
        ("", "away@a.example", "m2"),
        ("List-Id: <team.else.example>\r\n", "away@a.example", "m3"),
        ("Precedence: bulk\r\n", "away@a.example", "m4"),
        ("Auto-Submitted: auto-generated\r\n", "away@a.example", "m5"),
        ("", "someone-else@else.example", "m6"),
    ] {
        let r = c
            .send(
                "orig@else.example",
                &["away@a.example"],
                &message(extra, to, id),
            )
            .await;
        assert!(r.starts_with("250"), "{r}");
        assert!(sender.pending().unwrap().is_empty(), "no reply to {id}");
    }
    let r = c
        .send(
            "",
            &["away@a.example"],
            &message("", "away@a.example", "m7"),
        )
        .await;
    assert!(r.starts_with("250"), "{r}");
    assert!(sender.pending().unwrap().is_empty(), "no reply to a bounce");
    assert_eq!(b.folder(orig, Role::Inbox).len(), 1);
}
