//! `cofre bench api`: the HTTP API over loopback with keep-alive, on the
//! embedded (in-process) link, against a mailbox of `messages` messages.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cofre_api::{ApiConfig, AppState};
use cofre_storage::link::route::{Link, Router};
use cofre_storage::primary::{Primary, PrimaryConfig};
use cofre_storage::{Store, StoreConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::bench::{Rng, Vocabulary, median, ms};

const SECRET: &[u8] = b"benchmark cluster secret";

/// A keep-alive HTTP/1.1 connection that reads `Content-Length` bodies.
pub(crate) struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub(crate) async fn open(addr: &str) -> Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(64 << 10),
        })
    }

    /// Sends a request and returns (status, body).
    pub(crate) async fn call(
        &mut self,
        method: &str,
        path: &str,
        auth: &str,
        body: &str,
    ) -> Result<(u16, Vec<u8>)> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.stream.write_all(head.as_bytes()).await?;
        self.buf.clear();
        let mut chunk = [0u8; 16 << 10];
        let (split, len, status) = loop {
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("connection closed");
            }
            self.buf.extend_from_slice(&chunk[..n]);
            if let Some(split) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..split]).to_ascii_lowercase();
                let status = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .context("no status")?;
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .context("no content-length")?;
                break (split + 4, len, status);
            }
        };
        while self.buf.len() < split + len {
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("connection closed");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        Ok((status, self.buf[split..split + len].to_vec()))
    }
}

/// What the API benchmarks run against: a primary over a fresh data
/// directory holding one alias with `messages` generated messages.
pub(crate) struct Bench {
    /// Keeps the data directory alive.
    _dir: tempfile::TempDir,
    /// The primary.
    pub primary: Arc<Primary>,
    /// The alias's password.
    pub password: cofre_storage::Password,
    /// The corpus's words (for queries).
    pub vocab: Vocabulary,
    /// A two-worker runtime, as on a 2-core machine.
    pub rt: tokio::runtime::Runtime,
}

impl Bench {
    /// Builds the mailbox (`bench@example.com`) and the primary.
    pub(crate) fn new(messages: usize) -> Result<Bench> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path(), StoreConfig::default())?;
        let password =
            crate::bench::alias_with_mail(&store, "bench@example.com", messages, 0x5eed_cafe)?;
        // The same vocabulary again, for the query words.
        let vocab = Vocabulary::new(&mut Rng(0x5eed_cafe));
        let primary = Arc::new(
            Primary::new(Arc::new(store), PrimaryConfig::default())
                .with_token_key(cofre_storage::keys::derive_subkey(SECRET, "token-seal")),
        );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        Ok(Bench {
            _dir: dir,
            primary,
            password,
            vocab,
            rt,
        })
    }

    /// Starts the HTTP API on loopback (in the runtime); its address.
    pub(crate) async fn serve(
        &self,
        router: Arc<Router>,
        stopped: tokio::sync::watch::Receiver<bool>,
    ) -> Result<String> {
        let state = AppState::new(
            router,
            Some(Arc::clone(&self.primary)),
            SECRET,
            ApiConfig::default(),
            stopped,
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        tokio::spawn(async move {
            axum::serve(
                listener,
                cofre_api::app(state)
                    .into_make_service_with_connect_info::<cofre_api::tls::PeerAddr>(),
            )
            .await
        });
        Ok(addr)
    }

    /// Logs in over the API; the `Authorization` value of the token.
    pub(crate) async fn login(&self, conn: &mut Conn) -> Result<String> {
        let login = format!(
            r#"{{"address":"bench@example.com","password":"{}"}}"#,
            self.password.expose()
        );
        let (status, body) = conn.call("POST", "/v1/session", "", &login).await?;
        if status != 201 {
            bail!("login failed: {status}");
        }
        let token: serde_json::Value = serde_json::from_slice(&body)?;
        Ok(format!(
            "Bearer {}",
            token["token"].as_str().context("no token")?
        ))
    }
}

/// Runs the API measurements and prints a table.
pub fn run(messages: usize) -> Result<()> {
    let bench = Bench::new(messages)?;
    let vocab = &bench.vocab;
    bench.rt.block_on(async {
        let router = Router::new(vec![(
            "bench".into(),
            Link::Local(Arc::clone(&bench.primary)),
        )]);
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        let addr = bench.serve(router, stopped).await?;
        let mut conn = Conn::open(&addr).await?;
        let auth = bench.login(&mut conn).await?;
        let (_, body) = conn.call("GET", "/v1/folders", &auth, "").await?;
        let folders: serde_json::Value = serde_json::from_slice(&body)?;
        let inbox = folders
            .as_array()
            .and_then(|f| f.iter().find(|f| f["role"] == "inbox"))
            .and_then(|f| f["id"].as_i64())
            .context("no inbox")?;

        println!("| measure | result | target |");
        println!("|---|---|---|");
        let mut t = Vec::new();
        for _ in 0..200 {
            let s = Instant::now();
            let (status, _) = conn
                .call("GET", &format!("/v1/folders/{inbox}/messages?limit=50"), &auth, "")
                .await?;
            t.push(s.elapsed());
            if status != 200 {
                bail!("list failed: {status}");
            }
        }
        println!(
            "| list 50 messages (newest first, the default order) of a {messages}-message mailbox, median | {} | <= 10 ms |",
            ms(median(t))
        );

        let mut t = Vec::new();
        for _ in 0..200 {
            let s = Instant::now();
            let (status, _) = conn.call("GET", "/v1/folders", &auth, "").await?;
            t.push(s.elapsed());
            if status != 200 {
                bail!("folders failed: {status}");
            }
        }
        println!(
            "| folder list with total and unseen counts, {messages}-message mailbox, median | {} | - |",
            ms(median(t))
        );

        for (label, op) in [("words", "words"), ("substring", "contains")] {
            let mut t = Vec::new();
            let mut hits = 0;
            for k in 0..30 {
                let word = vocab.ranked(300 + k * 1_000);
                let value = if op == "contains" { &word[1..word.len().min(6)] } else { word };
                let query = format!(
                    r#"{{"filter":{{"op":"{op}","field":"text","value":"{value}"}},"limit":50}}"#
                );
                let s = Instant::now();
                let (status, body) = conn.call("POST", "/v1/messages/search", &auth, &query).await?;
                t.push(s.elapsed());
                if status != 200 {
                    bail!("search failed: {status} {}", String::from_utf8_lossy(&body));
                }
                let page: serde_json::Value = serde_json::from_slice(&body)?;
                hits += page["messages"].as_array().map_or(0, Vec::len);
            }
            println!(
                "| full-text query ({label}, first page of 50) over {messages} messages, median of 30 | {} ({hits} hits shown) | <= 60 ms |",
                ms(median(t))
            );
        }

        // Authenticated small reads: 32 keep-alive connections, 5 seconds.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let addr = addr.clone();
            let auth = auth.clone();
            tasks.push(tokio::spawn(async move {
                let mut conn = Conn::open(&addr).await?;
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let (status, _) = conn.call("GET", "/v1/messages/1", &auth, "").await?;
                    if status != 200 {
                        bail!("read failed: {status}");
                    }
                    n += 1;
                }
                anyhow::Ok(n)
            }));
        }
        let start = Instant::now();
        let mut total = 0;
        for t in tasks {
            total += t.await??;
        }
        println!(
            "| authenticated small reads (GET /v1/messages/{{id}} with a JWT), 32 connections | {:.0} requests/s | >= 5,000 |",
            total as f64 / start.elapsed().as_secs_f64()
        );
        anyhow::Ok(())
    })
}
