//! API tokens: compact JWS (RFC 7515) JSON Web Tokens (RFC 7519), HS256
//! only, signed with a key derived from the cluster secret so that every
//! gateway of a cluster accepts every other's tokens.
//!
//! The claims carry the alias, the token id (`jti`, for revocation), the
//! expiry and the alias's keys sealed by the primary under another key
//! derived from the same secret (`key`). Verification refuses any other
//! algorithm (no `none`, no algorithm confusion), a bad signature (compared
//! in constant time), and an expired token.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use cofre_storage::SecretKey;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// The alias address.
    pub sub: String,
    /// The alias's row id.
    pub aid: i64,
    /// The token's unique id.
    pub jti: String,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expires at, Unix seconds.
    pub exp: i64,
    /// The alias's keys, sealed by the primary (base64url).
    pub key: String,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts of JSON, or not HS256.
    #[error("malformed token")]
    Malformed,
    /// The signature does not match.
    #[error("bad signature")]
    Signature,
    /// Past its expiry.
    #[error("expired")]
    Expired,
}

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// Signs and verifies tokens.
pub struct Signer {
    key: SecretKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(<redacted>)")
    }
}

impl Signer {
    /// A signer keyed from the cluster secret.
    pub fn from_cluster_secret(secret: &[u8]) -> Signer {
        Signer {
            key: cofre_storage::keys::derive_subkey(secret, "token-sign"),
        }
    }

    fn mac(&self, signing_input: &str) -> [u8; 32] {
        // HMAC accepts any key length.
        let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(self.key.bytes()) {
            Ok(m) => m,
            Err(_) => return [0; 32],
        };
        mac.update(signing_input.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The compact serialization of a signed token.
    pub fn sign(&self, claims: &Claims) -> String {
        // Serializing plain strings and numbers cannot fail.
        let payload = serde_json::to_vec(claims).unwrap_or_default();
        let input = format!("{}.{}", B64.encode(HEADER), B64.encode(payload));
        let signature = B64.encode(self.mac(&input));
        format!("{input}.{signature}")
    }

    /// Checks a token and returns its claims.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header: serde_json::Value = B64
            .decode(header)
            .ok()
            .and_then(|h| serde_json::from_slice(&h).ok())
            .ok_or(TokenError::Malformed)?;
        if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
            return Err(TokenError::Malformed);
        }
        let given = B64.decode(signature).map_err(|_| TokenError::Malformed)?;
        let want = self.mac(&token[..token.len() - signature.len() - 1]);
        if !cofre_storage::keys::constant_time_eq(&want, &given) {
            return Err(TokenError::Signature);
        }
        let claims: Claims = B64
            .decode(payload)
            .ok()
            .and_then(|p| serde_json::from_slice(&p).ok())
            .ok_or(TokenError::Malformed)?;
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn claims() -> Claims {
        Claims {
            sub: "ana@example.com".into(),
            aid: 1,
            jti: "abc".into(),
            iat: 100,
            exp: 200,
            key: "c2VhbGVk".into(),
        }
    }

    #[test]
    fn tokens_verify_and_refuse_tampering_other_keys_algorithms_and_age() {
        let signer = Signer::from_cluster_secret(b"a cluster secret of some length");
        let token = signer.sign(&claims());
        assert_eq!(signer.verify(&token, 150).unwrap(), claims());
        assert_eq!(signer.verify(&token, 200), Err(TokenError::Expired));
        let other = Signer::from_cluster_secret(b"another cluster secret!!");
        assert_eq!(other.verify(&token, 150), Err(TokenError::Signature));

        // A changed claim breaks the signature.
        let parts: Vec<&str> = token.split('.').collect();
        let mut forged = claims();
        forged.aid = 2;
        let forged_payload = B64.encode(serde_json::to_vec(&forged).unwrap());
        let t = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        assert_eq!(signer.verify(&t, 150), Err(TokenError::Signature));
        // alg "none" and any other algorithm are refused outright.
        for alg in [r#"{"alg":"none"}"#, r#"{"alg":"HS512","typ":"JWT"}"#] {
            let t = format!("{}.{}.{}", B64.encode(alg), parts[1], parts[2]);
            assert_eq!(signer.verify(&t, 150), Err(TokenError::Malformed));
        }
        for junk in [
            "",
            "a.b",
            "a.b.c.d",
            "!!.??.**",
            &format!("{}.{}.", parts[0], parts[1]),
        ] {
            assert!(signer.verify(junk, 150).is_err(), "{junk}");
        }
    }
}
