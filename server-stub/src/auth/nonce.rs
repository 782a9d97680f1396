//! The SIWE nonce store (EIP-4361 `nonce`; PROTOCOL.md §3.1): nonces the server issued by
//! `GET /api/protocol/v2/auth/nonce`, each usable by one sign-in within its TTL.
//!
//! Bounded: at most `cap` nonces are remembered (issued or used, until their TTL ends); past
//! that, issuing answers `too_many_requests` rather than forgetting live nonces (forgetting
//! would let a flood of requests void the nonces honest clients are signing). A used nonce is
//! remembered until its TTL ends so a replay is told apart (`nonce_reused`) from a nonce the
//! server never issued or has forgotten (`nonce_unknown`).

use crate::limits::bounds::too_many;
use p3_lanes::core::auth::AuthReason;
use p3_lanes::core::error::WireError;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Default nonce TTL (`--siwe-nonce-ttl-s`), s.
pub const DEFAULT_NONCE_TTL_S: u64 = 300;
/// Default bound on remembered nonces.
pub const DEFAULT_MAX_NONCES: usize = 10_000;
/// Nonce length: 128 bits from the OS CSPRNG as 32 lowercase hex digits (alphanumeric, as
/// EIP-4361 requires, and ≥ 8 characters).
pub const NONCE_CHARS: usize = 32;

/// Nonces by value, and their expiry in issue order (the TTL is constant, so the front of
/// `order` always expires first).
#[derive(Debug, Default)]
struct Inner {
    used: HashMap<String, bool>,
    order: VecDeque<(Instant, String)>,
}

/// Issued nonces. Its own lock, held for map updates only.
#[derive(Debug)]
pub struct NonceStore {
    inner: Mutex<Inner>,
    ttl: Duration,
    cap: usize,
}

impl NonceStore {
    /// A store whose nonces live `ttl`, remembering at most `cap` of them.
    pub fn new(ttl: Duration, cap: usize) -> NonceStore {
        NonceStore {
            inner: Mutex::new(Inner::default()),
            ttl,
            cap,
        }
    }

    /// The TTL of every nonce.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A fresh nonce, valid for one sign-in until `now + ttl`.
    ///
    /// Errors: `too_many_requests` when `cap` live nonces are remembered; `internal` when the
    /// OS random generator fails.
    pub fn issue(&self, now: Instant) -> Result<String, WireError> {
        let mut bytes = [0u8; NONCE_CHARS / 2];
        getrandom::fill(&mut bytes).map_err(|e| {
            tracing::error!(error = %e, "no randomness for a SIWE nonce");
            WireError::new(
                p3_lanes::core::error::ErrorCode::Internal,
                "internal server error",
            )
        })?;
        let nonce: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut g = crate::lock::lock_or_abort(&self.inner, "siwe nonces");
        Self::expire(&mut g, now);
        if g.order.len() >= self.cap {
            return Err(too_many(format!(
                "the server holds its maximum of {} sign-in nonces; retry later",
                self.cap
            )));
        }
        g.used.insert(nonce.clone(), false);
        g.order.push_back((now + self.ttl, nonce.clone()));
        Ok(nonce)
    }

    /// Uses `nonce` for a sign-in at `now`: succeeds once per issued nonce within its TTL.
    ///
    /// Errors: [`AuthReason::NonceReused`] for a nonce already used, [`AuthReason::NonceUnknown`]
    /// for one never issued or expired.
    pub fn consume(&self, nonce: &str, now: Instant) -> Result<(), AuthReason> {
        let mut g = crate::lock::lock_or_abort(&self.inner, "siwe nonces");
        Self::expire(&mut g, now);
        match g.used.get_mut(nonce) {
            None => Err(AuthReason::NonceUnknown),
            Some(true) => Err(AuthReason::NonceReused),
            Some(used) => {
                *used = true;
                Ok(())
            }
        }
    }

    /// Remembers `nonce`, issued by another node of the cluster (PROTOCOL.md §17), as issued
    /// here at `now` and `used` or not, so that [`NonceStore::consume`] answers for it as the
    /// cluster would. Nothing happens for a nonce already remembered or when `cap` nonces are.
    pub fn adopt(&self, nonce: &str, used: bool, now: Instant) {
        let mut g = crate::lock::lock_or_abort(&self.inner, "siwe nonces");
        Self::expire(&mut g, now);
        if g.used.contains_key(nonce) || g.order.len() >= self.cap {
            return;
        }
        g.used.insert(nonce.to_owned(), used);
        g.order.push_back((now + self.ttl, nonce.to_owned()));
    }

    /// Nonces remembered now (issued or used, not expired).
    pub fn len(&self, now: Instant) -> usize {
        let mut g = crate::lock::lock_or_abort(&self.inner, "siwe nonces");
        Self::expire(&mut g, now);
        g.order.len()
    }

    /// Whether no nonce is remembered.
    pub fn is_empty(&self, now: Instant) -> bool {
        self.len(now) == 0
    }

    /// Forgets nonces whose TTL ended by `now`.
    fn expire(g: &mut Inner, now: Instant) {
        while g.order.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, n)) = g.order.pop_front() {
                g.used.remove(&n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_use_ttl_and_bound() {
        let t0 = Instant::now();
        let store = NonceStore::new(Duration::from_secs(10), 2);
        let a = store.issue(t0).unwrap();
        assert_eq!(a.len(), NONCE_CHARS);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        let b = store.issue(t0).unwrap();
        assert_ne!(a, b);
        assert_eq!(
            store.consume("never-issued", t0),
            Err(AuthReason::NonceUnknown)
        );
        assert_eq!(store.consume(&a, t0), Ok(()));
        assert_eq!(store.consume(&a, t0), Err(AuthReason::NonceReused));
        // Full: a used nonce still counts until its TTL ends, so it stays `nonce_reused`.
        assert!(store.issue(t0).is_err());
        let later = t0 + Duration::from_secs(10);
        assert_eq!(store.consume(&b, later), Err(AuthReason::NonceUnknown));
        assert!(store.is_empty(later));
        assert!(store.issue(later).is_ok());
    }
}
