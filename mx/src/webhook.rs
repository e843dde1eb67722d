//! Webhooks: the payload built from a received message, its signature,
//! and the HTTP/1.1 POST with retries (the queue is
//! `cofre_storage::webhook`, driven by the outbound [`Sender`]).
//!
//! Each POST carries `Cofre-Signature: t=<unix seconds>,v1=<hex>`, where
//! the hex is HMAC-SHA256 under the webhook's secret of
//! `<t>.<body>`; a receiver recomputes it and refuses a stale `t`.
//!
//! [`Sender`]: crate::outbound::Sender

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use cofre_storage::webhook::{
    EVENT_RECEIVED, WebhookAddress, WebhookAttachment, WebhookEnvelope, WebhookHeader,
    WebhookPayload,
};
use hmac::{Hmac, Mac};
use mail_parser::{Address, MessageParser, MimeHeaders};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, ClientConfig};

/// The signature header's value for `body` sent at `t`.
pub fn signature(secret: &[u8], t: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    format!("t={t},v1={}", hex::encode(tag))
}

fn addresses(a: Option<&Address<'_>>) -> Vec<WebhookAddress> {
    a.map(|a| {
        a.iter()
            .map(|m| WebhookAddress {
                name: m.name().map(str::to_string),
                address: m.address().map(str::to_string),
            })
            .collect()
    })
    .unwrap_or_default()
}

/// What the MX knows of a message's arrival.
#[derive(Debug, Clone)]
pub struct Arrival<'a> {
    /// MAIL FROM.
    pub from: &'a str,
    /// The alias the payload is for.
    pub alias: &'a str,
    /// The sending server's address.
    pub remote_ip: String,
    /// Its EHLO/HELO name.
    pub helo: &'a str,
    /// Unix seconds.
    pub received_at: i64,
}

/// The payload for `raw` as it reached `arrival.alias`.
pub fn payload(event_id: &str, arrival: &Arrival<'_>, raw: &[u8]) -> WebhookPayload {
    let message = MessageParser::default().parse(raw);
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut p = WebhookPayload {
        id: event_id.to_string(),
        event: EVENT_RECEIVED.to_string(),
        received_at: arrival.received_at,
        alias: arrival.alias.to_string(),
        envelope: WebhookEnvelope {
            from: arrival.from.to_string(),
            to: vec![arrival.alias.to_string()],
            remote_ip: arrival.remote_ip.clone(),
            helo: arrival.helo.to_string(),
        },
        headers: Vec::new(),
        subject: None,
        from: Vec::new(),
        to: Vec::new(),
        cc: Vec::new(),
        reply_to: Vec::new(),
        date: None,
        message_id: None,
        text: None,
        html: None,
        attachments: Vec::new(),
        raw_size: raw.len() as u64,
    };
    let Some(m) = message else {
        return p;
    };
    for h in m.headers() {
        let value = match h.value.as_text() {
            Some(t) => t.to_string(),
            None => {
                let start = (h.offset_start as usize).min(raw.len());
                let end = (h.offset_end as usize).clamp(start, raw.len());
                String::from_utf8_lossy(&raw[start..end])
                    .replace("\r\n", "")
                    .replace('\n', "")
                    .trim()
                    .to_string()
            }
        };
        p.headers.push(WebhookHeader {
            name: h.name.as_str().to_string(),
            value,
        });
    }
    p.subject = m.subject().map(str::to_string);
    p.from = addresses(m.from());
    p.to = addresses(m.to());
    p.cc = addresses(m.cc());
    p.reply_to = addresses(m.reply_to());
    p.date = m.date().map(|d| d.to_rfc3339());
    p.message_id = m.message_id().map(str::to_string);
    p.text = m.body_text(0).map(|t| t.into_owned());
    p.html = (m.html_body_count() > 0)
        .then(|| m.body_html(0).map(|t| t.into_owned()))
        .flatten();
    for part in m.attachments() {
        let content_type = part.content_type().map_or_else(
            || "application/octet-stream".to_string(),
            |c| match c.subtype() {
                Some(s) => format!("{}/{s}", c.ctype()),
                None => c.ctype().to_string(),
            },
        );
        let contents = part.contents();
        p.attachments.push(WebhookAttachment {
            filename: part.attachment_name().map(str::to_string),
            content_type,
            size: contents.len() as u64,
            content_base64: b64.encode(contents),
        });
    }
    p
}

/// The TLS settings for `https://` webhooks: certificates checked against
/// the system's roots. A payload is mail in the clear, so an unverified
/// peer is never sent one.
pub fn verified_tls() -> Arc<ClientConfig> {
    cofre_storage::tls::system_client_config()
}

/// `http[s]://host[:port][/path]` → (https, host, port, path).
fn parse_url(url: &str) -> Result<(bool, String, u16, String), String> {
    let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(format!("not an http(s) URL: {url}"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let default = if https { 443 } else { 80 };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => match p.parse::<u16>() {
            Ok(p) => (h, p),
            Err(_) if authority.starts_with('[') && authority.ends_with(']') => {
                (authority, default)
            }
            Err(_) => return Err(format!("bad port in {url}")),
        },
        _ => (authority, default),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || authority.contains('@') {
        return Err(format!("bad host in {url}"));
    }
    Ok((https, host.to_string(), port, path.to_string()))
}

/// POSTs `body` to `url` with our headers; the HTTP status, or what went
/// wrong. The whole exchange is bounded by `timeout`.
pub async fn post(
    url: &str,
    headers: &[(&str, String)],
    body: &[u8],
    tls: &Arc<ClientConfig>,
    timeout: Duration,
) -> Result<u16, String> {
    let (https, host, port, path) = parse_url(url)?;
    let work = async {
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        if https {
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| format!("{host}: {e}"))?;
            let stream = TlsConnector::from(Arc::clone(tls))
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS with {host}: {e}"))?;
            exchange(stream, &host, port, &path, headers, body).await
        } else {
            exchange(tcp, &host, port, &path, headers, body).await
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("no answer within {} s", timeout.as_secs()))?
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    host: &str,
    port: u16,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Result<u16, String> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: Cofre-Webhooks\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(body).await.map_err(|e| e.to_string())?;
    s.flush().await.map_err(|e| e.to_string())?;
    // The status line is all we need; read until it is complete.
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buf.contains(&b'\n') {
        let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 || buf.len() > 8192 {
            return Err("the connection closed without an HTTP answer".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    let mut parts = line.split_whitespace();
    match (
        parts.next(),
        parts.next().and_then(|c| c.parse::<u16>().ok()),
    ) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") => Ok(code),
        _ => Err(format!(
            "not an HTTP answer: {:?}",
            line.lines().next().unwrap_or("")
        )),
    }
}

/// The delay before retry number `attempts` (1, 2, 4, 10, 20, 60, 120,
/// 240, 480 and then 960 times `base`: with 30 s, from 30 s to 8 h).
pub fn backoff(base: Duration, attempts: u32) -> Duration {
    const STEPS: [u32; 10] = [1, 2, 4, 10, 20, 60, 120, 240, 480, 960];
    base * STEPS[(attempts.saturating_sub(1) as usize).min(STEPS.len() - 1)]
}

/// Times a POST: (status or error, milliseconds).
pub async fn timed_post(
    url: &str,
    headers: &[(&str, String)],
    body: &[u8],
    tls: &Arc<ClientConfig>,
    timeout: Duration,
) -> (Result<u16, String>, u64) {
    let start = Instant::now();
    let r = post(url, headers, body, tls, timeout).await;
    (r, start.elapsed().as_millis() as u64)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn urls_split_into_scheme_host_port_and_path() {
        assert_eq!(
            parse_url("http://127.0.0.1:8080/hook?x=1").unwrap(),
            (false, "127.0.0.1".into(), 8080, "/hook?x=1".into())
        );
        assert_eq!(
            parse_url("https://hooks.example").unwrap(),
            (true, "hooks.example".into(), 443, "/".into())
        );
        assert_eq!(
            parse_url("http://[::1]:9/p").unwrap(),
            (false, "::1".into(), 9, "/p".into())
        );
        assert!(parse_url("ftp://x/").is_err());
        assert!(parse_url("http://user@host/").is_err());
        assert!(parse_url("http://host:port/").is_err());
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_time_dot_body() {
        // Computed independently: printf '1700000000.{}' | openssl dgst
        // -sha256 -hmac secret
        assert_eq!(
            signature(b"secret", 1_700_000_000, b"{}"),
            "t=1700000000,v1=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
        );
    }
}
