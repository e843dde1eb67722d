//! The Sender Rewriting Scheme for forwarded mail: the envelope sender of
//! a copy we forward becomes an address of our own domain, so SPF passes
//! downstream; bounces to it come back to us and go on to the original
//! sender. `SRS0=HHHH=TT=domain=local@our-domain`: TT is the day (base32,
//! modulo 1024), HHHH the first four base64 characters of an
//! HMAC-SHA256 over `TT`, the domain and the local part, under our key.

use cofre_storage::keys::SecretKey;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How many days a rewritten address stays valid for bounces.
const MAX_AGE_DAYS: u32 = 21;

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Rewrites and reverses SRS addresses under one key.
#[derive(Clone)]
pub struct Srs {
    key: SecretKey,
}

impl std::fmt::Debug for Srs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Srs").finish_non_exhaustive()
    }
}

fn today() -> u32 {
    u32::try_from(cofre_storage::time::now().div_euclid(86_400)).unwrap_or(0)
}

fn stamp(day: u32) -> String {
    let d = day % 1024;
    [BASE32[(d >> 5) as usize], BASE32[(d & 31) as usize]]
        .iter()
        .map(|&c| c as char)
        .collect()
}

fn unstamp(tt: &str) -> Option<u32> {
    let b = tt.as_bytes();
    if b.len() != 2 {
        return None;
    }
    let v = |c: u8| BASE32.iter().position(|&x| x == c.to_ascii_uppercase());
    Some((v(b[0])? as u32) << 5 | v(b[1])? as u32)
}

impl Srs {
    /// A rewriter under `key` (derived from the cluster secret).
    pub fn new(key: SecretKey) -> Srs {
        Srs { key }
    }

    fn hash(&self, tt: &str, domain: &str, local: &str) -> String {
        use base64::Engine;
        let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(self.key.bytes()) {
            Ok(m) => m,
            Err(_) => return String::new(),
        };
        for part in [tt, domain, local] {
            mac.update(part.to_ascii_lowercase().as_bytes());
            mac.update(b"\0");
        }
        let digest = mac.finalize().into_bytes();
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(&digest[..3])
    }

    /// The envelope sender for a copy of mail from `sender` forwarded by
    /// `our_domain`. The null sender stays null.
    pub fn forward(&self, sender: &str, our_domain: &str) -> String {
        let Some((local, domain)) = sender.rsplit_once('@') else {
            return String::new();
        };
        let tt = stamp(today());
        let hh = self.hash(&tt, domain, local);
        format!("SRS0={hh}={tt}={domain}={local}@{our_domain}")
    }

    /// The original sender behind one of our SRS addresses, if it is ours
    /// (the hash checks) and not older than three weeks.
    pub fn reverse(&self, address: &str) -> Option<String> {
        let (local, _ours) = address.rsplit_once('@')?;
        let rest = local
            .strip_prefix("SRS0=")
            .or_else(|| local.strip_prefix("srs0="))?;
        let mut parts = rest.splitn(4, '=');
        let (hh, tt, domain, orig) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let expected = self.hash(tt, domain, orig);
        if expected.is_empty()
            || !cofre_storage::keys::constant_time_eq(expected.as_bytes(), hh.as_bytes())
        {
            return None;
        }
        let age = (today() % 1024 + 1024 - unstamp(tt)?) % 1024;
        if age > MAX_AGE_DAYS {
            return None;
        }
        Some(format!("{orig}@{domain}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_and_back() {
        let srs = Srs::new(SecretKey::generate());
        let a = srs.forward("alice@sender.example", "fwd.example");
        assert!(
            a.starts_with("SRS0=") && a.ends_with("=alice@fwd.example"),
            "{a}"
        );
        assert_eq!(srs.reverse(&a).as_deref(), Some("alice@sender.example"));
        assert_eq!(
            srs.forward("", "fwd.example"),
            "",
            "the null sender stays null"
        );
    }

    #[test]
    fn forged_or_foreign_addresses_do_not_reverse() {
        let srs = Srs::new(SecretKey::generate());
        let a = srs.forward("alice@sender.example", "fwd.example");
        let other = Srs::new(SecretKey::generate());
        assert_eq!(other.reverse(&a), None, "another key");
        let tampered = a.replace("=alice@", "=mallory@");
        assert_eq!(srs.reverse(&tampered), None);
        assert_eq!(srs.reverse("plain@fwd.example"), None);
        assert_eq!(srs.reverse("SRS0=x@fwd.example"), None);
        // An old stamp.
        let old = stamp(today() + 1024 - 30);
        let hh = srs.hash(&old, "sender.example", "alice");
        let stale = format!("SRS0={hh}={old}=sender.example=alice@fwd.example");
        assert_eq!(srs.reverse(&stale), None);
    }
}
