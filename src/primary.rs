//! `cofre primary`: the primary process on its own, serving the link.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use cofre_storage::Store;
use cofre_storage::link::ws::{LinkConfig, serve};
use cofre_storage::primary::{Primary, PrimaryConfig};
use zeroize::Zeroizing;

/// Where the primary listens.
#[derive(Debug, Args)]
pub struct PrimaryArgs {
    /// Link listen address, HOST:PORT (port 0 picks a free one).
    #[arg(long, env = "COFRE_LINK", default_value = "127.0.0.1:7400")]
    link: String,
    /// This node's name in peers' logs.
    #[arg(long, env = "COFRE_NODE", default_value = "primary")]
    node: String,
}

/// The cluster secret from `COFRE_CLUSTER_SECRET`: at least 16 bytes.
pub fn cluster_secret() -> Result<Arc<Zeroizing<Vec<u8>>>> {
    let secret = std::env::var("COFRE_CLUSTER_SECRET").context(
        "COFRE_CLUSTER_SECRET is not set: every node of a cluster needs the same secret",
    )?;
    if secret.len() < 16 {
        bail!("COFRE_CLUSTER_SECRET must be at least 16 characters");
    }
    Ok(Arc::new(Zeroizing::new(secret.into_bytes())))
}

/// Runs the primary until Ctrl-C or SIGTERM, then lets in-flight work end.
pub fn run(store: Store, args: PrimaryArgs) -> Result<()> {
    let secret = cluster_secret()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.link)
            .await
            .with_context(|| format!("binding the link address {}", args.link))?;
        let addr = listener.local_addr()?;
        let primary = Arc::new(Primary::new(Arc::new(store), PrimaryConfig::default()));
        let config = LinkConfig::new(secret, args.node);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(serve(listener, primary, config, stopped));
        println!("link listening on ws://{addr}");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("shutting down");
        let _ = stop.send(true);
        server.await??;
        Ok(())
    })
}
