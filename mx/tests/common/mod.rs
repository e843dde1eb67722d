//! Shared by the SMTP tests: a node (primary, link, MX or submission
//! listener) on loopback, and a line-level SMTP client.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

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

/// The code and enhanced status of a reply (`250 2.0.0`).
pub fn code(r: &str) -> &str {
    r.get(..9).unwrap_or(r)
}

/// Waits up to 15 s for `f`.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(15), "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub struct Node {
    pub addr: std::net::SocketAddr,
    pub primary: Arc<Primary>,
    pub users: Vec<(AliasAddress, Password)>,
    pub sender: Option<Arc<Sender>>,
    _dir: tempfile::TempDir,
}

impl Node {
    pub fn login(&self, user: usize) -> SessionId {
        let (a, p) = &self.users[user];
        self.primary.login(a, p).unwrap()
    }

    pub fn folder(&self, s: SessionId, role: Role) -> Vec<Vec<u8>> {
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
pub async fn node(aliases: &[&str], routes: Option<Vec<(String, String)>>) -> Node {
    node_with(aliases, routes, false, None).await
}

/// Like [`node`], but checking SPF, DKIM, ARC and DMARC against the DNS
/// server at `dns`.
pub async fn checking_node(
    aliases: &[&str],
    routes: Option<Vec<(String, String)>>,
    dns: std::net::SocketAddr,
) -> Node {
    node_with(aliases, routes, false, Some(dns)).await
}

/// An MX that carries out forwarding rules, with outbound `routes`;
/// `forwards` are (alias, target) rules set before it starts.
pub async fn forwarding_mx(
    aliases: &[&str],
    routes: Vec<(String, String)>,
    forwards: &[(&str, &str)],
) -> Node {
    forwarding_mx_with(aliases, routes, forwards, None).await
}

/// A forwarding MX that also checks and ARC-seals, against `dns`.
pub async fn forwarding_mx_with(
    aliases: &[&str],
    routes: Vec<(String, String)>,
    forwards: &[(&str, &str)],
    dns: Option<std::net::SocketAddr>,
) -> Node {
    let n = node_with(aliases, Some(routes), true, dns).await;
    for (alias, target) in forwards {
        n.primary
            .admin(cofre_storage::admin::AdminOp::AddForward {
                address: AliasAddress::try_from(*alias).unwrap(),
                recipient: AliasAddress::try_from(*target).unwrap(),
            })
            .unwrap();
    }
    n
}

async fn node_with(
    aliases: &[&str],
    routes: Option<Vec<(String, String)>>,
    forwarding_mx: bool,
    dns: Option<std::net::SocketAddr>,
) -> Node {
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
                nameserver: dns,
                webhook_retry: Duration::from_secs(1),
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
    // As in `cofre serve`: every service with a queue carries out the
    // rules of the aliases it delivers to.
    let forwarding = sender
        .as_ref()
        .map(|outbound| cofre_mx::session::Forwarding {
            outbound: Arc::clone(outbound),
            srs: cofre_mx::srs::Srs::new(SecretKey::generate()),
        });
    let submission = if forwarding_mx { None } else { submission };
    let session = Config {
        hostname: "node.test".into(),
        max_message_size: 1 << 20,
        max_recipients: 10,
        starttls: false,
        submission,
        forwarding,
        auth: dns.map(|d| Arc::new(cofre_mx::auth::MailAuth::new("node.test", Some(d)).unwrap())),
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

pub struct Client {
    pub r: BufReader<TcpStream>,
}

impl Client {
    pub async fn connect(addr: std::net::SocketAddr) -> Client {
        let mut c = Client {
            r: BufReader::new(TcpStream::connect(addr).await.unwrap()),
        };
        c.reply().await;
        c.cmd("EHLO client.example").await;
        c
    }

    pub async fn reply(&mut self) -> String {
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

    pub async fn cmd(&mut self, line: &str) -> String {
        self.r
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
        self.reply().await
    }

    pub async fn auth_plain(&mut self, user: &str, pass: &str) -> String {
        let ir = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"));
        self.cmd(&format!("AUTH PLAIN {ir}")).await
    }

    pub async fn send(&mut self, from: &str, rcpts: &[&str], msg: &[u8]) -> String {
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
