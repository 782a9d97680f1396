//! TEST ONLY seam (`--test-latency-ms` / `--test-jitter-ms`): every frame of a socket, in each
//! direction, waits `latency ± jitter` (uniform) in a delay line that keeps frames in order (a
//! slow TCP link, for music-sync tests). Everything the seam needs lives here; with the flags at
//! 0 (the default, and production) none of it runs: [`crate::config::Config::test_delay`] is
//! `None` and the socket uses the plain loops of [`super`].

use super::{frames, sleep_until, write_close};
use crate::close::{self, CloseReason, CloseSignal};
use crate::registry::outbound::{QueueRx, SharedTransport};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket};
use futures::stream::SplitSink;
use futures::SinkExt;
use p3_lanes::core::frame::SessionId;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Test only (`--test-latency-ms`): a per-connection, per-direction delay line. Each frame is
/// due `latency ± jitter` (uniform, at least 0) after it entered, but never before the frame
/// ahead of it (in order, as on TCP).
pub(super) struct DelayLine {
    latency_ms: f64,
    jitter_ms: f64,
    /// xorshift64* state.
    rng: u64,
    last_due: tokio::time::Instant,
}

impl DelayLine {
    pub(super) fn new((latency, jitter): (Duration, Duration), salt: u64) -> DelayLine {
        let mut seed = [0u8; 8];
        let _ = getrandom::fill(&mut seed);
        DelayLine {
            latency_ms: latency.as_secs_f64() * 1000.0,
            jitter_ms: jitter.as_secs_f64() * 1000.0,
            rng: (u64::from_le_bytes(seed) ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1,
            last_due: tokio::time::Instant::now(),
        }
    }

    /// When a frame entering now is due.
    pub(super) fn due(&mut self) -> tokio::time::Instant {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let unit =
            (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64;
        let ms = (self.latency_ms + self.jitter_ms * (2.0 * unit - 1.0)).max(0.0);
        let due =
            (tokio::time::Instant::now() + Duration::from_secs_f64(ms / 1000.0)).max(self.last_due);
        self.last_due = due;
        due
    }
}

/// [`send_loop`] through a [`DelayLine`] (test only).
pub(super) async fn delayed_send_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: QueueRx,
    signal: Arc<CloseSignal>,
    mut line: DelayLine,
) {
    let mut pending: VecDeque<(tokio::time::Instant, Bytes)> = VecDeque::new();
    let mut queue_open = true;
    let reason = loop {
        let next_due = pending.front().map(|p| p.0);
        if !queue_open && next_due.is_none() {
            break CloseReason {
                code: close::NORMAL,
                reason: "",
            };
        }
        tokio::select! {
            biased;
            r = signal.closed() => break r,
            () = sleep_until(next_due) => {
                let Some((_, frame)) = pending.pop_front() else { continue };
                tokio::select! {
                    biased;
                    r = signal.closed() => break r,
                    sent = sink.send(Message::Binary(frame)) => if sent.is_err() { return },
                }
            }
            frame = rx.recv(), if queue_open => match frame {
                Some(frame) => pending.push_back((line.due(), frame)),
                None => queue_open = false,
            },
        }
    };
    write_close(&mut sink, &signal, reason).await;
}

/// Handles received frames once their delay is over (test only).
pub(super) async fn delayed_handler(
    mut rx: mpsc::UnboundedReceiver<(tokio::time::Instant, Bytes)>,
    state: Arc<AppState>,
    sid: SessionId,
    conn_id: u64,
    transport: SharedTransport,
) {
    while let Some((due, bytes)) = rx.recv().await {
        tokio::time::sleep_until(due).await;
        frames::handle_frame(&state, sid, conn_id, &transport, bytes).await;
    }
}
