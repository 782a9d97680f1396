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
//! - **Reconciliation order** ([`ChangeLog::reconcile`]): the submitted batch is sorted by
//!   `(timestamp, origin, localSeq)` and applied in that order; a change whose predecessor from
//!   the same origin is still missing waits for it within the batch (per-origin order always
//!   holds). The authority's existing log is never rewritten: server wins, late changes go
//!   after what it has.
//! - Followers accept stamped entries with [`ChangeLog::accept`], which rejects an epoch below
//!   the adopted claim's ([`RejectReason::StaleEpoch`]) and anything not after the last entry.
//!
//! # Persistence
//! [`OfflineQueue::to_json`] / [`OfflineQueue::from_json`] give the form the browser layer puts
//! in IndexedDB or localStorage so that queued changes survive a reload:
//! `{origin, nextSeq, pending: [{origin, localSeq, epoch, timestamp, op}], carried: [..]}`
//! (`carried`: other origins' changes held for a replaced authority, see
//! [`OfflineQueue::carry`]).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Per-origin highest applied `localSeq`.
pub type VersionVector = BTreeMap<String, u64>;

/// `type` of [`ChangesPush`] on the Sync lane.
pub const MUSIC_CHANGES_TYPE: &str = "music-changes";
/// `type` of [`ChangesAck`] on the Sync lane.
pub const MUSIC_CHANGES_ACK_TYPE: &str = "music-changes-ack";

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
        self.next_seq += 1;
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
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChangeLog {
    epoch: u64,
    entries: Vec<Stamped>,
    applied: VersionVector,
}

impl ChangeLog {
    /// An empty log at `epoch`.
    pub fn new(epoch: u64) -> Self {
        ChangeLog {
            epoch,
            ..ChangeLog::default()
        }
    }

    /// The epoch new changes are stamped with.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Applied entries in order.
    pub fn entries(&self) -> &[Stamped] {
        &self.entries
    }

    /// The version vector of applied changes.
    pub fn applied(&self) -> &VersionVector {
        &self.applied
    }

    /// `(epoch, sequence)` of the last entry, `(0, 0)` if empty.
    pub fn version(&self) -> (u64, u64) {
        self.entries
            .last()
            .map_or((0, 0), |s| (s.epoch, s.sequence))
    }

    /// This log's owner became the controller at `epoch` (ignored unless higher): later
    /// changes are stamped in it, sequence from 1.
    pub fn begin_epoch(&mut self, epoch: u64) {
        self.epoch = self.epoch.max(epoch);
    }

    /// Authority side: applies `change` if it is the next from its origin, and stamps it.
    pub fn submit(&mut self, change: Change) -> Result<&Stamped, RejectReason> {
        let done = self.applied.get(&change.origin).copied().unwrap_or(0);
        if change.local_seq <= done {
            return Err(RejectReason::Duplicate);
        }
        if change.local_seq != done + 1 {
            return Err(RejectReason::Gap { expected: done + 1 });
        }
        let (e, s) = self.version();
        let sequence = if e == self.epoch { s + 1 } else { 1 };
        self.applied.insert(change.origin.clone(), change.local_seq);
        self.entries.push(Stamped {
            epoch: self.epoch,
            sequence,
            change,
        });
        Ok(self.entries.last().expect("just pushed"))
    }

    /// Authority side: applies a batch in the documented order (sorted by `(timestamp, origin,
    /// localSeq)`, a change waiting for its same-origin predecessor). Returns how many were
    /// applied; duplicates are dropped, changes whose predecessor never came stay unapplied
    /// (their origin re-submits them).
    pub fn reconcile(&mut self, batch: impl IntoIterator<Item = Change>) -> usize {
        let mut batch: Vec<Change> = batch.into_iter().collect();
        batch.sort_by(|a, b| {
            a.timestamp
                .total_cmp(&b.timestamp)
                .then_with(|| a.origin.cmp(&b.origin))
                .then_with(|| a.local_seq.cmp(&b.local_seq))
        });
        let mut applied = 0;
        loop {
            let mut progress = false;
            let mut rest = Vec::new();
            for c in batch {
                match self.submit(c.clone()) {
                    Ok(_) => {
                        applied += 1;
                        progress = true;
                    }
                    Err(RejectReason::Gap { .. }) => rest.push(c),
                    Err(_) => {}
                }
            }
            batch = rest;
            if !progress || batch.is_empty() {
                return applied;
            }
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
        if entry.change.local_seq != done + 1 {
            // This copy is of another lineage (adopt the authority's snapshot first): keep
            // "applied up to n" meaning "holds 1..=n" so acknowledgements stay truthful.
            return Err(RejectReason::Gap { expected: done + 1 });
        }
        self.epoch = self.epoch.max(entry.epoch);
        self.applied
            .insert(entry.change.origin.clone(), entry.change.local_seq);
        self.entries.push(entry);
        Ok(())
    }

    /// The changes of this log that `vv` does not cover, in log order: what a losing
    /// controller (or a peer log) pushes to the winner or to the returning server.
    pub fn missing_for(&self, vv: &VersionVector) -> Vec<Change> {
        self.entries
            .iter()
            .filter(|s| s.change.local_seq > vv.get(&s.change.origin).copied().unwrap_or(0))
            .map(|s| s.change.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        assert_eq!(winner.reconcile(batch), 0);
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
}
