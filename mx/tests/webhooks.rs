//! Webhooks on a real socket: mail for an alias with a webhook is posted
//! to a receiver started here as signed JSON; the receiver fails twice and
//! the third attempt delivers; every attempt is in the history.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use cofre_storage::AliasAddress;
use cofre_storage::Role;
use cofre_storage::admin::{AdminOp, AdminReply};
use cofre_storage::webhook::{DeliveryStatus, WebhookPayload};
use common::Client;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Seen {
    request_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP receiver answering with `statuses` in turn (then 200).
async fn receiver(statuses: Vec<u16>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/mail", listener.local_addr().unwrap());
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            let (s, _) = listener.accept().await.unwrap();
            let mut r = BufReader::new(s);
            let mut request_line = String::new();
            r.read_line(&mut request_line).await.unwrap();
            let mut headers = Vec::new();
            loop {
                let mut line = String::new();
                r.read_line(&mut line).await.unwrap();
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                let (k, v) = line.split_once(':').unwrap();
                headers.push((k.to_string(), v.trim().to_string()));
            }
            let len: usize = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .unwrap()
                .1
                .parse()
                .unwrap();
            let mut body = vec![0; len];
            r.read_exact(&mut body).await.unwrap();
            log.lock().unwrap().push(Seen {
                request_line: request_line.trim_end().to_string(),
                headers,
                body,
            });
            let status = statuses.get(n).copied().unwrap_or(200);
            n += 1;
            let answer =
                format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            r.get_mut().write_all(answer.as_bytes()).await.unwrap();
        }
    });
    (url, seen)
}

fn verify(secret_hex: &str, header: &str, body: &[u8]) -> bool {
    let (t, v1) = header.split_once(',').unwrap();
    let t = t.strip_prefix("t=").unwrap();
    let v1 = v1.strip_prefix("v1=").unwrap();
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&hex_decode(secret_hex)).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    mac.verify_slice(&hex_decode(v1)).is_ok()
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

const MESSAGE: &[u8] = b"From: Orig Sender <orig@else.example>\r\nTo: hook@a.example\r\nSubject: =?UTF-8?Q?caf=C3=A9_report?=\r\nMessage-ID: <r1@else.example>\r\nDate: Sun, 29 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: multipart/alternative; boundary=\"b2\"\r\n\r\n--b2\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe numbers are in.\r\n--b2\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>The numbers are <b>in</b>.</p>\r\n--b2--\r\n--b1\r\nContent-Type: application/pdf; name=\"q3.pdf\"\r\nContent-Disposition: attachment; filename=\"q3.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJcfsj6IK\r\n--b1--\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_payload_reaches_the_receiver_on_the_third_attempt() {
    let (url, seen) = receiver(vec![500, 503]).await;
    let a = common::forwarding_mx(&["hook@a.example"], vec![], &[]).await;
    let alias = AliasAddress::try_from("hook@a.example").unwrap();
    let secret = match a
        .primary
        .admin(AdminOp::AddWebhook {
            address: alias.clone(),
            url: url.clone(),
        })
        .unwrap()
    {
        AdminReply::WebhookCreated(_, secret) => secret,
        other => panic!("{other:?}"),
    };
    let me = a.login(0);

    let mut c = Client::connect(a.addr).await;
    let r = c
        .send("orig@else.example", &["hook@a.example"], MESSAGE)
        .await;
    assert!(r.starts_with("250 2.0.0"), "{r}");
    assert!(
        a.folder(me, Role::Inbox)[0].ends_with(MESSAGE),
        "the mailbox copy is kept"
    );

    let start = Instant::now();
    while seen.lock().unwrap().len() < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "three attempts in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "nothing after the 200");
    for s in &seen {
        assert_eq!(s.request_line, "POST /hooks/mail HTTP/1.1");
        assert_eq!(s.header("content-type"), Some("application/json"));
        assert_eq!(s.header("cofre-event"), Some("message.received"));
        assert_eq!(s.body, seen[0].body, "the same document every time");
        let sig = s.header("cofre-signature").unwrap();
        assert!(
            verify(&secret, sig, &s.body),
            "signed with the webhook's secret: {sig}"
        );
        assert!(
            !verify(&"00".repeat(32), sig, &s.body),
            "and not with another"
        );
    }

    let p: WebhookPayload = serde_json::from_slice(&seen[2].body).unwrap();
    assert_eq!(p.event, "message.received");
    assert_eq!(seen[2].header("cofre-delivery"), Some(p.id.as_str()));
    assert_eq!(p.alias, "hook@a.example");
    assert_eq!(p.envelope.from, "orig@else.example");
    assert_eq!(p.envelope.to, vec!["hook@a.example".to_string()]);
    assert_eq!(p.envelope.remote_ip, "127.0.0.1");
    assert_eq!(p.subject.as_deref(), Some("café report"));
    assert_eq!(p.from[0].name.as_deref(), Some("Orig Sender"));
    assert_eq!(p.from[0].address.as_deref(), Some("orig@else.example"));
    assert_eq!(p.to[0].address.as_deref(), Some("hook@a.example"));
    assert_eq!(p.message_id.as_deref(), Some("r1@else.example"));
    assert_eq!(p.date.as_deref(), Some("2026-11-29T10:00:00Z"));
    assert_eq!(
        p.text.as_deref().map(str::trim),
        Some("The numbers are in.")
    );
    assert!(p.html.as_deref().unwrap().contains("<b>in</b>"));
    assert_eq!(p.attachments.len(), 1);
    let att = &p.attachments[0];
    assert_eq!(att.filename.as_deref(), Some("q3.pdf"));
    assert_eq!(att.content_type, "application/pdf");
    let pdf = base64::engine::general_purpose::STANDARD
        .decode(&att.content_base64)
        .unwrap();
    assert_eq!(pdf, b"%PDF-1.4\n%\xc7\xec\x8f\xa2\n");
    assert_eq!(att.size, pdf.len() as u64);
    assert!(
        p.raw_size > MESSAGE.len() as u64,
        "as stored, with our trace headers"
    );
    assert!(p.headers.iter().any(|h| h.name == "Received"));

    // The history: two failures, then the delivery.
    let sender = a.sender.as_ref().unwrap();
    let start = Instant::now();
    let history = loop {
        let h = sender.webhook_deliveries("hook@a.example").unwrap();
        if h.first()
            .is_some_and(|d| d.status == DeliveryStatus::Delivered)
        {
            break h;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "{h:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(history.len(), 1);
    let d = &history[0];
    assert_eq!(d.url, url);
    assert_eq!(d.event_id, p.id);
    let codes: Vec<Option<u16>> = d.attempts.iter().map(|a| a.status).collect();
    assert_eq!(codes, vec![Some(500), Some(503), Some(200)]);
    assert!(d.next_at.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_receiver_is_retried_and_its_errors_recorded() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", dead.local_addr().unwrap());
    drop(dead);
    let a = common::forwarding_mx(&["hook@a.example"], vec![], &[]).await;
    a.primary
        .admin(AdminOp::AddWebhook {
            address: AliasAddress::try_from("hook@a.example").unwrap(),
            url,
        })
        .unwrap();
    let mut c = Client::connect(a.addr).await;
    let r = c
        .send(
            "x@else.example",
            &["hook@a.example"],
            b"Subject: s\r\n\r\nb\r\n",
        )
        .await;
    assert!(r.starts_with("250"), "{r}");
    let sender = a.sender.as_ref().unwrap();
    let start = Instant::now();
    loop {
        let h = sender.webhook_deliveries("hook@a.example").unwrap();
        if let Some(d) = h.first()
            && d.attempts.len() >= 2
        {
            assert_eq!(d.status, DeliveryStatus::Pending);
            assert!(d.next_at.is_some());
            assert!(d.attempts.iter().all(|a| a.status.is_none()
                && a.error.as_deref().is_some_and(|e| e.contains("connecting"))));
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{h:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_mailbox_off_mail_only_goes_to_the_webhook_and_never_nowhere() {
    let (url, seen) = receiver(vec![]).await;
    let a = common::forwarding_mx(&["hook@a.example", "lone@a.example"], vec![], &[]).await;
    let hook = AliasAddress::try_from("hook@a.example").unwrap();
    let lone = AliasAddress::try_from("lone@a.example").unwrap();
    a.primary
        .admin(AdminOp::AddWebhook {
            address: hook.clone(),
            url,
        })
        .unwrap();
    for address in [hook, lone] {
        a.primary
            .admin(AdminOp::SetKeepCopy {
                address,
                keep: false,
            })
            .unwrap();
    }
    let (hook_s, lone_s) = (a.login(0), a.login(1));
    let mut c = Client::connect(a.addr).await;
    let r = c
        .send(
            "x@else.example",
            &["hook@a.example", "lone@a.example"],
            b"Subject: only posted\r\n\r\nb\r\n",
        )
        .await;
    assert!(r.starts_with("250"), "{r}");
    let start = Instant::now();
    while seen.lock().unwrap().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(10), "posted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let p: WebhookPayload = serde_json::from_slice(&seen.lock().unwrap()[0].body).unwrap();
    assert_eq!(p.subject.as_deref(), Some("only posted"));
    assert!(a.folder(hook_s, Role::Inbox).is_empty(), "no copy kept");
    assert_eq!(
        a.folder(lone_s, Role::Inbox).len(),
        1,
        "an alias with nowhere else to send its mail keeps it anyway"
    );
}
