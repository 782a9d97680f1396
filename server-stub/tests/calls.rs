//! Calls addressed to an identity (issue 12; seed 000 "Nexus as P2P signaling"; PROTOCOL.md
//! §13.16): `POST /api/nexus/calls/initiate` rings every live session of a verified identity
//! that admits the caller; the callee accepts or declines over HTTP; the two parties then
//! signal on the Messaging lane with no room in common, and nobody else can. Identities are
//! SIWE sign-ins with fixed secp256k1 keys (1 and 2) and an HS256 app JWT (`carol`).

mod common;

use common::auth::*;
use common::{config, handshake_body, Peer, TestServer};
use p3_lanes::core::error::ErrorCode;
use p3_lanes::core::lane::Lane;
use serde_json::{json, Value};
use std::time::Duration;

fn server_config() -> server_stub::Config {
    let mut c = config();
    c.jwt_secret = Some(JWT_SECRET.parse().unwrap());
    c
}

/// A handshake (json; lanes 1, 2) carrying `auth` and `acceptCallsFrom` (when not null),
/// connected over WebSocket.
async fn signed_in(server: &TestServer, auth: Value, accept: Value) -> Peer {
    let mut body = handshake_body("caller", &["json"], &[1, 2]);
    if !auth.is_null() {
        body["auth"] = auth;
    }
    if !accept.is_null() {
        body["acceptCallsFrom"] = accept;
    }
    let resp = server.handshake_raw(&body).await;
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    server.connect(&resp.json().await.unwrap()).await
}

/// Signed in with SIWE key `n` (address `addr`).
async fn siwe_peer(server: &TestServer, n: u8, addr: &str, accept: Value) -> Peer {
    let f = fields(server, addr, &nonce(server).await);
    signed_in(server, siwe_auth(&key(n), &f), accept).await
}

/// Signed in with an app JWT whose `sub` is `sub`.
async fn token_peer(server: &TestServer, sub: &str, accept: Value) -> Peer {
    let jwt = jwt_hs256(JWT_SECRET, &claims(sub, &[]));
    signed_in(server, json!({"token": jwt}), accept).await
}

/// POSTs `path` under `/api/nexus/calls/` with `P3-Session: <sid>` and `Authorization:
/// Bearer <token>`, each only when given.
async fn post_as(
    server: &TestServer,
    sid: Option<&str>,
    token: Option<&str>,
    path: &str,
    body: Value,
) -> reqwest::Response {
    let mut req = server
        .http
        .post(server.url(&format!("/api/nexus/calls/{path}")))
        .json(&body);
    if let Some(sid) = sid {
        req = req.header("p3-session", sid);
    }
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    req.send().await.unwrap()
}

/// POSTs `path` under `/api/nexus/calls/` as `p`'s session (its id and its session token).
async fn post(server: &TestServer, p: &Peer, path: &str, body: Value) -> reqwest::Response {
    post_as(
        server,
        Some(&p.sid().to_string()),
        Some(p.token()),
        path,
        body,
    )
    .await
}

/// Rings `to` as `caller`; returns the response.
async fn initiate(server: &TestServer, caller: &Peer, to: &str) -> reqwest::Response {
    post(server, caller, "initiate", json!({"to": to})).await
}

/// Expects status `status` and JSON `code`.
async fn refused(resp: reqwest::Response, status: u16, code: &str) {
    let got = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        (got.as_u16(), body["code"].as_str()),
        (status, Some(code)),
        "{body}"
    );
}

/// Rings `to` as `caller`, expecting 200; returns the call id.
async fn ring(server: &TestServer, caller: &Peer, to: &str) -> String {
    let resp = initiate(server, caller, to).await;
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    let body: Value = resp.json().await.unwrap();
    body["callId"].as_str().unwrap().to_owned()
}

/// The next Messaging-lane message of `p` (a server message has no `from`).
async fn messaging(p: &mut Peer) -> Value {
    let (h, v) = p.expect_data().await;
    assert_eq!(h.lane, Lane::Messaging, "{v}");
    v
}

/// An SDP offer for `to` (the payload shape of PROTOCOL.md §13.5).
fn offer(to: &Peer) -> Value {
    json!({"type": "offer", "to": to.sid().to_string(), "sdp": "v=0 test offer"})
}

#[tokio::test]
async fn a_call_rings_every_session_of_the_identity_and_accept_lets_the_two_parties_signal() {
    let server = TestServer::start(server_config()).await;
    let mut alice = siwe_peer(&server, 1, ADDR1, Value::Null).await;
    let mut bob1 = siwe_peer(&server, 2, ADDR2, json!("anyone")).await;
    let mut bob2 = siwe_peer(&server, 2, ADDR2, json!([ADDR1.to_ascii_lowercase()])).await;
    let mut carol = token_peer(&server, "carol", json!("anyone")).await;
    // The callee named in lowercase: every session of the identity rings.
    let id = ring(&server, &alice, &ADDR2.to_ascii_lowercase()).await;
    for bob in [&mut bob1, &mut bob2] {
        let call = messaging(bob).await;
        assert_eq!(call["type"], "call");
        assert_eq!(call["callId"], id.as_str());
        assert_eq!(call["from"], json!({"kind": "siwe", "id": ADDR1}));
        assert_eq!(call["fromMember"], alice.sid().to_string());
        assert_eq!(call["expiresInMs"], 30_000);
    }
    carol.expect_silence(100).await;
    // Only a rung session answers.
    refused(
        post(&server, &carol, &format!("{id}/accept"), json!({})).await,
        404,
        "call_unknown",
    )
    .await;
    let resp = post(&server, &bob1, &format!("{id}/accept"), json!({})).await;
    assert_eq!(resp.status(), 200);
    let accepted: Value = resp.json().await.unwrap();
    assert_eq!(accepted["peer"], alice.sid().to_string());
    assert_eq!(accepted["from"]["id"], ADDR1);
    let m = messaging(&mut alice).await;
    assert_eq!(
        m,
        json!({"type": "call-accepted", "callId": id, "member": bob1.sid().to_string(),
               "by": {"kind": "siwe", "id": ADDR2}})
    );
    let m = messaging(&mut bob2).await;
    assert_eq!(m["type"], "call-ended");
    assert_eq!(m["reason"], "answered-elsewhere");

    // No room in common: the parties' offer and answer flow, each to the other only.
    alice.send_data(Lane::Messaging, &offer(&bob1), None).await;
    let (h, got) = bob1.expect_data().await;
    assert_eq!(
        (h.from, got["type"].as_str()),
        (Some(alice.sid()), Some("offer"))
    );
    assert_eq!(got["from"], alice.sid().to_string());
    let answer = json!({"type": "answer", "to": alice.sid().to_string(), "sdp": "v=0 answer"});
    bob1.send_data(Lane::Messaging, &answer, None).await;
    let (h, got) = alice.expect_data().await;
    assert_eq!(
        (h.from, got["type"].as_str()),
        (Some(bob1.sid()), Some("answer"))
    );
    bob2.expect_silence(100).await;

    // Anyone else is refused: a stranger, and the callee's other session.
    let seq = carol.send_data(Lane::Messaging, &offer(&bob1), None).await;
    assert_eq!(
        carol.expect_error().await,
        (ErrorCode::NotInRoom, Some(2), Some(seq))
    );
    let seq = bob2.send_data(Lane::Messaging, &offer(&alice), None).await;
    assert_eq!(
        bob2.expect_error().await,
        (ErrorCode::NotInRoom, Some(2), Some(seq))
    );
    alice.expect_silence(100).await;
    bob1.expect_silence(100).await;

    // Hang-up: the other party hears it, and the two can no longer address each other.
    let resp = post(&server, &alice, &format!("{id}/end"), json!({})).await;
    assert_eq!(resp.status(), 204);
    let m = messaging(&mut bob1).await;
    assert_eq!(
        (m["type"].as_str(), m["reason"].as_str()),
        (Some("call-ended"), Some("hangup"))
    );
    let seq = alice.send_data(Lane::Messaging, &offer(&bob1), None).await;
    assert_eq!(
        alice.expect_error().await,
        (ErrorCode::NotInRoom, Some(2), Some(seq))
    );
}

#[tokio::test]
async fn a_declined_call_tells_the_caller_and_cannot_be_accepted_after() {
    let server = TestServer::start(server_config()).await;
    let mut alice = siwe_peer(&server, 1, ADDR1, Value::Null).await;
    let mut carol = token_peer(&server, "carol", json!([ADDR1])).await;
    let id = ring(&server, &alice, "carol").await;
    assert_eq!(messaging(&mut carol).await["type"], "call");
    let resp = post(&server, &carol, &format!("{id}/decline"), json!({})).await;
    assert_eq!(resp.status(), 204);
    assert_eq!(
        messaging(&mut alice).await,
        json!({"type": "call-declined", "callId": id})
    );
    refused(
        post(&server, &carol, &format!("{id}/accept"), json!({})).await,
        404,
        "call_unknown",
    )
    .await;
    // Declined: still no signaling between them.
    let seq = alice.send_data(Lane::Messaging, &offer(&carol), None).await;
    assert_eq!(
        alice.expect_error().await,
        (ErrorCode::NotInRoom, Some(2), Some(seq))
    );
}

#[tokio::test]
async fn a_stranger_cannot_ring_an_identity_that_has_not_allowed_it() {
    let server = TestServer::start(server_config()).await;
    let alice = siwe_peer(&server, 1, ADDR1, Value::Null).await;
    // The default policy is nobody; a list admits only those it names.
    let mut bob = siwe_peer(&server, 2, ADDR2, Value::Null).await;
    let mut carol = token_peer(&server, "carol", json!(["dave", ADDR2])).await;
    refused(initiate(&server, &alice, ADDR2).await, 403, "forbidden").await;
    refused(initiate(&server, &alice, "carol").await, 403, "forbidden").await;
    // A token `sub` is matched exactly.
    refused(
        initiate(&server, &bob, "Carol").await,
        404,
        "callee_unavailable",
    )
    .await;
    ring(&server, &bob, "carol").await;
    assert_eq!(messaging(&mut carol).await["from"]["id"], ADDR2);
    bob.expect_silence(100).await;
    // A policy list over its bound is refused at the handshake.
    let mut body = handshake_body("big", &["json"], &[1, 2]);
    body["acceptCallsFrom"] = json!(vec!["x"; 257]);
    refused(server.handshake_raw(&body).await, 400, "invalid_argument").await;
}

#[tokio::test]
async fn an_unknown_or_offline_callee_is_unavailable() {
    let server = TestServer::start(server_config()).await;
    let alice = siwe_peer(&server, 1, ADDR1, Value::Null).await;
    refused(
        initiate(&server, &alice, "nobody-here").await,
        404,
        "callee_unavailable",
    )
    .await;
    refused(
        initiate(&server, &alice, ADDR2).await,
        404,
        "callee_unavailable",
    )
    .await;
    // Signed in but never connected: nothing can carry the invitation.
    let f = fields(&server, ADDR2, &nonce(&server).await);
    let mut body = handshake_body("offline", &["json"], &[1, 2]);
    body["auth"] = siwe_auth(&key(2), &f);
    body["acceptCallsFrom"] = json!("anyone");
    assert_eq!(server.handshake_raw(&body).await.status(), 200);
    refused(
        initiate(&server, &alice, ADDR2).await,
        404,
        "callee_unavailable",
    )
    .await;
    // Connected without the Messaging lane: same.
    body["auth"] = siwe_auth(&key(2), &fields(&server, ADDR2, &nonce(&server).await));
    body["capabilities"]["lanes"] = json!([1]);
    let resp = server.handshake_raw(&body).await;
    let _bob = server.connect(&resp.json().await.unwrap()).await;
    refused(
        initiate(&server, &alice, ADDR2).await,
        404,
        "callee_unavailable",
    )
    .await;
    // Connected, then gone: its socket closed (a v1 session leaves nothing to ring).
    let bob = siwe_peer(&server, 2, ADDR2, json!("anyone")).await;
    ring(&server, &alice, ADDR2).await;
    bob.close().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    refused(
        initiate(&server, &alice, ADDR2).await,
        404,
        "callee_unavailable",
    )
    .await;
}

#[tokio::test]
async fn an_unauthenticated_caller_is_refused() {
    let server = TestServer::start(server_config()).await;
    let mut bob = siwe_peer(&server, 2, ADDR2, json!("anyone")).await;
    let alice = siwe_peer(&server, 1, ADDR1, Value::Null).await;
    let to = json!({"to": ADDR2});
    let (sid, token) = (alice.sid().to_string(), alice.token().to_owned());
    let unknown = p3_lanes::core::frame::SessionId::from_random_bytes([7; 16]).to_string();
    // The same 401 `unauthorized` for every missing or wrong credential (PROTOCOL.md §2.1):
    // the session id is a public member id, only the session token proves it.
    for (why, sid, token) in [
        ("nothing", None, None),
        ("no bearer token", Some(sid.as_str()), None),
        ("a token without P3-Session", None, Some(token.as_str())),
        (
            "a malformed session id",
            Some("not-a-session"),
            Some(token.as_str()),
        ),
        (
            "an unknown session",
            Some(unknown.as_str()),
            Some(token.as_str()),
        ),
        (
            "a wrong token",
            Some(sid.as_str()),
            Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        ),
        (
            "another session's token",
            Some(sid.as_str()),
            Some(bob.token()),
        ),
    ] {
        let resp = post_as(&server, sid, token, "initiate", to.clone()).await;
        assert_eq!(resp.status(), 401, "{why}");
        assert!(resp.headers().contains_key("www-authenticate"), "{why}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(
            body,
            json!({"error": "unauthorized", "code": "unauthorized"}),
            "{why}"
        );
    }
    // The credentials come before the body: a stranger learns nothing from a bad body.
    refused(
        post_as(&server, Some(&sid), None, "initiate", json!({"bogus": 1})).await,
        401,
        "unauthorized",
    )
    .await;
    bob.expect_silence(100).await;
    // A session with an unverified `wallet` only: not an identity.
    let anon = signed_in(&server, Value::Null, Value::Null).await;
    refused(initiate(&server, &anon, ADDR2).await, 401, "auth_required").await;
    // A device key is not an identity that calls (anyone can make one).
    let device = signed_in(&server, device_auth(&server, 3).await, json!("anyone")).await;
    refused(
        initiate(&server, &device, ADDR2).await,
        401,
        "auth_required",
    )
    .await;
    bob.expect_silence(100).await;
}

#[tokio::test]
async fn only_the_rung_session_with_its_token_answers_or_hangs_up() {
    let server = TestServer::start(server_config()).await;
    let mut alice = siwe_peer(&server, 1, ADDR1, Value::Null).await;
    let mut bob = siwe_peer(&server, 2, ADDR2, json!("anyone")).await;
    let carol = token_peer(&server, "carol", json!("anyone")).await;
    let id = ring(&server, &alice, ADDR2).await;
    assert_eq!(messaging(&mut bob).await["type"], "call");
    // Carol knows bob's member id (it is public) but not his token: she cannot answer.
    let bob_sid = bob.sid().to_string();
    for action in ["accept", "decline", "end"] {
        refused(
            post_as(
                &server,
                Some(&bob_sid),
                Some(carol.token()),
                &format!("{id}/{action}"),
                json!({}),
            )
            .await,
            401,
            "unauthorized",
        )
        .await;
    }
    bob.expect_silence(100).await;
    alice.expect_silence(100).await;
    let resp = post(&server, &bob, &format!("{id}/accept"), json!({})).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(messaging(&mut alice).await["type"], "call-accepted");
    // Nor hang up for alice.
    refused(
        post_as(
            &server,
            Some(&alice.sid().to_string()),
            None,
            &format!("{id}/end"),
            json!({}),
        )
        .await,
        401,
        "unauthorized",
    )
    .await;
    bob.expect_silence(100).await;
}

#[tokio::test]
async fn a_device_key_session_is_never_rung() {
    let server = TestServer::start(server_config()).await;
    let alice = siwe_peer(&server, 1, ADDR1, Value::Null).await;
    let mut device = signed_in(&server, device_auth(&server, 4).await, json!("anyone")).await;
    let id = device.sid().to_string();
    let key = format!("device:{id}");
    for to in [id.as_str(), key.as_str()] {
        refused(
            initiate(&server, &alice, to).await,
            404,
            "callee_unavailable",
        )
        .await;
    }
    device.expect_silence(100).await;
}

#[tokio::test]
async fn the_parties_of_an_accepted_call_address_each_other_on_every_path() {
    let server = TestServer::start(server_config()).await;
    let mut alice = siwe_peer(&server, 1, ADDR1, Value::Null).await;
    let mut bob = siwe_peer(&server, 2, ADDR2, json!("anyone")).await;
    let mut carol = token_peer(&server, "carol", json!("anyone")).await;
    // Each in its own room: "a member addresses members of its own room" would refuse them.
    alice.join("room-a").await;
    bob.join("room-b").await;
    carol.join("room-c").await;
    let hello = json!({"text": "hello"});
    let seq = alice
        .send_data(Lane::Messaging, &hello, Some(bob.sid()))
        .await;
    assert_eq!(
        alice.expect_error().await,
        (ErrorCode::Forbidden, Some(2), Some(seq)),
        "no call yet"
    );
    let id = ring(&server, &alice, ADDR2).await;
    assert_eq!(messaging(&mut bob).await["type"], "call");
    // Ringing permits nothing.
    let seq = alice.send_data(Lane::Messaging, &offer(&bob), None).await;
    assert_eq!(
        alice.expect_error().await,
        (ErrorCode::Forbidden, Some(2), Some(seq))
    );
    let resp = post(&server, &bob, &format!("{id}/accept"), json!({})).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(messaging(&mut alice).await["type"], "call-accepted");

    // WebSocket relay with `to`.
    alice
        .send_data(Lane::Messaging, &hello, Some(bob.sid()))
        .await;
    let (h, got) = bob.expect_data().await;
    assert_eq!((h.from, got), (Some(alice.sid()), hello.clone()));
    // Signaling on the Messaging lane, from another room.
    bob.send_data(Lane::Messaging, &offer(&alice), None).await;
    let (h, got) = alice.expect_data().await;
    assert_eq!(
        (h.from, got["type"].as_str()),
        (Some(bob.sid()), Some("offer"))
    );
    // An HTTP POST with `?to=` (the SSE send path).
    let lane_to = |p: &Peer, to: &Peer| {
        server.url(&format!(
            "/api/protocol/v2/session/{}/lane/2?to={}",
            p.sid(),
            to.sid()
        ))
    };
    let resp = server
        .http
        .post(lane_to(&bob, &alice))
        .bearer_auth(bob.token())
        .json(&hello)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202, "{:?}", resp.text().await);
    let (h, got) = alice.expect_data().await;
    assert_eq!((h.from, got), (Some(bob.sid()), hello.clone()));

    // A stranger is still refused on each path.
    let seq = carol
        .send_data(Lane::Messaging, &hello, Some(bob.sid()))
        .await;
    assert_eq!(
        carol.expect_error().await,
        (ErrorCode::Forbidden, Some(2), Some(seq))
    );
    let seq = carol.send_data(Lane::Messaging, &offer(&alice), None).await;
    assert_eq!(
        carol.expect_error().await,
        (ErrorCode::Forbidden, Some(2), Some(seq))
    );
    let resp = server
        .http
        .post(lane_to(&carol, &alice))
        .bearer_auth(carol.token())
        .json(&hello)
        .send()
        .await
        .unwrap();
    refused(resp, 403, "forbidden").await;
    alice.expect_silence(100).await;
    bob.expect_silence(100).await;

    // Hung up: back to "own room only".
    let resp = post(&server, &bob, &format!("{id}/end"), json!({})).await;
    assert_eq!(resp.status(), 204);
    assert_eq!(messaging(&mut alice).await["reason"], "hangup");
    let seq = alice
        .send_data(Lane::Messaging, &hello, Some(bob.sid()))
        .await;
    assert_eq!(
        alice.expect_error().await,
        (ErrorCode::Forbidden, Some(2), Some(seq))
    );
    let resp = server
        .http
        .post(lane_to(&bob, &alice))
        .bearer_auth(bob.token())
        .json(&hello)
        .send()
        .await
        .unwrap();
    refused(resp, 403, "forbidden").await;
    alice.expect_silence(100).await;
}

#[tokio::test]
async fn an_unanswered_call_expires_for_both_sides() {
    let server = TestServer::start_with(|c| {
        c.jwt_secret = Some(JWT_SECRET.parse().unwrap());
        c.call_ring_timeout_ms = 300;
    })
    .await;
    let mut alice = siwe_peer(&server, 1, ADDR1, Value::Null).await;
    let mut bob = siwe_peer(&server, 2, ADDR2, json!("anyone")).await;
    let id = ring(&server, &alice, ADDR2).await;
    assert_eq!(messaging(&mut bob).await["expiresInMs"], 300);
    for p in [&mut alice, &mut bob] {
        let m = messaging(p).await;
        assert_eq!(
            m,
            json!({"type": "call-ended", "callId": id, "reason": "expired"})
        );
    }
    refused(
        post(&server, &bob, &format!("{id}/accept"), json!({})).await,
        404,
        "call_unknown",
    )
    .await;
}

#[tokio::test]
async fn calls_per_session_are_bounded() {
    let server = TestServer::start(server_config()).await;
    let alice = siwe_peer(&server, 1, ADDR1, Value::Null).await;
    let _carol = token_peer(&server, "carol", json!("anyone")).await;
    for _ in 0..p3_lanes::core::call::MAX_CALLS_PER_SESSION {
        ring(&server, &alice, "carol").await;
    }
    refused(
        initiate(&server, &alice, "carol").await,
        429,
        "too_many_requests",
    )
    .await;
}
