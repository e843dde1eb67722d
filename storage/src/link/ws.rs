//! The link over WebSocket: the primary's listener and the secondaries'
//! client. One binary WebSocket message carries one [`Frame`].
//!
//! The client never retries a request on its own: when the link drops, every
//! request in flight fails at once with [`ClientError::LinkDown`] (its
//! outcome is unknown; writes carry idempotency keys so the caller may retry
//! safely), new requests fail fast until the link is back, and a background
//! task reconnects with jittered exponential backoff.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, oneshot, watch};
use tokio_rustls::rustls;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use zeroize::Zeroizing;

use super::wire::{self, Out};
use super::{
    Event, Frame, Hello, Limits, LinkError, Op, Reply, Request, Response, Side, dispatch_async,
    frame_kind, hello, verify,
};
use crate::primary::Primary;

/// How long a peer has to complete the handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What both ends of a link need to know.
#[derive(Clone)]
pub struct LinkConfig {
    /// The cluster secret every node shares.
    pub secret: Arc<Zeroizing<Vec<u8>>>,
    /// This node's name, for the peer's logs.
    pub node: String,
    /// Frame size limits.
    pub limits: Limits,
    /// The primary's TLS settings: with them the listener speaks `wss://`
    /// only.
    pub accept_tls: Option<Arc<rustls::ServerConfig>>,
    /// The secondary's TLS settings (trusted roots), needed for `wss://`.
    pub connect_tls: Option<Arc<rustls::ClientConfig>>,
}

impl LinkConfig {
    /// A plain configuration: default limits, no TLS.
    pub fn new(secret: Arc<Zeroizing<Vec<u8>>>, node: impl Into<String>) -> LinkConfig {
        LinkConfig {
            secret,
            node: node.into(),
            limits: Limits::default(),
            accept_tls: None,
            connect_tls: None,
        }
    }
}

impl std::fmt::Debug for LinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkConfig")
            .field("node", &self.node)
            .field("accept_tls", &self.accept_tls.is_some())
            .field("connect_tls", &self.connect_tls.is_some())
            .finish_non_exhaustive()
    }
}

fn ws_config(limits: Limits) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(limits.max_frame))
        .max_frame_size(Some(limits.max_frame))
}

/// A handshake frame as one message.
fn binary(frame: &Frame) -> Message {
    match wire::messages(wire::whole(frame)).next() {
        Some(m) => m,
        None => Message::Binary(Bytes::new()),
    }
}

/// The first frame of a connection (a handshake), if it is one whole frame.
fn first_frame(message: &[u8], limits: Limits) -> Option<Frame> {
    wire::Assembler::default()
        .push(message, limits)
        .ok()
        .flatten()
}

fn close(reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::Policy,
        reason: reason.chars().take(100).collect::<String>().into(),
    }))
}

/// The sending half of a connection, shared by every task that answers or
/// asks on it. Whoever holds the lock sends one whole frame (all its body's
/// pieces) before letting go, so frames never interleave; sending in the
/// caller's own task spares a hop through a writer task.
#[derive(Clone)]
struct Sender {
    sink: Arc<tokio::sync::Mutex<BoxSink>>,
}

type BoxSink = std::pin::Pin<
    Box<dyn futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Send>,
>;

impl Sender {
    fn new<S>(sink: S) -> Sender
    where
        S: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error>
            + Send
            + 'static,
    {
        Sender {
            sink: Arc::new(tokio::sync::Mutex::new(Box::pin(sink))),
        }
    }

    /// Sends a frame (or a close); fails when the peer is gone.
    async fn send(&self, out: Out) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        let mut sink = self.sink.lock().await;
        for m in wire::messages(out) {
            sink.send(m).await?;
        }
        Ok(())
    }
}

/// Accepts secondaries until `shutdown` turns true; each connection is
/// served until it closes, breaks a rule, or shutdown. With
/// [`LinkConfig::accept_tls`] every connection must begin with a TLS
/// handshake.
pub async fn serve(
    listener: TcpListener,
    primary: Arc<Primary>,
    config: LinkConfig,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut stop = shutdown.clone();
    let tls = config
        .accept_tls
        .clone()
        .map(tokio_rustls::TlsAcceptor::from);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    // Out of descriptors and the like: wait, keep serving.
                    Err(e) => {
                        tracing::warn!(error = %e, "link accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let primary = Arc::clone(&primary);
                let config = config.clone();
                let shutdown = shutdown.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let ended = match tls {
                        Some(acceptor) => {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(s)) => connection(s, primary, config, shutdown).await,
                                Ok(Err(e)) => Err(ConnectionEnd::Protocol(format!("TLS: {e}"))),
                                Err(_) => Err(ConnectionEnd::Protocol("TLS handshake timed out".into())),
                            }
                        }
                        None => connection(stream, primary, config, shutdown).await,
                    };
                    // A failed connection is that peer's problem; the
                    // listener goes on.
                    match ended {
                        Ok(node) => tracing::info!(%peer, node, "secondary disconnected"),
                        Err(e) => tracing::warn!(%peer, error = %e, "secondary link ended"),
                    }
                });
            }
            _ = stop.changed() => return Ok(()),
        }
    }
}

/// Why a connection ended early (for logs).
#[derive(Debug, thiserror::Error)]
pub enum ConnectionEnd {
    /// WebSocket or TCP failure.
    #[error("websocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    /// The peer broke the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
}

/// Serves one secondary; returns its node name when it ends cleanly.
async fn connection<S>(
    stream: S,
    primary: Arc<Primary>,
    config: LinkConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<String, ConnectionEnd>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut ws =
        tokio_tungstenite::accept_async_with_config(stream, Some(ws_config(config.limits))).await?;
    let first = tokio::time::timeout(HANDSHAKE_TIMEOUT, ws.next()).await;
    let hello_frame = match first {
        Ok(Some(Ok(Message::Binary(b)))) => first_frame(&b, config.limits),
        _ => None,
    };
    let Some(Frame::Hello(h)) = hello_frame else {
        let _ = ws.send(close("expected a Hello frame")).await;
        return Err(ConnectionEnd::Protocol("no Hello".into()));
    };
    if let Err(why) = verify(&config.secret, Side::Secondary, &h, &[0; 32]) {
        let _ = ws.send(binary(&Frame::Refused(why.clone()))).await;
        let _ = ws.send(close(&why)).await;
        return Err(ConnectionEnd::Protocol(why));
    }
    let welcome = hello(&config.secret, Side::Primary, &config.node, &h.nonce);
    ws.send(binary(&Frame::Welcome(welcome))).await?;
    tracing::info!(node = h.node, "secondary connected");

    let (sink, mut source) = ws.split();
    let out_tx = Sender::new(sink);
    // Change events go to every secondary; each filters what it serves.
    let mut events = primary.events();
    let event_out = out_tx.clone();
    let forwarder = tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(changed) => {
                    let frame = wire::whole(&Frame::Event(Event::Changed(changed)));
                    if event_out.send(frame).await.is_err() {
                        return;
                    }
                }
                // A slow link missed some events; later ones still say
                // where each mailbox is now.
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    let mut assembler = wire::Assembler::default();
    let result = loop {
        let next = tokio::select! {
            m = source.next() => m,
            _ = shutdown.changed() => {
                let _ = out_tx.send(Out::Raw(close("primary shutting down"))).await;
                break Ok(h.node.clone());
            }
        };
        match next {
            Some(Ok(Message::Binary(bytes))) => match assembler.push(&bytes, config.limits) {
                Ok(None) => {}
                Ok(Some(Frame::Request(Request { id, op }))) => {
                    drop(bytes);
                    let primary = Arc::clone(&primary);
                    let out = out_tx.clone();
                    // Each request answers on its own, so a slow one (a
                    // password check, a large write) never delays the others.
                    tokio::spawn(async move {
                        let result = dispatch_async(&primary, op).await;
                        let _ = out
                            .send(wire::outgoing(Frame::Response(Response { id, result })))
                            .await;
                    });
                }
                Ok(Some(other)) => {
                    let why = format!("expected a request, got {}", frame_kind(&other));
                    let _ = out_tx.send(Out::Raw(close(&why))).await;
                    break Err(ConnectionEnd::Protocol(why));
                }
                Err(e) => {
                    let _ = out_tx.send(Out::Raw(close(&e.to_string()))).await;
                    break Err(ConnectionEnd::Protocol(e.to_string()));
                }
            },
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(_))) | None => break Ok(h.node.clone()),
            Some(Ok(_)) => {
                let _ = out_tx
                    .send(Out::Raw(close("text frames are not part of the link")))
                    .await;
                break Err(ConnectionEnd::Protocol("text frame".into()));
            }
            Some(Err(e)) => break Err(e.into()),
        }
    };
    forwarder.abort();
    drop(out_tx);
    result
}

/// Why a request through the link failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The link is down (or went down with the request in flight: its
    /// outcome is unknown).
    #[error("link to the primary is down: {0}")]
    LinkDown(String),
    /// The primary refused this node (wrong secret, other version).
    #[error("the primary refused this node: {0}")]
    Refused(String),
    /// The primary carried out the request and it failed.
    #[error(transparent)]
    Remote(#[from] LinkError),
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Reply, LinkError>>>>>;

struct Live {
    out: Sender,
    pending: Pending,
}

struct Shared {
    url: String,
    config: LinkConfig,
    live: Mutex<Option<Live>>,
    next_id: AtomicU64,
    connected: watch::Sender<bool>,
    events: broadcast::Sender<Event>,
}

impl Shared {
    fn new(url: &str, config: LinkConfig) -> Arc<Shared> {
        Arc::new(Shared {
            url: url.to_string(),
            config,
            live: Mutex::new(None),
            next_id: AtomicU64::new(1),
            connected: watch::channel(false).0,
            events: broadcast::channel(1024).0,
        })
    }
}

/// A secondary's connection to one primary, reconnecting by itself.
#[derive(Clone)]
pub struct LinkClient {
    shared: Arc<Shared>,
}

impl LinkClient {
    /// Connects and completes the handshake; from then on the link is kept
    /// up in the background. A refused handshake is final.
    pub async fn connect(url: &str, config: LinkConfig) -> Result<LinkClient, ClientError> {
        let shared = Shared::new(url, config);
        let ended = establish(&shared).await?;
        tokio::spawn(supervise(Arc::downgrade(&shared), ended));
        Ok(LinkClient { shared })
    }

    /// A client whose first connection is made in the background: requests
    /// fail with [`ClientError::LinkDown`] until it is up. For a secondary
    /// that starts before its primary.
    pub fn connect_later(url: &str, config: LinkConfig) -> LinkClient {
        let shared = Shared::new(url, config);
        // An already-ended "connection" sends the supervisor straight to
        // reconnecting.
        let (_, ended) = oneshot::channel();
        tokio::spawn(supervise(Arc::downgrade(&shared), ended));
        LinkClient { shared }
    }

    /// Sends one request and waits for its response.
    pub async fn request(&self, op: Op) -> Result<Reply, ClientError> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let out = {
            let live = lock(&self.shared.live);
            let Some(live) = live.as_ref() else {
                return Err(ClientError::LinkDown("not connected".into()));
            };
            lock(&live.pending).insert(id, tx);
            live.out.clone()
        };
        if out
            .send(wire::outgoing(Frame::Request(Request { id, op })))
            .await
            .is_err()
        {
            return Err(ClientError::LinkDown("connection closed".into()));
        }
        match rx.await {
            Ok(result) => result.map_err(ClientError::Remote),
            Err(_) => Err(ClientError::LinkDown(
                "connection lost with the request in flight".into(),
            )),
        }
    }

    /// Whether the link is up now.
    pub fn is_connected(&self) -> bool {
        *self.shared.connected.borrow()
    }

    /// Waits until the link is up (`true`) or down (`false`), or the
    /// timeout passes; returns whether that state was reached.
    pub async fn wait_for(&self, up: bool, timeout: Duration) -> bool {
        let mut rx = self.shared.connected.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|now| *now == up))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Change events pushed by the primary.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.shared.events.subscribe()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Connects (over TLS for `wss://`), shakes hands, starts the reader and
/// writer; returns a receiver that fires when this connection ends.
async fn establish(shared: &Arc<Shared>) -> Result<oneshot::Receiver<()>, ClientError> {
    let down = |e: &dyn std::fmt::Display| ClientError::LinkDown(e.to_string());
    let request = shared
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| ClientError::Refused(format!("bad primary URL: {e}")))?;
    let uri = request.uri().clone();
    let secure = match uri.scheme_str() {
        Some("wss") => true,
        Some("ws") => false,
        _ => {
            return Err(ClientError::Refused(
                "the primary URL must be ws:// or wss://".into(),
            ));
        }
    };
    let host = uri
        .host()
        .ok_or_else(|| ClientError::Refused("the primary URL has no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| down(&e))?;
    let _ = tcp.set_nodelay(true);
    if !secure && !tcp.peer_addr().is_ok_and(|a| a.ip().is_loopback()) {
        return Err(ClientError::Refused(
            "plain ws:// is only allowed on loopback; use wss://".into(),
        ));
    }
    let ws_config = Some(ws_config(shared.config.limits));
    if secure {
        let Some(tls) = shared.config.connect_tls.clone() else {
            return Err(ClientError::Refused(
                "wss:// needs TLS settings (trusted roots) on this node".into(),
            ));
        };
        let name = rustls::pki_types::ServerName::try_from(host)
            .map_err(|e| ClientError::Refused(format!("bad primary host name: {e}")))?;
        let stream = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            tokio_rustls::TlsConnector::from(tls).connect(name, tcp),
        )
        .await
        .map_err(|_| ClientError::LinkDown("TLS handshake timed out".into()))?
        .map_err(|e| ClientError::LinkDown(format!("TLS: {e}")))?;
        let (ws, _) = tokio_tungstenite::client_async_with_config(request, stream, ws_config)
            .await
            .map_err(|e| down(&e))?;
        start(shared, ws).await
    } else {
        let (ws, _) = tokio_tungstenite::client_async_with_config(request, tcp, ws_config)
            .await
            .map_err(|e| down(&e))?;
        start(shared, ws).await
    }
}

/// The handshake and the reader and writer tasks, over any stream.
async fn start<S>(
    shared: &Arc<Shared>,
    mut ws: WebSocketStream<S>,
) -> Result<oneshot::Receiver<()>, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = shared.config.limits;
    let mine = hello(
        &shared.config.secret,
        Side::Secondary,
        &shared.config.node,
        &[0; 32],
    );
    ws.send(binary(&Frame::Hello(mine.clone())))
        .await
        .map_err(|e| ClientError::LinkDown(e.to_string()))?;
    let answer = tokio::time::timeout(HANDSHAKE_TIMEOUT, ws.next())
        .await
        .map_err(|_| ClientError::LinkDown("handshake timed out".into()))?;
    match answer {
        Some(Ok(Message::Binary(b))) => match first_frame(&b, limits) {
            Some(Frame::Welcome(w)) => check_welcome(&shared.config, &w, &mine)?,
            Some(Frame::Refused(why)) => return Err(ClientError::Refused(why)),
            _ => return Err(ClientError::Refused("unexpected handshake answer".into())),
        },
        other => {
            return Err(ClientError::LinkDown(format!(
                "handshake failed: {}",
                match other {
                    Some(Err(e)) => e.to_string(),
                    _ => "connection closed".into(),
                }
            )));
        }
    }
    let (sink, mut source) = ws.split();
    let out_tx = Sender::new(sink);
    let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
    let (ended_tx, ended_rx) = oneshot::channel();
    let reader_pending = Arc::clone(&pending);
    let events = shared.events.clone();
    let weak = Arc::downgrade(shared);
    tokio::spawn(async move {
        let mut assembler = wire::Assembler::default();
        while let Some(Ok(m)) = source.next().await {
            let Message::Binary(b) = m else {
                if matches!(m, Message::Close(_)) {
                    break;
                }
                continue;
            };
            match assembler.push(&b, limits) {
                Ok(None) => {}
                Ok(Some(Frame::Response(Response { id, result }))) => {
                    if let Some(tx) = lock(&reader_pending).remove(&id) {
                        let _ = tx.send(result);
                    }
                }
                Ok(Some(Frame::Event(e))) => {
                    let _ = events.send(e);
                }
                Ok(Some(_)) | Err(_) => break,
            }
        }
        // Down: forget the connection, fail everything in flight.
        if let Some(shared) = weak.upgrade() {
            *lock(&shared.live) = None;
            shared.connected.send_replace(false);
        }
        lock(&reader_pending).clear();
        let _ = ended_tx.send(());
    });
    *lock(&shared.live) = Some(Live {
        out: out_tx,
        pending,
    });
    shared.connected.send_replace(true);
    Ok(ended_rx)
}

fn check_welcome(config: &LinkConfig, w: &Hello, mine: &Hello) -> Result<(), ClientError> {
    verify(&config.secret, Side::Primary, w, &mine.nonce).map_err(ClientError::Refused)
}

/// Keeps the link up: after a connection ends, reconnects with jittered
/// exponential backoff (100 ms doubling to 10 s), until the client is dropped.
async fn supervise(shared: std::sync::Weak<Shared>, mut ended: oneshot::Receiver<()>) {
    loop {
        let _ = (&mut ended).await;
        let mut delay = Duration::from_millis(100);
        loop {
            let jitter: [u8; 2] = crate::keys::random_bytes();
            let wait = delay.mul_f64(0.5 + f64::from(u16::from_le_bytes(jitter)) / 65535.0);
            tokio::time::sleep(wait).await;
            let Some(s) = shared.upgrade() else { return };
            match establish(&s).await {
                Ok(e) => {
                    tracing::info!(url = s.url, "link to the primary is up");
                    ended = e;
                    break;
                }
                // A refusal will not change by retrying soon; keep trying
                // slowly, in case the operator fixes the secret.
                Err(ClientError::Refused(_)) => delay = Duration::from_secs(10),
                Err(_) => delay = (delay * 2).min(Duration::from_secs(10)),
            }
        }
    }
}
