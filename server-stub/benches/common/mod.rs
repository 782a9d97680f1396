//! What the `capacity`, `load` and `abuse` benches of server-stub share: the server as a
//! child process, its memory, and sessions opened the way the SDK opens them (handshake
//! `POST`, WebSocket, client-side multiplexer of `p3_lanes::core::mux`, PROTOCOL.md §3, §11).
#![allow(dead_code)]

use futures::{SinkExt, StreamExt};
use p3_lanes::core::control::Control;
use p3_lanes::core::dictionary::Dictionary;
use p3_lanes::core::drive::Millis;
use p3_lanes::core::frame::{FrameHeader, FrameKind};
use p3_lanes::core::handshake::{HandshakeResponse, FEATURE_MUX};
use p3_lanes::core::lane::{Encoding, Lane};
use p3_lanes::core::mux::{Mux, MuxConfig, MuxEvent, MuxOutput};
use p3_lanes::core::payload;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A client WebSocket.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Upper bound on any single wait (connect, handshake, welcome, join).
pub const WAIT: Duration = Duration::from_secs(20);

/// Microseconds since the first call: the one clock of the bench process (message stamps,
/// multiplexer timers).
pub fn now_us() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// Milliseconds on the same clock as [`now_us`] (the multiplexers' clock).
pub fn now_ms() -> u64 {
    now_us() / 1000
}

/// Resident set size of `pid`, bytes (`VmRSS` in `/proc/<pid>/status`); 0 if unreadable.
pub fn rss_bytes(pid: u32) -> u64 {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return 0;
    };
    text.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// A child process killed (and reaped) when dropped.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `cmd` (stdout piped, stdin piped so the child sees its parent go) and reads its
/// `listening on [http://]ADDR` line.
pub fn spawn_listening(mut cmd: Command) -> (ChildGuard, SocketAddr) {
    let mut child = ChildGuard(
        cmd.stdout(Stdio::piped())
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn child"),
    );
    let stdout = child.0.stdout.take().expect("piped stdout");
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .expect("read the listening line");
    // Keep draining the child's stdout so it never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = String::new();
        while reader.read_line(&mut sink).is_ok_and(|n| n > 0) {
            sink.clear();
        }
    });
    let addr = line
        .trim()
        .trim_start_matches("listening on ")
        .trim_start_matches("http://")
        .parse()
        .unwrap_or_else(|_| panic!("no address in {line:?}"));
    (child, addr)
}

/// The server-stub binary: `$BENCH_SERVER_BIN` if set (to compare another build), else the
/// one cargo built for this bench.
pub fn server_bin() -> String {
    std::env::var("BENCH_SERVER_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_server-stub").into())
}

/// Whether `server-stub --help` lists `flag`.
pub fn server_has_flag(flag: &str) -> bool {
    Command::new(server_bin())
        .arg("--help")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(flag))
}

/// The machine's load averages (1, 5, 15 min) from `/proc/loadavg`: the benches share the
/// machine's cores with whatever else runs.
pub fn loadavg() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = text
        .split_whitespace()
        .map(|s| s.parse().unwrap_or(f64::NAN));
    [(); 3].map(|()| it.next().unwrap_or(f64::NAN))
}

/// Spawns the real server-stub (release) on 127.0.0.1 port 0 with `extra` flags (after the
/// bench's own: long heartbeat timeout unless `extra` sets one, no static files).
pub fn spawn_server(extra: &[&str]) -> (ChildGuard, SocketAddr) {
    spawn_server_bin(&server_bin(), extra)
}

/// [`spawn_server`] with the binary at `bin`.
pub fn spawn_server_bin(bin: &str, extra: &[&str]) -> (ChildGuard, SocketAddr) {
    let mut cmd = Command::new(bin);
    if !extra.contains(&"--heartbeat-timeout-ms") {
        cmd.args(["--heartbeat-timeout-ms", "600000"]);
    }
    cmd.args([
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--static-dir",
        "/nonexistent/www",
        "--pkg-dir",
        "/nonexistent/pkg",
    ])
    .args(extra)
    .env("RUST_LOG", "error");
    spawn_listening(cmd)
}

/// One open multiplexed session: its socket, sid, and the client's multiplexer.
pub struct Session {
    pub ws: Ws,
    pub sid: String,
    pub mux: Mux,
    /// The handshake's `signalingToken` (for `GET /api/signaling`).
    pub signaling_token: Option<String>,
}

/// The client's multiplexer for `lanes`, as `core::client` builds it.
pub fn client_mux(i: usize, lanes: &[Lane]) -> Mux {
    let cfg = MuxConfig::for_lanes(lanes, i as u64 ^ 0x6d75_7800);
    Mux::new(cfg).expect("multiplexer config")
}

/// The multiplexers' clock: [`now_ms`].
pub fn mux_now() -> Millis {
    Millis::from_u64(now_ms())
}

/// How long until `deadline` ([`mux_now`]'s clock); `None` for [`Millis::NEVER`].
pub fn mux_wait(deadline: Millis) -> Option<Duration> {
    deadline
        .deadline()
        .map(|t| Duration::from_millis(t.as_u64().saturating_sub(now_ms())))
}

/// Drains `mux`: writes every frame it has to send (`feed` each, one `flush` per batch) and
/// returns its events and next deadline; `None` if the socket failed.
pub async fn mux_flush(ws: &mut Ws, mux: &mut Mux) -> Option<(Vec<MuxEvent>, Millis)> {
    let mut events = Vec::new();
    loop {
        let mut any = false;
        let deadline = loop {
            match mux.poll_output(mux_now()) {
                MuxOutput::Event(ev) => events.push(ev),
                MuxOutput::Transmit(f) => {
                    any = true;
                    if ws.feed(Message::binary(f)).await.is_err() {
                        return None;
                    }
                }
                MuxOutput::Timeout(t) => break t,
            }
        };
        if !any {
            return Some((events, deadline));
        }
        if ws.flush().await.is_err() {
            return None;
        }
        // Every write was awaited: nothing is buffered.
        mux.handle_transport_buffered(0);
    }
}

/// Drives a multiplexed session (writes, reads one frame or waits for its timer) until a
/// Control message matching `want` arrived and, if `idle`, nothing is owed to the server.
/// Returns the matching message. Bounded by `wait`.
pub async fn mux_until(
    ws: &mut Ws,
    mux: &mut Mux,
    want: impl Fn(&Control) -> bool,
    idle: bool,
    wait: Duration,
) -> Result<Control, String> {
    let dict = Dictionary::current();
    let deadline = tokio::time::Instant::now() + wait;
    let mut seen = None;
    loop {
        let Some((events, next)) = mux_flush(ws, mux).await else {
            return Err("socket write failed".into());
        };
        for ev in events {
            if let MuxEvent::Message { bytes, .. } = ev {
                let Ok((h, body)) = FrameHeader::decode(&bytes) else {
                    continue;
                };
                if h.kind == FrameKind::Control && seen.is_none() {
                    if let Ok(c) = payload::decode_control(&h, body, Some(&dict)) {
                        if want(&c) {
                            seen = Some(c);
                        }
                    }
                }
            } else if let MuxEvent::Error(e) = ev {
                return Err(format!("multiplexer: {e}"));
            }
        }
        if seen.is_some() && (!idle || (mux.is_resumed() && mux.is_idle())) {
            return Ok(seen.take().expect("seen"));
        }
        let timer = mux_wait(next)
            .map(|d| tokio::time::Instant::now() + d)
            .map_or(deadline, |t| t.min(deadline));
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Binary(b))) => mux.handle_input(&b, mux_now()),
                Some(Ok(Message::Close(c))) => return Err(format!("socket closed: {c:?}")),
                Some(Ok(_)) => {}
                other => return Err(format!("socket ended: {other:?}")),
            },
            () = tokio::time::sleep_until(timer) => {
                if tokio::time::Instant::now() >= deadline {
                    return Err("timed out".into());
                }
                mux.handle_timeout(mux_now());
            }
        }
    }
}

/// The handshake body the SDK sends for `lanes`, offering `mux`.
/// The session's WebSocket path with the handshake's first ticket (PROTOCOL.md §2.1).
pub fn first_ws_path(hs: &HandshakeResponse) -> String {
    match &hs.ticket {
        Some(t) => p3_lanes::core::handshake::with_ticket(&hs.websocket_url, t),
        None => hs.websocket_url.clone(),
    }
}

/// The session's `sessionToken` (empty from a server without credentials).
pub fn session_token(hs: &HandshakeResponse) -> String {
    hs.session_token
        .as_ref()
        .map(|t| t.expose().to_owned())
        .unwrap_or_default()
}

pub fn handshake_body(i: usize, lanes: &[Lane]) -> Value {
    let ids: Vec<u8> = lanes.iter().map(|&l| l as u8).collect();
    json!({
        "clientId": format!("bench-{i}"),
        "wallet": "0xabc",
        "capabilities": {"transports": ["websocket"], "encodings": ["msgpack"], "lanes": ids},
        "deviceInfo": {"platform": "loadgen", "version": "1.0.0"},
        "features": [FEATURE_MUX],
    })
}

/// An HTTP client whose connections come from `local` (a loopback address: the server counts
/// per-IP limits per source address).
pub fn http_from(local: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(local)
        .timeout(WAIT)
        .build()
        .expect("http client")
}

/// A WebSocket to `ws://{addr}{path}` from source address `local`, with TCP_NODELAY.
pub async fn ws_from(addr: SocketAddr, path: &str, local: IpAddr) -> Result<Ws, String> {
    let connect = async {
        let sock = TcpSocket::new_v4().map_err(|e| e.to_string())?;
        sock.bind(SocketAddr::new(local, 0))
            .map_err(|e| format!("bind {local}: {e}"))?;
        let tcp = sock.connect(addr).await.map_err(|e| e.to_string())?;
        // As browsers do: small frames go out at once, not after the peer's delayed ACK.
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let url = format!("ws://{addr}{path}");
        let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(tcp))
            .await
            .map_err(|e| format!("websocket: {e}"))?;
        Ok(ws)
    };
    tokio::time::timeout(WAIT, connect)
        .await
        .map_err(|_| "websocket: timed out".to_string())?
}

/// The handshake (HTTP `POST`, offering `mux`, for `lanes`): the response, or the refusal as
/// `Err((status, body))`.
pub async fn handshake(
    http: &reqwest::Client,
    addr: SocketAddr,
    body: &Value,
) -> Result<HandshakeResponse, (u16, String)> {
    let resp = http
        .post(format!("http://{addr}/api/protocol/v2/session/handshake"))
        .json(body)
        .send()
        .await
        .map_err(|e| (0, format!("handshake: {e}")))?;
    let status = resp.status().as_u16();
    let text = resp.text().await.map_err(|e| (status, e.to_string()))?;
    if status != 200 {
        return Err((status, text));
    }
    serde_json::from_str(&text).map_err(|e| (status, format!("handshake body: {e}")))
}

/// Handshake (HTTP, offering `mux`), WebSocket, resume exchange and welcome, as the SDK opens
/// a session, with `http`'s and `local`'s source address; returned idle (welcome
/// acknowledged, resume done).
pub async fn open_session_with(
    http: &reqwest::Client,
    addr: SocketAddr,
    i: usize,
    lanes: &[Lane],
    local: IpAddr,
) -> Result<Session, String> {
    let hs = handshake(http, addr, &handshake_body(i, lanes))
        .await
        .map_err(|(s, b)| format!("handshake: HTTP {s} {b}"))?;
    if !hs.grants(FEATURE_MUX) {
        return Err("mux not granted".into());
    }
    let ws = ws_from(addr, &first_ws_path(&hs), local).await?;
    let mut s = Session {
        ws,
        sid: hs.session_id.to_string(),
        mux: client_mux(i, lanes),
        signaling_token: hs.signaling_token.clone(),
    };
    s.mux.handle_transport_resumed(mux_now());
    let welcome = |c: &Control| matches!(c, Control::Welcome { .. });
    mux_until(&mut s.ws, &mut s.mux, welcome, true, WAIT).await?;
    Ok(s)
}

/// [`open_session_with`] for lanes Control and Messaging from 127.0.0.1.
pub async fn open_session(
    http: &reqwest::Client,
    addr: SocketAddr,
    i: usize,
) -> Result<Session, String> {
    let local = IpAddr::from([127, 0, 0, 1]);
    open_session_with(http, addr, i, &[Lane::Control, Lane::Messaging], local).await
}

/// Queues a Control message on the session's multiplexer.
pub fn send_control(s: &mut Session, c: &Control) {
    let dict = Dictionary::current();
    let frame = payload::control_frame(c, Encoding::Msgpack, Some(&dict), 0);
    s.mux.send(Lane::Control, frame).expect("queue control");
}

/// Joins `room` and waits for `joined`.
pub async fn join(s: &mut Session, room: &str) -> Result<(), String> {
    send_control(
        s,
        &Control::Join {
            room: room.to_string(),
        },
    );
    let joined = |c: &Control| matches!(c, Control::Joined { .. } | Control::Error { .. });
    match mux_until(&mut s.ws, &mut s.mux, joined, false, WAIT).await? {
        Control::Joined { .. } => Ok(()),
        other => Err(format!("join refused: {other:?}")),
    }
}

/// The value after `flag` on the bench's command line (`cargo bench … -- FLAG VALUE`), if
/// present and parseable.
pub fn arg_value<T: std::str::FromStr>(flag: &str) -> Option<T> {
    let args: Vec<String> = std::env::args().collect();
    let i = args.iter().position(|a| a == flag)?;
    args.get(i + 1)?.parse().ok()
}

/// The benches' tokio runtime: two worker threads (the machine's cores are shared with the
/// server under test).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The p-th percentile (0..=100) of sorted `v`; NaN when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
