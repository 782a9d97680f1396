//! Room-key rotation (issue 12 "Rooms, keys, control"; PROTOCOL.md §13.4): whenever a member
//! leaves or is removed (leave, DELETE, expiry, a move to another room, its socket closing),
//! the members still in the room get a new `room-key` with a new key id, and the one that left
//! never receives it. Other rooms keep their keys.

mod common;

use common::{config, Peer, Received, TestServer};
use p3_lanes::core::control::Control;
use p3_lanes::core::frame::SessionId;
use serde_json::json;

/// Three members `a`, `b`, `c` of `room` (in that order), each having seen the later ones
/// join; all hold the same key.
async fn trio(server: &TestServer, room: &str) -> (Peer, Peer, Peer) {
    let (mut a, mut b) = common::pair(server, room).await;
    let mut c = server.peer("c", &[1, 2]).await;
    assert_eq!(c.join(room).await, vec![a.sid(), b.sid(), c.sid()]);
    for p in [&mut a, &mut b] {
        assert!(matches!(
            p.expect_control().await,
            Control::PeerJoined { session_id, .. } if session_id == c.sid()
        ));
    }
    assert_eq!(a.room_key, c.room_key);
    assert_eq!(b.room_key, c.room_key);
    (a, b, c)
}

/// `a` and `b` hear that `gone` left, then both get the same new key (a new key id); returns
/// it.
async fn remaining_get_a_new_key(a: &mut Peer, b: &mut Peer, gone: SessionId) -> (u32, String) {
    let old = a.room_key.clone().expect("a held a key");
    let ka = a.expect_peer_left("room", gone).await;
    let kb = b.expect_peer_left("room", gone).await;
    assert_eq!(ka, kb, "the remaining members share the new key");
    assert_ne!(ka.0, old.0, "new key id");
    ka
}

/// Every frame `p` receives until its socket closes (or `ms` of silence): none is a
/// `room-key` for `room` other than `allowed`.
async fn never_gets_room_key(p: &mut Peer, room: &str, ms: u64) {
    while let Some(r) = p.recv_within(std::time::Duration::from_millis(ms)).await {
        match r {
            Received::Control(_, Control::RoomKey { room: r, .. }) if r == room => {
                panic!("a former member received the room's new key")
            }
            Received::Closed(_) => return,
            _ => {}
        }
    }
}

#[tokio::test]
async fn a_member_that_leaves_does_not_get_the_new_key() {
    let server = TestServer::start(config()).await;
    let (mut a, mut b, mut c) = trio(&server, "room").await;
    let mut d = server.peer("d", &[1, 2]).await;
    d.join("elsewhere").await;
    let elsewhere_key = d.room_key.clone();

    c.send_control(&Control::Leave {
        room: "room".into(),
    })
    .await;
    assert_eq!(
        c.expect_control().await,
        Control::Left {
            room: "room".into()
        }
    );
    let new = remaining_get_a_new_key(&mut a, &mut b, c.sid()).await;
    never_gets_room_key(&mut c, "room", 300).await;
    // Per room: another room hears nothing and keeps its key.
    d.expect_silence(100).await;
    d.send_control(&Control::Join {
        room: "elsewhere".into(),
    })
    .await;
    assert!(matches!(d.expect_control().await, Control::Joined { .. }));
    assert_eq!(Some(d.expect_room_key("elsewhere").await), elsewhere_key);
    // A new joiner gets the current key: the rotated one.
    let mut e = server.peer("e", &[1, 2]).await;
    e.join("room").await;
    assert_eq!(e.room_key, Some(new));
}

#[tokio::test]
async fn a_deleted_member_does_not_get_the_new_key() {
    let server = TestServer::start(config()).await;
    let (mut a, mut b, mut c) = trio(&server, "room").await;
    let url = server.url(&format!("/api/protocol/v2/session/{}", c.sid()));
    let resp = server.http.delete(&url).bearer_auth(c.token()).send().await;
    assert_eq!(resp.unwrap().status(), 204);
    remaining_get_a_new_key(&mut a, &mut b, c.sid()).await;
    never_gets_room_key(&mut c, "room", 1000).await;
}

#[tokio::test]
async fn a_member_moved_to_another_room_does_not_get_the_new_key() {
    let server = TestServer::start(config()).await;
    let (mut a, mut b, mut c) = trio(&server, "room").await;
    let old = c.room_key.clone();
    c.send_control(&Control::Join {
        room: "other".into(),
    })
    .await;
    assert_eq!(
        c.expect_control().await,
        Control::Left {
            room: "room".into()
        }
    );
    assert!(matches!(c.expect_control().await, Control::Joined { .. }));
    let other = c.expect_room_key("other").await;
    let new = remaining_get_a_new_key(&mut a, &mut b, c.sid()).await;
    assert_ne!(Some(other), old);
    assert_ne!(c.room_key, Some(new));
    never_gets_room_key(&mut c, "room", 300).await;
}

#[tokio::test]
async fn an_expired_member_is_replaced_by_a_new_key() {
    let server = TestServer::start_with(|c| {
        c.session_ttl_s = 1;
        c.unattached_ttl_s = 1;
    })
    .await;
    let (mut a, mut b) = common::pair(&server, "room").await;
    // A member that joined by POST and never connects: it expires after 1 s.
    let quiet = server.handshake("quiet", &["json"], &[1, 2]).await;
    let joined = server
        .http
        .post(server.url(&format!(
            "/api/protocol/v2/session/{}/lane/1",
            quiet.session_id
        )))
        .bearer_auth(common::token(&quiet))
        .header("content-type", "application/json")
        .body(json!({"type": "join", "room": "room"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(joined.status(), 202);
    for p in [&mut a, &mut b] {
        assert!(matches!(
            p.expect_control().await,
            Control::PeerJoined { .. }
        ));
    }
    // `a` and `b` keep their sockets (so they do not expire) while the sweeper removes quiet.
    remaining_get_a_new_key(&mut a, &mut b, quiet.session_id).await;
}

#[tokio::test]
async fn a_closed_socket_rotates_and_an_emptied_room_forgets_its_key() {
    let server = TestServer::start(config()).await;
    let (mut a, mut b, c) = trio(&server, "room").await;
    let c_sid = c.sid();
    let first = a.room_key.clone();
    c.close().await;
    let second = remaining_get_a_new_key(&mut a, &mut b, c_sid).await;
    // The last members go: the next joiner gets a key none of them held.
    let b_sid = b.sid();
    b.close().await;
    let third = a.expect_peer_left("room", b_sid).await;
    // DELETE answers once `a` is out of the room (a close would race with the next join).
    let url = server.url(&format!("/api/protocol/v2/session/{}", a.sid()));
    let resp = server.http.delete(&url).bearer_auth(a.token()).send().await;
    assert_eq!(resp.unwrap().status(), 204);
    let mut d = server.peer("d", &[1, 2]).await;
    d.join("room").await;
    let fresh = d.room_key.clone().unwrap();
    for held in [first.unwrap(), second, third] {
        assert_ne!(fresh.1, held.1);
    }
}
