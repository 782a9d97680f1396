//! Calls addressed to an identity (seed 000 "Nexus as P2P signaling"; issue 12 "Calls addressed
//! to an identity"; PROTOCOL.md §13.16): the wire shapes of `POST /api/nexus/calls/*`, the
//! Messaging-lane messages the server sends the two parties, and the callee's policy
//! (`acceptCallsFrom` in the handshake). Sans-IO: types, parsing and the policy check only.
//!
//! ```text
//! caller                          server                              callee (every live session
//!   POST /api/nexus/calls/initiate {to}                               of the identity that admits
//!   ─────────────────────────────▶  200 {callId, expiresInMs}          the caller)
//!                                   ──── Messaging {type: "call", callId, from, fromMember} ──▶
//!                                   ◀─── POST /api/nexus/calls/{callId}/accept | decline ────
//!   ◀── Messaging {type: "call-accepted", callId, member, by} | {type: "call-declined", callId}
//!   offer / answer / ice on the Messaging lane, `to` = the other party's member id (§13.5)
//! ```
//!
//! Either party ends an accepted call with `POST /api/nexus/calls/{callId}/end`; a call
//! unanswered for [`RING_TIMEOUT_MS`] ends with `call-ended {reason: "expired"}`.

use crate::core::auth::{Identity, IdentityKind};
use crate::core::frame::SessionId;
use serde::{Deserialize, Serialize};

/// How long a call rings before it expires unanswered, ms (the server's default; its
/// `--call-ring-timeout-ms` may change it and `expiresInMs` says what applies).
pub const RING_TIMEOUT_MS: u64 = 30_000;
/// At most this many calls (ringing or accepted) involve one session, as caller or callee.
pub const MAX_CALLS_PER_SESSION: usize = 4;
/// At most this many calls ring at once on one server.
pub const MAX_RINGING_CALLS: usize = 1024;
/// The header that names the calling (or answering) session on the call routes; the session
/// proves it with `Authorization: Bearer <sessionToken>` (PROTOCOL.md §2.1) where session
/// credentials are enforced.
pub const HEADER_SESSION: &str = "p3-session";
/// Longest call id accepted in a path, bytes (ids the server makes are 22).
pub const MAX_CALL_ID_LEN: usize = 64;
/// Longest `to` accepted, bytes (an address is 42; a JWT `sub` longer than this cannot be
/// called).
pub const MAX_TO_LEN: usize = 256;

/// Who may ring a session's identity (`acceptCallsFrom` in the handshake): `"anyone"` (any
/// verified identity), `"nobody"` (the default: no call reaches this session), or a list of
/// identities (addresses compared case-insensitively, JWT `sub`s exactly).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AcceptCallsFrom {
    /// `"anyone"` or `"nobody"`.
    Policy(CallPolicy),
    /// Only these identities.
    Only(Vec<String>),
}

/// The keyword forms of [`AcceptCallsFrom`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallPolicy {
    /// Any verified identity may ring.
    Anyone,
    /// No one may ring.
    Nobody,
}

impl Default for AcceptCallsFrom {
    fn default() -> Self {
        AcceptCallsFrom::Policy(CallPolicy::Nobody)
    }
}

impl AcceptCallsFrom {
    /// Whether `caller` may ring a session with this policy.
    pub fn admits(&self, caller: &Identity) -> bool {
        match self {
            AcceptCallsFrom::Policy(CallPolicy::Anyone) => true,
            AcceptCallsFrom::Policy(CallPolicy::Nobody) => false,
            AcceptCallsFrom::Only(list) => list.iter().any(|t| names(t, caller)),
        }
    }
}

/// Whether `target` (a `to` or a policy entry) names `identity`: a `0x` + 40 hex address names
/// the SIWE identity of that address whatever its letter case (EIP-55 or lowercase); anything
/// else names the app-token identity whose `sub` is exactly `target`. Nothing names a device
/// key ([`can_call`]).
pub fn names(target: &str, identity: &Identity) -> bool {
    match identity.kind {
        IdentityKind::Siwe => is_address(target) && target.eq_ignore_ascii_case(&identity.id),
        IdentityKind::Token => !is_address(target) && target == identity.id,
        IdentityKind::Device => false,
    }
}

/// Whether `identity` may call and be called: a SIWE address or an app-token `sub`. A device
/// key is not: anyone can make device identities at will, so, as for room access, they admit
/// nowhere (PROTOCOL.md §13.15).
pub fn can_call(identity: &Identity) -> bool {
    match identity.kind {
        IdentityKind::Siwe | IdentityKind::Token => true,
        IdentityKind::Device => false,
    }
}

/// The index key of the identity `target` names (see [`names`]): `siwe:<lowercase address>`
/// or `token:<sub>`.
pub fn target_key(target: &str) -> String {
    if is_address(target) {
        format!("siwe:{}", target.to_ascii_lowercase())
    } else {
        format!("token:{target}")
    }
}

/// The index key of `identity` (equal to [`target_key`] of every target that [`names`] it);
/// `None` for an identity that cannot be called ([`can_call`]).
pub fn identity_key(identity: &Identity) -> Option<String> {
    match identity.kind {
        IdentityKind::Siwe => Some(format!("siwe:{}", identity.id.to_ascii_lowercase())),
        IdentityKind::Token => Some(format!("token:{}", identity.id)),
        IdentityKind::Device => None,
    }
}

/// `0x` followed by exactly 40 hex digits.
fn is_address(s: &str) -> bool {
    s.len() == 42
        && (s.starts_with("0x") || s.starts_with("0X"))
        && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// Body of `POST /api/nexus/calls/initiate`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InitiateRequest {
    /// The callee: an address (EIP-55 or lowercase) or an app-token `sub`, 1..=[`MAX_TO_LEN`]
    /// bytes.
    pub to: String,
}

/// 200 answer of `POST /api/nexus/calls/initiate`: the call rings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitiateResponse {
    /// The call's id (22 base64url characters from the server's CSPRNG).
    pub call_id: String,
    /// How long it rings before it expires unanswered, ms.
    pub expires_in_ms: u64,
}

/// 200 answer of `POST /api/nexus/calls/{callId}/accept`: what the callee needs to signal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AcceptResponse {
    /// The call's id.
    pub call_id: String,
    /// The caller's member id: the `to` of the callee's offer/answer/ice.
    pub peer: SessionId,
    /// The caller's verified identity.
    pub from: Identity,
}

/// Why a call ended (`reason` of `call-ended`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndReason {
    /// Unanswered for its ring timeout.
    Expired,
    /// A party ended it (`POST .../end`), or the caller cancelled it while it rang.
    Hangup,
    /// Another session of the callee's identity accepted or declined it (sent to the others).
    AnsweredElsewhere,
    /// A party's session went away (deleted or expired).
    Gone,
}

/// A message the server sends a party on the Messaging lane (no `from` in the frame).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum CallMessage {
    /// To every ringing session of the callee.
    #[serde(rename_all = "camelCase")]
    Call {
        /// The call's id.
        call_id: String,
        /// The caller's verified identity.
        from: Identity,
        /// The caller's member id.
        from_member: SessionId,
        /// How long it rings, ms.
        expires_in_ms: u64,
    },
    /// To the caller: a session of the callee accepted.
    #[serde(rename_all = "camelCase")]
    CallAccepted {
        /// The call's id.
        call_id: String,
        /// The accepting session's member id: the `to` of the caller's offer/ice.
        member: SessionId,
        /// The callee's identity.
        by: Identity,
    },
    /// To the caller: the callee declined.
    #[serde(rename_all = "camelCase")]
    CallDeclined {
        /// The call's id.
        call_id: String,
    },
    /// To a party (or a ringing session) whose call ended.
    #[serde(rename_all = "camelCase")]
    CallEnded {
        /// The call's id.
        call_id: String,
        /// Why.
        reason: EndReason,
    },
}

/// The `type`s of [`CallMessage`].
pub const CALL_MESSAGE_TYPES: [&str; 4] = ["call", "call-accepted", "call-declined", "call-ended"];

impl CallMessage {
    /// The call it concerns.
    pub fn call_id(&self) -> &str {
        match self {
            CallMessage::Call { call_id, .. }
            | CallMessage::CallAccepted { call_id, .. }
            | CallMessage::CallDeclined { call_id }
            | CallMessage::CallEnded { call_id, .. } => call_id,
        }
    }

    /// A Messaging-lane payload as a call message, if its `type` is one of
    /// [`CALL_MESSAGE_TYPES`] and it has that type's shape.
    pub fn parse(value: &serde_json::Value) -> Option<CallMessage> {
        let t = value.get("type")?.as_str()?;
        if !CALL_MESSAGE_TYPES.contains(&t) {
            return None;
        }
        serde_json::from_value(value.clone()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn siwe(id: &str) -> Identity {
        Identity {
            kind: IdentityKind::Siwe,
            id: id.into(),
        }
    }

    const ADDR: &str = "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf";

    #[test]
    fn policy_defaults_to_nobody_and_matches_addresses_in_any_case() {
        let caller = siwe(ADDR);
        assert!(!AcceptCallsFrom::default().admits(&caller));
        let anyone: AcceptCallsFrom = serde_json::from_value(json!("anyone")).unwrap();
        assert!(anyone.admits(&caller));
        let only: AcceptCallsFrom =
            serde_json::from_value(json!([ADDR.to_ascii_lowercase()])).unwrap();
        assert!(only.admits(&caller));
        let token = Identity {
            kind: IdentityKind::Token,
            id: ADDR.to_ascii_lowercase(),
        };
        assert!(!names(ADDR, &token), "an address never names a token sub");
        assert!(serde_json::from_value::<AcceptCallsFrom>(json!("everyone")).is_err());
        assert_eq!(Some(target_key(ADDR)), identity_key(&siwe(ADDR)));
        let device = Identity {
            kind: IdentityKind::Device,
            id: "AAAAAAAAAAAAAAAAAAAAAA".into(),
        };
        assert!(!can_call(&device) && can_call(&token) && can_call(&siwe(ADDR)));
        assert_eq!(identity_key(&device), None, "a device key is never rung");
        assert!(!names("AAAAAAAAAAAAAAAAAAAAAA", &device));
        assert!(!names("device:AAAAAAAAAAAAAAAAAAAAAA", &device));
    }

    #[test]
    fn call_messages_round_trip_in_camel_case() {
        let m = CallMessage::Call {
            call_id: "c".into(),
            from: siwe(ADDR),
            from_member: SessionId::from_random_bytes([1; 16]),
            expires_in_ms: 30_000,
        };
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["type"], "call");
        assert_eq!(v["expiresInMs"], 30_000);
        assert!(v["fromMember"].is_string());
        assert_eq!(CallMessage::parse(&v), Some(m));
        let ended = json!({"type": "call-ended", "callId": "c", "reason": "answered-elsewhere"});
        assert_eq!(CallMessage::parse(&ended).unwrap().call_id(), "c");
        assert_eq!(CallMessage::parse(&json!({"type": "offer"})), None);
    }
}
