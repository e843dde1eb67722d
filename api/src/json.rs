//! A JSON body extractor whose every rejection is a problem+json answer
//! with the reason (wrong content type, syntax, unknown or mistyped field,
//! body too large).

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::Problem;

/// A JSON request body.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(rejection) => Err(match rejection {
                JsonRejection::MissingJsonContentType(_) => Problem::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "the body must be application/json",
                ),
                JsonRejection::JsonDataError(e) => Problem::invalid(e.body_text()),
                JsonRejection::JsonSyntaxError(e) => Problem::invalid(e.body_text()),
                other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    "the request body is too large",
                ),
                other => Problem::invalid(other.body_text()),
            }),
        }
    }
}
