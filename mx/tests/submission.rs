//! Submission and outbound delivery between two servers on real sockets:
//! server A (aliases at a.example) takes mail from an authenticated alias
//! and delivers it over a static route to server B's MX (b.example);
//! AUTH, sender checks, the Sent copy, local recipients, bounces, retries.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine;
use cofre_storage::Role;
use common::{Client, code, eventually, node};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitted_mail_reaches_the_other_server_and_sent_and_local_recipients() {
    let b = node(&["bo@b.example"], None).await;
    let a = node(
        &["ana@a.example", "carl@a.example"],
        Some(vec![("b.example".into(), b.addr.to_string())]),
    )
    .await;
    let bo = b.login(0);
    let carl = a.login(1);
    let (ana_addr, ana_pw) = (a.users[0].0.to_string(), a.users[0].1.expose().to_string());

    let mut c = Client::connect(a.addr).await;
    let ehlo = c.cmd("EHLO client.example").await;
    assert!(ehlo.contains("AUTH PLAIN LOGIN"), "{ehlo}");
    assert_eq!(
        code(&c.cmd("MAIL FROM:<ana@a.example>").await),
        "530 5.7.0",
        "AUTH first"
    );
    assert_eq!(code(&c.auth_plain(&ana_addr, "wrong").await), "535 5.7.8");
    // AUTH LOGIN, step by step.
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    assert_eq!(c.cmd("AUTH LOGIN").await, "334 VXNlcm5hbWU6\r\n");
    assert!(c.cmd(&b64(&ana_addr)).await.starts_with("334 "));
    assert_eq!(code(&c.cmd(&b64(&ana_pw)).await), "235 2.7.0");
    assert_eq!(
        code(&c.cmd("MAIL FROM:<bo@b.example>").await),
        "553 5.7.1",
        "a forged sender is refused"
    );
    let msg = b"From: Ana <ana@a.example>\r\nTo: bo@b.example, carl@a.example\r\nSubject: across\r\n\r\nHello from A.\r\n..dotted\r\n";
    let r = c
        .send("ana@a.example", &["bo@b.example", "carl@a.example"], msg)
        .await;
    assert_eq!(code(&r), "250 2.0.0", "{r}");

    // Unstuffed on both sides: what arrives is what was meant.
    let meant = b"From: Ana <ana@a.example>\r\nTo: bo@b.example, carl@a.example\r\nSubject: across\r\n\r\nHello from A.\r\n.dotted\r\n";
    eventually("bo gets it over the static route", || {
        !b.folder(bo, Role::Inbox).is_empty()
    })
    .await;
    let got = &b.folder(bo, Role::Inbox)[0];
    assert!(got.ends_with(meant), "{}", String::from_utf8_lossy(got));
    let text = String::from_utf8_lossy(got);
    assert_eq!(
        text.matches("Received: from ").count(),
        2,
        "A's and B's trace headers"
    );
    assert!(
        text.contains("with ESMTPA"),
        "A recorded the authenticated submission"
    );
    let carl_got = &a.folder(carl, Role::Inbox)[0];
    assert!(
        carl_got.ends_with(meant),
        "a local recipient is delivered directly"
    );
    let ana = a.login(0);
    let sent = a.folder(ana, Role::Sent);
    assert_eq!(sent.len(), 1);
    assert!(sent[0].ends_with(meant));
    let sender = a.sender.as_ref().unwrap();
    eventually("the queue empties", || sender.pending().unwrap().is_empty()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_recipient_bounces_to_the_sender_and_an_unreachable_one_waits() {
    let b = node(&["bo@b.example"], None).await;
    // c.example routes to a port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let a = node(
        &["ana@a.example"],
        Some(vec![
            ("b.example".into(), b.addr.to_string()),
            ("c.example".into(), dead_addr.to_string()),
        ]),
    )
    .await;
    let ana = a.login(0);
    let (ana_addr, ana_pw) = (a.users[0].0.to_string(), a.users[0].1.expose().to_string());
    let mut c = Client::connect(a.addr).await;
    assert_eq!(code(&c.auth_plain(&ana_addr, &ana_pw).await), "235 2.7.0");
    let msg = b"From: ana@a.example\r\nSubject: will bounce\r\n\r\nbody\r\n";
    let r = c
        .send(
            "ana@a.example",
            &["ghost@b.example", "someone@c.example"],
            msg,
        )
        .await;
    assert_eq!(code(&r), "250 2.0.0", "{r}");

    // B refuses ghost at RCPT: a DSN lands in ana's inbox.
    eventually("a bounce arrives", || {
        !a.folder(ana, Role::Inbox).is_empty()
    })
    .await;
    let dsn = String::from_utf8_lossy(&a.folder(ana, Role::Inbox)[0]).into_owned();
    assert!(
        dsn.contains("multipart/report; report-type=delivery-status"),
        "{dsn}"
    );
    assert!(dsn.contains("Final-Recipient: rfc822; ghost@b.example"));
    assert!(dsn.contains("Status: 5.1.1"));
    assert!(
        dsn.contains("Subject: will bounce"),
        "the original header is attached"
    );
    assert!(
        !dsn.contains("someone@c.example"),
        "the waiting one is not bounced"
    );

    // c.example is unreachable: it stays queued, retried with a delay.
    let sender = a.sender.as_ref().unwrap();
    eventually("the unreachable item is retried later", || {
        sender
            .pending()
            .unwrap()
            .iter()
            .any(|i| i.domain == "c.example" && i.attempts >= 1 && i.last_error.is_some())
    })
    .await;
    let waiting = sender.pending().unwrap();
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].rcpts, ["someone@c.example"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mx_refuses_auth_and_relaying() {
    let b = node(&["bo@b.example"], None).await;
    let mut c = Client::connect(b.addr).await;
    assert_eq!(code(&c.auth_plain("bo@b.example", "x").await), "503 5.5.1");
    c.cmd("MAIL FROM:<x@elsewhere.example>").await;
    assert_eq!(
        code(&c.cmd("RCPT TO:<victim@far.example>").await),
        "550 5.1.1",
        "no open relay"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_auth_is_slowed_then_refused_even_with_the_right_password() {
    let a = node(&["ana@a.example"], Some(Vec::new())).await;
    let (user, pw) = (a.users[0].0.to_string(), a.users[0].1.expose().to_string());
    let mut c = Client::connect(a.addr).await;
    let mut refused = 0;
    for _ in 0..10 {
        let r = c.auth_plain(&user, "wrong").await;
        if r.starts_with("454 4.7.0") {
            refused += 1;
            break;
        }
        assert_eq!(code(&r), "535 5.7.8");
    }
    assert_eq!(refused, 1, "the failed-login budget runs out");
    let r = c.auth_plain(&user, &pw).await;
    assert!(r.starts_with("454 4.7.0"), "refused while blocked: {r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_mail_keeps_its_copy_goes_out_with_an_srs_sender_and_bounces_come_back() {
    let b = node(&["zed@b.example", "orig@else.example"], None).await;
    let to_b = b.addr.to_string();
    let a = common::forwarding_mx(
        &["fwd@a.example", "local@a.example"],
        vec![
            ("b.example".into(), to_b.clone()),
            ("else.example".into(), to_b),
        ],
        &[
            ("fwd@a.example", "zed@b.example"),
            ("fwd@a.example", "local@a.example"),
        ],
    )
    .await;
    let (fwd, local) = (a.login(0), a.login(1));
    let (zed, orig) = (b.login(0), b.login(1));
    let mut c = Client::connect(a.addr).await;
    let msg = b"From: orig@else.example\r\nTo: fwd@a.example\r\nSubject: pass it on\r\n\r\nforward me\r\n";
    let r = c.send("orig@else.example", &["fwd@a.example"], msg).await;
    assert_eq!(code(&r), "250 2.0.0", "{r}");

    assert!(
        a.folder(fwd, Role::Inbox)[0].ends_with(msg),
        "the alias keeps its copy"
    );
    assert!(
        a.folder(local, Role::Inbox)[0].ends_with(msg),
        "a forward to one of ours is delivered here"
    );
    eventually("the forwarded copy reaches the other server", || {
        !b.folder(zed, Role::Inbox).is_empty()
    })
    .await;
    let copy = b.folder(zed, Role::Inbox)[0].clone();
    assert!(copy.ends_with(msg));
    let text = String::from_utf8_lossy(&copy).into_owned();
    let return_path = text
        .strip_prefix("Return-Path: <")
        .and_then(|t| t.split_once('>'))
        .map(|(p, _)| p.to_string())
        .unwrap();
    assert!(
        return_path.starts_with("SRS0=") && return_path.ends_with("=else.example=orig@a.example"),
        "the envelope sender is rewritten into our domain: {return_path}"
    );

    // A bounce to the rewritten address goes back to the original sender.
    let bounce = b"From: MAILER-DAEMON@b.example\r\nSubject: Undeliverable\r\n\r\nsorry\r\n";
    let r = c.send("", &[&return_path], bounce).await;
    assert_eq!(code(&r), "250 2.0.0", "{r}");
    eventually("the bounce reaches the original sender", || {
        !b.folder(orig, Role::Inbox).is_empty()
    })
    .await;
    assert!(b.folder(orig, Role::Inbox)[0].ends_with(bounce));

    // A made-up SRS address is nobody.
    c.cmd("MAIL FROM:<>").await;
    let forged = return_path.replacen("SRS0=", "SRS0=AAAA", 1);
    assert_eq!(
        code(&c.cmd(&format!("RCPT TO:<{forged}>")).await),
        "550 5.1.1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_submitted_to_a_local_alias_follows_that_alias_s_rules() {
    let b = node(&["bo@b.example"], None).await;
    let a = node(
        &["ana@a.example", "carl@a.example"],
        Some(vec![("b.example".into(), b.addr.to_string())]),
    )
    .await;
    a.primary
        .admin(cofre_storage::admin::AdminOp::AddForward {
            address: cofre_storage::AliasAddress::try_from("carl@a.example").unwrap(),
            recipient: cofre_storage::AliasAddress::try_from("bo@b.example").unwrap(),
        })
        .unwrap();
    let (carl, bo) = (a.login(1), b.login(0));
    let mut c = Client::connect(a.addr).await;
    let (ana, pw) = (a.users[0].0.to_string(), a.users[0].1.expose().to_string());
    assert_eq!(code(&c.auth_plain(&ana, &pw).await), "235 2.7.0");
    let msg = b"From: ana@a.example\r\nTo: carl@a.example\r\nSubject: for carl\r\n\r\nhi\r\n";
    let r = c.send("ana@a.example", &["carl@a.example"], msg).await;
    assert_eq!(code(&r), "250 2.0.0", "{r}");
    assert!(a.folder(carl, Role::Inbox)[0].ends_with(msg), "carl's copy");
    eventually("carl's forward reaches bo", || {
        !b.folder(bo, Role::Inbox).is_empty()
    })
    .await;
    let got = String::from_utf8_lossy(&b.folder(bo, Role::Inbox)[0]).into_owned();
    assert!(got.starts_with("Return-Path: <SRS0="), "{got}");
}
