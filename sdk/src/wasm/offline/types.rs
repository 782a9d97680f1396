//! TypeScript declarations of the offline change queue's shapes, appended to
//! `p3_lanes.d.ts`. They mirror [`crate::core::p2p::changes`] (PROTOCOL.md §13.3).

use wasm_bindgen::prelude::*;

#[wasm_bindgen(typescript_custom_section)]
const TS_OFFLINE_TYPES: &'static str = r#"
/**
 * One device's change (seed 004 Tier 3; PROTOCOL.md §13.3), identified by `(origin, localSeq)`.
 * `localSeq` counts from 1 per device; `epoch` is the controller epoch it was made in;
 * `timestamp` is shared-clock ms since the Unix epoch; `op` is its body (a `music-control`).
 */
export interface OfflineChange {
  origin: string;
  localSeq: number;
  epoch: number;
  timestamp: number;
  op: unknown;
}

/** Per origin, the highest `localSeq` an authority (server or controller) has applied. */
export type VersionVector = Record<string, number>;

/**
 * A queue as persisted (PROTOCOL.md §13.3): own changes not yet acknowledged (`pending`, oldest
 * first), other origins' changes carried for a replaced authority (`carried`), and the
 * `localSeq` the next `record` gets (`nextSeq`).
 */
export interface OfflineQueueState {
  origin: string;
  nextSeq: number;
  pending: OfflineChange[];
  carried: OfflineChange[];
  /** The room state a music room's offline changes produced (`MusicRoomState`), until the server acknowledged them all (PROTOCOL.md §13.12). */
  roomState?: MusicRoomState;
}

/** A failure of browser storage: no IndexedDB or it failed, quota used up, or a stored record of the wrong shape (left as it is). */
export interface StorageError extends P3Error {
  code: 'storage_unavailable' | 'quota_exceeded' | 'storage_corrupt';
}
"#;
