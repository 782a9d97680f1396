//! The app state's side of a cluster ([`crate::cluster`]): sessions stored and taken over,
//! joins written to the room's stream before the registry joins, relays written after local
//! delivery, and the stream reader delivering other nodes' entries to this node's members.
//! Every Redis call here runs with no lock held (module docs of [`super`]).

use super::AppState;
use crate::cluster::resume::{self, RelayKey, ResumeCursor, RESUME_FLUSH};
use crate::cluster::{block_on, Cluster, Entry, Kind, Member, Publish, Step, Stored};
use crate::error::AppError;
use crate::music::Delivery;
use crate::now_ms;
use crate::registry::outbound;
use crate::registry::{error_msg, RoomEvent};
use crate::state::RelayNote;
use p3_lanes::core::auth::{AuthReason, HandshakeAuth};
use p3_lanes::core::error::ErrorCode;
use p3_lanes::core::frame::SessionId;
use p3_lanes::core::lane::Lane;
use p3_lanes::core::sse::is_sse_transport;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Other nodes' pulse `metrics` messages passed to this node's pulse connections per second
/// at most (burst as many): 20 nodes at the fastest useful interval.
pub const PULSE_IN_RATE: u32 = 20;

/// The nonce a sign-in spends (device key or SIWE), if any.
fn auth_nonce(auth: &HandshakeAuth) -> Option<String> {
    match auth {
        HandshakeAuth::Device(d) => Some(d.nonce.clone()),
        HandshakeAuth::Siwe(s) => crate::auth::siwe::parse(&s.message).ok().map(|m| m.nonce),
        HandshakeAuth::Token(_) => None,
    }
}

impl AppState {
    /// The cluster, with `--redis-url`.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// A new session is stored in the cluster with its token and first ticket, so that any
    /// node can serve it. A Redis failure is logged: the session then works on this node only.
    pub(crate) async fn cluster_session_created(&self, sid: SessionId, token: &str, ticket: &str) {
        let Some(c) = self.cluster() else {
            return;
        };
        let Some(rec) = self.registry().record(sid, token) else {
            return;
        };
        if let Err(e) = c.store_session(sid, &rec, ticket).await {
            tracing::warn!(session = %sid, error = %e, "session not stored in the cluster");
        }
    }

    /// With a cluster: makes sure the seed 001 signaling server uses the cluster's token
    /// secret (fetched, or stored if none, once; no lock held), so a `signalingToken` minted
    /// by any node is good on every node. A Redis failure is logged: tokens stay this node's
    /// until a later call succeeds.
    pub(crate) async fn cluster_signaling_secret(&self) {
        let Some(c) = self.cluster() else {
            return;
        };
        let hub = self.signaling();
        if hub.has_shared() {
            return;
        }
        let mut candidate = [0u8; 32];
        if getrandom::fill(&mut candidate).is_err() {
            return;
        }
        match c.signaling_secret(&candidate).await {
            Ok(secret) => hub.set_shared(secret),
            Err(e) => {
                tracing::warn!(error = %e, "signaling secret not shared: tokens are good on this node only")
            }
        }
    }

    /// A ticket minted here is stored in the cluster (usable on any node, once).
    pub(crate) async fn cluster_ticket_minted(&self, sid: SessionId, ticket: &str) {
        if let Some(c) = self.cluster() {
            if let Err(e) = c.store_ticket(sid, ticket).await {
                tracing::warn!(session = %sid, error = %e, "ticket not stored in the cluster");
            }
        }
    }

    /// Uses ticket `ticket` of `sid`: true if it was live. In a cluster Redis decides (a
    /// ticket is used once for all nodes); a Redis error refuses it.
    pub(crate) async fn redeem(&self, sid: SessionId, ticket: &str) -> bool {
        let local = self.registry().redeem_ticket(sid, ticket, Instant::now());
        let Some(c) = self.cluster() else {
            return local;
        };
        match c.redeem_ticket(sid, ticket).await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(session = %sid, error = %e, "ticket refused: the cluster store is unreachable");
                false
            }
        }
    }

    /// A sign-in nonce issued here is stored in the cluster (usable on any node, once).
    pub(crate) async fn cluster_nonce_issued(&self, nonce: &str) {
        let Some(c) = self.cluster() else {
            return;
        };
        let ttl_ms = u64::try_from(self.auth().nonces().ttl().as_millis()).unwrap_or(u64::MAX);
        if let Err(e) = c.store_nonce(nonce, ttl_ms).await {
            tracing::warn!(error = %e, "sign-in nonce not stored in the cluster: usable on this node only");
        }
    }

    /// Before a handshake's `auth` is verified: a nonce another node issued, live in the
    /// cluster, is made known to this node's nonce store (used or not).
    pub(crate) async fn cluster_nonce_adopt(&self, auth: &HandshakeAuth) {
        let (Some(c), Some(nonce)) = (self.cluster(), auth_nonce(auth)) else {
            return;
        };
        match c.peek_nonce(&nonce).await {
            Ok(Some(used)) => self.auth().nonces().adopt(&nonce, used, Instant::now()),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "sign-in nonce lookup in the cluster failed"),
        }
    }

    /// After a handshake's `auth` verified on this node: its nonce is used in the whole
    /// cluster, once. Errors: 401 `auth_invalid` `nonce_reused` when another node's sign-in
    /// used it first. A nonce the store does not know (lost) or a store error leaves this
    /// node's single use standing.
    pub(crate) async fn cluster_nonce_used(&self, auth: &HandshakeAuth) -> Result<(), AppError> {
        let (Some(c), Some(nonce)) = (self.cluster(), auth_nonce(auth)) else {
            return Ok(());
        };
        match c.use_nonce(&nonce).await {
            Ok(Some(true)) => {
                tracing::info!(reason = %AuthReason::NonceReused, "sign-in refused");
                Err(AppError::auth_invalid(
                    AuthReason::NonceReused,
                    format!("nonce {nonce:?}: used by another sign-in"),
                ))
            }
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "sign-in nonce not marked used in the cluster");
                Ok(())
            }
        }
    }

    /// Makes `sid` known here if another node served its handshake (token-authenticated
    /// requests: status, tickets, `DELETE`, lane `POST`s).
    pub(crate) async fn cluster_import(&self, sid: SessionId) {
        let Some(c) = self.cluster() else {
            return;
        };
        if self.registry().has_session(sid) {
            return;
        }
        match c.load_session(sid).await {
            Ok(Some(stored)) => {
                let rec = stored.rec;
                let mux = rec.mux.then(|| self.new_mux(&rec.lanes)).flatten();
                self.registry().import(sid, rec, mux, Instant::now());
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(session = %sid, error = %e, "session lookup in the cluster failed")
            }
        }
    }

    /// A socket or SSE stream of `sid` opens here: this node holds the session from now on.
    /// If another node held it, it is taken over: imported from its record and, when it keeps
    /// its room across reconnects (multiplexed or SSE), put back in its room here (a `moved`
    /// entry; the old node drops its copy, the other members hear nothing). A multiplexed
    /// session with a resume cursor gets the room's relays it had not acknowledged again
    /// ([`AppState::cluster_replay`]) before anything newer.
    pub(crate) async fn cluster_claim(&self, sid: SessionId) {
        let Some(c) = self.cluster() else {
            return;
        };
        let Stored {
            rec,
            node,
            room,
            resume,
        } = match c.load_session(sid).await {
            Ok(Some(found)) => found,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(session = %sid, error = %e, "session lookup in the cluster failed");
                return;
            }
        };
        if node == c.node() && self.registry().has_session(sid) {
            if let Err(e) = c.hold_session(sid).await {
                tracing::debug!(session = %sid, error = %e, "session TTL not refreshed");
            }
            return;
        }
        let keeps_room = rec.mux || is_sse_transport(&rec.transport);
        let multiplexed = rec.mux;
        let mux = rec.mux.then(|| self.new_mux(&rec.lanes)).flatten();
        if !self.registry().import(sid, rec, mux, Instant::now()) {
            return;
        }
        tracing::info!(session = %sid, from = %node, "session taken over from another node");
        if let Err(e) = c.hold_session(sid).await {
            tracing::warn!(session = %sid, error = %e, "session not marked held");
        }
        let Some(room) = room.filter(|_| keeps_room) else {
            return;
        };
        let moved = Publish {
            room: room.clone(),
            kind: Kind::Moved,
            sid,
            lane: 0,
            to: None,
            body: String::new(),
            at_ms: now_ms(),
            token: 0,
        };
        match c.publish_now(&moved).await {
            Ok(Some(p)) => {
                let resume = resume.filter(|r| multiplexed && r.room == room);
                let replay = match &resume {
                    Some(r) => match c.entries_since(&room, &r.e, r.n, &p.cursor.id).await {
                        Ok(entries) => Some(entries),
                        Err(e) => {
                            tracing::warn!(session = %sid, room, error = %e, "relays not replayed: the room's stream is unreadable");
                            None
                        }
                    },
                    None => None,
                };
                if let (Some(r), Some(entries)) = (&resume, &replay) {
                    self.cluster_replay(sid, r, entries);
                }
                {
                    let mut reg = self.registry();
                    reg.set_remote(&room, &p.members, c.node());
                    if let Some((stamp, key)) = p.key {
                        reg.shared_room_key(&room, stamp, &key, true);
                    }
                    reg.adopt_room(sid, &room, p.members.iter().find(|m| m.sid == sid));
                    if multiplexed {
                        // Follows on from the old cursor (its `skip` still holds), or from
                        // the move when there was none to replay from.
                        let start = match (resume, replay.is_some()) {
                            (Some(r), true) => r,
                            _ => ResumeCursor::at(&room, &p.cursor),
                        };
                        reg.start_resume(sid, start);
                    }
                }
                c.watch(&room, p.cursor);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(session = %sid, room, error = %e, "room not resumed on this node")
            }
        }
    }

    /// `join {room}` from `sid`'s socket `conn_id` (Control frame `seq`) in a cluster: checked
    /// here, written to the room's stream (membership and `joined` entry, atomically, with the
    /// room's members on every node), then joined in the registry with those members in its
    /// `joined` answer, and the room's key in the cluster (made by this join if the room had
    /// none) in its `room-key`. Redis unreachable: the join is refused with `internal`. A
    /// joiner that asked for presence gets the other nodes' members with their last activity
    /// as stored in Redis (one more round trip, before the registry lock).
    pub(crate) fn cluster_join(&self, sid: SessionId, conn_id: u64, room: String, seq: u64) {
        let Some(c) = self.cluster() else {
            return;
        };
        let lane = Some(Lane::Control.id());
        let again = {
            let reg = self.registry();
            if let Err(e) = reg.join_check(sid, &room) {
                drop(reg);
                return self.registry().reply(
                    sid,
                    conn_id,
                    &error_msg(e.code, e.error, lane, Some(seq)),
                );
            }
            (reg.room_of(sid).as_deref() == Some(room.as_str()))
                .then(|| (reg.wants_presence(sid), reg.remote_members(&room)))
        };
        if let Some((presence, remote)) = again {
            // Joining its room again only repeats `joined` (and the presence snapshot).
            let seen = if presence {
                self.cluster_seen(c, &remote)
            } else {
                Vec::new()
            };
            let mut reg = self.registry();
            reg.update_seen(&room, &seen);
            let _ = reg.join(sid, room);
            return;
        }
        let at = now_ms();
        let joined = Publish {
            room: room.clone(),
            kind: Kind::Joined,
            sid,
            lane: 0,
            to: None,
            body: String::new(),
            at_ms: at,
            token: 0,
        };
        let published = match block_on(c.publish_now(&joined)) {
            Some(Ok(Some(p))) => p,
            other => {
                tracing::warn!(session = %sid, room, answer = ?other.map(|r| r.map(|_| ())), "cluster join failed");
                let why = "the cluster's store is unreachable; retry the join";
                return self.registry().reply(
                    sid,
                    conn_id,
                    &error_msg(ErrorCode::Internal, why, lane, Some(seq)),
                );
            }
        };
        let seen = if self.registry().wants_presence(sid) {
            let remote: Vec<SessionId> = published
                .members
                .iter()
                .filter(|m| m.node != c.node())
                .map(|m| m.sid)
                .collect();
            self.cluster_seen(c, &remote)
        } else {
            Vec::new()
        };
        let mut reg = self.registry();
        if !reg.has_remote_view(&room) {
            reg.set_remote(&room, &published.members, c.node());
        }
        reg.update_seen(&room, &seen);
        if let Some((stamp, key)) = published.key {
            reg.shared_room_key(&room, stamp, &key, true);
        }
        match reg.join_at(sid, room.clone(), (at, published.cursor.n)) {
            Ok(()) => {
                reg.start_resume(sid, ResumeCursor::at(&room, &published.cursor));
                drop(reg);
                c.watch(&room, published.cursor);
            }
            Err(e) => {
                reg.reply(sid, conn_id, &error_msg(e.code, e.error, lane, Some(seq)));
                reg.forget_room_key_if_empty(&room);
                drop(reg);
                c.publish(Publish {
                    kind: Kind::Left,
                    at_ms: now_ms(),
                    ..joined
                });
            }
        }
    }

    /// The last activity other nodes stored in Redis for `sids` (those it knows); a Redis
    /// error leaves them out (presence then says the join time or the last one known).
    fn cluster_seen(&self, c: &Cluster, sids: &[SessionId]) -> Vec<(SessionId, u64)> {
        match block_on(c.last_seen(sids)) {
            Some(Ok(seen)) => sids
                .iter()
                .zip(seen)
                .filter_map(|(sid, s)| Some((*sid, s?)))
                .collect(),
            other => {
                if let Some(Err(e)) = other {
                    tracing::debug!(error = %e, "members' last activity not read from the cluster");
                }
                Vec::new()
            }
        }
    }

    /// Writes a relay from `sid` on `lane` (to `to`, or to its room) to its room's stream
    /// (every node with members there delivers it to its own). `Ok`: the relay's token, to
    /// note with its local delivery (`None`: no cluster room); `Err`: the publisher's queue
    /// is full (the sender gets `backpressure`).
    #[allow(clippy::result_unit_err)]
    pub(crate) fn cluster_relay(
        &self,
        sid: SessionId,
        lane: Lane,
        to: Option<SessionId>,
        value: &Value,
    ) -> Result<Option<RelayKey>, ()> {
        let Some(c) = self.cluster() else {
            return Ok(None);
        };
        let Some(room) = self.registry().cluster_reach(sid) else {
            return Ok(None);
        };
        let token = c.next_token();
        let queued = c.publish(Publish {
            room,
            kind: Kind::Relay,
            sid,
            lane: lane.id(),
            to,
            body: value.to_string(),
            at_ms: 0,
            token,
        });
        if queued {
            Ok(Some(RelayKey::Local(token)))
        } else {
            Err(())
        }
    }

    /// Delivers to `sid` (just taken over, resuming at `cursor`) the relays of its room it
    /// had not acknowledged, from `entries` (the stream after the cursor, up to its `moved`
    /// entry), in stream order, each once; first, when the stream no longer reaches back to
    /// the cursor, the discontinuity of PROTOCOL.md §17 on each of its reliable lanes but
    /// Control.
    fn cluster_replay(&self, sid: SessionId, cursor: &ResumeCursor, entries: &[Entry]) {
        let (gap, relays) = resume::replay(cursor, sid, entries);
        if let Some(g) = gap {
            tracing::warn!(session = %sid, room = %cursor.room, expected = g.expected, got = g.n, "resume cursor no longer in the room's stream: discontinuity");
            self.gap_notice(&[sid], &g.expected_epoch, g.expected, &g.epoch, g.n);
        }
        tracing::info!(session = %sid, room = %cursor.room, relays = relays.len(), "relays replayed to a session taken over");
        for e in relays {
            let (Some(lane), Ok(value)) = (
                Lane::from_id(e.lane),
                serde_json::from_str::<Value>(&e.body),
            ) else {
                continue;
            };
            let Some(target) = self.registry().target_of(sid, lane) else {
                continue;
            };
            let note = RelayNote {
                history: true,
                key: Some(RelayKey::Entry {
                    epoch: e.epoch.clone(),
                    n: e.n,
                }),
            };
            let relayed = self.deliver_relay(e.sid, lane, &[target], &value, None, note);
            let mut reg = self.registry();
            for r in relayed.refused {
                reg.close_full(r);
            }
        }
    }

    /// Folds the multiplexed sessions' acknowledgements into their resume cursors and writes
    /// the ones that changed (one pipeline; [`crate::cluster::resume`]). Each session's
    /// transport lock is taken on its own, no lock is held during the write.
    async fn cluster_write_resume(&self, c: &Cluster) {
        let held = self.registry().resume_transports();
        let mut changed = Vec::new();
        for (sid, room, transport) in held {
            let Some(read) = c.read_position(&room) else {
                continue;
            };
            let mut t = outbound::lock(&transport);
            let t = &mut *t;
            if t.resume.room() != Some(room.as_str()) {
                // Left the room it followed (a new join restarts the log).
                t.resume.clear();
                continue;
            }
            let Some(mux) = t.mux.as_ref() else {
                continue;
            };
            let idle = mux.is_idle();
            let cursor = t.resume.advance(
                (&read.0, read.1),
                |lane| mux.peer_acked(lane).unwrap_or(0),
                |token| c.resolve(token),
                idle,
            );
            if let Some(cur) = cursor {
                changed.push((sid, serde_json::to_string(&cur).unwrap_or_default()));
            }
        }
        if let Err(e) = c.write_resume(&changed).await {
            tracing::debug!(error = %e, "resume cursors not written");
        }
    }

    /// Leaves recorded by the registry go to the room's stream (in order, by the publisher);
    /// a room with no member left here is no longer read.
    pub(super) fn cluster_room_events(&self, events: &[RoomEvent]) {
        let Some(c) = self.cluster() else {
            return;
        };
        for ev in events {
            if let RoomEvent::Left {
                room,
                sid,
                remaining,
                ..
            } = ev
            {
                if remaining.is_empty() {
                    c.unwatch(room);
                }
                let left = Publish {
                    room: room.clone(),
                    kind: Kind::Left,
                    sid: *sid,
                    lane: 0,
                    to: None,
                    body: String::new(),
                    at_ms: now_ms(),
                    token: 0,
                };
                if !c.publish(left) {
                    tracing::error!(session = %sid, room, "cluster publisher full: a leave is not told to other nodes");
                }
            }
        }
    }

    /// An entry another node wrote to a room this node reads (`step` from
    /// [`Cluster::advance`]).
    pub(crate) fn cluster_entry(&self, e: &Entry, step: Step) {
        if let Step::Gap {
            expected_epoch,
            expected,
        } = &step
        {
            self.cluster_gap(e, expected_epoch, *expected);
        }
        if e.node == self.cluster().map_or("", |c| c.node()) {
            // This node's own `left` (skipped otherwise: delivered here when it happened)
            // carries the room's new key, for the members here too.
            if e.kind == Kind::Left {
                self.cluster_room_key(e);
            }
            return;
        }
        if step == Step::Skip {
            return;
        }
        if let Some(room) = crate::cluster::signaling_room_of(&e.room) {
            return self.cluster_signaling_entry(room, e);
        }
        match e.kind {
            Kind::Joined | Kind::Moved => {
                let member = Member {
                    sid: e.sid,
                    node: e.node.clone(),
                    order: e.order,
                    since: e.since,
                };
                self.registry().remote_joined(&e.room, &member, e.at);
                if e.kind == Kind::Joined && self.music.held(&e.room).is_some() {
                    // The joiner gets the room's state from its authority, here.
                    let ev = RoomEvent::Joined {
                        room: e.room.clone(),
                        sid: e.sid,
                        members: self.music_members(&e.room),
                    };
                    self.music
                        .on_event(&ev, |out| self.deliver_music(Some(&e.room), None, out));
                }
            }
            Kind::Left => {
                let was = self.registry().remote_left(&e.room, e.sid, &e.node, e.at);
                self.cluster_room_key(e);
                if was && self.music.held(&e.room).is_some() {
                    // Vanished or left: the other node knows; the DJ grace is kept.
                    let ev = RoomEvent::Left {
                        room: e.room.clone(),
                        sid: e.sid,
                        remaining: self
                            .music_members(&e.room)
                            .into_iter()
                            .map(|m| m.0)
                            .collect(),
                        explicit: false,
                    };
                    self.music
                        .on_event(&ev, |out| self.deliver_music(Some(&e.room), None, out));
                }
            }
            Kind::SigJoined | Kind::SigLeft | Kind::SigRelay => {}
            Kind::MusicIn => self.music_forwarded(&e.room, e.sid, &e.body),
            Kind::Music => {
                self.music.mark_known(&e.room);
                self.music_from_holder(&e.body)
            }
            Kind::Relay => {
                let (Some(lane), Ok(value)) = (
                    Lane::from_id(e.lane),
                    serde_json::from_str::<Value>(&e.body),
                ) else {
                    tracing::warn!(room = %e.room, id = %e.id, "malformed relay entry skipped");
                    return;
                };
                let targets = self.registry().local_targets(&e.room, lane, e.sid, e.to);
                let note = RelayNote {
                    history: true,
                    key: Some(RelayKey::Entry {
                        epoch: e.epoch.clone(),
                        n: e.n,
                    }),
                };
                let relayed = self.deliver_relay(e.sid, lane, &targets, &value, None, note);
                // The sender is on another node and cannot be answered `backpressure`: a
                // receiver too full to take it is closed with 1013 (it reconnects and
                // resumes), never skipped silently.
                let mut reg = self.registry();
                for r in relayed.refused {
                    reg.close_full(r);
                }
            }
        }
    }

    /// An entry of a seed 001 signaling server's room (`room`, [`crate::signaling`]) from
    /// another node: membership and relays for the sockets here.
    fn cluster_signaling_entry(&self, room: &str, e: &Entry) {
        let mut rooms = self.signaling().lock();
        match e.kind {
            Kind::SigJoined => rooms.remote_joined(room, e.sid, &e.node),
            Kind::SigLeft => rooms.remote_left(room, e.sid, &e.node, &e.body),
            Kind::SigRelay => {
                if let Some(to) = e.to {
                    rooms.remote_relay(room, to, &e.body);
                }
            }
            _ => {}
        }
    }

    /// A `left` entry's new room key (if any) goes to the room's members here, after their
    /// `peer-left` ([`crate::room_key`]).
    fn cluster_room_key(&self, e: &Entry) {
        if e.body.is_empty() {
            return;
        }
        let stamp = crate::room_key::Stamp {
            epoch: e.epoch.clone(),
            n: e.n,
        };
        self.registry()
            .shared_room_key(&e.room, stamp, &e.body, false);
    }

    /// After a gap in `room`'s stream (a rotation may be among the lost entries): the room's
    /// key is read from the cluster's store and, if newer, handed to the members here.
    async fn cluster_gap_key(&self, c: &Cluster, room: &str) {
        match c.room_key(room).await {
            Ok(Some((stamp, key))) => self.registry().shared_room_key(room, stamp, &key, false),
            Ok(None) => {}
            Err(e) => tracing::warn!(room, error = %e, "room key not read after a stream gap"),
        }
    }

    /// `ev` with the room's members held by other nodes added (the authority serves them
    /// too), and its room.
    pub(super) fn with_remote_members(&self, ev: &RoomEvent) -> (RoomEvent, String) {
        match ev {
            RoomEvent::Joined { room, sid, members } => {
                let mut members = members.clone();
                let remote = self.registry().remote_members(room);
                members.extend(remote.into_iter().map(|m| (m, None)));
                let ev = RoomEvent::Joined {
                    room: room.clone(),
                    sid: *sid,
                    members,
                };
                (ev, room.clone())
            }
            RoomEvent::Left {
                room,
                sid,
                remaining,
                explicit,
            } => {
                let mut remaining = remaining.clone();
                remaining.extend(self.registry().remote_members(room));
                let ev = RoomEvent::Left {
                    room: room.clone(),
                    sid: *sid,
                    remaining,
                    explicit: *explicit,
                };
                (ev, room.clone())
            }
        }
    }

    /// Entries of `e.room` before `e` are gone (trimmed from the stream while this node was
    /// not reading, or the room's epoch changed): every member here gets, on each reliable
    /// lane it negotiated but Control, a server Data message in the discontinuity event shape
    /// (PROTOCOL.md §11.6, §17): `reason` `history-lost`, epochs and seqs of the room stream.
    fn cluster_gap(&self, e: &Entry, expected_epoch: &str, expected: u64) {
        let members = self.registry().room_members(&e.room);
        tracing::warn!(room = %e.room, expected, got = e.n, "room stream gap: discontinuity to members");
        self.gap_notice(&members, expected_epoch, expected, &e.epoch, e.n);
    }

    /// The room-stream discontinuity of PROTOCOL.md §17 for `members`, on each reliable lane
    /// they negotiated but Control: entry `expected` of epoch `expected_epoch` is gone,
    /// delivery goes on at entry `n` of epoch `got_epoch`.
    fn gap_notice(
        &self,
        members: &[SessionId],
        expected_epoch: &str,
        expected: u64,
        got_epoch: &str,
        n: u64,
    ) {
        let epoch = |s: &str| u64::from_str_radix(s, 16).unwrap_or(0);
        let deliveries: Vec<Delivery> = Lane::ALL
            .into_iter()
            .filter(|l| *l != Lane::Control && l.spec().reliable)
            .map(|lane| Delivery {
                to: members.to_vec(),
                lane,
                message: json!({
                    "type": "discontinuity",
                    "lane": lane.id(),
                    "expectedEpoch": epoch(expected_epoch),
                    "expectedSeq": expected,
                    "epoch": epoch(got_epoch),
                    "seq": n,
                    "reason": "history-lost",
                }),
            })
            .collect();
        self.deliver_server(&deliveries);
    }

    /// Other nodes' pulse `metrics` messages (heard on [`crate::cluster::METRICS_CHANNEL`])
    /// go to this node's registered pulse connections, at most [`PULSE_IN_RATE`] per second
    /// (more are dropped: a newer one of the same node follows an interval later). The
    /// subscription is made again 500 ms after it drops. Runs until aborted.
    async fn cluster_pulse_in(&self, c: &Cluster) {
        use governor::{Quota, RateLimiter};
        let per_s = std::num::NonZeroU32::new(PULSE_IN_RATE).unwrap_or(std::num::NonZeroU32::MIN);
        let limiter = RateLimiter::direct(Quota::per_second(per_s));
        loop {
            let result = c
                .metrics_subscription(|text| {
                    if self.pulse().hub().listeners() > 0 && limiter.check().is_ok() {
                        self.pulse().broadcast(text.into());
                    }
                })
                .await;
            if let Err(e) = result {
                tracing::debug!(error = %e, "pulse metrics subscription failed");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Starts the cluster's tasks: the publisher, the room stream reader, the keep-alive
    /// (TTL refresh of held sessions and read rooms every sweep period), the music leases
    /// and the probe of the Redis figures (every [`crate::cluster::PROBE_PERIOD`]). Empty
    /// without a cluster.
    pub fn spawn_cluster(self: &Arc<Self>) -> Vec<JoinHandle<()>> {
        let Some(c) = self.cluster().cloned() else {
            return Vec::new();
        };
        let publisher = tokio::spawn({
            let c = c.clone();
            async move { c.run_publisher().await }
        });
        let reader = tokio::spawn({
            let (c, state) = (c.clone(), self.clone());
            async move {
                let mut conn = loop {
                    match c.reader().await {
                        Ok(conn) => break conn,
                        Err(e) => {
                            tracing::warn!(error = %e, "cluster reader cannot connect; retrying");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }
                };
                loop {
                    match c.read(&mut conn).await {
                        Ok(entries) => {
                            for e in entries {
                                let step = c.advance(&e);
                                let gap = matches!(step, Step::Gap { .. });
                                state.cluster_entry(&e, step);
                                if gap {
                                    state.cluster_gap_key(&c, &e.room).await;
                                }
                                c.handled(&e);
                            }
                            tokio::task::yield_now().await;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cluster read failed; resuming from the last entry");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
        });
        let keepalive = tokio::spawn({
            let (c, state) = (c.clone(), self.clone());
            async move {
                let period = state.config().sweep_period().min(Duration::from_secs(10));
                let mut tick = tokio::time::interval(period);
                loop {
                    tick.tick().await;
                    state.cluster_signaling_secret().await;
                    if state.signaling().has_shared() {
                        // Re-stored if a Redis restart lost it (SET NX: never replaced).
                        let secret = *state.signaling().secret();
                        if let Err(e) = c.signaling_secret(&secret).await {
                            tracing::debug!(error = %e, "signaling secret not re-stored");
                        }
                    }
                    let held = state.registry().held_sessions();
                    if let Err(e) = c.refresh(&held).await {
                        tracing::debug!(error = %e, "cluster TTL refresh failed");
                    }
                }
            }
        });
        let resume = every(RESUME_FLUSH, {
            let (c, state) = (c.clone(), self.clone());
            move || {
                let (c, state) = (c.clone(), state.clone());
                async move { state.cluster_write_resume(&c).await }
            }
        });
        let leases = every(crate::cluster::lease::LEASE_TICK, {
            let (c, state) = (c.clone(), self.clone());
            move || {
                let (c, state) = (c.clone(), state.clone());
                async move { state.music_leases_round(&c).await }
            }
        });
        let probe = every(crate::cluster::PROBE_PERIOD, {
            let c = c.clone();
            move || {
                let c = c.clone();
                async move {
                    if let Err(e) = c.probe().await {
                        tracing::debug!(error = %e, "cluster probe failed");
                    }
                }
            }
        });
        let pulse_in = tokio::spawn({
            let state = self.clone();
            async move { state.cluster_pulse_in(&c).await }
        });
        vec![
            publisher, reader, keepalive, resume, leases, probe, pulse_in,
        ]
    }
}

/// Spawns a task that runs `round` every `period`, one round at a time (a round that overruns
/// delays the next; missed ticks never burst), until aborted.
fn every<F, Fut>(period: Duration, mut round: F) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            round().await;
        }
    })
}
