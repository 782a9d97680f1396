//! `GET /metrics` and `/pulse/stream` (issue 14; PROTOCOL.md §18), against a real server:
//! figures follow sessions, rooms and lane traffic; both are admin routes by default; the
//! stream registers nodes, broadcasts `metrics`, rate-limits and bounds each connection.

mod common;

use common::{TestServer, ADMIN_TOKEN};
use futures::{SinkExt, StreamExt};
use p3_lanes::core::lane::Lane;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// `GET /metrics` with the admin token; the body.
async fn scrape(server: &TestServer) -> String {
    let resp = server
        .http
        .get(server.url("/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    resp.text().await.unwrap()
}

/// The value of series `series` (name and labels exactly as rendered) in a scrape.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

#[tokio::test]
async fn metrics_follow_sessions_rooms_and_lane_traffic() {
    let server = TestServer::start(common::config()).await;
    let before = scrape(&server).await;
    assert_eq!(value(&before, "p3_sessions"), 0.0);
    assert_eq!(value(&before, "p3_rooms"), 0.0);
    assert_eq!(
        value(&before, "p3_lane_messages_in_total{lane=\"Messaging\"}"),
        0.0
    );
    assert!(
        before.contains("# TYPE p3_lane_bytes_out_total counter"),
        "{before}"
    );

    let mut a = server.peer("a", &[1, 2]).await;
    let mut b = server.peer("b", &[1, 2]).await;
    a.join("r").await;
    b.join("r").await;
    let mid = scrape(&server).await;
    assert_eq!(value(&mid, "p3_sessions"), 2.0);
    assert_eq!(value(&mid, "p3_rooms"), 1.0);
    assert_eq!(value(&mid, "p3_room_members"), 2.0);
    assert_eq!(value(&mid, "p3_websockets"), 2.0);
    // Two joins were Control frames in.
    assert_eq!(
        value(&mid, "p3_lane_messages_in_total{lane=\"Control\"}"),
        2.0
    );

    for i in 0..3 {
        a.send_data(Lane::Messaging, &json!({"n": i, "text": "hello"}), None)
            .await;
        b.expect_data().await;
    }
    let after = scrape(&server).await;
    let m = |s: &str| value(&after, &format!("{s}{{lane=\"Messaging\"}}"));
    assert_eq!(m("p3_lane_messages_in_total"), 3.0);
    assert_eq!(m("p3_lane_messages_out_total"), 3.0, "one receiver each");
    assert!(m("p3_lane_bytes_in_total") > 3.0 * 10.0, "{after}");
    assert!(m("p3_lane_bytes_out_total") > 3.0 * 10.0, "{after}");
    assert_eq!(
        value(&after, "p3_lane_messages_in_total{lane=\"Voice\"}"),
        0.0
    );

    drop(b);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let gone = scrape(&server).await;
    assert_eq!(
        value(&gone, "p3_room_members"),
        1.0,
        "a v1 socket closing leaves"
    );
    assert_eq!(value(&gone, "p3_websockets"), 1.0);
}

#[tokio::test]
async fn metrics_is_an_admin_route_unless_public() {
    let server = TestServer::start(common::config()).await;
    let none = server.get("/metrics").await;
    assert_eq!(none.status(), 401);
    assert_eq!(none.json::<Value>().await.unwrap()["code"], "unauthorized");
    let proxied = server
        .http
        .get(server.url("/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status(), 403);
    assert_eq!(proxied.json::<Value>().await.unwrap()["code"], "forbidden");

    let public = TestServer::start_with(|c| c.metrics_public = true).await;
    let open = public.get("/metrics").await;
    assert_eq!(open.status(), 200);
    assert!(open.text().await.unwrap().contains("p3_uptime_seconds"));
}

/// Opens `/pulse/stream` with `token` as the Bearer (none: no header).
async fn pulse(server: &TestServer, token: Option<&str>) -> Result<Ws, WsError> {
    let mut req = format!("ws://{}/pulse/stream", server.addr)
        .into_client_request()
        .unwrap();
    if let Some(t) = token {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// The next text message as JSON (failing after [`common::WAIT`]); a close is
/// `{"close": code}`.
async fn next(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(common::WAIT, ws.next())
            .await
            .expect("a pulse message in time");
        match m {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap(),
            Some(Ok(Message::Close(f))) => return json!({"close": f.map(|f| u16::from(f.code))}),
            Some(Ok(_)) => continue,
            None | Some(Err(_)) => return json!({"close": null}),
        }
    }
}

#[tokio::test]
async fn pulse_stream_refuses_without_the_admin_token() {
    let server = TestServer::start(common::config()).await;
    for token in [None, Some("not-the-admin-token-at-all")] {
        match pulse(&server, token).await {
            Err(WsError::Http(resp)) => assert_eq!(resp.status(), 401),
            Err(other) => panic!("expected HTTP 401, got {other}"),
            Ok(_) => panic!("the pulse stream opened without the admin token"),
        }
    }
}

#[tokio::test]
async fn pulse_registers_nodes_and_broadcasts_metrics() {
    let server = TestServer::start_with(|c| c.pulse_interval_ms = 100).await;
    let mut ops = pulse(&server, Some(ADMIN_TOKEN)).await.unwrap();
    let mut node = pulse(&server, Some(ADMIN_TOKEN)).await.unwrap();
    send(
        &mut ops,
        json!({"type": "register", "nodeId": "ops-1", "role": "operator"}),
    )
    .await;
    let reg = next(&mut ops).await;
    assert_eq!(reg["type"], "registered");
    assert_eq!(reg["nodeId"], "ops-1");
    assert_eq!(reg["intervalMs"], 100);
    let server_node = reg["serverNodeId"].as_str().unwrap().to_owned();
    let first = next(&mut ops).await;
    assert_eq!(first["type"], "metrics", "{first}");
    assert_eq!(first["nodeId"], server_node.as_str());
    assert_eq!(first["pulseConnections"], 2);
    assert_eq!(first["lanes"].as_array().unwrap().len(), 8);

    // Another connection may not take the same node id.
    send(
        &mut node,
        json!({"type": "register", "nodeId": "ops-1", "role": "node"}),
    )
    .await;
    let e = next(&mut node).await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some("invalid_argument"))
    );
    send(
        &mut node,
        json!({"type": "register", "nodeId": "edge-2", "role": "node"}),
    )
    .await;
    assert_eq!(next(&mut node).await["type"], "registered");

    // Sessions made now show up in the next broadcasts, to both connections, with both nodes.
    let _a = server.peer("a", &[1, 2]).await;
    for ws in [&mut ops, &mut node] {
        let mut seen = None;
        for _ in 0..20 {
            let m = next(ws).await;
            assert_eq!(m["type"], "metrics", "{m}");
            if m["sessions"] == 1 {
                seen = Some(m);
                break;
            }
        }
        let m = seen.expect("a broadcast with the new session");
        let nodes: Vec<&str> = m["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["nodeId"].as_str().unwrap())
            .collect();
        assert_eq!(nodes, ["ops-1", "edge-2"]);
        assert_eq!(
            m["websockets"], 3,
            "two pulse connections and one session socket"
        );
    }
}

#[tokio::test]
async fn pulse_rate_limits_and_bounds_each_connection() {
    let server = TestServer::start_with(|c| {
        c.rate_pulse = "1/min,burst=4".parse().unwrap();
        c.rate_strikes = 2;
    })
    .await;
    let mut ws = pulse(&server, Some(ADMIN_TOKEN)).await.unwrap();
    // Four messages within the burst: each refused for its own reason, the socket stays.
    ws.send(Message::Text("{not json".into())).await.unwrap();
    assert_eq!(next(&mut ws).await["code"], "bad_request");
    send(&mut ws, json!({"type": "task", "id": 1})).await;
    assert_eq!(next(&mut ws).await["code"], "invalid_argument");
    send(&mut ws, json!({"type": "ping", "pad": "x".repeat(5000)})).await;
    assert_eq!(next(&mut ws).await["code"], "payload_too_large");
    send(&mut ws, json!({"type": "ping", "clientTime": 7.5})).await;
    let pong = next(&mut ws).await;
    assert_eq!(
        (pong["type"].as_str(), pong["clientTime"].as_f64()),
        (Some("pong"), Some(7.5))
    );
    // Past the burst: refused with a wait, not handled; past the strikes: closed 4429.
    for _ in 0..2 {
        send(&mut ws, json!({"type": "ping"})).await;
        let e = next(&mut ws).await;
        assert_eq!(e["code"], "rate_limited", "{e}");
        assert!(e["retryAfterMs"].as_u64().unwrap() > 1000, "{e}");
    }
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(next(&mut ws).await["close"], 4429);
}

#[tokio::test]
async fn pulse_bounds_connections_and_message_size_and_closes_on_shutdown() {
    use server_stub::pulse::stream::{MAX_CONNECTIONS, MAX_TRANSPORT_BYTES};
    let mut server = TestServer::start(common::config()).await;
    let mut open = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        open.push(pulse(&server, Some(ADMIN_TOKEN)).await.unwrap());
    }
    match pulse(&server, Some(ADMIN_TOKEN)).await {
        Err(WsError::Http(resp)) => assert_eq!(resp.status(), 429),
        Err(other) => panic!("expected HTTP 429, got {other}"),
        Ok(_) => panic!("a pulse connection past {MAX_CONNECTIONS}"),
    }
    // A message past the transport bound closes that socket with 1009, and frees its slot.
    let mut big = open.pop().unwrap();
    let text = json!({"type": "ping", "pad": "x".repeat(MAX_TRANSPORT_BYTES)}).to_string();
    big.send(Message::Text(text.into())).await.unwrap();
    assert_eq!(next(&mut big).await["close"], 1009);
    drop(big);
    let mut last = None;
    for _ in 0..50 {
        if let Ok(ws) = pulse(&server, Some(ADMIN_TOKEN)).await {
            last = Some(ws);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut last = last.expect("the closed connection's slot is free again");
    send(
        &mut last,
        json!({"type": "register", "nodeId": "n", "role": "node"}),
    )
    .await;
    assert_eq!(next(&mut last).await["type"], "registered");
    assert_eq!(next(&mut last).await["type"], "metrics");

    let task = server.shutdown();
    assert_eq!(next(&mut last).await["close"], 1001);
    assert_eq!(next(&mut open[0]).await["close"], 1001);
    drop(open);
    drop(last);
    task.await.unwrap().unwrap();
}

/// "Peers connected" (seed 002): sockets authenticated on the signaling server (§13.7), not
/// merely open ones.
#[tokio::test]
async fn metrics_count_signaling_peers_once_authenticated() {
    let server = TestServer::start(common::config()).await;
    let url = format!("ws://{}/api/signaling", server.addr);
    let (mut sig, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let open = scrape(&server).await;
    assert_eq!(value(&open, "p3_websockets"), 1.0);
    assert_eq!(value(&open, "p3_signaling_peers"), 0.0);

    let hs = server.handshake("s", &["json"], &[1]).await;
    let sid = hs.session_id.to_string();
    let token = hs.signaling_token.clone().expect("signalingToken");
    send(
        &mut sig,
        json!({"type": "auth", "address": sid, "signature": token}),
    )
    .await;
    assert_eq!(next(&mut sig).await["type"], "auth_ok");
    assert_eq!(value(&scrape(&server).await, "p3_signaling_peers"), 1.0);
}
