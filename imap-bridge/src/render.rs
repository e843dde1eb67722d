//! What FETCH returns, from stored data to IMAP syntax: strings and
//! literals, flags, ENVELOPE, BODY/BODYSTRUCTURE and body sections. Pure
//! functions over bytes: no I/O, nothing that can panic on odd mail.

use cofre_storage::Keyword;
use cofre_storage::mailbox::{Addr, EmailSummary, MimePart};
use mail_parser::{Address, HeaderValue, MessageParser};

use crate::parse::{Section, SectionText};

/// Writes an IMAP string: quoted when short and printable ASCII, a literal
/// otherwise (8-bit text in a quoted string is valid only after UTF8=ACCEPT;
/// in a literal it always is). Header text is RFC 2047-encoded by the
/// caller first unless the client enabled UTF8=ACCEPT.
pub fn string(out: &mut Vec<u8>, s: &[u8]) {
    let plain = s.len() < 1024 && s.iter().all(|&c| (0x20..0x7f).contains(&c) || c == b'\t');
    if plain {
        out.push(b'"');
        for &c in s {
            if c == b'"' || c == b'\\' {
                out.push(b'\\');
            }
            out.push(c);
        }
        out.push(b'"');
    } else {
        literal(out, s);
    }
}

/// Writes a literal.
pub fn literal(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(format!("{{{}}}\r\n", s.len()).as_bytes());
    out.extend_from_slice(s);
}

/// Writes `NIL` or a string.
pub fn nstring(out: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        Some(s) => string(out, s),
        None => out.extend_from_slice(b"NIL"),
    }
}

/// Header text for the wire: as is when ASCII or when the client takes
/// UTF-8, else one RFC 2047 encoded-word per 45 bytes of UTF-8.
pub fn header_text(s: &str, utf8: bool) -> Vec<u8> {
    if utf8 || s.is_ascii() {
        return s.as_bytes().to_vec();
    }
    use base64::Engine;
    let mut out = String::new();
    let mut chunk = String::new();
    let flush = |out: &mut String, chunk: &mut String| {
        if !chunk.is_empty() {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str("=?utf-8?b?");
            out.push_str(&base64::engine::general_purpose::STANDARD.encode(chunk.as_bytes()));
            out.push_str("?=");
            chunk.clear();
        }
    };
    for c in s.chars() {
        if chunk.len() + c.len_utf8() > 45 {
            flush(&mut out, &mut chunk);
        }
        chunk.push(c);
    }
    flush(&mut out, &mut chunk);
    out.into_bytes()
}

/// The IMAP name of a keyword: system flags get their backslash form.
pub fn flag_name(k: &Keyword) -> &str {
    match k.as_str() {
        "$seen" => "\\Seen",
        "$answered" => "\\Answered",
        "$flagged" => "\\Flagged",
        "$draft" => "\\Draft",
        "$deleted" => "\\Deleted",
        other => other,
    }
}

/// `(\Seen $label)`.
pub fn flags(out: &mut Vec<u8>, keywords: &[Keyword]) {
    out.push(b'(');
    for (i, k) in keywords.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(flag_name(k).as_bytes());
    }
    out.push(b')');
}

/// An address for ENVELOPE, from whichever parser produced it.
struct EnvAddr<'a> {
    name: Option<&'a str>,
    email: &'a str,
}

fn addr_list(out: &mut Vec<u8>, list: &[EnvAddr<'_>], utf8: bool) {
    if list.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for a in list {
        out.push(b'(');
        nstring(
            out,
            a.name
                .filter(|n| !n.is_empty())
                .map(|n| header_text(n, utf8))
                .as_deref(),
        );
        out.extend_from_slice(b" NIL ");
        let (local, host) = match a.email.rsplit_once('@') {
            Some((l, h)) => (l, Some(h)),
            None => (a.email, None),
        };
        nstring(out, Some(local.as_bytes()));
        out.push(b' ');
        nstring(out, host.map(str::as_bytes));
        out.push(b')');
    }
    out.push(b')');
}

struct Env<'a> {
    date: Option<String>,
    subject: Option<&'a str>,
    from: Vec<EnvAddr<'a>>,
    sender: Vec<EnvAddr<'a>>,
    reply_to: Vec<EnvAddr<'a>>,
    to: Vec<EnvAddr<'a>>,
    cc: Vec<EnvAddr<'a>>,
    bcc: Vec<EnvAddr<'a>>,
    in_reply_to: Option<String>,
    message_id: Option<String>,
}

fn write_env(out: &mut Vec<u8>, e: &Env<'_>, utf8: bool) {
    out.push(b'(');
    nstring(out, e.date.as_deref().map(str::as_bytes));
    out.push(b' ');
    nstring(out, e.subject.map(|s| header_text(s, utf8)).as_deref());
    // RFC 9051: sender and reply-to default to from.
    for list in [
        &e.from,
        if e.sender.is_empty() {
            &e.from
        } else {
            &e.sender
        },
        if e.reply_to.is_empty() {
            &e.from
        } else {
            &e.reply_to
        },
        &e.to,
        &e.cc,
        &e.bcc,
    ] {
        out.push(b' ');
        addr_list(out, list, utf8);
    }
    out.push(b' ');
    nstring(out, e.in_reply_to.as_deref().map(str::as_bytes));
    out.push(b' ');
    nstring(out, e.message_id.as_deref().map(str::as_bytes));
    out.push(b')');
}

fn ids(v: &[String]) -> Option<String> {
    if v.is_empty() {
        None
    } else {
        Some(
            v.iter()
                .map(|i| format!("<{i}>"))
                .collect::<Vec<_>>()
                .join(" "),
        )
    }
}

fn addrs(v: &[Addr]) -> Vec<EnvAddr<'_>> {
    v.iter()
        .map(|a| EnvAddr {
            name: a.name.as_deref(),
            email: &a.email,
        })
        .collect()
}

/// ENVELOPE from a stored header summary.
pub fn envelope(out: &mut Vec<u8>, s: &EmailSummary, utf8: bool) {
    let e = Env {
        date: s.sent_at.map(crate::date::rfc5322),
        subject: Some(s.subject.as_str()).filter(|x| !x.is_empty()),
        from: addrs(&s.from),
        sender: addrs(&s.sender),
        reply_to: addrs(&s.reply_to),
        to: addrs(&s.to),
        cc: addrs(&s.cc),
        bcc: addrs(&s.bcc),
        in_reply_to: ids(&s.in_reply_to),
        message_id: s.message_id.as_ref().map(|m| format!("<{m}>")),
    };
    write_env(out, &e, utf8);
}

fn parsed_addrs<'a>(a: Option<&'a Address<'a>>) -> Vec<EnvAddr<'a>> {
    let Some(a) = a else { return Vec::new() };
    a.iter()
        .map(|x| EnvAddr {
            name: x.name(),
            email: x.address().unwrap_or(""),
        })
        .collect()
}

fn header_ids(v: &HeaderValue<'_>) -> Option<String> {
    let list = v.as_text_list()?;
    ids(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
}

/// ENVELOPE of a message's raw bytes (nested messages in BODYSTRUCTURE).
pub fn envelope_of(out: &mut Vec<u8>, raw: &[u8], utf8: bool) {
    let Some(m) = MessageParser::default().parse_headers(raw) else {
        out.extend_from_slice(b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)");
        return;
    };
    let e = Env {
        date: m.date().map(|d| crate::date::rfc5322(d.to_timestamp())),
        subject: m.subject(),
        from: parsed_addrs(m.from()),
        sender: parsed_addrs(m.sender()),
        reply_to: parsed_addrs(m.reply_to()),
        to: parsed_addrs(m.to()),
        cc: parsed_addrs(m.cc()),
        bcc: parsed_addrs(m.bcc()),
        in_reply_to: header_ids(m.in_reply_to()),
        message_id: m.message_id().map(|i| format!("<{i}>")),
    };
    write_env(out, &e, utf8);
}

fn params(out: &mut Vec<u8>, p: &[(String, String)], utf8: bool) {
    if p.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for (i, (k, v)) in p.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        string(out, k.to_ascii_uppercase().as_bytes());
        out.push(b' ');
        string(out, &header_text(v, utf8));
    }
    out.push(b')');
}

fn extension(out: &mut Vec<u8>, p: &MimePart, utf8: bool) {
    out.push(b' ');
    match &p.disposition {
        Some(d) => {
            out.push(b'(');
            string(out, d.to_ascii_uppercase().as_bytes());
            out.push(b' ');
            params(out, &p.disposition_params, utf8);
            out.push(b')');
        }
        None => out.extend_from_slice(b"NIL"),
    }
    out.push(b' ');
    match p.language.as_slice() {
        [] => out.extend_from_slice(b"NIL"),
        langs => {
            out.push(b'(');
            for (i, l) in langs.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                string(out, l.as_bytes());
            }
            out.push(b')');
        }
    }
    out.push(b' ');
    nstring(out, p.location.as_deref().map(str::as_bytes));
}

/// BODY (`extended` false) or BODYSTRUCTURE of a part.
pub fn body_structure(out: &mut Vec<u8>, raw: &[u8], p: &MimePart, extended: bool, utf8: bool) {
    out.push(b'(');
    if p.media_type == "multipart" {
        if p.children.is_empty() {
            // An empty multipart: show it as an empty text part.
            out.extend_from_slice(b"\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" 0 0");
        }
        for c in &p.children {
            body_structure(out, raw, c, extended, utf8);
        }
        out.push(b' ');
        string(out, p.media_subtype.to_ascii_uppercase().as_bytes());
        if extended {
            out.push(b' ');
            params(out, &p.params, utf8);
            extension(out, p, utf8);
        }
        out.push(b')');
        return;
    }
    string(out, p.media_type.to_ascii_uppercase().as_bytes());
    out.push(b' ');
    string(out, p.media_subtype.to_ascii_uppercase().as_bytes());
    out.push(b' ');
    params(out, &p.params, utf8);
    out.push(b' ');
    nstring(out, p.content_id.as_deref().map(str::as_bytes));
    out.push(b' ');
    nstring(
        out,
        p.description
            .as_deref()
            .map(|d| header_text(d, utf8))
            .as_deref(),
    );
    out.push(b' ');
    let enc = p
        .transfer_encoding
        .as_deref()
        .unwrap_or("7bit")
        .to_ascii_uppercase();
    string(out, enc.as_bytes());
    let size = p.body_end.saturating_sub(p.body_start);
    out.extend_from_slice(format!(" {size}").as_bytes());
    if p.is_message
        && let Some(inner) = p.children.first()
    {
        out.push(b' ');
        let start = inner.header_start.min(raw.len());
        envelope_of(out, &raw[start..p.body_end.clamp(start, raw.len())], utf8);
        out.push(b' ');
        body_structure(out, raw, inner, extended, utf8);
        out.extend_from_slice(format!(" {}", p.body_lines).as_bytes());
    } else if p.media_type == "text" {
        out.extend_from_slice(format!(" {}", p.body_lines).as_bytes());
    }
    if extended {
        out.extend_from_slice(b" NIL");
        extension(out, p, utf8);
    }
    out.push(b')');
}

/// The part a section's numbers name, with the 0-based path to it
/// (for decoding). Part 1 of a non-multipart message is its body.
pub fn resolve<'a>(root: &'a MimePart, nums: &[u32]) -> Option<(&'a MimePart, Vec<usize>)> {
    let mut cur = root;
    let mut path = Vec::new();
    for &n in nums {
        if cur.is_message {
            cur = cur.children.first()?;
            path.push(0);
        }
        if cur.media_type == "multipart" {
            let i = usize::try_from(n).ok()?.checked_sub(1)?;
            cur = cur.children.get(i)?;
            path.push(i);
        } else if n != 1 {
            return None;
        }
    }
    Some((cur, path))
}

fn slice(raw: &[u8], a: usize, b: usize) -> &[u8] {
    let a = a.min(raw.len());
    &raw[a..b.clamp(a, raw.len())]
}

fn header_fields(header: &[u8], names: &[String], keep: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < header.len() {
        // One field: this line and its continuation lines.
        let mut end = i;
        loop {
            match header[end..].iter().position(|&c| c == b'\n') {
                Some(p) => end += p + 1,
                None => {
                    end = header.len();
                    break;
                }
            }
            if end >= header.len() || !matches!(header[end], b' ' | b'\t') {
                break;
            }
        }
        let field = &header[i..end];
        if field == b"\r\n" || field == b"\n" {
            break;
        }
        let name = field
            .iter()
            .position(|&c| c == b':')
            .map(|p| &field[..p])
            .unwrap_or(b"");
        let name = String::from_utf8_lossy(name);
        let listed = names.iter().any(|n| n.eq_ignore_ascii_case(name.trim()));
        if listed == keep {
            out.extend_from_slice(field);
        }
        i = end;
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The bytes a `BODY[section]` names, or `None` if the part does not exist.
pub fn section(raw: &[u8], root: &MimePart, s: &Section) -> Option<Vec<u8>> {
    let (part, _) = resolve(root, &s.part)?;
    // HEADER/TEXT of a part name its nested message's header and body.
    let message = || -> Option<&MimePart> {
        if s.part.is_empty() {
            Some(root)
        } else if part.is_message {
            part.children.first()
        } else {
            None
        }
    };
    Some(match &s.text {
        None if s.part.is_empty() => raw.to_vec(),
        None => slice(raw, part.body_start, part.body_end).to_vec(),
        Some(SectionText::Mime) => slice(raw, part.header_start, part.body_start).to_vec(),
        Some(SectionText::Header) => {
            let m = message()?;
            slice(raw, m.header_start, m.body_start).to_vec()
        }
        Some(SectionText::Text) => {
            let m = message()?;
            let end = if s.part.is_empty() {
                raw.len()
            } else {
                part.body_end
            };
            slice(raw, m.body_start, end).to_vec()
        }
        Some(SectionText::Fields(names)) => {
            let m = message()?;
            header_fields(slice(raw, m.header_start, m.body_start), names, true)
        }
        Some(SectionText::FieldsNot(names)) => {
            let m = message()?;
            header_fields(slice(raw, m.header_start, m.body_start), names, false)
        }
    })
}

/// How a section is named in the response (`BODY[1.HEADER.FIELDS (A B)]`).
pub fn section_name(s: &Section) -> String {
    let mut n: Vec<String> = s.part.iter().map(u32::to_string).collect();
    match &s.text {
        None => {}
        Some(SectionText::Header) => n.push("HEADER".into()),
        Some(SectionText::Text) => n.push("TEXT".into()),
        Some(SectionText::Mime) => n.push("MIME".into()),
        Some(SectionText::Fields(f)) => n.push(format!(
            "HEADER.FIELDS ({})",
            f.iter()
                .map(|x| quote_atom(x))
                .collect::<Vec<_>>()
                .join(" ")
        )),
        Some(SectionText::FieldsNot(f)) => n.push(format!(
            "HEADER.FIELDS.NOT ({})",
            f.iter()
                .map(|x| quote_atom(x))
                .collect::<Vec<_>>()
                .join(" ")
        )),
    }
    n.join(".")
}

fn quote_atom(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-') {
        s.to_ascii_uppercase()
    } else {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// Applies `<offset.length>` to section bytes.
pub fn partial(bytes: &[u8], p: Option<(u32, u32)>) -> &[u8] {
    match p {
        None => bytes,
        Some((off, len)) => {
            let a = (off as usize).min(bytes.len());
            let b = a.saturating_add(len as usize).min(bytes.len());
            &bytes[a..b]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cofre_storage::mailbox::structure_of;

    const MULTI: &[u8] = b"From: A <a@example.com>\r\nTo: b@example.org\r\nSubject: hi\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"xx\"\r\n\r\npre\r\n--xx\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n--xx\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\nFrom: c@example.net\r\n\r\ninner body\r\n--xx--\r\n";

    #[test]
    fn sections_of_a_multipart() {
        let root = structure_of(MULTI);
        let sec = |part: Vec<u32>, text: Option<SectionText>| {
            section(MULTI, &root, &Section { part, text }).map(|b| String::from_utf8(b).unwrap())
        };
        assert_eq!(sec(vec![1], None).as_deref(), Some("hello"));
        assert_eq!(
            sec(vec![1], Some(SectionText::Mime)).as_deref(),
            Some("Content-Type: text/plain; charset=utf-8\r\n\r\n")
        );
        assert_eq!(
            sec(vec![2], Some(SectionText::Header)).as_deref(),
            Some("Subject: inner\r\nFrom: c@example.net\r\n\r\n")
        );
        assert_eq!(sec(vec![2, 1], None).as_deref(), Some("inner body"));
        assert_eq!(sec(vec![3], None), None);
        assert_eq!(
            sec(
                vec![],
                Some(SectionText::Fields(vec!["subject".into(), "to".into()]))
            )
            .as_deref(),
            Some("To: b@example.org\r\nSubject: hi\r\n\r\n")
        );
        let mut out = Vec::new();
        body_structure(&mut out, MULTI, &root, false, false);
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.starts_with("((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"utf-8\") NIL NIL \"7BIT\" 5 0)"),
            "{s}"
        );
        assert!(s.contains("\"MESSAGE\" \"RFC822\""), "{s}");
        assert!(s.ends_with(" \"MIXED\")"), "{s}");
    }

    #[test]
    fn strings_quote_or_go_literal() {
        let mut out = Vec::new();
        string(&mut out, b"a \"b\\");
        assert_eq!(out, b"\"a \\\"b\\\\\"");
        out.clear();
        string(&mut out, b"a\r\nb");
        assert_eq!(out, b"{4}\r\na\r\nb");
        assert_eq!(header_text("Olá", false), b"=?utf-8?b?T2zDoQ==?=");
    }
}
