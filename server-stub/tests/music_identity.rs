//! The DJ role belongs to an identity, not a session (issue 12 "Rooms, keys, control";
//! PROTOCOL.md §13.15), over real WebSockets with device keys (`auth.device`, ECDSA P-256
//! over a server nonce): a reconnecting DJ is DJ again without claiming; another identity's
//! claim is refused while the DJ is away within the grace; a handover moves the role; a
//! second server on the same `--state-dir` (a restart after `SIGKILL`: nothing but the file
//! survives) gives the role back to the identity; `music-changes` in another identity's
//! `origin` are refused `forbidden` and the real device's changes still apply.

mod common;

use common::{config, handshake_body, Peer, Received, TestServer};
use p3_lanes::core::auth::IdentityKind;
use p3_lanes::core::control::Control;
use p3_lanes::core::error::ErrorCode;
use p3_lanes::core::handshake::HandshakeResponse;
use p3_lanes::core::sync::state::{RoomState, SyncMessage};
use serde_json::{json, Value};
use std::path::PathBuf;

const SYNC: u8 = 7;
const ROOM: &str = "party";

/// A device (fixed key `seed`) signed in with a fresh nonce and connected; returns the peer
/// and its identity key.
async fn device(server: &TestServer, seed: u8) -> (Peer, String) {
    let mut body = handshake_body(&format!("dev-{seed}"), &["json"], &[1, SYNC]);
    body["auth"] = common::auth::device_auth(server, seed).await;
    let resp = server.handshake_raw(&body).await;
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    let hs: HandshakeResponse = resp.json().await.unwrap();
    let id = hs.identity.clone().expect("a verified device identity");
    assert_eq!(id.kind, IdentityKind::Device);
    let key = id.key();
    let mut peer = server.connect(&hs).await;
    peer.join(ROOM).await;
    (peer, key)
}

/// The next server Sync-lane message, or the next Control error as `Err(code)`.
async fn next(p: &mut Peer) -> Result<Value, ErrorCode> {
    loop {
        match p.recv().await {
            Received::Data(h, v) if h.from.is_none() => return Ok(v),
            Received::Control(_, Control::Error { code, .. }) => return Err(code),
            Received::Closed(c) => panic!("closed: {c:?}"),
            _ => continue,
        }
    }
}

async fn next_state(p: &mut Peer) -> RoomState {
    loop {
        let v = next(p).await.expect("no error");
        if let Ok(SyncMessage::SyncState { data }) = SyncMessage::from_value(v) {
            return data;
        }
    }
}

async fn send(p: &mut Peer, v: Value) {
    p.send_data(p3_lanes::core::lane::Lane::Sync, &v, None)
        .await;
}

fn claim() -> Value {
    json!({"type": "music-control", "action": "handover", "data": {}, "epoch": 0, "sequence": 1})
}

#[tokio::test]
async fn reconnect_keeps_dj_others_claim_refused_handover_works() {
    let server = TestServer::start(config()).await;
    let (mut a, key_a) = device(&server, 1).await;
    let (mut b, key_b) = device(&server, 2).await;
    send(&mut a, claim()).await;
    let s = next_state(&mut a).await;
    assert_eq!(s.controller_id, Some(a.sid().to_string()));
    assert_eq!(s.controller_identity.as_deref(), Some(key_a.as_str()));
    next_state(&mut b).await;
    // A's socket drops: the role waits for its identity.
    a.close().await;
    let away = next_state(&mut b).await;
    assert_eq!(away.controller_id, None);
    assert_eq!(away.controller_identity.as_deref(), Some(key_a.as_str()));
    send(&mut b, claim()).await;
    assert_eq!(
        next(&mut b).await,
        Err(ErrorCode::NotController),
        "B's claim refused"
    );
    // A's identity comes back in a new session: DJ again, nobody claimed.
    let (mut a2, _) = device(&server, 1).await;
    let back = next_state(&mut a2).await;
    assert_eq!(back.controller_id, Some(a2.sid().to_string()));
    assert!(back.epoch > away.epoch);
    assert_eq!(next_state(&mut b).await.controller_id, back.controller_id);
    // The DJ hands over: the role (and the identity) move to B.
    send(
        &mut a2,
        json!({"type": "music-control", "action": "handover", "data": {"to": b.sid().to_string()},
               "epoch": back.epoch, "sequence": 1}),
    )
    .await;
    let moved = next_state(&mut b).await;
    assert_eq!(moved.controller_id, Some(b.sid().to_string()));
    assert_eq!(moved.controller_identity.as_deref(), Some(key_b.as_str()));
}

#[tokio::test]
async fn a_restarted_server_on_the_same_state_dir_gives_the_role_back() {
    let dir: PathBuf = std::env::temp_dir().join(format!("p3-dj-it-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let first = TestServer::start_with(|c| c.state_dir = Some(dir.clone())).await;
    let (mut a, key_a) = device(&first, 1).await;
    send(&mut a, claim()).await;
    let before = next_state(&mut a).await;
    assert_eq!(before.controller_identity.as_deref(), Some(key_a.as_str()));
    // The first server is never shut down (as after SIGKILL): only the file carries over.
    let second = TestServer::start_with(|c| c.state_dir = Some(dir.clone())).await;
    let (mut b, _) = device(&second, 2).await;
    let s = next_state(&mut b).await;
    assert_eq!(s.controller_id, None);
    assert_eq!(s.controller_identity.as_deref(), Some(key_a.as_str()));
    assert!(s.epoch >= before.epoch, "the epoch never goes backwards");
    send(&mut b, claim()).await;
    assert_eq!(next(&mut b).await, Err(ErrorCode::NotController));
    let (mut a2, _) = device(&second, 1).await;
    let back = next_state(&mut a2).await;
    assert_eq!(
        back.controller_id,
        Some(a2.sid().to_string()),
        "DJ again without claiming"
    );
    assert!(back.epoch > before.epoch);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_push_in_another_identitys_origin_is_refused() {
    let server = TestServer::start(config()).await;
    let (mut a, key_a) = device(&server, 1).await;
    let (mut b, _) = device(&server, 2).await;
    let push = |origin: &str| {
        json!({"type": "music-changes", "epoch": 0, "changes": [{
            "origin": origin, "localSeq": 1, "epoch": 0, "timestamp": 1.0,
            "op": {"action": "seek", "data": {"position": 5.0}, "epoch": 0, "sequence": 1}}]})
    };
    let origin_a = format!("{key_a}/tab");
    send(&mut b, push(&origin_a)).await;
    assert_eq!(
        next(&mut b).await,
        Err(ErrorCode::Forbidden),
        "forged origin"
    );
    send(&mut b, push(&format!("session:{}", a.sid()))).await;
    assert_eq!(
        next(&mut b).await,
        Err(ErrorCode::Forbidden),
        "another session's origin"
    );
    // The real device's change is not a duplicate of the refused one.
    send(&mut a, push(&origin_a)).await;
    loop {
        let v = next(&mut a).await.expect("no error");
        if v["type"] == "music-changes-ack" {
            assert_eq!(v["applied"], 1, "{v}");
            break;
        }
    }
}

#[tokio::test]
async fn past_the_grace_another_identity_may_claim() {
    let server = TestServer::start_with(|c| c.dj_grace_s = 0).await;
    let (mut a, _) = device(&server, 1).await;
    let (mut b, key_b) = device(&server, 2).await;
    send(&mut a, claim()).await;
    next_state(&mut a).await;
    next_state(&mut b).await;
    a.close().await;
    let away = next_state(&mut b).await;
    assert_eq!(away.controller_id, None);
    // `--dj-grace-s 0`: A's identity left the moment its last session did.
    send(&mut b, claim()).await;
    let s = next_state(&mut b).await;
    assert_eq!(s.controller_id, Some(b.sid().to_string()));
    assert_eq!(s.controller_identity.as_deref(), Some(key_b.as_str()));
}

#[tokio::test]
async fn an_explicit_leave_frees_the_role_at_once() {
    let server = TestServer::start(config()).await;
    let (mut a, _) = device(&server, 1).await;
    let (mut b, _) = device(&server, 2).await;
    send(&mut a, claim()).await;
    next_state(&mut a).await;
    next_state(&mut b).await;
    // A says it leaves (within the default grace): the role is free, not kept for A.
    a.send_control(&Control::Leave { room: ROOM.into() }).await;
    let left = next_state(&mut b).await;
    assert_eq!((left.controller_id, left.controller_identity), (None, None));
    send(&mut b, claim()).await;
    assert_eq!(
        next_state(&mut b).await.controller_id,
        Some(b.sid().to_string())
    );
}
