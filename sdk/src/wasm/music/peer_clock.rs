//! The room clock over the mesh in the browser (issue #5; PROTOCOL.md §13.10): the thin glue
//! between a `MusicRoom` with `peerToPeer` and the mesh's `p3-control` channel. The core room
//! ([`crate::core::music::Room`]) decides where probes go and answers them; this module sends
//! its probes ([`send`]) and hands it the mesh's `clock-ping` / `clock-pong` events
//! ([`handle_mesh_event`]).

use super::RoomHandle;
use crate::core::drive::Millis;
use crate::core::sync::peer_clock::ClockProbe;
use crate::wasm::p2p;
use wasm_bindgen::JsValue;

/// Sends a clock probe or answer on `to`'s `p3-control` channel (no room borrow held). A link
/// that went down meanwhile is not an error: the probe expires.
pub(super) fn send(h: &RoomHandle, to: &str, probe: ClockProbe) {
    let mesh = h.borrow().tiers.as_ref().and_then(|t| t.mesh.clone());
    if let Some(mesh) = mesh {
        let _ = p2p::with_mesh(&mesh, |m, _| m.send_clock(to, probe));
    }
}

/// A `PeerMeshEvent` of type `kind`: handles `clock-ping` / `clock-pong` and returns `true`,
/// or returns `false` for any other event.
pub(super) fn handle_mesh_event(h: &RoomHandle, kind: &str, e: &JsValue) -> bool {
    if kind != "clock-ping" && kind != "clock-pong" {
        return false;
    }
    let get = |k: &str| js_sys::Reflect::get(e, &k.into()).unwrap_or(JsValue::UNDEFINED);
    let (Some(peer), Some(client_time)) = (get("peer").as_string(), get("clientTime").as_f64())
    else {
        return true;
    };
    let server_time = get("serverTime").as_f64();
    {
        let Ok(mut r) = h.try_borrow_mut() else {
            return true;
        };
        if r.closed {
            return true;
        }
        let now = r.now();
        match server_time {
            None => r
                .core
                .handle_peer_clock_ping(&peer, client_time, Millis::new(now)),
            Some(server_time) => {
                r.core
                    .handle_peer_clock_pong(&peer, client_time, server_time, Millis::new(now))
            }
        }
    }
    super::finish(h);
    true
}
