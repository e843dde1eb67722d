//! JMAP against `cofre serve`: the session resource, the RFC 8620 request
//! and error examples, result references, and mail read through
//! Mailbox/get, Email/query and Email/get.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Proc, basic, create_alias, http_with};
use serde_json::{Value, json};

const CORE: &str = "urn:ietf:params:jmap:core";
const MAIL: &str = "urn:ietf:params:jmap:mail";

struct Server {
    _proc: Proc,
    addr: String,
    _tmp: tempfile::TempDir,
    ana: String,
    ana_password: String,
    bo: String,
    /// The IMAP listener, when asked for (`--imap`).
    imap: Option<String>,
    /// The MX listener, when asked for (`--smtp`).
    smtp: Option<String>,
}

fn serve() -> Server {
    serve_with(&[], &[])
}

/// `cofre serve` with two aliases and these extra arguments and
/// environment.
fn serve_with(extra: &[&str], env: &[(&str, &str)]) -> Server {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let ana_password = create_alias(&data, "ana@example.com");
    let ana = basic("ana@example.com", &ana_password);
    let bo = basic("bo@example.com", &create_alias(&data, "bo@example.com"));
    let mut args = vec![
        "--data",
        data.to_str().unwrap(),
        "serve",
        "--http",
        "127.0.0.1:0",
        "--link",
        "off",
    ];
    args.extend_from_slice(extra);
    let mut p = Proc::start(&args, env);
    let addr = p.wait_for("http listening on http://");
    p.wait_for("ready");
    let imap = p.seen.iter().find_map(|l| {
        l.strip_prefix("imap listening on ")
            .and_then(|r| r.split_whitespace().next())
            .map(str::to_string)
    });
    let smtp = p.seen.iter().find_map(|l| {
        l.strip_prefix("smtp listening on ")
            .and_then(|r| r.split_whitespace().next())
            .map(str::to_string)
    });
    Server {
        _proc: p,
        addr,
        _tmp: tmp,
        ana,
        ana_password,
        bo,
        imap,
        smtp,
    }
}

/// POSTs raw bytes to the API endpoint: (status, content type, JSON).
fn post(s: &Server, auth: &str, body: &[u8]) -> (u16, String, Value) {
    let r = http_with(
        &s.addr,
        "POST",
        "/jmap/api",
        &[
            ("Authorization", auth),
            ("Content-Type", "application/json"),
        ],
        body,
    );
    let ctype = r
        .headers
        .lines()
        .find_map(|l| {
            l.strip_prefix("content-type: ")
                .or(l.strip_prefix("Content-Type: "))
        })
        .unwrap_or("")
        .trim()
        .to_string();
    (
        r.status,
        ctype,
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    )
}

fn api(s: &Server, auth: &str, using: &[&str], calls: Value) -> Value {
    let (status, _, v) = post(
        s,
        auth,
        json!({"using": using, "methodCalls": calls})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(status, 200, "{v}");
    v
}

fn session(s: &Server, auth: &str) -> Value {
    let r = http_with(
        &s.addr,
        "GET",
        "/.well-known/jmap",
        &[("Authorization", auth)],
        b"",
    );
    assert_eq!(r.status, 200);
    r.json()
}

/// Ana's mail account id, from the session resource.
fn account(s: &Server) -> String {
    session(s, &s.ana)["primaryAccounts"][MAIL]
        .as_str()
        .unwrap()
        .to_string()
}

fn import(s: &Server, auth: &str, raw: &str) {
    let folders = http_with(
        &s.addr,
        "GET",
        "/v1/folders",
        &[("Authorization", auth)],
        b"",
    )
    .json();
    let inbox = folders
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["role"] == "inbox")
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    let r = http_with(
        &s.addr,
        "POST",
        &format!("/v1/folders/{inbox}/messages"),
        &[("Authorization", auth), ("Content-Type", "message/rfc822")],
        raw.as_bytes(),
    );
    assert_eq!(r.status, 201);
}

#[test]
fn the_session_resource_describes_the_account_and_its_limits() {
    let s = serve();
    let v = session(&s, &s.ana);
    assert_eq!(v["username"], "ana@example.com");
    let account = v["primaryAccounts"][MAIL].as_str().unwrap();
    assert_eq!(v["primaryAccounts"][CORE], account);
    assert!(
        account
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    );
    assert_eq!(v["accounts"][account]["name"], "ana@example.com");
    assert_eq!(v["accounts"][account]["isPersonal"], true);
    assert_eq!(v["capabilities"][CORE]["maxCallsInRequest"], 32);
    // Absolute URLs, as the client reached the server.
    assert_eq!(v["apiUrl"], format!("http://{}/jmap/api", s.addr));
    assert_eq!(
        v["uploadUrl"],
        format!("http://{}/jmap/upload/{{accountId}}/", s.addr)
    );
    let bo = session(&s, &s.bo);
    assert_ne!(
        bo["primaryAccounts"][MAIL], account,
        "each alias its own account"
    );
    let r = http_with(&s.addr, "GET", "/.well-known/jmap", &[], b"");
    assert_eq!(r.status, 401);
}

#[test]
fn rfc8620_core_echo_and_request_errors() {
    let s = serve();
    // RFC 8620 §4.1.1: Core/echo returns its arguments.
    let v = api(
        &s,
        &s.ana,
        &[CORE],
        json!([["Core/echo", {"hello": true, "high": 5}, "b3ff"]]),
    );
    assert_eq!(
        v["methodResponses"],
        json!([["Core/echo", {"hello": true, "high": 5}, "b3ff"]])
    );
    assert!(v["sessionState"].is_string());

    // §3.6.1: request-level errors are problem details.
    let (status, ctype, v) = post(&s, &s.ana, b"{not json");
    assert_eq!((status, ctype.as_str()), (400, "application/problem+json"));
    assert_eq!(v["type"], "urn:ietf:params:jmap:error:notJSON");
    let (status, _, v) = post(&s, &s.ana, br#"{"using": [], "methodCalls": {}}"#);
    assert_eq!(status, 400);
    assert_eq!(v["type"], "urn:ietf:params:jmap:error:notRequest");
    let (_, _, v) = post(
        &s,
        &s.ana,
        json!({"using": ["urn:ietf:params:jmap:core", "https://example.com/apis/foobar"], "methodCalls": []})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(v["type"], "urn:ietf:params:jmap:error:unknownCapability");
    let many: Vec<Value> = (0..33)
        .map(|i| json!(["Core/echo", {}, format!("c{i}")]))
        .collect();
    let (status, _, v) = post(
        &s,
        &s.ana,
        json!({"using": [CORE], "methodCalls": many})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(status, 400);
    assert_eq!(v["type"], "urn:ietf:params:jmap:error:limit");
    assert_eq!(v["limit"], "maxCallsInRequest");

    // §3.6.2: method-level errors answer that call only.
    let v = api(
        &s,
        &s.ana,
        &[CORE, MAIL],
        json!([
            ["Nope/get", {}, "a"],
            ["Mailbox/get", {"accountId": "elsewhere"}, "b"],
            ["Mailbox/get", {}, "c"],
            ["Core/echo", {"still": "here"}, "d"]
        ]),
    );
    let r = &v["methodResponses"];
    assert_eq!(
        r[0],
        json!(["error", {"type": "unknownMethod", "description": "Nope/get is not a method here"}, "a"])
    );
    assert_eq!(r[1][0], "error");
    assert_eq!(r[1][1]["type"], "accountNotFound");
    assert_eq!(r[2][1]["type"], "invalidArguments");
    assert_eq!(r[3], json!(["Core/echo", {"still": "here"}, "d"]));
    // Mail methods need the mail capability in `using`.
    let v = api(
        &s,
        &s.ana,
        &[CORE],
        json!([["Mailbox/get", {"accountId": "x"}, "a"]]),
    );
    assert_eq!(v["methodResponses"][0][1]["type"], "unknownMethod");
    // createdIds comes back as given.
    let (_, _, v) = post(
        &s,
        &s.ana,
        json!({"using": [CORE], "methodCalls": [], "createdIds": {"k1": "e1"}})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(v["createdIds"], json!({"k1": "e1"}));
}

#[test]
fn mail_is_read_with_queries_and_result_references() {
    let s = serve();
    for (i, subject) in ["Lunch plans", "Quarterly report", "Re: Lunch plans"]
        .iter()
        .enumerate()
    {
        import(
            &s,
            &s.ana,
            &format!(
                "From: Carla <carla@example.net>\r\nTo: ana@example.com\r\nSubject: {subject}\r\n\
                 Date: Mon, 2 Nov 2026 10:0{i}:00 +0000\r\nMessage-ID: <m{i}@example.net>\r\n\r\nbody number {i} about {subject}\r\n"
            ),
        );
    }
    import(&s, &s.bo, "Subject: bo's own\r\n\r\nprivate\r\n");
    let account = account(&s);

    let v = api(
        &s,
        &s.ana,
        &[CORE, MAIL],
        json!([["Mailbox/get", {"accountId": account, "ids": null}, "0"]]),
    );
    let list = v["methodResponses"][0][1]["list"]
        .as_array()
        .unwrap()
        .clone();
    let inbox = list.iter().find(|m| m["role"] == "inbox").unwrap();
    assert_eq!(inbox["totalEmails"], 3);
    assert_eq!(inbox["unreadEmails"], 3);
    assert_eq!(inbox["totalThreads"], 2, "the reply joins its thread");
    assert!(list.iter().any(|m| m["role"] == "sent"));
    let inbox_id = inbox["id"].as_str().unwrap().to_string();
    let v = api(
        &s,
        &s.ana,
        &[CORE, MAIL],
        json!([
            ["Mailbox/query", {"accountId": account, "filter": {"role": "inbox"}}, "r"],
            ["Mailbox/query", {"accountId": account, "filter": {"hasAnyRole": true}, "sort": [{"property": "sortOrder"}], "calculateTotal": true}, "all"],
            ["Mailbox/query", {"accountId": account, "filter": {"colour": "red"}}, "bad"]
        ]),
    );
    let q = &v["methodResponses"];
    assert_eq!(q[0][1]["ids"], json!([inbox_id.clone()]));
    assert_eq!(
        q[1][1]["ids"][0],
        inbox_id.as_str(),
        "the inbox sorts first"
    );
    assert_eq!(q[1][1]["total"], 6);
    assert_eq!(q[2][1]["type"], "unsupportedFilter");

    // RFC 8620 §3.7's pattern: query, then get what the query found.
    let v = api(
        &s,
        &s.ana,
        &[CORE, MAIL],
        json!([
            ["Email/query", {
                "accountId": account,
                "filter": {"inMailbox": inbox_id, "text": "lunch"},
                "sort": [{"property": "sentAt", "isAscending": false}],
                "calculateTotal": true
            }, "t0"],
            ["Email/get", {
                "accountId": account,
                "#ids": {"resultOf": "t0", "name": "Email/query", "path": "/ids"},
                "properties": ["threadId", "subject", "from", "mailboxIds", "keywords", "receivedAt", "messageId"]
            }, "t1"],
            ["Email/get", {
                "accountId": account,
                "#ids": {"resultOf": "t1", "name": "Email/get", "path": "/list/*/threadId"},
            }, "t2"],
            ["Email/get", {
                "accountId": account,
                "#ids": {"resultOf": "t0", "name": "Email/get", "path": "/ids"},
            }, "t3"]
        ]),
    );
    let r = &v["methodResponses"];
    assert_eq!(r[0][1]["total"], 2);
    let got = r[1][1]["list"].as_array().unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0]["subject"], "Re: Lunch plans", "newest first");
    assert_eq!(got[1]["subject"], "Lunch plans");
    assert_eq!(got[0]["threadId"], got[1]["threadId"]);
    assert_eq!(
        got[0]["from"],
        json!([{"name": "Carla", "email": "carla@example.net"}])
    );
    assert_eq!(got[0]["mailboxIds"], json!({inbox_id.clone(): true}));
    assert_eq!(got[0]["keywords"], json!({}));
    assert_eq!(got[0]["receivedAt"].as_str().unwrap().len(), 20);
    assert_eq!(got[1]["messageId"], json!(["m0@example.net"]));
    // Thread ids are not email ids: nothing found, and said so.
    assert_eq!(r[2][1]["list"], json!([]));
    assert_eq!(r[2][1]["notFound"].as_array().unwrap().len(), 2);
    // A reference to the wrong method name fails that call.
    assert_eq!(r[3][0], "error");
    assert_eq!(r[3][1]["type"], "invalidResultReference");

    // Paging, sorting by subject, and filters the RFC names.
    let v = api(
        &s,
        &s.ana,
        &[CORE, MAIL],
        json!([
            ["Email/query", {"accountId": account, "sort": [{"property": "subject"}], "position": 1, "limit": 1}, "p"],
            ["Email/query", {"accountId": account, "filter": {"operator": "NOT", "conditions": [{"subject": "lunch"}]}}, "n"],
            ["Email/query", {"accountId": account, "filter": {"unknownThing": 1}}, "u"],
            ["Email/query", {"accountId": account, "sort": [{"property": "color"}]}, "s"],
            ["Email/get", {"accountId": account, "ids": ["e999999", "zz"]}, "g"],
            ["Email/get", {"accountId": account, "ids": [], "properties": ["header:Subject:asDate"]}, "b"],
            ["Email/query", {"accountId": account, "position": 1000, "limit": 5}, "far"],
            ["Email/query", {"accountId": account, "limit": 1, "calculateTotal": true}, "total"]
        ]),
    );
    let r = &v["methodResponses"];
    assert_eq!(r[0][1]["position"], 1);
    // Past the end: no ids, and the position clamped to the total.
    assert_eq!(r[6][1]["ids"], json!([]));
    assert_eq!(r[6][1]["position"], r[7][1]["total"]);
    assert_eq!(r[7][1]["ids"].as_array().unwrap().len(), 1);
    // The same window by anchor: one before the second by subject.
    let second = r[0][1]["ids"][0].clone();
    let a = api(
        &s,
        &s.ana,
        &[CORE, MAIL],
        json!([
            ["Email/query", {"accountId": account, "sort": [{"property": "subject"}], "anchor": second, "anchorOffset": -1, "limit": 2}, "a"],
            ["Email/query", {"accountId": account, "anchor": "e424242"}, "missing"]
        ]),
    )["methodResponses"]
        .clone();
    assert_eq!(a[0][1]["position"], 0);
    assert_eq!(a[0][1]["ids"][1], second);
    assert_eq!(a[1][1]["type"], "anchorNotFound");
    assert_eq!(r[0][1]["ids"].as_array().unwrap().len(), 1);
    assert_eq!(r[1][1]["ids"].as_array().unwrap().len(), 1);
    assert_eq!(r[2][1]["type"], "unsupportedFilter");
    assert_eq!(r[3][1]["type"], "unsupportedSort");
    assert_eq!(r[4][1]["notFound"], json!(["e999999", "zz"]));
    assert_eq!(r[5][1]["type"], "invalidArguments");

    // Bo's account sees only bo's mail, and never ana's account.
    let v = api(
        &s,
        &s.bo,
        &[CORE, MAIL],
        json!([["Email/query", {"accountId": account}, "x"]]),
    );
    assert_eq!(v["methodResponses"][0][1]["type"], "accountNotFound");
}

#[test]
fn changes_follow_the_mailbox_log_and_unknown_states_cannot_be_calculated() {
    let s = serve();
    let account = account(&s);
    let get = |calls: Value| api(&s, &s.ana, &[CORE, MAIL], calls)["methodResponses"].clone();
    let r = get(json!([["Email/get", {"accountId": account, "ids": []}, "0"]]));
    let start = r[0][1]["state"].as_str().unwrap().to_string();

    import(&s, &s.ana, "Subject: one\r\n\r\n1\r\n");
    import(&s, &s.ana, "Subject: two\r\n\r\n2\r\n");
    let r = get(json!([
        ["Email/changes", {"accountId": account, "sinceState": start}, "c"],
        ["Mailbox/changes", {"accountId": account, "sinceState": start}, "m"],
        ["Email/query", {"accountId": account, "sort": [{"property": "subject"}]}, "q"]
    ]));
    let created = r[0][1]["created"].as_array().unwrap().clone();
    assert_eq!(created.len(), 2, "{}", r[0][1]);
    assert_eq!(r[0][1]["updated"], json!([]));
    assert_eq!(r[0][1]["oldState"], start.as_str());
    assert_eq!(r[0][1]["hasMoreChanges"], false);
    let mid = r[0][1]["newState"].as_str().unwrap().to_string();
    assert_ne!(mid, start);
    assert_eq!(
        r[1][1]["updated"].as_array().unwrap().len(),
        1,
        "the inbox's contents changed"
    );
    assert_eq!(
        r[1][1]["newState"],
        mid.as_str(),
        "one state for the account"
    );
    let ids = r[2][1]["ids"].as_array().unwrap().clone();
    assert_eq!(r[2][1]["queryState"], mid.as_str());

    // A keyword set through the REST API is an update; a deletion a
    // destruction.
    let n = |v: &Value| v.as_str().unwrap()[1..].parse::<i64>().unwrap();
    let r = http_with(
        &s.addr,
        "POST",
        "/v1/messages/keywords",
        &[
            ("Authorization", &s.ana),
            ("Content-Type", "application/json"),
        ],
        json!({"ids": [n(&ids[0])], "add": ["$seen"]})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 200);
    let r = http_with(
        &s.addr,
        "DELETE",
        &format!("/v1/messages/{}", n(&ids[1])),
        &[("Authorization", &s.ana)],
        b"",
    );
    assert!(r.status == 204 || r.status == 200, "{}", r.status);
    let r = get(json!([
        ["Email/changes", {"accountId": account, "sinceState": mid}, "c"],
        ["Email/changes", {"accountId": account, "sinceState": start}, "all"],
        ["Email/changes", {"accountId": account, "sinceState": mid, "maxChanges": 1}, "max"],
        ["Email/changes", {"accountId": account, "sinceState": "999999999"}, "future"],
        ["Email/changes", {"accountId": account, "sinceState": "not-a-state"}, "junk"],
        ["Email/changes", {"accountId": account}, "none"]
    ]));
    assert_eq!(r[0][1]["created"], json!([]));
    assert_eq!(r[0][1]["updated"], json!([ids[0]]));
    assert_eq!(r[0][1]["destroyed"], json!([ids[1]]));
    // From the start: one created and kept, one created and gone (never
    // seen by the client, so in neither list).
    assert_eq!(r[1][1]["created"], json!([ids[0]]));
    assert_eq!(r[1][1]["destroyed"], json!([]));
    assert_eq!(r[2][1]["type"], "cannotCalculateChanges");
    assert_eq!(r[3][1]["type"], "cannotCalculateChanges");
    assert_eq!(r[4][1]["type"], "cannotCalculateChanges");
    assert_eq!(r[5][1]["type"], "invalidArguments");
    let keywords = get(
        json!([["Email/get", {"accountId": account, "ids": [ids[0]], "properties": ["keywords"]}, "k"]]),
    );
    assert_eq!(
        keywords[0][1]["list"][0]["keywords"],
        json!({"$seen": true})
    );
}

/// RFC 8621 §3: a conversation is one thread, its emails oldest first,
/// and Thread/changes follows replies and deletions.
#[test]
fn threads_gather_replies_and_their_changes_are_logged() {
    let s = serve();
    let account = account(&s);
    let get = |calls: Value| api(&s, &s.ana, &[CORE, MAIL], calls)["methodResponses"].clone();
    import(
        &s,
        &s.ana,
        "Subject: lunch\r\nMessage-ID: <l1@x>\r\nDate: Mon, 6 May 2024 10:00:00 +0000\r\n\r\nnoon?\r\n",
    );
    let r = get(json!([
        ["Email/query", {"accountId": account}, "q"],
        ["Email/get", {"accountId": account, "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"}, "properties": ["threadId"]}, "g"],
        ["Thread/get", {"accountId": account, "#ids": {"resultOf": "g", "name": "Email/get", "path": "/list/*/threadId"}}, "t"]
    ]));
    let first = r[0][1]["ids"][0].clone();
    let thread = r[1][1]["list"][0]["threadId"].clone();
    assert_eq!(
        r[2][1]["list"],
        json!([{"id": thread, "emailIds": [first]}])
    );
    let since = r[2][1]["state"].as_str().unwrap().to_string();

    import(
        &s,
        &s.ana,
        "Subject: Re: lunch\r\nMessage-ID: <l2@x>\r\nIn-Reply-To: <l1@x>\r\n\r\nyes\r\n",
    );
    import(
        &s,
        &s.ana,
        "Subject: other\r\nMessage-ID: <o1@x>\r\n\r\nhi\r\n",
    );
    let r = get(json!([
        ["Thread/get", {"accountId": account, "ids": [thread, "t999999", "nonsense"]}, "t"],
        ["Thread/changes", {"accountId": account, "sinceState": since}, "c"],
        ["Thread/get", {"accountId": account, "ids": null}, "all"]
    ]));
    let emails = r[0][1]["list"][0]["emailIds"].as_array().unwrap().clone();
    assert_eq!(emails.len(), 2, "{}", r[0][1]);
    assert_eq!(emails[0], first, "oldest first");
    assert_eq!(r[0][1]["notFound"], json!(["t999999", "nonsense"]));
    assert_eq!(r[1][1]["updated"], json!([thread]));
    assert_eq!(r[1][1]["created"].as_array().unwrap().len(), 1);
    assert_eq!(r[2][1]["type"], "requestTooLarge");

    // The reply deleted: the thread is updated; both gone: destroyed.
    let n = |v: &Value| v.as_str().unwrap()[1..].parse::<i64>().unwrap();
    let mid = r[1][1]["newState"].as_str().unwrap().to_string();
    for (i, e) in emails.iter().rev().enumerate() {
        let r = http_with(
            &s.addr,
            "DELETE",
            &format!("/v1/messages/{}", n(e)),
            &[("Authorization", &s.ana)],
            b"",
        );
        assert!(r.status == 204 || r.status == 200, "{}", r.status);
        let r = get(json!([["Thread/changes", {"accountId": account, "sinceState": mid}, "c"]]));
        let (updated, destroyed) = if i == 0 {
            (json!([thread]), json!([]))
        } else {
            (json!([]), json!([thread]))
        };
        assert_eq!(r[0][1]["updated"], updated, "{}", r[0][1]);
        assert_eq!(r[0][1]["destroyed"], destroyed, "{}", r[0][1]);
    }
}

/// RFC 8620 §6 and RFC 8621 §4.8–4.9: a message uploaded, imported into
/// two mailboxes, downloaded byte for byte; an attached message read with
/// Email/parse through its part's blob id.
#[test]
fn blobs_upload_import_download_and_parse() {
    let s = serve();
    let account = account(&s);
    let get = |calls: Value| api(&s, &s.ana, &[CORE, MAIL], calls)["methodResponses"].clone();
    let inner = "From: Carla <carla@example.net>\r\nTo: ana@example.com\r\nSubject: the original\r\n\
                 Message-ID: <orig@x>\r\n\r\nForwarded words.\r\n";
    let raw = format!(
        "From: Bo <bo@example.com>\r\nTo: ana@example.com\r\nSubject: fwd\r\nMessage-ID: <fwd@x>\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\n\
         --zz\r\nContent-Type: text/plain\r\n\r\nSee below.\r\n\
         --zz\r\nContent-Type: message/rfc822\r\n\r\n{inner}\r\n--zz--\r\n"
    );
    let up = |auth: &str, acct: &str, body: &[u8]| {
        http_with(
            &s.addr,
            "POST",
            &format!("/jmap/upload/{acct}/"),
            &[("Authorization", auth), ("Content-Type", "message/rfc822")],
            body,
        )
    };
    let r = up(&s.ana, &account, raw.as_bytes());
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let blob = r.json();
    assert_eq!(blob["size"], raw.len());
    assert_eq!(blob["type"], "message/rfc822");
    assert_eq!(blob["accountId"], account.as_str());
    let blob_id = blob["blobId"].as_str().unwrap().to_string();
    // Another alias's account is not this one.
    assert_eq!(up(&s.bo, &account, b"x").status, 404);

    let r = get(json!([["Mailbox/get", {"accountId": account, "properties": ["role"]}, "m"]]));
    let role = |name: &str| {
        r[0][1]["list"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["role"] == name)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (inbox, archive) = (role("inbox"), role("archive"));
    let r = get(json!([
        ["Email/import", {"accountId": account, "emails": {
            "k1": {"blobId": blob_id, "mailboxIds": {inbox.clone(): true, archive.clone(): true},
                   "keywords": {"$seen": true}, "receivedAt": "2024-05-06T10:00:00Z"},
            "k2": {"blobId": "u999999", "mailboxIds": {inbox.clone(): true}},
            "k3": {"blobId": blob_id, "mailboxIds": {}},
            "k4": {"blobId": blob_id, "mailboxIds": {"m999999": true}}
        }}, "i"]
    ]));
    let created = &r[0][1]["created"]["k1"];
    let g = get(json!([
        ["Email/get", {"accountId": account, "ids": [created["id"]],
                       "properties": ["mailboxIds", "keywords", "receivedAt", "subject", "blobId", "attachments"]}, "g"]
    ]));
    assert_eq!(created["size"], raw.len());
    assert_eq!(r[0][1]["notCreated"]["k2"]["type"], "blobNotFound");
    assert_eq!(r[0][1]["notCreated"]["k3"]["type"], "invalidProperties");
    assert_eq!(r[0][1]["notCreated"]["k4"]["type"], "invalidProperties");
    assert_ne!(r[0][1]["oldState"], r[0][1]["newState"]);
    let email = &g[0][1]["list"][0];
    assert_eq!(email["mailboxIds"], json!({inbox: true, archive: true}));
    assert_eq!(email["keywords"], json!({"$seen": true}));
    assert_eq!(email["receivedAt"], "2024-05-06T10:00:00Z");
    assert_eq!(email["subject"], "fwd");
    assert_eq!(email["blobId"], created["blobId"]);

    // The stored message, byte for byte, under the name and type asked.
    let download = |blob: &str, query: &str| {
        http_with(
            &s.addr,
            "GET",
            &format!("/jmap/download/{account}/{blob}/a%20name.eml{query}"),
            &[("Authorization", &s.ana)],
            b"",
        )
    };
    let r = download(
        created["blobId"].as_str().unwrap(),
        "?accept=message/rfc822",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body, raw.as_bytes());
    assert!(
        r.headers
            .to_lowercase()
            .contains("content-type: message/rfc822"),
        "{}",
        r.headers
    );
    assert!(
        r.headers.contains("filename*=UTF-8''a%20name.eml"),
        "{}",
        r.headers
    );
    assert_eq!(download("u999999", "").status, 404);
    assert_eq!(download("nonsense", "").status, 404);

    // The attached message is a part with a blob id: parse it.
    let attached = email["attachments"][0].clone();
    assert_eq!(attached["type"], "message/rfc822");
    let part_blob = attached["blobId"].as_str().unwrap().to_string();
    assert_eq!(download(&part_blob, "").body, inner.as_bytes());
    let r = get(
        json!([["Email/parse", {"accountId": account, "blobIds": [part_blob, "b999999"],
                                        "fetchTextBodyValues": true}, "p"]]),
    );
    let parsed = &r[0][1]["parsed"][&part_blob];
    assert_eq!(parsed["subject"], "the original");
    assert_eq!(
        parsed["from"],
        json!([{"name": "Carla", "email": "carla@example.net"}])
    );
    assert_eq!(parsed["messageId"], json!(["orig@x"]));
    let text_part = parsed["textBody"][0]["partId"].as_str().unwrap();
    assert_eq!(
        parsed["bodyValues"][text_part]["value"],
        "Forwarded words.\r\n"
    );
    let text_blob = parsed["textBody"][0]["blobId"].as_str().unwrap();
    assert_eq!(download(text_blob, "").body, b"Forwarded words.\r\n");
    assert_eq!(r[0][1]["notFound"], json!(["b999999"]));
}

/// RFC 8621 §4.6: an Email created from properties — a draft with text,
/// HTML and an uploaded attachment — reads back as it was written.
#[test]
fn email_set_creates_a_draft_from_properties() {
    let s = serve();
    let account = account(&s);
    let get = |calls: Value| api(&s, &s.ana, &[CORE, MAIL], calls)["methodResponses"].clone();
    let r =
        get(json!([["Mailbox/query", {"accountId": account, "filter": {"role": "drafts"}}, "m"]]));
    let drafts = r[0][1]["ids"][0].as_str().unwrap().to_string();
    let pdf = b"%PDF-1.4 not really\x00\x01\x02";
    let r = http_with(
        &s.addr,
        "POST",
        &format!("/jmap/upload/{account}/"),
        &[
            ("Authorization", &s.ana),
            ("Content-Type", "application/pdf"),
        ],
        pdf,
    );
    let blob = r.json()["blobId"].as_str().unwrap().to_string();
    let r = get(json!([
        ["Email/set", {"accountId": account, "create": {
            "d1": {
                "mailboxIds": {drafts.clone(): true},
                "keywords": {"$draft": true, "$seen": true},
                "from": [{"name": "Ana Lima", "email": "ana@example.com"}],
                "to": [{"name": "Bö Ñ", "email": "bo@example.com"}],
                "subject": "Plans for Säturday",
                "inReplyTo": ["earlier@x"],
                "textBody": [{"partId": "t", "type": "text/plain"}],
                "htmlBody": [{"partId": "h", "type": "text/html"}],
                "bodyValues": {"t": {"value": "Shall we meet?\n"}, "h": {"value": "<p>Shall we <b>meet</b>?</p>"}},
                "attachments": [{"blobId": blob, "type": "application/pdf", "name": "plan.pdf"}]
            },
            "bad1": {"mailboxIds": {drafts.clone(): true}, "textBody": [{"partId": "x"}]},
            "bad2": {"mailboxIds": {drafts.clone(): true}, "bodyStructure": {"type": "text/plain"}},
            "bad3": {"mailboxIds": {drafts.clone(): true}, "attachments": [{"blobId": "u999999"}]},
            "bad4": {"subject": "nowhere"}
        }}, "c"]
    ]));
    let set = r[0][1].clone();
    let r = get(json!([
        ["Email/get", {"accountId": account, "ids": [set["created"]["d1"]["id"]],
                       "properties": ["mailboxIds", "keywords", "from", "to", "subject", "inReplyTo", "messageId",
                                      "textBody", "htmlBody", "attachments", "bodyValues", "hasAttachment"],
                       "fetchAllBodyValues": true}, "g"]
    ]));
    assert_eq!(
        set["notCreated"]["bad1"]["properties"],
        json!(["bodyValues"]),
        "{set}"
    );
    assert_eq!(
        set["notCreated"]["bad2"]["properties"],
        json!(["bodyStructure"])
    );
    assert_eq!(set["notCreated"]["bad3"]["type"], "blobNotFound");
    assert_eq!(
        set["notCreated"]["bad4"]["properties"],
        json!(["mailboxIds"])
    );
    let e = &r[0][1]["list"][0];
    assert_eq!(e["mailboxIds"], json!({drafts: true}));
    assert_eq!(e["keywords"], json!({"$draft": true, "$seen": true}));
    assert_eq!(
        e["from"],
        json!([{"name": "Ana Lima", "email": "ana@example.com"}])
    );
    assert_eq!(
        e["to"],
        json!([{"name": "Bö Ñ", "email": "bo@example.com"}])
    );
    assert_eq!(e["subject"], "Plans for Säturday");
    assert_eq!(e["inReplyTo"], json!(["earlier@x"]));
    assert!(
        e["messageId"][0]
            .as_str()
            .unwrap()
            .ends_with("@example.com"),
        "{e}"
    );
    assert_eq!(e["hasAttachment"], true);
    let value = |list: &str| {
        let id = e[list][0]["partId"].as_str().unwrap();
        e["bodyValues"][id]["value"]
            .as_str()
            .unwrap()
            .replace("\r\n", "\n")
    };
    assert_eq!(value("textBody"), "Shall we meet?\n");
    assert_eq!(value("htmlBody"), "<p>Shall we <b>meet</b>?</p>");
    let a = &e["attachments"][0];
    assert_eq!(a["name"], "plan.pdf");
    assert_eq!(a["type"], "application/pdf");
    let r = http_with(
        &s.addr,
        "GET",
        &format!(
            "/jmap/download/{account}/{}/plan.pdf",
            a["blobId"].as_str().unwrap()
        ),
        &[("Authorization", &s.ana)],
        b"",
    );
    assert_eq!(r.body, pdf, "the attachment comes back byte for byte");
}

/// RFC 8621 §7: a draft sent with EmailSubmission/set — to another alias
/// here (delivered at once, Bcc removed) and to another server (queued) —
/// then moved to Sent by onSuccessUpdateEmail, in one request.
#[test]
fn email_submission_sends_a_draft_and_files_it() {
    const SUBMISSION: &str = "urn:ietf:params:jmap:submission";
    let admin = "admin token for the submission test";
    // Submission is on (so is the outbound queue); the DNS server is a
    // closed port, so mail for other servers waits in the queue.
    let s = serve_with(
        &["--submission", "127.0.0.1:0", "--dns", "127.0.0.1:1"],
        &[("COFRE_ADMIN_TOKEN", admin)],
    );
    let sess = session(&s, &s.ana);
    assert!(sess["capabilities"][SUBMISSION].is_object(), "{sess}");
    let account = sess["primaryAccounts"][SUBMISSION]
        .as_str()
        .unwrap()
        .to_string();
    let using = [CORE, MAIL, SUBMISSION];
    let r = api(
        &s,
        &s.ana,
        &using,
        json!([
            ["Identity/get", {"accountId": account}, "i"],
            ["Mailbox/query", {"accountId": account, "filter": {"role": "drafts"}}, "d"],
            ["Mailbox/query", {"accountId": account, "filter": {"role": "sent"}}, "s"]
        ]),
    )["methodResponses"]
        .clone();
    let identity = r[0][1]["list"][0].clone();
    assert_eq!(identity["email"], "ana@example.com");
    let (drafts, sent) = (r[1][1]["ids"][0].clone(), r[2][1]["ids"][0].clone());

    let draft = |subject: &str, from: &str| {
        json!({
            "mailboxIds": {drafts.as_str().unwrap(): true},
            "keywords": {"$draft": true, "$seen": true},
            "from": [{"email": from}],
            "to": [{"email": "bo@example.com"}, {"email": "carla@example.net"}],
            "bcc": [{"email": "secret@example.org"}],
            "subject": subject,
            "textBody": [{"partId": "1"}],
            "bodyValues": {"1": {"value": "See you at noon.\n"}}
        })
    };
    let r = api(
        &s,
        &s.ana,
        &using,
        json!([
            ["Email/set", {"accountId": account, "create": {
                "d": draft("noon", "ana@example.com"),
                "forged": draft("not me", "bo@example.com")
            }}, "c"],
            ["EmailSubmission/set", {"accountId": account,
                "create": {
                    "k": {"identityId": identity["id"], "emailId": "#d"},
                    "x": {"identityId": identity["id"], "emailId": "#forged"},
                    "y": {"identityId": "i999", "emailId": "#d"}
                },
                "onSuccessUpdateEmail": {"#k": {
                    format!("mailboxIds/{}", drafts.as_str().unwrap()): null,
                    format!("mailboxIds/{}", sent.as_str().unwrap()): true,
                    "keywords/$draft": null
                }}
            }, "s"]
        ]),
    )["methodResponses"]
        .clone();
    assert_eq!(r[1][0], "EmailSubmission/set", "{r}");
    let sub = &r[1][1];
    let email_id = r[0][1]["created"]["d"]["id"].clone();
    assert_eq!(sub["created"]["k"]["emailId"], email_id, "{sub}");
    assert_eq!(sub["created"]["k"]["undoStatus"], "final");
    assert_eq!(
        sub["created"]["k"]["envelope"]["rcptTo"],
        json!([{"email": "bo@example.com", "parameters": null},
               {"email": "carla@example.net", "parameters": null},
               {"email": "secret@example.org", "parameters": null}])
    );
    assert_eq!(sub["notCreated"]["x"]["type"], "forbiddenFrom");
    assert_eq!(sub["notCreated"]["y"]["type"], "invalidProperties");
    // The implicit Email/set, under the same call id.
    assert_eq!(r[2][0], "Email/set");
    assert_eq!(r[2][2], "s");
    assert_eq!(
        r[2][1]["updated"],
        json!({email_id.as_str().unwrap(): null})
    );

    // Bo has it, without the Bcc line, marked as sent through HTTP.
    let bo = session(&s, &s.bo)["primaryAccounts"][MAIL]
        .as_str()
        .unwrap()
        .to_string();
    let r = api(&s, &s.bo, &[CORE, MAIL], json!([
        ["Email/query", {"accountId": bo, "filter": {"subject": "noon"}}, "q"],
        ["Email/get", {"accountId": bo, "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"},
                       "properties": ["blobId", "bcc"]}, "g"]
    ]))["methodResponses"].clone();
    let got = &r[1][1]["list"][0];
    assert_eq!(got["bcc"], Value::Null, "{got}");
    let download = http_with(
        &s.addr,
        "GET",
        &format!(
            "/jmap/download/{bo}/{}/m.eml",
            got["blobId"].as_str().unwrap()
        ),
        &[("Authorization", &s.bo)],
        b"",
    );
    let text = String::from_utf8_lossy(&download.body).to_string();
    assert!(!text.contains("secret@example.org"), "{text}");
    assert!(text.contains(" with HTTP id "), "{text}");
    assert!(text.contains("See you at noon."), "{text}");

    // The other servers' recipients wait in the outbound queue.
    let q = http_with(
        &s.addr,
        "GET",
        "/v1/admin/outbound",
        &[("Authorization", &format!("Bearer {admin}"))],
        b"",
    );
    let q = String::from_utf8_lossy(&q.body).to_string();
    assert!(
        q.contains("carla@example.net") && q.contains("secret@example.org"),
        "{q}"
    );
}

/// RFC 8620 §7.3: an EventSource listener is told of a change made
/// elsewhere with a StateChange carrying the new state, which
/// Email/changes then answers from.
#[test]
fn event_source_pushes_state_changes() {
    let s = serve();
    let account = account(&s);
    let get = |calls: Value| api(&s, &s.ana, &[CORE, MAIL], calls)["methodResponses"].clone();
    let before = get(json!([["Email/get", {"accountId": account, "ids": []}, "0"]]))[0][1]["state"]
        .as_str()
        .unwrap()
        .to_string();
    let (addr, auth) = (s.addr.clone(), s.ana.clone());
    let listener = std::thread::spawn(move || {
        http_with(
            &addr,
            "GET",
            "/jmap/eventsource?types=Email,Thread&closeafter=state&ping=0",
            &[("Authorization", &auth)],
            b"",
        )
    });
    // Changes until the listener, once subscribed, hears one and closes.
    let mut n = 0;
    while !listener.is_finished() {
        n += 1;
        assert!(n < 100, "no state event in 20 s");
        import(&s, &s.ana, &format!("Subject: push {n}\r\n\r\nx\r\n"));
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let r = listener.join().unwrap();
    assert_eq!(r.status, 200);
    assert!(
        r.headers.to_lowercase().contains("text/event-stream"),
        "{}",
        r.headers
    );
    let text = String::from_utf8(r.body).unwrap();
    assert!(text.contains("event: state"), "{text}");
    let data = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("a data line");
    let change: Value = serde_json::from_str(data).unwrap();
    assert_eq!(change["@type"], "StateChange");
    let states = change["changed"][&account].as_object().unwrap();
    let keys: Vec<&String> = states.keys().collect();
    assert_eq!(keys, ["Email", "Thread"], "only the types asked for");
    let pushed = states["Email"].as_str().unwrap();
    assert_ne!(pushed, before);
    let r = get(json!([["Email/changes", {"accountId": account, "sinceState": before}, "c"]]));
    assert!(
        !r[0][1]["created"].as_array().unwrap().is_empty(),
        "{}",
        r[0][1]
    );
    let bad = http_with(
        &s.addr,
        "GET",
        "/jmap/eventsource?types=*&closeafter=sometimes&ping=0",
        &[("Authorization", &s.ana)],
        b"",
    );
    assert_eq!(bad.status, 400);
}

/// RFC 8621 §2.5: mailboxes created (a child by creation id), renamed,
/// moved, unsubscribed, and destroyed only when empty or asked to remove
/// their emails; role mailboxes stay.
#[test]
fn mailbox_set_creates_renames_and_destroys() {
    let s = serve();
    let account = account(&s);
    let get = |calls: Value| api(&s, &s.ana, &[CORE, MAIL], calls)["methodResponses"].clone();
    let r = get(json!([
        ["Mailbox/set", {"accountId": account, "create": {
            "work": {"name": "Work", "isSubscribed": true},
            "bad": {"name": "a/b"},
            "roled": {"name": "X", "role": "inbox"}
        }}, "1"],
        ["Mailbox/set", {"accountId": account, "create": {
            "proj": {"name": "Projects", "parentId": "#p"}
        }}, "2"]
    ]));
    let work = r[0][1]["created"]["work"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(r[0][1]["created"]["work"]["totalEmails"], 0);
    assert_eq!(r[0][1]["notCreated"]["bad"]["properties"], json!(["name"]));
    assert_eq!(
        r[0][1]["notCreated"]["roled"]["properties"],
        json!(["role"])
    );
    assert_eq!(
        r[1][1]["notCreated"]["proj"]["properties"],
        json!(["parentId"])
    );
    let r = get(json!([
        ["Mailbox/set", {"accountId": account, "create": {
            "a": {"name": "Clients", "parentId": work},
            "b": {"name": "Acme", "parentId": "#a"}
        }}, "c"],
        ["Mailbox/get", {"accountId": account, "ids": null, "properties": ["name", "parentId", "isSubscribed", "role"]}, "g"]
    ]));
    let clients = r[0][1]["created"]["a"]["id"].as_str().unwrap().to_string();
    let acme = r[0][1]["created"]["b"]["id"].as_str().unwrap().to_string();
    let list = r[1][1]["list"].as_array().unwrap().clone();
    let find = |list: &[Value], id: &str| list.iter().find(|m| m["id"] == id).unwrap().clone();
    assert_eq!(find(&list, &acme)["parentId"], clients.as_str());
    assert_eq!(find(&list, &acme)["name"], "Acme");
    assert_eq!(find(&list, &acme)["isSubscribed"], false);
    assert_eq!(find(&list, &work)["isSubscribed"], true);
    let inbox = list.iter().find(|m| m["role"] == "inbox").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Rename, move to the top level, subscribe; a role mailbox stays put.
    let r = get(json!([
        ["Mailbox/set", {"accountId": account, "update": {
            clients.clone(): {"name": "Customers", "parentId": null},
            acme.clone(): {"isSubscribed": true},
            inbox.clone(): {"name": "Elsewhere"}
        }}, "u"],
        ["Mailbox/get", {"accountId": account, "ids": [clients, acme], "properties": ["name", "parentId", "isSubscribed"]}, "g"]
    ]));
    assert_eq!(
        r[0][1]["updated"],
        json!({clients.clone(): null, acme.clone(): null})
    );
    assert_eq!(r[0][1]["notUpdated"][&inbox]["type"], "forbidden");
    assert_eq!(r[1][1]["list"][0]["name"], "Customers");
    assert_eq!(r[1][1]["list"][0]["parentId"], Value::Null);
    assert_eq!(
        r[1][1]["list"][1]["parentId"],
        clients.as_str(),
        "children move along"
    );
    assert_eq!(r[1][1]["list"][1]["isSubscribed"], true);

    // An email in Acme (and the inbox): destroying asks first.
    import(&s, &s.ana, "Subject: for acme\r\n\r\nx\r\n");
    let r = get(json!([["Email/query", {"accountId": account}, "q"]]));
    let email = r[0][1]["ids"][0].as_str().unwrap().to_string();
    let r = get(json!([
        ["Email/set", {"accountId": account, "update": {email.clone(): {format!("mailboxIds/{acme}"): true}}}, "e"],
        ["Mailbox/set", {"accountId": account, "destroy": [clients.clone(), acme.clone(), inbox.clone()]}, "d"]
    ]));
    assert_eq!(r[1][1]["notDestroyed"][&clients]["type"], "mailboxHasChild");
    assert_eq!(r[1][1]["notDestroyed"][&acme]["type"], "mailboxHasEmail");
    assert_eq!(r[1][1]["notDestroyed"][&inbox]["type"], "forbidden");
    let r = get(json!([
        ["Mailbox/set", {"accountId": account, "destroy": [acme.clone()], "onDestroyRemoveEmails": true}, "d"],
        ["Email/get", {"accountId": account, "ids": [email], "properties": ["mailboxIds"]}, "g"]
    ]));
    assert_eq!(r[0][1]["destroyed"], json!([acme]));
    assert_eq!(
        r[1][1]["list"][0]["mailboxIds"],
        json!({inbox: true}),
        "kept where else it was"
    );
}

/// A plain IMAP connection, one tagged command at a time.
struct Imap {
    r: std::io::BufReader<std::net::TcpStream>,
    n: u32,
}

impl Imap {
    fn login(addr: &str, user: &str, password: &str) -> Imap {
        use std::io::BufRead;
        let s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut imap = Imap {
            r: std::io::BufReader::new(s),
            n: 0,
        };
        let mut greeting = String::new();
        imap.r.read_line(&mut greeting).unwrap();
        imap.run(&format!("LOGIN {user} \"{password}\""));
        imap.run("SELECT INBOX");
        imap
    }

    /// Runs a command; fails unless it ends OK.
    fn run(&mut self, command: &str) {
        use std::io::{BufRead, Write};
        self.n += 1;
        let tag = format!("x{}", self.n);
        self.r
            .get_mut()
            .write_all(format!("{tag} {command}\r\n").as_bytes())
            .unwrap();
        let mut line = String::new();
        loop {
            line.clear();
            assert!(self.r.read_line(&mut line).unwrap() > 0, "IMAP closed");
            if let Some(rest) = line.strip_prefix(&format!("{tag} ")) {
                assert!(rest.starts_with("OK"), "{command}: {line}");
                return;
            }
        }
    }
}

/// RFC 8620 §5.6: a client keeping query results with /queryChanges (and
/// an email set with /changes) stays exact while IMAP and JMAP edit the
/// same mailbox in turn — flags, moves, expunges, new mail, replies that
/// change a collapsed thread.
#[test]
fn query_changes_stay_exact_across_imap_and_jmap_edits() {
    let s = serve_with(&["--imap", "127.0.0.1:0"], &[]);
    let account = account(&s);
    let get = |calls: Value| api(&s, &s.ana, &[CORE, MAIL], calls)["methodResponses"].clone();
    for i in 1..=6 {
        import(
            &s,
            &s.ana,
            &format!(
                "Subject: topic {i}\r\nMessage-ID: <t{i}@x>\r\nDate: Mon, {i} Apr 2024 10:00:00 +0000\r\n\r\nbody {i}\r\n"
            ),
        );
    }
    let r = get(
        json!([["Mailbox/query", {"accountId": account, "filter": {"role": "inbox"}}, "m"],
                       ["Mailbox/query", {"accountId": account, "filter": {"role": "archive"}}, "a"]]),
    );
    let (inbox, archive) = (r[0][1]["ids"][0].clone(), r[1][1]["ids"][0].clone());
    let queries = [
        json!({"filter": {"inMailbox": inbox, "notKeyword": "$seen"}, "sort": [{"property": "receivedAt", "isAscending": false}]}),
        json!({"filter": {"inMailbox": inbox}, "sort": [{"property": "subject"}], "collapseThreads": true}),
        json!({"filter": {"noneInThreadHaveKeyword": "$flagged"}, "sort": [{"property": "sentAt"}]}),
        json!({"filter": {"inMailbox": inbox}, "collapseThreads": true}),
    ];
    let query = |q: &Value| -> (Vec<Value>, String) {
        let mut args = q.clone();
        args["accountId"] = json!(account);
        let r = get(json!([["Email/query", args, "q"]]));
        (
            r[0][1]["ids"].as_array().unwrap().clone(),
            r[0][1]["queryState"].as_str().unwrap().to_string(),
        )
    };
    let mut kept: Vec<(Vec<Value>, String)> = queries.iter().map(query).collect();
    let first_state = kept[0].1.clone();
    let all = |st: &str| {
        let r = get(json!([["Email/query", {"accountId": account}, "q"]]));
        (r[0][1]["ids"].as_array().unwrap().clone(), st.to_string())
    };
    let (mut known, mut known_state) = all(&kept[0].1);

    let mut imap = Imap::login(
        s.imap.as_deref().unwrap(),
        "ana@example.com",
        &s.ana_password,
    );
    let first = known[0].as_str().unwrap().to_string();
    let by_message_id = |id: &str| {
        let r = get(
            json!([["Email/query", {"accountId": account, "filter": {"header": ["Message-ID", id]}}, "q"]]),
        );
        r[0][1]["ids"][0].as_str().unwrap().to_string()
    };
    type Edit<'a> = Box<dyn Fn(&mut Imap) + 'a>;
    let edits: Vec<Edit> = vec![
        Box::new(|i: &mut Imap| i.run("UID STORE 2 +FLAGS (\\Seen)")),
        // A reply: the newest of its thread, so the collapsed thread's
        // representative changes.
        Box::new(|_: &mut Imap| {
            import(
                &s,
                &s.ana,
                "Subject: Re: topic 4\r\nMessage-ID: <r4@x>\r\nIn-Reply-To: <t4@x>\r\nDate: Mon, 29 Apr 2024 10:00:00 +0000\r\n\r\nreply\r\n",
            );
        }),
        // A flag on the original: its reply leaves the thread-wide query.
        Box::new(|_: &mut Imap| {
            let t4 = by_message_id("t4@x");
            get(
                json!([["Email/set", {"accountId": account, "update": {t4: {"keywords/$flagged": true}}}, "s"]]),
            );
        }),
        Box::new(|i: &mut Imap| i.run("UID MOVE 3 Archive")),
        Box::new(|i: &mut Imap| {
            i.run("UID STORE 5 +FLAGS (\\Deleted)");
            i.run("EXPUNGE");
        }),
        Box::new(|_: &mut Imap| {
            get(
                json!([["Email/set", {"accountId": account, "update": {first.clone(): {format!("mailboxIds/{}", archive.as_str().unwrap()): true, "keywords/$seen": true}}}, "s"]]),
            );
        }),
        Box::new(|i: &mut Imap| i.run("UID STORE 1:* -FLAGS (\\Seen)")),
    ];
    for (step, edit) in edits.iter().enumerate() {
        edit(&mut imap);
        for (q, (ids, st)) in queries.iter().zip(kept.iter_mut()) {
            let mut args = q.clone();
            args["accountId"] = json!(account);
            args["sinceQueryState"] = json!(st);
            args["calculateTotal"] = json!(true);
            let r = get(json!([["Email/queryChanges", args, "c"]]));
            let c = &r[0][1];
            assert_eq!(c["oldQueryState"], st.as_str(), "{c}");
            let removed = c["removed"].as_array().unwrap();
            ids.retain(|id| !removed.contains(id));
            let mut added = c["added"].as_array().unwrap().clone();
            added.sort_by_key(|a| a["index"].as_u64().unwrap());
            for a in added {
                ids.insert(a["index"].as_u64().unwrap() as usize, a["id"].clone());
            }
            let (fresh, _) = query(q);
            assert_eq!(*ids, fresh, "step {step}, query {q}");
            assert_eq!(c["total"], fresh.len());
            *st = c["newQueryState"].as_str().unwrap().to_string();
        }
        // The email set by /changes: created added, destroyed gone.
        let r =
            get(json!([["Email/changes", {"accountId": account, "sinceState": known_state}, "c"]]));
        let c = &r[0][1];
        known.retain(|id| !c["destroyed"].as_array().unwrap().contains(id));
        known.extend(c["created"].as_array().unwrap().iter().cloned());
        known_state = c["newState"].as_str().unwrap().to_string();
        let (mut fresh, _) = all("");
        let mut mine = known.clone();
        let key = |v: &Value| v.as_str().unwrap()[1..].parse::<i64>().unwrap();
        mine.sort_by_key(key);
        fresh.sort_by_key(key);
        assert_eq!(mine, fresh, "step {step}: the email set");
    }
    let r = get(json!([
        ["Email/queryChanges", {"accountId": account, "sinceQueryState": "999999"}, "f"],
        ["Email/queryChanges", {"accountId": account, "sinceQueryState": "junk"}, "j"],
        ["Email/queryChanges", {"accountId": account, "sinceQueryState": kept[0].1, "maxChanges": 1}, "m"],
        ["Mailbox/queryChanges", {"accountId": account, "sinceQueryState": "999999"}, "mf"],
        ["Email/queryChanges", {"accountId": account, "sinceQueryState": first_state, "maxChanges": 1}, "old"],
        ["Email/queryChanges", {"accountId": account, "sinceQueryState": first_state, "maxChanges": 1000}, "all"]
    ]));
    assert_eq!(r[0][1]["type"], "cannotCalculateChanges");
    assert_eq!(r[1][1]["type"], "cannotCalculateChanges");
    assert_eq!(
        r[2][1]["removed"],
        json!([]),
        "no change since: nothing to report"
    );
    assert_eq!(r[3][1]["type"], "cannotCalculateChanges");
    // Seven edits since the first state: more than one change to tell.
    assert_eq!(r[4][1]["type"], "tooManyChanges", "{}", r[4][1]);
    assert!(
        r[5][1]["added"].as_array().unwrap().len() > 1,
        "{}",
        r[5][1]
    );
}

/// RFC 8621 §4.1.2–3: header fields in each parsed form, the last
/// instance or all of them, and forms that do not apply refused.
#[test]
fn header_properties_in_every_form() {
    let s = serve();
    let account = account(&s);
    import(
        &s,
        &s.ana,
        "From: \"Joe Bloggs\" <joe@example.com>\r\n\
         To: Friends: a@example.net, \"Bé\" <b@example.net>;, c@example.org\r\n\
         Subject: forms\r\n\
         Date: Tue, 7 May 2024 09:00:00 +0200\r\n\
         References: <a@x>\r\n <b@x>\r\n\
         List-Unsubscribe: <mailto:unsub@example.net>, <https://example.net/unsub>\r\n\
         X-Custom: first\r\n\
         X-Custom:  =?UTF-8?Q?caf=C3=A9?=\r\n  au lait\r\n\
         \r\nbody\r\n",
    );
    let props = [
        "header:From:asAddresses",
        "header:To:asGroupedAddresses",
        "header:to:asAddresses",
        "header:List-Unsubscribe:asURLs",
        "header:X-Custom:asText:all",
        "header:X-Custom",
        "header:Date:asDate",
        "header:References:asMessageIds",
        "header:X-Missing",
        "header:X-Missing:all",
    ];
    let r = api(
        &s,
        &s.ana,
        &[CORE, MAIL],
        json!([
            ["Email/query", {"accountId": account}, "q"],
            ["Email/get", {"accountId": account, "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"}, "properties": props}, "g"],
            ["Email/get", {"accountId": account, "ids": [], "properties": ["header:Subject:asAddresses"]}, "bad1"],
            ["Email/get", {"accountId": account, "ids": [], "properties": ["header:X-Custom:asNothing"]}, "bad2"],
            ["Email/get", {"accountId": account, "ids": [], "properties": ["header::asText"]}, "bad3"]
        ]),
    )["methodResponses"]
        .clone();
    let e = &r[1][1]["list"][0];
    assert_eq!(
        e["header:From:asAddresses"],
        json!([{"name": "Joe Bloggs", "email": "joe@example.com"}])
    );
    assert_eq!(
        e["header:To:asGroupedAddresses"],
        json!([
            {"name": "Friends", "addresses": [{"name": null, "email": "a@example.net"}, {"name": "Bé", "email": "b@example.net"}]},
            {"name": null, "addresses": [{"name": null, "email": "c@example.org"}]}
        ]),
        "{e}"
    );
    assert_eq!(e["header:to:asAddresses"].as_array().unwrap().len(), 3);
    assert_eq!(
        e["header:List-Unsubscribe:asURLs"],
        json!(["mailto:unsub@example.net", "https://example.net/unsub"])
    );
    assert_eq!(
        e["header:X-Custom:asText:all"],
        json!(["first", "café au lait"])
    );
    assert_eq!(
        e["header:X-Custom"], "  =?UTF-8?Q?caf=C3=A9?=\r\n  au lait",
        "raw: the octets after the colon"
    );
    assert_eq!(e["header:Date:asDate"], "2024-05-07T09:00:00+02:00");
    assert_eq!(e["header:References:asMessageIds"], json!(["a@x", "b@x"]));
    assert_eq!(e["header:X-Missing"], Value::Null);
    assert_eq!(e["header:X-Missing:all"], json!([]));
    for bad in [2, 3, 4] {
        assert_eq!(r[bad][1]["type"], "invalidArguments", "{}", r[bad][1]);
    }
}

/// RFC 8621 §5: snippets of the emails a text query found, the words in
/// `<mark>`, the rest escaped; `null` where nothing matched.
#[test]
fn search_snippets_mark_the_query_words() {
    let s = serve();
    let account = account(&s);
    import(
        &s,
        &s.ana,
        "Subject: Lunch <plans> & more\r\n\r\nWe could have lunch on Friday, or LUNCHES all week.\r\n",
    );
    import(
        &s,
        &s.ana,
        "Subject: budget\r\n\r\nNo words of interest here.\r\n",
    );
    let r = api(
        &s,
        &s.ana,
        &[CORE, MAIL],
        json!([
            ["Email/query", {"accountId": account, "filter": {"text": "lunch"}}, "q"],
            ["Email/query", {"accountId": account, "filter": {"subject": "budget"}}, "b"],
            ["SearchSnippet/get", {"accountId": account, "filter": {"text": "lunch"},
                "#emailIds": {"resultOf": "q", "name": "Email/query", "path": "/ids"}}, "s"],
            ["SearchSnippet/get", {"accountId": account, "filter": {"text": "lunch"},
                "#emailIds": {"resultOf": "b", "name": "Email/query", "path": "/ids"}}, "n"],
            ["SearchSnippet/get", {"accountId": account, "filter": {"nonsense": 1}, "emailIds": []}, "x"],
            ["SearchSnippet/get", {"accountId": account, "emailIds": ["e999999"]}, "m"]
        ]),
    )["methodResponses"]
        .clone();
    let snip = &r[2][1]["list"][0];
    assert_eq!(
        snip["subject"],
        "<mark>Lunch</mark> &lt;plans&gt; &amp; more"
    );
    assert_eq!(
        snip["preview"], "We could have <mark>lunch</mark> on Friday, or LUNCHES all week.",
        "a word, not a prefix of another"
    );
    assert_eq!(r[3][1]["list"][0]["subject"], Value::Null);
    assert_eq!(r[3][1]["list"][0]["preview"], Value::Null);
    assert_eq!(r[4][1]["type"], "unsupportedFilter");
    assert_eq!(r[5][1]["notFound"], json!(["e999999"]));
}

/// RFC 9425: the alias's quota as a Quota object, its use following the
/// mail, and no object while no quota is set.
#[test]
fn quota_follows_the_mailbox() {
    const QUOTA: &str = "urn:ietf:params:jmap:quota";
    let admin = "admin token for the quota test";
    let s = serve_with(&[], &[("COFRE_ADMIN_TOKEN", admin)]);
    let sess = session(&s, &s.ana);
    let account = sess["primaryAccounts"][QUOTA].as_str().unwrap().to_string();
    let get = |calls: Value| api(&s, &s.ana, &[CORE, QUOTA], calls)["methodResponses"].clone();
    let r = get(json!([["Quota/get", {"accountId": account, "ids": null}, "q"]]));
    assert_eq!(r[0][1]["list"], json!([]), "no quota, no object");
    let r = http_with(
        &s.addr,
        "PUT",
        "/v1/admin/aliases/ana@example.com/quota",
        &[
            ("Authorization", &format!("Bearer {admin}")),
            ("Content-Type", "application/json"),
        ],
        br#"{"quota": 1000000}"#,
    );
    assert!(r.status < 300, "{}", r.status);
    let r = get(json!([["Quota/get", {"accountId": account, "ids": null}, "q"]]));
    let q = r[0][1]["list"][0].clone();
    assert_eq!(q["hardLimit"], 1_000_000);
    assert_eq!(q["resourceType"], "octets");
    assert_eq!(q["scope"], "account");
    let before = r[0][1]["state"].as_str().unwrap().to_string();
    let used = q["used"].as_u64().unwrap();
    let mail = "Subject: weight\r\n\r\nsome bytes to count\r\n";
    import(&s, &s.ana, mail);
    let r = get(json!([
        ["Quota/changes", {"accountId": account, "sinceState": before}, "c"],
        ["Quota/get", {"accountId": account, "ids": [q["id"], "q999"]}, "g"],
        ["Quota/query", {"accountId": account, "filter": {"resourceType": "octets"}}, "f"],
        ["Quota/query", {"accountId": account, "filter": {"scope": "domain"}}, "n"]
    ]));
    assert_eq!(r[0][1]["updated"], json!([q["id"]]));
    assert_eq!(
        r[1][1]["list"][0]["used"].as_u64().unwrap(),
        used + mail.len() as u64
    );
    assert_eq!(r[1][1]["notFound"], json!(["q999"]));
    assert_eq!(r[2][1]["ids"], json!([q["id"]]));
    assert_eq!(r[3][1]["ids"], json!([]));
}

/// RFC 8887: JMAP over a WebSocket — requests answered by id, request
/// errors as RequestError, and pushed StateChanges once enabled.
#[test]
fn websocket_carries_requests_and_push() {
    use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};
    const WS: &str = "urn:ietf:params:jmap:websocket";
    let s = serve();
    let sess = session(&s, &s.ana);
    let url = sess["capabilities"][WS]["url"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(url, format!("ws://{}/jmap/ws", s.addr));
    assert_eq!(sess["capabilities"][WS]["supportsPush"], true);
    let account = sess["primaryAccounts"][MAIL].as_str().unwrap().to_string();

    let connect = |protocol: &str| {
        let mut req = url.as_str().into_client_request().unwrap();
        req.headers_mut()
            .insert("Authorization", s.ana.parse().unwrap());
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
        let tcp = std::net::TcpStream::connect(&s.addr).unwrap();
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        tungstenite::client(req, tcp).map_err(|e| e.to_string())
    };
    assert!(connect("chat").is_err(), "only the jmap subprotocol");
    let (mut ws, response) = connect("jmap").unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "jmap");
    let mut send = |v: Value| ws.send(Message::text(v.to_string())).unwrap();
    send(
        json!({"@type": "Request", "id": "r1", "using": [CORE, MAIL],
                "methodCalls": [["Core/echo", {"hello": true}, "0"],
                                ["Email/get", {"accountId": account, "ids": []}, "1"]]}),
    );
    send(
        json!({"@type": "Request", "id": "r2", "using": ["urn:example:nothing"], "methodCalls": []}),
    );
    send(json!({"@type": "WebSocketPushEnable", "dataTypes": ["Email"]}));
    let mut read = || -> Value {
        loop {
            match ws.read().unwrap() {
                Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
    };
    let r1 = read();
    assert_eq!(r1["@type"], "Response");
    assert_eq!(r1["requestId"], "r1");
    assert_eq!(r1["methodResponses"][0][1], json!({"hello": true}));
    let before = r1["methodResponses"][1][1]["state"]
        .as_str()
        .unwrap()
        .to_string();
    let r2 = read();
    assert_eq!(r2["@type"], "RequestError");
    assert_eq!(r2["requestId"], "r2");
    assert_eq!(r2["type"], "urn:ietf:params:jmap:error:unknownCapability");

    import(&s, &s.ana, "Subject: over the socket\r\n\r\nx\r\n");
    let change = read();
    assert_eq!(change["@type"], "StateChange", "{change}");
    let states = change["changed"][&account].as_object().unwrap();
    assert_eq!(states.keys().collect::<Vec<_>>(), ["Email"]);
    assert_ne!(states["Email"], before.as_str());
}

/// RFC 8621 §8: the VacationResponse singleton read and updated, and the
/// MX of the same `cofre serve` answering mail with it.
#[test]
fn vacation_response_is_set_and_answers_mail() {
    use std::io::{BufRead, BufReader, Write};
    const VACATION: &str = "urn:ietf:params:jmap:vacationresponse";
    let admin = "admin token for the vacation test";
    // An MX, and a closed DNS port: replies wait in the outbound queue.
    let s = serve_with(
        &["--smtp", "127.0.0.1:0", "--dns", "127.0.0.1:1"],
        &[("COFRE_ADMIN_TOKEN", admin)],
    );
    let account = session(&s, &s.ana)["primaryAccounts"][VACATION]
        .as_str()
        .unwrap()
        .to_string();
    let get = |calls: Value| api(&s, &s.ana, &[CORE, VACATION], calls)["methodResponses"].clone();
    let r = get(json!([["VacationResponse/get", {"accountId": account, "ids": null}, "g"]]));
    assert_eq!(r[0][1]["list"][0]["id"], "singleton");
    assert_eq!(r[0][1]["list"][0]["isEnabled"], false);
    let before = r[0][1]["state"].as_str().unwrap().to_string();
    let r = get(json!([
        ["VacationResponse/set", {"accountId": account, "update": {"singleton": {
            "isEnabled": true, "fromDate": "2020-01-01T00:00:00Z", "toDate": null,
            "subject": "Out of office", "textBody": "Back soon."}}}, "s"],
        ["VacationResponse/set", {"accountId": account, "create": {"x": {}}, "destroy": ["singleton"],
            "update": {"other": {}}}, "bad"],
        ["VacationResponse/set", {"accountId": account, "update": {"singleton": {"color": "red"}}}, "prop"],
        ["VacationResponse/set", {"accountId": account, "ifInState": before, "update": {"singleton": {}}}, "stale"],
        ["VacationResponse/get", {"accountId": account, "ids": ["singleton", "nope"]}, "g"]
    ]));
    assert_eq!(r[0][1]["updated"], json!({"singleton": null}));
    assert_ne!(r[0][1]["newState"], before.as_str());
    assert_eq!(r[1][1]["notCreated"]["x"]["type"], "singleton");
    assert_eq!(r[1][1]["notDestroyed"]["singleton"]["type"], "singleton");
    assert_eq!(r[1][1]["notUpdated"]["other"]["type"], "notFound");
    assert_eq!(
        r[2][1]["notUpdated"]["singleton"]["properties"],
        json!(["color"])
    );
    assert_eq!(r[3][1]["type"], "stateMismatch");
    let v = &r[4][1]["list"][0];
    assert_eq!(v["isEnabled"], true);
    assert_eq!(v["fromDate"], "2020-01-01T00:00:00Z");
    assert_eq!(v["subject"], "Out of office");
    assert_eq!(r[4][1]["notFound"], json!(["nope"]));

    // Mail from another server: the MX queues the reply to its sender.
    let smtp = s.smtp.as_deref().unwrap();
    let mut c = BufReader::new(std::net::TcpStream::connect(smtp).unwrap());
    let mut line = String::new();
    let mut say = |cmd: &str, c: &mut BufReader<std::net::TcpStream>| {
        if !cmd.is_empty() {
            c.get_mut().write_all(cmd.as_bytes()).unwrap();
        }
        loop {
            line.clear();
            c.read_line(&mut line).unwrap();
            if line.as_bytes().get(3) != Some(&b'-') {
                return line.clone();
            }
        }
    };
    say("", &mut c);
    say("EHLO else.example\r\n", &mut c);
    assert!(say("MAIL FROM:<carla@else.example>\r\n", &mut c).starts_with("250"));
    assert!(say("RCPT TO:<ana@example.com>\r\n", &mut c).starts_with("250"));
    assert!(say("DATA\r\n", &mut c).starts_with("354"));
    let r = say(
        "From: carla@else.example\r\nTo: ana@example.com\r\nSubject: hi\r\n\r\nhello\r\n.\r\n",
        &mut c,
    );
    assert!(r.starts_with("250"), "{r}");
    let q = http_with(
        &s.addr,
        "GET",
        "/v1/admin/outbound",
        &[("Authorization", &format!("Bearer {admin}"))],
        b"",
    );
    let q = String::from_utf8_lossy(&q.body).to_string();
    assert!(
        q.contains("carla@else.example"),
        "the reply waits for carla: {q}"
    );
}

/// RFC 8621 §4.10's example, replayed: a collapsed, counted inbox page,
/// then each thread, then every email of those threads — four calls in
/// one request, chained by result references (`/list/*/emailIds`
/// flattening arrays of arrays, RFC 8620 §3.7).
#[test]
fn rfc8621_email_query_example_chain() {
    let s = serve();
    let account = account(&s);
    import(
        &s,
        &s.ana,
        "Subject: Dinner\r\nMessage-ID: <d1@x>\r\nFrom: Joe <joe@example.com>\r\n\r\nWhere?\r\n",
    );
    import(
        &s,
        &s.ana,
        "Subject: Re: Dinner\r\nMessage-ID: <d2@x>\r\nIn-Reply-To: <d1@x>\r\n\r\nHere.\r\n",
    );
    import(
        &s,
        &s.ana,
        "Subject: Meeting\r\nMessage-ID: <m1@x>\r\n\r\nAt ten.\r\n",
    );
    let r = api(
        &s,
        &s.ana,
        &[CORE, MAIL],
        json!([["Mailbox/query", {"accountId": account, "filter": {"role": "inbox"}}, "m"]]),
    );
    let inbox = r["methodResponses"][0][1]["ids"][0].clone();
    let r = api(
        &s,
        &s.ana,
        &[CORE, MAIL],
        json!([
            ["Email/query", {"accountId": account, "filter": {"inMailbox": inbox},
                "sort": [{"property": "receivedAt", "isAscending": false}],
                "collapseThreads": true, "position": 0, "limit": 10, "calculateTotal": true}, "t0"],
            ["Email/get", {"accountId": account,
                "#ids": {"resultOf": "t0", "name": "Email/query", "path": "/ids"},
                "properties": ["threadId"]}, "t1"],
            ["Thread/get", {"accountId": account,
                "#ids": {"resultOf": "t1", "name": "Email/get", "path": "/list/*/threadId"}}, "t2"],
            ["Email/get", {"accountId": account,
                "#ids": {"resultOf": "t2", "name": "Thread/get", "path": "/list/*/emailIds"},
                "properties": ["threadId", "mailboxIds", "keywords", "hasAttachment", "from",
                               "subject", "receivedAt", "size", "preview"]}, "t3"]
        ]),
    )["methodResponses"]
        .clone();
    let names: Vec<&str> = r
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c[0].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["Email/query", "Email/get", "Thread/get", "Email/get"],
        "{r}"
    );
    assert_eq!(r[0][1]["total"], 2, "two threads");
    assert_eq!(r[0][1]["ids"].as_array().unwrap().len(), 2);
    assert_eq!(r[2][1]["list"].as_array().unwrap().len(), 2);
    let all = r[3][1]["list"].as_array().unwrap();
    assert_eq!(all.len(), 3, "every email of both threads");
    let dinner = all.iter().find(|e| e["subject"] == "Dinner").unwrap();
    assert_eq!(
        dinner["from"],
        json!([{"name": "Joe", "email": "joe@example.com"}])
    );
    assert_eq!(dinner["preview"], "Where?");
    assert_eq!(dinner["hasAttachment"], false);
    assert_eq!(dinner["mailboxIds"], json!({inbox.as_str().unwrap(): true}));
    assert_eq!(
        all.iter()
            .filter(|e| e["threadId"] == dinner["threadId"])
            .count(),
        2,
        "the reply is in Dinner's thread"
    );
}

/// RFC 8621 §2.3: sortAsTree puts parents before their children and
/// keeps siblings in the sort's order; filterAsTree drops a match whose
/// parent did not match. Email/copy has no other account to copy from.
#[test]
fn mailbox_query_as_a_tree_and_no_copy_between_accounts() {
    let s = serve();
    let account = account(&s);
    let get = |calls: Value| api(&s, &s.ana, &[CORE, MAIL], calls)["methodResponses"].clone();
    let r = get(json!([["Mailbox/set", {"accountId": account, "create": {
        "a": {"name": "Alpha"},
        "ab": {"name": "Beta", "parentId": "#a"},
        "aa": {"name": "Zed", "parentId": "#a"},
        "b": {"name": "Bravo"},
        "bb": {"name": "Beta2", "parentId": "#b"}
    }}, "c"]]));
    let id = |k: &str| r[0][1]["created"][k]["id"].as_str().unwrap().to_string();
    let (a, ab, aa, b, bb) = (id("a"), id("ab"), id("aa"), id("b"), id("bb"));
    let r2 = get(json!([
        ["Mailbox/query", {"accountId": account, "filter": {"hasAnyRole": false},
            "sort": [{"property": "name", "isAscending": false}], "sortAsTree": true}, "t"],
        ["Mailbox/query", {"accountId": account, "filter": {"name": "b", "hasAnyRole": false},
            "sort": [{"property": "name"}], "filterAsTree": true}, "f"],
        ["Mailbox/query", {"accountId": account, "filter": {"name": "b", "hasAnyRole": false},
            "sort": [{"property": "name"}]}, "flat"],
        ["Email/copy", {"accountId": account, "fromAccountId": "elsewhere", "create": {}}, "x"],
        ["Email/copy", {"accountId": account, "fromAccountId": account, "create": {}}, "y"]
    ]));
    assert_eq!(r2[0][1]["ids"], json!([b, bb, a, aa, ab]), "{}", r2[0][1]);
    // "b" matches Bravo, Beta (under Alpha, which does not match) and
    // Beta2 (under Bravo, which does).
    assert_eq!(r2[1][1]["ids"], json!([bb, b]));
    assert_eq!(r2[2][1]["ids"], json!([ab, bb, b]));
    assert_eq!(r2[3][1]["type"], "fromAccountNotFound");
    assert_eq!(r2[4][1]["type"], "invalidArguments");
}

#[test]
fn email_set_changes_keywords_and_mailboxes_and_destroys() {
    let s = serve();
    let account = account(&s);
    let call = |calls: Value| api(&s, &s.ana, &[CORE, MAIL], calls)["methodResponses"].clone();
    for n in 1..=3 {
        import(&s, &s.ana, &format!("Subject: m{n}\r\n\r\nbody {n}\r\n"));
    }
    let r = call(json!([
        ["Mailbox/get", {"accountId": account, "properties": ["role"]}, "m"],
        ["Email/query", {"accountId": account, "sort": [{"property": "subject"}]}, "q"]
    ]));
    let boxes = r[0][1]["list"].as_array().unwrap().clone();
    let role = |name: &str| {
        boxes.iter().find(|m| m["role"] == name).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (inbox, archive) = (role("inbox"), role("archive"));
    let ids: Vec<String> = r[1][1]["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let before = r[1][1]["queryState"].as_str().unwrap().to_string();

    let r = call(json!([["Email/set", {
        "accountId": account,
        "ifInState": before,
        "create": {"k1": {"subject": "new"}},
        "update": {
            ids[0].clone(): {"keywords/$flagged": true, "keywords/$seen": true},
            ids[1].clone(): {"mailboxIds": {archive.clone(): true}},
            "e999999": {"keywords/$seen": true},
            ids[2].clone(): {"subject": "rewritten"}
        },
        "destroy": [ids[2].clone(), "e888888"]
    }, "s"]]));
    let set = &r[0][1];
    assert_eq!(set["oldState"], before.as_str());
    assert_ne!(set["newState"], before.as_str());
    assert_eq!(
        set["updated"],
        json!({ids[0].clone(): null, ids[1].clone(): null})
    );
    assert_eq!(set["notUpdated"]["e999999"]["type"], "notFound");
    assert_eq!(set["notUpdated"][&ids[2]]["type"], "invalidProperties");
    assert_eq!(set["notUpdated"][&ids[2]]["properties"], json!(["subject"]));
    assert_eq!(set["notCreated"]["k1"]["type"], "invalidProperties");
    assert_eq!(set["notCreated"]["k1"]["properties"], json!(["mailboxIds"]));
    assert_eq!(set["destroyed"], json!([ids[2].clone()]));
    assert_eq!(set["notDestroyed"]["e888888"]["type"], "notFound");

    let r = call(json!([
        ["Email/get", {"accountId": account, "ids": [ids[0].clone(), ids[1].clone(), ids[2].clone()], "properties": ["keywords", "mailboxIds"]}, "g"],
        ["Email/changes", {"accountId": account, "sinceState": before}, "c"],
        ["Email/set", {"accountId": account, "ifInState": before, "update": {ids[0].clone(): {"keywords": {}}}}, "stale"],
        ["Email/set", {"accountId": account, "update": {ids[0].clone(): {"keywords": {"$answered": true}}, ids[1].clone(): {"mailboxIds/m999999": true}}}, "full"]
    ]));
    let got = r[0][1]["list"].as_array().unwrap();
    assert_eq!(got[0]["keywords"], json!({"$flagged": true, "$seen": true}));
    assert_eq!(
        got[1]["mailboxIds"],
        json!({archive.clone(): true}),
        "moved out of {inbox}"
    );
    assert_eq!(r[0][1]["notFound"], json!([ids[2].clone()]));
    let mut updated: Vec<String> = r[1][1]["updated"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    updated.sort();
    let mut want = vec![ids[0].clone(), ids[1].clone()];
    want.sort();
    assert_eq!(updated, want);
    assert_eq!(r[1][1]["destroyed"], json!([ids[2].clone()]));
    assert_eq!(r[2][1]["type"], "stateMismatch");
    assert_eq!(r[3][1]["updated"], json!({ids[0].clone(): null}));
    assert_eq!(r[3][1]["notUpdated"][&ids[1]]["type"], "invalidProperties");
    let r = call(
        json!([["Email/get", {"accountId": account, "ids": [ids[0].clone()], "properties": ["keywords"]}, "g"]]),
    );
    assert_eq!(
        r[0][1]["list"][0]["keywords"],
        json!({"$answered": true}),
        "the whole map replaced"
    );
}

#[test]
fn bodies_follow_rfc8621_parse_structure() {
    let s = serve();
    let account = account(&s);
    import(
        &s,
        &s.ana,
        "From: carla@example.net\r\nSubject: with parts\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"m\"\r\n\r\n\
         --m\r\nContent-Type: multipart/alternative; boundary=\"a\"\r\n\r\n\
         --a\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nCaf=C3=A9 at noon, see the plan.\r\n\
         --a\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Caf\u{e9} at <b>noon</b></p>\r\n\
         --a--\r\n\
         --m\r\nContent-Type: application/pdf; name=\"plan.pdf\"\r\nContent-Disposition: attachment; filename=\"plan.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n\
         --m--\r\n",
    );
    let r = api(
        &s,
        &s.ana,
        &[CORE, MAIL],
        json!([
            ["Email/query", {"accountId": account}, "q"],
            ["Email/get", {
                "accountId": account,
                "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"},
                "properties": ["bodyStructure", "textBody", "htmlBody", "attachments", "bodyValues"],
                "fetchAllBodyValues": true,
                "maxBodyValueBytes": 8
            }, "g"],
            ["Email/get", {
                "accountId": account,
                "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"},
                "properties": ["bodyValues", "textBody"],
                "fetchTextBodyValues": true,
                "bodyProperties": ["partId", "type", "headers"]
            }, "h"],
            ["Email/get", {"accountId": account, "ids": [], "bodyProperties": ["colour"]}, "bad"]
        ]),
    )["methodResponses"]
        .clone();
    let e = &r[1][1]["list"][0];
    let root = &e["bodyStructure"];
    assert_eq!(root["type"], "multipart/mixed");
    assert_eq!(root["partId"], Value::Null);
    assert_eq!(root["subParts"][0]["type"], "multipart/alternative");
    assert_eq!(root["subParts"][0]["subParts"][0]["partId"], "1.1");
    assert_eq!(root["subParts"][1]["name"], "plan.pdf");
    assert_eq!(root["subParts"][1]["size"], 9, "decoded size");
    assert_eq!(e["textBody"][0]["type"], "text/plain");
    assert_eq!(e["textBody"][0]["charset"], "utf-8");
    assert_eq!(e["htmlBody"][0]["type"], "text/html");
    assert_eq!(e["attachments"].as_array().unwrap().len(), 1);
    assert_eq!(e["attachments"][0]["disposition"], "attachment");
    assert_eq!(
        e["attachments"][0]["blobId"],
        format!(
            "{}-2",
            e["attachments"][0]["blobId"]
                .as_str()
                .unwrap()
                .split('-')
                .next()
                .unwrap()
        )
    );
    // Decoded (quoted-printable, UTF-8), cut at 8 bytes on a character
    // boundary.
    assert_eq!(e["bodyValues"]["1.1"]["value"], "Café at");
    assert_eq!(e["bodyValues"]["1.1"]["isTruncated"], true);
    assert_eq!(e["bodyValues"]["1.2"]["isTruncated"], true);
    assert!(e["bodyValues"].get("2").is_none(), "not text");
    let h = &r[2][1]["list"][0];
    assert_eq!(
        h["bodyValues"]["1.1"]["value"], "Café at noon, see the plan.",
        "the CRLF before a boundary belongs to the boundary (RFC 2046)"
    );
    assert!(
        h["bodyValues"].get("1.2").is_none(),
        "only the text body asked for"
    );
    assert_eq!(
        h["textBody"][0]["headers"][0],
        json!({"name": "Content-Type", "value": " text/plain; charset=utf-8"})
    );
    assert!(h["textBody"][0].get("charset").is_none());
    assert_eq!(r[3][1]["type"], "invalidArguments");
}

/// RFC 8621 §6–7: identities are created, updated and destroyed (the
/// alias's own one only updated; none sends as another address), their
/// changes are told; submissions are kept, fetched, queried and changed
/// as the RFC allows — sent mail cannot be unsent, and destroying a
/// submission can destroy its email through onSuccessDestroyEmail.
#[test]
fn identities_and_submissions_are_kept() {
    const SUBMISSION: &str = "urn:ietf:params:jmap:submission";
    let s = serve_with(
        &["--submission", "127.0.0.1:0", "--dns", "127.0.0.1:1"],
        &[],
    );
    let account = account(&s);
    let call =
        |calls: Value| api(&s, &s.ana, &[CORE, MAIL, SUBMISSION], calls)["methodResponses"].clone();
    let r = call(json!([["Identity/get", {"accountId": account}, "0"]]));
    let own = r[0][1]["list"][0].clone();
    assert_eq!(r[0][1]["list"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(own["mayDelete"], false);
    let s0 = r[0][1]["state"].as_str().unwrap().to_string();

    let r = call(
        json!([["Identity/set", {"accountId": account, "ifInState": s0,
        "create": {
            "work": {"name": "Ana at work", "email": "ANA@example.com",
                     "textSignature": "-- \nAna", "replyTo": [{"name": null, "email": "desk@example.com"}]},
            "theirs": {"email": "bo@example.com"},
            "bad": {"email": "ana@example.com", "bcc": "not a list"}
        },
        "update": {own["id"].as_str().unwrap(): {"name": "Ana"}, "i77": {"name": "x"}},
        "destroy": [own["id"]]
    }, "1"]]),
    );
    let set = &r[0][1];
    let work = set["created"]["work"]["id"].as_str().unwrap().to_string();
    assert_eq!(set["created"]["work"]["mayDelete"], true, "{set}");
    assert_eq!(
        set["created"]["work"]["htmlSignature"], "",
        "defaults are told"
    );
    assert_eq!(set["notCreated"]["theirs"]["type"], "forbiddenFrom");
    assert_eq!(set["notCreated"]["bad"]["properties"], json!(["bcc"]));
    assert_eq!(set["updated"], json!({own["id"].as_str().unwrap(): null}));
    assert_eq!(set["notUpdated"]["i77"]["type"], "notFound");
    assert_eq!(
        set["notDestroyed"][own["id"].as_str().unwrap()]["type"],
        "forbidden"
    );
    let s1 = set["newState"].as_str().unwrap().to_string();
    assert_ne!(s1, s0);

    let r = call(json!([
        ["Identity/changes", {"accountId": account, "sinceState": s0}, "c"],
        ["Identity/get", {"accountId": account, "ids": [work, own["id"]]}, "g"],
        ["Identity/set", {"accountId": account, "ifInState": s0, "destroy": [work]}, "late"]
    ]));
    assert_eq!(r[0][1]["created"], json!([work]), "{r}");
    assert_eq!(r[0][1]["updated"], json!([own["id"]]));
    assert_eq!(
        r[1][1]["list"][0]["replyTo"],
        json!([{"name": null, "email": "desk@example.com"}])
    );
    assert_eq!(r[1][1]["list"][1]["name"], "Ana");
    assert_eq!(r[2][1]["type"], "stateMismatch");

    // Send from the new identity; the submission is kept.
    let r = call(json!([
        ["Mailbox/query", {"accountId": account, "filter": {"role": "drafts"}}, "d"],
        ["EmailSubmission/get", {"accountId": account, "ids": []}, "before"]
    ]));
    let drafts = r[0][1]["ids"][0].as_str().unwrap().to_string();
    let sub0 = r[1][1]["state"].as_str().unwrap().to_string();
    let r = call(json!([
        ["Email/set", {"accountId": account, "create": {"m": {
            "mailboxIds": {&drafts: true}, "from": [{"email": "ana@example.com"}],
            "to": [{"email": "bo@example.com"}], "subject": "kept",
            "textBody": [{"partId": "1"}], "bodyValues": {"1": {"value": "hi\n"}}}}}, "e"],
        ["EmailSubmission/set", {"accountId": account,
            "create": {"k": {"identityId": work, "emailId": "#m"}}}, "s"]
    ]));
    let email = r[0][1]["created"]["m"]["id"].clone();
    let made = &r[1][1]["created"]["k"];
    let sub = made["id"].as_str().unwrap().to_string();
    assert_eq!(made["identityId"], work.as_str(), "{r}");
    assert_eq!(made["threadId"], r[0][1]["created"]["m"]["threadId"]);

    let r = call(json!([
        ["EmailSubmission/get", {"accountId": account, "ids": [sub, "s999"]}, "g"],
        ["EmailSubmission/changes", {"accountId": account, "sinceState": sub0}, "c"],
        ["EmailSubmission/query", {"accountId": account, "filter": {"identityIds": [work]},
            "sort": [{"property": "sentAt", "isAscending": false}], "calculateTotal": true}, "q1"],
        ["EmailSubmission/query", {"accountId": account, "filter": {"operator": "NOT",
            "conditions": [{"emailIds": [email]}]}}, "q2"],
        ["EmailSubmission/query", {"accountId": account, "filter": {"after": "2999-01-01T00:00:00Z"}}, "q3"],
        ["EmailSubmission/query", {"accountId": account, "sort": [{"property": "size"}]}, "q4"],
        ["EmailSubmission/queryChanges", {"accountId": account, "sinceQueryState": sub0}, "q5"]
    ]));
    let got = &r[0][1]["list"][0];
    assert_eq!(got["emailId"], email, "{r}");
    assert_eq!(got["undoStatus"], "final");
    assert_eq!(
        got["deliveryStatus"]["bo@example.com"]["delivered"],
        "unknown"
    );
    assert!(
        got["deliveryStatus"]["bo@example.com"]["smtpReply"]
            .as_str()
            .unwrap()
            .starts_with("250")
    );
    assert_eq!(r[0][1]["notFound"], json!(["s999"]));
    assert_eq!(r[1][1]["created"], json!([sub]));
    assert_eq!(
        (r[2][1]["ids"].clone(), r[2][1]["total"].clone()),
        (json!([sub]), json!(1))
    );
    assert_eq!(r[3][1]["ids"], json!([]));
    assert_eq!(r[4][1]["ids"], json!([]));
    assert_eq!(r[5][1]["type"], "unsupportedSort");
    assert_eq!(r[6][1]["type"], "cannotCalculateChanges");

    // Sent mail cannot be unsent; forgetting the submission destroys its
    // email when asked to.
    let r = call(json!([
        ["EmailSubmission/set", {"accountId": account,
            "update": {&sub: {"undoStatus": "canceled"}}}, "u"],
        ["EmailSubmission/set", {"accountId": account, "destroy": [sub],
            "onSuccessDestroyEmail": [sub]}, "x"],
        ["EmailSubmission/changes", {"accountId": account, "sinceState": sub0}, "c"],
        ["Email/get", {"accountId": account, "ids": [email]}, "e"],
        ["Identity/set", {"accountId": account, "destroy": [work]}, "i"],
        ["Identity/changes", {"accountId": account, "sinceState": s1}, "ic"]
    ]));
    assert_eq!(r[0][1]["notUpdated"][&sub]["type"], "cannotUnsend", "{r}");
    assert_eq!(r[1][1]["destroyed"], json!([sub]));
    assert_eq!(
        (r[2][0].clone(), r[2][1]["destroyed"].clone()),
        (json!("Email/set"), json!([email]))
    );
    assert_eq!(
        r[3][1]["created"],
        json!([]),
        "made and forgotten since: not told"
    );
    assert_eq!(r[4][1]["notFound"], json!([email]));
    assert_eq!(r[5][1]["destroyed"], json!([work]));
    assert_eq!(r[6][1]["destroyed"], json!([work]));
}

/// RFC 8621 §4.6: an Email created from a whole `bodyStructure` — a
/// mixed multipart holding text and HTML alternatives from `bodyValues`,
/// an inline image with a cid and a named attachment from uploads — reads
/// back as that tree; a structure given beside the body lists, or a part
/// with no content, is refused by name.
#[test]
fn email_set_creates_from_a_body_structure() {
    let s = serve();
    let account = account(&s);
    let get = |calls: Value| api(&s, &s.ana, &[CORE, MAIL], calls)["methodResponses"].clone();
    let r =
        get(json!([["Mailbox/query", {"accountId": account, "filter": {"role": "drafts"}}, "m"]]));
    let drafts = r[0][1]["ids"][0].as_str().unwrap().to_string();
    let upload = |bytes: &[u8], media: &str| {
        let r = http_with(
            &s.addr,
            "POST",
            &format!("/jmap/upload/{account}/"),
            &[("Authorization", &s.ana), ("Content-Type", media)],
            bytes,
        );
        r.json()["blobId"].as_str().unwrap().to_string()
    };
    let png = b"\x89PNG\r\n\x1a\n fake image \x00\xff";
    let csv = b"a,b\r\n1,2\r\n";
    let (img, sheet) = (upload(png, "image/png"), upload(csv, "text/csv"));
    let structure = json!({"type": "multipart/mixed", "subParts": [
        {"type": "multipart/related", "subParts": [
            {"type": "multipart/alternative", "subParts": [
                {"partId": "t", "type": "text/plain"},
                {"partId": "h", "type": "text/html", "language": ["pt"]}
            ]},
            {"blobId": img, "type": "image/png", "disposition": "inline", "cid": "logo@x"}
        ]},
        {"blobId": sheet, "type": "text/csv", "charset": "us-ascii", "name": "numbers.csv",
         "headers": [{"name": "X-Origin", "value": "ledger"}]}
    ]});
    let r = get(json!([["Email/set", {"accountId": account, "create": {
        "tree": {"mailboxIds": {&drafts: true}, "from": [{"email": "ana@example.com"}],
                 "subject": "structured", "bodyStructure": structure,
                 "bodyValues": {"t": {"value": "Plain words.\n"},
                                "h": {"value": "<p>Rich <img src=\"cid:logo@x\"></p>"}}},
        "twice": {"mailboxIds": {&drafts: true}, "bodyStructure": {"partId": "t"},
                  "textBody": [{"partId": "t"}], "bodyValues": {"t": {"value": "x"}}},
        "empty": {"mailboxIds": {&drafts: true}, "bodyStructure": {"type": "multipart/mixed"}},
        "odd": {"mailboxIds": {&drafts: true}, "bodyStructure": {"partId": "t", "size": 3},
                "bodyValues": {"t": {"value": "x"}}}
    }}, "c"]]));
    let set = &r[0][1];
    assert_eq!(
        set["notCreated"]["twice"]["properties"],
        json!(["textBody"]),
        "{set}"
    );
    assert_eq!(
        set["notCreated"]["empty"]["properties"],
        json!(["bodyStructure"])
    );
    assert_eq!(
        set["notCreated"]["odd"]["properties"],
        json!(["bodyStructure"])
    );
    let id = set["created"]["tree"]["id"].clone();
    let r = get(json!([["Email/get", {"accountId": account, "ids": [id],
        "properties": ["bodyStructure", "textBody", "htmlBody", "attachments", "bodyValues"],
        "bodyProperties": ["partId", "blobId", "type", "disposition", "cid", "name", "language", "headers"],
        "fetchAllBodyValues": true}, "g"]]));
    let e = &r[0][1]["list"][0];
    let b = &e["bodyStructure"];
    assert_eq!(b["type"], "multipart/mixed", "{e}");
    let related = &b["subParts"][0];
    assert_eq!(related["type"], "multipart/related");
    let alt = &related["subParts"][0];
    assert_eq!(
        (
            alt["subParts"][0]["type"].clone(),
            alt["subParts"][1]["type"].clone()
        ),
        (json!("text/plain"), json!("text/html"))
    );
    assert_eq!(alt["subParts"][1]["language"], json!(["pt"]));
    let image = &related["subParts"][1];
    assert_eq!(
        (image["disposition"].clone(), image["cid"].clone()),
        (json!("inline"), json!("logo@x"))
    );
    let attached = &b["subParts"][1];
    assert_eq!(attached["name"], "numbers.csv");
    assert!(
        attached["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["name"] == "X-Origin" && h["value"].as_str().unwrap().trim() == "ledger"),
        "{attached}"
    );
    let value = |list: &str| {
        let part = e[list][0]["partId"].as_str().unwrap();
        e["bodyValues"][part]["value"]
            .as_str()
            .unwrap()
            .replace("\r\n", "\n")
    };
    assert_eq!(value("textBody"), "Plain words.\n");
    assert!(value("htmlBody").contains("cid:logo@x"));
    let names: Vec<&str> = e["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["type"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["image/png", "text/csv"]);
    for (part, bytes) in [(image, &png[..]), (attached, &csv[..])] {
        let r = http_with(
            &s.addr,
            "GET",
            &format!(
                "/jmap/download/{account}/{}/f",
                part["blobId"].as_str().unwrap()
            ),
            &[("Authorization", &s.ana)],
            b"",
        );
        assert_eq!(r.body, bytes, "a part comes back byte for byte");
    }
}

/// RFC 8621's per-method examples, replayed with this account's ids: §2.6
/// (Mailbox/get, then Mailbox/changes feeding a Mailbox/get through
/// `#ids` and `#properties`), §3.1 (Thread/get), §4.2 (Email/get with a
/// parsed header, HTML bodies and truncated body values), §4.8
/// (Email/import), §4.9 (Email/parse), §5.1 (SearchSnippet/get after an
/// Email/query), §6 (Identity/get) and §7.5 (a draft created and
/// submitted, moved by onSuccessUpdateEmail, then a cancel refused).
#[test]
fn rfc8621_per_method_examples() {
    const SUBMISSION: &str = "urn:ietf:params:jmap:submission";
    let s = serve_with(
        &["--submission", "127.0.0.1:0", "--dns", "127.0.0.1:1"],
        &[],
    );
    let account = account(&s);
    let call =
        |calls: Value| api(&s, &s.ana, &[CORE, MAIL, SUBMISSION], calls)["methodResponses"].clone();

    // §2.6: every mailbox with every property, then what changed.
    let r = call(json!([["Mailbox/get", {"accountId": account, "ids": null}, "0"]]));
    let list = r[0][1]["list"].as_array().unwrap().clone();
    let state = r[0][1]["state"].as_str().unwrap().to_string();
    let inbox = list.iter().find(|m| m["role"] == "inbox").unwrap().clone();
    for key in [
        "id",
        "name",
        "parentId",
        "role",
        "sortOrder",
        "totalEmails",
        "unreadEmails",
        "totalThreads",
        "unreadThreads",
        "myRights",
        "isSubscribed",
    ] {
        assert!(inbox.get(key).is_some(), "{key} missing from {inbox}");
    }
    assert_eq!(inbox["myRights"]["mayReadItems"], true);
    let roles: Vec<&str> = list.iter().filter_map(|m| m["role"].as_str()).collect();
    for role in ["inbox", "drafts", "sent", "trash", "archive", "junk"] {
        assert!(roles.contains(&role), "{role} in {roles:?}");
    }
    import(
        &s,
        &s.ana,
        "Subject: Party\r\nMessage-ID: <p1@x>\r\nFrom: Joe <joe@example.com>\r\n\
        List-Post: <mailto:partytime@lists.example.com>\r\nContent-Type: text/html\r\n\r\n\
        <p>Come to the party, it will be great fun and there will be cake for everyone who \
        turns up before nine in the evening, so do not be late.</p>\r\n",
    );
    let inbox_id = inbox["id"].as_str().unwrap();
    let r = call(json!([
        ["Mailbox/changes", {"accountId": account, "sinceState": state}, "0"],
        ["Mailbox/get", {"accountId": account,
            "#ids": {"resultOf": "0", "name": "Mailbox/changes", "path": "/updated"},
            "#properties": {"resultOf": "0", "name": "Mailbox/changes", "path": "/updatedProperties"}}, "1"]
    ]));
    assert_eq!(r[0][1]["updated"], json!([inbox_id]), "{r}");
    assert_eq!(r[1][1]["list"][0]["id"], inbox_id);
    assert_eq!(r[1][1]["list"][0]["totalEmails"], 1);
    assert_eq!(r[1][1]["list"][0]["unreadEmails"], 1);

    // §4.2: Email/get of chosen properties, body values cut at 256 bytes.
    let r = call(json!([
        ["Email/query", {"accountId": account, "filter": {"inMailbox": inbox_id}}, "q"],
        ["Email/get", {"accountId": account,
            "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"},
            "properties": ["threadId", "mailboxIds", "from", "subject", "receivedAt",
                           "header:List-POST:asURLs", "htmlBody", "bodyValues"],
            "bodyProperties": ["partId", "blobId", "size", "type"],
            "fetchHTMLBodyValues": true, "maxBodyValueBytes": 64}, "#1"]
    ]));
    let e = &r[1][1]["list"][0];
    assert_eq!(
        e["header:List-POST:asURLs"],
        json!(["mailto:partytime@lists.example.com"]),
        "{e}"
    );
    assert_eq!(
        e["from"],
        json!([{"name": "Joe", "email": "joe@example.com"}])
    );
    let html = &e["htmlBody"][0];
    assert_eq!(html["type"], "text/html");
    let mut keys: Vec<&String> = html.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["blobId", "partId", "size", "type"]);
    let value = &e["bodyValues"][html["partId"].as_str().unwrap()];
    assert_eq!(value["isTruncated"], true);
    assert!(value["value"].as_str().unwrap().len() <= 64);
    let (email, thread) = (e["id"].clone(), e["threadId"].clone());

    // §3.1: a thread and one that does not exist.
    let r = call(json!([["Thread/get", {"accountId": account, "ids": [thread, "t999999"]}, "#1"]]));
    assert_eq!(
        r[0][1]["list"],
        json!([{"id": thread, "emailIds": [email]}]),
        "{r}"
    );
    assert_eq!(r[0][1]["notFound"], json!(["t999999"]));

    // §4.8 and §4.9: an upload imported with keywords and a date, and
    // blobs parsed — one an email, one not, one missing.
    let upload = |bytes: &[u8]| {
        http_with(
            &s.addr,
            "POST",
            &format!("/jmap/upload/{account}/"),
            &[
                ("Authorization", &s.ana),
                ("Content-Type", "message/rfc822"),
            ],
            bytes,
        )
        .json()["blobId"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let b1 = upload(b"From: joe@example.com\r\nSubject: imported\r\n\r\nhello\r\n");
    let junk = upload(b"\x00\x01 not a message at all");
    let r = call(json!([
        ["Email/import", {"accountId": account, "emails": {"msg1": {"blobId": b1,
            "mailboxIds": {inbox_id: true}, "keywords": {"$seen": true, "$draft": true},
            "receivedAt": "2014-10-07T08:00:00Z"}}}, "0"],
        ["Email/get", {"accountId": account, "ids": ["#msg1"], "properties": ["keywords", "receivedAt", "subject"]}, "1"],
        ["Email/parse", {"accountId": account, "blobIds": [b1, junk, "u99999999"],
            "properties": ["subject", "from"]}, "2"]
    ]));
    let made = &r[0][1]["created"]["msg1"];
    for key in ["id", "blobId", "threadId", "size"] {
        assert!(made.get(key).is_some(), "{key} missing from {made}");
    }
    assert_eq!(
        r[1][1]["list"][0]["receivedAt"], "2014-10-07T08:00:00Z",
        "{r}"
    );
    assert_eq!(
        r[1][1]["list"][0]["keywords"],
        json!({"$seen": true, "$draft": true})
    );
    assert_eq!(r[2][1]["parsed"][&b1]["subject"], "imported");
    assert_eq!(r[2][1]["notFound"], json!(["u99999999"]));
    let junk_parsed = r[2][1]["notParsable"]
        .as_array()
        .is_some_and(|a| a.contains(&json!(junk)))
        || r[2][1]["parsed"].get(&junk).is_some();
    assert!(junk_parsed, "every blob is answered for: {}", r[2][1]);

    // §5.1: snippets for the results of a query, by back-reference.
    let r = call(json!([
        ["Email/query", {"accountId": account, "filter": {"text": "cake"},
            "sort": [{"property": "receivedAt", "isAscending": false}], "limit": 5}, "a"],
        ["SearchSnippet/get", {"accountId": account, "filter": {"text": "cake"},
            "#emailIds": {"resultOf": "a", "name": "Email/query", "path": "/ids"}}, "b"]
    ]));
    let snip = &r[1][1]["list"][0];
    assert_eq!(snip["emailId"], email, "{r}");
    assert!(
        snip["preview"]
            .as_str()
            .unwrap()
            .contains("<mark>cake</mark>"),
        "{snip}"
    );
    assert!(r[1][1]["notFound"].as_array().is_none_or(|a| a.is_empty()));

    // §6: the identities, with every property.
    let r = call(json!([["Identity/get", {"accountId": account}, "0"]]));
    let me = &r[0][1]["list"][0];
    for key in [
        "id",
        "name",
        "email",
        "replyTo",
        "bcc",
        "textSignature",
        "htmlSignature",
        "mayDelete",
    ] {
        assert!(me.get(key).is_some(), "{key} missing from {me}");
    }

    // §7.5: create a draft and send it, moving it from Drafts to Sent on
    // success; then try to cancel.
    let folder = |role: &str| {
        list.iter().find(|m| m["role"] == role).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (drafts, sent) = (folder("drafts"), folder("sent"));
    let r = call(json!([
        ["Email/set", {"accountId": account, "create": {"k1490": {
            "mailboxIds": {&drafts: true}, "keywords": {"$seen": true, "$draft": true},
            "from": [{"name": "Ana", "email": "ana@example.com"}],
            "to": [{"name": "Bo", "email": "bo@example.com"}],
            "subject": "World domination",
            "textBody": [{"partId": "1", "type": "text/plain"}],
            "bodyValues": {"1": {"value": "I have the most brilliant plan."}}}}}, "0"],
        ["EmailSubmission/set", {"accountId": account, "create": {"k1491": {
            "identityId": me["id"], "emailId": "#k1490",
            "envelope": {"mailFrom": {"email": "ana@example.com", "parameters": null},
                         "rcptTo": [{"email": "bo@example.com", "parameters": null}]}}},
            "onSuccessUpdateEmail": {"#k1491": {
                format!("mailboxIds/{drafts}"): null, format!("mailboxIds/{sent}"): true,
                "keywords/$draft": null}}}, "1"]
    ]));
    let names: Vec<&str> = r
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c[0].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["Email/set", "EmailSubmission/set", "Email/set"],
        "{r}"
    );
    let draft = r[0][1]["created"]["k1490"]["id"].clone();
    let sub = r[1][1]["created"]["k1491"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(r[2][1]["updated"], json!({draft.as_str().unwrap(): null}));
    let r = call(json!([
        ["EmailSubmission/set", {"accountId": account, "update": {&sub: {"undoStatus": "canceled"}}}, "0"],
        ["Email/get", {"accountId": account, "ids": [draft], "properties": ["mailboxIds", "keywords"]}, "1"]
    ]));
    assert_eq!(r[0][1]["notUpdated"][&sub]["type"], "cannotUnsend", "{r}");
    assert_eq!(r[1][1]["list"][0]["mailboxIds"], json!({sent: true}));
    assert_eq!(r[1][1]["list"][0]["keywords"], json!({"$seen": true}));
}

/// The session's limits are enforced with the RFC's errors — a request
/// over `maxSizeRequest` is a `limit` request error, more ids than
/// `maxObjectsInGet` or objects than `maxObjectsInSet` a
/// `requestTooLarge` method error — and the API's Bearer token opens JMAP
/// like the password does.
#[test]
fn limits_are_enforced_and_bearer_tokens_work() {
    let s = serve();
    let account = account(&s);
    let sess = session(&s, &s.ana);
    let core = &sess["capabilities"][CORE];
    let max_size = core["maxSizeRequest"].as_u64().unwrap() as usize;
    let max_get = core["maxObjectsInGet"].as_u64().unwrap() as usize;
    let max_set = core["maxObjectsInSet"].as_u64().unwrap() as usize;

    let big = format!(
        r#"{{"using": ["{CORE}"], "methodCalls": [["Core/echo", {{"pad": "{}"}}, "0"]]}}"#,
        "x".repeat(max_size)
    );
    let (status, ctype, v) = post(&s, &s.ana, big.as_bytes());
    assert_eq!(status, 400, "{v}");
    assert!(ctype.starts_with("application/problem+json"), "{ctype}");
    assert_eq!(v["type"], "urn:ietf:params:jmap:error:limit");
    assert_eq!(v["limit"], "maxSizeRequest");

    let ids: Vec<String> = (0..=max_get).map(|i| format!("e{i}")).collect();
    let destroy: Vec<String> = (0..=max_set).map(|i| format!("e{i}")).collect();
    let r = api(
        &s,
        &s.ana,
        &[CORE, MAIL],
        json!([
            ["Email/get", {"accountId": account, "ids": ids}, "g"],
            ["Email/set", {"accountId": account, "destroy": destroy}, "s"],
            ["Mailbox/get", {"accountId": account, "ids": ids}, "m"]
        ]),
    )["methodResponses"]
        .clone();
    for i in 0..3 {
        assert_eq!(r[i][0], "error", "{r}");
        assert_eq!(r[i][1]["type"], "requestTooLarge", "{}", r[i]);
    }

    let r = http_with(
        &s.addr,
        "POST",
        "/v1/session",
        &[("Content-Type", "application/json")],
        json!({"address": "ana@example.com", "password": s.ana_password})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 201);
    let bearer = format!("Bearer {}", r.json()["token"].as_str().unwrap());
    assert_eq!(session(&s, &bearer)["primaryAccounts"][MAIL], account);
    let r = api(
        &s,
        &bearer,
        &[CORE, MAIL],
        json!([["Mailbox/get", {"accountId": account, "ids": null}, "0"]]),
    );
    assert!(
        r["methodResponses"][0][1]["list"].as_array().unwrap().len() >= 6,
        "{r}"
    );
    let (status, _, _) = post(
        &s,
        "Bearer not.a.token",
        br#"{"using": [], "methodCalls": []}"#,
    );
    assert_eq!(status, 401);
}

/// Push tells identity changes too: an EventSource listener for
/// `Identity` alone hears nothing of mail, and a StateChange with the
/// new Identity state when an identity is created.
#[test]
fn push_tells_identity_changes() {
    const SUBMISSION: &str = "urn:ietf:params:jmap:submission";
    let s = serve();
    let account = account(&s);
    let (addr, auth) = (s.addr.clone(), s.ana.clone());
    let listener = std::thread::spawn(move || {
        http_with(
            &addr,
            "GET",
            "/jmap/eventsource?types=Identity&closeafter=state&ping=0",
            &[("Authorization", &auth)],
            b"",
        )
    });
    // Mail first (not told to this listener), then identities, until the
    // listener hears one and closes.
    let mut n = 0;
    let mut states = Vec::new();
    while !listener.is_finished() {
        n += 1;
        assert!(n < 100, "no Identity StateChange in 20 s");
        import(&s, &s.ana, &format!("Subject: mail {n}\r\n\r\nx\r\n"));
        std::thread::sleep(std::time::Duration::from_millis(100));
        let r = api(
            &s,
            &s.ana,
            &[CORE, MAIL, SUBMISSION],
            json!([["Identity/set", {"accountId": account,
            "create": {"x": {"email": "ana@example.com", "name": format!("n{n}")}}}, "0"]]),
        );
        states.push(
            r["methodResponses"][0][1]["newState"]
                .as_str()
                .unwrap()
                .to_string(),
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let r = listener.join().unwrap();
    let text = String::from_utf8(r.body).unwrap();
    let data = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("a data line");
    let change: Value = serde_json::from_str(data).unwrap();
    let told = change["changed"][&account].as_object().unwrap();
    let keys: Vec<&String> = told.keys().collect();
    assert_eq!(keys, ["Identity"], "{text}");
    assert!(
        states.contains(&told["Identity"].as_str().unwrap().to_string()),
        "{text} {states:?}"
    );
}
