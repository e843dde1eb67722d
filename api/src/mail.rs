//! The mail endpoints under `/v1`: folders, messages, keywords, moves,
//! quota and change events. Each handler translates JSON to link
//! operations on the caller's own session; nothing here can name another
//! alias's data.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use crate::json::{Path, Query, RawBody};
use crate::problem::ProblemCode;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use cofre_storage::link::{Event, Op, Reply};
use cofre_storage::mailbox::{AppendOptions, Filter, Query as StorageQuery};
use cofre_storage::types::{EmailId, FolderId, FolderName, Keyword, Uid};
use futures_util::Stream;
use serde::Deserialize;
use tokio::sync::broadcast;
use utoipa::{IntoParams, ToSchema};

use crate::auth::Session;
use crate::filter::{Condition, sort};
use crate::json::Json as Body;
use crate::views::{
    Changed, CreateFolder, Delete, FolderView, KeywordChange, MessagePage, MessageView, QuotaView,
    Stored, Transfer, Transferred, UpdateFolder,
};
use crate::{AppState, Problem};

/// Most messages one page returns.
pub const MAX_PAGE: usize = 500;
/// Most messages one bulk request names.
pub const MAX_IDS: usize = 10_000;

fn folder_name(name: &str) -> Result<FolderName, Problem> {
    FolderName::try_from(name).map_err(|e| Problem::invalid(format!("folder name: {e}")))
}

fn keywords(list: &[String]) -> Result<Vec<Keyword>, Problem> {
    list.iter()
        .map(|k| {
            Keyword::try_from(k.as_str())
                .map_err(|e| Problem::invalid(format!("keyword {k:?}: {e}")))
        })
        .collect()
}

fn ids(list: &[i64]) -> Result<Vec<EmailId>, Problem> {
    if list.is_empty() || list.len() > MAX_IDS {
        return Err(Problem::invalid(format!(
            "give between 1 and {MAX_IDS} ids"
        )));
    }
    Ok(list.iter().map(|i| EmailId(*i)).collect())
}

/// List folders with their counts.
#[utoipa::path(get, path = "/v1/folders", tag = "folders",
    responses((status = 200, description = "OK", body = Vec<FolderView>), (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json")))]
pub async fn list_folders(session: Session) -> Result<Json<Vec<FolderView>>, Problem> {
    match session.request(|s| Op::Folders { session: s }).await? {
        Reply::Folders(f) => Ok(Json(f.into_iter().map(FolderView::from).collect())),
        _ => Err(Problem::internal()),
    }
}

/// Create a folder (and any missing parents).
#[utoipa::path(post, path = "/v1/folders", tag = "folders", request_body = CreateFolder,
    responses((status = 201, description = "Created", body = FolderView), (status = 400, description = "Invalid input", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "It exists", body = Problem, content_type = "application/problem+json")))]
pub async fn create_folder(
    session: Session,
    body: Body<CreateFolder>,
) -> Result<(StatusCode, Json<FolderView>), Problem> {
    let name = folder_name(&body.0.name)?;
    match session
        .request(|s| Op::CreateFolder {
            session: s,
            name: name.clone(),
        })
        .await?
    {
        Reply::Folder(f) => Ok((StatusCode::CREATED, Json(f.into()))),
        _ => Err(Problem::internal()),
    }
}

/// Rename a folder, or subscribe or unsubscribe it.
#[utoipa::path(patch, path = "/v1/folders/{folder}", tag = "folders", request_body = UpdateFolder,
    params(("folder" = i64, Path, description = "Folder id")),
    responses((status = 409, description = "A folder of that name exists", body = Problem, content_type = "application/problem+json"), (status = 200, description = "OK", body = FolderView), (status = 400, description = "Invalid input", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json")))]
pub async fn update_folder(
    session: Session,
    Path(folder): Path<i64>,
    body: Body<UpdateFolder>,
) -> Result<Json<FolderView>, Problem> {
    let change = body.0;
    let folder = FolderId(folder);
    let name = change.name.as_deref().map(folder_name).transpose()?;
    if let Some(name) = name {
        session
            .request(|s| Op::RenameFolder {
                session: s,
                folder,
                name: name.clone(),
            })
            .await?;
    }
    if let Some(subscribed) = change.subscribed {
        session
            .request(|s| Op::Subscribe {
                session: s,
                folder,
                subscribed,
            })
            .await?;
    }
    let Reply::Folders(all) = session.request(|s| Op::Folders { session: s }).await? else {
        return Err(Problem::internal());
    };
    all.into_iter()
        .find(|f| f.id == folder)
        .map(|f| Json(f.into()))
        .ok_or_else(|| {
            Problem::new(
                StatusCode::NOT_FOUND,
                ProblemCode::NotFound,
                "no such folder",
            )
        })
}

/// Delete a folder and what is only in it.
#[utoipa::path(delete, path = "/v1/folders/{folder}", tag = "folders",
    params(("folder" = i64, Path, description = "Folder id")),
    responses((status = 204, description = "Done"), (status = 400, description = "The inbox cannot be deleted", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_folder(
    session: Session,
    Path(folder): Path<i64>,
) -> Result<StatusCode, Problem> {
    session
        .request(|s| Op::DeleteFolder {
            session: s,
            folder: FolderId(folder),
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Paging and order of a message list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Messages per page (1–500, default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Comma-separated keys, `-` for descending: `received_at`, `sent_at`,
    /// `size`, `from`, `to`, `subject`, `uid`. Default `-uid` (newest
    /// arrival first).
    pub sort: Option<String>,
}

/// A search over the mailbox.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// The condition.
    pub filter: Condition,
    /// Only this folder.
    pub folder: Option<i64>,
    /// As in the list endpoints.
    pub sort: Option<String>,
    /// Messages per page (1–500, default 50).
    #[schema(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only the first message of each thread.
    #[serde(default)]
    pub collapse_threads: bool,
}

fn cursor(c: Option<&str>) -> Result<usize, Problem> {
    let Some(c) = c else { return Ok(0) };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix("p").and_then(|n| n.parse().ok()))
        .ok_or_else(|| Problem::invalid("cursor: not one this server gave"))
}

async fn page(
    session: &Session,
    folder: Option<FolderId>,
    filter: Filter,
    sort_spec: Option<&str>,
    limit: Option<usize>,
    cursor_text: Option<&str>,
    collapse_threads: bool,
) -> Result<MessagePage, Problem> {
    let limit = limit.unwrap_or(50);
    if limit == 0 || limit > MAX_PAGE {
        return Err(Problem::invalid(format!("limit must be 1 to {MAX_PAGE}")));
    }
    let position = cursor(cursor_text)?;
    let query = StorageQuery {
        folder,
        filter,
        sort: sort(sort_spec.unwrap_or(match folder {
            // Newest arrival first: in a folder that is UID order, which
            // the folder's own index serves without sorting.
            Some(_) => "-uid",
            None => "-received_at",
        }))
        .map_err(Problem::invalid)?,
        collapse_threads,
        position,
        limit: Some(limit + 1),
    };
    let Reply::Hits(mut hits) = session
        .request(|s| Op::Search {
            session: s,
            query: query.clone(),
        })
        .await?
    else {
        return Err(Problem::internal());
    };
    let more = hits.len() > limit;
    hits.truncate(limit);
    let order: Vec<EmailId> = hits.iter().map(|h| h.email_id).collect();
    let Reply::Summaries(summaries) = session
        .request(|s| Op::Summaries {
            session: s,
            emails: order.clone(),
        })
        .await?
    else {
        return Err(Problem::internal());
    };
    let mut by_id: HashMap<EmailId, _> = summaries.into_iter().map(|e| (e.id, e)).collect();
    let messages = order
        .iter()
        .filter_map(|id| by_id.remove(id))
        .map(MessageView::from)
        .collect();
    let next_cursor = more.then(|| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("p{}", position + limit))
    });
    Ok(MessagePage {
        messages,
        next_cursor,
    })
}

/// Download a folder as an mbox (mboxrd: LF line ends, `From ` lines
/// quoted), the format other mail programs import.
#[utoipa::path(get, path = "/v1/folders/{folder}/mbox", tag = "folders",
    params(("folder" = i64, Path, description = "Folder id")),
    responses((status = 200, description = "The folder as an mbox", content_type = "application/mbox", body = crate::views::RawMessage),
        (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json")))]
pub async fn folder_mbox(session: Session, Path(folder): Path<i64>) -> Result<Response, Problem> {
    match session
        .request(|s| Op::Mbox {
            session: s,
            folder: FolderId(folder),
        })
        .await?
    {
        Reply::Raw(bytes) => Ok((
            [
                (header::CONTENT_TYPE, "application/mbox".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"folder-{folder}.mbox\""),
                ),
            ],
            bytes,
        )
            .into_response()),
        _ => Err(Problem::internal()),
    }
}

/// List a folder's messages, a page at a time.
#[utoipa::path(get, path = "/v1/folders/{folder}/messages", tag = "messages",
    params(("folder" = i64, Path, description = "Folder id"), ListParams),
    responses((status = 200, description = "OK", body = MessagePage), (status = 400, description = "Invalid input", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json")))]
pub async fn list_messages(
    session: Session,
    Path(folder): Path<i64>,
    Query(params): Query<ListParams>,
) -> Result<Json<MessagePage>, Problem> {
    let folder = FolderId(folder);
    Ok(Json(
        page(
            &session,
            Some(folder),
            Filter::All,
            params.sort.as_deref(),
            params.limit,
            params.cursor.as_deref(),
            false,
        )
        .await?,
    ))
}

/// Search messages with any condition the store offers.
#[utoipa::path(post, path = "/v1/messages/search", tag = "messages", request_body = SearchRequest,
    responses((status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"), (status = 200, description = "OK", body = MessagePage), (status = 400, description = "Invalid input", body = Problem, content_type = "application/problem+json")))]
pub async fn search_messages(
    session: Session,
    body: Body<SearchRequest>,
) -> Result<Json<MessagePage>, Problem> {
    let r = body.0;
    let filter = r.filter.to_filter().map_err(Problem::invalid)?;
    Ok(Json(
        page(
            &session,
            r.folder.map(FolderId),
            filter,
            r.sort.as_deref(),
            r.limit,
            r.cursor.as_deref(),
            r.collapse_threads,
        )
        .await?,
    ))
}

/// One message's envelope and state.
#[utoipa::path(get, path = "/v1/messages/{id}", tag = "messages",
    params(("id" = i64, Path, description = "Message id")),
    responses((status = 200, description = "OK", body = MessageView), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json")))]
pub async fn get_message(
    session: Session,
    Path(id): Path<i64>,
) -> Result<Json<MessageView>, Problem> {
    let Reply::Summaries(mut found) = session
        .request(|s| Op::Summaries {
            session: s,
            emails: vec![EmailId(id)],
        })
        .await?
    else {
        return Err(Problem::internal());
    };
    found.pop().map(|e| Json(e.into())).ok_or_else(|| {
        Problem::new(
            StatusCode::NOT_FOUND,
            ProblemCode::NotFound,
            "no such message",
        )
    })
}

/// The message exactly as it arrived.
#[utoipa::path(get, path = "/v1/messages/{id}/raw", tag = "messages",
    params(("id" = i64, Path, description = "Message id")),
    responses((status = 200, description = "The message", content_type = "message/rfc822", body = crate::views::RawMessage),
        (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json")))]
pub async fn get_raw_message(session: Session, Path(id): Path<i64>) -> Result<Response, Problem> {
    match session
        .request(|s| Op::Raw {
            session: s,
            email: EmailId(id),
        })
        .await?
    {
        Reply::Raw(bytes) => {
            Ok(([(header::CONTENT_TYPE, "message/rfc822")], bytes).into_response())
        }
        _ => Err(Problem::internal()),
    }
}

/// Store a message (the body, `message/rfc822`) in a folder.
#[utoipa::path(post, path = "/v1/folders/{folder}/messages", tag = "messages",
    params(("folder" = i64, Path, description = "Folder id")),
    request_body(content = crate::views::RawMessage, content_type = "message/rfc822"),
    responses((status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"), (status = 201, description = "Created", body = Stored), (status = 400, description = "Invalid input", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Too large", body = Problem, content_type = "application/problem+json"),
        (status = 507, description = "Over quota", body = Problem, content_type = "application/problem+json")))]
pub async fn import_message(
    session: Session,
    Path(folder): Path<i64>,
    RawBody(body): RawBody,
) -> Result<(StatusCode, Json<Stored>), Problem> {
    if body.is_empty() {
        return Err(Problem::invalid("the request body must be a message"));
    }
    let op = |s| Op::Append {
        session: s,
        folder: FolderId(folder),
        raw: body.to_vec(),
        options: AppendOptions::default(),
    };
    match session.request(op).await? {
        Reply::Appended(a) => Ok((
            StatusCode::CREATED,
            Json(Stored {
                id: a.email_id.0,
                uid: a.uid.get(),
                modseq: a.modseq,
            }),
        )),
        _ => Err(Problem::internal()),
    }
}

/// Add and remove keywords on many messages at once.
#[utoipa::path(post, path = "/v1/messages/keywords", tag = "messages", request_body = KeywordChange,
    responses((status = 200, description = "OK", body = Changed), (status = 404, description = "A message does not exist", body = Problem, content_type = "application/problem+json"), (status = 400, description = "Invalid input", body = Problem, content_type = "application/problem+json")))]
pub async fn set_keywords(
    session: Session,
    body: Body<KeywordChange>,
) -> Result<Json<Changed>, Problem> {
    let change = body.0;
    let emails = ids(&change.ids)?;
    let add = keywords(&change.add)?;
    let remove = keywords(&change.remove)?;
    match session
        .request(|s| Op::SetKeywords {
            session: s,
            emails: emails.clone(),
            add: add.clone(),
            remove: remove.clone(),
        })
        .await?
    {
        Reply::ModSeq(modseq) => Ok(Json(Changed { modseq })),
        _ => Err(Problem::internal()),
    }
}

/// The UIDs in `from` of the given messages; each must be filed there.
async fn uids_in(
    session: &Session,
    emails: &[EmailId],
    from: FolderId,
) -> Result<Vec<Uid>, Problem> {
    let Reply::Summaries(found) = session
        .request(|s| Op::Summaries {
            session: s,
            emails: emails.to_vec(),
        })
        .await?
    else {
        return Err(Problem::internal());
    };
    let placed: HashMap<EmailId, Uid> = found
        .iter()
        .filter_map(|e| {
            e.folders
                .iter()
                .find(|(f, _)| *f == from)
                .map(|(_, u)| (e.id, *u))
        })
        .collect();
    emails
        .iter()
        .map(|id| {
            placed.get(id).copied().ok_or_else(|| {
                Problem::new(
                    StatusCode::NOT_FOUND,
                    ProblemCode::NotFound,
                    format!("message {} is not in folder {}", id.0, from.0),
                )
            })
        })
        .collect()
}

async fn transfer(
    session: Session,
    t: Transfer,
    moving: bool,
) -> Result<Json<Transferred>, Problem> {
    let emails = ids(&t.ids)?;
    let (from, to) = (FolderId(t.from), FolderId(t.to));
    let uids = uids_in(&session, &emails, from).await?;
    let op = |s| {
        if moving {
            Op::Move {
                session: s,
                from,
                uids: uids.clone(),
                to,
            }
        } else {
            Op::Copy {
                session: s,
                from,
                uids: uids.clone(),
                to,
            }
        }
    };
    match session.request(op).await? {
        Reply::UidPairs(pairs) => Ok(Json(Transferred {
            uids: pairs
                .into_iter()
                .map(|(a, b)| crate::views::UidPair {
                    from_uid: a.get(),
                    to_uid: b.get(),
                })
                .collect(),
        })),
        _ => Err(Problem::internal()),
    }
}

/// Move messages from one folder to another.
#[utoipa::path(post, path = "/v1/messages/move", tag = "messages", request_body = Transfer,
    responses((status = 200, description = "OK", body = Transferred), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json")))]
pub async fn move_messages(
    session: Session,
    body: Body<Transfer>,
) -> Result<Json<Transferred>, Problem> {
    transfer(session, body.0, true).await
}

/// Copy messages into another folder.
#[utoipa::path(post, path = "/v1/messages/copy", tag = "messages", request_body = Transfer,
    responses((status = 200, description = "OK", body = Transferred), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json")))]
pub async fn copy_messages(
    session: Session,
    body: Body<Transfer>,
) -> Result<Json<Transferred>, Problem> {
    transfer(session, body.0, false).await
}

/// Delete messages for good, from every folder.
#[utoipa::path(post, path = "/v1/messages/delete", tag = "messages", request_body = Delete,
    responses((status = 204, description = "Done"), (status = 404, description = "A message does not exist", body = Problem, content_type = "application/problem+json"), (status = 400, description = "Invalid input", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_messages(session: Session, body: Body<Delete>) -> Result<StatusCode, Problem> {
    let emails = ids(&body.0.ids)?;
    session
        .request(|s| Op::Destroy {
            session: s,
            emails: emails.clone(),
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Delete one message for good.
#[utoipa::path(delete, path = "/v1/messages/{id}", tag = "messages",
    params(("id" = i64, Path, description = "Message id")),
    responses((status = 204, description = "Done"), (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_message(session: Session, Path(id): Path<i64>) -> Result<StatusCode, Problem> {
    let Reply::Summaries(found) = session
        .request(|s| Op::Summaries {
            session: s,
            emails: vec![EmailId(id)],
        })
        .await?
    else {
        return Err(Problem::internal());
    };
    if found.is_empty() {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            ProblemCode::NotFound,
            "no such message",
        ));
    }
    session
        .request(|s| Op::Destroy {
            session: s,
            emails: vec![EmailId(id)],
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Bytes used and the quota.
#[utoipa::path(get, path = "/v1/quota", tag = "mailbox",
    responses((status = 200, description = "OK", body = QuotaView)))]
pub async fn get_quota(session: Session) -> Result<Json<QuotaView>, Problem> {
    match session.request(|s| Op::Usage { session: s }).await? {
        Reply::Usage { used, quota } => Ok(Json(QuotaView { used, limit: quota })),
        _ => Err(Problem::internal()),
    }
}

/// Server-Sent Events: a `changed` event (data `{"modseq": N}`) whenever
/// the mailbox changes; `resync` when some were missed. While the stream
/// is open the alias counts as online: its mail lands at once.
#[utoipa::path(get, path = "/v1/events", tag = "mailbox",
    responses((status = 200, description = "OK", content_type = "text/event-stream", body = String)))]
pub async fn watch_events(
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
            let sse = match event {
                Ok(Event::Changed(c)) if c.address == session.address => {
                    let data = serde_json::json!({ "modseq": c.modseq }).to_string();
                    SseEvent::default().event("changed").data(data)
                }
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    SseEvent::default().event("resync").data("{}")
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if tx.send(Ok(sse)).await.is_err() {
                return;
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// A stream fed by a task: the task gets a sender, the stream ends when the
/// task does (or the client goes away and the sender fails).
pub(crate) fn async_stream<T, F, Fut>(f: F) -> impl Stream<Item = T>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(f(tx));
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
