//! The one drive contract of every core state machine (issue 13; STYLE "One drive contract").
//!
//! Every machine (the multiplexer, the connection client, the clock estimator, the follower,
//! the peer mesh and its tier machine, the election, the PWA coordinator, the SSE `POST`
//! sender and the music room) is driven the same way:
//!
//! 1. Time comes in as [`Millis`], the driver's monotonic clock, as the **last** argument of
//!    every `handle_*` input that needs it. Wall-clock readings (`Date.now()`) and times that
//!    travel on the wire are data, not `now`, and keep their wire types.
//! 2. After every input or mutation, the driver drains [`Machine::poll_output`] until it
//!    returns the machine's `Timeout` output, which carries the next deadline
//!    ([`Millis::NEVER`] when there is none). [`drain`] is that loop, written once.
//! 3. When the deadline passes, the driver calls [`Machine::handle_timeout`] and drains again
//!    (calling it early is harmless).
//!
//! A machine made of several machines (the music room, the client with its multiplexer, the
//! mesh with its tier machine) owns its parts and polls them inside its own `poll_output`, so
//! a driver sees one machine (str0m's `Rtc`).

use std::cmp::Ordering;
use std::fmt;

/// A point on the driver's monotonic clock, in milliseconds (fractional values allowed:
/// `performance.now()` in browsers, an `Instant` offset on the server, a virtual clock in
/// simulations). Never NaN; [`Millis::NEVER`] (+∞) means "no deadline".
#[derive(Clone, Copy, Default)]
pub struct Millis(f64);

impl Millis {
    /// The clock's origin.
    pub const ZERO: Millis = Millis(0.0);
    /// No deadline: later than every reachable time.
    pub const NEVER: Millis = Millis(f64::INFINITY);

    /// `ms` milliseconds; NaN (and -0) becomes 0.
    #[must_use]
    pub fn new(ms: f64) -> Millis {
        if ms.is_nan() {
            Millis::ZERO
        } else {
            Millis(ms + 0.0)
        }
    }

    /// Whole milliseconds (exact up to 2^53 ms).
    #[must_use]
    pub const fn from_u64(ms: u64) -> Millis {
        Millis(ms as f64)
    }

    /// `Some(deadline)` as `Millis`, `None` as [`Millis::NEVER`].
    #[must_use]
    pub fn from_deadline(ms: Option<u64>) -> Millis {
        ms.map_or(Millis::NEVER, Millis::from_u64)
    }

    /// The value, ms.
    #[must_use]
    pub const fn get(self) -> f64 {
        self.0
    }

    /// Whole milliseconds, rounded down and saturating (negative → 0, [`Millis::NEVER`] →
    /// `u64::MAX`), for machines that count in integer ms.
    #[must_use]
    pub fn as_u64(self) -> u64 {
        // `as` saturates for floats and maps NaN to 0 (never stored here).
        self.0.floor() as u64
    }

    /// `None` for [`Millis::NEVER`], else the value.
    #[must_use]
    pub fn deadline(self) -> Option<Millis> {
        (!self.is_never()).then_some(self)
    }

    /// Whether this is [`Millis::NEVER`] (or any infinite value).
    #[must_use]
    pub fn is_never(self) -> bool {
        self.0.is_infinite() && self.0 > 0.0
    }

    /// `self + ms`, ms (`NEVER` stays `NEVER`).
    #[must_use]
    pub fn plus(self, ms: f64) -> Millis {
        Millis::new(self.0 + ms)
    }

    /// `self - earlier` in ms, never negative.
    #[must_use]
    pub fn since(self, earlier: Millis) -> f64 {
        (self.0 - earlier.0).max(0.0)
    }

    /// The earlier of two times.
    #[must_use]
    pub fn min(self, other: Millis) -> Millis {
        if other.0 < self.0 {
            other
        } else {
            self
        }
    }

    /// The later of two times.
    #[must_use]
    pub fn max(self, other: Millis) -> Millis {
        if other.0 > self.0 {
            other
        } else {
            self
        }
    }
}

impl PartialEq for Millis {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Millis {}

impl PartialOrd for Millis {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Millis {
    /// Total order (never NaN; -0 is stored as 0).
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl fmt::Debug for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_never() {
            f.write_str("never")
        } else {
            write!(f, "{}ms", self.0)
        }
    }
}

/// An output of [`Machine::poll_output`]: every output enum ends in a `Timeout` variant.
pub trait Polled {
    /// `Some(deadline)` when this is the machine's `Timeout` output (nothing more to do
    /// before `deadline`; [`Millis::NEVER`] for none), `None` for any other output.
    fn timeout(&self) -> Option<Millis>;
}

/// A sans-IO state machine driven by the one contract of this module.
pub trait Machine {
    /// The machine's output enum, ending in a `Timeout(Millis)` variant.
    type Output: Polled;

    /// The deadline of the last `Timeout` output passed (calling it early is harmless).
    fn handle_timeout(&mut self, now: Millis);

    /// The next output, in the machine's documented order; `Timeout` when there is nothing
    /// more until its deadline. Drain after every input and mutation.
    #[must_use]
    fn poll_output(&mut self, now: Millis) -> Self::Output;
}

/// Implements [`Polled`] for `$output` (whose `Timeout(Millis)` variant is the timeout) and
/// [`Machine`] for `$machine` by its inherent `handle_timeout(now)` and `poll_output(now)`.
macro_rules! machine {
    ($machine:ty, $output:ident) => {
        impl $crate::core::drive::Polled for $output {
            fn timeout(&self) -> Option<$crate::core::drive::Millis> {
                match self {
                    $output::Timeout(t) => Some(*t),
                    #[allow(unreachable_patterns)]
                    _ => None,
                }
            }
        }

        impl $crate::core::drive::Machine for $machine {
            type Output = $output;
            fn handle_timeout(&mut self, now: $crate::core::drive::Millis) {
                <$machine>::handle_timeout(self, now);
            }
            fn poll_output(&mut self, now: $crate::core::drive::Millis) -> $output {
                <$machine>::poll_output(self, now)
            }
        }
    };
}
pub(crate) use machine;

/// Drains `machine` at `now`, handing every output to `sink`, and returns the next deadline
/// ([`Millis::NEVER`] for none). The poll loop of every driver.
pub fn drain<M: Machine + ?Sized>(
    machine: &mut M,
    now: Millis,
    mut sink: impl FnMut(M::Output),
) -> Millis {
    loop {
        let out = machine.poll_output(now);
        if let Some(deadline) = out.timeout() {
            return deadline;
        }
        sink(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_orders_totally_and_never_is_last() {
        let mut v = [
            Millis::NEVER,
            Millis::from_u64(5),
            Millis::new(2.5),
            Millis::ZERO,
        ];
        v.sort();
        assert_eq!(
            v,
            [
                Millis::ZERO,
                Millis::new(2.5),
                Millis::from_u64(5),
                Millis::NEVER
            ]
        );
        assert!(Millis::NEVER.is_never());
        assert!(!Millis::from_u64(u64::MAX).is_never());
        assert_eq!(Millis::NEVER.as_u64(), u64::MAX);
        assert_eq!(Millis::new(-3.0).as_u64(), 0);
        assert_eq!(Millis::new(7.9).as_u64(), 7);
        assert_eq!(Millis::new(f64::NAN), Millis::ZERO);
        assert_eq!(Millis::NEVER.plus(5.0), Millis::NEVER);
        assert_eq!(Millis::from_u64(3).since(Millis::from_u64(5)), 0.0);
        assert_eq!(Millis::from_deadline(None), Millis::NEVER);
        assert_eq!(Millis::NEVER.deadline(), None);
    }

    /// A machine that emits `n` outputs, then a deadline 10 ms later.
    struct Countdown {
        left: u32,
        fired: u32,
    }

    enum Out {
        Tick(u32),
        Timeout(Millis),
    }

    impl Polled for Out {
        fn timeout(&self) -> Option<Millis> {
            match self {
                Out::Timeout(t) => Some(*t),
                Out::Tick(_) => None,
            }
        }
    }

    impl Machine for Countdown {
        type Output = Out;
        fn handle_timeout(&mut self, _now: Millis) {
            self.fired += 1;
            self.left += 1;
        }
        fn poll_output(&mut self, now: Millis) -> Out {
            if self.left == 0 {
                return Out::Timeout(now.plus(10.0));
            }
            self.left -= 1;
            Out::Tick(self.left)
        }
    }

    #[test]
    fn drain_stops_at_the_timeout() {
        let mut m = Countdown { left: 3, fired: 0 };
        let mut seen = Vec::new();
        let next = drain(&mut m, Millis::ZERO, |o| {
            if let Out::Tick(n) = o {
                seen.push(n);
            }
        });
        assert_eq!(seen, [2, 1, 0]);
        assert_eq!(next, Millis::from_u64(10));
        m.handle_timeout(next);
        let mut n = 0;
        let next = drain(&mut m, next, |_| n += 1);
        assert_eq!((m.fired, n), (1, 1));
        assert_eq!(next, Millis::from_u64(20));
    }
}
