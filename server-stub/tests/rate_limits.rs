//! Rate limits end to end (issue 11 "Rate limiting", PROTOCOL.md §15), against the real server
//! on 127.0.0.1 port 0: every budget is hit and answered as documented (HTTP 429 with
//! `{error, code: "rate_limited", retryAfterMs}`, `Retry-After` and `RateLimit-*` headers; a
//! Control `error` naming the refused frame; close 4429 past `--rate-strikes`), while another
//! client IP (127.0.0.2) or another session keeps being served, and a session flooding one lane
//! keeps its other lanes. Budgets are set per minute so nothing refills during a test: no
//! timing assumption. Each test fails if its limit is removed (the refused request would pass).

mod common;

use common::{config, handshake_body, pair, pair_on, Peer, Received, TestServer, WAIT};
use futures::{SinkExt, StreamExt};
use p3_lanes::core::client::{Action, Client, ClientConfig, Event, Output};
use p3_lanes::core::control::Control;
use p3_lanes::core::drive::Millis;
use p3_lanes::core::error::ErrorCode;
use p3_lanes::core::handshake::{HandshakeResponse, FEATURE_MUX};
use p3_lanes::core::lane::Lane;
use serde_json::{json, Value};
use server_stub::limits::rate::Rate;
use server_stub::limits::{RateLimitsMode, CLOSE_RATE_LIMITED};
use server_stub::Config;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;

/// A second client address on the loopback network (Linux routes all of 127/8 to `lo`).
const OTHER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// `n` per minute, burst `n`: `n` allowed at once, then one more a minute later.
fn per_min(n: u32) -> Rate {
    Rate::per_minute(n, n).unwrap()
}

/// An HTTP client whose connections come from [`OTHER_IP`].
fn other_http() -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(OTHER_IP)
        .build()
        .unwrap()
}

/// Checks a 429 `rate_limited` answer: JSON body and headers, `limit` as `RateLimit-Limit`;
/// returns `retryAfterMs`.
async fn assert_rate_limited(resp: reqwest::Response, limit: u32) -> u64 {
    assert_eq!(resp.status(), 429);
    let h = resp.headers().clone();
    let header = |name: &str| -> u64 {
        h.get(name)
            .unwrap_or_else(|| panic!("{name} header"))
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let retry_after = header("retry-after");
    assert_eq!(header("ratelimit-limit"), u64::from(limit));
    assert_eq!(header("ratelimit-remaining"), 0);
    assert_eq!(header("ratelimit-reset"), retry_after);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited", "{body}");
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
    let ms = body["retryAfterMs"].as_u64().expect("retryAfterMs");
    // Per minute: the next one is allowed within a minute; Retry-After is ms rounded up to s.
    assert!((1..=60_000).contains(&ms), "{ms}");
    assert_eq!(retry_after, ms.div_ceil(1000));
    ms
}

#[tokio::test]
async fn handshakes_per_ip_get_429_and_other_ips_are_still_served() {
    let server = TestServer::start_with(|c| c.rate_ip_handshake = per_min(3)).await;
    let body = handshake_body("h", &["msgpack"], &[1]);
    for remaining in [2, 1, 0] {
        let resp = server.handshake_raw(&body).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["ratelimit-limit"], "3");
        assert_eq!(resp.headers()["ratelimit-remaining"], remaining.to_string());
    }
    assert_rate_limited(server.handshake_raw(&body).await, 3).await;
    // Another address has its own budget.
    let resp = other_http()
        .post(server.url("/api/protocol/v2/session/handshake"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Routes without a per-IP budget are not limited.
    assert_eq!(server.get("/api/version").await.status(), 200);
}

#[tokio::test]
async fn without_connect_info_every_client_shares_one_key() {
    // `app(state)` served without `into_make_service_with_connect_info`: no peer address.
    let state = server_stub::AppState::new(Config {
        rate_ip_handshake: per_min(2),
        ..config()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, server_stub::app(state)).await });
    let url = format!("http://{addr}/api/protocol/v2/session/handshake");
    let body = handshake_body("n", &["msgpack"], &[1]);
    let send = |http: reqwest::Client| {
        let (url, body) = (url.clone(), body.clone());
        async move { http.post(url).json(&body).send().await.unwrap() }
    };
    assert_eq!(send(reqwest::Client::new()).await.status(), 200);
    assert_eq!(send(other_http()).await.status(), 200);
    // Not a 500 for the missing address: the shared budget is used up.
    assert_rate_limited(send(reqwest::Client::new()).await, 2).await;
    assert_rate_limited(send(other_http()).await, 2).await;
    server.abort();
}

/// `POST` a Control `ping` to lane 1 of `sid` with `http`.
async fn post_ping(server: &TestServer, http: &reqwest::Client, sid: &str) -> reqwest::Response {
    let path = format!("/api/protocol/v2/session/{sid}/lane/1");
    http.post(server.url(&path))
        // A session this server never gave: no real token (the per-IP budget answers first).
        .bearer_auth(server.token_for(&path).unwrap_or_default())
        .json(&json!({"type": "ping", "clientTime": 1.0}))
        .send()
        .await
        .unwrap()
}

/// Posts `limit` pings to `sid` (each accepted: 202), then one more, refused with 429.
async fn use_up_posts(server: &TestServer, sid: &str, limit: u32) {
    for _ in 0..limit {
        assert_eq!(post_ping(server, &server.http, sid).await.status(), 202);
    }
    assert_rate_limited(post_ping(server, &server.http, sid).await, limit).await;
}

#[tokio::test]
async fn lane_posts_per_ip_get_429() {
    let server = TestServer::start_with(|c| c.rate_ip_post = per_min(2)).await;
    let hs = server.handshake("p", &["json"], &[1]).await;
    let sid = hs.session_id.to_string();
    use_up_posts(&server, &sid, 2).await;
    // The per-IP budget is checked first: an unknown session gets the 429 too.
    let unknown = "00000000-0000-4000-8000-000000000000";
    assert_rate_limited(post_ping(&server, &server.http, unknown).await, 2).await;
    assert_eq!(post_ping(&server, &other_http(), &sid).await.status(), 202);
}

#[tokio::test]
async fn lane_posts_per_session_get_429_and_other_sessions_are_still_served() {
    let server = TestServer::start_with(|c| c.rate_control = per_min(2)).await;
    let a = server.handshake("a", &["json"], &[1]).await.session_id;
    let b = server.handshake("b", &["json"], &[1]).await.session_id;
    use_up_posts(&server, &a.to_string(), 2).await;
    // Same address, another session: its own Control budget.
    let resp = post_ping(&server, &server.http, &b.to_string()).await;
    assert_eq!(resp.status(), 202);
}

/// Opens a WebSocket to `path` from `from` (or the default address); the HTTP status of a
/// refused upgrade as `Err`.
async fn ws_from(server: &TestServer, from: Option<IpAddr>, path: &str) -> Result<Peer, u16> {
    let url = format!("ws://{}{}", server.addr, path);
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(
            from.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            0,
        ))
        .unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    match tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream))
        .await
    {
        Ok((ws, _)) => Ok(Peer::new(ws)),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("websocket connect: {e}"),
    }
}

#[tokio::test]
async fn websocket_sse_and_signaling_upgrades_per_ip_get_429() {
    let server = TestServer::start_with(|c| c.rate_ip_upgrade = per_min(3)).await;
    let hs = server.handshake("u", &["msgpack"], &[1]).await;
    // Three upgrades of three kinds use up the budget ...
    // Tickets first: minting is a POST, not an upgrade.
    let (first_path, other_path) = (server.ws_path(&hs).await, server.ws_path(&hs).await);
    let sse_path = server
        .owned(&format!(
            "/api/protocol/v2/session/{}/stream",
            hs.session_id
        ))
        .await;
    let first = ws_from(&server, None, &first_path).await;
    assert!(first.is_ok());
    let sse = server
        .http
        .get(server.url(&sse_path))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_ne!(sse.status(), 429);
    drop(sse);
    assert!(ws_from(&server, None, "/api/signaling").await.is_ok());
    // ... and the fourth, whichever kind, is refused before the upgrade.
    assert_eq!(
        ws_from(&server, None, &hs.websocket_url).await.err(),
        Some(429)
    );
    let lane_stream = server
        .get(&format!(
            "/api/protocol/v2/session/{}/lane/1/stream",
            hs.session_id
        ))
        .await;
    assert_rate_limited(lane_stream, 3).await;
    // Another address still connects and gets its welcome.
    let mut other = ws_from(&server, Some(OTHER_IP), &other_path)
        .await
        .expect("upgrade from another address");
    match other.expect_control().await {
        Control::Welcome { session_id, .. } => assert_eq!(session_id, hs.session_id),
        c => panic!("expected welcome, got {c:?}"),
    }
}

/// Expects the next frame to be a `rate_limited` error for `lane` and `seq`; returns its
/// `retryAfterMs`.
async fn expect_rate_limited(peer: &mut Peer, lane: Lane, seq: u64) -> u64 {
    match peer.expect_control().await {
        Control::Error {
            code: ErrorCode::RateLimited,
            lane: l,
            seq: s,
            retry_after_ms: Some(ms),
            error,
        } => {
            assert_eq!((l, s), (Some(lane.id()), Some(seq)), "{error}");
            assert!((1..=60_000).contains(&ms), "{ms}");
            ms
        }
        c => panic!("expected rate_limited, got {c:?}"),
    }
}

/// Expects the next frame of `peer` to be Data on `lane` carrying `value` (relayed).
async fn expect_relayed(peer: &mut Peer, lane: Lane, value: Value) {
    let (h, v) = peer.expect_data().await;
    assert_eq!((h.lane, v), (lane, value));
}

#[tokio::test]
async fn a_data_flood_is_refused_per_frame_and_starves_neither_its_other_lanes_nor_others() {
    let server = TestServer::start_with(|c| c.rate_bulk = per_min(5)).await;
    let (mut a, mut b) = pair_on(&server, "flood", &[1, 2, 5]).await;
    for i in 0..5 {
        a.send_data(Lane::Data, &json!({"i": i}), None).await;
        expect_relayed(&mut b, Lane::Data, json!({"i": i})).await;
    }
    let seq = a.send_data(Lane::Data, &json!({"i": 5}), None).await;
    expect_rate_limited(&mut a, Lane::Data, seq).await;
    // Messaging has its own bulk budget: its message is the next thing b gets (the refused
    // Data frame was never relayed, or it would come first).
    a.send_data(Lane::Messaging, &json!({"m": 1}), None).await;
    expect_relayed(&mut b, Lane::Messaging, json!({"m": 1})).await;
    // Control still answers the flooding session and the other one.
    a.ping_pong().await;
    b.ping_pong().await;
    // Still over budget: refused again, never relayed.
    let seq = a.send_data(Lane::Data, &json!({"i": 6}), None).await;
    expect_rate_limited(&mut a, Lane::Data, seq).await;
    b.ping_pong().await;
}

#[tokio::test]
async fn control_and_sync_have_their_own_budgets() {
    let server = TestServer::start_with(|c| {
        c.rate_control = per_min(4);
        c.rate_sync = per_min(2);
    })
    .await;
    // a's join is its Control message 1 of 4.
    let (mut a, mut b) = pair_on(&server, "sync", &[1, 7]).await;
    // Sync: two relayed, the third refused.
    for i in 0..2 {
        a.send_data(Lane::Sync, &json!({"s": i}), None).await;
        expect_relayed(&mut b, Lane::Sync, json!({"s": i})).await;
    }
    let seq = a.send_data(Lane::Sync, &json!({"s": 2}), None).await;
    expect_rate_limited(&mut a, Lane::Sync, seq).await;
    // Control: three more pings answered (4 of 4), the next refused, then Sync is still
    // refused (no budget leaks between classes) and b is still served.
    for _ in 0..3 {
        a.ping_pong().await;
    }
    let seq = a.control_seq;
    a.send_control(&Control::Ping {
        client_time: 1.0,
        rtt_ms: None,
    })
    .await;
    expect_rate_limited(&mut a, Lane::Control, seq).await;
    let seq = a.send_data(Lane::Sync, &json!({"s": 3}), None).await;
    expect_rate_limited(&mut a, Lane::Sync, seq).await;
    b.ping_pong().await;
    b.send_data(Lane::Sync, &json!({"from": "b"}), None).await;
    expect_relayed(&mut a, Lane::Sync, json!({"from": "b"})).await;
}

#[tokio::test]
async fn a_socket_sending_past_its_strikes_is_closed_with_4429() {
    let server = TestServer::start_with(|c| {
        c.rate_bulk = per_min(1);
        c.rate_strikes = 3;
    })
    .await;
    let (mut a, mut b) = pair(&server, "strikes").await;
    a.send_data(Lane::Messaging, &json!({"ok": true}), None)
        .await;
    expect_relayed(&mut b, Lane::Messaging, json!({"ok": true})).await;
    // Three refusals are answered (each awaited: a close overtakes frames still queued); the
    // fourth closes the socket instead.
    for i in 0..3 {
        let seq = a.send_data(Lane::Messaging, &json!({"i": i}), None).await;
        expect_rate_limited(&mut a, Lane::Messaging, seq).await;
    }
    a.send_data(Lane::Messaging, &json!({"i": 3}), None).await;
    match a.recv().await {
        Received::Closed(Some((code, reason))) => {
            assert_eq!(code, CLOSE_RATE_LIMITED);
            assert_eq!(reason, "rate limited");
        }
        other => panic!("expected close 4429, got {other:?}"),
    }
    // The other member only hears that a left; it is still served.
    match b.expect_control().await {
        Control::PeerLeft { session_id, .. } => assert_eq!(session_id, a.sid()),
        c => panic!("expected peer-left, got {c:?}"),
    }
    assert!(matches!(b.expect_control().await, Control::RoomKey { .. }));
    b.ping_pong().await;
}

#[tokio::test]
async fn rate_limits_off_disables_every_budget() {
    let server = TestServer::start_with(|c| {
        c.rate_limits = RateLimitsMode::Off;
        c.rate_ip_handshake = per_min(1);
        c.rate_ip_upgrade = per_min(1);
        c.rate_control = per_min(1);
        c.rate_bulk = per_min(1);
    })
    .await;
    let (mut a, mut b) = pair(&server, "off").await;
    for i in 0..3 {
        a.ping_pong().await;
        a.send_data(Lane::Messaging, &json!({"i": i}), None).await;
        expect_relayed(&mut b, Lane::Messaging, json!({"i": i})).await;
    }
    let resp = server
        .handshake_raw(&handshake_body("c", &["msgpack"], &[1]))
        .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("ratelimit-limit").is_none());
}

// ---- multiplexed sessions (PROTOCOL.md §11) ----

/// A multiplexed `core::client::Client` on a real socket, driven as the browser driver does
/// (no reconnects: a closed socket ends the test).
struct MuxNode {
    c: Client,
    ws: Option<Peer>,
    server_addr: SocketAddr,
    t0: Instant,
    events: Vec<Event>,
}

impl MuxNode {
    async fn new(server: &TestServer, name: &str, room: &str) -> MuxNode {
        let mut body = handshake_body(name, &["msgpack"], &[1, 2, 5]);
        body["features"] = json!([FEATURE_MUX]);
        let resp = server.handshake_raw(&body).await;
        assert_eq!(resp.status(), 200);
        let mut hs: HandshakeResponse = resp.json().await.unwrap();
        assert!(
            hs.limits.is_some(),
            "the handshake advertises the lane quotas"
        );
        // A client that ignores the advertised quotas (the SDK paces itself by them and would
        // never be refused): the server's own limit is what is under test.
        hs.limits = None;
        let mut c = Client::new(ClientConfig::default(), &hs, Millis::ZERO).unwrap();
        assert!(c.uses_mux(), "mux granted");
        c.join_room(room).unwrap();
        let mut n = MuxNode {
            c,
            ws: None,
            server_addr: server.addr,
            t0: Instant::now(),
            events: vec![],
        };
        n.run_until(|e| matches!(e, Event::RoomJoined { .. })).await;
        n
    }

    fn now(&self) -> Millis {
        Millis::from_u64(self.t0.elapsed().as_millis() as u64)
    }

    /// Drives the client until an event matching `pred` (bounded by [`WAIT`]); returns it.
    async fn run_until(&mut self, pred: impl Fn(&Event) -> bool) -> Event {
        let deadline = Instant::now() + WAIT;
        loop {
            assert!(
                Instant::now() < deadline,
                "no matching event; got {:?}",
                self.events
            );
            self.c.handle_transport_buffered(0);
            let wake = loop {
                match self.c.poll_output(self.now()) {
                    Output::Transmit(b) => {
                        let ws = self.ws.as_mut().expect("socket open");
                        ws.ws.send(Message::Binary(b.into())).await.unwrap();
                    }
                    Output::Action(Action::OpenSocket { path }) => {
                        // The one socket of this test: the handshake's ticket.
                        let ticket = self.c.take_ticket().expect("the first ticket");
                        let path = common::with_ticket(&path, ticket.expose());
                        let url = format!("ws://{}{path}", self.server_addr);
                        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
                        self.ws = Some(Peer::new(ws));
                        let now = self.now();
                        self.c.handle_socket_open(now);
                    }
                    Output::Action(a) => panic!("unexpected action {a:?}"),
                    Output::Event(e) => {
                        let hit = pred(&e);
                        self.events.push(e.clone());
                        if hit {
                            return e;
                        }
                    }
                    Output::Timeout(at) => break at,
                }
            };
            let now = self.now();
            let wait = wake.deadline().map_or(Duration::from_millis(50), |at| {
                Duration::from_millis(at.as_u64().saturating_sub(now.as_u64()).min(50))
            });
            if let Some(ws) = self.ws.as_mut() {
                match tokio::time::timeout(wait, ws.ws.next()).await {
                    Ok(Some(Ok(Message::Binary(b)))) => {
                        let now = self.now();
                        self.c.handle_frame(&b, now);
                    }
                    Ok(Some(Ok(Message::Close(f)))) => panic!("socket closed: {f:?}"),
                    Ok(Some(Ok(_))) | Err(_) => {}
                    Ok(Some(Err(e))) => panic!("socket error: {e}"),
                    Ok(None) => panic!("socket ended"),
                }
            }
            let now = self.now();
            self.c.handle_timeout(now);
        }
    }
}

#[tokio::test]
async fn multiplexed_frames_are_limited_per_lane_too() {
    let server = TestServer::start_with(|c| c.rate_bulk = per_min(3)).await;
    let mut b = server.peer("b", &[1, 2, 5]).await;
    b.join("mux").await;
    let mut a = MuxNode::new(&server, "a", "mux").await;
    assert!(matches!(
        b.expect_control().await,
        Control::PeerJoined { .. }
    ));
    for i in 0..4 {
        a.c.send(Lane::Data, json!({"i": i}), None).unwrap();
    }
    // The fourth Data message is refused with its multiplexer seq, the first three relayed.
    let e = a.run_until(|e| matches!(e, Event::Error { .. })).await;
    match e {
        Event::Error {
            code: ErrorCode::RateLimited,
            lane: Some(Lane::Data),
            seq: Some(_),
            ..
        } => {}
        other => panic!("expected rate_limited on Data, got {other:?}"),
    }
    for i in 0..3 {
        expect_relayed(&mut b, Lane::Data, json!({"i": i})).await;
    }
    // Messaging and Control of the same session still pass.
    a.c.send(Lane::Messaging, json!({"m": 1}), None).unwrap();
    let now = a.now().get();
    assert!(a.c.ping(now, None));
    let _ = a.run_until(|e| matches!(e, Event::Pong { .. })).await;
    expect_relayed(&mut b, Lane::Messaging, json!({"m": 1})).await;
}
