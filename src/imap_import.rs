//! `cofre mailbox import --imap`: reading every folder of another IMAP
//! server — messages byte for byte, with their flags and arrival dates —
//! for the command line to store. A small blocking client: LOGIN over
//! TLS (implicit, or STARTTLS), LIST, SELECT read-only, UID SEARCH, then
//! UID FETCH in batches.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use cofre_storage::Keyword;
use cofre_storage::import::ImportItem;
use tokio_rustls::rustls::{self, ClientConfig, pki_types::ServerName};

/// Messages fetched per `UID FETCH`.
pub const FETCH_BATCH: usize = 50;

/// Where to import from: `imaps://user@host[:993]` (TLS from the start)
/// or `imap://user@host[:143]` (STARTTLS, required).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// TLS from the first byte.
    pub implicit_tls: bool,
    /// The login name (may itself hold an `@`).
    pub user: String,
    /// The server's host name.
    pub host: String,
    /// Its port.
    pub port: u16,
}

impl Source {
    /// Parses `imaps://user@host[:port]` or `imap://user@host[:port]`.
    pub fn parse(url: &str) -> Result<Source> {
        let (implicit_tls, rest) = if let Some(r) = url.strip_prefix("imaps://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("imap://") {
            (false, r)
        } else {
            bail!("{url}: expected imaps://user@host[:port] or imap://user@host[:port]");
        };
        let rest = rest.trim_end_matches('/');
        let (user, hostport) = rest
            .rsplit_once('@')
            .ok_or_else(|| anyhow!("{url}: the user name is missing (imaps://user@host)"))?;
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().with_context(|| format!("{url}: bad port"))?),
            None => (hostport, if implicit_tls { 993 } else { 143 }),
        };
        if user.is_empty() || host.is_empty() {
            bail!("{url}: expected imaps://user@host[:port]");
        }
        Ok(Source {
            implicit_tls,
            user: user.to_string(),
            host: host.to_string(),
            port,
        })
    }
}

/// One folder of the source, as read.
pub struct SourceFolder {
    /// Its name, decoded, with `/` between levels.
    pub name: String,
    /// Whether it is the source's INBOX.
    pub inbox: bool,
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// A logged-in connection to the source server.
pub struct Client {
    io: Box<dyn Stream>,
    buf: Vec<u8>,
    tag: u32,
    delimiter: Option<char>,
}

impl Client {
    /// Connects, secures the connection (TLS, or STARTTLS) with `tls`, and
    /// logs in.
    pub fn connect(source: &Source, tls: Arc<ClientConfig>, password: &str) -> Result<Client> {
        let tcp = TcpStream::connect((source.host.as_str(), source.port))
            .with_context(|| format!("connecting to {}:{}", source.host, source.port))?;
        tcp.set_read_timeout(Some(Duration::from_secs(120)))?;
        let _ = tcp.set_nodelay(true);
        let secure = |tcp: TcpStream| -> Result<Box<dyn Stream>> {
            let name = ServerName::try_from(source.host.clone())
                .map_err(|_| anyhow!("{}: not a host name", source.host))?;
            let conn = rustls::ClientConnection::new(Arc::clone(&tls), name)?;
            Ok(Box::new(rustls::StreamOwned::new(conn, tcp)))
        };
        let mut c = Client {
            io: if source.implicit_tls {
                secure(tcp.try_clone()?)?
            } else {
                Box::new(tcp.try_clone()?)
            },
            buf: Vec::new(),
            tag: 0,
            delimiter: None,
        };
        let greeting = c.response()?;
        if !greeting.starts_with(b"* OK") && !greeting.starts_with(b"* PREAUTH") {
            bail!("the server refused: {}", String::from_utf8_lossy(&greeting));
        }
        if !source.implicit_tls {
            c.command("STARTTLS")
                .context("the server must offer STARTTLS (the password never goes in the clear)")?;
            c.io = secure(tcp)?;
            c.buf.clear();
        }
        c.command(&format!(
            "LOGIN {} {}",
            quoted(&source.user),
            quoted(password)
        ))
        .context("logging in to the source server")?;
        Ok(c)
    }

    /// The selectable folders, INBOX first.
    pub fn folders(&mut self) -> Result<Vec<(SourceFolder, Vec<u8>)>> {
        let mut out = Vec::new();
        for line in self.command("LIST \"\" \"*\"")? {
            let mut t = Tokens::new(&line);
            let (Some(Token::Atom(star)), Some(Token::Atom(list))) = (t.next(), t.next()) else {
                continue;
            };
            if star != b"*" || !list.eq_ignore_ascii_case(b"LIST") {
                continue;
            }
            let Some(Token::List(flags)) = t.next() else {
                continue;
            };
            let noselect = flags.iter().any(|f| {
                matches!(f, Token::Atom(a) if a.eq_ignore_ascii_case(b"\\Noselect")
                    || a.eq_ignore_ascii_case(b"\\NonExistent"))
            });
            let delimiter = match t.next() {
                Some(Token::Str(d)) => d.first().map(|&c| c as char),
                _ => None,
            };
            let Some(wire) = t.next().and_then(Token::bytes) else {
                continue;
            };
            if noselect {
                continue;
            }
            self.delimiter = self.delimiter.or(delimiter);
            let inbox = wire.eq_ignore_ascii_case(b"INBOX");
            let decoded = cofre_imap::mutf7::decode(&wire)
                .unwrap_or_else(|| String::from_utf8_lossy(&wire).into_owned());
            let name = match delimiter {
                Some(d) if d != '/' => decoded.replace('/', "_").replace(d, "/"),
                _ => decoded,
            };
            out.push((SourceFolder { name, inbox }, wire));
        }
        out.sort_by_key(|(f, _)| !f.inbox);
        Ok(out)
    }

    /// Selects a folder read-only and returns its messages' UIDs.
    pub fn uids(&mut self, wire: &[u8]) -> Result<Vec<u32>> {
        let name = String::from_utf8_lossy(wire);
        self.command(&format!("EXAMINE {}", quoted(&name)))?;
        let mut uids = Vec::new();
        for line in self.command("UID SEARCH ALL")? {
            if let Some(rest) = line.strip_prefix(b"* SEARCH") {
                uids.extend(
                    String::from_utf8_lossy(rest)
                        .split_whitespace()
                        .filter_map(|n| n.parse::<u32>().ok()),
                );
            }
        }
        uids.sort_unstable();
        Ok(uids)
    }

    /// The messages of the selected folder with these UIDs: bytes, flags as
    /// keywords, and the arrival date.
    pub fn fetch(&mut self, uids: &[u32]) -> Result<Vec<ImportItem>> {
        let set: Vec<String> = uids.iter().map(u32::to_string).collect();
        let lines = self.command(&format!(
            "UID FETCH {} (UID FLAGS INTERNALDATE BODY.PEEK[])",
            set.join(",")
        ))?;
        let mut out = Vec::new();
        for line in lines {
            let mut t = Tokens::new(&line);
            let (Some(Token::Atom(star)), Some(_), Some(Token::Atom(fetch))) =
                (t.next(), t.next(), t.next())
            else {
                continue;
            };
            if star != b"*" || !fetch.eq_ignore_ascii_case(b"FETCH") {
                continue;
            }
            let Some(Token::List(items)) = t.next() else {
                continue;
            };
            let (mut raw, mut keywords, mut received_at) = (None, Vec::new(), None);
            let mut items = items.into_iter();
            while let (Some(Token::Atom(key)), Some(value)) = (items.next(), items.next()) {
                match (key.to_ascii_uppercase().as_slice(), value) {
                    (b"FLAGS", Token::List(flags)) => {
                        keywords = flags.iter().filter_map(keyword_of).collect();
                    }
                    (b"INTERNALDATE", Token::Str(d)) => received_at = internal_date(&d),
                    (b"BODY[]", v) => raw = v.bytes(),
                    _ => {}
                }
            }
            if let Some(raw) = raw {
                out.push(ImportItem {
                    raw,
                    keywords,
                    received_at,
                });
            }
        }
        Ok(out)
    }

    /// Logs out (best effort: the import is done either way).
    pub fn logout(mut self) {
        let _ = self.command("LOGOUT");
    }

    /// Sends a command and returns its untagged responses; NO and BAD are
    /// errors.
    fn command(&mut self, cmd: &str) -> Result<Vec<Vec<u8>>> {
        self.tag += 1;
        let tag = format!("c{}", self.tag);
        self.io.write_all(format!("{tag} {cmd}\r\n").as_bytes())?;
        self.io.flush()?;
        let mut untagged = Vec::new();
        loop {
            let r = self.response()?;
            if let Some(rest) = r
                .strip_prefix(tag.as_bytes())
                .and_then(|r| r.strip_prefix(b" "))
            {
                if rest.starts_with(b"OK") {
                    return Ok(untagged);
                }
                let shown = if cmd.starts_with("LOGIN") {
                    "LOGIN"
                } else {
                    cmd
                };
                bail!("{shown}: {}", String::from_utf8_lossy(rest).trim_end());
            }
            untagged.push(r);
        }
    }

    /// One whole response: a line, with the literals it announces inline.
    fn response(&mut self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let line = self.line()?;
            out.extend_from_slice(&line);
            let Some(n) = literal_at_end(&line) else {
                return Ok(out);
            };
            out.extend_from_slice(b"\r\n");
            while self.buf.len() < n {
                self.fill()?;
            }
            out.extend(self.buf.drain(..n));
        }
    }

    /// One line without its CRLF.
    fn line(&mut self) -> Result<Vec<u8>> {
        loop {
            if let Some(i) = self.buf.iter().position(|&c| c == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=i).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(line);
            }
            self.fill()?;
        }
    }

    fn fill(&mut self) -> Result<()> {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.io.read(&mut chunk)?;
        if n == 0 {
            bail!("the source server closed the connection");
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// `{n}` (or `{n+}`) at the end of a line: a literal of n bytes follows.
fn literal_at_end(line: &[u8]) -> Option<usize> {
    let body = line.strip_suffix(b"}")?;
    let open = body.iter().rposition(|&c| c == b'{')?;
    let digits = &body[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// An IMAP quoted string.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A system flag as our keyword; other flags (keywords) as they are, when
/// valid; `\Recent` and `\Deleted` are not carried over.
fn keyword_of(t: &Token) -> Option<Keyword> {
    let Token::Atom(a) = t else { return None };
    let a = String::from_utf8_lossy(a).to_ascii_lowercase();
    let k = match a.as_str() {
        "\\seen" => "$seen",
        "\\flagged" => "$flagged",
        "\\answered" => "$answered",
        "\\draft" => "$draft",
        s if s.starts_with('\\') => return None,
        s => s,
    };
    Keyword::try_from(k).ok()
}

/// `17-Jul-1996 02:44:25 -0700` → Unix seconds.
fn internal_date(d: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(d).ok()?.trim();
    let (date, rest) = s.split_once(' ')?;
    let (time, zone) = rest.trim().split_once(' ')?;
    let mut dp = date.split('-');
    let (day, month, year) = (dp.next()?, dp.next()?, dp.next()?);
    let day: u32 = day.trim().parse().ok()?;
    let month = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ]
    .iter()
    .position(|m| m.eq_ignore_ascii_case(month))? as u32
        + 1;
    let year: i32 = year.parse().ok()?;
    let mut tp = time.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, sec) = (tp.next()??, tp.next()??, tp.next()??);
    let sign = if zone.starts_with('-') { -1 } else { 1 };
    let z: i64 = zone.get(1..)?.parse().ok()?;
    let offset = sign * ((z / 100) * 3600 + (z % 100) * 60);
    let days = cofre_imap::date::days_from_civil(year, month, day);
    Some(days * 86_400 + h * 3600 + m * 60 + sec - offset)
}

/// A piece of a response.
#[derive(Debug, PartialEq)]
enum Token {
    Atom(Vec<u8>),
    Str(Vec<u8>),
    List(Vec<Token>),
    Nil,
}

impl Token {
    /// A string's, atom's or literal's bytes.
    fn bytes(self) -> Option<Vec<u8>> {
        match self {
            Token::Atom(b) | Token::Str(b) => Some(b),
            _ => None,
        }
    }
}

/// Tokens of one response (literals come as `Str`).
struct Tokens<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Tokens<'a> {
    fn new(s: &'a [u8]) -> Self {
        Tokens { s, i: 0 }
    }

    fn next(&mut self) -> Option<Token> {
        while self.s.get(self.i) == Some(&b' ') {
            self.i += 1;
        }
        let c = *self.s.get(self.i)?;
        match c {
            b'(' => {
                self.i += 1;
                let mut items = Vec::new();
                loop {
                    while self.s.get(self.i) == Some(&b' ') {
                        self.i += 1;
                    }
                    match self.s.get(self.i) {
                        None => return Some(Token::List(items)),
                        Some(b')') => {
                            self.i += 1;
                            return Some(Token::List(items));
                        }
                        _ => items.push(self.next()?),
                    }
                }
            }
            b')' => {
                self.i += 1;
                self.next()
            }
            b'"' => {
                self.i += 1;
                let mut out = Vec::new();
                while let Some(&c) = self.s.get(self.i) {
                    self.i += 1;
                    match c {
                        b'\\' => {
                            if let Some(&n) = self.s.get(self.i) {
                                out.push(n);
                                self.i += 1;
                            }
                        }
                        b'"' => break,
                        _ => out.push(c),
                    }
                }
                Some(Token::Str(out))
            }
            b'{' => {
                let close = self.s[self.i..].iter().position(|&c| c == b'}')? + self.i;
                let digits = &self.s[self.i + 1..close];
                let digits = digits.strip_suffix(b"+").unwrap_or(digits);
                let n: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
                let start = close + 3; // past "}\r\n"
                let bytes = self.s.get(start..start + n)?.to_vec();
                self.i = start + n;
                Some(Token::Str(bytes))
            }
            _ => {
                let start = self.i;
                let mut depth = 0;
                while let Some(&c) = self.s.get(self.i) {
                    match c {
                        b'[' => depth += 1,
                        b']' => depth -= 1,
                        b' ' | b'(' | b')' if depth <= 0 => break,
                        _ => {}
                    }
                    self.i += 1;
                }
                let atom = self.s[start..self.i].to_vec();
                if atom.eq_ignore_ascii_case(b"NIL") {
                    Some(Token::Nil)
                } else {
                    Some(Token::Atom(atom))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            Source::parse("imaps://ana@example.com@mail.example.com").unwrap(),
            Source {
                implicit_tls: true,
                user: "ana@example.com".into(),
                host: "mail.example.com".into(),
                port: 993
            }
        );
        let s = Source::parse("imap://bo@127.0.0.1:1143").unwrap();
        assert_eq!((s.implicit_tls, s.port), (false, 1143));
        assert!(Source::parse("http://x@y").is_err());
        assert!(Source::parse("imaps://host-only").is_err());
    }

    #[test]
    fn fetch_responses_parse_with_literals() {
        let r = b"* 3 FETCH (UID 7 FLAGS (\\Seen \\Recent $label1) INTERNALDATE \"02-Jan-2024 10:00:00 +0100\" BODY[] {5}\r\nab)cd)";
        let mut t = Tokens::new(r);
        assert_eq!(t.next(), Some(Token::Atom(b"*".to_vec())));
        t.next();
        t.next();
        let Some(Token::List(items)) = t.next() else {
            panic!()
        };
        assert_eq!(items.len(), 8);
        assert_eq!(items[7], Token::Str(b"ab)cd".to_vec()));
        let Token::List(flags) = &items[3] else {
            panic!()
        };
        let kws: Vec<String> = flags
            .iter()
            .filter_map(keyword_of)
            .map(|k| k.as_str().to_string())
            .collect();
        assert_eq!(kws, ["$seen", "$label1"]);
        assert_eq!(
            internal_date(b"02-Jan-2024 10:00:00 +0100"),
            Some(1_704_186_000)
        );
        assert_eq!(literal_at_end(b"* 1 FETCH (BODY[] {12}"), Some(12));
        assert_eq!(literal_at_end(b"a OK done"), None);
    }
}
