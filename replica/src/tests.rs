//! Scenario tests of the replica core: each Kafka rule and error path, event by event.

use std::collections::BTreeMap;

use crate::*;

const LAG: u64 = 10_000;

fn cfg(id: ReplicaId) -> Config {
    Config {
        replica_id: id,
        replica_lag_time_max_ms: LAG,
        ..Config::default()
    }
}

/// A test-side idempotent-producer state: remembers every batch per producer id (the broker's
/// `ProducerStates` keeps the last five; the core only calls through the trait).
#[derive(Debug, Default, Clone)]
struct Remembered {
    batches: BTreeMap<i64, Vec<(BatchIdent, Offset, Offset)>>,
}

impl ProducerDedup for Remembered {
    fn check(&self, b: &BatchIdent) -> DedupCheck {
        match self.batches.get(&b.producer_id).and_then(|v| {
            v.iter()
                .find(|(i, _, _)| i.first_seq == b.first_seq && i.last_seq == b.last_seq)
        }) {
            Some(&(_, base, last)) => DedupCheck::Duplicate {
                base_offset: base,
                last_offset: last,
            },
            None => DedupCheck::Append,
        }
    }
    fn record(&mut self, b: &BatchIdent, base: Offset, last: Offset, _at: i64) -> usize {
        self.batches
            .entry(b.producer_id)
            .or_default()
            .push((*b, base, last));
        0
    }
    fn truncated(&mut self, end: Offset) -> bool {
        // Cannot unwind what it forgot; says so when the cut removes a batch it holds.
        !self
            .batches
            .values()
            .flatten()
            .any(|&(_, _, last)| last >= end)
    }
}

/// A replica plus its log positions and epoch history, so tests move a "log" and the core
/// together.
struct H<P: ProducerDedup = NoDedup> {
    r: ReplicaState<P>,
    ends: LogEnds,
    epochs: EpochTable,
}

impl H<NoDedup> {
    fn new(config: Config) -> H {
        H::with(config, NoDedup)
    }
}

impl<P: ProducerDedup> H<P> {
    fn with(config: Config, p: P) -> H<P> {
        H {
            r: ReplicaState::new(config, LogEnds::at(0), 0, p).unwrap(),
            ends: LogEnds::at(0),
            epochs: EpochTable::new(0),
        }
    }

    fn lead(
        &mut self,
        epoch: LeaderEpoch,
        replicas: &[ReplicaId],
        isr: &[ReplicaId],
    ) -> Vec<Action> {
        self.r
            .became_leader(BecameLeader {
                leader_epoch: epoch,
                partition_epoch: 0,
                replicas: replicas.to_vec(),
                isr: isr.to_vec(),
                now_ms: 0,
            })
            .unwrap()
    }

    /// Appends `n` records as leader under `acks` (no I/O done yet); returns the waiter and the
    /// actions.
    fn produce(&mut self, acks: Acks, n: i64) -> Result<(WaiterId, Vec<Action>), ErrorCode> {
        let t = self.r.admit_produce(acks)?;
        assert_eq!(self.r.check_batch(&t, None), Ok(DedupCheck::Append));
        let base = self.ends.log_end;
        self.ends.log_end += n;
        self.epochs.append(self.r.leader_epoch(), n);
        let w = t.waiter();
        let mut acts = self.r.appended(
            t,
            Appended {
                base_offset: base,
                last_offset: base + n - 1,
                ident: None,
                duplicate: false,
                at_ms: 0,
            },
        );
        acts.extend(self.r.log_progress(self.ends).unwrap());
        Ok((w, acts))
    }

    fn write(&mut self, end: Offset) -> Vec<Action> {
        self.ends.written_end = end;
        self.r.log_progress(self.ends).unwrap()
    }

    /// The controller's committed ISR change, as the core receives it.
    fn commit_isr(
        &mut self,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: &[ReplicaId],
    ) -> Result<Vec<Action>, StateError> {
        self.r.isr_committed(IsrUpdate {
            leader_epoch,
            partition_epoch,
            isr: isr.to_vec(),
        })
    }

    fn sync(&mut self, end: Offset) -> Vec<Action> {
        self.ends.written_end = self.ends.written_end.max(end);
        self.ends.durable_end = end;
        self.r.log_progress(self.ends).unwrap()
    }

    fn fetch(
        &mut self,
        replica: ReplicaId,
        offset: Offset,
        now: u64,
    ) -> (Result<FetchAnswer, ErrorCode>, Vec<Action>) {
        let f = FollowerFetch {
            replica,
            broker_epoch: Some(100 + i64::from(replica)),
            current_leader_epoch: Some(self.r.leader_epoch()),
            fetch_offset: offset,
            last_fetched_epoch: None,
            now_ms: now,
        };
        self.r.follower_fetch(f, &self.epochs)
    }
}

fn completed(acts: &[Action]) -> Vec<(WaiterId, Result<Committed, ErrorCode>)> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Complete { waiter, result } => Some((*waiter, *result)),
            _ => None,
        })
        .collect()
}

fn hw_moves(acts: &[Action]) -> Vec<Offset> {
    acts.iter()
        .filter_map(|a| match a {
            Action::HighWatermark(h) => Some(*h),
            _ => None,
        })
        .collect()
}

fn proposals(acts: &[Action]) -> Vec<Vec<ReplicaId>> {
    acts.iter()
        .filter_map(|a| match a {
            Action::AlterPartition(p) => Some(p.isr.iter().map(|m| m.id).collect()),
            _ => None,
        })
        .collect()
}

// ----- the single-replica broker ---------------------------------------------------------------

/// RF=1 under Interval/Never: the high watermark is the written end, and acks=1 and acks=all are
/// both answered once written, with proofs covering the batch.
#[test]
fn single_replica_commits_on_write() {
    let mut h = H::new(cfg(1));
    assert!(h.lead(0, &[1], &[1]).is_empty());
    let (w1, a) = h.produce(Acks::Leader, 3).unwrap();
    assert!(completed(&a).is_empty(), "nothing written yet");
    let (w2, a) = h.produce(Acks::All, 2).unwrap();
    assert!(completed(&a).is_empty());
    assert_eq!(h.r.high_watermark(), 0);
    let a = h.write(3);
    assert_eq!(hw_moves(&a), vec![3]);
    let c = completed(&a);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].0, w1);
    let proof = c[0].1.unwrap();
    assert_eq!((proof.through(), proof.scope()), (2, CommitScope::Leader));
    let a = h.write(5);
    assert_eq!(hw_moves(&a), vec![5]);
    let c = completed(&a);
    assert_eq!(c[0].0, w2);
    let proof = c[0].1.unwrap();
    assert!(proof.covers(4) && !proof.covers(5));
    assert_eq!(proof.scope(), CommitScope::Replicated);
    assert_eq!(h.r.pending_waiters(), 0);
}

/// RF=1 under EveryBatch: written is not enough, the fdatasync is.
#[test]
fn single_replica_under_every_batch_commits_on_fsync() {
    let mut h = H::new(Config {
        commit_on: CommitOn::Fsync,
        ..cfg(1)
    });
    h.lead(0, &[1], &[1]);
    let (w, _) = h.produce(Acks::All, 4).unwrap();
    let a = h.write(4);
    assert!(a.is_empty(), "written but not durable: {a:?}");
    assert_eq!(h.r.high_watermark(), 0);
    let a = h.sync(4);
    assert_eq!(hw_moves(&a), vec![4]);
    assert_eq!(completed(&a)[0].0, w);
}

/// acks=1 under EveryBatch is answered once written, before the fdatasync (Kafka's acks=1 does
/// not wait for a flush, and the broker never has), while the high watermark waits for it.
#[test]
fn acks_one_under_every_batch_is_answered_on_write() {
    let mut h = H::new(Config {
        commit_on: CommitOn::Fsync,
        ..cfg(1)
    });
    h.lead(0, &[1], &[1]);
    let (w, _) = h.produce(Acks::Leader, 4).unwrap();
    let a = h.write(4);
    let c = completed(&a);
    assert_eq!(c.len(), 1, "written: acks=1 answered");
    assert_eq!(c[0].0, w);
    let proof = c[0].1.unwrap();
    assert_eq!(proof.scope(), CommitScope::Leader);
    assert!(proof.covers(3));
    assert_eq!(
        h.r.high_watermark(),
        0,
        "not durable: consumers do not see it yet"
    );
}

/// A flush policy change moves what counts as committed: to `Write` the high watermark jumps to
/// the written end (answering acks=all), back to `Fsync` it stays where it is.
#[test]
fn flush_policy_change_moves_the_commit_bound_and_never_lowers_the_high_watermark() {
    let mut h = H::new(Config {
        commit_on: CommitOn::Fsync,
        ..cfg(1)
    });
    h.lead(0, &[1], &[1]);
    let (w, _) = h.produce(Acks::All, 4).unwrap();
    assert!(completed(&h.write(4)).is_empty());
    let a = h.r.set_commit_on(CommitOn::Write);
    assert_eq!(hw_moves(&a), vec![4]);
    assert_eq!(completed(&a)[0].0, w);
    assert!(h.r.set_commit_on(CommitOn::Write).is_empty(), "no change");
    h.produce(Acks::All, 2).unwrap();
    h.write(6);
    assert_eq!(h.r.high_watermark(), 6);
    assert!(h.r.set_commit_on(CommitOn::Fsync).is_empty());
    assert_eq!(h.r.high_watermark(), 6, "never goes back");
}

/// acks=0 takes no waiter slot and is never answered.
#[test]
fn acks_zero_is_never_answered() {
    let mut h = H::new(Config {
        max_pending_waiters: 1,
        ..cfg(1)
    });
    h.lead(0, &[1], &[1]);
    for _ in 0..5 {
        let (_, a) = h.produce(Acks::None, 1).unwrap();
        assert!(completed(&a).is_empty());
    }
    assert_eq!(h.r.pending_waiters(), 0);
    let a = h.write(5);
    assert!(completed(&a).is_empty());
    assert_eq!(h.r.high_watermark(), 5);
}

/// A single-replica topic with min.insync.replicas=2 refuses acks=all before the append (as the
/// broker always has), while acks=1 data still becomes readable (effective min ISR = 1).
#[test]
fn single_replica_with_min_insync_two() {
    let mut h = H::new(Config {
        min_insync_replicas: 2,
        ..cfg(1)
    });
    h.lead(0, &[1], &[1]);
    assert_eq!(
        h.produce(Acks::All, 1).unwrap_err(),
        ErrorCode::NotEnoughReplicas
    );
    assert_eq!(h.ends.log_end, 0, "refused before the append");
    let (_, _) = h.produce(Acks::Leader, 2).unwrap();
    let a = h.write(2);
    assert_eq!(hw_moves(&a), vec![2]);
}

/// Produce off the leader: NOT_LEADER_OR_FOLLOWER.
#[test]
fn produce_needs_leadership() {
    let mut h = H::new(cfg(1));
    assert_eq!(
        h.r.admit_produce(Acks::Leader).unwrap_err(),
        ErrorCode::NotLeaderOrFollower
    );
    h.r.became_follower(2, 1, 0).unwrap();
    assert_eq!(
        h.r.admit_produce(Acks::All).unwrap_err(),
        ErrorCode::NotLeaderOrFollower
    );
}

// ----- high watermark over the ISR ---------------------------------------------------------------

/// The high watermark is the minimum end over the ISR, and an acks=all waiter is answered only
/// when every ISR member has the batch; acks=1 only waits for the leader.
#[test]
fn high_watermark_is_min_over_isr() {
    let mut h = H::new(cfg(1));
    h.lead(0, &[1, 2, 3], &[1, 2, 3]);
    let (w_all, _) = h.produce(Acks::All, 10).unwrap();
    let (w_one, _) = h.produce(Acks::Leader, 1).unwrap();
    let a = h.write(11);
    assert_eq!(completed(&a), vec![(w_one, completed(&a)[0].1)]);
    assert!(completed(&a)[0].1.is_ok());
    assert!(hw_moves(&a).is_empty(), "followers' ends unknown");
    let (ans, a) = h.fetch(2, 11, 1);
    assert_eq!(ans, Ok(FetchAnswer::Read { high_watermark: 0 }));
    assert!(a.is_empty());
    let (ans, a) = h.fetch(3, 4, 1);
    assert_eq!(ans, Ok(FetchAnswer::Read { high_watermark: 4 }));
    assert_eq!(hw_moves(&a), vec![4]);
    assert!(completed(&a).is_empty());
    let (_, a) = h.fetch(3, 10, 2);
    assert_eq!(hw_moves(&a), vec![10]);
    let c = completed(&a);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].0, w_all);
    assert_eq!(c[0].1.unwrap().through(), 9);
}

/// The high watermark never exceeds the leader's own committed end, even when followers are
/// ahead of it (they fetched bytes the leader has not written yet).
#[test]
fn high_watermark_waits_for_the_leaders_own_commit() {
    let mut h = H::new(Config {
        commit_on: CommitOn::Fsync,
        ..cfg(1)
    });
    h.lead(0, &[1, 2], &[1, 2]);
    h.produce(Acks::All, 5).unwrap();
    h.write(5);
    let (_, a) = h.fetch(2, 5, 1);
    assert!(hw_moves(&a).is_empty(), "leader not fsync'd");
    let a = h.sync(5);
    assert_eq!(hw_moves(&a), vec![5]);
}

/// A new leader keeps its high watermark and does not advance it until the ISR's followers have
/// fetched in the new epoch.
#[test]
fn new_leader_waits_for_followers_to_fetch() {
    let mut h = H::new(cfg(1));
    h.r.became_follower(2, 1, 0).unwrap();
    h.ends = LogEnds {
        log_start: 0,
        durable_end: 0,
        written_end: 8,
        log_end: 8,
    };
    h.epochs.append(1, 8);
    h.r.log_progress(h.ends).unwrap();
    h.r.leader_answer(
        LeaderAnswer {
            leader_epoch: 1,
            high_watermark: 6,
            diverging: None,
        },
        &h.epochs,
    )
    .unwrap();
    assert_eq!(h.r.high_watermark(), 6);
    let a = h.lead(2, &[1, 2], &[1, 2]);
    assert!(a.is_empty());
    assert_eq!(h.r.high_watermark(), 6);
    assert_eq!(h.r.epoch_start_offset(), Some(8));
    let (_, a) = h.fetch(2, 8, 1);
    assert_eq!(hw_moves(&a), vec![8]);
}

/// A follower outside the ISR but caught up within the lag time holds the high watermark back
/// (Kafka waits for a replica about to join rather than letting it fall behind forever).
#[test]
fn caught_up_follower_outside_isr_holds_the_high_watermark() {
    let mut h = H::new(cfg(1));
    h.lead(0, &[1, 2], &[1]);
    h.produce(Acks::Leader, 4).unwrap();
    h.write(4);
    assert_eq!(h.r.high_watermark(), 4, "alone in the ISR");
    // Follower 2 reaches the end: proposes to join, and from then on counts (maximal ISR).
    let (_, a) = h.fetch(2, 4, 100);
    assert_eq!(proposals(&a), vec![vec![1, 2]]);
    h.produce(Acks::Leader, 4).unwrap();
    let a = h.write(8);
    assert!(hw_moves(&a).is_empty(), "waits for 2, pending in the ISR");
    // The controller refuses; 2 is still caught up (within the lag), so the HW still waits.
    h.r.isr_rejected(0).unwrap();
    let a = h.r.tick(100 + LAG);
    assert!(hw_moves(&a).is_empty());
    // Past the lag time it stops waiting.
    let a = h.r.tick(101 + LAG);
    assert_eq!(hw_moves(&a), vec![8]);
}

/// A follower the controller removes from the ISR (fenced or retired after its process died)
/// is not waited for as "caught up within the lag time": the high watermark moves with the
/// committed ISR at once; fetching again makes it count again.
#[test]
fn a_follower_the_controller_removed_is_not_waited_for() {
    let mut h = H::new(cfg(1));
    h.lead(0, &[1, 2, 3], &[1, 2, 3]);
    h.produce(Acks::Leader, 4).unwrap();
    h.write(4);
    assert!(h.fetch(2, 4, 100).0.is_ok());
    assert!(h.fetch(3, 4, 100).0.is_ok());
    assert!(h.fetch(2, 4, 110).0.is_ok());
    assert!(h.fetch(3, 4, 110).0.is_ok());
    assert_eq!(h.r.high_watermark(), 4);
    // Follower 3 dies; more records; the controller takes 3 out of the ISR at once.
    h.produce(Acks::Leader, 4).unwrap();
    h.write(8);
    assert!(h.fetch(2, 8, 150).0.is_ok());
    assert_eq!(h.r.high_watermark(), 4, "3 is still in the ISR");
    let a = h.commit_isr(0, 1, &[1, 2]).unwrap();
    assert_eq!(hw_moves(&a), vec![8], "not held for 3 until the lag time");
    // 3 comes back and fetches from where it was: it counts again once caught up.
    h.produce(Acks::Leader, 2).unwrap();
    h.write(10);
    assert!(h.fetch(2, 10, 200).0.is_ok());
    assert_eq!(h.r.high_watermark(), 10);
    let _ = h.fetch(3, 4, 300);
    let _ = h.fetch(3, 10, 310);
    h.produce(Acks::Leader, 2).unwrap();
    let a = h.write(12);
    assert!(hw_moves(&a).is_empty(), "3 caught up again: waited for");
}

// ----- ISR shrink and expand ---------------------------------------------------------------------

/// A follower that has not caught up for replica.lag.time.max.ms is proposed out of the ISR, one
/// change at a time; the committed shrink lets the high watermark move.
#[test]
fn isr_shrinks_after_the_lag_time() {
    let mut h = H::new(cfg(1));
    h.lead(0, &[1, 2, 3], &[1, 2, 3]);
    h.produce(Acks::Leader, 5).unwrap();
    h.write(5);
    assert!(h.fetch(2, 5, 1).0.is_ok());
    assert!(
        proposals(&h.r.tick(LAG)).is_empty(),
        "at the lag time still in"
    );
    // Follower 2 keeps fetching at the end; 3 never fetched since the election.
    assert!(h.fetch(2, 5, LAG).0.is_ok());
    let a = h.r.tick(LAG + 1);
    assert_eq!(proposals(&a), vec![vec![1, 2]]);
    assert_eq!(h.r.pending_isr(), Some(vec![1, 2]));
    assert!(
        proposals(&h.r.tick(LAG + 500)).is_empty(),
        "one change in flight"
    );
    assert_eq!(h.r.high_watermark(), 0, "a pending shrink still counts 3");
    let a = h.commit_isr(0, 1, &[1, 2]).unwrap();
    assert_eq!(hw_moves(&a), vec![5]);
    assert_eq!(h.r.isr(), vec![1, 2]);
}

/// A slow follower that keeps fetching but never reaches the leader's end also leaves, while
/// one that reaches the end it saw at its previous fetch stays in (Kafka's lastCaughtUpTime).
#[test]
fn slow_follower_leaves_one_keeping_pace_stays() {
    let mut h = H::new(cfg(1));
    h.lead(0, &[1, 2, 3], &[1, 2, 3]);
    let mut t = 0;
    let mut end2 = 0;
    for _ in 0..30 {
        t += 1000;
        h.produce(Acks::Leader, 10).unwrap();
        let le = h.ends.log_end;
        h.write(le);
        // 2 always reaches what the leader had at its previous fetch; 3 lags ever more.
        assert!(h.fetch(2, end2, t).0.is_ok());
        end2 = le;
        assert!(h.fetch(3, le / 2, t).0.is_ok());
        let a = h.r.tick(t);
        if let Some(p) = proposals(&a).first() {
            assert_eq!(p, &vec![1, 2], "only 3 leaves");
            assert!(t > LAG);
            return;
        }
    }
    panic!("3 never left the ISR");
}

/// Expansion needs the follower at or past the high watermark AND past the start of the leader's
/// epoch (KIP-101's reason: else it could be elected without the epoch's committed data).
#[test]
fn isr_expands_only_when_caught_up_to_hw_and_epoch_start() {
    let mut h = H::new(cfg(1));
    h.r.became_follower(2, 4, 0).unwrap();
    h.ends = LogEnds::at(0);
    h.ends.log_end = 10;
    h.ends.written_end = 10;
    h.epochs.append(4, 10);
    h.r.log_progress(h.ends).unwrap();
    h.r.leader_answer(
        LeaderAnswer {
            leader_epoch: 4,
            high_watermark: 6,
            diverging: None,
        },
        &h.epochs,
    )
    .unwrap();
    h.lead(5, &[1, 2, 3], &[1, 2]);
    assert_eq!(h.r.epoch_start_offset(), Some(10));
    // 3 is past the high watermark (6) but not at the epoch start (10): not yet.
    let (_, a) = h.fetch(3, 8, 1);
    assert!(proposals(&a).is_empty());
    let (_, a) = h.fetch(3, 10, 2);
    assert_eq!(proposals(&a), vec![vec![1, 2, 3]]);
    match &a[0] {
        Action::AlterPartition(p) => {
            assert_eq!(p.leader_epoch, 5);
            assert_eq!(
                p.isr[2].broker_epoch,
                Some(103),
                "KIP-903 broker epoch carried"
            );
        }
        other => panic!("{other:?}"),
    }
    h.commit_isr(5, 1, &[1, 2, 3]).unwrap();
    assert_eq!(h.r.isr(), vec![1, 2, 3]);
    // Stale or foreign controller answers are refused without a change.
    assert_eq!(
        h.commit_isr(5, 1, &[1]),
        Err(StateError::StalePartitionEpoch { current: 1, got: 1 })
    );
    assert!(h.commit_isr(4, 2, &[1]).is_err());
    assert!(
        h.commit_isr(5, 2, &[2, 3]).is_err(),
        "an ISR without the leader"
    );
    assert_eq!(h.r.isr(), vec![1, 2, 3]);
}

// ----- min.insync.replicas -------------------------------------------------------------------------

/// Below min.insync: acks=all refused before the append; waiters of a shrink answered
/// NOT_ENOUGH_REPLICAS_AFTER_APPEND at once; the high watermark frozen (KIP-966's strict rule),
/// while acks=1 is still answered on the leader's commit.
#[test]
fn min_insync_replicas() {
    let mut h = H::new(Config {
        min_insync_replicas: 2,
        ..cfg(1)
    });
    h.lead(0, &[1, 2, 3], &[1, 2]);
    let (w, _) = h.produce(Acks::All, 3).unwrap();
    h.write(3);
    assert!(h.fetch(2, 1, 1).0.is_ok());
    assert_eq!(h.r.high_watermark(), 1);
    let a = h.r.tick(LAG + 2);
    assert_eq!(proposals(&a), vec![vec![1]]);
    let a = h.commit_isr(0, 1, &[1]).unwrap();
    assert_eq!(
        completed(&a),
        vec![(w, Err(ErrorCode::NotEnoughReplicasAfterAppend))]
    );
    assert!(hw_moves(&a).is_empty(), "frozen below min ISR");
    assert_eq!(
        h.produce(Acks::All, 1).unwrap_err(),
        ErrorCode::NotEnoughReplicas
    );
    let (w1, _) = h.produce(Acks::Leader, 1).unwrap();
    let a = h.write(4);
    assert_eq!(completed(&a)[0].0, w1);
    assert_eq!(h.r.high_watermark(), 1);
}

// ----- epochs and fencing (KIP-320) ---------------------------------------------------------------

#[test]
fn follower_fetch_fencing() {
    let mut h = H::new(cfg(1));
    h.lead(5, &[1, 2], &[1, 2]);
    let base = FollowerFetch {
        replica: 2,
        broker_epoch: None,
        current_leader_epoch: Some(5),
        fetch_offset: 0,
        last_fetched_epoch: None,
        now_ms: 1,
    };
    let e = |h: &mut H, f: FollowerFetch| h.r.follower_fetch(f, &h.epochs.clone()).0;
    assert_eq!(
        e(
            &mut h,
            FollowerFetch {
                current_leader_epoch: Some(4),
                ..base
            }
        ),
        Err(ErrorCode::FencedLeaderEpoch)
    );
    assert_eq!(
        e(
            &mut h,
            FollowerFetch {
                current_leader_epoch: Some(6),
                ..base
            }
        ),
        Err(ErrorCode::UnknownLeaderEpoch)
    );
    assert_eq!(
        e(&mut h, FollowerFetch { replica: 9, ..base }),
        Err(ErrorCode::UnknownLeaderEpoch)
    );
    assert_eq!(
        e(
            &mut h,
            FollowerFetch {
                replica: 9,
                current_leader_epoch: None,
                ..base
            }
        ),
        Err(ErrorCode::NotLeaderOrFollower)
    );
    assert_eq!(
        e(&mut h, FollowerFetch { replica: 1, ..base }),
        Err(ErrorCode::UnknownLeaderEpoch),
        "the leader is not its own follower"
    );
    assert_eq!(
        e(
            &mut h,
            FollowerFetch {
                fetch_offset: 1,
                ..base
            }
        ),
        Err(ErrorCode::OffsetOutOfRange)
    );
    assert_eq!(
        e(
            &mut h,
            FollowerFetch {
                fetch_offset: -1,
                ..base
            }
        ),
        Err(ErrorCode::OffsetOutOfRange)
    );
    assert_eq!(
        e(
            &mut h,
            FollowerFetch {
                current_leader_epoch: None,
                ..base
            }
        ),
        Ok(FetchAnswer::Read { high_watermark: 0 })
    );
    h.r.became_follower(2, 6, 1).unwrap();
    assert_eq!(
        e(
            &mut h,
            FollowerFetch {
                current_leader_epoch: Some(6),
                ..base
            }
        ),
        Err(ErrorCode::NotLeaderOrFollower)
    );
}

/// Leadership decisions older than what the replica knows are refused and change nothing.
#[test]
fn stale_leadership_is_refused() {
    let mut h = H::new(cfg(1));
    h.lead(5, &[1, 2], &[1, 2]);
    assert_eq!(
        h.r.became_follower(2, 4, 0),
        Err(StateError::StaleLeaderEpoch { current: 5, got: 4 })
    );
    assert!(
        h.r.became_follower(2, 5, 0).is_err(),
        "same epoch, other leader"
    );
    assert_eq!(h.r.role(), Role::Leader);
    assert_eq!(
        h.lead(5, &[1, 2], &[1, 2]),
        vec![],
        "a resent decision is a no-op"
    );
    h.r.became_follower(2, 6, 1).unwrap();
    assert!(h
        .r
        .became_leader(BecameLeader {
            leader_epoch: 6,
            partition_epoch: 1,
            replicas: vec![1, 2],
            isr: vec![1, 2],
            now_ms: 0
        })
        .is_err());
    // Malformed decisions.
    let bad = |replicas: Vec<i32>, isr: Vec<i32>| BecameLeader {
        leader_epoch: 9,
        partition_epoch: 1,
        replicas,
        isr,
        now_ms: 0,
    };
    assert_eq!(
        h.r.became_leader(bad(vec![2, 3], vec![2])),
        Err(StateError::NotAReplica { id: 1 })
    );
    assert_eq!(
        h.r.became_leader(bad(vec![1, 1], vec![1])),
        Err(StateError::DuplicateReplica { id: 1 })
    );
    assert_eq!(
        h.r.became_leader(bad(vec![1, 2], vec![2])),
        Err(StateError::InvalidIsr)
    );
    assert_eq!(
        h.r.became_leader(bad(vec![1, 2], vec![1, 3])),
        Err(StateError::InvalidIsr)
    );
    assert_eq!(h.r.role(), Role::Follower { leader: 2 });
}

/// Losing leadership answers every waiter NOT_LEADER_OR_FOLLOWER; a ticket admitted before is
/// stale (no append, and its answer is the same error); the log failing answers
/// KAFKA_STORAGE_ERROR.
#[test]
fn losing_leadership_fails_waiters_and_tickets() {
    let mut h = H::new(cfg(1));
    h.lead(1, &[1, 2], &[1, 2]);
    let (w1, _) = h.produce(Acks::All, 2).unwrap();
    let (w2, _) = h.produce(Acks::Leader, 2).unwrap();
    let t = h.r.admit_produce(Acks::All).unwrap();
    let a = h.r.became_follower(2, 2, 1).unwrap();
    assert_eq!(
        completed(&a),
        vec![
            (w1, Err(ErrorCode::NotLeaderOrFollower)),
            (w2, Err(ErrorCode::NotLeaderOrFollower))
        ]
    );
    assert_eq!(
        h.r.check_batch(&t, None),
        Err(ErrorCode::NotLeaderOrFollower)
    );
    let w3 = t.waiter();
    let a = h.r.appended(
        t,
        Appended {
            base_offset: 4,
            last_offset: 4,
            ident: None,
            duplicate: false,
            at_ms: 0,
        },
    );
    assert_eq!(
        completed(&a),
        vec![(w3, Err(ErrorCode::NotLeaderOrFollower))]
    );
    assert_eq!(h.r.pending_waiters(), 0);

    let mut h = H::new(cfg(1));
    h.lead(1, &[1], &[1]);
    let (w, _) = h.produce(Acks::Leader, 1).unwrap();
    let a = h.r.went_offline(ErrorCode::KafkaStorageError);
    assert_eq!(completed(&a), vec![(w, Err(ErrorCode::KafkaStorageError))]);
    assert_eq!(h.r.role(), Role::Offline);
}

/// A leader elected again in a newer epoch keeps its waiters and tickets: they complete under
/// the new epoch's ISR.
#[test]
fn reelected_leader_keeps_waiters() {
    let mut h = H::new(cfg(1));
    h.lead(1, &[1, 2], &[1, 2]);
    let (w, _) = h.produce(Acks::All, 2).unwrap();
    let t = h.r.admit_produce(Acks::Leader).unwrap();
    let a = h.lead(2, &[1, 2], &[1]);
    assert!(completed(&a).is_empty());
    assert_eq!(h.r.epoch_start_offset(), Some(2));
    assert_eq!(h.r.check_batch(&t, None), Ok(DedupCheck::Append));
    h.r.append_failed(t);
    let a = h.write(2);
    assert_eq!(completed(&a).len(), 1);
    assert_eq!(
        completed(&a)[0].0,
        w,
        "ISR is {{1}} now: committed on the leader's write"
    );
    assert_eq!(h.r.pending_waiters(), 0);
}

// ----- bounded waiters ----------------------------------------------------------------------------

/// At max_pending_waiters a produce is refused before the append (REQUEST_TIMED_OUT, retriable);
/// a slot comes back when a waiter is answered, abandoned, or its append fails.
#[test]
fn waiters_are_bounded() {
    let mut h = H::new(Config {
        max_pending_waiters: 2,
        ..cfg(1)
    });
    h.lead(0, &[1], &[1]);
    let (w1, _) = h.produce(Acks::All, 1).unwrap();
    let t = h.r.admit_produce(Acks::Leader).unwrap();
    assert_eq!(
        h.r.admit_produce(Acks::Leader).unwrap_err(),
        ErrorCode::RequestTimedOut
    );
    assert!(
        h.r.admit_produce(Acks::None).is_ok(),
        "acks=0 takes no slot"
    );
    h.r.append_failed(t);
    let t = h.r.admit_produce(Acks::Leader).unwrap();
    assert_eq!(h.r.pending_waiters(), 2);
    assert!(h.r.abandon(w1));
    assert!(!h.r.abandon(w1));
    assert_eq!(h.r.pending_waiters(), 1);
    h.r.append_failed(t);
    let (_, _) = h.produce(Acks::All, 1).unwrap();
    let (_, _) = h.produce(Acks::All, 1).unwrap();
    assert_eq!(
        h.produce(Acks::All, 1).unwrap_err(),
        ErrorCode::RequestTimedOut
    );
    let a = h.write(3);
    assert_eq!(completed(&a).len(), 2, "the abandoned one is not answered");
    assert_eq!(h.r.pending_waiters(), 0);
}

// ----- producer state ---------------------------------------------------------------------------

/// The producer state is checked before and recorded after each append; a duplicate is answered
/// with the original offsets, and only once those are committed.
#[test]
fn duplicate_waits_for_the_original_batch() {
    let mut h = H::with(cfg(1), Remembered::default());
    h.lead(0, &[1, 2], &[1, 2]);
    let ident = BatchIdent {
        producer_id: 7,
        producer_epoch: 0,
        first_seq: 0,
        last_seq: 2,
    };
    let t = h.r.admit_produce(Acks::All).unwrap();
    assert_eq!(h.r.check_batch(&t, Some(&ident)), Ok(DedupCheck::Append));
    h.ends.log_end = 3;
    h.epochs.append(0, 3);
    h.r.appended(
        t,
        Appended {
            base_offset: 0,
            last_offset: 2,
            ident: Some(ident),
            duplicate: false,
            at_ms: 0,
        },
    );
    h.write(3);
    // The retry: the producer state knows it.
    let t = h.r.admit_produce(Acks::All).unwrap();
    let w = t.waiter();
    assert_eq!(
        h.r.check_batch(&t, Some(&ident)),
        Ok(DedupCheck::Duplicate {
            base_offset: 0,
            last_offset: 2
        })
    );
    let a = h.r.appended(
        t,
        Appended {
            base_offset: 0,
            last_offset: 2,
            ident: Some(ident),
            duplicate: true,
            at_ms: 0,
        },
    );
    assert!(
        completed(&a).is_empty(),
        "the original is not replicated yet"
    );
    assert_eq!(
        h.r.producers().batches[&7].len(),
        1,
        "a duplicate is not recorded again"
    );
    let (_, a) = h.fetch(2, 3, 1);
    let c = completed(&a);
    assert_eq!(c.len(), 2);
    assert_eq!(c[1].0, w);
    assert_eq!(c[1].1.unwrap().through(), 2);
}

/// Followers learn producers from the batches they copy, and a truncation that removes a
/// remembered batch asks for a rebuild from the log.
#[test]
fn follower_producer_state_and_truncation() {
    let mut h = H::with(cfg(2), Remembered::default());
    h.r.became_follower(1, 1, 0).unwrap();
    let ident = BatchIdent {
        producer_id: 3,
        producer_epoch: 0,
        first_seq: 0,
        last_seq: 0,
    };
    h.ends = LogEnds {
        log_start: 0,
        durable_end: 0,
        written_end: 6,
        log_end: 6,
    };
    h.epochs.append(1, 6);
    h.r.log_progress(h.ends).unwrap();
    h.r.follower_appended(&ident, 5, 5, 0);
    h.r.leader_answer(
        LeaderAnswer {
            leader_epoch: 1,
            high_watermark: 9,
            diverging: None,
        },
        &h.epochs,
    )
    .unwrap();
    assert_eq!(
        h.r.high_watermark(),
        6,
        "capped at the follower's committed end"
    );
    let a =
        h.r.leader_answer(
            LeaderAnswer {
                leader_epoch: 1,
                high_watermark: 2,
                diverging: None,
            },
            &h.epochs,
        )
        .unwrap();
    assert!(
        a.is_empty(),
        "a follower's high watermark does not go back on an answer"
    );
    assert_eq!(
        h.r.leader_answer(
            LeaderAnswer {
                leader_epoch: 0,
                high_watermark: 2,
                diverging: None
            },
            &h.epochs
        ),
        Err(StateError::WrongEpoch { current: 1, got: 0 })
    );
    h.ends = LogEnds {
        log_start: 0,
        durable_end: 0,
        written_end: 4,
        log_end: 4,
    };
    let a = h.r.truncated(h.ends).unwrap();
    assert_eq!(
        a,
        vec![
            Action::HighWatermark(4),
            Action::RebuildProducers { end: 4 }
        ]
    );
}

/// A follower fetches from its committed end, and only once all it appended is committed (so the
/// leader counts only data that satisfies this replica's flush policy); never while truncating,
/// never as leader or offline.
#[test]
fn follower_fetches_from_its_committed_end() {
    let mut h = H::new(Config {
        commit_on: CommitOn::Fsync,
        ..cfg(2)
    });
    assert_eq!(h.r.fetch_position(), None, "offline");
    h.r.became_follower(1, 1, 0).unwrap();
    assert_eq!(h.r.fetch_position(), Some(0));
    h.ends.log_end = 5;
    h.r.log_progress(h.ends).unwrap();
    assert_eq!(h.r.fetch_position(), None, "appended, not written");
    h.write(5);
    assert_eq!(h.r.fetch_position(), None, "written, not fsync'd");
    h.sync(5);
    assert_eq!(h.r.fetch_position(), Some(5));
    h.epochs.append(1, 5);
    let a =
        h.r.leader_answer(
            LeaderAnswer {
                leader_epoch: 1,
                high_watermark: 5,
                diverging: Some(EpochEndOffset {
                    epoch: 1,
                    end_offset: 3,
                }),
            },
            &h.epochs,
        )
        .unwrap();
    assert_eq!(
        a,
        vec![Action::Truncate {
            to: 3,
            complete: true
        }]
    );
    assert_eq!(h.r.fetch_position(), None, "truncating");
    h.ends = LogEnds::at(0);
    h.ends.log_end = 3;
    h.ends.written_end = 3;
    h.ends.durable_end = 3;
    h.r.truncated(h.ends).unwrap();
    assert_eq!(h.r.fetch_position(), Some(3));
    h.r.became_leader(BecameLeader {
        leader_epoch: 2,
        partition_epoch: 1,
        replicas: vec![1, 2],
        isr: vec![2],
        now_ms: 0,
    })
    .unwrap();
    assert_eq!(h.r.fetch_position(), None, "a leader does not fetch");
}

// ----- log positions ------------------------------------------------------------------------------

#[test]
fn log_positions_are_checked() {
    let mut h = H::new(cfg(1));
    let bad = LogEnds {
        log_start: 0,
        durable_end: 5,
        written_end: 3,
        log_end: 6,
    };
    assert!(matches!(
        h.r.log_progress(bad),
        Err(StateError::EndsOutOfOrder { .. })
    ));
    let ok = LogEnds {
        log_start: 0,
        durable_end: 3,
        written_end: 5,
        log_end: 6,
    };
    h.r.log_progress(ok).unwrap();
    let back = LogEnds { log_end: 5, ..ok };
    assert_eq!(
        h.r.log_progress(back),
        Err(StateError::EndsWentBack {
            what: "log end",
            from: 6,
            to: 5
        })
    );
    assert_eq!(h.r.ends(), ok);
    assert!(matches!(
        h.r.truncated(LogEnds { log_end: 7, ..ok }),
        Err(StateError::TruncationForward { .. })
    ));
    h.lead(0, &[1], &[1]);
    assert_eq!(
        h.r.truncated(LogEnds::at(0)),
        Err(StateError::NotFollower),
        "a leader never truncates"
    );
    // The high watermark is never below the log start.
    let mut r = ReplicaState::new(cfg(1), LogEnds::at(0), 0, NoDedup).unwrap();
    let moved = LogEnds {
        log_start: 4,
        durable_end: 4,
        written_end: 6,
        log_end: 6,
    };
    assert_eq!(r.log_progress(moved), Ok(vec![Action::HighWatermark(4)]));
    // A checkpoint above what survived a crash is capped.
    let r = ReplicaState::new(cfg(1), ok, 100, NoDedup).unwrap();
    assert_eq!(r.high_watermark(), 5);
}

// ----- truncation (KIP-101, KIP-279) ---------------------------------------------------------------

/// A log as one epoch per offset.
fn table(epochs: &[LeaderEpoch]) -> EpochTable {
    let mut t = EpochTable::new(0);
    for &e in epochs {
        assert!(t.append(e, 1));
    }
    t
}

/// Runs a follower's fetch/truncate loop against a leader log through the leader's check and the
/// follower core; returns the follower log's end after convergence and the truncations asked.
fn converge(leader: &EpochTable, follower: &mut EpochTable) -> Vec<(Offset, bool)> {
    let mut r = ReplicaState::new(
        cfg(2),
        LogEnds {
            log_start: 0,
            durable_end: 0,
            written_end: follower.log_end(),
            log_end: follower.log_end(),
        },
        0,
        NoDedup,
    )
    .unwrap();
    r.became_follower(1, 100, 0).unwrap();
    let mut cuts = Vec::new();
    for _ in 0..100 {
        let offset = r.fetch_position().expect("ready to fetch");
        let diverging = match follower.latest_epoch() {
            Some(last) => diverging_epoch(leader, 0, offset, last),
            None => None,
        };
        let Some(d) = diverging else { return cuts };
        let a = r
            .leader_answer(
                LeaderAnswer {
                    leader_epoch: 100,
                    high_watermark: 0,
                    diverging: Some(d),
                },
                follower,
            )
            .unwrap();
        let [Action::Truncate { to, complete }] = a[..] else {
            panic!("{a:?}")
        };
        assert!(r.fetch_position().is_none(), "no fetch while truncating");
        cuts.push((to, complete));
        follower.truncate_to(to);
        r.truncated(LogEnds {
            log_start: 0,
            durable_end: 0,
            written_end: to,
            log_end: to,
        })
        .unwrap();
    }
    panic!("no convergence");
}

/// KIP-101's first case: a follower that restarts must not truncate to its high watermark (it
/// would drop a batch the leader may have acknowledged); the epoch check keeps it.
#[test]
fn kip101_restart_keeps_data_above_the_high_watermark() {
    let leader = table(&[0, 0]);
    let mut follower = table(&[0, 0]);
    assert!(converge(&leader, &mut follower).is_empty());
    assert_eq!(follower.log_end(), 2);
}

/// KIP-101's second case: after both crash, the replica that comes back first leads and writes
/// at an offset the other holds from the old epoch: the old one's tail is cut.
#[test]
fn kip101_divergent_tail_after_double_crash() {
    let leader = table(&[0, 1]); // B: had m1, led epoch 1, wrote m3 at 1
    let mut follower = table(&[0, 0]); // A: m1, m2 of epoch 0
    assert_eq!(converge(&leader, &mut follower), vec![(1, true)]);
    assert_eq!(follower.log_end(), 1);
}

/// KIP-279: two failovers in a row. A leads epoch 1 (offsets 0,1); B, with only offset 0, leads
/// epoch 2 and writes offset 1; A leads again in epoch 3 and writes offset 2. B must cut its
/// epoch-2 entry although A's log reaches past it (KIP-101 alone kept it).
#[test]
fn kip279_two_failovers_in_a_row() {
    let leader = table(&[1, 1, 3]);
    let mut follower = table(&[1, 2]);
    assert_eq!(converge(&leader, &mut follower), vec![(1, true)]);
    assert_eq!(follower.log_end(), 1);
    assert_eq!(follower.latest_epoch(), Some(1));
}

/// The leader answers with an epoch the follower never held: the follower cuts to the end of its
/// largest epoch below it and asks again.
#[test]
fn truncation_in_two_rounds_when_follower_lacks_the_epoch() {
    let leader = table(&[1, 1, 3, 3, 6]);
    let mut follower = table(&[1, 1, 1, 4, 5]);
    // Round 1: leader's largest epoch <= 5 is 3 (end 4); the follower has no 3: cut to the end
    // of epoch 1 (3), incomplete. Round 2: epoch 1 ends at 2 on the leader: cut to 2.
    assert_eq!(
        converge(&leader, &mut follower),
        vec![(3, false), (2, true)]
    );
    assert_eq!(follower.log_end(), 2);
}

/// The leader holds only epochs newer than the follower's (it was elected with an empty log):
/// the follower's entries all go.
#[test]
fn truncation_when_every_leader_epoch_is_newer() {
    let leader = table(&[2, 2, 2]);
    let mut follower = table(&[1, 1]);
    assert_eq!(converge(&leader, &mut follower), vec![(0, true)]);
}

/// Every epoch the follower holds is newer than anything the leader has below it: all of it goes.
#[test]
fn truncation_when_every_follower_epoch_is_newer() {
    let leader = table(&[1, 1, 1]);
    let mut follower = table(&[3, 3]);
    assert_eq!(converge(&leader, &mut follower), vec![(0, true)]);
}

#[test]
fn epoch_table_semantics() {
    let t = table(&[1, 1, 3, 3, 6]);
    assert_eq!(t.end_offset_for_epoch(0), None);
    assert_eq!(t.end_offset_for_epoch(1), Some((1, 2)));
    assert_eq!(t.end_offset_for_epoch(2), Some((1, 2)));
    assert_eq!(t.end_offset_for_epoch(5), Some((3, 4)));
    assert_eq!(t.end_offset_for_epoch(9), Some((6, 5)));
    let mut t = t;
    assert!(!t.append(2, 1), "epochs never go back");
    t.truncate_to(3);
    assert_eq!(t.end_offset_for_epoch(9), Some((3, 3)));
    assert_eq!(t.earliest_epoch_start(), Some(0));
    // An epoch older than any the leader holds matches nothing past the leader's first epoch.
    let leader = table(&[2, 2]);
    assert_eq!(diverging_epoch(&leader, 0, 0, 1), None);
    assert_eq!(
        diverging_epoch(&leader, 0, 1, 1),
        Some(EpochEndOffset {
            epoch: 1,
            end_offset: 0
        })
    );
    assert_eq!(
        diverging_epoch(&EpochTable::new(5), 5, 7, 1),
        Some(EpochEndOffset {
            epoch: 1,
            end_offset: 5
        }),
        "an empty leader log"
    );
}
