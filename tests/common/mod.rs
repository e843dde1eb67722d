//! Helpers for tests that run `cofre` as real processes: start one, wait
//! for the lines it prints, speak HTTP/1.1 to it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine;

/// The cluster secret the tests' nodes share.
pub const SECRET: &str = "a cluster secret of some length";

/// A running `cofre` process; killed when dropped.
pub struct Proc {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Proc {
    /// Starts `cofre` with these arguments and extra environment.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cofre"));
        // Tests run side by side: fixed default ports would collide, so the
        // mail listeners are off unless a test asks for them with a flag.
        cmd.args(args)
            .env_remove("COFRE_CLUSTER_SECRET")
            .env("COFRE_IMAP", "off")
            .env("COFRE_IMAPS", "off")
            .env("COFRE_POP3", "off")
            .env("COFRE_POP3S", "off")
            .env("COFRE_SMTP", "off")
            .env("COFRE_SUBMISSION", "off")
            .env("COFRE_SUBMISSIONS", "off")
            // No Internet DNS in tests: the MX checks are asked for by the
            // tests that point them at a fixture server.
            .env("COFRE_NO_MAIL_AUTH", "true")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let (tx, lines) = mpsc::channel();
        // Both streams are read to the end so the process never blocks or
        // fails writing to them.
        let out = child.stdout.take().unwrap();
        let tx_out = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx_out.send(line);
            }
        });
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(format!("stderr: {line}"));
            }
        });
        Proc {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line starting with `prefix` and returns the rest of it.
    pub fn wait_for(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.trim().to_string();
                    }
                }
                Err(_) => panic!("no line {prefix:?}; saw:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// Waits for the process to exit; returns its status and every line.
    pub fn wait_exit(&mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "process did not exit");
            std::thread::sleep(Duration::from_millis(20));
        };
        // Give the reader threads a moment to pass on the last lines.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(300)) {
            self.seen.push(line);
        }
        (status, self.seen.join("\n"))
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates an alias with the CLI and returns its password.
pub fn create_alias(data: &Path, address: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cofre"))
        .args([
            "--data",
            data.to_str().unwrap(),
            "alias",
            "create",
            address,
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["password"].as_str().unwrap().to_string()
}

/// An HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: String,
    pub body: Vec<u8>,
}

impl Response {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// `Authorization: Basic` for an address and password.
pub fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

fn request_bytes(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// One HTTP/1.1 request (Connection: close) with Basic auth, if given.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    auth: Option<(&str, &str)>,
    body: &[u8],
) -> Response {
    let basic_header = auth.map(|(u, p)| basic(u, p));
    let mut headers = Vec::new();
    if let Some(h) = &basic_header {
        headers.push(("Authorization", h.as_str()));
    }
    http_with(addr, method, path, &headers, body)
}

/// One HTTP/1.1 request (Connection: close) with these headers.
pub fn http_with(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .write_all(&request_bytes(addr, method, path, headers, body))
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header");
    let headers = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = headers.split_whitespace().nth(1).unwrap().parse().unwrap();
    let rest = raw[split + 4..].to_vec();
    let chunked = headers
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked { dechunk(&rest) } else { rest };
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..eol]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[eol + 2 + size + 2..];
    }
}

/// An open Server-Sent Events stream, read raw.
pub struct Sse {
    stream: TcpStream,
    buffer: String,
}

impl Sse {
    /// Opens `GET path` and checks the answer is an event stream.
    pub fn open(addr: &str, path: &str, auth: (&str, &str)) -> Sse {
        let mut stream = TcpStream::connect(addr).unwrap();
        let header = basic(auth.0, auth.1);
        stream
            .write_all(&request_bytes(
                addr,
                "GET",
                path,
                &[("Authorization", &header)],
                b"",
            ))
            .unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut sse = Sse {
            stream,
            buffer: String::new(),
        };
        let head = sse.until("\r\n\r\n", Duration::from_secs(10));
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains("text/event-stream"), "{head}");
        sse
    }

    /// Reads until `needle` has arrived; returns everything read so far.
    pub fn until(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut chunk = [0u8; 4096];
        while !self.buffer.contains(needle) {
            assert!(
                Instant::now() < deadline,
                "{needle:?} did not arrive; got {:?}",
                self.buffer
            );
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("stream closed; got {:?}", self.buffer),
                Ok(n) => self.buffer.push_str(&String::from_utf8_lossy(&chunk[..n])),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("{e}"),
            }
        }
        std::mem::take(&mut self.buffer)
    }
}

/// Polls `f` until it is true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}
