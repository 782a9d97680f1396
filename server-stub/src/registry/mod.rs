//! The session registry: sessions, rooms, routing and each session's outbound side (seed 000
//! "Session Management", seed 001 "Connection Management" / room maps).
//!
//! | module | holds |
//! | --- | --- |
//! | [`session`] | one session, its status body and lane grants |
//! | [`outbound`] | a session's socket queue or multiplexer behind one `send(lane, frame)` |
//! | [`rooms`] | lane rooms: join, leave, membership, room keys |
//! | [`route`] | who receives a Data frame, and delivery into the receivers' outbound sides |
//! | [`encoded`] | a payload in each encoding its receivers need (built outside the lock) |
//! | [`fanout`] | a room's membership messages, pushed in order after the lock is released |
//!
//! Everything here sits in one [`Registry`] behind the server-wide lock of
//! [`crate::state::AppState`]. Its methods do map updates and queue pushes only: work
//! proportional to a client's input (decoding, transcoding, music reconciliation) happens
//! before the lock is taken or after it is released, and so does telling a room's members of
//! a join or leave ([`fanout`]; see [`crate::state`] for the lock rules).
//! The registry knows nothing of music rooms: it records [`RoomEvent`]s (joins and leaves) that
//! the app state hands to the music service once the lock is released.
//!
//! Session lifetime (sliding TTL): a session expires `ttlSeconds` after its last activity (the
//! handshake, any frame received, or its socket closing), and never while a socket is
//! connected. Expired sessions are removed by the sweeper and treated as missing by every
//! lookup in the meantime.
//!
//! Multiplexer (feature flag `mux`, PROTOCOL.md §11): a session granted it owns one `Mux` for
//! its whole life, not per socket, so reliable lanes resume across reconnects. Such a session
//! keeps its room while detached (until its TTL ends): relays keep going into its `Mux`, which
//! forgets the oldest reliable messages when a lane is full while no socket is attached (the
//! member then gets a discontinuity, never a silent gap; an attached member's full lane answers
//! `backpressure` to the sender instead).

pub(crate) mod calls;
pub(crate) mod cluster;
pub(crate) mod encoded;
pub(crate) mod fanout;
pub(crate) mod outbound;
pub(crate) mod presence;
pub(crate) mod rooms;
pub(crate) mod route;
pub(crate) mod session;

use crate::auth::policy::RoomAccess;
use crate::auth::VerifiedIdentity;
use crate::auth::{SessionToken, Tickets};
use crate::close::{self, CloseSignal};
use crate::config::Config;
use crate::limits::bounds::{too_many, PerIp, RegistryBounds};
use crate::limits::ip::IpKey;
use crate::now_ms;
use crate::room_key::RoomKeys;
use crate::sse::hub::SseHub;
use outbound::{queue, Conn, QueueRx, SharedTransport};
use p3_lanes::core::control::Control;
use p3_lanes::core::dictionary::Dictionary;
use p3_lanes::core::error::{ErrorCode, WireError};
use p3_lanes::core::frame::SessionId;
use p3_lanes::core::handshake::Secret;
use p3_lanes::core::lane::{Encoding, Lane};
use p3_lanes::core::mux::Mux;
use p3_lanes::core::sse::is_sse_transport;
use p3_lanes::core::sse::post::{PostLedger, SeqCheck};
pub(crate) use session::Credentials;
use session::{lane_grants, ConnRef, PostOutcome, Session, SessionStatus};
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The "socket" id of a message `POST`ed to a lane ([`crate::sse`]): acts for any live session.
pub(crate) const HTTP_SENDER: u64 = u64::MAX;

/// A membership change the music service must hear of ([`crate::music`]), recorded under the
/// registry lock and handled after it is released.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RoomEvent {
    /// `sid` joined `room`; `members` are all its members (the joiner included) with their
    /// verified identity keys ([`p3_lanes::core::auth::Identity::key`]).
    Joined {
        room: String,
        sid: SessionId,
        members: Vec<(SessionId, Option<String>)>,
    },
    /// `sid` left `room`; `remaining` are the members still in it. `explicit`: it said so
    /// (`leave`, a `join` of another room, `DELETE` of its session) rather than vanished (v1
    /// socket closed, session expired): the music room's DJ grace applies only to the latter.
    Left {
        room: String,
        sid: SessionId,
        remaining: Vec<SessionId>,
        explicit: bool,
    },
}

/// Outcome of [`Registry::attach`].
#[derive(Debug)]
pub(crate) enum Attach {
    /// The socket is now the session's; its welcome frame is queued.
    Attached {
        conn_id: u64,
        rx: QueueRx,
        close: Arc<CloseSignal>,
        /// Multiplexed session: wakes its send task.
        notify: Option<Arc<Notify>>,
        /// The session's outbound side (its own lock): the socket's tasks use it directly.
        transport: SharedTransport,
    },
    /// Unknown or expired session.
    NotFound,
    /// The server is shutting down.
    ShuttingDown,
}

/// A Control `error` message.
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
        retry_after_ms: None,
    }
}

/// A session about to be created: what its handshake negotiated (PROTOCOL.md §3).
#[derive(Debug)]
pub(crate) struct NewSession {
    /// The client's address (`None`: served without connect info); counts toward
    /// `--max-sessions-per-ip` under its [`IpKey`].
    pub(crate) ip: Option<std::net::IpAddr>,
    pub(crate) client_id: String,
    pub(crate) wallet: Option<String>,
    pub(crate) device_info: Option<serde_json::Map<String, serde_json::Value>>,
    /// The negotiated transport (`websocket`, `sse`, or its seed name `http1`).
    pub(crate) transport: &'static str,
    /// The negotiated lanes and their encodings.
    pub(crate) lanes: Vec<(Lane, Encoding)>,
    /// The identity its handshake's `auth` proved ([`crate::auth`]), if any.
    pub(crate) identity: Option<VerifiedIdentity>,
    /// Who may ring that identity on this session (handshake `acceptCallsFrom`).
    pub(crate) accept_calls_from: p3_lanes::core::call::AcceptCallsFrom,
    /// Whether its handshake asked for room presence (feature `presence`, PROTOCOL.md §6.2).
    pub(crate) presence: bool,
}

#[cfg(test)]
impl NewSession {
    /// A WebSocket session of `client_id` with `lanes`, no address, wallet or device info.
    pub(crate) fn websocket(client_id: &str, lanes: Vec<(Lane, Encoding)>) -> NewSession {
        NewSession {
            ip: None,
            client_id: client_id.into(),
            wallet: None,
            device_info: None,
            transport: "websocket",
            lanes,
            identity: None,
            accept_calls_from: Default::default(),
            presence: false,
        }
    }
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
    ttl: Duration,
    heartbeat_interval_ms: u64,
    heartbeat_timeout_ms: u64,
    queue_frames: usize,
    queue_bytes: usize,
    /// `--lane-queue-bytes`.
    lane_queue_bytes: usize,
    /// `--sse-history`, `--sse-history-bytes`.
    sse_limits: (usize, usize),
    /// The app version served in pages (`--app-version`, changed by `POST /api/admin/version`).
    app_version: String,
    /// `--reported-version`: what `/api/version` and the Control pushes say instead.
    reported_version: Option<String>,
    /// Room keys for sealing between peers ([`crate::room_key`]).
    room_keys: RoomKeys,
    /// Joins and leaves not yet handed to the music service.
    events: Vec<RoomEvent>,
    /// Per room: membership messages on their way to its members' transports
    /// ([`fanout`]). Kept while a fan-out is in flight even if the room is gone.
    outboxes: HashMap<String, Arc<fanout::RoomOutbox>>,
    /// Outboxes given fan-outs since the last [`Registry::take_fanouts`].
    fanouts: Vec<Arc<fanout::RoomOutbox>>,
    /// Sessions, rooms and members bounds (issue 11, [`crate::limits::bounds`]).
    bounds: RegistryBounds,
    /// Live sessions per client address.
    sessions_per_ip: PerIp,
    /// Open SSE streams per client address.
    sse_per_ip: PerIp,
    /// When [`Registry::sweep`] last ran.
    last_sweep: Option<Instant>,
    /// Lifetime of a ticket (`--ticket-ttl-ms`).
    ticket_ttl: Duration,
    /// `--room-access`: checked on every join ([`crate::auth::policy`]).
    room_access: RoomAccess,
    /// Calls addressed to an identity ([`crate::calls`]).
    calls: crate::calls::book::CallBook,
    /// Identity key ([`p3_lanes::core::call::identity_key`]) → its live sessions, oldest
    /// first: who a call to that identity rings.
    by_identity: HashMap<String, Vec<SessionId>>,
    /// `--call-ring-timeout-ms`.
    call_ring_timeout_ms: u64,
    /// Cluster only ([`cluster`]): per room with members here, its members held by other
    /// nodes (which node holds each, and their presence).
    remote: HashMap<String, HashMap<SessionId, cluster::RemoteMember>>,
}

impl Registry {
    /// An empty registry for `config`.
    pub(crate) fn new(config: &Config, dict: Dictionary) -> Registry {
        Registry {
            sessions: HashMap::new(),
            rooms: HashMap::new(),
            next_conn_id: 1,
            shutting_down: false,
            dict,
            ttl: config.ttl(),
            heartbeat_interval_ms: config.heartbeat_interval_ms,
            heartbeat_timeout_ms: config.heartbeat_timeout_ms,
            queue_frames: config.queue_frames,
            queue_bytes: config.queue_bytes,
            lane_queue_bytes: config.lane_queue_bytes,
            sse_limits: (config.sse_history, config.sse_history_bytes),
            app_version: config.app_version.clone(),
            reported_version: config.reported_version.clone(),
            room_keys: RoomKeys::new(config.redis_url.is_some()),
            events: Vec::new(),
            outboxes: HashMap::new(),
            fanouts: Vec::new(),
            bounds: RegistryBounds::from_config(config),
            sessions_per_ip: PerIp::default(),
            sse_per_ip: PerIp::default(),
            last_sweep: None,
            ticket_ttl: Duration::from_millis(config.ticket_ttl_ms),
            room_access: config.room_access,
            calls: Default::default(),
            by_identity: HashMap::new(),
            call_ring_timeout_ms: config.call_ring_timeout_ms,
            remote: HashMap::new(),
        }
    }

    /// The joins and leaves recorded since the last call.
    pub(crate) fn take_events(&mut self) -> Vec<RoomEvent> {
        std::mem::take(&mut self.events)
    }

    /// The room outboxes given fan-outs since the last call: to drain once the registry lock
    /// is released ([`fanout::RoomOutbox::drain`]).
    pub(crate) fn take_fanouts(&mut self) -> Vec<Arc<fanout::RoomOutbox>> {
        std::mem::take(&mut self.fanouts)
    }

    /// Room `room`'s outbox, if it has one (tests).
    #[cfg(test)]
    pub(crate) fn outbox_for_test(&self, room: &str) -> Option<Arc<fanout::RoomOutbox>> {
        self.outboxes.get(room).cloned()
    }

    /// The session if it exists and has not expired; an expired one is removed.
    fn live(&mut self, sid: SessionId, now: Instant) -> Option<&mut Session> {
        if self.expired(sid, now)? {
            self.leave_room(sid, false);
            self.remove_session(sid);
            return None;
        }
        self.sessions.get_mut(&sid)
    }

    /// Whether session `sid` expired (`None`: unknown).
    fn expired(&self, sid: SessionId, now: Instant) -> Option<bool> {
        Some(
            self.sessions
                .get(&sid)?
                .expired(now, self.ttl, &self.bounds),
        )
    }

    /// Removes a session from the map and from its address's count.
    fn remove_session(&mut self, sid: SessionId) -> Option<Session> {
        let s = self.sessions.remove(&sid)?;
        self.sessions_per_ip.remove(s.ip);
        self.calls_session_gone(sid, s.identity.as_ref().map(|v| &v.identity));
        Some(s)
    }

    /// The session if `conn_id` is still its socket.
    fn conn_session(&mut self, sid: SessionId, conn_id: u64) -> Option<&mut Session> {
        self.sessions
            .get_mut(&sid)
            .filter(|s| s.conn.as_ref().is_some_and(|c| c.id == conn_id))
    }

    /// The session if socket `conn_id` may act for it: it is still its socket, or the session
    /// is multiplexed (its messages went through the session's `Mux`, which outlives sockets:
    /// one delivered just before a newer socket attached still counts).
    fn sender_session(&mut self, sid: SessionId, conn_id: u64) -> Option<&mut Session> {
        self.sessions.get_mut(&sid).filter(|s| {
            conn_id == HTTP_SENDER || s.mux || s.conn.as_ref().is_some_and(|c| c.id == conn_id)
        })
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

    /// What `GET /api/version`, `welcome` and the `version` push say.
    pub(crate) fn reported_version(&self) -> &str {
        self.reported_version
            .as_deref()
            .unwrap_or(&self.app_version)
    }

    /// The app version served in pages.
    pub(crate) fn app_version(&self) -> &str {
        &self.app_version
    }

    /// Changes the app version and queues Control `version` on every session with a socket or
    /// an SSE history; returns how many got it.
    pub(crate) fn set_app_version(&mut self, version: String) -> usize {
        self.app_version = version;
        let msg = Control::Version {
            version: self.reported_version().to_owned(),
        };
        let connected: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.conn.is_some() || s.sse.is_some())
            .map(|(id, _)| *id)
            .collect();
        connected
            .into_iter()
            .filter(|&sid| self.send_control(sid, &msg))
            .count()
    }

    /// Creates a session from a successful negotiation (with `mux` if granted); returns its
    /// id.
    ///
    /// Errors: `too_many_requests` at `--max-sessions` live sessions, or at
    /// `--max-sessions-per-ip` for the client's [`IpKey`].
    pub(crate) fn create_session(
        &mut self,
        new: NewSession,
        mux: Option<Mux>,
        now: Instant,
    ) -> Result<(SessionId, Credentials), WireError> {
        let NewSession {
            ip,
            client_id,
            wallet,
            device_info,
            transport,
            lanes,
            identity,
            accept_calls_from,
            presence,
        } = new;
        let ip = IpKey::of(ip);
        let swept_lately = self
            .last_sweep
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1));
        if self.sessions.len() >= self.bounds.max_sessions && !swept_lately {
            // Expired sessions not yet swept do not count (a full sweep at most once a second:
            // refused handshakes at the bound cost no work proportional to the sessions).
            self.sweep(now);
        }
        if self.sessions.len() >= self.bounds.max_sessions {
            return Err(too_many(format!(
                "the server holds its maximum of {} sessions; retry later",
                self.bounds.max_sessions
            )));
        }
        if self.sessions_per_ip.get(ip) >= self.bounds.max_sessions_per_ip {
            return Err(too_many(format!(
                "this address holds its maximum of {} sessions: delete unused ones (DELETE /api/protocol/v2/session/{{id}}) or let them expire",
                self.bounds.max_sessions_per_ip
            )));
        }
        let created = now_ms();
        let sid = loop {
            // Session ids are public member ids (the token is the secret), random all the
            // same: nothing should be inferred from them.
            let mut bytes = [0u8; 16];
            getrandom::fill(&mut bytes).expect("the OS random number generator is available");
            let sid = SessionId::from_random_bytes(bytes);
            if !self.sessions.contains_key(&sid) {
                break sid;
            }
        };
        let (events, bytes) = self.sse_limits;
        let token = SessionToken::generate();
        let mut tickets = Tickets::default();
        let credentials = Credentials {
            token: token.to_wire(),
            ticket: tickets.mint(now, self.ticket_ttl),
        };
        self.sessions.insert(
            sid,
            Session {
                token,
                tickets,
                client_id,
                wallet,
                device_info,
                transport,
                lanes,
                created_at_ms: created,
                last_activity: now,
                last_activity_ms: created,
                room: None,
                ip,
                attached: false,
                mux: mux.is_some(),
                out: Arc::new(Mutex::new(outbound::Transport {
                    conn: None,
                    mux,
                    resume: Default::default(),
                })),
                conn: None,
                sse: is_sse_transport(transport).then(|| SseHub::new(events, bytes)),
                posts: PostLedger::new(),
                identity,
                accept_calls_from,
                presence,
                room_since_ms: 0,
                room_order: 0,
            },
        );
        if let Some(key) = self
            .sessions
            .get(&sid)
            .and_then(|s| s.identity.as_ref())
            .and_then(|v| p3_lanes::core::call::identity_key(&v.identity))
        {
            self.by_identity.entry(key).or_default().push(sid);
        }
        self.sessions_per_ip.add(ip);
        Ok((sid, credentials))
    }

    /// Whether `token` is live session `sid`'s token (constant-time comparison; false for an
    /// unknown or expired session).
    pub(crate) fn authorize(&mut self, sid: SessionId, token: &str, now: Instant) -> bool {
        self.live(sid, now).is_some_and(|s| s.token.verify(token))
    }

    /// Mints a ticket for live session `sid` (the caller checked its token).
    pub(crate) fn mint_ticket(&mut self, sid: SessionId, now: Instant) -> Option<Secret> {
        let ttl = self.ticket_ttl;
        Some(self.live(sid, now)?.tickets.mint(now, ttl))
    }

    /// Uses `ticket` of session `sid`: true if it was live (it is forgotten either way).
    pub(crate) fn redeem_ticket(&mut self, sid: SessionId, ticket: &str, now: Instant) -> bool {
        self.live(sid, now)
            .is_some_and(|s| s.tickets.redeem(ticket, now))
    }

    /// The status of a live session (`ttl_seconds`: the configured TTL).
    pub(crate) fn status(
        &mut self,
        sid: SessionId,
        ttl_seconds: u64,
        now: Instant,
    ) -> Option<SessionStatus> {
        let s = self.live(sid, now)?;
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
            identity: s.identity.as_ref().map(|i| i.identity.clone()),
        })
    }

    /// Deletes a live session: it leaves its room (peers get `peer-left`) and its socket is
    /// closed with 4404. `false` if it was unknown or expired.
    pub(crate) fn delete_session(&mut self, sid: SessionId, now: Instant) -> bool {
        if self.live(sid, now).is_none() {
            return false;
        }
        self.leave_room(sid, true);
        if let Some(s) = self.remove_session(sid) {
            if let Some(c) = s.conn {
                c.close.close(close::SESSION_NOT_FOUND, "session deleted");
            }
        }
        true
    }

    /// Makes a new socket the session's: an older socket is closed with 4409 and a v1 session
    /// leaves its room; the `welcome` frame is queued first on the new socket.
    pub(crate) fn attach(&mut self, sid: SessionId, now: Instant) -> Attach {
        if self.shutting_down {
            return Attach::ShuttingDown;
        }
        let Some(s) = self.live(sid, now) else {
            return Attach::NotFound;
        };
        s.touch(now);
        s.attached = true;
        // Multiplexed and SSE sessions keep their room across reconnects.
        let keeps_room = s.mux || s.sse.is_some();
        if let Some(old) = s.conn.take() {
            old.close.close(close::REPLACED, "replaced");
        }
        if !keeps_room {
            self.leave_room(sid, false);
        }
        let conn_id = self.next_conn_id;
        self.next_conn_id += 1;
        let (q, rx) = queue(self.queue_frames, self.queue_bytes, self.lane_queue_bytes);
        let conn = Conn::new(conn_id, q);
        let (close, notify) = (conn.close.clone(), conn.notify());
        let welcome = self.welcome(sid);
        let Some(s) = self.sessions.get_mut(&sid) else {
            return Attach::NotFound;
        };
        s.conn = Some(ConnRef {
            id: conn_id,
            close: close.clone(),
        });
        outbound::lock(&s.out).attach(conn);
        let mux = s.mux;
        let transport = s.out.clone();
        // With the multiplexer: the first Control message after the resume.
        self.send_control(sid, &welcome);
        Attach::Attached {
            conn_id,
            rx,
            close,
            notify: mux.then_some(notify),
            transport,
        }
    }

    /// Socket `conn_id` of `sid` ended: if it still owned the session, a v1 session without
    /// SSE leaves its room (peers get `peer-left`); the TTL starts counting from now.
    pub(crate) fn detach(&mut self, sid: SessionId, conn_id: u64, now: Instant) {
        let Some(s) = self.conn_session(sid, conn_id) else {
            return;
        };
        s.touch(now);
        s.conn = None;
        outbound::lock(&s.out).detach();
        if !s.mux && s.sse.is_none() {
            self.leave_room(sid, false);
        }
    }

    /// Refuses new sockets from now on and asks every socket to close with 1001.
    pub(crate) fn begin_shutdown(&mut self) {
        self.shutting_down = true;
        for s in self.sessions.values() {
            if let Some(c) = &s.conn {
                c.close.close(close::GOING_AWAY, "server shutting down");
            }
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

    /// Opens an SSE stream of a live session from a client at `ip`: counts it in the
    /// session's hub (created, empty, if it has none yet) and against `ip`'s [`IpKey`], and
    /// marks the session attached; returns the hub and the stream's poll time (to update on
    /// every poll, see [`SseHub::read_within`]). `Ok(None)`: the session is gone.
    ///
    /// Errors: `too_many_requests` at `--max-sse-streams-per-session` open streams of the
    /// session or `--max-sse-per-ip` of the address.
    pub(crate) fn sse_stream_open(
        &mut self,
        sid: SessionId,
        ip: Option<std::net::IpAddr>,
        now: Instant,
    ) -> Result<Option<(&mut SseHub, Arc<AtomicU64>)>, WireError> {
        let (events, bytes) = self.sse_limits;
        let bounds = self.bounds;
        let ip = IpKey::of(ip);
        if self.sse_per_ip.get(ip) >= bounds.max_sse_per_ip {
            return Err(too_many(format!(
                "this address has its maximum of {} SSE streams open",
                bounds.max_sse_per_ip
            )));
        }
        let Some(s) = self.live(sid, now) else {
            return Ok(None);
        };
        if s.sse.as_ref().map_or(0, |h| h.streams) >= bounds.max_sse_streams_per_session {
            return Err(too_many(format!(
                "this session has its maximum of {} SSE streams open: close one first",
                bounds.max_sse_streams_per_session
            )));
        }
        s.touch(now);
        s.attached = true;
        let hub = s.sse.get_or_insert_with(|| SseHub::new(events, bytes));
        hub.streams += 1;
        let polled = Arc::new(AtomicU64::new(outbound::mono_ms()));
        hub.polled.push(polled.clone());
        self.sse_per_ip.add(ip);
        Ok(self
            .sessions
            .get_mut(&sid)
            .and_then(|s| s.sse.as_mut())
            .map(|h| (h, polled)))
    }

    /// An SSE stream of `sid` from `ip` ended: one fewer open stream; the TTL counts from now.
    pub(crate) fn sse_stream_closed(
        &mut self,
        sid: SessionId,
        ip: Option<std::net::IpAddr>,
        polled: &Arc<AtomicU64>,
        now: Instant,
    ) {
        self.sse_per_ip.remove(IpKey::of(ip));
        if let Some(s) = self.sessions.get_mut(&sid) {
            if let Some(hub) = s.sse.as_mut() {
                hub.polled.retain(|p| !Arc::ptr_eq(p, polled));
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

    /// Removes sessions whose TTL ran out; returns how many.
    pub(crate) fn sweep(&mut self, now: Instant) -> usize {
        let (ttl, bounds) = (self.ttl, self.bounds);
        self.last_sweep = Some(now);
        // Multiplexed sessions keep their room while detached: they leave it when they expire.
        let gone: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.expired(now, ttl, &bounds))
            .map(|(id, _)| *id)
            .collect();
        for &sid in &gone {
            self.leave_room(sid, false);
            self.remove_session(sid);
        }
        // Outboxes of rooms gone once their last fan-out went through.
        let rooms = &self.rooms;
        self.outboxes
            .retain(|room, o| rooms.contains_key(room) || Arc::strong_count(o) > 1);
        gone.len()
    }
}
