//! Sending (RFC 8621 §7): `EmailSubmission/set` sends a stored Email
//! through the submission service's path (DKIM signing, our recipients'
//! rules, the outbound queue) and then applies `onSuccessUpdateEmail` /
//! `onSuccessDestroyEmail` as an implicit `Email/set`. Each submission is
//! kept as a record for 30 days, for `/get`, `/changes` and `/query`;
//! mail goes out at once, so every submission is `final`.

use serde_json::{Map, Value, json};

use super::records::{self, Type};
use super::{
    MethodError, MethodResult, SetResult, blob::blob_bytes, invalid_property, prefixed, set_args,
    set_error,
};
use crate::auth::Session;
use cofre_storage::mailbox::{EmailSummary, RecordKind, RecordWrite};
use cofre_storage::types::EmailId;

/// The submission capability.
pub const SUBMISSION: &str = "urn:ietf:params:jmap:submission";

/// The EmailSubmission type's records.
pub(super) const SUBMISSION_TYPE: Type = Type {
    kind: RecordKind::Submission,
    prefix: 's',
    properties: &[
        "id",
        "identityId",
        "emailId",
        "threadId",
        "envelope",
        "sendAt",
        "undoStatus",
        "deliveryStatus",
        "dsnBlobIds",
        "mdnBlobIds",
    ],
};

/// `EmailSubmission/get`.
pub(super) async fn get(
    session: &Session,
    account: &str,
    args: &Map<String, Value>,
) -> MethodResult {
    let (recs, list) = records::objects(session, SUBMISSION_TYPE).await?;
    records::get(
        SUBMISSION_TYPE,
        account,
        args,
        &recs.state.to_string(),
        &list,
    )
}

/// `EmailSubmission/changes`.
pub(super) async fn changes(
    session: &Session,
    account: &str,
    args: &Map<String, Value>,
) -> MethodResult {
    let recs = records::load(session, SUBMISSION_TYPE).await?;
    records::changes(SUBMISSION_TYPE, account, args, &recs)
}

/// Whether a submission matches a filter (a condition or an operator).
fn matches(o: &Map<String, Value>, filter: &Value) -> Result<bool, MethodError> {
    let f = filter
        .as_object()
        .ok_or_else(|| MethodError::invalid("a filter is an object"))?;
    if let Some(op) = f.get("operator") {
        let conditions = f
            .get("conditions")
            .and_then(Value::as_array)
            .ok_or_else(|| MethodError::invalid("an operator needs conditions"))?;
        let results = conditions
            .iter()
            .map(|c| matches(o, c))
            .collect::<Result<Vec<bool>, _>>()?;
        return match op.as_str() {
            Some("AND") => Ok(results.iter().all(|b| *b)),
            Some("OR") => Ok(results.iter().any(|b| *b)),
            Some("NOT") => Ok(!results.iter().any(|b| *b)),
            _ => Err(MethodError::new(
                "unsupportedFilter",
                "operator is AND, OR or NOT",
            )),
        };
    }
    let sent = o.get("sendAt").and_then(Value::as_str).unwrap_or_default();
    for (k, v) in f {
        let keep = match (k.as_str(), v) {
            ("identityIds" | "emailIds" | "threadIds", Value::Array(ids)) => {
                let field = &o[&k[..k.len() - 1]];
                ids.iter().any(|i| i == field)
            }
            ("undoStatus", Value::String(u)) => o.get("undoStatus") == Some(&json!(u)),
            // UTCDates in one format compare as strings.
            ("before", Value::String(d)) => {
                super::date_arg(v, "before")?;
                sent < d.as_str()
            }
            ("after", Value::String(d)) => {
                super::date_arg(v, "after")?;
                sent >= d.as_str()
            }
            _ => {
                return Err(MethodError::new(
                    "unsupportedFilter",
                    format!("no EmailSubmission filter {k} with that value"),
                ));
            }
        };
        if !keep {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `EmailSubmission/query` (RFC 8621 §7.3): filters `identityIds`,
/// `emailIds`, `threadIds`, `undoStatus`, `before`, `after`; sorts
/// `emailId`, `threadId`, `sentAt`.
pub(super) async fn query(
    session: &Session,
    account: &str,
    args: &Map<String, Value>,
) -> MethodResult {
    let (recs, list) = records::objects(session, SUBMISSION_TYPE).await?;
    let mut hits: Vec<&Map<String, Value>> = Vec::new();
    for o in &list {
        if match args.get("filter") {
            None | Some(Value::Null) => true,
            Some(f) => matches(o, f)?,
        } {
            hits.push(o);
        }
    }
    if let Some(Value::Array(sort)) = args.get("sort") {
        for c in sort.iter().rev() {
            let asc = c
                .get("isAscending")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            let key = match c.get("property").and_then(Value::as_str) {
                Some("emailId") => "emailId",
                Some("threadId") => "threadId",
                Some("sentAt") => "sendAt",
                other => {
                    return Err(MethodError::new(
                        "unsupportedSort",
                        format!("cannot sort EmailSubmissions by {other:?}"),
                    ));
                }
            };
            // Ids sort by their number, dates as strings.
            let rank = |o: &Map<String, Value>| -> (i64, String) {
                let s = o.get(key).and_then(Value::as_str).unwrap_or_default();
                (s[s.len().min(1)..].parse().unwrap_or(0), s.to_string())
            };
            hits.sort_by(|a, b| {
                let o = if key == "sendAt" {
                    rank(a).1.cmp(&rank(b).1)
                } else {
                    rank(a).cmp(&rank(b))
                };
                if asc { o } else { o.reverse() }
            });
        }
    }
    let ids: Vec<String> = hits
        .iter()
        .filter_map(|o| o.get("id").and_then(Value::as_str).map(str::to_string))
        .collect();
    let total = ids.len();
    let (position, page) = super::window(ids, args)?;
    let mut out = json!({
        "accountId": account,
        "queryState": recs.state.to_string(),
        "canCalculateChanges": false,
        "position": position,
        "ids": page,
    });
    if matches!(args.get("calculateTotal"), Some(Value::Bool(true))) {
        out["total"] = json!(total);
    }
    Ok(out)
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
    let bad = || invalid_property("envelope", format!("envelope.{key} needs addresses"));
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

/// Sends one submission; the object to keep (without its id) or a
/// SetError.
async fn send_one(
    session: &Session,
    submit: &dyn cofre_storage::outbound::Submit,
    v: &Value,
    created: &Map<String, Value>,
    identities: &[Map<String, Value>],
) -> Result<Map<String, Value>, Value> {
    let o = v
        .as_object()
        .ok_or_else(|| set_error("invalidProperties", "an EmailSubmission is an object"))?;
    if let Some(k) = o
        .keys()
        .find(|k| !["identityId", "emailId", "envelope", "undoStatus"].contains(&k.as_str()))
    {
        return Err(invalid_property(k, format!("{k} is set by the server")));
    }
    if !matches!(o.get("undoStatus"), None | Some(Value::Null))
        && o.get("undoStatus") != Some(&json!("final"))
    {
        // Nothing waits to be sent: a submission is final from the start.
        return Err(invalid_property(
            "undoStatus",
            "submissions are sent at once (final)",
        ));
    }
    let identity_id = o
        .get("identityId")
        .and_then(Value::as_str)
        .and_then(|i| resolve_id(i, created))
        .filter(|i| identities.iter().any(|x| x["id"] == i.as_str()))
        .ok_or_else(|| invalid_property("identityId", "no such identity"))?;
    let email_id = o
        .get("emailId")
        .and_then(Value::as_str)
        .and_then(|i| resolve_id(i, created))
        .ok_or_else(|| invalid_property("emailId", "emailId names no email"))?;
    let email =
        prefixed('e', &email_id).ok_or_else(|| invalid_property("emailId", "no such email"))?;
    let thread = super::summaries(session, vec![EmailId(email)])
        .await
        .map_err(|e| set_error("serverFail", e.description.unwrap_or_default()))?
        .first()
        .map(|s| format!("t{}", s.thread_id.0))
        .ok_or_else(|| invalid_property("emailId", "no such email"))?;
    let raw = blob_bytes(session, &format!("b{email}"))
        .await
        .map_err(|e| set_error("serverFail", e.description.unwrap_or_default()))?
        .ok_or_else(|| invalid_property("emailId", "no such email"))?;
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
                .ok_or_else(|| invalid_property("envelope", "envelope.mailFrom is required"))?;
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
    // The submission service took it: local recipients have it, remote
    // ones are in the outbound queue, whose later fate is not tracked.
    let status: Map<String, Value> = rcpts
        .iter()
        .map(|r| {
            let s = json!({"smtpReply": reply.trim_end(), "delivered": "unknown", "displayed": "unknown"});
            (r.clone(), s)
        })
        .collect();
    let Value::Object(kept) = json!({
        "identityId": identity_id,
        "emailId": email_id,
        "threadId": thread,
        "undoStatus": "final",
        "sendAt": cofre_storage::time::iso(cofre_storage::time::now()),
        "envelope": {
            "mailFrom": {"email": mail_from, "parameters": null},
            "rcptTo": rcpts.iter().map(|r| json!({"email": r, "parameters": null})).collect::<Vec<_>>(),
        },
        "deliveryStatus": status,
        "dsnBlobIds": [],
        "mdnBlobIds": [],
    }) else {
        unreachable!("a literal object")
    };
    Ok(kept)
}

/// `EmailSubmission/set` (RFC 8621 §7.5): creations send at once (no
/// delayed sending, so an update to `canceled` is `cannotUnsend`);
/// destroying a submission forgets its record, not the mail. The
/// response's `created` and the emails of updated and destroyed
/// submissions feed the implicit `Email/set` ([`follow_up`]).
pub(super) async fn submission_set(
    session: &Session,
    account: &str,
    args: &Map<String, Value>,
    created: &Map<String, Value>,
    submit: Option<&dyn cofre_storage::outbound::Submit>,
) -> Result<(Value, Map<String, Value>), MethodError> {
    let (create, update, destroy) = set_args(args)?;
    let (recs, list) = records::objects(session, SUBMISSION_TYPE).await?;
    let old = records::check_state(args, &recs)?;
    let (_, identities) = super::identity::identities(session).await?;
    let (mut not_created, mut not_updated, mut not_destroyed) =
        (Map::new(), Map::new(), Map::new());
    let mut sent: Vec<(String, Map<String, Value>)> = Vec::new();
    for (cid, v) in &create {
        let r = match submit {
            Some(submit) => send_one(session, submit, v, created, &identities).await,
            None => Err(set_error(
                "forbiddenToSend",
                "this server runs no SMTP service to send through",
            )),
        };
        match r {
            Ok(o) => sent.push((cid.clone(), o)),
            Err(e) => {
                not_created.insert(cid.clone(), e);
            }
        }
    }
    // Mail once sent is kept even if its record cannot be: the record is
    // written after sending, and a failure to write it is the method's.
    let writes = sent
        .iter()
        .map(|(_, o)| RecordWrite::Create(serde_json::to_vec(o).unwrap_or_default()))
        .collect();
    let ids = records::write(session, SUBMISSION_TYPE, writes).await?;
    let mut made = Map::new();
    for ((cid, mut o), n) in sent.into_iter().zip(ids) {
        o.insert("id".into(), json!(SUBMISSION_TYPE.id(n)));
        made.insert(cid, Value::Object(o));
    }
    let exists = |id: &str| list.iter().find(|o| o["id"] == id);
    let mut updated = Map::new();
    for (id, patch) in &update {
        let Some(current) = exists(id) else {
            not_updated.insert(id.clone(), set_error("notFound", "no such submission"));
            continue;
        };
        let Some(patch) = patch.as_object() else {
            not_updated.insert(id.clone(), set_error("invalidPatch", "not an object"));
            continue;
        };
        let err = patch
            .iter()
            .find_map(|(k, v)| match (k.as_str(), v.as_str()) {
                ("undoStatus", Some("canceled")) => Some(set_error(
                    "cannotUnsend",
                    "the message was sent when it was submitted",
                )),
                _ if current.get(k) == Some(v) => None,
                _ => Some(invalid_property(k, format!("{k} cannot change"))),
            });
        match err {
            Some(e) => not_updated.insert(id.clone(), e),
            None => updated.insert(id.clone(), Value::Null),
        };
    }
    let mut destroyed = Vec::new();
    let mut writes = Vec::new();
    for id in &destroy {
        match SUBMISSION_TYPE.record(id).filter(|_| exists(id).is_some()) {
            Some(n) => {
                writes.push(RecordWrite::Destroy(n));
                destroyed.push(json!(id));
            }
            None => {
                not_destroyed.insert(id.clone(), set_error("notFound", "no such submission"));
            }
        }
    }
    records::write(session, SUBMISSION_TYPE, writes).await?;
    // The emails of the submissions updated and destroyed, for the
    // implicit Email/set.
    let touched: Map<String, Value> = updated
        .keys()
        .map(String::as_str)
        .chain(destroyed.iter().filter_map(Value::as_str))
        .filter_map(|id| Some((id.to_string(), exists(id)?.get("emailId")?.clone())))
        .collect();
    let new = records::state_now(session, SUBMISSION_TYPE).await?;
    let response = SetResult {
        created: made,
        updated,
        destroyed,
        not_created,
        not_updated,
        not_destroyed,
    }
    .response(account, &old, &new);
    Ok((response, touched))
}

/// The implicit `Email/set` arguments after a successful
/// `EmailSubmission/set` (RFC 8621 §7.5): `#creationId` keys name the
/// email of that submission, other keys a submission created, updated
/// or destroyed by the call (`touched`: submission id → email id).
/// `None` when there is nothing to do.
pub(super) fn follow_up(
    account: &str,
    args: &Map<String, Value>,
    response: &Value,
    touched: &Map<String, Value>,
) -> Option<Map<String, Value>> {
    let empty = Map::new();
    let sent = response
        .get("created")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let email_of = |key: &str| -> Option<String> {
        let email = match key.strip_prefix('#') {
            Some(cid) => sent.get(cid)?.get("emailId"),
            None => sent
                .values()
                .find(|s| s.get("id").and_then(Value::as_str) == Some(key))
                .and_then(|s| s.get("emailId"))
                .or_else(|| touched.get(key)),
        };
        email?.as_str().map(str::to_string)
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
