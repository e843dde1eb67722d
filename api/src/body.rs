//! A message's content for display: its header fields, its text, its HTML
//! made safe, and its attachments (listed, and downloadable with ranges).
//! Parsed here, in the secondary, from the exact bytes the primary keeps.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cofre_storage::link::{Op, Reply};
use cofre_storage::types::EmailId;
use mail_parser::{MessageParser, MimeHeaders, PartType};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::Problem;
use crate::auth::Session;
use crate::json::{Path, Query};
use crate::problem::ProblemCode;

/// One header field as it arrived (unfolded).
#[derive(Debug, Serialize, ToSchema)]
pub struct HeaderField {
    /// The field name.
    pub name: String,
    /// Its value, unfolded, not decoded.
    pub value: String,
}

/// An attachment, listed.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttachmentView {
    /// Its index, for the download endpoint.
    pub index: usize,
    /// The file name, if it has one.
    pub filename: Option<String>,
    /// Its media type, e.g. `application/pdf`.
    pub content_type: String,
    /// Decoded size in bytes.
    pub size: usize,
    /// Its Content-ID (inline images), without angle brackets.
    pub content_id: Option<String>,
}

/// A message ready to display.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageBody {
    /// Every header field, in order.
    pub headers: Vec<HeaderField>,
    /// The text body, if the message has one.
    pub text: Option<String>,
    /// The HTML body, sanitised: no scripts, no event handlers, no forms or
    /// frames, links opening without referrer, and no remote images or
    /// other loads unless `remote=true` was asked for.
    pub html: Option<String>,
    /// The attachments.
    pub attachments: Vec<AttachmentView>,
}

/// Options of the body endpoint.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct BodyParams {
    /// Keep remote images and other remote loads in the HTML (they reveal
    /// to the sender that, when and where the message was read).
    #[serde(default)]
    pub remote: bool,
}

/// Sanitises HTML for display: what ammonia keeps, minus remote loads.
pub fn sanitise(html: &str, remote: bool) -> String {
    let mut b = ammonia::Builder::default();
    b.link_rel(Some("noopener noreferrer nofollow"))
        .url_relative(ammonia::UrlRelative::Deny)
        .add_url_schemes(["cid", "data"]);
    if !remote {
        b.attribute_filter(|_, attribute, value| match attribute {
            "src" | "srcset" | "background" | "poster" | "lowsrc" | "dynsrc" => {
                let v = value.trim_start().to_ascii_lowercase();
                (v.starts_with("cid:") || v.starts_with("data:")).then(|| value.into())
            }
            _ => Some(value.into()),
        });
    }
    b.clean(html).to_string()
}

async fn raw_of(session: &Session, id: i64) -> Result<Vec<u8>, Problem> {
    match session
        .request(|s| Op::Raw {
            session: s,
            email: EmailId(id),
        })
        .await?
    {
        Reply::Raw(bytes) => Ok(bytes),
        _ => Err(Problem::internal()),
    }
}

fn media_type(part: &mail_parser::MessagePart<'_>) -> String {
    part.content_type()
        .map(|c| match c.subtype() {
            Some(sub) => format!("{}/{}", c.ctype(), sub),
            None => c.ctype().to_string(),
        })
        .unwrap_or_else(|| "application/octet-stream".into())
        .to_ascii_lowercase()
}

/// A message's header fields, text, safe HTML and attachment list.
#[utoipa::path(get, path = "/v1/messages/{id}/body", tag = "messages",
    params(("id" = i64, Path, description = "Message id"), BodyParams),
    responses((status = 200, description = "OK", body = MessageBody),
        (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json")))]
pub async fn get_body(
    session: Session,
    Path(id): Path<i64>,
    Query(params): Query<BodyParams>,
) -> Result<Json<MessageBody>, Problem> {
    let raw = raw_of(&session, id).await?;
    let Some(message) = MessageParser::default().parse(&raw) else {
        // Not parseable as a message: show its bytes as text.
        return Ok(Json(MessageBody {
            headers: Vec::new(),
            text: Some(String::from_utf8_lossy(&raw).into_owned()),
            html: None,
            attachments: Vec::new(),
        }));
    };
    let headers = message
        .headers()
        .iter()
        .map(|h| {
            let start = h.offset_start as usize;
            let end = (h.offset_end as usize).min(raw.len());
            let value = raw.get(start..end).unwrap_or_default();
            HeaderField {
                name: h.name().to_string(),
                value: String::from_utf8_lossy(value)
                    .split(['\r', '\n'])
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect::<Vec<_>>()
                    .join(" "),
            }
        })
        .collect();
    let text = message
        .text_part(0)
        .filter(|p| matches!(p.body, PartType::Text(_)))
        .and_then(|_| message.body_text(0))
        .map(|t| t.into_owned());
    let html = message
        .html_part(0)
        .filter(|p| matches!(p.body, PartType::Html(_)))
        .and_then(|_| message.body_html(0))
        .map(|h| sanitise(&h, params.remote));
    let attachments = message
        .attachments()
        .enumerate()
        .map(|(index, part)| AttachmentView {
            index,
            filename: part.attachment_name().map(str::to_string),
            content_type: media_type(part),
            size: part.contents().len(),
            content_id: part
                .content_id()
                .map(|c| c.trim_matches(['<', '>']).to_string()),
        })
        .collect();
    Ok(Json(MessageBody {
        headers,
        text,
        html,
        attachments,
    }))
}

/// One range of a `Range: bytes=…` header against a length: `Ok(None)`
/// for no (or an ignored multi-) range, `Err` when unsatisfiable.
fn byte_range(headers: &HeaderMap, len: usize) -> Result<Option<(usize, usize)>, ()> {
    let Some(spec) = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
    else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (start, end) = spec.split_once('-').ok_or(())?;
    let (start, end) = match (start.trim(), end.trim()) {
        ("", suffix) => {
            let n: usize = suffix.parse().map_err(|_| ())?;
            if n == 0 {
                return Err(());
            }
            (len.saturating_sub(n), len.checked_sub(1).ok_or(())?)
        }
        (s, "") => (s.parse().map_err(|_| ())?, len.checked_sub(1).ok_or(())?),
        (s, e) => {
            let (s, e): (usize, usize) = (s.parse().map_err(|_| ())?, e.parse().map_err(|_| ())?);
            (s, e.min(len.saturating_sub(1)))
        }
    };
    if start >= len || start > end {
        return Err(());
    }
    Ok(Some((start, end)))
}

/// One attachment's decoded bytes; `Range` requests get 206.
#[utoipa::path(get, path = "/v1/messages/{id}/attachments/{index}", tag = "messages",
    params(("id" = i64, Path, description = "Message id"), ("index" = usize, Path, description = "Attachment index from the body endpoint")),
    responses((status = 200, description = "The attachment", content_type = "application/octet-stream", body = crate::views::RawMessage),
        (status = 206, description = "Part of it", content_type = "application/octet-stream", body = crate::views::RawMessage),
        (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
        (status = 416, description = "Range not satisfiable", body = Problem, content_type = "application/problem+json")))]
pub async fn get_attachment(
    session: Session,
    Path((id, index)): Path<(i64, usize)>,
    request_headers: HeaderMap,
) -> Result<Response, Problem> {
    let raw = raw_of(&session, id).await?;
    let message = MessageParser::default().parse(&raw);
    let part = message
        .as_ref()
        .and_then(|m| m.attachments().nth(index))
        .ok_or_else(|| {
            Problem::new(
                StatusCode::NOT_FOUND,
                ProblemCode::NotFound,
                "no such attachment",
            )
        })?;
    let bytes = part.contents();
    let len = bytes.len();
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&media_type(part))
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    // Always a download: never rendered by the browser in our origin.
    let name: String = part
        .attachment_name()
        .unwrap_or("attachment")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_ ".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    match byte_range(&request_headers, len) {
        Ok(None) => Ok((StatusCode::OK, headers, bytes.to_vec()).into_response()),
        Ok(Some((start, end))) => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
                headers.insert(header::CONTENT_RANGE, v);
            }
            Ok((
                StatusCode::PARTIAL_CONTENT,
                headers,
                bytes[start..=end].to_vec(),
            )
                .into_response())
        }
        Err(()) => {
            let mut response = Problem::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                ProblemCode::RangeNotSatisfiable,
                format!("the attachment has {len} bytes"),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            Ok(response)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn html_loses_scripts_handlers_and_remote_loads() {
        let dirty = r#"<p onclick="steal()">Hi<script>alert(1)</script>
            <img src="https://tracker.example/pixel.gif"><img src="cid:logo@x">
            <a href="https://example.com">link</a><iframe src="https://x"></iframe>
            <form action="https://x"><input></form><img srcset="https://x/a.png 1x"></p>"#;
        let clean = sanitise(dirty, false);
        for gone in [
            "script",
            "onclick",
            "tracker.example",
            "iframe",
            "<form",
            "srcset",
        ] {
            assert!(!clean.contains(gone), "{gone} in {clean}");
        }
        assert!(clean.contains(r#"src="cid:logo@x""#), "{clean}");
        assert!(clean.contains("noopener noreferrer"), "{clean}");
        let with_remote = sanitise(dirty, true);
        assert!(with_remote.contains("tracker.example"));
        assert!(!with_remote.contains("script"));
    }

    #[test]
    fn ranges() {
        let mut h = HeaderMap::new();
        assert_eq!(byte_range(&h, 10), Ok(None));
        for (spec, want) in [
            ("bytes=0-3", Ok(Some((0, 3)))),
            ("bytes=5-", Ok(Some((5, 9)))),
            ("bytes=-4", Ok(Some((6, 9)))),
            ("bytes=8-100", Ok(Some((8, 9)))),
            ("bytes=10-", Err(())),
            ("bytes=4-2", Err(())),
            ("bytes=-0", Err(())),
            ("bytes=a-b", Err(())),
            ("bytes=0-1,3-4", Ok(None)),
        ] {
            h.insert(header::RANGE, HeaderValue::from_static(spec));
            assert_eq!(byte_range(&h, 10), want, "{spec}");
        }
    }
}
