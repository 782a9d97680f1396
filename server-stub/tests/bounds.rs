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

/// A refusal answered before the request body was read (here 413 over the handshake bound)
/// reaches a client that, like an HTTP client library, writes its whole body before reading:
/// the server drains what the client still sends before closing (`server_stub::linger`)
/// instead of closing at once, which resets the connection: the client's next write fails
/// and the answer is lost ("connection reset").
#[tokio::test]
async fn a_refusal_sent_before_the_body_was_read_reaches_the_client() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start(config()).await;
    const BODY: usize = 4 << 20;
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /api/protocol/v2/session/handshake HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {BODY}\r\n\r\n",
        server.addr
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b' '; 64 << 10];
    tcp.write_all(&chunk).await.unwrap();
    // The server has answered and closed its side by now (nothing here is timed: a client
    // that writes sooner only makes the test weaker).
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    for _ in 1..BODY / chunk.len() {
        tcp.write_all(&chunk)
            .await
            .expect("the server reset the connection while the client was still sending");
    }
    let mut answer = Vec::new();
    tokio::time::timeout(common::WAIT, tcp.read_to_end(&mut answer))
        .await
        .expect("the server closes after answering")
        .expect("the answer is readable");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"payload_too_large\""), "{answer}");
    // And the client is told not to reuse the connection.
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "{answer}"
    );
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
        // Many small values (1.2 KB of zeros): refused on the raw bytes, before parsing.
        (
            with(&|b| b["deviceInfo"] = json!({"a": vec![0; 600]})),
            400,
            "payload_too_complex",
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

/// A signaling peer that stops reading but keeps sending heartbeats (so it never goes
/// silent): once a message has waited to be written to it for `--heartbeat-timeout-ms`, it is
/// let go as timed out (its room hears `peer_left` with reason `heartbeat-timeout`) and its
/// connection ends, instead of pinning its queue for as long as it keeps beating.
#[tokio::test]
async fn a_peer_that_stops_reading_is_let_go_even_while_it_sends_heartbeats() {
    use futures::{SinkExt, StreamExt};
    use std::time::Duration;
    use tokio_tungstenite::tungstenite::Message;
    let server = TestServer::start(Config {
        queue_frames: 1_000_000,
        signaling_queue_bytes: 256 << 10,
        heartbeat_timeout_ms: 2_000,
        ..config()
    })
    .await;
    let (mut a, _) = Sig::joined(&server, "a", "r").await;
    let (b, b_sid) = Sig::joined(&server, "b", "r").await;
    assert_eq!(a.recv().await["type"], "peer_joined");
    // b beats every 100 ms (at most 30 s) and never reads.
    let (mut b_tx, mut b_rx) = b.ws.split();
    let beats = tokio::spawn(async move {
        for _ in 0..300 {
            let beat = Message::text(json!({"type": "heartbeat"}).to_string());
            match tokio::time::timeout(Duration::from_secs(2), b_tx.send(beat)).await {
                Ok(Ok(())) => tokio::time::sleep(Duration::from_millis(100)).await,
                _ => break,
            }
        }
    });
    // Offers of 60 KiB until one is refused: b's queue and the socket buffers are full.
    let sdp = "v".repeat(60 << 10);
    let mut refused = false;
    for _ in 0..1000 {
        a.send(json!({"type": "offer", "to": b_sid, "data": {"sdp": sdp}}))
            .await;
        if let Some(Ok(v)) = a.recv_within(Duration::ZERO).await {
            assert_eq!(v["code"], "backpressure", "{v}");
            refused = true;
            break;
        }
    }
    assert!(refused, "a non-reading peer's queue took 60 MB");
    // a stays alive and waits (at most 20 s, ten heartbeat timeouts) for b to be let go.
    let mut left = None;
    'wait: for _ in 0..200 {
        a.send(json!({"type": "heartbeat"})).await;
        let next_beat = tokio::time::Instant::now() + Duration::from_millis(100);
        loop {
            let wait = next_beat.saturating_duration_since(tokio::time::Instant::now());
            match a.recv_within(wait).await {
                Some(Ok(v)) if v["type"] == "peer_left" => {
                    left = Some(v);
                    break 'wait;
                }
                Some(Ok(_)) => {}
                Some(Err(code)) => panic!("a's socket ended: {code:?}"),
                None => break,
            }
        }
    }
    let left = left.expect("a peer that stopped reading but kept beating was never let go");
    assert_eq!(left["reason"], "heartbeat-timeout", "{left}");
    // Its connection ends (with 4408 if it reads in time, else without a close frame).
    let ended = tokio::time::timeout(common::WAIT, async {
        while let Some(Ok(m)) = b_rx.next().await {
            if let Message::Close(f) = m {
                return f.map(|f| u16::from(f.code));
            }
        }
        None
    })
    .await
    .expect("b's connection is still open");
    assert!(matches!(ended, None | Some(4408)), "{ended:?}");
    beats.abort();
    still_serving(&server).await;
}

/// Handshakes `n` sessions (websocket, never attached); panics unless each is 200.
async fn sessions(server: &TestServer, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let hs = server.handshake(&format!("s{i}"), &["json"], &[1]).await;
        ids.push(hs.session_id.to_string());
    }
    ids
}

async fn delete(server: &TestServer, sid: &str) {
    let resp = server
        .session(
            reqwest::Method::DELETE,
            &format!("/api/protocol/v2/session/{sid}"),
        )
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
}

/// The status of `GET` session `sid` as its owner: 200, or 401 once the server forgot it.
async fn status(server: &TestServer, sid: &str) -> u16 {
    server
        .session(
            reqwest::Method::GET,
            &format!("/api/protocol/v2/session/{sid}"),
        )
        .await
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn sessions_are_bounded_in_total() {
    let server = TestServer::start(Config {
        max_sessions: 3,
        ..config()
    })
    .await;
    let mut a = server.peer("a", &[1]).await;
    let ids = sessions(&server, 2).await;
    let body = handshake_body("x", &["json"], &[1]);
    let error = assert_refused(server.handshake_raw(&body).await, 429, "too_many_requests").await;
    assert!(error.contains('3'), "{error}");
    // The live sessions keep working; deleting one frees its place.
    a.ping_pong().await;
    delete(&server, &ids[0]).await;
    assert_eq!(server.handshake_raw(&body).await.status(), 200);
}

#[tokio::test]
async fn sessions_are_bounded_per_client_address() {
    let server = TestServer::start(Config {
        max_sessions_per_ip: 2,
        ..config()
    })
    .await;
    let ids = sessions(&server, 2).await;
    let body = handshake_body("x", &["json"], &[1]);
    assert_refused(server.handshake_raw(&body).await, 429, "too_many_requests").await;
    delete(&server, &ids[1]).await;
    assert_eq!(server.handshake_raw(&body).await.status(), 200);
}

/// A session that never opens a socket or stream expires after `--unattached-ttl-s` (and
/// gives its place back), one that did keeps its TTL.
#[tokio::test]
async fn unattached_sessions_expire_early() {
    let server = TestServer::start(Config {
        unattached_ttl_s: 1,
        max_sessions_per_ip: 2,
        ..config()
    })
    .await;
    let idle = sessions(&server, 1).await.remove(0);
    let peer = server.peer("attached", &[1]).await;
    let attached = peer.sid().to_string();
    peer.close().await;
    // Both places are taken.
    let body = handshake_body("x", &["json"], &[1]);
    assert_refused(server.handshake_raw(&body).await, 429, "too_many_requests").await;
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    assert_eq!(
        status(&server, &idle).await,
        401,
        "the unattached session expired"
    );
    assert_eq!(
        status(&server, &attached).await,
        200,
        "the attached one lives on"
    );
    assert_eq!(server.handshake_raw(&body).await.status(), 200);
}

#[tokio::test]
async fn rooms_are_bounded_in_total_and_in_members() {
    use p3_lanes::core::control::Control;
    use p3_lanes::core::error::ErrorCode;
    let server = TestServer::start(Config {
        max_rooms: 2,
        max_room_members: 2,
        ..config()
    })
    .await;
    let (mut a, mut b) = common::pair(&server, "r1").await;
    let mut c = server.peer("c", &[1, 2]).await;
    c.join("r2").await;
    // A third room: too_many_requests, on the join's lane and seq.
    let mut d = server.peer("d", &[1, 2]).await;
    let seq = d.control_seq;
    d.send_control(&Control::Join { room: "r3".into() }).await;
    assert_eq!(
        d.expect_error().await,
        (ErrorCode::TooManyRequests, Some(1), Some(seq))
    );
    // A full room: room_full; d is still in no room and can join one with space.
    let seq = d.control_seq;
    d.send_control(&Control::Join { room: "r1".into() }).await;
    assert_eq!(
        d.expect_error().await,
        (ErrorCode::RoomFull, Some(1), Some(seq))
    );
    assert_eq!(d.join("r2").await, vec![c.sid(), d.sid()]);
    // A refused join leaves the joiner where it was: c stays in r2 when r1 is full.
    let seq = c.control_seq;
    c.expect_control().await; // peer-joined d
    c.send_control(&Control::Join { room: "r1".into() }).await;
    assert_eq!(
        c.expect_error().await,
        (ErrorCode::RoomFull, Some(1), Some(seq))
    );
    // The room keeps relaying meanwhile.
    a.send_data(
        p3_lanes::core::lane::Lane::Messaging,
        &json!({"hi": 1}),
        None,
    )
    .await;
    assert_eq!(b.expect_data().await.1, json!({"hi": 1}));
    b.ping_pong().await;
}

/// Opens an SSE stream of `sid`; the response (any status).
async fn sse_open(server: &TestServer, sid: &str) -> reqwest::Response {
    server
        .session(
            reqwest::Method::GET,
            &format!("/api/protocol/v2/session/{sid}/stream"),
        )
        .await
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap()
}

async fn sse_session(server: &TestServer, name: &str) -> String {
    let resp = server
        .handshake_raw(&json!({
            "clientId": name,
            "capabilities": {"transports": ["sse"], "encodings": ["json"], "lanes": [1, 2]},
        }))
        .await;
    assert_eq!(resp.status(), 200);
    let hs: p3_lanes::core::handshake::HandshakeResponse = resp.json().await.unwrap();
    server.remember(&hs);
    hs.session_id.to_string()
}

#[tokio::test]
async fn sse_streams_are_bounded_per_session_and_per_address() {
    let server = TestServer::start(Config {
        max_sse_streams_per_session: 2,
        max_sse_per_ip: 3,
        ..config()
    })
    .await;
    let a = sse_session(&server, "a").await;
    let s1 = sse_open(&server, &a).await;
    let s2 = sse_open(&server, &a).await;
    assert_eq!((s1.status().as_u16(), s2.status().as_u16()), (200, 200));
    let error = assert_refused(sse_open(&server, &a).await, 429, "too_many_requests").await;
    assert!(error.contains("session"), "{error}");
    // Another session from the same address: one more, then the address is full.
    let b = sse_session(&server, "b").await;
    let s3 = sse_open(&server, &b).await;
    assert_eq!(s3.status(), 200);
    let error = assert_refused(sse_open(&server, &b).await, 429, "too_many_requests").await;
    assert!(error.contains("address"), "{error}");
    still_serving(&server).await;
    drop((s1, s2, s3));
}

/// A stream ends cleanly after `--sse-max-age-s` (the client resumes with `Last-Event-ID`),
/// so an open stream no longer keeps its session alive forever.
#[tokio::test]
async fn sse_streams_end_at_their_maximum_age() {
    let server = TestServer::start(Config {
        sse_max_age_s: 1,
        ..config()
    })
    .await;
    let a = sse_session(&server, "a").await;
    let mut resp = sse_open(&server, &a).await;
    assert_eq!(resp.status(), 200);
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(chunk) = resp.chunk().await.expect("a clean end, not an error") {
            assert!(!chunk.is_empty());
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived its maximum age");
    // Resuming works, and the session counts no open stream once the old one is gone.
    let again = server
        .session(
            reqwest::Method::GET,
            &format!("/api/protocol/v2/session/{a}/stream"),
        )
        .await
        .header("last-event-id", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
}

/// A v1 member that stops reading: relays to it are refused with `backpressure` once
/// `--lane-queue-bytes` wait on its lane (the socket's frame and byte budgets alone would take
/// them all), and the sender's other traffic is still served.
#[tokio::test]
async fn v1_lane_queue_is_bounded_in_bytes() {
    use common::Received;
    use p3_lanes::core::control::Control;
    use p3_lanes::core::error::ErrorCode;
    use p3_lanes::core::lane::Lane;
    let server = TestServer::start(Config {
        queue_frames: 1_000_000,
        queue_bytes: 1 << 30,
        lane_queue_bytes: 64 << 10,
        ..config()
    })
    .await;
    let (mut a, b) = common::pair(&server, "r").await;
    // b never reads from here on: 1000 messages of 60 KiB are 60 MB, far more than the
    // loopback socket buffers plus 64 KiB.
    let big = json!({"blob": "x".repeat(60 << 10)});
    let mut refused = None;
    for _ in 0..1000 {
        let seq = a.send_data(Lane::Messaging, &big, None).await;
        if let Some(Received::Control(_, Control::Error { code, lane, .. })) =
            a.recv_within(std::time::Duration::ZERO).await
        {
            refused = Some((code, lane, seq));
            break;
        }
    }
    let (code, lane, _) = refused.expect("a non-reading member's lane took 60 MB");
    assert_eq!(
        (code, lane),
        (ErrorCode::Backpressure, Some(Lane::Messaging.id()))
    );
    // The sender is still served, and so is everyone else.
    let mut pong = false;
    a.send_control(&Control::Ping {
        client_time: 1.0,
        rtt_ms: None,
    })
    .await;
    for _ in 0..100 {
        match a.expect_control().await {
            Control::Pong { .. } => {
                pong = true;
                break;
            }
            Control::Error { code, .. } => assert_eq!(code, ErrorCode::Backpressure),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(pong);
    still_serving(&server).await;
    drop(b);
}

/// An SSE stream whose client stopped reading stalls its writes; after
/// `--sse-write-timeout-ms` (plus the keep-alive interval) it no longer counts as activity, so
/// its session expires instead of living as long as the connection.
#[tokio::test]
async fn a_stalled_sse_stream_no_longer_keeps_its_session_alive() {
    use p3_lanes::core::lane::Lane;
    let server = TestServer::start(Config {
        session_ttl_s: 1,
        sse_keepalive_ms: 50,
        sse_write_timeout_ms: 200,
        ..config()
    })
    .await;
    let a = sse_session(&server, "a").await;
    let stream = sse_open(&server, &a).await;
    assert_eq!(stream.status(), 200);
    let join = server
        .session(
            reqwest::Method::POST,
            &format!("/api/protocol/v2/session/{a}/lane/1"),
        )
        .await
        .header("content-type", "application/json")
        .body(json!({"type": "join", "room": "r"}).to_string())
        .send()
        .await
        .unwrap();
    assert!(join.status().is_success(), "{}", join.status());
    let mut b = server.peer("b", &[1, 2]).await;
    b.join("r").await;
    // 30 MB for a client that reads nothing: far more than the loopback socket buffers.
    let big = json!({"blob": "x".repeat(60 << 10)});
    for _ in 0..500 {
        b.send_data(Lane::Messaging, &big, None).await;
    }
    let mut expired = false;
    for _ in 0..50 {
        if status(&server, &a).await == 401 {
            expired = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(expired, "a stream nobody reads kept its session alive");
    // b is still served (it heard a leave when the session expired).
    b.send_control(&p3_lanes::core::control::Control::Ping {
        client_time: 1.0,
        rtt_ms: None,
    })
    .await;
    loop {
        match b.expect_control().await {
            p3_lanes::core::control::Control::Pong { .. } => break,
            p3_lanes::core::control::Control::PeerLeft { .. }
            | p3_lanes::core::control::Control::RoomKey { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    drop(stream);
}

/// The room bounds answer an HTTP `join` (a `POST` to the Control lane) with their HTTP
/// statuses: 409 `room_full`, 429 `too_many_requests`.
#[tokio::test]
async fn http_joins_get_the_room_bounds_as_statuses() {
    let server = TestServer::start(Config {
        max_rooms: 1,
        max_room_members: 1,
        ..config()
    })
    .await;
    let join = |sid: String, room: &'static str| {
        let server = &server;
        async move {
            server
                .session(
                    reqwest::Method::POST,
                    &format!("/api/protocol/v2/session/{sid}/lane/1"),
                )
                .await
                .header("content-type", "application/json")
                .body(json!({"type": "join", "room": room}).to_string())
                .send()
                .await
                .unwrap()
        }
    };
    let a = sse_session(&server, "a").await;
    let b = sse_session(&server, "b").await;
    assert!(join(a, "r").await.status().is_success());
    assert_refused(join(b.clone(), "r").await, 409, "room_full").await;
    assert_refused(join(b.clone(), "other").await, 429, "too_many_requests").await;
    still_serving(&server).await;
}
