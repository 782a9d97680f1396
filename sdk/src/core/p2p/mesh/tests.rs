//! A harness of N [`Mesh`]es with a model of RTCPeerConnection (signaling states, implicit
//! rollback, both negotiated DataChannels opening once both sides hold an offer/answer pair)
//! and a FIFO network: the server routes `SendSignal` while up, DataChannels carry control
//! and lane frames between connected pairs. Virtual clock.

use super::*;
use std::collections::HashMap;

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
        };
        for i in 0..n {
            net.nodes[i].handle_server(true, 0);
            let members = net.ids.clone();
            net.nodes[i].handle_members(members, 0);
        }
        net
    }

    fn idx(&self, id: &str) -> usize {
        self.ids.iter().position(|x| x == id).unwrap()
    }

    fn set_server(&mut self, up: bool) {
        self.server_up = up;
        for n in &mut self.nodes {
            n.handle_server(up, self.now);
        }
    }

    /// Drains every node's outputs and runs tasks until nothing is left; then advances the
    /// clock to the earliest deadline, up to `until`.
    fn drive(&mut self, until: u64) {
        loop {
            for i in 0..self.nodes.len() {
                self.drain(i);
            }
            if let Some(t) = self.tasks.pop_front() {
                self.run(t);
                continue;
            }
            let next = self.nodes.iter().filter_map(Mesh::poll_timeout).min();
            match next {
                Some(t) if t <= until => {
                    self.now = self.now.max(t);
                    for n in &mut self.nodes {
                        if n.poll_timeout().is_some_and(|d| d <= self.now) {
                            n.handle_timeout(self.now);
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
        while let Some(o) = self.nodes[i].poll_output() {
            let me = self.ids[i].clone();
            match o {
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
                    let j = self.idx(&peer);
                    self.tasks.push_back(Task::Control(j, me, text));
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
                MeshOutput::Ping => {}
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
        match t {
            Task::NegotiationNeeded(i, p) => {
                if self.pcs[i].contains_key(&p) {
                    self.nodes[i].handle_negotiation_needed(&p, self.now)
                }
            }
            Task::Signal(j, m) => self.nodes[j].handle_server_signal(m, now),
            Task::Control(j, from, text) => {
                if self.pcs[j].get(&from).is_some_and(|p| p.open) {
                    self.nodes[j].handle_control(&from, &text, now)
                }
            }
            Task::Lanes(j, from, bytes) => {
                if self.pcs[j].get(&from).is_some_and(|p| p.open) {
                    self.nodes[j].handle_lane_input(&from, &bytes, now);
                    // The fake channel sends at once: its buffer is empty again.
                    let i = self.idx(&from);
                    let me = self.ids[j].clone();
                    self.nodes[i].handle_lane_buffered(&me, 0);
                }
            }
            Task::ChannelsOpen(i, p) => {
                self.nodes[i].handle_channel_open(&p, Channel::Control, now);
                self.nodes[i].handle_channel_open(&p, Channel::Lanes, now);
            }
            Task::ChannelsClosed(i, p) => {
                if let Some(pc) = self.pcs[i].get_mut(&p) {
                    pc.open = false;
                }
                self.nodes[i].handle_channel_closed(&p, Channel::Lanes, now);
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
    net.nodes[1].handle_members(["s1".to_string()], 0);
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
    net.nodes[0].close_link("s2", net.now).unwrap();
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
    net.nodes[0].handle_member_left("s5", net.now);
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
    net.nodes[0].handle_stats("s1", stats, net.now);
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
    net.nodes[0].handle_control("s1", "{not json", net.now);
    net.nodes[0].handle_control(
        "s1",
        r#"{"type":"relay","signal":{"type":"end","from":"s9","to":"s7"}}"#,
        net.now,
    );
    net.nodes[0].handle_lane_input("s1", &[0xff, 0, 1], net.now);
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
    net.nodes[0].close_link("s1", net.now).unwrap();
    net.nodes[0].close_link("s2", net.now).unwrap();
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
        n.set_controller(Some("s5".into()), 100);
    }
    net.drive(3000);
    assert!(net.all_connected());
    // Controller s5, deputy s0 (lowest other id): s1 is a listener now.
    assert_eq!(net.nodes[6].connected_peers(), vec!["s0", "s5"]);
    assert_eq!(net.nodes[1].connected_peers(), vec!["s0", "s5"]);
    assert_eq!(net.nodes[5].connected_peers().len(), 7);
}
