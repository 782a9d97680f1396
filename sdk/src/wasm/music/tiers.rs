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
//! Everything here runs under the room's borrow and returns [`Act`]s (mesh sends) that
//! [`super::finish`] executes with no borrow held.

use super::{Act, JsMusicEvent, Room, RoomHandle};
use crate::core::client::ConnectionState;
use crate::core::error::ErrorCode;
use crate::core::lane::Lane;
use crate::core::p2p::changes::{
    default_origin, Change, ChangesAck, ChangesPush, MUSIC_CHANGES_ACK_TYPE, MUSIC_CHANGES_TYPE,
};
use crate::core::p2p::election::{Authority, Claim, Election, ElectionOutput};
use crate::core::p2p::peer_sync::{check_change, PeerSealer, PeerSync, PeerSyncError};
use crate::core::p2p::quality::NetworkQuality;
use crate::core::p2p::seal::{RoomKey, SALT_LEN};
use crate::core::p2p::tier::{Tier, TierReason};
use crate::core::sync::state::{MusicAction, MusicControlData, RoomState, SyncError, SyncMessage};
use crate::wasm::driver::{self, Resolver};
use crate::wasm::offline::RoomQueue;
use crate::wasm::p2p::{self, MeshHandle};
use crate::wasm::{convert, error};
use js_sys::Promise;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use wasm_bindgen::prelude::*;

/// Lead between a peer-ordered change and its `applyAt`, ms: DataChannel delivery on a LAN
/// plus the follower's start latency.
pub(super) const LEAD_MS: f64 = 250.0;

/// A push not acknowledged within this long may be sent again, ms (the server applies each
/// change once, so a repeat is harmless).
const PUSH_RETRY_MS: f64 = 3000.0;

/// `localStorage` key of the default device id (the origin of this device's changes).
const DEVICE_ID_KEY: &str = "p3-lanes-device-id";

/// The Tier 2 state of one room.
pub(super) struct Tiers {
    /// `PeerMeshOptions` given with `peerToPeer`.
    pub(super) mesh_options: JsValue,
    pub(super) mesh: Option<MeshHandle>,
    /// The mesh's id of this device (the session id at creation).
    mesh_id: String,
    callbacks: Vec<Closure<dyn FnMut(JsValue)>>,
    /// The mesh's tier (its core tier machine: socket state, heartbeats, links).
    tier: Tier,
    election: Option<Election>,
    sealer: Option<PeerSealer>,
    /// The room key `sealer` seals under, base64url (a repeated `room-key` with the same id
    /// and bytes keeps the sealer).
    sealer_key: String,
    /// Connected peers.
    peers: BTreeMap<String, NetworkQuality>,
    /// The controller the mesh's hub was last centred on (§13.13).
    hub: Option<String>,
    /// The stable id of this device's changes (`deviceId`; survives reloads).
    origin: String,
    /// The offline queue, once opened (`None` before, or if storage is unavailable).
    queue: Option<Rc<RoomQueue>>,
    /// Changes in the queue not acknowledged by the server.
    pending: usize,
    /// When the last push went out (local ms), until its ack.
    push_sent_at: Option<f64>,
    /// A push is being read from storage.
    push_loading: bool,
    /// The room is joined on the client's current session.
    joined: bool,
    /// The state followed when the session changed, to re-seed a restarted server's fresh
    /// room with (PROTOCOL.md §13.14); sent with the next push, cleared by its ack.
    seed: Option<RoomState>,
}

impl Tiers {
    /// `device_id`: the app's `deviceId`, used as is. Without it the origin is this
    /// profile's device name ([`default_device_id`]), bound to `identity` (the session's
    /// verified identity key, `'<kind>:<id>'`) as `'<identity>/<device name>'` so that the
    /// server refuses a push in its name from anyone else (PROTOCOL.md §13.15); unbound
    /// without an identity, or when the bound form would be too long ([`default_origin`]).
    ///
    /// Errors: `crypto_unavailable` when a default device id is needed and the host has no
    /// CSPRNG.
    pub(super) fn new(
        mesh_options: JsValue,
        device_id: Option<String>,
        identity: Option<&str>,
    ) -> Result<Tiers, JsValue> {
        let origin = match device_id {
            Some(id) => id,
            None => default_origin(identity, &default_device_id()?),
        };
        Ok(Tiers {
            mesh_options,
            mesh: None,
            mesh_id: String::new(),
            callbacks: Vec::new(),
            tier: Tier::Socket,
            election: None,
            sealer: None,
            sealer_key: String::new(),
            peers: BTreeMap::new(),
            hub: None,
            origin,
            queue: None,
            pending: 0,
            push_sent_at: None,
            push_loading: false,
            joined: false,
            seed: None,
        })
    }

    /// The device id of this device's changes.
    pub(super) fn device_id(&self) -> &str {
        &self.origin
    }

    /// Changes not acknowledged by the server yet (`null` until the queue is open).
    pub(super) fn pending_changes(&self) -> Option<usize> {
        self.queue.as_ref().map(|_| self.pending)
    }

    /// The current tier.
    pub(super) fn tier(&self) -> Tier {
        self.tier
    }

    /// Whether changes are ordered by a peer now.
    pub(super) fn peer_authority(&self) -> bool {
        self.election
            .as_ref()
            .is_some_and(|e| e.authority() == Authority::Peer)
    }

    /// This device's mesh id (before the mesh is open: `""`, or the `deviceId` on the
    /// `offline` tier, where a room started offline is its own controller).
    pub(super) fn mesh_id(&self) -> &str {
        if self.mesh_id.is_empty() && self.tier == Tier::Offline {
            &self.origin
        } else {
            &self.mesh_id
        }
    }

    /// Connected peers.
    pub(super) fn peer_ids(&self) -> Vec<String> {
        self.peers.keys().cloned().collect()
    }

    /// The adopted claim, if any.
    pub(super) fn claim(&self) -> Option<&Claim> {
        self.election.as_ref().map(Election::claim)
    }

    pub(super) fn close(&mut self) {
        if let Some(m) = self.mesh.take() {
            p2p::close_mesh(&m);
        }
        self.callbacks.clear();
    }
}

/// `MusicRoomEvent` `tier`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TierEvent {
    r#type: &'static str,
    from: Tier,
    to: Tier,
    reason: TierReason,
}

/// `MusicRoomEvent` `controller`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ControllerEvent<'a> {
    r#type: &'static str,
    epoch: u64,
    controller: &'a str,
    elected: bool,
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
            t.mesh_id = me.clone();
            t.mesh = Some(mesh);
            t.callbacks = vec![on_message, on_event];
            let claim = claim_of(r.latest.as_ref());
            r.tiers.as_mut().expect("checked").election = Some(Election::new(me, claim));
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
    let origin = match h.borrow().tiers.as_ref() {
        Some(t) => t.origin.clone(),
        None => return Ok(None),
    };
    let (q, restored) = RoomQueue::open(name, &origin).await?;
    let mut r = h.borrow_mut();
    let pending = restored.pending.len();
    if let Some(t) = r.tiers.as_mut() {
        t.queue = Some(Rc::new(q));
        t.pending = pending;
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

/// An offline start ([`super::offline_start`]): the tier is `offline` and this device, as
/// `deviceId`, is its own controller from `claim` on (the election without peers: `(epoch + 1,
/// deviceId)`).
pub(super) fn start_offline(r: &mut Room) {
    let claim = claim_of(r.latest.as_ref());
    let Some(t) = r.tiers.as_mut() else { return };
    t.tier = Tier::Offline;
    let mut e = Election::new(t.origin.clone(), claim);
    e.handle_server_lost(&BTreeSet::new());
    t.election = Some(e);
}

/// A room started offline is attached to a connected client: the tier is `socket` again
/// (event `tier` `offline` → `socket`, `server-back`); the mesh id and the election come from
/// the join and the mesh ([`open_mesh`]), the queue is pushed once joined ([`maybe_push`]).
pub(super) fn attached(r: &mut Room) {
    let Some(t) = r.tiers.as_mut() else { return };
    t.mesh_id.clear();
    t.election = None;
    t.joined = false;
    t.push_sent_at = None;
    let from = std::mem::replace(&mut t.tier, Tier::Socket);
    if from != Tier::Socket {
        r.event(&TierEvent {
            r#type: "tier",
            from,
            to: Tier::Socket,
            reason: TierReason::ServerBack,
        });
    }
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

/// The server's claim in `state` (epoch, controller; `""` without a controller).
fn claim_of(state: Option<&RoomState>) -> Claim {
    state.map_or_else(
        || Claim::new(0, ""),
        |s| Claim::new(s.epoch, s.controller_id.clone().unwrap_or_default()),
    )
}

/// A fresh sealer-instance salt: 16 bytes from `crypto.getRandomValues` (never
/// `Math.random`). Errors: `crypto_unavailable`.
fn sealer_salt() -> Result<[u8; SALT_LEN], JsValue> {
    let mut salt = [0u8; SALT_LEN];
    crate::wasm::global::random_bytes(&mut salt)?;
    Ok(salt)
}

/// Control `room-key` for this room (the first one, a rotation after a member left, or the
/// same key repeated by a join), or this member's id changed: seal under the newest key as
/// the current id from now on (PROTOCOL.md §13.4). A new sealer instance needs a CSPRNG salt;
/// without one the room seals nothing and reports `crypto_unavailable`.
pub(super) fn handle_room_key(r: &mut Room, key_id: u32, key: &str) {
    refresh_id(r);
    let name = r.name.clone();
    let me = r.me();
    let now = r.now().max(0.0) as u64;
    let Some(t) = r.tiers.as_mut() else { return };
    let k = match RoomKey::from_base64url(key_id, key) {
        Ok(k) => k,
        Err(e) => {
            web_sys::console::warn_1(&JsValue::from_str(&format!("p3-lanes: {e}")));
            return;
        }
    };
    let id = if t.mesh_id.is_empty() {
        me
    } else {
        t.mesh_id.clone()
    };
    // The same key and id again (a repeated join): keep the sealer and its counter.
    if t.sealer
        .as_ref()
        .is_some_and(|s| s.key_id() == key_id && s.me() == id && t.sealer_key == k.to_base64url())
    {
        return;
    }
    let salt = match sealer_salt() {
        Ok(salt) => salt,
        Err(e) => {
            // Without a CSPRNG nothing is sealed under a key this member cannot use safely.
            t.sealer = None;
            let message = error::describe(&e);
            r.event(&JsMusicEvent::Error {
                code: ErrorCode::CryptoUnavailable.as_str(),
                message: &message,
            });
            return;
        }
    };
    t.sealer_key = k.to_base64url();
    match t.sealer.as_mut() {
        Some(s) => {
            s.handle_room_key(k, &id, salt, now);
        }
        None => t.sealer = Some(PeerSealer::new(k, name, id, salt)),
    }
}

/// Control `peer-left` for this room: frames from `who` under the previous key stop opening
/// (it never gets the next one, PROTOCOL.md §13.4).
pub(super) fn handle_peer_left(r: &mut Room, who: &str) {
    if let Some(s) = r.tiers.as_mut().and_then(|t| t.sealer.as_mut()) {
        s.handle_peer_left(who);
    }
}

/// The mesh took a new session id (the server restarted, PROTOCOL.md §13.12): claims and
/// seals use it from now on; the election starts again from the server's claim (and, while
/// the server is not the authority yet, without peers: this device's own claim).
fn refresh_id(r: &mut Room) {
    let claim = claim_of(r.latest.as_ref());
    let Some(t) = r.tiers.as_mut() else { return };
    let Some(me) = t.mesh.as_ref().map(|m| m.borrow().me().to_owned()) else {
        return;
    };
    if me == t.mesh_id {
        return;
    }
    t.mesh_id = me.clone();
    let mut e = Election::new(me, claim);
    if t.tier != Tier::Socket {
        let reachable: BTreeSet<String> = t.peers.keys().cloned().collect();
        e.handle_server_lost(&reachable);
    }
    t.election = Some(e);
}

/// A `sync-state` from the server: while it is the authority, its claim is the room's. The
/// server answers again: queued changes are pushed (see [`push_due`]).
pub(super) fn handle_server_state(r: &mut Room) {
    refresh_id(r);
    let claim = claim_of(r.latest.as_ref());
    let Some(t) = r.tiers.as_mut() else { return };
    if t.tier() == Tier::Socket {
        if let Some(e) = t.election.as_mut() {
            e.handle_server_back(claim);
        }
    }
}

/// Drains the election into events and acts; re-centres the mesh's hub on a new claim.
pub(super) fn drain(r: &mut Room, acts: &mut Vec<Act>) {
    drain_election(r, acts);
    if let Some(c) = hub_update(r) {
        acts.push(Act::MeshController(c));
    }
}

/// The hub follows the claim's controller (PROTOCOL.md §13.13): the server's DJ while it is
/// the authority, the elected or adopted one without it. `Some` when the mesh must be told.
fn hub_update(r: &mut Room) -> Option<Option<String>> {
    let t = r.tiers.as_mut()?;
    t.mesh.as_ref()?;
    let desired = t
        .claim()
        .map(|c| c.controller.clone())
        .filter(|c| !c.is_empty());
    if desired == t.hub {
        return None;
    }
    t.hub.clone_from(&desired);
    Some(desired)
}

/// Centres the mesh's hub on `controller` (no room borrow held).
pub(super) fn set_hub(h: &RoomHandle, controller: Option<String>) {
    let mesh = h.borrow().tiers.as_ref().and_then(|t| t.mesh.clone());
    if let Some(mesh) = mesh {
        p2p::with_mesh(&mesh, |m, now| m.set_controller(controller, now));
    }
}

/// The mesh's tier machine changed the tier: run the election, tell the app.
fn handle_tier(r: &mut Room, from: Tier, to: Tier, reason: TierReason) {
    let claim = claim_of(r.latest.as_ref());
    let Some(t) = r.tiers.as_mut() else { return };
    t.tier = to;
    let reachable: BTreeSet<String> = t.peers.keys().cloned().collect();
    if let Some(e) = t.election.as_mut() {
        if to == Tier::Socket {
            // Server wins.
            e.handle_server_back(claim);
        } else if e.authority() == Authority::Server {
            e.handle_server_lost(&reachable);
        }
    }
    r.event(&TierEvent {
        r#type: "tier",
        from,
        to,
        reason,
    });
}

fn drain_election(r: &mut Room, acts: &mut Vec<Act>) {
    loop {
        let Some(out) = r
            .tiers
            .as_mut()
            .and_then(|t| t.election.as_mut())
            .and_then(Election::poll_output)
        else {
            return;
        };
        match out {
            ElectionOutput::ControllerChanged { claim, elected, .. } => {
                r.event(&ControllerEvent {
                    r#type: "controller",
                    epoch: claim.epoch,
                    controller: &claim.controller,
                    elected,
                });
            }
            ElectionOutput::Announce(claim) => {
                let state = r.latest.clone();
                if let Some(v) = seal(r, &PeerSync::Claim { claim, state }) {
                    acts.push(Act::MeshSend(v, None));
                }
            }
        }
    }
}

fn seal(r: &mut Room, msg: &PeerSync) -> Option<Value> {
    let sealed = r.tiers.as_mut().and_then(|t| t.sealer.as_mut())?.seal(msg);
    match sealed {
        Ok(v) => Some(v),
        Err(e) => {
            let message = format!("sealing for peers: {e}");
            r.event(&JsMusicEvent::Error {
                code: e.code().as_str(),
                message: &message,
            });
            None
        }
    }
}

/// Whether `send_change` should go to the peers instead of the server.
pub(super) fn peer_ordered(r: &Room) -> bool {
    r.tiers
        .as_ref()
        .is_some_and(|t| t.tier() != Tier::Socket && t.peer_authority())
}

/// The controller orders a change without the server (module docs). Returns the new state
/// and the sealed broadcast, or the JS error to reject with (`not_controller`,
/// `invalid_argument`, `closed` without a room key).
pub(super) fn order_change(
    r: &mut Room,
    action: MusicAction,
    mut data: MusicControlData,
) -> Result<(RoomState, Option<Value>, Record), JsValue> {
    let now = r.now();
    let Some(t) = r.tiers.as_ref() else {
        return Err(error::coded(ErrorCode::Internal, "no peer tier"));
    };
    let offline = t.tier() == Tier::Offline;
    let mut claim = t.claim().cloned().unwrap_or_else(|| Claim::new(0, ""));
    if offline {
        // Independent mode (seed 004 Tier 3): every device is its own controller (as its
        // `deviceId` while no mesh is open: an offline start).
        claim.controller = if t.mesh_id.is_empty() {
            t.origin.clone()
        } else {
            t.mesh_id.clone()
        };
    } else if claim.controller != t.mesh_id {
        return Err(error::coded(
            ErrorCode::NotController,
            &format!(
                "{} controls the room in epoch {}",
                claim.controller, claim.epoch
            ),
        ));
    }
    if action == MusicAction::Handover {
        return Err(error::invalid_argument(
            "handover needs the server (peer-to-peer control follows the election)",
        ));
    }
    if t.sealer.is_none() && !offline {
        return Err(PeerSyncErrorJs(PeerSyncError::NoKey).into());
    }
    let mut base = r.latest.clone().unwrap_or_else(|| RoomState::new(0.0));
    if base.epoch < claim.epoch {
        base.epoch = claim.epoch;
        base.sequence = 0;
    }
    base.controller_id = Some(claim.controller.clone());
    data.timestamp = Some(js_sys::Date::now());
    data.from = Some(claim.controller.clone());
    data.controller_id = Some(claim.controller.clone());
    let mut control = r.stamper.stamp(&base, action, data);
    let apply_at = r.shared_now(now) + LEAD_MS;
    control.apply_at = Some(apply_at);
    let state = base
        .apply(&control, apply_at)
        .map_err(|e: SyncError| error::coded(e.code(), &e.to_string()))?;
    if r.follower.handle_state(state.clone(), now) {
        r.event(&JsMusicEvent::State { state: &state });
        r.latest = Some(state.clone());
    }
    let msg = PeerSync::Change {
        control: control.clone(),
        state: state.clone(),
    };
    let value = seal(r, &msg);
    let timestamp = r.shared_now(now);
    let control = SyncMessage::MusicControl(control).to_value();
    r.event(&JsMusicEvent::Control { control: &control });
    let record = Record {
        op: control,
        epoch: claim.epoch,
        timestamp,
        state: serde_json::to_value(&state).unwrap_or_default(),
    };
    Ok((state, value, record))
}

/// A change ordered without the server, to keep in the offline queue.
pub(super) struct Record {
    op: Value,
    epoch: u64,
    timestamp: f64,
    state: Value,
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
    wasm_bindgen_futures::spawn_local(async move {
        let done = queue
            .record(record.op, record.epoch, record.timestamp, &record.state)
            .await;
        let Some(h) = weak.upgrade() else { return };
        match done {
            Ok((_, pending)) => {
                {
                    let mut r = h.borrow_mut();
                    if let Some(t) = r.tiers.as_mut() {
                        t.pending = pending;
                    }
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

/// The room was joined on the current session (`true`), or the session changed (`false`: the
/// server restarted; the rejoin's `joined` follows).
pub(super) fn handle_joined(r: &mut Room, joined: bool) {
    if let Some(t) = r.tiers.as_mut() {
        t.joined = joined;
        if !joined {
            t.push_sent_at = None;
        }
    }
}

/// The session changed with `followed` the state this device followed (PROTOCOL.md §13.14):
/// it is pushed as the `seed` of the next `music-changes` (the newest of it and any state
/// followed over the mesh meanwhile), so that a restarted server's fresh room takes it.
pub(super) fn keep_seed(r: &mut Room, followed: Option<RoomState>) {
    if let (Some(t), Some(s)) = (r.tiers.as_mut(), followed) {
        if !t.seed.as_ref().is_some_and(|k| s.version() < k.version()) {
            t.seed = Some(s);
        }
    }
}

/// Whether queued changes should go to the server now: some are pending, the client is open
/// and joined to the room on its current session, and no push is in flight (or the last one
/// is older than [`PUSH_RETRY_MS`]).
fn push_due(r: &Room) -> bool {
    let Some(t) = r.tiers.as_ref() else {
        return false;
    };
    let open = r
        .client
        .as_ref()
        .is_some_and(|c| c.borrow().client().state() == ConnectionState::Open);
    let in_flight = t.push_loading
        || t.push_sent_at
            .is_some_and(|at| r.now() - at < PUSH_RETRY_MS);
    let work = (t.queue.is_some() && t.pending > 0) || t.seed.is_some();
    work && open && t.joined && !in_flight
}

/// Pushes the queue if [`push_due`]: reads it afresh (another tab may have added to it) and
/// sends `music-changes` on the Sync lane (PROTOCOL.md §13.9).
pub(super) fn maybe_push(h: &RoomHandle) {
    let queue = {
        let mut r = h.borrow_mut();
        if r.closed || !push_due(&r) {
            return;
        }
        let Some(t) = r.tiers.as_mut() else { return };
        t.push_loading = true;
        t.queue.clone()
    };
    let weak = Rc::downgrade(h);
    wasm_bindgen_futures::spawn_local(async move {
        let changes = match queue {
            Some(queue) => queue.unacknowledged().await,
            None => Ok(Vec::new()),
        };
        let Some(h) = weak.upgrade() else { return };
        let send = {
            let mut r = h.borrow_mut();
            let epoch = known_epoch(&r);
            let now = r.now();
            let latest = r.latest.clone();
            let Some(t) = r.tiers.as_mut() else { return };
            t.push_loading = false;
            // The newest followed state: the one kept at the session change, or one followed
            // since (over the mesh, or the server's own).
            let seed = t.seed.as_ref().map(|k| match latest {
                Some(l) if l.version() >= k.version() => l,
                _ => k.clone(),
            });
            match changes {
                Ok(changes) if !changes.is_empty() || seed.is_some() => {
                    t.pending = changes.len();
                    t.push_sent_at = Some(now);
                    Ok(push_value(epoch, changes, seed))
                }
                Ok(_) => {
                    t.pending = 0;
                    Err(None)
                }
                Err(e) => Err(Some(e)),
            }
        };
        match send {
            Ok(value) => {
                let client = h.borrow().client.clone();
                let sent = match client {
                    Some(client) => {
                        driver::with_client(&client, |c| c.send(Lane::Sync, value, None))
                    }
                    None => Ok(()),
                };
                if let Err(e) = sent {
                    if let Some(t) = h.borrow_mut().tiers.as_mut() {
                        t.push_sent_at = None;
                    }
                    let message = format!("pushing offline changes: {e}");
                    h.borrow_mut().event(&JsMusicEvent::Error {
                        code: e.code().as_str(),
                        message: &message,
                    });
                }
            }
            Err(Some(e)) => {
                let code = code_of(&e, ErrorCode::StorageUnavailable);
                let message = format!("reading the offline queue: {}", error::describe(&e));
                h.borrow_mut().event(&JsMusicEvent::Error {
                    code: &code,
                    message: &message,
                });
            }
            Err(None) => {}
        }
        super::finish(&h);
    });
}

/// The highest controller epoch this device knows (its claim's, its state's).
fn known_epoch(r: &Room) -> u64 {
    let claim = r
        .tiers
        .as_ref()
        .and_then(Tiers::claim)
        .map_or(0, |c| c.epoch);
    claim.max(r.latest.as_ref().map_or(0, |s| s.epoch))
}

/// `{type: "music-changes", epoch, changes}`.
fn push_value(epoch: u64, changes: Vec<Change>, seed: Option<RoomState>) -> Value {
    let push = ChangesPush {
        epoch: Some(epoch),
        changes,
        seed,
    };
    let mut v = serde_json::to_value(&push).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("type".into(), MUSIC_CHANGES_TYPE.into());
    }
    v
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
        let Some(t) = r.tiers.as_mut() else {
            return true;
        };
        // The seed went with the push this answers (taken or not: §13.14).
        t.seed = None;
        if t.queue.is_none() {
            t.push_sent_at = None;
        }
        t.queue.clone()
    };
    let Some(queue) = queue else { return true };
    let weak = Rc::downgrade(h);
    wasm_bindgen_futures::spawn_local(async move {
        let left = queue.acknowledge(ack.version_vector.clone()).await;
        let Some(h) = weak.upgrade() else { return };
        {
            let mut r = h.borrow_mut();
            match left {
                Ok(pending) => {
                    if let Some(t) = r.tiers.as_mut() {
                        t.pending = pending;
                        t.push_sent_at = None;
                    }
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

struct PeerSyncErrorJs(PeerSyncError);

impl From<PeerSyncErrorJs> for JsValue {
    fn from(e: PeerSyncErrorJs) -> JsValue {
        error::coded(e.0.code(), &e.0.to_string())
    }
}

/// A `PeerMessage` from the mesh.
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
        let opened = match r.tiers.as_mut().and_then(|t| t.sealer.as_mut()) {
            Some(s) => s.open(&from, &value, now.max(0.0) as u64),
            None => Err(PeerSyncError::NoKey),
        };
        let result = opened.and_then(|msg| apply_peer(&mut r, &from, msg, now));
        if let Err(e) = result {
            let message = format!("from peer {from}: {e}");
            r.event(&JsMusicEvent::Error {
                code: e.code().as_str(),
                message: &message,
            });
        }
    }
    super::finish(h);
}

fn apply_peer(r: &mut Room, from: &str, msg: PeerSync, now: f64) -> Result<(), PeerSyncError> {
    let Some(e) = r.tiers.as_mut().and_then(|t| t.election.as_mut()) else {
        return Ok(());
    };
    match msg {
        PeerSync::Claim { claim, state } => {
            e.handle_claim(&claim);
            let adopted = e.claim().clone();
            if let Some(s) = state.filter(|s| s.epoch >= adopted.epoch.saturating_sub(1)) {
                if claim == adopted && r.follower.handle_state(s.clone(), now) {
                    r.event(&JsMusicEvent::State { state: &s });
                    r.latest = Some(s);
                }
            }
        }
        PeerSync::Change { control, state } => {
            if e.authority() == Authority::Server {
                // This device still hears the server (silent loss is detected at slightly
                // different times): the server's own controller in the server's epoch is
                // followed already; anything else waits until this device loses the server.
                if check_change(e.claim(), from, &control) != Ok(false) {
                    return Ok(());
                }
            } else if check_change(e.claim(), from, &control)? {
                e.handle_claim(&Claim::new(control.epoch, from));
            }
            if r.follower.handle_state(state.clone(), now) {
                r.event(&JsMusicEvent::State { state: &state });
                r.latest = Some(state);
                let control = SyncMessage::MusicControl(control).to_value();
                r.event(&JsMusicEvent::Control { control: &control });
            }
        }
    }
    Ok(())
}

/// Runs `f(h, v)` again in a microtask: a mesh event or message that arrived while the room
/// was borrowed further up the stack (the mesh dispatches synchronously) is handled once the
/// borrow is released instead of being dropped (a lost `peer-state` would leave `peers` stale
/// until that link changes again).
fn later(h: &RoomHandle, f: fn(&RoomHandle, &JsValue), v: &JsValue) {
    let weak = Rc::downgrade(h);
    let v = v.clone();
    wasm_bindgen_futures::spawn_local(async move {
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
            handle_tier(&mut r, from, to, reason);
        }
        super::finish(h);
        return;
    }
    let Some(peer) = get("peer") else { return };
    {
        let Ok(mut r) = h.try_borrow_mut() else {
            later(h, on_mesh_event, e);
            return;
        };
        if r.closed {
            return;
        }
        let mut announce = None;
        {
            let Some(t) = r.tiers.as_mut() else { return };
            match kind.as_str() {
                "peer-state" => {
                    if get("state").as_deref() == Some("connected") {
                        t.peers.insert(peer.clone(), NetworkQuality::Good);
                        announce = Some(peer.clone());
                    } else {
                        t.peers.remove(&peer);
                    }
                }
                "quality" => {
                    let q =
                        get("quality").and_then(|q| serde_json::from_value(Value::String(q)).ok());
                    if let (Some(q), true) = (q, t.peers.contains_key(&peer)) {
                        t.peers.insert(peer.clone(), q);
                    }
                }
                _ => return,
            }
            let reachable: BTreeSet<String> = t.peers.keys().cloned().collect();
            if let Some(e) = t.election.as_mut() {
                e.handle_membership(&reachable);
            }
        }
        // A new link learns this device's claim (partitions that heal agree, §13.2).
        if let Some(peer) = announce {
            let peer_authority = r.tiers.as_ref().is_some_and(Tiers::peer_authority);
            if peer_authority {
                let claim = r.tiers.as_ref().and_then(Tiers::claim).cloned();
                if let Some(claim) = claim {
                    let state = r.latest.clone();
                    if let Some(v) = seal(&mut r, &PeerSync::Claim { claim, state }) {
                        r.tier_sends.push((v, Some(peer)));
                    }
                }
            }
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
