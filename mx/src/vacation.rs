//! Vacation replies (RFC 3834, as JMAP's VacationResponse asks): at most
//! one automatic answer per sender per week, never to automatic mail,
//! mailing lists, bulk mail or bounces, and never to a message that did
//! not name the alias as a recipient. The reply comes from the alias,
//! with a null envelope sender so nothing answers it back.

use mail_parser::{HeaderValue, MessageParser};

use cofre_storage::admin::Vacation;

/// How often one sender gets the reply (RFC 3834 suggests 7 days).
pub const EVERY_SECS: i64 = 7 * 24 * 3600;

/// Whether mail from envelope sender `from`, with these bytes, for
/// `alias`, gets an automatic reply at all.
pub fn answers(alias: &str, from: &str, raw: &[u8]) -> bool {
    let from = from.to_ascii_lowercase();
    let local = from.split('@').next().unwrap_or("");
    // Bounces and list or system senders (RFC 3834 §2, RFC 5230 §4.6).
    if from.is_empty()
        || from == alias.to_ascii_lowercase()
        || local == "mailer-daemon"
        || local == "postmaster"
        || local.starts_with("owner-")
        || local.ends_with("-request")
        || local.starts_with("listserv")
        || local.starts_with("majordomo")
        || local.contains("noreply")
        || local.contains("no-reply")
    {
        return false;
    }
    let Some(msg) = MessageParser::default().parse_headers(raw) else {
        return false;
    };
    let text = |name: &str| -> Option<String> {
        msg.headers()
            .iter()
            .find(|h| h.name.as_str().eq_ignore_ascii_case(name))
            .map(|h| match &h.value {
                HeaderValue::Text(t) => t.trim().to_ascii_lowercase(),
                _ => String::from("present"),
            })
    };
    if text("Auto-Submitted").is_some_and(|v| v != "no") {
        return false;
    }
    if text("Precedence").is_some_and(|v| ["bulk", "list", "junk"].contains(&v.as_str())) {
        return false;
    }
    let lists = ["List-Id", "List-Unsubscribe", "List-Post", "List-Help"];
    if lists.iter().any(|h| text(h).is_some()) || text("X-Auto-Response-Suppress").is_some() {
        return false;
    }
    // The alias must be among the visible recipients: mail that reached
    // it as a Bcc, or through a list, is not answered.
    msg.to()
        .into_iter()
        .chain(msg.cc())
        .flat_map(|a| a.iter())
        .any(|a| {
            a.address
                .as_deref()
                .is_some_and(|x| x.eq_ignore_ascii_case(alias))
        })
}

/// The reply from `alias` to `to`, answering `original`.
pub fn reply(alias: &str, to: &str, vacation: &Vacation, original: &[u8], date: &str) -> Vec<u8> {
    let msg = MessageParser::default().parse_headers(original);
    let subject = vacation.subject.clone().unwrap_or_else(|| {
        let s = msg.as_ref().and_then(|m| m.subject()).unwrap_or("");
        format!("Auto: {s}")
    });
    let id = msg
        .as_ref()
        .and_then(|m| m.message_id())
        .map(str::to_string);
    let domain = alias.rsplit_once('@').map_or("localhost", |(_, d)| d);
    let n: [u8; 12] = cofre_storage::keys::random_bytes();
    let mut out = format!(
        "From: <{alias}>\r\nTo: <{to}>\r\nSubject: {}\r\nDate: {date}\r\n\
         Message-ID: <{}@{domain}>\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n",
        encode_word(&subject),
        hex::encode(n),
    );
    if let Some(id) = id {
        out.push_str(&format!("In-Reply-To: <{id}>\r\nReferences: <{id}>\r\n"));
    }
    let text = vacation.text_body.clone().unwrap_or_default();
    match &vacation.html_body {
        None => {
            out.push_str("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n");
            out.push_str(&base64_lines(text.as_bytes()));
        }
        Some(html) => {
            let b = format!("vac{}", hex::encode(&n[..6]));
            out.push_str(&format!(
                "Content-Type: multipart/alternative; boundary=\"{b}\"\r\n\r\n--{b}\r\n\
                 Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\
                 --{b}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\
                 --{b}--\r\n",
                base64_lines(text.as_bytes()),
                base64_lines(html.as_bytes()),
            ));
        }
    }
    out.into_bytes()
}

/// An RFC 2047 encoded word when the text is not plain ASCII.
fn encode_word(s: &str) -> String {
    let s: String = s.chars().filter(|c| !c.is_control()).collect();
    if s.is_ascii() {
        return s;
    }
    use base64::Engine;
    format!(
        "=?UTF-8?B?{}?=",
        base64::engine::general_purpose::STANDARD.encode(s)
    )
}

/// Base64 in lines of 76 characters, each ending in CRLF.
fn base64_lines(bytes: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = String::with_capacity(b64.len() + b64.len() / 38 + 2);
    for chunk in b64.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push_str("\r\n");
    }
    out
}
