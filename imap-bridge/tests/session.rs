//! The IMAP server on a real socket with an in-process primary behind it:
//! RFC examples, byte-exact bodies, concurrent sessions, IDLE, bad input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Client, message, server, server_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greeting_capability_and_login() {
    let s = server().await;
    let (mut c, greeting) = Client::connect(s.addr).await;
    assert!(
        greeting.starts_with("* OK [CAPABILITY IMAP4rev1 IMAP4rev2"),
        "{greeting}"
    );
    assert!(greeting.contains("AUTH=PLAIN"), "{greeting}");
    let r = c.run("SELECT INBOX").await;
    assert!(r[0].starts_with("t1 BAD"), "{r:?}");
    let r = c.run(&format!("LOGIN {} wrong", s.users[0].0)).await;
    assert!(r[0].starts_with("t2 NO [AUTHENTICATIONFAILED]"), "{r:?}");
    let r = c.run("LOGIN nobody@example.com wrong").await;
    assert!(
        r[0].starts_with("t3 NO [AUTHENTICATIONFAILED]"),
        "same answer: {r:?}"
    );
    // SASL-IR: base64("\0ana@example.com\0password").
    use base64::Engine;
    let ir = base64::engine::general_purpose::STANDARD
        .encode(format!("\0{}\0{}", s.users[0].0, s.users[0].1));
    let r = c.ok(&format!("AUTHENTICATE PLAIN {ir}")).await;
    assert!(
        r[0].contains("[CAPABILITY ") && r[0].contains("IDLE"),
        "{r:?}"
    );
    let r = c.ok("NAMESPACE").await;
    assert_eq!(r[0], "* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n");
    let r = c.ok("LOGOUT").await;
    assert!(r[0].starts_with("* BYE"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_session_is_byte_exact() {
    let s = server().await;
    let mut c = Client::login(&s, 0).await;
    let r = c.ok("LIST \"\" \"*\"").await;
    assert!(
        r.iter()
            .any(|l| l == "* LIST (\\HasNoChildren) \"/\" \"INBOX\"\r\n"),
        "{r:?}"
    );
    assert!(
        r.iter()
            .any(|l| l.contains("\\Sent") && l.contains("\"Sent\"")),
        "{r:?}"
    );
    c.ok("CREATE Work/Projekte-&AOQ-").await;
    let r = c.ok("LIST \"\" Work/%").await;
    assert_eq!(
        r[0],
        "* LIST (\\HasNoChildren) \"/\" \"Work/Projekte-&AOQ-\"\r\n"
    );
    let r = c.ok("LIST \"\" %").await;
    assert!(
        r.iter()
            .any(|l| l == "* LIST (\\HasChildren) \"/\" \"Work\"\r\n"),
        "{r:?}"
    );

    let mut msg = message("first", "Hello.\r\n.dot line\r\n\r\nbye");
    msg.extend_from_slice(b"\r\n\x00binary\xff\r\n");
    let r = c.append("INBOX", "\\Flagged", &msg).await;
    assert!(r.last().unwrap().contains("[APPENDUID "), "{r:?}");
    let r = c.ok("SELECT INBOX").await;
    assert!(r.contains(&"* 1 EXISTS\r\n".to_string()), "{r:?}");
    assert!(r.last().unwrap().contains("[READ-WRITE]"));
    c.send(b"f1 FETCH 1 (FLAGS RFC822.SIZE UID BODY.PEEK[])\r\n")
        .await;
    let mut expected = format!(
        "* 1 FETCH (FLAGS (\\Flagged) RFC822.SIZE {} UID 1 BODY[] {{{}}}\r\n",
        msg.len(),
        msg.len()
    )
    .into_bytes();
    expected.extend_from_slice(&msg);
    expected.extend_from_slice(b")\r\n");
    assert_eq!(c.response_bytes().await, expected, "BODY[] is byte-exact");
    assert!(c.response().await.starts_with("f1 OK"));
    let r = c.ok("FETCH 1 (ENVELOPE)").await;
    assert!(
        r[0].contains("\"first\" ((\"Ana\" NIL \"ana\" \"example.com\"))"),
        "{:?}",
        r[0]
    );
    let r = c.ok("FETCH 1 BODY[HEADER.FIELDS (SUBJECT)]").await;
    assert!(
        r[0].contains("BODY[HEADER.FIELDS (SUBJECT)] {18}\r\nSubject: first\r\n\r\n"),
        "{r:?}"
    );
    assert!(
        r[0].contains("\\Seen"),
        "BODY[] without PEEK sets \\Seen: {r:?}"
    );
    let r = c.ok("UID SEARCH UNSEEN").await;
    assert_eq!(r[0], "* SEARCH\r\n");
    let r = c.ok("SEARCH SUBJECT first SEEN FLAGGED").await;
    assert_eq!(r[0], "* SEARCH 1\r\n");
    let r = c.ok("STORE 1 -FLAGS.SILENT (\\Seen)").await;
    assert_eq!(r.len(), 1, "silent: {r:?}");
    let r = c.ok("STORE 1 +FLAGS ($Label1)").await;
    assert!(
        r[0].contains("FLAGS (") && r[0].contains("$label1"),
        "{r:?}"
    );
    let r = c.ok("COPY 1 Work").await;
    assert!(r.last().unwrap().contains("[COPYUID "), "{r:?}");
    let r = c.ok("STATUS Work (MESSAGES UIDNEXT UNSEEN SIZE)").await;
    assert_eq!(
        r[0],
        format!(
            "* STATUS \"Work\" (MESSAGES 1 UIDNEXT 2 UNSEEN 1 SIZE {})\r\n",
            msg.len()
        )
    );
    let r = c.ok("MOVE 1 Trash").await;
    assert!(r.iter().any(|l| l.starts_with("* OK [COPYUID ")), "{r:?}");
    assert!(r.contains(&"* 1 EXPUNGE\r\n".to_string()), "{r:?}");
    c.ok("SELECT Trash").await;
    let r = c.ok("UID FETCH 1:* BODY.PEEK[]").await;
    assert!(
        r[0].ends_with(&format!("{})\r\n", String::from_utf8_lossy(&msg))),
        "byte-exact after MOVE"
    );
    c.ok("STORE 1 +FLAGS (\\Deleted)").await;
    let r = c.ok("EXPUNGE").await;
    assert_eq!(r[0], "* 1 EXPUNGE\r\n");
    let r = c.ok("STATUS Trash (MESSAGES)").await;
    assert_eq!(r[0], "* STATUS \"Trash\" (MESSAGES 0)\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sessions_see_each_others_changes_with_right_sequence_numbers() {
    let s = server().await;
    let mut a = Client::login(&s, 0).await;
    let mut b = Client::login(&s, 0).await;
    for i in 1..=5 {
        a.append("INBOX", "", &message(&format!("m{i}"), "x")).await;
    }
    a.ok("SELECT INBOX").await;
    let r = b.ok("SELECT INBOX").await;
    assert!(r.contains(&"* 5 EXISTS\r\n".to_string()));
    a.ok("STORE 2 +FLAGS (\\Deleted)").await;
    a.ok("STORE 4 +FLAGS (\\Deleted)").await;
    let r = b.ok("NOOP").await;
    assert!(
        r.iter()
            .any(|l| l.starts_with("* 2 FETCH (UID 2 FLAGS (\\Deleted))")),
        "{r:?}"
    );
    let r = a.ok("EXPUNGE").await;
    assert_eq!(r[..2], ["* 4 EXPUNGE\r\n", "* 2 EXPUNGE\r\n"]);
    // B is told inside FETCH? No: expunges wait for a command that allows them.
    let r = b.ok("FETCH 1:* (UID)").await;
    assert!(!r.iter().any(|l| l.contains("EXPUNGE")), "{r:?}");
    let r = b.ok("NOOP").await;
    assert_eq!(r[..2], ["* 4 EXPUNGE\r\n", "* 2 EXPUNGE\r\n"], "{r:?}");
    let r = b.ok("FETCH 1:* (UID)").await;
    let uids: Vec<&str> = r[..3].iter().map(|l| l.trim_end()).collect();
    assert_eq!(
        uids,
        [
            "* 1 FETCH (UID 1)",
            "* 2 FETCH (UID 3)",
            "* 3 FETCH (UID 5)"
        ]
    );
    a.append("INBOX", "", &message("m6", "x")).await;
    let r = b.ok("NOOP").await;
    assert!(r.contains(&"* 4 EXISTS\r\n".to_string()), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_hears_about_new_mail_within_a_second() {
    let s = server().await;
    let mut a = Client::login(&s, 0).await;
    let mut b = Client::login(&s, 0).await;
    b.ok("SELECT INBOX").await;
    b.send(b"i1 IDLE\r\n").await;
    assert!(b.response().await.starts_with("+ "));
    let started = Instant::now();
    a.append("INBOX", "", &message("news", "x")).await;
    let line = b.response().await;
    assert_eq!(line, "* 1 EXISTS\r\n");
    assert!(started.elapsed() < Duration::from_secs(1));
    // Mail delivered by MX (the primary) is news too.
    s.primary
        .deliver(
            &cofre_storage::AliasAddress::try_from("ana@example.com").unwrap(),
            message("delivered", "y"),
            Default::default(),
        )
        .unwrap();
    assert_eq!(b.response().await, "* 2 EXISTS\r\n");
    b.send(b"DONE\r\n").await;
    assert_eq!(b.response().await, "i1 OK IDLE terminated\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_bad_and_the_session_goes_on() {
    let s = server_with(|c| c.max_line = 1024).await;
    let (mut c, _) = Client::connect(s.addr).await;
    for junk in [
        "\r\n",
        "x\r\n",
        "a1 FROB\r\n",
        "a2 FETCH\r\n",
        "a3 LOGIN \"unterminated\r\n",
        "a4 SEARCH ((((((((((((((((((((((((((((((((((((((((ALL))))))))))))))))))))))))))))))))))))))))\r\n",
        "\u{0}\u{1}\u{ff}\r\n",
    ] {
        c.send(junk.as_bytes()).await;
        let r = c.response().await;
        assert!(r.contains(" BAD "), "{junk:?} → {r}");
    }
    c.ok("NOOP").await;
    // A too-large literal before login is refused without reading it.
    c.send(b"a5 LOGIN {100000}\r\n").await;
    assert!(c.response().await.starts_with("a5 BAD"));
    c.ok("NOOP").await;
    // A line past the limit ends the connection with BYE.
    let mut long = b"a6 NOOP ".to_vec();
    long.extend(std::iter::repeat_n(b'x', 4096));
    long.extend_from_slice(b"\r\n");
    c.send(&long).await;
    assert!(c.response().await.starts_with("* BYE"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn condstore_qresync_and_esearch() {
    let s = server().await;
    let mut c = Client::login(&s, 0).await;
    for i in 1..=4 {
        c.append("INBOX", "", &message(&format!("q{i}"), "x")).await;
    }
    let r = c.ok("ENABLE QRESYNC").await;
    assert_eq!(r[0], "* ENABLED QRESYNC\r\n");
    let r = c.ok("SELECT INBOX").await;
    let modseq: u64 = r
        .iter()
        .find_map(|l| l.strip_prefix("* OK [HIGHESTMODSEQ "))
        .and_then(|l| l.split(']').next())
        .unwrap()
        .parse()
        .unwrap();
    let validity: u32 = r
        .iter()
        .find_map(|l| l.strip_prefix("* OK [UIDVALIDITY "))
        .and_then(|l| l.split(']').next())
        .unwrap()
        .parse()
        .unwrap();
    c.ok("STORE 1 +FLAGS (\\Seen)").await;
    c.ok("STORE 3 +FLAGS (\\Deleted)").await;
    let r = c.ok("EXPUNGE").await;
    assert_eq!(r[0], "* VANISHED 3\r\n", "QRESYNC reports VANISHED");
    let r = c
        .ok(&format!("UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq})"))
        .await;
    assert_eq!(r.len(), 2, "only the changed message: {r:?}");
    assert!(
        r[0].starts_with("* 1 FETCH (UID 1 FLAGS (\\Seen) MODSEQ ("),
        "{r:?}"
    );
    let r = c
        .ok(&format!("SELECT INBOX (QRESYNC ({validity} {modseq} 1:4))"))
        .await;
    assert!(
        r.contains(&"* VANISHED (EARLIER) 3\r\n".to_string()),
        "{r:?}"
    );
    assert!(
        r.iter()
            .any(|l| l.starts_with("* 1 FETCH (UID 1 FLAGS (\\Seen) MODSEQ")),
        "{r:?}"
    );
    let r = c.ok("UID SEARCH RETURN (MIN MAX COUNT ALL) ALL").await;
    assert_eq!(r[0], "* ESEARCH UID MIN 1 MAX 4 COUNT 3 ALL 1:2,4\r\n");
    let r = c.ok("STORE 1 (UNCHANGEDSINCE 1) +FLAGS (\\Flagged)").await;
    assert!(r.last().unwrap().contains("[MODIFIED 1]"), "{r:?}");
    let r = c.ok("UID SORT (REVERSE SUBJECT) UTF-8 ALL").await;
    assert_eq!(r[0], "* SORT 4 2 1\r\n");
    let r = c.ok("THREAD ORDEREDSUBJECT UTF-8 ALL").await;
    assert_eq!(r[0], "* THREAD (1)(2)(3)\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compress_deflate_carries_the_session() {
    use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = server().await;
    let mut c = Client::login(&s, 0).await;
    c.append("INBOX", "", &message("zipped", "compressed body"))
        .await;
    let r = c.ok("COMPRESS DEFLATE").await;
    assert!(r[0].contains("OK DEFLATE active"), "{r:?}");
    let mut enc = Compress::new(Compression::default(), false);
    let mut dec = Decompress::new(false);
    let stream = c.r.get_mut();
    let mut wire = Vec::with_capacity(256);
    enc.compress_vec(
        b"z1 SELECT INBOX\r\nz2 FETCH 1 BODY.PEEK[TEXT]\r\nz3 COMPRESS DEFLATE\r\n",
        &mut wire,
        FlushCompress::Sync,
    )
    .unwrap();
    stream.write_all(&wire).await.unwrap();
    let mut plain = Vec::with_capacity(1 << 16);
    let mut buf = [0u8; 4096];
    let text = loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&plain));
        let mut input = &buf[..n];
        while !input.is_empty() {
            let before = dec.total_in();
            plain.reserve(8192);
            dec.decompress_vec(input, &mut plain, FlushDecompress::None)
                .unwrap();
            input = &input[(dec.total_in() - before) as usize..];
        }
        let text = String::from_utf8_lossy(&plain).into_owned();
        if text.contains("z3 ") {
            break text;
        }
    };
    assert!(text.contains("z1 OK [READ-WRITE]"), "{text}");
    assert!(text.contains("compressed body"), "{text}");
    assert!(text.contains("z3 NO [COMPRESSIONACTIVE]"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_throttled_and_silence_is_timed_out() {
    let s = server_with(|c| c.preauth_timeout = Duration::from_millis(300)).await;
    let (mut c, _) = Client::connect(s.addr).await;
    let user = &s.users[1].0;
    for _ in 0..5 {
        let r = c.run(&format!("LOGIN {user} wrong")).await;
        assert!(r[0].contains("NO [AUTHENTICATIONFAILED]"), "{r:?}");
    }
    // Now even the right password is refused for a while.
    let r = c.run(&format!("LOGIN {user} \"{}\"", s.users[1].1)).await;
    assert!(r[0].contains("NO [UNAVAILABLE]"), "{r:?}");
    // Before login, silence ends the connection with BYE.
    let (mut quiet, _) = Client::connect(s.addr).await;
    let line = quiet.response().await;
    assert!(line.starts_with("* BYE"), "{line}");
    // SEARCH with a charset we do not have is a NO [BADCHARSET].
    let mut d = Client::login(&s, 0).await;
    d.ok("SELECT INBOX").await;
    let r = d.run("SEARCH CHARSET KOI8-R ALL").await;
    assert!(r[0].contains("NO [BADCHARSET"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailbox_deleted_under_a_session_ends_it_with_bye() {
    let s = server().await;
    let mut a = Client::login(&s, 0).await;
    let mut b = Client::login(&s, 0).await;
    a.ok("CREATE Doomed").await;
    a.append("Doomed", "", &message("d", "x")).await;
    a.ok("SELECT Doomed").await;
    let r = a.ok("SELECT INBOX").await;
    assert_eq!(r[0], "* OK [CLOSED] previous mailbox closed\r\n");
    a.ok("SELECT Doomed").await;
    b.ok("DELETE Doomed").await;
    a.send(b"n1 NOOP\r\n").await;
    let line = a.response().await;
    assert!(line.starts_with("* BYE"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_the_primary_ended_says_bye() {
    let s = server().await;
    let mut a = Client::login(&s, 0).await;
    a.ok("SELECT INBOX").await;
    // A password change ends every session of the alias.
    let (user, pass) = &s.users[0];
    let p = std::sync::Arc::clone(&s.primary);
    let (user, pass) = (user.clone(), pass.clone());
    tokio::task::spawn_blocking(move || {
        p.change_password(
            &cofre_storage::AliasAddress::try_from(user.as_str()).unwrap(),
            &common::password(&pass),
        )
        .unwrap()
    })
    .await
    .unwrap();
    let r = a.run("STATUS INBOX (MESSAGES)").await;
    assert!(r[0].contains("NO [UNAVAILABLE]"), "{r:?}");
    let bye = a.response().await;
    assert!(bye.starts_with("* BYE [UNAVAILABLE]"), "{bye}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn utf8_accept_and_modified_utf7_name_the_same_mailbox() {
    let s = server().await;
    let mut a = Client::login(&s, 0).await;
    a.ok("CREATE Caf&AOk-").await;
    let mut b = Client::login(&s, 0).await;
    let r = b.ok("ENABLE UTF8=ACCEPT").await;
    assert_eq!(r[0], "* ENABLED UTF8=ACCEPT\r\n");
    let r = b.ok("LIST \"\" Caf*").await;
    assert_eq!(r[0], "* LIST (\\HasNoChildren) \"/\" {5}\r\nCafé\r\n");
    b.ok("SELECT {5+}\r\nCafé").await;
    let r = a.ok("LIST \"\" Caf*").await;
    assert_eq!(r[0], "* LIST (\\HasNoChildren) \"/\" \"Caf&AOk-\"\r\n");
    let r = a.run("SELECT Caf&AOk").await;
    assert!(r[0].contains("BAD"), "not valid modified UTF-7: {r:?}");
}

/// A restore from backup renews UIDVALIDITY: a client with the folder
/// selected is told to go (its UIDs mean nothing now), and a new SELECT
/// shows the restored mail under the new UIDVALIDITY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_sends_selected_clients_away_with_a_new_uidvalidity() {
    let server = common::server().await;
    let mut c = Client::login(&server, 0).await;
    c.append("INBOX", "", &common::message("before", "kept"))
        .await;
    let r = c.ok("SELECT INBOX").await;
    let validity = |lines: &[String]| {
        lines
            .iter()
            .find_map(|l| l.split("[UIDVALIDITY ").nth(1))
            .and_then(|v| v.split(']').next())
            .map(str::to_string)
            .unwrap()
    };
    let before = validity(&r);
    let p = std::sync::Arc::clone(&server.primary);
    let (user, pw) = server.users[0].clone();
    let session = tokio::task::spawn_blocking(move || {
        let address = cofre_storage::AliasAddress::try_from(user.as_str()).unwrap();
        p.login(&address, &common::password(&pw)).unwrap()
    })
    .await
    .unwrap();
    let p = std::sync::Arc::clone(&server.primary);
    let id = tokio::task::spawn_blocking(move || match p.backup(session).unwrap() {
        cofre_storage::backup::BackupOutcome::Stored(b) => b.id,
        other => panic!("{other:?}"),
    })
    .await
    .unwrap();
    c.append(
        "INBOX",
        "",
        &common::message("after", "dropped by the restore"),
    )
    .await;
    let p = std::sync::Arc::clone(&server.primary);
    tokio::task::spawn_blocking(move || p.restore(session, &id).unwrap())
        .await
        .unwrap();
    let r = c.run("NOOP").await;
    assert!(
        r.iter()
            .any(|l| l.starts_with("* BYE [UNAVAILABLE] the mailbox was restored")),
        "{r:?}"
    );

    let mut c = Client::login(&server, 0).await;
    let r = c.ok("SELECT INBOX").await;
    assert!(r.iter().any(|l| l.trim_end() == "* 1 EXISTS"), "{r:?}");
    assert_ne!(validity(&r), before);
}
