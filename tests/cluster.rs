//! The process model end to end: `cofre serve` alone, and a primary with
//! two gateways as separate processes over a TLS link, driven over HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Proc, SECRET, Sse, create_alias, eventually, http};

fn message(subject: &str) -> Vec<u8> {
    format!(
        "From: bo@example.net\r\nTo: ana@example.com\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@example.net>\r\n\r\nHello, {subject}.\r\n"
    )
    .into_bytes()
}

fn inbox_id(addr: &str, auth: (&str, &str)) -> i64 {
    let r = http(addr, "GET", "/v1/folders", Some(auth), b"");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["role"] == "inbox")
        .unwrap()["id"]
        .as_i64()
        .unwrap()
}

fn start_primary(data: &str, config: &str, link: &str) -> (Proc, String) {
    let mut p = Proc::start(
        &[
            "--data", data, "primary", "--config", config, "--link", link,
        ],
        &[("COFRE_CLUSTER_SECRET", SECRET)],
    );
    let url = p.wait_for("link listening on ");
    (p, url)
}

fn start_gateway(data: &str, primary: &str, ca: &str, secret: &str) -> Proc {
    Proc::start(
        &[
            "--data",
            data,
            "gateway",
            "--primary",
            primary,
            "--primary-ca",
            ca,
            "--http",
            "127.0.0.1:0",
        ],
        &[("COFRE_CLUSTER_SECRET", secret)],
    )
}

#[test]
fn two_gateways_share_one_primary_over_tls_and_survive_its_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("primary");
    let data_s = data.to_str().unwrap();
    let password = create_alias(&data, "ana@example.com");
    let auth = ("ana@example.com", password.as_str());
    let config = tmp.path().join("primary.toml");
    std::fs::write(&config, "node = \"p1\"\n[tls]\nlink = \"on\"\n").unwrap();
    let config_s = config.to_str().unwrap();

    let (mut primary, url) = start_primary(data_s, config_s, "127.0.0.1:0");
    assert!(url.starts_with("wss://127.0.0.1:"), "{url}");
    let port = url.rsplit(':').next().unwrap().to_string();
    let wss = format!("wss://localhost:{port}");
    let ca = data.join("tls/cert.pem");
    let ca_s = ca.to_str().unwrap();

    let gw_data = [tmp.path().join("gw-a"), tmp.path().join("gw-b")];
    let mut gateways: Vec<(Proc, String)> = gw_data
        .iter()
        .map(|d| {
            let mut g = start_gateway(d.to_str().unwrap(), &wss, ca_s, SECRET);
            let addr = g.wait_for("http listening on http://");
            (g, addr)
        })
        .collect();
    let a = gateways[0].1.clone();
    let b = gateways[1].1.clone();
    for addr in [&a, &b] {
        assert_eq!(http(addr, "GET", "/readyz", None, b"").status, 200);
    }

    // Both gateways listen for changes.
    let mut events_a = Sse::open(&a, "/v1/events", auth);
    let mut events_b = Sse::open(&b, "/v1/events", auth);

    // A write through gateway A ...
    let inbox = inbox_id(&a, auth);
    let body = message("first");
    let r = http(
        &a,
        "POST",
        &format!("/v1/folders/{inbox}/messages"),
        Some(auth),
        &body,
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let email = r.json()["id"].as_i64().unwrap();
    let modseq = r.json()["modseq"].as_u64().unwrap();
    // ... reads back byte for byte through gateway B,
    let r = http(
        &b,
        "GET",
        &format!("/v1/messages/{email}/raw"),
        Some(auth),
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type").as_deref(), Some("message/rfc822"));
    assert_eq!(r.body, body);
    // ... and its change event reaches both.
    let expected = format!("data: {{\"modseq\":{modseq}}}");
    for events in [&mut events_a, &mut events_b] {
        let got = events.until(&expected, Duration::from_secs(5));
        assert!(got.contains("event: changed"), "{got}");
    }

    // Wrong password and unknown address look the same.
    let wrong = http(
        &b,
        "GET",
        "/v1/folders",
        Some(("ana@example.com", "nope")),
        b"",
    );
    let unknown = http(
        &b,
        "GET",
        "/v1/folders",
        Some(("zed@example.com", "nope")),
        b"",
    );
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.body, unknown.body);
    assert_eq!(
        wrong.header("content-type").as_deref(),
        Some("application/problem+json")
    );
    assert_eq!(wrong.json()["code"], "unauthorized");

    // The gateway counts what it did.
    let metrics = String::from_utf8(http(&a, "GET", "/metrics", None, b"").body).unwrap();
    assert!(
        metrics.contains("cofre_link_requests_seconds_count{op=\"append\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cofre_link_up{primary=\"primary-1\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("route=\"/v1/folders/{folder}/messages\",status=\"201\""));

    // SIGKILL the primary: gateways report the outage with a clear error.
    primary.child.kill().unwrap();
    primary.child.wait().unwrap();
    assert!(eventually(Duration::from_secs(10), || {
        http(&a, "GET", "/readyz", None, b"").status == 503
    }));
    let r = http(&a, "GET", "/v1/folders", Some(auth), b"");
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["code"], "primary_unavailable");

    // Restarted on the same port, it is served again without restarting
    // the gateways, and the acknowledged write is there.
    let (_primary, _) = start_primary(data_s, config_s, &format!("127.0.0.1:{port}"));
    for (_, addr) in &gateways {
        assert!(
            eventually(Duration::from_secs(30), || {
                http(addr, "GET", "/readyz", None, b"").status == 200
            }),
            "gateway {addr} reconnected"
        );
        let r = http(
            addr,
            "GET",
            &format!("/v1/messages/{email}/raw"),
            Some(auth),
            b"",
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.body, body);
    }

    // SIGTERM: a gateway stops cleanly.
    let (g, _) = &mut gateways[0];
    g.terminate();
    let (status, out) = g.wait_exit();
    assert!(status.success(), "{out}");
    assert!(out.contains("stopped"), "{out}");
}

#[test]
fn a_gateway_with_the_wrong_cluster_secret_is_refused_and_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("primary");
    std::fs::create_dir_all(&data).unwrap();
    let config = tmp.path().join("primary.toml");
    std::fs::write(&config, "[tls]\nlink = \"on\"\n").unwrap();
    let (_primary, url) = start_primary(
        data.to_str().unwrap(),
        config.to_str().unwrap(),
        "127.0.0.1:0",
    );
    let port = url.rsplit(':').next().unwrap();
    let ca = data.join("tls/cert.pem");
    let mut g = start_gateway(
        tmp.path().join("gw").to_str().unwrap(),
        &format!("wss://localhost:{port}"),
        ca.to_str().unwrap(),
        "not the cluster secret at all",
    );
    let (status, out) = g.wait_exit();
    assert!(!status.success());
    assert!(
        out.contains("refused this gateway: wrong cluster secret"),
        "{out}"
    );
}

#[test]
fn serve_runs_everything_in_one_process_and_stops_gracefully() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let data_s = data.to_str().unwrap();
    let password = create_alias(&data, "ana@example.com");
    let auth = ("ana@example.com", password.as_str());
    let args = [
        "--data",
        data_s,
        "serve",
        "--http",
        "127.0.0.1:0",
        "--link",
        "127.0.0.1:0",
    ];
    let mut serve = Proc::start(&args, &[]);
    let tls = serve.wait_for("TLS: no certificate configured; generated a self-signed one");
    assert!(tls.contains("tls/cert.pem"), "{tls}");
    serve.wait_for("cluster secret generated in");
    let link = serve.wait_for("link listening on ws://");
    let addr = serve.wait_for("http listening on http://");
    serve.wait_for("ready");
    assert!(!link.is_empty());

    let inbox = inbox_id(&addr, auth);
    let body = message("kept");
    let r = http(
        &addr,
        "POST",
        &format!("/v1/folders/{inbox}/messages"),
        Some(auth),
        &body,
    );
    assert_eq!(r.status, 201);
    let email = r.json()["id"].as_i64().unwrap();
    let metrics = String::from_utf8(http(&addr, "GET", "/metrics", None, b"").body).unwrap();
    for gauge in [
        "cofre_open_mailboxes ",
        "cofre_live_sessions ",
        "cofre_queue_depth 0",
    ] {
        assert!(metrics.contains(gauge), "{gauge} missing:\n{metrics}");
    }
    // Bad input gets a problem, not a crash.
    let r = http(
        &addr,
        "POST",
        &format!("/v1/folders/{inbox}/messages"),
        Some(auth),
        b"",
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], "invalid");
    let r = http(&addr, "GET", "/v1/messages/999999/raw", Some(auth), b"");
    assert_eq!(r.status, 404);
    assert_eq!(
        http(&addr, "GET", "/nowhere", None, b"").json()["code"],
        "not_found"
    );

    serve.terminate();
    let (status, out) = serve.wait_exit();
    assert!(status.success(), "{out}");
    assert!(out.contains("stopped"), "{out}");

    // Started again: same certificate and secret, and the mail is there.
    let mut serve = Proc::start(&args, &[]);
    let addr = serve.wait_for("http listening on http://");
    assert!(
        !serve.seen.iter().any(|l| l.contains("generated")),
        "{:?}",
        serve.seen
    );
    let r = http(
        &addr,
        "GET",
        &format!("/v1/messages/{email}/raw"),
        Some(auth),
        b"",
    );
    assert_eq!(r.body, body);
}

#[test]
fn configuration_errors_are_reported_together() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut serve = Proc::start(
        &[
            "--data",
            data.to_str().unwrap(),
            "serve",
            "--http",
            "nowhere",
            "--imap",
            "127.0.0.1:1110",
            "--pop3",
            "127.0.0.1:1110",
        ],
        &[],
    );
    let (status, out) = serve.wait_exit();
    assert!(!status.success());
    assert!(out.contains("2 problems"), "{out}");
    assert!(out.contains("http: \"nowhere\""), "{out}");
    assert!(out.contains("both listen on 127.0.0.1:1110"), "{out}");
    assert!(
        !data.exists(),
        "nothing is created when the configuration is wrong"
    );
}

/// One IMAP command on a fresh connection; the tagged answer.
fn imap_login(addr: &str, user: &str, pass: &str) -> String {
    use std::io::{BufRead, BufReader, Write};
    let s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("* OK"), "{line}");
    r.get_mut()
        .write_all(format!("a LOGIN {user} \"{pass}\"\r\n").as_bytes())
        .unwrap();
    line.clear();
    r.read_line(&mut line).unwrap();
    line
}

#[test]
fn http_and_imap_share_one_failed_login_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let password = create_alias(&data, "ana@example.com");
    let mut serve = Proc::start(
        &[
            "--data",
            data.to_str().unwrap(),
            "serve",
            "--http",
            "127.0.0.1:0",
            "--imap",
            "127.0.0.1:0",
            "--link",
            "off",
        ],
        &[],
    );
    let addr = serve.wait_for("http listening on http://");
    let imap = serve.wait_for("imap listening on ");
    let imap = imap.split_whitespace().next().unwrap().to_string();
    serve.wait_for("ready");
    for _ in 0..3 {
        let r = imap_login(&imap, "ana@example.com", "wrong");
        assert!(r.starts_with("a NO [AUTHENTICATIONFAILED]"), "{r}");
    }
    for _ in 0..2 {
        let r = http(
            &addr,
            "GET",
            "/v1/quota",
            Some(("ana@example.com", "wrong")),
            b"",
        );
        assert_eq!(r.status, 401);
    }
    // Five failures in all: now the right password is refused on both.
    let r = http(
        &addr,
        "GET",
        "/v1/quota",
        Some(("ana@example.com", &password)),
        b"",
    );
    assert_eq!(r.status, 429);
    let r = imap_login(&imap, "ana@example.com", &password);
    assert!(r.starts_with("a NO [UNAVAILABLE]"), "{r}");
}
