//! The registry's side of a cluster ([`crate::cluster`]): sessions imported from another
//! node's record, and per room a mirror of the members held by other nodes (session → node),
//! kept from the room stream's `joined` / `moved` / `left` entries, with what presence needs
//! of them (PROTOCOL.md §6.2: join order, join time, last activity as stored in Redis). Map
//! updates only: the Redis I/O happens in `state::cluster`, before or after the lock.

use super::outbound;
use super::route::Target;
use super::session::Session;
use super::Registry;
use crate::auth::{SessionToken, Tickets, VerifiedIdentity};
use crate::close;
use crate::cluster::record::{transport_name, SessionRecord};
use crate::cluster::resume::ResumeCursor;
use crate::cluster::Member;
use crate::limits::ip::IpKey;
use p3_lanes::core::control::{Control, PresenceStatus};
use p3_lanes::core::frame::SessionId;
use p3_lanes::core::lane::Lane;
use p3_lanes::core::mux::Mux;
use p3_lanes::core::sse::is_sse_transport;
use p3_lanes::core::sse::post::PostLedger;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A member of a room held by another node, as this node knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RemoteMember {
    /// The node holding it.
    pub(crate) node: String,
    /// Its join order (the entry number of its `joined`).
    pub(crate) order: u64,
    /// When it joined, ms since the epoch.
    pub(crate) since: u64,
    /// When its node last heard from it, ms since the epoch, as last read from Redis (its
    /// join, or its record's `seen`).
    pub(crate) seen: u64,
}

impl RemoteMember {
    fn of(m: &Member) -> RemoteMember {
        RemoteMember {
            node: m.node.clone(),
            order: m.order,
            since: m.since,
            seen: m.since,
        }
    }
}

impl Registry {
    /// Whether `sid` is a session of this node (live or not yet swept).
    pub(crate) fn has_session(&self, sid: SessionId) -> bool {
        self.sessions.contains_key(&sid)
    }

    /// The record another node needs to serve `sid`; `None` if unknown.
    pub(crate) fn record(&self, sid: SessionId, token: &str) -> Option<SessionRecord> {
        let s = self.sessions.get(&sid)?;
        Some(SessionRecord {
            token: token.to_owned(),
            client_id: s.client_id.clone(),
            wallet: s.wallet.clone(),
            device_info: s.device_info.clone(),
            transport: s.transport.to_owned(),
            lanes: s.lanes.clone(),
            created_at_ms: s.created_at_ms,
            mux: s.mux,
            identity: s.identity.as_ref().map(|v| v.identity.clone()),
            identity_rooms: s.identity.as_ref().and_then(|v| v.rooms.clone()),
            identity_expires_at_ms: s.identity.as_ref().and_then(|v| v.expires_at_ms),
            accept_calls_from: s.accept_calls_from.clone(),
            presence: s.presence,
        })
    }

    /// Makes `rec` a session of this node (an older copy of it here is dropped without a
    /// word: it moved). It counts as attached (another node served its handshake), under
    /// `--max-sessions`, and under no client address of its own. `false` for a record with a
    /// malformed token or at `--max-sessions`.
    pub(crate) fn import(
        &mut self,
        sid: SessionId,
        rec: SessionRecord,
        mux: Option<Mux>,
        now: Instant,
    ) -> bool {
        let Some(token) = SessionToken::from_wire(&rec.token) else {
            return false;
        };
        self.drop_moved(sid);
        if self.sessions.len() >= self.bounds.max_sessions {
            tracing::warn!(session = %sid, "session not taken over: this node holds --max-sessions");
            return false;
        }
        let (events, bytes) = self.sse_limits;
        let transport = transport_name(&rec.transport);
        let identity = rec.identity.map(|identity| VerifiedIdentity {
            identity,
            rooms: rec.identity_rooms,
            expires_at_ms: rec.identity_expires_at_ms,
        });
        self.sessions.insert(
            sid,
            Session {
                token,
                tickets: Tickets::default(),
                client_id: rec.client_id,
                wallet: rec.wallet,
                device_info: rec.device_info,
                transport,
                lanes: rec.lanes,
                created_at_ms: rec.created_at_ms,
                last_activity: now,
                last_activity_ms: crate::now_ms(),
                room: None,
                ip: IpKey::of(None),
                attached: true,
                mux: mux.is_some(),
                out: Arc::new(Mutex::new(outbound::Transport {
                    conn: None,
                    mux,
                    resume: Default::default(),
                })),
                conn: None,
                sse: is_sse_transport(transport)
                    .then(|| crate::sse::hub::SseHub::new(events, bytes)),
                posts: PostLedger::new(),
                identity,
                accept_calls_from: rec.accept_calls_from,
                room_since_ms: 0,
                room_order: 0,
                presence: rec.presence,
            },
        );
        self.sessions_per_ip.add(IpKey::of(None));
        true
    }

    /// Drops this node's copy of `sid` without telling anyone (its client went to another
    /// node, which holds it now): out of its room here, socket closed with 4409.
    pub(crate) fn drop_moved(&mut self, sid: SessionId) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        if let Some(room) = s.room.take() {
            if let Some(members) = self.rooms.get_mut(&room) {
                members.retain(|m| *m != sid);
                if members.is_empty() {
                    self.rooms.remove(&room);
                }
            }
        }
        if let Some(s) = self.remove_session(sid) {
            if let Some(c) = s.conn {
                c.close
                    .close(close::REPLACED, "session taken over by another node");
            }
        }
    }

    /// Sets the mirror of `room` from its members hash: every member held by another node
    /// than `node` and not a member of the room here. A session this node merely knows (it
    /// answered its handshake, or held it before it moved) counts as remote: its copy here
    /// is not in the room.
    pub(crate) fn set_remote(&mut self, room: &str, members: &[Member], node: &str) {
        let local = self.rooms.get(room);
        let remote: HashMap<SessionId, RemoteMember> = members
            .iter()
            .filter(|m| m.node != node && !local.is_some_and(|l| l.contains(&m.sid)))
            .map(|m| (m.sid, RemoteMember::of(m)))
            .collect();
        self.remote.insert(room.to_owned(), remote);
    }

    /// The last activity of members of `room` held by other nodes, read from Redis (`seen`,
    /// ms since the epoch): kept where it is later than what this node knew.
    pub(crate) fn update_seen(&mut self, room: &str, seen: &[(SessionId, u64)]) {
        let Some(mirror) = self.remote.get_mut(room) else {
            return;
        };
        for (sid, at) in seen {
            if let Some(m) = mirror.get_mut(sid) {
                m.seen = m.seen.max(*at);
            }
        }
    }

    /// Whether this node keeps a view of `room`'s members on other nodes (it has members
    /// there and reads its stream).
    pub(crate) fn has_remote_view(&self, room: &str) -> bool {
        self.remote.contains_key(room)
    }

    /// The members of `room` on other nodes.
    pub(crate) fn remote_members(&self, room: &str) -> Vec<SessionId> {
        crate::cluster::remote_sids(&self.remote, room)
    }

    /// Puts `sid` (just imported) back in `room` without telling anyone: it never left, its
    /// client only reconnected through another node. `me` is its entry in the room's members
    /// hash (join order and time kept across the move).
    pub(crate) fn adopt_room(&mut self, sid: SessionId, room: &str, me: Option<&Member>) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        s.room = Some(room.to_owned());
        if let Some(me) = me {
            s.room_order = me.order;
            s.room_since_ms = me.since;
        }
        let members = self.rooms.entry(room.to_owned()).or_default();
        if !members.contains(&sid) {
            members.push(sid);
        }
        if let Some(m) = self.remote.get_mut(room) {
            m.remove(&sid);
        }
    }

    /// Another node says `member` joined `room` or now holds it (`at`: when, ms): a session
    /// of this node by that id moved away (dropped here); a member new to this node is
    /// announced to the local members (`peer-joined`, then presence `online` to those that
    /// asked for it).
    pub(crate) fn remote_joined(&mut self, room: &str, member: &Member, at: u64) {
        let sid = member.sid;
        let was_local = self.sessions.contains_key(&sid);
        let local_member = self.rooms.get(room).is_some_and(|m| m.contains(&sid));
        if was_local {
            self.drop_moved(sid);
        }
        let locals = self.room_members(room);
        let mirror = self.remote.entry(room.to_owned()).or_default();
        let entry = RemoteMember {
            seen: at.max(member.since),
            ..RemoteMember::of(member)
        };
        let known = mirror.insert(sid, entry.clone()).is_some() || local_member;
        if !known {
            let msg = Control::PeerJoined {
                room: room.to_owned(),
                session_id: sid,
            };
            self.fan_out(room, &locals, msg);
            let to = self.presence_listeners(&locals);
            if !to.is_empty() {
                let msg = Control::Presence {
                    room: room.to_owned(),
                    session_id: sid,
                    status: PresenceStatus::Online,
                    since: entry.since,
                    last_seen: entry.seen,
                };
                self.fan_out(room, &to, msg);
            }
        }
    }

    /// Another node says `sid` left `room` at `at` (ms): the local members hear `peer-left`
    /// if it was a member there (a `left` from a node that no longer holds it is stale and
    /// ignored), then presence `offline` (those that asked for it). `true` if it was.
    pub(crate) fn remote_left(&mut self, room: &str, sid: SessionId, node: &str, at: u64) -> bool {
        let Some(mirror) = self.remote.get_mut(room) else {
            return false;
        };
        if mirror.get(&sid).map(|m| m.node.as_str()) != Some(node) {
            return false;
        }
        let Some(gone) = mirror.remove(&sid) else {
            return false;
        };
        let locals = self.room_members(room);
        let msg = Control::PeerLeft {
            room: room.to_owned(),
            session_id: sid,
        };
        self.fan_out(room, &locals, msg);
        let to = self.presence_listeners(&locals);
        if !to.is_empty() {
            let msg = Control::Presence {
                room: room.to_owned(),
                session_id: sid,
                status: PresenceStatus::Offline,
                since: gone.since,
                last_seen: at.max(gone.seen),
            };
            self.fan_out(room, &to, msg);
        }
        true
    }

    /// The members of `room` held by other nodes with their presence, `(sid, order, since,
    /// lastSeen)`.
    pub(crate) fn remote_presence(&self, room: &str) -> Vec<(SessionId, u64, u64, u64)> {
        self.remote
            .get(room)
            .map(|m| {
                m.iter()
                    .map(|(sid, r)| (*sid, r.order, r.since, r.seen))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The local receivers of a relay read from `room`'s stream: every local member but
    /// `from` that negotiated `lane`, or only `to` when it is one.
    pub(crate) fn local_targets(
        &self,
        room: &str,
        lane: Lane,
        from: SessionId,
        to: Option<SessionId>,
    ) -> Vec<Target> {
        self.room_members(room)
            .into_iter()
            .filter(|&m| m != from && to.map_or(true, |t| t == m))
            .filter_map(|m| {
                let s = self.sessions.get(&m)?;
                s.reachable().then(|| Target::of(m, s, lane)).flatten()
            })
            .collect()
    }

    /// The room whose stream a relay from `sid` must be written to: its room, whenever it
    /// has one. Also when no other node is known to hold a member: a member may be moving
    /// to another node right now (its new node reads the stream from the move on, the
    /// old one has not heard of it yet), and a relay it misses would be lost silently.
    pub(crate) fn cluster_reach(&self, sid: SessionId) -> Option<String> {
        self.sessions.get(&sid)?.room.clone()
    }

    /// Whether `to` is a member of `room` held by another node.
    pub(crate) fn is_remote_member(&self, room: &str, to: SessionId) -> bool {
        self.remote.get(room).is_some_and(|m| m.contains_key(&to))
    }

    /// A key of `room` from the cluster (`"<keyId>:<key>"`, set at `stamp`; PROTOCOL.md
    /// §17 "Room keys"): if it is newer than the one held here, it is kept and sent to the
    /// room's members here (after whatever they were told before). `for_join`: a member is
    /// about to join here, keep it even if the room has none here yet; otherwise a room with
    /// no member here keeps nothing.
    pub(crate) fn shared_room_key(
        &mut self,
        room: &str,
        stamp: crate::room_key::Stamp,
        key: &str,
        for_join: bool,
    ) {
        let locals = self.room_members(room);
        if locals.is_empty() && !for_join {
            return;
        }
        if let Some(msg) = self.room_keys.adopt(room, stamp, key) {
            self.fan_out(room, &locals, msg);
        }
    }

    /// Forgets `room`'s key if no member is left here (a cluster join that failed after
    /// its key was kept).
    pub(crate) fn forget_room_key_if_empty(&mut self, room: &str) {
        if !self.rooms.contains_key(room) {
            self.room_keys.forget(room);
        }
    }

    /// Starts `sid`'s resume log at `cursor` (it joined, or was taken over with its room).
    pub(crate) fn start_resume(&self, sid: SessionId, cursor: ResumeCursor) {
        if let Some(s) = self.sessions.get(&sid).filter(|s| s.mux) {
            outbound::lock(&s.out).resume.start(cursor);
        }
    }

    /// Every multiplexed session in a room, its room and its transport (whose resume log the
    /// caller folds, with that lock only).
    pub(crate) fn resume_transports(&self) -> Vec<(SessionId, String, outbound::SharedTransport)> {
        self.sessions
            .iter()
            .filter(|(_, s)| s.mux)
            .filter_map(|(id, s)| Some((*id, s.room.clone()?, s.out.clone())))
            .collect()
    }

    /// `sid` as the receiver of a relay on `lane` (`None`: unknown, or `lane` not negotiated).
    pub(crate) fn target_of(&self, sid: SessionId, lane: Lane) -> Option<Target> {
        Target::of(sid, self.sessions.get(&sid)?, lane)
    }

    /// Sessions this node holds attached (a socket or an open SSE stream) and their last
    /// activity (ms since the epoch): their records' TTL is refreshed in the cluster's store,
    /// and their `seen` set (presence `lastSeen` for other nodes).
    pub(crate) fn held_sessions(&self) -> Vec<(SessionId, u64)> {
        self.sessions
            .iter()
            .filter(|(_, s)| s.conn.is_some() || s.sse.as_ref().is_some_and(|h| h.streams > 0))
            .map(|(id, s)| (*id, s.last_activity_ms))
            .collect()
    }
}
