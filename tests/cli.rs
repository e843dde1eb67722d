//! The `cofre` binary, run as an operator would: create an alias, import an
//! mbox, a Maildir and an .eml, export, rotate the password, delete.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn cofre(data: &Path, password: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cofre"));
    cmd.arg("--data")
        .arg(data)
        .args(args)
        .env_remove("COFRE_PASSWORD");
    if let Some(p) = password {
        cmd.env("COFRE_PASSWORD", p);
    }
    cmd.output().unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    assert!(!o.status.success());
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn an_operator_session() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");

    // Create: the password alone on the last line, or JSON.
    let out = ok(&cofre(
        &data,
        None,
        &[
            "alias",
            "create",
            "Hello@Example.com",
            "--quota",
            "10000000",
        ],
    ));
    let password = out.lines().last().unwrap().to_string();
    assert_eq!(password.len(), 29, "{out}");
    let json = ok(&cofre(
        &data,
        None,
        &["alias", "create", "bot@example.com", "--json"],
    ));
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["address"], "bot@example.com");
    assert_eq!(v["password"].as_str().unwrap().len(), 29);
    assert!(
        err(&cofre(
            &data,
            None,
            &["alias", "create", "hello@example.com"]
        ))
        .contains("already exists")
    );
    assert!(
        err(&cofre(&data, None, &["alias", "create", "not an address"])).contains("not an address")
    );
    let list = ok(&cofre(&data, None, &["alias", "list"]));
    assert!(
        list.contains("hello@example.com\t") && list.contains("10000000 bytes"),
        "{list}"
    );

    // Sources: an mbox with a >From line, a Maildir with flags, an .eml.
    let mbox = tmp.path().join("old.mbox");
    std::fs::write(
        &mbox,
        "From alice@example.org Mon May  6 10:00:00 2024\nFrom: alice@example.org\nSubject: mbox one\n\nHello\n>From the start\n\n\
         From bob@example.org Tue May  7 10:00:00 2024\nFrom: bob@example.org\nSubject: mbox two\n\nSecond\n",
    )
    .unwrap();
    let maildir = tmp.path().join("Maildir");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    std::fs::write(
        maildir.join("cur/1700000000.1.host:2,FS"),
        "Subject: maildir flagged\r\n\r\nx\r\n",
    )
    .unwrap();
    std::fs::write(
        maildir.join("new/1700000001.2.host"),
        "Subject: maildir new\r\n\r\ny\r\n",
    )
    .unwrap();
    let eml = tmp.path().join("one.eml");
    std::fs::write(&eml, "Subject: single eml\r\n\r\nz\r\n").unwrap();

    // Import needs the password: never from argv.
    assert!(
        err(&cofre(
            &data,
            None,
            &[
                "mailbox",
                "import",
                "hello@example.com",
                eml.to_str().unwrap()
            ]
        ))
        .contains("COFRE_PASSWORD")
    );
    assert!(
        err(&cofre(
            &data,
            Some("wrong"),
            &[
                "mailbox",
                "import",
                "hello@example.com",
                eml.to_str().unwrap()
            ]
        ))
        .contains("wrong password")
    );
    let out = ok(&cofre(
        &data,
        Some(&password),
        &[
            "mailbox",
            "import",
            "hello@example.com",
            mbox.to_str().unwrap(),
            maildir.to_str().unwrap(),
            eml.to_str().unwrap(),
            "--folder",
            "Imported/2024",
        ],
    ));
    assert!(
        out.contains("Imported 5 messages into Imported/2024 (0 refused)"),
        "{out}"
    );

    // Export and read it with the standard tool.
    let export = tmp.path().join("hello.db");
    ok(&cofre(
        &data,
        Some(&password),
        &[
            "mailbox",
            "export",
            "hello@example.com",
            "--out",
            export.to_str().unwrap(),
        ],
    ));
    let sql = format!(
        "PRAGMA key = '{password}';\nSELECT folder, keywords, replace(CAST(raw AS TEXT), char(10), '|') FROM messages ORDER BY uid;\n"
    );
    let mut child = Command::new("sqlcipher")
        .arg(&export)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sqlcipher must be installed (scripts/test installs it)");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), sql.as_bytes()).unwrap();
    let rows = String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap();
    assert!(
        rows.contains(
            "Imported/2024||From: alice@example.org|Subject: mbox one||Hello|From the start|"
        ),
        "{rows}"
    );
    assert!(
        rows.contains("Imported/2024|$flagged $seen|Subject: maildir flagged"),
        "{rows}"
    );
    assert!(rows.contains("Subject: single eml"), "{rows}");
    assert_eq!(rows.lines().count(), 5, "{rows}");

    // Rotate: the old password stops working, the mail stays.
    let out = ok(&cofre(
        &data,
        Some(&password),
        &["alias", "password", "hello@example.com"],
    ));
    let new_password = out.lines().last().unwrap().to_string();
    assert_ne!(new_password, password);
    assert!(
        err(&cofre(
            &data,
            Some(&password),
            &[
                "mailbox",
                "export",
                "hello@example.com",
                "--out",
                "/dev/null/x"
            ]
        ))
        .contains("wrong password")
    );
    let export2 = tmp.path().join("hello2.db");
    ok(&cofre(
        &data,
        Some(&new_password),
        &[
            "mailbox",
            "export",
            "hello@example.com",
            "--out",
            export2.to_str().unwrap(),
        ],
    ));

    // Delete: every file of the alias goes.
    ok(&cofre(
        &data,
        None,
        &["alias", "delete", "hello@example.com"],
    ));
    let left: Vec<_> = std::fs::read_dir(data.join("mailboxes")).unwrap().collect();
    assert_eq!(left.len(), 1, "only bot@'s mailbox remains");
    assert!(
        err(&cofre(
            &data,
            Some(&new_password),
            &["mailbox", "export", "hello@example.com", "--out", "x"]
        ))
        .contains("no such alias")
    );
}

#[test]
fn dkim_keys_are_made_once_per_domain_shown_as_a_record_and_rotated() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    ok(&cofre(&data, None, &["alias", "create", "a@example.com"]));
    let show = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["domain", "dkim", "example.com", "--json"];
        args.extend_from_slice(extra);
        let out = ok(&cofre(&data, None, &args));
        serde_json::from_str(out.trim()).unwrap()
    };
    let first = show(&[]);
    assert_eq!(first["domain"], "example.com");
    let selector = first["selector"].as_str().unwrap().to_string();
    assert_eq!(
        first["name"],
        format!("{selector}._domainkey.example.com").as_str()
    );
    let value = first["value"].as_str().unwrap();
    assert!(value.starts_with("v=DKIM1; k=rsa; p=MII"), "{value}");
    assert_eq!(show(&[]), first, "asking again shows the same key");

    // The zone-file form splits the key into strings DNS can carry.
    let text = ok(&cofre(&data, None, &["domain", "dkim", "example.com"]));
    let record = text.lines().last().unwrap();
    assert!(record.starts_with(&format!(
        "{selector}._domainkey.example.com. 3600 IN TXT ( \"v=DKIM1;"
    )));
    assert!(record.split('"').all(|part| part.len() <= 255), "{record}");

    let same = cofre(
        &data,
        None,
        &[
            "domain",
            "dkim",
            "example.com",
            "--rotate",
            "--selector",
            &selector,
        ],
    );
    assert!(err(&same).contains("already has selector"));
    let rotated = show(&["--rotate", "--selector", "next"]);
    assert_eq!(rotated["selector"], "next");
    assert_ne!(rotated["value"], first["value"], "a new key");
    assert_eq!(show(&[]), rotated, "the new key is the one in use");

    let unknown = cofre(&data, None, &["domain", "dkim", "elsewhere.org"]);
    assert!(err(&unknown).contains("not a hosted domain"));
}

#[test]
fn backups_are_taken_listed_and_copied_out_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let password = common::create_alias(&data, "hello@example.com");
    let eml = tmp.path().join("one.eml");
    std::fs::write(
        &eml,
        "From: a@b.c\r\nSubject: kept-in-backup\r\n\r\nbacked up words\r\n",
    )
    .unwrap();
    let import = [
        "mailbox",
        "import",
        "hello@example.com",
        eml.to_str().unwrap(),
    ];
    ok(&cofre(&data, Some(&password), &import));

    let run = ["backup", "run", "hello@example.com"];
    assert!(err(&cofre(&data, Some("wrong"), &run)).contains("wrong password"));
    let out = ok(&cofre(&data, Some(&password), &run));
    let id = out
        .strip_prefix("Stored backup ")
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("{out}"))
        .to_string();
    let out = ok(&cofre(&data, Some(&password), &run));
    assert_eq!(
        out.trim(),
        format!("Unchanged since backup {id}: nothing stored.")
    );
    let list = ok(&cofre(
        &data,
        Some(&password),
        &["backup", "list", "hello@example.com"],
    ));
    assert_eq!(list.lines().count(), 1, "{list}");
    assert!(list.starts_with(&id), "{list}");

    let copy = tmp.path().join("copy.bak");
    let out = ok(&cofre(
        &data,
        Some(&password),
        &[
            "backup",
            "download",
            "hello@example.com",
            &id,
            "--out",
            copy.to_str().unwrap(),
        ],
    ));
    assert!(out.contains("SHA-256 checked"), "{out}");
    let bytes = std::fs::read(&copy).unwrap();
    assert!(
        !bytes.windows(14).any(|w| w == b"kept-in-backup"),
        "no plaintext"
    );
    let stored = std::fs::read_dir(data.join("backups"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|f| f.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy() == format!("{id}.bak"))
        .unwrap();
    assert_eq!(bytes, std::fs::read(stored).unwrap());
    assert!(
        err(&cofre(
            &data,
            Some(&password),
            &[
                "backup",
                "download",
                "hello@example.com",
                "nope",
                "--out",
                "x"
            ],
        ))
        .contains("not found")
    );

    // Restored (with no server running): the second message is gone, and
    // the mailbox as it was is held until confirmed.
    let eml2 = tmp.path().join("two.eml");
    std::fs::write(&eml2, "From: a@b.c\r\nSubject: after\r\n\r\nlater\r\n").unwrap();
    let import2 = [
        "mailbox",
        "import",
        "hello@example.com",
        eml2.to_str().unwrap(),
    ];
    ok(&cofre(&data, Some(&password), &import2));
    let restore = ["backup", "restore", "hello@example.com", id.as_str()];
    let out = ok(&cofre(&data, Some(&password), &restore));
    assert!(out.starts_with(&format!("Restored backup {id}.")), "{out}");
    let list = ok(&cofre(
        &data,
        Some(&password),
        &["backup", "list", "hello@example.com"],
    ));
    assert_eq!(
        list.lines().filter(|l| l.ends_with("\theld")).count(),
        1,
        "{list}"
    );
    let mbox = tmp.path().join("after-restore");
    let export = [
        "mailbox",
        "export",
        "hello@example.com",
        "--format",
        "mbox",
        "--out",
        mbox.to_str().unwrap(),
    ];
    let out = ok(&cofre(&data, Some(&password), &export));
    assert!(out.starts_with("Exported 1 messages"), "{out}");

    // Beside a running server: no restore, and no second server.
    let mut server = common::Proc::start(
        &[
            "--data",
            data.to_str().unwrap(),
            "serve",
            "--http",
            "127.0.0.1:0",
        ],
        &[("COFRE_LINK", "off")],
    );
    server.wait_for("ready");
    let refused = err(&cofre(&data, Some(&password), &restore));
    assert!(refused.contains("a cofre server is running"), "{refused}");
    let second = cofre(
        &data,
        None,
        &["serve", "--http", "127.0.0.1:0", "--link", "off"],
    );
    assert!(err(&second).contains("a cofre server is running"));
    drop(server);
    let confirm = ["backup", "confirm-restore", "hello@example.com"];
    ok(&cofre(&data, Some(&password), &confirm));
    let list = ok(&cofre(
        &data,
        Some(&password),
        &["backup", "list", "hello@example.com"],
    ));
    assert!(!list.contains("held"), "{list}");

    // The alias deleted, no backup of it is left.
    ok(&cofre(
        &data,
        None,
        &["alias", "delete", "hello@example.com"],
    ));
    let left: Vec<_> = std::fs::read_dir(data.join("backups")).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_mailbox_exports_as_mbox_files_other_programs_read() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let password = common::create_alias(&data, "hello@example.com");
    let src = tmp.path().join("in.mbox");
    std::fs::write(
        &src,
        "From a@b.c Mon Jan  1 00:00:00 2024\n\
         From: a@b.c\nSubject: first\n\nplain body\n\n\
         From a@b.c Mon Jan  1 00:00:00 2024\n\
         From: a@b.c\nSubject: second\n\n>From the quoted line\nmore\n\n\
         From a@b.c Mon Jan  1 00:00:00 2024\n\
         From: a@b.c\nSubject: third\n\nlast one\n",
    )
    .unwrap();
    let import = |folder: &str| {
        ok(&cofre(
            &data,
            Some(&password),
            &[
                "mailbox",
                "import",
                "hello@example.com",
                src.to_str().unwrap(),
                "--folder",
                folder,
            ],
        ))
    };
    import("Archive/2024");
    let dir = tmp.path().join("mbox");
    let out = ok(&cofre(
        &data,
        Some(&password),
        &[
            "mailbox",
            "export",
            "hello@example.com",
            "--format",
            "mbox",
            "--out",
            dir.to_str().unwrap(),
        ],
    ));
    assert!(out.starts_with("Exported 3 messages"), "{out}");
    let file = dir.join("Archive.2024.mbox");
    let text = std::fs::read_to_string(&file).unwrap();
    // The import read the mboxrd quote off; the export puts it back.
    assert!(
        text.contains("\n>From the quoted line\n"),
        "mboxrd quoting: {text}"
    );
    assert!(!text.contains('\r'), "LF line ends");
    // Python's mailbox module, a reader we did not write, finds the three.
    let py = std::process::Command::new("python3")
        .args([
            "-c",
            "import mailbox,sys; print([m['subject'] for m in mailbox.mbox(sys.argv[1])])",
            file.to_str().unwrap(),
        ])
        .output()
        .expect("python3 must be installed");
    assert_eq!(
        String::from_utf8_lossy(&py.stdout).trim(),
        "['first', 'second', 'third']",
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("INBOX.mbox")).unwrap(),
        "",
        "an empty folder is an empty mbox"
    );
}

/// `mailbox import --imap`: every folder of another IMAP server (here a
/// `cofre serve` of another data directory, over implicit TLS and over
/// STARTTLS), byte for byte, with flags.
#[test]
fn a_mailbox_imports_every_folder_of_another_imap_server() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let src_pw = common::create_alias(&src, "old@example.com");
    // The inbox from a Maildir (one message seen and flagged), a nested
    // folder from an mbox.
    let maildir = tmp.path().join("Maildir");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    let flagged = b"From: a@b.c\r\nSubject: flagged one\r\n\r\nseen and flagged\r\n";
    std::fs::write(maildir.join("cur/1700000000.1.host:2,FS"), flagged).unwrap();
    let plain = b"From: a@b.c\r\nSubject: plain one\r\n\r\nnew mail\r\n";
    std::fs::write(maildir.join("new/1700000001.2.host"), plain).unwrap();
    let mbox = tmp.path().join("a.mbox");
    std::fs::write(
        &mbox,
        "From a@b.c Mon Jan  1 00:00:00 2024\nFrom: a@b.c\nSubject: archived 1\n\none\n\n\
         From a@b.c Mon Jan  1 00:00:00 2024\nFrom: a@b.c\nSubject: archived 2\n\ntwo\n",
    )
    .unwrap();
    let m = maildir.to_str().unwrap();
    ok(&cofre(
        &src,
        Some(&src_pw),
        &["mailbox", "import", "old@example.com", m],
    ));
    let b = mbox.to_str().unwrap();
    let args = [
        "mailbox",
        "import",
        "old@example.com",
        b,
        "--folder",
        "Old/Archive",
    ];
    ok(&cofre(&src, Some(&src_pw), &args));

    let mut server = common::Proc::start(
        &[
            "--data",
            src.to_str().unwrap(),
            "serve",
            "--http",
            "off",
            "--link",
            "off",
            "--imap",
            "127.0.0.1:0",
            "--imaps",
            "127.0.0.1:0",
        ],
        &[],
    );
    let imap = server.wait_for("imap listening on 127.0.0.1:");
    let imap = imap.split_whitespace().next().unwrap().to_string();
    let imaps = server.wait_for("imaps listening on 127.0.0.1:");
    let imaps = imaps.split_whitespace().next().unwrap().to_string();
    let ca = src.join("tls/cert.pem");

    let dst = tmp.path().join("dst");
    let dst_pw = common::create_alias(&dst, "new@example.com");
    let import = |url: &str, remote_pw: &str, under: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cofre"));
        cmd.arg("--data")
            .arg(&dst)
            .args([
                "mailbox",
                "import",
                "new@example.com",
                "--imap",
                url,
                "--ca",
            ])
            .arg(&ca)
            .env("COFRE_PASSWORD", &dst_pw)
            .env("COFRE_IMAP_PASSWORD", remote_pw);
        if let Some(u) = under {
            cmd.args(["--folder", u]);
        }
        cmd.output().unwrap()
    };
    let url = format!("imaps://old@example.com@localhost:{imaps}");
    assert!(err(&import(&url, "wrong", None)).contains("logging in"));
    let out = ok(&import(&url, &src_pw, None));
    assert!(out.starts_with("Imported 4 messages from "), "{out}");
    // STARTTLS, into a folder of its own.
    let url = format!("imap://old@example.com@localhost:{imap}");
    let out = ok(&import(&url, &src_pw, Some("Copy")));
    assert!(out.starts_with("Imported 4 messages from "), "{out}");
    drop(server);

    let store = cofre_storage::Store::open(&dst, cofre_storage::StoreConfig::default()).unwrap();
    let address = cofre_storage::AliasAddress::try_from("new@example.com").unwrap();
    let unlocked = store
        .unlock(&address, &cofre_storage::Password::new(dst_pw.clone()))
        .unwrap();
    let mb = store.open_mailbox(&unlocked).unwrap();
    let messages = |name: &str| -> Vec<(Vec<u8>, Vec<String>)> {
        let f = mb
            .folder_by_name(&cofre_storage::FolderName::try_from(name).unwrap())
            .unwrap();
        mb.folder_index(f.id)
            .unwrap()
            .into_iter()
            .map(|(_, e)| {
                let kws = mb.summary(e).unwrap().keywords;
                (
                    mb.raw(e).unwrap(),
                    kws.iter().map(|k| k.as_str().to_string()).collect(),
                )
            })
            .collect()
    };
    for inbox in ["INBOX", "Copy/INBOX"] {
        let got = messages(inbox);
        assert_eq!(got.len(), 2, "{inbox}");
        let f = got
            .iter()
            .find(|(raw, _)| raw == flagged)
            .expect("byte for byte");
        assert!(f.1.contains(&"$seen".to_string()) && f.1.contains(&"$flagged".to_string()));
        let p = got
            .iter()
            .find(|(raw, _)| raw == plain)
            .expect("byte for byte");
        assert!(!p.1.contains(&"$seen".to_string()));
    }
    for archive in ["Old/Archive", "Copy/Old/Archive"] {
        let subjects: Vec<bool> = messages(archive)
            .iter()
            .map(|(raw, _)| String::from_utf8_lossy(raw).contains("Subject: archived"))
            .collect();
        assert_eq!(subjects, [true, true], "{archive}");
    }
}
