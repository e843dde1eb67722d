//! `VacationResponse/get` and `/set` (RFC 8621 §8): the one automatic
//! reply of an account, which the MX sends (`cofre_mx::vacation`).

use cofre_storage::admin::{AdminOp, AdminReply, Vacation};
use cofre_storage::link::{Op, Reply};
use serde_json::{Map, Value, json};

use super::{MethodError, MethodResult, date_arg, link_error, set_error, string_list};
use crate::auth::Session;

/// The vacation response capability.
pub const VACATION: &str = "urn:ietf:params:jmap:vacationresponse";

/// The one VacationResponse's id.
const SINGLETON: &str = "singleton";

/// Reads or writes the session's own alias's response (never another's:
/// the address is the session's).
async fn admin(session: &Session, op: AdminOp) -> Result<Vacation, MethodError> {
    match session.request(|_| Op::Admin(op.clone())).await {
        Ok(Reply::Admin(AdminReply::Vacation(v))) => Ok(v),
        Ok(_) => Err(MethodError::server("unexpected reply")),
        Err(p) => Err(link_error(p)),
    }
}

fn iso(t: Option<i64>) -> Value {
    t.map_or(Value::Null, |t| json!(cofre_storage::time::iso(t)))
}

fn object(v: &Vacation) -> Value {
    json!({
        "id": SINGLETON,
        "isEnabled": v.enabled,
        "fromDate": iso(v.from_date),
        "toDate": iso(v.to_date),
        "subject": v.subject,
        "textBody": v.text_body,
        "htmlBody": v.html_body,
    })
}

/// The state: the response itself, hashed (it changes only by `/set`).
fn state_of(v: &Vacation) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(object(v).to_string().as_bytes());
    hex::encode(&h[..8])
}

/// `VacationResponse/get`.
pub(super) async fn get(
    session: &Session,
    account: &str,
    args: &Map<String, Value>,
) -> MethodResult {
    let v = admin(session, AdminOp::Vacation(session.address.clone())).await?;
    let (list, not_found): (Vec<Value>, Vec<String>) = match string_list(args, "ids")? {
        None => (vec![object(&v)], Vec::new()),
        Some(ids) => {
            let (mine, other): (Vec<String>, Vec<String>) =
                ids.into_iter().partition(|i| i == SINGLETON);
            (mine.iter().take(1).map(|_| object(&v)).collect(), other)
        }
    };
    Ok(json!({"accountId": account, "state": state_of(&v), "list": list, "notFound": not_found}))
}

/// Applies a patch to the response; the SetError when it is not one.
fn patch(v: &mut Vacation, p: &Map<String, Value>) -> Result<(), Value> {
    let bad = |k: &str, d: &str| super::invalid_property(k, d);
    let text = |k: &str, x: &Value| -> Result<Option<String>, Value> {
        match x {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s.clone())),
            _ => Err(bad(k, "a string or null")),
        }
    };
    for (k, x) in p {
        match k.as_str() {
            "isEnabled" => v.enabled = x.as_bool().ok_or_else(|| bad(k, "a boolean"))?,
            "fromDate" | "toDate" => {
                let t = match x {
                    Value::Null => None,
                    x => Some(date_arg(x, k).map_err(|_| bad(k, "a UTCDate or null"))?),
                };
                if k == "fromDate" {
                    v.from_date = t;
                } else {
                    v.to_date = t;
                }
            }
            "subject" => v.subject = text(k, x)?,
            "textBody" => v.text_body = text(k, x)?,
            "htmlBody" => v.html_body = text(k, x)?,
            "id" if x == SINGLETON => {}
            _ => return Err(bad(k, "not a settable VacationResponse property")),
        }
    }
    Ok(())
}

/// `VacationResponse/set`: updates of the singleton only.
pub(super) async fn set(
    session: &Session,
    account: &str,
    args: &Map<String, Value>,
) -> MethodResult {
    let mut v = admin(session, AdminOp::Vacation(session.address.clone())).await?;
    let old = state_of(&v);
    if let Some(want) = args.get("ifInState").and_then(Value::as_str)
        && want != old
    {
        return Err(MethodError::new(
            "stateMismatch",
            format!("the state is {old}"),
        ));
    }
    let singleton = || set_error("singleton", "there is one VacationResponse: update it");
    let not_created: Map<String, Value> = match args.get("create") {
        Some(Value::Object(m)) => m.keys().map(|k| (k.clone(), singleton())).collect(),
        _ => Map::new(),
    };
    let not_destroyed: Map<String, Value> = string_list(args, "destroy")?
        .unwrap_or_default()
        .into_iter()
        .map(|k| (k, singleton()))
        .collect();
    let (mut updated, mut not_updated) = (Map::new(), Map::new());
    if let Some(Value::Object(m)) = args.get("update") {
        for (id, p) in m {
            let r = match (id.as_str(), p.as_object()) {
                (SINGLETON, Some(p)) => patch(&mut v, p),
                (SINGLETON, None) => Err(set_error("invalidPatch", "a patch is an object")),
                _ => Err(set_error(
                    "notFound",
                    "the one VacationResponse is singleton",
                )),
            };
            match r {
                Ok(()) => {
                    updated.insert(id.clone(), Value::Null);
                }
                Err(e) => {
                    not_updated.insert(id.clone(), e);
                }
            }
        }
    }
    if !updated.is_empty() {
        v = admin(
            session,
            AdminOp::SetVacation {
                address: session.address.clone(),
                vacation: v,
            },
        )
        .await?;
    }
    Ok(json!({
        "accountId": account, "oldState": old, "newState": state_of(&v),
        "created": null, "notCreated": super::or_null(not_created),
        "updated": super::or_null(updated), "notUpdated": super::or_null(not_updated),
        "destroyed": null, "notDestroyed": super::or_null(not_destroyed),
    }))
}
