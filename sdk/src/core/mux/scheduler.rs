//! Which lane sends the next chunk, and how much each lane may queue (seed 000 "Lane
//! Configuration", "Priority Scheduling"; issue 3 "Scheduling").
//!
//! # The rule (PROTOCOL.md "Multiplexer (v2 frames)", scheduling)
//! The multiplexer sends one chunk (at most `chunk_bytes`, default 16 KiB) at a time and asks
//! the [`Scheduler`] before each one. Among the lanes that have a chunk ready:
//! 1. **Exempt lanes first**: lanes whose priority is at least `exempt_priority` (default 100:
//!    Control) are never overtaken, not even by a starving lane.
//! 2. **Then starving lanes**: a lane that stayed ready while `starve_after_chunks` (default
//!    32) chunks of other lanes went out gets the next chunk. So every backlogged lane sends
//!    at least one chunk in every `starve_after_chunks + 1`, whatever the priorities (at most
//!    ~3 % of the link is taken from higher lanes per starving lane).
//! 3. **Then by priority**, higher first.
//! 4. **Round-robin inside one priority**: the lane served longest ago goes first.
//! 5. Lowest lane id breaks any remaining tie (deterministic).
//!
//! Because scheduling is per chunk, a multi-megabyte Data message delays a Control message by
//! at most the chunk already handed to the transport (plus what the transport itself buffers,
//! which the transport budget bounds; see [`super::MuxConfig::transport_high_water_bytes`]).
//!
//! # Queue depth (seed 000 `queueDepth`)
//! A [`LaneQueue`] holds the messages of one lane that are not completely handed to the
//! transport yet. At `queueDepth` messages: an unreliable lane drops its oldest queued message
//! (counted); a reliable lane refuses the new one with backpressure and remembers to emit a
//! drain event when room frees (see [`super::Mux::send`]).

use std::cmp::Reverse;
use std::collections::VecDeque;

/// Scheduling parameters (see the module docs for the rule).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// A lane that stayed ready while this many chunks of other lanes were sent is starving
    /// and goes next (rule 2). Default 32.
    pub starve_after_chunks: u32,
    /// Lanes with at least this priority are never overtaken by a starving lane (rule 1).
    /// Default 100 (Control).
    pub exempt_priority: u8,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            starve_after_chunks: 32,
            exempt_priority: 100,
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct LaneSched {
    priority: u8,
    /// Value of `round` when this lane last sent a chunk (0: never).
    last_served: u64,
    /// Value of `round` when this lane became ready without being served since.
    ready_since: Option<u64>,
}

/// A lane's place in the choice; the greatest wins.
///
/// The fields are in this order because a derived `Ord` compares them left to right: the
/// exemption outranks starvation (Control is never delayed by aging), starvation outranks
/// priority (that is what aging means), priority outranks recency (strict priority between
/// classes), and recency (`Reverse(last_served)`: served longest ago is greater) gives
/// round-robin inside one priority; `Reverse(lane id)` makes ties deterministic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    exempt: bool,
    starving: bool,
    priority: u8,
    recency: Reverse<u64>,
    lane: Reverse<u8>,
}

/// Chooses the lane of the next chunk among up to 8 lanes (index = lane id − 1).
///
/// With 8 lanes a scan that takes the maximum [`Rank`] is cheaper than keeping a heap; the
/// derived `Ord` on `Rank` is the whole rule.
#[derive(Clone, Debug)]
pub struct Scheduler {
    cfg: SchedulerConfig,
    lanes: [LaneSched; 8],
    /// Chunks sent so far.
    round: u64,
    starved_turns: u64,
}

impl Scheduler {
    /// A scheduler for lanes with these priorities (index = lane id − 1).
    pub fn new(cfg: SchedulerConfig, priorities: [u8; 8]) -> Scheduler {
        let mut lanes = [LaneSched::default(); 8];
        for (l, p) in lanes.iter_mut().zip(priorities) {
            l.priority = p;
        }
        Scheduler {
            cfg,
            lanes,
            round: 0,
            starved_turns: 0,
        }
    }

    /// The lane (index) that sends next among those with `ready[i]`, or `None`. Call
    /// [`Scheduler::served`] once its chunk is actually sent.
    pub fn pick(&mut self, ready: [bool; 8]) -> Option<usize> {
        let mut best: Option<(Rank, usize)> = None;
        for (i, l) in self.lanes.iter_mut().enumerate() {
            if !ready[i] {
                l.ready_since = None;
                continue;
            }
            let since = *l.ready_since.get_or_insert(self.round);
            let rank = Rank {
                exempt: l.priority >= self.cfg.exempt_priority,
                starving: self.round - since >= u64::from(self.cfg.starve_after_chunks),
                priority: l.priority,
                recency: Reverse(l.last_served),
                lane: Reverse(i as u8),
            };
            if best.map_or(true, |(b, _)| rank > b) {
                best = Some((rank, i));
            }
        }
        best.map(|(_, i)| i)
    }

    /// Lane `i` sent one chunk.
    pub fn served(&mut self, i: usize) {
        let l = &mut self.lanes[i];
        if l.ready_since.is_some_and(|s| {
            self.round - s >= u64::from(self.cfg.starve_after_chunks)
                && l.priority < self.cfg.exempt_priority
        }) {
            self.starved_turns += 1;
        }
        self.round += 1;
        l.last_served = self.round;
        l.ready_since = Some(self.round);
    }

    /// Chunks sent so far.
    pub fn rounds(&self) -> u64 {
        self.round
    }

    /// Chunks sent because their lane was starving (rule 2).
    pub fn starved_turns(&self) -> u64 {
        self.starved_turns
    }
}

/// A message waiting in a lane's queue.
#[derive(Clone, Debug)]
pub struct Queued {
    /// Its per-lane sequence number.
    pub seq: u64,
    /// The message bytes.
    pub bytes: Vec<u8>,
}

/// What [`LaneQueue::admit`] decided for a new message.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// There is room.
    Room,
    /// Full: the caller refuses the message (reliable lanes with backpressure).
    Full,
}

/// The messages of one lane not completely handed to the transport yet, oldest first, and
/// the progress of the oldest one (how many of its chunks were sent).
#[derive(Debug)]
pub struct LaneQueue {
    msgs: VecDeque<Queued>,
    depth: usize,
    /// Bytes of the queued messages.
    bytes: usize,
    /// Byte budget: a message is admitted to a non-empty queue only within it.
    max_bytes: usize,
    /// Chunks of `msgs[0]` already sent.
    head_chunks_sent: u32,
    /// A send was refused since the last drain event.
    refused: bool,
    /// Messages dropped to make room (unreliable, or reliable with forgetting).
    dropped: u64,
}

impl LaneQueue {
    /// An empty queue holding at most `depth` (≥ 1) messages.
    pub fn new(depth: usize) -> LaneQueue {
        LaneQueue::with_max_bytes(depth, usize::MAX)
    }

    /// An empty queue holding at most `depth` (≥ 1) messages and, unless it is empty, at most
    /// `max_bytes` bytes of them (one message alone always fits).
    pub fn with_max_bytes(depth: usize, max_bytes: usize) -> LaneQueue {
        LaneQueue {
            msgs: VecDeque::new(),
            depth: depth.max(1),
            bytes: 0,
            max_bytes,
            head_chunks_sent: 0,
            refused: false,
            dropped: 0,
        }
    }

    /// Messages queued.
    pub fn len(&self) -> usize {
        self.msgs.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// The queue depth, messages.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Bytes of the queued messages.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether a message of `len` bytes fits now (count and bytes), without noting a refusal.
    pub fn fits(&self, len: usize) -> bool {
        self.msgs.is_empty()
            || (self.msgs.len() < self.depth
                && self
                    .bytes
                    .checked_add(len)
                    .is_some_and(|n| n <= self.max_bytes))
    }

    /// Messages dropped to make room, in total.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Whether a new message of `len` bytes fits ([`LaneQueue::fits`]); remembers a refusal
    /// for [`LaneQueue::take_drain`].
    pub fn admit(&mut self, len: usize) -> Admission {
        if self.fits(len) {
            Admission::Room
        } else {
            self.refused = true;
            Admission::Full
        }
    }

    /// Appends a message (after [`LaneQueue::admit`] or [`LaneQueue::drop_oldest`]).
    pub fn push(&mut self, msg: Queued) {
        self.bytes = self.bytes.saturating_add(msg.bytes.len());
        self.msgs.push_back(msg);
    }

    /// Drops the oldest queued message to make room (even one partly sent: the receiver
    /// discards its partial copy when a newer message arrives) and counts it.
    pub fn drop_oldest(&mut self) -> Option<Queued> {
        let m = self.msgs.pop_front()?;
        self.bytes = self.bytes.saturating_sub(m.bytes.len());
        self.head_chunks_sent = 0;
        self.dropped += 1;
        Some(m)
    }

    /// The oldest message and how many of its chunks were sent.
    pub fn head(&self) -> Option<(&Queued, u32)> {
        self.msgs.front().map(|m| (m, self.head_chunks_sent))
    }

    /// One more chunk of the head was sent; `last`: it was its final chunk, so the head
    /// leaves the queue and is returned.
    pub fn advance(&mut self, last: bool) -> Option<Queued> {
        if last {
            self.head_chunks_sent = 0;
            let m = self.msgs.pop_front()?;
            self.bytes = self.bytes.saturating_sub(m.bytes.len());
            Some(m)
        } else {
            self.head_chunks_sent += 1;
            None
        }
    }

    /// The transport was lost: the head starts again from its first chunk.
    pub fn rewind_head(&mut self) {
        self.head_chunks_sent = 0;
    }

    /// Whether the head was partly sent.
    pub fn head_started(&self) -> bool {
        self.head_chunks_sent > 0
    }

    /// `true` once after a refusal, when room is free again: emit a drain event.
    pub fn take_drain(&mut self) -> bool {
        if self.refused && self.msgs.len() < self.depth && self.bytes < self.max_bytes {
            self.refused = false;
            true
        } else {
            false
        }
    }

    /// Sequence number of the oldest queued message.
    pub fn first_seq(&self) -> Option<u64> {
        self.msgs.front().map(|m| m.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Priorities of the registry: Control 100, Messaging 90, Voice 80, Video 70, Data 20,
    /// Telemetry 30, Sync 85, Relay 10.
    const REG: [u8; 8] = [100, 90, 80, 70, 20, 30, 85, 10];

    fn run(s: &mut Scheduler, ready: [bool; 8], n: usize) -> Vec<usize> {
        (0..n)
            .map(|_| {
                let i = s.pick(ready).unwrap();
                s.served(i);
                i
            })
            .collect()
    }

    #[test]
    fn higher_priority_first() {
        let mut s = Scheduler::new(SchedulerConfig::default(), REG);
        let mut ready = [true; 8];
        assert_eq!(s.pick(ready), Some(0));
        ready[0] = false;
        assert_eq!(s.pick(ready), Some(1));
        ready[1] = false;
        assert_eq!(s.pick(ready), Some(6), "Sync (85) before Voice (80)");
        assert_eq!(s.pick([false; 8]), None);
    }

    #[test]
    fn round_robin_inside_one_priority() {
        let mut s = Scheduler::new(SchedulerConfig::default(), [50; 8]);
        let mut ready = [false; 8];
        ready[1] = true;
        ready[4] = true;
        ready[6] = true;
        assert_eq!(run(&mut s, ready, 6), vec![1, 4, 6, 1, 4, 6]);
    }

    #[test]
    fn starving_lane_gets_one_chunk_in_every_33() {
        let mut s = Scheduler::new(SchedulerConfig::default(), REG);
        let mut ready = [false; 8];
        ready[1] = true; // Messaging, saturating
        ready[7] = true; // Relay, lowest
        let order = run(&mut s, ready, 99);
        let relay: Vec<usize> = (0..99).filter(|&k| order[k] == 7).collect();
        assert_eq!(relay, vec![32, 65, 98]);
        assert_eq!(s.starved_turns(), 3);
    }

    #[test]
    fn starving_lane_never_overtakes_control() {
        let mut s = Scheduler::new(SchedulerConfig::default(), REG);
        let mut ready = [false; 8];
        ready[0] = true;
        ready[4] = true;
        let order = run(&mut s, ready, 100);
        assert!(order.iter().all(|&i| i == 0));
        ready[0] = false;
        assert_eq!(s.pick(ready), Some(4));
    }

    #[test]
    fn queue_depth_and_drain() {
        let mut q = LaneQueue::new(2);
        for seq in 1..=2 {
            assert_eq!(q.admit(0), Admission::Room);
            q.push(Queued { seq, bytes: vec![] });
        }
        assert_eq!(q.admit(0), Admission::Full);
        assert!(!q.take_drain(), "still full");
        assert_eq!(q.advance(true).map(|m| m.seq), Some(1));
        assert!(q.take_drain());
        assert!(!q.take_drain(), "once");
        assert_eq!(q.drop_oldest().map(|m| m.seq), Some(2));
        assert_eq!(q.dropped(), 1);
    }
}
