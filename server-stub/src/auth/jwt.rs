//! App JWTs (seed 004 "JWTs in initial signaling"; issue 12): a token the app's own backend
//! issues, verified with the `jsonwebtoken` crate against one configured key:
//!
//! - `--jwt-secret` / `P3_JWT_SECRET`: HS256 with that shared secret;
//! - `--jwt-public-key <PEM file>` / `P3_JWT_PUBLIC_KEY`: ES256 (an EC P-256 public key) or
//!   EdDSA (an Ed25519 public key), told apart by the PEM.
//!
//! Only that one algorithm is accepted (no `none`, no algorithm confusion). Claims: `sub`
//! (string, required: the identity), `exp` (s since the epoch, required), optional `nbf`, and
//! `rooms` (array of room names the token admits under `--room-access token`; absent: none).
//! [`LEEWAY_S`] of clock skew is tolerated on `exp` and `nbf`.

use super::VerifiedIdentity;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use p3_lanes::core::auth::{AuthReason, Identity, IdentityKind};
use serde::Deserialize;
use std::fmt;

/// Clock skew tolerated on `exp` and `nbf`, s.
pub const LEEWAY_S: u64 = 30;
/// Longest accepted token, bytes.
pub const MAX_TOKEN_BYTES: usize = 8192;
/// Most rooms one token may admit.
pub const MAX_ROOMS: usize = 256;
/// Longest accepted `sub`, bytes.
pub const MAX_SUB_BYTES: usize = 256;

/// The claims we read; others are ignored.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    rooms: Vec<String>,
}

/// A configured JWT key and its validation rules.
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for JwtVerifier {
    /// Never prints the key (an HS256 secret).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// HS256 with `secret` (at least 32 bytes, RFC 7518 §3.2).
    ///
    /// Errors: a shorter secret.
    pub fn hs256(secret: &[u8]) -> Result<JwtVerifier, String> {
        if secret.len() < 32 {
            return Err("--jwt-secret must be at least 32 bytes (RFC 7518 §3.2)".into());
        }
        Ok(Self::with(
            DecodingKey::from_secret(secret),
            Algorithm::HS256,
        ))
    }

    /// ES256 or EdDSA with the public key in `pem` (`-----BEGIN PUBLIC KEY-----`).
    ///
    /// Errors: a PEM that is neither an EC P-256 nor an Ed25519 public key.
    pub fn public_pem(pem: &[u8]) -> Result<JwtVerifier, String> {
        if let Ok(k) = DecodingKey::from_ec_pem(pem) {
            return Ok(Self::with(k, Algorithm::ES256));
        }
        match DecodingKey::from_ed_pem(pem) {
            Ok(k) => Ok(Self::with(k, Algorithm::EdDSA)),
            Err(e) => Err(format!(
                "--jwt-public-key is neither an EC P-256 nor an Ed25519 public key PEM: {e}"
            )),
        }
    }

    fn with(key: DecodingKey, alg: Algorithm) -> JwtVerifier {
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_S;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        JwtVerifier { key, validation }
    }

    /// Verifies `token`: its identity (`kind: "token"`, `id: sub`), the rooms it admits and
    /// its expiry.
    ///
    /// Errors: `expired` past `exp`, `not_yet_valid` before `nbf`, `bad_token` otherwise
    /// (signature, algorithm, shape, missing claims, bounds).
    pub fn verify(&self, token: &str) -> Result<VerifiedIdentity, (AuthReason, String)> {
        let bad = |why: String| (AuthReason::BadToken, why);
        if token.len() > MAX_TOKEN_BYTES {
            return Err(bad(format!("token longer than {MAX_TOKEN_BYTES} bytes")));
        }
        let data =
            decode::<Claims>(token, &self.key, &self.validation).map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => (AuthReason::Expired, "the token expired".into()),
                ErrorKind::ImmatureSignature => (
                    AuthReason::NotYetValid,
                    "the token is not valid yet (nbf)".into(),
                ),
                other => bad(format!("the token does not verify: {other:?}")),
            })?;
        let c = data.claims;
        if c.sub.is_empty() || c.sub.len() > MAX_SUB_BYTES {
            return Err(bad(format!("sub must be 1..={MAX_SUB_BYTES} bytes")));
        }
        if c.rooms.len() > MAX_ROOMS {
            return Err(bad(format!("rooms may name at most {MAX_ROOMS} rooms")));
        }
        Ok(VerifiedIdentity {
            identity: Identity {
                kind: IdentityKind::Token,
                id: c.sub,
            },
            rooms: Some(c.rooms),
            expires_at_ms: Some(c.exp.saturating_add(LEEWAY_S).saturating_mul(1000)),
        })
    }
}
