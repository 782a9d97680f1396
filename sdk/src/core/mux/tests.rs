//! Unit tests of [`Mux`] over an instant, lossless in-memory link (the seeded link model with
//! loss, reordering, partitions and restarts is `sdk/tests/mux_sim.rs`).

use super::*;

fn ms(v: u64) -> Millis {
    Millis::from_u64(v)
}

/// Two endpoints and the frames in flight between them (instant delivery, in order).
struct Pair {
    a: Mux,
    b: Mux,
    now: u64,
    a_events: Vec<MuxEvent>,
    b_events: Vec<MuxEvent>,
}

/// Drains `from` at `now`: its events into `events`, its frames into `to` (the transport
/// drains at once). Returns the frames moved.
fn flush(from: &mut Mux, to: &mut Mux, events: &mut Vec<MuxEvent>, now: Millis) -> usize {
    let mut moved = 0;
    loop {
        match from.poll_output(now) {
            MuxOutput::Event(e) => events.push(e),
            MuxOutput::Transmit(f) => {
                from.handle_transport_buffered(0);
                to.handle_input(&f, now);
                moved += 1;
            }
            MuxOutput::Timeout(_) => return moved,
        }
    }
}

impl Pair {
    fn new(cfg: MuxConfig) -> Pair {
        let mut b_cfg = cfg.clone();
        b_cfg.seed ^= 0xb0b;
        let mut p = Pair {
            a: Mux::new(cfg).unwrap(),
            b: Mux::new(b_cfg).unwrap(),
            now: 0,
            a_events: Vec::new(),
            b_events: Vec::new(),
        };
        p.a.handle_transport_resumed(ms(0));
        p.b.handle_transport_resumed(ms(0));
        p
    }

    /// Moves frames both ways until neither side has anything to send; returns frames moved.
    fn drive(&mut self) -> usize {
        let mut moved = 0;
        loop {
            let now = ms(self.now);
            let ab = flush(&mut self.a, &mut self.b, &mut self.a_events, now);
            let ba = flush(&mut self.b, &mut self.a, &mut self.b_events, now);
            moved += ab + ba;
            if ab + ba == 0 {
                return moved;
            }
        }
    }

    /// Advances time to the next deadline of either side and drives; `false` if none.
    fn step_timers(&mut self) -> bool {
        let next = [self.a.next_deadline(), self.b.next_deadline()]
            .into_iter()
            .flatten()
            .min();
        let Some(t) = next else { return false };
        self.now = self.now.max(t);
        self.a.handle_timeout(ms(self.now));
        self.b.handle_timeout(ms(self.now));
        self.drive();
        true
    }

    fn settle(&mut self) {
        self.drive();
        for _ in 0..100 {
            if self.a.is_idle() && self.b.is_idle() {
                return;
            }
            if !self.step_timers() {
                return;
            }
        }
    }

    fn b_messages(&self, lane: Lane) -> Vec<(u64, Vec<u8>)> {
        self.b_events
            .iter()
            .filter_map(|e| match e {
                MuxEvent::Message {
                    lane: l,
                    seq,
                    bytes,
                } if *l == lane => Some((*seq, bytes.clone())),
                _ => None,
            })
            .collect()
    }
}

fn cfg() -> MuxConfig {
    let mut c = MuxConfig::all_lanes(7);
    c.transport_high_water_bytes = None;
    c
}

#[test]
fn messages_round_trip_on_every_lane_and_are_acknowledged() {
    let mut p = Pair::new(cfg());
    for lane in Lane::ALL {
        for n in 0..3u8 {
            let id = p.a.send(lane, vec![lane.id(), n]).unwrap();
            assert_eq!(
                id,
                MsgId {
                    lane,
                    seq: u64::from(n) + 1
                }
            );
        }
    }
    p.settle();
    for lane in Lane::ALL {
        let got = p.b_messages(lane);
        assert_eq!(
            got,
            (0..3u8)
                .map(|n| (u64::from(n) + 1, vec![lane.id(), n]))
                .collect::<Vec<_>>()
        );
        assert_eq!(p.a.unacked_len(lane), 0, "{lane}");
    }
    assert!(p.a.is_idle() && p.b.is_idle());
    assert_eq!(p.a.stats().resumes, 1);
}

#[test]
fn large_messages_are_chunked_and_reassembled() {
    let mut p = Pair::new(cfg());
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    p.a.send(Lane::Data, big.clone()).unwrap();
    p.a.send(Lane::Data, Vec::new()).unwrap();
    p.drive();
    let got = p.b_messages(Lane::Data);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].1, big);
    assert!(got[1].1.is_empty());
    // 100 000 bytes in chunks of at most 16 KiB: 7 frames, plus the empty message.
    assert!(p.a.stats().frames_sent >= 8);
    assert_eq!(p.b.reassembly_bytes(), 0);
}

#[test]
fn control_overtakes_a_large_data_message_at_the_next_chunk() {
    let mut c = cfg();
    c.transport_high_water_bytes = Some(DEFAULT_CHUNK_BYTES);
    let mut p = Pair::new(c);
    p.drive();
    p.a.send(Lane::Data, vec![1; 1 << 20]).unwrap();
    // The transport takes one chunk, then is full.
    let first = p.a.next_transmit().unwrap();
    assert!(first.len() <= DEFAULT_CHUNK_BYTES);
    assert!(
        p.a.next_transmit().is_none(),
        "buffer at the high-water mark"
    );
    assert!(
        p.a.next_deadline().is_some(),
        "asks to be woken to re-check"
    );
    p.a.send(Lane::Control, b"ping".to_vec()).unwrap();
    p.a.handle_transport_buffered(0);
    let next = p.a.next_transmit().unwrap();
    assert_eq!(next[0], wire::TYPE_CHUNK);
    assert_eq!(
        next[1],
        Lane::Control.id(),
        "Control goes before the next Data chunk"
    );
}

#[test]
fn reliable_lane_refuses_at_queue_depth_then_drains() {
    let mut c = cfg();
    c.lanes[Lane::Messaging as usize - 1] = Some(LaneConfig {
        priority: 90,
        queue_depth: 2,
        reliable: true,
    });
    let mut p = Pair::new(c);
    p.a.send(Lane::Messaging, vec![1]).unwrap();
    p.a.send(Lane::Messaging, vec![2]).unwrap();
    let err = p.a.send(Lane::Messaging, vec![3]).unwrap_err();
    assert_eq!(
        err,
        MuxError::Backpressure {
            lane: Lane::Messaging,
            queue_depth: 2
        }
    );
    assert_eq!(err.code().as_str(), "backpressure");
    p.drive();
    assert!(p.a_events.contains(&MuxEvent::Drain {
        lane: Lane::Messaging
    }));
    assert_eq!(
        p.a_events
            .iter()
            .filter(|e| matches!(e, MuxEvent::Drain { .. }))
            .count(),
        1
    );
    p.a.send(Lane::Messaging, vec![3]).unwrap();
    p.settle();
    assert_eq!(p.b_messages(Lane::Messaging).len(), 3);
}

#[test]
fn unreliable_lane_drops_oldest_and_counts() {
    let mut p = Pair::new(cfg());
    p.a.handle_transport_lost();
    p.b.handle_transport_lost();
    let depth = Lane::Video.spec().queue_depth as usize;
    for n in 0..depth + 5 {
        p.a.send(Lane::Video, vec![n as u8]).unwrap();
        assert!(p.a.queued_len(Lane::Video) <= depth);
    }
    assert_eq!(p.a.dropped(Lane::Video), 5);
    assert_eq!(
        p.a.next_event(),
        Some(MuxEvent::Dropped {
            lane: Lane::Video,
            count: 5
        })
    );
    p.a.handle_transport_resumed(ms(10));
    p.b.handle_transport_resumed(ms(10));
    p.drive();
    let got = p.b_messages(Lane::Video);
    assert_eq!(got.len(), depth);
    assert_eq!(got[0].1, vec![5]);
}

#[test]
fn resume_resends_exactly_what_was_missed() {
    let mut p = Pair::new(cfg());
    for n in 1..=5u8 {
        p.a.send(Lane::Sync, vec![n]).unwrap();
    }
    // Deliver the resume handshake and two messages, then lose the transport.
    p.drive_some(2);
    p.a.handle_transport_lost();
    p.b.handle_transport_lost();
    p.b_events.clear();
    p.a.handle_transport_resumed(ms(100));
    p.b.handle_transport_resumed(ms(100));
    p.settle();
    let got: Vec<u64> = p.b_messages(Lane::Sync).iter().map(|m| m.0).collect();
    assert_eq!(got, vec![3, 4, 5], "no duplicate of 1 and 2, nothing lost");
    assert_eq!(p.a.unacked_len(Lane::Sync), 0);
}

impl Pair {
    /// Lets the resumes through, then only `n` frames from a to b.
    fn drive_some(&mut self, n: usize) {
        let fa = self.a.next_transmit().unwrap();
        let fb = self.b.next_transmit().unwrap();
        self.b.handle_input(&fa, ms(self.now));
        self.a.handle_input(&fb, ms(self.now));
        let mut chunks = 0;
        while chunks < n {
            let f = self.a.next_transmit().unwrap();
            chunks += usize::from(f[0] == wire::TYPE_CHUNK);
            self.b.handle_input(&f, ms(self.now));
        }
        while let Some(e) = self.b.next_event() {
            self.b_events.push(e);
        }
    }
}

#[test]
fn restarted_sender_is_a_discontinuity() {
    let mut p = Pair::new(cfg());
    p.a.send(Lane::Messaging, b"one".to_vec()).unwrap();
    p.settle();
    p.a.send(Lane::Messaging, b"lost".to_vec()).unwrap();
    p.a.handle_transport_lost();
    p.b.handle_transport_lost();
    let old_epoch = p.a.epoch(Lane::Messaging).unwrap();
    let mut c = cfg();
    c.seed = 99;
    p.a = Mux::new(c).unwrap();
    p.a.send(Lane::Messaging, b"fresh".to_vec()).unwrap();
    p.a.handle_transport_resumed(ms(5));
    p.b.handle_transport_resumed(ms(5));
    p.settle();
    let new_epoch = p.a.epoch(Lane::Messaging).unwrap();
    let ds: Vec<Discontinuity> = p
        .b_events
        .iter()
        .filter_map(|e| match e {
            MuxEvent::Discontinuity(d) => Some(*d),
            _ => None,
        })
        .collect();
    // Every reliable lane reports: the receiver cannot know what the old sender had queued.
    let reliable = Lane::ALL.iter().filter(|l| l.spec().reliable).count();
    assert_eq!(ds.len(), reliable);
    let d = *ds.iter().find(|d| d.lane == Lane::Messaging).unwrap();
    assert_eq!(
        d,
        Discontinuity {
            lane: Lane::Messaging,
            expected_epoch: old_epoch,
            expected_seq: 2,
            epoch: new_epoch,
            seq: 1,
            reason: DiscontinuityReason::PeerRestarted
        }
    );
    let got: Vec<Vec<u8>> = p
        .b_messages(Lane::Messaging)
        .into_iter()
        .map(|m| m.1)
        .collect();
    assert_eq!(got, vec![b"one".to_vec(), b"fresh".to_vec()]);
}

#[test]
fn lane_queue_is_bounded_in_bytes_too() {
    // Backpressure: the byte budget refuses before the queue depth (256) does.
    let mut c = cfg();
    c.max_queue_bytes = Some(1000);
    let mut p = Pair::new(c.clone());
    p.a.handle_transport_lost();
    for n in 0..3u8 {
        p.a.send(Lane::Messaging, vec![n; 300]).unwrap();
    }
    let err = p.a.send(Lane::Messaging, vec![9; 300]).unwrap_err();
    assert_eq!(err.code().as_str(), "backpressure");
    // One message larger than the budget still goes alone on an empty lane.
    p.a.send(Lane::Data, vec![1; 5000]).unwrap();
    assert_eq!(p.a.queued_len(Lane::Data), 1);

    // Forgetting (a relay to a detached member): the oldest go until the new one fits, and
    // the receiver hears of the gap.
    c.reliable_overflow = ReliableOverflow::ForgetOldest;
    let mut p = Pair::new(c);
    p.drive();
    p.a.handle_transport_lost();
    p.b.handle_transport_lost();
    for n in 1..=5u8 {
        p.a.send(Lane::Relay, vec![n; 300]).unwrap();
    }
    assert_eq!(p.a.queued_len(Lane::Relay), 3);
    assert_eq!(p.a.dropped(Lane::Relay), 2);
    p.a.handle_transport_resumed(ms(1));
    p.b.handle_transport_resumed(ms(1));
    p.settle();
    let got: Vec<u64> = p.b_messages(Lane::Relay).iter().map(|m| m.0).collect();
    assert_eq!(got, vec![3, 4, 5]);
    assert!(p.b_events.iter().any(|e| matches!(
        e,
        MuxEvent::Discontinuity(Discontinuity {
            expected_seq: 1,
            seq: 3,
            reason: DiscontinuityReason::HistoryLost,
            ..
        })
    )));
}

#[test]
fn forgetting_sender_reports_history_lost() {
    let mut c = cfg();
    c.reliable_overflow = ReliableOverflow::ForgetOldest;
    c.lanes[Lane::Relay as usize - 1] = Some(LaneConfig {
        priority: 10,
        queue_depth: 3,
        reliable: true,
    });
    let mut p = Pair::new(c);
    p.drive();
    p.a.handle_transport_lost();
    p.b.handle_transport_lost();
    for n in 1..=5u8 {
        p.a.send(Lane::Relay, vec![n]).unwrap();
    }
    assert_eq!(p.a.dropped(Lane::Relay), 2);
    p.a.handle_transport_resumed(ms(1));
    p.b.handle_transport_resumed(ms(1));
    p.settle();
    let got: Vec<u64> = p.b_messages(Lane::Relay).iter().map(|m| m.0).collect();
    assert_eq!(got, vec![3, 4, 5]);
    assert!(p.b_events.iter().any(|e| matches!(
        e,
        MuxEvent::Discontinuity(Discontinuity {
            expected_seq: 1,
            seq: 3,
            reason: DiscontinuityReason::HistoryLost,
            ..
        })
    )));
}

#[test]
fn peer_over_the_reassembly_budget_gets_a_typed_error() {
    let mut c = cfg();
    c.max_reassembly_bytes = 100_000;
    c.max_message_bytes = 100_000;
    let mut p = Pair::new(c);
    p.drive();
    // A hostile peer starts three 90 kB messages on three lanes at once.
    for (lane, seq) in [(Lane::Messaging, 1), (Lane::Sync, 1), (Lane::Data, 1)] {
        let mut f = Vec::new();
        ChunkHeader {
            lane,
            reliable: true,
            last: false,
            seq,
            index: 0,
            total: 90_000,
            floor: None,
        }
        .encode_into(&mut f);
        f.extend_from_slice(&[0; 1000]);
        p.b.handle_input(&f, ms(0));
    }
    let errs: Vec<MuxEvent> = std::iter::from_fn(|| p.b.next_event()).collect();
    assert_eq!(errs.len(), 2);
    for e in errs {
        let MuxEvent::Error(e) = e else {
            panic!("{e:?}")
        };
        assert!(e.is_fatal());
        assert_eq!(e.code().as_str(), "reassembly_limit");
    }
    assert!(p.b.reassembly_bytes() <= 100_000);
    // A message over the size limit is refused before any allocation.
    let mut f = Vec::new();
    ChunkHeader {
        lane: Lane::Relay,
        reliable: true,
        last: false,
        seq: 1,
        index: 0,
        total: 1 << 40,
        floor: None,
    }
    .encode_into(&mut f);
    f.push(0);
    p.b.handle_input(&f, ms(0));
    assert!(matches!(
        p.b.next_event(),
        Some(MuxEvent::Error(MuxError::Peer(
            PeerMisbehaved::MessageTooLarge { .. }
        )))
    ));
}

#[test]
fn acks_are_batched_and_delayed() {
    let mut p = Pair::new(cfg());
    p.drive();
    p.a.send(Lane::Messaging, vec![1]).unwrap();
    p.a.send(Lane::Sync, vec![2]).unwrap();
    let f1 = p.a.next_transmit().unwrap();
    let f2 = p.a.next_transmit().unwrap();
    p.b.handle_input(&f1, ms(0));
    p.b.handle_input(&f2, ms(0));
    assert!(p.b.next_transmit().is_none(), "ack delayed");
    assert_eq!(p.b.next_deadline(), Some(20));
    p.b.handle_timeout(ms(20));
    let ack = p.b.next_transmit().unwrap();
    match Frame::decode(&ack).unwrap() {
        Frame::Ack(acks) => assert_eq!(acks.len(), 2, "one frame for both lanes"),
        f => panic!("{f:?}"),
    }
    p.a.handle_input(&ack, ms(20));
    assert_eq!(p.a.unacked_len(Lane::Messaging), 0);
    assert_eq!(p.a.unacked_len(Lane::Sync), 0);
}

#[test]
fn api_misuse_and_bad_config() {
    let mut m = Mux::new(MuxConfig::for_lanes(&[Lane::Control], 1)).unwrap();
    assert_eq!(
        m.send(Lane::Data, vec![]),
        Err(MuxError::Api(ApiMisuse::LaneNotConfigured(Lane::Data)))
    );
    assert!(matches!(
        m.send(Lane::Control, vec![0; (16 << 20) + 1]),
        Err(MuxError::Api(ApiMisuse::MessageTooLarge { .. }))
    ));
    let mut c = MuxConfig::all_lanes(1);
    c.chunk_bytes = 10;
    assert!(matches!(
        Mux::new(c).err(),
        Some(MuxError::Api(ApiMisuse::InvalidConfig(_)))
    ));
    // Garbage from the peer is a typed error, never a panic.
    m.handle_transport_resumed(ms(0));
    m.handle_input(&[0x10, 1], ms(0));
    assert!(matches!(
        m.next_event(),
        Some(MuxEvent::Error(MuxError::Decode(_)))
    ));
}

/// §11.6: each side's first resume echoes nothing; a side that gets a resume which does not
/// echo its own nonce sends its resume again at once, now echoing the peer's; a resume that
/// echoes its nonce ends the retries.
#[test]
fn a_side_sends_a_second_resume_once_it_learns_the_peers_nonce() {
    let mut p = Pair::new(cfg());
    let ra = p.a.next_transmit().expect("a's first resume");
    let rb = p.b.next_transmit().expect("b's first resume");
    let (Ok(Frame::Resume(a1)), Ok(Frame::Resume(b1))) = (Frame::decode(&ra), Frame::decode(&rb))
    else {
        panic!("resumes first");
    };
    assert_eq!((a1.echo, b1.echo), (0, 0));
    assert!(
        p.a.next_transmit().is_none(),
        "no chunk before the peer's resume"
    );
    p.a.handle_input(&rb, ms(0));
    let Ok(Frame::Resume(a2)) = Frame::decode(&p.a.next_transmit().expect("second resume")) else {
        panic!("a resume again");
    };
    assert_eq!((a2.nonce, a2.echo), (a1.nonce, b1.nonce));
    // b hears a's second resume (echoing b): b's retries stop; b still owes a's echo.
    p.b.handle_input(&ra, ms(0));
    p.b.handle_input(&wire::encode_resume(&a2), ms(0));
    let Ok(Frame::Resume(b2)) = Frame::decode(&p.b.next_transmit().expect("b echoes a")) else {
        panic!("b's second resume");
    };
    assert_eq!(b2.echo, a1.nonce);
    p.a.handle_input(&wire::encode_resume(&b2), ms(0));
    assert!(p.a.next_transmit().is_none() && p.b.next_transmit().is_none());
    assert_eq!(p.a.next_deadline(), None, "no resume retry once echoed");
}

/// §11.6: on an ordered transport a chunk before the peer's resume is a fatal typed error
/// (`protocol_violation`), never silently ignored; on a lossy one (retransmission on) it is
/// dropped, since the resume may have been lost and the chunk will come again.
#[test]
fn a_chunk_before_the_resume_is_a_protocol_violation_on_ordered_transports() {
    let chunk = {
        let mut f = Vec::new();
        ChunkHeader {
            lane: Lane::Messaging,
            reliable: true,
            last: true,
            seq: 1,
            index: 0,
            total: 1,
            floor: None,
        }
        .encode_into(&mut f);
        f.push(7);
        f
    };
    let mut m = Mux::new(cfg()).unwrap();
    m.handle_transport_resumed(ms(0));
    m.handle_input(&chunk, ms(0));
    match m.next_event() {
        Some(MuxEvent::Error(e)) => {
            assert!(matches!(
                e,
                MuxError::Peer(PeerMisbehaved::ChunkBeforeResume {
                    lane: Lane::Messaging,
                    seq: 1
                })
            ));
            assert!(e.is_fatal());
            assert_eq!(e.code().as_str(), "protocol_violation");
        }
        other => panic!("{other:?}"),
    }
    let mut lossy = cfg();
    lossy.retransmit_timeout_ms = Some(200);
    let mut m = Mux::new(lossy).unwrap();
    m.handle_transport_resumed(ms(0));
    m.handle_input(&chunk, ms(0));
    assert_eq!(m.next_event(), None);
}
