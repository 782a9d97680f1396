//! The lane multiplexer in the virtual-clock harness (`mux_harness`): two endpoints, all 8
//! lanes busy in both directions, partitions (each side notices on its own), restarts of
//! either side, over a WebSocket-like transport and over a lossy, reordering one; hundreds of
//! seeds. Each run asserts the delivery contract ([`SimReport::check`]): every reliable message
//! is delivered once and in order or covered by a reported discontinuity, unreliable queues
//! stay within `queueDepth`, reassembly memory within its limit. Run with `--nocapture` for
//! the figures.

mod mux_harness;

use mux_harness::hol::{self, HolConfig, Mode};
use mux_harness::{quantile, Sim, SimConfig, SimReport};
use p3_lanes::core::lane::Lane;
use p3_lanes::core::mux::{LaneConfig, ReliableOverflow};

const SEEDS: u64 = 200;

/// `MUX_SIM_SEEDS` overrides the seed count (e.g. 5000 for a soak run).
fn seed_count(default: u64) -> u64 {
    std::env::var("MUX_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn run_all(name: &str, seeds: u64, cfg: impl Fn(u64) -> SimConfig) -> Vec<SimReport> {
    let seeds = seed_count(seeds);
    let verbose = std::env::var("MUX_SIM_VERBOSE").is_ok();
    let reports: Vec<SimReport> = (0..seeds)
        .map(|s| {
            let t = std::time::Instant::now();
            let r = Sim::new(cfg(s)).run();
            if verbose {
                eprintln!(
                    "{name} seed {s}: {:?}, settled at {} ms",
                    t.elapsed(),
                    r.settled_at_ms
                );
            }
            r
        })
        .collect();
    let failures: Vec<String> = reports
        .iter()
        .filter_map(|r| r.check().err())
        .take(5)
        .collect();
    let sum = |f: fn(&SimReport) -> u64| reports.iter().map(f).sum::<u64>();
    eprintln!(
        "{name}: {seeds} seeds, {} reliable messages, {} partitions, {} restarts, \
         {} discontinuities reported, {} retransmitted, {} refused (backpressure), \
         {} dropped (unreliable), max reassembly {} bytes, {} frames",
        sum(|r| r.reliable_sent() as u64),
        sum(|r| u64::from(r.partitions)),
        sum(|r| u64::from(r.restarts)),
        sum(|r| r.discontinuities() as u64),
        sum(|r| r.retransmitted),
        sum(|r| r.refused),
        sum(|r| r.dropped),
        reports
            .iter()
            .map(|r| r.max_reassembly_bytes)
            .max()
            .unwrap_or(0),
        sum(|r| r.frames),
    );
    assert!(
        failures.is_empty(),
        "{} of {seeds} seeds failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    reports
}

#[test]
fn mux_websocket_transport_with_partitions_and_restarts() {
    let r = run_all("websocket", SEEDS, SimConfig::websocket);
    assert!(r.iter().map(|r| r.restarts).sum::<u32>() > 0);
    assert!(r.iter().map(|r| r.retransmitted).sum::<u64>() > 0);
}

#[test]
fn mux_lossy_reordering_transport_with_partitions_and_restarts() {
    let r = run_all("lossy", SEEDS, SimConfig::lossy);
    assert!(r.iter().map(|r| r.retransmitted).sum::<u64>() > 0);
}

/// The server side forgets (bounded history) instead of refusing while the client is away:
/// every forgotten message the client misses is reported as a discontinuity.
#[test]
fn mux_forgetting_sender_reports_what_the_receiver_missed() {
    let r = run_all("forgetting", SEEDS / 2, |seed| {
        let mut c = SimConfig::websocket(seed);
        c.b_overflow = ReliableOverflow::ForgetOldest;
        c.faults.partition_ms = (2_000, 4_000);
        c.faults.restart = 0.2;
        for l in Lane::ALL.into_iter().filter(|l| l.spec().reliable) {
            c.mux.lanes[l as usize - 1] = Some(LaneConfig {
                queue_depth: 16,
                ..LaneConfig::from(l.spec())
            });
        }
        c
    });
    let history_lost = r
        .iter()
        .flat_map(|r| r.recv[0].iter().flatten())
        .filter(|rec| {
            matches!(rec, mux_harness::Rec::Disc { d, .. }
                if d.reason == p3_lanes::core::mux::DiscontinuityReason::HistoryLost)
        })
        .count();
    assert!(history_lost > 0, "the scenario must make the server forget");
}

/// A small reassembly budget under reordering and loss: memory stays within it and honest
/// peers never trip the limit.
#[test]
fn mux_reassembly_memory_stays_within_a_small_budget() {
    run_all("small budget", SEEDS / 4, |seed| {
        let mut c = SimConfig::lossy(seed);
        c.mux.max_reassembly_bytes = 2 << 20;
        c.mux.max_message_bytes = 256 << 10;
        c.mux.max_unacked_bytes = 256 << 10;
        c
    });
}

#[test]
fn mux_control_waits_at_most_one_chunk_behind_a_4_mib_data_message() {
    let cfg = HolConfig::standard(1);
    let chunk_ms = cfg.chunk_time_ms();
    let mux = hol::run(&cfg, Mode::Mux);
    let fifo = hol::run(&cfg, Mode::Fifo);
    assert_eq!(mux.latency_ms.len(), mux.controls);
    assert_eq!(fifo.latency_ms.len(), fifo.controls);
    let (m50, m99) = (
        quantile(&mux.latency_ms, 0.5),
        quantile(&mux.latency_ms, 0.99),
    );
    let (f50, f99) = (
        quantile(&fifo.latency_ms, 0.5),
        quantile(&fifo.latency_ms, 0.99),
    );
    let worst_queueing = quantile(&mux.queueing_ms, 1.0);
    eprintln!(
        "head-of-line, {} Control messages during a 4 MiB Data transfer at 10 Mbit/s: \
         mux p50 {m50:.1} ms p99 {m99:.1} ms (worst queueing {worst_queueing:.2} ms, one chunk \
         {chunk_ms:.2} ms); FIFO p50 {f50:.1} ms p99 {f99:.1} ms; p99 ratio {:.0}×; data done \
         mux {:.0} ms, FIFO {:.0} ms",
        mux.controls,
        f99 / m99,
        mux.data_done_ms,
        fifo.data_done_ms
    );
    assert!(
        worst_queueing <= chunk_ms + 0.01,
        "a Control message waited {worst_queueing:.2} ms, more than one chunk ({chunk_ms:.2} ms)"
    );
    assert!(
        f99 / m99 >= 20.0,
        "p99 only {:.1}× lower than FIFO",
        f99 / m99
    );
    assert!(
        mux.data_done_ms <= fifo.data_done_ms * 1.05,
        "chunking costs at most 5 % of the bulk transfer time"
    );
}
