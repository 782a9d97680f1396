//! Starting a music room without the server (issue #5 Tier 3; seed 004 "Tier 3: Independent
//! Mode"; PROTOCOL.md §13.12 "Starting offline"): `MusicRoom.openOffline(baseUrl, name,
//! options)` for an app whose `P3Client.connect` failed (an installed PWA reloaded offline),
//! then `room.attach(client)` once a client connects.
//!
//! - **What is restored**: the room keeps the last state it followed, with the clock offset of
//!   that moment, in `localStorage` `p3-lanes-music:<room>` as JSON `{format: 1, state,
//!   clockOffsetMs, savedAtMs}` ([`save`], after an input once the state changed or the offset
//!   moved by 5 ms or more; `clockOffsetMs` = shared clock − `Date.now()`, ms). An offline start takes that
//!   state, else the `roomState` stored with the offline queue (§13.3), else none.
//! - **Clock**: the estimator's samples do not survive a reload, and `performance.now()`
//!   restarts with the page, so the shared clock offline is `Date.now() + clockOffsetMs`
//!   (without a saved offset: `Date.now()`, the device's wall clock). Its error is the wall
//!   clock's drift and steps since the save (an NTP-disciplined clock: a few ms per hour; a
//!   stepped clock: the step). It only matters for a restored state that was playing (its
//!   position is extrapolated on this clock); the device's own changes are stamped and
//!   followed on the same clock, so they play where the user asked.
//! - **Tier**: `offline`; the device is its own controller as its `deviceId` (§13.12), its
//!   changes go to the queue as on the `offline` tier. No mesh is opened without a client.
//! - **Attach**: the room takes the client, forgets its followed state (the server's versions
//!   decide: server wins), goes back to the `socket` tier and joins as `musicRoom` does; the
//!   existing push / ack path (§13.12) then delivers the queue.

use super::tiers;
use super::{attach_media_listeners, close_room, finish, listen_and_join, new_room};
use super::{options, MusicRoom, Room, RoomHandle};
use crate::core::control::validate_room_name;
use crate::core::drive::Millis;
use crate::core::error::ErrorCode;
use crate::core::lane::Lane;
use crate::core::sync::clock::ClockMapping;
use crate::core::sync::state::RoomState;
use crate::wasm::driver::Handle as ClientHandle;
use crate::wasm::global::Global;
use crate::wasm::{error, http};
use js_sys::Promise;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use wasm_bindgen::prelude::*;

/// A saved clock offset is written again once it moved this far (ms) with the same state: an
/// offline start's clock is the wall clock's drift since the save off anyway (module docs).
const SAVE_OFFSET_TOLERANCE_MS: u64 = 5;

/// `localStorage` key prefix of a room's saved state (module docs).
const SAVED_KEY_PREFIX: &str = "p3-lanes-music:";

/// The saved record's format.
const SAVED_FORMAT: u32 = 1;

/// `{format, state, clockOffsetMs, savedAtMs}` in `localStorage` (module docs).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Saved {
    format: u32,
    state: RoomState,
    /// Shared clock − `Date.now()`, ms.
    clock_offset_ms: Option<f64>,
    /// `Date.now()` at the save, ms.
    saved_at_ms: f64,
}

fn local_storage() -> Option<web_sys::Storage> {
    let s = js_sys::Reflect::get(&js_sys::global(), &"localStorage".into()).ok()?;
    s.is_object().then(|| s.unchecked_into())
}

/// Saves the followed state and the clock offset if either changed (under the room's
/// borrow; a failing `localStorage` is ignored: the queue's `roomState` remains).
pub(super) fn save(r: &mut Room) {
    let Some(state) = r.core.latest() else {
        return;
    };
    if !r.core.has_clock() {
        return;
    }
    let now = r.now();
    let offset = r.core.shared_now(Millis::new(now)) - js_sys::Date::now();
    let rounded = offset.round() as i64;
    // The same state with an offset within the tolerance is not written again: `Date.now()`
    // ticks in whole ms, so the offset's last digit flips on almost every input, and a
    // `localStorage` write per input was the mesh's largest renderer cost (issue 15 battery).
    if let Some((epoch, sequence, saved)) = r.saved {
        if (epoch, sequence) == (state.epoch, state.sequence)
            && rounded.abs_diff(saved) < SAVE_OFFSET_TOLERANCE_MS
        {
            return;
        }
    }
    r.saved = Some((state.epoch, state.sequence, rounded));
    let saved = Saved {
        format: SAVED_FORMAT,
        state: state.clone(),
        clock_offset_ms: Some(offset),
        saved_at_ms: js_sys::Date::now(),
    };
    if let (Some(s), Ok(json)) = (local_storage(), serde_json::to_string(&saved)) {
        let _ = s.set_item(&format!("{SAVED_KEY_PREFIX}{}", r.name), &json);
    }
}

/// The saved record of `room`, if any and readable.
fn load(room: &str) -> Option<Saved> {
    let json = local_storage()?
        .get_item(&format!("{SAVED_KEY_PREFIX}{room}"))
        .ok()??;
    serde_json::from_str::<Saved>(&json)
        .ok()
        .filter(|s| s.format == SAVED_FORMAT)
}

/// `MusicRoom.openOffline` (module docs).
pub(super) fn open(base_url: &str, name: &JsValue, options: &JsValue) -> Promise {
    let checked = (|| {
        let base = http::normalize_base(base_url)?;
        let name = name
            .as_string()
            .ok_or_else(|| error::invalid_argument("room must be a string"))?;
        validate_room_name(&name).map_err(|e| error::invalid_argument(&e))?;
        let opts = options::parse(options)?;
        if opts.peer_to_peer.is_none() {
            return Err(error::invalid_argument(
                "openOffline needs `peerToPeer` (the offline queue belongs to the peer tiers)",
            ));
        }
        Ok((base, name, opts, Global::get()?))
    })();
    let (base, name, opts, global) = match checked {
        Ok(c) => c,
        Err(e) => return Promise::reject(&e),
    };
    let room = match new_room(name.clone(), base, None, opts, global) {
        Ok(room) => room,
        Err(e) => return Promise::reject(&e),
    };
    attach_media_listeners(&room);
    wasm_bindgen_futures::future_to_promise(async move {
        let queued = match tiers::read_queue(&room, &name).await {
            Ok(s) => s,
            Err(e) => {
                close_room(&room, "the offline queue could not be opened");
                return Err(e);
            }
        };
        let saved = load(&name);
        let offset = saved
            .as_ref()
            .and_then(|s| s.clock_offset_ms)
            .unwrap_or(0.0);
        let state = saved
            .map(|s| s.state)
            .or_else(|| queued.and_then(|v: Value| serde_json::from_value(v).ok()));
        {
            let mut r = room.borrow_mut();
            let now = r.now();
            let mapping = ClockMapping {
                ref_local_ms: now,
                offset_ms: js_sys::Date::now() + offset - now,
                drift: 0.0,
            };
            r.core.start_offline(mapping, state, Millis::new(now));
        }
        finish(&room);
        Ok(MusicRoom { inner: room }.into())
    })
}

/// `MusicRoom.attach` (module docs).
pub(super) fn attach(h: &RoomHandle, client: &ClientHandle) -> Promise {
    {
        let mut r = h.borrow_mut();
        if r.closed {
            return Promise::reject(&error::coded(ErrorCode::Closed, "the music room is closed"));
        }
        if r.client.is_some() {
            return Promise::reject(&error::invalid_argument(
                "the music room already has a client (attach is for rooms from openOffline)",
            ));
        }
        // A room from openOffline always has peerToPeer: Control, Sync and Messaging.
        if let Err(e) = crate::wasm::driver::require_lanes(
            client,
            &[Lane::Control, Lane::Sync, Lane::Messaging],
        ) {
            return Promise::reject(&e);
        }
        r.client = Some(client.clone());
        r.base = client.borrow().base().to_owned();
        // Server wins: its versions decide from now on (as after a session change).
        let now = r.now();
        r.core.handle_attached(Millis::new(now));
    }
    let joined = listen_and_join(h, client);
    wasm_bindgen_futures::future_to_promise(async move {
        joined.await?;
        Ok(JsValue::UNDEFINED)
    })
}
