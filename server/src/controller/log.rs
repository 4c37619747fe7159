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
//! Today's implementation, [`FileMetadataLog`], keeps the image itself as the snapshot: every
//! committed record produces a new image, written as one JSON file replaced atomically off
//! the shard (`Storage::write_file_atomic`) before the commit returns, in the same format
//! versions before the metadata log wrote, so their data directories open unchanged. It has
//! no separate log: the file is a snapshot at the last applied index.

use std::path::{Path, PathBuf};

use shardlog_engine::Storage;

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

/// The log implementation the broker runs.
pub type ControllerLog =
    crate::controller::raft_log::RaftMetadataLog<shardlog_engine::BrokerStorage>;

const FILE_NAME: &str = "cluster-metadata.json";

/// The single-node metadata log: the image as one JSON file (see the module docs).
pub struct FileMetadataLog<S: Storage> {
    path: PathBuf,
    storage: S,
    image: ClusterMeta,
}

impl<S: Storage> FileMetadataLog<S> {
    /// Loads `<dir>/cluster-metadata.json` (written by this or any earlier version) or starts
    /// empty; `storage` is what later commits write through.
    pub fn open(dir: &Path, storage: S) -> Result<Self, MetaError> {
        shardlog_engine::io::create_dir_all_durable(dir).map_err(|source| MetaError::Io {
            op: "create dir",
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        let image = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| MetaError::Corrupt {
                path: path.clone(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ClusterMeta::default(),
            Err(source) => {
                return Err(MetaError::Io {
                    op: "read",
                    path,
                    source,
                })
            }
        };
        Ok(Self {
            path,
            storage,
            image,
        })
    }

    /// Gives partitions from an image written before replication their single replica
    /// ([`ClusterMeta::upgrade_single_node`]); in memory, so it is repeated at every start
    /// until the next commit writes the image.
    pub fn upgrade_single_node(&mut self, node_id: i32) {
        self.image.upgrade_single_node(node_id);
    }

    /// Writes `image` atomically and durably (tmp write, fsync, rename, directory fsync; off
    /// the shard for the real disk).
    async fn persist(&self, image: &ClusterMeta) -> Result<(), MetaError> {
        let data = serde_json::to_vec_pretty(image).map_err(|e| MetaError::Corrupt {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        self.storage
            .write_file_atomic(&self.path, &data)
            .await
            .map_err(|source| MetaError::Io {
                op: "replace",
                path: self.path.clone(),
                source,
            })
    }
}

impl<S: Storage> MetadataLog for FileMetadataLog<S> {
    fn image(&self) -> &ClusterMeta {
        &self.image
    }

    async fn commit(
        &mut self,
        record: MetadataRecord,
    ) -> Result<Vec<CommittedRecord>, MetaLogError> {
        // The bound every implementation enforces, checked here too so that a record the
        // file accepts is one a replicated log would accept.
        record.encode()?;
        let mut next = self.image.clone();
        next.apply(&record);
        next.applied_index = self.image.applied_index + 1;
        self.persist(&next).await?;
        let index = next.applied_index;
        self.image = next;
        Ok(vec![CommittedRecord { index, record }])
    }
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
    use crate::controller::log::MetadataAuthority;
    use crate::controller::metadata::PRODUCER_ID_BLOCK;
    use shardlog_engine::GlommioStorage;

    fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F) {
        glommio::LocalExecutor::default().run(f());
    }

    fn opener(dir: &Path) -> impl Fn() -> std::future::Ready<FileMetadataLog<GlommioStorage>> {
        let dir = dir.to_path_buf();
        move || std::future::ready(FileMetadataLog::open(&dir, GlommioStorage).expect("open"))
    }

    #[test]
    fn file_log_commits_apply_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        run(|| conformance::commits_apply_in_order(opener(dir.path())));
    }

    #[test]
    fn file_log_restart_replays_to_the_same_image() {
        let dir = tempfile::tempdir().expect("tempdir");
        run(|| conformance::restart_replays_to_the_same_image(opener(dir.path())));
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        assert_eq!(names, [FILE_NAME], "no tmp file is left behind");
    }

    #[test]
    fn file_log_producer_ids_never_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        run(|| conformance::producer_ids_never_reused(opener(dir.path())));
    }

    /// A metadata file exactly as the broker wrote it before the metadata log existed (no
    /// applied index) opens with every topic, partition, leader epoch, config and the
    /// producer-id block end; the next commit keeps them and the file stays readable.
    #[test]
    fn data_directory_from_before_the_metadata_log_opens_unchanged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = r#"{
  "topics": {
    "orders": {
      "name": "orders",
      "id": 250622036839408135312370101040394568029,
      "partitions": [
        {
          "leader_epoch": 0
        },
        {
          "leader_epoch": 3
        }
      ],
      "configs": {
        "compression.type": "zstd",
        "retention.ms": "60000"
      }
    },
    "x.y-z_1": {
      "name": "x.y-z_1",
      "id": 1,
      "partitions": [
        {
          "leader_epoch": 0
        }
      ],
      "configs": {}
    }
  },
  "producer_id_block_end": 7000
}"#;
        std::fs::write(dir.path().join(FILE_NAME), old).expect("write");
        let log = FileMetadataLog::open(dir.path(), GlommioStorage).expect("open");
        let check = |m: &ClusterMeta| {
            assert_eq!(m.topics.len(), 2);
            let o = &m.topics["orders"];
            assert_eq!(o.id, 250622036839408135312370101040394568029);
            assert_eq!(
                o.partitions
                    .iter()
                    .map(|p| p.leader_epoch)
                    .collect::<Vec<_>>(),
                [0, 3]
            );
            assert_eq!(o.configs["compression.type"], "zstd");
            assert_eq!(o.configs["retention.ms"], "60000");
            assert_eq!(m.topics["x.y-z_1"].partitions.len(), 1);
            assert_eq!(m.producer_id_block_end, 7000);
        };
        check(log.image());
        assert_eq!(log.applied_index(), 0);
        run(move || async move {
            let mut a = MetadataAuthority::new(log);
            let id = a.allocate_producer_id().await.expect("allocate");
            assert_eq!(id, 7000, "ids continue after the old file's block");
            a.commit(MetadataRecord::CreateTopic {
                name: "new".into(),
                id: 5,
                assignments: vec![vec![1]; 1],
                configs: Default::default(),
            })
            .await
            .expect("commit");
        });
        let log = FileMetadataLog::open(dir.path(), GlommioStorage).expect("reopen");
        let mut m = log.image().clone();
        assert!(m.topics.remove("new").is_some());
        m.producer_id_block_end = 7000;
        check(&m);
        assert_eq!(log.image().producer_id_block_end, 8000);
        assert_eq!(log.applied_index(), 2);
        // The file is still the old format plus the applied index: the fields an earlier
        // version reads are all there.
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(FILE_NAME)).expect("read"))
                .expect("json");
        assert_eq!(v["topics"]["orders"]["partitions"][1]["leader_epoch"], 3);
        assert_eq!(v["producer_id_block_end"], 8000);
    }

    /// A commit whose write fails is not applied: the image, the index and the producer-id
    /// counter stay as they were, and the failure maps to KAFKA_STORAGE_ERROR.
    #[test]
    fn a_failed_write_applies_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let meta = dir.path().join("meta");
        let log = FileMetadataLog::open(&meta, GlommioStorage).expect("open");
        run(move || async move {
            let mut a = MetadataAuthority::new(log);
            assert_eq!(a.allocate_producer_id().await.expect("allocate"), 0);
            let before = a.image().clone();
            std::fs::remove_dir_all(&meta).expect("remove the log's directory");
            let err = a
                .commit(MetadataRecord::CreateTopic {
                    name: "t".into(),
                    id: 1,
                    assignments: vec![vec![1]; 1],
                    configs: Default::default(),
                })
                .await
                .expect_err("the write fails");
            assert!(matches!(err, MetaLogError::Storage(_)), "{err}");
            assert_eq!(err.error_code(), errors::KAFKA_STORAGE_ERROR);
            assert_eq!(a.image(), &before);
            // The rest of the block is still handed out from memory; the next block needs a
            // commit, which fails without handing out an id beyond the committed block.
            for want in 1..PRODUCER_ID_BLOCK {
                assert_eq!(a.allocate_producer_id().await.expect("in block"), want);
            }
            assert!(a.allocate_producer_id().await.is_err());
            assert_eq!(a.image(), &before);
        });
    }

    #[test]
    fn a_corrupt_file_is_refused_not_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(FILE_NAME), b"{\"topics\": ").expect("write");
        assert!(matches!(
            FileMetadataLog::open(dir.path(), GlommioStorage),
            Err(MetaError::Corrupt { .. })
        ));
    }

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
    }
}
