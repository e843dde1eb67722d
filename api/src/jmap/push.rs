//! Push over EventSource (RFC 8620 §7.3): a `state` event carrying a
//! `StateChange` whenever the account's mail, identities or submissions
//! change, optional `ping`
//! events, and `closeafter=state` for clients that poll. While the stream
//! is open the alias counts as online: its mail lands at once.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::response::sse::{Event as SseEvent, Sse};
use cofre_storage::link::Event;
use futures_util::Stream;
use serde_json::json;
use tokio::sync::broadcast;

use super::account_id;
use crate::auth::Session;
use crate::{AppState, Problem, ProblemCode};

/// The types push announces: the mail types, whose state is the
/// mailbox's MODSEQ, and the record-backed ones with states of their own.
pub(super) const TYPES: [&str; 5] = ["Mailbox", "Email", "Thread", "Identity", "EmailSubmission"];

/// The record-backed types' states, last told.
pub(super) type Told = std::collections::HashMap<&'static str, String>;

/// The record-backed type of a name, if it is one.
fn record_type(name: &str) -> Option<(&'static str, super::records::Type)> {
    match name {
        "Identity" => Some(("Identity", super::identity::IDENTITY)),
        "EmailSubmission" => Some(("EmailSubmission", super::submission::SUBMISSION_TYPE)),
        _ => None,
    }
}

/// The states of the record-backed types among `types` now.
pub(super) async fn record_states(session: &Session, types: &[impl AsRef<str>]) -> Told {
    let mut told = Told::new();
    for t in types {
        if let Some((name, rt)) = record_type(t.as_ref())
            && let Ok(state) = super::records::state_now(session, rt).await
        {
            told.insert(name, state);
        }
    }
    told
}

/// What a change of the mailbox (now at `modseq`) changed among `types`:
/// every mail type, and the record-backed types whose state moved since
/// `told` (which is brought up to date).
pub(super) async fn changed(
    session: &Session,
    types: &[impl AsRef<str>],
    modseq: &str,
    told: &mut Told,
) -> serde_json::Map<String, serde_json::Value> {
    let now = record_states(session, types).await;
    let mut out = serde_json::Map::new();
    for t in types {
        let t = t.as_ref();
        match record_type(t) {
            None => {
                out.insert(t.to_string(), json!(modseq));
            }
            Some((name, _)) => {
                if let Some(state) = now.get(name)
                    && told.get(name) != Some(state)
                {
                    out.insert(t.to_string(), json!(state));
                }
            }
        }
    }
    *told = now;
    out
}

/// The EventSource URL's query (RFC 8620 §7.3).
#[derive(serde::Deserialize)]
pub struct Params {
    types: Option<String>,
    closeafter: Option<String>,
    ping: Option<u64>,
}

/// `GET /jmap/eventsource?types=…&closeafter=…&ping=…`.
pub async fn event_source(
    State(state): State<AppState>,
    session: Session,
    Query(q): Query<Params>,
) -> axum::response::Response {
    let types: Vec<&'static str> = match q.types.as_deref().unwrap_or("*") {
        "*" => TYPES.to_vec(),
        list => TYPES
            .iter()
            .copied()
            .filter(|t| list.split(',').any(|w| w.trim() == *t))
            .collect(),
    };
    let close_after_state = match q.closeafter.as_deref().unwrap_or("no") {
        "no" => false,
        "state" => true,
        _ => {
            return Problem::new(
                axum::http::StatusCode::BAD_REQUEST,
                ProblemCode::Invalid,
                "closeafter is state or no",
            )
            .into_response();
        }
    };
    // A ping of 0 means none; otherwise at least every 5 seconds' worth
    // of work, at most every 5 minutes (RFC 8620 lets the server choose).
    let ping = q.ping.filter(|p| *p > 0).map(|p| p.clamp(5, 300));
    stream(state, session, types, close_after_state, ping).into_response()
}

fn stream(
    state: AppState,
    session: Session,
    types: Vec<&'static str>,
    close_after_state: bool,
    ping: Option<u64>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let mut rx = state.router().events();
    let mut shutdown = state.inner.shutdown.clone();
    let account = account_id(session.address.as_str());
    let events = crate::mail::async_stream(move |tx| async move {
        // The session lives as long as the stream.
        let session = session;
        let mut told = record_states(&session, &types).await;
        let mut pings = tokio::time::interval(Duration::from_secs(ping.unwrap_or(3600)));
        pings.tick().await;
        loop {
            let event = tokio::select! {
                e = rx.recv() => Some(e),
                _ = pings.tick(), if ping.is_some() => None,
                _ = shutdown.wait_for(|stop| *stop) => return,
                _ = tx.closed() => return,
            };
            let Some(event) = event else {
                let data = json!({ "interval": ping }).to_string();
                if tx
                    .send(Ok(SseEvent::default().event("ping").data(data)))
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            };
            let modseq = match event {
                Ok(Event::Changed(c)) if c.address == session.address => c.modseq.to_string(),
                Ok(_) => continue,
                // Missed events: the newest state is what matters, and the
                // next change carries it; say so now with a fresh read.
                Err(broadcast::error::RecvError::Lagged(_)) => match super::state(&session).await {
                    Ok(s) => s,
                    Err(_) => return,
                },
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if types.is_empty() {
                continue;
            }
            let changed = changed(&session, &types, &modseq, &mut told).await;
            if changed.is_empty() {
                continue;
            }
            let data = json!({
                "@type": "StateChange",
                "changed": { account.clone(): changed },
            })
            .to_string();
            let event = SseEvent::default().event("state").id(modseq).data(data);
            if tx.send(Ok(event)).await.is_err() || close_after_state {
                return;
            }
        }
    });
    Sse::new(events)
}
