//! The node driver: one quorum member, a raft-rs [`RawNode`] over the durable [`RaftStore`]
//! and the application's [`StateMachine`].
//!
//! It is runtime-agnostic: the only futures it awaits are the engine [`Storage`] trait's, so
//! the broker drives it on a pinned glommio executor and the tests on a trivial executor. The
//! caller owns time and the network: it calls [`QuorumNode::tick`] on a timer, hands received
//! messages to [`QuorumNode::step`], and runs [`QuorumNode::ready`] after either; `ready`
//! returns what to send and what was applied.
//!
//! [`QuorumNode::ready`] follows raft-rs's rules in this order:
//!
//! 1. a snapshot from the leader is made durable and restored into the state machine;
//! 2. new entries and the hard state are written, and synced whenever raft says the Ready must
//!    be (new entries, a new term or vote, a snapshot), *before* any message of this Ready is
//!    returned for sending: a vote or an append acknowledgement is never sent for state that
//!    a crash could still lose;
//! 3. committed entries are applied; the commit index that covers them was written (with the
//!    hard state, in the same file) before they are applied, and the log is synced before a
//!    snapshot records an applied index, so a restart never finds a snapshot beyond the
//!    durable commit index (which raft-rs refuses with a panic);
//! 4. `advance_append`, then the light ready: its commit index is written before its
//!    committed entries are applied; its messages are returned too;
//! 5. when the applied log since the last snapshot exceeds the configured number of entries
//!    or bytes, the state machine's snapshot bytes replace it ([`RaftStore::compact`]).

use bytes::Bytes;
use protobuf::Message as _;
use raft::prelude::{
    ConfChange, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, Message,
};
use raft::{RawNode, StateRole};
use shardlog_engine::Storage;
use std::path::Path;
use tracing::{info, warn};

use crate::error::QuorumError;
use crate::store::{OpenReport, RaftStore, MAX_ENTRY_BYTES};

/// The replicated state: applies committed entries in log order and snapshots itself.
pub trait StateMachine {
    /// Applies the committed normal entry at `index`.
    fn apply(&mut self, index: u64, data: &[u8]);
    /// The state as of the last applied entry, as bytes [`StateMachine::restore`] reads.
    fn snapshot(&self) -> Vec<u8>;
    /// Replaces the whole state with a snapshot's (taken at `index`).
    fn restore(&mut self, index: u64, data: &[u8]) -> Result<(), String>;
}

/// Settings of one quorum member (times in ticks of the caller's timer).
#[derive(Clone, Debug)]
pub struct QuorumConfig {
    /// This node's id (its `controller.quorum.voters` id, or a learner's broker id).
    pub id: u64,
    /// Ticks without a leader's message before a follower campaigns.
    pub election_tick: usize,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_tick: usize,
    /// The election timeout is drawn from `[min, max)` ticks; `None`: raft's default
    /// `[election_tick, 2 * election_tick)`. A one-tick range makes a node deterministic
    /// (the simulation gives each node its own).
    pub election_range: Option<(usize, usize)>,
    /// Take a snapshot once this many entries were applied since the last one...
    pub snapshot_every: u64,
    /// ... or once the log file since the last one holds this many bytes: together they
    /// bound the entries held in memory and the log replayed at restart.
    pub snapshot_log_bytes: u64,
    /// Bytes of entries per append message.
    pub max_size_per_msg: u64,
    /// Append messages in flight per follower.
    pub max_inflight_msgs: usize,
    /// Bytes of proposed but uncommitted entries the leader accepts.
    pub max_uncommitted_size: u64,
}

impl QuorumConfig {
    pub fn new(id: u64) -> Self {
        QuorumConfig {
            id,
            election_tick: 10,
            heartbeat_tick: 2,
            election_range: None,
            snapshot_every: 10_000,
            snapshot_log_bytes: 64 * 1024 * 1024,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            max_uncommitted_size: 16 * 1024 * 1024,
        }
    }

    fn raft_config(&self, applied: u64) -> raft::Config {
        let (min, max) = self.election_range.unwrap_or((0, 0));
        raft::Config {
            id: self.id,
            election_tick: self.election_tick,
            heartbeat_tick: self.heartbeat_tick,
            min_election_tick: min,
            max_election_tick: max,
            applied,
            max_size_per_msg: self.max_size_per_msg,
            max_inflight_msgs: self.max_inflight_msgs,
            max_uncommitted_size: self.max_uncommitted_size,
            // Pre-vote keeps a node that was cut off from disrupting the leader when it
            // returns; check-quorum makes a leader cut off from a majority step down.
            pre_vote: true,
            check_quorum: true,
            ..raft::Config::default()
        }
    }
}

/// The configuration a new quorum starts with: voters (from `controller.quorum.voters`) and
/// learners (brokers that follow the metadata log without voting).
pub fn bootstrap_conf(voters: &[u64], learners: &[u64]) -> ConfState {
    ConfState::from((voters.to_vec(), learners.to_vec()))
}

/// Where a proposal went: it is committed when an entry at `index` with this `term` is
/// applied; an entry at `index` with another term means it was lost to a leader change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proposal {
    pub index: u64,
    pub term: u64,
}

/// A committed normal entry the state machine applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub index: u64,
    pub term: u64,
    pub data: Bytes,
}

/// What one [`QuorumNode::ready`] cycle produced.
#[derive(Debug, Default)]
pub struct ReadyOutput {
    /// Messages to send to peers; everything they depend on is already durable.
    pub messages: Vec<Message>,
    /// Entries applied to the state machine, in order.
    pub committed: Vec<Committed>,
    /// A snapshot from the leader was installed at this index.
    pub snapshot_installed: Option<u64>,
}

/// One member of the controller quorum.
pub struct QuorumNode<S: Storage, M: StateMachine> {
    raw: RawNode<RaftStore<S>>,
    sm: M,
    cfg: QuorumConfig,
    applied: u64,
}

impl<S: Storage, M: StateMachine> QuorumNode<S, M> {
    /// Opens (or creates, with `bootstrap`) the member's store in `dir` and restores the state
    /// machine from its snapshot; the entries after it are re-applied by the first
    /// [`QuorumNode::ready`] cycles.
    pub async fn open(
        storage: S,
        dir: &Path,
        cfg: QuorumConfig,
        bootstrap: ConfState,
        mut sm: M,
    ) -> Result<(Self, OpenReport), QuorumError> {
        let (store, report) = RaftStore::open(storage, dir, bootstrap).await?;
        let snap_index = store.snapshot_metadata().index;
        if snap_index > 0 {
            sm.restore(snap_index, store.snapshot_data())
                .map_err(|reason| QuorumError::Restore {
                    index: snap_index,
                    reason,
                })?;
        }
        let config = cfg.raft_config(snap_index);
        config
            .validate()
            .map_err(|e| QuorumError::Config(e.to_string()))?;
        let raw = RawNode::new(&config, store, &crate::logger::raft_logger(cfg.id))?;
        Ok((
            QuorumNode {
                raw,
                sm,
                cfg,
                applied: snap_index,
            },
            report,
        ))
    }

    pub fn id(&self) -> u64 {
        self.cfg.id
    }

    /// Advances the logical clock by one tick.
    pub fn tick(&mut self) -> bool {
        self.raw.tick()
    }

    /// Hands a message from a peer to raft.
    pub fn step(&mut self, msg: Message) -> Result<(), QuorumError> {
        if msg.to != self.cfg.id {
            return Err(QuorumError::WrongRecipient {
                to: msg.to,
                me: self.cfg.id,
            });
        }
        self.raw.step(msg)?;
        Ok(())
    }

    /// Starts an election now (tests, and a controlled hand-over).
    pub fn campaign(&mut self) -> Result<(), QuorumError> {
        self.raw.campaign()?;
        Ok(())
    }

    /// Proposes `data` for the log; only the leader accepts.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<Proposal, QuorumError> {
        if data.len() > MAX_ENTRY_BYTES {
            return Err(QuorumError::ProposalTooLarge {
                size: data.len(),
                max: MAX_ENTRY_BYTES,
            });
        }
        if self.raw.raft.state != StateRole::Leader {
            return Err(self.not_leader());
        }
        match self.raw.propose(Vec::new(), data) {
            Ok(()) => Ok(Proposal {
                index: self.raw.raft.raft_log.last_index(),
                term: self.raw.raft.term,
            }),
            Err(raft::Error::ProposalDropped) => Err(self.not_leader()),
            Err(e) => Err(e.into()),
        }
    }

    /// Proposes adding `id` as a learner (a broker that follows the log without voting).
    pub fn propose_add_learner(&mut self, id: u64) -> Result<Proposal, QuorumError> {
        if self.raw.raft.state != StateRole::Leader {
            return Err(self.not_leader());
        }
        let mut cc = ConfChange::default();
        cc.set_change_type(ConfChangeType::AddLearnerNode);
        cc.node_id = id;
        match self.raw.propose_conf_change(Vec::new(), cc) {
            Ok(()) => Ok(Proposal {
                index: self.raw.raft.raft_log.last_index(),
                term: self.raw.raft.term,
            }),
            Err(raft::Error::ProposalDropped) => Err(self.not_leader()),
            Err(e) => Err(e.into()),
        }
    }

    fn not_leader(&self) -> QuorumError {
        QuorumError::NotLeader {
            leader: self.raw.raft.leader_id,
        }
    }

    /// Tells raft a message to `id` could not be sent (it slows probing that peer).
    pub fn report_unreachable(&mut self, id: u64) {
        self.raw.report_unreachable(id);
    }

    /// Tells raft whether a snapshot message to `id` went out (`true`) or could not be sent.
    /// The transport must report every `MsgSnapshot`: until it does, raft pauses replication
    /// to that follower.
    pub fn report_snapshot(&mut self, id: u64, sent: bool) {
        let status = if sent {
            raft::SnapshotStatus::Finish
        } else {
            raft::SnapshotStatus::Failure
        };
        self.raw.report_snapshot(id, status);
    }

    /// Whether a [`QuorumNode::ready`] cycle has work.
    pub fn has_ready(&self) -> bool {
        self.raw.has_ready()
    }

    /// Runs one Ready cycle (see the module docs for the order): persists, applies, and
    /// returns the messages to send and the entries applied.
    ///
    /// An error leaves raft with a Ready it cannot finish: drop the node and reopen it from
    /// disk, as after a crash (nothing of the failed cycle was sent, so that is safe).
    pub async fn ready(&mut self) -> Result<ReadyOutput, QuorumError> {
        let mut out = ReadyOutput::default();
        if !self.raw.has_ready() {
            return Ok(out);
        }
        let mut rd = self.raw.ready();
        if let Some(ss) = rd.ss() {
            info!(node = self.cfg.id, role = ?ss.raft_state, leader = ss.leader_id, "quorum role");
        }
        // A leader's messages may go out before its own append (raft thesis 10.2.1); they are
        // returned only after this cycle's writes anyway.
        let mut messages = rd.take_messages();
        let mut hs = rd.hs().cloned();
        if !rd.snapshot().is_empty() {
            let snap = rd.snapshot().clone();
            let index = snap.get_metadata().index;
            self.raw
                .mut_store()
                .install_snapshot(&snap, hs.as_ref())
                .await?;
            self.sm
                .restore(index, &snap.data)
                .map_err(|reason| QuorumError::Restore { index, reason })?;
            self.applied = index;
            out.snapshot_installed = Some(index);
            hs = None;
        }
        let sync = rd.must_sync() || !rd.entries().is_empty();
        self.raw
            .mut_store()
            .append(rd.entries(), hs.as_ref(), sync)
            .await?;
        messages.extend(rd.take_persisted_messages());
        let committed = rd.take_committed_entries();
        self.apply(committed, &mut out);
        let mut light = self.raw.advance_append(rd);
        if let Some(commit) = light.commit_index() {
            let mut hs = self.raw.store().hard_state().clone();
            hs.commit = commit;
            self.raw.mut_store().append(&[], Some(&hs), false).await?;
        }
        messages.extend(light.take_messages());
        let committed = light.take_committed_entries();
        self.apply(committed, &mut out);
        self.raw.advance_apply();
        self.maybe_snapshot().await?;
        out.messages = messages;
        Ok(out)
    }

    fn apply(&mut self, entries: Vec<Entry>, out: &mut ReadyOutput) {
        for e in entries {
            match e.get_entry_type() {
                EntryType::EntryNormal => {
                    // Empty entries are new leaders' no-ops.
                    if !e.data.is_empty() {
                        self.sm.apply(e.index, &e.data);
                        out.committed.push(Committed {
                            index: e.index,
                            term: e.term,
                            data: e.data.clone(),
                        });
                    }
                }
                EntryType::EntryConfChange => match ConfChange::parse_from_bytes(&e.data) {
                    Ok(cc) => self.apply_conf_change(e.index, &cc),
                    Err(err) => {
                        warn!(index = e.index, error = %err, "quorum: unreadable conf change skipped")
                    }
                },
                EntryType::EntryConfChangeV2 => match ConfChangeV2::parse_from_bytes(&e.data) {
                    Ok(cc) => self.apply_conf_change(e.index, &cc),
                    Err(err) => {
                        warn!(index = e.index, error = %err, "quorum: unreadable conf change skipped")
                    }
                },
            }
            self.applied = e.index;
        }
    }

    fn apply_conf_change(&mut self, index: u64, cc: &impl raft_proto::ConfChangeI) {
        // Every member applies the same committed change, so a refusal is the same everywhere.
        match self.raw.apply_conf_change(cc) {
            Ok(cs) => {
                info!(node = self.cfg.id, index, voters = ?cs.voters, learners = ?cs.learners, "quorum configuration changed")
            }
            Err(e) => warn!(node = self.cfg.id, index, error = %e, "quorum: conf change refused"),
        }
    }

    async fn maybe_snapshot(&mut self) -> Result<(), QuorumError> {
        let store = self.raw.store();
        let snap_index = store.snapshot_metadata().index;
        let by_count = self.applied >= snap_index + self.cfg.snapshot_every.max(1);
        let by_bytes =
            self.applied > snap_index && store.log_bytes() >= self.cfg.snapshot_log_bytes;
        if !by_count && !by_bytes {
            return Ok(());
        }
        let data = Bytes::from(self.sm.snapshot());
        let conf = self.raw.raft.prs().conf().to_conf_state();
        self.raw
            .mut_store()
            .compact(self.applied, conf, data)
            .await?;
        Ok(())
    }

    pub fn role(&self) -> StateRole {
        self.raw.raft.state
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// The leader this node knows of (0: none).
    pub fn leader_id(&self) -> u64 {
        self.raw.raft.leader_id
    }

    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    pub fn commit_index(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    pub fn applied_index(&self) -> u64 {
        self.applied
    }

    /// The voters and learners in force (as applied).
    pub fn conf_state(&self) -> ConfState {
        self.raw.raft.prs().conf().to_conf_state()
    }

    pub fn state_machine(&self) -> &M {
        &self.sm
    }

    /// The state machine, to take what it collected while applying (it must not change the
    /// replicated state itself: that changes only by applying entries).
    pub fn state_machine_mut(&mut self) -> &mut M {
        &mut self.sm
    }

    pub fn store(&self) -> &RaftStore<S> {
        self.raw.store()
    }
}
