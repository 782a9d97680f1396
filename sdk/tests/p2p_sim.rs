//! Native simulation of issue #5's tiers with a virtual clock and seeded links (STYLE.md
//! "Tests drive the core with a virtual clock"): N devices each run the shipped
//! `core::music::Room` (election, sealing, peer ordering, acceptance, offline-queue push
//! timing) with the mesh's `TierMachine` and an `OfflineQueue`; the server is the core's
//! `RoomAuthority` with `apply_push`. The harness only carries messages (seeded latency,
//! per-link FIFO) and applies the scenario's server crash, silent loss, departures and
//! partitions (model: `p2p_harness`).
//!
//! Asserted for every seed and scenario: one controller per connected component once settled
//! while serverless; after the server returns every room follows the server's state with an
//! empty queue; every queued change whose device is still there is in the server's log
//! exactly once. Printed: failover time from server loss to "all devices on webrtc with one
//! agreed, reachable controller". Seen failing when the room ignores peer claims (two
//! controllers after a partition heals) or never pushes its queue (pending changes).

#[path = "p2p_harness/mod.rs"]
mod p2p_harness;

use p2p_harness::{quantile, run, Scenario};

#[test]
fn p2p_tiers_across_seeds() {
    let seeds: u64 = std::env::var("P2P_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let first: u64 = std::env::var("P2P_SIM_FIRST")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    for scenario in [
        Scenario::Crash,
        Scenario::CrashWithDj,
        Scenario::Silent,
        Scenario::DjLeaves,
        Scenario::PartitionHeal,
    ] {
        let mut fo = Vec::new();
        let mut dj = Vec::new();
        let mut changes = 0;
        for seed in first..first + seeds {
            let out =
                run(seed, scenario).unwrap_or_else(|e| panic!("{scenario:?} seed {seed}: {e}"));
            fo.push(
                out.failover_ms
                    .unwrap_or_else(|| panic!("{scenario:?} seed {seed}: no failover")),
            );
            assert_eq!(
                (out.lost, out.twice),
                (0, 0),
                "{scenario:?} seed {seed}: changes lost, applied twice"
            );
            changes += out.changes;
            dj.extend(out.dj_failover_ms);
        }
        if !dj.is_empty() {
            println!(
                "p2p_sim {scenario:?}: DJ left while serverless -> new agreed controller ms p50 {} p95 {} max {}",
                quantile(&mut dj, 0.5),
                quantile(&mut dj, 0.95),
                quantile(&mut dj, 1.0)
            );
        }
        println!(
            "p2p_sim {scenario:?}: {seeds} seeds, failover ms p50 {} p95 {} max {}, {changes} changes, 0 lost, 0 applied twice",
            quantile(&mut fo, 0.5),
            quantile(&mut fo, 0.95),
            quantile(&mut fo, 1.0)
        );
    }
}
