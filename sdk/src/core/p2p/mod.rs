//! Peer-to-peer and offline tiers, sans-IO (issue #5; seed 004 Phases 2–3 "Tier 2: WebRTC
//! mesh", "Tier 3: offline", "Challenge 3: Split Brain", "Security"; seed 001 signaling and
//! call-quality; seed 000 "Nexus as P2P signaling"). No RTCPeerConnection, no timers, no storage:
//! the browser driver feeds events and `now` (ms) in and carries the outputs.
//!
//! | module | role |
//! | --- | --- |
//! | [`quality`] | seed 001 `assessNetworkQuality` classes and the `StatsData` shape of `getStats()` |
//! | [`tier`] | socket / webrtc / offline decision with heartbeats, hysteresis and dwell times |
//! | [`election`] | controller election without the server: epochs, lowest-id rule, partition heal, server wins |
//! | [`changes`] | Tier 3 offline change queue and the authority's change log: dedup, order, reconciliation |
//! | [`seal`] | AES-256-GCM envelope of music control over peers, with a replay window |
//! | [`ice`] | the ICE server configuration (`RTCConfiguration`) of seed 001 `getWebRTCConfig` |
//! | [`signaling_server`] | the seed 001 signaling server's JSON messages (`auth`, `join`, `offer`, ... / `auth_ok`, `joined`, ...) |
//! | [`signal`] | signaling messages (offer/answer/ICE/end), perfect-negotiation glare rule, mesh/hub topology |
//! | [`mesh`] | the links of one device: topology, signaling routes (server or relaying peer), one lane multiplexer per peer |
//! | [`peer_sync`] | music control between peers without the server: sealed `change` / `claim` messages, the acceptance rule |
//!
//! The pieces meet through values: [`tier::TierMachine`] says when the server is gone,
//! [`election::Election`] says who orders changes, [`changes::ChangeLog`] is what that
//! controller (or the server) runs, and [`changes::OfflineQueue`] keeps every device's own
//! changes until the current authority has them. PROTOCOL.md §13 states the rules.

pub mod changes;
pub mod election;
pub mod ice;
pub mod mesh;
pub mod peer_sync;
pub mod quality;
pub mod seal;
pub mod signal;
pub mod signaling_server;
pub mod tier;
