//! `GET /api/webrtc/config` (seed 001 `getWebRTCConfig`, PROTOCOL.md §13.8) over real HTTP.

mod common;

use common::{config, TestServer};
use serde_json::{json, Value};
use server_stub::Config;

async fn get(server: &TestServer, query: &str) -> (u16, Option<String>, Value) {
    let r = server
        .http
        .get(server.url(&format!("/api/webrtc/config{query}")))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let cache = r
        .headers()
        .get("cache-control")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, cache, r.json().await.unwrap())
}

#[tokio::test]
async fn default_is_the_seeds_stun_list_without_turn() {
    let server = TestServer::start(config()).await;
    let (status, cache, body) = get(&server, "?deviceType=desktop").await;
    assert_eq!(status, 200);
    assert_eq!(cache.as_deref(), Some("no-store"));
    assert_eq!(
        body,
        json!({
            "iceServers": [{"urls": "stun:stun.l.google.com:19302"}, {"urls": "stun:stun1.l.google.com:19302"}],
            "codecPreferences": {"audio": "opus/48000/2"},
            "bundlePolicy": "max-bundle", "rtcpMuxPolicy": "require", "iceTransportPolicy": "all"
        })
    );
    assert!(
        body.get("sdpSemantics").is_none(),
        "Chrome-legacy member dropped"
    );
    let (_, _, mobile) = get(&server, "?deviceType=mobile").await;
    assert_eq!(mobile["codecPreferences"]["audio"], "opus/24000/2");
    let (_, _, absent) = get(&server, "").await;
    assert_eq!(absent["codecPreferences"]["audio"], "opus/48000/2");
}

#[tokio::test]
async fn turn_only_with_credentials_and_stun_may_be_empty() {
    let server = TestServer::start(Config {
        stun_urls: String::new(),
        turn_urls: "turn:127.0.0.1:3478?transport=udp, turns:127.0.0.1:5349".into(),
        turn_username: Some("user".into()),
        turn_credential: Some("secret".into()),
        ..config()
    })
    .await;
    let (_, _, body) = get(&server, "?deviceType=mobile").await;
    assert_eq!(
        body["iceServers"],
        json!([{"urls": ["turn:127.0.0.1:3478?transport=udp", "turns:127.0.0.1:5349"],
                "username": "user", "credential": "secret"}])
    );
    // A user name without a credential is not enough.
    let server = TestServer::start(Config {
        stun_urls: String::new(),
        turn_username: Some("user".into()),
        ..config()
    })
    .await;
    let (_, _, body) = get(&server, "").await;
    assert_eq!(body["iceServers"], json!([]));
}

#[tokio::test]
async fn unknown_device_type_is_a_typed_error() {
    let server = TestServer::start(config()).await;
    let (status, _, body) = get(&server, "?deviceType=toaster").await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], "invalid_argument");
}
