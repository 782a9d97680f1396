//! Client-side pacing of a server's per-session lane quotas, sans-IO: a GCRA (generic cell
//! rate algorithm, ITU-T I.371, the algorithm of the `governor` crate the server uses) that
//! takes `now` as an argument and never reads a clock.
//!
//! The server advertises its quotas in the handshake response (`limits.rates`,
//! [`crate::core::handshake::Limits`]); [`Gcra::pacing`] turns one into the client's pacer with
//! a safety margin, so that an honest client never trips the server even when network jitter
//! bunches its frames: the client keeps half the burst (at least one cell) and sends 5 %
//! slower than the advertised rate. Frames that network or scheduling jitter delays by up to
//! the kept half's worth of intervals (burst 5 at 20/s: about 95 ms; burst 200 at 50/s: about
//! 2 s) and then delivers bunched together still conform at the server.
//!
//! Why our own 60 lines rather than `governor`: `governor` reads time through its `Clock` trait
//! (`quanta` or `std::time::Instant` by default; the latter panics on wasm32-unknown-unknown),
//! keeps its state in an atomic for sharing between threads, and does not expose the next
//! conforming time without a check. The client needs none of that, and needs the next deadline
//! for its drive contract. The arithmetic is the same: a cell conforms at `t` iff
//! `t ≥ TAT − τ` with `τ = (burst − 1) · T`; a conforming cell moves `TAT` to
//! `max(TAT, t) + T`.

use crate::core::drive::Millis;

/// Longest emission interval accepted from a server, ms (one message per hour).
pub const MAX_INTERVAL_MS: f64 = 3_600_000.0;
/// Largest burst accepted from a server, messages.
pub const MAX_BURST: u32 = 1_000_000;

/// A quota: `burst` messages at once, then one every `interval_us`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gcra {
    /// Emission interval T, µs (≥ 1).
    interval_us: u64,
    /// Burst tolerance τ = (burst − 1) · T, µs.
    tolerance_us: u64,
    /// Theoretical arrival time of the next cell, µs of the caller's clock.
    tat_us: u64,
}

impl Gcra {
    /// A quota of `per_second` messages per second with bursts of `burst` messages, exactly
    /// as given. `None` when `per_second` is not a finite number above 0 or `burst` is 0.
    /// The interval is rounded up to whole µs and capped at [`MAX_INTERVAL_MS`]; the burst is
    /// capped at [`MAX_BURST`].
    pub fn new(per_second: f64, burst: u32) -> Option<Gcra> {
        if !per_second.is_finite() || per_second <= 0.0 || burst == 0 {
            return None;
        }
        let interval_us = (1_000_000.0 / per_second)
            .ceil()
            .clamp(1.0, MAX_INTERVAL_MS * 1000.0) as u64;
        let burst = u64::from(burst.min(MAX_BURST));
        Some(Gcra {
            interval_us,
            tolerance_us: (burst - 1).saturating_mul(interval_us),
            tat_us: 0,
        })
    }

    /// The client's pacer for a server quota of `per_second` and `burst`: the burst less
    /// half (at least 1, keeping at least 1) and the rate less 5 %. See the module docs.
    pub fn pacing(per_second: f64, burst: u32) -> Option<Gcra> {
        let margin = (burst / 2).max(1);
        Gcra::new(per_second * 0.95, burst.saturating_sub(margin).max(1))
    }

    /// Emission interval T, µs.
    pub fn interval_us(&self) -> u64 {
        self.interval_us
    }

    /// The earliest time (ms, rounded up) at which a message conforms; at or before now if
    /// one conforms now.
    pub fn ready_at(&self) -> u64 {
        self.tat_us.saturating_sub(self.tolerance_us).div_ceil(1000)
    }

    /// Whether a message conforms at `now` (whole ms).
    pub fn conforms(&self, now: Millis) -> bool {
        self.tat_us.saturating_sub(self.tolerance_us) <= now.as_u64().saturating_mul(1000)
    }

    /// Counts one message sent at `now` (whole ms; whether or not it conformed: a message
    /// that had to go anyway pushes the next ones back).
    pub fn consume(&mut self, now: Millis) {
        let now_us = now.as_u64().saturating_mul(1000);
        self.tat_us = self.tat_us.max(now_us).saturating_add(self.interval_us);
    }

    /// The server refused a message at `now` and asks for `retry_after_ms`: nothing
    /// conforms before `now + retry_after_ms`, and from then on one message per interval
    /// (the server's bucket is empty).
    pub fn hold(&mut self, retry_after_ms: u64, now: Millis) {
        let until_us = now
            .as_u64()
            .saturating_add(retry_after_ms)
            .saturating_mul(1000);
        self.tat_us = self.tat_us.max(until_us.saturating_add(self.tolerance_us));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `n` messages as fast as allowed from t = 0; returns the send times, ms.
    fn schedule(mut g: Gcra, n: usize) -> Vec<u64> {
        let mut now = 0;
        let mut out = vec![];
        while out.len() < n {
            now = now.max(g.ready_at());
            assert!(g.conforms(Millis::from_u64(now)));
            g.consume(Millis::from_u64(now));
            out.push(now);
        }
        out
    }

    #[test]
    fn burst_then_one_per_interval() {
        let g = Gcra::new(20.0, 5).unwrap();
        assert_eq!(g.interval_us(), 50_000);
        let t = schedule(g, 8);
        assert_eq!(t, vec![0, 0, 0, 0, 0, 50, 100, 150]);
    }

    #[test]
    fn sub_millisecond_intervals_are_exact_over_time() {
        // 5000/s, bursts of 10: a whole-ms clock still sends 5 per ms; 1000 messages take
        // about 200 ms.
        let t = schedule(Gcra::new(5000.0, 10).unwrap(), 1000);
        assert!((195..=200).contains(t.last().unwrap()), "{:?}", t.last());
        assert!(t.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn pacing_keeps_a_margin_below_the_quota() {
        // Against the server's exact quota, the paced schedule always conforms, even with
        // every frame but one delayed by up to one interval.
        let server_quota = Gcra::new(20.0, 5).unwrap();
        let sends = schedule(Gcra::pacing(20.0, 5).unwrap(), 200);
        let mut server = server_quota;
        for (i, &t) in sends.iter().enumerate() {
            let arrival = if i % 7 == 3 { t + 45 } else { t };
            assert!(
                server.conforms(Millis::from_u64(arrival)),
                "message {i} at {arrival}"
            );
            server.consume(Millis::from_u64(arrival));
        }
        assert!(Gcra::pacing(20.0, 1).is_some());
        assert_eq!(Gcra::pacing(100.0, 400).unwrap().tolerance_us, 199 * 10_527);
    }

    #[cfg(not(target_arch = "wasm32"))]
    proptest::proptest! {
        /// The paced schedule conforms at the server whatever the jitter, up to the margin:
        /// each frame delayed by any amount up to `(burst − 1)·T − τ_pacer` (in order, as
        /// TCP delivers them), so bunched arrivals never trip the quota.
        #[test]
        fn pacing_absorbs_jitter_up_to_its_margin(
            per_second in 1.0f64..500.0,
            burst in 2u32..60,
            delays in proptest::collection::vec(0.0f64..=1.0, 1..300),
        ) {
            let server_quota = Gcra::new(per_second, burst).unwrap();
            let pacer = Gcra::pacing(per_second, burst).unwrap();
            let server_tau_us = server_quota.tolerance_us;
            let jitter_ms = server_tau_us.saturating_sub(pacer.tolerance_us) / 1000;
            let half = server_quota.interval_us() * u64::from(burst / 2);
            proptest::prop_assert!((jitter_ms + 1) * 1000 >= half * 9 / 10, "margin {} ms", jitter_ms);
            let sends = schedule(pacer, delays.len());
            let mut server = server_quota;
            let mut last = 0;
            for (i, (&t, d)) in sends.iter().zip(&delays).enumerate() {
                let arrival = (t + (d * jitter_ms as f64) as u64).max(last);
                last = arrival;
                proptest::prop_assert!(server.conforms(Millis::from_u64(arrival)), "message {} at {}", i, arrival);
                server.consume(Millis::from_u64(arrival));
            }
        }
    }

    #[test]
    fn hold_waits_then_paces() {
        let mut g = Gcra::new(10.0, 10).unwrap();
        g.hold(250, Millis::from_u64(1000));
        assert!(!g.conforms(Millis::from_u64(1249)));
        assert_eq!(g.ready_at(), 1250);
        g.consume(Millis::from_u64(1250));
        assert_eq!(g.ready_at(), 1350);
    }

    #[test]
    fn refuses_nonsense_and_never_overflows() {
        for (r, b) in [
            (0.0, 5),
            (-1.0, 5),
            (f64::NAN, 5),
            (f64::INFINITY, 5),
            (1.0, 0),
        ] {
            assert!(Gcra::new(r, b).is_none(), "{r} {b}");
        }
        let mut g = Gcra::new(1e-300, u32::MAX).unwrap();
        g.consume(Millis::from_u64(u64::MAX));
        g.hold(u64::MAX, Millis::from_u64(u64::MAX));
        let _ = (g.conforms(Millis::from_u64(u64::MAX - 1)), g.ready_at());
    }
}
