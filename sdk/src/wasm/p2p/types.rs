//! TypeScript declarations of `PeerMesh` (appended to `p3_lanes.d.ts`). Shapes mirror
//! [`crate::core::p2p::mesh`] and [`crate::core::p2p::quality`].

use wasm_bindgen::prelude::*;

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &'static str = r#"
/** Options of `client.peerMesh`; every field is optional. */
export interface PeerMeshOptions {
  /** RTCPeerConnection configuration. Default: `GET /api/webrtc/config` of the server (seed 001 `getWebRTCConfig`), or `{iceServers: []}` (host candidates only) if it does not answer. */
  rtcConfiguration?: RTCConfiguration;
  /** Period of `getStats()` per link, ms (→ `quality` events and Telemetry); while the server is up and no link's quality class changes it doubles every 4 rounds, up to 8×. `0` turns it off. Default: 1000. */
  statsIntervalMs?: number;
  /** Controller (DJ) session id the hub topology centres on above 6 members. Default: the lowest member id. */
  controller?: string;
}

/** State of one link (`peer-state` events). */
export type PeerLinkState = 'connecting' | 'connected' | 'disconnected' | 'failed' | 'closed';

/** One link of `mesh.peers`: `'waiting'` while a lost link waits to be opened again. */
export interface PeerLink {
  /** The peer's session id. */
  peer: string;
  state: PeerLinkState | 'waiting';
}

/** `mesh.linkStats(peer)`: counters of the lane multiplexer towards one peer, since the mesh was created. */
export interface LinkStats {
  /** Messages handed to the `p3-lanes` DataChannel (chunks ≤ 16 KiB, acks, resumes). */
  framesSent: number;
  /** Bytes handed to `p3-lanes`. */
  bytesSent: number;
  /** Resume handshakes completed (one per link that came up). */
  resumes: number;
  /** Ack frames sent. */
  acksSent: number;
}

/** A lane message from a peer (`mesh.onMessage`). */
export interface PeerMessage {
  /** Sender's session id. */
  from: string;
  lane: LaneNumber;
  /** The value as sent (JSON-compatible; objects are plain objects). */
  data: unknown;
}

/** Seed 001 `assessNetworkQuality` class (rtt ms / loss %): excellent < 100 / < 1, good < 300 / < 5, poor < 500 / < 10, else critical (also when ICE is not connected). */
export type NetworkQuality = 'excellent' | 'good' | 'poor' | 'critical';

/** Seed 001 `StatsData` of one link, from `RTCPeerConnection.getStats()`. */
export interface PeerStats {
  /** ICE candidate-pair `currentRoundTripTime`, ms. */
  rtt: number;
  /** RTP jitter, ms (0 on data-only links). */
  jitter: number;
  /** RTP packet loss, % (0 on data-only links). */
  packetLoss: number;
  /** Bits per second sent on the selected candidate pair since the previous sample. */
  bitrate: number;
  /** Media codec (empty on data-only links). */
  codec: string;
  /** `iceConnectionState`. */
  iceState: string;
  /** When sampled: `performance.now()`, ms. */
  timestamp: number;
}

/** Seed 004 sync tier: `socket` (server), `webrtc` (DataChannel mesh), `offline` (alone). */
export type SyncTier = 'socket' | 'webrtc' | 'offline';

/** Why the tier changed: the WebSocket closed (crash), no pong for 2.25 s (silent loss), smoothed RTT ≥ 300 ms, the server is stable again, or peers became (un)reachable. */
export type TierReason = 'socket-closed' | 'heartbeat-timeout' | 'high-latency' | 'server-back' | 'peers';

/** Events of `mesh.onEvent`. */
export type PeerMeshEvent =
  | { type: 'peer-state'; peer: string; state: PeerLinkState }
  /** Every `statsIntervalMs` (backing off while stable) per connected link; the same stats go to that peer on the Telemetry lane as `{type: 'link-stats', ...PeerStats, quality}`. */
  | { type: 'quality'; peer: string; quality: NetworkQuality; stats: PeerStats }
  /** The sync tier changed (`atMs`: `performance.now()`, ms). */
  | { type: 'tier'; from: SyncTier; to: SyncTier; reason: TierReason; atMs: number }
  /** This device forwarded a signaling message between two peers (server down). */
  | { type: 'signal-relayed'; from: string; to: string }
  /** A lane to `peer` that refused `send` with `backpressure` has room again. */
  | { type: 'drain'; peer: string; lane: LaneNumber }
  /** Queued messages of an unreliable lane to `peer` were dropped for newer ones. */
  | { type: 'dropped'; peer: string; lane: LaneNumber; count: number }
  /** A reliable lane from `peer` skipped messages that will never arrive (the peer reloaded). */
  | { type: 'discontinuity'; peer: string; lane: LaneNumber; expectedEpoch: number; expectedSeq: number; epoch: number; seq: number; reason: 'history-lost' | 'peer-restarted' | 'joined-mid-stream' }
  /** A clock probe from `peer` on its `p3-control` channel (PROTOCOL.md §13.10; a `MusicRoom` with `peerToPeer` answers it while it hosts the room clock). `clientTime`: the peer's `performance.now()`, ms. */
  | { type: 'clock-ping'; peer: string; clientTime: number }
  /** The controller's answer to this device's clock probe (`serverTime`: the room clock, ms since the Unix epoch). */
  | { type: 'clock-pong'; peer: string; clientTime: number; serverTime: number }
  /** A failed WebRTC step (`webrtc_failed`), a signal with no route (`unknown_target`), bad peer data (`bad_control`, `bad_payload`, `bad_frame`, `protocol_violation`, ...), or a signal the client could not send. */
  | { type: 'error'; peer: string | null; code: ErrorCode; message: string };
"#;
