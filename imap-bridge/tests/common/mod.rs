//! An in-process primary with IMAP and POP3 listeners on loopback, and a
//! small line-level IMAP client to drive it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use cofre_imap::{Config, ServerConfig};
use cofre_storage::link::route::{Link, Router};
use cofre_storage::primary::Primary;
use cofre_storage::{AliasAddress, KdfParams, Password, Store, StoreConfig};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A running server.
pub struct Server {
    pub addr: std::net::SocketAddr,
    /// The POP3 listener beside it.
    pub pop3: std::net::SocketAddr,
    pub primary: Arc<Primary>,
    pub router: Arc<Router>,
    pub users: Vec<(String, String)>,
    pub stop: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

/// Starts a primary with two aliases and an IMAP listener.
pub async fn server() -> Server {
    server_with(|_| {}).await
}

/// Like [`server`], adjusting the listener's settings first.
pub async fn server_with(adjust: impl FnOnce(&mut ServerConfig)) -> Server {
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
        users.push((a.to_string(), pw.expose().to_string()));
    }
    let primary = Arc::new(Primary::new(Arc::new(store), Default::default()));
    let router = Router::new(vec![("p".into(), Link::Local(Arc::clone(&primary)))]);
    let session = Arc::new(Config {
        append_limit: 10 * 1024 * 1024,
        plain_auth: true,
        starttls: false,
        failed_login_delay: Duration::from_millis(10),
        limiter: Default::default(),
    });
    let mut config = ServerConfig::new(session, None);
    adjust(&mut config);
    // The POP3 listener's timer follows the IMAP idle timeout.
    let pop3_timeout = config.idle_timeout;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(cofre_imap::serve(
        listener,
        Arc::clone(&router),
        Arc::new(config),
        false,
        stopped.clone(),
    ));
    let pop3_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pop3 = pop3_listener.local_addr().unwrap();
    let mut pop3_config = cofre_imap::pop3::ServerConfig::new(
        Arc::new(cofre_imap::pop3::Config {
            plain_auth: true,
            stls: false,
            failed_login_delay: Duration::from_millis(10),
            limiter: Default::default(),
        }),
        None,
    );
    pop3_config.timeout = pop3_timeout;
    tokio::spawn(cofre_imap::pop3::serve(
        pop3_listener,
        Arc::clone(&router),
        Arc::new(pop3_config),
        false,
        stopped,
    ));
    Server {
        addr,
        pop3,
        primary,
        router,
        users,
        stop,
        _dir: dir,
    }
}

impl Drop for Server {
    /// Stops the listeners and closes every mailbox before the test ends:
    /// a mailbox thread still inside SQLCipher while the process exits
    /// races the crypto library's exit handlers.
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.primary.shutdown();
    }
}

/// Keeps the password type in use for callers that need it.
pub fn password(s: &str) -> Password {
    Password::new(s.to_string())
}

/// A raw IMAP client.
pub struct Client {
    pub r: BufReader<TcpStream>,
    next: u32,
}

impl Client {
    /// Connects and reads the greeting.
    pub async fn connect(addr: std::net::SocketAddr) -> (Client, String) {
        let s = TcpStream::connect(addr).await.unwrap();
        let mut c = Client {
            r: BufReader::new(s),
            next: 0,
        };
        let g = c.response().await;
        (c, g)
    }

    /// Connects and logs in.
    pub async fn login(server: &Server, user: usize) -> Client {
        let (mut c, _) = Client::connect(server.addr).await;
        let (u, p) = &server.users[user];
        let r = c.run(&format!("LOGIN {u} \"{p}\"")).await;
        assert!(r.last().unwrap().contains(" OK "), "{r:?}");
        c
    }

    /// One response as text (invalid UTF-8 replaced).
    pub async fn response(&mut self) -> String {
        String::from_utf8_lossy(&self.response_bytes().await).into_owned()
    }

    /// One response: a line, with any literals it announces read into it.
    pub async fn response_bytes(&mut self) -> Vec<u8> {
        let mut acc = Vec::new();
        loop {
            let mut line = Vec::new();
            let n =
                tokio::time::timeout(Duration::from_secs(10), self.r.read_until(b'\n', &mut line))
                    .await
                    .expect("a response within 10 s")
                    .unwrap();
            assert!(
                n > 0,
                "connection closed; so far: {}",
                String::from_utf8_lossy(&acc)
            );
            acc.extend_from_slice(&line);
            let t = line.strip_suffix(b"\r\n").unwrap_or(&line);
            if let Some(rest) = t.strip_suffix(b"}")
                && let Some(open) = rest.iter().rposition(|&c| c == b'{')
                && let Ok(n) = std::str::from_utf8(&rest[open + 1..])
                    .unwrap()
                    .parse::<usize>()
            {
                let mut lit = vec![0u8; n];
                self.r.read_exact(&mut lit).await.unwrap();
                acc.extend_from_slice(&lit);
                continue;
            }
            return acc;
        }
    }

    /// Sends raw bytes.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.r.get_mut().write_all(bytes).await.unwrap();
    }

    /// Sends a command with a fresh tag; returns every response line up to
    /// and including the tagged one.
    pub async fn run(&mut self, cmd: &str) -> Vec<String> {
        self.next += 1;
        let tag = format!("t{}", self.next);
        self.send(format!("{tag} {cmd}\r\n").as_bytes()).await;
        self.until(&tag).await
    }

    /// Reads responses until the one tagged `tag`.
    pub async fn until(&mut self, tag: &str) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let line = self.response().await;
            let done = line.starts_with(&format!("{tag} "));
            out.push(line);
            if done {
                return out;
            }
        }
    }

    /// Runs a command and asserts it ends OK.
    pub async fn ok(&mut self, cmd: &str) -> Vec<String> {
        let r = self.run(cmd).await;
        assert!(
            r.last().unwrap().split(' ').nth(1) == Some("OK"),
            "{cmd}: {r:?}"
        );
        r
    }

    /// APPENDs a message with a synchronising literal.
    pub async fn append(&mut self, mailbox: &str, flags: &str, msg: &[u8]) -> Vec<String> {
        self.next += 1;
        let tag = format!("t{}", self.next);
        self.send(format!("{tag} APPEND {mailbox} ({flags}) {{{}}}\r\n", msg.len()).as_bytes())
            .await;
        let cont = self.response().await;
        assert!(cont.starts_with('+'), "{cont}");
        self.send(msg).await;
        self.send(b"\r\n").await;
        self.until(&tag).await
    }
}

/// A plain message with a subject and body.
pub fn message(subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Ana <ana@example.com>\r\nTo: bo@example.com\r\nSubject: {subject}\r\n\
         Date: Mon, 7 Feb 1994 21:52:25 -0800\r\nMessage-ID: <{subject}@example.com>\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}
