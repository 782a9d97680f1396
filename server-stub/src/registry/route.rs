//! Routing and delivery (PROTOCOL.md §5 "Routing"): who receives a Data frame (the sender's
//! room, or the one session named by `to`), and the hand-over of a message, already encoded
//! per receiver ([`Encoded`]), to each receiver's outbound side and SSE history. Also the
//! server's own messages: Control messages and server-originated Data (music state).

use super::encoded::Encoded;
use super::outbound::{self, ControlFrames, Outgoing, SendError};
use super::session::Session;
use super::Registry;
use crate::cluster::resume::RelayKey;
use p3_lanes::core::control::Control;
use p3_lanes::core::error::{ErrorCode, WireError};
use p3_lanes::core::frame::{FrameHeader, SessionId};
use p3_lanes::core::lane::{Encoding, Lane};
use std::time::Instant;

/// One Control message's encodings, each made at most once.
#[derive(Default)]
struct ControlCache {
    /// As JSON, for SSE histories.
    value: Option<serde_json::Value>,
    /// The socket frames.
    frames: ControlFrames,
}

/// A relay recipient chosen under the lock (see [`Registry::route`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Target {
    id: SessionId,
    /// The v1 socket it had when routed (`None`: multiplexed, or reached through SSE only).
    conn: Option<u64>,
    /// The recipient's negotiated encoding for the frame's lane.
    pub(crate) encoding: Encoding,
    /// Whether it keeps an SSE history (which records JSON).
    pub(crate) sse: bool,
}

impl Target {
    /// The recipient session.
    pub(crate) fn id(&self) -> SessionId {
        self.id
    }

    pub(super) fn of(id: SessionId, s: &Session, lane: Lane) -> Option<Target> {
        Some(Target {
            id,
            conn: s.conn.as_ref().filter(|_| !s.mux).map(|c| c.id),
            encoding: s.encoding(lane)?,
            sse: s.sse.is_some(),
        })
    }
}

/// The encodings `targets` need, JSON included when one of them keeps an SSE history.
pub(crate) fn wanted_encodings(targets: &[Target]) -> Vec<Encoding> {
    let mut out: Vec<Encoding> = Vec::new();
    for e in targets
        .iter()
        .map(|t| t.encoding)
        .chain(targets.iter().any(|t| t.sse).then_some(Encoding::Json))
    {
        if !out.contains(&e) {
            out.push(e);
        }
    }
    out
}

/// Routing result: outer `Err` for refusals decided before the payload is decoded, inner
/// `Err` for those reported only if it decodes (see [`Registry::route`]).
pub(crate) type Routed = Result<Result<Vec<Target>, WireError>, Option<WireError>>;

impl Registry {
    /// Who receives Data frame `h` from `sid` (whose socket `conn_id` sent it), in this order
    /// of checks:
    /// - outer `Err`: `lane_not_negotiated` (the sender lacks the lane), or `None` when that
    ///   socket no longer owns the session;
    /// - inner `Err`: routing errors, reported only if the payload decodes: `forbidden` (a
    ///   `to` that is not another member of the sender's room nor the other party of an
    ///   accepted call, whether or not it names a session), `unknown_target` (a member that is not connected) or
    ///   `lane_not_negotiated` (for `to`), `not_in_room` (room relay).
    pub(crate) fn route(
        &mut self,
        sid: SessionId,
        conn_id: u64,
        h: &FrameHeader,
        now: Instant,
    ) -> Routed {
        let Some(sender) = self.sender_session(sid, conn_id) else {
            return Err(None);
        };
        sender.touch(now);
        if sender.encoding(h.lane).is_none() {
            return Err(Some(WireError::new(
                ErrorCode::LaneNotNegotiated,
                format!("lane {} was not negotiated by this session", h.lane),
            )));
        }
        let room = sender.room.clone();
        if let Some(to) = h.to {
            // A member addresses members of its own room only (issue 12): any other id,
            // whether it names a session elsewhere or none, gets the same `forbidden`. The
            // two parties of an accepted call count as members of each other's room
            // (PROTOCOL.md §13.16), whatever their rooms and only while the call lasts.
            let same_room = room
                .as_ref()
                .is_some_and(|r| self.rooms.get(r).is_some_and(|m| m.contains(&to)));
            // A member held by another node (cluster): the relay goes through the room's
            // stream (`state::cluster`), no local receiver.
            if to != sid && room.as_ref().is_some_and(|r| self.is_remote_member(r, to)) {
                return Ok(Ok(Vec::new()));
            }
            if !(same_room || self.calls.connects(sid, to)) || to == sid {
                return Ok(Err(WireError::new(
                    ErrorCode::Forbidden,
                    format!("session {to} is not another member of your room"),
                )));
            }
            let Some(target) = self.live(to, now) else {
                return Ok(Err(WireError::new(
                    ErrorCode::UnknownTarget,
                    format!("session {to} is unknown"),
                )));
            };
            if !target.reachable() {
                return Ok(Err(WireError::new(
                    ErrorCode::UnknownTarget,
                    format!("session {to} is not connected"),
                )));
            }
            let Some(t) = Target::of(to, target, h.lane) else {
                return Ok(Err(WireError::new(
                    ErrorCode::LaneNotNegotiated,
                    format!("session {to} did not negotiate lane {}", h.lane),
                )));
            };
            return Ok(Ok(vec![t]));
        }
        let Some(room) = room else {
            return Ok(Err(WireError::new(
                ErrorCode::NotInRoom,
                "join a room first, or address the message with `to`",
            )));
        };
        let members = self.rooms.get(&room).map(Vec::as_slice).unwrap_or_default();
        let targets = members
            .iter()
            .filter(|&&m| m != sid)
            .filter_map(|&m| {
                let s = self.sessions.get(&m)?;
                if !s.reachable() {
                    // Members are made reachable when they join (rooms.rs); a v1 socket that
                    // closed left its room. Nothing can carry it: say so in the log.
                    tracing::warn!(session = %m, room, "room member unreachable; relay skipped");
                    return None;
                }
                Target::of(m, s, h.lane)
            })
            .collect();
        Ok(Ok(targets))
    }

    /// Queues a message on `lane` from `sender` (`None`: the server) for every target, in its
    /// encoding from `encoded`, and records it in the targets' SSE histories when `history`
    /// (and, for a relay of a cluster room, its stream place `key` in the multiplexed
    /// targets' resume logs, [`crate::cluster::resume`]).
    ///
    /// A multiplexed target gets it through its `Mux` whatever happened to its socket since
    /// the route (the `Mux` outlives sockets); a v1 target only on the socket it was routed to
    /// (a v1 session whose socket changed left its room, and the sender heard `peer-left`).
    /// Returns the targets whose queue or lane was full (their SSE history, if any, has it):
    /// the caller answers `backpressure`.
    pub(crate) fn deliver(
        &mut self,
        sender: Option<SessionId>,
        lane: Lane,
        targets: &[Target],
        encoded: &Encoded<'_>,
        history: bool,
        key: Option<&RelayKey>,
    ) -> Vec<SessionId> {
        let mut refused = Vec::new();
        for t in targets {
            let Some(s) = self.sessions.get_mut(&t.id) else {
                continue;
            };
            if history {
                if let Some(hub) = s.sse.as_mut() {
                    match encoded.json() {
                        Some(text) => hub.push_json(lane, sender, text),
                        None => {
                            tracing::warn!(session = %t.id, "no JSON variant for the SSE history")
                        }
                    }
                }
            }
            let Some(v) = encoded.get(t.encoding) else {
                continue;
            };
            let same_socket =
                s.mux || (t.conn.is_some() && s.conn.as_ref().map(|c| c.id) == t.conn);
            if !same_socket {
                continue;
            }
            let msg = Outgoing {
                lane,
                encoding: v.encoding,
                dict_version: v.dict_version,
                from: sender,
                payload: &v.bytes,
            };
            match outbound::lock(&s.out).send_keyed(&msg, key) {
                Ok(()) | Err(SendError::NotConnected) => {}
                Err(SendError::Full) => refused.push(t.id),
            }
        }
        refused
    }

    /// Queues a Control message for `sid` (socket or multiplexer) and records it in its SSE
    /// history. Never dropped silently: a full queue closes that socket with 1013. `true` if
    /// it was queued or recorded.
    pub(crate) fn send_control(&mut self, sid: SessionId, msg: &Control) -> bool {
        self.send_control_cached(sid, msg, &mut ControlCache::default())
    }

    fn send_control_cached(
        &mut self,
        sid: SessionId,
        msg: &Control,
        frames: &mut ControlCache,
    ) -> bool {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return false;
        };
        let recorded = match s.sse.as_mut() {
            Some(hub) => {
                let value = frames
                    .value
                    .get_or_insert_with(|| serde_json::to_value(msg).unwrap_or_default());
                hub.push_value(Lane::Control, None, value);
                true
            }
            None => false,
        };
        if s.conn.is_none() && !s.mux {
            return recorded;
        }
        // Control messages are the server's own, small and bounded: encoded here.
        let enc = s.encoding(Lane::Control).unwrap_or(Encoding::Msgpack);
        let Some(out) = frames.frames.outgoing(msg, enc, &self.dict) else {
            return recorded;
        };
        outbound::lock(&s.out).send_or_close(sid, &out) || recorded
    }

    /// Queues a Control message on socket `conn_id` of `sid`, if it may still act for it.
    pub(crate) fn reply(&mut self, sid: SessionId, conn_id: u64, msg: &Control) {
        if self.sender_session(sid, conn_id).is_some() {
            self.send_control(sid, msg);
        }
    }

    /// Queues a server-originated Data message (no `from`) on `lane` for `sid` in its encoding
    /// of the lane (from `encoded`), and records it in its SSE history. Like a Control message
    /// it is never dropped silently: a full queue closes the socket with 1013. `false` if the
    /// session is gone or lacks the lane.
    pub(crate) fn send_server(
        &mut self,
        sid: SessionId,
        lane: Lane,
        encoded: &Encoded<'_>,
    ) -> bool {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return false;
        };
        let Some(encoding) = s.encoding(lane) else {
            return false;
        };
        let mut done = false;
        if let Some(hub) = s.sse.as_mut() {
            match encoded.json() {
                Some(text) => {
                    hub.push_json(lane, None, text);
                    done = true;
                }
                None => tracing::warn!(session = %sid, "no JSON variant for the SSE history"),
            }
        }
        let Some(v) = encoded.get(encoding) else {
            return done;
        };
        let msg = Outgoing {
            lane,
            encoding,
            dict_version: v.dict_version,
            from: None,
            payload: &v.bytes,
        };
        outbound::lock(&s.out).send_or_close(sid, &msg) || done
    }

    /// The encodings `sid` needs for a server message on `lane` (its lane encoding, and JSON
    /// for its SSE history); empty if it is gone or lacks the lane.
    pub(crate) fn server_encodings(&self, sid: SessionId, lane: Lane) -> Vec<Encoding> {
        let Some(s) = self.sessions.get(&sid) else {
            return Vec::new();
        };
        let Some(t) = Target::of(sid, s, lane) else {
            return Vec::new();
        };
        wanted_encodings(&[t])
    }

    /// Answers a client's `ping {clientTime}` on `conn_id` with `pong {clientTime,
    /// serverTime}` (seed 001 heartbeat). (Its `rttMs` feeds the music room: the caller's
    /// job, outside this lock.)
    pub(crate) fn answer_ping(&mut self, sid: SessionId, conn_id: u64, client_time: f64) {
        let pong = Control::Pong {
            client_time,
            server_time: crate::now_ms(),
        };
        self.reply(sid, conn_id, &pong);
    }

    /// Closes socket `conn_id` of `sid` with `code` if it is still that session's socket;
    /// `true` if this call set the close reason (rate limits: 4429).
    pub(crate) fn close_socket(
        &mut self,
        sid: SessionId,
        conn_id: u64,
        code: u16,
        reason: &'static str,
    ) -> bool {
        self.conn_session(sid, conn_id)
            .and_then(|s| s.conn.as_ref())
            .is_some_and(|c| c.close.close(code, reason))
    }

    /// Closes `sid`'s socket with 1013: a protocol message found its queue or lane full.
    pub(crate) fn close_full(&mut self, sid: SessionId) {
        if let Some(c) = self.sessions.get(&sid).and_then(|s| s.conn.as_ref()) {
            if c.close
                .close(crate::close::TRY_AGAIN_LATER, "outbound queue full")
            {
                tracing::warn!(session = %sid, "outbound queue full of protocol messages; closing with 1013");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::encoded::Variant;
    use super::super::{Attach, NewSession, HTTP_SENDER};
    use super::*;
    use crate::config::Config;
    use p3_lanes::core::dictionary::Dictionary;
    use p3_lanes::core::mux::{Mux, MuxConfig};
    use std::borrow::Cow;

    fn session(reg: &mut Registry, name: &str, mux: bool) -> SessionId {
        let lanes = vec![
            (Lane::Control, Encoding::Json),
            (Lane::Messaging, Encoding::Json),
        ];
        let mux = mux
            .then(|| Mux::new(MuxConfig::for_lanes(&[Lane::Control, Lane::Messaging], 7)).unwrap());
        reg.create_session(NewSession::websocket(name, lanes), mux, Instant::now())
            .expect("within the session bounds")
            .0
    }

    /// Issue 11 "silent drops": a multiplexed member whose socket changed between the route
    /// and the delivery still gets the message (its `Mux` outlives sockets); before, the
    /// delivery looked for the socket the route saw and skipped the member silently.
    #[test]
    fn a_multiplexed_member_whose_socket_changed_after_the_route_still_gets_it() {
        let mut reg = Registry::new(&Config::default(), Dictionary::current());
        let sender = session(&mut reg, "sender", false);
        let member = session(&mut reg, "member", true);
        let now = Instant::now();
        let Attach::Attached { conn_id, .. } = reg.attach(member, now) else {
            panic!("attached")
        };
        reg.join(sender, "r".into()).unwrap();
        reg.join(member, "r".into()).unwrap();
        let h = FrameHeader::data(Lane::Messaging, Encoding::Json, 1, 0);
        let targets = reg.route(sender, HTTP_SENDER, &h, now).unwrap().unwrap();
        assert_eq!(targets.len(), 1);
        let queued = |reg: &Registry| {
            let t = outbound::lock(&reg.sessions[&member].out);
            let m = t.mux.as_ref().unwrap();
            m.queued_len(Lane::Messaging) + m.unacked_len(Lane::Messaging)
        };
        let before = queued(&reg);
        // Between route and deliver: the socket goes, another one comes.
        reg.detach(member, conn_id, now);
        let Attach::Attached { .. } = reg.attach(member, now) else {
            panic!("attached again")
        };
        let encoded = Encoded::build(
            &serde_json::json!({"text": "hi"}),
            Some(Variant {
                encoding: Encoding::Json,
                bytes: Cow::Borrowed(br#"{"text":"hi"}"#),
                dict_version: 0,
            }),
            [Encoding::Json],
            &Dictionary::current(),
            None,
        );
        let refused = reg.deliver(
            Some(sender),
            Lane::Messaging,
            &targets,
            &encoded,
            true,
            None,
        );
        assert!(refused.is_empty());
        assert_eq!(
            queued(&reg),
            before + 1,
            "the message is in the member's Mux"
        );
    }
}
