//! Session credentials, verified identity and room access (issue 12; PROTOCOL.md §3.1, §6.1,
//! §16 "Security").
//!
//! | module | implements |
//! | --- | --- |
//! | [`session`] | session token, single-use tickets, the Bearer check, the admin token |
//! | [`nonce`] | `GET /api/protocol/v2/auth/nonce`'s single-use SIWE nonces (bounded, TTL) |
//! | [`siwe`] | Sign-In with Ethereum (EIP-4361 parse, EIP-191 signature recovery, field checks) |
//! | [`device`] | device keys: ECDSA P-256 possession proof over a server nonce (open rooms) |
//! | [`jwt`] | app JWTs (seed 004): HS256 / ES256 / EdDSA with one configured key |
//! | [`policy`] | `--room-access open|authenticated|token`: who may join a room |
//! | [`turn`] | TURN REST ephemeral credentials for `GET /api/webrtc/config` |
//!
//! A handshake carrying `auth` is verified here before its session exists; the session then
//! holds the [`VerifiedIdentity`] for its whole life and the handshake answers `identity`.
//! A failed `auth` creates no session: 401 `auth_invalid` with a `reason`.

pub mod device;
pub mod jwt;
pub mod nonce;
pub mod policy;
pub mod session;
pub mod siwe;
pub mod turn;

pub use session::{
    bearer, unauthorized, AdminToken, Authorized, SessionToken, Tickets, MAX_TICKETS, TICKET_BYTES,
    TICKET_TTL, TICKET_TTL_MS, TOKEN_BYTES,
};

use crate::config::Config;
use crate::error::AppError;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::IntoResponse;
use axum::Json;
use jwt::JwtVerifier;
use nonce::NonceStore;
use p3_lanes::core::auth::{AuthReason, HandshakeAuth, Identity, IdentityKind, NonceResponse};
use p3_lanes::core::frame::SessionId;
use policy::RoomAccess;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An identity the server verified, with what it admits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedIdentity {
    /// The public identity (`identity` in the handshake response).
    pub identity: Identity,
    /// App JWT: the rooms its `rooms` claim admits (`--room-access token`). SIWE: `None`.
    pub rooms: Option<Vec<String>>,
    /// When it stops counting as verified, ms since the epoch: the JWT's `exp` (plus leeway)
    /// or the SIWE message's `Expiration Time`; `None`: the session's life.
    pub expires_at_ms: Option<u64>,
}

/// The identity side of the server: nonces, the JWT key, the SIWE expectations, the room
/// policy and the TURN secret. Built once from the [`Config`].
#[derive(Debug)]
pub struct Auth {
    nonces: NonceStore,
    jwt: Option<JwtVerifier>,
    siwe_domain: Option<String>,
    chain_ids: Vec<u64>,
    room_access: RoomAccess,
    turn_secret: Option<Vec<u8>>,
    turn_ttl_s: u64,
}

impl Auth {
    /// The auth settings of `config`.
    ///
    /// Errors: an unreadable or unusable JWT key (`--jwt-public-key`, `--jwt-secret`), or both
    /// set at once.
    pub fn from_config(config: &Config) -> Result<Auth, String> {
        let jwt = match (&config.jwt_secret, &config.jwt_public_key) {
            (Some(_), Some(_)) => {
                return Err("set either --jwt-secret or --jwt-public-key, not both".into())
            }
            (Some(secret), None) => Some(JwtVerifier::hs256(secret.as_bytes())?),
            (None, Some(path)) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("cannot read --jwt-public-key {}: {e}", path.display()))?;
                Some(JwtVerifier::public_pem(&pem)?)
            }
            (None, None) => None,
        };
        Ok(Auth {
            nonces: NonceStore::new(
                Duration::from_secs(config.siwe_nonce_ttl_s),
                nonce::DEFAULT_MAX_NONCES,
            ),
            jwt,
            siwe_domain: config.siwe_domain.clone(),
            chain_ids: config.siwe_chain_ids.clone(),
            room_access: config.room_access,
            turn_secret: config.turn_secret.as_ref().map(|s| s.as_bytes().to_vec()),
            turn_ttl_s: config.turn_ttl_s,
        })
    }

    /// The configured room access policy.
    pub fn room_access(&self) -> RoomAccess {
        self.room_access
    }

    /// The SIWE nonces.
    pub fn nonces(&self) -> &NonceStore {
        &self.nonces
    }

    /// `--turn-secret` and `--turn-ttl-s`, when a TURN secret is configured.
    pub fn turn(&self) -> Option<(&[u8], u64)> {
        self.turn_secret.as_deref().map(|s| (s, self.turn_ttl_s))
    }

    /// Verifies a handshake's `auth`. `host` is the request's `Host` (the expected SIWE
    /// `domain` unless `--siwe-domain` is set); `now_ms` the wall clock, `now` the monotonic
    /// one (nonce TTLs).
    ///
    /// Errors: 401 `auth_invalid` with the [`AuthReason`].
    pub fn verify(
        &self,
        auth: &HandshakeAuth,
        host: Option<&str>,
        now_ms: u64,
        now: Instant,
    ) -> Result<VerifiedIdentity, AppError> {
        let refuse = |(reason, why): (AuthReason, String)| {
            tracing::info!(%reason, "sign-in refused");
            AppError::auth_invalid(reason, why)
        };
        match auth {
            HandshakeAuth::Token(token) => {
                let Some(jwt) = &self.jwt else {
                    return Err(refuse((
                        AuthReason::BadToken,
                        "this server is configured without an app token key".into(),
                    )));
                };
                jwt.verify(token).map_err(refuse)
            }
            HandshakeAuth::Device(d) => {
                let id = device::verify(d).map_err(refuse)?;
                self.nonces
                    .consume(&d.nonce, now)
                    .map_err(|reason| refuse((reason, format!("nonce {:?}: {reason}", d.nonce))))?;
                Ok(VerifiedIdentity {
                    identity: Identity {
                        kind: IdentityKind::Device,
                        id,
                    },
                    rooms: None,
                    expires_at_ms: None,
                })
            }
            HandshakeAuth::Siwe(s) => {
                let Some(domain) = self.siwe_domain.as_deref().or(host) else {
                    return Err(refuse((
                        AuthReason::WrongDomain,
                        "no Host header and no --siwe-domain to check the domain against".into(),
                    )));
                };
                let expected = siwe::Expected {
                    domain,
                    chain_ids: &self.chain_ids,
                    now_ms,
                    max_age_ms: u64::try_from(self.nonces.ttl().as_millis()).unwrap_or(u64::MAX),
                };
                let msg = siwe::verify(&s.message, &s.signature, &expected).map_err(refuse)?;
                self.nonces.consume(&msg.nonce, now).map_err(|reason| {
                    refuse((reason, format!("nonce {:?}: {reason}", msg.nonce)))
                })?;
                Ok(VerifiedIdentity {
                    identity: Identity {
                        kind: IdentityKind::Siwe,
                        id: siwe::eip55(&msg.address),
                    },
                    rooms: None,
                    expires_at_ms: msg.expiration_ms,
                })
            }
        }
    }
}

/// Whether `headers` carry `Authorization: Bearer <sessionToken>` of session `sid`
/// ([`session::bearer`], compared in constant time by the registry).
pub(crate) fn bearer_matches(state: &AppState, sid: SessionId, headers: &HeaderMap) -> bool {
    session::bearer(headers)
        .is_some_and(|token| state.registry().authorize(sid, token, Instant::now()))
}

/// The TURN REST `user` for a config request from `sid` (already proven by its bearer), or
/// `None` when TURN credentials are not for it: under `--room-access open` everyone gets them
/// (`user`: the identity id, the session id, or `open`); otherwise only a session in a room
/// its identity is still admitted to (`user`: the identity id).
pub(crate) fn turn_user(state: &AppState, sid: Option<SessionId>, now_ms: u64) -> Option<String> {
    let policy = state.auth().room_access();
    let member = sid.and_then(|sid| state.registry().admission(sid));
    if policy == RoomAccess::Open {
        return Some(match member {
            Some((_, Some(who))) => who.identity.id,
            Some(_) => sid.map_or_else(|| "open".to_owned(), |s| s.to_string()),
            None => "open".to_owned(),
        });
    }
    let (room, who) = member?;
    let who = who?;
    policy::admit(policy, Some(&who), &room?, now_ms).ok()?;
    Some(who.identity.id)
}

/// `GET /api/protocol/v2/auth/nonce`: `{"nonce", "expiresInMs"}`, `Cache-Control: no-store`.
/// Rate-limited with the handshakes of the client's IP.
///
/// Errors: 429 `too_many_requests` when the server holds its maximum of live nonces.
pub async fn nonce(State(state): State<Arc<AppState>>) -> Result<impl IntoResponse, AppError> {
    let store = state.auth().nonces();
    let nonce = store.issue(Instant::now())?;
    state.cluster_nonce_issued(&nonce).await;
    Ok((
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(NonceResponse {
            nonce,
            expires_in_ms: u64::try_from(store.ttl().as_millis()).unwrap_or(u64::MAX),
        }),
    ))
}
