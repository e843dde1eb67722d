//! POP3 (RFC 1939 with CAPA, UIDL, TOP, AUTH PLAIN, STLS and implicit
//! TLS) beside IMAP, on the same link and session handling: the listener
//! here moves bytes; the [`Session`] decides.

pub mod session;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cofre_storage::link::route::Router;
use cofre_storage::net::{Conn, Limits, ReadError, accept_loop, stopping};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::rustls::ServerConfig as TlsConfig;

pub use session::{Config, Next, Session};

/// A POP3 listener's settings.
pub struct ServerConfig {
    /// What sessions share.
    pub session: Arc<Config>,
    /// TLS settings, for implicit TLS and STLS.
    pub tls: Option<Arc<TlsConfig>>,
    /// Connections at once, in total.
    pub max_connections: usize,
    /// Connections at once from one IP address.
    pub max_per_ip: usize,
    /// How long a connection may stay silent before it is closed.
    pub timeout: Duration,
}

impl ServerConfig {
    /// Defaults: RFC 1939's autologout timer of at least 10 minutes.
    pub fn new(session: Arc<Config>, tls: Option<Arc<TlsConfig>>) -> ServerConfig {
        ServerConfig {
            session,
            tls,
            max_connections: 5_000,
            max_per_ip: 100,
            timeout: Duration::from_secs(10 * 60),
        }
    }
}

/// What a connection over the caps is told before it is closed.
const BUSY: &[u8] = b"-ERR [SYS/TEMP] too many connections; try again later\r\n";

/// Serves POP3 on `listener` until `stopped` turns true. With
/// `implicit_tls` every connection starts with a TLS handshake (port 995).
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
    let tls = match (implicit_tls, &config.tls) {
        (false, _) => None,
        (true, Some(tls)) => Some(tls),
        (true, None) => return,
    };
    let Some(mut conn) = Conn::accepted(stream, tls, config.timeout).await else {
        return;
    };
    let mut session = Session::new(
        router,
        Arc::clone(&config.session),
        Some(peer.ip()),
        implicit_tls,
    );
    let mut out = Vec::new();
    session.greeting(&mut out);
    if !conn.send(&mut out).await {
        return;
    }
    tracing::debug!(%peer, "pop3 connection");
    run(&mut conn, &mut session, &config, &mut stopped, &mut out).await;
    let _ = conn.send(&mut out).await;
    let _ = conn.io.shutdown().await;
    // Whatever ended the connection, only QUIT deletes anything.
    session.close().await;
}

async fn run(
    conn: &mut Conn,
    session: &mut Session,
    config: &ServerConfig,
    stopped: &mut watch::Receiver<bool>,
    out: &mut Vec<u8>,
) {
    loop {
        // Pipelined commands (RFC 2449) are answered together: the
        // answers go out when no whole command waits.
        if !conn.buf.contains(&b'\n') && !conn.send(out).await {
            return;
        }
        let line = tokio::select! {
            r = tokio::time::timeout(config.timeout, conn.line(session::MAX_LINE)) => r,
            _ = stopping(stopped) => {
                out.extend_from_slice(b"-ERR [SYS/TEMP] server shutting down\r\n");
                return;
            }
        };
        let line = match line {
            Err(_) => {
                out.extend_from_slice(b"-ERR autologout: idle for too long\r\n");
                return;
            }
            Ok(Err(ReadError::TooLong)) => {
                out.extend_from_slice(b"-ERR line too long\r\n");
                return;
            }
            Ok(Err(_)) => return,
            Ok(Ok(l)) => l,
        };
        match session.command(&line, out).await {
            Next::Continue => {}
            Next::Close => return,
            Next::StartTls => {
                if !conn.send(out).await {
                    return;
                }
                let Some(tls) = &config.tls else { return };
                if !conn.start_tls(tls, config.timeout).await {
                    return;
                }
                session.tls_started();
            }
            Next::SaslContinue => {
                if !conn.send(out).await {
                    return;
                }
                let line = match tokio::time::timeout(config.timeout, conn.line(session::MAX_LINE))
                    .await
                {
                    Ok(Ok(l)) => l,
                    _ => return,
                };
                session.auth_continue(&line, out).await;
            }
        }
    }
}
