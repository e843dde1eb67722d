//! The mail exchanger on a real socket, in front of an in-process primary:
//! what it advertises, who it accepts mail for, how it stores it (byte for
//! byte, sealed for offline aliases), pipelining, BDAT, limits and errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use cofre_mx::{Config, ServerConfig};
use cofre_storage::link::route::{Link, Router};
use cofre_storage::mailbox::{Filter, Query};
use cofre_storage::primary::{Primary, SessionId};
use cofre_storage::{AliasAddress, KdfParams, Password, Role, Store, StoreConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

struct Server {
    addr: std::net::SocketAddr,
    primary: Arc<Primary>,
    users: Vec<(AliasAddress, Password)>,
    dir: tempfile::TempDir,
}

async fn server(adjust: impl FnOnce(&mut Config)) -> Server {
    server_with(adjust, |_| {}).await
}

async fn server_with(
    adjust: impl FnOnce(&mut Config),
    listener_adjust: impl FnOnce(&mut ServerConfig),
) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        StoreConfig {
            kdf: KdfParams::INSECURE_FOR_TESTS,
            ..StoreConfig::default()
        },
    )
    .unwrap();
    let mut users = Vec::new();
    for a in ["ana@example.com", "bo@example.com"] {
        let address = AliasAddress::try_from(a).unwrap();
        let (_, pw) = store.create_alias(&address, None).unwrap();
        users.push((address, pw));
    }
    let primary = Arc::new(Primary::new(Arc::new(store), Default::default()));
    let router = Router::new(vec![("p".into(), Link::Local(Arc::clone(&primary)))]);
    let mut session = Config {
        hostname: "mx.test".into(),
        max_message_size: 64 * 1024,
        max_recipients: 3,
        starttls: false,
        submission: None,
        forwarding: None,
        auth: None,
    };
    adjust(&mut session);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    // The sender lives as long as the runtime: the server never stops.
    std::mem::forget(stop);
    tokio::spawn(cofre_mx::serve(
        listener,
        router,
        {
            let mut config = ServerConfig::new(Arc::new(session), None);
            listener_adjust(&mut config);
            Arc::new(config)
        },
        false,
        stopped,
    ));
    Server {
        addr,
        primary,
        users,
        dir,
    }
}

impl Server {
    fn login(&self, user: usize) -> SessionId {
        let (a, p) = &self.users[user];
        self.primary.login(a, p).unwrap()
    }

    /// Every message in the inbox, as stored.
    fn inbox(&self, s: SessionId) -> Vec<Vec<u8>> {
        self.primary
            .call(s, |mb| {
                let inbox = mb.folder_by_role(Role::Inbox)?.id;
                let hits = mb.search(&Query::in_folder(inbox, Filter::All))?;
                hits.iter().map(|h| mb.raw(h.email_id)).collect()
            })
            .unwrap()
    }
}

/// A raw SMTP client.
struct Client {
    r: BufReader<TcpStream>,
}

impl Client {
    async fn connect(addr: std::net::SocketAddr) -> Client {
        let s = TcpStream::connect(addr).await.unwrap();
        let mut c = Client {
            r: BufReader::new(s),
        };
        let g = c.reply().await;
        assert!(g.starts_with("220 mx.test"), "{g}");
        c
    }

    /// One reply, all its lines.
    async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(10), self.r.read_line(&mut line))
                .await
                .expect("reply in time")
                .unwrap();
            if n == 0 {
                return all;
            }
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.r.get_mut().write_all(bytes).await.unwrap();
    }

    async fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }
}

fn code(reply: &str) -> &str {
    reply.get(..9).unwrap_or(reply)
}

/// Splits our trace headers (Return-Path, then Received) from the stored
/// bytes; returns the Received header and the rest.
fn without_trace(stored: &[u8]) -> (&str, &[u8]) {
    assert!(stored.starts_with(b"Return-Path: <"), "Return-Path first");
    let line_end = stored.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    let stored = &stored[line_end..];
    assert!(stored.starts_with(b"Received: from "), "then our Received");
    // The header ends at the first CRLF not followed by a tab.
    let mut i = 0;
    loop {
        let at = stored[i..].windows(2).position(|w| w == b"\r\n").unwrap() + i;
        if stored.get(at + 2) != Some(&b'\t') {
            return (
                std::str::from_utf8(&stored[..at + 2]).unwrap(),
                &stored[at + 2..],
            );
        }
        i = at + 2;
    }
}

const MESSAGE: &[u8] = b"From: Sender <s@elsewhere.example>\r\nTo: ana@example.com\r\n\
Subject: caf\xc3\xa9 and \xff raw bytes\r\n\r\nA line.\r\n.leading dot\r\n..two dots\r\n\
.\r\nnot the end\r\nbare\nLF inside\r\n";

/// Dot-stuffs a message for DATA.
fn stuffed(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in msg.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_for_an_online_alias_is_stored_byte_for_byte_with_a_trace_header() {
    let srv = server(|_| {}).await;
    let ana = srv.login(0);
    let mut c = Client::connect(srv.addr).await;
    let ehlo = c.cmd("EHLO client.example").await;
    for ext in [
        "PIPELINING",
        "SIZE 65536",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
    ] {
        assert!(
            ehlo.contains(&format!("250-{ext}\r\n")) || ehlo.contains(&format!("250 {ext}\r\n")),
            "{ext} in {ehlo}"
        );
    }
    assert!(!ehlo.contains("STARTTLS"), "no certificate, no STARTTLS");
    assert_eq!(
        code(&c.cmd("MAIL FROM:<s@elsewhere.example> BODY=8BITMIME").await),
        "250 2.1.0"
    );
    assert_eq!(
        code(&c.cmd("RCPT TO:<nobody@example.com>").await),
        "550 5.1.1"
    );
    assert_eq!(
        code(&c.cmd("RCPT TO:<someone@gmail.example>").await),
        "550 5.1.1",
        "no relaying"
    );
    assert_eq!(code(&c.cmd("RCPT TO:<ANA@Example.com>").await), "250 2.1.5");
    assert_eq!(code(&c.cmd("DATA").await), "354 2.0.0");
    c.send(&stuffed(MESSAGE)).await;
    let r = c.reply().await;
    assert_eq!(code(&r), "250 2.0.0", "{r}");

    let stored = srv.inbox(ana);
    assert_eq!(stored.len(), 1);
    assert!(
        stored[0].starts_with(b"Return-Path: <s@elsewhere.example>\r\n"),
        "the envelope sender as Return-Path"
    );
    let (trace, rest) = without_trace(&stored[0]);
    assert_eq!(rest, MESSAGE, "the stored bytes are the sent bytes");
    assert!(
        trace.contains("from client.example ([127.0.0.1])"),
        "{trace}"
    );
    assert!(
        trace.contains("by mx.test (Cofre) with ESMTP id "),
        "{trace}"
    );
    assert!(trace.contains("for <ana@example.com>;"), "{trace}");

    // The same bytes again (a sender retrying) are stored once.
    assert_eq!(
        code(&c.cmd("MAIL FROM:<s@elsewhere.example>").await),
        "250 2.1.0"
    );
    assert_eq!(code(&c.cmd("RCPT TO:<ana@example.com>").await), "250 2.1.5");
    assert_eq!(code(&c.cmd("DATA").await), "354 2.0.0");
    c.send(&stuffed(MESSAGE)).await;
    assert_eq!(code(&c.reply().await), "250 2.0.0");
    assert_eq!(srv.inbox(ana).len(), 1);
    assert_eq!(code(&c.cmd("QUIT").await), "221 2.0.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_for_an_offline_alias_is_sealed_and_lands_at_login() {
    let srv = server(|_| {}).await;
    let mut c = Client::connect(srv.addr).await;
    c.cmd("EHLO client.example").await;
    c.cmd("MAIL FROM:<s@elsewhere.example>").await;
    assert_eq!(code(&c.cmd("RCPT TO:<bo@example.com>").await), "250 2.1.5");
    c.cmd("DATA").await;
    let msg = b"Subject: SealedSecretSubject\r\n\r\nSealedSecretBody\r\n";
    c.send(&stuffed(msg)).await;
    assert_eq!(code(&c.reply().await), "250 2.0.0");

    let bo = &srv.users[1].0;
    assert_eq!(srv.primary.store().queued(bo).unwrap(), 1);
    // No file under the data directory holds the message in the clear.
    for entry in walk(srv.dir.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        for needle in [&b"SealedSecretSubject"[..], b"SealedSecretBody"] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} holds plaintext",
                entry.display()
            );
        }
    }
    let s = srv.login(1);
    let stored = srv.inbox(s);
    assert_eq!(stored.len(), 1);
    assert_eq!(without_trace(&stored[0]).1, msg);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_envelope_bdat_chunks_and_several_recipients() {
    let srv = server(|_| {}).await;
    let ana = srv.login(0);
    let mut c = Client::connect(srv.addr).await;
    c.cmd("EHLO client.example").await;
    let body = b"Subject: chunked\r\n\r\nfirst part, ".to_vec();
    let tail = b"second part\r\n.not stuffed in BDAT\r\n".to_vec();
    let mut burst = Vec::new();
    burst.extend_from_slice(
        b"MAIL FROM:<s@elsewhere.example>\r\nRCPT TO:<ana@example.com>\r\n\
RCPT TO:<bo@example.com>\r\nRCPT TO:<ghost@example.com>\r\n",
    );
    burst.extend_from_slice(format!("BDAT {}\r\n", body.len()).as_bytes());
    burst.extend_from_slice(&body);
    burst.extend_from_slice(format!("BDAT {} LAST\r\n", tail.len()).as_bytes());
    burst.extend_from_slice(&tail);
    c.send(&burst).await;
    let replies = [
        c.reply().await,
        c.reply().await,
        c.reply().await,
        c.reply().await,
        c.reply().await,
        c.reply().await,
    ];
    let codes: Vec<&str> = replies.iter().map(|r| code(r)).collect();
    assert_eq!(
        codes,
        [
            "250 2.1.0",
            "250 2.1.5",
            "250 2.1.5",
            "550 5.1.1",
            "250 2.0.0",
            "250 2.0.0"
        ],
        "{replies:?}"
    );
    let whole: Vec<u8> = [body, tail].concat();
    let stored = srv.inbox(ana);
    assert_eq!(without_trace(&stored[0]).1, whole);
    assert!(
        !without_trace(&stored[0]).0.contains("for <"),
        "no recipient named when there are several"
    );
    let bo = srv.login(1);
    assert_eq!(without_trace(&srv.inbox(bo)[0]).1, whole);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_bad_input_get_protocol_errors() {
    let srv = server(|_| {}).await;
    let ana = srv.login(0);
    let mut c = Client::connect(srv.addr).await;
    assert_eq!(
        code(&c.cmd("MAIL FROM:<a@b.example>").await),
        "503 5.5.1",
        "EHLO first"
    );
    c.cmd("EHLO client.example").await;
    assert_eq!(code(&c.cmd("RCPT TO:<ana@example.com>").await), "503 5.5.1");
    assert_eq!(code(&c.cmd("DATA").await), "503 5.5.1");
    assert_eq!(code(&c.cmd("FROB").await), "500 5.5.1");
    assert_eq!(code(&c.cmd("AUTH PLAIN AGFuYQBwdw==").await), "503 5.5.1");
    assert_eq!(code(&c.cmd("VRFY ana").await), "252 2.5.0");
    assert_eq!(
        code(&c.cmd("MAIL FROM:<a@b.example> SIZE=100000").await),
        "552 5.3.4",
        "declared size over the limit"
    );
    assert_eq!(
        code(&c.cmd("MAIL FROM:<josé@b.example>").await),
        "553 5.6.7"
    );
    assert_eq!(code(&c.cmd("MAIL FROM:<a@b.example>").await), "250 2.1.0");
    assert_eq!(code(&c.cmd("MAIL FROM:<a@b.example>").await), "503 5.5.1");
    assert_eq!(code(&c.cmd("DATA").await), "554 5.5.1", "no recipients");
    assert_eq!(code(&c.cmd("RCPT TO:<zoë@example.com>").await), "553 5.6.7");
    for _ in 0..3 {
        assert_eq!(code(&c.cmd("RCPT TO:<ana@example.com>").await), "250 2.1.5");
    }
    c.cmd("RCPT TO:<bo@example.com>").await;
    c.cmd("RCPT TO:<ana@example.com>").await;
    // ana twice counts once; bo makes two; the limit is three.
    c.cmd("RSET").await;
    c.cmd("MAIL FROM:<a@b.example>").await;
    c.cmd("RCPT TO:<ana@example.com>").await;
    c.cmd("DATA").await;
    // Over the limit during DATA: read to the end, refused, nothing stored,
    // and the connection goes on.
    let big = vec![b'x'; 70 * 1024];
    let mut m = b"Subject: big\r\n\r\n".to_vec();
    m.extend_from_slice(&big);
    m.extend_from_slice(b"\r\n");
    c.send(&stuffed(&m)).await;
    assert_eq!(code(&c.reply().await), "552 5.3.4");
    assert_eq!(code(&c.cmd("NOOP").await), "250 2.0.0");
    // Over the limit in BDAT: the chunk is read and dropped.
    c.cmd("MAIL FROM:<a@b.example>").await;
    c.cmd("RCPT TO:<ana@example.com>").await;
    c.send(format!("BDAT {} LAST\r\n", m.len()).as_bytes())
        .await;
    c.send(&m).await;
    assert_eq!(code(&c.reply().await), "552 5.3.4");
    c.send(b"BDAT 3 LAST\r\nabc").await;
    assert_eq!(code(&c.reply().await), "503 5.5.1", "no transaction");
    assert!(srv.inbox(ana).is_empty());
    // A line past the limit ends the connection with an error.
    let long = format!("NOOP {}", "y".repeat(8000));
    let r = c.cmd(&long).await;
    assert_eq!(code(&r), "500 5.5.2");
    assert_eq!(c.reply().await, "", "closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dropped_mid_message_delivers_nothing() {
    let srv = server(|_| {}).await;
    let ana = srv.login(0);
    let mut c = Client::connect(srv.addr).await;
    c.cmd("EHLO client.example").await;
    c.cmd("MAIL FROM:<a@b.example>").await;
    c.cmd("RCPT TO:<ana@example.com>").await;
    c.cmd("DATA").await;
    c.send(b"Subject: half\r\n\r\nhalf a message").await;
    drop(c);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(srv.inbox(ana).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_and_too_many_connections_get_421() {
    let srv = server_with(
        |_| {},
        |c| {
            c.command_timeout = Duration::from_secs(2);
            c.max_per_ip = 2;
        },
    )
    .await;
    let mut quiet = Client::connect(srv.addr).await;
    let _second = Client::connect(srv.addr).await;
    // A third from the same address is turned away at once.
    let mut third = BufReader::new(TcpStream::connect(srv.addr).await.unwrap());
    let mut line = String::new();
    third.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("421 4.7.0"), "{line}");
    // The silent one is closed after the command timeout.
    let r = quiet.reply().await;
    assert!(r.starts_with("421 4.4.2"), "{r}");
    assert_eq!(quiet.reply().await, "", "closed");
}
