//! SQLCipher 4's page authentication, checked outside SQLite: a backup
//! streams the mailbox file through [`copy_checked`], which writes it,
//! hashes it and authenticates every page on the way, in one read.
//!
//! SQLCipher's own `PRAGMA cipher_integrity_check` does the same work but
//! sets up OpenSSL's HMAC afresh for each 4 KiB page (about 13 µs each
//! here: 3.5 s for a gigabyte); a keyed HMAC cloned per page costs the
//! SHA-256 alone. The layout it checks is the one every Cofre database
//! has (`db::open`): 4,096-byte pages ending in a 16-byte IV and a 32-byte
//! HMAC-SHA256 of the ciphertext, the IV and the page number (4 bytes,
//! little-endian); page 1 begins with the file's 16-byte salt, outside the
//! MAC. The HMAC key is PBKDF2-HMAC-SHA512 of the raw key, 2 rounds, with
//! the salt XOR 0x3a. A test holds this to SQLCipher's own answers, so a
//! format change fails loudly rather than passing a damaged copy.

use std::io::Read;
use std::path::Path;
use std::sync::mpsc;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::keys::SecretKey;

/// The page size of every Cofre database (SQLCipher 4's default).
pub const PAGE_SIZE: usize = 4096;
/// The salt at the start of the file.
const SALT: usize = 16;
/// The IV and the HMAC at the end of each page (rounded to AES's block).
const IV: usize = 16;
const MAC: usize = 32;
const RESERVE: usize = 48;

/// A mailbox key's page authenticator for one file (its salt).
pub struct PageAuth {
    mac: Hmac<Sha256>,
}

impl PageAuth {
    /// The authenticator for pages encrypted under `key` in the file whose
    /// first 16 bytes are `salt`.
    pub fn new(key: &SecretKey, salt: &[u8; SALT]) -> PageAuth {
        let mut hmac_salt = *salt;
        for b in &mut hmac_salt {
            *b ^= 0x3a;
        }
        let mut hmac_key = Zeroizing::new([0u8; 32]);
        pbkdf2::pbkdf2_hmac::<Sha512>(key.bytes(), &hmac_salt, 2, &mut hmac_key[..]);
        PageAuth {
            mac: <Hmac<Sha256> as Mac>::new_from_slice(&hmac_key[..])
                .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length")),
        }
    }

    /// True when `page`, the `pgno`th (from 1) of the file as stored,
    /// carries its own HMAC.
    pub fn check(&self, pgno: u32, page: &[u8]) -> bool {
        if page.len() != PAGE_SIZE {
            return false;
        }
        let start = if pgno == 1 { SALT } else { 0 };
        let signed = PAGE_SIZE - RESERVE + IV;
        let mut mac = self.mac.clone();
        mac.update(&page[start..signed]);
        mac.update(&pgno.to_le_bytes());
        mac.verify_slice(&page[signed..signed + MAC]).is_ok()
    }
}

/// Bytes read at a time.
const CHUNK: usize = 4 << 20;

/// Copies `from` to `to` (created; synced), taking the SHA-256 of the
/// bytes and, with `key`, authenticating every page: a page that fails,
/// or a file that is not whole pages, fails the copy with
/// [`Error::Corrupt`]. Returns the SHA-256, hex. `from` must not change
/// meanwhile (a backup's source is pinned; a backup is never written).
///
/// The kernel copies the file (`copy_file_range`, as `cp` does: no pass
/// through our memory, and here several times faster than `write`) while
/// this thread reads the same bytes from the page cache for two stages
/// running side by side — one checks the pages, the next hashes and hands
/// the buffer back to be filled again.
pub fn copy_checked(from: &Path, to: &Path, key: Option<&SecretKey>) -> Result<String> {
    let mut src = std::fs::File::open(from)?;
    let (to_check, checking) = mpsc::sync_channel::<Vec<u8>>(2);
    let (to_hash, hashing) = mpsc::sync_channel::<Vec<u8>>(2);
    let (to_fill, filling) = mpsc::channel::<Vec<u8>>();
    std::thread::scope(|scope| {
        let copier = scope.spawn(|| -> Result<()> {
            std::fs::copy(from, to)?;
            std::fs::File::open(to)?.sync_all()?;
            Ok(())
        });
        let checker = scope.spawn(move || -> Result<()> {
            let mut auth: Option<PageAuth> = None;
            let mut pgno: u32 = 1;
            for chunk in checking {
                if let Some(key) = key {
                    let auth = auth.get_or_insert_with(|| {
                        let mut salt = [0u8; SALT];
                        salt.copy_from_slice(&chunk[..SALT]);
                        PageAuth::new(key, &salt)
                    });
                    for page in chunk.chunks(PAGE_SIZE) {
                        if !auth.check(pgno, page) {
                            return Err(Error::Corrupt(format!("page {pgno} fails its HMAC")));
                        }
                        pgno += 1;
                    }
                }
                if to_hash.send(chunk).is_err() {
                    break;
                }
            }
            Ok(())
        });
        let hasher = scope.spawn(move || {
            let mut h = Sha256::new();
            for chunk in hashing {
                h.update(&chunk);
                // The reader may have stopped; the buffer is then dropped.
                let _ = to_fill.send(chunk);
            }
            hex::encode(h.finalize())
        });
        let read = (|| -> Result<()> {
            loop {
                let mut buf = filling.try_recv().unwrap_or_default();
                buf.resize(CHUNK, 0);
                let n = read_full(&mut src, &mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                buf.truncate(n);
                if key.is_some() && n % PAGE_SIZE != 0 {
                    return Err(Error::Corrupt("the file is not whole pages".into()));
                }
                if to_check.send(buf).is_err() {
                    // The checker stopped: its answer says why.
                    return Ok(());
                }
            }
        })();
        // The checker's end ends the hasher's in turn.
        drop(to_check);
        let joined = |what: &str| Error::Corrupt(format!("{what} the copy failed"));
        let checked = checker.join().map_err(|_| joined("checking"))?;
        let hashed = hasher.join().map_err(|_| joined("hashing"));
        let copied = copier.join().map_err(|_| joined("making"))?;
        read?;
        checked?;
        copied?;
        hashed
    })
}

/// Reads until `buf` is full or the file ends; how many bytes.
fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(n)
}
