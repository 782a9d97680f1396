//! Per-client-IP budgets for HTTP routes (issue 11: "Per client IP: handshakes, lane POSTs,
//! WebSocket and SSE upgrades"): an axum middleware over `governor` keyed GCRA limiters.
//!
//! Why not `tower_governor` (0.8, which does fit axum 0.8 / tower 0.5): its refusal carries the
//! wait in whole seconds rounded *down* (`Retry-After: 0` for any wait under a second, an
//! invitation to retry at once), so neither our `retryAfterMs` nor a rounded-up `Retry-After`
//! can be built from it, and its key extractor answers 500 when `ConnectInfo` is missing.
//! The middleware here is the same check (`check_key` on a keyed `governor` limiter) with our
//! answer ([`super::Refusal`]).
//!
//! The key is the peer address of the TCP connection (`ConnectInfo<SocketAddr>`, set by
//! [`crate::serve`]); IPv6 addresses count per /64 (one host usually owns a whole /64), and an
//! IPv4-mapped IPv6 address as its IPv4 address. Without `ConnectInfo` (an app served without
//! it) every request shares one key. Forwarded headers are not trusted.

use super::rate::Rate;
use super::{Refusal, Scope};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, MonotonicClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::RateLimiter;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// `RateLimit-Limit`: the burst of the budget that answered (draft-ietf-httpapi-ratelimit-headers).
pub const HEADER_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
/// `RateLimit-Remaining`: requests left in the burst right now.
pub const HEADER_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
/// `RateLimit-Reset`: seconds (rounded up) until the next request is allowed (on a 429).
pub const HEADER_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// Which per-IP budget a route draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpClass {
    /// `POST /api/protocol/v2/session/handshake`: `--rate-ip-handshake`.
    Handshake,
    /// `POST .../session/{sid}/lane/{id}`: `--rate-ip-post`.
    Post,
    /// WebSocket and SSE upgrades (`.../ws`, `.../stream`, `.../lane/{id}/stream`,
    /// `/api/signaling`): `--rate-ip-upgrade`.
    Upgrade,
}

impl IpClass {
    /// `"handshake"`, `"post"` or `"upgrade"`.
    pub fn as_str(self) -> &'static str {
        match self {
            IpClass::Handshake => "handshake",
            IpClass::Post => "post",
            IpClass::Upgrade => "upgrade",
        }
    }
}

/// The rate-limiting key of a client address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpKey {
    /// An IPv4 address (also IPv4-mapped IPv6).
    V4(u32),
    /// The /64 prefix of an IPv6 address.
    V6(u64),
    /// No peer address known: every such request shares this key.
    Unknown,
}

impl IpKey {
    /// The key of `ip` (`None`: [`IpKey::Unknown`]).
    pub fn of(ip: Option<IpAddr>) -> IpKey {
        match ip.map(|ip| ip.to_canonical()) {
            None => IpKey::Unknown,
            Some(IpAddr::V4(v4)) => IpKey::V4(u32::from(v4)),
            Some(IpAddr::V6(v6)) => IpKey::V6((u128::from(v6) >> 64) as u64),
        }
    }
}

type IpLimiter =
    RateLimiter<IpKey, DashMapStateStore<IpKey>, MonotonicClock, StateInformationMiddleware>;

/// One per-IP budget: its class, rate and keyed limiter. Cheap to clone (shared).
#[derive(Clone)]
pub struct IpBudget {
    class: IpClass,
    rate: Rate,
    limiter: Arc<IpLimiter>,
}

impl IpBudget {
    /// A budget of `rate` per client IP for `class`.
    pub fn new(class: IpClass, rate: Rate) -> IpBudget {
        IpBudget {
            class,
            rate,
            limiter: Arc::new(IpLimiter::new(
                rate.quota(),
                DashMapStateStore::default(),
                MonotonicClock,
            )),
        }
    }

    /// Takes one request of `key`; `Ok(remaining)` (requests left in the burst).
    ///
    /// Errors: [`Refusal`] (scope [`Scope::Ip`]) when the budget is used up.
    pub fn check(&self, key: IpKey) -> Result<u32, Refusal> {
        match self.limiter.check_key(&key) {
            Ok(snapshot) => Ok(snapshot.remaining_burst_capacity()),
            Err(not_until) => Err(Refusal {
                scope: Scope::Ip(self.class),
                rate: self.rate,
                retry_after: not_until.wait_time_from(self.limiter.clock().now()),
            }),
        }
    }

    /// See [`super::lanes::LaneLimiters::retain_recent`].
    pub fn retain_recent(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Keys stored.
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    /// No key stored.
    pub fn is_empty(&self) -> bool {
        self.limiter.is_empty()
    }
}

/// The middleware (`axum::middleware::from_fn_with_state`): checks the request's IP against
/// `budget`; a refusal is answered with [`Refusal`]'s 429 and the handler never runs. An
/// allowed request's answer gets this budget's `RateLimit-Limit` and `RateLimit-Remaining`
/// unless the handler set its own (a per-session refusal).
pub async fn limit_ip(State(budget): State<IpBudget>, req: Request, next: Next) -> Response {
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    match budget.check(IpKey::of(ip)) {
        Err(refusal) => {
            tracing::debug!(
                ?ip,
                class = budget.class.as_str(),
                retry_after_ms = refusal.retry_after_ms(),
                "request rate-limited"
            );
            refusal.into_response()
        }
        Ok(remaining) => {
            let mut response = next.run(req).await;
            // A handler's own refusal (a session's lane budget, 429) keeps its headers.
            if !response.headers().contains_key(HEADER_LIMIT) {
                let headers = response.headers_mut();
                headers.insert(HEADER_LIMIT, HeaderValue::from(budget.rate.burst()));
                headers.insert(HEADER_REMAINING, HeaderValue::from(remaining));
            }
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn keys_group_ipv6_by_64_and_unmap_ipv4() {
        let v4 = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(IpKey::of(Some(v4)), IpKey::V4(0x0a01_0203));
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped());
        assert_eq!(IpKey::of(Some(mapped)), IpKey::of(Some(v4)));
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(IpKey::of(Some(a)), IpKey::of(Some(b)));
        assert_ne!(IpKey::of(Some(a)), IpKey::of(Some(c)));
        assert_eq!(IpKey::of(None), IpKey::Unknown);
        assert_ne!(
            IpKey::of(Some(IpAddr::V6(Ipv6Addr::LOCALHOST))),
            IpKey::Unknown
        );
    }

    #[test]
    fn budget_counts_per_key() {
        let b = IpBudget::new(IpClass::Handshake, Rate::per_minute(1, 2).unwrap());
        let k = IpKey::V4(1);
        assert_eq!(b.check(k), Ok(1));
        assert_eq!(b.check(k), Ok(0));
        let r = b.check(k).unwrap_err();
        assert_eq!(r.scope, Scope::Ip(IpClass::Handshake));
        assert!(r.retry_after > std::time::Duration::from_secs(50));
        assert_eq!(b.check(IpKey::Unknown), Ok(1));
        assert_eq!(b.len(), 2);
    }
}
