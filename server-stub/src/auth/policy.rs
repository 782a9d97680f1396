//! Room access policy (issue 12; PROTOCOL.md §6.1): who may `join` a room, checked on every
//! join path (WebSocket Control `join`, `POST` of a `join` to the Control lane) before the
//! session enters the room, so a refused join gets no `joined`, no `room-key` and tells no
//! member anything.
//!
//! | `--room-access` | admitted |
//! | --- | --- |
//! | `open` (default) | every session (today's behaviour; `npm start`) |
//! | `authenticated` | sessions with a verified identity (SIWE or app JWT) that has not expired |
//! | `token` | sessions whose app JWT's `rooms` claim names the room exactly |
//!
//! Refusals: `auth_required` (no identity, or it expired) and `forbidden` (an identity that
//! this policy does not admit to the room).

use super::VerifiedIdentity;
use p3_lanes::core::auth::IdentityKind;
use p3_lanes::core::error::{ErrorCode, WireError};

/// `--room-access` / `P3_ROOM_ACCESS`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum RoomAccess {
    /// Anyone may join any room by name.
    #[default]
    Open,
    /// Any verified identity may join any room.
    Authenticated,
    /// Only rooms named in the session's app JWT `rooms` claim.
    Token,
}

impl RoomAccess {
    /// The flag value, e.g. `"authenticated"`.
    pub fn as_str(self) -> &'static str {
        match self {
            RoomAccess::Open => "open",
            RoomAccess::Authenticated => "authenticated",
            RoomAccess::Token => "token",
        }
    }
}

/// Whether a session with `who` may join `room` at `now_ms` (ms since the epoch).
///
/// Errors: `auth_required`, `forbidden` (see the module docs).
pub fn admit(
    policy: RoomAccess,
    who: Option<&VerifiedIdentity>,
    room: &str,
    now_ms: u64,
) -> Result<(), WireError> {
    if policy == RoomAccess::Open {
        return Ok(());
    }
    let Some(who) = who.filter(|w| w.expires_at_ms.map_or(true, |t| t > now_ms)) else {
        return Err(WireError::new(
            ErrorCode::AuthRequired,
            format!(
                "room access is {:?}: sign in (SIWE or an app token) in the handshake first",
                policy.as_str()
            ),
        ));
    };
    match policy {
        RoomAccess::Open | RoomAccess::Authenticated => Ok(()),
        RoomAccess::Token => {
            let admitted = who.identity.kind == IdentityKind::Token
                && who
                    .rooms
                    .as_ref()
                    .is_some_and(|rooms| rooms.iter().any(|r| r == room));
            if admitted {
                Ok(())
            } else {
                Err(WireError::new(
                    ErrorCode::Forbidden,
                    format!("room {room:?} is not in this session's token rooms"),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p3_lanes::core::auth::Identity;

    fn who(kind: IdentityKind, rooms: Option<&[&str]>, exp: Option<u64>) -> VerifiedIdentity {
        VerifiedIdentity {
            identity: Identity {
                kind,
                id: "x".into(),
            },
            rooms: rooms.map(|r| r.iter().map(|s| s.to_string()).collect()),
            expires_at_ms: exp,
        }
    }

    #[test]
    fn each_policy() {
        let code = |r: Result<(), WireError>| r.err().map(|e| e.code);
        let siwe = who(IdentityKind::Siwe, None, None);
        let tok = who(IdentityKind::Token, Some(&["a"]), Some(1000));
        assert_eq!(code(admit(RoomAccess::Open, None, "a", 0)), None);
        assert_eq!(
            code(admit(RoomAccess::Authenticated, None, "a", 0)),
            Some(ErrorCode::AuthRequired)
        );
        assert_eq!(
            code(admit(RoomAccess::Authenticated, Some(&siwe), "a", 0)),
            None
        );
        assert_eq!(
            code(admit(RoomAccess::Authenticated, Some(&tok), "a", 1000)),
            Some(ErrorCode::AuthRequired),
            "expired"
        );
        assert_eq!(code(admit(RoomAccess::Token, Some(&tok), "a", 999)), None);
        assert_eq!(
            code(admit(RoomAccess::Token, Some(&tok), "b", 999)),
            Some(ErrorCode::Forbidden)
        );
        assert_eq!(
            code(admit(RoomAccess::Token, Some(&siwe), "a", 0)),
            Some(ErrorCode::Forbidden)
        );
        assert_eq!(
            code(admit(RoomAccess::Token, None, "a", 0)),
            Some(ErrorCode::AuthRequired)
        );
    }
}
