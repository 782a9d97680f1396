//! Tier 3's offline change queue and the change log of whoever orders changes (server or
//! elected controller), with reconciliation when peers or the server come back (seed 004
//! Phase 3 "Resolve conflicts (server wins)", "Log failures for retry on reconnect"; issue #5
//! "nothing lost, nothing applied twice").
//!
//! # Identities and order
//! - A [`Change`] is identified by `(origin, localSeq)`: the device that made it and its own
//!   counter from 1. It also carries the epoch it was made in and its timestamp on the shared
//!   clock (ms since the Unix epoch), and its body `op` (a `music-control` as JSON).
//! - A [`ChangeLog`] (the authority's) applies a change at most once: it keeps, per origin, the
//!   highest applied `localSeq` (a version vector) and accepts only the next one
//!   ([`RejectReason::Duplicate`] below it, [`RejectReason::Gap`] above it). Applied changes
//!   are stamped `(epoch, sequence)` in application order; that order is *the* order.
//! - A device keeps its own changes in its [`OfflineQueue`] until an authority's version vector
//!   covers them; on every new authority (elected controller, healed partition, server back) it
//!   re-submits what is not covered. A losing controller also re-submits its whole log
//!   ([`ChangeLog::missing_for`]), so changes survive even when their origin is gone.
//! - **Reconciliation order** ([`ChangeLog::reconcile`]): per origin, the batch's changes that
//!   follow the origin's applied ones without a gap are taken (duplicates dropped; from the
//!   first gap on, the origin's changes wait for a later push). They are applied sorted by
//!   `(t*, origin, localSeq)`, where `t*` is the latest timestamp of the change and its
//!   predecessors in the batch: timestamp order, except that a change never goes before its
//!   same-origin predecessor. Two sorts: O(n log n) per push. The authority's existing log is
//!   never rewritten: server wins, late changes go after what it has.
//! - Followers accept stamped entries with [`ChangeLog::accept`], which rejects an epoch below
//!   the adopted claim's ([`RejectReason::StaleEpoch`]) and anything not after the last entry.
//!
//! # Bounds (issue 11, PROTOCOL.md §13.9 and §15)
//! [`apply_push`] checks a whole push before it touches the room and refuses it whole:
//! more than [`ChangeLimits::max_changes_per_push`] changes ([`MAX_CHANGES_PER_PUSH`], 1024), an
//! origin longer than [`MAX_ORIGIN_BYTES`] (128), or origins the room has not seen that would
//! take its version vector past [`ChangeLimits::max_origins_per_room`]
//! ([`MAX_ORIGINS_PER_ROOM`], 256) are `limit_exceeded`; an epoch or `localSeq` above
//! [`MAX_SAFE_INTEGER`](crate::core::sync::state::MAX_SAFE_INTEGER) or an epoch more than [`MAX_EPOCH_JUMP`](crate::core::sync::state::MAX_EPOCH_JUMP) above the room's is
//! `out_of_range`. So the version vector holds at most 256 origins of at most 128 bytes, and
//! an acknowledgement (the whole version vector plus at most 1024 `appliedOrder` pairs) is at
//! most about 1 MB even with every origin byte escaped as `\u00XX` in JSON, below
//! [`crate::core::frame::DEFAULT_MAX_FRAME_BYTES`] (checked by a test). The log itself is
//! compacted: it keeps the last [`ChangeLog::retention`] entries (at most twice that between
//! compactions); older ones live on only in the version vector, which is all that
//! acknowledging and refusing duplicates need. The server keeps none
//! ([`ChangeLog::compacted`]).
//!
//! # Persistence
//! [`OfflineQueue::to_json`] / [`OfflineQueue::from_json`] give the form the browser layer puts
//! in IndexedDB or localStorage so that queued changes survive a reload:
//! `{origin, nextSeq, pending: [{origin, localSeq, epoch, timestamp, op}], carried: [..]}`
//! (`carried`: other origins' changes held for a replaced authority, see
//! [`OfflineQueue::carry`]).

use crate::core::error::ErrorCode;
use crate::core::sync::state::{
    check_epoch_jump, check_safe, Decision, MusicControl, RoomAuthority, SyncError, SyncMessage,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::cell::Cell;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

/// Per-origin highest applied `localSeq`.
pub type VersionVector = BTreeMap<String, u64>;

/// `type` of [`ChangesPush`] on the Sync lane.
pub const MUSIC_CHANGES_TYPE: &str = "music-changes";
/// `type` of [`ChangesAck`] on the Sync lane.
pub const MUSIC_CHANGES_ACK_TYPE: &str = "music-changes-ack";

/// Most changes in one `music-changes` push (default of [`ChangeLimits`]; server flag
/// `--max-changes-per-push`). A device with more pushes them in several frames.
pub const MAX_CHANGES_PER_PUSH: usize = 1024;

/// Most origins a room's version vector holds (default of [`ChangeLimits`]; server flag
/// `--max-origins-per-room`). A push naming origins the room has not seen that would take it
/// past this is refused whole (`limit_exceeded`).
pub const MAX_ORIGINS_PER_ROOM: usize = 256;

/// Longest origin (device id), UTF-8 bytes: 128, as a handshake's `clientId`.
pub const MAX_ORIGIN_BYTES: usize = 128;

/// The default `origin` of a device's changes (PROTOCOL.md §13.15): `device` (the profile's
/// device name, e.g. `device-0123…`) bound to the session's verified identity key
/// (`'<kind>:<id>'`, [`crate::core::auth::Identity::key`]) as `'<key>/<device>'`, which the
/// server accepts only from that identity; `device` alone (unbound: anyone's) without an
/// identity or when the bound form would be over [`MAX_ORIGIN_BYTES`] (a long JWT `sub`).
pub fn default_origin(identity_key: Option<&str>, device: &str) -> String {
    match identity_key {
        Some(key) if key.len() + 1 + device.len() <= MAX_ORIGIN_BYTES => format!("{key}/{device}"),
        _ => device.to_owned(),
    }
}

/// Entries a [`ChangeLog::new`] keeps (its [`ChangeLog::retention`]): one push's worth, what a
/// losing controller can re-push in one frame ([`ChangeLog::missing_for`]).
pub const MAX_LOG_ENTRIES: usize = MAX_CHANGES_PER_PUSH;

/// The bounds [`apply_push`] enforces per push and per room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChangeLimits {
    /// Most changes in one push ([`MAX_CHANGES_PER_PUSH`]).
    pub max_changes_per_push: usize,
    /// Most origins in a room's version vector ([`MAX_ORIGINS_PER_ROOM`]).
    pub max_origins_per_room: usize,
}

impl ChangeLimits {
    /// [`MAX_CHANGES_PER_PUSH`] and [`MAX_ORIGINS_PER_ROOM`].
    pub const DEFAULT: ChangeLimits = ChangeLimits {
        max_changes_per_push: MAX_CHANGES_PER_PUSH,
        max_origins_per_room: MAX_ORIGINS_PER_ROOM,
    };
}

impl Default for ChangeLimits {
    fn default() -> Self {
        ChangeLimits::DEFAULT
    }
}

/// Why a whole `music-changes` push was refused (nothing of it applied). Valid bytes, protocol
/// violation: answer the pusher with a Control `error` carrying [`ChangesError::code`].
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ChangesError {
    /// A count or size bound of [`ChangeLimits`] or [`MAX_ORIGIN_BYTES`] (`limit_exceeded`).
    #[error("{what}: {got} is over the limit of {max}")]
    LimitExceeded {
        /// Which bound (`changes per push`, `origins per room`, `origin bytes`).
        what: &'static str,
        /// The count or size the push asked for.
        got: usize,
        /// The bound.
        max: usize,
    },
    /// A number or seed the room refuses: [`SyncError::OutOfRange`] (`out_of_range`) for an
    /// epoch or `localSeq` (see [`MAX_SAFE_INTEGER`](crate::core::sync::state::MAX_SAFE_INTEGER), [`MAX_EPOCH_JUMP`](crate::core::sync::state::MAX_EPOCH_JUMP)), or a seed that is
    /// not a playable state ([`SyncError::InvalidArgument`], `invalid_argument`).
    #[error(transparent)]
    Sync(#[from] SyncError),
}

impl ChangesError {
    /// The wire code: `limit_exceeded`, `out_of_range` or `invalid_argument`.
    pub fn code(&self) -> ErrorCode {
        match self {
            ChangesError::LimitExceeded { .. } => ErrorCode::LimitExceeded,
            ChangesError::Sync(e) => e.code(),
        }
    }
}

/// A device pushes changes the server has not seen (PROTOCOL.md §13.9): Sync-lane
/// `{type: "music-changes", epoch?, changes: [Change]}` (the `type` tag is the caller's).
/// `changes` are [`OfflineQueue::unacknowledged`] (own and carried); `epoch` the highest
/// controller epoch the device knows (its claim's), also when it has no change to push.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangesPush {
    /// The device's highest known epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// The changes, any order (the server reconciles them, [`ChangeLog::reconcile`]).
    #[serde(default)]
    pub changes: Vec<Change>,
    /// The state this device followed before its session changed (PROTOCOL.md §13.14): the
    /// server takes it as the room's state only if its room is fresh
    /// ([`crate::core::sync::state::RoomAuthority::reseed`]), before the changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<crate::core::sync::state::RoomState>,
}

/// The server's answer to the pusher (PROTOCOL.md §13.9): Sync-lane `{type:
/// "music-changes-ack", versionVector, epoch, applied, skipped, appliedOrder}`. Feed `versionVector` to
/// [`OfflineQueue::acknowledge`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangesAck {
    /// The room's applied changes, per origin the highest `localSeq`.
    pub version_vector: VersionVector,
    /// The room's epoch after the push (above every epoch the push named).
    pub epoch: u64,
    /// Changes of this push applied now (duplicates and changes still waiting for a
    /// predecessor are not).
    pub applied: u64,
    /// Of those, changes logged but without effect on playback: handovers (the server decides
    /// the controller) and invalid operations.
    pub skipped: u64,
    /// The changes applied now, `[origin, localSeq]` in the order the server applied them.
    #[serde(default)]
    pub applied_order: Vec<(String, u64)>,
    /// The push's `seed` became the room's state (PROTOCOL.md §13.14); `false` without a seed
    /// or when the room was live (server wins).
    #[serde(default)]
    pub seeded: bool,
}

/// One device's change. JSON camelCase.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// The device that made it.
    pub origin: String,
    /// Its counter on that device, from 1.
    pub local_seq: u64,
    /// The controller epoch the device was in when it made it.
    pub epoch: u64,
    /// When it was made, shared clock (ms since the Unix epoch).
    pub timestamp: f64,
    /// The body (a `music-control` as JSON).
    pub op: Value,
}

impl Change {
    /// `(origin, localSeq)`.
    pub fn id(&self) -> (&str, u64) {
        (&self.origin, self.local_seq)
    }
}

/// A change as ordered by an authority: `(epoch, sequence)` in application order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stamped {
    /// The authority's epoch.
    pub epoch: u64,
    /// Position within the epoch, from 1.
    pub sequence: u64,
    /// The change.
    pub change: Change,
}

/// Why a change or entry was not applied. Not an error of the caller: expected during
/// reconciliation (duplicates) and after partitions (stale epochs).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RejectReason {
    /// Already applied (`localSeq` at or below the origin's applied one).
    #[error("change already applied")]
    Duplicate,
    /// An earlier change of the same origin is missing; `expected` is the next one.
    #[error("change out of order, expected local sequence {expected}")]
    Gap {
        /// The `localSeq` the log expects next from that origin.
        expected: u64,
    },
    /// A stamped entry from an epoch below the adopted claim's.
    #[error("entry from stale epoch {got}, current epoch is {current}")]
    StaleEpoch {
        /// The entry's epoch.
        got: u64,
        /// The adopted epoch.
        current: u64,
    },
    /// A stamped entry not after the last applied `(epoch, sequence)`.
    #[error("entry not after the last applied one")]
    Old,
}

/// A device's own changes not yet covered by an authority (see the module doc).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OfflineQueue {
    origin: String,
    next_seq: u64,
    pending: Vec<Change>,
    /// Other origins' changes this device saw applied by an authority that lost (or was
    /// replaced) before the new one had them: carried until an authority covers them.
    #[serde(default)]
    carried: Vec<Change>,
}

impl OfflineQueue {
    /// An empty queue for device `origin`.
    pub fn new(origin: impl Into<String>) -> Self {
        OfflineQueue {
            origin: origin.into(),
            next_seq: 1,
            pending: Vec::new(),
            carried: Vec::new(),
        }
    }

    /// Records a new local change made in `epoch` at `timestamp` (shared clock, ms) and
    /// returns it (to submit to the current authority, if any).
    pub fn record(&mut self, op: Value, epoch: u64, timestamp: f64) -> Change {
        let change = Change {
            origin: self.origin.clone(),
            local_seq: self.next_seq,
            epoch,
            timestamp,
            op,
        };
        // Saturating: `next_seq` may come from storage (`from_json`).
        self.next_seq = self.next_seq.saturating_add(1);
        self.pending.push(change.clone());
        change
    }

    /// Drops the changes `vv` covers (the authority has them), own and carried.
    pub fn acknowledge(&mut self, vv: &VersionVector) {
        let covered = |c: &Change| c.local_seq <= vv.get(&c.origin).copied().unwrap_or(0);
        self.pending.retain(|c| !covered(c));
        self.carried.retain(|c| !covered(c));
    }

    /// Keeps `changes` (typically [`ChangeLog::adopt`]'s result: applied by a replaced
    /// authority, unknown to the new one) until an authority covers them. Own changes go back
    /// to `pending`; ids already held are skipped.
    pub fn carry(&mut self, changes: impl IntoIterator<Item = Change>) {
        for c in changes {
            let held = self
                .pending
                .iter()
                .chain(&self.carried)
                .any(|h| h.id() == c.id());
            if held {
                continue;
            }
            if c.origin == self.origin {
                self.pending.push(c);
                self.pending.sort_by_key(|c| c.local_seq);
            } else {
                self.carried.push(c);
            }
        }
    }

    /// The changes (own, then carried) not covered by `vv`: re-submit them to that authority.
    pub fn unacknowledged(&self, vv: &VersionVector) -> Vec<Change> {
        self.pending
            .iter()
            .chain(&self.carried)
            .filter(|c| c.local_seq > vv.get(&c.origin).copied().unwrap_or(0))
            .cloned()
            .collect()
    }

    /// The device this queue belongs to.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The `localSeq` the next [`OfflineQueue::record`] gives (from 1).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Carried changes of other origins.
    pub fn carried(&self) -> &[Change] {
        &self.carried
    }

    /// All pending changes, oldest first.
    pub fn pending(&self) -> &[Change] {
        &self.pending
    }

    /// The persisted form (JSON text).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("queue serializes")
    }

    /// Restores a queue persisted by [`OfflineQueue::to_json`].
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// The ordered log of an authority (server or controller), and of followers that copy it.
/// Compacted: it keeps its last [`ChangeLog::retention`] entries (up to twice that between
/// compactions); the version vector and the last `(epoch, sequence)` cover the rest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangeLog {
    epoch: u64,
    entries: Vec<Stamped>,
    applied: VersionVector,
    /// `(epoch, sequence)` of the last entry ever applied, kept or compacted.
    #[serde(default)]
    last: (u64, u64),
    #[serde(default = "default_retention")]
    retention: usize,
}

fn default_retention() -> usize {
    MAX_LOG_ENTRIES
}

/// What [`ChangeLog::reconcile`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reconciled {
    /// The changes applied now, stamped, in application order.
    pub applied: Vec<Stamped>,
    /// Steps taken: comparisons in the two sorts plus one per change and per origin looked
    /// up. At most `3 n log2 n + 3 n + 3` for a batch of `n` (the tests hold it to that,
    /// [`Reconciled::WORK_BOUND_FACTOR`]); exposed so tests bound the work without timing it.
    pub work: u64,
}

impl Reconciled {
    /// `c` of the work bound `c · n · log2 n + c · n + c` ([`Reconciled::work`]).
    pub const WORK_BOUND_FACTOR: f64 = 3.0;

    /// The most [`Reconciled::work`] a batch of `n` changes may take.
    pub fn work_bound(n: usize) -> f64 {
        let n = n as f64;
        Reconciled::WORK_BOUND_FACTOR * (n * n.max(1.0).log2() + n + 1.0)
    }
}

impl ChangeLog {
    /// An empty log at `epoch` keeping [`MAX_LOG_ENTRIES`] entries.
    pub fn new(epoch: u64) -> Self {
        ChangeLog::with_retention(epoch, MAX_LOG_ENTRIES)
    }

    /// An empty log at `epoch` that keeps no entries, only the version vector and the last
    /// `(epoch, sequence)`: the server's (it never sends its entries anywhere).
    pub fn compacted(epoch: u64) -> Self {
        ChangeLog::with_retention(epoch, 0)
    }

    /// An empty log at `epoch` keeping the last `retention` entries.
    pub fn with_retention(epoch: u64, retention: usize) -> Self {
        ChangeLog {
            epoch,
            entries: Vec::new(),
            applied: VersionVector::new(),
            last: (0, 0),
            retention,
        }
    }

    /// How many entries this log keeps (at most twice that between compactions).
    pub fn retention(&self) -> usize {
        self.retention
    }

    /// Drops the oldest entries once more than twice the retention are held (amortized O(1)
    /// per entry).
    fn compact(&mut self) {
        if self.entries.len() > self.retention.saturating_mul(2) {
            let drop = self.entries.len() - self.retention;
            self.entries.drain(..drop);
        }
    }

    /// The epoch new changes are stamped with.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Applied entries in order: the last ones kept (see [`ChangeLog::retention`]).
    pub fn entries(&self) -> &[Stamped] {
        &self.entries
    }

    /// The version vector of applied changes.
    pub fn applied(&self) -> &VersionVector {
        &self.applied
    }

    /// `(epoch, sequence)` of the last entry applied (also when compacted away), `(0, 0)` if
    /// none.
    pub fn version(&self) -> (u64, u64) {
        self.last
    }

    /// This log's owner became the controller at `epoch` (ignored unless higher): later
    /// changes are stamped in it, sequence from 1.
    pub fn begin_epoch(&mut self, epoch: u64) {
        self.epoch = self.epoch.max(epoch);
    }

    /// Authority side: applies `change` if it is the next from its origin, and stamps it.
    ///
    /// Errors: [`RejectReason::Duplicate`], [`RejectReason::Gap`] (also when the origin's
    /// counter or the sequence cannot grow: `u64::MAX`).
    pub fn submit(&mut self, change: Change) -> Result<Stamped, RejectReason> {
        let done = self.applied.get(&change.origin).copied().unwrap_or(0);
        if change.local_seq <= done {
            return Err(RejectReason::Duplicate);
        }
        let expected = done.checked_add(1).ok_or(RejectReason::Duplicate)?;
        if change.local_seq != expected {
            return Err(RejectReason::Gap { expected });
        }
        let stamped = self.stamp(change).ok_or(RejectReason::Gap { expected })?;
        self.compact();
        Ok(stamped)
    }

    /// Appends `change` (the next of its origin) with the next `(epoch, sequence)`; `None` if
    /// the sequence cannot grow.
    fn stamp(&mut self, change: Change) -> Option<Stamped> {
        let (e, s) = self.last;
        let sequence = if e == self.epoch {
            s.checked_add(1)?
        } else {
            1
        };
        self.applied.insert(change.origin.clone(), change.local_seq);
        self.last = (self.epoch, sequence);
        let stamped = Stamped {
            epoch: self.epoch,
            sequence,
            change,
        };
        self.entries.push(stamped.clone());
        Some(stamped)
    }

    /// Authority side: applies a batch in the documented order (module docs: per origin the
    /// run that follows its applied changes, sorted by `(t*, origin, localSeq)`) in O(n log n).
    /// Duplicates are dropped; changes after a gap stay unapplied (their origin re-submits
    /// them). Returns the applied changes, stamped, and the work done.
    pub fn reconcile(&mut self, batch: impl IntoIterator<Item = Change>) -> Reconciled {
        let work = Cell::new(0u64);
        let count = |o: Ordering| {
            work.set(work.get() + 1);
            o
        };
        let mut batch: Vec<Change> = batch.into_iter().collect();
        // 1. Group per origin, in localSeq order.
        batch.sort_unstable_by(|a, b| {
            count(
                a.origin
                    .cmp(&b.origin)
                    .then_with(|| a.local_seq.cmp(&b.local_seq)),
            )
        });
        // 2. Per origin, the run without a gap, each change with its t*.
        let mut runnable: Vec<(f64, Change)> = Vec::with_capacity(batch.len());
        let mut origin: Option<(String, Option<u64>, f64)> = None; // (origin, expected, t*)
        for c in batch {
            work.set(work.get() + 1);
            if !origin.as_ref().is_some_and(|(o, ..)| *o == c.origin) {
                work.set(work.get() + 1);
                let done = self.applied.get(&c.origin).copied().unwrap_or(0);
                origin = Some((c.origin.clone(), done.checked_add(1), f64::NEG_INFINITY));
            }
            let Some((_, expected, t)) = origin.as_mut() else {
                continue;
            };
            match *expected {
                Some(e) if c.local_seq == e => {
                    *expected = e.checked_add(1);
                    *t = t.max(c.timestamp);
                    runnable.push((*t, c));
                }
                // A duplicate (below `e`) is dropped; after a gap the rest waits.
                Some(e) if c.local_seq > e => *expected = None,
                _ => {}
            }
        }
        // 3. Timestamp order, a change never before its predecessor.
        runnable.sort_unstable_by(|(ta, a), (tb, b)| {
            count(
                ta.total_cmp(tb)
                    .then_with(|| a.origin.cmp(&b.origin))
                    .then_with(|| a.local_seq.cmp(&b.local_seq)),
            )
        });
        let mut applied = Vec::with_capacity(runnable.len());
        for (_, c) in runnable {
            work.set(work.get() + 1);
            match self.stamp(c) {
                Some(s) => applied.push(s),
                None => break,
            }
        }
        self.compact();
        Reconciled {
            applied,
            work: work.get(),
        }
    }

    /// Follower side: replaces this copy with the log of a new authority (a winning claim, the
    /// server) and returns the changes this copy had that the new one lacks, for
    /// [`OfflineQueue::carry`]: so a healed partition's losing side loses nothing even when
    /// the re-submission to the winner is itself lost.
    pub fn adopt(&mut self, newer: ChangeLog) -> Vec<Change> {
        let missing = self.missing_for(newer.applied());
        *self = newer;
        missing
    }

    /// Follower side: appends an entry from the authority whose claim is at `current_epoch`.
    /// Rejects a stale epoch, an entry not after the last one, a duplicate, and a gap in the
    /// entry origin's changes (this copy must then adopt the authority's log).
    pub fn accept(&mut self, entry: Stamped, current_epoch: u64) -> Result<(), RejectReason> {
        if entry.epoch < current_epoch {
            return Err(RejectReason::StaleEpoch {
                got: entry.epoch,
                current: current_epoch,
            });
        }
        if (entry.epoch, entry.sequence) <= self.version() {
            return Err(RejectReason::Old);
        }
        let done = self.applied.get(&entry.change.origin).copied().unwrap_or(0);
        if entry.change.local_seq <= done {
            return Err(RejectReason::Duplicate);
        }
        let expected = done.checked_add(1).ok_or(RejectReason::Duplicate)?;
        if entry.change.local_seq != expected {
            // This copy is of another lineage (adopt the authority's snapshot first): keep
            // "applied up to n" meaning "holds 1..=n" so acknowledgements stay truthful.
            return Err(RejectReason::Gap { expected });
        }
        self.epoch = self.epoch.max(entry.epoch);
        self.applied
            .insert(entry.change.origin.clone(), entry.change.local_seq);
        self.last = (entry.epoch, entry.sequence);
        self.entries.push(entry);
        self.compact();
        Ok(())
    }

    /// The changes of this log that `vv` does not cover, in log order: what a losing
    /// controller (or a peer log) pushes to the winner or to the returning server. Only kept
    /// entries (see [`ChangeLog::retention`]); the origins' own queues hold the rest.
    pub fn missing_for(&self, vv: &VersionVector) -> Vec<Change> {
        self.entries
            .iter()
            .filter(|s| s.change.local_seq > vv.get(&s.change.origin).copied().unwrap_or(0))
            .map(|s| s.change.clone())
            .collect()
    }
}

/// What [`apply_push`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct PushOutcome {
    /// The answer for the pusher (add `type: "music-changes-ack"`).
    pub ack: ChangesAck,
    /// The room's state changed (seed, epoch raised, a change applied): send every member
    /// the new `sync-state` ([`RoomAuthority::snapshot`]) once.
    pub changed: bool,
    /// [`Reconciled::work`] of the push plus one step per change checked.
    pub work: u64,
}

/// A change's `op` as a `music-control`: `{type: "music-control", ...}` or the bare fields.
fn parse_op(op: &Value) -> Option<MusicControl> {
    match SyncMessage::from_value(op.clone()) {
        Ok(SyncMessage::MusicControl(c)) => Some(c),
        _ => serde_json::from_value(op.clone()).ok(),
    }
}

/// Checks a whole push against `limits` and the room before anything is applied (module
/// docs, "Bounds"); returns the highest epoch it names.
fn check_push(
    authority: &RoomAuthority,
    log: &ChangeLog,
    push: &ChangesPush,
    limits: ChangeLimits,
) -> Result<Option<u64>, ChangesError> {
    if push.changes.len() > limits.max_changes_per_push {
        return Err(ChangesError::LimitExceeded {
            what: "changes per push",
            got: push.changes.len(),
            max: limits.max_changes_per_push,
        });
    }
    let mut new_origins = BTreeSet::new();
    for c in &push.changes {
        if c.origin.len() > MAX_ORIGIN_BYTES {
            return Err(ChangesError::LimitExceeded {
                what: "origin bytes",
                got: c.origin.len(),
                max: MAX_ORIGIN_BYTES,
            });
        }
        check_safe("localSeq", c.local_seq)?;
        check_safe("epoch", c.epoch)?;
        if !log.applied.contains_key(&c.origin) {
            new_origins.insert(c.origin.as_str());
        }
    }
    let origins = log.applied.len() + new_origins.len();
    if origins > limits.max_origins_per_room {
        return Err(ChangesError::LimitExceeded {
            what: "origins per room",
            got: origins,
            max: limits.max_origins_per_room,
        });
    }
    check_safe("epoch", push.epoch.unwrap_or(0))?;
    let room = authority.state().epoch;
    // The epoch the room will be at when the told epochs are raised above: after the seed,
    // if a fresh room takes it (§13.14; not bound by MAX_EPOCH_JUMP, only by the cap).
    let base = match &push.seed {
        Some(seed) => {
            seed.check_seed()?;
            if authority.is_fresh() {
                let e = room.max(seed.epoch);
                check_epoch_jump(e, e)?;
                e + 1
            } else {
                room
            }
        }
        None => room,
    };
    let told = push.changes.iter().map(|c| c.epoch).chain(push.epoch).max();
    if let Some(told) = told.filter(|t| *t >= base) {
        check_epoch_jump(told, base)?;
    }
    Ok(told)
}

/// Applies a `music-changes` push to a room (PROTOCOL.md §13.9, §13.14; issue 11): checks it
/// whole against `limits` and the room's numbers, then (1) takes its `seed` if the room is
/// fresh ([`RoomAuthority::reseed`]), (2) moves the room's epoch above every epoch it names
/// ([`RoomAuthority::raise_epoch_above`]), (3) reconciles its changes into `log`
/// ([`ChangeLog::reconcile`], O(n log n)) and (4) applies each newly logged change's `op` (a
/// `music-control`, with or without its `type`) with [`RoomAuthority::apply_offline`];
/// handovers, invalid operations and changes the room cannot number are logged but `skipped`.
///
/// A room's epoch never goes backwards, and a refused push changes nothing.
///
/// Errors: [`ChangesError::LimitExceeded`] (`limit_exceeded`) for more than
/// `limits.max_changes_per_push` changes, an origin over [`MAX_ORIGIN_BYTES`], or new origins
/// past `limits.max_origins_per_room`; [`ChangesError::Sync`] with
/// [`SyncError::OutOfRange`] (`out_of_range`) for an epoch or `localSeq` above
/// [`MAX_SAFE_INTEGER`](crate::core::sync::state::MAX_SAFE_INTEGER) or an epoch more than [`MAX_EPOCH_JUMP`](crate::core::sync::state::MAX_EPOCH_JUMP) above the room's, or with
/// [`SyncError::InvalidArgument`] for a seed that is not a playable state.
pub fn apply_push(
    authority: &mut RoomAuthority,
    log: &mut ChangeLog,
    push: ChangesPush,
    now_ms: f64,
    limits: ChangeLimits,
) -> Result<PushOutcome, ChangesError> {
    let told = check_push(authority, log, &push, limits)?;
    let seeded = match &push.seed {
        Some(seed) => authority.reseed(seed)?.is_some(),
        None => false,
    };
    let raised = match told {
        Some(e) => authority.raise_epoch_above(e)?.is_some(),
        None => false,
    };
    let mut changed = seeded || raised;
    log.begin_epoch(authority.state().epoch);
    let checked = push.changes.len() as u64;
    let reconciled = log.reconcile(push.changes);
    let mut skipped = 0;
    let mut applied_order = Vec::with_capacity(reconciled.applied.len());
    for entry in &reconciled.applied {
        applied_order.push((entry.change.origin.clone(), entry.change.local_seq));
        let op = parse_op(&entry.change.op);
        match op.map(|op| authority.apply_offline(&entry.change.origin, &op, now_ms)) {
            Some(Ok(Decision::Applied { .. })) => changed = true,
            _ => skipped += 1,
        }
    }
    let ack = ChangesAck {
        version_vector: log.applied().clone(),
        epoch: authority.state().epoch,
        applied: reconciled.applied.len() as u64,
        skipped,
        applied_order,
        seeded,
    };
    Ok(PushOutcome {
        ack,
        changed,
        work: reconciled.work + checked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::sync::state::{RoomState, MAX_EPOCH_JUMP, MAX_SAFE_INTEGER};
    use serde_json::json;

    #[test]
    fn default_origin_is_bound_to_the_identity_when_it_fits() {
        let key = "siwe:0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf";
        assert_eq!(
            default_origin(Some(key), "device-00112233aabbccdd"),
            format!("{key}/device-00112233aabbccdd")
        );
        assert_eq!(default_origin(None, "device-1"), "device-1");
        let long = format!("token:{}", "s".repeat(120));
        assert_eq!(default_origin(Some(&long), "device-1"), "device-1");
        let fits = format!("token:{}", "s".repeat(128 - 6 - 1 - 8));
        assert_eq!(
            default_origin(Some(&fits), "device-1").len(),
            MAX_ORIGIN_BYTES
        );
    }

    #[test]
    fn queue_round_trips_through_json() {
        let mut q = OfflineQueue::new("dev-a");
        q.record(json!({"action": "play"}), 3, 1000.0);
        q.record(
            json!({"action": "seek", "data": {"position": 12.5}}),
            3,
            1500.0,
        );
        let text = q.to_json();
        assert!(text.contains("\"localSeq\":2") && text.contains("\"nextSeq\":3"));
        let back = OfflineQueue::from_json(&text).unwrap();
        assert_eq!(back, q);
        let mut back = back;
        assert_eq!(back.record(json!({}), 3, 2000.0).local_seq, 3);
        assert!(OfflineQueue::from_json("{").is_err());
    }

    #[test]
    fn log_applies_once_in_origin_order() {
        let mut q = OfflineQueue::new("a");
        let c1 = q.record(json!(1), 1, 10.0);
        let c2 = q.record(json!(2), 1, 20.0);
        let mut log = ChangeLog::new(1);
        assert_eq!(
            log.submit(c2.clone()),
            Err(RejectReason::Gap { expected: 1 })
        );
        assert_eq!(log.submit(c1.clone()).unwrap().sequence, 1);
        assert_eq!(log.submit(c1), Err(RejectReason::Duplicate));
        assert_eq!(log.submit(c2).unwrap().sequence, 2);
        q.acknowledge(log.applied());
        assert!(q.pending().is_empty());
    }

    #[test]
    fn follower_rejects_stale_epoch() {
        let mut q = OfflineQueue::new("a");
        let mut old = ChangeLog::new(2);
        let s = old.submit(q.record(json!(1), 2, 1.0)).unwrap().clone();
        let mut follower = ChangeLog::new(3);
        assert_eq!(
            follower.accept(s.clone(), 3),
            Err(RejectReason::StaleEpoch { got: 2, current: 3 })
        );
        let mut f2 = ChangeLog::new(2);
        assert_eq!(f2.accept(s.clone(), 2), Ok(()));
        assert_eq!(f2.accept(s, 2), Err(RejectReason::Old));
    }

    /// Two partitions with two controllers, then heal: the winner's log gets every change
    /// exactly once, both sides converge to it, all queues drain.
    #[test]
    fn healed_partitions_converge_without_loss_or_duplicates() {
        let mut queues: Vec<OfflineQueue> = ["a", "b", "c", "d"]
            .iter()
            .map(|o| OfflineQueue::new(*o))
            .collect();
        // Partition 1 {a, b}, controller a at epoch 2; partition 2 {c, d}, controller c at epoch 2.
        let mut log1 = ChangeLog::new(2);
        let mut log2 = ChangeLog::new(2);
        for round in 0..5 {
            let t = round as f64 * 100.0;
            for (i, q) in queues.iter_mut().enumerate() {
                let c = q.record(json!({"i": i, "round": round}), 2, t + i as f64);
                if i < 2 && round != 3 {
                    // Round 3 of a and b never reaches a (and b's round 4 then waits).
                    let _ = log1.submit(c);
                } else if i >= 2 {
                    // d's round-2 change is lost in transit; re-submitted on heal.
                    if !(i == 3 && round == 2) {
                        let _ = log2.submit(c);
                    }
                }
            }
        }
        // Claims (2, a) > (2, c): log1 wins. The loser pushes its log, every origin its queue.
        let mut winner = log1.clone();
        let mut batch = log2.missing_for(winner.applied());
        for q in &queues {
            batch.extend(q.unacknowledged(winner.applied()));
        }
        winner.reconcile(batch.clone());
        // Re-submitting the same batch again applies nothing.
        assert!(winner.reconcile(batch).applied.is_empty());
        assert_eq!(winner.entries().len(), 20);
        let mut ids: Vec<_> = winner.entries().iter().map(|s| s.change.id()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 20);
        for q in &mut queues {
            q.acknowledge(winner.applied());
            assert!(q.pending().is_empty());
        }
        // A follower of the loser adopting the winner's log carries what the winner lacks.
        let mut loser_copy = log2.clone();
        let mut q = OfflineQueue::new("b");
        q.carry(loser_copy.adopt(log1.clone()));
        assert!(!q.carried().is_empty());
        assert_eq!(loser_copy, log1);
        q.acknowledge(winner.applied());
        assert!(q.carried().is_empty());
        // Followers of either side copy the winner's log and end identical.
        let mut f = ChangeLog::new(0);
        for s in winner.entries() {
            f.accept(s.clone(), 2).unwrap();
        }
        assert_eq!(f.entries(), winner.entries());
    }

    fn work_bound(n: usize) -> f64 {
        Reconciled::work_bound(n)
    }

    fn seek(origin: &str, local_seq: u64, epoch: u64, timestamp: f64) -> Change {
        Change {
            origin: origin.into(),
            local_seq,
            epoch,
            timestamp,
            op: json!({"action": "seek", "data": {"position": local_seq as f64},
                "sequence": local_seq, "epoch": epoch}),
        }
    }

    fn push(epoch: Option<u64>, changes: Vec<Change>) -> ChangesPush {
        ChangesPush {
            epoch,
            changes,
            seed: None,
        }
    }

    fn room() -> (RoomAuthority, ChangeLog) {
        let a = RoomAuthority::new(crate::core::sync::state::AuthorityConfig::default(), 1000.0);
        (a, ChangeLog::compacted(0))
    }

    /// `push` is refused with `code` and changes neither the room nor the log.
    fn refused(a: &mut RoomAuthority, log: &mut ChangeLog, p: ChangesPush, code: ErrorCode) {
        let (state, before) = (a.state().clone(), log.clone());
        let e = apply_push(a, log, p, 1000.0, ChangeLimits::DEFAULT).unwrap_err();
        assert_eq!(e.code(), code, "{e}");
        assert_eq!(a.state(), &state);
        assert_eq!(log, &before);
    }

    #[test]
    fn reconcile_orders_by_timestamp_and_waits_for_predecessors() {
        let mut log = ChangeLog::new(1);
        log.submit(seek("b", 1, 1, 0.0)).unwrap();
        let batch = vec![
            seek("a", 2, 1, 10.0), // after a#1 although older
            seek("a", 1, 1, 30.0),
            seek("b", 1, 1, 5.0), // duplicate of the log
            seek("b", 2, 1, 40.0),
            seek("b", 2, 1, 40.0), // duplicate in the batch
            seek("c", 1, 1, 20.0),
            seek("c", 3, 1, 1.0), // gap: waits (c#2 missing)
            seek("c", 4, 1, 2.0),
        ];
        let r = log.reconcile(batch);
        let ids: Vec<_> = r.applied.iter().map(|s| s.change.id()).collect();
        assert_eq!(ids, [("c", 1), ("a", 1), ("a", 2), ("b", 2)]);
        let seqs: Vec<_> = r.applied.iter().map(|s| (s.epoch, s.sequence)).collect();
        assert_eq!(seqs, [(1, 2), (1, 3), (1, 4), (1, 5)]);
        assert_eq!(log.applied().get("c"), Some(&1));
        assert_eq!(log.version(), (1, 5));
        // c's rest comes later.
        let r = log.reconcile(vec![seek("c", 3, 1, 1.0), seek("c", 2, 1, 50.0)]);
        assert_eq!(r.applied.len(), 2);
        assert_eq!(log.applied().get("c"), Some(&3));
    }

    #[test]
    fn logs_compact_and_keep_their_version() {
        let mut log = ChangeLog::with_retention(1, 4);
        let batch: Vec<_> = (1..=20).map(|i| seek("a", i, 1, i as f64)).collect();
        assert_eq!(log.reconcile(batch).applied.len(), 20);
        assert_eq!(log.entries().len(), 4);
        assert_eq!(log.entries()[0].change.local_seq, 17);
        assert_eq!(log.version(), (1, 20));
        let mut server = ChangeLog::compacted(1);
        server.reconcile((1..=3).map(|i| seek("a", i, 1, 0.0)));
        assert!(server.entries().is_empty());
        assert_eq!(
            (server.version(), server.applied().get("a")),
            ((1, 3), Some(&3))
        );
        assert_eq!(
            server.submit(seek("a", 3, 1, 0.0)),
            Err(RejectReason::Duplicate)
        );
        assert_eq!(server.submit(seek("a", 4, 1, 0.0)).unwrap().sequence, 4);
        // Followers compact too.
        let mut f = ChangeLog::with_retention(0, 1);
        for s in log.entries().to_vec() {
            let _ = f.accept(s, 0);
        }
        assert!(f.entries().len() <= 2);
    }

    #[test]
    fn reconcile_of_a_reversed_14000_change_push_is_n_log_n() {
        // issue 11: 14,000 changes whose timestamps run backwards per origin took one pass per
        // change (O(n²)); now two sorts.
        let n = 14_000u64;
        let batch: Vec<_> = (1..=n)
            .map(|i| {
                seek(
                    &format!("o{}", (i - 1) % 7),
                    (i - 1) / 7 + 1,
                    1,
                    (n - i) as f64,
                )
            })
            .collect();
        let mut log = ChangeLog::compacted(1);
        let r = log.reconcile(batch);
        assert_eq!(r.applied.len() as u64, n);
        let bound = work_bound(n as usize);
        assert!((r.work as f64) <= bound, "work {} > {bound}", r.work);
    }

    #[test]
    fn pushes_over_a_bound_are_refused_whole() {
        let (mut a, mut log) = room();
        let code = ErrorCode::LimitExceeded;
        let many: Vec<_> = (1..=MAX_CHANGES_PER_PUSH as u64 + 1)
            .map(|i| seek("a", i, 0, 0.0))
            .collect();
        refused(&mut a, &mut log, push(None, many), code);
        let long = "x".repeat(MAX_ORIGIN_BYTES + 1);
        refused(
            &mut a,
            &mut log,
            push(None, vec![seek(&long, 1, 0, 0.0)]),
            code,
        );
        let origins: Vec<_> = (0..=MAX_ORIGINS_PER_ROOM)
            .map(|i| seek(&format!("d{i}"), 1, 0, 0.0))
            .collect();
        refused(&mut a, &mut log, push(None, origins.clone()), code);
        // Exactly at the bounds: accepted; then one new origin more is refused.
        let at = &origins[..MAX_ORIGINS_PER_ROOM];
        let ok = apply_push(
            &mut a,
            &mut log,
            push(None, at.to_vec()),
            1000.0,
            ChangeLimits::DEFAULT,
        )
        .unwrap();
        assert_eq!(ok.ack.version_vector.len(), MAX_ORIGINS_PER_ROOM);
        refused(
            &mut a,
            &mut log,
            push(None, vec![seek("new", 1, 0, 0.0)]),
            code,
        );
        let known = apply_push(
            &mut a,
            &mut log,
            push(None, vec![seek("d0", 2, 0, 0.0)]),
            1000.0,
            ChangeLimits::DEFAULT,
        );
        assert_eq!(known.unwrap().ack.applied, 1, "known origins keep pushing");
        let full: Vec<_> = (2..=MAX_CHANGES_PER_PUSH as u64 + 1)
            .map(|i| seek("d1", i, 0, 0.0))
            .collect();
        assert!(apply_push(
            &mut a,
            &mut log,
            push(None, full),
            1000.0,
            ChangeLimits::DEFAULT
        )
        .is_ok());
        // Smaller configured limits.
        let limits = ChangeLimits {
            max_changes_per_push: 1,
            max_origins_per_room: 300,
        };
        let two = push(
            None,
            vec![seek("d1", 1026, 0, 0.0), seek("d1", 1027, 0, 0.0)],
        );
        let e = apply_push(&mut a, &mut log, two, 1000.0, limits).unwrap_err();
        assert_eq!(e.code(), code);
    }

    #[test]
    fn out_of_range_numbers_are_refused_whole() {
        let (mut a, mut log) = room();
        let code = ErrorCode::OutOfRange;
        // issue 11: accepted, then the next handover wrapped the epoch to 0.
        refused(&mut a, &mut log, push(Some(u64::MAX), vec![]), code);
        refused(&mut a, &mut log, push(Some(MAX_SAFE_INTEGER), vec![]), code);
        refused(
            &mut a,
            &mut log,
            push(None, vec![seek("a", 1, u64::MAX, 0.0)]),
            code,
        );
        refused(
            &mut a,
            &mut log,
            push(None, vec![seek("a", u64::MAX, 0, 0.0)]),
            code,
        );
        refused(
            &mut a,
            &mut log,
            push(None, vec![seek("a", MAX_SAFE_INTEGER + 1, 0, 0.0)]),
            code,
        );
        refused(
            &mut a,
            &mut log,
            push(Some(MAX_EPOCH_JUMP + 1), vec![seek("a", 1, 0, 0.0)]),
            code,
        );
        let ok = apply_push(
            &mut a,
            &mut log,
            push(Some(MAX_EPOCH_JUMP), vec![]),
            1000.0,
            ChangeLimits::DEFAULT,
        );
        assert_eq!(ok.unwrap().ack.epoch, MAX_EPOCH_JUMP + 1);
        // A fresh room's reseed is bound only by the cap, and the push's epoch by the seeded one.
        let (mut a, mut log) = room();
        let mut seed = RoomState::new(900.0);
        seed.epoch = u64::MAX;
        let seeded = |seed: &RoomState, epoch| ChangesPush {
            seed: Some(seed.clone()),
            ..push(Some(epoch), vec![])
        };
        refused(&mut a, &mut log, seeded(&seed, 0), code);
        seed.epoch = MAX_SAFE_INTEGER - 1;
        refused(&mut a, &mut log, seeded(&seed, MAX_SAFE_INTEGER), code);
        let r = apply_push(
            &mut a,
            &mut log,
            seeded(&seed, MAX_SAFE_INTEGER - 1),
            1000.0,
            ChangeLimits::DEFAULT,
        )
        .unwrap();
        assert!(r.ack.seeded);
        assert_eq!(r.ack.epoch, MAX_SAFE_INTEGER);
        // At the cap, a change is still logged and applied; the epoch stays.
        let r = apply_push(
            &mut a,
            &mut log,
            push(None, vec![seek("a", 1, 3, 0.0)]),
            1000.0,
            ChangeLimits::DEFAULT,
        )
        .unwrap();
        assert_eq!(
            (r.ack.applied, r.ack.skipped, r.ack.epoch),
            (1, 0, MAX_SAFE_INTEGER)
        );
        refused(&mut a, &mut log, push(Some(MAX_SAFE_INTEGER), vec![]), code);
        // A seed that is not a playable state stays invalid_argument.
        let (mut a, mut log) = room();
        let mut bad = RoomState::new(900.0);
        bad.position_s = -1.0;
        refused(
            &mut a,
            &mut log,
            seeded(&bad, 0),
            ErrorCode::InvalidArgument,
        );
    }

    #[test]
    fn the_ack_of_a_maximal_log_fits_a_frame() {
        use crate::core::dictionary::Dictionary;
        use crate::core::frame::DEFAULT_MAX_FRAME_BYTES;
        use crate::core::lane::Encoding;
        // The worst case the bounds allow: MAX_ORIGINS_PER_ROOM origins of MAX_ORIGIN_BYTES
        // control characters (6 bytes each in JSON: \u0001), every number at the cap, and a
        // push of MAX_CHANGES_PER_PUSH changes applied.
        let origin = |i: usize| {
            let mut o = format!("{i:03}");
            o.push_str(&"\u{1}".repeat(MAX_ORIGIN_BYTES - o.len()));
            o
        };
        let ack = ChangesAck {
            version_vector: (0..MAX_ORIGINS_PER_ROOM)
                .map(|i| (origin(i), MAX_SAFE_INTEGER))
                .collect(),
            epoch: MAX_SAFE_INTEGER,
            applied: MAX_CHANGES_PER_PUSH as u64,
            skipped: MAX_CHANGES_PER_PUSH as u64,
            applied_order: (0..MAX_CHANGES_PER_PUSH)
                .map(|i| (origin(i % MAX_ORIGINS_PER_ROOM), MAX_SAFE_INTEGER))
                .collect(),
            seeded: true,
        };
        assert_eq!(ack.version_vector.len(), MAX_ORIGINS_PER_ROOM);
        let mut value = serde_json::to_value(&ack).unwrap();
        value["type"] = MUSIC_CHANGES_ACK_TYPE.into();
        let d = Dictionary::v1();
        for enc in [Encoding::Json, Encoding::Msgpack] {
            let (bytes, _) = crate::core::payload::encode(&value, enc, Some(&d)).unwrap();
            // Frame header: at most 32 bytes.
            assert!(
                bytes.len() + 32 <= DEFAULT_MAX_FRAME_BYTES,
                "{enc:?}: {} bytes",
                bytes.len()
            );
        }
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod proptests {
    //! Arbitrary `music-changes` pushes against a room (issue 11): never a panic, never an
    //! epoch going backwards, refused whole over a bound, at most `c · n · log2 n` work.
    use super::*;
    use crate::core::sync::state::{AuthorityConfig, RoomState, MAX_EPOCH_JUMP, MAX_SAFE_INTEGER};
    use proptest::prelude::*;
    use serde_json::json;

    const LIMITS: ChangeLimits = ChangeLimits {
        max_changes_per_push: 24,
        max_origins_per_room: 5,
    };

    fn epoch() -> impl Strategy<Value = u64> {
        prop_oneof![
            4 => 0u64..8,
            1 => (0u64..3).prop_map(|d| MAX_EPOCH_JUMP - 1 + d),
            1 => (0u64..3).prop_map(|d| MAX_SAFE_INTEGER - 1 + d),
            1 => Just(u64::MAX),
            1 => any::<u64>(),
        ]
    }

    fn local_seq() -> impl Strategy<Value = u64> {
        prop_oneof![8 => 0u64..8, 1 => Just(MAX_SAFE_INTEGER + 1), 1 => any::<u64>()]
    }

    fn origin() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => "[a-g]",
            1 => Just("o".repeat(MAX_ORIGIN_BYTES)),
            1 => Just("o".repeat(MAX_ORIGIN_BYTES + 1)),
        ]
    }

    fn op() -> impl Strategy<Value = Value> {
        prop_oneof![
            (0.0f64..300.0).prop_map(
                |p| json!({"action": "seek", "data": {"position": p}, "sequence": 1, "epoch": 0})
            ),
            Just(json!({"type": "music-control", "action": "play", "sequence": 1, "epoch": 0})),
            Just(json!({"action": "pause", "sequence": 1, "epoch": 0})),
            Just(json!({"action": "handover", "data": {"to": "x"}, "sequence": 1, "epoch": 0})),
            Just(json!({"action": "change-track", "sequence": 1, "epoch": 0})),
            Just(json!(42)),
        ]
    }

    fn change() -> impl Strategy<Value = Change> {
        let timestamp = prop_oneof![4 => -100.0f64..100.0, 1 => any::<f64>()];
        (origin(), local_seq(), epoch(), timestamp, op()).prop_map(
            |(origin, local_seq, epoch, timestamp, op)| Change {
                origin,
                local_seq,
                epoch,
                timestamp,
                op,
            },
        )
    }

    fn push() -> impl Strategy<Value = ChangesPush> {
        let seed = prop_oneof![
            3 => Just(None),
            1 => (epoch(), local_seq(), prop_oneof![Just(5.0), Just(-1.0)]).prop_map(|(e, s, p)| {
                let mut seed = RoomState::new(1000.0);
                (seed.epoch, seed.sequence, seed.position_s) = (e, s, p);
                Some(seed)
            }),
        ];
        (
            proptest::option::of(epoch()),
            prop::collection::vec(change(), 0..30),
            seed,
        )
            .prop_map(|(epoch, changes, seed)| ChangesPush {
                epoch,
                changes,
                seed,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_pushes_never_panic_nor_move_the_epoch_back(
            pushes in prop::collection::vec(push(), 1..6),
            retention in 0usize..4,
        ) {
            let mut a = RoomAuthority::new(AuthorityConfig::default(), 1000.0);
            a.join("dj");
            let mut log = ChangeLog::with_retention(0, retention);
            for p in pushes {
                let (state, before) = (a.state().clone(), log.clone());
                let n = p.changes.len();
                let too_many = n > LIMITS.max_changes_per_push;
                let too_big = p.changes.iter().any(|c| {
                    c.origin.len() > MAX_ORIGIN_BYTES
                        || c.local_seq > MAX_SAFE_INTEGER
                        || c.epoch > MAX_SAFE_INTEGER
                }) || p.epoch.is_some_and(|e| e > MAX_SAFE_INTEGER);
                let told = p.changes.iter().map(|c| c.epoch).chain(p.epoch).max();
                match apply_push(&mut a, &mut log, p, 1000.0, LIMITS) {
                    Err(e) => {
                        // Refused whole: nothing moved.
                        prop_assert_eq!(a.state(), &state);
                        prop_assert_eq!(&log, &before);
                        if too_many {
                            prop_assert_eq!(e.code(), ErrorCode::LimitExceeded);
                        }
                    }
                    Ok(out) => {
                        prop_assert!(!too_many && !too_big, "accepted over a bound");
                        prop_assert!(a.state().epoch >= state.epoch, "epoch went back");
                        prop_assert!(a.state().epoch <= MAX_SAFE_INTEGER);
                        prop_assert_eq!(out.ack.epoch, a.state().epoch);
                        if let Some(t) = told {
                            prop_assert!(out.ack.epoch > t, "not above the told epoch");
                        }
                        prop_assert!(out.ack.version_vector.len() <= LIMITS.max_origins_per_room);
                        prop_assert_eq!(out.ack.applied as usize, out.ack.applied_order.len());
                        prop_assert!(log.entries().len() <= 2 * retention);
                        // Per origin, applied in localSeq order right after what it had.
                        let mut next = before.applied().clone();
                        for (o, seq) in &out.ack.applied_order {
                            let slot = next.entry(o.clone()).or_insert(0);
                            prop_assert_eq!(*seq, *slot + 1);
                            *slot = *seq;
                        }
                        prop_assert_eq!(&next, log.applied());
                        let bound = Reconciled::work_bound(n) + n as f64;
                        prop_assert!(out.work as f64 <= bound, "work {} > {}", out.work, bound);
                    }
                }
            }
        }

        #[test]
        fn reconcile_is_n_log_n_in_any_order(
            counts in prop::collection::vec(1usize..300, 1..8),
            timestamps in prop::collection::vec(any::<f64>(), 2000),
            shuffle_seed in any::<u64>(),
        ) {
            let mut batch: Vec<Change> = Vec::new();
            for (o, &k) in counts.iter().enumerate() {
                for seq in 1..=k as u64 {
                    let t = timestamps[batch.len() % timestamps.len()];
                    batch.push(Change {
                        origin: format!("o{o}"),
                        local_seq: seq,
                        epoch: 0,
                        timestamp: t,
                        op: Value::Null,
                    });
                }
            }
            // A deterministic shuffle (xorshift) of the batch.
            let mut x = shuffle_seed | 1;
            for i in (1..batch.len()).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                batch.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let n = batch.len();
            let mut log = ChangeLog::compacted(1);
            let r = log.reconcile(batch);
            prop_assert_eq!(r.applied.len(), n, "no gaps: everything applies");
            prop_assert!(r.work as f64 <= Reconciled::work_bound(n), "work {} for {}", r.work, n);
            // t* order: never before a same-origin predecessor, and sequences 1..=n.
            for (i, s) in r.applied.iter().enumerate() {
                prop_assert_eq!(s.sequence, i as u64 + 1);
            }
        }
    }
}
