//! `SearchSnippet/get` (RFC 8621 §5): the subject and a piece of the body
//! around the first match of a query's words, HTML-escaped, each match in
//! `<mark>`.

use serde_json::{Map, Value, json};

use super::{MAX_OBJECTS_IN_GET, MethodError, MethodResult, filter_of, prefixed};
use crate::auth::Session;

/// Most characters of a preview snippet (RFC 8621: at most 255).
const PREVIEW_CHARS: usize = 255;

/// The words a filter searches for in text, subject or body.
fn words(filter: &Value, out: &mut Vec<String>) {
    match filter {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("text" | "subject" | "body", Value::String(s)) => out.extend(
                        s.split(|c: char| !c.is_alphanumeric())
                            .filter(|w| !w.is_empty())
                            .map(str::to_lowercase),
                    ),
                    ("conditions", Value::Array(a)) => a.iter().for_each(|c| words(c, out)),
                    _ => {}
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|c| words(c, out)),
        _ => {}
    }
}

fn escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
}

/// Byte ranges of `text` where one of `words` stands as a whole word
/// (case-insensitive), in order, not overlapping.
fn matches(text: &str, words: &[String]) -> Vec<(usize, usize)> {
    let lower: Vec<(usize, char)> = text.char_indices().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lower.len() {
        let at_start = i == 0 || !lower[i - 1].1.is_alphanumeric();
        let mut matched = None;
        if at_start {
            for w in words {
                let n = w.chars().count();
                let at_end = lower.get(i + n).is_none_or(|(_, c)| !c.is_alphanumeric());
                if i + n <= lower.len()
                    && at_end
                    && lower[i..i + n]
                        .iter()
                        .map(|(_, c)| c.to_lowercase().next().unwrap_or(*c))
                        .eq(w.chars())
                {
                    matched = Some(n.max(matched.unwrap_or(0)));
                }
            }
        }
        match matched {
            Some(n) => {
                let start = lower[i].0;
                let end = lower.get(i + n).map_or(text.len(), |(b, _)| *b);
                out.push((start, end));
                i += n;
            }
            None => i += 1,
        }
    }
    out
}

/// `text` escaped, with each match marked.
fn marked(text: &str, ranges: &[(usize, usize)]) -> String {
    let mut out = String::new();
    let mut at = 0;
    for &(a, b) in ranges {
        escape(&text[at..a], &mut out);
        out.push_str("<mark>");
        escape(&text[a..b], &mut out);
        out.push_str("</mark>");
        at = b;
    }
    escape(&text[at..], &mut out);
    out
}

/// A window of at most [`PREVIEW_CHARS`] characters of `body` from a little
/// before its first match, marked; `None` without a match.
fn preview(body: &str, words: &[String]) -> Option<String> {
    let flat: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    let first = *matches(&flat, words).first()?;
    // Up to 40 characters of context before the match.
    let before: Vec<usize> = flat[..first.0].char_indices().map(|(i, _)| i).collect();
    let start = before.len().checked_sub(40).map_or(0, |k| before[k]);
    let window: String = flat[start..].chars().take(PREVIEW_CHARS).collect();
    Some(marked(&window, &matches(&window, words)))
}

/// `SearchSnippet/get`.
pub(super) async fn snippet_get(
    session: &Session,
    account: &str,
    args: &Map<String, Value>,
) -> MethodResult {
    let filter = args.get("filter").cloned().unwrap_or(Value::Null);
    if !filter.is_null() {
        // The same conditions Email/query takes, or the same error.
        filter_of(&filter)?;
    }
    let ids = super::string_list(args, "emailIds")?
        .ok_or_else(|| MethodError::invalid("emailIds is required"))?;
    if ids.len() > MAX_OBJECTS_IN_GET {
        return Err(MethodError::new("requestTooLarge", "too many emailIds"));
    }
    let mut terms = Vec::new();
    words(&filter, &mut terms);
    let (mut list, mut not_found) = (Vec::new(), Vec::new());
    for id in ids {
        let Some(n) = prefixed('e', &id) else {
            not_found.push(id);
            continue;
        };
        let Some(raw) = super::blob::blob_bytes(session, &format!("b{n}")).await? else {
            not_found.push(id);
            continue;
        };
        let message = mail_parser::MessageParser::default().parse(&raw);
        let subject = message.as_ref().and_then(|m| m.subject()).unwrap_or("");
        let body = message
            .as_ref()
            .and_then(|m| m.body_text(0))
            .unwrap_or_default();
        let in_subject = matches(subject, &terms);
        list.push(json!({
            "emailId": id,
            "subject": if in_subject.is_empty() { Value::Null } else { json!(marked(subject, &in_subject)) },
            "preview": preview(&body, &terms),
        }));
    }
    Ok(json!({ "accountId": account, "list": list, "notFound": not_found }))
}
