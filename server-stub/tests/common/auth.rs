//! Identity helpers for the auth tests: fixed secp256k1 keys, EIP-191 `personal_sign`, SIWE
//! messages for a test server, app JWTs, handshakes carrying `auth`. Test keys only.

use super::{handshake_body, TestServer};
use k256::ecdsa::SigningKey;
use p3_lanes::core::auth::{rfc3339_ms, siwe_message, SiweFields};
use serde_json::{json, Value};
use server_stub::auth::siwe::personal_sign_hash;

/// The address of private key 1 (well known).
pub const ADDR1: &str = "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf";
/// The address of private key 2 (well known).
pub const ADDR2: &str = "0x2B5AD5c4795c026514f8317c7a215E218DcCD6cF";
/// HS256 secret of the JWT tests (≥ 32 bytes).
pub const JWT_SECRET: &str = "p3-test-secret-0123456789abcdef-0123";

/// The secp256k1 private key whose scalar is `n`.
pub fn key(n: u8) -> SigningKey {
    let mut b = [0u8; 32];
    b[31] = n;
    SigningKey::from_bytes(&b.into()).unwrap()
}

/// `personal_sign(message)` by `k`: `0x` + r ‖ s ‖ v (v 27/28).
pub fn sign(k: &SigningKey, message: &str) -> String {
    let (sig, recid) = k
        .sign_prehash_recoverable(&personal_sign_hash(message.as_bytes()))
        .unwrap();
    let mut out = String::from("0x");
    for b in sig.to_bytes() {
        out.push_str(&format!("{b:02x}"));
    }
    out.push_str(&format!("{:02x}", 27 + recid.to_byte()));
    out
}

/// Wall clock, ms.
pub fn now_ms() -> u64 {
    server_stub::now_ms()
}

/// A fresh nonce from the server's nonce route.
pub async fn nonce(server: &TestServer) -> String {
    let resp = server.get("/api/protocol/v2/auth/nonce").await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    body["nonce"].as_str().unwrap().to_owned()
}

/// SIWE fields a test server accepts for `address` with `nonce` (domain and URI from its
/// address, chain 1, issued now).
pub fn fields(server: &TestServer, address: &str, nonce: &str) -> SiweFields {
    SiweFields {
        domain: server.addr.to_string(),
        address: address.into(),
        statement: Some("Sign in to the P3 test room".into()),
        uri: format!("http://{}/", server.addr),
        chain_id: 1,
        nonce: nonce.into(),
        issued_at: rfc3339_ms(now_ms()),
        ..SiweFields::default()
    }
}

/// `auth` for `fields` signed by `k`.
pub fn siwe_auth(k: &SigningKey, f: &SiweFields) -> Value {
    let message = siwe_message(f);
    let signature = sign(k, &message);
    json!({"siwe": {"message": message, "signature": signature}})
}

/// A handshake (websocket; msgpack, json; lanes 1, 2, 5) carrying `auth`.
pub async fn handshake_auth(server: &TestServer, auth: Value) -> reqwest::Response {
    let mut body = handshake_body("auth-test", &["msgpack", "json"], &[1, 2, 5]);
    body["auth"] = auth;
    server.handshake_raw(&body).await
}

/// A signed-in SIWE handshake by key `n`; panics unless 200. Returns the response body.
pub async fn siwe_session(server: &TestServer, n: u8, address: &str) -> Value {
    let f = fields(server, address, &nonce(server).await);
    let resp = handshake_auth(server, siwe_auth(&key(n), &f)).await;
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    resp.json().await.unwrap()
}

/// Expects 401 `auth_invalid` with `reason`.
pub async fn assert_auth_invalid(resp: reqwest::Response, reason: &str) {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "auth_invalid", "{body}");
    assert_eq!(body["reason"], reason, "{body}");
}

/// An HS256 app JWT with `claims`, signed with `secret`.
pub fn jwt_hs256(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// Claims `{sub, exp: now + 1 h, rooms}`.
pub fn claims(sub: &str, rooms: &[&str]) -> Value {
    json!({"sub": sub, "exp": now_ms() / 1000 + 3600, "rooms": rooms})
}

/// The `sessionToken` of a handshake answer (JSON).
pub fn session_token(hs: &Value) -> &str {
    hs["sessionToken"]
        .as_str()
        .expect("the handshake gives a sessionToken")
}

/// POSTs a Control `join` of `room` (JSON on lane 1) as the session of the handshake answer
/// `hs`, with its `sessionToken` as Bearer.
pub async fn post_join(server: &TestServer, hs: &Value, room: &str) -> reqwest::Response {
    let sid = hs["sessionId"].as_str().unwrap();
    server
        .http
        .post(server.url(&format!("/api/protocol/v2/session/{sid}/lane/1")))
        .bearer_auth(session_token(hs))
        .header("content-type", "application/json")
        .body(json!({"type": "join", "room": room}).to_string())
        .send()
        .await
        .unwrap()
}

/// `GET /api/protocol/v2/session/{sid}` (the session status) of the handshake answer `hs`,
/// with its `sessionToken` as Bearer; panics unless 200.
pub async fn session_status(server: &TestServer, hs: &Value) -> Value {
    let sid = hs["sessionId"].as_str().unwrap();
    let resp = server
        .http
        .get(server.url(&format!("/api/protocol/v2/session/{sid}")))
        .bearer_auth(session_token(hs))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "session status");
    resp.json().await.unwrap()
}

/// A handshake `auth` of the device key whose P-256 scalar is `seed` repeated, signed over a
/// fresh nonce of `server` (PROTOCOL.md §13.15 "Device keys").
pub async fn device_auth(server: &TestServer, seed: u8) -> Value {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use p256::ecdsa::signature::Signer;
    use p256::ecdsa::{Signature, SigningKey};
    let nonce = nonce(server).await;
    let sk = SigningKey::from_slice(&[seed; 32]).unwrap();
    let sig: Signature = sk.sign(p3_lanes::core::auth::device_auth_message(&nonce).as_bytes());
    json!({"device": {
        "publicKey": URL_SAFE_NO_PAD.encode(sk.verifying_key().to_encoded_point(false).as_bytes()),
        "nonce": nonce,
        "signature": URL_SAFE_NO_PAD.encode(sig.to_bytes()),
    }})
}
