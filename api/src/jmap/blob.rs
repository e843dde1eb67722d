//! Blobs (RFC 8620 §6): upload and download, and the methods that turn
//! bytes into mail — `Email/import` files an uploaded message,
//! `Email/parse` reads one without storing it (RFC 8621 §4.8, §4.9).
//!
//! A blob id names bytes the mailbox already holds: `u{n}` an upload,
//! `b{email}` a message, and each `-{partId}` one part of what comes
//! before it, decoded (`b12-2` the second part of email 12; `b12-2-1.1`
//! a part of the message attached there).

use axum::body::Bytes;
use axum::extract::{Path, Query as UrlQuery};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cofre_storage::link::{Op, Reply};
use cofre_storage::mailbox::{AppendOptions, EmailSummary, MimePart};
use cofre_storage::{EmailId, FolderId};
use serde_json::{Map, Value, json};

use super::{
    BodyArgs, MAX_OBJECTS_IN_SET, MethodError, MethodResult, account_id, body_values, email_value,
    invalid_property, link_error, old_state, placement, properties_arg, set_error, state,
    string_list, summaries,
};
use crate::auth::Session;
use crate::{Problem, ProblemCode};

/// Largest upload, in bytes (published as `maxSizeUpload`).
pub const MAX_SIZE_UPLOAD: usize = 50_000_000;

/// The bytes behind a blob id; `None` when there are none (unknown form,
/// no such email, part or upload, or an upload that expired).
pub(super) async fn blob_bytes(
    session: &Session,
    id: &str,
) -> Result<Option<Vec<u8>>, MethodError> {
    let mut steps = id.split('-');
    let base = steps.next().unwrap_or_default();
    let number = |prefix: char| {
        base.strip_prefix(prefix)
            .and_then(|n| n.parse::<i64>().ok())
    };
    let raw = if let Some(n) = number('u') {
        read(session, move |s| Op::ReadUpload { session: s, id: n }).await?
    } else if let Some(n) = number('b') {
        let email = EmailId(n);
        read(session, move |s| Op::Raw { session: s, email }).await?
    } else {
        return Ok(None);
    };
    Ok(raw.and_then(|raw| parts(raw, steps)))
}

/// Sends a read whose answer is bytes; a missing object is `None`.
async fn read(
    session: &Session,
    op: impl Fn(cofre_storage::primary::SessionId) -> Op,
) -> Result<Option<Vec<u8>>, MethodError> {
    match session.request(op).await {
        Ok(Reply::Raw(raw)) => Ok(Some(raw)),
        Ok(_) => Err(MethodError::server("unexpected reply")),
        Err(p) if p.status() == StatusCode::NOT_FOUND => Ok(None),
        Err(p) => Err(link_error(p)),
    }
}

/// Follows part ids (`-2`, then `-1.1`…) down into a message.
fn parts<'a>(mut raw: Vec<u8>, steps: impl Iterator<Item = &'a str>) -> Option<Vec<u8>> {
    for step in steps {
        let root = cofre_storage::mailbox::structure_of(&raw);
        let path = path_of(&root, step)?;
        raw = cofre_storage::mailbox::part_decoded_of(&raw, &path).ok()?;
    }
    Some(raw)
}

/// A part id (`1`, `2.1`: 1-based child numbers) as a path in `root`: a
/// message that is one part has the id `1` and the empty path.
fn path_of(root: &MimePart, id: &str) -> Option<Vec<usize>> {
    let path: Vec<usize> = id
        .split('.')
        .map(|n| n.parse::<usize>().ok()?.checked_sub(1))
        .collect::<Option<_>>()?;
    if root.children.is_empty() && path == [0] {
        return Some(Vec::new());
    }
    super::part_at(root, &path)?;
    Some(path)
}

fn problem(status: StatusCode, code: ProblemCode, detail: &str) -> Response {
    Problem::new(status, code, detail).into_response()
}

/// `POST /jmap/upload/{accountId}/`: keeps the body in the mailbox (for a
/// day) and describes it (RFC 8620 §6.1).
pub async fn upload(
    session: Session,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if account != account_id(session.address.as_str()) {
        return problem(
            StatusCode::NOT_FOUND,
            ProblemCode::NotFound,
            "no such account",
        );
    }
    if body.len() > MAX_SIZE_UPLOAD {
        let v = json!({
            "type": "urn:ietf:params:jmap:error:limit",
            "status": 413,
            "limit": "maxSizeUpload",
            "detail": format!("at most {MAX_SIZE_UPLOAD} bytes"),
        });
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            [(header::CONTENT_TYPE, "application/problem+json")],
            v.to_string(),
        )
            .into_response();
    }
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|t| t.contains('/'))
        .unwrap_or("application/octet-stream")
        .to_string();
    match session
        .request(|s| Op::Upload {
            session: s,
            data: body.to_vec(),
        })
        .await
    {
        Ok(Reply::Uploaded(id)) => {
            let v = json!({
                "accountId": account,
                "blobId": format!("u{id}"),
                "type": media_type,
                "size": body.len(),
            });
            (
                StatusCode::CREATED,
                [(header::CONTENT_TYPE, "application/json")],
                v.to_string(),
            )
                .into_response()
        }
        Ok(_) => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            ProblemCode::Internal,
            "unexpected reply",
        ),
        Err(p) => p.into_response(),
    }
}

/// The download URL's query: the media type to answer with.
#[derive(serde::Deserialize)]
pub struct Accept {
    accept: Option<String>,
}

/// `GET /jmap/download/{accountId}/{blobId}/{name}?accept={type}`.
pub async fn download(
    session: Session,
    Path((account, blob, name)): Path<(String, String, String)>,
    UrlQuery(q): UrlQuery<Accept>,
) -> Response {
    if account != account_id(session.address.as_str()) {
        return problem(
            StatusCode::NOT_FOUND,
            ProblemCode::NotFound,
            "no such account",
        );
    }
    let bytes = match blob_bytes(&session, &blob).await {
        Ok(Some(b)) => b,
        Ok(None) => return problem(StatusCode::NOT_FOUND, ProblemCode::NotFound, "no such blob"),
        Err(e) => {
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                ProblemCode::PrimaryUnavailable,
                e.description
                    .as_deref()
                    .unwrap_or("the blob cannot be read now"),
            );
        }
    };
    // A media type as the client asked, when it is one; the bytes are
    // never sniffed or rendered here, so the name only names the file.
    let media_type = q
        .accept
        .filter(|t| {
            let mut halves = t.splitn(2, '/');
            let ok = |s: Option<&str>| {
                s.is_some_and(|s| {
                    !s.is_empty()
                        && s.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
                })
            };
            ok(halves.next()) && ok(halves.next())
        })
        .unwrap_or_else(|| "application/octet-stream".into());
    let mut response = (StatusCode::OK, bytes).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&media_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename*=UTF-8''{encoded}")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    // A blob id always names the same bytes.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, immutable, max-age=604800"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// One `Email/import` entry, checked.
struct Import {
    blob: String,
    folders: Vec<FolderId>,
    options: AppendOptions,
}

fn import_of(v: &Value) -> Result<Import, Value> {
    let o = v
        .as_object()
        .ok_or_else(|| set_error("invalidProperties", "an EmailImport is an object"))?;
    let blob = o
        .get("blobId")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid_property("blobId", "blobId is required"))?
        .to_string();
    let (folders, options) = placement(o)?;
    Ok(Import {
        blob,
        folders,
        options,
    })
}

/// Stores one import.
async fn import_one(session: &Session, import: Import) -> Result<Value, Value> {
    let raw = match blob_bytes(session, &import.blob).await {
        Ok(Some(raw)) => raw,
        Ok(None) => {
            let mut e = set_error("blobNotFound", "no such blob");
            e["notFound"] = json!([import.blob]);
            return Err(e);
        }
        Err(e) => return Err(set_error("serverFail", e.description.unwrap_or_default())),
    };
    store(session, raw, &import.folders, import.options).await
}

/// Stores a new email: appended to the first mailbox, copied to the rest.
/// The created object (id, blobId, threadId, size) or a SetError.
pub(super) async fn store(
    session: &Session,
    raw: Vec<u8>,
    folders: &[FolderId],
    options: AppendOptions,
) -> Result<Value, Value> {
    let (first, rest) = folders
        .split_first()
        .ok_or_else(|| set_error("invalidProperties", "at least one mailbox is required"))?;
    let failed = |p: Problem| match p.status() {
        StatusCode::NOT_FOUND => {
            let mut e = set_error("invalidProperties", "no such mailbox");
            e["properties"] = json!(["mailboxIds"]);
            e
        }
        StatusCode::PAYLOAD_TOO_LARGE => set_error("tooLarge", p.detail().to_string()),
        StatusCode::INSUFFICIENT_STORAGE => set_error("overQuota", p.detail().to_string()),
        StatusCode::BAD_REQUEST => set_error("invalidEmail", p.detail().to_string()),
        _ => set_error("serverFail", p.detail().to_string()),
    };
    let appended = match session
        .request(|s| Op::Append {
            session: s,
            folder: *first,
            raw: raw.clone(),
            options: options.clone(),
        })
        .await
    {
        Ok(Reply::Appended(a)) => a,
        Ok(_) => return Err(set_error("serverFail", "unexpected reply")),
        Err(p) => return Err(failed(p)),
    };
    for to in rest {
        let op = |s| Op::Copy {
            session: s,
            from: *first,
            uids: vec![appended.uid],
            to: *to,
        };
        if let Err(p) = session.request(op).await {
            return Err(failed(p));
        }
    }
    let thread = summaries(session, vec![appended.email_id])
        .await
        .map_err(|e| set_error("serverFail", e.description.unwrap_or_default()))?
        .first()
        .map(|s| s.thread_id.0);
    Ok(json!({
        "id": format!("e{}", appended.email_id.0),
        "blobId": format!("b{}", appended.email_id.0),
        "threadId": thread.map(|t| format!("t{t}")),
        "size": raw.len(),
    }))
}

/// `Email/import` (RFC 8621 §4.8).
pub(super) async fn email_import(
    session: &Session,
    account: &str,
    args: &Map<String, Value>,
) -> MethodResult {
    let old = old_state(session, args).await?;
    let emails = match args.get("emails") {
        Some(Value::Object(m)) => m,
        _ => return Err(MethodError::invalid("emails is an object of EmailImport")),
    };
    if emails.len() > MAX_OBJECTS_IN_SET {
        return Err(MethodError::new(
            "requestTooLarge",
            format!("at most {MAX_OBJECTS_IN_SET} emails"),
        ));
    }
    let (mut created, mut not_created) = (Map::new(), Map::new());
    for (cid, v) in emails {
        let result = match import_of(v) {
            Ok(import) => import_one(session, import).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(v) => created.insert(cid.clone(), v),
            Err(e) => not_created.insert(cid.clone(), e),
        };
    }
    let new = state(session).await?;
    Ok(json!({
        "accountId": account,
        "oldState": old,
        "newState": new,
        "created": super::or_null(created),
        "notCreated": super::or_null(not_created),
    }))
}

/// What `Email/parse` returns unless asked otherwise (RFC 8621 §4.9).
const PARSE_DEFAULTS: [&str; 17] = [
    "messageId",
    "inReplyTo",
    "references",
    "sender",
    "from",
    "to",
    "cc",
    "bcc",
    "replyTo",
    "subject",
    "sentAt",
    "hasAttachment",
    "preview",
    "bodyValues",
    "textBody",
    "htmlBody",
    "attachments",
];

/// `Email/parse` (RFC 8621 §4.9): blobs read as emails, nothing stored.
pub(super) async fn email_parse(
    session: &Session,
    account: &str,
    args: &Map<String, Value>,
) -> MethodResult {
    let blobs =
        string_list(args, "blobIds")?.ok_or_else(|| MethodError::invalid("blobIds is required"))?;
    if blobs.len() > super::MAX_OBJECTS_IN_GET {
        return Err(MethodError::new("requestTooLarge", "too many blobIds"));
    }
    let props = properties_arg(args, &PARSE_DEFAULTS)?;
    let header_props = super::header_props(&props)?;
    if let Some(p) = props.iter().find(|p| {
        !super::EMAIL_PROPERTIES.contains(&p.as_str())
            && !super::BODY_PROPERTIES.contains(&p.as_str())
            && !p.starts_with("header:")
    }) {
        return Err(MethodError::invalid(format!("unknown Email property {p}")));
    }
    let body = BodyArgs::of(args)?;
    let (mut parsed, mut not_parsable, mut not_found) = (Map::new(), Vec::new(), Vec::new());
    for id in blobs {
        let Some(raw) = blob_bytes(session, &id).await? else {
            not_found.push(id);
            continue;
        };
        if mail_parser::MessageParser::default()
            .parse(&raw)
            .is_none_or(|m| m.headers().is_empty())
        {
            not_parsable.push(id);
            continue;
        }
        let summary = EmailSummary::of_raw(&raw);
        let mut v = email_value(&summary, &props);
        // Not stored: no id, thread, mailboxes, keywords or arrival.
        for p in ["id", "threadId", "mailboxIds", "keywords", "receivedAt"] {
            if let Some(slot) = v.get_mut(p) {
                *slot = Value::Null;
            }
        }
        if props.iter().all(|p| p != "id") {
            v.as_object_mut().map(|m| m.remove("id"));
        }
        if let Some(slot) = v.get_mut("blobId") {
            *slot = json!(id);
        }
        body_values(&mut v, &id, &raw, &props, &body);
        super::headers::fill(&mut v, &raw, &header_props);
        parsed.insert(id, v);
    }
    Ok(json!({
        "accountId": account,
        "parsed": parsed,
        "notParsable": not_parsable,
        "notFound": not_found,
    }))
}
