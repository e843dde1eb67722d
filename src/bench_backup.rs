//! `cofre bench backup`: a backup and a restore of a large mailbox beside a
//! plain copy of the same file on the same disk, and readers' latency
//! while the backup runs.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cofre_storage::backup::BackupOutcome;
use cofre_storage::mailbox::AppendOptions;
use cofre_storage::primary::{Primary, PrimaryConfig, SessionId};
use cofre_storage::{AliasAddress, KdfParams, Role, Store, StoreConfig};

use crate::bench::{Rng, ms};

/// Messages appended per transaction while filling the mailbox.
const BATCH: usize = 16;

/// Attachment bytes per message (incompressible, as photos and archives are).
const ATTACHMENT: usize = 256 * 1024;

/// Runs the measurement on a mailbox of about `size_mb` MB, in a folder
/// under `dir` (the disk measured).
pub fn run(size_mb: u64, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = tempfile::tempdir_in(dir).context("a scratch folder for the bench")?;
    let store = Store::open(
        tmp.path(),
        StoreConfig {
            kdf: KdfParams::INSECURE_FOR_TESTS,
            ..StoreConfig::default()
        },
    )?;
    let address = AliasAddress::try_from("bench@example.com")?;
    let (alias, password) = store.create_alias(&address, None)?;
    let path = store.mailbox_path(&alias);
    let p = Primary::new(Arc::new(store), PrimaryConfig::default());
    let s = p.login(&address, &password)?;

    let started = Instant::now();
    let messages = fill(&p, s, &path, size_mb << 20)?;
    let fill_time = started.elapsed();
    // The WAL folded in, so the copy below moves the whole mailbox.
    p.backup(s)?;
    let first = p.backups(s)?;
    for b in first {
        p.delete_backup(s, &b.id)?;
    }
    let size = std::fs::metadata(&path)?.len();
    let p = Arc::new(p);

    // Plain copies of the same file between the backups and restores,
    // each step after the disk's write-back settled (`sync`): copy,
    // backup, copy, restore, copy, backup, ... Each backup and restore is
    // compared with the copies on either side of it — the disk as it was
    // at that moment: this virtual disk's write speed drifts over minutes
    // and now and then takes a gigabyte at several times its usual rate.
    let copy = tmp.path().join("plain-copy");
    let plain_copy = || -> Result<Duration> {
        settle()?;
        let t = Instant::now();
        std::fs::copy(&path, &copy)?;
        std::fs::File::open(&copy)?.sync_all()?;
        let took = t.elapsed();
        std::fs::remove_file(&copy)?;
        Ok(took)
    };
    let (mut copies, mut backups, mut restores, mut lat) =
        (vec![plain_copy()?], vec![], vec![], vec![]);
    for round in 0..ROUNDS {
        // A change, so the backup copies.
        p.write(s, move |mb| {
            let inbox = mb.folder_by_role(Role::Inbox)?.id;
            mb.append(
                inbox,
                format!("Subject: one more ({round})\r\n\r\nchanged\r\n").as_bytes(),
                &AppendOptions::default(),
            )
        })?;
        settle()?;
        let (outcome, took, mut reads) = backup_under_reads(&p, s)?;
        backups.push(took);
        lat.append(&mut reads);
        let BackupOutcome::Stored(record) = outcome else {
            bail!("the changed mailbox was not copied");
        };
        copies.push(plain_copy()?);

        settle()?;
        let t = Instant::now();
        p.restore(s, &record.id)?;
        restores.push(t.elapsed());
        p.confirm_restore(s)?;
        copies.push(plain_copy()?);
    }
    lat.sort();
    // What `integrity_check` alone costs (it runs beside each backup's
    // copy), over one of the backups, read-only.
    let kept = p.backups(s)?;
    let one = kept.first().context("the rounds left no backup")?;
    let key = p.store().unlock(&address, &password)?.keys.data_key;
    let t = Instant::now();
    cofre_storage::backup::verify(
        &cofre_storage::backup::path_of(&p.store().backup_dir(&alias), &one.id),
        &key,
    )?;
    let integrity = t.elapsed();

    let mb = |bytes: u64, d: Duration| bytes as f64 / (1 << 20) as f64 / d.as_secs_f64();
    let secs = |v: &[Duration]| {
        v.iter()
            .map(|d| format!("{:.2}", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    let median = |v: &[Duration]| {
        let mut v = v.to_vec();
        v.sort();
        v[v.len() / 2]
    };
    // Each step's ratio (against the mean of the copies just before and
    // just after it), then their median. Backup `i` sits between copies
    // `2i` and `2i + 1`, restore `i` between `2i + 1` and `2i + 2`.
    let ratios = |v: &[Duration], first: usize| -> (String, f64) {
        let mut r: Vec<f64> = v
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let (before, after) = (copies[2 * i + first], copies[2 * i + first + 1]);
                100.0 * (before + after).as_secs_f64() / 2.0 / d.as_secs_f64()
            })
            .collect();
        let each = r
            .iter()
            .map(|x| format!("{x:.0}%"))
            .collect::<Vec<_>>()
            .join(" / ");
        r.sort_by(f64::total_cmp);
        (each, r[r.len() / 2])
    };
    let cp = median(&copies);
    println!(
        "mailbox: {messages} messages, {:.0} MB file (filled in {:.1} s)",
        size as f64 / (1 << 20) as f64,
        fill_time.as_secs_f64()
    );
    println!(
        "| measure ({ROUNDS} rounds: each step's time; a ratio compares a step with the copies either side of it) | median | target |"
    );
    println!("|---|---|---|");
    println!(
        "| plain copy of the file (copy + fsync: {} s) | {:.2} s, {:.0} MB/s | |",
        secs(&copies),
        cp.as_secs_f64(),
        mb(size, cp)
    );
    let (each, ratio) = ratios(&backups, 0);
    println!(
        "| backup (checkpoint; the pinned file copied + fsync, hashed and every page's HMAC checked on the way, integrity_check of the snapshot beside: {} s; of the copies' speed either side: {each}) | {:.2} s, **{ratio:.0}%** of the copy | ≥ 40% |",
        secs(&backups),
        median(&backups).as_secs_f64()
    );
    let (each, ratio) = ratios(&restores, 1);
    println!(
        "| restore (key check; copy + fsync, hashed and pages checked on the way; prepare; rename, the replaced file unlinked afterwards: {} s; {each}) | {:.2} s, **{ratio:.0}%** of the copy | ≥ 50% |",
        secs(&restores),
        median(&restores).as_secs_f64()
    );
    println!(
        "| `integrity_check` of one backup alone (every page decrypted; in a backup it runs beside the copy) | {:.2} s | |",
        integrity.as_secs_f64()
    );
    let pct = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize];
    println!(
        "| a reader during the backups ({} reads of the inbox index, one every 5 ms) | median {}, p99 {}, max {} | |",
        lat.len(),
        ms(pct(0.5)),
        ms(pct(0.99)),
        ms(lat[lat.len() - 1])
    );
    Ok(())
}

/// Rounds of copy, backup and restore measured.
const ROUNDS: usize = 3;

/// Waits for the system's pending writes to reach the disk, then lets it
/// rest a moment (a virtual disk's host goes on writing after `sync`).
fn settle() -> Result<()> {
    let status = std::process::Command::new("sync").status()?;
    if !status.success() {
        bail!("sync failed: {status}");
    }
    std::thread::sleep(Duration::from_secs(3));
    Ok(())
}

/// One backup, timed, with a reader asking for the inbox's index every
/// 5 ms from 200 ms before it to 200 ms after: the outcome, the backup's
/// time and the reads' latencies.
fn backup_under_reads(
    p: &Arc<Primary>,
    s: SessionId,
) -> Result<(BackupOutcome, Duration, Vec<Duration>)> {
    let reading = Arc::new(AtomicBool::new(true));
    let reader = {
        let (p, reading) = (Arc::clone(p), Arc::clone(&reading));
        std::thread::spawn(move || -> Result<Vec<Duration>> {
            let mut lat = Vec::new();
            while reading.load(Ordering::Relaxed) {
                let t = Instant::now();
                p.call(s, |mb| {
                    let inbox = mb.folder_by_role(Role::Inbox)?.id;
                    mb.folder_index(inbox)
                })?;
                lat.push(t.elapsed());
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(lat)
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    let outcome = p.backup(s);
    let took = t.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    reading.store(false, Ordering::Relaxed);
    let lat = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))??;
    Ok((outcome?, took, lat))
}

/// Appends messages with incompressible attachments until the mailbox file
/// reaches `bytes`; returns how many.
fn fill(p: &Primary, s: SessionId, path: &Path, bytes: u64) -> Result<usize> {
    let mut rng = Rng(0x000b_acc0_ffee);
    let mut n = 0;
    let on_disk = || {
        let wal = path.with_extension("sqlite-wal");
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
            + std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0)
    };
    while on_disk() < bytes {
        let batch: Vec<Vec<u8>> = (n..n + BATCH).map(|i| message(&mut rng, i)).collect();
        n += BATCH;
        p.write(s, move |mb| {
            let inbox = mb.folder_by_role(Role::Inbox)?.id;
            let msgs: Vec<(&[u8], AppendOptions)> = batch
                .iter()
                .map(|m| (m.as_slice(), AppendOptions::default()))
                .collect();
            mb.append_batch(inbox, &msgs)
        })?;
    }
    Ok(n)
}

/// A message with a short text part and an incompressible attachment.
fn message(rng: &mut Rng, i: usize) -> Vec<u8> {
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = format!(
        "From: sender@example.org\r\nTo: bench@example.com\r\nSubject: photo {i}\r\n\
         Message-ID: <photo-{i}@example.org>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
         Content-Type: text/plain\r\n\r\nthe photo, number {i}\r\n--b\r\n\
         Content-Type: image/jpeg\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..ATTACHMENT * 4 / 3 / 76 {
        for _ in 0..76 {
            out.push(B64[(rng.next() % 64) as usize]);
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"--b--\r\n");
    out
}
