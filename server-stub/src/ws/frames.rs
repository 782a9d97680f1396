//! Frames received on a session WebSocket (see [`super`]): multiplexer input, §5 frames,
//! Control messages (join, leave, ping) and Data relays. Never panics; a refused frame only
//! affects its sender (a Control `error`).

use crate::music;
use crate::registry::encoded::Variant;
use crate::registry::error_msg;
use crate::registry::outbound::{self, Transport};
use crate::signal_route;
use crate::state::{AppState, RelayNote};
use axum::body::Bytes;
use p3_lanes::core::control::{validate_room_name, Control};
use p3_lanes::core::error::{ErrorCode, WireError};
use p3_lanes::core::frame::{FrameError, FrameHeader, FrameKind, SessionId};
use p3_lanes::core::lane::Lane;
use p3_lanes::core::mux::MuxEvent;
use p3_lanes::core::payload;
use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Answers `sid`'s socket `conn_id` with a Control `error`.
pub(super) fn send_error(
    state: &AppState,
    sid: SessionId,
    conn_id: u64,
    e: WireError,
    lane: Option<u8>,
    seq: Option<u64>,
) {
    tracing::debug!(session = %sid, code = %e.code, error = %e.error, lane, seq, "frame refused");
    state
        .registry()
        .reply(sid, conn_id, &error_msg(e.code, e.error, lane, seq));
}

/// `decoded`'s value; a payload that did not decode is answered with its typed error
/// ([`payload::PayloadError::code`]; `lane`, `seq` of the frame) and gives `None`.
fn decoded<T>(
    state: &AppState,
    sid: SessionId,
    conn_id: u64,
    decoded: Result<T, payload::PayloadError>,
    lane: Option<u8>,
    seq: Option<u64>,
) -> Option<T> {
    decoded
        .map_err(|e| {
            let wire = WireError::new(e.code(), e.to_string());
            send_error(state, sid, conn_id, wire, lane, seq);
        })
        .ok()
}

/// A §5 frame at least this big (bytes) is handled on the blocking thread pool rather than on
/// the runtime's worker: decoding it (up to the decode budget's values) and whatever follows
/// (a `music-changes` reconcile) is work proportional to the frame, and a worker busy with it
/// would delay every other socket's frames queued behind it (issue 11 "No global stall").
/// Smaller frames, the common case, are handled in place.
pub(super) const OFF_WORKER_BYTES: usize = 64 * 1024;

/// Frames handled on the blocking pool at once, server-wide: a flood of big frames from many
/// sockets takes at most this many threads (and cores); the others wait their turn, each
/// socket's frames still in order.
static OFF_WORKER: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// Handles one binary message. Never panics; a refused frame only affects its sender.
/// v2 frames go to the session's multiplexer holding only the session's transport lock; a v1
/// frame on a multiplexed session is refused (`bad_frame`).
/// Frames are handled one after the other (the caller awaits this before reading the next
/// message): a frame of [`OFF_WORKER_BYTES`] or more is handled on the blocking pool, and the
/// socket's next frame waits for it, so a socket's frames keep their order.
pub(super) async fn handle_frame(
    state: &Arc<AppState>,
    sid: SessionId,
    conn_id: u64,
    transport: &Mutex<Transport>,
    bytes: Bytes,
) {
    if bytes.first().is_some_and(|b| *b >= 0x10) {
        let events = outbound::lock(transport).mux_input(sid, conn_id, &bytes);
        for ev in events {
            match ev {
                MuxEvent::Message { seq, bytes, .. } => {
                    handle_message(state, sid, conn_id, Bytes::from(bytes), Some(seq)).await;
                }
                MuxEvent::Discontinuity(d) => state.relay_discontinuity(sid, conn_id, &d),
                other => tracing::debug!(session = %sid, event = ?other, "multiplexer event"),
            }
        }
        return;
    }
    if outbound::lock(transport).mux.is_some() {
        // §11.7: a multiplexed session speaks v2 frames only; a §5 frame would bypass the
        // multiplexer's sequence numbers, acks and resume. Refused, never handled.
        let (lane, seq) = match FrameHeader::decode(&bytes) {
            Ok((h, _)) => (Some(h.lane.id()), Some(h.seq)),
            Err(_) => (None, None),
        };
        let wire = WireError::new(
            ErrorCode::BadFrame,
            "a v1 frame on a multiplexed session; send v2 frames (first byte 0x10 or more)",
        );
        return send_error(state, sid, conn_id, wire, lane, seq);
    }
    handle_message(state, sid, conn_id, bytes, None).await;
}

/// [`handle_v1_frame`] in place, or on the blocking pool for a frame of [`OFF_WORKER_BYTES`]
/// or more (returns once it was handled).
async fn handle_message(
    state: &Arc<AppState>,
    sid: SessionId,
    conn_id: u64,
    bytes: Bytes,
    mux_seq: Option<u64>,
) {
    if bytes.len() < OFF_WORKER_BYTES {
        return handle_v1_frame(state, sid, conn_id, &bytes, mux_seq);
    }
    let Ok(_permit) = OFF_WORKER.acquire().await else {
        return;
    };
    let state = state.clone();
    let work = move || handle_v1_frame(&state, sid, conn_id, &bytes, mux_seq);
    if let Err(e) = tokio::task::spawn_blocking(work).await {
        tracing::error!(session = %sid, error = %e, "handling a frame failed");
    }
}

/// Handles one §5 frame: a binary message, or a multiplexer message (`mux_seq`: its seq).
fn handle_v1_frame(
    state: &AppState,
    sid: SessionId,
    conn_id: u64,
    bytes: &[u8],
    mux_seq: Option<u64>,
) {
    let max = state.config().max_frame_bytes;
    if bytes.len() > max {
        let (lane, seq) = match FrameHeader::decode(bytes) {
            Ok((h, _)) => (Some(h.lane.id()), Some(h.seq)),
            Err(_) => (None, None),
        };
        let e = FrameError::TooLarge {
            size: bytes.len(),
            limit: max,
        };
        let wire = WireError::new(e.code(), e.to_string());
        return send_error(state, sid, conn_id, wire, lane, seq);
    }
    let (mut h, body) = match FrameHeader::decode(bytes) {
        Ok(x) => x,
        Err(e) => {
            let lane = match e {
                FrameError::UnknownLane(id) => Some(id),
                _ => None,
            };
            let wire = WireError::new(e.code(), e.to_string());
            return send_error(state, sid, conn_id, wire, lane, None);
        }
    };
    if let Some(seq) = mux_seq {
        h.seq = seq;
    }
    // The session's budget for this lane (crate::limits); a refused frame is not processed.
    if let Err(refusal) = state.limits().check_lane(sid, h.lane) {
        return crate::limits::refuse_frame(state, sid, conn_id, h.lane, h.seq, refusal);
    }
    state.pulse().metrics().received(h.lane, bytes.len());
    match h.kind {
        FrameKind::Control => handle_control(state, sid, conn_id, &h, body),
        FrameKind::Data => relay(state, sid, conn_id, &h, body),
    }
}

fn handle_control(state: &AppState, sid: SessionId, conn_id: u64, h: &FrameHeader, body: &[u8]) {
    let lane = Some(Lane::Control.id());
    let msg = payload::decode_control(h, body, Some(state.dict()));
    let Some(msg) = decoded(state, sid, conn_id, msg, lane, Some(h.seq)) else {
        return;
    };
    let mut reg = state.registry();
    if !reg.touch(sid, conn_id, Instant::now()) {
        return;
    }
    match msg {
        Control::Join { room } => match validate_room_name(&room) {
            Ok(()) if state.cluster().is_some() => {
                // Written to the room's stream first: no Redis I/O under the registry lock.
                drop(reg);
                state.cluster_join(sid, conn_id, room, h.seq);
            }
            Ok(()) => {
                if let Err(e) = reg.join(sid, room) {
                    reg.reply(sid, conn_id, &error_msg(e.code, e.error, lane, Some(h.seq)));
                }
            }
            Err(why) => reg.reply(
                sid,
                conn_id,
                &error_msg(ErrorCode::InvalidArgument, why, lane, Some(h.seq)),
            ),
        },
        Control::Leave { room } => reg.leave(sid, room, h.seq),
        Control::Ping {
            client_time,
            rtt_ms,
        } => state.answer_ping(reg, sid, conn_id, client_time, rtt_ms),
        other => {
            let kind = serde_json::to_value(&other)
                .ok()
                .and_then(|v| v.get("type").and_then(|t| t.as_str().map(str::to_owned)))
                .unwrap_or_default();
            let why = format!("control message {kind:?} is sent by the server only; clients send join, leave, ping");
            reg.reply(
                sid,
                conn_id,
                &error_msg(ErrorCode::BadControl, why, lane, Some(h.seq)),
            );
        }
    }
}

/// Relays a Data frame: checks the lane, decodes the payload, routes (to one session or to the
/// room), transcodes per receiver encoding only where needed, and queues it for each receiver.
fn relay(state: &AppState, sid: SessionId, conn_id: u64, h: &FrameHeader, body: &[u8]) {
    let (lane, seq) = (Some(h.lane.id()), Some(h.seq));
    let routed = state.registry().route(sid, conn_id, h, Instant::now());
    let targets = match routed {
        Err(None) => return,
        Err(Some(e)) => return send_error(state, sid, conn_id, e, lane, seq),
        Ok(targets) => targets,
    };
    let value = payload::decode_with(h, body, Some(state.dict()), state.decode_budget(h.lane));
    let Some(value) = decoded(state, sid, conn_id, value, lane, seq) else {
        return;
    };
    if h.lane == Lane::Messaging && signal_route::is_signal(&value) {
        return signal_route::relay_signal(state, sid, conn_id, h, value);
    }
    if h.lane == Lane::Sync && h.to.is_none() && music::is_music_message(&value) {
        return state.music_message(sid, conn_id, h.seq, value);
    }
    let mut key = None;
    if targets.is_ok() {
        match state.cluster_relay(sid, h.lane, h.to, &value) {
            Ok(k) => key = k,
            Err(()) => {
                let why = "the cluster's outbound queue is full; message not delivered to other nodes, retry later";
                let wire = WireError::new(ErrorCode::Backpressure, why);
                return send_error(state, sid, conn_id, wire, lane, seq);
            }
        }
    }
    let targets = match targets {
        Ok(t) if t.is_empty() => return,
        Ok(t) => t,
        Err(e) => return send_error(state, sid, conn_id, e, lane, seq),
    };
    // The frame's own bytes for receivers with the same encoding; one re-encoding per other
    // encoding needed, outside the registry lock.
    let original = Variant {
        encoding: h.encoding,
        bytes: Cow::Borrowed(body),
        dict_version: h.dict_version,
    };
    let relayed = state.deliver_relay(
        sid,
        h.lane,
        &targets,
        &value,
        Some(original),
        RelayNote { history: true, key },
    );
    if !relayed.refused.is_empty() {
        let ids: Vec<String> = relayed.refused.iter().map(ToString::to_string).collect();
        let why = format!(
            "outbound queue full for {} receiver(s) ({}); message not delivered to them, retry later",
            ids.len(),
            ids.join(", ")
        );
        send_error(
            state,
            sid,
            conn_id,
            WireError::new(ErrorCode::Backpressure, why),
            lane,
            seq,
        );
    }
    if let Some(size) = relayed.too_large {
        let max = state.config().max_frame_bytes;
        let why = format!("relayed frame would be {size} bytes, over the limit of {max} bytes; not delivered to receivers using another encoding");
        send_error(
            state,
            sid,
            conn_id,
            WireError::new(ErrorCode::FrameTooLarge, why),
            lane,
            seq,
        );
    }
}
