//! # p3-lanes
//!
//! The client SDK of P3 Protocol's real-time layer: handshake v2, 8 prioritized lanes
//! multiplexed over one WebSocket, and the dictionary MessagePack codec.
//!
//! - [`core`]: the sans-IO protocol core (native and wasm32; used by server-stub too).
//! - `wasm` (wasm32 only): the thin JavaScript binding layer, `P3Client`.
//!
//! The wire format is specified in PROTOCOL.md at the repository root.

pub mod core;

#[cfg(target_arch = "wasm32")]
pub mod wasm;
