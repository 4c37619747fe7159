//! Leader epochs: where each epoch starts in a log, the leader's diverging-epoch check on a
//! follower fetch, and the follower's truncation decision (KIP-101, KIP-279, Fetch v12+).
//!
//! Both sides are pure functions over an [`EpochHistory`], the one question they ask of a log:
//! "the largest epoch <= E you hold, and where it ends". The engine's
//! `PartitionLog::end_offset_for_epoch` answers it with the same semantics; [`EpochTable`] is an
//! in-memory history for tests and simulations.
//!
//! Why it is exact: one leader per epoch, and a leader only appends in its epoch, so an entry is
//! identified by (epoch, offset), and two logs holding the same (epoch, offset) agree on every
//! offset before it (followers only append after truncating to a prefix of their leader). So
//! the common prefix of a follower and its leader ends, for the epoch `E` the leader names, at
//! the smaller of the two ends of `E`; and when the follower does not hold `E`, everything it
//! has above its largest epoch below `E` lies in epochs the leader never saw.

use crate::{LeaderEpoch, Offset};

/// The leader-epoch history of a log.
pub trait EpochHistory {
    /// `(epoch, end)` for the largest epoch `<= epoch` this log holds, where `end` is the start
    /// of the next epoch or the log end; `None` when every epoch it holds is larger (or it holds
    /// none).
    fn end_offset_for_epoch(&self, epoch: LeaderEpoch) -> Option<(LeaderEpoch, Offset)>;
    /// The latest epoch in the log (what a follower sends as `last_fetched_epoch`).
    fn latest_epoch(&self) -> Option<LeaderEpoch>;
    /// The first offset of the earliest epoch held.
    fn earliest_epoch_start(&self) -> Option<Offset>;
}

/// An epoch and where it ends, as carried by Fetch's `diverging_epoch` and
/// OffsetForLeaderEpoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEndOffset {
    pub epoch: LeaderEpoch,
    pub end_offset: Offset,
}

/// The leader's check of a follower fetch that carries `last_fetched_epoch` (Fetch v12+):
/// `Some(_)` tells the follower where its log diverges (no data is sent), `None` lets the fetch
/// read on. `leader_log_start` stands in for the start of the leader's first epoch when it holds
/// none (an empty log).
pub fn diverging_epoch(
    leader: &impl EpochHistory,
    leader_log_start: Offset,
    fetch_offset: Offset,
    last_fetched_epoch: LeaderEpoch,
) -> Option<EpochEndOffset> {
    let (epoch, end_offset) = leader
        .end_offset_for_epoch(last_fetched_epoch)
        // Every epoch the leader holds is newer (Kafka's epoch cache answers the same): what
        // the follower holds of that epoch can only match below the leader's first epoch.
        .unwrap_or_else(|| {
            let first = leader.earliest_epoch_start().unwrap_or(leader_log_start);
            (last_fetched_epoch, first)
        });
    (epoch < last_fetched_epoch || end_offset < fetch_offset)
        .then_some(EpochEndOffset { epoch, end_offset })
}

/// Where a follower truncates after a diverging-epoch answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncation {
    /// The new log end.
    pub to: Offset,
    /// False when the follower did not hold the leader's epoch: it truncated to the end of its
    /// largest epoch below it and must fetch again (with that epoch) to learn the rest.
    pub complete: bool,
}

/// The follower's decision (KIP-279): `local_end` is its log end.
pub fn truncation_for(
    diverging: EpochEndOffset,
    local: &impl EpochHistory,
    local_end: Offset,
) -> Truncation {
    match local.end_offset_for_epoch(diverging.epoch) {
        Some((epoch, end)) if epoch == diverging.epoch => Truncation {
            to: end.min(diverging.end_offset).min(local_end),
            complete: true,
        },
        Some((_, end)) => Truncation {
            to: end.min(local_end),
            complete: false,
        },
        // Every epoch held here is newer than the leader's answer, so none of it is in the
        // leader's log (a log without epochs at all is empty).
        None => Truncation {
            to: local
                .earliest_epoch_start()
                .unwrap_or(local_end)
                .min(diverging.end_offset)
                .min(local_end),
            complete: true,
        },
    }
}

/// An in-memory epoch history: `(epoch, start offset)` in increasing order, plus the log end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochTable {
    starts: Vec<(LeaderEpoch, Offset)>,
    log_end: Offset,
}

impl EpochTable {
    pub fn new(log_end: Offset) -> EpochTable {
        EpochTable {
            starts: Vec::new(),
            log_end,
        }
    }

    pub fn log_end(&self) -> Offset {
        self.log_end
    }

    /// Records `count` entries of `epoch` appended at the log end. An epoch older than the
    /// latest is refused (`false`): a log's epochs never go back.
    pub fn append(&mut self, epoch: LeaderEpoch, count: i64) -> bool {
        match self.starts.last() {
            Some(&(last, _)) if epoch < last => return false,
            Some(&(last, _)) if epoch == last => {}
            _ => self.starts.push((epoch, self.log_end)),
        }
        self.log_end += count.max(0);
        true
    }

    /// Cuts the log at `end` (no-op when `end` is past the log end).
    pub fn truncate_to(&mut self, end: Offset) {
        if end >= self.log_end {
            return;
        }
        self.starts.retain(|&(_, start)| start < end);
        self.log_end = end;
    }
}

impl EpochHistory for EpochTable {
    fn end_offset_for_epoch(&self, epoch: LeaderEpoch) -> Option<(LeaderEpoch, Offset)> {
        let i = self.starts.partition_point(|&(e, _)| e <= epoch);
        if i == 0 {
            return None;
        }
        let (e, _) = self.starts[i - 1];
        let end = self.starts.get(i).map_or(self.log_end, |&(_, start)| start);
        Some((e, end))
    }

    fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.starts.last().map(|&(e, _)| e)
    }

    fn earliest_epoch_start(&self) -> Option<Offset> {
        self.starts.first().map(|&(_, s)| s)
    }
}
