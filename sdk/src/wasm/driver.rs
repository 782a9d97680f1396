//! The driver: runs one [`Client`] (the sans-IO core) on the browser's clock, timers,
//! `fetch` and `WebSocket`, following the drive contract in [`crate::core::client`]:
//!
//! - every input (socket open/message/close, timer, handshake result, an API call) is fed to
//!   the core, then [`pump`] drains [`Client::poll_output`] until [`Output::Timeout`]:
//!   `Transmit` → `WebSocket.send`, `Action` → open/close a socket or re-handshake, `Event` →
//!   queued for the application, `Timeout` → one `setTimeout` armed for the earliest deadline;
//! - queued events are dispatched to JS callbacks **without** any `RefCell` borrow held, so a
//!   callback may call back into the client (`send`, `close`, ...). Events are dispatched in
//!   order by whichever [`pump`] is outermost; a nested one only queues.
//!
//! The shared state is an `Rc<RefCell<Inner>>` ([`Handle`]). While the connection is alive
//! (not `closed`) the socket's handlers and the timer hold strong handles, so an open client
//! keeps working even if the app drops its `P3Client` (like a `WebSocket` does); once closed
//! those are released and the state lives only as long as the `P3Client` object.
//!
//! Rust-side listeners ([`add_listener`], e.g. a music room) see every core event first, with
//! no borrow held, before the JS callbacks.
//!
//! The timer, the callback registry and the dispatch queue are the shared runtime's
//! ([`crate::wasm::runtime`]); tasks (re-handshakes, ticket mints) run on its `spawn`.

use crate::core::auth::Identity;
use crate::core::client::{Action, Client, ConnectionState, Event, Output};
use crate::core::close;
use crate::core::drive::Millis;
use crate::core::error::ErrorCode;
use crate::core::handshake::{with_ticket, HandshakeRequest, HandshakeResponse};
use crate::core::lane::Lane;
use crate::wasm::auth::AuthSource;
use crate::wasm::events::{self, JoinResult};
use crate::wasm::global::Global;
use crate::wasm::runtime::{self, Callbacks, Queue, Timer};
use crate::wasm::sse::{self, SseLink};
use crate::wasm::{convert, error, http};
use js_sys::{Function, Promise};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{BinaryType, CloseEvent, MessageEvent, WebSocket};

/// The shared driver state of one `P3Client`.
pub(crate) type Handle = Rc<RefCell<Inner>>;

pub(crate) use crate::wasm::runtime::Resolver;

/// A `joinRoom` waiting for the server's `joined`.
struct PendingJoin {
    room: String,
    resolver: Resolver,
}

/// The current WebSocket and the handlers attached to it.
struct Socket {
    ws: WebSocket,
    id: u64,
    _on_open: Closure<dyn FnMut()>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
}

impl Socket {
    /// Detaches every handler, so no event of this socket reaches the core again.
    fn detach(&self) {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        self.ws.set_onerror(None);
    }
}

/// Which callback list an entry is in.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Topic {
    /// `onStateChange`.
    State,
    /// `onEvent`.
    Event,
    /// `onMessage(lane, ..)`.
    Message(Lane),
}

/// A Rust-side event listener (see [`add_listener`]).
pub(crate) type Listener = Rc<dyn Fn(&Event)>;

/// Everything one `P3Client` owns. See the module docs.
pub(crate) struct Inner {
    client: Client,
    global: Global,
    /// Normalized server base URL (`http(s)://host[:port][/prefix]`).
    base: String,
    /// The handshake request, reused for re-handshakes ([`Action::Handshake`]), its `auth`
    /// replaced from `auth` each time.
    request: HandshakeRequest,
    /// Where each handshake's `auth` comes from (issue 12, PROTOCOL.md §3.1).
    auth: AuthSource,
    /// The identity the server verified in the latest handshake (`None`: none).
    identity: Option<Identity>,
    /// The latest handshake response, as the JS object `client.handshake` returns.
    handshake: JsValue,
    socket: Option<Socket>,
    sockets_opened: u64,
    /// The socket waiting for its ticket ([`Inner::open_socket`]), by number.
    pending_socket: Option<u64>,
    /// The one timer, armed for the core's earliest deadline.
    timer: Timer,
    callbacks: Callbacks<Topic>,
    joins: Vec<PendingJoin>,
    /// `P3Client.connect` waiting for the first `open` (or `closed`).
    connect: Option<Resolver>,
    /// Events drained from the core, not yet dispatched.
    events: Queue<Event>,
    /// Rust-side listeners, by id.
    listeners: Vec<(u32, Listener)>,
    /// SSE: the core asked for a stream; opened by [`pump`] once the borrow is released.
    open_sse: bool,
    /// Transport `sse` (PROTOCOL.md §14): the stream and POST queue that replace the socket.
    sse: Option<SseLink>,
}

impl Inner {
    /// The core client (getters).
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// The latest handshake response object.
    pub(crate) fn handshake(&self) -> JsValue {
        self.handshake.clone()
    }

    /// The identity the server verified in the latest handshake, if any (PROTOCOL.md §3.1).
    pub(crate) fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    /// The normalized server base URL (`http(s)://host[:port][/prefix]`).
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// The core's clock: `performance.now()` in whole ms.
    pub(crate) fn now(&self) -> Millis {
        Millis::from_u64(self.global.now_ms())
    }

    /// Drains the core's outputs, performing socket/timer I/O and queueing events. Calls no
    /// application code, so it may run under the `RefCell` borrow.
    fn drain(&mut self, h: &Handle) {
        // Paced lanes release their messages by the clock `poll_output` takes.
        let now = self.now();
        // The multiplexer writes while the socket's buffer is under its high-water mark.
        if let Some(s) = &self.socket {
            self.client
                .handle_transport_buffered(s.ws.buffered_amount() as usize);
        }
        loop {
            match self.client.poll_output(now) {
                Output::Transmit(bytes) if self.sse.is_some() => {
                    if let Some(ev) = self.sse.as_mut().and_then(|l| l.transmit(&bytes)) {
                        self.events.push(ev);
                    }
                }
                Output::Transmit(bytes) => self.transmit(&bytes),
                Output::Action(Action::OpenSocket { .. }) if self.sse.is_some() => {
                    self.open_sse = true;
                }
                Output::Action(Action::OpenSocket { path }) => self.open_socket(h, &path),
                Output::Action(Action::CloseSocket) if self.sse.is_some() => {
                    if let Some(l) = self.sse.as_mut() {
                        l.close_stream();
                    }
                }
                Output::Action(Action::CloseSocket) => self.close_socket(),
                Output::Action(Action::Handshake) => rehandshake(
                    h,
                    self.base.clone(),
                    self.request.clone(),
                    self.auth.clone(),
                ),
                Output::Event(ev) => self.events.push(ev),
                Output::Timeout(deadline) => {
                    self.arm_timer(h, deadline);
                    return;
                }
            }
        }
    }

    fn transmit(&self, bytes: &[u8]) {
        // The core only transmits while the socket is open; if it is closing, the close event
        // that follows tells the core.
        if let Some(s) = &self.socket {
            let _ = s.ws.send_with_u8_array(bytes);
        }
    }

    /// [`Action::OpenSocket`]: opens the WebSocket with a ticket (`?ticket=`): the
    /// handshake's first one, else one minted now with the session token (an HTTP round trip
    /// first; the socket counts as current from now, so a close or a newer open meanwhile
    /// cancels it). A mint refused with 401 means the server forgot the session: reported to
    /// the core as close code 4404 (a new session, quietly, as before credentials existed);
    /// any other failure as 1006 (reconnect with backoff).
    fn open_socket(&mut self, h: &Handle, path: &str) {
        self.close_socket();
        self.sockets_opened += 1;
        let id = self.sockets_opened;
        let token = match self.client.take_ticket() {
            Some(ticket) => return self.open_socket_at(h, id, &with_ticket(path, &ticket)),
            None => match self.client.session_token() {
                // A server that checks no credentials.
                None => return self.open_socket_at(h, id, path),
                Some(token) => token.clone(),
            },
        };
        self.pending_socket = Some(id);
        let (h, base, sid, path) = (
            h.clone(),
            self.base.clone(),
            self.client.session_id(),
            path.to_owned(),
        );
        runtime::spawn(async move {
            let minted = http::mint_ticket(&base, sid, &token).await;
            {
                let mut inner = h.borrow_mut();
                if inner.pending_socket != Some(id) {
                    return;
                }
                inner.pending_socket = None;
                match minted {
                    Ok(ticket) => inner.open_socket_at(&h, id, &with_ticket(&path, &ticket)),
                    Err(failed) => {
                        let code = match failed {
                            http::MintFailed::Unauthorized => close::SESSION_NOT_FOUND,
                            http::MintFailed::Failed => close::ABNORMAL,
                        };
                        let now = inner.now();
                        inner.client.handle_socket_closed(code, now);
                    }
                }
            }
            pump(&h);
        });
    }

    /// Opens socket number `id` at `path` (with its ticket).
    fn open_socket_at(&mut self, h: &Handle, id: u64, path: &str) {
        let url = http::websocket_url(&self.base, path);
        let ws = match WebSocket::new(&url) {
            Ok(ws) => ws,
            Err(e) => {
                web_sys::console::warn_2(
                    &JsValue::from_str("p3-lanes: cannot open the session's WebSocket:"),
                    &e,
                );
                let now = self.now();
                self.client.handle_socket_closed(close::ABNORMAL, now);
                return;
            }
        };
        ws.set_binary_type(BinaryType::Arraybuffer);
        let on_open = {
            let h = h.clone();
            Closure::<dyn FnMut()>::new(move || on_socket_open(&h, id))
        };
        let on_message = {
            let h = h.clone();
            Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
                on_socket_message(&h, id, &ev)
            })
        };
        let on_close = {
            let h = h.clone();
            Closure::<dyn FnMut(CloseEvent)>::new(move |ev: CloseEvent| {
                on_socket_close(&h, id, ev.code())
            })
        };
        ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        // `error` is always followed by `close`, which carries what the core needs.
        self.socket = Some(Socket {
            ws,
            id,
            _on_open: on_open,
            _on_message: on_message,
            _on_close: on_close,
        });
    }

    fn close_socket(&mut self) {
        self.pending_socket = None;
        if let Some(s) = self.socket.take() {
            s.detach();
            let _ = s.ws.close_with_code(close::NORMAL);
        }
    }

    fn arm_timer(&mut self, h: &Handle, deadline: Millis) {
        if self.client.state() == ConnectionState::Closed {
            // Releases the handle the timer callback holds (see the module docs).
            self.timer.release();
        }
        let h = h.clone();
        self.timer.arm_at(&self.global, deadline, move || {
            Box::new(move || on_timer(&h))
        });
    }
}

impl sse::Host for Inner {
    fn client(&self) -> &Client {
        &self.client
    }

    fn client_mut(&mut self) -> &mut Client {
        &mut self.client
    }

    fn base(&self) -> &str {
        &self.base
    }

    fn now(&self) -> Millis {
        Inner::now(self)
    }

    fn sse_mut(&mut self) -> Option<&mut SseLink> {
        self.sse.as_mut()
    }

    fn push_event(&mut self, ev: Event) {
        self.events.push(ev);
    }

    fn pump(h: &Handle) {
        pump(h);
    }
}

/// Creates the driver for a client fresh from [`Client::new`] and starts it (the core's first
/// output opens the socket). The Promise resolves when the socket opens and rejects with
/// `connect_failed` if it closes first.
pub(crate) fn start(
    client: Client,
    global: Global,
    base: String,
    request: HandshakeRequest,
    auth: AuthSource,
    resp: &HandshakeResponse,
) -> (Handle, Promise) {
    let (opened, resolver) = Resolver::new();
    let h = Rc::new(RefCell::new(Inner {
        client,
        global,
        base,
        request,
        auth,
        identity: resp.identity.clone(),
        handshake: convert::to_js(resp),
        socket: None,
        sockets_opened: 0,
        pending_socket: None,
        timer: Timer::default(),
        callbacks: Callbacks::default(),
        joins: Vec::new(),
        connect: Some(resolver),
        events: Queue::default(),
        listeners: Vec::new(),
        open_sse: false,
        sse: (resp.transport == crate::core::sse::TRANSPORT_SSE).then(|| SseLink::new(resp)),
    }));
    pump(&h);
    (h, opened)
}

/// Drains the core and dispatches the resulting events (see the module docs). Call after
/// every input.
pub(crate) fn pump(h: &Handle) {
    {
        let mut inner = h.borrow_mut();
        inner.drain(h);
    }
    // SSE: open the stream the core asked for, and send what it transmitted.
    if std::mem::take(&mut h.borrow_mut().open_sse) {
        sse::open_stream(h);
        h.borrow_mut().drain(h);
    }
    if h.borrow().sse.is_some() {
        sse::kick(h);
    }
    runtime::dispatch(h, |i| &mut i.events, |ev| dispatch(h, ev));
}

/// Registers `f` under `topic`; returns the JS unsubscribe function (idempotent).
pub(crate) fn subscribe(h: &Handle, topic: Topic, f: Function) -> JsValue {
    runtime::subscribe(h, |i| &mut i.callbacks, topic, f)
}

/// Registers a Rust-side listener that sees every core event (in order, before the JS
/// callbacks, with no borrow held: it may call back into the client). Returns its id for
/// [`remove_listener`].
pub(crate) fn add_listener(h: &Handle, listener: Listener) -> u32 {
    let mut inner = h.borrow_mut();
    let id = inner.callbacks.next_id();
    inner.listeners.push((id, listener));
    id
}

/// Removes a listener added by [`add_listener`].
pub(crate) fn remove_listener(h: &Handle, id: u32) {
    h.borrow_mut().listeners.retain(|l| l.0 != id);
}

/// `joinRoom`: asks the core to join, and returns a Promise settled by the server's `joined`
/// (resolve with `JoinResult`) or by the client closing first (reject `closed`).
pub(crate) fn join_room(h: &Handle, room: &str) -> Promise {
    let promise = {
        let mut inner = h.borrow_mut();
        let now = inner.now();
        inner.client.handle_clock(now);
        if let Err(e) = inner.client.join_room(room) {
            return Promise::reject(&error::client_error(&e));
        }
        let (promise, resolver) = Resolver::new();
        inner.joins.push(PendingJoin {
            room: room.to_owned(),
            resolver,
        });
        promise
    };
    pump(h);
    promise
}

/// `Err(lane_not_negotiated)` naming the first of `lanes` this client did not negotiate: a
/// feature built on a lane (a music room on Control + Sync, a mesh's signaling on Messaging)
/// could never work without it, so it is refused at once rather than left waiting.
pub(crate) fn require_lanes(h: &Handle, lanes: &[Lane]) -> Result<(), JsValue> {
    let inner = h.borrow();
    match lanes.iter().find(|l| !inner.client.has_lane(**l)) {
        Some(lane) => Err(error::client_error(
            &crate::core::client::ClientError::LaneNotNegotiated(*lane),
        )),
        None => Ok(()),
    }
}

/// Runs `f` on the core (a mutator), then pumps.
pub(crate) fn with_client<R>(h: &Handle, f: impl FnOnce(&mut Client) -> R) -> R {
    let r = {
        let mut inner = h.borrow_mut();
        let now = inner.now();
        inner.client.handle_clock(now);
        f(&mut inner.client)
    };
    pump(h);
    r
}

fn is_current(h: &Handle, socket: u64) -> bool {
    h.borrow().socket.as_ref().is_some_and(|s| s.id == socket)
}

fn on_socket_open(h: &Handle, socket: u64) {
    if !is_current(h, socket) {
        return;
    }
    {
        let mut inner = h.borrow_mut();
        let now = inner.now();
        inner.client.handle_socket_open(now);
    }
    pump(h);
}

fn on_socket_message(h: &Handle, socket: u64, ev: &MessageEvent) {
    if !is_current(h, socket) {
        return;
    }
    let data = ev.data();
    let bytes = match data.dyn_ref::<js_sys::ArrayBuffer>() {
        Some(buf) => js_sys::Uint8Array::new(buf).to_vec(),
        // A text message is not a frame; the core reports it as `bad_frame`.
        None => data.as_string().unwrap_or_default().into_bytes(),
    };
    {
        let mut inner = h.borrow_mut();
        let now = inner.now();
        inner.client.handle_frame(&bytes, now);
    }
    pump(h);
}

fn on_socket_close(h: &Handle, socket: u64, code: u16) {
    if !is_current(h, socket) {
        return;
    }
    {
        let mut inner = h.borrow_mut();
        if let Some(s) = inner.socket.take() {
            s.detach();
        }
        let now = inner.now();
        inner.client.handle_socket_closed(code, now);
    }
    pump(h);
}

fn on_timer(h: &Handle) {
    {
        let mut inner = h.borrow_mut();
        inner.timer.fired();
        let now = inner.now();
        inner.client.handle_timeout(now);
    }
    pump(h);
}

/// [`Action::Handshake`]: POST the original request again with a fresh `auth` from `auth`
/// (the app's function called again, a device key signing a new nonce: nonces are
/// single-use), report the outcome to the core.
///
/// A refusal with `auth_invalid` (HTTP 401) is reported as an `error` event with that code.
/// With a static proof ([`AuthSource::Static`]) the same bytes would be refused again, so the
/// client closes instead of retrying; otherwise it retries with backoff, asking `auth` anew.
/// An `auth` function that throws is reported the same way (`error` event, then backoff),
/// except with `connect_failed` (the server is unreachable): backoff only.
fn rehandshake(h: &Handle, base: String, mut request: HandshakeRequest, auth: AuthSource) {
    let h = h.clone();
    runtime::spawn(async move {
        let result = match auth.resolve(&base).await {
            Ok(Some(a)) => {
                request.auth = Some(a);
                Ok(http::handshake(&base, &request).await)
            }
            // A device key that cannot sign now (nonce route unreachable): try again later
            // rather than come back as a stranger.
            Ok(None) if matches!(auth, AuthSource::Device) => Err(None),
            Ok(None) => {
                request.auth = None;
                Ok(http::handshake(&base, &request).await)
            }
            Err(thrown) => Err(Some(thrown)),
        };
        {
            let mut inner = h.borrow_mut();
            let now = inner.now();
            match result {
                Err(thrown) => {
                    // The server unreachable (e.g. the function's `siweMessage` could not get
                    // a nonce) is an outage like a failed handshake, not a sign-in problem.
                    let thrown = thrown.filter(|t| {
                        error::code_of(t).as_deref() != Some(ErrorCode::ConnectFailed.as_str())
                    });
                    if let Some(thrown) = thrown {
                        inner.events.push(auth_error_event(format!(
                            "re-handshake: {}",
                            error::describe(&thrown)
                        )));
                    }
                    inner.client.handle_handshake_failed(now);
                }
                Ok(Ok(resp)) => match inner.client.handle_handshake(&resp, now) {
                    Ok(()) if inner.client.session_id() == resp.session_id => {
                        inner.handshake = convert::to_js(&resp);
                        inner.identity = resp.identity.clone();
                        let lost = inner
                            .sse
                            .as_mut()
                            .map(|l| l.session_changed(&resp))
                            .unwrap_or_default();
                        inner.events.extend(lost);
                    }
                    Ok(()) => {}
                    Err(e) => web_sys::console::warn_1(&JsValue::from_str(&format!(
                        "p3-lanes: re-handshake: {e}"
                    ))),
                },
                Ok(Err(f)) => {
                    web_sys::console::warn_2(
                        &JsValue::from_str("p3-lanes: re-handshake failed:"),
                        &f.error,
                    );
                    let auth_invalid = f.status == 401
                        && error::code_of(&f.error).as_deref()
                            == Some(ErrorCode::AuthInvalid.as_str());
                    if auth_invalid && auth.is_static() {
                        // A static proof no longer verifies (a SIWE signature is single-use:
                        // `nonce_reused`; a token expired): sending it again cannot help.
                        let reason = js_sys::Reflect::get(&f.error, &"reason".into())
                            .ok()
                            .and_then(|r| r.as_string())
                            .unwrap_or_default();
                        inner.events.push(auth_error_event(format!(
                            "re-handshake refused ({reason}): {}; the static `auth` cannot \
                             sign in again: connect again with a fresh sign-in, or pass `auth` \
                             as a function",
                            error::describe(&f.error)
                        )));
                        inner
                            .client
                            .handle_handshake_refused("re-handshake refused: auth_invalid", now);
                    } else {
                        if f.status == 401 {
                            inner.events.push(auth_error_event(format!(
                                "re-handshake refused: {}",
                                error::describe(&f.error)
                            )));
                        }
                        if f.status == 429 {
                            inner
                                .client
                                .handle_handshake_rate_limited(f.retry_after_ms, now);
                        } else {
                            inner.client.handle_handshake_failed(now);
                        }
                    }
                }
            }
        }
        pump(&h);
    });
}

/// An `error` event with code `auth_invalid`.
fn auth_error_event(message: String) -> Event {
    Event::Error {
        code: ErrorCode::AuthInvalid,
        message,
        lane: None,
        seq: None,
        retry_after_ms: None,
        dropped: None,
    }
}

/// Hands one event to the Rust listeners, then to the application. Holds no borrow while
/// they run.
fn dispatch(h: &Handle, ev: Event) {
    let listeners: Vec<Listener> = h.borrow().listeners.iter().map(|l| l.1.clone()).collect();
    for l in listeners {
        l(&ev);
    }
    match ev {
        Event::StateChanged { state, reason } => {
            let (connect, joins, callbacks) = {
                let mut inner = h.borrow_mut();
                let connect = match state {
                    ConnectionState::Open | ConnectionState::Closed => inner.connect.take(),
                    _ => None,
                };
                let joins = if state == ConnectionState::Closed {
                    std::mem::take(&mut inner.joins)
                } else {
                    Vec::new()
                };
                (connect, joins, inner.callbacks.of(Topic::State))
            };
            let reason_text = reason.as_deref().unwrap_or("closed");
            if let Some(c) = connect {
                if state == ConnectionState::Open {
                    c.resolve(&JsValue::UNDEFINED);
                } else {
                    c.reject(&error::coded(ErrorCode::ConnectFailed, reason_text));
                }
            }
            for j in joins {
                j.resolver.reject(&error::coded(
                    ErrorCode::Closed,
                    &format!("joinRoom({:?}): {reason_text}", j.room),
                ));
            }
            let state = JsValue::from_str(state.as_str());
            let reason = reason.map_or(JsValue::NULL, |r| JsValue::from_str(&r));
            call_each(h, &callbacks, &[state, reason]);
        }
        Event::Message(m) => {
            let callbacks = h.borrow().callbacks.of(Topic::Message(m.lane));
            if !callbacks.is_empty() {
                call_each(h, &callbacks, &[events::message_to_js(&m)]);
            }
        }
        Event::JoinFailed {
            room,
            code,
            message,
        } => {
            // The `error` event came first; settle this room's `joinRoom` promises.
            let failed: Vec<PendingJoin> = {
                let mut inner = h.borrow_mut();
                let (done, rest) = std::mem::take(&mut inner.joins)
                    .into_iter()
                    .partition(|j| j.room == room);
                inner.joins = rest;
                done
            };
            for j in failed {
                j.resolver.reject(&error::coded(
                    code,
                    &format!("joinRoom({room:?}) refused: {message}"),
                ));
            }
        }
        ev => {
            if let Event::RoomJoined { room, members } = &ev {
                let settled: Vec<PendingJoin> = {
                    let mut inner = h.borrow_mut();
                    let (done, rest) = std::mem::take(&mut inner.joins)
                        .into_iter()
                        .partition(|j| &j.room == room);
                    inner.joins = rest;
                    done
                };
                if !settled.is_empty() {
                    let result = convert::to_js(&JoinResult { room, members });
                    for j in settled {
                        j.resolver.resolve(&result);
                    }
                }
            }
            let Some(js) = events::event_to_js(&ev) else {
                return;
            };
            let callbacks = h.borrow().callbacks.of(Topic::Event);
            call_each(h, &callbacks, &[js]);
        }
    }
}

/// Hands `event` (a `P3Event` built outside the core, e.g. `incoming-call`) to the `onEvent`
/// callbacks. Call with no borrow of `h` held.
pub(crate) fn emit_event(h: &Handle, event: &JsValue) {
    let callbacks = h.borrow().callbacks.of(Topic::Event);
    call_each(h, &callbacks, std::slice::from_ref(event));
}

/// Calls each callback still registered with `args` ([`runtime::call_each`]).
fn call_each(h: &Handle, callbacks: &[(u32, Function)], args: &[JsValue]) {
    runtime::call_each(callbacks, |id| h.borrow().callbacks.contains(id), args);
}
