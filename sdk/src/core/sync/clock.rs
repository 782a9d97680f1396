//! NTP-style clock offset estimation against the room's shared clock (issue #4 "Clock sync",
//! seed 004 "Timestamps: critical for time-sync across variable latency", seed 001 heartbeat
//! `{type: 'pong', serverTime}`).
//!
//! The shared clock is the server's wall clock (ms since the Unix epoch). A device's local
//! clock is its monotonic clock (`performance.now()`, ms). [`ClockSync`] estimates
//! `offset = server − local` and its drift from probes carried as Control `ping {clientTime}` /
//! `pong {clientTime, serverTime}` pairs (PROTOCOL.md §6).
//!
//! # One probe
//! The client stamps `t0` (local send time) into `clientTime`; the server answers with one
//! `serverTime` `S`; the client notes `t3` (local receive time). The stub gives a single server
//! timestamp, so NTP's receive/transmit pair is modelled as `t1 = t2 = S`. Then
//! `rtt = t3 − t0` and, because `S` was read at some local instant within `[t0, t3]`, the true
//! offset at that instant lies in the **feasible interval** `[S − t3, S − t0 + res]`, where
//! `res` is the server clock's resolution (1 ms: `serverTime` is an integer, floored).
//!
//! # The filter (documented as issue #4 asks)
//! 1. **Window.** Samples from the last [`ClockConfig::window_ms`] (2 min), at most
//!    [`ClockConfig::max_samples`].
//! 2. **Queued-sample rejection.** A sample whose RTT exceeds `min_rtt × k + margin`
//!    ([`ClockConfig::queue_factor`] 1.5, [`ClockConfig::queue_margin_ms`] 10 ms; `min_rtt`
//!    over the drift window) waited in some queue (TCP retransmission, bufferbloat, a busy
//!    event loop); it is not *kept* for the drift regression. Such a sample cannot mislead
//!    the offset either: its feasible interval is wide and never binds below.
//! 3. **Drift.** Weighted least squares of the kept samples' midpoint offsets
//!    `θ = S + res/2 − (t0 + t3)/2` against local time over [`ClockConfig::drift_window_ms`]
//!    (10 min), weights `1 / (rtt − min_rtt + 2 ms)²` (low-RTT samples have small asymmetry
//!    error). Outliers with a residual beyond `3 × 1.4826 × MAD` (at least 1 ms) are dropped and
//!    the line refitted. The slope is then shrunk towards 0 by its own standard error against a
//!    prior of [`ClockConfig::drift_prior_ppm`] (50 ppm, a typical crystal): a short, noisy
//!    history yields ~0, a long one the measured drift. No slope before 6 kept samples spanning
//!    20 s; its standard error is then the prior's.
//! 4. **Offset: interval intersection.** Every sample's feasible interval in the window is
//!    projected to the newest sample's time with the drift, widened on both sides by
//!    `2 × drift standard error × age` (so old samples stop binding while the drift is
//!    uncertain, and the window effectively grows as it is learned), and the intervals are
//!    intersected (Marzullo-style, all samples agreeing). The estimate is the midpoint, and
//!    [`ClockSync::uncertainty_ms`] its half-width: a hard bound, about the links' base one-way
//!    latency.
//!    The intersection is bounded by the sample with the fastest *uplink* on one side and the
//!    fastest *downlink* on the other, so it is much tighter than the best single RTT/2 and
//!    unaffected by one-sided queueing. Like all two-way methods it cannot see a constant
//!    asymmetry of the links' base latencies (half of it becomes offset error).
//! 5. **Steps.** If the intervals do not intersect (by more than 2 ms, room for drift error),
//!    one clock stepped (a suspended device, a route change): the oldest samples are dropped
//!    until they do, and a new burst starts if fewer than [`ClockConfig::min_samples`] remain.
//!
//! # Drive contract
//! [`ClockSync::new`] starts a burst of [`ClockConfig::burst_count`] (10) probes
//! [`ClockConfig::burst_spacing_ms`] (25 ms) apart (extended while fewer than
//! [`ClockConfig::burst_min_good`] answers pass the queued-sample filter and arrived alone,
//! not in a batch with another answer: a burst stalled as a whole by one TCP retransmission
//! arrives in batches), then [`ClockConfig::followup_count`] (20)
//! follow-ups every [`ClockConfig::followup_spacing_ms`] (100 ms: the first play often comes
//! a few seconds after the join, and the estimate is as good as its count of samples), then
//! one probe every
//! [`ClockConfig::interval_ms`] (500 ms: the intersection is only as tight as the fastest
//! uplink and downlink seen lately, and with 50 ± 20 ms of jitter a probe comes within 1 ms
//! of the fastest path in each direction once in 40; a probe and its answer are ~60 bytes).
//! The one contract of [`crate::core::drive`]: drain [`ClockSync::poll_output`] until
//! [`ClockOutput::Timeout`]; for every [`ClockOutput::Probe`], send Control
//! `ping {clientTime}` at once. [`ClockSync::handle_timeout`] at the deadline.
//! - On every `pong`, call [`ClockSync::handle_response`] with its `clientTime`, `serverTime`
//!   and the local receive time. Any pong counts, including answers to the connection's own
//!   heartbeat pings.
//! - After a socket reconnect or a wake from sleep, [`ClockSync::reset`] starts afresh.
//!
//! The estimator is transport-agnostic: issue #5 runs the same probes against a peer's clock
//! over a DataChannel.

use std::collections::VecDeque;

use crate::core::drive::Millis;

/// Tuning of [`ClockSync`]. Times in ms.
#[derive(Clone, Debug, PartialEq)]
pub struct ClockConfig {
    /// Probes in the burst sent on start (join) and after a reset.
    pub burst_count: u32,
    /// Spacing of the burst's probes, ms. Small but not zero, so probes do not queue behind
    /// each other.
    pub burst_spacing_ms: f64,
    /// A burst is extended (by up to `burst_count` more probes) until this many of its
    /// answers pass the queued-sample filter against the burst's own minimum RTT and arrived
    /// alone: a burst stalled as a whole by one retransmission has few such answers.
    pub burst_min_good: usize,
    /// Probes after the burst at [`ClockConfig::followup_spacing_ms`], before the period.
    /// They tighten the estimate over the first seconds and outvote a burst that was queued as
    /// a whole (one TCP retransmission stalls every probe of a 250 ms burst).
    pub followup_count: u32,
    /// Spacing of the follow-up probes, ms.
    pub followup_spacing_ms: f64,
    /// Period of probes after the burst and follow-ups, ms (500: see the module docs).
    pub interval_ms: f64,
    /// A probe unanswered for this long is presumed lost, ms.
    pub probe_timeout_ms: f64,
    /// Offset window: samples older than this (local ms) leave the intersection.
    pub window_ms: f64,
    /// Most samples kept in the offset window.
    pub max_samples: usize,
    /// Drift window: how much history the drift regression uses, ms.
    pub drift_window_ms: f64,
    /// Samples needed before [`ClockSync::is_synced`].
    pub min_samples: usize,
    /// `k` of the queued-sample filter `rtt ≤ min_rtt × k + margin`.
    pub queue_factor: f64,
    /// `margin` of the queued-sample filter, ms.
    pub queue_margin_ms: f64,
    /// Prior standard deviation of the drift, ppm (shrinks noisy slopes towards 0).
    pub drift_prior_ppm: f64,
    /// Resolution of the server's timestamps, ms (1: integer `serverTime`, floored).
    pub server_resolution_ms: f64,
}

impl Default for ClockConfig {
    fn default() -> Self {
        ClockConfig {
            burst_count: 10,
            burst_spacing_ms: 25.0,
            burst_min_good: 5,
            followup_count: 20,
            followup_spacing_ms: 100.0,
            interval_ms: 500.0,
            probe_timeout_ms: 3000.0,
            window_ms: 120_000.0,
            max_samples: 128,
            drift_window_ms: 600_000.0,
            min_samples: 4,
            queue_factor: 1.5,
            queue_margin_ms: 10.0,
            drift_prior_ppm: 50.0,
            server_resolution_ms: 1.0,
        }
    }
}

/// Largest drift believed, as a fraction (500 ppm); steeper slopes are clamped.
const MAX_DRIFT: f64 = 500e-6;
/// Intervals may miss each other by this much before it counts as a clock step, ms.
const CONFLICT_TOLERANCE_MS: f64 = 2.0;
/// Most probes in flight at once (older ones are forgotten first).
const MAX_OUTSTANDING: usize = 32;
/// Old samples' intervals widen by this many standard errors of the drift × their age.
const DRIFT_SIGMAS: f64 = 2.0;
/// Most samples in the drift history.
const MAX_HISTORY: usize = 512;
/// Burst answers received less than this apart arrived in one batch (queued), ms.
const BATCH_GAP_MS: f64 = 2.0;

/// One answered probe. Local times in ms of the local clock, `server` in server ms.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Sample {
    t0: f64,
    t3: f64,
    server: f64,
}

impl Sample {
    fn rtt(&self) -> f64 {
        self.t3 - self.t0
    }
}

/// A snapshot of the local → shared clock mapping, `server = local + offset + drift ×
/// (local − ref_local)`. `Copy`, so followers can hold one without borrowing the estimator.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClockMapping {
    /// Local time at which `offset_ms` holds, ms.
    pub ref_local_ms: f64,
    /// `server − local` at `ref_local_ms`, ms.
    pub offset_ms: f64,
    /// Rate of the server clock relative to the local one, minus 1 (e.g. `20e-6` = 20 ppm).
    pub drift: f64,
}

impl ClockMapping {
    /// The mapping of a local clock that *is* the shared clock (offset 0, no drift): the
    /// server's own followers and tests.
    pub const IDENTITY: ClockMapping = ClockMapping {
        ref_local_ms: 0.0,
        offset_ms: 0.0,
        drift: 0.0,
    };

    /// Shared-clock time (server ms) at local time `local_ms`.
    pub fn to_server(&self, local_ms: f64) -> f64 {
        local_ms + self.offset_ms + self.drift * (local_ms - self.ref_local_ms)
    }

    /// Local time (ms) at which the shared clock reads `server_ms`.
    pub fn to_local(&self, server_ms: f64) -> f64 {
        let ref_server = self.ref_local_ms + self.offset_ms;
        self.ref_local_ms + (server_ms - ref_server) / (1.0 + self.drift)
    }
}

/// The estimator of one clock against the shared clock (see the module docs for the filter
/// and the drive contract). All times are ms: `local` on the local monotonic clock, `server`
/// on the shared clock.
#[derive(Clone, Debug)]
pub struct ClockSync {
    config: ClockConfig,
    /// Offset window, oldest first.
    samples: VecDeque<Sample>,
    /// Drift history (longer), oldest first.
    history: VecDeque<Sample>,
    /// Send times of probes in flight.
    outstanding: VecDeque<f64>,
    /// Send times of the current burst's probes.
    burst_ids: Vec<f64>,
    /// Probes the current burst may still add to reach `burst_min_good`.
    burst_extension_left: u32,
    next_probe_ms: f64,
    burst_left: u32,
    followup_left: u32,
    mapping: Option<ClockMapping>,
    uncertainty_ms: f64,
    srtt_ms: Option<f64>,
    rttvar_ms: f64,
    steps: u32,
}

/// An output of [`ClockSync::poll_output`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ClockOutput {
    /// Send Control `ping {clientTime}` now (local ms, the send time).
    Probe {
        /// The probe's `clientTime`, local ms.
        client_time: f64,
    },
    /// Nothing more before this local time.
    Timeout(Millis),
}

crate::core::drive::machine!(ClockSync, ClockOutput);

impl ClockSync {
    /// An estimator whose first burst starts at local time `now`.
    pub fn new(config: ClockConfig, now: Millis) -> ClockSync {
        let now_ms = now.get();
        let burst_left = config.burst_count;
        let followup_left = config.followup_count;
        ClockSync {
            config,
            samples: VecDeque::new(),
            history: VecDeque::new(),
            outstanding: VecDeque::new(),
            burst_ids: Vec::new(),
            burst_extension_left: burst_left,
            next_probe_ms: now_ms,
            burst_left,
            followup_left,
            mapping: None,
            uncertainty_ms: f64::INFINITY,
            srtt_ms: None,
            rttvar_ms: 0.0,
            steps: 0,
        }
    }

    // ---- getters ----

    /// Whether enough samples arrived ([`ClockConfig::min_samples`]) for the mapping to be
    /// used.
    pub fn is_synced(&self) -> bool {
        self.mapping.is_some() && self.samples.len() >= self.config.min_samples
    }

    /// Whether a burst is still being sent or awaited.
    pub fn in_burst(&self) -> bool {
        self.burst_left > 0 || self.burst_ids.iter().any(|t| self.outstanding.contains(t))
    }

    /// The current local → shared mapping; `None` before the first sample.
    pub fn mapping(&self) -> Option<ClockMapping> {
        self.mapping
    }

    /// Shared-clock time (server ms) at local time `local_ms`; the local time itself before
    /// the first sample.
    pub fn server_now(&self, local_ms: f64) -> f64 {
        self.mapping.map_or(local_ms, |m| m.to_server(local_ms))
    }

    /// The controller's answer to a peer's clock probe while serverless (PROTOCOL.md §13.10):
    /// the kept shared-clock time (server ms, not floored) at local time `local_ms`, from the
    /// mapping of the last server samples. `None` before the first sample: a device that
    /// never synced with the server has no room clock to offer. The controller stops calling
    /// [`ClockSync::poll_output`] while it hosts the room, so the mapping stays as the server
    /// left it; its peers feed the answer to their own [`ClockSync::handle_response`].
    pub fn answer_peer_probe(&self, local_ms: f64) -> Option<f64> {
        self.mapping.map(|m| m.to_server(local_ms))
    }

    /// Estimated `server − local` at the newest sample, ms (0 before the first sample).
    pub fn offset_ms(&self) -> f64 {
        self.mapping.map_or(0.0, |m| m.offset_ms)
    }

    /// Estimated drift of the shared clock against the local one, ppm (positive: the server
    /// clock runs faster).
    pub fn drift_ppm(&self) -> f64 {
        self.mapping.map_or(0.0, |m| m.drift * 1e6)
    }

    /// Smallest RTT in the offset window, ms (`None` before the first sample).
    pub fn min_rtt_ms(&self) -> Option<f64> {
        self.samples.iter().map(Sample::rtt).reduce(f64::min)
    }

    /// Smoothed RTT (RFC 6298 EWMA, gain 1/8), ms.
    pub fn rtt_ms(&self) -> Option<f64> {
        self.srtt_ms
    }

    /// RTT variation (RFC 6298, gain 1/4), ms.
    pub fn rttvar_ms(&self) -> f64 {
        self.rttvar_ms
    }

    /// Half-width of the samples' intersected feasible intervals, ms: the offset is within
    /// this of the estimate unless the drift estimate is off or the links' base latencies are
    /// asymmetric. Infinite before the first sample.
    pub fn uncertainty_ms(&self) -> f64 {
        self.uncertainty_ms
    }

    /// Samples in the offset window.
    pub fn sample_count(&self) -> usize {
        self.samples.len()
    }

    /// The samples in the offset window, oldest first, as `(t0, t3, serverTime)`: local send
    /// and receive times, ms, and the server's stamp, server ms (diagnostics).
    pub fn samples(&self) -> impl Iterator<Item = (f64, f64, f64)> + '_ {
        self.samples.iter().map(|s| (s.t0, s.t3, s.server))
    }

    /// Clock steps detected so far (intervals that stopped intersecting).
    pub fn steps(&self) -> u32 {
        self.steps
    }

    /// When the next probe is due, local ms (also [`ClockOutput::Timeout`]).
    pub(crate) fn next_probe_at(&self) -> f64 {
        self.next_probe_ms
    }

    // ---- inputs and outputs ----

    /// The next output at `now`: a [`ClockOutput::Probe`] when one is due (recorded as sent;
    /// send `ping {clientTime}` at once), else [`ClockOutput::Timeout`] at the next probe.
    /// Also forgets probes unanswered for [`ClockConfig::probe_timeout_ms`].
    #[must_use]
    pub fn poll_output(&mut self, now: Millis) -> ClockOutput {
        match self.take_probe(now.get()) {
            Some(client_time) => ClockOutput::Probe { client_time },
            None => ClockOutput::Timeout(Millis::new(self.next_probe_ms)),
        }
    }

    /// A probe's `clientTime` (= `now_ms`) when one is due at `now_ms`, recorded as sent.
    pub(crate) fn take_probe(&mut self, now_ms: f64) -> Option<f64> {
        self.expire(now_ms);
        if now_ms < self.next_probe_ms {
            return None;
        }
        if self.burst_left > 0 {
            self.burst_left -= 1;
            self.burst_ids.push(now_ms);
        } else if self.followup_left > 0 {
            self.followup_left -= 1;
        }
        self.next_probe_ms = now_ms
            + if self.burst_left > 0 {
                self.config.burst_spacing_ms
            } else if self.followup_left > 0 {
                self.config.followup_spacing_ms
            } else {
                self.config.interval_ms
            };
        if self.outstanding.len() == MAX_OUTSTANDING {
            self.outstanding.pop_front();
        }
        self.outstanding.push_back(now_ms);
        Some(now_ms)
    }

    /// Forgets probes sent more than [`ClockConfig::probe_timeout_ms`] before `now`.
    pub fn handle_timeout(&mut self, now: Millis) {
        self.expire(now.get());
    }

    fn expire(&mut self, now_ms: f64) {
        let timeout = self.config.probe_timeout_ms;
        self.outstanding.retain(|&t0| now_ms - t0 <= timeout);
        self.check_burst(now_ms);
    }

    /// Once a burst is fully answered (or expired), extends it if too few of its answers look
    /// unqueued.
    fn check_burst(&mut self, now_ms: f64) {
        if self.burst_left > 0 || self.burst_extension_left == 0 || self.burst_ids.is_empty() {
            return;
        }
        if self.burst_ids.iter().any(|t| self.outstanding.contains(t)) {
            return;
        }
        let first = self.burst_ids[0];
        let mut burst: Vec<(f64, f64)> = self
            .samples
            .iter()
            .filter(|s| s.t0 >= first)
            .map(|s| (s.t3, s.rtt()))
            .collect();
        burst.sort_by(|a, b| a.0.total_cmp(&b.0));
        let min = burst
            .iter()
            .map(|b| b.1)
            .reduce(f64::min)
            .unwrap_or(f64::INFINITY);
        let cut = min * self.config.queue_factor + self.config.queue_margin_ms;
        // Answers that arrive together waited behind each other (on TCP, one delayed answer
        // holds back the next ones): a burst stalled as a whole has no good answer, however
        // its RTTs compare with its own minimum.
        let alone = |i: usize| {
            let before = i == 0 || burst[i].0 - burst[i - 1].0 >= BATCH_GAP_MS;
            let after = i + 1 == burst.len() || burst[i + 1].0 - burst[i].0 >= BATCH_GAP_MS;
            before && after
        };
        let good = (0..burst.len())
            .filter(|&i| burst[i].1 <= cut && alone(i))
            .count();
        let missing = self.config.burst_min_good.saturating_sub(good) as u32;
        if missing == 0 {
            self.burst_extension_left = 0;
            return;
        }
        let more = (missing + 2).min(self.burst_extension_left);
        self.burst_extension_left -= more;
        self.burst_left = more;
        self.next_probe_ms = self.next_probe_ms.min(now_ms);
    }

    /// A `pong {clientTime, serverTime}` arrived at local time `now`. Returns whether it was
    /// taken as a sample: answers with a `clientTime` in the future, older than the probe
    /// timeout, or already answered (a duplicate) are ignored.
    pub fn handle_response(&mut self, client_time: f64, server_time: f64, now: Millis) -> bool {
        let now_ms = now.get();
        let plausible = client_time <= now_ms
            && now_ms - client_time <= self.config.probe_timeout_ms
            && server_time.is_finite();
        if !plausible {
            return false;
        }
        if let Some(i) = self.outstanding.iter().position(|&t| t == client_time) {
            self.outstanding.remove(i);
        } else if self.samples.iter().any(|s| s.t0 == client_time) {
            return false;
        }
        let sample = Sample {
            t0: client_time,
            t3: now_ms,
            server: server_time,
        };
        let rtt = sample.rtt();
        match self.srtt_ms {
            None => {
                self.srtt_ms = Some(rtt);
                self.rttvar_ms = rtt / 2.0;
            }
            Some(srtt) => {
                self.rttvar_ms = 0.75 * self.rttvar_ms + 0.25 * (srtt - rtt).abs();
                self.srtt_ms = Some(0.875 * srtt + 0.125 * rtt);
            }
        }
        self.samples.push_back(sample);
        self.history.push_back(sample);
        while self.samples.len() > self.config.max_samples
            || self
                .samples
                .front()
                .is_some_and(|s| now_ms - s.t3 > self.config.window_ms)
        {
            self.samples.pop_front();
        }
        while self.history.len() > MAX_HISTORY
            || self
                .history
                .front()
                .is_some_and(|s| now_ms - s.t3 > self.config.drift_window_ms)
        {
            self.history.pop_front();
        }
        self.recompute();
        self.check_burst(now_ms);
        true
    }

    /// Forgets every sample and starts a new burst at `now` (after a reconnect, a wake from
    /// sleep, or when the app suspects a clock change).
    pub fn reset(&mut self, now: Millis) {
        self.samples.clear();
        self.history.clear();
        self.outstanding.clear();
        self.mapping = None;
        self.uncertainty_ms = f64::INFINITY;
        self.start_burst(now);
    }

    /// Starts a new burst (then follow-ups, then the period) at `now`, keeping every
    /// sample: the probes go to a new source of the same shared clock (PROTOCOL.md §13.10: a
    /// new controller while serverless, or the server again).
    pub fn start_burst(&mut self, now: Millis) {
        let now_ms = now.get();
        self.burst_left = self.config.burst_count;
        self.burst_extension_left = self.config.burst_count;
        self.followup_left = self.config.followup_count;
        self.burst_ids.clear();
        self.next_probe_ms = self.next_probe_ms.min(now_ms);
    }

    // ---- the filter ----

    fn recompute(&mut self) {
        let (drift, drift_se) = self.estimate_drift();
        loop {
            let Some(last) = self.samples.back() else {
                return;
            };
            let t_ref = last.t3;
            let (lo, hi) = self.intersect(drift, drift_se, t_ref);
            if lo <= hi + CONFLICT_TOLERANCE_MS || self.samples.len() == 1 {
                let (offset, half) = if lo <= hi {
                    ((lo + hi) / 2.0, (hi - lo) / 2.0)
                } else {
                    ((lo + hi) / 2.0, 0.0)
                };
                self.mapping = Some(ClockMapping {
                    ref_local_ms: t_ref,
                    offset_ms: offset,
                    drift,
                });
                self.uncertainty_ms = half;
                return;
            }
            // A clock step: trust the newer samples.
            self.steps += 1;
            let gone = self.samples.pop_front().map(|s| s.t3);
            if let Some(t) = gone {
                self.history.retain(|s| s.t3 > t);
            }
            if self.samples.len() < self.config.min_samples && self.burst_left == 0 {
                let now = self.samples.back().map_or(0.0, |s| s.t3);
                self.start_burst(Millis::new(now));
            }
        }
    }

    /// Intersection `(lo, hi)` of the window's feasible intervals projected to `t_ref` with
    /// `drift`, each widened by `DRIFT_SIGMAS × drift_se × age`.
    fn intersect(&self, drift: f64, drift_se: f64, t_ref: f64) -> (f64, f64) {
        let res = self.config.server_resolution_ms;
        let widen = DRIFT_SIGMAS * drift_se;
        let mut lo = f64::NEG_INFINITY;
        let mut hi = f64::INFINITY;
        for s in &self.samples {
            let (a3, a0) = (t_ref - s.t3, t_ref - s.t0);
            lo = lo.max(s.server - s.t3 + drift * a3 - widen * a3.abs());
            hi = hi.min(s.server + res - s.t0 + drift * a0 + widen * a0.abs());
        }
        (lo, hi)
    }

    /// Shrunk weighted least-squares slope of the kept samples' offsets and its standard
    /// error (module docs, step 3); `(0, prior)` without enough history.
    fn estimate_drift(&self) -> (f64, f64) {
        let prior = (self.config.drift_prior_ppm * 1e-6).powi(2);
        let none = (0.0, prior.sqrt());
        let (Some(min_rtt), Some(t_last)) = (
            self.history.iter().map(Sample::rtt).reduce(f64::min),
            self.history.back().map(|s| s.t3),
        ) else {
            return none;
        };
        let cut = min_rtt * self.config.queue_factor + self.config.queue_margin_ms;
        let half_res = self.config.server_resolution_ms / 2.0;
        // (x: local ms relative to the newest, y: offset ms, w)
        let mut pts: Vec<(f64, f64, f64)> = self
            .history
            .iter()
            .filter(|s| s.rtt() <= cut)
            .map(|s| {
                let mid = (s.t0 + s.t3) / 2.0;
                let w = 1.0 / (s.rtt() - min_rtt + 2.0).powi(2);
                (mid - t_last, s.server + half_res - mid, w)
            })
            .collect();
        let Some((b0, (xm, ym))) = fit(&pts) else {
            return none;
        };
        // Outlier rejection by the median absolute deviation, then refit.
        let resid = |p: &(f64, f64, f64)| p.1 - (ym + b0 * (p.0 - xm));
        let mut abs: Vec<f64> = pts.iter().map(|p| resid(p).abs()).collect();
        abs.sort_by(f64::total_cmp);
        let limit = (3.0 * 1.4826 * abs[abs.len() / 2]).max(1.0);
        pts.retain(|p| resid(p).abs() <= limit);
        let Some((slope, _)) = fit(&pts) else {
            return none;
        };
        let var = slope_variance(&pts, slope);
        // Normal prior N(0, prior) × likelihood N(slope, var): the posterior.
        let b = (slope * prior / (prior + var)).clamp(-MAX_DRIFT, MAX_DRIFT);
        (b, (var * prior / (var + prior)).sqrt())
    }
}

/// Minimum points and span (ms) for a drift slope.
const MIN_DRIFT_POINTS: usize = 6;
const MIN_DRIFT_SPAN_MS: f64 = 20_000.0;

/// Weighted least squares `y = a + b (x − x̄)`: `(b, (x̄, a))`, or `None` when the points are
/// too few or span too short a time.
fn fit(pts: &[(f64, f64, f64)]) -> Option<(f64, (f64, f64))> {
    if pts.len() < MIN_DRIFT_POINTS {
        return None;
    }
    let (xmin, xmax) = pts
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.0), b.max(p.0))
        });
    if xmax - xmin < MIN_DRIFT_SPAN_MS {
        return None;
    }
    let sw: f64 = pts.iter().map(|p| p.2).sum();
    let xm = pts.iter().map(|p| p.2 * p.0).sum::<f64>() / sw;
    let ym = pts.iter().map(|p| p.2 * p.1).sum::<f64>() / sw;
    let sxx: f64 = pts.iter().map(|p| p.2 * (p.0 - xm).powi(2)).sum();
    let sxy: f64 = pts.iter().map(|p| p.2 * (p.0 - xm) * (p.1 - ym)).sum();
    if sxx <= 0.0 {
        return None;
    }
    Some((sxy / sxx, (xm, ym)))
}

/// Variance of the WLS slope `b` over `pts` (residual variance / weighted spread).
fn slope_variance(pts: &[(f64, f64, f64)], b: f64) -> f64 {
    let sw: f64 = pts.iter().map(|p| p.2).sum();
    let xm = pts.iter().map(|p| p.2 * p.0).sum::<f64>() / sw;
    let ym = pts.iter().map(|p| p.2 * p.1).sum::<f64>() / sw;
    let sxx: f64 = pts.iter().map(|p| p.2 * (p.0 - xm).powi(2)).sum();
    let ssr: f64 = pts
        .iter()
        .map(|p| p.2 * (p.1 - ym - b * (p.0 - xm)).powi(2))
        .sum();
    let dof = (pts.len() as f64 - 2.0).max(1.0);
    (ssr / dof) / sxx
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The estimator driven at f64 local times, as the simulations below write them.
    pub(crate) trait AtMs {
        fn probe(&mut self, now: f64) -> Option<f64>;
        fn respond(&mut self, client_time: f64, server_time: f64, now: f64) -> bool;
    }

    impl AtMs for ClockSync {
        fn probe(&mut self, now: f64) -> Option<f64> {
            match self.poll_output(Millis::new(now)) {
                ClockOutput::Probe { client_time } => Some(client_time),
                ClockOutput::Timeout(_) => None,
            }
        }
        fn respond(&mut self, client_time: f64, server_time: f64, now: f64) -> bool {
            self.handle_response(client_time, server_time, Millis::new(now))
        }
    }

    /// A device whose local clock reads `true × (1 + drift) + skew` against a server at
    /// `true + 1.7e12`, over a link with one-way delays `base + U(0, jitter)`.
    struct Link {
        rng: fastrand::Rng,
        skew: f64,
        drift: f64,
        base: f64,
        jitter: f64,
    }

    const EPOCH: f64 = 1.7e12;

    impl Link {
        fn local(&self, t: f64) -> f64 {
            t * (1.0 + self.drift) + self.skew
        }
        fn true_offset(&self, t: f64) -> f64 {
            (t + EPOCH) - self.local(t)
        }
        /// Runs `cs` from true time `from` to `to`; returns the true time reached.
        fn run(&mut self, cs: &mut ClockSync, from: f64, to: f64, step: f64) {
            let mut inflight: Vec<(f64, f64, f64)> = Vec::new(); // (arrive_true, client_time, server)
            let mut t = from;
            while t < to {
                if let Some(ct) = cs.probe(self.local(t)) {
                    let up = self.base + self.rng.f64() * self.jitter;
                    let down = self.base + self.rng.f64() * self.jitter;
                    inflight.push((t + up + down, ct, (t + up + EPOCH).floor()));
                }
                inflight.retain(|&(at, ct, s)| {
                    if at <= t {
                        cs.respond(ct, s, self.local(t));
                        false
                    } else {
                        true
                    }
                });
                t += step;
            }
        }
    }

    fn link(seed: u64) -> Link {
        Link {
            rng: fastrand::Rng::with_seed(seed),
            skew: 1_234.5,
            drift: 0.0,
            base: 30.0,
            jitter: 40.0,
        }
    }

    #[test]
    fn burst_converges_within_the_uncertainty_bound() {
        for seed in 0..20 {
            let mut l = link(seed);
            let mut cs = ClockSync::new(ClockConfig::default(), Millis::new(l.local(0.0)));
            assert!(!cs.is_synced());
            l.run(&mut cs, 0.0, 600.0, 0.5);
            assert!(cs.is_synced());
            assert!(!cs.in_burst());
            let err = cs.server_now(l.local(600.0)) - (600.0 + EPOCH);
            assert!(err.abs() < 8.0, "seed {seed}: error {err} ms");
            assert!(
                err.abs() <= cs.uncertainty_ms() + 1.0,
                "seed {seed}: {err} vs ±{}",
                cs.uncertainty_ms()
            );
            let min = cs.min_rtt_ms().unwrap();
            assert!((60.0..100.0).contains(&min), "{min}");
            assert!(cs.rtt_ms().unwrap() >= min);
        }
    }

    #[test]
    fn peers_sync_to_the_controllers_kept_clock() {
        for seed in 0..10 {
            // The controller syncs with the server, then the server is gone at 2 s.
            let mut l = link(seed);
            l.drift = 30e-6;
            let mut ctrl = ClockSync::new(ClockConfig::default(), Millis::new(l.local(0.0)));
            assert_eq!(ctrl.answer_peer_probe(l.local(0.0)), None);
            l.run(&mut ctrl, 0.0, 2000.0, 0.5);
            // A peer with another skew probes the controller over a 20-40 ms DataChannel.
            let (p_skew, p_drift) = (-987.0, -20e-6);
            let p_local = |t: f64| t * (1.0 + p_drift) + p_skew;
            let mut peer = ClockSync::new(ClockConfig::default(), Millis::new(p_local(2000.0)));
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut inflight: Vec<(f64, f64, f64)> = Vec::new();
            let mut t = 2000.0;
            while t < 12_000.0 {
                if let Some(ct) = peer.probe(p_local(t)) {
                    let up = 20.0 + rng.f64() * 20.0;
                    let down = 20.0 + rng.f64() * 20.0;
                    let answer = ctrl.answer_peer_probe(l.local(t + up)).unwrap();
                    inflight.push((t + up + down, ct, answer));
                }
                inflight.retain(|&(at, ct, s)| {
                    let due = at <= t;
                    if due {
                        peer.respond(ct, s, p_local(t));
                    }
                    !due
                });
                t += 0.5;
            }
            // Both read the same room clock: the controller's kept one, close to the server's.
            let room = ctrl.server_now(l.local(t));
            let err = peer.server_now(p_local(t)) - room;
            assert!(err.abs() < 5.0, "seed {seed}: peer vs controller {err} ms");
            assert!(
                (room - (t + EPOCH)).abs() < 10.0,
                "seed {seed}: kept clock drifted"
            );
        }
    }

    #[test]
    fn periodic_probes_tighten_the_estimate_and_measure_drift() {
        let mut worst: f64 = 0.0;
        for seed in 0..10 {
            let mut l = link(seed);
            l.drift = if seed % 2 == 0 { 40e-6 } else { -40e-6 };
            let mut cs = ClockSync::new(ClockConfig::default(), Millis::new(l.local(0.0)));
            l.run(&mut cs, 0.0, 600_000.0, 1.0);
            let t = 600_000.0;
            let err = cs.server_now(l.local(t)) - (t + EPOCH);
            worst = worst.max(err.abs());
            // The server runs at 1/(1+drift) of the local clock: −drift to first order.
            let drift = cs.drift_ppm();
            assert!(
                (drift + l.drift * 1e6).abs() < 15.0,
                "seed {seed}: {drift} ppm"
            );
            assert!((cs.offset_ms() - l.true_offset(t)).abs() < 5.0);
        }
        assert!(worst < 2.5, "worst error {worst} ms");
    }

    #[test]
    fn queued_samples_do_not_move_the_estimate() {
        let mut l = link(7);
        let mut cs = ClockSync::new(ClockConfig::default(), Millis::new(l.local(0.0)));
        l.run(&mut cs, 0.0, 1000.0, 0.5);
        let before = cs.offset_ms();
        // A pong that sat 400 ms in a queue on the way back.
        let t = 1000.0;
        assert!(cs.respond(l.local(t), (t + 35.0 + EPOCH).floor(), l.local(t + 470.0)));
        assert!((cs.offset_ms() - before).abs() < 0.5);
        // Duplicates, answers from the future and stale answers are ignored.
        assert!(!cs.respond(l.local(t), (t + 35.0 + EPOCH).floor(), l.local(t + 471.0)));
        assert!(!cs.respond(l.local(t + 600.0), EPOCH, l.local(t + 500.0)));
        assert!(!cs.respond(l.local(t), EPOCH, l.local(t + 10_000.0)));
    }

    #[test]
    fn drive_contract_burst_then_period_and_lost_probes_expire() {
        let cfg = ClockConfig::default();
        let mut cs = ClockSync::new(cfg.clone(), Millis::new(100.0));
        assert_eq!(cs.next_probe_at(), 100.0);
        assert_eq!(cs.probe(99.0), None);
        let mut sent = vec![];
        let mut now = 100.0;
        while sent.len() < cfg.burst_count as usize {
            if let Some(t) = cs.probe(now) {
                sent.push(t);
            }
            now = cs.next_probe_at();
        }
        assert_eq!(sent[1] - sent[0], cfg.burst_spacing_ms);
        let last = *sent.last().unwrap();
        assert_eq!(cs.next_probe_at(), last + cfg.followup_spacing_ms);
        assert!(cs.in_burst(), "burst probes are unanswered");
        // Nothing answers: the probes expire, the burst is extended (no good answers) by at
        // most `burst_count` probes, then it is over, unsynced.
        let mut now = last + cfg.probe_timeout_ms + 1.0;
        cs.handle_timeout(Millis::new(now));
        assert!(cs.in_burst());
        assert!(cs.next_probe_at() <= now);
        let mut extra = 0;
        while cs.in_burst() {
            if cs.probe(now).is_some() {
                extra += 1;
            }
            now += cfg.burst_spacing_ms;
        }
        // The extension (≤ burst_count) plus the follow-ups and periodic probes sent meanwhile
        // (while the extension's last probes wait out their timeout).
        let periodic = (cfg.probe_timeout_ms / cfg.interval_ms).ceil() as u32 + 2;
        assert!(
            extra > 0 && extra <= cfg.burst_count + cfg.followup_count + periodic,
            "{extra}"
        );
        assert!(!cs.is_synced());
        assert_eq!(cs.uncertainty_ms(), f64::INFINITY);
        assert_eq!(cs.server_now(5.0), 5.0);
    }

    #[test]
    fn a_clock_step_is_detected_and_followed() {
        let mut l = link(3);
        let mut cs = ClockSync::new(ClockConfig::default(), Millis::new(l.local(0.0)));
        l.run(&mut cs, 0.0, 20_000.0, 1.0);
        let err = cs.server_now(l.local(20_000.0)) - (20_000.0 + EPOCH);
        assert!(err.abs() < 5.0);
        // The local clock jumps 500 ms ahead (e.g. a suspended tab's clock).
        l.skew += 500.0;
        l.run(&mut cs, 20_000.0, 40_000.0, 1.0);
        let err = cs.server_now(l.local(40_000.0)) - (40_000.0 + EPOCH);
        assert!(err.abs() < 5.0, "error {err} ms after the step");
        assert!(cs.steps() > 0);
        // reset() starts a new burst.
        cs.reset(Millis::new(l.local(40_000.0)));
        assert!(!cs.is_synced());
        assert!(cs.in_burst());
    }

    #[test]
    fn mapping_round_trips() {
        let m = ClockMapping {
            ref_local_ms: 5_000.0,
            offset_ms: 1.7e12,
            drift: 30e-6,
        };
        for l in [0.0, 5_000.0, 1e7] {
            assert!((m.to_local(m.to_server(l)) - l).abs() < 1e-3);
        }
        assert_eq!(ClockMapping::IDENTITY.to_server(42.0), 42.0);
    }
}
