//! `/queryChanges` (RFC 8620 §5.6) for Email and Mailbox, exact across
//! edits from any protocol: the MODSEQ log says which objects changed
//! since the old query state; every one of them is reported removed (the
//! RFC lets a server name ids that were not in the old results) and
//! re-added at its index in the current results if it is there. Emails
//! whose thread changed count as changed too, since thread-wide
//! conditions and `collapseThreads` depend on their thread-mates.

use std::collections::HashSet;

use cofre_storage::mailbox::{Filter, Query};
use cofre_storage::{EmailId, ThreadId};
use serde_json::{Map, Value, json};

use super::{
    MethodError, MethodResult, changes_since, email_query_of, ids_of, mailbox_query, search,
    summaries,
};
use crate::auth::Session;

/// The arguments every `/queryChanges` shares.
struct Since {
    since: cofre_storage::ModSeq,
    max_changes: Option<usize>,
    calculate_total: bool,
}

fn since_of(args: &Map<String, Value>) -> Result<Since, MethodError> {
    let cannot = || {
        MethodError::new(
            "cannotCalculateChanges",
            "unknown or future query state: query again",
        )
    };
    let since = args
        .get("sinceQueryState")
        .and_then(Value::as_str)
        .ok_or_else(|| MethodError::invalid("sinceQueryState is required"))?
        .parse()
        .map_err(|_| cannot())?;
    let max_changes = match args.get("maxChanges") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n) if n > 0 => Some(n as usize),
            _ => return Err(MethodError::invalid("maxChanges is a positive integer")),
        },
    };
    Ok(Since {
        since,
        max_changes,
        calculate_total: matches!(args.get("calculateTotal"), Some(Value::Bool(true))),
    })
}

/// The response from the changed ids and the current results.
fn respond(
    account: &str,
    s: &Since,
    new_state: cofre_storage::ModSeq,
    changed: &HashSet<String>,
    results: &[String],
) -> MethodResult {
    let mut removed: Vec<&String> = changed.iter().collect();
    removed.sort();
    let added: Vec<Value> = results
        .iter()
        .enumerate()
        .filter(|(_, id)| changed.contains(*id))
        .map(|(index, id)| json!({"id": id, "index": index}))
        .collect();
    if let Some(max) = s.max_changes
        && removed.len() + added.len() > max
    {
        return Err(MethodError::new(
            "tooManyChanges",
            format!("more than maxChanges ({max}) changes: query again"),
        ));
    }
    let mut out = json!({
        "accountId": account,
        "oldQueryState": s.since.to_string(),
        "newQueryState": new_state.to_string(),
        "removed": removed,
        "added": added,
    });
    if s.calculate_total {
        out["total"] = json!(results.len());
    }
    Ok(out)
}

/// `Email/queryChanges`.
pub(super) async fn email_query_changes(
    session: &Session,
    account: &str,
    args: &Map<String, Value>,
) -> MethodResult {
    let query = email_query_of(args)?;
    let s = since_of(args)?;
    let c = changes_since(session, s.since).await?;
    if s.since > c.current || s.since < c.threads_since || s.since < c.log_since {
        return Err(MethodError::new(
            "cannotCalculateChanges",
            "unknown, future or too old query state: query again",
        ));
    }
    let mut changed: HashSet<i64> = c
        .emails_created
        .iter()
        .chain(&c.emails_updated)
        .chain(&c.emails_destroyed)
        .map(|e| e.0)
        .collect();
    // Their thread-mates: a thread condition or the collapsed
    // representative may have changed with them.
    let mut threads: HashSet<i64> = c
        .threads_created
        .iter()
        .chain(&c.threads_updated)
        .map(|t| t.0)
        .collect();
    let updated: Vec<EmailId> = c.emails_updated.clone();
    for e in summaries(session, updated).await? {
        threads.insert(e.thread_id.0);
    }
    if !threads.is_empty() {
        let mates = Query::everywhere(Filter::Threads(
            threads.iter().map(|t| ThreadId(*t)).collect(),
        ));
        changed.extend(search(session, mates).await?.iter().map(|h| h.email_id.0));
    }
    let changed: HashSet<String> = changed.iter().map(|n| format!("e{n}")).collect();
    let results: Vec<String> = search(session, query)
        .await?
        .iter()
        .map(|h| format!("e{}", h.email_id.0))
        .collect();
    respond(account, &s, c.current, &changed, &results)
}

/// `Mailbox/queryChanges`.
pub(super) async fn mailbox_query_changes(
    session: &Session,
    account: &str,
    args: &Map<String, Value>,
) -> MethodResult {
    let s = since_of(args)?;
    let c = changes_since(session, s.since).await?;
    if s.since > c.current {
        return Err(MethodError::new(
            "cannotCalculateChanges",
            "unknown or future query state: query again",
        ));
    }
    let changed: HashSet<String> = ids_of(&c.folders_created, |f| f.0)
        .into_iter()
        .chain(ids_of(&c.folders_updated, |f| f.0))
        .chain(ids_of(&c.folders_destroyed, |f| f.0))
        .map(|n| format!("m{n}"))
        .collect();
    let mut all = args.clone();
    for k in ["sinceQueryState", "maxChanges", "upToId", "calculateTotal"] {
        all.remove(k);
    }
    let now = mailbox_query(session, account, &all).await?;
    let results: Vec<String> = now["ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    respond(account, &s, c.current, &changed, &results)
}
