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

/// A raw signaling socket (`GET /api/signaling`).
struct Sig {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl Sig {
    /// Connects, authenticates as a new session and joins `room`.
    async fn joined(server: &TestServer, name: &str, room: &str) -> (Sig, String) {
        let hs = server.handshake(name, &["json"], &[1]).await;
        let url = format!("ws://{}/api/signaling", server.addr);
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let mut s = Sig { ws };
        let sid = hs.session_id.to_string();
        s.send(json!({"type": "auth", "address": sid, "signature": hs.signaling_token}))
            .await;
        assert_eq!(s.recv().await["type"], "auth_ok");
        s.send(json!({"type": "join", "roomId": room})).await;
        assert_eq!(s.recv().await["type"], "joined");
        (s, sid)
    }

    async fn send(&mut self, v: Value) {
        use futures::SinkExt;
        self.ws
            .send(tokio_tungstenite::tungstenite::Message::text(v.to_string()))
            .await
            .unwrap();
    }

    /// The next text message within `d`: `None` if nothing came, `Err(close code)` at the end.
    async fn recv_within(&mut self, d: std::time::Duration) -> Option<Result<Value, Option<u16>>> {
        use futures::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            let next = tokio::time::timeout(d, self.ws.next()).await.ok()?;
            return Some(match next {
                Some(Ok(Message::Text(t))) => Ok(serde_json::from_str(t.as_str()).unwrap()),
                Some(Ok(Message::Close(f))) => Err(f.map(|f| u16::from(f.code))),
                Some(Ok(_)) => continue,
                None | Some(Err(_)) => Err(None),
            });
        }
    }

    async fn recv(&mut self) -> Value {
        match self.recv_within(common::WAIT).await {
            Some(Ok(v)) => v,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

/// A signaling peer that stops reading: relays to it are refused with `backpressure` once
/// `--signaling-queue-bytes` are queued (the frame count alone would take them all), its
/// heartbeat times out, and the server stops writing to it instead of waiting on it forever.
#[tokio::test]
async fn signaling_queue_is_bounded_in_bytes_and_a_stuck_peer_is_let_go() {
    let server = TestServer::start(Config {
        queue_frames: 1_000_000,
        signaling_queue_bytes: 256 << 10,
        heartbeat_timeout_ms: 4_000,
        ..config()
    })
    .await;
    let (mut a, _) = Sig::joined(&server, "a", "r").await;
    let (mut b, b_sid) = Sig::joined(&server, "b", "r").await;
    assert_eq!(a.recv().await["type"], "peer_joined");
    // b never reads from here on. 1000 offers of 60 KiB: 60 MB, far more than the loopback
    // socket buffers plus 256 KiB.
    let sdp = "v".repeat(60 << 10);
    let mut refused = false;
    for _ in 0..1000 {
        a.send(json!({"type": "offer", "to": b_sid, "data": {"sdp": sdp}}))
            .await;
        if let Some(Ok(v)) = a.recv_within(std::time::Duration::ZERO).await {
            assert_eq!(
                (v["type"].as_str(), v["code"].as_str()),
                (Some("error"), Some("backpressure")),
                "{v}"
            );
            refused = true;
            break;
        }
    }
    assert!(refused, "a non-reading peer's queue took 60 MB");
    // Another pair in another room is served meanwhile.
    let (mut c, _) = Sig::joined(&server, "c", "other").await;
    c.send(json!({"type": "ping"})).await;
    assert_eq!(c.recv().await["type"], "pong");
    still_serving(&server).await;
    // b's heartbeat times out: a hears it.
    loop {
        a.send(json!({"type": "heartbeat"})).await;
        let v = a.recv().await;
        if v["type"] == "peer_left" {
            assert_eq!(v["reason"], "heartbeat-timeout", "{v}");
            break;
        }
    }
    // The server gave up writing to b within its close grace (1 s for the close frame, the
    // task aborted after 2 s): b finds its connection ended, without the 4408 close frame a
    // send task still blocked on b's socket would have written once b reads again.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let end = loop {
        match b.recv_within(common::WAIT).await {
            Some(Ok(_)) => continue,
            Some(Err(code)) => break code,
            None => panic!("b's connection is still open"),
        }
    };
    assert_eq!(
        end, None,
        "the server kept writing to a peer that stopped reading"
    );
}
