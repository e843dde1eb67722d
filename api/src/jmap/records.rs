//! The JMAP types kept as mailbox records (`Identity`, `EmailSubmission`):
//! each object is its JSON in the alias's encrypted mailbox, its id the
//! record's with a one-letter prefix, and its state the MODSEQ of the
//! kind's last change. `/get` and `/changes` are the same for both.

use serde_json::{Map, Value, json};

use super::{MethodError, MethodResult, link_error, properties_arg, string_list};
use crate::auth::Session;
use cofre_storage::link::{Op, Reply};
use cofre_storage::mailbox::{Record, RecordKind, RecordWrite, Records};

/// A record-backed JMAP type.
#[derive(Clone, Copy)]
pub(super) struct Type {
    /// The kind of record.
    pub kind: RecordKind,
    /// The prefix of its ids.
    pub prefix: char,
    /// Its properties, `id` first (the default of `/get`).
    pub properties: &'static [&'static str],
}

impl Type {
    /// The JMAP id of a record.
    pub fn id(self, record: i64) -> String {
        format!("{}{record}", self.prefix)
    }

    /// The record id of a JMAP id.
    pub fn record(self, id: &str) -> Option<i64> {
        super::prefixed(self.prefix, id)
    }
}

/// The records of a kind, tombstones included.
pub(super) async fn load(session: &Session, t: Type) -> Result<Records, MethodError> {
    let kind = t.kind;
    match session.request(|s| Op::Records { session: s, kind }).await {
        Ok(Reply::Records(r)) => Ok(r),
        Ok(_) => Err(MethodError::server("unexpected reply")),
        Err(p) => Err(link_error(p)),
    }
}

/// Writes records, all or none; the created ids.
pub(super) async fn write(
    session: &Session,
    t: Type,
    writes: Vec<RecordWrite>,
) -> Result<Vec<i64>, MethodError> {
    let kind = t.kind;
    if writes.is_empty() {
        return Ok(Vec::new());
    }
    match session
        .request(|s| Op::WriteRecords {
            session: s,
            kind,
            writes: writes.clone(),
        })
        .await
    {
        Ok(Reply::Ids(ids)) => Ok(ids),
        Ok(_) => Err(MethodError::server("unexpected reply")),
        Err(p) => Err(link_error(p)),
    }
}

/// The records of a kind and their live objects, in record order.
pub(super) async fn objects(
    session: &Session,
    t: Type,
) -> Result<(Records, Vec<Map<String, Value>>), MethodError> {
    let recs = load(session, t).await?;
    let list = recs.records.iter().filter_map(|r| object(t, r)).collect();
    Ok((recs, list))
}

/// The current state after a write (the kind's highest MODSEQ).
pub(super) async fn state_now(session: &Session, t: Type) -> Result<String, MethodError> {
    let kind = t.kind;
    match session
        .request(|s| Op::RecordsState { session: s, kind })
        .await
    {
        Ok(Reply::ModSeq(m)) => Ok(m.to_string()),
        Ok(_) => Err(MethodError::server("unexpected reply")),
        Err(p) => Err(link_error(p)),
    }
}

/// A live record's object, its id included; `None` for a tombstone or
/// bytes that are not a JSON object.
pub(super) fn object(t: Type, r: &Record) -> Option<Map<String, Value>> {
    let mut o: Map<String, Value> = serde_json::from_slice(r.data.as_deref()?).ok()?;
    o.insert("id".into(), json!(t.id(r.id)));
    Some(o)
}

/// `ifInState` against the kind's state: the old state, or
/// `stateMismatch`.
pub(super) fn check_state(
    args: &Map<String, Value>,
    records: &Records,
) -> Result<String, MethodError> {
    let old = records.state.to_string();
    match args.get("ifInState").and_then(Value::as_str) {
        Some(want) if want != old => Err(MethodError::new(
            "stateMismatch",
            format!("the state is {old}"),
        )),
        _ => Ok(old),
    }
}

/// `/get` over live objects (`objects` by JMAP id, in record order).
pub(super) fn get(
    t: Type,
    account: &str,
    args: &Map<String, Value>,
    state: &str,
    objects: &[Map<String, Value>],
) -> MethodResult {
    let ids = string_list(args, "ids")?;
    if ids
        .as_ref()
        .is_some_and(|i| i.len() > super::MAX_OBJECTS_IN_GET)
    {
        return Err(MethodError::new(
            "requestTooLarge",
            format!("at most {} ids", super::MAX_OBJECTS_IN_GET),
        ));
    }
    let mut props = properties_arg(args, t.properties)?;
    if let Some(bad) = props.iter().find(|p| !t.properties.contains(&p.as_str())) {
        return Err(MethodError::invalid(format!("unknown property {bad}")));
    }
    if !props.iter().any(|p| p == "id") {
        props.push("id".into());
    }
    let project = |o: &Map<String, Value>| -> Value {
        Value::Object(
            props
                .iter()
                .map(|p| (p.clone(), o.get(p).cloned().unwrap_or(Value::Null)))
                .collect(),
        )
    };
    let find = |id: &str| objects.iter().find(|o| o["id"] == id);
    let (list, not_found): (Vec<Value>, Vec<String>) = match ids {
        None => (objects.iter().map(project).collect(), Vec::new()),
        Some(ids) => {
            let mut list = Vec::new();
            let mut missing = Vec::new();
            for id in ids {
                match find(&id) {
                    Some(o) => list.push(project(o)),
                    None => missing.push(id),
                }
            }
            (list, missing)
        }
    };
    Ok(json!({"accountId": account, "state": state, "list": list, "notFound": not_found}))
}

/// `/changes` from the records' MODSEQs: created after the old state,
/// changed after it, or destroyed after it (and created before it).
pub(super) fn changes(
    t: Type,
    account: &str,
    args: &Map<String, Value>,
    records: &Records,
) -> MethodResult {
    let cannot = || {
        MethodError::new(
            "cannotCalculateChanges",
            "unknown or future state: fetch everything again",
        )
    };
    let since: u64 = args
        .get("sinceState")
        .and_then(Value::as_str)
        .ok_or_else(|| MethodError::invalid("sinceState is required"))?
        .parse()
        .map_err(|_| cannot())?;
    if since > records.state || since < records.since {
        return Err(cannot());
    }
    let max = match args.get("maxChanges") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n) if n > 0 => Some(n as usize),
            _ => return Err(MethodError::invalid("maxChanges is a positive integer")),
        },
    };
    let (mut created, mut updated, mut destroyed) = (Vec::new(), Vec::new(), Vec::new());
    for r in records.records.iter().filter(|r| r.modseq > since) {
        match (r.created > since, r.data.is_some()) {
            // Made and gone since: the client never saw it.
            (true, false) => {}
            (true, true) => created.push(t.id(r.id)),
            (false, true) => updated.push(t.id(r.id)),
            (false, false) => destroyed.push(t.id(r.id)),
        }
    }
    if max.is_some_and(|m| created.len() + updated.len() + destroyed.len() > m) {
        // As for mail: one answer from the state to now, or start over.
        return Err(MethodError::new(
            "cannotCalculateChanges",
            "more than maxChanges changes: fetch everything again",
        ));
    }
    Ok(json!({
        "accountId": account, "oldState": since.to_string(),
        "newState": records.state.to_string(), "hasMoreChanges": false,
        "created": created, "updated": updated, "destroyed": destroyed,
    }))
}
