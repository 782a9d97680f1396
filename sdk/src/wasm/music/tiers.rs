//! Tier 2 of a music room (issue #5; seed 004 "Tier 2: WebRTC mesh"; PROTOCOL.md §13.11):
//! with `peerToPeer` the room opens a [`crate::wasm::p2p`] mesh while the server is up,
//! follows the mesh's tier (its core `TierMachine`: socket closed → at once; silence →
//! heartbeats, 2.25 s) and, once
//! the tier is `webrtc`, lets the controller order changes itself: it stamps `(epoch,
//! sequence)`, applies the change to its state with `applyAt` = shared clock + [`LEAD_MS`],
//! follows it and broadcasts `{control, state}` sealed under the room key
//! ([`crate::core::p2p::peer_sync`]); followers check the claim ([`check_change`]) and hand
//! the state to the same `Follower`. The shared clock is the controller's kept one, probed
//! over the mesh ([`super::peer_clock`]). Who is controller is the core [`Election`] (the DJ stays while reachable; otherwise
//! the lowest reachable id with epoch + 1).
//!
//! Tier 3 (seed 004 "Tier 3: Independent Mode"; PROTOCOL.md §13.12): on the `offline` tier
//! (no server, no usable link) the room plays on from its last state and **any** device acts
//! as its own controller: its changes are applied locally, stamped in its claim's epoch, and
//! recorded in its offline queue ([`RoomQueue`], IndexedDB, durable before the Promise
//! resolves) together with the state they produced. Changes the controller orders on the
//! `webrtc` tier are recorded the same way. Once the server answers again (a `sync-state`
//! after the rejoin, or the tier back to `socket`) the queue is pushed as `music-changes`
//! (§13.9); the `music-changes-ack` version vector drops what the server has (it applies each
//! `(origin, localSeq)` once), and the server's state is followed ("server wins").
//!
//! The rules (ordering, acceptance, the election, when to push) live in the core
//! [`crate::core::music::Room`]; this module only keeps the mesh handle, the IndexedDB queue
//! and the JS conversion, and feeds the mesh's messages and events to the core room.

use super::{JsMusicEvent, Room, RoomHandle};
use crate::core::client::ConnectionState;
use crate::core::drive::Millis;
use crate::core::error::ErrorCode;
use crate::core::lane::Lane;
use crate::core::music::{PeerLink, Record};
use crate::core::p2p::changes::{default_origin, Change, ChangesAck, MUSIC_CHANGES_ACK_TYPE};
use crate::core::p2p::peer_sync::PeerSealer;
use crate::core::p2p::seal::SALT_LEN;
use crate::core::p2p::tier::{Tier, TierReason};
use crate::wasm::driver;
use crate::wasm::offline::RoomQueue;
use crate::wasm::p2p::{self, MeshHandle};
use crate::wasm::runtime::{self, Resolver};
use crate::wasm::{convert, error};
use js_sys::Promise;
use serde::Serialize;
use serde_json::Value;
use std::rc::Rc;
use wasm_bindgen::prelude::*;

/// `localStorage` key of the default device id (the origin of this device's changes).
const DEVICE_ID_KEY: &str = "p3-lanes-device-id";

/// The browser side of the peer tiers of one room (the core room holds their state).
pub(super) struct Tiers {
    /// `PeerMeshOptions` given with `peerToPeer`.
    pub(super) mesh_options: JsValue,
    pub(super) mesh: Option<MeshHandle>,
    callbacks: Vec<Closure<dyn FnMut(JsValue)>>,
    /// The offline queue, once opened (`None` before, or if storage is unavailable).
    queue: Option<Rc<RoomQueue>>,
}

impl Tiers {
    pub(super) fn new(mesh_options: JsValue) -> Tiers {
        Tiers {
            mesh_options,
            mesh: None,
            callbacks: Vec::new(),
            queue: None,
        }
    }

    pub(super) fn close(&mut self) {
        if let Some(m) = self.mesh.take() {
            p2p::close_mesh(&m);
        }
        self.callbacks.clear();
    }
}

/// The id of this device's changes. `device_id`: the app's `deviceId`, used as is. Without it
/// the origin is this profile's device name ([`default_device_id`]), bound to `identity` (the
/// session's verified identity key, `'<kind>:<id>'`) as `'<identity>/<device name>'` so that
/// the server refuses a push in its name from anyone else (PROTOCOL.md §13.15); unbound
/// without an identity, or when the bound form would be too long ([`default_origin`]).
///
/// Errors: `crypto_unavailable` when a default device id is needed and the host has no
/// CSPRNG.
pub(super) fn origin(device_id: Option<String>, identity: Option<&str>) -> Result<String, JsValue> {
    Ok(match device_id {
        Some(id) => id,
        None => default_origin(identity, &default_device_id()?),
    })
}

/// After the room is joined: open the mesh (it joins the room too; the server answers a repeated
/// join with the same room) and listen to it.
pub(super) async fn open_mesh(h: RoomHandle) -> Result<(), JsValue> {
    let (client, name, opts) = {
        let r = h.borrow();
        let Some(t) = r.tiers.as_ref() else {
            return Ok(());
        };
        let Some(client) = r.client.clone() else {
            return Ok(());
        };
        (client, r.name.clone(), t.mesh_options.clone())
    };
    open_queue(&h, &name).await;
    let mesh = p2p::open_mesh(&client, name, &opts).await?;
    let weak = Rc::downgrade(&h);
    let on_message = Closure::<dyn FnMut(JsValue)>::new(move |m: JsValue| {
        if let Some(h) = weak.upgrade() {
            on_mesh_message(&h, &m);
        }
    });
    let weak = Rc::downgrade(&h);
    let on_event = Closure::<dyn FnMut(JsValue)>::new(move |e: JsValue| {
        if let Some(h) = weak.upgrade() {
            on_mesh_event(&h, &e);
        }
    });
    p2p::subscribe(
        &mesh,
        p2p::Topic::Message,
        on_message.as_ref().clone().unchecked_into(),
    );
    p2p::subscribe(
        &mesh,
        p2p::Topic::Event,
        on_event.as_ref().clone().unchecked_into(),
    );
    let me = mesh.borrow().me().to_owned();
    {
        let mut r = h.borrow_mut();
        if r.closed {
            drop(r);
            p2p::close_mesh(&mesh);
            return Ok(());
        }
        if let Some(t) = r.tiers.as_mut() {
            t.mesh = Some(mesh);
            t.callbacks = vec![on_message, on_event];
            r.core.handle_mesh_open(&me);
        }
    }
    super::finish(&h);
    Ok(())
}

/// Opens this device's offline queue (module docs); a failure is an `error` event (the room
/// plays on, but changes made without the server cannot be kept).
async fn open_queue(h: &RoomHandle, name: &str) {
    let to_open = matches!(h.borrow().tiers.as_ref(), Some(t) if t.queue.is_none());
    if !to_open {
        // Without `peerToPeer`, or opened already (an offline start, [`super::offline_start`]).
        return;
    }
    if let Err(e) = read_queue(h, name).await {
        let code = code_of(&e, ErrorCode::StorageUnavailable);
        let message = format!("offline queue: {}", error::describe(&e));
        h.borrow_mut().event(&JsMusicEvent::Error {
            code: &code,
            message: &message,
        });
    }
    super::finish(h);
}

/// Opens this device's offline queue and reports what it holds (`restored`, `pending`).
/// Returns the stored `roomState` (JSON of a `MusicRoomState`), if any. Errors: the
/// storage's `code` (`storage_unavailable`, `storage_corrupt`).
pub(super) async fn read_queue(h: &RoomHandle, name: &str) -> Result<Option<Value>, JsValue> {
    let origin = match h.borrow().core.device_id() {
        Some(o) => o.to_owned(),
        None => return Ok(None),
    };
    let (q, restored) = RoomQueue::open(name, &origin).await?;
    let mut r = h.borrow_mut();
    let pending = restored.pending.len();
    if let Some(t) = r.tiers.as_mut() {
        t.queue = Some(Rc::new(q));
        r.core.handle_queue(pending);
    }
    if pending > 0 {
        // Changes from an earlier page (a reload, a crash): what they produced
        // here, for the app to show until the server has them.
        r.event(&RestoredEvent {
            r#type: "restored",
            pending: &restored.pending,
            state: restored.room_state.as_ref(),
        });
    }
    r.event(&PendingEvent {
        r#type: "pending",
        pending,
    });
    Ok(restored.room_state)
}

/// `deviceId` default: a random id kept in `localStorage` (one per browser profile and
/// origin), or a fresh one per room where there is no `localStorage`.
fn default_device_id() -> Result<String, JsValue> {
    let fresh = || -> Result<String, JsValue> {
        Ok(format!(
            "device-{:016x}",
            crate::wasm::global::random_u64()?
        ))
    };
    let storage = js_sys::Reflect::get(&js_sys::global(), &"localStorage".into())
        .ok()
        .filter(|s| s.is_object());
    let Some(storage) = storage else {
        return fresh();
    };
    let call = |name: &str, args: &js_sys::Array| -> Option<JsValue> {
        let f: js_sys::Function = js_sys::Reflect::get(&storage, &name.into())
            .ok()?
            .dyn_into()
            .ok()?;
        f.apply(&storage, args).ok()
    };
    if let Some(id) = call("getItem", &js_sys::Array::of1(&DEVICE_ID_KEY.into()))
        .and_then(|v| v.as_string())
        .filter(|id| !id.is_empty())
    {
        return Ok(id);
    }
    let id = fresh()?;
    let _ = call(
        "setItem",
        &js_sys::Array::of2(&DEVICE_ID_KEY.into(), &id.clone().into()),
    );
    Ok(id)
}

/// A fresh sealer-instance salt: 16 bytes from `crypto.getRandomValues` (never
/// `Math.random`). Errors: `crypto_unavailable`.
fn sealer_salt() -> Result<[u8; SALT_LEN], JsValue> {
    let mut salt = [0u8; SALT_LEN];
    crate::wasm::global::random_bytes(&mut salt)?;
    Ok(salt)
}

/// Control `room-key` for this room (the first one, a rotation after a member left, or the
/// same key repeated by a join), or this member's id changed: the core room seals under the
/// newest key (PROTOCOL.md §13.4); a new sealer instance takes its salt from
/// `crypto.getRandomValues` ([`sealer_salt`]).
pub(super) fn handle_room_key(r: &mut Room, key_id: u32, key: &str) {
    refresh_id(r);
    let me = r.me();
    let now = r.now();
    let salt = || sealer_salt().map_err(|e| error::describe(&e));
    if let Err(e) = r
        .core
        .handle_room_key(key_id, key, &me, salt, Millis::new(now))
    {
        web_sys::console::warn_1(&JsValue::from_str(&format!("p3-lanes: {e}")));
    }
}

/// The mesh's current id (a new one after the server restarted, PROTOCOL.md §13.12), if a
/// mesh is open.
pub(super) fn mesh_id(r: &Room) -> Option<String> {
    r.tiers
        .as_ref()
        .and_then(|t| t.mesh.as_ref())
        .map(|m| m.borrow().me().to_owned())
}

/// The mesh's current id goes to the core room.
fn refresh_id(r: &mut Room) {
    if let Some(me) = mesh_id(r) {
        r.core.handle_mesh_id(&me);
    }
}

/// Centres the mesh's hub on `controller` (no room borrow held).
pub(super) fn set_hub(h: &RoomHandle, controller: Option<String>) {
    let mesh = h.borrow().tiers.as_ref().and_then(|t| t.mesh.clone());
    if let Some(mesh) = mesh {
        p2p::with_mesh(&mesh, |m, now| m.set_controller(controller, now));
    }
}

/// Resolves with `state` once `record` is durably queued (module docs). Rejects with the
/// storage's `code` (`storage_unavailable`, `quota_exceeded`, `storage_corrupt`) if the write
/// fails: the change is applied here (and sent to the peers) but will not reach the server.
/// Without a queue (it could not be opened: reported then) it resolves at once, with an
/// `error` event `storage_unavailable` saying the change is not kept.
pub(super) fn queue_change(h: &RoomHandle, state: JsValue, record: Record) -> Promise {
    let queue = h.borrow().tiers.as_ref().and_then(|t| t.queue.clone());
    let Some(queue) = queue else {
        h.borrow_mut().event(&JsMusicEvent::Error {
            code: ErrorCode::StorageUnavailable.as_str(),
            message: "change applied, but not kept for the server: no offline queue",
        });
        super::finish(h);
        return Promise::resolve(&state);
    };
    let (promise, resolver) = Resolver::new();
    let weak = Rc::downgrade(h);
    runtime::spawn(async move {
        let done = queue
            .record(record.op, record.epoch, record.timestamp, &record.state)
            .await;
        let Some(h) = weak.upgrade() else { return };
        match done {
            Ok((_, pending)) => {
                {
                    let mut r = h.borrow_mut();
                    r.core.handle_queue(pending);
                    r.event(&PendingEvent {
                        r#type: "pending",
                        pending,
                    });
                }
                resolver.resolve(&state);
                super::finish(&h);
            }
            Err(e) => {
                let code = code_of(&e, ErrorCode::StorageUnavailable);
                let message = format!(
                    "applied here, but not queued for the server: {}",
                    error::describe(&e)
                );
                resolver.reject(&error::js_error(&code, &message));
                h.borrow_mut().event(&JsMusicEvent::Error {
                    code: &code,
                    message: &message,
                });
                super::finish(&h);
            }
        }
    });
    promise
}

/// The `code` of a thrown JS error, else `fallback`.
fn code_of(e: &JsValue, fallback: ErrorCode) -> String {
    js_sys::Reflect::get(e, &"code".into())
        .ok()
        .and_then(|c| c.as_string())
        .unwrap_or_else(|| fallback.as_str().to_owned())
}

/// Pushes the queue if the core room says it is due ([`crate::core::music::Room::poll_push`]):
/// reads it afresh (another tab may have added to it) and sends `music-changes` on the Sync
/// lane (PROTOCOL.md §13.9).
pub(super) fn maybe_push(h: &RoomHandle) {
    let queue = {
        let mut r = h.borrow_mut();
        if r.closed {
            return;
        }
        let open = r
            .client
            .as_ref()
            .is_some_and(|c| c.borrow().client().state() == ConnectionState::Open);
        let now = r.now();
        if !r.core.poll_push(open, Millis::new(now)) {
            return;
        }
        r.tiers.as_ref().and_then(|t| t.queue.clone())
    };
    let weak = Rc::downgrade(h);
    runtime::spawn(async move {
        let changes = match queue {
            Some(queue) => queue.unacknowledged().await,
            None => Ok(Vec::new()),
        };
        let Some(h) = weak.upgrade() else { return };
        let (value, failed) = {
            let mut r = h.borrow_mut();
            let now = r.now();
            match changes {
                Ok(changes) => (r.core.push_value(Some(changes), Millis::new(now)), None),
                Err(e) => (r.core.push_value(None, Millis::new(now)), Some(e)),
            }
        };
        if let Some(value) = value {
            let client = h.borrow().client.clone();
            let sent = match client {
                Some(client) => driver::with_client(&client, |c| c.send(Lane::Sync, value, None)),
                None => Ok(()),
            };
            if let Err(e) = sent {
                h.borrow_mut().core.handle_push_failed();
                let message = format!("pushing offline changes: {e}");
                h.borrow_mut().event(&JsMusicEvent::Error {
                    code: e.code().as_str(),
                    message: &message,
                });
            }
        }
        if let Some(e) = failed {
            let code = code_of(&e, ErrorCode::StorageUnavailable);
            let message = format!("reading the offline queue: {}", error::describe(&e));
            h.borrow_mut().event(&JsMusicEvent::Error {
                code: &code,
                message: &message,
            });
        }
        super::finish(&h);
    });
}

/// Whether `value` (a server Sync-lane message) is a `music-changes-ack`; if so it is handled
/// (the acknowledged changes leave the queue, then `reconciled`).
pub(super) fn handle_ack(h: &RoomHandle, value: &Value) -> bool {
    if value.get("type").and_then(Value::as_str) != Some(MUSIC_CHANGES_ACK_TYPE) {
        return false;
    }
    let ack: ChangesAck = match serde_json::from_value(value.clone()) {
        Ok(a) => a,
        Err(e) => {
            let message = format!("music-changes-ack: {e}");
            h.borrow_mut().event(&JsMusicEvent::Error {
                code: ErrorCode::BadPayload.as_str(),
                message: &message,
            });
            return true;
        }
    };
    let queue = {
        let mut r = h.borrow_mut();
        if !r.core.handle_ack() {
            return true;
        }
        r.tiers.as_ref().and_then(|t| t.queue.clone())
    };
    let Some(queue) = queue else { return true };
    let weak = Rc::downgrade(h);
    runtime::spawn(async move {
        let left = queue.acknowledge(ack.version_vector.clone()).await;
        let Some(h) = weak.upgrade() else { return };
        {
            let mut r = h.borrow_mut();
            match left {
                Ok(pending) => {
                    r.core.handle_acknowledged(pending);
                    r.event(&ReconciledEvent {
                        r#type: "reconciled",
                        applied: ack.applied,
                        skipped: ack.skipped,
                        epoch: ack.epoch,
                        applied_order: &ack.applied_order,
                        version_vector: &ack.version_vector,
                        pending,
                        seeded: ack.seeded,
                    });
                    r.event(&PendingEvent {
                        r#type: "pending",
                        pending,
                    });
                }
                Err(e) => {
                    let code = code_of(&e, ErrorCode::StorageUnavailable);
                    let message = format!("acknowledging offline changes: {}", error::describe(&e));
                    r.event(&JsMusicEvent::Error {
                        code: &code,
                        message: &message,
                    });
                }
            }
        }
        super::finish(&h);
    });
    true
}

/// `MusicRoomEvent` `restored`: the queue held changes when the room opened.
#[derive(Serialize)]
struct RestoredEvent<'a> {
    r#type: &'static str,
    pending: &'a [Change],
    state: Option<&'a Value>,
}

/// `MusicRoomEvent` `pending`: changes queued for the server.
#[derive(Serialize)]
struct PendingEvent {
    r#type: &'static str,
    pending: usize,
}

/// `MusicRoomEvent` `reconciled`: the server's answer to a push (PROTOCOL.md §13.9).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReconciledEvent<'a> {
    r#type: &'static str,
    applied: u64,
    skipped: u64,
    epoch: u64,
    applied_order: &'a [(String, u64)],
    version_vector: &'a crate::core::p2p::changes::VersionVector,
    pending: usize,
    /// This device's seed became the room's state (PROTOCOL.md §13.14).
    seeded: bool,
}

/// A `PeerMessage` from the mesh: a `sealed-sync` value on the Sync lane goes to the core
/// room (which opens it and applies the acceptance rules).
fn on_mesh_message(h: &RoomHandle, m: &JsValue) {
    let get = |k: &str| js_sys::Reflect::get(m, &k.into()).unwrap_or(JsValue::UNDEFINED);
    let from = get("from").as_string().unwrap_or_default();
    if get("lane").as_f64() != Some(f64::from(Lane::Sync.id())) {
        return;
    }
    let Ok(value) = convert::value_from_js(&get("data")) else {
        return;
    };
    if !PeerSealer::is_sealed(&value) {
        return;
    }
    {
        let Ok(mut r) = h.try_borrow_mut() else {
            later(h, on_mesh_message, m);
            return;
        };
        if r.closed {
            return;
        }
        let now = r.now();
        r.core.handle_mesh_message(&from, &value, Millis::new(now));
    }
    super::finish(h);
}

/// Runs `f(h, v)` again in a microtask: a mesh event or message that arrived while the room
/// was borrowed further up the stack (the mesh dispatches synchronously) is handled once the
/// borrow is released instead of being dropped (a lost `peer-state` would leave `peers` stale
/// until that link changes again).
fn later(h: &RoomHandle, f: fn(&RoomHandle, &JsValue), v: &JsValue) {
    let weak = Rc::downgrade(h);
    let v = v.clone();
    runtime::spawn(async move {
        if let Some(h) = weak.upgrade() {
            f(&h, &v);
        }
    });
}

/// A `PeerMeshEvent`: the tier, and links up/down with their quality (for the election).
fn on_mesh_event(h: &RoomHandle, e: &JsValue) {
    let get = |k: &str| {
        js_sys::Reflect::get(e, &k.into())
            .ok()
            .and_then(|v| v.as_string())
    };
    let Some(kind) = get("type") else { return };
    if super::peer_clock::handle_mesh_event(h, &kind, e) {
        return;
    }
    if kind == "tier" {
        let tier =
            |k: &str| -> Option<Tier> { serde_json::from_value(Value::String(get(k)?)).ok() };
        let reason: Option<TierReason> =
            get("reason").and_then(|v| serde_json::from_value(Value::String(v)).ok());
        let (Some(from), Some(to), Some(reason)) = (tier("from"), tier("to"), reason) else {
            return;
        };
        {
            let Ok(mut r) = h.try_borrow_mut() else {
                later(h, on_mesh_event, e);
                return;
            };
            if r.closed {
                return;
            }
            r.core.handle_tier(from, to, reason);
        }
        super::finish(h);
        return;
    }
    let Some(peer) = get("peer") else { return };
    let link = match kind.as_str() {
        "peer-state" if get("state").as_deref() == Some("connected") => Some(PeerLink::Connected),
        "peer-state" => Some(PeerLink::Disconnected),
        "quality" => get("quality")
            .and_then(|q| serde_json::from_value(Value::String(q)).ok())
            .map(PeerLink::Quality),
        _ => return,
    };
    {
        let Ok(mut r) = h.try_borrow_mut() else {
            later(h, on_mesh_event, e);
            return;
        };
        if r.closed || r.tiers.is_none() {
            return;
        }
        if let Some(link) = link {
            r.core.handle_peer_link(&peer, link);
        }
    }
    super::finish(h);
}

/// Sends `value` on the mesh's Sync lane to `to` or every peer (no room borrow held).
pub(super) fn mesh_send(h: &RoomHandle, value: &Value, to: Option<&str>) {
    let mesh = h.borrow().tiers.as_ref().and_then(|t| t.mesh.clone());
    let Some(mesh) = mesh else { return };
    if let Err(e) = p2p::with_mesh(&mesh, |m, _| m.send(Lane::Sync, value, to)) {
        // `unknown_target` with no peer linked is expected when alone.
        if e.code() != ErrorCode::UnknownTarget {
            let message = format!("peer send: {e}");
            h.borrow_mut().event(&JsMusicEvent::Error {
                code: e.code().as_str(),
                message: &message,
            });
        }
    }
}
