//! Passwords, key derivation, key wrapping and the unwrapped-key cache.
//!
//! One Argon2id run over (password, per-alias salt) yields 64 bytes: the first
//! half is the *auth verifier* (only its SHA-256 is stored), the second half is
//! the *key-encryption key* (KEK). The KEK unwraps the alias's random data key
//! (the SQLCipher raw key of its mailbox) and its X25519 identity (which opens
//! the sealed queue). The password itself is never stored; a password change
//! rewraps two small secrets and leaves the mailbox untouched.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};

/// Fills a buffer from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    // The OS generator failing is unrecoverable: no key may be made without it.
    #[allow(clippy::expect_used)]
    getrandom::getrandom(&mut out).expect("the operating system's random generator failed");
    out
}

/// An alias password. Never printed by `Debug`, wiped on drop.
#[derive(Clone)]
pub struct Password(Zeroizing<String>);

impl Password {
    /// Wraps a password typed by a user or read from the environment.
    pub fn new(s: impl Into<String>) -> Self {
        Password(Zeroizing::new(s.into()))
    }

    /// Generates a server-side password: 25 characters from a 32-symbol
    /// alphabet without look-alikes, grouped by five, 125 bits of entropy.
    pub fn generate() -> Self {
        const ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";
        let bytes: Zeroizing<[u8; 25]> = Zeroizing::new(random_bytes());
        let mut s = String::with_capacity(29);
        for (i, b) in bytes.iter().enumerate() {
            if i > 0 && i % 5 == 0 {
                s.push('-');
            }
            s.push(ALPHABET[(b & 31) as usize] as char);
        }
        Password(Zeroizing::new(s))
    }

    /// The password text, for the one place that must show it (creation).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// The link carries a password once, from the secondary that received it
/// to the primary that checks it; it is never logged on either side.
impl serde::Serialize for Password {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.expose())
    }
}

impl<'de> serde::Deserialize<'de> for Password {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Password::new)
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// A 256-bit symmetric key (data key or KEK). Never printed, wiped on drop.
#[derive(Clone)]
pub struct SecretKey(Zeroizing<[u8; 32]>);

impl SecretKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        SecretKey(Zeroizing::new(random_bytes()))
    }

    /// Wraps existing key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SecretKey(Zeroizing::new(bytes))
    }

    /// Parses 64 hex digits (how an operator passes a master key).
    pub fn from_hex(s: &str) -> Result<Self> {
        let mut out = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(s.trim(), out.as_mut())
            .map_err(|_| Error::Invalid("a key must be 64 hex digits".into()))?;
        Ok(SecretKey(out))
    }

    /// The raw key bytes.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The SQLCipher `PRAGMA key` statement for this raw key.
    pub(crate) fn sqlcipher_pragma(&self, schema: &str) -> Zeroizing<String> {
        let hex = Zeroizing::new(hex::encode(&self.0[..]));
        Zeroizing::new(format!("PRAGMA {schema}.key = \"x'{}'\";", hex.as_str()))
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// Argon2id cost parameters, stored per alias so they can be raised later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl KdfParams {
    /// The default: 28 MiB, 2 passes, 1 lane — above OWASP's minimum
    /// (19 MiB, 2 passes) in memory, and about 50 ms per login on this class
    /// of machine (`cofre bench` measures it).
    pub const DEFAULT: KdfParams = KdfParams {
        m_kib: 28 * 1024,
        t: 2,
        p: 1,
    };

    /// Cheap parameters for tests only; never accepted by `Store::open`
    /// unless the caller asks for them explicitly.
    pub const INSECURE_FOR_TESTS: KdfParams = KdfParams {
        m_kib: 64,
        t: 1,
        p: 1,
    };
}

/// What one login derives from the password.
pub struct Derived {
    /// Proves the password; only `verifier_hash` of it is stored.
    pub verifier: Zeroizing<[u8; 32]>,
    /// Unwraps the data key and the queue identity.
    pub kek: SecretKey,
}

/// Runs Argon2id once over (password, salt).
pub fn derive(password: &Password, salt: &[u8], params: KdfParams) -> Result<Derived> {
    let p = argon2::Params::new(params.m_kib, params.t, params.p, Some(64))
        .map_err(|e| Error::Invalid(format!("argon2 parameters: {e}")))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, p);
    let mut out = Zeroizing::new([0u8; 64]);
    argon
        .hash_password_into(password.expose().as_bytes(), salt, out.as_mut())
        .map_err(|e| Error::Invalid(format!("argon2: {e}")))?;
    let mut verifier = Zeroizing::new([0u8; 32]);
    let mut kek = [0u8; 32];
    verifier.copy_from_slice(&out[..32]);
    kek.copy_from_slice(&out[32..]);
    let kek_key = SecretKey::from_bytes(kek);
    kek.zeroize();
    Ok(Derived {
        verifier,
        kek: kek_key,
    })
}

/// The stored form of a verifier: SHA-256 with a domain label.
pub fn verifier_hash(verifier: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"cofre/verifier/v1\0");
    h.update(verifier);
    h.finalize().into()
}

/// Compares two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Encrypts a small secret under a key: XChaCha20-Poly1305, random 24-byte
/// nonce prepended, `aad` bound in (the alias's mailbox id, so a wrapped key
/// cannot be moved to another alias's row).
pub fn wrap(key: &SecretKey, secret: &[u8], aad: &[u8]) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(key.bytes().into());
    let nonce: [u8; 24] = random_bytes();
    let mut out = nonce.to_vec();
    // Encryption into a Vec cannot fail for inputs under 256 GiB.
    #[allow(clippy::expect_used)]
    let ct = cipher
        .encrypt(XNonce::from_slice(&nonce), Payload { msg: secret, aad })
        .expect("XChaCha20-Poly1305 encryption");
    out.extend_from_slice(&ct);
    out
}

/// Reverses [`wrap`]; fails if the key or the associated data is wrong.
pub fn unwrap(key: &SecretKey, wrapped: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    if wrapped.len() < 24 + 16 {
        return Err(Error::Corrupt("wrapped key too short".into()));
    }
    let cipher = XChaCha20Poly1305::new(key.bytes().into());
    let (nonce, ct) = wrapped.split_at(24);
    cipher
        .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
        .map(Zeroizing::new)
        .map_err(|_| Error::WrongPassword)
}

/// A key for one purpose derived from a longer-lived secret (the cluster
/// secret): HMAC-SHA256(secret, "cofre/" ‖ purpose). Different purposes
/// give unrelated keys.
pub fn derive_subkey(secret: &[u8], purpose: &str) -> SecretKey {
    use hmac::{Hmac, Mac};
    // HMAC takes keys of any length; an empty secret still gives a key,
    // and callers refuse short secrets before this.
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return SecretKey::from_bytes([0; 32]),
    };
    mac.update(b"cofre/");
    mac.update(purpose.as_bytes());
    SecretKey::from_bytes(mac.finalize().into_bytes().into())
}

/// The unwrapped secrets of one alias: what a live session holds.
#[derive(Clone)]
pub struct AliasKeys {
    /// The mailbox's SQLCipher raw key.
    pub data_key: SecretKey,
    /// The age X25519 identity that opens the sealed queue.
    pub identity: Zeroizing<String>,
}

impl fmt::Debug for AliasKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AliasKeys(<redacted>)")
    }
}

/// A bounded, time-limited cache of unwrapped alias keys, so a client that
/// logs in again within minutes does not pay Argon2id again (as Dovecot's
/// auth cache does).
///
/// An entry holds a keyed hash of the password that unlocked it and the keys
/// sealed under a random per-process key. A lookup must present a password
/// whose keyed hash matches, so a wrong password never hits the cache; it
/// falls through to Argon2id and fails there.
pub struct KeyCache {
    process_key: SecretKey,
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<i64, CacheEntry>>,
}

struct CacheEntry {
    password_tag: [u8; 32],
    sealed: Vec<u8>,
    inserted: Instant,
}

impl KeyCache {
    /// A cache of at most `capacity` aliases, each kept for `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        KeyCache {
            process_key: SecretKey::generate(),
            ttl,
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn tag(&self, alias_id: i64, epoch: i64, password: &Password) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.process_key.bytes());
        h.update(alias_id.to_le_bytes());
        h.update(epoch.to_le_bytes());
        h.update(password.expose().as_bytes());
        h.finalize().into()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, CacheEntry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The keys of `alias_id` if `password` is the one that unlocked them
    /// under this key `epoch` and the entry has not expired.
    pub fn get(&self, alias_id: i64, epoch: i64, password: &Password) -> Option<AliasKeys> {
        let tag = self.tag(alias_id, epoch, password);
        let mut entries = self.lock();
        let entry = entries.get(&alias_id)?;
        if entry.inserted.elapsed() >= self.ttl {
            entries.remove(&alias_id);
            return None;
        }
        if !constant_time_eq(&entry.password_tag, &tag) {
            return None;
        }
        let plain = unwrap(&self.process_key, &entry.sealed, &alias_id.to_le_bytes()).ok()?;
        decode_keys(&plain)
    }

    /// Remembers the keys that `password` unlocked.
    pub fn insert(&self, alias_id: i64, epoch: i64, password: &Password, keys: &AliasKeys) {
        let tag = self.tag(alias_id, epoch, password);
        let plain = encode_keys(keys);
        let sealed = wrap(&self.process_key, &plain, &alias_id.to_le_bytes());
        let mut entries = self.lock();
        let ttl = self.ttl;
        entries.retain(|_, e| e.inserted.elapsed() < ttl);
        if entries.len() >= self.capacity
            && !entries.contains_key(&alias_id)
            && let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, e)| e.inserted)
                .map(|(k, _)| *k)
        {
            entries.remove(&oldest);
        }
        if self.capacity > 0 {
            entries.insert(
                alias_id,
                CacheEntry {
                    password_tag: tag,
                    sealed,
                    inserted: Instant::now(),
                },
            );
        }
    }

    /// Drops an alias's entry (password change, deletion, last session ended).
    pub fn forget(&self, alias_id: i64) {
        self.lock().remove(&alias_id);
    }

    /// Number of live entries.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn encode_keys(keys: &AliasKeys) -> Zeroizing<Vec<u8>> {
    let mut v = Zeroizing::new(Vec::with_capacity(32 + keys.identity.len()));
    v.extend_from_slice(keys.data_key.bytes());
    v.extend_from_slice(keys.identity.as_bytes());
    v
}

fn decode_keys(plain: &[u8]) -> Option<AliasKeys> {
    if plain.len() < 32 {
        return None;
    }
    let mut dk = [0u8; 32];
    dk.copy_from_slice(&plain[..32]);
    let data_key = SecretKey::from_bytes(dk);
    dk.zeroize();
    let identity = Zeroizing::new(String::from_utf8(plain[32..].to_vec()).ok()?);
    Some(AliasKeys { data_key, identity })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_passwords_are_distinct_and_well_formed() {
        let a = Password::generate();
        let b = Password::generate();
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.expose().len(), 29);
        assert_eq!(a.expose().split('-').count(), 5);
        assert!(!format!("{a:?}").contains(a.expose()));
    }

    #[test]
    fn derive_is_deterministic_and_salted() {
        let p = Password::new("correct horse");
        let a = derive(&p, b"salt-one-16bytes", KdfParams::INSECURE_FOR_TESTS).unwrap();
        let b = derive(&p, b"salt-one-16bytes", KdfParams::INSECURE_FOR_TESTS).unwrap();
        let c = derive(&p, b"salt-two-16bytes", KdfParams::INSECURE_FOR_TESTS).unwrap();
        assert_eq!(&a.verifier[..], &b.verifier[..]);
        assert_eq!(a.kek.bytes(), b.kek.bytes());
        assert_ne!(a.kek.bytes(), c.kek.bytes());
        assert_ne!(&a.verifier[..], &a.kek.bytes()[..]);
    }

    #[test]
    fn wrap_binds_key_and_aad() {
        let k = SecretKey::generate();
        let w = wrap(&k, b"secret", b"alias-1");
        assert_eq!(unwrap(&k, &w, b"alias-1").unwrap().as_slice(), b"secret");
        assert!(unwrap(&k, &w, b"alias-2").is_err());
        assert!(unwrap(&SecretKey::generate(), &w, b"alias-1").is_err());
        assert!(unwrap(&k, &w[..10], b"alias-1").is_err());
    }

    #[test]
    fn cache_needs_the_same_password_and_epoch() {
        let cache = KeyCache::new(2, Duration::from_secs(60));
        let keys = AliasKeys {
            data_key: SecretKey::generate(),
            identity: Zeroizing::new("AGE-SECRET-KEY-1TEST".into()),
        };
        let pw = Password::new("right");
        cache.insert(7, 1, &pw, &keys);
        let hit = cache.get(7, 1, &pw).unwrap();
        assert_eq!(hit.data_key.bytes(), keys.data_key.bytes());
        assert_eq!(hit.identity.as_str(), "AGE-SECRET-KEY-1TEST");
        assert!(cache.get(7, 1, &Password::new("wrong")).is_none());
        assert!(cache.get(7, 2, &pw).is_none());
        assert!(cache.get(8, 1, &pw).is_none());
        cache.insert(8, 1, &pw, &keys);
        cache.insert(9, 1, &pw, &keys);
        assert_eq!(cache.len(), 2, "capacity bound holds");
        cache.forget(9);
        assert!(cache.get(9, 1, &pw).is_none());
    }

    #[test]
    fn cache_entries_expire() {
        let cache = KeyCache::new(4, Duration::ZERO);
        let keys = AliasKeys {
            data_key: SecretKey::generate(),
            identity: Zeroizing::new(String::new()),
        };
        let pw = Password::new("pw");
        cache.insert(1, 1, &pw, &keys);
        assert!(cache.get(1, 1, &pw).is_none());
    }
}
