//! Wiring of the music service ([`crate::music`]) to the registry: members are read under a
//! brief registry lock, the room's work runs under the room's lock only, and its deliveries
//! are pushed while that room lock is still held (see [`super`] for the lock order).

use super::{AppState, RegistryGuard};
use crate::cluster::lease::Acquired;
use crate::cluster::{block_on, Cluster, Kind, MusicInput, MusicOut, Publish};
use crate::music::{Delivery, Handled, Member, Output};
use crate::registry::error_msg;
use p3_lanes::core::error::{ErrorCode, WireError};
use p3_lanes::core::frame::SessionId;
use p3_lanes::core::lane::Lane;
use serde_json::Value;

impl AppState {
    /// A music message (`music-control`, a client's `sync-state`, `music-changes`) from
    /// `sid`'s socket `conn_id`, Sync-lane frame `seq`; see [`crate::music`]. The lane grant
    /// was checked by the caller. Refusals go to the sender as a Control `error` (lane 7, `seq`).
    pub(crate) fn music_message(&self, sid: SessionId, conn_id: u64, seq: u64, value: Value) {
        let (room, members) = {
            let reg = self.registry();
            let Some(room) = reg.room_of(sid) else {
                drop(reg);
                return self.deliver_music(
                    None,
                    Some((sid, conn_id, seq)),
                    Output {
                        deliveries: Vec::new(),
                        refusal: Some(WireError::new(
                            ErrorCode::NotInRoom,
                            "join a music room before sending music-control",
                        )),
                    },
                );
            };
            let members = reg.room_members_identified(&room);
            (room, members)
        };
        if self.cluster().is_some() {
            return self.cluster_music_message(&room, sid, conn_id, seq, value);
        }
        let _ = self.music.handle(&room, &members, sid, value, |out| {
            self.deliver_music(None, Some((sid, conn_id, seq)), out);
        });
    }

    /// The members of `room` the authority serves: this node's (with their identities)
    /// and, in a cluster, those held by other nodes (identities unknown here).
    pub(crate) fn music_members(&self, room: &str) -> Vec<Member> {
        let reg = self.registry();
        let mut members = reg.room_members_identified(room);
        if self.cluster().is_some() {
            members.extend(reg.remote_members(room).into_iter().map(|m| (m, None)));
        }
        members
    }

    /// A music message from `sid` (here) in a cluster: handled by this node's authority if
    /// it holds the room's lease or takes it now (the first music message of the room, or a
    /// free lease), else forwarded to the holder through the room's stream (PROTOCOL.md §17).
    fn cluster_music_message(
        &self,
        room: &str,
        sid: SessionId,
        conn_id: u64,
        seq: u64,
        value: Value,
    ) {
        let Some(c) = self.cluster().cloned() else {
            return;
        };
        let sender = Some((sid, conn_id, seq));
        // A second round after a refused write: the lease moved, this node acquires or
        // forwards again.
        for _ in 0..2 {
            if self.music.held(room).is_none() {
                match block_on(c.music_acquire(room, true)) {
                    Some(Ok(Acquired::Held { token, stored, .. })) => {
                        let members = self.music_members(room);
                        let stored = stored.map(|s| s.snapshot);
                        let _ = self.music.take(room, &members, token, stored, |out| {
                            self.deliver_music(Some(room), None, out)
                        });
                    }
                    Some(Ok(Acquired::Other(node))) => {
                        let identity = self.registry().identity_key(sid);
                        return self
                            .music_forward(&c, room, sid, &node, conn_id, seq, value, identity);
                    }
                    other => {
                        tracing::warn!(room, answer = ?other.map(|r| r.map(|_| ())), "music room lease not reachable");
                        return self.deliver_music(
                            None,
                            sender,
                            Output {
                                deliveries: Vec::new(),
                                refusal: Some(WireError::new(
                                    ErrorCode::Internal,
                                    "the cluster's store is unreachable; retry",
                                )),
                            },
                        );
                    }
                }
            }
            let members = self.music_members(room);
            let handled = self
                .music
                .handle(room, &members, sid, value.clone(), |out| {
                    self.deliver_music(Some(room), sender, out)
                });
            if handled == Handled::Done {
                return;
            }
        }
    }

    /// Sends a music message of `sid` to `room`'s authority on node `holder`.
    #[allow(clippy::too_many_arguments)]
    fn music_forward(
        &self,
        c: &Cluster,
        room: &str,
        sid: SessionId,
        holder: &str,
        conn: u64,
        seq: u64,
        value: Value,
        identity: Option<String>,
    ) {
        tracing::debug!(room, session = %sid, holder, "music message forwarded to the room's authority");
        self.music.mark_known(room);
        let body = serde_json::to_string(&MusicInput {
            value,
            identity,
            conn,
            seq,
        })
        .unwrap_or_default();
        if !c.publish(Publish {
            room: room.to_owned(),
            kind: Kind::MusicIn,
            sid,
            lane: Lane::Sync.id(),
            to: None,
            body,
            at_ms: 0,
            token: 0,
        }) {
            let msg = error_msg(
                ErrorCode::Backpressure,
                "cluster publisher full; retry",
                Some(Lane::Sync.id()),
                Some(seq),
            );
            self.registry().reply(sid, conn, &msg);
        }
    }

    /// A music message another node forwarded (`MusicIn` entry): handled if this node holds
    /// the room, ignored otherwise (the sender's node named a holder that has lost it since).
    pub(crate) fn music_forwarded(&self, room: &str, sid: SessionId, body: &str) {
        if self.music.held(room).is_none() {
            tracing::debug!(room, session = %sid, "forwarded music message for a room not held here");
            return;
        }
        let Ok(input) = serde_json::from_str::<MusicInput>(body) else {
            tracing::warn!(room, "malformed forwarded music message skipped");
            return;
        };
        let mut members = self.music_members(room);
        if let Some(m) = members.iter_mut().find(|m| m.0 == sid) {
            m.1 = input.identity.clone();
        }
        let sender = Some((sid, input.conn, input.seq));
        let _ = self.music.handle(room, &members, sid, input.value, |out| {
            self.deliver_music(Some(room), sender, out)
        });
    }

    /// Server messages of another node's authority (`Music` entry) for this node's members.
    pub(crate) fn music_from_holder(&self, body: &str) {
        let Ok(out) = serde_json::from_str::<MusicOut>(body) else {
            tracing::warn!("malformed music entry skipped");
            return;
        };
        if let Some(message) = out.message {
            self.deliver_server(&[Delivery {
                to: out.to,
                lane: Lane::Sync,
                message,
            }]);
        } else if let (Some((code, text)), Some(&to)) = (out.refusal, out.to.first()) {
            let msg = error_msg(code, text, Some(Lane::Sync.id()), Some(out.seq));
            self.registry().reply(to, out.conn, &msg);
        }
    }

    /// The lease task's round (every [`crate::cluster::lease::LEASE_TICK`]): renews the
    /// leases this node holds (gives up those of rooms with no member here, and forgets those
    /// lost), then probes the free leases of the music rooms it has members in and knows of
    /// (it saw their music traffic), and takes them over.
    pub(crate) async fn music_leases_round(&self, c: &Cluster) {
        for (room, token) in self.music.held_rooms() {
            if self.registry().room_members(&room).is_empty() {
                self.music.forget(&room, token);
                if let Err(e) = c.music_release(&room, token).await {
                    tracing::debug!(room, error = %e, "music room lease not released");
                }
                continue;
            }
            match c.music_renew(&room, token).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(room, token, "music room lease lost");
                    self.music.forget(&room, token);
                }
                Err(e) => tracing::debug!(room, error = %e, "music room lease not renewed"),
            }
        }
        // Only rooms known here as music rooms (members here got the holder's `sync-state`,
        // or sent music messages): one probe per such room and tick.
        for room in self.music.known_among(&c.watched_rooms()) {
            if self.music.held(&room).is_some() {
                continue;
            }
            match c.music_acquire(&room, false).await {
                Ok(Acquired::Held { token, stored, .. }) => {
                    tracing::info!(room, token, "music room taken over");
                    let members = self.music_members(&room);
                    let stored = stored.map(|s| s.snapshot);
                    let _ = self.music.take(&room, &members, token, stored, |out| {
                        self.deliver_music(Some(&room), None, out)
                    });
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(room, error = %e, "music room lease probe failed"),
            }
        }
    }

    /// Clean shutdown: every lease this node holds is released (another node takes the room
    /// over at its next probe instead of waiting for the lease to expire).
    pub async fn release_music_leases(&self) {
        let Some(c) = self.cluster().cloned() else {
            return;
        };
        for (room, token) in self.music.held_rooms() {
            self.music.forget(&room, token);
            if let Err(e) = c.music_release(&room, token).await {
                tracing::debug!(room, error = %e, "music room lease not released");
            }
        }
    }

    /// Control `ping` from `sid`'s socket `conn_id` (a WebSocket, or the SSE/HTTP sender):
    /// answers the `pong` under `reg`, then, with the registry released, feeds `rtt_ms` to
    /// [`AppState::music_rtt`].
    pub(crate) fn answer_ping(
        &self,
        mut reg: RegistryGuard<'_>,
        sid: SessionId,
        conn_id: u64,
        client_time: f64,
        rtt_ms: Option<f64>,
    ) {
        reg.answer_ping(sid, conn_id, client_time);
        drop(reg);
        if let Some(rtt) = rtt_ms {
            self.music_rtt(sid, rtt);
        }
    }

    /// `ping {rttMs}` from `sid`: feeds its room's authority, if it is in a music room.
    pub(crate) fn music_rtt(&self, sid: SessionId, rtt_ms: f64) {
        let room = self.registry().room_of(sid);
        if let Some(room) = room {
            self.music.rtt(&room, sid, rtt_ms);
        }
    }

    /// Pushes a music output of `room` (in a cluster: `Some`): its deliveries, and its
    /// refusal to `sender` (session, socket, frame seq). In a cluster, deliveries to members
    /// held by other nodes and a refusal to a sender there go to the room's stream, in order.
    pub(super) fn deliver_music(
        &self,
        room: Option<&str>,
        sender: Option<(SessionId, u64, u64)>,
        out: Output,
    ) {
        self.deliver_server(&out.deliveries);
        let cluster = room.zip(self.cluster().cloned());
        let local: Vec<SessionId> = match &cluster {
            Some((room, _)) => self.registry().room_members(room),
            None => Vec::new(),
        };
        if let Some((room, c)) = &cluster {
            for d in &out.deliveries {
                let remote: Vec<SessionId> =
                    d.to.iter()
                        .filter(|s| !local.contains(s))
                        .copied()
                        .collect();
                if let Some(&first) = remote.first() {
                    publish_music(
                        c,
                        room,
                        first,
                        MusicOut {
                            to: remote,
                            message: Some(d.message.clone()),
                            refusal: None,
                            conn: 0,
                            seq: 0,
                        },
                    );
                }
            }
        }
        let (Some((sid, conn_id, seq)), Some(e)) = (sender, out.refusal) else {
            return;
        };
        match &cluster {
            Some((room, c)) if !local.contains(&sid) => publish_music(
                c,
                room,
                sid,
                MusicOut {
                    to: vec![sid],
                    message: None,
                    refusal: Some((e.code, e.error)),
                    conn: conn_id,
                    seq,
                },
            ),
            _ => {
                let msg = error_msg(e.code, e.error, Some(Lane::Sync.id()), Some(seq));
                self.registry().reply(sid, conn_id, &msg);
            }
        }
    }
}

/// Queues a `Music` entry for `room`'s stream.
fn publish_music(c: &Cluster, room: &str, sid: SessionId, out: MusicOut) {
    let body = serde_json::to_string(&out).unwrap_or_default();
    if !c.publish(Publish {
        room: room.to_owned(),
        kind: Kind::Music,
        sid,
        lane: Lane::Sync.id(),
        to: None,
        body,
        at_ms: 0,
        token: 0,
    }) {
        tracing::error!(
            room,
            "cluster publisher full: a music room's message is not told to other nodes"
        );
    }
}
