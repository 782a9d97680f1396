//! Music control between peers when the server is gone (seed 004 "Tier 2: WebRTC mesh",
//! "Security" `signature`; issue #5; PROTOCOL.md §13.11): the messages a music room's
//! controller and followers exchange over the DataChannel mesh, sealed under the room key
//! ([`crate::core::p2p::seal`]), and the rule a follower applies before taking a change.
//!
//! # Wire (Sync lane of the mesh, JSON)
//! `{"type": "sealed-sync", "box": "<base64url envelope>"}`: the envelope of
//! [`crate::core::p2p::seal`] (AAD binds room and sender, so a message replayed from another
//! room or re-sent as another member fails with `Tampered`). Inside, UTF-8 JSON of
//! [`PeerSync`]:
//! - `{"type": "change", "control": MusicControl, "state": RoomState}`: the controller applied
//!   `control` (stamped `(epoch, sequence)`, `applyAt` on the shared clock) and `state` is the
//!   room state it produced;
//! - `{"type": "claim", "claim": {epoch, controller}, "state": RoomState | null}`: the sender's
//!   adopted claim (after an election, and to every peer whose link comes up), with the
//!   newest state it holds.
//!
//! # Acceptance ([`check_change`])
//! A change is taken only from the adopted claim's controller in the claim's epoch; a change
//! from an epoch below the claim's is [`PeerSyncError::StaleEpoch`] (`epoch_mismatch`), from
//! another member in the current epoch [`PeerSyncError::NotController`] (`not_controller`).
//! A change from a higher epoch means a claim not heard yet: the caller adopts
//! `(epoch, sender)` as a claim ([`crate::core::p2p::election::Election::handle_claim`]) first.
//! Duplicates are dropped by the follower's `(epoch, sequence)` order (§12).
//!
//! # Drive contract
//! The driver owns a [`PeerSealer`] per room once the room key arrives, gives it the 4-byte
//! random nonce prefix (from `crypto.getRandomValues`) and calls [`PeerSealer::seal`] /
//! [`PeerSealer::open`]; no clock, no IO.

use super::election::Claim;
use super::seal::{self, ReplayWindow, RoomKey, SealError};
use crate::core::error::ErrorCode;
use crate::core::sync::state::{MusicControl, RoomState};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// `type` of the outer message on the mesh's Sync lane.
pub const SEALED_SYNC_TYPE: &str = "sealed-sync";

/// A music message between peers (module docs). JSON tagged by `type`, camelCase.
// Built, sealed and dropped at once: boxing `Change` would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum PeerSync {
    /// The controller applied `control`; `state` is the result.
    Change {
        /// The resolved change (`applyAt` set).
        control: MusicControl,
        /// The room state it produced.
        state: RoomState,
    },
    /// The sender's adopted claim and newest state.
    Claim {
        /// `{epoch, controller}`.
        claim: Claim,
        /// The newest room state the sender holds.
        state: Option<RoomState>,
    },
}

/// Why a peer's music message was not taken. `code()` gives the JS error code.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerSyncError {
    /// Not a `sealed-sync` message, bad base64, or bad JSON inside (`bad_payload`).
    #[error("bad peer music message: {0}")]
    Malformed(String),
    /// The envelope did not open (`forbidden`): tampered, foreign key, replay.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// No room key yet: nothing can be sealed or opened (`closed`).
    #[error("no room key from the server yet")]
    NoKey,
    /// A change from an epoch below the adopted claim's (`epoch_mismatch`).
    #[error("change from stale epoch {got}, the room is in epoch {current}")]
    StaleEpoch {
        /// The change's epoch.
        got: u64,
        /// The adopted claim's epoch.
        current: u64,
    },
    /// A change in the current epoch from someone other than its controller
    /// (`not_controller`).
    #[error("{from} is not the controller of epoch {epoch} ({controller} is)")]
    NotController {
        /// The sender.
        from: String,
        /// The epoch.
        epoch: u64,
        /// The claim's controller.
        controller: String,
    },
}

impl PeerSyncError {
    /// The error code reported to JavaScript.
    pub fn code(&self) -> ErrorCode {
        match self {
            PeerSyncError::Malformed(_) => ErrorCode::BadPayload,
            PeerSyncError::Seal(_) => ErrorCode::Forbidden,
            PeerSyncError::NoKey => ErrorCode::Closed,
            PeerSyncError::StaleEpoch { .. } => ErrorCode::EpochMismatch,
            PeerSyncError::NotController { .. } => ErrorCode::NotController,
        }
    }
}

/// Whether a `change` from `from` may be applied under the adopted `claim` (module docs).
/// `Ok(true)`: the change is from a newer epoch; adopt `Claim::new(change.epoch, from)` first.
pub fn check_change(
    claim: &Claim,
    from: &str,
    change: &MusicControl,
) -> Result<bool, PeerSyncError> {
    if change.epoch < claim.epoch {
        return Err(PeerSyncError::StaleEpoch {
            got: change.epoch,
            current: claim.epoch,
        });
    }
    if change.epoch > claim.epoch {
        return Ok(true);
    }
    if from != claim.controller {
        return Err(PeerSyncError::NotController {
            from: from.to_owned(),
            epoch: change.epoch,
            controller: claim.controller.clone(),
        });
    }
    Ok(false)
}

/// Seals and opens [`PeerSync`] messages of one room for one member (module docs).
#[derive(Debug)]
pub struct PeerSealer {
    key: RoomKey,
    room: String,
    me: String,
    prefix: [u8; 4],
    counter: u64,
    replay: ReplayWindow,
}

impl PeerSealer {
    /// A sealer for member `me` of `room` under `key`; `prefix` are 4 random bytes (never
    /// reuse a prefix with the same key and sender).
    pub fn new(
        key: RoomKey,
        room: impl Into<String>,
        me: impl Into<String>,
        prefix: [u8; 4],
    ) -> Self {
        PeerSealer {
            key,
            room: room.into(),
            me: me.into(),
            prefix,
            counter: 0,
            replay: ReplayWindow::new(),
        }
    }

    /// The key id.
    pub fn key_id(&self) -> u32 {
        self.key.id
    }

    /// `msg` as the outer Sync-lane value `{type: "sealed-sync", box}`.
    pub fn seal(&mut self, msg: &PeerSync) -> Value {
        self.counter += 1;
        let mut nonce = [0u8; 12];
        nonce[..4].copy_from_slice(&self.prefix);
        nonce[4..].copy_from_slice(&self.counter.to_be_bytes());
        let plain = serde_json::to_vec(msg).expect("peer sync messages are plain JSON");
        let env = seal::seal(&self.key, nonce, &self.room, &self.me, &plain);
        json!({
            "type": SEALED_SYNC_TYPE,
            "box": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(env),
        })
    }

    /// Whether `value` is a `sealed-sync` message (else it is for someone else).
    pub fn is_sealed(value: &Value) -> bool {
        value.get("type").and_then(Value::as_str) == Some(SEALED_SYNC_TYPE)
    }

    /// Opens a `sealed-sync` value from `from`. Errors: [`PeerSyncError::Malformed`],
    /// [`PeerSyncError::Seal`] (tampered, foreign key, replay).
    pub fn open(&mut self, from: &str, value: &Value) -> Result<PeerSync, PeerSyncError> {
        let b = value
            .get("box")
            .and_then(Value::as_str)
            .filter(|_| Self::is_sealed(value))
            .ok_or_else(|| PeerSyncError::Malformed("not a sealed-sync message".into()))?;
        let env = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(b)
            .map_err(|e| PeerSyncError::Malformed(e.to_string()))?;
        let plain = seal::open(&self.key, &self.room, from, &env)?;
        self.replay.check(from, &seal::envelope_nonce(&env)?)?;
        serde_json::from_slice(&plain).map_err(|e| PeerSyncError::Malformed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::sync::state::{MusicAction, MusicControlData};

    fn key() -> RoomKey {
        RoomKey::new(7, [9; 32])
    }

    fn change(epoch: u64, seq: u64) -> PeerSync {
        let state = RoomState::new(1000.0);
        let control =
            MusicControl::new(MusicAction::Pause, MusicControlData::default(), epoch, seq);
        let state = state.apply(&control, 1200.0).unwrap();
        PeerSync::Change { control, state }
    }

    #[test]
    fn seal_round_trip_and_replay() {
        let mut a = PeerSealer::new(key(), "r", "a", [1, 2, 3, 4]);
        let mut b = PeerSealer::new(key(), "r", "b", [5, 6, 7, 8]);
        let msg = change(1, 1);
        let v = a.seal(&msg);
        assert!(PeerSealer::is_sealed(&v));
        assert_eq!(b.open("a", &v).unwrap(), msg);
        assert_eq!(b.open("a", &v), Err(PeerSyncError::Seal(SealError::Replay)));
    }

    #[test]
    fn tampered_foreign_or_wrong_sender_is_rejected() {
        let mut a = PeerSealer::new(key(), "r", "a", [1; 4]);
        let mut b = PeerSealer::new(key(), "r", "b", [2; 4]);
        let v = a.seal(&change(1, 1));
        // Claimed by another sender.
        let e = b.open("c", &v).unwrap_err();
        assert_eq!(e, PeerSyncError::Seal(SealError::Tampered));
        assert_eq!(e.code(), ErrorCode::Forbidden);
        // One bit flipped.
        let mut s = v["box"].as_str().unwrap().to_owned();
        let last = s.pop().unwrap();
        s.push(if last == 'A' { 'B' } else { 'A' });
        let bad = json!({"type": SEALED_SYNC_TYPE, "box": s});
        assert!(matches!(b.open("a", &bad), Err(PeerSyncError::Seal(_))));
        // Another room's key.
        let mut other = PeerSealer::new(RoomKey::new(8, [9; 32]), "r", "a", [3; 4]);
        assert_eq!(
            b.open("a", &other.seal(&change(1, 1))),
            Err(PeerSyncError::Seal(SealError::ForeignKey(8)))
        );
        // Not sealed at all.
        let e = b.open("a", &json!({"type": "sync-state"})).unwrap_err();
        assert_eq!(e.code(), ErrorCode::BadPayload);
    }

    #[test]
    fn acceptance_rule() {
        let claim = Claim::new(3, "a");
        let c = |epoch| MusicControl::new(MusicAction::Play, MusicControlData::default(), epoch, 1);
        assert_eq!(check_change(&claim, "a", &c(3)), Ok(false));
        assert_eq!(check_change(&claim, "b", &c(4)), Ok(true));
        let stale = check_change(&claim, "a", &c(2)).unwrap_err();
        assert_eq!(stale.code(), ErrorCode::EpochMismatch);
        let usurper = check_change(&claim, "b", &c(3)).unwrap_err();
        assert_eq!(usurper.code(), ErrorCode::NotController);
    }

    #[test]
    fn claim_round_trips_as_json() {
        let m = PeerSync::Claim {
            claim: Claim::new(2, "b"),
            state: None,
        };
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["type"], "claim");
        assert_eq!(serde_json::from_value::<PeerSync>(v).unwrap(), m);
    }
}
