//! POP3 on a real socket beside IMAP, over an in-process primary: a whole
//! session, UIDLs that are IMAP's UIDs, deletions only at QUIT, the
//! maildrop lock, AUTH PLAIN, pipelining, bad input, and the alias's
//! options for retrieved mail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use cofre_storage::link::{Op, Reply};
use cofre_storage::mailbox::{RecordKind, RecordWrite};
use cofre_storage::settings::{self, Pop3Settings};
use cofre_storage::{AliasAddress, FolderName};
use common::{Client, Server, message, password};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A raw POP3 client.
struct Pop {
    r: BufReader<TcpStream>,
}

impl Pop {
    async fn connect(s: &Server) -> (Pop, String) {
        let stream = TcpStream::connect(s.pop3).await.unwrap();
        let mut p = Pop {
            r: BufReader::new(stream),
        };
        let g = p.line().await;
        (p, g)
    }

    async fn login(s: &Server, user: usize) -> Pop {
        let (mut p, _) = Pop::connect(s).await;
        let (u, pw) = &s.users[user];
        assert!(p.cmd(&format!("USER {u}")).await.starts_with("+OK"));
        let r = p.cmd(&format!("PASS {pw}")).await;
        assert!(r.starts_with("+OK maildrop locked"), "{r}");
        p
    }

    async fn line(&mut self) -> String {
        let mut line = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(10), self.r.read_until(b'\n', &mut line))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        assert!(n > 0, "the server closed the connection");
        assert!(line.ends_with(b"\r\n"), "{line:?}");
        String::from_utf8(line[..line.len() - 2].to_vec()).unwrap()
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.r.get_mut().write_all(bytes).await.unwrap();
    }

    async fn cmd(&mut self, c: &str) -> String {
        self.send(format!("{c}\r\n").as_bytes()).await;
        self.line().await
    }

    /// The lines of a multi-line answer, un-dot-stuffed, as bytes with
    /// their CRLFs.
    async fn body(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let mut line = Vec::new();
            self.r.read_until(b'\n', &mut line).await.unwrap();
            assert!(line.ends_with(b"\r\n"), "{line:?}");
            if line == b".\r\n" {
                return out;
            }
            let line = line.strip_prefix(b".").unwrap_or(&line);
            out.extend_from_slice(line);
        }
    }

    async fn multi(&mut self, c: &str) -> (String, Vec<u8>) {
        let status = self.cmd(c).await;
        if !status.starts_with("+OK") {
            return (status, Vec::new());
        }
        (status, self.body().await)
    }

    async fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(10), self.r.read(&mut b)).await,
            Ok(Ok(0))
        )
    }
}

/// Three messages in the Inbox, one with lines that begin with a dot.
async fn fill(s: &Server) -> Vec<Vec<u8>> {
    let mut imap = Client::login(s, 0).await;
    let dotted =
        b"From: x@example.net\r\nSubject: dots\r\n\r\n.leading dot\r\n..two\r\n.\r\nend\r\n"
            .to_vec();
    let msgs = vec![
        message("one", "first body"),
        dotted,
        message("three", &"x".repeat(5000)),
    ];
    for m in &msgs {
        let r = imap.append("INBOX", "", m).await;
        assert!(r.last().unwrap().contains(" OK "), "{r:?}");
    }
    msgs
}

#[tokio::test]
async fn a_full_session_reads_and_deletes_only_at_quit() {
    let s = common::server().await;
    let msgs = fill(&s).await;
    let mut p = Pop::login(&s, 0).await;

    let sizes: Vec<usize> = msgs.iter().map(Vec::len).collect();
    let total: usize = sizes.iter().sum();
    assert_eq!(p.cmd("STAT").await, format!("+OK 3 {total}"));
    let (_, list) = p.multi("LIST").await;
    let want: String = sizes
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{} {n}\r\n", i + 1))
        .collect();
    assert_eq!(String::from_utf8(list).unwrap(), want);
    assert_eq!(p.cmd("LIST 2").await, format!("+OK 2 {}", sizes[1]));

    // UIDLs are the Inbox's UIDVALIDITY and IMAP's UIDs.
    let mut imap = Client::login(&s, 0).await;
    let status = imap.ok("STATUS INBOX (UIDVALIDITY)").await.join("");
    let validity: u32 = status
        .split("UIDVALIDITY ")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let (_, uidl) = p.multi("UIDL").await;
    assert_eq!(
        String::from_utf8(uidl).unwrap(),
        format!("1 {validity}.1\r\n2 {validity}.2\r\n3 {validity}.3\r\n")
    );
    assert_eq!(p.cmd("UIDL 3").await, format!("+OK 3 {validity}.3"));

    // Byte for byte, dots and all.
    for (i, m) in msgs.iter().enumerate() {
        let (status, body) = p.multi(&format!("RETR {}", i + 1)).await;
        assert!(status.starts_with("+OK"), "{status}");
        assert_eq!(body, *m, "message {}", i + 1);
    }
    let (_, top) = p.multi("TOP 2 1").await;
    assert_eq!(
        top,
        b"From: x@example.net\r\nSubject: dots\r\n\r\n.leading dot\r\n"
    );

    // DELE marks; RSET unmarks; only QUIT removes.
    assert!(p.cmd("DELE 1").await.starts_with("+OK"));
    assert!(p.cmd("DELE 1").await.starts_with("-ERR"));
    assert!(p.cmd("RETR 1").await.starts_with("-ERR"));
    assert_eq!(p.cmd("STAT").await, format!("+OK 2 {}", total - sizes[0]));
    assert!(p.cmd("RSET").await.starts_with("+OK maildrop has 3"));
    assert!(p.cmd("DELE 1").await.starts_with("+OK"));
    assert!(p.cmd("DELE 3").await.starts_with("+OK"));
    let r = imap.ok("STATUS INBOX (MESSAGES)").await.join("");
    assert!(r.contains("MESSAGES 3"), "nothing removed before QUIT: {r}");
    assert_eq!(p.cmd("QUIT").await, "+OK bye");
    assert!(p.closed().await);

    // The message left is the one never deleted, now read.
    let r = imap.ok("SELECT INBOX").await.join("");
    assert!(r.contains("1 EXISTS"), "{r}");
    let r = imap.ok("UID FETCH 1:* (UID FLAGS)").await.join("");
    assert!(r.contains("UID 2 ") && r.contains("\\Seen"), "{r}");
}

#[tokio::test]
async fn a_dropped_connection_deletes_nothing_and_the_maildrop_is_locked() {
    let s = common::server().await;
    fill(&s).await;
    let mut first = Pop::login(&s, 0).await;
    // A second session of the same alias is refused while the first holds
    // the maildrop; another alias is not.
    let (mut second, _) = Pop::connect(&s).await;
    let (u, pw) = &s.users[0];
    second.cmd(&format!("USER {u}")).await;
    let r = second.cmd(&format!("PASS {pw}")).await;
    assert!(r.starts_with("-ERR [IN-USE]"), "{r}");
    let _bo = Pop::login(&s, 1).await;

    assert!(first.cmd("DELE 1").await.starts_with("+OK"));
    assert!(first.cmd("DELE 2").await.starts_with("+OK"));
    drop(first);

    // Once the dropped session is gone, the maildrop is whole and free.
    let mut again = None;
    for _ in 0..100 {
        let (mut p, _) = Pop::connect(&s).await;
        p.cmd(&format!("USER {u}")).await;
        let r = p.cmd(&format!("PASS {pw}")).await;
        if r.starts_with("+OK") {
            again = Some(p);
            break;
        }
        assert!(r.starts_with("-ERR [IN-USE]"), "{r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut p = again.expect("the lock is released when the connection drops");
    assert!(p.cmd("STAT").await.starts_with("+OK 3 "));
}

#[tokio::test]
async fn auth_plain_pipelining_and_bad_input() {
    use base64::Engine;
    let s = common::server().await;
    fill(&s).await;
    let (u, pw) = s.users[0].clone();
    let b64 = base64::engine::general_purpose::STANDARD;

    let (mut p, greeting) = Pop::connect(&s).await;
    assert!(greeting.starts_with("+OK"));
    let (_, caps) = p.multi("CAPA").await;
    let caps = String::from_utf8(caps).unwrap();
    for c in [
        "TOP",
        "UIDL",
        "USER",
        "SASL PLAIN",
        "RESP-CODES",
        "AUTH-RESP-CODE",
        "PIPELINING",
    ] {
        assert!(caps.lines().any(|l| l == c), "{c} in {caps}");
    }
    assert!(p.cmd("STAT").await.starts_with("-ERR"), "not before login");
    assert!(p.cmd("PASS x").await.starts_with("-ERR"), "PASS needs USER");
    let wrong = b64.encode(format!("\0{u}\0wrong"));
    assert!(
        p.cmd(&format!("AUTH PLAIN {wrong}"))
            .await
            .starts_with("-ERR [AUTH]")
    );
    assert!(p.cmd("AUTH PLAIN not-base64!").await.starts_with("-ERR"));
    assert!(p.cmd("AUTH CRAM-MD5").await.starts_with("-ERR"));
    // AUTH PLAIN with the response on its own line, then cancelled.
    assert_eq!(p.cmd("AUTH PLAIN").await, "+ ");
    assert!(p.cmd("*").await.starts_with("-ERR"));
    assert_eq!(p.cmd("AUTH PLAIN").await, "+ ");
    let r = p.cmd(&b64.encode(format!("\0{u}\0{pw}"))).await;
    assert!(r.starts_with("+OK maildrop locked: 3 messages"), "{r}");

    // Pipelined: answered in order, all at once.
    p.send(b"NOOP\r\nSTAT\r\nLIST 1\r\nRETR 0\r\nRETR 99\r\nTOP 1 x\r\nDELE one\r\nSTAT 1 2\r\nFROB\r\nUSER x\r\n")
        .await;
    assert_eq!(p.line().await, "+OK");
    assert!(p.line().await.starts_with("+OK 3 "));
    assert!(p.line().await.starts_with("+OK 1 "));
    for _ in 0..7 {
        let l = p.line().await;
        assert!(l.starts_with("-ERR "), "{l}");
    }
    // A line past the limit ends the connection with an error.
    p.send(&[b'A'; 5000]).await;
    p.send(b"\r\n").await;
    assert!(p.line().await.starts_with("-ERR"));
    assert!(p.closed().await);
}

/// The alias's options: retrieved mail moved to a folder, or hidden from
/// later sessions.
#[tokio::test]
async fn retrieved_mail_is_moved_or_hidden_as_the_alias_chooses() {
    let s = common::server().await;
    fill(&s).await;
    let address = AliasAddress::try_from("ana@example.com").unwrap();
    let session = match s
        .router
        .request(
            &address,
            Op::Login {
                address: address.clone(),
                password: password(&s.users[0].1),
            },
        )
        .await
        .unwrap()
    {
        Reply::Session(id) => id,
        other => panic!("{other:?}"),
    };
    let set = |o: Pop3Settings| Op::WriteRecords {
        session,
        kind: RecordKind::Setting,
        writes: vec![RecordWrite::Put(settings::POP3, o.to_bytes())],
    };

    // Moved to Archive at QUIT; TOP alone does not count as retrieved.
    s.router
        .request(
            &address,
            set(Pop3Settings {
                move_retrieved_to: Some(FolderName::try_from("Archive").unwrap()),
                hide_retrieved: false,
            }),
        )
        .await
        .unwrap();
    let mut p = Pop::login(&s, 0).await;
    p.multi("RETR 1").await;
    p.multi("TOP 2 0").await;
    assert_eq!(p.cmd("QUIT").await, "+OK bye");
    let mut imap = Client::login(&s, 0).await;
    let r = imap.ok("STATUS INBOX (MESSAGES)").await.join("");
    assert!(r.contains("MESSAGES 2"), "{r}");
    let r = imap.ok("STATUS Archive (MESSAGES)").await.join("");
    assert!(r.contains("MESSAGES 1"), "{r}");

    // Hidden once retrieved: the next session lists only the rest, and
    // IMAP still shows everything.
    s.router
        .request(
            &address,
            set(Pop3Settings {
                move_retrieved_to: None,
                hide_retrieved: true,
            }),
        )
        .await
        .unwrap();
    let mut p = Pop::login(&s, 0).await;
    assert!(p.cmd("STAT").await.starts_with("+OK 2 "));
    let (_, uidl_before) = p.multi("UIDL").await;
    p.multi("RETR 1").await;
    assert_eq!(p.cmd("QUIT").await, "+OK bye");
    let mut p = Pop::login(&s, 0).await;
    assert!(p.cmd("STAT").await.starts_with("+OK 1 "));
    let (_, uidl_after) = p.multi("UIDL").await;
    let second = String::from_utf8(uidl_before)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .to_string();
    assert_eq!(
        String::from_utf8(uidl_after).unwrap(),
        format!("1 {second}\r\n"),
        "UIDLs stay"
    );
    let r = imap.ok("STATUS INBOX (MESSAGES)").await.join("");
    assert!(r.contains("MESSAGES 2"), "{r}");
}

/// A POP3 login is a live session like any other: mail queued while the
/// alias was offline is in the maildrop, and mail arriving during the
/// session is stored at once (for the next session); a silent connection
/// is closed by the timer, deleting nothing.
#[tokio::test]
async fn queued_mail_is_drained_at_login_and_silence_times_out() {
    use cofre_storage::mailbox::AppendOptions;
    use cofre_storage::primary::Delivery;
    let s = common::server_with(|c| c.idle_timeout = Duration::from_millis(700)).await;
    let ana = AliasAddress::try_from("ana@example.com").unwrap();
    let queued = s
        .primary
        .deliver(
            &ana,
            message("queued", "while away"),
            AppendOptions::default(),
        )
        .unwrap();
    assert!(matches!(queued, Delivery::Queued(_)), "{queued:?}");

    let mut p = Pop::login(&s, 0).await;
    let (_, body) = p.multi("RETR 1").await;
    assert_eq!(body, message("queued", "while away"));
    let live = s
        .primary
        .deliver(&ana, message("live", "during"), AppendOptions::default())
        .unwrap();
    assert!(matches!(live, Delivery::Stored(_)), "{live:?}");
    assert!(
        p.cmd("STAT").await.starts_with("+OK 1 "),
        "the maildrop is fixed for the session"
    );
    assert!(p.cmd("DELE 1").await.starts_with("+OK"));
    // Silence: the timer closes the connection, and nothing is deleted.
    let l = p.line().await;
    assert!(l.starts_with("-ERR"), "{l}");
    assert!(p.closed().await);
    let mut again = None;
    for _ in 0..100 {
        let (mut q, _) = Pop::connect(&s).await;
        q.cmd(&format!("USER {}", s.users[0].0)).await;
        if q.cmd(&format!("PASS {}", s.users[0].1))
            .await
            .starts_with("+OK")
        {
            again = Some(q);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut q = again.expect("logged in again");
    assert!(q.cmd("STAT").await.starts_with("+OK 2 "));
}
