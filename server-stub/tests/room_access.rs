//! Room access policy (issue 12; PROTOCOL.md §6.1): `--room-access open|authenticated|token`
//! over both join paths (WebSocket Control `join`, `POST` of a `join`), the `room-key` only to
//! admitted members, and TURN REST credentials only to admitted members outside `open`.

mod common;

use base64::Engine;
use common::auth::*;
use common::{Peer, TestServer};
use hmac::{Hmac, Mac};
use p3_lanes::core::control::Control;
use p3_lanes::core::error::ErrorCode;
use p3_lanes::core::handshake::HandshakeResponse;
use serde_json::{json, Value};
use server_stub::auth::policy::RoomAccess;

async fn server(access: RoomAccess) -> TestServer {
    TestServer::start_with(|c| {
        c.room_access = access;
        c.jwt_secret = Some(JWT_SECRET.parse().unwrap());
        c.turn_secret = Some("turn-shared-secret".parse().unwrap());
        c.turn_urls = "turn:turn.test:3478".into();
        c.stun_urls = String::new();
    })
    .await
}

/// Opens the WebSocket of a handshake answer (JSON).
async fn connect(server: &TestServer, hs: &Value) -> Peer {
    let hs: HandshakeResponse = serde_json::from_value(hs.clone()).unwrap();
    server.connect(&hs).await
}

/// An anonymous session's handshake answer.
async fn anonymous(server: &TestServer) -> Value {
    let resp = server
        .handshake_raw(&common::handshake_body(
            "anon",
            &["msgpack", "json"],
            &[1, 2, 5],
        ))
        .await;
    resp.json().await.unwrap()
}

/// A token session admitted to `rooms`.
async fn token_session(server: &TestServer, sub: &str, rooms: &[&str]) -> Value {
    let token = jwt_hs256(JWT_SECRET, &claims(sub, rooms));
    let resp = handshake_auth(server, json!({ "token": token })).await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// Sends a WebSocket `join` and expects a Control `error` with `code` and nothing after it:
/// no `joined`, no `room-key`.
async fn ws_join_refused(peer: &mut Peer, room: &str, code: ErrorCode) {
    peer.send_control(&Control::Join { room: room.into() })
        .await;
    let (got, lane, _) = peer.expect_error().await;
    assert_eq!((got, lane), (code, Some(1)));
    peer.expect_silence(200).await;
}

/// POSTs a `join` and expects `status` with `code`; the session is in no room after it.
async fn post_join_refused(server: &TestServer, hs: &Value, room: &str, status: u16, code: &str) {
    let resp = post_join(server, hs, room).await;
    assert_eq!(resp.status(), status);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    let st = session_status(server, hs).await;
    assert_eq!(st["room"], Value::Null);
}

#[tokio::test]
async fn open_admits_everyone_over_both_paths() {
    let server = server(RoomAccess::Open).await;
    let hs = anonymous(&server).await;
    let mut a = connect(&server, &hs).await;
    a.join("r").await;
    assert!(a.room_key.is_some());
    let other = anonymous(&server).await;
    assert_eq!(post_join(&server, &other, "r").await.status(), 202);
}

#[tokio::test]
async fn authenticated_refuses_anonymous_joins_and_admits_identities() {
    let server = server(RoomAccess::Authenticated).await;
    // A signed-in member, already in the room, must hear nothing of refused joins.
    let mut member = connect(&server, &siwe_session(&server, 1, ADDR1).await).await;
    member.join("club").await;

    let anon = anonymous(&server).await;
    let mut a = connect(&server, &anon).await;
    ws_join_refused(&mut a, "club", ErrorCode::AuthRequired).await;
    post_join_refused(&server, &anon, "club", 401, "auth_required").await;
    member.expect_silence(200).await;

    // Over POST, a signed-in session (token or SIWE) is admitted.
    let tok = token_session(&server, "t", &[]).await;
    assert_eq!(post_join(&server, &tok, "club").await.status(), 202);
    // Over WebSocket, the second key's identity joins and gets the room key.
    let mut b = connect(&server, &siwe_session(&server, 2, ADDR2).await).await;
    b.join("club").await;
    assert_eq!(b.room_key, member.room_key);
}

#[tokio::test]
async fn token_admits_only_the_rooms_of_the_token() {
    let server = server(RoomAccess::Token).await;
    let tok = token_session(&server, "user-1", &["stage"]).await;
    let mut t = connect(&server, &tok).await;
    t.join("stage").await;
    ws_join_refused(&mut t, "backstage", ErrorCode::Forbidden).await;
    post_join_refused(
        &server,
        &token_session(&server, "user-2", &["stage"]).await,
        "backstage",
        403,
        "forbidden",
    )
    .await;
    // A SIWE identity has no token rooms: forbidden; no identity: auth_required.
    let siwe = siwe_session(&server, 1, ADDR1).await;
    let mut s = connect(&server, &siwe).await;
    ws_join_refused(&mut s, "stage", ErrorCode::Forbidden).await;
    post_join_refused(&server, &siwe, "stage", 403, "forbidden").await;
    let anon = anonymous(&server).await;
    let mut a = connect(&server, &anon).await;
    ws_join_refused(&mut a, "stage", ErrorCode::AuthRequired).await;
    post_join_refused(&server, &anon, "stage", 401, "auth_required").await;
    // The admitted member heard none of it.
    t.expect_silence(200).await;
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Sends `v` on a signaling socket and returns the next JSON message.
async fn ask(ws: &mut Ws, v: Value) -> Value {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::text(v.to_string())).await.unwrap();
    loop {
        match tokio::time::timeout(common::WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("signaling socket ended: {other:?}"),
        }
    }
}

/// Authenticates on the seed 001 signaling server (`GET /api/signaling`) as the session of
/// `hs`, sends `join` of `room` and returns the answer.
async fn signaling_join(server: &TestServer, hs: &Value, room: &str) -> Value {
    let url = format!("ws://{}/api/signaling", server.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let auth =
        json!({"type": "auth", "address": hs["sessionId"], "signature": hs["signalingToken"]});
    let ok = ask(&mut ws, auth).await;
    assert_eq!(ok["type"], "auth_ok", "{ok}");
    ask(&mut ws, json!({"type": "join", "roomId": room})).await
}

#[tokio::test]
async fn the_signaling_server_applies_the_policy_too() {
    let server = server(RoomAccess::Token).await;
    let code = |v: &Value| {
        (
            v["type"].as_str().map(str::to_owned),
            v["code"].as_str().map(str::to_owned),
        )
    };
    let anon = signaling_join(&server, &anonymous(&server).await, "stage").await;
    assert_eq!(
        code(&anon),
        (Some("error".into()), Some("auth_required".into())),
        "{anon}"
    );
    let tok = token_session(&server, "user-1", &["stage"]).await;
    let other = signaling_join(&server, &tok, "backstage").await;
    assert_eq!(
        code(&other),
        (Some("error".into()), Some("forbidden".into())),
        "{other}"
    );
    let ok = signaling_join(&server, &tok, "stage").await;
    assert_eq!(ok["type"], "joined", "{ok}");
}

/// `GET /api/webrtc/config` as the session of `hs` with its bearer secret (the session token),
/// if given.
async fn webrtc_config(server: &TestServer, hs: Option<&Value>) -> Value {
    let mut req = server.http.get(server.url("/api/webrtc/config"));
    if let Some(hs) = hs {
        req = req
            .query(&[("sessionId", hs["sessionId"].as_str().unwrap())])
            .bearer_auth(hs["sessionToken"].as_str().unwrap());
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// The TURN entry's `(username, credential)`, if any.
fn turn(config: &Value) -> Option<(String, String)> {
    config["iceServers"].as_array()?.iter().find_map(|s| {
        Some((
            s.get("username")?.as_str()?.to_owned(),
            s.get("credential")?.as_str()?.to_owned(),
        ))
    })
}

/// Checks a TURN REST credential: `<expiry>:<user>` with expiry ≈ now + 1 h, and the HMAC.
fn assert_turn_valid(username: &str, credential: &str, user: &str) {
    let (expiry, u) = username.split_once(':').unwrap();
    assert_eq!(u, user);
    let expiry: u64 = expiry.parse().unwrap();
    let now = now_ms() / 1000;
    assert!(
        (now + 3590..=now + 3610).contains(&expiry),
        "{expiry} vs {now}"
    );
    let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(b"turn-shared-secret").unwrap();
    mac.update(username.as_bytes());
    let want = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(credential, want);
}

#[tokio::test]
async fn turn_credentials_are_ephemeral_and_for_anyone_in_open_mode() {
    let server = server(RoomAccess::Open).await;
    let (u, c) = turn(&webrtc_config(&server, None).await).expect("a TURN entry");
    assert_turn_valid(&u, &c, "open");
    let hs = siwe_session(&server, 1, ADDR1).await;
    let (u, c) = turn(&webrtc_config(&server, Some(&hs)).await).unwrap();
    assert_turn_valid(&u, &c, ADDR1);
}

#[tokio::test]
async fn turn_credentials_only_for_admitted_members_outside_open() {
    let server = server(RoomAccess::Authenticated).await;
    assert_eq!(
        turn(&webrtc_config(&server, None).await),
        None,
        "no session"
    );
    let hs = siwe_session(&server, 1, ADDR1).await;
    assert_eq!(
        turn(&webrtc_config(&server, Some(&hs)).await),
        None,
        "not in a room yet"
    );
    // A wrong bearer secret for the session gets nothing either.
    let mut forged = hs.clone();
    forged["sessionToken"] = json!("AAAA");
    let mut peer = connect(&server, &hs).await;
    peer.join("club").await;
    assert_eq!(
        turn(&webrtc_config(&server, Some(&forged)).await),
        None,
        "wrong bearer"
    );
    let (u, c) = turn(&webrtc_config(&server, Some(&hs)).await).expect("admitted member");
    assert_turn_valid(&u, &c, ADDR1);
    // An anonymous session's bearer is not enough.
    let anon = anonymous(&server).await;
    assert_eq!(turn(&webrtc_config(&server, Some(&anon)).await), None);
}
