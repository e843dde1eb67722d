//! JMAP over WebSocket (RFC 8887) at `/jmap/ws`: Request objects in,
//! Response (or RequestError) objects out, matched by `requestId`; and
//! push — after `WebSocketPushEnable`, a `StateChange` for each change of
//! the account's mail until `WebSocketPushDisable`. Authentication is the
//! upgrade request's, as for every other endpoint.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cofre_storage::link::Event;
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use super::{MAX_SIZE_REQUEST, RequestError, account_id, run};
use crate::auth::Session;
use crate::{AppState, Problem, ProblemCode};

/// The WebSocket capability.
pub const WEBSOCKET: &str = "urn:ietf:params:jmap:websocket";

fn refuse(detail: &str) -> Response {
    Problem::new(StatusCode::BAD_REQUEST, ProblemCode::Invalid, detail).into_response()
}

/// `GET /jmap/ws`: the upgrade to the `jmap` subprotocol.
pub async fn websocket(
    State(app): State<AppState>,
    session: Session,
    mut request: axum::extract::Request,
) -> Response {
    let h = request.headers();
    let has = |name: header::HeaderName, token: &str| {
        h.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has(header::UPGRADE, "websocket") || !has(header::CONNECTION, "upgrade") {
        return refuse("this endpoint speaks WebSocket: upgrade to it");
    }
    if !has(header::SEC_WEBSOCKET_VERSION, "13") {
        return refuse("WebSocket version 13 only");
    }
    if !has(header::SEC_WEBSOCKET_PROTOCOL, "jmap") {
        return refuse("the subprotocol is jmap (RFC 8887)");
    }
    let Some(key) = h
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| derive_accept_key(k.as_bytes()))
    else {
        return refuse("no Sec-WebSocket-Key");
    };
    let Some(upgrade) = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
    else {
        return refuse("this connection cannot be upgraded");
    };
    tokio::spawn(async move {
        let io = match upgrade.await {
            Ok(io) => TokioIo::new(io),
            Err(e) => {
                tracing::debug!(error = %e, "WebSocket upgrade failed");
                return;
            }
        };
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_SIZE_REQUEST))
            .max_frame_size(Some(MAX_SIZE_REQUEST));
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
        serve(app, session, ws).await;
    });
    let mut headers = HeaderMap::new();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static("jmap"),
    );
    if let Ok(v) = HeaderValue::from_str(&key) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    (StatusCode::SWITCHING_PROTOCOLS, headers).into_response()
}

/// A RequestError object (RFC 8887 §4.3.4).
fn request_error(id: Option<&Value>, e: &RequestError) -> Value {
    let mut v = e.to_value();
    v["@type"] = json!("RequestError");
    if let Some(id) = id {
        v["requestId"] = id.clone();
    }
    v
}

/// One connection: requests answered in order, state changes pushed while
/// push is on. The session lives as long as the connection.
async fn serve<S>(app: AppState, session: Session, ws: WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut tx, mut rx) = ws.split();
    let mut events = app.router().events();
    let mut shutdown = app.inner.shutdown.clone();
    let account = account_id(session.address.as_str());
    // The data types push is on for (None: off).
    let mut push: Option<Vec<String>> = None;
    // The record-backed types' states last told (see `push::changed`).
    let mut told = super::push::Told::new();
    enum Next {
        Message(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
        Event(Result<Event, broadcast::error::RecvError>),
        Stop,
    }
    loop {
        let next = tokio::select! {
            m = rx.next() => Next::Message(m),
            e = events.recv() => Next::Event(e),
            _ = shutdown.wait_for(|stop| *stop) => Next::Stop,
        };
        let out = match next {
            Next::Stop => return,
            Next::Message(Some(Ok(Message::Text(text)))) => {
                Some(answer(&app, &session, text.as_str(), &mut push, &mut told).await)
                    .filter(|v| !v.is_null())
            }
            Next::Message(Some(Ok(Message::Binary(_)))) => Some(request_error(
                None,
                &RequestError::new("notJSON", "requests are text messages"),
            )),
            Next::Message(Some(Ok(Message::Close(_))) | None | Some(Err(_))) => return,
            Next::Message(Some(Ok(_))) => None,
            Next::Event(e) => {
                let modseq = match e {
                    Ok(Event::Changed(c)) if c.address == session.address => c.modseq.to_string(),
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        match super::state(&session).await {
                            Ok(s) => s,
                            Err(_) => return,
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                match push.as_ref() {
                    Some(types) => {
                        let changed =
                            super::push::changed(&session, types, &modseq, &mut told).await;
                        (!changed.is_empty()).then(|| json!({"@type": "StateChange", "changed": { account.clone(): changed }, "pushState": modseq}))
                    }
                    None => None,
                }
            }
        };
        if let Some(v) = out
            && tx.send(Message::Text(v.to_string().into())).await.is_err()
        {
            return;
        }
    }
}

/// The answer to one client message.
async fn answer(
    app: &AppState,
    session: &Session,
    text: &str,
    push: &mut Option<Vec<String>>,
    told: &mut super::push::Told,
) -> Value {
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return request_error(
                None,
                &RequestError::new("notJSON", format!("not JSON: {e}")),
            );
        }
    };
    let id = v.get("id");
    match v.get("@type").and_then(Value::as_str) {
        Some("Request") => {
            let mut request = v.clone();
            if let Some(o) = request.as_object_mut() {
                o.remove("@type");
                o.remove("id");
            }
            match run(app, session, &request, text.len()).await {
                Ok(mut r) => {
                    r["@type"] = json!("Response");
                    if let Some(id) = id {
                        r["requestId"] = id.clone();
                    }
                    r
                }
                Err(e) => request_error(id, &e),
            }
        }
        Some("WebSocketPushEnable") => {
            use super::push::TYPES;
            let types: Vec<String> = match v.get("dataTypes") {
                None | Some(Value::Null) => TYPES.iter().map(|t| t.to_string()).collect(),
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(Value::as_str)
                    .filter(|t| TYPES.contains(t))
                    .map(str::to_string)
                    .collect(),
                Some(_) => {
                    return request_error(
                        id,
                        &RequestError::new("notRequest", "dataTypes is a list"),
                    );
                }
            };
            *told = super::push::record_states(session, &types).await;
            *push = Some(types);
            // Nothing to say: the StateChanges are the answer. A client
            // that sent a pushState gets the current state at once.
            match (v.get("pushState"), super::state(session).await) {
                (Some(Value::String(old)), Ok(now)) if *old != now => {
                    let account = account_id(session.address.as_str());
                    let changed: serde_json::Map<String, Value> = push
                        .iter()
                        .flatten()
                        .map(|t| (t.clone(), json!(now)))
                        .collect();
                    json!({"@type": "StateChange", "changed": { account: changed }, "pushState": now})
                }
                _ => Value::Null,
            }
        }
        Some("WebSocketPushDisable") => {
            *push = None;
            Value::Null
        }
        _ => request_error(
            id,
            &RequestError::new(
                "notRequest",
                "expected a Request, WebSocketPushEnable or WebSocketPushDisable",
            ),
        ),
    }
}
