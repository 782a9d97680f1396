//! The SSE hub of one session (PROTOCOL.md §14.3): a bounded history per lane of what the
//! session received (the same messages its WebSocket gets: relays, server data, Control
//! messages), each with an event id that increases across the session's lanes, and the `watch`
//! its streams wait on. Streams read the history from their cursor, so a stream that reconnects
//! loses nothing the history still holds, and gets an explicit `discontinuity` for each lane
//! whose history forgot part of what it missed. A leaf: it knows only the core's SSE shapes.

use p3_lanes::core::frame::SessionId;
use p3_lanes::core::lane::Lane;
use p3_lanes::core::sse::{SseDiscontinuity, REASON_HISTORY_LOST};
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

/// One retained message of a lane.
#[derive(Debug)]
struct Record {
    id: u64,
    seq: u64,
    /// The [`p3_lanes::core::sse::SseMessage`] JSON.
    data: Arc<str>,
}

/// The bounded history of one lane.
#[derive(Debug, Default)]
struct LaneHistory {
    events: VecDeque<Record>,
    bytes: usize,
    /// Id of the newest forgotten event (0: none).
    forgotten_through: u64,
    /// Next per-lane seq, from 1.
    next_seq: u64,
}

/// What a stream reads next (see [`SseHub::poll`]).
#[derive(Debug)]
pub(crate) enum Item {
    /// A retained message.
    Message { lane: Lane, id: u64, data: Arc<str> },
    /// The lane forgot messages after the stream's cursor.
    Discontinuity(SseDiscontinuity),
}

/// Per-session SSE state: the bounded per-lane history and the streams' wake-up.
#[derive(Debug)]
pub(crate) struct SseHub {
    /// The last event id assigned (ids start at 1 and increase across lanes).
    last_id: u64,
    lanes: [LaneHistory; 8],
    /// Carries `last_id`; streams wait on it. Dropped with the session, which ends them.
    wake: watch::Sender<u64>,
    /// Open streams (the session does not expire while any is open and read).
    pub(crate) streams: usize,
    /// When each open stream was last polled by its connection (ms of
    /// [`crate::registry::outbound::mono_ms`]): a stream counts as activity only while it is
    /// read ([`SseHub::read_within`]).
    pub(crate) polled: Vec<Arc<AtomicU64>>,
    /// Bumped by [`SseHub::close_streams`]: streams opened before end.
    generation: u64,
    limit_events: usize,
    limit_bytes: usize,
}

impl SseHub {
    /// A hub keeping at most `limit_events` messages and `limit_bytes` bytes of data per lane.
    pub(crate) fn new(limit_events: usize, limit_bytes: usize) -> SseHub {
        SseHub {
            last_id: 0,
            lanes: Default::default(),
            wake: watch::channel(0).0,
            streams: 0,
            polled: Vec::new(),
            generation: 0,
            limit_events: limit_events.max(1),
            limit_bytes,
        }
    }

    /// Records a message on `lane` whose payload is `payload_json` (JSON text), from `from`
    /// (`None`: a server message), and wakes the streams. Forgets the lane's oldest messages
    /// beyond the limits (the newest is always kept).
    pub(crate) fn push_json(&mut self, lane: Lane, from: Option<SessionId>, payload_json: &str) {
        let h = &mut self.lanes[lane as usize - 1];
        h.next_seq = h.next_seq.max(1);
        let seq = h.next_seq;
        h.next_seq += 1;
        let from = from
            .map(|f| format!(",\"from\":\"{f}\""))
            .unwrap_or_default();
        let data: Arc<str> = format!(
            "{{\"lane\":{},\"seq\":{seq}{from},\"payload\":{payload_json}}}",
            lane.id()
        )
        .into();
        self.last_id += 1;
        h.bytes += data.len();
        h.events.push_back(Record {
            id: self.last_id,
            seq,
            data,
        });
        while h.events.len() > 1
            && (h.events.len() > self.limit_events || h.bytes > self.limit_bytes)
        {
            if let Some(old) = h.events.pop_front() {
                h.bytes -= old.data.len();
                h.forgotten_through = old.id;
            }
        }
        self.wake.send_replace(self.last_id);
    }

    /// [`SseHub::push_json`] of a JSON value.
    pub(crate) fn push_value(&mut self, lane: Lane, from: Option<SessionId>, value: &Value) {
        let text = serde_json::to_string(value).unwrap_or_else(|_| "null".into());
        self.push_json(lane, from, &text);
    }

    /// The last event id assigned (0: none yet).
    pub(crate) fn last_id(&self) -> u64 {
        self.last_id
    }

    /// The seq the next message on `lane` gets.
    pub(crate) fn next_seq(&self, lane: Lane) -> u64 {
        self.lanes[lane as usize - 1].next_seq.max(1)
    }

    /// Whether an open stream was polled within `stall_ms` before `now_ms`: one that was not
    /// is stalled (its client stopped reading) and no longer keeps the session alive.
    pub(crate) fn read_within(&self, now_ms: u64, stall_ms: u64) -> bool {
        self.polled
            .iter()
            .any(|p| now_ms.saturating_sub(p.load(Ordering::Relaxed)) <= stall_ms)
    }

    /// Bumped by [`SseHub::close_streams`]: a stream opened in another generation ends.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Wakes on every new event (and on [`SseHub::close_streams`]).
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.wake.subscribe()
    }

    /// Ends every open stream (they reconnect and resume with `Last-Event-ID`).
    pub(crate) fn close_streams(&mut self) -> usize {
        self.generation += 1;
        self.wake.send_replace(self.last_id);
        self.streams
    }

    /// Up to `max` items for a stream of `lanes` whose cursor is `after`: first a
    /// discontinuity for each lane that forgot messages after the cursor (once per loss:
    /// `reported` keeps, per lane, the forgotten id last reported), then the retained messages
    /// after the cursor, in id order.
    pub(crate) fn poll(
        &self,
        lanes: &[Lane],
        after: u64,
        reported: &mut [u64; 8],
        max: usize,
    ) -> Vec<Item> {
        let mut out = Vec::new();
        for &lane in lanes {
            let h = &self.lanes[lane as usize - 1];
            let i = lane as usize - 1;
            if h.forgotten_through > after && h.forgotten_through > reported[i] {
                reported[i] = h.forgotten_through;
                out.push(Item::Discontinuity(SseDiscontinuity {
                    lane: lane.id(),
                    last_event_id: after,
                    seq: h.events.front().map_or(h.next_seq.max(1), |r| r.seq),
                    reason: REASON_HISTORY_LOST.into(),
                }));
            }
        }
        let mut msgs: Vec<(u64, Lane, &Arc<str>)> = Vec::new();
        for &lane in lanes {
            let h = &self.lanes[lane as usize - 1];
            let start = h.events.partition_point(|r| r.id <= after);
            msgs.extend(
                h.events
                    .range(start..)
                    .take(max)
                    .map(|r| (r.id, lane, &r.data)),
            );
        }
        msgs.sort_unstable_by_key(|m| m.0);
        msgs.truncate(max);
        out.extend(msgs.into_iter().map(|(id, lane, data)| Item::Message {
            lane,
            id,
            data: data.clone(),
        }));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(items: &[Item]) -> Vec<u64> {
        items
            .iter()
            .filter_map(|i| match i {
                Item::Message { id, .. } => Some(*id),
                Item::Discontinuity(_) => None,
            })
            .collect()
    }

    #[test]
    fn history_is_bounded_and_reports_what_it_forgot_once() {
        let mut hub = SseHub::new(3, usize::MAX);
        for i in 0..5 {
            hub.push_value(Lane::Messaging, None, &Value::from(i));
        }
        hub.push_value(Lane::Data, None, &Value::from(9));
        let mut reported = [0; 8];
        let items = hub.poll(&[Lane::Messaging, Lane::Data], 1, &mut reported, 64);
        match &items[0] {
            Item::Discontinuity(d) => {
                assert_eq!((d.lane, d.last_event_id, d.seq), (2, 1, 3));
                assert_eq!(d.reason, REASON_HISTORY_LOST);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(ids(&items), vec![3, 4, 5, 6]);
        // Polling again from the same cursor does not repeat the report.
        let again = hub.poll(&[Lane::Messaging], 1, &mut reported, 64);
        assert_eq!(ids(&again), vec![3, 4, 5]);
        assert_eq!(again.len(), 3);
        // A cursor within the history gets no report.
        let mut fresh = [0; 8];
        let tail = hub.poll(&[Lane::Messaging], 4, &mut fresh, 64);
        assert_eq!(ids(&tail), vec![5]);
        assert_eq!(tail.len(), 1);
    }

    #[test]
    fn byte_budget_keeps_the_newest() {
        let mut hub = SseHub::new(100, 10);
        hub.push_json(Lane::Data, None, "\"a long payload\"");
        hub.push_json(Lane::Data, None, "\"another long one\"");
        assert_eq!(hub.lanes[4].events.len(), 1);
        assert_eq!(hub.lanes[4].forgotten_through, 1);
    }

    #[test]
    fn message_data_is_the_sse_message_shape() {
        let mut hub = SseHub::new(10, usize::MAX);
        let from = SessionId::from_random_bytes([1; 16]);
        hub.push_json(Lane::Messaging, Some(from), r#"{"text":"hi"}"#);
        let items = hub.poll(&[Lane::Messaging], 0, &mut [0; 8], 64);
        let Item::Message { data, .. } = &items[0] else {
            panic!()
        };
        let msg = p3_lanes::core::sse::parse_message(data).unwrap();
        assert_eq!((msg.lane, msg.seq, msg.from), (2, 1, Some(from)));
        assert_eq!(msg.payload, serde_json::json!({"text": "hi"}));
    }
}
