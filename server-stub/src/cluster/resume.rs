//! Resume cursors: a multiplexed session that moves to another node (its node died, or its
//! client reconnected through another one) gets again, from its room's stream, every relay
//! it had not acknowledged (issue 14; PROTOCOL.md §17 "Holding a session", "A node that
//! dies"; DESIGN.md "Resume across nodes").
//!
//! The node holding a session notes, for each relay it hands to the session's multiplexer on
//! a reliable lane, the multiplexer's `(lane, seq)` and the relay's place in the room stream
//! ([`RelayKey`]: the entry number, or for a relay this node wrote, its publish token until
//! the node reads the entry back). Every [`RESUME_FLUSH`] it folds the client's cumulative
//! acks into a [`ResumeCursor`] (the entry number up to which every relay for the session
//! was acknowledged, plus the acknowledged entries above it) and writes the cursors that
//! changed, in one pipeline, to the sessions' records in Redis. The node that takes the
//! session over replays the room's relays for it after the cursor, in stream order, skipping
//! the acknowledged ones; a stream that no longer reaches back to the cursor (trimmed, or a
//! new epoch) is an explicit `discontinuity` first.
//!
//! Pure bookkeeping: no I/O, no clock; the caller holds the session's transport lock.

use p3_lanes::core::frame::SessionId;
use p3_lanes::core::lane::Lane;
use std::collections::VecDeque;
use std::time::Duration;

use super::{Entry, Kind};

/// How often a node writes the resume cursors that changed (one pipeline). A node that dies
/// may have had acknowledgements from the last period not yet written: those relays are
/// replayed once more, after the `peer-restarted` discontinuity (PROTOCOL.md §17).
pub const RESUME_FLUSH: Duration = Duration::from_millis(200);
/// Relays noted per session and not yet folded into its cursor, at most. Past it the cursor
/// stops advancing (never skips a relay) until the session's multiplexer is idle again.
pub const MAX_RECORDS: usize = 4096;
/// Acknowledged entries above the cursor kept per session, at most (the lowest kept). One
/// dropped is replayed once more after a move, never lost.
pub const MAX_SKIP: usize = 256;

/// Where a relay handed to a session sits in its room's stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RelayKey {
    /// Read from the stream: entry `n` of epoch `epoch`.
    Entry { epoch: String, n: u64 },
    /// Written by this node under publish token `token` (its entry is known once read back).
    Local(u64),
}

/// A session's resume cursor, kept in its Redis record (field `resume`, JSON): in `room`,
/// stream epoch `e`, every relay for the session up to entry `n` was acknowledged by its
/// client, and so were the entries `skip` above `n`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ResumeCursor {
    pub(crate) room: String,
    pub(crate) e: String,
    pub(crate) n: u64,
    #[serde(default)]
    pub(crate) skip: Vec<u64>,
}

impl ResumeCursor {
    /// The cursor of a session that has acknowledged nothing in `room` after stream entry
    /// `at` (its `joined` or `moved` entry).
    pub(crate) fn at(room: &str, at: &crate::cluster::Cursor) -> ResumeCursor {
        ResumeCursor {
            room: room.to_owned(),
            e: at.epoch.clone(),
            n: at.n,
            skip: Vec::new(),
        }
    }
}

#[derive(Debug)]
struct Record {
    lane: Lane,
    seq: u64,
    key: RelayKey,
}

/// The relays a session's multiplexer carries and its cursor (one per session, in its
/// transport).
#[derive(Debug, Default)]
pub(crate) struct ResumeLog {
    cursor: Option<ResumeCursor>,
    records: VecDeque<Record>,
    /// A relay was not noted ([`MAX_RECORDS`]): the cursor waits for an idle multiplexer.
    overflowed: bool,
    /// The cursor last returned by [`ResumeLog::advance`] (to write only changes).
    written: Option<ResumeCursor>,
}

impl ResumeLog {
    /// Starts following `cursor` (the session joined a room, or was taken over with it).
    pub(crate) fn start(&mut self, cursor: ResumeCursor) {
        self.cursor = Some(cursor);
        self.records.clear();
        self.overflowed = false;
        self.written = None;
    }

    /// Stops (left its room, or its multiplexer restarted: its seqs mean nothing any more).
    pub(crate) fn clear(&mut self) {
        *self = ResumeLog::default();
    }

    /// The room followed, if any.
    pub(crate) fn room(&self) -> Option<&str> {
        self.cursor.as_ref().map(|c| c.room.as_str())
    }

    /// A relay handed to the multiplexer as message `seq` of reliable `lane`.
    pub(crate) fn record(&mut self, lane: Lane, seq: u64, key: RelayKey) {
        if self.cursor.is_none() {
            return;
        }
        if self.records.len() >= MAX_RECORDS {
            self.overflowed = true;
            return;
        }
        self.records.push_back(Record { lane, seq, key });
    }

    /// Folds acknowledgements in: `acked(lane)` is the client's cumulative ack, `read` the
    /// node's position `(epoch, n)` in the room's stream (every entry up to it that was for
    /// the session has been handed to its multiplexer), `resolve(token)` a local relay's
    /// entry once read back, `idle` whether the multiplexer holds nothing unacknowledged.
    /// Returns the cursor when it changed since the last return.
    pub(crate) fn advance(
        &mut self,
        read: (&str, u64),
        acked: impl Fn(Lane) -> u64,
        resolve: impl Fn(u64) -> Option<(String, u64)>,
        idle: bool,
    ) -> Option<ResumeCursor> {
        let cur = self.cursor.as_mut()?;
        let (epoch, at) = read;
        if cur.e != epoch {
            // The room's sequence restarted: positions of the old epoch mean nothing.
            *cur = ResumeCursor {
                room: cur.room.clone(),
                e: epoch.to_owned(),
                n: at,
                skip: Vec::new(),
            };
            self.records.clear();
            self.overflowed = false;
        }
        let mut min_unacked: Option<u64> = None;
        let mut acked_entries = Vec::new();
        self.records.retain(|r| {
            let place = match &r.key {
                RelayKey::Entry { epoch: e, n } => Some((e.clone(), *n)),
                RelayKey::Local(t) => resolve(*t),
            };
            let done = r.seq <= acked(r.lane);
            match place {
                // Of an older epoch: gone with it.
                Some((e, _)) if e != epoch => false,
                Some((_, n)) if done => {
                    acked_entries.push(n);
                    false
                }
                Some((_, n)) => {
                    min_unacked = Some(min_unacked.map_or(n, |m| m.min(n)));
                    true
                }
                // Not read back yet: an unacknowledged one lies after `at`; an acknowledged
                // one waits to be placed in `skip`.
                None => true,
            }
        });
        if self.overflowed && self.records.is_empty() && idle {
            self.overflowed = false;
        }
        let n = if self.overflowed {
            cur.n
        } else {
            let bound = min_unacked.map_or(at, |m| m.saturating_sub(1).min(at));
            bound.max(cur.n)
        };
        let mut skip: Vec<u64> = cur
            .skip
            .iter()
            .copied()
            .chain(acked_entries)
            .filter(|&s| s > n)
            .collect();
        skip.sort_unstable();
        skip.dedup();
        skip.truncate(MAX_SKIP);
        cur.n = n;
        cur.skip = skip;
        if self.written.as_ref() == Some(cur) {
            return None;
        }
        self.written = Some(cur.clone());
        Some(cur.clone())
    }
}

/// The gap a replay starts with: the stream no longer holds entry `expected` of epoch
/// `expected_epoch`; it goes on at entry `n` of epoch `epoch`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ReplayGap {
    pub(crate) expected_epoch: String,
    pub(crate) expected: u64,
    pub(crate) epoch: String,
    pub(crate) n: u64,
}

/// What session `sid`, resuming at `cursor`, gets again from `entries` (the room's stream
/// from its oldest entry after the cursor, in order): the gap, if the stream does not reach
/// back to the cursor, and the relays for it that it had not acknowledged, in stream order.
pub(crate) fn replay<'a>(
    cursor: &ResumeCursor,
    sid: SessionId,
    entries: &'a [Entry],
) -> (Option<ReplayGap>, Vec<&'a Entry>) {
    let after: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.epoch != cursor.e || e.n > cursor.n)
        .collect();
    let gap = after
        .first()
        .filter(|f| f.epoch != cursor.e || f.n != cursor.n.saturating_add(1))
        .map(|f| ReplayGap {
            expected_epoch: cursor.e.clone(),
            expected: cursor.n.saturating_add(1),
            epoch: f.epoch.clone(),
            n: f.n,
        });
    let relays = after
        .into_iter()
        .filter(|e| {
            e.kind == Kind::Relay
                && e.sid != sid
                && e.to.map_or(true, |t| t == sid)
                && !(e.epoch == cursor.e && cursor.skip.binary_search(&e.n).is_ok())
                && Lane::from_id(e.lane).is_some_and(|l| l != Lane::Control && l.spec().reliable)
        })
        .collect();
    (gap, relays)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(n: u64, skip: Vec<u64>) -> ResumeCursor {
        ResumeCursor {
            room: "r".into(),
            e: "aa".into(),
            n,
            skip,
        }
    }

    fn entry(n: u64, sid: SessionId, to: Option<SessionId>) -> Entry {
        Entry {
            room: "r".into(),
            id: format!("{n}-0"),
            n,
            epoch: "aa".into(),
            node: "x".into(),
            kind: Kind::Relay,
            sid,
            lane: Lane::Messaging.id(),
            to,
            body: "{}".into(),
            order: 0,
            since: 0,
            at: 0,
            token: 0,
        }
    }

    fn at(n: u64) -> RelayKey {
        RelayKey::Entry {
            epoch: "aa".into(),
            n,
        }
    }

    /// The cursor stops below the first unacknowledged relay, whatever order relays were
    /// handed over in; acknowledged ones above it are skipped; a local relay counts once
    /// read back.
    #[test]
    fn the_cursor_stops_below_the_oldest_unacknowledged_relay() {
        let mut log = ResumeLog::default();
        log.record(Lane::Messaging, 1, at(5));
        assert_eq!(log.room(), None, "nothing followed before start");
        log.start(cursor(4, vec![]));
        // seq 1: entry 6 (remote), seq 2: a local relay (token 9, entry 8 once read back),
        // seq 3: entry 7.
        log.record(Lane::Messaging, 1, at(6));
        log.record(Lane::Messaging, 2, RelayKey::Local(9));
        log.record(Lane::Messaging, 3, at(7));
        let none = |_: u64| None;
        let got = log.advance(("aa", 7), |_| 0, none, false).unwrap();
        assert_eq!((got.n, got.skip.clone()), (5, vec![]), "nothing acked");
        assert_eq!(
            log.advance(("aa", 7), |_| 0, none, false),
            None,
            "unchanged"
        );
        // Acked 1 and 2; 2 not read back yet: 7 unacked bounds the cursor at 6.
        let got = log.advance(("aa", 7), |_| 2, none, false).unwrap();
        assert_eq!((got.n, got.skip.clone()), (6, vec![]));
        // 2 read back as entry 8: skipped above the cursor.
        let got = log
            .advance(
                ("aa", 8),
                |_| 2,
                |t| (t == 9).then(|| ("aa".into(), 8)),
                false,
            )
            .unwrap();
        assert_eq!((got.n, got.skip.clone()), (6, vec![8]));
        // Everything acked: the cursor is the node's read position.
        let got = log.advance(("aa", 8), |_| 3, none, true).unwrap();
        assert_eq!((got.n, got.skip), (8, vec![]));
        // A new epoch starts over at the read position.
        let got = log.advance(("bb", 2), |_| 3, none, true).unwrap();
        assert_eq!((got.e.as_str(), got.n), ("bb", 2));
    }

    /// A relay not noted (over the bound) holds the cursor until the multiplexer is idle.
    #[test]
    fn an_overflow_holds_the_cursor() {
        let mut log = ResumeLog::default();
        log.start(cursor(1, vec![]));
        for s in 1..=MAX_RECORDS as u64 + 1 {
            log.record(Lane::Data, s, at(s + 1));
        }
        let all = |_: Lane| MAX_RECORDS as u64;
        assert_eq!(
            log.advance(("aa", 9000), all, |_| None, false).unwrap().n,
            1
        );
        assert_eq!(
            log.advance(("aa", 9000), all, |_| None, true).unwrap().n,
            9000
        );
    }

    /// A replay: the relays after the cursor for the session (to the room or to it, not its
    /// own, not skipped), in order; a stream starting after the cursor is a gap.
    #[test]
    fn replay_picks_the_relays_after_the_cursor() {
        let me = SessionId::from_random_bytes([1; 16]);
        let other = SessionId::from_random_bytes([2; 16]);
        let third = SessionId::from_random_bytes([3; 16]);
        let entries = vec![
            entry(4, other, None),
            entry(5, other, None),
            entry(6, me, None),
            entry(7, other, Some(third)),
            entry(8, other, Some(me)),
            entry(9, other, None),
            entry(10, other, None),
        ];
        let (gap, got) = replay(&cursor(4, vec![9]), me, &entries);
        assert_eq!(gap, None);
        let ns: Vec<u64> = got.iter().map(|e| e.n).collect();
        assert_eq!(ns, vec![5, 8, 10]);
        let (gap, got) = replay(&cursor(2, vec![]), me, &entries);
        assert_eq!(
            gap,
            Some(ReplayGap {
                expected_epoch: "aa".into(),
                expected: 3,
                epoch: "aa".into(),
                n: 4
            })
        );
        let ns: Vec<u64> = got.iter().map(|e| e.n).collect();
        assert_eq!(ns, vec![4, 5, 8, 9, 10], "nothing skipped below a gap");
    }
}
