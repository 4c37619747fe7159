//! Fetch: the zero-copy response encoder and the incremental fetch session cache (KIP-227).
//!
//! ## Zero-copy
//!
//! A Fetch response is mostly stored record batches. Encoding it with `kafka-protocol` would
//! need every partition's records as one contiguous `Bytes`, i.e. a copy of all the batches
//! into a new buffer. Instead [`encode_fetch_response`] writes the response by hand (v4–v12;
//! the layout is checked against the crate's decoder in the tests) as a list of chunks:
//! small freshly encoded pieces (header, partition fields, the records length prefix) and,
//! between them, the stored batch `Bytes` exactly as the engine returned them (shared with its
//! batch cache or read buffers). The connection writes the chunk list with one vectored
//! `sendmsg` per round (see `connection.rs`), so batch bytes go from the engine's buffer to the
//! socket without being copied or re-encoded by the broker.
//!
//! ## Limits
//!
//! A response carries at most [`response_limit`] record bytes: the request's `max_bytes`
//! clamped to the broker's `fetch_max_bytes` (55 MiB by default, Kafka's `fetch.max.bytes`),
//! and each partition at most its `partition_max_bytes`. Shards read their partitions in
//! parallel, each within the whole limit; [`apply_limits`] then cuts the joined reads in
//! response order, as Kafka does (KIP-74): whole batches while they fit, except that the
//! first batch of the response is kept even when it alone exceeds a limit, so a consumer
//! always progresses. Every length on the wire is checked to fit its i32 before it is
//! written ([`ResponseTooLarge`]), so no limit or input can turn into a negative size prefix.
//!
//! ## Sessions
//!
//! Sessions live on the shard whose connection created them; the shard number is encoded in
//! the low byte of the session id, so a client that reconnects to another shard gets
//! FETCH_SESSION_ID_NOT_FOUND and simply starts a new session (allowed by KIP-227). The cache
//! is bounded (`fetch_session_cache_slots`, split across shards) and evicts the least recently
//! used session. librdkafka and kafka-python do not use sessions (session_id 0, epoch -1);
//! the Java client does.

use std::collections::{BTreeMap, HashMap};

use bytes::{BufMut, Bytes, BytesMut};

use shardlog_engine::StoredBatch;

use crate::wire::errors;

/// One partition's read, as the owning shard answers it: the stored batches to serve as they
/// are, with the partition's offsets at the time of the read.
#[derive(Clone, Debug, Default)]
pub struct ReadOut {
    pub topic: String,
    pub partition: i32,
    pub error: i16,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub batches: Vec<StoredBatch>,
    pub bytes: usize,
    /// To a follower whose log diverges (Fetch v12+ `diverging_epoch`): (epoch, end offset).
    pub diverging_epoch: Option<(i32, i64)>,
    /// With NOT_LEADER_OR_FOLLOWER / FENCED_LEADER_EPOCH: (leader id, leader epoch) as this
    /// broker knows them (KIP-951's `current_leader`, Fetch v12+).
    pub current_leader: Option<(i32, i32)>,
}

/// One topic of a fetch response.
pub struct FetchTopicOut {
    pub name: String,
    pub partitions: Vec<ReadOut>,
}

fn put_uvarint(b: &mut BytesMut, mut v: u32) {
    while v >= 0x80 {
        b.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    b.put_u8(v as u8);
}

fn put_array_len(b: &mut BytesMut, flexible: bool, n: usize) {
    if flexible {
        put_uvarint(b, n as u32 + 1);
    } else {
        b.put_i32(n as i32);
    }
}

fn put_string(b: &mut BytesMut, flexible: bool, s: &str) {
    if flexible {
        put_uvarint(b, s.len() as u32 + 1);
    } else {
        b.put_i16(s.len() as i16);
    }
    b.put_slice(s.as_bytes());
}

/// The most record bytes a response to a request with `request_max_bytes` may carry: the
/// request's limit clamped to the broker's `fetch_max_bytes`; a limit <= 0 is nonsensical and
/// gets the broker's.
pub fn response_limit(request_max_bytes: i32, broker_max_bytes: usize) -> usize {
    match usize::try_from(request_max_bytes) {
        Ok(n) if n > 0 => n.min(broker_max_bytes),
        _ => broker_max_bytes,
    }
}

/// Cuts `outs` (in response order) to the response limit `max_bytes` and each partition's
/// limit (`partition_max`), in whole batches. The first batch of the response is kept whatever
/// its size (KIP-74: the consumer must be able to progress past a batch larger than its
/// limits); a later partition still gets batches that fit what is left. Returns the record
/// bytes kept.
pub fn apply_limits(
    outs: &mut [ReadOut],
    partition_max: impl Fn(&ReadOut) -> usize,
    max_bytes: usize,
) -> usize {
    let mut total = 0usize;
    for o in outs.iter_mut() {
        let pmax = partition_max(o);
        let mut part = 0usize;
        let mut keep = 0usize;
        for b in &o.batches {
            let len = b.len();
            let first_of_response = total == 0;
            let fits = part.saturating_add(len) <= pmax && total.saturating_add(len) <= max_bytes;
            if !(fits || first_of_response) {
                break;
            }
            part += len;
            total += len;
            keep += 1;
        }
        o.batches.truncate(keep);
        o.bytes = part;
    }
    total
}

/// A response whose size (or one partition's records size) does not fit the i32 the protocol
/// gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("fetch response of {0} bytes does not fit the protocol's 2 GiB limit")]
pub struct ResponseTooLarge(pub usize);

/// Encodes a whole response frame (size prefix included) as chunks; stored batches are not
/// copied. Supports Fetch v4..=v12. Refuses (instead of writing a wrapped-around length) a
/// response or a partition's records larger than `i32::MAX`; [`apply_limits`] keeps real
/// responses far below that.
pub fn encode_fetch_response(
    version: i16,
    correlation_id: i32,
    error_code: i16,
    session_id: i32,
    topics: &[FetchTopicOut],
) -> Result<Vec<Bytes>, ResponseTooLarge> {
    let flexible = version >= 12;
    let mut chunks: Vec<Bytes> = Vec::with_capacity(4 + topics.len() * 4);
    let mut cur = BytesMut::with_capacity(256);
    cur.put_i32(correlation_id);
    if flexible {
        cur.put_u8(0); // response header tagged fields
    }
    cur.put_i32(0); // throttle_time_ms
    if version >= 7 {
        cur.put_i16(error_code);
        cur.put_i32(session_id);
    }
    put_array_len(&mut cur, flexible, topics.len());
    for t in topics {
        put_string(&mut cur, flexible, &t.name);
        put_array_len(&mut cur, flexible, t.partitions.len());
        for p in &t.partitions {
            cur.put_i32(p.partition);
            cur.put_i16(p.error);
            cur.put_i64(p.high_watermark);
            cur.put_i64(p.high_watermark); // last_stable_offset: no transactions
            if version >= 5 {
                cur.put_i64(p.log_start_offset);
            }
            put_array_len(&mut cur, flexible, 0); // aborted_transactions: empty
            if version >= 11 {
                cur.put_i32(-1); // preferred_read_replica
            }
            let len: usize = p.batches.iter().map(StoredBatch::len).sum();
            let wire_len = i32::try_from(len).map_err(|_| ResponseTooLarge(len))?;
            if flexible {
                // wire_len < 2^31, so + 1 fits a u32.
                put_uvarint(&mut cur, wire_len as u32 + 1);
            } else {
                cur.put_i32(wire_len);
            }
            if len > 0 {
                chunks.push(cur.split().freeze());
                chunks.extend(p.batches.iter().flat_map(|b| b.chunks().cloned()));
            }
            if flexible {
                // Partition tagged fields: diverging_epoch (tag 0), current_leader (tag 1).
                let diverging = p.diverging_epoch;
                let leader = p.current_leader;
                cur.put_u8(u8::from(diverging.is_some()) + u8::from(leader.is_some()));
                if let Some((epoch, end_offset)) = diverging {
                    cur.put_u8(0); // tag
                    cur.put_u8(13); // size: epoch, end_offset, no tagged fields
                    cur.put_i32(epoch);
                    cur.put_i64(end_offset);
                    cur.put_u8(0);
                }
                if let Some((leader_id, leader_epoch)) = leader {
                    cur.put_u8(1); // tag
                    cur.put_u8(9); // size: leader_id, leader_epoch, no tagged fields
                    cur.put_i32(leader_id);
                    cur.put_i32(leader_epoch);
                    cur.put_u8(0);
                }
            }
        }
        if flexible {
            cur.put_u8(0); // topic tagged fields
        }
    }
    if flexible {
        cur.put_u8(0); // body tagged fields
    }
    chunks.push(cur.freeze());
    let total: usize = chunks.iter().map(Bytes::len).sum();
    let size = i32::try_from(total).map_err(|_| ResponseTooLarge(total))?;
    chunks.insert(0, Bytes::copy_from_slice(&size.to_be_bytes()));
    Ok(chunks)
}

/// What a session remembers per partition.
#[derive(Clone, Debug)]
pub struct SessionPartition {
    pub offset: i64,
    pub max_bytes: i32,
    pub last_high_watermark: i64,
    pub last_log_start: i64,
}

#[derive(Debug)]
pub struct FetchSession {
    pub next_epoch: i32,
    pub partitions: BTreeMap<(String, i32), SessionPartition>,
    last_used: u64,
}

/// Outcome of looking a fetch request's session up.
#[derive(Debug, PartialEq, Eq)]
pub enum SessionStep {
    /// No session: answer every requested partition; session id in the response.
    Full { session_id: i32 },
    /// Existing session, incremental: answer changed partitions only.
    Incremental { session_id: i32 },
    /// Top-level error, no partitions.
    Error(i16),
}

pub struct FetchSessions {
    shard: usize,
    slots: usize,
    sessions: HashMap<i32, FetchSession>,
    clock: u64,
    seed: u64,
}

impl FetchSessions {
    pub fn new(shard: usize, slots: usize) -> Self {
        let seed = crate::controller::metadata::new_topic_id() as u64 | 1;
        Self {
            shard,
            slots,
            sessions: HashMap::new(),
            clock: 0,
            seed,
        }
    }

    fn new_id(&mut self) -> i32 {
        loop {
            // xorshift64
            self.seed ^= self.seed << 13;
            self.seed ^= self.seed >> 7;
            self.seed ^= self.seed << 17;
            let hi = (self.seed % ((i32::MAX as u64) >> 8)) as i32;
            let id = (hi << 8) | (self.shard as i32 & 0xff);
            if id > 0 && !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Applies the session fields of a request. `parts` are the requested partitions
    /// (topic, partition, offset, max_bytes), `forgotten` the ones to drop. Returns the step
    /// and the partitions to read.
    pub fn begin(
        &mut self,
        session_id: i32,
        epoch: i32,
        parts: Vec<(String, i32, i64, i32)>,
        forgotten: Vec<(String, i32)>,
    ) -> (SessionStep, Vec<(String, i32, i64, i32)>) {
        self.clock += 1;
        match (session_id, epoch) {
            (0, -1) => (SessionStep::Full { session_id: 0 }, parts),
            (id, -1) => {
                self.sessions.remove(&id);
                (SessionStep::Full { session_id: 0 }, parts)
            }
            (id, 0) => {
                if id != 0 {
                    self.sessions.remove(&id);
                }
                if self.slots == 0 {
                    return (SessionStep::Full { session_id: 0 }, parts);
                }
                if self.sessions.len() >= self.slots {
                    if let Some(&old) = self
                        .sessions
                        .iter()
                        .min_by_key(|(_, s)| s.last_used)
                        .map(|(k, _)| k)
                    {
                        tracing::debug!(
                            session = old,
                            "evicting least recently used fetch session"
                        );
                        self.sessions.remove(&old);
                    }
                }
                let new = self.new_id();
                let partitions = parts
                    .iter()
                    .map(|(t, p, off, max)| {
                        (
                            (t.clone(), *p),
                            SessionPartition {
                                offset: *off,
                                max_bytes: *max,
                                last_high_watermark: -1,
                                last_log_start: -1,
                            },
                        )
                    })
                    .collect();
                self.sessions.insert(
                    new,
                    FetchSession {
                        next_epoch: 1,
                        partitions,
                        last_used: self.clock,
                    },
                );
                (SessionStep::Full { session_id: new }, parts)
            }
            (id, e) => {
                let clock = self.clock;
                let Some(s) = self.sessions.get_mut(&id) else {
                    return (
                        SessionStep::Error(errors::FETCH_SESSION_ID_NOT_FOUND),
                        Vec::new(),
                    );
                };
                if e != s.next_epoch {
                    return (
                        SessionStep::Error(errors::INVALID_FETCH_SESSION_EPOCH),
                        Vec::new(),
                    );
                }
                s.next_epoch = if e == i32::MAX { 1 } else { e + 1 };
                s.last_used = clock;
                for (t, p, off, max) in parts {
                    let entry = s.partitions.entry((t, p)).or_insert(SessionPartition {
                        offset: off,
                        max_bytes: max,
                        last_high_watermark: -1,
                        last_log_start: -1,
                    });
                    entry.offset = off;
                    entry.max_bytes = max;
                }
                for key in forgotten {
                    s.partitions.remove(&key);
                }
                let all = s
                    .partitions
                    .iter()
                    .map(|((t, p), sp)| (t.clone(), *p, sp.offset, sp.max_bytes))
                    .collect();
                (SessionStep::Incremental { session_id: id }, all)
            }
        }
    }

    /// After reading: for an incremental step keep only partitions worth reporting, and
    /// remember what was reported.
    pub fn finish(&mut self, step: &SessionStep, outs: &mut Vec<ReadOut>) {
        let (id, incremental) = match step {
            SessionStep::Full { session_id } if *session_id != 0 => (*session_id, false),
            SessionStep::Incremental { session_id } => (*session_id, true),
            _ => return,
        };
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        outs.retain(|o| {
            let Some(sp) = s.partitions.get_mut(&(o.topic.clone(), o.partition)) else {
                return true;
            };
            let changed = !o.batches.is_empty()
                || o.error != errors::NONE
                || o.high_watermark != sp.last_high_watermark
                || o.log_start_offset != sp.last_log_start;
            sp.last_high_watermark = o.high_watermark;
            sp.last_log_start = o.log_start_offset;
            !incremental || changed
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::FetchResponse;
    use kafka_protocol::protocol::Decodable;

    fn sample() -> Vec<FetchTopicOut> {
        let b1 = StoredBatch::whole(Bytes::from(shardlog_engine::batch::build(0, 3, 10, 1)));
        // As the batch cache holds it: the header and the records in separate buffers.
        let b2 = Bytes::from(shardlog_engine::batch::build(3, 2, 5, 2));
        let b2 = StoredBatch::split(b2.slice(..61), b2.slice(61..));
        vec![
            FetchTopicOut {
                name: "alpha".into(),
                partitions: vec![
                    ReadOut {
                        topic: "alpha".into(),
                        partition: 0,
                        error: 0,
                        high_watermark: 5,
                        log_start_offset: 0,
                        bytes: b1.len() + b2.len(),
                        batches: vec![b1, b2],
                        ..ReadOut::default()
                    },
                    ReadOut {
                        topic: "alpha".into(),
                        partition: 1,
                        error: errors::OFFSET_OUT_OF_RANGE,
                        high_watermark: 0,
                        log_start_offset: 0,
                        bytes: 0,
                        batches: vec![],
                        diverging_epoch: Some((2, 40)),
                        current_leader: Some((3, 7)),
                    },
                ],
            },
            FetchTopicOut {
                name: "b".into(),
                partitions: vec![],
            },
        ]
    }

    #[test]
    fn hand_encoded_response_decodes_with_the_reference_decoder() {
        let topics = sample();
        for version in 4..=12i16 {
            let chunks = encode_fetch_response(version, 77, 0, 1234, &topics).expect("fits");
            let whole: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
            let len = i32::from_be_bytes([whole[0], whole[1], whole[2], whole[3]]) as usize;
            assert_eq!(len, whole.len() - 4, "v{version} size prefix");
            let mut body = Bytes::from(whole[4..].to_vec());
            let corr = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
            assert_eq!(corr, 77);
            let _ = body.split_to(if version >= 12 { 5 } else { 4 });
            let r = FetchResponse::decode(&mut body, version).expect("decodes");
            assert!(body.is_empty(), "v{version}: {} trailing bytes", body.len());
            assert_eq!(r.responses.len(), 2);
            if version >= 7 {
                assert_eq!(r.session_id, 1234);
            }
            let p0 = &r.responses[0].partitions[0];
            assert_eq!(p0.high_watermark, 5);
            let recs = p0.records.as_ref().expect("records");
            let expect: Vec<u8> = topics[0].partitions[0]
                .batches
                .iter()
                .flat_map(|b| b.to_bytes().to_vec())
                .collect();
            assert_eq!(&recs[..], &expect[..]);
            let p1 = &r.responses[0].partitions[1];
            assert_eq!(p1.error_code, errors::OFFSET_OUT_OF_RANGE);
            assert_eq!(p1.records.as_ref().map(|r| r.len()), Some(0));
            if version >= 12 {
                // The tagged fields a follower and KIP-951 clients read.
                assert_eq!(
                    (p1.diverging_epoch.epoch, p1.diverging_epoch.end_offset),
                    (2, 40)
                );
                assert_eq!(
                    (
                        p1.current_leader.leader_id.0,
                        p1.current_leader.leader_epoch
                    ),
                    (3, 7)
                );
                assert_eq!(p0.diverging_epoch.epoch, -1);
                assert_eq!(p0.current_leader.leader_id.0, -1);
            }
        }
    }

    #[test]
    fn stored_batches_are_not_copied() {
        let topics = sample();
        let chunks = encode_fetch_response(11, 1, 0, 0, &topics).expect("fits");
        for b in &topics[0].partitions[0].batches {
            for stored in b.chunks() {
                assert!(
                    chunks
                        .iter()
                        .any(|c| c.as_ptr() == stored.as_ptr() && c.len() == stored.len()),
                    "each stored buffer is one of the chunks, by pointer"
                );
            }
        }
    }

    /// `n` stored "batches" sharing one buffer of `batch_bytes` (no memory per batch: they are
    /// clones of one `Bytes`; the limits and the encoder look at lengths only), as one
    /// partition's read.
    fn big_read(partition: i32, n: usize, batch_bytes: usize) -> ReadOut {
        let one = Bytes::from(vec![0u8; batch_bytes]);
        ReadOut {
            topic: "big".into(),
            partition,
            high_watermark: n as i64,
            bytes: n * batch_bytes,
            batches: (0..n).map(|_| StoredBatch::whole(one.clone())).collect(),
            ..Default::default()
        }
    }

    fn size_prefix(chunks: &[Bytes]) -> (i32, usize) {
        let total: usize = chunks.iter().map(Bytes::len).sum();
        let mut head = [0u8; 4];
        head.copy_from_slice(&chunks[0][..4]);
        (i32::from_be_bytes(head), total - 4)
    }

    /// The case: `max_bytes` <= 0 (or 2^31-1) and `partition_max_bytes` 2^31-1 over
    /// partitions holding 3 GiB. Unlimited, the response would be 3 GiB and its i32 size
    /// prefix negative; limited it is `fetch_max_bytes` and the prefix is the exact length.
    #[test]
    fn all_data_up_to_and_past_2_gib_is_cut_to_the_broker_limit() {
        const MIB: usize = 1 << 20;
        let broker_max = 55 * MIB;
        for request_max in [0, -1, i32::MIN, i32::MAX] {
            let limit = response_limit(request_max, broker_max);
            assert_eq!(limit, broker_max, "request max_bytes {request_max}");
            let mut outs = vec![big_read(0, 1536, MIB), big_read(1, 1536, MIB)];
            let kept = apply_limits(&mut outs, |_| i32::MAX as usize, limit);
            assert_eq!(kept, 55 * MIB);
            assert_eq!((outs[0].batches.len(), outs[1].batches.len()), (55, 0));
            let topics = vec![FetchTopicOut {
                name: "big".into(),
                partitions: outs,
            }];
            for version in [4i16, 11, 12] {
                let chunks = encode_fetch_response(version, 1, 0, 0, &topics).expect("fits");
                let (prefix, len) = size_prefix(&chunks);
                assert!(prefix > 0);
                assert_eq!(prefix as usize, len, "v{version}");
                assert!(len > 55 * MIB && len < 55 * MIB + 1024);
            }
        }
        // A smaller request limit wins over the broker's.
        assert_eq!(response_limit(1000, broker_max), 1000);
    }

    #[test]
    fn encoder_refuses_sizes_that_do_not_fit_an_i32() {
        const MIB: usize = 1 << 20;
        // 2 GiB in one partition: its records length alone does not fit.
        let one = vec![FetchTopicOut {
            name: "big".into(),
            partitions: vec![big_read(0, 2048, MIB)],
        }];
        for version in [4i16, 12] {
            assert_eq!(
                encode_fetch_response(version, 1, 0, 0, &one),
                Err(ResponseTooLarge(2048 * MIB))
            );
        }
        // Two partitions of 1.5 GiB: each fits, the whole response does not.
        let two = vec![FetchTopicOut {
            name: "big".into(),
            partitions: vec![big_read(0, 1536, MIB), big_read(1, 1536, MIB)],
        }];
        let e = encode_fetch_response(4, 1, 0, 0, &two).expect_err("3 GiB");
        assert!(e.0 > 3072 * MIB);
    }

    #[test]
    fn limits_keep_the_first_batch_and_fill_later_partitions() {
        let sizes = |outs: &[ReadOut]| -> Vec<usize> { outs.iter().map(|o| o.bytes).collect() };
        // The first batch (1000 bytes) exceeds both limits and is kept; nothing else is.
        let mut outs = vec![big_read(0, 3, 1000), big_read(1, 3, 100)];
        assert_eq!(apply_limits(&mut outs, |_| 500, 700), 1000);
        assert_eq!(sizes(&outs), vec![1000, 0]);
        // Empty first partition: the first batch of the response is the next partition's.
        let mut outs = vec![big_read(0, 0, 100), big_read(1, 2, 1000)];
        assert_eq!(apply_limits(&mut outs, |_| 10, 10), 1000);
        assert_eq!(sizes(&outs), vec![0, 1000]);
        // Per-partition limits, and a later partition gets what still fits the response.
        let mut outs = vec![
            big_read(0, 5, 1000),
            big_read(1, 5, 1000),
            big_read(2, 5, 200),
        ];
        assert_eq!(
            apply_limits(
                &mut outs,
                |o| [2500, 5000, 5000][o.partition as usize],
                4500
            ),
            4400
        );
        assert_eq!(sizes(&outs), vec![2000, 2000, 400]);
        assert_eq!(outs[1].batches.len(), 2);
        // Partition limit 0 (clamped from a negative request value): only the first batch.
        let mut outs = vec![big_read(0, 3, 100), big_read(1, 3, 100)];
        assert_eq!(apply_limits(&mut outs, |_| 0, 1 << 20), 100);
        assert_eq!(sizes(&outs), vec![100, 0]);
    }

    fn parts(list: &[(&str, i32, i64)]) -> Vec<(String, i32, i64, i32)> {
        list.iter()
            .map(|(t, p, o)| (t.to_string(), *p, *o, 1000))
            .collect()
    }

    #[test]
    fn session_lifecycle() {
        let mut s = FetchSessions::new(3, 2);
        let (step, p) = s.begin(0, -1, parts(&[("a", 0, 0)]), vec![]);
        assert_eq!(step, SessionStep::Full { session_id: 0 });
        assert_eq!(p.len(), 1);
        assert!(s.is_empty());

        let (step, _) = s.begin(0, 0, parts(&[("a", 0, 0), ("a", 1, 0)]), vec![]);
        let SessionStep::Full { session_id: id } = step else {
            panic!("new session expected, got {step:?}")
        };
        assert!(id > 0 && id & 0xff == 3);
        let mut outs = vec![
            ReadOut {
                topic: "a".into(),
                partition: 0,
                high_watermark: 5,
                ..Default::default()
            },
            ReadOut {
                topic: "a".into(),
                partition: 1,
                high_watermark: 0,
                ..Default::default()
            },
        ];
        s.finish(&step, &mut outs);
        assert_eq!(outs.len(), 2, "full response keeps everything");

        // Incremental: only a:0 moves; a:1 unchanged and without data is left out.
        let (step, p) = s.begin(id, 1, parts(&[("a", 0, 5)]), vec![]);
        assert_eq!(step, SessionStep::Incremental { session_id: id });
        assert_eq!(p.len(), 2, "reads every session partition");
        assert!(p.contains(&("a".to_string(), 0, 5, 1000)));
        let mut outs = vec![
            ReadOut {
                topic: "a".into(),
                partition: 0,
                high_watermark: 7,
                ..Default::default()
            },
            ReadOut {
                topic: "a".into(),
                partition: 1,
                high_watermark: 0,
                ..Default::default()
            },
        ];
        s.finish(&step, &mut outs);
        assert_eq!(outs.len(), 1);
        assert_eq!(outs[0].partition, 0);

        assert_eq!(
            s.begin(id, 5, vec![], vec![]).0,
            SessionStep::Error(errors::INVALID_FETCH_SESSION_EPOCH)
        );
        let (_, p) = s.begin(id, 2, vec![], vec![("a".into(), 1)]);
        assert_eq!(p.len(), 1, "forgotten partition dropped");
        assert_eq!(
            s.begin(999, 1, vec![], vec![]).0,
            SessionStep::Error(errors::FETCH_SESSION_ID_NOT_FOUND)
        );
        // Closing.
        let (step, _) = s.begin(id, -1, vec![], vec![]);
        assert_eq!(step, SessionStep::Full { session_id: 0 });
        assert!(s.is_empty());
    }

    #[test]
    fn cache_is_bounded() {
        let mut s = FetchSessions::new(0, 2);
        for _ in 0..5 {
            s.begin(0, 0, parts(&[("a", 0, 0)]), vec![]);
        }
        assert_eq!(s.len(), 2);
    }
}
