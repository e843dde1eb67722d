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
        &[],
    );
    let http = p.wait_for("http listening on http://");
    let smtp = p.wait_for("smtp listening on ");
    let smtp = smtp.split(' ').next().unwrap().to_string();
    p.wait_for("ready");
    (p, smtp, http)
}

/// Sends one message over SMTP; returns the final reply.
fn send(addr: &str, rcpt: &str, msg: &[u8]) -> String {
    let s = TcpStream::connect(addr).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let mut reply = || {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    };
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
