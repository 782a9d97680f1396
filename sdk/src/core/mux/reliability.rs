//! Reliable lanes: sequence numbers, acknowledgements, retransmission, resume and
//! discontinuities (issue 3 "Reliability and resume"; seed 001 "Connection Resilience").
//!
//! **Sender** ([`SendWindow`], one per reliable lane): every message gets the lane's next
//! sequence number (from 1) in the lane's current **epoch** (a random non-zero `u32` chosen
//! when the sender's state is created; a restarted sender has a new one). Messages fully
//! handed to the transport stay in the window until the peer acknowledges them
//! cumulatively; the window is bounded (`max_unacked_msgs`, `max_unacked_bytes`), and a
//! full window stops the lane from sending more (so its queue fills and the application gets
//! backpressure). After a reconnect the peer's resume says what it delivered; everything
//! after that is sent again. With a retransmission timeout configured (lossy transports),
//! unacknowledged messages not covered by the peer's ack ranges are also sent again when no
//! ack made progress for the timeout (doubling up to 8×).
//!
//! **Receiver** ([`RecvLane`]): delivers each message exactly once and in order: duplicates
//! (seq already delivered or held) are dropped, early messages wait in a reorder buffer
//! bounded by the window (`max_unacked_msgs` ahead) and the per-peer reassembly budget.
//! Acks are batched: one ack frame for all lanes, sent `ack_delay_ms` after the first
//! unacknowledged message, or at once after `ack_every_msgs` messages or `ack_every_bytes`,
//! or for a duplicate or an out-of-order message.
//!
//! **Discontinuities**: when the sender cannot send what the receiver misses (its history was
//! forgotten, or it restarted), the receiver emits [`super::MuxEvent::Discontinuity`] with
//! what it expected and what comes next, never a silent gap. The sender announces a forgotten
//! history by its *floor* (oldest sequence number still held): in its resume, and on every
//! chunk while the floor is above what the peer acknowledged. A changed epoch (in the resume)
//! means the whole history is gone.

use super::error::PeerMisbehaved;
use super::reassembly::{Added, Budget, Partial};
use super::wire::{ChunkHeader, LaneAck, RecvState, SendState, MAX_ACK_RANGES};
use super::{Discontinuity, DiscontinuityReason, MuxEvent};
use crate::core::lane::Lane;
use std::collections::{BTreeMap, VecDeque};

/// A message handed to the transport and not acknowledged yet.
#[derive(Debug)]
pub struct Sent {
    /// Its sequence number.
    pub seq: u64,
    /// Its bytes (kept for retransmission).
    pub bytes: Vec<u8>,
}

/// The sending side of one reliable lane.
#[derive(Debug)]
pub struct SendWindow {
    epoch: u32,
    next_seq: u64,
    /// Fully sent, unacknowledged, contiguous ascending sequence numbers.
    sent: VecDeque<Sent>,
    sent_bytes: usize,
    /// Highest seq fully sent in this epoch.
    highest_sent: u64,
    /// Highest seq forgotten (never to be sent); the peer may acknowledge up to here after
    /// skipping the gap.
    forgotten_through: u64,
    /// The peer holds everything up to here (cumulative ack, or its resume).
    peer_acked: u64,
    /// The peer's latest ack ranges (messages held beyond a gap).
    sacked: Vec<(u64, u64)>,
    /// Seqs to send again, ascending; the first may be partly sent.
    resend: VecDeque<u64>,
    resend_chunks_sent: u32,
    rto_at: Option<u64>,
    backoff: u32,
    retransmitted: u64,
}

impl SendWindow {
    /// A fresh window in `epoch` (non-zero); the first message gets seq 1.
    pub fn new(epoch: u32) -> SendWindow {
        SendWindow {
            epoch,
            next_seq: 1,
            sent: VecDeque::new(),
            sent_bytes: 0,
            highest_sent: 0,
            forgotten_through: 0,
            peer_acked: 0,
            sacked: Vec::new(),
            resend: VecDeque::new(),
            resend_chunks_sent: 0,
            rto_at: None,
            backoff: 1,
            retransmitted: 0,
        }
    }

    /// This lane-direction's epoch.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The next sequence number to assign.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Takes the next sequence number.
    pub fn assign(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    /// Messages sent and not acknowledged.
    pub fn unacked(&self) -> usize {
        self.sent.len()
    }

    /// Bytes of the messages sent and not acknowledged.
    pub fn unacked_bytes(&self) -> usize {
        self.sent_bytes
    }

    /// Highest seq the peer is known to hold (cumulatively).
    pub fn peer_acked(&self) -> u64 {
        self.peer_acked
    }

    /// Messages waiting to be sent again.
    pub fn resend_len(&self) -> usize {
        self.resend.len()
    }

    /// Messages sent again (retransmission or resume), in total.
    pub fn retransmitted(&self) -> u64 {
        self.retransmitted
    }

    /// The retransmission deadline, ms.
    pub fn rto_at(&self) -> Option<u64> {
        self.rto_at
    }

    /// Whether a new message of `len` bytes may start: the window has room, or is empty (a
    /// message larger than the window still goes, alone).
    pub fn can_admit(&self, len: usize, max_msgs: usize, max_bytes: usize) -> bool {
        self.sent.is_empty()
            || (self.sent.len() < max_msgs && self.sent_bytes.saturating_add(len) <= max_bytes)
    }

    /// The oldest seq this side can still send, given the oldest queued one.
    pub fn floor(&self, first_queued: Option<u64>) -> u64 {
        self.sent
            .front()
            .map(|s| s.seq)
            .or(first_queued)
            .unwrap_or(self.next_seq)
    }

    /// The floor to put on chunks: `Some` while the peer has not acknowledged up to it.
    pub fn floor_signal(&self, first_queued: Option<u64>) -> Option<u64> {
        let f = self.floor(first_queued);
        (f > self.peer_acked + 1).then_some(f)
    }

    /// A message's last chunk went to the transport.
    pub fn on_sent(&mut self, seq: u64, bytes: Vec<u8>, now: u64, rto_ms: Option<u64>) {
        self.highest_sent = self.highest_sent.max(seq);
        self.sent_bytes += bytes.len();
        self.sent.push_back(Sent { seq, bytes });
        self.arm(now, rto_ms);
    }

    fn arm(&mut self, now: u64, rto_ms: Option<u64>) {
        if self.rto_at.is_none() && !self.sent.is_empty() {
            self.rto_at = rto_ms.map(|r| now + r * u64::from(self.backoff));
        }
    }

    fn pop_through(&mut self, seq: u64) {
        while self.sent.front().is_some_and(|s| s.seq <= seq) {
            let s = self.sent.pop_front().expect("front exists");
            self.sent_bytes -= s.bytes.len();
            if self.resend.front() == Some(&s.seq) {
                self.resend_chunks_sent = 0;
            }
        }
        while self.resend.front().is_some_and(|&s| s <= seq) {
            self.resend.pop_front();
        }
    }

    /// The peer's ack for this lane.
    ///
    /// Errors: [`PeerMisbehaved::AckOfUnsent`] for an ack beyond what was sent.
    pub fn on_ack(
        &mut self,
        lane: Lane,
        ack: &LaneAck,
        now: u64,
        rto_ms: Option<u64>,
    ) -> Result<(), PeerMisbehaved> {
        let top = ack.ranges.last().map_or(ack.cumulative, |r| r.1);
        if top > self.ackable() {
            return Err(PeerMisbehaved::AckOfUnsent {
                lane,
                acked: top,
                sent: self.ackable(),
            });
        }
        if ack.cumulative < self.peer_acked {
            return Ok(()); // an older ack overtaken by a newer one
        }
        if ack.cumulative > self.peer_acked {
            self.peer_acked = ack.cumulative;
            self.pop_through(ack.cumulative);
            self.backoff = 1;
            self.rto_at = None;
            self.arm(now, rto_ms);
        }
        self.sacked.clone_from(&ack.ranges);
        Ok(())
    }

    /// No ack progress for the retransmission timeout: send again every unacknowledged
    /// message the peer does not hold, and back off (×2, at most ×8).
    pub fn on_timeout(&mut self, now: u64, rto_ms: Option<u64>) {
        if self.rto_at.map_or(true, |at| at > now) {
            return;
        }
        let held = |seq: u64| self.sacked.iter().any(|&(a, b)| a <= seq && seq <= b);
        let current = self.resend.front().copied();
        let mut resend: Vec<u64> = self
            .sent
            .iter()
            .map(|s| s.seq)
            .filter(|&s| !held(s) || Some(s) == current)
            .collect();
        resend.extend(self.resend.iter().copied());
        resend.sort_unstable();
        resend.dedup();
        self.resend = resend.into();
        if self.resend.front().copied() != current {
            self.resend_chunks_sent = 0;
        }
        self.backoff = (self.backoff * 2).min(8);
        self.rto_at = None;
        self.arm(now, rto_ms);
    }

    /// The peer's resume names this lane's receiver state (`None`: it did not list the lane,
    /// same as a fresh receiver). Everything the peer did not deliver will be sent again.
    ///
    /// Errors: [`PeerMisbehaved::AckOfUnsent`] if the peer claims more than was sent.
    pub fn on_resume(&mut self, lane: Lane, peer: Option<RecvState>) -> Result<(), PeerMisbehaved> {
        match peer {
            Some(p) if p.epoch == self.epoch => {
                if p.delivered > self.ackable() {
                    return Err(PeerMisbehaved::AckOfUnsent {
                        lane,
                        acked: p.delivered,
                        sent: self.ackable(),
                    });
                }
                self.peer_acked = p.delivered;
                self.pop_through(p.delivered);
            }
            // A fresh receiver, or one that followed an earlier epoch: it adopts this epoch
            // at the floor of the resume it saw (and reports a discontinuity). That floor may
            // be older than the current one, so claim nothing: chunks carry the floor until
            // the peer acknowledges up to it.
            _ => self.peer_acked = 0,
        }
        self.sacked.clear();
        self.resend = self.sent.iter().map(|s| s.seq).collect();
        self.resend_chunks_sent = 0;
        self.rto_at = None;
        self.backoff = 1;
        Ok(())
    }

    /// The transport is gone: nothing is in flight any more.
    pub fn transport_lost(&mut self) {
        self.resend.clear();
        self.resend_chunks_sent = 0;
        self.sacked.clear();
        self.rto_at = None;
        self.backoff = 1;
    }

    /// The highest seq the peer may acknowledge: sent, or forgotten (skipped).
    fn ackable(&self) -> u64 {
        self.highest_sent.max(self.forgotten_through)
    }

    /// Forgets every sent message and everything up to `through` (history overflow with
    /// forgetting: `through` is the dropped queued message); returns how many sent ones.
    pub fn forget_through(&mut self, through: u64) -> usize {
        self.forgotten_through = self.forgotten_through.max(through);
        let n = self.sent.len();
        self.sent.clear();
        self.sent_bytes = 0;
        self.resend.clear();
        self.resend_chunks_sent = 0;
        self.rto_at = None;
        n
    }

    /// The message to send again next and how many of its chunks went out already.
    pub fn resend_head(&self) -> Option<(&Sent, u32)> {
        let seq = *self.resend.front()?;
        let first = self.sent.front()?.seq;
        let s = self
            .sent
            .get(usize::try_from(seq.checked_sub(first)?).ok()?)?;
        Some((s, self.resend_chunks_sent))
    }

    /// One more chunk of the resend head went out; `last`: its final one.
    pub fn resend_advance(&mut self, last: bool, now: u64, rto_ms: Option<u64>) {
        if last {
            self.resend.pop_front();
            self.resend_chunks_sent = 0;
            self.retransmitted += 1;
            self.arm(now, rto_ms);
        } else {
            self.resend_chunks_sent += 1;
        }
    }
}

/// Ack batching parameters of a receiver.
#[derive(Clone, Copy, Debug)]
pub struct AckPolicy {
    /// Delay before acknowledging, ms.
    pub delay_ms: u64,
    /// Acknowledge at once after this many messages.
    pub every_msgs: u32,
    /// Acknowledge at once after this many bytes.
    pub every_bytes: usize,
}

#[derive(Debug, Default)]
struct AckState {
    pending: bool,
    immediate: bool,
    due: Option<u64>,
    msgs: u32,
    bytes: usize,
}

/// The receiving side of one reliable lane.
#[derive(Debug)]
pub struct RecvLane {
    lane: Lane,
    /// The sender epoch followed; 0: none yet (nothing can be accepted before a resume).
    epoch: u32,
    next_expected: u64,
    /// Partial messages and the bytes taken from the budget for each.
    partials: BTreeMap<u64, (Partial, usize)>,
    /// Complete messages waiting for an earlier one.
    ready: BTreeMap<u64, Vec<u8>>,
    ack: AckState,
    duplicates: u64,
}

/// What the receiver needs from the multiplexer for one chunk.
pub struct RecvCtx<'a> {
    /// The per-peer reassembly budget.
    pub budget: &'a mut Budget,
    /// Where deliveries and discontinuities go.
    pub events: &'a mut VecDeque<MuxEvent>,
    /// Accept seqs below `next_expected + window` only.
    pub window: u64,
    /// Ack batching.
    pub ack: AckPolicy,
    /// Now, ms.
    pub now: u64,
}

impl RecvLane {
    /// A receiver that follows no epoch yet.
    pub fn new(lane: Lane) -> RecvLane {
        RecvLane {
            lane,
            epoch: 0,
            next_expected: 1,
            partials: BTreeMap::new(),
            ready: BTreeMap::new(),
            ack: AckState::default(),
            duplicates: 0,
        }
    }

    /// The sender epoch followed (0: none).
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Highest seq delivered in order in the followed epoch (0: none).
    pub fn delivered(&self) -> u64 {
        if self.epoch == 0 {
            0
        } else {
            self.next_expected - 1
        }
    }

    /// Duplicates dropped, in total.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// This receiver's entry in a resume frame.
    pub fn resume_state(&self) -> RecvState {
        RecvState {
            lane: self.lane,
            epoch: self.epoch,
            delivered: self.delivered(),
        }
    }

    /// Whether an ack should go out now.
    pub fn ack_due(&self, now: u64) -> bool {
        self.ack.pending && (self.ack.immediate || self.ack.due.is_some_and(|d| d <= now))
    }

    /// Whether an ack is pending at all (it rides along with a due one).
    pub fn ack_pending(&self) -> bool {
        self.ack.pending
    }

    /// When a delayed ack falls due, if one is pending and not already immediate.
    pub fn ack_deadline(&self) -> Option<u64> {
        if self.ack.pending && !self.ack.immediate {
            self.ack.due
        } else {
            None
        }
    }

    /// A deadline passed: a delayed ack that fell due goes out at the next chance.
    pub fn on_timeout(&mut self, now: u64) {
        if self.ack.pending && self.ack.due.is_some_and(|d| d <= now) {
            self.ack.immediate = true;
        }
    }

    /// The ack to send now; clears the pending state.
    pub fn take_ack(&mut self) -> LaneAck {
        self.ack = AckState::default();
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for &seq in self.ready.keys() {
            let n = ranges.len();
            match ranges.last_mut() {
                Some(r) if r.1 + 1 == seq => r.1 = seq,
                _ if n < MAX_ACK_RANGES => ranges.push((seq, seq)),
                _ => break,
            }
        }
        LaneAck {
            lane: self.lane,
            cumulative: self.next_expected - 1,
            ranges,
        }
    }

    fn note_ack(&mut self, ctx: &RecvCtx<'_>, bytes: usize, immediate: bool) {
        let a = &mut self.ack;
        a.pending = true;
        a.msgs += 1;
        a.bytes += bytes;
        a.immediate |= immediate || a.msgs >= ctx.ack.every_msgs || a.bytes >= ctx.ack.every_bytes;
        a.due.get_or_insert(ctx.now + ctx.ack.delay_ms);
    }

    fn deliver(&mut self, seq: u64, bytes: Vec<u8>, ctx: &mut RecvCtx<'_>) {
        debug_assert_eq!(seq, self.next_expected);
        ctx.events.push_back(MuxEvent::Message {
            lane: self.lane,
            seq,
            bytes,
        });
        self.next_expected += 1;
        while let Some(b) = self.ready.remove(&self.next_expected) {
            ctx.budget.give(b.len());
            ctx.events.push_back(MuxEvent::Message {
                lane: self.lane,
                seq: self.next_expected,
                bytes: b,
            });
            self.next_expected += 1;
        }
    }

    /// Drops everything held below `seq` and gives its memory back.
    fn release_below(&mut self, seq: u64, budget: &mut Budget) {
        let keep_p = self.partials.split_off(&seq);
        for (_, (_, taken)) in std::mem::replace(&mut self.partials, keep_p) {
            budget.give(taken);
        }
        let keep_r = self.ready.split_off(&seq);
        for (_, b) in std::mem::replace(&mut self.ready, keep_r) {
            budget.give(b.len());
        }
    }

    fn discontinuity(
        &mut self,
        epoch: u32,
        seq: u64,
        reason: DiscontinuityReason,
        ctx: &mut RecvCtx<'_>,
    ) {
        ctx.events.push_back(MuxEvent::Discontinuity(Discontinuity {
            lane: self.lane,
            expected_epoch: self.epoch,
            expected_seq: self.next_expected,
            epoch,
            seq,
            reason,
        }));
    }

    /// The sender's floor moved past what this side expects: report and skip the gap.
    fn apply_floor(&mut self, floor: u64, ctx: &mut RecvCtx<'_>) {
        if floor <= self.next_expected {
            return;
        }
        self.discontinuity(self.epoch, floor, DiscontinuityReason::HistoryLost, ctx);
        self.release_below(floor, ctx.budget);
        self.next_expected = floor;
        self.ack.pending = true;
        self.ack.immediate = true;
        if let Some(b) = self.ready.remove(&floor) {
            ctx.budget.give(b.len());
            self.deliver(floor, b, ctx);
        }
    }

    /// The sender's entry of the peer's resume frame.
    ///
    /// Errors: [`PeerMisbehaved::ResumeBehind`] if the sender claims fewer messages than
    /// this side delivered in the same epoch.
    pub fn on_resume(&mut self, s: SendState, ctx: &mut RecvCtx<'_>) -> Result<(), PeerMisbehaved> {
        if self.epoch == 0 {
            // A fresh receiver (new, or restarted) joins the stream at the sender's floor;
            // anything before it went to an earlier incarnation of this side or was forgotten.
            if s.floor > 1 {
                self.next_expected = 1;
                self.discontinuity(s.epoch, s.floor, DiscontinuityReason::JoinedMidStream, ctx);
            }
            self.epoch = s.epoch;
            self.next_expected = s.floor;
        } else if self.epoch == s.epoch {
            if self.next_expected > s.next {
                return Err(PeerMisbehaved::ResumeBehind {
                    lane: self.lane,
                    delivered: self.next_expected - 1,
                    next: s.next,
                });
            }
            self.apply_floor(s.floor, ctx);
        } else {
            self.discontinuity(s.epoch, s.floor, DiscontinuityReason::PeerRestarted, ctx);
            self.release_below(u64::MAX, ctx.budget);
            self.epoch = s.epoch;
            self.next_expected = s.floor;
        }
        Ok(())
    }

    /// One chunk of this lane (the multiplexer checked lane, flags and size limits).
    ///
    /// Errors: [`PeerMisbehaved::ReassemblyLimit`] when the message this side waits for does
    /// not fit the budget; [`PeerMisbehaved::ChunkMismatch`] for contradicting chunks.
    pub fn on_chunk(
        &mut self,
        h: &ChunkHeader,
        data: &[u8],
        ctx: &mut RecvCtx<'_>,
    ) -> Result<(), PeerMisbehaved> {
        if self.epoch == 0 {
            return Ok(()); // no resume from this sender yet: it will send again
        }
        if let Some(f) = h.floor {
            self.apply_floor(f, ctx);
        }
        let seq = h.seq;
        if seq < self.next_expected || self.ready.contains_key(&seq) {
            self.duplicates += u64::from(h.last || h.index == 0);
            self.ack.pending = true;
            self.ack.immediate = true;
            return Ok(());
        }
        if seq - self.next_expected >= ctx.window {
            return Ok(()); // beyond the window: the sender will send it again
        }
        let in_order = seq == self.next_expected;
        let total = h.total as usize;
        let (lane, limit) = (self.lane, ctx.budget.limit());
        let over = |needed: usize| PeerMisbehaved::ReassemblyLimit {
            lane,
            needed,
            limit,
        };
        let complete = if h.index == 0 && h.last {
            data.to_vec()
        } else {
            if let std::collections::btree_map::Entry::Vacant(e) = self.partials.entry(seq) {
                match ctx.budget.try_take(total) {
                    Ok(()) => {
                        e.insert((Partial::new(total), total));
                    }
                    Err(needed) if in_order => return Err(over(needed)),
                    Err(_) => return Ok(()), // held beyond a gap: it will come again
                }
            }
            let (p, taken) = self.partials.get_mut(&seq).expect("inserted above");
            if p.total() != total {
                let (_, t) = self.partials.remove(&seq).expect("present");
                ctx.budget.give(t);
                return Err(PeerMisbehaved::ChunkMismatch {
                    lane: self.lane,
                    seq,
                });
            }
            if p.would_hold_early(h.index) {
                match ctx.budget.try_take(data.len()) {
                    Ok(()) => *taken += data.len(),
                    Err(needed) if in_order => return Err(over(needed)),
                    Err(_) => return Ok(()),
                }
            }
            match p.add(h.index, h.last, data) {
                Ok(Added::Duplicate) | Ok(Added::Stored) => return Ok(()),
                Ok(Added::Complete) => {
                    let (p, t) = self.partials.remove(&seq).expect("present");
                    ctx.budget.give(t);
                    p.finish()
                }
                Err(_) => {
                    let (_, t) = self.partials.remove(&seq).expect("present");
                    ctx.budget.give(t);
                    return Err(PeerMisbehaved::ChunkMismatch {
                        lane: self.lane,
                        seq,
                    });
                }
            }
        };
        self.note_ack(ctx, complete.len(), !in_order);
        if in_order {
            self.deliver(seq, complete, ctx);
        } else if ctx.budget.try_take(complete.len()).is_ok() {
            self.ready.insert(seq, complete);
        }
        Ok(())
    }

    /// The transport is gone: drop everything held (the sender sends it again after the
    /// resume), keep the epoch and what was delivered.
    pub fn transport_lost(&mut self, budget: &mut Budget) {
        self.release_below(u64::MAX, budget);
        self.ack = AckState::default();
    }

    /// Bytes held against the budget (partials and reorder buffer).
    pub fn held(&self) -> usize {
        self.partials.values().map(|(_, t)| t).sum::<usize>()
            + self.ready.values().map(Vec::len).sum::<usize>()
    }
}

/// The receiving side of one unreliable lane: delivers complete messages newer than the
/// last one delivered; keeps at most one partial message (a newer message discards it).
#[derive(Debug)]
pub struct UnreliableRecv {
    lane: Lane,
    last_delivered: Option<u64>,
    partial: Option<(u64, Partial, usize)>,
    lost: u64,
}

impl UnreliableRecv {
    /// A receiver with nothing delivered.
    pub fn new(lane: Lane) -> UnreliableRecv {
        UnreliableRecv {
            lane,
            last_delivered: None,
            partial: None,
            lost: 0,
        }
    }

    /// Messages given up incomplete (a chunk lost, a newer message started, or over the
    /// budget), in total.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    fn discard(&mut self, budget: &mut Budget) {
        if let Some((_, _, taken)) = self.partial.take() {
            budget.give(taken);
            self.lost += 1;
        }
    }

    /// One chunk of this lane.
    ///
    /// Errors: [`PeerMisbehaved::ChunkMismatch`] for contradicting chunks.
    pub fn on_chunk(
        &mut self,
        h: &ChunkHeader,
        data: &[u8],
        budget: &mut Budget,
        events: &mut VecDeque<MuxEvent>,
    ) -> Result<(), PeerMisbehaved> {
        let seq = h.seq;
        if self.last_delivered.is_some_and(|d| seq <= d) {
            return Ok(());
        }
        match &self.partial {
            Some((p, _, _)) if seq < *p => return Ok(()),
            Some((p, _, _)) if seq > *p => self.discard(budget),
            _ => {}
        }
        let bytes = if h.index == 0 && h.last {
            data.to_vec()
        } else {
            let total = h.total as usize;
            if self.partial.is_none() {
                if budget.try_take(total).is_err() {
                    self.lost += 1;
                    return Ok(());
                }
                self.partial = Some((seq, Partial::new(total), total));
            }
            let (_, p, taken) = self.partial.as_mut().expect("set above");
            if p.total() != total {
                self.discard(budget);
                return Err(PeerMisbehaved::ChunkMismatch {
                    lane: self.lane,
                    seq,
                });
            }
            if p.would_hold_early(h.index) {
                if budget.try_take(data.len()).is_err() {
                    return Ok(());
                }
                *taken += data.len();
            }
            match p.add(h.index, h.last, data) {
                Ok(Added::Duplicate) | Ok(Added::Stored) => return Ok(()),
                Ok(Added::Complete) => {
                    let (_, p, taken) = self.partial.take().expect("present");
                    budget.give(taken);
                    p.finish()
                }
                Err(_) => {
                    self.discard(budget);
                    return Err(PeerMisbehaved::ChunkMismatch {
                        lane: self.lane,
                        seq,
                    });
                }
            }
        };
        self.last_delivered = Some(seq);
        events.push_back(MuxEvent::Message {
            lane: self.lane,
            seq,
            bytes,
        });
        Ok(())
    }

    /// The transport is gone: a new connection starts from any seq.
    pub fn transport_lost(&mut self, budget: &mut Budget) {
        self.discard(budget);
        self.last_delivered = None;
    }

    /// Bytes held against the budget.
    pub fn held(&self) -> usize {
        self.partial.as_ref().map_or(0, |(_, _, t)| *t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: AckPolicy = AckPolicy {
        delay_ms: 20,
        every_msgs: 4,
        every_bytes: 1 << 20,
    };

    fn hdr(seq: u64, index: u32, last: bool, total: u64) -> ChunkHeader {
        ChunkHeader {
            lane: Lane::Messaging,
            reliable: true,
            last,
            seq,
            index,
            total,
            floor: None,
        }
    }

    struct Rx {
        lane: RecvLane,
        budget: Budget,
        events: VecDeque<MuxEvent>,
    }

    impl Rx {
        fn new(epoch: u32, floor: u64) -> Rx {
            let mut rx = Rx {
                lane: RecvLane::new(Lane::Messaging),
                budget: Budget::new(1000),
                events: VecDeque::new(),
            };
            rx.resume(epoch, floor, floor);
            rx.events.clear();
            rx
        }
        fn ctx(&mut self) -> (RecvCtx<'_>, &mut RecvLane) {
            (
                RecvCtx {
                    budget: &mut self.budget,
                    events: &mut self.events,
                    window: 8,
                    ack: POLICY,
                    now: 100,
                },
                &mut self.lane,
            )
        }
        fn chunk(&mut self, h: ChunkHeader, data: &[u8]) -> Result<(), PeerMisbehaved> {
            let (mut ctx, lane) = self.ctx();
            lane.on_chunk(&h, data, &mut ctx)
        }
        fn resume(&mut self, epoch: u32, floor: u64, next: u64) {
            let (mut ctx, lane) = self.ctx();
            let s = SendState {
                lane: Lane::Messaging,
                epoch,
                floor,
                next,
            };
            lane.on_resume(s, &mut ctx).unwrap();
        }
        fn delivered(&mut self) -> Vec<u64> {
            self.events
                .drain(..)
                .filter_map(|e| match e {
                    MuxEvent::Message { seq, .. } => Some(seq),
                    _ => None,
                })
                .collect()
        }
    }

    #[test]
    fn reorder_dedup_and_ack_ranges() {
        let mut rx = Rx::new(7, 1);
        rx.chunk(hdr(2, 0, true, 1), b"b").unwrap();
        rx.chunk(hdr(4, 0, true, 1), b"d").unwrap();
        assert!(rx.delivered().is_empty());
        assert!(rx.lane.ack_due(100), "out of order: ack at once");
        let a = rx.lane.take_ack();
        assert_eq!((a.cumulative, a.ranges), (0, vec![(2, 2), (4, 4)]));
        assert_eq!(rx.budget.used(), 2);
        rx.chunk(hdr(1, 0, true, 1), b"a").unwrap();
        assert_eq!(rx.delivered(), vec![1, 2]);
        rx.chunk(hdr(2, 0, true, 1), b"b").unwrap();
        assert_eq!(rx.lane.duplicates(), 1);
        rx.chunk(hdr(3, 0, true, 1), b"c").unwrap();
        assert_eq!(rx.delivered(), vec![3, 4]);
        assert_eq!(rx.budget.used(), 0);
        assert_eq!(rx.lane.take_ack().cumulative, 4);
        rx.chunk(hdr(13, 0, true, 1), b"x").unwrap();
        assert_eq!(rx.budget.used(), 0, "beyond the window of 8: dropped");
    }

    #[test]
    fn delayed_and_counted_acks() {
        let mut rx = Rx::new(7, 1);
        rx.chunk(hdr(1, 0, true, 1), b"a").unwrap();
        assert!(!rx.lane.ack_due(100));
        assert_eq!(rx.lane.ack_deadline(), Some(120));
        assert!(rx.lane.ack_due(120));
        for s in 2..=4 {
            rx.chunk(hdr(s, 0, true, 1), b"a").unwrap();
        }
        assert!(rx.lane.ack_due(100), "4 messages: at once");
    }

    #[test]
    fn chunked_message_within_budget_and_over_it() {
        let mut rx = Rx::new(7, 1);
        rx.chunk(hdr(1, 1, true, 6), b"def").unwrap();
        assert_eq!(rx.budget.used(), 9, "declared size + early chunk");
        rx.chunk(hdr(1, 0, false, 6), b"abc").unwrap();
        assert_eq!(rx.budget.used(), 0);
        assert_eq!(
            rx.events.pop_front(),
            Some(MuxEvent::Message {
                lane: Lane::Messaging,
                seq: 1,
                bytes: b"abcdef".to_vec()
            })
        );
        // the awaited message does not fit: typed error, nothing taken
        assert_eq!(
            rx.chunk(hdr(2, 0, false, 2000), b"x"),
            Err(PeerMisbehaved::ReassemblyLimit {
                lane: Lane::Messaging,
                needed: 2000,
                limit: 1000
            })
        );
        assert_eq!(rx.budget.used(), 0);
        // a later one that does not fit is dropped quietly (it will be sent again)
        assert_eq!(rx.chunk(hdr(3, 0, false, 2000), b"x"), Ok(()));
        // contradicting sizes
        rx.chunk(hdr(2, 0, false, 10), b"x").unwrap();
        assert!(matches!(
            rx.chunk(hdr(2, 1, true, 11), b"y"),
            Err(PeerMisbehaved::ChunkMismatch { seq: 2, .. })
        ));
        assert_eq!(rx.budget.used(), 0);
    }

    #[test]
    fn floor_and_epoch_changes_are_discontinuities() {
        let mut rx = Rx::new(7, 1);
        rx.chunk(hdr(1, 0, true, 1), b"a").unwrap();
        rx.chunk(hdr(5, 0, true, 1), b"e").unwrap();
        let mut h = hdr(6, 0, true, 1);
        h.floor = Some(5);
        rx.chunk(h, b"f").unwrap();
        let ev: Vec<MuxEvent> = rx.events.drain(..).collect();
        assert_eq!(ev.len(), 4);
        assert_eq!(
            ev[1],
            MuxEvent::Discontinuity(Discontinuity {
                lane: Lane::Messaging,
                expected_epoch: 7,
                expected_seq: 2,
                epoch: 7,
                seq: 5,
                reason: DiscontinuityReason::HistoryLost
            })
        );
        assert!(matches!(ev[2], MuxEvent::Message { seq: 5, .. }));
        assert!(matches!(ev[3], MuxEvent::Message { seq: 6, .. }));
        // the same epoch with a floor not past what was delivered: nothing to report
        rx.resume(7, 3, 7);
        assert!(rx.events.is_empty());
        // the sender restarted
        rx.resume(9, 1, 1);
        assert!(matches!(
            rx.events.pop_front(),
            Some(MuxEvent::Discontinuity(Discontinuity {
                expected_epoch: 7,
                expected_seq: 7,
                epoch: 9,
                seq: 1,
                reason: DiscontinuityReason::PeerRestarted,
                ..
            }))
        ));
        assert_eq!(rx.lane.resume_state().delivered, 0);
        let (mut ctx, lane) = rx.ctx();
        let behind = SendState {
            lane: Lane::Messaging,
            epoch: 9,
            floor: 1,
            next: 1,
        };
        lane.next_expected = 3;
        assert!(matches!(
            lane.on_resume(behind, &mut ctx),
            Err(PeerMisbehaved::ResumeBehind { .. })
        ));
    }

    #[test]
    fn sender_window_acks_resends_and_floor() {
        let mut w = SendWindow::new(3);
        for _ in 0..4 {
            let s = w.assign();
            w.on_sent(s, vec![0; 10], 0, Some(100));
        }
        assert_eq!(w.rto_at(), Some(100));
        assert!(!w.can_admit(1, 4, 1000), "4 messages in flight");
        assert!(!w.can_admit(961, 8, 1000), "bytes");
        let ack = |cumulative, ranges| LaneAck {
            lane: Lane::Data,
            cumulative,
            ranges,
        };
        w.on_ack(Lane::Data, &ack(1, vec![(3, 3)]), 50, Some(100))
            .unwrap();
        assert_eq!((w.unacked(), w.rto_at()), (3, Some(150)));
        assert!(w
            .on_ack(Lane::Data, &ack(9, vec![]), 50, Some(100))
            .is_err());
        w.on_timeout(150, Some(100));
        let mut resent = Vec::new();
        while let Some((s, _)) = w.resend_head() {
            resent.push(s.seq);
            w.resend_advance(true, 150, Some(100));
        }
        assert_eq!(resent, vec![2, 4], "3 is held by the peer");
        assert_eq!(w.rto_at(), Some(350), "backed off ×2");
        // resume: the peer delivered 3; 4 goes again
        let peer = RecvState {
            lane: Lane::Data,
            epoch: 3,
            delivered: 3,
        };
        w.on_resume(Lane::Data, Some(peer)).unwrap();
        assert_eq!(w.resend_head().map(|(s, _)| s.seq), Some(4));
        assert_eq!(w.floor_signal(None), None);
        // forgetting: the floor moves past what the peer acknowledged
        assert_eq!(w.forget_through(5), 1);
        assert_eq!(w.floor_signal(Some(6)), Some(6));
        // a fresh peer adopts at the floor of a resume: chunks carry the floor until acked
        w.on_resume(Lane::Data, None).unwrap();
        assert_eq!(w.floor_signal(Some(6)), Some(6));
    }
}
