//! What storage learns from a message's bytes: header summary, search text,
//! threading ids and the attachment bodies to deduplicate. Bytes in, values
//! out; nothing here touches the database.

use mail_parser::{Address, HeaderValue, MessageParser, PartType};
use serde::{Deserialize, Serialize};

/// Attachment bodies at least this long are stored once per mailbox however
/// many messages carry them; smaller ones stay inline (a row costs more).
pub const DEDUP_MIN_BYTES: usize = 1024;

/// Body text indexed for search, per message. Longer text is cut here.
pub const MAX_INDEXED_TEXT: usize = 1 << 20;

/// One address from a header, as the summary carries it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Addr {
    /// Display name, if any.
    pub name: Option<String>,
    /// The address itself (may be empty for malformed input).
    pub email: String,
}

/// The header fields and search text of one message.
#[derive(Debug, Default, Clone)]
pub struct Analysis {
    /// Message-ID without angle brackets.
    pub message_id: Option<String>,
    /// In-Reply-To ids.
    pub in_reply_to: Vec<String>,
    /// References ids.
    pub references: Vec<String>,
    /// Decoded Subject.
    pub subject: String,
    /// Subject without reply/forward prefixes, lower case: threading and sort.
    pub base_subject: String,
    /// From.
    pub from: Vec<Addr>,
    /// Sender.
    pub sender: Vec<Addr>,
    /// Reply-To.
    pub reply_to: Vec<Addr>,
    /// To.
    pub to: Vec<Addr>,
    /// Cc.
    pub cc: Vec<Addr>,
    /// Bcc.
    pub bcc: Vec<Addr>,
    /// Date header in UTC, as Unix seconds.
    pub sent_at: Option<i64>,
    /// Date header's calendar day in its own time zone (IMAP SENT* keys).
    pub sent_day: Option<String>,
    /// Whether the message has attachments (JMAP hasAttachment).
    pub has_attachment: bool,
    /// Up to 256 characters of body text.
    pub preview: String,
    /// Decoded body text for the search index.
    pub body_text: String,
    /// One "Name: value" line per header field, decoded.
    pub headers_text: String,
    /// Byte ranges of attachment bodies worth deduplicating, sorted, disjoint.
    pub dedup_ranges: Vec<(usize, usize)>,
}

/// Analyses raw message bytes. Never fails: input that is not MIME at all
/// gets an empty summary and is still stored verbatim.
pub fn analyse(raw: &[u8]) -> Analysis {
    let Some(msg) = MessageParser::default().parse(raw) else {
        return Analysis {
            body_text: String::from_utf8_lossy(&raw[..raw.len().min(MAX_INDEXED_TEXT)])
                .into_owned(),
            ..Analysis::default()
        };
    };
    let mut a = Analysis {
        message_id: msg.message_id().map(clean_id),
        in_reply_to: id_list(msg.in_reply_to()),
        references: id_list(msg.references()),
        subject: msg.subject().unwrap_or_default().to_string(),
        from: addrs(msg.from()),
        sender: addrs(msg.sender()),
        reply_to: addrs(msg.reply_to()),
        to: addrs(msg.to()),
        cc: addrs(msg.cc()),
        bcc: addrs(msg.bcc()),
        has_attachment: msg.attachment_count() > 0,
        ..Analysis::default()
    };
    a.base_subject = base_subject(&a.subject);
    if let Some(d) = msg.date().filter(|d| d.is_valid()) {
        a.sent_at = Some(d.to_timestamp());
        a.sent_day = Some(format!("{:04}-{:02}-{:02}", d.year, d.month, d.day));
    }
    let mut body = String::new();
    for i in 0..msg.text_body_count() {
        if let Some(t) = msg.body_text(i) {
            if !body.is_empty() {
                body.push('\n');
            }
            body.push_str(&t);
        }
        if body.len() >= MAX_INDEXED_TEXT {
            break;
        }
    }
    truncate_at_char(&mut body, MAX_INDEXED_TEXT);
    a.preview = preview(&body);
    a.body_text = body;
    for h in msg.headers() {
        a.headers_text.push_str(h.name());
        a.headers_text.push_str(": ");
        a.headers_text
            .push_str(&header_text(h.value(), raw, h.offset_start, h.offset_end));
        a.headers_text.push('\n');
    }
    let mut ranges: Vec<(usize, usize)> = msg
        .parts
        .iter()
        .filter(|p| matches!(p.body, PartType::Binary(_) | PartType::InlineBinary(_)))
        .map(|p| (p.offset_body as usize, p.offset_end as usize))
        .filter(|(s, e)| e > s && *e <= raw.len() && e - s >= DEDUP_MIN_BYTES)
        .collect();
    ranges.sort_unstable();
    let mut last_end = 0;
    ranges.retain(|(s, e)| {
        let keep = *s >= last_end;
        if keep {
            last_end = *e;
        }
        keep
    });
    a.dedup_ranges = ranges;
    a
}

fn truncate_at_char(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

fn preview(body: &str) -> String {
    let mut out = String::new();
    for word in body.split_whitespace() {
        if out.chars().count() + word.chars().count() + 1 > 256 {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

fn clean_id(s: &str) -> String {
    s.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_string()
}

fn id_list(v: &HeaderValue<'_>) -> Vec<String> {
    match v {
        HeaderValue::Text(t) => vec![clean_id(t)],
        HeaderValue::TextList(l) => l.iter().map(|t| clean_id(t)).collect(),
        _ => Vec::new(),
    }
}

fn addrs(a: Option<&Address<'_>>) -> Vec<Addr> {
    a.map(|a| {
        a.iter()
            .map(|x| Addr {
                name: x.name().map(str::to_string).filter(|n| !n.is_empty()),
                email: x.address().unwrap_or_default().to_string(),
            })
            .collect()
    })
    .unwrap_or_default()
}

/// Formats addresses the way they are searched: `Name <email>, ...`.
pub fn addrs_text(list: &[Addr]) -> String {
    list.iter()
        .map(|a| match &a.name {
            Some(n) => format!("{n} <{}>", a.email),
            None => a.email.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn header_text(v: &HeaderValue<'_>, raw: &[u8], start: u32, end: u32) -> String {
    match v {
        HeaderValue::Text(t) => t.to_string(),
        HeaderValue::TextList(l) => l.join(", "),
        HeaderValue::Address(a) => {
            let list: Vec<Addr> = a
                .iter()
                .map(|x| Addr {
                    name: x.name().map(str::to_string),
                    email: x.address().unwrap_or_default().to_string(),
                })
                .collect();
            addrs_text(&list)
        }
        _ => {
            let (s, e) = (start as usize, (end as usize).min(raw.len()));
            let bytes = raw.get(s..e).unwrap_or_default();
            String::from_utf8_lossy(bytes)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        }
    }
}

/// The subject as threads and sorting see it (RFC 5256 §2.1, simplified):
/// reply and forward prefixes and list tags removed, whitespace collapsed,
/// lower case.
pub fn base_subject(subject: &str) -> String {
    let mut s = subject.split_whitespace().collect::<Vec<_>>().join(" ");
    loop {
        let lower = s.to_lowercase();
        let before = s.len();
        for prefix in ["re:", "fwd:", "fw:", "aw:", "sv:", "tr:", "re :", "fwd :"] {
            if lower.starts_with(prefix) {
                s = s[prefix.len()..].trim_start().to_string();
                break;
            }
        }
        if s.starts_with('[')
            && let Some(end) = s.find(']')
        {
            let rest = s[end + 1..].trim_start();
            if !rest.is_empty() {
                s = rest.to_string();
            }
        }
        if s.len() == before {
            break;
        }
    }
    if let Some(stripped) = s.strip_suffix("(fwd)") {
        s = stripped.trim_end().to_string();
    }
    s.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time;

    #[test]
    fn base_subjects() {
        assert_eq!(base_subject("Re: RE: Fwd: Hello  World"), "hello world");
        assert_eq!(base_subject("[list] Re: Plans"), "plans");
        assert_eq!(base_subject("Report (fwd)"), "report");
        assert_eq!(base_subject(""), "");
    }

    #[test]
    fn analyses_a_multipart_message() {
        let att = "QUJD".repeat(400);
        let raw = format!(
            "From: Ana <ana@example.org>\r\nTo: bob@example.net, \"Cy\" <cy@example.net>\r\n\
             Subject: =?utf-8?q?Caf=C3=A9?=\r\nMessage-ID: <m1@x>\r\nReferences: <a@x> <b@x>\r\n\
             Date: Tue, 1 Jul 2003 23:52:37 -0700\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n\
             Content-Type: text/plain\r\n\r\nHello there\r\n--b\r\n\
             Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n{att}\r\n--b--\r\n"
        );
        let a = analyse(raw.as_bytes());
        assert_eq!(a.subject, "Café");
        assert_eq!(a.message_id.as_deref(), Some("m1@x"));
        assert_eq!(a.references, vec!["a@x", "b@x"]);
        assert_eq!(a.from[0].name.as_deref(), Some("Ana"));
        assert_eq!(a.to.len(), 2);
        assert_eq!(a.sent_day.as_deref(), Some("2003-07-01"));
        assert_eq!(time::iso(a.sent_at.unwrap()), "2003-07-02T06:52:37Z");
        assert!(a.has_attachment);
        assert!(a.body_text.contains("Hello there"));
        assert!(a.headers_text.contains("Subject: Café\n"));
        assert_eq!(a.dedup_ranges.len(), 1);
        let (s, e) = a.dedup_ranges[0];
        assert!(raw.as_bytes()[s..e].starts_with(b"QUJD"));
    }

    #[test]
    fn garbage_gets_an_empty_summary() {
        let a = analyse(b"\x00\xff\xfe not mail at all");
        assert!(a.subject.is_empty());
        assert!(a.dedup_ranges.is_empty());
    }
}
