//! Postfix started for a side-by-side benchmark: Debian's postfix, its own
//! configuration and queue in a temporary directory, on a free loopback
//! port, handing mail for `example.com` to Dovecot over LMTP; stopped when
//! dropped.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A running Postfix.
pub struct Postfix {
    /// `127.0.0.1:port` of its SMTP listener.
    pub addr: String,
    /// `postconf -d mail_version`.
    pub version: String,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

/// Every daemon the configuration below needs, none of them chrooted.
const MASTER: &str = "\
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
lmtp unix - - n - - lmtp
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
smtp unix - - n - - smtp
relay unix - - n - - smtp
";

impl Postfix {
    /// Starts Postfix delivering `example.com` to the LMTP server at
    /// `lmtp` (`host:port`).
    pub fn start(lmtp: &str) -> Result<Postfix> {
        let version = Command::new("postconf")
            .args(["-d", "-h", "mail_version"])
            .output()
            .context("postfix is not installed (Debian: apt-get install postfix)")?;
        let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
        // Under /tmp: Postfix only logs to files under `maillog_file_prefixes`.
        let dir = tempfile::Builder::new()
            .prefix("cofre-bench-postfix")
            .tempdir_in("/tmp")?;
        let root = dir.path();
        let config = root.join("etc");
        let data = root.join("data");
        std::fs::create_dir_all(&config)?;
        std::fs::create_dir_all(root.join("queue"))?;
        std::fs::create_dir_all(&data)?;
        let status = Command::new("chown")
            .args(["postfix", &data.to_string_lossy()])
            .status()?;
        if !status.success() {
            bail!("chown of the Postfix data directory failed");
        }
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        let r = root.display();
        std::fs::write(
            config.join("main.cf"),
            format!(
                "compatibility_level = 3.6\nqueue_directory = {r}/queue\n\
                 data_directory = {r}/data\nmail_owner = postfix\nsetgid_group = postdrop\n\
                 myhostname = bench.invalid\nmydestination =\nlocal_recipient_maps =\n\
                 alias_maps =\nalias_database =\ninet_interfaces = 127.0.0.1\n\
                 inet_protocols = ipv4\nvirtual_mailbox_domains = example.com\n\
                 virtual_transport = lmtp:inet:{lmtp}\nmynetworks = 127.0.0.0/8\n\
                 smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n\
                 smtputf8_enable = yes\nmessage_size_limit = 52428800\n\
                 maillog_file_prefixes = /tmp\nmaillog_file = {r}/postfix.log\n"
            ),
        )?;
        std::fs::write(
            config.join("master.cf"),
            format!("127.0.0.1:{port} inet n - n - - smtpd\n{MASTER}"),
        )?;
        let started = Command::new("postfix")
            .arg("-c")
            .arg(&config)
            .arg("start")
            .status()
            .context("starting postfix")?;
        let addr = format!("127.0.0.1:{port}");
        let log = || std::fs::read_to_string(root.join("postfix.log")).unwrap_or_default();
        if !started.success() {
            bail!("postfix did not start:\n{}", log());
        }
        let since = Instant::now();
        while std::net::TcpStream::connect(&addr).is_err() {
            if since.elapsed() > Duration::from_secs(10) {
                bail!("postfix did not start listening:\n{}", log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Postfix {
            addr,
            version,
            config,
            _dir: dir,
        })
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("postfix")
            .arg("-c")
            .arg(&self.config)
            .arg("abort")
            .status();
    }
}
