//! Verified identity (issue 12; PROTOCOL.md §3.3 "Identity"): the handshake's `auth` field,
//! the `identity` the server answers, the `reason` of an `auth_invalid` refusal, and the
//! Sign-In with Ethereum message text ([EIP-4361]) a client builds for its wallet to sign.
//!
//! Wire shapes (JSON, camelCase):
//!
//! ```text
//! request  "auth": {"siwe": {"message": "<EIP-4361 text>", "signature": "0x<65 bytes hex>"}}
//!          "auth": {"token": "<JWT, compact form>"}
//! response "identity": {"kind": "siwe", "id": "0x<EIP-55 address>"}
//!          "identity": {"kind": "token", "id": "<the JWT's sub>"}
//! refusal  401 {"error": "...", "code": "auth_invalid", "reason": "<AuthReason>"}
//! ```
//!
//! The message builder is pure (no clock, no randomness): the nonce comes from
//! `GET /api/protocol/v2/auth/nonce` and the times from the caller.
//!
//! [EIP-4361]: https://eips.ethereum.org/EIPS/eip-4361

use serde::{Deserialize, Serialize};
use std::fmt;

/// The handshake's optional `auth` field: exactly one way to prove an identity.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HandshakeAuth {
    /// Sign-In with Ethereum: an EIP-4361 message and its EIP-191 `personal_sign` signature.
    Siwe(SiweAuth),
    /// An app JWT (seed 004) issued by the app's own backend, compact serialization.
    Token(String),
}

impl fmt::Debug for HandshakeAuth {
    /// Never prints the credential itself (a JWT is a bearer secret).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeAuth::Siwe(_) => f.write_str("HandshakeAuth::Siwe(..)"),
            HandshakeAuth::Token(_) => f.write_str("HandshakeAuth::Token(..)"),
        }
    }
}

/// `auth.siwe`: the message exactly as signed, and the signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SiweAuth {
    /// The EIP-4361 message text, byte for byte as the wallet signed it (`\n` line ends).
    pub message: String,
    /// `0x` + 130 hex digits: `r ‖ s ‖ v` (65 bytes, `v` 27/28 or 0/1), as `personal_sign`
    /// returns it.
    pub signature: String,
}

/// How an identity was verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityKind {
    /// Sign-In with Ethereum: `id` is the EIP-55 checksummed address.
    Siwe,
    /// App JWT: `id` is its `sub` claim.
    Token,
}

/// The verified identity of a session (handshake response `identity`). Never derived from the
/// unverified `wallet` field.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    /// How it was verified.
    pub kind: IdentityKind,
    /// The EIP-55 address (`siwe`) or the JWT `sub` (`token`).
    pub id: String,
}

/// Why an `auth` was refused (`reason` of an `auth_invalid` error). Serialized snake_case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuthReason {
    /// The signature does not recover to the message's address.
    BadSignature,
    /// The message's `domain` is not the server's.
    WrongDomain,
    /// The message's `URI` is not on the server's origin.
    WrongUri,
    /// The message's `Chain ID` is not one the server accepts.
    WrongChain,
    /// Past the message's `Expiration Time`, its `Issued At` too old, or the JWT's `exp`.
    Expired,
    /// Before the message's `Not Before` (or its `Issued At` in the future), or the JWT's `nbf`.
    NotYetValid,
    /// The nonce was never issued by this server, or its TTL ran out.
    NonceUnknown,
    /// The nonce was already used by a sign-in.
    NonceReused,
    /// Not an EIP-4361 message, a signature that is not 65 hex bytes, or an `auth` of
    /// another shape.
    Malformed,
    /// A JWT that does not verify: bad signature, wrong algorithm, missing `sub`/`exp`, or no
    /// key configured on the server.
    BadToken,
}

impl AuthReason {
    /// The wire name, e.g. `"nonce_reused"`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthReason::BadSignature => "bad_signature",
            AuthReason::WrongDomain => "wrong_domain",
            AuthReason::WrongUri => "wrong_uri",
            AuthReason::WrongChain => "wrong_chain",
            AuthReason::Expired => "expired",
            AuthReason::NotYetValid => "not_yet_valid",
            AuthReason::NonceUnknown => "nonce_unknown",
            AuthReason::NonceReused => "nonce_reused",
            AuthReason::Malformed => "malformed",
            AuthReason::BadToken => "bad_token",
        }
    }
}

impl fmt::Display for AuthReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `GET /api/protocol/v2/auth/nonce` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NonceResponse {
    /// Single-use SIWE nonce: at least 16 alphanumeric characters.
    pub nonce: String,
    /// How long the server keeps it, ms.
    pub expires_in_ms: u64,
}

/// The fields of a SIWE message a client fills in (EIP-4361 "Message Format").
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SiweFields {
    /// RFC 3986 authority of the site asking, e.g. `"localhost:8080"` (`location.host`).
    pub domain: String,
    /// EIP-55 checksummed address, `0x` + 40 hex digits.
    pub address: String,
    /// Optional human-readable line (no `\n`).
    pub statement: Option<String>,
    /// RFC 3986 URI of the resource signed in to, e.g. `"http://localhost:8080"`.
    pub uri: String,
    /// EIP-155 chain id.
    pub chain_id: u64,
    /// The server's nonce.
    pub nonce: String,
    /// RFC 3339 time the message was made, e.g. `"2026-12-07T00:00:00.000Z"`.
    pub issued_at: String,
    /// Optional RFC 3339 time after which the message is invalid.
    pub expiration_time: Option<String>,
    /// Optional RFC 3339 time before which the message is invalid.
    pub not_before: Option<String>,
    /// Optional system-specific request id.
    pub request_id: Option<String>,
    /// Optional resource URIs.
    pub resources: Vec<String>,
}

/// The EIP-4361 message text for `f` (version 1, `\n` line ends, no trailing newline), the
/// exact string a wallet signs with `personal_sign`.
pub fn siwe_message(f: &SiweFields) -> String {
    let mut m = format!(
        "{} wants you to sign in with your Ethereum account:\n{}\n\n",
        f.domain, f.address
    );
    if let Some(s) = &f.statement {
        m.push_str(s);
        m.push('\n');
    }
    m.push('\n');
    m.push_str(&format!(
        "URI: {}\nVersion: 1\nChain ID: {}\nNonce: {}\nIssued At: {}",
        f.uri, f.chain_id, f.nonce, f.issued_at
    ));
    for (tag, v) in [
        ("Expiration Time", &f.expiration_time),
        ("Not Before", &f.not_before),
        ("Request ID", &f.request_id),
    ] {
        if let Some(v) = v {
            m.push_str(&format!("\n{tag}: {v}"));
        }
    }
    if !f.resources.is_empty() {
        m.push_str("\nResources:");
        for r in &f.resources {
            m.push_str(&format!("\n- {r}"));
        }
    }
    m
}

/// RFC 3339 UTC text with milliseconds (`YYYY-MM-DDTHH:MM:SS.mmmZ`) of `ms` since the Unix
/// epoch (what `Date.prototype.toISOString` prints). Years past 9999 are clamped.
pub fn rfc3339_ms(ms: u64) -> String {
    let ms = ms.min(253_402_300_799_999);
    let (days, rem) = (ms / 86_400_000, ms % 86_400_000);
    let (y, mo, d) = civil_from_days(days as i64);
    let (h, mi, s, milli) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
}

/// Proleptic Gregorian date of day `z` since 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`);
/// the inverse of the date part of [`rfc3339_ms`].
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn auth_wire_shapes() {
        let a: HandshakeAuth =
            serde_json::from_value(json!({"siwe": {"message": "m", "signature": "0x00"}})).unwrap();
        assert_eq!(
            a,
            HandshakeAuth::Siwe(SiweAuth {
                message: "m".into(),
                signature: "0x00".into()
            })
        );
        let t: HandshakeAuth = serde_json::from_value(json!({"token": "a.b.c"})).unwrap();
        assert_eq!(serde_json::to_value(&t).unwrap(), json!({"token": "a.b.c"}));
        assert!(!format!("{t:?}").contains("a.b.c"), "Debug hides the token");
        assert!(serde_json::from_value::<HandshakeAuth>(json!({"wallet": "0x1"})).is_err());
        let id = Identity {
            kind: IdentityKind::Siwe,
            id: "0xAb".into(),
        };
        assert_eq!(
            serde_json::to_value(&id).unwrap(),
            json!({"kind": "siwe", "id": "0xAb"})
        );
        assert_eq!(
            serde_json::to_value(AuthReason::NonceReused).unwrap(),
            json!("nonce_reused")
        );
        assert_eq!(AuthReason::NotYetValid.as_str(), "not_yet_valid");
    }

    #[test]
    fn message_matches_the_eip_example_layout() {
        let f = SiweFields {
            domain: "service.org".into(),
            address: "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2".into(),
            statement: Some(
                "I accept the ServiceOrg Terms of Service: https://service.org/tos".into(),
            ),
            uri: "https://service.org/login".into(),
            chain_id: 1,
            nonce: "32891756".into(),
            issued_at: "2021-09-30T16:25:24Z".into(),
            resources: vec![
                "ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/".into(),
            ],
            ..SiweFields::default()
        };
        assert_eq!(
            siwe_message(&f),
            "service.org wants you to sign in with your Ethereum account:\n\
             0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2\n\n\
             I accept the ServiceOrg Terms of Service: https://service.org/tos\n\n\
             URI: https://service.org/login\nVersion: 1\nChain ID: 1\nNonce: 32891756\n\
             Issued At: 2021-09-30T16:25:24Z\nResources:\n\
             - ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/"
        );
        let bare = siwe_message(&SiweFields {
            statement: None,
            resources: vec![],
            expiration_time: Some("2021-09-30T16:30:00Z".into()),
            ..f
        });
        assert!(bare.contains("Cc2\n\n\nURI: "), "{bare}");
        assert!(bare.ends_with("\nExpiration Time: 2021-09-30T16:30:00Z"));
    }

    #[test]
    fn rfc3339_round_trips_through_civil_days() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_633_019_124_123), "2021-09-30T16:25:24.123Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        for days in [0i64, 59, 60, 365, 11_016, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
