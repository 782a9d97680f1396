//! Music sync in the virtual-clock harness (`sync_harness`): devices with clock skew up to
//! ±2 s and ±50 ppm drift, 50 ± 20 ms links with 2 % loss (TCP retransmission), a server
//! running the room authority, simulated media elements with start, seek and load latencies;
//! 50 seeds. Run with `--nocapture` to see the figures.
//!
//! The scenario (see `SimConfig::scenario`): 4 devices join, device 0 claims the DJ role,
//! changes track, plays, seeks; a 5th device joins mid-track; pause, play, change-track while
//! playing, handover to device 1, seek by device 1.

mod sync_harness;

use p3_lanes::core::sync::follower::FollowerConfig;
use p3_lanes::core::sync::position::EstimatorConfig;
use std::sync::OnceLock;
use sync_harness::{
    quantile, LinkModel, MeshConfig, Mode, Sim, SimConfig, SimReport, Step, IN_SYNC_MS,
};

const SEEDS: u64 = 50;
const DEVICES: usize = 5;

/// The 50 synced runs, shared by the tests that read different figures of them.
fn synced_runs() -> &'static [SimReport] {
    static RUNS: OnceLock<Vec<SimReport>> = OnceLock::new();
    RUNS.get_or_init(|| {
        (0..SEEDS)
            .map(|seed| Sim::new(SimConfig::scenario(seed, DEVICES, Mode::Synced)).run())
            .collect()
    })
}

fn abs(v: &[f64]) -> Vec<f64> {
    v.iter().map(|e| e.abs()).collect()
}

#[test]
fn clock_offsets_converge_after_the_join_burst() {
    let runs = synced_runs();
    let burst: Vec<f64> = runs
        .iter()
        .flat_map(|r| abs(&r.burst_offset_error_ms))
        .collect();
    let steady: Vec<f64> = runs.iter().flat_map(|r| abs(&r.offset_error_ms)).collect();
    assert_eq!(
        burst.len(),
        SEEDS as usize * DEVICES,
        "every device ends its burst synced"
    );
    eprintln!(
        "clock offset error after the join burst: p50 {:.2} ms, p95 {:.2} ms, max {:.2} ms; \
         afterwards: p50 {:.2} ms, p95 {:.2} ms, max {:.2} ms",
        quantile(&burst, 0.5),
        quantile(&burst, 0.95),
        quantile(&burst, 1.0),
        quantile(&steady, 0.5),
        quantile(&steady, 0.95),
        quantile(&steady, 1.0),
    );
    assert!(quantile(&burst, 0.95) < 10.0);
    assert!(quantile(&burst, 1.0) < 30.0);
    assert!(quantile(&steady, 0.95) < 4.0);
}

#[test]
fn devices_agree_after_play_seek_pause_change_track_and_handover() {
    let runs = synced_runs();
    for (seed, r) in runs.iter().enumerate() {
        assert!(r.refused.is_empty(), "seed {seed}: {:?}", r.refused);
        assert_eq!(
            r.wrong_track, 0,
            "seed {seed}: a device off track or stopped"
        );
        let s = r.final_state.as_ref().unwrap();
        assert_eq!(s.controller_id.as_deref(), Some("dev-1"), "seed {seed}");
        assert_eq!((s.epoch, s.sequence), (2, 1), "seed {seed}");
        assert_eq!(s.track_id.as_deref(), Some("track-b"));
        assert!(s.is_playing);
        let p95 = quantile(&r.pairwise_ms, 0.95);
        assert!(
            p95 < 15.0,
            "seed {seed}: pairwise p95 {p95:.2} ms (worst {:?})",
            r.worst
        );
    }
    let pair: Vec<f64> = runs.iter().flat_map(|r| r.pairwise_ms.clone()).collect();
    let room: Vec<f64> = runs.iter().flat_map(|r| r.vs_room_ms.clone()).collect();
    eprintln!(
        "drift between devices (steady state, {} pairs × instants): p50 {:.2} ms, p95 {:.2} ms, \
         p99 {:.2} ms, max {:.2} ms; vs room state: p50 {:.2} ms, p95 {:.2} ms",
        pair.len(),
        quantile(&pair, 0.5),
        quantile(&pair, 0.95),
        quantile(&pair, 0.99),
        quantile(&pair, 1.0),
        quantile(&room, 0.5),
        quantile(&room, 0.95),
    );
    assert!(quantile(&pair, 0.95) < 10.0);
    assert!(quantile(&room, 0.95) < 10.0);
    // Corrective seeks are rare: ~4 per device per run are the scripted ones.
    let seeks: usize = runs.iter().map(|r| r.seeks).sum();
    assert!(seeks < runs.len() * DEVICES * 6, "{seeks} seeks");
}

#[test]
fn late_joiner_is_in_sync_within_1_5_s() {
    let runs = synced_runs();
    let join: Vec<f64> = runs
        .iter()
        .flat_map(|r| {
            r.join_to_sync_ms
                .iter()
                .map(|j| j.expect("in sync eventually"))
        })
        .collect();
    eprintln!(
        "join to in sync (|error| <= {IN_SYNC_MS} ms for 1 s): p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms",
        quantile(&join, 0.5),
        quantile(&join, 0.95),
        quantile(&join, 1.0)
    );
    assert!(quantile(&join, 0.95) <= 1500.0);
}

#[test]
fn baselines_drift_far_more() {
    let seeds = 10;
    let ours: Vec<f64> = synced_runs()[..seeds]
        .iter()
        .flat_map(|r| r.pairwise_ms.clone())
        .collect();
    for mode in [Mode::NaiveOnReceipt, Mode::SeedTimestamps] {
        let pair: Vec<f64> = (0..seeds as u64)
            .flat_map(|seed| {
                Sim::new(SimConfig::scenario(seed, DEVICES, mode))
                    .run()
                    .pairwise_ms
            })
            .collect();
        eprintln!(
            "{mode:?}: drift between devices p50 {:.2} ms, p95 {:.2} ms (ours: p50 {:.2}, p95 {:.2})",
            quantile(&pair, 0.5),
            quantile(&pair, 0.95),
            quantile(&ours, 0.5),
            quantile(&ours, 0.95)
        );
        assert!(quantile(&pair, 0.95) > 3.0 * quantile(&ours, 0.95));
    }
}

#[test]
fn autoplay_blocked_device_asks_for_a_gesture_then_follows() {
    for seed in 0..10 {
        let mut cfg = SimConfig::scenario(seed, DEVICES, Mode::Synced);
        cfg.autoplay_blocked = vec![2];
        cfg.script.push((8_000.0, Step::Gesture(2)));
        let r = Sim::new(cfg).run();
        assert_eq!(r.gesture_events[2], 1, "seed {seed}: one NeedsUserGesture");
        assert!(r
            .gesture_events
            .iter()
            .enumerate()
            .all(|(i, &n)| i == 2 || n == 0));
        let tr = &r.traces[2];
        // Silent until the gesture, following within 1.5 s of it.
        assert!(tr
            .iter()
            .filter(|p| (4_000.0..8_000.0).contains(&p.0))
            .all(|p| !p.2));
        let after: Vec<f64> = tr
            .iter()
            .filter(|p| (9_500.0..12_000.0).contains(&p.0))
            .map(|p| p.1.abs())
            .collect();
        assert!(!after.is_empty());
        assert!(
            quantile(&after, 1.0) < IN_SYNC_MS,
            "seed {seed}: {:.2} ms",
            quantile(&after, 1.0)
        );
    }
}

#[test]
fn background_tab_with_throttled_timers_catches_up() {
    let mut errs = vec![];
    for seed in 0..10 {
        let mut cfg = SimConfig::scenario(seed, DEVICES, Mode::Synced);
        cfg.throttled = vec![3];
        let r = Sim::new(cfg).run();
        errs.extend(
            r.traces[3]
                .iter()
                .filter(|p| {
                    (6_000.0..12_000.0).contains(&p.0) || (36_000.0..42_000.0).contains(&p.0)
                })
                .map(|p| p.1.abs()),
        );
    }
    eprintln!(
        "throttled tab (timers at whole seconds): error p50 {:.2} ms, p95 {:.2} ms",
        quantile(&errs, 0.5),
        quantile(&errs, 0.95)
    );
    // Worst case: the tab stays throttled while playing (Chrome exempts audible tabs), so every
    // start is up to 1 s late and corrections are sampled once a second.
    assert!(quantile(&errs, 0.5) < 5.0);
    assert!(quantile(&errs, 0.95) < 30.0);
}

/// Chromium-like media elements (the harness's `chromium_media`), on a quiet and on a loaded
/// renderer (`chromium_loaded`), followed with `FollowerConfig::browser()`: devices agree, and
/// a late joiner, once its own readings are within 10 ms, does not refine them for 1 s (an
/// excursion would take it out of sync again), so it is in sync as the browser test measures
/// it (its drift readings within 10 ms for 1 s) within 1.5 s at p95 on the quiet renderer.
/// Before the landing hold, the unbiased catch-up seeks and the seek-latency guess from the
/// start (PROTOCOL.md §12.5), an excursion's 20 ms dip right after landing cost a seek and
/// another excursion: join p95 2.1 s and 1.8 s by its own readings.
#[test]
fn chromium_like_media_elements_agree_too() {
    const SEEDS: u64 = 40;
    for loaded in [false, true] {
        let mut pairwise = vec![];
        let (mut joins, mut readings, mut left_sync, mut refined) = (vec![], vec![], 0, 0);
        for seed in 0..SEEDS {
            let mut cfg = SimConfig::scenario(seed, DEVICES, Mode::Synced);
            cfg.chromium_media = true;
            cfg.chromium_loaded = loaded;
            cfg.follower = FollowerConfig::browser();
            let r = Sim::new(cfg).run();
            assert_eq!(r.wrong_track, 0, "seed {seed}");
            pairwise.extend(r.pairwise_ms.iter().copied());
            let never = |j: &Option<f64>| j.unwrap_or(f64::INFINITY);
            joins.extend(r.join_to_sync_ms.iter().map(never));
            readings.extend(r.join_to_sync_readings_ms.iter().map(never));
            refined += r.refinements_right_after_in_sync.iter().sum::<usize>();
            for (first, in_sync) in r
                .join_to_first_in_sync_reading_ms
                .iter()
                .zip(&r.join_to_sync_readings_ms)
            {
                if never(first) < never(in_sync) {
                    left_sync += 1;
                }
            }
        }
        eprintln!(
            "Chromium-like media{} (start stall, rate changes late, 15-25 ms per rate \
             excursion, ±0.5 % rate deadband): drift between devices p50 {:.2} ms, p95 {:.2} \
             ms, max {:.2} ms; join to in sync p50 {:.0} ms, p95 {:.0} ms (its own readings: \
             p50 {:.0} ms, p95 {:.0} ms; {left_sync} of {SEEDS} left sync again, {refined} \
             refinements within 1 s of getting in sync)",
            if loaded { ", loaded renderer" } else { "" },
            quantile(&pairwise, 0.5),
            quantile(&pairwise, 0.95),
            quantile(&pairwise, 1.0),
            quantile(&joins, 0.5),
            quantile(&joins, 0.95),
            quantile(&readings, 0.5),
            quantile(&readings, 0.95),
        );
        assert!(quantile(&pairwise, 0.95) < 10.0);
        assert_eq!(refined, 0, "refinements right after getting in sync");
        assert!(
            left_sync <= SEEDS / 8,
            "{left_sync} late joiners left sync again"
        );
        // Loaded: 0.98 s before the position estimate (PROTOCOL.md §12.5.2), whose first start
        // waits for the readings that bound the `currentTime` quantum.
        assert!(quantile(&readings, 0.5) <= if loaded { 1100.0 } else { 1000.0 });
        if !loaded {
            assert!(quantile(&readings, 0.95) <= 1500.0);
            assert!(quantile(&joins, 0.95) <= 1500.0);
        }
    }
}

/// Figures of a set of runs, for comparing two followers on one media model.
struct Followed {
    pairwise_p95: f64,
    vs_room_p95: f64,
    /// `in-sync` ↔ `correcting` status changes per device per run.
    flips: f64,
    /// Excursions per device per run.
    excursions: f64,
    /// Join to in sync by the device's own readings, p95, ms.
    join_readings_p95: f64,
}

fn followed(
    seeds: u64,
    profile: fn(u64, usize, FollowerConfig) -> SimConfig,
    follower: &FollowerConfig,
) -> Followed {
    let (mut pair, mut room, mut joins) = (vec![], vec![], vec![]);
    let (mut flips, mut excursions) = (0, 0);
    for seed in 0..seeds {
        let r = Sim::new(profile(seed, DEVICES, follower.clone())).run();
        assert_eq!(r.wrong_track, 0, "seed {seed}");
        pair.extend(r.pairwise_ms.iter().copied());
        room.extend(r.vs_room_ms.iter().copied());
        joins.extend(
            r.join_to_sync_readings_ms
                .iter()
                .map(|j| j.unwrap_or(f64::INFINITY)),
        );
        flips += r.status_flips.iter().sum::<usize>();
        excursions += r.excursions.iter().sum::<usize>();
    }
    let per_device = (seeds as f64) * DEVICES as f64;
    Followed {
        pairwise_p95: quantile(&pair, 0.95),
        vs_room_p95: quantile(&room, 0.95),
        flips: flips as f64 / per_device,
        excursions: excursions as f64 / per_device,
        join_readings_p95: quantile(&joins, 0.95),
    }
}

/// Issue 16: media elements whose `currentTime` is refreshed only about every 40 ms (headless
/// Firefox; the harness's `firefox_like` profile, the Chromium-like element otherwise),
/// followed with `FollowerConfig::browser()`, which estimates the position from the readings
/// over time (`core::sync::position`), against the same follower trusting each reading
/// (`EstimatorConfig::SINGLE_READING`, the follower before) in the same run. Each single
/// reading is up to 40 ms stale: that follower corrects the staleness, flipping between in
/// sync and correcting. The estimator keeps devices within 10 ms of each other (p95) and stops
/// the flipping, and does no harm on the Chromium-like element (always current). Edge
/// readings (PROTOCOL.md §12.5.2; the harness takes them as the SDK's driver does) settle the
/// estimate at once: against plain readings only, a Firefox-like device gets in sync in a
/// fraction of the time.
#[test]
fn firefox_like_coarse_current_time_is_estimated_over_time() {
    const SEEDS: u64 = 20;
    let new = FollowerConfig::browser();
    let old = FollowerConfig {
        position: EstimatorConfig::SINGLE_READING,
        ..FollowerConfig::browser()
    };
    let ff_new = followed(SEEDS, SimConfig::firefox_like, &new);
    let ff_plain = followed(SEEDS, SimConfig::firefox_like_plain, &new);
    let ff_old = followed(SEEDS, SimConfig::firefox_like, &old);
    let cr_new = followed(SEEDS, SimConfig::chromium_like, &new);
    let cr_old = followed(SEEDS, SimConfig::chromium_like, &old);
    for (name, f) in [
        ("Firefox-like, estimated with edge readings", &ff_new),
        ("Firefox-like, estimated from plain readings", &ff_plain),
        ("Firefox-like, single reading (before)", &ff_old),
        ("Chromium-like, estimated", &cr_new),
        ("Chromium-like, single reading (before)", &cr_old),
    ] {
        eprintln!(
            "{name}: drift between devices p95 {:.2} ms, vs room p95 {:.2} ms; per device and \
             run {:.1} in-sync/correcting flips, {:.1} excursions; join to in sync (own \
             readings) p95 {:.0} ms",
            f.pairwise_p95, f.vs_room_p95, f.flips, f.excursions, f.join_readings_p95
        );
    }
    assert!(ff_new.pairwise_p95 <= 10.0, "{:.2} ms", ff_new.pairwise_p95);
    assert!(ff_new.pairwise_p95 < ff_old.pairwise_p95);
    assert!(
        ff_plain.pairwise_p95 <= 10.0,
        "{:.2} ms",
        ff_plain.pairwise_p95
    );
    // Edge readings settle an estimate at once: a Firefox-like device gets in sync in about
    // the time a Chromium-like one does, where plain readings need seconds of them.
    assert!(
        ff_new.join_readings_p95 * 2.0 <= ff_plain.join_readings_p95,
        "{:.0} vs {:.0} ms",
        ff_new.join_readings_p95,
        ff_plain.join_readings_p95
    );
    assert!(ff_new.join_readings_p95 <= cr_new.join_readings_p95 + 250.0);
    assert!(ff_new.pairwise_p95 <= ff_plain.pairwise_p95 + 0.5);
    // No flip-flopping: a handful per device and run (one start lands per change), a fraction
    // of the single-reading follower's.
    assert!(ff_new.flips <= 4.0, "{:.1} flips", ff_new.flips);
    assert!(
        ff_new.flips * 4.0 <= ff_old.flips,
        "{:.1} vs {:.1}",
        ff_new.flips,
        ff_old.flips
    );
    // Chromium-like: not worse than before (within the runs' noise).
    assert!(
        cr_new.pairwise_p95 <= cr_old.pairwise_p95 + 0.5,
        "{:.2} vs {:.2} ms",
        cr_new.pairwise_p95,
        cr_old.pairwise_p95
    );
    assert!(cr_new.vs_room_p95 <= cr_old.vs_room_p95 + 0.5);
    assert!(cr_new.flips <= cr_old.flips + 0.5);
    // A fresh device does not know its browser's quantum: its first start waits for the few
    // readings that bound it (measured: +150 ms at p95 on the join).
    assert!(cr_new.join_readings_p95 <= cr_old.join_readings_p95 + 250.0);
}

/// Mesh mode (PROTOCOL.md §13.10-§13.11), on the shipped `core::music::Room`: the server is
/// lost at 8 s, the rooms' election keeps the DJ (dev-0), whose room orders the seek, pause,
/// play and change-track itself (`applyAt` = its kept clock + `LEAD_MS`) and broadcasts them
/// sealed; the other 7 rooms (one joins serverless, at 20 s) probe its clock over 30 ± 15 ms
/// peer links with 1 % loss and accept its changes. The rooms refuse what needs the server:
/// the handover (`invalid_argument`) and dev-1's seek (`not_controller`).
#[test]
fn devices_agree_in_mesh_mode_after_the_server_is_lost() {
    let mut pairwise = vec![];
    let mut joins = vec![];
    for seed in 0..10 {
        let mut cfg = SimConfig::scenario(seed, 8, Mode::Synced);
        cfg.mesh = Some(MeshConfig {
            from_ms: 8000.0,
            host: 0,
            link: LinkModel {
                base_ms: 30.0,
                jitter_ms: 15.0,
                loss: 0.01,
                retransmit_ms: 200.0,
                probe_drop: 0.01,
            },
        });
        let r = Sim::new(cfg).run();
        assert_eq!(r.wrong_track, 0, "seed {seed}");
        assert_eq!(
            r.refused,
            ["invalid_argument", "not_controller"],
            "seed {seed}: only the handover and dev-1's seek are refused"
        );
        let last = r.final_state.as_ref().expect("a state");
        assert_eq!(
            last.controller_id.as_deref(),
            Some("dev-0"),
            "seed {seed}: the DJ ordered the changes"
        );
        assert_eq!(
            last.track_id.as_deref(),
            Some("track-b"),
            "seed {seed}: the change-track was ordered without the server"
        );
        assert!(!r.mesh_pairwise_ms.is_empty(), "seed {seed}");
        // dev-1..dev-6 take the seek, pause, play and change-track; dev-7 joins after the seek.
        assert_eq!(
            r.mesh_followed,
            6 * 4 + 3,
            "seed {seed}: the followers' rooms accepted the DJ's changes"
        );
        // The controller's room orders each change `LEAD_MS` (250 ms) ahead on the room's
        // clock: it reaches every follower (30 ± 15 ms, 200 ms more when a packet is lost)
        // before it takes effect.
        for lead in &r.mesh_lead_at_receipt_ms {
            assert!(
                (0.0..=250.0).contains(lead),
                "seed {seed}: a peer-ordered change arrived {lead:.1} ms before taking effect"
            );
        }
        pairwise.extend(r.mesh_pairwise_ms.iter().copied());
        joins.extend(r.join_to_sync_ms.iter().map(|j| j.unwrap_or(f64::INFINITY)));
    }
    eprintln!(
        "mesh mode: drift between devices p50 {:.2} ms, p95 {:.2} ms, max {:.2} ms; join to in \
         sync p95 {:.0} ms",
        quantile(&pairwise, 0.5),
        quantile(&pairwise, 0.95),
        quantile(&pairwise, 1.0),
        quantile(&joins, 0.95),
    );
    assert!(quantile(&pairwise, 0.95) < 10.0);
    assert!(quantile(&joins, 0.95) < 1500.0);
}
