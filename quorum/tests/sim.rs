//! Deterministic multi-node simulation of the controller quorum.
//!
//! 3 or 5 voting [`QuorumNode`]s (and, in one test, two learners) run in one process over a simulated network (seeded drops, delays
//! that reorder, bipartitions, isolated nodes, one-way cuts) and one `SimStorage` disk each
//! (crashes that keep only synced data, or a torn random subset of unsynced writes; injected
//! EIO on write or fsync, after which the node is crashed). Every message goes through the
//! wire encoding. A toy state machine records the applied entries.
//!
//! Each run checks:
//! * state-machine safety: no two nodes ever apply different data at one index, and every
//!   node applies indices in increasing order, after restarts too;
//! * durability: every proposal acknowledged as committed (applied by the leader that
//!   proposed it, in its term) is, at the end, in every node's state machine at its index,
//!   although any minority crashed at any time;
//! * progress: once faults heal, a leader is elected and a new proposal commits on every node
//!   within a bounded number of ticks.
//!
//! `QUORUM_SEEDS=N` runs N seeds per cluster size (default: a CI-sized count),
//! `QUORUM_SEED=S` replays one seed with a trace of its events.

#![allow(clippy::field_reassign_with_default)]

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use futures_lite::future::block_on;
use shardlog_engine::io::sim::{CrashMode, Faults};
use shardlog_engine::SimStorage;
use shardlog_quorum::{
    bootstrap_conf, decode_frame, encode_message, Message, MessageType, Proposal, QuorumConfig,
    QuorumError, QuorumNode, StateMachine, DEFAULT_MAX_FRAME,
};

// splitmix64: small, seedable, identical everywhere (the simulated disk's generator).
use shardlog_engine::io::sim::SplitMix as Rng;

/// The toy state machine: the applied entries, in order.
#[derive(Default)]
struct Toy {
    entries: Vec<(u64, Vec<u8>)>,
    /// Set when an entry arrives out of order (a driver bug the run then reports).
    disorder: Cell<Option<String>>,
}

impl StateMachine for Toy {
    fn apply(&mut self, index: u64, data: &[u8]) {
        if let Some(&(last, _)) = self.entries.last() {
            if index <= last {
                self.disorder
                    .set(Some(format!("applied index {index} after {last}")));
            }
        }
        self.entries.push((index, data.to_vec()));
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, d) in &self.entries {
            out.extend_from_slice(&i.to_le_bytes());
            out.extend_from_slice(&(d.len() as u32).to_le_bytes());
            out.extend_from_slice(d);
        }
        out
    }

    fn restore(&mut self, _index: u64, mut data: &[u8]) -> Result<(), String> {
        let mut entries = Vec::new();
        while !data.is_empty() {
            if data.len() < 12 {
                return Err("short toy snapshot".into());
            }
            let i = u64::from_le_bytes(data[..8].try_into().unwrap());
            let n = u32::from_le_bytes(data[8..12].try_into().unwrap()) as usize;
            let d = data.get(12..12 + n).ok_or("short toy snapshot")?;
            entries.push((i, d.to_vec()));
            data = &data[12 + n..];
        }
        self.entries = entries;
        Ok(())
    }
}

type Node = QuorumNode<SimStorage, Toy>;

struct SimNode {
    id: u64,
    node: Option<Node>,
    disk: SimStorage,
}

struct Packet {
    at: u64,
    seq: u64,
    from: u64,
    to: u64,
    snapshot: bool,
    frame: Vec<u8>,
}

#[derive(Clone, Copy, Debug)]
struct Params {
    /// Voters: ids 1..=nodes.
    nodes: u64,
    /// Learners: the ids after the voters.
    learners: u64,
    fault_ticks: u64,
    heal_ticks: u64,
    drop: f64,
    max_delay: u64,
    crash: f64,
    partition: f64,
    disk_fault: f64,
    snapshot_every: u64,
}

#[derive(Default, Debug)]
struct Stats {
    acked: usize,
    crashes: usize,
    disk_faults: usize,
    snapshots_installed: usize,
    max_term: u64,
    heal_ticks: u64,
}

struct Sim {
    seed: u64,
    rng: Rng,
    p: Params,
    nodes: Vec<SimNode>,
    net: Vec<Packet>,
    seq: u64,
    /// Directed links that drop everything.
    cuts: BTreeSet<(u64, u64)>,
    now: u64,
    /// index -> data, as first applied anywhere.
    applied: BTreeMap<u64, Vec<u8>>,
    /// index -> data of proposals acknowledged as committed.
    acked: BTreeMap<u64, Vec<u8>>,
    pending: Vec<(u64, Proposal, Vec<u8>)>,
    next_payload: u64,
    trace: bool,
    stats: Stats,
}

fn dir() -> PathBuf {
    PathBuf::from("/quorum")
}

impl Sim {
    fn new(seed: u64, nodes: u64, learners: u64, trace: bool) -> Sim {
        let mut rng = Rng(seed);
        let p = Params {
            nodes,
            learners,
            fault_ticks: 600,
            heal_ticks: 400,
            drop: [0.0, 0.05, 0.2][rng.below(3) as usize],
            max_delay: 1 + rng.below(4),
            crash: [0.003, 0.01, 0.02][rng.below(3) as usize],
            partition: [0.0, 0.01, 0.03][rng.below(3) as usize],
            disk_fault: [0.0, 0.003][rng.below(2) as usize],
            snapshot_every: [3, 10, 50][rng.below(3) as usize],
        };
        let mut sim = Sim {
            seed,
            rng,
            p,
            nodes: Vec::new(),
            net: Vec::new(),
            seq: 0,
            cuts: BTreeSet::new(),
            now: 0,
            applied: BTreeMap::new(),
            acked: BTreeMap::new(),
            pending: Vec::new(),
            next_payload: 0,
            trace,
            stats: Stats::default(),
        };
        for id in 1..=nodes + learners {
            sim.nodes.push(SimNode {
                id,
                node: None,
                disk: SimStorage::new(512),
            });
        }
        if trace {
            eprintln!("seed {seed}: {:?}", sim.p);
        }
        sim
    }

    fn log(&self, what: impl FnOnce() -> String) {
        if self.trace {
            eprintln!("[t{}] {}", self.now, what());
        }
    }

    fn start(&mut self, i: usize) -> Result<(), String> {
        let id = self.nodes[i].id;
        let mut cfg = QuorumConfig::new(id);
        cfg.election_tick = 10;
        cfg.heartbeat_tick = 2;
        // Each (re)start draws its own fixed election timeout: deterministic (raft-rs draws
        // from a one-tick range) yet different between nodes most of the time.
        let e = 10 + self.rng.below(20) as usize;
        cfg.election_range = Some((e, e + 1));
        cfg.snapshot_every = self.p.snapshot_every;
        cfg.max_size_per_msg = 4096;
        cfg.max_inflight_msgs = 16;
        let voters: Vec<u64> = (1..=self.p.nodes).collect();
        let learners: Vec<u64> = (self.p.nodes + 1..=self.p.nodes + self.p.learners).collect();
        let disk = self.nodes[i].disk.clone();
        let (node, report) = block_on(Node::open(
            disk,
            &dir(),
            cfg,
            bootstrap_conf(&voters, &learners),
            Toy::default(),
        ))
        .map_err(|e| format!("node {id} failed to start: {e}"))?;
        self.log(|| format!("node {id} started: {report:?}"));
        self.nodes[i].node = Some(node);
        Ok(())
    }

    fn crash(&mut self, i: usize) {
        let mode = if self.rng.chance(0.5) {
            CrashMode::LoseUnsynced
        } else {
            CrashMode::Torn {
                seed: self.rng.next_u64(),
            }
        };
        let id = self.nodes[i].id;
        self.log(|| format!("crash node {id} ({mode:?})"));
        self.nodes[i].node = None;
        self.nodes[i].disk = self.nodes[i].disk.crash(mode);
        self.pending.retain(|(n, _, _)| *n != id);
        self.stats.crashes += 1;
    }

    /// Voters down now.
    fn down(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.id <= self.p.nodes && n.node.is_none())
            .count()
    }

    fn send(&mut self, from: u64, msgs: Vec<Message>) -> Result<(), String> {
        for m in msgs {
            let frame = encode_message(&m, DEFAULT_MAX_FRAME)
                .map_err(|e| format!("node {from} produced an unencodable message: {e}"))?;
            let at = self.now + self.rng.below(self.p.max_delay + 1);
            self.seq += 1;
            self.net.push(Packet {
                at,
                seq: self.seq,
                from,
                to: m.to,
                snapshot: m.get_msg_type() == MessageType::MsgSnapshot,
                frame,
            });
        }
        Ok(())
    }

    /// Runs ready cycles on node `i` until it has none; a disk error crashes the node.
    fn drive(&mut self, i: usize) -> Result<(), String> {
        for _ in 0..20 {
            let Some(node) = self.nodes[i].node.as_mut() else {
                return Ok(());
            };
            if !node.has_ready() {
                return Ok(());
            }
            let id = node.id();
            match block_on(node.ready()) {
                Ok(out) => {
                    if let Some(d) = node.state_machine().disorder.take() {
                        return Err(format!("node {id}: {d}"));
                    }
                    if id > self.p.nodes && node.is_leader() {
                        return Err(format!("learner {id} became leader"));
                    }
                    self.stats.max_term = self.stats.max_term.max(node.term());
                    if let Some(s) = out.snapshot_installed {
                        self.stats.snapshots_installed += 1;
                        self.log(|| format!("node {id} installed snapshot at {s}"));
                    }
                    for c in &out.committed {
                        match self.applied.get(&c.index) {
                            Some(d) if d[..] != c.data[..] => {
                                return Err(format!(
                                    "safety: node {id} applied {:?} at {}, another node {:?}",
                                    String::from_utf8_lossy(&c.data),
                                    c.index,
                                    String::from_utf8_lossy(d)
                                ));
                            }
                            Some(_) => {}
                            None => {
                                self.applied.insert(c.index, c.data.to_vec());
                            }
                        }
                        if let Some(pos) = self
                            .pending
                            .iter()
                            .position(|(n, p, _)| *n == id && p.index == c.index)
                        {
                            let (_, p, data) = self.pending.remove(pos);
                            if p.term == c.term {
                                if data[..] != c.data[..] {
                                    return Err(format!(
                                        "node {id}: proposal at {} applied other data",
                                        c.index
                                    ));
                                }
                                self.log(|| {
                                    format!("ack {} at {}", String::from_utf8_lossy(&data), c.index)
                                });
                                self.acked.insert(c.index, data);
                                self.stats.acked += 1;
                            }
                        }
                    }
                    self.send(id, out.messages)?;
                }
                Err(QuorumError::Store(e)) => {
                    self.log(|| format!("node {id} disk error: {e}"));
                    self.crash(i);
                    return Ok(());
                }
                Err(e) => return Err(format!("node {id}: ready failed: {e}")),
            }
        }
        Ok(())
    }

    fn deliver(&mut self) -> Result<(), String> {
        let now = self.now;
        let mut due: Vec<Packet> = Vec::new();
        let mut keep = Vec::with_capacity(self.net.len());
        for p in self.net.drain(..) {
            if p.at <= now {
                due.push(p);
            } else {
                keep.push(p);
            }
        }
        self.net = keep;
        due.sort_by_key(|p| (p.at, p.seq));
        for p in due {
            let i = (p.to - 1) as usize;
            let lost = self.cuts.contains(&(p.from, p.to))
                || self.rng.chance(self.p.drop)
                || self.nodes[i].node.is_none();
            if p.snapshot {
                // Snapshots travel on a stream whose sender learns whether it got through,
                // and must tell raft (else replication to that follower stays paused).
                if let Some(sender) = self.nodes[(p.from - 1) as usize].node.as_mut() {
                    sender.report_snapshot(p.to, !lost);
                }
            }
            if lost {
                continue;
            }
            let Some(node) = self.nodes[i].node.as_mut() else {
                continue;
            };
            let (msg, used) = decode_frame(&p.frame, DEFAULT_MAX_FRAME)
                .map_err(|e| format!("frame refused: {e}"))?
                .ok_or("incomplete frame")?;
            assert_eq!(used, p.frame.len());
            // Stale or unexpected messages are refused by raft with an error; not a failure.
            let _ = node.step(msg);
            self.drive(i)?;
        }
        Ok(())
    }

    fn propose(&mut self) {
        for i in 0..self.nodes.len() {
            let Some(node) = self.nodes[i].node.as_mut() else {
                continue;
            };
            if !node.is_leader() {
                continue;
            }
            self.next_payload += 1;
            let data = format!("s{}-p{}", self.seed, self.next_payload).into_bytes();
            if let Ok(p) = node.propose(data.clone()) {
                let id = node.id();
                self.pending.push((id, p, data));
            }
        }
    }

    fn faults(&mut self) -> Result<(), String> {
        let n = self.nodes.len();
        let minority = ((self.p.nodes - 1) / 2) as usize;
        for i in 0..n {
            if self.nodes[i].node.is_none() {
                if self.rng.chance(0.05) {
                    self.start(i)?;
                }
            } else if (self.nodes[i].id > self.p.nodes || self.down() < minority)
                && self.rng.chance(self.p.crash)
            {
                self.crash(i);
            } else if self.rng.chance(self.p.disk_fault) {
                let after = Some(self.rng.below(3));
                let faults = if self.rng.chance(0.5) {
                    Faults {
                        eio_sync_after: after,
                        ..Faults::default()
                    }
                } else {
                    Faults {
                        eio_write_after: after,
                        ..Faults::default()
                    }
                };
                self.log(|| format!("arm disk fault on node {}: {faults:?}", i + 1));
                self.nodes[i].disk.set_faults(faults);
                self.stats.disk_faults += 1;
            }
        }
        if self.rng.chance(self.p.partition) {
            let ids: Vec<u64> = (1..=n as u64).collect();
            self.cuts.clear();
            match self.rng.below(3) {
                0 => {
                    // Bipartition: a random side loses every link to the other.
                    let side: Vec<bool> = ids.iter().map(|_| self.rng.chance(0.5)).collect();
                    for &a in &ids {
                        for &b in &ids {
                            if side[(a - 1) as usize] != side[(b - 1) as usize] {
                                self.cuts.insert((a, b));
                            }
                        }
                    }
                }
                1 => {
                    // One-way cuts.
                    for _ in 0..1 + self.rng.below(3) {
                        let a = 1 + self.rng.below(n as u64);
                        let b = 1 + self.rng.below(n as u64);
                        if a != b {
                            self.cuts.insert((a, b));
                        }
                    }
                }
                _ => {} // healed
            }
            let cuts = self.cuts.clone();
            self.log(|| format!("network cuts now {cuts:?}"));
        }
        Ok(())
    }

    fn step_all(&mut self) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            if let Some(node) = self.nodes[i].node.as_mut() {
                node.tick();
            }
            self.drive(i)?;
        }
        self.deliver()
    }

    fn run(&mut self) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            self.start(i)?;
        }
        while self.now < self.p.fault_ticks {
            self.faults()?;
            if self.rng.chance(0.3) {
                self.propose();
            }
            self.step_all()?;
            self.now += 1;
        }
        // Heal: every node up with a healthy disk, the network whole and lossless.
        self.log(|| "heal".into());
        self.cuts.clear();
        self.p.drop = 0.0;
        for i in 0..self.nodes.len() {
            self.nodes[i].disk.set_faults(Faults::default());
            if self.nodes[i].node.is_none() {
                self.start(i)?;
            }
        }
        let healed_at = self.now;
        let marker_base = self.next_payload;
        loop {
            if self.now - healed_at > self.p.heal_ticks {
                return Err(format!(
                    "no progress {} ticks after healing (leaders: {:?})",
                    self.p.heal_ticks,
                    self.nodes
                        .iter()
                        .map(|n| n.node.as_ref().map(|x| format!(
                            "id {} leader {} term {} commit {} applied {} snap {} entries {}",
                            x.id(),
                            x.leader_id(),
                            x.term(),
                            x.commit_index(),
                            x.applied_index(),
                            x.store().snapshot_metadata().index,
                            x.store().entry_count()
                        )))
                        .collect::<Vec<_>>()
                ));
            }
            // A proposal made after healing, acknowledged and applied everywhere.
            let done = self.acked.iter().any(|(idx, d)| {
                let fresh = String::from_utf8_lossy(d)
                    .rsplit_once("-p")
                    .and_then(|(_, n)| n.parse::<u64>().ok())
                    .is_some_and(|n| n > marker_base);
                fresh
                    && self.nodes.iter().all(|n| {
                        n.node.as_ref().is_some_and(|x| {
                            x.state_machine()
                                .entries
                                .iter()
                                .any(|(i, e)| i == idx && e == d)
                        })
                    })
            });
            // ... and every node has applied all acknowledged entries, so the check below
            // sees settled state machines.
            let max_acked = self.acked.keys().next_back().copied().unwrap_or(0);
            let caught_up = self.nodes.iter().all(|n| {
                n.node
                    .as_ref()
                    .is_some_and(|x| x.applied_index() >= max_acked)
            });
            if done && caught_up {
                break;
            }
            if (self.now - healed_at).is_multiple_of(10) {
                self.propose();
            }
            self.step_all()?;
            self.now += 1;
        }
        self.stats.heal_ticks = self.now - healed_at;
        // Durability: every acknowledged entry is in every state machine at its index.
        for n in &self.nodes {
            let sm = &n
                .node
                .as_ref()
                .expect("all up after heal")
                .state_machine()
                .entries;
            let by_index: BTreeMap<u64, &Vec<u8>> = sm.iter().map(|(i, d)| (*i, d)).collect();
            for (idx, d) in &self.acked {
                if by_index.get(idx) != Some(&d) {
                    return Err(format!(
                        "durability: node {} lost acknowledged entry {:?} at {idx} (has {:?})",
                        n.id,
                        String::from_utf8_lossy(d),
                        by_index.get(idx).map(|x| String::from_utf8_lossy(x))
                    ));
                }
            }
        }
        Ok(())
    }
}

fn run_seed(seed: u64, nodes: u64, learners: u64, trace: bool) -> Result<Stats, String> {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut sim = Sim::new(seed, nodes, learners, trace);
        sim.run().map(|()| sim.stats)
    }));
    match r {
        Ok(r) => r,
        Err(p) => Err(format!(
            "panic: {}",
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        )),
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn run_many(nodes: u64, learners: u64, default_seeds: u64, base: u64) {
    if let Some(seed) = env_u64("QUORUM_SEED") {
        match run_seed(seed, nodes, learners, true) {
            Ok(stats) => {
                eprintln!("seed {seed} ({nodes} voters, {learners} learners) passed: {stats:?}")
            }
            Err(e) => panic!("seed {seed} ({nodes} voters, {learners} learners) failed: {e}"),
        }
        return;
    }
    let seeds = env_u64("QUORUM_SEEDS").unwrap_or(default_seeds);
    let start = std::time::Instant::now();
    let mut failures = Vec::new();
    let mut totals = Stats::default();
    let mut worst_heal = 0;
    for seed in base..base + seeds {
        match run_seed(seed, nodes, learners, false) {
            Ok(s) => {
                totals.acked += s.acked;
                totals.crashes += s.crashes;
                totals.disk_faults += s.disk_faults;
                totals.snapshots_installed += s.snapshots_installed;
                totals.max_term = totals.max_term.max(s.max_term);
                worst_heal = worst_heal.max(s.heal_ticks);
            }
            Err(e) => {
                eprintln!("seed {seed} ({nodes} voters, {learners} learners) FAILED: {e}");
                failures.push(seed);
            }
        }
    }
    eprintln!(
        "{nodes} voters, {learners} learners: {seeds} seeds in {:.1?}: {} acknowledged commits, {} crashes, {} disk faults, \
         {} snapshots installed, highest term {}, slowest recovery {worst_heal} ticks",
        start.elapsed(),
        totals.acked,
        totals.crashes,
        totals.disk_faults,
        totals.snapshots_installed,
        totals.max_term
    );
    assert!(
        failures.is_empty(),
        "{} of {seeds} seeds failed: {failures:?} (replay one with QUORUM_SEED=<seed>)",
        failures.len()
    );
}

#[test]
fn three_nodes_survive_faults() {
    run_many(3, 0, 500, 0);
}

#[test]
fn five_nodes_survive_faults() {
    run_many(5, 0, 200, 1_000_000);
}

/// Learners apply the same log under the same faults, never lead, and catch up after healing
/// (a learner may crash at any time; voters only as a minority).
#[test]
fn three_voters_and_two_learners_survive_faults() {
    run_many(3, 2, 200, 2_000_000);
}
