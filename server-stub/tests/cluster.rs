//! Several nodes as one server (issue 14; PROTOCOL.md §17): three in-process server-stub
//! nodes against a real `redis-server` (a child process on a free loopback port). Sessions
//! handshaked on one node open their socket on another; rooms span nodes (membership,
//! `peer-joined` / `peer-left`, relay to the room and to one member); a node whose Redis
//! connection drops resumes its room streams where it stopped; a gap is a `discontinuity`.
//!
//! Without `redis-server` on the PATH these tests say so and pass (CI installs it:
//! `scripts/setup.mjs`).

mod common;

use common::cluster::{nodes, redis};
use common::WAIT;
use p3_lanes::core::control::Control;
use p3_lanes::core::error::ErrorCode;
use p3_lanes::core::frame::SessionId;
use p3_lanes::core::lane::Lane;
use serde_json::{json, Value};
use std::time::Duration;

/// The next Data message, skipping nothing: panics on anything else.
async fn data(p: &mut common::Peer) -> (Lane, Option<SessionId>, Value) {
    let (h, v) = p.expect_data().await;
    (h.lane, h.from, v)
}

/// A handshake answered by one node opens its socket on another (its ticket is good there,
/// once in the whole cluster), and a ticket minted on the second node opens one on the
/// first. Without the sessions in Redis the second node does not know the session (4401).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_handshaked_on_one_node_opens_its_socket_on_another() {
    let Some(redis) = redis().await else { return };
    let n = nodes(&redis, 2).await;
    let hs = n[0].handshake("c1", &["msgpack", "json"], &[1, 2]).await;
    let first = hs.ticket.as_ref().unwrap().expose().to_owned();
    let path = common::with_ticket(&hs.websocket_url, &first);
    let mut on_b = n[1].connect_raw(&path).await;
    match on_b.expect_control().await {
        Control::Welcome { session_id, .. } => assert_eq!(session_id, hs.session_id),
        other => panic!("expected welcome on the other node, got {other:?}"),
    }
    // The ticket was used up for every node.
    let mut again = n[0].connect_raw(&path).await;
    assert_eq!(again.expect_error().await.0, ErrorCode::Unauthorized);
    // The token works on the node that never saw the handshake.
    let ticket = n[1].ticket(hs.session_id, &common::token(&hs)).await;
    let mut back = n[0]
        .connect_raw(&common::with_ticket(&hs.websocket_url, &ticket))
        .await;
    assert!(matches!(
        back.expect_control().await,
        Control::Welcome { .. }
    ));
    // It is kept in Redis with its TTL.
    let ttl: i64 = redis
        .cmd(redis::cmd("PTTL").arg(format!("p3:session:{}", hs.session_id)))
        .await;
    assert!(ttl > 0, "the session record expires (PTTL {ttl})");
}

/// A sign-in nonce issued by one node signs a device in on another, once in the whole
/// cluster: replayed on a third node or on the issuing one it is `nonce_reused`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_nonce_is_good_on_every_node_once() {
    let Some(redis) = redis().await else { return };
    let n = nodes(&redis, 3).await;
    let auth = common::auth::device_auth(&n[0], 9).await;
    let resp = common::auth::handshake_auth(&n[1], auth.clone()).await;
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    common::auth::assert_auth_invalid(
        common::auth::handshake_auth(&n[2], auth.clone()).await,
        "nonce_reused",
    )
    .await;
    common::auth::assert_auth_invalid(
        common::auth::handshake_auth(&n[0], auth).await,
        "nonce_reused",
    )
    .await;
}

/// Three members on three nodes: `joined` lists the members on every node, `peer-joined`
/// reaches the others, a relay to the room reaches every other member once, a relay `to`
/// one member reaches it only, and a leave is `peer-left` on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_span_nodes() {
    let Some(redis) = redis().await else { return };
    let n = nodes(&redis, 3).await;
    let mut a = n[0].peer("a", &[1, 2, 5]).await;
    let mut b = n[1].peer("b", &[1, 2, 5]).await;
    let mut c = n[2].peer("c", &[1, 2, 5]).await;
    assert_eq!(a.join("r").await, vec![a.sid()]);
    let members = b.join("r").await;
    assert_eq!(members.len(), 2, "b's joined lists a (node0): {members:?}");
    assert!(members.contains(&a.sid()));
    assert_eq!(
        a.expect_control().await,
        Control::PeerJoined {
            room: "r".into(),
            session_id: b.sid()
        }
    );
    let members = c.join("r").await;
    assert_eq!(members.len(), 3, "c's joined lists a and b: {members:?}");
    for p in [&mut a, &mut b] {
        assert_eq!(
            p.expect_control().await,
            Control::PeerJoined {
                room: "r".into(),
                session_id: c.sid()
            }
        );
    }
    // To the room, on two lanes.
    a.send_data(Lane::Messaging, &json!({"hello": 1}), None)
        .await;
    a.send_data(Lane::Data, &json!({"bulk": [1, 2, 3]}), None)
        .await;
    for p in [&mut b, &mut c] {
        assert_eq!(
            data(p).await,
            (Lane::Messaging, Some(a.sid()), json!({"hello": 1}))
        );
        assert_eq!(
            data(p).await,
            (Lane::Data, Some(a.sid()), json!({"bulk": [1, 2, 3]}))
        );
    }
    // To one member on another node.
    b.send_data(Lane::Messaging, &json!({"only": "c"}), Some(c.sid()))
        .await;
    assert_eq!(
        data(&mut c).await,
        (Lane::Messaging, Some(b.sid()), json!({"only": "c"}))
    );
    a.expect_silence(300).await;
    // A leave.
    let b_sid = b.sid();
    b.send_control(&Control::Leave { room: "r".into() }).await;
    for p in [&mut a, &mut c] {
        assert_eq!(
            p.expect_control().await,
            Control::PeerLeft {
                room: "r".into(),
                session_id: b_sid
            }
        );
    }
}

/// A node that answered a member's handshake but does not hold it (its socket is on another
/// node) still sees it as a member elsewhere: a member joining there is told of it in
/// `joined`, and a relay `to` it from there reaches it. With the node's copy of the session
/// mistaken for a local member, `joined` misses it and the relay goes to the copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_handshaked_on_one_node_and_held_by_another_is_remote_there() {
    let Some(redis) = redis().await else { return };
    let n = nodes(&redis, 2).await;
    let hs = n[0].handshake("a", &["msgpack", "json"], &[1, 2]).await;
    let mut a = n[1].connect(&hs).await;
    assert_eq!(a.join("r").await, vec![a.sid()]);
    let mut b = n[0].peer("b", &[1, 2]).await;
    let members = b.join("r").await;
    assert_eq!(
        members.len(),
        2,
        "b's joined lists a (held by node1): {members:?}"
    );
    assert!(members.contains(&a.sid()));
    b.send_data(Lane::Messaging, &json!({"only": "a"}), Some(a.sid()))
        .await;
    loop {
        match a.recv().await {
            common::Received::Control(_, Control::PeerJoined { .. }) => continue,
            common::Received::Data(h, v) => {
                assert_eq!(
                    (h.lane, h.from, v),
                    (Lane::Messaging, Some(b.sid()), json!({"only": "a"}))
                );
                break;
            }
            other => panic!("expected b's relay, got {other:?}"),
        }
    }
}

/// Every message once and in order across dropped Redis connections: while `a` (node0)
/// sends 300 messages, every client connection of the redis-server is killed several times
/// (both nodes reconnect); `b` (node1) gets all of them, in order. Delivery by pub/sub, or
/// reading a stream from `$` after a reconnect, loses the messages sent meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_redis_connection_loses_no_message() {
    let Some(redis) = redis().await else { return };
    let n = nodes(&redis, 2).await;
    let mut a = n[0].peer("a", &[1, 2]).await;
    let mut b = n[1].peer("b", &[1, 2]).await;
    a.join("r").await;
    b.join("r").await;
    a.expect_control().await;
    const N: u64 = 300;
    let killer = {
        let url = redis.url.clone();
        tokio::spawn(async move {
            let client = redis::Client::open(url.as_str()).unwrap();
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(40)).await;
                if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                    let _: redis::RedisResult<Value> = redis::cmd("CLIENT")
                        .arg("KILL")
                        .arg("TYPE")
                        .arg("normal")
                        .arg("SKIPME")
                        .arg("yes")
                        .query_async(&mut c)
                        .await
                        .map(|_: redis::Value| Value::Null);
                }
            }
        })
    };
    let receiver = tokio::spawn(async move {
        for i in 0..N {
            let got = tokio::time::timeout(WAIT * 2, data(&mut b))
                .await
                .unwrap_or_else(|_| panic!("message {i} never arrived"));
            assert_eq!(got.2, json!({"i": i}), "in order, none lost");
        }
        b
    });
    for i in 0..N {
        a.send_data(Lane::Messaging, &json!({"i": i}), None).await;
        if i % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    killer.await.unwrap();
    let mut b = receiver.await.unwrap();
    b.expect_silence(300).await;
}

/// Entries a node never read (here: numbers skipped, as after the stream was trimmed past
/// them) are an explicit `discontinuity` on the members' reliable lanes before delivery goes
/// on, never silence; so is a new epoch (the room's state in Redis was lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_in_the_room_stream_is_a_discontinuity() {
    let Some(redis) = redis().await else { return };
    let n = nodes(&redis, 2).await;
    let mut a = n[0].peer("a", &[1, 2]).await;
    let mut b = n[1].peer("b", &[1, 2]).await;
    a.join("r").await;
    b.join("r").await;
    a.expect_control().await;
    a.send_data(Lane::Messaging, &json!({"i": 0}), None).await;
    assert_eq!(data(&mut b).await.2, json!({"i": 0}));
    // Five entries b will never see.
    let _: i64 = redis
        .cmd(
            redis::cmd("HINCRBY")
                .arg("p3:room:{r}:meta")
                .arg("n")
                .arg(5),
        )
        .await;
    a.send_data(Lane::Messaging, &json!({"i": 1}), None).await;
    let (lane, from, d) = data(&mut b).await;
    assert_eq!(
        (lane, from),
        (Lane::Messaging, None),
        "from the server: {d}"
    );
    assert_eq!(d["type"], "discontinuity");
    assert_eq!(d["reason"], "history-lost");
    assert_eq!(d["lane"], Lane::Messaging.id());
    let expected = d["expectedSeq"].as_u64().unwrap();
    assert_eq!(d["seq"].as_u64().unwrap(), expected + 5);
    assert_eq!(
        data(&mut b).await.2,
        json!({"i": 1}),
        "then delivery goes on"
    );
    // The room's meta lost: a new epoch.
    let _: i64 = redis.cmd(redis::cmd("DEL").arg("p3:room:{r}:meta")).await;
    a.send_data(Lane::Messaging, &json!({"i": 2}), None).await;
    let (_, from, d) = data(&mut b).await;
    assert_eq!(from, None);
    assert_eq!(d["type"], "discontinuity");
    assert_ne!(d["epoch"], d["expectedEpoch"]);
    assert_eq!(data(&mut b).await.2, json!({"i": 2}));
}

/// A multiplexed-less client whose socket moves to another node: a session joined to a room
/// on node0 reconnects through node1 and is still reached there by the room (its own node
/// took it over; node0 dropped its copy without a `peer-left`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_taken_over_by_another_node_keeps_its_room() {
    let Some(redis) = redis().await else { return };
    let n = nodes(&redis, 2).await;
    let mut a = n[0].peer("a", &[1, 2]).await;
    // An SSE-transport session keeps its room across reconnects (as a multiplexed one).
    let hs: p3_lanes::core::handshake::HandshakeResponse = n[0]
        .handshake_raw(&json!({
            "clientId": "s",
            "capabilities": {"transports": ["sse"], "encodings": ["json"], "lanes": [1, 2]},
        }))
        .await
        .json()
        .await
        .unwrap();
    n[0].remember(&hs);
    let sid = hs.session_id;
    a.join("r").await;
    let join = n[0]
        .session(
            reqwest::Method::POST,
            &format!("/api/protocol/v2/session/{sid}/lane/1"),
        )
        .await
        .json(&json!({"type": "join", "room": "r"}))
        .send()
        .await
        .unwrap();
    assert!(join.status().is_success(), "join: {}", join.status());
    assert_eq!(
        a.expect_control().await,
        Control::PeerJoined {
            room: "r".into(),
            session_id: sid
        }
    );
    // The stream opens on node1: it takes the session over.
    let ticket = n[1].ticket(sid, &common::token(&hs)).await;
    let url = n[1].url(&common::with_ticket(
        &format!("/api/protocol/v2/session/{sid}/stream"),
        &ticket,
    ));
    let resp = n[1].http.get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut events = eventsource_stream::Eventsource::eventsource(resp.bytes_stream());
    let node: String = redis
        .cmd(
            redis::cmd("HGET")
                .arg(format!("p3:session:{sid}"))
                .arg("node"),
        )
        .await;
    assert_eq!(node, "node1");
    a.send_data(Lane::Messaging, &json!({"to": "moved"}), None)
        .await;
    use futures::StreamExt;
    let got = tokio::time::timeout(WAIT, async {
        while let Some(Ok(ev)) = events.next().await {
            if ev.data.contains("moved") {
                return ev.data;
            }
        }
        panic!("stream ended");
    })
    .await
    .expect("the room reaches the session on its new node");
    assert!(got.contains(&a.sid().to_string()) || got.contains("moved"));
    a.expect_silence(300).await;
}

/// One room key for the whole cluster (PROTOCOL.md §13.4, §17 "Room keys"): members held by
/// different nodes get the same key, two nodes racing to make a new room's key agree, a leave
/// on one node rotates the key for the members on every node (the same new key, a new id),
/// and a leave of the last member on a node still rotates it for the others; after Redis lost
/// the room's meta, the key a new joiner makes reaches every node (read after the gap). With a
/// key per node, the second member's key differs from the first's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_has_one_key_on_every_node() {
    let Some(redis) = redis().await else { return };
    let n = nodes(&redis, 2).await;
    let mut a = n[0].peer("a", &[1, 2]).await;
    let mut b = n[1].peer("b", &[1, 2]).await;
    let mut c = n[1].peer("c", &[1, 2]).await;
    a.join("r").await;
    b.join("r").await;
    assert_eq!(a.room_key, b.room_key, "members on two nodes share the key");
    assert!(matches!(
        a.expect_control().await,
        Control::PeerJoined { .. }
    ));
    c.join("r").await;
    assert_eq!(c.room_key, a.room_key);
    for p in [&mut a, &mut b] {
        assert!(matches!(
            p.expect_control().await,
            Control::PeerJoined { .. }
        ));
    }

    // A leave on node1 rotates the key on both nodes.
    let c_sid = c.sid();
    c.send_control(&Control::Leave { room: "r".into() }).await;
    let ka = a.expect_peer_left("r", c_sid).await;
    let kb = b.expect_peer_left("r", c_sid).await;
    assert_eq!(ka, kb, "the remaining members share the new key");
    a.expect_silence(200).await;
    b.expect_silence(0).await;

    // The last member on node0 leaves: node1's member still gets a new key.
    let a_sid = a.sid();
    a.send_control(&Control::Leave { room: "r".into() }).await;
    let kb2 = b.expect_peer_left("r", a_sid).await;
    assert_ne!(kb2, kb);
    // A later joiner on node0 gets that key, not a new one of node0's.
    let mut d = n[0].peer("d", &[1, 2]).await;
    d.join("r").await;
    assert_eq!(d.room_key, Some(kb2));

    // Two nodes racing to make a new room's key agree.
    let mut e = n[0].peer("e", &[1, 2]).await;
    let mut f = n[1].peer("f", &[1, 2]).await;
    tokio::join!(e.join("race"), f.join("race"));
    assert!(e.room_key.is_some());
    assert_eq!(e.room_key, f.room_key, "racing joins agree on the key");

    // Redis lost the room's meta (its key with it): the next joiner, on node1, makes a new
    // key; node0 reads it from the store after the gap, so d (node0) gets it too.
    let _: i64 = redis.cmd(redis::cmd("DEL").arg("p3:room:{r}:meta")).await;
    let mut g = n[1].peer("g", &[1, 2]).await;
    g.join("r").await;
    assert_ne!(g.room_key, d.room_key, "a new key");
    assert_eq!(Some(next_room_key(&mut d).await), g.room_key);
    assert_eq!(Some(next_room_key(&mut b).await), g.room_key);
}

/// The next `room-key` `p` receives, skipping everything else.
async fn next_room_key(p: &mut common::Peer) -> (u32, String) {
    loop {
        match p.recv().await {
            common::Received::Control(_, Control::RoomKey { key_id, key, .. }) => {
                return (key_id, key)
            }
            common::Received::Closed(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
}

/// WebRTC signaling on the Messaging lane between members held by different nodes (PROTOCOL.md
/// §13.5, §17): an offer, an answer and an ICE candidate reach their target on the other node
/// with `from` and `to` set, and no one else; a target in another room on the other node is
/// still `forbidden`, and a spoofed `from` too. With the room check on local members only, the
/// offer is refused as `forbidden`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signaling_reaches_a_member_on_another_node() {
    let Some(redis) = redis().await else { return };
    let n = nodes(&redis, 2).await;
    let mut a = n[0].peer("a", &[1, 2]).await;
    let mut b = n[1].peer("b", &[1, 2]).await;
    let mut c = n[1].peer("c", &[1, 2]).await;
    let mut x = n[1].peer("x", &[1, 2]).await;
    a.join("sig").await;
    b.join("sig").await;
    c.join("sig").await;
    x.join("other").await;
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
    let (sa, sb) = (a.sid().to_string(), b.sid().to_string());

    // Offer, target in the payload.
    let offer = json!({"type": "offer", "to": sb, "sdp": "v=0\r\n"});
    a.send_data(Lane::Messaging, &offer, None).await;
    let (h, v) = b.expect_data().await;
    assert_eq!((h.lane, h.from), (Lane::Messaging, Some(a.sid())));
    assert_eq!(
        (&v["type"], &v["from"], &v["to"], &v["sdp"]),
        (&json!("offer"), &json!(sa), &json!(sb), &offer["sdp"])
    );
    // Answer and ICE candidate back, target in the frame.
    b.send_data(
        Lane::Messaging,
        &json!({"type": "answer", "sdp": "v=0\r\n"}),
        Some(a.sid()),
    )
    .await;
    let ice = json!({"type": "ice", "candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdpMid": "0", "sdpMLineIndex": 0});
    b.send_data(Lane::Messaging, &ice, Some(a.sid())).await;
    for kind in ["answer", "ice"] {
        let (h, v) = a.expect_data().await;
        assert_eq!(h.from, Some(b.sid()));
        assert_eq!(
            (&v["type"], &v["from"], &v["to"]),
            (&json!(kind), &json!(sb), &json!(sa))
        );
    }
    c.expect_silence(200).await;

    // A session in another room on the other node: `forbidden`, as on one node.
    let seq = a
        .send_data(
            Lane::Messaging,
            &json!({"type": "end", "to": x.sid().to_string()}),
            None,
        )
        .await;
    assert_eq!(
        a.expect_error().await,
        (ErrorCode::Forbidden, Some(2), Some(seq))
    );
    // A spoofed `from`: `forbidden`, nothing relayed.
    let seq = a
        .send_data(
            Lane::Messaging,
            &json!({"type": "end", "from": sb, "to": sb}),
            None,
        )
        .await;
    assert_eq!(
        a.expect_error().await,
        (ErrorCode::Forbidden, Some(2), Some(seq))
    );
    b.expect_silence(200).await;
    x.expect_silence(0).await;
}
