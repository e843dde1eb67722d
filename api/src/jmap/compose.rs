//! `Email/set` create (RFC 8621 §4.6): a message written from Email
//! properties — addresses, subject, dates, ids, `textBody`/`htmlBody`
//! with their `bodyValues`, attachments by blob id — then stored like an
//! import.

use std::borrow::Cow;

use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use mail_builder::headers::message_id::MessageId;
use mail_builder::mime::{BodyPart, MimePart};
use serde_json::{Map, Value, json};

use super::blob::{blob_bytes, store};
use super::{date_arg, set_error};
use crate::auth::Session;

/// Properties a created Email may carry; anything else is refused by
/// name (a client must not believe a property was kept when it was not).
const ACCEPTED: [&str; 18] = [
    "mailboxIds",
    "keywords",
    "receivedAt",
    "messageId",
    "inReplyTo",
    "references",
    "sender",
    "from",
    "to",
    "cc",
    "bcc",
    "replyTo",
    "subject",
    "sentAt",
    "textBody",
    "htmlBody",
    "attachments",
    "bodyValues",
];

use super::invalid_property as invalid;

/// An `EmailAddress[]` property as a header value; `None` when absent.
fn addresses(o: &Map<String, Value>, key: &str) -> Result<Option<Address<'static>>, Value> {
    let list = match o.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(invalid(key, format!("{key} is a list of EmailAddress"))),
    };
    let mut out = Vec::new();
    for a in list {
        let email = a
            .get("email")
            .and_then(Value::as_str)
            .filter(|e| e.contains('@') && !e.contains(['\r', '\n', '<', '>']))
            .ok_or_else(|| invalid(key, format!("{key}: every address needs an email")))?;
        let name = match a.get("name") {
            None | Some(Value::Null) => None,
            Some(Value::String(n)) => Some(n.clone()),
            Some(_) => return Err(invalid(key, format!("{key}: a name is a string"))),
        };
        out.push(Address::new_address(name, email.to_string()));
    }
    Ok(Some(Address::new_list(out)))
}

/// A `String[]` of message ids as a header value; `None` when absent.
fn message_ids(o: &Map<String, Value>, key: &str) -> Result<Option<MessageId<'static>>, Value> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => {
            let ids = a
                .iter()
                .map(|v| {
                    v.as_str()
                        .filter(|s| !s.is_empty() && !s.contains(['<', '>', ' ', '\r', '\n']))
                        .map(str::to_string)
                })
                .collect::<Option<Vec<String>>>()
                .ok_or_else(|| invalid(key, format!("{key} is a list of message ids")))?;
            Ok(Some(MessageId::from(ids)))
        }
        Some(_) => Err(invalid(key, format!("{key} is a list of message ids"))),
    }
}

/// The text of one `textBody`/`htmlBody` part: its `bodyValues` entry.
fn body_text(
    o: &Map<String, Value>,
    key: &str,
    values: &Map<String, Value>,
) -> Result<Option<String>, Value> {
    let parts = match o.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(invalid(key, format!("{key} is a list of parts"))),
    };
    let [part] = parts.as_slice() else {
        return Err(invalid(key, format!("{key} has exactly one part")));
    };
    let id = part
        .get("partId")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(key, format!("{key}: the part needs a partId")))?;
    if part.get("blobId").is_some_and(|b| !b.is_null()) {
        return Err(invalid(
            key,
            format!("{key}: text comes from bodyValues, not a blob"),
        ));
    }
    let text = values
        .get(id)
        .and_then(|v| v.get("value"))
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("bodyValues", format!("no bodyValues entry for part {id}")))?;
    Ok(Some(text.to_string()))
}

/// Builds and stores one new Email; the created object or a SetError.
pub(super) async fn create_email(session: &Session, v: &Value) -> Result<Value, Value> {
    let o = v
        .as_object()
        .ok_or_else(|| set_error("invalidProperties", "an Email is an object"))?;
    if let Some(p) = o.keys().find(|k| !ACCEPTED.contains(&k.as_str())) {
        let why = if p == "bodyStructure" {
            "bodyStructure is not accepted here; give textBody, htmlBody and attachments"
        } else {
            "this property cannot be set on a new Email here"
        };
        return Err(invalid(p, why));
    }
    let (folders, options) = super::placement(o)?;

    let mut m = MessageBuilder::new();
    for (key, header) in [
        ("from", "From"),
        ("sender", "Sender"),
        ("to", "To"),
        ("cc", "Cc"),
        ("bcc", "Bcc"),
        ("replyTo", "Reply-To"),
    ] {
        if let Some(a) = addresses(o, key)? {
            m = m.header(header, a);
        }
    }
    if let Some(s) = o.get("subject").filter(|s| !s.is_null()) {
        let s = s
            .as_str()
            .ok_or_else(|| invalid("subject", "subject is a string"))?;
        m = m.subject(s.to_string());
    }
    let sent = match o.get("sentAt").filter(|t| !t.is_null()) {
        Some(t) => date_arg(t, "sentAt").map_err(|_| invalid("sentAt", "not a Date"))?,
        None => cofre_storage::time::now(),
    };
    m = m.date(sent);
    let own_id = || {
        let domain = session.address.domain().to_string();
        let n: [u8; 16] = cofre_storage::keys::random_bytes();
        MessageId::new(format!("{}@{domain}", hex::encode(n)))
    };
    m = m.message_id(message_ids(o, "messageId")?.unwrap_or_else(own_id));
    if let Some(ids) = message_ids(o, "inReplyTo")? {
        m = m.in_reply_to(ids);
    }
    if let Some(ids) = message_ids(o, "references")? {
        m = m.references(ids);
    }

    let empty = Map::new();
    let values = match o.get("bodyValues") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(v)) => v,
        Some(_) => return Err(invalid("bodyValues", "bodyValues is an object")),
    };
    let text = body_text(o, "textBody", values)?;
    let html = body_text(o, "htmlBody", values)?;
    match (&text, &html) {
        (None, None) => m = m.text_body(""),
        _ => {
            if let Some(t) = text {
                m = m.text_body(t);
            }
            if let Some(h) = html {
                m = m.html_body(h);
            }
        }
    }
    let attachments = match o.get("attachments") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return Err(invalid("attachments", "attachments is a list of parts")),
    };
    for a in &attachments {
        let blob = a
            .get("blobId")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("attachments", "every attachment needs a blobId"))?;
        let bytes = match blob_bytes(session, blob).await {
            Ok(Some(b)) => b,
            Ok(None) => {
                let mut e = set_error("blobNotFound", "no such blob");
                e["notFound"] = json!([blob]);
                return Err(e);
            }
            Err(e) => return Err(set_error("serverFail", e.description.unwrap_or_default())),
        };
        let media = a
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("application/octet-stream")
            .to_string();
        let name = a.get("name").and_then(Value::as_str).map(str::to_string);
        let mut part = MimePart::new(media, BodyPart::Binary(Cow::Owned(bytes)));
        let inline = a.get("disposition").and_then(Value::as_str) == Some("inline");
        if inline {
            part = part.inline();
        } else {
            part = part.attachment(name.clone().unwrap_or_else(|| "attachment".into()));
        }
        if let Some(cid) = a.get("cid").and_then(Value::as_str) {
            part = part.cid(cid.to_string());
        }
        m.attachments.get_or_insert_with(Vec::new).push(part);
    }
    let raw = m
        .write_to_vec()
        .map_err(|e| set_error("serverFail", e.to_string()))?;
    store(session, raw, &folders, options).await
}
