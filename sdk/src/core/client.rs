//! The client side of a session, sans-IO: handshake result in, frames/actions/events out.
//!
//! Implements seed 001 "Connection Resilience" (reconnect with exponential backoff 1, 2, 4, 8,
//! 16 s plus jitter; heartbeats) over the frames of [`crate::core::frame`].
//!
//! # Drive contract ([`crate::core::drive`])
//! The driver owns the clock, the HTTP client and the socket. Time is a monotonic `now`
//! ([`Millis`], e.g. `performance.now()`), the last argument of every input that needs it,
//! never read by this module.
//! 1. Perform the handshake (HTTP), then [`Client::new`].
//! 2. After **every** call below, drain [`Client::poll_output`] until it returns
//!    [`Output::Timeout`]:
//!    - [`Output::Transmit`]: send the bytes as one binary message on the open socket;
//!    - [`Output::Action`]: do it ([`Action::OpenSocket`], [`Action::CloseSocket`],
//!      [`Action::Handshake`]);
//!    - [`Output::Event`]: hand it to the application;
//!    - [`Output::Timeout`]: call [`Client::handle_timeout`] at that time ([`Millis::NEVER`]:
//!      no timer).
//! 3. Report socket life: [`Client::handle_socket_open`], [`Client::handle_frame`],
//!    [`Client::handle_socket_closed`]. After [`Action::CloseSocket`] the driver must detach
//!    the old socket's handlers, so events of a replaced socket never arrive here.
//! 4. Report handshake outcomes after [`Action::Handshake`]: [`Client::handle_handshake`],
//!    [`Client::handle_handshake_failed`] (retried with backoff), or
//!    [`Client::handle_handshake_refused`] (closes: the same request can never succeed).
//! 5. With the multiplexer (the server granted [`FEATURE_MUX`], PROTOCOL.md §11), also report
//!    the socket's `bufferedAmount` with [`Client::handle_transport_buffered`] before every
//!    drain: the multiplexer writes while the socket's buffer stays under
//!    [`ClientConfig::transport_high_water_bytes`], and otherwise asks for a timeout to
//!    re-read it.
//! 6. Report the clock with [`Client::handle_clock`] before calling a mutator: paced lanes
//!    (below) release their messages by it ([`Client::poll_output`] advances it too).
//!
//! # Rate limits (issue 11, PROTOCOL.md §15)
//! The handshake response's `limits.rates` ([`crate::core::handshake::LaneRates`]) gives the
//! server's per-session quotas; each lane with one is paced by a GCRA
//! ([`crate::core::rate::Gcra::pacing`], a margin below the quota): messages past the burst
//! wait in the lane's queue (`queueDepth`, then `backpressure` / dropping the oldest as when
//! disconnected) and leave when the pacer allows; [`Output::Timeout`] includes that time.
//! A Control `error` `rate_limited` about `(lane, seq)` holds the lane for `retryAfterMs`
//! and paces it from then on (a lane without a quota learns one message per `retryAfterMs`);
//! a reliable lane's refused message, kept since it was sent ([`RETAIN_MSGS`],
//! [`RETAIN_BYTES`]), goes again before the lane's waiting messages; an unreliable one is
//! lost; either way [`Event::Error`] says which (`dropped`). Messages the server accepted
//! between a refused one and its re-sending arrive before it: an honest client paced by the
//! advertised quota is not refused, so this only happens against a server stricter than it
//! advertises. Close code [`CLOSE_RATE_LIMITED`] reconnects after
//! [`RATE_LIMITED_RECONNECT_MS`]; a `429` re-handshake after its `Retry-After`
//! ([`Client::handle_handshake_rate_limited`]). A refused `join` (e.g. `room_full`) is
//! [`Event::JoinFailed`].
//!
//! # Multiplexer (feature flag `mux`, offered by default by the browser SDK)
//! When the handshake response grants [`FEATURE_MUX`], every message, Control included,
//! travels through one [`Mux`] (v2 frames, §11): today's §5 frame with `seq` 0 is the
//! multiplexer message, and the multiplexer's per-lane sequence number is the one reported.
//! The `Mux` lives as long as the `Client`, across sockets and re-handshakes, so messages
//! sent while disconnected are queued (with backpressure) and sent again after a reconnect;
//! a restarted server shows up as [`Event::Discontinuity`] per reliable lane. Frames whose
//! first byte is below `0x10` are still §5 frames (the server refuses an unknown session
//! that way).

use crate::core::control::{validate_room_name, Control, PresenceStatus};
use crate::core::dictionary::Dictionary;
use crate::core::drive::Millis;
use crate::core::error::{ErrorCode, Fault};
use crate::core::frame::{FrameHeader, FrameKind, SessionId, DEFAULT_MAX_FRAME_BYTES};
use crate::core::handshake::{HandshakeResponse, Secret, FEATURE_MUX};
use crate::core::lane::{Encoding, Lane};
use crate::core::mux::{
    Discontinuity, DiscontinuityReason, Mux, MuxConfig, MuxError, MuxEvent, MuxOutput,
};
use crate::core::payload::{self, PayloadError};
use crate::core::rate::Gcra;
use serde_json::Value;
use std::collections::VecDeque;

/// Seed 001 `RECONNECT_DELAYS`, ms.
pub const DEFAULT_BACKOFF_MS: [u64; 5] = [1000, 2000, 4000, 8000, 16000];

/// WebSocket close code the server uses when the session is unknown or expired
/// ([`crate::core::close::SESSION_NOT_FOUND`]).
pub use crate::core::close::SESSION_NOT_FOUND as CLOSE_SESSION_NOT_FOUND;

/// WebSocket close code the server uses for a socket opened without a valid ticket
/// ([`crate::core::close::UNAUTHORIZED`]). The client starts a new session, as after
/// [`CLOSE_SESSION_NOT_FOUND`], and emits [`Event::Error`] `unauthorized`.
pub use crate::core::close::UNAUTHORIZED as CLOSE_UNAUTHORIZED;

/// WebSocket close code the server uses for a client that kept sending past its rate limit
/// ([`crate::core::close::RATE_LIMITED`]).
pub use crate::core::close::RATE_LIMITED as CLOSE_RATE_LIMITED;

/// After close code [`CLOSE_RATE_LIMITED`], the client reconnects no sooner than this, ms
/// (the server counts strikes over 10 s).
pub const RATE_LIMITED_RECONNECT_MS: u64 = 10_000;

/// `retryAfterMs` assumed for a `rate_limited` refusal that does not carry one, ms.
pub const DEFAULT_RETRY_AFTER_MS: u64 = 1_000;

/// Longest `retryAfterMs` the client honours, ms (a longer one is cut to this).
pub const MAX_RETRY_AFTER_MS: u64 = 60_000;

/// Sent reliable messages kept per lane to send again if the server refuses them with
/// `rate_limited` (the newest this many)...
pub const RETAIN_MSGS: usize = 64;
/// ...and at most this many bytes of them per lane (the newest message is always kept).
pub const RETAIN_BYTES: usize = 1 << 20;

/// Client tuning. Times in ms.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Ping period, ms; `None`: the server's `heartbeat.intervalMs`.
    pub heartbeat_interval_ms: Option<u64>,
    /// Silence (no frame received) after which the connection is presumed dead, ms; `None`:
    /// the server's `heartbeat.timeoutMs`.
    pub heartbeat_timeout_ms: Option<u64>,
    /// Reconnect after an unexpected close (only once the first connection opened).
    pub reconnect: bool,
    /// Backoff delays, ms; the last repeats.
    pub backoff_ms: Vec<u64>,
    /// Jitter as a fraction of the delay: each delay is scaled by a uniform factor in
    /// `[1 - jitter, 1 + jitter]`.
    pub jitter: f64,
    /// Largest frame sent or accepted, bytes.
    pub max_frame_bytes: usize,
    /// Seed for the jitter generator and the multiplexer's epochs (the driver passes a
    /// random one).
    pub seed: u64,
    /// Multiplexer only: write to the socket while its `bufferedAmount` stays within this
    /// many bytes (or is 0). Default 256 KiB, about one re-check interval (5 ms) of
    /// WebSocket throughput, so the socket is never starved; `None`: no limit.
    pub transport_high_water_bytes: Option<usize>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            heartbeat_interval_ms: None,
            heartbeat_timeout_ms: None,
            reconnect: true,
            backoff_ms: DEFAULT_BACKOFF_MS.to_vec(),
            jitter: 0.2,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            seed: 0x5eed,
            transport_high_water_bytes: Some(256 << 10),
        }
    }
}

/// Connection state as the application sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionState {
    /// Opening the first socket.
    Connecting,
    /// Socket open; messages flow.
    Open,
    /// Lost the socket; waiting to retry (messages queue).
    Reconnecting,
    /// Closed by the app, or the first connection failed; terminal.
    Closed,
}

impl ConnectionState {
    /// `"connecting"`, `"open"`, `"reconnecting"` or `"closed"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionState::Connecting => "connecting",
            ConnectionState::Open => "open",
            ConnectionState::Reconnecting => "reconnecting",
            ConnectionState::Closed => "closed",
        }
    }
}

/// Something the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Open a WebSocket to this path (relative to the server origin), binary type arraybuffer.
    OpenSocket {
        /// e.g. `/api/protocol/v2/session/<sid>/ws`.
        path: String,
    },
    /// Close the current socket (normal closure) and detach its handlers.
    CloseSocket,
    /// The session is gone: POST the same handshake request again and report the result.
    Handshake,
}

/// A message received on a lane.
#[derive(Clone, Debug, PartialEq)]
pub struct Inbound {
    /// The lane.
    pub lane: Lane,
    /// Sending session, when relayed from another session.
    pub from: Option<SessionId>,
    /// Sender-side sequence number as assigned by the server for this receiver.
    pub seq: u64,
    /// The decoded value.
    pub value: Value,
}

/// Something the application should hear about.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The connection state changed; `reason` says why for drops and closes.
    StateChanged {
        /// New state.
        state: ConnectionState,
        /// Why, when known.
        reason: Option<String>,
    },
    /// A lane message arrived.
    Message(Inbound),
    /// The server confirmed a room join.
    RoomJoined {
        /// Room name.
        room: String,
        /// Member session ids, this one included.
        members: Vec<SessionId>,
    },
    /// The server confirmed leaving a room.
    RoomLeft {
        /// Room name.
        room: String,
    },
    /// Another session joined the room.
    PeerJoined {
        /// Room name.
        room: String,
        /// The new member.
        session_id: SessionId,
    },
    /// Another session left the room.
    PeerLeft {
        /// Room name.
        room: String,
        /// The member that left.
        session_id: SessionId,
    },
    /// A room member's presence (Control `presence`, PROTOCOL.md §6.2; seed 001
    /// `presence:update {status, lastSeen}`): only on sessions granted the `presence` feature.
    Presence {
        /// Room name.
        room: String,
        /// The member (this session included: the joiner hears its own `online`).
        session_id: SessionId,
        /// `online` (a member) or `offline` (it left).
        status: PresenceStatus,
        /// When it joined the room, server wall clock, ms since the Unix epoch.
        since_ms: u64,
        /// When the server last heard from it (for `offline`: when it left), server wall
        /// clock, ms since the Unix epoch.
        last_seen_ms: u64,
    },
    /// A `pong`: the answer to a heartbeat or to a [`Client::ping`] probe, with the server's
    /// clock (what [`crate::core::sync::clock::ClockSync::handle_response`] needs).
    Pong {
        /// Round-trip time, ms: the receive time (the driver's `now`) − `client_time`.
        rtt_ms: f64,
        /// The `clientTime` the ping carried, ms of the driver's clock, as sent.
        client_time: f64,
        /// Server wall clock when it answered, ms since the Unix epoch.
        server_time: u64,
    },
    /// A new session replaced the old one (the old expired, or the server restarted).
    SessionChanged {
        /// The previous session.
        old: SessionId,
        /// The new session.
        new: SessionId,
    },
    /// The server's app version, from its `welcome` (every connection) or a `version` push
    /// (a deploy while connected): the app may be stale (PWA cache protection).
    Version {
        /// The version `GET /api/version` answers.
        version: String,
    },
    /// The server handed out the room's key for sealing music control between peers
    /// (Control `room-key`, PROTOCOL.md §13.4), right after a join.
    RoomKey {
        /// Room name.
        room: String,
        /// Key id (the seal envelope's key id).
        key_id: u32,
        /// 32 bytes, base64url without padding; see
        /// [`crate::core::p2p::seal::RoomKey::from_base64url`].
        key: String,
    },
    /// A reliable lane skipped messages that will never arrive (the server restarted or
    /// forgot them); delivery continues in order after it. Without the multiplexer: a gap in
    /// a lane's v1 Data seqs on one WebSocket (§5; `history-lost`, epochs 0).
    Discontinuity(Discontinuity),
    /// A lane that refused a message with `backpressure` has room again (multiplexer, or a
    /// paced lane).
    Drain {
        /// The lane.
        lane: Lane,
    },
    /// Queued messages of an unreliable lane were dropped for newer ones (its queue was full:
    /// multiplexer, paced lane, or §5 framing while disconnected).
    Dropped {
        /// The lane.
        lane: Lane,
        /// Messages dropped.
        count: u64,
    },
    /// The server refused something, or an incoming frame could not be decoded.
    ///
    /// `rate_limited` (issue 11): the server refused the message `(lane, seq)` of this client
    /// for its rate limit. The client holds the lane for `retry_after_ms` and then sends a
    /// reliable lane's message again (`dropped: Some(false)`); an unreliable lane's message,
    /// a heartbeat `ping`, or one no longer kept ([`RETAIN_MSGS`], [`RETAIN_BYTES`]) is lost
    /// (`dropped: Some(true)`). Also emitted, without lane, when the server closed the socket
    /// with [`CLOSE_RATE_LIMITED`].
    Error {
        /// Machine-readable code.
        code: ErrorCode,
        /// Description.
        message: String,
        /// Lane concerned, if any.
        lane: Option<Lane>,
        /// Sequence number concerned, if any.
        seq: Option<u64>,
        /// `rate_limited`: how long the lane (or, after close code 4429, the connection)
        /// waits before sending again, ms.
        retry_after_ms: Option<u64>,
        /// `rate_limited` with a lane: whether the refused message is lost (`true`) or will
        /// be sent again after `retry_after_ms` (`false`).
        dropped: Option<bool>,
    },
    /// The server refused this client's `join` of `room` (e.g. `room_full`,
    /// `too_many_requests`, `invalid_argument`): the client is not in the room and will not
    /// rejoin it. Follows the [`Event::Error`] of the refusal.
    JoinFailed {
        /// The room.
        room: String,
        /// The server's code.
        code: ErrorCode,
        /// The server's description.
        message: String,
    },
}

/// One output of [`Client::poll_output`].
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Send these bytes as one binary WebSocket message.
    Transmit(Vec<u8>),
    /// Do this.
    Action(Action),
    /// Tell the application.
    Event(Event),
    /// Nothing more now; call [`Client::handle_timeout`] at this time ([`Millis::NEVER`]:
    /// no timer).
    Timeout(Millis),
}

/// Why [`Client::send`] or [`Client::join_room`] refused (the caller's mistake or state).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The lane was not granted in the handshake.
    #[error("lane {0} was not negotiated for this session")]
    LaneNotNegotiated(Lane),
    /// The encoded message exceeds the frame limit.
    #[error("message of {size} bytes exceeds the frame limit of {limit} bytes")]
    TooLarge {
        /// Frame size, bytes.
        size: usize,
        /// Limit, bytes.
        limit: usize,
    },
    /// A reliable lane's queue is full (while disconnected; with the multiplexer, also while
    /// open). Wait for the connection to open or, with the multiplexer, for [`Event::Drain`].
    #[error("lane {lane} queue is full ({depth} messages); wait for room")]
    Backpressure {
        /// The lane.
        lane: Lane,
        /// Its queue depth.
        depth: u16,
    },
    /// The client was closed.
    #[error("client is closed")]
    Closed,
    /// A bad argument (e.g. an invalid room name).
    #[error("{0}")]
    InvalidArgument(String),
    /// The handshake response is unusable.
    #[error("handshake response is invalid: {0}")]
    BadHandshake(String),
    /// Encoding refused (protobuf lane).
    #[error(transparent)]
    Payload(#[from] PayloadError),
}

impl ClientError {
    /// The machine-readable code (the JS error's `.code`).
    pub fn code(&self) -> ErrorCode {
        match self {
            ClientError::LaneNotNegotiated(_) => ErrorCode::LaneNotNegotiated,
            ClientError::TooLarge { .. } => ErrorCode::FrameTooLarge,
            ClientError::Backpressure { .. } => ErrorCode::Backpressure,
            ClientError::Closed => ErrorCode::Closed,
            ClientError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            ClientError::BadHandshake(_) => ErrorCode::BadRequest,
            ClientError::Payload(p) => p.code(),
        }
    }

    /// Who is at fault ([`Fault`]): the caller for every variant but backpressure
    /// ([`Fault::Transient`]: retry after `drain`) and an unusable handshake response
    /// ([`Fault::Decode`]: the server's bytes).
    pub fn fault(&self) -> Fault {
        match self {
            ClientError::Backpressure { .. } => Fault::Transient,
            ClientError::BadHandshake(_) => Fault::Decode,
            _ => Fault::ApiMisuse,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    /// Send the next ping.
    Heartbeat = 0,
    /// No frame received for the heartbeat timeout: presume the socket dead.
    Idle = 1,
    /// Backoff elapsed: retry.
    Reconnect = 2,
}

const TIMERS: [Timer; 3] = [Timer::Heartbeat, Timer::Idle, Timer::Reconnect];

struct Session {
    id: SessionId,
    ws_path: String,
    /// The session's secret (`sessionToken`), `None` from servers that do not check
    /// credentials.
    token: Option<Secret>,
    /// The handshake's first ticket, until the first socket takes it.
    ticket: Option<Secret>,
    /// Encoding per lane (index `id - 1`); `None`: not granted.
    lanes: [Option<Encoding>; 8],
    dict: Dictionary,
    heartbeat_interval_ms: u64,
    heartbeat_timeout_ms: u64,
    /// Transport `websocket`: the server numbers each socket's v1 Data frames per lane from
    /// 1 without gaps (§5), which [`Client::handle_frame`] checks. (Over SSE, `core::sse`
    /// orders and checks the event ids itself.)
    websocket: bool,
}

impl Session {
    fn from_handshake(resp: &HandshakeResponse) -> Result<Session, ClientError> {
        let dict = Dictionary::from_wire(&resp.dictionary)
            .map_err(|e| ClientError::BadHandshake(e.to_string()))?;
        let mut lanes = [None; 8];
        for g in &resp.lanes {
            let lane = Lane::from_id(g.id)
                .ok_or_else(|| ClientError::BadHandshake(format!("lane id {}", g.id)))?;
            lanes[lane as usize - 1] = Some(g.encoding);
        }
        if lanes[0].is_none() {
            return Err(ClientError::BadHandshake("Control lane not granted".into()));
        }
        Ok(Session {
            id: resp.session_id,
            ws_path: resp.websocket_url.clone(),
            token: resp.session_token.clone(),
            ticket: resp.ticket.clone(),
            lanes,
            dict,
            heartbeat_interval_ms: resp.heartbeat.interval_ms.max(100),
            heartbeat_timeout_ms: resp.heartbeat.timeout_ms.max(200),
            websocket: resp.transport == "websocket",
        })
    }

    fn encoding(&self, lane: Lane) -> Option<Encoding> {
        self.lanes[lane as usize - 1]
    }
}

/// An encoded message waiting for an open socket (size already checked).
#[derive(Clone)]
struct Queued {
    payload: Vec<u8>,
    dict_version: u32,
    encoding: Encoding,
    to: Option<SessionId>,
}

/// A message not yet handed to the socket (§5) or the multiplexer: a Data message, or a
/// Control message (framed when it goes, so that it gets the sequence number of then).
#[derive(Clone)]
enum Outgoing {
    Data(Queued),
    Control(Control),
}

impl Outgoing {
    fn bytes(&self) -> usize {
        match self {
            Outgoing::Data(q) => q.payload.len(),
            Outgoing::Control(_) => 64,
        }
    }

    /// A heartbeat or clock probe: stale once delayed, so never sent again.
    fn is_ping(&self) -> bool {
        matches!(self, Outgoing::Control(Control::Ping { .. }))
    }
}

/// Sending state of one lane: its pacer, what waits for it, and what was sent recently.
#[derive(Default)]
struct LaneOut {
    /// The server's quota as this client paces it (advertised in the handshake's `limits`,
    /// or learned from a `rate_limited` refusal); `None`: unpaced.
    pacer: Option<Gcra>,
    /// Messages waiting for the pacer or (§5 framing) for an open socket, oldest first; the
    /// first `resends` of them are refused messages going again.
    waiting: VecDeque<Outgoing>,
    resends: usize,
    /// Reliable lanes: the newest messages handed over, by sequence number, to send again
    /// after a `rate_limited` refusal; bounded by [`RETAIN_MSGS`] and [`RETAIN_BYTES`].
    retained: VecDeque<(u64, Outgoing)>,
    retained_bytes: usize,
    /// `send` refused with backpressure: an [`Event::Drain`] is owed when room frees.
    drain_owed: bool,
}

impl LaneOut {
    fn retain(&mut self, seq: u64, msg: Outgoing) {
        self.retained_bytes += msg.bytes();
        self.retained.push_back((seq, msg));
        while self.retained.len() > RETAIN_MSGS
            || (self.retained.len() > 1 && self.retained_bytes > RETAIN_BYTES)
        {
            if let Some((_, m)) = self.retained.pop_front() {
                self.retained_bytes -= m.bytes();
            }
        }
    }

    fn take_retained(&mut self, seq: u64) -> Option<Outgoing> {
        let i = self.retained.iter().position(|r| r.0 == seq)?;
        let (_, m) = self.retained.remove(i)?;
        self.retained_bytes -= m.bytes();
        Some(m)
    }

    /// Queues a refused message again, after earlier refused ones and before the rest.
    fn push_resend(&mut self, msg: Outgoing) {
        let at = self.resends.min(self.waiting.len());
        self.waiting.insert(at, msg);
        self.resends = at + 1;
    }

    fn pop_waiting(&mut self) -> Option<Outgoing> {
        let m = self.waiting.pop_front()?;
        self.resends = self.resends.saturating_sub(1);
        Some(m)
    }

    fn unpop_waiting(&mut self, m: Outgoing, was_resend: bool) {
        self.waiting.push_front(m);
        if was_resend {
            self.resends += 1;
        }
    }
}

/// Largest header a Data frame can have: kind, lane, flags, two 10-byte varints, two ids.
const FRAME_OVERHEAD_BYTES: usize = 3 + 10 + 5 + 16 + 16;

/// The client side of one P3 session across any number of sockets.
///
/// Drive contract ([`crate::core::drive`], module docs): inputs (`handle_*`, `now` last) and
/// mutators; after each, drain [`Client::poll_output`] until [`Output::Timeout`]; call
/// [`Client::handle_timeout`] at that deadline.
pub struct Client {
    config: ClientConfig,
    session: Session,
    state: ConnectionState,
    ever_opened: bool,
    /// A socket is open (possibly still waiting for the server's `welcome`).
    socket_up: bool,
    needs_handshake: bool,
    attempt: u32,
    timers: [Option<u64>; 3],
    last_rx: u64,
    next_seq: [u64; 8],
    control_seq: u64,
    /// v1 over WebSocket: the last Data seq received per lane (index `id - 1`) on the current
    /// socket, 0 before the first (§5 "Sequence numbers").
    rx_seq: [u64; 8],
    /// Per lane (index `id - 1`): pacing, waiting messages (§5 framing: also while the socket
    /// is not open) and recently sent ones.
    lanes_out: [LaneOut; 8],
    /// The multiplexer, when the server granted it (kept across sockets and sessions).
    mux: Option<Mux>,
    room: Option<String>,
    /// The room and Control sequence number of the last `join` sent (to match a refusal).
    join_sent: Option<(String, u64)>,
    /// The driver's latest `now`, ms (every input carries one).
    now: u64,
    /// The next reconnect or re-handshake waits at least until then (close 4429, HTTP 429).
    retry_not_before: Option<u64>,
    out: VecDeque<Output>,
    rng: fastrand::Rng,
}

impl Client {
    /// A client for the session of `handshake`; the first output asks to open its socket.
    ///
    /// Errors: [`ClientError::BadHandshake`] if the response's dictionary or lanes are invalid.
    pub fn new(
        config: ClientConfig,
        handshake: &HandshakeResponse,
        now: Millis,
    ) -> Result<Client, ClientError> {
        let now = now.as_u64();
        let session = Session::from_handshake(handshake)?;
        let rng = fastrand::Rng::with_seed(config.seed);
        let mux = if handshake.grants(FEATURE_MUX) {
            Some(new_mux(&config, &session)?)
        } else {
            None
        };
        let mut c = Client {
            config,
            session,
            state: ConnectionState::Connecting,
            ever_opened: false,
            socket_up: false,
            needs_handshake: false,
            attempt: 0,
            timers: [None; 3],
            last_rx: now,
            next_seq: [1; 8],
            control_seq: 1,
            rx_seq: [0; 8],
            lanes_out: Default::default(),
            mux,
            room: None,
            join_sent: None,
            now,
            retry_not_before: None,
            out: VecDeque::new(),
            rng,
        };
        c.adopt_limits(handshake);
        c.open_socket();
        Ok(c)
    }

    // ---- getters ----

    /// Current connection state.
    pub fn state(&self) -> ConnectionState {
        self.state
    }

    /// Current session id (changes after a re-handshake).
    pub fn session_id(&self) -> SessionId {
        self.session.id
    }

    /// The current session's secret (`sessionToken` of its handshake), for the driver's
    /// `Authorization: Bearer` header on session-scoped HTTP requests (the ticket route, SSE
    /// POSTs, the status check). `None` from servers that do not check credentials.
    pub fn session_token(&self) -> Option<&Secret> {
        self.session.token.as_ref()
    }

    /// The handshake's first ticket, once: the driver opens the first socket or stream of a
    /// session with it ([`with_ticket`](crate::core::handshake::with_ticket)) and mints a
    /// fresh one (`POST` [`ticket_path`](crate::core::handshake::ticket_path) with the
    /// token) for every later (re)connect or resume. `None` once taken.
    pub fn take_ticket(&mut self) -> Option<Secret> {
        self.session.ticket.take()
    }

    /// The room this client is in or joining.
    pub fn room(&self) -> Option<&str> {
        self.room.as_deref()
    }

    /// Whether `lane` was granted.
    pub fn has_lane(&self, lane: Lane) -> bool {
        self.session.encoding(lane).is_some()
    }

    /// Messages queued for `lane`: waiting for the lane's pacer, while the socket is not
    /// open, or with the multiplexer, not yet completely written to the socket.
    pub fn queued_len(&self, lane: Lane) -> usize {
        let waiting = self.lanes_out[lane as usize - 1].waiting.len();
        waiting + self.mux.as_ref().map_or(0, |m| m.queued_len(lane))
    }

    /// Whether `lane` is paced (the server advertised a quota for it, or refused one of its
    /// messages with `rate_limited`).
    pub fn is_paced(&self, lane: Lane) -> bool {
        self.lanes_out[lane as usize - 1].pacer.is_some()
    }

    /// Whether the multiplexer (v2 frames) is in use.
    pub fn uses_mux(&self) -> bool {
        self.mux.is_some()
    }

    /// The multiplexer, if in use (for diagnostics: epochs, counters).
    pub fn mux(&self) -> Option<&Mux> {
        self.mux.as_ref()
    }

    // ---- mutators ----

    /// Sends `value` on `lane` to the room (or, with `to`, to that session only).
    ///
    /// While the socket is not open the message is queued: a reliable lane refuses with
    /// [`ClientError::Backpressure`] once `queueDepth` messages wait; an unreliable lane drops
    /// its oldest queued message instead.
    ///
    /// Errors: [`ClientError`] (`lane_not_negotiated`, `frame_too_large`, `backpressure`,
    /// `closed`; `invalid_argument` for lane 1, which carries Control messages only, §5).
    pub fn send(
        &mut self,
        lane: Lane,
        value: Value,
        to: Option<SessionId>,
    ) -> Result<(), ClientError> {
        if self.state == ConnectionState::Closed {
            return Err(ClientError::Closed);
        }
        if lane == Lane::Control {
            // §5: lane 1 carries Control frames only; the server refuses a Data frame there.
            return Err(ClientError::InvalidArgument(
                "lane 1 (Control) carries protocol messages only; send application messages \
                 on lanes 2..=8"
                    .into(),
            ));
        }
        let Some(encoding) = self.session.encoding(lane) else {
            return Err(ClientError::LaneNotNegotiated(lane));
        };
        let (payload, dict_version) = payload::encode(&value, encoding, Some(&self.session.dict))?;
        let msg = Queued {
            payload,
            dict_version,
            encoding,
            to,
        };
        let size = FRAME_OVERHEAD_BYTES + msg.payload.len();
        if size > self.config.max_frame_bytes {
            return Err(ClientError::TooLarge {
                size,
                limit: self.config.max_frame_bytes,
            });
        }
        let i = lane as usize - 1;
        let direct = self.lanes_out[i].pacer.is_none() && self.lanes_out[i].waiting.is_empty();
        if direct && (self.mux.is_some() || self.state == ConnectionState::Open) {
            return self
                .hand_over(lane, Outgoing::Data(msg))
                .map_err(|(e, _)| mux_send_error(lane, e));
        }
        let spec = lane.spec();
        if self.queued_len(lane) >= spec.queue_depth as usize {
            if spec.reliable {
                self.lanes_out[i].drain_owed = true;
                return Err(ClientError::Backpressure {
                    lane,
                    depth: spec.queue_depth,
                });
            }
            let l = &mut self.lanes_out[i];
            if l.waiting.len() > l.resends {
                l.waiting.remove(l.resends);
                self.out
                    .push_back(Output::Event(Event::Dropped { lane, count: 1 }));
            }
        }
        self.lanes_out[i].waiting.push_back(Outgoing::Data(msg));
        Ok(())
    }

    /// Joins `room` (leaving any other); [`Event::RoomJoined`] confirms. The client rejoins it
    /// by itself after reconnects.
    ///
    /// Errors: [`ClientError::InvalidArgument`] for a bad name, [`ClientError::Closed`].
    pub fn join_room(&mut self, room: &str) -> Result<(), ClientError> {
        if self.state == ConnectionState::Closed {
            return Err(ClientError::Closed);
        }
        validate_room_name(room).map_err(ClientError::InvalidArgument)?;
        self.room = Some(room.to_owned());
        if self.state == ConnectionState::Open {
            self.send_control(&Control::Join {
                room: room.to_owned(),
            });
        }
        Ok(())
    }

    /// Sends an extra Control `ping {clientTime, rttMs}` now, besides the heartbeat: a clock
    /// probe ([`crate::core::sync::clock::ClockSync::poll_output`]). `client_time` is echoed in
    /// the `pong` ([`Event::Pong`]), so it may be any reading of the caller's monotonic clock in
    /// ms (fractions kept). `rtt_ms` reports the caller's smoothed RTT to the server (music rooms
    /// schedule changes from it); `None` reports nothing.
    ///
    /// Returns `false`, sending nothing, unless the connection is open: a probe queued behind
    /// a reconnect would measure the outage, not the link.
    pub fn ping(&mut self, client_time: f64, rtt_ms: Option<f64>) -> bool {
        if self.state != ConnectionState::Open || !client_time.is_finite() {
            return false;
        }
        let l = &self.lanes_out[0];
        if !l.waiting.is_empty()
            || l.pacer
                .is_some_and(|p| !p.conforms(Millis::from_u64(self.now)))
        {
            // Queued behind other Control messages, it would measure the wait.
            return false;
        }
        let rtt_ms = rtt_ms.filter(|r| r.is_finite() && *r >= 0.0);
        self.send_control(&Control::Ping {
            client_time,
            rtt_ms,
        });
        true
    }

    /// Leaves the current room, if any.
    pub fn leave_room(&mut self) {
        if let Some(room) = self.room.take() {
            if self.state == ConnectionState::Open {
                self.send_control(&Control::Leave { room });
            }
        }
    }

    /// Closes for good: the socket is closed, queued messages are discarded, timers stop.
    pub fn close(&mut self) {
        if self.state == ConnectionState::Closed {
            return;
        }
        self.out.push_back(Output::Action(Action::CloseSocket));
        self.finish(Some("closed by the application".into()));
    }

    // ---- inputs ----

    /// The socket requested by [`Action::OpenSocket`] is open.
    pub fn handle_socket_open(&mut self, now: Millis) {
        let now = now.as_u64();
        self.now = self.now.max(now);
        if self.socket_up
            || !matches!(
                self.state,
                ConnectionState::Connecting | ConnectionState::Reconnecting
            )
        {
            return;
        }
        // Not `Open` yet: the server may still refuse the session (close 4404). Queued
        // messages and the room join wait for its `welcome`.
        self.socket_up = true;
        self.last_rx = now;
        self.rx_seq = [0; 8];
        self.timers[Timer::Idle as usize] = Some(now + self.timeout_ms());
        if let Some(mux) = self.mux.as_mut() {
            mux.handle_transport_resumed(Millis::from_u64(now));
        }
    }

    /// Multiplexer only: the socket's send buffer holds `bytes` (WebSocket
    /// `bufferedAmount`). Report it before every drain of [`Client::poll_output`].
    pub fn handle_transport_buffered(&mut self, bytes: usize) {
        if let Some(mux) = self.mux.as_mut() {
            mux.handle_transport_buffered(bytes);
        }
    }

    /// The server's `welcome` accepted this session on the current socket: go `Open`, rejoin
    /// the room, flush what was queued and start heartbeats.
    fn on_welcome(&mut self, session_id: SessionId, now: u64) {
        if self.state == ConnectionState::Open || session_id != self.session.id {
            return;
        }
        self.ever_opened = true;
        self.attempt = 0;
        self.set_state(ConnectionState::Open, None);
        if let Some(room) = self.room.clone() {
            self.send_control(&Control::Join { room });
        }
        self.release_waiting();
        self.timers[Timer::Heartbeat as usize] = Some(now);
    }

    /// One binary message arrived on the socket.
    pub fn handle_frame(&mut self, bytes: &[u8], now: Millis) {
        let now = now.as_u64();
        self.now = self.now.max(now);
        if !self.socket_up {
            return;
        }
        self.last_rx = now;
        self.timers[Timer::Idle as usize] = Some(now + self.timeout_ms());
        if bytes.first().is_some_and(|b| *b >= 0x10) {
            if let Some(mux) = self.mux.as_mut() {
                mux.handle_input(bytes, Millis::from_u64(now));
                return self.drain_mux_events(now);
            }
        }
        self.handle_v1_frame(bytes, None, now);
    }

    /// One §5 frame: from the socket, or a multiplexer message (`mux_seq`: its sequence
    /// number, which replaces the frame's 0).
    fn handle_v1_frame(&mut self, bytes: &[u8], mux_seq: Option<u64>, now: u64) {
        let (mut h, body) = match FrameHeader::decode(bytes) {
            Ok(x) => x,
            Err(e) => return self.decode_error(ErrorCode::BadFrame, &e, None, None),
        };
        if let Some(seq) = mux_seq {
            h.seq = seq;
        }
        match h.kind {
            FrameKind::Control => match decode_control(&h, body, &self.session.dict) {
                Ok(Some((c, retry_after_ms))) => self.on_control(c, retry_after_ms, now),
                Ok(None) => {} // a newer server's message type: ignored (forward compatibility)
                Err(e) => self.decode_error(e.code(), &e, Some(h.lane), Some(h.seq)),
            },
            FrameKind::Data if mux_seq.is_none() && !self.in_sequence(&h) => {}
            FrameKind::Data => match payload::decode(&h, body, Some(&self.session.dict)) {
                Ok(value) => self.out.push_back(Output::Event(Event::Message(Inbound {
                    lane: h.lane,
                    from: h.from,
                    seq: h.seq,
                    value,
                }))),
                Err(e) => self.decode_error(e.code(), &e, Some(h.lane), Some(h.seq)),
            },
        }
    }

    /// §5 "Sequence numbers", for a v1 Data frame from a WebSocket server: `true` to deliver
    /// it. A seq at or below the last one of its lane on this socket (a repeat, or 0) is
    /// dropped and reported (`bad_frame`); a gap is reported as an [`Event::Discontinuity`]
    /// (`history-lost`, epochs 0) before the frame is delivered. Frames of a multiplexed
    /// session that arrive as v1 frames (the server's refusals) and SSE sessions are not
    /// checked here.
    fn in_sequence(&mut self, h: &FrameHeader) -> bool {
        if !self.session.websocket || self.mux.is_some() {
            return true;
        }
        let last = &mut self.rx_seq[h.lane as usize - 1];
        if h.seq <= *last {
            let message = format!(
                "lane {} frame seq {} repeats (last {}); dropped",
                h.lane.id(),
                h.seq,
                *last
            );
            self.out.push_back(Output::Event(Event::Error {
                code: ErrorCode::BadFrame,
                message,
                lane: Some(h.lane),
                seq: Some(h.seq),
                retry_after_ms: None,
                dropped: None,
            }));
            return false;
        }
        let expected = *last + 1;
        *last = h.seq;
        if h.seq > expected {
            self.out
                .push_back(Output::Event(Event::Discontinuity(Discontinuity {
                    lane: h.lane,
                    expected_epoch: 0,
                    expected_seq: expected,
                    epoch: 0,
                    seq: h.seq,
                    reason: DiscontinuityReason::HistoryLost,
                })));
        }
        true
    }

    /// The socket closed (or failed to open). `code` is the WebSocket close code.
    pub fn handle_socket_closed(&mut self, code: u16, now: Millis) {
        let now = now.as_u64();
        self.now = self.now.max(now);
        self.socket_up = false;
        if let Some(mux) = self.mux.as_mut() {
            mux.handle_transport_lost();
        }
        if self.state == ConnectionState::Closed {
            return;
        }
        if code == CLOSE_SESSION_NOT_FOUND {
            self.needs_handshake = true;
        }
        if code == CLOSE_UNAUTHORIZED {
            // The server no longer accepts this session's credentials (it forgot the session:
            // restart, expiry, deletion): a new session, as after 4404, and the app hears why.
            self.needs_handshake = true;
            self.out.push_back(Output::Event(Event::Error {
                code: ErrorCode::Unauthorized,
                message: format!(
                    "the server refused this session's credentials (close code {code}); \
                     starting a new session"
                ),
                lane: None,
                seq: None,
                retry_after_ms: None,
                dropped: None,
            }));
        }
        if code == CLOSE_RATE_LIMITED {
            self.retry_not_before = Some(now.saturating_add(RATE_LIMITED_RECONNECT_MS));
            self.out.push_back(Output::Event(Event::Error {
                code: ErrorCode::RateLimited,
                message: format!(
                    "the server closed the connection for sending past its rate limit \
                     (close code {code}); reconnecting in {} s",
                    RATE_LIMITED_RECONNECT_MS / 1000
                ),
                lane: None,
                seq: None,
                retry_after_ms: Some(RATE_LIMITED_RECONNECT_MS),
                dropped: None,
            }));
        }
        self.lost(format!("connection lost (close code {code})"), now);
    }

    /// The handshake asked for by [`Action::Handshake`] succeeded: adopt the new session.
    ///
    /// Errors: [`ClientError::BadHandshake`]; the client then retries later.
    pub fn handle_handshake(
        &mut self,
        resp: &HandshakeResponse,
        now: Millis,
    ) -> Result<(), ClientError> {
        self.now = self.now.max(now.as_u64());
        if self.state == ConnectionState::Closed {
            return Ok(());
        }
        let session = match Session::from_handshake(resp) {
            Ok(s) => s,
            Err(e) => {
                self.handle_handshake_failed(now);
                return Err(e);
            }
        };
        let old = self.session.id;
        if !resp.grants(FEATURE_MUX) {
            self.mux = None;
        } else if self.mux.is_none()
            || (0..8).any(|i| session.lanes[i].is_some() != self.session.lanes[i].is_some())
        {
            // A new multiplexer for other lanes: what the old one held was for lanes the
            // new session does not have, or for a server without the multiplexer.
            match new_mux(&self.config, &session) {
                Ok(m) => self.mux = Some(m),
                Err(e) => {
                    self.handle_handshake_failed(now);
                    return Err(e);
                }
            }
        }
        self.session = session;
        self.adopt_limits(resp);
        self.join_sent = None;
        // Sequence numbers of the old session mean nothing to the new one.
        for l in &mut self.lanes_out {
            l.retained.clear();
            l.retained_bytes = 0;
        }
        self.needs_handshake = false;
        self.next_seq = [1; 8];
        self.control_seq = 1;
        self.out.push_back(Output::Event(Event::SessionChanged {
            old,
            new: self.session.id,
        }));
        if self.mux.is_some() {
            if let Some(room) = self.room.clone() {
                // Queued now, so it reaches the new session before the messages the
                // multiplexer sends again (Control goes first): they are relayed to the room.
                self.send_control(&Control::Join { room });
            }
        }
        self.open_socket();
        Ok(())
    }

    /// The handshake asked for by [`Action::Handshake`] failed (network or 5xx): back off.
    pub fn handle_handshake_failed(&mut self, now: Millis) {
        let now = now.as_u64();
        self.now = self.now.max(now);
        if self.state != ConnectionState::Closed {
            self.schedule_retry(now);
        }
    }

    /// The handshake asked for by [`Action::Handshake`] was refused for good: trying the same
    /// request again cannot succeed (its static identity proof no longer verifies,
    /// `auth_invalid`, PROTOCOL.md §3.1). The client closes with `reason` instead of retrying:
    /// state `closed`, no more [`Action::Handshake`].
    pub fn handle_handshake_refused(&mut self, reason: &str, now: Millis) {
        self.now = self.now.max(now.as_u64());
        if self.state != ConnectionState::Closed {
            self.finish(Some(reason.to_owned()));
        }
    }

    /// The handshake asked for by [`Action::Handshake`] was refused with HTTP 429
    /// (`rate_limited` or `too_many_requests`) and `Retry-After` / `retryAfterMs` (ms, if
    /// given): back off, and not sooner than that (at most [`MAX_RETRY_AFTER_MS`]).
    pub fn handle_handshake_rate_limited(&mut self, retry_after_ms: Option<u64>, now: Millis) {
        let now = now.as_u64();
        self.now = self.now.max(now);
        if self.state != ConnectionState::Closed {
            let wait = retry_after_ms.unwrap_or(0).min(MAX_RETRY_AFTER_MS);
            self.retry_not_before = Some(now.saturating_add(wait));
            self.schedule_retry(now);
        }
    }

    /// The server refused this client's `join` of `room` with `code` where the core does not
    /// see the answer (transport `sse`: the `POST` of the join was refused): as a Control
    /// `error` answering the join, the client leaves `room` (no rejoin) and emits
    /// [`Event::JoinFailed`]. Ignored unless `room` is the room this client is in or joining.
    pub fn handle_join_refused(&mut self, room: &str, code: ErrorCode, message: &str) {
        if self.room.as_deref() != Some(room) {
            return;
        }
        self.room = None;
        self.join_sent = None;
        self.out.push_back(Output::Event(Event::JoinFailed {
            room: room.to_owned(),
            code,
            message: message.to_owned(),
        }));
    }

    /// The driver's clock now. Report it before calling a mutator ([`Client::send`],
    /// [`Client::ping`], ...): paced lanes release their messages by it.
    pub fn handle_clock(&mut self, now: Millis) {
        self.now = self.now.max(now.as_u64());
    }

    /// A deadline returned by [`Output::Timeout`] passed (calling it early is harmless).
    pub fn handle_timeout(&mut self, now: Millis) {
        let now = now.as_u64();
        self.now = self.now.max(now);
        if let Some(mux) = self.mux.as_mut() {
            if mux.next_deadline().is_some_and(|t| t <= now) {
                mux.handle_timeout(Millis::from_u64(now));
            }
        }
        for t in TIMERS {
            match self.timers[t as usize] {
                Some(at) if at <= now => self.timers[t as usize] = None,
                _ => continue,
            }
            match t {
                Timer::Heartbeat => {
                    self.send_control(&Control::Ping {
                        client_time: now as f64,
                        rtt_ms: None,
                    });
                    self.timers[Timer::Heartbeat as usize] = Some(now + self.interval_ms());
                }
                Timer::Idle => {
                    let silent = now.saturating_sub(self.last_rx);
                    self.out.push_back(Output::Action(Action::CloseSocket));
                    self.lost(
                        format!("no frame received for {silent} ms (heartbeat timeout)"),
                        now,
                    );
                }
                Timer::Reconnect => {
                    if self.needs_handshake {
                        self.out.push_back(Output::Action(Action::Handshake));
                    } else {
                        self.open_socket();
                    }
                }
            }
        }
    }

    // ---- outputs ----

    /// The next output at `now` (which advances the clock as [`Client::handle_clock`] does),
    /// in this order: outputs queued by inputs and mutators (in order), messages released by
    /// the pacers, the multiplexer's events, its frames ([`Output::Transmit`]), then
    /// [`Output::Timeout`] with the earliest deadline of the client and its multiplexer.
    /// Drain until `Timeout`.
    #[must_use]
    pub fn poll_output(&mut self, now: Millis) -> Output {
        self.now = self.now.max(now.as_u64());
        if let Some(o) = self.out.pop_front() {
            return o;
        }
        self.release_waiting();
        if let Some(o) = self.out.pop_front() {
            return o;
        }
        let mut mux_deadline = Millis::NEVER;
        if self.mux.is_some() {
            self.drain_mux_events(self.last_rx);
            if let Some(o) = self.out.pop_front() {
                return o;
            }
            let mux = self.mux.as_mut().expect("checked");
            // Events are drained: the multiplexer has frames or its deadline. It transmits
            // only while a transport is up, which is while the socket is.
            match mux.poll_output(Millis::from_u64(self.now)) {
                MuxOutput::Event(ev) => {
                    self.on_mux_event(ev, self.last_rx);
                    self.drain_mux_events(self.last_rx);
                    if let Some(o) = self.out.pop_front() {
                        return o;
                    }
                    return self.poll_output(now);
                }
                MuxOutput::Transmit(frame) => return Output::Transmit(frame),
                MuxOutput::Timeout(t) => mux_deadline = t,
            }
        }
        let own = min_opt(
            self.timers.iter().flatten().min().copied(),
            self.pace_deadline(),
        );
        Output::Timeout(Millis::from_deadline(own).min(mux_deadline))
    }

    // ---- internals ----

    fn interval_ms(&self) -> u64 {
        self.config
            .heartbeat_interval_ms
            .unwrap_or(self.session.heartbeat_interval_ms)
            .max(100)
    }

    fn timeout_ms(&self) -> u64 {
        self.config
            .heartbeat_timeout_ms
            .unwrap_or(self.session.heartbeat_timeout_ms)
            .max(200)
    }

    fn set_state(&mut self, state: ConnectionState, reason: Option<String>) {
        if self.state != state {
            self.state = state;
            self.out
                .push_back(Output::Event(Event::StateChanged { state, reason }));
        }
    }

    fn finish(&mut self, reason: Option<String>) {
        self.socket_up = false;
        if let Some(mux) = self.mux.as_mut() {
            mux.handle_transport_lost();
        }
        self.timers = [None; 3];
        for l in &mut self.lanes_out {
            l.waiting.clear();
            l.resends = 0;
            l.retained.clear();
            l.retained_bytes = 0;
        }
        self.set_state(ConnectionState::Closed, reason);
    }

    fn open_socket(&mut self) {
        self.out.push_back(Output::Action(Action::OpenSocket {
            path: self.session.ws_path.clone(),
        }));
    }

    fn lost(&mut self, reason: String, now: u64) {
        self.socket_up = false;
        if let Some(mux) = self.mux.as_mut() {
            mux.handle_transport_lost();
        }
        self.timers[Timer::Heartbeat as usize] = None;
        self.timers[Timer::Idle as usize] = None;
        if !self.ever_opened {
            // The first connection is not retried: `connect()` reports it.
            return self.finish(Some(format!("could not connect: {reason}")));
        }
        if !self.config.reconnect {
            return self.finish(Some(reason));
        }
        self.set_state(ConnectionState::Reconnecting, Some(reason));
        self.schedule_retry(now);
    }

    fn schedule_retry(&mut self, now: u64) {
        let delays = &self.config.backoff_ms;
        let base = delays
            .get(self.attempt as usize)
            .or(delays.last())
            .copied()
            .unwrap_or(1000) as f64;
        let j = self.config.jitter.clamp(0.0, 1.0);
        let factor = 1.0 - j + 2.0 * j * self.rng.f64();
        self.attempt = self.attempt.saturating_add(1);
        let at = now.saturating_add((base * factor) as u64);
        self.timers[Timer::Reconnect as usize] =
            Some(at.max(self.retry_not_before.take().unwrap_or(0)));
    }

    fn send_control(&mut self, msg: &Control) {
        let l = &self.lanes_out[0];
        if l.pacer.is_none() && l.waiting.is_empty() {
            // Control's queue (100) only fills if the socket stalls for that long; a refused
            // ping or join is sent again by the heartbeat or the next `welcome`.
            if let Err((e, _)) = self.hand_over(Lane::Control, Outgoing::Control(msg.clone())) {
                self.out
                    .push_back(Output::Event(mux_error_event(&e, Some(Lane::Control))));
            }
            return;
        }
        if self.queued_len(Lane::Control) >= usize::from(Lane::Control.spec().queue_depth) {
            let e = MuxError::Backpressure {
                lane: Lane::Control,
                queue_depth: usize::from(Lane::Control.spec().queue_depth),
            };
            self.out
                .push_back(Output::Event(mux_error_event(&e, Some(Lane::Control))));
            return;
        }
        self.lanes_out[0]
            .waiting
            .push_back(Outgoing::Control(msg.clone()));
    }

    /// Hands `msg` to the multiplexer, or (§5 framing) transmits it, whatever the lane's
    /// pacer says (the caller checked); counts it in the pacer and keeps a reliable lane's
    /// message for a `rate_limited` refusal. Errors: the multiplexer's refusal, with `msg`.
    fn hand_over(&mut self, lane: Lane, msg: Outgoing) -> Result<(), (MuxError, Outgoing)> {
        let enc = self.session.encoding(lane).unwrap_or(Encoding::Msgpack);
        let dict = Some(&self.session.dict);
        let seq = if let Some(mux) = self.mux.as_mut() {
            let frame = match &msg {
                Outgoing::Data(q) => {
                    let mut h = FrameHeader::data(lane, q.encoding, 0, q.dict_version);
                    h.to = q.to;
                    h.encode(&q.payload)
                }
                Outgoing::Control(c) => payload::control_frame(c, enc, dict, 0),
            };
            match mux.send(lane, frame) {
                Ok(id) => id.seq,
                Err(e) => return Err((e, msg)),
            }
        } else {
            let (seq, frame) = match &msg {
                Outgoing::Data(q) => {
                    let seq = self.next_seq[lane as usize - 1];
                    (seq, self.data_frame(lane, q))
                }
                Outgoing::Control(c) => {
                    let seq = self.control_seq;
                    self.control_seq += 1;
                    (seq, payload::control_frame(c, enc, dict, seq))
                }
            };
            self.out.push_back(Output::Transmit(frame));
            seq
        };
        if let Outgoing::Control(Control::Join { room }) = &msg {
            self.join_sent = Some((room.clone(), seq));
        }
        let now = self.now;
        let l = &mut self.lanes_out[lane as usize - 1];
        if let Some(p) = l.pacer.as_mut() {
            p.consume(Millis::from_u64(now));
        }
        if lane.spec().reliable {
            l.retain(seq, msg);
        }
        Ok(())
    }

    /// Hands over, highest priority lane first, what waits and may go now: the socket is
    /// open and the lane's pacer allows it. Then owes [`Event::Drain`] where room freed.
    fn release_waiting(&mut self) {
        if self.state == ConnectionState::Open {
            let mut lanes = Lane::ALL;
            lanes.sort_by_key(|l| std::cmp::Reverse(l.spec().priority));
            for lane in lanes {
                let i = lane as usize - 1;
                loop {
                    let l = &mut self.lanes_out[i];
                    if l.pacer
                        .is_some_and(|p| !p.conforms(Millis::from_u64(self.now)))
                    {
                        break;
                    }
                    let was_resend = l.resends > 0;
                    let Some(m) = l.pop_waiting() else { break };
                    match self.hand_over(lane, m) {
                        Ok(()) => {}
                        Err((MuxError::Backpressure { .. }, m)) => {
                            self.lanes_out[i].unpop_waiting(m, was_resend);
                            break;
                        }
                        Err((e, _)) => {
                            self.out
                                .push_back(Output::Event(mux_error_event(&e, Some(lane))));
                        }
                    }
                }
            }
        }
        for lane in Lane::ALL {
            let i = lane as usize - 1;
            if self.lanes_out[i].drain_owed
                && self.queued_len(lane) < usize::from(lane.spec().queue_depth)
            {
                self.lanes_out[i].drain_owed = false;
                self.out.push_back(Output::Event(Event::Drain { lane }));
            }
        }
    }

    /// When a paced lane's next waiting message may go, if later than now.
    fn pace_deadline(&self) -> Option<u64> {
        if self.state != ConnectionState::Open {
            return None;
        }
        self.lanes_out
            .iter()
            .filter(|l| !l.waiting.is_empty())
            .filter_map(|l| l.pacer.map(|p| p.ready_at()))
            .filter(|&at| at > self.now)
            .min()
    }

    /// The pacers of the server's advertised quotas (`limits.rates`); lanes without one are
    /// unpaced (a pacer learned from a refusal of the previous session is forgotten).
    fn adopt_limits(&mut self, resp: &HandshakeResponse) {
        let rates = resp.limits.as_ref().and_then(|l| l.rates);
        for lane in Lane::ALL {
            self.lanes_out[lane as usize - 1].pacer = rates
                .and_then(|r| r.for_lane(lane))
                .and_then(|r| Gcra::pacing(r.per_second, r.burst));
        }
    }

    /// A Control `error` with code `rate_limited` about this client's message `(lane, seq)`:
    /// holds the lane for `retryAfterMs`, queues a kept reliable message again, reports it.
    fn on_rate_limited(
        &mut self,
        message: String,
        lane: Option<Lane>,
        seq: Option<u64>,
        retry_after_ms: Option<u64>,
        now: u64,
    ) {
        let wait = retry_after_ms
            .unwrap_or(DEFAULT_RETRY_AFTER_MS)
            .min(MAX_RETRY_AFTER_MS);
        let mut dropped = None;
        if let Some(lane) = lane {
            let l = &mut self.lanes_out[lane as usize - 1];
            let kept = seq.and_then(|s| l.take_retained(s));
            dropped = Some(match kept {
                Some(m) if !m.is_ping() => {
                    l.push_resend(m);
                    false
                }
                _ => true,
            });
            // No advertised quota: pace at one message per `retryAfterMs` from now on.
            let p = l.pacer.get_or_insert_with(|| {
                Gcra::new(1000.0 / wait.max(1) as f64, 1).expect("a positive rate")
            });
            p.hold(wait, Millis::from_u64(now));
        }
        let what = match dropped {
            Some(false) => "; sent again after the wait",
            Some(true) => "; the message is lost",
            None => "",
        };
        self.out.push_back(Output::Event(Event::Error {
            code: ErrorCode::RateLimited,
            message: format!("{message}{what}"),
            lane,
            seq,
            retry_after_ms: Some(wait),
            dropped,
        }));
        if dropped == Some(true) {
            self.check_join_refused(lane, seq, ErrorCode::RateLimited, "rate limited");
        }
    }

    /// If `(lane, seq)` is the last `join` sent, the server refused it: the client is not in
    /// that room and does not rejoin it ([`Event::JoinFailed`]).
    fn check_join_refused(
        &mut self,
        lane: Option<Lane>,
        seq: Option<u64>,
        code: ErrorCode,
        msg: &str,
    ) {
        let refused = lane == Some(Lane::Control)
            && seq.is_some()
            && self.join_sent.as_ref().is_some_and(|j| Some(j.1) == seq);
        if !refused {
            return;
        }
        let Some((room, _)) = self.join_sent.take() else {
            return;
        };
        if self.room.as_deref() == Some(room.as_str()) {
            self.room = None;
        }
        self.out.push_back(Output::Event(Event::JoinFailed {
            room,
            code,
            message: msg.to_owned(),
        }));
    }

    /// Turns the multiplexer's pending events into outputs; a fatal error closes the socket.
    fn drain_mux_events(&mut self, now: u64) {
        while let Some(ev) = self.mux.as_mut().and_then(Mux::next_event) {
            self.on_mux_event(ev, now);
        }
    }

    /// Turns one multiplexer event into outputs; a fatal error closes the socket.
    fn on_mux_event(&mut self, ev: MuxEvent, now: u64) {
        match ev {
            MuxEvent::Message { seq, bytes, .. } => {
                self.handle_v1_frame(&bytes, Some(seq), now);
            }
            MuxEvent::Discontinuity(d) => {
                self.out.push_back(Output::Event(Event::Discontinuity(d)));
            }
            MuxEvent::Drain { lane } => self.out.push_back(Output::Event(Event::Drain { lane })),
            MuxEvent::Dropped { lane, count } => {
                self.out
                    .push_back(Output::Event(Event::Dropped { lane, count }));
            }
            MuxEvent::Error(e) => {
                self.out.push_back(Output::Event(mux_error_event(&e, None)));
                if e.fault().closes_transport() && self.socket_up {
                    self.out.push_back(Output::Action(Action::CloseSocket));
                    self.lost(format!("multiplexer: {e}"), now);
                }
            }
        }
    }

    fn data_frame(&mut self, lane: Lane, msg: &Queued) -> Vec<u8> {
        let seq = self.next_seq[lane as usize - 1];
        self.next_seq[lane as usize - 1] += 1;
        let mut h = FrameHeader::data(lane, msg.encoding, seq, msg.dict_version);
        h.to = msg.to;
        h.encode(&msg.payload)
    }

    fn on_control(&mut self, c: Control, retry_after_ms: Option<u64>, now: u64) {
        let ev = match c {
            Control::Pong {
                client_time,
                server_time,
            } => Event::Pong {
                rtt_ms: (now as f64 - client_time).max(0.0),
                client_time,
                server_time,
            },
            Control::Joined { room, members } => Event::RoomJoined { room, members },
            Control::Left { room } => Event::RoomLeft { room },
            Control::PeerJoined { room, session_id } => Event::PeerJoined { room, session_id },
            Control::PeerLeft { room, session_id } => Event::PeerLeft { room, session_id },
            Control::Presence {
                room,
                session_id,
                status,
                since,
                last_seen,
            } => Event::Presence {
                room,
                session_id,
                status,
                since_ms: since,
                last_seen_ms: last_seen,
            },
            Control::Error {
                code,
                error,
                lane,
                seq,
                ..
            } => {
                if code == ErrorCode::SessionNotFound {
                    self.needs_handshake = true;
                }
                let lane = lane.and_then(Lane::from_id);
                if code == ErrorCode::RateLimited {
                    return self.on_rate_limited(error, lane, seq, retry_after_ms, now);
                }
                self.out.push_back(Output::Event(Event::Error {
                    code,
                    message: error.clone(),
                    lane,
                    seq,
                    retry_after_ms: None,
                    dropped: None,
                }));
                return self.check_join_refused(lane, seq, code, &error);
            }
            Control::Version { version } => Event::Version { version },
            Control::RoomKey { room, key_id, key } => Event::RoomKey { room, key_id, key },
            Control::Welcome {
                session_id,
                app_version,
                ..
            } => {
                let opened = self.state != ConnectionState::Open;
                self.on_welcome(session_id, now);
                match app_version {
                    Some(version) if opened && self.state == ConnectionState::Open => {
                        Event::Version { version }
                    }
                    _ => return,
                }
            }
            Control::Join { .. } | Control::Leave { .. } | Control::Ping { .. } => return,
        };
        self.out.push_back(Output::Event(ev));
    }

    fn decode_error(
        &mut self,
        code: ErrorCode,
        e: &dyn std::fmt::Display,
        lane: Option<Lane>,
        seq: Option<u64>,
    ) {
        self.out.push_back(Output::Event(Event::Error {
            code,
            message: e.to_string(),
            lane,
            seq,
            retry_after_ms: None,
            dropped: None,
        }));
    }
}

crate::core::drive::machine!(Client, Output);

fn min_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

/// The multiplexer for `session`'s lanes.
fn new_mux(config: &ClientConfig, session: &Session) -> Result<Mux, ClientError> {
    let lanes: Vec<Lane> = Lane::ALL
        .into_iter()
        .filter(|l| session.encoding(*l).is_some())
        .collect();
    let mut cfg = MuxConfig::for_lanes(&lanes, config.seed ^ 0x6d75_7800);
    cfg.transport_high_water_bytes = config.transport_high_water_bytes;
    cfg.max_message_bytes = cfg.max_message_bytes.min(config.max_frame_bytes);
    Mux::new(cfg).map_err(|e| ClientError::BadHandshake(e.to_string()))
}

/// [`Mux::send`]'s refusal as the client's error.
fn mux_send_error(lane: Lane, e: MuxError) -> ClientError {
    match e {
        MuxError::Backpressure { queue_depth, .. } => ClientError::Backpressure {
            lane,
            depth: u16::try_from(queue_depth).unwrap_or(u16::MAX),
        },
        MuxError::Api(crate::core::mux::ApiMisuse::MessageTooLarge { size, limit }) => {
            ClientError::TooLarge { size, limit }
        }
        _ => ClientError::LaneNotNegotiated(lane),
    }
}

/// A multiplexer error as an [`Event::Error`].
fn mux_error_event(e: &MuxError, lane: Option<Lane>) -> Event {
    Event::Error {
        code: e.code(),
        message: e.to_string(),
        lane,
        seq: None,
        retry_after_ms: None,
        dropped: None,
    }
}

/// Decodes a Control frame: the message (`None`: a type this client does not know, ignored
/// for forward compatibility) and an `error`'s `retryAfterMs` (issue 11), read from the same
/// decoded value.
fn decode_control(
    h: &FrameHeader,
    body: &[u8],
    dict: &Dictionary,
) -> Result<Option<(Control, Option<u64>)>, PayloadError> {
    let v = payload::decode(h, body, Some(dict))?;
    if v.get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| !Control::TYPES.contains(&t))
    {
        return Ok(None);
    }
    let retry_after_ms = v.get("retryAfterMs").and_then(Value::as_u64);
    serde_json::from_value(v)
        .map(|c| Some((c, retry_after_ms)))
        .map_err(|e| PayloadError::BadControl(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::handshake::{HeartbeatInfo, LaneGrant, ProtocolInfo};
    use serde_json::json;

    fn ms(v: u64) -> Millis {
        Millis::from_u64(v)
    }

    fn handshake(sid: u8, lanes: &[(Lane, Encoding)]) -> HandshakeResponse {
        let id = SessionId::from_random_bytes([sid; 16]);
        HandshakeResponse {
            session_id: id,
            transport: "websocket".into(),
            lanes: lanes
                .iter()
                .map(|&(l, e)| LaneGrant {
                    id: l.id(),
                    name: l.name().into(),
                    encoding: e,
                    url: String::new(),
                    priority: l.spec().priority,
                    queue_depth: l.spec().queue_depth,
                    reliable: l.spec().reliable,
                })
                .collect(),
            dictionary: Dictionary::v1().to_wire(),
            server_time: 0,
            ttl_seconds: 3600,
            protocol: ProtocolInfo {
                version: "2.0.0".into(),
                features: vec![],
            },
            websocket_url: format!("/api/protocol/v2/session/{id}/ws"),
            heartbeat: HeartbeatInfo {
                interval_ms: 30_000,
                timeout_ms: 60_000,
            },
            signaling_token: None,
            session_token: Some(Secret::new("token")),
            ticket: Some(Secret::new("first-ticket")),
            limits: None,
            identity: None,
            sse_retry_ms: None,
        }
    }

    /// Issue 12: the first socket takes the handshake's ticket once; close 4401 asks for a
    /// new session and tells the app `unauthorized`.
    #[test]
    fn first_ticket_is_taken_once_and_4401_starts_a_new_session() {
        let mut c = Client::new(
            ClientConfig::default(),
            &handshake(1, &std_lanes()),
            Millis::ZERO,
        )
        .unwrap();
        assert_eq!(c.session_token().map(Secret::expose), Some("token"));
        assert_eq!(
            c.take_ticket().map(|t| t.expose().to_owned()).as_deref(),
            Some("first-ticket")
        );
        assert_eq!(c.take_ticket(), None, "a ticket is single-use");
        drain(&mut c);
        c.handle_socket_open(ms(10));
        let w = welcome(&c);
        c.handle_frame(&w, ms(10));
        drain(&mut c);
        c.handle_socket_closed(CLOSE_UNAUTHORIZED, ms(20));
        let mut unauthorized = false;
        let mut handshake_asked = false;
        for t in [20, 100, 1_000, 5_000, 30_000] {
            c.handle_timeout(ms(t));
            loop {
                match c.poll_output(ms(c.now)) {
                    Output::Event(Event::Error {
                        code: ErrorCode::Unauthorized,
                        ..
                    }) => unauthorized = true,
                    Output::Action(Action::Handshake) => handshake_asked = true,
                    Output::Timeout(_) => break,
                    _ => {}
                }
            }
        }
        assert!(unauthorized, "the app hears unauthorized");
        assert!(handshake_asked, "a new session is requested");
    }

    fn std_lanes() -> Vec<(Lane, Encoding)> {
        vec![
            (Lane::Control, Encoding::Msgpack),
            (Lane::Messaging, Encoding::Msgpack),
            (Lane::Voice, Encoding::Json),
            (Lane::Sync, Encoding::Msgpack),
        ]
    }

    /// Drains outputs; returns (transmits, actions, events, next timeout).
    fn drain(c: &mut Client) -> (Vec<Vec<u8>>, Vec<Action>, Vec<Event>, Option<u64>) {
        let (mut t, mut a, mut e) = (vec![], vec![], vec![]);
        loop {
            match c.poll_output(ms(c.now)) {
                Output::Transmit(b) => t.push(b),
                Output::Action(x) => a.push(x),
                Output::Event(x) => e.push(x),
                Output::Timeout(at) => return (t, a, e, at.deadline().map(Millis::as_u64)),
            }
        }
    }

    fn controls(frames: &[Vec<u8>]) -> Vec<Control> {
        let d = Dictionary::v1();
        frames
            .iter()
            .filter_map(|f| {
                let (h, p) = FrameHeader::decode(f).unwrap();
                (h.kind == FrameKind::Control)
                    .then(|| payload::decode_control(&h, p, Some(&d)).unwrap())
            })
            .collect()
    }

    fn welcome(c: &Client) -> Vec<u8> {
        let msg = Control::Welcome {
            session_id: c.session_id(),
            server_time: 0,
            heartbeat_interval_ms: 30_000,
            heartbeat_timeout_ms: 60_000,
            app_version: None,
        };
        payload::control_frame(&msg, Encoding::Msgpack, Some(&Dictionary::v1()), 1)
    }

    /// Socket open and the server's `welcome` received at t = 10 ms.
    fn open_client() -> Client {
        let mut c = Client::new(
            ClientConfig::default(),
            &handshake(1, &std_lanes()),
            Millis::ZERO,
        )
        .unwrap();
        let (_, a, _, _) = drain(&mut c);
        assert!(matches!(&a[..], [Action::OpenSocket { path }] if path.ends_with("/ws")));
        c.handle_socket_open(ms(10));
        let w = welcome(&c);
        c.handle_frame(&w, ms(10));
        c
    }

    /// PROTOCOL.md §6.2: a `presence` from the server becomes one `Event::Presence` with the
    /// same member, status and times; a status this version does not know still arrives.
    #[test]
    fn presence_becomes_an_event() {
        let mut c = open_client();
        drain(&mut c);
        let member = SessionId::from_random_bytes([7; 16]);
        for (status, since, last_seen) in [
            (PresenceStatus::Online, 1_000, 1_500),
            (PresenceStatus::Offline, 1_000, 9_000),
        ] {
            let msg = Control::Presence {
                room: "lobby".into(),
                session_id: member,
                status,
                since,
                last_seen,
            };
            let f = payload::control_frame(&msg, Encoding::Msgpack, Some(&Dictionary::v1()), 1);
            c.handle_frame(&f, ms(20));
            let (_, _, e, _) = drain(&mut c);
            assert_eq!(
                e,
                vec![Event::Presence {
                    room: "lobby".into(),
                    session_id: member,
                    status,
                    since_ms: since,
                    last_seen_ms: last_seen,
                }]
            );
        }
    }

    #[test]
    fn heartbeat_pings_and_pong_gives_rtt() {
        let mut c = open_client();
        let (t, _, e, at) = drain(&mut c);
        assert!(e.contains(&Event::StateChanged {
            state: ConnectionState::Open,
            reason: None
        }));
        assert!(t.is_empty());
        assert_eq!(at, Some(10));
        c.handle_timeout(ms(10));
        let (t, _, _, at) = drain(&mut c);
        assert_eq!(
            controls(&t),
            vec![Control::Ping {
                client_time: 10.0,
                rtt_ms: None
            }]
        );
        assert_eq!(at, Some(30_010));
        let pong = payload::control_frame(
            &Control::Pong {
                client_time: 10.0,
                server_time: 99,
            },
            Encoding::Msgpack,
            Some(&Dictionary::v1()),
            1,
        );
        c.handle_frame(&pong, ms(52));
        let (_, _, e, _) = drain(&mut c);
        assert_eq!(
            e,
            vec![Event::Pong {
                rtt_ms: 42.0,
                client_time: 10.0,
                server_time: 99
            }]
        );
        // An extra probe with a fractional clientTime and an RTT report, answered in kind.
        assert!(c.ping(60.25, Some(41.5)));
        let (t, _, _, _) = drain(&mut c);
        assert_eq!(
            controls(&t),
            vec![Control::Ping {
                client_time: 60.25,
                rtt_ms: Some(41.5)
            }]
        );
        let pong = payload::control_frame(
            &Control::Pong {
                client_time: 60.25,
                server_time: 140,
            },
            Encoding::Msgpack,
            Some(&Dictionary::v1()),
            2,
        );
        c.handle_frame(&pong, ms(101));
        let (_, _, e, _) = drain(&mut c);
        assert_eq!(
            e,
            vec![Event::Pong {
                rtt_ms: 40.75,
                client_time: 60.25,
                server_time: 140
            }]
        );
        // No probes while the connection is down.
        c.handle_socket_closed(1006, ms(200));
        drain(&mut c);
        assert!(!c.ping(201.0, None));
        let (t, _, _, _) = drain(&mut c);
        assert!(t.is_empty());
    }

    #[test]
    fn silence_past_timeout_reconnects_with_jittered_backoff() {
        let mut c = open_client();
        drain(&mut c);
        // Pings go out but nothing comes back.
        let mut now = 10;
        loop {
            let (_, a, e, at) = drain(&mut c);
            if a.contains(&Action::CloseSocket) {
                assert!(e.iter().any(|e| matches!(
                    e,
                    Event::StateChanged {
                        state: ConnectionState::Reconnecting,
                        ..
                    }
                )));
                assert_eq!(now, 60_010, "dropped exactly at the heartbeat timeout");
                break;
            }
            now = at.unwrap();
            c.handle_timeout(ms(now));
        }
        // Each failed attempt waits the seed's delay ±20%, the last one repeating.
        for base in [1000u64, 2000, 4000, 8000, 16000, 16000] {
            let (_, _, _, at) = drain(&mut c);
            let wait = at.unwrap() - now;
            assert!(
                wait >= base * 8 / 10 && wait <= base * 12 / 10,
                "wait {wait} for base {base}"
            );
            now = at.unwrap();
            c.handle_timeout(ms(now));
            let (_, a, _, _) = drain(&mut c);
            assert!(matches!(&a[..], [Action::OpenSocket { .. }]));
            c.handle_socket_closed(1006, ms(now));
        }
    }

    #[test]
    fn rehandshake_refused_for_good_closes_without_retrying() {
        let mut c = open_client();
        c.handle_socket_closed(CLOSE_SESSION_NOT_FOUND, ms(100));
        let (_, _, _, at) = drain(&mut c);
        c.handle_timeout(ms(at.unwrap()));
        let (_, a, _, _) = drain(&mut c);
        assert_eq!(a, vec![Action::Handshake]);
        c.handle_handshake_refused("re-handshake refused: auth_invalid", ms(200));
        let (_, a, e, at) = drain(&mut c);
        assert!(a.is_empty());
        assert!(matches!(
            &e[..],
            [Event::StateChanged { state: ConnectionState::Closed, reason: Some(r) }] if r.contains("auth_invalid")
        ));
        assert_eq!(at, None, "no retry timer");
        assert_eq!(c.state(), ConnectionState::Closed);
    }

    #[test]
    fn lost_session_rehandshakes_and_rejoins_room() {
        let mut c = open_client();
        c.join_room("r1").unwrap();
        let (t, _, _, _) = drain(&mut c);
        assert_eq!(controls(&t), vec![Control::Join { room: "r1".into() }]);
        c.handle_socket_closed(CLOSE_SESSION_NOT_FOUND, ms(100));
        let (_, _, _, at) = drain(&mut c);
        c.handle_timeout(ms(at.unwrap()));
        let (_, a, _, _) = drain(&mut c);
        assert_eq!(a, vec![Action::Handshake]);
        let old = c.session_id();
        c.handle_handshake(&handshake(2, &std_lanes()), ms(5000))
            .unwrap();
        let (_, a, e, _) = drain(&mut c);
        assert!(
            matches!(&e[..], [Event::SessionChanged { old: o, new }] if *o == old && *new != old)
        );
        assert!(
            matches!(&a[..], [Action::OpenSocket { path }] if path.contains(&c.session_id().to_string()))
        );
        c.handle_socket_open(ms(5100));
        let w = welcome(&c);
        c.handle_frame(&w, ms(5101));
        let (t, _, _, _) = drain(&mut c);
        assert_eq!(controls(&t), vec![Control::Join { room: "r1".into() }]);
    }

    #[test]
    fn queues_while_disconnected_then_flushes_by_priority() {
        let mut c = open_client();
        drain(&mut c);
        c.handle_socket_closed(1006, ms(20));
        drain(&mut c);
        for i in 0..Lane::Messaging.spec().queue_depth {
            c.send(Lane::Messaging, json!({"msg": i}), None).unwrap();
        }
        let err = c
            .send(Lane::Messaging, json!({"msg": "one too many"}), None)
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Backpressure);
        // Unreliable Voice drops its oldest instead.
        for i in 0..=Lane::Voice.spec().queue_depth {
            c.send(Lane::Voice, json!(i), None).unwrap();
        }
        assert_eq!(
            c.queued_len(Lane::Voice),
            Lane::Voice.spec().queue_depth as usize
        );
        c.send(Lane::Sync, json!({"position": 1.5}), None).unwrap();
        c.handle_timeout(ms(10_000));
        drain(&mut c);
        c.handle_socket_open(ms(10_001));
        // Nothing is flushed before the server accepts the session.
        let (t, _, _, _) = drain(&mut c);
        assert!(t.is_empty());
        let w = welcome(&c);
        c.handle_frame(&w, ms(10_002));
        let (t, _, _, _) = drain(&mut c);
        let d = Dictionary::v1();
        let data: Vec<(Lane, u64, Value)> = t
            .iter()
            .map(|f| FrameHeader::decode(f).unwrap())
            .filter(|(h, _)| h.kind == FrameKind::Data)
            .map(|(h, p)| (h.lane, h.seq, payload::decode(&h, p, Some(&d)).unwrap()))
            .collect();
        assert_eq!(data.len(), 500 + 1 + 50);
        // Messaging (90) before Sync (85) before Voice (80); seqs contiguous from 1.
        assert_eq!((data[0].0, data[0].1), (Lane::Messaging, 1));
        assert_eq!(data[499].2, json!({"msg": 499}));
        assert_eq!(data[500], (Lane::Sync, 1, json!({"position": 1.5})));
        assert_eq!((data[501].0, data[501].2.clone()), (Lane::Voice, json!(1)));
    }

    #[test]
    fn refuses_bad_sends_with_codes() {
        let mut c = open_client();
        let code = |r: Result<(), ClientError>| r.unwrap_err().code();
        assert_eq!(
            code(c.send(Lane::Data, json!(1), None)),
            ErrorCode::LaneNotNegotiated
        );
        let big = json!("x".repeat(DEFAULT_MAX_FRAME_BYTES));
        assert_eq!(
            code(c.send(Lane::Messaging, big, None)),
            ErrorCode::FrameTooLarge
        );
        assert_eq!(code(c.join_room("")), ErrorCode::InvalidArgument);
        // §5: lane 1 carries Control frames only; the core never sends a Data frame there.
        assert_eq!(
            code(c.send(Lane::Control, json!({"type": "error"}), None)),
            ErrorCode::InvalidArgument
        );
        let (t, _, _, _) = drain(&mut c);
        assert!(t.is_empty(), "nothing was transmitted for lane 1");
        c.close();
        assert_eq!(
            code(c.send(Lane::Messaging, json!(1), None)),
            ErrorCode::Closed
        );
        let (_, a, e, at) = drain(&mut c);
        assert!(a.contains(&Action::CloseSocket));
        assert!(matches!(
            e.last(),
            Some(Event::StateChanged {
                state: ConnectionState::Closed,
                ..
            })
        ));
        assert_eq!(at, None);
    }

    #[test]
    fn first_connection_failure_is_terminal() {
        let mut c = Client::new(
            ClientConfig::default(),
            &handshake(1, &std_lanes()),
            Millis::ZERO,
        )
        .unwrap();
        drain(&mut c);
        c.handle_socket_closed(1006, ms(5));
        let (_, _, e, at) = drain(&mut c);
        assert!(matches!(
            &e[..],
            [Event::StateChanged {
                state: ConnectionState::Closed,
                reason: Some(_)
            }]
        ));
        assert_eq!(at, None);
    }

    #[test]
    fn inbound_messages_decode_and_bad_ones_are_errors() {
        let mut c = open_client();
        drain(&mut c);
        let d = Dictionary::v1();
        let from = SessionId::from_random_bytes([9; 16]);
        let (p, v) = payload::encode(&json!({"msg": "hi"}), Encoding::Msgpack, Some(&d)).unwrap();
        let mut h = FrameHeader::data(Lane::Messaging, Encoding::Msgpack, 1, v);
        h.from = Some(from);
        c.handle_frame(&h.encode(&p), ms(20));
        let mut h2 = h.clone();
        h2.seq = 2;
        h2.dict_version = 2;
        c.handle_frame(&h2.encode(&p), ms(21));
        c.handle_frame(&[0xff, 0, 0], ms(22));
        let (_, _, e, _) = drain(&mut c);
        assert_eq!(
            e[0],
            Event::Message(Inbound {
                lane: Lane::Messaging,
                from: Some(from),
                seq: 1,
                value: json!({"msg": "hi"})
            })
        );
        assert!(matches!(
            &e[1],
            Event::Error {
                code: ErrorCode::UnknownDictionary,
                seq: Some(2),
                ..
            }
        ));
        assert!(matches!(
            &e[2],
            Event::Error {
                code: ErrorCode::BadFrame,
                ..
            }
        ));
    }

    /// §5 "Sequence numbers": over a WebSocket without the multiplexer, a repeated (or 0)
    /// Data seq is dropped and reported, a gap is a discontinuity before the frame, and a new
    /// socket starts again at 1.
    #[test]
    fn v1_data_seqs_drop_repeats_and_report_gaps() {
        let mut c = open_client();
        drain(&mut c);
        let frame = |seq: u64, n: u64| {
            let (p, v) = payload::encode(&json!(n), Encoding::Msgpack, None).unwrap();
            FrameHeader::data(Lane::Messaging, Encoding::Msgpack, seq, v).encode(&p)
        };
        for (i, seq) in [1, 2, 2, 0, 5, 6].into_iter().enumerate() {
            c.handle_frame(&frame(seq, i as u64), ms(20));
        }
        let (_, _, e, _) = drain(&mut c);
        let seen: Vec<String> = e
            .iter()
            .map(|e| match e {
                Event::Message(m) => format!("msg {} {}", m.seq, m.value),
                Event::Error { code, seq, .. } => format!("err {code} {seq:?}"),
                Event::Discontinuity(d) => format!("gap {}..{}", d.expected_seq, d.seq),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            seen,
            [
                "msg 1 0",
                "msg 2 1",
                "err bad_frame Some(2)",
                "err bad_frame Some(0)",
                "gap 3..5",
                "msg 5 4",
                "msg 6 5"
            ]
        );
        // A new socket numbers from 1 again.
        c.handle_socket_closed(1006, ms(30));
        drain(&mut c);
        c.handle_socket_open(ms(40));
        c.handle_frame(&welcome(&c), ms(41));
        c.handle_frame(&frame(1, 9), ms(42));
        let (_, _, e, _) = drain(&mut c);
        assert!(e
            .iter()
            .any(|e| matches!(e, Event::Message(m) if m.seq == 1 && m.value == json!(9))));
        assert!(!e.iter().any(|e| matches!(e, Event::Discontinuity(_))));
    }

    #[test]
    fn queued_messages_survive_a_refused_session() {
        // Server restart: the old session is gone, the socket opens, the server says
        // session_not_found and closes with 4404. Queued messages must reach the new session.
        let mut c = open_client();
        c.join_room("r").unwrap();
        drain(&mut c);
        c.handle_socket_closed(1006, ms(20));
        drain(&mut c);
        c.send(Lane::Messaging, json!({"msg": "during outage"}), None)
            .unwrap();
        c.handle_timeout(ms(5_000));
        drain(&mut c);
        c.handle_socket_open(ms(5_001));
        let refusal = payload::control_frame(
            &Control::Error {
                code: ErrorCode::SessionNotFound,
                error: "gone".into(),
                lane: None,
                seq: None,
                retry_after_ms: None,
            },
            Encoding::Msgpack,
            Some(&Dictionary::v1()),
            1,
        );
        c.handle_frame(&refusal, ms(5_002));
        c.handle_socket_closed(CLOSE_SESSION_NOT_FOUND, ms(5_003));
        let (t, _, _, at) = drain(&mut c);
        assert!(
            t.is_empty(),
            "nothing may go into a socket the server refuses"
        );
        assert_eq!(c.queued_len(Lane::Messaging), 1);
        c.handle_timeout(ms(at.unwrap()));
        let (_, a, _, _) = drain(&mut c);
        assert_eq!(a, vec![Action::Handshake]);
        c.handle_handshake(&handshake(3, &std_lanes()), ms(9_000))
            .unwrap();
        drain(&mut c);
        c.handle_socket_open(ms(9_001));
        let w = welcome(&c);
        c.handle_frame(&w, ms(9_002));
        let (t, _, e, _) = drain(&mut c);
        assert!(e.contains(&Event::StateChanged {
            state: ConnectionState::Open,
            reason: None
        }));
        assert_eq!(controls(&t), vec![Control::Join { room: "r".into() }]);
        let d = Dictionary::v1();
        let data: Vec<Value> = t
            .iter()
            .map(|f| FrameHeader::decode(f).unwrap())
            .filter(|(h, _)| h.kind == FrameKind::Data)
            .map(|(h, p)| payload::decode(&h, p, Some(&d)).unwrap())
            .collect();
        assert_eq!(data, vec![json!({"msg": "during outage"})]);
    }

    #[test]
    fn server_app_version_is_an_event_on_welcome_and_on_push() {
        let mut c = Client::new(
            ClientConfig::default(),
            &handshake(1, &std_lanes()),
            Millis::ZERO,
        )
        .unwrap();
        drain(&mut c);
        c.handle_socket_open(ms(1));
        let frame = |msg: &Control| {
            payload::control_frame(msg, Encoding::Msgpack, Some(&Dictionary::v1()), 1)
        };
        let welcome = Control::Welcome {
            session_id: c.session_id(),
            server_time: 0,
            heartbeat_interval_ms: 30_000,
            heartbeat_timeout_ms: 60_000,
            app_version: Some("1.0.0".into()),
        };
        c.handle_frame(&frame(&welcome), ms(2));
        c.handle_frame(
            &frame(&Control::Version {
                version: "1.1.0".into(),
            }),
            ms(3),
        );
        let (_, _, e, _) = drain(&mut c);
        let versions: Vec<&Event> = e
            .iter()
            .filter(|e| matches!(e, Event::Version { .. }))
            .collect();
        assert_eq!(
            versions,
            vec![
                &Event::Version {
                    version: "1.0.0".into()
                },
                &Event::Version {
                    version: "1.1.0".into()
                }
            ]
        );
        assert!(matches!(
            e[0],
            Event::StateChanged {
                state: ConnectionState::Open,
                ..
            }
        ));
    }

    /// Issue 11: pacing by the advertised quotas and the answers to `rate_limited`.
    mod rate_limits {
        use super::*;
        use crate::core::handshake::{LaneRates, Limits, Rate};
        use crate::core::rate::Gcra;

        /// The server's quota in these tests: 20 messages/s, bursts of 5.
        const BULK: Rate = Rate {
            per_second: 20.0,
            burst: 5,
        };

        fn limited(rates: LaneRates) -> HandshakeResponse {
            let mut h = handshake(1, &std_lanes());
            h.limits = Some(Limits { rates: Some(rates) });
            h
        }

        fn open_with(hs: &HandshakeResponse) -> Client {
            let mut c = Client::new(ClientConfig::default(), hs, Millis::ZERO).unwrap();
            drain(&mut c);
            c.handle_socket_open(ms(10));
            let w = welcome(&c);
            c.handle_frame(&w, ms(10));
            c
        }

        /// (lane, seq, value) of the Data frames among `frames`.
        fn data(frames: &[Vec<u8>]) -> Vec<(Lane, u64, Value)> {
            let d = Dictionary::v1();
            frames
                .iter()
                .filter_map(|f| {
                    let (h, p) = FrameHeader::decode(f).unwrap();
                    (h.kind == FrameKind::Data)
                        .then(|| (h.lane, h.seq, payload::decode(&h, p, Some(&d)).unwrap()))
                })
                .collect()
        }

        /// A Control `error` as the server sends it (with `retryAfterMs`, which
        /// [`Control::Error`] does not model).
        fn refusal(code: &str, lane: Lane, seq: u64, retry_after_ms: Option<u64>) -> Vec<u8> {
            let mut v = json!({"type": "error", "code": code, "error": "refused",
                               "lane": lane.id(), "seq": seq});
            if let Some(r) = retry_after_ms {
                v["retryAfterMs"] = json!(r);
            }
            let (bytes, dv) =
                payload::encode(&v, Encoding::Msgpack, Some(&Dictionary::v1())).unwrap();
            FrameHeader::control(Encoding::Msgpack, 9, dv).encode(&bytes)
        }

        /// Runs the client from `now` to `until` (ms), calling it only at the deadlines it
        /// asks for; returns (time, lane, seq, value) of every Data frame it transmitted.
        fn run_until(c: &mut Client, mut now: u64, until: u64) -> Vec<(u64, Lane, u64, Value)> {
            let mut sent = vec![];
            for _ in 0..100_000 {
                c.handle_clock(ms(now));
                let (t, _, _, at) = drain(c);
                sent.extend(data(&t).into_iter().map(|(l, s, v)| (now, l, s, v)));
                match at {
                    Some(at) if at <= until => {
                        // (An overdue timer, e.g. the first heartbeat, fires now.)
                        now = now.max(at);
                        c.handle_timeout(ms(now));
                    }
                    _ => return sent,
                }
            }
            panic!("the client never went idle");
        }

        #[test]
        fn paced_sends_never_exceed_the_quota_and_lose_nothing() {
            let rates = LaneRates {
                bulk: Some(BULK),
                ..LaneRates::default()
            };
            let mut c = open_with(&limited(rates));
            assert!(c.is_paced(Lane::Messaging) && !c.is_paced(Lane::Control));
            drain(&mut c);
            for n in 1..=60 {
                c.send(Lane::Messaging, json!({"n": n}), None).unwrap();
            }
            assert_eq!(c.queued_len(Lane::Messaging), 60);
            let sent = run_until(&mut c, 10, 60_000);
            // Nothing lost or reordered, numbered 1, 2, ... as they left.
            let ns: Vec<u64> = sent.iter().map(|s| s.3["n"].as_u64().unwrap()).collect();
            assert_eq!(ns, (1..=60).collect::<Vec<_>>());
            assert!(sent.iter().enumerate().all(|(i, s)| s.2 == i as u64 + 1));
            // The server's own GCRA accepts every one of them on arrival.
            let mut server = Gcra::new(BULK.per_second, BULK.burst).unwrap();
            for (t, ..) in &sent {
                assert!(
                    server.conforms(Millis::from_u64(*t)),
                    "refused at {t} ms: {sent:?}"
                );
                server.consume(Millis::from_u64(*t));
            }
            // Half the burst (3) went at once, the rest at the paced rate (19/s): ~3 s for 57.
            assert_eq!(sent.iter().filter(|s| s.0 == 10).count(), 3);
            let last = sent.last().unwrap().0;
            assert!((2_950..3_100).contains(&last), "{last}");
            assert_eq!(c.queued_len(Lane::Messaging), 0);
        }

        #[cfg(not(target_arch = "wasm32"))]
        proptest::proptest! {
            /// Whatever the quota and however the app sends (bursts, pauses, two lanes), the
            /// paced client never sends a message the server's exact GCRA would refuse, and
            /// every lane's messages leave once each, in order.
            #[test]
            fn pacing_never_exceeds_any_quota(
                // (Slow enough to take a while, fast enough to finish within the heartbeat
                // timeout of 60 s: nothing answers this client's pings.)
                per_second in 5.0f64..200.0,
                burst in 1u32..20,
                sends in proptest::collection::vec((0u64..300, proptest::bool::ANY), 1..80),
            ) {
                let quota = Rate { per_second, burst };
                let mut hs = limited(LaneRates { bulk: Some(quota), ..LaneRates::default() });
                hs.lanes.push(LaneGrant {
                    id: Lane::Data.id(),
                    name: Lane::Data.name().into(),
                    encoding: Encoding::Msgpack,
                    url: String::new(),
                    priority: Lane::Data.spec().priority,
                    queue_depth: Lane::Data.spec().queue_depth,
                    reliable: true,
                });
                let mut c = open_with(&hs);
                let mut now = 10;
                let mut sent = vec![];
                let mut expected: [Vec<u64>; 2] = [vec![], vec![]];
                for (i, (gap, data)) in sends.iter().enumerate() {
                    sent.extend(run_until(&mut c, now, now + gap));
                    now += gap;
                    let lane = if *data { Lane::Data } else { Lane::Messaging };
                    c.send(lane, json!({"n": i}), None).unwrap();
                    expected[usize::from(*data)].push(i as u64);
                }
                sent.extend(run_until(&mut c, now, now + 50_000));
                for (k, lane) in [Lane::Messaging, Lane::Data].into_iter().enumerate() {
                    let mine: Vec<&(u64, Lane, u64, Value)> =
                        sent.iter().filter(|s| s.1 == lane).collect();
                    let ns: Vec<u64> = mine.iter().map(|s| s.3["n"].as_u64().unwrap()).collect();
                    proptest::prop_assert_eq!(&ns, &expected[k]);
                    let mut server = Gcra::new(per_second, burst).unwrap();
                    for s in mine {
                        proptest::prop_assert!(server.conforms(Millis::from_u64(s.0)), "{:?} refused at {}", lane, s.0);
                        server.consume(Millis::from_u64(s.0));
                    }
                }
            }
        }

        #[test]
        fn a_paced_lane_is_bounded_and_drains() {
            let rates = LaneRates {
                bulk: Some(BULK),
                ..LaneRates::default()
            };
            let mut c = open_with(&limited(rates));
            drain(&mut c);
            let depth = Lane::Messaging.spec().queue_depth as u64;
            for n in 0..depth {
                c.send(Lane::Messaging, json!({"n": n}), None).unwrap();
            }
            let e = c.send(Lane::Messaging, json!({"n": 0}), None).unwrap_err();
            assert_eq!(e.code(), ErrorCode::Backpressure);
            c.handle_clock(ms(10));
            let (_, _, e, _) = drain(&mut c);
            assert!(e.contains(&Event::Drain {
                lane: Lane::Messaging
            }));
        }

        #[test]
        fn refused_reliable_message_goes_again_after_retry_after() {
            let mut c = open_client();
            drain(&mut c);
            for n in 1..=3 {
                c.send(Lane::Messaging, json!({"n": n}), None).unwrap();
            }
            c.handle_clock(ms(10));
            let (t, ..) = drain(&mut c);
            assert_eq!(data(&t).len(), 3, "no quota advertised: unpaced");
            c.handle_frame(
                &refusal("rate_limited", Lane::Messaging, 2, Some(500)),
                ms(20),
            );
            c.send(Lane::Messaging, json!({"n": 4}), None).unwrap();
            let (t, _, e, _) = drain(&mut c);
            assert!(data(&t).is_empty(), "the lane is held");
            assert!(e.contains(&Event::Error {
                code: ErrorCode::RateLimited,
                message: "refused; sent again after the wait".into(),
                lane: Some(Lane::Messaging),
                seq: Some(2),
                retry_after_ms: Some(500),
                dropped: Some(false),
            }));
            let sent = run_until(&mut c, 20, 5_000);
            let got: Vec<(u64, u64)> = sent
                .iter()
                .map(|s| (s.0, s.3["n"].as_u64().unwrap()))
                .collect();
            // Message 2 again at 520 ms, then 4 after it, one `retryAfterMs` later (the lane
            // paces at what the refusal taught it).
            assert_eq!(got, vec![(520, 2), (1020, 4)]);
            // A second refusal of message 2 (seq 4 now): sent once more, after the wait and
            // the lane's pace (one per 500 ms since 1020).
            c.handle_frame(
                &refusal("rate_limited", Lane::Messaging, 4, Some(100)),
                ms(1100),
            );
            let sent = run_until(&mut c, 1100, 5_000);
            assert_eq!(sent.len(), 1);
            assert_eq!((sent[0].0, &sent[0].3), (1520, &json!({"n": 2})));
        }

        #[test]
        fn refused_unreliable_message_is_dropped_and_said_so() {
            let mut c = open_client();
            drain(&mut c);
            c.send(Lane::Voice, json!({"n": 1}), None).unwrap();
            c.handle_clock(ms(10));
            let (t, ..) = drain(&mut c);
            let seq = data(&t)[0].1;
            c.handle_frame(&refusal("rate_limited", Lane::Voice, seq, None), ms(20));
            let (_, _, e, _) = drain(&mut c);
            assert!(e.iter().any(|e| matches!(
                e,
                Event::Error {
                    code: ErrorCode::RateLimited,
                    lane: Some(Lane::Voice),
                    retry_after_ms: Some(DEFAULT_RETRY_AFTER_MS),
                    dropped: Some(true),
                    ..
                }
            )));
            assert!(run_until(&mut c, 20, 10_000).is_empty(), "never sent again");
            // The lane waits out the refusal, then goes on.
            c.send(Lane::Voice, json!({"n": 2}), None).unwrap();
            let sent = run_until(&mut c, 20, 10_000);
            assert_eq!(sent.len(), 1);
            assert_eq!(sent[0].0, 20 + DEFAULT_RETRY_AFTER_MS);
        }

        #[test]
        fn close_4429_reconnects_only_after_the_rate_limit_backoff() {
            for (code, earliest) in [(CLOSE_RATE_LIMITED, 10_100), (1006, 900)] {
                let mut c = open_client();
                drain(&mut c);
                c.handle_socket_closed(code, ms(100));
                let (_, a, e, at) = drain(&mut c);
                assert!(a.is_empty());
                let rate_limited = e.iter().any(|e| {
                    matches!(
                        e,
                        Event::Error {
                            code: ErrorCode::RateLimited,
                            ..
                        }
                    )
                });
                assert_eq!(rate_limited, code == CLOSE_RATE_LIMITED);
                let at = at.unwrap();
                assert!(at >= earliest && at <= earliest + 2_000, "{code}: {at}");
                c.handle_timeout(ms(at));
                let (_, a, _, _) = drain(&mut c);
                assert!(matches!(&a[..], [Action::OpenSocket { .. }]), "{a:?}");
            }
        }

        #[test]
        fn handshake_429_waits_for_retry_after() {
            let mut c = open_client();
            c.handle_socket_closed(CLOSE_SESSION_NOT_FOUND, ms(100));
            let (_, _, _, at) = drain(&mut c);
            c.handle_timeout(ms(at.unwrap()));
            let (_, a, _, _) = drain(&mut c);
            assert_eq!(a, vec![Action::Handshake]);
            let now = at.unwrap();
            c.handle_handshake_rate_limited(Some(30_000), ms(now));
            let (_, _, _, next) = drain(&mut c);
            assert!(next.unwrap() >= now + 30_000, "{next:?}");
        }

        #[test]
        fn refused_join_fails_and_is_not_rejoined() {
            let mut c = open_client();
            drain(&mut c);
            c.join_room("full").unwrap();
            let (t, ..) = drain(&mut c);
            let (h, _) = FrameHeader::decode(&t[0]).unwrap();
            // Another Control refusal is not about the join.
            c.handle_frame(
                &refusal("bad_control", Lane::Control, h.seq + 7, None),
                ms(20),
            );
            c.handle_frame(&refusal("room_full", Lane::Control, h.seq, None), ms(20));
            let (_, _, e, _) = drain(&mut c);
            let failed: Vec<&Event> = e
                .iter()
                .filter(|e| matches!(e, Event::JoinFailed { .. }))
                .collect();
            assert_eq!(
                failed,
                vec![&Event::JoinFailed {
                    room: "full".into(),
                    code: ErrorCode::RoomFull,
                    message: "refused".into(),
                }]
            );
            assert!(e.iter().any(|e| matches!(
                e,
                Event::Error {
                    code: ErrorCode::RoomFull,
                    ..
                }
            )));
            assert_eq!(c.room(), None, "not rejoined after a reconnect");
        }

        #[test]
        fn a_join_refused_over_sse_fails_the_same_way() {
            let mut c = open_client();
            c.join_room("full").unwrap();
            drain(&mut c);
            c.handle_join_refused("other", ErrorCode::RoomFull, "full");
            assert_eq!(c.room(), Some("full"), "not the room being joined");
            c.handle_join_refused("full", ErrorCode::RoomFull, "full");
            let (_, _, e, _) = drain(&mut c);
            assert_eq!(
                e,
                vec![Event::JoinFailed {
                    room: "full".into(),
                    code: ErrorCode::RoomFull,
                    message: "full".into()
                }]
            );
            assert_eq!(c.room(), None);
        }

        #[test]
        fn other_limit_codes_reach_the_app_typed() {
            let mut c = open_client();
            drain(&mut c);
            for code in [
                ErrorCode::PayloadTooLarge,
                ErrorCode::PayloadTooComplex,
                ErrorCode::LimitExceeded,
                ErrorCode::OutOfRange,
                ErrorCode::TooManyRequests,
            ] {
                c.handle_frame(&refusal(code.as_str(), Lane::Sync, 3, None), ms(20));
                let (_, _, e, _) = drain(&mut c);
                assert!(
                    e.iter()
                        .any(|e| matches!(e, Event::Error { code: c, .. } if *c == code)),
                    "{code}: {e:?}"
                );
            }
        }

        #[test]
        fn paced_control_keeps_probes_honest() {
            let rates = LaneRates {
                control: Some(Rate {
                    per_second: 1.0,
                    burst: 2,
                }),
                ..LaneRates::default()
            };
            let mut c = open_with(&limited(rates));
            c.handle_timeout(ms(10));
            let (t, ..) = drain(&mut c);
            assert_eq!(controls(&t).len(), 1, "the first heartbeat");
            // The pacer keeps a burst of 1; the heartbeat ping used it.
            assert!(!c.ping(10.0, None), "a probe that would wait is not sent");
            c.handle_clock(ms(1_100));
            assert!(c.ping(1_100.0, None));
            let (t, ..) = drain(&mut c);
            assert!(matches!(&controls(&t)[..], [Control::Ping { .. }]));
        }
    }

    #[test]
    fn welcome_for_another_session_is_ignored() {
        let mut c = Client::new(
            ClientConfig::default(),
            &handshake(1, &std_lanes()),
            Millis::ZERO,
        )
        .unwrap();
        drain(&mut c);
        c.handle_socket_open(ms(1));
        let other = Client::new(
            ClientConfig::default(),
            &handshake(2, &std_lanes()),
            Millis::ZERO,
        )
        .unwrap();
        c.handle_frame(&welcome(&other), ms(2));
        assert_eq!(c.state(), ConnectionState::Connecting);
        // No welcome within the heartbeat timeout (any frame restarts it): the first
        // connection fails for good.
        c.handle_timeout(ms(60_001));
        assert_eq!(c.state(), ConnectionState::Connecting);
        c.handle_timeout(ms(60_002));
        let (_, a, _, _) = drain(&mut c);
        assert!(a.contains(&Action::CloseSocket));
        assert_eq!(c.state(), ConnectionState::Closed);
    }

    /// The multiplexer (`mux` granted) against an in-memory server-side [`Mux`].
    mod mux {
        use super::*;
        use crate::core::mux::DiscontinuityReason;

        fn mux_lanes() -> Vec<(Lane, Encoding)> {
            vec![
                (Lane::Control, Encoding::Msgpack),
                (Lane::Messaging, Encoding::Msgpack),
                (Lane::Data, Encoding::Msgpack),
            ]
        }

        fn mux_handshake(sid: u8) -> HandshakeResponse {
            let mut h = handshake(sid, &mux_lanes());
            h.protocol.features = vec![FEATURE_MUX.into()];
            h
        }

        /// The server's end of one session: a multiplexer, what it received and what the
        /// client received, and frames in flight both ways.
        struct Pair {
            c: Client,
            srv: Mux,
            sid: SessionId,
            c2s: VecDeque<Vec<u8>>,
            s2c: VecDeque<Vec<u8>>,
            /// (lane, number) received by the server, in order.
            at_server: Vec<(Lane, u64)>,
            /// (lane, number) received by the client, in order.
            at_client: Vec<(Lane, u64)>,
            /// When each of `at_server` arrived, ms.
            arrivals: Vec<u64>,
            events: Vec<Event>,
            actions: Vec<Action>,
            now: u64,
        }

        fn server_mux(seed: u64) -> Mux {
            let lanes: Vec<Lane> = mux_lanes().iter().map(|l| l.0).collect();
            Mux::new(MuxConfig::for_lanes(&lanes, seed)).unwrap()
        }

        fn number(v: &Value) -> u64 {
            v["n"].as_u64().unwrap()
        }

        /// A message numbered `n`; `pad` bytes of filler (over 16 KiB: several chunks).
        fn numbered(n: u64, pad: usize) -> Value {
            json!({"n": n, "pad": "x".repeat(pad)})
        }

        impl Pair {
            fn new() -> Pair {
                Pair::with(mux_handshake(1))
            }

            fn with(hs: HandshakeResponse) -> Pair {
                let c = Client::new(ClientConfig::default(), &hs, Millis::ZERO).unwrap();
                assert!(c.uses_mux());
                let mut p = Pair {
                    c,
                    srv: server_mux(7),
                    sid: hs.session_id,
                    c2s: VecDeque::new(),
                    s2c: VecDeque::new(),
                    at_server: vec![],
                    at_client: vec![],
                    arrivals: vec![],
                    events: vec![],
                    actions: vec![],
                    now: 0,
                };
                p.pump();
                p.connect();
                p.run(usize::MAX, 50);
                p
            }

            /// The socket opens on both ends; the server welcomes first.
            fn connect(&mut self) {
                self.actions.clear();
                self.c.handle_socket_open(ms(self.now));
                self.srv.handle_transport_resumed(ms(self.now));
                let w = Control::Welcome {
                    session_id: self.sid,
                    server_time: 0,
                    heartbeat_interval_ms: 30_000,
                    heartbeat_timeout_ms: 60_000,
                    app_version: None,
                };
                let f = payload::control_frame(&w, Encoding::Msgpack, Some(&Dictionary::v1()), 0);
                self.srv.send(Lane::Control, f).unwrap();
                self.pump();
            }

            /// The socket dies: frames in flight are lost.
            fn cut(&mut self) {
                self.c2s.clear();
                self.s2c.clear();
                self.srv.handle_transport_lost();
                self.c.handle_socket_closed(1006, ms(self.now));
                self.pump();
            }

            /// Drains both ends once; returns whether anything moved.
            fn pump(&mut self) -> bool {
                let mut moved = false;
                self.c.handle_clock(ms(self.now));
                self.c.handle_transport_buffered(0);
                loop {
                    match self.c.poll_output(ms(self.now)) {
                        Output::Transmit(b) => self.c2s.push_back(b),
                        Output::Action(a) => self.actions.push(a),
                        Output::Event(Event::Message(m)) => {
                            self.at_client.push((m.lane, number(&m.value)));
                        }
                        Output::Event(e) => self.events.push(e),
                        Output::Timeout(_) => break,
                    }
                    moved = true;
                }
                self.srv.handle_transport_buffered(0);
                loop {
                    match self.srv.poll_output(ms(self.now)) {
                        MuxOutput::Event(MuxEvent::Message { lane, bytes, .. }) => {
                            let (h, body) = FrameHeader::decode(&bytes).unwrap();
                            if h.kind == FrameKind::Data {
                                let v = payload::decode(&h, body, Some(&Dictionary::v1()));
                                self.at_server.push((lane, number(&v.unwrap())));
                                self.arrivals.push(self.now);
                            }
                        }
                        MuxOutput::Event(MuxEvent::Error(e)) => panic!("server mux error {e}"),
                        MuxOutput::Event(_) => {}
                        MuxOutput::Transmit(f) => self.s2c.push_back(f),
                        MuxOutput::Timeout(_) => break,
                    }
                    moved = true;
                }
                moved
            }

            /// Delivers up to `budget` frames each way (`usize::MAX`: until idle), stepping
            /// time by 1 ms whenever nothing is in flight.
            fn run(&mut self, mut budget: usize, dur_ms: u64) {
                let end = self.now + dur_ms;
                while self.now < end && budget > 0 {
                    let mut moved = self.pump();
                    while budget > 0 {
                        let (a, b) = (self.c2s.pop_front(), self.s2c.pop_front());
                        if a.is_none() && b.is_none() {
                            break;
                        }
                        if let Some(f) = a {
                            self.srv.handle_input(&f, ms(self.now));
                        }
                        if let Some(f) = b {
                            self.c.handle_frame(&f, ms(self.now));
                        }
                        budget -= 1;
                        moved |= self.pump();
                    }
                    if !moved {
                        self.now += 1;
                        self.c.handle_timeout(ms(self.now));
                        if self.srv.next_deadline().is_some_and(|t| t <= self.now) {
                            self.srv.handle_timeout(ms(self.now));
                        }
                    }
                }
            }

            /// Waits for the client's reconnect timer and the action it asks for.
            fn await_action(&mut self) -> Action {
                for _ in 0..40_000 {
                    if let Some(a) = self.actions.pop() {
                        return a;
                    }
                    self.run(usize::MAX, 1);
                }
                panic!("no action");
            }

            fn send_server(&mut self, lane: Lane, v: &Value) {
                let (p, d) =
                    payload::encode(v, Encoding::Msgpack, Some(&Dictionary::v1())).unwrap();
                let f = FrameHeader::data(lane, Encoding::Msgpack, 0, d).encode(&p);
                self.srv.send(lane, f).unwrap();
            }
        }

        fn in_order(got: &[(Lane, u64)], lane: Lane) -> Vec<u64> {
            got.iter().filter(|x| x.0 == lane).map(|x| x.1).collect()
        }

        #[test]
        fn messages_survive_reconnects_once_and_in_order() {
            let mut p = Pair::new();
            assert_eq!(p.c.state(), ConnectionState::Open);
            let mut sent = 0;
            for round in 0..4 {
                for _ in 0..30 {
                    sent += 1;
                    let pad = if sent % 7 == 0 { 40_000 } else { 10 };
                    p.c.send(Lane::Messaging, numbered(sent, 10), None).unwrap();
                    p.c.send(Lane::Data, numbered(sent, pad), None).unwrap();
                    p.send_server(Lane::Messaging, &numbered(sent, 10));
                    p.send_server(Lane::Data, &numbered(sent, pad));
                }
                // Some frames get through, then the socket dies with frames in flight.
                p.run(17 + round * 5, 50);
                p.cut();
                assert_eq!(p.c.state(), ConnectionState::Reconnecting);
                assert!(matches!(p.await_action(), Action::OpenSocket { .. }));
                p.connect();
            }
            p.run(usize::MAX, 500);
            let all: Vec<u64> = (1..=sent).collect();
            for lane in [Lane::Messaging, Lane::Data] {
                assert_eq!(
                    in_order(&p.at_server, lane),
                    all,
                    "client → server, {lane:?}"
                );
                assert_eq!(
                    in_order(&p.at_client, lane),
                    all,
                    "server → client, {lane:?}"
                );
            }
            assert!(
                !p.events
                    .iter()
                    .any(|e| matches!(e, Event::Discontinuity(_) | Event::Error { .. })),
                "{:?}",
                p.events
            );
            assert_eq!(p.c.state(), ConnectionState::Open);
        }

        #[test]
        fn server_restart_is_a_discontinuity_never_a_silent_gap() {
            let mut p = Pair::new();
            for n in 1..=20 {
                p.send_server(Lane::Messaging, &numbered(n, 10));
                p.c.send(Lane::Messaging, numbered(n, 10), None).unwrap();
            }
            p.run(12, 50);
            // The server restarts: it refuses the old session the §5 way and closes 4404.
            p.c2s.clear();
            p.s2c.clear();
            p.srv = server_mux(99);
            let err = Control::Error {
                code: ErrorCode::SessionNotFound,
                error: "unknown session".into(),
                lane: None,
                seq: None,
                retry_after_ms: None,
            };
            p.c.handle_socket_open(ms(p.now));
            let f = payload::control_frame(&err, Encoding::Msgpack, Some(&Dictionary::v1()), 1);
            p.c.handle_frame(&f, ms(p.now));
            p.c.handle_socket_closed(CLOSE_SESSION_NOT_FOUND, ms(p.now));
            p.pump();
            assert_eq!(p.await_action(), Action::Handshake);
            let hs = mux_handshake(2);
            p.sid = hs.session_id;
            p.c.handle_handshake(&hs, ms(p.now)).unwrap();
            assert!(
                p.c.uses_mux(),
                "the multiplexer is kept across the re-handshake"
            );
            assert!(matches!(p.await_action(), Action::OpenSocket { .. }));
            let before = in_order(&p.at_client, Lane::Messaging);
            let srv_before = in_order(&p.at_server, Lane::Messaging);
            p.connect();
            for n in 21..=30 {
                p.send_server(Lane::Messaging, &numbered(n, 10));
                p.c.send(Lane::Messaging, numbered(n, 10), None).unwrap();
            }
            p.run(usize::MAX, 500);
            assert_eq!(p.c.state(), ConnectionState::Open);
            // The client followed the old server's Messaging stream: the restart is reported.
            let d: Vec<&Discontinuity> = p
                .events
                .iter()
                .filter_map(|e| match e {
                    Event::Discontinuity(d) => Some(d),
                    _ => None,
                })
                .collect();
            assert!(
                d.iter()
                    .any(|d| d.lane == Lane::Messaging
                        && d.reason == DiscontinuityReason::PeerRestarted),
                "{d:?}"
            );
            // Delivery continues in order with the new server's messages, no duplicate.
            let got = in_order(&p.at_client, Lane::Messaging);
            assert!(!before.is_empty() && before.len() < 20, "{before:?}");
            assert_eq!(got[before.len()..], (21..=30).collect::<Vec<_>>());
            assert_eq!(before, (1..=before.len() as u64).collect::<Vec<_>>());
            // What the old server had not acknowledged reaches the new one, in order, once:
            // together the two servers got every number once.
            let mut srv = in_order(&p.at_server, Lane::Messaging);
            let after = srv.split_off(srv_before.len());
            assert_eq!(srv, (1..=srv.len() as u64).collect::<Vec<_>>());
            assert_eq!(*after.last().unwrap(), 30);
            assert!(after.windows(2).all(|w| w[1] == w[0] + 1), "{after:?}");
            assert!(
                after[0] <= srv.len() as u64 + 1,
                "gap: {srv:?} then {after:?}"
            );
        }

        #[test]
        fn full_reliable_lane_refuses_then_drains() {
            let mut p = Pair::new();
            p.cut();
            let depth = Lane::Messaging.spec().queue_depth as u64;
            for n in 1..=depth {
                p.c.send(Lane::Messaging, numbered(n, 10), None).unwrap();
            }
            let e =
                p.c.send(Lane::Messaging, numbered(0, 10), None)
                    .unwrap_err();
            assert_eq!(e.code(), ErrorCode::Backpressure);
            assert!(matches!(p.await_action(), Action::OpenSocket { .. }));
            p.connect();
            p.run(usize::MAX, 200);
            assert!(p.events.iter().any(|e| matches!(
                e,
                Event::Drain {
                    lane: Lane::Messaging
                }
            )));
            assert_eq!(
                in_order(&p.at_server, Lane::Messaging),
                (1..=depth).collect::<Vec<_>>()
            );
        }

        #[test]
        fn paced_lane_through_the_multiplexer_stays_within_the_quota() {
            use crate::core::handshake::{LaneRates, Limits, Rate};
            let quota = Rate {
                per_second: 20.0,
                burst: 5,
            };
            let mut hs = mux_handshake(1);
            hs.limits = Some(Limits {
                rates: Some(LaneRates {
                    bulk: Some(quota),
                    ..LaneRates::default()
                }),
            });
            let mut p = Pair::with(hs);
            for n in 1..=200 {
                p.c.send(Lane::Messaging, numbered(n, 10), None).unwrap();
            }
            p.run(usize::MAX, 12_000);
            assert_eq!(
                in_order(&p.at_server, Lane::Messaging),
                (1..=200).collect::<Vec<_>>()
            );
            let mut server = crate::core::rate::Gcra::new(quota.per_second, quota.burst).unwrap();
            for &t in &p.arrivals {
                assert!(server.conforms(Millis::from_u64(t)), "refused at {t} ms");
                server.consume(Millis::from_u64(t));
            }
            assert!(!p.events.iter().any(|e| matches!(e, Event::Error { .. })));
        }

        #[test]
        fn refused_multiplexed_message_is_sent_again_before_later_ones() {
            let mut p = Pair::new();
            for n in 1..=5 {
                p.c.send(Lane::Messaging, numbered(n, 10), None).unwrap();
            }
            p.run(usize::MAX, 50);
            assert_eq!(in_order(&p.at_server, Lane::Messaging), vec![1, 2, 3, 4, 5]);
            // The server's limiter refuses message 5 (multiplexer seq 5): not processed.
            p.at_server.pop();
            p.arrivals.pop();
            let v = json!({"type": "error", "code": "rate_limited", "error": "slow down",
                           "lane": 2, "seq": 5, "retryAfterMs": 200});
            let (b, d) = payload::encode(&v, Encoding::Msgpack, Some(&Dictionary::v1())).unwrap();
            p.srv
                .send(
                    Lane::Control,
                    FrameHeader::control(Encoding::Msgpack, 0, d).encode(&b),
                )
                .unwrap();
            p.run(usize::MAX, 5);
            let t0 = p.now;
            p.c.send(Lane::Messaging, numbered(6, 10), None).unwrap();
            p.run(usize::MAX, 100);
            assert_eq!(in_order(&p.at_server, Lane::Messaging), vec![1, 2, 3, 4]);
            p.run(usize::MAX, 1_000);
            assert_eq!(
                in_order(&p.at_server, Lane::Messaging),
                vec![1, 2, 3, 4, 5, 6]
            );
            assert!(p.arrivals[4] >= t0 + 190, "held for retryAfterMs");
            assert!(p.events.iter().any(|e| matches!(
                e,
                Event::Error {
                    code: ErrorCode::RateLimited,
                    lane: Some(Lane::Messaging),
                    seq: Some(5),
                    dropped: Some(false),
                    ..
                }
            )));
        }

        #[test]
        fn without_the_grant_frames_stay_v1() {
            let c = Client::new(
                ClientConfig::default(),
                &handshake(1, &mux_lanes()),
                Millis::ZERO,
            )
            .unwrap();
            assert!(!c.uses_mux());
        }
    }
}
