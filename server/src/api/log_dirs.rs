//! DescribeLogDirs (API 35): how many bytes each partition holds on disk, and how large and
//! how full the volume under the data directory is.
//!
//! Kafka tools (`kafka-log-dirs`, `AdminClient.describeLogDirs`, kafka-python's
//! `describe_log_dirs`) and `shardlog topic describe` read partition sizes from it. A broker
//! here has exactly one log directory, the data directory (`data_dir`), reported as an absolute
//! path like Kafka's `File.getAbsolutePath`; every partition, `__consumer_offsets` included,
//! lives under it.
//!
//! The sizes are the engine's own count of segment bytes (`PartitionLog::size_bytes`), asked
//! of the shard that owns each partition; the volume's total and usable bytes (v4) come from
//! `statvfs(2)` on the data directory, run on the executor's blocking pool because a stat of
//! a stalled filesystem may sleep. As in Kafka, a partition or topic the broker does not hold
//! is left out of the answer (not an error), a null topic list means every partition, and the
//! offset lag of a leader's log is 0 (its high watermark never passes its end).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use futures::future;
use futures::FutureExt;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{
    ApiKey, DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::api::common::Pending;
use crate::mesh::messages::{ShardReq, ShardResp};
use crate::mesh::shard::Shard;
use crate::wire::errors;
use crate::wire::protocol;

/// Size and free space of the volume holding a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VolumeSpace {
    pub total_bytes: u64,
    /// What an unprivileged writer may still use (`f_bavail`), as Java's `getUsableSpace`.
    pub usable_bytes: u64,
}

/// `statvfs(2)` of `dir`.
pub fn volume_space(dir: &Path) -> std::io::Result<VolumeSpace> {
    let c = CString::new(dir.as_os_str().as_bytes()).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has a NUL byte")
    })?;
    // SAFETY: a zeroed statvfs is a valid value; statvfs fills it from a NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and outlives the call; `st` is a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let frag = st.f_frsize as u64;
    Ok(VolumeSpace {
        total_bytes: (st.f_blocks as u64).saturating_mul(frag),
        usable_bytes: (st.f_bavail as u64).saturating_mul(frag),
    })
}

/// The log directory as clients see it: `data_dir` made absolute (not resolved).
fn absolute(dir: &Path) -> PathBuf {
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// Groups (topic, partition, bytes) rows by topic, topics and partitions ascending.
fn by_topic(rows: Vec<(String, i32, u64)>) -> Vec<DescribeLogDirsTopic> {
    let mut topics: BTreeMap<String, Vec<(i32, u64)>> = BTreeMap::new();
    for (t, p, size) in rows {
        topics.entry(t).or_default().push((p, size));
    }
    topics
        .into_iter()
        .map(|(name, mut parts)| {
            parts.sort_unstable();
            let mut t = DescribeLogDirsTopic::default();
            t.name = TopicName(StrBytes::from_string(name));
            t.partitions = parts
                .into_iter()
                .map(|(index, size)| {
                    let mut p = DescribeLogDirsPartition::default();
                    p.partition_index = index;
                    p.partition_size = i64::try_from(size).unwrap_or(i64::MAX);
                    p.offset_lag = 0;
                    p.is_future_key = false;
                    p
                })
                .collect();
            t
        })
        .collect()
}

/// (topic, partition indexes) a shard is asked about.
type TopicPartitions = Vec<(String, Vec<i32>)>;

/// Places the request: asks the owner of each named partition (every shard for a null list)
/// for its sizes; the answer phase adds the volume's space and encodes the response.
pub async fn describe_log_dirs(
    shard: &Rc<Shard>,
    v: i16,
    corr: i32,
    req: DescribeLogDirsRequest,
) -> Pending {
    // Per owning shard, the (topic, partitions) it is asked about; `None`: all of its own.
    let mut asks: BTreeMap<usize, Option<TopicPartitions>> = BTreeMap::new();
    match req.topics {
        None => {
            for target in 0..shard.shards {
                asks.insert(target, None);
            }
        }
        Some(topics) => {
            for t in topics {
                let name = t.topic.0.to_string();
                let mut per: BTreeMap<usize, Vec<i32>> = BTreeMap::new();
                for p in t.partitions {
                    per.entry(shard.owner(&name, p)).or_default().push(p);
                }
                for (target, parts) in per {
                    asks.entry(target)
                        .or_insert_with(|| Some(Vec::new()))
                        .get_or_insert_with(Vec::new)
                        .push((name.clone(), parts));
                }
            }
        }
    }
    let mut waits = Vec::with_capacity(asks.len());
    for (target, topics) in asks {
        waits.push(shard.send(target, ShardReq::LogSizes { topics }).await);
    }
    let dir = shard.cfg.data_dir.clone();
    async move {
        let log_dir = absolute(&dir);
        let space = {
            let dir = dir.clone();
            glommio::executor()
                .spawn_blocking(move || volume_space(&dir))
                .await
        };
        let mut rows = Vec::new();
        for answer in future::join_all(waits).await {
            match answer {
                ShardResp::LogSizes(r) => rows.extend(r),
                // Only while shutting down: that shard's partitions are left out.
                _ => tracing::debug!("describe log dirs: a shard did not answer"),
            }
        }
        let mut result = DescribeLogDirsResult::default();
        result.log_dir = StrBytes::from_string(log_dir.to_string_lossy().into_owned());
        match space {
            Ok(space) => {
                result.error_code = errors::NONE;
                result.total_bytes = i64::try_from(space.total_bytes).unwrap_or(i64::MAX);
                result.usable_bytes = i64::try_from(space.usable_bytes).unwrap_or(i64::MAX);
                result.topics = by_topic(rows);
            }
            Err(e) => {
                // As Kafka does for a log directory it cannot read: the error, no topics.
                tracing::warn!(dir = %log_dir.display(), error = %e, "describe log dirs: statvfs of the data directory failed: KAFKA_STORAGE_ERROR");
                result.error_code = errors::KAFKA_STORAGE_ERROR;
                result.total_bytes = -1;
                result.usable_bytes = -1;
            }
        }
        let mut r = DescribeLogDirsResponse::default();
        r.error_code = errors::NONE;
        r.results = vec![result];
        match protocol::encode_response(ApiKey::DescribeLogDirs, v, corr, &r) {
            Ok(b) => Some(vec![b]),
            Err(e) => {
                tracing::error!(version = v, error = %e, "cannot encode DescribeLogDirs response");
                None
            }
        }
    }
    .boxed_local()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_grouped_by_topic_in_order() {
        let topics = by_topic(vec![
            ("b".into(), 1, 10),
            ("a".into(), 2, 20),
            ("b".into(), 0, 5),
            ("a".into(), 0, 0),
        ]);
        let flat: Vec<(String, Vec<(i32, i64)>)> = topics
            .iter()
            .map(|t| {
                (
                    t.name.0.to_string(),
                    t.partitions
                        .iter()
                        .map(|p| (p.partition_index, p.partition_size))
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            flat,
            vec![
                ("a".to_string(), vec![(0, 0), (2, 20)]),
                ("b".to_string(), vec![(0, 5), (1, 10)]),
            ]
        );
    }

    #[test]
    fn volume_space_of_a_real_directory() {
        let dir = tempfile::tempdir().unwrap();
        let s = volume_space(dir.path()).unwrap();
        assert!(s.total_bytes > 0);
        assert!(s.usable_bytes <= s.total_bytes);
        assert!(volume_space(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn log_dir_is_absolute() {
        assert!(absolute(Path::new("data")).is_absolute());
        assert_eq!(absolute(Path::new("/var/x")), PathBuf::from("/var/x"));
    }
}
