//! The sync tier decision of seed 004 §3.1 "Connection Monitoring": `socket` (Tier 1, server
//! relays), `webrtc` (Tier 2, DataChannel mesh) or `offline` (Tier 3, play on alone), with
//! hysteresis so that a link near a threshold does not make the room flap.
//!
//! # Rules (all times ms, on the driver's clock)
//! - **socket stable** (seed): the WebSocket is open, heartbeats are answered, and the smoothed
//!   RTT is below [`TierConfig::leave_socket_rtt_ms`] (300, the seed's threshold) while on the
//!   socket tier, or below [`TierConfig::enter_socket_rtt_ms`] (200) to come back to it.
//! - **webrtc viable** (seed): at least `min_group_size - 1` peers are connected with a usable
//!   link (seed 001 class not `critical`).
//! - Desired tier: socket if stable, else webrtc if viable, else offline.
//! - **Fast crash detection**: [`TierMachine::handle_socket_closed`] (TCP reset, process killed)
//!   leaves the socket tier at once.
//! - **Silent loss** (process stopped, socket still open): the driver sends a ping when
//!   [`TierOutput::SendPing`] says so: [`TierConfig::probe_interval_ms`] (750) after the last
//!   pong, whichever probe it answered (a music room's clock probes, answered more often,
//!   leave none to send); the server counts as gone when no pong has arrived for
//!   [`TierConfig::silence_timeout_ms`] (2250, three probe intervals), so silent loss is
//!   detected at most 2.25 s after the last pong (target ≤ 3 s).
//! - **Dwell times**: a change the conditions ask for is made only after they have asked for it
//!   without interruption for a dwell time: [`TierConfig::enter_socket_dwell_ms`] (2000) to
//!   return to the socket, [`TierConfig::dwell_ms`] (1000) otherwise. Leaving the socket
//!   because it closed or went silent, and leaving webrtc because no peer is left, take no
//!   dwell (the tier is unusable, waiting would only lose commands).
//!
//! # Drive contract ([`crate::core::drive`])
//! Feed `handle_*` inputs with `now` last, after every call drain
//! [`TierMachine::poll_output`] until it returns [`TierOutput::Timeout`], and call
//! [`TierMachine::handle_timeout`] once that deadline has passed.

use super::quality::NetworkQuality;
use crate::core::drive::Millis;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// The sync tier (seed 004 `activeSyncMode`). Serialized lowercase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Tier 1: the server orders and relays changes.
    Socket,
    /// Tier 2: peers over WebRTC DataChannels; an elected controller orders changes.
    Webrtc,
    /// Tier 3: alone; local changes are queued.
    Offline,
}

/// Thresholds and times (ms). [`Default`] gives the documented values.
#[derive(Clone, Debug, PartialEq)]
pub struct TierConfig {
    /// Heartbeat period (ms).
    pub probe_interval_ms: u64,
    /// No pong for this long: the server is silently gone (ms).
    pub silence_timeout_ms: u64,
    /// Smoothed RTT at or above which the socket tier is left (ms; seed: 300).
    pub leave_socket_rtt_ms: f64,
    /// Smoothed RTT below which the socket tier may be re-entered (ms).
    pub enter_socket_rtt_ms: f64,
    /// Dwell before returning to the socket tier (ms).
    pub enter_socket_dwell_ms: u64,
    /// Dwell for other non-forced changes (ms).
    pub dwell_ms: u64,
    /// Seed's `minGroupSize`: webrtc is viable with `min_group_size - 1` usable peers (min 1).
    pub min_group_size: usize,
}

impl Default for TierConfig {
    fn default() -> Self {
        TierConfig {
            probe_interval_ms: 750,
            silence_timeout_ms: 2250,
            leave_socket_rtt_ms: 300.0,
            enter_socket_rtt_ms: 200.0,
            enter_socket_dwell_ms: 2000,
            dwell_ms: 1000,
            min_group_size: 2,
        }
    }
}

/// Why the tier changed (for the app's event and for figures).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TierReason {
    /// The WebSocket closed (fast crash detection).
    SocketClosed,
    /// No pong within the silence timeout.
    HeartbeatTimeout,
    /// Smoothed RTT over the leave threshold.
    HighLatency,
    /// The socket is stable again.
    ServerBack,
    /// Peers became reachable or unreachable.
    Peers,
}

/// Outputs of [`TierMachine::poll_output`].
#[derive(Clone, Debug, PartialEq)]
pub enum TierOutput {
    /// Send a heartbeat ping on the Control lane now; report its pong with
    /// [`TierMachine::handle_pong`].
    SendPing,
    /// The tier changed: show it, and start (webrtc) or stop (socket) peer authority.
    TierChanged {
        /// Previous tier.
        from: Tier,
        /// New tier.
        to: Tier,
        /// Why.
        reason: TierReason,
        /// When (ms).
        at_ms: u64,
    },
    /// Nothing more until this deadline ([`Millis::NEVER`]: none); then call
    /// [`TierMachine::handle_timeout`].
    Timeout(Millis),
}

/// The fixed timer table; [`TierOutput::Timeout`] carries the earliest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    /// Next heartbeat ping.
    Probe = 0,
    /// Silence deadline (last pong + silence timeout).
    Silence = 1,
    /// End of the current candidate's dwell.
    Dwell = 2,
}

/// The tier state machine (see the module doc for the rules).
///
/// Drive contract ([`crate::core::drive`]): inputs take `now` (ms) last; after each, drain
/// [`TierMachine::poll_output`] until [`TierOutput::Timeout`]; call
/// [`TierMachine::handle_timeout`] at that deadline.
#[derive(Debug)]
pub struct TierMachine {
    config: TierConfig,
    tier: Tier,
    socket_open: bool,
    last_pong_ms: Option<u64>,
    silent: bool,
    srtt_ms: Option<f64>,
    peers: BTreeMap<String, NetworkQuality>,
    candidate: Option<(Tier, u64, TierReason)>,
    timers: [Option<u64>; 3],
    out: VecDeque<TierOutput>,
}

impl TierMachine {
    /// A machine that starts on `initial` tier; the socket counts as closed until
    /// [`TierMachine::handle_socket_open`], and no peer is known until
    /// [`TierMachine::handle_peer`].
    pub fn new(config: TierConfig, initial: Tier) -> Self {
        TierMachine {
            config,
            tier: initial,
            socket_open: false,
            last_pong_ms: None,
            silent: false,
            srtt_ms: None,
            peers: BTreeMap::new(),
            candidate: None,
            timers: [None; 3],
            out: VecDeque::new(),
        }
    }

    /// The current tier.
    pub fn tier(&self) -> Tier {
        self.tier
    }

    /// Smoothed server RTT (ms), if any pong arrived.
    pub fn server_rtt_ms(&self) -> Option<f64> {
        self.srtt_ms
    }

    /// Usable peers (quality not critical).
    pub fn usable_peers(&self) -> usize {
        self.peers.values().filter(|q| q.usable()).count()
    }

    /// The WebSocket opened (or reconnected): heartbeats start now.
    pub fn handle_socket_open(&mut self, now: Millis) {
        let now = now.as_u64();
        self.socket_open = true;
        self.silent = false;
        self.last_pong_ms = Some(now);
        self.srtt_ms = None;
        self.timers[Timer::Probe as usize] = Some(now);
        self.timers[Timer::Silence as usize] = Some(now + self.config.silence_timeout_ms);
        self.evaluate(now);
    }

    /// The WebSocket closed: the server is gone now (fast crash detection).
    pub fn handle_socket_closed(&mut self, now: Millis) {
        let now = now.as_u64();
        self.socket_open = false;
        self.timers[Timer::Probe as usize] = None;
        self.timers[Timer::Silence as usize] = None;
        self.evaluate(now);
    }

    /// A pong arrived (to any ping of this client); `rtt_ms` is its round trip (ms). Smoothed
    /// as 7/8 old + 1/8 new (RFC 6298); the next [`TierOutput::SendPing`] moves to a probe
    /// interval after `now`.
    pub fn handle_pong(&mut self, rtt_ms: f64, now: Millis) {
        if !self.socket_open {
            return;
        }
        let now = now.as_u64();
        self.last_pong_ms = Some(now);
        self.silent = false;
        self.srtt_ms = Some(match self.srtt_ms {
            Some(s) => 0.875 * s + 0.125 * rtt_ms,
            None => rtt_ms,
        });
        self.timers[Timer::Silence as usize] = Some(now + self.config.silence_timeout_ms);
        // Any pong proves the server alive: the next own ping is due a probe interval after
        // it, so a room whose clock probes are answered often enough sends none.
        self.timers[Timer::Probe as usize] = Some(now + self.config.probe_interval_ms);
        self.evaluate(now);
    }

    /// A peer's DataChannel state or quality changed; `None` removes the peer.
    pub fn handle_peer(&mut self, peer: &str, quality: Option<NetworkQuality>, now: Millis) {
        let now = now.as_u64();
        match quality {
            Some(q) => {
                self.peers.insert(peer.to_owned(), q);
            }
            None => {
                self.peers.remove(peer);
            }
        }
        self.evaluate(now);
    }

    /// Fires due timers.
    pub fn handle_timeout(&mut self, now: Millis) {
        let now = now.as_u64();
        if self.timers[Timer::Probe as usize].is_some_and(|t| t <= now) {
            self.out.push_back(TierOutput::SendPing);
            self.timers[Timer::Probe as usize] = Some(now + self.config.probe_interval_ms);
        }
        if self.timers[Timer::Silence as usize].is_some_and(|t| t <= now) {
            self.silent = true;
            self.timers[Timer::Silence as usize] = None;
        }
        self.evaluate(now);
    }

    /// The earliest deadline (ms), if any.
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        self.timers.iter().flatten().min().copied()
    }

    /// The next output: queued [`TierOutput::SendPing`] / [`TierOutput::TierChanged`] in the
    /// order they arose, then [`TierOutput::Timeout`] with the earliest deadline.
    #[must_use]
    pub fn poll_output(&mut self, _now: Millis) -> TierOutput {
        self.out
            .pop_front()
            .unwrap_or_else(|| TierOutput::Timeout(Millis::from_deadline(self.next_deadline())))
    }

    fn socket_stable(&self) -> bool {
        if !self.socket_open || self.silent {
            return false;
        }
        let limit = if self.tier == Tier::Socket {
            self.config.leave_socket_rtt_ms
        } else {
            self.config.enter_socket_rtt_ms
        };
        // Before the first pong of a fresh socket, keep the socket tier if on it.
        self.srtt_ms
            .map_or(self.tier == Tier::Socket, |r| r < limit)
    }

    fn webrtc_viable(&self) -> bool {
        self.usable_peers() >= self.config.min_group_size.saturating_sub(1).max(1)
    }

    fn evaluate(&mut self, now: u64) {
        let (want, reason) = if self.socket_stable() {
            (Tier::Socket, TierReason::ServerBack)
        } else if self.webrtc_viable() {
            (Tier::Webrtc, self.socket_reason())
        } else {
            (Tier::Offline, self.socket_reason())
        };
        if want == self.tier {
            self.candidate = None;
            self.timers[Timer::Dwell as usize] = None;
            return;
        }
        let forced = match (self.tier, want) {
            (Tier::Socket, _) => !self.socket_open || self.silent,
            (Tier::Webrtc, Tier::Offline) => self.peers.values().all(|q| !q.usable()),
            _ => false,
        };
        let dwell = if forced {
            0
        } else if want == Tier::Socket {
            self.config.enter_socket_dwell_ms
        } else {
            self.config.dwell_ms
        };
        let since = match self.candidate {
            Some((t, since, _)) if t == want => since,
            _ => now,
        };
        self.candidate = Some((want, since, reason));
        if now >= since + dwell {
            self.out.push_back(TierOutput::TierChanged {
                from: self.tier,
                to: want,
                reason,
                at_ms: now,
            });
            self.tier = want;
            self.candidate = None;
            self.timers[Timer::Dwell as usize] = None;
        } else {
            self.timers[Timer::Dwell as usize] = Some(since + dwell);
        }
    }

    fn socket_reason(&self) -> TierReason {
        if self.tier != Tier::Socket {
            TierReason::Peers
        } else if !self.socket_open {
            TierReason::SocketClosed
        } else if self.silent {
            TierReason::HeartbeatTimeout
        } else {
            TierReason::HighLatency
        }
    }
}

crate::core::drive::machine!(TierMachine, TierOutput);

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Millis {
        Millis::from_u64(v)
    }

    /// The outputs before the `Timeout`.
    fn drain(m: &mut TierMachine) -> Vec<TierOutput> {
        let mut v = Vec::new();
        crate::core::drive::drain(m, Millis::ZERO, |o| v.push(o));
        v
    }

    /// The deadline (ms) of the `Timeout` output, with no output before it.
    fn deadline(m: &mut TierMachine) -> Option<u64> {
        match m.poll_output(Millis::ZERO) {
            TierOutput::Timeout(t) => t.deadline().map(Millis::as_u64),
            o => panic!("{o:?} before the timeout"),
        }
    }

    fn changes(m: &mut TierMachine) -> Vec<(Tier, TierReason)> {
        drain(m)
            .into_iter()
            .filter_map(|o| match o {
                TierOutput::TierChanged { to, reason, .. } => Some((to, reason)),
                _ => None,
            })
            .collect()
    }

    fn on_socket_with_peer() -> TierMachine {
        let mut m = TierMachine::new(TierConfig::default(), Tier::Socket);
        m.handle_socket_open(ms(0));
        m.handle_pong(40.0, ms(10));
        m.handle_peer("b", Some(NetworkQuality::Good), ms(10));
        drain(&mut m);
        m
    }

    #[test]
    fn crash_is_immediate() {
        let mut m = on_socket_with_peer();
        m.handle_socket_closed(ms(100));
        assert_eq!(
            changes(&mut m),
            vec![(Tier::Webrtc, TierReason::SocketClosed)]
        );
    }

    #[test]
    fn silent_loss_detected_within_3s() {
        let mut m = on_socket_with_peer();
        // Pongs every probe until 1000 ms, then silence.
        let mut now = 10;
        let mut detected = None;
        while now < 6000 {
            now = m.next_deadline().unwrap();
            m.handle_timeout(ms(now));
            for o in drain(&mut m) {
                match o {
                    TierOutput::SendPing if now <= 1000 => m.handle_pong(20.0, ms(now + 20)),
                    TierOutput::TierChanged {
                        to, reason, at_ms, ..
                    } => {
                        assert_eq!((to, reason), (Tier::Webrtc, TierReason::HeartbeatTimeout));
                        detected = Some(at_ms);
                    }
                    _ => {}
                }
            }
            if detected.is_some() {
                break;
            }
        }
        let at = detected.expect("detected");
        assert!(at - 1000 <= 3000, "detected at {at}");
    }

    #[test]
    fn pongs_to_other_probes_replace_own_pings() {
        let mut m = on_socket_with_peer();
        // Another probe's pong every 600 ms (< 750): no ping of its own is asked for.
        let mut pings = 0;
        for t in (610..=6010).step_by(600) {
            while m.next_deadline().is_some_and(|d| d <= t) {
                let at = m.next_deadline().unwrap();
                m.handle_timeout(ms(at));
            }
            m.handle_pong(20.0, ms(t));
            pings += drain(&mut m)
                .iter()
                .filter(|o| **o == TierOutput::SendPing)
                .count();
        }
        assert_eq!(pings, 0);
        // They stop: the own ping comes a probe interval after the last pong.
        let due = deadline(&mut m).unwrap();
        assert_eq!(due, 6010 + TierConfig::default().probe_interval_ms);
        m.handle_timeout(ms(due));
        assert_eq!(drain(&mut m), vec![TierOutput::SendPing]);
    }

    #[test]
    fn high_rtt_needs_dwell_and_hysteresis_prevents_flapping() {
        let mut m = on_socket_with_peer();
        // One bad sample does not move the smoothed RTT over 300.
        m.handle_pong(900.0, ms(100));
        assert!(changes(&mut m).is_empty());
        for t in 0..40 {
            m.handle_pong(900.0, ms(200 + t * 100));
        }
        let c = changes(&mut m);
        assert_eq!(c, vec![(Tier::Webrtc, TierReason::HighLatency)]);
        // RTT recovers to 250 ms: below the leave threshold but not below the enter one.
        for t in 0..100 {
            m.handle_pong(250.0, ms(5000 + t * 100));
        }
        assert!(changes(&mut m).is_empty());
        // Below 200 ms: back only after the 2 s dwell.
        let mut back_at = None;
        for t in 0..100 {
            let now = 20_000 + t * 100;
            m.handle_pong(50.0, ms(now));
            if let Some(&(Tier::Socket, _)) = changes(&mut m).first() {
                back_at = Some(now);
                break;
            }
        }
        let back_at = back_at.unwrap();
        assert!(back_at >= 22_000, "{back_at}");
    }

    #[test]
    fn offline_and_back_to_webrtc() {
        let mut m = on_socket_with_peer();
        m.handle_socket_closed(ms(100));
        m.handle_peer("b", None, ms(200));
        assert_eq!(
            changes(&mut m),
            vec![
                (Tier::Webrtc, TierReason::SocketClosed),
                (Tier::Offline, TierReason::Peers)
            ]
        );
        m.handle_peer("b", Some(NetworkQuality::Poor), ms(300));
        assert!(changes(&mut m).is_empty());
        assert_eq!(deadline(&mut m), Some(1300));
        m.handle_timeout(ms(1300));
        assert_eq!(changes(&mut m), vec![(Tier::Webrtc, TierReason::Peers)]);
        // A critical link does not count.
        m.handle_peer("b", Some(NetworkQuality::Critical), ms(1400));
        assert_eq!(changes(&mut m), vec![(Tier::Offline, TierReason::Peers)]);
    }
}
