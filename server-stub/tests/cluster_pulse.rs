//! Pulse across nodes (PROTOCOL.md §18; issue 14): the Redis figures of `GET /metrics` and
//! every node's `metrics` on every node's pulse stream, with in-process nodes on a real
//! `redis-server`.
//!
//! Without `redis-server` on the PATH these tests say so and pass.

mod common;

use common::cluster::{nodes, redis, Redis};
use common::{TestServer, ADMIN_TOKEN, WAIT};
use futures::{SinkExt, StreamExt};
use p3_lanes::core::lane::Lane;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

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
    resp.text().await.unwrap()
}

/// The value of `series` in a scrape, if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Scrapes `server` until `series` satisfies `ok` (within [`WAIT`] × 2); its value.
async fn until(server: &TestServer, series: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + WAIT * 2;
    loop {
        let text = scrape(server).await;
        match value(&text, series) {
            Some(v) if ok(v) => return v,
            last if Instant::now() > deadline => {
                panic!("{series} never as expected (last {last:?}):\n{text}")
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Without Redis the Redis series are absent. With it: the `PING` round trip is positive and
/// finite; stream lag is 0 once everything is read, counts entries written but not read (here
/// five entry numbers taken without entries, as a stalled reader sees them), and goes back
/// to 0 when the next entry is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_redis_round_trip_and_stream_lag() {
    let single = TestServer::start(common::config()).await;
    let text = scrape(&single).await;
    for series in [
        "p3_redis_rtt_seconds",
        "p3_room_stream_lag_entries",
        "p3_room_stream_lag_seconds",
    ] {
        assert!(!text.contains(series), "{series} without Redis:\n{text}");
    }

    let Some(redis) = redis().await else { return };
    let n = nodes(&redis, 2).await;
    let rtt = until(&n[1], "p3_redis_rtt_seconds", |v| v > 0.0).await;
    assert!(rtt.is_finite() && rtt < 2.0, "rtt {rtt}");
    let mut a = n[0].peer("a", &[1, 2]).await;
    let mut b = n[1].peer("b", &[1, 2]).await;
    a.join("r").await;
    b.join("r").await;
    a.expect_control().await;
    a.send_data(Lane::Messaging, &json!({"i": 0}), None).await;
    b.expect_data().await;
    until(&n[1], "p3_room_stream_lag_entries", |v| v == 0.0).await;
    until(&n[1], "p3_room_stream_lag_seconds", |v| v == 0.0).await;

    let _: i64 = redis
        .cmd(
            redis::cmd("HINCRBY")
                .arg("p3:room:{r}:meta")
                .arg("n")
                .arg(5),
        )
        .await;
    until(&n[1], "p3_room_stream_lag_entries", |v| v == 5.0).await;
    a.send_data(Lane::Messaging, &json!({"i": 1}), None).await;
    // The gap's discontinuity, then the message.
    b.expect_data().await;
    b.expect_data().await;
    until(&n[1], "p3_room_stream_lag_entries", |v| v == 0.0).await;
    let lag = until(&n[1], "p3_room_stream_lag_seconds", |v| v == 0.0).await;
    assert!(lag.is_finite());
}

/// Two nodes on `redis` broadcasting pulse `metrics` every 100 ms.
async fn pulsing_nodes(redis: &Redis) -> Vec<TestServer> {
    let mut out = Vec::new();
    for i in 0..2 {
        let url = redis.url.clone();
        out.push(
            TestServer::start_with(|c| {
                c.redis_url = Some(url);
                c.node_id = Some(format!("node{i}"));
                c.pulse_interval_ms = 100;
            })
            .await,
        );
    }
    out
}

/// An operator on node0's pulse stream gets node0's `metrics` (its `nodeId` the node's name)
/// and node1's, each with its own figures (node1 holds the one session). With each node
/// broadcasting only to its own connections, node1's never arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_on_one_node_gets_every_nodes_metrics() {
    let Some(redis) = redis().await else { return };
    let n = pulsing_nodes(&redis).await;
    let _b = n[1].peer("b", &[1, 2]).await;
    let mut req = format!("ws://{}/pulse/stream", n[0].addr)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {ADMIN_TOKEN}").parse().unwrap(),
    );
    let (mut ops, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let register = json!({"type": "register", "nodeId": "ops-1", "role": "operator"});
    ops.send(Message::Text(register.to_string().into()))
        .await
        .unwrap();
    let mut heard: Vec<Value> = Vec::new();
    let deadline = Instant::now() + WAIT;
    while !heard.iter().any(|m| m["nodeId"] == "node1") {
        assert!(
            Instant::now() < deadline,
            "node1's metrics never came: {} messages, all node0's",
            heard.len()
        );
        let m = tokio::time::timeout(WAIT, ops.next()).await.unwrap();
        let Some(Ok(Message::Text(t))) = m else {
            continue;
        };
        let v: Value = serde_json::from_str(&t).unwrap();
        if v["type"] == "registered" {
            assert_eq!(v["serverNodeId"], "node0");
        } else {
            assert_eq!(v["type"], "metrics", "{v}");
            heard.push(v);
        }
    }
    let own = heard
        .iter()
        .find(|m| m["nodeId"] == "node0")
        .expect("node0's own");
    let other = heard.iter().find(|m| m["nodeId"] == "node1").unwrap();
    assert_eq!(own["sessions"], 0);
    assert_eq!(other["sessions"], 1);
    assert!(other["redis"]["streamLagEntries"].is_u64(), "{other}");
}
