//! `cofre bench pop3`: RETR throughput of the POP3 bridge over loopback
//! on the embedded link, and the same client against Dovecot's POP3
//! (Debian's dovecot-pop3d, plain Maildir, no encryption) holding the same
//! messages, in alternating rounds, reported as a ratio.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cofre_storage::link::route::{Link, Router};
use cofre_storage::primary::{Primary, PrimaryConfig};
use cofre_storage::{AliasAddress, Store, StoreConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::bench::{Rng, Vocabulary, fill, message};

/// A minimal POP3 client for load generation.
struct Pop {
    r: BufReader<TcpStream>,
    line: Vec<u8>,
}

impl Pop {
    async fn login(addr: &str, user: &str, password: &str) -> Result<Pop> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let mut p = Pop {
            r: BufReader::with_capacity(64 << 10, s),
            line: Vec::new(),
        };
        p.status().await?;
        p.send(&format!("USER {user}\r\n")).await?;
        p.status().await?;
        p.send(&format!("PASS {password}\r\n")).await?;
        p.status().await?;
        Ok(p)
    }

    async fn send(&mut self, s: &str) -> Result<()> {
        self.r.get_mut().write_all(s.as_bytes()).await?;
        Ok(())
    }

    async fn read_line(&mut self) -> Result<()> {
        self.line.clear();
        if self.r.read_until(b'\n', &mut self.line).await? == 0 {
            bail!("connection closed");
        }
        Ok(())
    }

    async fn status(&mut self) -> Result<()> {
        self.read_line().await?;
        if !self.line.starts_with(b"+OK") {
            bail!("{}", String::from_utf8_lossy(&self.line).trim_end());
        }
        Ok(())
    }

    /// Reads one multi-line answer; its size in bytes.
    async fn multi(&mut self) -> Result<usize> {
        self.status().await?;
        let mut n = 0;
        loop {
            self.read_line().await?;
            if self.line == b".\r\n" {
                return Ok(n);
            }
            n += self.line.len();
        }
    }

    /// RETR of messages 1..=count, `depth` commands in flight; the bytes
    /// received.
    async fn retr_all(&mut self, count: usize, depth: usize) -> Result<usize> {
        let mut bytes = 0;
        let mut sent = 0;
        let mut done = 0;
        while done < count {
            while sent < count && sent - done < depth {
                sent += 1;
                self.send(&format!("RETR {sent}\r\n")).await?;
            }
            bytes += self.multi().await?;
            done += 1;
        }
        Ok(bytes)
    }

    async fn quit(mut self) -> Result<()> {
        self.send("QUIT\r\n").await?;
        self.status().await
    }
}

/// Benchmark settings.
pub struct Pop3Bench {
    /// Messages of 10 KB in the maildrop.
    pub messages: usize,
    /// Alternating rounds against each server.
    pub rounds: usize,
    /// Also run the client against Dovecot.
    pub dovecot: bool,
}

/// One round: log in, RETR every message (`depth` in flight), QUIT;
/// messages per second.
async fn round(addr: &str, user: &str, password: &str, count: usize, depth: usize) -> Result<f64> {
    let started = Instant::now();
    let mut p = Pop::login(addr, user, password).await?;
    let bytes = p.retr_all(count, depth).await?;
    p.quit().await?;
    let secs = started.elapsed().as_secs_f64();
    if bytes < count * 10_000 {
        bail!("{addr}: {bytes} bytes for {count} messages");
    }
    Ok(count as f64 / secs)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Writes the messages into a Maildir's `cur` (Dovecot's layout, owned
/// by the unprivileged user Dovecot runs the mail processes as).
fn maildir(root: &std::path::Path, raws: &[Vec<u8>]) -> Result<()> {
    for d in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    for (i, raw) in raws.iter().enumerate() {
        let name = format!("{}.M{i}P1.bench:2,", 1_700_000_000 + i);
        std::fs::write(root.join("cur").join(name), raw)?;
    }
    let owner = std::process::Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(root)
        .status()?;
    if !owner.success() {
        bail!("chown of the Maildir failed");
    }
    Ok(())
}

/// Runs the POP3 measurements and prints a table.
pub fn run(b: Pop3Bench) -> Result<()> {
    let mut rng = Rng(0x9093_cafe);
    let vocab = Vocabulary::new(&mut rng);
    let raws: Vec<Vec<u8>> = (0..b.messages)
        .map(|i| message(&mut rng, &vocab, i, 10 * 1024))
        .collect();
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), StoreConfig::default())?;
    let address = AliasAddress::try_from("pop@example.com")?;
    let (_, password) = store.create_alias(&address, None)?;
    {
        let unlocked = store.unlock(&address, &password)?;
        let mut mb = store.open_mailbox(&unlocked)?;
        fill(&mut mb, &raws)?;
    }
    let primary = Arc::new(Primary::new(Arc::new(store), PrimaryConfig::default()));
    let dovecot = if b.dovecot {
        let d = crate::bench_dovecot::Dovecot::start_pop3(1)?;
        maildir(&d.mail.join(&d.users[0].0), &raws)?;
        Some(d)
    } else {
        None
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let router = Router::new(vec![("bench".into(), Link::Local(Arc::clone(&primary)))]);
        let session = Arc::new(cofre_imap::pop3::Config {
            plain_auth: true,
            stls: false,
            failed_login_delay: Duration::from_secs(1),
            limiter: Default::default(),
        });
        let config = cofre_imap::pop3::ServerConfig::new(session, None);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(cofre_imap::pop3::serve(
            listener,
            router,
            Arc::new(config),
            false,
            stopped,
        ));
        let ours = (addr.as_str(), address.as_str(), password.expose());
        let theirs = dovecot
            .as_ref()
            .map(|d| (d.addr.as_str(), d.users[0].0.as_str(), d.users[0].1.as_str()));
        // A first session each: Dovecot indexes the Maildir, we open the
        // mailbox.
        round(ours.0, ours.1, ours.2, b.messages, 1).await?;
        if let Some(t) = theirs {
            round(t.0, t.1, t.2, b.messages, 1)
                .await
                .context("the first Dovecot session")?;
        }
        println!("| measure | result | target |");
        println!("|---|---|---|");
        for (depth, how) in [(1, "one command at a time"), (16, "16 commands in flight (PIPELINING)")] {
            let (mut o, mut t, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..b.rounds {
                let a = round(ours.0, ours.1, ours.2, b.messages, depth).await?;
                o.push(a);
                if let Some(th) = theirs {
                    let d = round(th.0, th.1, th.2, b.messages, depth).await?;
                    t.push(d);
                    ratios.push(a / d);
                }
            }
            println!(
                "| RETR of {} messages of 10 KB, {how}, login to QUIT, median of {} | {:.0} messages/s | >= 2,000 messages/s |",
                b.messages,
                b.rounds,
                median(o)
            );
            if let Some(d) = &dovecot {
                let (lo, hi) = (
                    ratios.iter().copied().fold(f64::MAX, f64::min),
                    ratios.iter().copied().fold(0.0, f64::max),
                );
                println!(
                    "| the same against Dovecot {} POP3 (Maildir, no encryption), alternating rounds | {:.0} messages/s; Cofre/Dovecot {:.2} ({lo:.2}–{hi:.2}) | — |",
                    d.version,
                    median(t),
                    median(ratios)
                );
            }
        }
        Ok(())
    })
}
