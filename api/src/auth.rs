//! HTTP Basic authentication with the alias password: each request opens a
//! session on the owning primary (the key cache makes the second one cheap)
//! and ends it when the response is done.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine;
use cofre_storage::link::route::Router;
use cofre_storage::link::{Op, Reply};
use cofre_storage::primary::SessionId;
use cofre_storage::{AliasAddress, Password};

use crate::{AppState, Problem};

/// A live session for the request's alias; logged out when dropped.
pub struct Session {
    /// The alias.
    pub address: AliasAddress,
    /// The primary's session.
    pub id: SessionId,
    router: Arc<Router>,
}

impl Drop for Session {
    fn drop(&mut self) {
        let router = Arc::clone(&self.router);
        let address = self.address.clone();
        let session = self.id;
        // Ending a session is best effort: if the link is down, the primary
        // forgot the session with the connection's end anyway.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = router.request(&address, Op::Logout { session }).await;
            });
        }
    }
}

/// The address and password of an `Authorization: Basic` header.
fn basic(parts: &Parts) -> Option<(AliasAddress, Password)> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((AliasAddress::try_from(user).ok()?, Password::new(password)))
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let Some((address, password)) = basic(parts) else {
            return Err(Problem::unauthorized());
        };
        let router = Arc::clone(state.router());
        let reply = router
            .request(
                &address,
                Op::Login {
                    address: address.clone(),
                    password,
                },
            )
            .await;
        match reply {
            Ok(Reply::Session(id)) => Ok(Session {
                address,
                id,
                router,
            }),
            // Unknown address and wrong password look the same.
            Err(cofre_storage::link::ws::ClientError::Remote(e))
                if matches!(
                    e.code,
                    cofre_storage::link::ErrorCode::NotFound
                        | cofre_storage::link::ErrorCode::WrongPassword
                ) =>
            {
                Err(Problem::unauthorized())
            }
            Err(e) => Err(e.into()),
            Ok(_) => Err(Problem::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "unexpected answer from the mail store",
            )),
        }
    }
}

impl Session {
    /// Sends a request about this session's alias.
    pub async fn request(&self, op: Op) -> Result<Reply, Problem> {
        Ok(self.router.request(&self.address, op).await?)
    }
}
