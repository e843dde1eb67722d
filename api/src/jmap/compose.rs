//! `Email/set` create (RFC 8621 §4.6): a message written from Email
//! properties — addresses, subject, dates, ids, and a body either from
//! `textBody`/`htmlBody`/`attachments` or from a whole `bodyStructure`,
//! text from `bodyValues` and bytes from blobs — then stored like an
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
const ACCEPTED: [&str; 19] = [
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
    "bodyStructure",
];

/// What a part of a created `bodyStructure` may say (RFC 8621 §4.6).
const PART_ACCEPTED: [&str; 11] = [
    "partId",
    "blobId",
    "type",
    "charset",
    "disposition",
    "name",
    "cid",
    "language",
    "location",
    "subParts",
    "headers",
];

/// How deep a created `bodyStructure` may nest.
const MAX_DEPTH: usize = 16;

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

/// Every `blobId` in a `bodyStructure`, depth first.
fn structure_blobs<'a>(p: &'a Value, out: &mut Vec<&'a str>) {
    if let Some(b) = p.get("blobId").and_then(Value::as_str) {
        out.push(b);
    }
    for sub in p
        .get("subParts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        structure_blobs(sub, out);
    }
}

/// The bytes of a blob, or the SetError a missing one gets.
async fn fetch_blob(session: &Session, blob: &str) -> Result<Vec<u8>, Value> {
    match blob_bytes(session, blob).await {
        Ok(Some(b)) => Ok(b),
        Ok(None) => {
            let mut e = set_error("blobNotFound", "no such blob");
            e["notFound"] = json!([blob]);
            Err(e)
        }
        Err(e) => Err(set_error("serverFail", e.description.unwrap_or_default())),
    }
}

/// One part of a created `bodyStructure` as a MIME part: a multipart
/// with `subParts`, else text from `bodyValues` (`partId`) or bytes of a
/// blob (`blobId`), with its type, charset, disposition, name, cid,
/// language, location and extra `headers`.
fn structure_part(
    p: &Value,
    values: &Map<String, Value>,
    blobs: &std::collections::HashMap<String, Vec<u8>>,
    depth: usize,
) -> Result<MimePart<'static>, Value> {
    const P: &str = "bodyStructure";
    let o = p
        .as_object()
        .ok_or_else(|| invalid(P, "a body part is an object"))?;
    if depth > MAX_DEPTH {
        return Err(invalid(P, format!("parts nest at most {MAX_DEPTH} deep")));
    }
    if let Some(k) = o.keys().find(|k| !PART_ACCEPTED.contains(&k.as_str())) {
        return Err(invalid(P, format!("a body part cannot set {k}")));
    }
    let text = |k: &str| -> Result<Option<String>, Value> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.contains(['\r', '\n']) => Ok(Some(s.clone())),
            Some(_) => Err(invalid(P, format!("a part's {k} is one line of text"))),
        }
    };
    let media = text("type")?
        .unwrap_or_else(|| "text/plain".into())
        .to_lowercase();
    let (kind, sub) = media
        .split_once('/')
        .filter(|(k, s)| !k.is_empty() && !s.is_empty() && !media.contains([' ', ';']))
        .ok_or_else(|| invalid(P, format!("{media} is not a media type")))?;
    let charset = text("charset")?;
    let sources = (o.get("subParts"), text("partId")?, text("blobId")?);
    let mut part = match sources {
        (Some(Value::Array(subs)), None, None) if kind == "multipart" && !subs.is_empty() => {
            let parts = subs
                .iter()
                .map(|s| structure_part(s, values, blobs, depth + 1))
                .collect::<Result<Vec<_>, _>>()?;
            MimePart::new(media.clone(), BodyPart::Multipart(parts))
        }
        (None, Some(id), None) if kind == "text" => {
            if charset.as_deref().is_some_and(|c| {
                !c.eq_ignore_ascii_case("utf-8") && !c.eq_ignore_ascii_case("us-ascii")
            }) {
                return Err(invalid(P, "text from bodyValues is written as utf-8"));
            }
            let value = values
                .get(&id)
                .and_then(|v| v.get("value"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    invalid("bodyValues", format!("no bodyValues entry for part {id}"))
                })?;
            MimePart::new(media.clone(), BodyPart::Text(Cow::Owned(value.to_string())))
        }
        (None, None, Some(blob)) if kind != "multipart" => {
            let bytes = blobs.get(&blob).cloned().unwrap_or_default();
            let mut ct = mail_builder::headers::content_type::ContentType::new(media.clone());
            if let Some(c) = &charset {
                ct = ct.attribute("charset", c.clone());
            }
            MimePart::new(ct, BodyPart::Binary(Cow::Owned(bytes)))
        }
        _ => {
            return Err(invalid(
                P,
                format!(
                    "a {kind}/{sub} part needs exactly one of subParts (multipart), partId (text) or blobId"
                ),
            ));
        }
    };
    let name = text("name")?;
    match text("disposition")?.as_deref() {
        Some("inline") => part = part.inline(),
        Some("attachment") => part = part.attachment(name.unwrap_or_else(|| "attachment".into())),
        Some(other) => return Err(invalid(P, format!("unknown disposition {other}"))),
        None if name.is_some() => part = part.attachment(name.unwrap_or_default()),
        None => {}
    }
    if let Some(cid) = text("cid")? {
        part = part.cid(cid.trim_matches(['<', '>']).to_string());
    }
    if let Some(Value::Array(langs)) = o.get("language") {
        let langs: Vec<&str> = langs.iter().filter_map(Value::as_str).collect();
        part = part.language(langs.join(", "));
    }
    if let Some(loc) = text("location")? {
        part = part.location(loc);
    }
    for h in o
        .get("headers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(name), Some(value)) = (
            h.get("name").and_then(Value::as_str),
            h.get("value").and_then(Value::as_str),
        ) else {
            return Err(invalid(P, "a header is {name, value}"));
        };
        let lower = name.to_ascii_lowercase();
        if !name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
            || lower.starts_with("content-")
            || value.contains(['\r', '\n'])
        {
            return Err(invalid(P, format!("header {name} cannot be set on a part")));
        }
        part = part.header(
            name.to_string(),
            mail_builder::headers::raw::Raw::new(value.to_string()),
        );
    }
    Ok(part)
}

/// The body from `textBody`, `htmlBody` and `attachments`: the text and
/// HTML alternatives, then the attachments by blob id.
async fn body_lists(
    session: &Session,
    mut m: MessageBuilder<'static>,
    o: &Map<String, Value>,
    values: &Map<String, Value>,
) -> Result<MessageBuilder<'static>, Value> {
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
        let bytes = fetch_blob(session, blob).await?;
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
    Ok(m)
}

/// Builds and stores one new Email; the created object or a SetError.
pub(super) async fn create_email(session: &Session, v: &Value) -> Result<Value, Value> {
    let o = v
        .as_object()
        .ok_or_else(|| set_error("invalidProperties", "an Email is an object"))?;
    if let Some(p) = o.keys().find(|k| !ACCEPTED.contains(&k.as_str())) {
        return Err(invalid(
            p,
            "this property cannot be set on a new Email here",
        ));
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
    if let Some(structure) = o.get("bodyStructure").filter(|b| !b.is_null()) {
        // The whole body as given; the three lists would say it twice.
        if let Some(k) = ["textBody", "htmlBody", "attachments"]
            .into_iter()
            .find(|k| o.get(*k).is_some_and(|v| !v.is_null()))
        {
            return Err(invalid(k, format!("{k} is not given with bodyStructure")));
        }
        let mut wanted = Vec::new();
        structure_blobs(structure, &mut wanted);
        let mut blobs = std::collections::HashMap::new();
        for b in wanted {
            if !blobs.contains_key(b) {
                blobs.insert(b.to_string(), fetch_blob(session, b).await?);
            }
        }
        m = m.body(structure_part(structure, values, &blobs, 0)?);
    } else {
        m = body_lists(session, m, o, values).await?;
    }
    let raw = m
        .write_to_vec()
        .map_err(|e| set_error("serverFail", e.to_string()))?;
    store(session, raw, &folders, options).await
}
