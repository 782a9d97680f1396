//! WebRTC signaling on the Messaging lane (seed 000 "Nexus as P2P signaling", PROTOCOL.md
//! §13.5): routed to the named member of the sender's room only, `from` set by the server and
//! never spoofable, typed errors for every bad target. Real WebSockets against the real app.

mod common;

use common::{config, TestServer};
use p3_lanes::core::control::Control;
use p3_lanes::core::error::ErrorCode;
use p3_lanes::core::frame::SessionId;
use p3_lanes::core::lane::Lane;
use serde_json::json;

#[tokio::test]
async fn signaling_goes_to_the_named_member_with_the_real_sender() {
    let server = TestServer::start(config()).await;
    let mut a = server.peer("a", &[1, 2]).await;
    let mut b = server.peer("b", &[1, 2]).await;
    let mut c = server.peer("c", &[1, 2]).await;
    a.join("call").await;
    b.join("call").await;
    c.join("call").await;
    // a hears b and c join, b hears c.
    for _ in 0..2 {
        assert!(matches!(
            a.expect_control().await,
            Control::PeerJoined { .. }
        ));
    }
    assert!(matches!(
        b.expect_control().await,
        Control::PeerJoined { .. }
    ));

    // Target in the payload only: b gets it, with `from` filled in; c (same room) does not.
    let offer = json!({"type": "offer", "to": b.sid().to_string(), "sdp": "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n"});
    a.send_data(Lane::Messaging, &offer, None).await;
    let (h, v) = b.expect_data().await;
    assert_eq!(h.lane, Lane::Messaging);
    assert_eq!(h.from, Some(a.sid()));
    assert_eq!(v["type"], "offer");
    assert_eq!(v["from"], json!(a.sid().to_string()));
    assert_eq!(v["to"], json!(b.sid().to_string()));
    assert_eq!(v["sdp"], offer["sdp"]);

    // Target in the frame header only, `from` already right: `to` is filled in.
    let ice = json!({"type": "ice", "from": b.sid().to_string(), "candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdpMid": "0", "sdpMLineIndex": 0});
    b.send_data(Lane::Messaging, &ice, Some(a.sid())).await;
    let (h, v) = a.expect_data().await;
    assert_eq!(h.from, Some(b.sid()));
    assert_eq!(v["to"], json!(a.sid().to_string()));
    assert_eq!(v["sdpMLineIndex"], 0);

    // An ordinary Messaging message still goes to the whole room.
    a.send_data(
        Lane::Messaging,
        &json!({"type": "chat", "text": "hi"}),
        None,
    )
    .await;
    assert_eq!(b.expect_data().await.1["text"], "hi");
    assert_eq!(c.expect_data().await.1["text"], "hi");
    // c never saw the signaling messages between a and b.
    c.expect_silence(100).await;
}

#[tokio::test]
async fn spoofed_sender_and_bad_targets_get_typed_errors() {
    let server = TestServer::start(config()).await;
    let mut a = server.peer("a", &[1, 2]).await;
    let mut b = server.peer("b", &[1, 2]).await;
    let mut elsewhere = server.peer("x", &[1, 2]).await;
    let mut roomless = server.peer("r", &[1, 2]).await;
    a.join("call").await;
    b.join("call").await;
    assert!(matches!(
        a.expect_control().await,
        Control::PeerJoined { .. }
    ));
    elsewhere.join("other").await;
    let bs = b.sid().to_string();

    // a claims to be b: refused, nothing relayed.
    let seq = a
        .send_data(
            Lane::Messaging,
            &json!({"type": "offer", "from": bs, "to": bs, "sdp": "v=0"}),
            None,
        )
        .await;
    assert_eq!(
        a.expect_error().await,
        (ErrorCode::Forbidden, Some(2), Some(seq))
    );
    // No target at all.
    let seq = a
        .send_data(Lane::Messaging, &json!({"type": "end"}), None)
        .await;
    assert_eq!(
        a.expect_error().await,
        (ErrorCode::InvalidArgument, Some(2), Some(seq))
    );
    // A session in another room and an unknown session are both `forbidden` (issue 12: a
    // member addresses members of its own room only); a non-id is no target at all.
    for to in [
        elsewhere.sid().to_string(),
        SessionId::from_random_bytes([7; 16]).to_string(),
        "not-a-session".to_owned(),
    ] {
        let seq = a
            .send_data(
                Lane::Messaging,
                &json!({"type": "answer", "to": to, "sdp": "v=0"}),
                None,
            )
            .await;
        let expected = if to == "not-a-session" {
            ErrorCode::UnknownTarget
        } else {
            ErrorCode::Forbidden
        };
        assert_eq!(
            a.expect_error().await,
            (expected, Some(2), Some(seq)),
            "to {to}"
        );
    }
    // The wrong shape for its type (an offer without sdp).
    let seq = a
        .send_data(Lane::Messaging, &json!({"type": "offer", "to": bs}), None)
        .await;
    assert_eq!(
        a.expect_error().await,
        (ErrorCode::BadPayload, Some(2), Some(seq))
    );
    // Not in a room.
    let seq = roomless
        .send_data(
            Lane::Messaging,
            &json!({"type": "end", "to": a.sid().to_string()}),
            None,
        )
        .await;
    assert_eq!(
        roomless.expect_error().await,
        (ErrorCode::NotInRoom, Some(2), Some(seq))
    );
    b.expect_silence(100).await;
    elsewhere.expect_silence(0).await;
    // The sockets are still usable.
    a.ping_pong().await;
}
