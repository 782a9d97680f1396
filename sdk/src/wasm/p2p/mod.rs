//! `PeerMesh`: the WebRTC DataChannel mesh of one device in a room (issue #5; seed 004
//! "Tier 2: WebRTC mesh"; seed 000 "Nexus as P2P signaling"; seed 001 signaling, ICE
//! configuration and call-quality monitoring). PROTOCOL.md §13.5.
//!
//! The rules (which links, glare, signaling routes, relays, one multiplexer per peer, stats to
//! quality) live in the sans-IO core [`crate::core::p2p::mesh::Mesh`]; this binding only
//! carries its outputs to `RTCPeerConnection` / `RTCDataChannel` / the `P3Client` and feeds
//! their events back in:
//!
//! | module | does |
//! | --- | --- |
//! | (this) | the exported class: argument conversion only |
//! | `driver` | the shared state, the pump, the client listener, timers, event dispatch |
//! | `rtc` | one RTCPeerConnection with its two negotiated DataChannels, negotiation steps, `getStats()` |
//! | `types` | TypeScript declarations |
//!
//! ```js
//! const mesh = await client.peerMesh('demo', { rtcConfiguration: { iceServers: [] } });
//! mesh.onMessage((m) => console.log(m.from, m.lane, m.data));
//! mesh.onEvent((e) => e.type === 'peer-state' && console.log(e.peer, e.state));
//! mesh.send('Data', { hello: 'peers' });          // every linked peer
//! mesh.send('Messaging', { hi: 1 }, otherSession); // one peer
//! ```

mod driver;
mod rtc;
#[cfg(test)]
mod tests;
mod types;

use crate::core::p2p::mesh::MeshError;
use crate::wasm::driver::Handle as ClientHandle;
use crate::wasm::{convert, error};
use js_sys::{Function, Promise};
use wasm_bindgen::prelude::*;

pub(crate) use driver::{
    close as close_mesh, open as open_mesh, subscribe, with_mesh, MeshHandle, Topic,
};
pub(crate) use driver::{fetch_rtc_config, is_signal, open_call};

/// The DataChannel mesh of this device in a room: one RTCPeerConnection per link chosen by
/// the topology (full mesh up to 6 members, DJ hub beyond), lanes multiplexed over a
/// DataChannel per peer, signaling through the server while it is up and through connected
/// peers when it is not. Create it with `client.peerMesh(room, options)`.
///
/// Keep a reference while you use it and call `close()` when done: dropping it closes every
/// link.
#[wasm_bindgen]
pub struct PeerMesh {
    inner: driver::MeshHandle,
}

impl PeerMesh {
    /// A `PeerMesh` on an open mesh (a call's, [`crate::wasm::calls`]).
    pub(crate) fn from_handle(inner: driver::MeshHandle) -> PeerMesh {
        PeerMesh { inner }
    }
}

#[wasm_bindgen]
impl PeerMesh {
    /// This device's id in the mesh: the client's session id. After the server restarted (or
    /// forgot the session) it is the new session id: the mesh drops the old links and links
    /// again with the rejoined members (PROTOCOL.md §13.12).
    #[wasm_bindgen(getter, js_name = sessionId)]
    pub fn session_id(&self) -> String {
        self.inner.borrow().me().to_owned()
    }

    /// The room.
    #[wasm_bindgen(getter)]
    pub fn room(&self) -> String {
        self.inner.borrow().room().to_owned()
    }

    /// The sync tier (seed 004): `'socket'` while the server is reachable with a round trip
    /// under 300 ms, `'webrtc'` while it is not and at least one link is usable (quality not
    /// `critical`), else `'offline'`; changes are `tier` events (PROTOCOL.md §13.1).
    #[wasm_bindgen(getter, unchecked_return_type = "SyncTier")]
    pub fn tier(&self) -> JsValue {
        self.inner.borrow().tier_js()
    }

    /// Every link held or wanted: `PeerLink[]`, `{peer, state}` with `state` a
    /// `PeerLinkState`, or `'waiting'` while a lost link waits to be opened again (1 s).
    #[wasm_bindgen(getter, unchecked_return_type = "PeerLink[]")]
    pub fn peers(&self) -> JsValue {
        self.inner.borrow().peers_js()
    }

    /// Counters of the lane multiplexer towards `peer` (`LinkStats`: DataChannel messages and
    /// bytes handed to `p3-lanes`, resumes, acks), or `null` if no link to `peer` is held.
    #[wasm_bindgen(js_name = linkStats, unchecked_return_type = "LinkStats | null")]
    pub fn link_stats(&self, peer: &str) -> JsValue {
        self.inner.borrow().link_stats_js(peer)
    }

    /// Sends `data` (JSON-compatible) on `lane` (id 1..=8 or name) to peer `to` (a session
    /// id), or to every linked peer. Values travel as UTF-8 JSON through the peer's lane
    /// multiplexer: chunked in ≤ 16 KiB DataChannel messages, by lane priority, exactly once
    /// and in order on reliable lanes. A message to a peer whose link is down waits in its
    /// queue until the link is back.
    ///
    /// Throws with `code`: `unknown_lane`, `invalid_argument` (`to` not a string),
    /// `bad_payload` (not JSON-compatible), `unknown_target` (no link to `to`),
    /// `backpressure` (a reliable lane's queue to a peer is full: wait for a `drain` event;
    /// for a broadcast the other peers got the message), `frame_too_large` (over 16 MiB),
    /// `closed`.
    pub fn send(
        &self,
        #[wasm_bindgen(unchecked_param_type = "LaneId")] lane: JsValue,
        #[wasm_bindgen(unchecked_param_type = "unknown")] data: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "string | null")] to: JsValue,
    ) -> Result<(), JsValue> {
        let lane = convert::lane_from_js(&lane)?;
        let to = match (to.is_undefined() || to.is_null(), to.as_string()) {
            (true, _) => None,
            (false, Some(s)) => Some(s),
            (false, None) => return Err(error::invalid_argument("`to` must be a session id")),
        };
        let value = convert::value_from_js(&data)?;
        driver::with_mesh(&self.inner, |m, _| m.send(lane, &value, to.as_deref()))
            .map_err(|e| mesh_error(&e))
    }

    /// Calls `callback(message)` for every lane message from a peer: `PeerMessage`,
    /// `{from, lane, data}`. Returns a function that unsubscribes.
    ///
    /// Throws `invalid_argument` if `callback` is not a function.
    #[wasm_bindgen(js_name = onMessage, unchecked_return_type = "() => void")]
    pub fn on_message(
        &self,
        #[wasm_bindgen(unchecked_param_type = "(message: PeerMessage) => void")] callback: JsValue,
    ) -> Result<JsValue, JsValue> {
        Ok(driver::subscribe(
            &self.inner,
            driver::Topic::Message,
            function(callback)?,
        ))
    }

    /// Calls `callback(event)` for every `PeerMeshEvent`: `peer-state`, `quality` (every
    /// `statsIntervalMs`), `tier`, `signal-relayed`, `drain`, `dropped`, `discontinuity`,
    /// `clock-ping` / `clock-pong` (PROTOCOL.md §13.10), `error`.
    /// Returns a function that unsubscribes.
    ///
    /// Throws `invalid_argument` if `callback` is not a function.
    #[wasm_bindgen(js_name = onEvent, unchecked_return_type = "() => void")]
    pub fn on_event(
        &self,
        #[wasm_bindgen(unchecked_param_type = "(event: PeerMeshEvent) => void")] callback: JsValue,
    ) -> Result<JsValue, JsValue> {
        Ok(driver::subscribe(
            &self.inner,
            driver::Topic::Event,
            function(callback)?,
        ))
    }

    /// Closes the link to `peer` (an `end` signal is sent); both sides open it again after
    /// 1 s if the topology still wants it, through the server or, without it, with signaling
    /// relayed by a peer connected to both.
    ///
    /// Throws `unknown_target` if no link to `peer` is held, `invalid_argument` if it is not
    /// a string.
    #[wasm_bindgen(js_name = closeLink)]
    pub fn close_link(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] peer: JsValue,
    ) -> Result<(), JsValue> {
        let Some(peer) = peer.as_string() else {
            return Err(error::invalid_argument("peer must be a session id"));
        };
        driver::with_mesh(&self.inner, |m, now| m.close_link(&peer, now))
            .map_err(|e| mesh_error(&e))
    }

    /// Sets the controller (DJ) the hub topology centres on above 6 members (`null`: the
    /// lowest member id); links the new topology no longer wants are closed, new ones opened.
    /// Up to 6 members every pair is linked whatever the controller.
    ///
    /// Throws `invalid_argument` if `controller` is neither a string nor `null`.
    #[wasm_bindgen(js_name = setController)]
    pub fn set_controller(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string | null")] controller: JsValue,
    ) -> Result<(), JsValue> {
        let controller = match (
            controller.is_null() || controller.is_undefined(),
            controller.as_string(),
        ) {
            (true, _) => None,
            (false, Some(c)) => Some(c),
            (false, None) => {
                return Err(error::invalid_argument(
                    "controller must be a session id or null",
                ))
            }
        };
        driver::with_mesh(&self.inner, |m, now| m.set_controller(controller, now));
        Ok(())
    }

    /// Closes every link for good (sending `end` to each), stops the stats timer and stops
    /// listening to the client. The client stays in the room. Idempotent.
    pub fn close(&self) {
        driver::close(&self.inner);
    }
}

/// `client.peerMesh(room, options)` (see [`crate::wasm::client::P3Client::peer_mesh`]).
pub(crate) fn peer_mesh(client: &ClientHandle, room: JsValue, options: JsValue) -> Promise {
    if let Err(e) =
        crate::wasm::driver::require_lanes(client, &[crate::core::lane::Lane::Messaging])
    {
        return Promise::reject(&e);
    }
    match room.as_string() {
        Some(room) => join(client, room, options),
        None => Promise::reject(&error::invalid_argument("room must be a string")),
    }
}

/// `client.peerMesh(room, options)`: resolves the RTCConfiguration, listens to the client,
/// joins the room and resolves with the `PeerMesh` once joined (links start at once).
pub(crate) fn join(client: &ClientHandle, room: String, options: JsValue) -> Promise {
    let client = client.clone();
    wasm_bindgen_futures::future_to_promise(async move {
        let h = open_mesh(&client, room, &options).await?;
        Ok(PeerMesh { inner: h }.into())
    })
}

/// The JS error of a refused mesh call.
fn mesh_error(e: &MeshError) -> JsValue {
    error::coded(e.code(), &e.to_string())
}

fn function(v: JsValue) -> Result<Function, JsValue> {
    v.dyn_into::<Function>()
        .map_err(|_| error::invalid_argument("callback must be a function"))
}
