//! A minimal SMTP client for outbound delivery: one message to the
//! recipients of one domain, opportunistic STARTTLS, per-recipient
//! outcomes.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, ClientConfig};

/// What happened to one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The server took it (2xx after the data).
    Delivered,
    /// Try again later (4xx, or the connection failed).
    Temporary(String),
    /// The server refused it for good (5xx).
    Permanent(String),
}

/// A server reply: code and text (lines joined).
#[derive(Debug)]
struct Reply {
    code: u16,
    text: String,
}

impl Reply {
    fn outcome(&self) -> Outcome {
        let t = format!("{} {}", self.code, self.text);
        match self.code {
            200..=399 => Outcome::Delivered,
            500..=599 => Outcome::Permanent(t),
            _ => Outcome::Temporary(t),
        }
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

struct Conn {
    io: BufReader<Box<dyn Stream>>,
    timeout: Duration,
}

impl Conn {
    async fn reply(&mut self) -> Result<Reply, String> {
        let mut text = Vec::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(self.timeout, self.io.read_line(&mut line))
                .await
                .map_err(|_| "timeout waiting for the server".to_string())?
                .map_err(|e| format!("connection failed: {e}"))?;
            if n == 0 {
                return Err("connection closed by the server".into());
            }
            if line.len() > 4096 {
                return Err("reply line too long".into());
            }
            let code: u16 = line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| format!("malformed reply: {}", line.trim_end()))?;
            text.push(line.get(4..).unwrap_or("").trim_end().to_string());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(Reply {
                    code,
                    text: text.join(" "),
                });
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        tokio::time::timeout(self.timeout, async {
            self.io.get_mut().write_all(bytes).await?;
            self.io.get_mut().flush().await
        })
        .await
        .map_err(|_| "timeout sending".to_string())?
        .map_err(|e| format!("connection failed: {e}"))
    }

    async fn command(&mut self, line: &str) -> Result<Reply, String> {
        self.send(format!("{line}\r\n").as_bytes()).await?;
        self.reply().await
    }
}

/// One message for the recipients of one domain, to one server.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    /// The server's host name or address.
    pub host: &'a str,
    /// Its port.
    pub port: u16,
    /// Our name, for EHLO.
    pub helo: &'a str,
    /// The envelope sender ("" for a bounce).
    pub from: &'a str,
    /// The recipients.
    pub rcpts: &'a [String],
    /// The message.
    pub raw: &'a [u8],
}

/// Sends one message to the recipients of one domain at `host:port`.
/// `Err` is a failure before any recipient was tried (it applies to all).
pub async fn send(
    a: &Attempt<'_>,
    tls: &Arc<ClientConfig>,
    timeout: Duration,
) -> Result<Vec<(String, Outcome)>, Outcome> {
    let Attempt {
        host,
        port,
        helo,
        from,
        rcpts,
        raw,
    } = *a;
    let temp = Outcome::Temporary;
    let stream = tokio::time::timeout(timeout, TcpStream::connect((host, port)))
        .await
        .map_err(|_| temp(format!("connecting to {host}:{port} timed out")))?
        .map_err(|e| temp(format!("connecting to {host}:{port}: {e}")))?;
    let _ = stream.set_nodelay(true);
    let mut c = Conn {
        io: BufReader::new(Box::new(stream)),
        timeout,
    };
    let greeting = c.reply().await.map_err(temp)?;
    if greeting.code != 220 {
        return Err(greeting.outcome());
    }
    let mut ehlo = c.command(&format!("EHLO {helo}")).await.map_err(temp)?;
    if ehlo.code != 250 {
        return Err(ehlo.outcome());
    }
    let has = |r: &Reply, ext: &str| r.text.split(' ').any(|w| w.eq_ignore_ascii_case(ext));
    // Opportunistic TLS (RFC 3207, RFC 7435): used when offered; the
    // certificate is not checked, as MX hosts' names are not authenticated
    // by plain DNS anyway.
    if has(&ehlo, "STARTTLS") {
        let r = c.command("STARTTLS").await.map_err(temp)?;
        if r.code == 220 {
            let name = rustls::pki_types::ServerName::try_from(host.to_string())
                .map_err(|e| temp(format!("server name {host}: {e}")))?;
            let plain = std::mem::replace(c.io.get_mut(), Box::new(tokio::io::duplex(1).0));
            let secured = tokio::time::timeout(
                timeout,
                TlsConnector::from(Arc::clone(tls)).connect(name, plain),
            )
            .await
            .map_err(|_| temp("TLS handshake timed out".into()))?
            .map_err(|e| temp(format!("TLS handshake: {e}")))?;
            c.io = BufReader::new(Box::new(secured));
            ehlo = c.command(&format!("EHLO {helo}")).await.map_err(temp)?;
            if ehlo.code != 250 {
                return Err(ehlo.outcome());
            }
        }
    }
    let mut mail = format!("MAIL FROM:<{from}>");
    if raw.iter().any(|b| *b >= 0x80) && has(&ehlo, "8BITMIME") {
        mail.push_str(" BODY=8BITMIME");
    }
    let needs_utf8 = !from.is_ascii() || rcpts.iter().any(|r| !r.is_ascii());
    if needs_utf8 {
        if !has(&ehlo, "SMTPUTF8") {
            return Err(Outcome::Permanent(
                "553 5.6.7 the receiving server does not take internationalised addresses (no SMTPUTF8)"
                    .into(),
            ));
        }
        mail.push_str(" SMTPUTF8");
    }
    let r = c.command(&mail).await.map_err(temp)?;
    if r.code != 250 {
        return Err(r.outcome());
    }
    let mut results = Vec::new();
    let mut accepted = Vec::new();
    for rcpt in rcpts {
        let r = c
            .command(&format!("RCPT TO:<{rcpt}>"))
            .await
            .map_err(temp)?;
        if r.code == 250 || r.code == 251 {
            accepted.push(rcpt.clone());
        } else {
            results.push((rcpt.clone(), r.outcome()));
        }
    }
    if accepted.is_empty() {
        let _ = c.command("QUIT").await;
        return Ok(results);
    }
    let r = c.command("DATA").await.map_err(temp)?;
    if r.code != 354 {
        let o = r.outcome();
        results.extend(accepted.into_iter().map(|a| (a, o.clone())));
        return Ok(results);
    }
    c.send(&stuff(raw)).await.map_err(temp)?;
    // Once the data is sent, a lost reply means we do not know: retry
    // (the receiver may store a duplicate; losing mail is worse).
    let done = c.reply().await.map_err(temp)?;
    let o = done.outcome();
    results.extend(accepted.into_iter().map(|a| (a, o.clone())));
    let _ = c.command("QUIT").await;
    Ok(results)
}

/// Dot-stuffs a message and ends it with CRLF.CRLF.
fn stuff(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + 64);
    for line in raw.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    if !out.ends_with(b"\r\n") {
        if out.ends_with(b"\n") {
            out.pop();
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// TLS settings for opportunistic STARTTLS: encryption without checking
/// the certificate (RFC 7435).
pub fn opportunistic_tls() -> Result<Arc<ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffing_and_the_end_marker() {
        assert_eq!(stuff(b"a\r\n.b\r\n..c\r\n"), b"a\r\n..b\r\n...c\r\n.\r\n");
        assert_eq!(stuff(b"no newline"), b"no newline\r\n.\r\n");
    }
}
