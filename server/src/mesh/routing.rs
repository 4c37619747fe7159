//! Which shard owns a partition, and where a topic's partitions live on disk.

use std::path::PathBuf;

use crate::controller::metadata::TopicMeta;

/// Shard that owns `(topic, partition)` among `shards`.
///
/// The internal `__consumer_offsets` partitions are the exception: partition `p` is on shard
/// `p % shards`, with the groups stored in it (see `crate::groups`).
pub fn shard_for(topic: &str, partition: i32, shards: usize) -> usize {
    if topic == crate::groups::offsets_log::OFFSETS_TOPIC {
        return shardlog_coordinator::shard_for_offsets_partition(
            partition.max(0) as usize,
            shards,
        );
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in topic
        .as_bytes()
        .iter()
        .chain(partition.to_be_bytes().iter())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % shards.max(1) as u64) as usize
}

/// Longest topic name whose directory is `<name>~<id>`: 222 + 33 = 255 bytes, the file name
/// limit of ext4 and xfs.
pub const FULL_NAME_DIR_MAX: usize = 255 - 33;
/// Characters of a longer name kept in its directory name (`<prefix>+~<id>`). 192 + 34 = 226
/// bytes leaves room for the `.deleted-<nanoseconds>` a deletion appends (29 bytes).
pub const LONG_NAME_DIR_PREFIX: usize = 192;

/// Directory of a topic's partitions: the id keeps a re-created topic from seeing old data.
///
/// `<name>~<32 hex id>` when that fits in a file name (names up to 222 characters: the form
/// every version wrote, so existing data directories open unchanged); for the longer names
/// Kafka allows (up to 249), `<first 192 characters>+~<32 hex id>`. `+` is not a legal topic
/// character, so the two forms never collide, and the id alone makes a directory unique.
pub fn topic_dir(data_dir: &std::path::Path, t: &TopicMeta) -> PathBuf {
    data_dir.join("logs").join(topic_dir_name(&t.name, t.id))
}

/// The file name of a topic's directory (see [`topic_dir`]).
pub fn topic_dir_name(name: &str, id: u128) -> String {
    if name.len() <= FULL_NAME_DIR_MAX {
        format!("{name}~{id:032x}")
    } else {
        // Topic names are ASCII (validated), so any byte index is a character boundary; `get`
        // keeps this total for any string.
        let prefix = name.get(..LONG_NAME_DIR_PREFIX).unwrap_or(name);
        format!("{prefix}+~{id:032x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_is_stable_and_spreads() {
        let mut counts = [0usize; 4];
        for p in 0..400 {
            let s = shard_for("topic", p, 4);
            assert_eq!(s, shard_for("topic", p, 4));
            counts[s] += 1;
        }
        assert!(counts.iter().all(|&c| c > 50), "{counts:?}");
        assert_eq!(shard_for("x", 3, 1), 0);
    }

    #[test]
    fn topic_directory_names_fit_for_every_legal_name() {
        let id = 0x0123_4567_89ab_cdef_0123_4567_89ab_cdef_u128;
        // The form every earlier version wrote, unchanged (existing data directories).
        assert_eq!(
            topic_dir_name("orders", id),
            "orders~0123456789abcdef0123456789abcdef"
        );
        let at_limit = "a".repeat(FULL_NAME_DIR_MAX);
        assert_eq!(
            topic_dir_name(&at_limit, id),
            format!("{at_limit}~{id:032x}")
        );
        for len in 1..=249 {
            let name = "n".repeat(len);
            let dir = topic_dir_name(&name, id);
            assert!(dir.len() <= 255, "{len}: {} bytes", dir.len());
            assert!(dir.ends_with(&format!("~{id:032x}")));
            if len > FULL_NAME_DIR_MAX {
                // Room for the suffix a deletion appends (`.deleted-` and 20 digits).
                assert!(dir.len() + 29 <= 255, "{len}: {} bytes", dir.len());
                assert!(dir.starts_with(&name[..LONG_NAME_DIR_PREFIX]));
                assert!(dir.contains("+~"));
            }
        }
        // Two long names sharing their first 192 characters differ by id.
        let a = format!("{}a", "x".repeat(240));
        let b = format!("{}b", "x".repeat(240));
        assert_ne!(topic_dir_name(&a, 1), topic_dir_name(&b, 2));
    }
}
