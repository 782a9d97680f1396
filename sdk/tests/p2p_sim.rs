//! Native simulation of issue #5's tiers with a virtual clock and seeded links (STYLE.md
//! "Tests drive the core with a virtual clock"): N devices run the real
//! [`TierMachine`], [`Election`], [`OfflineQueue`] and [`ChangeLog`] of `core::p2p`; the harness
//! only carries messages with seeded latency (per-link FIFO) and applies the scenario's
//! server crash, silent loss, departures and partitions.
//!
//! Model: the server either closes every socket (crash, the close reaches each device within
//! 50 ms) or goes silent (sockets open, nothing answered, every message to it dropped); it
//! keeps its log across the outage. Peer links are logical reachability within a connected
//! component (with the hub model a listener reaches the others through the controller and
//! deputy); a link change reaches a device 50–250 ms later (DataChannel close / open).
//! Every device makes changes at random (~ one per 1.5 s); an offline device also "reloads"
//! its queue through JSON.
//!
//! Asserted for every seed and scenario: one controller per connected component once settled
//! while serverless; after the server returns every device follows it with the server's log;
//! every change that left its device (or whose device is still there) is in that log exactly
//! once. Printed: failover time from server loss to "all devices on webrtc with one agreed,
//! reachable controller".

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
