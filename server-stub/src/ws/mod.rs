//! The session WebSocket, `GET /api/protocol/v2/session/{sid}/ws`: binary frames
//! ([`p3_lanes::core::frame`]) carrying Control messages (rooms, heartbeats; seed 001) and Data
//! messages relayed between sessions on the 8 lanes (seed 000 "8-Lane Protocol").
//!
//! Per socket:
//! - it opens with a single-use ticket (`?ticket=`, [`crate::auth`]); without a valid one
//!   (or for an unknown session: the same answer) the socket gets an `error` (`unauthorized`)
//!   frame and close code 4401;
//! - the first frame sent is Control `welcome`; a second socket of the same session replaces
//!   the first (closed with 4409); a session that expired meanwhile gets an `error`
//!   (`session_not_found`) frame and close code 4404;
//! - a send task drains the bounded outbound queue and a receive task handles frames; they run
//!   side by side, joined with `tokio::select!`; either ending closes the socket;
//! - any binary message received refreshes the session's activity; no binary message for the
//!   heartbeat timeout closes with 4408 (WebSocket pings, pongs and text messages do not
//!   count, PROTOCOL.md §9; the session stays resumable until its TTL runs out);
//! - a frame the server refuses gets a Control `error` frame `{code, error, lane?, seq?}` and
//!   the socket stays open; only a WebSocket message over twice `--max-frame-bytes` closes it
//!   (1009);
//! - when the socket ends for any reason the session leaves its room (peers get `peer-left`).
//!
//! Multiplexed sessions (flag `mux`, PROTOCOL.md §11): binary messages whose first byte is
//! `0x10` or more are v2 frames for the session's `Mux`, fed holding only the session's
//! transport lock (never the registry's); each message it delivers is a §5 frame handled as
//! above, with the multiplexer's seq. A discontinuity it reports on a reliable lane
//! (`history-lost`, `peer-restarted`: the client lost messages before the server got them) is
//! relayed to the sender's room as a `discontinuity` message (PROTOCOL.md §11.7). The send task
//! waits on the connection's `Notify`, the close signal and the multiplexer's deadline, then
//! writes the frames the transport's `mux_pump` returns one at a time. A fatal multiplexer
//! error gets a Control `error` with its code (a v1 frame), then close 1009 for
//! `frame_too_large` or 1002 for the others. A v1 frame from the client of a multiplexed
//! session is refused (`bad_frame`), never handled. `--test-latency-ms` applies to their v2 frames as to v1 frames.
//!
//! Signaling: a Messaging-lane `offer` / `answer` / `ice` / `end` goes to the one member of
//! the sender's room it names, with `from` checked (module `signal_route`).
//!
//! Music rooms: a Sync-lane `music-control` without `to` is taken off the relay and handed to
//! the room's authority ([`crate::music`]); `ping {rttMs}` feeds it.
//!
//! Test only, behind one seam (module `test_latency`): with `--test-latency-ms` /
//! `--test-jitter-ms` every frame of a socket, in each direction, waits `latency ± jitter`
//! (uniform) in a delay line that keeps frames in order (a slow TCP link): frames leave the
//! bounded outbound queue into it at once (a multiplexed socket: the bytes in the line count as
//! the transport's buffer for the multiplexer's budget). Off (the default), none of it runs.
//!
//! | module | holds |
//! | --- | --- |
//! | this one | upgrade, per-socket tasks, send and receive loops |
//! | `frames` | what a received frame does: multiplexer input, Control, relay |
//! | `test_latency` | the test-only delay lines |
//!
//! A Data frame is decoded with the encoding its flags name (a json frame on a lane negotiated
//! as msgpack is accepted) and forwarded byte for byte to receivers that negotiated that same
//! encoding; others get it re-encoded in theirs. A `from` set by a client is ignored: relayed
//! frames always carry the real sender.

mod frames;
mod test_latency;

pub(crate) use crate::close::read_error_close;

use crate::close::{self, CloseReason, CloseSignal};
use crate::error::AppError;
use crate::registry::error_msg;
use crate::registry::outbound::{self, mono_ms, QueueRx, SharedTransport};
use crate::registry::Attach;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use p3_lanes::core::error::{ErrorCode, WireError};
use p3_lanes::core::frame::SessionId;
use p3_lanes::core::handshake::TICKET_QUERY;
use p3_lanes::core::lane::Encoding;
use p3_lanes::core::payload;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use test_latency::DelayLine;
use tokio::sync::{mpsc, Notify};
use tokio::time::timeout;

/// How long a closing socket waits for the close frame to be written and for the peer's
/// close reply.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Bytes read from a WebSocket at a time (tungstenite `read_buffer_size`; default 128 KiB).
const READ_BUFFER_BYTES: usize = 4 * 1024;

/// `GET /api/protocol/v2/session/{sid}/ws?ticket=<ticket>`: upgrades to a WebSocket for
/// session `sid`, if `ticket` is one of its live tickets ([`crate::auth`]; used up here).
///
/// Errors (before the upgrade): 400 `bad_request` for a request that is not a WebSocket
/// upgrade. After the upgrade (so that browsers see a code): a missing, unknown, used or
/// expired ticket, or an unknown or malformed session id, gets an `error` frame
/// `unauthorized` and close code 4401, the same for every cause; a session that expired
/// after its ticket was checked gets `session_not_found` and 4404.
pub async fn upgrade(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, AppError> {
    let Path(text) = path?;
    let ws = ws?;
    let limit = state.config().max_frame_bytes.saturating_mul(2);
    let ticket = query.ok().and_then(|Query(mut q)| q.remove(TICKET_QUERY));
    let sid = match (text.parse::<SessionId>(), ticket) {
        (Ok(sid), Some(t)) if state.redeem(sid, &t).await => Some(sid),
        _ => None,
    };
    if let Some(sid) = sid {
        // In a cluster this node holds the session from now on (taken over if need be).
        state.cluster_claim(sid).await;
    }
    Ok(ws
        // tungstenite's default read buffer is 128 KiB per socket, allocated and touched up
        // front: it made an idle session cost ~140 KiB of server memory (capacity bench).
        // Bigger messages still arrive whole, read in more chunks.
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| run(socket, state, sid)))
}

/// One socket; `sid` is `None` when its ticket was refused.
async fn run(socket: WebSocket, state: Arc<AppState>, sid: Option<SessionId>) {
    let _counted = state.socket_guard();
    let Some(sid) = sid else {
        let reason = CloseReason {
            code: close::UNAUTHORIZED,
            reason: "unauthorized",
        };
        let error = refusal_frame(&state, ErrorCode::Unauthorized, "unauthorized");
        return refuse(socket, Some(error), reason).await;
    };
    match state.attach(sid) {
        Attach::Attached {
            conn_id,
            rx,
            close,
            notify,
            transport,
        } => {
            connection(socket, state, sid, conn_id, rx, close, notify, transport).await;
        }
        Attach::ShuttingDown => {
            let reason = CloseReason {
                code: close::GOING_AWAY,
                reason: "server shutting down",
            };
            refuse(socket, None, reason).await;
        }
        Attach::NotFound => {
            let error = refusal_frame(
                &state,
                ErrorCode::SessionNotFound,
                "session not found (unknown, expired or deleted)",
            );
            let reason = CloseReason {
                code: close::SESSION_NOT_FOUND,
                reason: "session not found",
            };
            refuse(socket, Some(error), reason).await;
        }
    }
}

/// The Control `error` frame (msgpack) sent before a refusing close.
fn refusal_frame(state: &AppState, code: ErrorCode, text: &str) -> Vec<u8> {
    payload::control_frame(
        &error_msg(code, text, None, None),
        Encoding::Msgpack,
        Some(state.dict()),
        1,
    )
}

/// Sends `frame` (if any), then closes with `reason` and waits briefly for the close reply.
async fn refuse(mut socket: WebSocket, frame: Option<Vec<u8>>, reason: CloseReason) {
    if let Some(frame) = frame {
        let _ = socket.send(Message::Binary(frame.into())).await;
    }
    let _ = socket.send(close_message(reason)).await;
    let _ = timeout(CLOSE_GRACE, async {
        while let Some(Ok(m)) = socket.recv().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Writes the close signal's last frame, if any (the Control `error` saying why), then the
/// close frame; within [`CLOSE_GRACE`].
pub(super) async fn write_close(
    sink: &mut SplitSink<WebSocket, Message>,
    signal: &CloseSignal,
    reason: CloseReason,
) {
    let _ = timeout(CLOSE_GRACE, async {
        if let Some(frame) = signal.take_farewell() {
            sink.feed(Message::Binary(frame.into())).await?;
        }
        sink.send(close_message(reason)).await
    })
    .await;
}

pub(super) fn close_message(r: CloseReason) -> Message {
    Message::Close(Some(CloseFrame {
        code: r.code,
        reason: r.reason.into(),
    }))
}

#[allow(clippy::too_many_arguments)]
async fn connection(
    socket: WebSocket,
    state: Arc<AppState>,
    sid: SessionId,
    conn_id: u64,
    rx: QueueRx,
    signal: Arc<CloseSignal>,
    mux: Option<Arc<Notify>>,
    transport: SharedTransport,
) {
    tracing::info!(session = %sid, conn_id, mux = mux.is_some(), "socket open");
    let (sink, stream) = socket.split();
    let delay = state.config().test_delay();
    let mut send_task = match (delay, mux) {
        (_, Some(notify)) => tokio::spawn(mux_send_loop(
            sink,
            conn_id,
            signal.clone(),
            notify,
            transport.clone(),
            delay.map(|d| DelayLine::new(d, conn_id)),
        )),
        (None, None) => tokio::spawn(send_loop(sink, rx, signal.clone())),
        (Some(d), None) => tokio::spawn(test_latency::delayed_send_loop(
            sink,
            rx,
            signal.clone(),
            DelayLine::new(d, conn_id),
        )),
    };
    // Test only: frames received wait in a delay line before they are handled.
    let (inbound, inbound_task) = match delay {
        None => (None, None),
        Some(d) => {
            let (tx, rx) = mpsc::unbounded_channel();
            let task = tokio::spawn(test_latency::delayed_handler(
                rx,
                state.clone(),
                sid,
                conn_id,
                transport.clone(),
            ));
            (Some((tx, DelayLine::new(d, !conn_id))), Some(task))
        }
    };
    let mut recv_task = tokio::spawn(recv_loop(
        stream,
        state.clone(),
        sid,
        conn_id,
        transport,
        signal.clone(),
        inbound,
    ));
    tokio::select! {
        _ = &mut send_task => {
            // Closed by the server (or the write failed): leave the room now, then give the
            // receive side a moment to read the peer's close reply.
            signal.close(close::NORMAL, "");
            state.detach(sid, conn_id);
            if timeout(CLOSE_GRACE, &mut recv_task).await.is_err() {
                recv_task.abort();
            }
        }
        _ = &mut recv_task => {
            // The peer closed, went silent, or sent something fatal: leave the room now, then
            // let the send side write the close frame.
            signal.close(close::NORMAL, "");
            state.detach(sid, conn_id);
            if timeout(CLOSE_GRACE, &mut send_task).await.is_err() {
                send_task.abort();
            }
        }
    }
    if let Some(task) = inbound_task {
        task.abort();
    }
    let reason = signal.reason();
    tracing::info!(session = %sid, conn_id, code = reason.map(|r| r.code), reason = reason.map(|r| r.reason), "socket closed");
}

/// Frames a send task takes from its queue for one write (then one flush).
const WRITE_BATCH: usize = 64;

/// Writes `frames` with `feed` (into the WebSocket's write buffer, which goes to the socket
/// when it fills) and flushes once at the end: one write for every frame that is ready
/// instead of one per frame. Accepted sockets have TCP_NODELAY ([`crate::serve`]), so this
/// coalescing is what keeps small frames from costing a syscall and a segment each.
async fn write_batch(
    sink: &mut SplitSink<WebSocket, Message>,
    frames: impl IntoIterator<Item = Bytes>,
) -> Result<(), axum::Error> {
    for frame in frames {
        sink.feed(Message::Binary(frame)).await?;
    }
    sink.flush().await
}

/// Writes queued frames until the close signal, then writes the close frame. Every frame
/// that is ready (up to [`WRITE_BATCH`]) is written before one flush.
async fn send_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: QueueRx,
    signal: Arc<CloseSignal>,
) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    let reason = loop {
        tokio::select! {
            biased;
            r = signal.closed() => break r,
            n = rx.recv_many(&mut batch, WRITE_BATCH) => {
                if n == 0 {
                    break CloseReason { code: close::NORMAL, reason: "" };
                }
                // A peer that does not read must not delay a close: race the write against it.
                tokio::select! {
                    biased;
                    r = signal.closed() => break r,
                    sent = write_batch(&mut sink, batch.drain(..)) => if sent.is_err() { return },
                }
            }
        }
    };
    write_close(&mut sink, &signal, reason).await;
}

/// Writes what the session's multiplexer has for this socket until the close signal, then the
/// close frame. With `line` (test only, `--test-latency-ms`) frames wait in the delay line
/// first, and the bytes waiting there are reported to the multiplexer as the transport's
/// buffer, so priorities still apply above it as on a slow link.
async fn mux_send_loop(
    mut sink: SplitSink<WebSocket, Message>,
    conn_id: u64,
    signal: Arc<CloseSignal>,
    notify: Arc<Notify>,
    transport: SharedTransport,
    mut line: Option<DelayLine>,
) {
    let start = tokio::time::Instant::now() - Duration::from_millis(mono_ms());
    let mut pending: VecDeque<(tokio::time::Instant, Bytes)> = VecDeque::new();
    let mut pending_bytes = 0usize;
    let reason = 'outer: loop {
        // Delay line: write every frame that is due, then flush once.
        let now = tokio::time::Instant::now();
        let due = pending.iter().take_while(|p| p.0 <= now).count();
        if due > 0 {
            let frames = pending.drain(..due).map(|(_, frame)| frame);
            let frames: Vec<Bytes> = frames.collect();
            pending_bytes -= frames.iter().map(Bytes::len).sum::<usize>();
            tokio::select! {
                biased;
                r = signal.closed() => break 'outer r,
                sent = write_batch(&mut sink, frames) => if sent.is_err() { return },
            }
        }
        // The session's own lock only: batching is per socket, not server-wide work.
        let pumped = outbound::lock(&transport).mux_pump(conn_id, pending_bytes);
        let Some((frames, deadline)) = pumped else {
            break CloseReason {
                code: close::NORMAL,
                reason: "",
            };
        };
        let busy = !frames.is_empty();
        if let Some(line) = line.as_mut() {
            for frame in frames {
                pending_bytes += frame.len();
                pending.push_back((line.due(), frame));
            }
        } else if busy {
            // Every frame of this pump in one write, then one flush.
            tokio::select! {
                biased;
                r = signal.closed() => break 'outer r,
                sent = write_batch(&mut sink, frames) => if sent.is_err() { return },
            }
        }
        if busy {
            // Sent something: the multiplexer may have more (it wrote one budget's worth).
            continue;
        }
        let wake = deadline.map(|ms| start + Duration::from_millis(ms));
        let due = pending.front().map(|p| p.0);
        tokio::select! {
            biased;
            r = signal.closed() => break r,
            () = notify.notified() => {}
            () = sleep_until(wake) => {}
            () = sleep_until(due) => {}
        }
    };
    write_close(&mut sink, &signal, reason).await;
}

/// Sleeps until `at`, or forever when `None`.
pub(super) async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Reads and handles frames until the peer closes, goes silent, or the socket is told to close.
/// With `inbound` (test only) binary frames go through its delay line to [`delayed_handler`].
async fn recv_loop(
    mut stream: SplitStream<WebSocket>,
    state: Arc<AppState>,
    sid: SessionId,
    conn_id: u64,
    transport: SharedTransport,
    signal: Arc<CloseSignal>,
    mut inbound: Option<(
        mpsc::UnboundedSender<(tokio::time::Instant, Bytes)>,
        DelayLine,
    )>,
) {
    let silence = state.config().heartbeat_timeout();
    // §9: only P3 traffic (binary messages) keeps the socket alive. WebSocket pings, pongs
    // and text messages do not move this deadline: a stock client library's automatic pings
    // must not hold a session that sends no P3 ping open forever.
    let mut deadline = tokio::time::Instant::now() + silence;
    loop {
        let next = tokio::select! {
            biased;
            _ = signal.closed() => {
                // Closing: read (and ignore) until the peer's close reply, so the peer gets our
                // close frame instead of a reset.
                let _ = timeout(CLOSE_GRACE, async {
                    while let Some(Ok(m)) = stream.next().await {
                        if matches!(m, Message::Close(_)) {
                            break;
                        }
                    }
                })
                .await;
                return;
            }
            next = tokio::time::timeout_at(deadline, stream.next()) => next,
        };
        let msg = match next {
            Err(_) => {
                tracing::info!(session = %sid, conn_id, "heartbeat timeout");
                signal.close(close::HEARTBEAT_TIMEOUT, "heartbeat timeout");
                return;
            }
            Ok(None) => return,
            Ok(Some(Err(e))) => {
                let (code, reason) = read_error_close(&e);
                tracing::debug!(session = %sid, conn_id, error = %e, code, "socket read error");
                signal.close(code, reason);
                return;
            }
            Ok(Some(Ok(m))) => m,
        };
        match msg {
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Binary(_) => deadline = tokio::time::Instant::now() + silence,
            Message::Text(_) | Message::Close(_) => {}
        }
        if !state.registry().touch(sid, conn_id, Instant::now()) {
            // Replaced or deleted: the close signal follows.
            continue;
        }
        match msg {
            Message::Binary(bytes) => match &mut inbound {
                Some((tx, line)) => {
                    let _ = tx.send((line.due(), bytes));
                }
                None => frames::handle_frame(&state, sid, conn_id, &transport, bytes).await,
            },
            Message::Text(_) => frames::send_error(
                &state,
                sid,
                conn_id,
                WireError::new(
                    ErrorCode::BadFrame,
                    "text messages are not frames; send binary messages",
                ),
                None,
                None,
            ),
            Message::Ping(_) | Message::Pong(_) => {}
            Message::Close(_) => return,
        }
    }
}
