//! Records of the internal group log (the analogue of `__consumer_offsets`)
//! and their binary encoding.
//!
//! The coordinator never writes anything itself: it hands records to the
//! server in [`crate::Output::Persist`], the server appends their encoding to
//! the internal log of the group's shard and feeds them back through
//! [`crate::GroupCoordinator::replay`] at start-up. Records are key/value
//! shaped like Kafka's: a later record with the same key replaces an earlier
//! one, a record without a value (a tombstone) deletes the key. That keeps
//! compaction trivial: [`crate::GroupCoordinator::snapshot`] emits exactly the
//! live keys.
//!
//! # Byte layout (all integers big-endian)
//!
//! ```text
//! record      := version:u8 (=1) kind:u8 flags:u8 body
//!   kind        0 = offset commit, 1 = group metadata
//!   flags       bit 0 = has value (clear: tombstone); other bits must be 0
//! offset body := group:str topic:str partition:i32 [value]
//!   value       offset:i64 leader_epoch:i32 (-1 = none) metadata:str commit_timestamp_ms:i64
//! group body  := group:str [value]
//!   value       protocol_type:str generation:i32 protocol:opt_str leader:opt_str
//!               state_timestamp_ms:i64 member_count:u32 member*
//!   member      member_id:str instance_id:opt_str client_id:str client_host:str
//!               rebalance_timeout_ms:i32 session_timeout_ms:i32
//!               subscription:bytes assignment:bytes
//! str         := len:u16 utf8[len]
//! opt_str     := present:u8 (0|1) [str]
//! bytes       := len:u32 u8[len]
//! ```
//!
//! Decoding never panics and never trusts a length before checking it
//! against the remaining input; trailing bytes are an error. There is no
//! checksum here: the engine's record batches already carry a CRC32C.

use bytes::{BufMut, Bytes, BytesMut};

/// Current (and only) encoding version.
pub const RECORD_VERSION: u8 = 1;
const KIND_OFFSET: u8 = 0;
const KIND_GROUP: u8 = 1;
const FLAG_HAS_VALUE: u8 = 1;

/// A committed offset as stored in the log and in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    /// The next offset the group will consume.
    pub offset: i64,
    /// Leader epoch of the committed record, `-1` if unknown.
    pub leader_epoch: i32,
    /// Client-supplied metadata string.
    pub metadata: String,
    /// Coordinator time at which the commit was accepted.
    pub commit_timestamp_ms: i64,
}

/// One member as stored in a group metadata record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// The member's metadata for the group's selected protocol.
    pub subscription: Bytes,
    /// The assignment the leader gave this member.
    pub assignment: Bytes,
}

/// A group's durable state: written when a generation becomes Stable, when the
/// group becomes Empty, and when a static member is replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMetadataValue {
    pub protocol_type: String,
    pub generation_id: i32,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    /// When the group entered its current state (drives offset expiry of Empty groups).
    pub state_timestamp_ms: i64,
    pub members: Vec<MemberRecord>,
}

/// A record of the internal group log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A committed offset, or its deletion when `value` is `None`.
    Offset {
        group_id: String,
        topic: String,
        partition: i32,
        value: Option<OffsetValue>,
    },
    /// A group's metadata, or its deletion when `value` is `None`.
    GroupMetadata {
        group_id: String,
        value: Option<GroupMetadataValue>,
    },
}

impl Record {
    /// The group this record belongs to (decides the shard and log partition).
    pub fn group_id(&self) -> &str {
        match self {
            Record::Offset { group_id, .. } | Record::GroupMetadata { group_id, .. } => group_id,
        }
    }

    /// True for a tombstone.
    pub fn is_tombstone(&self) -> bool {
        match self {
            Record::Offset { value, .. } => value.is_none(),
            Record::GroupMetadata { value, .. } => value.is_none(),
        }
    }

    /// Encodes the record. Fails only if a string is longer than 65535 bytes
    /// or a byte field longer than `u32::MAX` (the coordinator rejects such
    /// input before it reaches a record, so this is a defensive check).
    pub fn encode(&self) -> Result<Bytes, EncodeError> {
        let mut buf = BytesMut::with_capacity(64);
        buf.put_u8(RECORD_VERSION);
        match self {
            Record::Offset {
                group_id,
                topic,
                partition,
                value,
            } => {
                buf.put_u8(KIND_OFFSET);
                buf.put_u8(if value.is_some() { FLAG_HAS_VALUE } else { 0 });
                put_str(&mut buf, group_id)?;
                put_str(&mut buf, topic)?;
                buf.put_i32(*partition);
                if let Some(v) = value {
                    buf.put_i64(v.offset);
                    buf.put_i32(v.leader_epoch);
                    put_str(&mut buf, &v.metadata)?;
                    buf.put_i64(v.commit_timestamp_ms);
                }
            }
            Record::GroupMetadata { group_id, value } => {
                buf.put_u8(KIND_GROUP);
                buf.put_u8(if value.is_some() { FLAG_HAS_VALUE } else { 0 });
                put_str(&mut buf, group_id)?;
                if let Some(v) = value {
                    put_str(&mut buf, &v.protocol_type)?;
                    buf.put_i32(v.generation_id);
                    put_opt_str(&mut buf, v.protocol_name.as_deref())?;
                    put_opt_str(&mut buf, v.leader.as_deref())?;
                    buf.put_i64(v.state_timestamp_ms);
                    let count = u32::try_from(v.members.len()).map_err(|_| EncodeError::TooLong)?;
                    buf.put_u32(count);
                    for m in &v.members {
                        put_str(&mut buf, &m.member_id)?;
                        put_opt_str(&mut buf, m.group_instance_id.as_deref())?;
                        put_str(&mut buf, &m.client_id)?;
                        put_str(&mut buf, &m.client_host)?;
                        buf.put_i32(m.rebalance_timeout_ms);
                        buf.put_i32(m.session_timeout_ms);
                        put_bytes(&mut buf, &m.subscription)?;
                        put_bytes(&mut buf, &m.assignment)?;
                    }
                }
            }
        }
        Ok(buf.freeze())
    }

    /// Decodes a record produced by [`Record::encode`]. Never panics.
    pub fn decode(input: &[u8]) -> Result<Record, DecodeError> {
        let mut r = Reader { buf: input, pos: 0 };
        let version = r.u8()?;
        if version != RECORD_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let kind = r.u8()?;
        let flags = r.u8()?;
        if flags & !FLAG_HAS_VALUE != 0 {
            return Err(DecodeError::InvalidFlags(flags));
        }
        let has_value = flags & FLAG_HAS_VALUE != 0;
        let record = match kind {
            KIND_OFFSET => {
                let group_id = r.string()?;
                let topic = r.string()?;
                let partition = r.i32()?;
                let value = if has_value {
                    Some(OffsetValue {
                        offset: r.i64()?,
                        leader_epoch: r.i32()?,
                        metadata: r.string()?,
                        commit_timestamp_ms: r.i64()?,
                    })
                } else {
                    None
                };
                Record::Offset {
                    group_id,
                    topic,
                    partition,
                    value,
                }
            }
            KIND_GROUP => {
                let group_id = r.string()?;
                let value = if has_value {
                    let protocol_type = r.string()?;
                    let generation_id = r.i32()?;
                    let protocol_name = r.opt_string()?;
                    let leader = r.opt_string()?;
                    let state_timestamp_ms = r.i64()?;
                    let count = r.u32()?;
                    // Each member takes at least MIN_MEMBER_BYTES, so a count
                    // larger than that bound is corrupt; checking first keeps a
                    // corrupt count from driving a huge allocation.
                    const MIN_MEMBER_BYTES: usize = 2 + 1 + 2 + 2 + 4 + 4 + 4 + 4;
                    let count = usize::try_from(count).map_err(|_| DecodeError::Truncated)?;
                    if count > r.remaining() / MIN_MEMBER_BYTES {
                        return Err(DecodeError::Truncated);
                    }
                    let mut members = Vec::with_capacity(count);
                    for _ in 0..count {
                        members.push(MemberRecord {
                            member_id: r.string()?,
                            group_instance_id: r.opt_string()?,
                            client_id: r.string()?,
                            client_host: r.string()?,
                            rebalance_timeout_ms: r.i32()?,
                            session_timeout_ms: r.i32()?,
                            subscription: r.bytes()?,
                            assignment: r.bytes()?,
                        });
                    }
                    Some(GroupMetadataValue {
                        protocol_type,
                        generation_id,
                        protocol_name,
                        leader,
                        state_timestamp_ms,
                        members,
                    })
                } else {
                    None
                };
                Record::GroupMetadata { group_id, value }
            }
            other => return Err(DecodeError::UnknownKind(other)),
        };
        if r.remaining() != 0 {
            return Err(DecodeError::TrailingBytes(r.remaining()));
        }
        Ok(record)
    }
}

/// Why a record could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("field too long for the record encoding")]
    TooLong,
}

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record truncated")]
    Truncated,
    #[error("unsupported record version {0}")]
    UnsupportedVersion(u8),
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    #[error("invalid record flags {0:#04x}")]
    InvalidFlags(u8),
    #[error("invalid optional-string marker {0}")]
    InvalidPresence(u8),
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    #[error("{0} trailing bytes after record")]
    TrailingBytes(usize),
}

fn put_str(buf: &mut BytesMut, s: &str) -> Result<(), EncodeError> {
    let len = u16::try_from(s.len()).map_err(|_| EncodeError::TooLong)?;
    buf.put_u16(len);
    buf.put_slice(s.as_bytes());
    Ok(())
}

fn put_opt_str(buf: &mut BytesMut, s: Option<&str>) -> Result<(), EncodeError> {
    match s {
        None => {
            buf.put_u8(0);
            Ok(())
        }
        Some(s) => {
            buf.put_u8(1);
            put_str(buf, s)
        }
    }
}

fn put_bytes(buf: &mut BytesMut, b: &[u8]) -> Result<(), EncodeError> {
    let len = u32::try_from(b.len()).map_err(|_| EncodeError::TooLong)?;
    buf.put_u32(len);
    buf.put_slice(b);
    Ok(())
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        let slice = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let slice = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let len = usize::from(self.u16()?);
        let raw = self.take(len)?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| DecodeError::InvalidUtf8)
    }

    fn opt_string(&mut self) -> Result<Option<String>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.string()?)),
            other => Err(DecodeError::InvalidPresence(other)),
        }
    }

    fn bytes(&mut self) -> Result<Bytes, DecodeError> {
        let len = usize::try_from(self.u32()?).map_err(|_| DecodeError::Truncated)?;
        Ok(Bytes::copy_from_slice(self.take(len)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample_group() -> Record {
        Record::GroupMetadata {
            group_id: "g".into(),
            value: Some(GroupMetadataValue {
                protocol_type: "consumer".into(),
                generation_id: 3,
                protocol_name: Some("range".into()),
                leader: Some("c-1".into()),
                state_timestamp_ms: 1234,
                members: vec![MemberRecord {
                    member_id: "c-1".into(),
                    group_instance_id: Some("i1".into()),
                    client_id: "c".into(),
                    client_host: "/127.0.0.1".into(),
                    rebalance_timeout_ms: 300_000,
                    session_timeout_ms: 10_000,
                    subscription: Bytes::from_static(b"\x00\x01sub"),
                    assignment: Bytes::from_static(b"assign"),
                }],
            }),
        }
    }

    fn sample_offset() -> Record {
        Record::Offset {
            group_id: "g".into(),
            topic: "t".into(),
            partition: 7,
            value: Some(OffsetValue {
                offset: 42,
                leader_epoch: 5,
                metadata: "meta".into(),
                commit_timestamp_ms: 99,
            }),
        }
    }

    /// Golden bytes: the layout is a storage format and must not change silently.
    #[test]
    fn offset_record_golden_bytes() {
        let bytes = sample_offset().encode().unwrap();
        let expected: &[u8] = &[
            1, 0, 1, // version, kind offset, has value
            0, 1, b'g', // group
            0, 1, b't', // topic
            0, 0, 0, 7, // partition
            0, 0, 0, 0, 0, 0, 0, 42, // offset
            0, 0, 0, 5, // leader epoch
            0, 4, b'm', b'e', b't', b'a', // metadata
            0, 0, 0, 0, 0, 0, 0, 99, // commit timestamp
        ];
        assert_eq!(&bytes[..], expected);
        let tomb = Record::Offset {
            group_id: "g".into(),
            topic: "t".into(),
            partition: 7,
            value: None,
        };
        assert_eq!(
            &tomb.encode().unwrap()[..],
            &[1, 0, 0, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 7]
        );
    }

    #[test]
    fn group_tombstone_golden_bytes() {
        let tomb = Record::GroupMetadata {
            group_id: "ab".into(),
            value: None,
        };
        assert_eq!(&tomb.encode().unwrap()[..], &[1, 1, 0, 0, 2, b'a', b'b']);
        assert!(tomb.is_tombstone());
    }

    #[test]
    fn roundtrip_samples() {
        for rec in [sample_group(), sample_offset()] {
            let bytes = rec.encode().unwrap();
            assert_eq!(Record::decode(&bytes).unwrap(), rec);
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        for rec in [sample_group(), sample_offset()] {
            let bytes = rec.encode().unwrap();
            for len in 0..bytes.len() {
                assert!(Record::decode(&bytes[..len]).is_err(), "prefix {len}");
            }
        }
    }

    #[test]
    fn corrupt_headers_are_errors() {
        let bytes = sample_offset().encode().unwrap().to_vec();
        let mut v = bytes.clone();
        v[0] = 2;
        assert_eq!(Record::decode(&v), Err(DecodeError::UnsupportedVersion(2)));
        let mut v = bytes.clone();
        v[1] = 9;
        assert_eq!(Record::decode(&v), Err(DecodeError::UnknownKind(9)));
        let mut v = bytes.clone();
        v[2] = 0x81;
        assert_eq!(Record::decode(&v), Err(DecodeError::InvalidFlags(0x81)));
        let mut v = bytes.clone();
        v.push(0);
        assert_eq!(Record::decode(&v), Err(DecodeError::TrailingBytes(1)));
        // Invalid UTF-8 in the group id.
        let mut v = bytes.clone();
        v[5] = 0xff;
        assert_eq!(Record::decode(&v), Err(DecodeError::InvalidUtf8));
        // Tombstone flag with a value's bytes following: trailing bytes.
        let mut v = bytes;
        v[2] = 0;
        assert!(matches!(
            Record::decode(&v),
            Err(DecodeError::TrailingBytes(_))
        ));
    }

    #[test]
    fn huge_member_count_is_rejected_without_allocating() {
        let mut v = Vec::new();
        v.extend_from_slice(&[1, 1, 1, 0, 1, b'g']);
        v.extend_from_slice(&[0, 0]); // protocol type ""
        v.extend_from_slice(&[0, 0, 0, 1]); // generation
        v.extend_from_slice(&[0, 0]); // no protocol, no leader
        v.extend_from_slice(&[0; 8]); // timestamp
        v.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]); // member count
        assert_eq!(Record::decode(&v), Err(DecodeError::Truncated));
    }

    #[test]
    fn bad_presence_marker() {
        let mut v = Vec::new();
        v.extend_from_slice(&[1, 1, 1, 0, 1, b'g', 0, 0, 0, 0, 0, 1]);
        v.push(7);
        assert_eq!(Record::decode(&v), Err(DecodeError::InvalidPresence(7)));
    }

    #[test]
    fn overlong_string_fails_to_encode() {
        let rec = Record::GroupMetadata {
            group_id: "x".repeat(70_000),
            value: None,
        };
        assert_eq!(rec.encode(), Err(EncodeError::TooLong));
    }

    fn arb_str() -> impl Strategy<Value = String> {
        "[a-z0-9-]{0,12}"
    }

    fn arb_record() -> impl Strategy<Value = Record> {
        let offset = (
            arb_str(),
            arb_str(),
            any::<i32>(),
            proptest::option::of((any::<i64>(), any::<i32>(), arb_str(), any::<i64>())),
        )
            .prop_map(|(g, t, p, v)| Record::Offset {
                group_id: g,
                topic: t,
                partition: p,
                value: v.map(|(offset, leader_epoch, metadata, ts)| OffsetValue {
                    offset,
                    leader_epoch,
                    metadata,
                    commit_timestamp_ms: ts,
                }),
            });
        let member = (
            arb_str(),
            proptest::option::of(arb_str()),
            arb_str(),
            any::<i32>(),
            proptest::collection::vec(any::<u8>(), 0..16),
            proptest::collection::vec(any::<u8>(), 0..16),
        )
            .prop_map(|(id, inst, client, t, s, a)| MemberRecord {
                member_id: id,
                group_instance_id: inst,
                client_id: client.clone(),
                client_host: client,
                rebalance_timeout_ms: t,
                session_timeout_ms: t.wrapping_add(1),
                subscription: Bytes::from(s),
                assignment: Bytes::from(a),
            });
        let group = (
            arb_str(),
            proptest::option::of((
                arb_str(),
                any::<i32>(),
                proptest::option::of(arb_str()),
                proptest::option::of(arb_str()),
                any::<i64>(),
                proptest::collection::vec(member, 0..4),
            )),
        )
            .prop_map(|(g, v)| Record::GroupMetadata {
                group_id: g,
                value: v.map(|(pt, gen, pn, leader, ts, members)| GroupMetadataValue {
                    protocol_type: pt,
                    generation_id: gen,
                    protocol_name: pn,
                    leader,
                    state_timestamp_ms: ts,
                    members,
                }),
            });
        prop_oneof![offset, group]
    }

    proptest! {
        #[test]
        fn prop_roundtrip(rec in arb_record()) {
            let bytes = rec.encode().unwrap();
            prop_assert_eq!(Record::decode(&bytes).unwrap(), rec);
        }

        #[test]
        fn prop_decode_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = Record::decode(&bytes);
        }

        #[test]
        fn prop_bit_flips_never_panic(rec in arb_record(), idx in any::<usize>(), bit in 0u8..8) {
            let mut bytes = rec.encode().unwrap().to_vec();
            let i = idx % bytes.len();
            bytes[i] ^= 1 << bit;
            if let Ok(decoded) = Record::decode(&bytes) {
                // A flip may still decode; it must then re-encode to the same bytes.
                prop_assert_eq!(&decoded.encode().unwrap()[..], &bytes[..]);
            }
        }
    }
}
