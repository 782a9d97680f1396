//! Sign-In with Ethereum in the handshake (issue 12; PROTOCOL.md §3.1): a valid sign-in
//! becomes the session's identity, and every way a sign-in can be wrong is refused with 401
//! `auth_invalid` and its `reason`, creating no session. Messages are signed with fixed
//! secp256k1 keys (1 and 2).

mod common;

use common::auth::*;
use common::{config, TestServer};
use p3_lanes::core::auth::{rfc3339_ms, siwe_message};
use serde_json::{json, Value};

#[tokio::test]
async fn nonce_route_issues_single_use_alphanumeric_nonces() {
    let server = TestServer::start(config()).await;
    let resp = server.get("/api/protocol/v2/auth/nonce").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body: Value = resp.json().await.unwrap();
    let n = body["nonce"].as_str().unwrap();
    assert!(
        n.len() >= 16 && n.chars().all(|c| c.is_ascii_alphanumeric()),
        "{n}"
    );
    assert_eq!(body["expiresInMs"], 300_000);
    assert_ne!(nonce(&server).await, n, "every nonce is fresh");
}

#[tokio::test]
async fn a_valid_sign_in_is_the_session_identity() {
    let server = TestServer::start(config()).await;
    let hs = siwe_session(&server, 1, ADDR1).await;
    assert_eq!(hs["identity"], json!({"kind": "siwe", "id": ADDR1}));
    let status = session_status(&server, &hs).await;
    assert_eq!(status["identity"], json!({"kind": "siwe", "id": ADDR1}));
    // A second key signs in as its own address.
    let hs2 = siwe_session(&server, 2, ADDR2).await;
    assert_eq!(hs2["identity"]["id"], ADDR2);
}

#[tokio::test]
async fn an_unverified_wallet_is_never_an_identity() {
    let server = TestServer::start(config()).await;
    let mut body = common::handshake_body("w", &["json"], &[1]);
    body["wallet"] = json!(ADDR1);
    let hs: Value = server.handshake_raw(&body).await.json().await.unwrap();
    assert!(hs.get("identity").is_none(), "{hs}");
}

/// One negative case: `make(fields, nonce)` returns the `auth` to send.
async fn refused(
    server: &TestServer,
    reason: &str,
    make: impl FnOnce(&mut p3_lanes::core::auth::SiweFields) -> Option<Value>,
) {
    let mut f = fields(server, ADDR1, &nonce(server).await);
    let auth = make(&mut f).unwrap_or_else(|| siwe_auth(&key(1), &f));
    assert_auth_invalid(handshake_auth(server, auth).await, reason).await;
}

#[tokio::test]
async fn every_bad_sign_in_is_refused_with_its_reason() {
    let server = TestServer::start(config()).await;
    let now = now_ms();
    // Signed over another text than the one sent.
    refused(&server, "bad_signature", |f| {
        let sent = siwe_message(f);
        f.statement = Some("something else".into());
        let sig = sign(&key(1), &siwe_message(f));
        Some(json!({"siwe": {"message": sent, "signature": sig}}))
    })
    .await;
    // The message names address 2, key 1 signs it.
    refused(&server, "bad_signature", |f| {
        f.address = ADDR2.into();
        None
    })
    .await;
    refused(&server, "wrong_domain", |f| {
        f.domain = "evil.example".into();
        None
    })
    .await;
    refused(&server, "wrong_uri", |f| {
        f.uri = "http://evil.example/".into();
        None
    })
    .await;
    refused(&server, "wrong_chain", |f| {
        f.chain_id = 5;
        None
    })
    .await;
    refused(&server, "expired", |f| {
        f.expiration_time = Some(rfc3339_ms(now - 60_000));
        None
    })
    .await;
    refused(&server, "expired", |f| {
        f.issued_at = rfc3339_ms(now - 3_600_000);
        None
    })
    .await;
    refused(&server, "not_yet_valid", |f| {
        f.not_before = Some(rfc3339_ms(now + 600_000));
        None
    })
    .await;
    refused(&server, "not_yet_valid", |f| {
        f.issued_at = rfc3339_ms(now + 600_000);
        None
    })
    .await;
    refused(&server, "nonce_unknown", |f| {
        f.nonce = "neverissued12345".into();
        None
    })
    .await;
    refused(&server, "malformed", |_| {
        Some(json!({"siwe": {"message": "hello", "signature": sign(&key(1), "hello")}}))
    })
    .await;
    refused(&server, "malformed", |f| {
        Some(json!({"siwe": {"message": siwe_message(f), "signature": "0x1234"}}))
    })
    .await;
}

#[tokio::test]
async fn a_nonce_signs_in_once() {
    let server = TestServer::start(config()).await;
    let f = fields(&server, ADDR1, &nonce(&server).await);
    let auth = siwe_auth(&key(1), &f);
    assert_eq!(handshake_auth(&server, auth.clone()).await.status(), 200);
    assert_auth_invalid(handshake_auth(&server, auth).await, "nonce_reused").await;
    // A refused attempt (bad signature) does not burn the nonce of an honest sign-in.
    let f = fields(&server, ADDR1, &nonce(&server).await);
    let forged = siwe_auth(&key(2), &f);
    assert_auth_invalid(handshake_auth(&server, forged).await, "bad_signature").await;
    assert_eq!(
        handshake_auth(&server, siwe_auth(&key(1), &f))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn an_expired_nonce_is_unknown() {
    let server = TestServer::start_with(|c| c.siwe_nonce_ttl_s = 1).await;
    let f = fields(&server, ADDR1, &nonce(&server).await);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_auth_invalid(
        handshake_auth(&server, siwe_auth(&key(1), &f)).await,
        "nonce_unknown",
    )
    .await;
}

#[tokio::test]
async fn configured_domain_and_chains_win_over_the_host() {
    let server = TestServer::start_with(|c| {
        c.siwe_domain = Some("app.example.com".into());
        c.siwe_chain_ids = vec![137];
    })
    .await;
    let mut f = fields(&server, ADDR1, &nonce(&server).await);
    f.chain_id = 137;
    assert_auth_invalid(
        handshake_auth(&server, siwe_auth(&key(1), &f)).await,
        "wrong_domain",
    )
    .await;
    f.domain = "app.example.com".into();
    f.uri = "https://app.example.com/login".into();
    f.nonce = nonce(&server).await;
    let resp = handshake_auth(&server, siwe_auth(&key(1), &f)).await;
    assert_eq!(resp.status(), 200);
    f.chain_id = 1;
    f.nonce = nonce(&server).await;
    assert_auth_invalid(
        handshake_auth(&server, siwe_auth(&key(1), &f)).await,
        "wrong_chain",
    )
    .await;
}

#[tokio::test]
async fn an_auth_of_another_shape_is_a_bad_request() {
    let server = TestServer::start(config()).await;
    let resp = handshake_auth(&server, json!({"wallet": ADDR1, "signature": "0x00"})).await;
    assert_eq!(resp.status(), 400);
}
