//! Multiplexer benchmark (issue 3 "Benchmarks"), figures against baselines measured in the
//! same run:
//!
//! - **Head-of-line**: Control-lane latency p50/p99 while a 4 MiB Data-lane message is in
//!   flight over a simulated 10 Mbit/s, 20 ms transport (`tests/mux_harness/hol.rs`), with
//!   the multiplexer vs the FIFO a plain WebSocket app has (every message written whole to
//!   the socket when sent; today's `core::client`). Same transport model, same Control
//!   schedule. Target: p99 at least 20× lower, queueing bounded by one chunk's send time.
//!   Also the bulk transfer's completion time (the cost of chunking and scheduling).
//! - **CPU**: wall-clock throughput of one in-memory sender → receiver pair moving 64 MiB
//!   of 256 KiB Data messages (chunking, acks, reassembly), against today's v1 framing of the
//!   same messages (`core::frame`: one header, the payload copied into the frame, parsed and
//!   copied out), i.e. the cost of the multiplexer's bookkeeping over plain framing.
//!
//! Run with `cargo bench -p p3-lanes --bench mux` (or `npm run bench`). Merges its figures
//! into `bench-results.json` at the repository root as `{name, value, unit, baseline,
//! ratio}`, replacing the entries named `mux.*`.

#[path = "../tests/mux_harness/mod.rs"]
mod mux_harness;

use mux_harness::hol::{self, HolConfig, Mode};
use mux_harness::quantile;
use p3_lanes::core::drive::{drain, Millis};
use p3_lanes::core::frame::FrameHeader;
use p3_lanes::core::lane::{Encoding, Lane};
use p3_lanes::core::mux::{Mux, MuxConfig, MuxEvent, MuxOutput};
use serde_json::json;
use std::hint::black_box;
use std::time::{Duration, Instant};

mod support;
use support::write_results;

fn main() {
    let mut results = Vec::new();
    let mut rows: Vec<(String, f64, String, f64, String)> = Vec::new();

    // ---- head-of-line ----
    let cfg = HolConfig::standard(7);
    let chunk_ms = cfg.chunk_time_ms();
    let mux = hol::run(&cfg, Mode::Mux);
    let fifo = hol::run(&cfg, Mode::Fifo);
    let q = |v: &[f64], p| quantile(v, p);
    let figures = [
        (
            "hol.control_latency_p50",
            q(&mux.latency_ms, 0.5),
            q(&fifo.latency_ms, 0.5),
            "FIFO p50",
        ),
        (
            "hol.control_latency_p99",
            q(&mux.latency_ms, 0.99),
            q(&fifo.latency_ms, 0.99),
            "FIFO p99",
        ),
        (
            "hol.control_queueing_max",
            q(&mux.queueing_ms, 1.0),
            chunk_ms,
            "one 16 KiB chunk's send time",
        ),
        (
            "hol.data_transfer",
            mux.data_done_ms,
            fifo.data_done_ms,
            "FIFO",
        ),
    ];
    println!(
        "mux benchmark: head-of-line, {} Control messages (64 B, every ~10 ms) during a 4 MiB \
         Data message over 10 Mbit/s, 20 ms one way; ratios against baselines from this run",
        mux.controls
    );
    for (name, value, base, base_name) in figures {
        rows.push((
            name.into(),
            value,
            "ms".into(),
            base,
            format!("{base_name}: {base:.2} ms"),
        ));
    }

    // ---- CPU ----
    let (mux_time, v1_time, bytes) = cpu_throughput();
    let mbps = |d: Duration| bytes as f64 / 1e6 / d.as_secs_f64();
    rows.push((
        "cpu.throughput".into(),
        mbps(mux_time),
        "MB/s".into(),
        mbps(v1_time),
        format!("v1 framing: {:.0} MB/s", mbps(v1_time)),
    ));

    println!(
        "{:<28} {:>12} {:>6} {:>12} {:>9}  baseline",
        "figure", "value", "unit", "baseline", "ratio"
    );
    for (name, value, unit, base, base_text) in rows {
        let ratio = value / base;
        println!("{name:<28} {value:>12.2} {unit:>6} {base:>12.2} {ratio:>9.4}  {base_text}");
        results.push(json!({
            "name": format!("mux.{name}"),
            "value": value, "unit": unit,
            "baseline": base_text,
            "ratio": ratio,
        }));
    }
    let p99_gain = q(&fifo.latency_ms, 0.99) / q(&mux.latency_ms, 0.99);
    println!(
        "p99 Control latency {p99_gain:.0}× lower than FIFO (target ≥ 20×); worst queueing \
         {:.2} ms ≤ one chunk {chunk_ms:.2} ms: {}",
        q(&mux.queueing_ms, 1.0),
        q(&mux.queueing_ms, 1.0) <= chunk_ms + 0.01
    );
    write_results("mux.", results);
}

/// Moves 64 MiB of 256 KiB Data messages from one mux to another in memory; returns the
/// best of 3 wall-clock times, the best time to frame them with v1 frames, and the bytes.
fn cpu_throughput() -> (Duration, Duration, usize) {
    const MSG: usize = 256 << 10;
    const COUNT: usize = 256;
    let msg: Vec<u8> = (0..MSG).map(|i| (i % 251) as u8).collect();
    let mut best = Duration::MAX;
    for round in 0..3 {
        let mk = |s| {
            let mut c = MuxConfig::for_lanes(&[Lane::Control, Lane::Data], s);
            c.transport_high_water_bytes = None;
            let mut m = Mux::new(c).expect("valid config");
            m.handle_transport_resumed(Millis::ZERO);
            m
        };
        let (mut a, mut b) = (mk(round * 2 + 1), mk(round * 2 + 2));
        let start = Instant::now();
        let mut received = 0;
        let mut next = 0;
        while received < COUNT {
            while next < COUNT && a.queued_len(Lane::Data) < 64 {
                a.send(Lane::Data, msg.clone()).expect("accepted");
                next += 1;
            }
            let zero = Millis::ZERO;
            drain(&mut a, zero, |o| {
                if let MuxOutput::Transmit(f) = o {
                    b.handle_input(&f, zero);
                }
            });
            let mut from_b = |o: MuxOutput| match o {
                MuxOutput::Transmit(f) => a.handle_input(&f, zero),
                MuxOutput::Event(MuxEvent::Message { bytes, .. }) => {
                    black_box(&bytes);
                    received += 1;
                }
                _ => {}
            };
            drain(&mut b, zero, &mut from_b);
            b.handle_timeout(Millis::from_u64(u64::MAX / 2)); // flush delayed acks
            drain(&mut b, zero, &mut from_b);
        }
        best = best.min(start.elapsed());
    }
    let mut v1_best = Duration::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        for seq in 0..COUNT {
            let frame = FrameHeader::data(Lane::Data, Encoding::Msgpack, seq as u64, 1)
                .encode(black_box(&msg.clone()));
            let (h, payload) = FrameHeader::decode(&frame).expect("valid frame");
            black_box((h, payload.to_vec()));
        }
        v1_best = v1_best.min(start.elapsed());
    }
    (best, v1_best, MSG * COUNT)
}
