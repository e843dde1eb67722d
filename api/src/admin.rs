//! `/v1/admin`: domains, aliases, quotas, forwarding recipients and webhooks,
//! for the operator. Authorised by the admin token from the configuration
//! (`Authorization: Bearer …`), never by an alias's credentials; disabled
//! when no token is configured.

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use cofre_storage::AliasAddress;
use cofre_storage::admin::{AdminOp, AdminReply, AliasInfo, WebhookInfo};
use cofre_storage::link::{Op, Reply};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};

use crate::json::{Json as Body, Path, Query};
use crate::problem::ProblemCode;
use crate::{AppState, Problem};

/// Proof that the request carries the admin token.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let Some(want) = &state.inner.config.admin_token else {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                ProblemCode::AdminDisabled,
                "the admin API is off: configure admin_token to enable it",
            ));
        };
        let given = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        // Hashes have equal lengths, so the comparison takes the same time
        // whatever the token given.
        let ok = cofre_storage::keys::constant_time_eq(
            &Sha256::digest(given.as_bytes()),
            &Sha256::digest(want.as_bytes()),
        );
        if ok {
            Ok(Admin)
        } else {
            Err(Problem::unauthorized())
        }
    }
}

fn address(a: &str) -> Result<AliasAddress, Problem> {
    AliasAddress::try_from(a).map_err(|e| Problem::invalid(e.to_string()))
}

async fn run(
    state: &AppState,
    about: Option<&AliasAddress>,
    op: AdminOp,
) -> Result<AdminReply, Problem> {
    let reply = match about {
        Some(a) => state.router().request(a, Op::Admin(op)).await?,
        None => state.router().request_default(Op::Admin(op)).await?,
    };
    match reply {
        Reply::Admin(r) => Ok(r),
        _ => Err(Problem::internal()),
    }
}

/// A hosted domain.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DomainView {
    /// The DNS name.
    pub name: String,
    /// How many aliases it has.
    #[serde(default)]
    pub aliases: u64,
}

/// A domain to host.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDomain {
    /// The DNS name.
    #[schema(example = "example.com")]
    pub name: String,
}

/// An alias (no key material).
#[derive(Debug, Serialize, ToSchema)]
pub struct AliasView {
    /// The address.
    pub address: String,
    /// Quota in bytes.
    pub quota: Option<u64>,
    /// When it was created.
    pub created_at: String,
}

impl From<AliasInfo> for AliasView {
    fn from(a: AliasInfo) -> AliasView {
        AliasView {
            address: a.address,
            quota: a.quota,
            created_at: a.created_at,
        }
    }
}

/// An alias to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAlias {
    /// The address, in a hosted domain.
    #[schema(example = "hello@example.com")]
    pub address: String,
    /// Quota in bytes.
    pub quota: Option<u64>,
}

/// A new alias with its generated password — shown this once, never again.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedAlias {
    /// The address.
    pub address: String,
    /// Quota in bytes.
    pub quota: Option<u64>,
    /// When it was created.
    pub created_at: String,
    /// The password. Cofre keeps no copy: it cannot be shown again.
    pub password: String,
}

/// A quota.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaChange {
    /// Bytes, or null for none.
    pub quota: Option<u64>,
}

/// A forwarding recipient.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewForward {
    /// Where copies of arriving mail go.
    pub recipient: String,
}

/// Whether the alias's mailbox keeps arriving mail.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliverySettings {
    /// Store a copy in the mailbox. `false` only takes effect while the
    /// alias has a forward or a webhook; with neither, mail is stored
    /// anyway (it is never dropped).
    pub mailbox: bool,
}

/// A webhook to register.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    /// The http(s) URL that arriving mail is POSTed to.
    pub url: String,
}

/// A webhook.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookView {
    /// Its id.
    pub id: i64,
    /// Where it POSTs.
    pub url: String,
}

/// A new webhook with its signing secret — shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedWebhook {
    /// Its id.
    pub id: i64,
    /// Where it POSTs.
    pub url: String,
    /// HMAC-SHA256 key (hex) that signs its deliveries.
    pub secret: String,
}

fn webhook(w: WebhookInfo) -> WebhookView {
    WebhookView {
        id: w.id,
        url: w.url,
    }
}

/// A message waiting in the outbound queue for the recipients of one
/// domain.
#[derive(Debug, Serialize, ToSchema)]
pub struct OutboundMessage {
    /// Its id in the queue.
    pub id: i64,
    /// The envelope sender ("" for a bounce).
    pub sender: String,
    /// The destination domain.
    pub domain: String,
    /// Recipients there still waiting.
    pub recipients: Vec<String>,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// When it was queued (ISO 8601, UTC).
    pub queued_at: String,
    /// When it is tried next (ISO 8601, UTC).
    pub next_attempt_at: String,
    /// What the last attempt ran into.
    pub last_error: Option<String>,
}

/// Which aliases to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AliasFilter {
    /// Only this domain.
    pub domain: Option<String>,
}

/// Hosted domains.
#[utoipa::path(get, path = "/v1/admin/domains", tag = "admin", security(("admin" = [])),
    responses((status = 200, description = "OK", body = Vec<DomainView>), (status = 403, description = "Admin API off", body = Problem, content_type = "application/problem+json")))]
pub async fn list_domains(
    _: Admin,
    State(state): State<AppState>,
) -> Result<Json<Vec<DomainView>>, Problem> {
    match run(&state, None, AdminOp::Domains).await? {
        AdminReply::Domains(d) => Ok(Json(
            d.into_iter()
                .map(|(name, aliases)| DomainView { name, aliases })
                .collect(),
        )),
        _ => Err(Problem::internal()),
    }
}

/// Host a domain.
#[utoipa::path(post, path = "/v1/admin/domains", tag = "admin", security(("admin" = [])), request_body = NewDomain,
    responses((status = 201, description = "Hosted"), (status = 409, description = "Already hosted", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Admin API off", body = Problem, content_type = "application/problem+json")))]
pub async fn add_domain(
    _: Admin,
    State(state): State<AppState>,
    body: Body<NewDomain>,
) -> Result<StatusCode, Problem> {
    run(&state, None, AdminOp::AddDomain(body.0.name)).await?;
    Ok(StatusCode::CREATED)
}

/// Stop hosting a domain that has no aliases left.
#[utoipa::path(delete, path = "/v1/admin/domains/{name}", tag = "admin", security(("admin" = [])),
    params(("name" = String, Path, description = "The domain")),
    responses((status = 204, description = "Done"), (status = 404, description = "Not hosted", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Admin API off", body = Problem, content_type = "application/problem+json")))]
pub async fn remove_domain(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, Problem> {
    run(&state, None, AdminOp::RemoveDomain(name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Aliases, all or of one domain.
#[utoipa::path(get, path = "/v1/admin/aliases", tag = "admin", security(("admin" = [])), params(AliasFilter),
    responses((status = 200, description = "OK", body = Vec<AliasView>), (status = 403, description = "Admin API off", body = Problem, content_type = "application/problem+json")))]
pub async fn list_aliases(
    _: Admin,
    State(state): State<AppState>,
    Query(filter): Query<AliasFilter>,
) -> Result<Json<Vec<AliasView>>, Problem> {
    match run(&state, None, AdminOp::Aliases(filter.domain)).await? {
        AdminReply::Aliases(a) => Ok(Json(a.into_iter().map(AliasView::from).collect())),
        _ => Err(Problem::internal()),
    }
}

/// Create an alias; the answer carries its password, this once.
#[utoipa::path(post, path = "/v1/admin/aliases", tag = "admin", security(("admin" = [])), request_body = NewAlias,
    responses((status = 201, description = "Created", body = CreatedAlias),
        (status = 404, description = "The domain is not hosted", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "It exists", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Admin API off", body = Problem, content_type = "application/problem+json")))]
pub async fn create_alias(
    _: Admin,
    State(state): State<AppState>,
    body: Body<NewAlias>,
) -> Result<(StatusCode, Json<CreatedAlias>), Problem> {
    let op = AdminOp::CreateAlias {
        address: address(&body.0.address)?,
        quota: body.0.quota,
    };
    match run(&state, None, op).await? {
        AdminReply::Created(a, password) => Ok((
            StatusCode::CREATED,
            Json(CreatedAlias {
                address: a.address,
                quota: a.quota,
                created_at: a.created_at,
                password: password.expose().to_string(),
            }),
        )),
        _ => Err(Problem::internal()),
    }
}

/// Delete an alias with its mailbox, queue and backups, for good.
#[utoipa::path(delete, path = "/v1/admin/aliases/{address}", tag = "admin", security(("admin" = [])),
    params(("address" = String, Path, description = "The alias")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Admin API off", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_alias(
    _: Admin,
    State(state): State<AppState>,
    Path(a): Path<String>,
) -> Result<StatusCode, Problem> {
    let a = address(&a)?;
    run(&state, Some(&a), AdminOp::DeleteAlias(a.clone())).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Set or clear an alias's quota.
#[utoipa::path(put, path = "/v1/admin/aliases/{address}/quota", tag = "admin", security(("admin" = [])), request_body = QuotaChange,
    params(("address" = String, Path, description = "The alias")),
    responses((status = 204, description = "Set"), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Admin API off", body = Problem, content_type = "application/problem+json")))]
pub async fn set_quota(
    _: Admin,
    State(state): State<AppState>,
    Path(a): Path<String>,
    body: Body<QuotaChange>,
) -> Result<StatusCode, Problem> {
    let a = address(&a)?;
    run(
        &state,
        Some(&a),
        AdminOp::SetQuota {
            address: a.clone(),
            quota: body.0.quota,
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Forwarding recipients of an alias.
#[utoipa::path(get, path = "/v1/admin/aliases/{address}/forwards", tag = "admin", security(("admin" = [])),
    params(("address" = String, Path, description = "The alias")),
    responses((status = 200, description = "OK", body = Vec<String>), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Admin API off", body = Problem, content_type = "application/problem+json")))]
pub async fn list_forwards(
    _: Admin,
    State(state): State<AppState>,
    Path(a): Path<String>,
) -> Result<Json<Vec<String>>, Problem> {
    let a = address(&a)?;
    match run(&state, Some(&a), AdminOp::Forwards(a.clone())).await? {
        AdminReply::Forwards(f) => Ok(Json(f)),
        _ => Err(Problem::internal()),
    }
}

/// Add a forwarding recipient.
#[utoipa::path(post, path = "/v1/admin/aliases/{address}/forwards", tag = "admin", security(("admin" = [])), request_body = NewForward,
    params(("address" = String, Path, description = "The alias")),
    responses((status = 204, description = "Added"), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Admin API off", body = Problem, content_type = "application/problem+json")))]
pub async fn add_forward(
    _: Admin,
    State(state): State<AppState>,
    Path(a): Path<String>,
    body: Body<NewForward>,
) -> Result<StatusCode, Problem> {
    let a = address(&a)?;
    let recipient = address(&body.0.recipient)?;
    run(
        &state,
        Some(&a),
        AdminOp::AddForward {
            address: a.clone(),
            recipient,
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Remove a forwarding recipient.
#[utoipa::path(delete, path = "/v1/admin/aliases/{address}/forwards/{recipient}", tag = "admin", security(("admin" = [])),
    params(("address" = String, Path, description = "The alias"), ("recipient" = String, Path, description = "The recipient")),
    responses((status = 204, description = "Removed"), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Admin API off", body = Problem, content_type = "application/problem+json")))]
pub async fn remove_forward(
    _: Admin,
    State(state): State<AppState>,
    Path((a, recipient)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    let a = address(&a)?;
    let recipient = address(&recipient)?;
    run(
        &state,
        Some(&a),
        AdminOp::RemoveForward {
            address: a.clone(),
            recipient,
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Where an alias's mail goes besides forwards and webhooks: whether its
/// mailbox keeps a copy.
#[utoipa::path(get, path = "/v1/admin/aliases/{address}/delivery", tag = "admin", security(("admin" = [])),
    params(("address" = String, Path, description = "The alias")),
    responses((status = 200, description = "OK", body = DeliverySettings), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Admin API off", body = Problem, content_type = "application/problem+json")))]
pub async fn get_delivery(
    _: Admin,
    State(state): State<AppState>,
    Path(a): Path<String>,
) -> Result<Json<DeliverySettings>, Problem> {
    let a = address(&a)?;
    match run(&state, Some(&a), AdminOp::Rules(a.clone())).await? {
        AdminReply::Rules(r) => Ok(Json(DeliverySettings {
            mailbox: r.keep_copy,
        })),
        _ => Err(Problem::internal()),
    }
}

/// Keep arriving mail in the mailbox, or only forward it and post it to
/// webhooks (`{"mailbox": false}`).
#[utoipa::path(put, path = "/v1/admin/aliases/{address}/delivery", tag = "admin", security(("admin" = [])), request_body = DeliverySettings,
    params(("address" = String, Path, description = "The alias")),
    responses((status = 200, description = "Set", body = DeliverySettings), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Admin API off", body = Problem, content_type = "application/problem+json")))]
pub async fn set_delivery(
    _: Admin,
    State(state): State<AppState>,
    Path(a): Path<String>,
    body: Body<DeliverySettings>,
) -> Result<Json<DeliverySettings>, Problem> {
    let a = address(&a)?;
    let op = AdminOp::SetKeepCopy {
        address: a.clone(),
        keep: body.0.mailbox,
    };
    match run(&state, Some(&a), op).await? {
        AdminReply::KeepCopy(keep) => Ok(Json(DeliverySettings { mailbox: keep })),
        _ => Err(Problem::internal()),
    }
}

/// Webhooks of an alias.
#[utoipa::path(get, path = "/v1/admin/aliases/{address}/webhooks", tag = "admin", security(("admin" = [])),
    params(("address" = String, Path, description = "The alias")),
    responses((status = 200, description = "OK", body = Vec<WebhookView>), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Admin API off", body = Problem, content_type = "application/problem+json")))]
pub async fn list_webhooks(
    _: Admin,
    State(state): State<AppState>,
    Path(a): Path<String>,
) -> Result<Json<Vec<WebhookView>>, Problem> {
    let a = address(&a)?;
    match run(&state, Some(&a), AdminOp::Webhooks(a.clone())).await? {
        AdminReply::Webhooks(w) => Ok(Json(w.into_iter().map(webhook).collect())),
        _ => Err(Problem::internal()),
    }
}

/// Register a webhook; the answer carries its signing secret, this once.
///
/// From then on, each message the alias receives is POSTed to the URL as
/// a `WebhookPayload` JSON document (see the schema) with the headers
/// `Cofre-Event: message.received`, `Cofre-Delivery: <payload id>` and
/// `Cofre-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>"
/// under the secret>`. Any 2xx answer is a delivery; anything else is
/// retried after 30 s, 1, 2, 5, 10, 30 minutes, 1, 2, 4, 8 hours, for 24
/// hours.
#[utoipa::path(post, path = "/v1/admin/aliases/{address}/webhooks", tag = "admin", security(("admin" = [])), request_body = NewWebhook,
    params(("address" = String, Path, description = "The alias")),
    responses((status = 201, description = "Registered", body = CreatedWebhook), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Admin API off", body = Problem, content_type = "application/problem+json")))]
pub async fn add_webhook(
    _: Admin,
    State(state): State<AppState>,
    Path(a): Path<String>,
    body: Body<NewWebhook>,
) -> Result<(StatusCode, Json<CreatedWebhook>), Problem> {
    let a = address(&a)?;
    match run(
        &state,
        Some(&a),
        AdminOp::AddWebhook {
            address: a.clone(),
            url: body.0.url,
        },
    )
    .await?
    {
        AdminReply::WebhookCreated(w, secret) => Ok((
            StatusCode::CREATED,
            Json(CreatedWebhook {
                id: w.id,
                url: w.url,
                secret,
            }),
        )),
        _ => Err(Problem::internal()),
    }
}

/// The latest webhook posts for an alias (newest first, at most 100,
/// finished ones kept a week), each with every attempt: when, the HTTP
/// status or the error, how long it took.
#[utoipa::path(get, path = "/v1/admin/aliases/{address}/webhooks/deliveries", tag = "admin", security(("admin" = [])),
    params(("address" = String, Path, description = "The alias")),
    responses((status = 200, description = "OK", body = Vec<cofre_storage::webhook::WebhookDelivery>),
        (status = 404, description = "No such alias, or no SMTP service in this process", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Admin API off", body = Problem, content_type = "application/problem+json")))]
pub async fn list_webhook_deliveries(
    _: Admin,
    State(state): State<AppState>,
    Path(a): Path<String>,
) -> Result<Json<Vec<cofre_storage::webhook::WebhookDelivery>>, Problem> {
    let a = address(&a)?;
    // The alias must exist (a 404 otherwise, like the other alias routes).
    run(&state, Some(&a), AdminOp::Webhooks(a.clone())).await?;
    let Some(view) = state.inner.config.outbound.clone() else {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            ProblemCode::NotFound,
            "this process runs no SMTP service, so it posts no webhooks",
        ));
    };
    let alias = a.to_string();
    let list = tokio::task::spawn_blocking(move || view.webhook_deliveries(&alias))
        .await
        .map_err(|_| Problem::internal())?
        .map_err(|e| {
            tracing::error!(error = %e, "reading the webhook queue failed");
            Problem::internal()
        })?;
    Ok(Json(list))
}

/// Remove a webhook.
#[utoipa::path(delete, path = "/v1/admin/aliases/{address}/webhooks/{id}", tag = "admin", security(("admin" = [])),
    params(("address" = String, Path, description = "The alias"), ("id" = i64, Path, description = "The webhook")),
    responses((status = 204, description = "Removed"), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Admin API off", body = Problem, content_type = "application/problem+json")))]
pub async fn remove_webhook(
    _: Admin,
    State(state): State<AppState>,
    Path((a, id)): Path<(String, i64)>,
) -> Result<StatusCode, Problem> {
    let a = address(&a)?;
    run(
        &state,
        Some(&a),
        AdminOp::RemoveWebhook {
            address: a.clone(),
            id,
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What waits in this process's outbound queue (mail for other servers:
/// submissions, forwarded copies, bounces), oldest first.
#[utoipa::path(get, path = "/v1/admin/outbound", tag = "admin", security(("admin" = [])),
    responses((status = 200, description = "OK", body = Vec<OutboundMessage>),
        (status = 404, description = "No outbound queue in this process (no SMTP service)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Admin API off", body = Problem, content_type = "application/problem+json")))]
pub async fn list_outbound(
    _: Admin,
    State(state): State<AppState>,
) -> Result<Json<Vec<OutboundMessage>>, Problem> {
    let Some(view) = state.inner.config.outbound.clone() else {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            ProblemCode::NotFound,
            "this process runs no SMTP service, so it has no outbound queue",
        ));
    };
    let items = tokio::task::spawn_blocking(move || view.pending())
        .await
        .map_err(|_| Problem::internal())?
        .map_err(|e| {
            tracing::error!(error = %e, "reading the outbound queue failed");
            Problem::internal()
        })?;
    Ok(Json(
        items
            .into_iter()
            .map(|i| OutboundMessage {
                id: i.id,
                sender: i.from,
                domain: i.domain,
                recipients: i.rcpts,
                attempts: i.attempts,
                queued_at: cofre_storage::time::iso(i.created_at),
                next_attempt_at: cofre_storage::time::iso(i.next_at),
                last_error: i.last_error,
            })
            .collect(),
    ))
}
