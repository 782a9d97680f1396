//! Music rooms over real WebSockets (issue #4, PROTOCOL.md §12): `music-control` goes to the
//! room's authority instead of being relayed; every member gets the resolved `sync-state` and
//! change, scheduled ahead on the shared clock; refusals are typed Control errors; joiners get
//! the state at once; the controller leaving frees the role; `GET /api/media` lists the media
//! folder; `--test-latency-ms` delays frames.

mod common;

use common::{config, Peer, Received, TestServer};
use p3_lanes::core::control::Control;
use p3_lanes::core::error::ErrorCode;
use p3_lanes::core::lane::Lane;
use p3_lanes::core::sync::state::{MusicControl, RoomState, SyncMessage};
use serde_json::{json, Value};
use server_stub::Config;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SYNC: u8 = 7;

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

/// The next Sync-lane Data frame (skipping Control frames such as peer-joined): it must come
/// from the server (no `from`).
async fn next_sync(p: &mut Peer) -> SyncMessage {
    loop {
        match p.recv().await {
            Received::Data(h, v) => {
                assert_eq!(h.lane, Lane::Sync);
                assert_eq!(h.from, None, "sync messages come from the server");
                return SyncMessage::from_value(v).expect("a sync message");
            }
            Received::Control(_, Control::Error { code, error, .. }) => {
                panic!("unexpected error {code}: {error}")
            }
            Received::Control(..) => continue,
            Received::Closed(c) => panic!("closed: {c:?}"),
        }
    }
}

async fn next_state(p: &mut Peer) -> RoomState {
    match next_sync(p).await {
        SyncMessage::SyncState { data } => data,
        other => panic!("expected sync-state, got {other:?}"),
    }
}

async fn next_control(p: &mut Peer) -> MusicControl {
    match next_sync(p).await {
        SyncMessage::MusicControl(c) => c,
        other => panic!("expected music-control, got {other:?}"),
    }
}

/// The next Control error, skipping other Control frames.
async fn next_error(p: &mut Peer) -> (ErrorCode, Option<u8>, Option<u64>) {
    loop {
        match p.recv().await {
            Received::Control(
                _,
                Control::Error {
                    code, lane, seq, ..
                },
            ) => return (code, lane, seq),
            Received::Control(..) => continue,
            other => panic!("expected an error, got {other:?}"),
        }
    }
}

fn control(action: &str, data: Value, epoch: u64, sequence: u64) -> Value {
    json!({"type": "music-control", "action": action, "data": data,
           "epoch": epoch, "sequence": sequence})
}

async fn member(server: &TestServer, name: &str, room: &str) -> Peer {
    let mut p = server.peer(name, &[1, SYNC]).await;
    p.join(room).await;
    p
}

#[tokio::test]
async fn the_authority_orders_changes_and_every_member_follows() {
    let server = TestServer::start(config()).await;
    let mut dj = member(&server, "dj", "music").await;
    let mut fan = member(&server, "fan", "music").await;
    let (dj_id, fan_id) = (dj.sid().to_string(), fan.sid().to_string());

    // A plain Sync message is still relayed.
    dj.send_data(Lane::Sync, &json!({"position": 1.5}), None)
        .await;
    let (h, v) = loop {
        if let Received::Data(h, v) = fan.recv().await {
            break (h, v);
        }
    };
    assert_eq!((h.from, v), (Some(dj.sid()), json!({"position": 1.5})));

    // Claiming the controller role: a handover to self while nobody holds it.
    dj.send_data(Lane::Sync, &control("handover", json!({}), 0, 1), None)
        .await;
    for p in [&mut dj, &mut fan] {
        let s = next_state(p).await;
        assert_eq!(s.controller_id.as_deref(), Some(dj_id.as_str()));
        assert_eq!(s.version(), (1, 0));
        let c = next_control(p).await;
        assert_eq!(c.data.from.as_deref(), Some(dj_id.as_str()));
        // PROTOCOL.md §12.3: a fresh room's claim opens epoch 1 at sequence 0, no `to` needed.
        assert_eq!((c.epoch, c.sequence), (1, 0));
    }

    // RTT reports raise the lead: the slowest member's one-way delay plus its jitter.
    for rtt in [300.0, 320.0, 280.0, 300.0] {
        fan.send_control(&Control::Ping {
            client_time: 1.0,
            rtt_ms: Some(rtt),
        })
        .await;
        assert!(matches!(fan.expect_control().await, Control::Pong { .. }));
    }

    // change-track then play: scheduled ahead on the shared clock, the same for everyone.
    let track = json!({"id": "t1", "title": "T1", "url": "/media/t1.wav", "duration": 60.0});
    dj.send_data(
        Lane::Sync,
        &control(
            "change-track",
            json!({"trackId": "t1", "track": track}),
            1,
            1,
        ),
        None,
    )
    .await;
    let sent = now_ms();
    dj.send_data(
        Lane::Sync,
        &control("play", json!({"position": 5.0}), 1, 2),
        None,
    )
    .await;
    let mut apply_ats = vec![];
    for p in [&mut dj, &mut fan] {
        let s = next_state(p).await;
        assert_eq!((s.track_id.as_deref(), s.is_playing), (Some("t1"), false));
        next_control(p).await;
        let s = next_state(p).await;
        assert!(s.is_playing);
        assert_eq!(s.position_s, 5.0);
        assert_eq!(s.version(), (1, 2));
        let c = next_control(p).await;
        assert_eq!(c.apply_at, Some(s.ref_server_ms));
        apply_ats.push(s.ref_server_ms);
    }
    assert_eq!(apply_ats[0], apply_ats[1]);
    let lead = apply_ats[0] - sent;
    // fan: srtt ≈ 300 → 150 one-way + 2 × rttvar + 80 margin; capped at 500.
    assert!((230.0..=510.0).contains(&lead), "lead {lead} ms");

    // Only the controller may change the room; the refusal is a typed error on lane 7.
    let seq = fan
        .send_data(Lane::Sync, &control("pause", json!({}), 1, 3), None)
        .await;
    assert_eq!(
        next_error(&mut fan).await,
        (ErrorCode::NotController, Some(SYNC), Some(seq))
    );
    // An epoch from the future, a bad change and a client's sync-state are refused too.
    let seq = dj
        .send_data(Lane::Sync, &control("pause", json!({}), 9, 1), None)
        .await;
    assert_eq!(
        next_error(&mut dj).await,
        (ErrorCode::EpochMismatch, Some(SYNC), Some(seq))
    );
    let seq = dj
        .send_data(Lane::Sync, &control("seek", json!({}), 1, 3), None)
        .await;
    assert_eq!(
        next_error(&mut dj).await,
        (ErrorCode::InvalidArgument, Some(SYNC), Some(seq))
    );
    let seq = dj
        .send_data(
            Lane::Sync,
            &json!({"type": "music-control", "action": 3}),
            None,
        )
        .await;
    assert_eq!(
        next_error(&mut dj).await,
        (ErrorCode::BadPayload, Some(SYNC), Some(seq))
    );
    let seq = dj
        .send_data(
            Lane::Sync,
            &json!({"type": "sync-state", "data": {"isPlaying": false}}),
            None,
        )
        .await;
    assert_eq!(
        next_error(&mut dj).await,
        (ErrorCode::InvalidArgument, Some(SYNC), Some(seq))
    );
    // A change from an older epoch is refused; a duplicate is ignored silently.
    let seq = dj
        .send_data(Lane::Sync, &control("pause", json!({}), 0, 7), None)
        .await;
    assert_eq!(
        next_error(&mut dj).await,
        (ErrorCode::EpochMismatch, Some(SYNC), Some(seq))
    );
    dj.send_data(
        Lane::Sync,
        &control("play", json!({"position": 5.0}), 1, 2),
        None,
    )
    .await;
    fan.expect_silence(200).await;

    // A late joiner gets the state at once, and computes the same position.
    let mut late = server.peer("late", &[1, SYNC]).await;
    late.join("music").await;
    let s = next_state(&mut late).await;
    assert_eq!(s.version(), (1, 2));
    assert!((s.position_at(apply_ats[0] + 1500.0) - 6.5).abs() < 1e-9);

    // Handover to the fan, who may then seek; the old DJ may not.
    dj.send_data(
        Lane::Sync,
        &control("handover", json!({"to": fan_id}), 1, 3),
        None,
    )
    .await;
    for p in [&mut dj, &mut fan, &mut late] {
        let s = next_state(p).await;
        assert_eq!(s.controller_id.as_deref(), Some(fan_id.as_str()));
        assert_eq!(s.version(), (2, 0));
        let c = next_control(p).await;
        assert_eq!(
            (c.epoch, c.sequence),
            (2, 0),
            "a resolved handover: new epoch, 0"
        );
    }
    fan.send_data(
        Lane::Sync,
        &control("seek", json!({"position": 42.0}), 2, 1),
        None,
    )
    .await;
    for p in [&mut dj, &mut fan, &mut late] {
        let s = next_state(p).await;
        assert_eq!((s.position_s, s.version()), (42.0, (2, 1)));
        next_control(p).await;
    }

    // The controller leaving frees the role for everyone (epoch + 1).
    fan.close().await;
    for p in [&mut dj, &mut late] {
        let s = next_state(p).await;
        assert_eq!(s.controller_id, None);
        assert_eq!(s.version(), (3, 0));
        assert!(s.is_playing, "playback goes on");
    }
}

#[tokio::test]
async fn a_room_without_music_sends_no_state_and_rtt_reports_are_harmless() {
    let server = TestServer::start(config()).await;
    let mut a = member(&server, "a", "plain").await;
    a.send_control(&Control::Ping {
        client_time: 2.0,
        rtt_ms: Some(40.0),
    })
    .await;
    assert!(matches!(a.expect_control().await, Control::Pong { .. }));
    let mut b = member(&server, "b", "plain").await;
    b.expect_silence(200).await;
    // A music-control outside any room is not_in_room.
    let mut c = server.peer("c", &[1, SYNC]).await;
    let seq = c
        .send_data(Lane::Sync, &control("play", json!({}), 0, 1), None)
        .await;
    assert_eq!(
        c.expect_error().await,
        (ErrorCode::NotInRoom, Some(SYNC), Some(seq))
    );
}

#[tokio::test]
async fn media_folder_is_listed_and_served_with_ranges() {
    let dir = std::env::temp_dir().join(format!("p3-media-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // 1 s of 8 kHz 16-bit mono silence.
    let mut wav = Vec::new();
    let data = 16_000u32;
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&[1, 0, 1, 0]);
    wav.extend_from_slice(&8000u32.to_le_bytes());
    wav.extend_from_slice(&16_000u32.to_le_bytes());
    wav.extend_from_slice(&[2, 0, 16, 0]);
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data.to_le_bytes());
    wav.resize(44 + data as usize, 0);
    std::fs::write(dir.join("a tone.wav"), &wav).unwrap();
    std::fs::write(dir.join("b.ogg"), b"OggS").unwrap();
    std::fs::write(dir.join("notes.txt"), b"not audio").unwrap();
    let server = TestServer::start(Config {
        media_dir: dir.clone(),
        ..config()
    })
    .await;
    let list: Value = server
        .http
        .get(server.url("/api/media"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        list,
        json!({"tracks": [
            {"id": "a tone.wav", "title": "a tone", "url": "/media/a%20tone.wav", "type": "audio/wav",
             "bytes": 16_044, "duration": 1.0},
            {"id": "b.ogg", "title": "b", "url": "/media/b.ogg", "type": "audio/ogg", "bytes": 4}
        ]})
    );
    let part = server
        .http
        .get(server.url("/media/a%20tone.wav"))
        .header("range", "bytes=44-45")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().await.unwrap().len(), 2);
    let _ = std::fs::remove_dir_all(&dir);
    // A missing folder is an empty list.
    let empty = TestServer::start(config()).await;
    let list: Value = empty
        .http
        .get(empty.url("/api/media"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list, json!({"tracks": []}));
}

#[tokio::test]
async fn test_latency_delays_both_directions_and_keeps_order() {
    let server = TestServer::start(Config {
        test_latency_ms: 60,
        test_jitter_ms: 20,
        ..config()
    })
    .await;
    let mut a = server.peer("a", &[1, 2]).await;
    let mut rtts = vec![];
    for i in 0..5 {
        let t = Instant::now();
        a.send_control(&Control::Ping {
            client_time: f64::from(i),
            rtt_ms: None,
        })
        .await;
        match a.expect_control().await {
            Control::Pong { client_time, .. } => assert_eq!(client_time, f64::from(i)),
            other => panic!("{other:?}"),
        }
        rtts.push(t.elapsed());
    }
    // Two one-way delays of 60 ± 20 ms each.
    for rtt in &rtts {
        assert!(
            *rtt >= Duration::from_millis(80) && *rtt < Duration::from_millis(400),
            "{rtts:?}"
        );
    }
    // A burst stays in order.
    for i in 0..20 {
        a.send_control(&Control::Ping {
            client_time: f64::from(100 + i),
            rtt_ms: None,
        })
        .await;
    }
    for i in 0..20 {
        match a.expect_control().await {
            Control::Pong { client_time, .. } => assert_eq!(client_time, f64::from(100 + i)),
            other => panic!("{other:?}"),
        }
    }
}
