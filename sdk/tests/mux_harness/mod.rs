//! Virtual-clock harness for the lane multiplexer (STYLE.md: quinn's `Pair`, str0m's
//! `netem`): two [`Mux`] endpoints ("client" A and "server" B) joined by a seeded transport
//! model ([`link`]), applications on both sides sending on all 8 lanes, and faults:
//! partitions (each side notices the dead transport after its own delay, everything in
//! flight is lost, both reconnect when it heals) and restarts (one side loses all its state,
//! as a crashed and restarted server or a reloaded tab). Deterministic for a seed; shared by
//! `tests/mux_sim.rs` and `benches/mux.rs`. Times are µs inside the harness, ms for the mux.
//!
//! [`Sim::run`] returns a [`SimReport`] whose [`SimReport::check`] asserts the contract:
//! - reliable lanes: every message is delivered once, in order, or the receiver reported a
//!   [`Discontinuity`] that covers it; never a silent gap, never a duplicate within one
//!   receiver incarnation; after the final heal everything sent is delivered or covered;
//! - unreliable lanes: queues never exceed `queueDepth` (checked at every send), deliveries
//!   never go backwards or repeat, `Dropped` events add up to the drop counters;
//! - reassembly memory stays within its limit (checked after every input); no error events.
#![allow(dead_code)]

pub mod hol;
pub mod link;

use link::{Link, LinkModel};
use p3_lanes::core::drive::Millis;
use p3_lanes::core::lane::Lane;
use p3_lanes::core::mux::{
    Discontinuity, Mux, MuxConfig, MuxError, MuxEvent, MuxOutput, ReliableOverflow,
};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};

/// Faults injected during the run.
#[derive(Clone, Debug)]
pub struct Faults {
    /// Partitions during the run.
    pub partitions: u32,
    /// Partition length range, ms.
    pub partition_ms: (u64, u64),
    /// Each side notices a dead transport after up to this, ms (less than the shortest
    /// partition).
    pub detect_ms: u64,
    /// Probability that a partition comes with a restart of one side (A or B).
    pub restart: f64,
}

/// Messages per second and size range (bytes) per lane, index = lane id − 1.
#[derive(Clone, Debug)]
pub struct Workload {
    pub rate_per_s: [f64; 8],
    pub size: [(usize, usize); 8],
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            //          Control Messaging Voice Video Data Telemetry Sync Relay
            rate_per_s: [20.0, 30.0, 50.0, 10.0, 2.0, 10.0, 20.0, 5.0],
            size: [
                (20, 200),
                (50, 2_000),
                (100, 400),
                (1_000, 24_000),
                (1_000, 100_000),
                (50, 300),
                (50, 300),
                (100, 5_000),
            ],
        }
    }
}

/// One simulation.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    /// The same model in both directions.
    pub link: LinkModel,
    pub faults: Faults,
    pub workload: Workload,
    /// Applications send during this, ms; then the run continues until all is delivered.
    pub duration_ms: u64,
    /// Base configuration of both sides (seeds are derived per side and incarnation).
    pub mux: MuxConfig,
    /// Side B's policy for reliable lanes with a full queue.
    pub b_overflow: ReliableOverflow,
}

impl SimConfig {
    /// A WebSocket-like transport with partitions and restarts.
    pub fn websocket(seed: u64) -> SimConfig {
        let mut mux = MuxConfig::all_lanes(seed);
        mux.transport_poll_ms = None; // the harness reports the buffer on every completion
        SimConfig {
            seed,
            link: LinkModel::websocket(),
            faults: Faults {
                partitions: 3,
                partition_ms: (400, 2_500),
                detect_ms: 300,
                restart: 0.3,
            },
            workload: Workload::default(),
            duration_ms: 10_000,
            mux,
            b_overflow: ReliableOverflow::Backpressure,
        }
    }

    /// An unordered, lossy transport (retransmission timeout on) with partitions and
    /// restarts.
    pub fn lossy(seed: u64) -> SimConfig {
        let mut c = SimConfig::websocket(seed);
        c.link = LinkModel::lossy();
        c.mux.retransmit_timeout_ms = Some(250);
        c.mux.resume_retry_ms = 250;
        c
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Ev {
    AppSend { side: usize, lane: usize },
    LinkFree { side: usize, gen: u64 },
    Deliver { to: usize, conn: u64, id: usize },
    Timer { side: usize },
    PartitionStart { restart: Option<usize> },
    Detect { side: usize, restart: bool },
    PartitionEnd,
}

/// What a receiver logged on one lane.
#[derive(Clone, Debug, PartialEq)]
pub enum Rec {
    /// A message from sender incarnation `s_inc` with sequence number `seq`.
    Msg { r_inc: u32, s_inc: u32, seq: u64 },
    /// A discontinuity.
    Disc { r_inc: u32, d: Discontinuity },
}

struct Side {
    mux: Mux,
    inc: u32,
    connected: bool,
    /// Sizes of messages the app wants to send but the lane refused (backpressure).
    backlog: [VecDeque<usize>; 8],
    next_seq: [u64; 8],
    link: Link,
    timer_at: Option<u64>,
    /// `Dropped` events summed per lane for the current incarnation.
    dropped_events: [u64; 8],
}

/// What a run produced; [`SimReport::check`] asserts the contract.
#[derive(Debug, Default)]
pub struct SimReport {
    pub seed: u64,
    /// `sent[side][lane]`: (sender incarnation, seq) of every accepted message.
    pub sent: [[Vec<(u32, u64)>; 8]; 2],
    /// `epochs[side][lane]`: sender incarnation → its epoch on the lane.
    pub epochs: [[HashMap<u32, u32>; 8]; 2],
    /// `recv[side][lane]`: what side received from the other side on the lane.
    pub recv: [[Vec<Rec>; 8]; 2],
    pub errors: Vec<String>,
    pub refused: u64,
    pub dropped: u64,
    pub restarts: u32,
    pub partitions: u32,
    pub retransmitted: u64,
    pub max_reassembly_bytes: usize,
    pub settled_at_ms: u64,
    pub frames: u64,
}

const HARD_CAP_MS: u64 = 300_000;
const MAX_STEPS: u64 = 5_000_000;

/// The simulation.
pub struct Sim {
    cfg: SimConfig,
    now: u64,
    n: u64,
    heap: BinaryHeap<Reverse<(u64, u64, Ev)>>,
    in_flight: HashMap<usize, Vec<u8>>,
    next_id: usize,
    sides: [Side; 2],
    conn: u64,
    alive: bool,
    rng: fastrand::Rng,
    report: SimReport,
}

/// 0, 1, .., 255, 0, 1, .., 255: the filler pattern, compared by slices (fast in debug builds).
static PATTERN: [u8; 512] = {
    let mut p = [0u8; 512];
    let mut i = 0;
    while i < 512 {
        p[i] = i as u8;
        i += 1;
    }
    p
};

/// The filler of message `seq` from byte `from` on: byte `i` is `seq × 31 + i` (mod 256).
fn filler(seq: u64, from: usize, len: usize) -> impl Iterator<Item = &'static [u8]> {
    let start = (seq as u8).wrapping_mul(31) as usize;
    (0..len).step_by(256).map(move |k| {
        let off = (start + from + k) % 256;
        &PATTERN[off..off + (len - k).min(256)]
    })
}

/// A message: sender side, lane, sender incarnation, seq, then a checkable filler.
fn payload(side: usize, lane: usize, inc: u32, seq: u64, size: usize) -> Vec<u8> {
    let size = size.max(14);
    let mut p = Vec::with_capacity(size);
    p.push(side as u8);
    p.push(lane as u8);
    p.extend_from_slice(&inc.to_le_bytes());
    p.extend_from_slice(&seq.to_le_bytes());
    for part in filler(seq, 14, size - 14) {
        p.extend_from_slice(part);
    }
    p
}

/// The header of an intact message (`None` if any byte is wrong).
fn parse(p: &[u8]) -> Option<(usize, usize, u32, u64)> {
    if p.len() < 14 {
        return None;
    }
    let inc = u32::from_le_bytes(p[2..6].try_into().ok()?);
    let seq = u64::from_le_bytes(p[6..14].try_into().ok()?);
    let mut rest = &p[14..];
    for part in filler(seq, 14, rest.len()) {
        let (head, tail) = rest.split_at(part.len());
        if head != part {
            return None;
        }
        rest = tail;
    }
    Some((p[0] as usize, p[1] as usize, inc, seq))
}

impl Sim {
    pub fn new(cfg: SimConfig) -> Sim {
        let rng = fastrand::Rng::with_seed(cfg.seed);
        let mk = |side: usize, cfg: &SimConfig| {
            let mut m = cfg.mux.clone();
            m.seed = cfg
                .seed
                .wrapping_mul(0x9e37_79b9)
                .wrapping_add(side as u64 + 1);
            if side == 1 {
                m.reliable_overflow = cfg.b_overflow;
            }
            Side {
                mux: Mux::new(m).expect("valid config"),
                inc: 0,
                connected: false,
                backlog: Default::default(),
                next_seq: [1; 8],
                link: Link::new(cfg.link, cfg.seed ^ (0x11 << side)),
                timer_at: None,
                dropped_events: [0; 8],
            }
        };
        let sides = [mk(0, &cfg), mk(1, &cfg)];
        let mut sim = Sim {
            now: 0,
            n: 0,
            heap: BinaryHeap::new(),
            in_flight: HashMap::new(),
            next_id: 0,
            sides,
            conn: 0,
            alive: true,
            rng,
            report: SimReport {
                seed: cfg.seed,
                ..SimReport::default()
            },
            cfg,
        };
        for side in 0..2 {
            sim.record_epochs(side);
        }
        sim
    }

    fn at(&mut self, t: u64, ev: Ev) {
        self.n += 1;
        self.heap.push(Reverse((t, self.n, ev)));
    }

    fn ms(&self) -> u64 {
        self.now / 1000
    }

    fn record_epochs(&mut self, side: usize) {
        let s = &self.sides[side];
        for l in Lane::ALL {
            if let Some(e) = s.mux.epoch(l) {
                self.report.epochs[side][l as usize - 1].insert(s.inc, e);
            }
        }
    }

    fn schedule_send(&mut self, side: usize, lane: usize) {
        let rate = self.cfg.workload.rate_per_s[lane];
        if rate <= 0.0 {
            return;
        }
        let gap_ms = -(1.0 - self.rng.f64()).ln() / rate * 1000.0;
        let t = self.now + (gap_ms * 1000.0) as u64 + 1;
        if t < self.cfg.duration_ms * 1000 {
            self.at(t, Ev::AppSend { side, lane });
        }
    }

    /// Runs to the end (all delivered after the last heal) and returns the report.
    pub fn run(mut self) -> SimReport {
        for side in 0..2 {
            for lane in 0..8 {
                self.schedule_send(side, lane);
            }
        }
        self.schedule_partitions();
        for side in 0..2 {
            self.sides[side].connected = true;
            self.sides[side].mux.handle_transport_resumed(Millis::ZERO);
        }
        self.pump(0);
        self.pump(1);
        let mut steps = 0u64;
        let mut recent: VecDeque<Ev> = VecDeque::new();
        while let Some(Reverse((t, _, ev))) = self.heap.pop() {
            self.now = t;
            steps += 1;
            if recent.len() == 16 {
                recent.pop_front();
            }
            recent.push_back(ev);
            if steps > MAX_STEPS {
                self.report.errors.push(format!(
                    "livelock at {} ms: {MAX_STEPS} events, last {recent:?}",
                    self.ms()
                ));
                break;
            }
            if t > HARD_CAP_MS * 1000 {
                self.report
                    .errors
                    .push("did not settle before the hard cap".into());
                break;
            }
            self.step(ev);
            if t >= self.cfg.duration_ms * 1000 && self.settled() {
                self.report.settled_at_ms = self.ms();
                break;
            }
        }
        if self.report.settled_at_ms == 0 {
            self.report.errors.push(format!(
                "did not settle: a {:?}, b {:?}, backlog {:?} / {:?}",
                self.sides[0].mux,
                self.sides[1].mux,
                self.sides[0]
                    .backlog
                    .iter()
                    .map(VecDeque::len)
                    .collect::<Vec<_>>(),
                self.sides[1]
                    .backlog
                    .iter()
                    .map(VecDeque::len)
                    .collect::<Vec<_>>(),
            ));
        }
        for side in 0..2 {
            self.close_incarnation(side);
            self.report.frames += self.sides[side].mux.stats().frames_sent;
        }
        self.report
    }

    fn settled(&self) -> bool {
        self.alive
            && self.in_flight.is_empty()
            && self.sides.iter().all(|s| {
                s.connected
                    && s.mux.is_resumed()
                    && s.mux.is_idle()
                    && s.link.is_empty()
                    && s.backlog.iter().all(VecDeque::is_empty)
            })
    }

    fn schedule_partitions(&mut self) {
        let f = self.cfg.faults.clone();
        let n = f.partitions as u64;
        if n == 0 {
            return;
        }
        // One partition in each of n equal slots of the run, starting in the slot's first
        // half, so partitions never overlap and the link heals in between.
        let slot = self.cfg.duration_ms / n;
        for k in 0..n {
            let start = k * slot + slot / 10 + self.rng.u64(0..slot / 3);
            let restart = (self.rng.f64() < f.restart).then(|| self.rng.usize(0..2));
            self.at(start * 1000, Ev::PartitionStart { restart });
        }
    }

    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::AppSend { side, lane } => {
                let (lo, hi) = self.cfg.workload.size[lane];
                let size = self.rng.usize(lo..=hi);
                self.sides[side].backlog[lane].push_back(size);
                self.flush(side, lane);
                self.pump(side);
                self.schedule_send(side, lane);
            }
            Ev::LinkFree { side, gen } => {
                if self.sides[side].link.gen != gen {
                    return;
                }
                let (delivery, next) = self.sides[side].link.on_free(self.now);
                if let Some(t) = next {
                    self.at(t, Ev::LinkFree { side, gen });
                }
                if let Some((t, frame)) = delivery {
                    if self.alive && self.sides[side].connected {
                        let id = self.next_id;
                        self.next_id += 1;
                        self.in_flight.insert(id, frame);
                        let conn = self.conn;
                        self.at(
                            t,
                            Ev::Deliver {
                                to: 1 - side,
                                conn,
                                id,
                            },
                        );
                    }
                }
                self.pump(side);
            }
            Ev::Deliver { to, conn, id } => {
                let frame = self.in_flight.remove(&id).expect("in flight");
                if conn != self.conn || !self.alive || !self.sides[to].connected {
                    return;
                }
                let now = self.ms();
                self.sides[to]
                    .mux
                    .handle_input(&frame, Millis::from_u64(now));
                let held = self.sides[to].mux.reassembly_bytes();
                self.report.max_reassembly_bytes = self.report.max_reassembly_bytes.max(held);
                if held > self.cfg.mux.max_reassembly_bytes {
                    self.report
                        .errors
                        .push(format!("reassembly holds {held} bytes"));
                }
                self.pump(to);
            }
            Ev::Timer { side } => {
                if self.sides[side].timer_at != Some(self.now) {
                    return;
                }
                self.sides[side].timer_at = None;
                let now = self.ms();
                self.sides[side].mux.handle_timeout(Millis::from_u64(now));
                self.pump(side);
            }
            Ev::PartitionStart { restart } => {
                if !self.alive {
                    return;
                }
                // Restart only once both sides know each other's current epochs (the last
                // heal completed its resume), so the one that survives can report it; with
                // two deaths in a row and no resume between, nobody who knew is left.
                let restart = restart.filter(|_| self.sides.iter().all(|s| s.mux.is_resumed()));
                self.alive = false;
                self.report.partitions += 1;
                let f = self.cfg.faults.clone();
                for side in 0..2 {
                    let d = self.rng.u64(0..=f.detect_ms);
                    let restart = restart == Some(side);
                    self.at(self.now + d * 1000, Ev::Detect { side, restart });
                }
                let len = self.rng.u64(f.partition_ms.0..=f.partition_ms.1);
                let len = len.max(f.detect_ms + 1);
                self.at(self.now + len * 1000, Ev::PartitionEnd);
            }
            Ev::Detect { side, restart } => {
                let s = &mut self.sides[side];
                s.connected = false;
                s.mux.handle_transport_lost();
                s.link.clear();
                if restart {
                    self.restart(side);
                }
                self.pump(side);
            }
            Ev::PartitionEnd => {
                self.alive = true;
                self.conn += 1;
                let now = self.ms();
                for side in 0..2 {
                    let s = &mut self.sides[side];
                    s.connected = true;
                    s.mux.handle_transport_resumed(Millis::from_u64(now));
                }
                self.pump(0);
                self.pump(1);
            }
        }
    }

    /// Side loses all state: a new mux (new epochs), a new app incarnation.
    fn restart(&mut self, side: usize) {
        self.close_incarnation(side);
        self.report.restarts += 1;
        let mut m = self.cfg.mux.clone();
        let s = &mut self.sides[side];
        s.inc += 1;
        m.seed = self
            .cfg
            .seed
            .wrapping_mul(0x9e37_79b9)
            .wrapping_add(side as u64 + 1 + 16 * u64::from(s.inc));
        if side == 1 {
            m.reliable_overflow = self.cfg.b_overflow;
        }
        s.mux = Mux::new(m).expect("valid config");
        s.backlog = Default::default();
        s.next_seq = [1; 8];
        s.timer_at = None;
        s.dropped_events = [0; 8];
        self.record_epochs(side);
    }

    /// Compares the `Dropped` events of the side's current incarnation with its counters.
    fn close_incarnation(&mut self, side: usize) {
        let s = &self.sides[side];
        for l in Lane::ALL {
            let i = l as usize - 1;
            let counted = s.mux.dropped(l);
            self.report.dropped += counted;
            self.report.retransmitted += s.mux.retransmitted(l);
            if counted != s.dropped_events[i] {
                self.report.errors.push(format!(
                    "side {side} lane {l}: {} dropped, {} in events",
                    counted, s.dropped_events[i]
                ));
            }
        }
    }

    /// Offers the side's backlog of `lane` to its mux until it refuses.
    fn flush(&mut self, side: usize, lane: usize) {
        let l = Lane::ALL[lane];
        let s = &mut self.sides[side];
        while let Some(&size) = s.backlog[lane].front() {
            let seq = s.next_seq[lane];
            let p = payload(side, lane, s.inc, seq, size);
            match s.mux.send(l, p) {
                Ok(id) => {
                    if id.seq != seq {
                        self.report.errors.push(format!(
                            "side {side} lane {l}: got seq {}, expected {seq}",
                            id.seq
                        ));
                    }
                    s.backlog[lane].pop_front();
                    s.next_seq[lane] += 1;
                    self.report.sent[side][lane].push((s.inc, seq));
                    let depth = s.mux.config().lanes[lane].expect("configured").queue_depth;
                    if s.mux.queued_len(l) > depth {
                        self.report.errors.push(format!(
                            "side {side} lane {l}: {} queued, depth {depth}",
                            s.mux.queued_len(l)
                        ));
                    }
                }
                Err(MuxError::Backpressure { .. }) => {
                    self.report.refused += 1;
                    break;
                }
                Err(e) => {
                    self.report.errors.push(format!("send: {e}"));
                    s.backlog[lane].pop_front();
                }
            }
        }
    }

    /// Drains events and frames of one side, then reschedules its timer.
    fn pump(&mut self, side: usize) {
        let now = Millis::from_u64(self.ms());
        let deadline = loop {
            let mut any = false;
            if self.sides[side].connected {
                let s = &mut self.sides[side];
                s.mux.handle_transport_buffered(s.link.buffered);
            }
            let deadline = loop {
                match self.sides[side].mux.poll_output(now) {
                    MuxOutput::Event(ev) => {
                        any = true;
                        self.on_event(side, ev);
                    }
                    MuxOutput::Transmit(f) => {
                        any = true;
                        let s = &mut self.sides[side];
                        let gen = s.link.gen;
                        if let Some(t) = s.link.push(f, self.now) {
                            self.n += 1;
                            self.heap
                                .push(Reverse((t, self.n, Ev::LinkFree { side, gen })));
                        }
                    }
                    MuxOutput::Timeout(t) => break t,
                }
            };
            if !any {
                break deadline;
            }
        };
        if let Some(t) = deadline.deadline() {
            let t = (t.as_u64() * 1000).max(self.now);
            let s = &mut self.sides[side];
            if s.timer_at != Some(t) {
                s.timer_at = Some(t);
                self.at(t, Ev::Timer { side });
            }
        }
    }

    fn on_event(&mut self, side: usize, ev: MuxEvent) {
        let r_inc = self.sides[side].inc;
        match ev {
            MuxEvent::Message { lane, seq, bytes } => {
                let i = lane as usize - 1;
                match parse(&bytes) {
                    Some((from, l, s_inc, s)) if from == 1 - side && l == i && s == seq => {
                        self.report.recv[side][i].push(Rec::Msg { r_inc, s_inc, seq });
                    }
                    _ => self
                        .report
                        .errors
                        .push(format!("side {side} lane {lane}: corrupt message {seq}")),
                }
            }
            MuxEvent::Discontinuity(d) => {
                self.report.recv[side][d.lane as usize - 1].push(Rec::Disc { r_inc, d });
            }
            MuxEvent::Drain { lane } => self.flush(side, lane as usize - 1),
            MuxEvent::Dropped { lane, count } => {
                self.sides[side].dropped_events[lane as usize - 1] += count;
            }
            MuxEvent::Error(e) => self.report.errors.push(format!("side {side}: {e}")),
            other => self.report.errors.push(format!("unexpected {other:?}")),
        }
    }
}

impl SimReport {
    /// Asserts the contract (module docs); the error names the seed, side and lane.
    pub fn check(&self) -> Result<(), String> {
        let fail = |m: String| Err(format!("seed {}: {m}", self.seed));
        if let Some(e) = self.errors.first() {
            return fail(format!("{} errors, first: {e}", self.errors.len()));
        }
        for rx in 0..2 {
            let tx = 1 - rx;
            for lane in Lane::ALL {
                let i = lane as usize - 1;
                let r = if lane.spec().reliable {
                    self.check_reliable(tx, rx, i)
                } else {
                    self.check_unreliable(rx, i)
                };
                if let Err(m) = r {
                    return fail(format!("{} → {} lane {lane}: {m}", tx, rx));
                }
            }
        }
        Ok(())
    }

    fn check_reliable(&self, tx: usize, rx: usize, i: usize) -> Result<(), String> {
        let epoch_of = |inc: u32| self.epochs[tx][i][&inc];
        let mut delivered: HashSet<(u32, u64)> = HashSet::new();
        let mut discs: Vec<Discontinuity> = Vec::new();
        let mut cur_inc = u32::MAX;
        let mut seen: HashSet<(u32, u64)> = HashSet::new();
        let mut expect: Option<(u32, u64)> = None; // (sender epoch, seq)
        for rec in &self.recv[rx][i] {
            let inc = match rec {
                Rec::Msg { r_inc, .. } | Rec::Disc { r_inc, .. } => *r_inc,
            };
            if inc != cur_inc {
                cur_inc = inc;
                seen.clear();
                expect = None;
            }
            match rec {
                Rec::Disc { d, .. } => {
                    if let Some((e, s)) = expect {
                        if (d.expected_epoch, d.expected_seq) != (e, s) {
                            return Err(format!(
                                "discontinuity {d:?} does not start where delivery stood ({e}, {s})"
                            ));
                        }
                    }
                    discs.push(*d);
                    expect = Some((d.epoch, d.seq));
                }
                Rec::Msg { s_inc, seq, .. } => {
                    let e = epoch_of(*s_inc);
                    if !seen.insert((*s_inc, *seq)) {
                        return Err(format!("duplicate of ({s_inc}, {seq})"));
                    }
                    match expect {
                        Some(x) if x != (e, *seq) => {
                            return Err(format!(
                            "silent gap: expected {x:?}, got ({e}, {seq}) from incarnation {s_inc}"
                        ))
                        }
                        Some(_) => {}
                        None => {
                            // A receiver with no state starts at the stream's beginning, or
                            // reported where it joined (JoinedMidStream) before.
                            if *seq != 1 {
                                return Err(format!(
                                    "fresh receiver starts at ({s_inc}, {seq}) without a report"
                                ));
                            }
                        }
                    }
                    delivered.insert((*s_inc, *seq));
                    expect = Some((e, seq + 1));
                }
            }
        }
        // Completeness: every accepted message was delivered or is covered by a report.
        for &(s_inc, seq) in &self.sent[tx][i] {
            if delivered.contains(&(s_inc, seq)) {
                continue;
            }
            let e = epoch_of(s_inc);
            let covered = discs.iter().any(|d| covers(d, e, seq));
            if !covered {
                return Err(format!(
                    "({s_inc}, {seq}) was accepted but neither delivered nor reported \
                     ({} sent, {} delivered, {} discontinuities)",
                    self.sent[tx][i].len(),
                    delivered.len(),
                    discs.len()
                ));
            }
        }
        Ok(())
    }

    fn check_unreliable(&self, rx: usize, i: usize) -> Result<(), String> {
        let mut last: HashMap<(u32, u32), u64> = HashMap::new();
        for rec in &self.recv[rx][i] {
            let Rec::Msg { r_inc, s_inc, seq } = rec else {
                return Err("discontinuity on an unreliable lane".into());
            };
            if let Some(&prev) = last.get(&(*r_inc, *s_inc)) {
                if *seq <= prev {
                    return Err(format!("went back from {prev} to {seq}"));
                }
            }
            last.insert((*r_inc, *s_inc), *seq);
        }
        Ok(())
    }

    /// Messages accepted on reliable lanes (both directions).
    pub fn reliable_sent(&self) -> usize {
        (0..2)
            .flat_map(|s| Lane::ALL.iter().map(move |l| (s, *l)))
            .filter(|(_, l)| l.spec().reliable)
            .map(|(s, l)| self.sent[s][l as usize - 1].len())
            .sum()
    }

    /// Discontinuities reported (both directions).
    pub fn discontinuities(&self) -> usize {
        self.recv
            .iter()
            .flatten()
            .flatten()
            .filter(|r| matches!(r, Rec::Disc { .. }))
            .count()
    }
}

/// Whether discontinuity `d` reports message `seq` of epoch `e` as lost: it was lost from the
/// epoch the receiver followed (at or after where it stood), or it precedes where delivery
/// continued in a newly adopted epoch.
fn covers(d: &Discontinuity, e: u32, seq: u64) -> bool {
    if d.expected_epoch == e {
        d.expected_seq <= seq && (d.epoch != e || seq < d.seq)
    } else {
        d.epoch == e && seq < d.seq
    }
}

/// The `q` quantile (nearest rank) of `v`.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let k = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1;
    s[k]
}
