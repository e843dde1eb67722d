//! Backups and restores cut short by SIGKILL in `cofre serve`: after a
//! restart the live mailbox is intact and usable, and no half-written
//! backup is listed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Proc, basic, create_alias, http_with};

/// Messages in the mailbox: enough (about 40 MB, incompressible) that a
/// backup or a restore lasts long enough to be caught half-way.
const MESSAGES: usize = 2000;

/// An mbox of `n` messages, each with a 20 KB incompressible attachment
/// (binary: stored, not indexed for search, so the import is quick).
fn mbox(n: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = Vec::new();
    for i in 0..n {
        out.extend_from_slice(
            format!(
                "From sender@example.com Thu Jan  1 00:00:00 2026\n\
                 From: sender@example.com\nTo: ana@example.com\n\
                 Subject: filler {i}\nMessage-ID: <filler-{i}@example.com>\n\
                 MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n\
                 --b\nContent-Type: text/plain\n\nfiller {i}\n\
                 --b\nContent-Type: application/octet-stream\n\
                 Content-Transfer-Encoding: base64\n\n"
            )
            .as_bytes(),
        );
        for _ in 0..256 {
            for _ in 0..76 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                out.push(
                    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
                        [(state % 64) as usize],
                );
            }
            out.push(b'\n');
        }
        out.extend_from_slice(b"--b--\n");
    }
    out
}

fn serve(data: &Path) -> (Proc, String) {
    let mut p = Proc::start(
        &[
            "--data",
            data.to_str().unwrap(),
            "serve",
            "--http",
            "127.0.0.1:0",
            "--link",
            "off",
        ],
        &[],
    );
    let addr = p.wait_for("http listening on http://");
    (p, addr)
}

/// A mailbox of [`MESSAGES`] messages, imported with the command line.
fn filled(tmp: &Path) -> (PathBuf, String) {
    let data = tmp.join("data");
    let password = create_alias(&data, "ana@example.com");
    let file = tmp.join("filler.mbox");
    std::fs::write(&file, mbox(MESSAGES)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cofre"))
        .args(["--data", data.to_str().unwrap(), "mailbox", "import"])
        .args(["ana@example.com", file.to_str().unwrap()])
        .env("COFRE_PASSWORD", &password)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    (data, password)
}

fn call(addr: &str, method: &str, path: &str, auth: &str) -> (u16, serde_json::Value) {
    let r = http_with(addr, method, path, &[("Authorization", auth)], b"");
    let v = serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null);
    (r.status, v)
}

fn message_count(addr: &str, auth: &str) -> u64 {
    let (status, folders) = call(addr, "GET", "/v1/folders", auth);
    assert_eq!(status, 200, "{folders}");
    folders
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["role"] == "inbox")
        .unwrap()["total"]
        .as_u64()
        .unwrap()
}

/// Starts `method path` on another thread, waits until `appears` holds
/// (the operation is half-way), then kills the server with SIGKILL.
fn kill_during(p: &mut Proc, addr: &str, auth: &str, path: &str, appears: impl Fn() -> bool) {
    let (addr2, auth2, path2) = (addr.to_string(), auth.to_string(), path.to_string());
    let request = std::thread::spawn(move || {
        let r = std::panic::catch_unwind(|| {
            http_with(&addr2, "POST", &path2, &[("Authorization", &auth2)], b"")
        });
        r.map(|r| r.status).ok()
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while !appears() {
        assert!(Instant::now() < deadline, "the operation never began");
        assert!(
            !request.is_finished(),
            "it ended before it could be cut short"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    p.child.kill().unwrap();
    p.child.wait().unwrap();
    let answered = request.join().unwrap();
    assert!(
        !matches!(answered, Some(s) if (200..300).contains(&s)),
        "acknowledged before the kill: {answered:?}"
    );
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(d) => d
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// The one mailbox's backup folder.
fn backup_dir(data: &Path) -> PathBuf {
    let mailbox = files_in(&data.join("mailboxes"))
        .into_iter()
        .find(|n| n.ends_with(".sqlite"))
        .unwrap();
    data.join("backups")
        .join(mailbox.trim_end_matches(".sqlite"))
}

#[test]
fn a_backup_killed_half_way_lists_nothing_and_the_mailbox_is_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, password) = filled(tmp.path());
    let auth = basic("ana@example.com", &password);
    let (mut p, addr) = serve(&data);
    assert_eq!(message_count(&addr, &auth), MESSAGES as u64);
    let dir = backup_dir(&data);
    kill_during(&mut p, &addr, &auth, "/v1/backups", || {
        files_in(&dir).iter().any(|n| n.starts_with(".tmp-"))
    });

    let (_p, addr) = serve(&data);
    let (_, list) = call(&addr, "GET", "/v1/backups", &auth);
    assert_eq!(
        list,
        serde_json::json!([]),
        "nothing half-written is listed"
    );
    assert_eq!(message_count(&addr, &auth), MESSAGES as u64);
    // Usable: the next run stores a whole backup and clears the leftover.
    let (status, run) = call(&addr, "POST", "/v1/backups", &auth);
    assert_eq!(status, 201, "{run}");
    let id = run["backup"]["id"].as_str().unwrap();
    assert_eq!(files_in(&dir), [".lock".to_string(), format!("{id}.bak")]);
}

#[test]
fn a_restore_killed_half_way_leaves_the_live_mailbox_as_it_was() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, password) = filled(tmp.path());
    let auth = basic("ana@example.com", &password);
    let (mut p, addr) = serve(&data);
    let (status, run) = call(&addr, "POST", "/v1/backups", &auth);
    assert_eq!(status, 201, "{run}");
    let id = run["backup"]["id"].as_str().unwrap().to_string();
    // One message more than the backup holds.
    let inbox = {
        let (_, folders) = call(&addr, "GET", "/v1/folders", &auth);
        folders
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["role"] == "inbox")
            .unwrap()["id"]
            .as_i64()
            .unwrap()
    };
    let r = http_with(
        &addr,
        "POST",
        &format!("/v1/folders/{inbox}/messages"),
        &[("Authorization", &auth), ("Content-Type", "message/rfc822")],
        b"Subject: after the backup\r\n\r\nonly in the live mailbox\r\n",
    );
    assert_eq!(r.status, 201);
    let mailboxes = data.join("mailboxes");
    kill_during(
        &mut p,
        &addr,
        &auth,
        &format!("/v1/backups/{id}/restore"),
        || {
            files_in(&mailboxes)
                .iter()
                .any(|n| n.ends_with(".restoring"))
        },
    );

    let (_p, addr) = serve(&data);
    assert_eq!(
        message_count(&addr, &auth),
        MESSAGES as u64 + 1,
        "the live mailbox, not the backup"
    );
    let r = http_with(
        &addr,
        "POST",
        &format!("/v1/folders/{inbox}/messages"),
        &[("Authorization", &auth), ("Content-Type", "message/rfc822")],
        b"Subject: after the restart\r\n\r\nwritable\r\n",
    );
    assert_eq!(r.status, 201, "usable after the restart");
    // And the restore, run again whole, puts the backup back.
    let (status, v) = call(&addr, "POST", &format!("/v1/backups/{id}/restore"), &auth);
    assert_eq!(status, 200, "{v}");
    assert_eq!(message_count(&addr, &auth), MESSAGES as u64);
    assert!(
        !files_in(&mailboxes)
            .iter()
            .any(|n| n.ends_with(".restoring")),
        "{:?}",
        files_in(&mailboxes)
    );
}
