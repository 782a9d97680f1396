//! One abusive client against server-stub with its default flags (issue 11 "Tests and
//! figures": the `abuse.*` rows): does another room keep its latency, does the server's memory
//! stay bounded, and is every abusive request answered with a typed refusal?
//!
//! Run with `cargo bench -p server-stub --bench abuse` (or `npm run bench`); `ABUSE_ONLY=a,b`
//! runs only scenarios `a` and `b`.
//!
//! For each scenario, a fresh release `server-stub` (default limits; only a long heartbeat
//! timeout and no static files) on 127.0.0.1 port 0:
//! 1. An honest client (its own thread and runtime, source address 127.0.0.1) opens a
//!    multiplexed session as the SDK does, joins room `honest`, and sends a Control `ping`
//!    every [`PING_EVERY`] (40/s, under the pinned `--rate-control` 50/s burst 200, so the
//!    honest client is never rate limited; a Control `error` it hears is counted and printed),
//!    measuring the round trip to its `pong` (a pong missing after [`PONG_WAIT`] counts as
//!    that long).
//! 2. Quiet run: [`QUIET`] with no attacker: the honest p99 and the server's highest `VmRSS`
//!    (`/proc/<pid>/status`, sampled every 50 ms) are the scenario's baseline.
//! 3. The attacker (source addresses 127.0.0.2 and up, so per-IP limits see it apart from the
//!    honest client) runs the scenario, bounded in count and time; the honest client keeps
//!    measuring during it (at least [`QUIET`]) and 1 s after. Scenarios whose attack is short
//!    (a few requests) repeat it in rounds until [`QUIET`] has passed (bounded in rounds), so
//!    the honest client measures under attack rather than mostly after it.
//!
//! The attacker runs on its own runtime whose threads run at nice 19, so that on one machine
//! its client-side work does not take the CPU from the server and the honest client (a remote
//! attacker's CPU is not the server's); the server does its share at normal priority.
//!
//! Per scenario: honest p99 under attack / quiet p99 (target ≤ 2), server RSS growth above the
//! quiet run (highest sample during the attack, target ≤ 64 MiB), and the abusive requests
//! answered with a typed refusal (an HTTP error status with a JSON `code`, a Control or
//! signaling `error` with a code, or a WebSocket close with a 4xxx/1008/1009 code) against
//! the abusive requests sent (target: all). What counts as abusive is said per scenario
//! (requests past a pinned default limit; COMMON brief "Pinned names"):
//! - `oversized-handshakes`: rounds of 20 handshakes whose `deviceInfo` is ~2 MB of JSON
//!   (limit: `--max-handshake-bytes` 8,192, `--max-device-info-bytes` 2,048); all abusive.
//! - `handshake-flood`: handshakes 16 at a time for 5 s (at most 50,000); abusive: those past
//!   `--rate-ip-handshake` 20/s burst 100 and `--max-sessions-per-ip` 256 (the allowance over
//!   the flood's duration).
//! - `music-changes-bomb`: rounds of 3 `music-changes` pushes: 14,000 changes (the issue's;
//!   past the decode budget too: `payload_too_complex`), 2,000 changes (limit:
//!   `--max-changes-per-push` 1,024: `limit_exceeded`), and one change with `epoch`
//!   2^64 − 1 (`out_of_range`); all abusive.
//! - `room-stuffing`: up to 400 sessions (from 4 addresses, 100 each) join one room until one is
//!   refused (limit: `--max-room-members` 256); abusive: joins past 256 (or the refused one).
//! - `signaling-non-reader`: two signaling sockets in one room; one (b) keeps sending
//!   heartbeats but stops reading, and the other sends it up to 400 offers of 256 KiB, after
//!   which b reads again. Every offer must be delivered to b, refused to its sender with a
//!   typed `error`, or be among those b's queue (`--signaling-queue-bytes` 4 MiB: 16) and
//!   the kernel's socket buffers (measured in `/proc/net/tcp`) held when the server let b go;
//!   abusive: offers not delivered, past those.
//!   How b's socket ended is in the note: a peer that takes no message for
//!   `--heartbeat-timeout-ms` (3 s in this scenario) is let go as timed out (4408) even
//!   though it sends heartbeats, and the server gives up writing its close frame after 1 s.
//! - `data-flood-unconnected`: 4 sessions `POST` a `join` and never open a socket; a fifth
//!   floods the room with up to 800 Data messages of 64 KiB; abusive: messages past what
//!   `--lane-queue-bytes` 1 MiB per member holds (16).
//! - `decode-bomb`: rounds of 4 frames (2 Control, 2 Sync) whose msgpack payload is an array
//!   of ~1 MiB empty arrays (`0x90`); all abusive (decode budget: `payload_too_complex`).
//!
//! Replaces the `abuse.` entries of `bench-results.json`: per scenario `abuse.<s>.p99-ratio`,
//! `abuse.<s>.rss-growth`, `abuse.<s>.refused`, and `abuse.<s>.p99`.

use futures::{SinkExt, StreamExt};
use p3_lanes::core::control::Control;
use p3_lanes::core::dictionary::Dictionary;
use p3_lanes::core::frame::{FrameHeader, FrameKind};
use p3_lanes::core::lane::{Encoding, Lane};
use p3_lanes::core::mux::MuxEvent;
use p3_lanes::core::payload;
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::{now_us, Session, Ws};

#[path = "../../sdk/benches/support/mod.rs"]
mod support;
use support::write_results;

/// The honest client's ping period.
const PING_EVERY: Duration = Duration::from_millis(25);
/// A pong not back after this counts as this long.
const PONG_WAIT: Duration = Duration::from_secs(2);
/// Length of the quiet run, and the least the honest client measures during an attack.
const QUIET: Duration = Duration::from_secs(4);
/// Upper bound on one scenario's attack.
const ATTACK_LIMIT: Duration = Duration::from_secs(60);
/// Most rounds of a short attack (see the module docs).
const MAX_ROUNDS: u32 = 10;
/// Growth target, bytes.
const RSS_TARGET: u64 = 64 << 20;

/// The lanes the attacker's sessions negotiate.
const LANES: [Lane; 3] = [Lane::Control, Lane::Messaging, Lane::Sync];

/// Loopback source address `127.0.0.n`.
fn lo(n: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, n])
}

// ---------------------------------------------------------------------------------------
// Honest client and memory sampler

/// The honest client: `(when, µs; round trip, ms)` samples, until `stop`.
struct Honest {
    samples: Arc<Mutex<Vec<(u64, f64)>>>,
    /// Codes of the Control `error`s it heard (an honest client should hear none).
    errors: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Honest {
    /// Opens the honest session on its own thread; returns once it measures.
    fn start(addr: SocketAddr) -> Honest {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (s, e, st) = (samples.clone(), errors.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("honest runtime");
            rt.block_on(honest_loop(addr, s, e, st, ready_tx));
        });
        ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("honest client ready")
            .expect("honest client session");
        Honest {
            samples,
            errors,
            stop,
            thread: Some(thread),
        }
    }

    /// The `n` slowest round trips in `[from, to]` (µs): `(ms after from, round trip ms)`.
    fn slowest(&self, from: u64, to: u64, n: usize) -> Vec<(f64, f64)> {
        let mut v: Vec<(f64, f64)> = self
            .samples
            .lock()
            .expect("samples")
            .iter()
            .filter(|(at, _)| (from..=to).contains(at))
            .map(|&(at, rtt)| ((at - from) as f64 / 1000.0, rtt))
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v.truncate(n);
        v
    }

    /// Sorted round trips (ms) measured in `[from, to]` (µs).
    fn window(&self, from: u64, to: u64) -> Vec<f64> {
        let mut v: Vec<f64> = self
            .samples
            .lock()
            .expect("samples")
            .iter()
            .filter(|(at, _)| (from..=to).contains(at))
            .map(|&(_, rtt)| rtt)
            .collect();
        v.sort_by(f64::total_cmp);
        v
    }
}

impl Drop for Honest {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn honest_loop(
    addr: SocketAddr,
    samples: Arc<Mutex<Vec<(u64, f64)>>>,
    errors: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let http = common::http_from(lo(1));
    let opened = async {
        let mut s = common::open_session(&http, addr, 1).await?;
        common::join(&mut s, "honest").await?;
        Ok::<Session, String>(s)
    }
    .await;
    let mut s = match opened {
        Ok(s) => {
            let _ = ready.send(Ok(()));
            s
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut next = tokio::time::Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let sent_us = now_us();
        let client_time = sent_us as f64 / 1000.0;
        common::send_control(
            &mut s,
            &Control::Ping {
                client_time,
                rtt_ms: None,
            },
        );
        // A Control `error` (e.g. `rate_limited`: the ping was not processed) ends the wait.
        let answer = |c: &Control| {
            matches!(c, Control::Pong { client_time: t, .. } if *t == client_time)
                || matches!(c, Control::Error { .. })
        };
        let got = common::mux_until(&mut s.ws, &mut s.mux, answer, false, PONG_WAIT).await;
        let rtt = match &got {
            Ok(Control::Error { code, .. }) => {
                errors.lock().expect("errors").push(code.to_string());
                PONG_WAIT.as_secs_f64() * 1000.0
            }
            Ok(_) => (now_us() - sent_us) as f64 / 1000.0,
            Err(_) => PONG_WAIT.as_secs_f64() * 1000.0,
        };
        samples.lock().expect("samples").push((sent_us, rtt));
        if got.as_ref().is_err_and(|e| !e.contains("timed out")) {
            // The socket is gone: every later sample would be a timeout too.
            println!("  honest client lost its socket: {got:?}");
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(PING_EVERY).await;
                samples
                    .lock()
                    .expect("samples")
                    .push((now_us(), PONG_WAIT.as_secs_f64() * 1000.0));
            }
            return;
        }
        next += PING_EVERY;
        tokio::time::sleep_until(next.max(tokio::time::Instant::now())).await;
    }
}

/// Samples a process's `VmRSS` every 50 ms on its own thread; keeps the highest since reset.
struct RssSampler {
    max: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let max = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, st) = (max.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                m.fetch_max(common::rss_bytes(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        RssSampler { max, stop }
    }

    /// The highest sample since the last call, and starts a new period.
    fn take(&self) -> u64 {
        self.max.swap(0, Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------
// Scenarios

/// What an attack did.
#[derive(Debug, Default)]
struct Outcome {
    /// Abusive requests sent (past the pinned limit, see the module docs).
    abusive: u64,
    /// Of those, answered with a typed refusal.
    refused: u64,
    /// Everything the attacker sent, and how the server answered, in words.
    note: String,
}

/// Whether an HTTP answer is a typed refusal: an error status with a JSON `code`.
fn typed_http(status: u16, body: &str) -> bool {
    status >= 400
        && serde_json::from_str::<Value>(body)
            .is_ok_and(|v| v.get("code").and_then(Value::as_str).is_some())
}

/// Whether a close code is a documented refusal (application 4xxx, policy 1008, too big 1009).
fn typed_close(code: CloseCode) -> bool {
    let c = u16::from(code);
    c >= 4000 || c == 1008 || c == 1009
}

async fn oversized_handshakes(addr: SocketAddr) -> Outcome {
    let http = common::http_from(lo(2));
    // ~2 MB of JSON: an array of 1,000,000 ones.
    let blob = vec![Value::from(1); 1_000_000];
    let mut body = common::handshake_body(0, &LANES);
    body["deviceInfo"] = json!({"platform": "loadgen", "junk": blob});
    let size = body.to_string().len();
    let mut out = Outcome::default();
    let mut statuses = std::collections::BTreeMap::new();
    let mut untyped = None;
    let start = Instant::now();
    let mut rounds = 0;
    while rounds < MAX_ROUNDS && (rounds == 0 || start.elapsed() < QUIET) {
        rounds += 1;
        for _ in 0..20 {
            out.abusive += 1;
            let (status, text) = match common::handshake(&http, addr, &body).await {
                Ok(_) => (200, String::new()),
                Err(e) => e,
            };
            *statuses.entry(status).or_insert(0) += 1;
            if typed_http(status, &text) {
                out.refused += 1;
            } else if untyped.is_none() {
                untyped = Some(format!("HTTP {status} {text}"));
            }
        }
    }
    out.note = format!(
        "{rounds} rounds of 20 handshakes of {size} bytes; HTTP statuses {statuses:?}{}",
        untyped.map_or(String::new(), |u| format!("; first untyped answer: {u}"))
    );
    out
}

/// How long the handshake flood lasts, and its most handshakes.
const FLOOD_FOR: Duration = Duration::from_secs(5);
const FLOOD_MAX: usize = 50_000;

async fn handshake_flood(addr: SocketAddr) -> Outcome {
    let http = common::http_from(lo(3));
    let sem = Arc::new(Semaphore::new(16));
    let start = Instant::now();
    let deadline = start + FLOOD_FOR;
    let refused = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let statuses = Arc::new(Mutex::new(std::collections::BTreeMap::new()));
    let mut tasks = Vec::new();
    for i in 0..FLOOD_MAX {
        let permit = sem.clone().acquire_owned().await.expect("semaphore");
        if Instant::now() >= deadline {
            break;
        }
        let (http, refused, accepted, statuses) = (
            http.clone(),
            refused.clone(),
            accepted.clone(),
            statuses.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let body = common::handshake_body(i, &LANES);
            let (status, text) = match common::handshake(&http, addr, &body).await {
                Ok(_) => (200, String::new()),
                Err(e) => e,
            };
            *statuses
                .lock()
                .expect("statuses")
                .entry(status)
                .or_insert(0) += 1;
            if status == 200 {
                accepted.fetch_add(1, Ordering::Relaxed);
            } else if typed_http(status, &text) {
                refused.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let sent = tasks.len() as u64;
    futures::future::join_all(tasks).await;
    let secs = start.elapsed().as_secs_f64();
    // The pinned allowance: 20/s, burst 100, at most 256 sessions per address.
    let allowed = ((100.0 + 20.0 * secs) as u64).min(256);
    let abusive = sent.saturating_sub(allowed);
    let refused = refused.load(Ordering::Relaxed).min(abusive);
    let statuses = statuses.lock().expect("statuses").clone();
    Outcome {
        abusive,
        refused,
        note: format!(
            "{sent} handshakes in {secs:.1} s ({:.0}/s), {} accepted; allowance {allowed}; HTTP statuses {statuses:?}",
            sent as f64 / secs,
            accepted.load(Ordering::Relaxed)
        ),
    }
}

/// What a session heard back: Control `error` codes, Data messages (decoded) on `lane`, and
/// whether the socket closed (with its code).
#[derive(Debug, Default)]
struct Heard {
    errors: Vec<String>,
    data: Vec<Value>,
    closed: Option<Option<CloseCode>>,
}

/// Drives `s` for up to `wait` or until `done(&heard)`, collecting what it hears.
async fn listen(s: &mut Session, wait: Duration, done: impl Fn(&Heard) -> bool) -> Heard {
    let dict = Dictionary::current();
    let deadline = tokio::time::Instant::now() + wait;
    let mut heard = Heard::default();
    loop {
        let Some((events, next)) = common::mux_flush(&mut s.ws, &mut s.mux).await else {
            heard.closed.get_or_insert(None);
            return heard;
        };
        for ev in events {
            let MuxEvent::Message { bytes, .. } = ev else {
                continue;
            };
            let Ok((h, body)) = FrameHeader::decode(&bytes) else {
                continue;
            };
            match h.kind {
                FrameKind::Control => {
                    if let Ok(Control::Error { code, .. }) =
                        payload::decode_control(&h, body, Some(&dict))
                    {
                        heard.errors.push(code.to_string());
                    }
                }
                FrameKind::Data => {
                    if let Ok(v) = payload::decode(&h, body, Some(&dict)) {
                        heard.data.push(v);
                    }
                }
            }
        }
        if done(&heard) || tokio::time::Instant::now() >= deadline {
            return heard;
        }
        let timer = common::mux_wait(next)
            .map(|d| tokio::time::Instant::now() + d)
            .map_or(deadline, |t| t.min(deadline));
        tokio::select! {
            msg = s.ws.next() => match msg {
                Some(Ok(Message::Binary(b))) => s.mux.handle_input(&b, common::mux_now()),
                Some(Ok(Message::Close(c))) => {
                    heard.closed = Some(c.map(|c| c.code));
                    return heard;
                }
                Some(Ok(_)) => {}
                _ => {
                    heard.closed.get_or_insert(None);
                    return heard;
                }
            },
            () = tokio::time::sleep_until(timer) => s.mux.handle_timeout(common::mux_now()),
        }
    }
}

/// A Data frame on `lane` carrying `value` (msgpack with the dictionary).
fn data_frame(lane: Lane, value: &Value) -> Vec<u8> {
    let dict = Dictionary::current();
    let (body, dv) = payload::encode(value, Encoding::Msgpack, Some(&dict)).expect("encode");
    FrameHeader::data(lane, Encoding::Msgpack, 0, dv).encode(&body)
}

/// Queues `frame` on `lane`, driving the session while the multiplexer holds it back; `false`
/// if it never fit within `wait`.
async fn send_on(s: &mut Session, lane: Lane, frame: Vec<u8>, wait: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if s.mux.send(lane, frame.clone()).is_ok() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        let _ = listen(s, Duration::from_millis(5), |_| false).await;
    }
}

/// A `music-changes` push of `n` changes from 7 origins, naming `epoch`.
fn music_push(n: u64, epoch: u64) -> Vec<u8> {
    let changes: Vec<Value> = (1..=n)
        .map(|seq| {
            json!({"origin": format!("dev-{}", seq % 7), "localSeq": seq, "epoch": 1,
                   "timestamp": 1_735_689_600_000.0 + seq as f64,
                   "op": {"type": "music-control", "action": "seek",
                          "data": {"position": (seq % 300) as f64}, "epoch": 1, "sequence": seq}})
        })
        .collect();
    data_frame(
        Lane::Sync,
        &json!({"type": "music-changes", "epoch": epoch, "changes": changes}),
    )
}

async fn music_changes_bomb(addr: SocketAddr) -> Outcome {
    let http = common::http_from(lo(4));
    let mut s = match common::open_session_with(&http, addr, 40, &LANES, lo(4)).await {
        Ok(s) => s,
        Err(e) => return refused_at_open(e),
    };
    if let Err(e) = common::join(&mut s, "bomb").await {
        return refused_at_open(e);
    }
    // The issue's push (14,000 changes: past the decode budget as well), one past
    // `--max-changes-per-push` 1,024 that decodes (2,000 changes, ~24,000 values), and one
    // whose epoch would wrap (u64::MAX; PROTOCOL.md §13.9: `out_of_range`).
    let pushes = [
        ("14,000 changes", music_push(14_000, 1)),
        ("2,000 changes", music_push(2_000, 1)),
        ("epoch 2^64-1", music_push(1, u64::MAX)),
    ];
    let mut out = Outcome::default();
    let mut answers: std::collections::BTreeMap<String, u32> = std::collections::BTreeMap::new();
    let start = Instant::now();
    let mut rounds = 0;
    'rounds: while rounds < MAX_ROUNDS && (rounds == 0 || start.elapsed() < QUIET) {
        rounds += 1;
        for (what, frame) in &pushes {
            out.abusive += 1;
            if !send_on(&mut s, Lane::Sync, frame.clone(), Duration::from_secs(10)).await {
                *answers
                    .entry(format!("{what}: not sent (multiplexer full)"))
                    .or_insert(0) += 1;
                continue;
            }
            let acked = |h: &Heard| {
                !h.errors.is_empty() || h.data.iter().any(|v| v["type"] == "music-changes-ack")
            };
            let heard = listen(&mut s, Duration::from_secs(20), acked).await;
            if !heard.errors.is_empty() || heard.closed.flatten().is_some_and(typed_close) {
                out.refused += 1;
            }
            let answer = if let Some(c) = heard.errors.first() {
                format!("error {c}")
            } else if heard.data.iter().any(|v| v["type"] == "music-changes-ack") {
                "acked".to_string()
            } else {
                format!("no answer (closed: {:?})", heard.closed)
            };
            *answers.entry(format!("{what}: {answer}")).or_insert(0) += 1;
            if heard.closed.is_some() {
                break 'rounds;
            }
        }
    }
    out.note = format!(
        "{rounds} rounds of {} pushes ({:?} bytes): {answers:?}",
        pushes.len(),
        pushes.iter().map(|p| p.1.len()).collect::<Vec<_>>(),
    );
    out
}

/// An attack that could not even start: its session was refused.
fn refused_at_open(e: String) -> Outcome {
    Outcome {
        abusive: 0,
        refused: 0,
        note: format!("attacker session refused: {e}"),
    }
}

async fn room_stuffing(addr: SocketAddr) -> Outcome {
    const CAP: u64 = 256;
    let deadline = Instant::now() + Duration::from_secs(50);
    let mut members = Vec::new();
    let mut joined = 0u64;
    let mut out = Outcome::default();
    let mut stop = String::from("400 sessions joined, never refused");
    'outer: for ip in 0..4u8 {
        let http = common::http_from(lo(20 + ip));
        for k in 0..100usize {
            if Instant::now() >= deadline {
                stop = format!("time bound reached after {joined} joins");
                break 'outer;
            }
            let i = 1_000 + usize::from(ip) * 100 + k;
            let mut s = match common::open_session_with(&http, addr, i, &LANES, lo(20 + ip)).await {
                Ok(s) => s,
                Err(e) => {
                    // Refused before joining (a session or upgrade limit): typed if HTTP with code.
                    let typed = e.contains("\"code\"");
                    out.abusive += 1;
                    out.refused += u64::from(typed);
                    stop = format!("session {} refused: {e}", joined + 1);
                    break 'outer;
                }
            };
            common::send_control(
                &mut s,
                &Control::Join {
                    room: "stuffed".into(),
                },
            );
            let answered =
                |c: &Control| matches!(c, Control::Joined { .. } | Control::Error { .. });
            let over = joined >= CAP;
            match common::mux_until(&mut s.ws, &mut s.mux, answered, false, common::WAIT).await {
                Ok(Control::Joined { .. }) => {
                    joined += 1;
                    out.abusive += u64::from(over);
                }
                Ok(Control::Error { code, .. }) => {
                    out.abusive += 1;
                    out.refused += 1;
                    stop = format!("join {} refused: {code}", joined + 1);
                    break 'outer;
                }
                Ok(_) => unreachable!("filtered"),
                Err(e) => {
                    out.abusive += 1;
                    stop = format!("join {} got no answer: {e}", joined + 1);
                    break 'outer;
                }
            }
            members.push(s);
        }
    }
    out.note = format!("{joined} members joined one room; {stop}");
    drop(members);
    out
}

async fn signaling_socket(
    addr: SocketAddr,
    s: &Session,
    room: &str,
    local: IpAddr,
) -> Result<Ws, String> {
    let mut ws = common::ws_from(addr, "/api/signaling", local).await?;
    let token = s.signaling_token.clone().ok_or("no signalingToken")?;
    let auth = json!({"type": "auth", "address": s.sid, "signature": token});
    ws.send(Message::text(auth.to_string()))
        .await
        .map_err(|e| e.to_string())?;
    let join = json!({"type": "join", "roomId": room});
    ws.send(Message::text(join.to_string()))
        .await
        .map_err(|e| e.to_string())?;
    // Wait for `joined`.
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| "no joined".to_string())?
            .ok_or("signaling socket ended")?
            .map_err(|e| e.to_string())?;
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(t.as_str()).unwrap_or_default();
            if v["type"] == "joined" {
                return Ok(ws);
            }
            if v["type"] == "error" {
                return Err(format!("signaling: {v}"));
            }
        }
    }
}

async fn signaling_non_reader(addr: SocketAddr) -> Outcome {
    const OFFER: usize = 256 << 10;
    const HELD: u64 = (4 << 20) / OFFER as u64;
    let http = common::http_from(lo(5));
    let opened = async {
        let a = common::open_session_with(&http, addr, 50, &LANES, lo(5)).await?;
        let b = common::open_session_with(&http, addr, 51, &LANES, lo(5)).await?;
        let wa = signaling_socket(addr, &a, "sig", lo(5)).await?;
        let wb = signaling_socket(addr, &b, "sig", lo(5)).await?;
        Ok::<_, String>((a, b, wa, wb))
    }
    .await;
    let (_a, b, wa, wb) = match opened {
        Ok(x) => x,
        Err(e) => return refused_at_open(e),
    };
    let sdp = "v".repeat(OFFER);
    let (mut tx, mut rx) = wa.split();
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let errs = errors.clone();
    let reader = tokio::spawn(async move {
        while let Some(Ok(msg)) = rx.next().await {
            if let Message::Text(t) = msg {
                let v: Value = serde_json::from_str(t.as_str()).unwrap_or_default();
                if v["type"] == "error" {
                    errs.lock()
                        .expect("errors")
                        .push(v["code"].as_str().unwrap_or("?").to_string());
                }
            }
        }
    });
    // b stays alive (a heartbeat every 250 ms) but never reads until the flood is over.
    let b_addr = match wb.get_ref() {
        tokio_tungstenite::MaybeTlsStream::Plain(tcp) => tcp.local_addr().ok(),
        _ => None,
    };
    let (mut b_tx, mut b_rx) = wb.split();
    let b_alive = tokio::spawn(async move {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            let beat = b_tx.send(Message::text(r#"{"type":"heartbeat"}"#));
            match tokio::time::timeout(Duration::from_secs(2), beat).await {
                Ok(Ok(())) => {}
                _ => break,
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    let start = Instant::now();
    let mut sent = 0u64;
    let mut stalled = false;
    for _ in 0..400 {
        if start.elapsed() > Duration::from_secs(20) {
            break;
        }
        let offer = json!({"type": "offer", "to": b.sid, "data": {"type": "offer", "sdp": sdp}});
        let send = tx.send(Message::text(offer.to_string()));
        match tokio::time::timeout(Duration::from_secs(5), send).await {
            Ok(Ok(())) => sent += 1,
            Ok(Err(_)) => break,
            Err(_) => {
                stalled = true;
                break;
            }
        }
    }
    let flood_secs = start.elapsed().as_secs_f64();
    // What the kernel holds for b (the server's send buffer and b's receive buffer): lost with
    // the connection when the server lets b go, like b's queue.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let kernel_bytes = b_addr.map_or(0, tcp_queued_bytes);
    // b keeps not reading for the heartbeat timeout (and 2 s) after the flood started.
    tokio::time::sleep_until((start + SIGNALING_HEARTBEAT_TIMEOUT + Duration::from_secs(2)).into())
        .await;
    // Now b reads whatever reaches it, for up to 5 s: the offers, and how its socket ends.
    let b_read = tokio::spawn(async move {
        let mut offers = 0u64;
        let end = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(msg) = b_rx.next().await {
                match msg {
                    Ok(Message::Text(t)) => {
                        let v: Value = serde_json::from_str(t.as_str()).unwrap_or_default();
                        offers += u64::from(v["type"] == "offer");
                    }
                    Ok(Message::Close(c)) => return Some(c.map(|c| c.code)),
                    Ok(_) => {}
                    Err(_) => return None,
                }
            }
            None
        })
        .await;
        (offers, end)
    });
    // Give the server a moment to answer the sender.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (delivered, b_end) = b_read.await.unwrap_or((0, Ok(None)));
    b_alive.abort();
    let _ = tx.close().await;
    reader.abort();
    let errors = errors.lock().expect("errors").clone();
    // Every offer is delivered to b, refused to the sender with a typed error, or was among
    // those b's queue (at most HELD) and the kernel's socket buffers held when the server
    // let b go. Abusive: the rest.
    let in_kernel = kernel_bytes.div_ceil(OFFER as u64);
    let abusive = sent
        .saturating_sub(delivered)
        .saturating_sub(HELD + in_kernel);
    let refused = (errors.len() as u64).min(abusive);
    let dropped = sent
        .saturating_sub(errors.len() as u64)
        .saturating_sub(delivered);
    let b_note = match b_end {
        Ok(Some(Some(code))) => format!("the server closed b with {code}"),
        Ok(Some(None)) => "the server closed b without a code".to_string(),
        Ok(None) => {
            "b's socket ended without a close frame (the server gave up writing to it)".to_string()
        }
        Err(_) => "b's socket was still open after b read for 5 s".to_string(),
    };
    let mut codes = std::collections::BTreeMap::new();
    for e in &errors {
        *codes.entry(e.as_str()).or_insert(0) += 1;
    }
    Outcome {
        abusive,
        refused,
        note: format!(
            "{sent} offers of 256 KiB in {flood_secs:.1} s{} to b, which sent heartbeats but did not read; sender got errors {codes:?}; b then read {delivered} offers; {dropped} accepted but never delivered (b's queue holds at most {HELD}, the socket buffers held {kernel_bytes} bytes: {in_kernel} offers); {b_note}",
            if stalled {
                " (then the sender's write stalled 5 s)"
            } else {
                ""
            }
        ),
    }
}

/// Bytes queued in the kernel for the loopback TCP connection whose one end is `end`: send
/// and receive queues of both ends (`/proc/net/tcp`), 0 if unreadable.
fn tcp_queued_bytes(end: SocketAddr) -> u64 {
    let IpAddr::V4(ip) = end.ip() else {
        return 0;
    };
    let key = format!("{:08X}:{:04X}", u32::from_le_bytes(ip.octets()), end.port());
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (local, remote, queues) = (f.get(1)?, f.get(2)?, f.get(4)?);
            if *local != key && *remote != key {
                return None;
            }
            let (tx, rx) = queues.split_once(':')?;
            Some(u64::from_str_radix(tx, 16).ok()? + u64::from_str_radix(rx, 16).ok()?)
        })
        .sum()
}

async fn data_flood_unconnected(addr: SocketAddr) -> Outcome {
    const MSG: usize = 64 << 10;
    const HELD: u64 = (1 << 20) / MSG as u64;
    let http = common::http_from(lo(6));
    let mut ghosts = 0;
    let mut ghost_notes = Vec::new();
    for i in 0..4 {
        let body = common::handshake_body(60 + i, &LANES);
        let hs = match common::handshake(&http, addr, &body).await {
            Ok(hs) => hs,
            Err((s, b)) => {
                ghost_notes.push(format!("handshake HTTP {s} {b}"));
                continue;
            }
        };
        let resp = http
            .post(format!(
                "http://{addr}/api/protocol/v2/session/{}/lane/1",
                hs.session_id
            ))
            .bearer_auth(common::session_token(&hs))
            .header("content-type", "application/json")
            .body(json!({"type": "join", "room": "flood"}).to_string())
            .send()
            .await;
        match resp {
            Ok(r) if r.status().is_success() => ghosts += 1,
            Ok(r) => ghost_notes.push(format!("join POST HTTP {}", r.status())),
            Err(e) => ghost_notes.push(format!("join POST: {e}")),
        }
    }
    let mut s = match common::open_session_with(&http, addr, 70, &LANES, lo(6)).await {
        Ok(s) => s,
        Err(e) => return refused_at_open(e),
    };
    if let Err(e) = common::join(&mut s, "flood").await {
        return refused_at_open(e);
    }
    let text = "d".repeat(MSG);
    let start = Instant::now();
    let mut sent = 0u64;
    let mut errors = Vec::new();
    let mut closed = None;
    for n in 0..800u64 {
        if start.elapsed() > Duration::from_secs(20) {
            break;
        }
        let frame = data_frame(
            Lane::Messaging,
            &json!({"type": "blob", "n": n, "text": text}),
        );
        if !send_on(&mut s, Lane::Messaging, frame, Duration::from_secs(5)).await {
            break;
        }
        sent += 1;
        let heard = listen(&mut s, Duration::ZERO, |_| true).await;
        errors.extend(heard.errors);
        if heard.closed.is_some() {
            closed = heard.closed;
            break;
        }
    }
    // Until every frame went out and was acknowledged (bounded), then the trailing answers.
    let drain = Instant::now() + Duration::from_secs(10);
    while closed.is_none() && !s.mux.is_idle() && Instant::now() < drain {
        let heard = listen(&mut s, Duration::from_millis(100), |_| false).await;
        errors.extend(heard.errors);
        closed = heard.closed;
    }
    if closed.is_none() {
        let heard = listen(&mut s, Duration::from_secs(1), |_| false).await;
        errors.extend(heard.errors);
        closed = heard.closed;
    }
    let abusive = sent.saturating_sub(HELD);
    let mut refused = (errors.len() as u64).min(abusive);
    if closed.flatten().is_some_and(typed_close) && refused < abusive {
        refused += 1;
    }
    let mut codes = std::collections::BTreeMap::new();
    for e in &errors {
        *codes.entry(e.as_str()).or_insert(0) += 1;
    }
    Outcome {
        abusive,
        refused,
        note: format!(
            "{ghosts} members joined by POST without a socket{}; {sent} messages of 64 KiB sent in {:.1} s; errors {codes:?}; closed {closed:?}",
            if ghost_notes.is_empty() { String::new() } else { format!(" ({})", ghost_notes.join(", ")) },
            start.elapsed().as_secs_f64()
        ),
    }
}

async fn decode_bomb(addr: SocketAddr) -> Outcome {
    let http = common::http_from(lo(7));
    let mut s = match common::open_session_with(&http, addr, 80, &LANES, lo(7)).await {
        Ok(s) => s,
        Err(e) => return refused_at_open(e),
    };
    if let Err(e) = common::join(&mut s, "bomb2").await {
        return refused_at_open(e);
    }
    // msgpack array32 of N empty arrays: 5 + N bytes, under the 1 MiB frame limit.
    let n: u32 = (1 << 20) - 64;
    let mut bomb = vec![0xdd];
    bomb.extend_from_slice(&n.to_be_bytes());
    bomb.resize(5 + n as usize, 0x90);
    let frames = [
        FrameHeader::control(Encoding::Msgpack, 0, 0).encode(&bomb),
        FrameHeader::data(Lane::Sync, Encoding::Msgpack, 0, 0).encode(&bomb),
        FrameHeader::control(Encoding::Msgpack, 0, 0).encode(&bomb),
        FrameHeader::data(Lane::Sync, Encoding::Msgpack, 0, 0).encode(&bomb),
    ];
    let mut out = Outcome::default();
    let mut answers: std::collections::BTreeMap<String, u32> = std::collections::BTreeMap::new();
    let mut slowest = 0f64;
    let start = Instant::now();
    let mut rounds = 0;
    'rounds: while rounds < MAX_ROUNDS && (rounds == 0 || start.elapsed() < QUIET) {
        rounds += 1;
        for f in &frames {
            out.abusive += 1;
            let lane = if FrameHeader::decode(f).is_ok_and(|(h, _)| h.kind == FrameKind::Control) {
                Lane::Control
            } else {
                Lane::Sync
            };
            let t = Instant::now();
            if !send_on(&mut s, lane, f.clone(), Duration::from_secs(10)).await {
                *answers.entry(format!("{lane:?}: not sent")).or_insert(0) += 1;
                continue;
            }
            let heard = listen(&mut s, Duration::from_secs(5), |h| !h.errors.is_empty()).await;
            let typed = !heard.errors.is_empty() || heard.closed.flatten().is_some_and(typed_close);
            out.refused += u64::from(typed);
            slowest = slowest.max(t.elapsed().as_secs_f64());
            let answer = heard
                .errors
                .first()
                .cloned()
                .or_else(|| heard.closed.map(|c| format!("closed {c:?}")))
                .unwrap_or_else(|| "no answer".into());
            *answers.entry(format!("{lane:?}: {answer}")).or_insert(0) += 1;
            if heard.closed.is_some() {
                break 'rounds;
            }
        }
    }
    out.note = format!(
        "{rounds} rounds of 4 frames of {n} empty arrays (2 Control, 2 Sync): {answers:?}; slowest answer {slowest:.2} s"
    );
    out
}

// ---------------------------------------------------------------------------------------

/// One scenario's figures.
struct Figures {
    name: &'static str,
    quiet_p99: f64,
    attack_p99: f64,
    attack_samples: usize,
    quiet_rss: u64,
    attack_rss: u64,
    outcome: Outcome,
    attack_secs: f64,
    /// Control `error` codes the honest client heard (target: none).
    honest_errors: Vec<String>,
    /// The slowest honest round trips under attack: (ms after the attack began, ms).
    slowest: Vec<(f64, f64)>,
}

/// The signaling scenario's `--heartbeat-timeout-ms`: a peer that stops reading is let go
/// after it (the other scenarios keep the bench's long timeout).
const SIGNALING_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(3);

/// Server flags of scenario `name`, beyond the defaults.
fn flags(name: &str) -> &'static [&'static str] {
    match name {
        "signaling-non-reader" => &["--heartbeat-timeout-ms", "3000"],
        _ => &[],
    }
}

async fn scenario(name: &'static str, attacker: &tokio::runtime::Handle) -> Figures {
    let (server, addr) = common::spawn_server(flags(name));
    let pid = server.0.id();
    let rss = RssSampler::start(pid);
    let honest = Honest::start(addr);
    // Quiet run.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let q0 = now_us();
    rss.take();
    tokio::time::sleep(QUIET).await;
    let q1 = now_us();
    let quiet_rss = rss.take();
    let quiet = honest.window(q0, q1);
    // Attack.
    let a0 = now_us();
    let attack = async move {
        match name {
            "oversized-handshakes" => oversized_handshakes(addr).await,
            "handshake-flood" => handshake_flood(addr).await,
            "music-changes-bomb" => music_changes_bomb(addr).await,
            "room-stuffing" => room_stuffing(addr).await,
            "signaling-non-reader" => signaling_non_reader(addr).await,
            "data-flood-unconnected" => data_flood_unconnected(addr).await,
            "decode-bomb" => decode_bomb(addr).await,
            other => unreachable!("{other}"),
        }
    };
    let task = attacker.spawn(attack);
    let abort = task.abort_handle();
    let outcome = match tokio::time::timeout(ATTACK_LIMIT, task).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => Outcome {
            note: format!("attacker failed: {e}"),
            ..Outcome::default()
        },
        Err(_) => {
            abort.abort();
            Outcome {
                note: format!("attack stopped at the {} s bound", ATTACK_LIMIT.as_secs()),
                ..Outcome::default()
            }
        }
    };
    let attack_secs = (now_us() - a0) as f64 / 1e6;
    // Keep measuring at least QUIET, and 1 s after the attack.
    let until = (a0 + QUIET.as_micros() as u64).max(now_us() + 1_000_000);
    tokio::time::sleep(Duration::from_micros(until - now_us())).await;
    let a1 = now_us();
    let attack_rss = rss.take();
    let during = honest.window(a0, a1);
    let slowest = honest.slowest(a0, a1, 3);
    let honest_errors = honest.errors.lock().expect("errors").clone();
    drop(honest);
    drop(rss);
    drop(server);
    Figures {
        name,
        quiet_p99: common::percentile(&quiet, 99.0),
        attack_p99: common::percentile(&during, 99.0),
        attack_samples: during.len(),
        quiet_rss,
        attack_rss,
        outcome,
        attack_secs,
        honest_errors,
        slowest,
    }
}

const SCENARIOS: [&str; 7] = [
    "oversized-handshakes",
    "handshake-flood",
    "music-changes-bomb",
    "room-stuffing",
    "signaling-non-reader",
    "data-flood-unconnected",
    "decode-bomb",
];

/// Sets the calling thread's nice value to 19 (`renice -p <tid>`; per thread on Linux).
fn lowest_priority() {
    let Ok(link) = std::fs::read_link("/proc/thread-self") else {
        return;
    };
    let Some(tid) = link.file_name().and_then(|t| t.to_str()) else {
        return;
    };
    let _ = std::process::Command::new("renice")
        .args(["-n", "19", "-p", tid])
        .output();
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    // The attacker's own runtime, its threads at the lowest CPU priority (nice 19): on one
    // machine the attacker's client work (building 20,000 handshakes/s, encoding bombs) would
    // otherwise take the cores the server and the honest client need, and the honest round
    // trip would measure the bench's load rather than the server's isolation. The server (a
    // child of a normal-priority thread) does all of its work on the attack at normal priority.
    let attacker = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("attacker")
        .on_thread_start(lowest_priority)
        .enable_all()
        .build()
        .expect("attacker runtime");
    let load = common::loadavg();
    println!("machine load average at start: {load:?} (1, 5, 15 min)");
    let figures = rt.block_on(async {
        let mut all = Vec::new();
        // `ABUSE_ONLY=a,b` runs only those scenarios (and writes only their rows).
        let only = std::env::var("ABUSE_ONLY").unwrap_or_default();
        for name in SCENARIOS {
            if !only.is_empty() && !only.split(',').any(|o| o == name) {
                continue;
            }
            println!("abuse: {name}");
            let f = scenario(name, attacker.handle()).await;
            let growth = f.attack_rss.saturating_sub(f.quiet_rss);
            println!(
                "  honest p99 quiet {:.2} ms, under attack {:.2} ms ({} samples, ratio {:.2}); server RSS quiet {:.1} MiB, peak {:.1} MiB (+{:.1} MiB); refused {}/{} abusive; attack {:.1} s",
                f.quiet_p99,
                f.attack_p99,
                f.attack_samples,
                f.attack_p99 / f.quiet_p99,
                f.quiet_rss as f64 / 1048576.0,
                f.attack_rss as f64 / 1048576.0,
                growth as f64 / 1048576.0,
                f.outcome.refused,
                f.outcome.abusive,
                f.attack_secs,
            );
            println!("  {}", f.outcome.note);
            let slowest: Vec<String> = f
                .slowest
                .iter()
                .map(|(at, ms)| format!("{ms:.2} ms at +{at:.0} ms"))
                .collect();
            println!("  slowest honest round trips: {}", slowest.join(", "));
            if !f.honest_errors.is_empty() {
                println!("  the honest client heard errors: {:?}", f.honest_errors);
            }
            all.push(f);
        }
        all
    });
    rt.shutdown_timeout(Duration::from_millis(100));
    attacker.shutdown_timeout(Duration::from_millis(100));
    report(&figures, load);
}

fn report(figures: &[Figures], load: [f64; 3]) {
    println!(
        "{:<24} {:>9} {:>9} {:>7} {:>10} {:>12}  targets: ratio ≤ 2, growth ≤ 64 MiB, all refused",
        "scenario", "quiet p99", "p99", "ratio", "RSS +MiB", "refused"
    );
    let mut rows = Vec::new();
    for f in figures {
        let growth = f.attack_rss.saturating_sub(f.quiet_rss);
        let ratio = f.attack_p99 / f.quiet_p99;
        let o = &f.outcome;
        println!(
            "{:<24} {:>9.2} {:>9.2} {:>7.2} {:>10.1} {:>12}",
            f.name,
            f.quiet_p99,
            f.attack_p99,
            ratio,
            growth as f64 / 1048576.0,
            format!("{}/{}", o.refused, o.abusive)
        );
        let n = f.name;
        rows.push(json!({
            "name": format!("abuse.{n}.p99-ratio"), "value": ratio, "unit": "×",
            "baseline": format!("honest Control round trip p99 under attack {:.2} ms / quiet {:.2} ms; target ≤ 2", f.attack_p99, f.quiet_p99),
            "ratio": ratio / 2.0,
        }));
        rows.push(json!({
            "name": format!("abuse.{n}.p99"), "value": f.attack_p99, "unit": "ms",
            "baseline": format!("same client, same server, no attacker: {:.2} ms", f.quiet_p99),
            "ratio": ratio,
        }));
        rows.push(json!({
            "name": format!("abuse.{n}.rss-growth"), "value": growth, "unit": "bytes",
            "baseline": format!("server VmRSS peak above the quiet run ({:.1} MiB); target ≤ 64 MiB", f.quiet_rss as f64 / 1048576.0),
            "ratio": growth as f64 / RSS_TARGET as f64,
        }));
        rows.push(json!({
            "name": format!("abuse.{n}.refused"), "value": o.refused, "unit": "requests",
            "baseline": format!("of {} abusive requests (target: all): {}", o.abusive, o.note),
            "ratio": if o.abusive == 0 { Value::Null } else { json!(o.refused as f64 / o.abusive as f64) },
        }));
    }
    rows.push(json!({
        "name": "abuse.machine-loadavg", "value": load[0], "unit": "runnable tasks",
        "baseline": format!("1-min load average at the start (5, 15 min: {:.2}, {:.2}); the bench, the server and anything else share the machine's cores", load[1], load[2]),
        "ratio": null,
    }));
    let rows = rows
        .into_iter()
        .map(|mut r| {
            for k in ["value", "ratio"] {
                if r[k].as_f64().is_some_and(|v| !v.is_finite()) {
                    r[k] = Value::Null;
                }
            }
            r
        })
        .collect();
    write_results("abuse.", rows);
}
