//! Mail authentication: SPF, DKIM, ARC and DMARC checks of what arrives
//! (summed up in an `Authentication-Results` header, RFC 8601), DKIM
//! signatures on what our aliases send (RFC 6376), and ARC seals on what
//! we forward (RFC 8617), so that forwarded mail still passes downstream.
//!
//! The checks and seals are mail-auth's; this module decides what is
//! checked, what is signed with which key, and what a failure means here.

use std::net::{IpAddr, SocketAddr};

use cofre_storage::outbound::DkimKey;
use mail_auth::arc::ArcSealer;
use mail_auth::common::crypto::{RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use mail_auth::dmarc::Policy;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DmarcResult, MessageAuthenticator, SpfOutput,
};
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer};

/// The headers a signature or seal covers, when the message has them.
const SIGNED_HEADERS: [&str; 15] = [
    "From",
    "Sender",
    "Reply-To",
    "Subject",
    "Date",
    "Message-ID",
    "To",
    "Cc",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "In-Reply-To",
    "References",
    "List-Id",
    "List-Unsubscribe",
];

/// RSA modulus size of generated DKIM keys (RFC 8301 asks for at least
/// 1024; 2048 is what large receivers expect today).
pub const DKIM_KEY_BITS: usize = 2048;

/// What the checks of one arriving message concluded.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The `Authentication-Results` header field, CRLF-terminated.
    pub header: String,
    /// Set when the author domain's DMARC policy is `reject` and the
    /// message failed it: the reason to give in the 550.
    pub reject: Option<String>,
}

/// Checks arriving mail and seals forwarded mail, through one resolver.
pub struct MailAuth {
    authenticator: MessageAuthenticator,
    hostname: String,
}

impl std::fmt::Debug for MailAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailAuth")
            .field("hostname", &self.hostname)
            .finish_non_exhaustive()
    }
}

/// What one run of the checks found, borrowed from the message.
struct Checked<'x> {
    results: AuthenticationResults<'x>,
    arc: mail_auth::ArcOutput<'x>,
    dmarc_reject: Option<String>,
    /// No DKIM signature at all (said as `dkim=none`, RFC 8601 §2.7.1).
    unsigned: bool,
}

impl MailAuth {
    /// Checks under the authserv-id `hostname`, asking `nameserver` (or
    /// the system's resolver).
    pub fn new(hostname: &str, nameserver: Option<SocketAddr>) -> Result<MailAuth, String> {
        let (config, opts) = crate::dns::resolver_config(nameserver)?;
        Ok(MailAuth {
            authenticator: MessageAuthenticator::new(config, opts).map_err(|e| e.to_string())?,
            hostname: hostname.to_string(),
        })
    }

    /// The name our `Authentication-Results` headers carry.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    async fn run<'x>(
        &'x self,
        message: &'x AuthenticatedMessage<'x>,
        ip: IpAddr,
        helo: &'x str,
        mail_from: &'x str,
    ) -> Checked<'x> {
        let dkim = self.authenticator.verify_dkim(message).await;
        let arc = self.authenticator.verify_arc(message).await;
        let spf: SpfOutput = if mail_from.is_empty() {
            let p = SpfParameters::verify_ehlo(ip, helo, &self.hostname);
            self.authenticator.verify_spf(p).await
        } else {
            let p = SpfParameters::verify_mail_from(ip, helo, &self.hostname, mail_from);
            self.authenticator.verify_spf(p).await
        };
        let from_domain = mail_from.rsplit_once('@').map_or(helo, |(_, d)| d);
        let dmarc = self
            .authenticator
            .verify_dmarc(DmarcParameters::new(message, &dkim, from_domain, &spf))
            .await;
        let results = AuthenticationResults::new(&self.hostname)
            .with_dkim_results(&dkim, message.from())
            .with_spf_mailfrom_result(&spf, ip, mail_from, helo)
            .with_arc_result(&arc, ip)
            .with_dmarc_result(&dmarc);
        let dmarc_reject = match (dmarc.result(), dmarc.policy()) {
            (DmarcResult::Fail(_), Policy::Reject) => Some(format!(
                "Rejected by the DMARC policy of {}",
                dmarc.domain()
            )),
            _ => None,
        };
        Checked {
            results,
            arc,
            dmarc_reject,
            unsigned: dkim.is_empty(),
        }
    }

    /// Checks SPF (for the envelope sender, or the HELO name for a
    /// bounce), every DKIM signature, the ARC chain and the author
    /// domain's DMARC policy of `raw`, as it arrived from `ip`.
    pub async fn check(&self, raw: &[u8], ip: IpAddr, helo: &str, mail_from: &str) -> Verdict {
        match AuthenticatedMessage::parse(raw) {
            Some(message) => {
                let c = self.run(&message, ip, helo, mail_from).await;
                let mut header = c.results.to_header();
                if c.unsigned {
                    let id = format!("Authentication-Results: {}", self.hostname);
                    header = header.replacen(&id, &format!("{id};\r\n\tdkim=none"), 1);
                }
                Verdict {
                    header,
                    reject: c.dmarc_reject,
                }
            }
            None => Verdict {
                // Not parseable as a message: nothing verifies, and a
                // reader should see that rather than no header at all.
                header: format!(
                    "Authentication-Results: {};\r\n\tdkim=none; spf=none; dmarc=none\r\n",
                    self.hostname
                ),
                reject: None,
            },
        }
    }

    /// An ARC set (`ARC-Seal`, `ARC-Message-Signature`,
    /// `ARC-Authentication-Results`) for forwarding `raw`, which arrived
    /// from `ip`, sealed with `key`; `None` when the message cannot be
    /// sealed (an ARC chain already failed, or it does not parse).
    pub async fn seal(
        &self,
        key: &DkimKey,
        raw: &[u8],
        ip: IpAddr,
        helo: &str,
        mail_from: &str,
    ) -> Result<Option<String>, String> {
        let Some(message) = AuthenticatedMessage::parse(raw) else {
            return Ok(None);
        };
        let c = self.run(&message, ip, helo, mail_from).await;
        if !c.arc.can_be_sealed() {
            return Ok(None);
        }
        let set = ArcSealer::from_key(rsa_key(key)?)
            .domain(key.domain.clone())
            .selector(key.selector.clone())
            .headers(SIGNED_HEADERS.iter().copied().chain(["DKIM-Signature"]))
            .seal(&message, &c.results, &c.arc)
            .map_err(|e| e.to_string())?;
        Ok(Some(set.to_header()))
    }
}

fn rsa_key(key: &DkimKey) -> Result<RsaKey<Sha256>, String> {
    RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(
        key.private_key.as_slice(),
    )))
    .map_err(|e| format!("the DKIM key of {} does not load: {e}", key.domain))
}

/// A `DKIM-Signature` header field (CRLF-terminated) for `raw`, by the
/// key's domain, relaxed/relaxed, RSA-SHA256.
pub fn dkim_sign(key: &DkimKey, raw: &[u8]) -> Result<String, String> {
    let signature = DkimSigner::from_key(rsa_key(key)?)
        .domain(key.domain.clone())
        .selector(key.selector.clone())
        .headers(SIGNED_HEADERS)
        .sign(raw)
        .map_err(|e| format!("DKIM signing for {} failed: {e}", key.domain))?;
    Ok(signature.to_header())
}

/// A new RSA DKIM key for `domain` under `selector`.
pub fn generate_dkim_key(domain: &str, selector: &str) -> Result<DkimKey, String> {
    let pair = mail_auth::dkim::generate::DkimKeyPair::generate_rsa(DKIM_KEY_BITS)
        .map_err(|e| e.to_string())?;
    let (private_key, public_key) = pair.into_inner();
    Ok(DkimKey {
        domain: domain.to_ascii_lowercase(),
        selector: selector.to_string(),
        private_key: zeroize::Zeroizing::new(private_key),
        public_key,
        created_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
    })
}

/// The TXT record that publishes `key`: its name and its value. The key
/// goes in as a SubjectPublicKeyInfo, the form every verifier reads.
pub fn dkim_record(key: &DkimKey) -> (String, String) {
    use base64::Engine;
    let p = base64::engine::general_purpose::STANDARD.encode(spki(&key.public_key));
    (
        format!("{}._domainkey.{}", key.selector, key.domain),
        format!("v=DKIM1; k=rsa; p={p}"),
    )
}

/// DER length octets.
fn der_len(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
}

/// Wraps a PKCS#1 `RSAPublicKey` in a SubjectPublicKeyInfo (RFC 5280).
fn spki(pkcs1: &[u8]) -> Vec<u8> {
    // AlgorithmIdentifier { rsaEncryption, NULL }
    const RSA_ALGORITHM: [u8; 15] = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bits = vec![0x03];
    der_len(pkcs1.len() + 1, &mut bits);
    bits.push(0);
    bits.extend_from_slice(pkcs1);
    let mut out = vec![0x30];
    der_len(RSA_ALGORITHM.len() + bits.len(), &mut out);
    out.extend_from_slice(&RSA_ALGORITHM);
    out.extend_from_slice(&bits);
    out
}

/// `raw` without the `Authentication-Results` header fields whose
/// authserv-id is `hostname`: only we may write those, so any that
/// arrive are forged (RFC 8601 §5). Everything else is kept byte for byte.
pub fn strip_results(raw: &[u8], hostname: &str) -> Vec<u8> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(raw.len(), |p| p + 2);
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = &raw[..end];
    let mut dropping = false;
    while !rest.is_empty() {
        let line_end = rest
            .iter()
            .position(|b| *b == b'\n')
            .map_or(rest.len(), |p| p + 1);
        let (line, tail) = rest.split_at(line_end);
        rest = tail;
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if !continuation {
            dropping = is_our_results(line, hostname);
        }
        if !dropping {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(&raw[end..]);
    out
}

fn is_our_results(line: &[u8], hostname: &str) -> bool {
    const NAME: &[u8] = b"authentication-results:";
    if line.len() < NAME.len() || !line[..NAME.len()].eq_ignore_ascii_case(NAME) {
        return false;
    }
    let value = String::from_utf8_lossy(&line[NAME.len()..]);
    let id = value
        .trim_start()
        .split(|c: char| c == ';' || c.is_whitespace())
        .next()
        .unwrap_or("");
    id.eq_ignore_ascii_case(hostname)
}
