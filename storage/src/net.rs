//! Plumbing the protocol servers share: a buffered connection that reads
//! lines and exact byte counts (cancel-safe), connection caps in total and
//! per address, and the server's stop signal.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig as TlsConfig;

/// A byte stream a server speaks over (TCP, TLS, compressed).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connection: the stream and the bytes read but not yet used.
pub struct Conn {
    /// The stream (replaced by STARTTLS and COMPRESS).
    pub io: Box<dyn Io>,
    /// Bytes read and not yet used.
    pub buf: Vec<u8>,
}

/// Why a read ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// The peer closed the connection.
    Closed,
    /// A line longer than allowed.
    TooLong,
    /// The stream failed.
    Io,
}

impl Conn {
    /// A connection over a stream, with nothing read yet.
    pub fn new(io: Box<dyn Io>) -> Conn {
        Conn {
            io,
            buf: Vec::new(),
        }
    }

    /// An accepted TCP connection: plain, or TLS from the first byte
    /// (implicit TLS) when `tls` is given, the handshake bounded by
    /// `timeout`. `None` when the handshake fails or times out.
    pub async fn accepted(
        stream: TcpStream,
        tls: Option<&Arc<TlsConfig>>,
        timeout: Duration,
    ) -> Option<Conn> {
        let _ = stream.set_nodelay(true);
        let io: Box<dyn Io> = match tls {
            None => Box::new(stream),
            Some(tls) => {
                let accept = TlsAcceptor::from(Arc::clone(tls)).accept(stream);
                Box::new(tokio::time::timeout(timeout, accept).await.ok()?.ok()?)
            }
        };
        Some(Conn::new(io))
    }

    /// STARTTLS: the rest of the connection over TLS. Anything the client
    /// pipelined after the command came in the clear and is dropped, never
    /// executed (RFC 3207 §4.2, RFC 9051 §6.2.1). False when the
    /// handshake fails or times out.
    pub async fn start_tls(&mut self, tls: &Arc<TlsConfig>, timeout: Duration) -> bool {
        self.buf.clear();
        let plain = std::mem::replace(&mut self.io, Box::new(tokio::io::duplex(1).0));
        let accept = TlsAcceptor::from(Arc::clone(tls)).accept(plain);
        match tokio::time::timeout(timeout, accept).await {
            Ok(Ok(s)) => {
                self.io = Box::new(s);
                true
            }
            _ => false,
        }
    }

    /// One line without its CRLF (or bare LF). Cancel-safe: bytes read
    /// stay in `buf`.
    pub async fn line(&mut self, max: usize) -> Result<Vec<u8>, ReadError> {
        let mut line = self.raw_line(max).await?;
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Ok(line)
    }

    /// One line with its line ending, byte for byte (message data).
    /// Cancel-safe like [`line`](Self::line).
    pub async fn raw_line(&mut self, max: usize) -> Result<Vec<u8>, ReadError> {
        let mut scanned = 0;
        loop {
            if let Some(p) = self.buf[scanned..].iter().position(|&c| c == b'\n') {
                let end = scanned + p;
                if end > max {
                    return Err(ReadError::TooLong);
                }
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                if self.buf.is_empty() && self.buf.capacity() > 64 * 1024 {
                    self.buf = Vec::new();
                }
                return Ok(line);
            }
            scanned = self.buf.len();
            if self.buf.len() > max {
                return Err(ReadError::TooLong);
            }
            // Read straight into the buffer: an idle connection holds no
            // scratch space while it waits.
            self.buf.reserve(4096);
            match self.io.read_buf(&mut self.buf).await {
                Ok(0) => return Err(ReadError::Closed),
                Ok(_) => {}
                Err(_) => return Err(ReadError::Io),
            }
        }
    }

    /// Exactly `n` bytes.
    pub async fn exact(&mut self, n: usize, into: &mut Vec<u8>) -> Result<(), ReadError> {
        let have = self.buf.len().min(n);
        into.extend(self.buf.drain(..have));
        let mut left = n - have;
        let mut chunk = vec![0u8; 64 * 1024];
        while left > 0 {
            let want = left.min(chunk.len());
            match self.io.read(&mut chunk[..want]).await {
                Ok(0) => return Err(ReadError::Closed),
                Ok(k) => {
                    into.extend_from_slice(&chunk[..k]);
                    left -= k;
                }
                Err(_) => return Err(ReadError::Io),
            }
        }
        Ok(())
    }

    /// Writes and flushes `out`, then empties it; false if the peer is gone.
    pub async fn send(&mut self, out: &mut Vec<u8>) -> bool {
        if out.is_empty() {
            return true;
        }
        let ok = self.io.write_all(out).await.is_ok() && self.io.flush().await.is_ok();
        out.clear();
        ok
    }
}

/// Counts connections in total and per IP; a slot frees itself on drop.
#[derive(Default)]
pub struct Caps {
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// A connection's place under the caps; freed when dropped.
pub struct Slot {
    caps: Arc<Caps>,
    ip: IpAddr,
}

impl Caps {
    /// A slot for a connection from `ip`, if under both caps.
    pub fn take(self: &Arc<Self>, ip: IpAddr, total: usize, per_ip: usize) -> Option<Slot> {
        let mut map = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if self.total.load(Ordering::Relaxed) >= total {
            return None;
        }
        let n = map.entry(ip).or_insert(0);
        if *n >= per_ip {
            return None;
        }
        *n += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Some(Slot {
            caps: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.caps.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
        self.caps.total.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Resolves once the server is stopping.
pub async fn stopping(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Connection limits of a listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections at once, in total.
    pub total: usize,
    /// Connections at once from one IP address.
    pub per_ip: usize,
}

/// Accepts connections on `listener` until `stopped` turns true, each in
/// its own task under the caps (over them, `busy` is written and the
/// connection closed); then waits for the connections, which see
/// `stopped` too.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    limits: Limits,
    busy: &'static [u8],
    mut stopped: watch::Receiver<bool>,
    handle: F,
) -> std::io::Result<()>
where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let caps = Arc::new(Caps::default());
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors, usually: wait, then go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopping(&mut stopped) => break,
        };
        while tasks.try_join_next().is_some() {}
        match caps.take(peer.ip(), limits.total, limits.per_ip) {
            None => {
                tasks.spawn(async move {
                    let mut s = stream;
                    let _ = s.write_all(busy).await;
                });
            }
            Some(slot) => {
                let work = handle(stream, peer);
                tasks.spawn(async move {
                    let _slot = slot;
                    work.await;
                });
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}
