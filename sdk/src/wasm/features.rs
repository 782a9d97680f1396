//! The feature entry points of `P3Client` (`musicRoom`, `peerMesh`, `call`): a second
//! `#[wasm_bindgen] impl P3Client` block, so [`crate::wasm::client`] never names the features
//! built on it and the dependencies run one way (music, p2p, calls → client/driver; this
//! module → all of them). The JS class is the same `P3Client`.

use crate::wasm::client::P3Client;
use crate::wasm::error;
use js_sys::Promise;
use wasm_bindgen::prelude::*;

#[wasm_bindgen]
impl P3Client {
    /// Joins the music room `name` (a lane room whose playback state the server keeps, PROTOCOL.md
    /// §12) and keeps `options.media` (an `<audio>`/`<video>` element or a `MediaPlayer`) in
    /// sync with it. Resolves with the `MusicRoom` once joined; the clock burst and the room's
    /// state follow within about a second. Needs the Control and Sync lanes.
    ///
    /// Leaves any other room (one room per session); joining another room or `leaveRoom()`
    /// closes the music room.
    ///
    /// Rejects with `invalid_argument` for a bad name or options (`media` missing or of the
    /// wrong kind), `lane_not_negotiated` if the client lacks Control or Sync (or Messaging
    /// with `peerToPeer`), `closed` if the client closes first.
    #[wasm_bindgen(js_name = musicRoom, unchecked_return_type = "Promise<MusicRoom>")]
    pub fn music_room(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] name: JsValue,
        #[wasm_bindgen(unchecked_param_type = "MusicRoomOptions")] options: JsValue,
    ) -> Promise {
        match name.as_string() {
            Some(name) => crate::wasm::music::join(self.handle(), name, &options),
            None => Promise::reject(&error::invalid_argument("room must be a string")),
        }
    }

    /// Joins `room` (leaving any other) and builds this device's WebRTC DataChannel mesh there
    /// (`PeerMesh`, PROTOCOL.md §13.5): one RTCPeerConnection per link of the topology (full
    /// mesh up to 6 members, DJ hub beyond), signaling on the Messaging lane through the
    /// server, or through connected peers while the server is down. Resolves once joined;
    /// links come up in the background (`peer-state` events). Needs the Messaging lane.
    ///
    /// Rejects with `invalid_argument` for a bad name or options, `lane_not_negotiated` if
    /// the client lacks the Messaging lane, `closed` if the client closes first.
    #[wasm_bindgen(js_name = peerMesh, unchecked_return_type = "Promise<PeerMesh>")]
    pub fn peer_mesh(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] room: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "PeerMeshOptions")] options: JsValue,
    ) -> Promise {
        crate::wasm::p2p::peer_mesh(self.handle(), room, options)
    }

    /// Rings `identity` (an address, EIP-55 or lowercase, or an app-token `sub`) on every
    /// session where it is signed in and admits this one (`acceptCallsFrom`, PROTOCOL.md
    /// §13.16), and resolves with the `Call` once one of them accepts: `call.mesh` is a
    /// `PeerMesh` whose one peer is the callee's session, its RTCPeerConnection negotiated on
    /// the Messaging lane without a shared room. `options`: `PeerMeshOptions` of that mesh.
    /// This client must be signed in (`auth` in `connect`: SIWE or an app token; the device
    /// key is not enough) and have the Messaging lane.
    ///
    /// Rejects with `code`: `auth_required` (not signed in), `callee_unavailable` (no session
    /// of that identity to ring), `forbidden` (it does not accept calls from this identity),
    /// `call_declined`, `call_ended` (unanswered for `expiresInMs`, 30 s by default),
    /// `too_many_requests` / `rate_limited`, `lane_not_negotiated`, `invalid_argument`.
    #[wasm_bindgen(unchecked_return_type = "Promise<Call>")]
    pub fn call(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] identity: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "PeerMeshOptions")] options: JsValue,
    ) -> Promise {
        crate::wasm::calls::call(self.handle(), identity, options)
    }
}
