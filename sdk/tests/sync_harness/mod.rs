//! Virtual-clock harness for music sync (STYLE.md: quinn's `Pair`, str0m's `netem`): a
//! simulated server-stub (a [`RoomAuthority`] on the true clock answering clock probes), N
//! devices each with a skewed, drifting local clock, the shipped sans-IO music [`Room`] (the
//! same one the browser's `MusicRoom` drives: clock sync, follower, stamping, election,
//! sealing, peer ordering) and a simulated media element, and a seeded link model between
//! each device and the server (and, in mesh mode, between devices). The harness only carries
//! messages and executes the room's [`Output`]s. Deterministic for a seed; shared by
//! `tests/sync_sim.rs` and `benches/sync.rs`.
//!
//! Models (all times true ms unless named local):
//! - Server clock = the true clock + `SERVER_EPOCH_MS`; `serverTime` is floored to whole ms as
//!   server-stub sends it.
//! - Device clock: `local(T) = server(T) + skew + drift × T`, skew uniform in ±`max_skew_ms`,
//!   drift in ±`max_drift_ppm` (it stands for both `performance.now()` and `Date.now()`).
//! - Link (a WebSocket, i.e. TCP): one-way delay `base ± jitter` uniform; a lost packet is
//!   retransmitted after `retransmit_ms` (TCP's RTO), and delivery is in order, so a loss also
//!   delays what follows it (head-of-line blocking): these are the "queued" samples the clock
//!   filter must reject. Clock probes can also be dropped outright (`probe_drop`).
//! - Media element: `currentTime` advances at `playbackRate × (1 + media drift)` of true time;
//!   `play()` starts moving after a start latency, a seek stalls playback for a seek delay, a
//!   load takes a load delay (per device base, small per-event jitter); readings carry ±0.5 ms
//!   of noise while moving; autoplay can be blocked until a user gesture.
//! - A background tab's timers fire late, at whole seconds of its local clock.
//! - `chromium_media` models what Chromium's `<audio>` does (measured in headless Chromium
//!   with its fake audio output, see the e2e tests): the first `play()` of an element takes
//!   about 70 ms, later ones 0-15 ms, a seek while playing stalls about 90 ms; the position
//!   reads as moving for 20 ms right after `play()` and then stalls until playback really
//!   starts; rates within ±0.5 % of 1 play at 1; a rate change shows in the position only
//!   130-150 ms later (the output's queue plays out at the old rate first), and every switch
//!   from rate 1 to a time-stretched rate then loses 15-25 ms of media time (20 on average per
//!   device, ±5 per excursion). With `chromium_loaded` (a renderer on a loaded machine, as in
//!   the browser test on a shared 2-core machine: the pages' learned latencies there were
//!   100-135 ms for the first `play()` and 110-125 ms for a seek) the first `play()` and
//!   every seek take 105-125 ms and a rate change shows 130-175 ms late.
//! - `currenttime_step_ms` models a `currentTime` refreshed only every so often (issue 16:
//!   headless Firefox about every 40 ms, Chromium about every 4 ms): each device's element
//!   refreshes it on its own period (the step ±5 %, a random phase) and in between a reading
//!   shows the position at the last refresh (at once after a command: a seek, play or pause
//!   sets it). The Firefox-like profile ([`SimConfig::firefox_like`]) is the Chromium-like
//!   element (its latencies and excursion cost, not measured in Firefox) with 40 ms steps.
#![allow(dead_code)]

use p3_lanes::core::codec::{decode_msgpack, encode_msgpack};
use p3_lanes::core::dictionary::Dictionary;
use p3_lanes::core::drive::Millis;
use p3_lanes::core::music::{Output, PeerLink, Room, RoomEvent};
use p3_lanes::core::p2p::tier::{Tier, TierReason};
use p3_lanes::core::sync::follower::{EdgeReading, FollowerConfig, MediaCommand, MediaSample};
use p3_lanes::core::sync::peer_clock::ClockProbe;
use p3_lanes::core::sync::state::{
    AuthorityConfig, ControlStamper, Decision, MusicAction, MusicControlData, RoomAuthority,
    RoomState, SyncMessage,
};
use serde_json::{json, Value};
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// The server clock at true time 0, ms since the Unix epoch.
pub const SERVER_EPOCH_MS: f64 = 1_735_689_600_000.0;

/// One direction of a device's connection.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkModel {
    /// Mean one-way delay, ms.
    pub base_ms: f64,
    /// Uniform jitter around it, ± ms.
    pub jitter_ms: f64,
    /// Probability a packet is lost (and retransmitted).
    pub loss: f64,
    /// Retransmission delay of a lost packet, ms.
    pub retransmit_ms: f64,
    /// Probability a clock probe or its answer vanishes.
    pub probe_drop: f64,
}

impl Default for LinkModel {
    fn default() -> Self {
        LinkModel {
            base_ms: 50.0,
            jitter_ms: 20.0,
            loss: 0.02,
            retransmit_ms: 250.0,
            probe_drop: 0.01,
        }
    }
}

/// The room key every device's [`Room`] seals under in mesh mode (32 bytes, base64url).
const ROOM_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";

/// How devices follow the room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Ours: clock sync, scheduled changes, correction ladder.
    Synced,
    /// Baseline: the server relays changes at once (no lead) with the position at sending;
    /// each device seeks and plays on receipt, with no clock sync and no correction.
    NaiveOnReceipt,
    /// Baseline: seed 004's `calculateSyncPosition` with each device's own `Date.now()`
    /// against the sender's timestamp (unsynchronized clocks), applied on receipt.
    SeedTimestamps,
}

/// A scripted step.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Device joins the room.
    Join(usize),
    /// Device sends a change.
    Control(usize, MusicAction, MusicControlData),
    /// The user taps the page of a device.
    Gesture(usize),
}

/// The simulation's parameters.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seed of everything random.
    pub seed: u64,
    /// Devices in the room.
    pub devices: usize,
    /// Each device's link to the server.
    pub link: LinkModel,
    /// Largest clock skew of a device, ± ms.
    pub max_skew_ms: f64,
    /// Largest drift of a device clock and of its media clock, ± ppm.
    pub max_drift_ppm: f64,
    /// How devices follow.
    pub mode: Mode,
    /// Devices whose timers are throttled (background tab).
    pub throttled: Vec<usize>,
    /// Devices whose autoplay is blocked until a gesture.
    pub autoplay_blocked: Vec<usize>,
    /// The script, at true times (ms).
    pub script: Vec<(f64, Step)>,
    /// End of the run, true ms.
    pub end_ms: f64,
    /// Measurement period, true ms.
    pub tick_ms: f64,
    /// Time after a change takes effect (or a device joins) excluded from steady-state figures.
    pub settle_ms: f64,
    /// Follower tuning.
    pub follower: FollowerConfig,
    /// Media elements behave like Chromium's (module docs) rather than ideally.
    pub chromium_media: bool,
    /// With `chromium_media`: a loaded renderer (module docs), as the browser test sees on a
    /// shared 2-core machine.
    pub chromium_loaded: bool,
    /// Serverless mesh mode from some instant on (`None`: the server stays).
    pub mesh: Option<MeshConfig>,
    /// `currentTime` refresh period of the media elements, ms (0: always current).
    pub currenttime_step_ms: f64,
    /// The driver takes the edge readings the follower asks for (PROTOCOL.md §12.5.2), as the
    /// SDK's does; `false`: plain readings only.
    pub edge_readings: bool,
}

/// Mesh mode (PROTOCOL.md §13.10-§13.11): every device's [`Room`] has peer tiers and a
/// DataChannel link (`link`: reliable and ordered like the WebSocket) to every other; at
/// `from_ms` the server is gone (each room's tier goes `socket` → `webrtc`), the election
/// keeps the DJ (`host`) as controller, the others' rooms probe its kept server clock over
/// their links, and the DJ's room orders changes itself ([`Room::order_change`]) and
/// broadcasts them sealed; the followers' rooms accept them by their own rules. Devices
/// joining later join the mesh only. A change by any other device is refused by its room
/// (`not_controller`), a handover too (`invalid_argument`): both land in
/// [`SimReport::refused`].
#[derive(Clone, Debug, PartialEq)]
pub struct MeshConfig {
    /// True ms at which the server is lost.
    pub from_ms: f64,
    /// The device hosting the authority first.
    pub host: usize,
    /// Each peer link to the host.
    pub link: LinkModel,
}

/// Track ids of the default script and their durations (s).
pub const TRACKS: [(&str, f64); 2] = [("track-a", 240.0), ("track-b", 180.0)];

fn track(i: usize) -> MusicControlData {
    MusicControlData {
        track_id: Some(TRACKS[i].0.into()),
        track: Some(
            json!({"id": TRACKS[i].0, "title": TRACKS[i].0, "duration": TRACKS[i].1,
                           "url": format!("/media/{}.ogg", TRACKS[i].0)}),
        ),
        ..Default::default()
    }
}

fn at(position: f64) -> MusicControlData {
    MusicControlData {
        position: Some(position),
        ..Default::default()
    }
}

impl SimConfig {
    /// The default scenario: `devices` devices (the last joins late, mid-track), device 0 is
    /// the DJ: change-track, play, seek, late join, pause, play, change-track, handover to
    /// device 1, seek by device 1.
    pub fn scenario(seed: u64, devices: usize, mode: Mode) -> SimConfig {
        assert!(devices >= 3);
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x5ca1ab1e);
        let mut script: Vec<(f64, Step)> = (0..devices - 1)
            .map(|i| (rng.f64() * 500.0, Step::Join(i)))
            .collect();
        let dj_claim = MusicControlData {
            to: Some("dev-0".into()),
            ..Default::default()
        };
        script.extend([
            (1000.0, Step::Control(0, MusicAction::Handover, dj_claim)),
            (1500.0, Step::Control(0, MusicAction::ChangeTrack, track(0))),
            (3000.0, Step::Control(0, MusicAction::Play, at(0.0))),
            (12_000.0, Step::Control(0, MusicAction::Seek, at(95.0))),
            (20_000.0, Step::Join(devices - 1)),
            (
                30_000.0,
                Step::Control(0, MusicAction::Pause, Default::default()),
            ),
            (
                33_000.0,
                Step::Control(0, MusicAction::Play, Default::default()),
            ),
            (
                42_000.0,
                Step::Control(0, MusicAction::ChangeTrack, {
                    let mut d = track(1);
                    d.position = Some(10.0);
                    d
                }),
            ),
            (
                46_000.0,
                Step::Control(
                    0,
                    MusicAction::Handover,
                    MusicControlData {
                        to: Some("dev-1".into()),
                        ..Default::default()
                    },
                ),
            ),
            (52_000.0, Step::Control(1, MusicAction::Seek, at(30.0))),
        ]);
        SimConfig {
            seed,
            devices,
            link: LinkModel::default(),
            max_skew_ms: 2000.0,
            max_drift_ppm: 50.0,
            mode,
            throttled: vec![],
            autoplay_blocked: vec![],
            script,
            end_ms: 62_000.0,
            tick_ms: 10.0,
            settle_ms: 2000.0,
            follower: FollowerConfig::default(),
            chromium_media: false,
            chromium_loaded: false,
            mesh: None,
            currenttime_step_ms: 0.0,
            edge_readings: true,
        }
    }

    /// The scenario with Chromium-like media elements (`chromium_media`) followed with
    /// `follower`.
    pub fn chromium_like(seed: u64, devices: usize, follower: FollowerConfig) -> SimConfig {
        SimConfig {
            chromium_media: true,
            follower,
            ..SimConfig::scenario(seed, devices, Mode::Synced)
        }
    }

    /// The scenario with Firefox-like media elements: Chromium-like ones whose `currentTime`
    /// is refreshed about every 40 ms (module docs), followed with `follower`.
    pub fn firefox_like(seed: u64, devices: usize, follower: FollowerConfig) -> SimConfig {
        SimConfig {
            currenttime_step_ms: 40.0,
            ..SimConfig::chromium_like(seed, devices, follower)
        }
    }

    /// [`SimConfig::firefox_like`] with plain readings only (no edge readings).
    pub fn firefox_like_plain(seed: u64, devices: usize, follower: FollowerConfig) -> SimConfig {
        SimConfig {
            edge_readings: false,
            ..SimConfig::firefox_like(seed, devices, follower)
        }
    }
}

/// The simulated media element (module docs).
#[derive(Clone, Debug)]
struct Player {
    track: Option<String>,
    ready_at: f64,
    pos: f64,
    anchor: f64,
    playing: bool,
    moving_from: f64,
    seek_done: f64,
    rate: f64,
    media_drift: f64,
    start_latency: f64,
    seek_delay: f64,
    load_delay: f64,
    blocked: bool,
    /// Chromium's behaviour (module docs).
    chromium: bool,
    /// `play()` calls so far.
    starts: u32,
    /// When the last `play()` from paused was issued (true ms).
    play_issued: f64,
    /// Chromium: mean media time lost per excursion, ms (each one draws ±5 ms around it).
    excursion_cost: f64,
    /// Chromium: how long a rate change takes to show in the position (the output's queue
    /// plays out at the old rate), ms.
    rate_latency: f64,
    /// The rate the position moves at now (`rate` once its change has played out).
    applied_rate: f64,
    /// Rate changes on their way through the output's queue: `(true ms it shows, rate, media
    /// ms lost then)`, oldest first.
    pending_rates: std::collections::VecDeque<(f64, f64, f64)>,
    /// `currentTime` refresh period, ms (0: always current), and the phase of its refreshes.
    step_ms: f64,
    step_phase: f64,
}

/// Chromium plays rates this close to 1 at 1.
const CHROMIUM_RATE_DEADBAND: f64 = 0.005;

impl Player {
    /// The rate the media really moves at when `rate` is set.
    fn effective(&self, rate: f64) -> f64 {
        if self.chromium && (rate - 1.0).abs() < CHROMIUM_RATE_DEADBAND {
            1.0
        } else {
            rate
        }
    }

    /// The true media position: at the applied rate, then at each pending rate from when it
    /// shows (losing the excursion's media time then).
    fn position(&self, t: f64) -> f64 {
        if !self.playing {
            return self.pos;
        }
        let speed = |r: f64| self.effective(r) * (1.0 + self.media_drift) / 1000.0;
        let mut p = self.pos;
        let mut cur = self.anchor.max(self.moving_from);
        let mut rate = self.applied_rate;
        for &(at, r, lost) in &self.pending_rates {
            if at >= t {
                break;
            }
            if at > cur {
                p += (at - cur) * speed(rate);
                cur = at;
            }
            p -= lost / 1000.0;
            rate = r;
        }
        p + (t - cur).max(0.0) * speed(rate)
    }

    /// What `currentTime` reads: Chromium shows a false start of up to 20 ms right after
    /// `play()`, until the real movement overtakes it.
    fn reading(&self, t: f64) -> f64 {
        let t = if self.step_ms > 0.0 {
            // The last refresh, but not before the last command (which sets `currentTime`).
            let refreshed =
                ((t - self.step_phase) / self.step_ms).floor() * self.step_ms + self.step_phase;
            refreshed.max(self.anchor).min(t)
        } else {
            t
        };
        let p = self.position(t);
        if self.chromium && self.playing && t < self.moving_from && t >= self.play_issued {
            p.max(self.pos + (t - self.play_issued).min(20.0) / 1000.0)
        } else {
            p
        }
    }

    fn moving(&self, t: f64) -> bool {
        self.playing && t > self.moving_from && t >= self.seek_done
    }

    fn settle(&mut self, t: f64) {
        self.pos = self.position(t);
        self.anchor = t;
        while self.pending_rates.front().is_some_and(|p| p.0 < t) {
            if let Some((_, r, _)) = self.pending_rates.pop_front() {
                self.applied_rate = r;
            }
        }
    }

    /// Applies `cmd` at true time `t`; `Err` if `play()` is refused.
    fn apply(&mut self, cmd: &MediaCommand, t: f64, rng: &mut fastrand::Rng) -> Result<(), ()> {
        let jitter = |rng: &mut fastrand::Rng, base: f64, spread: f64| {
            (base + (rng.f64() * 2.0 - 1.0) * spread).max(0.0)
        };
        match cmd {
            MediaCommand::Load { track_id, .. } => {
                self.track = Some(track_id.clone());
                self.pos = 0.0;
                self.anchor = t;
                self.playing = false;
                self.ready_at = t + jitter(rng, self.load_delay, self.load_delay * 0.1);
                self.seek_done = t;
                // The load algorithm resets playbackRate to defaultPlaybackRate.
                self.rate = 1.0;
                self.applied_rate = 1.0;
                self.pending_rates.clear();
            }
            MediaCommand::Play => {
                if self.blocked {
                    return Err(());
                }
                self.settle(t);
                if !self.playing {
                    self.playing = true;
                    let latency = if self.chromium && self.starts > 0 {
                        rng.f64() * 15.0
                    } else {
                        jitter(rng, self.start_latency, 3.0)
                    };
                    self.starts += 1;
                    self.play_issued = t;
                    self.moving_from = (t + latency).max(self.seek_done).max(self.ready_at);
                }
            }
            MediaCommand::Pause => {
                self.settle(t);
                self.playing = false;
            }
            MediaCommand::Seek { to_s } => {
                self.settle(t);
                self.pos = *to_s;
                self.seek_done = t.max(self.ready_at) + jitter(rng, self.seek_delay, 5.0);
                if self.playing {
                    self.moving_from = self.moving_from.max(self.seek_done);
                }
            }
            MediaCommand::SetRate { rate } => {
                self.settle(t);
                let before = self.pending_rates.back().map_or(self.applied_rate, |p| p.1);
                let stretch = self.effective(before) == 1.0 && self.effective(*rate) != 1.0;
                let lost = if self.chromium && stretch {
                    jitter(rng, self.excursion_cost, 5.0)
                } else {
                    0.0
                };
                self.rate = *rate;
                self.pending_rates
                    .push_back((t + self.rate_latency, *rate, lost));
            }
        }
        Ok(())
    }

    /// A reading with an edge reading, as the SDK's driver takes them (`js/media_edge.js`,
    /// PROTOCOL.md §12.5.2): the edge is the last refresh of a stepped `currentTime` before
    /// `t`, stamped with its own local instant (`local_ms` is the device's time at `t`), exact
    /// but for up to ±0.25 ms of read noise. `None` (a plain reading instead) with an
    /// always-current `currentTime`, or when the element has not refreshed it while moving
    /// since its last command.
    fn edge_sample(&self, t: f64, local_ms: f64, rng: &mut fastrand::Rng) -> Option<MediaSample> {
        if self.step_ms <= 0.0 {
            return None;
        }
        let refreshed =
            ((t - self.step_phase) / self.step_ms).floor() * self.step_ms + self.step_phase;
        if refreshed <= self.anchor || !self.moving(refreshed) || !self.moving(t) {
            return None;
        }
        let noise = (rng.f64() - 0.5) / 2.0;
        Some(MediaSample {
            edge: Some(EdgeReading {
                local_ms: local_ms - (t - refreshed) + noise,
                position_s: self.position(refreshed),
                span_ms: 0.5,
            }),
            ..self.sample(t, local_ms, rng)
        })
    }

    fn sample(&self, t: f64, local_ms: f64, rng: &mut fastrand::Rng) -> MediaSample {
        let noise = if self.moving(t) {
            (rng.f64() - 0.5) / 1000.0
        } else {
            0.0
        };
        MediaSample {
            local_ms,
            position_s: self.reading(t) + noise,
            paused: !self.playing,
            seeking: t < self.seek_done,
            playback_rate: self.rate,
            ready: self.track.is_some() && t >= self.ready_at,
            edge: None,
        }
    }
}

#[derive(Clone, Debug)]
enum Msg {
    /// A sealed value on the mesh's Sync lane from device `from`.
    Mesh {
        from: usize,
        value: Value,
    },
    /// A clock probe or answer on the `p3-control` channel from device `from`.
    PeerClock {
        from: usize,
        probe: ClockProbe,
    },
    Ping {
        client_time: f64,
        rtt: Option<f64>,
    },
    Pong {
        client_time: f64,
        server_time: f64,
    },
    Join,
    /// A Sync-lane message, encoded with the v1 dictionary codec.
    Sync(Vec<u8>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dest {
    Server(usize),
    Device(usize),
}

struct Delivery {
    at: f64,
    seq: u64,
    dest: Dest,
    msg: Msg,
}

impl PartialEq for Delivery {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Delivery {}
impl PartialOrd for Delivery {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Delivery {
    // Min-heap on (time, send order).
    fn cmp(&self, o: &Self) -> Ordering {
        o.at.total_cmp(&self.at).then(o.seq.cmp(&self.seq))
    }
}

struct Device {
    id: String,
    skew: f64,
    drift: f64,
    /// The shipped music room.
    room: Room,
    player: Player,
    /// Naive baselines only: stamps their changes (they follow no state in `room`).
    stamper: ControlStamper,
    joined_at: Option<f64>,
    throttled: bool,
    /// When `room` wants to be polled again, true ms.
    room_due: f64,
    /// Naive baselines: when to apply the pending state, true ms.
    naive_due: Option<f64>,
    /// Naive modes: the state to apply once the element is ready.
    naive_pending: Option<RoomState>,
    burst_error_ms: Option<f64>,
    gesture_events: usize,
    /// (true ms, error ms, playing) per tick after joining, while the room plays.
    trace: Vec<(f64, f64, bool)>,
    /// The follower's own drift readings: (true ms, error ms), as the page logs them.
    readings: Vec<(f64, f64)>,
    /// The readings on which the ladder did nothing (steady, in the deadband or held).
    steady_readings: Vec<(f64, f64)>,
    /// Excursions started: (true ms, the error that started it, ms).
    excursions: Vec<(f64, f64)>,
    /// The last reading was during an excursion.
    nudging: bool,
    /// The follower's last status (`MusicStatus`).
    status: &'static str,
}

impl Device {
    fn local(&self, t: f64) -> f64 {
        SERVER_EPOCH_MS + t + self.skew + self.drift * t
    }
    fn to_true(&self, local: f64) -> f64 {
        (local - SERVER_EPOCH_MS - self.skew) / (1.0 + self.drift)
    }
    /// True time of a local deadline, after throttling, just past it.
    fn wake(&self, local: f64) -> f64 {
        let local = if self.throttled {
            (local / 1000.0).ceil() * 1000.0
        } else {
            local
        };
        self.to_true(local) + 1e-3
    }
}

/// Figures of one run.
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    /// Pairwise |position difference| between devices at common instants, steady state, ms.
    pub pairwise_ms: Vec<f64>,
    /// The part of `pairwise_ms` measured in mesh mode, ms.
    pub mesh_pairwise_ms: Vec<f64>,
    /// |device − room state| at common instants, steady state, ms.
    pub vs_room_ms: Vec<f64>,
    /// Clock offset error of each device when its join burst ended, ms (signed).
    pub burst_offset_error_ms: Vec<f64>,
    /// Clock offset error of every device once per second after its burst, ms (signed).
    pub offset_error_ms: Vec<f64>,
    /// Per late joiner: true ms from its join until it stayed within `in_sync_ms` for 1 s
    /// (`None`: never).
    pub join_to_sync_ms: Vec<Option<f64>>,
    /// Per late joiner, the same as the browser test measures it: from its join to the first
    /// of its follower's own drift readings (as the page logs them: mid-excursion readings
    /// included, none during a start or seek) that opens 1 s of readings all within
    /// `in_sync_ms` (the last at least 900 ms later), ms (`None`: never).
    pub join_to_sync_readings_ms: Vec<Option<f64>>,
    /// Per late joiner: from its join to its first steady drift reading (not during an
    /// excursion, none acted on) within `in_sync_ms`, ms (where `join_to_sync_readings_ms`
    /// would be if nothing took it out of sync again).
    pub join_to_first_in_sync_reading_ms: Vec<Option<f64>>,
    /// Per late joiner: excursions it started on an error within `in_sync_ms` in the 1 s
    /// after that first reading (each takes it out of sync: Chromium loses ~20 ms on one).
    pub refinements_right_after_in_sync: Vec<usize>,
    /// Seeks issued by followers (all devices).
    pub seeks: usize,
    /// Status changes between `in-sync` and `correcting` (either way), per device: a
    /// follower acting on its reading's noise flips between them.
    pub status_flips: Vec<usize>,
    /// Excursions (rate nudges) started, per device.
    pub excursions: Vec<usize>,
    /// `NeedsUserGesture` events per device.
    pub gesture_events: Vec<usize>,
    /// Changes refused by the authority, by code.
    pub refused: Vec<String>,
    /// Final room state.
    pub final_state: Option<RoomState>,
    /// Mesh mode: peer-ordered changes a follower's room accepted (its `control` events),
    /// over all followers.
    pub mesh_followed: usize,
    /// Mesh mode: for each peer-ordered change a follower's room accepted, how long before it
    /// takes effect it arrived (its `referenceTime` − the room's clock at receipt), ms.
    pub mesh_lead_at_receipt_ms: Vec<f64>,
    /// Steady-state samples where a device was on the wrong track or stopped.
    pub wrong_track: usize,
    /// The largest steady-state |error| vs the room: (true ms, device, error ms).
    pub worst: Option<(f64, usize, f64)>,
    /// Each device's raw clock skew against the server at the start, ms (what an
    /// unsynchronized `Date.now()` is off by).
    pub skews_ms: Vec<f64>,
    /// Per device, per tick while the room plays after it joined: (true ms, error ms vs the
    /// room, element playing). The error is infinite on the wrong track.
    pub traces: Vec<Vec<(f64, f64, bool)>>,
}

/// Error bound defining "in sync" for join-to-sync, ms.
pub const IN_SYNC_MS: f64 = 10.0;

/// The simulation (module docs).
pub struct Sim {
    cfg: SimConfig,
    rng: fastrand::Rng,
    now: f64,
    seq: u64,
    heap: BinaryHeap<Delivery>,
    /// Last delivery time per (device, direction) for in-order delivery.
    fifo: Vec<[f64; 2]>,
    authority: RoomAuthority,
    /// Every state the authority produced, in order (the truth).
    history: Vec<RoomState>,
    devices: Vec<Device>,
    dict: Dictionary,
    report: SimReport,
    next_tick: f64,
    next_offset_sample: f64,
    script_at: usize,
    trace: bool,
    /// The controller's device once the server is lost in mesh mode.
    mesh_host: Option<usize>,
    /// Last delivery time per (from, to) device link in mesh mode.
    mesh_fifo: std::collections::HashMap<(usize, usize), f64>,
}

impl Sim {
    /// A simulation of `cfg`.
    pub fn new(cfg: SimConfig) -> Sim {
        let mut rng = fastrand::Rng::with_seed(cfg.seed);
        let uni = |rng: &mut fastrand::Rng, lo: f64, hi: f64| lo + rng.f64() * (hi - lo);
        let naive = cfg.mode != Mode::Synced;
        let authority_cfg = if naive {
            AuthorityConfig {
                min_lead_ms: 0.0,
                max_lead_ms: 0.0,
                lead_margin_ms: 0.0,
                ..Default::default()
            }
        } else {
            AuthorityConfig::default()
        };
        let devices = (0..cfg.devices)
            .map(|i| {
                let skew = uni(&mut rng, -cfg.max_skew_ms, cfg.max_skew_ms);
                let drift = uni(&mut rng, -cfg.max_drift_ppm, cfg.max_drift_ppm) * 1e-6;
                let mut player = Player {
                    track: None,
                    ready_at: 0.0,
                    pos: 0.0,
                    anchor: 0.0,
                    playing: false,
                    moving_from: 0.0,
                    seek_done: 0.0,
                    rate: 1.0,
                    media_drift: uni(&mut rng, -cfg.max_drift_ppm, cfg.max_drift_ppm) * 1e-6,
                    start_latency: match (cfg.chromium_media, cfg.chromium_loaded) {
                        (true, true) => uni(&mut rng, 105.0, 125.0),
                        (true, false) => uni(&mut rng, 65.0, 80.0),
                        _ => uni(&mut rng, 10.0, 60.0),
                    },
                    seek_delay: match (cfg.chromium_media, cfg.chromium_loaded) {
                        (true, true) => uni(&mut rng, 105.0, 125.0),
                        (true, false) => uni(&mut rng, 85.0, 100.0),
                        _ => uni(&mut rng, 20.0, 80.0),
                    },
                    load_delay: uni(&mut rng, 100.0, 300.0),
                    blocked: cfg.autoplay_blocked.contains(&i),
                    chromium: cfg.chromium_media,
                    starts: 0,
                    play_issued: f64::NEG_INFINITY,
                    excursion_cost: uni(&mut rng, 18.0, 22.0),
                    rate_latency: if cfg.chromium_loaded {
                        uni(&mut rng, 130.0, 175.0)
                    } else if cfg.chromium_media {
                        uni(&mut rng, 130.0, 150.0)
                    } else {
                        0.0
                    },
                    applied_rate: 1.0,
                    pending_rates: std::collections::VecDeque::new(),
                    step_ms: 0.0,
                    step_phase: 0.0,
                };
                // Drawn only for a coarse `currentTime`, so that the other profiles' runs
                // (their random streams) stay those of before it existed.
                if cfg.currenttime_step_ms > 0.0 {
                    player.step_ms = cfg.currenttime_step_ms * uni(&mut rng, 0.95, 1.05);
                    player.step_phase = uni(&mut rng, 0.0, cfg.currenttime_step_ms);
                }
                Device {
                    id: format!("dev-{i}"),
                    skew,
                    drift,
                    room: Room::new("sim", cfg.follower.clone(), None, Millis::new(0.0)),
                    player,
                    stamper: ControlStamper::new(),
                    joined_at: None,
                    throttled: cfg.throttled.contains(&i),
                    room_due: f64::INFINITY,
                    naive_due: None,
                    naive_pending: None,
                    burst_error_ms: None,
                    gesture_events: 0,
                    trace: vec![],
                    readings: vec![],
                    steady_readings: vec![],
                    excursions: vec![],
                    nudging: false,
                    status: "waiting",
                }
            })
            .collect();
        let mut script = cfg.script.clone();
        script.sort_by(|a, b| a.0.total_cmp(&b.0));
        let cfg = SimConfig { script, ..cfg };
        Sim {
            fifo: vec![[f64::NEG_INFINITY; 2]; cfg.devices],
            authority: RoomAuthority::new(authority_cfg, SERVER_EPOCH_MS),
            history: vec![RoomState::new(SERVER_EPOCH_MS)],
            devices,
            dict: Dictionary::v1(),
            report: SimReport {
                gesture_events: vec![0; cfg.devices],
                status_flips: vec![0; cfg.devices],
                ..Default::default()
            },
            next_tick: 0.0,
            next_offset_sample: 0.0,
            script_at: 0,
            mesh_host: None,
            mesh_fifo: Default::default(),
            trace: std::env::var_os("P3_SIM_TRACE").is_some(),
            rng,
            now: 0.0,
            seq: 0,
            heap: BinaryHeap::new(),
            cfg,
        }
    }

    fn server_ms(&self, t: f64) -> f64 {
        SERVER_EPOCH_MS + t
    }

    /// The room's clock at true time `t`: the server's, or in mesh mode the host's kept
    /// server clock.
    fn room_ms(&self, t: f64) -> f64 {
        match self.mesh_host {
            Some(h) => {
                let d = &self.devices[h];
                d.room.clock().server_now(d.local(t))
            }
            None => self.server_ms(t),
        }
    }

    fn send(&mut self, dest: Dest, msg: Msg) {
        let (dev, dir) = match dest {
            Dest::Server(i) => (i, 0),
            Dest::Device(i) => (i, 1),
        };
        if self.mesh_host.is_some() {
            // The server is gone.
            return;
        }
        let link = &self.cfg.link;
        let is_probe = matches!(msg, Msg::Ping { .. } | Msg::Pong { .. });
        if is_probe && self.rng.f64() < link.probe_drop {
            return;
        }
        let mut delay = link.base_ms + (self.rng.f64() * 2.0 - 1.0) * link.jitter_ms;
        if self.rng.f64() < link.loss {
            delay += link.retransmit_ms;
        }
        let at = (self.now + delay).max(self.fifo[dev][dir]);
        self.fifo[dev][dir] = at;
        self.seq += 1;
        self.heap.push(Delivery {
            at,
            seq: self.seq,
            dest,
            msg,
        });
    }

    /// Mesh mode: `msg` from device `from` to device `to` over their DataChannel link.
    fn send_peer(&mut self, from: usize, to: usize, msg: Msg) {
        let link = self.cfg.mesh.as_ref().expect("mesh mode").link.clone();
        let is_probe = matches!(msg, Msg::PeerClock { .. });
        if is_probe && self.rng.f64() < link.probe_drop {
            return;
        }
        let mut delay = link.base_ms + (self.rng.f64() * 2.0 - 1.0) * link.jitter_ms;
        if self.rng.f64() < link.loss {
            delay += link.retransmit_ms;
        }
        let last = self
            .mesh_fifo
            .entry((from, to))
            .or_insert(f64::NEG_INFINITY);
        let at = (self.now + delay).max(*last);
        *last = at;
        self.seq += 1;
        self.heap.push(Delivery {
            at,
            seq: self.seq,
            dest: Dest::Device(to),
            msg,
        });
    }

    fn send_sync(&mut self, dest: Dest, msg: &SyncMessage) {
        let bytes = encode_msgpack(&msg.to_value(), Some(&self.dict));
        self.send(dest, Msg::Sync(bytes));
    }

    fn decode(&self, bytes: &[u8]) -> SyncMessage {
        let v: Value = decode_msgpack(bytes, Some(&self.dict)).expect("decodes");
        SyncMessage::from_value(v).expect("a sync message")
    }

    /// Runs to the end and returns the figures.
    pub fn run(mut self) -> SimReport {
        loop {
            let mut next = self.cfg.end_ms;
            if let Some(d) = self.heap.peek() {
                next = next.min(d.at);
            }
            if let Some((t, _)) = self.cfg.script.get(self.script_at) {
                next = next.min(*t);
            }
            next = next.min(self.next_tick);
            for d in &self.devices {
                if d.joined_at.is_some() {
                    next = next.min(d.room_due);
                    if let Some(f) = d.naive_due {
                        next = next.min(f);
                    }
                }
            }
            if next >= self.cfg.end_ms {
                break;
            }
            self.now = next.max(self.now);
            if self.mesh_host.is_none()
                && self
                    .cfg
                    .mesh
                    .as_ref()
                    .is_some_and(|m| self.now >= m.from_ms)
            {
                let host = self.cfg.mesh.as_ref().expect("mesh").host;
                self.lose_server(host);
            }
            // Deliveries due.
            while self.heap.peek().is_some_and(|d| d.at <= self.now) {
                let d = self.heap.pop().expect("peeked");
                match d.dest {
                    Dest::Server(i) => self.on_server(i, d.msg),
                    Dest::Device(i) => self.on_device(i, d.msg),
                }
            }
            // Script.
            while let Some((t, step)) = self.cfg.script.get(self.script_at).cloned() {
                if t > self.now {
                    break;
                }
                self.script_at += 1;
                self.on_step(step);
            }
            // Device timers.
            for i in 0..self.devices.len() {
                if self.devices[i].joined_at.is_none() {
                    continue;
                }
                if self.devices[i].room_due <= self.now {
                    self.room_wake(i);
                }
                if self.devices[i].naive_due.is_some_and(|f| f <= self.now) {
                    self.devices[i].naive_due = None;
                    self.naive_apply(i);
                }
            }
            if self.next_tick <= self.now {
                self.measure();
                self.next_tick += self.cfg.tick_ms;
            }
        }
        self.finish()
    }

    fn on_step(&mut self, step: Step) {
        match step {
            Step::Join(i) => {
                let now = self.now;
                let mesh = self.cfg.mesh.is_some();
                let d = &mut self.devices[i];
                d.joined_at = Some(now);
                let local = d.local(now);
                let origin = mesh.then(|| d.id.clone());
                d.room = Room::new("sim", self.cfg.follower.clone(), origin, Millis::new(local));
                d.room_due = now;
                if mesh {
                    self.join_mesh(i);
                }
                self.send(Dest::Server(i), Msg::Join);
            }
            Step::Control(i, action, mut data) => {
                let now = self.now;
                let d = &mut self.devices[i];
                let local = d.local(now);
                let wall = local.round();
                if self.cfg.mode != Mode::Synced {
                    let state = d
                        .naive_pending
                        .clone()
                        .unwrap_or_else(|| self.history.last().cloned().expect("history"));
                    data.from = Some(d.id.clone());
                    data.timestamp = Some(wall);
                    let change = d.stamper.stamp(&state, action, data);
                    self.send_sync(Dest::Server(i), &SyncMessage::MusicControl(change));
                } else if d.room.peer_ordered() {
                    match d.room.order_change(action, data, wall, Millis::new(local)) {
                        Ok((state, _record)) => self.history.push(state),
                        Err(e) => self.report.refused.push(e.code().as_str().to_owned()),
                    }
                    self.drain(i);
                } else {
                    data.from = Some(d.id.clone());
                    let value = d.room.stamp_server_change(action, data, wall);
                    let msg = SyncMessage::from_value(value).expect("a music-control");
                    self.send_sync(Dest::Server(i), &msg);
                }
            }
            Step::Gesture(i) => {
                let now = self.now;
                let d = &mut self.devices[i];
                d.player.blocked = false;
                let local = d.local(now);
                d.room.handle_user_gesture(Millis::new(local));
                self.drain(i);
            }
        }
    }

    /// Mesh mode: device `i` opens its mesh (as its id), takes the room key and links to every
    /// device already in the room (both ends learn the link); without the server its tier is
    /// `webrtc` at once.
    fn join_mesh(&mut self, i: usize) {
        let now = self.now;
        let seed = self.cfg.seed;
        let d = &mut self.devices[i];
        let local = d.local(now);
        let id = d.id.clone();
        d.room.handle_mesh_open(&id);
        d.room.handle_joined();
        let mut salt = [0u8; 16];
        fastrand::Rng::with_seed(seed ^ ((i as u64 + 1) * 0x9e37)).fill(&mut salt);
        d.room
            .handle_room_key(1, ROOM_KEY, &id, || Ok(salt), Millis::new(local))
            .expect("a valid key");
        let others: Vec<usize> = (0..self.devices.len())
            .filter(|&j| j != i && self.devices[j].joined_at.is_some())
            .collect();
        for j in others {
            let (a, b) = (self.devices[i].id.clone(), self.devices[j].id.clone());
            self.devices[i]
                .room
                .handle_peer_link(&b, PeerLink::Connected);
            self.devices[j]
                .room
                .handle_peer_link(&a, PeerLink::Connected);
            self.drain(j);
        }
        if self.mesh_host.is_some() {
            self.devices[i]
                .room
                .handle_tier(Tier::Socket, Tier::Webrtc, TierReason::SocketClosed);
        }
        self.drain(i);
    }

    /// Mesh mode: the server is lost; every joined device's tier goes `socket` → `webrtc`
    /// (its room runs the election and reroutes its clock), and `host` (the DJ) is expected
    /// to be the controller the rooms agree on.
    fn lose_server(&mut self, host: usize) {
        self.mesh_host = Some(host);
        for i in 0..self.devices.len() {
            if self.devices[i].joined_at.is_some() {
                self.devices[i].room.handle_tier(
                    Tier::Socket,
                    Tier::Webrtc,
                    TierReason::SocketClosed,
                );
                self.drain(i);
            }
        }
    }

    fn on_server(&mut self, i: usize, msg: Msg) {
        let now_server = self.server_ms(self.now);
        let id = self.devices[i].id.clone();
        match msg {
            Msg::Join => {
                let mut snap = self.authority.join(&id);
                if self.cfg.mode != Mode::Synced {
                    // The naive server resolves the position to "now".
                    if let SyncMessage::SyncState { data } = &mut snap {
                        data.position_s = data.position_at(now_server);
                        data.ref_server_ms = now_server;
                    }
                }
                self.send_sync(Dest::Device(i), &snap);
            }
            Msg::Ping { client_time, rtt } => {
                if let Some(rtt) = rtt {
                    self.authority.update_member_rtt(&id, rtt);
                }
                let server_time = now_server.floor();
                self.send(
                    Dest::Device(i),
                    Msg::Pong {
                        client_time,
                        server_time,
                    },
                );
            }
            Msg::Sync(bytes) => {
                let SyncMessage::MusicControl(change) = self.decode(&bytes) else {
                    panic!("devices only send music-control")
                };
                match self.authority.handle_control(&id, &change, now_server) {
                    Ok(Decision::Applied { state, .. }) => {
                        if self.trace {
                            eprintln!(
                                "{:.1} state {:?} ref {:.1} pos {:.3} playing {}",
                                self.now,
                                state.version(),
                                state.ref_server_ms - SERVER_EPOCH_MS,
                                state.position_s,
                                state.is_playing
                            );
                        }
                        self.history.push(state.clone());
                        let msg = SyncMessage::SyncState { data: state };
                        for j in 0..self.devices.len() {
                            if self.devices[j].joined_at.is_some() {
                                self.send_sync(Dest::Device(j), &msg);
                            }
                        }
                    }
                    Ok(Decision::Ignored) => {}
                    Err(e) => self.report.refused.push(e.code().as_str().to_owned()),
                }
            }
            Msg::Pong { .. } | Msg::Mesh { .. } | Msg::PeerClock { .. } => unreachable!(),
        }
    }

    fn on_device(&mut self, i: usize, msg: Msg) {
        let now = self.now;
        let mode = self.cfg.mode;
        match msg {
            Msg::Pong {
                client_time,
                server_time,
            } => {
                let server_now = self.server_ms(now);
                let d = &mut self.devices[i];
                let local = d.local(now);
                d.room
                    .handle_server_pong(client_time, server_time, Millis::new(local));
                let c = d.room.clock();
                if d.burst_error_ms.is_none() && c.is_synced() && !c.in_burst() {
                    d.burst_error_ms = Some(c.server_now(local) - server_now);
                }
            }
            Msg::Sync(bytes) => {
                let SyncMessage::SyncState { data } = self.decode(&bytes) else {
                    panic!("the server only sends sync-state")
                };
                let d = &mut self.devices[i];
                let local = d.local(now);
                if mode == Mode::Synced {
                    d.room.handle_server_state(data, None, Millis::new(local));
                } else {
                    self.naive_receive(i, data);
                }
            }
            Msg::Mesh { from, value } => {
                let from = self.devices[from].id.clone();
                let d = &mut self.devices[i];
                let local = d.local(now);
                d.room
                    .handle_mesh_message(&from, &value, Millis::new(local));
            }
            Msg::PeerClock { from, probe } => {
                let from = self.devices[from].id.clone();
                let d = &mut self.devices[i];
                let local = d.local(now);
                match probe {
                    ClockProbe::Ping { client_time } => {
                        d.room
                            .handle_peer_clock_ping(&from, client_time, Millis::new(local))
                    }
                    ClockProbe::Pong {
                        client_time,
                        server_time,
                    } => d.room.handle_peer_clock_pong(
                        &from,
                        client_time,
                        server_time,
                        Millis::new(local),
                    ),
                }
            }
            Msg::Ping { .. } | Msg::Join => unreachable!(),
        }
        self.drain(i);
    }

    /// The room's timer: a media sample if the follower asked for one, then the room's
    /// outputs (a due clock probe among them).
    fn room_wake(&mut self, i: usize) {
        let now = self.now;
        let d = &mut self.devices[i];
        let local = d.local(now);
        if d.room.follower_due() <= Millis::new(local) {
            let edge = if self.cfg.edge_readings && d.room.follower().wants_edge_sample() {
                d.player.edge_sample(now, local, &mut self.rng)
            } else {
                None
            };
            let sample = edge.unwrap_or_else(|| d.player.sample(now, local, &mut self.rng));
            d.room.handle_media_sample(sample);
        }
        self.drain(i);
    }

    /// Executes the room's outputs: media commands on the player, probes and mesh sends on
    /// the links; records what the measurements need.
    fn drain(&mut self, i: usize) {
        let now = self.now;
        loop {
            let d = &mut self.devices[i];
            let local = d.local(now);
            match d.room.poll_output(Millis::new(local)) {
                Output::Media(cmd) => {
                    if self.trace {
                        eprintln!("{now:.1} dev-{i} {cmd:?} pos {:.4}", d.player.position(now));
                    }
                    if matches!(cmd, MediaCommand::Seek { .. }) {
                        self.report.seeks += 1;
                    }
                    if d.player.apply(&cmd, now, &mut self.rng).is_err() {
                        d.room.handle_play_rejected(Millis::new(local));
                    }
                }
                Output::Event(RoomEvent::NeedsUserGesture) => {
                    self.report.gesture_events[i] += 1;
                }
                Output::Event(RoomEvent::Status { status }) => {
                    let flip = |s: &str| s == "in-sync" || s == "correcting";
                    if flip(status) && flip(d.status) && status != d.status {
                        self.report.status_flips[i] += 1;
                    }
                    d.status = status;
                }
                Output::Event(RoomEvent::Control { .. })
                    if self.mesh_host.is_some_and(|h| h != i) =>
                {
                    self.report.mesh_followed += 1;
                    let applies_at = d.room.latest().expect("accepted").ref_server_ms;
                    let lead = applies_at - self.room_ms(now);
                    self.report.mesh_lead_at_receipt_ms.push(lead);
                }
                Output::Event(RoomEvent::Drift {
                    error_ms,
                    rate,
                    correction,
                    ..
                }) => {
                    if self.trace {
                        let pos = d.player.position(now);
                        let room = self.room_ms(now);
                        let truth = self.truth(room).position_at(room);
                        eprintln!(
                            "{now:.1} dev-{i} drift {error_ms:.1} rate {rate} {correction} true {:.1}",
                            (pos - truth) * 1000.0
                        );
                    }
                    let d = &mut self.devices[i];
                    d.readings.push((now, error_ms));
                    if correction == "none" {
                        d.steady_readings.push((now, error_ms));
                    }
                    if correction == "nudge" && rate != 1.0 && !d.nudging {
                        d.excursions.push((now, error_ms));
                    }
                    d.nudging = correction == "nudge";
                }
                Output::Ping {
                    client_time,
                    rtt_ms,
                } => self.send(
                    Dest::Server(i),
                    Msg::Ping {
                        client_time,
                        rtt: rtt_ms,
                    },
                ),
                Output::PeerClock { to, probe } => {
                    if let Some(j) = self.devices.iter().position(|d| d.id == to) {
                        self.send_peer(i, j, Msg::PeerClock { from: i, probe });
                    }
                }
                Output::MeshSend { value, to } => {
                    let targets: Vec<usize> = (0..self.devices.len())
                        .filter(|&j| j != i && self.devices[j].joined_at.is_some())
                        .filter(|&j| to.as_ref().map_or(true, |t| *t == self.devices[j].id))
                        .collect();
                    for j in targets {
                        self.send_peer(
                            i,
                            j,
                            Msg::Mesh {
                                from: i,
                                value: value.clone(),
                            },
                        );
                    }
                }
                Output::Timeout(t) => {
                    let d = &mut self.devices[i];
                    d.room_due = t
                        .deadline()
                        .map_or(f64::INFINITY, |l| d.wake(l.get()).max(now));
                    break;
                }
                // The hub (every device links to every other here) and other events.
                _ => {}
            }
        }
    }

    // ---- naive baselines ----

    fn naive_receive(&mut self, i: usize, state: RoomState) {
        let now = self.now;
        let d = &mut self.devices[i];
        if d.naive_pending
            .as_ref()
            .is_some_and(|s| s.version() >= state.version())
        {
            return;
        }
        if state.track_id.is_some() && d.player.track != state.track_id {
            let cmd = MediaCommand::Load {
                track_id: state.track_id.clone().expect("some"),
                track: None,
            };
            d.player.apply(&cmd, now, &mut self.rng).ok();
        }
        let local = d.local(now);
        let mut s = state;
        if self.cfg.mode == Mode::SeedTimestamps {
            // calculateSyncPosition(remotePos, remoteTimestamp, Date.now()).
            s.position_s = s.position_at(local);
        }
        // Otherwise the position is taken as "now", on receipt.
        s.ref_server_ms = f64::NAN;
        d.naive_pending = Some(s);
        self.naive_apply(i);
    }

    fn naive_apply(&mut self, i: usize) {
        let now = self.now;
        let d = &mut self.devices[i];
        let Some(s) = d.naive_pending.clone() else {
            return;
        };
        if !s.ref_server_ms.is_nan() || s.track_id.is_none() {
            return;
        }
        if now < d.player.ready_at {
            d.naive_due = Some(d.player.ready_at);
            return;
        }
        // Elapsed since receipt while loading counts (the naive device uses its own timer).
        let mut p = s;
        p.ref_server_ms = 0.0; // applied
        d.naive_pending = Some(p.clone());
        let seek = MediaCommand::Seek { to_s: p.position_s };
        d.player.apply(&seek, now, &mut self.rng).ok();
        let cmd = if p.is_playing {
            MediaCommand::Play
        } else {
            MediaCommand::Pause
        };
        if d.player.apply(&cmd, now, &mut self.rng).is_err() {
            d.gesture_events += 1;
        }
    }

    // ---- measurement ----

    fn truth(&self, server_ms: f64) -> &RoomState {
        self.history
            .iter()
            .rev()
            .find(|s| s.ref_server_ms <= server_ms)
            .unwrap_or(&self.history[0])
    }

    fn measure(&mut self) {
        let t = self.now;
        let server = self.room_ms(t);
        let truth = self.truth(server).clone();
        // Offset error once a second.
        if t >= self.next_offset_sample {
            self.next_offset_sample += 1000.0;
            for d in &self.devices {
                if d.burst_error_ms.is_some() {
                    let e = d.room.clock().server_now(d.local(t)) - server;
                    self.report.offset_error_ms.push(e);
                }
            }
        }
        if !truth.is_playing || truth.track_id.is_none() {
            return;
        }
        let target = truth.position_at(server);
        if truth.duration_s().is_some_and(|d| target >= d - 0.1) {
            return;
        }
        // Steady: no change took effect in the last settle_ms, and none is about to (a device
        // whose clock is a little ahead applies it a little early).
        let settle = self.cfg.settle_ms;
        let steady = !self
            .history
            .iter()
            .any(|s| server >= s.ref_server_ms - 50.0 && server < s.ref_server_ms + settle);
        let mut errs = vec![];
        for (i, d) in self.devices.iter_mut().enumerate() {
            let Some(joined) = d.joined_at else {
                continue;
            };
            let on_track = d.player.track == truth.track_id;
            let e = if on_track {
                (d.player.position(t) - target) * 1000.0
            } else {
                f64::INFINITY
            };
            d.trace.push((t, e, d.player.moving(t)));
            if steady && t >= joined + 3000.0 {
                if !self.report.worst.is_some_and(|w| w.2.abs() >= e.abs()) {
                    self.report.worst = Some((t, i, e));
                }
                if !on_track || !d.player.playing {
                    self.report.wrong_track += 1;
                } else {
                    errs.push(e);
                }
            }
        }
        for (k, a) in errs.iter().enumerate() {
            self.report.vs_room_ms.push(a.abs());
            for b in &errs[k + 1..] {
                self.report.pairwise_ms.push((a - b).abs());
                if self.mesh_host.is_some() {
                    self.report.mesh_pairwise_ms.push((a - b).abs());
                }
            }
        }
    }

    fn finish(mut self) -> SimReport {
        let late: Vec<usize> = self
            .cfg
            .script
            .iter()
            .filter_map(|(t, s)| match s {
                Step::Join(i) if *t > 5000.0 => Some(*i),
                _ => None,
            })
            .collect();
        for i in late {
            let d = &self.devices[i];
            let joined = d.joined_at.unwrap_or(f64::INFINITY);
            // First instant after which the error stays within IN_SYNC_MS for 1 s.
            let mut found = None;
            let tr = &d.trace;
            'outer: for (k, &(t, _, _)) in tr.iter().enumerate() {
                if t < joined {
                    continue;
                }
                for &(t2, e2, _) in &tr[k..] {
                    if t2 > t + 1000.0 {
                        break;
                    }
                    if e2.abs() > IN_SYNC_MS {
                        continue 'outer;
                    }
                }
                if tr.last().is_some_and(|l| l.0 >= t + 1000.0) {
                    found = Some(t - joined);
                }
                break;
            }
            self.report.join_to_sync_ms.push(found);
            self.report
                .join_to_sync_readings_ms
                .push(in_sync_from_readings(&d.readings, joined).map(|t| t - joined));
            let first = d
                .steady_readings
                .iter()
                .find(|r| r.0 >= joined && r.1.abs() <= IN_SYNC_MS)
                .map(|r| r.0);
            self.report
                .join_to_first_in_sync_reading_ms
                .push(first.map(|f| f - joined));
            self.report
                .refinements_right_after_in_sync
                .push(first.map_or(0, |f| {
                    d.excursions
                        .iter()
                        .filter(|x| x.0 >= f && x.0 < f + 1000.0 && x.1.abs() <= IN_SYNC_MS)
                        .count()
                }));
        }
        self.report.excursions = self.devices.iter().map(|d| d.excursions.len()).collect();
        for d in &self.devices {
            if let Some(e) = d.burst_error_ms {
                self.report.burst_offset_error_ms.push(e);
            }
        }
        if self.cfg.mode != Mode::Synced {
            for (i, d) in self.devices.iter().enumerate() {
                self.report.gesture_events[i] += d.gesture_events;
            }
        }
        self.report.final_state = Some(match self.mesh_host {
            // Ordered by the controller's room.
            Some(_) => self.history.last().cloned().expect("history"),
            None => self.authority.state().clone(),
        });
        self.report.skews_ms = self.devices.iter().map(|d| d.skew).collect();
        self.report.traces = self
            .devices
            .iter_mut()
            .map(|d| std::mem::take(&mut d.trace))
            .collect();
        self.report
    }
}

/// The first reading time (true ms, at or after `from`) that opens a window of 1 s of readings
/// all within [`IN_SYNC_MS`], the last of them at least 900 ms later (the browser test's rule,
/// `tests/music-sync-three-browsers.spec.mjs`).
fn in_sync_from_readings(readings: &[(f64, f64)], from: f64) -> Option<f64> {
    let start = readings.partition_point(|r| r.0 < from);
    let r = &readings[start..];
    (0..r.len()).find_map(|k| {
        let t = r[k].0;
        let window: Vec<&(f64, f64)> = r[k..].iter().take_while(|x| x.0 <= t + 1000.0).collect();
        let spans = window.last().is_some_and(|l| l.0 - t >= 900.0);
        (spans && window.iter().all(|x| x.1.abs() <= IN_SYNC_MS)).then_some(t)
    })
}

/// The `q`-quantile (0..=1) of `v` (nearest rank); NaN when empty.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let k = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1;
    s[k]
}
