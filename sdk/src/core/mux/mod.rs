//! The lane multiplexer, sans-IO: 8 lanes over one message transport (a WebSocket today, a
//! WebRTC DataChannel later), on both ends (SDK and server-stub).
//!
//! Implements seed 000 "Lane Configuration" (per-lane `priority`, `queueDepth`, `reliable`)
//! and "Priority Scheduling", seed 001 "Connection Resilience" (resume across reconnects),
//! and issue 3 (chunking without head-of-line blocking, backpressure, exactly-once in-order
//! delivery on reliable lanes, discontinuity events). Wire layout: PROTOCOL.md "Multiplexer
//! (v2 frames)" and [`wire`].
//!
//! | module | what |
//! | --- | --- |
//! | [`wire`] | chunk, ack and resume frames |
//! | [`scheduler`] | which lane sends the next chunk; per-lane queues and `queueDepth` |
//! | [`reliability`] | sequence numbers, acks, retransmission, resume, discontinuities |
//! | [`reassembly`] | chunk reassembly with a per-peer memory budget |
//! | [`error`] | typed errors: decode / peer misbehaved / API misuse / backpressure |
//!
//! # Drive contract ([`crate::core::drive`])
//! The [`Mux`] owns no socket and reads no clock: `now` ([`Millis`]) is the caller's
//! monotonic clock (`performance.now()` in the browser, `tokio::time::Instant` on the server),
//! the last argument of every input that needs it.
//! 1. Create it with [`Mux::new`]; it starts with no transport.
//! 2. Inputs: [`Mux::handle_transport_resumed`] when a transport opens (the first one too),
//!    [`Mux::handle_input`] for every message it receives, [`Mux::handle_transport_lost`]
//!    when it closes, [`Mux::handle_transport_buffered`] with the transport's current
//!    buffered amount (WebSocket `bufferedAmount`, DataChannel `bufferedAmount`),
//!    [`Mux::handle_timeout`] when the deadline passes, and [`Mux::send`] from the app.
//! 3. After **every** input, drain [`Mux::poll_output`] until [`MuxOutput::Timeout`]: events
//!    first (hand each to the application), then frames ([`MuxOutput::Transmit`]: send each
//!    as one binary transport message), then the deadline (call [`Mux::handle_timeout`]
//!    then). No frame comes while the transport's buffer is above its high-water mark:
//!    report the buffered amount again (on DataChannel `bufferedamountlow`, or at the
//!    `Timeout` deadline for a WebSocket, which has no such event) and drain again.
//! 4. An event [`MuxEvent::Error`] with [`MuxError::is_fatal`] means the peer is broken:
//!    close the transport (and call [`Mux::handle_transport_lost`]).
//!
//! Both ends run the same state machine; the resume handshake at every transport start
//! exchanges, per reliable lane, the sender's (epoch, floor, next seq) and the receiver's
//! (epoch, last delivered seq), so each side sends again exactly what the other misses.

pub mod error;
pub mod reassembly;
pub mod reliability;
pub mod scheduler;
pub mod wire;

pub use error::{ApiMisuse, DecodeError, MuxError, PeerMisbehaved};
pub use scheduler::SchedulerConfig;

use crate::core::drive::Millis;
use crate::core::lane::{Lane, LaneSpec};
use reassembly::Budget;
use reliability::{AckPolicy, RecvCtx, RecvLane, SendWindow, UnreliableRecv};
use scheduler::{Admission, LaneQueue, Queued, Scheduler};
use std::collections::VecDeque;
use wire::{ChunkHeader, Frame, LaneAck, Resume, CHUNK_HEADER_MAX};

/// Default chunk size: the largest frame the multiplexer sends for a chunk, 16 KiB (header
/// included), the message size every WebRTC DataChannel implementation accepts.
pub const DEFAULT_CHUNK_BYTES: usize = 16 * 1024;

/// One lane's delivery characteristics (seed 000 `LaneSpec`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaneConfig {
    /// Scheduling priority; higher is sent first.
    pub priority: u8,
    /// Messages the lane may queue before it drops (unreliable) or refuses (reliable).
    pub queue_depth: usize,
    /// Acknowledged, retransmitted, exactly once and in order.
    pub reliable: bool,
}

impl From<&LaneSpec> for LaneConfig {
    fn from(s: &LaneSpec) -> LaneConfig {
        LaneConfig {
            priority: s.priority,
            queue_depth: usize::from(s.queue_depth),
            reliable: s.reliable,
        }
    }
}

/// What a reliable lane does when its queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReliableOverflow {
    /// Refuse the new message with [`MuxError::Backpressure`]; [`MuxEvent::Drain`] follows
    /// when room frees. Nothing is lost (the SDK's choice: the app can wait).
    Backpressure,
    /// Accept it and forget the oldest queued message together with every sent but
    /// unacknowledged one; the receiver gets [`MuxEvent::Discontinuity`] for whatever it had
    /// not received. For a relay that must not block a room because one member is offline
    /// (server-stub's choice while that member is disconnected).
    ForgetOldest,
}

/// Multiplexer parameters. Sizes in bytes, times in ms. Both ends should use the same
/// values (a later handshake may exchange them).
#[derive(Clone, Debug)]
pub struct MuxConfig {
    /// The lanes in use (negotiated), index = lane id − 1.
    pub lanes: [Option<LaneConfig>; 8],
    /// Largest chunk frame sent, header included. Default 16 KiB.
    pub chunk_bytes: usize,
    /// Largest message accepted by [`Mux::send`] and from the peer. Default 16 MiB.
    pub max_message_bytes: usize,
    /// Largest frame accepted from the peer. Default 1 MiB.
    pub max_frame_bytes: usize,
    /// Memory this side holds for the peer's partial and out-of-order messages. Default
    /// 32 MiB. The sender also keeps the bytes of messages it has started but not finished
    /// under half of it (a message alone always goes).
    pub max_reassembly_bytes: usize,
    /// Bytes sent and unacknowledged per reliable lane before it stops sending (the message
    /// that starts alone may be larger). Default 4 MiB.
    pub max_unacked_bytes: usize,
    /// Messages sent and unacknowledged per reliable lane before it stops sending; also the
    /// receiver's reorder window. Default 1024.
    pub max_unacked_msgs: usize,
    /// Ack delay. Default 20 ms.
    pub ack_delay_ms: u64,
    /// Acknowledge at once after this many messages. Default 8.
    pub ack_every_msgs: u32,
    /// Acknowledge at once after this many bytes. Default 256 KiB.
    pub ack_every_bytes: usize,
    /// Retransmission timeout for transports that lose or reorder (unreliable DataChannels);
    /// `None` for ordered reliable transports (WebSocket, reliable DataChannel), which only
    /// send again after a resume. Default `None`.
    pub retransmit_timeout_ms: Option<u64>,
    /// Resend the resume frame this often until the peer echoes it. Default 1000 ms.
    pub resume_retry_ms: u64,
    /// Write to the transport only while its buffered amount plus the frame stays within
    /// this (or the buffer is empty); `None`: no limit. Default one chunk, so a Control
    /// message waits behind at most one chunk in the transport.
    pub transport_high_water_bytes: Option<usize>,
    /// While data waits for the transport's buffer to drain, ask to be woken this often to
    /// report the buffered amount again (WebSocket has no low-water event). Default 5 ms.
    pub transport_poll_ms: Option<u64>,
    /// Scheduling rule parameters.
    pub scheduler: SchedulerConfig,
    /// Reliable lanes with a full queue.
    pub reliable_overflow: ReliableOverflow,
    /// Bytes each lane may queue (messages not yet completely handed to the transport), on
    /// top of its `queue_depth` in messages; a full lane behaves as at its `queue_depth`. One
    /// message alone always fits. `None`: no byte bound. Default `None` (server-stub bounds
    /// its relay queues with `--lane-queue-bytes`, issue 11).
    pub max_queue_bytes: Option<usize>,
    /// Seed for epochs and nonces; pass a random one (a restart must pick a new epoch).
    pub seed: u64,
}

impl MuxConfig {
    /// The defaults for `lanes`, with the registry's characteristics (PROTOCOL.md §4).
    pub fn for_lanes(lanes: &[Lane], seed: u64) -> MuxConfig {
        let mut cfg = [None; 8];
        for &l in lanes {
            cfg[l as usize - 1] = Some(LaneConfig::from(l.spec()));
        }
        MuxConfig {
            lanes: cfg,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            max_message_bytes: 16 << 20,
            max_frame_bytes: 1 << 20,
            max_reassembly_bytes: 32 << 20,
            max_unacked_bytes: 4 << 20,
            max_unacked_msgs: 1024,
            ack_delay_ms: 20,
            ack_every_msgs: 8,
            ack_every_bytes: 256 << 10,
            retransmit_timeout_ms: None,
            resume_retry_ms: 1000,
            transport_high_water_bytes: Some(DEFAULT_CHUNK_BYTES),
            transport_poll_ms: Some(5),
            scheduler: SchedulerConfig::default(),
            reliable_overflow: ReliableOverflow::Backpressure,
            max_queue_bytes: None,
            seed,
        }
    }

    /// The defaults with all 8 lanes.
    pub fn all_lanes(seed: u64) -> MuxConfig {
        MuxConfig::for_lanes(&Lane::ALL, seed)
    }

    fn chunk_payload(&self) -> usize {
        self.chunk_bytes - CHUNK_HEADER_MAX
    }
}

/// Identifies a sent message: its lane and per-lane sequence number (from 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MsgId {
    /// The lane.
    pub lane: Lane,
    /// Sequence number within the lane's current epoch.
    pub seq: u64,
}

/// Why a receiver reports a discontinuity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiscontinuityReason {
    /// The sender forgot messages this side had not received (its bounded history
    /// overflowed); same epoch.
    HistoryLost,
    /// The sender's epoch changed: it restarted or lost all its state.
    PeerRestarted,
    /// This side had no state for the sender's stream (it is new or restarted, e.g. a server
    /// that came back) and the stream continues at `seq` > 1: messages before it went to an
    /// earlier incarnation of this side, or were forgotten. `expected_epoch` is 0 and
    /// `expected_seq` 1.
    JoinedMidStream,
}

/// A reliable lane skipped messages the sender can no longer send. Messages from
/// `(expected_epoch, expected_seq)` on (to the end of that epoch if it differs) and those of
/// `epoch` before `seq` will never arrive here; delivery continues in order from
/// `(epoch, seq)`. An app resynchronises its state here (e.g. asks for a snapshot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Discontinuity {
    /// The lane.
    pub lane: Lane,
    /// Epoch this side followed.
    pub expected_epoch: u32,
    /// Sequence number this side waited for.
    pub expected_seq: u64,
    /// Epoch delivery continues in.
    pub epoch: u32,
    /// Sequence number delivery continues from.
    pub seq: u64,
    /// Why.
    pub reason: DiscontinuityReason,
}

/// Something the application should hear about ([`MuxOutput::Event`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MuxEvent {
    /// A complete message. On a reliable lane: exactly once, in `seq` order.
    Message {
        /// The lane.
        lane: Lane,
        /// The sender's sequence number.
        seq: u64,
        /// The message bytes.
        bytes: Vec<u8>,
    },
    /// A reliable lane lost messages (see [`Discontinuity`]).
    Discontinuity(Discontinuity),
    /// A reliable lane that refused a message with backpressure has room again.
    Drain {
        /// The lane.
        lane: Lane,
    },
    /// Queued messages were dropped to make room: the oldest of an unreliable lane, or of a
    /// reliable lane with [`ReliableOverflow::ForgetOldest`]. Consecutive drops on one lane
    /// are merged into one event.
    Dropped {
        /// The lane.
        lane: Lane,
        /// Messages dropped.
        count: u64,
    },
    /// The peer sent something wrong; the frame was discarded. Close the transport if
    /// [`MuxError::is_fatal`].
    Error(MuxError),
}

/// One output of [`Mux::poll_output`], in this order: events, frames, the deadline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MuxOutput {
    /// Hand to the application.
    Event(MuxEvent),
    /// Send as one binary transport message.
    Transmit(Vec<u8>),
    /// Nothing more until then ([`Millis::NEVER`]: no deadline); call [`Mux::handle_timeout`]
    /// at that time.
    Timeout(Millis),
}

/// Counters, for tests, benchmarks and diagnostics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MuxStats {
    /// Frames handed to the transport.
    pub frames_sent: u64,
    /// Bytes handed to the transport.
    pub bytes_sent: u64,
    /// Chunks sent because their lane was starving.
    pub starved_turns: u64,
    /// Resume handshakes completed (peer resume processed).
    pub resumes: u64,
    /// Ack frames sent.
    pub acks_sent: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    /// A delayed ack falls due.
    Ack = 0,
    /// A reliable lane's retransmission timeout.
    Retransmit = 1,
    /// Resend the resume frame.
    Resume = 2,
    /// Check the transport's buffered amount again.
    TransportPoll = 3,
}

const TIMERS: usize = 4;

enum Rx {
    Reliable(RecvLane),
    Unreliable(UnreliableRecv),
}

struct LaneState {
    lane: Lane,
    cfg: LaneConfig,
    queue: LaneQueue,
    /// Reliable lanes only.
    tx: Option<SendWindow>,
    unreliable_next_seq: u64,
    rx: Rx,
}

impl LaneState {
    fn first_queued(&self) -> Option<u64> {
        self.queue.first_seq()
    }
}

/// Connection (transport) state.
#[derive(Debug, Default)]
struct Conn {
    connected: bool,
    /// This side's nonce for the current transport.
    nonce: u64,
    /// The peer's nonce whose resume was processed (0: none yet).
    peer_nonce: u64,
    /// The peer echoed our nonce.
    resume_acked: bool,
    resume_due: bool,
    resume_retry_at: Option<u64>,
    writable: bool,
    buffered: usize,
}

/// The multiplexer of one transport peer.
///
/// Drive contract ([`crate::core::drive`], module docs): inputs (`handle_*`, `now` last) and
/// the mutator [`Mux::send`]; after each, drain [`Mux::poll_output`] until
/// [`MuxOutput::Timeout`]; call [`Mux::handle_timeout`] at that deadline. Getters:
/// [`Mux::queued_len`], [`Mux::epoch`], ...
pub struct Mux {
    cfg: MuxConfig,
    lanes: [Option<LaneState>; 8],
    sched: Scheduler,
    budget: Budget,
    events: VecDeque<MuxEvent>,
    conn: Conn,
    now: u64,
    timers: [Option<u64>; TIMERS],
    rng: fastrand::Rng,
    stats: MuxStats,
}

impl Mux {
    /// A multiplexer with no transport yet.
    ///
    /// Errors: [`ApiMisuse::InvalidConfig`] if the chunk size leaves no room for data or
    /// exceeds `max_frame_bytes`, a message cannot fit the reassembly budget, or a lane has
    /// queue depth 0.
    pub fn new(cfg: MuxConfig) -> Result<Mux, MuxError> {
        let bad = |s| Err(MuxError::Api(ApiMisuse::InvalidConfig(s)));
        if cfg.chunk_bytes < CHUNK_HEADER_MAX + 16 {
            return bad("chunk_bytes leaves no room for data (minimum 54)");
        }
        if cfg.chunk_bytes > cfg.max_frame_bytes {
            return bad("chunk_bytes exceeds max_frame_bytes");
        }
        if cfg.max_message_bytes > cfg.max_reassembly_bytes {
            return bad("max_message_bytes exceeds max_reassembly_bytes");
        }
        if cfg.max_unacked_msgs == 0 || cfg.lanes.iter().flatten().any(|l| l.queue_depth == 0) {
            return bad("queue depths and max_unacked_msgs must be at least 1");
        }
        let mut rng = fastrand::Rng::with_seed(cfg.seed);
        let mut priorities = [0; 8];
        let lanes = std::array::from_fn(|i| {
            let c = cfg.lanes[i]?;
            let lane = Lane::ALL[i];
            priorities[i] = c.priority;
            Some(LaneState {
                lane,
                cfg: c,
                queue: LaneQueue::with_max_bytes(
                    c.queue_depth,
                    cfg.max_queue_bytes.unwrap_or(usize::MAX),
                ),
                tx: c.reliable.then(|| SendWindow::new(rng.u32(1..=u32::MAX))),
                unreliable_next_seq: 1,
                rx: if c.reliable {
                    Rx::Reliable(RecvLane::new(lane))
                } else {
                    Rx::Unreliable(UnreliableRecv::new(lane))
                },
            })
        });
        Ok(Mux {
            sched: Scheduler::new(cfg.scheduler, priorities),
            budget: Budget::new(cfg.max_reassembly_bytes),
            cfg,
            lanes,
            events: VecDeque::new(),
            conn: Conn::default(),
            now: 0,
            timers: [None; TIMERS],
            rng,
            stats: MuxStats::default(),
        })
    }

    // ---- getters ----

    /// The configuration.
    pub fn config(&self) -> &MuxConfig {
        &self.cfg
    }

    /// Whether a transport is up.
    pub fn is_connected(&self) -> bool {
        self.conn.connected
    }

    /// Whether the peer's resume for the current transport was processed (data flows).
    pub fn is_resumed(&self) -> bool {
        self.conn.connected && self.conn.peer_nonce != 0
    }

    /// Messages of `lane` not completely handed to the transport (≤ its queue depth).
    pub fn queued_len(&self, lane: Lane) -> usize {
        self.lane(lane).map_or(0, |l| l.queue.len())
    }

    /// Messages of reliable `lane` sent and not acknowledged.
    pub fn unacked_len(&self, lane: Lane) -> usize {
        self.lane(lane)
            .and_then(|l| l.tx.as_ref())
            .map_or(0, SendWindow::unacked)
    }

    /// Messages of `lane` dropped to make room, in total.
    pub fn dropped(&self, lane: Lane) -> u64 {
        self.lane(lane).map_or(0, |l| l.queue.dropped())
    }

    /// Messages of reliable `lane` sent again, in total.
    pub fn retransmitted(&self, lane: Lane) -> u64 {
        self.lane(lane)
            .and_then(|l| l.tx.as_ref())
            .map_or(0, SendWindow::retransmitted)
    }

    /// The highest sequence number of reliable `lane` the peer acknowledged cumulatively in
    /// this side's sending epoch (0: none yet).
    pub fn peer_acked(&self, lane: Lane) -> Option<u64> {
        self.lane(lane)
            .and_then(|l| l.tx.as_ref())
            .map(SendWindow::peer_acked)
    }

    /// This side's sending epoch of reliable `lane`.
    pub fn epoch(&self, lane: Lane) -> Option<u32> {
        self.lane(lane)
            .and_then(|l| l.tx.as_ref())
            .map(SendWindow::epoch)
    }

    /// The peer's sending epoch this side follows on reliable `lane` (0: none yet) and the
    /// highest sequence number delivered in it.
    pub fn receive_state(&self, lane: Lane) -> Option<(u32, u64)> {
        match &self.lane(lane)?.rx {
            Rx::Reliable(r) => Some((r.epoch(), r.delivered())),
            Rx::Unreliable(_) => None,
        }
    }

    /// Bytes held now for the peer's partial and out-of-order messages.
    pub fn reassembly_bytes(&self) -> usize {
        self.budget.used()
    }

    /// Nothing queued, unacknowledged, or owed to the peer (an ack or resume).
    pub fn is_idle(&self) -> bool {
        !self.conn.resume_due
            && self.lanes.iter().flatten().all(|l| {
                l.queue.is_empty()
                    && l.tx.as_ref().map_or(true, |tx| tx.unacked() == 0)
                    && match &l.rx {
                        Rx::Reliable(r) => !r.ack_pending(),
                        Rx::Unreliable(_) => true,
                    }
            })
    }

    /// Counters.
    pub fn stats(&self) -> MuxStats {
        MuxStats {
            starved_turns: self.sched.starved_turns(),
            ..self.stats
        }
    }

    // ---- mutators ----

    /// Queues `bytes` on `lane`; returns its id. Works with or without a transport
    /// (queued messages go when one is up).
    ///
    /// At the lane's `queueDepth` (messages not completely handed to the transport) or its
    /// [`MuxConfig::max_queue_bytes`]: an unreliable lane drops its oldest queued messages
    /// until the new one fits ([`MuxEvent::Dropped`]); a reliable
    /// lane refuses with [`MuxError::Backpressure`] and emits [`MuxEvent::Drain`] once room
    /// frees (or, with [`ReliableOverflow::ForgetOldest`], forgets as documented there).
    ///
    /// Errors: [`ApiMisuse::LaneNotConfigured`], [`ApiMisuse::MessageTooLarge`] (over
    /// `max_message_bytes`), [`MuxError::Backpressure`].
    pub fn send(&mut self, lane: Lane, bytes: Vec<u8>) -> Result<MsgId, MuxError> {
        let limit = self.cfg.max_message_bytes;
        let policy = self.cfg.reliable_overflow;
        let Some(l) = self.lanes[lane as usize - 1].as_mut() else {
            return Err(ApiMisuse::LaneNotConfigured(lane).into());
        };
        if bytes.len() > limit {
            return Err(ApiMisuse::MessageTooLarge {
                size: bytes.len(),
                limit,
            }
            .into());
        }
        let mut dropped = false;
        let seq = match l.tx.as_mut() {
            Some(tx) => {
                if l.queue.admit(bytes.len()) == Admission::Full {
                    if policy == ReliableOverflow::Backpressure {
                        return Err(MuxError::Backpressure {
                            lane,
                            queue_depth: l.queue.depth(),
                        });
                    }
                    let mut gone = 0;
                    while !l.queue.fits(bytes.len()) {
                        match l.queue.drop_oldest() {
                            Some(m) => gone = m.seq,
                            None => break,
                        }
                    }
                    tx.forget_through(gone);
                    l.queue.take_drain(); // forgetting never refuses: no drain owed
                    dropped = true;
                }
                tx.assign()
            }
            None => {
                while !l.queue.fits(bytes.len()) {
                    if l.queue.drop_oldest().is_none() {
                        break;
                    }
                    dropped = true;
                }
                l.unreliable_next_seq += 1;
                l.unreliable_next_seq - 1
            }
        };
        l.queue.push(Queued { seq, bytes });
        if dropped {
            self.note_dropped(lane);
        }
        self.refresh_timers();
        Ok(MsgId { lane, seq })
    }

    // ---- inputs ----

    /// A transport opened (the first, or a new one after [`Mux::handle_transport_lost`];
    /// a call while one is up replaces it). Starts the resume handshake; data flows once the
    /// peer's resume arrives.
    pub fn handle_transport_resumed(&mut self, now: Millis) {
        self.now = self.now.max(now.as_u64());
        if self.conn.connected {
            self.handle_transport_lost();
        }
        self.conn = Conn {
            connected: true,
            nonce: self.rng.u64(1..=u64::MAX),
            resume_due: true,
            writable: true,
            ..Conn::default()
        };
        self.refresh_timers();
    }

    /// The transport closed or failed. Queued and unacknowledged messages are kept (up to
    /// their bounds) for the next transport; partial messages from the peer are dropped.
    pub fn handle_transport_lost(&mut self) {
        if !self.conn.connected {
            return;
        }
        self.conn = Conn::default();
        for l in self.lanes.iter_mut().flatten() {
            l.queue.rewind_head();
            if let Some(tx) = l.tx.as_mut() {
                tx.transport_lost();
            }
            match &mut l.rx {
                Rx::Reliable(r) => r.transport_lost(&mut self.budget),
                Rx::Unreliable(u) => u.transport_lost(&mut self.budget),
            }
        }
        self.refresh_timers();
    }

    /// The transport's send buffer now holds `buffered` bytes (WebSocket or DataChannel
    /// `bufferedAmount`). Frames returned by [`Mux::poll_output`] are added to this until
    /// the next report.
    pub fn handle_transport_buffered(&mut self, buffered: usize) {
        self.conn.buffered = buffered;
        self.refresh_timers();
    }

    /// Changes what a full reliable lane does from now on (e.g. a relay switches to
    /// [`ReliableOverflow::ForgetOldest`] while the peer is offline, back on reconnect).
    pub fn set_reliable_overflow(&mut self, overflow: ReliableOverflow) {
        self.cfg.reliable_overflow = overflow;
    }

    /// Whether the transport accepts writes at all (e.g. `false` while a DataChannel is
    /// congested and the driver prefers an on/off signal). Default `true` once resumed.
    pub fn set_transport_writable(&mut self, writable: bool) {
        self.conn.writable = writable;
        self.refresh_timers();
    }

    /// One transport message from the peer. Problems become [`MuxEvent::Error`] events in
    /// order with the messages they follow.
    pub fn handle_input(&mut self, bytes: &[u8], now: Millis) {
        self.now = self.now.max(now.as_u64());
        if !self.conn.connected {
            return;
        }
        if let Err(e) = self.input(bytes) {
            self.events.push_back(MuxEvent::Error(e));
        }
        self.refresh_timers();
    }

    /// The deadline of [`MuxOutput::Timeout`] passed (calling it early is harmless).
    pub fn handle_timeout(&mut self, now: Millis) {
        self.now = self.now.max(now.as_u64());
        let rto = self.cfg.retransmit_timeout_ms;
        for l in self.lanes.iter_mut().flatten() {
            if let Some(tx) = l.tx.as_mut() {
                tx.on_timeout(self.now, rto);
            }
            if let Rx::Reliable(r) = &mut l.rx {
                r.on_timeout(self.now);
            }
        }
        if self.conn.resume_retry_at.is_some_and(|t| t <= self.now) {
            self.conn.resume_retry_at = None;
            self.conn.resume_due = true;
        }
        self.refresh_timers();
    }

    // ---- outputs ----

    /// The next output at `now`, in this order: every pending [`MuxOutput::Event`] (oldest
    /// first), then [`MuxOutput::Transmit`] frames (the resume frame, then an ack frame for
    /// all lanes, then chunks by the scheduler; none while the transport's buffer is full,
    /// see the module docs), then [`MuxOutput::Timeout`]. Drain until `Timeout`.
    #[must_use]
    pub fn poll_output(&mut self, now: Millis) -> MuxOutput {
        self.now = self.now.max(now.as_u64());
        if let Some(e) = self.next_event() {
            return MuxOutput::Event(e);
        }
        if let Some(f) = self.next_transmit() {
            return MuxOutput::Transmit(f);
        }
        MuxOutput::Timeout(Millis::from_deadline(self.next_deadline()))
    }

    /// The next event, oldest first.
    pub(crate) fn next_event(&mut self) -> Option<MuxEvent> {
        self.events.pop_front()
    }

    /// The next frame, counted as buffered in the transport, or `None` when there is nothing
    /// to send or the transport's buffer is full.
    pub(crate) fn next_transmit(&mut self) -> Option<Vec<u8>> {
        let out = self.transmit();
        if let Some(f) = &out {
            self.conn.buffered += f.len();
            self.stats.frames_sent += 1;
            self.stats.bytes_sent += f.len() as u64;
        }
        self.refresh_timers();
        out
    }

    /// When [`Mux::handle_timeout`] is due next (ms), if ever.
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        self.timers.iter().flatten().min().copied()
    }

    // ---- internals ----

    fn lane(&self, lane: Lane) -> Option<&LaneState> {
        self.lanes[lane as usize - 1].as_ref()
    }

    fn note_dropped(&mut self, lane: Lane) {
        if let Some(MuxEvent::Dropped { lane: l, count }) = self.events.back_mut() {
            if *l == lane {
                *count += 1;
                return;
            }
        }
        self.events.push_back(MuxEvent::Dropped { lane, count: 1 });
    }

    fn fits(&self, len: usize) -> bool {
        self.conn.writable
            && (self.conn.buffered == 0
                || self
                    .cfg
                    .transport_high_water_bytes
                    .map_or(true, |hw| self.conn.buffered + len <= hw))
    }

    fn input(&mut self, bytes: &[u8]) -> Result<(), MuxError> {
        if bytes.len() > self.cfg.max_frame_bytes {
            return Err(DecodeError::TooLarge {
                size: bytes.len(),
                limit: self.cfg.max_frame_bytes,
            }
            .into());
        }
        match Frame::decode(bytes)? {
            Frame::Chunk(h, data) => self.on_chunk(&h, data),
            Frame::Ack(acks) => {
                let rto = self.cfg.retransmit_timeout_ms;
                for a in &acks {
                    let l = self.lanes[a.lane as usize - 1]
                        .as_mut()
                        .ok_or(PeerMisbehaved::LaneNotConfigured(a.lane))?;
                    let tx = l.tx.as_mut().ok_or(PeerMisbehaved::ReliabilityMismatch {
                        lane: a.lane,
                        peer_reliable: true,
                    })?;
                    tx.on_ack(a.lane, a, self.now, rto)?;
                }
                Ok(())
            }
            Frame::Resume(r) => self.on_resume(&r),
        }
    }

    fn on_chunk(&mut self, h: &ChunkHeader, data: &[u8]) -> Result<(), MuxError> {
        let l = self.lanes[h.lane as usize - 1]
            .as_mut()
            .ok_or(PeerMisbehaved::LaneNotConfigured(h.lane))?;
        if h.reliable != l.cfg.reliable {
            return Err(PeerMisbehaved::ReliabilityMismatch {
                lane: h.lane,
                peer_reliable: h.reliable,
            }
            .into());
        }
        if h.total > self.cfg.max_message_bytes as u64 {
            return Err(PeerMisbehaved::MessageTooLarge {
                lane: h.lane,
                size: h.total,
                limit: self.cfg.max_message_bytes,
            }
            .into());
        }
        if self.conn.peer_nonce == 0 {
            if self.cfg.retransmit_timeout_ms.is_none() {
                // Ordered transport: the peer's resume always comes first (§11.6).
                return Err(PeerMisbehaved::ChunkBeforeResume {
                    lane: h.lane,
                    seq: h.seq,
                }
                .into());
            }
            return Ok(()); // lossy transport: the resume was lost; retransmission covers it
        }
        match &mut l.rx {
            Rx::Reliable(r) => {
                let mut ctx = RecvCtx {
                    budget: &mut self.budget,
                    events: &mut self.events,
                    window: self.cfg.max_unacked_msgs as u64,
                    ack: AckPolicy {
                        delay_ms: self.cfg.ack_delay_ms,
                        every_msgs: self.cfg.ack_every_msgs,
                        every_bytes: self.cfg.ack_every_bytes,
                    },
                    now: self.now,
                };
                r.on_chunk(h, data, &mut ctx)?;
            }
            Rx::Unreliable(u) => u.on_chunk(h, data, &mut self.budget, &mut self.events)?,
        }
        Ok(())
    }

    fn on_resume(&mut self, r: &Resume) -> Result<(), MuxError> {
        if r.nonce != self.conn.peer_nonce {
            let ack = AckPolicy {
                delay_ms: self.cfg.ack_delay_ms,
                every_msgs: self.cfg.ack_every_msgs,
                every_bytes: self.cfg.ack_every_bytes,
            };
            for s in &r.send {
                let l = self.lanes[s.lane as usize - 1]
                    .as_mut()
                    .ok_or(PeerMisbehaved::LaneNotConfigured(s.lane))?;
                let Rx::Reliable(rx) = &mut l.rx else {
                    return Err(PeerMisbehaved::ReliabilityMismatch {
                        lane: s.lane,
                        peer_reliable: true,
                    }
                    .into());
                };
                let mut ctx = RecvCtx {
                    budget: &mut self.budget,
                    events: &mut self.events,
                    window: self.cfg.max_unacked_msgs as u64,
                    ack,
                    now: self.now,
                };
                rx.on_resume(*s, &mut ctx)?;
            }
            for l in self.lanes.iter_mut().flatten() {
                if let Some(tx) = l.tx.as_mut() {
                    let peer = r.recv.iter().find(|p| p.lane == l.lane).copied();
                    tx.on_resume(l.lane, peer)?;
                }
                l.queue.rewind_head();
            }
            self.conn.peer_nonce = r.nonce;
            self.stats.resumes += 1;
        }
        if r.echo == self.conn.nonce {
            self.conn.resume_acked = true;
            self.conn.resume_retry_at = None;
        } else {
            self.conn.resume_due = true;
        }
        Ok(())
    }

    fn resume_frame(&self) -> Resume {
        let mut send = Vec::new();
        let mut recv = Vec::new();
        for l in self.lanes.iter().flatten() {
            if let Some(tx) = &l.tx {
                send.push(wire::SendState {
                    lane: l.lane,
                    epoch: tx.epoch(),
                    floor: tx.floor(l.first_queued()),
                    next: tx.next_seq(),
                });
            }
            if let Rx::Reliable(r) = &l.rx {
                recv.push(r.resume_state());
            }
        }
        Resume {
            nonce: self.conn.nonce,
            echo: self.conn.peer_nonce,
            send,
            recv,
        }
    }

    fn transmit(&mut self) -> Option<Vec<u8>> {
        if !self.conn.connected || !self.conn.writable {
            return None;
        }
        if self.conn.resume_due {
            let f = wire::encode_resume(&self.resume_frame());
            if !self.fits(f.len()) {
                return None;
            }
            self.conn.resume_due = false;
            if !self.conn.resume_acked {
                self.conn.resume_retry_at = Some(self.now + self.cfg.resume_retry_ms);
            }
            return Some(f);
        }
        if self.conn.peer_nonce == 0 {
            return None;
        }
        let now = self.now;
        let acks_due = self.lanes.iter().flatten().any(|l| match &l.rx {
            Rx::Reliable(r) => r.ack_due(now),
            Rx::Unreliable(_) => false,
        });
        if acks_due {
            // Upper bound of the frame: 2 + 8 × (1 + 10 + 1 + 16 × 20); acks are small and
            // must not wait behind data, so only the on/off state gates them.
            let acks: Vec<LaneAck> = self
                .lanes
                .iter_mut()
                .flatten()
                .filter_map(|l| match &mut l.rx {
                    Rx::Reliable(r) if r.ack_pending() => Some(r.take_ack()),
                    _ => None,
                })
                .collect();
            self.stats.acks_sent += 1;
            return Some(wire::encode_ack(&acks));
        }
        let ready = self.ready_mask();
        let i = self.sched.pick(ready)?;
        let len = self.next_chunk_len(i);
        if !self.fits(len) {
            return None;
        }
        self.sched.served(i);
        Some(self.take_chunk(i))
    }

    /// Bytes of messages whose first chunk went out and last did not (multi-chunk only).
    fn in_progress_bytes(&self) -> usize {
        let per = self.cfg.chunk_payload();
        self.lanes
            .iter()
            .flatten()
            .filter(|l| l.queue.head_started())
            .filter_map(|l| l.queue.head().map(|(m, _)| m.bytes.len()))
            .filter(|&n| n > per)
            .sum()
    }

    fn ready_mask(&self) -> [bool; 8] {
        let per = self.cfg.chunk_payload();
        let in_progress = self.in_progress_bytes();
        let start_ok = |len: usize| {
            len <= per || in_progress == 0 || in_progress + len <= self.cfg.max_reassembly_bytes / 2
        };
        std::array::from_fn(|i| {
            let Some(l) = &self.lanes[i] else {
                return false;
            };
            if l.tx.as_ref().is_some_and(|tx| tx.resend_head().is_some()) {
                return true;
            }
            let Some((m, sent)) = l.queue.head() else {
                return false;
            };
            sent > 0
                || (start_ok(m.bytes.len())
                    && l.tx.as_ref().map_or(true, |tx| {
                        tx.can_admit(
                            m.bytes.len(),
                            self.cfg.max_unacked_msgs,
                            self.cfg.max_unacked_bytes,
                        )
                    }))
        })
    }

    /// (message length, chunk index, seq) of lane `i`'s next chunk and whether it is a resend.
    fn next_chunk_of(&self, i: usize) -> (usize, u32, u64, bool) {
        let l = self.lanes[i].as_ref().expect("scheduled lane exists");
        if let Some((s, k)) = l.tx.as_ref().and_then(|tx| tx.resend_head()) {
            return (s.bytes.len(), k, s.seq, true);
        }
        let (m, k) = l.queue.head().expect("scheduled lane has a chunk");
        (m.bytes.len(), k, m.seq, false)
    }

    fn next_chunk_len(&self, i: usize) -> usize {
        let (total, k, _, _) = self.next_chunk_of(i);
        let per = self.cfg.chunk_payload();
        let start = k as usize * per;
        CHUNK_HEADER_MAX + total.saturating_sub(start).min(per)
    }

    fn take_chunk(&mut self, i: usize) -> Vec<u8> {
        let (total, k, seq, resend) = self.next_chunk_of(i);
        let per = self.cfg.chunk_payload();
        let rto = self.cfg.retransmit_timeout_ms;
        let now = self.now;
        let l = self.lanes[i].as_mut().expect("scheduled lane exists");
        let start = k as usize * per;
        let end = (start + per).min(total);
        let last = end == total;
        let h = ChunkHeader {
            lane: l.lane,
            reliable: l.cfg.reliable,
            last,
            seq,
            index: k,
            total: total as u64,
            floor: l
                .tx
                .as_ref()
                .and_then(|tx| tx.floor_signal(l.queue.first_seq())),
        };
        let mut out = Vec::with_capacity(h.encoded_len() + end - start);
        h.encode_into(&mut out);
        if resend {
            let tx = l.tx.as_mut().expect("resends are reliable");
            let (s, _) = tx.resend_head().expect("resend head exists");
            out.extend_from_slice(&s.bytes[start..end]);
            tx.resend_advance(last, now, rto);
        } else {
            let (m, _) = l.queue.head().expect("queue head exists");
            out.extend_from_slice(&m.bytes[start..end]);
            if let Some(done) = l.queue.advance(last) {
                if let Some(tx) = l.tx.as_mut() {
                    tx.on_sent(done.seq, done.bytes, now, rto);
                    if l.queue.take_drain() {
                        let lane = l.lane;
                        self.events.push_back(MuxEvent::Drain { lane });
                    }
                }
            }
        }
        out
    }

    fn refresh_timers(&mut self) {
        let mut t = [None; TIMERS];
        let mut ack: Option<u64> = None;
        let mut rto: Option<u64> = None;
        for l in self.lanes.iter().flatten() {
            if let Rx::Reliable(r) = &l.rx {
                ack = min_opt(ack, r.ack_deadline());
            }
            if let Some(tx) = &l.tx {
                rto = min_opt(rto, tx.rto_at());
            }
        }
        if self.conn.connected {
            t[Timer::Ack as usize] = ack;
            t[Timer::Resume as usize] = self.conn.resume_retry_at;
            if self.conn.buffered > 0
                && self.conn.peer_nonce != 0
                && self.ready_mask().iter().any(|&r| r)
            {
                t[Timer::TransportPoll as usize] = self.cfg.transport_poll_ms.map(|p| self.now + p);
            }
        }
        t[Timer::Retransmit as usize] = rto;
        self.timers = t;
    }
}

crate::core::drive::machine!(Mux, MuxOutput);

/// A summary (no message bytes): connection state and, per lane, queue, window and receiver.
impl std::fmt::Debug for Mux {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Mux");
        d.field("connected", &self.conn.connected)
            .field("resumed", &self.is_resumed())
            .field("resume_due", &self.conn.resume_due)
            .field("buffered", &self.conn.buffered)
            .field("reassembly_bytes", &self.budget.used());
        for l in self.lanes.iter().flatten() {
            let tx = l.tx.as_ref().map(|t| {
                format!(
                    "epoch {} next {} unacked {} peer_acked {} resend {} floor {}",
                    t.epoch(),
                    t.next_seq(),
                    t.unacked(),
                    t.peer_acked(),
                    t.resend_len(),
                    t.floor(l.first_queued())
                )
            });
            let rx = match &l.rx {
                Rx::Reliable(r) => format!(
                    "follows {} delivered {} ack_pending {} held {}",
                    r.epoch(),
                    r.delivered(),
                    r.ack_pending(),
                    r.held()
                ),
                Rx::Unreliable(u) => format!("lost {} held {}", u.lost(), u.held()),
            };
            d.field(
                l.lane.name(),
                &format_args!(
                    "queued {} (head started {}) | {} | {}",
                    l.queue.len(),
                    l.queue.head_started(),
                    tx.unwrap_or_default(),
                    rx
                ),
            );
        }
        d.finish()
    }
}

fn min_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

#[cfg(test)]
mod tests;
