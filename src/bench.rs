//! `cofre bench`: the storage figures the README quotes, measured here.

use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;
use cofre_storage::mailbox::{AppendOptions, Filter, Query, TextField};
use cofre_storage::{
    AliasAddress, EmailId, KdfParams, Mailbox, MailboxOptions, Password, Role, SecretKey, Store,
    StoreConfig, keys,
};

/// What to measure, and how big.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// 10 KB messages ingested to measure ingest rate.
    #[arg(long, default_value_t = 5_000)]
    ingest_messages: usize,
    /// Messages in the mailbox that substring search runs over.
    #[arg(long, default_value_t = 100_000)]
    search_messages: usize,
    /// Idle mailboxes opened to measure memory per mailbox.
    #[arg(long, default_value_t = 200)]
    idle_mailboxes: usize,
}

/// A small deterministic generator, so every run measures the same corpus.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn word(&mut self) -> String {
        const SYLLABLES: [&str; 16] = [
            "ka", "lo", "mi", "ne", "ru", "sa", "te", "vo", "bri", "dan", "fel", "gor", "hum",
            "jax", "qui", "zet",
        ];
        let n = 2 + (self.next() % 3) as usize;
        (0..n)
            .map(|_| SYLLABLES[(self.next() % 16) as usize])
            .collect()
    }
}

fn message(rng: &mut Rng, i: usize, body_bytes: usize) -> Vec<u8> {
    let mut body = String::with_capacity(body_bytes + 100);
    let mut line = String::new();
    while body.len() < body_bytes {
        let w = rng.word();
        if line.len() + w.len() > 72 {
            body.push_str(&line);
            body.push_str("\r\n");
            line.clear();
        }
        line.push_str(&w);
        line.push(' ');
    }
    format!(
        "From: Sender {i} <sender{}@example.org>\r\nTo: bench@example.com\r\n\
         Subject: Report {} number {i}\r\nMessage-ID: <bench-{i}@example.org>\r\n\
         Date: Mon, 6 May 2024 10:{:02}:00 +0000\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n",
        i % 500,
        rng.word(),
        i % 60
    )
    .into_bytes()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

fn fill(mb: &mut Mailbox, rng: &mut Rng, count: usize, body: usize) -> Result<Duration> {
    let inbox = mb.folder_by_role(Role::Inbox)?.id;
    let start = Instant::now();
    let mut i = 0;
    while i < count {
        let n = 200.min(count - i);
        let raws: Vec<Vec<u8>> = (i..i + n).map(|j| message(rng, j, body)).collect();
        let batch: Vec<(&[u8], AppendOptions)> = raws
            .iter()
            .map(|r| (r.as_slice(), AppendOptions::default()))
            .collect();
        mb.append_batch(inbox, &batch)?;
        i += n;
    }
    Ok(start.elapsed())
}

/// Runs every measurement and prints a table.
pub fn run(args: BenchArgs) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut rng = Rng(0x5eed_cafe);
    println!("| measure | result | target |");
    println!("|---|---|---|");

    // Argon2id, the per-login cost.
    let pw = Password::generate();
    let salt: [u8; 16] = [7; 16];
    let mut t = Vec::new();
    for _ in 0..9 {
        let s = Instant::now();
        keys::derive(&pw, &salt, KdfParams::DEFAULT)?;
        t.push(s.elapsed());
    }
    let p = KdfParams::DEFAULT;
    println!(
        "| Argon2id login (m={} MiB, t={}, p={}) median | {} | about 50 ms, OWASP minimum or above |",
        p.m_kib / 1024,
        p.t,
        p.p,
        ms(median(t))
    );

    // Ingest of 10 KB messages, batched as an import or a drain does.
    let key = SecretKey::generate();
    let mut mb = Mailbox::create(
        &dir.path().join("ingest.sqlite"),
        &key,
        MailboxOptions::default(),
    )?;
    let took = fill(&mut mb, &mut rng, args.ingest_messages, 10 * 1024)?;
    println!(
        "| ingest, 10 KB messages, FTS on ({} messages) | {:.0} messages/s | >= 1,000 messages/s |",
        args.ingest_messages,
        args.ingest_messages as f64 / took.as_secs_f64()
    );
    // One message per transaction, as SMTP delivery does.
    let inbox = mb.folder_by_role(Role::Inbox)?.id;
    let singles: Vec<Vec<u8>> = (0..200)
        .map(|j| message(&mut rng, 900_000 + j, 10 * 1024))
        .collect();
    let s = Instant::now();
    for raw in &singles {
        mb.append(inbox, raw, &AppendOptions::default())?;
    }
    println!(
        "| ingest, 10 KB messages, one transaction each | {:.0} messages/s | (SMTP delivery path) |",
        singles.len() as f64 / s.elapsed().as_secs_f64()
    );
    drop(mb);

    // Search and summaries over a large mailbox.
    let mut mb = Mailbox::create(
        &dir.path().join("search.sqlite"),
        &key,
        MailboxOptions::default(),
    )?;
    let took = fill(&mut mb, &mut rng, args.search_messages, 1024)?;
    println!(
        "| build search corpus ({} messages of 1 KB) | {:.0} messages/s | - |",
        args.search_messages,
        args.search_messages as f64 / took.as_secs_f64()
    );
    let inbox = mb.folder_by_role(Role::Inbox)?.id;
    let needles: Vec<String> = (0..15).map(|_| rng.word() + &rng.word()[..2]).collect();
    let mut t = Vec::new();
    let mut hits = 0;
    for n in &needles {
        let s = Instant::now();
        hits += mb
            .search(&Query::in_folder(
                inbox,
                Filter::Contains(TextField::Text, n.clone()),
            ))?
            .len();
        t.push(s.elapsed());
    }
    println!(
        "| substring search (IMAP TEXT) over {} messages, median of {} | {} ({} hits in all) | <= 50 ms |",
        args.search_messages,
        needles.len(),
        ms(median(t)),
        hits
    );
    let mut t = Vec::new();
    for n in &needles {
        let s = Instant::now();
        mb.search(&Query::in_folder(
            inbox,
            Filter::Contains(TextField::Subject, n[..5].to_string()),
        ))?;
        t.push(s.elapsed());
    }
    println!(
        "| substring search (SUBJECT) median | {} | <= 50 ms |",
        ms(median(t))
    );
    let ids: Vec<EmailId> = mb
        .folder_index(inbox)?
        .into_iter()
        .take(1000)
        .map(|(_, e)| e)
        .collect();
    let mut t = Vec::new();
    for _ in 0..15 {
        let s = Instant::now();
        let got = mb.summaries(&ids)?;
        t.push(s.elapsed());
        anyhow::ensure!(got.len() == ids.len(), "summaries missing");
    }
    println!(
        "| header summaries of 1,000 messages, median | {} | <= 20 ms |",
        ms(median(t))
    );
    drop(mb);

    // Cached-key open: unlock from the key cache, open, first read.
    let store = Store::open(&dir.path().join("data"), StoreConfig::default())?;
    let address = AliasAddress::try_from("bench@example.com")?;
    let (_, password) = store.create_alias(&address, None)?;
    store.unlock(&address, &password)?;
    let mut t = Vec::new();
    for _ in 0..50 {
        let s = Instant::now();
        let u = store.unlock(&address, &password)?;
        let mb = store.open_mailbox(&u)?;
        mb.folder_by_role(Role::Inbox)?;
        t.push(s.elapsed());
    }
    println!(
        "| cached-key mailbox open (unlock + open + first read), median | {} | <= 2 ms |",
        ms(median(t))
    );

    // Memory per open idle mailbox.
    let paths: Vec<_> = (0..args.idle_mailboxes)
        .map(|i| dir.path().join(format!("idle-{i}.sqlite")))
        .collect();
    for p in &paths {
        let mut mb = Mailbox::create(p, &key, MailboxOptions::default())?;
        let inbox = mb.folder_by_role(Role::Inbox)?.id;
        mb.append(
            inbox,
            &message(&mut rng, 1, 2048),
            &AppendOptions::default(),
        )?;
    }
    let before = rss_kib();
    let mut open = Vec::with_capacity(paths.len());
    for p in &paths {
        let mb = Mailbox::open(p, &key, MailboxOptions::default())?;
        mb.folders()?;
        let inbox = mb.folder_by_role(Role::Inbox)?.id;
        let ids: Vec<EmailId> = mb
            .folder_index(inbox)?
            .into_iter()
            .map(|(_, e)| e)
            .collect();
        mb.summaries(&ids)?;
        open.push(mb);
    }
    let after = rss_kib();
    println!(
        "| resident memory per open idle mailbox ({} open) | {} KiB | <= 512 KiB |",
        open.len(),
        after.saturating_sub(before) / open.len().max(1) as u64
    );
    Ok(())
}
