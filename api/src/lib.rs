//! Cofre's HTTP interface: health and readiness probes, Prometheus metrics,
//! and the mail API with its OpenAPI document. It is a secondary: every
//! piece of mail it touches goes through the [`Router`] to a primary, in
//! this process or over the link.

mod admin;
mod auth;
mod backups;
mod body;
mod filter;
pub mod jmap;
mod json;
mod mail;
pub mod metrics;
mod problem;
mod session;
mod settings;
pub mod tls;
pub mod token;
mod views;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router as Routes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use cofre_storage::link::route::Router;
use cofre_storage::primary::{Primary, SessionId};
use tokio::sync::watch;
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use problem::{Problem, ProblemCode};

/// Settings of the HTTP interface.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest request body accepted (a message upload), in bytes.
    pub max_body: usize,
    /// How long an API token lives.
    pub token_ttl: Duration,
    /// Origins allowed to call the API from a browser (CORS); empty: none.
    pub cors_origins: Vec<String>,
    /// The operator's token for `/v1/admin`; none: the admin API is off.
    pub admin_token: Option<zeroize::Zeroizing<String>>,
    /// Failed-login throttling, shared with the other front ends (IMAP…)
    /// so that a password guesser gets one budget, not one per protocol.
    pub limiter: Arc<cofre_storage::throttle::LoginLimiter>,
    /// The outbound queue of this process, for `GET /v1/admin/outbound`
    /// (none where no SMTP service runs).
    pub outbound: Option<Arc<dyn cofre_storage::outbound::OutboundView>>,
    /// Sending for JMAP's `EmailSubmission` (none where no SMTP service
    /// runs: submissions are then refused).
    pub submit: Option<Arc<dyn cofre_storage::outbound::Submit>>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_body: 50 << 20,
            token_ttl: Duration::from_secs(3600),
            cors_origins: Vec::new(),
            admin_token: None,
            limiter: Arc::default(),
            outbound: None,
            submit: None,
        }
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
    signer: token::Signer,
    config: ApiConfig,
    /// Token id → the primary session this gateway resumed for it.
    token_sessions: Mutex<HashMap<String, SessionId>>,
}

impl AppState {
    /// State over a router. `local` is the primary when it runs in this
    /// process (its gauges then appear in `/metrics`); `cluster_secret`
    /// keys the API tokens; `shutdown` turning true ends long-lived
    /// responses such as event streams.
    pub fn new(
        router: Arc<Router>,
        local: Option<Arc<Primary>>,
        cluster_secret: &[u8],
        config: ApiConfig,
        shutdown: watch::Receiver<bool>,
    ) -> AppState {
        AppState {
            inner: Arc::new(Inner {
                router,
                local,
                metrics: metrics::HttpMetrics::default(),
                shutdown,
                signer: token::Signer::from_cluster_secret(cluster_secret),
                config,
                token_sessions: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn router(&self) -> &Arc<Router> {
        &self.inner.router
    }

    /// Where JMAP submissions are sent, if this process sends mail.
    fn submit(&self) -> Option<&dyn cofre_storage::outbound::Submit> {
        self.inner.config.submit.as_deref()
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Cofre",
        description = "A private email backend: every alias's mailbox is encrypted with a key only its password opens. Authenticate with `POST /v1/session` (then `Authorization: Bearer …`) or with HTTP Basic (address and password) on every endpoint. Errors are `application/problem+json` with a stable `code`: `invalid`, `unauthorized`, `not_found`, `already_exists`, `too_large`, `unsupported_media_type`, `too_many_attempts`, `over_quota`, `primary_unavailable`, `internal`.",
        license(name = "AGPL-3.0-or-later")
    ),
    modifiers(&Security),
    components(schemas(cofre_storage::webhook::WebhookPayload)),
    tags(
        (name = "session", description = "API tokens"),
        (name = "folders", description = "Folders and their counters"),
        (name = "messages", description = "Listing, search, reading, import, keywords, moves"),
        (name = "mailbox", description = "Quota and change events"),
        (name = "settings", description = "The alias's own settings (POP3)"),
        (name = "backups", description = "Backups of the alias's mailbox"),
        (name = "admin", description = "Domains, aliases, quotas, forwards, webhooks (admin token)"),
    )
)]
struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                utoipa::openapi::security::HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        );
        // Every operation takes either scheme unless it says otherwise.
        openapi.security = Some(vec![
            utoipa::openapi::security::SecurityRequirement::new("bearer", Vec::<String>::new()),
            utoipa::openapi::security::SecurityRequirement::new("basic", Vec::<String>::new()),
        ]);
    }
}

/// Documents, on every operation, the answers any of them may give.
fn common_responses(openapi: &mut utoipa::openapi::OpenApi) {
    // Answers any operation may give, documented once here.
    let problem = |what: &str| {
        utoipa::openapi::ResponseBuilder::new()
            .description(what)
            .content(
                "application/problem+json",
                utoipa::openapi::ContentBuilder::new()
                    .schema(Some(utoipa::openapi::Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build()
    };
    for item in openapi.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.post,
            &mut item.patch,
            &mut item.delete,
            &mut item.put,
        ]
        .into_iter()
        .flatten()
        {
            for (code, what) in [
                ("400", "Invalid input"),
                ("401", "Not authenticated"),
                ("413", "Request body too large"),
                ("415", "Unsupported media type"),
                ("429", "Too many failed logins"),
                ("503", "The mail store is unreachable"),
            ] {
                op.responses
                    .responses
                    .entry(code.to_string())
                    .or_insert_with(|| problem(what).into());
            }
        }
    }
}

fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(session::create_session, session::delete_session))
        .routes(routes!(session::change_password))
        .routes(routes!(session::export))
        .routes(routes!(mail::list_folders, mail::create_folder))
        .routes(routes!(mail::update_folder, mail::delete_folder))
        .routes(routes!(mail::list_messages, mail::import_message))
        .routes(routes!(mail::folder_mbox))
        .routes(routes!(mail::search_messages))
        .routes(routes!(mail::get_message, mail::delete_message))
        .routes(routes!(mail::get_raw_message))
        .routes(routes!(body::get_body))
        .routes(routes!(body::get_attachment))
        .routes(routes!(mail::set_keywords))
        .routes(routes!(mail::move_messages))
        .routes(routes!(mail::copy_messages))
        .routes(routes!(mail::delete_messages))
        .routes(routes!(mail::get_quota))
        .routes(routes!(mail::watch_events))
        .routes(routes!(settings::get_pop3, settings::put_pop3))
        .routes(routes!(backups::list_backups, backups::run_backup))
        .routes(routes!(backups::download_backup, backups::delete_backup))
        .routes(routes!(backups::restore_backup))
        .routes(routes!(backups::confirm_restore))
        .routes(routes!(admin::list_domains, admin::add_domain))
        .routes(routes!(admin::remove_domain))
        .routes(routes!(admin::list_outbound))
        .routes(routes!(admin::list_aliases, admin::create_alias))
        .routes(routes!(admin::delete_alias))
        .routes(routes!(admin::set_quota))
        .routes(routes!(admin::list_forwards, admin::add_forward))
        .routes(routes!(admin::remove_forward))
        .routes(routes!(admin::list_webhooks, admin::add_webhook))
        .routes(routes!(admin::remove_webhook))
        .routes(routes!(admin::list_webhook_deliveries))
        .routes(routes!(admin::get_delivery, admin::set_delivery))
}

/// The OpenAPI document, as the code defines it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = api_routes().split_for_parts().1;
    common_responses(&mut doc);
    doc
}

/// The whole HTTP application.
pub fn app(state: AppState) -> Routes {
    let config = state.inner.config.clone();
    let (api, mut doc) = api_routes().split_for_parts();
    common_responses(&mut doc);
    // The reference page at /docs; it serves the document at /openapi.json.
    let mut app = api
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::render))
        .route("/.well-known/jmap", get(jmap::session_resource))
        .route("/jmap/api", axum::routing::post(jmap::api))
        .route("/jmap/upload/{account}/", axum::routing::post(jmap::upload))
        .route(
            "/jmap/download/{account}/{blob}/{name}",
            get(jmap::download),
        )
        .route("/jmap/eventsource", get(jmap::event_source))
        .route("/jmap/ws", get(jmap::websocket))
        .merge(utoipa_swagger_ui::SwaggerUi::new("/docs").url("/openapi.json", doc))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::observe,
        ))
        .layer(DefaultBodyLimit::max(config.max_body));
    if !config.cors_origins.is_empty() {
        let origins: Vec<HeaderValue> = config
            .cors_origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        app = app.layer(
            tower_http::cors::CorsLayer::new()
                .allow_origin(origins)
                .allow_methods(tower_http::cors::Any)
                .allow_headers(tower_http::cors::Any)
                .max_age(Duration::from_secs(600)),
        );
    }
    app.with_state(state)
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
            ProblemCode::PrimaryUnavailable,
            format!("no link to primary {}", down.join(", ")),
        )
        .into_response()
    }
}

async fn not_found() -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        ProblemCode::NotFound,
        "no such resource",
    )
}
