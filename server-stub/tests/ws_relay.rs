//! The session WebSocket over real sockets: welcome, rooms, relay on lanes (room and routed),
//! msgpack/json transcoding, heartbeats (ping/pong), replacement and deletion.

mod common;

use common::{config, pair, Received, TestServer};
use p3_lanes::core::control::Control;
use p3_lanes::core::error::ErrorCode;
use p3_lanes::core::lane::{Encoding, Lane};
use serde_json::{json, Value};
use server_stub::Config;

#[tokio::test]
async fn welcome_is_the_first_frame() {
    let server = TestServer::start(Config {
        heartbeat_interval_ms: 1234,
        heartbeat_timeout_ms: 5678,
        ..config()
    })
    .await;
    let hs = server.handshake("w", &["msgpack"], &[1]).await;
    let before = server_stub::now_ms();
    let mut peer = server.connect_raw(&server.ws_path(&hs).await).await;
    match peer.recv().await {
        Received::Control(
            h,
            Control::Welcome {
                session_id,
                server_time,
                heartbeat_interval_ms,
                heartbeat_timeout_ms,
                app_version,
            },
        ) => {
            assert_eq!(session_id, hs.session_id);
            assert_eq!(app_version.as_deref(), Some("test-1.2.3"));
            assert_eq!((heartbeat_interval_ms, heartbeat_timeout_ms), (1234, 5678));
            assert!(server_time >= before && server_time <= server_stub::now_ms());
            assert_eq!(
                (h.lane, h.seq, h.encoding, h.dict_version),
                (Lane::Control, 1, Encoding::Msgpack, 3)
            );
        }
        other => panic!("expected welcome, got {other:?}"),
    }
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
    assert_eq!(status["connected"], true);
}

#[tokio::test]
async fn room_relays_a_msgpack_dictionary_message_on_lane_2() {
    let server = TestServer::start(config()).await;
    let (mut a, mut b) = pair(&server, "room-1").await;
    let status: Value = server
        .session(
            reqwest::Method::GET,
            &format!("/api/protocol/v2/session/{}", a.sid()),
        )
        .await
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["room"], "room-1");

    let msg = json!({"type": "chat", "content": "hello", "timestamp": 1735689600000u64, "unlisted": [1, -2.5, null]});
    a.send_data(Lane::Messaging, &msg, None).await;
    let (h, value) = b.expect_data().await;
    assert_eq!(value, msg);
    assert_eq!(h.from, Some(a.sid()), "from is the sender");
    assert_eq!(h.to, None);
    assert_eq!(
        (h.lane, h.seq, h.encoding, h.dict_version),
        (Lane::Messaging, 1, Encoding::Msgpack, 3)
    );

    // B → A, and seqs count per receiver and lane.
    b.send_data(Lane::Messaging, &json!({"msg": 1}), None).await;
    b.send_data(Lane::Messaging, &json!({"msg": 2}), None).await;
    for n in 1..=2u64 {
        let (h, value) = a.expect_data().await;
        assert_eq!(
            (h.from, h.seq, value),
            (Some(b.sid()), n, json!({"msg": n}))
        );
    }
    // The sender does not get its own message back.
    a.expect_silence(200).await;
    a.send_data(Lane::Messaging, &json!({"msg": 3}), None).await;
    let (h, _) = b.expect_data().await;
    assert_eq!(h.seq, 2);
}

#[tokio::test]
async fn routed_message_reaches_only_its_target() {
    let server = TestServer::start(config()).await;
    let (mut a, mut b) = pair(&server, "r").await;
    let mut c = server.peer("c", &[1, 2]).await;
    c.join("r").await;
    for p in [&mut a, &mut b] {
        assert!(
            matches!(p.expect_control().await, Control::PeerJoined { session_id, .. } if session_id == c.sid())
        );
    }

    let secret = json!({"type": "webrtc-offer", "sdp": "v=0"});
    a.send_data(Lane::Messaging, &secret, Some(c.sid())).await;
    let (h, value) = c.expect_data().await;
    assert_eq!(
        (h.from, h.to, h.seq, value),
        (Some(a.sid()), None, 1, secret)
    );

    // B's first data frame is the next room message: it never saw the routed one.
    a.send_data(Lane::Messaging, &json!({"msg": "all"}), None)
        .await;
    let (h, value) = b.expect_data().await;
    assert_eq!((h.seq, value), (1, json!({"msg": "all"})));
    let (h, _) = c.expect_data().await;
    assert_eq!(h.seq, 2);

    // Only members of the sender's own room can be addressed (issue 12): never a silent drop.
    let mut d = server.peer("d", &[1, 2]).await;
    d.send_data(Lane::Messaging, &json!({"to": "a"}), Some(a.sid()))
        .await;
    assert_eq!(d.expect_error().await.0, ErrorCode::Forbidden);
    a.expect_silence(200).await;
}

#[tokio::test]
async fn json_and_msgpack_sessions_are_transcoded() {
    let server = TestServer::start(config()).await;
    let hs_json = server.handshake("j", &["json"], &[1, 2, 7]).await;
    let hs_mp = server.handshake("m", &["msgpack"], &[1, 2, 7]).await;
    assert!(hs_json.lanes.iter().all(|l| l.encoding == Encoding::Json));
    assert!(hs_mp.lanes.iter().all(|l| l.encoding == Encoding::Msgpack));
    let mut j = server.connect(&hs_json).await;
    let mut m = server.connect(&hs_mp).await;
    j.join("mix").await;
    m.join("mix").await;
    assert!(matches!(
        j.expect_control().await,
        Control::PeerJoined { .. }
    ));

    // Seed-shaped keys, but not `music-control` itself: that goes to the room's authority
    // (tests/music.rs) instead of being relayed.
    let value = json!({"type": "track-preview", "action": "seek", "data": {"position": 45.2, "trackId": "abc"}, "sequence": 156});
    j.send_data(Lane::Sync, &value, None).await;
    let (h, got) = m.expect_data().await;
    assert_eq!(got, value);
    assert_eq!(
        (h.lane, h.encoding, h.dict_version, h.from),
        (Lane::Sync, Encoding::Msgpack, 3, Some(j.sid()))
    );

    m.send_data(Lane::Sync, &value, None).await;
    let (h, got) = j.expect_data().await;
    assert_eq!(got, value);
    assert_eq!(
        (h.encoding, h.dict_version, h.from),
        (Encoding::Json, 0, Some(m.sid()))
    );
}

#[tokio::test]
async fn leave_and_close_notify_peers() {
    let server = TestServer::start(config()).await;
    let (mut a, mut b) = pair(&server, "room").await;
    let b_sid = b.sid();
    b.send_control(&Control::Leave {
        room: "room".into(),
    })
    .await;
    assert_eq!(
        b.expect_control().await,
        Control::Left {
            room: "room".into()
        }
    );
    a.expect_peer_left("room", b_sid).await;
    // Out of the room, B's room messages are refused.
    let seq = b
        .send_data(Lane::Messaging, &json!({"msg": "x"}), None)
        .await;
    assert_eq!(
        b.expect_error().await,
        (ErrorCode::NotInRoom, Some(2), Some(seq))
    );

    // Joining another room moves B: `left` for the old room, then `joined` for the new one.
    assert_eq!(b.join("room").await, vec![a.sid(), b_sid]);
    assert!(matches!(
        a.expect_control().await,
        Control::PeerJoined { .. }
    ));
    b.send_control(&Control::Join {
        room: "other".into(),
    })
    .await;
    assert_eq!(
        b.expect_control().await,
        Control::Left {
            room: "room".into()
        }
    );
    assert_eq!(
        b.expect_control().await,
        Control::Joined {
            room: "other".into(),
            members: vec![b_sid]
        }
    );
    let other_key = b.expect_room_key("other").await;
    assert_ne!(
        Some(&other_key),
        a.room_key.as_ref(),
        "each room has its own key"
    );
    a.expect_peer_left("room", b_sid).await;

    // Back in the room, then the socket closes: peers hear peer-left.
    b.send_control(&Control::Join {
        room: "room".into(),
    })
    .await;
    assert_eq!(
        b.expect_control().await,
        Control::Left {
            room: "other".into()
        }
    );
    assert!(matches!(b.expect_control().await, Control::Joined { .. }));
    assert_eq!(
        b.expect_room_key("room").await,
        a.room_key.clone().unwrap(),
        "every member of a room gets the same key"
    );
    assert!(matches!(
        a.expect_control().await,
        Control::PeerJoined { .. }
    ));
    b.close().await;
    a.expect_peer_left("room", b_sid).await;
    // The session survives its socket and a new socket starts outside any room.
    let status: Value = server
        .session(
            reqwest::Method::GET,
            &format!("/api/protocol/v2/session/{b_sid}"),
        )
        .await
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (status["connected"].clone(), status["room"].clone()),
        (json!(false), Value::Null)
    );
}

#[tokio::test]
async fn control_messages_ping_and_refusals() {
    let server = TestServer::start(config()).await;
    let mut a = server.peer("a", &[1, 2]).await;
    a.send_control(&Control::Ping {
        client_time: 7.25,
        rtt_ms: None,
    })
    .await;
    match a.expect_control().await {
        Control::Pong {
            client_time,
            server_time,
        } => {
            assert_eq!(client_time, 7.25);
            assert!(server_time.abs_diff(server_stub::now_ms()) < 5_000);
        }
        other => panic!("expected pong, got {other:?}"),
    }
    a.send_control(&Control::Join {
        room: String::new(),
    })
    .await;
    assert_eq!(
        a.expect_error().await,
        (ErrorCode::InvalidArgument, Some(1), Some(2))
    );
    a.send_control(&Control::Join {
        room: "x".repeat(129),
    })
    .await;
    assert_eq!(a.expect_error().await.0, ErrorCode::InvalidArgument);
    a.send_control(&Control::Leave {
        room: "never-joined".into(),
    })
    .await;
    assert_eq!(a.expect_error().await.0, ErrorCode::NotInRoom);
    a.send_control(&Control::Left { room: "x".into() }).await;
    assert_eq!(a.expect_error().await.0, ErrorCode::BadControl);
    a.ping_pong().await;
}

#[tokio::test]
async fn routed_message_errors() {
    let server = TestServer::start(config()).await;
    let mut a = server.peer("a", &[1, 2, 5]).await;
    let mut only_control = server.peer("b", &[1]).await;
    let offline = server.handshake("c", &["msgpack"], &[1, 2]).await;
    a.join("r").await;
    only_control.join("r").await;
    let _ = a.expect_control().await; // peer-joined

    let unknown = "00000000-0000-4000-8000-000000000000".parse().unwrap();
    let seq = a
        .send_data(Lane::Messaging, &json!({"msg": 1}), Some(unknown))
        .await;
    // Not a member of a's room (unknown, or never joined): `forbidden`, alike (issue 12).
    assert_eq!(
        a.expect_error().await,
        (ErrorCode::Forbidden, Some(2), Some(seq))
    );
    let seq = a
        .send_data(
            Lane::Messaging,
            &json!({"msg": 1}),
            Some(offline.session_id),
        )
        .await;
    // Not a member of a's room (unknown, or never joined): `forbidden`, alike (issue 12).
    assert_eq!(
        a.expect_error().await,
        (ErrorCode::Forbidden, Some(2), Some(seq))
    );
    let seq = a
        .send_data(Lane::Data, &json!({"msg": 1}), Some(only_control.sid()))
        .await;
    assert_eq!(
        a.expect_error().await,
        (ErrorCode::LaneNotNegotiated, Some(5), Some(seq))
    );
    a.ping_pong().await;
}

#[tokio::test]
async fn second_socket_replaces_the_first_with_4409() {
    let server = TestServer::start(config()).await;
    let (mut a, mut b) = pair(&server, "room").await;
    let mut b2 = server
        .connect_raw(
            &server
                .owned(&format!("/api/protocol/v2/session/{}/ws", b.sid()))
                .await,
        )
        .await;
    b2.sid = b.sid;
    b2.encodings = b.encodings.clone();
    assert!(
        matches!(b2.expect_control().await, Control::Welcome { session_id, .. } if session_id == b.sid())
    );
    assert_eq!(b.expect_close().await, 4409);
    // The session left its room with the old socket; the new one must re-join.
    a.expect_peer_left("room", b2.sid()).await;
    assert_eq!(b2.join("room").await, vec![a.sid(), b2.sid()]);
    a.send_data(Lane::Messaging, &json!({"msg": "again"}), None)
        .await;
    let (h, v) = b2.expect_data().await;
    assert_eq!(
        (h.seq, v),
        (1, json!({"msg": "again"})),
        "a new socket starts its seqs at 1"
    );
}

#[tokio::test]
async fn delete_closes_the_socket_with_4404_and_notifies_the_room() {
    let server = TestServer::start(config()).await;
    let (mut a, mut b) = pair(&server, "room").await;
    let url = server.url(&format!("/api/protocol/v2/session/{}", b.sid()));
    let resp = server.http.delete(&url).bearer_auth(b.token()).send().await;
    assert_eq!(resp.unwrap().status(), 204);
    assert_eq!(b.expect_close().await, 4404);
    a.expect_peer_left("room", b.sid()).await;
    let seq = a
        .send_data(Lane::Messaging, &json!({"msg": 1}), Some(b.sid()))
        .await;
    // Not a member of a's room (unknown, or never joined): `forbidden`, alike (issue 12).
    assert_eq!(
        a.expect_error().await,
        (ErrorCode::Forbidden, Some(2), Some(seq))
    );
}
