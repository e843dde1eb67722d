//! A small client for S3-compatible object stores, for backups: the calls a
//! backup target needs — put (whole, or in parts for large files), ranged
//! get, head, delete, list — signed with AWS Signature Version 4, over
//! HTTP/1.1 with or without TLS.
//!
//! Blocking on purpose: backup tasks run on threads of their own, beside
//! the file work (snapshot, hash) they interleave with. One connection per
//! request; a request that fails on the network or with a 5xx is tried
//! again (three tries) when it is safe to.
//!
//! Every upload is checked twice. The store checks each request's body
//! against the SHA-256 signed into it (`x-amz-content-sha256`), and after
//! the upload the object's ETag and size are compared with the MD5 of the
//! bytes sent (for parts, the MD5 of their MD5s and their count, as S3
//! computes it).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use md5::Md5;
use sha2::{Digest, Sha256};
use tokio_rustls::rustls;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::time;

/// The smallest part S3 accepts in a multipart upload (all but the last).
pub const MIN_PART_SIZE: usize = 5 << 20;

/// Where a store is and how to sign for it.
#[derive(Clone)]
pub struct S3Config {
    /// `https://host[:port]` (or `http://` on a trusted network).
    pub endpoint: String,
    /// The bucket.
    pub bucket: String,
    /// The region signed into every request (`us-east-1` if the store has
    /// none).
    pub region: String,
    /// The access key id.
    pub access_key: String,
    /// The secret access key (never logged).
    pub secret_key: Zeroizing<String>,
    /// Put before every object's name (`cofre/`, say); may be empty.
    pub prefix: String,
    /// Files larger than this go up in parts of this size (at least
    /// [`MIN_PART_SIZE`]). Default 16 MiB.
    pub part_size: usize,
    /// `https://host/bucket/key` (true, the default, which every
    /// S3-compatible store serves) or `https://bucket.host/key`.
    pub path_style: bool,
    /// Certificates to trust instead of the system's (a private store).
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key", &self.access_key)
            .field("secret_key", &"<hidden>")
            .field("prefix", &self.prefix)
            .field("part_size", &self.part_size)
            .field("path_style", &self.path_style)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// A bucket to read and write objects in.
pub struct Bucket {
    config: S3Config,
    /// Host and port to connect to.
    addr: (String, u16),
    /// The `Host` header (and the name TLS checks).
    host: String,
    /// The path before an object's key: `/bucket/` or `/`.
    base: String,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bucket({} {})", self.config.endpoint, self.config.bucket)
    }
}

/// An object in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// Its full key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
}

impl Bucket {
    /// A bucket from its configuration (nothing is contacted yet).
    pub fn new(config: S3Config) -> Result<Bucket> {
        let bad = |why: &str| Error::Invalid(format!("S3 endpoint {:?}: {why}", config.endpoint));
        let (https, rest) = if let Some(r) = config.endpoint.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = config.endpoint.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(bad("must start with https:// or http://"));
        };
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(bad("must be a scheme and a host, with no path"));
        }
        let (name, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h.to_string(),
                p.parse::<u16>().map_err(|_| bad("bad port"))?,
            ),
            _ => (authority.to_string(), if https { 443 } else { 80 }),
        };
        if config.bucket.is_empty()
            || !config
                .bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b))
        {
            return Err(Error::Invalid(format!(
                "S3 bucket {:?}: lower-case letters, digits, '-' and '.' only",
                config.bucket
            )));
        }
        if config.part_size < MIN_PART_SIZE {
            return Err(Error::Invalid(format!(
                "S3 part size must be at least {MIN_PART_SIZE} bytes"
            )));
        }
        let (host, base, connect_name) = if config.path_style {
            (authority.to_string(), format!("/{}/", config.bucket), name)
        } else {
            (
                format!("{}.{authority}", config.bucket),
                "/".to_string(),
                format!("{}.{name}", config.bucket),
            )
        };
        let tls = if https {
            Some(match &config.ca_file {
                Some(ca) => crate::tls::client_config(ca)?,
                None => crate::tls::system_client_config(),
            })
        } else {
            None
        };
        Ok(Bucket {
            addr: (connect_name.trim_matches(['[', ']']).to_string(), port),
            host,
            base,
            tls,
            config,
        })
    }

    /// The bucket's configuration.
    pub fn config(&self) -> &S3Config {
        &self.config
    }

    /// The full key of `name`: the configured prefix, then `name`.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.config.prefix)
    }

    /// Uploads a file as the object `key` — in one request, or in parts
    /// when larger than the part size — and checks the stored object's
    /// size and ETag against what was sent. A failed multipart upload is
    /// aborted.
    pub fn put_file(&self, key: &str, path: &Path) -> Result<()> {
        let mut file = std::fs::File::open(path)?;
        let size = file.metadata()?.len();
        let part_size = self.config.part_size;
        let etag = if size <= part_size as u64 {
            let mut body = Vec::with_capacity(size as usize);
            file.read_to_end(&mut body)?;
            let sent = hex::encode(Md5::digest(&body));
            let r = self.call("PUT", key, &[], &[], &body, true)?;
            check_etag(&r, &sent)?;
            sent
        } else {
            self.put_parts(key, &mut file, part_size)?
        };
        match self.head(key)? {
            Some((stored, stored_etag)) if stored == size && stored_etag == etag => Ok(()),
            Some((stored, stored_etag)) => Err(Error::Corrupt(format!(
                "S3 object {key}: stored {stored} bytes with ETag {stored_etag}, sent {size} with {etag}"
            ))),
            None => Err(Error::Unavailable(format!(
                "S3 object {key} is missing right after its upload"
            ))),
        }
    }

    /// A multipart upload; returns the ETag S3 gives the whole.
    fn put_parts(&self, key: &str, file: &mut std::fs::File, part_size: usize) -> Result<String> {
        let r = self.call("POST", key, &[("uploads", String::new())], &[], &[], true)?;
        let upload_id = xml_values(&r.text(), "UploadId")
            .into_iter()
            .next()
            .ok_or_else(|| Error::Unavailable(format!("S3 gave no UploadId for {key}")))?;
        let uploaded = (|| {
            let mut parts = Vec::new();
            let mut md5s = Vec::new();
            let mut buf = vec![0u8; part_size];
            loop {
                let n = read_full(file, &mut buf)?;
                if n == 0 {
                    break;
                }
                let body = &buf[..n];
                let number = parts.len() + 1;
                let md5 = Md5::digest(body);
                let query = [
                    ("partNumber", number.to_string()),
                    ("uploadId", upload_id.clone()),
                ];
                let r = self.call("PUT", key, &query, &[], body, true)?;
                check_etag(&r, &hex::encode(md5))?;
                parts.push((number, r.header("etag").unwrap_or_default().to_string()));
                md5s.extend_from_slice(&md5);
            }
            let mut xml = String::from("<CompleteMultipartUpload>");
            for (number, etag) in &parts {
                xml.push_str(&format!(
                    "<Part><PartNumber>{number}</PartNumber><ETag>{}</ETag></Part>",
                    xml_escape(etag)
                ));
            }
            xml.push_str("</CompleteMultipartUpload>");
            let r = self.call(
                "POST",
                key,
                &[("uploadId", upload_id.clone())],
                &[],
                xml.as_bytes(),
                false,
            )?;
            // A 200 may still carry an error (S3 says so in its body).
            let text = r.text();
            if text.contains("<Error>") {
                return Err(s3_error(200, &text));
            }
            Ok(format!(
                "{}-{}",
                hex::encode(Md5::digest(&md5s)),
                parts.len()
            ))
        })();
        if uploaded.is_err() {
            let _ = self.call("DELETE", key, &[("uploadId", upload_id)], &[], &[], true);
        }
        uploaded
    }

    /// Up to `len` bytes of an object from `offset` (fewer at its end;
    /// none past it).
    pub fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let range = format!("bytes={offset}-{}", offset + len - 1);
        match self.call("GET", key, &[], &[("range", range)], &[], true) {
            Ok(r) => Ok(r.body),
            Err(Error::Invalid(_)) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Streams a whole object into `out`; returns its size.
    pub fn get_into(&self, key: &str, out: &mut dyn Write) -> Result<u64> {
        let mut response = self.send("GET", key, &[], &[], &[])?;
        if response.status != 200 {
            let mut body = Vec::new();
            response.body.read_to_end(&mut body)?;
            return Err(status_error(response.status, &body, key));
        }
        Ok(std::io::copy(&mut response.body, out)?)
    }

    /// An object's size and ETag (quotes removed), or `None` if absent.
    pub fn head(&self, key: &str) -> Result<Option<(u64, String)>> {
        match self.call("HEAD", key, &[], &[], &[], true) {
            Ok(r) => {
                let size = r
                    .header("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                Ok(Some((
                    size,
                    r.header("etag")
                        .unwrap_or_default()
                        .trim_matches('"')
                        .to_string(),
                )))
            }
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes an object (absent is not an error).
    pub fn delete(&self, key: &str) -> Result<()> {
        match self.call("DELETE", key, &[], &[], &[], true) {
            Ok(_) | Err(Error::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every object whose key starts with `prefix`, page after page.
    pub fn list(&self, prefix: &str) -> Result<Vec<Object>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![
                ("list-type", "2".to_string()),
                ("prefix", prefix.to_string()),
            ];
            if let Some(t) = &token {
                query.push(("continuation-token", t.clone()));
            }
            let r = self.call("GET", "", &query, &[], &[], true)?;
            let text = r.text();
            for contents in xml_values(&text, "Contents") {
                let key = xml_values(&contents, "Key").into_iter().next();
                let size = xml_values(&contents, "Size")
                    .into_iter()
                    .next()
                    .and_then(|s| s.parse().ok());
                if let (Some(key), Some(size)) = (key, size) {
                    out.push(Object { key, size });
                }
            }
            let truncated =
                xml_values(&text, "IsTruncated").first().map(String::as_str) == Some("true");
            token = xml_values(&text, "NextContinuationToken")
                .into_iter()
                .next();
            if !truncated || token.is_none() {
                return Ok(out);
            }
        }
    }

    /// One request, its whole answer read; tried again on a network error
    /// or a 5xx when `retry`. Statuses other than 2xx become errors as
    /// [`status_error`] says.
    fn call(
        &self,
        method: &str,
        key: &str,
        query: &[(&str, String)],
        headers: &[(&str, String)],
        body: &[u8],
        retry: bool,
    ) -> Result<Answer> {
        let tries = if retry { 3 } else { 1 };
        let mut last = None;
        for attempt in 0..tries {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(200 << attempt));
            }
            let result = self
                .send(method, key, query, headers, body)
                .and_then(|mut r| {
                    let mut data = Vec::new();
                    r.body.read_to_end(&mut data)?;
                    Ok((r.status, r.headers, data))
                });
            match result {
                Ok((status, headers, data)) if (200..300).contains(&status) => {
                    return Ok(Answer {
                        headers,
                        body: data,
                    });
                }
                Ok((status, _, data)) if status >= 500 => {
                    last = Some(status_error(status, &data, key));
                }
                Ok((status, _, data)) => return Err(status_error(status, &data, key)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Unavailable("S3: no answer".into())))
    }

    /// Sends one signed request and reads the answer's head.
    fn send(
        &self,
        method: &str,
        key: &str,
        query: &[(&str, String)],
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Result<Response> {
        let path = format!("{}{}", self.base, uri_encode(key, false));
        let now = time::now();
        let payload = hex::encode(Sha256::digest(body));
        let mut signed: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        signed.push(("host".into(), self.host.clone()));
        signed.push(("x-amz-content-sha256".into(), payload.clone()));
        signed.push(("x-amz-date".into(), amz_date(now)));
        let auth = sign(
            &Signing {
                access_key: &self.config.access_key,
                secret_key: &self.config.secret_key,
                region: &self.config.region,
                now,
            },
            method,
            &path,
            query,
            &mut signed,
            &payload,
        );
        let query_string = canonical_query(query);
        let target = if query_string.is_empty() {
            path
        } else {
            format!("{path}?{query_string}")
        };
        let mut head = format!("{method} {target} HTTP/1.1\r\n");
        for (k, v) in &signed {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str(&format!(
            "authorization: {auth}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        ));
        let mut stream = self.connect()?;
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        stream.flush()?;
        read_response(stream, method == "HEAD")
    }

    fn connect(&self) -> Result<Box<dyn Stream>> {
        let unavailable = |e: std::io::Error| {
            Error::Unavailable(format!("S3 endpoint {}: {e}", self.config.endpoint))
        };
        let addrs: Vec<_> = (self.addr.0.as_str(), self.addr.1)
            .to_socket_addrs()
            .map_err(unavailable)?
            .collect();
        let mut last = std::io::Error::other("no address");
        let mut tcp = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, Duration::from_secs(10)) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let tcp = tcp.ok_or_else(|| unavailable(last))?;
        tcp.set_read_timeout(Some(Duration::from_secs(120)))?;
        tcp.set_write_timeout(Some(Duration::from_secs(120)))?;
        tcp.set_nodelay(true)?;
        match &self.tls {
            None => Ok(Box::new(tcp)),
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(self.addr.0.clone())
                    .map_err(|e| Error::Invalid(format!("S3 host {}: {e}", self.addr.0)))?;
                let conn = rustls::ClientConnection::new(config.clone(), name)
                    .map_err(|e| Error::Unavailable(format!("S3 TLS: {e}")))?;
                Ok(Box::new(rustls::StreamOwned::new(conn, tcp)))
            }
        }
    }
}

/// A byte stream to a store, plain or TLS.
trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// An answer read whole.
struct Answer {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An answer whose body is still to be read.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Body,
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Reads a status line and headers; the body is framed by
/// `Content-Length`, chunked, or runs to the end of the connection.
fn read_response(stream: Box<dyn Stream>, head_only: bool) -> Result<Response> {
    let mut reader = BufReader::new(stream);
    let bad = |what: &str| Error::Unavailable(format!("S3 answered with a bad {what}"));
    let mut line = String::new();
    read_line(&mut reader, &mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .filter(|_| line.starts_with("HTTP/1."))
        .ok_or_else(|| bad("status line"))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        read_line(&mut reader, &mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').ok_or_else(|| bad("header"))?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        if headers.len() > 200 {
            return Err(bad("header block"));
        }
    }
    let framing = if head_only || status == 204 || status == 304 {
        Framing::Length(0)
    } else if header(&headers, "transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        Framing::Chunked {
            left: 0,
            done: false,
        }
    } else if let Some(n) = header(&headers, "content-length") {
        Framing::Length(n.parse().map_err(|_| bad("Content-Length"))?)
    } else {
        Framing::Eof
    };
    Ok(Response {
        status,
        headers,
        body: Body { reader, framing },
    })
}

/// One line of at most 64 KiB.
fn read_line(reader: &mut impl BufRead, line: &mut String) -> Result<()> {
    let n = reader.take(64 << 10).read_line(line)?;
    if n == 0 || !line.ends_with('\n') {
        return Err(Error::Unavailable(
            "S3 closed the connection mid-answer".into(),
        ));
    }
    Ok(())
}

enum Framing {
    Length(u64),
    Chunked { left: u64, done: bool },
    Eof,
}

/// An answer's body as it arrives.
struct Body {
    reader: BufReader<Box<dyn Stream>>,
    framing: Framing,
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let short =
            || std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "S3 answer cut short");
        match &mut self.framing {
            Framing::Length(0) => Ok(0),
            Framing::Length(left) => {
                let want = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                let n = self.reader.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(short());
                }
                *left -= n as u64;
                Ok(n)
            }
            Framing::Eof => self.reader.read(buf),
            Framing::Chunked { left, done } => {
                if *done {
                    return Ok(0);
                }
                if *left == 0 {
                    let mut line = String::new();
                    read_line(&mut self.reader, &mut line).map_err(|_| short())?;
                    let size = line.trim().split(';').next().unwrap_or("");
                    let size = u64::from_str_radix(size.trim(), 16).map_err(|_| {
                        std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunk size")
                    })?;
                    if size == 0 {
                        // Trailers, up to the empty line.
                        loop {
                            line.clear();
                            read_line(&mut self.reader, &mut line).map_err(|_| short())?;
                            if line.trim_end().is_empty() {
                                break;
                            }
                        }
                        *done = true;
                        return Ok(0);
                    }
                    *left = size;
                }
                let want = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                let n = self.reader.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(short());
                }
                *left -= n as u64;
                if *left == 0 {
                    let mut crlf = [0u8; 2];
                    self.reader.read_exact(&mut crlf)?;
                }
                Ok(n)
            }
        }
    }
}

/// A non-2xx answer as an error, with S3's code and message when given:
/// 404 `NotFound`, 416 `Invalid` (a range past the end), anything else
/// `Unavailable` — a store that refuses us (credentials, bucket, policy)
/// is the operator's to fix, never the caller's fault.
fn status_error(status: u16, body: &[u8], key: &str) -> Error {
    match status {
        404 => Error::NotFound(format!("S3 object {key}")),
        416 => Error::Invalid(format!("S3 object {key}: range past the end")),
        _ => s3_error(status, &String::from_utf8_lossy(body)),
    }
}

fn s3_error(status: u16, text: &str) -> Error {
    let code = xml_values(text, "Code")
        .into_iter()
        .next()
        .unwrap_or_default();
    let message = xml_values(text, "Message")
        .into_iter()
        .next()
        .unwrap_or_default();
    Error::Unavailable(format!(
        "the backup store answered {status} {code}: {message}"
    ))
}

/// The ETag of an uploaded body must be its MD5.
fn check_etag(r: &Answer, md5_hex: &str) -> Result<()> {
    match r
        .header("etag")
        .map(|e| e.trim_matches('"').to_ascii_lowercase())
    {
        Some(e) if e == md5_hex => Ok(()),
        other => Err(Error::Corrupt(format!(
            "S3 stored a body with ETag {other:?}, sent one with MD5 {md5_hex}"
        ))),
    }
}

/// Fills `buf` as far as the reader goes; returns how much.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// What signs a request.
struct Signing<'a> {
    access_key: &'a str,
    secret_key: &'a str,
    region: &'a str,
    /// Unix seconds.
    now: i64,
}

/// Signs a request (AWS Signature Version 4, service `s3`): `headers` are
/// every header to sign, `host` included; sorts them and returns the
/// `Authorization` value.
fn sign(
    s: &Signing<'_>,
    method: &str,
    path: &str,
    query: &[(&str, String)],
    headers: &mut [(String, String)],
    payload_sha256: &str,
) -> String {
    headers.sort();
    let signed_names = headers
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let mut canonical = format!("{method}\n{path}\n{}\n", canonical_query(query));
    for (k, v) in headers.iter() {
        canonical.push_str(&format!("{k}:{v}\n"));
    }
    canonical.push_str(&format!("\n{signed_names}\n{payload_sha256}"));
    let stamp = amz_date(s.now);
    let day = &stamp[..8];
    let scope = format!("{day}/{}/s3/aws4_request", s.region);
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let secret = Zeroizing::new(format!("AWS4{}", s.secret_key));
    let k = hmac(secret.as_bytes(), day.as_bytes());
    let k = hmac(&k, s.region.as_bytes());
    let k = hmac(&k, b"s3");
    let k = hmac(&k, b"aws4_request");
    let signature = hex::encode(hmac(&k, to_sign.as_bytes()));
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope},SignedHeaders={signed_names},Signature={signature}",
        s.access_key
    )
}

fn hmac(key: &[u8], data: &[u8]) -> Zeroizing<Vec<u8>> {
    // HMAC takes a key of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    Zeroizing::new(mac.finalize().into_bytes().to_vec())
}

/// `YYYYMMDDTHHMMSSZ`.
fn amz_date(ts: i64) -> String {
    time::iso(ts).replace(['-', ':'], "")
}

/// The query, sorted and encoded as SigV4 wants (and as sent).
fn canonical_query(query: &[(&str, String)]) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (uri_encode(k, true), uri_encode(v, true)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-encodes all but RFC 3986's unreserved characters (and `/`
/// unless `slash`).
fn uri_encode(s: &str, slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (b == b'/' && !slash) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The text of every `<tag>…</tag>` element (no attributes, not nested in
/// itself), entities decoded.
fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        out.push(
            after[..end]
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&"),
        );
        rest = &after[end + close.len()..];
    }
    out
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_aws_documentation_example() {
        // AWS's "GET Object" example for Signature Version 4 in S3.
        let mut headers = vec![
            (
                "host".to_string(),
                "examplebucket.s3.amazonaws.com".to_string(),
            ),
            ("range".to_string(), "bytes=0-9".to_string()),
            (
                "x-amz-content-sha256".to_string(),
                hex::encode(Sha256::digest(b"")),
            ),
            ("x-amz-date".to_string(), "20130524T000000Z".to_string()),
        ];
        let payload = headers[2].1.clone();
        let s = Signing {
            access_key: "AKIAIOSFODNN7EXAMPLE",
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            region: "us-east-1",
            now: time::parse_iso("2013-05-24T00:00:00Z").unwrap_or_default(),
        };
        let auth = sign(&s, "GET", "/test.txt", &[], &mut headers, &payload);
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,\
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,\
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn encodes_queries_as_signed() {
        let q = [
            ("prefix", "a b/c".to_string()),
            ("list-type", "2".to_string()),
            ("uploads", String::new()),
        ];
        assert_eq!(canonical_query(&q), "list-type=2&prefix=a%20b%2Fc&uploads=");
        assert_eq!(uri_encode("x/y z~", false), "x/y%20z~");
    }

    #[test]
    fn reads_xml_values() {
        let x = "<R><Contents><Key>a&amp;b</Key><Size>3</Size></Contents><Contents><Key>c</Key><Size>4</Size></Contents></R>";
        let c = xml_values(x, "Contents");
        assert_eq!(c.len(), 2);
        assert_eq!(xml_values(&c[0], "Key"), vec!["a&b"]);
        assert_eq!(xml_values(&c[1], "Size"), vec!["4"]);
    }

    #[test]
    fn refuses_bad_endpoints() {
        let config = |endpoint: &str| S3Config {
            endpoint: endpoint.into(),
            bucket: "b".into(),
            region: "us-east-1".into(),
            access_key: "k".into(),
            secret_key: Zeroizing::new("s".into()),
            prefix: String::new(),
            part_size: MIN_PART_SIZE,
            path_style: true,
            ca_file: None,
        };
        assert!(Bucket::new(config("ftp://x")).is_err());
        assert!(Bucket::new(config("http://x/path")).is_err());
        assert!(Bucket::new(config("http://x:99999")).is_err());
        let b = Bucket::new(config("http://127.0.0.1:9000")).expect("valid");
        assert_eq!(b.addr, ("127.0.0.1".to_string(), 9000));
        assert_eq!(b.base, "/b/");
        assert!(format!("{:?}", b.config()).contains("<hidden>"));
    }
}
