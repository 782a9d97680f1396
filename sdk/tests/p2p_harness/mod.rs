//! Virtual-clock harness of issue #5's tiers (shared by `tests/p2p_sim.rs` and
//! `benches/p2p.rs`; STYLE.md "Tests drive the core with a virtual clock"): N devices each run
//! the shipped sans-IO music [`Room`] (election, sealing, peer ordering, acceptance, the
//! offline queue's bookkeeping and push timing), the mesh's [`TierMachine`] (which the mesh
//! owns in the browser too, feeding its tier changes to the room) and an [`OfflineQueue`]
//! standing in for IndexedDB; the server is the core's [`RoomAuthority`] with the
//! `music-changes` reconcile [`apply_push`] that server-stub runs. The harness only carries
//! messages with seeded latency (per-link FIFO), executes the rooms' outputs and applies the
//! scenario's server crash, silent loss, departures and partitions.
//!
//! Model: the server either closes every socket (crash, the close reaches each device within
//! 50 ms) or goes silent (sockets open, nothing answered, every message to it dropped); it
//! keeps its room across the outage and sessions resume. Peer links are logical reachability
//! within a connected component (with the hub model a listener reaches the others through the
//! controller and deputy); a link change reaches a device 50–250 ms later (DataChannel close /
//! open). Every device tries a change at random (~ one per 1.5 s): with the server, only the
//! DJ's are applied (the authority refuses the others); without it, the room's controller
//! orders its own (every device on the `offline` tier) and queues them, the others' rooms
//! refuse them (`not_controller`). An offline device also "reloads" its queue through JSON.
//!
//! Asserted for every seed and scenario: one controller per connected component once settled
//! while serverless; after the server returns every device follows the server's state with an
//! empty queue; every queued change whose device is still there is in the server's log exactly
//! once. Printed: failover time from server loss to "all devices on webrtc with one agreed,
//! reachable controller".

#![allow(dead_code)]

use p3_lanes::core::drive::{self, Millis};
use p3_lanes::core::music::{Output, PeerLink, Room};
use p3_lanes::core::p2p::changes::{
    apply_push, ChangeLimits, ChangeLog, ChangesAck, ChangesPush, OfflineQueue, VersionVector,
};
use p3_lanes::core::p2p::election::Claim;
use p3_lanes::core::p2p::quality::NetworkQuality;
use p3_lanes::core::p2p::tier::{Tier, TierConfig, TierMachine, TierOutput};
use p3_lanes::core::sync::follower::FollowerConfig;
use p3_lanes::core::sync::state::{
    AuthorityConfig, MusicAction, MusicControlData, RoomAuthority, RoomState, SyncMessage,
};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

const SERVER: usize = usize::MAX;
const TICK: u64 = 10;
/// The room key every device's room seals under (32 bytes, base64url).
const ROOM_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
/// The server clock at virtual time 0, ms.
const EPOCH_MS: f64 = 1_735_689_600_000.0;

#[derive(Clone, Debug)]
pub enum Msg {
    /// A device's `music-control` for the authority.
    Control(Value),
    /// A device's `music-changes` push.
    Push(Value),
    /// The server's `sync-state`.
    State(RoomState),
    /// The server's `music-changes-ack`.
    Ack(ChangesAck),
    /// A heartbeat ping (the tier machine's) or a clock probe (the room's).
    Ping {
        at: u64,
        clock: Option<f64>,
    },
    /// `clock`: the probe's `(clientTime, serverTime)`.
    Pong {
        at: u64,
        clock: Option<(f64, f64)>,
    },
    /// A sealed value on the mesh's Sync lane.
    Sealed(Value),
    SocketClosed,
    SocketOpen,
    Link(usize, bool),
}

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum ServerMode {
    Up,
    Crashed,
    Silent,
}

pub struct Device {
    id: String,
    alive: bool,
    room: Room,
    tier: TierMachine,
    queue: OfflineQueue,
    peers: BTreeSet<usize>,
    socket_open: bool,
    next_change: u64,
    next_reload: u64,
}

pub struct Sim {
    rng: fastrand::Rng,
    now: u64,
    devices: Vec<Device>,
    group: Vec<u32>,
    server_mode: ServerMode,
    authority: RoomAuthority,
    server_log: ChangeLog,
    // (deliver_at, seq, from, to, msg)
    queue: Vec<(u64, u64, usize, usize, Msg)>,
    seq: u64,
    fifo: HashMap<(usize, usize), u64>,
    left_device: HashSet<String>,
    /// Changes queued on devices: (origin, localSeq).
    recorded: Vec<(String, u64)>,
    /// Changes the rooms refused without the server (`not_controller`).
    refused: u64,
}

pub fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("d{i:02}")).collect()
}

fn seek(t: u64) -> (MusicAction, MusicControlData) {
    (
        MusicAction::Seek,
        MusicControlData {
            position: Some(t as f64 / 1000.0),
            ..Default::default()
        },
    )
}

impl Sim {
    pub fn new(seed: u64, n: usize) -> Sim {
        let mut rng = fastrand::Rng::with_seed(seed);
        let names = ids(n);
        let dj = rng.usize(..n);
        let mut authority = RoomAuthority::new(AuthorityConfig::default(), EPOCH_MS);
        let devices: Vec<Device> = names
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let mut tier = TierMachine::new(TierConfig::default(), Tier::Socket);
                tier.handle_socket_open(Millis::ZERO);
                let mut room = Room::new(
                    "p2p",
                    FollowerConfig::default(),
                    Some(id.clone()),
                    Millis::new(0.0),
                );
                let snapshot = match authority.join(id) {
                    SyncMessage::SyncState { data } => data,
                    _ => unreachable!("a join answers a snapshot"),
                };
                room.handle_server_state(snapshot, None, Millis::new(0.0));
                room.handle_mesh_open(id);
                room.handle_joined();
                room.handle_queue(0);
                let mut salt = [0u8; 16];
                fastrand::Rng::with_seed(seed ^ ((i as u64 + 1) * 0x9e37)).fill(&mut salt);
                room.handle_room_key(1, ROOM_KEY, id, || Ok(salt), Millis::new(0.0))
                    .expect("a valid key");
                Device {
                    id: id.clone(),
                    alive: true,
                    room,
                    tier,
                    queue: OfflineQueue::new(id.clone()),
                    peers: BTreeSet::new(),
                    socket_open: true,
                    next_change: 500 + rng.u64(0..1500),
                    next_reload: 0,
                }
            })
            .collect();
        let mut sim = Sim {
            rng,
            now: 0,
            devices,
            group: vec![0; n],
            server_mode: ServerMode::Up,
            authority,
            server_log: ChangeLog::new(1),
            queue: Vec::new(),
            seq: 0,
            fifo: HashMap::new(),
            left_device: HashSet::new(),
            recorded: Vec::new(),
            refused: 0,
        };
        for i in 0..n {
            for j in 0..n {
                if i != j {
                    let pid = sim.devices[j].id.clone();
                    let d = &mut sim.devices[i];
                    d.peers.insert(j);
                    d.tier
                        .handle_peer(&pid, Some(NetworkQuality::Good), Millis::ZERO);
                    d.room.handle_peer_link(&pid, PeerLink::Connected);
                }
            }
        }
        // The DJ claims the role through the server.
        let value = sim.devices[dj].room.stamp_server_change(
            MusicAction::Handover,
            MusicControlData {
                to: Some(names[dj].clone()),
                ..Default::default()
            },
            EPOCH_MS,
        );
        sim.send(dj, SERVER, Msg::Control(value));
        for i in 0..n {
            sim.drain(i);
        }
        sim
    }

    fn send(&mut self, from: usize, to: usize, msg: Msg) {
        let lat = self.rng.u64(5..40);
        let key = (from, to);
        let at = (self.now + lat).max(self.fifo.get(&key).copied().unwrap_or(0));
        self.fifo.insert(key, at);
        self.seq += 1;
        self.queue.push((at, self.seq, from, to, msg));
    }

    fn linked(&self, a: usize, b: usize) -> bool {
        self.devices[a].alive && self.devices[b].alive && self.group[a] == self.group[b]
    }

    /// Apply a new partition / departure: devices learn link changes after 50–250 ms.
    #[allow(clippy::needless_range_loop)] // a and b index `before`, `devices` and `linked` alike
    fn set_groups(&mut self, group: Vec<u32>) {
        let n = self.devices.len();
        let before: Vec<Vec<bool>> = (0..n)
            .map(|a| (0..n).map(|b| self.linked(a, b)).collect())
            .collect();
        self.group = group;
        for a in 0..n {
            for b in 0..n {
                if a != b && self.devices[a].alive {
                    let now_linked = self.linked(a, b);
                    if now_linked != before[a][b] {
                        let at = self.now + self.rng.u64(50..250);
                        self.seq += 1;
                        self.queue
                            .push((at, self.seq, b, a, Msg::Link(b, now_linked)));
                    }
                }
            }
        }
    }

    fn leave(&mut self, i: usize) {
        let n = self.devices.len();
        let before: Vec<bool> = (0..n).map(|b| self.linked(i, b)).collect();
        self.devices[i].alive = false;
        self.left_device.insert(self.devices[i].id.clone());
        for (b, was) in before.into_iter().enumerate() {
            if was && b != i {
                let at = self.now + self.rng.u64(50..250);
                self.seq += 1;
                self.queue.push((at, self.seq, i, b, Msg::Link(i, false)));
            }
        }
    }

    fn server_down(&mut self, mode: ServerMode) {
        self.server_mode = mode;
        if mode == ServerMode::Crashed {
            for i in 0..self.devices.len() {
                let at = self.now + self.rng.u64(0..50);
                self.seq += 1;
                self.queue
                    .push((at, self.seq, SERVER, i, Msg::SocketClosed));
            }
        }
    }

    fn server_up(&mut self) {
        let was = self.server_mode;
        self.server_mode = ServerMode::Up;
        if was == ServerMode::Crashed {
            for i in 0..self.devices.len() {
                let at = self.now + self.rng.u64(100..600);
                self.seq += 1;
                self.queue.push((at, self.seq, SERVER, i, Msg::SocketOpen));
            }
        }
    }

    fn index(&self, id: &str) -> Option<usize> {
        self.devices.iter().position(|d| d.id == id)
    }

    fn claim(&self, i: usize) -> Claim {
        self.devices[i]
            .room
            .claim()
            .cloned()
            .unwrap_or_else(|| Claim::new(0, ""))
    }

    fn is_controller(&self, i: usize) -> bool {
        self.devices[i].room.peer_ordered() && self.claim(i).controller == self.devices[i].id
    }

    /// The tier machine's outputs (heartbeats, tier changes into the room); returns its next
    /// deadline.
    fn drain_tier(&mut self, i: usize) -> Millis {
        let now = self.now;
        let mut outs = Vec::new();
        let due = drive::drain(&mut self.devices[i].tier, Millis::from_u64(now), |o| {
            outs.push(o)
        });
        for o in outs {
            match o {
                TierOutput::SendPing => self.send(
                    i,
                    SERVER,
                    Msg::Ping {
                        at: now,
                        clock: None,
                    },
                ),
                TierOutput::TierChanged {
                    from, to, reason, ..
                } => {
                    if std::env::var("P2P_SIM_DEBUG").is_ok() {
                        eprintln!("{now} {} tier {from:?} -> {to:?}", self.devices[i].id);
                    }
                    self.devices[i].room.handle_tier(from, to, reason)
                }
                TierOutput::Timeout(_) => {}
            }
        }
        due
    }

    /// The tier machine's outputs (heartbeats, tier changes into the room), then the room's
    /// (sealed sends, clock probes), then a due push of the queue.
    fn drain(&mut self, i: usize) {
        let now = self.now;
        self.drain_tier(i);
        loop {
            match self.devices[i].room.poll_output(Millis::new(now as f64)) {
                Output::MeshSend { value, to } => {
                    let targets: Vec<usize> = match to {
                        Some(id) => self.index(&id).into_iter().collect(),
                        None => self.devices[i].peers.iter().copied().collect(),
                    };
                    for j in targets {
                        self.send(i, j, Msg::Sealed(value.clone()));
                    }
                }
                Output::Ping { client_time, .. } => self.send(
                    i,
                    SERVER,
                    Msg::Ping {
                        at: now,
                        clock: Some(client_time),
                    },
                ),
                Output::Timeout(_) => break,
                // No media here; the hub and the peer clock are not modelled.
                _ => {}
            }
        }
        let d = &mut self.devices[i];
        if d.room.poll_push(d.socket_open, Millis::new(now as f64)) {
            let changes = d.queue.unacknowledged(&VersionVector::new());
            if let Some(v) = d.room.push_value(Some(changes), Millis::new(now as f64)) {
                self.send(i, SERVER, Msg::Push(v));
            }
        }
    }

    /// A device tries a change: through the server while it is the authority, else ordered
    /// by its own room (and queued) if it is the controller.
    fn make_change(&mut self, i: usize) {
        let now = self.now;
        let (action, data) = seek(now);
        let wall = EPOCH_MS + now as f64;
        let d = &mut self.devices[i];
        if d.room.peer_ordered() {
            match d
                .room
                .order_change(action, data, wall, Millis::new(now as f64))
            {
                Ok((_, record)) => {
                    let c = d.queue.record(record.op, record.epoch, record.timestamp);
                    self.recorded.push((c.origin.clone(), c.local_seq));
                    let pending = d.queue.pending().len();
                    d.room.handle_queue(pending);
                }
                Err(_) => self.refused += 1,
            }
        } else if d.tier.tier() == Tier::Socket {
            let v = d.room.stamp_server_change(action, data, wall);
            self.send(i, SERVER, Msg::Control(v));
        }
        self.drain(i);
    }

    fn broadcast_state(&mut self) {
        let state = self.authority.state().clone();
        for j in 0..self.devices.len() {
            if self.devices[j].alive {
                self.send(SERVER, j, Msg::State(state.clone()));
            }
        }
    }

    fn on_server(&mut self, from: usize, msg: Msg) {
        let now_ms = EPOCH_MS + self.now as f64;
        let id = self.devices[from].id.clone();
        match msg {
            Msg::Ping { at, clock } => {
                let clock = clock.map(|c| (c, now_ms.floor()));
                self.send(SERVER, from, Msg::Pong { at, clock });
            }
            Msg::Control(v) => {
                let Ok(SyncMessage::MusicControl(c)) = SyncMessage::from_value(v) else {
                    return;
                };
                if self.authority.handle_control(&id, &c, now_ms).is_ok() {
                    self.broadcast_state();
                }
            }
            Msg::Push(v) => {
                let push: ChangesPush = serde_json::from_value(v).expect("a push");
                let out = apply_push(
                    &mut self.authority,
                    &mut self.server_log,
                    push,
                    now_ms,
                    ChangeLimits::default(),
                )
                .expect("a push within the limits");
                self.send(SERVER, from, Msg::Ack(out.ack));
                if out.changed {
                    self.broadcast_state();
                }
            }
            _ => {}
        }
    }

    fn deliver(&mut self, from: usize, to: usize, msg: Msg) {
        if to == SERVER {
            if self.server_mode == ServerMode::Up && self.devices[from].alive {
                self.on_server(from, msg);
            }
            return;
        }
        if !self.devices[to].alive {
            return;
        }
        if from == SERVER && self.server_mode != ServerMode::Up && !matches!(msg, Msg::SocketClosed)
        {
            return;
        }
        if from != SERVER && !matches!(msg, Msg::Link(..)) && !self.linked(from, to) {
            return;
        }
        let now = self.now;
        let t = now as f64;
        match msg {
            Msg::SocketClosed => {
                self.devices[to].socket_open = false;
                self.devices[to]
                    .tier
                    .handle_socket_closed(Millis::from_u64(now));
            }
            Msg::SocketOpen => {
                let d = &mut self.devices[to];
                d.socket_open = true;
                d.tier.handle_socket_open(Millis::from_u64(now));
                d.room.handle_connection_open(Millis::new(t));
                // The session resumed: the client rejoins its room, the server answers the
                // room's state.
                d.room.handle_joined();
                let state = self.authority.state().clone();
                self.send(SERVER, to, Msg::State(state));
            }
            Msg::Pong { at, clock } => {
                let d = &mut self.devices[to];
                match clock {
                    None => d.tier.handle_pong((now - at) as f64, Millis::from_u64(now)),
                    Some((client_time, server_time)) => {
                        d.room
                            .handle_server_pong(client_time, server_time, Millis::new(t))
                    }
                }
            }
            Msg::State(s) => {
                self.devices[to]
                    .room
                    .handle_server_state(s, None, Millis::new(t));
            }
            Msg::Ack(ack) => {
                let d = &mut self.devices[to];
                if d.room.handle_ack() {
                    d.queue.acknowledge(&ack.version_vector);
                    let pending = d.queue.pending().len();
                    d.room.handle_acknowledged(pending);
                }
            }
            Msg::Sealed(v) => {
                let pid = self.devices[from].id.clone();
                self.devices[to]
                    .room
                    .handle_mesh_message(&pid, &v, Millis::new(t));
            }
            Msg::Link(p, up) => {
                let pid = self.devices[p].id.clone();
                let d = &mut self.devices[to];
                if up {
                    d.peers.insert(p);
                } else {
                    d.peers.remove(&p);
                }
                d.tier.handle_peer(
                    &pid,
                    up.then_some(NetworkQuality::Good),
                    Millis::from_u64(now),
                );
                let link = if up {
                    PeerLink::Connected
                } else {
                    PeerLink::Disconnected
                };
                d.room.handle_peer_link(&pid, link);
            }
            Msg::Control(_) | Msg::Push(_) | Msg::Ping { .. } => {}
        }
        self.drain(to);
    }

    fn step(&mut self) {
        self.now += TICK;
        let now = self.now;
        // Deliver due messages in (time, seq) order.
        let mut due: Vec<_> = Vec::new();
        self.queue.retain(|m| {
            if m.0 <= now {
                due.push(m.clone());
                false
            } else {
                true
            }
        });
        due.sort_by_key(|m| (m.0, m.1));
        for (_, _, from, to, msg) in due {
            self.deliver(from, to, msg);
        }
        for i in 0..self.devices.len() {
            if !self.devices[i].alive {
                continue;
            }
            // The tier's outputs so far come first (as before its timeout), then its deadline.
            if self.drain_tier(i) <= Millis::from_u64(now) {
                self.devices[i].tier.handle_timeout(Millis::from_u64(now));
            }
            self.drain(i);
            if now >= self.devices[i].next_change {
                self.devices[i].next_change = now + 500 + self.rng.u64(0..2000);
                self.make_change(i);
            }
            if now >= self.devices[i].next_reload {
                self.devices[i].next_reload = now + 1000;
                let d = &mut self.devices[i];
                if d.tier.tier() == Tier::Offline {
                    // The browser's persistence: the queue goes through JSON.
                    d.queue = OfflineQueue::from_json(&d.queue.to_json()).expect("round trip");
                }
            }
        }
    }

    pub fn run_until(&mut self, t: u64) {
        while self.now < t {
            self.step();
        }
    }

    fn alive(&self) -> Vec<usize> {
        (0..self.devices.len())
            .filter(|&i| self.devices[i].alive)
            .collect()
    }

    /// All alive devices on webrtc with one claim whose controller is alive and reachable.
    fn agreed_on_mesh(&self) -> bool {
        let alive = self.alive();
        let c = self.claim(alive[0]);
        let Some(ctrl) = self.index(&c.controller) else {
            return false;
        };
        alive.iter().all(|&i| {
            let d = &self.devices[i];
            d.tier.tier() == Tier::Webrtc
                && d.room.peer_ordered()
                && self.claim(i) == c
                && (i == ctrl || d.peers.contains(&ctrl))
        }) && self.devices[ctrl].alive
    }

    /// One controller per connected component (by `group`), agreed by all its members.
    fn one_controller_per_component(&self) -> Result<(), String> {
        let mut comps: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for i in self.alive() {
            comps.entry(self.group[i]).or_default().push(i);
        }
        for (g, members) in comps {
            let claims: BTreeSet<_> = members.iter().map(|&i| self.claim(i)).collect();
            let ctrls = members.iter().filter(|&&i| self.is_controller(i)).count();
            if claims.len() != 1 || ctrls != 1 {
                return Err(format!(
                    "component {g}: claims {claims:?}, {ctrls} controllers"
                ));
            }
        }
        Ok(())
    }

    /// Changes lost (queued on a device still in the room, missing from the server's log) and
    /// applied twice (in the server's log more than once), after the server is back.
    pub fn lost_and_twice(&self) -> (usize, usize) {
        let mut seen = HashSet::new();
        let twice = self
            .server_log
            .entries()
            .iter()
            .filter(|s| !seen.insert((s.change.origin.clone(), s.change.local_seq)))
            .count();
        let lost = self
            .recorded
            .iter()
            .filter(|(o, l)| !seen.contains(&(o.clone(), *l)) && !self.left_device.contains(o))
            .count();
        (lost, twice)
    }

    /// After the server is back and things settled: every room follows the server's state
    /// with the server as the authority and an empty queue.
    pub fn check_converged(&self) -> Result<(), String> {
        let server = self.authority.state().version();
        for i in self.alive() {
            let d = &self.devices[i];
            if d.tier.tier() != Tier::Socket || d.room.peer_ordered() {
                return Err(format!("{} not back on the server", d.id));
            }
            let followed = d.room.latest().map(RoomState::version);
            if followed != Some(server) {
                return Err(format!(
                    "{} follows {followed:?}, the server is at {server:?}",
                    d.id
                ));
            }
            if !d.queue.pending().is_empty() || d.room.pending_changes() != Some(0) {
                return Err(format!("{} still has pending changes", d.id));
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scenario {
    Crash,
    /// The server and the DJ's device are lost at the same instant: failover needs an election.
    CrashWithDj,
    Silent,
    DjLeaves,
    PartitionHeal,
}

pub struct Outcome {
    pub failover_ms: Option<u64>,
    pub dj_failover_ms: Option<u64>,
    /// Entries in the server's log at the end.
    pub changes: usize,
    /// Changes queued on devices during the run.
    pub made: usize,
    /// Changes lost (see [`Sim::lost_and_twice`]).
    pub lost: usize,
    /// Changes applied twice.
    pub twice: usize,
}

pub fn run(seed: u64, scenario: Scenario) -> Result<Outcome, String> {
    let n = 8 + (seed % 3) as usize;
    let mut sim = Sim::new(seed, n);
    // Lose the server at a random phase of the heartbeat.
    let loss = 5000 + sim.rng.u64(0..750);
    sim.run_until(loss);
    let loss_at = sim.now;
    let dj = sim.claim(0).controller;
    if dj.is_empty() {
        return Err("no DJ before the loss".into());
    }
    sim.server_down(if scenario == Scenario::Silent {
        ServerMode::Silent
    } else {
        ServerMode::Crashed
    });
    if scenario == Scenario::CrashWithDj {
        let i = sim.index(&dj).expect("a device");
        sim.leave(i);
    }
    let mut failover = None;
    let mut dj_failover = None;
    while sim.now < loss_at + 6000 {
        sim.step();
        if failover.is_none() && sim.agreed_on_mesh() {
            failover = Some(sim.now - loss_at);
        }
    }
    sim.one_controller_per_component()
        .map_err(|e| format!("after loss: {e}"))?;
    match scenario {
        Scenario::Crash | Scenario::CrashWithDj | Scenario::Silent => sim.run_until(14_000),
        Scenario::DjLeaves => {
            let ctrl = sim.claim(sim.alive()[0]).controller;
            let i = sim.index(&ctrl).expect("a device");
            sim.leave(i);
            let left_at = sim.now;
            while sim.now < left_at + 5000 {
                sim.step();
                if dj_failover.is_none() && sim.agreed_on_mesh() {
                    dj_failover = Some(sim.now - left_at);
                }
            }
            if dj_failover.is_none() {
                return Err("no agreed controller after the DJ left".into());
            }
            sim.one_controller_per_component()
                .map_err(|e| format!("after DJ left: {e}"))?;
        }
        Scenario::PartitionHeal => {
            // Two halves, then everyone alone, then two groups, then all healed.
            let groups: Vec<u32> = (0..n).map(|_| sim.rng.u32(0..2)).collect();
            sim.set_groups(groups);
            sim.run_until(sim.now + 3000);
            sim.one_controller_per_component()
                .map_err(|e| format!("halves: {e}"))?;
            sim.set_groups((0..n as u32).collect());
            sim.run_until(sim.now + 4000);
            let groups: Vec<u32> = (0..n).map(|_| sim.rng.u32(0..2)).collect();
            sim.set_groups(groups);
            sim.run_until(sim.now + 3000);
            sim.one_controller_per_component()
                .map_err(|e| format!("regrouped: {e}"))?;
            sim.set_groups(vec![0; n]);
            sim.run_until(sim.now + 3000);
            sim.one_controller_per_component()
                .map_err(|e| format!("healed: {e}"))?;
        }
    }
    sim.server_up();
    let back = sim.now;
    sim.run_until(back + 8000);
    // Stop making changes and let everything settle.
    for d in &mut sim.devices {
        d.next_change = u64::MAX;
    }
    sim.run_until(sim.now + 5000);
    sim.check_converged()?;
    let (lost, twice) = sim.lost_and_twice();
    Ok(Outcome {
        made: sim.recorded.len(),
        lost,
        twice,
        failover_ms: failover,
        dj_failover_ms: dj_failover,
        changes: sim.server_log.entries().len(),
    })
}

pub fn quantile(v: &mut [u64], q: f64) -> u64 {
    v.sort_unstable();
    v[((v.len() - 1) as f64 * q).round() as usize]
}
