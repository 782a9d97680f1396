//! The app state: configuration, dictionary, and the services every handler reaches through
//! [`AppState`]: the session registry (module `registry`), the music rooms
//! ([`crate::music`]) and the seed 001 signaling server ([`crate::signaling`]).
//!
//! Dependencies run one way: handlers (`api`, `ws`, `sse`, `signaling`, `pwa`, `webrtc`) →
//! this module → registry / music service / outbound queues → the core ([`p3_lanes::core`]).
//! The registry and the music service never call each other: this module wires them.
//!
//! # Locks (issue 11 "No global stall")
//! - **Registry** (`Mutex<Registry>`, server-wide): held for map updates and queue pushes
//!   only, never across an `.await`, never during work proportional to a client's input.
//!   Decoding, transcoding (`registry::encoded`), JSON parsing of music messages and
//!   the `music-changes` reconcile all run outside it.
//! - **Music rooms** (one `Mutex` per room, [`crate::music`]): a music message is handled
//!   holding only its room's lock; the registry lock is taken briefly before (members) and
//!   after (pushing the deliveries, still under the room lock so a room's messages keep their
//!   order). Order: room lock, then registry lock, never the reverse. Joins and leaves are
//!   recorded by the registry as `RoomEvent`s and handed to the music service when the
//!   registry guard is dropped (`RegistryGuard`), after the lock is released.
//! - **Room fan-out** (per lane room, `registry::fanout`): a join or leave tells the room's
//!   other members (`peer-joined`, `peer-left`, the rotated `room-key`) without the registry
//!   lock: under it the registry only queues the message and its receivers' transports in the
//!   room's outbox (a leaf lock); the `RegistryGuard` pushes it once the registry lock is
//!   released, one thread per room at a time (the room's turn), so each member hears a room's
//!   changes in the order they were made. The turn is never taken with the registry held.
//! - **Session transport** (one `Mutex` per session: its socket queue and multiplexer,
//!   `registry::outbound`): the socket's own tasks feed client input to the multiplexer and pump
//!   its output holding only this lock; the registry takes it nested inside its own to push a
//!   message, a room's turn to push a fan-out. Full order: music room → registry → session
//!   transport, and music room → room turn → session transport.
//! - **Signaling** (its own `Mutex`, [`crate::signaling`]): independent of the others; relayed
//!   messages are encoded after it is released.
//!
//! Poisoned locks: a panic while the registry (or the music room map) is locked may leave it
//! half-updated, and every session depends on it, so the next lock attempt logs at `error`
//! and aborts the process (`lock_or_abort`): the server goes down loudly and its supervisor
//! restarts it, instead of serving from inconsistent maps. A poisoned music room is restarted
//! from a fresh authority (that room only, see [`crate::music`]).

mod cluster;
mod music;
mod relay;
mod sweeper;

pub use crate::registry::session::{lane_grants, SessionStatus};
pub use sweeper::spawn_sweeper;

pub(crate) use crate::lock::lock_or_abort;
pub(crate) use relay::RelayNote;

use crate::config::Config;
use crate::music::MusicService;
use crate::registry::{Attach, NewSession, Registry, RoomEvent};
use p3_lanes::core::dictionary::{Dictionary, DictionaryWire};
use p3_lanes::core::frame::SessionId;
use p3_lanes::core::handshake::ServerCapabilities;
use p3_lanes::core::lane::{Encoding, Lane};
use p3_lanes::core::mux::{Mux, MuxConfig};
use p3_lanes::core::p2p::changes::ChangeLimits;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Shared state of one server: configuration, dictionary, sessions, rooms and music rooms.
#[derive(Debug)]
pub struct AppState {
    config: Config,
    dict: Dictionary,
    dict_wire: DictionaryWire,
    caps: ServerCapabilities,
    registry: Mutex<Registry>,
    /// Music room authorities, a lock per room.
    music: MusicService,
    /// The seed 001 signaling server ([`crate::signaling`]).
    signaling: crate::signaling::Hub,
    shutdown: watch::Sender<bool>,
    sockets: watch::Sender<usize>,
    /// Rate limits ([`crate::limits`]).
    limits: crate::limits::Limits,
    /// The admin endpoints' token ([`crate::auth::AdminToken`]).
    admin_token: crate::auth::AdminToken,
    /// Identity verification, room access, TURN credentials ([`crate::auth`]).
    auth: crate::auth::Auth,
    /// Metrics and the pulse stream ([`crate::pulse`]).
    pulse: crate::pulse::Pulse,
    /// With `--redis-url`: the other nodes ([`crate::cluster`]).
    cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// The locked registry. Dropping it releases the lock, then pushes the room fan-outs recorded
/// meanwhile (`registry::fanout`), then hands the joins and leaves to the music service (which
/// may deliver `sync-state`s).
///
/// Code running under a music room's lock (its delivery callback) only pushes messages, which
/// never records a join or leave, so such a drop never re-enters a room lock.
pub(crate) struct RegistryGuard<'a> {
    state: &'a AppState,
    guard: Option<MutexGuard<'a, Registry>>,
}

impl Deref for RegistryGuard<'_> {
    type Target = Registry;
    fn deref(&self) -> &Registry {
        self.guard.as_ref().expect("guard held until drop")
    }
}

impl DerefMut for RegistryGuard<'_> {
    fn deref_mut(&mut self) -> &mut Registry {
        self.guard.as_mut().expect("guard held until drop")
    }
}

impl Drop for RegistryGuard<'_> {
    fn drop(&mut self) {
        let Some(mut guard) = self.guard.take() else {
            return;
        };
        let events = guard.take_events();
        let fanouts = guard.take_fanouts();
        drop(guard);
        if std::thread::panicking() {
            return;
        }
        // Membership messages first (a member hears `peer-joined` before the music service's
        // answer to that join), each room's in order.
        for outbox in &fanouts {
            outbox.drain(&self.state.dict);
        }
        if !events.is_empty() {
            self.state.room_events(events);
        }
    }
}

impl AppState {
    /// State for a server configured by `config`, with dictionary v2 and the default
    /// capabilities (websocket, sse; msgpack, json).
    pub fn new(config: Config) -> Arc<AppState> {
        let dict = Dictionary::current();
        // A malformed `--redis-url` (`main` checks it first and exits instead): one process.
        let cluster = crate::cluster::Cluster::new(&config)
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "--redis-url refused; running as a single node");
                None
            })
            .map(Arc::new);
        Arc::new(AppState {
            cluster: cluster.clone(),
            registry: Mutex::new(Registry::new(&config, dict.clone())),
            music: MusicService::new(config.ttl())
                .with_change_limits(ChangeLimits {
                    max_changes_per_push: config.max_changes_per_push,
                    max_origins_per_room: config.max_origins_per_room,
                })
                .with_dj(
                    Duration::from_secs(config.dj_grace_s),
                    crate::music::store::DjStore::open(config.state_dir.as_deref()),
                )
                .in_cluster(cluster.clone()),
            dict_wire: dict.to_wire(),
            dict,
            caps: ServerCapabilities::default(),
            signaling: crate::signaling::Hub::new(
                config.signaling_token_ttl_s.saturating_mul(1000),
                cluster.clone(),
            ),
            shutdown: watch::channel(false).0,
            sockets: watch::channel(0).0,
            limits: crate::limits::Limits::new(&config),
            admin_token: config
                .admin_token
                .clone()
                .unwrap_or_else(crate::auth::AdminToken::generate),
            // An unusable JWT key fails closed: tokens are refused (`main` checks the
            // configuration first and exits instead).
            auth: crate::auth::Auth::from_config(&config).unwrap_or_else(|e| {
                tracing::error!(error = %e, "auth configuration refused; app tokens disabled");
                crate::auth::Auth::from_config(&Config {
                    jwt_secret: None,
                    jwt_public_key: None,
                    ..config.clone()
                })
                .expect("an auth configuration without JWT key is valid")
            }),
            // In a cluster the pulse node id is the cluster's node name (PROTOCOL.md §18.2).
            pulse: match &cluster {
                Some(c) => crate::pulse::Pulse::with_node_id(c.node().to_owned()),
                None => crate::pulse::Pulse::new(),
            },
            config,
        })
    }

    /// Metrics and the pulse stream ([`crate::pulse`]).
    pub fn pulse(&self) -> &crate::pulse::Pulse {
        &self.pulse
    }

    /// Open WebSockets (sessions', signaling, pulse).
    pub fn open_sockets(&self) -> usize {
        *self.sockets.borrow()
    }

    /// The admin token: `--admin-token`, or the one generated at start-up.
    pub fn admin_token(&self) -> &crate::auth::AdminToken {
        &self.admin_token
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The decode budget of a payload received on `lane` ([`crate::limits::bounds::lane_budget`]).
    pub fn decode_budget(&self, lane: Lane) -> p3_lanes::core::codec::DecodeBudget {
        crate::limits::bounds::lane_budget(lane, self.config.max_changes_per_push)
    }

    /// Identity verification, room access policy, TURN credentials ([`crate::auth`]).
    pub fn auth(&self) -> &crate::auth::Auth {
        &self.auth
    }

    /// The rate limits ([`crate::limits`]).
    pub fn limits(&self) -> &crate::limits::Limits {
        &self.limits
    }

    /// The seed 001 signaling server's state.
    pub(crate) fn signaling(&self) -> &crate::signaling::Hub {
        &self.signaling
    }

    /// The app version served in pages (`<meta name="app-version">`).
    pub fn app_version(&self) -> String {
        self.registry().app_version().to_owned()
    }

    /// The version `GET /api/version` answers: `--reported-version` if set, else
    /// [`AppState::app_version`].
    pub fn reported_version(&self) -> String {
        self.registry().reported_version().to_owned()
    }

    /// Changes the app version at runtime and queues Control `version` (the reported version)
    /// on every open socket and SSE history; returns how many sessions. Sockets attached later
    /// get it in `welcome`.
    pub fn set_app_version(&self, version: String) -> usize {
        self.registry().set_app_version(version)
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

    /// Locks the registry (see the module docs for what may run under it, and for poisoning).
    pub(crate) fn registry(&self) -> RegistryGuard<'_> {
        RegistryGuard {
            state: self,
            guard: Some(lock_or_abort(&self.registry, "registry")),
        }
    }

    /// Creates a session from a successful negotiation; returns its id, whether the
    /// multiplexer was granted, and its credentials (token and first ticket).
    ///
    /// Errors: `too_many_requests` (see [`Registry::create_session`]).
    pub(crate) fn create_session(
        &self,
        new: NewSession,
        want_mux: bool,
    ) -> Result<(SessionId, bool, crate::registry::Credentials), p3_lanes::core::error::WireError>
    {
        let mux = want_mux.then(|| self.new_mux(&new.lanes)).flatten();
        let granted = mux.is_some();
        let (sid, credentials) = self.registry().create_session(new, mux, Instant::now())?;
        Ok((sid, granted, credentials))
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
        // Relay queues per lane are bounded in bytes as well as messages (issue 11).
        cfg.max_queue_bytes = Some(self.config.lane_queue_bytes);
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
        self.registry()
            .status(sid, self.config.session_ttl_s, Instant::now())
    }

    /// Deletes a live session: it leaves its room (peers get `peer-left`) and its socket is
    /// closed with 4404. `false` if it was unknown or expired.
    pub fn delete_session(&self, sid: SessionId) -> bool {
        self.registry().delete_session(sid, Instant::now())
    }

    /// Makes a new socket the session's (see [`Registry::attach`]).
    pub(crate) fn attach(&self, sid: SessionId) -> Attach {
        self.registry().attach(sid, Instant::now())
    }

    /// Socket `conn_id` of `sid` ended (see [`Registry::detach`]).
    pub(crate) fn detach(&self, sid: SessionId, conn_id: u64) {
        self.registry().detach(sid, conn_id, Instant::now());
    }

    /// Removes expired sessions and forgets music rooms empty for a TTL; returns how many
    /// sessions.
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        let removed = self.registry().sweep(now);
        self.music.sweep(now);
        removed
    }

    /// Starts shutting down: refuses new sockets and asks every socket to close with 1001.
    pub fn begin_shutdown(&self) {
        self.registry().begin_shutdown();
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

    /// Joins and leaves, handed to the music service outside the registry lock.
    fn room_events(&self, events: Vec<RoomEvent>) {
        self.cluster_room_events(&events);
        for ev in &events {
            if self.cluster.is_some() {
                // The room's authority serves its members on every node.
                let (ev, room) = self.with_remote_members(ev);
                self.music
                    .on_event(&ev, |out| self.deliver_music(Some(&room), None, out));
            } else {
                self.music
                    .on_event(ev, |out| self.deliver_music(None, None, out));
            }
        }
    }
}

/// Keeps [`AppState`]'s open-socket count while a WebSocket task runs.
pub(crate) struct SocketGuard(Arc<AppState>);

impl Drop for SocketGuard {
    fn drop(&mut self) {
        self.0.sockets.send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::HTTP_SENDER;
    use p3_lanes::core::control::Control;
    use serde_json::json;
    use std::time::Duration;

    /// Issue 11 "No global stall": while one room's music work is in progress (here: waiting
    /// for its room lock, as during a long `music-changes` reconcile), neither the registry
    /// lock nor any other room is held: another room's music message and any registry work go
    /// through. With the authority under the registry lock (as before), the registry would be
    /// locked during the wait.
    #[test]
    fn a_busy_music_room_holds_neither_the_registry_nor_other_rooms() {
        let state = AppState::new(Config::default());
        let lanes = vec![
            (Lane::Control, Encoding::Json),
            (Lane::Sync, Encoding::Json),
        ];
        let member = |room: &str| {
            let sid = state
                .registry()
                .create_session(
                    NewSession::websocket(room, lanes.clone()),
                    None,
                    Instant::now(),
                )
                .unwrap()
                .0;
            state.registry().join(sid, room.into()).unwrap();
            sid
        };
        let (a, b) = (member("r1"), member("r2"));
        let claim = json!({"type": "music-control", "action": "handover", "data": {}, "sequence": 1, "epoch": 0});
        state.music_message(a, HTTP_SENDER, 1, claim.clone());
        let r1 = state.music.room_for_test("r1").expect("r1 is a music room");
        let busy = r1.lock().unwrap();
        let worker = std::thread::spawn({
            let state = state.clone();
            let push = json!({"type": "music-changes", "epoch": 1, "changes": []});
            move || state.music_message(a, HTTP_SENDER, 2, push)
        });
        // The worker has looked r1 up (its own handle on the room) and waits for its lock.
        let mut waited = 0;
        while Arc::strong_count(&r1) < 3 {
            assert!(waited < 5_000, "the worker never reached the room");
            std::thread::sleep(Duration::from_millis(1));
            waited += 1;
        }
        assert!(
            state.registry.try_lock().is_ok(),
            "the registry is free while r1 is busy"
        );
        state.music_message(b, HTTP_SENDER, 1, claim);
        assert!(
            state.music.room_for_test("r2").is_some(),
            "r2 handled meanwhile"
        );
        drop(busy);
        worker.join().unwrap();
    }

    /// A v1 session with a socket (JSON Control lane): its id, the socket's queue and its
    /// transport.
    fn with_socket(
        state: &AppState,
        name: &str,
    ) -> (
        SessionId,
        crate::registry::outbound::QueueRx,
        crate::registry::outbound::SharedTransport,
    ) {
        let lanes = vec![(Lane::Control, Encoding::Json)];
        let sid = state
            .registry()
            .create_session(NewSession::websocket(name, lanes), None, Instant::now())
            .unwrap()
            .0;
        let Attach::Attached { rx, transport, .. } = state.attach(sid) else {
            panic!("attached");
        };
        (sid, rx, transport)
    }

    /// The Control messages queued on a socket so far.
    async fn drain_controls(
        state: &AppState,
        rx: &mut crate::registry::outbound::QueueRx,
    ) -> Vec<p3_lanes::core::control::Control> {
        use p3_lanes::core::frame::FrameHeader;
        let mut out = Vec::new();
        while let Ok(Some(f)) = tokio::time::timeout(Duration::from_millis(50), rx.recv()).await {
            let (h, body) = FrameHeader::decode(&f).unwrap();
            out.push(
                p3_lanes::core::payload::decode_control(&h, body, Some(state.dict())).unwrap(),
            );
        }
        out
    }

    /// Waits (at most 5 s) until `done` holds for the registry, without ever blocking on it.
    fn wait_for(state: &AppState, what: &str, done: impl Fn(&Registry) -> bool) {
        for _ in 0..5_000 {
            if let Ok(reg) = state.registry.try_lock() {
                if done(&reg) {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("{what}: not within 5 s (the registry stayed locked?)");
    }

    /// Issue 11 "No global stall" (room stuffing): telling a room's members of a join happens
    /// after the registry lock is released. Here one member's transport is held (a slow
    /// push): the join is made, its `peer-joined` is on its way, and the registry is free
    /// meanwhile. Pushing under the registry lock (as before) keeps it locked until the
    /// member's transport is free.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_join_tells_the_room_with_the_registry_released() {
        let state = AppState::new(Config::default());
        let (x, mut rx, transport) = with_socket(&state, "x");
        state.registry().join(x, "r".into()).unwrap();
        let lanes = vec![(Lane::Control, Encoding::Json)];
        let j = state
            .registry()
            .create_session(NewSession::websocket("j", lanes), None, Instant::now())
            .unwrap()
            .0;
        drain_controls(&state, &mut rx).await;
        let held = crate::registry::outbound::lock(&transport);
        let joiner = std::thread::spawn({
            let state = state.clone();
            move || state.registry().join(j, "r".into()).unwrap()
        });
        // The joiner is a member and its fan-out was taken off the room's queue: it is
        // being pushed (waiting for x's transport).
        wait_for(&state, "the join", |reg| {
            reg.room_members("r").contains(&j)
                && reg.outbox_for_test("r").is_some_and(|o| o.queued() == 0)
        });
        assert!(
            state.registry.try_lock().is_ok(),
            "the registry is free while the room is told"
        );
        drop(held);
        joiner.join().unwrap();
        let got = drain_controls(&state, &mut rx).await;
        assert!(
            matches!(got.as_slice(), [Control::PeerJoined { session_id, .. }] if *session_id == j),
            "x hears of j once the push goes through: {got:?}"
        );
    }

    /// Per-room order: while one join's fan-out is stuck (a member's transport is held), later
    /// joins of the same room queue their fan-outs behind it, untouched (one thread pushes a
    /// room's fan-outs at a time, in queue order), and their joiners return only once theirs
    /// went through; the member hears every `peer-joined` once, in join order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn joins_behind_a_stuck_fan_out_queue_in_join_order() {
        const LATER: usize = 11;
        let state = AppState::new(Config::default());
        let (x, mut rx, transport) = with_socket(&state, "x");
        state.registry().join(x, "r".into()).unwrap();
        drain_controls(&state, &mut rx).await;
        let joiner = |name: String| {
            let state = state.clone();
            std::thread::spawn(move || {
                let (sid, rx, _t) = with_socket(&state, &name);
                state.registry().join(sid, "r".into()).unwrap();
                // Keeps its socket (and so its membership) until the end.
                (sid, rx)
            })
        };
        let held = crate::registry::outbound::lock(&transport);
        let first = joiner("j0".into());
        wait_for(&state, "the first join", |reg| {
            reg.room_members("r").len() == 2
                && reg.outbox_for_test("r").is_some_and(|o| o.queued() == 0)
        });
        let later: Vec<_> = (1..=LATER).map(|i| joiner(format!("j{i}"))).collect();
        wait_for(&state, "the later joins", |reg| {
            reg.room_members("r").len() == LATER + 2
        });
        // Let them reach the room's turn.
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !later.iter().any(|t| t.is_finished()),
            "a joiner returns once its fan-out went through"
        );
        let outbox = state.registry().outbox_for_test("r").unwrap();
        assert_eq!(
            outbox.queued(),
            LATER,
            "their fan-outs wait in the queue, behind the stuck one"
        );
        drop(held);
        let _keep = first.join().unwrap();
        let _keep_later: Vec<_> = later.into_iter().map(|t| t.join().unwrap()).collect();
        let order: Vec<SessionId> = state.registry().room_members("r")[1..].to_vec();
        let heard: Vec<SessionId> = drain_controls(&state, &mut rx)
            .await
            .into_iter()
            .filter_map(|c| match c {
                Control::PeerJoined { session_id, .. } => Some(session_id),
                _ => None,
            })
            .collect();
        assert_eq!(heard.len(), LATER + 1);
        assert_eq!(heard, order, "peer-joined in join order, each once");
    }
}
