//! Room presence (seed 001 `presence:update {status, lastSeen}`; PROTOCOL.md §6.2): who is in a
//! room and since when, told with Control `presence` to the members whose handshake asked for
//! it (feature `presence`). Hooks of [`super::rooms`]: a join tells the joiner every member and
//! the others the joiner; a leave tells the remaining members. The others' messages go through
//! the room's fan-out ([`super::fanout`]), pushed after the registry lock is released, in
//! order after that change's `peer-joined` / `peer-left`. In a cluster (PROTOCOL.md §17) the
//! snapshot also lists the members held by other nodes (`registry::cluster`'s mirror, with
//! join order, join time and last activity from Redis), and other nodes' joins and leaves are
//! told by `Registry::remote_joined` / `remote_left`.
//!
//! Also the registry's counts for the metrics ([`crate::pulse`]).

use super::Registry;
use crate::now_ms;
use p3_lanes::core::control::{Control, PresenceStatus};
use p3_lanes::core::frame::SessionId;

/// What the registry holds now: the gauges of `/metrics` and the pulse stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Census {
    /// Sessions held (expired ones not yet swept included).
    pub(crate) sessions: usize,
    /// Lane rooms with at least one member.
    pub(crate) rooms: usize,
    /// Members of all rooms (a session is in at most one room).
    pub(crate) members: usize,
}

impl Registry {
    /// Sessions, rooms and members now: O(rooms).
    pub(crate) fn census(&self) -> Census {
        Census {
            sessions: self.sessions.len(),
            rooms: self.rooms.len(),
            members: self.rooms.values().map(Vec::len).sum(),
        }
    }

    /// `sid`'s presence in `room`, `online`: its join time and last activity.
    fn presence_online(&self, room: &str, sid: SessionId) -> Option<Control> {
        let s = self.sessions.get(&sid)?;
        Some(Control::Presence {
            room: room.to_owned(),
            session_id: sid,
            status: PresenceStatus::Online,
            since: s.room_since_ms,
            last_seen: s.last_activity_ms,
        })
    }

    /// Whether `sid` asked for presence.
    pub(crate) fn wants_presence(&self, sid: SessionId) -> bool {
        self.sessions.get(&sid).is_some_and(|s| s.presence)
    }

    /// Those of `sids` that asked for presence.
    pub(super) fn presence_listeners(&self, sids: &[SessionId]) -> Vec<SessionId> {
        sids.iter()
            .copied()
            .filter(|m| self.sessions.get(m).is_some_and(|s| s.presence))
            .collect()
    }

    /// `sid` joined `room` at `since` (ms since the epoch), `order` its place in the join
    /// order across nodes (0 on a single node), after its `joined`, `room-key` and the
    /// others' `peer-joined`: records both, tells the joiner every member (itself included,
    /// join order) and tells the `others` the joiner.
    pub(super) fn presence_joined(
        &mut self,
        room: &str,
        sid: SessionId,
        others: &[SessionId],
        (since, order): (u64, u64),
    ) {
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.room_since_ms = since;
            s.room_order = order;
        }
        self.presence_snapshot(room, sid);
        let to = self.presence_listeners(others);
        if let Some(msg) = self.presence_online(room, sid).filter(|_| !to.is_empty()) {
            self.fan_out(room, &to, msg);
        }
    }

    /// Tells `sid`, if it asked for presence, every member of `room` (itself included, join
    /// order), `online` (after every `joined` and `room-key`): the members here and, in a
    /// cluster, those held by other nodes.
    pub(super) fn presence_snapshot(&mut self, room: &str, sid: SessionId) {
        if !self.sessions.get(&sid).is_some_and(|s| s.presence) {
            return;
        }
        let mut all: Vec<(u64, Control)> = self
            .room_members(room)
            .into_iter()
            .filter_map(|m| {
                let order = self.sessions.get(&m)?.room_order;
                Some((order, self.presence_online(room, m)?))
            })
            .collect();
        all.extend(
            self.remote_presence(room)
                .into_iter()
                .map(|(m, order, since, seen)| {
                    let msg = Control::Presence {
                        room: room.to_owned(),
                        session_id: m,
                        status: PresenceStatus::Online,
                        since,
                        last_seen: seen.max(since),
                    };
                    (order, msg)
                }),
        );
        // Stable: on a single node (every order 0) the local join order stays.
        all.sort_by_key(|(order, _)| *order);
        for (_, msg) in all {
            self.send_control(sid, &msg);
        }
    }

    /// `sid` left `room` (its membership already gone): tells the `remaining` members that
    /// asked for presence, `offline`, `lastSeen` now.
    pub(super) fn presence_left(&mut self, room: &str, sid: SessionId, remaining: &[SessionId]) {
        let to = self.presence_listeners(remaining);
        let Some(s) = self.sessions.get(&sid) else {
            return;
        };
        if to.is_empty() {
            return;
        }
        let msg = Control::Presence {
            room: room.to_owned(),
            session_id: sid,
            status: PresenceStatus::Offline,
            since: s.room_since_ms,
            last_seen: now_ms(),
        };
        self.fan_out(room, &to, msg);
    }
}
