//! A session's outbound side: its socket's bounded queue (v1 framing, PROTOCOL.md §5) or its
//! multiplexer (PROTOCOL.md §11), behind one sending interface, [`Transport::send`].
//!
//! - v1: every frame gets the socket's next seq for its lane (Control frames their own counter)
//!   and goes into a queue bounded by `--queue-frames` frames and `--queue-bytes` bytes, and
//!   by `--lane-queue-bytes` per lane (issue 11), which the socket's send task drains.
//! - Multiplexed: every frame is a §5 frame with seq 0 handed to the session's [`Mux`], which
//!   outlives sockets; the send task writes what [`Transport::mux_pump`] returns, woken by the
//!   connection's [`Notify`].
//!
//! Each session's [`Transport`] sits behind its own lock ([`SharedTransport`], [`lock`]): the
//! socket's tasks feed client input to the multiplexer and pump its output holding only that
//! lock, never the registry's (reassembly and batching are proportional to what clients send).
//! The registry takes it, nested inside its own, only to push a message. A lock poisoned by a
//! panic is not reused half-updated: the socket is closed with 1011 and the multiplexer
//! restarts with a new epoch (the client sees `peer-restarted`, as after a server restart).
//!
//! Callers decide what a refusal ([`SendError`]) means: a relay answers `backpressure` to its
//! sender, a protocol message (Control, server data) closes the socket with 1013
//! ([`Transport::send_or_close`]).

use crate::close::{self, CloseSignal};
use crate::cluster::resume::{RelayKey, ResumeLog};
use axum::body::Bytes;
use p3_lanes::core::control::Control;
use p3_lanes::core::dictionary::Dictionary;
use p3_lanes::core::drive::Millis;
use p3_lanes::core::error::ErrorCode;
use p3_lanes::core::frame::{FrameHeader, SessionId};
use p3_lanes::core::lane::{Encoding, Lane};
use p3_lanes::core::mux::{Mux, MuxError, MuxEvent, MuxOutput, PeerMisbehaved, ReliableOverflow};
use p3_lanes::core::payload;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;
use tokio::sync::{mpsc, Notify};

/// Monotonic ms since the first call: the multiplexers' clock.
pub(crate) fn mono_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    u64::try_from(START.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// A session's outbound side behind its own lock.
pub(crate) type SharedTransport = Arc<Mutex<Transport>>;

/// Locks a session's transport. Poisoned (a panic while it was held): the socket is closed
/// with 1011 and the multiplexer replaced by a fresh one with a new epoch, logged at `error`;
/// never reused half-updated.
pub(crate) fn lock(t: &Mutex<Transport>) -> MutexGuard<'_, Transport> {
    match t.lock() {
        Ok(g) => g,
        Err(poisoned) => {
            let mut g = poisoned.into_inner();
            tracing::error!("session transport lock poisoned by a panic: closing its socket (1011) and restarting its multiplexer");
            if let Some(c) = g.conn.take() {
                c.close.close(close::INTERNAL_ERROR, "internal error");
            }
            g.resume.clear();
            if let Some(m) = g.mux.take() {
                let mut cfg = m.config().clone();
                let mut seed = [0u8; 8];
                let _ = getrandom::fill(&mut seed);
                cfg.seed = u64::from_le_bytes(seed) ^ cfg.seed.rotate_left(17);
                g.mux = Mux::new(cfg).ok();
            }
            t.clear_poison();
            g
        }
    }
}

/// Bytes queued: in total and per lane (index `id - 1`).
#[derive(Debug, Default)]
struct Queued {
    total: AtomicUsize,
    lanes: [AtomicUsize; 8],
}

impl Queued {
    /// Takes `len` bytes of `counter` if it stays within `budget` or was empty.
    fn reserve(counter: &AtomicUsize, len: usize, budget: usize) -> bool {
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                let n = q.saturating_add(len);
                (q == 0 || n <= budget).then_some(n)
            })
            .is_ok()
    }

    fn release(&self, lane: usize, len: usize) {
        self.total.fetch_sub(len, Ordering::AcqRel);
        self.lanes[lane].fetch_sub(len, Ordering::AcqRel);
    }
}

/// Producer side of a socket's bounded outbound queue: at most `frames` frames and, unless
/// the queue is empty, at most `budget` bytes; per lane, unless the lane has nothing queued,
/// at most `lane_budget` bytes.
#[derive(Clone, Debug)]
pub(crate) struct Queue {
    tx: mpsc::Sender<(usize, Bytes)>,
    queued: Arc<Queued>,
    budget: usize,
    lane_budget: usize,
}

/// Consumer side of [`Queue`], owned by the socket's send task.
#[derive(Debug)]
pub struct QueueRx {
    rx: mpsc::Receiver<(usize, Bytes)>,
    queued: Arc<Queued>,
    /// [`QueueRx::recv_many`]'s buffer, kept across calls (no allocation per batch).
    ready: Vec<(usize, Bytes)>,
}

/// A queue of at most `frames` frames and `budget` bytes, `lane_budget` bytes per lane.
pub(crate) fn queue(frames: usize, budget: usize, lane_budget: usize) -> (Queue, QueueRx) {
    let (tx, rx) = mpsc::channel(frames.max(1));
    let queued = Arc::new(Queued::default());
    (
        Queue {
            tx,
            queued: queued.clone(),
            budget,
            lane_budget,
        },
        QueueRx {
            rx,
            queued,
            ready: Vec::new(),
        },
    )
}

impl Queue {
    /// Queues `frame` of `lane` without waiting; `false` if the queue or the lane is full
    /// (frames or bytes) or the socket is gone.
    pub(crate) fn try_push(&self, lane: Lane, frame: Vec<u8>) -> bool {
        let (i, len) = (lane as usize - 1, frame.len());
        let q = &self.queued;
        if !Queued::reserve(&q.total, len, self.budget) {
            return false;
        }
        if !Queued::reserve(&q.lanes[i], len, self.lane_budget) {
            q.total.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        if self.tx.try_send((i, Bytes::from(frame))).is_err() {
            q.release(i, len);
            return false;
        }
        true
    }
}

impl QueueRx {
    /// The next queued frame; `None` once every producer is gone. Cancel-safe.
    pub async fn recv(&mut self) -> Option<Bytes> {
        let (lane, frame) = self.rx.recv().await?;
        self.queued.release(lane, frame.len());
        Some(frame)
    }

    /// Waits for at least one queued frame, then moves every frame that is ready (at most
    /// `limit`) into `batch`; returns how many (0 once every producer is gone). Cancel-safe.
    pub async fn recv_many(&mut self, batch: &mut Vec<Bytes>, limit: usize) -> usize {
        self.ready.clear();
        let n = self.rx.recv_many(&mut self.ready, limit).await;
        for (lane, frame) in self.ready.drain(..) {
            self.queued.release(lane, frame.len());
            batch.push(frame);
        }
        n
    }
}

/// The live socket of a session.
#[derive(Debug)]
pub(crate) struct Conn {
    /// Distinguishes this socket from earlier and later ones of the same session.
    pub(crate) id: u64,
    queue: Queue,
    pub(crate) close: Arc<CloseSignal>,
    /// Next seq of a server → client Control frame (v1).
    control_seq: u64,
    /// Next seq of a Data frame, per lane (index `id - 1`), starting at 1 (v1).
    data_seq: [u64; 8],
    /// Wakes the send task of a multiplexed session (something to send).
    notify: Arc<Notify>,
    /// A multiplexer frame drawn while draining its events ([`Transport::mux_input`]),
    /// written first by the next [`Transport::mux_pump`].
    mux_held: Vec<Bytes>,
}

impl Conn {
    /// A new socket `id` with its queue and close signal.
    pub(crate) fn new(id: u64, queue: Queue) -> Conn {
        Conn {
            id,
            queue,
            close: Arc::new(CloseSignal::new()),
            control_seq: 1,
            data_seq: [1; 8],
            notify: Arc::new(Notify::new()),
            mux_held: Vec::new(),
        }
    }

    /// The notification that wakes a multiplexed socket's send task.
    pub(crate) fn notify(&self) -> Arc<Notify> {
        self.notify.clone()
    }
}

/// One server Control message encoded at most once per encoding, for several receivers
/// (a room's fan-out, a broadcast).
#[derive(Debug, Default)]
pub(crate) struct ControlFrames {
    json: Option<Vec<u8>>,
    msgpack: Option<Vec<u8>>,
}

impl ControlFrames {
    /// `msg` as a Control [`Outgoing`] in `encoding` (JSON; anything else as MessagePack),
    /// encoded on first use. `None` only if the frame we encoded does not parse back.
    pub(crate) fn outgoing(
        &mut self,
        msg: &Control,
        encoding: Encoding,
        dict: &Dictionary,
    ) -> Option<Outgoing<'_>> {
        let (enc, slot) = match encoding {
            Encoding::Json => (Encoding::Json, &mut self.json),
            _ => (Encoding::Msgpack, &mut self.msgpack),
        };
        let frame = slot.get_or_insert_with(|| payload::control_frame(msg, enc, Some(dict), 0));
        let (h, body) = FrameHeader::decode(frame).ok()?;
        Some(Outgoing {
            lane: Lane::Control,
            encoding: h.encoding,
            dict_version: h.dict_version,
            from: None,
            payload: body,
        })
    }
}

/// One message for a session, before framing: [`Transport::send`] adds the header (seq,
/// `from`) for the session's framing.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Outgoing<'a> {
    /// Lane; [`Lane::Control`] makes a Control frame.
    pub(crate) lane: Lane,
    /// Encoding of `payload`.
    pub(crate) encoding: Encoding,
    /// Dictionary version `payload` uses (0: none).
    pub(crate) dict_version: u32,
    /// The relaying sender (`None`: the server).
    pub(crate) from: Option<SessionId>,
    /// The encoded payload.
    pub(crate) payload: &'a [u8],
}

/// Why [`Transport::send`] did not take a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SendError {
    /// The queue (v1) or the lane (multiplexed, attached) is full: backpressure.
    Full,
    /// No socket and no multiplexer: nothing can carry it now.
    NotConnected,
}

/// A session's outbound side: its socket (if any) and its multiplexer (if granted).
#[derive(Debug, Default)]
pub(crate) struct Transport {
    pub(crate) conn: Option<Conn>,
    pub(crate) mux: Option<Mux>,
    /// The relays its multiplexer carries and its resume cursor (in a cluster room).
    pub(crate) resume: ResumeLog,
}

impl Transport {
    /// Frames and queues `msg`: with the multiplexer as a seq-0 §5 frame (its reliable lanes
    /// forget their oldest message instead of refusing while detached), else on the socket's
    /// queue with the socket's next seq for the lane.
    pub(crate) fn send(&mut self, msg: &Outgoing<'_>) -> Result<(), SendError> {
        self.send_keyed(msg, None)
    }

    /// [`Transport::send`] for a relay whose place in its room's stream is `key`: noted for
    /// the session's resume cursor when the multiplexer takes it on a reliable lane.
    pub(crate) fn send_keyed(
        &mut self,
        msg: &Outgoing<'_>,
        key: Option<&RelayKey>,
    ) -> Result<(), SendError> {
        if let Some(m) = self.mux.as_mut() {
            let frame = header(msg, 0).encode(msg.payload);
            let sent = m.send(msg.lane, frame);
            if let Some(c) = &self.conn {
                c.notify.notify_one();
            }
            if let (Ok(id), Some(key)) = (&sent, key) {
                if msg.lane.spec().reliable {
                    self.resume.record(id.lane, id.seq, key.clone());
                }
            }
            return sent.map(|_| ()).map_err(|_| SendError::Full);
        }
        let c = self.conn.as_mut().ok_or(SendError::NotConnected)?;
        let seq = match msg.lane {
            Lane::Control => &mut c.control_seq,
            lane => &mut c.data_seq[lane as usize - 1],
        };
        if c.queue
            .try_push(msg.lane, header(msg, *seq).encode(msg.payload))
        {
            *seq += 1;
            Ok(())
        } else {
            Err(SendError::Full)
        }
    }

    /// [`Transport::send`] for a protocol message (Control, server data), which is never
    /// dropped silently: a full queue or lane closes the socket with 1013 (the client
    /// reconnects and gets fresh state). `false` if it was not sent.
    pub(crate) fn send_or_close(&mut self, sid: SessionId, msg: &Outgoing<'_>) -> bool {
        match self.send(msg) {
            Ok(()) => true,
            Err(SendError::NotConnected) => false,
            Err(SendError::Full) => {
                if let Some(c) = &self.conn {
                    if c.close.close(close::TRY_AGAIN_LATER, "outbound queue full") {
                        tracing::warn!(session = %sid, lane = msg.lane.id(),
                            "outbound queue full of protocol messages; closing with 1013");
                    }
                }
                false
            }
        }
    }

    /// A new socket attached: it replaces the old one (returned, to be closed); the
    /// multiplexer resumes and refuses with backpressure again.
    pub(crate) fn attach(&mut self, conn: Conn) -> Option<Conn> {
        let old = self.conn.replace(conn);
        if let Some(m) = self.mux.as_mut() {
            m.set_reliable_overflow(ReliableOverflow::Backpressure);
            m.handle_transport_resumed(Millis::from_u64(mono_ms()));
        }
        old
    }

    /// The socket went away: the multiplexer (if any) keeps sending into its history, forgetting
    /// the oldest reliable messages when a lane is full (the receiver later sees a
    /// `history-lost` discontinuity).
    pub(crate) fn detach(&mut self) {
        self.conn = None;
        if let Some(m) = self.mux.as_mut() {
            m.handle_transport_lost();
            m.set_reliable_overflow(ReliableOverflow::ForgetOldest);
        }
    }

    /// One v2 frame from socket `conn_id`: the multiplexer's events, in order (`Message`s
    /// carry §5 frames). A fatal multiplexer error closes the socket with 1002. Empty if that
    /// socket is no longer the session's.
    pub(crate) fn mux_input(
        &mut self,
        sid: SessionId,
        conn_id: u64,
        bytes: &[u8],
    ) -> Vec<MuxEvent> {
        let mut out = Vec::new();
        let (Some(m), Some(c)) = (self.mux.as_mut(), self.conn.as_mut()) else {
            return out;
        };
        if c.id != conn_id {
            return out;
        }
        let now = Millis::from_u64(mono_ms());
        m.handle_input(bytes, now);
        // Events come before frames: the first frame (if any) ends them and waits for the
        // send task.
        loop {
            let ev = match m.poll_output(now) {
                MuxOutput::Event(ev) => ev,
                MuxOutput::Transmit(f) => {
                    c.mux_held.push(Bytes::from(f));
                    break;
                }
                MuxOutput::Timeout(_) => break,
            };
            match ev {
                MuxEvent::Error(e) if e.is_fatal() => {
                    // PROTOCOL.md §11.7: the typed refusal first (a §5 Control `error`, which a
                    // client reads on a multiplexed socket too), then the close: 1009 for a
                    // message over the size limit, 1002 for every other broken frame.
                    let (code, reason) = match e.code() {
                        ErrorCode::FrameTooLarge => (close::TOO_BIG, "message too big"),
                        _ => (close::PROTOCOL, "multiplexer protocol violation"),
                    };
                    tracing::info!(session = %sid, error = %e, code, "multiplexer error; closing");
                    let refusal = error_frame(&e);
                    c.close.close_with(code, reason, refusal);
                }
                ev => out.push(ev),
            }
        }
        c.notify.notify_one();
        out
    }

    /// What socket `conn_id` should write now, and when to ask again (ms of [`mono_ms`]).
    /// `buffered`: bytes written but not yet on the wire (0 unless the test latency seam holds
    /// frames). `None` without a multiplexer, or if that socket is no longer the session's.
    pub(crate) fn mux_pump(
        &mut self,
        conn_id: u64,
        buffered: usize,
    ) -> Option<(Vec<Bytes>, Option<u64>)> {
        let c = self.conn.as_mut()?;
        if c.id != conn_id {
            return None;
        }
        let m = self.mux.as_mut()?;
        let now = Millis::from_u64(mono_ms());
        // Harmless before the deadline (the multiplexer checks each of its timers).
        m.handle_timeout(now);
        let mut frames = std::mem::take(&mut c.mux_held);
        let held: usize = frames.iter().map(Bytes::len).sum();
        m.handle_transport_buffered(buffered + held);
        // Events left here (a send's `Dropped`, a chunk's `Drain`) are not reported.
        let deadline = loop {
            match m.poll_output(now) {
                MuxOutput::Event(_) => {}
                MuxOutput::Transmit(f) => frames.push(Bytes::from(f)),
                MuxOutput::Timeout(t) => break t,
            }
        };
        Some((frames, deadline.deadline().map(Millis::as_u64)))
    }
}

/// The Control `error` for a fatal multiplexer error, as a v1 (§5) json frame written just
/// before the close: the client's multiplexer is not the broken side, but this session's
/// one dropped the frame, so the refusal goes around it (PROTOCOL.md §11.7).
fn error_frame(e: &MuxError) -> Vec<u8> {
    let lane = match e {
        MuxError::Peer(
            PeerMisbehaved::MessageTooLarge { lane, .. }
            | PeerMisbehaved::ReassemblyLimit { lane, .. }
            | PeerMisbehaved::ChunkMismatch { lane, .. }
            | PeerMisbehaved::ChunkBeforeResume { lane, .. },
        ) => Some(lane.id()),
        _ => None,
    };
    let msg = super::error_msg(e.code(), e.to_string(), lane, None);
    payload::control_frame(&msg, Encoding::Json, None, 1)
}

/// The §5 header of `msg` with `seq`.
fn header(msg: &Outgoing<'_>, seq: u64) -> FrameHeader {
    if msg.lane == Lane::Control {
        return FrameHeader::control(msg.encoding, seq, msg.dict_version);
    }
    let mut h = FrameHeader::data(msg.lane, msg.encoding, seq, msg.dict_version);
    h.from = msg.from;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbound_queue_is_bounded_by_frames_and_bytes() {
        let d = Lane::Data;
        let (out, _rx) = queue(2, 10, 10);
        assert!(
            out.try_push(d, vec![0; 30]),
            "an empty queue takes any frame"
        );
        assert!(!out.try_push(d, vec![0; 1]), "over the byte budget");
        let (out, _rx) = queue(2, 1000, 1000);
        assert!(out.try_push(d, vec![0; 1]));
        assert!(out.try_push(d, vec![0; 1]));
        assert!(!out.try_push(d, vec![0; 1]), "over the frame limit");
    }

    #[tokio::test]
    async fn each_lane_is_bounded_in_bytes() {
        let (out, mut rx) = queue(100, 1000, 10);
        assert!(out.try_push(Lane::Data, vec![0; 8]));
        assert!(
            !out.try_push(Lane::Data, vec![0; 8]),
            "over the lane budget"
        );
        assert!(
            out.try_push(Lane::Control, vec![0; 8]),
            "other lanes are not held up"
        );
        assert_eq!(rx.recv().await.unwrap().len(), 8);
        assert!(out.try_push(Lane::Data, vec![0; 8]));
    }

    #[tokio::test]
    async fn receiving_frees_the_budget() {
        let (out, mut rx) = queue(4, 10, 100);
        assert!(out.try_push(Lane::Data, vec![0; 8]));
        assert!(!out.try_push(Lane::Data, vec![0; 8]));
        assert_eq!(rx.recv().await.unwrap().len(), 8);
        assert!(out.try_push(Lane::Data, vec![0; 8]));
    }

    #[tokio::test]
    async fn v1_frames_get_per_lane_seqs() {
        let (q, mut rx) = queue(8, 1 << 20, 1 << 20);
        let mut t = Transport {
            conn: Some(Conn::new(1, q)),
            mux: None,
            resume: ResumeLog::default(),
        };
        let msg = |lane| Outgoing {
            lane,
            encoding: Encoding::Json,
            dict_version: 0,
            from: None,
            payload: b"1",
        };
        for lane in [Lane::Control, Lane::Data, Lane::Data, Lane::Control] {
            t.send(&msg(lane)).unwrap();
        }
        let mut seqs = Vec::new();
        for _ in 0..4 {
            let f = rx.recv().await.unwrap();
            let (h, _) = FrameHeader::decode(&f).unwrap();
            seqs.push((h.lane, h.seq));
        }
        assert_eq!(
            seqs,
            [
                (Lane::Control, 1),
                (Lane::Data, 1),
                (Lane::Data, 2),
                (Lane::Control, 2)
            ]
        );
        t.detach();
        assert_eq!(t.send(&msg(Lane::Data)), Err(SendError::NotConnected));
    }

    #[test]
    fn a_poisoned_transport_closes_its_socket_and_restarts_its_mux() {
        use p3_lanes::core::mux::MuxConfig;
        let (q, _rx) = queue(8, 1 << 20, 1 << 20);
        let conn = Conn::new(3, q);
        let close = conn.close.clone();
        let mux = Mux::new(MuxConfig::for_lanes(&[Lane::Control, Lane::Data], 42)).unwrap();
        let shared: SharedTransport = Arc::new(Mutex::new(Transport {
            conn: Some(conn),
            mux: Some(mux),
            resume: ResumeLog::default(),
        }));
        let poisoner = shared.clone();
        let _ = std::thread::spawn(move || {
            let _g = poisoner.lock().unwrap();
            panic!("a bug while sending");
        })
        .join();
        let t = lock(&shared);
        assert_eq!(close.reason().map(|r| r.code), Some(close::INTERNAL_ERROR));
        assert!(t.conn.is_none());
        assert_ne!(t.mux.as_ref().unwrap().config().seed, 42, "a new epoch");
        drop(t);
        assert!(!shared.is_poisoned());
    }
}
