//! Virtual-clock harness of issue #5's tiers (shared by `tests/p2p_sim.rs` and
//! `benches/p2p.rs`) with a virtual clock and seeded links (STYLE.md
//! "Tests drive the core with a virtual clock"): N devices run the real
//! [`TierMachine`], [`Election`], [`OfflineQueue`] and [`ChangeLog`] of `core::p2p`; the harness
//! only carries messages with seeded latency (per-link FIFO) and applies the scenario's
//! server crash, silent loss, departures and partitions.
//!
//! Model: the server either closes every socket (crash, the close reaches each device within
//! 50 ms) or goes silent (sockets open, nothing answered, every message to it dropped); it
//! keeps its log across the outage. Peer links are logical reachability within a connected
//! component (with the hub model a listener reaches the others through the controller and
//! deputy); a link change reaches a device 50–250 ms later (DataChannel close / open).
//! Every device makes changes at random (~ one per 1.5 s); an offline device also "reloads"
//! its queue through JSON.
//!
//! Asserted for every seed and scenario: one controller per connected component once settled
//! while serverless; after the server returns every device follows it with the server's log;
//! every change that left its device (or whose device is still there) is in that log exactly
//! once. Printed: failover time from server loss to "all devices on webrtc with one agreed,
//! reachable controller".

#![allow(dead_code)]

use p3_lanes::core::p2p::changes::{Change, ChangeLog, OfflineQueue, Stamped};
use p3_lanes::core::p2p::election::{Authority, Claim, Election, ElectionOutput};
use p3_lanes::core::p2p::quality::NetworkQuality;
use p3_lanes::core::p2p::tier::{Tier, TierConfig, TierMachine, TierOutput};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

const SERVER: usize = usize::MAX;
const TICK: u64 = 10;

#[derive(Clone, Debug)]
pub enum Msg {
    /// Changes (and entries of the sender's log) for the authority to reconcile.
    Submit(Vec<Change>),
    /// A full log from the authority (`claim` it speaks for).
    Snapshot(Claim, ChangeLog),
    /// One new entry from the authority.
    Entry(Claim, Stamped),
    Claim(Claim),
    Ping(u64),
    Pong(u64),
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
    tier: TierMachine,
    election: Election,
    queue: OfflineQueue,
    log: ChangeLog,
    peers: BTreeSet<usize>,
    next_change: u64,
    next_resubmit: u64,
}

pub struct Sim {
    rng: fastrand::Rng,
    now: u64,
    devices: Vec<Device>,
    group: Vec<u32>,
    server_mode: ServerMode,
    server_log: ChangeLog,
    server_claim: Claim,
    // (deliver_at, seq, from, to, msg)
    queue: Vec<(u64, u64, usize, usize, Msg)>,
    seq: u64,
    fifo: HashMap<(usize, usize), u64>,
    left_device: HashSet<String>,
    recorded: Vec<(String, u64)>,
    stale_rejected: u64,
}

pub fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("d{i:02}")).collect()
}

impl Sim {
    pub fn new(seed: u64, n: usize) -> Sim {
        let mut rng = fastrand::Rng::with_seed(seed);
        let names = ids(n);
        let dj = names[rng.usize(..n)].clone();
        let claim = Claim::new(1, dj);
        let devices = names
            .iter()
            .map(|id| {
                let mut tier = TierMachine::new(TierConfig::default(), Tier::Socket);
                tier.handle_socket_open(0);
                Device {
                    id: id.clone(),
                    alive: true,
                    tier,
                    election: Election::new(id.clone(), claim.clone()),
                    queue: OfflineQueue::new(id.clone()),
                    log: ChangeLog::new(1),
                    peers: BTreeSet::new(),
                    next_change: 500 + rng.u64(0..1500),
                    next_resubmit: 0,
                }
            })
            .collect();
        let mut sim = Sim {
            rng,
            now: 0,
            devices,
            group: vec![0; n],
            server_mode: ServerMode::Up,
            server_log: ChangeLog::new(1),
            server_claim: claim,
            queue: Vec::new(),
            seq: 0,
            fifo: HashMap::new(),
            left_device: HashSet::new(),
            recorded: Vec::new(),
            stale_rejected: 0,
        };
        for i in 0..n {
            for j in 0..n {
                if i != j {
                    sim.devices[i].peers.insert(j);
                    sim.devices[i].tier.handle_peer(
                        0,
                        &format!("d{j:02}"),
                        Some(NetworkQuality::Good),
                    );
                }
            }
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
        let g = self.group.clone();
        let n = self.devices.len();
        let before: Vec<bool> = (0..n).map(|b| self.linked(i, b)).collect();
        self.devices[i].alive = false;
        self.left_device.insert(self.devices[i].id.clone());
        self.group = g;
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

    fn reachable(&self, i: usize) -> BTreeSet<String> {
        self.devices[i]
            .peers
            .iter()
            .map(|&p| self.devices[p].id.clone())
            .collect()
    }

    fn index(&self, id: &str) -> usize {
        self.devices.iter().position(|d| d.id == id).unwrap()
    }

    /// Everything a device hands to an authority: its queue and its log's entries.
    fn offer(&self, i: usize) -> Vec<Change> {
        let d = &self.devices[i];
        let mut v: Vec<Change> = d.log.entries().iter().map(|s| s.change.clone()).collect();
        v.extend(d.queue.pending().iter().cloned());
        v.extend(d.queue.carried().iter().cloned());
        v
    }

    fn drain_election(&mut self, i: usize) {
        while let Some(o) = self.devices[i].election.poll_output() {
            match o {
                ElectionOutput::Announce(c) => {
                    for p in self.devices[i].peers.clone() {
                        self.send(i, p, Msg::Claim(c.clone()));
                    }
                }
                ElectionOutput::ControllerChanged {
                    claim,
                    previous,
                    elected,
                } => {
                    if std::env::var("P2P_SIM_DEBUG").is_ok() {
                        eprintln!(
                            "{} {} {previous:?} -> {claim:?} elected {elected} tier {:?}",
                            self.now,
                            self.devices[i].id,
                            self.devices[i].tier.tier()
                        );
                    }
                    self.on_new_claim(i, claim)
                }
            }
        }
    }

    fn on_new_claim(&mut self, i: usize, claim: Claim) {
        let d = &mut self.devices[i];
        if d.election.authority() != Authority::Peer {
            return;
        }
        if claim.controller == d.id {
            // Become the authority: keep our log, stamp in the claim's epoch.
            d.log.begin_epoch(claim.epoch);
            let mine = self.offer(i);
            self.devices[i].log.reconcile(mine);
            let applied = self.devices[i].log.applied().clone();
            self.devices[i].queue.acknowledge(&applied);
            let snap = self.devices[i].log.clone();
            for p in self.devices[i].peers.clone() {
                self.send(i, p, Msg::Snapshot(claim.clone(), snap.clone()));
            }
        } else {
            let to = self.index(&claim.controller);
            let offer = self.offer(i);
            self.send(i, to, Msg::Submit(offer));
        }
    }

    fn drain_tier(&mut self, i: usize) {
        while let Some(o) = self.devices[i].tier.poll_output() {
            match o {
                TierOutput::SendPing => {
                    if self.server_mode == ServerMode::Up {
                        let t = self.now;
                        self.send(i, SERVER, Msg::Ping(t));
                    }
                }
                TierOutput::TierChanged { from, to, .. } => {
                    if from == Tier::Socket {
                        let r = self.reachable(i);
                        self.devices[i].election.handle_server_lost(&r);
                        self.drain_election(i);
                        if self.devices[i].election.is_controller() {
                            let c = self.devices[i].election.claim().clone();
                            self.on_new_claim(i, c);
                        }
                    }
                    if to == Tier::Socket {
                        let c = self.server_claim.clone();
                        self.devices[i].election.handle_server_back(c);
                        while self.devices[i].election.poll_output().is_some() {}
                        let offer = self.offer(i);
                        self.send(i, SERVER, Msg::Submit(offer));
                    }
                }
            }
        }
    }

    fn make_change(&mut self, i: usize) {
        let epoch = self.devices[i].election.claim().epoch;
        let t = self.now as f64;
        let c = self.devices[i].queue.record(
            json!({"action": "seek", "data": {"position": t / 1000.0}}),
            epoch,
            t,
        );
        self.recorded.push((c.origin.clone(), c.local_seq));
        let d = &self.devices[i];
        match (d.tier.tier(), d.election.authority()) {
            (Tier::Socket, Authority::Server) => self.send(i, SERVER, Msg::Submit(vec![c])),
            (_, Authority::Peer) if d.election.is_controller() => self.controller_apply(i, vec![c]),
            (_, Authority::Peer) => {
                let to = self.index(&d.election.claim().controller);
                if d.peers.contains(&to) {
                    self.send(i, to, Msg::Submit(vec![c]));
                }
            }
            _ => {}
        }
    }

    fn controller_apply(&mut self, i: usize, batch: Vec<Change>) {
        let before = self.devices[i].log.entries().len();
        self.devices[i].log.reconcile(batch);
        let applied = self.devices[i].log.applied().clone();
        self.devices[i].queue.acknowledge(&applied);
        let claim = self.devices[i].election.claim().clone();
        let new: Vec<Stamped> = self.devices[i].log.entries()[before..].to_vec();
        for p in self.devices[i].peers.clone() {
            for s in &new {
                self.send(i, p, Msg::Entry(claim.clone(), s.clone()));
            }
        }
    }

    fn server_apply(&mut self, from: usize, batch: Vec<Change>) {
        // Server wins, and moves above every epoch it is told about.
        let max_epoch = batch.iter().map(|c| c.epoch).max().unwrap_or(0);
        if max_epoch > self.server_claim.epoch {
            self.server_claim.epoch = max_epoch + 1;
            self.server_log.begin_epoch(max_epoch + 1);
        }
        let before = self.server_log.entries().len();
        self.server_log.reconcile(batch);
        let new: Vec<Stamped> = self.server_log.entries()[before..].to_vec();
        let claim = self.server_claim.clone();
        let snap = self.server_log.clone();
        self.send(SERVER, from, Msg::Snapshot(claim.clone(), snap));
        for p in 0..self.devices.len() {
            if p != from && self.devices[p].alive && self.devices[p].tier.tier() == Tier::Socket {
                for s in &new {
                    self.send(SERVER, p, Msg::Entry(claim.clone(), s.clone()));
                }
            }
        }
    }

    fn deliver(&mut self, from: usize, to: usize, msg: Msg) {
        if to == SERVER {
            if self.server_mode != ServerMode::Up || !self.devices[from].alive {
                return;
            }
            match msg {
                Msg::Ping(t) => self.send(SERVER, from, Msg::Pong(t)),
                Msg::Submit(b) => self.server_apply(from, b),
                _ => {}
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
        match msg {
            Msg::SocketClosed => self.devices[to].tier.handle_socket_closed(now),
            Msg::SocketOpen => self.devices[to].tier.handle_socket_open(now),
            Msg::Pong(t) => self.devices[to].tier.handle_pong(now, (now - t) as f64),
            Msg::Ping(_) => {}
            Msg::Link(p, up) => {
                let pid = self.devices[p].id.clone();
                let d = &mut self.devices[to];
                if up {
                    d.peers.insert(p);
                } else {
                    d.peers.remove(&p);
                }
                d.tier
                    .handle_peer(now, &pid, up.then_some(NetworkQuality::Good));
                self.drain_tier(to);
                let r = self.reachable(to);
                self.devices[to].election.handle_membership(&r);
                if up {
                    // A new link: tell it our claim (partitions heal by gossip).
                    let c = self.devices[to].election.claim().clone();
                    if self.devices[to].election.authority() == Authority::Peer {
                        self.send(to, p, Msg::Claim(c));
                    }
                }
                self.drain_election(to);
            }
            Msg::Claim(c) => {
                self.devices[to].election.handle_claim(&c);
                self.drain_election(to);
            }
            Msg::Submit(b) => {
                if self.devices[to].election.is_controller() {
                    self.controller_apply(to, b);
                    let claim = self.devices[to].election.claim().clone();
                    let snap = self.devices[to].log.clone();
                    self.send(to, from, Msg::Snapshot(claim, snap));
                }
            }
            Msg::Snapshot(claim, log) => {
                let d = &mut self.devices[to];
                let ok = if from == SERVER {
                    d.election.authority() == Authority::Server
                } else {
                    d.election.authority() == Authority::Peer && *d.election.claim() == claim
                };
                if ok {
                    if from == SERVER {
                        d.election.handle_server_back(claim);
                        while d.election.poll_output().is_some() {}
                    }
                    let applied = log.applied().clone();
                    let missing = d.log.adopt(log);
                    d.queue.carry(missing);
                    d.queue.acknowledge(&applied);
                }
            }
            Msg::Entry(claim, s) => {
                let d = &mut self.devices[to];
                let from_authority = if from == SERVER {
                    d.election.authority() == Authority::Server
                } else {
                    d.election.authority() == Authority::Peer
                        && d.election.claim().controller == d_id(&claim)
                        && *d.election.claim() == claim
                };
                if !from_authority {
                    self.stale_rejected += 1;
                    return;
                }
                let epoch = d.election.claim().epoch.min(s.epoch);
                if d.log.accept(s, epoch).is_ok() {
                    let a = d.log.applied().clone();
                    d.queue.acknowledge(&a);
                }
            }
        }
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
            if to != SERVER && to < self.devices.len() {
                self.drain_tier(to);
            }
        }
        for i in 0..self.devices.len() {
            if !self.devices[i].alive {
                continue;
            }
            if self.devices[i]
                .tier
                .poll_timeout()
                .is_some_and(|t| t <= now)
            {
                self.devices[i].tier.handle_timeout(now);
            }
            self.drain_tier(i);
            if now >= self.devices[i].next_change {
                self.devices[i].next_change = now + 500 + self.rng.u64(0..2000);
                self.make_change(i);
            }
            if now >= self.devices[i].next_resubmit {
                self.devices[i].next_resubmit = now + 1000;
                self.resubmit(i);
            }
        }
    }

    /// Anti-entropy: pending changes go to the authority again every second; an offline
    /// device reloads its queue through JSON (the browser's persistence).
    fn resubmit(&mut self, i: usize) {
        let d = &mut self.devices[i];
        if d.queue.pending().is_empty() && d.queue.carried().is_empty() {
            return;
        }
        match (d.tier.tier(), d.election.authority()) {
            (Tier::Socket, Authority::Server) => {
                let offer = self.offer(i);
                self.send(i, SERVER, Msg::Submit(offer));
            }
            (Tier::Offline, _) => {
                d.queue = OfflineQueue::from_json(&d.queue.to_json()).unwrap();
            }
            (_, Authority::Peer) if !d.election.is_controller() => {
                let ctrl = d.election.claim().controller.clone();
                let to = self.index(&ctrl);
                if self.devices[i].peers.contains(&to) {
                    let offer = self.offer(i);
                    self.send(i, to, Msg::Submit(offer));
                }
            }
            _ => {}
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
        let c = self.devices[alive[0]].election.claim();
        let ctrl = self.index(&c.controller);
        alive.iter().all(|&i| {
            let d = &self.devices[i];
            d.tier.tier() == Tier::Webrtc
                && d.election.authority() == Authority::Peer
                && d.election.claim() == c
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
            let claims: BTreeSet<_> = members
                .iter()
                .map(|&i| self.devices[i].election.claim().clone())
                .collect();
            let ctrls = members
                .iter()
                .filter(|&&i| self.devices[i].election.is_controller())
                .count();
            if claims.len() != 1 || ctrls != 1 {
                return Err(format!(
                    "component {g}: claims {claims:?}, {ctrls} controllers"
                ));
            }
        }
        Ok(())
    }

    /// Changes lost (made on a device still in the room, missing from the server's log) and
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

    /// After the server is back and things settled: everyone follows its log (lost and
    /// duplicated changes are counted by [`Sim::lost_and_twice`]).
    pub fn check_converged(&self) -> Result<(), String> {
        let entries = self.server_log.entries();
        for i in self.alive() {
            let d = &self.devices[i];
            if d.tier.tier() != Tier::Socket || d.election.authority() != Authority::Server {
                return Err(format!("{} not back on the server", d.id));
            }
            if d.log.entries() != entries {
                return Err(format!("{} log differs", d.id));
            }
            if !d.queue.pending().is_empty() || !d.queue.carried().is_empty() {
                return Err(format!("{} still has pending changes", d.id));
            }
        }
        Ok(())
    }
}

pub fn d_id(c: &Claim) -> String {
    c.controller.clone()
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
    /// Changes made on devices during the run.
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
    sim.server_down(if scenario == Scenario::Silent {
        ServerMode::Silent
    } else {
        ServerMode::Crashed
    });
    if scenario == Scenario::CrashWithDj {
        let dj = sim.index(&sim.devices[0].election.claim().controller.clone());
        sim.leave(dj);
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
            let dj = sim.index(&sim.devices[0].election.claim().controller.clone());
            sim.leave(dj);
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
