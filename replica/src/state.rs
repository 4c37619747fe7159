//! [`ReplicaState`]: one partition replica's role, epochs, log positions, ISR, high watermark
//! and acknowledgement waiters. Events in, [`Action`]s out; see the crate docs for the driving
//! protocol.

use std::collections::{BTreeMap, BTreeSet};

use crate::epochs::{diverging_epoch, truncation_for, EpochEndOffset, EpochHistory};
use crate::producers::{BatchIdent, DedupCheck, NoDedup, ProducerDedup};
use crate::proof::{CommitScope, Committed};
use crate::{Config, ErrorCode, LeaderEpoch, Offset, ReplicaId, StateError};

/// What the local log counts as committed (from the topic's flush policy).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CommitOn {
    /// Written to the device (`Interval`, `Never`): the committed end is the written end.
    #[default]
    Write,
    /// fdatasync'd (`EveryBatch`): the committed end is the durable end.
    Fsync,
}

/// The local log's positions, as the engine reports them
/// (`log_start <= durable_end <= written_end <= log_end`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogEnds {
    pub log_start: Offset,
    /// fdatasync'd up to here.
    pub durable_end: Offset,
    /// Written to the device up to here.
    pub written_end: Offset,
    /// Appended (offsets assigned) up to here.
    pub log_end: Offset,
}

impl LogEnds {
    /// An empty log at `offset`.
    pub fn at(offset: Offset) -> LogEnds {
        LogEnds {
            log_start: offset,
            durable_end: offset,
            written_end: offset,
            log_end: offset,
        }
    }

    /// What the flush policy counts as committed (the engine's `committed_end_offset`).
    pub fn committed(&self, on: CommitOn) -> Offset {
        match on {
            CommitOn::Write => self.written_end,
            CommitOn::Fsync => self.durable_end,
        }
    }

    fn check_order(&self) -> Result<(), StateError> {
        if 0 <= self.log_start
            && self.log_start <= self.durable_end
            && self.durable_end <= self.written_end
            && self.written_end <= self.log_end
        {
            Ok(())
        } else {
            Err(StateError::EndsOutOfOrder {
                log_start: self.log_start,
                durable_end: self.durable_end,
                written_end: self.written_end,
                log_end: self.log_end,
            })
        }
    }
}

/// The replica's role in its current leader epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Not serving: before the first leadership decision, after the partition closed or its
    /// log failed.
    Offline,
    Leader,
    Follower {
        leader: ReplicaId,
    },
}

/// A produce request's `acks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Acks {
    /// 0: no answer at all.
    None,
    /// 1: answered once the leader's log has the batch committed locally.
    Leader,
    /// -1 (all): answered once the high watermark covers the batch.
    All,
}

impl Acks {
    /// From the wire value; `None` for anything but 0, 1 and -1 (INVALID_REQUIRED_ACKS).
    pub fn from_wire(acks: i16) -> Option<Acks> {
        match acks {
            0 => Some(Acks::None),
            1 => Some(Acks::Leader),
            -1 => Some(Acks::All),
            _ => None,
        }
    }
}

/// Names a registered acknowledgement waiter (the facade maps it to the request waiting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WaiterId(pub u64);

/// A produce admitted by [`ReplicaState::admit_produce`]: it holds a waiter slot until it is
/// handed back through [`ReplicaState::appended`] or [`ReplicaState::append_failed`]. Not
/// `Clone`: one ticket, one answer.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a ticket holds a waiter slot until appended() or append_failed()"]
pub struct Ticket {
    id: u64,
    term: u64,
    acks: Acks,
}

impl Ticket {
    /// The waiter this ticket becomes once appended.
    pub fn waiter(&self) -> WaiterId {
        WaiterId(self.id)
    }

    pub fn acks(&self) -> Acks {
        self.acks
    }
}

/// The outcome of a leader append, handed back with its ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: Offset,
    pub last_offset: Offset,
    /// The batch's producer fields (`None` when it has none worth recording).
    pub ident: Option<BatchIdent>,
    /// A retry the producer state recognised: nothing was appended, the offsets are the
    /// original batch's, and the answer still waits until those are committed.
    pub duplicate: bool,
    pub at_ms: i64,
}

/// A replica of the ISR with the broker epoch it last fetched with (KIP-903).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsrMember {
    pub id: ReplicaId,
    pub broker_epoch: Option<i64>,
}

/// A proposed ISR change for the controller (AlterPartition, KIP-497).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterPartition {
    pub leader_epoch: LeaderEpoch,
    /// The partition epoch the proposal is based on; the controller refuses a stale one.
    pub partition_epoch: i32,
    pub isr: Vec<IsrMember>,
}

/// What the caller must do after an event, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The high watermark moved (up; on a follower also down after a truncation): wake
    /// fetch waiters, publish it in fetch answers and checkpoint it.
    HighWatermark(Offset),
    /// Answer a produce waiter: success only with the proof.
    Complete {
        waiter: WaiterId,
        result: Result<Committed, ErrorCode>,
    },
    /// Send this ISR change to the controller; answer with
    /// [`ReplicaState::isr_committed`] or [`ReplicaState::isr_rejected`]. One at a time.
    AlterPartition(AlterPartition),
    /// Follower: cut the log so it ends at `to`, then call [`ReplicaState::truncated`]; when not
    /// `complete`, the next fetch (with the then-latest epoch) finds the rest.
    Truncate { to: Offset, complete: bool },
    /// The producer state could not drop what the truncation removed: rebuild it from the log
    /// (snapshot at or below `end`, then batch headers up to `end`).
    RebuildProducers { end: Offset },
}

/// The leader's answer to a follower fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchAnswer {
    /// Read from the fetch offset (up to the leader's log end) and send this high watermark.
    Read { high_watermark: Offset },
    /// Send no data: the follower's log diverges (Fetch v12+ `diverging_epoch`).
    Diverging(EpochEndOffset),
}

/// A fetch from a follower, as the leader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerFetch {
    pub replica: ReplicaId,
    /// The follower broker's epoch (Fetch `ReplicaState.ReplicaEpoch`, KIP-903); carried into
    /// ISR proposals.
    pub broker_epoch: Option<i64>,
    /// `current_leader_epoch` (KIP-320); `None` skips the check (old request versions).
    pub current_leader_epoch: Option<LeaderEpoch>,
    /// What the follower has: it fetches from its own committed end.
    pub fetch_offset: Offset,
    /// The epoch of the follower's last batch (Fetch v12+).
    pub last_fetched_epoch: Option<LeaderEpoch>,
    pub now_ms: u64,
}

/// A fetch answer from the leader, as the follower sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderAnswer {
    /// The epoch the fetch was sent in.
    pub leader_epoch: LeaderEpoch,
    pub high_watermark: Offset,
    pub diverging: Option<EpochEndOffset>,
}

/// The controller's leadership decision naming this replica leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BecameLeader {
    pub leader_epoch: LeaderEpoch,
    pub partition_epoch: i32,
    pub replicas: Vec<ReplicaId>,
    pub isr: Vec<ReplicaId>,
    pub now_ms: u64,
}

/// A committed ISR change (the controller's AlterPartition answer, or a metadata update).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrUpdate {
    pub leader_epoch: LeaderEpoch,
    pub partition_epoch: i32,
    pub isr: Vec<ReplicaId>,
}

/// The leader's record of one follower (Kafka's `ReplicaState`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FollowerView {
    /// The follower's end as of its last fetch (`None` until it fetched in this epoch).
    pub end: Option<Offset>,
    /// When it last had everything the leader had (`None`: never in this epoch).
    pub last_caught_up_ms: Option<u64>,
    pub last_fetch_ms: Option<u64>,
    /// The leader's log end at the follower's previous fetch.
    pub last_fetch_leader_end: Option<Offset>,
    pub broker_epoch: Option<i64>,
}

impl FollowerView {
    /// Kafka's `isCaughtUp`: at the leader's end now, or caught up within the lag time.
    fn caught_up(&self, leader_end: Offset, now_ms: u64, lag_ms: u64) -> bool {
        self.end == Some(leader_end)
            || self
                .last_caught_up_ms
                .is_some_and(|t| now_ms.saturating_sub(t) <= lag_ms)
    }
}

#[derive(Debug, Clone)]
struct LeaderState {
    replicas: Vec<ReplicaId>,
    /// The ISR the controller committed.
    isr: BTreeSet<ReplicaId>,
    /// The ISR proposed and not yet answered.
    pending: Option<BTreeSet<ReplicaId>>,
    followers: BTreeMap<ReplicaId, FollowerView>,
    /// The log end when this epoch started: a follower joins the ISR only past it.
    epoch_start: Offset,
}

impl LeaderState {
    /// KIP-497's maximal ISR: the committed ISR plus replicas a pending expansion adds (a
    /// pending shrink removes nobody until committed). The high watermark waits for all of it.
    fn maximal_isr(&self) -> BTreeSet<ReplicaId> {
        match &self.pending {
            Some(p) => self.isr.union(p).copied().collect(),
            None => self.isr.clone(),
        }
    }

    /// Whether `id` is in the maximal ISR, without building it (the produce path asks on
    /// every log progress).
    fn in_maximal_isr(&self, id: &ReplicaId) -> bool {
        self.isr.contains(id) || self.pending.as_ref().is_some_and(|p| p.contains(id))
    }

    /// The size of the maximal ISR, without building it.
    fn maximal_isr_len(&self) -> usize {
        match &self.pending {
            Some(p) => self.isr.len() + p.difference(&self.isr).count(),
            None => self.isr.len(),
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Waiters {
    /// acks=1, by (last offset, id).
    leader: BTreeSet<(Offset, u64)>,
    /// acks=all, by (last offset, id).
    replicated: BTreeSet<(Offset, u64)>,
    /// Tickets of the current term admitted and not yet handed back.
    reserved: usize,
}

impl Waiters {
    fn len(&self) -> usize {
        self.leader.len() + self.replicated.len() + self.reserved
    }
}

/// One partition replica. `P` is its idempotent-producer state.
#[derive(Debug, Clone)]
pub struct ReplicaState<P = NoDedup> {
    config: Config,
    role: Role,
    leader_epoch: LeaderEpoch,
    partition_epoch: i32,
    /// Bumped on every role change: tickets of an older term are stale.
    term: u64,
    ends: LogEnds,
    hw: Offset,
    now_ms: u64,
    leader: Option<LeaderState>,
    /// Follower: a truncation was asked for and not yet done.
    truncating: bool,
    waiters: Waiters,
    next_id: u64,
    producers: P,
}

impl<P: ProducerDedup> ReplicaState<P> {
    /// An offline replica over a log at `ends`, with the high watermark it checkpointed (capped
    /// to the log's committed end: what a crash lost is not committed here any more).
    pub fn new(
        config: Config,
        ends: LogEnds,
        hw_checkpoint: Offset,
        producers: P,
    ) -> Result<ReplicaState<P>, StateError> {
        ends.check_order()?;
        let hw = hw_checkpoint
            .clamp(ends.log_start, ends.committed(config.commit_on))
            .max(ends.log_start);
        Ok(ReplicaState {
            config,
            role: Role::Offline,
            leader_epoch: -1,
            partition_epoch: -1,
            term: 0,
            ends,
            hw,
            now_ms: 0,
            leader: None,
            truncating: false,
            waiters: Waiters::default(),
            next_id: 0,
            producers,
        })
    }

    // ----- accessors -------------------------------------------------------------------------

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn leader_epoch(&self) -> LeaderEpoch {
        self.leader_epoch
    }

    pub fn partition_epoch(&self) -> i32 {
        self.partition_epoch
    }

    pub fn high_watermark(&self) -> Offset {
        self.hw
    }

    pub fn ends(&self) -> LogEnds {
        self.ends
    }

    /// The topic's flush policy changed: what the local log counts as committed follows it.
    /// The high watermark never goes back (after a switch to `Fsync` it waits for the
    /// fdatasync to pass it); a switch to `Write` may move it up at once.
    pub fn set_commit_on(&mut self, on: CommitOn) -> Vec<Action> {
        let mut out = Vec::new();
        if self.config.commit_on != on {
            self.config.commit_on = on;
            if self.role == Role::Leader {
                self.recompute_hw(&mut out);
            }
        }
        out
    }

    /// The topic's `min.insync.replicas` changed (AlterConfigs): admission and the high
    /// watermark follow it from the next event on (a value below 1 counts as 1).
    pub fn set_min_insync_replicas(&mut self, n: usize) {
        self.config.min_insync_replicas = n.max(1);
    }

    /// `replica.lag.time.max.ms` changed.
    pub fn set_replica_lag_time_max_ms(&mut self, ms: u64) {
        self.config.replica_lag_time_max_ms = ms;
    }

    /// The local log's committed end under its flush policy.
    pub fn local_committed_end(&self) -> Offset {
        self.ends.committed(self.config.commit_on)
    }

    /// The committed ISR (leader only; empty otherwise).
    pub fn isr(&self) -> Vec<ReplicaId> {
        self.leader
            .as_ref()
            .map_or_else(Vec::new, |l| l.isr.iter().copied().collect())
    }

    /// The assigned replicas (leader only).
    pub fn replicas(&self) -> Option<&[ReplicaId]> {
        self.leader.as_ref().map(|l| l.replicas.as_slice())
    }

    /// The ISR the high watermark waits for (committed plus pending additions).
    pub fn maximal_isr(&self) -> Vec<ReplicaId> {
        self.leader
            .as_ref()
            .map_or_else(Vec::new, |l| l.maximal_isr().into_iter().collect())
    }

    /// The ISR change waiting for the controller, if any.
    pub fn pending_isr(&self) -> Option<Vec<ReplicaId>> {
        self.leader
            .as_ref()
            .and_then(|l| l.pending.as_ref())
            .map(|p| p.iter().copied().collect())
    }

    /// The leader's record of `replica`.
    pub fn follower(&self, replica: ReplicaId) -> Option<FollowerView> {
        self.leader.as_ref()?.followers.get(&replica).copied()
    }

    /// The offset the current leader epoch started at (leader only).
    pub fn epoch_start_offset(&self) -> Option<Offset> {
        self.leader.as_ref().map(|l| l.epoch_start)
    }

    /// Registered waiters plus admitted tickets not yet handed back.
    pub fn pending_waiters(&self) -> usize {
        self.waiters.len()
    }

    pub fn producers(&self) -> &P {
        &self.producers
    }

    /// For expiry and limits the producer state applies on its own (they forget, never add).
    pub fn producers_mut(&mut self) -> &mut P {
        &mut self.producers
    }

    /// `min(min.insync.replicas, replication factor)`: the ISR size below which the high
    /// watermark stops (Kafka's `effectiveMinIsr`).
    fn effective_min_isr(&self, replicas: usize) -> usize {
        self.config.min_insync_replicas.min(replicas).max(1)
    }

    // ----- leadership ------------------------------------------------------------------------

    /// The controller made this replica leader.
    pub fn became_leader(&mut self, l: BecameLeader) -> Result<Vec<Action>, StateError> {
        if l.leader_epoch < self.leader_epoch {
            return Err(StateError::StaleLeaderEpoch {
                current: self.leader_epoch,
                got: l.leader_epoch,
            });
        }
        if l.leader_epoch == self.leader_epoch {
            match self.role {
                Role::Leader => return Ok(Vec::new()),
                Role::Follower { .. } => {
                    return Err(StateError::StaleLeaderEpoch {
                        current: self.leader_epoch,
                        got: l.leader_epoch,
                    })
                }
                Role::Offline => {}
            }
        }
        let me = self.config.replica_id;
        let mut replicas = BTreeSet::new();
        for &r in &l.replicas {
            if !replicas.insert(r) {
                return Err(StateError::DuplicateReplica { id: r });
            }
        }
        if !replicas.contains(&me) {
            return Err(StateError::NotAReplica { id: me });
        }
        let isr: BTreeSet<ReplicaId> = l.isr.iter().copied().collect();
        if isr.len() != l.isr.len() || !isr.contains(&me) || !isr.is_subset(&replicas) {
            return Err(StateError::InvalidIsr);
        }
        // Leader again in a newer epoch (e.g. the ISR or replicas changed with a new leader
        // epoch): what it appended stays in its log, so waiters and tickets carry on, as Kafka's
        // delayed produces do. From any other role they are answered now.
        let mut out = if self.role == Role::Leader {
            Vec::new()
        } else {
            self.change_role(Role::Leader, ErrorCode::NotLeaderOrFollower)
        };
        self.leader_epoch = l.leader_epoch;
        self.partition_epoch = l.partition_epoch;
        self.now_ms = self.now_ms.max(l.now_ms);
        // Kafka's resetReplicaState for a new leader: followers' ends are unknown until they
        // fetch; ISR members count as caught up now, the others never were.
        let followers = replicas
            .iter()
            .filter(|&&r| r != me)
            .map(|&r| {
                let view = FollowerView {
                    last_caught_up_ms: isr.contains(&r).then_some(l.now_ms),
                    ..FollowerView::default()
                };
                (r, view)
            })
            .collect();
        self.leader = Some(LeaderState {
            replicas: l.replicas,
            isr,
            pending: None,
            followers,
            epoch_start: self.ends.log_end,
        });
        self.recompute_hw(&mut out);
        Ok(out)
    }

    /// The controller made `leader` the leader in `leader_epoch`; this replica follows.
    pub fn became_follower(
        &mut self,
        leader: ReplicaId,
        leader_epoch: LeaderEpoch,
        partition_epoch: i32,
    ) -> Result<Vec<Action>, StateError> {
        if leader_epoch < self.leader_epoch
            || (leader_epoch == self.leader_epoch && self.role == Role::Leader)
        {
            return Err(StateError::StaleLeaderEpoch {
                current: self.leader_epoch,
                got: leader_epoch,
            });
        }
        if leader_epoch == self.leader_epoch && self.role == (Role::Follower { leader }) {
            return Ok(Vec::new());
        }
        let out = self.change_role(Role::Follower { leader }, ErrorCode::NotLeaderOrFollower);
        self.leader_epoch = leader_epoch;
        self.partition_epoch = partition_epoch;
        Ok(out)
    }

    /// The partition stops serving here (closed, deleted, or its log failed: pass
    /// KAFKA_STORAGE_ERROR then). Every waiter is answered with `reason`.
    pub fn went_offline(&mut self, reason: ErrorCode) -> Vec<Action> {
        self.change_role(Role::Offline, reason)
    }

    fn change_role(&mut self, role: Role, reason: ErrorCode) -> Vec<Action> {
        let mut out = Vec::new();
        let waiters = std::mem::take(&mut self.waiters);
        let mut ids: Vec<u64> = waiters
            .leader
            .iter()
            .chain(waiters.replicated.iter())
            .map(|&(_, id)| id)
            .collect();
        ids.sort_unstable();
        for id in ids {
            out.push(Action::Complete {
                waiter: WaiterId(id),
                result: Err(reason),
            });
        }
        self.role = role;
        self.term += 1;
        self.leader = None;
        self.truncating = false;
        out
    }

    // ----- the local log ---------------------------------------------------------------------

    /// The local log moved on (append, write or fdatasync completed, log start moved): pass
    /// its current positions. Positions only grow here; a cut goes through
    /// [`truncated`](Self::truncated).
    pub fn log_progress(&mut self, ends: LogEnds) -> Result<Vec<Action>, StateError> {
        ends.check_order()?;
        let old = self.ends;
        for (what, from, to) in [
            ("log start", old.log_start, ends.log_start),
            ("durable end", old.durable_end, ends.durable_end),
            ("written end", old.written_end, ends.written_end),
            ("log end", old.log_end, ends.log_end),
        ] {
            if to < from {
                return Err(StateError::EndsWentBack { what, from, to });
            }
        }
        self.ends = ends;
        let mut out = Vec::new();
        if self.hw < ends.log_start {
            // Records below the log start are gone (DeleteRecords, retention); nobody can read
            // there, so the high watermark is at least the log start (as in Kafka).
            self.hw = ends.log_start;
            out.push(Action::HighWatermark(self.hw));
        }
        if self.role == Role::Leader {
            let bound = self.ends.written_end;
            Self::drain(
                &mut self.waiters.leader,
                bound,
                |through| Ok(Committed::mint(through, CommitScope::Leader)),
                &mut out,
            );
            self.recompute_hw(&mut out);
        }
        Ok(out)
    }

    /// The log was cut (a follower's truncation): pass its positions after the cut.
    pub fn truncated(&mut self, ends: LogEnds) -> Result<Vec<Action>, StateError> {
        ends.check_order()?;
        if self.role == Role::Leader {
            return Err(StateError::NotFollower);
        }
        if ends.log_end > self.ends.log_end
            || ends.written_end > self.ends.written_end
            || ends.durable_end > self.ends.durable_end
        {
            return Err(StateError::TruncationForward { to: ends.log_end });
        }
        self.ends = ends;
        self.truncating = false;
        let mut out = Vec::new();
        let committed = self.local_committed_end();
        if self.hw > committed {
            self.hw = committed.max(ends.log_start);
            out.push(Action::HighWatermark(self.hw));
        }
        if !self.producers.truncated(ends.log_end) {
            out.push(Action::RebuildProducers { end: ends.log_end });
        }
        Ok(out)
    }

    // ----- produce ---------------------------------------------------------------------------

    /// A produce request for this partition arrived: checks role and `min.insync.replicas`
    /// before anything is appended, and reserves a waiter slot.
    ///
    /// Refusals: NOT_LEADER_OR_FOLLOWER off the leader; NOT_ENOUGH_REPLICAS for acks=all with
    /// a committed ISR smaller than `min.insync.replicas` (the configured value, even above the
    /// replication factor: a single-replica topic asking for two refuses acks=all as the
    /// broker always has); REQUEST_TIMED_OUT when `max_pending_waiters` are taken (retriable;
    /// nothing was appended, so an idempotent retry is clean).
    pub fn admit_produce(&mut self, acks: Acks) -> Result<Ticket, ErrorCode> {
        let Some(l) = &self.leader else {
            return Err(ErrorCode::NotLeaderOrFollower);
        };
        if acks == Acks::All && l.isr.len() < self.config.min_insync_replicas {
            return Err(ErrorCode::NotEnoughReplicas);
        }
        if acks != Acks::None {
            if self.waiters.len() >= self.config.max_pending_waiters {
                return Err(ErrorCode::RequestTimedOut);
            }
            self.waiters.reserved += 1;
        }
        let id = self.next_id;
        self.next_id += 1;
        Ok(Ticket {
            id,
            term: self.term,
            acks,
        })
    }

    /// The appender's check, just before appending the ticket's batch: still the leader of the
    /// ticket's term, and what the producer state says about the batch.
    pub fn check_batch(
        &self,
        ticket: &Ticket,
        batch: Option<&BatchIdent>,
    ) -> Result<DedupCheck, ErrorCode> {
        if ticket.term != self.term || self.role != Role::Leader {
            return Err(ErrorCode::NotLeaderOrFollower);
        }
        Ok(batch.map_or(DedupCheck::Append, |b| self.producers.check(b)))
    }

    /// The ticket's batch is in the log (or was a duplicate). Records it in the producer state
    /// and registers its waiter, or answers at once when already committed.
    pub fn appended(&mut self, ticket: Ticket, a: Appended) -> Vec<Action> {
        let current = ticket.term == self.term;
        if current && ticket.acks != Acks::None {
            self.waiters.reserved = self.waiters.reserved.saturating_sub(1);
        }
        if !a.duplicate {
            if let Some(ident) = &a.ident {
                self.producers
                    .record(ident, a.base_offset, a.last_offset, a.at_ms);
            }
        }
        let mut out = Vec::new();
        let waiter = WaiterId(ticket.id);
        if ticket.acks == Acks::None {
            return out;
        }
        if !current || self.role != Role::Leader {
            out.push(Action::Complete {
                waiter,
                result: Err(ErrorCode::NotLeaderOrFollower),
            });
            return out;
        }
        let key = (a.last_offset, ticket.id);
        match ticket.acks {
            Acks::None => {}
            Acks::Leader => {
                self.waiters.leader.insert(key);
                let bound = self.ends.written_end;
                Self::drain(
                    &mut self.waiters.leader,
                    bound,
                    |through| Ok(Committed::mint(through, CommitScope::Leader)),
                    &mut out,
                );
            }
            Acks::All => {
                self.waiters.replicated.insert(key);
                self.complete_replicated(&mut out);
            }
        }
        out
    }

    /// The ticket's append failed (or the batch was refused): frees its slot.
    pub fn append_failed(&mut self, ticket: Ticket) {
        if ticket.term == self.term && ticket.acks != Acks::None {
            self.waiters.reserved = self.waiters.reserved.saturating_sub(1);
        }
    }

    /// The request behind `waiter` is gone (connection closed, request timeout): forget it.
    /// Returns whether it was still waiting.
    pub fn abandon(&mut self, waiter: WaiterId) -> bool {
        let before = self.waiters.leader.len() + self.waiters.replicated.len();
        self.waiters.leader.retain(|&(_, id)| id != waiter.0);
        self.waiters.replicated.retain(|&(_, id)| id != waiter.0);
        before != self.waiters.leader.len() + self.waiters.replicated.len()
    }

    /// Answers every waiter at or below `bound` (exclusive end) with `result(offset)`.
    fn drain(
        set: &mut BTreeSet<(Offset, u64)>,
        bound: Offset,
        result: impl Fn(Offset) -> Result<Committed, ErrorCode>,
        out: &mut Vec<Action>,
    ) {
        while let Some(&(offset, id)) = set.first() {
            if offset >= bound {
                break;
            }
            set.pop_first();
            out.push(Action::Complete {
                waiter: WaiterId(id),
                result: result(offset),
            });
        }
    }

    /// Answers acks=all waiters the high watermark covers: with the proof while the ISR the
    /// high watermark waited for holds `min.insync.replicas`, else (Kafka's rule)
    /// NOT_ENOUGH_REPLICAS_AFTER_APPEND.
    fn complete_replicated(&mut self, out: &mut Vec<Action>) {
        let enough = self
            .leader
            .as_ref()
            .is_some_and(|l| l.maximal_isr_len() >= self.config.min_insync_replicas);
        Self::drain(
            &mut self.waiters.replicated,
            self.hw,
            |through| {
                if enough {
                    Ok(Committed::mint(through, CommitScope::Replicated))
                } else {
                    Err(ErrorCode::NotEnoughReplicasAfterAppend)
                }
            },
            out,
        );
    }

    // ----- the high watermark ----------------------------------------------------------------

    /// Leader: the high watermark is the smallest end over the leader's own committed end, the
    /// maximal ISR, and followers caught up enough to be joining it; it only moves up, and not
    /// at all while the committed ISR is below `min(min.insync.replicas, replicas)` (KIP-966's
    /// strict min ISR, which is what makes a replica that left the ISR meanwhile safe to elect).
    fn recompute_hw(&mut self, out: &mut Vec<Action>) {
        let Some(l) = &self.leader else { return };
        if l.isr.len() < self.effective_min_isr(l.replicas.len()) {
            return;
        }
        let leader_end = self.ends.log_end;
        let lag = self.config.replica_lag_time_max_ms;
        let mut hw = self.local_committed_end();
        for (id, f) in &l.followers {
            if l.in_maximal_isr(id) || f.caught_up(leader_end, self.now_ms, lag) {
                hw = hw.min(f.end.unwrap_or(Offset::MIN));
            }
        }
        if hw > self.hw {
            self.hw = hw;
            out.push(Action::HighWatermark(hw));
            self.complete_replicated(out);
        }
    }

    // ----- replication: leader side ----------------------------------------------------------

    /// A follower fetched. Returns the answer (or the error to send) and the actions the fetch
    /// caused (ISR expansion, high watermark, waiters). `history` is the leader log's epochs.
    pub fn follower_fetch(
        &mut self,
        f: FollowerFetch,
        history: &impl EpochHistory,
    ) -> (Result<FetchAnswer, ErrorCode>, Vec<Action>) {
        let mut out = Vec::new();
        let answer = self.follower_fetch_inner(f, history, &mut out);
        (answer, out)
    }

    fn follower_fetch_inner(
        &mut self,
        f: FollowerFetch,
        history: &impl EpochHistory,
        out: &mut Vec<Action>,
    ) -> Result<FetchAnswer, ErrorCode> {
        if self.role != Role::Leader {
            return Err(ErrorCode::NotLeaderOrFollower);
        }
        if let Some(e) = f.current_leader_epoch {
            if e < self.leader_epoch {
                return Err(ErrorCode::FencedLeaderEpoch);
            }
            if e > self.leader_epoch {
                return Err(ErrorCode::UnknownLeaderEpoch);
            }
        }
        let known = self
            .leader
            .as_ref()
            .is_some_and(|l| l.followers.contains_key(&f.replica));
        if !known {
            return Err(if f.current_leader_epoch.is_some() {
                ErrorCode::UnknownLeaderEpoch
            } else {
                ErrorCode::NotLeaderOrFollower
            });
        }
        if let Some(last) = f.last_fetched_epoch {
            if let Some(d) = diverging_epoch(history, self.ends.log_start, f.fetch_offset, last) {
                return Ok(FetchAnswer::Diverging(d));
            }
        }
        let leader_end = self.ends.log_end;
        if f.fetch_offset < self.ends.log_start || f.fetch_offset > leader_end {
            return Err(ErrorCode::OffsetOutOfRange);
        }
        self.now_ms = self.now_ms.max(f.now_ms);
        let now = self.now_ms;
        let hw = self.hw;
        let Some(l) = self.leader.as_mut() else {
            return Err(ErrorCode::NotLeaderOrFollower);
        };
        let Some(view) = l.followers.get_mut(&f.replica) else {
            return Err(ErrorCode::NotLeaderOrFollower);
        };
        // Kafka's updateFetchStateOrThrow: caught up now when at the leader's end; caught up
        // as of the previous fetch when it has reached the end the leader had then.
        if f.fetch_offset >= leader_end {
            view.last_caught_up_ms = Some(view.last_caught_up_ms.map_or(now, |t| t.max(now)));
        } else if view
            .last_fetch_leader_end
            .is_some_and(|e| f.fetch_offset >= e)
        {
            if let Some(prev) = view.last_fetch_ms {
                view.last_caught_up_ms = Some(view.last_caught_up_ms.map_or(prev, |t| t.max(prev)));
            }
        }
        view.last_fetch_leader_end = Some(leader_end);
        view.last_fetch_ms = Some(now);
        view.end = Some(f.fetch_offset);
        view.broker_epoch = f.broker_epoch;
        // Expansion (Kafka's isFollowerInSync): at or past the high watermark and past the
        // start of this leader epoch, one change in flight at a time.
        if l.pending.is_none()
            && !l.isr.contains(&f.replica)
            && f.fetch_offset >= hw
            && f.fetch_offset >= l.epoch_start
        {
            let mut proposed = l.isr.clone();
            proposed.insert(f.replica);
            out.push(propose(
                l,
                self.config.replica_id,
                self.leader_epoch,
                self.partition_epoch,
                proposed,
            ));
        }
        self.recompute_hw(out);
        Ok(FetchAnswer::Read {
            high_watermark: self.hw,
        })
    }

    /// Time passed: shrinks the ISR of followers that have not caught up within
    /// `replica.lag.time.max.ms` (one change in flight at a time), and lets the high watermark
    /// stop waiting for non-ISR followers that fell behind.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Action> {
        self.now_ms = self.now_ms.max(now_ms);
        let mut out = Vec::new();
        let me = self.config.replica_id;
        let (now, lag, leader_end) = (
            self.now_ms,
            self.config.replica_lag_time_max_ms,
            self.ends.log_end,
        );
        let (leader_epoch, partition_epoch) = (self.leader_epoch, self.partition_epoch);
        if let Some(l) = self.leader.as_mut() {
            if l.pending.is_none() {
                let out_of_sync: BTreeSet<ReplicaId> = l
                    .isr
                    .iter()
                    .copied()
                    .filter(|&r| r != me)
                    .filter(|r| {
                        l.followers
                            .get(r)
                            .is_none_or(|f| !f.caught_up(leader_end, now, lag))
                    })
                    .collect();
                if !out_of_sync.is_empty() {
                    let proposed = l.isr.difference(&out_of_sync).copied().collect();
                    out.push(propose(l, me, leader_epoch, partition_epoch, proposed));
                }
            }
        }
        self.recompute_hw(&mut out);
        out
    }

    /// The controller committed an ISR (this leader's proposal or its own decision).
    pub fn isr_committed(&mut self, u: IsrUpdate) -> Result<Vec<Action>, StateError> {
        if self.role != Role::Leader {
            return Err(StateError::NotLeader);
        }
        if u.leader_epoch != self.leader_epoch {
            return Err(StateError::WrongEpoch {
                current: self.leader_epoch,
                got: u.leader_epoch,
            });
        }
        if u.partition_epoch <= self.partition_epoch {
            return Err(StateError::StalePartitionEpoch {
                current: self.partition_epoch,
                got: u.partition_epoch,
            });
        }
        let me = self.config.replica_id;
        let isr: BTreeSet<ReplicaId> = u.isr.iter().copied().collect();
        let Some(l) = self.leader.as_mut() else {
            return Err(StateError::NotLeader);
        };
        if isr.len() != u.isr.len()
            || !isr.contains(&me)
            || !isr.iter().all(|r| l.replicas.contains(r))
        {
            return Err(StateError::InvalidIsr);
        }
        // A follower the committed ISR leaves out (the controller fenced it, retired it or
        // it is shutting down; or this leader's own shrink) is no longer waited for as one
        // "caught up and about to join": Kafka's isReplicaIsrEligible. Without this the high
        // watermark waited up to replica.lag.time.max.ms for a killed follower the controller
        // had already removed. Its next fetches make it caught up again as usual.
        for (id, view) in l.followers.iter_mut() {
            if l.isr.contains(id) && !isr.contains(id) {
                view.last_caught_up_ms = None;
                view.last_fetch_ms = None;
                view.last_fetch_leader_end = None;
            }
        }
        l.isr = isr;
        l.pending = None;
        self.partition_epoch = u.partition_epoch;
        let mut out = Vec::new();
        if self.leader.as_ref().map_or(0, |l| l.isr.len()) < self.config.min_insync_replicas {
            // The ISR shrank below min.insync while these waited: answer now rather than at
            // the request timeout (the high watermark is frozen anyway).
            let waiting = std::mem::take(&mut self.waiters.replicated);
            for (_, id) in waiting {
                out.push(Action::Complete {
                    waiter: WaiterId(id),
                    result: Err(ErrorCode::NotEnoughReplicasAfterAppend),
                });
            }
        }
        self.recompute_hw(&mut out);
        Ok(out)
    }

    /// The controller refused the pending ISR change: back to the committed ISR (the next
    /// fetch or tick proposes again if still needed).
    pub fn isr_rejected(&mut self, leader_epoch: LeaderEpoch) -> Result<Vec<Action>, StateError> {
        if leader_epoch != self.leader_epoch {
            return Err(StateError::WrongEpoch {
                current: self.leader_epoch,
                got: leader_epoch,
            });
        }
        let Some(l) = self.leader.as_mut() else {
            return Err(StateError::NotLeader);
        };
        l.pending = None;
        let mut out = Vec::new();
        self.recompute_hw(&mut out);
        Ok(out)
    }

    // ----- replication: follower side --------------------------------------------------------

    /// Where a follower fetches from next: its committed end, once everything it appended is
    /// committed (so the leader counts only data that satisfies this replica's flush policy)
    /// and no truncation is pending. `None` means: do not fetch now.
    pub fn fetch_position(&self) -> Option<Offset> {
        match self.role {
            Role::Follower { .. }
                if !self.truncating && self.local_committed_end() == self.ends.log_end =>
            {
                Some(self.ends.log_end)
            }
            _ => None,
        }
    }

    /// The leader answered a fetch. A diverging epoch asks for a truncation; otherwise the
    /// follower's high watermark becomes the leader's, capped at its own committed end.
    pub fn leader_answer(
        &mut self,
        a: LeaderAnswer,
        history: &impl EpochHistory,
    ) -> Result<Vec<Action>, StateError> {
        if !matches!(self.role, Role::Follower { .. }) {
            return Err(StateError::NotFollower);
        }
        if a.leader_epoch != self.leader_epoch {
            return Err(StateError::WrongEpoch {
                current: self.leader_epoch,
                got: a.leader_epoch,
            });
        }
        let mut out = Vec::new();
        if let Some(d) = a.diverging {
            let t = truncation_for(d, history, self.ends.log_end);
            self.truncating = true;
            out.push(Action::Truncate {
                to: t.to.max(self.ends.log_start),
                complete: t.complete,
            });
            return Ok(out);
        }
        let hw = a.high_watermark.min(self.local_committed_end());
        if hw > self.hw {
            self.hw = hw;
            out.push(Action::HighWatermark(hw));
        }
        Ok(out)
    }

    /// A follower appended a batch copied from the leader: the producer state learns it, so a
    /// retry after failover is still recognised. Returns producer ids forgotten for the limit.
    pub fn follower_appended(
        &mut self,
        ident: &BatchIdent,
        base_offset: Offset,
        last_offset: Offset,
        at_ms: i64,
    ) -> usize {
        self.producers
            .record(ident, base_offset, last_offset, at_ms)
    }
}

/// Records `isr` as the leader's pending change and builds the AlterPartition for it.
fn propose(
    l: &mut LeaderState,
    me: ReplicaId,
    leader_epoch: LeaderEpoch,
    partition_epoch: i32,
    isr: BTreeSet<ReplicaId>,
) -> Action {
    let members = isr
        .iter()
        .map(|&id| IsrMember {
            id,
            broker_epoch: if id == me {
                None
            } else {
                l.followers.get(&id).and_then(|f| f.broker_epoch)
            },
        })
        .collect();
    l.pending = Some(isr);
    Action::AlterPartition(AlterPartition {
        leader_epoch,
        partition_epoch,
        isr: members,
    })
}
