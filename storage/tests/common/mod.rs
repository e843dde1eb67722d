//! Helpers shared by the storage tests.
#![allow(dead_code, clippy::unwrap_used)]

use cofre_storage::mailbox::AppendOptions;
use cofre_storage::{
    AliasAddress, KdfParams, Mailbox, MailboxOptions, Password, SecretKey, Store, StoreConfig,
    Unlocked,
};

/// A fresh mailbox in a temporary directory.
pub fn mailbox() -> (tempfile::TempDir, Mailbox) {
    let dir = tempfile::tempdir().unwrap();
    let mb = Mailbox::create(
        &dir.path().join("m.sqlite"),
        &SecretKey::generate(),
        MailboxOptions::default(),
    )
    .unwrap();
    (dir, mb)
}

/// A store with cheap key derivation, so tests run fast.
pub fn store(dir: &std::path::Path) -> Store {
    Store::open(
        dir,
        StoreConfig {
            kdf: KdfParams::INSECURE_FOR_TESTS,
            ..StoreConfig::default()
        },
    )
    .unwrap()
}

/// Creates an alias and unlocks it.
pub fn alias(store: &Store, address: &str) -> (AliasAddress, Password, Unlocked) {
    let a = AliasAddress::try_from(address).unwrap();
    let (_, pw) = store.create_alias(&a, None).unwrap();
    let u = store.unlock(&a, &pw).unwrap();
    (a, pw, u)
}

/// A simple message.
pub fn msg(from: &str, to: &str, subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: Mon, 6 May 2024 10:00:00 +0000\r\n\
         Message-ID: <{}@test>\r\n\r\n{body}\r\n",
        subject.replace(' ', "-")
    )
    .into_bytes()
}

/// Default append options with keywords.
pub fn with_keywords(k: &[&str]) -> AppendOptions {
    AppendOptions {
        keywords: k.iter().map(|s| (*s).try_into().unwrap()).collect(),
        ..AppendOptions::default()
    }
}
