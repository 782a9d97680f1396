//! App JWTs in the handshake (seed 004; issue 12; PROTOCOL.md §3.1): HS256 with
//! `--jwt-secret`, ES256 / EdDSA with `--jwt-public-key`; `sub` becomes the identity, `exp`
//! is required, `rooms` admits rooms under `--room-access token`. Refusals: 401
//! `auth_invalid` with `expired`, `not_yet_valid` or `bad_token`.

mod common;

use common::auth::*;
use common::TestServer;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use server_stub::auth::policy::RoomAccess;
use std::path::PathBuf;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

async fn hs256_server(access: RoomAccess) -> TestServer {
    TestServer::start_with(|c| {
        c.jwt_secret = Some(JWT_SECRET.parse().unwrap());
        c.room_access = access;
    })
    .await
}

#[tokio::test]
async fn a_valid_token_is_the_session_identity() {
    let server = hs256_server(RoomAccess::Open).await;
    let token = jwt_hs256(JWT_SECRET, &claims("user-42", &["lobby"]));
    let resp = handshake_auth(&server, json!({ "token": token })).await;
    assert_eq!(resp.status(), 200);
    let hs: Value = resp.json().await.unwrap();
    assert_eq!(hs["identity"], json!({"kind": "token", "id": "user-42"}));
}

#[tokio::test]
async fn expired_forged_and_incomplete_tokens_are_refused() {
    let server = hs256_server(RoomAccess::Open).await;
    let now = now_ms() / 1000;
    let send = |t: String| handshake_auth(&server, json!({ "token": t }));
    let expired = json!({"sub": "u", "exp": now - 3600});
    assert_auth_invalid(send(jwt_hs256(JWT_SECRET, &expired)).await, "expired").await;
    let early = json!({"sub": "u", "exp": now + 3600, "nbf": now + 600});
    assert_auth_invalid(send(jwt_hs256(JWT_SECRET, &early)).await, "not_yet_valid").await;
    let forged = jwt_hs256("another-secret-0123456789abcdef-0123", &claims("u", &[]));
    assert_auth_invalid(send(forged).await, "bad_token").await;
    let no_exp = json!({"sub": "u"});
    assert_auth_invalid(send(jwt_hs256(JWT_SECRET, &no_exp)).await, "bad_token").await;
    let no_sub = json!({"exp": now + 3600});
    assert_auth_invalid(send(jwt_hs256(JWT_SECRET, &no_sub)).await, "bad_token").await;
    // Another algorithm with the same secret (HS384) and an unsigned token are refused.
    let hs384 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS384),
        &claims("u", &[]),
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    assert_auth_invalid(send(hs384).await, "bad_token").await;
    let valid = jwt_hs256(JWT_SECRET, &claims("u", &[]));
    let (_, rest) = valid.split_once('.').unwrap();
    let none = format!(
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
        rest.split_once('.').unwrap().0
    );
    assert_auth_invalid(send(none).await, "bad_token").await;
    assert_auth_invalid(send("not-a-jwt".into()).await, "bad_token").await;
}

#[tokio::test]
async fn a_server_without_a_key_refuses_tokens() {
    let server = TestServer::start(common::config()).await;
    let token = jwt_hs256(JWT_SECRET, &claims("u", &[]));
    assert_auth_invalid(
        handshake_auth(&server, json!({ "token": token })).await,
        "bad_token",
    )
    .await;
}

#[tokio::test]
async fn es256_and_eddsa_public_keys() {
    for (public, private, alg, wrong) in [
        (
            "jwt-es256-public.pem",
            "jwt-es256-private.pem",
            Algorithm::ES256,
            "jwt-ed25519-private.pem",
        ),
        (
            "jwt-ed25519-public.pem",
            "jwt-ed25519-private.pem",
            Algorithm::EdDSA,
            "jwt-es256-private.pem",
        ),
    ] {
        let server = TestServer::start_with(|c| c.jwt_public_key = Some(data(public))).await;
        let pem = std::fs::read(data(private)).unwrap();
        let key = match alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(&pem).unwrap(),
            _ => EncodingKey::from_ed_pem(&pem).unwrap(),
        };
        let token = jsonwebtoken::encode(&Header::new(alg), &claims("pk-user", &[]), &key).unwrap();
        let resp = handshake_auth(&server, json!({ "token": token })).await;
        assert_eq!(resp.status(), 200, "{alg:?}");
        let hs: Value = resp.json().await.unwrap();
        assert_eq!(hs["identity"]["id"], "pk-user");
        // Signed by the other key type: refused.
        let other = std::fs::read(data(wrong)).unwrap();
        let (key, alg) = match alg {
            Algorithm::ES256 => (EncodingKey::from_ed_pem(&other).unwrap(), Algorithm::EdDSA),
            _ => (EncodingKey::from_ec_pem(&other).unwrap(), Algorithm::ES256),
        };
        let token = jsonwebtoken::encode(&Header::new(alg), &claims("pk-user", &[]), &key).unwrap();
        assert_auth_invalid(
            handshake_auth(&server, json!({ "token": token })).await,
            "bad_token",
        )
        .await;
    }
}

#[tokio::test]
async fn a_token_admits_only_its_rooms() {
    let server = hs256_server(RoomAccess::Token).await;
    let token = jwt_hs256(JWT_SECRET, &claims("user-7", &["admitted"]));
    let hs: Value = handshake_auth(&server, json!({ "token": token }))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(post_join(&server, &hs, "admitted").await.status(), 202);
    let resp = post_join(&server, &hs, "elsewhere").await;
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "forbidden", "{body}");
}

#[test]
fn config_refuses_unusable_keys() {
    use server_stub::auth::Auth;
    let mut c = common::config();
    c.jwt_secret = Some("short".parse().unwrap());
    assert!(
        Auth::from_config(&c).is_err(),
        "an HS256 secret under 32 bytes"
    );
    c.jwt_secret = None;
    c.jwt_public_key = Some(data("jwt-es256-private.pem"));
    assert!(
        Auth::from_config(&c).is_err(),
        "a private key is not a public key PEM"
    );
    c.jwt_public_key = Some(data("jwt-es256-public.pem"));
    assert!(Auth::from_config(&c).is_ok());
    c.jwt_secret = Some(JWT_SECRET.parse().unwrap());
    assert!(Auth::from_config(&c).is_err(), "both at once");
}
