//! Issue 11 "Bounds" over real HTTP and WebSockets: every bound is hit and answered with its
//! documented status or code, and the server keeps serving other sessions meanwhile. Limits are
//! set small through [`server_stub::Config`], so each test fails when its bound is removed.

mod common;

use common::{config, handshake_body, TestServer};
use serde_json::{json, Value};
use server_stub::Config;

/// Asserts a JSON error answer with `status` and `code`; returns its `error` text.
async fn assert_refused(resp: reqwest::Response, status: u16, code: &str) -> String {
    assert_eq!(resp.status(), status, "{:?}", resp.url());
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    let error = body["error"].as_str().unwrap_or_default().to_owned();
    assert!(!error.is_empty(), "{body}");
    error
}

/// A normal handshake still succeeds.
async fn still_serving(server: &TestServer) {
    server.handshake("honest", &["json"], &[1, 2]).await;
}

#[tokio::test]
async fn handshake_body_over_the_bound_is_413_json() {
    let server = TestServer::start(Config {
        max_handshake_bytes: 1024,
        ..config()
    })
    .await;
    // Within the bound (deviceInfo padded to ~900 bytes of body): accepted.
    let mut body = handshake_body("c", &["json"], &[1]);
    body["deviceInfo"]["pad"] = json!("x".repeat(700));
    assert!(serde_json::to_vec(&body).unwrap().len() < 1024);
    assert_eq!(server.handshake_raw(&body).await.status(), 200);
    // Over it, with a Content-Length.
    body["deviceInfo"]["pad"] = json!("x".repeat(1100));
    let error = assert_refused(server.handshake_raw(&body).await, 413, "payload_too_large").await;
    assert!(error.contains("1024"), "{error}");
    // Over it, chunked (no Content-Length): refused while reading, not after buffering.
    let bytes = serde_json::to_vec(&body).unwrap();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(100).map(|c| Ok(c.to_vec())).collect();
    let resp = server
        .http
        .post(server.url("/api/protocol/v2/session/handshake"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_refused(resp, 413, "payload_too_large").await;
    still_serving(&server).await;
}

#[tokio::test]
async fn handshake_body_default_bound_is_8_kib() {
    let server = TestServer::start(config()).await;
    let mut body = handshake_body("c", &["json"], &[1]);
    body["wallet"] = json!("0x".to_owned() + &"a".repeat(9000));
    assert_refused(server.handshake_raw(&body).await, 413, "payload_too_large").await;
    still_serving(&server).await;
}

#[tokio::test]
async fn handshake_fields_are_bounded() {
    let server = TestServer::start(Config {
        max_device_info_bytes: 64,
        ..config()
    })
    .await;
    let with = |f: &dyn Fn(&mut Value)| {
        let mut b = handshake_body("c", &["json"], &[1, 2]);
        f(&mut b);
        b
    };
    let cases: Vec<(Value, u16, &str)> = vec![
        (
            with(&|b| b["clientId"] = json!("c".repeat(129))),
            400,
            "invalid_argument",
        ),
        (
            with(&|b| b["wallet"] = json!("w".repeat(129))),
            400,
            "invalid_argument",
        ),
        (
            with(&|b| b["deviceInfo"] = json!({"p": "x".repeat(64)})),
            413,
            "payload_too_large",
        ),
        (
            with(&|b| b["deviceInfo"] = json!({"a": {"b": {"c": {"d": {}}}}})),
            400,
            "invalid_argument",
        ),
        (
            with(&|b| b["deviceInfo"] = json!({"a": [[[[]]]]})),
            400,
            "invalid_argument",
        ),
        (
            with(&|b| b["capabilities"]["lanes"] = json!(vec![1; 17])),
            400,
            "invalid_argument",
        ),
        (
            with(&|b| b["capabilities"]["transports"] = json!(vec!["websocket"; 17])),
            400,
            "invalid_argument",
        ),
        (
            with(&|b| b["capabilities"]["encodings"] = json!(["j".repeat(33), "json"])),
            400,
            "invalid_argument",
        ),
        (
            with(&|b| b["features"] = json!(vec!["mux"; 17])),
            400,
            "invalid_argument",
        ),
        // Nesting anywhere in the body (not only deviceInfo) is refused before parsing.
        (
            with(&|b| b["extra"] = json!([[[[[[[[1]]]]]]]])),
            400,
            "invalid_argument",
        ),
    ];
    for (body, status, code) in cases {
        let resp = server.handshake_raw(&body).await;
        assert_eq!(resp.status(), status, "{body}");
        let error = assert_refused(resp, status, code).await;
        assert!(!error.contains("internal"), "{body}: {error}");
    }
    // At every bound exactly: accepted.
    let ok = with(&|b| {
        b["clientId"] = json!("c".repeat(128));
        b["wallet"] = json!("w".repeat(128));
        b["deviceInfo"] = json!({"a": {"b": {"c": {"d": 1}}}});
        b["capabilities"]["lanes"] = json!(vec![1; 16]);
        b["features"] = json!(vec!["mux"; 16]);
    });
    let resp = server.handshake_raw(&ok).await;
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    still_serving(&server).await;
}
