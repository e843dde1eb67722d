//! Server configuration: a TOML file (`--config`), then environment
//! variables and flags over it, then documented defaults. Every problem is
//! collected and reported together at start-up, not one per attempt.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use cofre_storage::primary::PrimaryConfig;
use serde::Deserialize;
use zeroize::Zeroizing;

/// The listeners and their default addresses.
pub const SERVICES: [(&str, &str); 9] = [
    ("http", "127.0.0.1:8080"),
    ("imap", "127.0.0.1:1143"),
    ("imaps", "127.0.0.1:1993"),
    ("pop3", "127.0.0.1:1110"),
    ("pop3s", "127.0.0.1:1995"),
    ("smtp", "127.0.0.1:2525"),
    ("submission", "127.0.0.1:2587"),
    ("submissions", "127.0.0.1:2465"),
    ("link", "127.0.0.1:7400"),
];

/// Flags shared by `serve`, `primary` and `gateway`. Each listen address is
/// `HOST:PORT` or `off`.
#[derive(Debug, Args, Default)]
pub struct ServerArgs {
    /// A TOML configuration file.
    #[arg(long, env = "COFRE_CONFIG")]
    pub config: Option<PathBuf>,
    /// HTTP API [default: 127.0.0.1:8080].
    #[arg(long, env = "COFRE_HTTP")]
    pub http: Option<String>,
    /// IMAP with STARTTLS [default: 127.0.0.1:1143].
    #[arg(long, env = "COFRE_IMAP")]
    pub imap: Option<String>,
    /// IMAP over TLS [default: 127.0.0.1:1993].
    #[arg(long, env = "COFRE_IMAPS")]
    pub imaps: Option<String>,
    /// POP3 with STLS [default: 127.0.0.1:1110].
    #[arg(long, env = "COFRE_POP3")]
    pub pop3: Option<String>,
    /// POP3 over TLS [default: 127.0.0.1:1995].
    #[arg(long, env = "COFRE_POP3S")]
    pub pop3s: Option<String>,
    /// SMTP for incoming mail (MX) [default: 127.0.0.1:2525].
    #[arg(long, env = "COFRE_SMTP")]
    pub smtp: Option<String>,
    /// SMTP submission with STARTTLS [default: 127.0.0.1:2587].
    #[arg(long, env = "COFRE_SUBMISSION")]
    pub submission: Option<String>,
    /// SMTP submission over TLS [default: 127.0.0.1:2465].
    #[arg(long, env = "COFRE_SUBMISSIONS")]
    pub submissions: Option<String>,
    /// The link secondaries connect to [default: 127.0.0.1:7400].
    #[arg(long, env = "COFRE_LINK")]
    pub link: Option<String>,
    /// This node's name in logs and in peers' logs.
    #[arg(long, env = "COFRE_NODE")]
    pub node: Option<String>,
    /// TLS certificate chain (PEM) for every listener.
    #[arg(long, env = "COFRE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "COFRE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Log filter, e.g. `info` or `cofre=debug` [default: info].
    #[arg(long, env = "COFRE_LOG")]
    pub log: Option<String>,
    /// Log format: `text` or `json` [default: text].
    #[arg(long, env = "COFRE_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// `gateway` only: a primary to connect to, `wss://HOST:PORT` or
    /// `NAME=wss://HOST:PORT`; repeat for several.
    #[arg(long = "primary", env = "COFRE_PRIMARY", value_delimiter = ',')]
    pub primaries: Vec<String>,
    /// `gateway` only: PEM file of the certificates that may sign the
    /// primaries' (their self-signed certificate, or your CA).
    #[arg(long, env = "COFRE_PRIMARY_CA")]
    pub primary_ca: Option<PathBuf>,
    /// Outbound mail: a static route `DOMAIN=HOST:PORT` used instead of MX
    /// lookup (`*` for every domain: a smarthost); repeat for several.
    #[arg(long = "route", env = "COFRE_ROUTES", value_delimiter = ',')]
    pub routes: Vec<String>,
    /// The DNS server (`IP:PORT`) for MX lookups and SPF, DKIM and DMARC
    /// checks [default: the system's resolver].
    #[arg(long, env = "COFRE_DNS")]
    pub dns: Option<String>,
    /// Do not check SPF, DKIM, ARC and DMARC of arriving mail (no
    /// `Authentication-Results`, no DMARC rejections, no ARC seals).
    #[arg(long, env = "COFRE_NO_MAIL_AUTH")]
    pub no_mail_auth: bool,
}

/// The TOML file. Unknown keys are errors (a typo must not silently fall
/// back to a default).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    data: Option<PathBuf>,
    node: Option<String>,
    cluster_secret: Option<String>,
    log: Option<String>,
    log_format: Option<String>,
    #[serde(default)]
    listen: FileListen,
    #[serde(default)]
    tls: FileTls,
    #[serde(default)]
    primary: FilePrimary,
    #[serde(default)]
    http: FileHttp,
    #[serde(default)]
    primaries: Vec<FilePrimaryRef>,
    primary_ca: Option<PathBuf>,
    #[serde(default)]
    smtp: FileSmtp,
    #[serde(default)]
    backups: FileBackups,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBackups {
    /// The daily schedule (default true).
    daily: Option<bool>,
    /// The most recent versions kept (default 3).
    keep_last: Option<usize>,
    /// Days of which the newest version is kept (default 7).
    keep_daily: Option<usize>,
    /// Weeks of which the newest version is kept (default 4).
    keep_weekly: Option<usize>,
    /// An S3-compatible store to keep the versions in.
    s3: Option<FileS3>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileS3 {
    endpoint: Option<String>,
    bucket: Option<String>,
    region: Option<String>,
    access_key: Option<String>,
    secret_key: Option<String>,
    prefix: Option<String>,
    part_size_mb: Option<usize>,
    path_style: Option<bool>,
    ca: Option<PathBuf>,
}

/// The S3 store of a `[backups.s3]` section; credentials from
/// `COFRE_S3_ACCESS_KEY`/`COFRE_S3_SECRET_KEY` (or `AWS_ACCESS_KEY_ID`/
/// `AWS_SECRET_ACCESS_KEY`) before the file's.
fn s3_store(
    file: Option<&FileS3>,
    errors: &mut Vec<String>,
) -> Option<Arc<cofre_storage::s3::Bucket>> {
    let f = file?;
    let env = |names: [&str; 2]| names.iter().find_map(|n| std::env::var(n).ok());
    let mut missing = |what: &str, v: Option<String>| {
        v.filter(|v| !v.is_empty()).or_else(|| {
            errors.push(format!("backups.s3: {what} is required"));
            None
        })
    };
    let endpoint = missing("endpoint", f.endpoint.clone());
    let bucket = missing("bucket", f.bucket.clone());
    let access_key = missing(
        "access_key (or COFRE_S3_ACCESS_KEY)",
        env(["COFRE_S3_ACCESS_KEY", "AWS_ACCESS_KEY_ID"]).or(f.access_key.clone()),
    );
    let secret_key = missing(
        "secret_key (or COFRE_S3_SECRET_KEY)",
        env(["COFRE_S3_SECRET_KEY", "AWS_SECRET_ACCESS_KEY"]).or(f.secret_key.clone()),
    );
    let config = cofre_storage::s3::S3Config {
        endpoint: endpoint?,
        bucket: bucket?,
        region: f.region.clone().unwrap_or_else(|| "us-east-1".into()),
        access_key: access_key?,
        secret_key: Zeroizing::new(secret_key?),
        prefix: f.prefix.clone().unwrap_or_default(),
        part_size: f.part_size_mb.unwrap_or(16).saturating_mul(1 << 20),
        path_style: f.path_style.unwrap_or(true),
        ca_file: f.ca.clone(),
    };
    match cofre_storage::s3::Bucket::new(config) {
        Ok(b) => Some(Arc::new(b)),
        Err(e) => {
            errors.push(format!("backups.s3: {e}"));
            None
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSmtp {
    /// `DOMAIN=HOST:PORT` static routes.
    routes: Option<Vec<String>>,
    /// The name in greetings, `Received` and EHLO.
    hostname: Option<String>,
    /// The DNS server, `IP:PORT`.
    dns: Option<String>,
    /// Check SPF, DKIM, ARC and DMARC of arriving mail (default true).
    mail_auth: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileListen {
    http: Option<String>,
    imap: Option<String>,
    imaps: Option<String>,
    pop3: Option<String>,
    pop3s: Option<String>,
    smtp: Option<String>,
    submission: Option<String>,
    submissions: Option<String>,
    link: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTls {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    names: Option<Vec<String>>,
    http: Option<String>,
    link: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePrimary {
    idle_timeout_secs: Option<u64>,
    max_open: Option<usize>,
    queue_depth: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHttp {
    max_body_mb: Option<usize>,
    token_ttl_secs: Option<u64>,
    cors_origins: Option<Vec<String>>,
    admin_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePrimaryRef {
    name: String,
    url: String,
    ca: Option<PathBuf>,
}

/// Whether a listener speaks TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// TLS unless the address is loopback.
    Auto,
    /// Always TLS.
    On,
    /// Never (refused for the link outside loopback).
    Off,
}

impl TlsMode {
    /// Whether a listener on `addr` speaks TLS.
    pub fn applies(self, addr: &SocketAddr) -> bool {
        match self {
            TlsMode::Auto => !addr.ip().is_loopback(),
            TlsMode::On => true,
            TlsMode::Off => false,
        }
    }
}

/// A primary a gateway connects to.
#[derive(Debug, Clone)]
pub struct PrimaryRef {
    /// Its name (logs, metrics).
    pub name: String,
    /// `ws://` (loopback only) or `wss://`.
    pub url: String,
    /// Roots to trust for `wss://`.
    pub ca: Option<PathBuf>,
}

/// Everything a server process needs, resolved and checked.
pub struct Settings {
    /// The data directory.
    pub data: PathBuf,
    /// This node's name.
    pub node: String,
    /// The cluster secret, if configured (env `COFRE_CLUSTER_SECRET` or the
    /// file).
    pub cluster_secret: Option<Zeroizing<Vec<u8>>>,
    /// Log filter.
    pub log: String,
    /// JSON logs instead of text.
    pub log_json: bool,
    /// Listen addresses by service name; `None` is off.
    pub listen: Vec<(&'static str, Option<SocketAddr>)>,
    /// Configured certificate and key, if any.
    pub tls_files: Option<cofre_storage::tls::CertFiles>,
    /// Names for a generated self-signed certificate.
    pub tls_names: Vec<String>,
    /// TLS on the HTTP listener.
    pub http_tls: TlsMode,
    /// TLS on the link listener.
    pub link_tls: TlsMode,
    /// The primary's settings.
    pub primary: PrimaryConfig,
    /// Whether the primary backs up mailboxes daily.
    pub daily_backups: bool,
    /// The S3-compatible store backups go to (`[backups.s3]`); `None`:
    /// `data/backups/`.
    pub backup_store: Option<Arc<cofre_storage::s3::Bucket>>,
    /// Largest HTTP request body.
    pub max_body: usize,
    /// How long API tokens live.
    pub token_ttl: Duration,
    /// Browser origins allowed by CORS.
    pub cors_origins: Vec<String>,
    /// The operator's token for `/v1/admin` (`COFRE_ADMIN_TOKEN`).
    pub admin_token: Option<Zeroizing<String>>,
    /// Primaries to connect to (gateway).
    pub primaries: Vec<PrimaryRef>,
    /// Outbound static routes, (domain or `*`, `host:port`).
    pub routes: Vec<(String, String)>,
    /// The mail servers' name (greeting, `Received`, EHLO).
    pub smtp_hostname: String,
    /// The DNS server for mail; `None`: the system's resolver.
    pub dns: Option<std::net::SocketAddr>,
    /// Whether arriving mail is checked (SPF, DKIM, ARC, DMARC).
    pub mail_auth: bool,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("data", &self.data)
            .field("node", &self.node)
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

impl Settings {
    /// The address of a service, if it is on.
    pub fn addr(&self, service: &str) -> Option<SocketAddr> {
        self.listen
            .iter()
            .find(|(s, _)| *s == service)
            .and_then(|(_, a)| *a)
    }
}

/// Parses `HOST:PORT` or `off`.
fn listen_addr(service: &str, value: &str) -> Result<Option<SocketAddr>, String> {
    if value.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    if let Ok(a) = value.parse::<SocketAddr>() {
        return Ok(Some(a));
    }
    match value.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .map(Some)
            .ok_or_else(|| format!("{service}: {value:?} resolves to no address")),
        Err(_) => Err(format!(
            "{service}: {value:?} is not HOST:PORT (e.g. 127.0.0.1:8080) or \"off\""
        )),
    }
}

fn tls_mode(what: &str, value: Option<&str>, errors: &mut Vec<String>) -> TlsMode {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None | Some("auto") => TlsMode::Auto,
        Some("on") => TlsMode::On,
        Some("off") => TlsMode::Off,
        Some(other) => {
            errors.push(format!("tls.{what}: {other:?} is not auto, on or off"));
            TlsMode::Auto
        }
    }
}

/// What commands run beside the server take from a configuration file's
/// `[backups]` section (`path`, else `COFRE_CONFIG`; the defaults without
/// either): the retention and the S3 store, if any.
pub fn backup_settings(
    path: Option<&Path>,
) -> Result<
    (
        cofre_storage::backup::Retention,
        Option<Arc<cofre_storage::s3::Bucket>>,
    ),
    String,
> {
    let mut r = cofre_storage::backup::Retention::default();
    let from_env = std::env::var_os("COFRE_CONFIG").map(PathBuf::from);
    let Some(path) = path.or(from_env.as_deref()) else {
        return Ok((r, None));
    };
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file = toml::from_str::<File>(&text)
        .map_err(|e| format!("{}: {}", path.display(), e.to_string().trim_end()))?;
    let b = file.backups;
    r.last = b.keep_last.unwrap_or(r.last);
    r.daily = b.keep_daily.unwrap_or(r.daily);
    r.weekly = b.keep_weekly.unwrap_or(r.weekly);
    let mut errors = Vec::new();
    let store = s3_store(b.s3.as_ref(), &mut errors);
    if !errors.is_empty() {
        return Err(format!("{}: {}", path.display(), errors.join("; ")));
    }
    Ok((r, store))
}

/// Resolves flags and environment (`args`), the file they name, and the
/// defaults; `data_flag` is the global `--data`. Returns every problem
/// found, not just the first.
pub fn resolve(args: &ServerArgs, data_flag: Option<&Path>) -> Result<Settings, Vec<String>> {
    let mut errors = Vec::new();
    let file = match &args.config {
        None => File::default(),
        Some(path) => match std::fs::read_to_string(path) {
            Err(e) => {
                errors.push(format!("{}: {e}", path.display()));
                File::default()
            }
            Ok(text) => toml::from_str::<File>(&text).unwrap_or_else(|e| {
                errors.push(format!("{}: {}", path.display(), e.to_string().trim_end()));
                File::default()
            }),
        },
    };

    let flags = [
        &args.http,
        &args.imap,
        &args.imaps,
        &args.pop3,
        &args.pop3s,
        &args.smtp,
        &args.submission,
        &args.submissions,
        &args.link,
    ];
    let l = &file.listen;
    let from_file = [
        &l.http,
        &l.imap,
        &l.imaps,
        &l.pop3,
        &l.pop3s,
        &l.smtp,
        &l.submission,
        &l.submissions,
        &l.link,
    ];
    let mut listen = Vec::new();
    for (((service, default), flag), file_value) in SERVICES.iter().zip(flags).zip(from_file) {
        let value = flag.as_deref().or(file_value.as_deref()).unwrap_or(default);
        match listen_addr(service, value) {
            Ok(a) => listen.push((*service, a)),
            Err(e) => {
                errors.push(e);
                listen.push((*service, None));
            }
        }
    }
    let mut seen = std::collections::HashMap::new();
    for (service, addr) in &listen {
        if let Some(a) = addr
            && a.port() != 0
            && let Some(other) = seen.insert(*a, *service)
        {
            errors.push(format!("{service} and {other} both listen on {a}"));
        }
    }

    let cluster_secret = std::env::var("COFRE_CLUSTER_SECRET")
        .ok()
        .or(file.cluster_secret.clone());
    if let Some(s) = &cluster_secret
        && s.len() < 16
    {
        errors.push("cluster_secret (COFRE_CLUSTER_SECRET) must be at least 16 characters".into());
    }

    let cert = args.tls_cert.clone().or(file.tls.cert.clone());
    let key = args.tls_key.clone().or(file.tls.key.clone());
    let tls_files = match (cert, key) {
        (Some(cert), Some(key)) => {
            for p in [&cert, &key] {
                if !p.is_file() {
                    errors.push(format!("tls: {} does not exist", p.display()));
                }
            }
            Some(cofre_storage::tls::CertFiles { cert, key })
        }
        (None, None) => None,
        _ => {
            errors.push("tls: give both a certificate and a key, or neither".into());
            None
        }
    };
    let http_tls = tls_mode("http", file.tls.http.as_deref(), &mut errors);
    let link_tls = tls_mode("link", file.tls.link.as_deref(), &mut errors);
    if link_tls == TlsMode::Off
        && let Some((_, Some(a))) = listen.iter().find(|(s, _)| *s == "link")
        && !a.ip().is_loopback()
    {
        errors.push(format!(
            "tls.link = \"off\" is only allowed on loopback, and the link listens on {a}"
        ));
    }

    let route_list = if args.routes.is_empty() {
        file.smtp.routes.clone().unwrap_or_default()
    } else {
        args.routes.clone()
    };
    let mut routes = Vec::new();
    for r in &route_list {
        match r.split_once('=') {
            Some((domain, target))
                if !domain.trim().is_empty()
                    && target
                        .rsplit_once(':')
                        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()) =>
            {
                routes.push((
                    domain.trim().to_ascii_lowercase(),
                    target.trim().to_string(),
                ));
            }
            _ => errors.push(format!(
                "route: {r:?} is not DOMAIN=HOST:PORT (e.g. example.net=10.0.0.5:25)"
            )),
        }
    }
    let smtp_hostname = file.smtp.hostname.clone().unwrap_or_else(|| {
        file.tls
            .names
            .as_ref()
            .and_then(|n| n.first().cloned())
            .unwrap_or_else(|| "localhost".into())
    });

    let dns = match args.dns.clone().or(file.smtp.dns.clone()) {
        None => None,
        Some(d) => match d.parse::<std::net::SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                errors.push(format!("dns: {d:?} is not IP:PORT (e.g. 127.0.0.1:53)"));
                None
            }
        },
    };
    let mail_auth = !args.no_mail_auth && file.smtp.mail_auth.unwrap_or(true);

    let log = args
        .log
        .clone()
        .or(file.log.clone())
        .unwrap_or_else(|| "info".into());
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log) {
        errors.push(format!("log: {log:?}: {e}"));
    }
    let log_json = match args
        .log_format
        .as_deref()
        .or(file.log_format.as_deref())
        .unwrap_or("text")
    {
        "text" => false,
        "json" => true,
        other => {
            errors.push(format!("log_format: {other:?} is not text or json"));
            false
        }
    };

    let mut primary = PrimaryConfig::default();
    if let Some(s) = file.primary.idle_timeout_secs {
        primary.idle_timeout = Duration::from_secs(s);
    }
    if let Some(n) = file.primary.max_open {
        if n == 0 {
            errors.push("primary.max_open must be at least 1".into());
        }
        primary.max_open = n.max(1);
    }
    if let Some(n) = file.primary.queue_depth {
        if n == 0 {
            errors.push("primary.queue_depth must be at least 1".into());
        }
        primary.queue_depth = n.max(1);
    }
    let b = &file.backups;
    let defaults = primary.retention;
    primary.retention = cofre_storage::backup::Retention {
        last: b.keep_last.unwrap_or(defaults.last),
        daily: b.keep_daily.unwrap_or(defaults.daily),
        weekly: b.keep_weekly.unwrap_or(defaults.weekly),
    };
    let daily_backups = b.daily.unwrap_or(true);
    let backup_store = s3_store(b.s3.as_ref(), &mut errors);
    let max_body = file.http.max_body_mb.unwrap_or(50).saturating_mul(1 << 20);
    let token_ttl = Duration::from_secs(file.http.token_ttl_secs.unwrap_or(3600));
    if token_ttl.is_zero() {
        errors.push("http.token_ttl_secs must be at least 1".into());
    }
    let cors_origins = file.http.cors_origins.clone().unwrap_or_default();
    let admin_token = std::env::var("COFRE_ADMIN_TOKEN")
        .ok()
        .or(file.http.admin_token.clone());
    if let Some(t) = &admin_token
        && t.len() < 16
    {
        errors.push("admin_token (COFRE_ADMIN_TOKEN) must be at least 16 characters".into());
    }
    for o in &cors_origins {
        if !(o.starts_with("https://") || o.starts_with("http://")) || o.ends_with('/') {
            errors.push(format!(
                "http.cors_origins: {o:?} is not an origin like https://app.example.com"
            ));
        }
    }

    let ca = args.primary_ca.clone().or(file.primary_ca.clone());
    let mut primaries = Vec::new();
    for (i, spec) in args.primaries.iter().enumerate() {
        let (name, url) = match spec.split_once('=') {
            Some((n, u)) if !n.contains("://") => (n.to_string(), u.to_string()),
            _ => (format!("primary-{}", i + 1), spec.clone()),
        };
        primaries.push(PrimaryRef {
            name,
            url,
            ca: ca.clone(),
        });
    }
    if primaries.is_empty() {
        for p in &file.primaries {
            primaries.push(PrimaryRef {
                name: p.name.clone(),
                url: p.url.clone(),
                ca: p.ca.clone().or(ca.clone()),
            });
        }
    }
    for p in &primaries {
        if p.url.starts_with("wss://") {
            match &p.ca {
                None => errors.push(format!(
                    "primary {}: {} needs --primary-ca (the primary's certificate or your CA)",
                    p.name, p.url
                )),
                Some(ca) if !ca.is_file() => {
                    errors.push(format!(
                        "primary {}: {} does not exist",
                        p.name,
                        ca.display()
                    ));
                }
                Some(_) => {}
            }
        } else if !p.url.starts_with("ws://") {
            errors.push(format!(
                "primary {}: {:?} is not a ws:// or wss:// URL",
                p.name, p.url
            ));
        }
    }

    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Settings {
        data: data_flag
            .map(Path::to_path_buf)
            .or(file.data)
            .unwrap_or_else(|| PathBuf::from("./data")),
        node: args
            .node
            .clone()
            .or(file.node)
            .unwrap_or_else(|| "cofre".into()),
        cluster_secret: cluster_secret.map(|s| Zeroizing::new(s.into_bytes())),
        log,
        log_json,
        listen,
        tls_files,
        tls_names: file
            .tls
            .names
            .unwrap_or_else(|| vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]),
        http_tls,
        link_tls,
        primary,
        daily_backups,
        backup_store,
        max_body,
        token_ttl,
        cors_origins,
        admin_token: admin_token.map(Zeroizing::new),
        primaries,
        routes,
        smtp_hostname,
        dns,
        mail_auth,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn defaults_flags_and_off() {
        let s = resolve(&ServerArgs::default(), None).unwrap();
        assert_eq!(s.addr("http"), Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(s.addr("link"), Some("127.0.0.1:7400".parse().unwrap()));
        assert_eq!(s.data, PathBuf::from("./data"));
        let args = ServerArgs {
            http: Some("127.0.0.1:9999".into()),
            imap: Some("off".into()),
            ..ServerArgs::default()
        };
        let s = resolve(&args, Some(Path::new("/tmp/x"))).unwrap();
        assert_eq!(s.addr("http"), Some("127.0.0.1:9999".parse().unwrap()));
        assert_eq!(s.addr("imap"), None);
        assert_eq!(s.data, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cofre.toml");
        std::fs::write(
            &path,
            "[listen]\nimap = \"nowhere\"\n[tls]\nlink = \"maybe\"\n[primary]\nmax_open = 0\n",
        )
        .unwrap();
        let args = ServerArgs {
            config: Some(path),
            http: Some("127.0.0.1:1110".into()),
            pop3: Some("127.0.0.1:1110".into()),
            tls_cert: Some("/nonexistent/cert.pem".into()),
            primaries: vec!["http://example.com".into()],
            ..ServerArgs::default()
        };
        let errors = resolve(&args, None).unwrap_err();
        let all = errors.join("\n");
        for needle in [
            "imap: \"nowhere\"",
            "both listen on 127.0.0.1:1110",
            "both a certificate and a key",
            "tls.link: \"maybe\"",
            "max_open",
            "not a ws:// or wss://",
        ] {
            assert!(all.contains(needle), "{needle:?} missing from:\n{all}");
        }
    }

    #[test]
    fn unknown_keys_and_bad_toml_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cofre.toml");
        std::fs::write(&path, "[listen]\nhttps = \"127.0.0.1:1\"\n").unwrap();
        let args = ServerArgs {
            config: Some(path.clone()),
            ..ServerArgs::default()
        };
        let all = resolve(&args, None).unwrap_err().join("\n");
        assert!(all.contains("https"), "{all}");
        std::fs::write(&path, "listen = [").unwrap();
        assert!(resolve(&args, None).is_err());
    }

    #[test]
    fn the_link_needs_tls_outside_loopback() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cofre.toml");
        std::fs::write(&path, "[tls]\nlink = \"off\"\n").unwrap();
        let args = ServerArgs {
            config: Some(path),
            link: Some("0.0.0.0:7400".into()),
            ..ServerArgs::default()
        };
        let all = resolve(&args, None).unwrap_err().join("\n");
        assert!(all.contains("only allowed on loopback"), "{all}");
        let s = resolve(&ServerArgs::default(), None).unwrap();
        assert!(!s.link_tls.applies(&"127.0.0.1:7400".parse().unwrap()));
        assert!(s.link_tls.applies(&"10.0.0.1:7400".parse().unwrap()));
    }
}
