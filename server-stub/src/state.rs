//! Shared server state: the session registry, rooms, and each WebSocket's bounded outbound
//! queue (seed 000 "Session Management", seed 001 "Connection Management" / room maps).
//!
//! Everything mutable sits in one registry behind a `std::sync::Mutex`. Critical sections
//! are short (map updates, queue pushes with `try_send`) and the lock is never held across an
//! `.await`. Payload decoding and transcoding happen outside it.
//!
//! Session lifetime (sliding TTL): a session expires `ttlSeconds` after its last activity (the
//! handshake, any frame received, or its socket closing), and never while a socket is
//! connected. Expired sessions are removed by a sweeper ([`spawn_sweeper`]) and treated as
//! missing by every lookup in the meantime.
//!
//! Multiplexer (feature flag `mux`, PROTOCOL.md §11, the browser SDK's default): a session whose handshake was granted
//! it owns one [`Mux`] for its whole life, not per socket, so reliable lanes resume across
//! reconnects: resumed on attach, lost on detach. Everything sent to such a session (Control
//! messages, relays, server data) is a §5 frame with seq 0 handed to its `Mux`; the socket's
//! send task writes what [`Registry::mux_pump`] returns, woken by the connection's `Notify`.
//! Such a session also keeps its room while detached (until its TTL ends): relays keep going
//! into its `Mux`, which forgets the oldest reliable messages when a lane is full while no
//! socket is attached (the member then gets a discontinuity, never a silent gap; an attached
//! member's full lane answers `backpressure` to the sender instead).
//! Sessions without the flag use the bounded outbound queue and §5 framing as before.

use crate::config::Config;
use crate::music::MusicRooms;
use crate::now_ms;
use crate::room_key::RoomKeys;
use crate::sse::{PostOutcome, SseHub};
use axum::body::Bytes;
use p3_lanes::core::control::Control;
use p3_lanes::core::dictionary::{Dictionary, DictionaryWire};
use p3_lanes::core::error::{ErrorCode, WireError};
use p3_lanes::core::frame::{FrameHeader, SessionId};
use p3_lanes::core::handshake::{LaneGrant, ServerCapabilities};
use p3_lanes::core::lane::{Encoding, Lane};
use p3_lanes::core::mux::{Mux, MuxConfig, MuxEvent, ReliableOverflow};
use p3_lanes::core::payload;
use p3_lanes::core::sse::post::{PostLedger, SeqCheck};
use p3_lanes::core::sse::{lane_urls, TRANSPORT_SSE};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Instant;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

/// WebSocket close codes the server sends (RFC 6455 §7.4 plus the 4xxx private range).
pub mod close {
    pub use p3_lanes::core::client::CLOSE_SESSION_NOT_FOUND as SESSION_NOT_FOUND;
    /// Normal closure (the peer closed, or the server ended the socket without a reason).
    pub const NORMAL: u16 = 1000;
    /// Going away: the server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// Protocol error at the WebSocket layer.
    pub const PROTOCOL: u16 = 1002;
    /// A WebSocket message larger than twice `--max-frame-bytes`.
    pub const TOO_BIG: u16 = 1009;
    /// Try again later: this socket's outbound queue overflowed with protocol (Control)
    /// messages, which are never dropped silently; the client reconnects and rejoins.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// No frame received for `--heartbeat-timeout-ms` (seed 001 `HEARTBEAT_TIMEOUT`).
    pub const HEARTBEAT_TIMEOUT: u16 = 4408;
    /// Another socket opened for the same session and replaced this one.
    pub const REPLACED: u16 = 4409;
}

/// Why and how a socket is being closed: WebSocket close code and reason text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseReason {
    /// WebSocket close code (see [`close`]).
    pub code: u16,
    /// Close reason text (≤ 123 bytes).
    pub reason: &'static str,
}

/// A one-shot "close this socket" signal; the first reason set wins.
#[derive(Debug)]
pub struct CloseSignal {
    tx: watch::Sender<Option<CloseReason>>,
}

impl CloseSignal {
    fn new() -> CloseSignal {
        CloseSignal {
            tx: watch::channel(None).0,
        }
    }

    /// Asks the socket to close with `code`/`reason`; returns `false` if it already was asked.
    pub fn close(&self, code: u16, reason: &'static str) -> bool {
        self.tx.send_if_modified(|current| {
            if current.is_some() {
                return false;
            }
            *current = Some(CloseReason { code, reason });
            true
        })
    }

    /// The reason, once set.
    pub fn reason(&self) -> Option<CloseReason> {
        *self.tx.borrow()
    }

    /// Waits until a reason is set and returns it.
    pub async fn closed(&self) -> CloseReason {
        let mut rx = self.tx.subscribe();
        // The sender lives in `self`, so `wait_for` cannot fail while we borrow it.
        let reason = match rx.wait_for(Option::is_some).await {
            Ok(r) => *r,
            Err(_) => None,
        };
        reason.unwrap_or(CloseReason {
            code: close::NORMAL,
            reason: "",
        })
    }
}

/// Producer side of a socket's bounded outbound queue: at most `frames` frames and, unless
/// the queue is empty, at most `budget` bytes.
#[derive(Clone, Debug)]
pub struct Outbound {
    tx: mpsc::Sender<Bytes>,
    queued_bytes: Arc<AtomicUsize>,
    budget: usize,
}

/// Consumer side of [`Outbound`], owned by the socket's send task.
#[derive(Debug)]
pub struct OutboundRx {
    rx: mpsc::Receiver<Bytes>,
    queued_bytes: Arc<AtomicUsize>,
}

fn outbound(frames: usize, budget: usize) -> (Outbound, OutboundRx) {
    let (tx, rx) = mpsc::channel(frames.max(1));
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    (
        Outbound {
            tx,
            queued_bytes: queued_bytes.clone(),
            budget,
        },
        OutboundRx { rx, queued_bytes },
    )
}

impl Outbound {
    /// Queues `frame` without waiting; `false` if the queue is full (frames or bytes) or the
    /// socket is gone.
    pub fn try_push(&self, frame: Vec<u8>) -> bool {
        let len = frame.len();
        let before = self.queued_bytes.fetch_add(len, Ordering::AcqRel);
        if before != 0 && before + len > self.budget {
            self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        if self.tx.try_send(Bytes::from(frame)).is_err() {
            self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        true
    }
}

impl OutboundRx {
    /// The next queued frame; `None` once every producer is gone. Cancel-safe.
    pub async fn recv(&mut self) -> Option<Bytes> {
        let frame = self.rx.recv().await?;
        self.queued_bytes.fetch_sub(frame.len(), Ordering::AcqRel);
        Some(frame)
    }

    /// Waits for at least one queued frame, then moves every frame that is ready (at most
    /// `limit`) into `batch`; returns how many (0 once every producer is gone). Cancel-safe.
    pub async fn recv_many(&mut self, batch: &mut Vec<Bytes>, limit: usize) -> usize {
        let from = batch.len();
        let n = self.rx.recv_many(batch, limit).await;
        let bytes: usize = batch[from..].iter().map(Bytes::len).sum();
        self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
        n
    }
}

/// The live socket of a session.
#[derive(Debug)]
struct Conn {
    /// Distinguishes this socket from earlier and later ones of the same session.
    id: u64,
    out: Outbound,
    close: Arc<CloseSignal>,
    /// Next seq of a server → client Control frame.
    control_seq: u64,
    /// Next seq of a relayed Data frame, per lane (index `id - 1`), starting at 1.
    data_seq: [u64; 8],
    /// Wakes the send task of a multiplexed session (something to send).
    notify: Arc<Notify>,
}

/// One session created by a handshake.
#[derive(Debug)]
struct Session {
    client_id: String,
    wallet: Option<String>,
    device_info: Option<serde_json::Map<String, serde_json::Value>>,
    transport: &'static str,
    lanes: Vec<(Lane, Encoding)>,
    created_at_ms: u64,
    last_activity: Instant,
    last_activity_ms: u64,
    room: Option<String>,
    conn: Option<Conn>,
    /// The session's multiplexer, when granted (lives across sockets).
    mux: Option<Mux>,
    /// SSE lanes ([`crate::sse`]): history and streams; from the handshake for `sse`
    /// sessions, from the first stream for others.
    sse: Option<SseHub>,
    /// The last `P3-Seq` of a `POST` per lane and its outcome (PROTOCOL.md §14.6).
    posts: PostLedger<PostOutcome>,
}

/// [`Target::conn_id`] of a multiplexed session without a socket.
const DETACHED: u64 = 0;

/// [`Target::conn_id`] of a session reached only through its SSE history.
const SSE_ONLY: u64 = u64::MAX - 1;

/// The "socket" id of a message `POST`ed to a lane ([`crate::sse`]): acts for any live session.
pub(crate) const HTTP_SENDER: u64 = u64::MAX;

/// Monotonic ms since the first call: the multiplexers' clock.
pub(crate) fn mono_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Hands `frame` (seq 0) to a multiplexed session's `Mux` and wakes its send task; `false`
/// if the lane is full (backpressure).
fn mux_send(s: &mut Session, lane: Lane, frame: Vec<u8>) -> bool {
    let Some(m) = s.mux.as_mut() else {
        return false;
    };
    let ok = m.send(lane, frame).is_ok();
    if let Some(c) = &s.conn {
        c.notify.notify_one();
    }
    ok
}

impl Session {
    fn encoding(&self, lane: Lane) -> Option<Encoding> {
        self.lanes.iter().find(|(l, _)| *l == lane).map(|&(_, e)| e)
    }

    fn expired(&self, now: Instant, ttl: std::time::Duration) -> bool {
        self.conn.is_none()
            && !matches!(&self.sse, Some(h) if h.streams > 0)
            && now.saturating_duration_since(self.last_activity) >= ttl
    }

    fn touch(&mut self, now: Instant) {
        self.last_activity = now;
        self.last_activity_ms = now_ms();
    }
}

/// The grants of `lanes` to session `sid` over `transport`, with their registry entries and
/// SSE URLs (per lane, or the multiplexed stream: [`p3_lanes::core::sse::lane_urls`]).
pub fn lane_grants(sid: SessionId, transport: &str, lanes: &[(Lane, Encoding)]) -> Vec<LaneGrant> {
    let ids: Vec<Lane> = lanes.iter().map(|l| l.0).collect();
    let urls = lane_urls(sid, transport, &ids);
    lanes
        .iter()
        .zip(urls)
        .map(|(&(lane, encoding), url)| {
            let spec = lane.spec();
            LaneGrant {
                id: lane.id(),
                name: lane.name().to_owned(),
                encoding,
                url,
                priority: spec.priority,
                queue_depth: spec.queue_depth,
                reliable: spec.reliable,
            }
        })
        .collect()
}

/// `GET /api/protocol/v2/session/{sid}` body. Times are ms since the Unix epoch.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionStatus {
    /// The session id.
    pub session_id: SessionId,
    /// `clientId` from the handshake.
    pub client_id: String,
    /// `wallet` from the handshake, or null.
    pub wallet: Option<String>,
    /// `deviceInfo` from the handshake, or null.
    pub device_info: Option<serde_json::Map<String, serde_json::Value>>,
    /// Negotiated transport.
    pub transport: String,
    /// Granted lanes (same as in the handshake response).
    pub lanes: Vec<LaneGrant>,
    /// Handshake time, ms.
    pub created_at: u64,
    /// Last activity (handshake, frame received, socket closed), ms.
    pub last_activity: u64,
    /// When the session expires if nothing else happens, ms; while a socket is connected the
    /// session cannot expire and this is `now + ttl`.
    pub expires_at: u64,
    /// Sliding lifetime, s.
    pub ttl_seconds: u64,
    /// Whether a WebSocket is connected.
    pub connected: bool,
    /// Open SSE streams.
    pub sse_streams: usize,
    /// Current room, or null.
    pub room: Option<String>,
}

/// A relay recipient chosen under the lock (see [`Registry::route`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Target {
    id: SessionId,
    conn_id: u64,
    /// The recipient's negotiated encoding for the frame's lane.
    pub(crate) encoding: Encoding,
}

impl Target {
    /// The recipient session.
    pub(crate) fn id(&self) -> SessionId {
        self.id
    }
}

/// One encoding of a relayed payload: bytes and the dictionary version they use.
pub(crate) struct Variant<'a> {
    pub(crate) encoding: Encoding,
    pub(crate) bytes: std::borrow::Cow<'a, [u8]>,
    pub(crate) dict_version: u32,
}

/// Sessions and rooms. Only reachable through `AppState::registry`.
#[derive(Debug)]
pub(crate) struct Registry {
    sessions: HashMap<SessionId, Session>,
    /// Room name → members in join order.
    rooms: HashMap<String, Vec<SessionId>>,
    next_conn_id: u64,
    shutting_down: bool,
    dict: Dictionary,
    ttl: std::time::Duration,
    heartbeat_interval_ms: u64,
    heartbeat_timeout_ms: u64,
    queue_frames: usize,
    queue_bytes: usize,
    /// `--sse-history`, `--sse-history-bytes`.
    sse_limits: (usize, usize),
    /// The app version served in pages (`--app-version`, changed by `POST /api/admin/version`).
    app_version: String,
    /// `--reported-version`: what `/api/version` and the Control pushes say instead.
    reported_version: Option<String>,
    /// The authorities of music rooms ([`crate::music`]).
    pub(crate) music: MusicRooms,
    /// Room keys for sealing between peers ([`crate::room_key`]).
    pub(crate) room_keys: RoomKeys,
}

/// Outcome of [`Registry::attach`].
#[derive(Debug)]
pub(crate) enum Attach {
    /// The socket is now the session's; its welcome frame is queued.
    Attached {
        conn_id: u64,
        rx: OutboundRx,
        close: Arc<CloseSignal>,
        /// Multiplexed session: wakes its send task.
        notify: Option<Arc<Notify>>,
    },
    /// Unknown or expired session.
    NotFound,
    /// The server is shutting down.
    ShuttingDown,
}

pub(crate) fn error_msg(
    code: ErrorCode,
    error: impl Into<String>,
    lane: Option<u8>,
    seq: Option<u64>,
) -> Control {
    Control::Error {
        code,
        error: error.into(),
        lane,
        seq,
    }
}

impl Registry {
    /// The session if it exists and has not expired; an expired one is removed.
    fn live(&mut self, sid: SessionId, now: Instant) -> Option<&mut Session> {
        if self.sessions.get(&sid)?.expired(now, self.ttl) {
            self.leave_room(sid);
            self.sessions.remove(&sid);
            return None;
        }
        self.sessions.get_mut(&sid)
    }

    /// The session if `conn_id` is still its socket.
    fn conn_session(&mut self, sid: SessionId, conn_id: u64) -> Option<&mut Session> {
        self.sessions
            .get_mut(&sid)
            .filter(|s| s.conn.as_ref().is_some_and(|c| c.id == conn_id))
    }

    /// Queues a Control message on `sid`'s socket, if it has one. A full queue closes that
    /// socket with 1013: protocol messages are never dropped silently.
    fn send_control(&mut self, sid: SessionId, msg: &Control) -> bool {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return false;
        };
        let enc = s.encoding(Lane::Control).unwrap_or(Encoding::Msgpack);
        let recorded = match s.sse.as_mut() {
            Some(hub) => {
                hub.push_value(
                    Lane::Control,
                    None,
                    &serde_json::to_value(msg).unwrap_or_default(),
                );
                true
            }
            None => false,
        };
        if s.mux.is_some() {
            let frame = payload::control_frame(msg, enc, Some(&self.dict), 0);
            if mux_send(s, Lane::Control, frame) {
                return true;
            }
            if let Some(c) = &s.conn {
                if c.close.close(close::TRY_AGAIN_LATER, "outbound queue full") {
                    tracing::warn!(session = %sid, "control lane full; closing with 1013");
                }
            }
            return false;
        }
        let Some(c) = s.conn.as_mut() else {
            return recorded;
        };
        let frame = payload::control_frame(msg, enc, Some(&self.dict), c.control_seq);
        if c.out.try_push(frame) {
            c.control_seq += 1;
            true
        } else {
            if c.close.close(close::TRY_AGAIN_LATER, "outbound queue full") {
                tracing::warn!(session = %sid, "outbound queue full of control messages; closing with 1013");
            }
            false
        }
    }

    /// The session if socket `conn_id` may act for it: it is still its socket, or the session
    /// is multiplexed (its messages went through the session's `Mux`, which outlives sockets:
    /// one delivered just before a newer socket attached still counts).
    fn sender_session(&mut self, sid: SessionId, conn_id: u64) -> Option<&mut Session> {
        self.sessions.get_mut(&sid).filter(|s| {
            conn_id == HTTP_SENDER
                || s.mux.is_some()
                || s.conn.as_ref().is_some_and(|c| c.id == conn_id)
        })
    }

    /// Queues a Control message on socket `conn_id` of `sid`, if it is still that session's.
    pub(crate) fn reply(&mut self, sid: SessionId, conn_id: u64, msg: &Control) {
        if self.sender_session(sid, conn_id).is_some() {
            self.send_control(sid, msg);
        }
    }

    /// Answers a client's `ping {clientTime, rttMs?}` on `conn_id` with `pong {clientTime,
    /// serverTime}` (seed 001 heartbeat), feeding `rttMs` to its music room first (§12.3).
    pub(crate) fn answer_ping(
        &mut self,
        sid: SessionId,
        conn_id: u64,
        client_time: f64,
        rtt_ms: Option<f64>,
    ) {
        if let Some(rtt) = rtt_ms {
            self.music_rtt(sid, rtt);
        }
        self.reply(
            sid,
            conn_id,
            &Control::Pong {
                client_time,
                server_time: now_ms(),
            },
        );
    }

    /// Records activity on socket `conn_id`; `false` if that socket no longer owns the session.
    pub(crate) fn touch(&mut self, sid: SessionId, conn_id: u64, now: Instant) -> bool {
        match self.sender_session(sid, conn_id) {
            Some(s) => {
                s.touch(now);
                true
            }
            None => false,
        }
    }

    /// Takes `sid` out of its room, telling the other members (`peer-left`). Returns the room.
    fn leave_room(&mut self, sid: SessionId) -> Option<String> {
        let room = self.sessions.get_mut(&sid)?.room.take()?;
        let mut others = Vec::new();
        if let Some(members) = self.rooms.get_mut(&room) {
            members.retain(|m| *m != sid);
            others.clone_from(members);
            if members.is_empty() {
                self.rooms.remove(&room);
                self.room_keys.emptied(&room);
            }
        }
        for &other in &others {
            self.send_control(
                other,
                &Control::PeerLeft {
                    room: room.clone(),
                    session_id: sid,
                },
            );
        }
        // A music room whose controller left tells everyone the role is free.
        if let Some(state) = self.music.leave(&room, sid, others.len()) {
            for other in others {
                self.send_server_data(other, Lane::Sync, &state);
            }
        }
        Some(room)
    }

    /// `join {room}` from `sid` (already validated): leaves any other room (`left` to it,
    /// `peer-left` to the others there), joins, answers `joined` with all members and tells the
    /// others `peer-joined`. Joining the current room again only repeats `joined`.
    pub(crate) fn join(&mut self, sid: SessionId, room: String) {
        let Some(s) = self.sessions.get(&sid) else {
            return;
        };
        if s.room.as_deref() != Some(room.as_str()) {
            if let Some(old) = self.leave_room(sid) {
                self.send_control(sid, &Control::Left { room: old });
            }
            let members = self.rooms.entry(room.clone()).or_default();
            let others = members.clone();
            members.push(sid);
            if let Some(s) = self.sessions.get_mut(&sid) {
                s.room = Some(room.clone());
            }
            let members = self.rooms.get(&room).cloned().unwrap_or_default();
            self.send_control(
                sid,
                &Control::Joined {
                    room: room.clone(),
                    members,
                },
            );
            self.send_room_key(sid, &room);
            for other in others {
                self.send_control(
                    other,
                    &Control::PeerJoined {
                        room: room.clone(),
                        session_id: sid,
                    },
                );
            }
            // A music room's joiner gets its state at once.
            if let Some(snapshot) = self.music.join(&room, sid) {
                self.send_server_data(sid, Lane::Sync, &snapshot);
            }
        } else {
            let members = self.rooms.get(&room).cloned().unwrap_or_default();
            self.send_control(
                sid,
                &Control::Joined {
                    room: room.clone(),
                    members,
                },
            );
            self.send_room_key(sid, &room);
        }
    }

    /// Sends `sid` the `room-key` of `room` (right after `joined`; PROTOCOL.md §13.4).
    fn send_room_key(&mut self, sid: SessionId, room: &str) {
        if let Some(msg) = self.room_keys.join(room) {
            self.send_control(sid, &msg);
        }
    }

    /// `leave {room}` from `sid`: `left` to it and `peer-left` to the others, or a
    /// `not_in_room` error if `room` is not its current room.
    pub(crate) fn leave(&mut self, sid: SessionId, room: String, seq: u64) {
        let current = self.sessions.get(&sid).and_then(|s| s.room.as_deref());
        if current == Some(room.as_str()) {
            self.leave_room(sid);
            self.send_control(sid, &Control::Left { room });
        } else {
            let msg = format!("not in room {room:?}");
            self.send_control(
                sid,
                &error_msg(
                    ErrorCode::NotInRoom,
                    msg,
                    Some(Lane::Control.id()),
                    Some(seq),
                ),
            );
        }
    }

    /// Who receives Data frame `h` from `sid` (whose socket `conn_id` sent it), in this order
    /// of checks:
    /// - outer `Err`: `lane_not_negotiated` (the sender lacks the lane), or `None` when that
    ///   socket no longer owns the session;
    /// - inner `Err`: routing errors, reported only if the payload decodes: `unknown_target`
    ///   or `lane_not_negotiated` (for `to`), `not_in_room` (room relay).
    #[allow(clippy::type_complexity)]
    pub(crate) fn route(
        &mut self,
        sid: SessionId,
        conn_id: u64,
        h: &FrameHeader,
        now: Instant,
    ) -> Result<Result<Vec<Target>, WireError>, Option<WireError>> {
        let Some(sender) = self.sender_session(sid, conn_id) else {
            return Err(None);
        };
        sender.touch(now);
        if sender.encoding(h.lane).is_none() {
            return Err(Some(WireError::new(
                ErrorCode::LaneNotNegotiated,
                format!("lane {} was not negotiated by this session", h.lane),
            )));
        }
        let room = sender.room.clone();
        if let Some(to) = h.to {
            let Some(target) = self.live(to, now) else {
                return Ok(Err(WireError::new(
                    ErrorCode::UnknownTarget,
                    format!("session {to} is unknown"),
                )));
            };
            let conn_id = match (target.conn.as_ref(), target.mux.is_some()) {
                (Some(c), _) => c.id,
                (None, true) => DETACHED,
                (None, false) if target.sse.is_some() => SSE_ONLY,
                (None, false) => {
                    return Ok(Err(WireError::new(
                        ErrorCode::UnknownTarget,
                        format!("session {to} is not connected"),
                    )))
                }
            };
            let Some(encoding) = target.encoding(h.lane) else {
                return Ok(Err(WireError::new(
                    ErrorCode::LaneNotNegotiated,
                    format!("session {to} did not negotiate lane {}", h.lane),
                )));
            };
            return Ok(Ok(vec![Target {
                id: to,
                conn_id,
                encoding,
            }]));
        }
        let Some(room) = room else {
            return Ok(Err(WireError::new(
                ErrorCode::NotInRoom,
                "join a room first, or address the message with `to`",
            )));
        };
        let members = self.rooms.get(&room).map(Vec::as_slice).unwrap_or_default();
        let targets = members
            .iter()
            .filter(|&&m| m != sid)
            .filter_map(|m| {
                let s = self.sessions.get(m)?;
                let conn_id = match &s.conn {
                    Some(c) => c.id,
                    None if s.mux.is_some() => DETACHED,
                    None if s.sse.is_some() => SSE_ONLY,
                    None => return None,
                };
                Some(Target {
                    id: *m,
                    conn_id,
                    encoding: s.encoding(h.lane)?,
                })
            })
            .collect();
        Ok(Ok(targets))
    }

    /// Queues the relayed frame (lane `lane`, `from` = `sender`) for every target that still
    /// has the same socket, using the variant in its encoding and its own per-lane seq, and
    /// records it in the targets' SSE history. Returns the targets whose queue was full (the
    /// frame was not delivered to their socket; their history has it).
    pub(crate) fn deliver(
        &mut self,
        sender: SessionId,
        lane: Lane,
        targets: &[Target],
        variants: &[Variant<'_>],
    ) -> Vec<SessionId> {
        self.deliver_with(sender, lane, targets, variants, true)
    }

    /// [`Registry::deliver`] to the sockets only (`history: false`): the retry of a frame
    /// whose first delivery the targets' socket refused, while their SSE history already
    /// recorded it (PROTOCOL.md §14.6).
    pub(crate) fn deliver_with(
        &mut self,
        sender: SessionId,
        lane: Lane,
        targets: &[Target],
        variants: &[Variant<'_>],
        history: bool,
    ) -> Vec<SessionId> {
        let mut refused = Vec::new();
        for t in targets {
            let Some(v) = variants.iter().find(|v| v.encoding == t.encoding) else {
                continue;
            };
            let hub = self.sessions.get_mut(&t.id).and_then(|s| s.sse.as_mut());
            if let Some(hub) = hub.filter(|_| history) {
                record_sse(hub, &self.dict, sender, lane, variants);
            }
            let s = match self.sessions.get_mut(&t.id) {
                Some(s) if s.mux.is_some() && t.conn_id == DETACHED => s,
                _ => match self.conn_session(t.id, t.conn_id) {
                    Some(s) => s,
                    None => continue,
                },
            };
            if s.mux.is_some() {
                let mut h = FrameHeader::data(lane, v.encoding, 0, v.dict_version);
                h.from = Some(sender);
                if !mux_send(s, lane, h.encode(&v.bytes)) {
                    refused.push(t.id);
                }
                continue;
            }
            let Some(c) = s.conn.as_mut() else { continue };
            let seq = &mut c.data_seq[lane as usize - 1];
            let mut h = FrameHeader::data(lane, v.encoding, *seq, v.dict_version);
            h.from = Some(sender);
            if c.out.try_push(h.encode(&v.bytes)) {
                *seq += 1;
            } else {
                refused.push(t.id);
            }
        }
        refused
    }

    /// The room `sid` is in, if any.
    pub(crate) fn room_of(&self, sid: SessionId) -> Option<String> {
        self.sessions.get(&sid)?.room.clone()
    }

    /// The members of `room`, in join order.
    pub(crate) fn room_members(&self, room: &str) -> Vec<SessionId> {
        self.rooms.get(room).cloned().unwrap_or_default()
    }

    /// Queues a server-originated Data frame (no `from`) with `value` on `lane` for `sid`, in
    /// its encoding of the lane, if it has a socket and the lane. Like a Control message, it is
    /// never dropped silently: a full queue closes the socket with 1013.
    pub(crate) fn send_server_data(&mut self, sid: SessionId, lane: Lane, value: &Value) -> bool {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return false;
        };
        let Some(encoding) = s.encoding(lane) else {
            return false;
        };
        let recorded = match s.sse.as_mut() {
            Some(hub) => {
                hub.push_value(lane, None, value);
                true
            }
            None => false,
        };
        if s.conn.is_none() {
            return recorded;
        }
        let (bytes, dict_version) = match payload::encode(value, encoding, Some(&self.dict)) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(session = %sid, error = %e, "cannot encode a server message");
                return false;
            }
        };
        if s.mux.is_some() {
            let frame = FrameHeader::data(lane, encoding, 0, dict_version).encode(&bytes);
            if mux_send(s, lane, frame) {
                return true;
            }
            if let Some(c) = &s.conn {
                if c.close.close(close::TRY_AGAIN_LATER, "outbound queue full") {
                    tracing::warn!(session = %sid, "lane full of server messages; closing with 1013");
                }
            }
            return false;
        }
        let Some(c) = s.conn.as_mut() else {
            return false;
        };
        let seq = &mut c.data_seq[lane as usize - 1];
        let frame = FrameHeader::data(lane, encoding, *seq, dict_version).encode(&bytes);
        if c.out.try_push(frame) {
            *seq += 1;
            true
        } else {
            if c.close.close(close::TRY_AGAIN_LATER, "outbound queue full") {
                tracing::warn!(session = %sid, "outbound queue full of server messages; closing with 1013");
            }
            false
        }
    }

    /// One v2 frame from socket `conn_id` of multiplexed session `sid`: returns the complete
    /// messages it delivered as `(mux seq, §5 frame)`, in order. A fatal multiplexer error
    /// closes the socket with 1002. Empty if the socket is no longer the session's.
    pub(crate) fn mux_input(
        &mut self,
        sid: SessionId,
        conn_id: u64,
        bytes: &[u8],
    ) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        let Some(s) = self.conn_session(sid, conn_id) else {
            return out;
        };
        let (Some(m), Some(c)) = (s.mux.as_mut(), s.conn.as_ref()) else {
            return out;
        };
        m.handle_input(bytes, mono_ms());
        while let Some(ev) = m.poll_event() {
            match ev {
                MuxEvent::Message { seq, bytes, .. } => out.push((seq, bytes)),
                MuxEvent::Error(e) if e.is_fatal() => {
                    tracing::info!(session = %sid, error = %e, "multiplexer error; closing with 1002");
                    c.close
                        .close(close::PROTOCOL, "multiplexer protocol violation");
                }
                other => tracing::debug!(session = %sid, event = ?other, "multiplexer event"),
            }
        }
        c.notify.notify_one();
        out
    }

    /// What socket `conn_id` of multiplexed session `sid` should write now, and when to ask
    /// again (ms of [`mono_ms`]). `buffered`: bytes written but not yet on the wire (the
    /// caller awaits each write, so 0 unless a test delay line holds frames). `None` if the
    /// socket is no longer the session's.
    pub(crate) fn mux_pump(
        &mut self,
        sid: SessionId,
        conn_id: u64,
        buffered: usize,
    ) -> Option<(Vec<Bytes>, Option<u64>)> {
        let s = self.conn_session(sid, conn_id)?;
        let m = s.mux.as_mut()?;
        let now = mono_ms();
        if m.poll_timeout().is_some_and(|t| t <= now) {
            m.handle_timeout(now);
        }
        m.handle_transport_buffered(buffered);
        let mut frames = Vec::new();
        while let Some(f) = m.poll_transmit() {
            frames.push(Bytes::from(f));
        }
        while m.poll_event().is_some() {}
        Some((frames, m.poll_timeout()))
    }

    /// The granted lanes of a live session.
    pub(crate) fn lanes_of(
        &mut self,
        sid: SessionId,
        now: Instant,
    ) -> Option<Vec<(Lane, Encoding)>> {
        Some(self.live(sid, now)?.lanes.clone())
    }

    /// The `welcome` Control message for a new connection of `sid`.
    pub(crate) fn welcome(&self, sid: SessionId) -> Control {
        Control::Welcome {
            session_id: sid,
            server_time: now_ms(),
            heartbeat_interval_ms: self.heartbeat_interval_ms,
            heartbeat_timeout_ms: self.heartbeat_timeout_ms,
            app_version: Some(self.reported_version().to_owned()),
        }
    }

    /// The ledger's verdict on `POST` number `seq` with `fingerprint` on `lane` of live
    /// session `sid` (PROTOCOL.md §14.6); `None` when the session is gone. Touches the session.
    pub(crate) fn post_check(
        &mut self,
        sid: SessionId,
        lane: Lane,
        seq: u64,
        fingerprint: u64,
        now: Instant,
    ) -> Option<SeqCheck<PostOutcome>> {
        let s = self.live(sid, now)?;
        s.touch(now);
        Some(s.posts.check(lane, seq, fingerprint))
    }

    /// Records the outcome of `POST` number `seq` on `lane` of `sid` (after
    /// [`SeqCheck::Fresh`] or [`SeqCheck::Repeat`]).
    pub(crate) fn post_finish(
        &mut self,
        sid: SessionId,
        lane: Lane,
        seq: u64,
        outcome: PostOutcome,
    ) {
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.posts.finish(lane, seq, outcome);
        }
    }

    /// The SSE hub of a live session, if it has one.
    pub(crate) fn sse_hub(&mut self, sid: SessionId, now: Instant) -> Option<&mut SseHub> {
        self.live(sid, now)?.sse.as_mut()
    }

    /// The SSE hub of a live session, created (empty) if it has none yet.
    pub(crate) fn sse_hub_or_create(
        &mut self,
        sid: SessionId,
        now: Instant,
    ) -> Option<&mut SseHub> {
        let (events, bytes) = self.sse_limits;
        let s = self.live(sid, now)?;
        s.touch(now);
        Some(s.sse.get_or_insert_with(|| SseHub::new(events, bytes)))
    }

    /// An SSE stream of `sid` ended: one fewer open stream; the TTL counts from now.
    pub(crate) fn sse_stream_closed(&mut self, sid: SessionId, now: Instant) {
        if let Some(s) = self.sessions.get_mut(&sid) {
            if let Some(hub) = s.sse.as_mut() {
                hub.streams = hub.streams.saturating_sub(1);
            }
            s.touch(now);
        }
    }

    /// Ends the SSE streams of `only` (or of every session); returns how many were open.
    pub(crate) fn sse_close_streams(&mut self, only: Option<SessionId>) -> usize {
        self.sessions
            .iter_mut()
            .filter(|(id, _)| only.map_or(true, |o| o == **id))
            .filter_map(|(_, s)| s.sse.as_mut())
            .map(SseHub::close_streams)
            .sum()
    }

    /// What `GET /api/version`, `welcome` and the `version` push say.
    fn reported_version(&self) -> &str {
        self.reported_version
            .as_deref()
            .unwrap_or(&self.app_version)
    }

    /// Removes sessions whose TTL ran out; returns how many.
    fn sweep(&mut self, now: Instant) -> usize {
        let ttl = self.ttl;
        let before = self.sessions.len();
        // Multiplexed sessions keep their room while detached: they leave it when they expire.
        let gone: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.expired(now, ttl) && s.room.is_some())
            .map(|(id, _)| *id)
            .collect();
        for sid in gone {
            self.leave_room(sid);
        }
        self.sessions.retain(|_, s| !s.expired(now, ttl));
        self.music.sweep(now);
        self.room_keys.sweep(now);
        before - self.sessions.len()
    }
}

/// Records a relayed message in an SSE history as JSON: the json variant if there is one,
/// else the first variant transcoded.
fn record_sse(
    hub: &mut SseHub,
    dict: &Dictionary,
    sender: SessionId,
    lane: Lane,
    variants: &[Variant<'_>],
) {
    if let Some(v) = variants.iter().find(|v| v.encoding == Encoding::Json) {
        if let Ok(text) = std::str::from_utf8(&v.bytes) {
            return hub.push_json(lane, Some(sender), text);
        }
    }
    let Some(v) = variants.first() else { return };
    let h = FrameHeader::data(lane, v.encoding, 0, v.dict_version);
    match payload::decode(&h, &v.bytes, Some(dict)) {
        Ok(value) => hub.push_value(lane, Some(sender), &value),
        Err(e) => tracing::warn!(error = %e, "cannot record a relayed message for SSE"),
    }
}

/// Shared state of one server: configuration, dictionary, sessions and rooms.
#[derive(Debug)]
pub struct AppState {
    config: Config,
    dict: Dictionary,
    dict_wire: DictionaryWire,
    caps: ServerCapabilities,
    registry: Mutex<Registry>,
    /// The seed 001 signaling server ([`crate::signaling`]).
    signaling: crate::signaling::Hub,
    shutdown: watch::Sender<bool>,
    sockets: watch::Sender<usize>,
}

impl AppState {
    /// State for a server configured by `config`, with dictionary v2 and the default
    /// capabilities (websocket, sse; msgpack, json).
    pub fn new(config: Config) -> Arc<AppState> {
        let dict = Dictionary::current();
        let registry = Registry {
            sessions: HashMap::new(),
            rooms: HashMap::new(),
            next_conn_id: 1,
            shutting_down: false,
            dict: dict.clone(),
            ttl: config.ttl(),
            heartbeat_interval_ms: config.heartbeat_interval_ms,
            heartbeat_timeout_ms: config.heartbeat_timeout_ms,
            queue_frames: config.queue_frames,
            queue_bytes: config.queue_bytes,
            sse_limits: (config.sse_history, config.sse_history_bytes),
            app_version: config.app_version.clone(),
            reported_version: config.reported_version.clone(),
            music: MusicRooms::new(config.ttl()),
            room_keys: RoomKeys::new(config.ttl()),
        };
        Arc::new(AppState {
            dict_wire: dict.to_wire(),
            dict,
            caps: ServerCapabilities::default(),
            registry: Mutex::new(registry),
            signaling: crate::signaling::Hub::new(),
            shutdown: watch::channel(false).0,
            sockets: watch::channel(0).0,
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The seed 001 signaling server's state.
    pub(crate) fn signaling(&self) -> &crate::signaling::Hub {
        &self.signaling
    }

    /// The app version served in pages (`<meta name="app-version">`).
    pub fn app_version(&self) -> String {
        self.registry().app_version.clone()
    }

    /// The version `GET /api/version` answers: `--reported-version` if set, else
    /// [`AppState::app_version`].
    pub fn reported_version(&self) -> String {
        self.registry().reported_version().to_owned()
    }

    /// Changes the app version at runtime and queues Control `version` (the reported version)
    /// on every open socket and SSE history; returns how many sessions. Sockets attached later get it in `welcome`.
    pub fn set_app_version(&self, version: String) -> usize {
        let mut reg = self.registry();
        reg.app_version = version;
        let msg = Control::Version {
            version: reg.reported_version().to_owned(),
        };
        let connected: Vec<SessionId> = reg
            .sessions
            .iter()
            .filter(|(_, s)| s.conn.is_some() || s.sse.is_some())
            .map(|(id, _)| *id)
            .collect();
        connected
            .into_iter()
            .filter(|&sid| reg.send_control(sid, &msg))
            .count()
    }

    /// The negotiated dictionary (always `Dictionary::current()`, v2).
    pub fn dict(&self) -> &Dictionary {
        &self.dict
    }

    /// The dictionary in its handshake JSON shape.
    pub fn dict_wire(&self) -> &DictionaryWire {
        &self.dict_wire
    }

    /// What this server supports.
    pub fn capabilities(&self) -> &ServerCapabilities {
        &self.caps
    }

    /// Locks the registry. A poisoned lock is taken over: every registry mutation keeps the
    /// maps consistent on its own.
    pub(crate) fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Creates a session from a successful negotiation; returns its id.
    pub(crate) fn create_session(
        &self,
        client_id: String,
        wallet: Option<String>,
        device_info: Option<serde_json::Map<String, serde_json::Value>>,
        transport: &'static str,
        lanes: Vec<(Lane, Encoding)>,
        want_mux: bool,
    ) -> (SessionId, bool) {
        let now = Instant::now();
        let created = now_ms();
        let mux = want_mux.then(|| self.new_mux(&lanes)).flatten();
        let granted = mux.is_some();
        let mut reg = self.registry();
        let sid = loop {
            // A session id is a bearer token for its WebSocket: use the OS CSPRNG.
            let mut bytes = [0u8; 16];
            getrandom::fill(&mut bytes).expect("the OS random number generator is available");
            let sid = SessionId::from_random_bytes(bytes);
            if !reg.sessions.contains_key(&sid) {
                break sid;
            }
        };
        reg.sessions.insert(
            sid,
            Session {
                client_id,
                wallet,
                device_info,
                transport,
                lanes,
                created_at_ms: created,
                last_activity: now,
                last_activity_ms: created,
                room: None,
                conn: None,
                mux,
                sse: (transport == TRANSPORT_SSE)
                    .then(|| SseHub::new(self.config.sse_history, self.config.sse_history_bytes)),
                posts: PostLedger::new(),
            },
        );
        (sid, granted)
    }

    /// A multiplexer for a session's lanes: messages up to `--max-frame-bytes`, a per-session
    /// reassembly budget of 4 such messages, the transport budget of the send task's batch.
    fn new_mux(&self, lanes: &[(Lane, Encoding)]) -> Option<Mux> {
        let ids: Vec<Lane> = lanes.iter().map(|l| l.0).collect();
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).ok()?;
        let mut cfg = MuxConfig::for_lanes(&ids, u64::from_le_bytes(seed));
        let max = self.config.max_frame_bytes;
        cfg.max_message_bytes = max;
        cfg.max_frame_bytes = cfg.max_frame_bytes.max(cfg.chunk_bytes);
        cfg.max_reassembly_bytes = max.saturating_mul(4);
        cfg.transport_high_water_bytes = Some(256 << 10);
        match Mux::new(cfg) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(error = %e, "multiplexer not granted");
                None
            }
        }
    }

    /// The status of a live session.
    pub fn status(&self, sid: SessionId) -> Option<SessionStatus> {
        let now = Instant::now();
        let mut reg = self.registry();
        let ttl_seconds = self.config.session_ttl_s;
        let s = reg.live(sid, now)?;
        let connected = s.conn.is_some();
        let ttl_ms = ttl_seconds.saturating_mul(1000);
        let expires_at = if connected {
            now_ms()
        } else {
            s.last_activity_ms
        }
        .saturating_add(ttl_ms);
        Some(SessionStatus {
            session_id: sid,
            client_id: s.client_id.clone(),
            wallet: s.wallet.clone(),
            device_info: s.device_info.clone(),
            transport: s.transport.to_owned(),
            lanes: lane_grants(sid, s.transport, &s.lanes),
            created_at: s.created_at_ms,
            last_activity: s.last_activity_ms,
            expires_at,
            ttl_seconds,
            connected,
            sse_streams: s.sse.as_ref().map_or(0, |h| h.streams),
            room: s.room.clone(),
        })
    }

    /// Deletes a live session: it leaves its room (peers get `peer-left`) and its socket is
    /// closed with 4404. `false` if it was unknown or expired.
    pub fn delete_session(&self, sid: SessionId) -> bool {
        let mut reg = self.registry();
        if reg.live(sid, Instant::now()).is_none() {
            return false;
        }
        reg.leave_room(sid);
        if let Some(Session { conn: Some(c), .. }) = reg.sessions.remove(&sid) {
            c.close.close(close::SESSION_NOT_FOUND, "session deleted");
        }
        true
    }

    /// Makes a new socket the session's: an older socket is closed with 4409 and the session
    /// leaves its room; the `welcome` frame is queued first on the new socket.
    pub(crate) fn attach(&self, sid: SessionId) -> Attach {
        let now = Instant::now();
        let mut reg = self.registry();
        if reg.shutting_down {
            return Attach::ShuttingDown;
        }
        let Some(s) = reg.live(sid, now) else {
            return Attach::NotFound;
        };
        if let Some(old) = s.conn.take() {
            old.close.close(close::REPLACED, "replaced");
        }
        s.touch(now);
        // Multiplexed and SSE sessions keep their room across reconnects.
        if s.mux.is_none() && s.sse.is_none() {
            reg.leave_room(sid);
        }
        let conn_id = reg.next_conn_id;
        reg.next_conn_id += 1;
        let (out, rx) = outbound(reg.queue_frames, reg.queue_bytes);
        let close = Arc::new(CloseSignal::new());
        let notify = Arc::new(Notify::new());
        let welcome = reg.welcome(sid);
        if let Some(s) = reg.sessions.get_mut(&sid) {
            s.conn = Some(Conn {
                id: conn_id,
                out,
                close: close.clone(),
                control_seq: 1,
                data_seq: [1; 8],
                notify: notify.clone(),
            });
            if let Some(m) = s.mux.as_mut() {
                m.set_reliable_overflow(ReliableOverflow::Backpressure);
                m.handle_transport_resumed(mono_ms());
            }
        }
        let mux = reg.sessions.get(&sid).is_some_and(|s| s.mux.is_some());
        // With the multiplexer: the first Control message after the resume.
        reg.send_control(sid, &welcome);
        Attach::Attached {
            conn_id,
            rx,
            close,
            notify: mux.then_some(notify),
        }
    }

    /// Socket `conn_id` of `sid` ended: if it still owned the session, the session leaves its
    /// room (peers get `peer-left`) and its TTL starts counting from now.
    pub(crate) fn detach(&self, sid: SessionId, conn_id: u64) {
        let now = Instant::now();
        let mut reg = self.registry();
        let Some(s) = reg.conn_session(sid, conn_id) else {
            return;
        };
        s.conn = None;
        s.touch(now);
        match s.mux.as_mut() {
            Some(m) => {
                m.handle_transport_lost();
                m.set_reliable_overflow(ReliableOverflow::ForgetOldest);
            }
            None if s.sse.is_some() => {}
            None => {
                reg.leave_room(sid);
            }
        }
    }

    /// Removes expired sessions; returns how many.
    pub fn sweep(&self) -> usize {
        self.registry().sweep(Instant::now())
    }

    /// Starts shutting down: refuses new sockets and asks every socket to close with 1001.
    pub fn begin_shutdown(&self) {
        let mut reg = self.registry();
        reg.shutting_down = true;
        for s in reg.sessions.values() {
            if let Some(c) = &s.conn {
                c.close.close(close::GOING_AWAY, "server shutting down");
            }
        }
        drop(reg);
        self.shutdown.send_replace(true);
    }

    /// Resolves once [`AppState::begin_shutdown`] was called.
    pub async fn shutdown_started(&self) {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Counts an open WebSocket until the guard is dropped.
    pub(crate) fn socket_guard(self: &Arc<Self>) -> SocketGuard {
        self.sockets.send_modify(|n| *n += 1);
        SocketGuard(self.clone())
    }

    /// Resolves once no WebSocket is open.
    pub async fn sockets_closed(&self) {
        let mut rx = self.sockets.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

/// Keeps [`AppState`]'s open-socket count while a WebSocket task runs.
pub(crate) struct SocketGuard(Arc<AppState>);

impl Drop for SocketGuard {
    fn drop(&mut self) {
        self.0.sockets.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Spawns the task that removes expired sessions every [`Config::sweep_period`].
pub fn spawn_sweeper(state: Arc<AppState>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(state.config.sweep_period());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let removed = state.sweep();
            if removed > 0 {
                tracing::debug!(removed, "expired sessions removed");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbound_queue_is_bounded_by_frames_and_bytes() {
        let (out, _rx) = outbound(2, 10);
        assert!(out.try_push(vec![0; 30]), "an empty queue takes any frame");
        assert!(!out.try_push(vec![0; 1]), "over the byte budget");
        let (out, _rx) = outbound(2, 1000);
        assert!(out.try_push(vec![0; 1]));
        assert!(out.try_push(vec![0; 1]));
        assert!(!out.try_push(vec![0; 1]), "over the frame limit");
    }

    #[tokio::test]
    async fn receiving_frees_the_budget() {
        let (out, mut rx) = outbound(4, 10);
        assert!(out.try_push(vec![0; 8]));
        assert!(!out.try_push(vec![0; 8]));
        assert_eq!(rx.recv().await.unwrap().len(), 8);
        assert!(out.try_push(vec![0; 8]));
    }

    #[test]
    fn close_signal_keeps_the_first_reason() {
        let c = CloseSignal::new();
        assert!(c.close(4409, "replaced"));
        assert!(!c.close(1001, "later"));
        assert_eq!(c.reason().unwrap().code, 4409);
    }
}
