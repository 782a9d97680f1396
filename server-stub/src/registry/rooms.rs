//! Lane rooms (seed 001 room maps; PROTOCOL.md §6): `join`, `leave`, membership, and the room
//! key each joiner gets (PROTOCOL.md §13.4). Every join and leave is also recorded as a
//! [`RoomEvent`] for the music service.

use super::fanout::{Fanout, Recipient};
use super::{error_msg, Registry, RoomEvent};
use crate::auth::policy::admit;
use crate::now_ms;
use crate::sse::hub::SseHub;
use p3_lanes::core::control::Control;
use p3_lanes::core::error::{ErrorCode, WireError};
use p3_lanes::core::frame::SessionId;
use p3_lanes::core::lane::{Encoding, Lane};
use std::sync::Arc;

impl Registry {
    /// The room `sid` is in, if any.
    pub(crate) fn room_of(&self, sid: SessionId) -> Option<String> {
        self.sessions.get(&sid)?.room.clone()
    }

    /// The room and verified identity of session `sid` (`None`: unknown session), for
    /// admission checks outside a join ([`crate::auth::turn_user`]).
    pub(crate) fn admission(
        &self,
        sid: SessionId,
    ) -> Option<(Option<String>, Option<crate::auth::VerifiedIdentity>)> {
        let s = self.sessions.get(&sid)?;
        Some((s.room.clone(), s.identity.clone()))
    }

    /// The members of `room`, in join order.
    pub(crate) fn room_members(&self, room: &str) -> Vec<SessionId> {
        self.rooms.get(room).cloned().unwrap_or_default()
    }

    /// The members of `room` with their verified identity keys, in join order.
    pub(crate) fn room_members_identified(&self, room: &str) -> Vec<(SessionId, Option<String>)> {
        self.room_members(room)
            .into_iter()
            .map(|m| (m, self.identity_key(m)))
            .collect()
    }

    /// The verified identity key of session `sid` (`"<kind>:<id>"`), if it has one.
    pub(crate) fn identity_key(&self, sid: SessionId) -> Option<String> {
        let s = self.sessions.get(&sid)?;
        s.identity.as_ref().map(|i| i.identity.key())
    }

    /// Takes `sid` out of its room, telling the other members (`peer-left`), then hands the
    /// room's new key to them (and only them: `sid` is no longer a member), PROTOCOL.md
    /// §13.4. Every way out of a room goes through here (`leave`, a `join` elsewhere,
    /// `DELETE`, expiry, a v1 socket closing); `explicit` as [`RoomEvent::Left`]. Returns the
    /// room.
    pub(super) fn leave_room(&mut self, sid: SessionId, explicit: bool) -> Option<String> {
        let room = self.sessions.get_mut(&sid)?.room.take()?;
        let mut others = Vec::new();
        if let Some(members) = self.rooms.get_mut(&room) {
            members.retain(|m| *m != sid);
            others.clone_from(members);
            if members.is_empty() {
                self.rooms.remove(&room);
                self.remote.remove(&room);
                // Its outbox goes too unless a fan-out is still on its way through it.
                if self
                    .outboxes
                    .get(&room)
                    .is_some_and(|o| Arc::strong_count(o) == 1)
                {
                    self.outboxes.remove(&room);
                }
            }
        }
        let msg = Control::PeerLeft {
            room: room.clone(),
            session_id: sid,
        };
        self.fan_out(&room, &others, msg);
        if let Some(key) = self.room_keys.rotate(&room, others.len()) {
            self.fan_out(&room, &others, key);
        }
        self.presence_left(&room, sid, &others);
        self.events.push(RoomEvent::Left {
            room: room.clone(),
            sid,
            remaining: others,
            explicit,
        });
        Some(room)
    }

    /// `join {room}` from `sid` (already validated): leaves any other room (`left` to it,
    /// `peer-left` to the others there), joins, answers `joined` with all members, sends the
    /// `room-key` and tells the others `peer-joined`. Joining the current room again only
    /// repeats `joined` and `room-key`.
    ///
    /// A member that nothing can reach (no socket, no multiplexer, no SSE history: a session
    /// that joined with a `POST` before opening anything) gets an SSE history now, so what the
    /// room sends it waits there (bounded, with a `discontinuity` for what it forgets) instead
    /// of being dropped.
    ///
    /// Errors (nothing changes, the session stays in its current room, gets no `joined` and
    /// no `room-key`, and no member hears of it): `auth_required` / `forbidden` when the room
    /// access policy does not admit it ([`crate::auth::policy`], checked first, also for the
    /// room it is in), `too_many_requests` when `room` would be a new room beyond
    /// `--max-rooms`, `room_full` when it has `--max-room-members` members.
    pub(crate) fn join(&mut self, sid: SessionId, room: String) -> Result<(), WireError> {
        self.join_at(sid, room, (now_ms(), 0))
    }

    /// [`Registry::join`] with the join's time (ms since the epoch) and its place in the join
    /// order across nodes: `(since, order)` (a cluster's `joined` entry: its time and number).
    pub(crate) fn join_at(
        &mut self,
        sid: SessionId,
        room: String,
        stamp: (u64, u64),
    ) -> Result<(), WireError> {
        let (events, bytes) = self.sse_limits;
        self.join_check(sid, &room)?;
        let Some(s) = self.sessions.get_mut(&sid) else {
            return Ok(());
        };
        if !s.reachable() {
            s.sse = Some(SseHub::new(events, bytes));
        }
        if s.room.as_deref() != Some(room.as_str()) {
            if let Some(old) = self.leave_room(sid, true) {
                self.send_control(sid, &Control::Left { room: old });
            }
            let members = self.rooms.entry(room.clone()).or_default();
            let others = members.clone();
            members.push(sid);
            if let Some(s) = self.sessions.get_mut(&sid) {
                s.room = Some(room.clone());
            }
            self.send_joined(sid, &room);
            let msg = Control::PeerJoined {
                room: room.clone(),
                session_id: sid,
            };
            self.fan_out(&room, &others, msg);
            self.presence_joined(&room, sid, &others, stamp);
            let members = self.room_members_identified(&room);
            self.events.push(RoomEvent::Joined { room, sid, members });
        } else {
            self.send_joined(sid, &room);
            self.presence_snapshot(&room, sid);
        }
        Ok(())
    }

    /// Tells `sids`, members of `room`, Control `msg`: recorded in their SSE histories now, and
    /// queued in the room's outbox for their sockets and multiplexers, pushed once the registry
    /// lock is released, in the order of the room's changes ([`super::fanout`]). Under the lock
    /// this costs an `Arc` clone per receiver, not a push (issue 11 "No global stall").
    pub(super) fn fan_out(&mut self, room: &str, sids: &[SessionId], msg: Control) {
        let mut value = None;
        let mut to = Vec::with_capacity(sids.len());
        for &sid in sids {
            let Some(s) = self.sessions.get_mut(&sid) else {
                continue;
            };
            if let Some(hub) = s.sse.as_mut() {
                let v = value.get_or_insert_with(|| serde_json::to_value(&msg).unwrap_or_default());
                hub.push_value(Lane::Control, None, v);
            }
            if s.conn.is_none() && !s.mux {
                continue;
            }
            let encoding = match s.encoding(Lane::Control) {
                Some(Encoding::Json) => Encoding::Json,
                _ => Encoding::Msgpack,
            };
            to.push(Recipient {
                sid,
                transport: s.out.clone(),
                encoding,
            });
        }
        if to.is_empty() {
            return;
        }
        let outbox = self.outboxes.entry(room.to_owned()).or_default().clone();
        outbox.push(Fanout { msg, to });
        if !self.fanouts.iter().any(|o| Arc::ptr_eq(o, &outbox)) {
            self.fanouts.push(outbox);
        }
    }

    /// `joined` with the members, then the `room-key` (PROTOCOL.md §13.4).
    fn send_joined(&mut self, sid: SessionId, room: &str) {
        let mut members = self.room_members(room);
        members.extend(self.remote_members(room));
        self.send_control(
            sid,
            &Control::Joined {
                room: room.to_owned(),
                members,
            },
        );
        if let Some(msg) = self.room_keys.join(room) {
            self.send_control(sid, &msg);
        }
    }

    /// `leave {room}` from `sid`: `left` to it and `peer-left` to the others, or a
    /// `not_in_room` error (Control lane, `seq`) if `room` is not its current room.
    pub(crate) fn leave(&mut self, sid: SessionId, room: String, seq: u64) {
        let current = self.sessions.get(&sid).and_then(|s| s.room.as_deref());
        if current == Some(room.as_str()) {
            self.leave_room(sid, true);
            self.send_control(sid, &Control::Left { room });
        } else {
            let msg = format!("not in room {room:?}");
            self.send_control(
                sid,
                &error_msg(
                    ErrorCode::NotInRoom,
                    msg,
                    Some(Lane::Control.id()),
                    Some(seq),
                ),
            );
        }
    }

    /// The refusals of [`Registry::join`] (room access policy, `--max-rooms`,
    /// `--max-room-members`), checked without joining; `Ok` for an unknown session.
    pub(crate) fn join_check(&self, sid: SessionId, room: &str) -> Result<(), WireError> {
        let Some(s) = self.sessions.get(&sid) else {
            return Ok(());
        };
        admit(self.room_access, s.identity.as_ref(), room, now_ms())?;
        if s.room.as_deref() != Some(room) {
            match self.rooms.get(room) {
                None if self.rooms.len() >= self.bounds.max_rooms => {
                    return Err(WireError::new(
                        ErrorCode::TooManyRequests,
                        format!(
                            "the server holds its maximum of {} rooms; join an existing one or retry later",
                            self.bounds.max_rooms
                        ),
                    ));
                }
                Some(members) if members.len() >= self.bounds.max_room_members => {
                    return Err(WireError::new(
                        ErrorCode::RoomFull,
                        format!(
                            "room {room:?} is full ({} members)",
                            self.bounds.max_room_members
                        ),
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}
