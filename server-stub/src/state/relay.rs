//! Delivery of relayed and server messages: the per-receiver encodings are built once per
//! encoding **outside** the registry lock ([`Encoded::build`]), then the lock is taken to push
//! them into the receivers' outbound sides. WebSocket relays ([`crate::ws`]), SSE `POST`s
//! ([`crate::sse`]), signaling on the Messaging lane and music deliveries all come through here.

use super::AppState;
use crate::cluster::resume::RelayKey;
use crate::music::Delivery;
use crate::registry::encoded::{Encoded, Variant};
use crate::registry::route::{wanted_encodings, Target};
use p3_lanes::core::frame::{FrameHeader, SessionId};
use p3_lanes::core::lane::{Encoding, Lane};
use p3_lanes::core::mux::{Discontinuity, DiscontinuityReason};
use serde_json::{json, Value};
use std::time::Instant;

/// Largest header of a relayed Data frame: kind, lane, flags, 10-byte seq varint, 5-byte
/// dictionary varint, `from`. Relays are refused (`frame_too_large`) if header plus payload
/// could exceed `--max-frame-bytes`.
pub(crate) const RELAY_HEADER_MAX: usize = 3 + 10 + 5 + 16;

/// What a relay leaves behind besides its delivery.
#[derive(Clone, Debug, Default)]
pub(crate) struct RelayNote {
    /// Recorded in the receivers' SSE histories.
    pub(crate) history: bool,
    /// Its place in its cluster room's stream, noted in the multiplexed receivers' resume
    /// logs ([`crate::cluster::resume`]).
    pub(crate) key: Option<RelayKey>,
}

impl RelayNote {
    /// Recorded in SSE histories; not a cluster room's relay.
    pub(crate) const HISTORY: RelayNote = RelayNote {
        history: true,
        key: None,
    };
}

/// What a relay did.
#[derive(Debug, Default)]
pub(crate) struct Relayed {
    /// Receivers whose queue or lane was full: they did not get it (answer `backpressure`).
    pub(crate) refused: Vec<SessionId>,
    /// The frame size, bytes, that receivers in another encoding would have needed, over
    /// `--max-frame-bytes` (answer `frame_too_large`): they did not get it.
    pub(crate) too_large: Option<usize>,
}

impl AppState {
    /// Relays `value` on `lane` from `sender` to `targets`: the sender's `original` bytes for
    /// receivers in its encoding, one transcoding per other encoding needed (outside the
    /// registry lock), then one registry lock to queue it (and record it as `note` says).
    pub(crate) fn deliver_relay(
        &self,
        sender: SessionId,
        lane: Lane,
        targets: &[Target],
        value: &Value,
        original: Option<Variant<'_>>,
        note: RelayNote,
    ) -> Relayed {
        if targets.is_empty() {
            return Relayed::default();
        }
        let max = (self.config.max_frame_bytes, RELAY_HEADER_MAX);
        let encoded = Encoded::build(
            value,
            original,
            wanted_encodings(targets),
            &self.dict,
            Some(max),
        );
        let refused = self.registry().deliver(
            Some(sender),
            lane,
            targets,
            &encoded,
            note.history,
            note.key.as_ref(),
        );
        // Metrics (crate::pulse): one message per receiver that got it, in its encoding.
        let (mut messages, mut bytes) = (0u64, 0u64);
        for t in targets.iter().filter(|t| !refused.contains(&t.id())) {
            if let Some(v) = encoded.get(t.encoding) {
                messages += 1;
                bytes += v.bytes.len() as u64;
            }
        }
        self.pulse().metrics().sent(lane, messages, bytes);
        Relayed {
            refused,
            too_large: encoded.too_large,
        }
    }

    /// Server-originated messages (no `from`), in order: the receivers' encodings are read
    /// under a brief lock, each message is encoded once per encoding outside it, then one lock
    /// queues them all. Never dropped silently: a full queue closes that socket with 1013.
    pub(crate) fn deliver_server(&self, deliveries: &[Delivery]) {
        if deliveries.is_empty() {
            return;
        }
        let wanted: Vec<Vec<Encoding>> = {
            let reg = self.registry();
            deliveries
                .iter()
                .map(|d| {
                    let mut all: Vec<Encoding> = Vec::new();
                    for e in d.to.iter().flat_map(|&to| reg.server_encodings(to, d.lane)) {
                        if !all.contains(&e) {
                            all.push(e);
                        }
                    }
                    all
                })
                .collect()
        };
        let encoded: Vec<Encoded<'_>> = deliveries
            .iter()
            .zip(wanted)
            .map(|(d, w)| Encoded::build(&d.message, None, w, &self.dict, None))
            .collect();
        let mut reg = self.registry();
        for (d, e) in deliveries.iter().zip(&encoded) {
            for &to in &d.to {
                reg.send_server(to, d.lane, e);
            }
        }
    }

    /// A client → server discontinuity: `sid`'s multiplexer (socket `conn_id`) lost messages
    /// on a reliable lane before the server got them (`history-lost`: it forgot them;
    /// `peer-restarted`: it restarted with them unacknowledged). The relay receivers of that
    /// lane (the sender's room) would otherwise never hear of the gap, so each gets, in order
    /// with the sender's messages on that lane, a relayed Data message from the sender whose
    /// payload is the SDK's discontinuity event shape (PROTOCOL.md §11.6):
    /// `{type: "discontinuity", lane, expectedEpoch, expectedSeq, epoch, seq, reason}`.
    /// A receiver whose lane is full is closed with 1013, as for any protocol message.
    /// `joined-mid-stream` is not relayed: it means this server's session is new and the
    /// messages before the floor were acknowledged (so relayed) by an earlier session.
    pub(crate) fn relay_discontinuity(&self, sid: SessionId, conn_id: u64, d: &Discontinuity) {
        let reason = match d.reason {
            DiscontinuityReason::HistoryLost => "history-lost",
            DiscontinuityReason::PeerRestarted => "peer-restarted",
            DiscontinuityReason::JoinedMidStream => return,
        };
        tracing::info!(session = %sid, lane = d.lane.id(), reason, "client discontinuity relayed to the room");
        let h = FrameHeader::data(d.lane, Encoding::Json, 0, 0);
        let targets = match self.registry().route(sid, conn_id, &h, Instant::now()) {
            Ok(Ok(t)) => t,
            // Not in a room (or lacking the lane): nobody receives its relays.
            _ => return,
        };
        let value = json!({
            "type": "discontinuity",
            "lane": d.lane.id(),
            "expectedEpoch": d.expected_epoch,
            "expectedSeq": d.expected_seq,
            "epoch": d.epoch,
            "seq": d.seq,
            "reason": reason,
        });
        let relayed = self.deliver_relay(sid, d.lane, &targets, &value, None, RelayNote::HISTORY);
        // A notice is a protocol message: never dropped silently. A receiver too full to take
        // it is closed with 1013 (it reconnects and resynchronises).
        let mut reg = self.registry();
        for r in relayed.refused {
            reg.close_full(r);
        }
    }
}
