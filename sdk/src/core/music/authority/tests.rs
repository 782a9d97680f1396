//! The authority machine driven with a virtual clock: the rules of PROTOCOL.md §12.2, §12.3,
//! §13.9, §13.15 and the settled points of issue 13 (point 8).

use super::*;
use serde_json::json;

const T0: u64 = 1_735_689_600_031;

fn sid(n: u8) -> SessionId {
    SessionId::from_random_bytes([n; 16])
}

fn room(members: &[Member]) -> Authority {
    Authority::new(
        AuthorityConfig::default(),
        ChangeLimits::DEFAULT,
        members,
        None,
        T0,
    )
}

fn msg(value: Value, from: SessionId) -> Inbound {
    parse(value, &sender_key(from, None)).expect("parses")
}

fn control(action: &str, data: Value, epoch: u64, sequence: u64) -> Value {
    json!({"type": "music-control", "action": action, "data": data, "epoch": epoch, "sequence": sequence})
}

/// The room-wide states and controls of `out`, in order.
fn states(out: &Output) -> Vec<RoomState> {
    out.deliveries
        .iter()
        .filter_map(|d| match (&d.to, &d.message) {
            (To::Room, Message::State(s)) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

fn controls(out: &Output) -> Vec<MusicControl> {
    out.deliveries
        .iter()
        .filter_map(|d| match (&d.to, &d.message) {
            (To::Room, Message::Control(c)) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

/// Issue 13 point 8: a fresh room is at epoch 0, sequence 0 with no controller; a claim
/// needs no `data.to` (one naming someone else still claims for the sender) and opens epoch
/// 1 at sequence 0; the DJ's first change is (1, 1).
#[test]
fn a_fresh_room_starts_at_epoch_0_and_a_claim_needs_no_to() {
    let (a, b) = (sid(1), sid(2));
    let members = [(a, None), (b, None)];
    let mut r = room(&members);
    assert_eq!(r.state().version(), (0, 0));
    assert_eq!(r.state().controller_id, None);
    let joined = r.join(&members, b);
    assert_eq!(
        joined.deliveries,
        vec![Delivery {
            to: To::Member(b),
            message: Message::State(r.state().clone())
        }]
    );

    // A change before anyone claimed is not the controller's.
    let out = r.handle(&members, a, msg(control("play", json!({}), 0, 1), a), T0);
    assert_eq!(
        out.refusal.map(|e| e.code()),
        Some(ErrorCode::NotController)
    );

    // The claim: no `data.to`, and a `to` naming someone else would not matter.
    let out = r.handle(
        &members,
        a,
        msg(control("handover", json!({"to": b.to_string()}), 0, 1), a),
        T0,
    );
    assert_eq!(out.refusal, None);
    let (s, c) = (&states(&out)[0], &controls(&out)[0]);
    assert_eq!(
        s.controller_id,
        Some(a.to_string()),
        "the claim is the sender's"
    );
    assert_eq!((s.version(), (c.epoch, c.sequence)), ((1, 0), (1, 0)));

    let mut r = room(&members);
    let out = r.handle(
        &members,
        a,
        msg(control("handover", json!({}), 0, 1), a),
        T0,
    );
    assert_eq!(states(&out)[0].controller_id, Some(a.to_string()));
    assert_eq!(states(&out)[0].version(), (1, 0));
    let out = r.handle(&members, a, msg(control("play", json!({}), 1, 1), a), T0);
    assert_eq!(out.refusal, None);
    assert_eq!(
        states(&out)[0].version(),
        (1, 1),
        "the epoch's first change"
    );
    assert_eq!(
        out.deliveries.iter().map(|d| d.to).collect::<Vec<_>>(),
        vec![To::Room, To::Room],
        "the state, then the control, to the room"
    );
}

/// Issue 13 point 8: a resolved handover carries the epoch it opens and sequence 0, the
/// version of the state it produced; the new DJ's next change is (epoch, 1), and a receiver
/// that applied the state ignores the control (not newer).
#[test]
fn a_resolved_handover_carries_the_new_epoch_and_sequence_0() {
    let (a, b) = (sid(1), sid(2));
    let members = [(a, None), (b, None)];
    let mut r = room(&members);
    r.handle(
        &members,
        a,
        msg(control("handover", json!({}), 0, 1), a),
        T0,
    );
    r.handle(&members, a, msg(control("play", json!({}), 1, 1), a), T0);
    r.handle(&members, a, msg(control("pause", json!({}), 1, 2), a), T0);
    let out = r.handle(
        &members,
        a,
        msg(control("handover", json!({"to": b.to_string()}), 1, 3), a),
        T0 + 10,
    );
    let (s, c) = (&states(&out)[0], &controls(&out)[0]);
    assert_eq!(s.version(), (2, 0));
    assert_eq!((c.epoch, c.sequence), s.version());
    assert_eq!(c.data.to.as_deref(), Some(b.to_string().as_str()));
    assert_eq!(c.apply_at, Some((T0 + 10) as f64), "at once");
    let out = r.handle(
        &members,
        b,
        msg(control("seek", json!({"position": 3.0}), 2, 1), b),
        T0 + 20,
    );
    assert_eq!(states(&out)[0].version(), (2, 1));
    // The old DJ's change from epoch 1 is refused (it missed the handover).
    let out = r.handle(
        &members,
        a,
        msg(control("play", json!({}), 1, 4), a),
        T0 + 30,
    );
    assert_eq!(
        out.refusal.map(|e| e.code()),
        Some(ErrorCode::NotController)
    );
    let out = r.handle(
        &members,
        b,
        msg(control("play", json!({}), 1, 9), b),
        T0 + 30,
    );
    assert_eq!(
        out.refusal.as_ref().map(AuthorityError::code),
        Some(ErrorCode::EpochMismatch),
        "a change from an epoch before the room's: {out:?}"
    );
    assert!(out.refusal.unwrap().wire_text().contains("resync"));
    // A duplicate is ignored silently.
    let out = r.handle(
        &members,
        b,
        msg(control("seek", json!({"position": 3.0}), 2, 1), b),
        T0 + 40,
    );
    assert_eq!(out, Output::default());
}

/// Issue 13 point 8: times and counters are JSON integers on the wire, `playbackRate` and
/// `position` floats; a fractional `data.timestamp` comes back rounded, and an RTT that makes
/// a fractional lead still gives a whole `applyAt`.
#[test]
fn times_and_counters_are_integers_on_the_wire_rates_are_floats() {
    let a = sid(1);
    let members = [(a, None)];
    let mut r = room(&members);
    r.rtt(a, 301.3);
    r.rtt(a, 287.9);
    r.handle(
        &members,
        a,
        msg(control("handover", json!({}), 0, 1), a),
        T0,
    );
    let out = r.handle(
        &members,
        a,
        msg(
            control(
                "play",
                json!({"position": 12.0, "timestamp": 1_735_689_600_030.6_f64}),
                1,
                1,
            ),
            a,
        ),
        T0 + 7,
    );
    let state = out.deliveries[0].message.to_value();
    let change = out.deliveries[1].message.to_value();
    let text = serde_json::to_string(&state).unwrap() + &serde_json::to_string(&change).unwrap();
    assert!(state["data"]["referenceTime"].is_u64(), "{state}");
    assert!(change["applyAt"].is_u64(), "{change}");
    assert_eq!(change["data"]["timestamp"], json!(1_735_689_600_031_u64));
    assert!(text.contains("\"timestamp\":1735689600031,"), "{text}");
    for v in [
        &state["data"]["epoch"],
        &state["data"]["sequence"],
        &change["epoch"],
        &change["sequence"],
    ] {
        assert!(v.is_u64(), "{v}");
    }
    assert!(state["data"]["playbackRate"].is_f64());
    assert!(text.contains("\"playbackRate\":1.0"), "{text}");
    assert!(state["data"]["position"].is_f64());
    // Reading accepts integers and floats alike.
    let back: RoomState = serde_json::from_value(state["data"].clone()).unwrap();
    assert_eq!(back.ref_server_ms, r.state().ref_server_ms);
}

#[test]
fn parse_refuses_what_no_room_accepts() {
    let a = sid(1);
    let key = sender_key(a, None);
    let code = |v: Value, key: &str| parse(v, key).err().map(|e| e.code());
    assert_eq!(
        code(json!({"type": "sync-state", "data": {}}), &key),
        Some(ErrorCode::InvalidArgument)
    );
    assert_eq!(
        code(json!({"type": "music-control", "action": 3}), &key),
        Some(ErrorCode::BadPayload)
    );
    assert_eq!(
        code(json!({"type": "music-changes", "changes": 1}), &key),
        Some(ErrorCode::BadPayload)
    );
    let push = |origin: &str| {
        json!({"type": "music-changes", "changes": [
            {"origin": origin, "localSeq": 1, "epoch": 0, "timestamp": 1.0, "op": {}}]})
    };
    assert_eq!(
        code(push("device:B/x"), "device:A"),
        Some(ErrorCode::Forbidden)
    );
    assert_eq!(code(push("device:A/x"), "device:A"), None);
    assert_eq!(code(push("free-name"), "device:A"), None);
    assert_eq!(code(push(&format!("{key}/1")), &key), None);
    let seed = json!({"type": "music-changes", "changes": [], "seed": {"trackId": "t",
        "isPlaying": true, "position": -1.0, "referenceTime": 1.0, "playbackRate": 1.0,
        "controllerId": null, "epoch": 1, "sequence": 1}});
    assert_eq!(code(seed, &key), Some(ErrorCode::InvalidArgument));
    assert!(is_music_message(&json!({"type": "music-changes"})));
    assert!(!is_music_message(&json!({"position": 1})));
}

fn change(origin: &str, local_seq: u64, epoch: u64, timestamp: f64, position: f64) -> Value {
    json!({"origin": origin, "localSeq": local_seq, "epoch": epoch, "timestamp": timestamp,
        "op": {"type": "music-control", "action": "seek", "data": {"position": position},
               "sequence": local_seq, "epoch": epoch}})
}

/// PROTOCOL.md §13.9: changes applied once, in per-origin order, the epoch raised above the
/// push's; one room-wide state then the pusher's ack; nothing again for a repeat.
#[test]
fn pushed_changes_apply_once_in_order_and_raise_the_epoch() {
    let a = sid(1);
    let members = [(a, None)];
    let mut r = room(&members);
    let push = json!({"type": "music-changes", "epoch": 4,
        "changes": [change("d1", 2, 3, 20.0, 2.0), change("d1", 1, 3, 30.0, 1.0)]});
    let out = r.handle(&members, a, msg(push.clone(), a), T0);
    let [Delivery {
        to: To::Room,
        message: Message::State(s),
    }, Delivery {
        to: To::Member(to),
        message: Message::Ack(ack),
    }] = out.deliveries.as_slice()
    else {
        panic!("{out:?}")
    };
    assert_eq!(*to, a);
    assert_eq!((ack.applied, ack.skipped, ack.epoch), (2, 0, 5));
    assert_eq!(s.position_s, 2.0, "d1's 1 before its 2 although 2 is older");
    assert_eq!(
        out.deliveries[1].message.to_value()["type"],
        "music-changes-ack"
    );
    let again = r.handle(&members, a, msg(push, a), T0);
    assert!(
        matches!(again.deliveries.as_slice(), [Delivery { message: Message::Ack(ack), .. }] if ack.applied == 0)
    );
    let over = json!({"type": "music-changes", "epoch": 5 + 2_000_000, "changes": []});
    let out = r.handle(&members, a, msg(over, a), T0);
    assert_eq!(out.refusal.map(|e| e.code()), Some(ErrorCode::OutOfRange));
}

/// PROTOCOL.md §13.15: the DJ record is reported for persistence when the identity or epoch
/// changes, and a restored DJ's first session back takes the role (the room hears it).
#[test]
fn the_dj_record_is_reported_and_restored() {
    let (a, b) = (sid(1), sid(2));
    let id = Some("device:A".to_owned());
    let members = [(a, id.clone())];
    let mut r = room(&members);
    let out = r.handle(
        &members,
        a,
        msg(control("handover", json!({}), 0, 1), a),
        T0,
    );
    assert_eq!(
        out.dj,
        Some(DjWrite::Set {
            identity: "device:A".into(),
            epoch: 1
        })
    );
    let out = r.handle(&members, a, msg(control("play", json!({}), 1, 1), a), T0);
    assert_eq!(out.dj, None, "a playback change is not persisted");
    let out = r.leave(a, true, T0 + 5);
    assert_eq!(out.dj, Some(DjWrite::Clear));

    let mut r = Authority::new(
        AuthorityConfig::default(),
        ChangeLimits::DEFAULT,
        &[],
        Some(("device:A".into(), 7)),
        T0,
    );
    assert_eq!(r.state().epoch, 7);
    let members = [(b, None)];
    let out = r.join(&members, b);
    assert!(matches!(out.deliveries[0].to, To::Member(_)));
    let out = r.handle(
        &members,
        b,
        msg(control("handover", json!({}), 7, 1), b),
        T0,
    );
    assert_eq!(
        out.refusal.map(|e| e.code()),
        Some(ErrorCode::NotController)
    );
    let members = [(b, None), (a, id)];
    let out = r.join(&members, a);
    let s = &states(&out)[0];
    assert_eq!(
        (s.controller_id.clone(), s.version()),
        (Some(a.to_string()), (8, 0))
    );
    assert_eq!(
        out.dj,
        Some(DjWrite::Set {
            identity: "device:A".into(),
            epoch: 8
        })
    );
}

/// PROTOCOL.md §17 "Music rooms": a room taken over from its snapshot (through JSON, as kept
/// in Redis) keeps its track, position, controller, DJ identity and change log; its epoch
/// moves past the old one and up to the new authority's fencing token; a change pushed
/// before the takeover is not applied again.
#[test]
fn a_room_taken_over_from_its_snapshot_keeps_its_state_and_fences_its_epoch() {
    let (a, b) = (sid(1), sid(2));
    let id = Some("device:A".to_owned());
    let members = [(a, id.clone()), (b, None)];
    let mut r = room(&members);
    let claim = control("handover", json!({}), 0, 1);
    r.handle(&members, a, msg(claim, a), T0);
    let track = json!({"trackId": "t", "track": {"id": "t", "title": "T", "url": "/media/t.wav", "duration": 60.0}});
    r.handle(
        &members,
        a,
        msg(control("change-track", track, 1, 1), a),
        T0,
    );
    let push =
        json!({"type": "music-changes", "epoch": 1, "changes": [change("d1", 1, 1, 30.0, 7.0)]});
    r.handle(&members, a, msg(push.clone(), a), T0);
    let before = r.state().clone();
    let json = serde_json::to_string(&r.snapshot()).unwrap();
    let snap: Snapshot = serde_json::from_str(&json).unwrap();
    for (fence, epoch) in [
        (1, before.epoch + 1),
        (before.epoch + 10, before.epoch + 10),
    ] {
        let (mut t, state) = Authority::resume(
            AuthorityConfig::default(),
            ChangeLimits::DEFAULT,
            &members,
            snap.clone(),
            fence,
        )
        .unwrap();
        assert_eq!((state.epoch, state.sequence), (epoch, 0));
        assert_eq!(state.track_id.as_deref(), Some("t"));
        assert_eq!(state.position_s, before.position_s);
        assert_eq!(state.controller_id, Some(a.to_string()));
        assert_eq!(t.dj_identity(), Some("device:A"));
        let again = t.handle(&members, a, msg(push.clone(), a), T0);
        assert!(
            matches!(again.deliveries.as_slice(), [Delivery { message: Message::Ack(ack), .. }] if ack.applied == 0),
            "{again:?}"
        );
    }
}
