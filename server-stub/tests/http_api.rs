//! The HTTP API over real HTTP: handshake negotiation, session status and deletion, protocol
//! info, version, static files, CORS and the JSON error shape.

mod common;

use common::{config, handshake_body, TestServer};
use p3_lanes::core::handshake::HandshakeResponse;
use p3_lanes::core::lane::Encoding;
use serde_json::{json, Value};

fn now_ms() -> u64 {
    server_stub::now_ms()
}

/// Asserts an error answer: status, `{"error": <non-empty>, "code": code}` and nothing else.
async fn assert_error(resp: reqwest::Response, status: u16, code: &str) {
    assert_eq!(resp.status(), status);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    assert_eq!(
        body.as_object().unwrap().len(),
        2,
        "only error and code: {body}"
    );
}

#[tokio::test]
async fn handshake_grants_only_offered_lanes_and_encodings() {
    let server = TestServer::start(config()).await;
    let before = now_ms();
    let body = json!({
        "clientId": "device-123", "wallet": "0xabc",
        "capabilities": {"transports": ["http3", "websocket"], "encodings": ["protobuf", "json"], "lanes": [3, 1, 2, 2]},
        "deviceInfo": {"platform": "web", "version": "1.0.0"}
    });
    let resp = server.handshake_raw(&body).await;
    assert_eq!(resp.status(), 200);
    let raw: Value = resp.json().await.unwrap();
    let hs: HandshakeResponse = serde_json::from_value(raw.clone()).unwrap();
    let sid = hs.session_id;
    assert_eq!(hs.transport, "websocket");
    let ids: Vec<u8> = hs.lanes.iter().map(|l| l.id).collect();
    assert_eq!(
        ids,
        vec![1, 2, 3],
        "exactly the offered lanes, deduplicated and sorted"
    );
    // The client offered no msgpack: every lane is json, even Voice (which prefers protobuf).
    assert!(hs.lanes.iter().all(|l| l.encoding == Encoding::Json));
    let voice = &hs.lanes[2];
    assert_eq!(
        (
            voice.name.as_str(),
            voice.priority,
            voice.queue_depth,
            voice.reliable
        ),
        ("Voice", 80, 50, false)
    );
    assert_eq!(
        voice.url,
        format!("/api/protocol/v2/session/{sid}/lane/3/stream")
    );
    assert_eq!(
        hs.websocket_url,
        format!("/api/protocol/v2/session/{sid}/ws")
    );
    assert_eq!(hs.dictionary.version, "3");
    assert_eq!(hs.dictionary.tokens[0], "msg");
    assert_eq!(hs.dictionary.index_map["msg"], 1);
    assert_eq!(hs.ttl_seconds, 3600);
    assert_eq!(
        (hs.heartbeat.interval_ms, hs.heartbeat.timeout_ms),
        (30_000, 60_000)
    );
    assert_eq!(hs.protocol.version, "2.0.0");
    assert!(hs.protocol.features.iter().any(|f| f == "dictionary"));
    assert!(hs.server_time >= before && hs.server_time <= now_ms());
    // Wire names as the seed spells them.
    for key in ["sessionId", "serverTime", "ttlSeconds", "websocketUrl"] {
        assert!(raw.get(key).is_some(), "missing {key}: {raw}");
    }
    assert_eq!(raw["lanes"][0]["queueDepth"], 100);
    assert_eq!(raw["heartbeat"]["intervalMs"], 30_000);

    let hs = server.handshake("d2", &["json", "msgpack"], &[1, 7]).await;
    let granted: Vec<(u8, Encoding)> = hs.lanes.iter().map(|l| (l.id, l.encoding)).collect();
    assert_eq!(
        granted,
        vec![(1, Encoding::Msgpack), (7, Encoding::Msgpack)],
        "lane default wins when both have it"
    );
    assert_ne!(hs.session_id, sid, "every handshake creates a new session");
}

#[tokio::test]
async fn handshake_refusals_are_400_with_codes() {
    let server = TestServer::start(config()).await;
    let cases = [
        (
            json!({"clientId": "x", "capabilities": {"transports": ["http3"], "encodings": ["msgpack"], "lanes": [1]}}),
            "no_common_transport",
        ),
        (
            // `http1` is SSE under seed 000's name: it carries json.
            json!({"clientId": "x", "capabilities": {"transports": ["http1", "http3"], "encodings": ["msgpack"], "lanes": [1]}}),
            "no_common_encoding",
        ),
        (
            handshake_body("x", &["protobuf", "cbor"], &[1]),
            "no_common_encoding",
        ),
        (handshake_body("x", &["msgpack"], &[1, 9]), "unknown_lane"),
        (
            handshake_body("x", &["msgpack"], &[2, 3]),
            "control_lane_required",
        ),
        (handshake_body("", &["msgpack"], &[1]), "invalid_argument"),
        (json!({"clientId": "x"}), "bad_request"),
        (
            json!({"clientId": "x", "capabilities": {"transports": ["websocket"], "encodings": ["msgpack"], "lanes": [300]}}),
            "bad_request",
        ),
    ];
    for (body, code) in cases {
        let resp = server.handshake_raw(&body).await;
        assert_error(resp, 400, code).await;
    }
}

#[tokio::test]
async fn malformed_bodies_are_json_errors() {
    let server = TestServer::start(config()).await;
    let url = server.url("/api/protocol/v2/session/handshake");
    let resp = server
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"clientId\": ")
        .send()
        .await
        .unwrap();
    assert_error(resp, 400, "bad_request").await;
    let resp = server
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body("[1, 2]")
        .send()
        .await
        .unwrap();
    assert_error(resp, 400, "bad_request").await;
    let body = handshake_body("x", &["msgpack"], &[1]).to_string();
    let resp = server
        .http
        .post(&url)
        .header("content-type", "text/plain")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_error(resp, 415, "bad_request").await;
}

#[tokio::test]
async fn session_status_then_delete_then_401() {
    let server = TestServer::start(config()).await;
    let hs = server.handshake("device-9", &["msgpack"], &[1, 2]).await;
    let url = server.url(&format!("/api/protocol/v2/session/{}", hs.session_id));
    let token = common::token(&hs);

    let resp = server
        .http
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let s: Value = resp.json().await.unwrap();
    assert_eq!(s["sessionId"], hs.session_id.to_string());
    assert_eq!(s["clientId"], "device-9");
    assert_eq!(s["wallet"], "0xabc");
    assert_eq!(
        s["deviceInfo"],
        json!({"platform": "test", "version": "1.0.0"})
    );
    assert_eq!(s["transport"], "websocket");
    assert_eq!(
        s["lanes"],
        serde_json::to_value(&hs.lanes).unwrap(),
        "same grants as the handshake"
    );
    assert_eq!(s["connected"], false);
    assert_eq!(s["room"], Value::Null);
    assert_eq!(s["ttlSeconds"], 3600);
    let created = s["createdAt"].as_u64().unwrap();
    let last = s["lastActivity"].as_u64().unwrap();
    assert!(created <= last && last <= now_ms());
    assert_eq!(s["expiresAt"].as_u64().unwrap(), last + 3_600_000);

    let resp = server
        .http
        .delete(&url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_error(
        server
            .http
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
        401,
        "unauthorized",
    )
    .await;
    assert_error(
        server
            .http
            .delete(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
        401,
        "unauthorized",
    )
    .await;

    // Unknown but well-formed id: 401, as for any session without its token; malformed
    // id: 400.
    let unknown = server.url("/api/protocol/v2/session/00000000-0000-4000-8000-000000000000");
    assert_error(
        server
            .http
            .get(&unknown)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
        401,
        "unauthorized",
    )
    .await;
    let bad = server.url("/api/protocol/v2/session/not-a-uuid");
    assert_error(
        server.http.get(&bad).send().await.unwrap(),
        400,
        "bad_request",
    )
    .await;
    assert_error(
        server.http.delete(&bad).send().await.unwrap(),
        400,
        "bad_request",
    )
    .await;
}

#[tokio::test]
async fn version_is_never_cached() {
    let server = TestServer::start(config()).await;
    let resp = server
        .http
        .get(server.url("/api/version"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"version": "test-1.2.3"})
    );
}

#[tokio::test]
async fn protocol_info_lists_the_registry() {
    let server = TestServer::start(config()).await;
    let resp = server
        .http
        .get(server.url("/api/protocol/v2/protocol/info"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let info: Value = resp.json().await.unwrap();
    assert_eq!(info["version"], "2.0.0");
    assert_eq!(info["transports"], json!(["websocket", "sse", "http1"]));
    assert_eq!(info["encodings"], json!(["msgpack", "json"]));
    assert!(info["features"]
        .as_array()
        .unwrap()
        .contains(&json!("rooms")));
    let lanes = info["lanes"].as_array().unwrap();
    assert_eq!(lanes.len(), 8);
    assert_eq!(
        lanes[0],
        json!({"id": 1, "name": "Control", "defaultEncoding": "msgpack", "priority": 100, "queueDepth": 100, "reliable": true})
    );
    assert_eq!(lanes[2]["defaultEncoding"], "protobuf");
    assert_eq!(lanes[7]["name"], "Relay");
    assert_eq!(info["dictionary"]["version"], "3");
    assert_eq!(info["dictionary"]["indexMap"]["ts"], 2);
}

#[tokio::test]
async fn unknown_api_paths_and_methods_are_json_errors() {
    let server = TestServer::start(config()).await;
    assert_error(
        server
            .http
            .get(server.url("/api/nope"))
            .send()
            .await
            .unwrap(),
        404,
        "bad_request",
    )
    .await;
    assert_error(
        server
            .http
            .put(server.url("/api/version"))
            .send()
            .await
            .unwrap(),
        405,
        "bad_request",
    )
    .await;
    // A plain GET on the WebSocket route (no upgrade headers) is refused before upgrading.
    let ws = server.url("/api/protocol/v2/session/00000000-0000-4000-8000-000000000000/ws");
    let resp = server.http.get(ws).send().await.unwrap();
    assert!(resp.status().is_client_error());
    assert_eq!(resp.json::<Value>().await.unwrap()["code"], "bad_request");
}

#[tokio::test]
async fn static_files_cors_and_wasm_mime() {
    let root = std::env::temp_dir().join(format!(
        "server-stub-static-{}-{}",
        std::process::id(),
        fastrand_suffix()
    ));
    let (www, pkg) = (root.join("www"), root.join("pkg"));
    std::fs::create_dir_all(&www).unwrap();
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(www.join("index.html"), "<!doctype html><title>demo</title>").unwrap();
    std::fs::write(pkg.join("p3_lanes_bg.wasm"), b"\0asm\x01\0\0\0").unwrap();
    std::fs::write(pkg.join("p3_lanes.js"), "export {};").unwrap();
    let server = TestServer::start(server_stub::Config {
        static_dir: www,
        pkg_dir: pkg,
        ..config()
    })
    .await;

    let resp = server.http.get(server.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-cache");
    assert!(resp.text().await.unwrap().contains("<title>demo</title>"));

    let resp = server
        .http
        .get(server.url("/pkg/p3_lanes_bg.wasm"))
        .header("origin", "http://example.test")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/wasm");
    assert_eq!(resp.headers()["cache-control"], "no-cache");
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b"\0asm\x01\0\0\0");

    let resp = server
        .http
        .get(server.url("/pkg/p3_lanes.js"))
        .send()
        .await
        .unwrap();
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("javascript"));
    assert_eq!(
        server
            .http
            .get(server.url("/missing.html"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // CORS preflight from another origin for the handshake.
    let resp = server
        .http
        .request(
            reqwest::Method::OPTIONS,
            server.url("/api/protocol/v2/session/handshake"),
        )
        .header("origin", "http://example.test")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    let methods = resp.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_owned();
    for m in ["GET", "POST", "DELETE"] {
        assert!(methods.contains(m), "{methods}");
    }
    let _ = std::fs::remove_dir_all(root);
}

fn fastrand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}
