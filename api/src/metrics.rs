//! `/metrics` in the Prometheus text format: HTTP requests and latencies,
//! link requests and latencies per operation, link state, and — when the
//! primary runs in this process — open mailboxes, live sessions and the
//! sealed queue's depth.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cofre_storage::link::route::LATENCY_BUCKETS_US;

use crate::AppState;

/// Counts of HTTP requests by method, route and status.
#[derive(Default)]
pub struct HttpMetrics {
    seen: Mutex<HashMap<(String, String, u16), Series>>,
}

#[derive(Default, Clone)]
struct Series {
    count: u64,
    total_us: u64,
    buckets: [u64; LATENCY_BUCKETS_US.len()],
}

impl Series {
    fn add(&mut self, us: u64) {
        self.count += 1;
        self.total_us += us;
        if let Some(i) = LATENCY_BUCKETS_US.iter().position(|b| us <= *b) {
            self.buckets[i] += 1;
        }
    }
}

/// Middleware: times every request and logs it (method, route, status,
/// duration — never headers or bodies).
pub async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    // The route pattern, not the path: ids stay out of label values.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    tracing::info!(method, route, status, us, "http request");
    state
        .inner
        .metrics
        .seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry((method, route, status))
        .or_default()
        .add(us);
    response
}

fn histogram(out: &mut String, name: &str, labels: &str, buckets: &[u64], count: u64, sum_us: u64) {
    let mut cumulative = 0;
    for (bound, n) in LATENCY_BUCKETS_US.iter().zip(buckets) {
        cumulative += n;
        let le = *bound as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", sum_us as f64 / 1e6);
    let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
}

/// `GET /metrics`.
pub async fn render(State(state): State<AppState>) -> Response {
    let mut out = String::new();
    out.push_str("# HELP cofre_http_requests_seconds HTTP requests by method, route and status.\n");
    out.push_str("# TYPE cofre_http_requests_seconds histogram\n");
    let http: Vec<_> = state
        .inner
        .metrics
        .seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for ((method, route, status), s) in http {
        let labels = format!("method=\"{method}\",route=\"{route}\",status=\"{status}\"");
        histogram(
            &mut out,
            "cofre_http_requests_seconds",
            &labels,
            &s.buckets,
            s.count,
            s.total_us,
        );
    }

    out.push_str("# HELP cofre_link_requests_seconds Requests to the primary by operation.\n");
    out.push_str("# TYPE cofre_link_requests_seconds histogram\n");
    let stats = state.router().stats();
    for (op, s) in &stats {
        let buckets: Vec<u64> = s
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        histogram(
            &mut out,
            "cofre_link_requests_seconds",
            &format!("op=\"{op}\""),
            &buckets,
            s.count.load(Ordering::Relaxed),
            s.total_us.load(Ordering::Relaxed),
        );
    }
    out.push_str(
        "# HELP cofre_link_request_errors_total Failed requests to the primary by operation.\n",
    );
    out.push_str("# TYPE cofre_link_request_errors_total counter\n");
    for (op, s) in &stats {
        let _ = writeln!(
            out,
            "cofre_link_request_errors_total{{op=\"{op}\"}} {}",
            s.errors.load(Ordering::Relaxed)
        );
    }
    out.push_str("# HELP cofre_link_up Whether the link to each primary is up.\n");
    out.push_str("# TYPE cofre_link_up gauge\n");
    for (name, link) in state.router().links() {
        let _ = writeln!(
            out,
            "cofre_link_up{{primary=\"{name}\"}} {}",
            u8::from(link.is_connected())
        );
    }

    if let Some(primary) = &state.inner.local {
        out.push_str("# HELP cofre_open_mailboxes Mailboxes with an open file.\n");
        out.push_str("# TYPE cofre_open_mailboxes gauge\n");
        let _ = writeln!(out, "cofre_open_mailboxes {}", primary.open_mailboxes());
        out.push_str("# HELP cofre_live_sessions Live sessions on this primary.\n");
        out.push_str("# TYPE cofre_live_sessions gauge\n");
        let _ = writeln!(out, "cofre_live_sessions {}", primary.session_count());
        // Counted once at start; kept current by enqueue and drain.
        if let Ok(depth) = primary.store().queue_depth() {
            out.push_str("# HELP cofre_queue_depth Sealed messages waiting for offline aliases.\n");
            out.push_str("# TYPE cofre_queue_depth gauge\n");
            let _ = writeln!(out, "cofre_queue_depth {depth}");
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}
