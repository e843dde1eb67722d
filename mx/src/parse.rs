//! SMTP commands from bytes (RFC 5321 §4.1, with the ESMTP parameters of
//! SIZE, 8BITMIME, SMTPUTF8 and CHUNKING). No I/O: one command line in, a
//! [`Command`] or a [`Refusal`] with its reply out.

use std::fmt;

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `EHLO domain`.
    Ehlo(String),
    /// `HELO domain`.
    Helo(String),
    /// `MAIL FROM:<path> params`; an empty path is the null sender.
    Mail {
        /// The reverse path, without angle brackets ("" for `<>`).
        from: String,
        /// Its parameters.
        params: MailParams,
    },
    /// `RCPT TO:<path>`.
    Rcpt {
        /// The forward path, without angle brackets and source route.
        to: String,
    },
    /// `DATA`.
    Data,
    /// `BDAT size [LAST]` (RFC 3030).
    Bdat {
        /// Octets in the chunk that follows.
        size: u64,
        /// Whether it is the last chunk.
        last: bool,
    },
    /// `RSET`.
    Rset,
    /// `NOOP`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `VRFY` or `EXPN` (never answered with data: address harvesting).
    Vrfy,
    /// `HELP`.
    Help,
    /// `STARTTLS`.
    StartTls,
    /// `AUTH mechanism [initial-response]` (RFC 4954; submission only).
    Auth {
        /// The SASL mechanism, upper-cased.
        mechanism: String,
        /// The initial response, base64 (`=` for an empty one).
        initial: Option<String>,
    },
}

/// The body type a `MAIL` command declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Body {
    /// 7-bit (the default).
    #[default]
    SevenBit,
    /// `BODY=8BITMIME` (RFC 6152).
    EightBitMime,
}

/// `MAIL FROM` parameters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailParams {
    /// `SIZE=n` (RFC 1870): the sender's estimate.
    pub size: Option<u64>,
    /// `BODY=`.
    pub body: Body,
    /// `SMTPUTF8` (RFC 6531).
    pub smtputf8: bool,
}

/// Why a command line was refused, as an SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Basic reply code (500, 501, 502, 555).
    pub code: u16,
    /// Enhanced status code (RFC 3463).
    pub status: &'static str,
    /// Human-readable text.
    pub text: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.code, self.status, self.text)
    }
}

fn refuse(code: u16, status: &'static str, text: impl Into<String>) -> Refusal {
    Refusal {
        code,
        status,
        text: text.into(),
    }
}

/// Parses one command line (without its CRLF).
pub fn command(line: &[u8]) -> Result<Command, Refusal> {
    let line = std::str::from_utf8(line)
        .map_err(|_| refuse(500, "5.5.2", "Command line is not valid UTF-8"))?;
    if line.bytes().any(|b| b < 0x20 && b != b'\t') {
        return Err(refuse(500, "5.5.2", "Control characters in command"));
    }
    let (verb, rest) = match line.find(' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, ""),
    };
    let no_args = |c: Command| {
        if rest.trim().is_empty() {
            Ok(c)
        } else {
            Err(refuse(501, "5.5.4", "No parameters allowed"))
        }
    };
    match verb.to_ascii_uppercase().as_str() {
        "EHLO" => Ok(Command::Ehlo(domain(rest)?)),
        "HELO" => Ok(Command::Helo(domain(rest)?)),
        "MAIL" => mail(rest),
        "RCPT" => rcpt(rest),
        "DATA" => no_args(Command::Data),
        "BDAT" => bdat(rest),
        "RSET" => no_args(Command::Rset),
        // NOOP and HELP may carry a string, which is ignored.
        "NOOP" => Ok(Command::Noop),
        "HELP" => Ok(Command::Help),
        "QUIT" => no_args(Command::Quit),
        "VRFY" | "EXPN" => Ok(Command::Vrfy),
        "STARTTLS" => no_args(Command::StartTls),
        "AUTH" => {
            let mut words = rest.split(' ').filter(|w| !w.is_empty());
            let mechanism = words
                .next()
                .ok_or_else(|| refuse(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]"))?
                .to_ascii_uppercase();
            let initial = words.next().map(str::to_string);
            if words.next().is_some() {
                return Err(refuse(
                    501,
                    "5.5.4",
                    "Syntax: AUTH mechanism [initial-response]",
                ));
            }
            Ok(Command::Auth { mechanism, initial })
        }
        "" => Err(refuse(500, "5.5.2", "Empty command")),
        _ => Err(refuse(500, "5.5.1", "Command unrecognized")),
    }
}

fn domain(rest: &str) -> Result<String, Refusal> {
    let d = rest.trim();
    if d.is_empty() || d.contains(' ') {
        return Err(refuse(
            501,
            "5.5.4",
            "Syntax: EHLO domain-or-address-literal",
        ));
    }
    Ok(d.to_string())
}

/// Splits `FROM:<path> params` (or `TO:`) after the keyword.
fn after_keyword<'a>(rest: &'a str, keyword: &str) -> Result<&'a str, Refusal> {
    let usage = || refuse(501, "5.5.4", format!("Syntax: {keyword}<address>"));
    if rest.len() < keyword.len() || !rest[..keyword.len()].eq_ignore_ascii_case(keyword) {
        return Err(usage());
    }
    // Some senders put a space after the colon; accepted.
    Ok(rest[keyword.len()..].trim_start())
}

/// Reads a path: `<...>` (or, leniently, a bare address up to a space);
/// returns the address without brackets or source route, and what follows.
fn path(s: &str) -> Result<(String, &str), Refusal> {
    let bad = |why: &str| refuse(501, "5.1.3", format!("Bad address syntax: {why}"));
    let (inner, rest) = if let Some(body) = s.strip_prefix('<') {
        // Find the closing bracket outside a quoted local part.
        let mut quoted = false;
        let mut escaped = false;
        let mut end = None;
        for (i, c) in body.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                '>' if !quoted => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let end = end.ok_or_else(|| bad("no closing '>'"))?;
        (&body[..end], &body[end + 1..])
    } else {
        match s.find(' ') {
            Some(i) => (&s[..i], &s[i..]),
            None => (s, ""),
        }
    };
    // A source route (`@a,@b:user@c`) is ignored (RFC 5321 §3.3, C.).
    let inner = match inner.strip_prefix('@') {
        Some(route) => route
            .split_once(':')
            .map(|(_, addr)| addr)
            .ok_or_else(|| bad("source route without ':'"))?,
        None => inner,
    };
    if !inner.is_empty() {
        let Some(at) = inner.rfind('@') else {
            return Err(bad("no '@'"));
        };
        if at == 0 || at + 1 == inner.len() || inner.len() > 512 {
            return Err(bad("empty local part or domain"));
        }
    }
    if !rest.is_empty() && !rest.starts_with(' ') {
        return Err(bad("text after the address"));
    }
    Ok((inner.to_string(), rest))
}

fn mail(rest: &str) -> Result<Command, Refusal> {
    let (from, params) = path(after_keyword(rest, "FROM:")?)?;
    let mut p = MailParams::default();
    for param in params.split(' ').filter(|s| !s.is_empty()) {
        let (key, value) = match param.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (param, None),
        };
        match (key.to_ascii_uppercase().as_str(), value) {
            ("SIZE", Some(v)) => {
                p.size = Some(
                    v.parse()
                        .map_err(|_| refuse(501, "5.5.4", "SIZE must be a number"))?,
                )
            }
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("7BIT") => p.body = Body::SevenBit,
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("8BITMIME") => p.body = Body::EightBitMime,
            ("BODY", _) => return Err(refuse(501, "5.5.4", "BODY must be 7BIT or 8BITMIME")),
            ("SMTPUTF8", None) => p.smtputf8 = true,
            _ => {
                return Err(refuse(
                    555,
                    "5.5.4",
                    format!("MAIL parameter {key} not recognized"),
                ));
            }
        }
    }
    Ok(Command::Mail { from, params: p })
}

fn rcpt(rest: &str) -> Result<Command, Refusal> {
    let (to, params) = path(after_keyword(rest, "TO:")?)?;
    if to.is_empty() {
        return Err(refuse(501, "5.1.3", "Bad address syntax: empty recipient"));
    }
    if let Some(p) = params.split(' ').find(|s| !s.is_empty()) {
        return Err(refuse(
            555,
            "5.5.4",
            format!("RCPT parameter {p} not recognized"),
        ));
    }
    Ok(Command::Rcpt { to })
}

fn bdat(rest: &str) -> Result<Command, Refusal> {
    let mut words = rest.split(' ').filter(|s| !s.is_empty());
    let usage = || refuse(501, "5.5.4", "Syntax: BDAT size [LAST]");
    let size = words
        .next()
        .and_then(|w| w.parse().ok())
        .ok_or_else(usage)?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(usage()),
    };
    if words.next().is_some() {
        return Err(usage());
    }
    Ok(Command::Bdat { size, last })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Command {
        command(line.as_bytes()).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    fn code(line: &[u8]) -> u16 {
        match command(line) {
            Ok(c) => panic!("{c:?} parsed"),
            Err(r) => r.code,
        }
    }

    #[test]
    fn commands_and_parameters() {
        assert_eq!(
            ok("ehlo mail.example.org"),
            Command::Ehlo("mail.example.org".into())
        );
        assert_eq!(
            ok("MAIL FROM:<a@b.example> SIZE=1000 BODY=8BITMIME SMTPUTF8"),
            Command::Mail {
                from: "a@b.example".into(),
                params: MailParams {
                    size: Some(1000),
                    body: Body::EightBitMime,
                    smtputf8: true
                }
            }
        );
        assert_eq!(
            ok("MAIL FROM:<>"),
            Command::Mail {
                from: String::new(),
                params: MailParams::default()
            }
        );
        assert_eq!(
            ok("RCPT TO:<@relay.example:joe@c.example>"),
            Command::Rcpt {
                to: "joe@c.example".into()
            }
        );
        assert_eq!(
            ok("rcpt to: <\"odd >name\"@c.example>"),
            Command::Rcpt {
                to: "\"odd >name\"@c.example".into()
            }
        );
        assert_eq!(
            ok("MAIL FROM:bare@x.example"),
            Command::Mail {
                from: "bare@x.example".into(),
                params: MailParams::default()
            }
        );
        assert_eq!(
            ok("RCPT TO:<josé@exämple.org>"),
            Command::Rcpt {
                to: "josé@exämple.org".into()
            }
        );
        assert_eq!(
            ok("BDAT 0 LAST"),
            Command::Bdat {
                size: 0,
                last: true
            }
        );
        assert_eq!(
            ok("bdat 100"),
            Command::Bdat {
                size: 100,
                last: false
            }
        );
        assert_eq!(ok("NOOP anything"), Command::Noop);
    }

    #[test]
    fn refusals_carry_the_right_codes() {
        assert_eq!(code(b"FOO"), 500);
        assert_eq!(code(b""), 500);
        assert_eq!(code(b"\xff\xfe"), 500);
        assert_eq!(code(b"MAIL TO:<a@b>"), 501);
        assert_eq!(code(b"MAIL FROM:<a@b"), 501);
        assert_eq!(code(b"MAIL FROM:<a@b> SIZE=big"), 501);
        assert_eq!(code(b"MAIL FROM:<a@b> FROBNICATE=1"), 555);
        assert_eq!(code(b"RCPT TO:<>"), 501);
        assert_eq!(code(b"RCPT TO:<nobody>"), 501);
        assert_eq!(code(b"RCPT TO:<a@b> NOTIFY=NEVER"), 555);
        assert_eq!(code(b"DATA now"), 501);
        assert_eq!(code(b"BDAT"), 501);
        assert_eq!(code(b"BDAT 10 FIRST"), 501);
        assert_eq!(code(b"EHLO"), 501);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_parse_or_are_refused(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            if let Err(r) = command(&bytes) {
                proptest::prop_assert!((500..=555).contains(&r.code));
            }
        }
    }
}
