//! `Mailbox/set` (RFC 8621 §2.5): create, rename and move, (un)subscribe,
//! and destroy — with `onDestroyRemoveEmails`, `mailboxHasEmail` and
//! `mailboxHasChild`. A mailbox is a folder whose name is its path.

use cofre_storage::link::{Op, Reply};
use cofre_storage::mailbox::Folder;
use cofre_storage::{FolderId, FolderName};
use serde_json::{Map, Value, json};

use super::{MethodError, MethodResult, folder_of, folders, set_error, state};
use crate::auth::Session;

use super::invalid_property as invalid;

/// What a create or update asks for.
#[derive(Default)]
struct Wanted {
    name: Option<String>,
    /// `Some(None)`: top level.
    parent: Option<Option<FolderId>>,
    subscribed: Option<bool>,
}

/// Reads the settable properties; `created` resolves `#creationId`
/// parents made earlier in the same call.
fn wanted(o: &Map<String, Value>, created: &Map<String, Value>) -> Result<Wanted, Value> {
    let mut w = Wanted::default();
    for (k, v) in o {
        match (k.as_str(), v) {
            ("name", Value::String(n)) => {
                if n.is_empty() || n.contains('/') || n.chars().any(char::is_control) {
                    return Err(invalid("name", "a name is not empty and has no '/'"));
                }
                w.name = Some(n.clone());
            }
            ("parentId", Value::Null) => w.parent = Some(None),
            ("parentId", Value::String(p)) => {
                let id = match p.strip_prefix('#') {
                    Some(cid) => created.get(cid).and_then(Value::as_str).unwrap_or(""),
                    None => p,
                };
                let f = folder_of(id).ok_or_else(|| invalid("parentId", "no such mailbox"))?;
                w.parent = Some(Some(f));
            }
            ("isSubscribed", Value::Bool(b)) => w.subscribed = Some(*b),
            // Roles are the server's; the sort order follows them.
            ("role", Value::Null) => {}
            ("sortOrder", v) if v.as_u64().is_some() => {}
            (k, _) => {
                return Err(invalid(k, format!("{k} cannot be set here")));
            }
        }
    }
    Ok(w)
}

/// The full path of `name` under `parent`.
fn path(name: &str, parent: Option<FolderId>, all: &[Folder]) -> Result<FolderName, Value> {
    let full = match parent {
        None => name.to_string(),
        Some(p) => {
            let parent = all
                .iter()
                .find(|f| f.id == p)
                .ok_or_else(|| invalid("parentId", "no such mailbox"))?;
            format!("{}/{name}", parent.name)
        }
    };
    FolderName::try_from(full.as_str()).map_err(|e| invalid("name", e.to_string()))
}

fn failed(p: crate::Problem) -> Value {
    match p.status() {
        axum::http::StatusCode::CONFLICT => set_error("invalidProperties", "that name is taken"),
        axum::http::StatusCode::NOT_FOUND => set_error("notFound", "no such mailbox"),
        axum::http::StatusCode::BAD_REQUEST => {
            set_error("invalidProperties", p.detail().to_string())
        }
        _ => set_error("serverFail", p.detail().to_string()),
    }
}

/// Every folder, as it is now (each change of a `/set` reads them again:
/// the ones before it may have moved or made some).
async fn all_folders(session: &Session) -> Result<Vec<Folder>, Value> {
    folders(session)
        .await
        .map_err(|e| set_error("serverFail", e.description.unwrap_or_default()))
}

/// The folder `id` among `all`.
fn find(all: &[Folder], id: FolderId) -> Result<&Folder, Value> {
    all.iter()
        .find(|f| f.id == id)
        .ok_or_else(|| set_error("notFound", "no such mailbox"))
}

async fn subscribe(session: &Session, folder: FolderId, subscribed: bool) -> Result<(), Value> {
    session
        .request(|s| Op::Subscribe {
            session: s,
            folder,
            subscribed,
        })
        .await
        .map(|_| ())
        .map_err(failed)
}

async fn create(
    session: &Session,
    o: &Map<String, Value>,
    created: &Map<String, Value>,
) -> Result<Value, Value> {
    let w = wanted(o, created)?;
    let name = w.name.ok_or_else(|| invalid("name", "name is required"))?;
    let all = all_folders(session).await?;
    let full = path(&name, w.parent.flatten(), &all)?;
    let folder = match session
        .request(|s| Op::CreateFolder {
            session: s,
            name: full.clone(),
        })
        .await
    {
        Ok(Reply::Folder(f)) => f,
        Ok(_) => return Err(set_error("serverFail", "unexpected reply")),
        Err(p) => return Err(failed(p)),
    };
    let subscribed = w.subscribed.unwrap_or(false);
    if subscribed != folder.subscribed {
        subscribe(session, folder.id, subscribed).await?;
    }
    Ok(json!({
        "id": format!("m{}", folder.id.0),
        "role": null,
        "sortOrder": super::sort_order(&folder),
        "isSubscribed": subscribed,
        "totalEmails": 0, "unreadEmails": 0, "totalThreads": 0, "unreadThreads": 0,
        "myRights": super::rights(&folder),
    }))
}

async fn update(
    session: &Session,
    id: FolderId,
    o: &Map<String, Value>,
    created: &Map<String, Value>,
) -> Result<(), Value> {
    let w = wanted(o, created)?;
    let all = all_folders(session).await?;
    let f = find(&all, id)?;
    if w.name.is_some() || w.parent.is_some() {
        if f.role.is_some() {
            return Err(set_error(
                "forbidden",
                "a mailbox with a role keeps its name and place",
            ));
        }
        let name = w.name.unwrap_or_else(|| super::mailbox_name(f).to_string());
        let parent = match w.parent {
            Some(p) => p,
            None => super::parent_of(f, &all),
        };
        if parent == Some(id) {
            return Err(invalid("parentId", "a mailbox cannot be its own parent"));
        }
        let to = path(&name, parent, &all)?;
        if to.as_str() != f.name {
            session
                .request(|s| Op::RenameFolder {
                    session: s,
                    folder: id,
                    name: to.clone(),
                })
                .await
                .map_err(failed)?;
        }
    }
    if let Some(b) = w.subscribed {
        subscribe(session, id, b).await?;
    }
    Ok(())
}

async fn destroy(session: &Session, id: FolderId, remove_emails: bool) -> Result<(), Value> {
    let all = all_folders(session).await?;
    let f = find(&all, id)?;
    if f.role.is_some() {
        return Err(set_error(
            "forbidden",
            "a mailbox with a role is not destroyed",
        ));
    }
    let prefix = format!("{}/", f.name);
    if all.iter().any(|g| g.name.starts_with(&prefix)) {
        return Err(set_error("mailboxHasChild", "destroy its children first"));
    }
    if f.total > 0 && !remove_emails {
        return Err(set_error(
            "mailboxHasEmail",
            "it holds emails (set onDestroyRemoveEmails to remove them)",
        ));
    }
    session
        .request(|s| Op::DeleteFolder {
            session: s,
            folder: id,
        })
        .await
        .map(|_| ())
        .map_err(failed)
}

/// `Mailbox/set`.
pub(super) async fn mailbox_set(
    session: &Session,
    account: &str,
    args: &Map<String, Value>,
) -> MethodResult {
    let old = super::old_state(session, args).await?;
    let (creates, updates, destroys) = super::set_args(args)?;
    let remove_emails = match args.get("onDestroyRemoveEmails") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(MethodError::invalid("onDestroyRemoveEmails is a boolean")),
    };
    let (mut created, mut not_created) = (Map::new(), Map::new());
    // Creation ids made so far, for `#id` parents.
    let mut made = Map::new();
    for (cid, v) in &creates {
        let r = match v.as_object() {
            Some(o) => create(session, o, &made).await,
            None => Err(set_error("invalidProperties", "a Mailbox is an object")),
        };
        match r {
            Ok(v) => {
                made.insert(cid.clone(), v["id"].clone());
                created.insert(cid.clone(), v);
            }
            Err(e) => {
                not_created.insert(cid.clone(), e);
            }
        }
    }
    let (mut updated, mut not_updated) = (Map::new(), Map::new());
    for (id, v) in &updates {
        let r = match (folder_of(id), v.as_object()) {
            (Some(f), Some(o)) => update(session, f, o, &made).await,
            (None, _) => Err(set_error("notFound", "no such mailbox")),
            (_, None) => Err(set_error("invalidPatch", "a patch is an object")),
        };
        match r {
            Ok(()) => updated.insert(id.clone(), Value::Null),
            Err(e) => not_updated.insert(id.clone(), e),
        };
    }
    let (mut destroyed, mut not_destroyed) = (Vec::new(), Map::new());
    for id in &destroys {
        let r = match folder_of(id) {
            Some(f) => destroy(session, f, remove_emails).await,
            None => Err(set_error("notFound", "no such mailbox")),
        };
        match r {
            Ok(()) => destroyed.push(json!(id)),
            Err(e) => {
                not_destroyed.insert(id.clone(), e);
            }
        }
    }
    let new = state(session).await?;
    Ok(super::SetResult {
        created,
        updated,
        destroyed,
        not_created,
        not_updated,
        not_destroyed,
    }
    .response(account, &old, &new))
}
