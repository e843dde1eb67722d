//! `Identity/get`, `/changes` and `/set` (RFC 8621 §6). Every identity
//! sends as the alias — mail is never sent in another's name — so what an
//! identity adds is a display name, Reply-To and Bcc addresses and
//! signatures. `i0` is the alias's own identity: it always exists (with
//! empty defaults until it is updated) and cannot be destroyed; more can
//! be created, each kept as a record in the encrypted mailbox.

use serde_json::{Map, Value, json};

use super::records::{self, Type};
use super::{MethodError, MethodResult, SetResult, invalid_property, set_args, set_error};
use crate::auth::Session;
use cofre_storage::mailbox::{RecordKind, RecordWrite};

/// The Identity type's records.
pub(super) const IDENTITY: Type = Type {
    kind: RecordKind::Identity,
    prefix: 'i',
    properties: &[
        "id",
        "name",
        "email",
        "replyTo",
        "bcc",
        "textSignature",
        "htmlSignature",
        "mayDelete",
    ],
};

/// The record id of the alias's own identity.
const OWN: i64 = 0;

/// The alias's own identity before it is ever updated.
fn own_default(address: &str) -> Map<String, Value> {
    let Value::Object(o) = json!({
        "name": "", "email": address, "replyTo": null, "bcc": null,
        "textSignature": "", "htmlSignature": "",
    }) else {
        unreachable!("a literal object")
    };
    o
}

/// Every identity of the account: the own one first, then those created.
pub(super) async fn identities(
    session: &Session,
) -> Result<(cofre_storage::mailbox::Records, Vec<Map<String, Value>>), MethodError> {
    let (recs, mut list) = records::objects(session, IDENTITY).await?;
    if !list.iter().any(|o| o["id"] == IDENTITY.id(OWN)) {
        let mut own = own_default(session.address.as_str());
        own.insert("id".into(), json!(IDENTITY.id(OWN)));
        list.insert(0, own);
    }
    for o in &mut list {
        let may_delete = o["id"] != IDENTITY.id(OWN);
        o.insert("mayDelete".into(), json!(may_delete));
    }
    Ok((recs, list))
}

/// `Identity/get`.
pub(super) async fn get(
    session: &Session,
    account: &str,
    args: &Map<String, Value>,
) -> MethodResult {
    let (recs, list) = identities(session).await?;
    records::get(IDENTITY, account, args, &recs.state.to_string(), &list)
}

/// `Identity/changes`.
pub(super) async fn changes(
    session: &Session,
    account: &str,
    args: &Map<String, Value>,
) -> MethodResult {
    let recs = records::load(session, IDENTITY).await?;
    let mut out = records::changes(IDENTITY, account, args, &recs)?;
    // The own identity existed before its first update stored it: to the
    // client that is an update, not a creation.
    let own = json!(IDENTITY.id(OWN));
    if let Some(created) = out["created"].as_array_mut()
        && let Some(at) = created.iter().position(|i| *i == own)
    {
        created.remove(at);
        if let Some(updated) = out["updated"].as_array_mut() {
            updated.insert(0, own);
        }
    }
    Ok(out)
}

/// A list of addresses (`EmailAddress[]|null`), checked.
fn address_list(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.iter().all(|x| {
            x.get("email")
                .and_then(Value::as_str)
                .is_some_and(|e| e.contains('@') && !e.contains(['<', '>', ' ', '\r', '\n']))
                && matches!(x.get("name"), None | Some(Value::Null | Value::String(_)))
        }),
        _ => false,
    }
}

/// Applies the properties of `patch` to `o` (the stored object), checking
/// each; `email` must name the alias.
fn apply(o: &mut Map<String, Value>, patch: &Map<String, Value>, me: &str) -> Result<(), Value> {
    for (k, v) in patch {
        let ok = match k.as_str() {
            "name" | "textSignature" | "htmlSignature" => v.is_string(),
            "replyTo" | "bcc" => address_list(v),
            "email" => match v.as_str() {
                Some(e) if e.eq_ignore_ascii_case(me) => true,
                Some(_) if o.contains_key("email") => {
                    return Err(invalid_property("email", "email cannot change"));
                }
                Some(_) => {
                    return Err(set_error(
                        "forbiddenFrom",
                        format!("identities send as {me}"),
                    ));
                }
                None => false,
            },
            // Server-set: accepted only unchanged (an update may echo them).
            "id" | "mayDelete" => o.get(k) == Some(v),
            _ => false,
        };
        if !ok {
            return Err(invalid_property(k, format!("{k} is not valid here")));
        }
        if k != "id" && k != "mayDelete" {
            o.insert(k.clone(), v.clone());
        }
    }
    Ok(())
}

fn bytes(o: &Map<String, Value>) -> Vec<u8> {
    let mut o = o.clone();
    o.remove("id");
    o.remove("mayDelete");
    serde_json::to_vec(&o).unwrap_or_default()
}

/// `Identity/set`.
pub(super) async fn set(
    session: &Session,
    account: &str,
    args: &Map<String, Value>,
) -> MethodResult {
    let (create, update, destroy) = set_args(args)?;
    let (recs, list) = identities(session).await?;
    let old = records::check_state(args, &recs)?;
    let me = session.address.as_str();
    let (mut not_created, mut not_updated, mut not_destroyed) =
        (Map::new(), Map::new(), Map::new());
    let mut writes = Vec::new();
    let mut creating: Vec<(String, Map<String, Value>)> = Vec::new();
    for (cid, v) in &create {
        let Some(patch) = v.as_object() else {
            not_created.insert(cid.clone(), set_error("invalidProperties", "not an object"));
            continue;
        };
        if !patch.contains_key("email") {
            not_created.insert(cid.clone(), invalid_property("email", "email is required"));
            continue;
        }
        let mut o = own_default(me);
        o.remove("email");
        match apply(&mut o, patch, me) {
            Ok(()) => {
                writes.push(RecordWrite::Create(bytes(&o)));
                // What the client left out, told back with the id.
                o.retain(|k, _| !patch.contains_key(k));
                creating.push((cid.clone(), o));
            }
            Err(e) => {
                not_created.insert(cid.clone(), e);
            }
        }
    }
    let mut updated = Map::new();
    for (id, v) in &update {
        let found = list.iter().find(|o| o["id"] == id.as_str());
        let (Some(current), Some(n)) = (found, IDENTITY.record(id)) else {
            not_updated.insert(id.clone(), set_error("notFound", "no such identity"));
            continue;
        };
        let Some(patch) = v.as_object() else {
            not_updated.insert(id.clone(), set_error("invalidPatch", "not an object"));
            continue;
        };
        let mut o = current.clone();
        match apply(&mut o, patch, me) {
            Ok(()) => {
                writes.push(RecordWrite::Put(n, bytes(&o)));
                updated.insert(id.clone(), Value::Null);
            }
            Err(e) => {
                not_updated.insert(id.clone(), e);
            }
        }
    }
    let mut destroyed = Vec::new();
    for id in &destroy {
        match IDENTITY.record(id) {
            Some(OWN) => {
                not_destroyed.insert(
                    id.clone(),
                    set_error("forbidden", "the alias's own identity cannot be destroyed"),
                );
            }
            Some(n) if list.iter().any(|o| o["id"] == id.as_str()) => {
                writes.push(RecordWrite::Destroy(n));
                destroyed.push(json!(id));
            }
            _ => {
                not_destroyed.insert(id.clone(), set_error("notFound", "no such identity"));
            }
        }
    }
    let ids = records::write(session, IDENTITY, writes).await?;
    let mut created = Map::new();
    for ((cid, mut o), n) in creating.into_iter().zip(ids) {
        o.insert("id".into(), json!(IDENTITY.id(n)));
        o.insert("mayDelete".into(), json!(true));
        created.insert(cid, Value::Object(o));
    }
    let new = records::state_now(session, IDENTITY).await?;
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
