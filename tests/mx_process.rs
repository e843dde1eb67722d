//! `cofre serve` with its mail exchanger, as a real process: mail answered
//! with 250 survives a SIGKILL right after the answer, for an alias with a
//! live session (stored in the mailbox) and for one without (sealed in the
//! queue), and is readable through the API after a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;

use common::{Proc, create_alias, http, http_with};
use serde_json::json;

fn serve(data: &Path) -> (Proc, String, String) {
    serve_with(data, &[])
}

/// `cofre serve` with HTTP and the MX on free ports, and `env`; the
/// process, the MX address and the HTTP address.
fn serve_with(data: &Path, env: &[(&str, &str)]) -> (Proc, String, String) {
    let mut p = Proc::start(
        &[
            "--data",
            data.to_str().unwrap(),
            "serve",
            "--http",
            "127.0.0.1:0",
            "--smtp",
            "127.0.0.1:0",
            "--link",
            "off",
        ],
        env,
    );
    let http = p.wait_for("http listening on http://");
    let smtp = p.wait_for("smtp listening on ");
    let smtp = smtp.split(' ').next().unwrap().to_string();
    p.wait_for("ready");
    (p, smtp, http)
}

/// One SMTP reply, all its lines.
fn smtp_reply(r: &mut BufReader<TcpStream>) -> String {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        all.push_str(&line);
        if line.as_bytes().get(3) != Some(&b'-') {
            return all;
        }
    }
}

/// Sends one message over SMTP; returns the final reply.
fn send(addr: &str, rcpt: &str, msg: &[u8]) -> String {
    let s = TcpStream::connect(addr).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let mut reply = || smtp_reply(&mut r);
    assert!(reply().starts_with("220 "));
    for cmd in [
        "EHLO sender.example".to_string(),
        "MAIL FROM:<s@sender.example>".into(),
        format!("RCPT TO:<{rcpt}>"),
        "DATA".into(),
    ] {
        w.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
        let r = reply();
        assert!(r.starts_with('2') || r.starts_with("354"), "{cmd}: {r}");
    }
    w.write_all(msg).unwrap();
    w.write_all(b".\r\n").unwrap();
    reply()
}

/// The raw bytes of every message in an alias's inbox, through the API.
fn inbox(http_addr: &str, user: &str, pass: &str) -> Vec<Vec<u8>> {
    let folders = http(http_addr, "GET", "/v1/folders", Some((user, pass)), b"").json();
    let inbox = folders
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["role"] == "inbox")
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    let page = http(
        http_addr,
        "GET",
        &format!("/v1/folders/{inbox}/messages"),
        Some((user, pass)),
        b"",
    )
    .json();
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let id = m["id"].as_i64().unwrap();
            http(
                http_addr,
                "GET",
                &format!("/v1/messages/{id}/raw"),
                Some((user, pass)),
                b"",
            )
            .body
        })
        .collect()
}

#[test]
fn mail_acknowledged_with_250_survives_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let ana_pw = create_alias(&data, "ana@example.com");
    let bo_pw = create_alias(&data, "bo@example.com");
    let (mut p, smtp, web) = serve(&data);

    // ana has a live session (an API token), so her mail goes straight into
    // her mailbox; bo has none, so his is sealed into the queue.
    let r = http_with(
        &web,
        "POST",
        "/v1/session",
        &[("Content-Type", "application/json")],
        json!({"address": "ana@example.com", "password": ana_pw})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 201);

    let to_ana = b"Subject: for ana\r\n\r\nstored before the kill\r\n";
    let to_bo = b"Subject: for bo\r\n\r\nsealed before the kill\r\n";
    assert!(send(&smtp, "ana@example.com", to_ana).starts_with("250 "));
    assert!(send(&smtp, "bo@example.com", to_bo).starts_with("250 "));
    p.child.kill().unwrap();
    p.child.wait().unwrap();

    let (_p, _smtp, web) = serve(&data);
    let ana = inbox(&web, "ana@example.com", &ana_pw);
    assert_eq!(ana.len(), 1);
    assert!(
        ana[0].ends_with(to_ana),
        "{}",
        String::from_utf8_lossy(&ana[0])
    );
    let bo = inbox(&web, "bo@example.com", &bo_pw);
    assert_eq!(bo.len(), 1);
    assert!(
        bo[0].ends_with(to_bo),
        "{}",
        String::from_utf8_lossy(&bo[0])
    );
}

/// A minimal SMTP receiver for the test: accepts everything, keeps the
/// messages.
fn sink() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>) {
    use std::sync::{Arc, Mutex};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let got: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let keep = Arc::clone(&got);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let keep = Arc::clone(&keep);
            std::thread::spawn(move || {
                let mut w = conn.try_clone().unwrap();
                let mut r = BufReader::new(conn);
                let _ = w.write_all(b"220 sink\r\n");
                let mut data: Option<Vec<u8>> = None;
                loop {
                    let mut line = Vec::new();
                    if r.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if let Some(d) = &mut data {
                        if line == b".\r\n" {
                            keep.lock().unwrap().push(std::mem::take(d));
                            data = None;
                            let _ = w.write_all(b"250 kept\r\n");
                        } else {
                            d.extend_from_slice(line.strip_prefix(b".").unwrap_or(&line));
                        }
                        continue;
                    }
                    let upper = String::from_utf8_lossy(&line).to_ascii_uppercase();
                    let reply: &[u8] = if upper.starts_with("DATA") {
                        data = Some(Vec::new());
                        b"354 go on\r\n"
                    } else if upper.starts_with("QUIT") {
                        let _ = w.write_all(b"221 bye\r\n");
                        return;
                    } else {
                        b"250 ok\r\n"
                    };
                    let _ = w.write_all(reply);
                }
            });
        }
    });
    (addr, got)
}

#[test]
fn mail_in_the_outbound_queue_survives_sigkill_and_goes_out_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let pw = create_alias(&data, "ana@example.com");
    // First the destination accepts connections but never answers: the
    // attempt is still waiting when the server is killed.
    let blackhole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let start = |route: &str| {
        let mut p = Proc::start(
            &[
                "--data",
                data.to_str().unwrap(),
                "serve",
                "--http",
                "127.0.0.1:0",
                "--link",
                "off",
                "--submission",
                "127.0.0.1:0",
                "--route",
                route,
            ],
            &[("COFRE_ADMIN_TOKEN", "admin-token-for-the-test")],
        );
        let web = p.wait_for("http listening on http://");
        let addr = p.wait_for("submission listening on ");
        let addr = addr.split(' ').next().unwrap().to_string();
        p.wait_for("ready");
        (p, addr, web)
    };
    let (mut a, sub, web) = start(&format!("far.example={}", blackhole.local_addr().unwrap()));
    let s = TcpStream::connect(&sub).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let mut reply = || smtp_reply(&mut r);
    assert!(reply().starts_with("220 "));
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("\0ana@example.com\0{pw}"));
    for (cmd, want) in [
        ("EHLO laptop.example".to_string(), "250"),
        (format!("AUTH PLAIN {auth}"), "235"),
        ("MAIL FROM:<ana@example.com>".into(), "250"),
        ("RCPT TO:<zed@far.example>".into(), "250"),
        ("DATA".into(), "354"),
    ] {
        w.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
        let got = reply();
        assert!(got.starts_with(want), "{cmd}: {got}");
    }
    let msg = b"Subject: kept through a crash\r\n\r\nstill going out\r\n";
    w.write_all(msg).unwrap();
    w.write_all(b".\r\n").unwrap();
    assert!(reply().starts_with("250 "));
    // The operator sees it waiting.
    let queue = http_with(
        &web,
        "GET",
        "/v1/admin/outbound",
        &[("Authorization", "Bearer admin-token-for-the-test")],
        b"",
    );
    assert_eq!(queue.status, 200);
    let queue = queue.json();
    assert_eq!(queue.as_array().unwrap().len(), 1, "{queue}");
    assert_eq!(queue[0]["domain"], "far.example");
    assert_eq!(queue[0]["sender"], "ana@example.com");
    assert_eq!(queue[0]["recipients"][0], "zed@far.example");
    a.child.kill().unwrap();
    a.child.wait().unwrap();

    let (sink_addr, got) = sink();
    let (_a, _, _) = start(&format!("far.example={sink_addr}"));
    assert!(
        common::eventually(std::time::Duration::from_secs(20), || !got
            .lock()
            .unwrap()
            .is_empty()),
        "the queued message went out after the restart"
    );
    let sent = got.lock().unwrap()[0].clone();
    assert!(sent.ends_with(msg), "{}", String::from_utf8_lossy(&sent));
    drop(blackhole);
}

/// An HTTP receiver on a thread listening on `port`: records each
/// request body and answers 200.
fn hook_receiver(port: u16) -> std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>> {
    use std::io::Read;
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let got: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>> = Default::default();
    let log = std::sync::Arc::clone(&got);
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(s) = s else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; len];
            if r.read_exact(&mut body).is_ok() {
                log.lock().unwrap().push(body);
            }
            let mut w = s;
            let _ = w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        }
    });
    got
}

#[test]
fn a_webhook_post_waiting_at_a_sigkill_is_made_after_the_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    create_alias(&data, "hook@example.com");
    let start = || serve_with(&data, &[("COFRE_ADMIN_TOKEN", "admin-token-for-the-test")]);
    let bearer = ("Authorization", "Bearer admin-token-for-the-test");
    let deliveries = |web: &str| {
        let r = http_with(
            web,
            "GET",
            "/v1/admin/aliases/hook@example.com/webhooks/deliveries",
            &[bearer],
            b"",
        );
        assert_eq!(r.status, 200);
        r.json()
    };
    let (mut a, smtp, web) = start();
    // First the receiver takes connections and never answers.
    let blackhole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = blackhole.local_addr().unwrap().port();
    let r = http_with(
        &web,
        "POST",
        "/v1/admin/aliases/hook@example.com/webhooks",
        &[bearer, ("Content-Type", "application/json")],
        json!({"url": format!("http://127.0.0.1:{port}/hook")})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let s = TcpStream::connect(&smtp).unwrap();
    let mut rd = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    assert!(smtp_reply(&mut rd).starts_with("220"));
    for (cmd, want) in [
        ("EHLO sender.example", "250"),
        ("MAIL FROM:<x@sender.example>", "250"),
        ("RCPT TO:<hook@example.com>", "250"),
        ("DATA", "354"),
    ] {
        w.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
        let got = smtp_reply(&mut rd);
        assert!(got.starts_with(want), "{cmd}: {got}");
    }
    w.write_all(b"Subject: posted after all\r\n\r\nhello hook\r\n.\r\n")
        .unwrap();
    assert!(smtp_reply(&mut rd).starts_with("250 "));
    let pending = deliveries(&web);
    assert_eq!(pending[0]["status"], "pending", "{pending}");
    a.child.kill().unwrap();
    a.child.wait().unwrap();

    // Now a receiver that answers, on the same address.
    drop(blackhole);
    let got = hook_receiver(port);
    let (_a, _, web) = start();
    assert!(
        common::eventually(std::time::Duration::from_secs(30), || !got
            .lock()
            .unwrap()
            .is_empty()),
        "the post queued before the kill was made after the restart"
    );
    let body: serde_json::Value = serde_json::from_slice(&got.lock().unwrap()[0]).unwrap();
    assert_eq!(body["subject"], "posted after all");
    assert_eq!(body["alias"], "hook@example.com");
    assert!(
        common::eventually(
            std::time::Duration::from_secs(5),
            || deliveries(&web)[0]["status"] == "delivered"
        ),
        "{}",
        deliveries(&web)
    );
}
