//! Head-of-line scenario (issue 3 "Benchmarks"): side A starts one large Data-lane message,
//! then sends small Control-lane messages at a steady pace while the transfer is in flight;
//! side B records when each Control message arrives. The same transport model and the same
//! Control schedule run twice:
//! - [`Mode::Mux`]: both sides are [`Mux`] endpoints (priority scheduling, 16 KiB chunks,
//!   writes held to the transport's high-water mark);
//! - [`Mode::Fifo`]: the baseline a plain WebSocket app (and today's `core::client`) has:
//!   every message is written whole to the transport the moment it is sent.
//!
//! Latency = arrival − send. Queueing delay = latency − propagation − the Control frame's own
//! serialization time: the time it spent behind other bytes.

use super::link::{Link, LinkModel};
use p3_lanes::core::drive::Millis;
use p3_lanes::core::lane::Lane;
use p3_lanes::core::mux::{Mux, MuxConfig, MuxEvent, MuxOutput};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// Which sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The multiplexer.
    Mux,
    /// Whole messages written in send order.
    Fifo,
}

/// Scenario parameters.
#[derive(Clone, Debug)]
pub struct HolConfig {
    pub link: LinkModel,
    /// Size of the Data-lane message, bytes.
    pub data_bytes: usize,
    /// Control messages are sent every this many ms (± a quarter, seeded).
    pub control_every_ms: f64,
    /// Size of each Control message, bytes.
    pub control_bytes: usize,
    pub seed: u64,
}

impl HolConfig {
    /// 4 MiB over 10 Mbit/s (about 3.4 s), 20 ms one way, a 64-byte Control message every
    /// 10 ms.
    pub fn standard(seed: u64) -> HolConfig {
        HolConfig {
            link: LinkModel {
                bandwidth_bytes_per_ms: 1250.0,
                latency_ms: 20.0,
                jitter_ms: 0.0,
                loss: 0.0,
                ordered: true,
            },
            data_bytes: 4 << 20,
            control_every_ms: 10.0,
            control_bytes: 64,
            seed,
        }
    }

    /// Serialization time of one full 16 KiB chunk frame, ms.
    pub fn chunk_time_ms(&self) -> f64 {
        p3_lanes::core::mux::DEFAULT_CHUNK_BYTES as f64 / self.link.bandwidth_bytes_per_ms
    }
}

/// What one run measured.
#[derive(Clone, Debug, Default)]
pub struct HolReport {
    /// Control latencies, ms, in send order.
    pub latency_ms: Vec<f64>,
    /// Control queueing delays, ms.
    pub queueing_ms: Vec<f64>,
    /// When the Data message arrived, ms after it was sent.
    pub data_done_ms: f64,
    /// Control messages sent.
    pub controls: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    SendData,
    SendControl(usize),
    LinkFree(usize),
    Deliver(usize, usize),
    Timer(usize),
}

const DATA_AT_US: u64 = 100_000;

struct Run {
    cfg: HolConfig,
    mode: Mode,
    now: u64,
    n: u64,
    heap: BinaryHeap<Reverse<(u64, u64, Ev)>>,
    links: [Link; 2],
    muxes: Vec<Mux>,
    timer_at: [Option<u64>; 2],
    frames: HashMap<usize, Vec<u8>>,
    next_id: usize,
    sent_at: Vec<u64>,
    /// Size of the frame B handled last (it completed any message delivered from it).
    last_frame_len: usize,
    report: HolReport,
}

/// Runs the scenario once in `mode`.
pub fn run(cfg: &HolConfig, mode: Mode) -> HolReport {
    let mut r = Run {
        cfg: cfg.clone(),
        mode,
        now: 0,
        n: 0,
        heap: BinaryHeap::new(),
        links: [Link::new(cfg.link, 1), Link::new(cfg.link, 2)],
        muxes: Vec::new(),
        timer_at: [None; 2],
        frames: HashMap::new(),
        next_id: 0,
        sent_at: Vec::new(),
        last_frame_len: 0,
        report: HolReport::default(),
    };
    if mode == Mode::Mux {
        for side in 0..2 {
            let mut m = MuxConfig::for_lanes(&[Lane::Control, Lane::Data], cfg.seed + side);
            m.transport_poll_ms = None;
            let mut mux = Mux::new(m).expect("valid config");
            mux.handle_transport_resumed(Millis::ZERO);
            r.muxes.push(mux);
        }
    }
    // The same Control schedule in both modes: from 50 ms after the Data message starts
    // until 95 % of its serialization time.
    let data_us = cfg.link.serialize_us(cfg.data_bytes);
    let mut rng = fastrand::Rng::with_seed(cfg.seed);
    let mut t = DATA_AT_US as f64 + 50_000.0;
    while t < (DATA_AT_US + data_us * 95 / 100) as f64 {
        let k = r.sent_at.len();
        r.sent_at.push(t as u64);
        r.at(t as u64, Ev::SendControl(k));
        t += cfg.control_every_ms * 1000.0 * (0.75 + 0.5 * rng.f64());
    }
    r.report.controls = r.sent_at.len();
    r.at(DATA_AT_US, Ev::SendData);
    r.pump(0);
    r.pump(1);
    while let Some(Reverse((t, _, ev))) = r.heap.pop() {
        r.now = t;
        r.step(ev);
        if r.report.data_done_ms > 0.0 && r.report.latency_ms.len() == r.report.controls {
            break;
        }
    }
    r.report
}

impl Run {
    fn at(&mut self, t: u64, ev: Ev) {
        self.n += 1;
        self.heap.push(Reverse((t, self.n, ev)));
    }

    fn payload(&self, tag: u8, k: usize, size: usize) -> Vec<u8> {
        let mut p = vec![0u8; size.max(9)];
        p[0] = tag;
        p[1..9].copy_from_slice(&(k as u64).to_le_bytes());
        p
    }

    fn write(&mut self, side: usize, frame: Vec<u8>) {
        if let Some(t) = self.links[side].push(frame, self.now) {
            self.at(t, Ev::LinkFree(side));
        }
    }

    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::SendData => {
                let p = self.payload(b'D', 0, self.cfg.data_bytes);
                self.send(Lane::Data, p);
            }
            Ev::SendControl(k) => {
                let p = self.payload(b'C', k, self.cfg.control_bytes);
                self.send(Lane::Control, p);
            }
            Ev::LinkFree(side) => {
                let (delivery, next) = self.links[side].on_free(self.now);
                if let Some(t) = next {
                    self.at(t, Ev::LinkFree(side));
                }
                if let Some((t, f)) = delivery {
                    let id = self.next_id;
                    self.next_id += 1;
                    self.frames.insert(id, f);
                    self.at(t, Ev::Deliver(1 - side, id));
                }
                self.pump(side);
            }
            Ev::Deliver(to, id) => {
                let f = self.frames.remove(&id).expect("in flight");
                match self.mode {
                    Mode::Fifo => self.arrived(&f[1..], f.len()),
                    Mode::Mux => {
                        let now = self.now / 1000;
                        self.last_frame_len = f.len();
                        self.muxes[to].handle_input(&f, Millis::from_u64(now));
                        self.pump(to);
                    }
                }
            }
            Ev::Timer(side) => {
                if self.timer_at[side] == Some(self.now) {
                    self.timer_at[side] = None;
                    let now = self.now / 1000;
                    self.muxes[side].handle_timeout(Millis::from_u64(now));
                    self.pump(side);
                }
            }
        }
    }

    fn send(&mut self, lane: Lane, p: Vec<u8>) {
        match self.mode {
            Mode::Fifo => {
                let mut f = vec![lane.id()];
                f.extend(p);
                self.write(0, f);
            }
            Mode::Mux => {
                self.muxes[0].send(lane, p).expect("accepted");
                self.pump(0);
            }
        }
    }

    /// A message arrived at B; `frame_len` is the size of the frame that completed it.
    fn arrived(&mut self, msg: &[u8], frame_len: usize) {
        let k = u64::from_le_bytes(msg[1..9].try_into().expect("8 bytes")) as usize;
        let now_ms = self.now as f64 / 1000.0;
        match msg[0] {
            b'D' => self.report.data_done_ms = now_ms - DATA_AT_US as f64 / 1000.0,
            b'C' => {
                let latency = now_ms - self.sent_at[k] as f64 / 1000.0;
                let own = self.cfg.link.serialize_us(frame_len) as f64 / 1000.0;
                self.report.latency_ms.push(latency);
                self.report
                    .queueing_ms
                    .push(latency - self.cfg.link.latency_ms - own);
            }
            _ => panic!("unknown message"),
        }
    }

    fn pump(&mut self, side: usize) {
        if self.mode == Mode::Fifo {
            return;
        }
        let now = Millis::from_u64(self.now / 1000);
        let deadline = loop {
            let mut any = false;
            let buffered = self.links[side].buffered;
            self.muxes[side].handle_transport_buffered(buffered);
            let deadline = loop {
                match self.muxes[side].poll_output(now) {
                    MuxOutput::Event(MuxEvent::Message { bytes, .. }) if side == 1 => {
                        any = true;
                        let len = self.last_frame_len;
                        self.arrived(&bytes, len)
                    }
                    MuxOutput::Event(MuxEvent::Message { .. }) => any = true,
                    MuxOutput::Event(other) => panic!("unexpected {other:?}"),
                    MuxOutput::Transmit(f) => {
                        any = true;
                        self.write(side, f);
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
            if self.timer_at[side] != Some(t) {
                self.timer_at[side] = Some(t);
                self.at(t, Ev::Timer(side));
            }
        }
    }
}
