//! `cofre bench link`: what the WebSocket link adds, on loopback.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use cofre_storage::link::route::Link;
use cofre_storage::link::ws::{LinkClient, LinkConfig, serve};
use cofre_storage::link::{Op, Reply};
use cofre_storage::primary::{Primary, PrimaryConfig, SessionId};
use cofre_storage::{AliasAddress, Store, StoreConfig};
use zeroize::Zeroizing;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

/// Runs the link measurements and prints a table.
pub fn run() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), StoreConfig::default())?;
    let address = AliasAddress::try_from("bench@example.com")?;
    let (_, password) = store.create_alias(&address, None)?;
    let primary = Arc::new(Primary::new(Arc::new(store), PrimaryConfig::default()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let config = LinkConfig::new(
        Arc::new(Zeroizing::new(b"benchmark cluster secret".to_vec())),
        "bench",
    );
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let url = format!("ws://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    rt.spawn(serve(
        listener,
        Arc::clone(&primary),
        config.clone(),
        stopped,
    ));
    let client = rt.block_on(LinkClient::connect(&url, config))?;
    let Reply::Session(session) = rt.block_on(client.request(Op::Login {
        address: address.clone(),
        password,
    }))?
    else {
        bail!("login failed");
    };

    println!("| measure | result | target |");
    println!("|---|---|---|");
    // A small read (the folder list), through the in-process link (what
    // `cofre serve` uses) and through the WebSocket link.
    let in_process = Link::Local(Arc::clone(&primary));
    let mut local = Vec::new();
    rt.block_on(async {
        for _ in 0..2000 {
            let s = Instant::now();
            in_process.request(Op::Folders { session }).await?;
            local.push(s.elapsed());
        }
        anyhow::Ok(())
    })?;
    let mut remote = Vec::new();
    rt.block_on(async {
        for _ in 0..2000 {
            let s = Instant::now();
            client.request(Op::Folders { session }).await?;
            remote.push(s.elapsed());
        }
        anyhow::Ok(())
    })?;
    let mut noop = Vec::new();
    rt.block_on(async {
        for _ in 0..2000 {
            let s = Instant::now();
            client
                .request(Op::Logout {
                    session: SessionId(0),
                })
                .await?;
            noop.push(s.elapsed());
        }
        anyhow::Ok(())
    })?;
    println!(
        "| no-op request round trip over the link, median | {:.0} µs | - |",
        median(noop).as_secs_f64() * 1e6
    );
    let (l, r) = (median(local), median(remote));
    println!(
        "| small read (folder list): in-process link / WebSocket link, median | {:.0} µs / {:.0} µs | - |",
        l.as_secs_f64() * 1e6,
        r.as_secs_f64() * 1e6
    );
    println!(
        "| link overhead added to a small read, median | {:.0} µs | <= 100 µs |",
        r.saturating_sub(l).as_secs_f64() * 1e6
    );

    // The same read over TLS (wss://), as between machines.
    let tls_dir = dir.path().join("tls");
    let (files, _) = cofre_storage::tls::self_signed(&tls_dir, &["localhost".to_string()])?;
    let mut tls_config = LinkConfig::new(
        Arc::new(Zeroizing::new(b"benchmark cluster secret".to_vec())),
        "bench",
    );
    tls_config.accept_tls = Some(cofre_storage::tls::server_config(&files)?);
    tls_config.connect_tls = Some(cofre_storage::tls::client_config(&files.cert)?);
    let tls_listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let tls_url = format!("wss://localhost:{}", tls_listener.local_addr()?.port());
    rt.spawn(serve(
        tls_listener,
        Arc::clone(&primary),
        tls_config.clone(),
        stop.subscribe(),
    ));
    let tls_client = rt.block_on(LinkClient::connect(&tls_url, tls_config))?;
    let mut secure = Vec::new();
    rt.block_on(async {
        for _ in 0..2000 {
            let s = Instant::now();
            tls_client.request(Op::Folders { session }).await?;
            secure.push(s.elapsed());
        }
        anyhow::Ok(())
    })?;
    println!(
        "| small read over a TLS link (wss://), median | {:.0} µs | - |",
        median(secure).as_secs_f64() * 1e6
    );

    // Throughput: 64 callers sharing one link.
    for (label, make) in [
        ("no-op request (link only)", 0u8),
        ("folder list (link + mailbox thread)", 1u8),
    ] {
        let total = 40_000usize;
        let start = Instant::now();
        rt.block_on(async {
            let mut tasks = Vec::new();
            for _ in 0..64 {
                let c = client.clone();
                tasks.push(tokio::spawn(async move {
                    for _ in 0..total / 64 {
                        let op = if make == 0 {
                            Op::Logout {
                                session: SessionId(0),
                            }
                        } else {
                            Op::Folders { session }
                        };
                        c.request(op).await?;
                    }
                    anyhow::Ok(())
                }));
            }
            for t in tasks {
                t.await??;
            }
            anyhow::Ok(())
        })?;
        let per_s = (total / 64 * 64) as f64 / start.elapsed().as_secs_f64();
        println!("| requests/s through one link, 64 callers, {label} | {per_s:.0} | >= 20,000 |");
    }

    // A 25 MB message through the link: peak memory growth.
    let raw = {
        let mut v = b"Subject: big\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        while v.len() < 25 << 20 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.extend_from_slice(&x.to_le_bytes());
        }
        v
    };
    let size = raw.len() as u64;
    // Reset the peak-RSS mark (Linux: writing 5 to clear_refs).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = status_kib("VmRSS:");
    let s = Instant::now();
    rt.block_on(client.request(Op::Deliver {
        address,
        raw,
        delivery_ref: None,
    }))?;
    let took = s.elapsed();
    let peak = status_kib("VmHWM:");
    let growth = peak.saturating_sub(before) * 1024;
    println!(
        "| 25 MB message through the link into the mailbox: time, peak memory growth | {:.0} ms, {:.1}x the message | <= 3x |",
        took.as_secs_f64() * 1000.0,
        growth as f64 / size as f64
    );
    let _ = stop.send(true);
    Ok(())
}
