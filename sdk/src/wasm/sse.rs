//! The SSE half of the driver (PROTOCOL.md §14): when the handshake chose transport `sse`,
//! lanes arrive on one `EventSource` and the core's frames leave as `fetch` POSTs. The core
//! does not know: it sees the stream as its socket (open, frames, closed) and transmits §5
//! frames as usual; [`crate::core::sse`] converts both ways and keeps delivery exactly once.
//!
//! - **Receiving.** One listener per granted lane (`lane-<id>`) and for `discontinuity`. Each
//!   event becomes a frame for the core ([`SseReceiver`]), or a `discontinuity` event for the
//!   app. A stream that ends after it opened is closed (the `EventSource`'s own retry would
//!   present its spent single-use ticket) and reopened after the server's `retry:` delay
//!   (handshake `sseRetryMs`) with a fresh ticket and the `lastEventId` query; the core does
//!   not notice (no loss, no duplicate). A stream refused before it opened (an HTTP error such
//!   as 401 or 404) makes the driver ask the session's status, to tell a lost session
//!   (reported as close code 4404: re-handshake) from anything else (1006: reconnect with
//!   backoff).
//! - **Sending.** POSTs go one at a time, in order (concurrent requests could be reordered),
//!   numbered per lane with `P3-Seq` ([`PostQueue`], PROTOCOL.md §14.6). A request without an
//!   answer (network error, or none within [`REQUEST_TIMEOUT_MS`]), a 502/503/504 (honouring
//!   `Retry-After`) or `seq_in_progress` is sent again with the same number after a bounded
//!   backoff, so the server delivers it once; after
//!   [`crate::core::sse::post::MAX_ATTEMPTS`] the app gets an `error`
//!   event with code `send_failed` (lane, seq) and the next message goes. `session_not_found`
//!   keeps the queue until the client has a new session; a `429` (`rate_limited`,
//!   `too_many_requests`) is reported (`error` event with `retryAfterMs`, `dropped: false`) and
//!   the same message goes again after the body's `retryAfterMs` (else `Retry-After`); any
//!   other refusal is reported like a WebSocket `error` frame (`error` event with the server's
//!   code, the lane and the seq) and the next message goes (a refused `join`, e.g.
//!   `room_full`, also rejects its `joinRoom`). Nothing is dropped silently.
//!
//! The driver owns this half ([`SseLink`] in its state) and implements [`Host`] for it; this
//! module never names the driver, so the dependency runs one way (driver → sse). Its tasks run
//! on the shared runtime's `spawn`.

use crate::core::client::{Client, Event};
use crate::core::close;
use crate::core::drive::Millis;
use crate::core::error::ErrorCode;
use crate::core::handshake::HandshakeResponse;
use crate::core::handshake::{with_ticket, Secret, DEFAULT_SSE_RETRY_MS};
use crate::core::lane::Lane;
use crate::core::sse::post::{
    PostOutcome, PostOutput, PostQueue, PostSend, HEADER_SEQ, HEADER_SEQ_EXPECTED,
    REQUEST_TIMEOUT_MS,
};
use crate::core::sse::{
    lane_event_name, post_from_frame, SseInput, SseReceiver, EVENT_DISCONTINUITY,
};
use crate::wasm::runtime;
use crate::wasm::{global, http};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{EventSource, MessageEvent};

/// What the SSE half needs from the driver that owns it: the core client, the server base
/// URL, the clock, its [`SseLink`], the event queue and the pump. Implemented by the driver's
/// state.
pub(crate) trait Host: Sized + 'static {
    /// The core client.
    fn client(&self) -> &Client;
    /// The core client, to feed inputs.
    fn client_mut(&mut self) -> &mut Client;
    /// The normalized server base URL.
    fn base(&self) -> &str;
    /// The driver's clock, ms.
    fn now(&self) -> Millis;
    /// The SSE state, when the transport is `sse`.
    fn sse_mut(&mut self) -> Option<&mut SseLink>;
    /// Queues an event for the application.
    fn push_event(&mut self, ev: Event);
    /// Drains the core and dispatches events; called with no borrow held, after every input.
    fn pump(h: &Rc<RefCell<Self>>);
}

/// The open `EventSource` and its handlers.
struct Stream {
    es: EventSource,
    id: u64,
    /// Whether it ever opened (a stream that ends after opening is resumed with a fresh
    /// ticket; one that never opened was refused).
    opened: bool,
    _on_open: Closure<dyn FnMut()>,
    _on_error: Closure<dyn FnMut()>,
    _on_event: Closure<dyn FnMut(MessageEvent)>,
}

impl Stream {
    fn close(&self) {
        self.es.set_onopen(None);
        self.es.set_onerror(None);
        self.es.close();
    }
}

/// SSE state of one client: the stream, the receiver and the POST queue.
pub(crate) struct SseLink {
    /// Stream path of the current session (the lanes' `url`).
    path: String,
    /// Granted lanes (one listener each) and the reliable ones (for `peer-restarted`).
    lanes: Vec<Lane>,
    reliable: Vec<Lane>,
    receiver: SseReceiver,
    /// `lastEventId` of the last event with an id on this session.
    last_event_id: Option<String>,
    stream: Option<Stream>,
    streams_opened: u64,
    /// The stream waiting for its ticket ([`open_stream`]), by number.
    pending: Option<u64>,
    /// Numbered, ordered, retrying POSTs.
    posts: PostQueue,
    /// When the armed retry timer fires (ms), if one is armed.
    timer_at: Option<u64>,
    /// The server's reconnect delay (handshake `sseRetryMs`), ms.
    retry_ms: u64,
}

impl SseLink {
    /// SSE state for the session of `resp` (transport `sse`).
    pub(crate) fn new(resp: &HandshakeResponse) -> SseLink {
        let mut link = SseLink {
            path: String::new(),
            lanes: Vec::new(),
            reliable: Vec::new(),
            receiver: SseReceiver::new(),
            last_event_id: None,
            stream: None,
            streams_opened: 0,
            pending: None,
            posts: PostQueue::new(),
            timer_at: None,
            retry_ms: DEFAULT_SSE_RETRY_MS,
        };
        link.adopt(resp);
        link
    }

    fn adopt(&mut self, resp: &HandshakeResponse) {
        self.path = resp
            .lanes
            .first()
            .map(|l| l.url.clone())
            .unwrap_or_default();
        self.lanes = resp
            .lanes
            .iter()
            .filter_map(|l| Lane::from_id(l.id))
            .collect();
        self.reliable = resp
            .lanes
            .iter()
            .filter(|l| l.reliable)
            .filter_map(|l| Lane::from_id(l.id))
            .collect();
        self.last_event_id = None;
        self.retry_ms = resp.sse_retry_ms.unwrap_or(DEFAULT_SSE_RETRY_MS);
        self.posts.session_changed();
    }

    /// The client now has the session of `resp` (a re-handshake): the old history is gone, so
    /// every reliable lane that had delivered something reports `peer-restarted`. Returns
    /// those events.
    pub(crate) fn session_changed(&mut self, resp: &HandshakeResponse) -> Vec<Event> {
        self.adopt(resp);
        self.receiver
            .session_changed(&self.reliable)
            .into_iter()
            .map(Event::Discontinuity)
            .collect()
    }

    /// Queues a frame the core transmitted; call [`kick`] afterwards.
    pub(crate) fn transmit(&mut self, frame: &[u8]) -> Option<Event> {
        match post_from_frame(frame) {
            Ok(post) => {
                self.posts.push(post);
                None
            }
            Err(e) => Some(Event::Error {
                code: e.code(),
                message: format!("cannot send this frame over SSE: {e}"),
                lane: None,
                seq: None,
                retry_after_ms: None,
                dropped: None,
            }),
        }
    }

    /// Closes the stream (the core asked, or the client closed).
    pub(crate) fn close_stream(&mut self) {
        self.pending = None;
        if let Some(s) = self.stream.take() {
            s.close();
        }
    }

    /// Whether `id` is the current stream.
    fn is_current(&self, id: u64) -> bool {
        self.stream.as_ref().is_some_and(|s| s.id == id)
    }
}

/// [`crate::core::client::Action::OpenSocket`] over SSE, and the resume of a stream that
/// ended: opens the session's stream with a ticket (the handshake's first one, else one
/// minted now with the session token; a browser `EventSource` cannot send headers), resuming
/// after the last event id seen on this session. A mint refused with 401 (the server forgot
/// the session) is reported to the core as close code 4404, any other failure as 1006.
pub(crate) fn open_stream<H: Host>(h: &Rc<RefCell<H>>) {
    let mut inner = h.borrow_mut();
    let sid = inner.client().session_id();
    let ticket = inner.client_mut().take_ticket();
    let token = inner.client().session_token().cloned();
    let base = inner.base().to_owned();
    let Some(link) = inner.sse_mut() else { return };
    link.close_stream();
    link.streams_opened += 1;
    let id = link.streams_opened;
    let token = match (ticket, token) {
        (Some(ticket), _) => return open_stream_at(&mut *inner, h, id, Some(&ticket)),
        (None, None) => return open_stream_at(&mut *inner, h, id, None),
        (None, Some(token)) => token,
    };
    link.pending = Some(id);
    drop(inner);
    let h = h.clone();
    runtime::spawn(async move {
        let minted = http::mint_ticket(&base, sid, &token).await;
        {
            let mut inner = h.borrow_mut();
            let current = inner.client().session_id() == sid
                && inner.sse_mut().is_some_and(|l| l.pending == Some(id));
            if !current {
                return;
            }
            if let Some(l) = inner.sse_mut() {
                l.pending = None;
            }
            match minted {
                Ok(ticket) => open_stream_at(&mut *inner, &h, id, Some(&ticket)),
                Err(failed) => {
                    let code = match failed {
                        http::MintFailed::Unauthorized => close::SESSION_NOT_FOUND,
                        http::MintFailed::Failed => close::ABNORMAL,
                    };
                    let now = inner.now();
                    inner.client_mut().handle_socket_closed(code, now);
                }
            }
        }
        H::pump(&h);
    });
}

/// Opens stream number `id` of the current session, with `ticket` when the server checks
/// credentials.
fn open_stream_at<H: Host>(inner: &mut H, h: &Rc<RefCell<H>>, id: u64, ticket: Option<&Secret>) {
    let base = inner.base().to_owned();
    let Some(link) = inner.sse_mut() else { return };
    let mut url = format!("{base}{}", link.path);
    if let Some(id) = &link.last_event_id {
        let sep = if url.contains('?') { '&' } else { '?' };
        url.push_str(&format!(
            "{sep}lastEventId={}",
            js_sys::encode_uri_component(id)
        ));
    }
    if let Some(ticket) = ticket {
        url = with_ticket(&url, ticket);
    }
    let es = match EventSource::new(&url) {
        Ok(es) => es,
        Err(e) => {
            web_sys::console::warn_2(
                &JsValue::from_str("p3-lanes: cannot open the session's SSE stream:"),
                &e,
            );
            let now = inner.now();
            inner
                .client_mut()
                .handle_socket_closed(close::ABNORMAL, now);
            return;
        }
    };
    let on_open = {
        let h = h.clone();
        Closure::<dyn FnMut()>::new(move || on_open(&h, id))
    };
    let on_error = {
        let h = h.clone();
        Closure::<dyn FnMut()>::new(move || on_error(&h, id))
    };
    let on_event = {
        let h = h.clone();
        Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| on_event(&h, id, &ev))
    };
    es.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    es.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    let names = link
        .lanes
        .iter()
        .map(|&l| lane_event_name(l))
        .chain([EVENT_DISCONTINUITY.to_owned()]);
    for name in names {
        let _ = es.add_event_listener_with_callback(&name, on_event.as_ref().unchecked_ref());
    }
    link.stream = Some(Stream {
        es,
        id,
        opened: false,
        _on_open: on_open,
        _on_error: on_error,
        _on_event: on_event,
    });
}

fn on_open<H: Host>(h: &Rc<RefCell<H>>, id: u64) {
    {
        let mut inner = h.borrow_mut();
        let Some(link) = inner.sse_mut() else { return };
        if !link.is_current(id) {
            return;
        }
        if let Some(s) = link.stream.as_mut() {
            s.opened = true;
        }
        let now = inner.now();
        // Also on the EventSource's own reconnects, where the core is already open (a no-op).
        inner.client_mut().handle_socket_open(now);
    }
    H::pump(h);
}

fn on_event<H: Host>(h: &Rc<RefCell<H>>, id: u64, ev: &MessageEvent) {
    {
        let mut inner = h.borrow_mut();
        let now = inner.now();
        let Some(link) = inner.sse_mut() else { return };
        if !link.is_current(id) {
            return;
        }
        let last = ev.last_event_id();
        if !last.is_empty() {
            link.last_event_id = Some(last);
        }
        let data = ev.data().as_string().unwrap_or_default();
        match link.receiver.handle_event(&ev.type_(), &data) {
            Ok(Some(SseInput::Frame(frame))) => inner.client_mut().handle_frame(&frame, now),
            Ok(Some(SseInput::Discontinuity(d))) => inner.push_event(Event::Discontinuity(d)),
            Ok(None) => {}
            Err(e) => inner.push_event(Event::Error {
                code: e.code(),
                message: e.to_string(),
                lane: None,
                seq: None,
                retry_after_ms: None,
                dropped: None,
            }),
        }
    }
    H::pump(h);
}

fn on_error<H: Host>(h: &Rc<RefCell<H>>, id: u64) {
    let (sid, token) = {
        let mut inner = h.borrow_mut();
        let sid = inner.client().session_id();
        let token = inner.client().session_token().cloned();
        let Some(link) = inner.sse_mut() else { return };
        if !link.is_current(id) {
            return;
        }
        let opened = link.stream.as_ref().is_some_and(|s| s.opened);
        // Closed here either way: the EventSource's own reconnect would present the ticket
        // it already used (single-use) and be refused.
        link.close_stream();
        if opened {
            // The stream ended after it opened (server restart, `--sse-max-age-s`, admin
            // close): after the server's `retry:` delay, resume with a fresh ticket and
            // `lastEventId`; the core does not notice (no loss, no duplicate). A mint that
            // fails reports the loss to the core.
            link.streams_opened += 1;
            let id = link.streams_opened;
            link.pending = Some(id);
            let delay = link.retry_ms;
            drop(inner);
            let reopen = {
                let h = h.clone();
                Closure::once_into_js(move || {
                    // Only if nothing else opened or closed a stream meanwhile.
                    let current = {
                        let mut inner = h.borrow_mut();
                        inner.client().session_id() == sid
                            && inner.sse_mut().is_some_and(|l| l.pending == Some(id))
                    };
                    if current {
                        open_stream(&h);
                    }
                })
            };
            if runtime::after(&reopen, delay).is_err() {
                open_stream(h);
            }
            return;
        }
        (sid, token)
    };
    // Refused before it opened (an HTTP error): is the session still there?
    let h = h.clone();
    runtime::spawn(async move {
        let base = h.borrow().base().to_owned();
        let url = format!("{base}/api/protocol/v2/session/{sid}");
        let code = match get_status(&url, token.as_ref()).await {
            Ok(401 | 404) => close::SESSION_NOT_FOUND,
            _ => close::ABNORMAL,
        };
        {
            let mut inner = h.borrow_mut();
            // Only if nothing else happened meanwhile (no new stream, same session).
            let current = inner.client().session_id() == sid
                && inner
                    .sse_mut()
                    .is_some_and(|l| l.stream.is_none() && l.pending.is_none());
            if current {
                let now = inner.now();
                inner.client_mut().handle_socket_closed(code, now);
            }
        }
        H::pump(&h);
    });
}

/// `GET url`'s status (with `Authorization: Bearer` when the session has a token); aborted
/// (an error) after [`REQUEST_TIMEOUT_MS`], so a server that accepts the connection but never
/// answers cannot leave the client without a stream.
async fn get_status(url: &str, token: Option<&Secret>) -> Result<u16, JsValue> {
    let init = web_sys::RequestInit::new();
    init.set_method("GET");
    init.set_cache(web_sys::RequestCache::NoStore);
    if let Some(token) = token {
        let headers = web_sys::Headers::new()?;
        headers.set("Authorization", &http::bearer(token))?;
        init.set_headers(&headers);
    }
    abort_after(&init, REQUEST_TIMEOUT_MS)?;
    let promise: js_sys::Promise = global::fetch(&JsValue::from_str(url), &init)?.unchecked_into();
    let response: web_sys::Response = JsFuture::from(promise).await?.dyn_into()?;
    Ok(response.status())
}

/// Sends the next queued POST if the queue lets one go now; arms a timer for a retry delay.
pub(crate) fn kick<H: Host>(h: &Rc<RefCell<H>>) {
    let (url, send, token) = {
        let mut inner = h.borrow_mut();
        let now = inner.now();
        let base = inner.base().to_owned();
        let sid = inner.client().session_id();
        let token = inner.client().session_token().cloned();
        let Some(link) = inner.sse_mut() else { return };
        let send = match link.posts.poll_output(now) {
            PostOutput::Send(send) => send,
            PostOutput::Timeout(at) => {
                if let Some(at) = at.deadline().map(Millis::as_u64) {
                    if !matches!(link.timer_at, Some(t) if t <= at) {
                        link.timer_at = Some(at);
                        let again = h.clone();
                        let cb = Closure::once_into_js(move || {
                            if let Some(l) = again.borrow_mut().sse_mut() {
                                l.timer_at = None;
                            }
                            kick(&again);
                            H::pump(&again);
                        });
                        let _ = runtime::after(&cb, at.saturating_sub(now.as_u64()));
                    }
                }
                return;
            }
        };
        (format!("{base}{}", send.post.path(sid)), send, token)
    };
    let h = h.clone();
    runtime::spawn(async move {
        let outcome = request(&url, &send, token.as_ref()).await;
        {
            let mut inner = h.borrow_mut();
            let now = inner.now();
            let Some(link) = inner.sse_mut() else { return };
            if let Some(f) = link.posts.handle_outcome(send.ticket, outcome, now) {
                let limited = f.code == ErrorCode::RateLimited;
                let refused_join = (f.dropped && f.lane == Lane::Control)
                    .then(|| joined_room(&send.post.body))
                    .flatten();
                inner.push_event(Event::Error {
                    code: f.code,
                    message: f.message.clone(),
                    lane: Some(f.lane),
                    seq: Some(f.seq),
                    retry_after_ms: f.retry_after_ms,
                    dropped: limited.then_some(f.dropped),
                });
                if let Some(room) = refused_join {
                    inner
                        .client_mut()
                        .handle_join_refused(&room, f.code, &f.message);
                }
            }
        }
        kick(&h);
        H::pump(&h);
    });
}

/// The room of a Control `join` POST body (JSON `{"type": "join", "room": ..}`), if it is one.
fn joined_room(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    if v.get("type")?.as_str()? != "join" {
        return None;
    }
    Some(v.get("room")?.as_str()?.to_owned())
}

/// Gives the request of `init` an `AbortSignal` that fires after `ms` (the fetch then rejects,
/// read as "no answer").
fn abort_after(init: &web_sys::RequestInit, ms: u64) -> Result<(), JsValue> {
    let abort = web_sys::AbortController::new()?;
    init.set_signal(Some(&abort.signal()));
    let on_timeout = Closure::once_into_js(move || abort.abort());
    runtime::after(&on_timeout, ms)?;
    Ok(())
}

/// Makes one attempt of `send`: POST with `P3-Seq`, aborted after [`REQUEST_TIMEOUT_MS`].
async fn request(url: &str, send: &PostSend, token: Option<&Secret>) -> PostOutcome {
    match request_inner(url, send, token).await {
        Ok(outcome) => outcome,
        Err(_) => PostOutcome::Lost,
    }
}

async fn request_inner(
    url: &str,
    send: &PostSend,
    token: Option<&Secret>,
) -> Result<PostOutcome, JsValue> {
    let post = &send.post;
    let headers = web_sys::Headers::new()?;
    if let Some(token) = token {
        headers.set("Authorization", &http::bearer(token))?;
    }
    headers.set("Content-Type", post.content_type)?;
    headers.set(HEADER_SEQ, &send.seq.to_string())?;
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    init.set_body(&js_sys::Uint8Array::from(post.body.as_slice()));
    init.set_headers(&headers);
    init.set_mode(web_sys::RequestMode::Cors);
    init.set_cache(web_sys::RequestCache::NoStore);
    abort_after(&init, REQUEST_TIMEOUT_MS)?;
    let promise: js_sys::Promise = global::fetch(&JsValue::from_str(url), &init)?.unchecked_into();
    let response: web_sys::Response = JsFuture::from(promise).await?.dyn_into()?;
    let status = response.status();
    if (200..300).contains(&status) {
        return Ok(PostOutcome::Accepted);
    }
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .ok()
            .flatten()
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let retry_after_s = header("Retry-After");
    let expected_seq = header(HEADER_SEQ_EXPECTED);
    let text = JsFuture::from(response.text()?)
        .await?
        .as_string()
        .unwrap_or_default();
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Body {
        error: String,
        code: String,
        #[serde(default)]
        retry_after_ms: Option<u64>,
    }
    let (code, message, retry_after_ms) = match serde_json::from_str::<Body>(&text) {
        // A code this SDK does not know stays visible in the message.
        Ok(b) => match serde_json::from_value(serde_json::Value::String(b.code.clone())) {
            Ok(code) => (code, b.error, b.retry_after_ms),
            Err(_) => (
                ErrorCode::BadRequest,
                format!("{}: {}", b.code, b.error),
                b.retry_after_ms,
            ),
        },
        Err(_) => (
            ErrorCode::Internal,
            format!("POST {url}: HTTP {status}"),
            None,
        ),
    };
    Ok(PostOutcome::Refused {
        status,
        code,
        message,
        retry_after_s,
        retry_after_ms,
        expected_seq,
    })
}
