//! Per-session message budgets, one per lane class (issue 11: "separate budgets for Control,
//! Sync and bulk lanes, so a Data flood cannot starve its own Control lane either"), and the
//! strike counter that closes a socket which keeps sending past its refusals.
//!
//! Each budget is a `governor` keyed GCRA limiter (a sharded `DashMap` of one `u64` each):
//! a check locks one shard for one atomic update, never the registry. Keys whose state is
//! indistinguishable from a fresh one are dropped by [`LaneLimiters::retain_recent`], so a
//! closed or deleted session needs no clean-up hook.

use super::rate::Rate;
use governor::clock::{Clock, MonotonicClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use p3_lanes::core::frame::SessionId;
use p3_lanes::core::lane::Lane;
use serde::Serialize;
use std::hash::Hash;
use std::time::Duration;

/// The window `--rate-strikes` counts refusals in.
pub const STRIKE_WINDOW: Duration = Duration::from_secs(10);

/// Which budget a lane's messages draw from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LaneClass {
    /// Lane 1 (Control): joins, leaves, pings. `--rate-control`, per session.
    Control,
    /// Lane 7 (Sync): music and state sync. `--rate-sync`, per session.
    Sync,
    /// Every other lane (Messaging, Voice, Video, Data, Telemetry, Relay): `--rate-bulk`, per
    /// session and per lane (a Data flood does not use Messaging's budget).
    Bulk,
}

impl LaneClass {
    /// The class of `lane`.
    pub fn of(lane: Lane) -> LaneClass {
        match lane {
            Lane::Control => LaneClass::Control,
            Lane::Sync => LaneClass::Sync,
            _ => LaneClass::Bulk,
        }
    }

    /// `"control"`, `"sync"` or `"bulk"`.
    pub fn as_str(self) -> &'static str {
        match self {
            LaneClass::Control => "control",
            LaneClass::Sync => "sync",
            LaneClass::Bulk => "bulk",
        }
    }
}

/// One lane class's quota as advertised to clients so they can pace themselves (the handshake's
/// `limits`, wired by the lead): `{class, perSecond, burst}`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LaneQuota {
    /// The lanes it applies to: Control (1), Sync (7), or each other lane on its own (bulk).
    pub class: LaneClass,
    /// Sustained messages per second.
    pub per_second: f64,
    /// Messages allowed at once after a quiet spell.
    pub burst: u32,
}

/// A keyed GCRA limiter over the clock `C`.
type Keyed<K, C> = RateLimiter<K, DashMapStateStore<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;

fn keyed<K: Hash + Eq + Clone, C: Clock + Clone>(quota: Quota, clock: &C) -> Keyed<K, C> {
    RateLimiter::new(quota, DashMapStateStore::default(), clock.clone())
}

/// A lane message the session's budget refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaneRefusal {
    /// The budget that ran out.
    pub class: LaneClass,
    /// Its rate.
    pub rate: Rate,
    /// How long until one more message of that lane is allowed.
    pub retry_after: Duration,
}

/// The per-session budgets of one server: Control, Sync, bulk (per lane) and strikes.
///
/// Drive: [`LaneLimiters::check`] once per received message before it is processed; on a
/// refusal, [`LaneLimiters::strike`] once (sockets only); [`LaneLimiters::retain_recent`]
/// periodically. `C` is the clock (`governor::clock::FakeRelativeClock` in unit tests).
pub struct LaneLimiters<C: Clock + Clone = MonotonicClock> {
    control: Keyed<SessionId, C>,
    sync: Keyed<SessionId, C>,
    bulk: Keyed<(SessionId, u8), C>,
    strikes: Keyed<SessionId, C>,
    rates: [Rate; 3],
    clock: C,
}

impl<C: Clock + Clone> LaneLimiters<C> {
    /// Budgets `control`, `sync`, `bulk`; a socket may be refused `strikes` times in any burst,
    /// refilled at `strikes` per [`STRIKE_WINDOW`], before [`LaneLimiters::strike`] says close.
    pub fn new(control: Rate, sync: Rate, bulk: Rate, strikes: u32, clock: C) -> Self {
        let strikes = std::num::NonZeroU32::new(strikes).unwrap_or(std::num::NonZeroU32::MIN);
        let strike_quota =
            Quota::with_period((STRIKE_WINDOW / strikes.get()).max(Duration::from_nanos(1)))
                .unwrap_or_else(|| Quota::per_second(strikes))
                .allow_burst(strikes);
        LaneLimiters {
            control: keyed(control.quota(), &clock),
            sync: keyed(sync.quota(), &clock),
            bulk: keyed(bulk.quota(), &clock),
            strikes: keyed(strike_quota, &clock),
            rates: [control, sync, bulk],
            clock,
        }
    }

    /// Takes one message of `lane` from session `sid`'s budget for that lane's class.
    ///
    /// Errors: [`LaneRefusal`] when the budget is used up; nothing was taken.
    pub fn check(&self, sid: SessionId, lane: Lane) -> Result<(), LaneRefusal> {
        let class = LaneClass::of(lane);
        let checked = match class {
            LaneClass::Control => self.control.check_key(&sid),
            LaneClass::Sync => self.sync.check_key(&sid),
            LaneClass::Bulk => self.bulk.check_key(&(sid, lane.id())),
        };
        checked.map_err(|not_until| LaneRefusal {
            class,
            rate: self.rate(class),
            retry_after: not_until.wait_time_from(self.clock.now()),
        })
    }

    /// Counts one refusal against `sid`; `true` when it is over `--rate-strikes` (within
    /// [`STRIKE_WINDOW`], as a GCRA burst): the socket should be closed with 4429.
    pub fn strike(&self, sid: SessionId) -> bool {
        self.strikes.check_key(&sid).is_err()
    }

    /// The rate of `class`.
    pub fn rate(&self, class: LaneClass) -> Rate {
        match class {
            LaneClass::Control => self.rates[0],
            LaneClass::Sync => self.rates[1],
            LaneClass::Bulk => self.rates[2],
        }
    }

    /// The three quotas, Control, Sync, bulk.
    pub fn quotas(&self) -> [LaneQuota; 3] {
        [LaneClass::Control, LaneClass::Sync, LaneClass::Bulk].map(|class| {
            let rate = self.rate(class);
            LaneQuota {
                class,
                per_second: rate.per_second_f64(),
                burst: rate.burst(),
            }
        })
    }

    /// Drops every key whose state equals a fresh one and shrinks the maps. What stays: keys
    /// whose budget is not full again since one interval (`1 / rate`), i.e. used within the
    /// last `(burst + 1) / rate` at most (strikes: [`STRIKE_WINDOW`] plus one interval).
    pub fn retain_recent(&self) {
        self.control.retain_recent();
        self.sync.retain_recent();
        self.bulk.retain_recent();
        self.strikes.retain_recent();
        self.control.shrink_to_fit();
        self.sync.shrink_to_fit();
        self.bulk.shrink_to_fit();
        self.strikes.shrink_to_fit();
    }

    /// Keys stored, all budgets together.
    pub fn len(&self) -> usize {
        self.control.len() + self.sync.len() + self.bulk.len() + self.strikes.len()
    }

    /// No key stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn sid(n: u8) -> SessionId {
        SessionId([n; 16])
    }

    fn limiters(clock: &FakeRelativeClock) -> LaneLimiters<FakeRelativeClock> {
        LaneLimiters::new(
            Rate::per_second(10, 3).unwrap(),
            Rate::per_second(20, 2).unwrap(),
            Rate::per_second(100, 5).unwrap(),
            4,
            clock.clone(),
        )
    }

    #[test]
    fn each_class_has_its_own_budget() {
        let clock = FakeRelativeClock::default();
        let l = limiters(&clock);
        let a = sid(1);
        // Data uses up its burst of 5; Data is then refused, with the time to the next cell.
        for _ in 0..5 {
            l.check(a, Lane::Data).unwrap();
        }
        let r = l.check(a, Lane::Data).unwrap_err();
        assert_eq!(r.class, LaneClass::Bulk);
        assert_eq!(r.retry_after, Duration::from_millis(10));
        // Its Control, Sync and other bulk lanes are untouched, and so is another session.
        for _ in 0..3 {
            l.check(a, Lane::Control).unwrap();
        }
        assert_eq!(
            l.check(a, Lane::Control).unwrap_err().class,
            LaneClass::Control
        );
        l.check(a, Lane::Sync).unwrap();
        l.check(a, Lane::Sync).unwrap();
        assert!(l.check(a, Lane::Sync).is_err());
        for _ in 0..5 {
            l.check(a, Lane::Messaging).unwrap();
        }
        l.check(sid(2), Lane::Data).unwrap();
        // The budget refills at the rate.
        clock.advance(Duration::from_millis(10));
        l.check(a, Lane::Data).unwrap();
        assert!(l.check(a, Lane::Data).is_err());
        clock.advance(Duration::from_millis(100));
        l.check(a, Lane::Control).unwrap();
    }

    #[test]
    fn strikes_close_past_the_threshold_and_forgive_over_the_window() {
        let clock = FakeRelativeClock::default();
        let l = limiters(&clock);
        let a = sid(1);
        for _ in 0..4 {
            assert!(!l.strike(a));
        }
        assert!(l.strike(a), "the 5th refusal in a burst closes");
        assert!(!l.strike(sid(2)), "strikes are per session");
        clock.advance(STRIKE_WINDOW);
        for _ in 0..4 {
            assert!(!l.strike(a));
        }
    }

    #[test]
    fn idle_keys_are_dropped() {
        let clock = FakeRelativeClock::default();
        let l = limiters(&clock);
        for n in 0..50 {
            l.check(sid(n), Lane::Control).unwrap();
            l.check(sid(n), Lane::Data).unwrap();
            l.check(sid(n), Lane::Video).unwrap();
        }
        l.strike(sid(1));
        assert_eq!(l.len(), 151);
        // Refilled keys go (governor keeps a key until one interval after its budget is full
        // again: Control's 100 ms here); the strike (2.5 s interval) stays a while longer.
        clock.advance(Duration::from_millis(201));
        l.retain_recent();
        assert_eq!(l.len(), 1);
        clock.advance(STRIKE_WINDOW);
        l.retain_recent();
        assert!(l.is_empty());
    }

    #[test]
    fn quotas_are_advertised_per_class() {
        let clock = FakeRelativeClock::default();
        let q = limiters(&clock).quotas();
        assert_eq!(q[0].class, LaneClass::Control);
        assert_eq!((q[0].per_second, q[0].burst), (10.0, 3));
        assert_eq!((q[2].class, q[2].burst), (LaneClass::Bulk, 5));
        assert_eq!(
            serde_json::to_value(q[1]).unwrap(),
            serde_json::json!({"class": "sync", "perSecond": 20.0, "burst": 2})
        );
    }
}
