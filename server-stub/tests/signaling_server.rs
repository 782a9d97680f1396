//! The seed 001 signaling server, `GET /api/signaling` (PROTOCOL.md §13.7), over real
//! WebSockets: auth with the handshake's `signalingToken`, typed errors before auth and for
//! bad input, rooms, relay to one peer, heartbeat answers and the heartbeat timeout.

mod common;

use common::{config, TestServer, WAIT};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use server_stub::Config;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

struct Sig {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Sig {
    async fn connect(server: &TestServer) -> Sig {
        let url = format!("ws://{}/api/signaling", server.addr);
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Sig { ws }
    }

    async fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).await.unwrap();
    }

    async fn recv_within(&mut self, d: Duration) -> Option<Result<Value, Option<u16>>> {
        loop {
            let next = tokio::time::timeout(d, self.ws.next()).await.ok()?;
            return Some(match next {
                Some(Ok(Message::Text(t))) => Ok(serde_json::from_str(t.as_str()).unwrap()),
                Some(Ok(Message::Close(f))) => Err(f.map(|f| u16::from(f.code))),
                Some(Ok(Message::Binary(_))) => panic!("the server sent a binary message"),
                Some(Ok(_)) => continue,
                None | Some(Err(_)) => Err(None),
            });
        }
    }

    async fn recv(&mut self) -> Value {
        match self.recv_within(WAIT).await {
            Some(Ok(v)) => v,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    async fn expect_error(&mut self, code: &str) -> Value {
        let v = self.recv().await;
        assert_eq!(
            (v["type"].as_str(), v["code"].as_str()),
            (Some("error"), Some(code)),
            "{v}"
        );
        v
    }

    async fn expect_close(&mut self) -> Option<u16> {
        loop {
            match self.recv_within(WAIT).await {
                Some(Err(code)) => return code,
                Some(Ok(_)) => continue,
                None => panic!("not closed in time"),
            }
        }
    }

    /// Connects and authenticates as a new session; returns the session id.
    async fn authed(server: &TestServer, name: &str) -> (Sig, String) {
        let hs = server.handshake(name, &["json"], &[1]).await;
        let token = hs
            .signaling_token
            .clone()
            .expect("signalingToken in the handshake");
        let mut s = Sig::connect(server).await;
        let sid = hs.session_id.to_string();
        s.send(json!({"type": "auth", "address": sid, "signature": token}))
            .await;
        assert_eq!(s.recv().await, json!({"type": "auth_ok", "sessionId": sid}));
        (s, sid)
    }

    async fn join(&mut self, room: &str) -> Value {
        self.send(json!({"type": "join", "roomId": room})).await;
        let v = self.recv().await;
        assert_eq!(v["type"], "joined", "{v}");
        v["peers"].clone()
    }
}

#[tokio::test]
async fn auth_is_required_and_checked() {
    let server = TestServer::start(config()).await;
    let a = server.handshake("a", &["json"], &[1]).await;
    let b = server.handshake("b", &["json"], &[1]).await;
    let (a_sid, a_token) = (a.session_id.to_string(), a.signaling_token.unwrap());
    let b_token = b.signaling_token.unwrap();
    assert_ne!(a_token, b_token);
    let mut s = Sig::connect(&server).await;

    // Heartbeats are answered before auth; join and offer are not.
    s.send(json!({"type": "heartbeat"})).await;
    let ack = s.recv().await;
    assert_eq!(ack["type"], "heartbeat_ack");
    assert!(ack["serverTime"].as_u64().unwrap() > 1_600_000_000_000);
    s.send(json!({"type": "join", "roomId": "r"})).await;
    assert_eq!(s.expect_error("unauthorized").await["request"], "join");
    s.send(json!({"type": "offer", "data": {"sdp": "v=0"}}))
        .await;
    assert_eq!(s.expect_error("unauthorized").await["request"], "offer");

    // Another session's token, a mangled token, no token: refused.
    for sig in [json!(b_token), json!(format!("{a_token}x")), Value::Null] {
        s.send(json!({"type": "auth", "address": a_sid, "signature": sig}))
            .await;
        s.expect_error("unauthorized").await;
    }
    // Malformed JSON, an unknown type, a binary message: typed errors, the socket lives on.
    s.ws.send(Message::text("{not json")).await.unwrap();
    s.expect_error("bad_request").await;
    s.send(json!({"type": "teleport"})).await;
    s.expect_error("invalid_argument").await;
    s.send(json!([1, 2])).await;
    s.expect_error("invalid_argument").await;
    s.ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    s.expect_error("bad_request").await;
    s.send(json!({"type": "ping"})).await;
    assert_eq!(s.recv().await["type"], "pong");

    s.send(json!({"type": "auth", "address": a_sid, "signature": a_token}))
        .await;
    assert_eq!(
        s.recv().await,
        json!({"type": "auth_ok", "sessionId": a_sid})
    );

    // A deleted session's token no longer authenticates.
    let mut other = Sig::connect(&server).await;
    let del = server
        .session(
            reqwest::Method::DELETE,
            &format!("/api/protocol/v2/session/{}", b.session_id),
        )
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 204);
    other
        .send(json!({"type": "auth", "address": b.session_id.to_string(), "signature": b_token}))
        .await;
    // The same answer as a wrong token (issue 12: no oracle).
    other.expect_error("unauthorized").await;
}

#[tokio::test]
async fn rooms_and_relay_to_one_peer() {
    let server = TestServer::start(config()).await;
    let (mut a, a_sid) = Sig::authed(&server, "a").await;
    let (mut b, b_sid) = Sig::authed(&server, "b").await;
    let (mut c, c_sid) = Sig::authed(&server, "c").await;

    // Offer before joining a room.
    a.send(json!({"type": "offer", "to": b_sid, "data": {"sdp": "v=0"}}))
        .await;
    a.expect_error("not_in_room").await;

    assert_eq!(a.join("call").await, json!([]));
    assert_eq!(b.join("call").await, json!([a_sid]));
    assert_eq!(
        a.recv().await,
        json!({"type": "peer_joined", "roomId": "call", "from": b_sid})
    );
    c.join("elsewhere").await;

    // One other member: the target may be left out (the seed's relayToPeer).
    a.send(json!({"type": "offer", "data": {"type": "offer", "sdp": "v=0 a"}}))
        .await;
    assert_eq!(
        b.recv().await,
        json!({"type": "offer", "roomId": "call", "from": a_sid, "to": b_sid,
               "data": {"type": "offer", "sdp": "v=0 a"}})
    );
    b.send(json!({"type": "answer", "to": a_sid, "data": {"type": "answer", "sdp": "v=0 b"}}))
        .await;
    let answer = b_answer(&mut a).await;
    assert_eq!(answer["from"], json!(b_sid));
    // The target in data.to; a forged `from` in the message is ignored (the server sets it).
    a.send(
        json!({"type": "ice", "from": c_sid, "data": {"to": b_sid, "candidate": "candidate:1"}}),
    )
    .await;
    let ice = b.recv().await;
    assert_eq!(
        (ice["type"].clone(), ice["from"].clone()),
        (json!("ice"), json!(a_sid))
    );
    // Errors: a member of another room, garbage, itself (not another member of the room:
    // `forbidden`, issue 12), a disagreeing data.to, ice without data.
    for (msg, code) in [
        (
            json!({"type": "offer", "to": c_sid, "data": {}}),
            "forbidden",
        ),
        (
            json!({"type": "offer", "to": "nobody", "data": {}}),
            "forbidden",
        ),
        (
            json!({"type": "offer", "to": a_sid, "data": {}}),
            "forbidden",
        ),
        (
            json!({"type": "ice", "to": b_sid, "data": {"to": c_sid}}),
            "invalid_argument",
        ),
        (json!({"type": "ice", "to": b_sid}), "invalid_argument"),
        (json!({"type": "join"}), "invalid_argument"),
        (json!({"type": "join", "roomId": ""}), "invalid_argument"),
    ] {
        a.send(msg.clone()).await;
        let e = a.expect_error(code).await;
        assert_eq!(e["request"], msg["type"], "{e}");
    }
    // A third member: now the target must be named.
    assert_eq!(c.join("call").await, json!([a_sid, b_sid]));
    assert_eq!(a.recv().await["type"], "peer_joined");
    assert_eq!(b.recv().await["type"], "peer_joined");
    a.send(json!({"type": "end"})).await;
    a.expect_error("invalid_argument").await;
    a.send(json!({"type": "end", "to": c_sid})).await;
    let end = c.recv().await;
    assert_eq!(
        (end["type"].clone(), end["data"].clone()),
        (json!("end"), Value::Null)
    );
    b.ws.send(Message::text(r#"{"type":"heartbeat"}"#))
        .await
        .unwrap();
    assert_eq!(
        b.recv().await["type"],
        "heartbeat_ack",
        "b got nothing else"
    );

    // c moves to another room: the call hears it left.
    c.join("elsewhere").await;
    for s in [&mut a, &mut b] {
        assert_eq!(
            s.recv().await,
            json!({"type": "peer_left", "roomId": "call", "from": c_sid, "reason": "left"})
        );
    }
    // c's socket closes: its room hears `closed`.
    let (mut d, _) = Sig::authed(&server, "d").await;
    d.join("elsewhere").await;
    assert_eq!(c.recv().await["type"], "peer_joined");
    c.ws.close(None).await.unwrap();
    assert_eq!(
        d.recv().await,
        json!({"type": "peer_left", "roomId": "elsewhere", "from": c_sid, "reason": "closed"})
    );
}

async fn b_answer(a: &mut Sig) -> Value {
    let v = a.recv().await;
    assert_eq!(v["type"], "answer", "{v}");
    assert_eq!(v["data"]["sdp"], "v=0 b");
    v
}

#[tokio::test]
async fn a_second_socket_replaces_the_first() {
    let server = TestServer::start(config()).await;
    let hs = server.handshake("a", &["json"], &[1]).await;
    let (sid, token) = (hs.session_id.to_string(), hs.signaling_token.unwrap());
    let (mut peer, peer_sid) = Sig::authed(&server, "peer").await;
    let mut first = Sig::connect(&server).await;
    first
        .send(json!({"type": "auth", "address": sid, "signature": token}))
        .await;
    first.recv().await;
    peer.join("r").await;
    first.join("r").await;
    assert_eq!(peer.recv().await["type"], "peer_joined");
    let mut second = Sig::connect(&server).await;
    second
        .send(json!({"type": "auth", "address": sid, "signature": token}))
        .await;
    assert_eq!(second.recv().await["type"], "auth_ok");
    assert_eq!(first.expect_close().await, Some(4409));
    assert_eq!(
        peer.recv().await,
        json!({"type": "peer_left", "roomId": "r", "from": sid, "reason": "replaced"})
    );
    // The new socket starts outside any room.
    assert_eq!(second.join("r").await, json!([peer_sid]));
    assert_eq!(
        peer.recv().await,
        json!({"type": "peer_joined", "roomId": "r", "from": sid})
    );
}

#[tokio::test]
async fn silent_clients_are_dropped_and_their_room_told() {
    let server = TestServer::start(Config {
        heartbeat_timeout_ms: 400,
        ..config()
    })
    .await;
    let (mut a, _) = Sig::authed(&server, "a").await;
    let (mut b, b_sid) = Sig::authed(&server, "b").await;
    a.join("r").await;
    b.join("r").await;
    assert_eq!(a.recv().await["type"], "peer_joined");
    // a keeps beating, b goes silent: b is dropped with 4408, a hears why.
    let mut left = None;
    'beat: for _ in 0..100 {
        a.send(json!({"type": "heartbeat"})).await;
        // Read everything for 100 ms, then beat again.
        while let Some(r) = a.recv_within(Duration::from_millis(100)).await {
            match r {
                Ok(v) if v["type"] == "peer_left" => {
                    left = Some(v);
                    break 'beat;
                }
                Ok(v) => assert_eq!(v["type"], "heartbeat_ack", "{v}"),
                Err(code) => panic!("a was closed ({code:?}) although it beat"),
            }
        }
    }
    assert_eq!(
        left.expect("b is dropped within 10 s"),
        json!({"type": "peer_left", "roomId": "r", "from": b_sid, "reason": "heartbeat-timeout"})
    );
    assert_eq!(b.expect_close().await, Some(4408));
}

/// Several nodes (PROTOCOL.md §13.7, §17): sockets on two nodes share a signaling room:
/// `joined` lists the peers on the other node, `peer_joined` / `peer_left` cross nodes, an
/// offer and an answer reach their target on the other node (with `from` set) and no one
/// else, the only-other-member rule counts members on other nodes. With rooms per node, the
/// second joiner's `joined` lists nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_span_nodes() {
    let Some(redis) = common::cluster::redis().await else {
        return;
    };
    let n = common::cluster::nodes(&redis, 2).await;
    let (mut a, sa) = Sig::authed(&n[0], "a").await;
    let (mut b, sb) = Sig::authed(&n[1], "b").await;
    let (mut c, sc) = Sig::authed(&n[1], "c").await;
    assert_eq!(a.join("s").await, json!([]));
    assert_eq!(b.join("s").await, json!([sa]));
    let joined = |from: &str| json!({"type": "peer_joined", "roomId": "s", "from": from});
    assert_eq!(a.recv().await, joined(&sb));
    let peers = c.join("s").await;
    assert!(
        peers.as_array().unwrap().len() == 2 && peers.to_string().contains(&sa),
        "{peers}"
    );
    assert_eq!(a.recv().await, joined(&sc));
    assert_eq!(b.recv().await, joined(&sc));

    // Offer node0 → node1, answer back.
    a.send(json!({"type": "offer", "to": sb, "data": {"sdp": "v=0"}}))
        .await;
    assert_eq!(
        b.recv().await,
        json!({"type": "offer", "roomId": "s", "from": sa, "to": sb, "data": {"sdp": "v=0"}})
    );
    b.send(json!({"type": "answer", "to": sa, "data": {"sdp": "v=1"}}))
        .await;
    assert_eq!(
        a.recv().await,
        json!({"type": "answer", "roomId": "s", "from": sb, "to": sa, "data": {"sdp": "v=1"}})
    );
    assert!(c.recv_within(Duration::from_millis(200)).await.is_none());
    // Several peers (one of them on the other node): the target must be named.
    a.send(json!({"type": "ice", "data": {"candidate": "x"}}))
        .await;
    a.expect_error("invalid_argument").await;

    // c's socket closes: both nodes' members hear it; then b's only other member is a.
    drop(c);
    let left = json!({"type": "peer_left", "roomId": "s", "from": sc, "reason": "closed"});
    assert_eq!(a.recv().await, left);
    assert_eq!(b.recv().await, left);
    b.send(json!({"type": "end"})).await;
    assert_eq!(
        a.recv().await,
        json!({"type": "end", "roomId": "s", "from": sb, "to": sa, "data": null})
    );
}

/// Several nodes (PROTOCOL.md §17): a `signalingToken` from a handshake answered by one node
/// authenticates a signaling socket on another (one token secret for the cluster, the session
/// known there from its record); a wrong token is still `unauthorized`. With a secret per
/// node, the second node refuses the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signaling_token_is_good_on_every_node() {
    let Some(redis) = common::cluster::redis().await else {
        return;
    };
    let n = common::cluster::nodes(&redis, 2).await;
    let hs = n[0].handshake("a", &["json"], &[1]).await;
    let (sid, token) = (hs.session_id.to_string(), hs.signaling_token.unwrap());
    let mut s = Sig::connect(&n[1]).await;
    s.send(json!({"type": "auth", "address": sid, "signature": "AAAA"}))
        .await;
    s.expect_error("unauthorized").await;
    s.send(json!({"type": "auth", "address": sid, "signature": token}))
        .await;
    assert_eq!(s.recv().await, json!({"type": "auth_ok", "sessionId": sid}));
    // And it works there: a peer handshaked on node1 meets it in a room.
    let (mut b, sb) = Sig::authed(&n[1], "b").await;
    assert_eq!(s.join("t").await, json!([]));
    assert_eq!(b.join("t").await, json!([sid]));
    assert_eq!(
        s.recv().await,
        json!({"type": "peer_joined", "roomId": "t", "from": sb})
    );
}
