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
    /// What to measure (storage, link, api, jmap, imap, pop3, smtp, backup).
    #[arg(value_enum, default_value_t = Suite::Storage)]
    suite: Suite,
    /// 10 KB messages ingested to measure ingest rate.
    #[arg(long, default_value_t = 5_000)]
    ingest_messages: usize,
    /// Messages in the mailbox that substring search runs over.
    #[arg(long, default_value_t = 100_000)]
    search_messages: usize,
    /// Idle mailboxes opened to measure memory per mailbox.
    #[arg(long, default_value_t = 200)]
    idle_mailboxes: usize,
    /// IMAP: messages in the mailbox `UID FETCH 1:*` reads.
    #[arg(long, default_value_t = 10_000)]
    fetch_messages: usize,
    /// IMAP: concurrent clients of the mixed load.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// IMAP: seconds of mixed load per server.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// IMAP: connections held in IDLE (0 to skip).
    #[arg(long, default_value_t = 10_000)]
    idle_connections: usize,
    /// IMAP and POP3: skip the side-by-side run against Dovecot.
    #[arg(long)]
    no_dovecot: bool,
    /// POP3: 10 KB messages in the maildrop RETR reads.
    #[arg(long, default_value_t = 2_000)]
    pop3_messages: usize,
    /// IMAP, POP3 and SMTP: rounds of load per server, alternating.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// SMTP: concurrent senders.
    #[arg(long, default_value_t = 10)]
    senders: usize,
    /// SMTP: messages per round, in all.
    #[arg(long, default_value_t = 3_000)]
    smtp_messages: usize,
    /// SMTP: skip the side-by-side run against Postfix and Dovecot.
    #[arg(long)]
    no_postfix: bool,
    /// Backup: the mailbox's size in MB.
    #[arg(long, default_value_t = 1024)]
    backup_mb: u64,
    /// Backup: the folder (and so the disk) the mailbox and its backups
    /// are written to.
    #[arg(long, default_value = "target/bench-backup")]
    backup_dir: std::path::PathBuf,
    /// SMTP: skip the SPF/DKIM/ARC/DMARC checks (on by default, as in
    /// `serve`).
    #[arg(long)]
    no_mail_auth: bool,
}

/// The benchmark suites.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Suite {
    /// Ingest, search, summaries, opens, memory, Argon2id.
    Storage,
    /// Link latency, throughput and memory, over loopback WebSocket.
    Link,
    /// The HTTP API over loopback with keep-alive: listing, search, and
    /// authenticated reads per second.
    Api,
    /// JMAP over loopback: the inbox page (query + get), full-text
    /// queries, and IMAP changes heard by an EventSource listener.
    Jmap,
    /// The IMAP bridge: FETCH over 10,000 messages, a mixed load beside
    /// Dovecot, memory of 10,000 connections in IDLE.
    Imap,
    /// The POP3 bridge: RETR throughput of 10 KB messages beside Dovecot.
    Pop3,
    /// The mail exchanger: ingest of 10 KB messages from several senders,
    /// beside Postfix delivering to Dovecot over LMTP.
    Smtp,
    /// Backup and restore of a 1 GB mailbox beside a plain file copy, and
    /// readers' latency during the backup.
    Backup,
}

/// A small deterministic generator, so every run measures the same corpus.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

const COMMON: &str = "the of and to a in is it you that he was for on are with as I his they be at one \
    have this from or had by hot word but what some we can out other were all there when up use your how \
    said an each she which do their time if will way about many then them write would like so these her \
    long make thing see him two has look more day could go come did number sound no most people my over \
    know water than call first who may down side been now find any new work part take get place made live \
    where after back little only round man year came show every good me give our under name very through \
    just form sentence great think say help low line differ turn cause much mean before move right boy old \
    too same tell does set three want air well also play small end put home read hand port large spell add \
    even land here must big high such follow act why ask men change went light kind off need house picture \
    try us again animal point mother world near build self earth father head stand own page should country \
    meeting invoice budget report project schedule review contract client deadline quarter revenue";

/// A vocabulary with a realistic spread: a few hundred very common words,
/// then tens of thousands of rarer ones, drawn with a Zipf-like law.
pub(crate) struct Vocabulary(Vec<String>);

impl Vocabulary {
    pub(crate) fn new(rng: &mut Rng) -> Self {
        const LETTERS: &[u8] = b"etaoinshrdlucmfwypvbgkjqxz";
        let mut words: Vec<String> = COMMON.split_whitespace().map(str::to_string).collect();
        while words.len() < 40_000 {
            let len = 4 + (rng.next() % 7) as usize;
            // Skewed letter choice, as in natural text.
            let w: String = (0..len)
                .map(|_| {
                    LETTERS[((rng.unit() * rng.unit()) * LETTERS.len() as f64) as usize] as char
                })
                .collect();
            words.push(w);
        }
        Vocabulary(words)
    }

    /// A word; low ranks are far more likely.
    fn word(&self, rng: &mut Rng) -> &str {
        let n = self.0.len() as f64;
        let rank = (n.powf(rng.unit()) - 1.0) as usize;
        &self.0[rank.min(self.0.len() - 1)]
    }

    /// A word of a given rank (for search needles of known rarity).
    pub(crate) fn ranked(&self, rank: usize) -> &str {
        &self.0[rank.min(self.0.len() - 1)]
    }
}

fn words(rng: &mut Rng, vocab: &Vocabulary, bytes: usize) -> String {
    let mut body = String::with_capacity(bytes + 100);
    let mut line = String::new();
    while body.len() + line.len() < bytes {
        let w = vocab.word(rng);
        if line.len() + w.len() > 72 {
            body.push_str(&line);
            body.push_str("\r\n");
            line.clear();
        }
        line.push_str(w);
        line.push(' ');
    }
    body.push_str(&line);
    body
}

/// A message shaped like everyday mail: trace and authentication headers,
/// then a text/plain part and its text/html alternative. `size` is the
/// target total size in bytes.
pub(crate) fn message(rng: &mut Rng, vocab: &Vocabulary, i: usize, size: usize) -> Vec<u8> {
    let sig: String = (0..12).map(|_| format!("{:016x}", rng.next())).collect();
    let headers = format!(
        "Received: from mx{n}.example.org (mx{n}.example.org [192.0.2.{n}])\r\n\tby mail.example.com with ESMTPS id {i:08x}\r\n\tfor <bench@example.com>; Mon, 6 May 2024 10:{m:02}:00 +0000\r\n\
         DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=s1; h=from:to:subject:date;\r\n\tbh={sig}=; b={sig}{sig}\r\n\
         From: Sender {n} <sender{n}@example.org>\r\nTo: bench@example.com\r\n\
         Subject: Report {subject} number {i}\r\nMessage-ID: <bench-{i}@example.org>\r\n\
         Date: Mon, 6 May 2024 10:{m:02}:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/alternative; boundary=\"b{i}\"\r\n\r\n",
        n = i % 250,
        m = i % 60,
        subject = vocab.word(rng),
    );
    let rest = size.saturating_sub(headers.len() + 200);
    let text = words(rng, vocab, rest * 2 / 5);
    let html = format!(
        "<html><body><p>{}</p></body></html>",
        words(rng, vocab, rest * 3 / 5 - 40).replace("\r\n", "</p>\r\n<p>")
    );
    format!(
        "{headers}--b{i}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n\
         --b{i}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n--b{i}--\r\n"
    )
    .into_bytes()
}

/// A plain-text message whose whole body is indexed: the worst case.
fn plain_message(rng: &mut Rng, vocab: &Vocabulary, i: usize, size: usize) -> Vec<u8> {
    let body = words(rng, vocab, size.saturating_sub(250));
    format!(
        "From: Sender {n} <sender{n}@example.org>\r\nTo: bench@example.com\r\n\
         Subject: Report {s} number {i}\r\nMessage-ID: <plain-{i}@example.org>\r\n\
         Date: Mon, 6 May 2024 10:00:00 +0000\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n",
        n = i % 250,
        s = vocab.word(rng),
    )
    .into_bytes()
}

pub(crate) fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

/// Creates `address` in `store` with `messages` generated 3 KB messages in
/// its inbox (deterministic for a seed); returns its password.
pub(crate) fn alias_with_mail(
    store: &cofre_storage::Store,
    address: &str,
    messages: usize,
    seed: u64,
) -> Result<cofre_storage::Password> {
    let address = cofre_storage::AliasAddress::try_from(address)?;
    let (_, password) = store.create_alias(&address, None)?;
    let unlocked = store.unlock(&address, &password)?;
    let mut mb = store.open_mailbox(&unlocked)?;
    let mut rng = Rng(seed);
    let vocab = Vocabulary::new(&mut rng);
    let raws: Vec<Vec<u8>> = (0..messages)
        .map(|i| message(&mut rng, &vocab, i, 3 * 1024))
        .collect();
    fill(&mut mb, &raws)?;
    Ok(password)
}

pub(crate) fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

/// Appends pre-generated messages in batches of 500, as an import does;
/// returns the time spent storing only.
pub(crate) fn fill(mb: &mut Mailbox, raws: &[Vec<u8>]) -> Result<Duration> {
    let inbox = mb.folder_by_role(Role::Inbox)?.id;
    let start = Instant::now();
    for chunk in raws.chunks(500) {
        let batch: Vec<(&[u8], AppendOptions)> = chunk
            .iter()
            .map(|r| (r.as_slice(), AppendOptions::default()))
            .collect();
        mb.append_batch(inbox, &batch)?;
    }
    Ok(start.elapsed())
}

/// Runs every measurement and prints a table.
pub fn run(args: BenchArgs) -> Result<()> {
    match args.suite {
        Suite::Storage => storage(args),
        Suite::Link => crate::bench_link::run(),
        Suite::Api => crate::bench_api::run(args.search_messages),
        Suite::Jmap => crate::bench_jmap::run(args.search_messages),
        Suite::Imap => crate::bench_imap::run(crate::bench_imap::ImapBench {
            messages: args.fetch_messages,
            clients: args.clients,
            seconds: args.seconds,
            idle: args.idle_connections,
            dovecot: !args.no_dovecot,
            rounds: args.rounds.max(1),
        }),
        Suite::Pop3 => crate::bench_pop3::run(crate::bench_pop3::Pop3Bench {
            messages: args.pop3_messages,
            rounds: args.rounds.max(1),
            dovecot: !args.no_dovecot,
        }),
        Suite::Backup => crate::bench_backup::run(args.backup_mb, &args.backup_dir),
        Suite::Smtp => crate::bench_smtp::run(crate::bench_smtp::SmtpBench {
            clients: args.senders.max(1),
            messages: args.smtp_messages,
            rounds: args.rounds.max(1),
            postfix: !args.no_postfix,
            mail_auth: !args.no_mail_auth,
        }),
    }
}

fn storage(args: BenchArgs) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut rng = Rng(0x5eed_cafe);
    let vocab = Vocabulary::new(&mut rng);
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
    let opts = MailboxOptions::default;
    let raws: Vec<Vec<u8>> = (0..args.ingest_messages)
        .map(|i| message(&mut rng, &vocab, i, 10 * 1024))
        .collect();
    // Three runs into fresh mailboxes: this machine's speed drifts between
    // runs, so the median is reported with the spread.
    let mut rates = Vec::new();
    let mut mb = None;
    for run in 0..3 {
        let mut m = Mailbox::create(
            &dir.path().join(format!("ingest-{run}.sqlite")),
            &key,
            opts(),
        )?;
        let took = fill(&mut m, &raws)?;
        rates.push(raws.len() as f64 / took.as_secs_f64());
        mb = Some(m);
    }
    let mut mb = mb.ok_or_else(|| anyhow::anyhow!("no ingest run"))?;
    rates.sort_by(f64::total_cmp);
    println!(
        "| ingest, 10 KB mail (headers, text + html alternative), FTS on, {} messages, median of 3 runs | {:.0} messages/s ({:.0}-{:.0}) | >= 1,000 messages/s |",
        raws.len(),
        rates[1],
        rates[0],
        rates[2]
    );
    // One message per transaction, as SMTP delivery does, with the search
    // indexing the primary's mailbox thread does under steady load (steps
    // of 8 once 32 wait) counted in.
    let inbox = mb.folder_by_role(Role::Inbox)?.id;
    let singles: Vec<Vec<u8>> = (0..640)
        .map(|j| message(&mut rng, &vocab, 900_000 + j, 10 * 1024))
        .collect();
    let s = Instant::now();
    for raw in &singles {
        mb.append(inbox, raw, &AppendOptions::default())?;
        if mb.index_backlog() >= cofre_storage::primary::INDEX_BACKLOG {
            mb.flush_index_some(cofre_storage::primary::INDEX_STEP)?;
        }
    }
    mb.flush_index()?;
    println!(
        "| ingest, 10 KB mail, one transaction each (SMTP delivery path) | {:.0} messages/s | - |",
        singles.len() as f64 / s.elapsed().as_secs_f64()
    );
    drop(mb);
    let raws: Vec<Vec<u8>> = (0..args.ingest_messages)
        .map(|i| plain_message(&mut rng, &vocab, i, 10 * 1024))
        .collect();
    let mut mb = Mailbox::create(&dir.path().join("plain.sqlite"), &key, opts())?;
    let took = fill(&mut mb, &raws)?;
    println!(
        "| ingest, 10 KB plain text (all of it indexed: worst case), {} messages | {:.0} messages/s | - |",
        raws.len(),
        raws.len() as f64 / took.as_secs_f64()
    );
    drop(mb);

    // Search and summaries over a large mailbox.
    let raws: Vec<Vec<u8>> = (0..args.search_messages)
        .map(|i| message(&mut rng, &vocab, i, 3 * 1024))
        .collect();
    let mut mb = Mailbox::create(&dir.path().join("search.sqlite"), &key, opts())?;
    let took = fill(&mut mb, &raws)?;
    println!(
        "| build the search corpus ({} messages of 3 KB) | {:.0} messages/s | - |",
        raws.len(),
        raws.len() as f64 / took.as_secs_f64()
    );
    drop(raws);
    let inbox = mb.folder_by_role(Role::Inbox)?.id;
    // Needles: parts of words across the frequency range (rank 300 to
    // 30,000), mid-word, as an IMAP client's substring search would send.
    let needles: Vec<String> = (0..15)
        .map(|k| {
            let w = vocab.ranked(300 + k * 2_000);
            w[1..w.len().min(6)].to_string()
        })
        .collect();
    for (label, field) in [
        ("TEXT", TextField::Text),
        ("SUBJECT", TextField::Subject),
        ("BODY", TextField::Body),
    ] {
        let mut t = Vec::new();
        let mut hits = 0;
        for n in &needles {
            let s = Instant::now();
            hits += mb
                .search(&Query::in_folder(inbox, Filter::Contains(field, n.clone())))?
                .len();
            t.push(s.elapsed());
        }
        println!(
            "| substring search (IMAP {label}) over {} messages, median of {} needles | {} ({} hits in all) | <= 50 ms |",
            args.search_messages,
            needles.len(),
            ms(median(t)),
            hits
        );
    }
    let mut t = Vec::new();
    let common = vocab.ranked(5).to_string();
    for _ in 0..5 {
        let s = Instant::now();
        mb.search(&Query::in_folder(
            inbox,
            Filter::Contains(TextField::Body, common.clone()),
        ))?;
        t.push(s.elapsed());
    }
    println!(
        "| substring search for a very common word ({common:?}), median | {} | - |",
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
            &message(&mut rng, &vocab, 1, 2048),
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
    // The same mailboxes after a burst of searches, then released as the
    // primary releases idle mailboxes.
    for mb in &open {
        let inbox = mb.folder_by_role(Role::Inbox)?.id;
        mb.search(&Query::in_folder(
            inbox,
            Filter::Contains(TextField::Text, "report".into()),
        ))?;
        mb.release_memory()?;
    }
    let released = rss_kib();
    println!(
        "| resident memory per open mailbox after use and release_memory | {} KiB | <= 512 KiB |",
        released.saturating_sub(before) / open.len().max(1) as u64
    );
    Ok(())
}
