//! Shared helpers for the integration tests: start the real app on 127.0.0.1:0, do handshakes
//! over HTTP (reqwest) and talk frames over real WebSockets (tokio-tungstenite).

#![allow(dead_code)] // each test binary uses a subset

pub mod auth;
pub mod cluster;

use futures::{SinkExt, StreamExt};
use p3_lanes::core::control::Control;
use p3_lanes::core::dictionary::Dictionary;
use p3_lanes::core::error::ErrorCode;
use p3_lanes::core::frame::{FrameHeader, FrameKind, SessionId};
use p3_lanes::core::handshake::{HandshakeResponse, Secret};
use p3_lanes::core::lane::{Encoding, Lane};
use p3_lanes::core::payload;
use serde_json::{json, Value};
use server_stub::{serve, AppState, Config};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single expected event may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(5);

/// The admin token every test server gets (`--admin-token`).
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A config with the documented defaults, directories that do not exist and
/// [`ADMIN_TOKEN`].
pub fn config() -> Config {
    Config {
        static_dir: "/nonexistent/www".into(),
        pkg_dir: "/nonexistent/pkg".into(),
        app_version: "test-1.2.3".into(),
        admin_token: Some(ADMIN_TOKEN.parse().unwrap()),
        ..Config::default()
    }
}

/// The `sessionToken` of a handshake response.
pub fn token(hs: &HandshakeResponse) -> String {
    hs.session_token
        .as_ref()
        .expect("the handshake gives a sessionToken")
        .expose()
        .to_owned()
}

/// `path` (maybe with a query) with `ticket` appended.
pub fn with_ticket(path: &str, ticket: &str) -> String {
    p3_lanes::core::handshake::with_ticket(path, &Secret::new(ticket))
}

/// A running server.
pub struct TestServer {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    /// Session id → `sessionToken` of every handshake made through [`TestServer::handshake`]
    /// or recorded with [`TestServer::remember`].
    tokens: std::sync::Mutex<std::collections::HashMap<String, String>>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// Serves `config` on 127.0.0.1 with a free port.
    pub async fn start(config: Config) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let state = AppState::new(config);
        let task = tokio::spawn(serve(listener, state, async {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            http: reqwest::Client::new(),
            tokens: Default::default(),
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// [`TestServer::start`] with [`config`] changed by `set` (the settings under test).
    pub async fn start_with(set: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = config();
        set(&mut config);
        TestServer::start(config).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// `GET path` with the server's HTTP client.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .send()
            .await
            .expect("GET request")
    }

    /// A request to `path` with `Authorization: Bearer <token>`.
    pub fn authed(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
    ) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path)).bearer_auth(token)
    }

    /// Mints a ticket for session `sid` with `token` (`POST .../ticket`); panics unless 200.
    pub async fn ticket(&self, sid: SessionId, token: &str) -> String {
        let resp = self
            .authed(
                reqwest::Method::POST,
                &p3_lanes::core::handshake::ticket_path(sid),
                token,
            )
            .send()
            .await
            .expect("ticket request");
        assert_eq!(
            resp.status(),
            200,
            "ticket refused: {:?}",
            resp.text().await
        );
        let body: Value = resp.json().await.expect("ticket JSON");
        body["ticket"].as_str().expect("ticket").to_owned()
    }

    /// `path` of session `hs` with a freshly minted ticket.
    pub async fn ticketed(&self, hs: &HandshakeResponse, path: &str) -> String {
        with_ticket(path, &self.ticket(hs.session_id, &token(hs)).await)
    }

    /// The session's WebSocket path with a freshly minted ticket.
    pub async fn ws_path(&self, hs: &HandshakeResponse) -> String {
        self.ticketed(hs, &hs.websocket_url).await
    }

    /// A crash: the server task is aborted (with it the node's cluster tasks: no lease is
    /// released, no entry published) without any shutdown. Its open sockets stay up, idle.
    pub fn crash(&mut self) {
        self.shutdown.take();
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Triggers graceful shutdown and returns the serve task, to be awaited.
    pub fn shutdown(&mut self) -> JoinHandle<std::io::Result<()>> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.take().expect("shut down once")
    }

    /// POSTs a raw JSON handshake body.
    pub async fn handshake_raw(&self, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url("/api/protocol/v2/session/handshake"))
            .json(body)
            .send()
            .await
            .expect("handshake request")
    }

    /// Handshakes with websocket transport, `encodings` and `lanes`; panics unless 200.
    pub async fn handshake(
        &self,
        client_id: &str,
        encodings: &[&str],
        lanes: &[u8],
    ) -> HandshakeResponse {
        let resp = self
            .handshake_raw(&handshake_body(client_id, encodings, lanes))
            .await;
        assert_eq!(
            resp.status(),
            200,
            "handshake failed: {:?}",
            resp.text().await
        );
        let hs = resp.json().await.expect("HandshakeResponse");
        self.remember(&hs);
        hs
    }

    /// Records the token of `hs` for [`TestServer::session`].
    pub fn remember(&self, hs: &HandshakeResponse) {
        self.tokens
            .lock()
            .unwrap()
            .insert(hs.session_id.to_string(), token(hs));
    }

    /// The recorded token of the session a `/api/protocol/v2/session/{sid}...` path names.
    pub fn token_for(&self, path: &str) -> Option<String> {
        let rest = path.strip_prefix("/api/protocol/v2/session/")?;
        let sid = rest.split(['/', '?']).next()?;
        self.tokens.lock().unwrap().get(sid).cloned()
    }

    /// A session-scoped path as its owner uses it: a stream or WebSocket path (`/ws`,
    /// `/stream`) gets a fresh ticket; others are unchanged.
    pub async fn owned(&self, path: &str) -> String {
        let route = path.split('?').next().unwrap_or(path);
        let streamed = route.ends_with("/ws") || route.ends_with("/stream");
        match (streamed, self.token_for(path)) {
            (true, Some(token)) => {
                let sid = route
                    .trim_start_matches("/api/protocol/v2/session/")
                    .split('/')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                with_ticket(path, &self.ticket(sid, &token).await)
            }
            _ => path.to_owned(),
        }
    }

    /// A request to a session-scoped `path` as its owner makes it: `Authorization: Bearer`
    /// with the recorded token, and a fresh ticket on stream paths ([`TestServer::owned`]).
    pub async fn session(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let url = self.url(&self.owned(path).await);
        let req = self.http.request(method, url);
        match self.token_for(path) {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Handshakes (msgpack, json; `lanes`) and connects, consuming the welcome frame.
    pub async fn peer(&self, client_id: &str, lanes: &[u8]) -> Peer {
        let hs = self.handshake(client_id, &["msgpack", "json"], lanes).await;
        self.connect(&hs).await
    }

    /// Opens the session's WebSocket (with a fresh ticket) and checks that the first frame is
    /// its welcome.
    pub async fn connect(&self, hs: &HandshakeResponse) -> Peer {
        let mut peer = self.connect_raw(&self.ws_path(hs).await).await;
        peer.sid = Some(hs.session_id);
        peer.token = hs.session_token.as_ref().map(|t| t.expose().to_owned());
        peer.encodings = hs
            .lanes
            .iter()
            .map(|g| (Lane::from_id(g.id).unwrap(), g.encoding))
            .collect();
        match peer.expect_control().await {
            Control::Welcome { session_id, .. } => assert_eq!(session_id, hs.session_id),
            other => panic!("first frame should be welcome, got {other:?}"),
        }
        peer
    }

    /// Opens a WebSocket at `path` without reading anything.
    pub async fn connect_raw(&self, path: &str) -> Peer {
        let url = format!("ws://{}{}", self.addr, path);
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connect");
        Peer::new(ws)
    }
}

pub fn handshake_body(client_id: &str, encodings: &[&str], lanes: &[u8]) -> Value {
    json!({
        "clientId": client_id,
        "wallet": "0xabc",
        "capabilities": {"transports": ["websocket"], "encodings": encodings, "lanes": lanes},
        "deviceInfo": {"platform": "test", "version": "1.0.0"}
    })
}

/// What a peer received.
#[derive(Debug)]
pub enum Received {
    Control(FrameHeader, Control),
    Data(FrameHeader, Value),
    /// Close code and reason (`None`: the connection ended without a close frame).
    Closed(Option<(u16, String)>),
}

/// A WebSocket client speaking frames.
pub struct Peer {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub sid: Option<SessionId>,
    /// The session's `sessionToken`.
    pub token: Option<String>,
    pub encodings: Vec<(Lane, Encoding)>,
    pub dict: Dictionary,
    pub seq: [u64; 8],
    pub control_seq: u64,
    /// `(keyId, key)` of the last `room-key` [`Peer::join`] received.
    pub room_key: Option<(u32, String)>,
}

impl Peer {
    /// A peer on an open socket, before its welcome: no session yet, seqs from 1.
    pub fn new(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Peer {
        Peer {
            ws,
            sid: None,
            token: None,
            encodings: Vec::new(),
            dict: Dictionary::current(),
            seq: [1; 8],
            control_seq: 1,
            room_key: None,
        }
    }

    pub fn sid(&self) -> SessionId {
        self.sid.expect("peer has a session")
    }

    /// The session's token.
    pub fn token(&self) -> &str {
        self.token.as_deref().expect("peer has a session token")
    }

    pub fn encoding(&self, lane: Lane) -> Encoding {
        self.encodings
            .iter()
            .find(|(l, _)| *l == lane)
            .map_or(Encoding::Msgpack, |&(_, e)| e)
    }

    pub async fn send_raw(&mut self, bytes: Vec<u8>) {
        self.ws
            .send(Message::binary(bytes))
            .await
            .expect("send frame");
    }

    pub async fn send_control(&mut self, msg: &Control) {
        let enc = self.encoding(Lane::Control);
        let frame = payload::control_frame(msg, enc, Some(&self.dict), self.control_seq);
        self.control_seq += 1;
        self.send_raw(frame).await;
    }

    /// The bytes of a Data frame on `lane` in this peer's encoding for it, with the next seq.
    pub fn data_frame(
        &mut self,
        lane: Lane,
        value: &Value,
        to: Option<SessionId>,
    ) -> (Vec<u8>, u64) {
        let enc = self.encoding(lane);
        let (bytes, dict_version) = payload::encode(value, enc, Some(&self.dict)).unwrap();
        let seq = self.seq[lane as usize - 1];
        self.seq[lane as usize - 1] += 1;
        let mut h = FrameHeader::data(lane, enc, seq, dict_version);
        h.to = to;
        (h.encode(&bytes), seq)
    }

    /// Sends `value` on `lane`; returns the seq used.
    pub async fn send_data(&mut self, lane: Lane, value: &Value, to: Option<SessionId>) -> u64 {
        let (frame, seq) = self.data_frame(lane, value, to);
        self.send_raw(frame).await;
        seq
    }

    /// The next frame or close, failing the test after [`WAIT`].
    pub async fn recv(&mut self) -> Received {
        self.recv_within(WAIT)
            .await
            .expect("nothing received in time")
    }

    /// The next frame or close within `d`, `None` if nothing came.
    pub async fn recv_within(&mut self, d: Duration) -> Option<Received> {
        loop {
            let next = tokio::time::timeout(d, self.ws.next()).await.ok()?;
            let msg = match next {
                None | Some(Err(_)) => return Some(Received::Closed(None)),
                Some(Ok(m)) => m,
            };
            match msg {
                Message::Binary(b) => {
                    let (h, body) = FrameHeader::decode(&b).expect("server frames decode");
                    return Some(match h.kind {
                        FrameKind::Control => {
                            let c = payload::decode_control(&h, body, Some(&self.dict))
                                .expect("control decodes");
                            Received::Control(h, c)
                        }
                        FrameKind::Data => {
                            let v = payload::decode(&h, body, Some(&self.dict))
                                .expect("payload decodes");
                            Received::Data(h, v)
                        }
                    });
                }
                Message::Close(f) => {
                    return Some(Received::Closed(
                        f.map(|f| (u16::from(f.code), f.reason.as_str().to_owned())),
                    ));
                }
                Message::Text(t) => panic!("server sent a text message: {t}"),
                _ => continue,
            }
        }
    }

    pub async fn expect_control(&mut self) -> Control {
        match self.recv().await {
            Received::Control(_, c) => c,
            other => panic!("expected a control frame, got {other:?}"),
        }
    }

    pub async fn expect_data(&mut self) -> (FrameHeader, Value) {
        match self.recv().await {
            Received::Data(h, v) => (h, v),
            other => panic!("expected a data frame, got {other:?}"),
        }
    }

    /// Expects a Control `error`; returns `(code, lane, seq)`.
    pub async fn expect_error(&mut self) -> (ErrorCode, Option<u8>, Option<u64>) {
        match self.expect_control().await {
            Control::Error {
                code, lane, seq, ..
            } => (code, lane, seq),
            other => panic!("expected an error frame, got {other:?}"),
        }
    }

    /// Expects the socket to be closed by the server; returns the close code.
    pub async fn expect_close(&mut self) -> u16 {
        loop {
            match self.recv().await {
                Received::Closed(Some((code, _))) => return code,
                Received::Closed(None) => panic!("connection ended without a close frame"),
                // Frames queued before the close (e.g. peer-left) are skipped.
                _ => continue,
            }
        }
    }

    /// Joins `room`; returns the members from `joined` (and keeps the `room-key` that
    /// follows it in [`Peer::room_key`]).
    pub async fn join(&mut self, room: &str) -> Vec<SessionId> {
        self.send_control(&Control::Join { room: room.into() })
            .await;
        let members = match self.expect_control().await {
            Control::Joined { room: r, members } => {
                assert_eq!(r, room);
                members
            }
            other => panic!("expected joined, got {other:?}"),
        };
        self.expect_room_key(room).await;
        members
    }

    /// Expects `room-key` for `room` (it follows every `joined`); returns `(keyId, key)`.
    pub async fn expect_room_key(&mut self, room: &str) -> (u32, String) {
        match self.expect_control().await {
            Control::RoomKey {
                room: r,
                key_id,
                key,
            } => {
                assert_eq!(r, room);
                self.room_key = Some((key_id, key.clone()));
                (key_id, key)
            }
            other => panic!("expected room-key, got {other:?}"),
        }
    }

    /// Expects `peer-left` of `who` from `room`, then the room's new `room-key` (every leave
    /// rotates the key, PROTOCOL.md §13.4) with a key id other than the last one this peer
    /// held; returns `(keyId, key)` and keeps it in [`Peer::room_key`].
    pub async fn expect_peer_left(&mut self, room: &str, who: SessionId) -> (u32, String) {
        assert_eq!(
            self.expect_control().await,
            Control::PeerLeft {
                room: room.into(),
                session_id: who
            }
        );
        let before = self.room_key.clone();
        let key = self.expect_room_key(room).await;
        if let Some((id, old)) = before {
            assert_ne!(key.0, id, "a rotated key has a new id");
            assert_ne!(key.1, old, "a rotated key is new");
        }
        key
    }

    /// Pings and expects the pong as the next frame: the socket still works.
    pub async fn ping_pong(&mut self) {
        self.send_control(&Control::Ping {
            client_time: 42.5,
            rtt_ms: None,
        })
        .await;
        match self.expect_control().await {
            Control::Pong { client_time, .. } => assert_eq!(client_time, 42.5),
            other => panic!("expected pong, got {other:?}"),
        }
    }

    /// Asserts that nothing arrives within `ms`.
    pub async fn expect_silence(&mut self, ms: u64) {
        if let Some(r) = self.recv_within(Duration::from_millis(ms)).await {
            panic!("expected nothing, got {r:?}");
        }
    }

    /// Sends a normal close and waits for the connection to end.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, self.ws.next()).await {}
    }
}

/// Two peers in `room` with lanes 1 and 2, `a` having seen `b` join.
pub async fn pair(server: &TestServer, room: &str) -> (Peer, Peer) {
    pair_on(server, room, &[1, 2]).await
}

/// Two peers in `room` with `lanes`, `a` having seen `b` join.
pub async fn pair_on(server: &TestServer, room: &str, lanes: &[u8]) -> (Peer, Peer) {
    let mut a = server.peer("a", lanes).await;
    let mut b = server.peer("b", lanes).await;
    assert_eq!(a.join(room).await, vec![a.sid()]);
    assert_eq!(b.join(room).await, vec![a.sid(), b.sid()]);
    match a.expect_control().await {
        Control::PeerJoined { session_id, .. } => assert_eq!(session_id, b.sid()),
        other => panic!("expected peer-joined, got {other:?}"),
    }
    (a, b)
}
