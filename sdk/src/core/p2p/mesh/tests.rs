//! A harness of N [`Mesh`]es with a model of RTCPeerConnection (signaling states, implicit
//! rollback, both negotiated DataChannels opening once both sides hold an offer/answer pair)
//! and a FIFO network: the server routes `SendSignal` while up, DataChannels carry control
//! and lane frames between connected pairs. Virtual clock.

use super::*;
use crate::core::drive::Polled;
use crate::core::p2p::election::{Claim, Election, ElectionOutput};
use std::collections::HashMap;

fn ms(v: u64) -> Millis {
    Millis::from_u64(v)
}

/// The deadline (ms) of a drained mesh's [`MeshOutput::Timeout`].
fn deadline(n: &mut Mesh, now: u64) -> Option<u64> {
    match n.poll_output(ms(now)) {
        MeshOutput::Timeout(t) => t.deadline().map(Millis::as_u64),
        o => panic!("{o:?} before the timeout"),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sig {
    Stable,
    HaveLocalOffer,
    HaveRemoteOffer,
}

struct FakePc {
    sig: Sig,
    /// Completed an offer/answer exchange.
    negotiated: bool,
    open: bool,
}

enum Task {
    NegotiationNeeded(usize, String),
    Signal(usize, SignalMessage),
    Control(usize, String, String),
    Lanes(usize, String, Vec<u8>),
    ChannelsOpen(usize, String),
    ChannelsClosed(usize, String),
    /// The server answers a heartbeat ping.
    Pong(usize),
    /// `getStats()` of every connected link of a node settled.
    Stats(usize),
}

struct Net {
    nodes: Vec<Mesh>,
    ids: Vec<String>,
    pcs: Vec<HashMap<String, FakePc>>,
    server_up: bool,
    tasks: VecDeque<Task>,
    now: u64,
    inbox: Vec<Vec<(String, Lane, Value)>>,
    events: Vec<Vec<MeshEvent>>,
    offers_sent: usize,
    /// Signals this node sends through the server are lost.
    lose_signals_of: Option<usize>,
    /// Nodes whose page is gone ([`Net::kill`]).
    dead: Vec<bool>,
    /// When each node asked for stats ([`MeshOutput::SampleStats`]).
    stats_at: Vec<Vec<u64>>,
    /// The RTT every link's stats report (ms).
    stats_rtt: f64,
    /// One-way delay of `p3-control` messages (ms; 0: at once).
    control_delay_ms: u64,
    /// Control messages in flight: `(deliver at, task)`, in delivery order (one delay).
    delayed: VecDeque<(u64, Task)>,
    /// Every `alive` sent: `(when, from, to, answer)`.
    alive_log: Vec<(u64, usize, String, bool)>,
}

impl Net {
    fn new(n: usize) -> Net {
        Net::with(n, |_| {})
    }

    fn with(n: usize, tweak: impl Fn(&mut MeshConfig)) -> Net {
        let ids: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
        let mut net = Net {
            nodes: ids
                .iter()
                .enumerate()
                .map(|(i, id)| {
                    let mut cfg = MeshConfig::new(id.clone(), i as u64 + 1);
                    tweak(&mut cfg);
                    Mesh::new(cfg)
                })
                .collect(),
            pcs: (0..n).map(|_| HashMap::new()).collect(),
            inbox: vec![Vec::new(); n],
            events: vec![Vec::new(); n],
            ids,
            server_up: true,
            tasks: VecDeque::new(),
            now: 0,
            offers_sent: 0,
            lose_signals_of: None,
            dead: vec![false; n],
            stats_at: vec![Vec::new(); n],
            stats_rtt: 12.0,
            control_delay_ms: 0,
            delayed: VecDeque::new(),
            alive_log: Vec::new(),
        };
        for i in 0..n {
            net.nodes[i].handle_server(true, ms(0));
            let members = net.ids.clone();
            net.nodes[i].handle_members(members, ms(0));
        }
        net
    }

    fn idx(&self, id: &str) -> usize {
        self.ids.iter().position(|x| x == id).unwrap()
    }

    /// Node `k`'s page closes: its connections go away, its peers see their channels close.
    fn kill(&mut self, k: usize) {
        self.dead[k] = true;
        let me = self.ids[k].clone();
        for (peer, pc) in std::mem::take(&mut self.pcs[k]) {
            if pc.open {
                let j = self.idx(&peer);
                self.tasks.push_back(Task::ChannelsClosed(j, me.clone()));
            }
        }
    }

    /// Node `k`'s browser dies: nothing more from it, and nobody is told (no channel close).
    fn vanish(&mut self, k: usize) {
        self.dead[k] = true;
        self.pcs[k].clear();
    }

    fn set_server(&mut self, up: bool) {
        self.server_up = up;
        for n in &mut self.nodes {
            n.handle_server(up, ms(self.now));
        }
    }

    /// Drains every node's outputs and runs tasks until nothing is left; then advances the
    /// clock to the earliest deadline, up to `until`.
    fn drive(&mut self, until: u64) {
        // A deadline that handle_timeout does not move would spin a browser's timer.
        let mut same_instant = 0;
        loop {
            for i in 0..self.nodes.len() {
                if self.dead[i] {
                    while self.nodes[i].poll_output(ms(self.now)).timeout().is_none() {}
                    continue;
                }
                self.drain(i);
            }
            if let Some(t) = self.tasks.pop_front() {
                self.run(t);
                continue;
            }
            if self.delayed.front().is_some_and(|(at, _)| *at <= self.now) {
                let (_, t) = self.delayed.pop_front().unwrap();
                self.run(t);
                continue;
            }
            let (dead, now) = (&self.dead, self.now);
            let next = self
                .nodes
                .iter_mut()
                .enumerate()
                .filter(|(i, _)| !dead[*i])
                .filter_map(|(_, n)| deadline(n, now))
                .chain(self.delayed.front().map(|(at, _)| *at))
                .min();
            match next {
                Some(t) if t <= until => {
                    if t <= self.now {
                        same_instant += 1;
                        assert!(same_instant < 10_000, "deadline {t} stuck at {}", self.now);
                    } else {
                        same_instant = 0;
                    }
                    self.now = self.now.max(t);
                    for (i, n) in self.nodes.iter_mut().enumerate() {
                        if !self.dead[i] && deadline(n, self.now).is_some_and(|d| d <= self.now) {
                            n.handle_timeout(ms(self.now));
                        }
                    }
                }
                _ => {
                    self.now = self.now.max(until);
                    return;
                }
            }
        }
    }

    fn drain(&mut self, i: usize) {
        loop {
            let o = self.nodes[i].poll_output(ms(self.now));
            let me = self.ids[i].clone();
            match o {
                MeshOutput::Timeout(_) => break,
                MeshOutput::OpenPeer { peer, .. } => {
                    self.pcs[i].insert(
                        peer.clone(),
                        FakePc {
                            sig: Sig::Stable,
                            negotiated: false,
                            open: false,
                        },
                    );
                    self.tasks.push_back(Task::NegotiationNeeded(i, peer));
                }
                MeshOutput::ClosePeer { peer } => {
                    if let Some(pc) = self.pcs[i].remove(&peer) {
                        if pc.open {
                            let j = self.idx(&peer);
                            self.tasks.push_back(Task::ChannelsClosed(j, me.clone()));
                        }
                    }
                }
                MeshOutput::Negotiate { peer, action } => self.negotiate(i, &peer, action),
                MeshOutput::SendSignal(m) => {
                    assert!(self.server_up, "signal via a dead server");
                    if self.lose_signals_of == Some(i) {
                        continue;
                    }
                    let j = self.idx(&m.to);
                    self.tasks.push_back(Task::Signal(j, m));
                }
                MeshOutput::SendControl { peer, text } => {
                    assert!(self.pcs[i].get(&peer).is_some_and(|p| p.open));
                    if let Ok(ControlMessage::Alive { answer }) = serde_json::from_str(&text) {
                        self.alive_log.push((self.now, i, peer.clone(), answer));
                    }
                    let j = self.idx(&peer);
                    let task = Task::Control(j, me, text);
                    if self.control_delay_ms == 0 {
                        self.tasks.push_back(task);
                    } else {
                        self.delayed
                            .push_back((self.now + self.control_delay_ms, task));
                    }
                }
                MeshOutput::Transmit { peer, bytes } => {
                    assert!(bytes.len() <= 16 * 1024, "frame over 16 KiB");
                    let j = self.idx(&peer);
                    if self.pcs[i].get(&peer).is_some_and(|p| p.open) {
                        self.tasks.push_back(Task::Lanes(j, me, bytes));
                    }
                }
                MeshOutput::Event(MeshEvent::Message { from, lane, value }) => {
                    self.inbox[i].push((from, lane, value))
                }
                MeshOutput::Ping => {
                    if self.server_up {
                        self.tasks.push_back(Task::Pong(i));
                    }
                }
                MeshOutput::SampleStats => {
                    self.stats_at[i].push(self.now);
                    self.tasks.push_back(Task::Stats(i));
                }
                MeshOutput::Event(e) => self.events[i].push(e),
            }
        }
    }

    fn negotiate(&mut self, i: usize, peer: &str, action: NegotiationAction) {
        let me = self.ids[i].clone();
        let Some(pc) = self.pcs[i].get_mut(peer) else {
            return;
        };
        match action {
            NegotiationAction::CreateOffer => {
                pc.sig = Sig::HaveLocalOffer;
                self.offers_sent += 1;
                self.nodes[i].handle_local_description(peer, true, format!("offer {me}"));
            }
            NegotiationAction::AcceptOffer { .. } => {
                // Implicit rollback of our own offer, then answer.
                pc.sig = Sig::HaveRemoteOffer;
                pc.sig = Sig::Stable;
                pc.negotiated = true;
                self.nodes[i].handle_local_description(peer, false, format!("answer {me}"));
                self.check_open(i, peer);
            }
            NegotiationAction::AcceptAnswer { .. } => {
                if pc.sig == Sig::HaveLocalOffer {
                    pc.sig = Sig::Stable;
                    pc.negotiated = true;
                    self.check_open(i, peer);
                } else {
                    self.nodes[i].handle_negotiation_failed(peer, "setRemoteDescription", "state");
                }
            }
            _ => {}
        }
    }

    fn check_open(&mut self, i: usize, peer: &str) {
        let j = self.idx(peer);
        let me = self.ids[i].clone();
        let both = self.pcs[i]
            .get(peer)
            .is_some_and(|p| p.negotiated && !p.open)
            && self.pcs[j]
                .get(&me)
                .is_some_and(|p| p.negotiated && !p.open);
        if both {
            self.pcs[i].get_mut(peer).unwrap().open = true;
            self.pcs[j].get_mut(&me).unwrap().open = true;
            self.tasks.push_back(Task::ChannelsOpen(i, peer.to_owned()));
            self.tasks.push_back(Task::ChannelsOpen(j, me));
        }
    }

    fn run(&mut self, t: Task) {
        let now = self.now;
        let target = match &t {
            Task::NegotiationNeeded(i, _)
            | Task::Signal(i, _)
            | Task::Control(i, _, _)
            | Task::Lanes(i, _, _)
            | Task::ChannelsOpen(i, _)
            | Task::ChannelsClosed(i, _)
            | Task::Pong(i)
            | Task::Stats(i) => *i,
        };
        if self.dead[target] {
            return;
        }
        match t {
            Task::NegotiationNeeded(i, p) => {
                if self.pcs[i].contains_key(&p) {
                    self.nodes[i].handle_negotiation_needed(&p, ms(self.now))
                }
            }
            Task::Signal(j, m) => self.nodes[j].handle_server_signal(m, ms(now)),
            Task::Control(j, from, text) => {
                if self.pcs[j].get(&from).is_some_and(|p| p.open) {
                    self.nodes[j].handle_control(&from, &text, ms(now))
                }
            }
            Task::Lanes(j, from, bytes) => {
                if self.pcs[j].get(&from).is_some_and(|p| p.open) {
                    self.nodes[j].handle_lane_input(&from, &bytes, ms(now));
                    // The fake channel sends at once: its buffer is empty again.
                    let i = self.idx(&from);
                    let me = self.ids[j].clone();
                    self.nodes[i].handle_lane_buffered(&me, 0);
                }
            }
            Task::ChannelsOpen(i, p) => {
                self.nodes[i].handle_channel_open(&p, Channel::Control, ms(now));
                self.nodes[i].handle_channel_open(&p, Channel::Lanes, ms(now));
            }
            Task::Pong(i) => {
                if self.server_up {
                    self.nodes[i].handle_server_pong(20.0, ms(now));
                }
            }
            Task::Stats(i) => {
                for peer in self.nodes[i].connected_peers() {
                    let stats = StatsData {
                        rtt: self.stats_rtt,
                        jitter: 0.0,
                        packet_loss: 0.0,
                        bitrate: 0.0,
                        codec: String::new(),
                        ice_state: "connected".into(),
                        timestamp: now as f64,
                    };
                    self.nodes[i].handle_stats(&peer, stats, ms(now));
                }
            }
            Task::ChannelsClosed(i, p) => {
                if let Some(pc) = self.pcs[i].get_mut(&p) {
                    pc.open = false;
                }
                self.nodes[i].handle_channel_closed(&p, Channel::Lanes, ms(now));
            }
        }
    }

    fn all_connected(&self) -> bool {
        self.nodes
            .iter()
            .all(|n| n.wanted().iter().all(|p| n.connected_peers().contains(p)))
    }
}

#[test]
fn glare_when_both_sides_offer_at_once() {
    let mut net = Net::with(3, |c| c.polite_offer_delay_ms = 0);
    net.drive(100);
    assert!(net.all_connected());
    // Both sides of every link offered (negotiated channels); perfect negotiation kept one.
    assert_eq!(net.offers_sent, 6);
}

#[test]
fn polite_side_offers_only_if_the_impolite_one_does_not() {
    let mut net = Net::new(2);
    net.drive(100);
    assert!(net.all_connected());
    assert_eq!(net.offers_sent, 1, "only the impolite side offered");
    // The impolite side never offers (it does not know the polite one): after the wait the
    // polite side does.
    let mut net = Net::new(2);
    net.nodes[1].handle_members(["s1".to_string()], ms(0));
    net.drive(100);
    assert!(!net.nodes[0].connected_peers().contains(&"s1".to_string()));
    net.drive(POLITE_OFFER_DELAY_MS + 100);
    assert!(net.nodes[0].connected_peers().contains(&"s1".to_string()));
}

#[test]
fn a_link_that_does_not_connect_is_opened_again() {
    let mut net = Net::new(2);
    // Everything s1 sends through the server is lost: s0 never gets an answer.
    net.lose_signals_of = Some(1);
    net.drive(CONNECT_TIMEOUT_MS - 10);
    assert!(!net.all_connected());
    net.lose_signals_of = None;
    net.drive(CONNECT_TIMEOUT_MS + RELINK_DELAY_MS + 3000);
    assert!(net.all_connected());
    assert!(net.events[0].iter().any(|e| matches!(
        e,
        MeshEvent::PeerState {
            state: LinkState::Failed,
            ..
        }
    )));
}

#[test]
fn three_devices_full_mesh_and_chunked_lanes() {
    let mut net = Net::new(3);
    net.drive(100);
    assert!(net.all_connected());
    assert_eq!(net.offers_sent, 3);
    let big: String = "x".repeat(40 * 1024);
    net.nodes[0]
        .send(Lane::Data, &serde_json::json!({"big": big}), Some("s2"))
        .unwrap();
    net.nodes[1]
        .send(Lane::Messaging, &serde_json::json!({"hi": 1}), None)
        .unwrap();
    net.drive(200);
    let got: Vec<_> = net.inbox[2].iter().filter(|m| m.0 == "s0").collect();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, Lane::Data);
    assert_eq!(got[0].2["big"].as_str().unwrap().len(), 40 * 1024);
    assert!(net.inbox[0].iter().any(|m| m.0 == "s1" && m.2["hi"] == 1));
    assert!(net.inbox[2].iter().any(|m| m.0 == "s1" && m.2["hi"] == 1));
    let e = net.nodes[0].send(Lane::Data, &Value::Null, Some("nobody"));
    assert_eq!(e.unwrap_err().code(), ErrorCode::UnknownTarget);
}

#[test]
fn link_heals_without_the_server_through_a_relay() {
    let mut net = Net::new(3);
    net.drive(100);
    assert!(net.all_connected());
    net.set_server(false);
    net.nodes[0].close_link("s2", ms(net.now)).unwrap();
    let t = net.now;
    net.drive(t + 50);
    assert!(!net.nodes[0].connected_peers().contains(&"s2".to_string()));
    // A message queued meanwhile is delivered once the link is back (the mux resumes).
    net.nodes[0]
        .send(
            Lane::Sync,
            &serde_json::json!({"while": "down"}),
            Some("s2"),
        )
        .unwrap();
    net.drive(t + 5000);
    assert!(net.all_connected());
    let relayed: Vec<_> = net.events[1]
        .iter()
        .filter(|e| matches!(e, MeshEvent::SignalRelayed { .. }))
        .collect();
    assert!(!relayed.is_empty(), "s1 relayed the s0-s2 signaling");
    let got: Vec<_> = net.inbox[2]
        .iter()
        .filter(|m| m.2 == serde_json::json!({"while": "down"}))
        .collect();
    assert_eq!(got.len(), 1);
}

#[test]
fn signals_without_a_route_wait_for_one() {
    let mut net = Net::new(2);
    net.set_server(false);
    net.drive(100);
    assert!(!net.all_connected());
    net.set_server(true);
    net.drive(200);
    assert!(net.all_connected());
}

#[test]
fn hub_topology_above_six_and_member_left() {
    let mut net = Net::new(8);
    net.drive(100);
    assert!(net.all_connected());
    // Controller s0 (lowest), deputy s1: a listener holds exactly those two links.
    assert_eq!(net.nodes[5].connected_peers(), vec!["s0", "s1"]);
    assert_eq!(net.nodes[0].connected_peers().len(), 7);
    net.nodes[0].handle_member_left("s5", ms(net.now));
    let t = net.now;
    net.drive(t + 100);
    assert!(!net.nodes[0].connected_peers().contains(&"s5".to_string()));
    assert!(net.events[0].iter().any(|e| matches!(
        e,
        MeshEvent::PeerState { peer, state: LinkState::Closed } if peer == "s5"
    )));
}

#[test]
fn stats_become_quality_events_and_telemetry() {
    let mut net = Net::new(2);
    net.drive(100);
    let stats = StatsData {
        rtt: 12.0,
        jitter: 0.0,
        packet_loss: 0.0,
        bitrate: 0.0,
        codec: String::new(),
        ice_state: "connected".into(),
        timestamp: 100.0,
    };
    net.nodes[0].handle_stats("s1", stats, ms(net.now));
    net.drive(200);
    assert!(net.events[0].iter().any(|e| matches!(
        e,
        MeshEvent::Quality {
            quality: NetworkQuality::Excellent,
            ..
        }
    )));
    let t = net.inbox[1]
        .iter()
        .find(|m| m.1 == Lane::Telemetry)
        .expect("published on Telemetry");
    assert_eq!(t.2["type"], "link-stats");
    assert_eq!(t.2["quality"], "excellent");
    assert_eq!(t.2["rtt"], 12.0);
}

#[test]
fn bad_control_is_an_error_event_not_a_panic() {
    let mut net = Net::new(2);
    net.drive(100);
    net.nodes[0].handle_control("s1", "{not json", ms(net.now));
    net.nodes[0].handle_control(
        "s1",
        r#"{"type":"relay","signal":{"type":"end","from":"s9","to":"s7"}}"#,
        ms(net.now),
    );
    net.nodes[0].handle_lane_input("s1", &[0xff, 0, 1], ms(net.now));
    net.drive(200);
    let codes: Vec<ErrorCode> = net.events[0]
        .iter()
        .filter_map(|e| match e {
            MeshEvent::Error { code, .. } => Some(*code),
            _ => None,
        })
        .collect();
    assert!(codes.contains(&ErrorCode::BadControl));
    assert!(codes.contains(&ErrorCode::UnknownTarget));
    assert!(codes.len() >= 3, "{codes:?}");
}

#[test]
fn tier_follows_the_server_and_the_links() {
    let mut net = Net::new(3);
    net.drive(100);
    assert!(net.nodes.iter().all(|n| n.tier() == Tier::Socket));
    // Crash: the socket closes, usable links exist: webrtc at once.
    net.set_server(false);
    let t = net.now;
    net.drive(t + 10);
    for (i, n) in net.nodes.iter().enumerate() {
        assert_eq!(n.tier(), Tier::Webrtc);
        assert!(net.events[i].iter().any(|e| matches!(
            e,
            MeshEvent::Tier {
                from: Tier::Socket,
                to: Tier::Webrtc,
                reason: TierReason::SocketClosed,
                ..
            }
        )));
    }
    // s0 loses both links (and keeps them closed): offline.
    net.nodes[0].close_link("s1", ms(net.now)).unwrap();
    net.nodes[0].close_link("s2", ms(net.now)).unwrap();
    let t = net.now;
    net.drive(t + 10);
    assert_eq!(net.nodes[0].tier(), Tier::Offline);
}

#[test]
fn hub_follows_a_new_controller() {
    let mut net = Net::new(8);
    net.drive(100);
    assert_eq!(net.nodes[6].connected_peers(), vec!["s0", "s1"]);
    for n in &mut net.nodes {
        n.set_controller(Some("s5".into()), ms(100));
    }
    net.drive(3000);
    assert!(net.all_connected());
    // Controller s5, deputy s0 (lowest other id): s1 is a listener now.
    assert_eq!(net.nodes[6].connected_peers(), vec!["s0", "s5"]);
    assert_eq!(net.nodes[1].connected_peers(), vec!["s0", "s5"]);
    assert_eq!(net.nodes[5].connected_peers().len(), 7);
}

/// What the music tier's glue (`wasm::music::tiers`) does, sans-IO: each live device's
/// election sees its connected links, claims go to the connected peers, and the mesh's hub
/// follows the adopted claim's controller (PROTOCOL.md §13.13).
fn follow_elections(net: &mut Net, elections: &mut [Election]) {
    let mut announced = Vec::new();
    for (i, e) in elections.iter_mut().enumerate() {
        if net.dead[i] {
            continue;
        }
        let reachable: BTreeSet<String> = net.nodes[i].connected_peers().into_iter().collect();
        e.handle_membership(&reachable);
        crate::core::drive::drain(e, crate::core::drive::Millis::ZERO, |o| {
            if let ElectionOutput::Announce(claim) = o {
                announced.extend(reachable.iter().map(|p| (net.idx(p), claim.clone())));
            }
        });
    }
    for (j, claim) in announced {
        if !net.dead[j] {
            elections[j].handle_claim(&claim);
            crate::core::drive::drain(&mut elections[j], crate::core::drive::Millis::ZERO, |_| {});
        }
    }
    for (i, e) in elections.iter().enumerate() {
        let c = e.claim().controller.clone();
        if !net.dead[i] && net.nodes[i].hub().map(|h| h.0) != Some(c.clone()) {
            net.nodes[i].set_controller(Some(c), ms(net.now));
        }
    }
}

/// Drives for `ms` with the elections followed every 50 ms.
fn drive_elections(net: &mut Net, elections: &mut [Election], ms: u64) {
    let end = net.now + ms;
    while net.now < end {
        let t = net.now + 50;
        net.drive(t);
        follow_elections(net, elections);
    }
}

/// Connected links between live devices (each counted once), checking both ends agree.
fn live_links(net: &Net) -> usize {
    let mut pairs = BTreeSet::new();
    for (i, n) in net.nodes.iter().enumerate() {
        if net.dead[i] {
            continue;
        }
        for p in n.connected_peers() {
            let j = net.idx(&p);
            assert!(!net.dead[j], "{} still connected to dead {p}", net.ids[i]);
            assert!(
                net.nodes[j].connected_peers().contains(&net.ids[i]),
                "{} - {p} connected on one end only",
                net.ids[i]
            );
            pairs.insert((i.min(j), i.max(j)));
        }
    }
    pairs.len()
}

/// Every live device holds a connected link to both hubs, the hubs to every live device.
fn assert_hub(net: &Net, controller: &str, deputy: &str) {
    let live: Vec<usize> = (0..net.nodes.len()).filter(|i| !net.dead[*i]).collect();
    for &i in &live {
        let id = &net.ids[i];
        let n = &net.nodes[i];
        assert_eq!(
            n.hub(),
            Some((controller.to_owned(), Some(deputy.to_owned()))),
            "{id}: hub"
        );
        let connected = n.connected_peers();
        if id == controller || id == deputy {
            assert_eq!(connected.len(), live.len() - 1, "{id}: {connected:?}");
        } else {
            let mut hubs = vec![controller.to_owned(), deputy.to_owned()];
            hubs.sort();
            assert_eq!(connected, hubs, "{id}");
        }
    }
    assert_eq!(live_links(net), 2 * live.len() - 3, "2n - 3 links");
}

fn hub_recentres_on_the_elected_dj(n: usize, abrupt: bool) {
    let gone = |net: &mut Net, k: usize| {
        if abrupt {
            net.vanish(k);
        } else {
            net.kill(k);
        }
    };
    let mut net = Net::new(n);
    // The server's DJ is s3 (not the lowest id): the hub centres on it while the server is up.
    for node in &mut net.nodes {
        node.set_controller(Some("s3".into()), ms(0));
    }
    net.drive(5000);
    assert!(net.all_connected());
    assert_hub(&net, "s3", "s0");
    let mut elections: Vec<Election> = net
        .ids
        .iter()
        .map(|id| Election::new(id.clone(), Claim::new(4, "s3")))
        .collect();

    // Server crash: peers are the authority, the DJ is reachable and stays.
    net.set_server(false);
    for (i, e) in elections.iter_mut().enumerate() {
        let reachable = net.nodes[i].connected_peers().into_iter().collect();
        e.handle_server_lost(&reachable);
    }
    drive_elections(&mut net, &mut elections, 500);
    assert!(elections.iter().all(|e| *e.claim() == Claim::new(4, "s3")));
    assert_hub(&net, "s3", "s0");

    // The DJ's page closes: s0 (the deputy, the lowest reachable id) is elected and the hub
    // re-centres on it with s1 as deputy; s1's new links are signalled through s0.
    gone(&mut net, 3);
    drive_elections(&mut net, &mut elections, 10_000);
    for (i, e) in elections.iter().enumerate() {
        if !net.dead[i] {
            assert_eq!(*e.claim(), Claim::new(5, "s0"), "{}", net.ids[i]);
            assert!(net.nodes[i].lost().contains("s3"), "{}", net.ids[i]);
        }
    }
    assert_hub(&net, "s0", "s1");
    assert!(net.events[0]
        .iter()
        .any(|e| matches!(e, MeshEvent::SignalRelayed { .. })));

    // And again: the new DJ goes too.
    gone(&mut net, 0);
    drive_elections(&mut net, &mut elections, 10_000);
    for (i, e) in elections.iter().enumerate() {
        if !net.dead[i] {
            assert_eq!(*e.claim(), Claim::new(6, "s1"), "{}", net.ids[i]);
        }
    }
    // The next lowest id, byte-wise ("s10" before "s2" with 12 devices).
    let mut live: Vec<&String> = (0..n)
        .filter(|i| !net.dead[*i])
        .map(|i| &net.ids[i])
        .collect();
    live.sort();
    let deputy = live[1].clone();
    assert_hub(&net, "s1", &deputy);
}

#[test]
fn hub_recentres_on_the_elected_dj_with_8_devices() {
    hub_recentres_on_the_elected_dj(8, false);
}

#[test]
fn hub_recentres_when_the_djs_browser_dies_with_8_devices() {
    // No channel close: the links go silent and the liveness probes notice.
    hub_recentres_on_the_elected_dj(8, true);
}

#[test]
fn hub_recentres_on_the_elected_dj_with_12_devices() {
    hub_recentres_on_the_elected_dj(12, false);
}

#[test]
fn lost_members_come_back_when_relinked_or_listed() {
    let mut net = Net::new(8);
    net.drive(3000);
    net.set_server(false);
    // A link that drops while serverless marks the peer lost (here the deputy s1 at s0)...
    net.nodes[0].close_link("s1", ms(net.now)).unwrap();
    assert!(net.nodes[0].lost().contains("s1"));
    assert_eq!(net.nodes[0].hub(), Some(("s0".into(), Some("s2".into()))));
    // ...until the server's member list no longer names it or a link connects again.
    net.nodes[0].handle_members(net.ids.iter().filter(|i| *i != "s1").cloned(), ms(net.now));
    assert!(net.nodes[0].lost().is_empty());
    let mut net = Net::new(8);
    net.drive(3000);
    net.set_server(false);
    let t = net.now;
    net.nodes[2].close_link("s0", ms(t)).unwrap();
    assert!(net.nodes[2].lost().contains("s0"));
    net.drive(t + 5000);
    assert!(net.nodes[2].connected_peers().contains(&"s0".to_string()));
    assert!(net.nodes[2].lost().is_empty());
}

#[test]
fn clock_probes_travel_on_the_control_channel() {
    let mut net = Net::new(2);
    net.drive(100);
    assert!(net.all_connected());
    net.nodes[1]
        .send_clock("s0", ClockProbe::Ping { client_time: 12.5 })
        .unwrap();
    net.drive(200);
    let got: Vec<&MeshEvent> = net.events[0]
        .iter()
        .filter(|e| matches!(e, MeshEvent::Clock { .. }))
        .collect();
    assert_eq!(
        got,
        [&MeshEvent::Clock {
            from: "s1".into(),
            probe: ClockProbe::Ping { client_time: 12.5 }
        }]
    );
    let pong = ClockProbe::Pong {
        client_time: 12.5,
        server_time: 1.7e12,
    };
    net.nodes[0].send_clock("s1", pong).unwrap();
    net.drive(300);
    assert!(net.events[1].contains(&MeshEvent::Clock {
        from: "s0".into(),
        probe: pong
    }));
    // The wire shape (PROTOCOL.md §13.10).
    let text = serde_json::to_string(&ControlMessage::ClockPong {
        client_time: 12.5,
        server_time: 1.7e12,
    })
    .unwrap();
    assert_eq!(
        text,
        r#"{"type":"clock-pong","clientTime":12.5,"serverTime":1700000000000.0}"#
    );
    // A malformed probe is a bad_control event; no link, no send.
    net.nodes[0].handle_control("s1", r#"{"type":"clock-ping"}"#, ms(net.now));
    net.drive(400);
    assert!(net.events[0].iter().any(|e| matches!(
        e,
        MeshEvent::Error {
            code: ErrorCode::BadControl,
            ..
        }
    )));
    let e = net.nodes[0].send_clock("s9", pong).unwrap_err();
    assert_eq!(e.code(), ErrorCode::UnknownTarget);
}

#[test]
fn a_new_session_drops_old_links_and_links_again_under_the_new_ids() {
    let mut net = Net::new(3);
    net.drive(100);
    assert!(net.all_connected());
    // The server restarts: every device gets a new session id, rejoins, hears the members.
    net.set_server(false);
    let t = net.now;
    net.drive(t + 10);
    let renamed: Vec<String> = (0..3).map(|i| format!("n{i}")).collect();
    for (i, new) in renamed.iter().enumerate() {
        // The old links' channels close on the other side as each device drops them.
        net.nodes[i].handle_new_id(new.clone(), ms(net.now));
        assert_eq!(net.nodes[i].me(), new);
        assert!(net.nodes[i].members().len() == 1);
        net.drain(i);
        assert!(
            net.pcs[i].is_empty(),
            "node {i} still holds an old connection"
        );
    }
    net.ids = renamed.clone();
    net.set_server(true);
    for n in &mut net.nodes {
        n.handle_members(renamed.clone(), ms(net.now));
    }
    let t = net.now;
    net.drive(t + 5000);
    assert!(net.all_connected());
    for (i, n) in net.nodes.iter().enumerate() {
        let want: Vec<String> = renamed
            .iter()
            .filter(|r| **r != renamed[i])
            .cloned()
            .collect();
        assert_eq!(n.connected_peers(), want);
    }
    // Lanes work under the new ids.
    net.nodes[0]
        .send(Lane::Sync, &serde_json::json!({"after": "restart"}), None)
        .unwrap();
    let t = net.now;
    net.drive(t + 1000);
    for i in 1..3 {
        assert!(net.inbox[i]
            .iter()
            .any(|(from, lane, v)| from == "n0" && *lane == Lane::Sync && v["after"] == "restart"));
    }
    // An unchanged id is a no-op.
    let before = net.nodes[1].connected_peers();
    net.nodes[1].handle_new_id("n1", ms(net.now));
    assert_eq!(net.nodes[1].connected_peers(), before);
}

fn failed(net: &Net, i: usize, peer: &str) -> bool {
    net.events[i].iter().any(
        |e| matches!(e, MeshEvent::PeerState { peer: p, state: LinkState::Failed } if p == peer),
    )
}

#[test]
fn a_silent_peer_is_dropped_without_the_server() {
    let mut net = Net::new(3);
    net.drive(3000);
    net.set_server(false);
    net.vanish(2);
    let t = net.now;
    net.drive(t + LINK_SILENCE_MS - ALIVE_INTERVAL_MS);
    assert!(net.nodes[0].connected_peers().contains(&"s2".to_string()));
    net.drive(t + LINK_SILENCE_MS + ALIVE_INTERVAL_MS);
    assert!(failed(&net, 0, "s2") && failed(&net, 1, "s2"));
    assert_eq!(net.nodes[0].connected_peers(), vec!["s1"]);
    assert!(net.nodes[0].lost().contains("s2"));
    // The probes keep the live link up.
    net.drive(t + 10_000);
    assert_eq!(net.nodes[0].connected_peers(), vec!["s1"]);
    assert!(!failed(&net, 0, "s1"));
}

#[test]
fn silence_is_not_judged_while_the_server_is_up() {
    // The server says `peer-left` when a socket goes; until then the link stays.
    let mut net = Net::new(3);
    net.drive(3000);
    net.vanish(2);
    let t = net.now;
    net.drive(t + 3 * LINK_SILENCE_MS);
    assert!(!failed(&net, 0, "s2"));
    assert!(net.nodes[0].connected_peers().contains(&"s2".to_string()));
}

#[test]
fn a_stalled_device_does_not_drop_its_peers() {
    let mut net = Net::new(3);
    net.drive(3000);
    net.set_server(false);
    let t = net.now;
    net.drive(t + 10);
    // s0's timer fires 5 s late (a busy renderer): its peers' silence says nothing.
    net.nodes[0].handle_timeout(ms(t + 5000));
    net.now = t + 5000;
    net.drive(t + 5010);
    assert!(!failed(&net, 0, "s1") && !failed(&net, 0, "s2"));
    assert_eq!(net.nodes[0].connected_peers(), vec!["s1", "s2"]);
}

/// `alive` messages `from` sent within `[t0, t1)`: `(when, to, answer)`.
fn alive_sent(net: &Net, from: usize, t0: u64, t1: u64) -> Vec<(u64, String, bool)> {
    net.alive_log
        .iter()
        .filter(|(t, i, _, _)| *i == from && (t0..t1).contains(t))
        .map(|(t, _, to, answer)| (*t, to.clone(), *answer))
        .collect()
}

/// Three devices linked, then `quiet_ms` with the server up and nothing sent (control
/// messages take 80 ms one way).
fn quiet_room(quiet_ms: u64) -> Net {
    let mut net = Net::new(3);
    net.control_delay_ms = 80;
    net.drive(3000);
    assert!(net.all_connected());
    let t = net.now;
    net.drive(t + quiet_ms);
    net
}

#[test]
fn no_alive_while_the_server_is_up_and_links_are_quiet() {
    let net = quiet_room(20_000);
    for i in 0..3 {
        assert_eq!(alive_sent(&net, i, 0, net.now), vec![], "s{i} sent alive");
    }
    assert!(net.all_connected());
}

#[test]
fn after_server_loss_a_dead_peer_goes_within_the_silence_bound_and_a_live_one_never() {
    // The links were quiet for 10 s: nothing was heard, and that must not count as silence.
    let mut net = quiet_room(10_000);
    net.set_server(false);
    net.vanish(2);
    let t = net.now;
    net.drive(t + LINK_SILENCE_MS - ALIVE_INTERVAL_MS);
    assert!(!failed(&net, 0, "s1") && !failed(&net, 0, "s2"));
    net.drive(t + LINK_SILENCE_MS + ALIVE_INTERVAL_MS);
    assert!(failed(&net, 0, "s2") && failed(&net, 1, "s2"));
    // Probes from the moment the server went, one per interval per link.
    let probes = alive_sent(&net, 0, t, t + 4 * ALIVE_INTERVAL_MS);
    let to_s1: Vec<u64> = probes
        .iter()
        .filter(|(_, to, answer)| to == "s1" && !answer)
        .map(|(at, _, _)| *at - t)
        .collect();
    assert_eq!(to_s1, vec![0, 400, 800, 1200]);
    net.drive(t + 20_000);
    assert!(!failed(&net, 0, "s1") && !failed(&net, 1, "s0"));
    assert_eq!(net.nodes[0].connected_peers(), vec!["s1"]);
}

#[test]
fn peers_that_keep_the_server_answer_a_serverless_device() {
    let mut net = quiet_room(10_000);
    // Only s0 loses the server (its socket closed; the others still have theirs).
    let t = net.now;
    net.nodes[0].handle_server(false, ms(t));
    net.drive(t + 5000);
    assert!(!failed(&net, 0, "s1") && !failed(&net, 0, "s2"));
    assert_eq!(net.nodes[0].connected_peers(), vec!["s1", "s2"]);
    // s1 and s2 only answer, about one answer per probe.
    for i in [1, 2] {
        let sent = alive_sent(&net, i, t, t + 5000);
        assert!(sent.iter().all(|(_, to, answer)| to == "s0" && *answer));
        assert!(
            (11..=13).contains(&sent.len()),
            "s{i}: {} answers",
            sent.len()
        );
    }
    // s2's browser dies: s0 notices within the silence bound, s1 never fails.
    net.vanish(2);
    let t2 = net.now;
    net.drive(t2 + LINK_SILENCE_MS - ALIVE_INTERVAL_MS);
    assert!(!failed(&net, 0, "s2"));
    net.drive(t2 + LINK_SILENCE_MS + ALIVE_INTERVAL_MS);
    assert!(failed(&net, 0, "s2"));
    net.drive(t2 + 20_000);
    assert!(!failed(&net, 0, "s1"));
    // With the server s1 judges no silence: s2 stays until the server says `peer-left`.
    assert!(!failed(&net, 1, "s2"));
}

#[test]
fn probing_outlasts_a_short_return_of_the_server() {
    let mut net = quiet_room(5000);
    let t = net.now;
    net.set_server(false);
    net.drive(t + 1000);
    net.set_server(true);
    // Back on the socket tier after its dwell; probing goes on for the silence bound.
    net.drive(t + 3500);
    assert_eq!(net.nodes[0].tier(), Tier::Socket);
    let back = net.events[0]
        .iter()
        .rev()
        .find_map(|e| match e {
            MeshEvent::Tier {
                to: Tier::Socket,
                at_ms,
                ..
            } => Some(*at_ms),
            _ => None,
        })
        .unwrap();
    net.vanish(2);
    let gone = net.now;
    // The server goes again while s0 still probes: s2's silence counts from its last answer,
    // no new grace.
    net.drive(back + LINK_SILENCE_MS - ALIVE_INTERVAL_MS);
    net.set_server(false);
    net.drive(gone + LINK_SILENCE_MS + ALIVE_INTERVAL_MS);
    assert!(failed(&net, 0, "s2"));
    assert!(!failed(&net, 0, "s1"));
    // Probes stop the silence bound after the server is back for good.
    net.set_server(true);
    net.drive(net.now + 10_000);
    let t3 = net.now;
    net.drive(t3 + 5000);
    assert_eq!(alive_sent(&net, 0, t3, t3 + 5000), vec![]);
}

#[test]
fn probes_are_answered_at_most_once_per_interval_per_link() {
    let mut net = quiet_room(1000);
    let t = net.now;
    let probe = r#"{"type":"alive"}"#;
    // A flood of probes, one every 40 ms (an older peer sends the same `{type: "alive"}`):
    // the first two are answered, then one per interval.
    for k in 0..50 {
        net.nodes[1].handle_control("s0", probe, ms(t + k * 40));
        net.now = t + k * 40;
        net.drive(t + k * 40);
    }
    let answers = alive_sent(&net, 1, t, t + 2000);
    assert!(answers.iter().all(|(_, to, answer)| to == "s0" && *answer));
    let at: Vec<u64> = answers.iter().map(|(a, _, _)| *a - t).collect();
    assert_eq!(at, vec![0, 40, 400, 800, 1200, 1600]);
    // An answer is never answered.
    let before = net.alive_log.len();
    net.nodes[1].handle_control("s0", r#"{"type":"alive","answer":true}"#, ms(net.now));
    net.drive(net.now);
    assert_eq!(net.alive_log.len(), before);
}

#[test]
fn alive_wire_shapes_and_older_peers() {
    let probe = ControlMessage::Alive { answer: false };
    let answer = ControlMessage::Alive { answer: true };
    assert_eq!(
        serde_json::to_string(&probe).unwrap(),
        r#"{"type":"alive"}"#
    );
    assert_eq!(
        serde_json::to_string(&answer).unwrap(),
        r#"{"type":"alive","answer":true}"#
    );
    assert_eq!(
        serde_json::from_str::<ControlMessage>(r#"{"type":"alive"}"#).unwrap(),
        probe
    );
    // An older peer's `alive` was a unit variant: it reads the answer as its `alive`.
    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(tag = "type", rename_all = "lowercase")]
    enum OlderControl {
        Alive,
    }
    assert_eq!(
        serde_json::from_str::<OlderControl>(r#"{"type":"alive","answer":true}"#).unwrap(),
        OlderControl::Alive
    );
}

/// An 8-device hub on s3 (not the lowest id, deputy s0), server lost, elections followed.
fn serverless_hub() -> (Net, Vec<Election>) {
    let mut net = Net::new(8);
    for node in &mut net.nodes {
        node.set_controller(Some("s3".into()), ms(0));
    }
    net.drive(5000);
    assert_hub(&net, "s3", "s0");
    let mut elections: Vec<Election> = net
        .ids
        .iter()
        .map(|id| Election::new(id.clone(), Claim::new(4, "s3")))
        .collect();
    net.set_server(false);
    for (i, e) in elections.iter_mut().enumerate() {
        let reachable = net.nodes[i].connected_peers().into_iter().collect();
        e.handle_server_lost(&reachable);
    }
    drive_elections(&mut net, &mut elections, 500);
    (net, elections)
}

#[test]
fn the_deputy_is_replaced_when_it_goes_without_the_server() {
    let (mut net, mut elections) = serverless_hub();
    net.vanish(0);
    drive_elections(&mut net, &mut elections, 10_000);
    // The DJ stays; the next lowest id is the deputy and everyone links to it.
    assert!(elections
        .iter()
        .skip(1)
        .all(|e| *e.claim() == Claim::new(4, "s3")));
    assert_hub(&net, "s3", "s1");
}

#[test]
fn listeners_learn_from_the_controller_who_is_gone() {
    let (mut net, mut elections) = serverless_hub();
    // A listener next in line for deputy goes: only the hubs have a link to see it...
    net.vanish(1);
    drive_elections(&mut net, &mut elections, 5000);
    // ...and the controller's `links` tell the other listeners.
    assert!(net.nodes[5].lost().contains("s1"));
    assert_hub(&net, "s3", "s0");
    // Then the DJ goes: s0 is elected and every device picks s2 (not s1) as deputy.
    net.vanish(3);
    drive_elections(&mut net, &mut elections, 10_000);
    assert_hub(&net, "s0", "s2");
}

/// Gaps between a node's stats samples within `[from, to)` (ms).
fn stats_gaps(net: &Net, i: usize, from: u64, to: u64) -> Vec<u64> {
    let at: Vec<u64> = net.stats_at[i]
        .iter()
        .copied()
        .filter(|t| (from..to).contains(t))
        .collect();
    at.windows(2).map(|w| w[1] - w[0]).collect()
}

#[test]
fn stats_back_off_while_stable_and_reset_on_change() {
    let mut net = Net::new(3);
    net.drive(5_000);
    assert_eq!(net.nodes[0].connected_peers().len(), 2);
    net.drive(60_000);
    // Server up, every link's class unchanged: 1 s, then 2, 4 and at most 8 s between samples.
    let gaps = stats_gaps(&net, 0, 0, 60_000);
    assert_eq!(gaps.first(), Some(&STATS_INTERVAL_MS), "{gaps:?}");
    assert_eq!(
        gaps.last(),
        Some(&(STATS_INTERVAL_MS << STATS_MAX_DOUBLINGS)),
        "{gaps:?}"
    );
    assert!(gaps.windows(2).all(|w| w[0] <= w[1]), "{gaps:?}");
    assert!(
        net.stats_at[0].len() < 25,
        "{} samples in 60 s",
        net.stats_at[0].len()
    );

    // A link's class changes (RTT 12 -> 400 ms): back to the interval at once.
    net.stats_rtt = 400.0;
    let t = net.now;
    net.drive(t + 20_000);
    let after = stats_gaps(&net, 0, t, t + 20_000);
    assert!(
        after.len() > 4 && after[..4].iter().all(|g| *g == STATS_INTERVAL_MS),
        "{after:?}"
    );

    // Without the server the interval stays at its base (the tier follows the links).
    net.stats_rtt = 12.0;
    net.drive(net.now + 60_000);
    net.set_server(false);
    let t = net.now;
    net.drive(t + 20_000);
    let serverless = stats_gaps(&net, 0, t + 2_000, t + 20_000);
    assert!(
        !serverless.is_empty() && serverless.iter().all(|g| *g == STATS_INTERVAL_MS),
        "{serverless:?}"
    );
}

#[test]
fn no_stats_with_interval_zero() {
    let mut net = Net::with(2, |c| c.stats_interval_ms = 0);
    net.drive(20_000);
    assert_eq!(net.nodes[0].connected_peers().len(), 1);
    assert!(net.stats_at.iter().all(Vec::is_empty));
}
