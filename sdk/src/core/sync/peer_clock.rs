//! The room clock over the mesh while serverless (issue #5; seed 004 "Tier 2: WebRTC mesh",
//! "Timestamps: critical for time-sync across variable latency"; PROTOCOL.md §13.10).
//!
//! Without the server the room's shared clock is the controller's **kept server clock**: the
//! [`ClockMapping`] of its [`ClockSync`] from the last server samples, which it stops probing.
//! Every other device sends the same NTP-style probes to the controller over the link's
//! `p3-control` DataChannel instead of the server, and feeds the answers to the same
//! [`ClockSync`] (same filter: low-RTT samples, queued ones rejected, interval intersection).
//! [`PeerClock`] decides where the probes go and who answers; it owns no clock estimator and
//! sends nothing itself.
//!
//! # Sources ([`ClockSource`])
//! - [`ClockSource::Server`]: the server orders changes (or no mesh): probes go to the server
//!   (Control `ping`), as in §12.4.
//! - [`ClockSource::Peer`]: a peer (the claim's controller) orders changes and this device is
//!   not it: probes go to the controller as [`ClockProbe::Ping`], only while the link to it is
//!   connected. Switching to a new controller (tier change, election, a link that came back)
//!   starts a new burst ([`ClockSync::start_burst`]) and keeps the samples.
//! - [`ClockSource::Host`]: this device is the controller without the server: no probes at all
//!   (its mapping stays as the server left it, or as its own mesh probes left it after an
//!   election), and it answers peers' pings from that mapping, `serverTime` floored to integer
//!   ms like the server's (so the estimator's 1 ms resolution model holds). A host that never
//!   synced has no room clock: it does not answer.
//!
//! # Cadence
//! The estimator's own (§12.4): on a new source a burst of 10 probes 25 ms apart (extended
//! while fewer than 5 answers pass the queued-sample filter), 20 follow-ups 100 ms apart, then
//! one every 500 ms. A ping and its pong are about 70 bytes of JSON.
//!
//! # Drive contract
//! A part of the music `Room`, which owns the [`ClockSync`] it needs on every call and folds
//! it into the room's own `poll_output` ([`crate::core::drive`]; `now` last, as `Millis`):
//! - After every input that may change the tier, the claim or the links, call
//!   [`PeerClock::handle_role`].
//! - At [`PeerClock::next_probe_at`], call [`PeerClock::take_probe`]: a
//!   [`Probe::Server`] is sent as Control `ping {clientTime}`, a [`Probe::Peer`] as a
//!   [`ClockProbe::Ping`] on the peer's `p3-control` channel, at once.
//! - A [`ClockProbe::Ping`] from a peer goes to [`PeerClock::handle_ping`]; send the returned
//!   pong back to it at once. A [`ClockProbe::Pong`] goes to [`PeerClock::handle_pong`]; it is
//!   taken only from the peer that was probed, for a probe still outstanding.
//! - Server pongs go to [`ClockSync::handle_response`] directly, as before.
//!
//! Trust (decision): probes and answers are **not sealed**. The DataChannel is DTLS between
//! two room members whose fingerprints travelled through the server (or a member's relay), a
//! sealed envelope would add nothing against a member that lies about the time (it holds the
//! room key too), and answers are accepted only from the claim's controller on its own link
//! for a probe this device sent.

use super::clock::ClockSync;
use crate::core::drive::Millis;
use std::collections::VecDeque;

/// Probes to peers remembered at most (older ones are forgotten first).
const MAX_OUTSTANDING: usize = 32;

/// A clock probe on the mesh's `p3-control` channel (JSON `{type: "clock-ping", clientTime}` /
/// `{type: "clock-pong", clientTime, serverTime}`, PROTOCOL.md §13.10).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ClockProbe {
    /// A probe: `client_time` is the sender's local clock at sending, ms.
    Ping {
        /// Sender's local send time, ms (echoed).
        client_time: f64,
    },
    /// The controller's answer.
    Pong {
        /// The probe's `client_time`, echoed.
        client_time: f64,
        /// The room clock when the controller answered, shared-clock ms (integer).
        server_time: f64,
    },
}

/// Where the room clock comes from now (module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClockSource {
    /// The server (Control `ping` / `pong`).
    Server,
    /// The controller's kept clock, probed over the mesh.
    Peer {
        /// The controller's mesh id.
        controller: String,
        /// Whether the link to it is connected (no probes otherwise).
        linked: bool,
    },
    /// This device is the controller without the server: it answers, it does not probe.
    Host,
}

impl ClockSource {
    /// `"server"`, `"peer"` or `"host"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ClockSource::Server => "server",
            ClockSource::Peer { .. } => "peer",
            ClockSource::Host => "host",
        }
    }
}

/// A probe to send now.
#[derive(Clone, Debug, PartialEq)]
pub enum Probe {
    /// Control `ping {clientTime}` to the server.
    Server {
        /// `clientTime`, local ms.
        client_time: f64,
    },
    /// [`ClockProbe::Ping`] on `to`'s `p3-control` channel.
    Peer {
        /// The controller's mesh id.
        to: String,
        /// `clientTime`, local ms.
        client_time: f64,
    },
}

/// Counters (diagnostics and the e2e figures).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerClockStats {
    /// Pings sent to peers.
    pub probes_sent: u64,
    /// Pongs from peers taken as samples.
    pub samples: u64,
    /// Pongs from peers ignored (unsolicited, wrong peer, duplicate, implausible).
    pub ignored: u64,
    /// Pings from peers answered (as host).
    pub answered: u64,
    /// Pings from peers not answered (not host, or no room clock).
    pub refused: u64,
    /// New sources that started a burst.
    pub bursts: u64,
}

/// Routes clock probes to the server or the controller (module docs).
#[derive(Clone, Debug)]
pub struct PeerClock {
    source: ClockSource,
    /// Pings to peers in flight: `(client_time, peer)`, oldest first.
    outstanding: VecDeque<(f64, String)>,
    stats: PeerClockStats,
}

impl Default for PeerClock {
    fn default() -> Self {
        Self::new()
    }
}

impl PeerClock {
    /// Starts on [`ClockSource::Server`].
    pub fn new() -> PeerClock {
        PeerClock {
            source: ClockSource::Server,
            outstanding: VecDeque::new(),
            stats: PeerClockStats::default(),
        }
    }

    /// The current source.
    pub fn source(&self) -> &ClockSource {
        &self.source
    }

    /// Counters.
    pub fn stats(&self) -> PeerClockStats {
        self.stats
    }

    /// The room's authority now: `peer_authority` (a peer orders changes, no server),
    /// `controller` (the claim's controller, mesh id), `me` (this device's mesh id),
    /// `controller_linked` (the link to the controller is connected). A new controller, or a
    /// link to it that came back, starts a burst on `clock` at `now` (local ms); returning to
    /// the server starts one too (the server's clock is the reference again).
    pub fn handle_role(
        &mut self,
        peer_authority: bool,
        controller: &str,
        me: &str,
        controller_linked: bool,
        clock: &mut ClockSync,
        now: Millis,
    ) {
        let next = if !peer_authority || controller.is_empty() {
            ClockSource::Server
        } else if controller == me {
            ClockSource::Host
        } else {
            ClockSource::Peer {
                controller: controller.to_owned(),
                linked: controller_linked,
            }
        };
        if next == self.source {
            return;
        }
        let burst = match (&self.source, &next) {
            (_, ClockSource::Host) => false,
            (ClockSource::Host, ClockSource::Server) => true,
            (ClockSource::Peer { .. }, ClockSource::Server) => true,
            (ClockSource::Server, ClockSource::Server) => false,
            (_, ClockSource::Peer { linked, .. }) => *linked,
        };
        if !matches!(next, ClockSource::Peer { linked: true, .. }) {
            self.outstanding.clear();
        }
        self.source = next;
        if burst {
            self.stats.bursts += 1;
            clock.start_burst(now);
        }
    }

    /// When the next probe is due (local ms, for the owner's `Timeout`); `None` while hosting
    /// or while the link to the controller is down.
    #[must_use]
    pub fn next_probe_at(&self, clock: &ClockSync) -> Option<Millis> {
        match self.source {
            ClockSource::Server | ClockSource::Peer { linked: true, .. } => {
                Some(Millis::new(clock.next_probe_at()))
            }
            _ => None,
        }
    }

    /// The probe due at `now`, if any (recorded as sent). Like [`ClockSync::poll_output`] it
    /// also expires unanswered probes, so it may be called early.
    #[must_use]
    pub fn take_probe(&mut self, clock: &mut ClockSync, now: Millis) -> Option<Probe> {
        // Nothing to probe while hosting or while the controller's link is down.
        self.next_probe_at(clock)?;
        let client_time = clock.take_probe(now.get())?;
        match &self.source {
            ClockSource::Peer {
                controller,
                linked: true,
            } => {
                if self.outstanding.len() == MAX_OUTSTANDING {
                    self.outstanding.pop_front();
                }
                self.outstanding
                    .push_back((client_time, controller.clone()));
                self.stats.probes_sent += 1;
                Some(Probe::Peer {
                    to: controller.clone(),
                    client_time,
                })
            }
            _ => Some(Probe::Server { client_time }),
        }
    }

    /// A [`ClockProbe::Ping`] from peer `from` at local time `now`: the pong to send back, if
    /// this device hosts the room clock (module docs).
    #[must_use]
    pub fn handle_ping(
        &mut self,
        _from: &str,
        client_time: f64,
        clock: &ClockSync,
        now: Millis,
    ) -> Option<ClockProbe> {
        let answer = (self.source == ClockSource::Host && client_time.is_finite())
            .then(|| clock.answer_peer_probe(now.get()))
            .flatten();
        match answer {
            Some(server_time) => {
                self.stats.answered += 1;
                Some(ClockProbe::Pong {
                    client_time,
                    server_time: server_time.floor(),
                })
            }
            None => {
                self.stats.refused += 1;
                None
            }
        }
    }

    /// A [`ClockProbe::Pong`] from peer `from` arrived at local time `now`. Returns whether it
    /// was taken as a sample of `clock`: only an answer from the peer that was probed, for a
    /// probe still outstanding, while that peer is the source.
    pub fn handle_pong(
        &mut self,
        from: &str,
        client_time: f64,
        server_time: f64,
        clock: &mut ClockSync,
        now: Millis,
    ) -> bool {
        let expected = self
            .outstanding
            .iter()
            .position(|(t, p)| *t == client_time && p == from);
        let current =
            matches!(&self.source, ClockSource::Peer { controller, .. } if controller == from);
        let taken = match expected {
            Some(i) if current => {
                self.outstanding.remove(i);
                clock.handle_response(client_time, server_time, now)
            }
            _ => false,
        };
        if taken {
            self.stats.samples += 1;
        } else {
            self.stats.ignored += 1;
        }
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::sync::clock::tests::AtMs;

    fn ms(v: f64) -> Millis {
        Millis::new(v)
    }
    use crate::core::sync::clock::ClockConfig;

    const EPOCH: f64 = 1.7e12;

    /// A device clock: `true × (1 + drift) + skew`.
    #[derive(Clone, Copy)]
    struct Dev {
        skew: f64,
        drift: f64,
    }

    impl Dev {
        fn local(&self, t: f64) -> f64 {
            t * (1.0 + self.drift) + self.skew
        }
    }

    /// Syncs `cs` on `dev` with the server over 20-40 ms links from true `from` to `to`.
    fn server_sync(cs: &mut ClockSync, dev: Dev, from: f64, to: f64, rng: &mut fastrand::Rng) {
        let mut inflight: Vec<(f64, f64, f64)> = Vec::new();
        let mut t = from;
        while t < to {
            if let Some(ct) = cs.probe(dev.local(t)) {
                let up = 20.0 + rng.f64() * 20.0;
                let down = 20.0 + rng.f64() * 20.0;
                inflight.push((t + up + down, ct, (t + up + EPOCH).floor()));
            }
            inflight.retain(|&(at, ct, s)| {
                let due = at <= t;
                if due {
                    cs.respond(ct, s, dev.local(t));
                }
                !due
            });
            t += 0.5;
        }
    }

    /// One device of the mesh: its clock, estimator and router.
    struct Node {
        id: &'static str,
        dev: Dev,
        cs: ClockSync,
        pc: PeerClock,
    }

    impl Node {
        fn new(id: &'static str, dev: Dev) -> Node {
            Node {
                id,
                dev,
                cs: ClockSync::new(ClockConfig::default(), Millis::new(dev.local(0.0))),
                pc: PeerClock::new(),
            }
        }
        fn error(&self, t: f64) -> f64 {
            self.cs.server_now(self.dev.local(t)) - (t + EPOCH)
        }
    }

    /// Runs the mesh from true `from` to `to` with `ctrl` as the controller, links of
    /// `base + U(0, jitter)` ms one way; every `spike`-th message waits 300 ms more (a queued
    /// one). Returns pings sent to the server meanwhile.
    #[allow(clippy::too_many_arguments)]
    fn run_mesh(
        nodes: &mut [Node],
        ctrl: usize,
        from: f64,
        to: f64,
        base: f64,
        jitter: f64,
        spike: u64,
        rng: &mut fastrand::Rng,
    ) -> usize {
        // (arrive, from, to, probe)
        let mut inflight: Vec<(f64, usize, usize, ClockProbe)> = Vec::new();
        let mut n = 0u64;
        let mut server_pings = 0;
        let mut delay = |rng: &mut fastrand::Rng| {
            n += 1;
            base + rng.f64() * jitter + if n % spike == 0 { 300.0 } else { 0.0 }
        };
        let ctrl_id = nodes[ctrl].id;
        let mut t = from;
        while t < to {
            for (i, nd) in nodes.iter_mut().enumerate() {
                let me = nd.id;
                nd.pc
                    .handle_role(true, ctrl_id, me, true, &mut nd.cs, ms(nd.dev.local(t)));
                match nd.pc.take_probe(&mut nd.cs, ms(nd.dev.local(t))) {
                    Some(Probe::Peer { to, client_time }) => {
                        assert_eq!(to, ctrl_id);
                        inflight.push((t + delay(rng), i, ctrl, ClockProbe::Ping { client_time }));
                    }
                    Some(Probe::Server { .. }) => server_pings += 1,
                    None => {}
                }
            }
            let mut due: Vec<(f64, usize, usize, ClockProbe)> = Vec::new();
            inflight.retain(|m| {
                let d = m.0 <= t;
                if d {
                    due.push(*m);
                }
                !d
            });
            for (_, src, dst, probe) in due {
                let from_id = nodes[src].id;
                let nd = &mut nodes[dst];
                let local = nd.dev.local(t);
                match probe {
                    ClockProbe::Ping { client_time } => {
                        if let Some(pong) =
                            nd.pc.handle_ping(from_id, client_time, &nd.cs, ms(local))
                        {
                            inflight.push((t + delay(rng), dst, src, pong));
                        }
                    }
                    ClockProbe::Pong {
                        client_time,
                        server_time,
                    } => {
                        nd.pc
                            .handle_pong(from_id, client_time, server_time, &mut nd.cs, ms(local));
                    }
                }
            }
            t += 0.5;
        }
        server_pings
    }

    #[test]
    fn listeners_follow_the_hosts_kept_clock_and_a_new_device_gets_it() {
        for seed in 0..10 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let devs = [
                Dev {
                    skew: 1800.0,
                    drift: 30e-6,
                },
                Dev {
                    skew: -1900.0,
                    drift: -20e-6,
                },
                Dev {
                    skew: 400.0,
                    drift: 5e-6,
                },
            ];
            let mut nodes: Vec<Node> = ["a", "b", "c"]
                .iter()
                .zip(devs)
                .map(|(id, d)| Node::new(id, d))
                .collect();
            // a and b sync with the server; c never does (it joined as the server went).
            for nd in nodes.iter_mut().take(2) {
                server_sync(&mut nd.cs, nd.dev, 0.0, 3000.0, &mut rng);
                assert!(nd.cs.is_synced());
            }
            assert!(!nodes[2].cs.is_synced());
            // Serverless from 3 s: a hosts. 1-3 ms DataChannel links, every 7th message
            // queued 300 ms.
            let pings = run_mesh(&mut nodes, 0, 3000.0, 13_000.0, 1.0, 2.0, 7, &mut rng);
            assert_eq!(pings, 0, "nothing probes the server while serverless");
            assert_eq!(nodes[0].pc.source(), &ClockSource::Host);
            assert_eq!(nodes[0].pc.stats().probes_sent, 0);
            assert!(nodes[0].pc.stats().answered > 40);
            let t = 13_000.0;
            let room = nodes[0].error(t);
            assert!(
                room.abs() < 10.0,
                "seed {seed}: the kept clock is {room} ms off"
            );
            for nd in &nodes[1..] {
                let s = nd.pc.stats();
                assert!(nd.cs.is_synced(), "seed {seed} {}", nd.id);
                assert!(s.samples > 30, "seed {seed} {}: {s:?}", nd.id);
                assert_eq!(s.bursts, 1, "seed {seed} {}", nd.id);
                // Against the room clock (the host's), within the link's base latency.
                let err = nd.error(t) - room;
                assert!(
                    err.abs() < 3.0,
                    "seed {seed} {}: {err} ms from the room",
                    nd.id
                );
            }
        }
    }

    #[test]
    fn a_new_controller_answers_from_its_own_mapping_and_listeners_burst() {
        let mut rng = fastrand::Rng::with_seed(5);
        let devs = [
            Dev {
                skew: 700.0,
                drift: 10e-6,
            },
            Dev {
                skew: -300.0,
                drift: -10e-6,
            },
            Dev {
                skew: 1500.0,
                drift: 0.0,
            },
        ];
        let mut nodes: Vec<Node> = ["a", "b", "c"]
            .iter()
            .zip(devs)
            .map(|(id, d)| Node::new(id, d))
            .collect();
        for nd in nodes.iter_mut() {
            server_sync(&mut nd.cs, nd.dev, 0.0, 3000.0, &mut rng);
        }
        run_mesh(&mut nodes, 0, 3000.0, 8000.0, 1.0, 2.0, 1000, &mut rng);
        let room_a = nodes[0].error(8000.0);
        // a is gone; b is elected and hosts its own mapping; c bursts towards b.
        let mut rest: Vec<Node> = nodes.drain(1..).collect();
        run_mesh(&mut rest, 0, 8000.0, 14_000.0, 1.0, 2.0, 1000, &mut rng);
        assert_eq!(rest[0].pc.source(), &ClockSource::Host);
        assert_eq!(rest[1].pc.stats().bursts, 2);
        let t = 14_000.0;
        let room_b = rest[0].error(t);
        assert!(
            (room_b - room_a).abs() < 3.0,
            "b's clock {room_b} vs a's {room_a}"
        );
        assert!((rest[1].error(t) - room_b).abs() < 3.0);
    }

    #[test]
    fn answers_are_taken_only_from_the_probed_controller() {
        let dev = Dev {
            skew: 0.0,
            drift: 0.0,
        };
        let mut cs = ClockSync::new(ClockConfig::default(), Millis::ZERO);
        let mut pc = PeerClock::new();
        // Link down: no probes, no deadline.
        pc.handle_role(true, "ctrl", "me", false, &mut cs, ms(0.0));
        assert_eq!(pc.next_probe_at(&cs), None);
        assert_eq!(pc.take_probe(&mut cs, ms(0.0)), None);
        assert_eq!(pc.stats().bursts, 0);
        // Link up: a burst to the controller.
        pc.handle_role(true, "ctrl", "me", true, &mut cs, ms(10.0));
        assert_eq!(pc.stats().bursts, 1);
        let Some(Probe::Peer { to, client_time }) = pc.take_probe(&mut cs, ms(10.0)) else {
            panic!("a peer probe");
        };
        assert_eq!(to, "ctrl");
        // Another member's answer, an unsolicited one, then the right one, then a duplicate.
        assert!(!pc.handle_pong("other", client_time, EPOCH, &mut cs, ms(12.0)));
        assert!(!pc.handle_pong("ctrl", client_time + 1.0, EPOCH, &mut cs, ms(12.0)));
        assert!(pc.handle_pong("ctrl", client_time, EPOCH, &mut cs, ms(dev.local(12.0))));
        assert!(!pc.handle_pong("ctrl", client_time, EPOCH, &mut cs, ms(13.0)));
        assert_eq!(pc.stats().samples, 1);
        assert_eq!(pc.stats().ignored, 3);
        // Not the host: pings are not answered.
        assert_eq!(pc.handle_ping("x", 5.0, &cs, ms(20.0)), None);
        // Back on the server: server probes again, after a burst.
        pc.handle_role(false, "ctrl", "me", true, &mut cs, ms(30.0));
        assert_eq!(pc.source(), &ClockSource::Server);
        assert_eq!(pc.stats().bursts, 2);
        assert!(matches!(
            pc.take_probe(&mut cs, ms(30.0)),
            Some(Probe::Server { .. })
        ));
        // A pong for an old peer probe is not taken any more.
        assert!(!pc.handle_pong("ctrl", client_time, EPOCH, &mut cs, ms(31.0)));
    }

    #[test]
    fn a_host_that_never_synced_does_not_answer() {
        let mut cs = ClockSync::new(ClockConfig::default(), Millis::ZERO);
        let mut pc = PeerClock::new();
        pc.handle_role(true, "me", "me", false, &mut cs, ms(0.0));
        assert_eq!(pc.source(), &ClockSource::Host);
        assert_eq!(pc.next_probe_at(&cs), None);
        assert_eq!(pc.handle_ping("b", 1.0, &cs, ms(2.0)), None);
        assert_eq!(pc.stats().refused, 1);
        // Once it has a mapping it answers, floored to integer ms.
        cs.respond(10.0, EPOCH + 0.25, 12.0);
        match pc.handle_ping("b", 1.0, &cs, ms(20.0)) {
            Some(ClockProbe::Pong { server_time, .. }) => {
                assert_eq!(server_time, server_time.floor())
            }
            other => panic!("{other:?}"),
        }
    }
}
