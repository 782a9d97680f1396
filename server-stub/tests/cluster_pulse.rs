//! Pulse across nodes (PROTOCOL.md §18; issue 14): the Redis figures of `GET /metrics` and
//! every node's `metrics` on every node's pulse stream, with in-process nodes on a real
//! `redis-server`.
//!
//! Without `redis-server` on the PATH these tests say so and pass.

mod common;

use common::cluster::{nodes, redis};
use common::{TestServer, ADMIN_TOKEN, WAIT};
use p3_lanes::core::lane::Lane;
use serde_json::json;
use std::time::{Duration, Instant};

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
