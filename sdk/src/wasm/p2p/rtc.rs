//! The thin web-sys layer: one `RTCPeerConnection` with its two negotiated DataChannels
//! ([`Conn`]), the negotiation steps the core asks for ([`negotiate`]), and `getStats()` →
//! [`StatsData`] ([`sample_stats`]). Every handler is created once per connection (never per
//! message) and detached when the connection is dropped; every rejected Promise becomes a
//! core input (`handle_negotiation_failed`) or an `error` event with code `webrtc_failed`.

use crate::core::drive::Millis;
use crate::core::error::ErrorCode;
use crate::core::p2p::mesh::{
    Channel, Mesh, PeerConnectionState, CONTROL_CHANNEL_ID, CONTROL_CHANNEL_LABEL,
    CONTROL_MAX_RETRANSMITS, LANES_CHANNEL_ID, LANES_CHANNEL_LABEL, LANES_LOW_WATER_BYTES,
};
use crate::core::p2p::quality::StatsData;
use crate::core::p2p::signal::{NegotiationAction, SignalBody};
use crate::wasm::{error, runtime};
use js_sys::{Function, Promise, Reflect};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::{Rc, Weak};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    MessageEvent, RtcDataChannel, RtcDataChannelInit, RtcDataChannelType, RtcIceCandidateInit,
    RtcPeerConnection, RtcPeerConnectionIceEvent, RtcSdpType, RtcSessionDescriptionInit,
    RtcSignalingState,
};

type Handler = Closure<dyn FnMut(JsValue)>;

/// What this layer needs from the mesh driver that owns the connections (implemented by its
/// state): the dependency runs one way, driver → rtc.
pub(crate) trait Host: Sized + 'static {
    /// Whether connection `id` is still `peer`'s current one.
    fn is_current(&self, peer: &str, id: u64) -> bool;
    /// The driver's clock (the mesh's `now`).
    fn now(&self) -> Millis;
    /// The core mesh, to feed inputs.
    fn mesh_mut(&mut self) -> &mut Mesh;
    /// `peer`'s current connection.
    fn conn(&self, peer: &str) -> Option<&Conn>;
    /// `peer`'s current connection, mutably.
    fn conn_mut(&mut self, peer: &str) -> Option<&mut Conn>;
    /// Queues an `error` event for the app.
    fn error_event(&mut self, peer: Option<&str>, code: ErrorCode, message: String);
    /// Bitrate (bits/s) from `bytes` sent at `at` (ms) and `peer`'s previous sample.
    fn bitrate(&mut self, peer: &str, bytes: f64, at: f64) -> f64;
    /// Drains the core and dispatches; called with no borrow held, after every input.
    fn pump(h: &Rc<RefCell<Self>>);

    /// The current RTCPeerConnection of `peer`.
    fn conn_pc(&self, peer: &str) -> Option<RtcPeerConnection> {
        self.conn(peer).map(|c| c.pc.clone())
    }
}

/// One RTCPeerConnection to a peer, generation `id`.
pub(crate) struct Conn {
    /// Generation: events of a replaced connection are ignored.
    pub(crate) id: u64,
    pub(crate) pc: RtcPeerConnection,
    control: RtcDataChannel,
    lanes: RtcDataChannel,
    _handlers: Vec<Handler>,
    /// Negotiation steps not started yet: they run one at a time, in order (see
    /// [`negotiate`]).
    steps: VecDeque<NegotiationAction>,
    /// A task is running `steps`.
    negotiating: bool,
}

impl Conn {
    /// `new RTCPeerConnection(config)` with `p3-control` (negotiated id 0, ordered,
    /// maxRetransmits 3) and `p3-lanes` (negotiated id 1, ordered, reliable,
    /// `bufferedAmountLowThreshold` 64 KiB), handlers attached.
    ///
    /// Errors: what the constructor threw (a bad configuration).
    pub(crate) fn open<S: Host>(
        h: &Weak<RefCell<S>>,
        peer: &str,
        id: u64,
        config: &JsValue,
    ) -> Result<Conn, JsValue> {
        let pc = RtcPeerConnection::new_with_configuration(config.unchecked_ref())?;
        let init = RtcDataChannelInit::new();
        init.set_negotiated(true);
        init.set_ordered(true);
        init.set_id(CONTROL_CHANNEL_ID);
        init.set_max_retransmits(CONTROL_MAX_RETRANSMITS);
        let control = pc.create_data_channel_with_data_channel_dict(CONTROL_CHANNEL_LABEL, &init);
        let init = RtcDataChannelInit::new();
        init.set_negotiated(true);
        init.set_ordered(true);
        init.set_id(LANES_CHANNEL_ID);
        let lanes = pc.create_data_channel_with_data_channel_dict(LANES_CHANNEL_LABEL, &init);
        control.set_binary_type(RtcDataChannelType::Arraybuffer);
        lanes.set_binary_type(RtcDataChannelType::Arraybuffer);
        lanes.set_buffered_amount_low_threshold(LANES_LOW_WATER_BYTES as u32);

        let on = |f: fn(&mut S, &str, JsValue, Millis)| handler(h, peer, id, f);
        let handlers = vec![
            on(|s, p, _, now| s.mesh_mut().handle_negotiation_needed(p, now)),
            on(|s, p, ev, _| {
                let Some(c) = ev
                    .dyn_ref::<RtcPeerConnectionIceEvent>()
                    .and_then(RtcPeerConnectionIceEvent::candidate)
                else {
                    return;
                };
                let line = c.candidate();
                if !line.is_empty() {
                    s.mesh_mut()
                        .handle_local_ice(p, line, c.sdp_mid(), c.sdp_m_line_index());
                }
            }),
            on(|s, p, _, now| {
                let state = s
                    .conn_pc(p)
                    .and_then(|pc| Reflect::get(&pc, &"connectionState".into()).ok())
                    .and_then(|v| v.as_string());
                if let Some(st) = state.as_deref().and_then(PeerConnectionState::parse) {
                    s.mesh_mut().handle_peer_state(p, st, now);
                }
            }),
            on(|s, p, _, now| s.mesh_mut().handle_channel_open(p, Channel::Control, now)),
            on(|s, p, _, now| s.mesh_mut().handle_channel_closed(p, Channel::Control, now)),
            on(|s, p, ev, now| {
                if let Some(text) = ev
                    .dyn_ref::<MessageEvent>()
                    .and_then(|m| m.data().as_string())
                {
                    s.mesh_mut().handle_control(p, &text, now);
                } else {
                    s.error_event(
                        Some(p),
                        ErrorCode::BadControl,
                        "binary message on p3-control".into(),
                    );
                }
            }),
            on(|s, p, _, now| s.mesh_mut().handle_channel_open(p, Channel::Lanes, now)),
            on(|s, p, _, now| s.mesh_mut().handle_channel_closed(p, Channel::Lanes, now)),
            on(|s, p, ev, now| {
                let data = ev.dyn_ref::<MessageEvent>().map(MessageEvent::data);
                match data
                    .as_ref()
                    .and_then(|d| d.dyn_ref::<js_sys::ArrayBuffer>())
                {
                    Some(buf) => {
                        let bytes = js_sys::Uint8Array::new(buf).to_vec();
                        s.mesh_mut().handle_lane_input(p, &bytes, now);
                    }
                    None => s.error_event(
                        Some(p),
                        ErrorCode::BadFrame,
                        "text message on p3-lanes".into(),
                    ),
                }
            }),
            // `bufferedamountlow`: `drain` reports every `bufferedAmount` before polling.
            on(|_, _, _, _| {}),
        ];
        let f = |i: usize| -> Option<&Function> { Some(handlers[i].as_ref().unchecked_ref()) };
        pc.set_onnegotiationneeded(f(0));
        pc.set_onicecandidate(f(1));
        pc.set_onconnectionstatechange(f(2));
        control.set_onopen(f(3));
        control.set_onclose(f(4));
        control.set_onmessage(f(5));
        lanes.set_onopen(f(6));
        lanes.set_onclose(f(7));
        lanes.set_onmessage(f(8));
        lanes.set_onbufferedamountlow(f(9));
        Ok(Conn {
            id,
            pc,
            control,
            lanes,
            _handlers: handlers,
            steps: VecDeque::new(),
            negotiating: false,
        })
    }

    /// `p3-control.send(text)`.
    pub(crate) fn send_control(&self, text: &str) -> Result<(), JsValue> {
        self.control.send_with_str(text)
    }

    /// `p3-lanes.send(bytes)` (one binary message).
    pub(crate) fn send_lanes(&self, bytes: &[u8]) -> Result<(), JsValue> {
        self.lanes.send_with_u8_array(bytes)
    }

    /// `p3-lanes.bufferedAmount` (bytes).
    pub(crate) fn lanes_buffered(&self) -> u32 {
        self.lanes.buffered_amount()
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.pc.set_onnegotiationneeded(None);
        self.pc.set_onicecandidate(None);
        self.pc.set_onconnectionstatechange(None);
        for dc in [&self.control, &self.lanes] {
            dc.set_onopen(None);
            dc.set_onclose(None);
            dc.set_onmessage(None);
            dc.set_onbufferedamountlow(None);
            dc.close();
        }
        self.pc.close();
    }
}

/// A handler of connection `id` of `peer`: runs `f` under the borrow if the connection is
/// still current, then pumps.
fn handler<S: Host>(
    h: &Weak<RefCell<S>>,
    peer: &str,
    id: u64,
    f: fn(&mut S, &str, JsValue, Millis),
) -> Handler {
    let h = h.clone();
    let peer = peer.to_owned();
    Closure::<dyn FnMut(JsValue)>::new(move |ev: JsValue| {
        let Some(h) = h.upgrade() else { return };
        {
            let Ok(mut s) = h.try_borrow_mut() else {
                return;
            };
            if !s.is_current(&peer, id) {
                return;
            }
            let now = s.now();
            f(&mut s, &peer, ev, now);
        }
        S::pump(&h);
    })
}

/// What a negotiation step produced.
enum Step {
    /// Our offer is the local description.
    Offer(String),
    /// Our answer is the local description.
    Answer(String),
    /// No offer made: the connection was not `stable` when the step's turn came.
    OfferSuperseded,
    /// Nothing to report.
    Done,
}

/// Queues one negotiation step on `peer`'s connection `conn`. Steps run one at a time in
/// order (an implicit `setLocalDescription()` slipping between the `setRemoteDescription(offer)`
/// and `setLocalDescription()` of an answer would make the answer and lose it), each outcome
/// reported to the core before the next step starts.
pub(crate) fn negotiate<S: Host>(
    h: Weak<RefCell<S>>,
    peer: String,
    conn: &mut Conn,
    action: NegotiationAction,
) {
    conn.steps.push_back(action);
    if conn.negotiating {
        return;
    }
    conn.negotiating = true;
    let (id, pc) = (conn.id, conn.pc.clone());
    runtime::spawn(async move {
        loop {
            let next = {
                let Some(h) = h.upgrade() else { return };
                let mut s = h.borrow_mut();
                if !s.is_current(&peer, id) {
                    return;
                }
                let Some(c) = s.conn_mut(&peer) else { return };
                let next = c.steps.pop_front();
                c.negotiating = next.is_some();
                next
            };
            let Some(action) = next else { return };
            let outcome = step(&pc, action).await;
            let Some(h) = h.upgrade() else { return };
            {
                let mut s = h.borrow_mut();
                if !s.is_current(&peer, id) {
                    return;
                }
                let m = s.mesh_mut();
                match outcome {
                    Ok(Step::Offer(sdp)) => m.handle_local_description(&peer, true, sdp),
                    Ok(Step::Answer(sdp)) => m.handle_local_description(&peer, false, sdp),
                    Ok(Step::OfferSuperseded) => m.handle_offer_superseded(&peer),
                    Ok(Step::Done) => {}
                    Err((what, e)) => {
                        m.handle_negotiation_failed(&peer, what, &error::describe(&e))
                    }
                }
            }
            S::pump(&h);
        }
    });
}

async fn step(
    pc: &RtcPeerConnection,
    action: NegotiationAction,
) -> Result<Step, (&'static str, JsValue)> {
    match action {
        NegotiationAction::CreateOffer => {
            if pc.signaling_state() != RtcSignalingState::Stable {
                return Ok(Step::OfferSuperseded);
            }
            set_local(pc)
                .await
                .map_err(|e| ("setLocalDescription", e))?;
            Ok(match local(pc) {
                Some((RtcSdpType::Offer, sdp)) => Step::Offer(sdp),
                _ => Step::OfferSuperseded,
            })
        }
        NegotiationAction::AcceptOffer { sdp } => {
            set_remote(pc, RtcSdpType::Offer, &sdp)
                .await
                .map_err(|e| ("setRemoteDescription(offer)", e))?;
            set_local(pc)
                .await
                .map_err(|e| ("setLocalDescription", e))?;
            Ok(match local(pc) {
                Some((RtcSdpType::Answer, sdp)) => Step::Answer(sdp),
                _ => Step::Done,
            })
        }
        NegotiationAction::AcceptAnswer { sdp } => {
            set_remote(pc, RtcSdpType::Answer, &sdp)
                .await
                .map_err(|e| ("setRemoteDescription(answer)", e))?;
            Ok(Step::Done)
        }
        NegotiationAction::AddIce {
            body:
                SignalBody::Ice {
                    candidate,
                    sdp_mid,
                    sdp_m_line_index,
                },
            ignore_errors,
        } => {
            let init = RtcIceCandidateInit::new(&candidate);
            init.set_sdp_mid(sdp_mid.as_deref());
            init.set_sdp_m_line_index(sdp_m_line_index);
            let p = pc.add_ice_candidate_with_opt_rtc_ice_candidate_init(Some(&init));
            match JsFuture::from(p).await {
                Ok(_) => Ok(Step::Done),
                Err(_) if ignore_errors => Ok(Step::Done),
                Err(e) => Err(("addIceCandidate", e)),
            }
        }
        _ => Ok(Step::Done),
    }
}

/// `pc.setLocalDescription()` without arguments (implicit offer or answer; web-sys only
/// binds the form with a description).
async fn set_local(pc: &RtcPeerConnection) -> Result<JsValue, JsValue> {
    let f: Function = Reflect::get(pc, &"setLocalDescription".into())?.dyn_into()?;
    let p: Promise = f.call0(pc)?.dyn_into()?;
    JsFuture::from(p).await
}

async fn set_remote(
    pc: &RtcPeerConnection,
    kind: RtcSdpType,
    sdp: &str,
) -> Result<JsValue, JsValue> {
    let desc = RtcSessionDescriptionInit::new(kind);
    desc.set_sdp(sdp);
    JsFuture::from(pc.set_remote_description(&desc)).await
}

fn local(pc: &RtcPeerConnection) -> Option<(RtcSdpType, String)> {
    pc.local_description().map(|d| (d.type_(), d.sdp()))
}

/// `getStats()` of `pc` → [`StatsData`] (rtt from the selected candidate pair's
/// `currentRoundTripTime`, bitrate from its `bytesSent`; jitter, loss and codec are RTP
/// figures, 0 / empty on data-only links) → `handle_stats`. A rejection is an `error`
/// event (`webrtc_failed`).
pub(crate) fn sample_stats<S: Host>(
    h: Weak<RefCell<S>>,
    peer: String,
    id: u64,
    pc: RtcPeerConnection,
    at: f64,
) {
    runtime::spawn(async move {
        let report = JsFuture::from(pc.get_stats()).await;
        let ice_state = Reflect::get(&pc, &"iceConnectionState".into())
            .ok()
            .and_then(|v| v.as_string())
            .unwrap_or_default();
        let Some(h) = h.upgrade() else { return };
        report_stats(&h, &peer, id, report, ice_state, at);
        S::pump(&h);
    });
}

fn report_stats<S: Host>(
    h: &Rc<RefCell<S>>,
    peer: &str,
    id: u64,
    report: Result<JsValue, JsValue>,
    ice_state: String,
    at: f64,
) {
    let mut s = h.borrow_mut();
    if !s.is_current(peer, id) {
        return;
    }
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            s.error_event(
                Some(peer),
                ErrorCode::WebrtcFailed,
                format!("getStats: {}", error::describe(&e)),
            );
            return;
        }
    };
    let pair = selected_pair(&report);
    let num = |o: &JsValue, k: &str| {
        Reflect::get(o, &JsValue::from_str(k))
            .ok()
            .and_then(|v| v.as_f64())
    };
    let rtt = pair
        .as_ref()
        .and_then(|p| num(p, "currentRoundTripTime"))
        .map_or(f64::NAN, |s| s * 1000.0);
    let bytes = pair
        .as_ref()
        .and_then(|p| num(p, "bytesSent"))
        .unwrap_or(0.0);
    let bitrate = s.bitrate(peer, bytes, at);
    let stats = StatsData {
        rtt,
        jitter: 0.0,
        packet_loss: 0.0,
        bitrate,
        codec: String::new(),
        ice_state,
        timestamp: at,
    };
    let now = s.now();
    s.mesh_mut().handle_stats(peer, stats, now);
}

/// The selected ICE candidate pair of a stats report: the `transport`'s
/// `selectedCandidatePairId`, else a nominated `succeeded` pair.
pub(crate) fn selected_pair(report: &JsValue) -> Option<JsValue> {
    let get = |o: &JsValue, k: &str| Reflect::get(o, &JsValue::from_str(k)).ok();
    let text = |o: &JsValue, k: &str| get(o, k).and_then(|v| v.as_string());
    let mut stats = Vec::new();
    if let Ok(Some(iter)) = js_sys::try_iter(report) {
        for entry in iter.flatten() {
            if let Some(v) = get(&entry, "1") {
                stats.push(v);
            }
        }
    }
    let selected = stats
        .iter()
        .filter(|s| text(s, "type").as_deref() == Some("transport"))
        .find_map(|t| text(t, "selectedCandidatePairId"));
    let pairs = || {
        stats
            .iter()
            .filter(|s| text(s, "type").as_deref() == Some("candidate-pair"))
    };
    if let Some(id) = selected {
        if let Some(p) = pairs().find(|p| text(p, "id").as_deref() == Some(&id)) {
            return Some(p.clone());
        }
    }
    pairs()
        .find(|p| {
            get(p, "nominated").and_then(|v| v.as_bool()) == Some(true)
                && text(p, "state").as_deref() == Some("succeeded")
        })
        .cloned()
}
