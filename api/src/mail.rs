//! The mail endpoints under `/v1`.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use cofre_storage::link::{Event, Op, Reply};
use cofre_storage::mailbox::{AppendOptions, Appended, Folder};
use cofre_storage::types::{EmailId, FolderId};
use futures_util::Stream;
use tokio::sync::broadcast;

use crate::auth::Session;
use crate::{AppState, Problem};

fn unexpected() -> Problem {
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "unexpected answer from the mail store",
    )
}

/// `GET /v1/folders`: every folder with its UID and MODSEQ counters.
pub async fn folders(session: Session) -> Result<Json<Vec<Folder>>, Problem> {
    match session
        .request(Op::Folders {
            session: session.id,
        })
        .await?
    {
        Reply::Folders(f) => Ok(Json(f)),
        _ => Err(unexpected()),
    }
}

/// `POST /v1/folders/{folder}/messages`: stores the request body (a whole
/// RFC 5322 message) in the folder.
pub async fn import(
    session: Session,
    Path(folder): Path<i64>,
    body: Bytes,
) -> Result<(StatusCode, Json<Appended>), Problem> {
    if body.is_empty() {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            "the request body must be a message",
        ));
    }
    let op = Op::Append {
        session: session.id,
        folder: FolderId(folder),
        raw: body.to_vec(),
        options: AppendOptions::default(),
    };
    match session.request(op).await? {
        Reply::Appended(a) => Ok((StatusCode::CREATED, Json(a))),
        _ => Err(unexpected()),
    }
}

/// `GET /v1/messages/{email}/raw`: the message's exact bytes.
pub async fn raw(session: Session, Path(email): Path<i64>) -> Result<Response, Problem> {
    let op = Op::Raw {
        session: session.id,
        email: EmailId(email),
    };
    match session.request(op).await? {
        Reply::Raw(bytes) => {
            Ok(([(header::CONTENT_TYPE, "message/rfc822")], bytes).into_response())
        }
        _ => Err(unexpected()),
    }
}

/// `GET /v1/events`: Server-Sent Events, one `changed` event (with the
/// mailbox's new MODSEQ) whenever the alias's mailbox changes. While the
/// stream is open the alias counts as online: its mail lands at once.
pub async fn events(
    State(state): State<AppState>,
    session: Session,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let mut rx = state.router().events();
    let mut shutdown = state.inner.shutdown.clone();
    let stream = async_stream(move |tx| async move {
        // The session lives as long as the stream.
        let session = session;
        loop {
            let event = tokio::select! {
                e = rx.recv() => e,
                _ = shutdown.wait_for(|stop| *stop) => return,
                // The client went away: end the session now, not at the
                // next event.
                _ = tx.closed() => return,
            };
            match event {
                Ok(Event::Changed(c)) if c.address == session.address => {
                    let data = serde_json::json!({ "modseq": c.modseq }).to_string();
                    let sse = SseEvent::default().event("changed").data(data);
                    if tx.send(Ok(sse)).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                // Missed some: tell the client to resynchronise.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let sse = SseEvent::default().event("resync").data("{}");
                    if tx.send(Ok(sse)).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// A stream fed by a task: the task gets a sender, the stream ends when the
/// task does (or the client goes away and the sender fails).
fn async_stream<T, F, Fut>(f: F) -> impl Stream<Item = T>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(f(tx));
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
