//! server-stub capacity benchmark (issue 3, "Benchmarks"): idle WebSocket sessions held and
//! memory per idle session, and room fan-out messages per second, on loopback.
//!
//! Run with `cargo bench -p server-stub --bench capacity` (or `npm run bench`);
//! `-- --sessions N` changes the number of idle sessions (default 10,000).
//!
//! What it does, in one run that stops by itself (every wait is bounded; the servers and the
//! baseline are child processes killed on drop):
//! 1. Raises this process's soft `RLIMIT_NOFILE` to its hard limit with util-linux `prlimit`
//!    (the workspace forbids `unsafe`, so no direct `setrlimit`), before spawning children,
//!    which inherit it. Each session costs one descriptor here and one in the server.
//! 2. Baseline first (closed before any session is opened, so this process never needs twice
//!    the descriptors): this binary re-run as a trivial tokio echo server (one task and a
//!    1 KiB buffer per connection) holding N plain idle TCP connections.
//! 3. Twice, each time against a fresh real `server-stub` binary (release) on 127.0.0.1 port 0:
//!    - **mux** (the first row, what users get): sessions opened the way the browser SDK opens
//!      them by default: `POST` handshake offering `features: ["mux"]` (PROTOCOL.md §3), then
//!      the WebSocket speaking v2 frames (§11) through a client-side [`Mux`] of
//!      `p3_lanes::core::mux`, as `core::client` drives it: resume exchange, then chunks and
//!      acks. A session counts as open and idle once the `welcome` arrived, both resumes were
//!      answered and the client's ack of the welcome went out (the server holds nothing
//!      unacknowledged).
//!    - **v1** (the comparison row; the SDK with `mux: false`): handshake without the feature,
//!      §5 frames, open once the welcome frame arrived.
//!
//!    Server memory is `VmRSS` from `/proc/<pid>/status` after a warm-up of 100 sessions, at
//!    1,000 and at N: per-session memory is the growth divided by the sessions added.
//!    The first 1,200 sessions of each kind stay open as fan-out rooms (the others close):
//!    100 rooms of 10, one sender per room, and as baseline 100 rooms of 2 (a direct 1:1
//!    relay).
//! 4. Fan-out, both servers up: each sender keeps at most 64 messages in flight per receiver;
//!    delivered messages are counted for 3 s per phase, phases interleaved (mux 1:1, mux 10,
//!    v1 1:1, v1 10, twice), best phase of each reported. With mux every member is one task
//!    driving its `Mux` (reads, acks, timers); the load generator shares the machine's cores
//!    with the server, so its own per-message cost is in the figure.
//!
//! Memory figures are stable from run to run; msg/s figures are noisy on a shared machine
//! (compare rows of one run, not runs).
//!
//! Prints a table and replaces the `capacity.` entries of `bench-results.json` at the
//! repository root with `{name, value, unit, baseline, ratio}`.

use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use p3_lanes::core::control::Control;
use p3_lanes::core::dictionary::Dictionary;
use p3_lanes::core::frame::{FrameHeader, FrameKind};
use p3_lanes::core::handshake::FEATURE_MUX;
use p3_lanes::core::lane::{Encoding, Lane};
use p3_lanes::core::mux::{Mux, MuxEvent};
use p3_lanes::core::payload;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::{spawn_listening, ChildGuard, Ws, WAIT};

#[path = "../../sdk/benches/support/mod.rs"]
mod support;
use support::write_results;

/// Sessions opened before the first memory reading (allocator and runtime warm-up).
const WARMUP: usize = 100;
/// Connections opened at once while filling up.
const OPEN_CONCURRENCY: usize = 32;
/// Messages a fan-out sender may be ahead of its room's receivers.
const WINDOW: u64 = 64;
/// Length of one fan-out phase.
const PHASE: Duration = Duration::from_secs(3);

fn main() {
    if std::env::args().any(|a| a == "--echo-server") {
        echo_server();
        return;
    }
    let n: usize = common::arg_value("--sessions").unwrap_or(10_000).max(1_200);
    let nofile = raise_nofile();
    common::runtime().block_on(run(n, nofile));
}

/// Raises the soft descriptor limit to the hard one; returns the soft limit now in force.
fn raise_nofile() -> u64 {
    let pid = std::process::id().to_string();
    let raised = Command::new("prlimit")
        .args(["--pid", &pid, "--nofile=unlimited:"])
        .stderr(Stdio::null())
        .status();
    if !raised.is_ok_and(|s| s.success()) {
        // `unlimited:` fails when the hard limit is finite: set soft = hard explicitly.
        if let Some(hard) = nofile_limits().map(|(_, h)| h) {
            let _ = Command::new("prlimit")
                .args(["--pid", &pid, &format!("--nofile={hard}:")])
                .status();
        }
    }
    nofile_limits().map_or(0, |(soft, _)| soft)
}

/// `(soft, hard)` `RLIMIT_NOFILE` of this process, from `/proc/self/limits`.
fn nofile_limits() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let mut it = line["Max open files".len()..].split_whitespace();
    let parse = |s: Option<&str>| s.map(|s| s.parse().unwrap_or(u64::MAX));
    Some((parse(it.next())?, parse(it.next())?))
}

/// The baseline: a tokio echo server holding plain TCP connections, one task and a 1 KiB
/// buffer each. Prints `listening on ADDR`; exits when stdin closes (its parent is gone) or
/// after 10 minutes.
fn echo_server() {
    common::runtime().block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        println!("listening on {}", listener.local_addr().expect("addr"));
        let accept = async {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n @ 1..) = s.read(&mut buf).await {
                        if s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        };
        std::thread::spawn(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
            std::process::exit(0);
        });
        tokio::select! {
            () = accept => {}
            () = tokio::time::sleep(Duration::from_secs(600)) => {}
        }
    });
}

/// How a load-generator session frames its messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    /// §5 frames (the SDK with `mux: false`).
    V1,
    /// The multiplexer (handshake feature `mux`, PROTOCOL.md §11; the browser SDK's default).
    Mux,
}

/// One open session: its socket, sid, and for [`Proto::Mux`] the client's multiplexer.
struct Session {
    ws: Ws,
    sid: String,
    /// Its `sessionToken` (Bearer for the status check).
    token: String,
    mux: Option<Mux>,
}

/// Handshake (HTTP) then WebSocket and welcome, the way the SDK opens a session: with
/// [`Proto::Mux`] the handshake offers `features: ["mux"]` and the socket starts with the
/// resume exchange; the session is returned idle (welcome acknowledged, resume done).
async fn open_session(
    http: &reqwest::Client,
    addr: SocketAddr,
    i: usize,
    proto: Proto,
) -> Result<Session, String> {
    let lanes = [Lane::Control, Lane::Messaging];
    let mut body = common::handshake_body(i, &lanes);
    if proto == Proto::V1 {
        body.as_object_mut().expect("object").remove("features");
    }
    let hs = common::handshake(http, addr, &body)
        .await
        .map_err(|(s, b)| format!("handshake: HTTP {s} {b}"))?;
    if hs.grants(FEATURE_MUX) != (proto == Proto::Mux) {
        return Err(format!("mux granted: {}", hs.grants(FEATURE_MUX)));
    }
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}{}", common::first_ws_path(&hs)))
            .await
            .map_err(|e| format!("websocket: {e}"))?;
    let sid = hs.session_id.to_string();
    let token = common::session_token(&hs);
    if proto == Proto::Mux {
        let mut mux = common::client_mux(i, &lanes);
        mux.handle_transport_resumed(common::mux_now());
        let welcome = |c: &Control| matches!(c, Control::Welcome { .. });
        common::mux_until(&mut ws, &mut mux, welcome, true, WAIT).await?;
        return Ok(Session {
            ws,
            sid,
            token,
            mux: Some(mux),
        });
    }
    match next_control(&mut ws).await {
        Some(Control::Welcome { .. }) => Ok(Session {
            ws,
            sid,
            token,
            mux: None,
        }),
        other => Err(format!("expected welcome, got {other:?}")),
    }
}

/// The next Control frame (Data frames skipped), or `None` on close, error or timeout.
async fn next_control(ws: &mut Ws) -> Option<Control> {
    let dict = Dictionary::current();
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next()).await.ok()??.ok()?;
        let Message::Binary(b) = msg else { continue };
        let (h, body) = FrameHeader::decode(&b).ok()?;
        if h.kind == FrameKind::Control {
            return payload::decode_control(&h, body, Some(&dict)).ok();
        }
    }
}

/// Opens sessions `from..to` into `out`, `OPEN_CONCURRENCY` at a time; stops at the first
/// failure and returns its message.
async fn open_many(
    http: &reqwest::Client,
    addr: SocketAddr,
    from: usize,
    to: usize,
    proto: Proto,
    out: &mut Vec<Session>,
) -> Option<String> {
    let sem = Arc::new(Semaphore::new(OPEN_CONCURRENCY));
    let mut tasks = Vec::with_capacity(to - from);
    for i in from..to {
        let (sem, http) = (sem.clone(), http.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await.expect("semaphore");
            open_session(&http, addr, i, proto).await
        }));
    }
    let mut err = None;
    for t in tasks {
        match t.await.expect("open task") {
            Ok(s) => out.push(s),
            Err(e) => err = err.or(Some(e)),
        }
    }
    err
}

/// Opens `to - from` plain TCP connections to `addr` into `out`.
async fn open_tcp(addr: SocketAddr, count: usize, out: &mut Vec<TcpStream>) -> Option<String> {
    for _ in 0..count {
        match tokio::time::timeout(WAIT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => out.push(s),
            Ok(Err(e)) => return Some(e.to_string()),
            Err(_) => return Some("connect timed out".into()),
        }
    }
    None
}

/// Waits for the process's memory to settle a little before reading it.
async fn settled_rss(pid: u32) -> u64 {
    tokio::time::sleep(Duration::from_millis(500)).await;
    common::rss_bytes(pid)
}

/// A room's sender: the write half of a §5 socket, or the command channel of a multiplexed
/// session's task (each `()` is one message to send).
enum RoomTx {
    V1(SplitSink<Ws, Message>),
    Mux(mpsc::UnboundedSender<()>),
}

/// One room: the sender, and delivery counted by the receivers' tasks.
struct Room {
    tx: RoomTx,
    delivered: Arc<AtomicU64>,
    notify: Arc<Notify>,
    receivers: u64,
    sent: u64,
}

/// The fan-out message: a §5 Data frame on Messaging (`seq` 0 inside the multiplexer).
fn chat_frame(seq: u64) -> Vec<u8> {
    static BODY: OnceLock<(Vec<u8>, u32)> = OnceLock::new();
    let (body, dict_version) = BODY.get_or_init(|| {
        let dict = Dictionary::current();
        let value = json!({"type": "chat", "content": "hello room", "timestamp": 1735689600000u64});
        payload::encode(&value, Encoding::Msgpack, Some(&dict)).expect("encode")
    });
    FrameHeader::data(Lane::Messaging, Encoding::Msgpack, seq, *dict_version).encode(body)
}

/// Joins `sessions` into rooms of `size` (first member sends), spawning a counting reader per
/// member (for multiplexed sessions, a task driving the member's `Mux`).
async fn make_rooms(sessions: Vec<Session>, size: usize, tag: &str) -> Vec<Room> {
    let dict = Dictionary::current();
    let mut rooms = Vec::new();
    let mut it = sessions.into_iter();
    for r in 0.. {
        let members: Vec<Session> = it.by_ref().take(size).collect();
        if members.len() < size {
            break;
        }
        let delivered = Arc::new(AtomicU64::new(0));
        let notify = Arc::new(Notify::new());
        let mut sender_tx = None;
        for (k, s) in members.into_iter().enumerate() {
            let room = format!("{tag}-{r}");
            let Session {
                mut ws, sid, mux, ..
            } = s;
            if let Some(mux) = mux {
                let mut s = common::Session {
                    ws,
                    sid,
                    mux,
                    signaling_token: None,
                };
                if let Err(e) = common::join(&mut s, &room).await {
                    panic!("session {} got no joined: {e}", s.sid);
                }
                if k == 0 {
                    let (tx, rx) = mpsc::unbounded_channel();
                    sender_tx = Some(RoomTx::Mux(tx));
                    tokio::spawn(mux_member(s.ws, s.mux, Some(rx), None, notify.clone()));
                } else {
                    let d = Some(delivered.clone());
                    tokio::spawn(mux_member(s.ws, s.mux, None, d, notify.clone()));
                }
                continue;
            }
            let join = Control::Join { room };
            let frame = payload::control_frame(&join, Encoding::Msgpack, Some(&dict), 1);
            ws.send(Message::binary(frame)).await.expect("send join");
            loop {
                match next_control(&mut ws).await {
                    Some(Control::Joined { .. }) => break,
                    Some(_) => continue,
                    None => panic!("session {sid} got no joined"),
                }
            }
            let (tx, rx) = ws.split();
            if k == 0 {
                sender_tx = Some(RoomTx::V1(tx));
                tokio::spawn(drain(rx, None, notify.clone()));
            } else {
                // Keep the write half alive so the socket stays open.
                tokio::spawn(drain_keep(tx, rx, delivered.clone(), notify.clone()));
            }
        }
        rooms.push(Room {
            tx: sender_tx.expect("a sender"),
            delivered,
            notify,
            receivers: size as u64 - 1,
            sent: 0,
        });
    }
    rooms
}

/// One multiplexed room member, driven as the SDK's driver does: writes what its `Mux` has
/// to send (chunks, acks), feeds it every frame read, fires its timers, counts delivered
/// Data messages into `delivered`, and (the sender) queues one chat message per command,
/// holding messages back while the lane answers `backpressure`. Ends with the socket.
async fn mux_member(
    mut ws: Ws,
    mut mux: Mux,
    mut cmds: Option<mpsc::UnboundedReceiver<()>>,
    delivered: Option<Arc<AtomicU64>>,
    notify: Arc<Notify>,
) {
    let frame = chat_frame(0);
    let mut pending = 0u64;
    loop {
        while pending > 0 && mux.send(Lane::Messaging, frame.clone()).is_ok() {
            pending -= 1;
        }
        let Some((events, next)) = common::mux_flush(&mut ws, &mut mux).await else {
            return;
        };
        for ev in events {
            if let (Some(d), MuxEvent::Message { bytes, .. }) = (&delivered, ev) {
                if FrameHeader::decode(&bytes).is_ok_and(|(h, _)| h.kind == FrameKind::Data) {
                    d.fetch_add(1, Ordering::Relaxed);
                    notify.notify_one();
                }
            }
        }
        let timer = common::mux_wait(next).map(|d| tokio::time::Instant::now() + d);
        let far = tokio::time::Instant::now() + Duration::from_secs(3600);
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Binary(b))) => mux.handle_input(&b, common::mux_now()),
                Some(Ok(_)) => {}
                _ => return,
            },
            cmd = async { cmds.as_mut().expect("sender").recv().await }, if cmds.is_some() => {
                match cmd {
                    Some(()) => pending += 1,
                    None => cmds = None,
                }
            }
            () = tokio::time::sleep_until(timer.unwrap_or(far)) => mux.handle_timeout(common::mux_now()),
        }
    }
}

async fn drain_keep(
    tx: SplitSink<Ws, Message>,
    rx: SplitStream<Ws>,
    delivered: Arc<AtomicU64>,
    notify: Arc<Notify>,
) {
    drain(rx, Some(delivered), notify).await;
    drop(tx);
}

/// Reads frames until the socket ends, counting Data frames into `delivered`.
async fn drain(mut rx: SplitStream<Ws>, delivered: Option<Arc<AtomicU64>>, notify: Arc<Notify>) {
    while let Some(Ok(msg)) = rx.next().await {
        let Message::Binary(b) = msg else { continue };
        if let (Some(d), Ok((h, _))) = (&delivered, FrameHeader::decode(&b)) {
            if h.kind == FrameKind::Data {
                d.fetch_add(1, Ordering::Relaxed);
                notify.notify_one();
            }
        }
    }
}

/// Runs every room's sender for `PHASE`; returns delivered messages per second.
async fn fan_out(rooms: &mut [Room]) -> f64 {
    let before: u64 = rooms
        .iter()
        .map(|r| r.delivered.load(Ordering::Relaxed))
        .sum();
    let due_before: u64 = rooms.iter().map(|r| r.sent * r.receivers).sum();
    let start = Instant::now();
    let deadline = start + PHASE;
    let senders = rooms.iter_mut().map(|room| async move {
        while Instant::now() < deadline {
            loop {
                let notified = room.notify.notified();
                let done = room.delivered.load(Ordering::Relaxed) / room.receivers;
                if room.sent - done <= WINDOW {
                    break;
                }
                if tokio::time::timeout_at(deadline.into(), notified)
                    .await
                    .is_err()
                {
                    return;
                }
            }
            room.sent += 1;
            let sent = match &mut room.tx {
                RoomTx::V1(tx) => tx
                    .send(Message::binary(chat_frame(room.sent)))
                    .await
                    .is_ok(),
                RoomTx::Mux(tx) => tx.send(()).is_ok(),
            };
            if !sent {
                return;
            }
        }
    });
    futures::future::join_all(senders).await;
    let elapsed = start.elapsed().as_secs_f64();
    let after: u64 = rooms
        .iter()
        .map(|r| r.delivered.load(Ordering::Relaxed))
        .sum();
    // Let what is in flight arrive (up to 3 s) before the next phase, and check nothing was lost.
    let due: u64 = rooms.iter().map(|r| r.sent * r.receivers).sum::<u64>() - due_before;
    let counted = || {
        rooms
            .iter()
            .map(|r| r.delivered.load(Ordering::Relaxed))
            .sum::<u64>()
            - before
    };
    let settle = Instant::now() + Duration::from_secs(3);
    while counted() < due && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = counted();
    println!(
        "fan-out phase, rooms of {}: {due} deliveries due, {got} counted, {:.0} msg/s",
        rooms.first().map_or(0, |r| r.receivers + 1),
        (after - before) as f64 / elapsed
    );
    (after - before) as f64 / elapsed
}

/// Spawns the real server-stub (release) on 127.0.0.1 port 0, limits lifted for the load
/// generator.
fn spawn_server() -> (ChildGuard, SocketAddr) {
    common::spawn_server_bin(
        env!("CARGO_BIN_EXE_server-stub"),
        &[
            // Thousands of sessions from one address: a load generator, not a client (issue 11).
            "--rate-limits",
            "off",
            // Every session comes from 127.0.0.1 and N may exceed the default total: lift the
            // session bounds (issue 11) for the load generator.
            "--max-sessions",
            "10000000",
            "--max-sessions-per-ip",
            "10000000",
            "--max-rooms",
            "10000000",
        ],
    )
}

/// The figures of one session kind, measured against its own fresh server.
struct Figures {
    held: usize,
    /// Bytes per idle session at N and at 1,000.
    per_n: f64,
    per_1k: f64,
    rss_n: u64,
    /// Delivered msg/s, rooms of 10 and 1:1, per phase.
    rate10: Vec<f64>,
    rate2: Vec<f64>,
    /// The server and its fan-out rooms (rooms of 10, rooms of 2), kept for the phases.
    fleet: Option<(ChildGuard, Vec<Room>, Vec<Room>)>,
}

fn best(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

/// Opens `n` idle sessions of kind `proto` on a fresh server, reads its memory, then keeps
/// the first 1,200 as fan-out rooms (run by [`fan_out_both`]) and closes the others.
async fn measure(n: usize, proto: Proto) -> Figures {
    let (server, addr) = spawn_server();
    let server_pid = server.0.id();
    let http = reqwest::Client::new();
    let mut sessions = Vec::with_capacity(n);
    let t = Instant::now();
    let mut error = open_many(&http, addr, 0, WARMUP, proto, &mut sessions).await;
    let rss0 = settled_rss(server_pid).await;
    if error.is_none() {
        error = open_many(&http, addr, WARMUP, 1_000, proto, &mut sessions).await;
    }
    let rss1k = settled_rss(server_pid).await;
    let at_1k = sessions.len();
    if error.is_none() {
        error = open_many(&http, addr, 1_000, n, proto, &mut sessions).await;
    }
    let rss_n = settled_rss(server_pid).await;
    let open_secs = t.elapsed().as_secs_f64();
    let held = sessions.len();
    if let Some(e) = &error {
        println!("{proto:?}: stopped opening at {held} sessions: {e}");
    }
    let per = |grow: u64, added: usize| grow as f64 / added.max(1) as f64;

    // Every session still open? Ask the server about a sample of them.
    let mut connected = 0;
    let sample: Vec<(String, String)> = sessions
        .iter()
        .step_by((held / 100).max(1))
        .map(|s| (s.sid.clone(), s.token.clone()))
        .collect();
    for (sid, token) in &sample {
        let status: Option<Value> = async {
            http.get(format!("http://{addr}/api/protocol/v2/session/{sid}"))
                .bearer_auth(token)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()
        }
        .await;
        if status.is_some_and(|v| v["connected"] == true) {
            connected += 1;
        }
    }
    println!(
        "{proto:?}: opened {held} sessions in {open_secs:.1} s; {connected}/{} sampled sessions \
         report connected",
        sample.len()
    );

    // Fan-out rooms: the first 1,000 sessions as rooms of 10, the next 200 as rooms of 2;
    // the other sessions are closed (descriptors for the next kind).
    let rest = sessions.split_off(1_200.min(held));
    drop(rest);
    let pairs_sessions = sessions.split_off(1_000.min(sessions.len()));
    let tens = make_rooms(sessions, 10, "fan10").await;
    let pairs = make_rooms(pairs_sessions, 2, "pair").await;
    Figures {
        held,
        per_n: per(rss_n.saturating_sub(rss0), held - WARMUP),
        per_1k: per(rss1k.saturating_sub(rss0), at_1k - WARMUP),
        rss_n,
        rate10: Vec::new(),
        rate2: Vec::new(),
        fleet: Some((server, tens, pairs)),
    }
}

/// Fan-out phases of both kinds interleaved (mux 1:1, mux 10, v1 1:1, v1 10, twice), so
/// the load of other processes hits both alike; then closes the rooms and servers.
async fn fan_out_both(m: &mut Figures, v: &mut Figures) {
    for _ in 0..2 {
        for f in [&mut *m, &mut *v] {
            let (_, tens, pairs) = f.fleet.as_mut().expect("rooms");
            f.rate2.push(fan_out(pairs).await);
            f.rate10.push(fan_out(tens).await);
        }
    }
    m.fleet = None;
    v.fleet = None;
}

async fn run(n: usize, nofile: u64) {
    let mut echo_cmd = Command::new(std::env::current_exe().expect("current exe"));
    echo_cmd.arg("--echo-server");
    let (echo, echo_addr) = spawn_listening(echo_cmd);
    let echo_pid = echo.0.id();
    println!(
        "capacity: echo baseline {echo_addr}, RLIMIT_NOFILE {nofile}, target {n} idle sessions"
    );

    // Baseline first (this process cannot hold both sets of descriptors at once).
    let mut tcp = Vec::with_capacity(n);
    let mut tcp_error = open_tcp(echo_addr, WARMUP, &mut tcp).await;
    let echo0 = settled_rss(echo_pid).await;
    if tcp_error.is_none() {
        tcp_error = open_tcp(echo_addr, 1_000 - WARMUP, &mut tcp).await;
    }
    let echo1k = settled_rss(echo_pid).await;
    let tcp_at_1k = tcp.len();
    if tcp_error.is_none() {
        tcp_error = open_tcp(echo_addr, n - 1_000, &mut tcp).await;
    }
    let echo_n = settled_rss(echo_pid).await;
    if let Some(e) = &tcp_error {
        println!("baseline stopped at {} connections: {e}", tcp.len());
    }
    let tcp_held = tcp.len();
    drop(tcp);
    drop(echo);
    let per = |grow: u64, added: usize| grow as f64 / added.max(1) as f64;
    let tcp_1k = per(echo1k.saturating_sub(echo0), tcp_at_1k - WARMUP);
    let tcp_n = per(echo_n.saturating_sub(echo0), tcp_held - WARMUP);

    // The SDK's default (multiplexed) sessions, then v1 sessions for comparison, each on a
    // fresh server.
    let mut m = measure(n, Proto::Mux).await;
    let mut v = measure(n, Proto::V1).await;
    fan_out_both(&mut m, &mut v).await;

    let kib = |b: f64| b / 1024.0;
    let mib = |b: u64| b as f64 / 1048576.0;
    println!(
        "{:<48} {:>12} {:>12} {:>7}",
        "metric", "value", "baseline", "ratio"
    );
    let rows = [
        (
            "mux idle sessions held (baseline: target)",
            m.held as f64,
            n as f64,
        ),
        (
            "mux memory per idle session at N, KiB (tcp echo)",
            kib(m.per_n),
            kib(tcp_n),
        ),
        (
            "mux memory per idle session at 1k, KiB (tcp echo)",
            kib(m.per_1k),
            kib(tcp_1k),
        ),
        (
            "mux server RSS at N, MiB (tcp echo)",
            mib(m.rss_n),
            mib(echo_n),
        ),
        (
            "mux fan-out rooms of 10, msg/s (mux 1:1 relay)",
            best(&m.rate10),
            best(&m.rate2),
        ),
        (
            "v1 idle sessions held (baseline: target)",
            v.held as f64,
            n as f64,
        ),
        (
            "v1 memory per idle session at N, KiB (tcp echo)",
            kib(v.per_n),
            kib(tcp_n),
        ),
        (
            "v1 fan-out rooms of 10, msg/s (v1 1:1 relay)",
            best(&v.rate10),
            best(&v.rate2),
        ),
        (
            "mux / v1 memory per idle session at N",
            kib(m.per_n),
            kib(v.per_n),
        ),
        (
            "mux / v1 fan-out rooms of 10, msg/s",
            best(&m.rate10),
            best(&v.rate10),
        ),
    ];
    for (name, val, b) in rows {
        println!("{name:<48} {val:>12.1} {b:>12.1} {:>7.3}", val / b);
    }
    let round = |v: &[f64]| v.iter().map(|r| r.round()).collect::<Vec<_>>();
    println!(
        "fan-out phases (msg/s): mux rooms of 10 {:?}, 1:1 {:?}; v1 rooms of 10 {:?}, 1:1 {:?}",
        round(&m.rate10),
        round(&m.rate2),
        round(&v.rate10),
        round(&v.rate2),
    );
    println!(
        "target memory ≤ 20 KiB per idle session: mux {}, v1 {}",
        if kib(m.per_n) <= 20.0 {
            "met"
        } else {
            "MISSED"
        },
        if kib(v.per_n) <= 20.0 {
            "met"
        } else {
            "MISSED"
        },
    );
    let results = [
        (
            "sessions",
            m.held as f64,
            "sessions",
            format!("target: {n} sessions"),
            n as f64,
        ),
        (
            "idle-session-bytes",
            m.per_n,
            "bytes",
            format!("tokio echo server, plain idle TCP: {tcp_n:.0} bytes per connection"),
            tcp_n,
        ),
        (
            "idle-session-bytes-1k",
            m.per_1k,
            "bytes",
            format!("tokio echo server, plain idle TCP at 1k: {tcp_1k:.0} bytes per connection"),
            tcp_1k,
        ),
        (
            "server-rss",
            m.rss_n as f64,
            "bytes",
            format!("tokio echo server with as many connections: {echo_n} bytes"),
            echo_n as f64,
        ),
        (
            "fanout10-msgs-per-s",
            best(&m.rate10),
            "msg/s",
            format!(
                "1:1 relay (rooms of 2), mux, same run: {:.0} msg/s",
                best(&m.rate2)
            ),
            best(&m.rate2),
        ),
        (
            "v1-idle-session-bytes",
            v.per_n,
            "bytes",
            format!("tokio echo server, plain idle TCP: {tcp_n:.0} bytes per connection"),
            tcp_n,
        ),
        (
            "v1-fanout10-msgs-per-s",
            best(&v.rate10),
            "msg/s",
            format!(
                "1:1 relay (rooms of 2), v1, same run: {:.0} msg/s",
                best(&v.rate2)
            ),
            best(&v.rate2),
        ),
    ];
    let results = results
        .into_iter()
        .map(|(name, value, unit, baseline, base)| {
            json!({
                "name": format!("capacity.{name}"),
                "value": value, "unit": unit,
                "baseline": baseline,
                "ratio": value / base,
            })
        })
        .collect();
    write_results("capacity.", results);
}
