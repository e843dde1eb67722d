//! A data directory and everything in it: the directory, the mailboxes, the
//! queues, and the key cache. This is the API the primary serves.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::directory::{AliasRecord, Directory, KeyMaterial};
use crate::error::{Error, Result};
use crate::keys::{self, AliasKeys, KdfParams, KeyCache, Password, SecretKey};
use crate::mailbox::{AppendOptions, Mailbox, MailboxOptions};
use crate::queue::{self, Queue};
use crate::s3::Bucket;
use crate::time;
use crate::types::{AliasAddress, Role};

/// Settings of a store, with the defaults a server uses.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Argon2id parameters for new passwords.
    pub kdf: KdfParams,
    /// Options every mailbox is opened with (quota comes from the directory).
    pub mailbox: MailboxOptions,
    /// How many aliases' unwrapped keys to keep. Default 10,000.
    pub key_cache_capacity: usize,
    /// How long an unwrapped key stays cached. Default 10 minutes.
    pub key_cache_ttl: Duration,
    /// Encrypts the directory too, if set.
    pub master_key: Option<SecretKey>,
    /// The S3-compatible store backups are kept in; `None` keeps them in
    /// `data/backups/`.
    pub backup_store: Option<Arc<Bucket>>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kdf: KdfParams::DEFAULT,
            mailbox: MailboxOptions::default(),
            key_cache_capacity: 10_000,
            key_cache_ttl: Duration::from_secs(600),
            master_key: None,
            backup_store: None,
        }
    }
}

/// An alias whose password was proven: its record and unwrapped keys.
#[derive(Debug, Clone)]
pub struct Unlocked {
    /// The directory record.
    pub alias: AliasRecord,
    /// The keys the password unwrapped.
    pub keys: AliasKeys,
}

/// A step of the queue drain, reported to [`Store::drain_with`]'s observer
/// (crash tests stop the process at each one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainStep {
    /// A batch was opened but nothing was written yet.
    Opened,
    /// The batch is committed to the mailbox but still in the queue.
    Appended,
    /// The batch is removed from the queue.
    Removed,
}

/// A data directory.
pub struct Store {
    root: PathBuf,
    directory: Mutex<Directory>,
    cache: KeyCache,
    config: StoreConfig,
    /// Sealed messages waiting, once counted.
    queue_depth: Mutex<Option<u64>>,
}

const DRAIN_BATCH: usize = 64;

impl Store {
    /// Opens (creating on first use) a data directory.
    pub fn open(root: &Path, config: StoreConfig) -> Result<Store> {
        for sub in ["mailboxes", "queue", "backups"] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        let directory =
            Directory::open(&root.join("directory.sqlite"), config.master_key.as_ref())?;
        Ok(Store {
            root: root.to_path_buf(),
            directory: Mutex::new(directory),
            cache: KeyCache::new(config.key_cache_capacity, config.key_cache_ttl),
            config,
            queue_depth: Mutex::new(None),
        })
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The store's configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// The directory, locked.
    pub fn directory(&self) -> MutexGuard<'_, Directory> {
        self.directory.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cache of unwrapped keys.
    pub fn key_cache(&self) -> &KeyCache {
        &self.cache
    }

    /// Path of an alias's mailbox file.
    pub fn mailbox_path(&self, alias: &AliasRecord) -> PathBuf {
        self.root
            .join("mailboxes")
            .join(format!("{}.sqlite", alias.mailbox_id))
    }

    /// Path of an alias's queue file.
    pub fn queue_path(&self, alias: &AliasRecord) -> PathBuf {
        self.root
            .join("queue")
            .join(format!("{}.sqlite", alias.mailbox_id))
    }

    /// Path of an alias's backup folder.
    pub fn backup_dir(&self, alias: &AliasRecord) -> PathBuf {
        self.root.join("backups").join(&alias.mailbox_id)
    }

    /// Where an alias's backups are kept (its folder, and the configured
    /// store if any).
    pub fn backup_target(&self, alias: &AliasRecord) -> crate::backup::Target {
        crate::backup::Target::new(
            self.backup_dir(alias),
            &alias.mailbox_id,
            self.config.backup_store.clone(),
        )
    }

    /// Looks an alias up.
    pub fn alias(&self, address: &AliasAddress) -> Result<AliasRecord> {
        self.directory().alias(address)
    }

    fn key_material(
        &self,
        mailbox_id: &str,
        password: &Password,
        keys: &AliasKeys,
    ) -> Result<KeyMaterial> {
        let salt: [u8; 16] = keys::random_bytes();
        let derived = keys::derive(password, &salt, self.config.kdf)?;
        Ok(KeyMaterial {
            kdf: self.config.kdf,
            salt: salt.to_vec(),
            verifier_hash: keys::verifier_hash(&derived.verifier).to_vec(),
            wrapped_data_key: keys::wrap(
                &derived.kek,
                keys.data_key.bytes(),
                mailbox_id.as_bytes(),
            ),
            wrapped_identity: keys::wrap(
                &derived.kek,
                keys.identity.as_bytes(),
                mailbox_id.as_bytes(),
            ),
        })
    }

    /// Creates an alias with a fresh mailbox; returns its record and the
    /// generated password, which is shown once and never stored.
    pub fn create_alias(
        &self,
        address: &AliasAddress,
        quota: Option<u64>,
    ) -> Result<(AliasRecord, Password)> {
        if self.directory().alias(address).is_ok() {
            return Err(Error::AliasExists(address.to_string()));
        }
        let mailbox_id = hex::encode(keys::random_bytes::<12>());
        let password = Password::generate();
        let (public_key, identity) = queue::generate_keypair();
        let keys = AliasKeys {
            data_key: SecretKey::generate(),
            identity,
        };
        let material = self.key_material(&mailbox_id, &password, &keys)?;
        let path = self
            .root
            .join("mailboxes")
            .join(format!("{mailbox_id}.sqlite"));
        drop(Mailbox::create(
            &path,
            &keys.data_key,
            self.config.mailbox.clone(),
        )?);
        let record =
            self.directory()
                .insert_alias(address, &mailbox_id, &public_key, &material, quota);
        match record {
            Ok(r) => Ok((r, password)),
            Err(e) => {
                remove_db_files(&path);
                Err(e)
            }
        }
    }

    /// Proves a password and unwraps the alias's keys: from the cache when
    /// the same password unlocked them recently, else with one Argon2id run.
    pub fn unlock(&self, address: &AliasAddress, password: &Password) -> Result<Unlocked> {
        let alias = self.alias(address)?;
        if let Some(keys) = self.cache.get(alias.id, alias.key_epoch, password) {
            return Ok(Unlocked { alias, keys });
        }
        let keys = unwrap_keys(&alias, password)?;
        self.cache
            .insert(alias.id, alias.key_epoch, password, &keys);
        Ok(Unlocked { alias, keys })
    }

    /// Replaces an alias's password: the old one must be given; the mailbox
    /// is not rewritten (only its wrapped key changes). Returns the new
    /// password.
    pub fn change_password(&self, address: &AliasAddress, old: &Password) -> Result<Password> {
        let alias = self.alias(address)?;
        let keys = unwrap_keys(&alias, old)?;
        let new = Password::generate();
        let material = self.key_material(&alias.mailbox_id, &new, &keys)?;
        self.directory().replace_keys(alias.id, &material)?;
        self.cache.forget(alias.id);
        Ok(new)
    }

    /// Deletes an alias for good: mailbox, queue, backups (every object in
    /// the store too), directory row. The store is emptied first: if it
    /// cannot be reached, nothing is deleted and the caller can try again.
    pub fn delete_alias(&self, address: &AliasAddress) -> Result<()> {
        let alias = self.alias(address)?;
        self.backup_target(&alias).remove_all()?;
        self.directory().delete_alias(alias.id)?;
        self.cache.forget(alias.id);
        let mailbox = self.mailbox_path(&alias);
        remove_db_files(&mailbox);
        // A restore's staged copy, if one was cut short, and the file a
        // restore replaced, if not yet unlinked.
        for left in [crate::primary::STAGED, crate::primary::REPLACED] {
            remove_db_files(&mailbox.with_extension(left));
        }
        remove_db_files(&self.queue_path(&alias));
        Ok(())
    }

    /// Opens an unlocked alias's mailbox, with its quota.
    pub fn open_mailbox(&self, u: &Unlocked) -> Result<Mailbox> {
        let mut options = self.config.mailbox.clone();
        options.quota = u.alias.quota;
        Mailbox::open(&self.mailbox_path(&u.alias), &u.keys.data_key, options)
    }

    /// Seals a message into an alias's queue. Needs no password.
    pub fn enqueue(&self, address: &AliasAddress, raw: &[u8]) -> Result<String> {
        let alias = self.alias(address)?;
        let limit = self.config.mailbox.max_message_size;
        if raw.len() as u64 > limit {
            return Err(Error::TooLarge {
                size: raw.len() as u64,
                limit,
            });
        }
        if raw.is_empty() {
            return Err(Error::Invalid("a message cannot be empty".into()));
        }
        let reference =
            Queue::open(&self.queue_path(&alias))?.enqueue(&alias.public_key, raw, time::now())?;
        if let Some(n) = self.queue_depth_cell().as_mut() {
            *n += 1;
        }
        Ok(reference)
    }

    fn queue_depth_cell(&self) -> MutexGuard<'_, Option<u64>> {
        self.queue_depth.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sealed messages waiting across every alias. The first call counts
    /// every queue (the primary makes it before serving); later ones are kept
    /// current by enqueue and drain.
    pub fn queue_depth(&self) -> Result<u64> {
        let mut depth = self.queue_depth_cell();
        if let Some(n) = *depth {
            return Ok(n);
        }
        let aliases = self.directory().aliases()?;
        let mut total = 0u64;
        for alias in &aliases {
            let path = self.queue_path(alias);
            if path.exists() {
                total += Queue::open(&path)?.len()? as u64;
            }
        }
        *depth = Some(total);
        Ok(total)
    }

    /// Number of sealed messages waiting for an alias.
    pub fn queued(&self, address: &AliasAddress) -> Result<usize> {
        let alias = self.alias(address)?;
        let path = self.queue_path(&alias);
        if !path.exists() {
            return Ok(0);
        }
        Queue::open(&path)?.len()
    }

    /// Moves everything queued for an alias into its inbox, exactly once;
    /// returns how many messages arrived.
    pub fn drain(&self, u: &Unlocked, mailbox: &mut Mailbox) -> Result<usize> {
        self.drain_with(u, mailbox, |_| {})
    }

    /// [`Store::drain`], reporting each step to `observe`.
    ///
    /// Exactly once: each queued item is appended with its queue reference as
    /// the idempotency key, in a transaction, and only then removed from the
    /// queue. A crash after the append leaves the item queued; the next drain
    /// finds it already stored and only removes it.
    pub fn drain_with(
        &self,
        u: &Unlocked,
        mailbox: &mut Mailbox,
        mut observe: impl FnMut(DrainStep),
    ) -> Result<usize> {
        let path = self.queue_path(&u.alias);
        if !path.exists() {
            return Ok(0);
        }
        let mut queue = Queue::open(&path)?;
        let inbox = mailbox.folder_by_role(Role::Inbox)?.id;
        let pending = queue.pending()?;
        let mut delivered = 0;
        for batch in pending.chunks(DRAIN_BATCH) {
            observe(DrainStep::Opened);
            let mut raws = Vec::with_capacity(batch.len());
            for item in batch {
                raws.push(queue.open_item(&u.keys.identity, item.id)?);
            }
            let messages: Vec<(&[u8], AppendOptions)> = batch
                .iter()
                .zip(&raws)
                .map(|(item, raw)| {
                    (
                        raw.as_slice(),
                        AppendOptions {
                            keywords: Vec::new(),
                            received_at: Some(item.received_at),
                            delivery_ref: Some(format!("queue:{}", item.reference)),
                        },
                    )
                })
                .collect();
            // On disk before the queue lets go of them.
            let appended = mailbox.durably(|mb| mb.append_batch(inbox, &messages))?;
            delivered += appended.iter().filter(|a| !a.duplicate).count();
            observe(DrainStep::Appended);
            queue.remove(&batch.iter().map(|i| i.id).collect::<Vec<_>>())?;
            if let Some(n) = self.queue_depth_cell().as_mut() {
                *n = n.saturating_sub(batch.len() as u64);
            }
            observe(DrainStep::Removed);
        }
        if !pending.is_empty() {
            queue.compact()?;
        }
        Ok(delivered)
    }

    /// Writes the portable export of an unlocked alias's mailbox.
    pub fn export(&self, u: &Unlocked, password: &Password, out: &Path) -> Result<()> {
        let mailbox = self.open_mailbox(u)?;
        crate::export::export(&mailbox, password, out)
    }
}

fn unwrap_keys(alias: &AliasRecord, password: &Password) -> Result<AliasKeys> {
    let derived = keys::derive(password, &alias.salt, alias.kdf)?;
    let hash = keys::verifier_hash(&derived.verifier);
    if !keys::constant_time_eq(&hash, &alias.verifier_hash) {
        return Err(Error::WrongPassword);
    }
    let aad = alias.mailbox_id.as_bytes();
    let dk = keys::unwrap(&derived.kek, &alias.wrapped_data_key, aad)?;
    let mut bytes = [0u8; 32];
    if dk.len() != 32 {
        return Err(Error::Corrupt(
            "wrapped data key has the wrong length".into(),
        ));
    }
    bytes.copy_from_slice(&dk);
    let data_key = SecretKey::from_bytes(bytes);
    zeroize::Zeroize::zeroize(&mut bytes);
    let identity = keys::unwrap(&derived.kek, &alias.wrapped_identity, aad)?;
    let identity = zeroize::Zeroizing::new(
        String::from_utf8(identity.to_vec())
            .map_err(|_| Error::Corrupt("wrapped identity is not text".into()))?,
    );
    Ok(AliasKeys { data_key, identity })
}

/// Removes a SQLite file and its WAL and shared-memory companions.
fn remove_db_files(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        // A missing companion file is normal; anything else has nowhere
        // better to go than the next cleanup.
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}
