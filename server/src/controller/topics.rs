//! The topics a shard owns: applying a metadata change (open, reconfigure, remove logs),
//! retrying partitions that failed to open, closing everything at shutdown, and the periodic
//! tick (retention, producer-id expiry).

use std::rc::Rc;
use std::time::Duration;

use futures::StreamExt;
use shardlog_engine::Storage;

use crate::controller::metadata::{self, TopicMeta};
use crate::controller::records::MetadataRecord;
use crate::groups::offsets_log::{offsets_log_config, OFFSETS_TOPIC};
use crate::partition::Partition;
use crate::wire::errors;

use crate::mesh::routing::topic_dir;

/// Shortest wait before a partition taken offline by a storage error is opened again (see
/// [`Shard::take_offline`]): a disk that is still full fails it again at once, so it is not
/// tried more often than this.
const STORAGE_RETRY: Duration = Duration::from_secs(10);
use crate::mesh::shard::{Offline, Shard};

impl Shard {
    /// Applies a committed metadata record: updates the local copy of the image, then opens,
    /// reconfigures or removes the logs this shard owns.
    pub async fn apply(self: &Rc<Self>, record: MetadataRecord) {
        let changed = self.meta.borrow_mut().apply(&record);
        match &record {
            MetadataRecord::DeleteTopic { name, .. } => {
                if changed {
                    self.remove_topic(name).await;
                }
            }
            // Broker registrations and states change no log on this shard.
            MetadataRecord::ProducerIdBlock { .. }
            | MetadataRecord::RegisterBroker { .. }
            | MetadataRecord::BrokerState { .. }
            | MetadataRecord::UnregisterBroker { .. } => {}
            MetadataRecord::CreateTopic { name, .. }
            | MetadataRecord::CreatePartitions { name, .. }
            | MetadataRecord::PartitionChange { name, .. }
            | MetadataRecord::AlterConfigs { name, .. } => {
                if let Some(t) = self.topic(name) {
                    self.open_topic(&t).await;
                }
            }
        }
        // The group coordinator follows the leadership of the internal topic's partitions.
        if record_topic(&record) == Some(OFFSETS_TOPIC) {
            crate::groups::coordinator::follow_leadership(self);
        }
    }

    /// The log configuration partitions of `t` open with: the internal topic's own
    /// (fsync every batch, no retention: `crate::groups`), else the topic's.
    fn topic_log_config(&self, t: &TopicMeta) -> shardlog_engine::LogConfig {
        if t.name == OFFSETS_TOPIC {
            offsets_log_config(&self.cfg)
        } else {
            metadata::log_config(t, &self.cfg)
        }
    }

    /// Opens this shard's partitions of `t` that are not open yet; reconfigures the others.
    pub async fn open_topic(self: &Rc<Self>, t: &TopicMeta) {
        let config = self.topic_log_config(t);
        let compression = metadata::compression_policy(t, &self.cfg);
        for i in 0..t.partitions.len() as i32 {
            if self.owner(&t.name, i) != self.id || !self.hosts_replica(t, i) {
                continue;
            }
            if let Some(p) = self.partition(&t.name, i) {
                p.reconfigure(config.clone());
                p.compression.set(compression);
                self.apply_partition_meta(&p, t, i);
                continue;
            }
            // An offline partition waits for its retry (the tick's `retry_offline`): a
            // metadata change (its leadership moving away) does not reopen it at once.
            let waiting = self
                .offline
                .borrow()
                .get(&t.name, i)
                .is_some_and(|o| o.next_try > std::time::Instant::now());
            if waiting {
                continue;
            }
            self.open_partition(t, i).await;
        }
    }

    /// Opens one partition's log. On failure the partition is offline: Metadata shows it
    /// without a leader, requests for it get KAFKA_STORAGE_ERROR, and the shard's tick tries
    /// again every `partition_open_retry_ms` until it opens or its topic is deleted.
    pub(crate) async fn open_partition(self: &Rc<Self>, t: &TopicMeta, i: i32) -> bool {
        let config = self.topic_log_config(t);
        let dir = topic_dir(&self.cfg.data_dir, t);
        let opened = Partition::open(
            &t.name,
            i,
            dir.join(i.to_string()),
            dir.join(format!("{i}.producers.json")),
            config,
            self.replica_setup(t),
            &self.assignment_of(t, i),
            &self.cache_budget,
            &self.segment_files,
            &self.storage,
            &self.clock,
        )
        .await;
        let retry = Duration::from_millis(self.cfg.partition_open_retry_ms);
        match opened {
            Ok(p) => {
                self.limit_producers(&p, self.clock.now_ms());
                p.compression
                    .set(metadata::compression_policy(t, &self.cfg));
                self.partitions.borrow_mut().insert(&t.name, i, p.clone());
                self.follow(&p);
                if let Some(o) = self.offline.borrow_mut().remove(&t.name, i) {
                    tracing::info!(topic = %t.name, partition = i, attempts = o.attempts, "partition log opened; the partition is online again");
                    self.global.offline.set(&t.name, i, false);
                }
                true
            }
            Err(e) => {
                let mut offline = self.offline.borrow_mut();
                let entry = offline.get_or_insert_with(&t.name, i, || Offline {
                    attempts: 0,
                    next_try: std::time::Instant::now(),
                });
                entry.attempts += 1;
                entry.next_try = std::time::Instant::now() + retry;
                if entry.attempts == 1 {
                    tracing::error!(topic = %t.name, partition = i, error = %e, retry_ms = self.cfg.partition_open_retry_ms, "cannot open partition log; the partition is offline until a retry succeeds");
                    self.global.offline.set(&t.name, i, true);
                } else {
                    tracing::debug!(topic = %t.name, partition = i, attempts = entry.attempts, error = %e, "partition log still cannot be opened");
                }
                false
            }
        }
    }

    /// Whether partition `index` of `topic` has replicas on other brokers too.
    fn has_other_replicas(&self, topic: &str, index: i32) -> bool {
        let meta = self.meta.borrow();
        usize::try_from(index)
            .ok()
            .and_then(|i| meta.topics.get(topic)?.partitions.get(i).cloned())
            .is_some_and(|pm| pm.replicas.iter().any(|&r| r != self.cfg.node_id))
    }

    /// A partition whose log failed with a storage error (ENOSPC, EIO on an append or an
    /// fsync) and that has replicas on other brokers goes offline here: it stops leading and following, requests for it get
    /// KAFKA_STORAGE_ERROR, and the broker's heartbeats report it to the controller, which
    /// moves its leadership to another in-sync replica and drops this broker from its ISR.
    /// The log is dropped without a clean close (no flush, no clean marker): what is on the
    /// disk is what recovery finds when the retry (after `partition_open_retry_ms`, at least
    /// [`STORAGE_RETRY`]) or a restart opens it again; it then follows the leader and
    /// catches up.
    pub(crate) fn take_offline(&self, p: Rc<Partition>, error: &str) {
        let (topic, index) = (p.topic.clone(), p.index);
        if self.partitions.borrow_mut().remove(&topic, index).is_none() {
            return;
        }
        self.followers.point(&topic, index, None);
        let retry = Duration::from_millis(self.cfg.partition_open_retry_ms).max(STORAGE_RETRY);
        self.offline.borrow_mut().insert(
            &topic,
            index,
            Offline {
                attempts: 0,
                next_try: std::time::Instant::now() + retry,
            },
        );
        self.global.offline.set(&topic, index, true);
        tracing::error!(topic = %topic, partition = index, error, retry_ms = retry.as_millis() as u64, "storage error: partition offline on this broker; reporting it to the controller");
        // The appender task ends once the partition (its queue's sender) is dropped; waiting
        // produce requests still hold it and are answered now.
        p.went_offline();
        drop(p);
    }

    /// Tries again to open the offline partitions whose retry time has come.
    pub(crate) async fn retry_offline(self: &Rc<Self>) {
        let now = std::time::Instant::now();
        let due: Vec<(String, i32)> = self
            .offline
            .borrow()
            .iter()
            .filter(|(_, _, o)| o.next_try <= now)
            .map(|(t, i, _)| (t.to_string(), i))
            .collect();
        let (mut opened, mut failed) = (0usize, 0usize);
        for (topic, i) in due {
            let Some(t) = self
                .topic(&topic)
                .filter(|t| (i as usize) < t.partitions.len())
            else {
                self.offline.borrow_mut().remove(&topic, i);
                self.global.offline.set(&topic, i, false);
                continue;
            };
            if self.open_partition(&t, i).await {
                opened += 1;
            } else {
                failed += 1;
            }
        }
        if failed > 0 {
            tracing::warn!(
                shard = self.id,
                opened,
                still_offline = failed,
                "retried offline partitions"
            );
        }
    }

    /// Partitions of this shard that are offline (their log failed to open).
    pub fn offline_count(&self) -> usize {
        self.offline.borrow().len()
    }

    /// The error for a request naming a partition this shard does not have open:
    /// KAFKA_STORAGE_ERROR when it exists but its log failed to open (offline),
    /// NOT_LEADER_OR_FOLLOWER when it exists on other brokers only, else
    /// UNKNOWN_TOPIC_OR_PARTITION.
    pub fn missing_partition_error(&self, topic: &str, partition: i32) -> i16 {
        if self.offline.borrow().contains(topic, partition) {
            errors::KAFKA_STORAGE_ERROR
        } else if self.replica_elsewhere(topic, partition) {
            errors::NOT_LEADER_OR_FOLLOWER
        } else {
            errors::UNKNOWN_TOPIC_OR_PARTITION
        }
    }

    pub(crate) async fn remove_topic(&self, name: &str) {
        self.offline.borrow_mut().remove_topic(name);
        self.global.offline.remove_topic(name);
        let parts = self.partitions.borrow_mut().remove_topic(name);
        // Concurrently: releasing a log may wait for its appender task to notice the closed
        // queue, and removing it syncs the parent directory; one partition after another took
        // 35.8 s for the 2201 partitions of the standard benchmark's scenario 5.
        futures::stream::iter(parts)
            .for_each_concurrent(REMOVE_CONCURRENCY, |(index, p)| async move {
                let snapshot = p.snapshot_path().to_path_buf();
                let Some(log) = release_log(p).await else {
                    tracing::warn!(
                        topic = name,
                        partition = index,
                        "log still in use after deletion; its files are removed at next start"
                    );
                    return;
                };
                if let Err(e) = log.remove().await {
                    tracing::error!(topic = name, partition = index, error = %e, "removing deleted partition failed");
                }
                // Off the shard; a snapshot that was never written is already gone.
                if let Err(e) = self.storage.remove_file(&snapshot).await {
                    tracing::warn!(topic = name, partition = index, error = %e, "removing deleted partition's producer snapshot failed");
                }
            })
            .await;
    }

    /// Closes every log cleanly (flush, indexes, clean marker) after writing producer snapshots.
    pub async fn close_all(&self) {
        let all = self.partitions.borrow_mut().drain();
        for (topic, idx, p) in all {
            if let Err(e) = p.write_snapshot().await {
                tracing::warn!(topic, partition = idx, error = %e, "could not write producer snapshot");
            }
            match release_log(p).await {
                Some(log) => {
                    if let Err(e) = log.close().await {
                        tracing::error!(topic, partition = idx, error = %e, "closing log failed");
                    }
                }
                None => tracing::warn!(
                    topic,
                    partition = idx,
                    "log still in use at shutdown; not closed cleanly"
                ),
            }
        }
    }

    /// Applies `producer_id_expiration_ms` and `max_producer_ids_per_partition` to a
    /// partition's producer state; true when it forgot any (its snapshot is then stale).
    pub(crate) fn limit_producers(&self, p: &Partition, now: i64) -> bool {
        let mut st = p.producers.borrow_mut();
        let expiration = i64::try_from(self.cfg.producer_id_expiration_ms).unwrap_or(i64::MAX);
        let expired = st.expire(now, expiration);
        let evicted = st.set_max_ids(self.cfg.max_producer_ids_per_partition);
        if expired > 0 {
            crate::metrics::producer_ids_dropped(expired, true);
        }
        if evicted > 0 {
            crate::metrics::producer_ids_dropped(evicted, false);
        }
        if expired + evicted > 0 {
            tracing::info!(
                topic = %p.topic,
                partition = p.index,
                expired,
                evicted,
                remaining = st.len(),
                "forgot idle idempotent producers"
            );
        }
        expired + evicted > 0
    }

    /// Periodic per-shard work: `tick` every log, retention and producer snapshots now and
    /// then, producer-id expiry when `expiry_due`.
    pub async fn tick_all(self: &Rc<Self>, retention_due: bool, expiry_due: bool) {
        if !self.offline.borrow().is_empty() {
            self.retry_offline().await;
        }
        let now = self.clock.now_ms();
        let parts: Vec<Rc<Partition>> = self.partitions.borrow().values().cloned().collect();
        for p in parts {
            if let Some(error) = p.take_storage_failure() {
                if self.has_other_replicas(&p.topic, p.index) {
                    self.take_offline(p, &error);
                    continue;
                }
                // The only replica (RF 1, the single-node broker): going offline would move
                // nothing. It stays, refuses writes with KAFKA_STORAGE_ERROR, serves reads,
                // and takes writes again once the disk has room.
            }
            // A snapshot still holding forgotten producers is rewritten at once, so they do
            // not come back from it after a restart.
            if expiry_due && self.limit_producers(&p, now) {
                if let Err(e) = p.write_snapshot().await {
                    tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "could not write producer snapshot");
                }
            }
            if let Err(e) = p.tick(now).await {
                errors::log_error_code(&e, &p.topic, p.index);
            }
            if retention_due {
                match p.apply_retention(now).await {
                    Ok(r) if r.segments_deleted > 0 => {
                        tracing::info!(topic = %p.topic, partition = p.index, segments = r.segments_deleted, bytes = r.bytes_deleted, "retention deleted segments");
                    }
                    Ok(_) => {}
                    Err(e) => {
                        errors::log_error_code(&e, &p.topic, p.index);
                    }
                }
                if !p.producers.borrow().is_empty() {
                    if let Err(e) = p.write_snapshot().await {
                        tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "could not write producer snapshot");
                    }
                }
            }
        }
    }
}

/// The topic a record is about, if any.
fn record_topic(record: &MetadataRecord) -> Option<&str> {
    match record {
        MetadataRecord::CreateTopic { name, .. }
        | MetadataRecord::CreatePartitions { name, .. }
        | MetadataRecord::PartitionChange { name, .. }
        | MetadataRecord::AlterConfigs { name, .. }
        | MetadataRecord::DeleteTopic { name, .. } => Some(name),
        MetadataRecord::ProducerIdBlock { .. }
        | MetadataRecord::RegisterBroker { .. }
        | MetadataRecord::BrokerState { .. }
        | MetadataRecord::UnregisterBroker { .. } => None,
    }
}

/// Removes a deleted topic's directory (its partitions' data directories are on their way to
/// the background deleter already) through the same paced deleter, off the shard.
pub(crate) async fn remove_topic_dir(dir: &std::path::Path) {
    let d = dir.to_path_buf();
    let r = glommio::executor()
        .spawn_blocking(move || {
            shardlog_engine::io::deleter::remove_dir_in_background(&d)?;
            match d.parent() {
                Some(logs) => std::fs::File::open(logs)?.sync_all(),
                None => Ok(()),
            }
        })
        .await;
    if let Err(e) = r {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a deleted topic's directory; it is removed at next start");
    }
}

/// Waits (bounded) until nobody else holds the partition, then takes its log.
/// Partitions of a deleted topic released and removed at once.
pub(crate) const REMOVE_CONCURRENCY: usize = 64;

pub(crate) async fn release_log(mut p: Rc<Partition>) -> Option<crate::partition::Log> {
    for attempt in 0..500 {
        match Rc::try_unwrap(p) {
            Ok(part) => {
                // Dropping the partition drops the appender's sender; the appender task holds
                // a clone of the log until it sees the closed channel.
                let mut log = part.into_log();
                for attempt in 0..500 {
                    match Rc::try_unwrap(log) {
                        Ok(l) => return Some(l),
                        Err(still) => {
                            log = still;
                            let_others_finish(attempt).await;
                        }
                    }
                }
                return None;
            }
            Err(still) => {
                p = still;
                let_others_finish(attempt).await;
            }
        }
    }
    None
}

/// Waits for other tasks on this shard to drop what they hold. The holder is usually a task
/// that is already woken (the appender seeing its queue closed), so the first waits only yield
/// to it; a 10 ms sleep from the start made every release take at least 10 ms, and a shutdown
/// with a thousand partitions spend seconds in it.
pub(crate) async fn let_others_finish(attempt: u32) {
    if attempt < 3 {
        futures_lite::future::yield_now().await;
    } else {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
}
