//! The room clock over the mesh in the browser (issue #5; PROTOCOL.md §13.10): the thin glue
//! between a `MusicRoom` with `peerToPeer` and the core
//! [`crate::core::sync::peer_clock::PeerClock`]. After every input ([`drain`], from
//! [`super::Room::drain`]) the source is recomputed from the tier, the claim and the links;
//! a due probe goes to the server (Control `ping`) or to the controller's `p3-control`
//! channel; the mesh's `clock-ping` / `clock-pong` events ([`handle_mesh_event`]) are answered
//! from this device's kept mapping (as host) or fed to the room's `ClockSync`.

use super::{Act, Room, RoomHandle};
use crate::core::p2p::tier::Tier;
use crate::core::sync::peer_clock::{ClockProbe, Probe};
use crate::wasm::p2p;
use wasm_bindgen::JsValue;

/// Recomputes the clock's source and queues a due probe (under the room's borrow).
pub(super) fn drain(r: &mut Room, now: f64, acts: &mut Vec<Act>) {
    let role = r.tiers.as_ref().map(|t| {
        let controller = t.claim().map(|c| c.controller.clone()).unwrap_or_default();
        let linked = t.peer_ids().contains(&controller);
        (
            t.tier() != Tier::Socket && t.peer_authority(),
            controller,
            t.mesh_id().to_owned(),
            linked,
        )
    });
    if let Some((peer_authority, controller, me, linked)) = role {
        r.peer_clock
            .handle_role(peer_authority, &controller, &me, linked, &mut r.clock, now);
    }
    match r.peer_clock.poll_probe(&mut r.clock, now) {
        Some(Probe::Server { client_time }) => acts.push(Act::Ping(client_time, r.clock.rtt_ms())),
        Some(Probe::Peer { to, client_time }) => {
            acts.push(Act::PeerClock(to, ClockProbe::Ping { client_time }))
        }
        None => {}
    }
}

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
    let answer = {
        let Ok(mut r) = h.try_borrow_mut() else {
            return true;
        };
        if r.closed {
            return true;
        }
        let now = r.now();
        let r = &mut *r;
        match server_time {
            None => r.peer_clock.handle_ping(&peer, client_time, &r.clock, now),
            Some(server_time) => {
                if r.peer_clock
                    .handle_pong(&peer, client_time, server_time, &mut r.clock, now)
                {
                    r.clock_changed(now);
                }
                None
            }
        }
    };
    if let Some(pong) = answer {
        send(h, &peer, pong);
    }
    super::finish(h);
    true
}
