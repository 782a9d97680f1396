//! The music room's side of the offline queue ([`RoomQueue`], PROTOCOL.md §13.12) on the real
//! IndexedDB: a record stores the state it produced in the same record, the JS
//! `OfflineChangeQueue` keeps that state through its own mutations, a reopen restores both,
//! and an acknowledgement that empties the queue drops the state.

use super::{OfflineChangeQueue, RoomQueue};
use crate::core::p2p::changes::VersionVector;
use serde_json::json;
use wasm_bindgen::convert::TryFromJsValue;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::wasm_bindgen_test;

#[wasm_bindgen_test]
async fn room_queue_keeps_the_state_with_its_changes() {
    let room = format!(
        "room-queue-{:016x}",
        crate::wasm::global::random_u64().unwrap()
    );
    let (q, restored) = RoomQueue::open(&room, "dev-1").await.unwrap();
    assert!(restored.pending.is_empty() && restored.room_state.is_none());
    let s1 =
        json!({"trackId": "t", "position": 40.5, "isPlaying": true, "epoch": 2, "sequence": 1});
    let (c1, n) = q
        .record(json!({"action": "seek"}), 2, 1000.0, &s1)
        .await
        .unwrap();
    assert_eq!((c1.local_seq, n), (1, 1));
    let s2 =
        json!({"trackId": "t", "position": 41.25, "isPlaying": false, "epoch": 2, "sequence": 2});
    let (c2, n) = q
        .record(json!({"action": "pause"}), 2, 2000.0, &s2)
        .await
        .unwrap();
    assert_eq!((c2.local_seq, n), (2, 2));

    // The JS class on the same record: its mutations keep `roomState`, its snapshot shows it.
    let js = JsFuture::from(OfflineChangeQueue::open(
        room.clone().into(),
        "dev-1".into(),
    ))
    .await
    .unwrap();
    let js = OfflineChangeQueue::try_from_js_value(js).unwrap();
    JsFuture::from(js.carry(crate::wasm::convert::value_to_js(&json!([
        {"origin": "dev-9", "localSeq": 4, "epoch": 1, "timestamp": 5.0, "op": {}}
    ]))))
    .await
    .unwrap();
    let snap = JsFuture::from(js.snapshot()).await.unwrap();
    let snap = crate::wasm::convert::value_from_js(&snap).unwrap();
    assert_eq!(snap["roomState"], s2);
    assert_eq!(snap["pending"].as_array().unwrap().len(), 2);

    // A reopen (a reload) restores changes and state.
    let (q, restored) = RoomQueue::open(&room, "dev-1").await.unwrap();
    assert_eq!(restored.pending.len(), 3);
    assert_eq!(restored.room_state, Some(s2));
    assert_eq!(q.unacknowledged().await.unwrap().len(), 3);

    // Partly acknowledged: the state stays; all acknowledged: it goes.
    let vv: VersionVector = [("dev-1".to_owned(), 1)].into_iter().collect();
    assert_eq!(q.acknowledge(vv).await.unwrap(), 2);
    assert!(RoomQueue::open(&room, "dev-1")
        .await
        .unwrap()
        .1
        .room_state
        .is_some());
    let vv: VersionVector = [("dev-1".to_owned(), 2), ("dev-9".to_owned(), 4)]
        .into_iter()
        .collect();
    assert_eq!(q.acknowledge(vv).await.unwrap(), 0);
    let (_, restored) = RoomQueue::open(&room, "dev-1").await.unwrap();
    assert!(restored.pending.is_empty() && restored.room_state.is_none());
    let snap = JsFuture::from(js.snapshot()).await.unwrap();
    let snap = crate::wasm::convert::value_from_js(&snap).unwrap();
    assert!(snap.get("roomState").is_none());
    js.close();
}
