//! `cofre bench imap`: the IMAP bridge over loopback on the embedded link.
//!
//! - `UID FETCH 1:* (FLAGS ENVELOPE)` over a 10,000-message mailbox;
//! - a mixed load (LOGIN, SELECT, APPEND, FETCH, STORE, EXPUNGE) from
//!   several clients at once, and the same load generator against Dovecot
//!   (Debian's dovecot-imapd, plain Maildir, no encryption) started here on
//!   the same machine, reported as a ratio;
//! - 10,000 connections in IDLE, held by a child process (the file
//!   descriptor limit is per process), and this process's resident memory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cofre_storage::link::route::{Link, Router};
use cofre_storage::primary::{Primary, PrimaryConfig};
use cofre_storage::{AliasAddress, Store, StoreConfig};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use tokio::net::TcpStream;

use crate::bench::{Rng, Vocabulary, alias_with_mail, median, message, ms};

/// A minimal IMAP client for load generation: tagged commands, literals
/// in responses skipped over.
pub(crate) struct Imap {
    r: BufReader<TcpStream>,
    tag: u64,
    line: Vec<u8>,
}

impl Imap {
    pub(crate) async fn connect(addr: &str) -> Result<Imap> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let mut c = Imap {
            r: BufReader::with_capacity(64 << 10, s),
            tag: 0,
            line: Vec::new(),
        };
        c.read_line().await?;
        Ok(c)
    }

    async fn read_line(&mut self) -> Result<()> {
        self.line.clear();
        if self.r.read_until(b'\n', &mut self.line).await? == 0 {
            bail!("connection closed");
        }
        Ok(())
    }

    /// Sends a command; returns the untagged line count and the tagged line.
    pub(crate) async fn run(&mut self, cmd: &str) -> Result<(usize, String)> {
        self.tag += 1;
        let tag = format!("b{}", self.tag);
        self.r
            .get_mut()
            .write_all(format!("{tag} {cmd}\r\n").as_bytes())
            .await?;
        self.until(&tag).await
    }

    /// Sends raw bytes (a command with a non-synchronising literal).
    pub(crate) async fn run_raw(&mut self, head: &str, literal: &[u8]) -> Result<(usize, String)> {
        self.tag += 1;
        let tag = format!("b{}", self.tag);
        let mut buf = format!("{tag} {head} {{{}+}}\r\n", literal.len()).into_bytes();
        buf.extend_from_slice(literal);
        buf.extend_from_slice(b"\r\n");
        self.r.get_mut().write_all(&buf).await?;
        self.until(&tag).await
    }

    async fn until(&mut self, tag: &str) -> Result<(usize, String)> {
        let mut n = 0;
        loop {
            self.read_line().await?;
            // Skip literals: `{123}\r\n` at the end of a line.
            while let Some(len) = literal_len(&self.line) {
                let mut skip = vec![0u8; len];
                self.r.read_exact(&mut skip).await?;
                self.read_line().await?;
            }
            if self.line.starts_with(tag.as_bytes()) && self.line.get(tag.len()) == Some(&b' ') {
                let text = String::from_utf8_lossy(&self.line).trim_end().to_string();
                if !text[tag.len() + 1..].starts_with("OK") {
                    bail!("{text}");
                }
                return Ok((n, text));
            }
            n += 1;
        }
    }
}

fn literal_len(line: &[u8]) -> Option<usize> {
    let t = line.strip_suffix(b"\r\n")?.strip_suffix(b"}")?;
    let open = t.iter().rposition(|&c| c == b'{')?;
    std::str::from_utf8(&t[open + 1..]).ok()?.parse().ok()
}

/// One client of the mixed load until `deadline`: commands completed.
async fn mixed_client(
    addr: String,
    user: String,
    password: String,
    deadline: Instant,
) -> Result<u64> {
    let msg = message(&mut Rng(7), &Vocabulary::new(&mut Rng(7)), 1, 3 * 1024);
    let mut done = 0u64;
    while Instant::now() < deadline {
        let mut c = Imap::connect(&addr).await?;
        c.run(&format!("LOGIN {user} \"{password}\"")).await?;
        c.run("SELECT INBOX").await?;
        done += 2;
        for _ in 0..50 {
            if Instant::now() >= deadline {
                break;
            }
            let (_, ok) = c.run_raw("APPEND INBOX", &msg).await?;
            let uid = ok
                .split("APPENDUID ")
                .nth(1)
                .and_then(|s| s.split([' ', ']']).nth(1))
                .context("APPENDUID")?
                .to_string();
            c.run(&format!("UID FETCH {uid} (FLAGS ENVELOPE BODY.PEEK[])"))
                .await?;
            c.run(&format!("UID STORE {uid} +FLAGS (\\Seen)")).await?;
            c.run("FETCH 1:* (FLAGS)").await?;
            c.run(&format!("UID STORE {uid} +FLAGS.SILENT (\\Deleted)"))
                .await?;
            c.run("EXPUNGE").await?;
            done += 6;
        }
        c.run("LOGOUT").await?;
        done += 1;
    }
    Ok(done)
}

/// The mixed load from `users.len()` clients at once, for `secs` seconds.
async fn mixed(addr: &str, users: &[(String, String)], secs: u64) -> Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (u, p) in users {
        tasks.push(tokio::spawn(mixed_client(
            addr.to_string(),
            u.clone(),
            p.clone(),
            deadline,
        )));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// Benchmark settings.
pub struct ImapBench {
    /// Messages in the FETCH mailbox.
    pub messages: usize,
    /// Concurrent clients of the mixed load.
    pub clients: usize,
    /// Seconds of mixed load per server.
    pub seconds: u64,
    /// Connections held in IDLE.
    pub idle: usize,
    /// Also run the load against Dovecot.
    pub dovecot: bool,
    /// Alternating rounds against each server.
    pub rounds: usize,
}

/// Runs the IMAP measurements and prints a table.
pub fn run(b: ImapBench) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), StoreConfig::default())?;
    let password = alias_with_mail(&store, "bench@example.com", b.messages, 0x1a9_cafe)?;
    // The IDLE connections share one alias with a small inbox.
    let idle_password = alias_with_mail(&store, "idle@example.com", 20, 0x1d1e)?;
    let mut users = Vec::new();
    for i in 0..b.clients {
        let a = AliasAddress::try_from(format!("load{i}@example.com").as_str())?;
        let (_, p) = store.create_alias(&a, None)?;
        users.push((a.to_string(), p.expose().to_string()));
    }
    let primary = Arc::new(Primary::new(Arc::new(store), PrimaryConfig::default()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let router = Router::new(vec![("bench".into(), Link::Local(Arc::clone(&primary)))]);
        let stats_router = Arc::clone(&router);
        let session = Arc::new(cofre_imap::Config {
            append_limit: 50 << 20,
            plain_auth: true,
            starttls: false,
            failed_login_delay: Duration::from_secs(1),
            limiter: Default::default(),
        });
        let mut config = cofre_imap::ServerConfig::new(session, None);
        config.max_per_ip = b.idle + 100;
        config.max_connections = b.idle + 100;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(cofre_imap::serve(
            listener,
            router,
            Arc::new(config),
            false,
            stopped,
        ));

        println!("| measure | result | target |");
        println!("|---|---|---|");
        let mut c = Imap::connect(&addr).await?;
        c.run(&format!("LOGIN bench@example.com \"{}\"", password.expose()))
            .await?;
        c.run("SELECT INBOX").await?;
        let mut t = Vec::new();
        let mut lines = 0;
        for _ in 0..10 {
            let s = Instant::now();
            let (n, _) = c.run("UID FETCH 1:* (FLAGS ENVELOPE)").await?;
            t.push(s.elapsed());
            lines = n;
        }
        if lines != b.messages {
            bail!("FETCH returned {lines} messages, expected {}", b.messages);
        }
        println!(
            "| `UID FETCH 1:* (FLAGS ENVELOPE)` on {} messages, median of 10 | {} | <= 150 ms |",
            b.messages,
            ms(median(t))
        );
        c.run("LOGOUT").await?;

        let load = |n: usize| {
            format!(
                "| mixed load (login, select, append, fetch, store, expunge), {} clients, {n} rounds of {} s, median |",
                b.clients, b.seconds
            )
        };
        if !b.dovecot {
            let ours = mixed(&addr, &users, b.seconds).await?;
            println!("{} {ours:.0} commands/s | >= Dovecot |", load(1));
            print_ops(&stats_router);
        } else {
            // Rounds alternate between the two servers, so drift in the
            // machine's speed touches both alike; each round's ratio is
            // kept, and the median and range reported.
            let dovecot = crate::bench_dovecot::Dovecot::start(b.clients, false)?;
            let (mut ours, mut theirs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..b.rounds {
                let o = mixed(&addr, &users, b.seconds).await?;
                let t = mixed(&dovecot.addr, &dovecot.users, b.seconds).await?;
                ours.push(o);
                theirs.push(t);
                ratios.push(o / t);
            }
            print_ops(&stats_router);
            let med = |v: &mut Vec<f64>| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let (lo, hi) = (
                ratios.iter().copied().fold(f64::MAX, f64::min),
                ratios.iter().copied().fold(0.0, f64::max),
            );
            println!("{} {:.0} commands/s | >= Dovecot |", load(b.rounds), med(&mut ours));
            println!(
                "| the same load against Dovecot {} (Maildir, no encryption), alternating rounds | {:.0} commands/s; Cofre/Dovecot {:.2} (rounds {lo:.2}–{hi:.2}) | >= 1.0 |",
                dovecot.version,
                med(&mut theirs),
                med(&mut ratios)
            );
        }

        if b.idle > 0 {
            let before = crate::bench::rss_kib();
            let exe = std::env::current_exe()?;
            let mut child = std::process::Command::new(exe)
                .args([
                    "bench-hold-idle",
                    "--addr",
                    &addr,
                    "--count",
                    &b.idle.to_string(),
                ])
                .env("COFRE_BENCH_PASSWORD", idle_password.expose())
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()?;
            let out = child.stdout.take().context("child stdout")?;
            let ready = tokio::task::spawn_blocking(move || {
                let mut line = String::new();
                std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line)
                    .map(|_| line)
            })
            .await??;
            if !ready.starts_with("idle ") {
                bail!("the IDLE holder failed: {ready}");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let after = crate::bench::rss_kib();
            println!(
                "| {} connections logged in, INBOX selected, in IDLE: server resident memory | {:.0} MiB in all ({:.1} KiB per connection) | <= 1 GB |",
                b.idle,
                after as f64 / 1024.0,
                after.saturating_sub(before) as f64 / b.idle as f64
            );
            drop(child.stdin.take());
            tokio::task::spawn_blocking(move || child.wait()).await??;
        }
        Ok(())
    })
}

/// With `COFRE_BENCH_OPS` set: per-operation link calls and mean latency.
fn print_ops(router: &Router) {
    if std::env::var_os("COFRE_BENCH_OPS").is_none() {
        return;
    }
    for (n, s) in router.stats() {
        let c = s.count.load(std::sync::atomic::Ordering::Relaxed);
        let t = s.total_us.load(std::sync::atomic::Ordering::Relaxed);
        if c > 0 {
            eprintln!(
                "{n:>16}: {c:>7} calls, mean {:>7.0} us",
                t as f64 / c as f64
            );
        }
    }
}

/// `cofre bench-hold-idle`: holds `count` connections in IDLE (a child of
/// the benchmark), prints `idle N` when they all are, and waits for stdin
/// to close.
pub fn hold_idle(addr: &str, count: usize) -> Result<()> {
    let password = std::env::var("COFRE_BENCH_PASSWORD").context("COFRE_BENCH_PASSWORD")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut held = Vec::with_capacity(count);
        let login = format!("LOGIN idle@example.com \"{password}\"");
        let sem = Arc::new(tokio::sync::Semaphore::new(64));
        let mut tasks = Vec::new();
        for _ in 0..count {
            let addr = addr.to_string();
            let login = login.clone();
            let sem = Arc::clone(&sem);
            tasks.push(tokio::spawn(async move {
                let _permit = sem.acquire().await?;
                let mut c = Imap::connect(&addr).await?;
                c.run(&login).await?;
                c.run("SELECT INBOX").await?;
                c.r.get_mut().write_all(b"i IDLE\r\n").await?;
                c.read_line().await?;
                if !c.line.starts_with(b"+") {
                    bail!("IDLE refused");
                }
                Ok::<_, anyhow::Error>(c)
            }));
        }
        for t in tasks {
            held.push(t.await??);
        }
        println!("idle {}", held.len());
        // Until the benchmark closes our stdin.
        tokio::task::spawn_blocking(|| {
            let mut buf = [0u8; 1];
            std::io::Read::read(&mut std::io::stdin(), &mut buf)
        })
        .await??;
        drop(held);
        Ok(())
    })
}
