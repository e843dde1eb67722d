//! `/v1/settings/…`: the alias's own settings, kept as records in its
//! encrypted mailbox.

use axum::Json;
use axum::http::StatusCode;
use cofre_storage::link::{Op, Reply};
use cofre_storage::mailbox::{RecordKind, RecordWrite};
use cofre_storage::settings::{self, Pop3Settings};
use cofre_storage::types::FolderName;

use crate::auth::Session;
use crate::json::Json as Body;
use crate::problem::{Problem, ProblemCode};
use crate::views::Pop3SettingsView;

/// The alias's POP3 settings (the defaults when never set).
async fn pop3_settings(session: &Session) -> Result<Pop3Settings, Problem> {
    let Reply::Records(r) = session
        .request(|s| Op::Records {
            session: s,
            kind: RecordKind::Setting,
        })
        .await?
    else {
        return Err(Problem::internal());
    };
    match r
        .records
        .iter()
        .find(|r| r.id == settings::POP3)
        .and_then(|r| r.data.as_deref())
    {
        Some(bytes) => Pop3Settings::from_bytes(bytes).map_err(|_| Problem::internal()),
        None => Ok(Pop3Settings::default()),
    }
}

fn view(s: Pop3Settings) -> Pop3SettingsView {
    Pop3SettingsView {
        move_retrieved_to: s.move_retrieved_to.map(|f| f.as_str().to_string()),
        hide_retrieved: s.hide_retrieved,
    }
}

/// How POP3 treats the Inbox: leave retrieved mail (the default) or move
/// it to a folder, and whether mail retrieved before is hidden.
#[utoipa::path(get, path = "/v1/settings/pop3", tag = "settings",
    responses((status = 200, description = "OK", body = Pop3SettingsView)))]
pub async fn get_pop3(session: Session) -> Result<Json<Pop3SettingsView>, Problem> {
    Ok(Json(view(pop3_settings(&session).await?)))
}

/// Sets how POP3 treats the Inbox; the folder for retrieved mail must
/// exist and not be the Inbox. Sessions that start afterwards follow it.
#[utoipa::path(put, path = "/v1/settings/pop3", tag = "settings", request_body = Pop3SettingsView,
    responses((status = 200, description = "OK", body = Pop3SettingsView),
        (status = 400, description = "Invalid input", body = Problem, content_type = "application/problem+json")))]
pub async fn put_pop3(
    session: Session,
    body: Body<Pop3SettingsView>,
) -> Result<Json<Pop3SettingsView>, Problem> {
    let want = body.0;
    let invalid = |m: &str| Problem::new(StatusCode::BAD_REQUEST, ProblemCode::Invalid, m);
    let move_to = match &want.move_retrieved_to {
        None => None,
        Some(name) => {
            let Reply::Folders(all) = session.request(|s| Op::Folders { session: s }).await? else {
                return Err(Problem::internal());
            };
            let folder = all
                .iter()
                .find(|f| f.name == *name)
                .ok_or_else(|| invalid("move_retrieved_to names no folder"))?;
            if folder.role == Some(cofre_storage::types::Role::Inbox) {
                return Err(invalid(
                    "retrieved mail cannot be moved to the Inbox itself",
                ));
            }
            Some(FolderName::try_from(name.as_str()).map_err(|_| invalid("not a folder name"))?)
        }
    };
    let settings = Pop3Settings {
        move_retrieved_to: move_to,
        hide_retrieved: want.hide_retrieved,
    };
    session
        .request(|s| Op::WriteRecords {
            session: s,
            kind: RecordKind::Setting,
            writes: vec![RecordWrite::Put(settings::POP3, settings.to_bytes())],
        })
        .await?;
    Ok(Json(view(settings)))
}
