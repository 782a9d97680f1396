//! What one client may make the server hold or do (issue 11, PROTOCOL.md §15): size and count
//! bounds ([`bounds`]: handshake body and fields, sessions, rooms, queues, SSE streams,
//! signaling queues) and rate limits (the rest of this module).
//!
//! Rate limiting (issue 11 "Rate limiting"; seed 001 asks for it on its pulse stream, seed 002
//! describes a limiter answering `{allowed, remaining, resetAt}`; PROTOCOL.md §15).
//!
//! Every budget is a GCRA (generic cell rate algorithm) limiter of the `governor` crate: a rate
//! `N/s` or `N/min` and a burst `B` ([`rate::Rate`], the flags' format). Two families:
//!
//! | budget | key | flag (default) | refusal |
//! | --- | --- | --- | --- |
//! | handshakes | client IP | `--rate-ip-handshake` (`20/s,burst=100`) | HTTP 429 |
//! | lane POSTs (SSE) | client IP | `--rate-ip-post` (`500/s,burst=1000`) | HTTP 429 |
//! | WebSocket and SSE upgrades, `/api/signaling` | client IP | `--rate-ip-upgrade` (`20/s,burst=100`) | HTTP 429 |
//! | Control lane (1) messages | session | `--rate-control` (`50/s,burst=200`) | Control `error` / HTTP 429 |
//! | Sync lane (7) messages | session | `--rate-sync` (`100/s,burst=400`) | Control `error` / HTTP 429 |
//! | each other lane's messages | session and lane | `--rate-bulk` (`5000/s,burst=10000`) | Control `error` / HTTP 429 |
//!
//! Answers ([`Refusal`], one place):
//! - HTTP: 429 with JSON `{error, code: "rate_limited", retryAfterMs}` and headers
//!   `Retry-After` (whole seconds, rounded up), `RateLimit-Limit` (the burst),
//!   `RateLimit-Remaining` (0) and `RateLimit-Reset` (seconds until the next request is
//!   allowed, rounded up). Allowed requests on a per-IP route carry `RateLimit-Limit` and
//!   `RateLimit-Remaining` too.
//! - Socket (v1 or multiplexed): a Control `error` `{code: "rate_limited", error,
//!   retryAfterMs, lane, seq}` naming the refused frame, which is not processed. Past
//!   `--rate-strikes` (100) refusals in a burst, refilled at that many per 10 s, the next
//!   refused frame closes the socket with [`CLOSE_RATE_LIMITED`] (4429, "rate limited")
//!   instead of an `error`; the session stays resumable (strikes are per session, so a
//!   reconnect that keeps flooding is closed again at its first refusal).
//!
//! Memory: keyed state is one `u64` per key in sharded maps; a sweeper
//! ([`spawn_sweeper`], every [`SWEEP_PERIOD`]) drops every key whose budget is full again
//! (`governor`'s `retain_recent`), so what is stored is bounded by the keys (IPs, IPv6 /64s,
//! sessions, session × lane) used within the last `SWEEP_PERIOD` plus their refill time
//! (`(burst + 1) / rate`: 5 s per IP for handshakes and upgrades, 4 s for Control, 10 s for
//! strikes). No hook is needed when a session ends.
//!
//! `--rate-limits off` turns every check into a no-op and adds no middleware (load benches).

pub mod bounds;
pub mod ip;
pub mod lanes;
pub mod rate;

use crate::state::AppState;
use crate::Config;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use axum::Json;
use ip::{IpBudget, IpClass};
use lanes::{LaneClass, LaneLimiters, LaneQuota};
use p3_lanes::core::control::Control;
use p3_lanes::core::error::ErrorCode;
use p3_lanes::core::frame::SessionId;
use p3_lanes::core::lane::Lane;
use rate::Rate;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Close code of a socket still sending past its strikes (4429, [`crate::close::RATE_LIMITED`]).
pub use crate::close::RATE_LIMITED as CLOSE_RATE_LIMITED;

/// How often [`spawn_sweeper`] drops the keys whose budget is full again.
pub const SWEEP_PERIOD: Duration = Duration::from_secs(5);

/// What a refused request or message was counted against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// A per-client-IP budget of an HTTP route.
    Ip(IpClass),
    /// A session's budget for this lane's class.
    Lane(LaneClass, Lane),
}

/// A refusal by a rate limit: the budget, its rate and how long until the next request or
/// message of that budget is allowed. Its `IntoResponse` is the HTTP answer (429, headers,
/// JSON); [`Refusal::control`] the socket answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// What ran out.
    pub scope: Scope,
    /// Its rate.
    pub rate: Rate,
    /// Wait before one more is allowed.
    pub retry_after: Duration,
}

impl Refusal {
    /// [`Refusal::retry_after`] in ms, rounded up, at least 1.
    pub fn retry_after_ms(&self) -> u64 {
        let ms = self.retry_after.as_nanos().div_ceil(1_000_000).max(1);
        u64::try_from(ms).unwrap_or(u64::MAX)
    }

    /// [`Refusal::retry_after`] in whole seconds, rounded up, at least 1 (`Retry-After`).
    pub fn retry_after_s(&self) -> u64 {
        self.retry_after_ms().div_ceil(1000)
    }

    /// The human text of the answer.
    pub fn message(&self) -> String {
        let ms = self.retry_after_ms();
        match self.scope {
            Scope::Ip(class) => format!(
                "too many {} requests from this address (limit {}); retry in {ms} ms",
                class.as_str(),
                self.rate
            ),
            Scope::Lane(class, lane) => format!(
                "lane {} ({lane:?}) over this session's {} budget ({}); message not processed, retry in {ms} ms",
                lane.id(),
                class.as_str(),
                self.rate
            ),
        }
    }

    /// The Control `error` for a refused frame of `lane` with `seq`.
    pub fn control(&self, lane: Option<u8>, seq: Option<u64>) -> Control {
        Control::Error {
            code: ErrorCode::RateLimited,
            error: self.message(),
            lane,
            seq,
            retry_after_ms: Some(self.retry_after_ms()),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": self.message(),
            "code": ErrorCode::RateLimited,
            "retryAfterMs": self.retry_after_ms(),
        });
        let mut r = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
        let secs = HeaderValue::from(self.retry_after_s());
        let h = r.headers_mut();
        h.insert(header::RETRY_AFTER, secs.clone());
        h.insert(ip::HEADER_LIMIT, HeaderValue::from(self.rate.burst()));
        h.insert(ip::HEADER_REMAINING, HeaderValue::from(0u32));
        h.insert(ip::HEADER_RESET, secs);
        r
    }
}

/// `--rate-limits`: on (default) or off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RateLimitsMode {
    /// Every budget applies.
    On,
    /// No rate limiting at all (benchmark load generators).
    Off,
}

/// Every rate limit of one server: the per-IP budgets of the HTTP routes and the per-session
/// lane budgets. Owned by [`AppState`] (`state.limits()`).
pub struct Limits {
    inner: Option<Enabled>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("enabled", &self.enabled())
            .field("keys", &self.keys())
            .finish()
    }
}

struct Enabled {
    handshake: IpBudget,
    post: IpBudget,
    upgrade: IpBudget,
    lanes: LaneLimiters,
}

impl Limits {
    /// The budgets `config` names (none with `--rate-limits off`).
    pub fn new(config: &Config) -> Limits {
        let inner = (config.rate_limits == RateLimitsMode::On).then(|| Enabled {
            handshake: IpBudget::new(IpClass::Handshake, config.rate_ip_handshake),
            post: IpBudget::new(IpClass::Post, config.rate_ip_post),
            upgrade: IpBudget::new(IpClass::Upgrade, config.rate_ip_upgrade),
            lanes: LaneLimiters::new(
                config.rate_control,
                config.rate_sync,
                config.rate_bulk,
                config.rate_strikes,
                governor::clock::MonotonicClock,
            ),
        });
        Limits { inner }
    }

    /// Whether rate limiting is on.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Takes one message of `lane` from session `sid`'s budget (WebSocket frames, v1 or
    /// multiplexed, and SSE lane POSTs; call before processing it). A map lookup and an atomic
    /// update, no registry lock.
    ///
    /// Errors: [`Refusal`] (scope [`Scope::Lane`]): the message must not be processed.
    pub fn check_lane(&self, sid: SessionId, lane: Lane) -> Result<(), Refusal> {
        let Some(e) = &self.inner else { return Ok(()) };
        e.lanes.check(sid, lane).map_err(|r| Refusal {
            scope: Scope::Lane(r.class, lane),
            rate: r.rate,
            retry_after: r.retry_after,
        })
    }

    /// Counts a refused socket frame of `sid`; `true`: past `--rate-strikes`, close the socket
    /// with [`CLOSE_RATE_LIMITED`].
    pub fn strike(&self, sid: SessionId) -> bool {
        self.inner.as_ref().is_some_and(|e| e.lanes.strike(sid))
    }

    /// The per-session lane quotas `[control, sync, bulk]` as `(class, perSecond, burst)`, for
    /// the handshake answer so SDKs can pace themselves; `None` when rate limiting is off.
    pub fn lane_quotas(&self) -> Option<[LaneQuota; 3]> {
        self.inner.as_ref().map(|e| e.lanes.quotas())
    }

    /// The handshake's `limits` (PROTOCOL.md §3, §15): the lane quotas an SDK paces itself
    /// by; `None` when rate limiting is off.
    pub fn advertised(&self) -> Option<p3_lanes::core::handshake::Limits> {
        use p3_lanes::core::handshake::{LaneRates, Limits as Advertised, Rate as Quota};
        let [control, sync, bulk] = self.lane_quotas()?;
        let q = |l: LaneQuota| {
            Some(Quota {
                per_second: l.per_second,
                burst: l.burst,
            })
        };
        Some(Advertised {
            rates: Some(LaneRates {
                control: q(control),
                sync: q(sync),
                bulk: q(bulk),
            }),
        })
    }

    /// `route` with the per-IP budget of `class` in front of it (unchanged when off).
    pub fn guard<S>(&self, class: IpClass, route: MethodRouter<S>) -> MethodRouter<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let Some(e) = &self.inner else { return route };
        let budget = match class {
            IpClass::Handshake => &e.handshake,
            IpClass::Post => &e.post,
            IpClass::Upgrade => &e.upgrade,
        };
        route.route_layer(axum::middleware::from_fn_with_state(
            budget.clone(),
            ip::limit_ip,
        ))
    }

    /// Drops keys whose budget is full again (see the module docs); run by [`spawn_sweeper`].
    pub fn retain_recent(&self) {
        if let Some(e) = &self.inner {
            e.handshake.retain_recent();
            e.post.retain_recent();
            e.upgrade.retain_recent();
            e.lanes.retain_recent();
        }
    }

    /// Keys stored in every budget together (the memory bound's measure).
    pub fn keys(&self) -> usize {
        self.inner.as_ref().map_or(0, |e| {
            e.handshake.len() + e.post.len() + e.upgrade.len() + e.lanes.len()
        })
    }
}

/// Refuses a socket frame of `lane` with `seq` that [`Limits::check_lane`] refused: queues the
/// Control `error` (`rate_limited`, `retryAfterMs`, `lane`, `seq`) on socket `conn_id`; the
/// refusal past `--rate-strikes` closes it with [`CLOSE_RATE_LIMITED`] instead (a close
/// overtakes queued frames, so no error is queued for that one).
pub(crate) fn refuse_frame(
    state: &AppState,
    sid: SessionId,
    conn_id: u64,
    lane: Lane,
    seq: u64,
    refusal: Refusal,
) {
    let strike_out = state.limits().strike(sid);
    let mut reg = state.registry();
    if !strike_out {
        tracing::debug!(session = %sid, lane = lane.id(), seq, retry_after_ms = refusal.retry_after_ms(), "frame rate-limited");
        reg.reply(sid, conn_id, &refusal.control(Some(lane.id()), Some(seq)));
    } else if reg.close_socket(sid, conn_id, CLOSE_RATE_LIMITED, "rate limited") {
        tracing::info!(session = %sid, conn_id, "still sending past its rate-limit refusals; closing with 4429");
    }
}

/// Runs [`Limits::retain_recent`] every [`SWEEP_PERIOD`] until aborted ([`crate::serve`]
/// aborts it on shutdown).
pub fn spawn_sweeper(state: Arc<AppState>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            state.limits().retain_recent();
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_rounds_waits_up() {
        let r = Refusal {
            scope: Scope::Lane(LaneClass::Bulk, Lane::Data),
            rate: Rate::per_second(5000, 10000).unwrap(),
            retry_after: Duration::from_micros(200),
        };
        assert_eq!(r.retry_after_ms(), 1);
        assert_eq!(r.retry_after_s(), 1);
        let r = Refusal {
            retry_after: Duration::from_millis(2001),
            ..r
        };
        assert_eq!((r.retry_after_ms(), r.retry_after_s()), (2001, 3));
        let r = Refusal {
            retry_after: Duration::ZERO,
            ..r
        };
        assert_eq!((r.retry_after_ms(), r.retry_after_s()), (1, 1));
        match r.control(Some(5), Some(9)) {
            Control::Error {
                code: ErrorCode::RateLimited,
                lane: Some(5),
                seq: Some(9),
                retry_after_ms: Some(1),
                ..
            } => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn off_allows_everything() {
        let config = Config {
            rate_limits: RateLimitsMode::Off,
            rate_control: Rate::per_minute(1, 1).unwrap(),
            ..Config::default()
        };
        let l = Limits::new(&config);
        let sid = SessionId([1; 16]);
        for _ in 0..10 {
            l.check_lane(sid, Lane::Control).unwrap();
            assert!(!l.strike(sid));
        }
        assert_eq!(l.lane_quotas(), None);
        assert_eq!(l.keys(), 0);
        let on = Limits::new(&Config::default());
        let q = on.lane_quotas().unwrap();
        assert_eq!((q[0].per_second, q[0].burst), (50.0, 200));
    }
}
