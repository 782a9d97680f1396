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
//! Everything here runs under the room's borrow and returns [`Act`]s (mesh sends) that
//! [`super::finish`] executes with no borrow held.

use super::{Act, JsMusicEvent, Room, RoomHandle};
use crate::core::error::ErrorCode;
use crate::core::lane::Lane;
use crate::core::p2p::election::{Authority, Claim, Election, ElectionOutput};
use crate::core::p2p::peer_sync::{check_change, PeerSealer, PeerSync, PeerSyncError};
use crate::core::p2p::quality::NetworkQuality;
use crate::core::p2p::seal::RoomKey;
use crate::core::p2p::tier::{Tier, TierReason};
use crate::core::sync::state::{MusicAction, MusicControlData, RoomState, SyncError, SyncMessage};
use crate::wasm::p2p::{self, MeshHandle};
use crate::wasm::{convert, error};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use wasm_bindgen::prelude::*;

/// Lead between a peer-ordered change and its `applyAt`, ms: DataChannel delivery on a LAN
/// plus the follower's start latency.
pub(super) const LEAD_MS: f64 = 250.0;

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
    /// Connected peers.
    peers: BTreeMap<String, NetworkQuality>,
    /// The controller the mesh's hub was last centred on (§13.13).
    hub: Option<String>,
}

impl Tiers {
    pub(super) fn new(mesh_options: JsValue) -> Tiers {
        Tiers {
            mesh_options,
            mesh: None,
            mesh_id: String::new(),
            callbacks: Vec::new(),
            tier: Tier::Socket,
            election: None,
            sealer: None,
            peers: BTreeMap::new(),
            hub: None,
        }
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

    /// This device's mesh id (`""` before the mesh is open).
    pub(super) fn mesh_id(&self) -> &str {
        &self.mesh_id
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
        (r.client.clone(), r.name.clone(), t.mesh_options.clone())
    };
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

/// The server's claim in `state` (epoch, controller; `""` without a controller).
fn claim_of(state: Option<&RoomState>) -> Claim {
    state.map_or_else(
        || Claim::new(0, ""),
        |s| Claim::new(s.epoch, s.controller_id.clone().unwrap_or_default()),
    )
}

/// 4 random bytes from `crypto.getRandomValues` (falling back to `Math.random`).
fn nonce_prefix() -> [u8; 4] {
    let bytes = js_sys::Uint8Array::new_with_length(4);
    let crypto = js_sys::Reflect::get(&js_sys::global(), &"crypto".into()).ok();
    let filled = crypto
        .and_then(|c| {
            let f = js_sys::Reflect::get(&c, &"getRandomValues".into()).ok()?;
            let f: js_sys::Function = f.dyn_into().ok()?;
            f.call1(&c, &bytes).ok()
        })
        .is_some();
    if filled {
        let mut out = [0u8; 4];
        bytes.copy_to(&mut out);
        out
    } else {
        (crate::wasm::global::random_u64() as u32).to_be_bytes()
    }
}

/// Control `room-key` for this room.
pub(super) fn handle_room_key(r: &mut Room, key_id: u32, key: &str) {
    let name = r.name.clone();
    let me = r.me();
    let Some(t) = r.tiers.as_mut() else { return };
    match RoomKey::from_base64url(key_id, key) {
        Ok(k) => {
            let id = if t.mesh_id.is_empty() {
                me
            } else {
                t.mesh_id.clone()
            };
            t.sealer = Some(PeerSealer::new(k, name, id, nonce_prefix()));
        }
        Err(e) => web_sys::console::warn_1(&JsValue::from_str(&format!("p3-lanes: {e}"))),
    }
}

/// A `sync-state` from the server: while it is the authority, its claim is the room's.
pub(super) fn handle_server_state(r: &mut Room) {
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
    r.tiers
        .as_mut()
        .and_then(|t| t.sealer.as_mut())
        .map(|s| s.seal(msg))
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
) -> Result<(RoomState, Option<Value>), JsValue> {
    let now = r.now();
    let Some(t) = r.tiers.as_ref() else {
        return Err(error::coded(ErrorCode::Internal, "no peer tier"));
    };
    let claim = t.claim().cloned().unwrap_or_else(|| Claim::new(0, ""));
    if claim.controller != t.mesh_id {
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
    if t.sealer.is_none() {
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
    let apply_at = r.clock.server_now(now) + LEAD_MS;
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
    let control = SyncMessage::MusicControl(control).to_value();
    r.event(&JsMusicEvent::Control { control: &control });
    Ok((state, value))
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
            return;
        };
        if r.closed {
            return;
        }
        let now = r.now();
        let opened = match r.tiers.as_mut().and_then(|t| t.sealer.as_mut()) {
            Some(s) => s.open(&from, &value),
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
