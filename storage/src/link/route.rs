//! What a secondary holds: a [`Link`] to each primary (in the same process,
//! or over WebSocket) and a [`Router`] that sends each alias's requests to
//! the primary that owns it, merges their change events, and keeps the
//! counts `/metrics` shows.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::broadcast;

use super::ws::{ClientError, LinkClient};
use super::{ErrorCode, Event, LinkError, Op, Reply, dispatch_async};
use crate::primary::Primary;
use crate::types::AliasAddress;

/// One way to a primary.
#[derive(Clone)]
pub enum Link {
    /// The primary runs in this process (`cofre serve`): the same types,
    /// no socket hop.
    Local(Arc<Primary>),
    /// The primary is another process, over WebSocket.
    Remote(LinkClient),
}

impl Link {
    /// Sends one request and waits for its answer.
    pub async fn request(&self, op: Op) -> Result<Reply, ClientError> {
        match self {
            Link::Local(primary) => dispatch_async(primary, op)
                .await
                .map_err(ClientError::Remote),
            Link::Remote(client) => client.request(op).await,
        }
    }

    /// Whether requests can be sent now.
    pub fn is_connected(&self) -> bool {
        match self {
            Link::Local(_) => true,
            Link::Remote(client) => client.is_connected(),
        }
    }

    /// Forwards this link's change events into `out` until either side ends.
    fn forward_events(&self, out: broadcast::Sender<Event>) {
        match self {
            Link::Local(primary) => forward(primary.events(), out, Event::Changed),
            Link::Remote(client) => forward(client.events(), out, |e| e),
        }
    }
}

/// Copies a broadcast into another, mapping each item; a lagging receiver
/// skips what it missed (later events still say where each mailbox is).
fn forward<T: Clone + Send + 'static>(
    mut rx: broadcast::Receiver<T>,
    out: broadcast::Sender<Event>,
    map: fn(T) -> Event,
) {
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(item) => {
                    let _ = out.send(map(item));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

/// Latency buckets of [`OpStats`], in microseconds (upper bounds).
pub const LATENCY_BUCKETS_US: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

/// Counts for one operation kind, as this secondary saw them.
#[derive(Default)]
pub struct OpStats {
    /// Requests answered (successfully or not).
    pub count: AtomicU64,
    /// Requests that failed (any error).
    pub errors: AtomicU64,
    /// Sum of latencies, µs.
    pub total_us: AtomicU64,
    /// Requests at or under each of [`LATENCY_BUCKETS_US`] (not cumulative).
    pub buckets: [AtomicU64; LATENCY_BUCKETS_US.len()],
}

/// Primaries, each with its link, and the aliases known to live on each.
pub struct Router {
    links: Vec<(String, Link)>,
    owners: Mutex<HashMap<AliasAddress, usize>>,
    events: broadcast::Sender<Event>,
    stats: Mutex<HashMap<&'static str, Arc<OpStats>>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field(
                "primaries",
                &self.links.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Router {
    /// A router over named links (at least one). Must be called inside a
    /// tokio runtime: it starts the tasks that merge change events.
    pub fn new(links: Vec<(String, Link)>) -> Arc<Router> {
        let (events, _) = broadcast::channel(4096);
        for (_, link) in &links {
            link.forward_events(events.clone());
        }
        Arc::new(Router {
            links,
            owners: Mutex::new(HashMap::new()),
            events,
            stats: Mutex::new(HashMap::new()),
        })
    }

    /// The primaries by name, with their links.
    pub fn links(&self) -> &[(String, Link)] {
        &self.links
    }

    /// Whether every primary is reachable now.
    pub fn all_connected(&self) -> bool {
        self.links.iter().all(|(_, l)| l.is_connected())
    }

    /// Change events from every primary.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Per-operation counts so far, by operation name.
    pub fn stats(&self) -> Vec<(&'static str, Arc<OpStats>)> {
        let mut all: Vec<_> = lock(&self.stats)
            .iter()
            .map(|(k, v)| (*k, Arc::clone(v)))
            .collect();
        all.sort_by_key(|(k, _)| *k);
        all
    }

    /// Sends a request that concerns no existing alias (a new alias, the
    /// domains) to the first primary, the default home of new aliases.
    pub async fn request_default(&self, op: Op) -> Result<Reply, ClientError> {
        let name = op.name();
        let started = Instant::now();
        let result = match self.links.first() {
            Some((_, link)) => link.request(op).await,
            None => Err(ClientError::LinkDown("no primary configured".into())),
        };
        self.record(name, started, result.is_ok());
        result
    }

    /// Sends a request about `address` to the primary that owns it.
    pub async fn request(&self, address: &AliasAddress, op: Op) -> Result<Reply, ClientError> {
        let name = op.name();
        let started = Instant::now();
        let result = match self.owner(address).await {
            Ok(i) => {
                let r = self.links[i].1.request(op).await;
                if matches!(&r, Err(ClientError::Remote(e)) if e.code == ErrorCode::NotFound) {
                    // The alias may have moved; ask again next time.
                    lock(&self.owners).remove(address);
                }
                r
            }
            Err(e) => Err(e),
        };
        self.record(name, started, result.is_ok());
        result
    }

    fn record(&self, name: &'static str, started: Instant, ok: bool) {
        let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let stats = Arc::clone(lock(&self.stats).entry(name).or_default());
        stats.count.fetch_add(1, Ordering::Relaxed);
        if !ok {
            stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        stats.total_us.fetch_add(us, Ordering::Relaxed);
        if let Some(i) = LATENCY_BUCKETS_US.iter().position(|b| us <= *b) {
            stats.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Which link owns an alias: the only one, or the one whose directory
    /// holds it (asked of every primary at once, then remembered).
    async fn owner(&self, address: &AliasAddress) -> Result<usize, ClientError> {
        if self.links.len() == 1 {
            return Ok(0);
        }
        if let Some(i) = lock(&self.owners).get(address) {
            return Ok(*i);
        }
        let asks = self.links.iter().map(|(_, link)| {
            link.request(Op::Locate {
                address: address.clone(),
            })
        });
        let answers = futures_util::future::join_all(asks).await;
        let mut down = None;
        for (i, answer) in answers.into_iter().enumerate() {
            match answer {
                Ok(Reply::Holds(true)) => {
                    lock(&self.owners).insert(address.clone(), i);
                    return Ok(i);
                }
                Ok(_) => {}
                Err(e) => down = Some(e),
            }
        }
        // Nobody holds it; if a primary did not answer, it may be the owner.
        Err(down.unwrap_or_else(|| {
            ClientError::Remote(LinkError {
                code: ErrorCode::NotFound,
                message: format!("no such alias: {address}"),
            })
        }))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
