//! Multi-broker deterministic simulation: three brokers in one process, each with a real
//! engine log over its own simulated disk ([`SimStorage`]: a crash loses what was not
//! fsynced) and the real replica core ([`ReplicaState`]) for one partition (RF=3,
//! `min.insync.replicas=2`); a controller applying the real decisions of
//! `controller::decide` to one image; a simulated network (seeded: drops, delays and so
//! reordering, cut links) carrying follower fetches and their answers, AlterPartition and
//! heartbeats. Producers send acks=all batches to whoever leads and remember what was
//! acknowledged. Faults: crash and restart of a broker (under flush=never only while the
//! other two are in the ISR, the guarantee's envelope; any under flush every batch), lost
//! heartbeats (session expiry), cut links.
//!
//! Checked: the high watermark never goes back on a leader within its leadership; after the
//! faults stop and the cluster is quiet, every acknowledged record is at its offset, with its
//! content, on the leader, and every replica holds the same bytes up to the high watermark.
//!
//! `CLUSTER_SEEDS=n` runs seeds `0..n` (default: a number that takes seconds in release);
//! `CLUSTER_SEED=s` replays one seed with a trace of every event. `CLUSTER_BUG=ack_early` or
//! `CLUSTER_BUG=skip_truncate` breaks one rule in the glue (acknowledge acks=all on the
//! leader's append; ignore the follower's truncation), to show that the checks catch it.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use futures_lite::future::block_on;
use shardlog_engine::batch;
use shardlog_engine::io::sim::{CrashMode, SplitMix};
use shardlog_engine::{FlushPolicy, LogConfig, PartitionLog, SimStorage};
use shardlog_replica::{
    Acks, Action, Appended, BecameLeader, CommitOn, Config, EpochEndOffset, EpochHistory,
    FetchAnswer, FollowerFetch, IsrUpdate, LeaderAnswer, LogEnds, NoDedup, ReplicaState, Role,
    WaiterId,
};
use shardlog_server::controller::decide::{
    alter_partition, AlterPartitionReq, Heartbeat, Registration, Sessions,
};
use shardlog_server::controller::metadata::{ClusterMeta, PartitionMeta, TopicMeta, NO_LEADER};
use shardlog_server::controller::records::MetadataRecord;

const N: i32 = 3;
const CONTROLLER: i32 = 0;
const TOPIC: &str = "t";
const TOPIC_ID: u128 = 7;
const STEP_MS: u64 = 5;
const SESSION_MS: u64 = 400;
const HEARTBEAT_MS: u64 = 50;
const LAG_MS: u64 = 200;

type Log = PartitionLog<SimStorage>;

struct History<'a>(&'a Log);

impl EpochHistory for History<'_> {
    fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        self.0.end_offset_for_epoch(epoch)
    }
    fn latest_epoch(&self) -> Option<i32> {
        self.0.latest_epoch()
    }
    fn earliest_epoch_start(&self) -> Option<i64> {
        self.0.leader_epochs().first().map(|&(_, o)| o)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Bug {
    None,
    AckEarly,
    SkipTruncate,
}

enum Msg {
    Fetch {
        from: i32,
        leader_epoch: i32,
        fetch_offset: i64,
        last_epoch: Option<i32>,
        broker_epoch: i64,
    },
    FetchResp {
        leader_epoch: i32,
        fetch_offset: i64,
        hw: i64,
        diverging: Option<EpochEndOffset>,
        bytes: Bytes,
        ok: bool,
    },
    Alter(AlterPartitionReq),
    AlterResp {
        leader_epoch: i32,
        result: Result<PartitionMeta, i16>,
    },
    Heartbeat(Heartbeat),
}

struct Up {
    log: Log,
    core: ReplicaState,
    /// Broker epoch of this incarnation, once registered.
    epoch: Option<i64>,
    incarnation: u128,
    known: Option<PartitionMeta>,
    fetching_since: Option<u64>,
    next_heartbeat: u64,
    waiters: BTreeMap<WaiterId, (i64, i64)>,
    /// (leader epoch, high watermark) while leading.
    led: Option<(i32, i64)>,
    /// The AlterPartition in flight and when it was sent (resent until answered: the
    /// network may lose it or its answer).
    alter: Option<(u64, AlterPartitionReq)>,
}

struct Broker {
    id: i32,
    disk: SimStorage,
    up: Option<Up>,
    down_until: u64,
}

struct Sim {
    rng: SplitMix,
    now: u64,
    every_batch: bool,
    bug: Bug,
    trace: bool,
    brokers: Vec<Broker>,
    image: ClusterMeta,
    sessions: Sessions,
    /// (deliver at, sequence, from, to, message)
    net: Vec<(u64, u64, i32, i32, Msg)>,
    seq: u64,
    cut: BTreeSet<(i32, i32)>,
    next_incarnation: u128,
    next_tag: i64,
    /// Acknowledged acks=all records: offset -> tag (the batch's timestamp).
    acked: BTreeMap<i64, i64>,
    drop_p: f64,
    crashes: u64,
    elections: u64,
    truncations: u64,
}

fn log_config(every_batch: bool) -> LogConfig {
    LogConfig {
        flush: if every_batch {
            FlushPolicy::EveryBatch
        } else {
            FlushPolicy::Never
        },
        segment_bytes: 16 * 1024,
        index_interval_bytes: 512,
        cache_bytes: 4096,
        preallocate_bytes: 64 * 1024,
        retention_ms: None,
        ..LogConfig::default()
    }
}

fn ends(log: &Log) -> LogEnds {
    LogEnds {
        log_start: log.log_start_offset(),
        durable_end: log.durable_end_offset(),
        written_end: log.written_end_offset(),
        log_end: log.log_end_offset(),
    }
}

/// Every batch of the log below `end`, as stored.
fn bytes_below(log: &Log, end: i64) -> Vec<u8> {
    block_on(async {
        let mut out = Vec::new();
        let mut offset = log.log_start_offset();
        while offset < end {
            let r = log.read(offset, end, 1 << 20, true).await.expect("read");
            assert!(!r.batches.is_empty(), "no batch at {offset} below {end}");
            for b in r.batches {
                let b = b.to_bytes();
                let info = batch::peek(&b).expect("header");
                if info.base_offset >= end {
                    return out;
                }
                offset = info.next_offset();
                out.extend_from_slice(&b);
            }
        }
        out
    })
}

/// offset -> tag of every batch (one record each) below `end`.
fn tags_below(log: &Log, end: i64) -> BTreeMap<i64, i64> {
    let bytes = bytes_below(log, end);
    let mut out = BTreeMap::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let info = batch::peek(&bytes[pos..]).expect("header");
        out.insert(info.base_offset, info.first_timestamp);
        pos += info.size;
    }
    out
}

impl Sim {
    fn new(seed: u64, bug: Bug, trace: bool) -> Sim {
        let mut rng = SplitMix(seed.wrapping_mul(0x9E37_79B9).wrapping_add(1));
        let every_batch = rng.chance(0.5);
        let drop_p = [0.0, 0.02, 0.1][rng.below(3) as usize];
        let mut image = ClusterMeta::default();
        let mut configs = BTreeMap::new();
        configs.insert("min.insync.replicas".to_string(), "2".to_string());
        configs.insert(
            "flush.messages".to_string(),
            if every_batch {
                "1".to_string()
            } else {
                i64::MAX.to_string()
            },
        );
        image.topics.insert(
            TOPIC.to_string(),
            TopicMeta {
                name: TOPIC.to_string(),
                id: TOPIC_ID,
                partitions: vec![PartitionMeta::new(vec![1, 2, 3])],
                configs,
            },
        );
        let brokers = (1..=N)
            .map(|id| Broker {
                id,
                disk: SimStorage::default(),
                up: None,
                down_until: 0,
            })
            .collect();
        let mut sim = Sim {
            rng,
            now: 0,
            every_batch,
            bug,
            trace,
            brokers,
            image,
            sessions: Sessions::new(SESSION_MS),
            net: Vec::new(),
            seq: 0,
            cut: BTreeSet::new(),
            next_incarnation: 1,
            next_tag: 1,
            acked: BTreeMap::new(),
            drop_p,
            crashes: 0,
            elections: 0,
            truncations: 0,
        };
        if trace {
            eprintln!("seed {seed}: every_batch={every_batch} drop={drop_p}");
        }
        for i in 0..N as usize {
            sim.start(i);
        }
        sim
    }

    fn t(&self, what: impl FnOnce() -> String) {
        if self.trace {
            eprintln!("{:>6} {}", self.now, what());
        }
    }

    fn commit_records(&mut self, recs: Vec<MetadataRecord>) {
        for r in recs {
            if self.trace {
                eprintln!("{:>6} controller: {r:?}", self.now);
            }
            self.image.apply(&r);
            self.image.applied_index += 1;
        }
    }

    fn partition(&self) -> PartitionMeta {
        self.image.topics[TOPIC].partitions[0].clone()
    }

    /// Starts (or restarts) broker `i` over whatever its disk holds.
    fn start(&mut self, i: usize) {
        let id = self.brokers[i].id;
        let disk = self.brokers[i].disk.clone();
        let (log, _) = block_on(PartitionLog::open(
            disk,
            format!("/data/{TOPIC}-0").into(),
            log_config(self.every_batch),
        ))
        .expect("open");
        let config = Config {
            replica_id: id,
            replica_lag_time_max_ms: LAG_MS,
            min_insync_replicas: 2,
            max_pending_waiters: 1000,
            commit_on: if self.every_batch {
                CommitOn::Fsync
            } else {
                CommitOn::Write
            },
        };
        let core = ReplicaState::new(config, ends(&log), 0, NoDedup).expect("core");
        let incarnation = self.next_incarnation;
        self.next_incarnation += 1;
        self.t(|| {
            format!(
                "broker {id} opens its log: {:?} epochs {:?}",
                ends(&log),
                log.leader_epochs()
            )
        });
        self.brokers[i].up = Some(Up {
            log,
            core,
            epoch: None,
            incarnation,
            known: None,
            fetching_since: None,
            next_heartbeat: self.now,
            waiters: BTreeMap::new(),
            led: None,
            alter: None,
        });
        self.t(|| format!("broker {id} starts (incarnation {incarnation})"));
    }

    fn crash(&mut self, i: usize) {
        let id = self.brokers[i].id;
        self.brokers[i].up = None;
        self.crashes += 1;
        self.brokers[i].disk = self.brokers[i].disk.crash(CrashMode::LoseUnsynced);
        self.brokers[i].down_until = self.now + 50 + self.rng.below(600);
        self.t(|| format!("broker {id} crashes"));
    }

    fn send(&mut self, from: i32, to: i32, msg: Msg) {
        if self.cut.contains(&(from.min(to), from.max(to))) || self.rng.chance(self.drop_p) {
            return;
        }
        let at = self.now + 1 + self.rng.below(25);
        self.seq += 1;
        self.net.push((at, self.seq, from, to, msg));
    }

    /// Runs the actions of broker `i`'s core, in order.
    fn act(&mut self, i: usize, actions: Vec<Action>) {
        let id = self.brokers[i].id;
        for a in actions {
            let Some(up) = self.brokers[i].up.as_mut() else {
                return;
            };
            match a {
                Action::HighWatermark(hw) => {
                    if up.core.role() == Role::Leader {
                        let le = up.core.leader_epoch();
                        if let Some((e, old)) = up.led {
                            if e == le {
                                assert!(
                                    hw >= old,
                                    "broker {id}: HW went back {old} -> {hw} in epoch {e}"
                                );
                            }
                        }
                        up.led = Some((le, hw));
                    }
                }
                Action::Complete { waiter, result } => {
                    let w = up.waiters.remove(&waiter);
                    if let (Ok(_), Some((offset, tag))) = (result, w) {
                        if self.bug != Bug::AckEarly {
                            self.acked.insert(offset, tag);
                        }
                    }
                }
                Action::AlterPartition(ap) => {
                    let Some(me) = up.epoch else { continue };
                    let req = AlterPartitionReq {
                        topic: TOPIC.to_string(),
                        topic_id: TOPIC_ID,
                        partition: 0,
                        leader: id,
                        leader_epoch: ap.leader_epoch,
                        broker_epoch: me,
                        partition_epoch: ap.partition_epoch,
                        new_isr: ap
                            .isr
                            .iter()
                            .map(|m| {
                                (
                                    m.id,
                                    if m.id == id {
                                        me
                                    } else {
                                        m.broker_epoch.unwrap_or(-1)
                                    },
                                )
                            })
                            .collect(),
                    };
                    up.alter = Some((self.now, req.clone()));
                    self.send(id, CONTROLLER, Msg::Alter(req));
                }
                Action::Truncate { to, .. } => {
                    if self.bug == Bug::SkipTruncate {
                        let e = ends(&up.log);
                        let _ = up.core.truncated(e);
                        continue;
                    }
                    let to = to.max(up.log.log_start_offset());
                    let old = up.core.ends();
                    block_on(up.log.truncate_to(to)).expect("truncate");
                    // The engine's truncation is fsynced, so the durable end may have moved
                    // up while the log end went down: the core takes the cut, then the
                    // progress.
                    let e = ends(&up.log);
                    let cut = LogEnds {
                        durable_end: e.durable_end.min(old.durable_end),
                        written_end: e.written_end.min(old.written_end),
                        ..e
                    };
                    let mut more = up.core.truncated(cut).expect("truncated");
                    more.extend(up.core.log_progress(e).expect("progress"));
                    self.t(|| format!("broker {id} truncates to {to}"));
                    self.truncations += 1;
                    self.act(i, more);
                }
                Action::RebuildProducers { .. } => {}
            }
        }
    }

    /// Broker `i` learns the partition's committed state.
    fn learn(&mut self, i: usize, pm: &PartitionMeta) {
        let id = self.brokers[i].id;
        let now = self.now;
        let Some(up) = self.brokers[i].up.as_mut() else {
            return;
        };
        if up.known.as_ref() == Some(pm) {
            return;
        }
        up.known = Some(pm.clone());
        let r = if pm.leader == id {
            if up.core.role() == Role::Leader && up.core.leader_epoch() == pm.leader_epoch {
                if pm.partition_epoch > up.core.partition_epoch() {
                    up.core.isr_committed(IsrUpdate {
                        leader_epoch: pm.leader_epoch,
                        partition_epoch: pm.partition_epoch,
                        isr: pm.isr.clone(),
                    })
                } else {
                    Ok(Vec::new())
                }
            } else {
                up.led = None;
                self.elections += 1;
                up.core.became_leader(BecameLeader {
                    leader_epoch: pm.leader_epoch,
                    partition_epoch: pm.partition_epoch,
                    replicas: pm.replicas.clone(),
                    isr: pm.isr.clone(),
                    now_ms: now,
                })
            }
        } else if pm.leader != NO_LEADER {
            up.core
                .became_follower(pm.leader, pm.leader_epoch, pm.partition_epoch)
        } else if up.core.role() != Role::Offline {
            Ok(up
                .core
                .went_offline(shardlog_replica::ErrorCode::NotLeaderOrFollower))
        } else {
            Ok(Vec::new())
        };
        match r {
            Ok(actions) => {
                self.t(|| format!("broker {id} learns {pm:?}"));
                self.act(i, actions);
            }
            Err(e) => self.t(|| format!("broker {id} refuses {pm:?}: {e}")),
        }
    }

    fn deliver(&mut self, from: i32, to: i32, msg: Msg) {
        if to == CONTROLLER {
            match msg {
                Msg::Heartbeat(hb) => {
                    let (_, recs) = self.sessions.heartbeat(&self.image, &hb, self.now);
                    self.commit_records(recs);
                }
                Msg::Alter(req) => {
                    let leader_epoch = req.leader_epoch;
                    let result = match alter_partition(&self.image, &req) {
                        Ok(rec) => {
                            self.commit_records(vec![rec]);
                            Ok(self.partition())
                        }
                        Err(code) => {
                            self.t(|| format!("controller refuses {req:?}: {code}"));
                            Err(code)
                        }
                    };
                    self.send(
                        CONTROLLER,
                        from,
                        Msg::AlterResp {
                            leader_epoch,
                            result,
                        },
                    );
                }
                _ => {}
            }
            return;
        }
        let i = (to - 1) as usize;
        let now = self.now;
        let Some(up) = self.brokers[i].up.as_mut() else {
            return;
        };
        match msg {
            Msg::Fetch {
                from,
                leader_epoch,
                fetch_offset,
                last_epoch,
                broker_epoch,
            } => {
                let f = FollowerFetch {
                    replica: from,
                    broker_epoch: Some(broker_epoch),
                    current_leader_epoch: Some(leader_epoch),
                    fetch_offset,
                    last_fetched_epoch: last_epoch,
                    now_ms: now,
                };
                let (answer, actions) = up.core.follower_fetch(f, &History(&up.log));
                let resp = match answer {
                    Ok(FetchAnswer::Read { high_watermark }) => {
                        let end = up.log.log_end_offset();
                        let bytes = if fetch_offset < end {
                            Bytes::from(bytes_below_from(&up.log, fetch_offset, end, 4096))
                        } else {
                            Bytes::new()
                        };
                        Msg::FetchResp {
                            leader_epoch,
                            fetch_offset,
                            hw: high_watermark,
                            diverging: None,
                            bytes,
                            ok: true,
                        }
                    }
                    Ok(FetchAnswer::Diverging(d)) => Msg::FetchResp {
                        leader_epoch,
                        fetch_offset,
                        hw: up.core.high_watermark(),
                        diverging: Some(d),
                        bytes: Bytes::new(),
                        ok: true,
                    },
                    Err(_) => Msg::FetchResp {
                        leader_epoch,
                        fetch_offset,
                        hw: -1,
                        diverging: None,
                        bytes: Bytes::new(),
                        ok: false,
                    },
                };
                self.act(i, actions);
                self.send(to, from, resp);
            }
            Msg::FetchResp {
                leader_epoch,
                fetch_offset,
                hw,
                diverging,
                bytes,
                ok,
            } => {
                up.fetching_since = None;
                if !ok
                    || up.core.leader_epoch() != leader_epoch
                    || !matches!(up.core.role(), Role::Follower { .. })
                    || up.core.fetch_position() != Some(fetch_offset)
                {
                    return;
                }
                let mut actions = Vec::new();
                if diverging.is_none() && !bytes.is_empty() {
                    let a =
                        block_on(up.log.append_replicated(bytes, now as i64)).expect("replicate");
                    if self.trace {
                        eprintln!(
                            "{now:>6} broker {to} appends [{}, {}] from the leader",
                            a.base_offset, a.last_offset
                        );
                    }
                    block_on(up.log.wait_committed(a.last_offset)).expect("commit");
                    actions.extend(up.core.log_progress(ends(&up.log)).expect("progress"));
                }
                let answer = LeaderAnswer {
                    leader_epoch,
                    high_watermark: hw,
                    diverging,
                };
                match up.core.leader_answer(answer, &History(&up.log)) {
                    Ok(more) => actions.extend(more),
                    Err(e) => panic!("leader answer: {e}"),
                }
                self.act(i, actions);
            }
            Msg::AlterResp {
                leader_epoch,
                result,
            } => {
                if up.core.role() != Role::Leader || up.core.leader_epoch() != leader_epoch {
                    return;
                }
                let r = match result {
                    Ok(pm) if pm.partition_epoch > up.core.partition_epoch() => {
                        up.core.isr_committed(IsrUpdate {
                            leader_epoch: pm.leader_epoch,
                            partition_epoch: pm.partition_epoch,
                            isr: pm.isr,
                        })
                    }
                    Ok(_) => Ok(Vec::new()),
                    Err(_) => up.core.isr_rejected(leader_epoch),
                };
                if let Ok(actions) = r {
                    self.act(i, actions);
                }
            }
            Msg::Alter(_) | Msg::Heartbeat(_) => {}
        }
    }

    /// The leader takes one acks=all batch.
    fn produce(&mut self, i: usize) {
        let tag = self.next_tag;
        let now = self.now;
        let bug = self.bug;
        let Some(up) = self.brokers[i].up.as_mut() else {
            return;
        };
        let Ok(ticket) = up.core.admit_produce(Acks::All) else {
            return;
        };
        if up.core.check_batch(&ticket, None).is_err() {
            up.core.append_failed(ticket);
            return;
        }
        self.next_tag += 1;
        let b = batch::build(0, 1, 24, tag);
        let a = block_on(
            up.log
                .append(Bytes::from(b), up.core.leader_epoch(), now as i64),
        )
        .expect("append");
        block_on(up.log.wait_committed(a.last_offset)).expect("commit");
        if bug == Bug::AckEarly {
            self.acked.insert(a.base_offset, tag);
        }
        up.waiters.insert(ticket.waiter(), (a.base_offset, tag));
        let mut actions = up.core.appended(
            ticket,
            Appended {
                base_offset: a.base_offset,
                last_offset: a.last_offset,
                ident: None,
                duplicate: false,
                at_ms: now as i64,
            },
        );
        actions.extend(up.core.log_progress(ends(&up.log)).expect("progress"));
        self.act(i, actions);
    }

    fn step(&mut self, faults: bool) {
        self.now += STEP_MS;
        // Faults.
        if faults {
            // Under flush=never a crash loses what the broker acknowledged and had not
            // flushed: the guarantee is for one broker at a time, so crash only while every
            // other one runs and is in the ISR (holds every acknowledged record).
            let all_in = self.partition().isr.len() == N as usize
                && self
                    .brokers
                    .iter()
                    .all(|b| b.up.as_ref().is_some_and(|u| u.epoch.is_some()));
            if self.rng.chance(0.004) && (self.every_batch || all_in) {
                let i = self.rng.below(N as u64) as usize;
                if self.brokers[i].up.is_some() {
                    self.crash(i);
                }
            }
            if self.rng.chance(0.004) {
                let a = self.rng.below(N as u64 + 1) as i32;
                let b = 1 + self.rng.below(N as u64) as i32;
                if a != b {
                    self.t(|| format!("cut {a} <-> {b}"));
                    self.cut.insert((a.min(b), a.max(b)));
                }
            }
            if self.rng.chance(0.01) {
                self.cut.clear();
            }
        }
        for i in 0..N as usize {
            if self.brokers[i].up.is_none() && self.now >= self.brokers[i].down_until {
                self.start(i);
            }
        }
        // Messages due now, in delivery order.
        self.net.sort_by_key(|m| (m.0, m.1));
        let due = self.net.iter().take_while(|m| m.0 <= self.now).count();
        let msgs: Vec<_> = self.net.drain(..due).collect();
        for (_, _, from, to, msg) in msgs {
            self.deliver(from, to, msg);
        }
        // The controller.
        let recs = self.sessions.expire(&self.image, self.now);
        self.commit_records(recs);
        for i in 0..N as usize {
            let id = self.brokers[i].id;
            let linked = !self.cut.contains(&(CONTROLLER, id));
            let Some(up) = self.brokers[i].up.as_ref() else {
                continue;
            };
            // Registration (a direct call while the link is up).
            if up.epoch.is_none() && linked {
                let r = Registration {
                    id,
                    incarnation: up.incarnation,
                    host: "sim".into(),
                    port: 9000 + id as u16,
                    previous_epoch: -1,
                };
                if let Ok((epoch, recs)) = self.sessions.register(&self.image, &r, self.now) {
                    self.commit_records(recs);
                    if let Some(up) = self.brokers[i].up.as_mut() {
                        up.epoch = Some(epoch);
                    }
                }
            }
            // A process acts on partition metadata only once registered: until then the image
            // may still name its previous incarnation leader, and a second leader in that
            // epoch would write a history no follower can tell apart.
            let registered = self.brokers[i]
                .up
                .as_ref()
                .is_some_and(|u| u.epoch.is_some());
            if linked && registered {
                let pm = self.partition();
                self.learn(i, &pm);
            }
        }
        // Brokers.
        for i in 0..N as usize {
            let id = self.brokers[i].id;
            let now = self.now;
            let Some(up) = self.brokers[i].up.as_mut() else {
                continue;
            };
            let actions = up.core.tick(now);
            if let Some(epoch) = up.epoch {
                if now >= up.next_heartbeat {
                    up.next_heartbeat = now + HEARTBEAT_MS;
                    let hb = Heartbeat {
                        id,
                        epoch,
                        caught_up: up.known.is_some(),
                        want_shutdown: false,
                    };
                    self.send(id, CONTROLLER, Msg::Heartbeat(hb));
                }
            }
            let Some(up) = self.brokers[i].up.as_mut() else {
                continue;
            };
            if up.fetching_since.is_some_and(|t| now > t + 100) {
                up.fetching_since = None;
            }
            let resend = match &up.alter {
                _ if up.core.pending_isr().is_none() => {
                    up.alter = None;
                    None
                }
                Some((at, req)) if now > at + 100 => Some(req.clone()),
                _ => None,
            };
            if let Some(req) = resend {
                up.alter = Some((now, req.clone()));
                self.send(id, CONTROLLER, Msg::Alter(req));
            }
            let Some(up) = self.brokers[i].up.as_mut() else {
                continue;
            };
            let fetch = match (
                up.core.role(),
                up.core.fetch_position(),
                up.fetching_since,
                up.epoch,
            ) {
                (Role::Follower { leader }, Some(offset), None, Some(epoch)) => {
                    up.fetching_since = Some(now);
                    Some((
                        leader,
                        Msg::Fetch {
                            from: id,
                            leader_epoch: up.core.leader_epoch(),
                            fetch_offset: offset,
                            last_epoch: up.log.latest_epoch(),
                            broker_epoch: epoch,
                        },
                    ))
                }
                _ => None,
            };
            self.act(i, actions);
            if let Some((leader, msg)) = fetch {
                self.send(id, leader, msg);
            }
        }
        if faults && self.rng.chance(0.3) {
            let leader = self.partition().leader;
            if leader != NO_LEADER {
                self.produce((leader - 1) as usize);
            }
        }
    }

    /// The checks of a healed, quiet cluster.
    fn check(&mut self, seed: u64) {
        let pm = self.partition();
        assert!(
            pm.leader != NO_LEADER,
            "seed {seed}: no leader after healing: {pm:?}"
        );
        let leader = &self.brokers[(pm.leader - 1) as usize];
        let up = leader.up.as_ref().expect("the leader runs");
        let hw = up.core.high_watermark();
        let stored = tags_below(&up.log, up.log.log_end_offset());
        for (offset, tag) in &self.acked {
            assert!(
                *offset < hw,
                "seed {seed}: acknowledged offset {offset} not below the leader's HW {hw}"
            );
            assert_eq!(
                stored.get(offset),
                Some(tag),
                "seed {seed}: acknowledged record {tag} at offset {offset} lost (leader {})",
                pm.leader
            );
        }
        let reference = bytes_below(&up.log, hw);
        let leader_log_epochs = up.log.leader_epochs();
        for b in &self.brokers {
            let up = b.up.as_ref().expect("every broker runs");
            assert!(
                up.log.log_end_offset() >= hw,
                "seed {seed}: broker {} ends at {} below the HW {hw}",
                b.id,
                up.log.log_end_offset()
            );
            if bytes_below(&up.log, hw) != reference {
                eprintln!(
                    "leader epochs {:?} tags {:?}\nbroker {} epochs {:?} tags {:?}",
                    leader_log_epochs,
                    tags_below(
                        &self.brokers[(pm.leader - 1) as usize]
                            .up
                            .as_ref()
                            .expect("up")
                            .log,
                        hw
                    ),
                    b.id,
                    up.log.leader_epochs(),
                    tags_below(&up.log, hw)
                );
            }
            assert!(
                bytes_below(&up.log, hw) == reference,
                "seed {seed}: broker {} differs from leader {} below the HW {hw}",
                b.id,
                pm.leader
            );
        }
    }
}

/// Whole batches from `from` up to `end`, at most about `max_bytes` (at least one).
fn bytes_below_from(log: &Log, from: i64, end: i64, max_bytes: usize) -> Vec<u8> {
    block_on(async {
        let r = log.read(from, end, max_bytes, true).await.expect("read");
        let mut out = Vec::new();
        for b in r.batches {
            out.extend_from_slice(&b.to_bytes());
        }
        out
    })
}

/// Runs one seed; returns (acknowledged records, crashes, elections, truncations).
fn run(seed: u64, bug: Bug, trace: bool) -> [u64; 4] {
    let mut sim = Sim::new(seed, bug, trace);
    for _ in 0..1500 {
        sim.step(true);
    }
    // Heal: no more faults; every broker up, links whole, no drops; quiet until settled.
    sim.cut.clear();
    sim.drop_p = 0.0;
    for _ in 0..400 {
        sim.step(false);
    }
    sim.check(seed);
    [
        sim.acked.len() as u64,
        sim.crashes,
        sim.elections,
        sim.truncations,
    ]
}

fn bug() -> Bug {
    match std::env::var("CLUSTER_BUG").as_deref() {
        Ok("ack_early") => Bug::AckEarly,
        Ok("skip_truncate") => Bug::SkipTruncate,
        _ => Bug::None,
    }
}

#[test]
fn cluster_simulation() {
    let bug = bug();
    if let Ok(seed) = std::env::var("CLUSTER_SEED") {
        let seed: u64 = seed.parse().expect("CLUSTER_SEED is a number");
        let got = run(seed, bug, true);
        eprintln!("acknowledged, crashes, elections, truncations: {got:?}");
        return;
    }
    let seeds: u64 = std::env::var("CLUSTER_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let mut failed = Vec::new();
    let mut totals = [0u64; 4];
    for seed in 0..seeds {
        match std::panic::catch_unwind(|| run(seed, bug, false)) {
            Ok(got) => {
                for (t, g) in totals.iter_mut().zip(got) {
                    *t += g;
                }
            }
            Err(_) => {
                failed.push(seed);
                if bug == Bug::None {
                    break;
                }
            }
        }
    }
    eprintln!("{seeds} seeds: acknowledged, crashes, elections, truncations: {totals:?}; failing: {failed:?}");
    assert!(
        failed.is_empty(),
        "failing seeds {failed:?} (replay one with CLUSTER_SEED=n)"
    );
    // The runs reach what they are meant to check (else the checks would hold vacuously).
    assert!(totals.iter().all(|&t| t > 0), "{totals:?}");
}
