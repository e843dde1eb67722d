//! Dovecot started for a side-by-side benchmark: Debian's dovecot-imapd
//! or dovecot-pop3d (and dovecot-lmtpd for mail delivery), plain Maildir, no TLS, no
//! encryption, in a temporary directory, on free loopback ports; stopped
//! when dropped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A running Dovecot.
pub struct Dovecot {
    /// `127.0.0.1:port`.
    pub addr: String,
    /// (user, password) pairs.
    pub users: Vec<(String, String)>,
    /// `dovecot --version`.
    pub version: String,
    /// `127.0.0.1:port` of LMTP, when started with it.
    pub lmtp: Option<String>,
    /// Where the users' Maildirs are.
    pub mail: std::path::PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Dovecot {
    /// Starts Dovecot's IMAP with `users` accounts (`load0` ...), and an
    /// LMTP listener that takes mail for `loadN@example.com` if `lmtp`.
    pub fn start(users: usize, lmtp: bool) -> Result<Dovecot> {
        Dovecot::start_serving("imap", users, lmtp)
    }

    /// Starts Dovecot's POP3 (Debian's dovecot-pop3d) with `users`
    /// accounts; `addr` is the POP3 listener.
    pub fn start_pop3(users: usize) -> Result<Dovecot> {
        Dovecot::start_serving("pop3", users, false)
    }

    fn start_serving(protocol: &str, users: usize, lmtp: bool) -> Result<Dovecot> {
        let version = Command::new("dovecot")
            .arg("--version")
            .output()
            .context("dovecot is not installed (Debian: apt-get install dovecot-imapd)")?;
        let version = String::from_utf8_lossy(&version.stdout)
            .split_whitespace()
            .next()
            .unwrap_or("?")
            .to_string();
        let dir = tempfile::tempdir()?;
        let root = dir.path();
        let free_port = || -> Result<u16> {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            Ok(l.local_addr()?.port())
        };
        let port = free_port()?;
        let lmtp_port = free_port()?;
        // Mail is owned by an unprivileged user: Dovecot refuses uid 0.
        let (uid, gid) = ("65534", "65534");
        let mail = root.join("mail");
        std::fs::create_dir_all(&mail)?;
        let status = Command::new("chown")
            .args(["-R", &format!("{uid}:{gid}"), &mail.to_string_lossy()])
            .status()?;
        if !status.success() {
            bail!("chown of the Dovecot mail directory failed");
        }
        let mut passwd = String::new();
        let mut list = Vec::new();
        for i in 0..users {
            let (u, p) = (format!("load{i}"), format!("secret{i}"));
            passwd.push_str(&format!("{u}:{{PLAIN}}{p}::::::\n"));
            list.push((u, p));
        }
        std::fs::write(root.join("users"), passwd)?;
        let r = root.display();
        let mut conf = format!(
            "base_dir = {r}/run\nstate_dir = {r}/state\nlog_path = {r}/dovecot.log\n\
             listen = 127.0.0.1\nprotocols = {protocol}{}\nssl = no\n\
             disable_plaintext_auth = no\nauth_mechanisms = plain login\n\
             auth_username_format = %n\n\
             mail_location = maildir:{r}/mail/%u\nfirst_valid_uid = 1\n\
             passdb {{\n  driver = passwd-file\n  args = {r}/users\n}}\n\
             userdb {{\n  driver = static\n  args = uid={uid} gid={gid} home={r}/mail/%u allow_all_users=yes\n}}\n\
             service {protocol}-login {{\n  inet_listener {protocol} {{\n    port = {port}\n  }}\n  \
             inet_listener {protocol}s {{\n    port = 0\n  }}\n}}\n",
            if lmtp { " lmtp" } else { "" }
        );
        if lmtp {
            conf.push_str(&format!(
                "service lmtp {{\n  inet_listener lmtp {{\n    address = 127.0.0.1\n    port = {lmtp_port}\n  }}\n}}\n"
            ));
        }
        std::fs::write(root.join("dovecot.conf"), conf)?;
        let child = Command::new("dovecot")
            .args(["-F", "-c"])
            .arg(root.join("dovecot.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting dovecot")?;
        let addr = format!("127.0.0.1:{port}");
        let started = Instant::now();
        while std::net::TcpStream::connect(&addr).is_err() {
            if started.elapsed() > Duration::from_secs(10) {
                let log = std::fs::read_to_string(root.join("dovecot.log")).unwrap_or_default();
                bail!("dovecot did not start listening:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Dovecot {
            addr,
            users: list,
            version,
            lmtp: lmtp.then(|| format!("127.0.0.1:{lmtp_port}")),
            mail,
            child,
            _dir: dir,
        })
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
