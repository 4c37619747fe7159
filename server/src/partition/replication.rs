//! The partition facade's replication side: roles from the metadata image, the leader's answer
//! to a follower's fetch, and the follower's handling of the leader's answer.
//!
//! The replica core decides (who may produce, what a follower may read, the high watermark,
//! ISR changes, where a divergent follower cuts its log); this file does what those decisions
//! need from the engine log: reading stored batches up to the log end for a follower,
//! appending the leader's batches as they are (`append_replicated`), truncating
//! (`truncate_to`) and rebuilding producer state after a cut. The network is not here: the
//! follower fetcher (`crate::replication`) and the Fetch API (`crate::api::fetch`) carry these
//! calls' inputs and outputs over Kafka's replica Fetch, and the facade tests exchange them
//! directly.

use std::rc::Rc;

use bytes::Bytes;
use shardlog_engine::{batch, LogError};
use shardlog_replica::{
    Action, BatchIdent, BecameLeader, EpochEndOffset, EpochHistory, ErrorCode, FetchAnswer,
    FollowerFetch, IsrUpdate, LeaderAnswer, LeaderEpoch, Offset, ReplicaId, Role, StateError,
};

use super::{log_ends, restore_producers, Core, Log, Partition};
use crate::wire::errors;
use crate::wire::fetch::ReadOut;

/// No leader (the partition is offline in the image).
pub const NO_LEADER: i32 = -1;

/// A partition's assignment as the metadata image has it: what the facade turns into a role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub leader: ReplicaId,
    pub leader_epoch: LeaderEpoch,
    pub partition_epoch: i32,
    pub replicas: Vec<ReplicaId>,
    pub isr: Vec<ReplicaId>,
}

impl Assignment {
    /// `node` as the only replica (single-node topics, `__consumer_offsets`).
    pub fn sole(node: ReplicaId, leader_epoch: LeaderEpoch) -> Assignment {
        Assignment {
            leader: node,
            leader_epoch,
            partition_epoch: 0,
            replicas: vec![node],
            isr: vec![node],
        }
    }
}

/// An ISR change the core proposed, for the controller (AlterPartition, KIP-497).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IsrProposal {
    pub topic: String,
    pub partition: i32,
    pub alter: shardlog_replica::AlterPartition,
}

/// Where a partition's ISR proposals go: the shard forwards them to the controller and answers
/// with [`Partition::isr_answer`]. Called synchronously from the core's actions, so it must not
/// block (the shard's sink spawns the forwarding).
pub type AlterSink = Rc<dyn Fn(IsrProposal)>;

/// The replica settings a partition opens with.
#[derive(Clone)]
pub struct ReplicaSetup {
    /// This broker's id (`node_id`).
    pub node_id: ReplicaId,
    /// `replica.lag.time.max.ms`.
    pub replica_lag_time_max_ms: u64,
    /// The topic's `min.insync.replicas`.
    pub min_insync_replicas: usize,
    pub alter_sink: Option<AlterSink>,
}

impl ReplicaSetup {
    /// A partition that is never replicated (no ISR changes to send).
    pub fn single(node_id: ReplicaId) -> ReplicaSetup {
        ReplicaSetup {
            node_id,
            replica_lag_time_max_ms: 30_000,
            min_insync_replicas: 1,
            alter_sink: None,
        }
    }
}

/// Feeds an assignment to the core: leader, follower or offline (KIP-497: an ISR change alone
/// bumps only the partition epoch, and reaches a leader as a committed ISR).
pub(super) fn assign(
    core: &mut Core,
    a: &Assignment,
    now_ms: u64,
) -> Result<Vec<Action>, StateError> {
    let me = core.config().replica_id;
    if a.leader == me {
        if core.role() == Role::Leader && core.leader_epoch() == a.leader_epoch {
            // Also when the ISR is the same: a change of the ELR (KIP-966) or of an ISR
            // member's state bumps the partition epoch too, and a leader that kept the old
            // one would have every later AlterPartition refused with INVALID_UPDATE_VERSION
            // (its ISR could then never grow back).
            if a.partition_epoch > core.partition_epoch() {
                return core.isr_committed(IsrUpdate {
                    leader_epoch: a.leader_epoch,
                    partition_epoch: a.partition_epoch,
                    isr: a.isr.clone(),
                });
            }
            return Ok(Vec::new());
        }
        return core.became_leader(BecameLeader {
            leader_epoch: a.leader_epoch,
            partition_epoch: a.partition_epoch,
            replicas: a.replicas.clone(),
            isr: a.isr.clone(),
            now_ms,
        });
    }
    if a.leader != NO_LEADER && a.replicas.contains(&me) {
        return core.became_follower(a.leader, a.leader_epoch, a.partition_epoch);
    }
    if core.role() == Role::Offline {
        return Ok(Vec::new());
    }
    Ok(core.went_offline(ErrorCode::NotLeaderOrFollower))
}

/// The engine log's leader-epoch table as the core asks it.
pub(crate) struct LogHistory<'a>(pub &'a Log);

impl EpochHistory for LogHistory<'_> {
    fn end_offset_for_epoch(&self, epoch: LeaderEpoch) -> Option<(LeaderEpoch, Offset)> {
        self.0.end_offset_for_epoch(epoch)
    }

    fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.0.latest_epoch()
    }

    fn earliest_epoch_start(&self) -> Option<Offset> {
        self.0.leader_epochs().first().map(|&(_, start)| start)
    }
}

/// One partition of a follower's fetch, as the leader gets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaFetch {
    pub replica: ReplicaId,
    pub fetch_offset: Offset,
    /// `current_leader_epoch`; -1: not checked.
    pub current_leader_epoch: LeaderEpoch,
    /// `last_fetched_epoch` (Fetch v12+); -1: none.
    pub last_fetched_epoch: LeaderEpoch,
}

/// Where a follower fetches from next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchPosition {
    pub leader: ReplicaId,
    pub leader_epoch: LeaderEpoch,
    pub fetch_offset: Offset,
    /// The epoch of the follower's last batch; -1 with an empty log.
    pub last_fetched_epoch: LeaderEpoch,
    pub log_start_offset: Offset,
}

/// The leader's answer for one partition, as the follower gets it (decoded from a Fetch
/// response, or a leader's [`ReadOut`] in tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderData {
    /// The leader epoch the fetch was sent in ([`FetchPosition::leader_epoch`]).
    pub fetched_in_epoch: LeaderEpoch,
    pub error: i16,
    pub high_watermark: Offset,
    pub log_start_offset: Offset,
    /// `diverging_epoch` (epoch, end offset).
    pub diverging: Option<(LeaderEpoch, Offset)>,
    /// Stored batches, as the leader holds them.
    pub records: Bytes,
}

impl LeaderData {
    /// What a leader's read becomes on the wire, without the wire (facade tests).
    pub fn from_read(out: &ReadOut, fetched_in_epoch: LeaderEpoch) -> LeaderData {
        let records: Vec<u8> = out
            .batches
            .iter()
            .flat_map(|b| b.to_bytes().to_vec())
            .collect();
        LeaderData {
            fetched_in_epoch,
            error: out.error,
            high_watermark: out.high_watermark,
            log_start_offset: out.log_start_offset,
            diverging: out.diverging_epoch,
            records: Bytes::from(records),
        }
    }
}

/// What the follower did with an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FollowerStep {
    /// Appended this many records (maybe none) and took the high watermark.
    Appended { records: i64 },
    /// Cut its log at the leader's diverging epoch; fetches again from the new end.
    Truncated { to: Offset },
}

/// Why a follower could not use an answer (the fetcher logs it and backs off).
#[derive(Debug, thiserror::Error)]
pub enum FollowerError {
    #[error("leader answered {}", errors::name(*.0))]
    Leader(i16),
    #[error("the answer is for leader epoch {got}, this replica is in {current} (role {role:?})")]
    Stale {
        got: LeaderEpoch,
        current: LeaderEpoch,
        role: Role,
    },
    #[error("the leader's records: {0}")]
    Log(#[from] LogError),
    #[error("replica core: {0}")]
    Core(#[from] StateError),
}

impl Partition {
    /// Takes the partition's assignment from the metadata image: becomes leader, follower or
    /// offline in the core (with this broker's id), answering waiting produces when it stops
    /// leading. An ISR the controller committed while leading is fed as `isr_committed`.
    pub fn apply_assignment(&self, a: &Assignment) -> Result<(), StateError> {
        self.replica.sync(&self.log, &self.topic, self.index);
        let now = u64::try_from(self.clock_now()).unwrap_or(0);
        let before = self.isr();
        let led_in = (self.is_leader()).then(|| self.leader_epoch.get());
        let acts = assign(&mut self.replica.core.borrow_mut(), a, now)?;
        self.count_isr_change(&before);
        if self.is_leader() && led_in != Some(a.leader_epoch) {
            // A leadership taken (a new leader epoch with this broker as leader): Kafka's
            // leader-election count, seen from the broker that won it.
            crate::metrics::leadership_gained();
        }
        self.leader_epoch.set(a.leader_epoch);
        self.replica.current_leader.set((a.leader, a.leader_epoch));
        self.replica.apply(acts, &self.topic, self.index);
        // Long polls re-check (a partition that stopped leading answers them now).
        self.replica.changed.notify(usize::MAX);
        Ok(())
    }

    /// The topic's `min.insync.replicas` (AlterConfigs).
    pub fn set_min_insync_replicas(&self, n: usize) {
        self.replica.core.borrow_mut().set_min_insync_replicas(n);
    }

    pub fn role(&self) -> Role {
        self.replica.core.borrow().role()
    }

    pub fn is_leader(&self) -> bool {
        self.role() == Role::Leader
    }

    /// (leader id, leader epoch) of the latest assignment, for KIP-951's `current_leader`.
    pub fn current_leader(&self) -> (i32, i32) {
        self.replica.current_leader.get()
    }

    /// The committed ISR while leading (empty otherwise).
    pub fn isr(&self) -> Vec<ReplicaId> {
        self.replica.core.borrow().isr()
    }

    /// Leading with fewer replicas in the ISR than assigned (Kafka's under-replicated).
    pub fn under_replicated(&self) -> bool {
        let core = self.replica.core.borrow();
        core.role() == Role::Leader
            && core
                .replicas()
                .is_some_and(|replicas| core.isr().len() < replicas.len())
    }

    /// NOT_LEADER_OR_FOLLOWER for client reads and offsets queries off the leader (consumers
    /// do not fetch from followers: KIP-392 is not implemented), else `None`.
    pub fn client_refusal(&self) -> Option<i16> {
        match self.role() {
            Role::Leader => None,
            _ => Some(errors::NOT_LEADER_OR_FOLLOWER),
        }
    }

    /// The controller answered this partition's ISR proposal: the committed assignment, or an
    /// error code (the core goes back to the committed ISR and proposes again when needed).
    pub fn isr_answer(&self, proposed_in: LeaderEpoch, answer: Result<Assignment, i16>) {
        let before = self.isr();
        let result = {
            let mut core = self.replica.core.borrow_mut();
            match answer {
                Ok(a) if a.leader == core.config().replica_id && a.leader_epoch == proposed_in => {
                    if a.partition_epoch <= core.partition_epoch() {
                        // The metadata broadcast got here first.
                        Ok(Vec::new())
                    } else {
                        core.isr_committed(IsrUpdate {
                            leader_epoch: a.leader_epoch,
                            partition_epoch: a.partition_epoch,
                            isr: a.isr,
                        })
                    }
                }
                // Leadership moved meanwhile: the metadata broadcast brings the new role.
                Ok(_) => Ok(Vec::new()),
                Err(code) => {
                    tracing::info!(topic = %self.topic, partition = self.index, error = errors::name(code), "controller refused the ISR change");
                    core.isr_rejected(proposed_in)
                }
            }
        };
        match result {
            Ok(acts) => {
                self.count_isr_change(&before);
                self.replica.apply(acts, &self.topic, self.index)
            }
            Err(e) => {
                tracing::debug!(topic = %self.topic, partition = self.index, error = %e, "ISR answer no longer applies")
            }
        }
    }

    /// Counts a committed ISR change of a partition led here (before: the ISR it had).
    fn count_isr_change(&self, before: &[ReplicaId]) {
        if before.is_empty() || !self.is_leader() {
            return;
        }
        let after = self.isr();
        if after != before {
            tracing::info!(topic = %self.topic, partition = self.index, ?before, ?after, "ISR changed");
            crate::metrics::isr_changed(after.len() < before.len());
        }
    }

    /// Leader: serves one partition of a follower's fetch. The core checks the follower and its
    /// epochs, updates its view of it (ISR, high watermark, waiting acks=all produces) and
    /// says what to send: stored batches from the fetch offset up to the log end (not the high
    /// watermark; at most `max_bytes`, at least one batch), a diverging epoch, or an error.
    pub async fn serve_replica_fetch(&self, f: ReplicaFetch, max_bytes: usize) -> ReadOut {
        self.replica.sync(&self.log, &self.topic, self.index);
        let fetch = FollowerFetch {
            replica: f.replica,
            broker_epoch: None,
            current_leader_epoch: (f.current_leader_epoch >= 0).then_some(f.current_leader_epoch),
            fetch_offset: f.fetch_offset,
            last_fetched_epoch: (f.last_fetched_epoch >= 0).then_some(f.last_fetched_epoch),
            now_ms: u64::try_from(self.clock_now()).unwrap_or(0),
        };
        let (answer, acts) = self
            .replica
            .core
            .borrow_mut()
            .follower_fetch(fetch, &LogHistory(&self.log));
        self.replica.apply(acts, &self.topic, self.index);
        let mut out = ReadOut {
            topic: self.topic.clone(),
            partition: self.index,
            high_watermark: self.replica.core.borrow().high_watermark(),
            log_start_offset: self.log.log_start_offset(),
            ..ReadOut::default()
        };
        match answer {
            Ok(FetchAnswer::Read { high_watermark }) => {
                out.high_watermark = high_watermark;
                match self
                    .log
                    .read(f.fetch_offset, i64::MAX, max_bytes, true)
                    .await
                {
                    Ok(rr) => {
                        self.stats
                            .served(rr.bytes, crate::metrics::records_in_batches(&rr.batches));
                        out.bytes = rr.bytes;
                        out.batches = rr.batches;
                    }
                    Err(e) => {
                        // A read failure takes the partition offline here, as a write does.
                        self.note_log_error(&e);
                        out.error = errors::log_error_code(&e, &self.topic, self.index);
                    }
                }
            }
            Ok(FetchAnswer::Diverging(d)) => {
                tracing::info!(topic = %self.topic, partition = self.index, replica = f.replica, fetch_offset = f.fetch_offset, last_fetched_epoch = f.last_fetched_epoch, epoch = d.epoch, end_offset = d.end_offset, "follower log diverges");
                out.diverging_epoch = Some((d.epoch, d.end_offset));
            }
            Err(code) => {
                let code = code.code();
                tracing::debug!(topic = %self.topic, partition = self.index, replica = f.replica, error = errors::name(code), "replica fetch refused");
                out.error = code;
                if code == errors::NOT_LEADER_OR_FOLLOWER || code == errors::FENCED_LEADER_EPOCH {
                    out.current_leader = Some(self.current_leader());
                }
            }
        }
        out
    }

    /// Follower: where to fetch from next (its committed end, once everything appended is
    /// committed and no truncation is pending), or `None` (not a follower, or not now).
    pub fn fetch_position(&self) -> Option<FetchPosition> {
        self.replica.sync(&self.log, &self.topic, self.index);
        let core = self.replica.core.borrow();
        let Role::Follower { leader } = core.role() else {
            return None;
        };
        let fetch_offset = core.fetch_position()?;
        Some(FetchPosition {
            leader,
            leader_epoch: core.leader_epoch(),
            fetch_offset,
            last_fetched_epoch: self.log.latest_epoch().unwrap_or(-1),
            log_start_offset: self.log.log_start_offset(),
        })
    }

    /// Follower: takes the leader's answer for this partition. Batches are appended as they
    /// are (offsets and leader epochs kept), fed to the producer state, and waited for until
    /// committed under the topic's flush policy; then the high watermark is the leader's,
    /// capped at the local committed end. A diverging epoch cuts the log instead (and, when the
    /// producer state cannot drop what was cut, rebuilds it from the log).
    pub async fn follower_receive(&self, d: LeaderData) -> Result<FollowerStep, FollowerError> {
        if d.error != errors::NONE {
            return Err(FollowerError::Leader(d.error));
        }
        self.check_follower_of(d.fetched_in_epoch)?;
        if let Some((epoch, end_offset)) = d.diverging {
            let acts = self.replica.core.borrow_mut().leader_answer(
                LeaderAnswer {
                    leader_epoch: d.fetched_in_epoch,
                    high_watermark: d.high_watermark,
                    diverging: Some(EpochEndOffset { epoch, end_offset }),
                },
                &LogHistory(&self.log),
            )?;
            let to = self.follower_actions(acts).await?;
            return Ok(FollowerStep::Truncated {
                to: to.unwrap_or_else(|| self.log.log_end_offset()),
            });
        }
        let records = whole_batches(d.records);
        let mut appended = 0;
        if !records.is_empty() {
            let now = self.clock_now();
            let ra = self
                .log
                .append_replicated(records, now)
                .await
                .inspect_err(|e| self.note_log_error(e))?;
            {
                let mut core = self.replica.core.borrow_mut();
                for info in &ra.batches {
                    if info.producer_id >= 0 && !info.is_control() {
                        let ident = BatchIdent {
                            producer_id: info.producer_id,
                            producer_epoch: info.producer_epoch,
                            first_seq: info.base_sequence,
                            last_seq: info.last_sequence(),
                        };
                        core.follower_appended(
                            &ident,
                            info.base_offset,
                            info.last_offset(),
                            info.max_timestamp.min(now),
                        );
                    }
                }
            }
            appended = ra.last_offset - ra.base_offset + 1;
            let bytes: usize = ra.batches.iter().map(|b| b.size).sum();
            self.stats.appended(bytes, appended.max(0) as u64);
            // The follower's flush policy: it fetches on (and so counts towards the high
            // watermark) only once this is committed here.
            self.log
                .wait_committed(ra.last_offset)
                .await
                .inspect_err(|e| self.note_log_error(e))?;
            self.check_follower_of(d.fetched_in_epoch)?;
        }
        self.replica.sync(&self.log, &self.topic, self.index);
        let acts = self.replica.core.borrow_mut().leader_answer(
            LeaderAnswer {
                leader_epoch: d.fetched_in_epoch,
                high_watermark: d.high_watermark,
                diverging: None,
            },
            &LogHistory(&self.log),
        )?;
        self.follower_actions(acts).await?;
        Ok(FollowerStep::Appended { records: appended })
    }

    fn check_follower_of(&self, epoch: LeaderEpoch) -> Result<(), FollowerError> {
        let core = self.replica.core.borrow();
        match core.role() {
            Role::Follower { .. } if core.leader_epoch() == epoch => Ok(()),
            role => Err(FollowerError::Stale {
                got: epoch,
                current: core.leader_epoch(),
                role,
            }),
        }
    }

    /// Carries out a follower's actions: truncation and producer rebuilds here, the rest as
    /// usual. Returns the end a truncation cut to.
    async fn follower_actions(&self, acts: Vec<Action>) -> Result<Option<Offset>, FollowerError> {
        let mut queue: std::collections::VecDeque<Action> = acts.into();
        let mut cut = None;
        while let Some(act) = queue.pop_front() {
            match act {
                Action::Truncate { to, complete } => {
                    let from = self.log.log_end_offset();
                    let end = match self.log.truncate_to(to).await {
                        Ok(end) => end,
                        Err(e) => {
                            // The core stays "truncating" (no fetch position) until the log
                            // is cut: the partition stops fetching rather than append on top
                            // of a divergent tail.
                            tracing::error!(topic = %self.topic, partition = self.index, to, error = %e, "follower truncation failed");
                            return Err(e.into());
                        }
                    };
                    tracing::info!(topic = %self.topic, partition = self.index, from, to = end, complete, "follower truncated its log to the leader's");
                    let more = self
                        .replica
                        .core
                        .borrow_mut()
                        .truncated(log_ends(&self.log))?;
                    queue.extend(more);
                    cut = Some(end);
                }
                Action::RebuildProducers { end } => {
                    let state = restore_producers(
                        &self.log,
                        &self.snapshot_path,
                        &self.topic,
                        self.index,
                        self.clock_now(),
                    )
                    .await?;
                    tracing::info!(topic = %self.topic, partition = self.index, end, producers = state.len(), "rebuilt producer state after a truncation");
                    *self.replica.core.borrow_mut().producers_mut() = state;
                }
                other => self.replica.apply(vec![other], &self.topic, self.index),
            }
        }
        Ok(cut)
    }
}

/// The partitions one shard follows, by leader broker: each leader's set is what that
/// leader's fetcher task fetches (see `crate::replication`). Plain data on the shard; the
/// fetcher looks partitions up by name each round, so it never keeps a removed one open.
#[derive(Default)]
pub struct FollowTable {
    by_leader: std::cell::RefCell<std::collections::BTreeMap<ReplicaId, Rc<FollowSet>>>,
}

/// The partitions followed from one leader broker.
#[derive(Default)]
pub struct FollowSet {
    parts: std::cell::RefCell<std::collections::BTreeSet<(String, i32)>>,
    /// Notified when a partition joins (the fetcher may be idle).
    pub wake: event_listener::Event,
}

impl FollowSet {
    pub fn partitions(&self) -> Vec<(String, i32)> {
        self.parts.borrow().iter().cloned().collect()
    }

    pub fn remove(&self, topic: &str, index: i32) {
        self.parts.borrow_mut().remove(&(topic.to_string(), index));
    }

    pub fn is_empty(&self) -> bool {
        self.parts.borrow().is_empty()
    }
}

impl FollowTable {
    /// Follows `(topic, index)` from `leader` (`None`: from nobody). Returns the set of a
    /// leader that had none, for which the caller starts a fetcher.
    pub fn point(
        &self,
        topic: &str,
        index: i32,
        leader: Option<ReplicaId>,
    ) -> Option<(ReplicaId, Rc<FollowSet>)> {
        let key = (topic.to_string(), index);
        let mut by_leader = self.by_leader.borrow_mut();
        for (&l, set) in by_leader.iter() {
            if Some(l) != leader {
                set.parts.borrow_mut().remove(&key);
            }
        }
        let leader = leader?;
        if let Some(set) = by_leader.get(&leader) {
            if set.parts.borrow_mut().insert(key) {
                set.wake.notify(usize::MAX);
            }
            return None;
        }
        let set = Rc::new(FollowSet::default());
        set.parts.borrow_mut().insert(key);
        by_leader.insert(leader, set.clone());
        Some((leader, set))
    }

    /// The fetcher of `leader` is ending: forgets its set if it is still `set` and empty.
    /// False when partitions joined meanwhile (the fetcher carries on).
    pub fn retire(&self, leader: ReplicaId, set: &Rc<FollowSet>) -> bool {
        let mut by_leader = self.by_leader.borrow_mut();
        if !set.is_empty() {
            return false;
        }
        if by_leader.get(&leader).is_some_and(|s| Rc::ptr_eq(s, set)) {
            by_leader.remove(&leader);
        }
        true
    }

    /// Leaders with a fetcher, and how many partitions each follows.
    pub fn leaders(&self) -> Vec<(ReplicaId, usize)> {
        self.by_leader
            .borrow()
            .iter()
            .map(|(&l, s)| (l, s.parts.borrow().len()))
            .collect()
    }
}

/// The complete batches at the front of `records`: a leader may end a response with a partial
/// batch (Kafka does when a limit cuts one), which is fetched again next time.
fn whole_batches(records: Bytes) -> Bytes {
    let mut pos = 0;
    while let Ok(info) = batch::peek(&records[pos..]) {
        if info.size == 0 || pos + info.size > records.len() {
            break;
        }
        pos += info.size;
    }
    records.slice(..pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_last_batch_is_left_for_the_next_fetch() {
        let a = batch::build(0, 2, 10, 1);
        let b = batch::build(2, 1, 10, 1);
        let mut all = a.clone();
        all.extend_from_slice(&b[..b.len() - 3]);
        assert_eq!(whole_batches(Bytes::from(all)).len(), a.len());
        let mut both = a.clone();
        both.extend_from_slice(&b);
        assert_eq!(whole_batches(Bytes::from(both)).len(), a.len() + b.len());
        assert!(whole_batches(Bytes::from_static(&[1, 2, 3])).is_empty());
    }
}
