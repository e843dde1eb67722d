//! The primary's core: live sessions and one writer thread per open
//! mailbox.
//!
//! A mailbox is open only while its alias has a live session (or for an
//! idle timeout after work): the unwrapped keys are held in the session
//! registry, and every operation on the mailbox runs on that mailbox's own
//! thread, one at a time, fed by a bounded queue. Mail for an alias with a
//! live session is written straight into its inbox; mail for anyone else is
//! sealed into the queue, and the next login drains it.
//!
//! This module is transport-free: the in-process link and the WebSocket
//! link both call it.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::directory::AliasRecord;
use crate::error::{Error, Result};
use crate::keys::{AliasKeys, Password, SecretKey};
use crate::mailbox::{AppendOptions, Appended, Mailbox};
use crate::store::Store;
use crate::types::{AliasAddress, Role};
use zeroize::Zeroizing;

/// Settings of the primary, with the defaults a server uses.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct PrimaryConfig {
    /// A mailbox thread with no work for this long closes its file.
    /// Default 5 minutes.
    pub idle_timeout: Duration,
    /// Most mailboxes open at once; past it the least recently used closes.
    /// Default 1,000.
    pub max_open: usize,
    /// Operations that may wait for one mailbox's thread. Default 64.
    pub queue_depth: usize,
    /// How many backup versions each mailbox keeps.
    #[serde(default)]
    pub retention: crate::backup::Retention,
}

impl Default for PrimaryConfig {
    fn default() -> Self {
        PrimaryConfig {
            idle_timeout: Duration::from_secs(300),
            max_open: 1000,
            queue_depth: 64,
            retention: crate::backup::Retention::default(),
        }
    }
}

/// A live session's handle: 128 random bits, a bearer capability for that
/// alias's mailbox until logout. Its debug form hides the value.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId(pub u128);

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionId(…)")
    }
}

/// What happened to delivered mail.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Written into the inbox of a live mailbox.
    Stored(Appended),
    /// Sealed into the queue (no live session); the reference is returned.
    Queued(String),
}

type Job = Box<dyn FnOnce(&mut Mailbox) + Send>;

/// What `Unavailable` says while a restore swaps a mailbox's file.
const RESTORING: &str = "the mailbox is being restored from a backup; try again in a moment";

/// What `Unavailable` says while another backup task runs on the mailbox.
const BACKING_UP: &str = "a backup task is running on this mailbox; try again when it ends";

/// What `NotFound` says when an alias has no live session.
const NOT_LIVE: &str = "live session for this alias";

struct Worker {
    jobs: SyncSender<Job>,
    thread: JoinHandle<()>,
}

struct Live {
    alias: AliasRecord,
    keys: AliasKeys,
    sessions: usize,
    worker: Option<Worker>,
    last_used: Instant,
    /// The session holding the POP3 maildrop lock (RFC 1939 §8), if any.
    maildrop: Option<SessionId>,
    /// A restore is swapping the file: the mailbox does not open.
    restoring: bool,
}

/// One live session.
struct Session {
    alias_id: i64,
    /// Unix seconds after which the session is gone (API tokens).
    expires_at: Option<i64>,
    /// The API token it serves, for revocation.
    jti: Option<String>,
}

#[derive(Default)]
struct Registry {
    sessions: HashMap<SessionId, Session>,
    live: HashMap<i64, Live>,
    /// Set by [`Primary::shutdown`]: no mailbox opens again.
    closing: bool,
}

/// The primary: sessions, mailbox threads, delivery, change events.
pub struct Primary {
    store: Arc<Store>,
    config: PrimaryConfig,
    registry: Mutex<Registry>,
    /// Aliases with a backup, restore or deletion of backups under way:
    /// one at a time per mailbox.
    backing_up: Mutex<std::collections::HashSet<i64>>,
    events: tokio::sync::broadcast::Sender<Changed>,
    /// Seals the keys an API token carries (derived from the cluster
    /// secret); without it no token is issued or resumed.
    token_key: Option<SecretKey>,
}

/// An API token's contents as the primary issues them: a session, and the
/// alias's keys sealed under the token key so that any gateway of the
/// cluster can later resume a session without the password.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TokenGrant {
    /// A session, open now.
    pub session: SessionId,
    /// The alias's row id.
    pub alias_id: i64,
    /// The token's unique id (for revocation).
    pub jti: String,
    /// Unix seconds.
    pub expires_at: i64,
    /// The alias's keys, sealed (XChaCha20-Poly1305 under the token key,
    /// bound to the address, alias id, jti and expiry).
    pub sealed: Vec<u8>,
}

/// What a token's seal is bound to: the alias (and its key epoch, so a
/// password change voids every token issued before it), the token id and
/// its expiry.
fn token_aad(alias: &crate::AliasRecord, jti: &str, expires_at: i64) -> Vec<u8> {
    format!(
        "cofre/token\0{}\0{}\0{}\0{jti}\0{expires_at}",
        alias.address, alias.id, alias.key_epoch
    )
    .into_bytes()
}

/// A mailbox changed: what IDLE, JMAP push and web clients wait for.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    /// Whose mailbox.
    pub address: AliasAddress,
    /// Its highest MODSEQ after the change.
    pub modseq: crate::types::ModSeq,
}

impl Drop for Primary {
    /// Closes every open mailbox before the primary goes: a mailbox thread
    /// still inside SQLCipher when the process exits races the crypto
    /// library's exit handlers.
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Primary {
    /// A primary over a store.
    pub fn new(store: Arc<Store>, config: PrimaryConfig) -> Primary {
        Primary {
            store,
            config,
            registry: Mutex::new(Registry::default()),
            backing_up: Mutex::default(),
            events: tokio::sync::broadcast::channel(4096).0,
            token_key: None,
        }
    }

    /// Enables API tokens, sealed under `key` (derive it from the cluster
    /// secret: every primary and gateway of a cluster must agree on it).
    pub fn with_token_key(mut self, key: SecretKey) -> Primary {
        self.token_key = Some(key);
        self
    }

    fn token_key(&self) -> Result<&SecretKey> {
        self.token_key
            .as_ref()
            .ok_or_else(|| Error::Unavailable("API tokens are not enabled on this primary".into()))
    }

    /// Proves a password and issues the contents of an API token valid for
    /// `ttl`: its session is open at once (the alias is online until it
    /// expires or is revoked).
    pub fn issue_token(
        &self,
        address: &AliasAddress,
        password: &Password,
        ttl: Duration,
    ) -> Result<TokenGrant> {
        let key = self.token_key()?.clone();
        let unlocked = self.store.unlock(address, password)?;
        let jti = hex::encode(crate::keys::random_bytes::<16>());
        let expires_at = crate::time::now().saturating_add(ttl.as_secs() as i64);
        let mut secret = Zeroizing::new(unlocked.keys.data_key.bytes().to_vec());
        secret.extend_from_slice(unlocked.keys.identity.as_bytes());
        let alias_id = unlocked.alias.id;
        let sealed =
            crate::keys::wrap(&key, &secret, &token_aad(&unlocked.alias, &jti, expires_at));
        let session = self.open_session(unlocked, Some(expires_at), Some(jti.clone()))?;
        Ok(TokenGrant {
            session,
            alias_id,
            jti,
            expires_at,
            sealed,
        })
    }

    /// Opens a session from a token's sealed keys, without the password.
    /// Refused (`WrongPassword`) when the token expired, was revoked, or its
    /// seal does not open for this alias.
    pub fn resume(
        &self,
        address: &AliasAddress,
        jti: &str,
        expires_at: i64,
        sealed: &[u8],
    ) -> Result<SessionId> {
        let key = self.token_key()?.clone();
        if expires_at <= crate::time::now() || self.store.directory().is_revoked(jti)? {
            return Err(Error::WrongPassword);
        }
        let alias = self.store.alias(address)?;
        let secret = crate::keys::unwrap(&key, sealed, &token_aad(&alias, jti, expires_at))
            .map_err(|_| Error::WrongPassword)?;
        let (data_key, identity) = secret
            .split_first_chunk::<32>()
            .ok_or(Error::WrongPassword)?;
        let identity = std::str::from_utf8(identity).map_err(|_| Error::WrongPassword)?;
        let unlocked = crate::store::Unlocked {
            alias,
            keys: AliasKeys {
                data_key: SecretKey::from_bytes(*data_key),
                identity: Zeroizing::new(identity.to_string()),
            },
        };
        self.open_session(unlocked, Some(expires_at), Some(jti.to_string()))
    }

    /// Replaces an alias's password (the current one must be given) and
    /// returns the new one. Every session of the alias ends and every API
    /// token issued before stops working.
    pub fn change_password(&self, address: &AliasAddress, current: &Password) -> Result<Password> {
        let new = self.store.change_password(address, current)?;
        let alias = self.store.alias(address)?;
        self.end_sessions_of(alias.id);
        Ok(new)
    }

    /// The portable export of a session's mailbox, keyed with the alias's
    /// password (which must be given, and is checked): a SQLCipher file
    /// that `sqlcipher` opens with the password. It is written encrypted to
    /// `data/tmp/`, read back, and removed.
    pub fn export(&self, session: SessionId, password: &Password) -> Result<Vec<u8>> {
        let alias_id = self.alias_of(session)?;
        let address = self
            .registry()
            .live
            .get(&alias_id)
            .map(|l| l.alias.address.clone())
            .ok_or(Error::NoSession)?;
        // The password must be this alias's: the export opens with it.
        self.store.unlock(&address, password)?;
        let dir = self.store.root().join("tmp");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!(
            "export-{}.sqlite",
            hex::encode(crate::keys::random_bytes::<8>())
        ));
        let password = password.clone();
        let out = path.clone();
        let written = self.run_on(alias_id, move |mb| {
            crate::export::export(mb, &password, &out)
        });
        let bytes = written.and_then(|()| Ok(std::fs::read(&path)?));
        let _ = std::fs::remove_file(&path);
        bytes
    }

    /// Revokes an API token: its sessions end everywhere and it cannot be
    /// resumed again.
    pub fn revoke(&self, jti: &str, expires_at: i64) -> Result<()> {
        self.store.directory().revoke_token(jti, expires_at)?;
        let ended: Vec<SessionId> = self
            .registry()
            .sessions
            .iter()
            .filter(|(_, s)| s.jti.as_deref() == Some(jti))
            .map(|(id, _)| *id)
            .collect();
        for id in ended {
            self.logout(id);
        }
        Ok(())
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Proves a password and opens a session; the alias's sealed queue is
    /// drained into its inbox before this returns.
    pub fn login(&self, address: &AliasAddress, password: &Password) -> Result<SessionId> {
        let unlocked = self.store.unlock(address, password)?;
        self.open_session(unlocked, None, None)
    }

    /// Registers a session for unlocked keys and drains the alias's queue.
    fn open_session(
        &self,
        unlocked: crate::store::Unlocked,
        expires_at: Option<i64>,
        jti: Option<String>,
    ) -> Result<SessionId> {
        let alias_id = unlocked.alias.id;
        self.reap_expired();
        let id = {
            let mut reg = self.registry();
            let id = SessionId(u128::from_le_bytes(crate::keys::random_bytes()));
            reg.sessions.insert(
                id,
                Session {
                    alias_id,
                    expires_at,
                    jti,
                },
            );
            let live = reg.live.entry(alias_id).or_insert_with(|| Live {
                alias: unlocked.alias.clone(),
                keys: unlocked.keys.clone(),
                sessions: 0,
                worker: None,
                last_used: Instant::now(),
                maildrop: None,
                restoring: false,
            });
            live.sessions += 1;
            id
        };
        let store = Arc::clone(&self.store);
        let drained = self.call(id, move |mb| store.drain(&unlocked, mb));
        if let Err(e) = drained {
            self.logout(id);
            return Err(e);
        }
        Ok(id)
    }

    /// Ends a session. When an alias's last session ends, its keys leave the
    /// registry and its mailbox thread finishes its queue and closes.
    pub fn logout(&self, session: SessionId) {
        let mut reg = self.registry();
        let Some(Session { alias_id, .. }) = reg.sessions.remove(&session) else {
            return;
        };
        let last = match reg.live.get_mut(&alias_id) {
            Some(live) => {
                if live.maildrop == Some(session) {
                    live.maildrop = None;
                }
                live.sessions = live.sessions.saturating_sub(1);
                live.sessions == 0
            }
            None => false,
        };
        if last {
            // The unwrapped keys leave the registry; the key cache keeps them
            // only sealed under the process key, for a quick re-login.
            reg.live.remove(&alias_id);
        }
    }

    /// A backup run of the session's mailbox (DESIGN.md, Backups): the
    /// mailbox's writer checkpoints the WAL, then a connection of the
    /// backup's own snapshots, verifies, hashes and stores it beside the
    /// earlier ones (or finds it unchanged); then the retention lets old
    /// versions go. Blocks; readers and writers of the mailbox go on
    /// meanwhile.
    pub fn backup(&self, session: SessionId) -> Result<crate::backup::BackupOutcome> {
        self.backup_alias(self.alias_of(session)?)
    }

    /// A backup run of a live alias's mailbox, then the retention.
    fn backup_alias(&self, alias_id: i64) -> Result<crate::backup::BackupOutcome> {
        let _task = self.backup_task(alias_id)?;
        let outcome = self.backup_now(alias_id)?;
        if matches!(outcome, crate::backup::BackupOutcome::Stored(_)) {
            self.prune_backups(alias_id)?;
        }
        Ok(outcome)
    }

    /// The daily schedule's round: a backup run of every mailbox whose
    /// alias has a session now (only then is its key in memory) and whose
    /// latest backup is older than `max_age` seconds, or that has none. An
    /// unchanged mailbox costs a lookup, no copy. Returns each alias's
    /// address and outcome.
    pub fn backup_due(
        &self,
        max_age: i64,
    ) -> Vec<(AliasAddress, Result<crate::backup::BackupOutcome>)> {
        let live: Vec<(i64, AliasAddress)> = self
            .registry()
            .live
            .iter()
            .map(|(id, l)| (*id, l.alias.address.clone()))
            .collect();
        let now = crate::time::now();
        let mut out = Vec::new();
        for (alias_id, address) in live {
            let latest = match self.store.directory().backups(alias_id) {
                Ok(mut list) => list.pop(),
                Err(e) => {
                    out.push((address, Err(e)));
                    continue;
                }
            };
            if latest.is_some_and(|b| now - b.created_at < max_age) {
                continue;
            }
            out.push((address, self.backup_alias(alias_id)));
        }
        out
    }

    /// The run itself, under the alias's backup task.
    fn backup_now(&self, alias_id: i64) -> Result<crate::backup::BackupOutcome> {
        let (alias, key) = self.live_key(alias_id)?;
        let path = self.store.mailbox_path(&alias);
        let reader = crate::backup::open_reader(&path, &key)?;
        let (marker, pinned) =
            self.run_on(alias_id, move |mb| crate::backup::checkpoint(mb, reader))?;
        let latest = self.store.directory().backups(alias_id)?.pop();
        let outcome = crate::backup::run(
            &path,
            &key,
            &self.store.backup_target(&alias),
            &marker,
            latest.as_ref(),
            pinned,
        )?;
        if let crate::backup::BackupOutcome::Stored(r) = &outcome {
            self.store.directory().add_backup(alias_id, r)?;
        }
        Ok(outcome)
    }

    /// The live alias's record and data key.
    fn live_key(&self, alias_id: i64) -> Result<(AliasRecord, SecretKey)> {
        let reg = self.registry();
        let live = reg.live.get(&alias_id).ok_or(Error::NoSession)?;
        Ok((live.alias.clone(), live.keys.data_key.clone()))
    }

    /// Claims the alias's one backup task (run, restore, delete), or says
    /// another is running — in this process, or in another one (a
    /// command-line run beside the server) through the lock file in the
    /// mailbox's backup folder.
    fn backup_task(&self, alias_id: i64) -> Result<BackupTask<'_>> {
        let dir = self.store.backup_dir(&self.live_key(alias_id)?.0);
        {
            let mut running = self.backing_up.lock().unwrap_or_else(|p| p.into_inner());
            if !running.insert(alias_id) {
                return Err(Error::Unavailable(BACKING_UP.into()));
            }
        }
        // From here the task releases its claim when dropped.
        let mut task = BackupTask {
            primary: self,
            alias_id,
            _file: None,
        };
        std::fs::create_dir_all(&dir)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(crate::backup::LOCK_FILE))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Unavailable(BACKING_UP.into()));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        }
        task._file = Some(file);
        Ok(task)
    }

    /// Lets go the versions the retention does not keep, record first
    /// (a listed backup always has its file), and any version that no
    /// record names (a run or prune cut short).
    fn prune_backups(&self, alias_id: i64) -> Result<()> {
        let alias = self.live_key(alias_id)?.0;
        let all = self.store.directory().backups(alias_id)?;
        for id in self.config.retention.prune(&all) {
            self.store.directory().remove_backup(alias_id, &id)?;
        }
        let kept: std::collections::HashSet<String> = self
            .store
            .directory()
            .backups(alias_id)?
            .into_iter()
            .map(|b| b.id)
            .collect();
        self.store.backup_target(&alias).remove_others(&kept)
    }

    /// The session's alias's backups, oldest first.
    pub fn backups(&self, session: SessionId) -> Result<Vec<crate::backup::BackupRecord>> {
        let alias_id = self.alias_of(session)?;
        self.store.directory().backups(alias_id)
    }

    /// One of the session's alias's backups, and where it is kept.
    fn backup_record(
        &self,
        alias_id: i64,
        id: &str,
    ) -> Result<(crate::backup::BackupRecord, crate::backup::Target)> {
        let alias = self.live_key(alias_id)?.0;
        let record = self
            .store
            .directory()
            .backups(alias_id)?
            .into_iter()
            .find(|b| b.id == id)
            .ok_or_else(|| Error::NotFound(format!("backup {id}")))?;
        Ok((record, self.store.backup_target(&alias)))
    }

    /// Up to `len` bytes of a backup's (encrypted) file from `offset`: a
    /// download, in pieces. Empty past the end.
    pub fn backup_bytes(
        &self,
        session: SessionId,
        id: &str,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>> {
        let alias_id = self.alias_of(session)?;
        let (record, target) = self.backup_record(alias_id, id)?;
        if offset >= record.size {
            return Ok(Vec::new());
        }
        target.read(id, offset, len)
    }

    /// Deletes one of the session's alias's backups, record then file.
    pub fn delete_backup(&self, session: SessionId, id: &str) -> Result<()> {
        let alias_id = self.alias_of(session)?;
        let _task = self.backup_task(alias_id)?;
        let (_, target) = self.backup_record(alias_id, id)?;
        self.store.directory().remove_backup(alias_id, id)?;
        target.delete(id)
    }

    /// Puts a backup back as the session's mailbox. The backup is checked
    /// first (its SHA-256, then that it opens with this mailbox's key and
    /// passes `integrity_check`); the mailbox as it is now is backed up and
    /// held (kept whatever the retention says) until
    /// [`confirm_restore`](Self::confirm_restore); the copy is prepared
    /// beside the live file ([`Mailbox::restored_over`]: new MODSEQs and
    /// UIDVALIDITYs) and replaces it in one rename while the mailbox is
    /// closed. Returns the held backup of the replaced mailbox.
    pub fn restore(&self, session: SessionId, id: &str) -> Result<crate::backup::BackupRecord> {
        let alias_id = self.alias_of(session)?;
        let _task = self.backup_task(alias_id)?;
        let (alias, key) = self.live_key(alias_id)?;
        let (record, target) = self.backup_record(alias_id, id)?;
        // Copied and checked beside the live file while the mailbox is
        // still open: it closes only for the steps that need it.
        let staged = self.store.mailbox_path(&alias).with_extension(STAGED);
        crate::backup::stage(&target, &record, &key, &staged)?;
        // Closed from here to the swap: nothing written in between can
        // miss both the held copy and the restored file.
        self.close_for_restore(alias_id, true);
        let restored = self.restore_closed(alias_id, &alias, &key, &staged);
        self.close_for_restore(alias_id, false);
        if restored.is_err() {
            let _ = std::fs::remove_file(&staged);
        }
        let (kept, modseq) = restored?;
        self.announce(alias_id, modseq);
        Ok(kept)
    }

    /// The restore's steps while the mailbox is closed: the held backup of
    /// the mailbox as it is, the staged (checked) copy prepared, the swap.
    fn restore_closed(
        &self,
        alias_id: i64,
        alias: &AliasRecord,
        key: &SecretKey,
        staged: &std::path::Path,
    ) -> Result<(crate::backup::BackupRecord, crate::types::ModSeq)> {
        let live = self.store.mailbox_path(alias);
        let options = self.store.config().mailbox.clone();
        let (marker, pinned, previous) = {
            let mb = Mailbox::open(&live, key, options.clone())?;
            let reader = crate::backup::open_reader(&live, key)?;
            let (marker, pinned) = crate::backup::checkpoint(&mb, reader)?;
            (marker, pinned, mb.highest_modseq()?)
        };
        let latest = self.store.directory().backups(alias_id)?.pop();
        let target = self.store.backup_target(alias);
        let kept = match crate::backup::run(&live, key, &target, &marker, latest.as_ref(), pinned)?
        {
            crate::backup::BackupOutcome::Stored(r) => {
                self.store.directory().add_backup(alias_id, &r)?;
                r
            }
            crate::backup::BackupOutcome::Unchanged(r) => r,
        };
        self.store
            .directory()
            .hold_backup(alias_id, Some(&kept.id))?;
        let kept = crate::backup::BackupRecord { held: true, ..kept };
        let mut mb = Mailbox::open(staged, key, options)?;
        let modseq = mb.restored_over(previous)?;
        drop(mb);
        // Closed cleanly, the staged copy has no WAL beside it.
        crate::backup::sync_file(staged)?;
        swap_in(staged, &live)?;
        Ok((kept, modseq))
    }

    /// Closes the alias's mailbox and keeps it closed (`true`), or lets
    /// it open again (`false`).
    fn close_for_restore(&self, alias_id: i64, closed: bool) {
        let thread = {
            let mut reg = self.registry();
            let Some(live) = reg.live.get_mut(&alias_id) else {
                return;
            };
            live.restoring = closed;
            live.worker.take().map(|w| w.thread)
        };
        // The dropped sender lets the thread finish what is queued, then
        // close the file (the last connection: its WAL goes with it).
        if let Some(t) = thread
            && t.thread().id() != std::thread::current().id()
        {
            let _ = t.join();
        }
    }

    /// Ends the hold on the mailbox as it was before a restore: the
    /// retention treats it like any version again.
    pub fn confirm_restore(&self, session: SessionId) -> Result<()> {
        let alias_id = self.alias_of(session)?;
        let _task = self.backup_task(alias_id)?;
        self.store.directory().hold_backup(alias_id, None)?;
        self.prune_backups(alias_id)
    }

    /// Takes the alias's maildrop lock for `session` (a POP3 session holds
    /// it from login to its end; RFC 1939 §8). `AlreadyExists` while
    /// another live session holds it; the session's logout releases it.
    pub fn lock_maildrop(&self, session: SessionId) -> Result<()> {
        let alias_id = self.alias_of(session)?;
        let mut reg = self.registry();
        let holder = reg.live.get(&alias_id).and_then(|l| l.maildrop);
        if let Some(other) = holder
            && other != session
            && reg.sessions.contains_key(&other)
        {
            return Err(Error::AlreadyExists("the maildrop is in use".into()));
        }
        let live = reg.live.get_mut(&alias_id).ok_or(Error::NoSession)?;
        live.maildrop = Some(session);
        Ok(())
    }

    /// Stops for good: no new mailbox thread starts, and every running one
    /// finishes the operations already queued, closes its file and is
    /// joined. Blocks until then.
    pub fn shutdown(&self) {
        let threads: Vec<JoinHandle<()>> = {
            let mut reg = self.registry();
            reg.closing = true;
            reg.live
                .values_mut()
                .filter_map(|l| l.worker.take())
                .map(|w| w.thread)
                .collect()
        };
        // The senders are dropped above; each thread drains and ends. A
        // thread cannot join itself (the last handle on the primary may be
        // dropped by a job running on a mailbox thread).
        let me = std::thread::current().id();
        for t in threads.into_iter().filter(|t| t.thread().id() != me) {
            let _ = t.join();
        }
    }

    /// Ends every session of an alias (it is being deleted): its keys leave
    /// memory and its mailbox thread finishes and closes.
    pub(crate) fn end_sessions_of(&self, alias_id: i64) {
        let thread = {
            let mut reg = self.registry();
            reg.sessions.retain(|_, s| s.alias_id != alias_id);
            reg.live
                .remove(&alias_id)
                .and_then(|l| l.worker)
                .map(|w| w.thread)
        };
        if let Some(t) = thread {
            let _ = t.join();
        }
    }

    /// Applies a new quota to an open mailbox at once (a closed one reads
    /// it from the directory when it opens).
    pub(crate) fn apply_quota(&self, alias_id: i64, quota: Option<u64>) {
        if self.registry().live.contains_key(&alias_id) {
            // A mailbox that closed meanwhile picks the quota up on opening.
            let _ = self.run_on(alias_id, move |mb| {
                mb.set_quota(quota);
                Ok(())
            });
        }
    }

    /// Ends every session whose token expired, so no key stays in memory
    /// past its token's life. Runs at every new session.
    pub fn reap_expired(&self) {
        let now = crate::time::now();
        let expired: Vec<SessionId> = self
            .registry()
            .sessions
            .iter()
            .filter(|(_, s)| s.expires_at.is_some_and(|t| t <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.logout(id);
        }
    }

    /// Number of live sessions.
    pub fn session_count(&self) -> usize {
        self.registry().sessions.len()
    }

    /// Number of mailboxes with an open file and thread.
    pub fn open_mailboxes(&self) -> usize {
        open_count(&self.registry())
    }

    /// Whether an alias has a live session anywhere.
    pub fn is_live(&self, alias_id: i64) -> bool {
        self.registry().live.contains_key(&alias_id)
    }

    /// Runs `f` on the session's mailbox, on that mailbox's thread, and
    /// returns its result.
    pub fn call<T: Send + 'static>(
        &self,
        session: SessionId,
        f: impl FnOnce(&mut Mailbox) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.run_on(self.alias_of(session)?, f)
    }

    /// The alias a live session belongs to.
    fn alias_of(&self, session: SessionId) -> Result<i64> {
        let gone = || Error::NoSession;
        let (alias_id, expires_at) = self
            .registry()
            .sessions
            .get(&session)
            .map(|s| (s.alias_id, s.expires_at))
            .ok_or_else(gone)?;
        if expires_at.is_some_and(|t| t <= crate::time::now()) {
            self.logout(session);
            return Err(gone());
        }
        Ok(alias_id)
    }

    /// Change events, for every alias (secondaries filter).
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<Changed> {
        self.events.subscribe()
    }

    /// Like [`Primary::call`] for an operation that writes: when it succeeds,
    /// a [`Changed`] event with the mailbox's new MODSEQ goes out.
    pub fn write<T: Send + 'static>(
        &self,
        session: SessionId,
        f: impl FnOnce(&mut Mailbox) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.write_on(self.alias_of(session)?, f)
    }

    fn write_on<T: Send + 'static>(
        &self,
        alias_id: i64,
        f: impl FnOnce(&mut Mailbox) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (out, modseq) = self.run_on(alias_id, move |mb| {
            let out = f(mb)?;
            Ok((out, mb.highest_modseq()?))
        })?;
        self.announce(alias_id, modseq);
        Ok(out)
    }

    /// Delivers mail to an alias: into its inbox at once if it has a live
    /// session, else sealed into its queue.
    pub fn deliver(
        &self,
        address: &AliasAddress,
        raw: Vec<u8>,
        options: AppendOptions,
    ) -> Result<Delivery> {
        let alias = self.store.alias(address)?;
        let raw = Arc::new(raw);
        if self.is_live(alias.id) {
            let message = Arc::clone(&raw);
            let stored = self.write_on(alias.id, move |mb| {
                let inbox = mb.folder_by_role(Role::Inbox)?.id;
                mb.durably(|mb| mb.append(inbox, &message, &options))
            });
            match stored {
                Ok(a) => return Ok(Delivery::Stored(a)),
                // The last session ended meanwhile: the queue takes it.
                Err(Error::NotFound(ref what)) if what.starts_with(NOT_LIVE) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Delivery::Queued(self.store.enqueue(address, &raw)?))
    }

    /// [`Primary::call`] for async callers: the job goes to the mailbox's
    /// thread and the answer comes back without holding a thread meanwhile.
    pub async fn call_async<T: Send + 'static>(
        self: &Arc<Self>,
        session: SessionId,
        f: impl FnOnce(&mut Mailbox) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let alias_id = self.alias_of(session)?;
        self.run_on_async(alias_id, f).await
    }

    /// [`Primary::write`] for async callers.
    pub async fn write_async<T: Send + 'static>(
        self: &Arc<Self>,
        session: SessionId,
        f: impl FnOnce(&mut Mailbox) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let alias_id = self.alias_of(session)?;
        let (out, modseq) = self
            .run_on_async(alias_id, move |mb| {
                let out = f(mb)?;
                Ok((out, mb.highest_modseq()?))
            })
            .await?;
        self.announce(alias_id, modseq);
        Ok(out)
    }

    /// Runs a job on a mailbox thread that is already open, without
    /// blocking the caller's thread. Opening a mailbox (file I/O, perhaps a
    /// migration) and waiting for room in a full queue happen on the
    /// blocking pool instead.
    async fn run_on_async<T: Send + 'static>(
        self: &Arc<Self>,
        alias_id: i64,
        f: impl FnOnce(&mut Mailbox) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let Some(jobs) = self.running_worker(alias_id)? else {
            let me = Arc::clone(self);
            return tokio::task::spawn_blocking(move || me.run_on(alias_id, f))
                .await
                .map_err(|_| Error::Corrupt("a mailbox task failed".into()))?;
        };
        let (reply_tx, reply_rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |mb: &mut Mailbox| {
            let _ = reply_tx.send(f(mb));
        });
        let stopped = || Error::Corrupt("the mailbox thread stopped during an operation".into());
        if let Err(e) = jobs.try_send(job) {
            // A full queue: wait for room off the async threads. A thread
            // that closed on its idle timeout just now: start a new one.
            let (job, closed) = match e {
                mpsc::TrySendError::Full(job) => (job, false),
                mpsc::TrySendError::Disconnected(job) => (job, true),
            };
            if closed {
                self.clear_worker(alias_id);
            }
            let me = Arc::clone(self);
            tokio::task::spawn_blocking(move || {
                let jobs = if closed {
                    me.worker_for(alias_id)?
                } else {
                    jobs
                };
                jobs.send(job).map_err(|_| stopped())
            })
            .await
            .map_err(|_| stopped())??;
        }
        reply_rx.await.map_err(|_| stopped())?
    }

    /// The job queue of a mailbox thread that is running now, if any.
    fn running_worker(&self, alias_id: i64) -> Result<Option<SyncSender<Job>>> {
        let mut reg = self.registry();
        if reg.closing {
            return Err(Error::Unavailable("the primary is shutting down".into()));
        }
        let live = reg
            .live
            .get_mut(&alias_id)
            .ok_or_else(|| Error::NotFound(NOT_LIVE.into()))?;
        if live.restoring {
            return Err(Error::Unavailable(RESTORING.into()));
        }
        live.last_used = Instant::now();
        Ok(live
            .worker
            .as_ref()
            .filter(|w| !w.thread.is_finished())
            .map(|w| w.jobs.clone()))
    }

    /// Tells listeners that a mailbox changed.
    fn announce(&self, alias_id: i64, modseq: crate::types::ModSeq) {
        let address = self
            .registry()
            .live
            .get(&alias_id)
            .map(|l| l.alias.address.clone());
        if let Some(address) = address {
            // Nobody listening is fine.
            let _ = self.events.send(Changed { address, modseq });
        }
    }

    fn run_on<T: Send + 'static>(
        &self,
        alias_id: i64,
        f: impl FnOnce(&mut Mailbox) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        let mut job: Job = Box::new(move |mb: &mut Mailbox| {
            // The caller may have gone; then nobody needs the answer.
            let _ = reply_tx.send(f(mb));
        });
        // At most two tries: the second after replacing a thread that had
        // closed on its idle timeout.
        for _ in 0..2 {
            let jobs = self.worker_for(alias_id)?;
            match jobs.send(job) {
                Ok(()) => {
                    return reply_rx.recv().map_err(|_| {
                        Error::Corrupt("the mailbox thread stopped during an operation".into())
                    })?;
                }
                Err(mpsc::SendError(back)) => {
                    job = back;
                    self.clear_worker(alias_id);
                }
            }
        }
        Err(Error::Corrupt(
            "the mailbox thread cannot be started".into(),
        ))
    }

    fn clear_worker(&self, alias_id: i64) {
        if let Some(live) = self.registry().live.get_mut(&alias_id) {
            live.worker = None;
        }
    }

    /// The job queue of an alias's mailbox thread, starting one if needed
    /// (and closing the least recently used mailbox past the cap).
    fn worker_for(&self, alias_id: i64) -> Result<SyncSender<Job>> {
        let mut reg = self.registry();
        if reg.closing {
            return Err(Error::Unavailable("the primary is shutting down".into()));
        }
        let open = open_count(&reg);
        let live = reg
            .live
            .get_mut(&alias_id)
            .ok_or_else(|| Error::NotFound(NOT_LIVE.into()))?;
        if live.restoring {
            return Err(Error::Unavailable(RESTORING.into()));
        }
        live.last_used = Instant::now();
        if let Some(w) = &live.worker
            && !w.thread.is_finished()
        {
            return Ok(w.jobs.clone());
        }
        let path = self.store.mailbox_path(&live.alias);
        let key = live.keys.data_key.clone();
        let mut options = self.store.config().mailbox.clone();
        options.quota = live.alias.quota;
        let (jobs, rx) = mpsc::sync_channel::<Job>(self.config.queue_depth);
        let mailbox = Mailbox::open(&path, &key, options)?;
        let idle = self.config.idle_timeout;
        let thread = std::thread::Builder::new()
            .name(format!("mailbox-{}", live.alias.mailbox_id))
            .spawn(move || mailbox_thread(mailbox, rx, idle))?;
        live.worker = Some(Worker {
            jobs: jobs.clone(),
            thread,
        });
        if open >= self.config.max_open {
            let victim = reg
                .live
                .iter()
                .filter(|(id, l)| **id != alias_id && l.worker.is_some())
                .min_by_key(|(_, l)| l.last_used)
                .map(|(id, _)| *id);
            if let Some(v) = victim
                && let Some(l) = reg.live.get_mut(&v)
            {
                // Dropping the sender lets the thread finish what is queued,
                // then close the file.
                l.worker = None;
            }
        }
        Ok(jobs)
    }
}

/// The alias's claim on its one backup task; released when dropped.
struct BackupTask<'a> {
    primary: &'a Primary,
    alias_id: i64,
    /// The locked file (the lock goes with it).
    _file: Option<std::fs::File>,
}

impl Drop for BackupTask<'_> {
    fn drop(&mut self) {
        let mut running = self
            .primary
            .backing_up
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        running.remove(&self.alias_id);
    }
}

/// Replaces the closed mailbox file `live` with `staged` in one rename. A
/// WAL left beside the live file would be read as the new file's: the
/// mailbox must have closed cleanly (no WAL, or an empty one).
///
/// The file replaced keeps a second name, [`REPLACED`], through the
/// rename, so that the rename only unlinks a name; a thread of its own
/// then unlinks the file. Freeing a gigabyte's blocks takes ext4 (with
/// `discard`) a quarter of a second, which the restore need not wait
/// for. One left by a crash goes at the next restore or with the alias.
fn swap_in(staged: &std::path::Path, live: &std::path::Path) -> Result<()> {
    for suffix in ["-wal", "-shm"] {
        let mut side = live.as_os_str().to_owned();
        side.push(suffix);
        let side = std::path::PathBuf::from(side);
        match std::fs::metadata(&side) {
            Ok(m) if suffix == "-wal" && m.len() > 0 => {
                let _ = std::fs::remove_file(staged);
                return Err(Error::Unavailable(
                    "the mailbox is still open elsewhere (a command-line run?); nothing was restored"
                        .into(),
                ));
            }
            Ok(_) => std::fs::remove_file(&side)?,
            Err(_) => {}
        }
    }
    let replaced = live.with_extension(REPLACED);
    crate::backup::remove_if_there(&replaced)?;
    let kept = match std::fs::hard_link(live, &replaced) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(e.into()),
    };
    std::fs::rename(staged, live)?;
    if let Some(dir) = live.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    if kept {
        std::thread::spawn(move || {
            if let Err(e) = crate::backup::remove_if_there(&replaced) {
                tracing::warn!(path = %replaced.display(), error = %e, "removing the file a restore replaced failed");
            }
        });
    }
    Ok(())
}

/// The extension of a restore's staged copy beside the mailbox file.
pub const STAGED: &str = "restoring";

/// The extension of the name a restore gives the mailbox file it
/// replaces, until that file is unlinked ([`swap_in`]).
pub const REPLACED: &str = "replaced";

/// Mailboxes whose thread is running.
fn open_count(reg: &Registry) -> usize {
    reg.live
        .values()
        .filter(|l| l.worker.as_ref().is_some_and(|w| !w.thread.is_finished()))
        .count()
}

/// How long a mailbox with an index backlog waits for quiet before it
/// indexes all of it.
const INDEX_QUIET: Duration = Duration::from_millis(200);

/// A mailbox never quiet (steady delivery, a client polling in a loop)
/// indexes its backlog in steps once it is this large ...
pub const INDEX_BACKLOG: usize = 32;

/// ... or all of it (then fewer than that) once its oldest entry has
/// waited this long ...
const INDEX_LATEST: Duration = Duration::from_secs(2);

/// ... a step of this many emails after each job: a few milliseconds, so
/// the writes queued behind it hardly wait, while each index segment still
/// holds several messages.
pub const INDEX_STEP: usize = 8;

/// One mailbox's thread: runs jobs in order; indexes new mail for search
/// when the mailbox is quiet, or in steps between jobs when it is busy;
/// closes the file after the idle timeout or when every sender is gone.
fn mailbox_thread(mut mailbox: Mailbox, jobs: Receiver<Job>, idle: Duration) {
    // Since when the backlog has been waiting.
    let mut since: Option<Instant> = None;
    loop {
        if mailbox.index_backlog() == 0 {
            since = None;
        } else if since.is_none() {
            since = Some(Instant::now());
        }
        let wait = if since.is_some() {
            INDEX_QUIET.min(idle)
        } else {
            idle
        };
        match jobs.recv_timeout(wait) {
            Ok(job) => {
                job(&mut mailbox);
                if since.is_some_and(|t| t.elapsed() >= INDEX_LATEST) {
                    // A few stragglers (fewer than a backlog): all of them.
                    index_backlog(&mailbox, INDEX_BACKLOG);
                    since = None;
                } else if mailbox.index_backlog() >= INDEX_BACKLOG {
                    index_backlog(&mailbox, INDEX_STEP);
                    // The oldest waiting now came later.
                    since = None;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) if since.is_some() => {
                index_backlog(&mailbox, usize::MAX);
                // After a failure, the next try waits its turn again.
                since = None;
            }
            Err(mpsc::RecvTimeoutError::Timeout | mpsc::RecvTimeoutError::Disconnected) => {
                return;
            }
        }
    }
}

/// Indexes up to `limit` emails of a mailbox's backlog; a failure is
/// logged and tried again later (searches index the backlog themselves,
/// and report their own error).
fn index_backlog(mailbox: &Mailbox, limit: usize) {
    if let Err(e) = mailbox.flush_index_some(limit) {
        tracing::warn!(path = %mailbox.path().display(), error = %e, "indexing new mail for search failed");
    }
}
