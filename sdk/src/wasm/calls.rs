//! Calls addressed to an identity in the browser (PROTOCOL.md §13.16; wire types in
//! [`crate::core::call`]): `client.call(identity)` rings it through `POST
//! /api/nexus/calls/initiate` and resolves with a [`Call`] once accepted; the callee's
//! `onEvent` gets `{type: 'incoming-call', callId, from, fromMember, expiresInMs, accept(),
//! decline()}`. An accepted call carries a `PeerMesh` linking exactly the two parties: its
//! RTCPeerConnection and DataChannels are negotiated by the existing mesh code
//! ([`crate::wasm::p2p`]), offer/answer/ICE on the Messaging lane addressed to the other
//! party's member id.
//!
//! Call messages (`call`, `call-accepted`, `call-declined`, `call-ended`) still reach
//! `onMessage(2, ..)` callbacks as ordinary Messaging-lane messages.

use crate::core::auth::Identity;
use crate::core::call::{AcceptResponse, CallMessage, EndReason, InitiateResponse, HEADER_SESSION};
use crate::core::error::ErrorCode;
use crate::core::lane::Lane;
use crate::core::p2p::signal::SignalMessage;
use crate::wasm::driver::{self, Handle, Resolver};
use crate::wasm::p2p::{self, MeshHandle, PeerMesh};
use crate::wasm::{convert, error, http};
use js_sys::{Object, Promise, Reflect};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

/// Call messages kept while `call()` waits for the initiate answer (a `call-accepted` can
/// arrive before it); more are dropped.
const EARLY_MAX: usize = 16;

/// An accepted call: the other party and the `PeerMesh` that links the two (one peer). Keep
/// a reference while the call lasts and call `hangUp()` when done.
#[wasm_bindgen]
pub struct Call {
    client: Handle,
    call_id: String,
    peer: String,
    remote: Identity,
    mesh: MeshHandle,
}

#[wasm_bindgen]
impl Call {
    /// The call's id.
    #[wasm_bindgen(getter, js_name = callId)]
    pub fn call_id(&self) -> String {
        self.call_id.clone()
    }

    /// The other party's member id (the mesh's one peer).
    #[wasm_bindgen(getter)]
    pub fn peer(&self) -> String {
        self.peer.clone()
    }

    /// The other party's verified identity.
    #[wasm_bindgen(getter, unchecked_return_type = "Identity")]
    pub fn remote(&self) -> JsValue {
        convert::to_js(&self.remote)
    }

    /// The DataChannel link to the other party: `mesh.send(lane, value)`,
    /// `mesh.onMessage(cb)`, `mesh.onEvent(cb)` (`peer-state` `connected` once the
    /// DataChannels are open).
    #[wasm_bindgen(getter)]
    pub fn mesh(&self) -> PeerMesh {
        PeerMesh::from_handle(self.mesh.clone())
    }

    /// Ends the call (`POST /api/nexus/calls/{callId}/end`; the other party gets
    /// `call-ended hangup`) and closes the link. Resolves when the server answered; rejects
    /// with the server's code (`call_unknown` if it had already ended: the link is closed
    /// anyway).
    #[wasm_bindgen(js_name = hangUp, unchecked_return_type = "Promise<void>")]
    pub fn hang_up(&self) -> Promise {
        p2p::close_mesh(&self.mesh);
        let client = self.client.clone();
        let path = format!("/api/nexus/calls/{}/end", self.call_id);
        wasm_bindgen_futures::future_to_promise(async move {
            post(&client, &path, "{}").await?;
            Ok(JsValue::UNDEFINED)
        })
    }
}

/// The base URL, this client's session id and its `Authorization: Bearer <sessionToken>`
/// value (`None` before a handshake gave a token).
fn session_of(client: &Handle) -> (String, String, Option<String>) {
    let c = client.borrow();
    (
        c.base().to_owned(),
        c.client().session_id().to_string(),
        c.client().session_token().map(http::bearer),
    )
}

/// POSTs `body` to `path` as this client's session: `P3-Session: <sessionId>` proven by
/// `Authorization: Bearer <sessionToken>` (PROTOCOL.md §13.16 "Acting session").
async fn post(client: &Handle, path: &str, body: &str) -> Result<String, JsValue> {
    let (base, sid, bearer) = session_of(client);
    let mut headers = vec![(HEADER_SESSION, sid.as_str())];
    if let Some(b) = &bearer {
        headers.push(("Authorization", b.as_str()));
    }
    http::post_api(&base, path, body, &headers).await
}

/// A call message on the Messaging lane, if `ev` is one.
fn call_message(ev: &crate::core::client::Event) -> Option<CallMessage> {
    match ev {
        crate::core::client::Event::Message(m) if m.lane == Lane::Messaging && m.from.is_none() => {
            CallMessage::parse(&m.value)
        }
        _ => None,
    }
}

/// Signaling messages that arrive before the call's mesh listens (the other party may offer
/// as soon as it knows of the accept), replayed into the mesh once it exists. At most
/// [`EARLY_MAX`] × 4 are kept.
struct EarlySignals {
    listener: u32,
    signals: Rc<RefCell<Vec<SignalMessage>>>,
}

impl EarlySignals {
    /// Starts keeping every signaling message `client` receives.
    fn start(client: &Handle) -> EarlySignals {
        let signals: Rc<RefCell<Vec<SignalMessage>>> = Rc::default();
        let kept = signals.clone();
        let listener = driver::add_listener(
            client,
            Rc::new(move |ev: &crate::core::client::Event| {
                let crate::core::client::Event::Message(m) = ev else {
                    return;
                };
                if m.lane != Lane::Messaging || !p2p::is_signal(&m.value) {
                    return;
                }
                let mut kept = kept.borrow_mut();
                if kept.len() < EARLY_MAX * 4 {
                    if let Ok(sig) = serde_json::from_value::<SignalMessage>(m.value.clone()) {
                        kept.push(sig);
                    }
                }
            }),
        );
        EarlySignals { listener, signals }
    }

    /// Stops keeping them (the mesh listens from now on: call right before opening it).
    fn stop(&self, client: &Handle) {
        driver::remove_listener(client, self.listener);
    }

    /// Hands the ones from `peer` to `mesh`.
    fn replay(self, mesh: &MeshHandle, peer: &str) {
        for sig in self.signals.take() {
            if sig.from == peer {
                p2p::with_mesh(mesh, |m, now| m.handle_server_signal(sig, now));
            }
        }
    }
}

/// `options` with `rtcConfiguration` filled in (from `GET /api/webrtc/config`) when absent, so
/// that opening the mesh awaits nothing before it listens.
async fn with_rtc_config(client: &Handle, options: JsValue) -> Result<JsValue, JsValue> {
    if !options.is_undefined() && !options.is_null() && !options.is_object() {
        return Err(error::invalid_argument("options must be an object"));
    }
    let given = if options.is_object() {
        Reflect::get(&options, &JsValue::from_str("rtcConfiguration"))?
    } else {
        JsValue::UNDEFINED
    };
    if !given.is_undefined() {
        return Ok(options);
    }
    let (base, sid, _) = session_of(client);
    let token = client
        .borrow()
        .client()
        .session_token()
        .map(|t| t.expose().to_owned());
    let config = p2p::fetch_rtc_config(&base, &sid, token.as_deref()).await;
    let out = Object::new();
    if options.is_object() {
        Object::assign(&out, options.unchecked_ref());
    }
    Reflect::set(&out, &JsValue::from_str("rtcConfiguration"), &config)?;
    Ok(out.into())
}

/// What `call()` waits for: the outcome of its call, once the id is known.
#[derive(Default)]
struct Waiter {
    id: Option<String>,
    early: Vec<CallMessage>,
    resolver: Option<Resolver>,
}

impl Waiter {
    /// Settles with `m` if it is this call's outcome; `true` when settled.
    fn offer(&mut self, m: CallMessage) -> bool {
        let Some(id) = &self.id else {
            if self.early.len() < EARLY_MAX {
                self.early.push(m);
            }
            return false;
        };
        if m.call_id() != id || matches!(m, CallMessage::Call { .. }) {
            return false;
        }
        if let Some(r) = self.resolver.take() {
            r.resolve(&convert::to_js(&m));
        }
        true
    }
}

/// `client.call(identity, options)` (see [`crate::wasm::client::P3Client::call`]).
pub(crate) fn call(client: &Handle, to: JsValue, options: JsValue) -> Promise {
    let client = client.clone();
    wasm_bindgen_futures::future_to_promise(async move {
        driver::require_lanes(&client, &[Lane::Messaging])?;
        let to = to
            .as_string()
            .ok_or_else(|| error::invalid_argument("call(identity): identity must be a string"))?;
        let options = with_rtc_config(&client, options).await?;
        let early = EarlySignals::start(&client);
        let (outcome, resolver) = Resolver::new();
        let waiter = Rc::new(RefCell::new(Waiter {
            resolver: Some(resolver),
            ..Waiter::default()
        }));
        let w = waiter.clone();
        let listener = driver::add_listener(
            &client,
            Rc::new(move |ev: &crate::core::client::Event| {
                if let Some(m) = call_message(ev) {
                    w.borrow_mut().offer(m);
                }
            }),
        );
        let body = serde_json::json!({ "to": to }).to_string();
        let rung = post(&client, "/api/nexus/calls/initiate", &body).await;
        let rung = match rung.and_then(|text| {
            serde_json::from_str::<InitiateResponse>(&text)
                .map_err(|e| error::coded(ErrorCode::BadRequest, &format!("initiate answer: {e}")))
        }) {
            Ok(r) => r,
            Err(e) => {
                driver::remove_listener(&client, listener);
                early.stop(&client);
                return Err(e);
            }
        };
        {
            let mut w = waiter.borrow_mut();
            w.id = Some(rung.call_id.clone());
            for m in std::mem::take(&mut w.early) {
                if w.offer(m) {
                    break;
                }
            }
        }
        let settled = JsFuture::from(outcome).await;
        driver::remove_listener(&client, listener);
        early.stop(&client);
        let m: CallMessage = serde_wasm_bindgen::from_value(settled?)
            .map_err(|e| error::coded(ErrorCode::Internal, &e.to_string()))?;
        match m {
            CallMessage::CallAccepted { member, by, .. } => {
                let peer = member.to_string();
                let mesh = p2p::open_call(&client, &rung.call_id, peer.clone(), &options).await?;
                early.replay(&mesh, &peer);
                Ok(Call {
                    client,
                    call_id: rung.call_id,
                    peer,
                    remote: by,
                    mesh,
                }
                .into())
            }
            CallMessage::CallDeclined { .. } => Err(error::coded(
                ErrorCode::CallDeclined,
                &format!("call to {to} declined"),
            )),
            CallMessage::CallEnded { reason, .. } => Err(error::coded(
                ErrorCode::CallEnded,
                &format!(
                    "call to {to} ended before it was accepted ({})",
                    match reason {
                        EndReason::Expired => "unanswered",
                        EndReason::Hangup => "cancelled",
                        EndReason::AnsweredElsewhere => "answered elsewhere",
                        EndReason::Gone => "the callee went away",
                    }
                ),
            )),
            CallMessage::Call { .. } => Err(error::coded(ErrorCode::Internal, "unexpected call")),
        }
    })
}

/// Listens for `call` messages on `client` and hands each to the `onEvent` callbacks as an
/// `incoming-call` event with `accept(options?)` (→ `Promise<Call>`) and `decline()` (→
/// `Promise<void>`). Installed once per client by `P3Client.connect`.
pub(crate) fn listen(client: &Handle) {
    let weak = Rc::downgrade(client);
    driver::add_listener(
        client,
        Rc::new(move |ev: &crate::core::client::Event| {
            let Some(CallMessage::Call {
                call_id,
                from,
                from_member,
                expires_in_ms,
            }) = call_message(ev)
            else {
                return;
            };
            let Some(client) = weak.upgrade() else {
                return;
            };
            let event = Object::new();
            let set = |k: &str, v: JsValue| {
                let _ = Reflect::set(&event, &JsValue::from_str(k), &v);
            };
            set("type", JsValue::from_str("incoming-call"));
            set("callId", JsValue::from_str(&call_id));
            set("from", convert::to_js(&from));
            set("fromMember", JsValue::from_str(&from_member.to_string()));
            set("expiresInMs", JsValue::from_f64(expires_in_ms as f64));
            let (c, id) = (client.clone(), call_id.clone());
            let accept = Closure::<dyn Fn(JsValue) -> Promise>::new(move |options: JsValue| {
                accept_call(&c, id.clone(), options)
            });
            set("accept", accept.into_js_value());
            let (c, id) = (client.clone(), call_id);
            let decline = Closure::<dyn Fn() -> Promise>::new(move || {
                let (c, path) = (c.clone(), format!("/api/nexus/calls/{id}/decline"));
                wasm_bindgen_futures::future_to_promise(async move {
                    post(&c, &path, "{}").await?;
                    Ok(JsValue::UNDEFINED)
                })
            });
            set("decline", decline.into_js_value());
            driver::emit_event(&client, &event);
        }),
    );
}

/// `incomingCall.accept(options)`: `POST .../accept`, then the call's mesh.
fn accept_call(client: &Handle, call_id: String, options: JsValue) -> Promise {
    let client = client.clone();
    wasm_bindgen_futures::future_to_promise(async move {
        let options = with_rtc_config(&client, options).await?;
        let path = format!("/api/nexus/calls/{call_id}/accept");
        let early = EarlySignals::start(&client);
        let answered = post(&client, &path, "{}").await;
        early.stop(&client);
        let a: AcceptResponse = serde_json::from_str(&answered?)
            .map_err(|e| error::coded(ErrorCode::BadRequest, &format!("accept answer: {e}")))?;
        let peer = a.peer.to_string();
        let mesh = p2p::open_call(&client, &a.call_id, peer.clone(), &options).await?;
        early.replay(&mesh, &peer);
        Ok(Call {
            client,
            call_id: a.call_id,
            peer,
            remote: a.from,
            mesh,
        }
        .into())
    })
}
