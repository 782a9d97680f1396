//! The mesh driver: runs one core [`Mesh`] on the browser's clock, timers, RTCPeerConnections
//! ([`rtc`]) and the `P3Client` (signaling while the server is up), following the drive
//! contract of [`crate::core::p2p::mesh`]:
//!
//! - every input (a client event, an RTCPeerConnection / DataChannel event, a negotiation step
//!   that settled, a `getStats()` result, a timer, an API call) is fed to the core under the
//!   `RefCell` borrow, then [`pump`] drains the outputs: RTC work is done at once (it fires no
//!   event synchronously), signals for the server and events for the app are collected and
//!   handled **after** the borrow is released (sending through the client may run client
//!   listeners, this one included; app callbacks may call back into the mesh);
//! - one runtime timer ([`crate::wasm::runtime::Timer`]) is armed for the core's earliest
//!   deadline (multiplexer acks, relinks, stats); `getStats()` runs when the core asks
//!   ([`MeshOutput::SampleStats`]: every `statsIntervalMs`, backing off while stable);
//! - the state is held strongly only by the `PeerMesh` object; every handler holds a `Weak`,
//!   so dropping the `PeerMesh` closes its RTCPeerConnections ([`rtc::Conn`]'s `Drop`).
//!
//! Leaving: on the global's `pagehide` (a tab closed, a navigation) the mesh closes as
//! `close()` does: `end` to every peer and every RTCPeerConnection closed, so the peers see
//! the links go at once instead of after ICE consent checks fail (about 5-7 s in Chromium);
//! a departed DJ is replaced that much sooner (PROTOCOL.md §13.13).
//!
//! Server reachability: the client's state (`open` or not). Once the client's session id is no
//! longer the one the mesh was built with (the server restarted or forgot it), the mesh takes
//! the new id ([`Mesh::handle_new_id`]): links of the old id are dropped and the rejoin's
//! member list links the room again under the new ids (PROTOCOL.md §13.12).

use super::rtc;
use crate::core::client::{ConnectionState, Event};
use crate::core::drive::Millis;
use crate::core::lane::Lane;
use crate::core::p2p::mesh::{Mesh, MeshConfig, MeshEvent, MeshOutput, STATS_INTERVAL_MS};
use crate::core::p2p::signal::SignalMessage;
use crate::core::sync::peer_clock::ClockProbe;
use crate::core::{error::ErrorCode, mux::DiscontinuityReason};
use crate::wasm::driver::{self as client_driver, Handle as ClientHandle};
use crate::wasm::global::{self, Global};
use crate::wasm::runtime::{self, Callbacks, Queue, Timer};
use crate::wasm::{convert, error};
use js_sys::{Function, Promise, Reflect};
use serde::Serialize;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// The shared state of one `PeerMesh`.
pub(crate) type MeshHandle = Rc<RefCell<State>>;

/// What an app callback listens to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Topic {
    /// `PeerMessage`s.
    Message,
    /// `PeerMeshEvent`s.
    Event,
}

/// Everything one `PeerMesh` owns (see the module docs).
pub(crate) struct State {
    mesh: Mesh,
    room: String,
    /// A call's mesh ([`open_call`]): its one peer is fixed, room events are not its own.
    call: bool,
    client: ClientHandle,
    global: Global,
    rtc_config: JsValue,
    conns: HashMap<String, rtc::Conn>,
    conn_seq: u64,
    timer: Timer,
    /// Per peer: bytes sent on the selected candidate pair and when, for the bitrate.
    sent: HashMap<String, (f64, f64)>,
    callbacks: Callbacks<Topic>,
    events: Queue<MeshEvent>,
    signals: Vec<SignalMessage>,
    /// Heartbeat pings the tier machine asked for, not sent yet.
    pings: usize,
    listener: Option<u32>,
    closed: bool,
    /// The `pagehide` listener (a one-shot JS function), removed on close.
    pagehide: Option<JsValue>,
}

impl State {
    /// This device's mesh id.
    pub(crate) fn me(&self) -> &str {
        self.mesh.me()
    }

    /// The room.
    pub(crate) fn room(&self) -> &str {
        &self.room
    }

    /// `performance.now()`, whole ms (the mesh's clock).
    pub(crate) fn now(&self) -> Millis {
        Millis::from_u64(self.global.now_ms())
    }

    /// `performance.now()`, ms.
    pub(crate) fn now_precise(&self) -> f64 {
        self.global.now_precise_ms()
    }

    /// Whether connection `id` is still `peer`'s current one (events of replaced ones are
    /// stale).
    pub(crate) fn is_current(&self, peer: &str, id: u64) -> bool {
        !self.closed && self.conns.get(peer).is_some_and(|c| c.id == id)
    }

    /// Bitrate (bits/s) from `bytes` sent at `at` (ms) and the previous sample of `peer`.
    pub(crate) fn bitrate(&mut self, peer: &str, bytes: f64, at: f64) -> f64 {
        let prev = self.sent.insert(peer.to_owned(), (bytes, at));
        match prev {
            Some((b, t)) if at > t && bytes >= b => (bytes - b) * 8.0 * 1000.0 / (at - t),
            _ => 0.0,
        }
    }

    /// Queues an error event for the app.
    pub(crate) fn error_event(&mut self, peer: Option<&str>, code: ErrorCode, message: String) {
        self.events.push(MeshEvent::Error {
            peer: peer.map(str::to_owned),
            code,
            message,
        });
    }

    /// `mesh.linkStats(peer)`: the counters of `peer`'s multiplexer, or `null`.
    pub(crate) fn link_stats_js(&self, peer: &str) -> JsValue {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct LinkStats {
            frames_sent: u64,
            bytes_sent: u64,
            resumes: u64,
            acks_sent: u64,
        }
        self.mesh.mux(peer).map_or(JsValue::NULL, |m| {
            let st = m.stats();
            convert::to_js(&LinkStats {
                frames_sent: st.frames_sent,
                bytes_sent: st.bytes_sent,
                resumes: st.resumes,
                acks_sent: st.acks_sent,
            })
        })
    }

    /// `mesh.tier`.
    pub(crate) fn tier_js(&self) -> JsValue {
        convert::to_js(&self.mesh.tier())
    }

    /// `mesh.peers`.
    pub(crate) fn peers_js(&self) -> JsValue {
        #[derive(Serialize)]
        struct Link<'a> {
            peer: &'a str,
            state: JsLinkState,
        }
        #[derive(Serialize)]
        #[serde(untagged)]
        enum JsLinkState {
            State(crate::core::p2p::mesh::LinkState),
            Waiting(&'static str),
        }
        let links: Vec<Link> = self
            .mesh
            .links()
            .map(|(peer, state)| Link {
                peer,
                state: state.map_or(JsLinkState::Waiting("waiting"), JsLinkState::State),
            })
            .collect();
        convert::to_js(&links)
    }

    /// Drains the core's outputs (see the module docs). Calls no app code and does not touch
    /// the client.
    fn drain(&mut self, h: &MeshHandle) {
        // The multiplexers write while `p3-lanes` is under its high-water mark.
        let buffered: Vec<(String, u32)> = self
            .conns
            .iter()
            .map(|(p, c)| (p.clone(), c.lanes_buffered()))
            .collect();
        for (p, b) in buffered {
            self.mesh.handle_lane_buffered(&p, b as usize);
        }
        let now = self.now();
        let deadline = loop {
            match self.mesh.poll_output(now) {
                MeshOutput::Timeout(deadline) => break deadline,
                MeshOutput::OpenPeer { peer, .. } => {
                    self.conns.remove(&peer);
                    self.conn_seq += 1;
                    let id = self.conn_seq;
                    match rtc::Conn::open(&Rc::downgrade(h), &peer, id, &self.rtc_config) {
                        Ok(c) => {
                            self.conns.insert(peer, c);
                        }
                        Err(e) => {
                            let now = self.now();
                            self.error_event(
                                Some(&peer),
                                ErrorCode::WebrtcFailed,
                                format!("new RTCPeerConnection: {}", error::describe(&e)),
                            );
                            // The link is down: the core closes it and retries later.
                            self.mesh.handle_peer_state(
                                &peer,
                                crate::core::p2p::mesh::PeerConnectionState::Failed,
                                now,
                            );
                        }
                    }
                }
                MeshOutput::ClosePeer { peer } => {
                    self.conns.remove(&peer);
                    self.sent.remove(&peer);
                }
                MeshOutput::Negotiate { peer, action } => {
                    if let Some(c) = self.conns.get_mut(&peer) {
                        rtc::negotiate(Rc::downgrade(h), peer, c, action);
                    }
                }
                MeshOutput::SendSignal(m) => self.signals.push(m),
                MeshOutput::Ping => self.pings += 1,
                MeshOutput::SampleStats => {
                    let now = self.now_precise();
                    for peer in self.mesh.connected_peers() {
                        if let Some(c) = self.conns.get(&peer) {
                            rtc::sample_stats(Rc::downgrade(h), peer, c.id, c.pc.clone(), now);
                        }
                    }
                }
                MeshOutput::SendControl { peer, text } => {
                    let sent = self.conns.get(&peer).map(|c| c.send_control(&text));
                    if let Some(Err(e)) = sent {
                        self.error_event(
                            Some(&peer),
                            ErrorCode::WebrtcFailed,
                            format!("p3-control send: {}", error::describe(&e)),
                        );
                    }
                }
                MeshOutput::Transmit { peer, bytes } => {
                    // A failed send means the channel is closing: its `close` event follows,
                    // and the multiplexer resends what was not acknowledged on the next link.
                    if let Some(c) = self.conns.get(&peer) {
                        let _ = c.send_lanes(&bytes);
                    }
                }
                MeshOutput::Event(ev) => self.events.push(ev),
            }
        };
        self.arm_timer(h, deadline);
    }

    fn arm_timer(&mut self, h: &MeshHandle, deadline: Millis) {
        if self.closed {
            return;
        }
        let weak = Rc::downgrade(h);
        self.timer.arm_at(&self.global, deadline, move || {
            Box::new(move || {
                if let Some(h) = weak.upgrade() {
                    on_timer(&h);
                }
            })
        });
    }

    fn stop_timers(&mut self) {
        self.timer.cancel(&self.global);
    }
}

impl rtc::Host for State {
    fn is_current(&self, peer: &str, id: u64) -> bool {
        State::is_current(self, peer, id)
    }

    fn now(&self) -> Millis {
        State::now(self)
    }

    fn mesh_mut(&mut self) -> &mut Mesh {
        &mut self.mesh
    }

    fn conn(&self, peer: &str) -> Option<&rtc::Conn> {
        self.conns.get(peer)
    }

    fn conn_mut(&mut self, peer: &str) -> Option<&mut rtc::Conn> {
        self.conns.get_mut(peer)
    }

    fn error_event(&mut self, peer: Option<&str>, code: ErrorCode, message: String) {
        State::error_event(self, peer, code, message);
    }

    fn bitrate(&mut self, peer: &str, bytes: f64, at: f64) -> f64 {
        State::bitrate(self, peer, bytes, at)
    }

    fn pump(h: &MeshHandle) {
        pump(h);
    }
}

impl Drop for State {
    fn drop(&mut self) {
        // Pending timeouts would call dropped closures.
        self.stop_timers();
    }
}

/// Runs `f` on the core mesh (a mutator, with `now`), then pumps.
pub(crate) fn with_mesh<R>(h: &MeshHandle, f: impl FnOnce(&mut Mesh, Millis) -> R) -> R {
    let r = {
        let mut s = h.borrow_mut();
        let now = s.now();
        f(&mut s.mesh, now)
    };
    pump(h);
    r
}

/// Drains the core, sends signals through the client and dispatches events (see the module
/// docs). Call after every input.
pub(crate) fn pump(h: &MeshHandle) {
    loop {
        let (signals, pings, client, at) = {
            let mut s = h.borrow_mut();
            s.drain(h);
            (
                std::mem::take(&mut s.signals),
                std::mem::take(&mut s.pings),
                s.client.clone(),
                s.now_precise(),
            )
        };
        if signals.is_empty() && pings == 0 {
            break;
        }
        if pings > 0 {
            // Refused (false) while the socket is not open: nothing to probe then.
            let _ = client_driver::with_client(&client, |c| c.ping(at, None));
        }
        for m in signals {
            let to = m.to.clone();
            if let Err((code, message)) = send_signal(&client, m) {
                h.borrow_mut()
                    .error_event(Some(&to), code, format!("signal to {to}: {message}"));
            }
        }
    }
    runtime::dispatch(h, |s| &mut s.events, |ev| dispatch(h, &ev));
}

/// A signal through the server: Messaging lane, routed to `to`.
fn send_signal(client: &ClientHandle, m: SignalMessage) -> Result<(), (ErrorCode, String)> {
    let to = m
        .to
        .parse()
        .map_err(|e: crate::core::frame::FrameError| (ErrorCode::InvalidArgument, e.to_string()))?;
    let value = serde_json::to_value(&m).map_err(|e| (ErrorCode::Internal, e.to_string()))?;
    client_driver::with_client(client, |c| c.send(Lane::Messaging, value, Some(to)))
        .map_err(|e| (e.code(), e.to_string()))
}

/// Registers an app callback; returns the JS unsubscribe function (idempotent).
pub(crate) fn subscribe(h: &MeshHandle, topic: Topic, f: Function) -> JsValue {
    runtime::subscribe(h, |s| &mut s.callbacks, topic, f)
}

/// `mesh.close()`.
pub(crate) fn close(h: &MeshHandle) {
    {
        let mut s = h.borrow_mut();
        if s.closed {
            return;
        }
        s.mesh.close();
    }
    pump(h);
    let (client, listener) = {
        let mut s = h.borrow_mut();
        s.closed = true;
        s.stop_timers();
        s.timer.release();
        s.conns.clear();
        if let Some(f) = s.pagehide.take() {
            let target: web_sys::EventTarget = js_sys::global().unchecked_into();
            let _ = target.remove_event_listener_with_callback("pagehide", f.unchecked_ref());
        }
        (s.client.clone(), s.listener.take())
    };
    if let Some(id) = listener {
        client_driver::remove_listener(&client, id);
    }
}

/// Closes the mesh when the page goes away (module docs).
fn listen_pagehide(h: &MeshHandle) {
    let weak = Rc::downgrade(h);
    // One-shot: it frees itself when called; removed unused on close (a few bytes leak then).
    let f = Closure::once_into_js(move || {
        if let Some(h) = weak.upgrade() {
            close(&h);
        }
    });
    let target: web_sys::EventTarget = js_sys::global().unchecked_into();
    if target
        .add_event_listener_with_callback("pagehide", f.unchecked_ref())
        .is_ok()
    {
        h.borrow_mut().pagehide = Some(f);
    }
}

/// What `client.peerMesh` does, for Rust callers (the music room's Tier 2): the mesh's handle once
/// joined. Errors: `invalid_argument` (options), the join's error.
pub(crate) async fn open(
    client: &ClientHandle,
    room: String,
    options: &JsValue,
) -> Result<MeshHandle, JsValue> {
    open_scoped(client, room, None, options).await
}

/// The mesh of an accepted call (PROTOCOL.md §13.16): links this session with `peer` (the
/// other party's member id) only, signaling on the Messaging lane without a room (the server
/// allows the call's two parties to address each other). `room` reads `call:<callId>`.
/// Errors: `invalid_argument` (options).
pub(crate) async fn open_call(
    client: &ClientHandle,
    call_id: &str,
    peer: String,
    options: &JsValue,
) -> Result<MeshHandle, JsValue> {
    open_scoped(client, format!("call:{call_id}"), Some(peer), options).await
}

/// [`open`] (`call_peer` `None`: join `room`) or [`open_call`].
async fn open_scoped(
    client: &ClientHandle,
    room: String,
    call_peer: Option<String>,
    options: &JsValue,
) -> Result<MeshHandle, JsValue> {
    let opts = Options::parse(options)?;
    let global = Global::get()?;
    let client = client.clone();
    {
        let (me, base, bearer) = {
            let c = client.borrow();
            let bearer = c.client().session_token().map(|t| t.expose().to_owned());
            (
                c.client().session_id().to_string(),
                c.base().to_owned(),
                bearer,
            )
        };
        let rtc_config = match opts.rtc_configuration {
            Some(c) => c,
            None => fetch_rtc_config(&base, &me, bearer.as_deref()).await,
        };
        let mut cfg = MeshConfig::new(me, global::random_u64()?);
        cfg.controller = opts.controller;
        cfg.stats_interval_ms = opts.stats_interval_ms;
        let server_up = client.borrow().client().state() == ConnectionState::Open;
        let mut mesh = Mesh::new(cfg);
        mesh.handle_server(server_up, Millis::from_u64(global.now_ms()));
        let h: MeshHandle = Rc::new(RefCell::new(State {
            mesh,
            room: room.clone(),
            call: call_peer.is_some(),
            client: client.clone(),
            global,
            rtc_config,
            conns: HashMap::new(),
            conn_seq: 0,
            timer: Timer::default(),
            sent: HashMap::new(),
            callbacks: Callbacks::default(),
            events: Queue::default(),
            signals: Vec::new(),
            pings: 0,
            listener: None,
            closed: false,
            pagehide: None,
        }));
        let weak = Rc::downgrade(&h);
        let id = client_driver::add_listener(
            &client,
            Rc::new(move |ev: &Event| {
                if let Some(h) = weak.upgrade() {
                    on_client_event(&h, ev);
                }
            }),
        );
        h.borrow_mut().listener = Some(id);
        listen_pagehide(&h);
        if let Some(peer) = call_peer {
            let me = h.borrow().me().to_owned();
            with_mesh(&h, |m, now| m.handle_members([me, peer], now));
            return Ok(h);
        }
        let joined = client_driver::join_room(&client, &room);
        if let Err(e) = JsFuture::from(joined).await {
            close(&h);
            return Err(e);
        }
        pump(&h);
        Ok(h)
    }
}

/// `GET {base}/api/webrtc/config?sessionId=<sid>` (seed 001 `getWebRTCConfig`) with
/// `Authorization: Bearer <sessionToken>` when the handshake gave one (a server with
/// `--turn-secret` outside `--room-access open` gives TURN credentials only to a member it
/// admitted, PROTOCOL.md §13.8), or `{iceServers: []}` if it fails or is not JSON.
pub(crate) async fn fetch_rtc_config(base: &str, sid: &str, bearer: Option<&str>) -> JsValue {
    let fallback = || {
        let o = js_sys::Object::new();
        let _ = Reflect::set(&o, &"iceServers".into(), &js_sys::Array::new());
        JsValue::from(o)
    };
    let url = format!("{base}/api/webrtc/config?sessionId={sid}");
    let init = web_sys::RequestInit::new();
    if let Some(token) = bearer {
        if let Ok(headers) = web_sys::Headers::new() {
            let _ = headers.set("Authorization", &format!("Bearer {token}"));
            init.set_headers(&headers);
        }
    }
    let Ok(p) = global::fetch(&JsValue::from_str(&url), &init) else {
        return fallback();
    };
    let Ok(resp) = JsFuture::from(Promise::from(p)).await else {
        return fallback();
    };
    let Ok(resp) = resp.dyn_into::<web_sys::Response>() else {
        return fallback();
    };
    if !resp.ok() {
        return fallback();
    }
    let Ok(json) = resp.json() else {
        return fallback();
    };
    match JsFuture::from(json).await {
        Ok(v) if v.is_object() => v,
        _ => fallback(),
    }
}

/// `PeerMeshOptions`.
pub(crate) struct Options {
    pub(crate) rtc_configuration: Option<JsValue>,
    pub(crate) stats_interval_ms: u64,
    pub(crate) controller: Option<String>,
}

impl Options {
    /// Errors: `invalid_argument` for a field of the wrong type.
    pub(crate) fn parse(v: &JsValue) -> Result<Options, JsValue> {
        let mut o = Options {
            rtc_configuration: None,
            stats_interval_ms: STATS_INTERVAL_MS,
            controller: None,
        };
        if v.is_undefined() || v.is_null() {
            return Ok(o);
        }
        if !v.is_object() {
            return Err(error::invalid_argument("options must be an object"));
        }
        let get = |k: &str| Reflect::get(v, &JsValue::from_str(k)).unwrap_or(JsValue::UNDEFINED);
        let c = get("rtcConfiguration");
        if !c.is_undefined() {
            if !c.is_object() {
                return Err(error::invalid_argument(
                    "rtcConfiguration must be an object",
                ));
            }
            o.rtc_configuration = Some(c);
        }
        let s = get("statsIntervalMs");
        if !s.is_undefined() {
            match s.as_f64() {
                Some(ms) if ms.is_finite() && ms >= 0.0 => o.stats_interval_ms = ms as u64,
                _ => {
                    return Err(error::invalid_argument(
                        "statsIntervalMs must be a number ≥ 0",
                    ))
                }
            }
        }
        let c = get("controller");
        if !c.is_undefined() && !c.is_null() {
            o.controller = Some(
                c.as_string()
                    .ok_or_else(|| error::invalid_argument("controller must be a session id"))?,
            );
        }
        Ok(o)
    }
}

/// One event of the client (see [`client_driver::add_listener`]).
fn on_client_event(h: &MeshHandle, ev: &Event) {
    {
        let Ok(mut s) = h.try_borrow_mut() else {
            return;
        };
        if s.closed {
            return;
        }
        let now = s.now();
        let session = s.client.borrow().client().session_id().to_string();
        if session != s.me() {
            // A new session (the server restarted or forgot ours): the mesh takes the new id
            // and links again with the members of the rejoin (PROTOCOL.md §13.12).
            s.mesh.handle_new_id(session, now);
        }
        // A call's mesh has no room: another room's membership is not its own.
        let room = if s.call {
            String::new()
        } else {
            s.room.clone()
        };
        match ev {
            Event::Pong { rtt_ms, .. } => s.mesh.handle_server_pong(*rtt_ms, now),
            Event::StateChanged { state, .. } => {
                s.mesh.handle_server(*state == ConnectionState::Open, now);
            }
            Event::RoomJoined { room: r, members } if *r == room => {
                s.mesh
                    .handle_members(members.iter().map(ToString::to_string), now);
            }
            Event::PeerJoined {
                room: r,
                session_id,
            } if *r == room => s.mesh.handle_member_joined(session_id.to_string(), now),
            Event::PeerLeft {
                room: r,
                session_id,
            } if *r == room => s.mesh.handle_member_left(&session_id.to_string(), now),
            Event::Message(m) if m.lane == Lane::Messaging && is_signal(&m.value) => {
                match serde_json::from_value::<SignalMessage>(m.value.clone()) {
                    Ok(sig) => s.mesh.handle_server_signal(sig, now),
                    Err(e) => {
                        let from = m.from.map(|f| f.to_string());
                        s.error_event(
                            from.as_deref(),
                            ErrorCode::BadPayload,
                            format!("signaling message: {e}"),
                        );
                    }
                }
            }
            _ => return,
        }
    }
    pump(h);
}

/// A Messaging value shaped like a signal: `{type: offer|answer|ice|end, from, to, ...}`.
pub(crate) fn is_signal(v: &serde_json::Value) -> bool {
    matches!(
        v.get("type").and_then(|t| t.as_str()),
        Some("offer" | "answer" | "ice" | "end")
    ) && v.get("from").is_some()
        && v.get("to").is_some()
}

fn on_timer(h: &MeshHandle) {
    {
        let mut s = h.borrow_mut();
        s.timer.fired();
        let now = s.now();
        s.mesh.handle_timeout(now);
    }
    pump(h);
}

/// Hands one event to the app callbacks, no borrow held; a callback that throws is reported
/// on the console and does not stop the others.
fn dispatch(h: &MeshHandle, ev: &MeshEvent) {
    let (topic, js) = match ev {
        MeshEvent::Message { from, lane, value } => {
            let obj = convert::to_js(&JsMessage {
                from,
                lane: lane.id(),
            });
            let _ = Reflect::set(
                &obj,
                &JsValue::from_str("data"),
                &convert::value_to_js(value),
            );
            (Topic::Message, obj)
        }
        ev => match event_to_js(ev) {
            Some(js) => (Topic::Event, js),
            None => return,
        },
    };
    let callbacks = h.borrow().callbacks.of(topic);
    runtime::call_each(&callbacks, |id| h.borrow().callbacks.contains(id), &[js]);
}

#[derive(Serialize)]
struct JsMessage<'a> {
    from: &'a str,
    lane: u8,
}

/// `PeerMeshEvent`.
#[derive(Serialize)]
#[serde(
    tag = "type",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
enum JsEvent<'a> {
    PeerState {
        peer: &'a str,
        state: crate::core::p2p::mesh::LinkState,
    },
    Quality {
        peer: &'a str,
        quality: crate::core::p2p::quality::NetworkQuality,
        stats: &'a crate::core::p2p::quality::StatsData,
    },
    SignalRelayed {
        from: &'a str,
        to: &'a str,
    },
    Tier {
        from: crate::core::p2p::tier::Tier,
        to: crate::core::p2p::tier::Tier,
        reason: crate::core::p2p::tier::TierReason,
        at_ms: u64,
    },
    Drain {
        peer: &'a str,
        lane: u8,
    },
    Dropped {
        peer: &'a str,
        lane: u8,
        count: u64,
    },
    Discontinuity {
        peer: &'a str,
        lane: u8,
        expected_epoch: u32,
        expected_seq: u64,
        epoch: u32,
        seq: u64,
        reason: &'static str,
    },
    ClockPing {
        peer: &'a str,
        client_time: f64,
    },
    ClockPong {
        peer: &'a str,
        client_time: f64,
        server_time: f64,
    },
    Error {
        peer: Option<&'a str>,
        code: &'static str,
        message: &'a str,
    },
}

fn event_to_js(ev: &MeshEvent) -> Option<JsValue> {
    let js = match ev {
        MeshEvent::PeerState { peer, state } => JsEvent::PeerState {
            peer,
            state: *state,
        },
        MeshEvent::Quality {
            peer,
            stats,
            quality,
        } => JsEvent::Quality {
            peer,
            quality: *quality,
            stats,
        },
        MeshEvent::SignalRelayed { from, to } => JsEvent::SignalRelayed { from, to },
        MeshEvent::Tier {
            from,
            to,
            reason,
            at_ms,
        } => JsEvent::Tier {
            from: *from,
            to: *to,
            reason: *reason,
            at_ms: *at_ms,
        },
        MeshEvent::Drain { peer, lane } => JsEvent::Drain {
            peer,
            lane: lane.id(),
        },
        MeshEvent::Dropped { peer, lane, count } => JsEvent::Dropped {
            peer,
            lane: lane.id(),
            count: *count,
        },
        MeshEvent::Discontinuity {
            peer,
            discontinuity: d,
        } => JsEvent::Discontinuity {
            peer,
            lane: d.lane.id(),
            expected_epoch: d.expected_epoch,
            expected_seq: d.expected_seq,
            epoch: d.epoch,
            seq: d.seq,
            reason: match d.reason {
                DiscontinuityReason::HistoryLost => "history-lost",
                DiscontinuityReason::PeerRestarted => "peer-restarted",
                DiscontinuityReason::JoinedMidStream => "joined-mid-stream",
            },
        },
        MeshEvent::Clock {
            from,
            probe: ClockProbe::Ping { client_time },
        } => JsEvent::ClockPing {
            peer: from,
            client_time: *client_time,
        },
        MeshEvent::Clock {
            from,
            probe:
                ClockProbe::Pong {
                    client_time,
                    server_time,
                },
        } => JsEvent::ClockPong {
            peer: from,
            client_time: *client_time,
            server_time: *server_time,
        },
        MeshEvent::Error {
            peer,
            code,
            message,
        } => JsEvent::Error {
            peer: peer.as_deref(),
            code: code.as_str(),
            message,
        },
        _ => return None,
    };
    Some(convert::to_js(&js))
}
