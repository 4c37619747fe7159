//! Property tests: random event sequences against the core, Kafka's invariants checked after
//! every step.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use crate::*;

const LAG: u64 = 1_000;
const ME: ReplicaId = 1;
const FOLLOWERS: [ReplicaId; 2] = [2, 3];

#[derive(Debug, Clone)]
enum Op {
    /// A produce of `n` records with acks 0, 1 or all.
    Produce { acks: u8, n: i64 },
    /// The leader's write reaches this share (of 4) of the way to its log end.
    Write { quarter: u8 },
    /// Its fdatasync likewise, toward the written end.
    Sync { quarter: u8 },
    /// Follower `f` receives up to `adv` more records and fetches from its end.
    Fetch { f: usize, adv: i64 },
    /// Time passes.
    Tick { dt: u64 },
    /// The controller answers the pending ISR change.
    Answer { accept: bool },
    /// A fetch with arbitrary fields (wrong replica, epoch, offset).
    Bogus {
        replica: ReplicaId,
        offset: Offset,
        epoch: Option<LeaderEpoch>,
    },
    /// A waiter's request goes away.
    Abandon { pick: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..3, 1i64..5).prop_map(|(acks, n)| Op::Produce { acks, n }),
        3 => (0u8..=4).prop_map(|quarter| Op::Write { quarter }),
        2 => (0u8..=4).prop_map(|quarter| Op::Sync { quarter }),
        5 => (0usize..2, 0i64..8).prop_map(|(f, adv)| Op::Fetch { f, adv }),
        2 => (0u64..2 * LAG).prop_map(|dt| Op::Tick { dt }),
        2 => any::<bool>().prop_map(|accept| Op::Answer { accept }),
        1 => (0i32..5, -2i64..60, proptest::option::of(0i32..4))
            .prop_map(|(replica, offset, epoch)| Op::Bogus { replica, offset, epoch }),
        1 => (0usize..8).prop_map(|pick| Op::Abandon { pick }),
    ]
}

/// What the test remembers about a registered waiter.
#[derive(Debug, Clone, Copy)]
struct Waiting {
    last: Offset,
    acks: Acks,
}

struct Leader {
    r: ReplicaState,
    ends: LogEnds,
    epochs: EpochTable,
    follower_ends: [Offset; 2],
    now: u64,
    partition_epoch: i32,
    waiting: BTreeMap<WaiterId, Waiting>,
    answered: BTreeSet<WaiterId>,
    initial_hw: Offset,
    /// Followers a bogus fetch moved back (a follower that truncated below the high watermark):
    /// the standing "HW <= its end" cannot hold for them, only the check when the HW moves.
    regressed: BTreeSet<ReplicaId>,
    min_isr: usize,
}

impl Leader {
    fn new(min_isr: usize, commit_on: CommitOn, start: Offset, hw: Offset, isr3: bool) -> Leader {
        let config = Config {
            replica_id: ME,
            replica_lag_time_max_ms: LAG,
            min_insync_replicas: min_isr,
            max_pending_waiters: 6,
            commit_on,
        };
        // The leader starts over a log of `start` records of epoch 0 (all written and durable).
        let mut epochs = EpochTable::new(0);
        epochs.append(0, start);
        let ends = LogEnds {
            log_start: 0,
            durable_end: start,
            written_end: start,
            log_end: start,
        };
        let mut r = ReplicaState::new(config, ends, hw, NoDedup).unwrap();
        let isr = if isr3 { vec![1, 2, 3] } else { vec![1, 2] };
        r.became_leader(BecameLeader {
            leader_epoch: 1,
            partition_epoch: 0,
            replicas: vec![1, 2, 3],
            isr,
            now_ms: 0,
        })
        .unwrap();
        epochs.append(1, 0);
        let initial_hw = r.high_watermark();
        Leader {
            r,
            ends,
            epochs,
            follower_ends: [0, 0],
            now: 0,
            partition_epoch: 0,
            waiting: BTreeMap::new(),
            answered: BTreeSet::new(),
            initial_hw,
            regressed: BTreeSet::new(),
            min_isr,
        }
    }

    fn effective_min_isr(&self) -> usize {
        self.min_isr.min(3)
    }

    /// Applies one op; returns the actions.
    fn step(&mut self, op: &Op) -> Vec<Action> {
        match *op {
            Op::Produce { acks, n } => {
                let acks = [Acks::None, Acks::Leader, Acks::All][acks as usize];
                let isr = self.r.isr().len();
                match self.r.admit_produce(acks) {
                    Err(ErrorCode::NotEnoughReplicas) => {
                        assert!(acks == Acks::All && isr < self.min_isr);
                        Vec::new()
                    }
                    Err(ErrorCode::RequestTimedOut) => {
                        assert!(self.r.pending_waiters() >= 6);
                        Vec::new()
                    }
                    Err(e) => panic!("unexpected refusal {e:?}"),
                    Ok(t) => {
                        assert!(acks != Acks::All || isr >= self.min_isr);
                        let base = self.ends.log_end;
                        self.ends.log_end += n;
                        self.epochs.append(1, n);
                        let w = t.waiter();
                        if acks != Acks::None {
                            self.waiting.insert(
                                w,
                                Waiting {
                                    last: base + n - 1,
                                    acks,
                                },
                            );
                        }
                        let mut a = self.r.appended(
                            t,
                            Appended {
                                base_offset: base,
                                last_offset: base + n - 1,
                                ident: None,
                                duplicate: false,
                                at_ms: 0,
                            },
                        );
                        a.extend(self.r.log_progress(self.ends).unwrap());
                        a
                    }
                }
            }
            Op::Write { quarter } => {
                let e = &mut self.ends;
                e.written_end += (e.log_end - e.written_end) * i64::from(quarter) / 4;
                self.r.log_progress(self.ends).unwrap()
            }
            Op::Sync { quarter } => {
                let e = &mut self.ends;
                e.durable_end += (e.written_end - e.durable_end) * i64::from(quarter) / 4;
                self.r.log_progress(self.ends).unwrap()
            }
            Op::Fetch { f, adv } => {
                let end = (self.follower_ends[f] + adv).min(self.ends.log_end);
                self.follower_ends[f] = end;
                let (ans, a) = self.r.follower_fetch(
                    FollowerFetch {
                        replica: FOLLOWERS[f],
                        broker_epoch: Some(7),
                        current_leader_epoch: Some(1),
                        fetch_offset: end,
                        last_fetched_epoch: self.epochs.end_offset_for_epoch(1).map(|_| {
                            // What the follower's last batch carries.
                            if end > self.epochs.end_offset_for_epoch(0).map_or(0, |x| x.1) {
                                1
                            } else {
                                0
                            }
                        }),
                        now_ms: self.now,
                    },
                    &self.epochs,
                );
                match ans {
                    Ok(FetchAnswer::Read { high_watermark }) => {
                        assert_eq!(high_watermark, self.r.high_watermark())
                    }
                    other => panic!("a consistent follower got {other:?}"),
                }
                a
            }
            Op::Tick { dt } => {
                self.now += dt;
                self.r.tick(self.now)
            }
            Op::Answer { accept } => match self.r.pending_isr() {
                None => Vec::new(),
                Some(isr) if accept => {
                    self.partition_epoch += 1;
                    self.r
                        .isr_committed(IsrUpdate {
                            leader_epoch: 1,
                            partition_epoch: self.partition_epoch,
                            isr,
                        })
                        .unwrap()
                }
                Some(_) => self.r.isr_rejected(1).unwrap(),
            },
            Op::Bogus {
                replica,
                offset,
                epoch,
            } => {
                let (ans, a) = self.r.follower_fetch(
                    FollowerFetch {
                        replica,
                        broker_epoch: None,
                        current_leader_epoch: epoch,
                        fetch_offset: offset,
                        last_fetched_epoch: None,
                        now_ms: self.now,
                    },
                    &self.epochs,
                );
                if let Some(f) = FOLLOWERS.iter().position(|&f| f == replica) {
                    if ans.is_ok() {
                        // The leader now has this as the follower's end: so does the model.
                        if offset < self.follower_ends[f] {
                            self.regressed.insert(replica);
                        }
                        self.follower_ends[f] = offset;
                    }
                }
                if let Err(e) = ans {
                    assert!(matches!(
                        e,
                        ErrorCode::FencedLeaderEpoch
                            | ErrorCode::UnknownLeaderEpoch
                            | ErrorCode::NotLeaderOrFollower
                            | ErrorCode::OffsetOutOfRange
                    ));
                    assert!(a.is_empty(), "a refused fetch changes nothing");
                }
                a
            }
            Op::Abandon { pick } => {
                if let Some(&w) = self.waiting.keys().nth(pick) {
                    assert!(self.r.abandon(w));
                    self.waiting.remove(&w);
                }
                Vec::new()
            }
        }
    }
}

/// Runs `ops` on a leader of 3 replicas and checks, after every step: the high watermark never
/// decreases, stays <= the leader's committed end <= its log end and <= every maximal-ISR
/// follower's end, and is frozen below the effective min ISR; waiters are answered once, with
/// proofs the bounds cover, never left waiting once covered, and never more than the bound;
/// ISR shrinks only drop followers not caught up for the lag time, expansions only add a
/// follower at the high watermark and the epoch start, one change in flight.
fn run_leader(
    min_isr: usize,
    commit_on: CommitOn,
    start: Offset,
    hw: Offset,
    isr3: bool,
    ops: &[Op],
) {
    let mut l = Leader::new(min_isr, commit_on, start, hw, isr3);
    for op in ops {
        let hw_before = l.r.high_watermark();
        let isr_before = l.r.isr();
        let pending_before = l.r.pending_isr();
        let views: BTreeMap<ReplicaId, FollowerView> = FOLLOWERS
            .iter()
            .map(|&f| (f, l.r.follower(f).unwrap()))
            .collect();
        let leader_end_before = l.ends.log_end;
        let acts = l.step(op);
        let hw = l.r.high_watermark();
        let committed = l.r.local_committed_end();
        assert!(
            hw >= hw_before,
            "HW went back {hw_before} -> {hw} on {op:?}"
        );
        assert!(hw <= committed && committed <= l.ends.log_end);
        let maximal = l.r.maximal_isr();
        if hw > hw_before || hw > l.initial_hw {
            for &f in maximal.iter().filter(|&&f| f != ME) {
                if hw == hw_before && l.regressed.contains(&f) {
                    continue;
                }
                let end = l.r.follower(f).unwrap().end;
                assert!(
                    end.is_some_and(|e| hw <= e),
                    "HW {hw} above ISR member {f}'s end {end:?}"
                );
            }
        }
        let isr = l.r.isr();
        assert!(isr.contains(&ME));
        assert!(isr.iter().all(|r| maximal.contains(r)));
        if isr_before.len() < l.effective_min_isr() && isr.len() < l.effective_min_isr() {
            assert_eq!(hw, hw_before, "HW moved below min ISR");
        }
        for a in &acts {
            match a {
                Action::Complete { waiter, result } => {
                    assert!(l.answered.insert(*waiter), "answered twice");
                    let w = l
                        .waiting
                        .remove(waiter)
                        .expect("answer for a registered waiter");
                    if let Ok(p) = result {
                        assert_eq!(p.through(), w.last);
                        match w.acks {
                            Acks::All => {
                                assert_eq!(p.scope(), CommitScope::Replicated);
                                assert!(p.through() < hw);
                                assert!(maximal.len() >= min_isr);
                            }
                            _ => {
                                // acks=1: written on the leader (not waiting for a flush).
                                assert_eq!(p.scope(), CommitScope::Leader);
                                assert!(p.through() < l.ends.written_end);
                            }
                        }
                    } else {
                        assert_eq!(*result, Err(ErrorCode::NotEnoughReplicasAfterAppend));
                        assert_eq!(w.acks, Acks::All);
                    }
                }
                Action::AlterPartition(p) => {
                    assert!(pending_before.is_none(), "a second change in flight");
                    let proposed: BTreeSet<ReplicaId> = p.isr.iter().map(|m| m.id).collect();
                    let before: BTreeSet<ReplicaId> = isr_before.iter().copied().collect();
                    for gone in before.difference(&proposed) {
                        let v = views[gone];
                        assert!(
                            v.end != Some(leader_end_before)
                                && v.last_caught_up_ms.is_none_or(|t| l.now - t > LAG),
                            "shrank {gone} which was caught up: {v:?} at {}",
                            l.now
                        );
                    }
                    for added in proposed.difference(&before) {
                        let end = l.r.follower(*added).unwrap().end.unwrap();
                        assert!(end >= hw_before && end >= l.r.epoch_start_offset().unwrap());
                    }
                }
                Action::HighWatermark(h) => assert!(*h > hw_before && *h <= hw),
                other => panic!("a leader asked for {other:?}"),
            }
        }
        // Nothing stays waiting once covered.
        for w in l.waiting.values() {
            match w.acks {
                Acks::All => assert!(
                    w.last >= hw,
                    "acks=all waiter at {} left behind HW {hw}",
                    w.last
                ),
                _ => assert!(w.last >= committed),
            }
        }
        assert!(l.r.pending_waiters() <= 6);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn leader_invariants(
        min_isr in 1usize..=3,
        fsync in any::<bool>(),
        start in 0i64..6,
        hw in 0i64..6,
        isr3 in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let commit_on = if fsync { CommitOn::Fsync } else { CommitOn::Write };
        run_leader(min_isr, commit_on, start, hw, isr3, &ops);
    }

    /// RF=1: the core is today's broker: HW == the log's committed end after every step;
    /// acks=all answered exactly when committed, acks=1 exactly when written, acks=0 never; acks=all refused iff
    /// min.insync.replicas > 1.
    #[test]
    fn single_replica_is_todays_broker(
        min_isr in 1usize..=3,
        fsync in any::<bool>(),
        ops in proptest::collection::vec((0u8..4, 0u8..3, 1i64..5), 1..60),
    ) {
        let commit_on = if fsync { CommitOn::Fsync } else { CommitOn::Write };
        let config = Config { min_insync_replicas: min_isr, commit_on, ..Config::default() };
        let mut r = ReplicaState::new(config, LogEnds::at(0), 0, NoDedup).unwrap();
        r.became_leader(BecameLeader { leader_epoch: 0, partition_epoch: 0, replicas: vec![1], isr: vec![1], now_ms: 0 }).unwrap();
        let mut ends = LogEnds::at(0);
        let mut waiting: BTreeMap<WaiterId, (Offset, Acks)> = BTreeMap::new();
        for (kind, acks, n) in ops {
            let mut acts = Vec::new();
            match kind {
                0 => {
                    let acks = [Acks::None, Acks::Leader, Acks::All][acks as usize];
                    match r.admit_produce(acks) {
                        Err(e) => {
                            prop_assert_eq!(e, ErrorCode::NotEnoughReplicas);
                            prop_assert!(acks == Acks::All && min_isr > 1);
                        }
                        Ok(t) => {
                            prop_assert!(!(acks == Acks::All && min_isr > 1));
                            let base = ends.log_end;
                            ends.log_end += n;
                            if acks != Acks::None {
                                waiting.insert(t.waiter(), (base + n - 1, acks));
                            }
                            acts.extend(r.appended(t, Appended { base_offset: base, last_offset: base + n - 1, ident: None, duplicate: false, at_ms: 0 }));
                            acts.extend(r.log_progress(ends).unwrap());
                        }
                    }
                }
                1 | 2 => {
                    ends.written_end += (ends.log_end - ends.written_end) * i64::from(acks + 1) / 3;
                    acts.extend(r.log_progress(ends).unwrap());
                }
                _ => {
                    ends.durable_end += (ends.written_end - ends.durable_end) * i64::from(acks + 1) / 3;
                    acts.extend(r.log_progress(ends).unwrap());
                }
            }
            let committed = if fsync { ends.durable_end } else { ends.written_end };
            prop_assert_eq!(r.high_watermark(), committed);
            for a in acts {
                if let Action::Complete { waiter, result } = a {
                    let (last, acks) = waiting.remove(&waiter).expect("registered, answered once");
                    let p = result.expect("RF=1 never fails a waiter");
                    prop_assert_eq!(p.through(), last);
                    let bound = if acks == Acks::Leader { ends.written_end } else { committed };
                    prop_assert!(last < bound);
                }
            }
            prop_assert!(
                waiting.values().all(|&(last, acks)| last >= if acks == Acks::Leader { ends.written_end } else { committed }),
                "a committed batch still waits"
            );
        }
    }
}

// ----- truncation convergence -----------------------------------------------------------------

/// A replica's log in the simulation: (epoch, unique id) per offset.
type SimLog = Vec<(LeaderEpoch, u64)>;

fn epochs_of(log: &SimLog) -> EpochTable {
    let mut t = EpochTable::new(0);
    for &(e, _) in log {
        assert!(t.append(e, 1));
    }
    t
}

#[derive(Debug, Clone)]
enum ClusterOp {
    /// Replica `r` becomes leader in a new epoch, whatever its log (unclean elections too: the
    /// truncation rules must hold for any history).
    Elect(usize),
    /// The leader appends `n` entries.
    Append(u64),
    /// Replica `r` catches up with the leader: the fetch/truncate loop, then copies up to `k`
    /// entries.
    Sync(usize, usize),
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// After any history of elections and appends (two or more failovers in a row included), a
    /// follower's fetch/truncate loop through the leader's diverging-epoch check and the core's
    /// truncation decision ends with the follower's log a prefix of the leader's, cut exactly at
    /// their longest common prefix: nothing divergent kept (KIP-279), nothing common dropped
    /// (KIP-101).
    #[test]
    fn truncation_converges_to_the_common_prefix(
        ops in proptest::collection::vec(prop_oneof![
            1 => (0usize..3).prop_map(ClusterOp::Elect),
            2 => (1u64..4).prop_map(ClusterOp::Append),
            2 => (0usize..3, 0usize..6).prop_map(|(r, k)| ClusterOp::Sync(r, k)),
        ], 1..60),
    ) {
        let mut logs: [SimLog; 3] = [Vec::new(), Vec::new(), Vec::new()];
        let mut leader = 0usize;
        let mut epoch: LeaderEpoch = 0;
        let mut next_id = 0u64;
        for op in ops {
            match op {
                ClusterOp::Elect(r) => {
                    leader = r;
                    epoch += 1;
                }
                ClusterOp::Append(n) => {
                    for _ in 0..n {
                        logs[leader].push((epoch, next_id));
                        next_id += 1;
                    }
                }
                ClusterOp::Sync(r, k) => {
                    if r == leader {
                        continue;
                    }
                    let lead = logs[leader].clone();
                    let before = logs[r].clone();
                    let lcp = before.iter().zip(&lead).take_while(|(a, b)| a == b).count();
                    let mut table = epochs_of(&before);
                    let leader_table = epochs_of(&lead);
                    let end = before.len() as Offset;
                    let mut core = ReplicaState::new(
                        Config { replica_id: 9, ..Config::default() },
                        LogEnds { log_start: 0, durable_end: end, written_end: end, log_end: end },
                        0,
                        NoDedup,
                    ).unwrap();
                    core.became_follower(1, epoch, 0).unwrap();
                    let mut rounds = 0;
                    loop {
                        rounds += 1;
                        prop_assert!(rounds < 50, "no convergence");
                        let offset = core.fetch_position().unwrap();
                        prop_assert_eq!(offset, table.log_end());
                        let d = table
                            .latest_epoch()
                            .and_then(|last| diverging_epoch(&leader_table, 0, offset, last));
                        let Some(d) = d else { break };
                        let acts = core.leader_answer(LeaderAnswer { leader_epoch: epoch, high_watermark: 0, diverging: Some(d) }, &table).unwrap();
                        let [Action::Truncate { to, .. }] = acts[..] else { panic!("{acts:?}") };
                        prop_assert!(to >= lcp as Offset, "cut below the common prefix: {} < {}", to, lcp);
                        prop_assert!(to <= table.log_end());
                        table.truncate_to(to);
                        logs[r].truncate(to as usize);
                        core.truncated(LogEnds { log_start: 0, durable_end: to, written_end: to, log_end: to }).unwrap();
                    }
                    prop_assert_eq!(logs[r].len(), lcp, "kept a divergent tail or cut common data");
                    prop_assert_eq!(&logs[r][..], &lead[..lcp]);
                    let upto = (lcp + k).min(lead.len());
                    logs[r].extend_from_slice(&lead[lcp..upto]);
                }
            }
        }
    }
}
