//! The metadata log: where committed metadata changes live, behind the [`MetadataLog`] trait.
//!
//! The metadata authority (shard 0, [`crate::controller::authority`]) validates an admin
//! operation against the log's image, turns it into one [`MetadataRecord`] and hands it to
//! [`MetadataLog::commit`], which returns once the record is committed (durable wherever the
//! implementation keeps it) and applied to the image, with every record applied by that call
//! in log order. The authority then sends those records to every shard, which apply them to
//! their own copy of the image with the same pure [`ClusterMeta::apply`]. Callers see only
//! the trait, so a replicated log (raft over `shardlog-quorum`) replaces the file without
//! touching them.
//!
//! The implementation is [`RaftMetadataLog`](crate::controller::raft_log::RaftMetadataLog):
//! the log replicated by the controller quorum (a single voter on a single node). The JSON
//! file earlier versions kept the image in (`cluster-metadata.json`) is read once, as that
//! log's first snapshot, and not written any more.

use crate::controller::metadata::{ClusterMeta, MetaError, PRODUCER_ID_BLOCK};
use crate::controller::records::{MetadataRecord, RecordError};
use crate::wire::errors;

/// A record as committed: its position in the log (1, 2, ...) and the record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedRecord {
    pub index: u64,
    pub record: MetadataRecord,
}

/// Why a record was not committed.
#[derive(Debug, thiserror::Error)]
pub enum MetaLogError {
    /// This node is not the controller leader; `leader` is the node id to forward to, when
    /// known. The file log never returns it (it is always its own leader).
    #[error("not the controller leader (leader: {leader:?})")]
    NotController { leader: Option<u64> },
    /// The proposal was accepted but leadership changed before it committed: it may or may
    /// not appear in the log later, so the caller answers as Kafka does when the controller
    /// moves under a request.
    #[error("proposal at index {index} was not committed before leadership changed")]
    NotCommitted { index: u64 },
    /// The record cannot be encoded (validation keeps records far below the limits).
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The log could not be written durably; nothing was applied.
    #[error(transparent)]
    Storage(#[from] MetaError),
    /// The replicated log stopped (a write failed mid-cycle, or a committed entry could not
    /// be read): no further change commits until the broker restarts.
    #[error("metadata log stopped: {0}")]
    Broken(String),
}

impl MetaLogError {
    /// The Kafka error code an admin response carries for this failure.
    pub fn error_code(&self) -> i16 {
        match self {
            Self::NotController { .. } | Self::NotCommitted { .. } => errors::NOT_CONTROLLER,
            Self::Record(_) | Self::Storage(_) | Self::Broken(_) => errors::KAFKA_STORAGE_ERROR,
        }
    }
}

/// The committed metadata: an image built by applying committed records in order, and the
/// way to commit one more.
///
/// Contract (checked by the conformance suite in this module's tests, run on every
/// implementation):
/// * [`commit`](Self::commit) returns `Ok` only once the record is committed durably and
///   applied to [`image`](Self::image); the returned records are every record applied during
///   the call, in log order, with strictly increasing indices, ending with the proposed one
///   (a replicated log may have applied records other controllers committed before it);
/// * on `Err` the image is unchanged by the proposed record (a replicated log may still have
///   applied others' records; they are not lost, the next `commit` returns them);
/// * opening the log again after a restart (snapshot plus replay) gives the same image and
///   applied index as before it.
///
/// Single-threaded like the shard that owns it: the futures need not be `Send`.
#[allow(async_fn_in_trait)]
pub trait MetadataLog {
    /// The image as of the last applied record.
    fn image(&self) -> &ClusterMeta;

    /// Index of the last record applied to the image (0 when none ever was).
    fn applied_index(&self) -> u64 {
        self.image().applied_index
    }

    /// Proposes `record` and waits until it is committed and applied (see the trait docs).
    async fn commit(
        &mut self,
        record: MetadataRecord,
    ) -> Result<Vec<CommittedRecord>, MetaLogError>;
}

/// The metadata log as the authority uses it, plus this broker's current block of producer
/// ids and how far it handed them out (in memory only: a restart starts a new block).
pub struct MetadataAuthority<L> {
    log: L,
    next_producer_id: i64,
    /// End (exclusive) of this broker's block; `next_producer_id == block_end`: none left.
    block_end: i64,
}

impl<L: MetadataLog> MetadataAuthority<L> {
    pub fn new(log: L) -> Self {
        Self {
            log,
            next_producer_id: 0,
            block_end: 0,
        }
    }

    pub fn log(&self) -> &L {
        &self.log
    }

    pub fn log_mut(&mut self) -> &mut L {
        &mut self.log
    }

    /// The committed metadata image.
    pub fn image(&self) -> &ClusterMeta {
        self.log.image()
    }

    /// Commits one validated record (see [`MetadataLog::commit`]).
    pub async fn commit(
        &mut self,
        record: MetadataRecord,
    ) -> Result<Vec<CommittedRecord>, MetaLogError> {
        self.log.commit(record).await
    }

    /// A new producer id; commits a new block when this broker's block is used up.
    pub async fn allocate_producer_id(&mut self) -> Result<i64, MetaLogError> {
        if let Some(id) = self.take_producer_id() {
            return Ok(id);
        }
        let ((start, end), _) = self.commit_producer_block().await?;
        self.set_producer_block(start, end);
        self.take_producer_id()
            .ok_or(MetaLogError::NotCommitted { index: 0 })
    }

    /// The next id of this broker's block, if any is left.
    pub fn take_producer_id(&mut self) -> Option<i64> {
        (self.next_producer_id < self.block_end).then(|| {
            self.next_producer_id += 1;
            self.next_producer_id - 1
        })
    }

    /// Commits the next block of [`PRODUCER_ID_BLOCK`] ids after every block committed so
    /// far (ids below the committed end may have been handed out, by any broker, before a
    /// restart); returns it as `(start, end)` and the records the commit applied. On the
    /// controller only.
    pub async fn commit_producer_block(
        &mut self,
    ) -> Result<((i64, i64), Vec<CommittedRecord>), MetaLogError> {
        let start = self.log.image().producer_id_block_end;
        let block_end = start + PRODUCER_ID_BLOCK;
        let records = self
            .log
            .commit(MetadataRecord::ProducerIdBlock { block_end })
            .await?;
        Ok(((start, block_end), records))
    }

    /// Makes `[start, end)` this broker's block (committed by the controller for it).
    pub fn set_producer_block(&mut self, start: i64, end: i64) {
        self.next_producer_id = start;
        self.block_end = end;
    }
}

#[cfg(test)]
pub(crate) mod conformance {
    //! The [`MetadataLog`] contract as tests, generic over the implementation: each takes a
    //! function that opens (or reopens, after a "restart") the log under test in one place.

    use std::collections::BTreeMap;
    use std::future::Future;

    use super::*;
    use crate::controller::log::MetadataAuthority;
    use crate::controller::metadata::PRODUCER_ID_BLOCK;

    fn records() -> Vec<MetadataRecord> {
        let cfg = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
        vec![
            MetadataRecord::CreateTopic {
                name: "a".into(),
                id: 1,
                assignments: vec![vec![1]; 2],
                configs: cfg("retention.ms", "5"),
            },
            MetadataRecord::CreateTopic {
                name: "b".into(),
                id: 2,
                assignments: vec![vec![1]; 1],
                configs: BTreeMap::new(),
            },
            MetadataRecord::CreatePartitions {
                name: "a".into(),
                id: 1,
                first: 2,
                assignments: vec![vec![1]; 2],
            },
            MetadataRecord::AlterConfigs {
                name: "b".into(),
                id: 2,
                configs: cfg("segment.ms", "9"),
            },
            MetadataRecord::ProducerIdBlock { block_end: 1000 },
            MetadataRecord::DeleteTopic {
                name: "a".into(),
                id: 1,
            },
            // The same name again, a new topic: the earlier records about "a" do not touch it.
            MetadataRecord::CreateTopic {
                name: "a".into(),
                id: 3,
                assignments: vec![vec![1]; 1],
                configs: BTreeMap::new(),
            },
        ]
    }

    /// Commit returns the record at the next index, in order, and the image is the fold of
    /// `ClusterMeta::apply` over everything committed.
    pub async fn commits_apply_in_order<L, F, Fut>(open: F)
    where
        L: MetadataLog,
        F: Fn() -> Fut,
        Fut: Future<Output = L>,
    {
        let mut log = open().await;
        assert_eq!(log.applied_index(), 0);
        let mut expected = ClusterMeta::default();
        let mut last = 0;
        for r in records() {
            let done = log.commit(r.clone()).await.expect("commit");
            let mine = done.last().expect("at least the proposed record");
            assert_eq!(mine.record, r, "the proposed record is the last applied");
            for c in &done {
                assert!(c.index > last, "indices increase: {} after {last}", c.index);
                last = c.index;
                expected.apply(&c.record);
            }
            assert_eq!(log.applied_index(), last);
            expected.applied_index = last;
            assert_eq!(log.image(), &expected, "image after {r:?}");
        }
        assert_eq!(log.image().topics["a"].id, 3);
        assert_eq!(log.image().topics["b"].configs["segment.ms"], "9");
    }

    /// A reopened log has the image and applied index it had, and goes on from there.
    pub async fn restart_replays_to_the_same_image<L, F, Fut>(open: F)
    where
        L: MetadataLog,
        F: Fn() -> Fut,
        Fut: Future<Output = L>,
    {
        let mut log = open().await;
        for r in records() {
            log.commit(r).await.expect("commit");
        }
        let before = log.image().clone();
        drop(log);
        let mut log = open().await;
        assert_eq!(log.image(), &before);
        assert_eq!(log.applied_index(), before.applied_index);
        let done = log
            .commit(MetadataRecord::DeleteTopic {
                name: "b".into(),
                id: 2,
            })
            .await
            .expect("commit after restart");
        assert!(done[0].index > before.applied_index);
        drop(log);
        let log = open().await;
        assert!(!log.image().topics.contains_key("b"));
        assert!(log.image().topics.contains_key("a"));
    }

    /// Producer ids handed out before a restart are never handed out again after it, and a
    /// block is committed only once per `PRODUCER_ID_BLOCK` ids.
    pub async fn producer_ids_never_reused<L, F, Fut>(open: F)
    where
        L: MetadataLog,
        F: Fn() -> Fut,
        Fut: Future<Output = L>,
    {
        let mut seen = std::collections::HashSet::new();
        for round in 0..3 {
            let mut a = MetadataAuthority::new(open().await);
            let start = a.log().image().producer_id_block_end;
            for _ in 0..(PRODUCER_ID_BLOCK + 5) {
                let id = a.allocate_producer_id().await.expect("allocate");
                assert!(seen.insert(id), "producer id {id} reused in round {round}");
            }
            assert_eq!(
                a.log().image().producer_id_block_end - start,
                2 * PRODUCER_ID_BLOCK,
                "PRODUCER_ID_BLOCK + 5 ids take two blocks"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_kafka_codes() {
        assert_eq!(
            MetaLogError::NotController { leader: Some(2) }.error_code(),
            errors::NOT_CONTROLLER
        );
        assert_eq!(
            MetaLogError::NotCommitted { index: 4 }.error_code(),
            errors::NOT_CONTROLLER
        );
        assert_eq!(
            MetaLogError::Record(RecordError::Truncated).error_code(),
            errors::KAFKA_STORAGE_ERROR
        );
        assert_eq!(
            MetaLogError::Broken("eio".into()).error_code(),
            errors::KAFKA_STORAGE_ERROR
        );
    }
}
