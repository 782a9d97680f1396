//! Frames the server refuses: each gets a Control `error` frame naming the lane and seq, the
//! socket keeps working, and other sessions are unaffected. Only a WebSocket message over twice
//! the frame limit closes the socket (1009). Full receiver queues give the sender `backpressure`.

mod common;

use common::{config, pair, Peer, Received, TestServer};
use futures::SinkExt;
use p3_lanes::core::codec;
use p3_lanes::core::control::Control;
use p3_lanes::core::error::ErrorCode;
use p3_lanes::core::frame::FrameHeader;
use p3_lanes::core::lane::{Encoding, Lane};
use serde_json::json;
use server_stub::Config;
use std::time::Duration;

const LIMIT: usize = 64 * 1024;

/// After a refused frame from `a`: `a` still works, and `b` only ever sees good traffic.
async fn both_still_work(a: &mut Peer, b: &mut Peer, n: u64) {
    a.ping_pong().await;
    a.send_data(Lane::Messaging, &json!({"msg": n}), None).await;
    let (h, v) = b.expect_data().await;
    assert_eq!((h.from, v), (Some(a.sid()), json!({"msg": n})));
    b.send_data(Lane::Messaging, &json!({"msg": "back"}), None)
        .await;
    let (h, _) = a.expect_data().await;
    assert_eq!(h.from, Some(b.sid()));
}

#[tokio::test]
async fn bad_frames_get_error_frames_and_the_socket_survives() {
    let server = TestServer::start(Config {
        max_frame_bytes: LIMIT,
        ..config()
    })
    .await;
    let (mut a, mut b) = pair(&server, "room").await;
    let dict = a.dict.clone();
    let mut n = 0;

    // Unknown lane id byte (9).
    a.send_raw(vec![0x01, 9, 0, 5, 1, 0xc0]).await;
    assert_eq!(a.expect_error().await, (ErrorCode::BadFrame, Some(9), None));
    n += 1;
    both_still_work(&mut a, &mut b, n).await;

    // Truncated frame and reserved flag bits.
    a.send_raw(vec![0x01]).await;
    assert_eq!(a.expect_error().await.0, ErrorCode::BadFrame);
    a.send_raw(vec![0x01, 2, 0x80, 1, 1, 0xc0]).await;
    assert_eq!(a.expect_error().await.0, ErrorCode::BadFrame);

    // A lane the session did not negotiate (3, Voice).
    let seq = a
        .send_data(Lane::Voice, &json!({"msg": "voice"}), None)
        .await;
    assert_eq!(
        a.expect_error().await,
        (ErrorCode::LaneNotNegotiated, Some(3), Some(seq))
    );
    n += 1;
    both_still_work(&mut a, &mut b, n).await;

    // Undecodable msgpack: the reserved marker 0xc1, and trailing bytes.
    for payload in [vec![0xc1], vec![0xc0, 0xc0]] {
        a.send_raw(FrameHeader::data(Lane::Messaging, Encoding::Msgpack, 77, 1).encode(&payload))
            .await;
        assert_eq!(
            a.expect_error().await,
            (ErrorCode::BadPayload, Some(2), Some(77))
        );
    }
    // Bad JSON in a json frame.
    a.send_raw(FrameHeader::data(Lane::Messaging, Encoding::Json, 78, 0).encode(b"{nope"))
        .await;
    assert_eq!(
        a.expect_error().await,
        (ErrorCode::BadPayload, Some(2), Some(78))
    );
    n += 1;
    both_still_work(&mut a, &mut b, n).await;

    // A dictionary version the server does not have.
    let body = codec::encode_msgpack(&json!({"msg": "v7"}), Some(&dict));
    a.send_raw(FrameHeader::data(Lane::Messaging, Encoding::Msgpack, 79, 7).encode(&body))
        .await;
    assert_eq!(
        a.expect_error().await,
        (ErrorCode::UnknownDictionary, Some(2), Some(79))
    );
    n += 1;
    both_still_work(&mut a, &mut b, n).await;

    // Oversized: between the limit and twice the limit.
    let big = json!({"msg": "x".repeat(LIMIT + 100)});
    let (frame, seq) = a.data_frame(Lane::Messaging, &big, None);
    assert!(frame.len() > LIMIT && frame.len() < 2 * LIMIT);
    a.send_raw(frame).await;
    assert_eq!(
        a.expect_error().await,
        (ErrorCode::FrameTooLarge, Some(2), Some(seq))
    );
    n += 1;
    both_still_work(&mut a, &mut b, n).await;

    // Bad control payloads: unknown type, wrong shape.
    let bad_type = codec::encode_msgpack(&json!({"type": "dance"}), Some(&dict));
    a.send_raw(FrameHeader::control(Encoding::Msgpack, 90, 1).encode(&bad_type))
        .await;
    assert_eq!(
        a.expect_error().await,
        (ErrorCode::BadControl, Some(1), Some(90))
    );
    let bad_shape = codec::encode_msgpack(&json!({"type": "join"}), Some(&dict));
    a.send_raw(FrameHeader::control(Encoding::Msgpack, 91, 1).encode(&bad_shape))
        .await;
    assert_eq!(
        a.expect_error().await,
        (ErrorCode::BadControl, Some(1), Some(91))
    );

    // A text message.
    a.ws.send(tokio_tungstenite::tungstenite::Message::text("hello"))
        .await
        .unwrap();
    assert_eq!(a.expect_error().await.0, ErrorCode::BadFrame);
    n += 1;
    both_still_work(&mut a, &mut b, n).await;

    // B never saw any of it.
    b.expect_silence(200).await;
}

#[tokio::test]
async fn data_without_a_room_is_not_in_room() {
    let server = TestServer::start(config()).await;
    let mut a = server.peer("a", &[1, 2]).await;
    let seq = a.send_data(Lane::Messaging, &json!({"msg": 1}), None).await;
    assert_eq!(
        a.expect_error().await,
        (ErrorCode::NotInRoom, Some(2), Some(seq))
    );
    // An undecodable payload is reported before routing problems.
    a.send_raw(FrameHeader::data(Lane::Messaging, Encoding::Msgpack, 9, 1).encode(&[0xc1]))
        .await;
    assert_eq!(
        a.expect_error().await,
        (ErrorCode::BadPayload, Some(2), Some(9))
    );
    a.ping_pong().await;
}

#[tokio::test]
async fn a_message_over_twice_the_limit_closes_with_1009() {
    let server = TestServer::start(Config {
        max_frame_bytes: LIMIT,
        ..config()
    })
    .await;
    let (mut a, mut b) = pair(&server, "room").await;
    let a_sid = a.sid();
    let huge = vec![0u8; 2 * LIMIT + 1];
    // Send without waiting for the write to finish: the server stops reading at the header.
    let send = tokio::spawn(async move {
        let _ =
            a.ws.send(tokio_tungstenite::tungstenite::Message::binary(huge))
                .await;
        a
    });
    let mut a = send.await.unwrap();
    assert_eq!(a.expect_close().await, 1009);
    b.expect_peer_left("room", a_sid).await;
    b.ping_pong().await;
}

#[tokio::test]
async fn a_full_receiver_queue_is_backpressure_for_the_sender() {
    // A small queue for B, which never reads: its socket buffers fill, then its queue.
    let server = TestServer::start(Config {
        queue_frames: 4,
        queue_bytes: 256 * 1024,
        ..config()
    })
    .await;
    let (mut a, mut b) = pair(&server, "room").await;
    let chunk = json!({"data": "y".repeat(256 * 1024)});
    let mut sent = 0u64;
    let refused_seq = loop {
        assert!(sent < 400, "no backpressure after {sent} frames of 256 KiB");
        let seq = a.send_data(Lane::Messaging, &chunk, None).await;
        sent += 1;
        match a.recv_within(Duration::from_millis(2)).await {
            None => continue,
            Some(Received::Control(
                _,
                Control::Error {
                    code,
                    lane,
                    seq: s,
                    error,
                    ..
                },
            )) => {
                assert_eq!(code, ErrorCode::Backpressure, "{error}");
                assert_eq!(lane, Some(2));
                assert!(s.is_some_and(|s| s <= seq));
                assert!(error.contains(&b.sid().to_string()), "{error}");
                break s.unwrap();
            }
            Some(other) => panic!("unexpected {other:?}"),
        }
    };
    // The sender's socket still works.
    a.ping_pong().await;
    // B gets everything that was accepted, in order, with no gap in its seqs.
    let mut expected = 1;
    loop {
        match b.recv_within(Duration::from_millis(500)).await {
            Some(Received::Data(h, _)) => {
                assert_eq!(h.seq, expected);
                expected += 1;
            }
            None => break,
            Some(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        expected - 1 < sent,
        "some frames were refused (first refused: seq {refused_seq})"
    );
    assert!(
        expected > 1,
        "B received the frames accepted before the queue filled"
    );
}

/// issue 11: 512 KiB of MessagePack empty arrays (about 40 MB decoded without a budget) and a
/// JSON array of as many values are refused with `payload_too_complex`; both peers go on.
#[tokio::test]
async fn decode_bombs_are_payload_too_complex() {
    let server = TestServer::start(config()).await;
    let (mut a, mut b) = pair(&server, "room").await;
    let n = 512 * 1024;
    let mut bomb = vec![0xdd];
    bomb.extend_from_slice(&(n as u32).to_be_bytes());
    bomb.resize(5 + n, 0x90);
    a.send_raw(FrameHeader::data(Lane::Messaging, Encoding::Msgpack, 90, 0).encode(&bomb))
        .await;
    assert_eq!(
        a.expect_error().await,
        (ErrorCode::PayloadTooComplex, Some(2), Some(90))
    );
    let json_bomb = format!("[{}0]", "0,".repeat(codec::MAX_NODES));
    a.send_raw(
        FrameHeader::data(Lane::Messaging, Encoding::Json, 91, 0).encode(json_bomb.as_bytes()),
    )
    .await;
    assert_eq!(
        a.expect_error().await,
        (ErrorCode::PayloadTooComplex, Some(2), Some(91))
    );
    both_still_work(&mut a, &mut b, 1).await;
}
