//! Property tests: random sequences of appends (the leader's and a follower's replicated
//! ones), reads, rolls, retention, truncations, reopen and crashes agree with a plain
//! in-memory model of the log, its data and its leader-epoch table.

mod common;

use bytes::Bytes;
use common::*;
use futures_lite::future::block_on;
use proptest::prelude::*;
use shardlog_engine::batch;
use shardlog_engine::io::sim::CrashMode;
use shardlog_engine::{FlushPolicy, LogConfig, PartitionLog, SimStorage};

#[derive(Clone, Debug)]
enum Op {
    Append {
        count: i32,
        value_bytes: usize,
        acks_all: bool,
    },
    Read {
        at: u16,
        max_bytes: usize,
    },
    Retention {
        keep_bytes: u64,
    },
    DeleteBefore {
        at: u16,
    },
    /// A follower's append of batches the "leader" numbered, maybe in a new epoch.
    Replicate {
        counts: Vec<i32>,
        value_bytes: usize,
        new_epoch: bool,
    },
    Truncate {
        at: u16,
    },
    Tick,
    Reopen,
    Crash {
        seed: u64,
        keep_all: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1..6i32, 0..900usize, any::<bool>()).prop_map(|(count, value_bytes, acks_all)| Op::Append { count, value_bytes, acks_all }),
        3 => (any::<u16>(), 1..20_000usize).prop_map(|(at, max_bytes)| Op::Read { at, max_bytes }),
        1 => (2_000..40_000u64).prop_map(|keep_bytes| Op::Retention { keep_bytes }),
        1 => any::<u16>().prop_map(|at| Op::DeleteBefore { at }),
        3 => (proptest::collection::vec(1..4i32, 1..4), 0..600usize, any::<bool>()).prop_map(|(counts, value_bytes, new_epoch)| Op::Replicate { counts, value_bytes, new_epoch }),
        2 => any::<u16>().prop_map(|at| Op::Truncate { at }),
        1 => Just(Op::Tick),
        1 => Just(Op::Reopen),
        1 => (any::<u64>(), any::<bool>()).prop_map(|(seed, keep_all)| Op::Crash { seed, keep_all }),
    ]
}

fn policy() -> impl Strategy<Value = FlushPolicy> {
    prop_oneof![
        Just(FlushPolicy::EveryBatch),
        Just(FlushPolicy::Never),
        Just(FlushPolicy::Interval { bytes: 3000, ms: 0 }),
    ]
}

/// The model: batches by base offset, with the bytes after the offset-dependent header fields.
#[derive(Default)]
struct Model {
    batches: Vec<(i64, i64, Vec<u8>)>,
    /// The leader epoch of each batch, by base offset.
    epoch_of: std::collections::BTreeMap<i64, i32>,
    start: i64,
    /// The epoch of the next appends.
    epoch: i32,
}

impl Model {
    /// The epoch table the batches imply: where each larger epoch starts.
    fn epochs(&self) -> Vec<(i32, i64)> {
        let mut t: Vec<(i32, i64)> = Vec::new();
        for b in &self.batches {
            let e = self.epoch_of[&b.0];
            if t.last().is_none_or(|&(l, _)| e > l) {
                t.push((e, b.0));
            }
        }
        t
    }
    /// Keeps the batches below `end`.
    fn cut(&mut self, end: i64) {
        self.batches.retain(|b| b.1 <= end);
        self.epoch_of.retain(|&base, _| base < end);
    }
    fn end(&self) -> i64 {
        self.batches.last().map_or(self.start, |b| b.1)
    }
    fn visible(&self) -> Vec<(i64, i64, Vec<u8>)> {
        self.batches
            .iter()
            .filter(|b| b.1 > self.start)
            .cloned()
            .collect()
    }
}

fn config(flush: FlushPolicy) -> LogConfig {
    LogConfig {
        flush,
        ..small_config()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn log_agrees_with_model(flush in policy(), ops in proptest::collection::vec(op(), 1..80)) {
        let mut disk = SimStorage::default();
        let mut log = open(&disk, config(flush));
        let mut model = Model::default();
        let mut tag = 0u8;
        for op in ops {
            match op {
                Op::Append { count, value_bytes, acks_all } => {
                    tag = tag.wrapping_add(1);
                    let b = tagged(count, value_bytes, i64::from(tag), tag);
                    let a = block_on(log.append(Bytes::copy_from_slice(&b), model.epoch, 0)).expect("append");
                    prop_assert_eq!(a.base_offset, model.end().max(a.base_offset));
                    if acks_all {
                        block_on(log.wait_committed(a.last_offset)).expect("commit");
                    } else {
                        block_on(log.wait_written(a.last_offset)).expect("written");
                    }
                    model.batches.push((a.base_offset, a.last_offset + 1, b[21..].to_vec()));
                    model.epoch_of.insert(a.base_offset, model.epoch);
                }
                Op::Replicate { counts, value_bytes, new_epoch } => {
                    if new_epoch {
                        model.epoch += 1;
                    }
                    let mut next = model.end().max(model.start);
                    let mut buf = Vec::new();
                    let mut added = Vec::new();
                    for count in counts {
                        tag = tag.wrapping_add(1);
                        let mut b = tagged(count, value_bytes, i64::from(tag), tag);
                        batch::assign(&mut b, next, model.epoch);
                        added.push((next, next + i64::from(count), b[21..].to_vec()));
                        next += i64::from(count);
                        buf.extend_from_slice(&b);
                    }
                    let r = block_on(log.append_replicated(Bytes::from(buf), 0)).expect("replicate");
                    prop_assert_eq!(r.last_offset + 1, next);
                    block_on(log.wait_written(r.last_offset)).expect("written");
                    for b in added {
                        model.epoch_of.insert(b.0, model.epoch);
                        model.batches.push(b);
                    }
                }
                Op::Truncate { at } => {
                    let end = model.end().max(model.start);
                    let target = model.start + i64::from(at) % (end - model.start + 1);
                    let holder = model.batches.iter().find(|b| b.0 <= target && target < b.1).map(|b| b.0);
                    let r = block_on(log.truncate_to(target));
                    match holder {
                        // A cut inside the batch the log start falls in is refused.
                        Some(base) if base < model.start => {
                            prop_assert!(r.is_err(), "cut at {} inside the start's batch", target);
                        }
                        Some(base) => {
                            prop_assert_eq!(r.expect("truncate"), base);
                            model.cut(base);
                        }
                        None => prop_assert_eq!(r.expect("truncate at the end"), end),
                    }
                }
                Op::Read { at, max_bytes } => {
                    let end = log.committed_end_offset();
                    let offset = model.start + i64::from(at) % (end - model.start + 1).max(1);
                    let r = block_on(log.read(offset, end, max_bytes, true)).expect("read");
                    let want: Vec<_> = model.batches.iter().filter(|b| b.1 > offset && b.0 < end).collect();
                    if offset < end {
                        prop_assert!(!r.batches.is_empty(), "nothing at {} < {}", offset, end);
                    }
                    for (got, want) in r.batches.iter().zip(want) {
                        let got = got.to_bytes();
                        let info = batch::validate(&got, usize::MAX).expect("valid");
                        prop_assert_eq!(info.base_offset, want.0);
                        prop_assert_eq!(&got[21..], &want.2[..]);
                    }
                    prop_assert!(r.bytes <= max_bytes || r.batches.len() == 1);
                }
                Op::Retention { keep_bytes } => {
                    let cfg = LogConfig { retention_bytes: Some(keep_bytes), ..config(flush) };
                    log.set_config(cfg);
                    block_on(log.apply_retention(0)).expect("retention");
                    log.set_config(config(flush));
                    let start = log.log_start_offset();
                    prop_assert!(start >= model.start);
                    model.start = start;
                }
                Op::DeleteBefore { at } => {
                    let committed = log.committed_end_offset();
                    let target = model.start + i64::from(at) % (committed - model.start + 1).max(1);
                    let start = block_on(log.delete_records_before(target)).expect("delete");
                    prop_assert_eq!(start, target.max(model.start));
                    model.start = start;
                }
                Op::Tick => block_on(log.tick(0)).expect("tick"),
                Op::Reopen => {
                    block_on(log.close()).expect("close");
                    log = open(&disk, config(flush));
                }
                Op::Crash { seed, keep_all } => {
                    // What the policy promised before the crash.
                    let durable = log.durable_end_offset();
                    let written = log.written_end_offset();
                    drop(log);
                    let mode = if keep_all { CrashMode::KeepAll } else { CrashMode::Torn { seed } };
                    disk = disk.crash(mode);
                    log = open(&disk, config(flush));
                    let end = log.log_end_offset();
                    let promised = if keep_all { written } else { durable };
                    prop_assert!(end >= promised, "lost promised data: end {} < {}", end, promised);
                    // Whatever survived is a prefix of the model: drop the rest from the model.
                    model.cut(end);
                    prop_assert_eq!(model.end().max(model.start), end.max(model.start));
                    model.start = model.start.max(log.log_start_offset());
                }
            }
            let end = log.log_end_offset();
            prop_assert_eq!(end, model.end().max(model.start));
            // The epochs that begin above the log start. (Entries at or below it may describe
            // data that a crash lost after DeleteRecords had moved the start past it, which
            // the model cannot know.)
            let start = log.log_start_offset();
            let epochs: Vec<_> = log.leader_epochs().into_iter().filter(|&(_, s)| s > start).collect();
            let want: Vec<_> = model.epochs().into_iter().filter(|&(_, s)| s > start).collect();
            prop_assert_eq!(epochs, want);
        }
        block_on(log.flush()).expect("flush");
        prop_assert_eq!(read_all(&log), model.visible());
        let _ = PartitionLog::<SimStorage>::log_end_offset;
    }
}
