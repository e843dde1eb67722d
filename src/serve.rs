//! The server roles: `serve` (everything in one process, the embedded
//! default), `primary` (owns the data directory, serves the link) and
//! `gateway` (the secondaries, connected to one or more primaries).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use cofre_api::{ApiConfig, AppState};
use cofre_storage::Password;
use cofre_storage::link::route::{Link, Router};
use cofre_storage::link::ws::{ClientError, LinkClient, LinkConfig};
use cofre_storage::primary::Primary;
use cofre_storage::tls::{self, CertFiles};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::rustls;
use zeroize::Zeroizing;

use crate::config::{ServerArgs, Settings};

/// Prints a line for the operator on stdout. A closed stdout (a daemon
/// whose terminal went away) must not stop the server, so errors are ignored.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, $($arg)*);
        let _ = out.flush();
    }};
}

/// Which parts this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Primary and every secondary, linked in-process.
    Serve,
    /// The primary alone.
    Primary,
    /// The secondaries alone, linked to remote primaries.
    Gateway,
}

/// Resolves the configuration (every error at once), starts logging, and
/// runs the role until Ctrl-C or SIGTERM.
pub fn run(role: Role, args: &ServerArgs, data_flag: Option<&Path>) -> Result<()> {
    let settings = crate::config::resolve(args, data_flag).map_err(|errors| {
        anyhow!(
            "the configuration has {} problem{}:\n  {}",
            errors.len(),
            if errors.len() == 1 { "" } else { "s" },
            errors.join("\n  ")
        )
    })?;
    init_logging(&settings);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("cofre")
        .build()?;
    runtime.block_on(run_role(role, settings))
}

fn init_logging(s: &Settings) {
    // `resolve` checked the filter already.
    let filter = tracing_subscriber::EnvFilter::try_new(&s.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    // Another subscriber already set (tests in one process) is fine.
    let _ = if s.log_json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// The cluster secret: configured, or for `serve` generated once into the
/// data directory.
fn cluster_secret(s: &Settings, role: Role) -> Result<Arc<Zeroizing<Vec<u8>>>> {
    if let Some(secret) = &s.cluster_secret {
        return Ok(Arc::new(secret.clone()));
    }
    if role != Role::Serve {
        bail!(
            "no cluster secret: set COFRE_CLUSTER_SECRET (or cluster_secret in the config \
             file) to the same value of at least 16 characters on every node"
        );
    }
    local_cluster_secret(&s.data, |m| say!("{m}"))
}

/// The single-node cluster secret in `data/cluster.secret`, made on first
/// use (by `serve`, or by a command that needs it before the first start);
/// `announce` tells the operator where it was made.
pub(crate) fn local_cluster_secret(
    data: &Path,
    announce: impl Fn(&str),
) -> Result<Arc<Zeroizing<Vec<u8>>>> {
    let path = data.join("cluster.secret");
    if let Ok(text) = std::fs::read_to_string(&path) {
        return Ok(Arc::new(Zeroizing::new(text.trim().as_bytes().to_vec())));
    }
    let secret = Password::generate();
    write_private(&path, secret.expose().as_bytes())?;
    announce(&format!(
        "cluster secret generated in {} (gateways need it as COFRE_CLUSTER_SECRET)",
        path.display()
    ));
    Ok(Arc::new(Zeroizing::new(
        secret.expose().as_bytes().to_vec(),
    )))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// The certificate every TLS listener uses: configured, or self-signed into
/// `data/tls/` on first start.
fn certificate(s: &Settings) -> Result<CertFiles> {
    if let Some(files) = &s.tls_files {
        return Ok(files.clone());
    }
    let (files, made) = tls::self_signed(&s.data.join("tls"), &s.tls_names)
        .context("generating a self-signed certificate")?;
    if made {
        say!(
            "TLS: no certificate configured; generated a self-signed one for {} in {}",
            s.tls_names.join(", "),
            files.cert.display()
        );
    }
    Ok(files)
}

/// Opens the outbound queue (`data/outbound.sqlite`, keyed from the
/// cluster secret) and starts its delivery worker.
fn start_outbound(
    s: &Settings,
    secret: &Arc<Zeroizing<Vec<u8>>>,
    router: &Arc<Router>,
    stopped: &watch::Receiver<bool>,
    tasks: &mut Vec<tokio::task::JoinHandle<Result<()>>>,
) -> Result<Arc<cofre_mx::outbound::Sender>> {
    let key = cofre_storage::keys::derive_subkey(secret, "outbound-queue");
    let queue = cofre_storage::outbound::Outbound::open(&s.data.join("outbound.sqlite"), &key)
        .context("opening the outbound queue (data/outbound.sqlite)")?;
    let config = cofre_mx::outbound::OutboundConfig {
        hostname: s.smtp_hostname.clone(),
        routes: s.routes.clone(),
        nameserver: s.dns,
        ..Default::default()
    };
    let sender = cofre_mx::outbound::Sender::new(queue, config, Arc::clone(router))
        .map_err(|e| anyhow!("outbound delivery: {e}"))?;
    let waiting = sender.pending().map(|p| p.len()).unwrap_or(0);
    say!("outbound queue: {waiting} waiting");
    let worker = Arc::clone(&sender);
    let stopped = stopped.clone();
    tasks.push(tokio::spawn(async move {
        worker.run(stopped).await;
        Ok(())
    }));
    Ok(sender)
}

/// How often the daily backup schedule looks for mailboxes due: often
/// enough to meet most sessions (the key is only in memory during one).
const BACKUP_ROUND: std::time::Duration = std::time::Duration::from_secs(600);

/// The daily backup schedule: every round, a backup of each mailbox with
/// a session whose latest backup is a day old (or that has none).
async fn daily_backups(primary: Arc<Primary>, mut stopped: watch::Receiver<bool>) -> Result<()> {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(BACKUP_ROUND) => {}
            _ = cofre_storage::net::stopping(&mut stopped) => return Ok(()),
        }
        let p = Arc::clone(&primary);
        let round = tokio::task::spawn_blocking(move || p.backup_due(86_400)).await?;
        for (address, outcome) in round {
            match outcome {
                Ok(cofre_storage::backup::BackupOutcome::Stored(b)) => {
                    tracing::info!(%address, id = %b.id, size = b.size, "daily backup stored");
                }
                Ok(cofre_storage::backup::BackupOutcome::Unchanged(_)) => {}
                Err(e) => tracing::warn!(%address, error = %e, "daily backup failed"),
            }
        }
    }
}

/// Binds every address first, so that all failures are reported together.
async fn bind_all(
    wanted: &[(&'static str, SocketAddr)],
) -> Result<Vec<(&'static str, TcpListener)>> {
    let mut bound = Vec::new();
    let mut errors = Vec::new();
    for (service, addr) in wanted {
        match TcpListener::bind(addr).await {
            Ok(l) => bound.push((*service, l)),
            Err(e) => errors.push(format!("{service}: cannot listen on {addr}: {e}")),
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("\n  "));
    }
    Ok(bound)
}

async fn run_role(role: Role, s: Settings) -> Result<()> {
    // Held until the process ends: one primary per data directory.
    let _data_lock = match role {
        Role::Serve | Role::Primary => Some(crate::cli::lock_data(&s.data)?),
        Role::Gateway => None,
    };
    let (stop, stopped) = watch::channel(false);

    let mut wanted = Vec::new();
    if role != Role::Gateway
        && let Some(a) = s.addr("link")
    {
        wanted.push(("link", a));
    }
    if role != Role::Primary {
        for service in [
            "http",
            "imap",
            "imaps",
            "pop3",
            "pop3s",
            "smtp",
            "submission",
            "submissions",
        ] {
            if let Some(a) = s.addr(service) {
                wanted.push((service, a));
            }
        }
    }
    let listeners = bind_all(&wanted).await?;

    let needs_tls = listeners.iter().any(|(service, l)| {
        let Ok(a) = l.local_addr() else { return false };
        match *service {
            "link" => s.link_tls.applies(&a),
            "imap" | "imaps" | "pop3" | "pop3s" | "smtp" | "submission" | "submissions" => true,
            _ => s.http_tls.applies(&a),
        }
    });
    let server_tls = if needs_tls || role == Role::Serve {
        let files = certificate(&s)?;
        Some(tls::server_config(&files).context("loading the TLS certificate")?)
    } else {
        None
    };

    // Every role needs it: the link, and the keys of API tokens.
    let secret = cluster_secret(&s, role)?;
    let token_seal = cofre_storage::keys::derive_subkey(&secret, "token-seal");

    let primary = match role {
        Role::Serve | Role::Primary => {
            let store = crate::cli::open_store_with(&s.data, s.backup_store.clone())?;
            let primary = Arc::new(
                Primary::new(Arc::new(store), s.primary.clone()).with_token_key(token_seal),
            );
            // Count the sealed queue before serving, so the gauge is exact.
            let p = Arc::clone(&primary);
            tokio::task::spawn_blocking(move || p.store().queue_depth())
                .await?
                .context("counting the sealed queue")?;
            Some(primary)
        }
        Role::Gateway => None,
    };

    let router = match role {
        Role::Serve => Some(Router::new(vec![(
            s.node.clone(),
            Link::Local(Arc::clone(primary.as_ref().context("no primary")?)),
        )])),
        Role::Gateway => Some(connect_primaries(&s, Arc::clone(&secret)).await?),
        Role::Primary => None,
    };

    let limiter = Arc::new(cofre_storage::throttle::LoginLimiter::default());
    let mut tasks = Vec::new();
    if let Some(primary) = &primary
        && s.daily_backups
    {
        let primary = Arc::clone(primary);
        let stopped = stopped.clone();
        tasks.push(tokio::spawn(daily_backups(primary, stopped)));
    }
    // The outbound queue, for submission and forwarding.
    let outbound = match &router {
        Some(router)
            if listeners
                .iter()
                .any(|(s, _)| matches!(*s, "smtp" | "submission" | "submissions")) =>
        {
            Some(start_outbound(&s, &secret, router, &stopped, &mut tasks)?)
        }
        _ => None,
    };
    // SPF, DKIM, ARC and DMARC checks for the MX.
    let mail_auth = if s.mail_auth && listeners.iter().any(|(s, _)| *s == "smtp") {
        match cofre_mx::auth::MailAuth::new(&s.smtp_hostname, s.dns) {
            Ok(auth) => Some(Arc::new(auth)),
            Err(e) => {
                // No resolver configuration (no /etc/resolv.conf): mail
                // still arrives, unchecked, and the operator is told.
                tracing::warn!(error = %e, "no DNS resolver: SPF, DKIM and DMARC checks are off (set --dns)");
                say!(
                    "warning: no DNS resolver ({e}): SPF, DKIM and DMARC checks are off (set --dns)"
                );
                None
            }
        }
    } else {
        None
    };
    // JMAP's EmailSubmission sends as the submission service does.
    let srs = || cofre_mx::srs::Srs::new(cofre_storage::keys::derive_subkey(&secret, "srs"));
    let submitter = match (&outbound, &router) {
        (Some(outbound), Some(router)) => {
            let config = cofre_mx::Config {
                hostname: s.smtp_hostname.clone(),
                max_message_size: s.max_body as u64,
                submission: Some(cofre_mx::session::Submission {
                    outbound: Arc::clone(outbound),
                    limiter: Arc::clone(&limiter),
                    plain_auth: false,
                    failed_login_delay: std::time::Duration::from_secs(1),
                }),
                forwarding: Some(cofre_mx::session::Forwarding {
                    outbound: Arc::clone(outbound),
                    srs: srs(),
                }),
                ..cofre_mx::Config::default()
            };
            Some(Arc::new(cofre_mx::session::Submitter {
                router: Arc::clone(router),
                config: Arc::new(config),
            }) as Arc<dyn cofre_storage::outbound::Submit>)
        }
        _ => None,
    };
    for (service, listener) in listeners {
        let addr = listener.local_addr()?;
        match service {
            "imap" | "imaps" => {
                let router = Arc::clone(router.as_ref().context("no router")?);
                let implicit = service == "imaps";
                let session = Arc::new(cofre_imap::Config {
                    append_limit: s.max_body as u64,
                    // Passwords in the clear only over loopback.
                    plain_auth: addr.ip().is_loopback(),
                    starttls: !implicit,
                    failed_login_delay: std::time::Duration::from_secs(1),
                    limiter: Arc::clone(&limiter),
                });
                let config = Arc::new(cofre_imap::ServerConfig::new(session, server_tls.clone()));
                say!(
                    "{service} listening on {addr} ({})",
                    if implicit { "TLS" } else { "STARTTLS" }
                );
                let stopped = stopped.clone();
                tasks.push(tokio::spawn(async move {
                    cofre_imap::serve(listener, router, config, implicit, stopped)
                        .await
                        .context("imap listener")
                }));
            }
            "pop3" | "pop3s" => {
                let router = Arc::clone(router.as_ref().context("no router")?);
                let implicit = service == "pop3s";
                let session = Arc::new(cofre_imap::pop3::Config {
                    // Passwords in the clear only over loopback.
                    plain_auth: addr.ip().is_loopback(),
                    stls: !implicit,
                    failed_login_delay: std::time::Duration::from_secs(1),
                    limiter: Arc::clone(&limiter),
                });
                let config = Arc::new(cofre_imap::pop3::ServerConfig::new(
                    session,
                    server_tls.clone(),
                ));
                say!(
                    "{service} listening on {addr} ({})",
                    if implicit { "TLS" } else { "STLS" }
                );
                let stopped = stopped.clone();
                tasks.push(tokio::spawn(async move {
                    cofre_imap::pop3::serve(listener, router, config, implicit, stopped)
                        .await
                        .context("pop3 listener")
                }));
            }
            "smtp" | "submission" | "submissions" => {
                let router = Arc::clone(router.as_ref().context("no router")?);
                let implicit = service == "submissions";
                let outbound = Arc::clone(outbound.as_ref().context("no outbound queue")?);
                // Every service carries out our aliases' rules (forwards,
                // webhooks) for the copies it delivers to them.
                let forwarding = Some(cofre_mx::session::Forwarding {
                    outbound: Arc::clone(&outbound),
                    srs: srs(),
                });
                let submission = (service != "smtp").then(|| cofre_mx::session::Submission {
                    outbound,
                    limiter: Arc::clone(&limiter),
                    // Passwords in the clear only over loopback.
                    plain_auth: addr.ip().is_loopback(),
                    failed_login_delay: std::time::Duration::from_secs(1),
                });
                let session = Arc::new(cofre_mx::Config {
                    hostname: s.smtp_hostname.clone(),
                    max_message_size: s.max_body as u64,
                    max_recipients: 100,
                    starttls: server_tls.is_some() && !implicit,
                    submission,
                    forwarding,
                    auth: if service == "smtp" {
                        mail_auth.clone()
                    } else {
                        None
                    },
                });
                let config = Arc::new(cofre_mx::ServerConfig::new(session, server_tls.clone()));
                let what = match service {
                    "smtp" => "MX, STARTTLS",
                    "submission" => "submission, STARTTLS",
                    _ => "submission, TLS",
                };
                say!("{service} listening on {addr} ({what})");
                let stopped = stopped.clone();
                tasks.push(tokio::spawn(async move {
                    cofre_mx::serve(listener, router, config, implicit, stopped)
                        .await
                        .context("smtp listener")
                }));
            }
            "link" => {
                let primary = Arc::clone(primary.as_ref().context("no primary")?);
                let mut config = LinkConfig::new(Arc::clone(&secret), s.node.clone());
                let scheme = if s.link_tls.applies(&addr) {
                    config.accept_tls = server_tls.clone();
                    "wss"
                } else {
                    "ws"
                };
                say!("link listening on {scheme}://{addr}");
                let stopped = stopped.clone();
                tasks.push(tokio::spawn(async move {
                    cofre_storage::link::ws::serve(listener, primary, config, stopped)
                        .await
                        .context("link listener")
                }));
            }
            _ => {
                let router = Arc::clone(router.as_ref().context("no router")?);
                let state = AppState::new(
                    router,
                    primary.clone(),
                    &secret,
                    ApiConfig {
                        max_body: s.max_body,
                        token_ttl: s.token_ttl,
                        cors_origins: s.cors_origins.clone(),
                        admin_token: s.admin_token.clone(),
                        limiter: Arc::clone(&limiter),
                        outbound: outbound
                            .clone()
                            .map(|o| o as Arc<dyn cofre_storage::outbound::OutboundView>),
                        submit: submitter.clone(),
                    },
                    stopped.clone(),
                );
                let app = cofre_api::app(state)
                    .into_make_service_with_connect_info::<cofre_api::tls::PeerAddr>();
                let mut done = stopped.clone();
                let shutdown = async move {
                    let _ = done.wait_for(|stop| *stop).await;
                };
                if s.http_tls.applies(&addr) {
                    let tls = server_tls.clone().context("no TLS settings")?;
                    say!("http listening on https://{addr}");
                    let listener = cofre_api::tls::TlsListener::new(listener, tls)?;
                    tasks.push(tokio::spawn(async move {
                        axum::serve(listener, app)
                            .with_graceful_shutdown(shutdown)
                            .await
                            .context("http listener")
                    }));
                } else {
                    say!("http listening on http://{addr}");
                    tasks.push(tokio::spawn(async move {
                        axum::serve(listener, app)
                            .with_graceful_shutdown(shutdown)
                            .await
                            .context("http listener")
                    }));
                }
            }
        }
    }
    say!("ready (Ctrl-C to stop)");
    tracing::info!(node = s.node, ?role, "started");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    say!("shutting down: finishing work in flight");
    tracing::info!("shutting down");
    let _ = stop.send(true);
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "listener ended with an error"),
            Err(e) => tracing::warn!(error = %e, "listener task failed"),
        }
    }
    if let Some(primary) = primary {
        // Mailbox threads finish what is queued and close their files.
        tokio::task::spawn_blocking(move || primary.shutdown()).await?;
    }
    say!("stopped");
    Ok(())
}

/// The gateway's links: one per configured primary. A refused handshake is
/// fatal (the configuration is wrong); an unreachable primary is not — the
/// link keeps trying and `/readyz` says so meanwhile.
async fn connect_primaries(s: &Settings, secret: Arc<Zeroizing<Vec<u8>>>) -> Result<Arc<Router>> {
    if s.primaries.is_empty() {
        bail!("a gateway needs at least one --primary wss://HOST:PORT");
    }
    let mut links = Vec::new();
    for p in &s.primaries {
        let mut config = LinkConfig::new(Arc::clone(&secret), s.node.clone());
        if let Some(ca) = &p.ca {
            config.connect_tls = Some(client_tls(ca)?);
        }
        let client = match LinkClient::connect(&p.url, config.clone()).await {
            Ok(c) => c,
            Err(ClientError::Refused(why)) => {
                bail!("primary {} ({}) refused this gateway: {why}", p.name, p.url)
            }
            Err(e) => {
                tracing::warn!(primary = p.name, error = %e, "primary unreachable; retrying in the background");
                LinkClient::connect_later(&p.url, config)
            }
        };
        say!("linked to primary {} at {}", p.name, p.url);
        links.push((p.name.clone(), Link::Remote(client)));
    }
    Ok(Router::new(links))
}

fn client_tls(ca: &Path) -> Result<Arc<rustls::ClientConfig>> {
    tls::client_config(ca).with_context(|| format!("loading {}", ca.display()))
}
