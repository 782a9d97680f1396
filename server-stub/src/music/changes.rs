//! Changes made while the server was away, pushed back when it returns (issue #5 "changes made
//! offline that the server has not seen are pushed, not lost"; seed 004 Phase 3 "server
//! wins"; PROTOCOL.md §13.2, §13.3, §13.9).
//!
//! A member of a lane room sends, on the Sync lane without `to`, [`ChangesPush`]: `{type:
//! "music-changes", epoch?, changes: [{origin, localSeq, epoch, timestamp, op}]}`. The room's
//! music authority ([`crate::music`]) then, holding only that room's lock:
//! 1. moves the room's epoch above the highest epoch the push names (its `epoch` and every
//!    change's), [`RoomAuthority::raise_epoch_above`]: the server's claim beats every claim
//!    made without it;
//! 2. reconciles the changes into the room's [`ChangeLog`] with the core's rules: each
//!    `(origin, localSeq)` at most once and in `localSeq` order per origin, the batch sorted by
//!    `(timestamp, origin, localSeq)`, appended after what the log has (never rewritten);
//! 3. applies each newly logged change's `op` (a `music-control`, with or without its `type`)
//!    to the room state, whoever controls the room ([`RoomAuthority::apply_offline`]);
//!    handovers and invalid operations are logged (so the device drops them) but change
//!    nothing (`skipped`);
//! 4. if the state changed, sends every member the new `sync-state` once (not one per change),
//!    then answers the pusher with [`ChangesAck`] `{type: "music-changes-ack", versionVector,
//!    epoch, applied, skipped, appliedOrder}`: the device drops every change the version
//!    vector covers.
//!
//! A push that is not that shape is refused with a Control `error` `bad_payload` (lane 7, the
//! frame's seq), before any lock; a sender in no room gets `not_in_room` ([`crate::music`]).

use super::{shared_clock_ms, MusicRoom, Output};
use p3_lanes::core::frame::SessionId;
use p3_lanes::core::p2p::changes::{
    apply_push, ChangeLimits, ChangeLog, ChangesAck, ChangesError, ChangesPush,
    MUSIC_CHANGES_ACK_TYPE,
};
use p3_lanes::core::sync::state::RoomAuthority;
use serde_json::Value;

/// Steps 1-3 of the module docs on one room ([`apply_push`], bounded by `limits`): returns the
/// ack and the state to broadcast, if it changed.
///
/// Errors: [`ChangesError`] (`limit_exceeded`, `out_of_range`, `invalid_argument`): the push
/// was refused whole, nothing applied.
fn reconcile(
    authority: &mut RoomAuthority,
    log: &mut ChangeLog,
    push: ChangesPush,
    now_ms: f64,
    limits: ChangeLimits,
) -> Result<(ChangesAck, Option<Value>), ChangesError> {
    let outcome = apply_push(authority, log, push, now_ms, limits)?;
    let state = outcome.changed.then(|| authority.snapshot().to_value());
    Ok((outcome.ack, state))
}

/// A checked `music-changes` push from `sid` into room `r` (named `room`, with `members`),
/// run under the room's lock: steps 1-4 of the module docs. A push over a bound, with an
/// out-of-range number or a seed that is not a playable state is refused whole (§13.9,
/// §13.14, §15), before it touches the room.
pub(super) fn handle_push(
    r: &mut MusicRoom,
    room: &str,
    members: &[SessionId],
    sid: SessionId,
    push: ChangesPush,
    limits: ChangeLimits,
) -> Output {
    let pushed = push.changes.len();
    let (ack, state) = match reconcile(
        &mut r.authority,
        &mut r.changes,
        push,
        shared_clock_ms(),
        limits,
    ) {
        Ok(done) => done,
        Err(e) => return Output::refused(e.code(), e.to_string()),
    };
    tracing::debug!(room, session = %sid, pushed, applied = ack.applied, skipped = ack.skipped,
        epoch = ack.epoch, "offline changes reconciled");
    let mut out = Output::default();
    if let Some(state) = state {
        out = out.to(members.to_vec(), state);
    }
    let mut ack = serde_json::to_value(&ack).unwrap_or_default();
    if let Some(obj) = ack.as_object_mut() {
        obj.insert("type".into(), MUSIC_CHANGES_ACK_TYPE.into());
    }
    out.to(vec![sid], ack)
}

#[cfg(test)]
mod tests {
    use super::*;
    use p3_lanes::core::p2p::changes::Change;
    use p3_lanes::core::sync::state::AuthorityConfig;
    use serde_json::json;

    fn change(origin: &str, local_seq: u64, epoch: u64, timestamp: f64, position: f64) -> Change {
        Change {
            origin: origin.into(),
            local_seq,
            epoch,
            timestamp,
            op: json!({"type": "music-control", "action": "seek", "data": {"position": position}, "sequence": local_seq, "epoch": epoch}),
        }
    }

    #[test]
    fn applied_once_in_order_and_epoch_raised() {
        let mut a = RoomAuthority::new(AuthorityConfig::default(), 1000.0);
        let mut log = ChangeLog::new(0);
        let push = ChangesPush {
            epoch: Some(4),
            changes: vec![change("d1", 2, 3, 20.0, 2.0), change("d1", 1, 3, 30.0, 1.0)],
            seed: None,
        };
        let (ack, state) = reconcile(
            &mut a,
            &mut log,
            push.clone(),
            1000.0,
            ChangeLimits::DEFAULT,
        )
        .unwrap();
        assert_eq!((ack.applied, ack.skipped, ack.epoch), (2, 0, 5));
        assert_eq!(ack.version_vector.get("d1"), Some(&2));
        // d1's 1 before its 2 although 2 is older: per-origin order wins.
        assert_eq!(a.state().position_s, 2.0);
        assert!(state.is_some());
        let (again, state) =
            reconcile(&mut a, &mut log, push, 1000.0, ChangeLimits::DEFAULT).unwrap();
        assert_eq!((again.applied, again.epoch), (0, 5));
        assert!(state.is_none(), "nothing changed");
        let bare = ChangesPush {
            epoch: None,
            changes: vec![Change {
                op: json!({"action": "handover", "data": {"to": "x"}, "sequence": 1}),
                ..change("d2", 1, 0, 5.0, 0.0)
            }],
            seed: None,
        };
        let (ack, _) = reconcile(&mut a, &mut log, bare, 1000.0, ChangeLimits::DEFAULT).unwrap();
        assert_eq!((ack.applied, ack.skipped), (1, 1));
    }

    #[test]
    fn seed_only_into_a_fresh_room_then_the_changes() {
        let mut seed = p3_lanes::core::sync::state::RoomState::new(900.0);
        seed.track_id = Some("a".into());
        seed.is_playing = true;
        seed.position_s = 10.0;
        seed.epoch = 3;
        seed.sequence = 4;
        let mut a = RoomAuthority::new(AuthorityConfig::default(), 1000.0);
        let mut log = ChangeLog::new(0);
        let push = ChangesPush {
            epoch: Some(3),
            changes: vec![change("d1", 1, 3, 20.0, 42.0)],
            seed: Some(seed.clone()),
        };
        let (ack, state) =
            reconcile(&mut a, &mut log, push, 1000.0, ChangeLimits::DEFAULT).unwrap();
        assert!(ack.seeded);
        assert_eq!(
            a.state().track_id.as_deref(),
            Some("a"),
            "the seed's track survives"
        );
        assert_eq!(
            a.state().position_s,
            42.0,
            "the offline seek applied after the seed"
        );
        assert!(a.state().is_playing);
        assert!(a.state().epoch > 3);
        assert!(state.is_some());
        let mut other = seed;
        other.track_id = Some("b".into());
        other.epoch = 50;
        let push = ChangesPush {
            epoch: Some(0),
            changes: vec![],
            seed: Some(other),
        };
        let (ack, _) = reconcile(&mut a, &mut log, push, 1000.0, ChangeLimits::DEFAULT).unwrap();
        assert!(!ack.seeded, "server wins over a later seed");
        assert_eq!(a.state().track_id.as_deref(), Some("a"));
    }
}
