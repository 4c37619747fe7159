//! The node driver on a small, fault-free in-process network: elections, proposals and their
//! checks, restart from disk, and learners (bootstrapped and added by a conf change).

#![allow(clippy::field_reassign_with_default)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use futures_lite::future::block_on;
use shardlog_engine::io::sim::CrashMode;
use shardlog_engine::SimStorage;
use shardlog_quorum::{
    bootstrap_conf, decode_frame, encode_message, ConfState, Message, QuorumConfig, QuorumError,
    QuorumNode, StateMachine, StateRole, DEFAULT_MAX_FRAME, MAX_ENTRY_BYTES,
};

#[derive(Default)]
struct Log(Vec<Vec<u8>>);

impl StateMachine for Log {
    fn apply(&mut self, _index: u64, data: &[u8]) {
        self.0.push(data.to_vec());
    }
    fn snapshot(&self) -> Vec<u8> {
        self.0.join(&b'\n')
    }
    fn restore(&mut self, _index: u64, data: &[u8]) -> Result<(), String> {
        self.0 = if data.is_empty() {
            Vec::new()
        } else {
            data.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect()
        };
        Ok(())
    }
}

type Node = QuorumNode<SimStorage, Log>;

fn dir() -> PathBuf {
    PathBuf::from("/q")
}

fn cfg(id: u64) -> QuorumConfig {
    let mut c = QuorumConfig::new(id);
    // Distinct fixed timeouts: node 1 campaigns first, deterministically.
    let e = 10 + 3 * id as usize;
    c.election_range = Some((e, e + 1));
    c.snapshot_every = 5;
    c
}

fn open(disk: &SimStorage, id: u64, conf: ConfState) -> Node {
    block_on(Node::open(
        disk.clone(),
        &dir(),
        cfg(id),
        conf,
        Log::default(),
    ))
    .unwrap()
    .0
}

struct Cluster {
    nodes: Vec<(u64, SimStorage, Option<Node>)>,
    down: BTreeSet<u64>,
    queue: Vec<Message>,
}

impl Cluster {
    fn node(&mut self, id: u64) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.0 == id)
            .and_then(|n| n.2.as_mut())
            .unwrap()
    }

    fn drive(&mut self) {
        for (_, _, n) in &mut self.nodes {
            if let Some(n) = n {
                while n.has_ready() {
                    let out = block_on(n.ready()).unwrap();
                    self.queue.extend(out.messages);
                }
            }
        }
    }

    fn deliver(&mut self) {
        while !self.queue.is_empty() {
            for m in std::mem::take(&mut self.queue) {
                if self.down.contains(&m.from) || self.down.contains(&m.to) {
                    continue;
                }
                let frame = encode_message(&m, DEFAULT_MAX_FRAME).unwrap();
                let (m, _) = decode_frame(&frame, DEFAULT_MAX_FRAME).unwrap().unwrap();
                let snapshot = m.get_msg_type() == shardlog_quorum::MessageType::MsgSnapshot;
                let (from, to) = (m.from, m.to);
                if let Some(n) = self
                    .nodes
                    .iter_mut()
                    .find(|n| n.0 == to)
                    .and_then(|n| n.2.as_mut())
                {
                    let _ = n.step(m);
                }
                if snapshot {
                    self.node(from).report_snapshot(to, true);
                }
            }
            self.drive();
        }
    }

    fn run(&mut self, ticks: usize) {
        for _ in 0..ticks {
            for (id, _, n) in &mut self.nodes {
                if let Some(n) = n {
                    if !self.down.contains(id) {
                        n.tick();
                    }
                }
            }
            self.drive();
            self.deliver();
        }
    }

    fn leader(&self) -> Option<u64> {
        self.nodes
            .iter()
            .filter(|n| !self.down.contains(&n.0))
            .filter_map(|n| n.2.as_ref())
            .find(|n| n.is_leader())
            .map(|n| n.id())
    }
}

#[test]
fn single_voter_commits_and_restarts_from_disk() {
    let disk = SimStorage::new(512);
    let mut n = open(&disk, 1, bootstrap_conf(&[1], &[]));
    n.campaign().unwrap();
    while n.has_ready() {
        block_on(n.ready()).unwrap();
    }
    assert!(n.is_leader());
    let mut proposals = Vec::new();
    for i in 0..12 {
        proposals.push(n.propose(format!("p{i}").into_bytes()).unwrap());
        let out = block_on(n.ready()).unwrap();
        assert!(out.messages.is_empty(), "a sole voter sends nothing");
        let c = out.committed.last().expect("committed at once");
        assert_eq!((c.index, c.term), (proposals[i].index, proposals[i].term));
    }
    // Snapshots were taken (every 5 entries) and the log compacted.
    assert!(n.store().snapshot_metadata().index >= 10);
    let want = n.state_machine().0.clone();
    assert_eq!(want.len(), 12);
    drop(n);
    // Restart from what an fsync-only crash keeps: snapshot plus replayed entries.
    let disk = disk.crash(CrashMode::LoseUnsynced);
    let mut n = open(&disk, 1, bootstrap_conf(&[1], &[]));
    // The commit index is written unsynced when only it changed (raft-rs's must_sync), so the
    // restarted node may know fewer entries as committed; every entry is in its log, and
    // once it leads again it commits them.
    for _ in 0..50 {
        n.tick();
        while n.has_ready() {
            block_on(n.ready()).unwrap();
        }
    }
    assert!(n.is_leader());
    assert_eq!(n.state_machine().0, want);
    assert_eq!(n.applied_index(), n.commit_index());
}

#[test]
fn proposals_and_messages_are_checked() {
    let disk = SimStorage::new(512);
    let mut n = open(&disk, 2, bootstrap_conf(&[1, 2, 3], &[]));
    match n.propose(b"x".to_vec()) {
        Err(QuorumError::NotLeader { leader: 0 }) => {}
        other => panic!("{other:?}"),
    }
    match n.propose(vec![0; MAX_ENTRY_BYTES + 1]) {
        Err(QuorumError::ProposalTooLarge { size, max }) => {
            assert_eq!((size, max), (MAX_ENTRY_BYTES + 1, MAX_ENTRY_BYTES))
        }
        other => panic!("{other:?}"),
    }
    let mut m = Message::default();
    m.from = 1;
    m.to = 3;
    match n.step(m) {
        Err(QuorumError::WrongRecipient { to: 3, me: 2 }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn learners_follow_without_voting() {
    let voters = [1, 2, 3];
    let mut c = Cluster {
        nodes: Vec::new(),
        down: BTreeSet::new(),
        queue: Vec::new(),
    };
    // Nodes 1-3 vote, 4 is a learner from the start, 5 starts empty and is added later.
    for id in 1..=5u64 {
        let disk = SimStorage::new(512);
        let conf = match id {
            5 => ConfState::default(),
            _ => bootstrap_conf(&voters, &[4]),
        };
        let n = open(&disk, id, conf);
        c.nodes.push((id, disk, Some(n)));
    }
    c.run(60);
    let leader = c.leader().expect("a leader among the voters");
    assert!(voters.contains(&leader));
    for i in 0..8 {
        c.node(leader)
            .propose(format!("a{i}").into_bytes())
            .unwrap();
        c.run(1);
    }
    c.node(leader).propose_add_learner(5).unwrap();
    c.run(5);
    for i in 0..8 {
        c.node(leader)
            .propose(format!("b{i}").into_bytes())
            .unwrap();
        c.run(1);
    }
    c.run(20);
    let want = c.node(leader).state_machine().0.clone();
    assert_eq!(want.len(), 16);
    for id in 1..=5 {
        let n = c.node(id);
        assert_eq!(n.state_machine().0, want, "node {id}");
        let conf = n.conf_state();
        assert_eq!(
            conf.voters.iter().copied().collect::<BTreeSet<_>>(),
            BTreeSet::from(voters)
        );
        assert_eq!(
            conf.learners.iter().copied().collect::<BTreeSet<_>>(),
            BTreeSet::from([4, 5])
        );
    }
    // Node 5 caught up through a snapshot (the leader had compacted past its empty log).
    assert!(c.node(5).store().snapshot_metadata().index > 0);
    // With two voters gone the learners do not make a majority: no leader, no commit.
    let others: Vec<u64> = voters.iter().copied().filter(|v| *v != leader).collect();
    c.down.extend(&others);
    c.run(200);
    assert_eq!(c.leader(), None, "a leader without a voter majority");
    for id in [4, 5] {
        assert_eq!(c.node(id).role(), StateRole::Follower);
    }
    // Back: a voter majority elects again and commits, learners follow.
    c.down.clear();
    c.run(100);
    let leader = c.leader().expect("leader after the voters return");
    assert!(voters.contains(&leader));
    c.node(leader).propose(b"after".to_vec()).unwrap();
    c.run(10);
    for id in 1..=5 {
        assert_eq!(c.node(id).state_machine().0.last().unwrap(), b"after");
    }
}

#[test]
fn the_log_size_also_triggers_snapshots() {
    let disk = SimStorage::new(512);
    let mut c = cfg(1);
    c.snapshot_every = u64::MAX / 2;
    c.snapshot_log_bytes = 16 * 1024;
    let (mut n, _) = block_on(Node::open(
        disk.clone(),
        &dir(),
        c,
        bootstrap_conf(&[1], &[]),
        Log::default(),
    ))
    .unwrap();
    n.campaign().unwrap();
    while n.has_ready() {
        block_on(n.ready()).unwrap();
    }
    let mut max_log = 0;
    for i in 0..100 {
        n.propose(vec![b'a' + (i % 26) as u8; 1000]).unwrap();
        block_on(n.ready()).unwrap();
        max_log = max_log.max(n.store().log_bytes());
    }
    assert!(n.store().snapshot_metadata().index > 0, "no snapshot taken");
    // One entry past the threshold at most before the log is compacted.
    assert!(max_log < 16 * 1024 + 2048, "log grew to {max_log}");
    assert_eq!(n.state_machine().0.len(), 100);
}
