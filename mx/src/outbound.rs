//! Outbound delivery: the queue of mail for other servers and the worker
//! that delivers it — static routes or MX lookup, opportunistic TLS,
//! concurrency per destination, retries with backoff for days, and a
//! delivery status notification (RFC 3464) to the sender for what failed
//! for good.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cofre_storage::AliasAddress;
use cofre_storage::link::route::Router;
use cofre_storage::link::{Op, Reply};
use cofre_storage::outbound::{DkimKey, Outbound, OutboundItem};
use cofre_storage::webhook::{
    DeliveryStatus, DuePost, WebhookAttempt, WebhookDelivery, WebhookTarget,
};
use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::RData;
use tokio::sync::{Notify, watch};
use tokio_rustls::rustls::ClientConfig;

use crate::client::{self, Attempt, Outcome};

/// How the outbound side behaves.
#[derive(Debug, Clone)]
pub struct OutboundConfig {
    /// Our name in EHLO and in bounces.
    pub hostname: String,
    /// Static routes, `domain → host:port`, tried before MX lookup; the
    /// domain `*` routes everything else (a smarthost).
    pub routes: Vec<(String, String)>,
    /// Deliveries at once to one domain.
    pub per_destination: usize,
    /// Deliveries at once in all.
    pub concurrency: usize,
    /// How long a message is retried before it is bounced.
    pub give_up_after: Duration,
    /// Time allowed for each step of a delivery.
    pub timeout: Duration,
    /// The first retry's delay (later ones grow from it).
    pub first_retry: Duration,
    /// The DNS server for MX lookups; `None`: the system's.
    pub nameserver: Option<std::net::SocketAddr>,
    /// The first webhook retry's delay (later ones grow from it).
    pub webhook_retry: Duration,
    /// How long a webhook post is retried before it is given up.
    pub webhook_give_up: Duration,
    /// Time allowed for one webhook POST.
    pub webhook_timeout: Duration,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            hostname: "localhost".into(),
            routes: Vec::new(),
            per_destination: 4,
            concurrency: 32,
            give_up_after: Duration::from_secs(5 * 24 * 3600),
            timeout: Duration::from_secs(120),
            first_retry: Duration::from_secs(60),
            nameserver: None,
            webhook_retry: Duration::from_secs(30),
            webhook_give_up: Duration::from_secs(24 * 3600),
            webhook_timeout: Duration::from_secs(10),
        }
    }
}

/// Items being delivered now, and how many per domain.
type InFlight = (HashSet<i64>, HashMap<String, usize>);

/// The outbound queue and its worker.
pub struct Sender {
    queue: Mutex<Outbound>,
    wake: Notify,
    config: OutboundConfig,
    router: Arc<Router>,
    tls: Arc<ClientConfig>,
    resolver: Option<TokioResolver>,
    webhook_wake: Notify,
    https: Arc<ClientConfig>,
}

fn now() -> i64 {
    cofre_storage::time::now()
}

fn lock(m: &Mutex<Outbound>) -> std::sync::MutexGuard<'_, Outbound> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The delay before attempt `n + 1` (1, 5, 15, 30 min, 1, 2, then every
/// 4 h, with the default first retry of a minute).
fn backoff(first: Duration, attempts: u32) -> Duration {
    const STEPS: [u32; 7] = [1, 5, 15, 30, 60, 120, 240];
    first * STEPS[(attempts as usize).min(STEPS.len() - 1)]
}

impl Sender {
    /// A sender over an open queue. MX lookup uses the system's resolver
    /// configuration; without one, only static routes work (and the
    /// failure to find one is logged once here).
    pub fn new(
        queue: Outbound,
        config: OutboundConfig,
        router: Arc<Router>,
    ) -> Result<Arc<Sender>, String> {
        let built = crate::dns::resolver_config(config.nameserver).and_then(|(c, o)| {
            TokioResolver::builder_with_config(c, Default::default())
                .with_options(o)
                .build()
                .map_err(|e| e.to_string())
        });
        let resolver = match built {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(error = %e, "no DNS resolver: outbound mail uses static routes only");
                None
            }
        };
        Ok(Arc::new(Sender {
            queue: Mutex::new(queue),
            wake: Notify::new(),
            config,
            router,
            tls: client::opportunistic_tls().map_err(|e| e.to_string())?,
            resolver,
            webhook_wake: Notify::new(),
            https: crate::webhook::verified_tls(),
        }))
    }

    /// Queues a message for recipients at other servers; durable when it
    /// returns.
    pub async fn enqueue(
        self: &Arc<Self>,
        from: &str,
        rcpts: &[String],
        raw: &[u8],
    ) -> Result<(), String> {
        let me = Arc::clone(self);
        let (from, rcpts, raw) = (from.to_string(), rcpts.to_vec(), raw.to_vec());
        tokio::task::spawn_blocking(move || lock(&me.queue).enqueue(&from, &rcpts, &raw, now()))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        self.wake.notify_one();
        Ok(())
    }

    /// Whether `alias` answers `sender` with its vacation reply now (at
    /// most once per [`crate::vacation::EVERY_SECS`]); a yes is recorded.
    pub fn vacation_due(&self, alias: &str, sender: &str) -> Result<bool, String> {
        lock(&self.queue)
            .vacation_due(alias, sender, now(), crate::vacation::EVERY_SECS)
            .map_err(|e| e.to_string())
    }

    /// The DKIM key of `domain`, if one was made (`cofre domain dkim`).
    pub fn dkim_key(&self, domain: &str) -> Result<Option<DkimKey>, String> {
        lock(&self.queue)
            .dkim_key(domain)
            .map_err(|e| e.to_string())
    }

    /// Stores a DKIM key (replacing its domain's key before).
    pub fn put_dkim_key(&self, key: &DkimKey) -> Result<(), String> {
        lock(&self.queue)
            .put_dkim_key(key)
            .map_err(|e| e.to_string())
    }

    /// What waits in the queue (for the admin view and tests).
    pub fn pending(&self) -> Result<Vec<OutboundItem>, String> {
        lock(&self.queue).all().map_err(|e| e.to_string())
    }

    /// Queues a webhook post; durable when it returns.
    pub async fn enqueue_webhook(
        self: &Arc<Self>,
        target: &WebhookTarget,
        alias: &str,
        event_id: &str,
        body: Vec<u8>,
    ) -> Result<(), String> {
        let me = Arc::clone(self);
        let (target, alias, event_id) = (target.clone(), alias.to_string(), event_id.to_string());
        tokio::task::spawn_blocking(move || {
            lock(&me.queue).enqueue_webhook(&target, &alias, &event_id, &body, now())
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        self.webhook_wake.notify_one();
        Ok(())
    }

    /// The latest webhook posts for `alias`, with their attempts.
    pub fn webhook_deliveries(&self, alias: &str) -> Result<Vec<WebhookDelivery>, String> {
        lock(&self.queue)
            .webhook_deliveries(alias, 100)
            .map_err(|e| e.to_string())
    }

    /// Posts due webhooks until `stopped`, 16 at a time.
    async fn run_webhooks(self: Arc<Self>, mut stopped: watch::Receiver<bool>) {
        let mut running = tokio::task::JoinSet::new();
        let in_flight: Arc<Mutex<HashSet<i64>>> = Arc::default();
        loop {
            let due = lock(&self.queue).due_webhooks(now(), 64);
            match due {
                Ok(due) => {
                    for post in due {
                        {
                            let mut f = in_flight.lock().unwrap_or_else(|p| p.into_inner());
                            if f.contains(&post.id) || f.len() >= 16 {
                                continue;
                            }
                            f.insert(post.id);
                        }
                        let me = Arc::clone(&self);
                        let flight = Arc::clone(&in_flight);
                        running.spawn(async move {
                            let id = post.id;
                            me.post_webhook(post).await;
                            flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                        });
                    }
                }
                Err(e) => tracing::error!(error = %e, "reading the webhook queue failed"),
            }
            let next = lock(&self.queue).next_webhook_due().ok().flatten();
            let wait = next
                .map(|t| Duration::from_millis(u64::try_from(t - now()).unwrap_or(0).max(1) * 1000))
                .unwrap_or(Duration::from_secs(60))
                .min(Duration::from_secs(60));
            tokio::select! {
                _ = self.webhook_wake.notified() => {}
                Some(_) = running.join_next() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = stopped.wait_for(|s| *s) => break,
            }
        }
        while running.join_next().await.is_some() {}
    }

    /// One attempt at one webhook post, recorded with its outcome.
    async fn post_webhook(self: &Arc<Self>, post: DuePost) {
        let at = now();
        let headers = [
            (
                "Cofre-Signature",
                crate::webhook::signature(&post.secret, at, &post.body),
            ),
            (
                "Cofre-Event",
                cofre_storage::webhook::EVENT_RECEIVED.to_string(),
            ),
            ("Cofre-Delivery", post.event_id.clone()),
        ];
        let (result, duration_ms) = crate::webhook::timed_post(
            &post.url,
            &headers,
            &post.body,
            &self.https,
            self.config.webhook_timeout,
        )
        .await;
        let (status, error) = match &result {
            Ok(code) => (Some(*code), None),
            Err(e) => (None, Some(e.clone())),
        };
        let attempt = WebhookAttempt {
            at,
            status,
            error,
            duration_ms,
        };
        let delivered = matches!(result, Ok(200..=299));
        let attempts = post.attempts + 1;
        let age = Duration::from_secs(u64::try_from(at - post.created_at).unwrap_or(0));
        let (next_at, state) = if delivered {
            (None, DeliveryStatus::Delivered)
        } else if age >= self.config.webhook_give_up {
            (None, DeliveryStatus::Failed)
        } else {
            let wait = crate::webhook::backoff(self.config.webhook_retry, attempts);
            (
                Some(at + i64::try_from(wait.as_secs().max(1)).unwrap_or(i64::MAX / 2)),
                DeliveryStatus::Pending,
            )
        };
        match state {
            DeliveryStatus::Delivered => tracing::info!(post = post.id, "webhook delivered"),
            DeliveryStatus::Failed => {
                tracing::warn!(post = post.id, ?result, "webhook given up")
            }
            DeliveryStatus::Pending => {
                tracing::info!(post = post.id, ?result, attempts, "webhook will be retried")
            }
        }
        let me = Arc::clone(self);
        let id = post.id;
        let recorded = tokio::task::spawn_blocking(move || {
            lock(&me.queue).record_webhook_attempt(id, &attempt, next_at, state)
        })
        .await;
        if !matches!(recorded, Ok(Ok(()))) {
            tracing::error!(post = id, "recording a webhook attempt failed");
        }
    }

    /// Delivers until `stopped`: due items, at most `per_destination` per
    /// domain and `concurrency` in all; webhook posts beside them.
    pub async fn run(self: Arc<Self>, mut stopped: watch::Receiver<bool>) {
        let webhooks = tokio::spawn(Arc::clone(&self).run_webhooks(stopped.clone()));
        let mut running = tokio::task::JoinSet::new();
        let in_flight: Arc<Mutex<InFlight>> = Arc::default();
        loop {
            let due = lock(&self.queue).due(now(), 256);
            let due = match due {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(error = %e, "reading the outbound queue failed");
                    Vec::new()
                }
            };
            for item in due {
                {
                    let mut f = in_flight.lock().unwrap_or_else(|p| p.into_inner());
                    let busy = f.1.get(&item.domain).copied().unwrap_or(0);
                    if f.0.contains(&item.id)
                        || busy >= self.config.per_destination
                        || f.0.len() >= self.config.concurrency
                    {
                        continue;
                    }
                    f.0.insert(item.id);
                    *f.1.entry(item.domain.clone()).or_insert(0) += 1;
                }
                let me = Arc::clone(&self);
                let flight = Arc::clone(&in_flight);
                running.spawn(async move {
                    let (id, domain) = (item.id, item.domain.clone());
                    me.attempt(item).await;
                    let mut f = flight.lock().unwrap_or_else(|p| p.into_inner());
                    f.0.remove(&id);
                    if let Some(n) = f.1.get_mut(&domain) {
                        *n -= 1;
                    }
                });
            }
            let next = lock(&self.queue).next_due().ok().flatten();
            let wait = next
                .map(|t| Duration::from_secs(u64::try_from(t - now()).unwrap_or(0).max(1)))
                .unwrap_or(Duration::from_secs(60))
                .min(Duration::from_secs(60));
            tokio::select! {
                _ = self.wake.notified() => {}
                Some(_) = running.join_next() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = stopped.wait_for(|s| *s) => break,
            }
        }
        // Deliveries in progress finish; what is left stays queued.
        while running.join_next().await.is_some() {}
        let _ = webhooks.await;
    }

    /// Where mail for `domain` goes: static route, MX hosts by preference,
    /// or the domain itself (implicit MX). `Err` applies to every
    /// recipient.
    async fn targets(&self, domain: &str) -> Result<Vec<(String, u16)>, Outcome> {
        let route = self
            .config
            .routes
            .iter()
            .find(|(d, _)| d.eq_ignore_ascii_case(domain))
            .or_else(|| self.config.routes.iter().find(|(d, _)| d == "*"));
        if let Some((_, target)) = route {
            let (host, port) = target
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h.trim_matches(['[', ']']).to_string(), p.parse().ok()?)))
                .ok_or_else(|| Outcome::Temporary(format!("bad static route {target}")))?;
            return Ok(vec![(host, port)]);
        }
        let Some(resolver) = &self.resolver else {
            return Err(Outcome::Temporary("no DNS resolver configured".into()));
        };
        match resolver.mx_lookup(format!("{domain}.")).await {
            Ok(lookup) => {
                let mut mx: Vec<(u16, String)> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::MX(m) => Some((m.preference, m.exchange.to_utf8())),
                        _ => None,
                    })
                    .collect();
                mx.sort();
                if mx.len() == 1 && (mx[0].1 == "." || mx[0].1.is_empty()) {
                    return Err(Outcome::Permanent(format!(
                        "556 5.1.10 {domain} accepts no mail (null MX)"
                    )));
                }
                Ok(mx
                    .into_iter()
                    .map(|(_, h)| (h.trim_end_matches('.').to_string(), 25))
                    .collect())
            }
            Err(e) if e.is_nx_domain() => Err(Outcome::Permanent(format!(
                "550 5.1.2 no such domain: {domain}"
            ))),
            Err(e) if e.is_no_records_found() => Ok(vec![(domain.to_string(), 25)]),
            Err(e) => Err(Outcome::Temporary(format!("DNS lookup of {domain}: {e}"))),
        }
    }

    /// One attempt at one item; records the outcome in the queue.
    async fn attempt(self: &Arc<Self>, item: OutboundItem) {
        let raw = match lock(&self.queue).message(item.message) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(id = item.id, error = %e, "outbound message unreadable");
                return;
            }
        };
        let mut outcomes: Vec<(String, Outcome)> = Vec::new();
        match self.targets(&item.domain).await {
            Err(o) => outcomes.extend(item.rcpts.iter().map(|r| (r.clone(), o.clone()))),
            Ok(targets) => {
                let mut last = Outcome::Temporary("no server to try".into());
                for (host, port) in &targets {
                    let a = Attempt {
                        host,
                        port: *port,
                        helo: &self.config.hostname,
                        from: &item.from,
                        rcpts: &item.rcpts,
                        raw: &raw,
                    };
                    match client::send(&a, &self.tls, self.config.timeout).await {
                        Ok(results) => {
                            outcomes = results;
                            break;
                        }
                        // A temporary failure at one server: try the next.
                        Err(o @ Outcome::Temporary(_)) => last = o,
                        Err(o) => {
                            last = o;
                            break;
                        }
                    }
                }
                if outcomes.is_empty() {
                    outcomes.extend(item.rcpts.iter().map(|r| (r.clone(), last.clone())));
                }
            }
        }
        let age = Duration::from_secs(u64::try_from(now() - item.created_at).unwrap_or(0));
        let expired = age >= self.config.give_up_after;
        let mut waiting = Vec::new();
        let mut failed = Vec::new();
        let mut error = None;
        for (rcpt, o) in outcomes {
            match o {
                Outcome::Delivered => {
                    tracing::info!(id = item.id, domain = %item.domain, "outbound delivered")
                }
                Outcome::Temporary(why) if !expired => {
                    error = Some(why);
                    waiting.push(rcpt);
                }
                Outcome::Temporary(why) => failed.push((
                    rcpt,
                    format!("{why} (gave up after {} days)", age.as_secs() / 86_400),
                )),
                Outcome::Permanent(why) => failed.push((rcpt, why)),
            }
        }
        let next = now()
            + i64::try_from(backoff(self.config.first_retry, item.attempts).as_secs())
                .unwrap_or(i64::MAX / 2);
        let me = Arc::clone(self);
        let (id, left, err) = (item.id, waiting.clone(), error.clone());
        let updated = tokio::task::spawn_blocking(move || {
            lock(&me.queue).update(id, &left, next, err.as_deref())
        })
        .await;
        if !matches!(updated, Ok(Ok(()))) {
            tracing::error!(id = item.id, "recording an outbound attempt failed");
        }
        if !waiting.is_empty() {
            tracing::info!(id = item.id, domain = %item.domain, waiting = waiting.len(), error = ?error, "outbound deferred");
        }
        if !failed.is_empty() && !item.from.is_empty() {
            self.bounce(&item.from, &failed, &raw).await;
        }
    }

    /// Tells the sender what could not be delivered: a DSN into their
    /// inbox when they are one of ours, else back through the queue (with
    /// the null sender, so a bounce is never bounced).
    async fn bounce(self: &Arc<Self>, to: &str, failed: &[(String, String)], original: &[u8]) {
        let dsn = dsn(&self.config.hostname, to, failed, original);
        if let Ok(address) = AliasAddress::try_from(to) {
            // Final delivery of a bounce: its envelope sender is null.
            let mut stored = b"Return-Path: <>\r\n".to_vec();
            stored.extend_from_slice(&dsn);
            let op = Op::Deliver {
                address: address.clone(),
                raw: stored,
                delivery_ref: None,
            };
            if let Ok(Reply::Delivery(_)) = self.router.request(&address, op).await {
                return;
            }
        }
        if let Err(e) = self.enqueue("", &[to.to_string()], &dsn).await {
            tracing::error!(error = %e, "queueing a bounce failed");
        }
    }
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("hostname", &self.config.hostname)
            .finish_non_exhaustive()
    }
}

impl cofre_storage::outbound::OutboundView for Sender {
    fn pending(&self) -> Result<Vec<OutboundItem>, String> {
        Sender::pending(self)
    }

    fn webhook_deliveries(&self, alias: &str) -> Result<Vec<WebhookDelivery>, String> {
        Sender::webhook_deliveries(self, alias)
    }
}

/// A delivery status notification (RFC 3464): a human-readable part, the
/// machine-readable status per recipient, and the original's header.
pub fn dsn(hostname: &str, to: &str, failed: &[(String, String)], original: &[u8]) -> Vec<u8> {
    let boundary = format!("=_cofre_dsn_{}", cofre_storage::time::now());
    let header_end = original
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 2)
        .unwrap_or(original.len());
    let mut human = String::new();
    let mut machine = format!("Reporting-MTA: dns; {hostname}\r\n");
    for (rcpt, why) in failed {
        human.push_str(&format!("  <{rcpt}>: {why}\r\n"));
        let status = why
            .split(' ')
            .nth(1)
            .filter(|s| s.starts_with("5.") || s.starts_with("4."))
            .unwrap_or("5.0.0");
        machine.push_str(&format!(
            "\r\nFinal-Recipient: rfc822; {rcpt}\r\nAction: failed\r\nStatus: {}\r\nDiagnostic-Code: smtp; {why}\r\n",
            if status.starts_with('4') { "5.4.7" } else { status }
        ));
    }
    let mut out = format!(
        "From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\nTo: <{to}>\r\n\
         Subject: Undelivered Mail Returned to Sender\r\nDate: {}\r\n\
         Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"{boundary}\"\r\n\r\n\
         --{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         Your message could not be delivered to these recipients:\r\n\r\n{human}\r\n\
         --{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n{machine}\r\n\
         --{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n",
        crate::session::rfc5322_now()
    )
    .into_bytes();
    out.extend_from_slice(&original[..header_end]);
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_then_stays() {
        let m = Duration::from_secs(60);
        let d: Vec<u64> = (0..9).map(|a| backoff(m, a).as_secs() / 60).collect();
        assert_eq!(d, [1, 5, 15, 30, 60, 120, 240, 240, 240]);
    }

    #[test]
    fn a_dsn_names_each_failed_recipient_with_its_status() {
        let d = dsn(
            "mx.example",
            "me@ours.example",
            &[("x@far.example".into(), "550 5.1.1 no such user".into())],
            b"Subject: hello\r\nFrom: me@ours.example\r\n\r\nbody\r\n",
        );
        let d = String::from_utf8(d).unwrap_or_default();
        assert!(d.contains("report-type=delivery-status"));
        assert!(
            d.contains("Final-Recipient: rfc822; x@far.example\r\nAction: failed\r\nStatus: 5.1.1")
        );
        assert!(d.contains("Subject: hello"), "the original header");
        assert!(!d.contains("body\r\n--"), "not the original body");
    }
}
