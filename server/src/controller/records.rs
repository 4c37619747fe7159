//! The metadata log's records: every committed change to the cluster metadata is one
//! [`MetadataRecord`], and the in-memory image ([`ClusterMeta`]) is whatever applying them in
//! order gives ([`ClusterMeta::apply`]).
//!
//! Records are what a replicated metadata log will carry between controllers and keep on
//! disk, so they have a stable, versioned, bounded byte encoding ([`MetadataRecord::encode`],
//! [`MetadataRecord::decode`]) independent of the Rust types: byte 0 is the format version,
//! byte 1 the record kind, then the kind's fields in big-endian order; strings are a `u16`
//! length and UTF-8, config maps a `u16` count and pairs. A record is at most
//! [`MAX_RECORD_BYTES`] (the quorum's entry limit is far above it), decoding refuses anything
//! longer, truncated, with trailing bytes, an unknown version or kind, or invalid UTF-8.
//!
//! Records name topics by name *and* id, so a record about an earlier topic of the same name
//! (deleted and created again) changes nothing. Applying is deterministic and idempotent: a
//! record whose effect is already in the image is a no-op, which is what a replay after a
//! crash between "applied" and "snapshot written" needs.

use std::collections::BTreeMap;

use crate::controller::metadata::{BrokerMeta, ClusterMeta, PartitionMeta, TopicMeta};

/// Current version of the record encoding.
pub const RECORD_VERSION: u8 = 1;

/// Largest encoded record. Validated records are far smaller (a topic name is at most 249
/// bytes, config values are short integers or names); the bound is for decoding what a peer
/// or a damaged file hands us.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;

/// Most configs one record may carry (far above the number of known topic configs).
const MAX_CONFIGS: usize = 256;

/// Most broker ids in one replica list (Kafka has no limit; a replica list this long would be
/// a bug, and it keeps a record far below [`MAX_RECORD_BYTES`]).
pub const MAX_REPLICAS: usize = 64;

const KIND_CREATE_TOPIC: u8 = 1;
const KIND_CREATE_PARTITIONS: u8 = 2;
const KIND_ALTER_CONFIGS: u8 = 3;
const KIND_DELETE_TOPIC: u8 = 4;
const KIND_PRODUCER_IDS: u8 = 5;
const KIND_REGISTER_BROKER: u8 = 6;
const KIND_BROKER_STATE: u8 = 7;
const KIND_PARTITION_CHANGE: u8 = 8;
const KIND_UNREGISTER_BROKER: u8 = 9;

/// One committed change to the cluster metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataRecord {
    /// A new topic, one partition per assignment (its replicas, preferred leader first; the
    /// first leads, all are in sync, epochs 0), and its explicit configs.
    CreateTopic {
        name: String,
        id: u128,
        assignments: Vec<Vec<i32>>,
        configs: BTreeMap<String, String>,
    },
    /// New partitions `first..first + assignments.len()` appended to a topic of exactly
    /// `first` partitions, one per assignment (like `CreateTopic`'s).
    CreatePartitions {
        name: String,
        id: u128,
        first: u32,
        assignments: Vec<Vec<i32>>,
    },
    /// The topic's explicit configs are now exactly `configs`.
    AlterConfigs {
        name: String,
        id: u128,
        configs: BTreeMap<String, String>,
    },
    DeleteTopic {
        name: String,
        id: u128,
    },
    /// Producer ids below `block_end` have been handed out (or may have been).
    ProducerIdBlock {
        block_end: i64,
    },
    /// A broker registered (KIP-631) with the epoch the controller gave it; it starts fenced.
    RegisterBroker {
        id: i32,
        epoch: i64,
        incarnation: u128,
        host: String,
        port: u16,
    },
    /// A registered broker's fencing and controlled-shutdown state; a no-op unless `epoch`
    /// is its current one.
    BrokerState {
        id: i32,
        epoch: i64,
        fenced: bool,
        shutting_down: bool,
    },
    /// A partition's whole new replication state; applies only if `partition_epoch` is newer
    /// than the image's.
    PartitionChange {
        name: String,
        id: u128,
        partition: u32,
        leader: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        replicas: Vec<i32>,
        isr: Vec<i32>,
        elr: Vec<i32>,
    },
    /// A broker left the cluster; a no-op unless `epoch` is its current one.
    UnregisterBroker {
        id: i32,
        epoch: i64,
    },
}

impl MetadataRecord {
    /// The topic a record changes, if any.
    pub fn topic(&self) -> Option<&str> {
        match self {
            Self::CreateTopic { name, .. }
            | Self::CreatePartitions { name, .. }
            | Self::AlterConfigs { name, .. }
            | Self::DeleteTopic { name, .. }
            | Self::PartitionChange { name, .. } => Some(name),
            Self::ProducerIdBlock { .. }
            | Self::RegisterBroker { .. }
            | Self::BrokerState { .. }
            | Self::UnregisterBroker { .. } => None,
        }
    }

    /// The record's bytes, or why it cannot be encoded (a string or map beyond the format's
    /// limits, or a record above [`MAX_RECORD_BYTES`]).
    pub fn encode(&self) -> Result<Vec<u8>, RecordError> {
        let mut w = Vec::with_capacity(64);
        w.push(RECORD_VERSION);
        match self {
            Self::CreateTopic {
                name,
                id,
                assignments,
                configs,
            } => {
                w.push(KIND_CREATE_TOPIC);
                put_str(&mut w, name)?;
                w.extend_from_slice(&id.to_be_bytes());
                put_assignments(&mut w, assignments)?;
                put_map(&mut w, configs)?;
            }
            Self::CreatePartitions {
                name,
                id,
                first,
                assignments,
            } => {
                w.push(KIND_CREATE_PARTITIONS);
                put_str(&mut w, name)?;
                w.extend_from_slice(&id.to_be_bytes());
                w.extend_from_slice(&first.to_be_bytes());
                put_assignments(&mut w, assignments)?;
            }
            Self::AlterConfigs { name, id, configs } => {
                w.push(KIND_ALTER_CONFIGS);
                put_str(&mut w, name)?;
                w.extend_from_slice(&id.to_be_bytes());
                put_map(&mut w, configs)?;
            }
            Self::DeleteTopic { name, id } => {
                w.push(KIND_DELETE_TOPIC);
                put_str(&mut w, name)?;
                w.extend_from_slice(&id.to_be_bytes());
            }
            Self::ProducerIdBlock { block_end } => {
                w.push(KIND_PRODUCER_IDS);
                w.extend_from_slice(&block_end.to_be_bytes());
            }
            Self::RegisterBroker {
                id,
                epoch,
                incarnation,
                host,
                port,
            } => {
                w.push(KIND_REGISTER_BROKER);
                w.extend_from_slice(&id.to_be_bytes());
                w.extend_from_slice(&epoch.to_be_bytes());
                w.extend_from_slice(&incarnation.to_be_bytes());
                put_str(&mut w, host)?;
                w.extend_from_slice(&port.to_be_bytes());
            }
            Self::BrokerState {
                id,
                epoch,
                fenced,
                shutting_down,
            } => {
                w.push(KIND_BROKER_STATE);
                w.extend_from_slice(&id.to_be_bytes());
                w.extend_from_slice(&epoch.to_be_bytes());
                w.push(u8::from(*fenced) | u8::from(*shutting_down) << 1);
            }
            Self::PartitionChange {
                name,
                id,
                partition,
                leader,
                leader_epoch,
                partition_epoch,
                replicas,
                isr,
                elr,
            } => {
                w.push(KIND_PARTITION_CHANGE);
                put_str(&mut w, name)?;
                w.extend_from_slice(&id.to_be_bytes());
                w.extend_from_slice(&partition.to_be_bytes());
                w.extend_from_slice(&leader.to_be_bytes());
                w.extend_from_slice(&leader_epoch.to_be_bytes());
                w.extend_from_slice(&partition_epoch.to_be_bytes());
                put_ids(&mut w, replicas)?;
                put_ids(&mut w, isr)?;
                put_ids(&mut w, elr)?;
            }
            Self::UnregisterBroker { id, epoch } => {
                w.push(KIND_UNREGISTER_BROKER);
                w.extend_from_slice(&id.to_be_bytes());
                w.extend_from_slice(&epoch.to_be_bytes());
            }
        }
        if w.len() > MAX_RECORD_BYTES {
            return Err(RecordError::TooLarge(w.len()));
        }
        Ok(w)
    }

    /// Parses one record's bytes (exactly one record, nothing after it).
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(RecordError::TooLarge(bytes.len()));
        }
        let mut r = Reader(bytes);
        let version = r.u8()?;
        if version != RECORD_VERSION {
            return Err(RecordError::UnknownVersion(version));
        }
        let kind = r.u8()?;
        let rec = match kind {
            KIND_CREATE_TOPIC => Self::CreateTopic {
                name: r.str()?,
                id: r.u128()?,
                assignments: r.assignments()?,
                configs: r.map()?,
            },
            KIND_CREATE_PARTITIONS => Self::CreatePartitions {
                name: r.str()?,
                id: r.u128()?,
                first: r.u32()?,
                assignments: r.assignments()?,
            },
            KIND_ALTER_CONFIGS => Self::AlterConfigs {
                name: r.str()?,
                id: r.u128()?,
                configs: r.map()?,
            },
            KIND_DELETE_TOPIC => Self::DeleteTopic {
                name: r.str()?,
                id: r.u128()?,
            },
            KIND_PRODUCER_IDS => Self::ProducerIdBlock {
                block_end: r.i64()?,
            },
            KIND_REGISTER_BROKER => Self::RegisterBroker {
                id: r.i32()?,
                epoch: r.i64()?,
                incarnation: r.u128()?,
                host: r.str()?,
                port: r.u16()?,
            },
            KIND_BROKER_STATE => {
                let id = r.i32()?;
                let epoch = r.i64()?;
                let flags = r.u8()?;
                if flags > 3 {
                    return Err(RecordError::FieldTooLong("broker state flags"));
                }
                Self::BrokerState {
                    id,
                    epoch,
                    fenced: flags & 1 != 0,
                    shutting_down: flags & 2 != 0,
                }
            }
            KIND_PARTITION_CHANGE => Self::PartitionChange {
                name: r.str()?,
                id: r.u128()?,
                partition: r.u32()?,
                leader: r.i32()?,
                leader_epoch: r.i32()?,
                partition_epoch: r.i32()?,
                replicas: r.ids()?,
                isr: r.ids()?,
                elr: r.ids()?,
            },
            KIND_UNREGISTER_BROKER => Self::UnregisterBroker {
                id: r.i32()?,
                epoch: r.i64()?,
            },
            k => return Err(RecordError::UnknownKind(k)),
        };
        if !r.0.is_empty() {
            return Err(RecordError::Trailing(r.0.len()));
        }
        Ok(rec)
    }
}

/// Why a record's bytes cannot be produced or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("metadata record of {0} bytes exceeds the limit of {MAX_RECORD_BYTES}")]
    TooLarge(usize),
    #[error("metadata record ends early")]
    Truncated,
    #[error("unknown metadata record version {0}")]
    UnknownVersion(u8),
    #[error("unknown metadata record kind {0}")]
    UnknownKind(u8),
    #[error("{0} bytes after the end of a metadata record")]
    Trailing(usize),
    #[error("metadata record string is not UTF-8")]
    NotUtf8,
    #[error("metadata record field too long: {0}")]
    FieldTooLong(&'static str),
}

fn put_str(w: &mut Vec<u8>, s: &str) -> Result<(), RecordError> {
    let len = u16::try_from(s.len()).map_err(|_| RecordError::FieldTooLong("string"))?;
    w.extend_from_slice(&len.to_be_bytes());
    w.extend_from_slice(s.as_bytes());
    Ok(())
}

fn put_map(w: &mut Vec<u8>, m: &BTreeMap<String, String>) -> Result<(), RecordError> {
    if m.len() > MAX_CONFIGS {
        return Err(RecordError::FieldTooLong("configs"));
    }
    w.extend_from_slice(&(m.len() as u16).to_be_bytes());
    for (k, v) in m {
        put_str(w, k)?;
        put_str(w, v)?;
    }
    Ok(())
}

fn put_ids(w: &mut Vec<u8>, ids: &[i32]) -> Result<(), RecordError> {
    if ids.len() > MAX_REPLICAS {
        return Err(RecordError::FieldTooLong("replica list"));
    }
    w.extend_from_slice(&(ids.len() as u16).to_be_bytes());
    for id in ids {
        w.extend_from_slice(&id.to_be_bytes());
    }
    Ok(())
}

fn put_assignments(w: &mut Vec<u8>, a: &[Vec<i32>]) -> Result<(), RecordError> {
    let n = u32::try_from(a.len()).map_err(|_| RecordError::FieldTooLong("assignments"))?;
    w.extend_from_slice(&n.to_be_bytes());
    for ids in a {
        put_ids(w, ids)?;
    }
    Ok(())
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(RecordError::Truncated)?;
        self.0 = rest;
        Ok(*head)
    }
    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, RecordError> {
        self.take().map(u16::from_be_bytes)
    }
    fn u32(&mut self) -> Result<u32, RecordError> {
        self.take().map(u32::from_be_bytes)
    }
    fn i32(&mut self) -> Result<i32, RecordError> {
        self.take().map(i32::from_be_bytes)
    }
    fn ids(&mut self) -> Result<Vec<i32>, RecordError> {
        let n = usize::from(self.u16()?);
        if n > MAX_REPLICAS {
            return Err(RecordError::FieldTooLong("replica list"));
        }
        (0..n).map(|_| self.i32()).collect()
    }
    fn assignments(&mut self) -> Result<Vec<Vec<i32>>, RecordError> {
        let n = self.u32()? as usize;
        // Each assignment takes at least its 2-byte count: a count the remaining bytes
        // cannot hold is refused before allocating for it.
        if n > self.0.len() / 2 {
            return Err(RecordError::Truncated);
        }
        (0..n).map(|_| self.ids()).collect()
    }
    fn i64(&mut self) -> Result<i64, RecordError> {
        self.take().map(i64::from_be_bytes)
    }
    fn u128(&mut self) -> Result<u128, RecordError> {
        self.take().map(u128::from_be_bytes)
    }
    fn str(&mut self) -> Result<String, RecordError> {
        let len = usize::from(self.u16()?);
        if self.0.len() < len {
            return Err(RecordError::Truncated);
        }
        let (s, rest) = self.0.split_at(len);
        self.0 = rest;
        String::from_utf8(s.to_vec()).map_err(|_| RecordError::NotUtf8)
    }
    fn map(&mut self) -> Result<BTreeMap<String, String>, RecordError> {
        let n = usize::from(self.u16()?);
        if n > MAX_CONFIGS {
            return Err(RecordError::FieldTooLong("configs"));
        }
        let mut m = BTreeMap::new();
        for _ in 0..n {
            let k = self.str()?;
            let v = self.str()?;
            m.insert(k, v);
        }
        Ok(m)
    }
}

impl ClusterMeta {
    /// Applies one committed record to the image; returns whether anything changed.
    ///
    /// Pure and deterministic: the same records in the same order give the same image on every
    /// shard and every node. A record whose precondition does not hold in the image (the
    /// topic is missing or has another id, the partitions are already there, the producer-id
    /// block is already covered) is a no-op rather than an error, so replaying records already
    /// reflected in a snapshot is harmless.
    pub fn apply(&mut self, record: &MetadataRecord) -> bool {
        match record {
            MetadataRecord::CreateTopic {
                name,
                id,
                assignments,
                configs,
            } => {
                if self.topics.contains_key(name) {
                    return false;
                }
                self.topics.insert(
                    name.clone(),
                    TopicMeta {
                        name: name.clone(),
                        id: *id,
                        partitions: assignments
                            .iter()
                            .map(|r| PartitionMeta::new(r.clone()))
                            .collect(),
                        configs: configs.clone(),
                    },
                );
                true
            }
            // Applies only to a topic of exactly `first` partitions, so a replay is a no-op.
            MetadataRecord::CreatePartitions {
                name,
                id,
                first,
                assignments,
            } => match self.topics.get_mut(name) {
                Some(t)
                    if t.id == *id
                        && t.partitions.len() == *first as usize
                        && !assignments.is_empty() =>
                {
                    t.partitions
                        .extend(assignments.iter().map(|r| PartitionMeta::new(r.clone())));
                    true
                }
                _ => false,
            },
            MetadataRecord::AlterConfigs { name, id, configs } => match self.topics.get_mut(name) {
                Some(t) if t.id == *id && t.configs != *configs => {
                    t.configs = configs.clone();
                    true
                }
                _ => false,
            },
            MetadataRecord::DeleteTopic { name, id } => {
                if self.topics.get(name).is_some_and(|t| t.id == *id) {
                    self.topics.remove(name);
                    true
                } else {
                    false
                }
            }
            MetadataRecord::ProducerIdBlock { block_end } => {
                if *block_end > self.producer_id_block_end {
                    self.producer_id_block_end = *block_end;
                    true
                } else {
                    false
                }
            }
            MetadataRecord::RegisterBroker {
                id,
                epoch,
                incarnation,
                host,
                port,
            } => {
                // A registration never goes back to an older epoch.
                if self.brokers.get(id).is_some_and(|b| b.epoch >= *epoch) {
                    return false;
                }
                self.brokers.insert(
                    *id,
                    BrokerMeta {
                        id: *id,
                        epoch: *epoch,
                        incarnation: *incarnation,
                        host: host.clone(),
                        port: *port,
                        fenced: true,
                        shutting_down: false,
                    },
                );
                true
            }
            MetadataRecord::BrokerState {
                id,
                epoch,
                fenced,
                shutting_down,
            } => match self.brokers.get_mut(id) {
                Some(b)
                    if b.epoch == *epoch
                        && (b.fenced, b.shutting_down) != (*fenced, *shutting_down) =>
                {
                    b.fenced = *fenced;
                    b.shutting_down = *shutting_down;
                    true
                }
                _ => false,
            },
            MetadataRecord::UnregisterBroker { id, epoch } => {
                if self.brokers.get(id).is_some_and(|b| b.epoch == *epoch) {
                    self.brokers.remove(id);
                    true
                } else {
                    false
                }
            }
            MetadataRecord::PartitionChange {
                name,
                id,
                partition,
                leader,
                leader_epoch,
                partition_epoch,
                replicas,
                isr,
                elr,
            } => {
                let Some(p) = self
                    .topics
                    .get_mut(name)
                    .filter(|t| t.id == *id)
                    .and_then(|t| t.partitions.get_mut(*partition as usize))
                else {
                    return false;
                };
                if *partition_epoch <= p.partition_epoch {
                    return false;
                }
                *p = PartitionMeta {
                    leader_epoch: *leader_epoch,
                    partition_epoch: *partition_epoch,
                    leader: *leader,
                    replicas: replicas.clone(),
                    isr: isr.clone(),
                    elr: elr.clone(),
                };
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configs(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn all_kinds() -> Vec<MetadataRecord> {
        vec![
            MetadataRecord::CreateTopic {
                name: "t".into(),
                id: 7 << 100 | 3,
                assignments: vec![vec![1, 2, 3], vec![2, 3, 1]],
                configs: configs(&[("retention.ms", "5"), ("cleanup.policy", "delete")]),
            },
            MetadataRecord::CreatePartitions {
                name: "t".into(),
                id: 7 << 100 | 3,
                first: 2,
                assignments: vec![vec![3, 1, 2], vec![1, 2, 3], vec![2, 3, 1]],
            },
            MetadataRecord::RegisterBroker {
                id: 2,
                epoch: 11,
                incarnation: 5 << 90 | 1,
                host: "127.0.0.1".into(),
                port: 9192,
            },
            MetadataRecord::BrokerState {
                id: 2,
                epoch: 11,
                fenced: false,
                shutting_down: true,
            },
            MetadataRecord::PartitionChange {
                name: "t".into(),
                id: 7 << 100 | 3,
                partition: 1,
                leader: 3,
                leader_epoch: 1,
                partition_epoch: 1,
                replicas: vec![2, 3, 1],
                isr: vec![3, 1],
                elr: vec![2],
            },
            MetadataRecord::UnregisterBroker { id: 2, epoch: 11 },
            MetadataRecord::AlterConfigs {
                name: "t".into(),
                id: 7 << 100 | 3,
                configs: configs(&[("segment.bytes", "4096")]),
            },
            MetadataRecord::ProducerIdBlock { block_end: 3000 },
            MetadataRecord::DeleteTopic {
                name: "t".into(),
                id: 7 << 100 | 3,
            },
        ]
    }

    #[test]
    fn every_record_kind_round_trips() {
        for r in all_kinds() {
            let bytes = r.encode().expect("encode");
            assert_eq!(bytes[0], RECORD_VERSION);
            assert_eq!(MetadataRecord::decode(&bytes), Ok(r));
        }
    }

    /// The byte layout is a format: pin one record's bytes so a change to it is noticed.
    #[test]
    fn encoding_is_stable() {
        let r = MetadataRecord::CreatePartitions {
            name: "ab".into(),
            id: 1,
            first: 3,
            assignments: vec![vec![1, -2]],
        };
        let mut want = vec![1, 2, 0, 2, b'a', b'b'];
        want.extend_from_slice(&1u128.to_be_bytes());
        want.extend_from_slice(&[0, 0, 0, 3]);
        want.extend_from_slice(&[0, 0, 0, 1, 0, 2, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xfe]);
        assert_eq!(r.encode().expect("encode"), want);
    }

    #[test]
    fn malformed_bytes_are_refused() {
        let good = all_kinds()[0].encode().expect("encode");
        for cut in 0..good.len() {
            assert_eq!(
                MetadataRecord::decode(&good[..cut]),
                Err(RecordError::Truncated),
                "cut at {cut}"
            );
        }
        let mut v = good.clone();
        v[0] = 2;
        assert_eq!(
            MetadataRecord::decode(&v),
            Err(RecordError::UnknownVersion(2))
        );
        let mut v = good.clone();
        v[1] = 99;
        assert_eq!(
            MetadataRecord::decode(&v),
            Err(RecordError::UnknownKind(99))
        );
        let mut v = good.clone();
        v.push(0);
        assert_eq!(MetadataRecord::decode(&v), Err(RecordError::Trailing(1)));
        let mut v = good.clone();
        v[4] = 0xff; // first byte of the name "t"
        assert_eq!(MetadataRecord::decode(&v), Err(RecordError::NotUtf8));
        let big = vec![1u8; MAX_RECORD_BYTES + 1];
        assert_eq!(
            MetadataRecord::decode(&big),
            Err(RecordError::TooLarge(MAX_RECORD_BYTES + 1))
        );
        // A config count beyond the bound is refused before reading the pairs.
        let mut v = vec![1, KIND_ALTER_CONFIGS, 0, 1, b't'];
        v.extend_from_slice(&1u128.to_be_bytes());
        v.extend_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(
            MetadataRecord::decode(&v),
            Err(RecordError::FieldTooLong("configs"))
        );
        // A replica list beyond the bound, written or read.
        let many = MetadataRecord::CreateTopic {
            name: "t".into(),
            id: 1,
            assignments: vec![vec![1; MAX_REPLICAS + 1]],
            configs: BTreeMap::new(),
        };
        assert_eq!(
            many.encode(),
            Err(RecordError::FieldTooLong("replica list"))
        );
        let mut v = vec![1, KIND_CREATE_TOPIC, 0, 1, b't'];
        v.extend_from_slice(&1u128.to_be_bytes());
        v.extend_from_slice(&1u32.to_be_bytes());
        v.extend_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(
            MetadataRecord::decode(&v),
            Err(RecordError::FieldTooLong("replica list"))
        );
        // An assignment count the bytes cannot hold is refused before allocating.
        let mut v = vec![1, KIND_CREATE_TOPIC, 0, 1, b't'];
        v.extend_from_slice(&1u128.to_be_bytes());
        v.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(MetadataRecord::decode(&v), Err(RecordError::Truncated));
        let long = MetadataRecord::DeleteTopic {
            name: "x".repeat(70_000),
            id: 1,
        };
        assert_eq!(long.encode(), Err(RecordError::FieldTooLong("string")));
    }

    #[test]
    fn apply_builds_the_image() {
        let mut m = ClusterMeta::default();
        let recs = all_kinds();
        assert!(m.apply(&recs[0]));
        let t = &m.topics["t"];
        assert_eq!((t.id, t.partitions.len()), (7 << 100 | 3, 2));
        assert_eq!(t.configs["retention.ms"], "5");
        assert_eq!(t.partitions[1], PartitionMeta::new(vec![2, 3, 1]));
        assert_eq!(
            (t.partitions[1].leader, &t.partitions[1].isr),
            (2, &vec![2, 3, 1])
        );
        assert!(m.apply(&recs[1]));
        assert_eq!(m.topics["t"].partitions.len(), 5);
        assert_eq!(m.topics["t"].partitions[4].replicas, vec![2, 3, 1]);
        assert!(m.apply(&recs[2]));
        assert!(m.brokers[&2].fenced, "a registered broker starts fenced");
        assert!(m.apply(&recs[3]));
        assert!(!m.brokers[&2].fenced && m.brokers[&2].shutting_down);
        assert_eq!(m.live_brokers().count(), 1);
        assert!(m.apply(&recs[4]));
        let p = m.partition("t", 1).expect("partition");
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (3, 1, 1));
        assert_eq!((&p.isr, &p.elr), (&vec![3, 1], &vec![2]));
        assert!(m.apply(&recs[5]));
        assert!(m.brokers.is_empty());
        assert!(m.apply(&recs[6]));
        assert_eq!(m.topics["t"].configs, configs(&[("segment.bytes", "4096")]));
        assert!(m.apply(&recs[7]));
        assert_eq!(m.producer_id_block_end, 3000);
        assert!(m.apply(&recs[8]));
        assert!(m.topics.is_empty());
        assert_eq!(m.producer_id_block_end, 3000);
    }

    /// Replaying records whose effect is already in the image changes nothing: every record
    /// applied twice in a row leaves the image as applying it once did.
    #[test]
    fn apply_is_idempotent() {
        let mut once = ClusterMeta::default();
        let mut twice = ClusterMeta::default();
        for r in all_kinds() {
            once.apply(&r);
            twice.apply(&r);
            assert!(!twice.apply(&r), "second apply of {r:?} changed the image");
            assert_eq!(once, twice);
        }
    }

    /// Broker records name the broker's epoch: one from an older registration changes nothing.
    #[test]
    fn broker_records_follow_the_epoch() {
        let reg = |epoch| MetadataRecord::RegisterBroker {
            id: 4,
            epoch,
            incarnation: 1,
            host: "h".into(),
            port: 1,
        };
        let mut m = ClusterMeta::default();
        assert!(m.apply(&reg(7)));
        assert!(!m.apply(&reg(6)), "an older registration");
        let state = |epoch, fenced| MetadataRecord::BrokerState {
            id: 4,
            epoch,
            fenced,
            shutting_down: false,
        };
        assert!(!m.apply(&state(6, false)), "an older epoch's state");
        assert!(m.brokers[&4].fenced);
        assert!(m.apply(&state(7, false)));
        assert!(!m.brokers[&4].fenced);
        assert!(m.apply(&reg(8)), "a new registration");
        assert!(m.brokers[&4].fenced, "starts fenced again");
        assert!(!m.apply(&MetadataRecord::UnregisterBroker { id: 4, epoch: 7 }));
        assert!(m.apply(&MetadataRecord::UnregisterBroker { id: 4, epoch: 8 }));
        assert!(m.brokers.is_empty());
    }

    /// Images from before replication load with their partitions on the local node.
    #[test]
    fn old_images_upgrade_to_a_single_replica() {
        let old = r#"{"topics":{"t":{"name":"t","id":5,"partitions":[{"leader_epoch":3}],
            "configs":{}}},"producer_id_block_end":1000,"applied_index":0}"#;
        let mut m: ClusterMeta = serde_json::from_str(old).expect("parse");
        assert!(m.brokers.is_empty());
        assert_eq!(
            m.topics["t"].partitions[0].leader,
            crate::controller::metadata::NO_LEADER
        );
        assert!(m.upgrade_single_node(4));
        let p = m.partition("t", 0).expect("partition");
        assert_eq!((p.leader, p.leader_epoch), (4, 3));
        assert_eq!((&p.replicas, &p.isr), (&vec![4], &vec![4]));
        assert!(!m.upgrade_single_node(4), "already upgraded");
    }

    /// Records about another incarnation of a topic (same name, other id) and out-of-date
    /// records (fewer partitions, an older producer-id block) change nothing.
    #[test]
    fn stale_records_are_no_ops() {
        let mut m = ClusterMeta::default();
        m.apply(&all_kinds()[0]);
        let before = m.clone();
        let other = 99;
        for r in [
            MetadataRecord::CreateTopic {
                name: "t".into(),
                id: other,
                assignments: vec![vec![1]; 9],
                configs: BTreeMap::new(),
            },
            MetadataRecord::CreatePartitions {
                name: "t".into(),
                id: other,
                first: 2,
                assignments: vec![vec![1]],
            },
            MetadataRecord::CreatePartitions {
                name: "t".into(),
                id: 7 << 100 | 3,
                first: 1,
                assignments: vec![vec![1]],
            },
            MetadataRecord::PartitionChange {
                name: "t".into(),
                id: 7 << 100 | 3,
                partition: 0,
                leader: 2,
                leader_epoch: 5,
                partition_epoch: 0,
                replicas: vec![1, 2, 3],
                isr: vec![2],
                elr: vec![],
            },
            MetadataRecord::PartitionChange {
                name: "t".into(),
                id: 7 << 100 | 3,
                partition: 7,
                leader: 2,
                leader_epoch: 5,
                partition_epoch: 3,
                replicas: vec![1, 2, 3],
                isr: vec![2],
                elr: vec![],
            },
            MetadataRecord::BrokerState {
                id: 1,
                epoch: 1,
                fenced: false,
                shutting_down: false,
            },
            MetadataRecord::UnregisterBroker { id: 1, epoch: 1 },
            MetadataRecord::AlterConfigs {
                name: "t".into(),
                id: other,
                configs: BTreeMap::new(),
            },
            MetadataRecord::DeleteTopic {
                name: "t".into(),
                id: other,
            },
            MetadataRecord::DeleteTopic {
                name: "missing".into(),
                id: 1,
            },
            MetadataRecord::ProducerIdBlock { block_end: -5 },
        ] {
            assert!(!m.apply(&r), "{r:?}");
            assert_eq!(m, before, "{r:?}");
        }
    }
}
