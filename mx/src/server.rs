//! The SMTP listener: sockets, TLS (STARTTLS and implicit), command lines,
//! DATA with dot-unstuffing, BDAT chunks, pipelining, limits and timeouts.
//! Protocol decisions are the [`Session`]'s; this module only moves bytes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cofre_storage::link::route::Router;
use cofre_storage::net::{Conn, Limits, ReadError, accept_loop, stopping};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::rustls::ServerConfig as TlsConfig;

use crate::session::{Config, Next, Session};

/// A listener's settings.
pub struct ServerConfig {
    /// What sessions share.
    pub session: Arc<Config>,
    /// TLS settings, for STARTTLS and implicit TLS.
    pub tls: Option<Arc<TlsConfig>>,
    /// Connections at once, in total.
    pub max_connections: usize,
    /// Connections at once from one IP address.
    pub max_per_ip: usize,
    /// The longest command line, in octets (RFC 5321 asks for 512).
    pub max_line: usize,
    /// How long to wait for a command (RFC 5321 §4.5.3.2: at least 5 min).
    pub command_timeout: Duration,
    /// How long to wait for the next piece of a message.
    pub data_timeout: Duration,
}

impl ServerConfig {
    /// Defaults: RFC 5321's timeouts, 4 KiB command lines, 1,000
    /// connections and 20 per address.
    pub fn new(session: Arc<Config>, tls: Option<Arc<TlsConfig>>) -> ServerConfig {
        ServerConfig {
            session,
            tls,
            max_connections: 1000,
            max_per_ip: 20,
            max_line: 4096,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
        }
    }
}

/// What a connection over the caps is told before it is closed.
const BUSY: &[u8] = b"421 4.7.0 Too many connections; try again later\r\n";

/// Serves SMTP on `listener` until `stopped` turns true. With
/// `implicit_tls` every connection starts with a TLS handshake.
pub async fn serve(
    listener: TcpListener,
    router: Arc<Router>,
    config: Arc<ServerConfig>,
    implicit_tls: bool,
    stopped: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let limits = Limits {
        total: config.max_connections,
        per_ip: config.max_per_ip,
    };
    accept_loop(listener, limits, BUSY, stopped.clone(), |stream, peer| {
        let router = Arc::clone(&router);
        let config = Arc::clone(&config);
        let stopped = stopped.clone();
        connection(stream, peer, router, config, implicit_tls, stopped)
    })
    .await
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Arc<Router>,
    config: Arc<ServerConfig>,
    implicit_tls: bool,
    mut stopped: watch::Receiver<bool>,
) {
    let tls = if implicit_tls {
        let Some(tls) = &config.tls else { return };
        Some(tls)
    } else {
        None
    };
    let Some(mut conn) = Conn::accepted(stream, tls, config.command_timeout).await else {
        return;
    };
    let mut session = Session::new(router, Arc::clone(&config.session), peer, implicit_tls);
    let mut out = session.greeting().into_bytes();
    if !conn.send(&mut out).await {
        return;
    }
    tracing::debug!(%peer, "smtp connection");
    run(&mut conn, &mut session, &config, &mut stopped, &mut out).await;
    let _ = conn.send(&mut out).await;
    let _ = conn.io.shutdown().await;
    session.close().await;
}

async fn run(
    conn: &mut Conn,
    session: &mut Session,
    config: &ServerConfig,
    stopped: &mut watch::Receiver<bool>,
    out: &mut Vec<u8>,
) {
    let host = &config.session.hostname;
    loop {
        let read = tokio::select! {
            r = tokio::time::timeout(config.command_timeout, conn.line(config.max_line)) => r,
            _ = stopping(stopped) => {
                out.extend_from_slice(format!("421 4.3.2 {host} shutting down\r\n").as_bytes());
                return;
            }
        };
        let line = match read {
            Err(_) => {
                out.extend_from_slice(
                    format!("421 4.4.2 {host} timeout, closing connection\r\n").as_bytes(),
                );
                return;
            }
            Ok(Err(ReadError::TooLong)) => {
                out.extend_from_slice(b"500 5.5.2 Line too long\r\n");
                return;
            }
            Ok(Err(_)) => return,
            Ok(Ok(l)) => l,
        };
        let mut next = session.command(&line).await;
        // AUTH may take several lines (334 challenges).
        while let Next::AuthContinue(r) = next {
            out.extend_from_slice(r.as_bytes());
            if !conn.send(out).await {
                return;
            }
            let read = tokio::time::timeout(config.command_timeout, conn.line(config.max_line));
            let Ok(Ok(line)) = read.await else { return };
            next = session.auth_line(&line).await;
        }
        match next {
            Next::AuthContinue(_) => {}
            Next::Reply(r) => {
                out.extend_from_slice(r.as_bytes());
                // Pipelining (RFC 2920): answers to a group of commands go
                // out together, once no further command is waiting.
                if !conn.buf.contains(&b'\n') && !conn.send(out).await {
                    return;
                }
            }
            Next::Close(r) => {
                out.extend_from_slice(r.as_bytes());
                return;
            }
            Next::ReadData(r) => {
                out.extend_from_slice(r.as_bytes());
                if !conn.send(out).await {
                    return;
                }
                let Some((raw, too_large)) = read_data(conn, config).await else {
                    // The connection broke mid-message: nothing was
                    // acknowledged, nothing is delivered.
                    return;
                };
                let r = session.message(&raw, too_large).await;
                out.extend_from_slice(r.as_bytes());
                if !conn.buf.contains(&b'\n') && !conn.send(out).await {
                    return;
                }
            }
            Next::ReadChunk { size, last } => {
                let fits = session.chunk_fits(size);
                let mut bytes = Vec::new();
                let read = if fits {
                    bytes.reserve(usize::try_from(size).unwrap_or(0));
                    read_exact(conn, size, Some(&mut bytes), config).await
                } else {
                    read_exact(conn, size, None, config).await
                };
                if !read {
                    return;
                }
                let r = session.chunk(fits.then_some(bytes), last).await;
                out.extend_from_slice(r.as_bytes());
                if !conn.buf.contains(&b'\n') && !conn.send(out).await {
                    return;
                }
            }
            Next::StartTls(r) => {
                out.extend_from_slice(r.as_bytes());
                if !conn.send(out).await {
                    return;
                }
                let Some(tls) = &config.tls else { return };
                if !conn.start_tls(tls, config.command_timeout).await {
                    return;
                }
                session.tls_started();
            }
        }
    }
}

/// Reads a DATA message up to the line holding a single dot, removing
/// dot-stuffing (RFC 5321 §4.5.2). Past the size limit the rest is read
/// and dropped. `None` when the connection broke or stalled.
async fn read_data(conn: &mut Conn, config: &ServerConfig) -> Option<(Vec<u8>, bool)> {
    let limit = usize::try_from(config.session.max_message_size).unwrap_or(usize::MAX);
    // One line may be as long as a whole message (binary-ish senders).
    let max_line = limit.saturating_add(1024);
    let mut raw = Vec::new();
    let mut too_large = false;
    // Inside a line too long to hold: what comes next is its remainder.
    let mut continuing = false;
    loop {
        let line = match tokio::time::timeout(config.data_timeout, conn.raw_line(max_line)).await {
            Err(_) | Ok(Err(ReadError::Closed | ReadError::Io)) => return None,
            Ok(Err(ReadError::TooLong)) => {
                // A line longer than any message we accept: drop it, up to
                // its end if that was read already.
                match conn.buf.iter().position(|&b| b == b'\n') {
                    Some(end) => {
                        conn.buf.drain(..=end);
                        continuing = false;
                    }
                    None => {
                        conn.buf.clear();
                        continuing = true;
                    }
                }
                too_large = true;
                raw = Vec::new();
                continue;
            }
            Ok(Ok(line)) => line,
        };
        if std::mem::take(&mut continuing) {
            continue;
        }
        if line == b".\r\n" || line == b".\n" {
            return Some((raw, too_large));
        }
        let line = line.strip_prefix(b".").unwrap_or(&line);
        if too_large || raw.len() + line.len() > limit {
            too_large = true;
            raw = Vec::new();
            continue;
        }
        raw.extend_from_slice(line);
    }
}

/// Reads exactly `n` octets into `into`, or drops them when `into` is
/// `None`. False when the connection broke or stalled.
async fn read_exact(
    conn: &mut Conn,
    n: u64,
    into: Option<&mut Vec<u8>>,
    config: &ServerConfig,
) -> bool {
    match into {
        Some(buf) => {
            let Ok(n) = usize::try_from(n) else {
                return false;
            };
            matches!(
                tokio::time::timeout(config.data_timeout, conn.exact(n, buf)).await,
                Ok(Ok(()))
            )
        }
        None => {
            let mut left = n;
            let mut scratch = Vec::new();
            while left > 0 {
                let step = left.min(64 * 1024) as usize;
                scratch.clear();
                match tokio::time::timeout(config.data_timeout, conn.exact(step, &mut scratch))
                    .await
                {
                    Ok(Ok(())) => left -= step as u64,
                    _ => return false,
                }
            }
            true
        }
    }
}
