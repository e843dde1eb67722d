//! Logging in, as IMAP and POP3 both do it: the failed-login throttle,
//! the address, the password checked by the primary, the pause after a
//! failure; and SASL PLAIN's response. Each protocol words the outcome.

use std::net::IpAddr;
use std::time::Duration;

use cofre_storage::link::route::Router;
use cofre_storage::link::ws::ClientError;
use cofre_storage::link::{ErrorCode, Op, Reply};
use cofre_storage::primary::SessionId;
use cofre_storage::throttle::LoginLimiter;
use cofre_storage::{AliasAddress, Password};

/// Why a login did not happen.
pub enum LoginError {
    /// Too many failures lately: try again after this long.
    Throttled(Duration),
    /// Wrong address or password (already paused for and counted).
    Failed,
    /// The primary could not be asked, or answered oddly.
    Link(ClientError),
}

/// Who is logging in, from where, and how failures are slowed down.
pub struct Attempt<'a> {
    /// The link to the primaries.
    pub router: &'a Router,
    /// The throttle shared by the front ends.
    pub limiter: &'a LoginLimiter,
    /// The client's address.
    pub peer: Option<IpAddr>,
    /// The pause after a failure.
    pub delay: Duration,
}

impl Attempt<'_> {
    /// Logs `user` in with `password`: a session on the primary.
    pub async fn log_in(
        &self,
        user: &str,
        password: &[u8],
    ) -> Result<(AliasAddress, SessionId), LoginError> {
        if let Some(wait) = self.limiter.blocked(user, self.peer) {
            return Err(LoginError::Throttled(wait));
        }
        let parsed = AliasAddress::try_from(user).ok();
        let password = String::from_utf8(password.to_vec()).ok();
        let (Some(address), Some(password)) = (parsed, password) else {
            return Err(self.failed(user).await);
        };
        let op = Op::Login {
            address: address.clone(),
            password: Password::new(password),
        };
        match self.router.request(&address, op).await {
            Ok(Reply::Session(session)) => Ok((address, session)),
            Ok(_) => Err(LoginError::Link(ClientError::Refused(
                "unexpected reply".into(),
            ))),
            Err(ClientError::Remote(e))
                if matches!(e.code, ErrorCode::WrongPassword | ErrorCode::NotFound) =>
            {
                Err(self.failed(user).await)
            }
            Err(e) => Err(LoginError::Link(e)),
        }
    }

    async fn failed(&self, user: &str) -> LoginError {
        self.limiter.failed(user, self.peer);
        tokio::time::sleep(self.delay).await;
        LoginError::Failed
    }
}

/// Why a SASL PLAIN response was refused.
pub enum PlainError {
    /// Not base64.
    NotBase64,
    /// Not `authzid NUL authcid NUL password`.
    Malformed,
    /// An authorization identity other than the user: acting as another.
    OtherUser,
}

/// SASL PLAIN (RFC 4616): base64 of `authzid NUL authcid NUL password`;
/// the user name and the password.
pub fn plain(b64: &[u8]) -> Result<(String, Vec<u8>), PlainError> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim_ascii())
        .map_err(|_| PlainError::NotBase64)?;
    let mut parts = raw.split(|&c| c == 0);
    let (Some(authz), Some(user), Some(pass), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(PlainError::Malformed);
    };
    if !authz.is_empty() && !authz.eq_ignore_ascii_case(user) {
        return Err(PlainError::OtherUser);
    }
    Ok((String::from_utf8_lossy(user).into_owned(), pass.to_vec()))
}
