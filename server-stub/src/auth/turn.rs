//! TURN REST credentials ("A REST API For Access To TURN Services",
//! draft-uberti-behave-turn-rest-00; coturn's `use-auth-secret` / `static-auth-secret`): with
//! `--turn-secret` / `TURN_SECRET` configured, `GET /api/webrtc/config` hands out ephemeral
//! credentials instead of a fixed user name and password:
//!
//! - `username` = `<expiry, s since the Unix epoch>:<user>` where `user` is the session's
//!   verified identity id, else its public session id, else `open`;
//! - `credential` = base64(HMAC-SHA1(secret, username)) (standard alphabet, padded);
//! - valid for `--turn-ttl-s` (default [`DEFAULT_TURN_TTL_S`]); the TURN server checks the
//!   HMAC with the same secret and refuses the user name once its expiry has passed.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Default `--turn-ttl-s`: credentials live one hour.
pub const DEFAULT_TURN_TTL_S: u64 = 3600;

/// `(username, credential)` for `user`, valid until `now_s + ttl_s`.
pub fn credentials(secret: &[u8], user: &str, now_s: u64, ttl_s: u64) -> (String, String) {
    let username = format!("{}:{user}", now_s.saturating_add(ttl_s));
    let mut mac =
        <Hmac<Sha1> as Mac>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(username.as_bytes());
    let credential = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (username, credential)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2202_vector_and_shape() {
        // RFC 2202 test case 2: HMAC-SHA1("Jefe", "what do ya want for nothing?").
        let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79");
        let (u, c) = credentials(b"s3cret", "alice", 1000, 3600);
        assert_eq!(u, "4600:alice");
        assert_eq!(c.len(), 28, "20 bytes, base64 padded");
    }
}
