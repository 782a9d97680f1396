//! Music rooms, server tier (issue #4; seed 004 "Tier 1", "Challenge 3: Split Brain": the
//! server is the authority while it is reachable): the driver of the core's authority machine.
//!
//! # Music rooms
//! A music room is a lane room in which someone sent a `music-control` (or `music-changes`)
//! message on the Sync lane. Every rule of the room (who controls it, epochs and sequences,
//! handover, scheduling, the DJ identity, offline reconciliation, what each member gets) is
//! [`p3_lanes::core::music::authority::Authority`], a sans-IO machine (PROTOCOL.md §12.2,
//! §12.3, §13.9, §13.14, §13.15). This module only:
//! - recognises the payloads for it ([`is_music_message`]: a Sync-lane Data frame without
//!   `to` whose `type` is `music-control`, `sync-state` or `music-changes` is **not relayed**)
//!   and [`parse`](p3_lanes::core::music::authority::parse)s them before any lock;
//! - keeps one machine per room behind its own lock, feeds it the message (with the sender's
//!   session id and the members and identities read from the registry), joins, leaves and
//!   `ping {rttMs}` reports, with `now` the shared clock in whole ms;
//! - routes what comes back: each delivery becomes server-originated Sync-lane Data frames (no
//!   `from`) to one member or every member, a refusal a Control `error` to the sender (lane 7,
//!   the frame's seq);
//! - writes the DJ record the machine reports to the state file ([`store`], `--state-dir`),
//!   from which a restarted server recreates the room at its first join;
//! - forgets a room's machine once it has been empty for the session TTL (a lone DJ whose
//!   socket drops finds the room as it left it, without the controller role).
//!
//! The same `sync-state` is queued like a Control message: when a member's outbound queue is
//! full its socket is closed with 1013 (it reconnects and gets a fresh snapshot) rather than
//! silently missing a state.
//!
//! Other Sync-lane messages (and anything with `to`) are relayed as before.
//!
//! # In a cluster (PROTOCOL.md §17 "Music rooms")
//! With `--redis-url` a room's machine exists only on the node holding the room's lease
//! ([`crate::cluster::lease`]), made by [`MusicService::take`] from the state in Redis. Every
//! change is written to Redis under the room's fencing token before its output is handed on;
//! a refused write drops the machine ([`Handled::NotHeld`]). The state file is not used.
//! Forwarding other nodes' inputs and relaying the output to their members is
//! `state::music`'s.
//!
//! # Isolation: a lock per room
//! `MusicService` never touches the session registry. Each room is an
//! `Arc<Mutex<MusicRoom>>`; the map of rooms has its own lock, held only to look a room up,
//! insert it or sweep. Handling a message (the machine's decision, the `music-changes`
//! reconcile, building the `sync-state`) runs holding **only that room's lock**, so a large
//! push stalls its own room and nobody else. The caller ([`crate::state`]) gives the
//! members (read under a brief registry lock) and gets back an `Output`: deliveries
//! `(receivers, lane, message)` and the sender's refusal. It pushes them into the registry
//! while the room lock is still held, which keeps every member's view of one room in the
//! order the authority decided (two changes cannot overtake each other between decision and
//! delivery). Lock order: room, then registry; never the reverse. The DJ store's lock is
//! taken last (under the map's lock to read a stored room, under a room's to write), and
//! takes no other lock.
//!
//! A room lock poisoned by a panic in the authority is not reused half-updated: the room is
//! logged at `error` and restarted from a fresh authority (what its members would see after a
//! server restart, PROTOCOL.md §13.14); other rooms are untouched.
//!
//! A lock per room rather than a task per room: messages of one room are handled in the
//! caller's task without a channel hop (the lock is uncontended unless the room itself is
//! busy), back-pressure stays the sender's socket, and no task lifetime has to be managed
//! beside the room's own TTL.

pub(crate) mod store;

use crate::cluster::Cluster;
use crate::registry::RoomEvent;
use p3_lanes::core::error::WireError;
use p3_lanes::core::frame::SessionId;
use p3_lanes::core::lane::Lane;
use p3_lanes::core::music::authority::{self, Authority, DjWrite, Inbound, Snapshot, To};
use p3_lanes::core::p2p::changes::ChangeLimits;
use p3_lanes::core::sync::state::AuthorityConfig;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use store::DjStore;

pub(crate) use p3_lanes::core::music::authority::{is_music_message, Member};

/// The shared clock of music rooms: the server's wall clock, ms since the Unix epoch, with
/// sub-ms precision (clients learn it from `pong.serverTime`, the same clock floored).
pub fn shared_clock_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// The shared clock in whole ms, the authority's `now` (PROTOCOL.md §12.2: times on the wire
/// are integers).
fn now_ms() -> u64 {
    shared_clock_ms() as u64
}

/// One server message for some members: `(receivers, lane, message)`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Delivery {
    /// Who gets it, in order.
    pub(crate) to: Vec<SessionId>,
    /// The lane (Sync).
    pub(crate) lane: Lane,
    /// The payload.
    pub(crate) message: Value,
}

/// What handling one message or event produced, routed to session ids.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Output {
    /// Server messages, in order.
    pub(crate) deliveries: Vec<Delivery>,
    /// The sender's refusal (a Control `error` on lane 7 with the frame's seq).
    pub(crate) refusal: Option<WireError>,
}

impl Output {
    fn refused(e: &authority::AuthorityError) -> Output {
        Output {
            deliveries: Vec::new(),
            refusal: Some(WireError::new(e.code(), e.wire_text())),
        }
    }
}

/// Routes the machine's output: [`To::Room`] is `room` (the members passed with the input).
fn route(out: authority::Output, room: &[SessionId]) -> Output {
    Output {
        deliveries: out
            .deliveries
            .into_iter()
            .map(|d| Delivery {
                to: match d.to {
                    To::Member(m) => vec![m],
                    To::Room => room.to_vec(),
                },
                lane: Lane::Sync,
                message: d.message.to_value(),
            })
            .collect(),
        refusal: out
            .refusal
            .as_ref()
            .map(|e| WireError::new(e.code(), e.wire_text())),
    }
}

/// One room's authority machine and, once its last member left, since when it has been
/// empty.
#[derive(Debug)]
pub(crate) struct MusicRoom {
    pub(crate) authority: Authority,
    emptied_at: Option<Instant>,
    /// In a cluster: the fencing token under which this node holds the room's lease
    /// ([`crate::cluster::lease`]); `None` once it lost it (the machine is dead).
    fence: Option<u64>,
    /// In a cluster: the snapshot last written to Redis.
    written: Option<Snapshot>,
}

/// Whether this node's authority handled an input (in a cluster it may not hold the room).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub(crate) enum Handled {
    /// Handled, its output routed (or not a music room).
    Done,
    /// In a cluster: this node does not hold the room, or its state write was refused by the
    /// fencing check (it lost the lease; the machine is dropped, nothing was delivered).
    NotHeld,
}

fn sids(members: &[Member]) -> Vec<SessionId> {
    members.iter().map(|m| m.0).collect()
}

type Shared = Arc<Mutex<MusicRoom>>;

/// The authorities of every music room, by room name, each behind its own lock (see the
/// module docs).
#[derive(Debug)]
pub(crate) struct MusicService {
    config: AuthorityConfig,
    rooms: Mutex<HashMap<String, Shared>>,
    /// How long an empty room's state is kept.
    keep_empty: Duration,
    /// The bounds of a `music-changes` push (`--max-changes-per-push`, `--max-origins-per-room`).
    change_limits: ChangeLimits,
    /// Each room's DJ identity and epoch, mirrored to `--state-dir` (module [`store`]).
    store: DjStore,
    /// With `--redis-url`: rooms exist only where this node holds their lease, and every
    /// change of a room is written to Redis under its fencing token before it is delivered.
    cluster: Option<Arc<Cluster>>,
    /// In a cluster: the rooms held here and their fencing tokens (a leaf lock, read by the
    /// lease task without touching any room's lock).
    leases: Mutex<HashMap<String, u64>>,
    /// In a cluster: rooms this node has seen music traffic of (its own, forwarded or
    /// relayed): the only ones whose free lease it probes.
    known: Mutex<std::collections::HashSet<String>>,
}

impl MusicService {
    /// No music rooms yet; empty rooms are forgotten after `keep_empty`.
    pub(crate) fn new(keep_empty: Duration) -> MusicService {
        MusicService {
            config: AuthorityConfig::default(),
            rooms: Mutex::new(HashMap::new()),
            keep_empty,
            change_limits: ChangeLimits::DEFAULT,
            store: DjStore::default(),
            cluster: None,
            leases: Mutex::new(HashMap::new()),
            known: Mutex::new(std::collections::HashSet::new()),
        }
    }

    /// The same service in `cluster` (PROTOCOL.md §17 "Music rooms"): the state file is not
    /// used (Redis keeps each room's state, DJ included).
    pub(crate) fn in_cluster(mut self, cluster: Option<Arc<Cluster>>) -> MusicService {
        if cluster.is_some() {
            self.store = DjStore::default();
        }
        self.cluster = cluster;
        self
    }

    /// The same service with the DJ grace `grace` (`--dj-grace-s`) and the DJ state `store`.
    pub(crate) fn with_dj(mut self, grace: Duration, store: DjStore) -> MusicService {
        self.config.dj_grace_ms = grace.as_secs_f64() * 1000.0;
        self.store = store;
        self
    }

    /// The same service with `limits` for `music-changes` pushes.
    pub(crate) fn with_change_limits(mut self, limits: ChangeLimits) -> MusicService {
        self.change_limits = limits;
        self
    }

    /// A fresh room machine for `name` with `members`, its DJ restored from the state file.
    fn fresh(&self, name: &str, members: &[Member]) -> MusicRoom {
        let stored = self.store.get(name).map(|e| (e.identity, e.epoch));
        MusicRoom {
            authority: Authority::new(
                self.config.clone(),
                self.change_limits,
                members,
                stored,
                now_ms(),
            ),
            emptied_at: None,
            fence: None,
            written: None,
        }
    }

    /// The map of rooms. Held only for lookups, inserts and the sweep, never across a room's
    /// work; poisoned only by a bug in those few lines, which brings the server down loudly.
    fn map(&self) -> MutexGuard<'_, HashMap<String, Shared>> {
        crate::lock::lock_or_abort(&self.rooms, "music rooms map")
    }

    /// The room `name`, created with `members` when `create` or the state file names it (a
    /// restart), and it is not a music room yet.
    fn room(&self, name: &str, members: &[Member], create: bool) -> Option<Shared> {
        let mut map = self.map();
        if let Some(r) = map.get(name) {
            return Some(r.clone());
        }
        if self.cluster.is_some() {
            // Made by `take` only, under a lease.
            return None;
        }
        if !create && self.store.get(name).is_none() {
            return None;
        }
        let r = Arc::new(Mutex::new(self.fresh(name, members)));
        map.insert(name.to_owned(), r.clone());
        Some(r)
    }

    /// The lock of room `name`, if it is a music room (tests hold it to play a busy room).
    #[cfg(test)]
    pub(crate) fn room_for_test(&self, name: &str) -> Option<Arc<Mutex<MusicRoom>>> {
        self.room(name, &[], false)
    }

    /// Runs `f` on `room` holding only its lock, writes its DJ record if the machine reported
    /// one, then hands `then` the output routed to `members`, still under the room's lock. A
    /// poisoned room is restarted fresh (with `members`) and logged, never reused
    /// half-updated.
    ///
    /// In a cluster the room's snapshot is first written to Redis under the room's fencing
    /// token (if it changed): waiting for Redis under this room's lock only, so the room's
    /// next input waits for it and no other room does. A refused or failed write drops the
    /// machine without delivering anything ([`Handled::NotHeld`]).
    fn with_room(
        &self,
        name: &str,
        room: &Shared,
        members: &[Member],
        f: impl FnOnce(&mut MusicRoom) -> authority::Output,
        then: impl FnOnce(Output),
    ) -> Handled {
        let mut guard = match room.lock() {
            Ok(g) => g,
            Err(poisoned) => {
                tracing::error!(room = name, "music room lock poisoned by a panic: restarting the room from a fresh authority");
                let mut g = poisoned.into_inner();
                let fence = g.fence;
                *g = self.fresh(name, members);
                g.fence = fence;
                room.clear_poison();
                g
            }
        };
        if self.cluster.is_some() && guard.fence.is_none() {
            return Handled::NotHeld;
        }
        let out = f(&mut guard);
        if let (Some(dj), None) = (&out.dj, &self.cluster) {
            let record = match dj {
                DjWrite::Set { identity, epoch } => Some((identity.as_str(), *epoch)),
                DjWrite::Clear => None,
            };
            self.store.set(name, record, crate::now_ms());
        }
        if let (Some(c), Some(token)) = (&self.cluster, guard.fence) {
            let snapshot = guard.authority.snapshot();
            if guard.written.as_ref() != Some(&snapshot) {
                match crate::cluster::block_on(c.music_write(name, token, &snapshot)) {
                    Some(Ok(true)) => guard.written = Some(snapshot),
                    other => {
                        tracing::warn!(room = name, token, answer = ?other, "music room state write refused or failed: this node no longer holds the room");
                        guard.fence = None;
                        drop(guard);
                        self.forget(name, token);
                        return Handled::NotHeld;
                    }
                }
            }
        }
        then(route(out, &sids(members)));
        Handled::Done
    }

    /// A `music-control`, `sync-state` or `music-changes` from `sid`, a member of `room`
    /// (with `members` and their identities, read from the registry, or in a cluster from
    /// the room's view on this node); `then` gets the output while the room's lock is held
    /// (see the module docs).
    pub(crate) fn handle(
        &self,
        room: &str,
        members: &[Member],
        sid: SessionId,
        value: Value,
        then: impl FnOnce(Output),
    ) -> Handled {
        let identity = members
            .iter()
            .find(|m| m.0 == sid)
            .and_then(|m| m.1.as_deref());
        // Parsed and checked before any lock.
        let message: Inbound = match authority::parse(value, &authority::sender_key(sid, identity))
        {
            Ok(m) => m,
            Err(e) => {
                then(Output::refused(&e));
                return Handled::Done;
            }
        };
        let Some(shared) = self.room(room, members, true) else {
            return Handled::NotHeld;
        };
        self.with_room(
            room,
            &shared,
            members,
            |r| {
                let out = r.authority.handle(members, sid, message, now_ms());
                if let Some(e) = &out.refusal {
                    tracing::debug!(room, session = %sid, code = %e.code(), "music message refused");
                } else {
                    let state = r.authority.state();
                    tracing::debug!(room, session = %sid, epoch = state.epoch, sequence = state.sequence,
                        deliveries = out.deliveries.len(), "music message handled");
                }
                out
            },
            then,
        )
    }

    /// A join or leave of a lane room: the joiner gets the room's `sync-state`; when the
    /// controller leaves, the others get the new one. Nothing for rooms that are not music
    /// rooms (in a cluster: not held here). `then` runs under the room's lock.
    pub(crate) fn on_event(&self, event: &RoomEvent, then: impl FnOnce(Output)) {
        let remaining_members: Vec<Member>;
        let (name, members): (&str, &[Member]) = match event {
            RoomEvent::Joined { room, members, .. } => (room, members),
            RoomEvent::Left {
                room, remaining, ..
            } => {
                remaining_members = remaining.iter().map(|m| (*m, None)).collect();
                (room, &remaining_members)
            }
        };
        let Some(shared) = self.room(name, members, false) else {
            return;
        };
        let _ = self.with_room(
            name,
            &shared,
            members,
            |r| match event {
                RoomEvent::Joined { sid, members, .. } => {
                    r.emptied_at = None;
                    r.authority.join(members, *sid)
                }
                RoomEvent::Left {
                    sid,
                    remaining,
                    explicit,
                    ..
                } => {
                    if remaining.is_empty() {
                        r.emptied_at = Some(Instant::now());
                    }
                    r.authority.leave(*sid, *explicit, now_ms())
                }
            },
            then,
        );
    }

    /// One RTT report of `sid`, a member of `room`, ms.
    pub(crate) fn rtt(&self, room: &str, sid: SessionId, rtt_ms: f64) {
        if let Some(shared) = self.room(room, &[], false) {
            if let Ok(mut r) = shared.lock() {
                r.authority.rtt(sid, rtt_ms);
            }
        }
    }

    fn leases(&self) -> MutexGuard<'_, HashMap<String, u64>> {
        crate::lock::lock_or_abort(&self.leases, "music room leases")
    }

    /// In a cluster: `room` is a music room (this node saw its music traffic).
    pub(crate) fn mark_known(&self, room: &str) {
        let mut known = crate::lock::lock_or_abort(&self.known, "known music rooms");
        if !known.contains(room) {
            known.insert(room.to_owned());
        }
    }

    /// In a cluster: of `rooms`, those known to be music rooms (the others are forgotten).
    pub(crate) fn known_among(&self, rooms: &[String]) -> Vec<String> {
        let mut known = crate::lock::lock_or_abort(&self.known, "known music rooms");
        known.retain(|r| rooms.contains(r));
        known.iter().cloned().collect()
    }

    /// In a cluster: the fencing token under which this node holds `room`, if it does.
    pub(crate) fn held(&self, room: &str) -> Option<u64> {
        self.leases().get(room).copied()
    }

    /// In a cluster: the rooms this node holds, with their tokens.
    pub(crate) fn held_rooms(&self) -> Vec<(String, u64)> {
        self.leases().iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// In a cluster: this node lost (or gave up) `room`'s lease held under `token`: its
    /// machine is dropped (unless it was taken again since, under another token).
    pub(crate) fn forget(&self, room: &str, token: u64) {
        {
            let mut leases = self.leases();
            if leases.get(room) != Some(&token) {
                return;
            }
            leases.remove(room);
        }
        self.map().remove(room);
    }

    /// In a cluster: this node now holds `room`'s lease under `token` (PROTOCOL.md §17). The
    /// room's machine is made from `stored` (the previous holder's snapshot: epoch moved past
    /// its own and up to `token`) or fresh, with `members`; its state is written under
    /// `token` and, if taken over, sent to every member (`then`, under the room's lock).
    /// [`Handled::NotHeld`] if the write was refused (another node took the room since).
    pub(crate) fn take(
        &self,
        room: &str,
        members: &[Member],
        token: u64,
        stored: Option<Snapshot>,
        then: impl FnOnce(Output),
    ) -> Handled {
        let (authority, state) = match stored {
            Some(snapshot) => match Authority::resume(
                self.config.clone(),
                self.change_limits,
                members,
                snapshot,
                token,
            ) {
                Ok((a, state)) => (a, Some(state)),
                Err(e) => {
                    tracing::error!(room, error = %e, "music room not taken over");
                    return Handled::NotHeld;
                }
            },
            None => (self.fresh(room, members).authority, None),
        };
        let shared = Arc::new(Mutex::new(MusicRoom {
            authority,
            emptied_at: None,
            fence: Some(token),
            written: None,
        }));
        self.map().insert(room.to_owned(), shared.clone());
        self.leases().insert(room.to_owned(), token);
        self.mark_known(room);
        tracing::info!(room, token, epoch = ?state.as_ref().map(|s| s.epoch), "music room held by this node");
        self.with_room(
            room,
            &shared,
            members,
            |_| authority::Output {
                deliveries: state
                    .into_iter()
                    .map(|s| authority::Delivery {
                        to: To::Room,
                        message: authority::Message::State(s),
                    })
                    .collect(),
                ..Default::default()
            },
            then,
        )
    }

    /// Forgets rooms empty for longer than `keep_empty`; returns how many. A room busy right
    /// now is in use, so not stale: it is skipped without waiting for its lock.
    pub(crate) fn sweep(&self, now: Instant) -> usize {
        let keep = self.keep_empty;
        let mut map = self.map();
        let before = map.len();
        map.retain(|_, r| match r.try_lock() {
            Ok(r) => r
                .emptied_at
                .map_or(true, |t| now.saturating_duration_since(t) < keep),
            Err(std::sync::TryLockError::WouldBlock) => true,
            // Poisoned and idle: restarted on next use anyway; forget it now.
            Err(std::sync::TryLockError::Poisoned(_)) => false,
        });
        before - map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn music_messages_are_recognised() {
        assert!(is_music_message(&json!({"type": "music-control"})));
        assert!(!is_music_message(&json!({"position": 1})));
    }

    #[test]
    fn a_poisoned_room_restarts_fresh_and_others_are_untouched() {
        let svc = MusicService::new(Duration::from_secs(60));
        let a = SessionId::from_random_bytes([1; 16]);
        let claim = json!({"type": "music-control", "action": "handover", "data": {}, "sequence": 1, "epoch": 0});
        let track = json!({"type": "music-control", "action": "change-track", "data": {"trackId": "t", "track": {"id": "t", "title": "T", "url": "/media/t.wav", "duration": 60.0}}, "sequence": 1, "epoch": 1});
        for room in ["r1", "r2"] {
            for msg in [&claim, &track] {
                let _ = svc.handle(room, &[(a, None)], a, msg.clone(), |out| {
                    assert!(out.refusal.is_none(), "{out:?}");
                    assert_eq!(out.deliveries.len(), 2, "state then control");
                });
            }
        }
        let shared = svc.room("r1", &[], false).unwrap();
        let _ = std::thread::spawn({
            let shared = shared.clone();
            move || {
                let _g = shared.lock().unwrap();
                panic!("a bug in the authority");
            }
        })
        .join();
        assert!(shared.is_poisoned());
        let mut epoch_r1 = None;
        svc.on_event(
            &RoomEvent::Joined {
                room: "r1".into(),
                sid: a,
                members: vec![(a, None)],
            },
            |out| epoch_r1 = Some(out.deliveries[0].message["data"]["trackId"].clone()),
        );
        assert_eq!(
            epoch_r1,
            Some(Value::Null),
            "r1 restarted without its track"
        );
        assert!(!shared.is_poisoned());
        let mut track_r2 = None;
        svc.on_event(
            &RoomEvent::Joined {
                room: "r2".into(),
                sid: a,
                members: vec![(a, None)],
            },
            |out| track_r2 = Some(out.deliveries[0].message["data"]["trackId"].clone()),
        );
        assert_eq!(track_r2, Some(json!("t")), "r2 kept its state");
    }

    /// Isolation: a room's work holds that room's lock only. Inside room r1's output callback
    /// (r1 locked, as while its deliveries are pushed) room r2 still handles a message: with a
    /// service-wide lock this would deadlock.
    #[test]
    fn a_busy_room_does_not_block_another() {
        let svc = MusicService::new(Duration::from_secs(60));
        let a = SessionId::from_random_bytes([2; 16]);
        let claim = json!({"type": "music-control", "action": "handover", "data": {}, "sequence": 1, "epoch": 0});
        let mut inner = None;
        let _ = svc.handle("r1", &[(a, None)], a, claim.clone(), |out| {
            assert_eq!(out.deliveries.len(), 2);
            let r1 = svc.room("r1", &[], false).unwrap();
            assert!(
                r1.try_lock().is_err(),
                "r1 is locked while its output is pushed"
            );
            let _ = svc.handle("r2", &[(a, None)], a, claim.clone(), |out| {
                inner = Some(out)
            });
        });
        let inner = inner.expect("r2 handled while r1 was busy");
        assert!(inner.refusal.is_none(), "{inner:?}");
    }
}
