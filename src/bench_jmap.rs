//! `cofre bench jmap`: JMAP over loopback with keep-alive, on the embedded
//! link, against a mailbox of `messages` messages — the inbox page a client
//! opens with (query + get in one request), full-text queries, and how
//! long a change made over IMAP takes to reach an EventSource listener.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cofre_storage::link::route::{Link, Router};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::bench::{median, ms};
use crate::bench_api::{Bench, Conn};

const USING: [&str; 2] = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"];

/// One JMAP request; the method responses.
async fn jmap(conn: &mut Conn, auth: &str, calls: Value) -> Result<Vec<Value>> {
    let body = json!({ "using": USING, "methodCalls": calls }).to_string();
    let (status, body) = conn.call("POST", "/jmap/api", auth, &body).await?;
    if status != 200 {
        bail!(
            "JMAP request failed: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }
    let v: Value = serde_json::from_slice(&body)?;
    let responses = v["methodResponses"]
        .as_array()
        .context("no methodResponses")?
        .clone();
    if let Some(e) = responses.iter().find(|r| r[0] == "error") {
        bail!("JMAP method error: {e}");
    }
    Ok(responses)
}

/// A minimal IMAP client: one tagged command at a time.
struct Imap {
    reader: BufReader<TcpStream>,
    tag: u32,
}

impl Imap {
    async fn login(addr: &str, user: &str, password: &str) -> Result<Imap> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut imap = Imap {
            reader: BufReader::new(stream),
            tag: 0,
        };
        let mut greeting = String::new();
        imap.reader.read_line(&mut greeting).await?;
        imap.command(&format!("LOGIN {user} {password}")).await?;
        imap.command("SELECT INBOX").await?;
        Ok(imap)
    }

    /// Sends a command and reads to its tagged OK.
    async fn command(&mut self, command: &str) -> Result<()> {
        self.tag += 1;
        let tag = format!("t{}", self.tag);
        self.reader
            .get_mut()
            .write_all(format!("{tag} {command}\r\n").as_bytes())
            .await?;
        let mut line = String::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line).await? == 0 {
                bail!("IMAP connection closed");
            }
            if let Some(rest) = line.strip_prefix(&format!("{tag} ")) {
                if !rest.starts_with("OK") {
                    bail!("IMAP {command}: {line}");
                }
                return Ok(());
            }
        }
    }
}

/// Runs the JMAP measurements and prints a table.
pub fn run(messages: usize) -> Result<()> {
    let bench = Bench::new(messages)?;
    let vocab = &bench.vocab;
    let password = &bench.password;
    bench.rt.block_on(async {
        let router = Router::new(vec![(
            "bench".into(),
            Link::Local(Arc::clone(&bench.primary)),
        )]);
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        let addr = bench.serve(Arc::clone(&router), stopped.clone()).await?;
        let imap_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let imap_addr = imap_listener.local_addr()?.to_string();
        let imap_config = Arc::new(cofre_imap::ServerConfig::new(
            Arc::new(cofre_imap::Config {
                append_limit: 50 << 20,
                plain_auth: true,
                starttls: false,
                failed_login_delay: Duration::from_secs(1),
                limiter: Arc::default(),
            }),
            None,
        ));
        tokio::spawn(cofre_imap::serve(
            imap_listener,
            router,
            imap_config,
            false,
            stopped,
        ));
        let mut conn = Conn::open(&addr).await?;
        let auth = bench.login(&mut conn).await?;
        let (_, body) = conn.call("GET", "/.well-known/jmap", &auth, "").await?;
        let session: Value = serde_json::from_slice(&body)?;
        let account = session["primaryAccounts"][USING[1]]
            .as_str()
            .context("no account")?
            .to_string();
        let r = jmap(
            &mut conn,
            &auth,
            json!([["Mailbox/query", {"accountId": account, "filter": {"role": "inbox"}}, "m"]]),
        )
        .await?;
        let inbox = r[0][1]["ids"][0].as_str().context("no inbox")?.to_string();

        println!("| measure | result | target |");
        println!("|---|---|---|");
        let page = json!([
            ["Email/query", {"accountId": account, "filter": {"inMailbox": inbox},
                "sort": [{"property": "receivedAt", "isAscending": false}], "limit": 50}, "q"],
            ["Email/get", {"accountId": account,
                "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"},
                "properties": ["threadId", "mailboxIds", "keywords", "from", "subject",
                               "receivedAt", "size", "preview", "hasAttachment"]}, "g"]
        ]);
        let mut t = Vec::new();
        for _ in 0..200 {
            let s = Instant::now();
            let r = jmap(&mut conn, &auth, page.clone()).await?;
            t.push(s.elapsed());
            if r[1][1]["list"].as_array().map_or(0, Vec::len) != 50.min(messages) {
                bail!("the inbox page is not 50 emails: {}", r[1][1]);
            }
        }
        println!(
            "| Email/query (inbox, newest first, limit 50) + Email/get of those 50, one request, {messages}-message mailbox, median of 200 | {} | <= 15 ms |",
            ms(median(t))
        );

        // The two halves apart, to see where the time goes.
        let query_only = json!([page[0].clone()]);
        let mut t = Vec::new();
        let mut ids = Value::Null;
        for _ in 0..200 {
            let s = Instant::now();
            let r = jmap(&mut conn, &auth, query_only.clone()).await?;
            t.push(s.elapsed());
            ids = r[0][1]["ids"].clone();
        }
        println!("| of which Email/query alone, median of 200 | {} | - |", ms(median(t)));
        let mut get = page[1].clone();
        get[1]["ids"] = ids;
        get[1].as_object_mut().map(|o| o.remove("#ids"));
        let get_only = json!([get]);
        let mut t = Vec::new();
        for _ in 0..200 {
            let s = Instant::now();
            jmap(&mut conn, &auth, get_only.clone()).await?;
            t.push(s.elapsed());
        }
        println!("| of which Email/get of 50 alone, median of 200 | {} | - |", ms(median(t)));

        let boxes = json!([["Mailbox/get", {"accountId": account, "ids": null}, "m"]]);
        let mut t = Vec::new();
        for _ in 0..30 {
            let s = Instant::now();
            jmap(&mut conn, &auth, boxes.clone()).await?;
            t.push(s.elapsed());
        }
        println!(
            "| Mailbox/get of every mailbox with email and thread counts, median of 30 | {} | - |",
            ms(median(t))
        );

        let mut t = Vec::new();
        let mut hits = 0;
        for k in 0..30 {
            let word = vocab.ranked(300 + k * 1_000);
            let q = json!([["Email/query", {"accountId": account, "filter": {"text": word},
                "sort": [{"property": "receivedAt", "isAscending": false}], "limit": 50}, "q"]]);
            let s = Instant::now();
            let r = jmap(&mut conn, &auth, q).await?;
            t.push(s.elapsed());
            hits += r[0][1]["ids"].as_array().map_or(0, Vec::len);
        }
        println!(
            "| full-text Email/query (a word anywhere, newest first, limit 50) over {messages} messages, median of 30 | {} ({hits} ids returned) | <= 60 ms |",
            ms(median(t))
        );

        // A flag set over IMAP, heard by an EventSource listener.
        let mut events = TcpStream::connect(&addr).await?;
        events.set_nodelay(true)?;
        events
            .write_all(
                format!(
                    "GET /jmap/eventsource?types=Email&closeafter=no&ping=0 HTTP/1.1\r\nHost: bench\r\nAuthorization: {auth}\r\n\r\n"
                )
                .as_bytes(),
            )
            .await?;
        let mut imap = Imap::login(&imap_addr, "bench@example.com", password.expose()).await?;
        let mut buf = vec![0u8; 64 << 10];
        let mut t = Vec::new();
        for i in 0..30 {
            let sign = if i % 2 == 0 { '+' } else { '-' };
            let s = Instant::now();
            imap.command(&format!("UID STORE 1 {sign}FLAGS.SILENT (\\Flagged)"))
                .await?;
            let mut seen = Vec::new();
            loop {
                let n = tokio::time::timeout(Duration::from_secs(5), events.read(&mut buf))
                    .await
                    .context("no push event within 5 s")??;
                if n == 0 {
                    bail!("the event stream ended");
                }
                seen.extend_from_slice(&buf[..n]);
                if seen.windows(12).any(|w| w == b"event: state") {
                    break;
                }
            }
            t.push(s.elapsed());
        }
        println!(
            "| a flag set over IMAP until an EventSource listener hears the StateChange, median of 30 | {} | <= 200 ms |",
            ms(median(t))
        );
        anyhow::Ok(())
    })
}
