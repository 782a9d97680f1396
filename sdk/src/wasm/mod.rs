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

// Features (sdk/Cargo.toml) choose what a build exports, one npm entry each: `lanes` the
// client, `music` its music rooms, peer mesh, calls and offline queue, `pwa` the cache guard.
// The shared runtime (errors, `globalThis`, conversions, timers) is in every build; a build
// without every feature leaves some of its helpers unused, which is not a defect.
#![cfg_attr(not(feature = "full"), allow(dead_code, unused_imports))]

#[cfg(feature = "lanes")]
mod auth;
#[cfg(feature = "music")]
pub mod calls;
#[cfg(feature = "lanes")]
pub mod client;
#[cfg(feature = "lanes")]
pub mod codec;
mod convert;
#[cfg(feature = "lanes")]
mod device_key;
#[cfg(feature = "lanes")]
mod driver;
mod error;
#[cfg(feature = "lanes")]
mod events;
#[cfg(feature = "music")]
mod features;
mod global;
#[cfg(feature = "lanes")]
mod http;
#[cfg(feature = "music")]
pub mod music;
#[cfg(feature = "music")]
pub mod offline;
#[cfg(feature = "lanes")]
mod options;
#[cfg(feature = "music")]
pub mod p2p;
#[cfg(feature = "pwa")]
pub mod pwa;
mod runtime;
#[cfg(feature = "lanes")]
mod sse;
mod types;

#[cfg(feature = "lanes")]
pub use client::P3Client;
#[cfg(feature = "lanes")]
pub use codec::DictionaryCodec;
#[cfg(feature = "music")]
pub use music::MusicRoom;
#[cfg(feature = "music")]
pub use offline::OfflineChangeQueue;
#[cfg(feature = "music")]
pub use p2p::PeerMesh;
#[cfg(feature = "pwa")]
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
