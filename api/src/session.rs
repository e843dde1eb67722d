//! `POST /v1/session` (password → API token) and `DELETE /v1/session`
//! (revoke the token in use).

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use base64::Engine;
use cofre_storage::Password;
use cofre_storage::link::{Op, Reply};

use crate::auth::{client_ip, password_login};
use crate::token::Claims;
use crate::views::{SessionRequest, SessionView};
use crate::{AppState, Problem};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The client's IP, for throttling.
pub struct ClientIp(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(client_ip(parts)))
    }
}

/// Exchange an address and password for an API token.
#[utoipa::path(
    post,
    path = "/v1/session",
    tag = "session",
    request_body = SessionRequest,
    responses(
        (status = 201, description = "A new token", body = SessionView),
        (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Wrong address or password (the same answer for both)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed logins", body = Problem, content_type = "application/problem+json"),
    ),
    security(())
)]
pub async fn create_session(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    body: crate::json::Json<SessionRequest>,
) -> Result<(StatusCode, Json<SessionView>), Problem> {
    let request = body.0;
    let ttl_secs = state.inner.config.token_ttl.as_secs();
    let password = Password::new(request.password);
    let (address, reply) = password_login(&state, &request.address, ip, |address| Op::IssueToken {
        address,
        password,
        ttl_secs,
    })
    .await?;
    let Reply::Token(grant) = reply else {
        return Err(Problem::internal());
    };
    let claims = Claims {
        sub: address.to_string(),
        aid: grant.alias_id,
        jti: grant.jti,
        iat: cofre_storage::time::now(),
        exp: grant.expires_at,
        key: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&grant.sealed),
    };
    Ok((
        StatusCode::CREATED,
        Json(SessionView {
            token: state.inner.signer.sign(&claims),
            token_type: "Bearer",
            expires_at: cofre_storage::time::iso(grant.expires_at),
            address: address.to_string(),
        }),
    ))
}

/// Revoke the token this request carries, on every gateway.
#[utoipa::path(
    delete,
    path = "/v1/session",
    tag = "session",
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn delete_session(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<StatusCode, Problem> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .ok_or_else(Problem::unauthorized)?;
    let claims = state
        .inner
        .signer
        .verify(token.trim(), cofre_storage::time::now())
        .map_err(|_| Problem::unauthorized())?;
    let address = cofre_storage::AliasAddress::try_from(claims.sub.as_str())
        .map_err(|_| Problem::unauthorized())?;
    state
        .router()
        .request(
            &address,
            Op::Revoke {
                jti: claims.jti.clone(),
                expires_at: claims.exp,
            },
        )
        .await?;
    state.forget_token(&claims.jti);
    Ok(StatusCode::NO_CONTENT)
}

/// The current password, to prove before it is replaced.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    /// The password in use now.
    pub current_password: String,
}

/// A new password — shown this once, never again.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewPassword {
    /// The new, generated password. Every session and token of the alias
    /// has ended; log in again with it.
    pub password: String,
}

/// Replace the alias's password with a generated one. The mailbox is not
/// rewritten (one key is rewrapped); every session and token ends.
#[utoipa::path(
    post,
    path = "/v1/password",
    tag = "session",
    request_body = PasswordChange,
    responses(
        (status = 200, description = "The new password", body = NewPassword),
        (status = 401, description = "Wrong current password", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn change_password(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    session: crate::auth::Session,
    body: crate::json::Json<PasswordChange>,
) -> Result<Json<NewPassword>, Problem> {
    let current = Password::new(body.0.current_password);
    let address = session.address.to_string();
    // The session's own end (the primary ends them all) must not race the
    // answer: drop it first.
    drop(session);
    let (_, reply) = password_login(&state, &address, ip, |address| Op::ChangePassword {
        address,
        current,
    })
    .await?;
    match reply {
        Reply::Password(p) => Ok(Json(NewPassword {
            password: p.expose().to_string(),
        })),
        _ => Err(Problem::internal()),
    }
}

/// The password that keys an export.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    /// The alias's password: the export opens with it.
    pub password: String,
}

/// Download the whole mailbox as a portable SQLCipher file that the
/// `sqlcipher` tool opens with the alias's password.
#[utoipa::path(
    post,
    path = "/v1/export",
    tag = "mailbox",
    request_body = ExportRequest,
    responses(
        (status = 200, description = "The export", content_type = "application/vnd.sqlite3", body = crate::views::RawMessage),
        (status = 401, description = "Wrong password", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn export(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    session: crate::auth::Session,
    body: crate::json::Json<ExportRequest>,
) -> Result<axum::response::Response, Problem> {
    use axum::response::IntoResponse;
    let password = Password::new(body.0.password);
    let address = session.address.to_string();
    let id = session.id;
    let (_, reply) = password_login(&state, &address, ip, |_| Op::Export {
        session: id,
        password,
    })
    .await?;
    drop(session);
    let Reply::Raw(bytes) = reply else {
        return Err(Problem::internal());
    };
    let name: String = address
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                "application/vnd.sqlite3".to_string(),
            ),
            (
                axum::http::header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}.cofre.sqlite\""),
            ),
        ],
        bytes,
    )
        .into_response())
}
