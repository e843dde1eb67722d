//! `/v1/backups`: backups of the caller's own mailbox, taken on demand
//! (the primary takes them with the session's key) and listed.

use axum::Json;
use axum::http::StatusCode;
use cofre_storage::backup::BackupOutcome;
use cofre_storage::link::{Op, Reply};

use crate::auth::Session;
use crate::problem::Problem;
use crate::views::{BackupRunView, BackupView};

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
