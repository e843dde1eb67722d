//! `/v1/backups`: backups of the caller's own mailbox, taken on demand
//! (the primary takes them with the session's key), listed, downloaded,
//! deleted and restored.

use axum::Json;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE, ETAG};
use cofre_storage::backup::{BackupOutcome, BackupRecord};
use cofre_storage::link::{Op, Reply};

use crate::auth::Session;
use crate::problem::Problem;
use crate::views::{BackupRunView, BackupView, RestoreView};

/// Takes a backup now: an encrypted, verified copy of the mailbox beside
/// the earlier ones. 201 with the new version, or 200 with the latest when
/// the mailbox has not changed since.
#[utoipa::path(post, path = "/v1/backups", tag = "backups",
    responses((status = 201, description = "A new version was stored", body = BackupRunView),
        (status = 200, description = "Unchanged since the latest backup", body = BackupRunView)))]
pub async fn run_backup(session: Session) -> Result<(StatusCode, Json<BackupRunView>), Problem> {
    match session.request(|s| Op::Backup { session: s }).await? {
        Reply::Backup(BackupOutcome::Stored(b)) => Ok((
            StatusCode::CREATED,
            Json(BackupRunView {
                stored: true,
                backup: b.into(),
            }),
        )),
        Reply::Backup(BackupOutcome::Unchanged(b)) => Ok((
            StatusCode::OK,
            Json(BackupRunView {
                stored: false,
                backup: b.into(),
            }),
        )),
        _ => Err(Problem::internal()),
    }
}

/// The mailbox's backups, oldest first.
#[utoipa::path(get, path = "/v1/backups", tag = "backups",
    responses((status = 200, description = "OK", body = Vec<BackupView>)))]
pub async fn list_backups(session: Session) -> Result<Json<Vec<BackupView>>, Problem> {
    match session.request(|s| Op::Backups { session: s }).await? {
        Reply::Backups(list) => Ok(Json(list.into_iter().map(Into::into).collect())),
        _ => Err(Problem::internal()),
    }
}

/// How much of a backup file one link request carries.
const PIECE: u32 = 4 << 20;

/// The caller's backup `id`, or 404.
async fn find(session: &Session, id: &str) -> Result<BackupRecord, Problem> {
    match session.request(|s| Op::Backups { session: s }).await? {
        Reply::Backups(list) => list.into_iter().find(|b| b.id == id).ok_or_else(|| {
            Problem::new(
                StatusCode::NOT_FOUND,
                crate::problem::ProblemCode::NotFound,
                format!("no backup {id}"),
            )
        }),
        _ => Err(Problem::internal()),
    }
}

/// Downloads one backup: the encrypted file as stored, which opens only
/// with the mailbox's key. Its SHA-256 is the ETag.
#[utoipa::path(get, path = "/v1/backups/{id}", tag = "backups",
    params(("id" = String, Path, description = "The backup's id")),
    responses((status = 200, description = "The backup file", content_type = "application/octet-stream", body = crate::views::RawMessage),
        (status = 404, description = "No such backup", body = Problem, content_type = "application/problem+json")))]
pub async fn download_backup(
    session: Session,
    Path(id): Path<String>,
) -> Result<axum::response::Response, Problem> {
    use axum::response::IntoResponse;
    let record = find(&session, &id).await?;
    let size = record.size;
    // Pieces fetched as the client reads; the session lives as long as
    // the stream.
    let pieces = futures_util::stream::unfold((session, 0u64), move |(session, offset)| {
        let id = id.clone();
        async move {
            if offset >= size {
                return None;
            }
            let reply = session
                .request(|s| Op::BackupBytes {
                    session: s,
                    id: id.clone(),
                    offset,
                    len: PIECE,
                })
                .await;
            let piece = match reply {
                Ok(Reply::Raw(bytes)) if !bytes.is_empty() => bytes,
                // The file shrank or the link failed mid-download: end
                // the body short, which the client sees (Content-Length).
                _ => {
                    return Some((
                        Err(std::io::Error::other("backup read failed")),
                        (session, size),
                    ));
                }
            };
            let next = offset + piece.len() as u64;
            Some((Ok(piece), (session, next)))
        }
    });
    Ok((
        [
            (CONTENT_TYPE, "application/octet-stream".to_string()),
            (CONTENT_LENGTH, size.to_string()),
            (ETAG, format!("\"{}\"", record.sha256)),
            (
                CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}.cofre-backup\"", record.id),
            ),
        ],
        axum::body::Body::from_stream(pieces),
    )
        .into_response())
}

/// Deletes one backup, its file with it.
#[utoipa::path(delete, path = "/v1/backups/{id}", tag = "backups",
    params(("id" = String, Path, description = "The backup's id")),
    responses((status = 204, description = "Deleted"),
        (status = 404, description = "No such backup", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_backup(
    session: Session,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    match session
        .request(|s| Op::DeleteBackup {
            session: s,
            id: id.clone(),
        })
        .await?
    {
        Reply::Done => Ok(StatusCode::NO_CONTENT),
        _ => Err(Problem::internal()),
    }
}

/// Puts a backup back as the mailbox. The backup is checked first (its
/// SHA-256, and that it opens with the mailbox's key); the mailbox as it
/// was is kept as a held backup until the restore is confirmed. IMAP
/// clients see new UIDVALIDITYs; JMAP states from before the restore get
/// `cannotCalculateChanges`.
#[utoipa::path(post, path = "/v1/backups/{id}/restore", tag = "backups",
    params(("id" = String, Path, description = "The backup to put back")),
    responses((status = 200, description = "Restored", body = RestoreView),
        (status = 404, description = "No such backup", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Another backup task is running on the mailbox", body = Problem, content_type = "application/problem+json")))]
pub async fn restore_backup(
    session: Session,
    Path(id): Path<String>,
) -> Result<Json<RestoreView>, Problem> {
    match session
        .request(|s| Op::Restore {
            session: s,
            id: id.clone(),
        })
        .await?
    {
        Reply::Backups(mut held) if held.len() == 1 => Ok(Json(RestoreView {
            restored: id,
            replaced: held.remove(0).into(),
        })),
        _ => Err(Problem::internal()),
    }
}

/// Confirms the last restore: the backup of the replaced mailbox is no
/// longer held, and the retention may let it go.
#[utoipa::path(post, path = "/v1/backups/confirm-restore", tag = "backups",
    responses((status = 204, description = "Confirmed")))]
pub async fn confirm_restore(session: Session) -> Result<StatusCode, Problem> {
    match session
        .request(|s| Op::ConfirmRestore { session: s })
        .await?
    {
        Reply::Done => Ok(StatusCode::NO_CONTENT),
        _ => Err(Problem::internal()),
    }
}
