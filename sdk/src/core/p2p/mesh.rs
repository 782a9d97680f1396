//! The peer mesh of one device, sans-IO: which RTCPeerConnections to hold, how their
//! signaling is routed (server while it is up, a connected peer otherwise), and one lane
//! multiplexer ([`Mux`]) per peer over a DataChannel (issue #5; seed 004 "Tier 2: WebRTC
//! mesh", "Challenge: mesh scalability"; seed 000 "Nexus as P2P signaling"; seed 001
//! signaling and call-quality monitoring). PROTOCOL.md §13.5 states the rules.
//!
//! # Drive contract ([`crate::core::drive`])
//! [`Mesh`] owns no RTCPeerConnection and reads no clock; `now` ([`Millis`]) is the last
//! argument of every input that needs it, on the driver's clock.
//! 1. Inputs: room membership ([`Mesh::handle_members`], [`Mesh::handle_member_joined`],
//!    [`Mesh::handle_member_left`]), whether the server is reachable
//!    ([`Mesh::handle_server`]), signaling from the server ([`Mesh::handle_server_signal`]),
//!    what the RTCPeerConnection reports (`handle_negotiation_needed`,
//!    `handle_local_description`, `handle_local_ice`, `handle_peer_state`,
//!    `handle_channel_open` / `_closed`), DataChannel messages ([`Mesh::handle_control`],
//!    [`Mesh::handle_lane_input`]), the lanes channel's `bufferedAmount`
//!    ([`Mesh::handle_lane_buffered`]), `getStats()` results ([`Mesh::handle_stats`]),
//!    timeouts, and the app's [`Mesh::send`] / [`Mesh::close_link`] / [`Mesh::close`].
//! 2. After **every** input drain [`Mesh::poll_output`] until [`MeshOutput::Timeout`],
//!    performing each [`MeshOutput`] in order (they are ordered: a peer is opened before it
//!    is negotiated), then arm a timer for that deadline and call [`Mesh::handle_timeout`]
//!    then.
//!
//! # Channels per peer (both `negotiated: true`, so both sides create them, no `ondatachannel`)
//! - `p3-control`, id [`CONTROL_CHANNEL_ID`], `ordered: true`, `maxRetransmits: 3` (seed 004):
//!   JSON [`ControlMessage`]s: relayed signaling, link announcements and clock probes to the
//!   controller while serverless (PROTOCOL.md §13.10).
//! - `p3-lanes`, id [`LANES_CHANNEL_ID`], `ordered: true`, reliable: the multiplexer's frames
//!   (PROTOCOL.md §11) for all 8 lanes; a message is the UTF-8 JSON of the app's value.
//!
//! # Links and relinks
//! The links wanted are [`signal::mesh_links`] of the members (full mesh ≤ 6, hub beyond) with
//! the configured controller (default: the lowest member id) and its deputy ([`Mesh::hub`]).
//! A link that fails or closes is opened again after [`RELINK_DELAY_MS`] while it is still
//! wanted; the peer's [`Mux`] lives on across links, so reliable lanes resume without loss
//! (§11.6).
//!
//! # The hub follows the election (PROTOCOL.md §13.13)
//! The driver calls [`Mesh::set_controller`] with every new claim's controller (the server's
//! DJ while it is up, the elected one without it). The deputy is the lowest member id other
//! than the controller that is not **lost**: a member is lost when its link to this device
//! went down while the server was unreachable, or when the controller's [`ControlMessage::Links`]
//! stop listing it then (a listener has no link of its own to every member); it stops being
//! lost when a link to it connects again, the controller lists it again, or the server's
//! member list no longer names it. Without the server nobody says `peer-left`, so this is how
//! a departed hub stops being picked as deputy; every member agrees because every member is
//! linked to both hubs. A newly lost member re-runs the topology (a new deputy's links open).
//!
//! # Liveness (answer on request)
//! Anything a peer delivers on its link (a control message, a lanes frame) counts as heard.
//! - **Server up: no probes.** Silence is not judged (the server's `peer-left` says who went),
//!   so nothing is sent just to be heard: a quiet room's links carry no liveness traffic.
//! - **Server lost: probe.** When this device loses the server every connected link counts as
//!   just heard (nothing was asked before, so its silence proves nothing), and from then on
//!   every connected link gets a probe ([`ControlMessage::Alive`] `{type: "alive"}`) every
//!   [`ALIVE_INTERVAL_MS`]; a link silent for [`LINK_SILENCE_MS`] goes down as `failed`,
//!   unless this device's own timer came late (it was stalled, so silence proves nothing).
//!   Probing goes on for [`LINK_SILENCE_MS`] after the server is back, so a server that comes
//!   and goes again quickly grants no new grace to a peer that stopped answering.
//! - **Always answer.** A probe is answered with `{type: "alive", answer: true}` on the same
//!   link whether or not this device has the server (a serverless peer depends on it), at
//!   most one answer per [`ALIVE_INTERVAL_MS`] per link on average (bursts of
//!   [`ALIVE_ANSWER_BURST`], for probes' arrival jitter); an answer is never answered.
//! - **Older peers** probe every connected link every [`ALIVE_INTERVAL_MS`] whatever the
//!   server does and never answer: their probes are heard (and answered, so an older
//!   serverless peer hears this one), and they parse an answer as their own `alive` (an
//!   unknown field is ignored).
//!
//! # Signaling routes
//! Server up: every signal goes through the server (Messaging lane, `to` = the peer).
//! Server down: over the link to the peer itself if it is connected, else through the
//! connected peer with the lowest id that announced a connected link to the target
//! ([`ControlMessage::Links`]), as `{type: "relay", signal}`; a relay forwards only messages
//! it got from their author (two hops at most). With no route, signals wait (at most
//! [`MAX_PENDING_SIGNALS`], oldest dropped with an error event) until one appears.

use crate::core::drive::Millis;
use crate::core::error::ErrorCode;
use crate::core::lane::Lane;
use crate::core::mux::{Discontinuity, Mux, MuxConfig, MuxError, MuxEvent};
use crate::core::p2p::quality::{NetworkQuality, StatsData};
use crate::core::p2p::signal::{self, NegotiationAction, Negotiator, SignalBody, SignalMessage};
use crate::core::p2p::tier::{Tier, TierConfig, TierMachine, TierOutput, TierReason};
use crate::core::rate::Gcra;
use crate::core::sync::peer_clock::ClockProbe;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// `p3-control` DataChannel id (negotiated).
pub const CONTROL_CHANNEL_ID: u16 = 0;
/// `p3-control` label.
pub const CONTROL_CHANNEL_LABEL: &str = "p3-control";
/// `p3-control` `maxRetransmits` (seed 004 `music-control` channel).
pub const CONTROL_MAX_RETRANSMITS: u16 = 3;
/// `p3-lanes` DataChannel id (negotiated).
pub const LANES_CHANNEL_ID: u16 = 1;
/// `p3-lanes` label.
pub const LANES_CHANNEL_LABEL: &str = "p3-lanes";
/// The multiplexer writes to `p3-lanes` while its `bufferedAmount` plus the frame is at most
/// this (bytes).
pub const LANES_HIGH_WATER_BYTES: usize = 256 * 1024;
/// `bufferedAmountLowThreshold` of `p3-lanes` (bytes): its `bufferedamountlow` event wakes
/// the multiplexer (no polling).
pub const LANES_LOW_WATER_BYTES: usize = 64 * 1024;
/// Delay before a failed or closed link that is still wanted is opened again (ms).
pub const RELINK_DELAY_MS: u64 = 1000;
/// The polite side of a new link makes no offer of its own for this long (ms): the impolite
/// side offers first, so a first negotiation is normally no glare (Chromium may not signal the
/// ICE candidates it gathered for an offer it then rolled back).
pub const POLITE_OFFER_DELAY_MS: u64 = 2000;
/// A link not connected this long after it was opened is closed and opened again (ms).
pub const CONNECT_TIMEOUT_MS: u64 = 15_000;
/// Signals kept while there is no route to their target.
pub const MAX_PENDING_SIGNALS: usize = 64;
/// While the server is unreachable (and [`LINK_SILENCE_MS`] after it is back), every
/// connected link gets a probe `{type: "alive"}` on `p3-control` this often (ms); answers to a
/// peer's probes are limited to one per this interval per link on average.
pub const ALIVE_INTERVAL_MS: u64 = 400;
/// Answers to probes a link may send at once (the rest wait for the rate of one per
/// [`ALIVE_INTERVAL_MS`]): two, so that a probe arriving early after a late one is answered
/// too, while a peer flooding probes gets at most 2.5 answers a second.
pub const ALIVE_ANSWER_BURST: u32 = 2;
/// While the server is unreachable, a link that delivered nothing (no control message, no
/// lanes frame) for this long is taken down as `failed` (ms): a peer whose browser died is
/// noticed in about this time instead of when ICE consent fails (5-7 s in Chromium).
pub const LINK_SILENCE_MS: u64 = 2000;
/// Default [`MeshConfig::stats_interval_ms`]: `getStats()` of every connected link this often
/// (ms) at first and whenever the links change ([`MeshOutput::SampleStats`]).
pub const STATS_INTERVAL_MS: u64 = 1000;
/// While the server is up, the stats interval doubles after this many rounds of samples in a
/// row that left every link's quality class unchanged ...
pub const STATS_STABLE_SAMPLES: u32 = 4;
/// ... up to this many times (8 × the interval). A changed class, a link up or down and the
/// server's reachability changing reset it; without the server it stays at the interval (the
/// tier then follows the links' quality).
pub const STATS_MAX_DOUBLINGS: u32 = 3;

/// A link's state as the app sees it (`peer-state` events).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    /// RTCPeerConnection created, negotiating / ICE checking.
    Connecting,
    /// Both DataChannels open: lanes flow.
    Connected,
    /// ICE lost connectivity; it may come back by itself.
    Disconnected,
    /// ICE or DTLS failed; the link is closed and opened again later if still wanted.
    Failed,
    /// Closed (by either side, or the peer left); opened again later if still wanted.
    Closed,
}

/// `RTCPeerConnection.connectionState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerConnectionState {
    /// `new`
    New,
    /// `connecting`
    Connecting,
    /// `connected`
    Connected,
    /// `disconnected`
    Disconnected,
    /// `failed`
    Failed,
    /// `closed`
    Closed,
}

impl PeerConnectionState {
    /// Parses the W3C string; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "new" => Self::New,
            "connecting" => Self::Connecting,
            "connected" => Self::Connected,
            "disconnected" => Self::Disconnected,
            "failed" => Self::Failed,
            "closed" => Self::Closed,
            _ => return None,
        })
    }
}

/// The two DataChannels of a link (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// `p3-control`.
    Control,
    /// `p3-lanes`.
    Lanes,
}

/// JSON on the `p3-control` channel, tagged by `type`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ControlMessage {
    /// The sender's connected links now (session ids), sent to every connected peer whenever
    /// that set changes: who can relay to whom.
    Links {
        /// Connected peers of the sender.
        peers: Vec<String>,
    },
    /// A signaling message for `signal.to`, handed to the receiver to deliver or forward.
    Relay {
        /// The message.
        signal: SignalMessage,
    },
    /// A clock probe to the room's controller while serverless (PROTOCOL.md §13.10,
    /// [`crate::core::sync::peer_clock`]).
    #[serde(rename = "clock-ping")]
    ClockPing {
        /// The sender's local send time, ms.
        #[serde(rename = "clientTime")]
        client_time: f64,
    },
    /// The controller's answer to a [`ControlMessage::ClockPing`].
    #[serde(rename = "clock-pong")]
    ClockPong {
        /// The probe's `clientTime`, echoed.
        #[serde(rename = "clientTime")]
        client_time: f64,
        /// The room clock when answered, shared-clock ms.
        #[serde(rename = "serverTime")]
        server_time: f64,
    },
    /// Liveness (module doc "Liveness"): a probe (`{type: "alive"}`, every
    /// [`ALIVE_INTERVAL_MS`] on every connected link while the server is unreachable) or the
    /// answer to one (`{type: "alive", answer: true}`, never answered).
    Alive {
        /// `true`: the answer to a probe; absent (`false`): a probe, which older peers send
        /// every [`ALIVE_INTERVAL_MS`] whatever the server does.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        answer: bool,
    },
}

/// What the app hears about.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum MeshEvent {
    /// A link changed state.
    PeerState {
        /// The peer's session id.
        peer: String,
        /// New state.
        state: LinkState,
    },
    /// A lane message from a peer (exactly once and in order on reliable lanes).
    Message {
        /// Sender's session id.
        from: String,
        /// Lane.
        lane: Lane,
        /// The value sent.
        value: Value,
    },
    /// `getStats()` of a link and its seed 001 class.
    Quality {
        /// The peer.
        peer: String,
        /// The stats.
        stats: StatsData,
        /// Their class.
        quality: NetworkQuality,
    },
    /// This device relayed a signaling message between two peers (server down).
    SignalRelayed {
        /// Author.
        from: String,
        /// Target.
        to: String,
    },
    /// A reliable lane from `peer` skipped messages (see [`Discontinuity`]).
    Discontinuity {
        /// The peer.
        peer: String,
        /// What was skipped.
        discontinuity: Discontinuity,
    },
    /// A lane to `peer` that refused a message with backpressure has room again.
    Drain {
        /// The peer.
        peer: String,
        /// Lane.
        lane: Lane,
    },
    /// Queued messages of an unreliable lane to `peer` were dropped for newer ones.
    Dropped {
        /// The peer.
        peer: String,
        /// Lane.
        lane: Lane,
        /// How many.
        count: u64,
    },
    /// The sync tier changed ([`crate::core::p2p::tier`]): the mesh feeds it the server's
    /// socket and pongs and each link's reachability and quality.
    Tier {
        /// Previous tier.
        from: Tier,
        /// New tier.
        to: Tier,
        /// Why.
        reason: TierReason,
        /// When (ms).
        at_ms: u64,
    },
    /// A clock probe or answer from a peer's `p3-control` channel (PROTOCOL.md §13.10); the
    /// music room routes it through [`crate::core::sync::peer_clock::PeerClock`].
    Clock {
        /// The peer.
        from: String,
        /// The probe or answer.
        probe: ClockProbe,
    },
    /// Something went wrong with a peer or a signal; nothing is thrown.
    Error {
        /// The peer concerned, if any.
        peer: Option<String>,
        /// Machine-readable code.
        code: ErrorCode,
        /// Human-readable text.
        message: String,
    },
}

/// What the driver must do, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum MeshOutput {
    /// Create an RTCPeerConnection for `peer` with both negotiated DataChannels (replacing
    /// any previous one for `peer`). `polite`: this side is the polite one.
    OpenPeer {
        /// The peer.
        peer: String,
        /// Perfect-negotiation role.
        polite: bool,
    },
    /// Close `peer`'s RTCPeerConnection and forget it (its events are stale from now on).
    ClosePeer {
        /// The peer.
        peer: String,
    },
    /// Run a negotiation step on `peer`'s RTCPeerConnection: one of
    /// [`NegotiationAction::CreateOffer`], `AcceptOffer`, `AcceptAnswer`, `AddIce`.
    Negotiate {
        /// The peer.
        peer: String,
        /// The step.
        action: NegotiationAction,
    },
    /// Send through the server: Messaging lane, `to = signal.to`, value = the JSON.
    SendSignal(SignalMessage),
    /// Send `text` on `peer`'s `p3-control` channel.
    SendControl {
        /// The peer.
        peer: String,
        /// JSON of a [`ControlMessage`].
        text: String,
    },
    /// Send `bytes` (one binary message) on `peer`'s `p3-lanes` channel.
    Transmit {
        /// The peer.
        peer: String,
        /// A multiplexer frame.
        bytes: Vec<u8>,
    },
    /// Send a heartbeat ping to the server now (the tier machine's silent-loss probe); report
    /// pongs with [`Mesh::handle_server_pong`].
    Ping,
    /// Read `getStats()` of every connected link now and report each with
    /// [`Mesh::handle_stats`] (at [`MeshConfig::stats_interval_ms`], backing off while stable:
    /// [`STATS_STABLE_SAMPLES`]).
    SampleStats,
    /// Hand to the app.
    Event(MeshEvent),
    /// Nothing more until this deadline ([`Millis::NEVER`]: none); then call
    /// [`Mesh::handle_timeout`].
    Timeout(Millis),
}

/// Refusals of [`Mesh::send`] and [`Mesh::close_link`] (the caller's mistake or a full
/// queue; never caused by peer data).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeshError {
    /// No link to this peer is wanted or held.
    #[error("no link to peer {0}")]
    UnknownPeer(String),
    /// The value could not be encoded as JSON.
    #[error("value is not JSON-compatible: {0}")]
    BadValue(String),
    /// The multiplexer of a peer refused (backpressure, message too large).
    #[error("peer {peer}: {error}")]
    Mux {
        /// The peer.
        peer: String,
        /// Why.
        error: MuxError,
    },
    /// [`Mesh::close`] was called.
    #[error("the mesh is closed")]
    Closed,
}

impl MeshError {
    /// The code JS errors carry.
    pub fn code(&self) -> ErrorCode {
        match self {
            MeshError::UnknownPeer(_) => ErrorCode::UnknownTarget,
            MeshError::BadValue(_) => ErrorCode::BadPayload,
            MeshError::Mux { error, .. } => error.code(),
            MeshError::Closed => ErrorCode::Closed,
        }
    }
}

/// Parameters.
#[derive(Clone, Debug)]
pub struct MeshConfig {
    /// This device's session id.
    pub me: String,
    /// Controller for the hub topology; `None`: the lowest member id.
    pub controller: Option<String>,
    /// Delay before a lost link that is still wanted is opened again (ms).
    pub relink_delay_ms: u64,
    /// See [`POLITE_OFFER_DELAY_MS`]; 0 lets both sides offer at once (glare every time).
    pub polite_offer_delay_ms: u64,
    /// See [`CONNECT_TIMEOUT_MS`].
    pub connect_timeout_ms: u64,
    /// See [`LINK_SILENCE_MS`].
    pub link_silence_ms: u64,
    /// See [`STATS_INTERVAL_MS`] (ms); 0: no [`MeshOutput::SampleStats`].
    pub stats_interval_ms: u64,
    /// Seed for the multiplexers' epochs and nonces (random per mesh).
    pub seed: u64,
}

impl MeshConfig {
    /// Defaults for `me`.
    pub fn new(me: impl Into<String>, seed: u64) -> Self {
        MeshConfig {
            me: me.into(),
            controller: None,
            relink_delay_ms: RELINK_DELAY_MS,
            polite_offer_delay_ms: POLITE_OFFER_DELAY_MS,
            connect_timeout_ms: CONNECT_TIMEOUT_MS,
            link_silence_ms: LINK_SILENCE_MS,
            stats_interval_ms: STATS_INTERVAL_MS,
            seed,
        }
    }
}

/// The multiplexer configuration used on `p3-lanes` (both ends alike): all 8 lanes with their
/// registry characteristics, 16 KiB chunks, [`LANES_HIGH_WATER_BYTES`], no polling (the
/// `bufferedamountlow` event reports the buffer), no retransmission timer (the channel is
/// reliable and ordered).
pub fn lanes_mux_config(seed: u64) -> MuxConfig {
    let mut cfg = MuxConfig::all_lanes(seed);
    cfg.transport_high_water_bytes = Some(LANES_HIGH_WATER_BYTES);
    cfg.transport_poll_ms = None;
    cfg
}

struct Link {
    neg: Negotiator,
    control_open: bool,
    lanes_open: bool,
    state: LinkState,
    /// Polite side: make no offer of our own before this (ms), the impolite side's is due.
    polite_wait_until: Option<u64>,
    /// `negotiationneeded` fired during the polite wait.
    offer_wanted: bool,
    /// Give up (and relink) if not connected by then (ms).
    connect_deadline: Option<u64>,
    /// When the peer last delivered anything on this link (ms).
    last_heard: u64,
    /// Pacing of answers to the peer's probes ([`ALIVE_ANSWER_BURST`]).
    answers: Gcra,
    /// The class of its last stats, if any.
    quality: Option<NetworkQuality>,
}

impl Link {
    /// Connected, or ICE `disconnected` after being connected.
    fn is_up(&self) -> bool {
        matches!(self.state, LinkState::Connected | LinkState::Disconnected)
    }

    fn deadlines(&self) -> [Option<u64>; 2] {
        [
            self.polite_wait_until.filter(|_| self.offer_wanted),
            self.connect_deadline,
        ]
    }
}

struct Peer {
    mux: Mux,
    link: Option<Link>,
    relink_at: Option<u64>,
    /// The peer's connected links, as it last announced them.
    announced: BTreeSet<String>,
}

impl Peer {
    fn connected(&self) -> bool {
        self.link
            .as_ref()
            .is_some_and(|l| l.state == LinkState::Connected)
    }
}

/// The mesh state machine of one device (see the module doc for the rules).
///
/// Drive contract ([`crate::core::drive`]): inputs take `now` (ms) last; after each, drain
/// [`Mesh::poll_output`] until [`MeshOutput::Timeout`], performing the outputs in order; call
/// [`Mesh::handle_timeout`] at that deadline. It owns its [`TierMachine`] and polls it inside
/// [`Mesh::poll_output`].
pub struct Mesh {
    cfg: MeshConfig,
    members: BTreeSet<String>,
    peers: BTreeMap<String, Peer>,
    server_up: bool,
    pending: VecDeque<SignalMessage>,
    out: VecDeque<MeshOutput>,
    /// Connected peers as last announced to them.
    announced: Vec<String>,
    mux_seq: u64,
    closed: bool,
    now: u64,
    tier: TierMachine,
    /// What the tier machine was last told about the server's socket.
    tier_socket: Option<bool>,
    /// Members whose link went down while the server was unreachable (see the module doc).
    lost: BTreeSet<String>,
    /// When the next `alive` probes go out (ms); `None` while not probing or with no
    /// connected link.
    next_alive: Option<u64>,
    /// Whether liveness last saw the server unreachable ([`Mesh::serverless`]); a change is
    /// applied by [`Mesh::check_alive`] at once (its deadline is then now).
    alive_serverless: bool,
    /// Probing goes on until then (ms) after the server came back.
    probe_until: u64,
    /// When the next [`MeshOutput::SampleStats`] is due (ms); `None` with no connected link.
    next_stats: Option<u64>,
    /// Stats rounds since a link's quality class (or a link, or the server) last changed.
    stats_stable: u32,
}

impl Mesh {
    /// A mesh for `cfg.me`, with no members yet and the server up.
    pub fn new(cfg: MeshConfig) -> Self {
        Mesh {
            members: BTreeSet::from([cfg.me.clone()]),
            cfg,
            peers: BTreeMap::new(),
            server_up: true,
            pending: VecDeque::new(),
            out: VecDeque::new(),
            announced: Vec::new(),
            mux_seq: 0,
            closed: false,
            now: 0,
            tier: TierMachine::new(TierConfig::default(), Tier::Socket),
            tier_socket: None,
            lost: BTreeSet::new(),
            next_alive: None,
            alive_serverless: false,
            probe_until: 0,
            next_stats: None,
            stats_stable: 0,
        }
    }

    // ---- getters ----

    /// This device's session id.
    pub fn me(&self) -> &str {
        &self.cfg.me
    }

    /// Room members (this device included).
    pub fn members(&self) -> &BTreeSet<String> {
        &self.members
    }

    /// The state of every link held or wanted (`None`: waiting to be opened again).
    pub fn links(&self) -> impl Iterator<Item = (&str, Option<LinkState>)> {
        self.peers
            .iter()
            .map(|(p, peer)| (p.as_str(), peer.link.as_ref().map(|l| l.state)))
    }

    /// Peers whose link is connected.
    pub fn connected_peers(&self) -> Vec<String> {
        self.peers
            .iter()
            .filter(|(_, p)| p.connected())
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The peers this device should link to now (topology).
    pub fn wanted(&self) -> BTreeSet<String> {
        let (controller, deputy) = self.hubs();
        signal::links_of(
            &signal::mesh_links(&self.members, &controller, deputy.as_deref()),
            &self.cfg.me,
        )
    }

    /// The hub the topology centres on: `(controller, deputy)`, or `None` while the room is a
    /// full mesh (at most [`signal::FULL_MESH_MAX`] members). The controller is the one set
    /// with [`Mesh::set_controller`] if it is a member, else the lowest member id that is not
    /// lost; the deputy the lowest other member id that is not lost (module doc).
    pub fn hub(&self) -> Option<(String, Option<String>)> {
        (self.members.len() > signal::FULL_MESH_MAX).then(|| self.hubs())
    }

    /// Members this device considers gone without the server having said so (module doc).
    pub fn lost(&self) -> &BTreeSet<String> {
        &self.lost
    }

    fn hubs(&self) -> (String, Option<String>) {
        let present = |m: &&String| !self.lost.contains(*m);
        let controller = self
            .cfg
            .controller
            .clone()
            .filter(|c| self.members.contains(c))
            .or_else(|| self.members.iter().find(present).cloned())
            .or_else(|| self.members.iter().next().cloned())
            .unwrap_or_default();
        let deputy = self
            .members
            .iter()
            .filter(present)
            .find(|m| **m != controller)
            .cloned();
        (controller, deputy)
    }

    /// Whether the server is unreachable for the mesh (socket down or the tier left it).
    fn serverless(&self) -> bool {
        !self.server_up || self.tier.tier() != Tier::Socket
    }

    /// The sync tier now.
    pub fn tier(&self) -> Tier {
        self.tier.tier()
    }

    /// The multiplexer of `peer`, if any (diagnostics, tests).
    pub fn mux(&self, peer: &str) -> Option<&Mux> {
        self.peers.get(peer).map(|p| &p.mux)
    }

    // ---- inputs: room and server ----

    /// The full member list (session ids, this device's included or not): opens the links the
    /// topology now wants, closes the others.
    pub fn handle_members(&mut self, members: impl IntoIterator<Item = String>, now: Millis) {
        self.now = self.now.max(now.as_u64());
        self.members = members.into_iter().collect();
        self.members.insert(self.cfg.me.clone());
        let members = &self.members;
        self.lost.retain(|m| members.contains(m));
        self.reconcile();
    }

    /// A member joined.
    pub fn handle_member_joined(&mut self, peer: String, now: Millis) {
        self.now = self.now.max(now.as_u64());
        self.lost.remove(&peer);
        self.members.insert(peer);
        self.reconcile();
    }

    /// A member left (the server said so): its link is closed and forgotten.
    pub fn handle_member_left(&mut self, peer: &str, now: Millis) {
        self.now = self.now.max(now.as_u64());
        if peer != self.cfg.me {
            self.members.remove(peer);
            self.lost.remove(peer);
        }
        self.reconcile();
    }

    /// Sets the controller the hub topology centres on (`None`: the lowest member id that is
    /// not lost): call it with every new claim's controller, so the hub follows the server's
    /// DJ and, without the server, the elected one (PROTOCOL.md §13.13). Links the new
    /// topology wants are opened (signaling relayed through connected peers when the server
    /// is down), links it no longer wants are closed.
    pub fn set_controller(&mut self, controller: Option<String>, now: Millis) {
        self.now = self.now.max(now.as_u64());
        self.cfg.controller = controller;
        self.reconcile();
    }

    /// The server handed this device a new session (it restarted or forgot the old one,
    /// PROTOCOL.md §13.12): the mesh takes `me` as its id. Every link of the old id is
    /// closed and forgotten (the other members re-handshake too and know only new ids), the
    /// members become just this device until the next [`Mesh::handle_members`] (the rejoin's
    /// `joined`), and signals still waiting under the old id are dropped. The tier machine
    /// is kept: its hysteresis decides the return to the socket tier as for any reconnect.
    /// An unchanged id does nothing.
    pub fn handle_new_id(&mut self, me: impl Into<String>, now: Millis) {
        let me = me.into();
        self.now = self.now.max(now.as_u64());
        if self.closed || me == self.cfg.me {
            return;
        }
        let ids: Vec<String> = self.peers.keys().cloned().collect();
        for id in ids {
            self.forget(&id);
        }
        self.pending.clear();
        self.announced.clear();
        self.cfg.me = me.clone();
        self.members = BTreeSet::from([me]);
    }

    /// Whether the server can route signals now (its WebSocket is open).
    pub fn handle_server(&mut self, up: bool, now: Millis) {
        self.now = self.now.max(now.as_u64());
        if self.server_up != up {
            self.stats_reset();
        }
        self.server_up = up;
        if self.tier_socket != Some(up) {
            self.tier_socket = Some(up);
            if up {
                self.tier.handle_socket_open(Millis::from_u64(self.now));
            } else {
                self.tier.handle_socket_closed(Millis::from_u64(self.now));
            }
        }
        self.flush_pending();
    }

    /// A pong from the server (any: heartbeats, [`MeshOutput::Ping`] probes), round trip
    /// `rtt_ms` (ms).
    pub fn handle_server_pong(&mut self, rtt_ms: f64, now: Millis) {
        self.now = self.now.max(now.as_u64());
        self.tier.handle_pong(rtt_ms, Millis::from_u64(self.now));
    }

    /// A signaling message the server delivered (ignored unless addressed to this device).
    pub fn handle_server_signal(&mut self, msg: SignalMessage, now: Millis) {
        self.now = self.now.max(now.as_u64());
        if msg.to == self.cfg.me {
            self.handle_signal(msg);
        }
    }

    // ---- inputs: the RTCPeerConnection ----

    /// `negotiationneeded` fired on `peer`'s connection. The polite side of a new link waits
    /// up to [`POLITE_OFFER_DELAY_MS`] for the impolite side's offer before making its own.
    pub fn handle_negotiation_needed(&mut self, peer: &str, now: Millis) {
        self.now = self.now.max(now.as_u64());
        let now = self.now;
        if let Some(link) = self.link_mut(peer) {
            if link.polite_wait_until.is_some_and(|t| now < t) {
                link.offer_wanted = true;
                return;
            }
            let actions = link.neg.handle_negotiation_needed();
            self.perform(peer, actions);
        }
    }

    /// `setLocalDescription()` resolved on `peer`'s connection with `localDescription` of
    /// type offer (`is_offer`) or answer, text `sdp`: sends it.
    pub fn handle_local_description(&mut self, peer: &str, is_offer: bool, sdp: String) {
        if let Some(link) = self.link_mut(peer) {
            let actions = if is_offer {
                link.neg.handle_local_offer(sdp)
            } else {
                link.neg.handle_local_answer(sdp)
            };
            self.perform(peer, actions);
        }
    }

    /// A negotiation step failed on `peer`'s connection (`what`: the operation, `message`:
    /// the browser's error). Reported as an `error` event; a failed offer is forgotten so the
    /// next `negotiationneeded` may try again.
    pub fn handle_negotiation_failed(&mut self, peer: &str, what: &str, message: &str) {
        if let Some(link) = self.link_mut(peer) {
            link.neg.handle_local_offer_failed();
        }
        self.event(MeshEvent::Error {
            peer: Some(peer.to_owned()),
            code: ErrorCode::WebrtcFailed,
            message: format!("{what}: {message}"),
        });
    }

    /// Our offer was not made after all: the connection was no longer `stable` when its turn
    /// came (the peer's offer won the glare). Not an error.
    pub fn handle_offer_superseded(&mut self, peer: &str) {
        if let Some(link) = self.link_mut(peer) {
            link.neg.handle_local_offer_failed();
        }
    }

    /// `icecandidate` fired with a candidate (not the end-of-candidates `null`).
    pub fn handle_local_ice(
        &mut self,
        peer: &str,
        candidate: String,
        sdp_mid: Option<String>,
        sdp_m_line_index: Option<u16>,
    ) {
        if self.link_mut(peer).is_none() {
            return;
        }
        let msg = SignalMessage {
            from: self.cfg.me.clone(),
            to: peer.to_owned(),
            body: SignalBody::Ice {
                candidate,
                sdp_mid,
                sdp_m_line_index,
            },
        };
        self.route(msg);
    }

    /// `connectionstatechange` on `peer`'s connection.
    pub fn handle_peer_state(&mut self, peer: &str, state: PeerConnectionState, now: Millis) {
        self.now = self.now.max(now.as_u64());
        let Some(link) = self.link_mut(peer) else {
            return;
        };
        match state {
            PeerConnectionState::Disconnected if link.state == LinkState::Connected => {
                link.state = LinkState::Disconnected;
                self.peer_state(peer, LinkState::Disconnected);
            }
            PeerConnectionState::Connected if link.state == LinkState::Disconnected => {
                let ready = link.control_open && link.lanes_open;
                link.state = if ready {
                    LinkState::Connected
                } else {
                    LinkState::Connecting
                };
                let s = link.state;
                self.peer_state(peer, s);
            }
            PeerConnectionState::Failed => self.link_down(peer, LinkState::Failed),
            PeerConnectionState::Closed => self.link_down(peer, LinkState::Closed),
            _ => {}
        }
    }

    /// A DataChannel of `peer` opened.
    pub fn handle_channel_open(&mut self, peer: &str, channel: Channel, now: Millis) {
        self.now = self.now.max(now.as_u64());
        let now = self.now;
        let Some(link) = self.link_mut(peer) else {
            return;
        };
        match channel {
            Channel::Control => link.control_open = true,
            Channel::Lanes => link.lanes_open = true,
        }
        if link.control_open && link.lanes_open && link.state == LinkState::Connecting {
            link.state = LinkState::Connected;
            link.connect_deadline = None;
            link.last_heard = now;
            self.lost.remove(peer);
            if self.probing() {
                self.next_alive.get_or_insert(self.now + ALIVE_INTERVAL_MS);
            }
            self.stats_reset();
            // Usable until its first stats say otherwise.
            self.tier
                .handle_peer(peer, Some(NetworkQuality::Good), Millis::from_u64(self.now));
            if let Some(p) = self.peers.get_mut(peer) {
                p.mux
                    .handle_transport_resumed(crate::core::drive::Millis::from_u64(self.now));
            }
            self.peer_state(peer, LinkState::Connected);
            self.announce();
            self.flush_pending();
            self.pump_mux(peer);
        }
    }

    /// A DataChannel of `peer` closed (or errored): the link is down.
    pub fn handle_channel_closed(&mut self, peer: &str, _channel: Channel, now: Millis) {
        self.now = self.now.max(now.as_u64());
        self.link_down(peer, LinkState::Closed);
    }

    // ---- inputs: DataChannel data ----

    /// A text message on `peer`'s `p3-control` channel.
    pub fn handle_control(&mut self, from: &str, text: &str, now: Millis) {
        self.now = self.now.max(now.as_u64());
        if !self.peers.contains_key(from) {
            return;
        }
        self.heard(from);
        match serde_json::from_str::<ControlMessage>(text) {
            Ok(ControlMessage::Alive { answer: true }) => {}
            Ok(ControlMessage::Alive { answer: false }) => self.answer_probe(from),
            Ok(ControlMessage::Links { peers }) => {
                let now: BTreeSet<String> = peers.into_iter().collect();
                let before = match self.peers.get_mut(from) {
                    Some(p) => std::mem::replace(&mut p.announced, now.clone()),
                    None => BTreeSet::new(),
                };
                // The controller is linked to everyone: without the server, whom it loses is
                // lost for this device too (a listener has no link of its own to see it).
                if self.serverless() && self.hubs().0 == from {
                    let dropped = before.difference(&now).filter(|m| **m != self.cfg.me);
                    let dropped: Vec<String> = dropped.cloned().collect();
                    let mut changed = false;
                    for m in dropped {
                        changed |= self.lost.insert(m);
                    }
                    for m in &now {
                        changed |= self.lost.remove(m);
                    }
                    if changed {
                        self.reconcile();
                    }
                }
                self.flush_pending();
            }
            Ok(ControlMessage::Relay { signal }) => {
                if signal.to == self.cfg.me {
                    self.handle_signal(signal);
                } else if signal.from == from
                    && self.peers.get(&signal.to).is_some_and(Peer::connected)
                {
                    self.event(MeshEvent::SignalRelayed {
                        from: signal.from.clone(),
                        to: signal.to.clone(),
                    });
                    let to = signal.to.clone();
                    self.control(&to, &ControlMessage::Relay { signal });
                } else {
                    self.event(MeshEvent::Error {
                        peer: Some(from.to_owned()),
                        code: ErrorCode::UnknownTarget,
                        message: format!(
                            "cannot relay a signal from {} to {}: no connected link",
                            signal.from, signal.to
                        ),
                    });
                }
            }
            Ok(ControlMessage::ClockPing { client_time }) => self.event(MeshEvent::Clock {
                from: from.to_owned(),
                probe: ClockProbe::Ping { client_time },
            }),
            Ok(ControlMessage::ClockPong {
                client_time,
                server_time,
            }) => self.event(MeshEvent::Clock {
                from: from.to_owned(),
                probe: ClockProbe::Pong {
                    client_time,
                    server_time,
                },
            }),
            Err(e) => self.event(MeshEvent::Error {
                peer: Some(from.to_owned()),
                code: ErrorCode::BadControl,
                message: format!("p3-control message: {e}"),
            }),
        }
    }

    /// A binary message on `peer`'s `p3-lanes` channel (a multiplexer frame).
    pub fn handle_lane_input(&mut self, peer: &str, bytes: &[u8], now: Millis) {
        self.now = self.now.max(now.as_u64());
        let Some(p) = self.peers.get_mut(peer) else {
            return;
        };
        if !p.connected() {
            return;
        }
        let now = self.now;
        if let Some(l) = p.link.as_mut() {
            l.last_heard = now;
        }
        p.mux
            .handle_input(bytes, crate::core::drive::Millis::from_u64(now));
        self.pump_mux(peer);
    }

    /// `peer`'s `p3-lanes` `bufferedAmount` now (bytes): on `bufferedamountlow`.
    pub fn handle_lane_buffered(&mut self, peer: &str, buffered: usize) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.mux.handle_transport_buffered(buffered);
            self.pump_mux(peer);
        }
    }

    /// `getStats()` of `peer`'s connection, as [`StatsData`]: emits a `Quality` event and
    /// publishes the stats to that peer on the Telemetry lane
    /// (`{type: "link-stats", ...StatsData, quality}`).
    pub fn handle_stats(&mut self, peer: &str, stats: StatsData, now: Millis) {
        self.now = self.now.max(now.as_u64());
        if !self.peers.get(peer).is_some_and(Peer::connected) {
            return;
        }
        let quality = stats.quality();
        let previous = self.link_mut(peer).and_then(|l| l.quality.replace(quality));
        if previous != Some(quality) {
            self.stats_reset();
        }
        self.tier
            .handle_peer(peer, Some(quality), Millis::from_u64(self.now));
        let mut published = serde_json::to_value(&stats).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut published {
            m.insert("type".into(), Value::from("link-stats"));
            m.insert(
                "quality".into(),
                serde_json::to_value(quality).unwrap_or(Value::Null),
            );
        }
        self.event(MeshEvent::Quality {
            peer: peer.to_owned(),
            stats,
            quality,
        });
        if let Some(p) = self.peers.get_mut(peer) {
            if p.connected() {
                if let Ok(bytes) = serde_json::to_vec(&published) {
                    // Telemetry is unreliable: a full queue drops the oldest, never refuses.
                    let _ = p.mux.send(Lane::Telemetry, bytes);
                }
            }
        }
        self.pump_mux(peer);
    }

    /// The deadline of the last [`MeshOutput::Timeout`] passed (early calls are harmless).
    pub fn handle_timeout(&mut self, now: Millis) {
        self.now = self.now.max(now.as_u64());
        if self.tier.next_deadline().is_some_and(|t| t <= self.now) {
            self.tier.handle_timeout(Millis::from_u64(self.now));
        }
        self.check_alive();
        self.check_stats();
        let ids: Vec<String> = self.peers.keys().cloned().collect();
        for id in ids {
            let Some(p) = self.peers.get_mut(&id) else {
                continue;
            };
            if p.mux.next_deadline().is_some_and(|t| t <= self.now) {
                p.mux
                    .handle_timeout(crate::core::drive::Millis::from_u64(self.now));
            }
            if p.relink_at.is_some_and(|t| t <= self.now) {
                p.relink_at = None;
                self.open_link(&id);
            }
            let now = self.now;
            let mut offer = false;
            let mut timed_out = false;
            if let Some(link) = self.peers.get_mut(&id).and_then(|p| p.link.as_mut()) {
                if link.polite_wait_until.is_some_and(|t| t <= now) {
                    link.polite_wait_until = None;
                    offer = std::mem::take(&mut link.offer_wanted);
                }
                if link.connect_deadline.is_some_and(|t| t <= now) {
                    link.connect_deadline = None;
                    timed_out = link.state == LinkState::Connecting;
                }
            }
            if timed_out {
                self.link_down(&id, LinkState::Failed);
            } else if offer {
                self.handle_negotiation_needed(&id, Millis::from_u64(now));
            }
            self.pump_mux(&id);
        }
    }

    // ---- mutators ----

    /// Sends `value` (as JSON) on `lane` to `to`, or to every peer the topology links this
    /// device to. Messages to a peer whose link is not connected yet wait in its queue.
    ///
    /// Errors: [`MeshError::UnknownPeer`] (`unknown_target`) for a `to` with no link;
    /// [`MeshError::Mux`] (`backpressure`, `frame_too_large`) from the first peer that
    /// refused (the others got the message); [`MeshError::BadValue`]; [`MeshError::Closed`].
    pub fn send(&mut self, lane: Lane, value: &Value, to: Option<&str>) -> Result<(), MeshError> {
        if self.closed {
            return Err(MeshError::Closed);
        }
        let bytes = serde_json::to_vec(value).map_err(|e| MeshError::BadValue(e.to_string()))?;
        let targets: Vec<String> = match to {
            Some(t) if self.peers.contains_key(t) => vec![t.to_owned()],
            Some(t) => return Err(MeshError::UnknownPeer(t.to_owned())),
            None => self.peers.keys().cloned().collect(),
        };
        let mut first_err = None;
        for t in targets {
            let Some(p) = self.peers.get_mut(&t) else {
                continue;
            };
            if let Err(error) = p.mux.send(lane, bytes.clone()) {
                first_err.get_or_insert(MeshError::Mux {
                    peer: t.clone(),
                    error,
                });
            }
            self.pump_mux(&t);
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Sends a clock probe or answer on `peer`'s `p3-control` channel (PROTOCOL.md §13.10).
    /// Unreliable beyond the channel's 3 retransmissions, unsealed (see
    /// [`crate::core::sync::peer_clock`]).
    ///
    /// Errors: [`MeshError::UnknownPeer`] if the link to `peer` is not connected,
    /// [`MeshError::Closed`].
    pub fn send_clock(&mut self, peer: &str, probe: ClockProbe) -> Result<(), MeshError> {
        if self.closed {
            return Err(MeshError::Closed);
        }
        if !self.peers.get(peer).is_some_and(Peer::connected) {
            return Err(MeshError::UnknownPeer(peer.to_owned()));
        }
        let msg = match probe {
            ClockProbe::Ping { client_time } => ControlMessage::ClockPing { client_time },
            ClockProbe::Pong {
                client_time,
                server_time,
            } => ControlMessage::ClockPong {
                client_time,
                server_time,
            },
        };
        self.control(peer, &msg);
        Ok(())
    }

    /// Closes the link to `peer` (sends `end`); it is opened again after the relink delay if
    /// the topology still wants it (both sides do so: a way to restart a link).
    ///
    /// Errors: [`MeshError::UnknownPeer`] if no link is held.
    pub fn close_link(&mut self, peer: &str, now: Millis) -> Result<(), MeshError> {
        self.now = self.now.max(now.as_u64());
        if self.link_mut(peer).is_none() {
            return Err(MeshError::UnknownPeer(peer.to_owned()));
        }
        self.route(SignalMessage {
            from: self.cfg.me.clone(),
            to: peer.to_owned(),
            body: SignalBody::End {
                reason: Some("closed by the app".into()),
            },
        });
        self.link_down(peer, LinkState::Closed);
        Ok(())
    }

    /// Closes every link for good (sends `end` to each); later inputs are ignored.
    pub fn close(&mut self) {
        if self.closed {
            return;
        }
        let ids: Vec<String> = self.peers.keys().cloned().collect();
        for id in &ids {
            if self.peers.get(id).is_some_and(|p| p.link.is_some()) {
                self.route(SignalMessage {
                    from: self.cfg.me.clone(),
                    to: id.clone(),
                    body: SignalBody::End {
                        reason: Some("mesh closed".into()),
                    },
                });
            }
        }
        for id in ids {
            self.forget(&id);
        }
        self.closed = true;
    }

    // ---- outputs ----

    /// The next thing to do. Order: the tier machine's outputs are moved to the end of the
    /// queue first ([`MeshOutput::Ping`], [`MeshEvent::Tier`]), then the queued outputs come
    /// in the order they arose (a peer is opened before it is negotiated), then
    /// [`MeshOutput::Timeout`] with the earliest deadline of the mesh, its multiplexers and
    /// its tier machine.
    #[must_use]
    pub fn poll_output(&mut self, now: Millis) -> MeshOutput {
        loop {
            let o = self.tier.poll_output(now);
            self.out.push_back(match o {
                TierOutput::Timeout(_) => break,
                TierOutput::SendPing => MeshOutput::Ping,
                TierOutput::TierChanged {
                    from,
                    to,
                    reason,
                    at_ms,
                } => MeshOutput::Event(MeshEvent::Tier {
                    from,
                    to,
                    reason,
                    at_ms,
                }),
            });
        }
        self.out
            .pop_front()
            .unwrap_or_else(|| MeshOutput::Timeout(Millis::from_deadline(self.next_deadline())))
    }

    /// When to call [`Mesh::handle_timeout`] (ms), if ever.
    fn next_deadline(&self) -> Option<u64> {
        let silence = self.serverless().then(|| {
            self.peers
                .values()
                .filter_map(|p| p.link.as_ref().filter(|l| l.is_up()))
                .map(|l| l.last_heard + self.cfg.link_silence_ms)
                .min()
        });
        self.peers
            .values()
            .flat_map(|p| {
                let [a, b] = p.link.as_ref().map_or([None, None], Link::deadlines);
                [p.mux.next_deadline(), p.relink_at, a, b]
            })
            .chain([
                self.tier.next_deadline(),
                self.next_alive,
                self.next_stats,
                silence.flatten(),
                // A change of the server's reachability is applied at once (check_alive).
                (self.serverless() != self.alive_serverless).then_some(self.now),
            ])
            .flatten()
            .min()
    }

    // ---- internals ----

    fn link_mut(&mut self, peer: &str) -> Option<&mut Link> {
        if self.closed {
            return None;
        }
        self.peers.get_mut(peer)?.link.as_mut()
    }

    fn event(&mut self, ev: MeshEvent) {
        self.out.push_back(MeshOutput::Event(ev));
    }

    fn peer_state(&mut self, peer: &str, state: LinkState) {
        self.event(MeshEvent::PeerState {
            peer: peer.to_owned(),
            state,
        });
    }

    fn control(&mut self, peer: &str, msg: &ControlMessage) {
        if let Ok(text) = serde_json::to_string(msg) {
            self.out.push_back(MeshOutput::SendControl {
                peer: peer.to_owned(),
                text,
            });
        }
    }

    /// Opens wanted links that are missing, forgets unwanted ones.
    fn reconcile(&mut self) {
        if self.closed {
            return;
        }
        let wanted = self.wanted();
        let gone: Vec<String> = self
            .peers
            .keys()
            .filter(|p| !wanted.contains(*p) && !self.members.contains(*p))
            .cloned()
            .collect();
        for p in gone {
            self.forget(&p);
        }
        // Members linked beyond the topology (hub changes) are closed too.
        let extra: Vec<String> = self
            .peers
            .keys()
            .filter(|p| !wanted.contains(*p))
            .cloned()
            .collect();
        for p in extra {
            self.forget(&p);
        }
        for p in wanted {
            if !self.peers.contains_key(&p) {
                self.add_peer(&p);
                self.open_link(&p);
            }
        }
    }

    fn add_peer(&mut self, peer: &str) {
        self.mux_seq += 1;
        let seed = self
            .cfg
            .seed
            .wrapping_add(self.mux_seq.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mux = Mux::new(lanes_mux_config(seed)).expect("the lanes mux config is valid");
        self.peers.insert(
            peer.to_owned(),
            Peer {
                mux,
                link: None,
                relink_at: None,
                announced: BTreeSet::new(),
            },
        );
    }

    fn open_link(&mut self, peer: &str) {
        if self.closed {
            return;
        }
        let neg = Negotiator::new(self.cfg.me.clone(), peer.to_owned());
        let polite = neg.polite();
        let Some(p) = self.peers.get_mut(peer) else {
            return;
        };
        p.relink_at = None;
        let wait = self.cfg.polite_offer_delay_ms;
        p.link = Some(Link {
            neg,
            control_open: false,
            lanes_open: false,
            state: LinkState::Connecting,
            polite_wait_until: (polite && wait > 0).then_some(self.now + wait),
            offer_wanted: false,
            connect_deadline: Some(self.now + self.cfg.connect_timeout_ms),
            last_heard: self.now,
            answers: alive_answers(),
            quality: None,
        });
        self.out.push_back(MeshOutput::OpenPeer {
            peer: peer.to_owned(),
            polite,
        });
        self.peer_state(peer, LinkState::Connecting);
    }

    fn link_down(&mut self, peer: &str, state: LinkState) {
        if self.closed {
            return;
        }
        let was_up = self
            .peers
            .get(peer)
            .and_then(|p| p.link.as_ref())
            .is_some_and(|l| matches!(l.state, LinkState::Connected | LinkState::Disconnected));
        let newly_lost = was_up && self.serverless() && self.lost.insert(peer.to_owned());
        let wanted = self.wanted().contains(peer);
        let relink = self.now + self.cfg.relink_delay_ms;
        let Some(p) = self.peers.get_mut(peer) else {
            return;
        };
        if p.link.take().is_none() {
            return;
        }
        p.mux.handle_transport_lost();
        p.announced.clear();
        if wanted {
            p.relink_at = Some(relink);
        }
        self.stats_reset();
        self.tier
            .handle_peer(peer, None, Millis::from_u64(self.now));
        self.out.push_back(MeshOutput::ClosePeer {
            peer: peer.to_owned(),
        });
        self.peer_state(peer, state);
        self.announce();
        if !wanted {
            self.peers.remove(peer);
        }
        if newly_lost {
            // The deputy may change (a hub went): open the links the topology wants now.
            self.reconcile();
        }
    }

    fn forget(&mut self, peer: &str) {
        if let Some(p) = self.peers.remove(peer) {
            self.tier
                .handle_peer(peer, None, Millis::from_u64(self.now));
            if p.link.is_some() {
                self.out.push_back(MeshOutput::ClosePeer {
                    peer: peer.to_owned(),
                });
                self.peer_state(peer, LinkState::Closed);
            }
            self.announce();
        }
    }

    fn handle_signal(&mut self, msg: SignalMessage) {
        if self.closed || msg.from == self.cfg.me {
            return;
        }
        let peer = msg.from.clone();
        let is_offer = matches!(msg.body, SignalBody::Offer { .. });
        if !self.peers.contains_key(&peer) {
            if !is_offer {
                return;
            }
            // An offer from a member we did not link to yet (it saw a join we missed).
            self.members.insert(peer.clone());
            self.add_peer(&peer);
        }
        if self.peers.get(&peer).is_some_and(|p| p.link.is_none()) {
            if !is_offer {
                return;
            }
            self.open_link(&peer);
        }
        let Some(link) = self.link_mut(&peer) else {
            return;
        };
        if is_offer {
            link.polite_wait_until = None;
            link.offer_wanted = false;
        }
        let actions = link.neg.handle_signal(msg);
        self.perform(&peer, actions);
    }

    fn perform(&mut self, peer: &str, actions: Vec<NegotiationAction>) {
        for a in actions {
            match a {
                NegotiationAction::Send(m) => self.route(m),
                NegotiationAction::Close => self.link_down(peer, LinkState::Closed),
                action => self.out.push_back(MeshOutput::Negotiate {
                    peer: peer.to_owned(),
                    action,
                }),
            }
        }
    }

    /// The connected peer to hand a signal for `to` to, when the server is down.
    fn relay_for(&self, to: &str) -> Option<String> {
        if self.peers.get(to).is_some_and(Peer::connected) {
            return Some(to.to_owned());
        }
        self.peers
            .iter()
            .find(|(id, p)| id.as_str() != to && p.connected() && p.announced.contains(to))
            .map(|(id, _)| id.clone())
    }

    fn route(&mut self, msg: SignalMessage) {
        if self.server_up {
            self.out.push_back(MeshOutput::SendSignal(msg));
            return;
        }
        match self.relay_for(&msg.to) {
            Some(via) => self.control(&via, &ControlMessage::Relay { signal: msg }),
            None => {
                if self.pending.len() >= MAX_PENDING_SIGNALS {
                    if let Some(old) = self.pending.pop_front() {
                        self.event(MeshEvent::Error {
                            peer: Some(old.to.clone()),
                            code: ErrorCode::UnknownTarget,
                            message: format!("no route to {}: signal dropped", old.to),
                        });
                    }
                }
                self.pending.push_back(msg);
            }
        }
    }

    fn flush_pending(&mut self) {
        let waiting = std::mem::take(&mut self.pending);
        for msg in waiting {
            if self.server_up || self.relay_for(&msg.to).is_some() {
                self.route(msg);
            } else {
                self.pending.push_back(msg);
            }
        }
    }

    /// The peer delivered something on its link.
    fn heard(&mut self, peer: &str) {
        let now = self.now;
        if let Some(l) = self.peers.get_mut(peer).and_then(|p| p.link.as_mut()) {
            l.last_heard = now;
        }
    }

    /// Stats sampling (see [`MeshOutput::SampleStats`]): due now, ask for it and schedule
    /// the next one.
    fn check_stats(&mut self) {
        if self.next_stats.is_some_and(|d| d <= self.now) {
            self.next_stats = None;
            if !self.connected_peers().is_empty() {
                self.out.push_back(MeshOutput::SampleStats);
                self.next_stats = Some(self.now + self.stats_delay_ms());
                self.stats_stable = self.stats_stable.saturating_add(1);
            }
        }
    }

    /// The wait before the next stats sample (ms): [`MeshConfig::stats_interval_ms`], doubled
    /// per [`STATS_STABLE_SAMPLES`] unchanged rounds up to [`STATS_MAX_DOUBLINGS`] times while
    /// the server is up.
    fn stats_delay_ms(&self) -> u64 {
        let doublings = if self.serverless() {
            0
        } else {
            (self.stats_stable / STATS_STABLE_SAMPLES).min(STATS_MAX_DOUBLINGS)
        };
        self.cfg.stats_interval_ms << doublings
    }

    /// Something changed (a link, a quality class, the server): sample at the base interval
    /// again, the next one at most an interval from now.
    fn stats_reset(&mut self) {
        self.stats_stable = 0;
        if self.cfg.stats_interval_ms == 0 || self.closed {
            return;
        }
        let at = self.now + self.cfg.stats_interval_ms;
        self.next_stats = Some(self.next_stats.map_or(at, |t| t.min(at)));
    }

    /// Whether this device probes its links now (module doc "Liveness").
    fn probing(&self) -> bool {
        self.alive_serverless || self.now < self.probe_until
    }

    /// Answers a probe from `peer` (module doc "Liveness"), within its pacing.
    fn answer_probe(&mut self, peer: &str) {
        let now = Millis::from_u64(self.now);
        let Some(link) = self.link_mut(peer).filter(|l| l.is_up()) else {
            return;
        };
        if link.answers.conforms(now) {
            link.answers.consume(now);
            self.control(peer, &ControlMessage::Alive { answer: true });
        }
    }

    /// Liveness (module doc): applies a change of the server's reachability (losing it: grace
    /// for every link unless still probing, first probes now; regaining it: probes stop
    /// [`MeshConfig::link_silence_ms`] later), sends the probes every [`ALIVE_INTERVAL_MS`]
    /// while probing, and without the server takes down links silent for
    /// [`MeshConfig::link_silence_ms`]. A probe timer that fires more than an interval late
    /// means this device stalled (a busy renderer, a suspended tab): then the silence says
    /// nothing about the peers, and every link counts as just heard.
    fn check_alive(&mut self) {
        let now = self.now;
        let serverless = self.serverless();
        if serverless != self.alive_serverless {
            self.alive_serverless = serverless;
            if !serverless {
                self.probe_until = now + self.cfg.link_silence_ms;
            } else if self.next_alive.is_none() {
                // Nothing was asked while the server was up: the silence proves nothing.
                self.grace();
                self.next_alive = Some(now);
            }
        }
        if let Some(due) = self.next_alive.filter(|d| *d <= now) {
            if now - due > ALIVE_INTERVAL_MS {
                self.grace();
            }
            let connected = self.connected_peers();
            let probing = self.probing() && !connected.is_empty();
            self.next_alive = probing.then_some(now + ALIVE_INTERVAL_MS);
            if probing {
                for p in &connected {
                    self.control(p, &ControlMessage::Alive { answer: false });
                }
            }
        }
        if !self.serverless() {
            return;
        }
        let silence = self.cfg.link_silence_ms;
        let silent: Vec<String> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                p.link
                    .as_ref()
                    .is_some_and(|l| l.is_up() && now >= l.last_heard + silence)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for peer in silent {
            // Reported as `peer-state` `failed`, like a link that never connected.
            self.link_down(&peer, LinkState::Failed);
        }
    }

    /// Every link counts as heard now.
    fn grace(&mut self) {
        let now = self.now;
        for l in self.peers.values_mut().filter_map(|p| p.link.as_mut()) {
            l.last_heard = l.last_heard.max(now);
        }
    }

    /// Tells every connected peer our connected links, if they changed.
    fn announce(&mut self) {
        let now = self.connected_peers();
        if now == self.announced {
            return;
        }
        self.announced = now.clone();
        let msg = ControlMessage::Links { peers: now.clone() };
        for p in now {
            self.control(&p, &msg);
        }
    }

    /// Moves `peer`'s multiplexer events and frames into the outputs.
    fn pump_mux(&mut self, peer: &str) {
        let Some(p) = self.peers.get_mut(peer) else {
            return;
        };
        let mut events = Vec::new();
        let mut fatal = None;
        while let Some(ev) = p.mux.next_event() {
            match ev {
                MuxEvent::Message { lane, bytes, .. } => {
                    match serde_json::from_slice::<Value>(&bytes) {
                        Ok(value) => events.push(MeshEvent::Message {
                            from: peer.to_owned(),
                            lane,
                            value,
                        }),
                        Err(e) => events.push(MeshEvent::Error {
                            peer: Some(peer.to_owned()),
                            code: ErrorCode::BadPayload,
                            message: format!("lane {} message is not JSON: {e}", lane.id()),
                        }),
                    }
                }
                MuxEvent::Discontinuity(d) => events.push(MeshEvent::Discontinuity {
                    peer: peer.to_owned(),
                    discontinuity: d,
                }),
                MuxEvent::Drain { lane } => events.push(MeshEvent::Drain {
                    peer: peer.to_owned(),
                    lane,
                }),
                MuxEvent::Dropped { lane, count } => events.push(MeshEvent::Dropped {
                    peer: peer.to_owned(),
                    lane,
                    count,
                }),
                MuxEvent::Error(e) => {
                    if e.is_fatal() {
                        fatal = Some(e.to_string());
                    }
                    events.push(MeshEvent::Error {
                        peer: Some(peer.to_owned()),
                        code: e.code(),
                        message: e.to_string(),
                    });
                }
            }
        }
        if p.connected() {
            while let Some(bytes) = p.mux.next_transmit() {
                self.out.push_back(MeshOutput::Transmit {
                    peer: peer.to_owned(),
                    bytes,
                });
            }
        }
        for ev in events {
            self.event(ev);
        }
        if fatal.is_some() {
            self.link_down(peer, LinkState::Failed);
        }
    }
}

/// The pacing of one link's answers to probes: one per [`ALIVE_INTERVAL_MS`], bursts of
/// [`ALIVE_ANSWER_BURST`].
fn alive_answers() -> Gcra {
    Gcra::new(1000.0 / ALIVE_INTERVAL_MS as f64, ALIVE_ANSWER_BURST)
        .expect("the alive answer rate is positive")
}

crate::core::drive::machine!(Mesh, MeshOutput);

#[cfg(test)]
mod tests;
