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
//!   Sync lane. When the controller leaves (or its socket drops), the role is free (epoch + 1)
//!   and the room gets the new `sync-state`.
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
//! delivery). Lock order: room, then registry; never the reverse.
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
}

impl MusicRoom {
    fn new(config: &AuthorityConfig, members: &[SessionId]) -> MusicRoom {
        let mut authority = RoomAuthority::new(config.clone(), shared_clock_ms());
        for m in members {
            authority.join(&m.to_string());
        }
        MusicRoom {
            authority,
            changes: ChangeLog::compacted(0),
            emptied_at: None,
        }
    }
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
}

impl MusicService {
    /// No music rooms yet; empty rooms are forgotten after `keep_empty`.
    pub(crate) fn new(keep_empty: Duration) -> MusicService {
        MusicService {
            config: AuthorityConfig::default(),
            rooms: Mutex::new(HashMap::new()),
            keep_empty,
            change_limits: ChangeLimits::DEFAULT,
        }
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

    /// The room `name`, created with `members` when `create` and it is not a music room yet.
    fn room(&self, name: &str, members: &[SessionId], create: bool) -> Option<Shared> {
        let mut map = self.map();
        if let Some(r) = map.get(name) {
            return Some(r.clone());
        }
        if !create {
            return None;
        }
        let r = Arc::new(Mutex::new(MusicRoom::new(&self.config, members)));
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
        members: &[SessionId],
        f: impl FnOnce(&mut MusicRoom) -> R,
    ) -> R {
        let mut guard = match room.lock() {
            Ok(g) => g,
            Err(poisoned) => {
                tracing::error!(room = name, "music room lock poisoned by a panic: restarting the room from a fresh authority");
                let mut g = poisoned.into_inner();
                *g = MusicRoom::new(&self.config, members);
                room.clear_poison();
                g
            }
        };
        f(&mut guard)
    }

    /// A `music-control`, `sync-state` or `music-changes` from `sid`, a member of `room`
    /// (with `members`, read from the registry); `then` gets the output while the room's lock
    /// is held (see the module docs).
    pub(crate) fn handle(
        &self,
        room: &str,
        members: &[SessionId],
        sid: SessionId,
        value: Value,
        then: impl FnOnce(Output),
    ) {
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
            let Some(shared) = self.room(room, members, true) else {
                return;
            };
            return self.with_room(room, &shared, members, |r| {
                then(changes::handle_push(
                    r,
                    room,
                    members,
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
        self.with_room(room, &shared, members, |r| {
            let authority = &mut r.authority;
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
                    for m in members {
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
            then(out);
        });
    }

    /// A join or leave of a lane room: the joiner gets the room's `sync-state`; when the
    /// controller leaves, the others get the new one. Nothing for rooms that are not music
    /// rooms. `then` runs under the room's lock.
    pub(crate) fn on_event(&self, event: &RoomEvent, then: impl FnOnce(Output)) {
        let (name, members): (&str, &[SessionId]) = match event {
            RoomEvent::Joined { room, sid } => (room, std::slice::from_ref(sid)),
            RoomEvent::Left {
                room, remaining, ..
            } => (room, remaining),
        };
        let Some(shared) = self.room(name, members, false) else {
            return;
        };
        self.with_room(name, &shared, members, |r| {
            let out = match event {
                RoomEvent::Joined { sid, .. } => {
                    r.emptied_at = None;
                    let snapshot = r.authority.join(&sid.to_string()).to_value();
                    Output::default().to(vec![*sid], snapshot)
                }
                RoomEvent::Left { sid, remaining, .. } => {
                    if remaining.is_empty() {
                        r.emptied_at = Some(Instant::now());
                    }
                    match r.authority.leave(&sid.to_string()) {
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
            self.with_room(room, &shared, &[sid], |r| {
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
                svc.handle(room, &[a], a, msg.clone(), |out| {
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
        svc.handle("r1", &[a], a, claim.clone(), |out| {
            assert_eq!(out.deliveries.len(), 2);
            let r1 = svc.room("r1", &[], false).unwrap();
            assert!(
                r1.try_lock().is_err(),
                "r1 is locked while its output is pushed"
            );
            svc.handle("r2", &[a], a, claim.clone(), |out| inner = Some(out));
        });
        let inner = inner.expect("r2 handled while r1 was busy");
        assert!(inner.refusal.is_none(), "{inner:?}");
    }
}
