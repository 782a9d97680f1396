//! Peer-to-peer tier benchmark (issue #5 "Tests and figures"): runs the virtual-clock
//! simulations of `tests/p2p_harness` (8–10 devices in one room, each on the shipped
//! `core::music::Room` with the mesh's `TierMachine`; server crash, silent loss, the DJ's
//! device leaving while serverless, partitions and heals) and `tests/sync_harness` in mesh mode
//! (8 devices' rooms keep following the controller's peer-ordered changes over peer links
//! after the server is gone, PROTOCOL.md §13.10-§13.11) over many seeds and reports, against
//! issue #5's targets:
//!
//! - failover time after a server crash (target 1 s; the seed's 2 s), after silent loss
//!   (target 3 s), after the server and the DJ's device are lost together, and after the DJ's
//!   device leaves while serverless (against the crash target): p50/p95/max;
//! - drift between devices p50/p95 in mesh mode (target 10 ms), with ideal and with
//!   Chromium-like media elements;
//! - changes lost and applied twice across all scenarios (target 0; baseline: changes made).
//!
//! Run with `cargo bench -p p3-lanes --bench p2p` (or `npm run bench`). Merges its figures into
//! `bench-results.json` at the repository root as `{name, value, unit, baseline, ratio}`,
//! replacing the entries named `p2p.*`.

#[path = "../tests/p2p_harness/mod.rs"]
mod p2p_harness;
#[path = "../tests/sync_harness/mod.rs"]
mod sync_harness;

use p2p_harness::{run, Scenario};
use p3_lanes::core::sync::follower::FollowerConfig;
use serde_json::json;
use std::time::Instant;
use sync_harness::{LinkModel, MeshConfig, Mode, Sim, SimConfig};

mod support;
use support::write_results;

const SEEDS: u64 = 200;
const MESH_SEEDS: u64 = 30;
const MESH_DEVICES: usize = 8;

/// A DataChannel between two devices (SCTP: reliable, ordered, retransmits after ~200 ms).
fn peer_link() -> LinkModel {
    LinkModel {
        base_ms: 30.0,
        jitter_ms: 15.0,
        loss: 0.01,
        retransmit_ms: 200.0,
        probe_drop: 0.01,
    }
}

/// Pairwise drift between devices in mesh mode (the server lost at 8 s, after play), ms.
fn mesh_drift(chromium: bool) -> Vec<f64> {
    (0..MESH_SEEDS)
        .flat_map(|seed| {
            let mut cfg = SimConfig::scenario(seed, MESH_DEVICES, Mode::Synced);
            cfg.mesh = Some(MeshConfig {
                from_ms: 8000.0,
                host: 0,
                link: peer_link(),
            });
            if chromium {
                cfg.chromium_media = true;
                cfg.follower = FollowerConfig::browser();
            }
            Sim::new(cfg).run().mesh_pairwise_ms
        })
        .collect()
}

fn q(v: &[f64], p: f64) -> f64 {
    sync_harness::quantile(v, p)
}

fn main() {
    let t = Instant::now();
    let mut results = Vec::new();
    let mut push = |name: &str, value: f64, unit: &str, baseline: &str, base: f64| {
        println!(
            "  {name:<48} {value:>9.1} {unit:<8} {baseline} (ratio {:.2})",
            if base == 0.0 { 0.0 } else { value / base }
        );
        results.push(json!({
            "name": format!("p2p.{name}"),
            "value": value, "unit": unit,
            "baseline": format!("{baseline}: {base} {unit}"),
            "ratio": if base == 0.0 { json!(null) } else { json!(value / base) },
        }));
    };
    let (mut made, mut lost, mut twice) = (0, 0, 0);
    println!("p2p simulation: 8-10 devices in one room, {SEEDS} seeds per scenario");
    for (scenario, key, targets) in [
        (
            Scenario::Crash,
            "failover_after_crash",
            &[("issue #5 target", 1000.0), ("seed", 2000.0)][..],
        ),
        (
            Scenario::CrashWithDj,
            "failover_after_crash_with_dj",
            &[("issue #5 crash target", 1000.0)][..],
        ),
        (
            Scenario::Silent,
            "failover_after_silent_loss",
            &[("issue #5 target", 3000.0)][..],
        ),
        (Scenario::DjLeaves, "failover_after_dj_leaves", &[][..]),
        (Scenario::PartitionHeal, "", &[][..]),
    ] {
        let mut fo = Vec::new();
        let mut dj = Vec::new();
        for seed in 0..SEEDS {
            let out =
                run(seed, scenario).unwrap_or_else(|e| panic!("{scenario:?} seed {seed}: {e}"));
            fo.extend(out.failover_ms.map(|v| v as f64));
            dj.extend(out.dj_failover_ms.map(|v| v as f64));
            made += out.made;
            lost += out.lost;
            twice += out.twice;
        }
        let (figures, targets) = if scenario == Scenario::DjLeaves {
            (dj, &[("issue #5 crash target", 1000.0)][..])
        } else {
            (fo, targets)
        };
        if key.is_empty() {
            continue;
        }
        assert_eq!(
            figures.len() as u64,
            SEEDS,
            "{scenario:?}: a run never failed over"
        );
        for (stat, p) in [("p50", 0.5), ("p95", 0.95), ("max", 1.0)] {
            for (i, (what, base)) in targets.iter().enumerate() {
                let name = if i == 0 {
                    format!("{key}.{stat}")
                } else {
                    format!("{key}.{stat}_vs_seed")
                };
                push(&name, q(&figures, p), "ms", what, *base);
            }
        }
    }
    for (chromium, key) in [(false, "mesh"), (true, "mesh.chromium_media")] {
        let d = mesh_drift(chromium);
        for (stat, p) in [("p50", 0.5), ("p95", 0.95)] {
            push(
                &format!("{key}.drift_between_devices.{stat}"),
                q(&d, p),
                "ms",
                "issue #5 target",
                10.0,
            );
        }
    }
    let made = made as f64;
    push("changes_lost", lost as f64, "changes", "changes made", made);
    push(
        "changes_applied_twice",
        twice as f64,
        "changes",
        "changes made",
        made,
    );
    println!("({:.1} s)", t.elapsed().as_secs_f64());
    write_results("p2p.", results);
}
