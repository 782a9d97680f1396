//! The music room's client state machine (issue #4/#5/#13; seed 004 Tiers 1-3; PROTOCOL.md
//! §12-§13): one sans-IO [`Room`] that owns every machine a device needs to follow a music
//! room and to order changes without the server, and holds every rule between them.
//!
//! A newcomer who wants to change a music rule finds it here:
//! - **clock**: [`ClockSync`] against the server, or against the controller over the mesh while
//!   the server is lost, routed by [`PeerClock`] ([`Room::poll_output`] recomputes the source
//!   from the tier, the claim and the links);
//! - **following**: every accepted room state goes to one [`Follower`], whose media commands
//!   come out as [`Output::Media`];
//! - **changes through the server**: [`Room::stamp_server_change`] stamps a change on the
//!   newest state (the server's authority orders it);
//! - **changes without the server** (`peerToPeer`): the controller orders a change itself
//!   ([`Room::order_change`]: its claim's epoch, the next sequence, `applyAt` = shared clock +
//!   [`LEAD_MS`]), follows it and broadcasts it sealed under the room key; on the `offline`
//!   tier every device is its own controller. Followers accept a peer's change or claim by the
//!   rules of [`Room::handle_peer_sync`];
//! - **election and hub**: the [`Election`] runs on tier changes, link changes and claims; the
//!   mesh's hub is re-centred on the claim's controller ([`Output::MeshController`]);
//! - **offline queue**: changes ordered without the server are returned as a [`Record`] for
//!   the driver's durable queue; [`Room::poll_push`] says when the queue (and the seed of a
//!   restarted server, §13.14) go to the server, [`Room::push_value`] builds that push.
//!
//! # Drive contract (str0m's `Rtc`)
//! The one contract of [`crate::core::drive`]: time is [`Millis`] on the local monotonic clock
//! (`performance.now()` in a browser, a virtual clock in the simulations) and always the last
//! argument, `now`. Wall-clock readings (`Date.now()`, for the `timestamp` a
//! change carries) come in as `wall_ms`. After every `handle_*` input or change, drain
//! [`Room::poll_output`] until it returns [`Output::Timeout`]; at that time call
//! [`Room::handle_timeout`] (or hand a media sample if the follower asked for one,
//! [`Room::follower_due`]) and drain again. The driver keeps
//! only the I/O: the media element, timers, the sockets and DataChannels, IndexedDB and the
//! conversion to JavaScript.
//!
//! The mesh's tier machine ([`crate::core::p2p::tier::TierMachine`]) is owned by the mesh; its
//! tier changes come in through [`Room::handle_tier`].
//!
//! The server's side of the same room (its authority: ordering changes, the DJ role, the
//! offline reconcile) is the sibling machine [`authority`].

pub mod authority;

use crate::core::drive::Millis;
use crate::core::error::ErrorCode;
use crate::core::p2p::changes::{Change, ChangesPush, MUSIC_CHANGES_TYPE};
use crate::core::p2p::election::{Authority, Claim, Election, ElectionOutput};
use crate::core::p2p::peer_sync::{check_change, PeerSealer, PeerSync, PeerSyncError};
use crate::core::p2p::quality::NetworkQuality;
use crate::core::p2p::seal::{RoomKey, SALT_LEN};
use crate::core::p2p::tier::{Tier, TierReason};
use crate::core::sync::clock::{ClockConfig, ClockMapping, ClockSync};
use crate::core::sync::follower::{
    Correction, Follower, FollowerConfig, FollowerEvent, FollowerOutput, MediaCommand, MediaSample,
};
use crate::core::sync::peer_clock::{ClockProbe, PeerClock, Probe};
use crate::core::sync::state::{
    ControlStamper, MusicAction, MusicControlData, RoomState, SyncMessage,
};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Lead between a peer-ordered change and its `applyAt`, ms: DataChannel delivery on a LAN
/// plus the follower's start latency.
pub const LEAD_MS: f64 = 250.0;

/// A push not acknowledged within this long may be sent again, ms (the server applies each
/// change once, so a repeat is harmless).
pub const PUSH_RETRY_MS: f64 = 3000.0;

/// Something for the driver to do, from [`Room::poll_output`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Output {
    /// Execute on the media element now.
    Media(MediaCommand),
    /// Send Control `ping {clientTime, rttMs}` to the server (a clock probe).
    Ping {
        /// Local ms of the probe.
        client_time: f64,
        /// The current RTT estimate, ms.
        rtt_ms: Option<f64>,
    },
    /// A clock probe or answer on peer `to`'s `p3-control` channel (PROTOCOL.md §13.10).
    PeerClock {
        /// Mesh id of the peer.
        to: String,
        /// The probe.
        probe: ClockProbe,
    },
    /// A sealed value for the mesh's Sync lane: to one peer or (`None`) every peer.
    MeshSend {
        /// The `sealed-sync` value.
        value: Value,
        /// Mesh id of the peer, or every peer.
        to: Option<String>,
    },
    /// Centre the mesh's hub on this controller (PROTOCOL.md §13.13).
    MeshController(Option<String>),
    /// Tell the application.
    Event(RoomEvent),
    /// Nothing more now: call [`Room::handle_timeout`] at this local time ([`Millis::NEVER`]:
    /// no deadline).
    Timeout(Millis),
}

crate::core::drive::machine!(Room, Output);

/// What the room tells the application (`MusicRoomEvent`: JSON tagged by `type`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(
    tag = "type",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
#[non_exhaustive]
pub enum RoomEvent {
    /// A new room state was accepted (it takes effect at its `referenceTime`).
    State {
        /// The state.
        state: RoomState,
    },
    /// A resolved change (`music-control`).
    Control {
        /// The `music-control` message.
        control: Value,
    },
    /// The follower's status changed.
    Status {
        /// `MusicStatus`.
        status: &'static str,
    },
    /// A drift reading of the follower.
    Drift {
        /// Local ms of the reading.
        local_ms: f64,
        /// Shared-clock ms of the reading.
        server_ms: f64,
        /// Position error, ms (positive: ahead).
        error_ms: f64,
        /// The playback rate set.
        rate: f64,
        /// `none`, `nudge` or `seek`.
        correction: &'static str,
    },
    /// A new synced clock estimate.
    Clock(ClockInfo),
    /// `play()` was refused by the autoplay policy.
    NeedsUserGesture,
    /// Something failed (`code` is an [`ErrorCode`]).
    Error {
        /// The error code.
        code: &'static str,
        /// What happened.
        message: String,
    },
    /// The mesh's tier changed.
    Tier {
        /// The tier before.
        from: Tier,
        /// The tier now.
        to: Tier,
        /// Why.
        reason: TierReason,
    },
    /// The room's controller changed by the election or an adopted claim.
    Controller {
        /// The claim's epoch.
        epoch: u64,
        /// The controller's mesh id.
        controller: String,
        /// Elected by this device (not adopted).
        elected: bool,
    },
}

/// `MusicClock`: the clock estimate and where it comes from.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClockInfo {
    /// The estimate is synced.
    pub synced: bool,
    /// Shared clock − local clock, ms.
    pub offset_ms: f64,
    /// RTT, ms.
    pub rtt_ms: Option<f64>,
    /// Smallest RTT in the window, ms.
    pub min_rtt_ms: Option<f64>,
    /// Uncertainty of the offset, ms.
    pub uncertainty_ms: Option<f64>,
    /// Drift of the local clock, ppm.
    pub drift_ppm: f64,
    /// Samples in the window.
    pub samples: usize,
    /// `server`, `peer` or `host`.
    pub source: &'static str,
    /// Probes sent to a peer.
    pub peer_probes: u64,
    /// Peer answers taken as samples.
    pub peer_samples: u64,
    /// Peer probes answered as host.
    pub peer_answers: u64,
}

/// A change of a mesh link ([`Room::handle_peer_link`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerLink {
    /// The DataChannel link is connected.
    Connected,
    /// The link is down.
    Disconnected,
    /// The link's measured quality (for the election).
    Quality(NetworkQuality),
}

/// A change ordered without the server, for the driver's offline queue (PROTOCOL.md §13.12).
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// The `music-control` message.
    pub op: Value,
    /// The claim's epoch it was ordered in.
    pub epoch: u64,
    /// Shared clock when ordered, ms.
    pub timestamp: f64,
    /// The `RoomState` it produced (JSON).
    pub state: Value,
}

/// Why [`Room::order_change`] refused a change. `code()` gives the wire/JS code.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum OrderError {
    /// Another device controls the room (`not_controller`).
    #[error("{controller} controls the room in epoch {epoch}")]
    NotController {
        /// The controller's mesh id.
        controller: String,
        /// The claim's epoch.
        epoch: u64,
    },
    /// A handover without the server (`invalid_argument`).
    #[error("handover needs the server (peer-to-peer control follows the election)")]
    Handover,
    /// No peer tiers (`internal`: the caller's mistake).
    #[error("no peer tier")]
    NoPeerTier,
    /// The peer message could not be made (`closed` without a room key).
    #[error(transparent)]
    Peer(#[from] PeerSyncError),
    /// The change does not apply to the state (its own code).
    #[error("{message}")]
    Sync {
        /// The code of the [`crate::core::sync::state::SyncError`].
        code: ErrorCode,
        /// Its message.
        message: String,
    },
}

impl OrderError {
    /// The error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            OrderError::NotController { .. } => ErrorCode::NotController,
            OrderError::Handover => ErrorCode::InvalidArgument,
            OrderError::NoPeerTier => ErrorCode::Internal,
            OrderError::Peer(e) => e.code(),
            OrderError::Sync { code, .. } => *code,
        }
    }
}

/// The state of the peer tiers (`peerToPeer`): the mesh's tier, the election, the sealer and
/// the offline queue's bookkeeping.
#[derive(Debug)]
struct PeerTiers {
    /// The mesh's id of this device (the session id when the mesh opened; `""` before).
    mesh_id: String,
    tier: Tier,
    election: Option<Election>,
    sealer: Option<PeerSealer>,
    /// The room key `sealer` seals under, base64url.
    sealer_key: String,
    /// Connected peers.
    peers: BTreeMap<String, NetworkQuality>,
    /// The controller the mesh's hub was last centred on (§13.13).
    hub: Option<String>,
    /// The mesh is open (the hub can be told).
    mesh_open: bool,
    /// The stable id of this device's changes (`deviceId`).
    origin: String,
    /// The offline queue is open.
    queue_open: bool,
    /// Changes in the queue not acknowledged by the server.
    pending: usize,
    /// When the last push went out (local ms), until its ack.
    push_sent_at: Option<Millis>,
    /// A push is being read from storage.
    push_loading: bool,
    /// The room is joined on the client's current session.
    joined: bool,
    /// The state followed when the session changed (§13.14), sent with the next push.
    seed: Option<RoomState>,
}

/// One device's music room (module docs). Getters, then `handle_*` inputs, then actions
/// returning answers, then [`Room::poll_output`].
#[derive(Debug)]
pub struct Room {
    name: String,
    clock: ClockSync,
    peer_clock: PeerClock,
    last_mapping: Option<ClockMapping>,
    /// The shared clock while `clock` is not synced after an offline start.
    fallback_clock: Option<ClockMapping>,
    follower: Follower,
    follower_due: Millis,
    stamper: ControlStamper,
    /// The newest room state accepted.
    latest: Option<RoomState>,
    peer: Option<PeerTiers>,
    out: VecDeque<Output>,
    /// The machines were drained since the last input.
    drained: bool,
    /// Sealed values queued by inputs, sent after the machines' own outputs.
    mesh_sends: Vec<(Value, Option<String>)>,
}

impl Room {
    /// A room `name` at local time `now`. `origin`: with `peerToPeer`, the id of this device's
    /// changes (`deviceId`); `None` without peer tiers.
    pub fn new(
        name: impl Into<String>,
        follower: FollowerConfig,
        origin: Option<String>,
        now: Millis,
    ) -> Room {
        Room {
            name: name.into(),
            clock: ClockSync::new(ClockConfig::default(), now),
            peer_clock: PeerClock::new(),
            last_mapping: None,
            fallback_clock: None,
            follower: Follower::new(follower),
            follower_due: Millis::NEVER,
            stamper: ControlStamper::new(),
            latest: None,
            peer: origin.map(|origin| PeerTiers {
                mesh_id: String::new(),
                tier: Tier::Socket,
                election: None,
                sealer: None,
                sealer_key: String::new(),
                peers: BTreeMap::new(),
                hub: None,
                mesh_open: false,
                origin,
                queue_open: false,
                pending: 0,
                push_sent_at: None,
                push_loading: false,
                joined: false,
                seed: None,
            }),
            out: VecDeque::new(),
            drained: false,
            mesh_sends: Vec::new(),
        }
    }

    // ---- getters ----

    /// The room's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The clock estimator.
    pub fn clock(&self) -> &ClockSync {
        &self.clock
    }

    /// The clock's routing (server, peer or host).
    pub fn peer_clock(&self) -> &PeerClock {
        &self.peer_clock
    }

    /// The follower.
    pub fn follower(&self) -> &Follower {
        &self.follower
    }

    /// When the follower wants its next media sample ([`Millis::NEVER`]: not before an input).
    pub fn follower_due(&self) -> Millis {
        self.follower_due
    }

    /// The newest room state accepted.
    pub fn latest(&self) -> Option<&RoomState> {
        self.latest.as_ref()
    }

    /// The offline start's fallback clock is in use or the estimate is synced.
    pub fn has_clock(&self) -> bool {
        self.clock.is_synced() || self.fallback_clock.is_some()
    }

    /// The shared clock at local time `now` (ms): the synced estimate, else the offline
    /// fallback, else the unsynced estimate.
    pub fn shared_now(&self, now: Millis) -> f64 {
        match self.fallback_clock {
            Some(m) if !self.clock.is_synced() => m.to_server(now.get()),
            _ => self.clock.server_now(now.get()),
        }
    }

    /// `MusicClock`.
    pub fn clock_info(&self) -> ClockInfo {
        let c = &self.clock;
        let p = self.peer_clock.stats();
        ClockInfo {
            source: self.peer_clock.source().as_str(),
            peer_probes: p.probes_sent,
            peer_samples: p.samples,
            peer_answers: p.answered,
            synced: c.is_synced(),
            offset_ms: c.offset_ms(),
            rtt_ms: c.rtt_ms(),
            min_rtt_ms: c.min_rtt_ms(),
            uncertainty_ms: Some(c.uncertainty_ms()).filter(|u| u.is_finite()),
            drift_ppm: c.drift_ppm(),
            samples: c.sample_count(),
        }
    }

    /// The room has peer tiers (`peerToPeer`).
    pub fn has_peer_tiers(&self) -> bool {
        self.peer.is_some()
    }

    /// The mesh's tier (`None` without peer tiers).
    pub fn tier(&self) -> Option<Tier> {
        self.peer.as_ref().map(|t| t.tier)
    }

    /// Connected peers.
    pub fn peer_ids(&self) -> Vec<String> {
        self.peer
            .as_ref()
            .map(|t| t.peers.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The adopted claim, if any.
    pub fn claim(&self) -> Option<&Claim> {
        self.peer
            .as_ref()
            .and_then(|t| t.election.as_ref())
            .map(Election::claim)
    }

    /// The id of this device's changes (`deviceId`), with peer tiers.
    pub fn device_id(&self) -> Option<&str> {
        self.peer.as_ref().map(|t| t.origin.as_str())
    }

    /// Changes not acknowledged by the server (`None` until the queue is open).
    pub fn pending_changes(&self) -> Option<usize> {
        self.peer
            .as_ref()
            .filter(|t| t.queue_open)
            .map(|t| t.pending)
    }

    /// The offline queue is open.
    pub fn queue_open(&self) -> bool {
        self.peer.as_ref().is_some_and(|t| t.queue_open)
    }

    /// This device's mesh id (before the mesh is open: `""`, or the `deviceId` on the
    /// `offline` tier, where a room started offline is its own controller).
    pub fn mesh_id(&self) -> &str {
        match &self.peer {
            Some(t) if t.mesh_id.is_empty() && t.tier == Tier::Offline => &t.origin,
            Some(t) => &t.mesh_id,
            None => "",
        }
    }

    /// Whether changes are ordered by a peer now (the tier is not `socket` and the election
    /// says a peer is the authority): [`Room::order_change`] instead of the server.
    pub fn peer_ordered(&self) -> bool {
        self.peer.as_ref().is_some_and(|t| {
            t.tier != Tier::Socket
                && t.election
                    .as_ref()
                    .is_some_and(|e| e.authority() == Authority::Peer)
        })
    }

    /// The highest controller epoch this device knows (its claim's, its state's).
    pub fn known_epoch(&self) -> u64 {
        let claim = self.claim().map_or(0, |c| c.epoch);
        claim.max(self.latest.as_ref().map_or(0, |s| s.epoch))
    }

    // ---- inputs: the server ----

    /// A Control `pong` from the server at local time `now`.
    pub fn handle_server_pong(&mut self, client_time: f64, server_time: f64, now: Millis) {
        self.clock.handle_response(client_time, server_time, now);
        self.clock_changed(now);
        self.drained = false;
    }

    /// A `sync-state` from the server. Returns whether it was accepted (newer than the
    /// followed one). Once accepted, the mesh's current id `mesh_id` (if a mesh is open) is
    /// taken ([`Room::handle_mesh_id`]) and, while the server is the authority, its claim is
    /// the room's (the server answers again: queued changes are pushed, [`Room::poll_push`]).
    pub fn handle_server_state(
        &mut self,
        state: RoomState,
        mesh_id: Option<&str>,
        now: Millis,
    ) -> bool {
        self.drained = false;
        if !self.follower.handle_state(state.clone(), now) {
            return false;
        }
        self.accept(state);
        if let Some(me) = mesh_id {
            self.handle_mesh_id(me);
        }
        let claim = claim_of(self.latest.as_ref());
        if let Some(t) = self.peer.as_mut() {
            if t.tier == Tier::Socket {
                if let Some(e) = t.election.as_mut() {
                    e.handle_server_back(claim);
                }
            }
        }
        true
    }

    /// The connection opened again: a new clock burst towards the server.
    pub fn handle_connection_open(&mut self, now: Millis) {
        self.clock.reset(now);
        self.drained = false;
    }

    /// The session changed (the server restarted or forgot this client): its authority's
    /// versions start anew. The followed state is kept as the seed of the next push (§13.14).
    pub fn handle_session_changed(&mut self) {
        self.follower.reset_room();
        let followed = self.latest.take();
        self.stamper = ControlStamper::new();
        if let Some(t) = self.peer.as_mut() {
            if let Some(s) = followed {
                if !t.seed.as_ref().is_some_and(|k| s.version() < k.version()) {
                    t.seed = Some(s);
                }
            }
            t.joined = false;
            t.push_sent_at = None;
        }
        self.drained = false;
    }

    /// The room was joined on the current session.
    pub fn handle_joined(&mut self) {
        if let Some(t) = self.peer.as_mut() {
            t.joined = true;
        }
        self.drained = false;
    }

    /// Control `room-key` (the first one, a rotation, or the same key repeated by a join):
    /// seal under the newest key as this device's id (`me`: the mesh id, else the session id)
    /// from now on (PROTOCOL.md §13.4). A new sealer instance takes a salt from `salt` (the
    /// driver's CSPRNG); without one the room seals nothing and reports `crypto_unavailable`.
    pub fn handle_room_key(
        &mut self,
        key_id: u32,
        key: &str,
        me: &str,
        salt: impl FnOnce() -> Result<[u8; SALT_LEN], String>,
        now: Millis,
    ) -> Result<(), String> {
        self.drained = false;
        let name = self.name.clone();
        let Some(t) = self.peer.as_mut() else {
            return Ok(());
        };
        let k = RoomKey::from_base64url(key_id, key).map_err(|e| e.to_string())?;
        let id = if t.mesh_id.is_empty() {
            me.to_owned()
        } else {
            t.mesh_id.clone()
        };
        if t.sealer.as_ref().is_some_and(|s| {
            s.key_id() == key_id && s.me() == id && t.sealer_key == k.to_base64url()
        }) {
            return Ok(());
        }
        let salt = match salt() {
            Ok(s) => s,
            Err(message) => {
                t.sealer = None;
                self.event(RoomEvent::Error {
                    code: ErrorCode::CryptoUnavailable.as_str(),
                    message,
                });
                return Ok(());
            }
        };
        t.sealer_key = k.to_base64url();
        match t.sealer.as_mut() {
            Some(s) => {
                s.handle_room_key(k, &id, salt, now);
            }
            None => t.sealer = Some(PeerSealer::new(k, name, id, salt)),
        }
        Ok(())
    }

    /// Control `peer-left`: frames from `who` under the previous key stop opening (§13.4).
    pub fn handle_peer_left(&mut self, who: &str) {
        if let Some(s) = self.peer.as_mut().and_then(|t| t.sealer.as_mut()) {
            s.handle_peer_left(who);
        }
    }

    // ---- inputs: the media and the user ----

    /// A reading of the media element.
    pub fn handle_media_sample(&mut self, sample: MediaSample) {
        self.follower.handle_media_sample(sample);
        self.drained = false;
    }

    /// The follower's timers are due but the element could not be read reliably.
    pub fn handle_timeout(&mut self, now: Millis) {
        self.follower.handle_timeout(now);
        self.drained = false;
    }

    /// `play()` was refused by the autoplay policy.
    pub fn handle_play_rejected(&mut self, now: Millis) {
        self.follower.handle_play_rejected(now);
        self.drained = false;
    }

    /// A user gesture: start playback inside it if needed.
    pub fn handle_user_gesture(&mut self, now: Millis) {
        self.follower.handle_user_gesture(now);
        self.drained = false;
    }

    /// Forget every clock sample and start a new burst.
    pub fn reset_clock(&mut self, now: Millis) {
        self.clock.reset(now);
        self.drained = false;
    }

    // ---- inputs: the mesh ----

    /// The mesh opened as `me` (its id: the session id): the election starts from the
    /// followed state's claim.
    pub fn handle_mesh_open(&mut self, me: &str) {
        let claim = claim_of(self.latest.as_ref());
        if let Some(t) = self.peer.as_mut() {
            t.mesh_id = me.to_owned();
            t.mesh_open = true;
            t.election = Some(Election::new(me, claim));
        }
        self.drained = false;
    }

    /// The mesh's current id is `me`. A new one (the server restarted, §13.12): claims and
    /// seals use it from now on; the election starts again from the followed claim (and, off
    /// the `socket` tier, without the server: its own claim).
    pub fn handle_mesh_id(&mut self, me: &str) {
        let claim = claim_of(self.latest.as_ref());
        let Some(t) = self.peer.as_mut() else { return };
        if !t.mesh_open || me == t.mesh_id {
            return;
        }
        t.mesh_id = me.to_owned();
        let mut e = Election::new(me, claim);
        if t.tier != Tier::Socket {
            let reachable: BTreeSet<String> = t.peers.keys().cloned().collect();
            e.handle_server_lost(&reachable);
        }
        t.election = Some(e);
        self.drained = false;
    }

    /// The mesh's tier machine changed the tier: run the election, tell the app.
    pub fn handle_tier(&mut self, from: Tier, to: Tier, reason: TierReason) {
        let claim = claim_of(self.latest.as_ref());
        let Some(t) = self.peer.as_mut() else { return };
        t.tier = to;
        let reachable: BTreeSet<String> = t.peers.keys().cloned().collect();
        if let Some(e) = t.election.as_mut() {
            if to == Tier::Socket {
                // Server wins.
                e.handle_server_back(claim);
            } else if e.authority() == Authority::Server {
                e.handle_server_lost(&reachable);
            }
        }
        self.event(RoomEvent::Tier { from, to, reason });
    }

    /// A change of the link to mesh peer `peer`. A new link learns this device's claim while a
    /// peer is the authority (partitions that heal agree, §13.2).
    pub fn handle_peer_link(&mut self, peer: &str, link: PeerLink) {
        self.drained = false;
        let Some(t) = self.peer.as_mut() else { return };
        let mut announce = false;
        match link {
            PeerLink::Connected => {
                t.peers.insert(peer.to_owned(), NetworkQuality::Good);
                announce = true;
            }
            PeerLink::Quality(q) => {
                if t.peers.contains_key(peer) {
                    t.peers.insert(peer.to_owned(), q);
                }
            }
            PeerLink::Disconnected => {
                t.peers.remove(peer);
            }
        }
        let reachable: BTreeSet<String> = t.peers.keys().cloned().collect();
        if let Some(e) = t.election.as_mut() {
            e.handle_membership(&reachable);
        }
        if announce
            && t.election
                .as_ref()
                .is_some_and(|e| e.authority() == Authority::Peer)
        {
            if let Some(claim) = self.claim().cloned() {
                let state = self.latest.clone();
                if let Some(v) = self.seal(&PeerSync::Claim { claim, state }) {
                    self.mesh_sends.push((v, Some(peer.to_owned())));
                }
            }
        }
    }

    /// A `sealed-sync` value from peer `from` on the mesh's Sync lane: opened and handed to
    /// [`Room::handle_peer_sync`]; a failure is an `error` event.
    pub fn handle_mesh_message(&mut self, from: &str, value: &Value, now: Millis) {
        self.drained = false;
        let opened = match self.peer.as_mut().and_then(|t| t.sealer.as_mut()) {
            Some(s) => s.open(from, value, now),
            None => Err(PeerSyncError::NoKey),
        };
        if let Err(e) = opened.and_then(|msg| self.handle_peer_sync(from, msg, now)) {
            self.event(RoomEvent::Error {
                code: e.code().as_str(),
                message: format!("from peer {from}: {e}"),
            });
        }
    }

    /// A peer's music message, opened (PROTOCOL.md §13.11). The acceptance rules:
    /// - a claim is handed to the election; the state it carries is followed if the claim is
    ///   the one adopted and its epoch is at most one behind;
    /// - while this device still hears the server, only the server's own controller in the
    ///   server's epoch is followed (silent loss is detected at slightly different times);
    /// - otherwise a change must pass [`check_change`] (a current or newer epoch, from the
    ///   claim's controller or a newer claim, which is adopted); its state is followed if
    ///   newer than the followed one.
    ///
    /// Errors: [`PeerSyncError`] from [`check_change`].
    pub fn handle_peer_sync(
        &mut self,
        from: &str,
        msg: PeerSync,
        now: Millis,
    ) -> Result<(), PeerSyncError> {
        self.drained = false;
        let Some(e) = self.peer.as_mut().and_then(|t| t.election.as_mut()) else {
            return Ok(());
        };
        match msg {
            PeerSync::Claim { claim, state } => {
                e.handle_claim(&claim);
                let adopted = e.claim().clone();
                if let Some(s) = state.filter(|s| s.epoch >= adopted.epoch.saturating_sub(1)) {
                    if claim == adopted && self.follower.handle_state(s.clone(), now) {
                        self.accept(s);
                    }
                }
            }
            PeerSync::Change { control, state } => {
                if e.authority() == Authority::Server {
                    if check_change(e.claim(), from, &control) != Ok(false) {
                        return Ok(());
                    }
                } else if check_change(e.claim(), from, &control)? {
                    e.handle_claim(&Claim::new(control.epoch, from));
                }
                if self.follower.handle_state(state.clone(), now) {
                    self.accept(state);
                    let control = SyncMessage::MusicControl(control).to_value();
                    self.event(RoomEvent::Control { control });
                }
            }
        }
        Ok(())
    }

    /// A clock probe from peer `from` on its `p3-control` channel: answered as host.
    pub fn handle_peer_clock_ping(&mut self, from: &str, client_time: f64, now: Millis) {
        if let Some(pong) = self
            .peer_clock
            .handle_ping(from, client_time, &self.clock, now)
        {
            self.out.push_back(Output::PeerClock {
                to: from.to_owned(),
                probe: pong,
            });
        }
        self.drained = false;
    }

    /// A clock answer from peer `from` on its `p3-control` channel.
    pub fn handle_peer_clock_pong(
        &mut self,
        from: &str,
        client_time: f64,
        server_time: f64,
        now: Millis,
    ) {
        if self
            .peer_clock
            .handle_pong(from, client_time, server_time, &mut self.clock, now)
        {
            self.clock_changed(now);
        }
        self.drained = false;
    }

    // ---- inputs: offline start and the offline queue ----

    /// An offline start (§13.12 "Starting offline"): the shared clock is `mapping` until the
    /// estimate syncs, `state` (restored) is followed, the tier is `offline` and this device,
    /// as its `deviceId`, is its own controller (the election without peers).
    pub fn start_offline(&mut self, mapping: ClockMapping, state: Option<RoomState>, now: Millis) {
        self.fallback_clock = Some(mapping);
        self.follower.handle_clock(mapping, now);
        if let Some(s) = state {
            if self.follower.handle_state(s.clone(), now) {
                self.accept(s);
            }
        }
        let claim = claim_of(self.latest.as_ref());
        if let Some(t) = self.peer.as_mut() {
            t.tier = Tier::Offline;
            let mut e = Election::new(t.origin.clone(), claim);
            e.handle_server_lost(&BTreeSet::new());
            t.election = Some(e);
        }
        self.drained = false;
    }

    /// A room started offline is attached to a connected client: server wins (the followed
    /// state is forgotten), the tier is `socket` again (`tier` event, `server-back`); the mesh
    /// id and the election come from the join and the mesh.
    pub fn handle_attached(&mut self, now: Millis) {
        self.follower.reset_room();
        self.latest = None;
        self.stamper = ControlStamper::new();
        self.clock.reset(now);
        self.drained = false;
        let Some(t) = self.peer.as_mut() else { return };
        t.mesh_id.clear();
        t.mesh_open = false;
        t.election = None;
        t.joined = false;
        t.push_sent_at = None;
        let from = std::mem::replace(&mut t.tier, Tier::Socket);
        if from != Tier::Socket {
            self.event(RoomEvent::Tier {
                from,
                to: Tier::Socket,
                reason: TierReason::ServerBack,
            });
        }
    }

    /// The offline queue opened (or a record or an ack changed it): `pending` changes are not
    /// acknowledged by the server.
    pub fn handle_queue(&mut self, pending: usize) {
        if let Some(t) = self.peer.as_mut() {
            t.queue_open = true;
            t.pending = pending;
        }
        self.drained = false;
    }

    /// Whether queued changes (or the seed, §13.14) should go to the server now: some are
    /// pending, the connection is `open` and the room joined on the current session, and no
    /// push is in flight (or the last one is older than [`PUSH_RETRY_MS`]). `true` marks a
    /// push as loading: read the queue, then call [`Room::push_value`].
    pub fn poll_push(&mut self, open: bool, now: Millis) -> bool {
        let Some(t) = self.peer.as_mut() else {
            return false;
        };
        let in_flight = t.push_loading
            || t.push_sent_at
                .is_some_and(|at| now.since(at) < PUSH_RETRY_MS);
        let work = (t.queue_open && t.pending > 0) || t.seed.is_some();
        let due = work && open && t.joined && !in_flight;
        if due {
            t.push_loading = true;
        }
        due
    }

    /// The queue was read for a push (`changes`, or `None` if reading failed): the
    /// `music-changes` value to send on the Sync lane (PROTOCOL.md §13.9), with the newest of
    /// the kept seed and the followed state, or `None` if there is nothing to push.
    pub fn push_value(&mut self, changes: Option<Vec<Change>>, now: Millis) -> Option<Value> {
        let epoch = self.known_epoch();
        let latest = self.latest.clone();
        let t = self.peer.as_mut()?;
        t.push_loading = false;
        let changes = changes?;
        let seed = t.seed.as_ref().map(|k| match latest {
            Some(l) if l.version() >= k.version() => l,
            _ => k.clone(),
        });
        t.pending = changes.len();
        if changes.is_empty() && seed.is_none() {
            return None;
        }
        t.push_sent_at = Some(now);
        let push = ChangesPush {
            epoch: Some(epoch),
            changes,
            seed,
        };
        let mut v = serde_json::to_value(&push).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("type".into(), MUSIC_CHANGES_TYPE.into());
        }
        Some(v)
    }

    /// A push could not be sent: it may go again at once.
    pub fn handle_push_failed(&mut self) {
        if let Some(t) = self.peer.as_mut() {
            t.push_sent_at = None;
        }
    }

    /// A `music-changes-ack` arrived: the seed went with the push it answers (§13.14). Returns
    /// whether the queue must be acknowledged ([`Room::handle_acknowledged`] after).
    pub fn handle_ack(&mut self) -> bool {
        let Some(t) = self.peer.as_mut() else {
            return false;
        };
        t.seed = None;
        if !t.queue_open {
            t.push_sent_at = None;
        }
        t.queue_open
    }

    /// The queue dropped what an ack acknowledged: `pending` are left.
    pub fn handle_acknowledged(&mut self, pending: usize) {
        if let Some(t) = self.peer.as_mut() {
            t.pending = pending;
            t.push_sent_at = None;
        }
        self.drained = false;
    }

    // ---- actions ----

    /// Stamps a change for the server's authority on the newest state (`controllerId` of that
    /// state, `timestamp` = `wall_ms`): the `music-control` value to send on the Sync lane.
    pub fn stamp_server_change(
        &mut self,
        action: MusicAction,
        mut data: MusicControlData,
        wall_ms: f64,
    ) -> Value {
        let base = self.latest.clone().unwrap_or_else(|| RoomState::new(0.0));
        data.timestamp = Some(wall_ms);
        data.controller_id.clone_from(&base.controller_id);
        let change = self.stamper.stamp(&base, action, data);
        SyncMessage::MusicControl(change).to_value()
    }

    /// The controller orders a change without the server (module docs): stamped in its
    /// claim's epoch with the next sequence, `applyAt` = shared clock + [`LEAD_MS`], applied
    /// to the followed state and followed; the sealed broadcast comes out as
    /// [`Output::MeshSend`]. On the `offline` tier every device is its own controller.
    /// Returns the new state and the [`Record`] for the offline queue.
    ///
    /// Errors: [`OrderError`] (`not_controller`, `invalid_argument` for a handover, `closed`
    /// without a room key on the `webrtc` tier, the change's own code).
    pub fn order_change(
        &mut self,
        action: MusicAction,
        mut data: MusicControlData,
        wall_ms: f64,
        now: Millis,
    ) -> Result<(RoomState, Record), OrderError> {
        self.drained = false;
        let t = self.peer.as_ref().ok_or(OrderError::NoPeerTier)?;
        let offline = t.tier == Tier::Offline;
        let mut claim = t
            .election
            .as_ref()
            .map(|e| e.claim().clone())
            .unwrap_or_else(|| Claim::new(0, ""));
        if offline {
            claim.controller = if t.mesh_id.is_empty() {
                t.origin.clone()
            } else {
                t.mesh_id.clone()
            };
        } else if claim.controller != t.mesh_id {
            return Err(OrderError::NotController {
                controller: claim.controller,
                epoch: claim.epoch,
            });
        }
        if action == MusicAction::Handover {
            return Err(OrderError::Handover);
        }
        if t.sealer.is_none() && !offline {
            return Err(PeerSyncError::NoKey.into());
        }
        let mut base = self.latest.clone().unwrap_or_else(|| RoomState::new(0.0));
        if base.epoch < claim.epoch {
            base.epoch = claim.epoch;
            base.sequence = 0;
        }
        base.controller_id = Some(claim.controller.clone());
        data.timestamp = Some(wall_ms);
        data.from = Some(claim.controller.clone());
        data.controller_id = Some(claim.controller.clone());
        let mut control = self.stamper.stamp(&base, action, data);
        let apply_at = self.shared_now(now) + LEAD_MS;
        control.apply_at = Some(apply_at);
        let state = base
            .apply(&control, apply_at)
            .map_err(|e| OrderError::Sync {
                code: e.code(),
                message: e.to_string(),
            })?;
        if self.follower.handle_state(state.clone(), now) {
            self.accept(state.clone());
        }
        let msg = PeerSync::Change {
            control: control.clone(),
            state: state.clone(),
        };
        if let Some(v) = self.seal(&msg) {
            self.mesh_sends.push((v, None));
        }
        let timestamp = self.shared_now(now);
        let control = SyncMessage::MusicControl(control).to_value();
        self.event(RoomEvent::Control {
            control: control.clone(),
        });
        let record = Record {
            op: control,
            epoch: claim.epoch,
            timestamp,
            state: serde_json::to_value(&state).unwrap_or_default(),
        };
        Ok((state, record))
    }

    // ---- output ----

    /// The next thing to do at local time `now`: media commands, probes, mesh sends and events
    /// in order, then [`Output::Timeout`] (module docs: drain until it comes).
    #[must_use]
    pub fn poll_output(&mut self, now: Millis) -> Output {
        if let Some(o) = self.out.pop_front() {
            return o;
        }
        if !self.drained {
            self.drained = true;
            self.drain(now);
            if let Some(o) = self.out.pop_front() {
                return o;
            }
        }
        self.drained = false;
        Output::Timeout(
            self.peer_clock
                .next_probe_at(&self.clock)
                .map_or(self.follower_due, |t| t.min(self.follower_due)),
        )
    }

    // ---- internals ----

    fn event(&mut self, ev: RoomEvent) {
        self.out.push_back(Output::Event(ev));
    }

    /// A state accepted by the follower becomes the newest (event `state`).
    fn accept(&mut self, state: RoomState) {
        self.event(RoomEvent::State {
            state: state.clone(),
        });
        self.latest = Some(state);
    }

    /// After a clock sample: a new synced mapping goes to the follower (event `clock`).
    fn clock_changed(&mut self, now: Millis) {
        let mapping = self.clock.mapping().filter(|_| self.clock.is_synced());
        if mapping.is_some() && mapping != self.last_mapping {
            self.last_mapping = mapping;
            if let Some(m) = mapping {
                self.follower.handle_clock(m, now);
            }
            let info = self.clock_info();
            self.event(RoomEvent::Clock(info));
        }
    }

    fn seal(&mut self, msg: &PeerSync) -> Option<Value> {
        let sealed = self.peer.as_mut()?.sealer.as_mut()?.seal(msg);
        match sealed {
            Ok(v) => Some(v),
            Err(e) => {
                self.event(RoomEvent::Error {
                    code: e.code().as_str(),
                    message: format!("sealing for peers: {e}"),
                });
                None
            }
        }
    }

    /// Drains the follower, the election, the hub and the clock's routing into `out`.
    fn drain(&mut self, now: Millis) {
        loop {
            match self.follower.poll_output(now) {
                FollowerOutput::Command(c) => self.out.push_back(Output::Media(c)),
                FollowerOutput::Event(FollowerEvent::NeedsUserGesture) => {
                    self.event(RoomEvent::NeedsUserGesture)
                }
                FollowerOutput::Event(FollowerEvent::Status(s)) => {
                    self.event(RoomEvent::Status { status: s.as_str() })
                }
                FollowerOutput::Event(FollowerEvent::Drift(d)) => self.event(RoomEvent::Drift {
                    local_ms: d.local_ms,
                    server_ms: d.server_ms,
                    error_ms: d.error_ms,
                    rate: d.rate,
                    correction: match d.correction {
                        Correction::None => "none",
                        Correction::Nudge => "nudge",
                        Correction::Seek => "seek",
                    },
                }),
                FollowerOutput::Timeout(t) => {
                    self.follower_due = t;
                    break;
                }
            }
        }
        self.drain_election();
        if let Some(c) = self.hub_update() {
            self.out.push_back(Output::MeshController(c));
        }
        self.route_clock(now);
        for (value, to) in std::mem::take(&mut self.mesh_sends) {
            self.out.push_back(Output::MeshSend { value, to });
        }
    }

    fn drain_election(&mut self) {
        loop {
            let Some(out) = self
                .peer
                .as_mut()
                .and_then(|t| t.election.as_mut())
                .map(|e| e.poll_output(Millis::ZERO))
            else {
                return;
            };
            match out {
                ElectionOutput::ControllerChanged { claim, elected, .. } => {
                    self.event(RoomEvent::Controller {
                        epoch: claim.epoch,
                        controller: claim.controller,
                        elected,
                    })
                }
                ElectionOutput::Announce(claim) => {
                    let state = self.latest.clone();
                    if let Some(value) = self.seal(&PeerSync::Claim { claim, state }) {
                        self.out.push_back(Output::MeshSend { value, to: None });
                    }
                }
                ElectionOutput::Timeout(_) => return,
            }
        }
    }

    /// The hub follows the claim's controller (§13.13). `Some` when the mesh must be told.
    fn hub_update(&mut self) -> Option<Option<String>> {
        let desired = self
            .claim()
            .map(|c| c.controller.clone())
            .filter(|c| !c.is_empty());
        let t = self.peer.as_mut()?;
        if !t.mesh_open || desired == t.hub {
            return None;
        }
        t.hub.clone_from(&desired);
        Some(desired)
    }

    /// Recomputes the clock's source from the tier, the claim and the links; queues a due
    /// probe.
    fn route_clock(&mut self, now: Millis) {
        if self.peer.is_some() {
            let controller = self
                .claim()
                .map(|c| c.controller.clone())
                .unwrap_or_default();
            let linked = self
                .peer
                .as_ref()
                .is_some_and(|t| t.peers.contains_key(&controller));
            let peer_authority = self.peer_ordered();
            let me = self.mesh_id().to_owned();
            self.peer_clock.handle_role(
                peer_authority,
                &controller,
                &me,
                linked,
                &mut self.clock,
                now,
            );
        }
        match self.peer_clock.take_probe(&mut self.clock, now) {
            Some(Probe::Server { client_time }) => self.out.push_back(Output::Ping {
                client_time,
                rtt_ms: self.clock.rtt_ms(),
            }),
            Some(Probe::Peer { to, client_time }) => self.out.push_back(Output::PeerClock {
                to,
                probe: ClockProbe::Ping { client_time },
            }),
            None => {}
        }
    }
}

/// The server's claim in `state` (epoch, controller; `""` without a controller).
fn claim_of(state: Option<&RoomState>) -> Claim {
    state.map_or_else(
        || Claim::new(0, ""),
        |s| Claim::new(s.epoch, s.controller_id.clone().unwrap_or_default()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";

    /// Room `me` of a two-member room whose DJ (by the server, epoch 1) is `a`, linked to the
    /// other member, after the server is lost (tier `webrtc`).
    fn serverless(me: &str, other: &str, salt: u8) -> Room {
        let mut r = Room::new(
            "party",
            FollowerConfig::default(),
            Some(me.into()),
            Millis::new(0.0),
        );
        let mut s = RoomState::new(0.0);
        s.epoch = 1;
        s.sequence = 1;
        s.controller_id = Some("a".into());
        assert!(r.handle_server_state(s, None, Millis::new(0.0)));
        r.handle_mesh_open(me);
        r.handle_room_key(1, KEY, me, || Ok([salt; SALT_LEN]), Millis::new(0.0))
            .unwrap();
        r.handle_peer_link(other, PeerLink::Connected);
        r.handle_tier(Tier::Socket, Tier::Webrtc, TierReason::SocketClosed);
        drain(&mut r, Millis::new(0.0));
        r
    }

    /// Everything until the timeout; the sealed sends.
    fn drain(r: &mut Room, now: Millis) -> Vec<Value> {
        let mut sent = Vec::new();
        loop {
            match r.poll_output(now) {
                Output::MeshSend { value, .. } => sent.push(value),
                Output::Timeout(_) => return sent,
                _ => {}
            }
        }
    }

    fn seek(to: f64) -> MusicControlData {
        MusicControlData {
            position: Some(to),
            ..Default::default()
        }
    }

    #[test]
    fn the_controller_orders_with_the_lead_and_the_follower_accepts() {
        let mut a = serverless("a", "b", 1);
        let mut b = serverless("b", "a", 2);
        assert!(a.peer_ordered() && b.peer_ordered());
        let (state, record) = a
            .order_change(MusicAction::Seek, seek(42.0), 5.0, Millis::new(1000.0))
            .unwrap();
        // Its claim's epoch, the next sequence, applyAt = shared clock + LEAD_MS.
        assert_eq!(state.version(), (1, 2));
        assert_eq!(
            state.ref_server_ms,
            a.shared_now(Millis::new(1000.0)) + LEAD_MS
        );
        assert_eq!(
            (record.epoch, record.op["data"]["timestamp"].as_f64()),
            (1, Some(5.0))
        );
        let sent = drain(&mut a, Millis::new(1000.0));
        assert_eq!(sent.len(), 1);
        b.handle_mesh_message("a", &sent[0], Millis::new(1010.0));
        drain(&mut b, Millis::new(1010.0));
        assert_eq!(b.latest().map(RoomState::version), Some((1, 2)));
        assert_eq!(b.latest().map(|s| s.position_s), Some(42.0));
    }

    #[test]
    fn a_follower_refuses_to_order_and_ignores_a_non_controllers_change() {
        let mut a = serverless("a", "b", 1);
        let mut b = serverless("b", "a", 2);
        let err = b
            .order_change(MusicAction::Seek, seek(1.0), 0.0, Millis::new(0.0))
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::NotController);
        let err = a
            .order_change(
                MusicAction::Handover,
                MusicControlData::default(),
                0.0,
                Millis::new(0.0),
            )
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
        // b seals a change in a's epoch as if it were the controller: a does not follow it.
        let base = b.latest().unwrap().clone();
        let mut forged = b.stamper.stamp(&base, MusicAction::Seek, seek(7.0));
        forged.apply_at = Some(100.0);
        let state = base.apply(&forged, 100.0).unwrap();
        let sealed = b
            .seal(&PeerSync::Change {
                control: forged,
                state,
            })
            .unwrap();
        a.handle_mesh_message("b", &sealed, Millis::new(10.0));
        let errors = std::iter::from_fn(|| match a.poll_output(Millis::new(10.0)) {
            Output::Timeout(_) => None,
            o => Some(o),
        })
        .filter(|o| matches!(o, Output::Event(RoomEvent::Error { .. })))
        .count();
        assert_eq!(errors, 1);
        assert_eq!(a.latest().map(RoomState::version), Some((1, 1)));
    }
}
