//! Submission and outbound delivery between two servers on real sockets:
//! server A (aliases at a.example) takes mail from an authenticated alias
//! and delivers it over a static route to server B's MX (b.example);
//! AUTH, sender checks, the Sent copy, local recipients, bounces, retries.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use cofre_mx::outbound::{OutboundConfig, Sender};
use cofre_mx::session::Submission;
use cofre_mx::{Config, ServerConfig};
use cofre_storage::keys::SecretKey;
use cofre_storage::link::route::{Link, Router};
use cofre_storage::mailbox::{Filter, Query};
use cofre_storage::outbound::Outbound;
use cofre_storage::primary::{Primary, SessionId};
use cofre_storage::{AliasAddress, KdfParams, Password, Role, Store, StoreConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

struct Node {
    addr: std::net::SocketAddr,
    primary: Arc<Primary>,
    users: Vec<(AliasAddress, Password)>,
    sender: Option<Arc<Sender>>,
    _dir: tempfile::TempDir,
}

impl Node {
    fn login(&self, user: usize) -> SessionId {
        let (a, p) = &self.users[user];
        self.primary.login(a, p).unwrap()
    }

    fn folder(&self, s: SessionId, role: Role) -> Vec<Vec<u8>> {
        self.primary
            .call(s, move |mb| {
                let f = mb.folder_by_role(role)?.id;
                let hits = mb.search(&Query::in_folder(f, Filter::All))?;
                hits.iter().map(|h| mb.raw(h.email_id)).collect()
            })
            .unwrap()
    }
}

/// A node with aliases; submission (with outbound routes) when `routes`
/// is `Some`, else an MX.
async fn node(aliases: &[&str], routes: Option<Vec<(String, String)>>) -> Node {
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
    for a in aliases {
        let address = AliasAddress::try_from(*a).unwrap();
        let (_, pw) = store.create_alias(&address, None).unwrap();
        users.push((address, pw));
    }
    let primary = Arc::new(Primary::new(Arc::new(store), Default::default()));
    let router = Router::new(vec![("p".into(), Link::Local(Arc::clone(&primary)))]);
    let (sender, submission) = match routes {
        Some(routes) => {
            let queue = Outbound::open(&dir.path().join("outbound.sqlite"), &SecretKey::generate())
                .unwrap();
            let config = OutboundConfig {
                hostname: "a.example".into(),
                routes,
                timeout: Duration::from_secs(5),
                first_retry: Duration::from_secs(1),
                ..Default::default()
            };
            let sender = Sender::new(queue, config, Arc::clone(&router)).unwrap();
            let (stop, stopped) = tokio::sync::watch::channel(false);
            std::mem::forget(stop);
            tokio::spawn(Arc::clone(&sender).run(stopped));
            let sub = Submission {
                outbound: Arc::clone(&sender),
                limiter: Default::default(),
                plain_auth: true,
                failed_login_delay: Duration::from_millis(10),
            };
            (Some(sender), Some(sub))
        }
        None => (None, None),
    };
    let session = Config {
        hostname: "node.test".into(),
        max_message_size: 1 << 20,
        max_recipients: 10,
        starttls: false,
        submission,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    std::mem::forget(stop);
    tokio::spawn(cofre_mx::serve(
        listener,
        router,
        Arc::new(ServerConfig::new(Arc::new(session), None)),
        false,
        stopped,
    ));
    Node {
        addr,
        primary,
        users,
        sender,
        _dir: dir,
    }
}

struct Client {
    r: BufReader<TcpStream>,
}

impl Client {
    async fn connect(addr: std::net::SocketAddr) -> Client {
        let mut c = Client {
            r: BufReader::new(TcpStream::connect(addr).await.unwrap()),
        };
        c.reply().await;
        c.cmd("EHLO client.example").await;
        c
    }

    async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            tokio::time::timeout(Duration::from_secs(10), self.r.read_line(&mut line))
                .await
                .expect("reply in time")
                .unwrap();
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    async fn cmd(&mut self, line: &str) -> String {
        self.r
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
        self.reply().await
    }

    async fn auth_plain(&mut self, user: &str, pass: &str) -> String {
        let ir = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"));
        self.cmd(&format!("AUTH PLAIN {ir}")).await
    }

    async fn send(&mut self, from: &str, rcpts: &[&str], msg: &[u8]) -> String {
        let r = self.cmd(&format!("MAIL FROM:<{from}>")).await;
        if !r.starts_with("250") {
            return r;
        }
        for rcpt in rcpts {
            let r = self.cmd(&format!("RCPT TO:<{rcpt}>")).await;
            assert!(r.starts_with("250"), "{rcpt}: {r}");
        }
        self.cmd("DATA").await;
        self.r.get_mut().write_all(msg).await.unwrap();
        self.cmd(".").await
    }
}

fn code(r: &str) -> &str {
    r.get(..9).unwrap_or(r)
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(15), "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

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
