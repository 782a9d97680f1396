//! Session credentials (issue 12, PROTOCOL.md "Security: session credentials") over every
//! route: a session id alone grants nothing. For the WebSocket, both SSE streams, lane POSTs,
//! GET/DELETE of the session, the ticket route, the admin endpoints and the signaling server,
//! a stranger without credentials, with a wrong token, with another session's token, with a
//! used ticket or an expired one gets the documented refusal (401 `unauthorized` /
//! close 4401), the same for an unknown session, and the victim keeps working. A frame
//! addressed with `to` outside the sender's room is `forbidden` on every path.

mod common;

use common::{config, token, with_ticket, Peer, Received, TestServer, ADMIN_TOKEN, WAIT};
use futures::{SinkExt, StreamExt};
use p3_lanes::core::control::Control;
use p3_lanes::core::error::ErrorCode;
use p3_lanes::core::frame::SessionId;
use p3_lanes::core::handshake::{ticket_path, HandshakeResponse, MAX_TICKETS};
use p3_lanes::core::lane::Lane;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// A token of the right shape that belongs to nobody.
const WRONG_TOKEN: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
/// A ticket of the right shape that belongs to nobody.
const WRONG_TICKET: &str = "AAAAAAAAAAAAAAAAAAAAAA";
/// An id no session has.
const UNKNOWN: &str = "00000000-0000-4000-8000-000000000000";

/// Asserts the one refusal of session credentials: 401, `WWW-Authenticate: Bearer`, body
/// `{"error": "unauthorized", "code": "unauthorized"}` (identical for every cause).
async fn assert_unauthorized(resp: reqwest::Response, what: &str) {
    assert_eq!(resp.status(), 401, "{what}");
    assert_eq!(
        resp.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer"),
        "{what}"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": "unauthorized", "code": "unauthorized"}),
        "{what}"
    );
}

/// The credentials a stranger may try against `victim`: none, a wrong token, `other`'s token.
fn bad_tokens(other: &HandshakeResponse) -> Vec<(&'static str, Option<String>)> {
    vec![
        ("no Authorization", None),
        ("a wrong token", Some(WRONG_TOKEN.to_owned())),
        ("another session's token", Some(token(other))),
    ]
}

fn request(
    server: &TestServer,
    method: Method,
    path: &str,
    bearer: Option<&str>,
) -> reqwest::RequestBuilder {
    let req = server.http.request(method, server.url(path));
    match bearer {
        Some(t) => req.bearer_auth(t),
        None => req,
    }
}

async fn sse_handshake(server: &TestServer, client_id: &str) -> HandshakeResponse {
    let resp = server
        .handshake_raw(&json!({
            "clientId": client_id,
            "capabilities": {"transports": ["sse"], "encodings": ["json"], "lanes": [1, 2]},
        }))
        .await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

#[tokio::test]
async fn the_handshake_gives_a_secret_token_and_a_first_ticket_never_shown_in_debug() {
    let server = TestServer::start(config()).await;
    let hs = server.handshake("a", &["json"], &[1, 2]).await;
    let t = token(&hs);
    assert_eq!(t.len(), 43, "32 bytes, base64url without padding");
    let ticket = hs.ticket.clone().expect("a first ticket");
    assert!(ticket.expose().len() >= 22, "16+ bytes");
    let shown = format!("{hs:?}");
    assert!(!shown.contains(&t) && !shown.contains(ticket.expose()));
    // The first ticket opens the first socket, once.
    let path = with_ticket(&hs.websocket_url, ticket.expose());
    let mut first = server.connect_raw(&path).await;
    assert!(matches!(
        first.expect_control().await,
        Control::Welcome { .. }
    ));
    let mut again = server.connect_raw(&path).await;
    assert_eq!(again.expect_error().await.0, ErrorCode::Unauthorized);
    assert_eq!(again.expect_close().await, 4401);
    first.ping_pong().await;
    // Another member sees the id, never the token.
    let mut b = server.peer("b", &[1, 2]).await;
    let mut a = Peer {
        sid: Some(hs.session_id),
        ..first
    };
    a.join("r").await;
    b.join("r").await;
    let _ = a.expect_control().await; // peer-joined
    a.send_data(Lane::Messaging, &json!({"hi": 1}), None).await;
    let (h, v) = b.expect_data().await;
    assert_eq!(h.from, Some(hs.session_id));
    assert!(!v.to_string().contains(&t));
}

#[tokio::test]
async fn session_http_routes_refuse_strangers_alike_and_the_victim_keeps_working() {
    let server = TestServer::start(config()).await;
    let victim_hs = server.handshake("victim", &["json"], &[1, 2]).await;
    let other_hs = server.handshake("other", &["json"], &[1, 2]).await;
    let mut victim = server.connect(&victim_hs).await;
    victim.join("room").await;
    let sid = victim_hs.session_id;
    let routes = [
        (Method::GET, format!("/api/protocol/v2/session/{sid}")),
        (Method::DELETE, format!("/api/protocol/v2/session/{sid}")),
        (Method::POST, ticket_path(sid)),
        (
            Method::POST,
            format!("/api/protocol/v2/session/{sid}/lane/2"),
        ),
        (
            Method::POST,
            format!("/api/protocol/v2/session/{sid}/lane/1"),
        ),
    ];
    for (method, path) in &routes {
        for (why, bearer) in bad_tokens(&other_hs) {
            let body = if path.ends_with("lane/1") {
                json!({"type": "join", "room": "elsewhere"})
            } else {
                json!({"as": "victim"})
            };
            let resp = request(&server, method.clone(), path, bearer.as_deref())
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_unauthorized(resp, &format!("{method} {path} with {why}")).await;
        }
    }
    // An unknown session answers exactly the same, even with a real token.
    for (method, suffix) in [
        (Method::GET, ""),
        (Method::DELETE, ""),
        (Method::POST, "/ticket"),
        (Method::POST, "/lane/2"),
    ] {
        let path = format!("/api/protocol/v2/session/{UNKNOWN}{suffix}");
        let resp = request(&server, method.clone(), &path, Some(&token(&victim_hs)))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_unauthorized(resp, &format!("{method} {path} (unknown session)")).await;
    }
    // Nothing reached the victim, it was neither moved nor deleted, and it still works.
    victim.expect_silence(200).await;
    victim.ping_pong().await;
    let resp = server
        .authed(
            Method::GET,
            &format!("/api/protocol/v2/session/{sid}"),
            &token(&victim_hs),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let status: Value = resp.json().await.unwrap();
    assert_eq!(status["room"], "room");
    assert_eq!(status["connected"], true);
    // Its own token does what a token does.
    let resp = server
        .authed(
            Method::POST,
            &format!("/api/protocol/v2/session/{sid}/lane/2"),
            &token(&victim_hs),
        )
        .json(&json!({"mine": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let resp = server
        .authed(
            Method::DELETE,
            &format!("/api/protocol/v2/session/{sid}"),
            &token(&victim_hs),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(victim.expect_close().await, 4404);
}

/// Opens the session WebSocket at `path`; expects the refusal: `unauthorized` then 4401.
async fn expect_ws_refused(server: &TestServer, path: &str, what: &str) {
    let mut p = server.connect_raw(path).await;
    match p.recv().await {
        Received::Control(
            _,
            Control::Error {
                code: ErrorCode::Unauthorized,
                ..
            },
        ) => {}
        other => panic!("{what}: expected an unauthorized error frame, got {other:?}"),
    }
    assert_eq!(p.expect_close().await, 4401, "{what}");
}

#[tokio::test]
async fn the_websocket_needs_a_live_ticket_of_its_own_session() {
    let server = TestServer::start_with(|c| c.ticket_ttl_ms = 300).await;
    let victim_hs = server.handshake("victim", &["json"], &[1, 2]).await;
    let other_hs = server.handshake("other", &["json"], &[1, 2]).await;
    let mut victim = server.connect(&victim_hs).await;
    let ws = victim_hs.websocket_url.clone();
    expect_ws_refused(&server, &ws, "no ticket").await;
    expect_ws_refused(&server, &with_ticket(&ws, WRONG_TICKET), "a wrong ticket").await;
    expect_ws_refused(&server, &with_ticket(&ws, "x"), "a malformed ticket").await;
    let foreign = server.ticket(other_hs.session_id, &token(&other_hs)).await;
    expect_ws_refused(
        &server,
        &with_ticket(&ws, &foreign),
        "another session's ticket",
    )
    .await;
    let unknown = format!("/api/protocol/v2/session/{UNKNOWN}/ws");
    let real = server
        .ticket(victim_hs.session_id, &token(&victim_hs))
        .await;
    expect_ws_refused(&server, &with_ticket(&unknown, &real), "an unknown session").await;
    let expired = server
        .ticket(victim_hs.session_id, &token(&victim_hs))
        .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    expect_ws_refused(&server, &with_ticket(&ws, &expired), "an expired ticket").await;
    // The refused sockets replaced nothing: the victim's socket is still the session's.
    victim.ping_pong().await;
    // A resumed socket needs a fresh ticket: the one it used is spent.
    let used = server
        .ticket(victim_hs.session_id, &token(&victim_hs))
        .await;
    let mut second = server.connect_raw(&with_ticket(&ws, &used)).await;
    assert!(matches!(
        second.expect_control().await,
        Control::Welcome { .. }
    ));
    assert_eq!(victim.expect_close().await, 4409, "replaced by its owner");
    second.close().await;
    expect_ws_refused(&server, &with_ticket(&ws, &used), "a used ticket").await;
    let mut third = server.connect(&victim_hs).await;
    third.ping_pong().await;
}

#[tokio::test]
async fn tickets_are_bounded_per_session() {
    let server = TestServer::start(config()).await;
    let hs = server.handshake("a", &["json"], &[1]).await;
    let mut minted = Vec::new();
    for _ in 0..=MAX_TICKETS {
        minted.push(server.ticket(hs.session_id, &token(&hs)).await);
    }
    expect_ws_refused(
        &server,
        &with_ticket(&hs.websocket_url, &minted[0]),
        "the oldest ticket past the bound",
    )
    .await;
    let mut p = server
        .connect_raw(&with_ticket(&hs.websocket_url, &minted[MAX_TICKETS]))
        .await;
    assert!(matches!(p.expect_control().await, Control::Welcome { .. }));
}

#[tokio::test]
async fn both_sse_streams_need_a_live_ticket_and_the_victims_stream_keeps_flowing() {
    let server = TestServer::start_with(|c| c.ticket_ttl_ms = 300).await;
    let victim_hs = sse_handshake(&server, "victim").await;
    let other_hs = sse_handshake(&server, "other").await;
    let sid = victim_hs.session_id;
    let stream = format!("/api/protocol/v2/session/{sid}/stream");
    let lane = format!("/api/protocol/v2/session/{sid}/lane/2/stream");
    // The victim's own stream, opened with its first ticket.
    let first = victim_hs.ticket.clone().unwrap();
    let own = server.get(&with_ticket(&stream, first.expose())).await;
    assert_eq!(own.status(), 200);
    let mut own = eventsource_stream::Eventsource::eventsource(own.bytes_stream());
    let foreign = server.ticket(other_hs.session_id, &token(&other_hs)).await;
    let expired = server.ticket(sid, &token(&victim_hs)).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    for path in [&stream, &lane] {
        let cases = [
            ("no ticket", path.clone()),
            ("a wrong ticket", with_ticket(path, WRONG_TICKET)),
            ("another session's ticket", with_ticket(path, &foreign)),
            ("a used ticket", with_ticket(path, first.expose())),
            ("an expired ticket", with_ticket(path, &expired)),
        ];
        for (why, url) in cases {
            assert_unauthorized(server.get(&url).await, &format!("{path} with {why}")).await;
        }
        let unknown = path.replace(&sid.to_string(), UNKNOWN);
        let real = server.ticket(sid, &token(&victim_hs)).await;
        assert_unauthorized(
            server.get(&with_ticket(&unknown, &real)).await,
            "an unknown session",
        )
        .await;
    }
    // The victim's stream still carries what is sent to it.
    let resp = server
        .authed(
            Method::POST,
            &format!("/api/protocol/v2/session/{sid}/lane/1"),
            &token(&victim_hs),
        )
        .json(&json!({"type": "join", "room": "r"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let joined = tokio::time::timeout(WAIT, async {
        while let Some(Ok(ev)) = own.next().await {
            if ev.data.contains("\"joined\"") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap();
    assert!(joined, "the victim's stream got its joined");
    // A fresh ticket opens the per-lane stream too.
    let fresh = server.ticketed(&victim_hs, &lane).await;
    assert_eq!(server.get(&fresh).await.status(), 200);
}

/// `a` and `b` in room `r`, `c` in room `s`; all with lanes 1, 2, 5 and sockets.
async fn three(server: &TestServer) -> (Peer, Peer, Peer) {
    let mut a = server.peer("a", &[1, 2, 5]).await;
    let mut b = server.peer("b", &[1, 2, 5]).await;
    let mut c = server.peer("c", &[1, 2, 5]).await;
    a.join("r").await;
    b.join("r").await;
    let _ = a.expect_control().await; // peer-joined
    c.join("s").await;
    (a, b, c)
}

#[tokio::test]
async fn to_may_only_name_members_of_the_senders_room() {
    let server = TestServer::start(config()).await;
    let (mut a, mut b, mut c) = three(&server).await;
    let unknown: SessionId = UNKNOWN.parse().unwrap();
    // WebSocket relay.
    for target in [c.sid(), unknown] {
        a.send_data(Lane::Messaging, &json!({"x": 1}), Some(target))
            .await;
        assert_eq!(a.expect_error().await.0, ErrorCode::Forbidden, "{target}");
    }
    // Signaling on the Messaging lane.
    a.send_data(
        Lane::Messaging,
        &json!({"type": "offer", "to": c.sid().to_string(), "sdp": "v=0"}),
        None,
    )
    .await;
    assert_eq!(a.expect_error().await.0, ErrorCode::Forbidden);
    // SSE POST with ?to=.
    let (a_sid, a_token) = (a.sid(), a.token().to_owned());
    let post = |to: SessionId| {
        server
            .authed(
                Method::POST,
                &format!("/api/protocol/v2/session/{a_sid}/lane/2?to={to}"),
                &a_token,
            )
            .json(&json!({"x": 2}))
            .send()
    };
    for target in [c.sid(), unknown] {
        let resp = post(target).await.unwrap();
        assert_eq!(resp.status(), 403);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "forbidden");
    }
    c.expect_silence(200).await;
    // Inside the room, `to` works.
    a.send_data(Lane::Messaging, &json!({"x": 3}), Some(b.sid()))
        .await;
    assert_eq!(b.expect_data().await.1, json!({"x": 3}));
    assert_eq!(post(b.sid()).await.unwrap().status(), 202);
    assert_eq!(b.expect_data().await.1, json!({"x": 2}));
}

#[tokio::test]
async fn admin_endpoints_need_the_admin_token_besides_loopback() {
    let server = TestServer::start(config()).await;
    let hs = server.handshake("a", &["json"], &[1]).await;
    let routes = [
        ("/api/admin/version", json!({"version": "9.9.9"})),
        ("/api/admin/sse/close", json!({})),
    ];
    for (path, body) in &routes {
        for (why, bearer) in [
            ("no token", None),
            ("a wrong token", Some("not-the-admin-token-at-all")),
        ] {
            let resp = request(&server, Method::POST, path, bearer)
                .json(body)
                .send()
                .await
                .unwrap();
            assert_unauthorized(resp, &format!("{path} with {why}")).await;
        }
        let resp = request(&server, Method::POST, path, Some(&token(&hs)))
            .json(body)
            .send()
            .await
            .unwrap();
        assert_unauthorized(resp, &format!("{path} with a session token")).await;
    }
    assert_eq!(
        server
            .get("/api/version")
            .await
            .json::<Value>()
            .await
            .unwrap()["version"],
        "test-1.2.3",
        "nothing changed"
    );
    for (path, body) in &routes {
        let resp = request(&server, Method::POST, path, Some(ADMIN_TOKEN))
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path} with the admin token");
    }
}

/// A signaling socket that sent `auth` with `signature`; returns its first answer.
async fn signaling_auth(server: &TestServer, sid: &str, signature: &str) -> Value {
    let url = format!("ws://{}/api/signaling", server.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.send(Message::text(
        json!({"type": "auth", "address": sid, "signature": signature}).to_string(),
    ))
    .await
    .unwrap();
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("no answer to auth: {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_signaling_token_expires_and_every_refusal_is_alike() {
    let server = TestServer::start_with(|c| c.signaling_token_ttl_s = 1).await;
    let a = server.handshake("a", &["json"], &[1]).await;
    let b = server.handshake("b", &["json"], &[1]).await;
    let (a_sid, a_sig) = (a.session_id.to_string(), a.signaling_token.clone().unwrap());
    let b_sig = b.signaling_token.clone().unwrap();
    let ok = signaling_auth(&server, &a_sid, &a_sig).await;
    assert_eq!(ok["type"], "auth_ok");
    let mut refusals = Vec::new();
    refusals.push(signaling_auth(&server, &a_sid, &b_sig).await);
    refusals.push(signaling_auth(&server, &a_sid, WRONG_TOKEN).await);
    refusals.push(signaling_auth(&server, UNKNOWN, &a_sig).await);
    // A deleted session's token.
    let resp = server
        .authed(
            Method::DELETE,
            &format!("/api/protocol/v2/session/{}", b.session_id),
            &token(&b),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    refusals.push(signaling_auth(&server, &b.session_id.to_string(), &b_sig).await);
    // An expired token of a live session.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    refusals.push(signaling_auth(&server, &a_sid, &a_sig).await);
    for r in &refusals {
        assert_eq!(r, &refusals[0], "every refusal is alike");
    }
    assert_eq!(refusals[0]["code"], "unauthorized");
}

/// PROTOCOL.md §2.1 "Unknown session ids" (issue 13 point 9): every route naming a session
/// needs a credential, so a well-formed unknown id is refused exactly like a stranger (401 or
/// 4401; never a 404 that would tell live ids from dead ones), with or without credentials,
/// while a malformed id is 400 `bad_request`.
#[tokio::test]
async fn a_well_formed_unknown_session_id_is_refused_like_a_stranger_on_every_route() {
    let server = TestServer::start(config()).await;
    let hs = server.handshake("real", &["json"], &[1, 2]).await;
    let base = format!("/api/protocol/v2/session/{UNKNOWN}");
    let http_routes = [
        (Method::GET, base.clone()),
        (Method::DELETE, base.clone()),
        (Method::POST, format!("{base}/ticket")),
        (Method::POST, format!("{base}/lane/1")),
        (Method::POST, format!("{base}/lane/2")),
        (Method::GET, format!("{base}/lane/2/stream")),
        (
            Method::GET,
            with_ticket(&format!("{base}/lane/2/stream"), WRONG_TICKET),
        ),
        (Method::GET, format!("{base}/stream?lanes=1,2")),
        (
            Method::GET,
            format!("{base}/stream?lanes=1,2&ticket={WRONG_TICKET}"),
        ),
    ];
    for (method, path) in &http_routes {
        for bearer in [None, Some(token(&hs))] {
            let resp = request(&server, method.clone(), path, bearer.as_deref())
                .json(&json!({"type": "ping", "clientTime": 1}))
                .send()
                .await
                .unwrap();
            let what = format!("{method} {path} (bearer: {})", bearer.is_some());
            assert_unauthorized(resp, &what).await;
        }
    }
    expect_ws_refused(&server, &format!("{base}/ws"), "no ticket, unknown id").await;
    let malformed = "/api/protocol/v2/session/not-a-uuid";
    for method in [Method::GET, Method::DELETE] {
        let resp = request(&server, method.clone(), malformed, None)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{method} {malformed}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "bad_request");
    }
}
