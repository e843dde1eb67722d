//! Errors as `application/problem+json` (RFC 9457) with a stable `code`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cofre_storage::link::ErrorCode;
use cofre_storage::link::ws::ClientError;
use serde::Serialize;

/// The stable, machine-readable kinds of error. Clients branch on these,
/// never on `detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProblemCode {
    /// Malformed or invalid input; `detail` says what.
    Invalid,
    /// Missing, wrong, expired or revoked credentials.
    Unauthorized,
    /// No such folder, message, attachment, alias, domain or route.
    NotFound,
    /// It exists already.
    AlreadyExists,
    /// The body or message is larger than allowed.
    TooLarge,
    /// The body is not of a type this endpoint takes.
    UnsupportedMediaType,
    /// Too many failed logins; wait `Retry-After` seconds.
    TooManyAttempts,
    /// The mailbox's quota would be exceeded.
    OverQuota,
    /// The requested byte range is outside the content.
    RangeNotSatisfiable,
    /// The admin API is off (no admin token configured).
    AdminDisabled,
    /// The mail store is unreachable or shutting down; retry.
    PrimaryUnavailable,
    /// The server failed; details are in its log only.
    Internal,
}

/// An error answer: HTTP status, a stable machine-readable code, and a
/// message fit for the client (never internal details).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"code": "not_found", "title": "Not Found", "detail": "no such message", "status": 404}))]
pub struct Problem {
    #[serde(skip)]
    #[schema(ignore)]
    status: StatusCode,
    /// Stable identifier of the kind of error.
    code: ProblemCode,
    /// The status's reason phrase.
    title: &'static str,
    /// What went wrong, for a person.
    detail: String,
    /// The HTTP status as a number.
    #[serde(rename = "status")]
    status_code: u16,
    /// Seconds to wait (429 only).
    #[serde(skip)]
    #[schema(ignore)]
    retry_after: Option<u64>,
}

impl Problem {
    /// What went wrong, for a person.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// A problem with a status, code and message.
    pub fn new(status: StatusCode, code: ProblemCode, detail: impl Into<String>) -> Problem {
        Problem {
            status,
            code,
            title: status.canonical_reason().unwrap_or("Error"),
            detail: detail.into(),
            status_code: status.as_u16(),
            retry_after: None,
        }
    }

    /// Too many failed logins: try again after `wait`.
    pub fn too_many(wait: std::time::Duration) -> Problem {
        let mut p = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            ProblemCode::TooManyAttempts,
            "too many failed logins; try again later",
        );
        p.retry_after = Some(wait.as_secs().max(1));
        p
    }

    /// Something failed inside; the details are in the server's log.
    pub fn internal() -> Problem {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ProblemCode::Internal,
            "internal error",
        )
    }

    /// Invalid input, with the reason.
    pub fn invalid(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, ProblemCode::Invalid, detail)
    }

    /// The answer to a missing or wrong password: the same whether or not
    /// the address exists.
    pub fn unauthorized() -> Problem {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            ProblemCode::Unauthorized,
            "wrong address or password",
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(&self)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"cofre\", charset=\"UTF-8\""),
            );
        }
        response
    }
}

impl From<ClientError> for Problem {
    fn from(e: ClientError) -> Problem {
        match e {
            ClientError::LinkDown(_) | ClientError::Refused(_) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ProblemCode::PrimaryUnavailable,
                "the mail store is unreachable; try again shortly",
            ),
            ClientError::Remote(e) => {
                let (status, code) = match e.code {
                    ErrorCode::WrongPassword | ErrorCode::NoSession => {
                        return Problem::unauthorized();
                    }
                    ErrorCode::NotFound => (StatusCode::NOT_FOUND, ProblemCode::NotFound),
                    ErrorCode::AlreadyExists => (StatusCode::CONFLICT, ProblemCode::AlreadyExists),
                    ErrorCode::Invalid => (StatusCode::BAD_REQUEST, ProblemCode::Invalid),
                    ErrorCode::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, ProblemCode::TooLarge),
                    ErrorCode::OverQuota => {
                        (StatusCode::INSUFFICIENT_STORAGE, ProblemCode::OverQuota)
                    }
                    ErrorCode::Unavailable => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        ProblemCode::PrimaryUnavailable,
                    ),
                    ErrorCode::Internal => {
                        (StatusCode::INTERNAL_SERVER_ERROR, ProblemCode::Internal)
                    }
                };
                Problem::new(status, code, e.message)
            }
        }
    }
}
