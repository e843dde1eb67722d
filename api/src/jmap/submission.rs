//! Sending (RFC 8621 §6–7): `Identity/get` — one identity, the alias
//! itself — and `EmailSubmission/set`, which sends a stored Email through
//! the submission service's path (DKIM signing, our recipients' rules,
//! the outbound queue) and then applies `onSuccessUpdateEmail` /
//! `onSuccessDestroyEmail` as an implicit `Email/set`.

use serde_json::{Map, Value, json};

use super::{
    MAX_OBJECTS_IN_SET, MethodError, MethodResult, blob::blob_bytes, prefixed, set_error,
    string_list,
};
use crate::auth::Session;
use cofre_storage::mailbox::EmailSummary;

/// The submission capability.
pub const SUBMISSION: &str = "urn:ietf:params:jmap:submission";

/// The one identity of an account: the alias.
const IDENTITY: &str = "i1";

/// Identities never change (there is one, and it is the address).
const IDENTITY_STATE: &str = "1";

/// `Identity/get`.
pub(super) fn identity_get(
    session: &Session,
    account: &str,
    args: &Map<String, Value>,
) -> MethodResult {
    let ids = string_list(args, "ids")?;
    let me = json!({
        "id": IDENTITY,
        "name": "",
        "email": session.address.as_str(),
        "replyTo": null,
        "bcc": null,
        "textSignature": "",
        "htmlSignature": "",
        "mayDelete": false,
    });
    let (list, not_found): (Vec<Value>, Vec<String>) = match ids {
        None => (vec![me], Vec::new()),
        Some(ids) => {
            let (mine, other): (Vec<String>, Vec<String>) =
                ids.into_iter().partition(|i| i == IDENTITY);
            (mine.iter().map(|_| me.clone()).take(1).collect(), other)
        }
    };
    Ok(json!({"accountId": account, "state": IDENTITY_STATE, "list": list, "notFound": not_found}))
}

/// `Identity/changes`: there are never any.
pub(super) fn identity_changes(account: &str, args: &Map<String, Value>) -> MethodResult {
    match args.get("sinceState").and_then(Value::as_str) {
        Some(IDENTITY_STATE) => Ok(json!({
            "accountId": account, "oldState": IDENTITY_STATE, "newState": IDENTITY_STATE,
            "hasMoreChanges": false, "created": [], "updated": [], "destroyed": [],
        })),
        Some(_) => Err(MethodError::new("cannotCalculateChanges", "unknown state")),
        None => Err(MethodError::invalid("sinceState is required")),
    }
}

/// An id argument that may name an object created earlier in the same
/// request (`#creationId`).
pub(super) fn resolve_id(id: &str, created: &Map<String, Value>) -> Option<String> {
    match id.strip_prefix('#') {
        Some(cid) => created.get(cid)?.as_str().map(str::to_string),
        None => Some(id.to_string()),
    }
}

/// The message without its `Bcc` field (RFC 8621 §7.5: blind copies stay
/// blind); every other byte as stored.
fn without_bcc(raw: &[u8]) -> Vec<u8> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(raw.len(), |p| p + 2);
    let mut out = Vec::with_capacity(raw.len());
    let mut skipping = false;
    for line in raw[..end].split_inclusive(|&b| b == b'\n') {
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if !continuation {
            skipping = line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"bcc:");
        }
        if !skipping {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(&raw[end..]);
    out
}

fn addresses_of(list: &Value, key: &str) -> Result<Vec<String>, Value> {
    let bad = || {
        let mut e = set_error(
            "invalidProperties",
            format!("envelope.{key} needs addresses"),
        );
        e["properties"] = json!(["envelope"]);
        e
    };
    list.as_array()
        .ok_or_else(bad)?
        .iter()
        .map(|a| {
            a.get("email")
                .and_then(Value::as_str)
                .filter(|e| e.contains('@') && !e.contains(['<', '>', ' ', '\r', '\n']))
                .map(str::to_string)
                .ok_or_else(bad)
        })
        .collect()
}

/// Sends one submission; the created object or a SetError.
async fn send_one(
    session: &Session,
    submit: &dyn cofre_storage::outbound::Submit,
    v: &Value,
    created: &Map<String, Value>,
) -> Result<Value, Value> {
    let o = v
        .as_object()
        .ok_or_else(|| set_error("invalidProperties", "an EmailSubmission is an object"))?;
    let invalid = |p: &str, d: &str| {
        let mut e = set_error("invalidProperties", d);
        e["properties"] = json!([p]);
        e
    };
    if o.get("identityId").and_then(Value::as_str) != Some(IDENTITY) {
        return Err(invalid("identityId", "no such identity"));
    }
    let email_id = o
        .get("emailId")
        .and_then(Value::as_str)
        .and_then(|i| resolve_id(i, created))
        .ok_or_else(|| invalid("emailId", "emailId names no email"))?;
    let raw = match prefixed('e', &email_id) {
        Some(n) => blob_bytes(session, &format!("b{n}"))
            .await
            .map_err(|e| set_error("serverFail", e.description.unwrap_or_default()))?,
        None => None,
    }
    .ok_or_else(|| invalid("emailId", "no such email"))?;
    let summary = EmailSummary::of_raw(&raw);
    let me = session.address.as_str();
    // The author is the alias: mail is never sent in another's name.
    if !summary
        .from
        .iter()
        .any(|a| a.email.eq_ignore_ascii_case(me))
    {
        return Err(set_error(
            "forbiddenFrom",
            format!("the From header must be {me}"),
        ));
    }
    let (mail_from, rcpts) = match o.get("envelope").filter(|e| !e.is_null()) {
        Some(env) => {
            let from = env
                .get("mailFrom")
                .map(|m| addresses_of(&json!([m]), "mailFrom"))
                .transpose()?
                .and_then(|mut v| v.pop())
                .ok_or_else(|| invalid("envelope", "envelope.mailFrom is required"))?;
            if !from.eq_ignore_ascii_case(me) {
                return Err(set_error(
                    "forbiddenMailFrom",
                    format!("the envelope sender must be {me}"),
                ));
            }
            let to = addresses_of(env.get("rcptTo").unwrap_or(&Value::Null), "rcptTo")?;
            (from, to)
        }
        None => {
            let mut to: Vec<String> = Vec::new();
            for a in summary.to.iter().chain(&summary.cc).chain(&summary.bcc) {
                if !a.email.is_empty() && !to.iter().any(|t| t.eq_ignore_ascii_case(&a.email)) {
                    to.push(a.email.clone());
                }
            }
            (me.to_string(), to)
        }
    };
    if rcpts.is_empty() {
        return Err(set_error("noRecipients", "the message has no recipients"));
    }
    let sent = without_bcc(&raw);
    let reply = submit
        .submit(&session.address, session.id, &mail_from, &rcpts, &sent)
        .await;
    if !reply.starts_with('2') {
        let kind = if reply.starts_with('5') {
            "forbiddenToSend"
        } else {
            "serverFail"
        };
        return Err(set_error(kind, reply.trim_end().to_string()));
    }
    let id: [u8; 8] = cofre_storage::keys::random_bytes();
    Ok(json!({
        "id": format!("s{}", hex::encode(id)),
        "emailId": email_id,
        "threadId": null,
        "undoStatus": "final",
        "sendAt": cofre_storage::time::iso(cofre_storage::time::now()),
        "envelope": {
            "mailFrom": {"email": mail_from, "parameters": null},
            "rcptTo": rcpts.iter().map(|r| json!({"email": r, "parameters": null})).collect::<Vec<_>>(),
        },
    }))
}

/// `EmailSubmission/set` (RFC 8621 §7.5): creations send at once (no
/// delayed sending, so nothing to update or cancel afterwards).
pub(super) async fn submission_set(
    session: &Session,
    account: &str,
    args: &Map<String, Value>,
    created: &Map<String, Value>,
    submit: Option<&dyn cofre_storage::outbound::Submit>,
) -> MethodResult {
    let create = match args.get("create") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(MethodError::invalid("create is an object")),
    };
    if create.len() > MAX_OBJECTS_IN_SET {
        return Err(MethodError::new("requestTooLarge", "too many submissions"));
    }
    let (mut made, mut not_created) = (Map::new(), Map::new());
    for (cid, v) in &create {
        let r = match submit {
            Some(submit) => send_one(session, submit, v, created).await,
            None => Err(set_error(
                "forbiddenToSend",
                "this server runs no SMTP service to send through",
            )),
        };
        match r {
            Ok(v) => made.insert(cid.clone(), v),
            Err(e) => not_created.insert(cid.clone(), e),
        };
    }
    // Sent at once: there is nothing left to change or cancel.
    let refuse = |what: &str| -> Value {
        let ids: Vec<String> = match args.get(what) {
            Some(Value::Object(m)) => m.keys().cloned().collect(),
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        };
        let m: Map<String, Value> = ids
            .into_iter()
            .map(|i| (i, set_error("notFound", "submissions are final once sent")))
            .collect();
        super::or_null(m)
    };
    Ok(json!({
        "accountId": account,
        "oldState": IDENTITY_STATE,
        "newState": IDENTITY_STATE,
        "created": super::or_null(made),
        "notCreated": super::or_null(not_created),
        "updated": null,
        "notUpdated": refuse("update"),
        "destroyed": null,
        "notDestroyed": refuse("destroy"),
    }))
}

/// The implicit `Email/set` arguments after a successful
/// `EmailSubmission/set` (RFC 8621 §7.5): `#creationId` keys name the
/// email of that submission. `None` when there is nothing to do.
pub(super) fn follow_up(
    account: &str,
    args: &Map<String, Value>,
    response: &Value,
) -> Option<Map<String, Value>> {
    let sent = response.get("created")?.as_object()?;
    let email_of = |key: &str| -> Option<String> {
        match key.strip_prefix('#') {
            Some(cid) => sent.get(cid)?.get("emailId")?.as_str().map(str::to_string),
            // A submission id: one of this call's.
            None => sent
                .values()
                .find(|s| s.get("id").and_then(Value::as_str) == Some(key))?
                .get("emailId")?
                .as_str()
                .map(str::to_string),
        }
    };
    let mut update = Map::new();
    if let Some(Value::Object(m)) = args.get("onSuccessUpdateEmail") {
        for (k, patch) in m {
            if let Some(e) = email_of(k) {
                update.insert(e, patch.clone());
            }
        }
    }
    let mut destroy = Vec::new();
    if let Some(Value::Array(a)) = args.get("onSuccessDestroyEmail") {
        for k in a.iter().filter_map(Value::as_str) {
            if let Some(e) = email_of(k) {
                destroy.push(json!(e));
            }
        }
    }
    if update.is_empty() && destroy.is_empty() {
        return None;
    }
    let mut out = Map::new();
    out.insert("accountId".into(), json!(account));
    if !update.is_empty() {
        out.insert("update".into(), Value::Object(update));
    }
    if !destroy.is_empty() {
        out.insert("destroy".into(), Value::Array(destroy));
    }
    Some(out)
}
