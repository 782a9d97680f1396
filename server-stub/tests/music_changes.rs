//! Offline changes pushed back to the server (issue #5, PROTOCOL.md §13.9) over real
//! WebSockets: `music-changes` applied once per `(origin, localSeq)`, in the documented order,
//! acknowledged with the room's version vector; the room's epoch moves above every epoch it is
//! told about; bad pushes get typed errors; a fresh room (a restarted server) takes a member's
//! `seed`, a live room never (§13.14).

mod common;

use common::{config, Peer, Received, TestServer};
use p3_lanes::core::control::Control;
use p3_lanes::core::error::ErrorCode;
use p3_lanes::core::lane::Lane;
use serde_json::{json, Value};

/// The next server-originated Sync-lane message, skipping Control frames.
async fn next_sync(p: &mut Peer) -> Value {
    loop {
        match p.recv().await {
            Received::Data(h, v) => {
                assert_eq!(h.lane, Lane::Sync);
                assert_eq!(h.from, None, "from the server");
                return v;
            }
            Received::Control(_, Control::Error { code, error, .. }) => {
                panic!("unexpected error {code}: {error}")
            }
            Received::Control(..) => continue,
            Received::Closed(c) => panic!("closed: {c:?}"),
        }
    }
}

/// The next Sync message of `type` `kind` (others, e.g. a state before an ack, are skipped).
async fn next_of(p: &mut Peer, kind: &str) -> Value {
    loop {
        let v = next_sync(p).await;
        if v["type"] == kind {
            return v;
        }
    }
}

fn seek(origin: &str, local_seq: u64, epoch: u64, timestamp: f64, position: f64) -> Value {
    json!({"origin": origin, "localSeq": local_seq, "epoch": epoch, "timestamp": timestamp,
           "op": {"type": "music-control", "action": "seek", "data": {"position": position},
                  "epoch": epoch, "sequence": local_seq}})
}

async fn band(server: &TestServer) -> (Peer, Peer) {
    let mut a = server.peer("a", &[1, 7]).await;
    let mut b = server.peer("b", &[1, 7]).await;
    a.join("band").await;
    b.join("band").await;
    (a, b)
}

#[tokio::test]
async fn a_batch_pushed_twice_is_applied_once() {
    let server = TestServer::start(config()).await;
    let (mut a, mut b) = band(&server).await;
    let push = json!({"type": "music-changes", "epoch": 2,
        "changes": [seek("dev-a", 1, 2, 1000.0, 10.0), seek("dev-a", 2, 2, 2000.0, 20.0)]});
    a.send_data(Lane::Sync, &push, None).await;
    let state = next_of(&mut b, "sync-state").await;
    assert_eq!(state["data"]["position"], 20.0);
    assert_eq!(state["data"]["epoch"], 3, "above the pushed epoch 2");
    let ack = next_of(&mut a, "music-changes-ack").await;
    assert_eq!(ack["versionVector"], json!({"dev-a": 2}));
    assert_eq!(
        (ack["applied"].clone(), ack["epoch"].clone()),
        (json!(2), json!(3))
    );
    assert_eq!(ack["appliedOrder"], json!([["dev-a", 1], ["dev-a", 2]]));

    // The same batch again (the ack was lost, say): nothing applied, same vector, no state.
    a.send_data(Lane::Sync, &push, None).await;
    let again = next_of(&mut a, "music-changes-ack").await;
    assert_eq!(again["versionVector"], json!({"dev-a": 2}));
    assert_eq!(
        (again["applied"].clone(), again["appliedOrder"].clone()),
        (json!(0), json!([]))
    );
    b.expect_silence(150).await;
    // A gap (3 missing, 4 sent) waits; 3 arriving later releases both, in order.
    a.send_data(
        Lane::Sync,
        &json!({"type": "music-changes", "changes": [seek("dev-a", 4, 2, 4000.0, 40.0)]}),
        None,
    )
    .await;
    let ack = next_of(&mut a, "music-changes-ack").await;
    assert_eq!(
        (ack["applied"].clone(), ack["versionVector"].clone()),
        (json!(0), json!({"dev-a": 2}))
    );
    a.send_data(Lane::Sync, &json!({"type": "music-changes", "changes": [seek("dev-a", 4, 2, 4000.0, 40.0), seek("dev-a", 3, 2, 3000.0, 30.0)]}), None).await;
    let ack = next_of(&mut a, "music-changes-ack").await;
    assert_eq!(ack["appliedOrder"], json!([["dev-a", 3], ["dev-a", 4]]));
    assert_eq!(
        next_of(&mut b, "sync-state").await["data"]["position"],
        40.0
    );
}

#[tokio::test]
async fn two_devices_batches_interleave_by_timestamp_after_the_existing_log() {
    let server = TestServer::start(config()).await;
    let (mut a, mut b) = band(&server).await;
    // a carries b's changes too (it was the serverless controller): one batch, two origins,
    // shuffled. Order: (timestamp, origin, localSeq).
    let push = json!({"type": "music-changes", "changes": [
        seek("dev-a", 2, 1, 300.0, 3.0), seek("dev-b", 1, 1, 200.0, 2.0),
        seek("dev-a", 1, 1, 100.0, 1.0), seek("dev-b", 2, 1, 300.0, 4.0)]});
    a.send_data(Lane::Sync, &push, None).await;
    let ack = next_of(&mut a, "music-changes-ack").await;
    assert_eq!(
        ack["appliedOrder"],
        json!([["dev-a", 1], ["dev-b", 1], ["dev-a", 2], ["dev-b", 2]])
    );
    assert_eq!(next_of(&mut b, "sync-state").await["data"]["position"], 4.0);
    // b pushes its own queue: what a carried is covered; its later change with an earlier
    // timestamp goes after the log (never rewritten).
    let own = json!({"type": "music-changes", "changes": [
        seek("dev-b", 1, 1, 200.0, 2.0), seek("dev-b", 2, 1, 300.0, 4.0), seek("dev-b", 3, 1, 150.0, 1.5)]});
    b.send_data(Lane::Sync, &own, None).await;
    let ack = next_of(&mut b, "music-changes-ack").await;
    assert_eq!(ack["appliedOrder"], json!([["dev-b", 3]]));
    assert_eq!(ack["versionVector"], json!({"dev-a": 2, "dev-b": 3}));
    assert_eq!(next_of(&mut a, "sync-state").await["data"]["position"], 1.5);
}

#[tokio::test]
async fn the_room_epoch_moves_above_any_epoch_it_is_told() {
    let server = TestServer::start(config()).await;
    let (mut a, mut b) = band(&server).await;
    // a becomes the DJ (a claim): epoch 1.
    let claim = json!({"type": "music-control", "action": "handover", "data": {}, "epoch": 0, "sequence": 1});
    a.send_data(Lane::Sync, &claim, None).await;
    let s = next_of(&mut b, "sync-state").await;
    assert_eq!(s["data"]["epoch"], 1);
    let a_sid = a.sid().to_string();
    assert_eq!(s["data"]["controllerId"], json!(a_sid));
    next_of(&mut a, "music-control").await; // a's own claim, resolved
                                            // b was elected while serverless up to epoch 6: it tells the server (no changes).
    b.send_data(
        Lane::Sync,
        &json!({"type": "music-changes", "epoch": 6, "changes": []}),
        None,
    )
    .await;
    let s = next_of(&mut a, "sync-state").await;
    assert_eq!(s["data"]["epoch"], 7);
    assert_eq!(
        s["data"]["controllerId"],
        json!(a_sid),
        "the server's claim wins"
    );
    assert_eq!(next_of(&mut b, "music-changes-ack").await["epoch"], 7);
    // An epoch below the room's changes nothing.
    b.send_data(
        Lane::Sync,
        &json!({"type": "music-changes", "epoch": 3, "changes": []}),
        None,
    )
    .await;
    assert_eq!(next_of(&mut b, "music-changes-ack").await["epoch"], 7);
    a.expect_silence(100).await;
    // The DJ's change from the old epoch is refused; in the new epoch it applies.
    let old =
        json!({"type": "music-control", "action": "pause", "data": {}, "epoch": 1, "sequence": 1});
    let seq = a.send_data(Lane::Sync, &old, None).await;
    match a.expect_control().await {
        Control::Error {
            code, lane, seq: s, ..
        } => {
            assert_eq!(
                (code, lane, s),
                (ErrorCode::EpochMismatch, Some(7), Some(seq))
            )
        }
        other => panic!("expected epoch_mismatch, got {other:?}"),
    }
    let new =
        json!({"type": "music-control", "action": "pause", "data": {}, "epoch": 7, "sequence": 1});
    a.send_data(Lane::Sync, &new, None).await;
    assert_eq!(next_of(&mut b, "sync-state").await["data"]["sequence"], 1);
}

#[tokio::test]
async fn bad_pushes_get_typed_errors() {
    let server = TestServer::start(config()).await;
    let mut lone = server.peer("lone", &[1, 7]).await;
    let push = json!({"type": "music-changes", "changes": []});
    let seq = lone.send_data(Lane::Sync, &push, None).await;
    assert_eq!(
        lone.expect_error().await,
        (ErrorCode::NotInRoom, Some(7), Some(seq))
    );
    lone.join("r").await;
    for bad in [
        json!({"type": "music-changes", "changes": "nope"}),
        json!({"type": "music-changes", "changes": [{"origin": "d"}]}),
        json!({"type": "music-changes", "epoch": -1}),
    ] {
        let seq = lone.send_data(Lane::Sync, &bad, None).await;
        assert_eq!(
            lone.expect_error().await,
            (ErrorCode::BadPayload, Some(7), Some(seq)),
            "{bad}"
        );
    }
    lone.ping_pong().await;
}

/// issue 11: a push over a bound (`limit_exceeded`) or naming an epoch or `localSeq` no JS
/// client can hold, or an epoch far above the room's (`out_of_range`), is refused whole: the
/// room's epoch and log do not move, and a later good push is acknowledged as usual.
#[tokio::test]
async fn pushes_over_a_bound_or_out_of_range_are_refused_whole() {
    use p3_lanes::core::p2p::changes::MAX_CHANGES_PER_PUSH;
    use p3_lanes::core::sync::state::MAX_EPOCH_JUMP;
    let server = TestServer::start(config()).await;
    let (mut a, mut b) = band(&server).await;
    let many: Vec<Value> = (1..=MAX_CHANGES_PER_PUSH as u64 + 1)
        .map(|i| seek("d1", i, 0, i as f64, 1.0))
        .collect();
    for (bad, code) in [
        (
            json!({"type": "music-changes", "changes": many}),
            ErrorCode::LimitExceeded,
        ),
        (
            json!({"type": "music-changes", "epoch": u64::MAX, "changes": []}),
            ErrorCode::OutOfRange,
        ),
        (
            json!({"type": "music-changes", "epoch": MAX_EPOCH_JUMP + 1, "changes": []}),
            ErrorCode::OutOfRange,
        ),
        (
            json!({"type": "music-changes", "changes": [seek("d1", u64::MAX, 0, 1.0, 1.0)]}),
            ErrorCode::OutOfRange,
        ),
    ] {
        let seq = a.send_data(Lane::Sync, &bad, None).await;
        assert_eq!(
            next_error(&mut a).await,
            (code, Some(7), Some(seq)),
            "{code}"
        );
    }
    b.expect_silence(100).await;
    let good =
        json!({"type": "music-changes", "epoch": 2, "changes": [seek("d1", 1, 2, 1.0, 4.0)]});
    a.send_data(Lane::Sync, &good, None).await;
    let ack = next_of(&mut a, "music-changes-ack").await;
    assert_eq!(
        (ack["epoch"].clone(), ack["applied"].clone()),
        (json!(3), json!(1))
    );
    assert_eq!(ack["versionVector"], json!({"d1": 1}));
    assert_eq!(next_of(&mut b, "sync-state").await["data"]["epoch"], 3);
}

/// issue 11 "music-changes bomb": a Sync-lane payload over the lane's decode budget (a list
/// longer than twice `--max-changes-per-push`, or more values than the lane allows) is refused
/// with `payload_too_complex` before it is decoded whole; nothing of it reaches the room, and
/// the room goes on as before (a later good push is acknowledged as usual).
#[tokio::test]
async fn a_push_over_the_sync_lane_budget_is_payload_too_complex_and_the_room_is_unaffected() {
    use p3_lanes::core::p2p::changes::MAX_CHANGES_PER_PUSH;
    let server = TestServer::start(config()).await;
    let (mut a, mut b) = band(&server).await;
    let long: Vec<Value> = (1..=2 * MAX_CHANGES_PER_PUSH as u64 + 1)
        .map(|i| seek("d1", i, 0, i as f64, 1.0))
        .collect();
    // Fewer changes, but each one heavy: over the lane's values, not its list length.
    let heavy: Vec<Value> = (1..=MAX_CHANGES_PER_PUSH as u64)
        .map(|i| {
            let mut c = seek("d1", i, 0, i as f64, 1.0);
            c["op"]["data"]["pad"] = json!(vec![0; 40]);
            c
        })
        .collect();
    for bad in [long, heavy] {
        let push = json!({"type": "music-changes", "changes": bad});
        let seq = a.send_data(Lane::Sync, &push, None).await;
        assert_eq!(
            next_error(&mut a).await,
            (ErrorCode::PayloadTooComplex, Some(7), Some(seq))
        );
    }
    b.expect_silence(100).await;
    let good =
        json!({"type": "music-changes", "epoch": 2, "changes": [seek("d1", 1, 2, 1.0, 4.0)]});
    a.send_data(Lane::Sync, &good, None).await;
    let ack = next_of(&mut a, "music-changes-ack").await;
    assert_eq!(
        (ack["epoch"].clone(), ack["applied"].clone()),
        (json!(3), json!(1))
    );
    assert_eq!(next_of(&mut b, "sync-state").await["data"]["epoch"], 3);
}

/// The next Control `error` (`code`, lane, seq), skipping Sync-lane messages still queued.
async fn next_error(p: &mut Peer) -> (ErrorCode, Option<u8>, Option<u64>) {
    loop {
        match p.recv().await {
            Received::Control(
                _,
                Control::Error {
                    code, lane, seq, ..
                },
            ) => return (code, lane, seq),
            Received::Closed(c) => panic!("closed: {c:?}"),
            _ => continue,
        }
    }
}

/// A `MusicRoomState` a device followed before the server restarted (PROTOCOL.md §13.14).
fn seed_state(track: &str, epoch: u64, position: f64) -> Value {
    json!({"trackId": track, "track": {"id": track, "duration": 100.0}, "isPlaying": true,
           "position": position, "referenceTime": 1000.0, "playbackRate": 1.0,
           "controllerId": "old-session", "epoch": epoch, "sequence": 2})
}

#[tokio::test]
async fn seed_only_from_a_member_into_a_fresh_room_server_wins_after() {
    let server = TestServer::start(config()).await;
    let mut lone = server.peer("lone", &[1, 7]).await;
    let push = json!({"type": "music-changes", "changes": [], "seed": seed_state("x", 5, 10.0)});
    let seq = lone.send_data(Lane::Sync, &push, None).await;
    assert_eq!(
        lone.expect_error().await,
        (ErrorCode::NotInRoom, Some(7), Some(seq)),
        "only a member seeds"
    );

    let (mut a, mut b) = band(&server).await;
    // The DJ claims the role on the restarted server: a handover leaves the room fresh.
    let claim = json!({"type": "music-control", "action": "handover", "data": {}, "epoch": 0, "sequence": 1});
    a.send_data(Lane::Sync, &claim, None).await;
    let claimed = next_of(&mut b, "sync-state").await;
    next_of(&mut a, "sync-state").await;
    assert_eq!(claimed["data"]["trackId"], Value::Null);

    // A seed that is not a playable state: typed error, room untouched.
    let mut bad = seed_state("x", 5, 10.0);
    bad["playbackRate"] = json!(0.0);
    let seq = b
        .send_data(
            Lane::Sync,
            &json!({"type": "music-changes", "changes": [], "seed": bad}),
            None,
        )
        .await;
    assert_eq!(
        next_error(&mut b).await,
        (ErrorCode::InvalidArgument, Some(7), Some(seq))
    );

    // b's seed re-seeds the fresh room: its track and timeline, a's controller role, epoch up.
    b.send_data(Lane::Sync, &push, None).await;
    let seeded = next_of(&mut a, "sync-state").await["data"].clone();
    assert_eq!(
        (seeded["trackId"].clone(), seeded["isPlaying"].clone()),
        (json!("x"), json!(true))
    );
    assert_eq!(
        (seeded["position"].clone(), seeded["referenceTime"].clone()),
        (json!(10.0), json!(1000)),
        "times are integers on the wire (PROTOCOL.md §12.2)"
    );
    assert_eq!(seeded["controllerId"], claimed["data"]["controllerId"]);
    assert!(seeded["epoch"].as_u64().unwrap() > 5, "{seeded}");
    let ack = next_of(&mut b, "music-changes-ack").await;
    assert_eq!(ack["seeded"], json!(true));

    // Server wins: a later seed (even with a higher epoch) does not overwrite the live room.
    let later = json!({"type": "music-changes", "changes": [], "seed": seed_state("y", 50, 70.0)});
    a.send_data(Lane::Sync, &later, None).await;
    let ack = next_of(&mut a, "music-changes-ack").await;
    assert_eq!(ack["seeded"], json!(false));
    let mut c = server.peer("c", &[1, 7]).await;
    c.join("band").await;
    let snapshot = next_of(&mut c, "sync-state").await["data"].clone();
    assert_eq!(
        (snapshot["trackId"].clone(), snapshot["position"].clone()),
        (json!("x"), json!(10.0)),
        "a late joiner gets the seeded state"
    );
}

#[tokio::test]
async fn a_live_room_is_never_seeded() {
    let server = TestServer::start(config()).await;
    let (mut a, _b) = band(&server).await;
    // An offline change makes the room live; a seed pushed after it is ignored.
    a.send_data(
        Lane::Sync,
        &json!({"type": "music-changes", "changes": [seek("dev-a", 1, 0, 1000.0, 30.0)]}),
        None,
    )
    .await;
    assert_eq!(
        next_of(&mut a, "music-changes-ack").await["seeded"],
        json!(false)
    );
    let push = json!({"type": "music-changes", "changes": [], "seed": seed_state("x", 9, 10.0)});
    a.send_data(Lane::Sync, &push, None).await;
    assert_eq!(
        next_of(&mut a, "music-changes-ack").await["seeded"],
        json!(false)
    );
    let mut c = server.peer("c", &[1, 7]).await;
    c.join("band").await;
    let snapshot = next_of(&mut c, "sync-state").await["data"].clone();
    assert_eq!(
        (snapshot["trackId"].clone(), snapshot["position"].clone()),
        (Value::Null, json!(30.0))
    );
}
