//! Who is asking: `Authorization: Bearer <token>` (from `POST /v1/session`)
//! or `Authorization: Basic` with the alias address and password, on every
//! `/v1` endpoint. Either way the request gets a [`Session`] on the primary
//! that owns the alias; the alias's data is reachable only through it.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine;
use cofre_storage::link::route::Router;
use cofre_storage::link::ws::ClientError;
use cofre_storage::link::{ErrorCode, Op, Reply};
use cofre_storage::primary::SessionId;
use cofre_storage::{AliasAddress, Password};

use crate::token::Claims;
use crate::{AppState, Problem};

/// A session for the request's alias.
pub struct Session {
    /// The alias.
    pub address: AliasAddress,
    /// The primary's session.
    pub id: SessionId,
    router: Arc<Router>,
    /// Basic-auth sessions end with the request; token sessions live as
    /// long as the token (on the primary, which expires them), and can be
    /// resumed again from the token when the primary lost them.
    token: Option<(AppState, Claims)>,
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.token.is_some() {
            return;
        }
        let router = Arc::clone(&self.router);
        let address = self.address.clone();
        let session = self.id;
        // Best effort: if the link is down the primary forgets the session
        // anyway (Basic sessions are never shared).
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = router.request(&address, Op::Logout { session }).await;
            });
        }
    }
}

/// The client's IP, when the server was started with connection info.
pub fn client_ip(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<crate::tls::PeerAddr>>()
        .map(|c| c.0.addr.ip())
}

enum Credentials {
    Basic(String, Password),
    Bearer(String),
}

fn credentials(parts: &Parts) -> Option<Credentials> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(Credentials::Bearer(rest.trim().to_string()));
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some(Credentials::Basic(
        user.to_string(),
        Password::new(password),
    ))
}

/// Proves a password through the owning primary, throttled per address and
/// IP; every failure looks the same.
pub async fn password_login(
    state: &AppState,
    address: &str,
    ip: Option<IpAddr>,
    op: impl FnOnce(AliasAddress) -> Op,
) -> Result<(AliasAddress, Reply), Problem> {
    if let Some(wait) = state.inner.config.limiter.blocked(address, ip) {
        return Err(Problem::too_many(wait));
    }
    let failed = || {
        state.inner.config.limiter.failed(address, ip);
        Problem::unauthorized()
    };
    let Ok(parsed) = AliasAddress::try_from(address) else {
        return Err(failed());
    };
    match state.router().request(&parsed, op(parsed.clone())).await {
        Ok(reply) => Ok((parsed, reply)),
        Err(ClientError::Remote(e))
            if matches!(e.code, ErrorCode::NotFound | ErrorCode::WrongPassword) =>
        {
            Err(failed())
        }
        Err(e) => Err(e.into()),
    }
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let router = Arc::clone(state.router());
        match credentials(parts) {
            None => Err(Problem::unauthorized()),
            Some(Credentials::Basic(user, password)) => {
                let ip = client_ip(parts);
                let (address, reply) =
                    password_login(state, &user, ip, |address| Op::Login { address, password })
                        .await?;
                let Reply::Session(id) = reply else {
                    return Err(Problem::internal());
                };
                Ok(Session {
                    address,
                    id,
                    router,
                    token: None,
                })
            }
            Some(Credentials::Bearer(token)) => {
                let now = cofre_storage::time::now();
                let claims = state
                    .inner
                    .signer
                    .verify(&token, now)
                    .map_err(|_| Problem::unauthorized())?;
                let address = AliasAddress::try_from(claims.sub.as_str())
                    .map_err(|_| Problem::unauthorized())?;
                let id = state.token_session(&address, &claims).await?;
                Ok(Session {
                    address,
                    id,
                    router,
                    token: Some((state.clone(), claims)),
                })
            }
        }
    }
}

impl AppState {
    /// The primary session of a token: remembered per token id, resumed
    /// from the token's sealed keys when this gateway has none (first use
    /// here, or the primary restarted).
    async fn token_session(
        &self,
        address: &AliasAddress,
        claims: &Claims,
    ) -> Result<SessionId, Problem> {
        if let Some(id) = self
            .inner
            .token_sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&claims.jti)
        {
            return Ok(*id);
        }
        let sealed = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&claims.key)
            .map_err(|_| Problem::unauthorized())?;
        let op = Op::Resume {
            address: address.clone(),
            jti: claims.jti.clone(),
            expires_at: claims.exp,
            sealed,
        };
        match self.router().request(address, op).await {
            Ok(Reply::Session(id)) => {
                let mut cache = self
                    .inner
                    .token_sessions
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                if cache.len() >= 100_000 {
                    cache.clear();
                }
                cache.insert(claims.jti.clone(), id);
                Ok(id)
            }
            Ok(_) => Err(Problem::internal()),
            Err(ClientError::Remote(e))
                if matches!(e.code, ErrorCode::NotFound | ErrorCode::WrongPassword) =>
            {
                Err(Problem::unauthorized())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Forgets a token's session on this gateway (after revocation, or when
    /// the primary no longer knows it).
    pub(crate) fn forget_token(&self, jti: &str) {
        self.inner
            .token_sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(jti);
    }
}

impl Session {
    /// Sends a request about this session's alias, built by `op` for a
    /// session id. A token's session that the primary lost (it restarted)
    /// is resumed from the token and the request sent once more; it had not
    /// started, so nothing happens twice. Otherwise a gone session is a 401.
    pub async fn request(&self, op: impl Fn(SessionId) -> Op) -> Result<Reply, Problem> {
        match self.router.request(&self.address, op(self.id)).await {
            Err(ClientError::Remote(e)) if e.code == ErrorCode::NoSession => {
                let Some((state, claims)) = &self.token else {
                    return Err(Problem::unauthorized());
                };
                state.forget_token(&claims.jti);
                let id = state.token_session(&self.address, claims).await?;
                Ok(self.router.request(&self.address, op(id)).await?)
            }
            other => Ok(other?),
        }
    }
}
