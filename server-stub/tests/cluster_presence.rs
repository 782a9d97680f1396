//! Room presence across nodes (PROTOCOL.md §6.2, §17; issue 14): two in-process server-stub
//! nodes on a real `redis-server`. A joiner's presence snapshot lists the members held by
//! every node, with the join time and last activity kept in Redis; `online` and `offline`
//! reach presence listeners on every node, once, after `peer-joined` / `peer-left`.
//!
//! Without `redis-server` on the PATH these tests say so and pass.

mod common;

use common::cluster::{redis, Redis};
use common::{handshake_body, Peer, Received, TestServer};
use p3_lanes::core::control::{Control, PresenceStatus};
use p3_lanes::core::frame::SessionId;
use p3_lanes::core::handshake::{HandshakeResponse, FEATURE_PRESENCE};
use p3_lanes::core::lane::Lane;
use server_stub::now_ms;
use std::time::Duration;

/// Two nodes on `redis` whose keep-alive (which stores held sessions' last activity in
/// Redis) runs every second: a 4 s session TTL gives a 1 s sweep period.
async fn two_nodes(redis: &Redis) -> Vec<TestServer> {
    let mut out = Vec::new();
    for i in 0..2 {
        let url = redis.url.clone();
        out.push(
            TestServer::start_with(|c| {
                c.redis_url = Some(url);
                c.node_id = Some(format!("node{i}"));
                c.session_ttl_s = 4;
            })
            .await,
        );
    }
    out
}

/// A connected session of `server` that asks for presence.
async fn member(server: &TestServer, name: &str) -> Peer {
    let mut body = handshake_body(name, &["msgpack", "json"], &[1, 2]);
    body["features"] = serde_json::json!([FEATURE_PRESENCE]);
    let resp = server.handshake_raw(&body).await;
    assert_eq!(resp.status(), 200);
    let hs: HandshakeResponse = resp.json().await.unwrap();
    assert!(hs.grants(FEATURE_PRESENCE));
    server.remember(&hs);
    server.connect(&hs).await
}

/// The next Control message, which must be a `presence`: `(member, status, since, lastSeen)`.
/// The next presence message, skipping room keys: a leave rotates the room's key, which
/// members on the leaver's node get one Redis round trip later (PROTOCOL.md §17 "Room
/// keys"), so it may come before or after the presence.
async fn presence(p: &mut Peer) -> (SessionId, PresenceStatus, u64, u64) {
    let mut control = p.expect_control().await;
    while matches!(control, Control::RoomKey { .. }) {
        control = p.expect_control().await;
    }
    match control {
        Control::Presence {
            room,
            session_id,
            status,
            since,
            last_seen,
        } => {
            assert_eq!(room, "lobby");
            (session_id, status, since, last_seen)
        }
        other => panic!("expected presence, got {other:?}"),
    }
}

async fn expect_peer_joined(p: &mut Peer, who: SessionId) {
    match p.expect_control().await {
        Control::PeerJoined { session_id, .. } => assert_eq!(session_id, who),
        other => panic!("expected peer-joined, got {other:?}"),
    }
}

/// `a` on node0, `b` and `c` on node1. Each joiner's snapshot lists every member in join
/// order, whichever node holds it, with its join time; `a`'s `lastSeen` on node1 is its
/// last message on node0 (as stored in Redis by node0's keep-alive); `a` hears `b` and `c`
/// join and `b` leave, `online` / `offline` after `peer-joined` / `peer-left`, once. With
/// presence per node, `b`'s snapshot misses `a` and `a` hears no presence from node1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_spans_nodes() {
    let Some(redis) = redis().await else { return };
    let n = two_nodes(&redis).await;
    let mut a = member(&n[0], "a").await;
    let mut b = member(&n[1], "b").await;
    let mut c = member(&n[1], "c").await;

    a.join("lobby").await;
    let (who, status, since_a, _) = presence(&mut a).await;
    assert_eq!((who, status), (a.sid(), PresenceStatus::Online));

    tokio::time::sleep(Duration::from_millis(20)).await;
    b.join("lobby").await;
    let first = presence(&mut b).await;
    assert_eq!(
        (first.0, first.1, first.2),
        (a.sid(), PresenceStatus::Online, since_a),
        "b's snapshot lists a (node0) with its join time"
    );
    assert!(first.3 >= since_a, "lastSeen is not before the join");
    let (who, status, since_b, _) = presence(&mut b).await;
    assert_eq!((who, status), (b.sid(), PresenceStatus::Online));
    assert!(since_b > since_a, "b joined after a");
    // a (node0) hears b's join after peer-joined, with b's join time.
    expect_peer_joined(&mut a, b.sid()).await;
    let (who, status, since, seen) = presence(&mut a).await;
    assert_eq!(
        (who, status, since),
        (b.sid(), PresenceStatus::Online, since_b)
    );
    assert!(seen >= since_b);

    // a speaks; node0's keep-alive stores its last activity in Redis.
    tokio::time::sleep(Duration::from_millis(30)).await;
    let before_send = now_ms();
    a.send_data(Lane::Messaging, &serde_json::json!({"hi": 1}), None)
        .await;
    b.expect_data().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.join("lobby").await;
    let heard = [
        presence(&mut c).await,
        presence(&mut c).await,
        presence(&mut c).await,
    ];
    let order: Vec<SessionId> = heard.iter().map(|h| h.0).collect();
    assert_eq!(order, vec![a.sid(), b.sid(), c.sid()], "join order");
    assert_eq!(heard[0].2, since_a);
    assert!(
        heard[0].3 >= before_send,
        "a's lastSeen {} is its message (sent at {before_send}), from Redis",
        heard[0].3
    );
    assert_eq!(heard[1].2, since_b);
    let since_c = heard[2].2;
    for p in [&mut a, &mut b] {
        expect_peer_joined(p, c.sid()).await;
        let (who, status, since, _) = presence(p).await;
        assert_eq!(
            (who, status, since),
            (c.sid(), PresenceStatus::Online, since_c)
        );
    }

    // b leaves: offline on both nodes, with b's join time and the leave as lastSeen.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let before_leave = now_ms();
    let b_sid = b.sid();
    b.send_control(&Control::Leave {
        room: "lobby".into(),
    })
    .await;
    match c.expect_control().await {
        Control::PeerLeft { session_id, .. } => assert_eq!(session_id, b_sid),
        other => panic!("expected peer-left, got {other:?}"),
    }
    let left = presence(&mut c).await;
    assert_eq!(
        (left.0, left.1, left.2),
        (b_sid, PresenceStatus::Offline, since_b)
    );
    assert!(left.3 >= before_leave);
    match a.expect_control().await {
        Control::PeerLeft { session_id, .. } => assert_eq!(session_id, b_sid),
        other => panic!("expected peer-left, got {other:?}"),
    }
    let left = presence(&mut a).await;
    assert_eq!(
        (left.0, left.1, left.2),
        (b_sid, PresenceStatus::Offline, since_b)
    );
    assert!(left.3 >= before_leave, "lastSeen is when b left");
    // Each change once: nothing more but the rotated room key.
    while let Some(r) = a.recv_within(Duration::from_millis(300)).await {
        assert!(
            matches!(r, Received::Control(_, Control::RoomKey { .. })),
            "each change once, got {r:?}"
        );
    }
}
