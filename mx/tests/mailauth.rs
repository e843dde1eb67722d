//! Mail authentication between servers on real sockets, with DNS from a
//! fixture server the resolvers are pointed at: DKIM signatures made at
//! submission verify at the receiving MX; SPF, DKIM and DMARC results
//! land in `Authentication-Results`; DMARC `p=reject` refuses a forgery;
//! forwarded mail is ARC-sealed and the seal verifies one hop later.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use cofre_mx::auth::{dkim_record, dkim_sign, generate_dkim_key, strip_results};
use cofre_mx::dns::{FixtureDns, FixtureRecord};
use cofre_storage::Role;
use common::{Client, checking_node, code, eventually, node};

fn txt(name: &str, value: &str) -> (String, FixtureRecord) {
    (name.to_string(), FixtureRecord::Txt(value.to_string()))
}

/// The header block of a stored message, with folded lines joined.
fn headers(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    head.replace("\r\n\t", " ").replace("\r\n ", " ")
}

/// Our `Authentication-Results` (authserv-id node.test), unfolded.
fn results(raw: &[u8]) -> Vec<String> {
    headers(raw)
        .lines()
        .filter(|l| l.starts_with("Authentication-Results: node.test;"))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_submissions_pass_spf_dkim_and_dmarc_at_the_receiving_mx() {
    let key = generate_dkim_key("a.example", "sel1").unwrap();
    let (name, value) = dkim_record(&key);
    let dns = FixtureDns::start(vec![
        txt(&name, &value),
        txt("a.example", "v=spf1 ip4:127.0.0.1 -all"),
        txt("_dmarc.a.example", "v=DMARC1; p=reject"),
    ])
    .await
    .unwrap();
    let b = checking_node(&["bo@b.example"], None, dns.addr).await;
    let a = node(
        &["ana@a.example"],
        Some(vec![("b.example".into(), b.addr.to_string())]),
    )
    .await;
    a.sender.as_ref().unwrap().put_dkim_key(&key).unwrap();
    let bo = b.login(0);

    let mut c = Client::connect(a.addr).await;
    let (ana, pw) = (a.users[0].0.to_string(), a.users[0].1.expose().to_string());
    assert_eq!(code(&c.auth_plain(&ana, &pw).await), "235 2.7.0");
    let msg = b"From: Ana <ana@a.example>\r\nTo: bo@b.example\r\nSubject: signed\r\nMessage-ID: <1@a.example>\r\n\r\nSigned at A, checked at B.\r\n";
    let r = c.send("ana@a.example", &["bo@b.example"], msg).await;
    assert_eq!(code(&r), "250 2.0.0", "{r}");
    eventually("bo gets it", || !b.folder(bo, Role::Inbox).is_empty()).await;
    let got = b.folder(bo, Role::Inbox).remove(0);
    assert!(got.ends_with(msg), "the message itself is untouched");
    let h = headers(&got);
    assert!(
        h.contains("DKIM-Signature: v=1; a=rsa-sha256; s=sel1; d=a.example;")
            || (h.contains("DKIM-Signature:") && h.contains("d=a.example") && h.contains("s=sel1")),
        "{h}"
    );
    let ar = results(&got);
    assert_eq!(ar.len(), 1, "{h}");
    let ar = &ar[0];
    assert!(
        ar.contains("dkim=pass") && ar.contains("header.d=a.example"),
        "{ar}"
    );
    assert!(
        ar.contains("spf=pass") && ar.contains("smtp.mailfrom=ana@a.example"),
        "{ar}"
    );
    assert!(
        ar.contains("dmarc=pass") && ar.contains("header.from=a.example"),
        "{ar}"
    );
    // Trace order: results above B's Received, which is above A's.
    let pos = |needle: &str| h.find(needle).unwrap();
    assert!(pos("Authentication-Results: node.test") < pos("Received: from"));
    // The Sent copy is the signed message too.
    let sent = a.folder(a.login(0), Role::Sent);
    assert!(String::from_utf8_lossy(&sent[0]).starts_with("DKIM-Signature:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn altered_mail_fails_dkim_forged_results_are_dropped_and_dmarc_reject_refuses() {
    let key = generate_dkim_key("a.example", "sel1").unwrap();
    let (name, value) = dkim_record(&key);
    let dns = FixtureDns::start(vec![
        txt(&name, &value),
        txt("a.example", "v=spf1 ip4:127.0.0.1 -all"),
        txt("_dmarc.a.example", "v=DMARC1; p=none"),
        txt("strict.example", "v=spf1 ip4:192.0.2.1 -all"),
        txt("_dmarc.strict.example", "v=DMARC1; p=reject"),
    ])
    .await
    .unwrap();
    let b = checking_node(&["bo@b.example"], None, dns.addr).await;
    let bo = b.login(0);
    let mut c = Client::connect(b.addr).await;

    // Signed, then changed on the way: the signature no longer verifies.
    let body =
        b"From: ana@a.example\r\nTo: bo@b.example\r\nSubject: changed\r\n\r\nPay 10 euros.\r\n";
    let sig = dkim_sign(&key, body).unwrap();
    let changed = String::from_utf8_lossy(body).replace("Pay 10", "Pay 90");
    let altered = [sig.as_bytes(), changed.as_bytes()].concat();
    // A header claiming our verdict, added by the sender, is forged.
    let forged = [
        b"Authentication-Results: node.test; dkim=pass header.d=a.example\r\n".as_slice(),
        &altered,
    ]
    .concat();
    let r = c.send("ana@a.example", &["bo@b.example"], &forged).await;
    assert_eq!(code(&r), "250 2.0.0", "{r}");
    let got = b.folder(bo, Role::Inbox).remove(0);
    let ar = results(&got);
    assert_eq!(ar.len(), 1, "only our own results: {}", headers(&got));
    // mail-auth reports a body that no longer matches as neutral with
    // its reason (RFC 6376's PERMFAIL); either way, not a pass.
    assert!(!ar[0].contains("dkim=pass"), "{}", ar[0]);
    assert!(ar[0].contains("body hash did not verify"), "{}", ar[0]);
    assert!(ar[0].contains("spf=pass"), "{}", ar[0]);
    assert!(
        got.ends_with(&altered),
        "everything else kept byte for byte"
    );

    // SPF fails and nothing signs: the domain's DMARC policy says reject.
    let spoof =
        b"From: ceo@strict.example\r\nTo: bo@b.example\r\nSubject: wire money\r\n\r\nnow\r\n";
    let r = c.send("ceo@strict.example", &["bo@b.example"], spoof).await;
    assert_eq!(code(&r), "550 5.7.1", "{r}");
    assert!(r.contains("DMARC"), "{r}");
    assert_eq!(b.folder(bo, Role::Inbox).len(), 1, "nothing stored");

    // The same unauthenticated mail from a domain without DMARC arrives,
    // marked as such.
    let other = b"From: x@nowhere.example\r\nTo: bo@b.example\r\nSubject: hi\r\n\r\nhello\r\n";
    let r = c.send("x@nowhere.example", &["bo@b.example"], other).await;
    assert_eq!(code(&r), "250 2.0.0", "{r}");
    let got = b.folder(bo, Role::Inbox).remove(1);
    let ar = results(&got);
    assert!(
        ar[0].contains("dkim=none") && ar[0].contains("dmarc=none"),
        "{}",
        ar[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_mail_is_arc_sealed_and_the_seal_verifies_downstream() {
    let a_key = generate_dkim_key("a.example", "sel1").unwrap();
    let f_key = generate_dkim_key("f.example", "fwd").unwrap();
    let (a_name, a_value) = dkim_record(&a_key);
    let (f_name, f_value) = dkim_record(&f_key);
    let dns = FixtureDns::start(vec![
        txt(&a_name, &a_value),
        txt(&f_name, &f_value),
        txt("a.example", "v=spf1 ip4:127.0.0.1 -all"),
        txt("f.example", "v=spf1 ip4:127.0.0.1 -all"),
        txt("_dmarc.a.example", "v=DMARC1; p=reject"),
    ])
    .await
    .unwrap();
    // C receives; F forwards fwd@f.example to C; A is where the mail starts.
    let c_node = checking_node(&["carol@c.example"], None, dns.addr).await;
    let f = common::forwarding_mx_with(
        &["fwd@f.example"],
        vec![("c.example".into(), c_node.addr.to_string())],
        &[("fwd@f.example", "carol@c.example")],
        Some(dns.addr),
    )
    .await;
    f.sender.as_ref().unwrap().put_dkim_key(&f_key).unwrap();
    let a = node(
        &["ana@a.example"],
        Some(vec![("f.example".into(), f.addr.to_string())]),
    )
    .await;
    a.sender.as_ref().unwrap().put_dkim_key(&a_key).unwrap();
    let carol = c_node.login(0);

    let mut c = Client::connect(a.addr).await;
    let (ana, pw) = (a.users[0].0.to_string(), a.users[0].1.expose().to_string());
    c.auth_plain(&ana, &pw).await;
    let msg =
        b"From: ana@a.example\r\nTo: fwd@f.example\r\nSubject: via a forwarder\r\n\r\nhello\r\n";
    let r = c.send("ana@a.example", &["fwd@f.example"], msg).await;
    assert_eq!(code(&r), "250 2.0.0", "{r}");
    eventually("carol gets the forwarded copy", || {
        !c_node.folder(carol, Role::Inbox).is_empty()
    })
    .await;
    let got = c_node.folder(carol, Role::Inbox).remove(0);
    assert!(got.ends_with(msg));
    let h = headers(&got);
    assert!(
        h.contains("ARC-Seal: i=1; a=rsa-sha256;") && h.contains("d=f.example"),
        "{h}"
    );
    assert!(
        h.contains("ARC-Authentication-Results: i=1; node.test;"),
        "{h}"
    );
    let ar = results(&got);
    // F's results carry C's name too in this test, so C removed them as
    // forged: what is left is C's own verdict (F's lives on in the seal).
    assert_eq!(ar.len(), 1, "{h}");
    let ours = &ar[0];
    assert!(ours.contains("arc=pass"), "{ours}");
    assert!(
        ours.contains("dkim=pass") && ours.contains("header.d=a.example"),
        "{ours}"
    );
    assert!(
        ours.contains("spf=pass"),
        "the SRS sender passes SPF at f.example: {ours}"
    );
}

#[test]
fn only_results_under_our_name_are_removed() {
    let raw = b"Authentication-Results: other.example; spf=pass\r\nAuthentication-Results: MX.test;\r\n\tdkim=pass\r\nSubject: x\r\n\r\nAuthentication-Results: mx.test; in the body\r\n";
    let out = strip_results(raw, "mx.test");
    assert_eq!(
        out,
        b"Authentication-Results: other.example; spf=pass\r\nSubject: x\r\n\r\nAuthentication-Results: mx.test; in the body\r\n"
    );
}
