//! The device side of music sync: keeps one media element on the room's shared state
//! (issue #4 "Playback"; seed 004 `calculateSyncPosition`, Success Metrics "<100 ms drift").
//!
//! [`Follower`] is sans-IO. It takes room states ([`RoomState`]), the local → shared clock
//! mapping ([`ClockMapping`] from [`crate::core::sync::clock::ClockSync`]) and samples of the
//! media element, and returns media commands ([`MediaCommand`]), events and its next deadline.
//! It never touches a media element: the wasm binding maps the commands onto an
//! `HTMLMediaElement`, an app with a custom player maps them onto its own callbacks.
//!
//! # Target
//! At local time `t` the element should be at `state.position_at(mapping.to_server(t))`, where
//! `state` is the newest state whose reference time has passed. States that take effect in the
//! future (a change's `applyAt`) wait in a queue and switch in at that instant.
//! The error is `media position − target`, in ms of media time (positive: ahead).
//!
//! # Correction ladder (thresholds are [`FollowerConfig`] fields)
//! The error is read only while the element plays at the room's rate and moves steadily:
//! a time-stretching player reports a biased position while it stretches (Chromium lags
//! 15-30 ms behind, in a sawtooth, at any rate other than 1), so corrections are measured at
//! the normal rate and applied open-loop.
//!
//! | error | action |
//! | --- | --- |
//! | < 5 ms (`deadband_ms`) | nothing: below what a listener can hear between two speakers |
//! | 5..=150 ms (`seek_threshold_ms`) | an **excursion**: `playbackRate` ±2 % (`max_nudge`) for exactly as long as it takes to gain or lose the error, then back to the room's rate, wait out the **rate latency** (`rate_latency_ms`: a rate change shows in the position only once the audio already queued for the output has played, Chromium 130-150 ms) and until steady, measure again. Browsers lose media time on every excursion (Chromium: 15-25 ms, 20 on average, whatever the rate and direction, when the time-stretched audio starts), so the follower learns this **excursion cost** (intended gain − achieved gain, averaged 1:1) and plans with it: being 7 ms ahead with a 20 ms cost means speeding up for 13 ms of gain. An excursion starts only after `confirm_readings` steady readings in a row beyond the deadband, so one odd reading never costs a dip; a settled position estimate over a window (browsers with a coarse `currentTime`, see "Position estimate") holds odd readings out and counts as confirmed. At least 40 ms long (`min_nudge_ms`); Chromium ignores rates within ±0.5 % of 1, hence fixed-size nudges. No dithering (the rate is either normal or nudged, for a computed time) and no overshoot beyond the player's noise |
//! | > 150 ms | seek to the target plus the learned seek latency; at most one such seek per 2 s (`seek_cooldown_ms`), so a slow device can never loop on seeks (no stutter loop) |
//!
//! For 2.5 s after each start (`catchup_window_ms`: join, play, a DJ's seek, a track change),
//! while the listener is already hearing a transition, errors above 30 ms
//! (`catchup_seek_threshold_ms`; browsers 10 ms, the in-sync bound) are fixed by a seek, at
//! most twice per start (`catchup_max_seeks`: the first one measures the seek latency, the
//! second lands; browsers 3), and excursions use ±5 % (`catchup_max_nudge`; browsers ±10 %):
//! a first start carries an unknown start latency (Chromium: 70-125 ms), and this removes it
//! within a second. Browsers keep the pitch at such rates (`preservesPitch`). A catch-up seek
//! is decided only on an unbiased reading, never on one taken during an excursion (the
//! excursion's own dip would look like a missed start and cost a seek and another
//! excursion). A device joining a room already playing leaves errors within `in_sync_ms`
//! alone until its readings have been within that bound for `landing_hold_ms` (browsers 1 s):
//! the refinement's excursion would first lose its cost (Chromium ~20 ms) and take the page
//! out of sync again, alone in a room that is in sync.
//!
//! # Position estimate
//! The error is that of the element's position estimated from its steady readings since the
//! last start, seek, pause, load or excursion ([`crate::core::sync::position`], chosen by
//! `FollowerConfig::position`), not of one reading: a browser refreshes `currentTime` only
//! every few ms (headless Firefox about every 40 ms), so one reading can be a quantum stale.
//! Excursions, catch-up seeks, the landing hold, the learned latencies and the in-sync status
//! act only on a settled estimate; the ladder's top rung (a seek beyond 150 ms) on any. The
//! sampling instants are dithered by up to the learned quantum so that readings fall on every
//! phase of the element's refresh, and taken at the fast period while the estimate settles. A
//! fine `currentTime` (quantum within the deadband: Chromium's) is its own estimate, each
//! reading confirmed by the next ones as natively. [`EstimatorConfig::SINGLE_READING`] (the
//! default: an ideal player) trusts each reading.
//!
//! # Scheduled changes and latencies
//! - A change takes effect at its `applyAt`: `pause` and a DJ's `seek` are issued at that
//!   instant; `play` from paused is prepared (a silent seek while paused) and `Play` is issued
//!   the learned start latency *before* `applyAt`, so that playback starts moving at `applyAt`.
//! - Seek and start latencies are learned: after each seek or start, once the media moves
//!   steadily (at its rate over 30 ms of readings: browsers report a position that moves
//!   and then stalls while the audio output starts; give or take the learned `currentTime`
//!   quantum), the error of the first settled position estimate gives the actual latency
//!   (`estimate − error`), averaged 1:1 with the estimate. No correction is made before.
//! - A late joiner (or a device whose `applyAt` passed while loading) starts at a short,
//!   planned instant: seek (paused) to where the room will be then, and play.
//!
//! # Browsers
//! - Autoplay policy: when `play()` is refused, call [`Follower::handle_play_rejected`]; the
//!   follower emits [`FollowerEvent::NeedsUserGesture`] and its status becomes
//!   [`FollowerStatus::NeedsUserGesture`]. Call [`Follower::handle_user_gesture`] from the
//!   click handler: it emits `Seek` + `Play` at once, inside the gesture.
//! - Background-tab throttling delays timers (to 1 s or more): the follower is state-based, so
//!   a late timer only means a late correction, never a wrong state: a late pause is re-aligned
//!   while paused, a late start is caught up by the ladder.
//!
//! # Drive contract
//! The one contract of [`crate::core::drive`] (`now` last, as [`Millis`]). After every
//! `handle_*` call, drain [`Follower::poll_output`] until it returns
//! [`FollowerOutput::Timeout`]: execute each [`MediaCommand`] on the element at once, in order;
//! hand events to the app. At the timeout (local ms), read the element and call
//! [`Follower::handle_media_sample`] (it also runs due timers); [`Follower::handle_timeout`]
//! does the same without a reading. Feed [`Follower::handle_clock`] whenever the clock mapping
//! changes and [`Follower::handle_state`] with every `sync-state` received.

use crate::core::drive::Millis;
use crate::core::sync::clock::ClockMapping;
use crate::core::sync::position::{EstimatorConfig, PositionEstimator};
use crate::core::sync::state::RoomState;
use serde_json::Value;
use std::collections::VecDeque;

/// Tuning of [`Follower`] (module docs, "Correction ladder"). Times in ms, rates as fractions.
#[derive(Clone, Debug, PartialEq)]
pub struct FollowerConfig {
    /// Errors below this are ignored, ms.
    pub deadband_ms: f64,
    /// Rate nudge of an excursion outside the catch-up window, fraction of the rate (0.02 =
    /// ±2 %).
    pub max_nudge: f64,
    /// Shortest excursion, ms.
    pub min_nudge_ms: f64,
    /// After a start (join, play, seek, track change), the catch-up window, ms.
    pub catchup_window_ms: f64,
    /// Rate nudge of an excursion in the catch-up window, fraction.
    pub catchup_max_nudge: f64,
    /// Media time an excursion is assumed to lose until one is measured, ms (0: an ideal
    /// player; Chromium measures 15-25, about 20 on average).
    pub initial_excursion_cost_ms: f64,
    /// How long after a `playbackRate` change the position starts to show it, ms: the audio
    /// already queued for the output plays at the old rate (Chromium, headless with its fake
    /// output: 130-150 ms; more with a Bluetooth sink). After an excursion the error is read
    /// only once this has passed (0: an ideal player).
    pub rate_latency_ms: f64,
    /// Readings beyond the deadband in a row (same sign) before an excursion starts: 2 ignores
    /// a single odd reading (a renderer stalled between reading the clock and the position),
    /// whose excursion would cost more than the error it fixes. 1: act on every reading.
    pub confirm_readings: u32,
    /// Errors above this are corrected by a seek, ms.
    pub seek_threshold_ms: f64,
    /// In the catch-up window, errors above this are corrected by a seek, ms: a start that
    /// missed by more (an unknown or changed start latency) is fixed at once while the
    /// listener hears the transition anyway, rather than by a long excursion.
    pub catchup_seek_threshold_ms: f64,
    /// At most this many such catch-up seeks per start or DJ's seek, in the catch-up window
    /// that began with it (the first one learns the seek latency, the second lands), without
    /// the cooldown; then the normal rules apply.
    pub catchup_max_seeks: u32,
    /// Least time between two corrective seeks, ms.
    pub seek_cooldown_ms: f64,
    /// A device joining a room that is already playing (a late joiner's first track, a start
    /// after a user's gesture or after the element paused on its own) leaves errors
    /// within `in_sync_ms` alone until its readings have been within that bound this long, ms
    /// (0: refined at once). A refinement's excursion first loses its cost (Chromium: about
    /// 20 ms), which would take a page that has just got in sync out of it, alone in a room
    /// that is in sync; right after a join the clock estimate is still tightening too, so
    /// part of a small error is the estimate's. Not after a DJ's change, which every device
    /// applies at once (the listener hears the transition anyway).
    pub landing_hold_ms: f64,
    /// Until a seek latency is measured, assume it is at least the measured start latency: a
    /// renderer slower to start than guessed is as slow to seek (both wait for the audio
    /// output to restart; Chromium on a loaded machine: 100-135 ms to start, 110-125 to seek,
    /// against the 70 and 90 ms guesses), so the first catch-up seek lands.
    pub seek_latency_from_start: bool,
    /// Error below which the follower reports [`FollowerStatus::InSync`], ms.
    pub in_sync_ms: f64,
    /// How the element's position is estimated from its steady readings
    /// ([`crate::core::sync::position`]): [`EstimatorConfig::SINGLE_READING`] trusts each
    /// reading (an ideal player, whose position reads exactly); browsers refresh
    /// `currentTime` only every few ms (Firefox: about 40), so their position is estimated
    /// from the readings since the last start, seek or excursion, and small corrections
    /// (excursions, catch-up seeks) wait until that estimate is settled.
    pub position: EstimatorConfig,
    /// Media sampling period when settled, ms.
    pub sample_interval_ms: f64,
    /// Media sampling period during a start, a seek or the catch-up window, ms.
    pub fast_sample_interval_ms: f64,
    /// Seek latency assumed until one is measured, ms.
    pub initial_seek_latency_ms: f64,
    /// Start (`play()`) latency assumed until one is measured, ms.
    pub initial_start_latency_ms: f64,
    /// Largest latency believed, ms (longer measurements are clamped).
    pub max_latency_ms: f64,
    /// A start or seek that has not moved the media after this long is given up on, ms.
    pub transition_timeout_ms: f64,
    /// A paused element further than this from the room's position is re-aligned, ms.
    pub paused_tolerance_ms: f64,
}

impl FollowerConfig {
    /// The defaults with the latencies of browsers' media elements as first guesses, measured
    /// in Chromium (headless, fake audio output): a first `play()` about 70 ms, a seek while
    /// playing about 90 ms, about 20 ms lost per rate excursion. They are learned anyway; good
    /// guesses save a correction on the first start. Excursions use ±5 % (±10 % in the
    /// catch-up window, where the listener hears a transition anyway): as every excursion
    /// first puts the element 20 ms further behind, a short one is better. Rate changes show
    /// 130-175 ms late on a loaded machine (250 ms are waited), an excursion needs two readings
    /// beyond the deadband, and within the catch-up window a start that missed the in-sync
    /// bound (10 ms) is fixed by a seek rather than by excursions, each of which would first
    /// cost its 20 ms dip; three such seeks, as a loaded renderer's seek latency varies
    /// (90-125 ms), the first guessed from the measured start latency. A joining device
    /// within 10 ms is left alone for 1 s before it is refined (the refinement's dip would
    /// take the page out of sync). The position is estimated from the readings over time
    /// (`EstimatorConfig::default()`), not from one `currentTime` reading.
    pub fn browser() -> FollowerConfig {
        FollowerConfig {
            initial_start_latency_ms: 70.0,
            initial_seek_latency_ms: 90.0,
            initial_excursion_cost_ms: 20.0,
            // Each excursion first loses its cost: a short one keeps the dip short.
            max_nudge: 0.05,
            rate_latency_ms: 250.0,
            catchup_max_nudge: 0.10,
            confirm_readings: 2,
            catchup_max_seeks: 3,
            catchup_seek_threshold_ms: 10.0,
            landing_hold_ms: 1000.0,
            seek_latency_from_start: true,
            position: EstimatorConfig::default(),
            ..FollowerConfig::default()
        }
    }
}

impl Default for FollowerConfig {
    fn default() -> Self {
        FollowerConfig {
            deadband_ms: 5.0,
            max_nudge: 0.02,
            min_nudge_ms: 40.0,
            catchup_window_ms: 2500.0,
            catchup_max_nudge: 0.05,
            initial_excursion_cost_ms: 0.0,
            rate_latency_ms: 0.0,
            confirm_readings: 1,
            seek_threshold_ms: 150.0,
            catchup_seek_threshold_ms: 30.0,
            catchup_max_seeks: 2,
            seek_cooldown_ms: 2000.0,
            landing_hold_ms: 0.0,
            seek_latency_from_start: false,
            in_sync_ms: 10.0,
            position: EstimatorConfig::SINGLE_READING,
            sample_interval_ms: 100.0,
            fast_sample_interval_ms: 20.0,
            initial_seek_latency_ms: 50.0,
            initial_start_latency_ms: 30.0,
            max_latency_ms: 1000.0,
            transition_timeout_ms: 2000.0,
            paused_tolerance_ms: 1.0,
        }
    }
}

/// One reading of the media element (`HTMLMediaElement` properties in brackets).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MediaSample {
    /// Local time of the reading, ms (`performance.now()`).
    pub local_ms: f64,
    /// Media position, s (`currentTime`).
    pub position_s: f64,
    /// Paused (`paused`).
    pub paused: bool,
    /// A seek is in progress (`seeking`).
    pub seeking: bool,
    /// Current rate (`playbackRate`).
    pub playback_rate: f64,
    /// Enough data to play (`readyState >= HAVE_FUTURE_DATA`).
    pub ready: bool,
    /// An edge reading taken just before this one, when [`Follower::wants_edge_sample`] asked
    /// for it and the driver could take one; `None` otherwise.
    pub edge: Option<EdgeReading>,
}

/// An edge reading of `currentTime` (PROTOCOL.md §12.5.2): read once per task until its value
/// changed, the new value was the element's position between the two reads around the change.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EdgeReading {
    /// Local time of the change: the midpoint of the two reads around it, ms.
    pub local_ms: f64,
    /// The new value, s.
    pub position_s: f64,
    /// How far apart the two reads were, ms (the reading is within half of it).
    pub span_ms: f64,
}

/// Something to do to the media element, at once and in order.
#[derive(Clone, Debug, PartialEq)]
pub enum MediaCommand {
    /// Load this track (set `src`); the element pauses and reports `ready` when it can play.
    Load {
        /// Track id.
        track_id: String,
        /// Full track data from the room state (e.g. `{url, title, duration}`), if any.
        track: Option<Value>,
    },
    /// `play()`. If the browser refuses it, call [`Follower::handle_play_rejected`].
    Play,
    /// `pause()`.
    Pause,
    /// Set `currentTime`, s.
    Seek {
        /// Target position, s.
        to_s: f64,
    },
    /// Set `playbackRate` (keep `preservesPitch` on).
    SetRate {
        /// New rate.
        rate: f64,
    },
}

/// Which rung of the ladder acted on a sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Correction {
    /// Within the deadband: nothing.
    None,
    /// An excursion of `playbackRate` started, runs or ended.
    Nudge,
    /// A seek was issued.
    Seek,
}

/// One drift measurement, for the demo's plot.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DriftSample {
    /// Local time of the sample, ms.
    pub local_ms: f64,
    /// Shared-clock time of the sample, server ms.
    pub server_ms: f64,
    /// Media position − room position, ms (positive: ahead). During an excursion it includes
    /// the player's bias while it stretches.
    pub error_ms: f64,
    /// Rate set after this sample.
    pub rate: f64,
    /// What the ladder did.
    pub correction: Correction,
}

/// What the follower is doing, for the UI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FollowerStatus {
    /// No clock mapping or no room state yet.
    Waiting,
    /// Loading a track.
    Loading,
    /// The room is paused (or has no track) and the element is aligned.
    Paused,
    /// Starting or seeking.
    Starting,
    /// Playing, error above `in_sync_ms`, being corrected.
    Correcting,
    /// Playing within `in_sync_ms`.
    InSync,
    /// The browser refused `play()`; waiting for [`Follower::handle_user_gesture`].
    NeedsUserGesture,
}

impl FollowerStatus {
    /// kebab-case name for JS, e.g. `"needs-user-gesture"`.
    pub fn as_str(self) -> &'static str {
        match self {
            FollowerStatus::Waiting => "waiting",
            FollowerStatus::Loading => "loading",
            FollowerStatus::Paused => "paused",
            FollowerStatus::Starting => "starting",
            FollowerStatus::Correcting => "correcting",
            FollowerStatus::InSync => "in-sync",
            FollowerStatus::NeedsUserGesture => "needs-user-gesture",
        }
    }
}

/// Something the app should hear about.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum FollowerEvent {
    /// `play()` was refused by the autoplay policy: show a control whose click handler calls
    /// [`Follower::handle_user_gesture`].
    NeedsUserGesture,
    /// A drift measurement (one per media sample while playing).
    Drift(DriftSample),
    /// The status changed.
    Status(FollowerStatus),
}

/// One output of [`Follower::poll_output`].
#[derive(Clone, Debug, PartialEq)]
#[must_use]
pub enum FollowerOutput {
    /// Execute on the media element now.
    Command(MediaCommand),
    /// Tell the app.
    Event(FollowerEvent),
    /// Nothing more now; sample the element and call [`Follower::handle_media_sample`] at this
    /// local time ([`Millis::NEVER`]: no deadline).
    Timeout(Millis),
}

crate::core::drive::machine!(Follower, FollowerOutput);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    /// Read the element.
    Sample = 0,
    /// The next queued state takes effect (or a start must be issued ahead of it).
    Apply = 1,
    /// Issue the planned `Play`.
    Launch = 2,
    /// End the running excursion.
    NudgeEnd = 3,
}

const TIMERS: [Timer; 4] = [Timer::Sample, Timer::Apply, Timer::Launch, Timer::NudgeEnd];

/// Smallest rate nudge, fraction: Chromium plays rates within ±0.5 % of 1 at 1.
const MIN_NUDGE: f64 = 0.005;

/// Largest excursion cost believed, ms.
const MAX_EXCURSION_COST_MS: f64 = 100.0;

/// A transition ends once the media moved steadily over at least this long, ms.
const STEADY_SPAN_MS: f64 = 30.0;

/// ... at its rate within this fraction (plus 1 ms).
const STEADY_TOLERANCE: f64 = 0.03;

/// A first moving reading taken this long after the command counts as steady, ms (the stall
/// after a start is over by then; throttled timers sample only every second).
const STEADY_AFTER_MS: f64 = 250.0;

/// A state within this of its reference time counts as in force (absorbs the rounding of the
/// local ↔ shared clock conversions), ms.
const PROMOTE_SLACK_MS: f64 = 0.01;

/// A planned start from paused: seek (silently) to `seek_to_s`, `Play` at `play_at_ms`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Launch {
    play_at_ms: f64,
    seek_to_s: f64,
    version: (u64, u64),
    seek_sent_ms: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TransitionKind {
    Start,
    Seek,
    /// Back to the room's rate after an excursion (nothing to learn from its latency).
    Rate,
}

/// A running excursion of `playbackRate` (module docs, "Correction ladder").
#[derive(Clone, Copy, Debug, PartialEq)]
struct Nudge {
    /// Local time the rate was set, ms.
    started_ms: f64,
    /// When to return to `base`, local ms.
    until_ms: f64,
    /// Signed rate offset, fraction of `base` (+: faster).
    delta: f64,
    /// The room's rate.
    base: f64,
    /// The error that started it, ms.
    error_before_ms: f64,
}

/// An ended excursion, waiting for a steady reading to learn its cost from.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Excursion {
    /// Media time the stretched part should have gained, ms.
    gain_ms: f64,
    /// The error before it, ms.
    error_before_ms: f64,
}

/// A start or seek waiting for the media to move steadily (then its latency is measured).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Transition {
    kind: TransitionKind,
    issued_ms: f64,
    /// Media position when issued (paused or seek target), s.
    from_s: f64,
    /// Learn the latency from it.
    learn: bool,
    /// Since the media moved: the reading that opened the current steadiness check
    /// `(local ms, position s)`.
    moving_since: Option<(f64, f64)>,
}

/// The device-side follower (see the module docs for the ladder and the drive contract). Local
/// times in ms, positions in s.
#[derive(Clone, Debug)]
pub struct Follower {
    config: FollowerConfig,
    clock: Option<ClockMapping>,
    /// States, oldest first; the front is in force once its reference time passed.
    states: VecDeque<RoomState>,
    /// A DJ's seek took effect and the element must jump.
    jump: bool,
    loaded: Option<String>,
    load_issued_ms: Option<f64>,
    /// `Play` issued and not paused since (the element should be playing).
    want_playing: bool,
    last: Option<MediaSample>,
    /// The element's position from its steady readings (reset whenever its motion changes).
    estimator: PositionEstimator,
    /// Readings taken (the sampling dither's index).
    readings_taken: u64,
    /// The last reading was unbiased but the estimate not settled yet: sample fast.
    settling: bool,
    /// Time between the last two samples, ms.
    sample_gap_ms: f64,
    launch: Option<Launch>,
    /// Version of the state the last `Play` was issued for.
    started_version: Option<(u64, u64)>,
    transition: Option<Transition>,
    /// A start or seek ended steadily; its latency is learned from the next settled estimate.
    learn_pending: Option<TransitionKind>,
    /// Local time of the last `Seek` issued, ms.
    last_seek_ms: f64,
    seek_cooldown_until: f64,
    catchup_until: f64,
    /// Since when the steady readings are all within `in_sync_ms` (since the last start, seek
    /// or excursion), local ms.
    in_sync_since: Option<f64>,
    /// The current start joins a room already playing (this follower's first track, a user's
    /// gesture, a restart after the element paused on its own), rather than a change every
    /// device applies at once: its landing is held (`landing_hold_ms`).
    joining: bool,
    /// Catch-up seeks left for the current start, and until when they may be used (local ms).
    catchup_seeks_left: u32,
    catchup_seeks_until: f64,
    nudge: Option<Nudge>,
    excursion: Option<Excursion>,
    /// Steady readings beyond the deadband in a row, and the smallest such error (signed, ms).
    beyond: (u32, f64),
    excursion_cost_ms: f64,
    excursion_learned: bool,
    seek_latency_ms: f64,
    start_latency_ms: f64,
    seek_learned: bool,
    start_learned: bool,
    blocked: bool,
    status: FollowerStatus,
    last_error_ms: Option<f64>,
    timers: [Option<f64>; 4],
    out: VecDeque<FollowerOutput>,
}

impl Follower {
    /// A follower with nothing loaded.
    pub fn new(config: FollowerConfig) -> Follower {
        Follower {
            seek_latency_ms: config.initial_seek_latency_ms,
            start_latency_ms: config.initial_start_latency_ms,
            excursion_cost_ms: config.initial_excursion_cost_ms,
            estimator: PositionEstimator::new(config.position),
            readings_taken: 0,
            settling: false,
            config,
            clock: None,
            states: VecDeque::new(),
            jump: false,
            loaded: None,
            load_issued_ms: None,
            want_playing: false,
            last: None,
            sample_gap_ms: 0.0,
            launch: None,
            started_version: None,
            transition: None,
            learn_pending: None,
            last_seek_ms: f64::NEG_INFINITY,
            seek_cooldown_until: f64::NEG_INFINITY,
            catchup_seeks_left: 0,
            catchup_seeks_until: f64::NEG_INFINITY,
            catchup_until: f64::NEG_INFINITY,
            in_sync_since: None,
            joining: false,
            nudge: None,
            excursion: None,
            beyond: (0, 0.0),
            excursion_learned: false,
            seek_learned: false,
            start_learned: false,
            blocked: false,
            status: FollowerStatus::Waiting,
            last_error_ms: None,
            timers: [None; 4],
            out: VecDeque::new(),
        }
    }

    // ---- getters ----

    /// Current status.
    pub fn status(&self) -> FollowerStatus {
        self.status
    }

    /// The newest room state received (possibly not in force yet).
    pub fn latest_state(&self) -> Option<&RoomState> {
        self.states.back()
    }

    /// The error of the last sample while playing, ms (positive: ahead).
    pub fn error_ms(&self) -> Option<f64> {
        self.last_error_ms
    }

    /// Where the element should be at local time `local_ms`, s (`None` without a clock
    /// mapping or a state).
    pub fn target_position(&self, local_ms: f64) -> Option<f64> {
        let server = self.clock?.to_server(local_ms);
        let s = self
            .states
            .iter()
            .rev()
            .find(|s| s.ref_server_ms <= server)
            .or(self.states.front())?;
        Some(s.position_at(server))
    }

    /// The learned seek latency, ms.
    pub fn seek_latency_ms(&self) -> f64 {
        self.seek_latency_ms
    }

    /// The learned start (`play()`) latency, ms.
    pub fn start_latency_ms(&self) -> f64 {
        self.start_latency_ms
    }

    /// The learned media time an excursion of `playbackRate` loses, ms.
    pub fn excursion_cost_ms(&self) -> f64 {
        self.excursion_cost_ms
    }

    // ---- inputs ----

    /// The local → shared clock mapping changed (or is first known).
    pub fn handle_clock(&mut self, mapping: ClockMapping, now: Millis) {
        let now_ms = now.get();
        self.clock = Some(mapping);
        self.run(now_ms, false);
    }

    /// A room state arrived (`sync-state`, or a resolved change applied to the last state).
    /// Returns `false`, and changes nothing, unless its `(epoch, sequence)` is newer than every
    /// state seen: duplicates and out-of-order states are ignored.
    pub fn handle_state(&mut self, state: RoomState, now: Millis) -> bool {
        let now_ms = now.get();
        if self
            .states
            .back()
            .is_some_and(|s| s.version() >= state.version())
        {
            return false;
        }
        while self
            .states
            .back()
            .is_some_and(|s| s.ref_server_ms > state.ref_server_ms)
        {
            self.states.pop_back();
        }
        self.states.push_back(state);
        self.run(now_ms, false);
        true
    }

    /// Forgets the room states received, keeping the element, its track and the learned
    /// latencies: call it when (re)joining a room whose authority may have started its
    /// `(epoch, sequence)` anew (a restarted server, a session change), before feeding the new
    /// snapshot. Until a state arrives the element is left as it is.
    pub fn reset_room(&mut self) {
        self.states.clear();
        self.launch = None;
        self.jump = false;
        self.timers[Timer::Apply as usize] = None;
        self.timers[Timer::Launch as usize] = None;
    }

    /// A reading of the element (also runs due timers).
    pub fn handle_media_sample(&mut self, sample: MediaSample) {
        if let Some(p) = self.last.replace(sample) {
            self.sample_gap_ms = (sample.local_ms - p.local_ms).clamp(0.0, 10_000.0);
        }
        self.readings_taken += 1;
        // A start's or seek's steadiness is checked on the edge reading when there is one
        // since the command: it is current, the plain reading up to a quantum stale.
        let issued = self.transition.map_or(f64::NEG_INFINITY, |t| t.issued_ms);
        let seen = match sample.edge {
            Some(e) if (issued..=sample.local_ms).contains(&e.local_ms) => MediaSample {
                local_ms: e.local_ms,
                position_s: e.position_s,
                ..sample
            },
            _ => sample,
        };
        self.observe(seen);
        self.run(sample.local_ms, true);
    }

    /// Whether the next reading should come with an edge reading ([`MediaSample::edge`]):
    /// the element plays at the room's rate outside an excursion (or has been seen moving
    /// after a start or seek, whose steadiness the reading then checks) and its position
    /// estimate has no edge reading while its `currentTime` is not known to be fine-grained
    /// ([`PositionEstimator::wants_edge`]; PROTOCOL.md §12.5.2). A driver that cannot take
    /// one hands a plain reading.
    pub fn wants_edge_sample(&self) -> bool {
        let steady_or_moving = self.transition.as_ref().map_or(true, |tr| {
            tr.kind != TransitionKind::Rate && tr.moving_since.is_some()
        });
        self.want_playing && self.nudge.is_none() && steady_or_moving && self.estimator.wants_edge()
    }

    /// Runs due timers at local time `now` without a reading of the element.
    pub fn handle_timeout(&mut self, now: Millis) {
        let now_ms = now.get();
        self.run(now_ms, false);
    }

    /// `play()` was refused (autoplay policy, `NotAllowedError`).
    pub fn handle_play_rejected(&mut self, _now: Millis) {
        self.want_playing = false;
        self.transition = None;
        self.launch = None;
        if !self.blocked {
            self.blocked = true;
            self.event(FollowerEvent::NeedsUserGesture);
        }
        self.set_status(FollowerStatus::NeedsUserGesture);
    }

    /// The user interacted with the page (call it from the gesture's handler): the follower
    /// starts the element at once, inside the gesture, if the room is playing.
    pub fn handle_user_gesture(&mut self, now: Millis) {
        let now_ms = now.get();
        if !self.blocked {
            return;
        }
        self.blocked = false;
        let state = self.in_force_now(now_ms).cloned();
        if let (Some(clock), Some(state)) = (self.clock, state) {
            if state.is_playing && self.loaded.is_some() && self.loaded == state.track_id {
                let start = clock.to_server(now_ms + self.start_latency_ms);
                let to_s = state.position_at(start.max(clock.to_server(now_ms)));
                self.seek_cmd(now_ms, to_s);
                self.joining = true;
                self.start(now_ms, to_s, false, Some(state.version()));
            }
        }
        self.run(now_ms, false);
    }

    // ---- outputs ----

    /// The next output (see the drive contract in the module docs); `now` is unused (the
    /// outputs are due at the input that made them).
    pub fn poll_output(&mut self, _now: Millis) -> FollowerOutput {
        if let Some(o) = self.out.pop_front() {
            return o;
        }
        FollowerOutput::Timeout(
            TIMERS
                .iter()
                .filter_map(|&t| self.timers[t as usize])
                .reduce(f64::min)
                .map_or(Millis::NEVER, Millis::new),
        )
    }

    // ---- the machine ----

    fn command(&mut self, c: MediaCommand) {
        self.out.push_back(FollowerOutput::Command(c));
    }

    fn event(&mut self, e: FollowerEvent) {
        self.out.push_back(FollowerOutput::Event(e));
    }

    fn seek_cmd(&mut self, now_ms: f64, to_s: f64) {
        self.last_seek_ms = now_ms;
        self.command(MediaCommand::Seek { to_s });
    }

    fn set_status(&mut self, s: FollowerStatus) {
        if self.status != s {
            self.status = s;
            self.event(FollowerEvent::Status(s));
        }
    }

    /// The state in force at local `now_ms` (after promotion, the queue's front), or the first
    /// queued state if none is in force yet.
    fn in_force_now(&self, now_ms: f64) -> Option<&RoomState> {
        let server = self.clock?.to_server(now_ms);
        self.states
            .iter()
            .rev()
            .find(|s| s.ref_server_ms <= server)
            .or(self.states.front())
    }

    /// Issues `Play` and starts watching for the media to move.
    fn start(&mut self, now_ms: f64, from_s: f64, learn: bool, version: Option<(u64, u64)>) {
        self.end_nudge();
        self.command(MediaCommand::Play);
        self.want_playing = true;
        self.started_version = version;
        self.launch = None;
        self.transition = Some(Transition {
            kind: TransitionKind::Start,
            issued_ms: now_ms,
            from_s,
            learn,
            moving_since: None,
        });
        self.catchup_until = now_ms + self.config.catchup_window_ms;
        self.catchup_seeks_left = self.config.catchup_max_seeks;
        self.catchup_seeks_until = self.catchup_until;
        self.set_status(FollowerStatus::Starting);
    }

    /// Issues a seek while playing, compensated by the learned seek latency.
    fn seek_playing(&mut self, now_ms: f64, target_s: f64, rate: f64) {
        self.end_nudge();
        let to_s = (target_s + self.seek_latency_ms / 1000.0 * rate).max(0.0);
        self.seek_cmd(now_ms, to_s);
        self.transition = Some(Transition {
            kind: TransitionKind::Seek,
            issued_ms: now_ms,
            from_s: to_s,
            learn: true,
            moving_since: None,
        });
        self.catchup_until = now_ms + self.config.catchup_window_ms;
        self.set_status(FollowerStatus::Starting);
    }

    /// Ends a transition once the element moves steadily; its latency is learned from the
    /// error of the next settled position estimate ([`Follower::learn_latency`]).
    ///
    /// Steadily: over at least [`STEADY_SPAN_MS`] of readings the position advanced at the
    /// element's rate (within [`STEADY_TOLERANCE`] plus 1 ms). Browsers report a position that
    /// moves at once and then stalls while the audio output starts (Chromium: about 70 ms on
    /// a first `play()`, 90 ms after a seek while playing), so the first movement alone would
    /// under-estimate the latency and leave the error to the slow rate nudge.
    fn observe(&mut self, s: MediaSample) {
        let Some(mut tr) = self.transition else {
            return;
        };
        if s.local_ms - tr.issued_ms > self.config.transition_timeout_ms {
            self.transition = None;
            return;
        }
        if tr.kind == TransitionKind::Rate
            && s.local_ms - tr.issued_ms < self.config.rate_latency_ms
        {
            // The old rate still plays out of the output's queue.
            return;
        }
        let moved = !s.paused && !s.seeking && s.position_s > tr.from_s + 1e-4;
        if !moved {
            tr.moving_since = None;
            self.transition = Some(tr);
            return;
        }
        match tr.moving_since {
            // A first moving reading long after the command (throttled timers) is steady.
            None if s.local_ms - tr.issued_ms >= STEADY_AFTER_MS => {}
            None => {
                tr.moving_since = Some((s.local_ms, s.position_s));
                self.transition = Some(tr);
                return;
            }
            Some((t, p)) => {
                let span = s.local_ms - t;
                if span < STEADY_SPAN_MS {
                    return;
                }
                let advanced = (s.position_s - p) * 1000.0;
                let expected = span * s.playback_rate.max(1e-3);
                // Two stale readings differ by up to one refresh quantum of `currentTime`.
                let quantum = self.estimator.quantum_ms().unwrap_or(0.0);
                if (advanced - expected).abs() > STEADY_TOLERANCE * expected + 1.0 + quantum {
                    tr.moving_since = Some((s.local_ms, s.position_s));
                    self.transition = Some(tr);
                    return;
                }
            }
        }
        self.transition = None;
        if tr.learn {
            // Learned from the first settled position estimate (at once with single readings).
            self.learn_pending = Some(tr.kind);
        }
    }

    /// Learns the latency of the start or seek that ended from the error of the first settled
    /// estimate after it, ms (`rate`: the room's).
    fn learn_latency(&mut self, kind: TransitionKind, error_ms: f64, rate: f64) {
        let rate = rate.max(1e-3);
        let max = self.config.max_latency_ms;
        match kind {
            TransitionKind::Start => {
                let measured = (self.start_latency_ms - error_ms / rate).clamp(0.0, max);
                self.start_latency_ms = if self.start_learned {
                    (self.start_latency_ms + measured) / 2.0
                } else {
                    measured
                };
                self.start_learned = true;
                if self.config.seek_latency_from_start && !self.seek_learned {
                    self.seek_latency_ms = self.seek_latency_ms.max(measured);
                }
            }
            TransitionKind::Rate => {}
            TransitionKind::Seek => {
                let measured = (self.seek_latency_ms - error_ms / rate).clamp(0.0, max);
                self.seek_latency_ms = if self.seek_learned {
                    (self.seek_latency_ms + measured) / 2.0
                } else {
                    measured
                };
                self.seek_learned = true;
            }
        }
    }

    fn run(&mut self, now_ms: f64, fresh: bool) {
        self.timers[Timer::Apply as usize] = None;
        self.timers[Timer::Launch as usize] = None;
        self.step(now_ms, fresh);
        // Sampling cadence: fast around transitions and while the estimate settles.
        let fast = self.transition.is_some()
            || self.settling
            || self.launch.is_some()
            || now_ms < self.catchup_until
            || self.load_issued_ms.is_some();
        let period = if fast {
            self.config.fast_sample_interval_ms
        } else {
            self.config.sample_interval_ms
        };
        let base = self
            .last
            .map_or(now_ms, |s| s.local_ms.max(now_ms - period));
        // Dithered (by up to the learned `currentTime` quantum) so that readings fall on every
        // phase of the element's refresh.
        let dither = self.estimator.dither_ms(self.readings_taken);
        self.timers[Timer::Sample as usize] =
            Some(if fresh { now_ms } else { base } + period + dither);
        if let Some(l) = self.launch.filter(|l| l.play_at_ms > now_ms) {
            self.timers[Timer::Launch as usize] = Some(l.play_at_ms);
        }
        self.timers[Timer::NudgeEnd as usize] = self.nudge.map(|n| n.until_ms.max(now_ms));
    }

    /// Forgets a running or ended excursion (a new start, seek, pause or track); the rate is
    /// set back by whoever follows next.
    fn end_nudge(&mut self) {
        self.estimator.reset();
        self.settling = false;
        self.learn_pending = None;
        self.in_sync_since = None;
        self.nudge = None;
        self.excursion = None;
        self.beyond = (0, 0.0);
    }

    fn step(&mut self, now_ms: f64, fresh: bool) {
        let Some(clock) = self.clock else {
            self.set_status(FollowerStatus::Waiting);
            return;
        };
        let server_now = clock.to_server(now_ms);
        // Promote queued states whose time has come.
        while self.states.len() >= 2
            && self.states[1].ref_server_ms <= server_now + PROMOTE_SLACK_MS
        {
            let old = self.states.pop_front().expect("len >= 2");
            let new = &self.states[0];
            if old.is_playing
                && new.is_playing
                && old.track_id == new.track_id
                && ((new.position_at(new.ref_server_ms) - old.position_at(new.ref_server_ms))
                    * 1000.0)
                    .abs()
                    > self.config.deadband_ms
            {
                self.jump = true;
            }
        }
        let Some(front) = self.states.front().cloned() else {
            self.set_status(FollowerStatus::Waiting);
            return;
        };
        // The state governing the element now; a first state not yet in force is a paused
        // preroll of itself.
        let (effective, next) = if front.ref_server_ms <= server_now + PROMOTE_SLACK_MS {
            (front, self.states.get(1).cloned())
        } else {
            let mut pre = front.clone();
            pre.is_playing = false;
            (pre, Some(front))
        };
        if let Some(n) = &next {
            let mut at = clock.to_local(n.ref_server_ms);
            if n.is_playing && !effective.is_playing {
                at -= self.start_latency_ms;
            }
            // A time already passed was acted on in this step; sampling covers the rest.
            self.timers[Timer::Apply as usize] = (at > now_ms).then_some(at);
        }

        // Track.
        let Some(track_id) = effective.track_id.clone() else {
            if self.want_playing {
                self.command(MediaCommand::Pause);
                self.want_playing = false;
            }
            self.set_status(FollowerStatus::Paused);
            return;
        };
        if self.loaded.as_deref() != Some(track_id.as_str()) {
            // The first track of this follower: it joins a room (a DJ's track change is
            // applied by every device at once).
            self.joining = self.loaded.is_none();
            self.command(MediaCommand::Load {
                track_id: track_id.clone(),
                track: effective.track.clone(),
            });
            self.loaded = Some(track_id);
            self.load_issued_ms = Some(now_ms);
            self.want_playing = false;
            self.launch = None;
            self.transition = None;
            self.jump = false;
            self.end_nudge();
            self.set_status(FollowerStatus::Loading);
            return;
        }
        let Some(sample) = self.last else {
            return;
        };
        if let Some(t) = self.load_issued_ms {
            if sample.local_ms <= t || !sample.ready {
                self.set_status(FollowerStatus::Loading);
                return;
            }
            self.load_issued_ms = None;
        }
        if self.blocked {
            self.set_status(FollowerStatus::NeedsUserGesture);
            return;
        }
        let ended = effective
            .duration_s()
            .is_some_and(|d| effective.position_at(server_now) >= d - 0.05);
        if !effective.is_playing || ended {
            self.follow_paused(now_ms, &effective, next.as_ref(), clock, sample, fresh);
        } else {
            self.follow_playing(now_ms, &effective, clock, sample, fresh);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn follow_paused(
        &mut self,
        now_ms: f64,
        state: &RoomState,
        next: Option<&RoomState>,
        clock: ClockMapping,
        sample: MediaSample,
        fresh: bool,
    ) {
        self.jump = false;
        self.last_error_ms = None;
        let upcoming = next.filter(|n| n.is_playing && n.track_id == state.track_id);
        if let Some(n) = upcoming {
            if self.want_playing && self.started_version == Some(n.version()) {
                // Started ahead of the play's applyAt (the start latency): let it run.
                return;
            }
        }
        if self.want_playing {
            self.command(MediaCommand::Pause);
            self.want_playing = false;
            self.transition = None;
        }
        self.end_nudge();
        if (sample.playback_rate - state.playback_rate).abs() > 1e-4 && fresh {
            self.command(MediaCommand::SetRate {
                rate: state.playback_rate,
            });
        }
        // An upcoming play on this track: prepare the start.
        if let Some(n) = upcoming {
            self.joining = false;
            self.plan_launch(now_ms, n, clock, sample);
            return;
        }
        self.launch = None;
        let pos = state.position_at(clock.to_server(now_ms));
        if fresh
            && !sample.seeking
            && sample.local_ms > self.last_seek_ms
            && (sample.position_s - pos).abs() * 1000.0 > self.config.paused_tolerance_ms
        {
            self.seek_cmd(now_ms, pos);
        }
        self.set_status(FollowerStatus::Paused);
    }

    /// Plans (or fires) a start from paused into the playing state `target`: a silent seek to
    /// where `target` will be once the element moves, then `Play` one start latency ahead.
    fn plan_launch(
        &mut self,
        now_ms: f64,
        target: &RoomState,
        clock: ClockMapping,
        sample: MediaSample,
    ) {
        let start_lat = self.start_latency_ms;
        if !self.launch.is_some_and(|l| l.version == target.version()) {
            let prep = self.seek_latency_ms * 1.5 + 2.0 * self.config.fast_sample_interval_ms;
            let at = |play_at: f64| target.position_at(clock.to_server(play_at + start_lat));
            let mut play_at = (clock.to_local(target.ref_server_ms) - start_lat).max(now_ms);
            let mut to = at(play_at);
            let seek = (sample.position_s - to).abs() * 1000.0 > self.config.paused_tolerance_ms;
            if seek && play_at < now_ms + prep {
                play_at = now_ms + prep;
                to = at(play_at);
            }
            if seek {
                self.seek_cmd(now_ms, to);
            }
            self.launch = Some(Launch {
                play_at_ms: play_at,
                seek_to_s: to,
                version: target.version(),
                seek_sent_ms: seek.then_some(now_ms),
            });
        }
        let launch = self.launch.expect("planned");
        self.set_status(FollowerStatus::Starting);
        if now_ms + 1e-9 < launch.play_at_ms {
            return;
        }
        if sample.seeking
            && launch.seek_sent_ms.is_some_and(|t| {
                sample.local_ms > t && now_ms - t < self.config.transition_timeout_ms
            })
        {
            // The silent seek is slower than planned: plan again with more room.
            self.seek_latency_ms = (self.seek_latency_ms * 1.5).min(self.config.max_latency_ms);
            self.launch = None;
            return;
        }
        self.start(now_ms, launch.seek_to_s, true, Some(target.version()));
    }

    fn follow_playing(
        &mut self,
        now_ms: f64,
        state: &RoomState,
        clock: ClockMapping,
        sample: MediaSample,
        fresh: bool,
    ) {
        let server_now = clock.to_server(now_ms);
        let rate = state.playback_rate;
        if !self.want_playing {
            // Start now (late joiner, after a load, after the element paused on its own).
            self.jump = false;
            self.plan_launch(now_ms, state, clock, sample);
            return;
        }
        if self.jump {
            // A DJ's seek took effect: everyone jumps now.
            self.jump = false;
            self.joining = false;
            self.seek_playing(now_ms, state.position_at(server_now), rate);
            self.catchup_seeks_left = self.config.catchup_max_seeks;
            self.catchup_seeks_until = self.catchup_until;
            return;
        }
        if !fresh || self.transition.is_some() {
            return;
        }
        if sample.paused {
            // Paused behind our back (ended, OS, user): start again.
            self.want_playing = false;
            self.joining = true;
            self.plan_launch(now_ms, state, clock, sample);
            return;
        }
        let target = state.position_at(server_now);
        // At the room's rate outside an excursion the readings are unbiased: the position is
        // estimated from them over time (module `position`); otherwise the reading alone.
        let unbiased = self.nudge.is_none() && (sample.playback_rate - rate).abs() <= 1e-9;
        let (position_s, settled, windowed) = if unbiased {
            if let Some(edge) = sample.edge.filter(|e| e.local_ms <= sample.local_ms) {
                self.estimator.push_edge(
                    edge.local_ms,
                    edge.position_s,
                    sample.playback_rate,
                    edge.span_ms,
                );
            }
            let e = self
                .estimator
                .push(sample.local_ms, sample.position_s, sample.playback_rate);
            (e.position_s, e.settled, !e.single)
        } else {
            self.estimator.reset();
            (sample.position_s, false, false)
        };
        self.settling = unbiased && !settled;
        let error_ms = (position_s - target) * 1000.0;
        if settled {
            if let Some(kind) = self.learn_pending.take() {
                self.learn_latency(kind, error_ms, rate);
            }
        }
        self.last_error_ms = Some(error_ms);
        let abs = error_ms.abs();
        let catchup_seek = now_ms < self.catchup_seeks_until
            && self.catchup_seeks_left > 0
            && settled
            && abs > self.config.catchup_seek_threshold_ms;
        let seek_due = catchup_seek
            || (abs > self.config.seek_threshold_ms && now_ms >= self.seek_cooldown_until);
        let mut correction = Correction::None;
        let mut rate_now = sample.playback_rate;
        if let Some(n) = self.nudge.filter(|_| !seek_due) {
            // Mid-excursion the reading is biased: wait for its end, then measure again.
            correction = Correction::Nudge;
            if now_ms >= n.until_ms {
                self.nudge = None;
                self.excursion = Some(Excursion {
                    gain_ms: n.delta * n.base * (now_ms - n.started_ms),
                    error_before_ms: n.error_before_ms,
                });
                self.command(MediaCommand::SetRate { rate: n.base });
                rate_now = n.base;
                self.transition = Some(Transition {
                    kind: TransitionKind::Rate,
                    issued_ms: now_ms,
                    from_s: sample.position_s,
                    learn: false,
                    moving_since: None,
                });
            }
            let in_sync = n.error_before_ms.abs() <= self.config.in_sync_ms;
            self.set_status(if in_sync {
                FollowerStatus::InSync
            } else {
                FollowerStatus::Correcting
            });
        } else if (sample.playback_rate - rate).abs() > 1e-9 && !seek_due {
            // Not at the room's rate outside an excursion (a new state, a cancelled excursion,
            // the app): back to it, and measure once steady.
            self.end_nudge();
            self.command(MediaCommand::SetRate { rate });
            rate_now = rate;
            self.transition = Some(Transition {
                kind: TransitionKind::Rate,
                issued_ms: now_ms,
                from_s: sample.position_s,
                learn: false,
                moving_since: None,
            });
        } else if seek_due {
            if catchup_seek {
                self.catchup_seeks_left -= 1;
            } else {
                self.seek_cooldown_until = now_ms + self.config.seek_cooldown_ms;
            }
            correction = Correction::Seek;
            if sample.playback_rate != rate {
                self.command(MediaCommand::SetRate { rate });
                rate_now = rate;
            }
            self.seek_playing(now_ms, target, rate);
        } else {
            // A steady reading at the room's rate: unbiased. The excursion's cost is learned
            // from the first settled estimate after it.
            if let Some(x) = self.excursion.take_if(|_| settled) {
                let achieved = error_ms - x.error_before_ms;
                let cost =
                    (x.gain_ms - achieved).clamp(-MAX_EXCURSION_COST_MS, MAX_EXCURSION_COST_MS);
                self.excursion_cost_ms = if self.excursion_learned {
                    (self.excursion_cost_ms + cost) / 2.0
                } else {
                    cost
                };
                self.excursion_learned = true;
            }
            // Readings beyond the deadband in a row (same sign): the smallest error counts.
            // Joining, and just in sync: no refinement yet (`landing_hold_ms`).
            // An estimate not settled yet (too few readings for the element's `currentTime`
            // quantum) decides nothing.
            if settled {
                self.in_sync_since = if abs <= self.config.in_sync_ms {
                    self.in_sync_since.or(Some(now_ms))
                } else {
                    None
                };
            }
            let hold = self.joining
                && self
                    .in_sync_since
                    .is_some_and(|t| now_ms < t + self.config.landing_hold_ms);
            self.beyond = if abs <= self.config.deadband_ms || hold || !settled {
                (0, 0.0)
            } else if windowed {
                // A settled estimate rests on several readings and odd ones are held out of
                // it: it is confirmed.
                (self.config.confirm_readings.max(1), error_ms)
            } else if self.beyond.0 > 0 && self.beyond.1.signum() == error_ms.signum() {
                let e = if abs < self.beyond.1.abs() {
                    error_ms
                } else {
                    self.beyond.1
                };
                (self.beyond.0 + 1, e)
            } else {
                (1, error_ms)
            };
            if self.beyond.0 >= self.config.confirm_readings.max(1) {
                let error_ms = self.beyond.1;
                self.beyond = (0, 0.0);
                let max = if now_ms < self.catchup_until {
                    self.config.catchup_max_nudge
                } else {
                    self.config.max_nudge
                };
                // The stretched part must gain the error back plus what the excursion loses.
                let gain_ms = -error_ms + self.excursion_cost_ms;
                // Its end is timed by the next reading: with sparse readings (throttled
                // timers) a gentler nudge over two reading gaps keeps a late end cheap, down to
                // the smallest rate change players honour.
                let shortest = self.config.min_nudge_ms.max(2.0 * self.sample_gap_ms);
                let size = (gain_ms.abs() / (shortest * rate)).clamp(MIN_NUDGE.min(max), max);
                let delta = size.copysign(gain_ms);
                let duration = (gain_ms.abs() / (size * rate)).max(self.config.min_nudge_ms);
                self.in_sync_since = None;
                self.nudge = Some(Nudge {
                    started_ms: now_ms,
                    until_ms: now_ms + duration,
                    delta,
                    base: rate,
                    error_before_ms: error_ms,
                });
                rate_now = rate * (1.0 + delta);
                self.command(MediaCommand::SetRate { rate: rate_now });
                correction = Correction::Nudge;
            }
            // The status changes only on a settled estimate (it stays `Starting` until one).
            if settled {
                self.set_status(if abs <= self.config.in_sync_ms {
                    FollowerStatus::InSync
                } else {
                    FollowerStatus::Correcting
                });
            }
        }
        self.event(FollowerEvent::Drift(DriftSample {
            local_ms: now_ms,
            server_ms: server_now,
            error_ms,
            rate: rate_now,
            correction,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(v: (u64, u64), playing: bool, pos: f64, at: f64) -> RoomState {
        RoomState {
            track_id: Some("t".into()),
            track: None,
            is_playing: playing,
            position_s: pos,
            ref_server_ms: at,
            playback_rate: 1.0,
            controller_id: Some("dj".into()),
            controller_identity: None,
            epoch: v.0,
            sequence: v.1,
        }
    }

    fn drain(f: &mut Follower) -> (Vec<MediaCommand>, Vec<FollowerEvent>, Option<f64>) {
        let (mut cmds, mut events) = (vec![], vec![]);
        loop {
            match f.poll_output(Millis::ZERO) {
                FollowerOutput::Command(c) => cmds.push(c),
                FollowerOutput::Event(e) => events.push(e),
                FollowerOutput::Timeout(t) => return (cmds, events, t.deadline().map(Millis::get)),
            }
        }
    }

    thread_local! {
        /// The rate last set on the test's element.
        static RATE: std::cell::Cell<f64> = const { std::cell::Cell::new(1.0) };
    }

    fn sample(
        f: &mut Follower,
        t: f64,
        pos: f64,
        paused: bool,
    ) -> (Vec<MediaCommand>, Vec<FollowerEvent>, Option<f64>) {
        f.handle_media_sample(MediaSample {
            local_ms: t,
            position_s: pos,
            paused,
            seeking: false,
            playback_rate: RATE.get(),
            ready: true,
            edge: None,
        });
        let out = drain(f);
        for c in &out.0 {
            if let MediaCommand::SetRate { rate } = c {
                RATE.set(*rate);
            }
        }
        out
    }

    /// A follower on the shared clock (identity mapping) playing "t" since server time 0 from
    /// 0 s, started exactly; returns it and the time reached (after the catch-up window).
    fn playing() -> (Follower, f64) {
        playing_with(FollowerConfig::default())
    }

    /// [`playing`] with `config`.
    fn playing_with(config: FollowerConfig) -> (Follower, f64) {
        RATE.set(1.0);
        let mut f = Follower::new(config);
        f.handle_clock(ClockMapping::IDENTITY, Millis::new(0.0));
        assert!(f.handle_state(state((1, 1), true, 0.0, 0.0), Millis::new(0.0)));
        let (cmds, _, _) = drain(&mut f);
        assert!(matches!(&cmds[..], [MediaCommand::Load { track_id, .. }] if track_id == "t"));
        // Ready: a start is planned (silent seek, then Play).
        let (cmds, _, _) = sample(&mut f, 10.0, 0.0, true);
        let Some(MediaCommand::Seek { to_s }) = cmds.first().cloned() else {
            panic!("{cmds:?}")
        };
        let play_at = to_s * 1000.0 - f.start_latency_ms();
        let (cmds, _, _) = sample(&mut f, play_at, to_s, true);
        assert_eq!(cmds, vec![MediaCommand::Play]);
        // The element starts moving exactly on time: error 0, latency confirmed once it moved
        // steadily (two readings 30 ms apart).
        let mut t = play_at + 40.0;
        sample(&mut f, t, t / 1000.0, false);
        assert_eq!(f.status(), FollowerStatus::Starting);
        t += 30.0;
        sample(&mut f, t, t / 1000.0, false);
        assert_eq!(f.status(), FollowerStatus::InSync);
        while t < 3000.0 {
            t += 100.0;
            sample(&mut f, t, t / 1000.0, false);
        }
        (f, t)
    }

    #[test]
    fn stale_and_duplicate_states_are_ignored() {
        let mut f = Follower::new(FollowerConfig::default());
        assert!(f.handle_state(state((1, 2), false, 0.0, 0.0), Millis::new(0.0)));
        assert!(!f.handle_state(state((1, 2), true, 5.0, 0.0), Millis::new(0.0)));
        assert!(!f.handle_state(state((1, 1), true, 5.0, 0.0), Millis::new(0.0)));
        assert!(!f.handle_state(state((0, 9), true, 5.0, 0.0), Millis::new(0.0)));
        assert!(!f.latest_state().unwrap().is_playing);
        assert!(f.handle_state(state((2, 0), true, 5.0, 0.0), Millis::new(0.0)));
        // No clock yet: nothing to do.
        let (cmds, _, _) = drain(&mut f);
        assert!(cmds.is_empty());
        assert_eq!(f.status(), FollowerStatus::Waiting);
        // A restarted authority counts from (0, 0) again: after reset_room it is followed.
        assert!(!f.handle_state(state((0, 1), false, 7.0, 0.0), Millis::new(0.0)));
        f.reset_room();
        assert!(f.latest_state().is_none());
        assert!(f.handle_state(state((0, 1), false, 7.0, 0.0), Millis::new(0.0)));
        assert_eq!(f.latest_state().unwrap().position_s, 7.0);
    }

    /// Samples every 20 ms from `t` until `until`, the media `offset_ms` off the room (ms); returns
    /// the commands issued and the time reached.
    fn run_until(
        f: &mut Follower,
        mut t: f64,
        until: f64,
        offset_ms: impl Fn(f64) -> f64,
    ) -> (Vec<MediaCommand>, f64) {
        let mut all = vec![];
        while t < until {
            t = (t + 20.0).min(drain(f).2.unwrap_or(f64::INFINITY).max(t + 1.0));
            let (cmds, _, _) = sample(f, t, (t + offset_ms(t)) / 1000.0, false);
            all.extend(cmds);
        }
        (all, t)
    }

    #[test]
    fn small_errors_start_a_timed_excursion_measured_at_the_normal_rate() {
        let (mut f, mut t) = playing();
        // 20 ms ahead: slow down by 2 % for exactly 1 s.
        t += 100.0;
        let (cmds, events, timeout) = sample(&mut f, t, t / 1000.0 + 0.020, false);
        assert_eq!(cmds, vec![MediaCommand::SetRate { rate: 0.98 }]);
        assert!(
            matches!(events.last(), Some(FollowerEvent::Drift(d)) if d.correction == Correction::Nudge && (d.error_ms - 20.0).abs() < 1e-6)
        );
        let end = f.nudge.expect("running").until_ms;
        assert!((end - t - 1000.0).abs() < 1e-6);
        assert!(timeout.unwrap() <= end);
        // Mid-excursion readings are biased and ignored; at its end, back to the normal rate.
        let start = t;
        let stretched =
            |x: f64| 20.0 - 0.02 * (x - start).min(1000.0) - 25.0 * f64::from(u8::from(x < end));
        let (cmds, t2) = run_until(&mut f, t, end - 1.0, stretched);
        assert!(cmds.is_empty(), "{cmds:?}");
        assert_eq!(
            drain(&mut f).2,
            Some(end),
            "the excursion's end is a deadline"
        );
        let (cmds, _, _) = sample(&mut f, end, (end + stretched(end)) / 1000.0, false);
        assert_eq!(cmds, vec![MediaCommand::SetRate { rate: 1.0 }]);
        assert!(t2 < end);
        t = end;
        // An ideal player: on target, nothing more to do; the cost measured is 0.
        let (cmds, t3) = run_until(&mut f, t, t + 500.0, |_| 0.0);
        assert!(cmds.is_empty(), "{cmds:?}");
        assert!(f.excursion_cost_ms().abs() < 1e-6);
        assert_eq!(f.status(), FollowerStatus::InSync);
        t = t3;

        // A player that loses 24 ms on every excursion (Chromium): 7 ms ahead first slows
        // down for 350 ms and ends 24 ms behind; the cost is learned (averaged with the 0 of
        // the ideal excursion above), and the next excursions speed up by the error plus the
        // cost, landing within the deadband.
        let mut offset = 7.0;
        let mut excursions = 0;
        let deadline = t + 20_000.0;
        while t < deadline {
            t += 20.0;
            let (cmds, _, _) = sample(&mut f, t, (t + offset) / 1000.0, false);
            for c in cmds {
                if let MediaCommand::SetRate { rate } = c {
                    if rate != 1.0 {
                        excursions += 1;
                        let n = f.nudge.expect("running");
                        // The excursion's effect, applied at once (the reading is not looked at).
                        offset += (rate - 1.0) * (n.until_ms - n.started_ms) - 24.0;
                    }
                }
            }
        }
        assert!((2..=4).contains(&excursions), "{excursions} excursions");
        assert!(offset.abs() <= 5.0, "{offset}");
        assert!(
            (f.excursion_cost_ms() - 24.0).abs() < 4.0,
            "{}",
            f.excursion_cost_ms()
        );
        assert_eq!(f.status(), FollowerStatus::InSync);
    }

    #[test]
    fn one_odd_reading_starts_nothing_and_an_excursion_is_read_after_the_rate_latency() {
        let config = FollowerConfig {
            confirm_readings: 2,
            rate_latency_ms: 150.0,
            ..FollowerConfig::default()
        };
        let (mut f, mut t) = playing_with(config);
        // One reading 20 ms ahead between good ones (a stalled renderer): nothing.
        for offset in [20.0, 0.0] {
            t += 100.0;
            let (cmds, _, _) = sample(&mut f, t, (t + offset) / 1000.0, false);
            assert!(cmds.is_empty(), "{cmds:?}");
        }
        // Two in a row: an excursion for the smaller error (18 ms: 900 ms at 2 %).
        t += 100.0;
        let (cmds, _, _) = sample(&mut f, t, (t + 20.0) / 1000.0, false);
        assert!(cmds.is_empty(), "{cmds:?}");
        t += 100.0;
        let (cmds, _, _) = sample(&mut f, t, (t + 18.0) / 1000.0, false);
        assert_eq!(cmds, vec![MediaCommand::SetRate { rate: 0.98 }]);
        let n = f.nudge.expect("running");
        assert!((n.until_ms - t - 900.0).abs() < 1e-6);
        // The element shows each rate change 150 ms late (an ideal player otherwise): read
        // right after the excursion's end it would still be 3 ms ahead, and the follower would
        // learn a cost of 3 ms and correct again.
        let (start, end) = (t, n.until_ms);
        let offset = move |x: f64| 18.0 - 0.02 * (x - start - 150.0).clamp(0.0, end - start);
        let (cmds, _) = run_until(&mut f, t, end + 1000.0, offset);
        assert_eq!(
            cmds,
            vec![MediaCommand::SetRate { rate: 1.0 }],
            "one excursion"
        );
        assert!(
            f.excursion_cost_ms().abs() < 1e-6,
            "{}",
            f.excursion_cost_ms()
        );
        assert_eq!(f.status(), FollowerStatus::InSync);
    }

    #[test]
    fn a_coarse_current_time_in_sync_is_left_alone() {
        // An element exactly on the room whose `currentTime` is refreshed every 40 ms (headless
        // Firefox): each reading lags by 0-40 ms.
        let stale = |t: f64| (((t - 13.0) / 40.0).floor() * 40.0 + 13.0).max(0.0) / 1000.0;
        let single = FollowerConfig {
            position: EstimatorConfig::SINGLE_READING,
            ..FollowerConfig::browser()
        };
        for (config, estimated) in [(FollowerConfig::browser(), true), (single, false)] {
            RATE.set(1.0);
            let mut f = Follower::new(config);
            f.handle_clock(ClockMapping::IDENTITY, Millis::new(0.0));
            f.handle_state(state((1, 1), true, 0.0, 0.0), Millis::new(0.0));
            drain(&mut f);
            let (cmds, _, _) = sample(&mut f, 10.0, 0.0, true);
            let Some(MediaCommand::Seek { to_s }) = cmds.first().cloned() else {
                panic!("{cmds:?}")
            };
            let mut t = to_s * 1000.0 - f.start_latency_ms();
            let (cmds, _, _) = sample(&mut f, t, to_s, true);
            assert_eq!(cmds, vec![MediaCommand::Play]);
            // Read at the follower's deadlines for 20 s; after the start has settled (5 s),
            // count corrections and status changes.
            let (mut acted, mut flips) = (0, 0);
            while t < 20_000.0 {
                t = drain(&mut f).2.unwrap_or(t + 100.0).max(t + 1.0);
                let (cmds, events, _) = sample(&mut f, t, stale(t), false);
                if t > 5000.0 {
                    acted += cmds.len();
                    flips += events
                        .iter()
                        .filter(|e| matches!(e, FollowerEvent::Status(_)))
                        .count();
                }
            }
            if estimated {
                assert_eq!((acted, flips), (0, 0), "corrected the staleness");
                assert_eq!(f.status(), FollowerStatus::InSync);
                let q = f.estimator.quantum_ms().expect("learned");
                assert!((30.0..=50.0).contains(&q), "{q}");
            } else {
                assert!(
                    acted >= 4 && flips >= 2,
                    "{acted} corrections, {flips} flips"
                );
            }
        }
    }

    #[test]
    fn large_errors_seek_at_most_once_per_cooldown() {
        let (mut f, mut t) = playing();
        // An element stuck 300 ms behind, whatever it is told.
        let mut seeks = 0;
        let end = t + 10_000.0;
        while t < end {
            t += 100.0;
            let (cmds, _, _) = sample(&mut f, t, t / 1000.0 - 0.300, false);
            for c in cmds {
                if let MediaCommand::Seek { to_s } = c {
                    seeks += 1;
                    // Compensated by the seek latency.
                    assert!(to_s > t / 1000.0);
                }
            }
        }
        // One per 2 s cooldown at most: no stutter loop.
        assert!((2..=6).contains(&seeks), "{seeks} seeks in 10 s");
    }

    #[test]
    fn scheduled_changes_apply_at_their_time() {
        let (mut f, t) = playing();
        // A pause scheduled 500 ms ahead.
        let at = t + 500.0;
        assert!(f.handle_state(state((1, 2), false, at / 1000.0, at), Millis::new(t)));
        let (cmds, _, timeout) = drain(&mut f);
        assert!(cmds.is_empty());
        assert!(timeout.unwrap() <= at);
        let mut now = t;
        let mut paused_at = None;
        while now < at + 200.0 {
            now = drain(&mut f).2.unwrap().max(now + 1e-6);
            let (cmds, _, _) = sample(&mut f, now, now / 1000.0, false);
            if cmds.contains(&MediaCommand::Pause) {
                paused_at = Some(now);
                break;
            }
        }
        assert_eq!(paused_at, Some(at), "pause exactly at applyAt");
        // A play scheduled ahead is issued one start latency before it, from the right place.
        let at2 = at + 1000.0;
        assert!(f.handle_state(state((1, 3), true, 42.0, at2), Millis::new(now)));
        let mut cmds_all = drain(&mut f).0;
        let mut pos = at / 1000.0;
        let mut played_at = None;
        while played_at.is_none() && now < at2 {
            now = drain(&mut f).2.unwrap().max(now + 1e-6);
            for c in &cmds_all {
                if let MediaCommand::Seek { to_s } = c {
                    pos = *to_s;
                }
            }
            let (cmds, _, _) = sample(&mut f, now, pos, true);
            if cmds.contains(&MediaCommand::Play) {
                played_at = Some(now);
            }
            cmds_all = cmds;
        }
        assert_eq!(pos, 42.0);
        assert_eq!(played_at, Some(at2 - f.start_latency_ms()));
    }

    #[test]
    fn a_start_that_moves_then_stalls_is_measured_once_steady() {
        RATE.set(1.0);
        let mut f = Follower::new(FollowerConfig::default());
        f.handle_clock(ClockMapping::IDENTITY, Millis::new(0.0));
        f.handle_state(state((1, 1), true, 0.0, 1000.0), Millis::new(0.0));
        drain(&mut f);
        sample(&mut f, 10.0, 0.0, true);
        let play_at = 1000.0 - f.start_latency_ms();
        let (cmds, _, _) = sample(&mut f, play_at, 0.0, true);
        assert_eq!(cmds, vec![MediaCommand::Play]);
        // Chromium's first play(): the position moves at once, stalls while the audio output
        // starts, then runs 70 ms behind. No correction meanwhile.
        let media = |t: f64| {
            if t < 1020.0 {
                (t - 1000.0).max(0.0) / 1000.0
            } else {
                ((t - 1070.0).max(0.0) + 20.0) / 1000.0
            }
        };
        let mut t = play_at;
        while t < 1100.0 {
            t += 20.0;
            let (cmds, events, _) = sample(&mut f, t, media(t), false);
            assert!(cmds.is_empty(), "{t}: {cmds:?}");
            assert!(!events.iter().any(|e| matches!(e, FollowerEvent::Drift(_))));
        }
        while f.status() == FollowerStatus::Starting {
            t += 20.0;
            sample(&mut f, t, media(t), false);
        }
        // Learned from the steady part: the 30 ms estimate plus the 50 ms it ran behind.
        assert!(
            (f.start_latency_ms() - 80.0).abs() < 2.0,
            "{}",
            f.start_latency_ms()
        );
    }

    #[test]
    fn refused_autoplay_needs_a_user_gesture() {
        let mut f = Follower::new(FollowerConfig::default());
        f.handle_clock(ClockMapping::IDENTITY, Millis::new(0.0));
        f.handle_state(state((1, 1), true, 0.0, 0.0), Millis::new(0.0));
        drain(&mut f);
        let (cmds, _, _) = sample(&mut f, 10.0, 0.0, true);
        let Some(MediaCommand::Seek { to_s }) = cmds.first().cloned() else {
            panic!()
        };
        let play_at = to_s * 1000.0 - f.start_latency_ms();
        let (cmds, _, _) = sample(&mut f, play_at, to_s, true);
        assert_eq!(cmds, vec![MediaCommand::Play]);
        f.handle_play_rejected(Millis::new(play_at));
        let (cmds, events, _) = drain(&mut f);
        assert!(cmds.is_empty());
        assert!(events.contains(&FollowerEvent::NeedsUserGesture));
        assert_eq!(f.status(), FollowerStatus::NeedsUserGesture);
        // Samples while blocked do not retry play().
        let (cmds, events, _) = sample(&mut f, play_at + 500.0, to_s, true);
        assert!(cmds.is_empty() && !events.contains(&FollowerEvent::NeedsUserGesture));
        // The gesture starts it at once, where the room will be when it moves.
        f.handle_user_gesture(Millis::new(2000.0));
        let (cmds, _, _) = drain(&mut f);
        let [MediaCommand::Seek { to_s }, MediaCommand::Play] = cmds[..] else {
            panic!("{cmds:?}")
        };
        assert!((to_s - (2000.0 + f.start_latency_ms()) / 1000.0).abs() < 1e-9);
    }

    /// A follower with `config` that starts "t" (playing since server time 0 from 0 s) and
    /// whose element moves `offset_ms` off the room once it runs (a first start that missed
    /// by that much); returns it, the time of its first steady reading (the landing) and the
    /// commands that reading gave.
    fn landed_with(config: FollowerConfig, offset_ms: f64) -> (Follower, f64, Vec<MediaCommand>) {
        RATE.set(1.0);
        let mut f = Follower::new(config);
        f.handle_clock(ClockMapping::IDENTITY, Millis::new(0.0));
        f.handle_state(state((1, 1), true, 0.0, 0.0), Millis::new(0.0));
        drain(&mut f);
        let (cmds, _, _) = sample(&mut f, 10.0, 0.0, true);
        let Some(MediaCommand::Seek { to_s }) = cmds.first().cloned() else {
            panic!("{cmds:?}")
        };
        let play_at = to_s * 1000.0 - f.start_latency_ms();
        let (cmds, _, _) = sample(&mut f, play_at, to_s, true);
        assert_eq!(cmds, vec![MediaCommand::Play]);
        let mut t = play_at + 40.0;
        loop {
            t += 20.0;
            let (cmds, _, _) = sample(&mut f, t, (t + offset_ms) / 1000.0, false);
            if f.status() != FollowerStatus::Starting || !cmds.is_empty() {
                return (f, t, cmds);
            }
        }
    }

    #[test]
    fn a_joiners_landing_in_sync_is_held_but_not_a_djs_seek() {
        let config = FollowerConfig {
            landing_hold_ms: 1000.0,
            ..FollowerConfig::default()
        };
        // 7 ms behind: beyond the 5 ms deadband, within the 10 ms in-sync bound.
        let (mut f, landed, cmds) = landed_with(config, -7.0);
        assert!(cmds.is_empty(), "{cmds:?}");
        assert_eq!(f.status(), FollowerStatus::InSync);
        let (cmds, t) = run_until(&mut f, landed, landed + 970.0, |_| -7.0);
        assert!(cmds.is_empty(), "refined while held: {cmds:?}");
        assert_eq!(f.status(), FollowerStatus::InSync);
        // Then refined by an excursion (speeding up), not a seek.
        let (cmds, _) = run_until(&mut f, t, landed + 1100.0, |_| -7.0);
        assert!(
            matches!(cmds.first(), Some(MediaCommand::SetRate { rate }) if *rate > 1.0),
            "{cmds:?}"
        );
        assert!(!cmds.iter().any(|c| matches!(c, MediaCommand::Seek { .. })));

        // Beyond the in-sync bound nothing is held: the missed start is caught up at once.
        let config = FollowerConfig {
            landing_hold_ms: 1000.0,
            ..FollowerConfig::default()
        };
        let (_, _, cmds) = landed_with(config, -20.0);
        assert!(!cmds.is_empty(), "not corrected");

        // A DJ's seek moves every device at once: its landing is refined at once.
        let (mut f, mut t) = playing_with(FollowerConfig {
            landing_hold_ms: 1000.0,
            ..FollowerConfig::default()
        });
        let at = t + 100.0;
        assert!(f.handle_state(state((1, 2), true, 50.0, at), Millis::new(t)));
        let mut offset = f64::NAN;
        let mut refined = None;
        while t < at + 1000.0 && refined.is_none() {
            t = drain(&mut f)
                .2
                .unwrap_or(t + 20.0)
                .min(t + 20.0)
                .max(t + 1e-3);
            // The element: 7 ms behind the new position once the seek is issued.
            let pos = if offset.is_nan() {
                t / 1000.0
            } else {
                50.0 + (t - at - 7.0) / 1000.0
            };
            let (cmds, _, _) = sample(&mut f, t, pos, false);
            for c in cmds {
                match c {
                    MediaCommand::Seek { .. } => offset = -7.0,
                    MediaCommand::SetRate { rate } if rate > 1.0 => refined = Some(t),
                    c => panic!("{c:?}"),
                }
            }
        }
        let refined = refined.expect("refined");
        assert!(
            refined < at + 200.0,
            "refined {} ms after the seek",
            refined - at
        );
    }

    #[test]
    fn a_reading_during_an_excursion_never_decides_a_catchup_seek() {
        let config = FollowerConfig {
            catchup_seek_threshold_ms: 10.0,
            catchup_max_seeks: 3,
            ..FollowerConfig::default()
        };
        // Landed 8 ms behind, inside the catch-up window: an excursion speeds up.
        let (mut f, t, cmds) = landed_with(config, -8.0);
        assert!(
            matches!(cmds.first(), Some(MediaCommand::SetRate { rate }) if *rate > 1.0),
            "{cmds:?}"
        );
        let n = f.nudge.expect("running");
        // Chromium: the switch into time-stretching loses ~20 ms, so the readings during the
        // excursion dip to -28 ms (beyond the 10 ms catch-up seek threshold) and climb back.
        let dip = move |x: f64| -28.0 + 0.05 * (x - n.started_ms);
        let (cmds, t) = run_until(&mut f, t, n.until_ms + 1.0, dip);
        assert_eq!(cmds, vec![MediaCommand::SetRate { rate: 1.0 }], "no seek");
        // Measured again at the normal rate once the rate latency passed: in sync, nothing.
        let (cmds, _) = run_until(&mut f, t, t + 500.0, |_| -2.0);
        assert!(cmds.is_empty(), "{cmds:?}");
        assert_eq!(f.status(), FollowerStatus::InSync);

        // A large error during an excursion still seeks at once (the ladder's top rung).
        let (mut f, t, _) = landed_with(
            FollowerConfig {
                catchup_seek_threshold_ms: 10.0,
                ..FollowerConfig::default()
            },
            -8.0,
        );
        assert!(f.nudge.is_some());
        let (cmds, _) = run_until(&mut f, t, t + 40.0, |_| -300.0);
        assert!(
            cmds.iter().any(|c| matches!(c, MediaCommand::Seek { .. })),
            "{cmds:?}"
        );
    }

    #[test]
    fn the_first_seek_latency_guess_is_at_least_the_measured_start_latency() {
        // A loaded renderer: the first play() takes 120 ms (guess 70), so the start lands
        // 50 ms behind; its catch-up seek assumes 120 ms, not the 90 ms guess.
        let (f, _, cmds) = landed_with(FollowerConfig::browser(), -50.0);
        assert!(
            (f.start_latency_ms() - 120.0).abs() < 1.0,
            "{}",
            f.start_latency_ms()
        );
        assert!(
            (f.seek_latency_ms() - 120.0).abs() < 1.0,
            "{}",
            f.seek_latency_ms()
        );
        let Some(MediaCommand::Seek { to_s }) = cmds.first().cloned() else {
            panic!("{cmds:?}")
        };
        let t = f.last_seek_ms;
        assert!((to_s * 1000.0 - (t + 120.0)).abs() < 1.0, "{to_s} at {t}");
        // Without it, the guess stays.
        let (f, _, _) = landed_with(
            FollowerConfig {
                seek_latency_from_start: false,
                ..FollowerConfig::browser()
            },
            -50.0,
        );
        assert_eq!(f.seek_latency_ms(), 90.0);
    }
}
