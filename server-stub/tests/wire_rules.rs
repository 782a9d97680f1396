//! Wire rules of PROTOCOL.md settled by issue 13, each pinned against the real app:
//! - §5: a Data frame on lane 1 is refused (`bad_frame`), never relayed;
//! - §5 "Sequence numbers": a client's v1 seqs (0, repeats, gaps) name its frames and order
//!   nothing; every receiver gets the server's own gap-free seqs from 1;
//! - §11.7: a v1 frame on a multiplexed session is refused (`bad_frame`); the inner §5 seq
//!   of a multiplexed message is ignored (errors name the v2 seq);
//! - §11.7: a multiplexed message over the size limit gets a Control `error`
//!   `frame_too_large` (with its lane), then close 1009.

mod common;

use common::{config, handshake_body, pair, TestServer};
use futures::{SinkExt, StreamExt};
use p3_lanes::core::control::Control;
use p3_lanes::core::dictionary::Dictionary;
use p3_lanes::core::drive::Millis;
use p3_lanes::core::error::ErrorCode;
use p3_lanes::core::frame::{FrameHeader, FrameKind};
use p3_lanes::core::handshake::{HandshakeResponse, FEATURE_MUX};
use p3_lanes::core::lane::{Encoding, Lane};
use p3_lanes::core::mux::{Mux, MuxConfig, MuxEvent, MuxOutput};
use p3_lanes::core::payload;
use serde_json::{json, Value};
use server_stub::Config;
use std::collections::VecDeque;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_data_frame_on_lane_1_is_refused_and_never_relayed() {
    let server = TestServer::start(config()).await;
    let (mut a, mut b) = pair(&server, "room").await;
    // A peer's `{type: "error"}` dressed as a lane-1 Data frame: b must never see it.
    let forged = json!({"type": "error", "code": "forbidden", "error": "from a peer"});
    let (body, dv) = payload::encode(&forged, Encoding::Msgpack, Some(&a.dict)).unwrap();
    a.send_raw(FrameHeader::data(Lane::Control, Encoding::Msgpack, 4, dv).encode(&body))
        .await;
    assert_eq!(a.expect_error().await, (ErrorCode::BadFrame, None, None));
    b.expect_silence(300).await;
    a.ping_pong().await;
}

#[tokio::test]
async fn v1_seqs_from_a_client_order_nothing_and_receivers_get_gap_free_seqs() {
    let server = TestServer::start(config()).await;
    let (mut a, mut b) = pair(&server, "room").await;
    let mut sent = Vec::new();
    for (i, seq) in [0u64, 7, 7, 3, 9].into_iter().enumerate() {
        let (body, dv) = payload::encode(&json!(i), Encoding::Msgpack, Some(&a.dict)).unwrap();
        a.send_raw(FrameHeader::data(Lane::Messaging, Encoding::Msgpack, seq, dv).encode(&body))
            .await;
        sent.push(json!(i));
    }
    let mut got = Vec::new();
    for _ in 0..sent.len() {
        let (h, v) = b.expect_data().await;
        got.push((h.seq, v));
    }
    let want: Vec<(u64, Value)> = (1..).zip(sent).collect();
    assert_eq!(got, want, "relayed in order, renumbered 1, 2, 3, ...");
    // The sender's seq names its frame in an error, whatever its value.
    a.send_raw(FrameHeader::data(Lane::Messaging, Encoding::Json, 0, 0).encode(b"{nope"))
        .await;
    assert_eq!(
        a.expect_error().await,
        (ErrorCode::BadPayload, Some(2), Some(0))
    );
}

/// A raw socket of a multiplexed session driven by a hand-held [`Mux`].
struct MuxPeer {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    mux: Mux,
    now: u64,
    /// Events drawn while flushing, delivered by [`MuxPeer::next`].
    events: VecDeque<MuxEvent>,
    dict: Dictionary,
}

/// What a multiplexed socket delivered.
#[derive(Debug)]
enum Got {
    /// A Control message: `v2` the multiplexer's seq (`None`: it came as a v1 frame).
    Control(Option<u64>, Control),
    Data(#[allow(dead_code)] Value),
    Closed(Option<u16>),
}

impl MuxPeer {
    async fn connect(server: &TestServer, lanes: &[u8], cfg: impl FnOnce(&mut MuxConfig)) -> Self {
        let mut body = handshake_body("mux", &["msgpack"], lanes);
        body["features"] = json!([FEATURE_MUX]);
        let resp = server.handshake_raw(&body).await;
        assert_eq!(resp.status(), 200);
        let hs: HandshakeResponse = resp.json().await.unwrap();
        assert!(hs.grants(FEATURE_MUX));
        server.remember(&hs);
        let ids: Vec<Lane> = lanes.iter().map(|&l| Lane::from_id(l).unwrap()).collect();
        let mut c = MuxConfig::for_lanes(&ids, 99);
        cfg(&mut c);
        let mut mux = Mux::new(c).unwrap();
        mux.handle_transport_resumed(Millis::ZERO);
        let url = format!("ws://{}{}", server.addr, server.ws_path(&hs).await);
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let mut p = MuxPeer {
            ws,
            mux,
            now: 0,
            events: VecDeque::new(),
            dict: Dictionary::current(),
        };
        p.flush().await;
        match p.next().await {
            Got::Control(_, Control::Welcome { .. }) => {}
            other => panic!("expected the welcome, got {other:?}"),
        }
        p
    }

    async fn flush(&mut self) {
        self.mux.handle_transport_buffered(0);
        loop {
            match self.mux.poll_output(Millis::from_u64(self.now)) {
                MuxOutput::Event(ev) => self.events.push_back(ev),
                MuxOutput::Transmit(f) => {
                    self.ws.send(Message::binary(f)).await.unwrap();
                    self.mux.handle_transport_buffered(0);
                }
                MuxOutput::Timeout(_) => break,
            }
        }
    }

    async fn send(&mut self, lane: Lane, frame: Vec<u8>) {
        self.mux.send(lane, frame).unwrap();
        self.flush().await;
    }

    /// The next thing delivered (resume and ack frames are handled on the way).
    async fn next(&mut self) -> Got {
        loop {
            if let Some(ev) = self.events.pop_front() {
                match ev {
                    MuxEvent::Message { seq, bytes, .. } => {
                        let (h, body) = FrameHeader::decode(&bytes).unwrap();
                        return match h.kind {
                            FrameKind::Control => Got::Control(
                                Some(seq),
                                payload::decode_control(&h, body, Some(&self.dict)).unwrap(),
                            ),
                            FrameKind::Data => {
                                Got::Data(payload::decode(&h, body, Some(&self.dict)).unwrap())
                            }
                        };
                    }
                    other => panic!("unexpected multiplexer event {other:?}"),
                }
            }
            let msg = tokio::time::timeout(Duration::from_secs(5), self.ws.next())
                .await
                .expect("something in time");
            match msg {
                Some(Ok(Message::Binary(b))) if b.first().is_some_and(|x| *x >= 0x10) => {
                    self.now += 1;
                    self.mux.handle_input(&b, Millis::from_u64(self.now));
                    self.flush().await;
                }
                Some(Ok(Message::Binary(b))) => {
                    let (h, body) = FrameHeader::decode(&b).unwrap();
                    return Got::Control(
                        None,
                        payload::decode_control(&h, body, Some(&self.dict)).unwrap(),
                    );
                }
                Some(Ok(Message::Close(f))) => return Got::Closed(f.map(|f| u16::from(f.code))),
                None | Some(Err(_)) => return Got::Closed(None),
                Some(Ok(_)) => {}
            }
        }
    }

    async fn expect_error(&mut self) -> (Option<u64>, ErrorCode, Option<u8>, Option<u64>) {
        match self.next().await {
            Got::Control(
                v2,
                Control::Error {
                    code, lane, seq, ..
                },
            ) => (v2, code, lane, seq),
            other => panic!("expected an error, got {other:?}"),
        }
    }
}

fn control(msg: &Control) -> Vec<u8> {
    payload::control_frame(msg, Encoding::Json, None, 0)
}

#[tokio::test]
async fn a_v1_frame_on_a_multiplexed_session_is_refused_and_inner_seqs_are_ignored() {
    let server = TestServer::start(config()).await;
    let mut p = MuxPeer::connect(&server, &[1, 2], |_| {}).await;
    // A v1 frame: refused with its own lane and seq, delivered through the multiplexer.
    let (body, _) = payload::encode(&json!({"hi": 1}), Encoding::Json, None).unwrap();
    p.ws.send(Message::binary(
        FrameHeader::data(Lane::Messaging, Encoding::Json, 5, 0).encode(&body),
    ))
    .await
    .unwrap();
    let (v2, code, lane, seq) = p.expect_error().await;
    assert!(v2.is_some(), "the refusal travels through the multiplexer");
    assert_eq!((code, lane, seq), (ErrorCode::BadFrame, Some(2), Some(5)));
    // A multiplexed message whose inner §5 seq is 77: errors name the v2 seq.
    p.send(
        Lane::Messaging,
        FrameHeader::data(Lane::Messaging, Encoding::Json, 77, 0).encode(b"{nope"),
    )
    .await;
    let (_, code, lane, seq) = p.expect_error().await;
    assert_eq!((code, lane, seq), (ErrorCode::BadPayload, Some(2), Some(1)));
    // The socket stays open.
    p.send(
        Lane::Control,
        control(&Control::Ping {
            client_time: 1.5,
            rtt_ms: None,
        }),
    )
    .await;
    assert!(matches!(
        p.next().await,
        Got::Control(Some(_), Control::Pong { .. })
    ));
}

#[tokio::test]
async fn a_multiplexed_message_over_the_limit_is_frame_too_large_then_close_1009() {
    let server = TestServer::start(Config {
        max_frame_bytes: 64 * 1024,
        ..config()
    })
    .await;
    // This client allows itself bigger messages than the server (a misconfigured peer).
    let mut p = MuxPeer::connect(&server, &[1, 2], |c| c.max_message_bytes = 1 << 20).await;
    let big = vec![b'x'; 100 * 1024];
    p.send(
        Lane::Messaging,
        FrameHeader::data(Lane::Messaging, Encoding::Json, 0, 0).encode(&big),
    )
    .await;
    let (v2, code, lane, _) = p.expect_error().await;
    assert_eq!(v2, None, "written as a v1 frame right before the close");
    assert_eq!((code, lane), (ErrorCode::FrameTooLarge, Some(2)));
    match p.next().await {
        Got::Closed(code) => assert_eq!(code, Some(1009)),
        other => panic!("expected the close, got {other:?}"),
    }
}
