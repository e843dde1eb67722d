//! The IMAP listener: sockets, TLS (implicit and STARTTLS), framing of
//! lines and literals, IDLE, limits and timeouts. Protocol decisions are
//! the [`Session`]'s; this module only moves bytes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cofre_storage::link::route::Router;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::rustls::ServerConfig as TlsConfig;

use cofre_storage::net::{Conn, Limits, ReadError, accept_loop, stopping};

use crate::parse::parse_command;
use crate::session::{Config, Next, Session};

/// A listener's settings.
pub struct ServerConfig {
    /// What sessions share.
    pub session: Arc<Config>,
    /// TLS settings, for implicit TLS and STARTTLS.
    pub tls: Option<Arc<TlsConfig>>,
    /// Connections at once, in total.
    pub max_connections: usize,
    /// Connections at once from one IP address.
    pub max_per_ip: usize,
    /// The longest command line (literals aside), in bytes.
    pub max_line: usize,
    /// The largest literal before login.
    pub max_preauth_literal: u64,
    /// Literals in one command.
    pub max_literals: usize,
    /// How long an unauthenticated connection may stay silent.
    pub preauth_timeout: Duration,
    /// How long an authenticated connection may stay silent (also in IDLE).
    pub idle_timeout: Duration,
}

impl ServerConfig {
    /// Defaults for a session configuration (RFC 9051's 30-minute
    /// autologout timer; 64 KiB lines; 1 minute to log in).
    pub fn new(session: Arc<Config>, tls: Option<Arc<TlsConfig>>) -> ServerConfig {
        ServerConfig {
            session,
            tls,
            max_connections: 20_000,
            max_per_ip: 200,
            max_line: 64 * 1024,
            max_preauth_literal: 8 * 1024,
            max_literals: 1000,
            preauth_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(31 * 60),
        }
    }
}

/// `{123}`, `{123+}`, `~{123}` at the end of a line: (size, synchronising).
fn literal_at_end(line: &[u8]) -> Option<(u64, bool)> {
    let rest = line.strip_suffix(b"}")?;
    let open = rest.iter().rposition(|&c| c == b'{')?;
    let inner = &rest[open + 1..];
    let (digits, sync) = match inner.last() {
        Some(b'+') | Some(b'-') => (&inner[..inner.len() - 1], false),
        _ => (inner, true),
    };
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some((std::str::from_utf8(digits).ok()?.parse().ok()?, sync))
}

fn tag_of(buf: &[u8]) -> String {
    let t: Vec<u8> = buf
        .iter()
        .take_while(|&&c| c > 0x20 && c < 0x7f && !b"(){%*\"\\+".contains(&c))
        .take(64)
        .copied()
        .collect();
    if t.is_empty() {
        "*".into()
    } else {
        String::from_utf8_lossy(&t).into_owned()
    }
}

/// What a connection over the caps is told before it is closed.
const BUSY: &[u8] = b"* BYE [UNAVAILABLE] too many connections; try again later\r\n";

/// Serves IMAP on `listener` until `stopped` turns true. With
/// `implicit_tls` every connection starts with a TLS handshake (port 993).
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
    let Some(mut conn) = Conn::accepted(stream, tls, config.preauth_timeout).await else {
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
    tracing::debug!(%peer, "imap connection");
    run(&mut conn, &mut session, &config, &mut stopped, &mut out).await;
    let _ = conn.send(&mut out).await;
    let _ = conn.io.shutdown().await;
    session.close().await;
}

/// A command that takes this long (answer sent included) is logged.
const SLOW_COMMAND: std::time::Duration = Duration::from_secs(2);

/// The command's name (and a UID command's second word) for the log:
/// never its arguments, which may hold a password.
fn command_name(bytes: &[u8]) -> String {
    let line = bytes
        .split(|&c| c == b'\r' || c == b'\n')
        .next()
        .unwrap_or(b"");
    let mut words = line.split(|&c| c == b' ').skip(1);
    let first = words.next().unwrap_or(b"");
    let mut name = String::from_utf8_lossy(first).to_ascii_uppercase();
    if name == "UID"
        && let Some(second) = words.next()
    {
        name.push(' ');
        name.push_str(&String::from_utf8_lossy(second).to_ascii_uppercase());
    }
    name.chars().take(32).collect()
}

/// Reads one whole command (line plus literals) into a buffer.
async fn read_command(
    conn: &mut Conn,
    session: &Session,
    config: &ServerConfig,
    out: &mut Vec<u8>,
) -> Result<Result<Vec<u8>, String>, ReadError> {
    let mut cmd = Vec::new();
    let mut literals = 0;
    let max_literal = if session.authenticated() {
        config.session.append_limit
    } else {
        config.max_preauth_literal
    };
    loop {
        let line = conn.line(config.max_line).await?;
        cmd.extend_from_slice(&line);
        let Some((n, sync)) = literal_at_end(&line) else {
            return Ok(Ok(cmd));
        };
        literals += 1;
        if n > max_literal || literals > config.max_literals {
            if sync {
                // Refuse before the client sends it.
                let text = if session.authenticated() {
                    "NO [TOOBIG] literal too large"
                } else {
                    "BAD literal too large before login"
                };
                return Ok(Err(format!("{} {text}", tag_of(&cmd))));
            }
            // A non-synchronising literal is already on its way.
            return Err(ReadError::TooLong);
        }
        if sync {
            out.extend_from_slice(b"+ go ahead\r\n");
            if !conn.send(out).await {
                return Err(ReadError::Io);
            }
        }
        cmd.extend_from_slice(b"\r\n");
        conn.exact(n as usize, &mut cmd).await?;
    }
}

async fn run(
    conn: &mut Conn,
    session: &mut Session,
    config: &ServerConfig,
    stopped: &mut watch::Receiver<bool>,
    out: &mut Vec<u8>,
) {
    loop {
        let timeout = if session.authenticated() {
            config.idle_timeout
        } else {
            config.preauth_timeout
        };
        let read = tokio::select! {
            r = tokio::time::timeout(timeout, read_command(conn, session, config, out)) => r,
            _ = stopping(stopped) => {
                out.extend_from_slice(b"* BYE [UNAVAILABLE] server shutting down\r\n");
                return;
            }
        };
        let bytes = match read {
            Err(_) => {
                out.extend_from_slice(b"* BYE autologout: idle for too long\r\n");
                return;
            }
            Ok(Err(ReadError::TooLong)) => {
                out.extend_from_slice(b"* BYE line or literal too long\r\n");
                return;
            }
            Ok(Err(_)) => return,
            Ok(Ok(Err(refusal))) => {
                out.extend_from_slice(format!("{refusal}\r\n").as_bytes());
                if !conn.send(out).await {
                    return;
                }
                continue;
            }
            Ok(Ok(Ok(b))) => b,
        };
        let cmd = match parse_command(&bytes) {
            Ok(c) => c,
            Err(e) => {
                session.parse_error(e.tag.as_deref(), &e.message, out);
                if !conn.send(out).await {
                    return;
                }
                continue;
            }
        };
        let started = std::time::Instant::now();
        let tag = cmd.tag.clone();
        let verb = command_name(&bytes);
        let next = session.command(cmd, out).await;
        let answered = out.len();
        if !conn.send(out).await {
            return;
        }
        let took = started.elapsed();
        if took >= SLOW_COMMAND {
            // Clients give up on a silent server after some 20 to 60 s.
            tracing::warn!(%tag, %verb, ms = took.as_millis() as u64, bytes = answered, "slow IMAP command");
        }
        match next {
            Next::Continue => {}
            Next::Close => return,
            Next::StartTls => {
                let Some(tls) = &config.tls else { return };
                if !conn.start_tls(tls, config.preauth_timeout).await {
                    return;
                }
                session.tls_started();
            }
            Next::SaslContinue(tag) => {
                let line =
                    match tokio::time::timeout(config.preauth_timeout, conn.line(config.max_line))
                        .await
                    {
                        Ok(Ok(l)) => l,
                        _ => return,
                    };
                session.authenticate_continue(&tag, &line, out).await;
                if !conn.send(out).await {
                    return;
                }
            }
            Next::Idle(tag) => {
                if !idle(conn, session, config, stopped, out, &tag).await {
                    return;
                }
            }
            Next::Compress => {
                // Bytes read past the command are already compressed.
                let pending = std::mem::take(&mut conn.buf);
                let io = std::mem::replace(&mut conn.io, Box::new(tokio::io::duplex(1).0));
                conn.io = Box::new(crate::compress::Deflate::new(io, pending));
            }
        }
    }
}

/// IDLE: news is pushed as it happens until the client says DONE.
async fn idle(
    conn: &mut Conn,
    session: &mut Session,
    config: &ServerConfig,
    stopped: &mut watch::Receiver<bool>,
    out: &mut Vec<u8>,
    tag: &str,
) -> bool {
    // What happened before IDLE began is news too.
    session.idle_news(out).await;
    if !conn.send(out).await {
        return false;
    }
    let deadline = tokio::time::Instant::now() + config.idle_timeout;
    loop {
        tokio::select! {
            line = conn.line(config.max_line) => {
                let Ok(line) = line else { return false };
                session.finish_idle(tag, &line, out).await;
                return conn.send(out).await;
            }
            _ = session.wait_for_news() => {
                session.idle_news(out).await;
                if !conn.send(out).await || session.closing() {
                    return false;
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                out.extend_from_slice(b"* BYE autologout: idle for too long\r\n");
                return false;
            }
            _ = stopping(stopped) => {
                out.extend_from_slice(b"* BYE [UNAVAILABLE] server shutting down\r\n");
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_markers() {
        assert_eq!(literal_at_end(b"a APPEND x {12}"), Some((12, true)));
        assert_eq!(literal_at_end(b"a APPEND x {12+}"), Some((12, false)));
        assert_eq!(literal_at_end(b"a APPEND x ~{3}"), Some((3, true)));
        assert_eq!(literal_at_end(b"a LOGIN {x}"), None);
        assert_eq!(literal_at_end(b"a NOOP"), None);
    }

    #[test]
    fn command_names_leave_arguments_out() {
        assert_eq!(command_name(b"a1 login ana secret"), "LOGIN");
        assert_eq!(command_name(b"a2 uid fetch 1:* (FLAGS)"), "UID FETCH");
        assert_eq!(command_name(b"a3 NOOP"), "NOOP");
        assert_eq!(command_name(b"a4"), "");
    }
}
