//! Music rooms for JavaScript (issue #4; seed 004 Tier 1): `client.musicRoom(name, {media})`
//! returns a `MusicRoom` that keeps a media element (or a custom player) in sync with the
//! room's shared playback state, and lets the controller (DJ) change it.
//!
//! It drives one sans-IO core room ([`CoreRoom`], `core::music`, where every music rule
//! lives) on the browser's clock and timers, and only converts and executes:
//! - the core's clock probes go out as Control `ping {clientTime, rttMs}` ([`Client::ping`])
//!   and every `pong` ([`Event::Pong`]) comes back in, with `performance.now()` as the local
//!   clock;
//! - the room's `sync-state` messages (server-originated Sync-lane frames) go to the core,
//!   whose [`MediaCommand`]s are executed on the media ([`media`]);
//! - changes (`play()`, `seek()`, ...) are stamped by the core and sent as seed 004
//!   `music-control` on the Sync lane; the server's authority answers with the resolved change
//!   (resolving the Promise) or a Control error on lane 7 (rejecting it with its `code`).
//!
//! The room listens to the client's core events through [`driver::add_listener`]; every
//! callback into JavaScript (media commands, app callbacks, pings that pump the client) runs
//! with no borrow of the room held, so callbacks may call back into it.
//!
//! # Timers and background tabs
//! One `setTimeout` is armed for the earliest of: the next clock probe, the follower's next
//! sample, and the oldest unanswered change's timeout. Background tabs throttle timers (to 1 s
//! or more), so the media element's own events (`timeupdate` about every 250 ms while playing,
//! `playing`, `pause`, `seeked`, `waiting`, `canplay`, `ended`) and `visibilitychange` also
//! trigger a sample: corrections go on at ≥ 4 Hz in a background tab that plays. The follower
//! is state-based, so a late sample only means a late correction. (`requestAnimationFrame`
//! does not run in background tabs at all, so it is not used.)
//!
//! # Autoplay
//! A `play()` refused with `NotAllowedError` makes the follower's status `needs-user-gesture`
//! (event `needs-user-gesture`). With `resumeOnGesture` (default) the next `pointerdown`,
//! `keydown` or `touchend` anywhere on the page starts playback inside that gesture;
//! `room.userGesture()` does the same from the app's own button.
//!
//! It runs on the SDK's one runtime ([`runtime`]): its timer, its callback registry and event
//! queue, and [`runtime::spawn`] for the join, the offline queue's IndexedDB work and to watch
//! each `play()` Promise.

mod media;
mod offline_start;
mod options;
mod peer_clock;
mod tiers;
mod types;

use crate::core::client::{ConnectionState, Event};
use crate::core::drive::Millis;
use crate::core::error::ErrorCode;
use crate::core::lane::Lane;
use crate::core::music::{Output, Room as CoreRoom, RoomEvent};
use crate::core::sync::follower::{EdgeReading, FollowerConfig, MediaCommand};
use crate::core::sync::peer_clock::ClockProbe;
use crate::core::sync::state::{MusicAction, MusicControlData, SyncMessage};
use crate::wasm::driver::{self, Handle as ClientHandle};
use crate::wasm::global::Global;
use crate::wasm::runtime::{self, Callbacks, Queue, Resolver, Timer};
use crate::wasm::{convert, error};
use js_sys::{Function, Promise};
use media::Media;
use serde::Serialize;
use serde_json::Value;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::{Rc, Weak};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

/// A change unanswered for this long is rejected (`internal`), ms. The authority answers
/// every change it does not apply, so only a frame lost with its socket gets here (and those
/// are rejected with `closed` as soon as the connection drops).
const ANSWER_TIMEOUT_MS: f64 = 10_000.0;

/// A reading of the element whose two clock reads lie further apart is dropped, ms (see
/// [`sample`]); an edge reading wider than this is handed as a plain one.
const MAX_READ_SPAN_MS: f64 = 1.0;

/// An edge reading ([`sample_edge`]) waits this long at most for `currentTime` to change, ms:
/// more than the coarsest refresh period believed (`EstimatorConfig::max_quantum_ms`).
const EDGE_WAIT_MS: f64 = 60.0;

/// Media events that trigger a sample (see the module docs).
const MEDIA_EVENTS: [&str; 8] = [
    "timeupdate",
    "playing",
    "pause",
    "seeked",
    "waiting",
    "canplay",
    "loadeddata",
    "ended",
];

/// Events that count as a user gesture for `resumeOnGesture` (they grant user activation).
const GESTURE_EVENTS: [&str; 3] = ["pointerdown", "keydown", "touchend"];

/// A music room: keeps `media` in sync with the room's shared playback state and sends the
/// controller's changes. Create it with `client.musicRoom(name, options)`.
#[wasm_bindgen]
pub struct MusicRoom {
    inner: RoomHandle,
}

#[wasm_bindgen]
impl MusicRoom {
    /// The room's name.
    #[wasm_bindgen(getter)]
    pub fn name(&self) -> String {
        self.inner.borrow().name.clone()
    }

    /// The newest room state received (it may take effect in the future, at its
    /// `referenceTime`), or `null` before the first one.
    #[wasm_bindgen(getter, unchecked_return_type = "MusicRoomState | null")]
    pub fn state(&self) -> JsValue {
        self.inner
            .borrow()
            .core
            .latest()
            .map_or(JsValue::NULL, convert::to_js)
    }

    /// What the follower is doing (`MusicStatus`), e.g. `'in-sync'` or `'needs-user-gesture'`.
    #[wasm_bindgen(getter, unchecked_return_type = "MusicStatus")]
    pub fn status(&self) -> String {
        self.inner
            .borrow()
            .core
            .follower()
            .status()
            .as_str()
            .to_owned()
    }

    /// The clock estimate (`MusicClock`): offset to the shared clock, RTT, uncertainty, drift.
    #[wasm_bindgen(getter, unchecked_return_type = "MusicClock")]
    pub fn clock(&self) -> JsValue {
        convert::to_js(&self.inner.borrow().core.clock_info())
    }

    /// The clock samples in the estimator's window, oldest first: `[clientTime, receivedAt,
    /// serverTime]` triples (local ms, local ms, shared-clock ms). Diagnostics.
    #[wasm_bindgen(js_name = clockSamples, unchecked_return_type = "[number, number, number][]")]
    pub fn clock_samples(&self) -> JsValue {
        let v: Vec<[f64; 3]> = self
            .inner
            .borrow()
            .core
            .clock()
            .samples()
            .map(|(a, b, c)| [a, b, c])
            .collect();
        convert::to_js(&v)
    }

    /// Forgets every clock sample and starts a new burst towards the current source (the
    /// server, or the controller over the mesh while serverless): after a wake from sleep or
    /// a suspected clock change. Playback follows the last estimate until the new one is
    /// synced (`clock.synced`).
    #[wasm_bindgen(js_name = resetClock)]
    pub fn reset_clock(&self) {
        {
            let mut r = self.inner.borrow_mut();
            if r.closed {
                return;
            }
            let now = r.now();
            r.core.reset_clock(Millis::new(now));
        }
        finish(&self.inner);
    }

    /// Whether this client is the room's controller (DJ), by the newest state.
    #[wasm_bindgen(getter, js_name = isController)]
    pub fn is_controller(&self) -> bool {
        let r = self.inner.borrow();
        let me = r.me();
        r.core
            .latest()
            .and_then(|s| s.controller_id.as_deref())
            .is_some_and(|c| c == me)
    }

    /// The shared clock now (the server's wall clock as estimated here), ms since the Unix
    /// epoch; `performance.now()` until the first probe answers.
    #[wasm_bindgen(js_name = serverNow)]
    pub fn server_now(&self) -> f64 {
        let r = self.inner.borrow();
        r.core.shared_now(Millis::new(r.global.now_precise_ms()))
    }

    /// Where playback should be now by the room state, s (`null` without a state or clock).
    #[wasm_bindgen(js_name = targetPosition, unchecked_return_type = "number | null")]
    pub fn target_position(&self) -> JsValue {
        let r = self.inner.borrow();
        r.core
            .follower()
            .target_position(r.global.now_precise_ms())
            .map_or(JsValue::NULL, JsValue::from_f64)
    }

    /// What the follower learned about this device's media, ms: `{seekMs, startMs,
    /// excursionCostMs}` (how long a seek and a `play()` take, and the media time a rate
    /// excursion loses).
    #[wasm_bindgen(
        getter,
        unchecked_return_type = "{ seekMs: number; startMs: number; excursionCostMs: number }"
    )]
    pub fn latencies(&self) -> JsValue {
        let r = self.inner.borrow();
        let f = r.core.follower();
        convert::to_js(&Latencies {
            seek_ms: f.seek_latency_ms(),
            start_ms: f.start_latency_ms(),
            excursion_cost_ms: f.excursion_cost_ms(),
        })
    }

    /// The sync tier (`SyncTier`, the mesh's): `'socket'` (the server orders changes), `'webrtc'` (the
    /// server is lost, the elected controller orders changes over the DataChannel mesh) or
    /// `'offline'`; `null` without `peerToPeer`.
    #[wasm_bindgen(getter, unchecked_return_type = "SyncTier | null")]
    pub fn tier(&self) -> JsValue {
        self.inner
            .borrow()
            .core
            .tier()
            .map_or(JsValue::NULL, |t| convert::to_js(&t))
    }

    /// Session ids of the peers with a connected DataChannel link (`[]` without
    /// `peerToPeer`).
    #[wasm_bindgen(getter, unchecked_return_type = "string[]")]
    pub fn peers(&self) -> JsValue {
        let r = self.inner.borrow();
        convert::to_js(&r.core.peer_ids())
    }

    /// The controller claim `{epoch, controller}` the room follows without the server, or
    /// `null` before the mesh is up (without `peerToPeer`, always `null`).
    #[wasm_bindgen(
        getter,
        unchecked_return_type = "{ epoch: number; controller: string } | null"
    )]
    pub fn claim(&self) -> JsValue {
        let r = self.inner.borrow();
        r.core.claim().map_or(JsValue::NULL, convert::to_js)
    }

    /// Changes this device made without the server (`offline` tier, or ordered by it on the
    /// `webrtc` tier) that the server has not acknowledged yet: kept in IndexedDB and pushed
    /// when it answers again (PROTOCOL.md §13.12). `null` without `peerToPeer` or before the
    /// queue is open; `pending` events report changes.
    #[wasm_bindgen(getter, js_name = pendingChanges, unchecked_return_type = "number | null")]
    pub fn pending_changes(&self) -> JsValue {
        self.inner
            .borrow()
            .core
            .pending_changes()
            .map_or(JsValue::NULL, |n| JsValue::from_f64(n as f64))
    }

    /// The stable id this device's offline changes carry (`origin`; option `deviceId`, else
    /// `'<identity key>/<device name>'` when the session has a verified identity, else
    /// one kept in `localStorage`), or `null` without `peerToPeer`.
    #[wasm_bindgen(getter, js_name = deviceId, unchecked_return_type = "string | null")]
    pub fn device_id(&self) -> JsValue {
        self.inner
            .borrow()
            .core
            .device_id()
            .map_or(JsValue::NULL, JsValue::from_str)
    }

    /// Plays, from `position` (s) if given, else from where the room is. Resolves with the
    /// room state once the server's authority applied the change (it takes effect a little
    /// later, at its `referenceTime`, on every device at once).
    ///
    /// Rejects with `code`: `not_controller` (someone else is the DJ), `epoch_mismatch` (the
    /// role changed meanwhile), `invalid_argument`, `closed` (the room or connection closed
    /// before the answer), `lane_not_negotiated` (no Sync lane), `backpressure`.
    #[wasm_bindgen(unchecked_return_type = "Promise<MusicRoomState>")]
    pub fn play(
        &self,
        #[wasm_bindgen(unchecked_optional_param_type = "number")] position: JsValue,
    ) -> Promise {
        match optional_position(&position) {
            Ok(position) => send_change(
                &self.inner,
                MusicAction::Play,
                MusicControlData {
                    position,
                    ..Default::default()
                },
            ),
            Err(e) => Promise::reject(&e),
        }
    }

    /// Pauses at the room's position when the change takes effect. Resolves and rejects like
    /// `play()`.
    #[wasm_bindgen(unchecked_return_type = "Promise<MusicRoomState>")]
    pub fn pause(&self) -> Promise {
        send_change(&self.inner, MusicAction::Pause, MusicControlData::default())
    }

    /// Jumps to `position` (s), keeping play/pause. Resolves and rejects like `play()`
    /// (`invalid_argument` for a negative or non-finite position).
    #[wasm_bindgen(unchecked_return_type = "Promise<MusicRoomState>")]
    pub fn seek(&self, position: f64) -> Promise {
        if !position.is_finite() || position < 0.0 {
            return Promise::reject(&error::invalid_argument(&format!(
                "position must be a finite number of seconds >= 0, got {position}"
            )));
        }
        send_change(
            &self.inner,
            MusicAction::Seek,
            MusicControlData {
                position: Some(position),
                ..Default::default()
            },
        )
    }

    /// Switches to `track` (a `MusicTrack` with at least a string `id`; e.g. an entry of
    /// `GET /api/media`), from `position` (s) or 0, keeping play/pause. Resolves and rejects
    /// like `play()`.
    #[wasm_bindgen(js_name = changeTrack, unchecked_return_type = "Promise<MusicRoomState>")]
    pub fn change_track(
        &self,
        #[wasm_bindgen(unchecked_param_type = "MusicTrack")] track: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "number")] position: JsValue,
    ) -> Promise {
        let parsed = convert::value_from_js(&track).and_then(|t| {
            let id = t
                .get("id")
                .and_then(Value::as_str)
                .filter(|id| !id.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| error::invalid_argument("track needs a non-empty string `id`"))?;
            Ok((id, t, optional_position(&position)?))
        });
        match parsed {
            Ok((id, track, position)) => send_change(
                &self.inner,
                MusicAction::ChangeTrack,
                MusicControlData {
                    track_id: Some(id),
                    track: Some(track),
                    position,
                    ..Default::default()
                },
            ),
            Err(e) => Promise::reject(&e),
        }
    }

    /// Hands the controller role to the member `sessionId`. Resolves and rejects like
    /// `play()` (`invalid_argument` if `sessionId` is not in the room).
    #[wasm_bindgen(unchecked_return_type = "Promise<MusicRoomState>")]
    pub fn handover(&self, #[wasm_bindgen(js_name = sessionId)] session_id: String) -> Promise {
        send_change(
            &self.inner,
            MusicAction::Handover,
            MusicControlData {
                to: Some(session_id),
                ..Default::default()
            },
        )
    }

    /// Takes the controller role while nobody holds it (a handover to oneself). Resolves and
    /// rejects like `play()` (`not_controller` if someone holds it).
    #[wasm_bindgen(js_name = claimController, unchecked_return_type = "Promise<MusicRoomState>")]
    pub fn claim_controller(&self) -> Promise {
        let me = self.inner.borrow().me();
        send_change(
            &self.inner,
            MusicAction::Handover,
            MusicControlData {
                to: Some(me),
                ..Default::default()
            },
        )
    }

    /// Call from a user gesture's handler (click, key press) when the status is
    /// `needs-user-gesture`: starts playback inside the gesture. Does nothing otherwise.
    #[wasm_bindgen(js_name = userGesture)]
    pub fn user_gesture(&self) {
        user_gesture(&self.inner);
    }

    /// Calls `callback(event)` for every `MusicRoomEvent`. Returns a function that
    /// unsubscribes.
    ///
    /// Throws `invalid_argument` if `callback` is not a function.
    #[wasm_bindgen(js_name = onEvent, unchecked_return_type = "() => void")]
    pub fn on_event(
        &self,
        #[wasm_bindgen(unchecked_param_type = "(event: MusicRoomEvent) => void")] callback: JsValue,
    ) -> Result<JsValue, JsValue> {
        let f = callback
            .dyn_into::<Function>()
            .map_err(|_| error::invalid_argument("callback must be a function"))?;
        Ok(runtime::subscribe(&self.inner, |r| &mut r.callbacks, (), f))
    }

    /// Opens the music room `name` of the server at `baseUrl` **without a connection**
    /// (Tier 3, PROTOCOL.md §13.12 "Starting offline"): for an app whose `P3Client.connect`
    /// failed with `connect_failed` (e.g. an installed PWA reloaded while the server is
    /// unreachable). The room restores the last state this device followed (saved in
    /// `localStorage` `p3-lanes-music:<room>`, else the `roomState` of its offline queue),
    /// is on the `offline` tier, plays `media` from that state (the autoplay policy still
    /// applies: `needs-user-gesture`), and takes changes as its own controller into the
    /// offline queue. The shared clock is this device's `Date.now()` plus the offset to the
    /// server last saved (`clock.synced` false until attached). Once a client connects, hand
    /// it to `attach(client)`: the queue is then pushed and the server's state followed.
    ///
    /// `options`: as `musicRoom`, `peerToPeer` required (it owns the offline queue); use the
    /// same `deviceId` as before the reload. Rejects with `invalid_argument` (bad URL, room
    /// name or options, no `peerToPeer`), or the storage's `code` (`storage_unavailable`,
    /// `storage_corrupt`) if the offline queue cannot be opened.
    #[wasm_bindgen(js_name = openOffline, unchecked_return_type = "Promise<MusicRoom>")]
    pub fn open_offline(
        #[wasm_bindgen(js_name = baseUrl)] base_url: String,
        #[wasm_bindgen(unchecked_param_type = "string")] name: JsValue,
        #[wasm_bindgen(unchecked_param_type = "MusicRoomOptions")] options: JsValue,
    ) -> Promise {
        offline_start::open(&base_url, &name, &options)
    }

    /// Attaches a room opened with `openOffline` to a connected `client` (of the same
    /// server): the room joins (`tier` event `offline` → `socket`, `server-back`), opens its
    /// mesh, pushes its offline queue and follows the server's state (server wins, PROTOCOL.md
    /// §13.12). Resolves once joined. The client's own reconnects are followed as with
    /// `musicRoom`.
    ///
    /// Rejects with `invalid_argument` if the room already has a client, `lane_not_negotiated`
    /// if the client lacks Control, Sync or Messaging, `closed` if the room is closed, or the join's code (the room then closes).
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn attach(&self, client: &crate::wasm::client::P3Client) -> Promise {
        offline_start::attach(&self.inner, client.handle())
    }

    /// Stops following: the media is paused, timers and listeners stop, unanswered changes
    /// reject with `closed`, and the client leaves the room. Idempotent.
    pub fn close(&self) {
        let client = self.inner.borrow().client.clone();
        if close_room(&self.inner, "closed by the application") {
            if let Some(client) = client {
                driver::with_client(&client, |c| c.leave_room());
            }
        }
    }
}

/// `client.musicRoom(name, options)`: creates the room (listening before the join is sent, so
/// the snapshot that follows `joined` is not missed), joins, and resolves once joined.
pub(crate) fn join(client: &ClientHandle, name: String, options: &JsValue) -> Promise {
    let opts = match options::parse(options) {
        Ok(o) => o,
        Err(e) => return Promise::reject(&e),
    };
    if let Err(e) = require_room_lanes(client, &opts) {
        return Promise::reject(&e);
    }
    let global = match Global::get() {
        Ok(g) => g,
        Err(e) => return Promise::reject(&e),
    };
    let room = match new_room(
        name,
        client.borrow().base().to_owned(),
        Some(client.clone()),
        opts,
        global,
    ) {
        Ok(room) => room,
        Err(e) => return Promise::reject(&e),
    };
    attach_media_listeners(&room);
    let joined = listen_and_join(&room, client);
    let handle = room.clone();
    wasm_bindgen_futures::future_to_promise(async move {
        joined.await?;
        Ok(MusicRoom { inner: handle }.into())
    })
}

/// The lanes a music room needs (PROTOCOL.md §12): Control (clock probes, joins) and Sync
/// (music control), plus Messaging (mesh signaling) with `peerToPeer`.
pub(super) fn require_room_lanes(
    client: &ClientHandle,
    opts: &options::RoomOptions,
) -> Result<(), JsValue> {
    if opts.peer_to_peer.is_some() {
        driver::require_lanes(client, &[Lane::Control, Lane::Sync, Lane::Messaging])
    } else {
        driver::require_lanes(client, &[Lane::Control, Lane::Sync])
    }
}

/// A new room (not listening to anything yet).
///
/// Errors: `crypto_unavailable` (a default `deviceId` needs the CSPRNG).
fn new_room(
    name: String,
    base: String,
    client: Option<ClientHandle>,
    opts: options::RoomOptions,
    global: Global,
) -> Result<RoomHandle, JsValue> {
    let now = global.now_precise_ms();
    // The session's verified identity binds the default origin (PROTOCOL.md §13.15).
    let identity = client
        .as_ref()
        .and_then(|c| c.borrow().identity().map(crate::core::auth::Identity::key));
    let origin = opts
        .peer_to_peer
        .as_ref()
        .map(|_| tiers::origin(opts.device_id.clone(), identity.as_deref()))
        .transpose()?;
    let tiers = opts.peer_to_peer.clone().map(tiers::Tiers::new);
    Ok(Rc::new(RefCell::new(Room {
        core: CoreRoom::new(
            name.clone(),
            FollowerConfig::browser(),
            origin,
            Millis::new(now),
        ),
        name,
        base,
        client,
        saved: None,
        global,
        media: opts.media,
        track_url: opts.track_url,
        resume_on_gesture: opts.resume_on_gesture,
        pending: VecDeque::new(),
        callbacks: Callbacks::default(),
        timer: Timer::default(),
        listener: None,
        media_listeners: Vec::new(),
        gesture_listeners: Vec::new(),
        core_due: Millis::NEVER,
        edge_until: None,
        events: Queue::default(),
        closed: false,
        tiers,
    })))
}

/// Listens to `client`'s events, starts the clock burst and joins the room; the future
/// completes once joined and the mesh (with `peerToPeer`) is open, or closes the room and
/// fails with the join's error.
fn listen_and_join(
    room: &RoomHandle,
    client: &ClientHandle,
) -> impl std::future::Future<Output = Result<(), JsValue>> {
    let weak = Rc::downgrade(room);
    let id = driver::add_listener(
        client,
        Rc::new(move |ev: &Event| {
            if let Some(h) = weak.upgrade() {
                on_client_event(&h, ev);
            }
        }),
    );
    room.borrow_mut().listener = Some(id);
    // The clock burst starts at once, alongside the join.
    finish(room);
    let name = room.borrow().name.clone();
    let joined = driver::join_room(client, &name);
    let handle = room.clone();
    async move {
        match JsFuture::from(joined).await {
            Ok(_) => {
                finish(&handle);
                if let Err(e) = tiers::open_mesh(handle.clone()).await {
                    close_room(&handle, "the peer mesh failed to open");
                    return Err(e);
                }
                Ok(())
            }
            Err(e) => {
                close_room(&handle, "the join failed");
                Err(e)
            }
        }
    }
}

type RoomHandle = Rc<RefCell<Room>>;

/// A change sent and not answered yet.
struct Pending {
    resolver: Resolver,
    /// Local ms after which it is given up.
    deadline_ms: f64,
}

/// A listener attached to a JS event target, detached on close.
struct Attached {
    target: web_sys::EventTarget,
    event: &'static str,
    callback: Closure<dyn FnMut()>,
}

impl Attached {
    fn new(
        target: web_sys::EventTarget,
        event: &'static str,
        callback: Closure<dyn FnMut()>,
    ) -> Attached {
        let _ = target.add_event_listener_with_callback_and_bool(
            event,
            callback.as_ref().unchecked_ref(),
            true,
        );
        Attached {
            target,
            event,
            callback,
        }
    }

    fn detach(&self) {
        let _ = self.target.remove_event_listener_with_callback_and_bool(
            self.event,
            self.callback.as_ref().unchecked_ref(),
            true,
        );
    }
}

/// Everything a `MusicRoom` owns.
struct Room {
    name: String,
    /// The server's base URL (default track URLs).
    base: String,
    /// `None` while a room opened with `MusicRoom.openOffline` is not attached to a client
    /// ([`offline_start`]).
    client: Option<ClientHandle>,
    /// The sans-IO room: clock, follower, election, sealing, the queue's bookkeeping and
    /// every rule between them.
    core: CoreRoom,
    /// What [`offline_start::save`] last wrote: `(epoch, sequence, clock offset ms)`.
    saved: Option<(u64, u64, i64)>,
    global: Global,
    media: Media,
    track_url: Option<Function>,
    resume_on_gesture: bool,
    /// Changes sent, answered in order by the authority.
    pending: VecDeque<Pending>,
    /// The app's `onEvent` callbacks (one topic).
    callbacks: Callbacks<()>,
    /// Armed for the earliest of the core's deadline and the oldest change's timeout.
    timer: Timer,
    /// Id of the client listener.
    listener: Option<u32>,
    media_listeners: Vec<Attached>,
    gesture_listeners: Vec<Attached>,
    /// When the core room wants to be polled again, local ms.
    core_due: Millis,
    /// JS events not dispatched yet.
    events: Queue<JsValue>,
    closed: bool,
    /// Tier 2 (`peerToPeer`): the mesh and the offline queue, see [`tiers`].
    tiers: Option<tiers::Tiers>,
    /// An edge reading is under way ([`sample_edge`]) until this local ms: no other sample
    /// is taken, and the timer is not armed before it.
    edge_until: Option<f64>,
}

/// Something to do outside the room's borrow.
enum Act {
    Media(MediaCommand),
    Ping(f64, Option<f64>),
    InstallGestureListeners,
    /// A sealed value on the mesh's Sync lane, to one peer or (`None`) every peer.
    MeshSend(Value, Option<String>),
    /// Centre the mesh's hub on this controller (§13.13).
    MeshController(Option<String>),
    /// A clock probe on a peer's `p3-control` channel ([`peer_clock`]).
    PeerClock(String, ClockProbe),
}

impl Room {
    /// This device's id in the room: the session id, or (not attached to a client) the
    /// `deviceId`.
    fn me(&self) -> String {
        match &self.client {
            Some(c) => c.borrow().client().session_id().to_string(),
            None => self.core.device_id().unwrap_or_default().to_owned(),
        }
    }

    fn now(&self) -> f64 {
        self.global.now_precise_ms()
    }

    fn event(&mut self, ev: &impl Serialize) {
        self.events.push(convert::to_js(ev));
    }

    /// Drains the core room into acts and events (events in their order; acts are executed
    /// by [`finish`] with no borrow held).
    fn drain(&mut self) -> Vec<Act> {
        let mut acts = Vec::new();
        let now = self.now();
        loop {
            match self.core.poll_output(Millis::new(now)) {
                Output::Media(c) => acts.push(Act::Media(c)),
                Output::Ping {
                    client_time,
                    rtt_ms,
                } => acts.push(Act::Ping(client_time, rtt_ms)),
                Output::PeerClock { to, probe } => acts.push(Act::PeerClock(to, probe)),
                Output::MeshSend { value, to } => acts.push(Act::MeshSend(value, to)),
                Output::MeshController(c) => acts.push(Act::MeshController(c)),
                Output::Event(ev) => {
                    self.event(&ev);
                    if ev == RoomEvent::NeedsUserGesture && self.resume_on_gesture {
                        acts.push(Act::InstallGestureListeners);
                    }
                }
                Output::Timeout(t) => {
                    self.core_due = t;
                    break;
                }
            }
        }
        acts
    }

    /// Rejects unanswered changes past their deadline.
    fn expire_pending(&mut self, now: f64) {
        while self.pending.front().is_some_and(|p| p.deadline_ms <= now) {
            if let Some(p) = self.pending.pop_front() {
                p.resolver.reject(&error::coded(
                    ErrorCode::Internal,
                    "no answer from the room's authority in time",
                ));
            }
        }
    }

    fn reject_pending(&mut self, code: ErrorCode, why: &str) {
        for p in self.pending.drain(..) {
            p.resolver.reject(&error::coded(code, why));
        }
    }

    /// Arms the room's [`Timer`] for the earliest deadline; a closed room's is cancelled and
    /// released.
    fn arm_timer(&mut self, h: &RoomHandle) {
        if self.closed {
            self.timer.cancel(&self.global);
            self.timer.release();
            return;
        }
        // `arm_at` rounds up to whole ms: never early (at most 1 ms late, below
        // `setTimeout`'s own granularity).
        let answer = self
            .pending
            .front()
            .map_or(Millis::NEVER, |p| Millis::new(p.deadline_ms));
        let deadline = self.core_due.min(answer);
        let deadline = match self.edge_until {
            Some(until) if !deadline.is_never() => deadline.max(Millis::new(until)),
            _ => deadline,
        };
        let weak = Rc::downgrade(h);
        self.timer.arm_at(&self.global, deadline, move || {
            Box::new(move || {
                if let Some(h) = weak.upgrade() {
                    on_timer(&h);
                }
            })
        });
    }
}

/// After every input: drains the follower and the clock, executes what they asked for with no
/// borrow held, re-arms the timer, and dispatches events (outermost call only).
fn finish(h: &RoomHandle) {
    let acts = {
        let mut r = h.borrow_mut();
        if r.closed {
            Vec::new()
        } else {
            offline_start::save(&mut r);
            r.drain()
        }
    };
    for act in acts {
        execute(h, act);
    }
    h.borrow_mut().arm_timer(h);
    dispatch(h);
    tiers::maybe_push(h);
}

fn execute(h: &RoomHandle, act: Act) {
    match act {
        Act::Ping(client_time, rtt) => {
            let client = h.borrow().client.clone();
            if let Some(client) = client {
                driver::with_client(&client, |c| c.ping(client_time, rtt));
            }
        }
        Act::Media(cmd) => {
            let (media, url) = {
                let r = h.borrow();
                let url = match &cmd {
                    MediaCommand::Load { track_id, track } => track_url(&r, track_id, track),
                    _ => String::new(),
                };
                (r.media.clone(), url)
            };
            match media.exec(&cmd, &url) {
                Ok(Some(play)) => watch_play(h, &play),
                Ok(None) => {}
                Err(e) => media_error(h, &e),
            }
        }
        Act::InstallGestureListeners => install_gesture_listeners(h),
        Act::MeshSend(v, to) => tiers::mesh_send(h, &v, to.as_deref()),
        Act::MeshController(c) => tiers::set_hub(h, c),
        Act::PeerClock(to, probe) => peer_clock::send(h, &to, probe),
    }
}

/// The source of a track: the app's `trackUrl`, else [`media::default_track_url`].
fn track_url(r: &Room, track_id: &str, track: &Option<Value>) -> String {
    if let Some(f) = &r.track_url {
        let t = track.as_ref().map_or(JsValue::NULL, convert::value_to_js);
        if let Ok(url) = f.call2(&JsValue::UNDEFINED, &JsValue::from_str(track_id), &t) {
            if let Some(url) = url.as_string() {
                return url;
            }
        }
    }
    media::default_track_url(&r.base, track_id, track.as_ref())
}

/// Reports a refused `play()` to the follower (autoplay policy) or as an error event.
fn watch_play(h: &RoomHandle, play: &Promise) {
    let weak = Rc::downgrade(h);
    let play = JsFuture::from(play.clone());
    runtime::spawn(async move {
        let Err(err) = play.await else { return };
        let Some(h) = weak.upgrade() else { return };
        if media::is_autoplay_refusal(&err) {
            {
                let mut r = h.borrow_mut();
                let now = r.now();
                r.core.handle_play_rejected(Millis::new(now));
            }
            finish(&h);
        } else if !media::is_interruption(&err) {
            media_error(&h, &err);
        }
    });
}

fn media_error(h: &RoomHandle, err: &JsValue) {
    let message = format!("media: {}", error::describe(err));
    h.borrow_mut().event(&JsMusicEvent::Error {
        code: ErrorCode::Internal.as_str(),
        message: &message,
    });
    dispatch(h);
}

/// Reads the media and hands the sample to the follower.
///
/// The element's position is read between two clock reads. Chromium fixes `currentTime` at its
/// first read in a task, so a renderer that stalls between the clock read and that one (a
/// loaded machine: up to tens of ms) yields a position whose instant is unknown; such a
/// reading is dropped ([`MAX_READ_SPAN_MS`]) and the follower only runs its timers.
fn sample(h: &RoomHandle) {
    let (media, now, edge) = {
        let r = h.borrow();
        if r.closed || r.edge_until.is_some() {
            return;
        }
        let edge = r.core.follower().wants_edge_sample();
        (r.media.clone(), r.now(), edge)
    };
    if let (true, Some(el)) = (edge, media.element()) {
        sample_edge(h, el.clone(), now);
        return;
    }
    let s = media.sample(now);
    {
        let mut r = h.borrow_mut();
        let span = r.now() - now;
        if media.element().is_some() && span > MAX_READ_SPAN_MS {
            r.core.handle_timeout(Millis::new(now + span));
        } else {
            r.core.handle_media_sample(s);
        }
    }
    finish(h);
}

/// Takes an edge reading ([`media::read_edge`], PROTOCOL.md §12.5.2), then hands the follower
/// a plain reading with it; without it when `currentTime` did not change within
/// [`EDGE_WAIT_MS`], changed only across reads further apart than [`MAX_READ_SPAN_MS`], or the
/// follower no longer wants one (a command came meanwhile).
fn sample_edge(h: &RoomHandle, el: web_sys::HtmlMediaElement, now: f64) {
    h.borrow_mut().edge_until = Some(now + EDGE_WAIT_MS);
    let weak = Rc::downgrade(h);
    runtime::spawn(async move {
        let edge = media::read_edge(&el, EDGE_WAIT_MS).await;
        let Some(h) = weak.upgrade() else { return };
        {
            let mut r = h.borrow_mut();
            r.edge_until = None;
            if r.closed {
                return;
            }
            // The plain reading, taken now (`currentTime` holds still for the rest of the
            // task in which the edge was read), with the edge if it is one.
            let now = r.now();
            let mut s = r.media.sample(now);
            let wanted = r.core.follower().wants_edge_sample() && !s.paused && !s.seeking;
            s.edge = edge
                .filter(|&(_, at_ms, span_ms)| {
                    wanted && span_ms <= MAX_READ_SPAN_MS && at_ms <= now
                })
                .map(|(position_s, local_ms, span_ms)| EdgeReading {
                    local_ms,
                    position_s,
                    span_ms,
                });
            r.core.handle_media_sample(s);
        }
        finish(&h);
    });
}

fn on_timer(h: &RoomHandle) {
    let follower_due = {
        let mut r = h.borrow_mut();
        r.timer.fired();
        let now = r.now();
        r.expire_pending(now);
        // A little early is fine: the timer's own rounding.
        r.core.follower_due() <= Millis::new(now + 1.0)
    };
    if follower_due {
        sample(h);
    } else {
        finish(h);
    }
}

fn user_gesture(h: &RoomHandle) {
    {
        let mut r = h.borrow_mut();
        if r.closed {
            return;
        }
        for l in r.gesture_listeners.drain(..) {
            l.detach();
        }
        let now = r.now();
        r.core.handle_user_gesture(Millis::new(now));
    }
    finish(h);
}

fn install_gesture_listeners(h: &RoomHandle) {
    if !h.borrow().gesture_listeners.is_empty() {
        return;
    }
    let global = js_sys::global();
    if js_sys::Reflect::get(&global, &"document".into()).map_or(true, |d| d.is_undefined()) {
        return;
    }
    let target: web_sys::EventTarget = global.unchecked_into();
    let listeners = GESTURE_EVENTS
        .iter()
        .map(|&event| {
            let weak = Rc::downgrade(h);
            let cb = Closure::<dyn FnMut()>::new(move || {
                if let Some(h) = weak.upgrade() {
                    user_gesture(&h);
                }
            });
            Attached::new(target.clone(), event, cb)
        })
        .collect();
    h.borrow_mut().gesture_listeners = listeners;
}

fn attach_media_listeners(h: &RoomHandle) {
    let element = h.borrow().media.element().cloned();
    let mut attached = Vec::new();
    let make = |h: &RoomHandle| {
        let weak: Weak<RefCell<Room>> = Rc::downgrade(h);
        Closure::<dyn FnMut()>::new(move || {
            if let Some(h) = weak.upgrade() {
                sample(&h);
            }
        })
    };
    if let Some(el) = element {
        for event in MEDIA_EVENTS {
            attached.push(Attached::new(el.clone().into(), event, make(h)));
        }
    }
    if let Ok(doc) = js_sys::Reflect::get(&js_sys::global(), &"document".into()) {
        if doc.is_object() {
            attached.push(Attached::new(
                doc.unchecked_into(),
                "visibilitychange",
                make(h),
            ));
        }
    }
    h.borrow_mut().media_listeners = attached;
}

/// One core event of the client (see [`driver::add_listener`]).
fn on_client_event(h: &RoomHandle, ev: &Event) {
    if let Event::Message(m) = ev {
        if m.lane == Lane::Sync && m.from.is_none() && tiers::handle_ack(h, &m.value) {
            finish(h);
            return;
        }
    }
    {
        let mut r = h.borrow_mut();
        if r.closed {
            return;
        }
        let now = r.now();
        match ev {
            Event::Pong {
                client_time,
                server_time,
                ..
            } => {
                r.core
                    .handle_server_pong(*client_time, *server_time as f64, Millis::new(now));
            }
            Event::Message(m) if m.lane == Lane::Sync && m.from.is_none() => {
                match SyncMessage::from_value(m.value.clone()) {
                    Ok(SyncMessage::SyncState { data }) => {
                        let mesh_id = tiers::mesh_id(&r);
                        r.core.handle_server_state(data, mesh_id.as_deref(), Millis::new(now));
                    }
                    Ok(SyncMessage::MusicControl(c)) => {
                        if c.data.from.as_deref() == Some(r.me().as_str()) {
                            if let Some(p) = r.pending.pop_front() {
                                let state = r.core.latest().map_or(JsValue::NULL, convert::to_js);
                                p.resolver.resolve(&state);
                            }
                        }
                        let control = SyncMessage::MusicControl(c).to_value();
                        r.event(&JsMusicEvent::Control { control: &control });
                    }
                    Err(e) => web_sys::console::warn_1(&JsValue::from_str(&format!(
                        "p3-lanes: music room {}: {e}",
                        r.name
                    ))),
                }
            }
            // A `rate_limited` Sync message the client sends again is not a failed change.
            Event::Error {
                code,
                message,
                lane: Some(Lane::Sync),
                dropped,
                ..
            } if *dropped != Some(false) => {
                if let Some(p) = r.pending.pop_front() {
                    p.resolver.reject(&error::coded(*code, message));
                }
                r.event(&JsMusicEvent::Error {
                    code: code.as_str(),
                    message,
                });
            }
            Event::RoomKey { room, key_id, key } if *room == r.name => {
                tiers::handle_room_key(&mut r, *key_id, key);
            }
            Event::PeerLeft { room, session_id } if *room == r.name => {
                r.core.handle_peer_left(&session_id.to_string());
            }
            Event::SessionChanged { .. } => {
                // A new session: the server restarted (or forgot us), and its authority's
                // versions start anew. Reset here, not on the rejoin's `joined`: that Control
                // message may arrive after the Sync lane's snapshot, which it would erase.
                r.core.handle_session_changed();
            }
            Event::RoomJoined { room, .. } if *room == r.name => r.core.handle_joined(),
            Event::RoomJoined { .. } => {
                drop(r);
                close_room(h, "the client joined another room");
                return;
            }
            Event::RoomLeft { room } if *room == r.name => {
                drop(r);
                close_room(h, "the client left the room");
                return;
            }
            Event::StateChanged { state, .. } => match state {
                ConnectionState::Reconnecting => r.reject_pending(
                    ErrorCode::Closed,
                    "the connection dropped before the room's authority answered; the change may or may not have been applied",
                ),
                ConnectionState::Open => r.core.handle_connection_open(Millis::new(now)),
                ConnectionState::Closed => {
                    drop(r);
                    close_room(h, "the client closed");
                    return;
                }
                ConnectionState::Connecting => {}
            },
            _ => return,
        }
    }
    finish(h);
}

/// Sends one change; the Promise settles with the authority's answer.
fn send_change(h: &RoomHandle, action: MusicAction, data: MusicControlData) -> Promise {
    let (value, client) = {
        let mut r = h.borrow_mut();
        if r.closed {
            return Promise::reject(&error::coded(ErrorCode::Closed, "the music room is closed"));
        }
        if r.core.peer_ordered() {
            let now = r.now();
            let ordered = r
                .core
                .order_change(action, data, js_sys::Date::now(), Millis::new(now));
            drop(r);
            return match ordered {
                Ok((state, record)) => {
                    // The sealed broadcast goes out (and the state and control events are
                    // queued) before the queue is written.
                    finish(h);
                    let promise = tiers::queue_change(h, convert::to_js(&state), record);
                    finish(h);
                    promise
                }
                Err(e) => Promise::reject(&error::coded(e.code(), &e.to_string())),
            };
        }
        let Some(client) = r.client.clone() else {
            return Promise::reject(&error::coded(
                ErrorCode::Closed,
                "the music room has no server connection (attach a client)",
            ));
        };
        let value = r
            .core
            .stamp_server_change(action, data, js_sys::Date::now());
        (value, client)
    };
    if let Err(e) = driver::with_client(&client, |c| c.send(Lane::Sync, value, None)) {
        return Promise::reject(&error::client_error(&e));
    }
    let (promise, resolver) = Resolver::new();
    {
        let mut r = h.borrow_mut();
        let deadline_ms = r.now() + ANSWER_TIMEOUT_MS;
        r.pending.push_back(Pending {
            resolver,
            deadline_ms,
        });
    }
    finish(h);
    promise
}

/// Stops the room (see `MusicRoom.close`); `false` if it already was.
fn close_room(h: &RoomHandle, reason: &str) -> bool {
    let (client, listener, media) = {
        let mut r = h.borrow_mut();
        if r.closed {
            return false;
        }
        r.closed = true;
        r.reject_pending(ErrorCode::Closed, &format!("music room closed: {reason}"));
        let r = &mut *r;
        for l in r
            .media_listeners
            .drain(..)
            .chain(r.gesture_listeners.drain(..))
        {
            l.detach();
        }
        r.event(&JsMusicEvent::Closed { reason });
        if let Some(t) = r.tiers.as_mut() {
            t.close();
        }
        (r.client.clone(), r.listener.take(), r.media.clone())
    };
    if let (Some(id), Some(client)) = (listener, client) {
        driver::remove_listener(&client, id);
    }
    let _ = media.exec(&MediaCommand::Pause, "");
    h.borrow_mut().arm_timer(h);
    dispatch(h);
    true
}

/// Hands queued events to the callbacks, with no borrow held ([`runtime::dispatch`]:
/// the outermost call dispatches).
fn dispatch(h: &RoomHandle) {
    runtime::dispatch(
        h,
        |r| &mut r.events,
        |ev| {
            let callbacks = h.borrow().callbacks.of(());
            runtime::call_each(&callbacks, |id| h.borrow().callbacks.contains(id), &[ev]);
        },
    );
    let mut r = h.borrow_mut();
    if r.closed && !r.events.dispatching() {
        // Release the callbacks (and what they hold) once nothing more will be said.
        r.callbacks.clear();
        r.timer.release();
    }
}

/// An optional position argument, s. Errors: `invalid_argument`.
fn optional_position(v: &JsValue) -> Result<Option<f64>, JsValue> {
    if v.is_undefined() || v.is_null() {
        return Ok(None);
    }
    match v.as_f64() {
        Some(p) if p.is_finite() && p >= 0.0 => Ok(Some(p)),
        _ => Err(error::invalid_argument(
            "position must be a finite number of seconds >= 0",
        )),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Latencies {
    seek_ms: f64,
    start_ms: f64,
    excursion_cost_ms: f64,
}

/// `MusicRoomEvent`s of the driver (the core room's are [`RoomEvent`]s).
#[derive(Serialize)]
#[serde(
    tag = "type",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
enum JsMusicEvent<'a> {
    Control { control: &'a Value },
    Error { code: &'a str, message: &'a str },
    Closed { reason: &'a str },
}
