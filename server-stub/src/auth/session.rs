//! Session credentials (issue 12 "Session credentials"; PROTOCOL.md §2.1 and "Security:
//! session credentials"): the secret token every session gets at its handshake, the
//! single-use tickets that carry it onto WebSocket and SSE URLs (browsers cannot set headers
//! there), the `Authorization: Bearer` check of session-scoped HTTP routes, and the admin
//! token.
//!
//! - The session id is the public member id (it is in `members`, `peer-joined`, `from`): it
//!   grants nothing alone. The secret is the [`SessionToken`]: 32 bytes from the OS CSPRNG,
//!   sent once, base64url without padding, compared in constant time (`subtle`), never
//!   logged (its `Debug` is redacted) and never sent to anyone else.
//! - A ticket ([`Tickets`]) is 16 CSPRNG bytes, base64url, minted with the token by `POST
//!   /api/protocol/v2/session/{sid}/ticket` (and one with the handshake). It opens one stream
//!   of its session within `--ticket-ttl-ms` ([`TICKET_TTL`] by default); using it forgets it. A session keeps at most
//!   [`MAX_TICKETS`] (minting more forgets the oldest), so a client cannot make the server
//!   hold more.
//! - Every refusal, whatever its cause (no credentials, wrong token, another session's
//!   token, unknown session, used or expired ticket), is the same 401 `unauthorized` with
//!   `WWW-Authenticate: Bearer` ([`unauthorized`]), so a stranger learns nothing; a WebSocket
//!   is refused after the upgrade with close code 4401 ([`crate::close::UNAUTHORIZED`]).

use crate::error::AppError;
use crate::state::AppState;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use base64::Engine as _;
use p3_lanes::core::error::ErrorCode;
use p3_lanes::core::frame::SessionId;
use p3_lanes::core::handshake::Secret;
use std::collections::{HashMap, VecDeque};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

pub use p3_lanes::core::handshake::{MAX_TICKETS, TICKET_TTL_MS};

/// How long a ticket stays valid after it is minted, by default (`--ticket-ttl-ms`).
pub const TICKET_TTL: Duration = Duration::from_millis(TICKET_TTL_MS);
/// Bytes of a session token (256 bits).
pub const TOKEN_BYTES: usize = 32;
/// Bytes of a ticket (128 bits).
pub const TICKET_BYTES: usize = 16;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// `n` bytes from the OS CSPRNG.
fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the OS random number generator is available");
    bytes
}

/// Whether `presented` (base64url text from a client) decodes to exactly `secret`, compared
/// in constant time. Malformed text is simply not equal.
fn matches<const N: usize>(secret: &[u8; N], presented: &str) -> bool {
    let mut decoded = [0u8; N];
    // Base64url of N bytes never exceeds this; longer text cannot match (and is not decoded).
    if presented.len() > N.div_ceil(3) * 4 {
        return false;
    }
    match B64.decode_slice(presented, &mut decoded) {
        Ok(n) if n == N => bool::from(decoded.ct_eq(secret)),
        _ => false,
    }
}

/// A session's secret: [`TOKEN_BYTES`] random bytes. `Debug` never shows them.
#[derive(Clone)]
pub struct SessionToken([u8; TOKEN_BYTES]);

impl SessionToken {
    /// A fresh token from the OS CSPRNG.
    pub fn generate() -> SessionToken {
        SessionToken(random())
    }

    /// Its wire form (handshake `sessionToken`): base64url without padding, 43 characters.
    pub fn to_wire(&self) -> Secret {
        Secret::new(B64.encode(self.0))
    }

    /// The token whose wire form is `wire` (a session record read back from the cluster's
    /// store, [`crate::cluster`]); `None` if it is not [`TOKEN_BYTES`] bytes of base64url.
    pub fn from_wire(wire: &str) -> Option<SessionToken> {
        let mut bytes = [0u8; TOKEN_BYTES];
        match B64.decode_slice(wire, &mut bytes) {
            Ok(n) if n == TOKEN_BYTES => Some(SessionToken(bytes)),
            _ => None,
        }
    }

    /// Whether `presented` is this token, in constant time.
    pub fn verify(&self, presented: &str) -> bool {
        matches(&self.0, presented)
    }
}

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionToken(<redacted>)")
    }
}

/// A session's outstanding tickets, oldest first: at most [`MAX_TICKETS`], each valid
/// [`TICKET_TTL`] after it was minted and for one use. `Debug` shows only how many.
#[derive(Default)]
pub struct Tickets {
    live: VecDeque<([u8; TICKET_BYTES], Instant)>,
}

impl Tickets {
    /// Mints a ticket at `now`, valid `ttl`; the oldest is forgotten past [`MAX_TICKETS`].
    pub fn mint(&mut self, now: Instant, ttl: Duration) -> Secret {
        self.live.retain(|t| now < t.1);
        while self.live.len() >= MAX_TICKETS {
            self.live.pop_front();
        }
        let bytes = random::<TICKET_BYTES>();
        self.live.push_back((bytes, now + ttl));
        Secret::new(B64.encode(bytes))
    }

    /// Uses `presented`: true (and forgotten) if it is a live ticket at `now`. Every live
    /// ticket is compared (in constant time each), so the answer takes the same time
    /// whichever matched.
    pub fn redeem(&mut self, presented: &str, now: Instant) -> bool {
        self.live.retain(|t| now < t.1);
        let mut found = None;
        for (i, (bytes, _)) in self.live.iter().enumerate() {
            if matches(bytes, presented) {
                found = Some(i);
            }
        }
        found.and_then(|i| self.live.remove(i)).is_some()
    }
}

impl std::fmt::Debug for Tickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tickets({} live)", self.live.len())
    }
}

/// The one refusal of every session credential check: 401
/// `{"error": "unauthorized", "code": "unauthorized"}` (with `WWW-Authenticate: Bearer`, added
/// by [`AppError`]'s response), the same for every cause.
pub fn unauthorized() -> AppError {
    AppError::new(
        StatusCode::UNAUTHORIZED,
        ErrorCode::Unauthorized,
        "unauthorized",
    )
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive), if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The `{sid}` of a session-scoped route whose request proved it holds the session's token
/// (`Authorization: Bearer <sessionToken>`). A malformed id is 400 `bad_request` (it names no
/// session, so saying so reveals nothing); any other failure is [`unauthorized`].
#[derive(Debug, Clone, Copy)]
pub struct Authorized(pub SessionId);

impl FromRequestParts<Arc<AppState>> for Authorized {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, AppError> {
        let Path(params) =
            Path::<HashMap<String, String>>::from_request_parts(parts, state).await?;
        let sid = params
            .get("sid")
            .ok_or_else(|| AppError::internal("route without {sid}"))?
            .parse::<SessionId>()
            .map_err(|e| AppError::bad_request(e.to_string()))?;
        let token = bearer(&parts.headers).ok_or_else(unauthorized)?;
        // A session whose handshake another node of the cluster answered.
        state.cluster_import(sid).await;
        if state.registry().authorize(sid, token, Instant::now()) {
            Ok(Authorized(sid))
        } else {
            Err(unauthorized())
        }
    }
}

/// The admin token (`--admin-token` / `P3_ADMIN_TOKEN`; generated and printed at start-up when
/// unset): `/api/admin/*` needs `Authorization: Bearer <it>` besides a loopback client.
/// `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    /// A fresh token: 32 CSPRNG bytes, base64url.
    pub fn generate() -> AdminToken {
        AdminToken(B64.encode(random::<32>()))
    }

    /// The token text (to print once at start-up, or for a test harness).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the request's `Authorization: Bearer` is this token, in constant time.
    pub fn verify(&self, headers: &HeaderMap) -> bool {
        bearer(headers).is_some_and(|t| bool::from(t.as_bytes().ct_eq(self.0.as_bytes())))
    }
}

impl FromStr for AdminToken {
    type Err = String;

    /// At least 16 characters (a guessable admin token is no protection).
    fn from_str(s: &str) -> Result<AdminToken, String> {
        let s = s.trim();
        if s.len() < 16 || s.contains(char::is_whitespace) {
            return Err("an admin token has at least 16 characters and no spaces".into());
        }
        Ok(AdminToken(s.to_owned()))
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn tokens_verify_only_themselves_and_never_show_in_debug() {
        let a = SessionToken::generate();
        let b = SessionToken::generate();
        let wire = a.to_wire();
        assert_eq!(wire.expose().len(), 43);
        assert!(a.verify(wire.expose()));
        assert!(!b.verify(wire.expose()));
        assert!(!a.verify(""));
        assert!(!a.verify(&wire.expose()[..42]));
        assert!(!a.verify(&format!("{}A", wire.expose())));
        assert!(!format!("{a:?} {wire:?}").contains(wire.expose()));
    }

    #[test]
    fn tickets_are_single_use_expire_and_are_bounded() {
        let t0 = Instant::now();
        let mut tickets = Tickets::default();
        let first = tickets.mint(t0, TICKET_TTL);
        assert!(tickets.redeem(first.expose(), t0));
        assert!(!tickets.redeem(first.expose(), t0), "used");
        let late = tickets.mint(t0, TICKET_TTL);
        assert!(!tickets.redeem(late.expose(), t0 + TICKET_TTL), "expired");
        let all: Vec<Secret> = (0..=MAX_TICKETS)
            .map(|_| tickets.mint(t0, TICKET_TTL))
            .collect();
        assert!(!tickets.redeem(all[0].expose(), t0), "oldest forgotten");
        assert!(tickets.redeem(all[MAX_TICKETS].expose(), t0));
        assert!(!format!("{tickets:?}").contains(all[1].expose()));
    }

    #[test]
    fn bearer_parses_the_scheme_case_insensitively() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer abc"),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&h), None);
    }
}
