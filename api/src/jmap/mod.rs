//! JMAP (RFC 8620 core, RFC 8621 mail) over the same link, sessions and
//! keys as the REST API: the session resource at `/.well-known/jmap`, and
//! method calls at `/jmap/api` with result references, limits and the
//! RFC's error types.
//!
//! Ids are prefixed row ids of the alias's mailbox (`m` folders, `e`
//! emails, `t` threads, `b` blobs), so they stay stable for an object's
//! life and mean nothing outside the account.

use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use cofre_storage::link::Op;
use cofre_storage::link::Reply;
use cofre_storage::mailbox::{
    Addr, AppendOptions, EmailSummary, Filter, Folder, MimePart, Query, Sort, SortKey, TextField,
};
use cofre_storage::{EmailId, FolderId, Keyword, ThreadId};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::auth::Session;

mod blob;
mod compose;
mod headers;
mod identity;
mod mailbox_set;
mod push;
mod query_changes;
mod quota;
mod records;
pub use quota::QUOTA;
mod snippet;
mod vacation;
pub use vacation::VACATION;
mod websocket;
pub use websocket::{WEBSOCKET, websocket};
mod submission;
pub use blob::{download, upload};
pub use push::event_source;
pub use submission::SUBMISSION;

/// The core capability.
pub const CORE: &str = "urn:ietf:params:jmap:core";
/// The mail capability.
pub const MAIL: &str = "urn:ietf:params:jmap:mail";
/// Largest request body, octets (`maxSizeRequest`).
pub const MAX_SIZE_REQUEST: usize = 10_000_000;
/// Most method calls in one request (`maxCallsInRequest`).
pub const MAX_CALLS_IN_REQUEST: usize = 32;
/// Most objects one `/get` returns (`maxObjectsInGet`).
pub const MAX_OBJECTS_IN_GET: usize = 500;
/// Most objects one `/set` changes (`maxObjectsInSet`).
pub const MAX_OBJECTS_IN_SET: usize = 500;

/// The account id of an alias: stable, and not the address itself (ids
/// are restricted to the URL-safe base64 alphabet).
pub fn account_id(address: &str) -> String {
    let digest = Sha256::digest(address.as_bytes());
    format!("a{}", hex::encode(&digest[..8]))
}

fn json_response(status: StatusCode, v: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

/// A request-level error (RFC 8620 §3.6.1), as problem details.
fn request_error(kind: &'static str, detail: &str, limit: Option<&'static str>) -> Response {
    let v = RequestError {
        kind,
        detail: detail.to_string(),
        limit,
    }
    .to_value();
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "application/problem+json")],
        v.to_string(),
    )
        .into_response()
}

/// This server's URL as the client reached it (`https://host:port`), for
/// the absolute URLs of the session resource; empty (relative URLs) when
/// the request names no usable host.
fn base_url(parts: &axum::http::request::Parts) -> String {
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        });
    let Some(host) = host else {
        return String::new();
    };
    let tls = parts
        .extensions
        .get::<axum::extract::ConnectInfo<crate::tls::PeerAddr>>()
        .is_some_and(|c| c.0.tls);
    // Behind a TLS-terminating proxy the client's scheme is the proxy's.
    let forwarded_tls = parts
        .headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let scheme = if tls || forwarded_tls {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{host}")
}

/// The session resource (RFC 8620 §2).
pub async fn session_resource(session: Session, parts: axum::http::request::Parts) -> Response {
    let address = session.address.to_string();
    let account = account_id(&address);
    let base = base_url(&parts);
    let v = json!({
        "capabilities": {
            CORE: {
                "maxSizeUpload": blob::MAX_SIZE_UPLOAD,
                "maxConcurrentUpload": 4,
                "maxSizeRequest": MAX_SIZE_REQUEST,
                "maxConcurrentRequests": 4,
                "maxCallsInRequest": MAX_CALLS_IN_REQUEST,
                "maxObjectsInGet": MAX_OBJECTS_IN_GET,
                "maxObjectsInSet": MAX_OBJECTS_IN_SET,
                "collationAlgorithms": ["i;ascii-casemap"],
            },
            MAIL: {},
            SUBMISSION: {},
            QUOTA: {},
            VACATION: {},
            WEBSOCKET: {
                "url": format!("{}/jmap/ws", base.replacen("http", "ws", 1)),
                "supportsPush": true,
            },
        },
        "accounts": {
            account.clone(): {
                "name": address,
                "isPersonal": true,
                "isReadOnly": false,
                "accountCapabilities": {
                    CORE: {},
                    MAIL: {
                        "maxMailboxesPerEmail": null,
                        "maxMailboxDepth": null,
                        "maxSizeMailboxName": 255,
                        "maxSizeAttachmentsPerEmail": 50_000_000,
                        "emailQuerySortOptions": ["receivedAt", "sentAt", "size", "from", "to", "subject", "hasKeyword"],
                        "mayCreateTopLevelMailbox": true,
                    },
                    SUBMISSION: {
                        "maxDelayedSend": 0,
                        "submissionExtensions": {},
                    },
                    QUOTA: {},
                    VACATION: {},
                },
            },
        },
        "primaryAccounts": { CORE: account.clone(), MAIL: account.clone(), SUBMISSION: account.clone(), QUOTA: account.clone(), VACATION: account },
        "username": address,
        "apiUrl": format!("{base}/jmap/api"),
        "downloadUrl": format!("{base}/jmap/download/{{accountId}}/{{blobId}}/{{name}}?accept={{type}}"),
        "uploadUrl": format!("{base}/jmap/upload/{{accountId}}/"),
        "eventSourceUrl": format!("{base}/jmap/eventsource?types={{types}}&closeafter={{closeafter}}&ping={{ping}}"),
        "state": SESSION_STATE,
    });
    json_response(StatusCode::OK, &v)
}

/// The session object changes only with the server's capabilities.
const SESSION_STATE: &str = "1";

/// A method-level error (RFC 8620 §3.6.2).
#[derive(Debug)]
struct MethodError {
    kind: &'static str,
    description: Option<String>,
}

impl MethodError {
    fn new(kind: &'static str, description: impl Into<String>) -> MethodError {
        MethodError {
            kind,
            description: Some(description.into()),
        }
    }

    fn invalid(description: impl Into<String>) -> MethodError {
        MethodError::new("invalidArguments", description)
    }

    fn server(description: impl Into<String>) -> MethodError {
        MethodError::new("serverFail", description)
    }

    fn to_value(&self) -> Value {
        let mut v = json!({ "type": self.kind });
        if let Some(d) = &self.description {
            v["description"] = json!(d);
        }
        v
    }
}

type MethodResult = Result<Value, MethodError>;

/// A request-level error (RFC 8620 §3.6.1): its type, what went wrong,
/// and the limit it broke, if any.
pub(crate) struct RequestError {
    kind: &'static str,
    detail: String,
    limit: Option<&'static str>,
}

impl RequestError {
    fn new(kind: &'static str, detail: impl Into<String>) -> RequestError {
        RequestError {
            kind,
            detail: detail.into(),
            limit: None,
        }
    }

    /// As a problem details object.
    fn to_value(&self) -> Value {
        let mut v = json!({
            "type": format!("urn:ietf:params:jmap:error:{}", self.kind),
            "status": 400,
            "detail": self.detail,
        });
        if let Some(l) = self.limit {
            v["limit"] = json!(l);
        }
        v
    }
}

/// The API endpoint (RFC 8620 §3): runs each method call in order.
pub async fn api(
    axum::extract::State(app): axum::extract::State<crate::AppState>,
    session: Session,
    body: Bytes,
) -> Response {
    if body.len() > MAX_SIZE_REQUEST {
        return request_error("limit", "the request is too large", Some("maxSizeRequest"));
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return request_error("notJSON", &format!("not JSON: {e}"), None),
    };
    match run(&app, &session, &request, body.len()).await {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => request_error(e.kind, &e.detail, e.limit),
    }
}

/// Runs one request object of `size` bytes (over HTTP or a WebSocket);
/// the Response object.
pub(crate) async fn run(
    app: &crate::AppState,
    session: &Session,
    request: &Value,
    size: usize,
) -> Result<Value, RequestError> {
    if size > MAX_SIZE_REQUEST {
        return Err(RequestError {
            limit: Some("maxSizeRequest"),
            ..RequestError::new("limit", "the request is too large")
        });
    }
    let (using, calls, created_ids) =
        parse_request(request).map_err(|d| RequestError::new("notRequest", d))?;
    for capability in &using {
        if ![CORE, MAIL, SUBMISSION, QUOTA, VACATION].contains(&capability.as_str()) {
            return Err(RequestError::new(
                "unknownCapability",
                format!("unknown capability {capability}"),
            ));
        }
    }
    if calls.len() > MAX_CALLS_IN_REQUEST {
        return Err(RequestError {
            limit: Some("maxCallsInRequest"),
            ..RequestError::new(
                "limit",
                format!("at most {MAX_CALLS_IN_REQUEST} method calls in one request"),
            )
        });
    }
    let account = account_id(session.address.as_str());
    let mut responses: Vec<Value> = Vec::new();
    // Creation id → id, for `#creationId` references (RFC 8620 §5.3).
    let mut created: Map<String, Value> = created_ids
        .as_ref()
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (name, args, call_id) in calls {
        let needs = if name.starts_with("Identity/") || name.starts_with("EmailSubmission/") {
            SUBMISSION
        } else if name.starts_with("Quota/") {
            QUOTA
        } else if name.starts_with("VacationResponse/") {
            VACATION
        } else {
            MAIL
        };
        let result = match resolve_references(args, &responses) {
            Ok(_) if name != "Core/echo" && !using.iter().any(|u| u == needs) => {
                Err(MethodError::new(
                    "unknownMethod",
                    format!("{name} needs the {needs} capability in using"),
                ))
            }
            Ok(args) if name == "EmailSubmission/set" => {
                let args = with_created_ids(args, &created);
                let r = match check_account(&args, &account) {
                    Ok(()) => {
                        submission::submission_set(session, &account, &args, &created, app.submit())
                            .await
                    }
                    Err(e) => Err(e),
                };
                // The implicit Email/set of onSuccess…Email, answered under
                // the same call id.
                match r {
                    Ok((v, touched)) => {
                        let then = submission::follow_up(&account, &args, &v, &touched);
                        record_created(&mut created, &v);
                        responses.push(json!([name, v, call_id]));
                        if let Some(then) = then {
                            match email_set(session, &account, &then).await {
                                Ok(v) => responses.push(json!(["Email/set", v, call_id])),
                                Err(e) => responses.push(json!(["error", e.to_value(), call_id])),
                            }
                        }
                        continue;
                    }
                    Err(e) => Err(e),
                }
            }
            Ok(args) => call(session, &account, &name, with_created_ids(args, &created)).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(v) => {
                record_created(&mut created, &v);
                responses.push(json!([name, v, call_id]))
            }
            Err(e) => responses.push(json!(["error", e.to_value(), call_id])),
        }
    }
    let mut out = json!({ "methodResponses": responses, "sessionState": SESSION_STATE });
    if created_ids.is_some() {
        out["createdIds"] = Value::Object(created);
    }
    Ok(out)
}

/// Replaces `#creationId` references among the ids a call names — `ids`,
/// `emailIds`, `blobIds`, `destroy` and the keys of `update` — with the
/// ids created earlier in the request (RFC 8620 §5.3); an unknown
/// reference stays as it is, and is answered as not found.
fn with_created_ids(
    mut args: Map<String, Value>,
    created: &Map<String, Value>,
) -> Map<String, Value> {
    let resolve = |id: &str| -> Option<Value> { created.get(id.strip_prefix('#')?).cloned() };
    for key in ["ids", "emailIds", "blobIds", "destroy"] {
        if let Some(Value::Array(list)) = args.get_mut(key) {
            for v in list.iter_mut() {
                if let Some(id) = v.as_str().and_then(resolve) {
                    *v = id;
                }
            }
        }
    }
    if let Some(Value::Object(update)) = args.get_mut("update") {
        let patched: Map<String, Value> = std::mem::take(update)
            .into_iter()
            .map(
                |(k, v)| match resolve(&k).as_ref().and_then(Value::as_str) {
                    Some(id) => (id.to_string(), v),
                    None => (k, v),
                },
            )
            .collect();
        *update = patched;
    }
    args
}

/// Notes the ids of what a /set response created, for `#creationId`
/// references in later calls.
fn record_created(created: &mut Map<String, Value>, response: &Value) {
    if let Some(Value::Object(made)) = response.get("created") {
        for (cid, o) in made {
            if let Some(id) = o.get("id") {
                created.insert(cid.clone(), id.clone());
            }
        }
    }
}

type Call = (String, Map<String, Value>, String);

/// A parsed request: capabilities used, method calls, createdIds.
type Request = (Vec<String>, Vec<Call>, Option<Value>);

/// The request object's shape (RFC 8620 §3.3), or why it is not one.
fn parse_request(v: &Value) -> Result<Request, String> {
    let obj = v.as_object().ok_or("the request must be an object")?;
    let using = obj
        .get("using")
        .and_then(Value::as_array)
        .ok_or("using must be an array of capabilities")?
        .iter()
        .map(|c| c.as_str().map(str::to_string))
        .collect::<Option<Vec<_>>>()
        .ok_or("using must hold strings")?;
    let mut calls = Vec::new();
    for c in obj
        .get("methodCalls")
        .and_then(Value::as_array)
        .ok_or("methodCalls must be an array")?
    {
        match c.as_array().map(Vec::as_slice) {
            Some([Value::String(name), Value::Object(args), Value::String(id)]) => {
                calls.push((name.clone(), args.clone(), id.clone()));
            }
            _ => return Err("each method call is [name, arguments, call id]".into()),
        }
    }
    let created = match obj.get("createdIds") {
        None => None,
        Some(v @ Value::Object(_)) => Some(v.clone()),
        Some(_) => return Err("createdIds must be an object".into()),
    };
    Ok((using, calls, created))
}

/// Replaces `#name` arguments by what their result reference points at
/// (RFC 8620 §3.7).
fn resolve_references(
    args: Map<String, Value>,
    responses: &[Value],
) -> Result<Map<String, Value>, MethodError> {
    let mut out = Map::new();
    for (k, v) in &args {
        let Some(plain) = k.strip_prefix('#') else {
            continue;
        };
        if args.contains_key(plain) {
            return Err(MethodError::invalid(format!(
                "both {plain} and #{plain} are given"
            )));
        }
        let bad = |why: &str| MethodError::new("invalidResultReference", why.to_string());
        let r = v
            .as_object()
            .ok_or_else(|| bad("a reference is an object"))?;
        let (Some(Value::String(of)), Some(Value::String(name)), Some(Value::String(path))) =
            (r.get("resultOf"), r.get("name"), r.get("path"))
        else {
            return Err(bad("a reference has resultOf, name and path"));
        };
        let target = responses
            .iter()
            .find(|resp| resp[2] == json!(of))
            .ok_or_else(|| bad(&format!("no earlier call {of}")))?;
        if target[0] != json!(name) {
            return Err(bad(&format!(
                "call {of} answered {} and not {name}",
                target[0]
            )));
        }
        let value = pointer(&target[1], path)
            .ok_or_else(|| bad(&format!("{path} points at nothing in {name}")))?;
        out.insert(plain.to_string(), value);
    }
    for (k, v) in args {
        if !k.starts_with('#') {
            out.insert(k, v);
        }
    }
    Ok(out)
}

/// A JSON pointer with JMAP's `*` (map over an array, flattening arrays).
fn pointer(v: &Value, path: &str) -> Option<Value> {
    if path.is_empty() {
        return Some(v.clone());
    }
    let rest = path.strip_prefix('/')?;
    let (token, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let token = token.replace("~1", "/").replace("~0", "~");
    match v {
        Value::Array(items) if token == "*" => {
            let mut out = Vec::new();
            for item in items {
                match pointer(item, tail)? {
                    Value::Array(inner) => out.extend(inner),
                    other => out.push(other),
                }
            }
            Some(Value::Array(out))
        }
        Value::Array(items) => pointer(items.get(token.parse::<usize>().ok()?)?, tail),
        Value::Object(map) => pointer(map.get(&token)?, tail),
        _ => None,
    }
}

async fn call(
    session: &Session,
    account: &str,
    name: &str,
    args: Map<String, Value>,
) -> MethodResult {
    const METHODS: [&str; 29] = [
        "Mailbox/get",
        "Mailbox/set",
        "Mailbox/query",
        "Mailbox/queryChanges",
        "Mailbox/changes",
        "Thread/get",
        "Thread/changes",
        "Email/query",
        "Email/queryChanges",
        "Email/get",
        "Email/changes",
        "Email/set",
        "Email/import",
        "Email/parse",
        "Email/copy",
        "SearchSnippet/get",
        "VacationResponse/get",
        "VacationResponse/set",
        "Quota/get",
        "Quota/changes",
        "Quota/query",
        "Identity/get",
        "Identity/changes",
        "Identity/set",
        "EmailSubmission/set",
        "EmailSubmission/get",
        "EmailSubmission/changes",
        "EmailSubmission/query",
        "EmailSubmission/queryChanges",
    ];
    if name == "Core/echo" {
        return Ok(Value::Object(args));
    }
    if !METHODS.contains(&name) {
        return Err(MethodError::new(
            "unknownMethod",
            format!("{name} is not a method here"),
        ));
    }
    check_account(&args, account)?;
    match name {
        "Mailbox/get" => mailbox_get(session, account, &args).await,
        "Email/query" => email_query(session, account, &args).await,
        "Email/get" => email_get(session, account, &args).await,
        "Mailbox/changes" => changes(session, account, &args, Kind::Mailbox).await,
        "Email/changes" => changes(session, account, &args, Kind::Email).await,
        "Thread/get" => thread_get(session, account, &args).await,
        "Thread/changes" => changes(session, account, &args, Kind::Thread).await,
        "Email/set" => email_set(session, account, &args).await,
        "Email/import" => blob::email_import(session, account, &args).await,
        "Email/parse" => blob::email_parse(session, account, &args).await,
        // Copies go between two accounts (RFC 8620 §5.4), and a session
        // has one: there is no other account to copy from.
        "Email/copy" => match args.get("fromAccountId").and_then(Value::as_str) {
            Some(from) if from == account => Err(MethodError::invalid(
                "fromAccountId must differ from accountId (use Email/set to file an email in more mailboxes)",
            )),
            Some(_) => Err(MethodError::new("fromAccountNotFound", "no such account")),
            None => Err(MethodError::invalid("fromAccountId is required")),
        },
        "SearchSnippet/get" => snippet::snippet_get(session, account, &args).await,
        "VacationResponse/get" => vacation::get(session, account, &args).await,
        "VacationResponse/set" => vacation::set(session, account, &args).await,
        "Quota/get" => quota::quota_get(session, account, &args).await,
        "Quota/changes" => quota::quota_changes(session, account, &args).await,
        "Quota/query" => quota::quota_query(session, account, &args).await,
        "Identity/get" => identity::get(session, account, &args).await,
        "Identity/changes" => identity::changes(session, account, &args).await,
        "Identity/set" => identity::set(session, account, &args).await,
        "EmailSubmission/get" => submission::get(session, account, &args).await,
        "EmailSubmission/changes" => submission::changes(session, account, &args).await,
        "EmailSubmission/query" => submission::query(session, account, &args).await,
        // The query's state is the records' state, but the order of a
        // query is not logged: clients query again.
        "EmailSubmission/queryChanges" => Err(MethodError::new(
            "cannotCalculateChanges",
            "EmailSubmission queries are not tracked: query again",
        )),
        "Mailbox/query" => mailbox_query(session, account, &args).await,
        "Mailbox/set" => mailbox_set::mailbox_set(session, account, &args).await,
        "Mailbox/queryChanges" => {
            query_changes::mailbox_query_changes(session, account, &args).await
        }
        "Email/queryChanges" => query_changes::email_query_changes(session, account, &args).await,
        _ => Err(MethodError::new(
            "unknownMethod",
            format!("{name} is not a method here"),
        )),
    }
}

/// The `accountId` argument names this session's account.
fn check_account(args: &Map<String, Value>, account: &str) -> Result<(), MethodError> {
    match args.get("accountId") {
        Some(Value::String(a)) if a == account => Ok(()),
        Some(Value::String(_)) => Err(MethodError::new("accountNotFound", "no such account")),
        _ => Err(MethodError::invalid("accountId is required")),
    }
}

fn link_error(p: crate::Problem) -> MethodError {
    MethodError::server(p.detail().to_string())
}

async fn folders(session: &Session) -> Result<Vec<Folder>, MethodError> {
    match session.request(|s| Op::Folders { session: s }).await {
        Ok(Reply::Folders(f)) => Ok(f),
        Ok(_) => Err(MethodError::server("unexpected reply")),
        Err(p) => Err(link_error(p)),
    }
}

/// What changed since `since` (the mailbox's MODSEQ log); `current` is
/// the state now.
async fn changes_since(
    session: &Session,
    since: cofre_storage::ModSeq,
) -> Result<cofre_storage::mailbox::Changes, MethodError> {
    match session.request(|s| Op::Changes { session: s, since }).await {
        Ok(Reply::Changes(c)) => Ok(c),
        Ok(_) => Err(MethodError::server("unexpected reply")),
        Err(p) => Err(link_error(p)),
    }
}

/// The state of the account's mail: the mailbox's MODSEQ, which every
/// change of an email or folder advances (so one state serves Mailbox,
/// Email and Thread).
async fn state(session: &Session) -> Result<String, MethodError> {
    // Asking from the top of the log reads no changes, only the current
    // MODSEQ.
    Ok(changes_since(session, i64::MAX as u64)
        .await?
        .current
        .to_string())
}

/// Which objects a `/changes` call is about.
#[derive(Clone, Copy)]
enum Kind {
    Mailbox,
    Email,
    Thread,
}

/// `Mailbox/changes`, `Thread/changes` and `Email/changes` (RFC 8620
/// §5.2).
async fn changes(
    session: &Session,
    account: &str,
    args: &Map<String, Value>,
    kind: Kind,
) -> MethodResult {
    let since = args
        .get("sinceState")
        .and_then(Value::as_str)
        .ok_or_else(|| MethodError::invalid("sinceState is required"))?;
    let max = match args.get("maxChanges") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n) if n > 0 => Some(n as usize),
            _ => return Err(MethodError::invalid("maxChanges is a positive integer")),
        },
    };
    let cannot = || {
        MethodError::new(
            "cannotCalculateChanges",
            "unknown or future state: fetch everything again",
        )
    };
    let since: cofre_storage::ModSeq = since.parse().map_err(|_| cannot())?;
    let c = changes_since(session, since).await?;
    // From the future, or from before a restore put the mailbox back.
    if since > c.current || since < c.log_since {
        return Err(cannot());
    }
    if matches!(kind, Kind::Thread) && since < c.threads_since {
        // The log has no thread entries from before this mailbox's
        // upgrade; an answer would be incomplete.
        return Err(cannot());
    }
    let (prefix, created, updated, destroyed) = match kind {
        Kind::Mailbox => (
            'm',
            ids_of(&c.folders_created, |f| f.0),
            ids_of(&c.folders_updated, |f| f.0),
            ids_of(&c.folders_destroyed, |f| f.0),
        ),
        Kind::Email => (
            'e',
            ids_of(&c.emails_created, |e| e.0),
            ids_of(&c.emails_updated, |e| e.0),
            ids_of(&c.emails_destroyed, |e| e.0),
        ),
        Kind::Thread => (
            't',
            ids_of(&c.threads_created, |t| t.0),
            ids_of(&c.threads_updated, |t| t.0),
            ids_of(&c.threads_destroyed, |t| t.0),
        ),
    };
    if let Some(max) = max
        && created.len() + updated.len() + destroyed.len() > max
    {
        // The log answers from one state to now; a partial answer would
        // need an intermediate state, so the client starts over instead.
        return Err(MethodError::new(
            "cannotCalculateChanges",
            format!("more than maxChanges ({max}) changes: fetch everything again"),
        ));
    }
    let fmt =
        |v: Vec<i64>| -> Vec<String> { v.into_iter().map(|n| format!("{prefix}{n}")).collect() };
    let mut out = json!({
        "accountId": account,
        "oldState": since.to_string(),
        "newState": c.current.to_string(),
        "hasMoreChanges": false,
        "created": fmt(created),
        "updated": fmt(updated),
        "destroyed": fmt(destroyed),
    });
    if matches!(kind, Kind::Mailbox) {
        out["updatedProperties"] = Value::Null;
    }
    Ok(out)
}

fn ids_of<T>(v: &[T], f: impl Fn(&T) -> i64) -> Vec<i64> {
    v.iter().map(f).collect()
}

async fn search(
    session: &Session,
    query: Query,
) -> Result<Vec<cofre_storage::mailbox::SearchHit>, MethodError> {
    match session
        .request(|s| Op::Search {
            session: s,
            query: query.clone(),
        })
        .await
    {
        Ok(Reply::Hits(h)) => Ok(h),
        Ok(_) => Err(MethodError::server("unexpected reply")),
        Err(p) => Err(link_error(p)),
    }
}

/// A list-of-strings argument: `None` when absent or null.
fn string_list(args: &Map<String, Value>, key: &str) -> Result<Option<Vec<String>>, MethodError> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .map(Some)
            .ok_or_else(|| MethodError::invalid(format!("{key} must be strings"))),
        Some(_) => Err(MethodError::invalid(format!(
            "{key} must be an array or null"
        ))),
    }
}

/// The `ids` argument: `None` for null (all), else the ids.
fn ids_arg(args: &Map<String, Value>) -> Result<Option<Vec<String>>, MethodError> {
    string_list(args, "ids")
}

/// The `properties` argument, or `default`.
fn properties_arg(args: &Map<String, Value>, default: &[&str]) -> Result<Vec<String>, MethodError> {
    Ok(string_list(args, "properties")?
        .unwrap_or_else(|| default.iter().map(|s| s.to_string()).collect()))
}

fn prefixed(prefix: char, id: &str) -> Option<i64> {
    id.strip_prefix(prefix)?.parse().ok()
}

const MAILBOX_PROPERTIES: [&str; 11] = [
    "id",
    "name",
    "parentId",
    "role",
    "sortOrder",
    "totalEmails",
    "unreadEmails",
    "totalThreads",
    "unreadThreads",
    "myRights",
    "isSubscribed",
];

async fn mailbox_get(session: &Session, account: &str, args: &Map<String, Value>) -> MethodResult {
    // The state is read before the data: a change in between shows up
    // again at the next /changes, never goes missing.
    let st = state(session).await?;
    let all = folders(session).await?;
    let ids = ids_arg(args)?;
    let props = properties_arg(args, &MAILBOX_PROPERTIES)?;
    if let Some(p) = props
        .iter()
        .find(|p| !MAILBOX_PROPERTIES.contains(&p.as_str()))
    {
        return Err(MethodError::invalid(format!(
            "unknown Mailbox property {p}"
        )));
    }
    let wanted: Vec<&Folder> = match &ids {
        None => all.iter().collect(),
        Some(ids) => {
            if ids.len() > MAX_OBJECTS_IN_GET {
                return Err(MethodError::new("requestTooLarge", "too many ids"));
            }
            ids.iter()
                .filter_map(|id| all.iter().find(|f| prefixed('m', id) == Some(f.id.0)))
                .collect()
        }
    };
    let not_found: Vec<&String> = ids
        .iter()
        .flatten()
        .filter(|id| !all.iter().any(|f| prefixed('m', id) == Some(f.id.0)))
        .collect();
    let counts = if props.iter().any(|p| p.ends_with("Threads")) {
        thread_counts(session).await?
    } else {
        Vec::new()
    };
    let threads = |f: FolderId| {
        counts
            .iter()
            .find(|(g, ..)| *g == f)
            .map_or((0, 0), |(_, t, u)| (*t, *u))
    };
    let mut list = Vec::new();
    for f in wanted {
        let mut m = Map::new();
        for p in &props {
            let v = match p.as_str() {
                "id" => json!(format!("m{}", f.id.0)),
                "name" => json!(mailbox_name(f)),
                "parentId" => {
                    parent_of(f, &all).map_or(Value::Null, |g| json!(format!("m{}", g.0)))
                }
                "role" => f.role.map_or(Value::Null, |r| json!(r.as_str())),
                "sortOrder" => json!(sort_order(f)),
                "totalEmails" => json!(f.total),
                "unreadEmails" => json!(f.unseen),
                "totalThreads" => json!(threads(f.id).0),
                "unreadThreads" => json!(threads(f.id).1),
                "myRights" => rights(f),
                "isSubscribed" => json!(f.subscribed),
                _ => continue,
            };
            m.insert(p.clone(), v);
        }
        // The id is always returned (RFC 8620 §5.1).
        m.entry("id")
            .or_insert_with(|| json!(format!("m{}", f.id.0)));
        list.push(Value::Object(m));
    }
    Ok(json!({
        "accountId": account,
        "state": st,
        "list": list,
        "notFound": not_found,
    }))
}

/// `Thread/get` (RFC 8621 §3.1): each thread's emails, oldest first.
async fn thread_get(session: &Session, account: &str, args: &Map<String, Value>) -> MethodResult {
    let st = state(session).await?;
    let Some(ids) = ids_arg(args)? else {
        return Err(MethodError::new(
            "requestTooLarge",
            "name the threads: every thread of a mailbox is not fetched at once",
        ));
    };
    if ids.len() > MAX_OBJECTS_IN_GET {
        return Err(MethodError::new("requestTooLarge", "too many ids"));
    }
    let props = properties_arg(args, &["id", "emailIds"])?;
    if let Some(p) = props.iter().find(|p| *p != "id" && *p != "emailIds") {
        return Err(MethodError::invalid(format!("unknown Thread property {p}")));
    }
    let (mut list, mut not_found) = (Vec::new(), Vec::new());
    for id in ids {
        let Some(thread) = prefixed('t', &id) else {
            not_found.push(id);
            continue;
        };
        let query = Query {
            sort: vec![Sort {
                key: SortKey::ReceivedAt,
                ascending: true,
            }],
            ..Query::everywhere(Filter::Threads(vec![ThreadId(thread)]))
        };
        let hits = search(session, query).await?;
        if hits.is_empty() {
            not_found.push(id);
            continue;
        }
        let mut t = json!({ "id": id });
        if props.iter().any(|p| p == "emailIds") {
            let emails: Vec<String> = hits.iter().map(|h| format!("e{}", h.email_id.0)).collect();
            t["emailIds"] = json!(emails);
        }
        list.push(t);
    }
    Ok(json!({ "accountId": account, "state": st, "list": list, "notFound": not_found }))
}

/// What the owner may do with a mailbox (RFC 8621 §2): everything, but
/// a mailbox with a role keeps its name and is not destroyed.
fn rights(f: &Folder) -> Value {
    json!({
        "mayReadItems": true, "mayAddItems": true, "mayRemoveItems": true,
        "maySetSeen": true, "maySetKeywords": true, "mayCreateChild": true,
        "mayRename": f.role.is_none(), "mayDelete": f.role.is_none(), "maySubmit": true,
    })
}

/// A folder's own name (the last part of its path).
fn mailbox_name(f: &Folder) -> &str {
    f.name.rsplit('/').next().unwrap_or(&f.name)
}

/// The folder one level up, if it exists.
fn parent_of(f: &Folder, all: &[Folder]) -> Option<FolderId> {
    let (parent, _) = f.name.rsplit_once('/')?;
    all.iter().find(|g| g.name == parent).map(|g| g.id)
}

/// Folders with roles first, in the order of the roles; the rest after.
fn sort_order(f: &Folder) -> usize {
    f.role.map_or(10, |r| {
        cofre_storage::Role::ALL
            .iter()
            .position(|x| *x == r)
            .unwrap_or(0)
    })
}

/// `Mailbox/query` (RFC 8621 §2.3): filters on parent, name, role and
/// subscription; sorts by sortOrder and name.
async fn mailbox_query(
    session: &Session,
    account: &str,
    args: &Map<String, Value>,
) -> MethodResult {
    let st = state(session).await?;
    let all = folders(session).await?;
    let flag = |k: &str| matches!(args.get(k), Some(Value::Bool(true)));
    let (sort_as_tree, filter_as_tree) = (flag("sortAsTree"), flag("filterAsTree"));
    let filter = match args.get("filter") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) if !m.contains_key("operator") => m.clone(),
        Some(_) => {
            return Err(MethodError::new(
                "unsupportedFilter",
                "Mailbox/query takes one FilterCondition",
            ));
        }
    };
    let mut hits: Vec<&Folder> = Vec::new();
    'folders: for f in &all {
        for (k, v) in &filter {
            let keep = match (k.as_str(), v) {
                ("parentId", Value::Null) => parent_of(f, &all).is_none(),
                ("parentId", Value::String(p)) => {
                    parent_of(f, &all).map(|g| format!("m{}", g.0)).as_deref() == Some(p)
                }
                ("name", Value::String(n)) => {
                    mailbox_name(f).to_lowercase().contains(&n.to_lowercase())
                }
                ("role", Value::Null) => f.role.is_none(),
                ("role", Value::String(r)) => f.role.map(|x| x.as_str()) == Some(r.as_str()),
                ("hasAnyRole", Value::Bool(b)) => f.role.is_some() == *b,
                ("isSubscribed", Value::Bool(b)) => f.subscribed == *b,
                _ => {
                    return Err(MethodError::new(
                        "unsupportedFilter",
                        format!("no Mailbox filter {k} with that value"),
                    ));
                }
            };
            if !keep {
                continue 'folders;
            }
        }
        hits.push(f);
    }
    if let Some(Value::Array(sort)) = args.get("sort") {
        for c in sort.iter().rev() {
            let asc = c
                .get("isAscending")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            match c.get("property").and_then(Value::as_str) {
                Some("name") => hits.sort_by(|a, b| {
                    let o = mailbox_name(a).cmp(mailbox_name(b));
                    if asc { o } else { o.reverse() }
                }),
                Some("sortOrder") => hits.sort_by(|a, b| {
                    let o = sort_order(a).cmp(&sort_order(b));
                    if asc { o } else { o.reverse() }
                }),
                other => {
                    return Err(MethodError::new(
                        "unsupportedSort",
                        format!("cannot sort Mailboxes by {other:?}"),
                    ));
                }
            }
        }
    }
    // The parent of a folder by its path, when that folder exists.
    let parent_name = |f: &Folder| f.name.rsplit_once('/').map(|(p, _)| p.to_string());
    if filter_as_tree {
        // Only folders whose every ancestor also matched (RFC 8621 §2.3).
        let kept: std::collections::HashSet<&str> = hits.iter().map(|f| f.name.as_str()).collect();
        let exists: std::collections::HashSet<&str> = all.iter().map(|f| f.name.as_str()).collect();
        hits.retain(|f| {
            let mut name = f.name.as_str();
            while let Some((up, _)) = name.rsplit_once('/') {
                if exists.contains(up) && !kept.contains(up) {
                    return false;
                }
                name = up;
            }
            true
        });
    }
    if sort_as_tree {
        // Parents before their children, siblings in the sort's order; a
        // folder whose parent is not in the results is a root.
        let names: std::collections::HashSet<String> =
            hits.iter().map(|f| f.name.clone()).collect();
        let is_root = |f: &Folder| parent_name(f).is_none_or(|p| !names.contains(&p));
        let mut tree: Vec<&Folder> = Vec::with_capacity(hits.len());
        let mut stack: Vec<&Folder> = hits.iter().rev().copied().filter(|f| is_root(f)).collect();
        while let Some(f) = stack.pop() {
            tree.push(f);
            let children = hits
                .iter()
                .rev()
                .copied()
                .filter(|c| parent_name(c).as_deref() == Some(f.name.as_str()));
            stack.extend(children);
        }
        hits = tree;
    }
    let total = hits.len();
    let ids = hits.iter().map(|f| format!("m{}", f.id.0)).collect();
    let (position, page) = window(ids, args)?;
    let mut out = json!({
        "accountId": account,
        "queryState": st,
        "canCalculateChanges": true,
        "position": position,
        "ids": page,
    });
    if matches!(args.get("calculateTotal"), Some(Value::Bool(true))) {
        out["total"] = json!(total);
    }
    Ok(out)
}

/// The page of a whole query's `ids` that `position` or `anchor` and
/// `anchorOffset`, and `limit` ask for (RFC 8620 §5.5): the index of its
/// first id and the ids.
fn window(
    ids: Vec<String>,
    args: &Map<String, Value>,
) -> Result<(usize, Vec<String>), MethodError> {
    let int = |k: &str| -> Result<Option<i64>, MethodError> {
        match args.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| MethodError::invalid(format!("{k} is an integer"))),
        }
    };
    let n = ids.len() as i64;
    let start = match args.get("anchor") {
        None | Some(Value::Null) => {
            let p = int("position")?.unwrap_or(0);
            // A negative position counts from the end.
            if p < 0 { (n + p).max(0) } else { p.min(n) }
        }
        Some(Value::String(a)) => {
            let at = ids.iter().position(|i| i == a).ok_or_else(|| {
                MethodError::new("anchorNotFound", "the anchor is not in the results")
            })?;
            (at as i64 + int("anchorOffset")?.unwrap_or(0)).clamp(0, n)
        }
        Some(_) => return Err(MethodError::invalid("anchor is an id")),
    };
    let end = match int("limit")? {
        Some(l) if l < 0 => return Err(MethodError::invalid("limit is not negative")),
        Some(l) => (start + l).min(n),
        None => n,
    };
    let page = ids[start as usize..end as usize].to_vec();
    Ok((start as usize, page))
}

/// Threads with at least one email in `folder` matching `filter`.
/// Each folder's (threads, unread threads).
async fn thread_counts(session: &Session) -> Result<Vec<(FolderId, u64, u64)>, MethodError> {
    match session.request(|s| Op::ThreadCounts { session: s }).await {
        Ok(Reply::ThreadCounts(c)) => Ok(c),
        Ok(_) => Err(MethodError::server("unexpected reply")),
        Err(p) => Err(link_error(p)),
    }
}

fn date_arg(v: &Value, what: &str) -> Result<i64, MethodError> {
    v.as_str()
        .and_then(cofre_storage::time::parse_iso)
        .ok_or_else(|| MethodError::invalid(format!("{what} must be a UTCDate")))
}

fn keyword_arg(v: &Value) -> Result<Keyword, MethodError> {
    v.as_str()
        .and_then(|s| Keyword::try_from(s).ok())
        .ok_or_else(|| MethodError::invalid("a keyword must be a valid keyword string"))
}

fn text_arg(v: &Value) -> Result<String, MethodError> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| MethodError::invalid("a text filter takes a string"))
}

/// An Email/query filter (RFC 8621 §4.4.1) as a storage filter.
fn filter_of(v: &Value) -> Result<Filter, MethodError> {
    let obj = v
        .as_object()
        .ok_or_else(|| MethodError::invalid("a filter is an object"))?;
    if let Some(op) = obj.get("operator") {
        let conditions = obj
            .get("conditions")
            .and_then(Value::as_array)
            .ok_or_else(|| MethodError::invalid("an operator needs conditions"))?
            .iter()
            .map(filter_of)
            .collect::<Result<Vec<_>, _>>()?;
        return match op.as_str() {
            Some("AND") => Ok(Filter::And(conditions)),
            Some("OR") => Ok(Filter::Or(conditions)),
            Some("NOT") => Ok(Filter::Not(Box::new(Filter::Or(conditions)))),
            _ => Err(MethodError::invalid("operator is AND, OR or NOT")),
        };
    }
    let mut all = Vec::new();
    for (k, v) in obj {
        let f = match k.as_str() {
            "inMailbox" => Filter::InFolder(FolderId(
                v.as_str()
                    .and_then(|s| prefixed('m', s))
                    .ok_or_else(|| MethodError::invalid("inMailbox takes a Mailbox id"))?,
            )),
            "inMailboxOtherThan" => Filter::InFolderOtherThan(
                v.as_array()
                    .ok_or_else(|| MethodError::invalid("inMailboxOtherThan takes ids"))?
                    .iter()
                    .map(|m| m.as_str().and_then(|s| prefixed('m', s)).map(FolderId))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| MethodError::invalid("inMailboxOtherThan takes Mailbox ids"))?,
            ),
            "before" => Filter::ReceivedBefore(date_arg(v, "before")?),
            "after" => Filter::ReceivedSince(date_arg(v, "after")?),
            "minSize" => {
                let n = v
                    .as_u64()
                    .ok_or_else(|| MethodError::invalid("minSize takes a number"))?;
                Filter::Larger(n.saturating_sub(1))
            }
            "maxSize" => Filter::Smaller(
                v.as_u64()
                    .ok_or_else(|| MethodError::invalid("maxSize takes a number"))?,
            ),
            "allInThreadHaveKeyword" => Filter::AllInThreadHaveKeyword(keyword_arg(v)?),
            "someInThreadHaveKeyword" => Filter::SomeInThreadHaveKeyword(keyword_arg(v)?),
            "noneInThreadHaveKeyword" => Filter::NoneInThreadHaveKeyword(keyword_arg(v)?),
            "hasKeyword" => Filter::Keyword(keyword_arg(v)?),
            "notKeyword" => Filter::Not(Box::new(Filter::Keyword(keyword_arg(v)?))),
            "hasAttachment" => Filter::HasAttachment(
                v.as_bool()
                    .ok_or_else(|| MethodError::invalid("hasAttachment takes a boolean"))?,
            ),
            "text" => Filter::Words(TextField::Text, text_arg(v)?),
            "from" => Filter::Words(TextField::From, text_arg(v)?),
            "to" => Filter::Words(TextField::To, text_arg(v)?),
            "cc" => Filter::Words(TextField::Cc, text_arg(v)?),
            "bcc" => Filter::Words(TextField::Bcc, text_arg(v)?),
            "subject" => Filter::Words(TextField::Subject, text_arg(v)?),
            "body" => Filter::Words(TextField::Body, text_arg(v)?),
            "header" => match v.as_array().map(Vec::as_slice) {
                Some([Value::String(name)]) => Filter::Header(name.clone(), String::new()),
                Some([Value::String(name), Value::String(value)]) => {
                    Filter::Header(name.clone(), value.clone())
                }
                _ => return Err(MethodError::invalid("header takes [name] or [name, value]")),
            },
            other => {
                return Err(MethodError::new(
                    "unsupportedFilter",
                    format!("no filter {other}"),
                ));
            }
        };
        all.push(f);
    }
    Ok(match all.len() {
        0 => Filter::All,
        1 => all.remove(0),
        _ => Filter::And(all),
    })
}

fn sort_of(v: &Value) -> Result<Sort, MethodError> {
    let obj = v
        .as_object()
        .ok_or_else(|| MethodError::invalid("a sort is a Comparator object"))?;
    let ascending = match obj.get("isAscending") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(MethodError::invalid("isAscending is a boolean")),
    };
    let key = match obj.get("property").and_then(Value::as_str) {
        Some("receivedAt") => SortKey::ReceivedAt,
        Some("sentAt") => SortKey::SentAt,
        Some("size") => SortKey::Size,
        Some("from") => SortKey::From,
        Some("to") => SortKey::To,
        Some("subject") => SortKey::Subject,
        Some("hasKeyword") => {
            SortKey::Keyword(keyword_arg(obj.get("keyword").ok_or_else(|| {
                MethodError::invalid("hasKeyword sorting needs a keyword")
            })?)?)
        }
        Some(other) => {
            return Err(MethodError::new(
                "unsupportedSort",
                format!("cannot sort by {other}"),
            ));
        }
        None => return Err(MethodError::invalid("a Comparator needs a property")),
    };
    Ok(Sort { key, ascending })
}

/// The filter, sort (newest first unless asked) and thread collapsing of
/// an `Email/query` or `Email/queryChanges`, as a storage query.
fn email_query_of(args: &Map<String, Value>) -> Result<Query, MethodError> {
    let filter = match args.get("filter") {
        None | Some(Value::Null) => Filter::All,
        Some(f) => filter_of(f)?,
    };
    let mut sort: Vec<Sort> = match args.get("sort") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.iter().map(sort_of).collect::<Result<_, _>>()?,
        Some(_) => return Err(MethodError::invalid("sort is an array")),
    };
    if sort.is_empty() {
        sort.push(Sort {
            key: SortKey::ReceivedAt,
            ascending: false,
        });
    }
    Ok(Query {
        folder: None,
        filter,
        sort,
        collapse_threads: matches!(args.get("collapseThreads"), Some(Value::Bool(true))),
        position: 0,
        limit: None,
    })
}

async fn email_query(session: &Session, account: &str, args: &Map<String, Value>) -> MethodResult {
    let mut query = email_query_of(args)?;
    let int = |k: &str| -> Result<Option<i64>, MethodError> {
        match args.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| MethodError::invalid(format!("{k} is an integer"))),
        }
    };
    let position = int("position")?.unwrap_or(0);
    let limit = int("limit")?;
    if limit.is_some_and(|l| l < 0) {
        return Err(MethodError::invalid("limit cannot be negative"));
    }
    let anchor = match args.get("anchor") {
        None | Some(Value::Null) => None,
        Some(Value::String(a)) => Some(a.clone()),
        Some(_) => return Err(MethodError::invalid("anchor is an Email id")),
    };
    let anchor_offset = int("anchorOffset")?.unwrap_or(0);
    let calculate_total = matches!(args.get("calculateTotal"), Some(Value::Bool(true)));
    let st = state(session).await?;
    // A plain page (no anchor, no count from the end, no total) is cut by
    // the store, which stops reading at the page's end; anything else
    // needs every hit.
    if anchor.is_none()
        && position >= 0
        && !calculate_total
        && let Some(l) = limit
    {
        query.position = position as usize;
        query.limit = Some(l as usize);
        let hits = search(session, query.clone()).await?;
        if !hits.is_empty() || position == 0 {
            let ids: Vec<String> = hits.iter().map(|h| format!("e{}", h.email_id.0)).collect();
            return Ok(json!({
                "accountId": account,
                "queryState": st,
                "canCalculateChanges": true,
                "position": position,
                "ids": ids,
                "limit": l,
            }));
        }
        // Past the end: the position is clamped to the total, below.
        query.position = 0;
        query.limit = None;
    }
    let hits = search(session, query).await?;
    let total = hits.len();
    // With an anchor, the window starts anchorOffset from it; a negative
    // position counts from the end (RFC 8620 §5.5).
    let start = if let Some(anchor) = &anchor {
        let at = prefixed('e', anchor)
            .and_then(|n| hits.iter().position(|h| h.email_id.0 == n))
            .ok_or_else(|| {
                MethodError::new("anchorNotFound", format!("{anchor} is not in the results"))
            })?;
        (at as i64 + anchor_offset).clamp(0, total as i64) as usize
    } else if position < 0 {
        total.saturating_sub(position.unsigned_abs() as usize)
    } else {
        (position as usize).min(total)
    };
    let end = limit.map_or(total, |l| (start + l as usize).min(total));
    let ids: Vec<String> = hits[start..end]
        .iter()
        .map(|h| format!("e{}", h.email_id.0))
        .collect();
    let mut out = json!({
        "accountId": account,
        "queryState": st,
        "canCalculateChanges": true,
        "position": start,
        "ids": ids,
    });
    if calculate_total {
        out["total"] = json!(total);
    }
    if let Some(l) = limit {
        out["limit"] = json!(l);
    }
    Ok(out)
}

/// Properties served from the message's MIME structure (the raw message
/// is read for them).
const BODY_PROPERTIES: [&str; 5] = [
    "bodyStructure",
    "textBody",
    "htmlBody",
    "attachments",
    "bodyValues",
];

const EMAIL_PROPERTIES: [&str; 20] = [
    "id",
    "blobId",
    "threadId",
    "mailboxIds",
    "keywords",
    "size",
    "receivedAt",
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
];

fn addresses(list: &[Addr]) -> Value {
    if list.is_empty() {
        return Value::Null;
    }
    Value::Array(
        list.iter()
            .map(|a| json!({"name": a.name, "email": a.email}))
            .collect(),
    )
}

fn id_list(list: &[String]) -> Value {
    if list.is_empty() {
        Value::Null
    } else {
        json!(list)
    }
}

fn email_value(e: &EmailSummary, props: &[String]) -> Value {
    let mut m = Map::new();
    for p in props {
        let v = match p.as_str() {
            "id" => json!(format!("e{}", e.id.0)),
            "blobId" => json!(format!("b{}", e.id.0)),
            "threadId" => json!(format!("t{}", e.thread_id.0)),
            "mailboxIds" => Value::Object(
                e.folders
                    .iter()
                    .map(|(f, _)| (format!("m{}", f.0), Value::Bool(true)))
                    .collect(),
            ),
            "keywords" => Value::Object(
                e.keywords
                    .iter()
                    .map(|k| (k.as_str().to_string(), Value::Bool(true)))
                    .collect(),
            ),
            "size" => json!(e.size),
            "receivedAt" => json!(cofre_storage::time::iso(e.received_at)),
            "messageId" => e.message_id.as_ref().map_or(Value::Null, |m| json!([m])),
            "inReplyTo" => id_list(&e.in_reply_to),
            "references" => id_list(&e.references),
            "sender" => addresses(&e.sender),
            "from" => addresses(&e.from),
            "to" => addresses(&e.to),
            "cc" => addresses(&e.cc),
            "bcc" => addresses(&e.bcc),
            "replyTo" => addresses(&e.reply_to),
            "subject" => json!(e.subject),
            "sentAt" => e
                .sent_at
                .map_or(Value::Null, |t| json!(cofre_storage::time::iso(t))),
            "hasAttachment" => json!(e.has_attachment),
            "preview" => json!(e.preview),
            _ => continue,
        };
        m.insert(p.clone(), v);
    }
    m.entry("id")
        .or_insert_with(|| json!(format!("e{}", e.id.0)));
    Value::Object(m)
}

async fn email_get(session: &Session, account: &str, args: &Map<String, Value>) -> MethodResult {
    let mut defaults: Vec<&str> = EMAIL_PROPERTIES.to_vec();
    defaults.extend(["bodyValues", "textBody", "htmlBody", "attachments"]);
    let props = properties_arg(args, &defaults)?;
    let body = BodyArgs::of(args)?;
    let header_props = header_props(&props)?;
    if let Some(p) = props.iter().find(|p| {
        !EMAIL_PROPERTIES.contains(&p.as_str())
            && !BODY_PROPERTIES.contains(&p.as_str())
            && !p.starts_with("header:")
    }) {
        return Err(MethodError::invalid(format!(
            "the Email property {p} is not served yet (available: {}, {})",
            EMAIL_PROPERTIES.join(", "),
            BODY_PROPERTIES.join(", ")
        )));
    }
    let ids = match ids_arg(args)? {
        Some(ids) => ids,
        None => {
            let hits = search(session, Query::everywhere(Filter::All)).await?;
            if hits.len() > MAX_OBJECTS_IN_GET {
                return Err(MethodError::new(
                    "requestTooLarge",
                    format!("more than {MAX_OBJECTS_IN_GET} emails: ask for ids"),
                ));
            }
            hits.iter().map(|h| format!("e{}", h.email_id.0)).collect()
        }
    };
    if ids.len() > MAX_OBJECTS_IN_GET {
        return Err(MethodError::new(
            "requestTooLarge",
            format!("at most {MAX_OBJECTS_IN_GET} ids"),
        ));
    }
    let st = state(session).await?;
    let wanted: Vec<EmailId> = ids
        .iter()
        .filter_map(|i| prefixed('e', i))
        .map(EmailId)
        .collect();
    let summaries = summaries(session, wanted).await?;
    let mut list = Vec::new();
    let mut not_found = Vec::new();
    let wants_body = props.iter().any(|p| BODY_PROPERTIES.contains(&p.as_str()));
    for id in &ids {
        match prefixed('e', id).and_then(|n| summaries.iter().find(|s| s.id.0 == n)) {
            Some(s) => {
                let mut v = email_value(s, &props);
                if wants_body || !header_props.is_empty() {
                    let email = s.id;
                    let raw = match session
                        .request(|sid| Op::Raw {
                            session: sid,
                            email,
                        })
                        .await
                    {
                        Ok(Reply::Raw(r)) => r,
                        Ok(_) => return Err(MethodError::server("unexpected reply")),
                        Err(p) => return Err(link_error(p)),
                    };
                    body_values(&mut v, &format!("b{}", email.0), &raw, &props, &body);
                    headers::fill(&mut v, &raw, &header_props);
                }
                list.push(v)
            }
            None => not_found.push(json!(id)),
        }
    }
    Ok(json!({
        "accountId": account,
        "state": st,
        "list": list,
        "notFound": not_found,
    }))
}

/// The `header:…` properties among `props`, checked.
fn header_props(props: &[String]) -> Result<Vec<headers::HeaderProp>, MethodError> {
    let mut out = Vec::new();
    for p in props {
        if let Some(h) = headers::HeaderProp::parse(p)? {
            out.push(h);
        }
    }
    Ok(out)
}

/// An `invalidProperties` SetError naming the property.
fn invalid_property(property: &str, description: impl Into<String>) -> Value {
    let mut e = set_error("invalidProperties", description);
    e["properties"] = json!([property]);
    e
}

/// `ifInState` checked against the state now (read before any change);
/// that state, the response's `oldState`.
async fn old_state(session: &Session, args: &Map<String, Value>) -> Result<String, MethodError> {
    let old = state(session).await?;
    match args.get("ifInState").and_then(Value::as_str) {
        Some(want) if want != old => Err(MethodError::new(
            "stateMismatch",
            format!("the state is {old}"),
        )),
        _ => Ok(old),
    }
}

/// The `create`, `update` and `destroy` arguments of a `/set`, within
/// `maxObjectsInSet`.
type SetArgs = (Map<String, Value>, Map<String, Value>, Vec<String>);

fn set_args(args: &Map<String, Value>) -> Result<SetArgs, MethodError> {
    let object = |k: &str| -> Result<Map<String, Value>, MethodError> {
        match args.get(k) {
            None | Some(Value::Null) => Ok(Map::new()),
            Some(Value::Object(m)) => Ok(m.clone()),
            Some(_) => Err(MethodError::invalid(format!("{k} is an object"))),
        }
    };
    let create = object("create")?;
    let update = object("update")?;
    let destroy = string_list(args, "destroy")?.unwrap_or_default();
    if create.len() + update.len() + destroy.len() > MAX_OBJECTS_IN_SET {
        return Err(MethodError::new(
            "requestTooLarge",
            format!("at most {MAX_OBJECTS_IN_SET} objects"),
        ));
    }
    Ok((create, update, destroy))
}

/// Where a new email goes and how: `mailboxIds` (at least one),
/// `keywords`, `receivedAt` — shared by `Email/set` create and
/// `Email/import`.
fn placement(o: &Map<String, Value>) -> Result<(Vec<FolderId>, AppendOptions), Value> {
    let folders = match o.get("mailboxIds") {
        Some(Value::Object(m)) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| match (folder_of(k), v) {
                (Some(f), Value::Bool(true)) => Ok(f),
                _ => Err(invalid_property(
                    "mailboxIds",
                    "mailboxIds maps mailbox ids to true",
                )),
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => {
            return Err(invalid_property(
                "mailboxIds",
                "at least one mailbox is required",
            ));
        }
    };
    let mut options = AppendOptions::default();
    match o.get("keywords") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                if v != &Value::Bool(true) {
                    return Err(invalid_property("keywords", "keywords map to true"));
                }
                options.keywords.push(
                    keyword_arg(&json!(k.to_ascii_lowercase())).map_err(|_| {
                        invalid_property("keywords", format!("{k} is not a keyword"))
                    })?,
                );
            }
        }
        Some(_) => return Err(invalid_property("keywords", "keywords is an object")),
    }
    if let Some(t) = o.get("receivedAt").filter(|t| !t.is_null()) {
        options.received_at = Some(
            date_arg(t, "receivedAt")
                .map_err(|_| invalid_property("receivedAt", "not a UTCDate"))?,
        );
    }
    Ok((folders, options))
}

/// A `/set` response's map of ids: `null` when empty (RFC 8620 §5.3).
fn or_null(m: Map<String, Value>) -> Value {
    if m.is_empty() {
        Value::Null
    } else {
        Value::Object(m)
    }
}

/// What a /set did, object by object (RFC 8620 §5.3).
pub(super) struct SetResult {
    pub created: Map<String, Value>,
    pub updated: Map<String, Value>,
    pub destroyed: Vec<Value>,
    pub not_created: Map<String, Value>,
    pub not_updated: Map<String, Value>,
    pub not_destroyed: Map<String, Value>,
}

impl SetResult {
    /// The /set response: empty maps and lists are null.
    pub fn response(self, account: &str, old: &str, new: &str) -> Value {
        let destroyed = if self.destroyed.is_empty() {
            Value::Null
        } else {
            Value::Array(self.destroyed)
        };
        json!({
            "accountId": account,
            "oldState": old,
            "newState": new,
            "created": or_null(self.created),
            "updated": or_null(self.updated),
            "destroyed": destroyed,
            "notCreated": or_null(self.not_created),
            "notUpdated": or_null(self.not_updated),
            "notDestroyed": or_null(self.not_destroyed),
        })
    }
}

/// A SetError (RFC 8620 §5.3).
fn set_error(kind: &str, description: impl Into<String>) -> Value {
    json!({"type": kind, "description": description.into()})
}

/// What one Email/set update asks: keywords to add and remove, and the
/// mailboxes it should end up in (`None`: unchanged).
struct EmailPatch {
    add: Vec<Keyword>,
    remove: Vec<Keyword>,
    replace_keywords: Option<Vec<Keyword>>,
    mailboxes_set: Vec<(FolderId, bool)>,
    replace_mailboxes: Option<Vec<FolderId>>,
}

fn folder_of(id: &str) -> Option<FolderId> {
    prefixed('m', id).map(FolderId)
}

fn email_patch(patch: &Map<String, Value>) -> Result<EmailPatch, Value> {
    let mut p = EmailPatch {
        add: Vec::new(),
        remove: Vec::new(),
        replace_keywords: None,
        mailboxes_set: Vec::new(),
        replace_mailboxes: None,
    };
    let bad = invalid_property;
    for (k, v) in patch {
        if k == "keywords" {
            let map = v.as_object().ok_or_else(|| bad(k, "keywords is a map"))?;
            let mut list = Vec::new();
            for (kw, on) in map {
                if on != &Value::Bool(true) {
                    return Err(bad(k, "keyword values are true"));
                }
                list.push(Keyword::try_from(kw.as_str()).map_err(|_| bad(k, "not a keyword"))?);
            }
            p.replace_keywords = Some(list);
        } else if let Some(kw) = k.strip_prefix("keywords/") {
            let kw = Keyword::try_from(kw).map_err(|_| bad(k, "not a keyword"))?;
            match v {
                Value::Bool(true) => p.add.push(kw),
                Value::Null | Value::Bool(false) => p.remove.push(kw),
                _ => return Err(bad(k, "true or null")),
            }
        } else if k == "mailboxIds" {
            let map = v.as_object().ok_or_else(|| bad(k, "mailboxIds is a map"))?;
            let mut list = Vec::new();
            for (id, on) in map {
                if on != &Value::Bool(true) {
                    return Err(bad(k, "mailboxIds values are true"));
                }
                list.push(folder_of(id).ok_or_else(|| bad(k, "not a Mailbox id"))?);
            }
            if list.is_empty() {
                return Err(bad(k, "an email is in at least one mailbox"));
            }
            p.replace_mailboxes = Some(list);
        } else if let Some(id) = k.strip_prefix("mailboxIds/") {
            let f = folder_of(id).ok_or_else(|| bad(k, "not a Mailbox id"))?;
            match v {
                Value::Bool(true) => p.mailboxes_set.push((f, true)),
                Value::Null | Value::Bool(false) => p.mailboxes_set.push((f, false)),
                _ => return Err(bad(k, "true or null")),
            }
        } else {
            return Err(bad(k, "only keywords and mailboxIds can change"));
        }
    }
    Ok(p)
}

async fn request_ok(
    session: &Session,
    op: impl Fn(cofre_storage::primary::SessionId) -> Op,
) -> Result<Reply, Value> {
    session
        .request(op)
        .await
        .map_err(|p| set_error("serverFail", p.detail().to_string()))
}

/// Applies one update to one email.
async fn update_email(
    session: &Session,
    email: &EmailSummary,
    patch: EmailPatch,
    folders: &[Folder],
) -> Result<(), Value> {
    // Keywords.
    let (mut add, mut remove) = (patch.add, patch.remove);
    if let Some(all) = patch.replace_keywords {
        remove.extend(email.keywords.iter().filter(|k| !all.contains(k)).cloned());
        add.extend(all);
    }
    if !add.is_empty() || !remove.is_empty() {
        let id = email.id;
        request_ok(session, |s| Op::SetKeywords {
            session: s,
            emails: vec![id],
            add: add.clone(),
            remove: remove.clone(),
        })
        .await?;
    }
    // Mailboxes: where it is, where it should be.
    let now: Vec<FolderId> = email.folders.iter().map(|(f, _)| *f).collect();
    let mut want = patch.replace_mailboxes.unwrap_or_else(|| now.clone());
    for (f, on) in patch.mailboxes_set {
        if on && !want.contains(&f) {
            want.push(f);
        } else if !on {
            want.retain(|x| *x != f);
        }
    }
    if let Some(f) = want.iter().find(|f| !folders.iter().any(|g| g.id == **f)) {
        let mut e = set_error("invalidProperties", format!("no Mailbox m{}", f.0));
        e["properties"] = json!(["mailboxIds"]);
        return Err(e);
    }
    if want.is_empty() {
        let mut e = set_error("invalidProperties", "an email is in at least one mailbox");
        e["properties"] = json!(["mailboxIds"]);
        return Err(e);
    }
    let mut adds: Vec<FolderId> = want.iter().filter(|f| !now.contains(f)).copied().collect();
    let mut removes: Vec<(FolderId, cofre_storage::Uid)> = email
        .folders
        .iter()
        .filter(|(f, _)| !want.contains(f))
        .copied()
        .collect();
    // A removal paired with an addition is a move.
    while let (Some((from, uid)), Some(to)) = (removes.last().copied(), adds.last().copied()) {
        removes.pop();
        adds.pop();
        request_ok(session, |s| Op::Move {
            session: s,
            from,
            uids: vec![uid],
            to,
        })
        .await?;
    }
    if !removes.is_empty() {
        return Err(set_error(
            "forbidden",
            "taking an email out of a mailbox without putting it in another is not served yet",
        ));
    }
    // Additions beside the ones it keeps are copies from a kept one.
    if let Some(&(from, uid)) = email.folders.iter().find(|(f, _)| want.contains(f)) {
        for to in adds {
            request_ok(session, |s| Op::Copy {
                session: s,
                from,
                uids: vec![uid],
                to,
            })
            .await?;
        }
    }
    Ok(())
}

/// The summaries of `emails` (those that exist).
async fn summaries(
    session: &Session,
    emails: Vec<EmailId>,
) -> Result<Vec<EmailSummary>, MethodError> {
    match session
        .request(|s| Op::Summaries {
            session: s,
            emails: emails.clone(),
        })
        .await
    {
        Ok(Reply::Summaries(s)) => Ok(s),
        Ok(_) => Err(MethodError::server("unexpected reply")),
        Err(p) => Err(link_error(p)),
    }
}

/// `Email/set` (RFC 8621 §4.6): creation (`compose`), keyword and mailbox
/// updates, and destruction.
async fn email_set(session: &Session, account: &str, args: &Map<String, Value>) -> MethodResult {
    let old = old_state(session, args).await?;
    let (create, update, destroy) = set_args(args)?;
    let (mut created, mut not_created) = (Map::new(), Map::new());
    for (k, v) in &create {
        match compose::create_email(session, v).await {
            Ok(v) => created.insert(k.clone(), v),
            Err(e) => not_created.insert(k.clone(), e),
        };
    }
    let all_folders = folders(session).await?;
    let wanted: Vec<EmailId> = update
        .keys()
        .chain(destroy.iter())
        .filter_map(|i| prefixed('e', i))
        .map(EmailId)
        .collect();
    let summaries = summaries(session, wanted).await?;
    let find = |id: &str| prefixed('e', id).and_then(|n| summaries.iter().find(|s| s.id.0 == n));
    let mut updated = Map::new();
    let mut not_updated = Map::new();
    for (id, patch) in &update {
        let Some(email) = find(id) else {
            not_updated.insert(id.clone(), set_error("notFound", "no such email"));
            continue;
        };
        let patch = match patch.as_object().map(email_patch) {
            Some(Ok(p)) => p,
            Some(Err(e)) => {
                not_updated.insert(id.clone(), e);
                continue;
            }
            None => {
                not_updated.insert(
                    id.clone(),
                    set_error("invalidPatch", "a patch is an object"),
                );
                continue;
            }
        };
        match update_email(session, email, patch, &all_folders).await {
            Ok(()) => {
                updated.insert(id.clone(), Value::Null);
            }
            Err(e) => {
                not_updated.insert(id.clone(), e);
            }
        }
    }
    let mut destroyed = Vec::new();
    let mut not_destroyed = Map::new();
    let existing: Vec<EmailId> = destroy
        .iter()
        .filter_map(|id| find(id).map(|e| e.id))
        .collect();
    for id in &destroy {
        if find(id).is_none() {
            not_destroyed.insert(id.clone(), set_error("notFound", "no such email"));
        }
    }
    if !existing.is_empty() {
        match session
            .request(|s| Op::Destroy {
                session: s,
                emails: existing.clone(),
            })
            .await
        {
            Ok(_) => destroyed.extend(existing.iter().map(|e| json!(format!("e{}", e.0)))),
            Err(p) => {
                for e in &existing {
                    not_destroyed.insert(
                        format!("e{}", e.0),
                        set_error("serverFail", p.detail().to_string()),
                    );
                }
            }
        }
    }
    let new = state(session).await?;
    Ok(SetResult {
        created,
        updated,
        destroyed,
        not_created,
        not_updated,
        not_destroyed,
    }
    .response(account, &old, &new))
}

/// Email/get's arguments about bodies (RFC 8621 §4.2).
struct BodyArgs {
    properties: Vec<String>,
    text: bool,
    html: bool,
    all: bool,
    max_bytes: usize,
}

const BODY_PART_PROPERTIES: [&str; 12] = [
    "partId",
    "blobId",
    "size",
    "headers",
    "name",
    "type",
    "charset",
    "disposition",
    "cid",
    "language",
    "location",
    "subParts",
];

const DEFAULT_BODY_PART_PROPERTIES: [&str; 10] = [
    "partId",
    "blobId",
    "size",
    "name",
    "type",
    "charset",
    "disposition",
    "cid",
    "language",
    "location",
];

impl BodyArgs {
    fn of(args: &Map<String, Value>) -> Result<BodyArgs, MethodError> {
        let flag = |k: &str| -> Result<bool, MethodError> {
            match args.get(k) {
                None | Some(Value::Null) => Ok(false),
                Some(Value::Bool(b)) => Ok(*b),
                Some(_) => Err(MethodError::invalid(format!("{k} is a boolean"))),
            }
        };
        let properties = string_list(args, "bodyProperties")?.unwrap_or_else(|| {
            DEFAULT_BODY_PART_PROPERTIES
                .iter()
                .map(|s| s.to_string())
                .collect()
        });
        if let Some(p) = properties
            .iter()
            .find(|p| !BODY_PART_PROPERTIES.contains(&p.as_str()))
        {
            return Err(MethodError::invalid(format!(
                "unknown body part property {p}"
            )));
        }
        let max_bytes = match args.get("maxBodyValueBytes") {
            None | Some(Value::Null) => 0,
            Some(v) => v
                .as_u64()
                .ok_or_else(|| MethodError::invalid("maxBodyValueBytes is a positive integer"))?
                as usize,
        };
        Ok(BodyArgs {
            properties,
            text: flag("fetchTextBodyValues")?,
            html: flag("fetchHTMLBodyValues")?,
            all: flag("fetchAllBodyValues")?,
            max_bytes,
        })
    }
}

/// A leaf's part id: its path of 1-based child numbers (`1` for a
/// message that is one part).
fn part_id(path: &[usize]) -> String {
    if path.is_empty() {
        return "1".into();
    }
    path.iter()
        .map(|i| (i + 1).to_string())
        .collect::<Vec<_>>()
        .join(".")
}

fn media(p: &MimePart) -> String {
    format!("{}/{}", p.media_type, p.media_subtype)
}

fn is_multipart(p: &MimePart) -> bool {
    p.media_type == "multipart" && !p.is_message
}

/// The header fields of a part, raw (RFC 8621 §4.1.3 `headers`).
fn part_headers(raw: &[u8], p: &MimePart) -> Value {
    let head = raw.get(p.header_start..p.body_start).unwrap_or(&[]);
    let text = String::from_utf8_lossy(head);
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.split_inclusive('\n') {
        if line.trim().is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push_str(line.trim_end_matches(['\r', '\n']));
            }
        } else if let Some((name, value)) = line.split_once(':') {
            out.push((
                name.to_string(),
                value.trim_end_matches(['\r', '\n']).to_string(),
            ));
        }
    }
    Value::Array(
        out.into_iter()
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect(),
    )
}

/// One EmailBodyPart (RFC 8621 §4.1.4) with the properties asked for;
/// a multipart always carries its `subParts`.
fn body_part(raw: &[u8], base: &str, p: &MimePart, path: &[usize], props: &[String]) -> Value {
    let leaf = !is_multipart(p);
    let mut m = Map::new();
    for k in props {
        let v = match k.as_str() {
            "partId" if leaf => json!(part_id(path)),
            "blobId" if leaf => json!(format!("{base}-{}", part_id(path))),
            "partId" | "blobId" => Value::Null,
            "size" => json!(if leaf { p.decoded_size } else { 0 }),
            "headers" => part_headers(raw, p),
            "name" => json!(p.filename),
            "type" => json!(media(p)),
            "charset" => {
                let given = p
                    .params
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("charset"))
                    .map(|(_, v)| v.clone());
                match (given, p.media_type == "text") {
                    (Some(c), _) => json!(c),
                    (None, true) => json!("us-ascii"),
                    (None, false) => Value::Null,
                }
            }
            "disposition" => json!(p.disposition),
            "cid" => json!(
                p.content_id
                    .as_deref()
                    .map(|c| c.trim_start_matches('<').trim_end_matches('>'))
            ),
            "language" if p.language.is_empty() => Value::Null,
            "language" => json!(p.language),
            "location" => json!(p.location),
            _ => continue,
        };
        m.insert(k.clone(), v);
    }
    if !leaf {
        let sub: Vec<Value> = p
            .children
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut sp = path.to_vec();
                sp.push(i);
                body_part(raw, base, c, &sp, props)
            })
            .collect();
        m.insert("subParts".into(), Value::Array(sub));
    }
    Value::Object(m)
}

fn inline_media(t: &str) -> bool {
    t.starts_with("image/") || t.starts_with("audio/") || t.starts_with("video/")
}

/// RFC 8621 §4.1.4's parseStructure, on the part tree: fills the leaf
/// paths of `textBody`, `htmlBody` and `attachments`.
fn parse_structure(
    parts: &[(&MimePart, Vec<usize>)],
    multipart_type: &str,
    in_alternative: bool,
    mut html: Option<&mut Vec<Vec<usize>>>,
    mut text: Option<&mut Vec<Vec<usize>>>,
    attachments: &mut Vec<Vec<usize>>,
) {
    let text_len = text.as_ref().map(|t| t.len());
    let html_len = html.as_ref().map(|h| h.len());
    for (i, (part, path)) in parts.iter().enumerate() {
        let t = media(part);
        let named = part.filename.is_some();
        let is_inline = part.disposition.as_deref() != Some("attachment")
            && (t == "text/plain" || t == "text/html" || inline_media(&t))
            && (i == 0 || (multipart_type != "related" && (inline_media(&t) || !named)));
        if is_multipart(part) {
            let sub_type = part.media_subtype.clone();
            let children: Vec<(&MimePart, Vec<usize>)> = part
                .children
                .iter()
                .enumerate()
                .map(|(j, c)| {
                    let mut p = path.clone();
                    p.push(j);
                    (c, p)
                })
                .collect();
            parse_structure(
                &children,
                &sub_type,
                in_alternative || sub_type == "alternative",
                html.as_deref_mut(),
                text.as_deref_mut(),
                attachments,
            );
        } else if is_inline {
            if multipart_type == "alternative" {
                match t.as_str() {
                    "text/plain" => {
                        if let Some(tb) = text.as_deref_mut() {
                            tb.push(path.clone());
                        }
                    }
                    "text/html" => {
                        if let Some(hb) = html.as_deref_mut() {
                            hb.push(path.clone());
                        }
                    }
                    _ => attachments.push(path.clone()),
                }
                continue;
            } else if in_alternative {
                if t == "text/plain" {
                    html = None;
                }
                if t == "text/html" {
                    text = None;
                }
            }
            if let Some(tb) = text.as_deref_mut() {
                tb.push(path.clone());
            }
            if let Some(hb) = html.as_deref_mut() {
                hb.push(path.clone());
            }
            if (text.is_none() || html.is_none()) && inline_media(&t) {
                attachments.push(path.clone());
            }
        } else {
            attachments.push(path.clone());
        }
    }
    if multipart_type == "alternative"
        && let (Some(tb), Some(hb)) = (text, html)
    {
        if text_len == Some(tb.len()) && html_len != Some(hb.len()) {
            let extra: Vec<Vec<usize>> = hb[html_len.unwrap_or(0)..].to_vec();
            tb.extend(extra);
        }
        if html_len == Some(hb.len()) && text_len != Some(tb.len()) {
            let extra: Vec<Vec<usize>> = tb[text_len.unwrap_or(0)..].to_vec();
            hb.extend(extra);
        }
    }
}

fn part_at<'a>(root: &'a MimePart, path: &[usize]) -> Option<&'a MimePart> {
    let mut p = root;
    for &i in path {
        p = p.children.get(i)?;
    }
    Some(p)
}

/// Adds the body properties asked for to an Email object; `base` is the
/// blob id of the message, which its parts' blob ids extend.
fn body_values(v: &mut Value, base: &str, raw: &[u8], props: &[String], args: &BodyArgs) {
    let root = cofre_storage::mailbox::structure_of(raw);
    let (mut text, mut html, mut attachments) = (Vec::new(), Vec::new(), Vec::new());
    parse_structure(
        &[(&root, Vec::new())],
        "mixed",
        false,
        Some(&mut html),
        Some(&mut text),
        &mut attachments,
    );
    let list = |paths: &[Vec<usize>]| -> Value {
        Value::Array(
            paths
                .iter()
                .filter_map(|p| {
                    part_at(&root, p).map(|part| body_part(raw, base, part, p, &args.properties))
                })
                .collect(),
        )
    };
    let want = |k: &str| props.iter().any(|p| p == k);
    if want("bodyStructure") {
        v["bodyStructure"] = body_part(raw, base, &root, &[], &args.properties);
    }
    if want("textBody") {
        v["textBody"] = list(&text);
    }
    if want("htmlBody") {
        v["htmlBody"] = list(&html);
    }
    if want("attachments") {
        v["attachments"] = list(&attachments);
    }
    if want("bodyValues") {
        let mut chosen: Vec<&Vec<usize>> = Vec::new();
        if args.text || args.all {
            chosen.extend(&text);
        }
        if args.html || args.all {
            chosen.extend(&html);
        }
        if args.all {
            chosen.extend(&attachments);
        }
        let mut values = Map::new();
        for path in chosen {
            let Some(part) = part_at(&root, path) else {
                continue;
            };
            let id = part_id(path);
            if part.media_type != "text" || values.contains_key(&id) {
                continue;
            }
            let bytes = cofre_storage::mailbox::part_decoded_of(raw, path).unwrap_or_default();
            let decoded = String::from_utf8_lossy(&bytes);
            let problem = matches!(decoded, std::borrow::Cow::Owned(_));
            let mut value = decoded.into_owned();
            let mut truncated = false;
            if args.max_bytes > 0 && value.len() > args.max_bytes {
                let mut cut = args.max_bytes;
                while !value.is_char_boundary(cut) {
                    cut -= 1;
                }
                value.truncate(cut);
                truncated = true;
            }
            values.insert(
                id,
                json!({"value": value, "isEncodingProblem": problem, "isTruncated": truncated}),
            );
        }
        v["bodyValues"] = Value::Object(values);
    }
}
