//! The REST API end to end, against `cofre serve`: tokens, isolation between
//! aliases on every endpoint, bad input, throttling, and the mail flows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Proc, basic, create_alias, http_with};
use serde_json::{Value, json};

struct Server {
    _proc: Proc,
    addr: String,
    _tmp: tempfile::TempDir,
    ana: String,
    bo: String,
}

fn serve(config: &str) -> Server {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let ana = create_alias(&data, "ana@example.com");
    let bo = create_alias(&data, "bo@example.com");
    let file = tmp.path().join("cofre.toml");
    std::fs::write(&file, config).unwrap();
    let mut p = Proc::start(
        &[
            "--data",
            data.to_str().unwrap(),
            "serve",
            "--config",
            file.to_str().unwrap(),
            "--http",
            "127.0.0.1:0",
            "--link",
            "off",
        ],
        &[],
    );
    let addr = p.wait_for("http listening on http://");
    Server {
        _proc: p,
        addr,
        _tmp: tmp,
        ana,
        bo,
    }
}

/// A request with a JSON body (or none) and an Authorization header.
fn call(s: &Server, method: &str, path: &str, auth: &str, body: Option<Value>) -> (u16, Value) {
    let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    let mut headers = vec![("Authorization", auth)];
    if !bytes.is_empty() {
        headers.push(("Content-Type", "application/json"));
    }
    let r = http_with(&s.addr, method, path, &headers, &bytes);
    let v = if r.body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&r.body).unwrap_or(Value::Null)
    };
    (r.status, v)
}

fn token(s: &Server, address: &str, password: &str) -> String {
    let (status, v) = call(
        s,
        "POST",
        "/v1/session",
        "",
        Some(json!({"address": address, "password": password})),
    );
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["token_type"], "Bearer");
    format!("Bearer {}", v["token"].as_str().unwrap())
}

fn message(subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Carla <carla@example.net>\r\nTo: ana@example.com\r\nSubject: {subject}\r\n\
         Date: Mon, 2 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{subject}@example.net>\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

fn inbox(s: &Server, auth: &str) -> i64 {
    let (_, v) = call(s, "GET", "/v1/folders", auth, None);
    v.as_array()
        .unwrap()
        .iter()
        .find(|f| f["role"] == "inbox")
        .unwrap()["id"]
        .as_i64()
        .unwrap()
}

fn import(s: &Server, auth: &str, folder: i64, raw: &[u8]) -> i64 {
    let r = http_with(
        &s.addr,
        "POST",
        &format!("/v1/folders/{folder}/messages"),
        &[("Authorization", auth), ("Content-Type", "message/rfc822")],
        raw,
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    r.json()["id"].as_i64().unwrap()
}

#[test]
fn tokens_work_until_revoked_and_forged_ones_never() {
    let s = serve("");
    let t = token(&s, "ana@example.com", &s.ana);
    let (status, folders) = call(&s, "GET", "/v1/folders", &t, None);
    assert_eq!(status, 200);
    assert!(
        folders
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["role"] == "inbox")
    );

    // Tampered: one character of the signature changed.
    let mut forged = t.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    // A token from another cluster's secret.
    let foreign = {
        let signer = cofre_api::token::Signer::from_cluster_secret(b"some other cluster secret");
        let claims = cofre_api::token::Claims {
            sub: "ana@example.com".into(),
            aid: 1,
            jti: "x".into(),
            iat: 0,
            exp: i64::MAX,
            key: "AAAA".into(),
        };
        format!("Bearer {}", signer.sign(&claims))
    };
    for bad in [
        forged.as_str(),
        foreign.as_str(),
        "Bearer abc.def.ghi",
        "Bearer ",
        "Token x",
    ] {
        let r = http_with(
            &s.addr,
            "GET",
            "/v1/folders",
            &[("Authorization", bad)],
            b"",
        );
        assert_eq!(r.status, 401, "{bad}");
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/problem+json")
        );
        assert_eq!(r.json()["code"], "unauthorized");
    }

    // Revoked: refused from then on.
    assert_eq!(call(&s, "DELETE", "/v1/session", &t, None).0, 204);
    let (status, v) = call(&s, "GET", "/v1/folders", &t, None);
    assert_eq!(status, 401);
    assert_eq!(v["code"], "unauthorized");

    // Wrong password and unknown address: the same answer.
    let (s1, v1) = call(
        &s,
        "POST",
        "/v1/session",
        "",
        Some(json!({"address": "ana@example.com", "password": "nope"})),
    );
    let (s2, v2) = call(
        &s,
        "POST",
        "/v1/session",
        "",
        Some(json!({"address": "zed@example.com", "password": "nope"})),
    );
    assert_eq!((s1, s2), (401, 401));
    assert_eq!(v1, v2);
}

#[test]
fn tokens_expire() {
    let s = serve("[http]\ntoken_ttl_secs = 1\n");
    let t = token(&s, "ana@example.com", &s.ana);
    assert_eq!(call(&s, "GET", "/v1/quota", &t, None).0, 200);
    std::thread::sleep(Duration::from_millis(2100));
    let (status, v) = call(&s, "GET", "/v1/quota", &t, None);
    assert_eq!(status, 401);
    assert_eq!(v["code"], "unauthorized");
}

#[test]
fn one_alias_can_never_reach_anothers_mail() {
    let s = serve("");
    let ana = token(&s, "ana@example.com", &s.ana);
    let bo = basic("bo@example.com", &s.bo);
    // Bo has mail and a folder; Ana has nothing.
    let bo_inbox = inbox(&s, &bo);
    let bo_msg = import(&s, &bo, bo_inbox, &message("secret", "for bo only"));
    let (status, bo_folder) = call(
        &s,
        "POST",
        "/v1/folders",
        &bo,
        Some(json!({"name": "Private"})),
    );
    assert_eq!(status, 201);
    let bo_folder = bo_folder["id"].as_i64().unwrap();

    // Ana's view of the same ids: nothing exists.
    let ana_folders = call(&s, "GET", "/v1/folders", &ana, None).1;
    assert!(
        ana_folders
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["name"] != "Private")
    );
    for (method, path, body) in [
        ("GET", format!("/v1/messages/{bo_msg}"), None),
        ("GET", format!("/v1/messages/{bo_msg}/raw"), None),
        ("DELETE", format!("/v1/messages/{bo_msg}"), None),
        ("GET", format!("/v1/folders/{bo_folder}/messages"), None),
        (
            "PATCH",
            format!("/v1/folders/{bo_folder}"),
            Some(json!({"name": "Mine"})),
        ),
        ("DELETE", format!("/v1/folders/{bo_folder}"), None),
        (
            "POST",
            "/v1/messages/move".into(),
            Some(json!({"ids": [bo_msg], "from": bo_inbox, "to": bo_folder})),
        ),
        (
            "POST",
            "/v1/messages/copy".into(),
            Some(json!({"ids": [bo_msg], "from": bo_inbox, "to": bo_folder})),
        ),
    ] {
        let (status, v) = call(&s, method, &path, &ana, body);
        assert_eq!(status, 404, "{method} {path}: {v}");
        assert_eq!(v["code"], "not_found");
    }
    // Searching and listing find nothing of Bo's.
    let (_, found) = call(
        &s,
        "POST",
        "/v1/messages/search",
        &ana,
        Some(json!({"filter": {"op": "contains", "field": "text", "value": "secret"}})),
    );
    assert_eq!(found["messages"].as_array().unwrap().len(), 0);
    // Keywords and deletes on Bo's ids change nothing of Bo's.
    call(
        &s,
        "POST",
        "/v1/messages/keywords",
        &ana,
        Some(json!({"ids": [bo_msg], "add": ["$flagged"]})),
    );
    call(
        &s,
        "POST",
        "/v1/messages/delete",
        &ana,
        Some(json!({"ids": [bo_msg]})),
    );
    let (status, still) = call(&s, "GET", &format!("/v1/messages/{bo_msg}"), &bo, None);
    assert_eq!(status, 200);
    assert_eq!(still["keywords"].as_array().unwrap().len(), 0);
    // Bo's mail is Bo's, byte for byte.
    let r = http_with(
        &s.addr,
        "GET",
        &format!("/v1/messages/{bo_msg}/raw"),
        &[("Authorization", &bo)],
        b"",
    );
    assert_eq!(r.body, message("secret", "for bo only"));
}

#[test]
fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    let s = serve("[http]\nmax_body_mb = 1\n");
    let auth = basic("ana@example.com", &s.ana);
    let before = call(&s, "GET", "/v1/folders", &auth, None).1;
    let post = |path: &str, ctype: &str, body: &[u8]| {
        http_with(
            &s.addr,
            "POST",
            path,
            &[("Authorization", &auth), ("Content-Type", ctype)],
            body,
        )
    };
    for (body, why) in [
        (&b"{\"name\": "[..], "malformed JSON"),
        (&b"{\"name\": \"X\", \"evil\": 1}"[..], "unknown field"),
        (&b"{\"name\": 42}"[..], "wrong type"),
        (&b"{\"name\": \"\xff\xfe\"}"[..], "invalid UTF-8"),
        (&b"{\"name\": \"../../etc\"}"[..], "path traversal"),
        (&b"{\"name\": \"a//b\"}"[..], "empty level"),
        (&b"{\"name\": \"\"}"[..], "empty name"),
    ] {
        let r = post("/v1/folders", "application/json", body);
        assert_eq!(r.status, 400, "{why}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/problem+json"),
            "{why}"
        );
        assert_eq!(r.json()["code"], "invalid", "{why}");
    }
    let r = post("/v1/folders", "text/plain", b"{\"name\": \"X\"}");
    assert_eq!(r.status, 415);
    let huge = vec![b'a'; 2 << 20];
    let inbox = inbox(&s, &auth);
    let r = post(
        &format!("/v1/folders/{inbox}/messages"),
        "message/rfc822",
        &huge,
    );
    assert_eq!(r.status, 413);
    for (body, why) in [
        (
            json!({"filter": {"op": "regex", "field": "body", "pattern": "(unclosed"}}),
            "bad regex",
        ),
        (json!({"filter": {"op": "nonsense"}}), "unknown condition"),
        (json!({"filter": {"op": "all"}, "limit": 0}), "zero limit"),
        (
            json!({"filter": {"op": "all"}, "cursor": "garbage"}),
            "bad cursor",
        ),
        (
            json!({"filter": {"op": "all"}, "sort": "color"}),
            "bad sort",
        ),
        (
            json!({"filter": {"op": "keyword", "keyword": "bad keyword"}}),
            "bad keyword",
        ),
        (
            json!({"filter": {"op": "received_before", "at": "yesterday"}}),
            "bad date",
        ),
    ] {
        let (status, v) = call(&s, "POST", "/v1/messages/search", &auth, Some(body));
        assert_eq!(status, 400, "{why}: {v}");
    }
    let (status, v) = call(&s, "GET", "/v1/folders/abc/messages", &auth, None);
    assert_eq!(status, 400, "non-numeric id");
    assert_eq!(v["code"], "invalid");
    let (status, v) = call(
        &s,
        "GET",
        &format!("/v1/folders/{inbox}/messages?limit=x"),
        &auth,
        None,
    );
    assert_eq!(
        (status, v["code"].as_str()),
        (400, Some("invalid")),
        "bad query"
    );
    assert_eq!(
        call(&s, "GET", "/v1/folders", &auth, None).1,
        before,
        "nothing changed"
    );
}

#[test]
fn failed_logins_are_throttled_per_address() {
    let s = serve("");
    for _ in 0..5 {
        let (status, _) = call(
            &s,
            "GET",
            "/v1/quota",
            &basic("ana@example.com", "wrong"),
            None,
        );
        assert_eq!(status, 401);
    }
    // Now even the right password waits, and says how long.
    let r = http_with(
        &s.addr,
        "GET",
        "/v1/quota",
        &[("Authorization", &basic("ana@example.com", &s.ana))],
        b"",
    );
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["code"], "too_many_attempts");
    assert!(r.header("retry-after").is_some());
    // Another address is not affected.
    assert_eq!(
        call(
            &s,
            "GET",
            "/v1/quota",
            &basic("bo@example.com", &s.bo),
            None
        )
        .0,
        200
    );
}

#[test]
fn mail_flows_list_search_keywords_move_copy_delete() {
    let s = serve("");
    let auth = token(&s, "ana@example.com", &s.ana);
    let inbox = inbox(&s, &auth);
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(import(
            &s,
            &auth,
            inbox,
            &message(&format!("note-{i}"), &format!("invoice number {i}")),
        ));
    }
    // Pages of 3 with a cursor cover everything once, newest id first on ties.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("/v1/folders/{inbox}/messages?limit=3&sort=subject&cursor={c}"),
            None => format!("/v1/folders/{inbox}/messages?limit=3&sort=subject"),
        };
        let (status, page) = call(&s, "GET", &q, &auth, None);
        assert_eq!(status, 200, "{page}");
        for m in page["messages"].as_array().unwrap() {
            seen.push(m["subject"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let want: Vec<String> = (0..7).map(|i| format!("note-{i}")).collect();
    assert_eq!(seen, want);

    // Regex search.
    let (_, hits) = call(
        &s,
        "POST",
        "/v1/messages/search",
        &auth,
        Some(
            json!({"filter": {"op": "regex", "field": "body", "pattern": "number [35]\\b"}, "sort": "subject"}),
        ),
    );
    let subjects: Vec<&str> = hits["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["subject"].as_str().unwrap())
        .collect();
    assert_eq!(subjects, ["note-3", "note-5"]);

    // Keywords in bulk, then search by them.
    let (status, _) = call(
        &s,
        "POST",
        "/v1/messages/keywords",
        &auth,
        Some(json!({"ids": [ids[0], ids[1]], "add": ["$seen", "$flagged"]})),
    );
    assert_eq!(status, 200);
    let (_, flagged) = call(
        &s,
        "POST",
        "/v1/messages/search",
        &auth,
        Some(
            json!({"filter": {"op": "and", "of": [{"op": "keyword", "keyword": "$flagged"}, {"op": "not", "of": {"op": "all"}}]}}),
        ),
    );
    assert_eq!(flagged["messages"].as_array().unwrap().len(), 0);
    let (_, flagged) = call(
        &s,
        "POST",
        "/v1/messages/search",
        &auth,
        Some(json!({"filter": {"op": "keyword", "keyword": "$flagged"}})),
    );
    assert_eq!(flagged["messages"].as_array().unwrap().len(), 2);
    let (_, folders) = call(&s, "GET", "/v1/folders", &auth, None);
    let inbox_view = folders
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == inbox)
        .unwrap()
        .clone();
    assert_eq!(
        (inbox_view["total"].as_u64(), inbox_view["unseen"].as_u64()),
        (Some(7), Some(5))
    );

    // Move two to a new folder, copy one back, delete one.
    let (_, work) = call(
        &s,
        "POST",
        "/v1/folders",
        &auth,
        Some(json!({"name": "Work/2026"})),
    );
    let work = work["id"].as_i64().unwrap();
    let (status, moved) = call(
        &s,
        "POST",
        "/v1/messages/move",
        &auth,
        Some(json!({"ids": [ids[2], ids[3]], "from": inbox, "to": work})),
    );
    assert_eq!(status, 200, "{moved}");
    assert_eq!(moved["uids"].as_array().unwrap().len(), 2);
    let (status, _) = call(
        &s,
        "POST",
        "/v1/messages/copy",
        &auth,
        Some(json!({"ids": [ids[2]], "from": work, "to": inbox})),
    );
    assert_eq!(status, 200);
    assert_eq!(
        call(
            &s,
            "DELETE",
            &format!("/v1/messages/{}", ids[4]),
            &auth,
            None
        )
        .0,
        204
    );
    assert_eq!(
        call(&s, "GET", &format!("/v1/messages/{}", ids[4]), &auth, None).0,
        404
    );
    let (_, msg) = call(&s, "GET", &format!("/v1/messages/{}", ids[2]), &auth, None);
    assert_eq!(msg["folders"].as_array().unwrap().len(), 2, "{msg}");
    assert_eq!(msg["from"][0]["email"], "carla@example.net");
    assert_eq!(msg["sent_at"], "2026-11-02T10:00:00Z");

    // Rename and unsubscribe; quota counts what is stored.
    let (status, renamed) = call(
        &s,
        "PATCH",
        &format!("/v1/folders/{work}"),
        &auth,
        Some(json!({"name": "Work/Archive", "subscribed": false})),
    );
    assert_eq!(status, 200, "{renamed}");
    assert_eq!(
        (renamed["name"].as_str(), renamed["subscribed"].as_bool()),
        (Some("Work/Archive"), Some(false))
    );
    let (_, quota) = call(&s, "GET", "/v1/quota", &auth, None);
    assert!(quota["used"].as_u64().unwrap() > 0);

    // The reference page and the document are served.
    let docs = http_with(&s.addr, "GET", "/docs/", &[], b"");
    assert_eq!(docs.status, 200);
    assert!(String::from_utf8_lossy(&docs.body).contains("swagger"));
    let doc = http_with(&s.addr, "GET", "/openapi.json", &[], b"");
    let committed: Value =
        serde_json::from_str(&std::fs::read_to_string("openapi/openapi.json").unwrap()).unwrap();
    assert_eq!(doc.json(), committed);
}

#[test]
fn bodies_come_back_safe_and_attachments_by_range() {
    let s = serve("");
    let auth = basic("ana@example.com", &s.ana);
    let inbox = inbox(&s, &auth);
    let raw = b"From: x@example.net\r\nTo: ana@example.com\r\nSubject: mixed\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
--b1\r\nContent-Type: multipart/alternative; boundary=\"b2\"\r\n\r\n\
--b2\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlain caf\xc3\xa9.\r\n\
--b2\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p onmouseover=\"x()\">Hello<script>steal()</script>\
<img src=\"https://tracker.example/p.gif\"></p>\r\n--b2--\r\n\
--b1\r\nContent-Type: application/pdf; name=\"report.pdf\"\r\nContent-Disposition: attachment; filename=\"report.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\nMDEyMzQ1Njc4OQ==\r\n--b1--\r\n";
    let id = import(&s, &auth, inbox, raw);
    let (status, body) = call(&s, "GET", &format!("/v1/messages/{id}/body"), &auth, None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["text"].as_str().unwrap().trim(), "Plain café.");
    let html = body["html"].as_str().unwrap();
    assert!(html.contains("Hello"), "{html}");
    for gone in ["script", "steal", "onmouseover", "tracker.example"] {
        assert!(!html.contains(gone), "{gone} in {html}");
    }
    let (_, remote) = call(
        &s,
        "GET",
        &format!("/v1/messages/{id}/body?remote=true"),
        &auth,
        None,
    );
    assert!(remote["html"].as_str().unwrap().contains("tracker.example"));
    assert!(
        body["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["name"] == "Subject" && h["value"] == "mixed")
    );
    let attachment = &body["attachments"][0];
    assert_eq!(attachment["filename"], "report.pdf");
    assert_eq!(attachment["content_type"], "application/pdf");
    assert_eq!(attachment["size"], 10);

    let path = format!("/v1/messages/{id}/attachments/0");
    let whole = http_with(&s.addr, "GET", &path, &[("Authorization", &auth)], b"");
    assert_eq!(whole.status, 200);
    assert_eq!(whole.body, b"0123456789");
    assert_eq!(
        whole.header("content-disposition").as_deref(),
        Some("attachment; filename=\"report.pdf\"")
    );
    let part = http_with(
        &s.addr,
        "GET",
        &path,
        &[("Authorization", &auth), ("Range", "bytes=2-5")],
        b"",
    );
    assert_eq!(part.status, 206);
    assert_eq!(part.body, b"2345");
    assert_eq!(
        part.header("content-range").as_deref(),
        Some("bytes 2-5/10")
    );
    let bad = http_with(
        &s.addr,
        "GET",
        &path,
        &[("Authorization", &auth), ("Range", "bytes=20-")],
        b"",
    );
    assert_eq!(bad.status, 416);
    assert_eq!(bad.header("content-range").as_deref(), Some("bytes */10"));
    let none = http_with(
        &s.addr,
        "GET",
        &format!("/v1/messages/{id}/attachments/5"),
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(none.status, 404);
}

#[test]
fn the_operator_administers_domains_aliases_quotas_forwards_and_webhooks() {
    let s = serve("[http]\nadmin_token = \"an admin token of some length\"\n");
    let admin = "Bearer an admin token of some length";
    // Alias credentials and wrong tokens open nothing here.
    let ana = basic("ana@example.com", &s.ana);
    for bad in [ana.as_str(), "Bearer wrong", ""] {
        let (status, v) = call(&s, "GET", "/v1/admin/aliases", bad, None);
        assert_eq!(status, 401, "{bad}: {v}");
    }
    let (_, domains) = call(&s, "GET", "/v1/admin/domains", admin, None);
    assert_eq!(domains, json!([{"name": "example.com", "aliases": 2}]));
    // A domain must be hosted before it has aliases.
    let (status, v) = call(
        &s,
        "POST",
        "/v1/admin/aliases",
        admin,
        Some(json!({"address": "x@new.example"})),
    );
    assert_eq!(status, 404, "{v}");
    assert_eq!(
        call(
            &s,
            "POST",
            "/v1/admin/domains",
            admin,
            Some(json!({"name": "New.Example"}))
        )
        .0,
        201
    );
    assert_eq!(
        call(
            &s,
            "POST",
            "/v1/admin/domains",
            admin,
            Some(json!({"name": "new.example"}))
        )
        .0,
        409
    );
    let (status, created) = call(
        &s,
        "POST",
        "/v1/admin/aliases",
        admin,
        Some(json!({"address": "x@new.example", "quota": 1000})),
    );
    assert_eq!(status, 201, "{created}");
    let password = created["password"].as_str().unwrap().to_string();
    assert_eq!(
        call(
            &s,
            "POST",
            "/v1/admin/aliases",
            admin,
            Some(json!({"address": "x@new.example"}))
        )
        .0,
        409
    );
    // The password works, and is never shown again.
    let x = basic("x@new.example", &password);
    let (_, quota) = call(&s, "GET", "/v1/quota", &x, None);
    assert_eq!(quota["limit"], 1000);
    let (_, listed) = call(
        &s,
        "GET",
        "/v1/admin/aliases?domain=new.example",
        admin,
        None,
    );
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert!(listed[0].get("password").is_none());
    // Quotas apply at once: over it, an import is refused with 507.
    let inbox = inbox(&s, &x);
    let r = http_with(
        &s.addr,
        "POST",
        &format!("/v1/folders/{inbox}/messages"),
        &[("Authorization", &x), ("Content-Type", "message/rfc822")],
        &vec![b'a'; 2000],
    );
    assert_eq!(r.status, 507);
    assert_eq!(
        call(
            &s,
            "PUT",
            "/v1/admin/aliases/x@new.example/quota",
            admin,
            Some(json!({"quota": null}))
        )
        .0,
        204
    );
    let r = http_with(
        &s.addr,
        "POST",
        &format!("/v1/folders/{inbox}/messages"),
        &[("Authorization", &x), ("Content-Type", "message/rfc822")],
        &message("big", &"a".repeat(2000)),
    );
    assert_eq!(r.status, 201);
    // Forwards and webhooks.
    assert_eq!(
        call(
            &s,
            "POST",
            "/v1/admin/aliases/x@new.example/forwards",
            admin,
            Some(json!({"recipient": "copy@elsewhere.example"}))
        )
        .0,
        204
    );
    assert_eq!(
        call(
            &s,
            "GET",
            "/v1/admin/aliases/x@new.example/forwards",
            admin,
            None
        )
        .1,
        json!(["copy@elsewhere.example"])
    );
    assert_eq!(
        call(
            &s,
            "DELETE",
            "/v1/admin/aliases/x@new.example/forwards/copy@elsewhere.example",
            admin,
            None
        )
        .0,
        204
    );
    let (status, hook) = call(
        &s,
        "POST",
        "/v1/admin/aliases/x@new.example/webhooks",
        admin,
        Some(json!({"url": "https://hooks.example/in"})),
    );
    assert_eq!(status, 201);
    assert_eq!(hook["secret"].as_str().unwrap().len(), 64);
    let (_, hooks) = call(
        &s,
        "GET",
        "/v1/admin/aliases/x@new.example/webhooks",
        admin,
        None,
    );
    assert_eq!(
        hooks,
        json!([{"id": hook["id"], "url": "https://hooks.example/in"}])
    );
    assert_eq!(
        call(
            &s,
            "POST",
            "/v1/admin/aliases/x@new.example/webhooks",
            admin,
            Some(json!({"url": "ftp://x"}))
        )
        .0,
        400
    );
    assert_eq!(
        call(
            &s,
            "DELETE",
            &format!("/v1/admin/aliases/x@new.example/webhooks/{}", hook["id"]),
            admin,
            None
        )
        .0,
        204
    );
    // The mailbox keeps its copy unless told otherwise.
    let delivery = "/v1/admin/aliases/x@new.example/delivery";
    assert_eq!(
        call(&s, "GET", delivery, admin, None).1,
        json!({"mailbox": true})
    );
    assert_eq!(
        call(&s, "PUT", delivery, admin, Some(json!({"mailbox": false}))),
        (200, json!({"mailbox": false}))
    );
    assert_eq!(
        call(&s, "GET", delivery, admin, None).1,
        json!({"mailbox": false})
    );
    assert_eq!(
        call(&s, "PUT", delivery, admin, Some(json!({"mailbox": "no"}))).0,
        400
    );
    assert_eq!(
        call(
            &s,
            "GET",
            "/v1/admin/aliases/nobody@new.example/delivery",
            admin,
            None
        )
        .0,
        404
    );
    // A domain with aliases stays; delete the alias (its sessions end), then the domain.
    assert_eq!(
        call(&s, "DELETE", "/v1/admin/domains/new.example", admin, None).0,
        400
    );
    assert_eq!(
        call(&s, "DELETE", "/v1/admin/aliases/x@new.example", admin, None).0,
        204
    );
    assert_eq!(call(&s, "GET", "/v1/quota", &x, None).0, 401);
    assert_eq!(
        call(&s, "DELETE", "/v1/admin/domains/new.example", admin, None).0,
        204
    );
}

#[test]
fn the_admin_api_is_off_without_a_token() {
    let s = serve("");
    let (status, v) = call(
        &s,
        "GET",
        "/v1/admin/domains",
        "Bearer anything at all here",
        None,
    );
    assert_eq!(status, 403);
    assert_eq!(v["code"], "admin_disabled");
}

#[test]
fn a_password_change_ends_every_session_and_token() {
    let s = serve("");
    let t = token(&s, "ana@example.com", &s.ana);
    let (status, v) = call(
        &s,
        "POST",
        "/v1/password",
        &t,
        Some(json!({"current_password": "wrong"})),
    );
    assert_eq!(status, 401, "{v}");
    let (status, v) = call(
        &s,
        "POST",
        "/v1/password",
        &t,
        Some(json!({"current_password": s.ana})),
    );
    assert_eq!(status, 200, "{v}");
    let new = v["password"].as_str().unwrap().to_string();
    assert_ne!(new, s.ana);
    assert_eq!(call(&s, "GET", "/v1/quota", &t, None).0, 401, "old token");
    assert_eq!(
        call(
            &s,
            "GET",
            "/v1/quota",
            &basic("ana@example.com", &s.ana),
            None
        )
        .0,
        401,
        "old password"
    );
    assert_eq!(
        call(
            &s,
            "GET",
            "/v1/quota",
            &basic("ana@example.com", &new),
            None
        )
        .0,
        200
    );
    let t2 = token(&s, "ana@example.com", &new);
    assert_eq!(call(&s, "GET", "/v1/quota", &t2, None).0, 200);
}

#[test]
fn the_export_downloads_a_file_sqlcipher_opens_with_the_password() {
    let s = serve("");
    let t = token(&s, "ana@example.com", &s.ana);
    let inbox = inbox(&s, &t);
    import(&s, &t, inbox, &message("exported", "kept in the export"));
    let (status, v) = call(
        &s,
        "POST",
        "/v1/export",
        &t,
        Some(json!({"password": "wrong"})),
    );
    assert_eq!(status, 401, "{v}");
    let body = json!({"password": s.ana}).to_string();
    let r = http_with(
        &s.addr,
        "POST",
        "/v1/export",
        &[("Authorization", &t), ("Content-Type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/vnd.sqlite3")
    );
    assert!(!r.body.starts_with(b"SQLite format 3"), "encrypted");
    assert!(!r.body.windows(8).any(|w| w == b"exported"), "no plaintext");
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("ana.db");
    std::fs::write(&file, &r.body).unwrap();
    let mut child = std::process::Command::new("sqlcipher")
        .arg(&file)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sqlcipher must be installed (scripts/test installs it)");
    let sql = format!("PRAGMA key = '{}';\nSELECT folder FROM messages;\n", s.ana);
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), sql.as_bytes()).unwrap();
    let rows = String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap();
    assert!(rows.contains("INBOX"), "{rows}");

    // A folder as an mbox; folder ids are each mailbox's own.
    let r = http_with(
        &s.addr,
        "GET",
        &format!("/v1/folders/{inbox}/mbox"),
        &[("Authorization", &t)],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/mbox")
    );
    let text = String::from_utf8(r.body).unwrap();
    assert!(text.starts_with("From MAILER-DAEMON "), "{text}");
    assert!(text.contains("\nSubject: exported\n"), "{text}");
    let bo = basic("bo@example.com", &s.bo);
    let r = http_with(
        &s.addr,
        "GET",
        &format!("/v1/folders/{inbox}/mbox"),
        &[("Authorization", &bo)],
        b"",
    );
    assert!(
        !String::from_utf8_lossy(&r.body).contains("exported"),
        "Bo's folder of that id is Bo's"
    );
    let (status, v) = call(&s, "GET", "/v1/folders/999999/mbox", &t, None);
    assert_eq!(status, 404, "{v}");
}

#[test]
fn browsers_of_configured_origins_may_call_the_api() {
    let s = serve("[http]\ncors_origins = [\"https://app.example.com\"]\n");
    let preflight = |origin: &str| {
        http_with(
            &s.addr,
            "OPTIONS",
            "/v1/folders",
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "GET"),
                ("Access-Control-Request-Headers", "authorization"),
            ],
            b"",
        )
    };
    let ok = preflight("https://app.example.com");
    assert_eq!(
        ok.header("access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    let other = preflight("https://evil.example");
    assert_eq!(other.header("access-control-allow-origin"), None);
}

/// `/v1/settings/pop3`: the defaults, a folder for retrieved mail that
/// must exist and not be the Inbox, unknown fields refused, and the
/// setting kept per alias.
#[test]
fn pop3_settings_are_read_and_set() {
    let s = serve("");
    let ana = basic("ana@example.com", &s.ana);
    let bo = basic("bo@example.com", &s.bo);
    let (status, v) = call(&s, "GET", "/v1/settings/pop3", &ana, None);
    assert_eq!(status, 200);
    assert_eq!(
        v,
        json!({"move_retrieved_to": null, "hide_retrieved": false})
    );
    for (body, why) in [
        (
            json!({"move_retrieved_to": "Nowhere", "hide_retrieved": false}),
            "no such folder",
        ),
        (
            json!({"move_retrieved_to": "INBOX", "hide_retrieved": false}),
            "the Inbox itself",
        ),
        (
            json!({"hide_retrieved": true, "colour": "red"}),
            "unknown field",
        ),
        (json!({"move_retrieved_to": null}), "missing field"),
    ] {
        let (status, v) = call(&s, "PUT", "/v1/settings/pop3", &ana, Some(body));
        assert_eq!(status, 400, "{why}: {v}");
        assert_eq!(v["status"], 400, "problem+json: {v}");
    }
    let want = json!({"move_retrieved_to": "Archive", "hide_retrieved": true});
    let (status, v) = call(&s, "PUT", "/v1/settings/pop3", &ana, Some(want.clone()));
    assert_eq!((status, v), (200, want.clone()));
    assert_eq!(call(&s, "GET", "/v1/settings/pop3", &ana, None).1, want);
    let (_, theirs) = call(&s, "GET", "/v1/settings/pop3", &bo, None);
    assert_eq!(
        theirs["hide_retrieved"], false,
        "another alias's settings are its own"
    );
}

/// `/v1/backups`: a backup taken on demand is stored, encrypted, under a
/// random name; taken again unchanged it is not stored twice; one new
/// message makes a new version; each alias sees only its own.
#[test]
fn backups_are_taken_on_demand_and_listed() {
    let s = serve("");
    let ana = basic("ana@example.com", &s.ana);
    let bo = basic("bo@example.com", &s.bo);
    import(
        &s,
        &ana,
        inbox(&s, &ana),
        &message("backed-up-subject", "backed-up body"),
    );
    let (status, first) = call(&s, "POST", "/v1/backups", &ana, None);
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["stored"], true);
    let id = first["backup"]["id"].as_str().unwrap().to_string();
    let (status, again) = call(&s, "POST", "/v1/backups", &ana, None);
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        (again["stored"].clone(), again["backup"]["id"].clone()),
        (json!(false), json!(id))
    );
    import(&s, &ana, inbox(&s, &ana), &message("second", "more"));
    let (status, second) = call(&s, "POST", "/v1/backups", &ana, None);
    assert_eq!((status, second["stored"].clone()), (201, json!(true)));
    let (_, list) = call(&s, "GET", "/v1/backups", &ana, None);
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str(), second["backup"]["id"].as_str().unwrap()]);
    assert_eq!(
        call(&s, "GET", "/v1/backups", &bo, None).1,
        json!([]),
        "Bo has none"
    );

    // On disk: named by the random id, holding no plaintext.
    let mut files = Vec::new();
    for dir in std::fs::read_dir(s._tmp.path().join("data/backups")).unwrap() {
        for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let f = f.unwrap().path();
            // Beside the backups, the lock one backup task holds at a time.
            if f.extension().is_some_and(|e| e == "bak") {
                files.push(f);
            }
        }
    }
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(
        files
            .iter()
            .any(|f| f.file_name().unwrap().to_string_lossy() == format!("{id}.bak"))
    );
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        assert!(list[0]["size"].as_u64().is_some());
        for needle in [&b"backed-up"[..], b"ana@example.com", b"carla"] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "plaintext in {f:?}"
            );
        }
    }

    // Downloaded: the file as stored, its SHA-256 as the ETag.
    let r = http_with(
        &s.addr,
        "GET",
        &format!("/v1/backups/{id}"),
        &[("Authorization", &ana)],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/octet-stream")
    );
    let on_disk = files
        .iter()
        .find(|f| f.file_name().unwrap().to_string_lossy() == format!("{id}.bak"))
        .unwrap();
    assert_eq!(
        r.body,
        std::fs::read(on_disk).unwrap(),
        "the download is the file"
    );
    assert_eq!(
        r.header("etag"),
        Some(format!("\"{}\"", list[0]["sha256"].as_str().unwrap()))
    );
    // Another alias's backup is nobody else's to read, delete or restore.
    for (method, path) in [
        ("GET", format!("/v1/backups/{id}")),
        ("DELETE", format!("/v1/backups/{id}")),
        ("POST", format!("/v1/backups/{id}/restore")),
    ] {
        let (status, v) = call(&s, method, &path, &bo, None);
        assert_eq!(status, 404, "{method} {path}: {v}");
        assert_eq!(v["code"], "not_found", "{v}");
    }

    // Restored: the first version (one message) is the mailbox again; the
    // mailbox as it was (two) is held until confirmed.
    let count = |auth: &str| {
        let inbox = inbox(&s, auth);
        let (_, page) = call(
            &s,
            "GET",
            &format!("/v1/folders/{inbox}/messages"),
            auth,
            None,
        );
        page["messages"].as_array().unwrap().len()
    };
    assert_eq!(count(&ana), 2);
    let (status, restored) = call(&s, "POST", &format!("/v1/backups/{id}/restore"), &ana, None);
    assert_eq!(status, 200, "{restored}");
    assert_eq!(restored["restored"], json!(id));
    assert_eq!(restored["replaced"]["held"], true);
    assert_eq!(count(&ana), 1, "the restored version");
    let held = restored["replaced"]["id"].as_str().unwrap().to_string();
    let (_, list) = call(&s, "GET", "/v1/backups", &ana, None);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|b| b["id"] == json!(held) && b["held"] == true),
        "{list}"
    );
    let (status, _) = call(&s, "POST", "/v1/backups/confirm-restore", &ana, None);
    assert_eq!(status, 204);
    let (_, list) = call(&s, "GET", "/v1/backups", &ana, None);
    assert!(list.as_array().unwrap().iter().all(|b| b["held"] == false));

    // Deleted: gone from the list and the disk.
    let (status, _) = call(&s, "DELETE", &format!("/v1/backups/{id}"), &ana, None);
    assert_eq!(status, 204);
    assert!(!on_disk.exists());
    let (status, v) = call(&s, "GET", &format!("/v1/backups/{id}"), &ana, None);
    assert_eq!(status, 404, "{v}");
}
