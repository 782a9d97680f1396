//! The seed 001 signaling server (seed 001 "Signaling Server", "Connection Management",
//! "Heartbeat Monitoring"; issue #5; PROTOCOL.md §13.7): `GET /api/signaling`, a WebSocket of
//! JSON text messages ([`p3_lanes::core::p2p::signaling_server`]) with rooms, relay of
//! offer / answer / ice / end to one peer, heartbeats and a heartbeat timeout.
//!
//! - `auth {address: sessionId, signature: signalingToken}`: the token is the
//!   `signalingToken` of the session's handshake response, `base64url(expiry ‖
//!   HMAC-SHA256(server secret, "p3-signaling-v2" ‖ session id ‖ expiry))` with the expiry in
//!   ms since the Unix epoch (8 bytes big-endian; `--signaling-token-ttl-s` after the
//!   handshake), the secret 32 bytes from the OS CSPRNG per server process (per cluster
//!   with several nodes, below). Checked in constant time; a wrong, expired or another session's token and a session that is gone
//!   all get the same `unauthorized`. Answer: `auth_ok {sessionId}`. One
//!   socket per session: authenticating on a new socket closes the old one (4409; its room
//!   hears `peer_left` with reason `replaced`). The session is checked at `auth` only; the
//!   socket then lives on its own heartbeats.
//! - Before `auth_ok`, `join` / `offer` / `answer` / `ice` / `end` are `unauthorized`
//!   (`heartbeat` and `ping` are always answered).
//! - `join {roomId}`: leaves the current room (`peer_left`, reason `left`), answers `joined
//!   {roomId, peers}`, tells the others `peer_joined`. These rooms are this endpoint's own,
//!   not the lane rooms.
//! - offer / answer / ice / end: relayed to one member of the sender's room as `{type, roomId,
//!   from, to, data}`; the target is `to`, else `data.to`, else the only other member (the
//!   seed's 1:1 `relayToPeer`); errors `not_in_room`, `invalid_argument` (no target among
//!   several peers, `to` and `data.to` differ, offer/answer/ice without `data`),
//!   `forbidden` (`to` is not another member of the room), `unknown_target` (nobody else in
//!   the room), `backpressure` (the target's queue is full).
//! - `heartbeat` → `heartbeat_ack {serverTime}`; `ping` → `pong {serverTime}` (the seed's code).
//!   Any message counts as life: a socket silent for `--heartbeat-timeout-ms`
//!   (`WS_HEARTBEAT_TIMEOUT`) is closed with 4408 and its room hears `peer_left` with reason
//!   `heartbeat-timeout`; so is a socket that stops reading: one message not written to it
//!   within `--heartbeat-timeout-ms` (its heartbeats do not keep it alive then). A closed
//!   socket's room hears reason `closed`.
//! - Malformed JSON is `bad_request`, a well-formed message of the wrong shape or unknown
//!   `type` `invalid_argument`, a binary message `bad_request`: an `error {code, error,
//!   request?}` message, the socket stays open. Text messages over twice `--max-frame-bytes`
//!   close the socket with 1009.
//! - Each socket's outbound queue holds `--queue-frames` messages and
//!   `--signaling-queue-bytes` bytes (`SIGNALING_QUEUE_BYTES`, default 4 MiB); a relay to a
//!   full queue is refused with `backpressure`, a protocol message (not a relay) to a full
//!   queue closes that socket with 1013.
//! - A socket that is closed (heartbeat timeout, replaced, shutdown) stops writing at once,
//!   even in the middle of a write to a peer that stopped reading: the write is raced against
//!   the close, the close frame gets [`CLOSE_GRACE`], and the send task is aborted after twice
//!   that, so a non-reading peer never pins its queue beyond that.
//! - Several nodes (`--redis-url`, PROTOCOL.md §17): a room is also a cluster room
//!   (`cluster::signaling_room`: its own stream, meta and members in Redis). A join
//!   is written first (`sig-joined`, waiting for the answer with no lock held; Redis
//!   unreachable: `internal`) and lists the members on other nodes in `joined`; leaves
//!   (`sig-left`, with the reason) and relays to a target held elsewhere (`sig-relay`, the
//!   event's text) are queued for the node's publisher, and the node holding the target
//!   delivers them (a full queue there closes its socket with 1013). The token secret is
//!   the cluster's (`p3:signaling:secret`, fetched before the first token is minted or
//!   checked), and a session handshaked on another node is imported from its record at
//!   `auth`, so a socket authenticates on any node. One socket per session holds per node
//!   only.

use crate::close;
mod hub;

pub(crate) use hub::Hub;

use crate::cluster::{block_on, signaling_room, Kind, Publish};
use crate::error::AppError;
use crate::now_ms;
use crate::state::AppState;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use hub::{encode, Close, Member, OutQueue};
use p3_lanes::core::control::validate_room_name;
use p3_lanes::core::error::ErrorCode;
use p3_lanes::core::frame::SessionId;
use p3_lanes::core::p2p::signaling_server::{
    Relayed, RequestType, SignalingEvent, SignalingRequest,
};
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

/// How long a closing socket waits for its close frame to be written.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// A refused request: code and description.
type Refused = (ErrorCode, String);

/// A [`Refused`] from `code` and `why`.
fn refused(code: ErrorCode, why: impl Into<String>) -> Refused {
    (code, why.into())
}

trait RefusedExt {
    /// The `error` message answering a `kind` request.
    fn event(self, kind: RequestType) -> SignalingEvent;
}

impl RefusedExt for Refused {
    fn event(self, kind: RequestType) -> SignalingEvent {
        error(self.0, self.1, Some(kind))
    }
}

/// An `error` message.
fn error(
    code: ErrorCode,
    error: impl Into<String>,
    request: Option<RequestType>,
) -> SignalingEvent {
    SignalingEvent::Error {
        code,
        error: error.into(),
        request,
    }
}

/// `GET /api/signaling`: upgrades to the signaling WebSocket (see the module docs).
///
/// Errors (before the upgrade): 400 `bad_request` for a request that is not a WebSocket upgrade.
pub async fn upgrade(
    State(state): State<Arc<AppState>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, AppError> {
    let ws = ws?;
    let limit = state.config().max_frame_bytes.saturating_mul(2);
    Ok(ws
        .read_buffer_size(4 * 1024)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| run(socket, state)))
}

/// One signaling connection: a send task draining the queue, this task reading.
async fn run(socket: WebSocket, state: Arc<AppState>) {
    let _counted = state.socket_guard();
    let hub = state.signaling();
    let conn = hub.next_conn.fetch_add(1, Ordering::Relaxed);
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Utf8Bytes>(state.config().queue_frames.max(2));
    let queued = Arc::new(AtomicUsize::new(0));
    let tx = OutQueue {
        tx,
        queued: queued.clone(),
        budget: state.config().signaling_queue_bytes,
    };
    let close_signal: Arc<Close> = Arc::new(watch::channel(None).0);

    // Tokens minted by any node verify here (PROTOCOL.md §17).
    state.cluster_signaling_secret().await;
    let mut closed_rx = close_signal.subscribe();
    // A peer that takes nothing for a heartbeat timeout while a message waits for it is as
    // gone as one that sends nothing for that long (issue 11: a peer that stops reading but
    // keeps sending heartbeats must not pin its queue).
    let stall = state.config().heartbeat_timeout();
    let stalled = close_signal.clone();
    let send_task = tokio::spawn(async move {
        let reason = loop {
            let text = tokio::select! {
                biased;
                r = closed(&mut closed_rx) => break r,
                msg = rx.recv() => match msg {
                    Some(text) => text,
                    None => break None,
                },
            };
            queued.fetch_sub(text.len(), Ordering::AcqRel);
            // Raced against the close: a peer that stopped reading cannot hold this task.
            tokio::select! {
                biased;
                r = closed(&mut closed_rx) => break r,
                sent = timeout(stall, sink.send(Message::Text(text))) => match sent {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return,
                    Err(_) => {
                        tracing::info!(conn, "signaling peer stopped reading; closing with 4408");
                        let r = (close::HEARTBEAT_TIMEOUT, "heartbeat timeout: not reading");
                        stalled.send_replace(Some(r));
                        break Some(r);
                    }
                },
            }
        };
        let (code, reason) = reason.unwrap_or((close::NORMAL, ""));
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = timeout(CLOSE_GRACE, sink.send(Message::Close(Some(frame)))).await;
    });

    let mut conn_state = Conn {
        conn,
        session: None,
        tx,
        close: close_signal.clone(),
    };
    let silence = state.config().heartbeat_timeout();
    let mut closed_rx = close_signal.subscribe();
    let leave_reason = loop {
        let next = tokio::select! {
            biased;
            r = closed(&mut closed_rx) => break match r {
                Some((close::HEARTBEAT_TIMEOUT, _)) => "heartbeat-timeout",
                _ => "closed",
            },
            () = state.shutdown_started() => {
                close_signal.send_replace(Some((close::GOING_AWAY, "server shutting down")));
                break "closed";
            }
            next = timeout(silence, stream.next()) => next,
        };
        match next {
            Err(_) => {
                tracing::info!(conn, session = ?conn_state.session, "signaling heartbeat timeout");
                close_signal.send_replace(Some((close::HEARTBEAT_TIMEOUT, "heartbeat timeout")));
                break "heartbeat-timeout";
            }
            Ok(Some(Err(e))) => {
                close_signal.send_replace(Some(close::read_error_close(&e)));
                break "closed";
            }
            Ok(None) | Ok(Some(Ok(Message::Close(_)))) => break "closed",
            Ok(Some(Ok(Message::Text(text)))) => conn_state.handle(&state, text.as_str()),
            Ok(Some(Ok(Message::Binary(_)))) => conn_state.reply(&error(
                ErrorCode::BadRequest,
                "the signaling server speaks JSON text messages",
                None,
            )),
            Ok(Some(Ok(_))) => {}
        }
    };
    if let Some(sid) = conn_state.session {
        state.signaling().lock().remove(sid, conn, leave_reason);
    }
    close_signal.send_if_modified(|c| {
        if c.is_none() {
            *c = Some((close::NORMAL, ""));
            true
        } else {
            false
        }
    });
    drop(conn_state);
    let abort = send_task.abort_handle();
    if timeout(CLOSE_GRACE * 2, send_task).await.is_err() {
        abort.abort();
    }
}

/// Waits until the socket is asked to close; its code and reason.
async fn closed(
    rx: &mut watch::Receiver<Option<(u16, &'static str)>>,
) -> Option<(u16, &'static str)> {
    rx.wait_for(Option::is_some).await.ok().and_then(|r| *r)
}

/// Per-socket state of the receive side.
struct Conn {
    conn: u64,
    session: Option<SessionId>,
    tx: OutQueue,
    close: Arc<Close>,
}

impl Conn {
    fn reply(&self, ev: &SignalingEvent) {
        if !self.tx.try_send(encode(ev)) {
            self.close
                .send_replace(Some((close::TRY_AGAIN_LATER, "outbound queue full")));
        }
    }

    /// One text message.
    fn handle(&mut self, state: &AppState, text: &str) {
        let value: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                return self.reply(&error(
                    ErrorCode::BadRequest,
                    format!("not JSON: {e}"),
                    None,
                ))
            }
        };
        let kind = value
            .get("type")
            .cloned()
            .and_then(|t| serde_json::from_value::<RequestType>(t).ok());
        let req: SignalingRequest = match serde_json::from_value(value) {
            Ok(r) => r,
            Err(e) => {
                return self.reply(&error(
                    ErrorCode::InvalidArgument,
                    format!("not a signaling message: {e}"),
                    kind,
                ))
            }
        };
        let kind = req.kind;
        let reply = match req.kind {
            RequestType::Heartbeat => Some(SignalingEvent::HeartbeatAck {
                server_time: now_ms(),
            }),
            RequestType::Ping => Some(SignalingEvent::Pong {
                server_time: now_ms(),
            }),
            RequestType::Auth => Some(self.auth(state, &req).unwrap_or_else(|e| e.event(kind))),
            _ => match self.session {
                None => Some(error(
                    ErrorCode::Unauthorized,
                    "authenticate first: auth {address: sessionId, signature: signalingToken}",
                    Some(req.kind),
                )),
                Some(sid) if req.kind == RequestType::Join => {
                    Some(self.join(state, sid, req).unwrap_or_else(|e| e.event(kind)))
                }
                // Relayed: nothing to answer unless refused.
                Some(sid) => relay(state, sid, req).err().map(|e| e.event(kind)),
            },
        };
        if let Some(ev) = reply {
            self.reply(&ev);
        }
    }

    fn auth(
        &mut self,
        state: &AppState,
        req: &SignalingRequest,
    ) -> Result<SignalingEvent, Refused> {
        let hub = state.signaling();
        let sid = req
            .address
            .as_deref()
            .and_then(|a| a.parse::<SessionId>().ok());
        let (Some(sid), Some(sig)) = (sid, req.signature.as_deref()) else {
            return Err(refused(
                ErrorCode::Unauthorized,
                "auth needs address (the session id) and signature (its signalingToken)",
            ));
        };
        // Wrong, expired or another session's token, and an unknown or expired session: the
        // same answer (no oracle).
        let refused_auth = || {
            refused(
                ErrorCode::Unauthorized,
                "unauthorized: signature is not a valid signalingToken of a live session",
            )
        };
        if !hub.verify(sid, sig, now_ms()) {
            return Err(refused_auth());
        }
        if let Some(current) = self.session {
            if current != sid {
                return Err(refused(
                    ErrorCode::InvalidArgument,
                    "this socket is authenticated as another session; open a new socket",
                ));
            }
            return Ok(SignalingEvent::AuthOk {
                session_id: sid.to_string(),
            });
        }
        if state.cluster().is_some() && state.status(sid).is_none() {
            // Handshaked on another node: known here from its record in the cluster.
            block_on(state.cluster_import(sid));
        }
        if state.status(sid).is_none() {
            return Err(refused_auth());
        }
        let mut rooms = hub.lock();
        if let Some(old) = rooms.members.get(&sid) {
            old.close.send_replace(Some((close::REPLACED, "replaced")));
            let old_conn = old.conn;
            rooms.remove(sid, old_conn, "replaced");
        }
        rooms.members.insert(
            sid,
            Member {
                conn: self.conn,
                tx: self.tx.clone(),
                close: self.close.clone(),
                room: None,
            },
        );
        self.session = Some(sid);
        tracing::info!(session = %sid, conn = self.conn, "signaling socket authenticated");
        Ok(SignalingEvent::AuthOk {
            session_id: sid.to_string(),
        })
    }

    fn join(
        &mut self,
        state: &AppState,
        sid: SessionId,
        req: SignalingRequest,
    ) -> Result<SignalingEvent, Refused> {
        let Some(room) = req.room_id else {
            return Err(refused(ErrorCode::InvalidArgument, "join needs roomId"));
        };
        validate_room_name(&room).map_err(|why| refused(ErrorCode::InvalidArgument, why))?;
        // The room access policy of lane rooms holds here too (issue 12, PROTOCOL.md §6.1):
        // otherwise a stranger could meet a room's members and set up peer links outside it.
        let who = state.registry().admission(sid).and_then(|(_, who)| who);
        crate::auth::policy::admit(
            state.auth().room_access(),
            who.as_ref(),
            &room,
            crate::now_ms(),
        )
        .map_err(|e| refused(e.code, e.error))?;
        let hub = state.signaling();
        let current = hub.lock().members.get(&sid).and_then(|m| m.room.clone());
        // Several nodes: the join is written to the room's stream first (no lock held), and
        // its answer lists the members on the other nodes.
        let published = match state.cluster() {
            Some(c) if current.as_deref() != Some(room.as_str()) => {
                let joined = Publish {
                    room: signaling_room(&room),
                    kind: Kind::SigJoined,
                    sid,
                    lane: 0,
                    to: None,
                    body: String::new(),
                    at_ms: 0,
                    token: 0,
                };
                match block_on(c.publish_now(&joined)) {
                    Some(Ok(Some(p))) => Some((c.clone(), p)),
                    other => {
                        tracing::warn!(session = %sid, room, answer = ?other.map(|r| r.map(|_| ())), "cluster signaling join failed");
                        return Err(refused(
                            ErrorCode::Internal,
                            "the cluster's store is unreachable; retry the join",
                        ));
                    }
                }
            }
            _ => None,
        };
        let mut rooms = hub.lock();
        let current = rooms.members.get(&sid).and_then(|m| m.room.clone());
        if current.as_deref() != Some(room.as_str()) {
            rooms.leave(sid, "left");
            if let Some((c, p)) = &published {
                if !rooms.rooms.contains_key(&room) {
                    let remote = p
                        .members
                        .iter()
                        .filter(|m| m.sid != sid && m.node != c.node())
                        .map(|m| (m.sid, m.node.clone()))
                        .collect();
                    rooms.remote.insert(room.clone(), remote);
                }
            }
            let list = rooms.rooms.entry(room.clone()).or_default();
            let others = list.clone();
            list.push(sid);
            if let Some(m) = rooms.members.get_mut(&sid) {
                m.room = Some(room.clone());
            }
            let ev = SignalingEvent::PeerJoined {
                room_id: room.clone(),
                from: sid.to_string(),
            };
            for o in others {
                rooms.send(o, &ev);
            }
        }
        let mut peers: Vec<String> = rooms
            .rooms
            .get(&room)
            .map(|l| {
                l.iter()
                    .filter(|m| **m != sid)
                    .map(ToString::to_string)
                    .collect()
            })
            .unwrap_or_default();
        peers.extend(
            rooms
                .remote_members(&room)
                .iter()
                .filter(|m| **m != sid)
                .map(ToString::to_string),
        );
        drop(rooms);
        if let Some((c, p)) = published {
            c.watch(&signaling_room(&room), p.cursor);
        }
        Ok(SignalingEvent::Joined {
            room_id: room,
            peers,
        })
    }
}

/// Relays an offer / answer / ice / end from `sid` (see the module docs).
fn relay(state: &AppState, sid: SessionId, req: SignalingRequest) -> Result<(), Refused> {
    let bad = |code, why: String| -> Refused { (code, why) };
    if req.data.is_none() && req.kind != RequestType::End {
        return Err(bad(
            ErrorCode::InvalidArgument,
            "offer, answer and ice carry their payload in data".into(),
        ));
    }
    let data_to = req
        .data
        .as_ref()
        .and_then(|d| d.get("to"))
        .and_then(Value::as_str);
    let named = match (req.to.as_deref(), data_to) {
        (Some(a), Some(b)) if a != b => {
            return Err(bad(
                ErrorCode::InvalidArgument,
                "to and data.to differ".into(),
            ))
        }
        (Some(t), _) | (None, Some(t)) => Some(t.to_owned()),
        (None, None) => None,
    };
    let hub = state.signaling();
    let rooms = hub.lock();
    let Some(room) = rooms.members.get(&sid).and_then(|m| m.room.clone()) else {
        return Err(bad(
            ErrorCode::NotInRoom,
            "join a room before signaling".into(),
        ));
    };
    let mut list = rooms.rooms.get(&room).cloned().unwrap_or_default();
    let remote = rooms.remote_members(&room);
    list.extend(remote.iter().copied());
    let target = match named {
        Some(t) => match t.parse::<SessionId>() {
            Ok(t) if t != sid && list.contains(&t) => t,
            // Issue 12: a member addresses members of its own room only; the same answer
            // whether the id names a session elsewhere or none.
            _ => {
                return Err(bad(
                    ErrorCode::Forbidden,
                    format!("{t:?} is not another member of room {room:?}"),
                ))
            }
        },
        None => {
            let others: Vec<_> = list.iter().filter(|m| **m != sid).collect();
            match others.as_slice() {
                [only] => **only,
                [] => {
                    return Err(bad(
                        ErrorCode::UnknownTarget,
                        format!("nobody else is in room {room:?}"),
                    ))
                }
                _ => {
                    return Err(bad(
                        ErrorCode::InvalidArgument,
                        "several peers in the room: name the target with to".into(),
                    ))
                }
            }
        }
    };
    let relayed = Relayed {
        room_id: room.clone(),
        from: sid.to_string(),
        to: target.to_string(),
        data: req.data.unwrap_or(Value::Null),
    };
    let ev = match req.kind {
        RequestType::Offer => SignalingEvent::Offer(relayed),
        RequestType::Answer => SignalingEvent::Answer(relayed),
        RequestType::Ice => SignalingEvent::Ice(relayed),
        _ => SignalingEvent::End(relayed),
    };
    // Encoded (work proportional to the payload) after the hub's lock is released.
    let tx = rooms.members.get(&target).map(|m| m.tx.clone());
    drop(rooms);
    if remote.contains(&target) {
        // Held by another node: through the room's stream.
        let Some(c) = state.cluster() else {
            return Ok(());
        };
        let publish = Publish {
            room: signaling_room(&room),
            kind: Kind::SigRelay,
            sid,
            lane: 0,
            to: Some(target),
            body: encode(&ev).to_string(),
            at_ms: 0,
            token: 0,
        };
        return if c.publish(publish) {
            Ok(())
        } else {
            Err(bad(
                ErrorCode::Backpressure,
                "the cluster's outbound queue is full; not delivered, retry later".into(),
            ))
        };
    }
    let delivered = tx.is_some_and(|tx| tx.try_send(encode(&ev)));
    if delivered {
        Ok(())
    } else {
        Err(bad(
            ErrorCode::Backpressure,
            format!("outbound queue full for {target}; not delivered, retry later"),
        ))
    }
}
