//! The WebAssembly binding layer (wasm32 only): `P3Client` for JavaScript, a thin driver of
//! the sans-IO core ([`crate::core::client::Client`]) on the browser's clock, timers,
//! `fetch` and `WebSocket`. Works in windows and workers (everything is looked up on
//! `globalThis`).
//!
//! | module | does |
//! | --- | --- |
//! | [`client`] | `P3Client`, the exported class: argument conversion only |
//! | `features` | `P3Client.musicRoom` / `peerMesh` / `call`: the features' entry points on the client |
//! | [`codec`] | `DictionaryCodec`: the dictionary MessagePack codec on its own |
//! | `runtime` | the one timer, callback registry, dispatch queue and task spawner every driver uses |
//! | `driver` | runs the core: socket, timer, re-handshake, event dispatch |
//! | `sse` | the SSE half of the driver: `EventSource` in, `fetch` POSTs out (PROTOCOL.md §14) |
//! | `options` | `ConnectOptions` → handshake request and client config |
//! | `auth` | each handshake's `auth`: a static proof, the app's function, or the device key |
//! | `http` | the handshake `fetch`, WebSocket URLs |
//! | `convert` | JS values ⇄ JSON values, lane and session id arguments |
//! | `events` | JS shapes of messages, events and join results |
//! | `error` | JS errors with a machine-readable `code` |
//! | `global` | `globalThis` lookups: `performance.now()`, `setTimeout`, `fetch` |
//! | `types` | the TypeScript declarations of those shapes |
//! | [`music`] | `MusicRoom`: a media element kept in sync with a music room (issue #4, seed 004) |
//! | [`p2p`] | `PeerMesh`: WebRTC DataChannel mesh, lanes peer to peer, signaling relayed by peers (issue #5) |
//! | [`offline`] | `OfflineChangeQueue`: Tier 3's change queue persisted in IndexedDB (issue #5, seed 004) |
//! | [`pwa`] | `checkVersion` / `CacheGuard`: PWA cache protection (windows and service workers) |
//!
//! ```js
//! import init, { P3Client } from '/pkg/p3_lanes.js';
//! await init();
//! const client = await P3Client.connect(location.origin, { lanes: [1, 2, 7] });
//! client.onMessage('Messaging', (msg) => console.log(msg.from, msg.value));
//! await client.joinRoom('demo');
//! client.send('Messaging', { text: 'hi' });
//! ```

mod auth;
pub mod calls;
pub mod client;
pub mod codec;
mod convert;
mod device_key;
mod driver;
mod error;
mod events;
mod features;
mod global;
mod http;
pub mod music;
pub mod offline;
mod options;
pub mod p2p;
pub mod pwa;
mod runtime;
mod sse;
mod types;

pub use client::P3Client;
pub use codec::DictionaryCodec;
pub use music::MusicRoom;
pub use offline::OfflineChangeQueue;
pub use p2p::PeerMesh;
pub use pwa::{check_version, CacheGuard};

use wasm_bindgen::prelude::*;

// The unit tests of this layer need a browser (JS values, `globalThis`).
#[cfg(test)]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

/// `start()`: runs when the module is instantiated (`init()` / `initSync()` call it) and
/// routes Rust panics to `console.error`. The generated module exports it too; calling it
/// again does nothing.
#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
}
