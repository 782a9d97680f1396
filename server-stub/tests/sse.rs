//! SSE lanes over real HTTP (PROTOCOL.md §14): stream headers and event format, delivery of
//! what a WebSocket would get (relays, Control messages), `POST` routing to WebSocket peers,
//! `Last-Event-ID` resume without loss or duplicates, discontinuity after the history
//! overflowed, keep-alive comments, and the JSON errors of `POST` and `GET`.

mod common;

use common::{config, TestServer, WAIT};
use eventsource_stream::{Event, EventStream, Eventsource};
use futures::{Stream, StreamExt};
use p3_lanes::core::control::Control;
use p3_lanes::core::handshake::HandshakeResponse;
use p3_lanes::core::lane::{Encoding, Lane};
use p3_lanes::core::sse::{parse_discontinuity, parse_message, SseMessage};
use serde_json::{json, Value};
use server_stub::Config;
use std::pin::Pin;
use tokio::time::timeout;

type Events = EventStream<Pin<Box<dyn Stream<Item = reqwest::Result<axum::body::Bytes>> + Send>>>;

async fn sse_handshake(server: &TestServer, client_id: &str, lanes: &[u8]) -> HandshakeResponse {
    let resp = server
        .handshake_raw(&json!({
            "clientId": client_id,
            "capabilities": {"transports": ["sse"], "encodings": ["msgpack", "json"], "lanes": lanes},
        }))
        .await;
    assert_eq!(resp.status(), 200);
    let hs = resp.json().await.unwrap();
    server.remember(&hs);
    hs
}

/// Opens `path` as an event stream (with `Last-Event-ID` when given); asserts 200.
async fn open(server: &TestServer, path: &str, last_id: Option<&str>) -> (reqwest::Response, ()) {
    // As the session's owner: a fresh ticket.
    let mut req = server
        .session(reqwest::Method::GET, path)
        .await
        .header("accept", "text/event-stream");
    if let Some(id) = last_id {
        req = req.header("last-event-id", id);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    (resp, ())
}

fn events(resp: reqwest::Response) -> Events {
    let bytes: Pin<Box<dyn Stream<Item = reqwest::Result<axum::body::Bytes>> + Send>> =
        Box::pin(resp.bytes_stream());
    bytes.eventsource()
}

async fn next(ev: &mut Events) -> Event {
    timeout(WAIT, ev.next())
        .await
        .expect("an SSE event in time")
        .expect("stream open")
        .expect("well-formed SSE")
}

/// The next `lane-*` event's message (skipping nothing: asserts the event name).
async fn next_message(ev: &mut Events) -> (Event, SseMessage) {
    let e = next(ev).await;
    assert!(e.event.starts_with("lane-"), "{e:?}");
    let m = parse_message(&e.data).unwrap();
    assert_eq!(e.event, format!("lane-{}", m.lane));
    (e, m)
}

async fn post(
    server: &TestServer,
    sid: &str,
    lane: u8,
    ct: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    server
        .session(
            reqwest::Method::POST,
            &format!("/api/protocol/v2/session/{sid}/lane/{lane}"),
        )
        .await
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn post_json(server: &TestServer, sid: &str, lane: u8, v: &Value) -> reqwest::Response {
    post(server, sid, lane, "application/json", v.to_string()).await
}

async fn assert_error(resp: reqwest::Response, status: u16, code: &str) {
    assert_eq!(resp.status(), status);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
}

#[tokio::test]
async fn stream_has_the_seed_headers_retry_and_a_welcome() {
    let mut cfg = config();
    cfg.sse_retry_ms = 2_500;
    let server = TestServer::start(cfg).await;
    let hs = sse_handshake(&server, "a", &[1, 2, 5]).await;
    assert_eq!(hs.transport, "sse");
    assert_eq!(
        hs.sse_retry_ms,
        Some(2_500),
        "the handshake tells the reconnect delay"
    );
    let url = format!(
        "/api/protocol/v2/session/{}/stream?lanes=1,2,5",
        hs.session_id
    );
    assert!(hs.lanes.iter().all(|l| l.url == url), "{:?}", hs.lanes);
    assert!(hs.lanes.iter().all(|l| l.encoding == Encoding::Json));
    assert!(!hs.grants("mux"));

    let (resp, ()) = open(&server, &url, None).await;
    let h = resp.headers();
    assert_eq!(h["content-type"], "text/event-stream");
    assert_eq!(h["cache-control"], "no-cache, no-store, must-revalidate");
    assert_eq!(h["connection"], "keep-alive");
    assert_eq!(h["x-accel-buffering"], "no");
    let mut ev = events(resp);
    let (e, m) = next_message(&mut ev).await;
    assert_eq!(e.retry, Some(std::time::Duration::from_millis(2_500)));
    assert_eq!(e.id, "", "the welcome has no event id");
    assert_eq!(m.seq, 0);
    let welcome: Control = serde_json::from_value(m.payload).unwrap();
    assert!(
        matches!(welcome, Control::Welcome { session_id, .. } if session_id == hs.session_id),
        "{welcome:?}"
    );
    let status: Value = server
        .session(
            reqwest::Method::GET,
            &format!("/api/protocol/v2/session/{}", hs.session_id),
        )
        .await
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["sseStreams"], 1);
}

#[tokio::test]
async fn sse_and_websocket_sessions_exchange_messages_in_a_room() {
    let server = TestServer::start(config()).await;
    let hs = sse_handshake(&server, "sse", &[1, 2]).await;
    let sid = hs.session_id.to_string();
    let (resp, ()) = open(&server, &hs.lanes[0].url, None).await;
    let mut ev = events(resp);
    next_message(&mut ev).await; // welcome

    let mut ws = server.peer("ws", &[1, 2]).await;
    ws.join("room").await;
    let r = post_json(&server, &sid, 1, &json!({"type": "join", "room": "room"})).await;
    assert_eq!(r.status(), 202);
    let (e1, joined) = next_message(&mut ev).await;
    assert_eq!(
        joined.payload,
        json!({"type": "joined", "room": "room", "members": [ws.sid(), hs.session_id]})
    );
    let (_, key) = next_message(&mut ev).await;
    assert_eq!(
        key.payload["type"], "room-key",
        "the room key follows joined"
    );
    match ws.expect_control().await {
        Control::PeerJoined { session_id, .. } => assert_eq!(session_id, hs.session_id),
        other => panic!("{other:?}"),
    }

    // WebSocket → SSE: the same message, with `from`, as a lane-2 event.
    ws.send_data(Lane::Messaging, &json!({"text": "hello sse"}), None)
        .await;
    let (e2, m) = next_message(&mut ev).await;
    assert_eq!((m.lane, m.seq, m.from), (2, 1, Some(ws.sid())));
    assert_eq!(m.payload, json!({"text": "hello sse"}));
    assert!(
        e2.id.parse::<u64>().unwrap() > e1.id.parse::<u64>().unwrap(),
        "ids increase across lanes"
    );

    // SSE → WebSocket: JSON and MessagePack bodies, relayed like frames.
    let r = post_json(&server, &sid, 2, &json!({"text": "hello ws"})).await;
    assert_eq!(r.status(), 202);
    let (h, v) = ws.expect_data().await;
    assert_eq!((h.lane, h.from), (Lane::Messaging, Some(hs.session_id)));
    assert_eq!(v, json!({"text": "hello ws"}));
    let packed = vec![0x81, 0xa1, b'n', 0x07]; // {"n": 7}
    let r = post(&server, &sid, 2, "application/msgpack", packed).await;
    assert_eq!(r.status(), 202);
    assert_eq!(ws.expect_data().await.1, json!({"n": 7}));

    // `to` addresses one session; a ping is answered on the stream.
    let to = format!("/api/protocol/v2/session/{sid}/lane/2?to={}", ws.sid());
    let r = server
        .session(reqwest::Method::POST, &to)
        .await
        .header("content-type", "application/json")
        .body("[1,2]")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(ws.expect_data().await.1, json!([1, 2]));
    let r = post_json(
        &server,
        &sid,
        1,
        &json!({"type": "ping", "clientTime": 12.5}),
    )
    .await;
    assert_eq!(r.status(), 202);
    let (_, pong) = next_message(&mut ev).await;
    assert_eq!(pong.payload["type"], "pong");
    assert_eq!(pong.payload["clientTime"], 12.5);

    // The SSE session keeps its room while its stream is away.
    drop(ev);
    ws.send_data(Lane::Messaging, &json!({"while": "away"}), None)
        .await;
    let (resp, ()) = open(&server, &hs.lanes[0].url, Some(&e2.id)).await;
    let mut ev = events(resp);
    next_message(&mut ev).await; // welcome
    let (_, m) = next_message(&mut ev).await;
    assert_eq!(m.payload["type"], "pong");
    let (_, m) = next_message(&mut ev).await;
    assert_eq!(m.payload, json!({"while": "away"}));
}

/// Sends `n` messages numbered from `from` from a WebSocket peer in the room.
async fn send_numbered(ws: &mut common::Peer, from: u64, n: u64) {
    for i in from..from + n {
        ws.send_data(Lane::Messaging, &json!({"n": i}), None).await;
    }
}

/// A WebSocket peer and an SSE session in one room; returns the SSE session id.
async fn room_pair(server: &TestServer) -> (common::Peer, String) {
    let hs = sse_handshake(server, "sse", &[1, 2]).await;
    let sid = hs.session_id.to_string();
    let mut ws = server.peer("ws", &[1, 2]).await;
    ws.join("r").await;
    let r = post_json(server, &sid, 1, &json!({"type": "join", "room": "r"})).await;
    assert_eq!(r.status(), 202);
    ws.expect_control().await; // peer-joined
    (ws, sid)
}

#[tokio::test]
async fn last_event_id_resumes_without_loss_or_duplicates() {
    let server = TestServer::start(config()).await;
    let (mut ws, sid) = room_pair(&server).await;
    let lane2 = format!("/api/protocol/v2/session/{sid}/lane/2/stream");
    send_numbered(&mut ws, 0, 5).await;
    let (resp, ()) = open(&server, &lane2, None).await;
    let mut ev = events(resp);
    let mut got = Vec::new();
    let mut last_id = String::new();
    let mut last_num = 0;
    for _ in 0..3 {
        let (e, m) = next_message(&mut ev).await;
        got.push(m.payload["n"].as_u64().unwrap());
        last_num = m.seq;
        last_id = e.id;
    }
    drop(ev); // the client goes away after 3 of 5
    send_numbered(&mut ws, 5, 5).await;
    // Resume twice from the same id: both see exactly what follows it.
    for _ in 0..2 {
        let (resp, ()) = open(&server, &lane2, Some(&last_id)).await;
        let mut ev = events(resp);
        let mut rest = Vec::new();
        let mut seq = last_num;
        for _ in 0..7 {
            let (_, m) = next_message(&mut ev).await;
            assert_eq!(m.seq, seq + 1, "per-lane seqs have no gaps");
            seq = m.seq;
            rest.push(m.payload["n"].as_u64().unwrap());
        }
        let all: Vec<u64> = got.iter().chain(&rest).copied().collect();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        // Nothing more is pending: the next thing is a new message, not a duplicate.
        ws.send_data(Lane::Messaging, &json!({"n": "new"}), None)
            .await;
        let (_, m) = next_message(&mut ev).await;
        assert_eq!(m.payload, json!({"n": "new"}));
        got.clear();
        got.extend(0..3);
    }
    // The same id as a query parameter works too (for a new EventSource).
    let q = format!("{lane2}?lastEventId={last_id}");
    let (resp, ()) = open(&server, &q, None).await;
    let mut ev = events(resp);
    assert_eq!(next_message(&mut ev).await.1.payload, json!({"n": 3}));
}

#[tokio::test]
async fn an_overflowed_history_reports_a_discontinuity() {
    let server = TestServer::start(Config {
        sse_history: 3,
        ..config()
    })
    .await;
    let (mut ws, sid) = room_pair(&server).await;
    let lane2 = format!("/api/protocol/v2/session/{sid}/lane/2/stream");
    send_numbered(&mut ws, 0, 1).await;
    let (resp, ()) = open(&server, &lane2, None).await;
    let mut ev = events(resp);
    let (e, _) = next_message(&mut ev).await;
    drop(ev);
    send_numbered(&mut ws, 1, 9).await; // 9 more; the lane keeps the last 3
    let (resp, ()) = open(&server, &lane2, Some(&e.id)).await;
    let mut ev = events(resp);
    let d = next(&mut ev).await;
    assert_eq!(d.event, "discontinuity");
    let d = parse_discontinuity(&d.data).unwrap();
    assert_eq!((d.lane, d.seq), (2, 8));
    assert_eq!(d.last_event_id.to_string(), e.id);
    assert_eq!(d.reason, "history-lost");
    for n in 7..10 {
        let (_, m) = next_message(&mut ev).await;
        assert_eq!(m.payload, json!({"n": n}));
    }
    // An id this session never sent: a discontinuity, then only new messages.
    let (resp, ()) = open(&server, &lane2, Some("999999")).await;
    let mut ev = events(resp);
    let d = parse_discontinuity(&next(&mut ev).await.data).unwrap();
    assert_eq!(d.reason, "unknown-event-id");
    send_numbered(&mut ws, 100, 1).await;
    assert_eq!(next_message(&mut ev).await.1.payload, json!({"n": 100}));
}

#[tokio::test]
async fn idle_streams_get_keep_alive_comments_and_admin_close_ends_them() {
    let server = TestServer::start(Config {
        sse_keepalive_ms: 50,
        ..config()
    })
    .await;
    let hs = sse_handshake(&server, "a", &[1, 2]).await;
    let (resp, ()) = open(&server, &hs.lanes[0].url, None).await;
    let mut bytes = resp.bytes_stream();
    let mut text = String::new();
    while !text.contains("\n:") {
        let chunk = timeout(WAIT, bytes.next()).await.unwrap().unwrap().unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(
        text.starts_with("retry: 1000\nevent: lane-1\ndata: {"),
        "{text}"
    );
    let closed: Value = server
        .http
        .post(server.url("/api/admin/sse/close"))
        .bearer_auth(common::ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(closed["closed"], 1);
    // The stream ends (keep-alive comments may still be in flight before it).
    let end = timeout(WAIT, async {
        while let Some(chunk) = bytes.next().await {
            if chunk.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the stream ended");
}

#[tokio::test]
async fn post_and_stream_errors_are_json_with_codes() {
    let server = TestServer::start(Config {
        max_frame_bytes: 1024,
        ..config()
    })
    .await;
    let hs = sse_handshake(&server, "a", &[1, 2]).await;
    let sid = hs.session_id.to_string();
    let unknown = "00000000-0000-4000-8000-000000000000";
    assert_error(
        post_json(&server, unknown, 2, &json!(1)).await,
        401,
        "unauthorized",
    )
    .await;
    assert_error(
        post_json(&server, &sid, 5, &json!(1)).await,
        400,
        "lane_not_negotiated",
    )
    .await;
    assert_error(
        post_json(&server, &sid, 9, &json!(1)).await,
        400,
        "unknown_lane",
    )
    .await;
    assert_error(
        post(&server, &sid, 2, "application/json", "{nope").await,
        400,
        "bad_payload",
    )
    .await;
    assert_error(
        post(&server, &sid, 2, "text/plain", "hi").await,
        415,
        "bad_request",
    )
    .await;
    assert_error(
        post(&server, &sid, 2, "application/json", vec![b' '; 2000]).await,
        413,
        "frame_too_large",
    )
    .await;
    assert_error(
        post_json(&server, &sid, 2, &json!(1)).await,
        400,
        "not_in_room",
    )
    .await;
    let to = format!("/api/protocol/v2/session/{sid}/lane/2?to={unknown}");
    let r = server
        .session(reqwest::Method::POST, &to)
        .await
        .header("content-type", "application/json")
        .body("1")
        .send()
        .await
        .unwrap();
    // Issue 12: `to` names members of the sender's room only, and an id that names nobody
    // gets the same answer as one in another room.
    assert_error(r, 403, "forbidden").await;
    assert_error(
        post_json(&server, &sid, 1, &json!({"type": "welcome"})).await,
        400,
        "bad_control",
    )
    .await;
    assert_error(
        post_json(&server, &sid, 1, &json!({"type": "join", "room": ""})).await,
        400,
        "invalid_argument",
    )
    .await;
    assert_error(
        post_json(&server, &sid, 1, &json!({"type": "leave", "room": "x"})).await,
        400,
        "not_in_room",
    )
    .await;

    let srv = &server;
    let get =
        |path: String| async move { srv.session(reqwest::Method::GET, &path).await.send().await };
    assert_error(
        get(format!("/api/protocol/v2/session/{unknown}/stream"))
            .await
            .unwrap(),
        401,
        "unauthorized",
    )
    .await;
    assert_error(
        get(format!("/api/protocol/v2/session/{sid}/stream?lanes=1,7"))
            .await
            .unwrap(),
        400,
        "lane_not_negotiated",
    )
    .await;
    assert_error(
        get(format!("/api/protocol/v2/session/{sid}/lane/3/stream"))
            .await
            .unwrap(),
        400,
        "lane_not_negotiated",
    )
    .await;
    assert_error(
        get(format!(
            "/api/protocol/v2/session/{sid}/stream?lastEventId=x"
        ))
        .await
        .unwrap(),
        400,
        "bad_request",
    )
    .await;
    // Deleting the session ends its stream.
    let (resp, ()) = open(&server, &hs.lanes[0].url, None).await;
    let mut ev = events(resp);
    next_message(&mut ev).await;
    let r = server
        .session(
            reqwest::Method::DELETE,
            &format!("/api/protocol/v2/session/{sid}"),
        )
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(
        timeout(WAIT, ev.next()).await.unwrap().is_none(),
        "stream ended"
    );
}

#[tokio::test]
async fn a_full_receiver_queue_answers_503_backpressure() {
    let server = TestServer::start(Config {
        // Room for the `joined` + `room-key` burst a joiner gets, not for a second blob.
        queue_frames: 2,
        queue_bytes: 4096,
        ..config()
    })
    .await;
    let (_ws, sid) = room_pair(&server).await; // the WebSocket peer never reads
    let big = json!({"blob": "x".repeat(256 << 10)}).to_string();
    let mut refused = None;
    for _ in 0..2000 {
        let r = post(&server, &sid, 2, "application/json", big.clone()).await;
        if r.status() != 202 {
            refused = Some(r);
            break;
        }
    }
    let r = refused.expect("the receiver's queue fills up");
    assert_eq!(r.headers()["retry-after"], "1");
    assert_error(r, 503, "backpressure").await;
}

#[tokio::test]
async fn a_session_with_an_open_stream_does_not_expire() {
    let server = TestServer::start(Config {
        session_ttl_s: 1,
        ..config()
    })
    .await;
    let hs = sse_handshake(&server, "a", &[1, 2]).await;
    let srv = &server;
    let status = |sid: String| async move {
        srv.session(
            reqwest::Method::GET,
            &format!("/api/protocol/v2/session/{sid}"),
        )
        .await
        .send()
        .await
        .unwrap()
        .status()
    };
    let (resp, ()) = open(&server, &hs.lanes[0].url, None).await;
    let mut ev = events(resp);
    next_message(&mut ev).await;
    // Three TTLs with the stream open: still there.
    tokio::time::sleep(std::time::Duration::from_millis(3000)).await;
    assert_eq!(status(hs.session_id.to_string()).await, 200);
    // Once the stream is gone the TTL runs again: the session expires and the stream ends.
    drop(ev);
    let gone = timeout(std::time::Duration::from_secs(10), async {
        while status(hs.session_id.to_string()).await != 401 {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "the session expired after its stream closed");
}

/// `POST` with `P3-Seq` (PROTOCOL.md §14.6).
async fn post_seq(
    server: &TestServer,
    sid: &str,
    lane: u8,
    seq: &str,
    body: &str,
) -> reqwest::Response {
    server
        .session(
            reqwest::Method::POST,
            &format!("/api/protocol/v2/session/{sid}/lane/{lane}"),
        )
        .await
        .header("content-type", "application/json")
        .header("p3-seq", seq)
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_replayed_post_is_delivered_once() {
    let server = TestServer::start(config()).await;
    let (mut ws, sid) = room_pair(&server).await;
    // The answer of the first request is "lost": the client sends it again, same number.
    for _ in 0..3 {
        let r = post_seq(&server, &sid, 2, "1", r#"{"n":1}"#).await;
        assert_eq!(r.status(), 202);
    }
    let r = post_seq(&server, &sid, 2, "2", r#"{"n":2}"#).await;
    assert_eq!(r.status(), 202);
    // An old duplicate is answered 202 and delivers nothing.
    assert_eq!(
        post_seq(&server, &sid, 2, "1", r#"{"n":1}"#).await.status(),
        202
    );
    // Numbers are per lane: lane 5 is not negotiated here, lane 1 starts at 1 too.
    let r = post_seq(&server, &sid, 1, "1", r#"{"type":"ping","clientTime":1}"#).await;
    assert_eq!(r.status(), 202);
    let r = post_seq(&server, &sid, 2, "3", r#"{"n":3}"#).await;
    assert_eq!(r.status(), 202);
    for n in 1..=3 {
        let (h, v) = ws.expect_data().await;
        assert_eq!(h.lane, Lane::Messaging);
        assert_eq!(v, json!({"n": n}), "each message once, in order");
    }

    // A gap names the next number; another message under the last number is refused.
    let r = post_seq(&server, &sid, 2, "5", r#"{"n":5}"#).await;
    assert_eq!(r.headers()["p3-seq-expected"], "4");
    assert_error(r, 409, "seq_gap").await;
    let r = post_seq(&server, &sid, 2, "3", r#"{"n":"other"}"#).await;
    assert_error(r, 422, "seq_reused").await;
    for bad in ["0", "x", "-1", "1.5", "9999999999999999"] {
        assert_error(
            post_seq(&server, &sid, 2, bad, "1").await,
            400,
            "bad_request",
        )
        .await;
    }
    // A refusal takes its number and is repeated as is.
    let r = post_seq(&server, &sid, 2, "4", "{not json").await;
    assert_error(r, 400, "bad_payload").await;
    let r = post_seq(&server, &sid, 2, "4", "{not json").await;
    assert_error(r, 400, "bad_payload").await;
    let r = post_seq(&server, &sid, 2, "5", r#"{"n":5}"#).await;
    assert_eq!(r.status(), 202);
    assert_eq!(ws.expect_data().await.1, json!({"n": 5}));
}

#[tokio::test]
async fn a_retried_backpressure_post_reaches_the_full_receiver_once() {
    let server = TestServer::start(Config {
        queue_frames: 2,
        queue_bytes: 4096,
        sse_history_bytes: 64 << 20,
        ..config()
    })
    .await;
    let (mut ws, sid) = room_pair(&server).await; // the WebSocket peer does not read yet
                                                  // The receiver also keeps SSE history (§14.5): its history must get each message once too.
    let history = format!("/api/protocol/v2/session/{}/lane/2/stream", ws.sid());
    drop(open(&server, &history, None).await);
    let blob = "x".repeat(256 << 10);
    let body = |n: u64| json!({"n": n, "blob": blob}).to_string();
    let mut refused_at = None;
    for n in 1..=2000u64 {
        let r = post_seq(&server, &sid, 2, &n.to_string(), &body(n)).await;
        if r.status() != 202 {
            assert_eq!(r.headers()["retry-after"], "1");
            assert_error(r, 503, "backpressure").await;
            refused_at = Some(n);
            break;
        }
    }
    let k = refused_at.expect("the receiver's queue fills up");
    // The receiver drains its queue, then the sender retries k with the same number.
    for n in 1..k {
        assert_eq!(ws.expect_data().await.1["n"], n);
    }
    let r = post_seq(&server, &sid, 2, &k.to_string(), &body(k)).await;
    assert_eq!(r.status(), 202);
    let r = post_seq(&server, &sid, 2, &k.to_string(), &body(k)).await;
    assert_eq!(r.status(), 202, "a repeat of the completed retry");
    let r = post_seq(&server, &sid, 2, &(k + 1).to_string(), &body(k + 1)).await;
    assert_eq!(r.status(), 202);
    assert_eq!(ws.expect_data().await.1["n"], k, "k once");
    assert_eq!(ws.expect_data().await.1["n"], k + 1);
    let (resp, ()) = open(&server, &history, None).await;
    let mut ev = events(resp);
    for n in 1..=k + 1 {
        let (_, m) = next_message(&mut ev).await;
        assert_eq!(
            (m.seq, &m.payload["n"]),
            (n, &json!(n)),
            "history: each once"
        );
    }
}

/// Issue 11 "silent drops": a member that joined with a `POST` and opened nothing (no socket,
/// no stream) used to be skipped by every room relay (and its own `joined` went nowhere). It
/// now gets an SSE history at its join, so what the room sends it waits there: a stream opened
/// later reads `joined` and the relayed message.
#[tokio::test]
async fn a_member_that_joined_by_post_and_opened_nothing_still_gets_the_room() {
    let server = TestServer::start(config()).await;
    let (mut a, _b) = common::pair(&server, "room").await;
    // A websocket-transport session that never opens its socket.
    let quiet = server.handshake("quiet", &["json"], &[1, 2]).await;
    let sid = quiet.session_id.to_string();
    let joined = post_json(&server, &sid, 1, &json!({"type": "join", "room": "room"})).await;
    assert_eq!(joined.status(), 202);
    assert!(matches!(
        a.expect_control().await,
        Control::PeerJoined { .. }
    ));
    a.send_data(Lane::Messaging, &json!({"text": "hello"}), None)
        .await;
    // `a` hears of nobody refusing: a ping round trip after the relay.
    a.ping_pong().await;

    let (resp, ()) = open(
        &server,
        &format!("/api/protocol/v2/session/{sid}/stream?lanes=1,2"),
        None,
    )
    .await;
    let mut ev = events(resp);
    let (_, welcome) = next_message(&mut ev).await;
    assert_eq!(welcome.payload["type"], "welcome");
    let mut texts = Vec::new();
    for _ in 0..4 {
        let (_, m) = next_message(&mut ev).await;
        if m.lane == 2 {
            assert_eq!(m.from, Some(a.sid()));
            texts.push(m.payload["text"].clone());
            break;
        }
        texts.push(m.payload["type"].clone());
    }
    assert_eq!(
        texts,
        [json!("joined"), json!("room-key"), json!("hello")],
        "the history kept what the room sent"
    );
}

/// §2: a lane message's body is a payload like a WebSocket frame's, so malformed JSON `POST`ed
/// to a lane is 400 `bad_payload` (lane 1 and data lanes alike), the code a WebSocket frame
/// with the same payload gets (`tests/ws_errors.rs`); a malformed request document (the
/// handshake) is 400 `bad_request`.
#[tokio::test]
async fn malformed_json_posted_to_a_lane_is_bad_payload_and_a_bad_handshake_bad_request() {
    let server = TestServer::start(config()).await;
    let hs = sse_handshake(&server, "poster", &[1, 2]).await;
    let sid = hs.session_id.to_string();
    for lane in [1, 2] {
        assert_error(
            post(&server, &sid, lane, "application/json", "{\"type\": ").await,
            400,
            "bad_payload",
        )
        .await;
    }
    let resp = server
        .http
        .post(server.url("/api/protocol/v2/session/handshake"))
        .header("content-type", "application/json")
        .body("{\"clientId\": ")
        .send()
        .await
        .unwrap();
    assert_error(resp, 400, "bad_request").await;
}

/// Seed 000's own handshake (`transports: ["http1", "http3"]`, its encodings and lanes) is
/// granted `http1`: the seed's name for the HTTP/1.1 transport, i.e. lane streams at the
/// seed's per-lane `url` plus `POST`. `http3` is declined (not offered by this server).
#[tokio::test]
async fn the_seeds_own_handshake_is_granted_http1_with_per_lane_streams() {
    let server = TestServer::start(config()).await;
    let resp = server
        .handshake_raw(&json!({
            "clientId": "device-123",
            "wallet": "0x...",
            "capabilities": {
                "transports": ["http1", "http3"],
                "encodings": ["protobuf", "msgpack", "json"],
                "lanes": [1, 2, 3, 4]
            },
            "deviceInfo": {"platform": "web", "version": "1.0.0"}
        }))
        .await;
    assert_eq!(resp.status(), 200);
    let hs: HandshakeResponse = resp.json().await.unwrap();
    server.remember(&hs);
    assert_eq!(hs.transport, "http1");
    let sid = hs.session_id.to_string();
    for l in &hs.lanes {
        assert_eq!(l.encoding, Encoding::Json, "an event stream is text");
        assert_eq!(
            l.url,
            format!("/api/protocol/v2/session/{sid}/lane/{}/stream", l.id),
            "the seed's per-lane url"
        );
    }
    assert!(
        !hs.protocol.features.iter().any(|f| f == "mux"),
        "no multiplexer over HTTP/1.1 streams"
    );
    // The lane stream works, and a POST on lane 2 reaches a WebSocket member of the room.
    let (resp, ()) = open(&server, &hs.lanes[0].url, None).await;
    let mut ev = events(resp);
    let (_, welcome) = next_message(&mut ev).await;
    assert_eq!(welcome.lane, 1);
    let ws_hs = server.handshake("ws", &["msgpack"], &[1, 2]).await;
    let mut ws = server.connect(&ws_hs).await;
    ws.join("seed").await;
    let joined = post_json(&server, &sid, 1, &json!({"type": "join", "room": "seed"})).await;
    assert_eq!(joined.status(), 202);
    let sent = post_json(&server, &sid, 2, &json!({"msg": "hello"})).await;
    assert_eq!(sent.status(), 202);
    loop {
        match ws.recv().await {
            common::Received::Data(h, v) => {
                assert_eq!((h.lane, v), (Lane::Messaging, json!({"msg": "hello"})));
                break;
            }
            common::Received::Control(..) => {}
            other => panic!("{other:?}"),
        }
    }
    // Only http3 (which this server declines): no common transport.
    let resp = server
        .handshake_raw(&json!({
            "clientId": "h3",
            "capabilities": {"transports": ["http3"], "encodings": ["json"], "lanes": [1]}
        }))
        .await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "no_common_transport");
}
