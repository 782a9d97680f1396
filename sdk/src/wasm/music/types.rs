//! TypeScript declarations of the music-room API (`MusicRoom`), appended to `p3_lanes.d.ts`.
//! Shapes mirror [`crate::core::sync::state`] (room state, changes) and
//! [`crate::core::sync::follower`] (status, drift).

use wasm_bindgen::prelude::*;

#[wasm_bindgen(typescript_custom_section)]
const TS_MUSIC_TYPES: &'static str = r#"
/** Options of `P3Client.musicRoom`. */
export interface MusicRoomOptions {
  /** What to keep in sync: an `<audio>`/`<video>` element, or your own player. */
  media: HTMLMediaElement | MediaPlayer;
  /** The source of a track. Default: `track.url`, else `/media/<trackId>`; a path starting with `/` is relative to the server's base URL. */
  trackUrl?: (trackId: string, track: MusicTrack | null) => string;
  /** After the browser refused `play()` (autoplay policy), start on the next pointer or key press anywhere on the page. Default: true. You can also call `room.userGesture()` from your own button. */
  resumeOnGesture?: boolean;
  /** Keep a WebRTC DataChannel mesh with the room's members (`true`, or the mesh's `PeerMeshOptions`) so the room plays on in sync when the server is lost (Tier 2, PROTOCOL.md §13.11): the DJ's changes then travel sealed under the room key over the mesh. Default: false. */
  peerToPeer?: boolean | PeerMeshOptions;
  /** With `peerToPeer`: the stable id (`origin`) of the changes this device makes without the server; they are kept in IndexedDB under (room, deviceId) and pushed when it answers again (Tier 3, PROTOCOL.md §13.12). Use the same id after a reload to find them. Default: this profile's device name, a random id kept in `localStorage` (`p3-lanes-device-id`), bound to the session's verified identity (`client.handshake.identity`, from `auth` or the device key) as `'<kind>:<id>/<device name>'` (e.g. `'siwe:0xAb…/device-0123…'`), so the server refuses a push in this device's name from anyone else (PROTOCOL.md §13.15); without an identity (or when that would exceed 128 bytes) the bare device name, which anyone may use. Changes stored under the bare name by an older SDK are found again only with `deviceId: '<that name>'`. */
  deviceId?: string;
}

/** A custom player the follower drives instead of an `HTMLMediaElement`. Positions in s. */
export interface MediaPlayer {
  /** Switch to this track; report `ready: true` from `sample()` once it can play. */
  load(trackId: string, track: MusicTrack | null): void;
  /** Start playing. Return a Promise that rejects with a `NotAllowedError` if the platform refuses without a user gesture. */
  play(): void | Promise<void>;
  pause(): void;
  /** Jump to `positionS` (s). */
  seek(positionS: number): void;
  /** Playback rate (1 = normal); keep the pitch. The follower nudges it by a few % to correct drift. */
  setRate(rate: number): void;
  /** The player now: position (s), paused, seeking, current rate, and whether it can play. */
  sample(): { position: number; paused: boolean; seeking?: boolean; rate?: number; ready: boolean };
}

/** Track data carried in the room state (free-form; these fields are understood). */
export interface MusicTrack {
  id: string;
  title?: string;
  /** Where to load it (see `MusicRoomOptions.trackUrl`). */
  url?: string;
  /** Duration, s: positions are bounded by it. */
  duration?: number;
  [key: string]: unknown;
}

/** The room's shared playback state (seed 004 `sync-state`). Times are on the shared clock (the server's, ms since the Unix epoch). */
export interface MusicRoomState {
  trackId: string | null;
  track: MusicTrack | null;
  isPlaying: boolean;
  /** Track position at `referenceTime`, s. */
  position: number;
  /** When this state takes effect and `position` holds, shared-clock ms. */
  referenceTime: number;
  playbackRate: number;
  /** The controller's (DJ's) session id, or null: anyone may `claimController()`. */
  controllerId: string | null;
  /** The identity the DJ role belongs to (`'<kind>:<id>'`, e.g. `'device:…'`, `'siwe:0x…'`); set while the DJ is away within the grace and `controllerId` is null (PROTOCOL.md §13.15). Absent when no verified identity holds the role. */
  controllerIdentity?: string;
  /** Counts controller changes. */
  epoch: number;
  /** Counts the controller's changes within the epoch. */
  sequence: number;
}

/** `MusicControl.action`: the changes a room's authority resolves (it refuses any other name). */
export type MusicAction = 'play' | 'pause' | 'seek' | 'change-track' | 'handover';

/** A change as resolved by the room's authority (seed 004 `music-control`). */
export interface MusicControl {
  type: 'music-control';
  action: MusicAction;
  data: { position?: number; trackId?: string; track?: MusicTrack; timestamp?: number; from?: string; controllerId?: string; controllerIdentity?: string; to?: string };
  sequence: number;
  epoch: number;
  /** When it takes effect, shared-clock ms. */
  applyAt?: number;
}

/** What the follower is doing. `needs-user-gesture`: the browser refused autoplay; a click or key press (or `room.userGesture()`) starts it. */
export type MusicStatus = 'waiting' | 'loading' | 'paused' | 'starting' | 'correcting' | 'in-sync' | 'needs-user-gesture';

/** The clock estimate against the shared clock. */
export interface MusicClock {
  /** Enough probes answered for the estimate to be used. */
  synced: boolean;
  /** shared clock − `performance.now()`, ms. */
  offsetMs: number;
  /** Smoothed round-trip time to the server, ms (null before the first answer). */
  rttMs: number | null;
  /** Smallest recent round-trip time, ms. */
  minRttMs: number | null;
  /** Half-width of the interval the offset is known to lie in, ms. */
  uncertaintyMs: number | null;
  /** Rate of the shared clock against the local one, ppm. */
  driftPpm: number;
  /** Probe answers in the estimate. */
  samples: number;
  /** Where probes go (PROTOCOL.md §13.10): `'server'`; `'peer'`: the controller's kept clock over the mesh (serverless); `'host'`: this device is the controller without the server and answers its peers (it does not probe). */
  source: 'server' | 'peer' | 'host';
  /** Probes sent to the controller over the mesh. */
  peerProbes: number;
  /** Answers from the controller taken as samples. */
  peerSamples: number;
  /** Peers' probes this device answered as host. */
  peerAnswers: number;
}

/** Events of `room.onEvent`. */
export type MusicRoomEvent =
  /** A new room state was received (it may take effect later, at `state.referenceTime`). */
  | { type: 'state'; state: MusicRoomState }
  /** A change resolved by the authority (who did what, scheduled when). */
  | { type: 'control'; control: MusicControl }
  | { type: 'status'; status: MusicStatus }
  /** One drift measurement while playing: media position − room position, ms (positive: ahead), and what was done about it. */
  | { type: 'drift'; localMs: number; serverMs: number; errorMs: number; rate: number; correction: 'none' | 'nudge' | 'seek' }
  /** The clock estimate changed. */
  | ({ type: 'clock' } & MusicClock)
  /** The browser refused `play()`: show a "tap to play" control (any click or key press resumes by default). */
  | { type: 'needs-user-gesture' }
  /** The server refused a change (`not_controller`, `epoch_mismatch`, `invalid_argument`, ...), the media failed (`internal`), or a peer's music message was rejected (`forbidden`: tampered/foreign/replayed, `epoch_mismatch`: stale epoch, `not_controller`, `bad_payload`). */
  | { type: 'error'; code: ErrorCode; message: string }
  /** `peerToPeer`: the sync tier changed (`reason`: `socket-closed`, `heartbeat-timeout`, `high-latency`, `server-back`, `peers`). */
  | { type: 'tier'; from: SyncTier; to: SyncTier; reason: TierReason }
  /** `peerToPeer`: the controller claim `{epoch, controller}` changed (the server's, or one elected without it); `elected`: this device ran the election (a new epoch). */
  | { type: 'controller'; epoch: number; controller: string; elected: boolean }
  /** `peerToPeer`: how many changes made without the server wait in the offline queue for the server's acknowledgement (PROTOCOL.md §13.12). */
  | { type: 'pending'; pending: number }
  /** `peerToPeer`: the offline queue held changes of an earlier page (a reload) when the room opened, and the state they produced here. */
  | { type: 'restored'; pending: OfflineChange[]; state: MusicRoomState | null }
  /** `peerToPeer`: the server answered a push of queued changes (`music-changes-ack`, PROTOCOL.md §13.9): `applied` now (in `appliedOrder`), of which `skipped` changed nothing; what it holds per device (`versionVector`); what is still queued (`pending`). The room follows the server's state from here ("server wins"). */
  | { type: 'reconciled'; applied: number; skipped: number; epoch: number; appliedOrder: [string, number][]; versionVector: VersionVector; pending: number; seeded: boolean }
  /** The room stopped (closed, left, or the client closed); no more events. */
  | { type: 'closed'; reason: string };
"#;
