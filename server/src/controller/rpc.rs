//! The controller RPC: what brokers ask the controller leader over the controller listener
//! (forwarded admin operations and producer-id blocks; broker registration, heartbeats and
//! AlterPartition build on the same frames), next to the raft frames of `shardlog-quorum`.
//!
//! Every connection to the controller listener starts with a hello:
//!
//! ```text
//! b"SLCQ"  magic
//! u8       hello version (1)
//! u8       purpose: 1 raft messages (quorum::wire frames follow), 2 controller RPC
//! u64 BE   the sender's node id (>= 1)
//! ```
//!
//! An RPC frame, in both directions (an answer carries its request's id and kind | 0x80):
//!
//! ```text
//! u32 BE  length of the rest of the frame (version .. body)
//! u8      version (1)
//! u8      kind
//! u64 BE  request id
//! u32 BE  CRC32C of the body
//! body    JSON of the kind's message, at most MAX_RPC_BODY bytes
//! ```
//!
//! The length is checked before anything is buffered, the CRC before the JSON parser runs,
//! and the kind before the body is interpreted; any refusal is a typed [`RpcError`] and the
//! connection is closed. Only controller peers should reach this listener (see
//! docs/ARCHITECTURE.md, "Controller quorum").

use serde::{Deserialize, Serialize};

use crate::controller::decide::{AlterPartitionReq, Heartbeat, Registration};
use crate::controller::metadata::PartitionMeta;
use crate::mesh::messages::{AdminReq, AdminResp, AdminResult, ConfigOps, NewTopic};

pub const HELLO_MAGIC: &[u8; 4] = b"SLCQ";
pub const HELLO_VERSION: u8 = 1;
pub const HELLO_LEN: usize = 4 + 1 + 1 + 8;
pub const PURPOSE_RAFT: u8 = 1;
pub const PURPOSE_RPC: u8 = 2;

pub const RPC_VERSION: u8 = 1;
/// Length, version, kind, request id, CRC.
pub const RPC_HEADER: usize = 4 + 1 + 1 + 8 + 4;
/// Largest body: admin requests are far smaller (a topic name is at most 249 bytes).
pub const MAX_RPC_BODY: usize = 1024 * 1024;
/// Bit set in the kind of an answer.
pub const ANSWER: u8 = 0x80;

/// What an RPC frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RpcKind {
    /// An admin operation a broker that is not the controller leader received.
    Forward = 1,
    BrokerRegistration = 2,
    BrokerHeartbeat = 3,
    AlterPartition = 4,
}

impl RpcKind {
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Forward,
            2 => Self::BrokerRegistration,
            3 => Self::BrokerHeartbeat,
            4 => Self::AlterPartition,
            _ => return None,
        })
    }
}

/// Why a hello or an RPC frame was refused. After any of them the connection is closed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RpcError {
    #[error("not a controller connection (bad hello magic)")]
    BadMagic,
    #[error("unknown hello version {0}")]
    BadHelloVersion(u8),
    #[error("unknown connection purpose {0}")]
    BadPurpose(u8),
    #[error("node id 0 in hello")]
    ZeroNode,
    #[error("RPC frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("RPC frame of {0} bytes is shorter than its header")]
    TooShort(usize),
    #[error("unknown RPC frame version {0}")]
    BadVersion(u8),
    #[error("unknown RPC kind {0}")]
    BadKind(u8),
    #[error("RPC frame CRC mismatch")]
    BadCrc,
    #[error("RPC body does not parse: {0}")]
    Body(String),
}

/// A connection's hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    pub purpose: u8,
    pub node: u64,
}

pub fn encode_hello(h: Hello) -> [u8; HELLO_LEN] {
    let mut b = [0u8; HELLO_LEN];
    b[..4].copy_from_slice(HELLO_MAGIC);
    b[4] = HELLO_VERSION;
    b[5] = h.purpose;
    b[6..].copy_from_slice(&h.node.to_be_bytes());
    b
}

pub fn decode_hello(b: &[u8; HELLO_LEN]) -> Result<Hello, RpcError> {
    if &b[..4] != HELLO_MAGIC {
        return Err(RpcError::BadMagic);
    }
    if b[4] != HELLO_VERSION {
        return Err(RpcError::BadHelloVersion(b[4]));
    }
    if b[5] != PURPOSE_RAFT && b[5] != PURPOSE_RPC {
        return Err(RpcError::BadPurpose(b[5]));
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&b[6..]);
    let node = u64::from_be_bytes(id);
    if node == 0 {
        return Err(RpcError::ZeroNode);
    }
    Ok(Hello {
        purpose: b[5],
        node,
    })
}

/// One decoded RPC frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcFrame {
    pub kind: RpcKind,
    pub answer: bool,
    pub id: u64,
    pub body: Vec<u8>,
}

/// Encodes a frame; refuses a body above [`MAX_RPC_BODY`].
pub fn encode_frame(
    kind: RpcKind,
    answer: bool,
    id: u64,
    body: &[u8],
) -> Result<Vec<u8>, RpcError> {
    if body.len() > MAX_RPC_BODY {
        return Err(RpcError::TooLarge {
            len: RPC_HEADER + body.len(),
            max: RPC_HEADER + MAX_RPC_BODY,
        });
    }
    let mut out = Vec::with_capacity(RPC_HEADER + body.len());
    out.extend_from_slice(&((RPC_HEADER - 4 + body.len()) as u32).to_be_bytes());
    out.push(RPC_VERSION);
    out.push(kind as u8 | if answer { ANSWER } else { 0 });
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(body).to_be_bytes());
    out.extend_from_slice(body);
    Ok(out)
}

/// The total length of the frame at the start of `buf` once its prefix is there (`Ok(None)`
/// before); refuses a frame above the limit from the prefix alone.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, RpcError> {
    let Some(p) = buf.get(..4) else {
        return Ok(None);
    };
    let len = (u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize).saturating_add(4);
    let max = RPC_HEADER + MAX_RPC_BODY;
    if len > max {
        return Err(RpcError::TooLarge { len, max });
    }
    if len < RPC_HEADER {
        return Err(RpcError::TooShort(len));
    }
    Ok(Some(len))
}

/// Decodes the frame at the start of `buf`: `Ok(None)` while incomplete, else the frame and
/// the bytes it took.
pub fn decode_frame(buf: &[u8]) -> Result<Option<(RpcFrame, usize)>, RpcError> {
    let Some(len) = frame_len(buf)? else {
        return Ok(None);
    };
    let Some(f) = buf.get(..len) else {
        return Ok(None);
    };
    if f[4] != RPC_VERSION {
        return Err(RpcError::BadVersion(f[4]));
    }
    let kind = RpcKind::from_u8(f[5] & !ANSWER).ok_or(RpcError::BadKind(f[5]))?;
    let mut id = [0u8; 8];
    id.copy_from_slice(&f[6..14]);
    let crc = u32::from_be_bytes([f[14], f[15], f[16], f[17]]);
    let body = &f[RPC_HEADER..];
    if crc32c::crc32c(body) != crc {
        return Err(RpcError::BadCrc);
    }
    Ok(Some((
        RpcFrame {
            kind,
            answer: f[5] & ANSWER != 0,
            id: u64::from_be_bytes(id),
            body: body.to_vec(),
        },
        len,
    )))
}

/// Parses a frame's JSON body as `T`.
pub fn body<T: for<'de> Deserialize<'de>>(f: &RpcFrame) -> Result<T, RpcError> {
    serde_json::from_slice(&f.body).map_err(|e| RpcError::Body(e.to_string()))
}

/// Serializes a message as a body (plain data: it cannot fail).
pub fn to_body<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// A forwarded admin operation (the `AdminReq`s that change metadata).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardReq {
    CreateTopics {
        topics: Vec<NewTopic>,
        validate_only: bool,
    },
    DeleteTopics(Vec<String>),
    CreatePartitions {
        topics: Vec<(String, i32)>,
        validate_only: bool,
    },
    AlterConfigs {
        topics: Vec<(String, ConfigOps)>,
        replace: bool,
        validate_only: bool,
    },
    /// Commit a block of producer ids for the asking broker.
    ProducerIdBlock,
}

impl ForwardReq {
    /// The forwardable form of `req` (`AllocateProducerId` becomes a block request).
    pub fn from_admin(req: &AdminReq) -> Option<Self> {
        Some(match req {
            AdminReq::CreateTopics {
                topics,
                validate_only,
            } => Self::CreateTopics {
                topics: topics.clone(),
                validate_only: *validate_only,
            },
            AdminReq::DeleteTopics(names) => Self::DeleteTopics(names.clone()),
            AdminReq::CreatePartitions {
                topics,
                validate_only,
            } => Self::CreatePartitions {
                topics: topics.clone(),
                validate_only: *validate_only,
            },
            AdminReq::AlterConfigs {
                topics,
                replace,
                validate_only,
            } => Self::AlterConfigs {
                topics: topics.clone(),
                replace: *replace,
                validate_only: *validate_only,
            },
            AdminReq::AllocateProducerId => Self::ProducerIdBlock,
            AdminReq::AlterPartition(_) => return None,
        })
    }

    /// The admin request the leader runs (`None` for a producer-id block, which is not one).
    pub fn into_admin(self) -> Option<AdminReq> {
        Some(match self {
            Self::CreateTopics {
                topics,
                validate_only,
            } => AdminReq::CreateTopics {
                topics,
                validate_only,
            },
            Self::DeleteTopics(n) => AdminReq::DeleteTopics(n),
            Self::CreatePartitions {
                topics,
                validate_only,
            } => AdminReq::CreatePartitions {
                topics,
                validate_only,
            },
            Self::AlterConfigs {
                topics,
                replace,
                validate_only,
            } => AdminReq::AlterConfigs {
                topics,
                replace,
                validate_only,
            },
            Self::ProducerIdBlock => return None,
        })
    }
}

/// The leader's answer to a [`ForwardReq`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardAnswer {
    /// `NOT_CONTROLLER` when the receiver is not (or no longer) the leader: ask again.
    pub error: i16,
    pub results: Vec<AdminResult>,
    /// For `ProducerIdBlock`: the block `[start, end)` committed for the asker, or an error.
    pub block: Option<Result<(i64, i64), i16>>,
    /// The leader's applied index once the operation's records were applied there: the
    /// forwarding broker answers once its own shards have applied that far.
    pub applied_index: u64,
}

impl ForwardAnswer {
    pub fn not_controller() -> Self {
        ForwardAnswer {
            error: crate::wire::errors::NOT_CONTROLLER,
            results: Vec::new(),
            block: None,
            applied_index: 0,
        }
    }

    /// The admin answer for the request it answers (results for every name asked, in order).
    pub fn into_admin(self) -> AdminResp {
        AdminResp::Results(self.results)
    }
}

/// BrokerRegistration (KIP-631): `decide::Registration` on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationMsg {
    pub id: i32,
    pub incarnation: u128,
    pub host: String,
    pub port: u16,
    pub previous_epoch: i64,
}

impl From<RegistrationMsg> for Registration {
    fn from(m: RegistrationMsg) -> Self {
        Registration {
            id: m.id,
            incarnation: m.incarnation,
            host: m.host,
            port: m.port,
            previous_epoch: m.previous_epoch,
        }
    }
}

/// The answer to a registration: the broker epoch once its records are committed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationAnswer {
    /// `NOT_CONTROLLER`: ask the leader again; other codes are the controller's refusal.
    pub error: i16,
    pub epoch: i64,
    pub applied_index: u64,
}

/// BrokerHeartbeat: `decide::Heartbeat` on the wire, with the partitions whose log failed on
/// the broker (at most [`MAX_OFFLINE_REPORT`]; absent from older brokers).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatMsg {
    pub id: i32,
    pub epoch: i64,
    pub caught_up: bool,
    pub want_shutdown: bool,
    #[serde(default)]
    pub offline: Vec<(String, u32)>,
}

/// Offline partitions one heartbeat reports at most (topic names are at most 249 bytes, so
/// this stays far below [`MAX_RPC_BODY`]); the rest follow once these moved.
pub const MAX_OFFLINE_REPORT: usize = 1000;

impl From<HeartbeatMsg> for Heartbeat {
    fn from(m: HeartbeatMsg) -> Self {
        Heartbeat {
            id: m.id,
            epoch: m.epoch,
            caught_up: m.caught_up,
            want_shutdown: m.want_shutdown,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatAnswerMsg {
    pub error: i16,
    pub fenced: bool,
    pub shutdown_ok: bool,
    pub applied_index: u64,
}

/// AlterPartition (KIP-497): `decide::AlterPartitionReq` on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterPartitionMsg {
    pub topic: String,
    pub topic_id: u128,
    pub partition: u32,
    pub leader: i32,
    pub leader_epoch: i32,
    pub broker_epoch: i64,
    pub partition_epoch: i32,
    pub new_isr: Vec<(i32, i64)>,
}

impl From<&AlterPartitionReq> for AlterPartitionMsg {
    fn from(r: &AlterPartitionReq) -> Self {
        AlterPartitionMsg {
            topic: r.topic.clone(),
            topic_id: r.topic_id,
            partition: r.partition,
            leader: r.leader,
            leader_epoch: r.leader_epoch,
            broker_epoch: r.broker_epoch,
            partition_epoch: r.partition_epoch,
            new_isr: r.new_isr.clone(),
        }
    }
}

impl From<AlterPartitionMsg> for AlterPartitionReq {
    fn from(m: AlterPartitionMsg) -> Self {
        AlterPartitionReq {
            topic: m.topic,
            topic_id: m.topic_id,
            partition: m.partition,
            leader: m.leader,
            leader_epoch: m.leader_epoch,
            broker_epoch: m.broker_epoch,
            partition_epoch: m.partition_epoch,
            new_isr: m.new_isr,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterPartitionAnswer {
    /// `Err(NOT_CONTROLLER)`: ask the leader again.
    pub result: Result<PartitionMeta, i16>,
    pub applied_index: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Vec<u8> {
        to_body(&ForwardReq::CreateTopics {
            topics: vec![NewTopic {
                name: "t".into(),
                partitions: 3,
                replication_factor: 3,
                assignments: Vec::new(),
                configs: vec![("retention.ms".into(), "5".into())],
            }],
            validate_only: false,
        })
    }

    #[test]
    fn frames_round_trip_and_stream() {
        let body = sample();
        let f = encode_frame(RpcKind::Forward, false, 42, &body).expect("encode");
        for cut in 0..f.len() {
            assert_eq!(decode_frame(&f[..cut]), Ok(None), "cut {cut}");
        }
        let mut two = f.clone();
        two.extend(encode_frame(RpcKind::Forward, true, 42, b"{}").expect("encode"));
        let (a, used) = decode_frame(&two).expect("ok").expect("complete");
        assert_eq!(used, f.len());
        assert_eq!(
            (a.kind, a.answer, a.id, a.body.clone()),
            (RpcKind::Forward, false, 42, body)
        );
        let (b, _) = decode_frame(&two[used..]).expect("ok").expect("complete");
        assert!(b.answer);
        let req: ForwardReq = super::body(&a).expect("json");
        assert!(matches!(req, ForwardReq::CreateTopics { .. }));
    }

    #[test]
    fn bad_frames_are_refused() {
        let f = encode_frame(RpcKind::Forward, false, 1, &sample()).expect("encode");
        // Length beyond the bound: refused from the prefix alone.
        let big = ((RPC_HEADER + MAX_RPC_BODY) as u32).to_be_bytes();
        assert!(matches!(decode_frame(&big), Err(RpcError::TooLarge { .. })));
        assert!(matches!(
            encode_frame(RpcKind::Forward, false, 1, &vec![0; MAX_RPC_BODY + 1]),
            Err(RpcError::TooLarge { .. })
        ));
        assert_eq!(
            decode_frame(&[0, 0, 0, 3, 1, 1, 0]),
            Err(RpcError::TooShort(7))
        );
        let mut v = f.clone();
        v[4] = 2;
        assert_eq!(decode_frame(&v), Err(RpcError::BadVersion(2)));
        let mut k = f.clone();
        k[5] = 9;
        assert_eq!(decode_frame(&k), Err(RpcError::BadKind(9)));
        let mut c = f.clone();
        let last = c.len() - 1;
        c[last] ^= 0x20;
        assert_eq!(decode_frame(&c), Err(RpcError::BadCrc));
        // A valid frame whose body is not the message: typed error, no panic.
        let g = encode_frame(RpcKind::Forward, false, 1, b"[1,2").expect("encode");
        let (frame, _) = decode_frame(&g).expect("ok").expect("complete");
        assert!(matches!(
            super::body::<ForwardReq>(&frame),
            Err(RpcError::Body(_))
        ));
    }

    #[test]
    fn hello_round_trips_and_refuses() {
        let h = Hello {
            purpose: PURPOSE_RAFT,
            node: 3,
        };
        assert_eq!(decode_hello(&encode_hello(h)), Ok(h));
        let mut b = encode_hello(h);
        b[0] = b'X';
        assert_eq!(decode_hello(&b), Err(RpcError::BadMagic));
        let mut b = encode_hello(h);
        b[4] = 2;
        assert_eq!(decode_hello(&b), Err(RpcError::BadHelloVersion(2)));
        let mut b = encode_hello(h);
        b[5] = 7;
        assert_eq!(decode_hello(&b), Err(RpcError::BadPurpose(7)));
        let b = encode_hello(Hello {
            purpose: PURPOSE_RPC,
            node: 0,
        });
        assert_eq!(decode_hello(&b), Err(RpcError::ZeroNode));
    }

    #[test]
    fn admin_requests_survive_forwarding() {
        let reqs = vec![
            AdminReq::CreateTopics {
                topics: vec![NewTopic {
                    name: "a".into(),
                    partitions: -1,
                    replication_factor: 2,
                    assignments: vec![(0, vec![1, 2])],
                    configs: vec![("k".into(), "v".into())],
                }],
                validate_only: true,
            },
            AdminReq::DeleteTopics(vec!["a".into(), "b".into()]),
            AdminReq::CreatePartitions {
                topics: vec![("a".into(), 4)],
                validate_only: false,
            },
            AdminReq::AlterConfigs {
                topics: vec![("a".into(), vec![("k".into(), 1, None)])],
                replace: true,
                validate_only: false,
            },
        ];
        for r in reqs {
            let f = ForwardReq::from_admin(&r).expect("forwardable");
            let back: ForwardReq = serde_json::from_slice(&to_body(&f)).expect("json round trip");
            assert_eq!(back, f);
            let again = back.into_admin().expect("an admin request");
            assert_eq!(format!("{again:?}"), format!("{r:?}"));
        }
        assert_eq!(
            ForwardReq::from_admin(&AdminReq::AllocateProducerId),
            Some(ForwardReq::ProducerIdBlock)
        );
        assert!(ForwardReq::ProducerIdBlock.into_admin().is_none());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Random bytes never panic the decoder: incomplete or refused (or, rarely, a frame).
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(Some((f, used))) = decode_frame(&bytes) {
                prop_assert!(used <= bytes.len());
                let _ = super::body::<ForwardReq>(&f);
                let _ = super::body::<ForwardAnswer>(&f);
            }
        }

        /// Any one flipped bit of a valid frame is refused or changes only what the CRC does
        /// not cover in a way the decoder reports (never silently a different body).
        #[test]
        fn one_flipped_bit_is_caught(pos in 0usize..200, bit in 0u8..8) {
            let f = encode_frame(RpcKind::Forward, false, 9, &sample()).expect("encode");
            let pos = pos % f.len();
            let mut c = f.clone();
            c[pos] ^= 1 << bit;
            if let Ok(Some((frame, _))) = decode_frame(&c) {
                // Header fields outside the CRC (kind bit, id): the body is intact.
                prop_assert_eq!(frame.body, sample());
            }
        }
    }
}
