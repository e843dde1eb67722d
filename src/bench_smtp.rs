//! `cofre bench smtp`: mail exchanger ingest over loopback.
//!
//! Several senders at once, each on its own connection, deliver 10 KB
//! messages (pipelined MAIL/RCPT/DATA) to aliases with live sessions; a
//! round ends when every message is accepted, on disk and indexed for
//! search. The same load generator then drives Postfix handing mail to
//! Dovecot over LMTP (Debian packages, plain Maildir) started here, and the
//! two are reported as a ratio, rounds alternating. Messages are
//! DKIM-signed and checked (SPF, DKIM, ARC, DMARC against a fixture DNS
//! server) unless `--no-mail-auth`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use cofre_storage::link::route::{Link, Router};
use cofre_storage::primary::{Primary, PrimaryConfig, SessionId};
use cofre_storage::{AliasAddress, Store, StoreConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::bench::{Rng, Vocabulary, message};

/// Benchmark settings.
pub struct SmtpBench {
    /// Concurrent senders (each delivers to its own alias).
    pub clients: usize,
    /// Messages per round, in all.
    pub messages: usize,
    /// Alternating rounds against each server.
    pub rounds: usize,
    /// Also run the load against Postfix + Dovecot.
    pub postfix: bool,
    /// Check SPF, DKIM, ARC and DMARC of every message (as `serve` does).
    pub mail_auth: bool,
}

/// A sender on one connection.
struct Sender {
    r: BufReader<TcpStream>,
}

impl Sender {
    async fn connect(addr: &str) -> Result<Sender> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let mut c = Sender {
            r: BufReader::new(s),
        };
        c.expect("220").await?;
        c.r.get_mut()
            .write_all(b"EHLO sender.bench.example\r\n")
            .await?;
        c.expect("250").await?;
        Ok(c)
    }

    /// Reads one reply (all its lines) and checks its code.
    async fn expect(&mut self, code: &str) -> Result<()> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.r.read_line(&mut line).await? == 0 {
                bail!("connection closed");
            }
            if line.as_bytes().get(3) != Some(&b'-') {
                break;
            }
        }
        if !line.starts_with(code) {
            bail!("expected {code}, got {}", line.trim_end());
        }
        Ok(())
    }

    /// Sends one message; returns how long the final 250 took after the
    /// end of the data.
    async fn send(&mut self, rcpt: &str, stuffed: &[u8]) -> Result<Duration> {
        let envelope =
            format!("MAIL FROM:<load@sender.bench.example>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n");
        self.r.get_mut().write_all(envelope.as_bytes()).await?;
        self.expect("250").await?;
        self.expect("250").await?;
        self.expect("354").await?;
        self.r.get_mut().write_all(stuffed).await?;
        let sent = Instant::now();
        self.expect("250").await?;
        Ok(sent.elapsed())
    }
}

/// A message for DATA: a unique first header, dot-stuffed, terminated.
fn data(body: &[u8], n: usize) -> Vec<u8> {
    let mut out = format!("X-Bench-Sequence: {n}\r\n").into_bytes();
    for line in body.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// One round: every sender delivers its share; returns the accept
/// latencies. `first` numbers the messages so each round's are new.
async fn round(
    addr: &str,
    rcpts: &[String],
    bodies: &Arc<Vec<Vec<u8>>>,
    per_client: usize,
    first: usize,
) -> Result<Vec<Duration>> {
    let mut tasks = Vec::new();
    for (i, rcpt) in rcpts.iter().enumerate() {
        let (addr, rcpt, bodies) = (addr.to_string(), rcpt.clone(), Arc::clone(bodies));
        tasks.push(tokio::spawn(async move {
            let mut s = Sender::connect(&addr).await?;
            let mut lat = Vec::with_capacity(per_client);
            for k in 0..per_client {
                let n = first + i * per_client + k;
                let msg = data(&bodies[n % bodies.len()], n);
                lat.push(s.send(&rcpt, &msg).await?);
            }
            s.r.get_mut().write_all(b"QUIT\r\n").await?;
            anyhow::Ok(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(all)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

/// Files in the users' Maildirs (`new/` and `cur/`).
fn maildir_count(root: &std::path::Path) -> usize {
    let mut n = 0;
    for user in std::fs::read_dir(root).into_iter().flatten().flatten() {
        for sub in ["new", "cur"] {
            if let Ok(d) = std::fs::read_dir(user.path().join("Maildir").join(sub))
                .or_else(|_| std::fs::read_dir(user.path().join(sub)))
            {
                n += d.count();
            }
        }
    }
    n
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs the SMTP measurements and prints a table.
pub fn run(b: SmtpBench) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), StoreConfig::default())?;
    let mut aliases = Vec::new();
    for i in 0..b.clients {
        let a = AliasAddress::try_from(format!("load{i}@example.com").as_str())?;
        let (_, p) = store.create_alias(&a, None)?;
        aliases.push((a, p));
    }
    let primary = Arc::new(Primary::new(Arc::new(store), PrimaryConfig::default()));
    // Live sessions: mail goes straight into the mailboxes.
    let sessions: Vec<SessionId> = aliases
        .iter()
        .map(|(a, p)| primary.login(a, p))
        .collect::<std::result::Result<_, _>>()?;
    let rcpts: Vec<String> = aliases.iter().map(|(a, _)| a.to_string()).collect();
    let mut rng = Rng(0x5_3737);
    let vocab = Vocabulary::new(&mut rng);
    // Mail as it arrives from a real sender: DKIM-signed by its domain,
    // whose key, SPF and DMARC records a fixture DNS server publishes, so
    // the MX's checks do their full work on every message.
    let key = cofre_mx::auth::generate_dkim_key("example.org", "bench")
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut bodies = Vec::new();
    for i in 0..64 {
        let body = message(&mut rng, &vocab, i, 10 * 1024);
        let sig = cofre_mx::auth::dkim_sign(&key, &body).map_err(|e| anyhow::anyhow!("{e}"))?;
        bodies.push([sig.as_bytes(), &body].concat());
    }
    let bodies = Arc::new(bodies);
    let (dkim_name, dkim_value) = cofre_mx::auth::dkim_record(&key);
    let txt = |n: &str, v: &str| (n.to_string(), cofre_mx::dns::FixtureRecord::Txt(v.into()));
    let records = vec![
        txt(&dkim_name, &dkim_value),
        txt("sender.bench.example", "v=spf1 ip4:127.0.0.1 -all"),
        txt("_dmarc.example.org", "v=DMARC1; p=none"),
    ];
    let per_client = (b.messages / b.clients).max(1);
    let total = per_client * b.clients;

    // The DNS server runs on a thread of its own, as a resolver beside a
    // mail server would be another process.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            match cofre_mx::dns::FixtureDns::start(records).await {
                Ok(dns) => {
                    let _ = tx.send(Ok(dns.addr));
                    std::future::pending::<()>().await;
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
    });
    let dns_addr = rx.recv()??;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let router = Router::new(vec![("bench".into(), Link::Local(Arc::clone(&primary)))]);
        let auth = cofre_mx::auth::MailAuth::new("mx.bench.example", Some(dns_addr))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let session = Arc::new(cofre_mx::Config {
            hostname: "mx.bench.example".into(),
            max_message_size: 50 << 20,
            max_recipients: 100,
            starttls: false,
            submission: None,
            forwarding: None,
            auth: b.mail_auth.then(|| Arc::new(auth)),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(cofre_mx::serve(
            listener,
            router,
            Arc::new(cofre_mx::ServerConfig::new(session, None)),
            false,
            stopped,
        ));
        let others = if b.postfix {
            let dovecot = crate::bench_dovecot::Dovecot::start(b.clients, true)?;
            let lmtp = dovecot.lmtp.clone().unwrap_or_default();
            let postfix = crate::bench_postfix::Postfix::start(&lmtp)?;
            Some((dovecot, postfix))
        } else {
            None
        };

        let (mut ours, mut theirs, mut ratios, mut latencies) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for r in 0..b.rounds {
            let first = r * total;
            let started = Instant::now();
            latencies.extend(round(&addr, &rcpts, &bodies, per_client, first).await?);
            // Accepted is durable; indexed is when every backlog is empty.
            for s in &sessions {
                primary.call_async(*s, |mb| mb.flush_index()).await?;
            }
            let o = total as f64 / started.elapsed().as_secs_f64();
            ours.push(o);
            if let Some((dovecot, postfix)) = &others {
                let started = Instant::now();
                round(&postfix.addr, &rcpts, &bodies, per_client, first).await?;
                // Delivered is when Dovecot has written every Maildir file.
                let want = (r + 1) * total;
                while maildir_count(&dovecot.mail) < want {
                    if started.elapsed() > Duration::from_secs(600) {
                        bail!(
                            "Postfix delivered {} of {want} messages to Dovecot",
                            maildir_count(&dovecot.mail)
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let t = total as f64 / started.elapsed().as_secs_f64();
                theirs.push(t);
                ratios.push(o / t);
            }
        }
        // Every message is stored once in its alias's inbox.
        for s in &sessions {
            let n = primary
                .call_async(*s, |mb| {
                    let inbox = mb.folder_by_role(cofre_storage::Role::Inbox)?.id;
                    Ok(mb.folder(inbox)?.total)
                })
                .await?;
            if n as usize != per_client * b.rounds {
                bail!("an inbox holds {n} messages, expected {}", per_client * b.rounds);
            }
        }
        latencies.sort();
        println!("| measure | result | target |");
        println!("|---|---|---|");
        println!(
            "| MX ingest, 10 KB messages, {} senders, {total} messages a round, accepted + durable + indexed, median of {} rounds | {:.0} messages/s | >= 500 messages/s |",
            b.clients,
            b.rounds,
            median(&mut ours)
        );
        println!(
            "| accept latency (end of DATA to 250), all rounds | p50 {:.1} ms, p99 {:.1} ms | - |",
            percentile(&latencies, 0.5).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3
        );
        if let Some((dovecot, postfix)) = &others {
            let lo = ratios.iter().copied().fold(f64::MAX, f64::min);
            let hi = ratios.iter().copied().fold(0.0, f64::max);
            println!(
                "| the same load through Postfix {} to Dovecot {} over LMTP (Maildir, no encryption), until delivered | {:.0} messages/s; Cofre/Postfix+Dovecot {:.2} (rounds {lo:.2}–{hi:.2}) | - |",
                postfix.version,
                dovecot.version,
                median(&mut theirs),
                median(&mut ratios)
            );
        }
        Ok(())
    })
}
