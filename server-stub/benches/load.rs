//! Latency under load, server-stub beside socket.io 4 (issue 11 "Latency under load").
//!
//! Run with `cargo bench -p server-stub --bench load` (or `npm run bench`); needs Node and the
//! workspace's `node_modules` (`socket.io` is a devDependency). `-- --step-ms N` changes the
//! length of one step (default 3,000 ms).
//!
//! One load generator (this process) for both servers, each a fresh child process on
//! 127.0.0.1 port 0, one after the other:
//! - **p3**: the release `server-stub` (with `--rate-limits off` when its `--help` lists that
//!   flag), sessions opened as the SDK opens them by default: handshake `POST` offering `mux`,
//!   WebSocket, client-side multiplexer (`p3_lanes::core::mux`), `join` on Control, chat
//!   messages as Data frames on the Messaging lane (msgpack, as the SDK sends).
//! - **socketio**: `scripts/lib/socketio-server.mjs` (socket.io 4, in-memory adapter,
//!   WebSocket transport only), spoken to as Engine.IO v4 / Socket.IO v5 over a plain
//!   WebSocket (`/socket.io/?EIO=4&transport=websocket`: `0{..}` open, `40` connect,
//!   `42["join",room]` with ack, `42["msg",room,data]` relayed to the room as `42["msg",data]`,
//!   ping `2` answered with `3`).
//!
//! Scenario: 20 rooms of 10 members, one sender per room, ~100-byte JSON messages carrying the
//! sender's timestamp (µs on this process's clock) and the step number; every message reaches
//! the 9 other members. A rate ladder of offered deliveries per second ([`LADDER`]); each step
//! lasts `--step-ms` and is followed by up to 2 s of drain. Per step: latency p50/p99 of every
//! delivery of that step's messages (send stamp to receipt, log-bucketed at ~3 %), and the
//! delivered rate (deliveries received during the step / its length). The ladder stops after a
//! step that delivered less than 80 % of what was offered (the server is saturated).
//! Sustainable rate: the highest step with p99 ≤ 50 ms and ≥ 95 % of the offered rate
//! delivered.
//!
//! The generator shares the machine's cores with the server (and its per-delivery work, a
//! multiplexer per p3 member, is in the figures): compare rows of one run, not runs.
//!
//! `-- --cluster` (issue 14) runs instead the p3 ladder on one node and on three nodes on one
//! `redis-server` (each room's members spread over the three, every relay crossing Redis
//! Streams), and replaces the `cluster.fanout.` entries: each step's p50, p99 and delivered
//! rate on three nodes, with the one-node figure of the same step as baseline.
//!
//! `-- --socketio` (issue 14, the anchor users would pick) puts three socket.io 4 nodes
//! (`scripts/lib/socketio-server.mjs --adapter ...`) beside the three server-stub nodes of
//! `--cluster`: once with `@socket.io/redis-adapter` (Redis pub/sub), once with
//! `@socket.io/redis-streams-adapter` (one Redis stream), each set of three on a
//! `redis-server` of its own. Same generator, rooms, spread over the nodes (member `k` on node
//! `k % 3`, so every room spans all three) and message shape as above. All three sets are open
//! at once and take turns: each step of [`SOCKETIO_LADDER`] (two lower steps first) runs as
//! [`SOCKETIO_ROUNDS`] windows of `--step-ms` on each set in turn, the figures of a step being
//! those of its windows together, so load from outside the bench falls on all three alike.
//! Then [`RESTART_RUNS`] times for each set in turn, on fresh processes, a Redis restart under
//! a steady stream ([`redis_restart`]): every room's sender sends [`RESTART_MESSAGES`] numbered messages at
//! [`RESTART_PER_S`]; 3 s in, `redis-server` is SIGKILLed and 1 s later started again, empty, on
//! the same port; each receiver's missing numbers are counted, as *told* when a `discontinuity`
//! (PROTOCOL.md §17) reached it inside the gap, else as *silent*. Replaces the
//! `cluster.socketio.` entries (each socket.io step's p50, p99 and delivered rate with
//! server-stub's figure of the same step as baseline; the sustainable rates) and the
//! `cluster.redis-restart.` entries (silent and told losses).
//!
//! Replaces the `load.` entries of `bench-results.json` (`{name, value, unit, baseline,
//! ratio}`): `load.p3.*`, `load.socketio.*` and `load.ratio.*` (p3 / socket.io).

use futures::{SinkExt, StreamExt};
use p3_lanes::core::control::Control;
use p3_lanes::core::dictionary::Dictionary;
use p3_lanes::core::frame::{FrameHeader, FrameKind};
use p3_lanes::core::lane::{Encoding, Lane};
use p3_lanes::core::mux::MuxEvent;
use p3_lanes::core::payload;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::{now_us, ChildGuard, Session, Ws};

#[path = "../../sdk/benches/support/mod.rs"]
mod support;
use support::write_results;

/// Rooms in the scenario.
const ROOMS: usize = 20;
/// Members per room (one sender).
const MEMBERS: usize = 10;
/// Offered deliveries per second, per step.
const LADDER: [u64; 6] = [20_000, 50_000, 90_000, 144_000, 250_000, 350_000];
/// The ladder of `-- --socketio`: two lower steps first (socket.io's nodes on Redis saturate
/// early), then [`LADDER`].
const SOCKETIO_LADDER: [u64; 8] = [
    5_000, 10_000, 20_000, 50_000, 90_000, 144_000, 250_000, 350_000,
];
/// Windows (of `--step-ms` each) per step and target in `-- --socketio`, the targets taking
/// turns.
const SOCKETIO_ROUNDS: u32 = 2;
/// No ladder step of `-- --socketio` begins after this (the restart runs follow, ~2.5 min).
const SOCKETIO_BUDGET: Duration = Duration::from_secs(150);
/// Steps of the longest ladder (what [`Stats`] holds figures for).
const MAX_STEPS: usize = SOCKETIO_LADDER.len();
/// Drain time after each step.
const DRAIN: Duration = Duration::from_secs(2);
/// Sustainable: p99 at most this (ms) ...
const P99_BOUND_MS: f64 = 50.0;
/// ... and at least this share of the offered rate delivered.
const DELIVERED_BOUND: f64 = 0.95;
/// Sender pacing tick.
const TICK: Duration = Duration::from_millis(2);
/// After a step's drain, at most this long for the servers to go quiet.
const SETTLE: Duration = Duration::from_secs(5);

/// Log-bucketed latency histogram (µs), lock-free: exact below 64 µs, then 32 buckets per
/// power of two (~3 %).
struct Hist {
    buckets: Vec<AtomicU64>,
}

impl Hist {
    const LEN: usize = 64 + 40 * 32;

    fn new() -> Hist {
        Hist {
            buckets: (0..Hist::LEN).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn index(us: u64) -> usize {
        if us < 64 {
            return us as usize;
        }
        let lz = 63 - u64::from(us.leading_zeros());
        let sub = (us >> (lz - 5)) & 31;
        (64 + (lz - 6) * 32 + sub).min(Hist::LEN as u64 - 1) as usize
    }

    /// The lower edge of bucket `i`, µs.
    fn value(i: usize) -> u64 {
        if i < 64 {
            return i as u64;
        }
        let lz = (i - 64) / 32 + 6;
        let sub = ((i - 64) % 32) as u64;
        (32 + sub) << (lz - 5)
    }

    fn record(&self, us: u64) {
        self.buckets[Hist::index(us)].fetch_add(1, Ordering::Relaxed);
    }

    fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The p-th percentile, ms (NaN when empty).
    fn percentile_ms(&self, p: f64) -> f64 {
        let n = self.count();
        if n == 0 {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * n as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= rank {
                // Middle of the bucket.
                let lo = Hist::value(i) as f64;
                let hi = Hist::value(i + 1) as f64;
                return (lo + hi) / 2.0 / 1000.0;
            }
        }
        f64::NAN
    }
}

/// What every member task reports into.
struct Stats {
    /// Per ladder step: latency of every delivery of that step's messages.
    hist: Vec<Hist>,
    /// Per ladder step: messages sent.
    sent: Vec<AtomicU64>,
    /// Deliveries received since the current step began.
    in_window: AtomicU64,
    /// Per ladder step: (seconds, deliveries received) of its windows so far.
    windows: Mutex<Vec<(f64, u64)>>,
    /// Members that lost their socket.
    broken: AtomicU64,
    /// How they lost it: close code (or the error), counted.
    lost: Mutex<BTreeMap<String, u64>>,
    /// Per member (`room * MEMBERS + k`): messages it sent.
    sent_by: Vec<AtomicU64>,
    /// Per member: what it received of numbered messages (the Redis restart run), in order:
    /// each message's number, and [`TOLD`] for a discontinuity.
    logs: Vec<Mutex<Vec<u64>>>,
    /// Relays the server refused to their sender (a Control `error`), by code.
    refused: Mutex<BTreeMap<String, u64>>,
}

/// In a member's log: a `discontinuity` reached it here (PROTOCOL.md §11.6, §17).
const TOLD: u64 = u64::MAX;

impl Stats {
    fn new() -> Stats {
        Stats {
            hist: (0..MAX_STEPS).map(|_| Hist::new()).collect(),
            sent: (0..MAX_STEPS).map(|_| AtomicU64::new(0)).collect(),
            in_window: AtomicU64::new(0),
            windows: Mutex::new(vec![(0.0, 0); MAX_STEPS]),
            broken: AtomicU64::new(0),
            lost: Mutex::new(BTreeMap::new()),
            sent_by: (0..ROOMS * MEMBERS).map(|_| AtomicU64::new(0)).collect(),
            logs: (0..ROOMS * MEMBERS)
                .map(|_| Mutex::new(Vec::new()))
                .collect(),
            refused: Mutex::new(BTreeMap::new()),
        }
    }

    /// Member `i` sent a message of `step`.
    fn sent(&self, i: usize, step: u64) {
        self.sent[step as usize].fetch_add(1, Ordering::Relaxed);
        self.sent_by[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Member `i` received `v` (a message's payload): a delivery if stamped, its number if
    /// numbered, a [`TOLD`] if a discontinuity.
    fn received(&self, i: usize, v: &Value) {
        if v.get("type").and_then(Value::as_str) == Some("discontinuity") {
            self.told(i);
            return;
        }
        if let Some((step, t)) = stamp(v) {
            self.delivered(step, t);
        }
        if let Some(n) = v.get("n").and_then(Value::as_u64) {
            self.logs[i].lock().expect("log").push(n);
        }
    }

    /// Member `i` was told that messages were lost.
    fn told(&self, i: usize) {
        self.logs[i].lock().expect("log").push(TOLD);
    }

    /// Entries in every member's log.
    fn log_len(&self) -> usize {
        self.logs.iter().map(|l| l.lock().expect("log").len()).sum()
    }

    /// A member lost its socket: `how` (its close frame or error).
    fn lost(&self, how: String) {
        self.broken.fetch_add(1, Ordering::Relaxed);
        *self.lost.lock().expect("lost").entry(how).or_insert(0) += 1;
    }

    /// One delivery of a message stamped `(step, t_us)`.
    fn delivered(&self, step: u64, t_us: u64) {
        self.in_window.fetch_add(1, Ordering::Relaxed);
        if let Some(h) = self.hist.get(step as usize) {
            h.record(now_us().saturating_sub(t_us));
        }
    }
}

/// What senders do now: send `per_s` messages per second from `start_us`, stamped `step`;
/// `per_s == 0` means pause. `limit > 0`: at most `limit` messages, each numbered (`n`, from
/// 0), the Redis restart run.
#[derive(Clone, Copy, Debug, Default)]
struct Pace {
    step: u64,
    per_s: f64,
    start_us: u64,
    limit: u64,
}

impl Pace {
    /// Messages due by now.
    fn due(&self) -> u64 {
        let due = (now_us().saturating_sub(self.start_us) as f64 * self.per_s / 1e6) as u64;
        if self.limit > 0 {
            due.min(self.limit)
        } else {
            due
        }
    }

    /// Message `n` of this pace, from `room`.
    fn message(&self, room: usize, n: u64) -> Value {
        let mut m = message(room, self.step);
        if self.limit > 0 {
            m["n"] = json!(n);
        }
        m
    }
}

/// The message: ~100 bytes as JSON (the Redis restart run adds its number, `n`).
fn message(room: usize, step: u64) -> Value {
    json!({
        "type": "chat",
        "room": format!("load-{room}"),
        "step": step,
        "t": now_us(),
        "text": "lorem ipsum dolor sit amet, consectetur",
    })
}

/// Reads `(step, t)` out of a delivered message.
fn stamp(v: &Value) -> Option<(u64, u64)> {
    Some((v.get("step")?.as_u64()?, v.get("t")?.as_u64()?))
}

/// The server under load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    P3,
    /// Another server-stub build, `$BENCH_SERVER_BEFORE` (e.g. before a change), run only when
    /// that variable is set; rows `load.p3-before.*`.
    P3Before,
    SocketIo,
    /// `-- --cluster` (issue 14): three server-stub nodes on one `redis-server` (child
    /// processes on free loopback ports), each room's members spread over the three; rows
    /// `cluster.*` beside `P3` (one node) in the same run.
    Cluster,
    /// `-- --socketio` (issue 14): three socket.io 4 nodes on one `redis-server` with
    /// `@socket.io/redis-adapter` (pub/sub), rooms spread as for [`Target::Cluster`].
    SioRedis,
    /// As [`Target::SioRedis`] with `@socket.io/redis-streams-adapter` (one Redis stream).
    SioStreams,
}

impl Target {
    fn key(self) -> &'static str {
        match self {
            Target::P3 => "p3",
            Target::P3Before => "p3-before",
            Target::SocketIo => "socketio",
            Target::Cluster => "three-nodes",
            Target::SioRedis => "redis-adapter",
            Target::SioStreams => "redis-streams-adapter",
        }
    }

    /// Whether this target's members speak socket.io.
    fn socketio(self) -> bool {
        matches!(
            self,
            Target::SocketIo | Target::SioRedis | Target::SioStreams
        )
    }
}

/// One step's figures.
#[derive(Clone, Copy, Debug)]
struct StepFigures {
    offered: u64,
    sent_rate: f64,
    delivered_rate: f64,
    p50_ms: f64,
    p99_ms: f64,
}

impl StepFigures {
    fn sustainable(&self) -> bool {
        self.p99_ms <= P99_BOUND_MS && self.delivered_rate >= DELIVERED_BOUND * self.offered as f64
    }
}

/// Why a member's socket read ends the member: a close (code, reason), a read error or the
/// end of the stream; `None` for a message the member skips (ping, pong, other kinds).
fn socket_ended(
    msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
) -> Option<String> {
    match msg {
        Some(Ok(Message::Close(c))) => Some(format!(
            "close {:?}",
            c.map(|c| (u16::from(c.code), c.reason.to_string()))
        )),
        Some(Ok(_)) => None,
        other => Some(format!("{other:?}")),
    }
}

// ---------------------------------------------------------------------------------------
// p3 (server-stub) members

/// A p3 member: drives its multiplexer, records deliveries; the sender also sends at `pace`.
async fn p3_member(
    mut s: Session,
    room: usize,
    i: usize,
    mut pace: Option<watch::Receiver<Pace>>,
    stats: Arc<Stats>,
) {
    let dict = Dictionary::current();
    let mut current = Pace::default();
    let mut sent_in_step = 0u64;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let far = Duration::from_secs(3600);
    loop {
        let Some((events, next)) = common::mux_flush(&mut s.ws, &mut s.mux).await else {
            stats.lost("write failed".into());
            return;
        };
        for ev in events {
            let bytes = match ev {
                MuxEvent::Message { bytes, .. } => bytes,
                MuxEvent::Discontinuity(_) => {
                    stats.told(i);
                    continue;
                }
                _ => continue,
            };
            let Ok((h, body)) = FrameHeader::decode(&bytes) else {
                continue;
            };
            if h.kind == FrameKind::Control {
                if let Ok(Control::Error { code, .. }) =
                    payload::decode_control(&h, body, Some(&dict))
                {
                    let code = serde_json::to_string(&code).unwrap_or_default();
                    *stats
                        .refused
                        .lock()
                        .expect("refused")
                        .entry(code)
                        .or_insert(0) += 1;
                }
                continue;
            }
            if let Ok(v) = payload::decode(&h, body, Some(&dict)) {
                stats.received(i, &v);
            }
        }
        let timer = common::mux_wait(next).unwrap_or(far);
        tokio::select! {
            msg = s.ws.next() => match msg {
                Some(Ok(Message::Binary(b))) => s.mux.handle_input(&b, common::mux_now()),
                other => if let Some(why) = socket_ended(other) {
                    stats.lost(why);
                    return;
                },
            },
            () = tokio::time::sleep(timer) => s.mux.handle_timeout(common::mux_now()),
            _ = tick.tick(), if pace.is_some() => {
                let rx = pace.as_mut().expect("pace");
                if rx.has_changed().unwrap_or(false) {
                    current = *rx.borrow_and_update();
                    sent_in_step = 0;
                }
                if current.per_s > 0.0 {
                    while sent_in_step < current.due() {
                        let (body, dv) = payload::encode(
                            &current.message(room, sent_in_step),
                            Encoding::Msgpack,
                            Some(&dict),
                        )
                        .expect("encode");
                        let frame =
                            FrameHeader::data(Lane::Messaging, Encoding::Msgpack, 0, dv).encode(&body);
                        if s.mux.send(Lane::Messaging, frame).is_err() {
                            // Backpressure: the rest of this tick's messages wait.
                            break;
                        }
                        sent_in_step += 1;
                        stats.sent(i, current.step);
                    }
                }
            }
        }
    }
}

/// Opens the p3 rooms; returns the senders' pace channel.
/// Member `k` of each room opens its session on `addrs[k % addrs.len()]`.
async fn p3_rooms(addrs: &[SocketAddr], stats: &Arc<Stats>) -> watch::Sender<Pace> {
    let http = reqwest::Client::new();
    let (tx, rx) = watch::channel(Pace::default());
    for room in 0..ROOMS {
        for k in 0..MEMBERS {
            let i = room * MEMBERS + k;
            let mut s = common::open_session(&http, addrs[k % addrs.len()], i)
                .await
                .unwrap_or_else(|e| panic!("p3 session {i}: {e}"));
            common::join(&mut s, &format!("load-{room}"))
                .await
                .unwrap_or_else(|e| panic!("p3 session {i}: {e}"));
            let pace = (k == 0).then(|| rx.clone());
            tokio::spawn(p3_member(s, room, i, pace, stats.clone()));
        }
    }
    tx
}

// ---------------------------------------------------------------------------------------
// socket.io members (Engine.IO v4 / Socket.IO v5 over a plain WebSocket)

/// Connects to the socket.io server and joins `room` (ack awaited).
async fn sio_connect(addr: SocketAddr, room: usize) -> Result<Ws, String> {
    let path = "/socket.io/?EIO=4&transport=websocket";
    let mut ws = common::ws_from(addr, path, IpAddr::from([127, 0, 0, 1])).await?;
    let open = sio_next_text(&mut ws).await?;
    if !open.starts_with('0') {
        return Err(format!("expected Engine.IO open, got {open:?}"));
    }
    ws.send(Message::text("40"))
        .await
        .map_err(|e| e.to_string())?;
    let connect = sio_next_text(&mut ws).await?;
    if !connect.starts_with("40") {
        return Err(format!("expected Socket.IO connect, got {connect:?}"));
    }
    ws.send(Message::text(format!("420[\"join\",\"load-{room}\"]")))
        .await
        .map_err(|e| e.to_string())?;
    let ack = sio_next_text(&mut ws).await?;
    if !ack.starts_with("430") {
        return Err(format!("expected join ack, got {ack:?}"));
    }
    Ok(ws)
}

/// The next text message that is not an Engine.IO ping (pings answered), bounded by `WAIT`.
async fn sio_next_text(ws: &mut Ws) -> Result<String, String> {
    loop {
        let msg = tokio::time::timeout(common::WAIT, ws.next())
            .await
            .map_err(|_| "timed out".to_string())?
            .ok_or("socket ended")?
            .map_err(|e| e.to_string())?;
        let Message::Text(t) = msg else { continue };
        if t.as_str() == "2" {
            ws.send(Message::text("3"))
                .await
                .map_err(|e| e.to_string())?;
            continue;
        }
        return Ok(t.as_str().to_string());
    }
}

/// A socket.io member: answers pings, records deliveries; the sender also sends at `pace`
/// (every message due in a tick written with `feed`, then one `flush`).
async fn sio_member(
    mut ws: Ws,
    room: usize,
    i: usize,
    mut pace: Option<watch::Receiver<Pace>>,
    stats: Arc<Stats>,
) {
    let mut current = Pace::default();
    let mut sent_in_step = 0u64;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    let t = t.as_str();
                    if t == "2" {
                        if ws.send(Message::text("3")).await.is_err() {
                            stats.lost("write failed".into());
                            return;
                        }
                    } else if let Some(body) = t.strip_prefix("42") {
                        let v: Option<Value> = serde_json::from_str(body).ok();
                        if let Some(v) = v.as_ref().and_then(|v| v.get(1)) {
                            stats.received(i, v);
                        }
                    }
                }
                other => if let Some(why) = socket_ended(other) {
                    stats.lost(why);
                    return;
                },
            },
            _ = tick.tick(), if pace.is_some() => {
                let rx = pace.as_mut().expect("pace");
                if rx.has_changed().unwrap_or(false) {
                    current = *rx.borrow_and_update();
                    sent_in_step = 0;
                }
                if current.per_s <= 0.0 {
                    continue;
                }
                let due = current.due();
                let mut any = false;
                while sent_in_step < due {
                    let text = json!(["msg", format!("load-{room}"), current.message(room, sent_in_step)]);
                    if ws.feed(Message::text(format!("42{text}"))).await.is_err() {
                        stats.lost("write failed".into());
                        return;
                    }
                    any = true;
                    sent_in_step += 1;
                    stats.sent(i, current.step);
                }
                if any && ws.flush().await.is_err() {
                    stats.lost("write failed".into());
                    return;
                }
            }
        }
    }
}

/// Opens the socket.io rooms; returns the senders' pace channel.
/// Member `k` of each room connects to `addrs[k % addrs.len()]` (as [`p3_rooms`]).
async fn sio_rooms(addrs: &[SocketAddr], stats: &Arc<Stats>) -> watch::Sender<Pace> {
    let (tx, rx) = watch::channel(Pace::default());
    for room in 0..ROOMS {
        for k in 0..MEMBERS {
            let ws = sio_connect(addrs[k % addrs.len()], room)
                .await
                .unwrap_or_else(|e| panic!("socket.io member {room}/{k}: {e}"));
            let pace = (k == 0).then(|| rx.clone());
            tokio::spawn(sio_member(
                ws,
                room,
                room * MEMBERS + k,
                pace,
                stats.clone(),
            ));
        }
    }
    tx
}

// ---------------------------------------------------------------------------------------

/// A `redis-server` without persistence on a free loopback port, answering `PING`.
fn spawn_redis() -> (ChildGuard, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    (spawn_redis_on(port), port)
}

/// A `redis-server` without persistence on `port` (also to restart one there, empty), once
/// it accepts connections.
fn spawn_redis_on(port: u16) -> ChildGuard {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server (Debian package `redis-server`; `node scripts/setup.mjs`)");
    let guard = ChildGuard(child);
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return guard;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("redis-server did not listen on {port}");
}

/// A target's processes: `guards` (with `redis`, the first guard is its `redis-server`) and
/// the addresses members connect to.
struct Servers {
    guards: Vec<ChildGuard>,
    addrs: Vec<SocketAddr>,
    redis: Option<u16>,
}

/// Starts `target`'s server processes.
fn spawn(target: Target) -> Servers {
    if matches!(
        target,
        Target::Cluster | Target::SioRedis | Target::SioStreams
    ) {
        let (redis, port) = spawn_redis();
        let url = format!("redis://127.0.0.1:{port}/");
        let mut guards = vec![redis];
        let mut addrs = Vec::new();
        for n in 0..3 {
            let node = format!("node{n}");
            let (g, a) = match target {
                Target::Cluster => common::spawn_server(&[
                    "--rate-limits",
                    "off",
                    "--redis-url",
                    &url,
                    "--node-id",
                    &node,
                ]),
                _ => {
                    let adapter = if target == Target::SioRedis {
                        "redis"
                    } else {
                        "redis-streams"
                    };
                    let mut cmd = socketio_server();
                    cmd.args(["--adapter", adapter, "--redis-url", &url]);
                    common::spawn_listening(cmd)
                }
            };
            guards.push(g);
            addrs.push(a);
        }
        println!("{}: redis-server on {port}, nodes {addrs:?}", target.key());
        return Servers {
            guards,
            addrs,
            redis: Some(port),
        };
    }
    let (g, a) = spawn_one(target);
    Servers {
        guards: vec![g],
        addrs: vec![a],
        redis: None,
    }
}

/// `node scripts/lib/socketio-server.mjs`, run from the workspace root.
fn socketio_server() -> Command {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cmd = Command::new("node");
    cmd.arg("scripts/lib/socketio-server.mjs").current_dir(root);
    cmd
}

fn spawn_one(target: Target) -> (ChildGuard, SocketAddr) {
    match target {
        Target::P3 | Target::P3Before => {
            let bin = match target {
                Target::P3Before => {
                    std::env::var("BENCH_SERVER_BEFORE").expect("BENCH_SERVER_BEFORE")
                }
                _ => common::server_bin(),
            };
            let help = Command::new(&bin).arg("--help").output();
            let extra: &[&str] = if help
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--rate-limits"))
            {
                &["--rate-limits", "off"]
            } else {
                &[]
            };
            println!("{}: {bin} {}", target.key(), extra.join(" "));
            common::spawn_server_bin(&bin, extra)
        }
        Target::SocketIo => common::spawn_listening(socketio_server()),
        Target::Cluster | Target::SioRedis | Target::SioStreams => {
            unreachable!("spawn() starts a cluster's processes")
        }
    }
}

/// A target with its rooms open: its processes, what its members report into, and its
/// senders' pace.
struct Live {
    target: Target,
    servers: Servers,
    stats: Arc<Stats>,
    pace: watch::Sender<Pace>,
}

impl Live {
    /// Starts fresh processes of `target` and opens its rooms.
    async fn open(target: Target) -> Live {
        let servers = spawn(target);
        let stats = Arc::new(Stats::new());
        let pace = if target.socketio() {
            sio_rooms(&servers.addrs, &stats).await
        } else {
            p3_rooms(&servers.addrs, &stats).await
        };
        let live = Live {
            target,
            servers,
            stats,
            pace,
        };
        println!(
            "{}: {ROOMS} rooms × {MEMBERS} members open on {:?}, server RSS {:.1} MiB",
            target.key(),
            live.servers.addrs,
            live.rss_mib()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        live
    }

    /// Resident memory of the (last) server process, MiB.
    fn rss_mib(&self) -> f64 {
        let pid = self.servers.guards.last().expect("a server").0.id();
        common::rss_bytes(pid) as f64 / 1048576.0
    }

    /// Runs a window of ladder step `k` (offered deliveries per second `offered`, for
    /// `step`), then lets what is in flight arrive (up to [`DRAIN`]) and the servers go quiet
    /// (up to [`SETTLE`]: no delivery for 200 ms), so the next run on the machine starts
    /// clean. The figures are those of every window of step `k` so far.
    async fn step(&self, k: usize, offered: u64, step: Duration) -> StepFigures {
        let stats = &self.stats;
        let receivers = (ROOMS * (MEMBERS - 1)) as f64;
        let per_s = offered as f64 / receivers;
        stats.in_window.store(0, Ordering::Relaxed);
        let start_us = now_us();
        self.pace.send_replace(Pace {
            step: k as u64,
            per_s,
            start_us,
            limit: 0,
        });
        tokio::time::sleep(step).await;
        self.pace.send_replace(Pace::default());
        let (window, received) = {
            let mut w = stats.windows.lock().expect("windows");
            w[k].0 += (now_us() - start_us) as f64 / 1e6;
            w[k].1 += stats.in_window.load(Ordering::Relaxed);
            w[k]
        };
        let sent = stats.sent[k].load(Ordering::Relaxed);
        // Let what is in flight arrive.
        let due = sent * (MEMBERS as u64 - 1);
        let until = tokio::time::Instant::now() + DRAIN;
        while stats.hist[k].count() < due && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let f = StepFigures {
            offered,
            sent_rate: (sent * (MEMBERS as u64 - 1)) as f64 / window,
            delivered_rate: received as f64 / window,
            p50_ms: stats.hist[k].percentile_ms(50.0),
            p99_ms: stats.hist[k].percentile_ms(99.0),
        };
        let key = self.target.key();
        println!(
            "{:>8}: offered {:>7}/s, sent {:>9.0}/s, delivered {:>9.0}/s ({:>5.1} %), p50 {:>8.2} ms, p99 {:>8.2} ms, lost after drain {}, server RSS {:.1} MiB{}",
            key,
            offered,
            f.sent_rate,
            f.delivered_rate,
            100.0 * f.delivered_rate / offered as f64,
            f.p50_ms,
            f.p99_ms,
            due.saturating_sub(stats.hist[k].count()),
            self.rss_mib(),
            if f.sustainable() { "" } else { "  (not sustainable)" },
        );
        let broken = stats.broken.load(Ordering::Relaxed);
        if broken > 0 {
            let how = stats.lost.lock().expect("lost").clone();
            println!("{key}: {broken} members lost their socket: {how:?}");
        }
        self.settle().await;
        f
    }

    /// Waits (up to [`SETTLE`]) until no delivery arrived for 200 ms.
    async fn settle(&self) {
        let until = tokio::time::Instant::now() + SETTLE;
        let mut seen = self.stats.in_window.load(Ordering::Relaxed);
        while tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = self.stats.in_window.load(Ordering::Relaxed);
            if now == seen {
                return;
            }
            seen = now;
        }
    }
}

/// Whether a step delivered so little of what was offered that its ladder stops there.
fn saturated(f: &StepFigures) -> bool {
    f.delivered_rate < 0.8 * f.offered as f64
}

/// Runs the ladder against a fresh server of `target`.
async fn ladder(target: Target, step: Duration) -> Vec<StepFigures> {
    ladders(&[target], &LADDER, 1, step, None)
        .await
        .pop()
        .expect("one ladder")
}

/// Runs the ladder `rates` (offered deliveries per second per step, at most [`MAX_STEPS`])
/// against fresh servers of every target, interleaved: every target's rooms
/// are open at once (idle but for their heartbeats), and each step runs as `rounds` windows
/// of `window` on each target in turn, so the targets share whatever else loads the machine.
/// A target's ladder stops (and its processes end) once a step has delivered less than 80 %
/// of what was offered; every ladder stops before a step that would begin after `budget`.
async fn ladders(
    targets: &[Target],
    rates: &[u64],
    rounds: u32,
    window: Duration,
    budget: Option<Duration>,
) -> Vec<Vec<StepFigures>> {
    let deadline = budget.map(|b| tokio::time::Instant::now() + b);
    let mut live = Vec::new();
    for &t in targets {
        live.push(Some(Live::open(t).await));
    }
    let mut out = vec![Vec::new(); targets.len()];
    for (k, &offered) in rates.iter().enumerate() {
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            println!("time budget spent: every ladder stops before {offered} deliveries/s");
            break;
        }
        let mut last = vec![None; targets.len()];
        for _ in 0..rounds {
            for (slot, f) in live.iter_mut().zip(last.iter_mut()) {
                let Some(l) = slot else { continue };
                if f.as_ref().is_some_and(saturated) {
                    continue;
                }
                *f = Some(l.step(k, offered, window).await);
            }
        }
        for ((slot, figures), f) in live.iter_mut().zip(out.iter_mut()).zip(last) {
            let (Some(l), Some(f)) = (slot.as_ref(), f) else {
                continue;
            };
            figures.push(f);
            if saturated(&f) {
                println!("{}: saturated, ladder stops here", l.target.key());
                *slot = None;
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// A Redis restart under a steady stream (`-- --socketio`)

/// Messages per second from each room's sender in the Redis restart run.
const RESTART_PER_S: f64 = 50.0;
/// Numbered messages each room's sender sends in the Redis restart run (8 s at 50/s).
const RESTART_MESSAGES: u64 = 400;
/// When `redis-server` is SIGKILLed, counted from the first message.
const RESTART_KILL_AT: Duration = Duration::from_secs(3);
/// How long it stays down before it is started again, empty, on the same port.
const RESTART_DOWN: Duration = Duration::from_secs(1);
/// After the last message: deliveries are over once none arrived for this long ...
const RESTART_QUIET: Duration = Duration::from_secs(2);
/// ... or at the latest after this.
const RESTART_DRAIN: Duration = Duration::from_secs(10);
/// Restart runs per target (the targets taking turns): what pub/sub loses depends on when
/// its clients reconnect.
const RESTART_RUNS: usize = 3;

/// What the receivers of one target got of the numbered stream across a Redis restart.
#[derive(Clone, Debug, Default)]
struct Lost {
    /// Deliveries due: each message sent, once to each other member of its room.
    expected: u64,
    /// Distinct deliveries received.
    received: u64,
    /// Repeats of a delivery already received.
    duplicates: u64,
    /// Deliveries missing where the receiver was told: a discontinuity came between the
    /// last message before the gap and the first after it.
    told: u64,
    /// Deliveries missing without a word.
    silent: u64,
    /// Discontinuity messages received (one per reliable lane and member).
    discontinuities: u64,
}

impl Lost {
    /// Adds `o`'s counts to these.
    fn merge(&mut self, o: &Lost) {
        self.expected += o.expected;
        self.received += o.received;
        self.duplicates += o.duplicates;
        self.told += o.told;
        self.silent += o.silent;
        self.discontinuities += o.discontinuities;
    }

    /// Adds what a receiver's `log` (numbers and [`TOLD`]) says of messages `0..sent`.
    fn add(&mut self, log: &[u64], sent: u64) {
        self.expected += sent;
        let mut seen = vec![false; sent as usize];
        for &n in log {
            if n == TOLD {
                self.discontinuities += 1;
            } else if let Some(s) = seen.get_mut(n as usize) {
                if *s {
                    self.duplicates += 1;
                } else {
                    *s = true;
                    self.received += 1;
                }
            }
        }
        // Each gap (numbers missing between two received in order) is told if a TOLD came
        // between its two ends; a gap at the end, if one came after the last number.
        let mut gap = |from: u64, to: u64, told: bool| {
            let missing = (from..to.min(sent)).filter(|&n| !seen[n as usize]).count() as u64;
            if told {
                self.told += missing;
            } else {
                self.silent += missing;
            }
        };
        let (mut next, mut told) = (0, false);
        for &n in log {
            if n == TOLD {
                told = true;
            } else if n >= next {
                gap(next, n, told);
                (next, told) = (n + 1, false);
            }
        }
        gap(next, sent, told);
    }
}

/// One restart run: what the receivers got, what the servers refused to senders (by code),
/// members that lost their socket.
type Restart = (Lost, BTreeMap<String, u64>, u64);

/// Checks [`Lost::add`] on made-up logs before it counts anything real (panics if wrong).
fn check_lost_counting() {
    let mut l = Lost::default();
    // 0, 1, then a discontinuity, then 4 (2, 3 told); 5 twice; 8 (6, 7 silent); then a
    // discontinuity and nothing more (9 told).
    l.add(&[0, 1, TOLD, 4, 5, 5, 8, TOLD], 10);
    let got = (
        l.expected,
        l.received,
        l.duplicates,
        l.told,
        l.silent,
        l.discontinuities,
    );
    assert_eq!(got, (10, 5, 1, 3, 2, 2), "Lost::add miscounts: {l:?}");
}

/// Fresh processes of `target` (three nodes on one `redis-server`); each room's sender sends
/// [`RESTART_MESSAGES`] numbered messages at [`RESTART_PER_S`]; [`RESTART_KILL_AT`] in,
/// `redis-server` is SIGKILLed and, [`RESTART_DOWN`] later, started again empty on the same
/// port. Then what every receiver got, what the servers refused to senders (by code) and how
/// many members lost their socket.
async fn redis_restart(target: Target) -> Restart {
    let mut live = Live::open(target).await;
    let port = live.servers.redis.expect("a target on Redis");
    let start = tokio::time::Instant::now();
    live.pace.send_replace(Pace {
        step: 0,
        per_s: RESTART_PER_S,
        start_us: now_us(),
        limit: RESTART_MESSAGES,
    });
    tokio::time::sleep(RESTART_KILL_AT).await;
    let redis = &mut live.servers.guards[0].0;
    redis.kill().expect("SIGKILL redis-server");
    let _ = redis.wait();
    println!("{}: redis-server SIGKILLed", target.key());
    tokio::time::sleep(RESTART_DOWN).await;
    live.servers.guards[0] = tokio::task::spawn_blocking(move || spawn_redis_on(port))
        .await
        .expect("restart redis-server");
    println!("{}: redis-server restarted (empty) on {port}", target.key());
    let stream = Duration::from_secs_f64(RESTART_MESSAGES as f64 / RESTART_PER_S);
    tokio::time::sleep_until(start + stream + Duration::from_millis(100)).await;
    let until = tokio::time::Instant::now() + RESTART_DRAIN;
    let mut seen = live.stats.log_len();
    while tokio::time::Instant::now() < until {
        tokio::time::sleep(RESTART_QUIET).await;
        let now = live.stats.log_len();
        if now == seen {
            break;
        }
        seen = now;
    }
    live.pace.send_replace(Pace::default());
    let stats = &live.stats;
    let mut lost = Lost::default();
    for room in 0..ROOMS {
        let sent = stats.sent_by[room * MEMBERS].load(Ordering::Relaxed);
        for k in 1..MEMBERS {
            lost.add(&stats.logs[room * MEMBERS + k].lock().expect("log"), sent);
        }
    }
    let refused = stats.refused.lock().expect("refused").clone();
    let broken = stats.broken.load(Ordering::Relaxed);
    println!(
        "{}: Redis restart: {lost:?}, refused to senders {refused:?}, sockets lost {broken}",
        target.key()
    );
    (lost, refused, broken)
}

/// Highest sustainable offered rate (0 if none).
fn sustainable(v: &[StepFigures]) -> u64 {
    v.iter()
        .filter(|f| f.sustainable())
        .map(|f| f.offered)
        .max()
        .unwrap_or(0)
}

fn main() {
    let step_ms: u64 = common::arg_value("--step-ms")
        .unwrap_or(3_000)
        .clamp(500, 30_000);
    let rt = common::runtime();
    rt.block_on(async {
        let step = Duration::from_millis(step_ms);
        // Bounded: each ladder is at most 6 steps of (step + drain + settle) plus set-up.
        let limit = Duration::from_secs(120) + 2 * LADDER.len() as u32 * (step + DRAIN + SETTLE);
        let load = common::loadavg();
        println!("machine load average at start: {load:?} (1, 5, 15 min)");
        if std::env::args().any(|a| a == "--socketio") {
            check_lost_counting();
            let targets = [Target::Cluster, Target::SioRedis, Target::SioStreams];
            let run = async {
                let ladders = ladders(
                    &targets,
                    &SOCKETIO_LADDER,
                    SOCKETIO_ROUNDS,
                    step,
                    Some(SOCKETIO_BUDGET),
                )
                .await;
                let mut restarts = vec![Vec::new(); targets.len()];
                for _ in 0..RESTART_RUNS {
                    for (t, runs) in targets.iter().zip(restarts.iter_mut()) {
                        runs.push(redis_restart(*t).await);
                    }
                }
                (ladders, restarts)
            };
            // Ladders: no step begins after SOCKETIO_BUDGET (150 s), one step is at most
            // 3 targets × 2 windows × (3 + 2 + 5) s; restart runs: 9 of typically 15 s.
            // Typically ~4.5 min in all.
            let (ladders, restarts) = tokio::time::timeout(Duration::from_secs(420), run)
                .await
                .expect("socket.io cluster bench timed out");
            report_socketio(&ladders, &restarts, load);
            return;
        }
        if std::env::args().any(|a| a == "--cluster") {
            let run = async {
                let one = ladder(Target::P3, step).await;
                let three = ladder(Target::Cluster, step).await;
                (one, three)
            };
            let (one, three) = tokio::time::timeout(limit * 3 / 2, run)
                .await
                .expect("cluster bench timed out");
            report_cluster(&one, &three, load);
            return;
        }
        let run = async {
            let p3 = ladder(Target::P3, step).await;
            let before = if std::env::var_os("BENCH_SERVER_BEFORE").is_some() {
                Some(ladder(Target::P3Before, step).await)
            } else {
                None
            };
            let sio = ladder(Target::SocketIo, step).await;
            (p3, before, sio)
        };
        let (p3, before, sio) = tokio::time::timeout(limit * 3 / 2, run)
            .await
            .expect("load bench timed out");
        report(&p3, before.as_deref(), &sio, load);
    });
    // Member tasks are still parked on their sockets: leave without waiting for them.
    rt.shutdown_timeout(Duration::from_millis(100));
}

fn report(p3: &[StepFigures], before: Option<&[StepFigures]>, sio: &[StepFigures], load: [f64; 3]) {
    let (s_p3, s_sio) = (sustainable(p3), sustainable(sio));
    let ratio = if s_sio == 0 {
        "n/a: socket.io sustained no step".to_string()
    } else {
        format!("{:.2}", s_p3 as f64 / s_sio as f64)
    };
    println!(
        "sustainable (p99 ≤ {P99_BOUND_MS} ms, ≥ {:.0} % delivered): p3 {s_p3}/s, socket.io {s_sio}/s, ratio {ratio} (target ≥ 3)",
        DELIVERED_BOUND * 100.0,
    );
    let mut rows = Vec::new();
    let row = |name: String, value: f64, unit: &str, baseline: String, ratio: f64| json!({"name": name, "value": value, "unit": unit, "baseline": baseline, "ratio": ratio});
    let fmt = |v: f64| format!("{v:.2}");
    let mut kinds = vec![
        (Target::P3, p3, sio, "socket.io 4"),
        (Target::SocketIo, sio, p3, "server-stub"),
    ];
    if let Some(before) = before {
        kinds.push((Target::P3Before, before, sio, "socket.io 4"));
    }
    for (target, mine, other, other_name) in kinds {
        let key = target.key();
        for f in mine {
            let k = f.offered / 1000;
            let twin = other.iter().find(|o| o.offered == f.offered);
            let base = |g: fn(&StepFigures) -> f64, unit: &str| {
                twin.map_or(("not reached".to_string(), f64::NAN), |o| {
                    (
                        format!("{other_name} same step: {} {unit}", fmt(g(o))),
                        g(o),
                    )
                })
            };
            let (b, v) = base(|f| f.p50_ms, "ms");
            rows.push(row(
                format!("load.{key}.{k}k.p50"),
                f.p50_ms,
                "ms",
                b,
                f.p50_ms / v,
            ));
            let (b, v) = base(|f| f.p99_ms, "ms");
            rows.push(row(
                format!("load.{key}.{k}k.p99"),
                f.p99_ms,
                "ms",
                b,
                f.p99_ms / v,
            ));
            let offered = f.offered as f64;
            rows.push(row(
                format!("load.{key}.{k}k.delivered"),
                f.delivered_rate,
                "deliveries/s",
                format!("offered: {} deliveries/s", f.offered),
                f.delivered_rate / offered,
            ));
        }
        let (mine_s, other_s) = match target {
            Target::P3 => (s_p3, s_sio),
            Target::P3Before => (sustainable(mine), s_sio),
            Target::SocketIo => (s_sio, s_p3),
            Target::Cluster | Target::SioRedis | Target::SioStreams => (sustainable(mine), s_p3),
        };
        rows.push(row(
            format!("load.{key}.sustainable"),
            mine_s as f64,
            "deliveries/s",
            format!("{other_name}: {other_s} deliveries/s (highest step with p99 ≤ 50 ms and ≥ 95 % delivered)"),
            mine_s as f64 / other_s as f64,
        ));
    }
    rows.push(row(
        "load.machine-loadavg".into(),
        load[0],
        "runnable tasks",
        format!("1-min load average at the start (5, 15 min: {:.2}, {:.2}); the generator, the servers and anything else share the machine's cores", load[1], load[2]),
        f64::NAN,
    ));
    rows.push(row(
        "load.ratio.sustainable".into(),
        s_p3 as f64 / s_sio as f64,
        "×",
        "server-stub / socket.io 4 sustainable rate; issue 11 target ≥ 3".into(),
        s_p3 as f64 / s_sio as f64 / 3.0,
    ));
    for f in p3 {
        if let Some(o) = sio.iter().find(|o| o.offered == f.offered) {
            let k = f.offered / 1000;
            rows.push(row(
                format!("load.ratio.{k}k.p99"),
                f.p99_ms / o.p99_ms,
                "×",
                format!(
                    "server-stub p99 {} ms / socket.io 4 p99 {} ms at {} deliveries/s offered",
                    fmt(f.p99_ms),
                    fmt(o.p99_ms),
                    f.offered
                ),
                f.p99_ms / o.p99_ms,
            ));
        }
    }
    let target = p3
        .iter()
        .filter(|f| f.offered <= 250_000)
        .all(|f| f.p99_ms <= 5.0 && f.delivered_rate >= DELIVERED_BOUND * f.offered as f64)
        && p3.iter().any(|f| f.offered == 250_000);
    println!(
        "issue 11 target p99 ≤ 5 ms up to 250k deliveries/s: {}",
        if target { "met" } else { "MISSED" }
    );
    // JSON has no NaN: missing figures become null.
    let rows = rows
        .into_iter()
        .map(|mut r| {
            for k in ["value", "ratio"] {
                if !matches!(r[k].as_f64(), Some(v) if v.is_finite()) {
                    r[k] = Value::Null;
                }
            }
            r
        })
        .collect();
    write_results("load.", rows);
}

/// One figure of a step.
type Figure = fn(&StepFigures) -> f64;

/// The `cluster.` rows: each step of three nodes beside the same step on one node.
fn report_cluster(one: &[StepFigures], three: &[StepFigures], load: [f64; 3]) {
    let row = |name: String, value: f64, unit: &str, baseline: String, ratio: f64| {
        let finite = |v: f64| if v.is_finite() { json!(v) } else { Value::Null };
        json!({"name": name, "value": finite(value), "unit": unit, "baseline": baseline, "ratio": finite(ratio)})
    };
    let mut rows = Vec::new();
    for f in three {
        let k = f.offered / 1000;
        let twin = one.iter().find(|o| o.offered == f.offered);
        let figures: [(&str, Figure, &str); 3] = [
            ("p50", |f| f.p50_ms, "ms"),
            ("p99", |f| f.p99_ms, "ms"),
            ("delivered", |f| f.delivered_rate, "deliveries/s"),
        ];
        for (what, get, unit) in figures {
            let (base, v) = twin.map_or(("one node: not reached".to_string(), f64::NAN), |o| {
                (format!("one node, same step: {:.2} {unit}", get(o)), get(o))
            });
            rows.push(row(
                format!("cluster.fanout.{k}k.{what}"),
                get(f),
                unit,
                format!(
                    "{base}; offered {} deliveries/s, {ROOMS} rooms of {MEMBERS} over 3 nodes",
                    f.offered
                ),
                get(f) / v,
            ));
        }
    }
    let (s1, s3) = (sustainable(one), sustainable(three));
    println!("sustainable: one node {s1}/s, three nodes {s3}/s");
    rows.push(row(
        "cluster.fanout.sustainable".into(),
        s3 as f64,
        "deliveries/s",
        format!("one node: {s1} deliveries/s (highest step with p99 ≤ 50 ms and ≥ 95 % delivered)"),
        s3 as f64 / s1 as f64,
    ));
    rows.push(row(
        "cluster.machine-loadavg".into(),
        load[0],
        "runnable tasks",
        format!("1-min load average at the start (5, 15 min: {:.2}, {:.2}); three nodes, redis-server and the generator share the machine's cores", load[1], load[2]),
        f64::NAN,
    ));
    write_results(
        "cluster.fanout.",
        rows.iter()
            .filter(|r| {
                r["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("cluster.fanout."))
            })
            .cloned()
            .collect(),
    );
    write_results(
        "cluster.machine-loadavg",
        rows.into_iter()
            .filter(|r| r["name"] == "cluster.machine-loadavg")
            .collect(),
    );
}

/// The `cluster.socketio.` and `cluster.redis-restart.` rows: socket.io's three nodes (each
/// adapter) beside ours, steps of the same interleaved run; what each lost across the same
/// Redis restart.
fn report_socketio(ladders: &[Vec<StepFigures>], restarts: &[Vec<Restart>], load: [f64; 3]) {
    let row = |name: String, value: f64, unit: &str, baseline: String, ratio: f64| {
        let finite = |v: f64| if v.is_finite() { json!(v) } else { Value::Null };
        json!({"name": name, "value": finite(value), "unit": unit, "baseline": baseline, "ratio": finite(ratio)})
    };
    let shape = format!(
        "{ROOMS} rooms of {MEMBERS} over 3 nodes on one redis-server, load average {:.2}",
        load[0]
    );
    let [ours, redis, streams] = ladders else {
        panic!("three ladders")
    };
    let mut rows = Vec::new();
    for (target, theirs) in [(Target::SioRedis, redis), (Target::SioStreams, streams)] {
        let key = target.key();
        for f in theirs {
            let k = f.offered / 1000;
            let twin = ours.iter().find(|o| o.offered == f.offered);
            let figures: [(&str, Figure, &str, &str); 3] = [
                ("p50", |f| f.p50_ms, "ms", ""),
                ("p99", |f| f.p99_ms, "ms", "; target: ratio ≥ 1"),
                ("delivered", |f| f.delivered_rate, "deliveries/s", ""),
            ];
            for (what, get, unit, target) in figures {
                let (base, v) =
                    twin.map_or(("server-stub: not reached".to_string(), f64::NAN), |o| {
                        (
                            format!(
                                "server-stub three nodes, same step, same run: {:.2} {unit}",
                                get(o)
                            ),
                            get(o),
                        )
                    });
                rows.push(row(
                    format!("cluster.socketio.{key}.{k}k.{what}"),
                    get(f),
                    unit,
                    format!(
                        "{base}; offered {} deliveries/s, {shape}{target}",
                        f.offered
                    ),
                    get(f) / v,
                ));
            }
        }
    }
    let (s_ours, s_redis, s_streams) =
        (sustainable(ours), sustainable(redis), sustainable(streams));
    println!(
        "sustainable: server-stub {s_ours}/s, socket.io redis-adapter {s_redis}/s, redis-streams-adapter {s_streams}/s"
    );
    let rule = "highest step with p99 ≤ 50 ms and ≥ 95 % delivered";
    for (target, s) in [(Target::SioRedis, s_redis), (Target::SioStreams, s_streams)] {
        rows.push(row(
            format!("cluster.socketio.{}.sustainable", target.key()),
            s as f64,
            "deliveries/s",
            format!("server-stub three nodes, same run: {s_ours} deliveries/s ({rule})"),
            s as f64 / s_ours as f64,
        ));
    }
    let best = s_redis.max(s_streams);
    rows.push(row(
        "cluster.socketio.sustainable".into(),
        s_ours as f64,
        "deliveries/s",
        format!(
            "server-stub three nodes; socket.io 4 same run: redis-adapter {s_redis}, redis-streams-adapter {s_streams} deliveries/s ({rule}); target: ratio to the better ≥ 1"
        ),
        s_ours as f64 / best as f64,
    ));
    rows.push(row(
        "cluster.socketio.machine-loadavg".into(),
        load[0],
        "runnable tasks",
        format!("1-min load average at the start (5, 15 min: {:.2}, {:.2}); three clusters open at once (nine node processes, three redis-servers; one loaded at a time) and the generator share the machine's cores", load[1], load[2]),
        f64::NAN,
    ));
    let mut lost_rows = Vec::new();
    let run = format!(
        "{ROOMS} rooms of {MEMBERS} over 3 nodes, {RESTART_MESSAGES} numbered messages per room at {RESTART_PER_S}/s; redis-server SIGKILLed {} s in, restarted empty {} s later; load average {:.2}",
        RESTART_KILL_AT.as_secs(),
        RESTART_DOWN.as_secs(),
        load[0]
    );
    let targets = [Target::Cluster, Target::SioRedis, Target::SioStreams];
    for (target, runs) in targets.iter().zip(restarts) {
        let mut lost = Lost::default();
        let mut refused = BTreeMap::new();
        let mut broken = 0;
        for (l, r, b) in runs {
            lost.merge(l);
            for (code, n) in r {
                *refused.entry(code.clone()).or_insert(0) += n;
            }
            broken += b;
        }
        let per_run = |get: fn(&Lost) -> u64| {
            let v: Vec<String> = runs.iter().map(|(l, _, _)| get(l).to_string()).collect();
            v.join(", ")
        };
        let key = if *target == Target::Cluster {
            "p3"
        } else {
            target.key()
        };
        let e = lost.expected as f64;
        let extra = format!(
            "per run: {}; {} received, {} duplicates, {} discontinuity messages, relays refused to senders {refused:?}, sockets lost {broken}",
            per_run(|l| l.silent),
            lost.received,
            lost.duplicates,
            lost.discontinuities
        );
        let extra = if *target == Target::SioRedis {
            format!("{extra}; the node script keeps its process alive on the adapter's unhandled publish rejections (Node's default ends it)")
        } else {
            extra
        };
        lost_rows.push(row(
            format!("cluster.redis-restart.lost.{key}.silent"),
            lost.silent as f64,
            "deliveries",
            format!(
                "missing with no discontinuity, of {} due in {} runs ({run}); {extra}; target 0",
                lost.expected,
                runs.len()
            ),
            lost.silent as f64 / e,
        ));
        if *target == Target::Cluster {
            lost_rows.push(row(
                format!("cluster.redis-restart.lost.{key}.told"),
                lost.told as f64,
                "deliveries",
                format!(
                    "missing, each gap told by a discontinuity, of {} due (same runs; per run: {})",
                    lost.expected,
                    per_run(|l| l.told)
                ),
                lost.told as f64 / e,
            ));
        }
    }
    write_results("cluster.socketio.", rows);
    write_results("cluster.redis-restart.", lost_rows);
}
