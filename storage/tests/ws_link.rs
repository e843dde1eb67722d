//! The link over real WebSocket connections on loopback: handshake, requests,
//! refusal of a wrong secret, a malformed frame closing only its own link,
//! and a client that fails fast while the primary is gone and reconnects by
//! itself when it is back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use cofre_storage::link::ws::{ClientError, LinkClient, LinkConfig, serve};
use cofre_storage::link::{self, Frame, Op, Reply};
use cofre_storage::primary::{Delivery, Primary, PrimaryConfig};
use cofre_storage::{AliasAddress, Password};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use zeroize::Zeroizing;

fn config(secret: &str, node: &str) -> LinkConfig {
    LinkConfig::new(Arc::new(Zeroizing::new(secret.as_bytes().to_vec())), node)
}

struct Running {
    url: String,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(primary: Arc<Primary>, listener: TcpListener) -> Running {
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(serve(listener, primary, config("s3cret", "primary"), rx));
    Running { url, stop, task }
}

fn setup(dir: &std::path::Path) -> (Arc<Primary>, AliasAddress, Password) {
    let store = common::store(dir);
    let ana = AliasAddress::try_from("ana@example.com").unwrap();
    let (_, pw) = store.create_alias(&ana, None).unwrap();
    (
        Arc::new(Primary::new(Arc::new(store), PrimaryConfig::default())),
        ana,
        pw,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_a_real_websocket() {
    let tmp = tempfile::tempdir().unwrap();
    let (primary, ana, pw) = setup(tmp.path());
    let server = start(primary, TcpListener::bind("127.0.0.1:0").await.unwrap()).await;
    let client = LinkClient::connect(&server.url, config("s3cret", "gateway-1"))
        .await
        .unwrap();
    assert!(client.is_connected());
    let raw = vec![0u8, 1, 2, 255, b'\r', b'\n'];
    let mut body = b"Subject: binary\r\n\r\n".to_vec();
    body.extend(&raw);
    let r = client
        .request(Op::Deliver {
            address: ana.clone(),
            raw: body.clone(),
            delivery_ref: None,
        })
        .await
        .unwrap();
    assert!(matches!(r, Reply::Delivery(Delivery::Queued(_))));
    let Reply::Session(s) = client
        .request(Op::Login {
            address: ana.clone(),
            password: pw.clone(),
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    let Reply::Folders(f) = client.request(Op::Folders { session: s }).await.unwrap() else {
        panic!()
    };
    let inbox = f.iter().find(|f| f.name == "INBOX").unwrap();
    let Reply::FolderIndex(idx) = client
        .request(Op::FolderIndex {
            session: s,
            folder: inbox.id,
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    let Reply::Raw(got) = client
        .request(Op::Raw {
            session: s,
            email: idx[0].1,
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(got, body, "bytes cross the link exactly");
    let err = client
        .request(Op::Login {
            address: ana,
            password: Password::new("wrong"),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Remote(e) if e.code == link::ErrorCode::WrongPassword));
    // A write through one link is an event on every link.
    let other = LinkClient::connect(&server.url, config("s3cret", "gateway-2"))
        .await
        .unwrap();
    let mut events = other.events();
    let r = client
        .request(Op::SetKeywords {
            session: s,
            emails: vec![idx[0].1],
            add: vec![cofre_storage::Keyword::seen()],
            remove: vec![],
        })
        .await
        .unwrap();
    let Reply::ModSeq(modseq) = r else {
        panic!("{r:?}")
    };
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        event,
        link::Event::Changed(cofre_storage::primary::Changed {
            address: "ana@example.com".try_into().unwrap(),
            modseq
        })
    );
    // Many requests at once on one link, answered by id.
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            c.request(Op::Folders { session: s }).await
        }));
    }
    for t in tasks {
        assert!(matches!(t.await.unwrap().unwrap(), Reply::Folders(_)));
    }
    server.stop.send(true).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_cluster_secret_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (primary, _, _) = setup(tmp.path());
    let server = start(primary, TcpListener::bind("127.0.0.1:0").await.unwrap()).await;
    let err = LinkClient::connect(&server.url, config("guess", "intruder"))
        .await
        .err()
        .unwrap();
    assert_eq!(err, ClientError::Refused("wrong cluster secret".into()));
    server.stop.send(true).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_frame_closes_only_its_own_link() {
    let tmp = tempfile::tempdir().unwrap();
    let (primary, _, _) = setup(tmp.path());
    let server = start(primary, TcpListener::bind("127.0.0.1:0").await.unwrap()).await;
    let good = LinkClient::connect(&server.url, config("s3cret", "good"))
        .await
        .unwrap();

    // Raw peers that shake hands properly, then send garbage: bytes that
    // are no frame, a body piece without its frame, a body announced larger
    // than the limit, a frame that is not a request.
    let mut too_large = vec![1u8];
    too_large.extend_from_slice(&u64::MAX.to_le_bytes());
    let mut not_a_request = vec![0u8];
    not_a_request.extend(link::encode(&Frame::Refused("no".into())));
    for garbage in [
        vec![0xde, 0xad, 0xbe, 0xef],
        vec![2, 1, 2, 3],
        too_large,
        not_a_request,
    ] {
        let (mut ws, _) = tokio_tungstenite::connect_async(server.url.as_str())
            .await
            .unwrap();
        let hello = link::hello(b"s3cret", link::Side::Secondary, "raw", &[0; 32]);
        let mut first = vec![0u8];
        first.extend(link::encode(&Frame::Hello(hello)));
        ws.send(Message::Binary(Bytes::from(first))).await.unwrap();
        assert!(
            matches!(ws.next().await, Some(Ok(Message::Binary(_)))),
            "welcomed"
        );
        ws.send(Message::Binary(Bytes::from(garbage)))
            .await
            .unwrap();
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return true,
                    _ => {}
                }
            }
        })
        .await
        .unwrap();
        assert!(closed);
    }
    // The primary and the other link are unharmed.
    assert!(matches!(
        good.request(Op::Logout {
            session: cofre_storage::primary::SessionId(1)
        })
        .await
        .unwrap(),
        Reply::Done
    ));
    server.stop.send(true).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_fails_fast_while_down_and_reconnects_by_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let (primary, _, _) = setup(tmp.path());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = start(Arc::clone(&primary), listener).await;
    let client = LinkClient::connect(&server.url, config("s3cret", "gateway"))
        .await
        .unwrap();

    server.stop.send(true).unwrap();
    server.task.await.unwrap().unwrap();
    assert!(
        client.wait_for(false, Duration::from_secs(5)).await,
        "the client noticed the primary going away"
    );
    let started = std::time::Instant::now();
    let err = client
        .request(Op::Logout {
            session: cofre_storage::primary::SessionId(1),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::LinkDown(_)), "{err}");
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "fails fast, never hangs"
    );

    // The primary comes back on the same address: the client reconnects alone.
    let listener = TcpListener::bind(addr).await.unwrap();
    let again = start(primary, listener).await;
    assert!(
        client.wait_for(true, Duration::from_secs(15)).await,
        "reconnected"
    );
    assert!(matches!(
        client
            .request(Op::Logout {
                session: cofre_storage::primary::SessionId(1)
            })
            .await
            .unwrap(),
        Reply::Done
    ));
    again.stop.send(true).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_link_speaks_tls_and_trusts_only_its_configured_roots() {
    use cofre_storage::tls;
    let tmp = tempfile::tempdir().unwrap();
    let (primary, ana, pw) = setup(tmp.path());
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let (files, made) = tls::self_signed(&tmp.path().join("tls"), &names).unwrap();
    assert!(made);
    // A second start reuses the same certificate.
    let (again, made_again) = tls::self_signed(&tmp.path().join("tls"), &names).unwrap();
    assert!(!made_again);
    assert_eq!(files, again);
    let mode = std::fs::metadata(&files.key).unwrap().permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o077, 0);

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut server_config = config("s3cret", "primary");
    server_config.accept_tls = Some(tls::server_config(&files).unwrap());
    let (_stop, rx) = watch::channel(false);
    tokio::spawn(serve(listener, primary, server_config, rx));

    // Trusting the primary's certificate: the link works.
    let mut trusting = config("s3cret", "gateway");
    trusting.connect_tls = Some(tls::client_config(&files.cert).unwrap());
    let url = format!("wss://localhost:{port}");
    let client = LinkClient::connect(&url, trusting.clone()).await.unwrap();
    let r = client
        .request(Op::Login {
            address: ana.clone(),
            password: pw.clone(),
        })
        .await
        .unwrap();
    assert!(matches!(r, Reply::Session(_)));

    // Trusting another certificate: the TLS handshake fails.
    let (other, _) = tls::self_signed(&tmp.path().join("other"), &names).unwrap();
    let mut wrong = config("s3cret", "gateway");
    wrong.connect_tls = Some(tls::client_config(&other.cert).unwrap());
    let err = LinkClient::connect(&url, wrong).await.err().unwrap();
    assert!(
        matches!(err, ClientError::LinkDown(ref m) if m.contains("TLS")),
        "{err}"
    );

    // Plain WebSocket to a TLS listener goes nowhere.
    let plain = format!("ws://127.0.0.1:{port}");
    assert!(
        LinkClient::connect(&plain, config("s3cret", "gateway"))
            .await
            .is_err()
    );
    // wss:// without trusted roots is refused before connecting.
    let err = LinkClient::connect(&url, config("s3cret", "gateway"))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, ClientError::Refused(_)), "{err}");
    // Certificate files that are not PEM are reported with their path.
    std::fs::write(tmp.path().join("junk.pem"), "not a certificate").unwrap();
    let err = tls::client_config(&tmp.path().join("junk.pem")).unwrap_err();
    assert!(err.to_string().contains("junk.pem"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_sends_each_alias_to_the_primary_that_owns_it() {
    use cofre_storage::link::route::{Link, Router};
    // Two primaries, each owning one alias; one reached in-process, one over
    // WebSocket.
    let tmp1 = tempfile::tempdir().unwrap();
    let tmp2 = tempfile::tempdir().unwrap();
    let (p1, ana, ana_pw) = setup(tmp1.path());
    let store2 = common::store(tmp2.path());
    let bo = AliasAddress::try_from("bo@example.com").unwrap();
    let (_, bo_pw) = store2.create_alias(&bo, None).unwrap();
    let p2 = Arc::new(Primary::new(Arc::new(store2), PrimaryConfig::default()));
    let server = start(
        Arc::clone(&p2),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
    .await;
    let remote = LinkClient::connect(&server.url, config("s3cret", "gw"))
        .await
        .unwrap();
    let router = Router::new(vec![
        ("one".into(), Link::Local(Arc::clone(&p1))),
        ("two".into(), Link::Remote(remote)),
    ]);
    let mut events = router.events();

    for (who, pw, owner) in [(&ana, &ana_pw, &p1), (&bo, &bo_pw, &p2)] {
        let Reply::Session(s) = router
            .request(
                who,
                Op::Login {
                    address: who.clone(),
                    password: pw.clone(),
                },
            )
            .await
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(
            owner.session_count(),
            1,
            "{who} logged in on its own primary"
        );
        let Reply::Folders(folders) = router
            .request(who, Op::Folders { session: s })
            .await
            .unwrap()
        else {
            panic!()
        };
        router
            .request(
                who,
                Op::CreateFolder {
                    session: s,
                    name: "Work".try_into().unwrap(),
                },
            )
            .await
            .unwrap();
        assert!(!folders.is_empty());
        // The change event of either primary reaches the router's listeners.
        let link::Event::Changed(c) = tokio::time::timeout(Duration::from_secs(2), events.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&c.address, who);
    }
    // An alias nobody owns is NotFound, not a hang.
    let nobody = AliasAddress::try_from("nobody@example.com").unwrap();
    let err = router
        .request(
            &nobody,
            Op::Login {
                address: nobody.clone(),
                password: Password::new("x"),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Remote(ref e) if e.code == link::ErrorCode::NotFound),
        "{err}"
    );
    // Counts per operation are kept for /metrics.
    let stats = router.stats();
    let login = stats.iter().find(|(n, _)| *n == "login").unwrap();
    assert_eq!(login.1.count.load(std::sync::atomic::Ordering::Relaxed), 3);
    assert_eq!(login.1.errors.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_cross_in_pieces_both_ways_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let (primary, ana, pw) = setup(tmp.path());
    let server = start(primary, TcpListener::bind("127.0.0.1:0").await.unwrap()).await;
    let client = LinkClient::connect(&server.url, config("s3cret", "gw"))
        .await
        .unwrap();
    let Reply::Session(s) = client
        .request(Op::Login {
            address: ana.clone(),
            password: pw,
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    let Reply::Folders(folders) = client.request(Op::Folders { session: s }).await.unwrap() else {
        panic!()
    };
    let inbox = folders[0].id;
    // Just over three pieces, with every byte value in it.
    let mut raw = b"Subject: big\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
    let mut x = 7u32;
    while raw.len() < 3 * link::wire::CHUNK + 12_345 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        raw.push((x >> 16) as u8);
    }
    // Small requests in flight at the same time are not disturbed.
    let side = {
        let c = client.clone();
        tokio::spawn(async move {
            for _ in 0..50 {
                assert!(matches!(
                    c.request(Op::Folders { session: s }).await.unwrap(),
                    Reply::Folders(_)
                ));
            }
        })
    };
    let Reply::Appended(a) = client
        .request(Op::Append {
            session: s,
            folder: inbox,
            raw: raw.clone(),
            options: Default::default(),
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    let Reply::Raw(back) = client
        .request(Op::Raw {
            session: s,
            email: a.email_id,
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(back.len(), raw.len());
    assert!(back == raw, "byte-exact");
    side.await.unwrap();
}
