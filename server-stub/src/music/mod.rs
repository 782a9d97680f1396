//! Music rooms, server tier (issue #4; seed 004 "Tier 1", "Challenge 3: Split Brain": the
//! server is the authority while it is reachable), as a service that returns deliveries.
//!
//! # Music rooms
//! A music room is a lane room in which someone sent a `music-control` message on the Sync
//! lane. From then on the server runs one [`RoomAuthority`] (the sans-IO authority of
//! [`p3_lanes::core::sync::state`]) for the room:
//! - a Sync-lane Data frame without `to` whose payload is `{type: "music-control", ...}` is
//!   **not relayed**: it goes to the authority, with the sender's session id as `from`.
//!   Applied, the room gets (server-originated Sync-lane Data frames, no `from`) first the new
//!   `sync-state`, then the resolved `music-control` (`applyAt`, `data.position`,
//!   `data.from`, ...), every member including the sender. Refused, the sender alone gets a
//!   Control `error` with the authority's code (`not_controller`, `epoch_mismatch`,
//!   `invalid_argument`, `bad_payload`), lane 7 and the frame's seq. A change from an epoch
//!   before the room's is refused with `epoch_mismatch` too (the sender missed a handover); a
//!   duplicate (same epoch, sequence not newer) is ignored silently.
//! - `{type: "music-changes", epoch?, changes}`: changes made while the server was away,
//!   reconciled into the room (module `changes`, PROTOCOL.md §13.9).
//! - `{type: "sync-state"}` from a client is refused (`invalid_argument`): only the authority
//!   states the room.
//! - Every joiner gets the room's `sync-state` at once (after `joined`), if it was granted the
//!   Sync lane. When the controller leaves (or its socket drops), the room has no controller
//!   session (epoch + 1) and gets the new `sync-state`.
//! - The DJ role belongs to the controller's verified identity (PROTOCOL.md §13.15): the
//!   registry hands every member's identity key with its session id ([`Member`]); the
//!   authority keeps the role for that identity while it is present or away within
//!   `--dj-grace-s` (others' claims: `not_controller`), gives it to the identity's next
//!   session to join, and mirrors each room's DJ identity and epoch to the state file
//!   ([`store`], `--state-dir`), from which a restarted server recreates the room at its first
//!   join. `music-changes` naming a bound `origin` of another identity are refused `forbidden`.
//! - `ping {rttMs}` reports feed the authority's lead time ([`RoomAuthority::lead_ms`]).
//! - A room's authority outlives its last member by the session TTL, so a lone DJ whose socket
//!   drops finds the room as it left it (without the controller role); then it is forgotten.
//! - The same `sync-state` is queued like a Control message: when a member's outbound queue is
//!   full its socket is closed with 1013 (it reconnects and gets a fresh snapshot) rather than
//!   silently missing a state.
//!
//! Other Sync-lane messages (and anything with `to`) are relayed as before.
//!
//! # Isolation: a lock per room
//! `MusicService` never touches the session registry. Each room is an
//! `Arc<Mutex<MusicRoom>>`; the map of rooms has its own lock, held only to look a room up,
//! insert it or sweep. Handling a message (the authority's decision, the `music-changes`
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

pub(crate) mod changes;
pub(crate) mod store;

use crate::registry::RoomEvent;
use p3_lanes::core::error::{ErrorCode, WireError};
use p3_lanes::core::frame::SessionId;
use p3_lanes::core::lane::Lane;
use p3_lanes::core::p2p::changes::{ChangeLimits, ChangeLog, ChangesPush, MUSIC_CHANGES_TYPE};
use p3_lanes::core::sync::state::{
    AuthorityConfig, Decision, RoomAuthority, SyncError, SyncMessage, MUSIC_CONTROL_TYPE,
    SYNC_STATE_TYPE,
};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use store::{DjEntry, DjStore};

/// The shared clock of music rooms: the server's wall clock, ms since the Unix epoch, with
/// sub-ms precision (clients learn it from `pong.serverTime`, the same clock floored).
pub fn shared_clock_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// Whether a Sync-lane payload is for the room's authority (`music-control`, `sync-state` or
/// `music-changes`) rather than for relaying.
pub(crate) fn is_music_message(value: &Value) -> bool {
    matches!(
        value.get("type").and_then(Value::as_str),
        Some(MUSIC_CONTROL_TYPE | SYNC_STATE_TYPE | MUSIC_CHANGES_TYPE)
    )
}

/// A room member: its session id and verified identity key (`"<kind>:<id>"`), if any.
pub(crate) type Member = (SessionId, Option<String>);

/// The identity key kinds an `origin` can be bound to (PROTOCOL.md §13.15).
const BOUND_ORIGIN_KINDS: [&str; 4] = ["siwe:", "token:", "device:", "session:"];

/// Whether `origin` is in the bound namespace (`<kind>:…`) but not `key`'s: `key` itself or
/// `key/<anything>`. Unbound origins (no such prefix) are nobody's.
fn foreign_origin(origin: &str, key: &str) -> bool {
    let bound = BOUND_ORIGIN_KINDS.iter().any(|k| origin.starts_with(k));
    let owned = origin == key
        || origin
            .strip_prefix(key)
            .is_some_and(|rest| rest.starts_with('/'));
    bound && !owned
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

/// What handling one message or event produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Output {
    /// Server messages, in order.
    pub(crate) deliveries: Vec<Delivery>,
    /// The sender's refusal (a Control `error` on lane 7 with the frame's seq).
    pub(crate) refusal: Option<WireError>,
}

impl Output {
    fn refused(code: ErrorCode, why: impl Into<String>) -> Output {
        Output {
            deliveries: Vec::new(),
            refusal: Some(WireError::new(code, why)),
        }
    }

    fn to(mut self, to: Vec<SessionId>, message: Value) -> Output {
        self.deliveries.push(Delivery {
            to,
            lane: Lane::Sync,
            message,
        });
        self
    }
}

/// One room's authority, its log of changes pushed back after the server was away
/// ([`changes`]) and, once its last member left, since when it has been empty.
#[derive(Debug)]
pub(crate) struct MusicRoom {
    pub(crate) authority: RoomAuthority,
    pub(crate) changes: ChangeLog,
    emptied_at: Option<Instant>,
    /// The DJ identity and epoch last written to the [`DjStore`].
    persisted: Option<(String, u64)>,
}

impl MusicRoom {
    /// A fresh room with `members`; `stored`: its DJ from the state file (a restart).
    fn new(config: &AuthorityConfig, members: &[Member], stored: Option<DjEntry>) -> MusicRoom {
        let now = shared_clock_ms();
        let mut authority = RoomAuthority::new(config.clone(), now);
        let persisted = stored.map(|e| {
            authority.restore_dj(&e.identity, e.epoch, now);
            (e.identity, e.epoch)
        });
        for (m, id) in members {
            let _ = authority.join_as(&m.to_string(), id.as_deref());
        }
        MusicRoom {
            authority,
            changes: ChangeLog::compacted(0),
            emptied_at: None,
            persisted,
        }
    }
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
        }
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
        let stored = self.store.get(name);
        if !create && stored.is_none() {
            return None;
        }
        let r = Arc::new(Mutex::new(MusicRoom::new(&self.config, members, stored)));
        map.insert(name.to_owned(), r.clone());
        Some(r)
    }

    /// The lock of room `name`, if it is a music room (tests hold it to play a busy room).
    #[cfg(test)]
    pub(crate) fn room_for_test(&self, name: &str) -> Option<Arc<Mutex<MusicRoom>>> {
        self.room(name, &[], false)
    }

    /// Runs `f` on `room` holding only its lock. A poisoned room is restarted fresh (with
    /// `members`) and logged, never reused half-updated.
    fn with_room<R>(
        &self,
        name: &str,
        room: &Shared,
        members: &[Member],
        f: impl FnOnce(&mut MusicRoom) -> R,
    ) -> R {
        let mut guard = match room.lock() {
            Ok(g) => g,
            Err(poisoned) => {
                tracing::error!(room = name, "music room lock poisoned by a panic: restarting the room from a fresh authority");
                let mut g = poisoned.into_inner();
                *g = MusicRoom::new(&self.config, members, self.store.get(name));
                room.clear_poison();
                g
            }
        };
        let out = f(&mut guard);
        self.persist(name, &mut guard);
        out
    }

    /// Writes room `name`'s DJ identity and epoch to the store if they changed (under the
    /// room's lock, then the store's).
    fn persist(&self, name: &str, r: &mut MusicRoom) {
        let now = r
            .authority
            .dj_identity()
            .map(|id| (id.to_owned(), r.authority.state().epoch));
        if now == r.persisted {
            return;
        }
        self.store.set(
            name,
            now.as_ref().map(|(id, e)| (id.as_str(), *e)),
            crate::now_ms(),
        );
        r.persisted = now;
    }

    /// A `music-control`, `sync-state` or `music-changes` from `sid`, a member of `room`
    /// (with `members` and their identities, read from the registry); `then` gets the output
    /// while the room's lock is held (see the module docs).
    pub(crate) fn handle(
        &self,
        room: &str,
        members: &[Member],
        sid: SessionId,
        value: Value,
        then: impl FnOnce(Output),
    ) {
        let identity = members
            .iter()
            .find(|m| m.0 == sid)
            .and_then(|m| m.1.clone());
        let kind = value.get("type").and_then(Value::as_str);
        if kind == Some(MUSIC_CHANGES_TYPE) {
            // Parsed and checked before any lock.
            let push: ChangesPush = match serde_json::from_value(value) {
                Ok(p) => p,
                Err(e) => {
                    return then(Output::refused(
                        ErrorCode::BadPayload,
                        format!("not a music-changes push: {e}"),
                    ))
                }
            };
            // A seed that is not a playable state refuses the whole push (§13.14), before it
            // touches the room.
            if let Some(Err(e)) = push.seed.as_ref().map(|s| s.check_seed()) {
                return then(Output::refused(e.code(), e.to_string()));
            }
            // An origin in the bound namespace must be the pusher's (PROTOCOL.md §13.15): a
            // push in another identity's or session's name is refused whole.
            let key = identity.clone().unwrap_or_else(|| format!("session:{sid}"));
            if let Some(c) = push
                .changes
                .iter()
                .find(|c| foreign_origin(&c.origin, &key))
            {
                return then(Output::refused(
                    ErrorCode::Forbidden,
                    format!("origin {:?} is not this session's ({key})", c.origin),
                ));
            }
            let Some(shared) = self.room(room, members, true) else {
                return;
            };
            return self.with_room(room, &shared, members, |r| {
                then(changes::handle_push(
                    r,
                    room,
                    &sids(members),
                    sid,
                    push,
                    self.change_limits,
                ))
            });
        }
        if kind == Some(SYNC_STATE_TYPE) {
            return then(Output::refused(
                ErrorCode::InvalidArgument,
                "sync-state is sent by the room's authority only; send music-control",
            ));
        }
        let change = match SyncMessage::from_value(value) {
            Ok(SyncMessage::MusicControl(c)) => c,
            Ok(_) => {
                return then(Output::refused(
                    ErrorCode::InvalidArgument,
                    "only music-control is accepted",
                ))
            }
            Err(e) => return then(Output::refused(e.code(), e.to_string())),
        };
        let Some(shared) = self.room(room, members, true) else {
            return;
        };
        let everyone = sids(members);
        self.with_room(room, &shared, members, |r| {
            let authority = &mut r.authority;
            let member = sid.to_string();
            // The sender's identity is known before its change (a room created by it).
            let (_, restored) = authority.join_as(&member, identity.as_deref());
            let decision = authority.handle_control(&sid.to_string(), &change, shared_clock_ms());
            let room_epoch = authority.state().epoch;
            let out = match decision {
                Ok(Decision::Applied { control, state }) => {
                    tracing::debug!(room, session = %sid, action = %control.action, epoch = state.epoch,
                        sequence = state.sequence, apply_at = control.apply_at, "music change applied");
                    let state = SyncMessage::SyncState { data: state }.to_value();
                    let control = SyncMessage::MusicControl(control).to_value();
                    // Per member: the state, then the control.
                    let mut out = Output::default();
                    for m in &everyone {
                        out = out.to(vec![*m], state.clone()).to(vec![*m], control.clone());
                    }
                    out
                }
                Ok(Decision::Ignored) if change.epoch < room_epoch => Output::refused(
                    ErrorCode::EpochMismatch,
                    format!(
                        "change names epoch {}, the room is at epoch {room_epoch}; resync from the room's sync-state",
                        change.epoch
                    ),
                ),
                Ok(Decision::Ignored) => {
                    tracing::debug!(room, session = %sid, epoch = change.epoch, sequence = change.sequence,
                        "duplicate music change ignored");
                    Output::default()
                }
                Err(e) => {
                    let why = match &e {
                        SyncError::NotController { .. } | SyncError::EpochMismatch { .. } => {
                            format!("{e}; resync from the room's sync-state")
                        }
                        _ => e.to_string(),
                    };
                    Output::refused(e.code(), why)
                }
            };
            let out = match restored {
                Some(state) => Output {
                    deliveries: std::iter::once(Delivery {
                        to: everyone.clone(),
                        lane: Lane::Sync,
                        message: SyncMessage::SyncState { data: state }.to_value(),
                    })
                    .chain(out.deliveries)
                    .collect(),
                    refusal: out.refusal,
                },
                None => out,
            };
            then(out);
        });
    }

    /// A join or leave of a lane room: the joiner gets the room's `sync-state`; when the
    /// controller leaves, the others get the new one. Nothing for rooms that are not music
    /// rooms. `then` runs under the room's lock.
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
        self.with_room(name, &shared, members, |r| {
            let out = match event {
                RoomEvent::Joined { sid, members, .. } => {
                    r.emptied_at = None;
                    let identity = members
                        .iter()
                        .find(|m| m.0 == *sid)
                        .and_then(|m| m.1.as_deref());
                    let (snapshot, restored) = r.authority.join_as(&sid.to_string(), identity);
                    match restored {
                        // The DJ's identity is back: everyone learns its new session.
                        Some(state) => Output::default().to(
                            sids(members),
                            SyncMessage::SyncState { data: state }.to_value(),
                        ),
                        None => Output::default().to(vec![*sid], snapshot.to_value()),
                    }
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
                    match r
                        .authority
                        .leave_at(&sid.to_string(), *explicit, shared_clock_ms())
                    {
                        Some(state) => Output::default().to(
                            remaining.clone(),
                            SyncMessage::SyncState { data: state }.to_value(),
                        ),
                        None => Output::default(),
                    }
                }
            };
            then(out);
        });
    }

    /// One RTT report of `sid`, a member of `room`, ms.
    pub(crate) fn rtt(&self, room: &str, sid: SessionId, rtt_ms: f64) {
        if let Some(shared) = self.room(room, &[], false) {
            self.with_room(room, &shared, &[(sid, None)], |r| {
                r.authority.update_member_rtt(&sid.to_string(), rtt_ms);
            });
        }
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
                svc.handle(room, &[(a, None)], a, msg.clone(), |out| {
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
        svc.handle("r1", &[(a, None)], a, claim.clone(), |out| {
            assert_eq!(out.deliveries.len(), 2);
            let r1 = svc.room("r1", &[], false).unwrap();
            assert!(
                r1.try_lock().is_err(),
                "r1 is locked while its output is pushed"
            );
            svc.handle("r2", &[(a, None)], a, claim.clone(), |out| {
                inner = Some(out)
            });
        });
        let inner = inner.expect("r2 handled while r1 was busy");
        assert!(inner.refusal.is_none(), "{inner:?}");
    }
}
