//! Cofre's HTTP interface: health and readiness probes, Prometheus metrics,
//! and the mail API. It is a secondary: every piece of mail it touches goes
//! through the [`Router`] to a primary, in this process or over the link.

mod auth;
mod mail;
pub mod metrics;
mod problem;
pub mod tls;

use std::sync::Arc;

use axum::Router as Routes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use cofre_storage::link::route::Router;
use cofre_storage::primary::Primary;
use tokio::sync::watch;

pub use problem::Problem;

/// Settings of the HTTP interface.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest request body accepted (a message upload), in bytes.
    pub max_body: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig { max_body: 50 << 20 }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    router: Arc<Router>,
    local: Option<Arc<Primary>>,
    metrics: metrics::HttpMetrics,
    shutdown: watch::Receiver<bool>,
}

impl AppState {
    /// State over a router. `local` is the primary when it runs in this
    /// process (its gauges then appear in `/metrics`); `shutdown` turning
    /// true ends long-lived responses such as event streams.
    pub fn new(
        router: Arc<Router>,
        local: Option<Arc<Primary>>,
        shutdown: watch::Receiver<bool>,
    ) -> AppState {
        AppState {
            inner: Arc::new(Inner {
                router,
                local,
                metrics: metrics::HttpMetrics::default(),
                shutdown,
            }),
        }
    }

    fn router(&self) -> &Arc<Router> {
        &self.inner.router
    }
}

/// The whole HTTP application.
pub fn app(state: AppState, config: &ApiConfig) -> Routes {
    let v1 = Routes::new()
        .route("/folders", get(mail::folders))
        .route("/folders/{folder}/messages", post(mail::import))
        .route("/messages/{email}/raw", get(mail::raw))
        .route("/events", get(mail::events));
    Routes::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::render))
        .nest("/v1", v1)
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::observe,
        ))
        .layer(DefaultBodyLimit::max(config.max_body))
        .with_state(state)
}

/// Alive: the process answers.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready: every primary is reachable.
async fn readyz(State(state): State<AppState>) -> axum::response::Response {
    let down: Vec<&str> = state
        .router()
        .links()
        .iter()
        .filter(|(_, l)| !l.is_connected())
        .map(|(n, _)| n.as_str())
        .collect();
    if down.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "primary_unavailable",
            format!("no link to primary {}", down.join(", ")),
        )
        .into_response()
    }
}

async fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
}
