//! `header:{name}[:as{Form}][:all]` Email properties (RFC 8621 §4.1.2–3):
//! any header field, in its raw form or parsed as text, addresses,
//! grouped addresses, message ids, a date or URLs — the last instance, or
//! every instance with `:all`.

use mail_parser::parsers::MessageStream;
use mail_parser::{Address, HeaderValue, MessageParser};
use serde_json::{Value, json};

use super::MethodError;

/// A parsed form of a header field's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Raw,
    Text,
    Addresses,
    GroupedAddresses,
    MessageIds,
    Date,
    Urls,
}

/// One requested header property.
#[derive(Debug, Clone)]
pub(super) struct HeaderProp {
    /// The property as asked (the response's key).
    property: String,
    name: String,
    form: Form,
    all: bool,
}

const ADDRESS_FIELDS: [&str; 12] = [
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "bcc",
    "resent-from",
    "resent-sender",
    "resent-reply-to",
    "resent-to",
    "resent-cc",
    "resent-bcc",
];
const TEXT_FIELDS: [&str; 4] = ["subject", "comments", "keywords", "list-id"];
const ID_FIELDS: [&str; 4] = [
    "message-id",
    "in-reply-to",
    "references",
    "resent-message-id",
];
const DATE_FIELDS: [&str; 2] = ["date", "resent-date"];
const URL_FIELDS: [&str; 6] = [
    "list-help",
    "list-unsubscribe",
    "list-subscribe",
    "list-post",
    "list-owner",
    "list-archive",
];

/// Whether RFC 8621 lets `form` be asked of the field `name` (lower
/// case): known fields have their forms; any other field takes all.
fn allowed(name: &str, form: Form) -> bool {
    let lists: [(&[&str], &[Form]); 5] = [
        (&ADDRESS_FIELDS, &[Form::Addresses, Form::GroupedAddresses]),
        (&TEXT_FIELDS, &[Form::Text]),
        (&ID_FIELDS, &[Form::MessageIds]),
        (&DATE_FIELDS, &[Form::Date]),
        (&URL_FIELDS, &[Form::Urls]),
    ];
    if form == Form::Raw {
        return true;
    }
    match lists.iter().find(|(fields, _)| fields.contains(&name)) {
        Some((_, forms)) => forms.contains(&form),
        None => true,
    }
}

impl HeaderProp {
    /// Reads a `header:…` property; `Ok(None)` for any other property.
    pub(super) fn parse(property: &str) -> Result<Option<HeaderProp>, MethodError> {
        let Some(rest) = property.strip_prefix("header:") else {
            return Ok(None);
        };
        let bad = || MethodError::invalid(format!("{property} is not a valid header property"));
        let mut parts = rest.split(':');
        let name = parts
            .next()
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_graphic() && b != b':'));
        let name = name.ok_or_else(bad)?.to_ascii_lowercase();
        let (mut form, mut all) = (Form::Raw, false);
        for (i, p) in parts.enumerate() {
            match (i, p) {
                (0, "asRaw") => form = Form::Raw,
                (0, "asText") => form = Form::Text,
                (0, "asAddresses") => form = Form::Addresses,
                (0, "asGroupedAddresses") => form = Form::GroupedAddresses,
                (0, "asMessageIds") => form = Form::MessageIds,
                (0, "asDate") => form = Form::Date,
                (0, "asURLs") => form = Form::Urls,
                (0 | 1, "all") if !all => all = true,
                _ => return Err(bad()),
            }
        }
        if !allowed(&name, form) {
            return Err(MethodError::invalid(format!(
                "{property}: that form does not apply to this header field"
            )));
        }
        Ok(Some(HeaderProp {
            property: property.to_string(),
            name,
            form,
            all,
        }))
    }
}

fn addresses(v: &HeaderValue<'_>) -> Vec<Value> {
    let one = |a: &mail_parser::Addr<'_>| json!({"name": a.name, "email": a.address});
    match v {
        HeaderValue::Address(Address::List(l)) => l.iter().map(one).collect(),
        HeaderValue::Address(Address::Group(g)) => {
            g.iter().flat_map(|g| g.addresses.iter().map(one)).collect()
        }
        _ => Vec::new(),
    }
}

/// One instance's value in a form.
fn value(raw_value: &[u8], form: Form) -> Value {
    let mut s = MessageStream::new(raw_value);
    match form {
        Form::Raw => {
            let v = raw_value.strip_suffix(b"\r\n").unwrap_or(raw_value);
            json!(String::from_utf8_lossy(v))
        }
        Form::Text => match s.parse_unstructured() {
            HeaderValue::Text(t) => json!(t.trim()),
            _ => json!(""),
        },
        Form::Addresses => Value::Array(addresses(&s.parse_address())),
        Form::GroupedAddresses => match s.parse_address() {
            HeaderValue::Address(Address::Group(g)) => Value::Array(
                g.iter()
                    .map(|g| {
                        let list =
                            addresses(&HeaderValue::Address(Address::List(g.addresses.clone())));
                        json!({"name": g.name, "addresses": list})
                    })
                    .collect(),
            ),
            other => json!([{"name": null, "addresses": addresses(&other)}]),
        },
        Form::MessageIds => match s.parse_id() {
            HeaderValue::Text(id) => json!([id]),
            HeaderValue::TextList(ids) => json!(ids),
            _ => Value::Null,
        },
        Form::Date => match s.parse_date() {
            HeaderValue::DateTime(d) => json!(d.to_rfc3339()),
            _ => Value::Null,
        },
        Form::Urls => match s.parse_address() {
            HeaderValue::Address(Address::List(l)) => {
                json!(
                    l.iter()
                        .filter_map(|a| a.address.as_deref())
                        .collect::<Vec<_>>()
                )
            }
            _ => Value::Null,
        },
    }
}

/// Sets each header property of the message `raw` on `object`.
pub(super) fn fill(object: &mut Value, raw: &[u8], props: &[HeaderProp]) {
    if props.is_empty() {
        return;
    }
    let message = MessageParser::default().parse_headers(raw);
    let headers = message.as_ref().map(|m| m.headers()).unwrap_or_default();
    for p in props {
        let values: Vec<Value> = headers
            .iter()
            .filter(|h| h.name.as_str().eq_ignore_ascii_case(&p.name))
            .map(|h| {
                let (a, b) = (h.offset_start as usize, h.offset_end as usize);
                value(raw.get(a..b).unwrap_or_default(), p.form)
            })
            .collect();
        object[&p.property] = if p.all {
            Value::Array(values)
        } else {
            values.into_iter().last().unwrap_or(Value::Null)
        };
    }
}
