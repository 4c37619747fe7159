//! Replication through the partition facade without a network: a leader `Partition` and
//! follower `Partition`s, each on its own simulated disk, exchanging replica fetches through
//! the same calls the Fetch API and the follower fetcher make (`serve_replica_fetch` on the
//! leader, `fetch_position` / `follower_receive` on the follower), with a manual clock.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use shardlog_engine::{batch, BrokerStorage, CacheBudget, LogConfig, SimStorage};

use super::replication::{
    Assignment, FollowerStep, IsrProposal, LeaderData, ReplicaFetch, ReplicaSetup,
};
use super::{Partition, SegmentFiles};
use crate::clock::{Clock, ManualClock};
use crate::wire::errors;

const START_MS: i64 = 1_700_000_000_000;
const LAG_MS: u64 = 1_000;

/// Brokers `1..=n`, each with its replica of partition "t"-0 on its own disk, plus the ISR
/// proposals the replicas sent to "the controller".
struct Cluster {
    clock: ManualClock,
    disks: BTreeMap<i32, SimStorage>,
    parts: BTreeMap<i32, Rc<Partition>>,
    proposals: Rc<RefCell<Vec<IsrProposal>>>,
    min_insync: usize,
}

impl Cluster {
    async fn new(n: i32, min_insync: usize) -> Cluster {
        let mut c = Cluster {
            clock: ManualClock::new(START_MS),
            disks: BTreeMap::new(),
            parts: BTreeMap::new(),
            proposals: Rc::new(RefCell::new(Vec::new())),
            min_insync,
        };
        let replicas: Vec<i32> = (1..=n).collect();
        let a = Assignment {
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 0,
            replicas: replicas.clone(),
            isr: replicas,
        };
        for id in 1..=n {
            c.disks.insert(id, SimStorage::default());
            let p = c.open(id, &a).await;
            c.parts.insert(id, p);
        }
        c
    }

    async fn open(&self, id: i32, a: &Assignment) -> Rc<Partition> {
        let proposals = self.proposals.clone();
        let setup = ReplicaSetup {
            node_id: id,
            replica_lag_time_max_ms: LAG_MS,
            min_insync_replicas: self.min_insync,
            alter_sink: Some(Rc::new(move |p: IsrProposal| {
                proposals.borrow_mut().push(p)
            })),
        };
        Partition::open(
            "t",
            0,
            format!("/b{id}/t-0").into(),
            format!("/b{id}/t-0.producers.json").into(),
            LogConfig::default(),
            setup,
            a,
            &CacheBudget::new(1 << 20),
            &SegmentFiles::new(16),
            &BrokerStorage::Sim(self.disks[&id].clone()),
            &Clock::Manual(self.clock.clone()),
        )
        .await
        .expect("partition opens")
    }

    fn p(&self, id: i32) -> &Rc<Partition> {
        &self.parts[&id]
    }

    /// One replica fetch of `follower` from `leader`, through the calls the network carries.
    async fn fetch(&self, follower: i32, leader: i32) -> FollowerStep {
        let f = self.p(follower);
        let pos = f.fetch_position().expect("a follower ready to fetch");
        let out = self
            .p(leader)
            .serve_replica_fetch(
                ReplicaFetch {
                    replica: follower,
                    fetch_offset: pos.fetch_offset,
                    current_leader_epoch: pos.leader_epoch,
                    last_fetched_epoch: pos.last_fetched_epoch,
                },
                1 << 20,
            )
            .await;
        f.follower_receive(LeaderData::from_read(&out, pos.leader_epoch))
            .await
            .expect("the follower takes the answer")
    }

    /// Everything in `id`'s log, as stored.
    async fn log_bytes(&self, id: i32) -> Vec<u8> {
        let p = self.p(id);
        let rr = p
            .log
            .read(p.log_start_offset(), i64::MAX, 64 << 20, true)
            .await
            .expect("reads");
        rr.batches
            .iter()
            .flat_map(|b| b.to_bytes().to_vec())
            .collect()
    }

    /// `follower` fetches from leader 1 until caught up; the ISR expansion the leader then
    /// proposed, as the member ids and the partition epoch it was proposed against.
    async fn expansion_after_catch_up(&self, follower: i32) -> (Vec<i32>, i32) {
        self.fetch(follower, 1).await;
        self.fetch(follower, 1).await;
        let proposal = self
            .proposals
            .borrow_mut()
            .pop()
            .expect("an expansion proposed");
        let isr = proposal.alter.isr.iter().map(|m| m.id).collect();
        (isr, proposal.alter.partition_epoch)
    }

    /// Gives every replica in `ids` the assignment (a committed metadata change).
    fn assign(&self, ids: &[i32], a: &Assignment) {
        for id in ids {
            self.p(*id).apply_assignment(a).expect("assignment applies");
        }
    }
}

fn run<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .spawn(f)
        .expect("executor")
        .join()
        .expect("test body");
}

fn records(n: i32) -> Bytes {
    Bytes::from(batch::build(0, n, 10, START_MS))
}

/// An acks=all produce of `n` records on `p`, running in the background; its answer (error
/// code, base offset) lands in the returned cell.
type Answer = Rc<RefCell<Option<(i16, i64)>>>;

fn spawn_produce(p: &Rc<Partition>, n: i32) -> Answer {
    let done: Answer = Rc::new(RefCell::new(None));
    let (d, p) = (done.clone(), p.clone());
    glommio::spawn_local(async move {
        let r = p.produce(-1, records(n)).await;
        *d.borrow_mut() = Some((r.error(), r.base_offset()));
    })
    .detach();
    done
}

/// Broker 1 leading at leader epoch 0 over replicas 1..=3, with `isr` committed at
/// `partition_epoch`.
fn led_by_1(partition_epoch: i32, isr: &[i32]) -> Assignment {
    Assignment {
        leader: 1,
        leader_epoch: 0,
        partition_epoch,
        replicas: vec![1, 2, 3],
        isr: isr.to_vec(),
    }
}

fn error_of(a: &Answer) -> Option<i16> {
    a.borrow().map(|(e, _)| e)
}

/// Lets spawned produce tasks run until they block again.
async fn settle() {
    for _ in 0..20 {
        futures_lite::future::yield_now().await;
    }
    glommio::timer::sleep(Duration::from_millis(5)).await;
}

/// acks=all is answered only once every ISR follower fetched past the batch (the leader
/// learns a follower's end from its next fetch), and then with the batch's offset; the
/// followers learn the high watermark from the next answers. A produce on a follower is
/// refused with NOT_LEADER_OR_FOLLOWER.
#[test]
fn acks_all_completes_after_the_isr_fetched_past_the_batch_and_the_hw_propagates() {
    run(|| async {
        let c = Cluster::new(3, 2).await;
        let done = spawn_produce(c.p(1), 3);
        settle().await;
        assert_eq!(c.p(1).log_end_offset(), 3);
        assert!(done.borrow().is_none(), "committed on the leader only");
        assert_eq!(c.fetch(2, 1).await, FollowerStep::Appended { records: 3 });
        assert_eq!(c.fetch(3, 1).await, FollowerStep::Appended { records: 3 });
        settle().await;
        assert!(
            done.borrow().is_none(),
            "the followers have the batch, the leader does not know yet"
        );
        assert_eq!(c.p(1).high_watermark(), 0);
        c.fetch(2, 1).await;
        settle().await;
        assert!(
            done.borrow().is_none(),
            "follower 3 is in the ISR and not past it yet"
        );
        c.fetch(3, 1).await;
        settle().await;
        assert_eq!(*done.borrow(), Some((errors::NONE, 0)));
        assert_eq!(c.p(1).high_watermark(), 3);
        // The followers had high watermark 0; the next answer carries 3.
        assert_eq!(c.p(2).high_watermark(), 0);
        c.fetch(2, 1).await;
        assert_eq!(c.p(2).high_watermark(), 3);
        for id in [2, 3] {
            let r = c.p(id).produce(1, records(1)).await;
            assert_eq!(r.error(), errors::NOT_LEADER_OR_FOLLOWER);
            assert_eq!(
                c.p(id).client_refusal(),
                Some(errors::NOT_LEADER_OR_FOLLOWER)
            );
        }
        assert_eq!(c.log_bytes(1).await, c.log_bytes(2).await);
        assert_eq!(c.log_bytes(1).await, c.log_bytes(3).await);
    });
}

/// A follower that stops fetching leaves the ISR after `replica.lag.time.max.ms` (the leader
/// proposes the shrink; the controller's answer commits it); an acks=all produce waiting
/// meanwhile is answered NOT_ENOUGH_REPLICAS_AFTER_APPEND when the shrink takes the ISR below
/// min.insync.replicas, and the next one is refused before the append with
/// NOT_ENOUGH_REPLICAS. A follower that catches up is proposed back.
#[test]
fn a_lagging_follower_leaves_the_isr_and_min_insync_refuses_acks_all() {
    run(|| async {
        let c = Cluster::new(3, 3).await;
        let done = spawn_produce(c.p(1), 2);
        settle().await;
        c.fetch(2, 1).await;
        c.fetch(2, 1).await;
        c.p(1).tick(c.clock.now_ms()).await.expect("tick");
        assert!(c.proposals.borrow().is_empty(), "within the lag time");
        c.clock.advance(LAG_MS as i64 + 1);
        c.fetch(2, 1).await; // 2 stays caught up
        c.p(1).tick(c.clock.now_ms()).await.expect("tick");
        let proposal = c.proposals.borrow_mut().pop().expect("a shrink proposed");
        let isr: Vec<i32> = proposal.alter.isr.iter().map(|m| m.id).collect();
        assert_eq!(isr, vec![1, 2]);
        assert!(done.borrow().is_none());
        // The controller commits it.
        c.p(1)
            .isr_answer(proposal.alter.leader_epoch, Ok(led_by_1(1, &[1, 2])));
        settle().await;
        assert_eq!(
            error_of(&done),
            Some(errors::NOT_ENOUGH_REPLICAS_AFTER_APPEND)
        );
        assert_eq!(c.p(1).isr(), vec![1, 2]);
        assert!(c.p(1).under_replicated());
        let refused = c.p(1).produce(-1, records(1)).await;
        assert_eq!(refused.error(), errors::NOT_ENOUGH_REPLICAS);
        assert_eq!(c.p(1).log_end_offset(), 2, "refused before the append");
        // min.insync 2: acks=all works again with the smaller ISR.
        c.p(1).set_min_insync_replicas(2);
        let done = spawn_produce(c.p(1), 1);
        settle().await;
        c.fetch(2, 1).await;
        c.fetch(2, 1).await;
        settle().await;
        assert_eq!(error_of(&done), Some(errors::NONE));
        // Follower 3 catches up and is proposed back into the ISR.
        let (isr, _) = c.expansion_after_catch_up(3).await;
        assert_eq!(isr, vec![1, 2, 3]);
    });
}

/// A committed change that bumps the partition epoch but keeps the ISR (the controller
/// changed the ELR, KIP-966) reaches the leader: its next ISR proposal carries the new
/// partition epoch. Before the fix the leader kept the old epoch, the controller refused every
/// later proposal with INVALID_UPDATE_VERSION, and an ISR that had shrunk below
/// min.insync.replicas never grew back (acks=all unavailable until a leader change; seen in
/// `tuning/cluster-faults.py --fault kill-two --flush never`).
#[test]
fn a_partition_epoch_bump_without_an_isr_change_reaches_the_leader() {
    run(|| async {
        let c = Cluster::new(3, 2).await;
        // The ISR shrinks to the leader alone (followers 2 and 3 gone), committed at epoch 1.
        c.assign(&[1], &led_by_1(1, &[1]));
        assert_eq!(c.p(1).isr(), vec![1]);
        // The controller bumps the partition epoch without touching the ISR.
        c.assign(&[1], &led_by_1(2, &[1]));
        // Follower 2 catches up and is proposed back, against partition epoch 2.
        assert_eq!(c.expansion_after_catch_up(2).await, (vec![1, 2], 2));
    });
}

/// After a failover, a follower holding records the new leader never had (appended by the
/// old leader, not committed) truncates them at the new leader's diverging-epoch answer and
/// then copies the new leader's records: all logs end byte-identical, the old leader's
/// included when it comes back as a follower.
#[test]
fn a_divergent_follower_tail_is_truncated_after_a_leader_change() {
    run(|| async {
        let c = Cluster::new(3, 1).await;
        c.p(1).produce(1, records(2)).await;
        c.fetch(2, 1).await;
        c.fetch(3, 1).await;
        // Two more batches reach follower 2 only, one more stays on the leader alone.
        c.p(1).produce(1, records(3)).await;
        c.p(1).produce(1, records(4)).await;
        c.fetch(2, 1).await;
        c.p(1).produce(1, records(5)).await;
        assert_eq!(
            (
                c.p(1).log_end_offset(),
                c.p(2).log_end_offset(),
                c.p(3).log_end_offset()
            ),
            (14, 9, 2)
        );
        // Broker 1 is gone; the controller elects 3 in epoch 1.
        let epoch1 = Assignment {
            leader: 3,
            leader_epoch: 1,
            partition_epoch: 1,
            replicas: vec![1, 2, 3],
            isr: vec![2, 3],
        };
        c.assign(&[2, 3], &epoch1);
        assert!(c.p(3).is_leader());
        c.p(3).produce(1, records(6)).await;
        assert_eq!(
            c.fetch(2, 3).await,
            FollowerStep::Truncated { to: 2 },
            "epoch 0 ends at 2 on the new leader"
        );
        assert_eq!(c.fetch(2, 3).await, FollowerStep::Appended { records: 6 });
        // The old leader comes back as a follower in epoch 1.
        c.assign(&[1], &epoch1);
        assert_eq!(c.fetch(1, 3).await, FollowerStep::Truncated { to: 2 });
        c.fetch(1, 3).await;
        let want = c.log_bytes(3).await;
        assert_eq!(c.p(3).log_end_offset(), 8);
        assert_eq!(c.log_bytes(2).await, want);
        assert_eq!(c.log_bytes(1).await, want);
        let epochs = c.p(1).log.leader_epochs();
        assert_eq!(epochs, vec![(0, 0), (1, 2)]);
    });
}

/// Producer state is rebuilt on followers from what they copy: after a failover, an
/// idempotent producer retrying a batch the old leader acknowledged is answered with the
/// original offset and nothing is appended twice. A batch the new leader never got is
/// appended (and its producer continues in sequence).
#[test]
fn an_idempotent_retry_after_failover_is_deduplicated_by_the_new_leader() {
    run(|| async {
        let c = Cluster::new(2, 1).await;
        let b0 = Bytes::from(batch::build_with(0, 2, 10, START_MS, 7, 0, 0));
        let b1 = Bytes::from(batch::build_with(0, 1, 10, START_MS, 7, 0, 2));
        let leader = c.p(1).clone();
        let first = glommio::spawn_local(async move { leader.produce(-1, b0).await }).detach();
        settle().await;
        c.fetch(2, 1).await;
        c.fetch(2, 1).await;
        let first = first.await.expect("answered");
        assert_eq!((first.error(), first.base_offset()), (errors::NONE, 0));
        c.assign(
            &[2],
            &Assignment {
                leader: 2,
                leader_epoch: 1,
                partition_epoch: 1,
                replicas: vec![1, 2],
                isr: vec![2],
            },
        );
        let b0 = Bytes::from(batch::build_with(0, 2, 10, START_MS, 7, 0, 0));
        let retry = c.p(2).produce(-1, b0).await;
        assert_eq!((retry.error(), retry.base_offset()), (errors::NONE, 0));
        assert_eq!(c.p(2).log_end_offset(), 2, "the retry appended nothing");
        let next = c.p(2).produce(-1, b1).await;
        assert_eq!((next.error(), next.base_offset()), (errors::NONE, 2));
        let gap = Bytes::from(batch::build_with(0, 1, 10, START_MS, 7, 0, 9));
        assert_eq!(
            c.p(2).produce(1, gap).await.error(),
            errors::OUT_OF_ORDER_SEQUENCE_NUMBER
        );
    });
}

/// The leader refuses replica fetches from brokers that are not replicas, and fetches in an
/// older or newer leader epoch (KIP-320), naming itself with the fencing answer (KIP-951).
#[test]
fn replica_fetches_are_checked_against_replicas_and_epochs() {
    run(|| async {
        let c = Cluster::new(2, 1).await;
        let fetch = |replica, current_leader_epoch| ReplicaFetch {
            replica,
            fetch_offset: 0,
            current_leader_epoch,
            last_fetched_epoch: -1,
        };
        let leader = c.p(1);
        let stranger = leader.serve_replica_fetch(fetch(9, 0), 1 << 20).await;
        assert_eq!(stranger.error, errors::UNKNOWN_LEADER_EPOCH);
        let stranger = leader.serve_replica_fetch(fetch(9, -1), 1 << 20).await;
        assert_eq!(stranger.error, errors::NOT_LEADER_OR_FOLLOWER);
        let newer = leader.serve_replica_fetch(fetch(2, 1), 1 << 20).await;
        assert_eq!(newer.error, errors::UNKNOWN_LEADER_EPOCH);
        c.assign(
            &[1, 2],
            &Assignment {
                leader: 1,
                leader_epoch: 2,
                partition_epoch: 1,
                replicas: vec![1, 2],
                isr: vec![1, 2],
            },
        );
        let older = leader.serve_replica_fetch(fetch(2, 0), 1 << 20).await;
        assert_eq!(older.error, errors::FENCED_LEADER_EPOCH);
        assert_eq!(older.current_leader, Some((1, 2)));
        let ok = leader.serve_replica_fetch(fetch(2, 2), 1 << 20).await;
        assert_eq!(ok.error, errors::NONE);
        // A follower asked as if it were the leader.
        let wrong = c.p(2).serve_replica_fetch(fetch(1, 2), 1 << 20).await;
        assert_eq!(wrong.error, errors::NOT_LEADER_OR_FOLLOWER);
        assert_eq!(wrong.current_leader, Some((1, 2)));
    });
}

/// A follower that truncates an idempotent batch the new leader never had forgets it: when
/// that follower leads later, the producer's retry of the batch is appended again rather than
/// answered as a duplicate at offsets that were cut (which would acknowledge lost data).
#[test]
fn a_truncated_idempotent_batch_is_not_taken_for_a_duplicate() {
    run(|| async {
        let c = Cluster::new(3, 1).await;
        let seq = |s: i32, n: i32| Bytes::from(batch::build_with(0, n, 10, START_MS, 7, 0, s));
        c.p(1).produce(1, seq(0, 2)).await;
        c.fetch(2, 1).await;
        c.fetch(3, 1).await;
        // Sequence 2 reaches follower 2 only.
        c.p(1).produce(1, seq(2, 1)).await;
        c.fetch(2, 1).await;
        assert_eq!(c.p(2).log_end_offset(), 3);
        let epoch1 = Assignment {
            leader: 3,
            leader_epoch: 1,
            partition_epoch: 1,
            replicas: vec![1, 2, 3],
            isr: vec![2, 3],
        };
        c.assign(&[2, 3], &epoch1);
        c.p(3).produce(1, records(4)).await;
        assert_eq!(c.fetch(2, 3).await, FollowerStep::Truncated { to: 2 });
        c.fetch(2, 3).await;
        assert_eq!(c.p(2).log_end_offset(), 6);
        // Broker 3 goes; 2 leads in epoch 2 and the producer retries sequence 2.
        c.assign(
            &[2],
            &Assignment {
                leader: 2,
                leader_epoch: 2,
                partition_epoch: 2,
                replicas: vec![1, 2, 3],
                isr: vec![2],
            },
        );
        let retry = c.p(2).produce(-1, seq(2, 1)).await;
        assert_eq!((retry.error(), retry.base_offset()), (errors::NONE, 6));
        assert_eq!(c.p(2).log_end_offset(), 7);
    });
}

/// An I/O error on a read takes the partition offline as one on a write does (Kafka marks a
/// log directory offline on any `IOException`): the leader's disk fails reads of its segment
/// once its batch cache no longer holds the start of the log. A follower fetching from there
/// is answered KAFKA_STORAGE_ERROR, a consumer read fails with the I/O error, and both note
/// the storage failure the owning shard acts on (`take_storage_failure`: offline here, the
/// heartbeat reports it, the controller moves the leadership). Reads the cache serves do
/// not touch the disk and still succeed; an offset outside the log is not a storage failure.
#[test]
fn eio_on_a_read_is_a_storage_failure_and_answers_kafka_storage_error() {
    run(|| async {
        let c = Cluster::new(2, 1).await;
        // ~1.5 MB through a 1 MiB cache budget: the first batches are only on the disk.
        for _ in 0..15 {
            let r = c
                .p(1)
                .produce(1, Bytes::from(batch::build(0, 1, 100_000, START_MS)))
                .await;
            assert_eq!(r.error(), errors::NONE);
        }
        let end = c.p(1).log_end_offset();
        assert_eq!(c.p(1).take_storage_failure(), None);
        c.disks[&1].set_faults(shardlog_engine::io::sim::Faults {
            eio_read_of: Some(".log".into()),
            ..Default::default()
        });
        let out_of_range = c.p(1).read(end + 5, 1 << 20, true).await;
        assert!(out_of_range.is_err());
        assert_eq!(
            c.p(1).take_storage_failure(),
            None,
            "a bad offset is not a disk fault"
        );
        let out = c
            .p(1)
            .serve_replica_fetch(
                ReplicaFetch {
                    replica: 2,
                    fetch_offset: 0,
                    current_leader_epoch: 0,
                    last_fetched_epoch: -1,
                },
                1 << 20,
            )
            .await;
        assert_eq!(out.error, errors::KAFKA_STORAGE_ERROR);
        assert!(out.batches.is_empty());
        let noted = c
            .p(1)
            .take_storage_failure()
            .expect("the failed read is noted");
        assert!(noted.contains("injected EIO"), "{noted}");
        // The disk reads again: the follower catches up, the high watermark reaches the end.
        c.disks[&1].set_faults(shardlog_engine::io::sim::Faults::default());
        for _ in 0..20 {
            if c.p(1).high_watermark() == end {
                break;
            }
            c.fetch(2, 1).await;
        }
        assert_eq!(c.p(1).high_watermark(), end);
        assert_eq!(c.p(1).take_storage_failure(), None);
        c.disks[&1].set_faults(shardlog_engine::io::sim::Faults {
            eio_read_of: Some(".log".into()),
            ..Default::default()
        });
        let consumer = c.p(1).read(0, 1 << 20, true).await;
        assert!(
            matches!(consumer, Err(shardlog_engine::LogError::Io { .. })),
            "{consumer:?}"
        );
        assert!(
            c.p(1).take_storage_failure().is_some(),
            "a consumer read too"
        );
        let tail = c.p(1).read(end - 1, 1 << 20, true).await.expect("cached");
        assert_eq!(tail.batches.len(), 1);
        assert_eq!(c.p(1).take_storage_failure(), None);
    });
}

/// Issue 20's 10 s stall after a storage error on one broker: its follower replica fails (the
/// disk is full), stops fetching, and the controller drops it from the ISR (its heartbeat
/// reports the partition offline). An acks=all produce waiting on the leader is answered as
/// soon as that ISR change arrives and the remaining follower has the batch. It used to wait
/// until `replica.lag.time.max.ms` ran out (10 s in `tuning/cluster-diskfull.py`, on every
/// partition the full broker followed): the failed follower had been caught up when it
/// stopped, and the leader kept waiting for it in its high watermark as a follower "about to
/// rejoin" the ISR (Kafka's `isReplicaIsrEligible` case). The clock does not move here, so the
/// lag time never runs out.
#[test]
fn acks_all_does_not_wait_for_a_caught_up_follower_dropped_from_the_isr() {
    run(|| async {
        let c = Cluster::new(3, 2).await;
        let leader = c.p(1).clone();
        let first = leader.produce(-1, records(3));
        let both = async {
            settle().await;
            for _ in 0..2 {
                c.fetch(2, 1).await;
                c.fetch(3, 1).await;
            }
        };
        let (r, ()) = futures::join!(first, both);
        assert_eq!((r.error(), r.base_offset()), (errors::NONE, 0));
        // Follower 3 is caught up; now its disk fails and it fetches no more.
        let done = spawn_produce(&leader, 2);
        settle().await;
        c.fetch(2, 1).await;
        c.fetch(2, 1).await;
        settle().await;
        assert!(done.borrow().is_none(), "3 is still in the ISR");
        // The controller drops 3 (offline on its broker).
        c.assign(&[1], &led_by_1(1, &[1, 2]));
        settle().await;
        assert_eq!(*done.borrow(), Some((errors::NONE, 3)));
        assert_eq!(c.p(1).high_watermark(), 5);
    });
}
