//! The lane multiplexer end to end on native sockets (PROTOCOL.md §11, issue 3): two
//! `core::client::Client`s granted `mux`, driven over real WebSockets against the real app.
//! A sender streams numbered reliable messages on Messaging and Data (every 10th one over
//! 16 KiB, so it is chunked) to a receiver in the same room while sockets are cut, or while
//! the server restarts. The receiver must get every number once and in order, or a
//! discontinuity naming the lane right before a jump: never a silent gap or a duplicate.
//! With `--test-latency-ms` the multiplexed frames go through the per-connection delay line
//! (PROTOCOL.md §12.7) in order, both ways. Across nodes (issue 14, PROTOCOL.md §17): a
//! receiver whose node dies resumes on another node (real redis-server) with the relays it
//! had not acknowledged, once and in order, or the room stream's `discontinuity`.

mod common;

use common::{config, handshake_body};
use futures::{SinkExt, StreamExt};
use p3_lanes::core::client::{Action, Client, ClientConfig, Event, Output};
use p3_lanes::core::drive::Millis;
use p3_lanes::core::handshake::{HandshakeResponse, FEATURE_MUX};
use p3_lanes::core::lane::Lane;
use serde_json::{json, Value};
use server_stub::{serve, AppState, Config};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the receiver saw, in order.
#[derive(Clone, Debug, PartialEq)]
enum Seen {
    Msg(Lane, u64),
    Discontinuity(Lane),
    /// The server's notice that the sender's own stream to it lost messages on this lane
    /// (a relayed `{type: "discontinuity", reason}`).
    SenderGap(Lane, String),
}

struct Server {
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

async fn start(addr: SocketAddr) -> (Server, SocketAddr) {
    start_with(addr, config()).await
}

async fn start_with(addr: SocketAddr, config: Config) -> (Server, SocketAddr) {
    let mut tries = 0;
    let listener = loop {
        match TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(e) if tries < 50 => {
                tries += 1;
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("bind {addr}: {e}"),
        }
    };
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, AppState::new(config), async {
        let _ = rx.await;
    }));
    (Server { stop, task }, addr)
}

/// A `Client` and its socket, driven like the browser driver does.
struct Node {
    c: Client,
    ws: Option<Ws>,
    addr: SocketAddr,
    body: Value,
    /// The handshake the client was created with.
    hs: HandshakeResponse,
    room: String,
    http: reqwest::Client,
    t0: Instant,
    seen: Vec<Seen>,
    /// When each `Seen::Msg` arrived, in the same order.
    arrived: Vec<Instant>,
    events: Vec<Event>,
}

async fn handshake(
    http: &reqwest::Client,
    addr: SocketAddr,
    body: &Value,
) -> Option<HandshakeResponse> {
    let resp = http
        .post(format!("http://{addr}/api/protocol/v2/session/handshake"))
        .json(body)
        .send()
        .await
        .ok()?;
    if resp.status() != 200 {
        return None;
    }
    resp.json().await.ok()
}

impl Node {
    async fn new(addr: SocketAddr, name: &str, room: &str) -> Node {
        let mut body = handshake_body(name, &["msgpack"], &[1, 2, 5]);
        body["features"] = json!([FEATURE_MUX]);
        let http = reqwest::Client::new();
        let hs = handshake(&http, addr, &body).await.expect("handshake");
        assert!(
            hs.protocol.features.iter().any(|f| f == FEATURE_MUX),
            "mux granted"
        );
        let cfg = ClientConfig {
            backoff_ms: vec![50, 100, 200],
            seed: name.len() as u64 * 7919,
            ..ClientConfig::default()
        };
        let mut c = Client::new(cfg, &hs, Millis::ZERO).unwrap();
        assert!(c.uses_mux());
        c.join_room(room).unwrap();
        let mut n = Node {
            c,
            ws: None,
            addr,
            body,
            hs,
            room: room.to_owned(),
            http,
            t0: Instant::now(),
            seen: vec![],
            arrived: vec![],
            events: vec![],
        };
        // Joined (the join travels after the welcome): nothing sent before is relayed to us.
        while !n
            .events
            .iter()
            .any(|e| matches!(e, Event::RoomJoined { .. }))
        {
            n.step(Duration::from_millis(20)).await;
        }
        n
    }

    fn now(&self) -> Millis {
        Millis::from_u64(self.t0.elapsed().as_millis() as u64)
    }

    /// The app restarts while keeping its session (e.g. a page reload that reuses the session
    /// id): a new client, whose multiplexer has a new epoch, on the same session; its socket is
    /// cut first, so messages the old one had not had acknowledged are lost with it.
    fn restart_keeping_the_session(&mut self) {
        self.cut();
        let cfg = ClientConfig {
            backoff_ms: vec![50, 100, 200],
            seed: 0x5EED_0001,
            ..ClientConfig::default()
        };
        // The handshake's first ticket was spent by the first socket: the restarted client
        // keeps the token only and mints its own.
        self.hs.ticket = None;
        self.c = Client::new(cfg, &self.hs, self.now()).unwrap();
        self.c.join_room(&self.room).unwrap();
    }

    fn lost(&mut self, code: u16) {
        self.ws = None;
        let now = self.now();
        self.c.handle_socket_closed(code, now);
    }

    /// Cuts the socket abruptly (no close handshake).
    fn cut(&mut self) {
        if self.ws.is_some() {
            self.lost(1006);
        }
    }

    /// A fresh ticket for the client's session; `None` (and the loss reported to the client:
    /// 4404 for a refusal, 1006 for no answer) when none was minted.
    async fn mint(&mut self) -> Option<String> {
        let sid = self.c.session_id();
        let token = self.c.session_token()?.expose().to_owned();
        let url = format!(
            "http://{}{}",
            self.addr,
            p3_lanes::core::handshake::ticket_path(sid)
        );
        let resp = self.http.post(url).bearer_auth(token).send().await;
        match resp {
            Ok(r) if r.status() == 200 => {
                let v: Value = r.json().await.ok()?;
                v["ticket"].as_str().map(str::to_owned)
            }
            Ok(r) if r.status() == 401 => {
                self.lost(4404);
                None
            }
            _ => {
                self.lost(1006);
                None
            }
        }
    }

    /// Drains the client's outputs, then waits up to `wait` for one socket message.
    async fn step(&mut self, wait: Duration) {
        let deadline = loop {
            self.c.handle_transport_buffered(0);
            match self.c.poll_output(self.now()) {
                Output::Transmit(b) => {
                    if let Some(ws) = self.ws.as_mut() {
                        if ws.send(Message::Binary(b.into())).await.is_err() {
                            self.lost(1006);
                        }
                    }
                }
                Output::Action(Action::OpenSocket { path }) => {
                    // As the SDK's driver does (PROTOCOL.md §2.1): the handshake's ticket
                    // once, then a fresh one per (re)connect; a refused mint means the server
                    // forgot the session (4404: handshake again).
                    let ticket = match self.c.take_ticket() {
                        Some(t) => Some(t.expose().to_owned()),
                        None => self.mint().await,
                    };
                    let Some(ticket) = ticket else {
                        continue;
                    };
                    let path = common::with_ticket(&path, &ticket);
                    let url = format!("ws://{}{path}", self.addr);
                    match tokio_tungstenite::connect_async(url).await {
                        Ok((ws, _)) => {
                            self.ws = Some(ws);
                            let now = self.now();
                            self.c.handle_socket_open(now);
                        }
                        Err(_) => self.lost(1006),
                    }
                }
                Output::Action(Action::CloseSocket) => {
                    if let Some(mut ws) = self.ws.take() {
                        let _ = ws.close(None).await;
                    }
                }
                Output::Action(Action::Handshake) => {
                    let now = self.now();
                    match handshake(&self.http, self.addr, &self.body).await {
                        Some(hs) => {
                            let _ = self.c.handle_handshake(&hs, now);
                        }
                        None => self.c.handle_handshake_failed(now),
                    }
                }
                Output::Event(Event::Message(m)) if m.value["type"] == "discontinuity" => {
                    let reason = m.value["reason"].as_str().unwrap_or_default().to_owned();
                    self.seen.push(Seen::SenderGap(m.lane, reason));
                }
                Output::Event(Event::Message(m)) => {
                    let n = m.value["n"].as_u64().unwrap();
                    self.seen.push(Seen::Msg(m.lane, n));
                    self.arrived.push(Instant::now());
                }
                Output::Event(Event::Discontinuity(d)) => {
                    self.seen.push(Seen::Discontinuity(d.lane));
                    self.events.push(Event::Discontinuity(d));
                }
                Output::Event(e) => self.events.push(e),
                Output::Timeout(at) => break at,
            }
        };
        let now = self.now();
        let wait = deadline.deadline().map_or(wait, |at| {
            Duration::from_millis(at.as_u64().saturating_sub(now.as_u64())).min(wait)
        });
        match self.ws.as_mut() {
            Some(ws) => match tokio::time::timeout(wait, ws.next()).await {
                Ok(Some(Ok(Message::Binary(b)))) => {
                    let now = self.now();
                    self.c.handle_frame(&b, now);
                }
                Ok(Some(Ok(Message::Close(f)))) => {
                    self.lost(f.map_or(1005, |f| u16::from(f.code)));
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_)) | None) => self.lost(1006),
                Err(_) => {}
            },
            None => tokio::time::sleep(wait).await,
        }
        let now = self.now();
        self.c.handle_timeout(now);
    }

    /// Sends `value` on `lane`, waiting (stepping) while the lane answers backpressure.
    async fn send(&mut self, lane: Lane, value: Value, other: &mut Node) {
        loop {
            match self.c.send(lane, value.clone(), None) {
                Ok(()) => return,
                Err(e) if e.code().as_str() == "backpressure" => {
                    self.step(Duration::from_millis(1)).await;
                    other.step(Duration::from_millis(1)).await;
                }
                Err(e) => panic!("send: {e}"),
            }
        }
    }
}

fn numbered(n: u64, lane: Lane) -> Value {
    let pad = if lane == Lane::Data && n % 10 == 0 {
        40_000
    } else {
        8
    };
    json!({"n": n, "pad": "x".repeat(pad)})
}

/// Checks the receiver's log per lane: each number is the previous + 1, except right after
/// a discontinuity of that lane. Returns the numbers received per lane.
fn check(seen: &[Seen], lane: Lane) -> Vec<u64> {
    let mut last = 0;
    let mut after_discontinuity = false;
    let mut got = vec![];
    for s in seen {
        match *s {
            Seen::Discontinuity(l) if l == lane => after_discontinuity = true,
            Seen::Msg(l, n) if l == lane => {
                assert!(
                    n == last + 1 || after_discontinuity,
                    "{lane:?}: {n} after {last} without a discontinuity (log {seen:?})"
                );
                after_discontinuity = false;
                last = n;
                got.push(n);
            }
            _ => {}
        }
    }
    got
}

async fn settle(a: &mut Node, b: &mut Node, until: impl Fn(&Node) -> bool) {
    let end = Instant::now() + Duration::from_secs(20);
    while !until(b) {
        if Instant::now() >= end {
            let tail: Vec<_> = b.seen.iter().rev().take(6).collect();
            panic!(
                "timed out: receiver saw {} messages (last {tail:?}), sender {:?} with {} + {} queued, receiver {:?}",
                b.seen.len(),
                a.c.state(),
                a.c.queued_len(Lane::Messaging),
                a.c.queued_len(Lane::Data),
                b.c.state(),
            );
        }
        a.step(Duration::from_millis(1)).await;
        b.step(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reliable_lanes_resume_across_cut_sockets_without_loss_or_duplicate() {
    let (_server, addr) = start("127.0.0.1:0".parse().unwrap()).await;
    let mut b = Node::new(addr, "receiver", "r").await;
    let mut a = Node::new(addr, "sender", "r").await;
    settle(&mut a, &mut b, |_| true).await;
    const N: u64 = 300;
    for n in 1..=N {
        for lane in [Lane::Messaging, Lane::Data] {
            a.send(lane, numbered(n, lane), &mut b).await;
        }
        a.step(Duration::ZERO).await;
        b.step(Duration::ZERO).await;
        if n % 60 == 30 {
            a.cut();
        }
        if n % 60 == 0 {
            b.cut();
        }
    }
    settle(&mut a, &mut b, |b| {
        b.seen.iter().filter(|s| matches!(s, Seen::Msg(..))).count() as u64 >= 2 * N
    })
    .await;
    let all: Vec<u64> = (1..=N).collect();
    for lane in [Lane::Messaging, Lane::Data] {
        assert_eq!(check(&b.seen, lane), all, "{lane:?}");
    }
    assert!(
        !b.events
            .iter()
            .any(|e| matches!(e, Event::Discontinuity(_))),
        "{:?}",
        b.events
    );
    let resumes = b.c.mux().unwrap().stats().resumes + a.c.mux().unwrap().stats().resumes;
    assert!(
        resumes >= 2 + 10,
        "sockets were cut and resumed ({resumes} resumes)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_mid_stream_is_reported_as_a_discontinuity() {
    let (server, addr) = start("127.0.0.1:0".parse().unwrap()).await;
    let mut b = Node::new(addr, "receiver", "r").await;
    let mut a = Node::new(addr, "sender", "r").await;
    const N: u64 = 200;
    let mut server = Some(server);
    for n in 1..=N {
        for lane in [Lane::Messaging, Lane::Data] {
            a.send(lane, numbered(n, lane), &mut b).await;
        }
        a.step(Duration::ZERO).await;
        b.step(Duration::ZERO).await;
        if n == 80 {
            // The server goes away (its sessions with it) and comes back on the same port.
            let s = server.take().unwrap();
            let _ = s.stop.send(());
            let stopping = s.task;
            for _ in 0..50 {
                a.step(Duration::from_millis(2)).await;
                b.step(Duration::from_millis(2)).await;
            }
            let _ = stopping.await;
            let joins = |n: &Node| {
                n.events
                    .iter()
                    .filter(|e| matches!(e, Event::RoomJoined { .. }))
                    .count()
            };
            let (ja, jb) = (joins(&a), joins(&b));
            server = Some(start(addr).await.0);
            // Both back in the room before the rest is sent: a message relayed to a room
            // the receiver has not rejoined yet has nobody to reach.
            let end = Instant::now() + Duration::from_secs(20);
            while joins(&a) == ja || joins(&b) == jb {
                assert!(
                    Instant::now() < end,
                    "both rejoin the room after the restart"
                );
                a.step(Duration::from_millis(2)).await;
                b.step(Duration::from_millis(2)).await;
            }
        }
    }
    settle(&mut a, &mut b, |b| {
        [Lane::Messaging, Lane::Data]
            .iter()
            .all(|l| b.seen.contains(&Seen::Msg(*l, N)))
    })
    .await;
    for lane in [Lane::Messaging, Lane::Data] {
        let got = check(&b.seen, lane);
        assert_eq!(*got.last().unwrap(), N);
        assert!(
            b.seen.contains(&Seen::Discontinuity(lane)),
            "{lane:?}: the restart is reported ({:?})",
            b.events
        );
    }
    assert!(b
        .events
        .iter()
        .any(|e| matches!(e, Event::SessionChanged { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_latency_delays_multiplexed_frames_both_ways_and_keeps_them_in_order() {
    let (_server, addr) = start_with(
        "127.0.0.1:0".parse().unwrap(),
        Config {
            test_latency_ms: 60,
            test_jitter_ms: 20,
            ..config()
        },
    )
    .await;
    let mut b = Node::new(addr, "receiver", "r").await;
    let mut a = Node::new(addr, "sender", "r").await;
    settle(&mut a, &mut b, |_| true).await;
    const N: u64 = 40;
    let mut sent_at = vec![];
    for n in 1..=N {
        for lane in [Lane::Messaging, Lane::Data] {
            a.send(lane, numbered(n, lane), &mut b).await;
        }
        sent_at.push(Instant::now());
        a.step(Duration::ZERO).await;
        b.step(Duration::ZERO).await;
    }
    settle(&mut a, &mut b, |b| {
        b.seen.iter().filter(|s| matches!(s, Seen::Msg(..))).count() as u64 >= 2 * N
    })
    .await;
    let all: Vec<u64> = (1..=N).collect();
    for lane in [Lane::Messaging, Lane::Data] {
        assert_eq!(check(&b.seen, lane), all, "{lane:?}: once each, in order");
    }
    // Sender → server and server → receiver each wait at least 60 - 20 ms.
    for (s, at) in b.seen.iter().zip(&b.arrived) {
        let Seen::Msg(lane, n) = *s else { continue };
        let transit = at.duration_since(sent_at[n as usize - 1]);
        assert!(
            transit >= Duration::from_millis(80),
            "{lane:?} #{n} crossed in {transit:?}, under two one-way delays"
        );
    }
}

/// Issue 11 "silent drops": a client → server discontinuity (here the sender restarted with
/// its session, so its multiplexer comes back with a new epoch) is relayed to the room as a
/// `discontinuity` message from the sender, in order on that lane; before, the receivers
/// never heard of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_senders_restart_is_relayed_to_its_receivers_as_a_discontinuity() {
    let (_server, addr) = start("127.0.0.1:0".parse().unwrap()).await;
    let mut b = Node::new(addr, "receiver", "r").await;
    let mut a = Node::new(addr, "sender", "r").await;
    settle(&mut a, &mut b, |_| true).await;
    for n in 1..=3 {
        a.send(Lane::Messaging, numbered(n, Lane::Messaging), &mut b)
            .await;
    }
    settle(&mut a, &mut b, |b| {
        b.seen.contains(&Seen::Msg(Lane::Messaging, 3))
    })
    .await;
    a.restart_keeping_the_session();
    a.send(Lane::Messaging, numbered(1, Lane::Messaging), &mut b)
        .await;
    settle(&mut a, &mut b, |b| {
        b.seen
            .iter()
            .filter(|s| **s == Seen::Msg(Lane::Messaging, 1))
            .count()
            == 2
    })
    .await;
    let gap = b
        .seen
        .iter()
        .position(|s| *s == Seen::SenderGap(Lane::Messaging, "peer-restarted".into()));
    let again = b
        .seen
        .iter()
        .rposition(|s| *s == Seen::Msg(Lane::Messaging, 1));
    assert!(
        matches!((gap, again), (Some(g), Some(m)) if g < m),
        "the receiver hears of the sender's restart before its new messages: {:?}",
        b.seen
    );
}

/// Issue 11 `--lane-queue-bytes`: the lane of a member whose socket is gone (its relays wait in
/// its multiplexer, which nobody drains) holds at most that many bytes. The oldest messages
/// are forgotten, never silently: the member hears a discontinuity when it comes back, then
/// the newest messages in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_members_lane_is_bounded_in_bytes() {
    let config = Config {
        lane_queue_bytes: 256 << 10,
        ..config()
    };
    let (_server, addr) = start_with("127.0.0.1:0".parse().unwrap(), config).await;
    let mut b = Node::new(addr, "receiver", "r").await;
    let mut a = Node::new(addr, "sender", "r").await;
    settle(&mut a, &mut b, |_| true).await;
    // b's socket is cut and b is not driven (no reconnect) while a sends 40 × 60 KiB: 2.4 MB
    // for b's Messaging lane, whose queue depth (500) alone would keep them all.
    b.cut();
    tokio::time::sleep(Duration::from_millis(300)).await;
    const N: u64 = 40;
    for n in 1..=N {
        a.c.send(
            Lane::Messaging,
            json!({"n": n, "pad": "x".repeat(60 << 10)}),
            None,
        )
        .expect("a's own lane has room");
        a.step(Duration::ZERO).await;
    }
    for _ in 0..200 {
        a.step(Duration::from_millis(5)).await;
    }
    // b comes back: a discontinuity, then the newest messages up to the last.
    settle(&mut a, &mut b, |b| {
        b.seen
            .iter()
            .any(|s| matches!(s, Seen::Msg(Lane::Messaging, N)))
    })
    .await;
    let got = check(&b.seen, Lane::Messaging);
    assert!(
        b.seen
            .iter()
            .any(|s| matches!(s, Seen::Discontinuity(Lane::Messaging))),
        "forgotten messages are reported: {:?}",
        b.seen
    );
    assert!(
        got.len() <= 5,
        "at most 256 KiB of 60 KiB messages were kept: {got:?}"
    );
}

/// Steps every node for `ms` milliseconds.
async fn pump(ns: &mut [&mut Node], ms: u64) {
    let end = Instant::now() + Duration::from_millis(ms);
    while Instant::now() < end {
        for n in ns.iter_mut() {
            n.step(Duration::from_millis(1)).await;
        }
    }
}

/// Steps every node until `until(ns[0])`, or panics after 20 s.
async fn pump_until(ns: &mut [&mut Node], until: impl Fn(&Node) -> bool) {
    let end = Instant::now() + Duration::from_secs(20);
    while !until(ns[0]) {
        assert!(
            Instant::now() < end,
            "timed out; receiver saw {:?}",
            ns[0].seen
        );
        for n in ns.iter_mut() {
            n.step(Duration::from_millis(1)).await;
        }
    }
}

fn messages(n: &Node) -> usize {
    n.seen.iter().filter(|s| matches!(s, Seen::Msg(..))).count()
}

/// Two nodes on a real redis-server (each behind a proxy that can cut it off); a
/// multiplexed receiver on node0 with a sender on its node (Messaging) and one on node1
/// (Data). It gets and acknowledges 1..=10 of each, then loses its socket; 11..=20 of each
/// reach node0 (and the room's stream) while it is away, unacknowledged; node0 dies (tasks
/// aborted, Redis cut); with `trim` the room's stream is then emptied (`XTRIM MAXLEN 0`).
/// The receiver reconnects through node1.
async fn receiver_resumes_after_its_node_dies(trim: bool) -> Node {
    let redis = common::cluster::redis().await.expect("redis-server");
    let (mut n, proxies) = common::cluster::nodes_behind_proxies(&redis, 2).await;
    let mut b = Node::new(n[0].addr, "receiver", "r").await;
    let mut local = Node::new(n[0].addr, "local", "r").await;
    let mut remote = Node::new(n[1].addr, "remote", "r").await;
    for i in 1..=10 {
        local
            .send(Lane::Messaging, numbered(i, Lane::Messaging), &mut b)
            .await;
        remote
            .send(Lane::Data, numbered(i, Lane::Data), &mut b)
            .await;
    }
    pump_until(&mut [&mut b, &mut local, &mut remote], |b| {
        messages(b) == 20
    })
    .await;
    // Acknowledged, and the cursor written (every 200 ms).
    pump(&mut [&mut b, &mut local, &mut remote], 800).await;
    b.cut();
    for i in 11..=20 {
        local
            .send(Lane::Messaging, numbered(i, Lane::Messaging), &mut remote)
            .await;
        remote
            .send(Lane::Data, numbered(i, Lane::Data), &mut local)
            .await;
    }
    pump(&mut [&mut local, &mut remote], 800).await;
    n[0].crash();
    proxies[0].cut();
    drop(local);
    if trim {
        let _: i64 = redis
            .cmd(
                redis::cmd("XTRIM")
                    .arg("p3:room:{r}:stream")
                    .arg("MAXLEN")
                    .arg(0),
            )
            .await;
    }
    b.addr = n[1].addr;
    pump(&mut [&mut b, &mut remote], 3000).await;
    b
}

/// Issue 14: a multiplexed session whose node dies resumes on another node with every relay
/// it had not acknowledged, from both senders, once and in order (after the new node's
/// `peer-restarted`); the ones it had acknowledged are not sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_node_died_gets_its_unacknowledged_relays_once_in_order() {
    if std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: redis-server is not installed");
        return;
    }
    let b = receiver_resumes_after_its_node_dies(false).await;
    let all: Vec<u64> = (1..=20).collect();
    for lane in [Lane::Messaging, Lane::Data] {
        assert_eq!(check(&b.seen, lane), all, "{lane:?}: {:?}", b.seen);
    }
    assert!(
        b.seen.contains(&Seen::Discontinuity(Lane::Messaging)),
        "the new node's multiplexer is a restarted peer: {:?}",
        b.seen
    );
    assert!(
        !b.seen.iter().any(|s| matches!(s, Seen::SenderGap(..))),
        "the room's stream still covers the cursor: {:?}",
        b.seen
    );
}

/// Issue 14: when the room's stream no longer reaches back to the resume cursor (trimmed:
/// here all of it, `XTRIM MAXLEN 0`, as `--room-stream-len` does to old entries), the
/// resumed session gets the §17 discontinuity (`history-lost`, room epochs and seqs) on
/// each of its reliable lanes, never silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_cursor_the_stream_no_longer_covers_is_a_discontinuity() {
    if std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: redis-server is not installed");
        return;
    }
    let b = receiver_resumes_after_its_node_dies(true).await;
    let first: Vec<u64> = (1..=10).collect();
    for lane in [Lane::Messaging, Lane::Data] {
        assert_eq!(check(&b.seen, lane), first, "{lane:?}: {:?}", b.seen);
        assert!(
            b.seen
                .contains(&Seen::SenderGap(lane, "history-lost".into())),
            "{lane:?}: {:?}",
            b.seen
        );
    }
}
