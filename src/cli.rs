//! Command-line parsing and the administration commands.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use cofre_storage::import;
use cofre_storage::mailbox::AppendOptions;
use cofre_storage::{AliasAddress, FolderName, Password, Role, SecretKey, Store, StoreConfig};
use indicatif::{ProgressBar, ProgressStyle};

/// Cofre: a private email backend where every mailbox opens only with its
/// alias's password.
#[derive(Debug, Parser)]
#[command(name = "cofre", version, about)]
struct Cli {
    /// The data directory [default: ./data].
    #[arg(long, global = true, env = "COFRE_DATA")]
    data: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create, rotate, list and delete aliases.
    #[command(subcommand)]
    Alias(AliasCommand),
    /// Import mail into a mailbox, or export it.
    #[command(subcommand)]
    Mailbox(MailboxCommand),
    /// Hosted domains: their DKIM keys.
    #[command(subcommand)]
    Domain(DomainCommand),
    /// Back a mailbox up now, list its backups, or copy one out.
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Serves fixed DNS records on loopback, for end-to-end tests (internal).
    #[command(hide = true)]
    FixtureDns {
        /// Where to listen (UDP and TCP).
        #[arg(long)]
        listen: String,
        /// `NAME=TEXT` TXT records; repeat for several.
        #[arg(long)]
        txt: Vec<String>,
    },
    /// Measure the storage engine, link, API or IMAP bridge on this machine.
    Bench(crate::bench::BenchArgs),
    /// Holds IMAP connections in IDLE for `bench imap` (internal).
    #[command(hide = true)]
    BenchHoldIdle {
        /// The IMAP listener.
        #[arg(long)]
        addr: String,
        /// How many connections.
        #[arg(long)]
        count: usize,
    },
    /// Run everything in one process: the primary and every service, linked
    /// in-process. Creates the data directory on first start.
    Serve(crate::config::ServerArgs),
    /// Run the primary alone: own the data directory and serve secondaries
    /// over the link. Needs COFRE_CLUSTER_SECRET.
    Primary(crate::config::ServerArgs),
    /// Run the services alone, linked to one or more primaries
    /// (--primary wss://HOST:PORT). Needs COFRE_CLUSTER_SECRET.
    Gateway(crate::config::ServerArgs),
}

#[derive(Debug, Subcommand)]
enum AliasCommand {
    /// Create an alias and print its generated password (shown only once).
    Create {
        /// The address, e.g. hello@example.com.
        address: String,
        /// Quota in bytes.
        #[arg(long)]
        quota: Option<u64>,
        /// Print {"address": ..., "password": ...} instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Replace an alias's password (asks for the current one) and print the
    /// new one. The mailbox is not rewritten.
    Password {
        /// The address.
        address: String,
        /// Print {"address": ..., "password": ...} instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Delete an alias with its mailbox, queue and backups, for good.
    Delete {
        /// The address.
        address: String,
    },
    /// List aliases.
    List,
}

#[derive(Debug, Subcommand)]
enum DomainCommand {
    /// Show the DKIM key of a hosted domain as the DNS record to publish,
    /// making the key on first use. Mail our aliases send is signed with it.
    Dkim {
        /// The domain, e.g. example.com.
        domain: String,
        /// Replace the key with a new one under a new selector (publish the
        /// new record before mail goes out signed with it).
        #[arg(long)]
        rotate: bool,
        /// The selector for a new key [default: cofre + today's date].
        #[arg(long)]
        selector: Option<String>,
        /// Print {"domain", "selector", "name", "value"} instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum MailboxCommand {
    /// Import mbox files, Maildir folders or .eml files.
    Import(ImportArgs),
    /// Write a portable copy that `sqlcipher` opens with the password, or
    /// (`--format mbox`) a folder of mbox files, one per mail folder.
    Export {
        /// The address.
        address: String,
        /// Where to write it (a file; a folder for mbox).
        #[arg(long)]
        out: PathBuf,
        /// `sqlcipher` (default) or `mbox`.
        #[arg(long, value_enum, default_value_t = ExportFormat::Sqlcipher)]
        format: ExportFormat,
    },
}

/// What `mailbox export` writes.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ExportFormat {
    /// One SQLCipher file the `sqlcipher` tool opens with the password.
    Sqlcipher,
    /// One mboxrd file per folder (`Archive/2024` → `Archive.2024.mbox`).
    Mbox,
}

#[derive(Debug, Subcommand)]
enum BackupCommand {
    /// Take a backup of a mailbox now (asks for its password: only it
    /// opens the key), then apply the retention.
    Run {
        /// The address.
        address: String,
        /// The server's configuration file, for its `[backups]` retention.
        #[arg(long, env = "COFRE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// List a mailbox's backups, oldest first.
    List {
        /// The address.
        address: String,
    },
    /// Put a backup back as the mailbox (with the server stopped; while it
    /// runs, use `POST /v1/backups/{id}/restore`). The mailbox as it was
    /// is kept as a held backup until `confirm-restore`.
    Restore {
        /// The address.
        address: String,
        /// The backup's id.
        id: String,
    },
    /// Confirm the last restore: the replaced mailbox's backup is no
    /// longer held.
    ConfirmRestore {
        /// The address.
        address: String,
    },
    /// Copy a backup's encrypted file out (it opens with the mailbox key).
    Download {
        /// The address.
        address: String,
        /// The backup's id.
        id: String,
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Args)]
struct ImportArgs {
    /// The address.
    address: String,
    /// mbox files, Maildir folders or .eml files.
    #[arg(required_unless_present = "imap")]
    sources: Vec<PathBuf>,
    /// Folder to import into (created if missing). Default: the inbox.
    /// With `--imap`, the folder the source's folders go under (default:
    /// each keeps its name; INBOX goes to the inbox).
    #[arg(long)]
    folder: Option<String>,
    /// Every folder of another IMAP server: `imaps://user@host[:port]`, or
    /// `imap://…` with STARTTLS. Its password: `COFRE_IMAP_PASSWORD`, or
    /// a prompt.
    #[arg(long, conflicts_with = "sources")]
    imap: Option<String>,
    /// PEM certificates to trust for `--imap` (default: the system's).
    #[arg(long, requires = "imap")]
    ca: Option<PathBuf>,
}

/// Parses the command line and runs the command.
pub fn run() -> Result<()> {
    let cli = Cli::parse();
    let flag = cli.data.as_deref();
    let data = flag.unwrap_or(Path::new("./data"));
    match cli.command {
        Command::Alias(cmd) => alias(data, cmd),
        Command::Mailbox(cmd) => mailbox(data, cmd),
        Command::Domain(cmd) => domain(data, cmd),
        Command::Backup(cmd) => backup(data, cmd),
        Command::FixtureDns { listen, txt } => fixture_dns(&listen, &txt),
        Command::Bench(args) => crate::bench::run(args),
        Command::BenchHoldIdle { addr, count } => crate::bench_imap::hold_idle(&addr, count),
        Command::Serve(args) => crate::serve::run(crate::serve::Role::Serve, &args, flag),
        Command::Primary(args) => crate::serve::run(crate::serve::Role::Primary, &args, flag),
        Command::Gateway(args) => crate::serve::run(crate::serve::Role::Gateway, &args, flag),
    }
}

fn domain(data: &Path, cmd: DomainCommand) -> Result<()> {
    let DomainCommand::Dkim {
        domain,
        rotate,
        selector,
        json,
    } = cmd;
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let store = open_store(data)?;
    if !store.directory().has_domain(&domain)? {
        bail!("{domain} is not a hosted domain (add it first)");
    }
    let secret = match std::env::var("COFRE_CLUSTER_SECRET") {
        Ok(s) => zeroize::Zeroizing::new(s.into_bytes()),
        // stdout carries the record (or JSON): the note goes to stderr.
        Err(_) => (*crate::serve::local_cluster_secret(data, |m| eprintln!("{m}"))?).clone(),
    };
    let key = cofre_storage::keys::derive_subkey(&secret, "outbound-queue");
    let mut queue = cofre_storage::outbound::Outbound::open(&data.join("outbound.sqlite"), &key)
        .context("opening data/outbound.sqlite (is COFRE_CLUSTER_SECRET the server's?)")?;
    let current = queue.dkim_key(&domain)?;
    let key = match current {
        Some(k) if !rotate => k,
        current => {
            let today: String = cofre_storage::time::iso(cofre_storage::time::now())
                .chars()
                .take(10)
                .filter(char::is_ascii_digit)
                .collect();
            let selector = selector.unwrap_or_else(|| format!("cofre{today}"));
            if current.as_ref().is_some_and(|c| c.selector == selector) {
                bail!(
                    "the key in use already has selector {selector}: give another with --selector"
                );
            }
            let k = cofre_mx::auth::generate_dkim_key(&domain, &selector)
                .map_err(|e| anyhow::anyhow!("making the key: {e}"))?;
            queue.put_dkim_key(&k)?;
            k
        }
    };
    let (name, value) = cofre_mx::auth::dkim_record(&key);
    if json {
        println!(
            "{}",
            serde_json::json!({"domain": key.domain, "selector": key.selector, "name": name, "value": value})
        );
    } else {
        println!(
            "DKIM key of {} (RSA {}, selector {}, made {}).",
            key.domain,
            cofre_mx::auth::DKIM_KEY_BITS,
            key.selector,
            cofre_storage::time::iso(key.created_at)
        );
        println!(
            "Publish this TXT record, then mail from {} goes out signed:",
            key.domain
        );
        let quoted: Vec<String> = value
            .as_bytes()
            .chunks(255)
            .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
            .collect();
        println!("{name}. 3600 IN TXT ( {} )", quoted.join(" "));
    }
    Ok(())
}

/// Serves `NAME=TEXT` TXT records until killed.
fn fixture_dns(listen: &str, txt: &[String]) -> Result<()> {
    let mut records = Vec::new();
    for t in txt {
        let (name, text) = t.split_once('=').context("--txt takes NAME=TEXT")?;
        records.push((
            name.to_string(),
            cofre_mx::dns::FixtureRecord::Txt(text.to_string()),
        ));
    }
    let addr: std::net::SocketAddr = listen.parse().context("--listen takes IP:PORT")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let dns = cofre_mx::dns::FixtureDns::start_on(addr, records).await?;
        println!("dns listening on {}", dns.addr);
        std::future::pending::<()>().await;
        Ok(())
    })
}

/// Store settings from the environment: `COFRE_MASTER_KEY` (64 hex digits)
/// encrypts the directory too; the backup store of `COFRE_CONFIG`'s
/// `[backups.s3]`, if any (deleting an alias empties it too).
pub(crate) fn open_store(data: &Path) -> Result<Store> {
    let (_, backup_store) = crate::config::backup_settings(None).map_err(|e| anyhow::anyhow!(e))?;
    open_store_with(data, backup_store)
}

/// [`open_store`] with the backup store given.
pub(crate) fn open_store_with(
    data: &Path,
    backup_store: Option<std::sync::Arc<cofre_storage::s3::Bucket>>,
) -> Result<Store> {
    let mut config = StoreConfig {
        backup_store,
        ..StoreConfig::default()
    };
    if let Ok(hex) = std::env::var("COFRE_MASTER_KEY") {
        config.master_key =
            Some(SecretKey::from_hex(&hex).context("COFRE_MASTER_KEY must be 64 hex digits")?);
    }
    Store::open(data, config).with_context(|| format!("opening data directory {}", data.display()))
}

/// Takes the data directory's lock (`cofre.lock`, created if missing) for
/// as long as the returned file lives: a serving primary holds it, and so
/// does a command that must not run beside one. Refused at once, with a
/// clear error, while another process holds it.
pub(crate) fn lock_data(data: &Path) -> Result<std::fs::File> {
    std::fs::create_dir_all(data)
        .with_context(|| format!("creating data directory {}", data.display()))?;
    let path = data.join("cofre.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "a cofre server is running on {} (it holds {}); stop it first",
            data.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// The alias password: `COFRE_PASSWORD`, else a prompt on the terminal.
/// Never from argv, where other users of the machine could read it.
fn read_password(address: &AliasAddress) -> Result<Password> {
    if let Ok(p) = std::env::var("COFRE_PASSWORD") {
        return Ok(Password::new(p));
    }
    if !std::io::stdin().is_terminal() {
        bail!("no password: set COFRE_PASSWORD or run on a terminal");
    }
    let p = rpassword::prompt_password(format!("Password for {address}: "))?;
    Ok(Password::new(p))
}

fn address(s: &str) -> Result<AliasAddress> {
    Ok(AliasAddress::try_from(s)?)
}

fn print_password(address: &AliasAddress, password: &Password, json: bool, what: &str) {
    if json {
        println!(
            "{}",
            serde_json::json!({"address": address.as_str(), "password": password.expose()})
        );
    } else {
        println!("{what} {address}. This password is shown once and cannot be recovered:");
        println!("{}", password.expose());
    }
}

fn alias(data: &Path, cmd: AliasCommand) -> Result<()> {
    let store = open_store(data)?;
    match cmd {
        AliasCommand::Create {
            address: a,
            quota,
            json,
        } => {
            let a = address(&a)?;
            let (_, password) = store.create_alias(&a, quota)?;
            print_password(&a, &password, json, "Created");
        }
        AliasCommand::Password { address: a, json } => {
            let a = address(&a)?;
            let old = read_password(&a)?;
            let new = store.change_password(&a, &old)?;
            print_password(&a, &new, json, "New password for");
        }
        AliasCommand::Delete { address: a } => {
            let a = address(&a)?;
            store.delete_alias(&a)?;
            println!("Deleted {a} with its mailbox, queue and backups.");
        }
        AliasCommand::List => {
            for alias in store.directory().aliases()? {
                let quota = alias
                    .quota
                    .map(|q| format!("{q} bytes"))
                    .unwrap_or_else(|| "no quota".into());
                println!("{}\t{}\t{quota}", alias.address, alias.created_at);
            }
        }
    }
    Ok(())
}

fn mailbox(data: &Path, cmd: MailboxCommand) -> Result<()> {
    let store = open_store(data)?;
    match cmd {
        MailboxCommand::Import(args) => import_mail(&store, args),
        MailboxCommand::Export {
            address: a,
            out,
            format: ExportFormat::Mbox,
        } => {
            let a = address(&a)?;
            let password = read_password(&a)?;
            let unlocked = store.unlock(&a, &password)?;
            let mailbox = store.open_mailbox(&unlocked)?;
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let mut total = 0;
            for folder in mailbox.folders()? {
                let file = out.join(format!("{}.mbox", folder.name.replace('/', ".")));
                let mut w = std::io::BufWriter::new(
                    std::fs::File::create(&file)
                        .with_context(|| format!("creating {}", file.display()))?,
                );
                total += cofre_storage::export::mbox(&mailbox, folder.id, &mut w)?;
            }
            println!(
                "Exported {total} messages of {a} to {} (one mbox per folder).",
                out.display()
            );
            Ok(())
        }
        MailboxCommand::Export {
            address: a, out, ..
        } => {
            let a = address(&a)?;
            let password = read_password(&a)?;
            let unlocked = store.unlock(&a, &password)?;
            store.export(&unlocked, &password, &out)?;
            println!(
                "Exported {a} to {}. Open it with: sqlcipher {} then PRAGMA key = '<password>';",
                out.display(),
                out.display()
            );
            Ok(())
        }
    }
}

fn backup(data: &Path, cmd: BackupCommand) -> Result<()> {
    use cofre_storage::backup::BackupOutcome;
    use cofre_storage::primary::{Primary, PrimaryConfig};
    let (a, config) = match &cmd {
        BackupCommand::Run { address, config } => (address, config.as_deref()),
        BackupCommand::List { address }
        | BackupCommand::Download { address, .. }
        | BackupCommand::Restore { address, .. }
        | BackupCommand::ConfirmRestore { address } => (address, None),
    };
    // A restore swaps the mailbox file: never under a running server.
    let _lock = match &cmd {
        BackupCommand::Restore { .. } => Some(lock_data(data)?),
        _ => None,
    };
    let a = address(a)?;
    let (retention, backup_store) =
        crate::config::backup_settings(config).map_err(|e| anyhow::anyhow!(e))?;
    let store = std::sync::Arc::new(open_store_with(data, backup_store)?);
    let primary = Primary::new(
        store,
        PrimaryConfig {
            retention,
            ..PrimaryConfig::default()
        },
    );
    let password = read_password(&a)?;
    let session = primary.login(&a, &password)?;
    let done = match cmd {
        BackupCommand::Run { .. } => primary.backup(session).map(|outcome| match outcome {
            BackupOutcome::Stored(b) => {
                println!(
                    "Stored backup {} ({} bytes, SHA-256 {}).",
                    b.id, b.size, b.sha256
                )
            }
            BackupOutcome::Unchanged(b) => {
                println!("Unchanged since backup {}: nothing stored.", b.id)
            }
        }),
        BackupCommand::List { .. } => primary.backups(session).map(|list| {
            for b in list {
                let held = if b.held { "\theld" } else { "" };
                println!(
                    "{}\t{}\t{}\t{}{held}",
                    b.id,
                    cofre_storage::time::iso(b.created_at),
                    b.size,
                    b.sha256
                );
            }
        }),
        BackupCommand::Download { id, out, .. } => download_backup(&primary, session, &id, &out),
        BackupCommand::Restore { id, .. } => primary.restore(session, &id).map(|held| {
            println!(
                "Restored backup {id}. The mailbox as it was is backup {} (held until: cofre backup confirm-restore).",
                held.id
            )
        }),
        BackupCommand::ConfirmRestore { .. } => primary
            .confirm_restore(session)
            .map(|()| println!("Restore confirmed.")),
    };
    primary.logout(session);
    Ok(done?)
}

/// Writes a backup's file to `out` in pieces, then checks its SHA-256.
fn download_backup(
    primary: &cofre_storage::primary::Primary,
    session: cofre_storage::primary::SessionId,
    id: &str,
    out: &Path,
) -> cofre_storage::Result<()> {
    use std::io::Write;
    let record = primary
        .backups(session)?
        .into_iter()
        .find(|b| b.id == id)
        .ok_or_else(|| cofre_storage::Error::NotFound(format!("backup {id}")))?;
    let mut f = std::fs::File::create(out)?;
    let mut offset = 0u64;
    loop {
        let piece = primary.backup_bytes(session, id, offset, 4 << 20)?;
        if piece.is_empty() {
            break;
        }
        f.write_all(&piece)?;
        offset += piece.len() as u64;
    }
    f.sync_all()?;
    if cofre_storage::backup::sha256_file(out)? != record.sha256 {
        return Err(cofre_storage::Error::Corrupt(format!(
            "backup {id}: the copy does not match its SHA-256"
        )));
    }
    println!(
        "Wrote backup {id} to {} ({offset} bytes, SHA-256 checked).",
        out.display()
    );
    Ok(())
}

/// A folder by name, created if missing.
fn folder_named(
    mailbox: &mut cofre_storage::Mailbox,
    name: &str,
) -> Result<cofre_storage::mailbox::Folder> {
    let name = FolderName::try_from(name)?;
    match mailbox.folder_by_name(&name) {
        Ok(f) => Ok(f),
        Err(cofre_storage::Error::NotFound(_)) => Ok(mailbox.create_folder(&name)?),
        Err(e) => Err(e.into()),
    }
}

/// Stores a batch in one transaction; if one message in it is refused
/// (too large, empty), the batch goes again one by one and the refused
/// are reported. Returns (stored, refused).
fn append_items(
    mailbox: &mut cofre_storage::Mailbox,
    folder: cofre_storage::FolderId,
    batch: &[import::ImportItem],
    bar: &ProgressBar,
) -> Result<(u64, u64)> {
    let msgs: Vec<(&[u8], AppendOptions)> = batch
        .iter()
        .map(|i| {
            (
                i.raw.as_slice(),
                AppendOptions {
                    keywords: i.keywords.clone(),
                    received_at: i.received_at,
                    delivery_ref: None,
                },
            )
        })
        .collect();
    let (mut stored, mut refused) = (0, 0);
    match mailbox.append_batch(folder, &msgs) {
        Ok(done) => stored += done.len() as u64,
        Err(_) => {
            for (raw, opts) in &msgs {
                match mailbox.append(folder, raw, opts) {
                    Ok(_) => stored += 1,
                    Err(e) if e.is_user_error() => {
                        refused += 1;
                        bar.suspend(|| eprintln!("skipped a message: {e}"));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    bar.inc(batch.len() as u64);
    Ok((stored, refused))
}

/// A progress bar on the terminal (hidden when stderr is not one).
fn progress(len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} messages {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar
}

/// `mailbox import --imap`: every selectable folder of the source, its
/// messages stored with their flags and dates, folder by folder.
fn import_imap(
    mailbox: &mut cofre_storage::Mailbox,
    url: &str,
    ca: Option<&Path>,
    under: Option<&str>,
) -> Result<()> {
    use crate::imap_import::{Client, Source};
    let source = Source::parse(url)?;
    let tls = match ca {
        Some(ca) => cofre_storage::tls::client_config(ca)?,
        None => cofre_mx::webhook::verified_tls(),
    };
    let password = match std::env::var("COFRE_IMAP_PASSWORD") {
        Ok(p) => p,
        Err(_) if std::io::stdin().is_terminal() => {
            rpassword::prompt_password(format!("Password for {url}: "))?
        }
        Err(_) => bail!("no password for {url}: set COFRE_IMAP_PASSWORD or run on a terminal"),
    };
    let mut client = Client::connect(&source, tls, &password)?;
    let (mut stored, mut refused, mut folders) = (0u64, 0u64, 0usize);
    for (f, wire) in client.folders()? {
        let uids = client.uids(&wire)?;
        let target = match (under, f.inbox) {
            (None, true) => mailbox.folder_by_role(Role::Inbox)?,
            (None, false) => folder_named(mailbox, &f.name)?,
            (Some(u), _) => folder_named(mailbox, &format!("{u}/{}", f.name))?,
        };
        let bar = progress(uids.len() as u64);
        bar.set_message(f.name.clone());
        for chunk in uids.chunks(crate::imap_import::FETCH_BATCH) {
            let items = client.fetch(chunk)?;
            let (s, r) = append_items(mailbox, target.id, &items, &bar)?;
            stored += s;
            refused += r;
        }
        bar.finish_and_clear();
        folders += 1;
    }
    client.logout();
    println!("Imported {stored} messages from {folders} folders of {url} ({refused} refused).");
    Ok(())
}

/// Messages per import transaction: large batches make far fewer, larger
/// index segments (and so far less merging).
const IMPORT_BATCH: usize = 500;

fn import_mail(store: &Store, args: ImportArgs) -> Result<()> {
    let a = address(&args.address)?;
    let password = read_password(&a)?;
    let unlocked = store.unlock(&a, &password)?;
    let mut mailbox = store.open_mailbox(&unlocked)?;
    if let Some(url) = &args.imap {
        return import_imap(
            &mut mailbox,
            url,
            args.ca.as_deref(),
            args.folder.as_deref(),
        );
    }
    let folder = match &args.folder {
        None => mailbox.folder_by_role(Role::Inbox)?,
        Some(name) => folder_named(&mut mailbox, name)?,
    };
    let mut total = 0u64;
    for s in &args.sources {
        total += import::count(s).with_context(|| format!("reading {}", s.display()))?;
    }
    let bar = progress(total);
    let (mut stored, mut refused) = (0u64, 0u64);
    let mut batch: Vec<import::ImportItem> = Vec::with_capacity(IMPORT_BATCH);
    for s in &args.sources {
        for item in import::read(s)? {
            batch.push(item.with_context(|| format!("reading {}", s.display()))?);
            if batch.len() == IMPORT_BATCH {
                let (s, r) = append_items(&mut mailbox, folder.id, &batch, &bar)?;
                (stored, refused) = (stored + s, refused + r);
                batch.clear();
            }
        }
    }
    let (s, r) = append_items(&mut mailbox, folder.id, &batch, &bar)?;
    (stored, refused) = (stored + s, refused + r);
    bar.finish_and_clear();
    println!(
        "Imported {stored} messages into {} ({refused} refused).",
        folder.name
    );
    Ok(())
}
