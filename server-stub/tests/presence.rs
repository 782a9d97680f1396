//! Room presence (PROTOCOL.md §6.2; seed 001 `presence:update {status, lastSeen}`), over real
//! WebSockets: granted only when the handshake asks for it; a joiner hears every member with
//! its join time; members hear joins (`online`) and leaves (`offline`, `lastSeen` the leave).

mod common;

use common::{handshake_body, Peer, TestServer};
use p3_lanes::core::control::{Control, PresenceStatus};
use p3_lanes::core::frame::SessionId;
use p3_lanes::core::handshake::{HandshakeResponse, FEATURE_PRESENCE};
use server_stub::now_ms;
use std::time::Duration;

/// A session that asks for presence (`presence`) or not, connected.
async fn member(server: &TestServer, name: &str, presence: bool) -> (Peer, HandshakeResponse) {
    let mut body = handshake_body(name, &["msgpack", "json"], &[1, 2]);
    if presence {
        body["features"] = serde_json::json!([FEATURE_PRESENCE]);
    }
    let resp = server.handshake_raw(&body).await;
    assert_eq!(resp.status(), 200);
    let hs: HandshakeResponse = resp.json().await.unwrap();
    server.remember(&hs);
    (server.connect(&hs).await, hs)
}

/// The next Control message, which must be a `presence`: `(room, member, status, since,
/// lastSeen)`.
async fn presence(p: &mut Peer) -> (String, SessionId, PresenceStatus, u64, u64) {
    match p.expect_control().await {
        Control::Presence {
            room,
            session_id,
            status,
            since,
            last_seen,
        } => (room, session_id, status, since, last_seen),
        other => panic!("expected presence, got {other:?}"),
    }
}

#[tokio::test]
async fn members_hear_who_is_in_the_room_and_since_when() {
    let server = TestServer::start(common::config()).await;
    let (mut a, hs_a) = member(&server, "a", true).await;
    assert!(hs_a.grants(FEATURE_PRESENCE), "asked for: granted");

    let t0 = now_ms();
    a.join("lobby").await;
    let (room, who, status, since_a, seen) = presence(&mut a).await;
    assert_eq!(
        (room.as_str(), who, status),
        ("lobby", a.sid(), PresenceStatus::Online)
    );
    assert!(
        since_a >= t0 && since_a <= now_ms(),
        "since is the join time"
    );
    assert!(seen <= now_ms());

    tokio::time::sleep(Duration::from_millis(20)).await;
    let (mut b, _) = member(&server, "b", true).await;
    b.join("lobby").await;
    // The joiner hears every member, itself included, in join order.
    let first = presence(&mut b).await;
    assert_eq!(
        (first.1, first.2, first.3),
        (a.sid(), PresenceStatus::Online, since_a)
    );
    let second = presence(&mut b).await;
    assert_eq!((second.1, second.2), (b.sid(), PresenceStatus::Online));
    assert!(second.3 > since_a, "b joined after a");
    // A member hears the join after `peer-joined`.
    assert!(
        matches!(a.expect_control().await, Control::PeerJoined { session_id, .. } if session_id == b.sid())
    );
    let joined = presence(&mut a).await;
    assert_eq!(
        (joined.1, joined.2, joined.3),
        (b.sid(), PresenceStatus::Online, second.3)
    );

    // A leave: `offline` with the join time kept and `lastSeen` the leave.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let before_leave = now_ms();
    b.send_control(&Control::Leave {
        room: "lobby".into(),
    })
    .await;
    assert!(
        matches!(a.expect_control().await, Control::PeerLeft { session_id, .. } if session_id == b.sid())
    );
    assert!(matches!(a.expect_control().await, Control::RoomKey { .. }));
    let left = presence(&mut a).await;
    assert_eq!(
        (left.1, left.2, left.3),
        (b.sid(), PresenceStatus::Offline, second.3)
    );
    assert!(left.4 >= before_leave, "lastSeen is when it left");
}

#[tokio::test]
async fn only_sessions_that_ask_hear_presence() {
    let server = TestServer::start(common::config()).await;
    let (mut a, _) = member(&server, "a", true).await;
    let (mut c, hs_c) = member(&server, "c", false).await;
    assert!(!hs_c.grants(FEATURE_PRESENCE), "not asked for: not granted");
    a.join("lobby").await;
    presence(&mut a).await;
    c.join("lobby").await;
    // `a` asked: it hears `c`. `c` did not: nothing follows its `room-key`.
    assert!(matches!(
        a.expect_control().await,
        Control::PeerJoined { .. }
    ));
    let (_, who, status, ..) = presence(&mut a).await;
    assert_eq!((who, status), (c.sid(), PresenceStatus::Online));
    a.send_control(&Control::Leave {
        room: "lobby".into(),
    })
    .await;
    match c.expect_control().await {
        Control::PeerLeft { session_id, .. } => assert_eq!(session_id, a.sid()),
        other => panic!("expected peer-left, got {other:?}"),
    }
    assert!(matches!(c.expect_control().await, Control::RoomKey { .. }));
    assert!(
        c.recv_within(Duration::from_millis(300)).await.is_none(),
        "a session that did not ask gets no presence"
    );
}

#[tokio::test]
async fn last_seen_follows_activity_and_a_closed_socket_goes_offline() {
    let server = TestServer::start(common::config()).await;
    let (mut a, _) = member(&server, "a", true).await;
    let (mut b, _) = member(&server, "b", false).await;
    a.join("lobby").await;
    presence(&mut a).await;
    b.join("lobby").await;
    assert!(matches!(
        a.expect_control().await,
        Control::PeerJoined { .. }
    ));
    let (_, _, _, since_b, seen_b) = presence(&mut a).await;

    // `b` speaks later: a joiner after that hears the later `lastSeen`.
    tokio::time::sleep(Duration::from_millis(30)).await;
    let before_send = now_ms();
    b.send_data(
        p3_lanes::core::lane::Lane::Messaging,
        &serde_json::json!({"hi": 1}),
        None,
    )
    .await;
    a.expect_data().await;
    let (mut c, _) = member(&server, "c", true).await;
    c.join("lobby").await;
    let heard: Vec<_> = [
        presence(&mut c).await,
        presence(&mut c).await,
        presence(&mut c).await,
    ]
    .into_iter()
    .map(|(_, who, status, since, seen)| (who, status, since, seen))
    .collect();
    let (who, status, since, seen) = heard[1];
    assert_eq!(
        (who, status, since),
        (b.sid(), PresenceStatus::Online, since_b)
    );
    assert!(
        seen >= before_send && seen > seen_b,
        "lastSeen {seen} is b's message (sent at {before_send}), not its join ({seen_b})"
    );
    assert_eq!(heard[2].0, c.sid());

    assert!(matches!(
        a.expect_control().await,
        Control::PeerJoined { session_id, .. } if session_id == c.sid()
    ));
    assert_eq!(presence(&mut a).await.1, c.sid());

    // A v1 socket closing leaves the room: `offline` after `peer-left` and the new key.
    let b_sid = b.sid();
    drop(b);
    a.expect_peer_left("lobby", b_sid).await;
    let (_, who, status, since, seen) = presence(&mut a).await;
    assert_eq!(
        (who, status, since),
        (b_sid, PresenceStatus::Offline, since_b)
    );
    assert!(seen >= before_send, "lastSeen is when it left");
}
