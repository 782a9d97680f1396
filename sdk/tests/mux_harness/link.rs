//! One direction of a simulated transport: a send buffer drained at a fixed bandwidth (its
//! byte count is the `bufferedAmount` the driver reports), then propagation with latency,
//! jitter and loss. Times in µs.

use std::collections::VecDeque;

/// How one direction of the transport behaves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkModel {
    /// Serialization rate, bytes per ms (1250 = 10 Mbit/s).
    pub bandwidth_bytes_per_ms: f64,
    /// One-way propagation delay, ms.
    pub latency_ms: f64,
    /// Uniform extra delay in `[0, jitter_ms]`, ms.
    pub jitter_ms: f64,
    /// Probability that a frame vanishes (only without `ordered`).
    pub loss: f64,
    /// In-order, lossless while connected (a WebSocket / TCP, a reliable ordered
    /// DataChannel); otherwise frames may be lost and overtake each other (an unordered,
    /// unreliable DataChannel).
    pub ordered: bool,
}

impl LinkModel {
    /// A WebSocket: 16 Mbit/s, 25 ms + up to 10 ms, in order, no loss.
    pub fn websocket() -> LinkModel {
        LinkModel {
            bandwidth_bytes_per_ms: 2000.0,
            latency_ms: 25.0,
            jitter_ms: 10.0,
            loss: 0.0,
            ordered: true,
        }
    }

    /// An unordered, unreliable datagram channel: 16 Mbit/s, 25 ms + up to 40 ms of jitter
    /// (which reorders), 3 % loss.
    pub fn lossy() -> LinkModel {
        LinkModel {
            bandwidth_bytes_per_ms: 2000.0,
            latency_ms: 25.0,
            jitter_ms: 40.0,
            loss: 0.03,
            ordered: false,
        }
    }

    /// Time to serialize `len` bytes, µs.
    pub fn serialize_us(&self, len: usize) -> u64 {
        (len as f64 * 1000.0 / self.bandwidth_bytes_per_ms).ceil() as u64
    }
}

/// The send side of one direction.
pub struct Link {
    pub model: LinkModel,
    frames: VecDeque<Vec<u8>>,
    /// Bytes not yet on the wire (the frame being serialized included): `bufferedAmount`.
    pub buffered: usize,
    busy: bool,
    /// Changes when the buffer is cleared: completions scheduled before are stale.
    pub gen: u64,
    last_delivery: u64,
    rng: fastrand::Rng,
}

impl Link {
    pub fn new(model: LinkModel, seed: u64) -> Link {
        Link {
            model,
            frames: VecDeque::new(),
            buffered: 0,
            busy: false,
            gen: 0,
            last_delivery: 0,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// Queues a frame; returns when its serialization ends if the link was idle.
    pub fn push(&mut self, frame: Vec<u8>, now: u64) -> Option<u64> {
        self.buffered += frame.len();
        self.frames.push_back(frame);
        if self.busy {
            return None;
        }
        self.busy = true;
        Some(now + self.model.serialize_us(self.frames[0].len()))
    }

    /// The head frame finished serializing at `now`: returns it with its arrival time
    /// (`None` if lost), and when the next frame finishes, if any.
    pub fn on_free(&mut self, now: u64) -> (Option<(u64, Vec<u8>)>, Option<u64>) {
        let Some(f) = self.frames.pop_front() else {
            self.busy = false;
            return (None, None);
        };
        self.buffered -= f.len();
        let m = self.model;
        let delay = m.latency_ms + m.jitter_ms * self.rng.f64();
        let mut at = now + (delay * 1000.0) as u64;
        let lost = !m.ordered && self.rng.f64() < m.loss;
        if m.ordered {
            at = at.max(self.last_delivery);
            self.last_delivery = at;
        }
        let next = self.frames.front().map(|n| now + m.serialize_us(n.len()));
        self.busy = next.is_some();
        ((!lost).then_some((at, f)), next)
    }

    /// The transport died: everything buffered is gone.
    pub fn clear(&mut self) {
        self.frames.clear();
        self.buffered = 0;
        self.busy = false;
        self.gen += 1;
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}
