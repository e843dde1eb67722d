//! Quotas (RFC 9425): one quota per account — the alias's storage, in
//! octets, over all its mail — read with `Quota/get`, followed with
//! `Quota/changes`, found with `Quota/query`.

use cofre_storage::link::{Op, Reply};
use serde_json::{Map, Value, json};

use super::{MethodError, MethodResult, link_error, state, string_list};
use crate::auth::Session;

/// The quota capability.
pub const QUOTA: &str = "urn:ietf:params:jmap:quota";

/// The account's one quota.
const ID: &str = "q1";

async fn usage(session: &Session) -> Result<(u64, Option<u64>), MethodError> {
    match session.request(|s| Op::Usage { session: s }).await {
        Ok(Reply::Usage { used, quota }) => Ok((used, quota)),
        Ok(_) => Err(MethodError::server("unexpected reply")),
        Err(p) => Err(link_error(p)),
    }
}

/// `Quota/get`. An alias without a quota has no Quota object (there is
/// no limit to describe).
pub(super) async fn quota_get(
    session: &Session,
    account: &str,
    args: &Map<String, Value>,
) -> MethodResult {
    // Usage changes with the mail: the mail state is the quota's state.
    let st = state(session).await?;
    let (used, limit) = usage(session).await?;
    let quota = limit.map(|hard| {
        json!({
            "id": ID,
            "resourceType": "octets",
            "used": used,
            "hardLimit": hard,
            "scope": "account",
            "name": format!("storage of {}", session.address),
            "types": ["Mailbox", "Email", "Thread"],
            "description": "All mail of this address, in bytes",
        })
    });
    let (list, not_found): (Vec<Value>, Vec<String>) = match string_list(args, "ids")? {
        None => (quota.into_iter().collect(), Vec::new()),
        Some(ids) => {
            let mut list = Vec::new();
            let mut not_found = Vec::new();
            for id in ids {
                match (&quota, id == ID) {
                    (Some(q), true) if list.is_empty() => list.push(q.clone()),
                    (Some(_), true) => {}
                    _ => not_found.push(id),
                }
            }
            (list, not_found)
        }
    };
    Ok(json!({"accountId": account, "state": st, "list": list, "notFound": not_found}))
}

/// `Quota/changes`: the quota is updated whenever the mail changes.
pub(super) async fn quota_changes(
    session: &Session,
    account: &str,
    args: &Map<String, Value>,
) -> MethodResult {
    let since: u64 = args
        .get("sinceState")
        .and_then(Value::as_str)
        .ok_or_else(|| MethodError::invalid("sinceState is required"))?
        .parse()
        .map_err(|_| MethodError::new("cannotCalculateChanges", "unknown state"))?;
    let now = state(session).await?;
    let current: u64 = now.parse().unwrap_or(0);
    if since > current {
        return Err(MethodError::new(
            "cannotCalculateChanges",
            "a state from the future",
        ));
    }
    let (_, limit) = usage(session).await?;
    let updated: Vec<&str> = if since < current && limit.is_some() {
        vec![ID]
    } else {
        Vec::new()
    };
    Ok(json!({
        "accountId": account, "oldState": since.to_string(), "newState": now,
        "hasMoreChanges": false, "created": [], "updated": updated, "destroyed": [],
        "updatedProperties": ["used"],
    }))
}

/// `Quota/query`: the one quota, if there is one (filters on name, scope,
/// resource type and data type are checked against it).
pub(super) async fn quota_query(
    session: &Session,
    account: &str,
    args: &Map<String, Value>,
) -> MethodResult {
    let st = state(session).await?;
    let (_, limit) = usage(session).await?;
    let mut matches = limit.is_some();
    if let Some(f) = args.get("filter").filter(|f| !f.is_null()) {
        let f = f
            .as_object()
            .ok_or_else(|| MethodError::new("unsupportedFilter", "a filter is an object"))?;
        for (k, v) in f {
            let ok = match (k.as_str(), v.as_str()) {
                ("name", Some(n)) => format!("storage of {}", session.address).contains(n),
                ("scope", Some(s)) => s == "account",
                ("resourceType", Some(r)) => r == "octets",
                ("type", Some(t)) => ["Mailbox", "Email", "Thread"].contains(&t),
                _ => {
                    return Err(MethodError::new(
                        "unsupportedFilter",
                        format!("{k} is not a Quota filter"),
                    ));
                }
            };
            matches &= ok;
        }
    }
    let ids: Vec<&str> = if matches { vec![ID] } else { Vec::new() };
    Ok(json!({
        "accountId": account, "queryState": st, "canCalculateChanges": false,
        "position": 0, "ids": ids, "total": ids.len(),
    }))
}
