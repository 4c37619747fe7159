//! A batching producer: records accumulate per partition until `batch_size` bytes or `linger`,
//! a sender task turns ready batches into Produce requests (one per leader, pipelined on its
//! connection), and every batch's outcome is reported on a bounded channel.
//!
//! Memory is bounded by `buffer_memory` (a send waits for room), the report channel is bounded
//! (the sender waits for the reader), and each connection bounds its requests in flight.

use std::collections::{HashMap, VecDeque};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, Notify, Semaphore, TryAcquireError};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::client::Client;
use crate::conn::{ProduceSent, ProduceSet};
use crate::error::{ClientError, Result};
use crate::murmur2::partition_for_key;
use crate::records::{BatchBuilder, Compression, OutRecord, ProducerStamp, BATCH_HEADER_LEN};
use crate::timer::PreciseTimer;

/// Per-record overhead counted against `buffer_memory` and `batch_size` (varints, attributes).
const RECORD_OVERHEAD: usize = 16;

/// Producer settings.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// 0 (no response), 1 (leader) or -1 (all in-sync replicas).
    pub acks: i16,
    /// A partition's batch is sent once it holds this many bytes.
    pub batch_size: usize,
    /// ...or once its first record is this old.
    pub linger: Duration,
    /// Batch compression.
    pub compression: Compression,
    /// Idempotent producer (InitProducerId + sequence numbers).
    pub idempotent: bool,
    /// Bytes of records buffered (accumulating or in flight) at most.
    pub buffer_memory: usize,
    /// Produce request `timeout_ms` (and the client-side wait beyond the connection timeout).
    pub request_timeout: Duration,
    /// Retries of a batch after a retriable error.
    pub retries: u32,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: -1,
            batch_size: 16 * 1024,
            linger: Duration::from_millis(5),
            compression: Compression::None,
            idempotent: false,
            buffer_memory: 64 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            retries: 3,
        }
    }
}

/// Caller data carried with each record and handed back in its [`Delivery`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Token(pub u64, pub u64);

/// The outcome of one batch.
#[derive(Debug)]
pub struct Delivery {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: i32,
    /// Offset of the first record (-1 with acks=0 or on error).
    pub base_offset: i64,
    /// The records' tokens in order: record `i` has offset `base_offset + i`.
    pub tokens: Vec<Token>,
    /// Key + value bytes of the batch's records.
    pub payload_bytes: usize,
    /// Bytes of the encoded batch on the wire.
    pub wire_bytes: usize,
    /// Why the batch failed, if it did.
    pub error: Option<ClientError>,
    /// When the Produce request carrying the batch (its last attempt) was queued on the
    /// connection, after linger and a free in-flight slot (None: never sent).
    pub sent_at: Option<std::time::Instant>,
    /// When the outcome was known (the response processed, or the failure).
    pub completed_at: std::time::Instant,
}

struct Batch {
    topic: Arc<str>,
    partition: i32,
    /// Records encoded as they were sent; taken by `encode`.
    builder: Option<BatchBuilder>,
    payload: usize,
    tokens: Vec<Token>,
    bytes: usize,
    created: Instant,
    encoded: Option<Bytes>,
    attempts: u32,
    sent_at: Option<std::time::Instant>,
}

/// Open batches and partitioning state of one topic.
struct TopicAcc {
    /// The open batch of each partition (index = partition). Its length is the partition
    /// count as last read from the client's metadata cache (read again whenever one of the
    /// topic's batches closes, or a record names a partition past it); it only grows.
    open: Vec<Option<Batch>>,
    /// Where keyless records go; moves on when its batch closes.
    sticky: i32,
}

impl TopicAcc {
    fn partitions(&self) -> i32 {
        // Never more than an i32 partition count (see `refresh_partitions`).
        self.open.len() as i32
    }
}

#[derive(Default)]
struct Accum {
    topics: HashMap<Arc<str>, TopicAcc, FxBuild>,
    ready: VecDeque<Batch>,
    round_robin: u32,
    next_sequence: HashMap<(Arc<str>, i32), i32>,
    flush: bool,
}

/// A fast hasher for the producer's per-record topic lookup (names chosen by the application
/// itself, so no defence against crafted collisions is needed). Multiply-rotate, as in rustc.
#[derive(Default, Clone, Copy)]
struct FxBuild;

struct Fx(u64);

impl std::hash::BuildHasher for FxBuild {
    type Hasher = Fx;
    fn build_hasher(&self) -> Fx {
        Fx(0)
    }
}

impl std::hash::Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(w));
        }
    }
    fn write_u8(&mut self, b: u8) {
        self.add(u64::from(b));
    }
    fn write_usize(&mut self, v: usize) {
        self.add(v as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

impl Fx {
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

struct Inner {
    client: Arc<Client>,
    cfg: ProducerConfig,
    acc: Mutex<Accum>,
    wake: Notify,
    idle: Notify,
    memory: Arc<Semaphore>,
    outstanding: AtomicUsize,
    reports: mpsc::Sender<Delivery>,
    producer: (i64, i16),
    closed: AtomicBool,
    /// Buffers of acknowledged batches, reused for new ones (at most `SPARE_BUFFERS`): a fresh
    /// batch-sized allocation costs a page fault and a zeroed page per 4 KiB.
    spare: Mutex<Vec<BytesMut>>,
}

/// Batch buffers kept for reuse, at most. Each holds at most twice `batch_size`; they are
/// memory on top of `buffer_memory` (which counts the records buffered).
const SPARE_BUFFERS: usize = 8;

/// Capacity of a new batch's buffer when there is no spare one (at most `batch_size`); it grows
/// as records are added.
const FRESH_BUFFER: usize = 64 * 1024;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// A batching, pipelining producer.
pub struct Producer {
    inner: Arc<Inner>,
    sender: Option<JoinHandle<()>>,
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.wake.notify_one();
        if let Some(h) = self.sender.take() {
            h.abort();
        }
    }
}

impl Producer {
    /// Creates a producer on `client`; batch outcomes go to `reports` (which must be drained).
    pub async fn new(
        client: Arc<Client>,
        cfg: ProducerConfig,
        reports: mpsc::Sender<Delivery>,
    ) -> Result<Producer> {
        if !matches!(cfg.acks, -1..=1) {
            return Err(ClientError::InvalidArgument(format!("acks {}", cfg.acks)));
        }
        if cfg.idempotent && cfg.acks != -1 {
            return Err(ClientError::InvalidArgument(
                "an idempotent producer needs acks=all".into(),
            ));
        }
        if cfg.buffer_memory < cfg.batch_size || cfg.buffer_memory > (u32::MAX as usize) {
            return Err(ClientError::InvalidArgument(
                "buffer_memory must be >= batch_size and < 4 GiB".into(),
            ));
        }
        let producer = if cfg.idempotent {
            client.init_producer_id().await?
        } else {
            (-1, -1)
        };
        let inner = Arc::new(Inner {
            client,
            memory: Arc::new(Semaphore::new(cfg.buffer_memory)),
            cfg,
            acc: Mutex::new(Accum::default()),
            wake: Notify::new(),
            idle: Notify::new(),
            outstanding: AtomicUsize::new(0),
            reports,
            producer,
            closed: AtomicBool::new(false),
            spare: Mutex::new(Vec::new()),
        });
        let sender = tokio::spawn(sender_loop(inner.clone()));
        Ok(Producer {
            inner,
            sender: Some(sender),
        })
    }

    /// The producer id and epoch (-1, -1 unless idempotent).
    pub fn producer_id(&self) -> (i64, i16) {
        self.inner.producer
    }

    /// Queues a record. `partition` None: by key (murmur2, like the Java client) or, without a
    /// key, a sticky partition that moves on when its batch is sent. Waits while the buffer is
    /// full.
    pub async fn send(
        &self,
        topic: &Arc<str>,
        partition: Option<i32>,
        record: OutRecord,
        token: Token,
    ) -> Result<()> {
        let value = record.value.as_deref().map(|v| [v]);
        self.send_parts(
            topic,
            partition,
            record.key.as_deref(),
            value.as_ref().map(|v| &v[..]),
            record.timestamp_ms,
            token,
        )
        .await
    }

    /// Like [`Producer::send`], with the value given in parts that are written one after the
    /// other (None: a null value). The record is encoded into its batch here, so the caller's
    /// buffers are copied once and can be reused as soon as this returns.
    pub async fn send_parts(
        &self,
        topic: &Arc<str>,
        partition: Option<i32>,
        key: Option<&[u8]>,
        value: Option<&[&[u8]]>,
        timestamp_ms: i64,
        token: Token,
    ) -> Result<()> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::SeqCst) {
            return Err(ClientError::Closed);
        }
        let key_len = key.map_or(0, |k| k.len());
        let value_len = value.map_or(0, |v| v.iter().map(|p| p.len()).sum());
        let size = key_len + value_len + RECORD_OVERHEAD;
        if size > inner.cfg.buffer_memory {
            return Err(ClientError::InvalidArgument(format!(
                "record of {size} bytes exceeds buffer_memory"
            )));
        }
        match inner.memory.try_acquire_many(size as u32) {
            Ok(permit) => permit.forget(),
            Err(TryAcquireError::Closed) => return Err(ClientError::Closed),
            Err(TryAcquireError::NoPermits) => inner
                .memory
                .acquire_many(size as u32)
                .await
                .map_err(|_| ClientError::Closed)?
                .forget(),
        }
        inner.outstanding.fetch_add(1, Ordering::SeqCst);
        let unaccount = || {
            inner.memory.add_permits(size);
            inner.outstanding.fetch_sub(1, Ordering::SeqCst);
        };
        let mut notify = inner.cfg.linger.is_zero();
        loop {
            // One lock per record: `false` when the topic has no table yet.
            let placed = 'place: {
                let mut guard = lock(&inner.acc);
                let acc = &mut *guard;
                let Some(t) = acc.topics.get_mut(&**topic) else {
                    break 'place false;
                };
                if partition.is_some_and(|p| p >= t.partitions()) {
                    // Perhaps a partition that was added since: read the count again.
                    refresh_partitions(inner, t, topic);
                }
                let mut p = match (partition, key) {
                    (Some(p), _) => p,
                    (None, Some(k)) => partition_for_key(k, t.partitions()),
                    (None, None) => t.sticky,
                };
                // A record that does not fit in what is left of its partition's open batch starts
                // the next batch; a keyless record then follows the
                // sticky partition to where it moved.
                let full = usize::try_from(p)
                    .ok()
                    .and_then(|i| t.open.get(i))
                    .and_then(|b| b.as_ref())
                    .is_some_and(|b| !b.tokens.is_empty() && b.bytes + size > inner.cfg.batch_size);
                if full {
                    if let Some(b) = t.open.get_mut(p as usize).and_then(Option::take) {
                        close_batch(inner, &mut acc.ready, &mut acc.round_robin, t, topic, b);
                    }
                    if partition.is_none() && key.is_none() {
                        p = t.sticky;
                    }
                }
                let Some(slot) = usize::try_from(p).ok().filter(|&i| i < t.open.len()) else {
                    drop(guard);
                    unaccount();
                    return Err(ClientError::UnknownTopicOrPartition(format!("{topic}-{p}")));
                };
                let batch = match &mut t.open[slot] {
                    Some(b) => b,
                    empty => {
                        notify = true;
                        // A spare buffer if there is one (used as it is: asking for more room
                        // than it has would reallocate it, copying it whole); otherwise a small
                        // one that grows with the batch, so partitions with little traffic stay
                        // small.
                        let spare = lock(&inner.spare).pop();
                        let record_len = BatchBuilder::record_len(key_len, value_len);
                        let capacity = match &spare {
                            Some(b) => b
                                .capacity()
                                .saturating_sub(BATCH_HEADER_LEN)
                                .max(record_len),
                            None => inner.cfg.batch_size.min(FRESH_BUFFER).max(record_len),
                        };
                        empty.insert(Batch {
                            topic: topic.clone(),
                            partition: p,
                            builder: Some(BatchBuilder::in_buffer(
                                spare.unwrap_or_default(),
                                capacity,
                            )),
                            payload: 0,
                            tokens: Vec::new(),
                            bytes: 0,
                            created: Instant::now(),
                            encoded: None,
                            attempts: 0,
                            sent_at: None,
                        })
                    }
                };
                let pushed = match batch.builder.as_mut() {
                    Some(b) => b.push(key, value, timestamp_ms),
                    None => Err(ClientError::InvalidArgument("batch already encoded".into())),
                };
                if let Err(e) = pushed {
                    if batch.tokens.is_empty() {
                        t.open[slot] = None;
                    }
                    drop(guard);
                    unaccount();
                    return Err(e);
                }
                batch.payload += key_len + value_len;
                batch.tokens.push(token);
                batch.bytes += size;
                if batch.bytes >= inner.cfg.batch_size {
                    if let Some(b) = t.open[slot].take() {
                        close_batch(inner, &mut acc.ready, &mut acc.round_robin, t, topic, b);
                    }
                    notify = true;
                }
                true
            };
            if placed {
                break;
            }
            // The topic's first record: its partition count comes from the client (from its
            // metadata cache or a Metadata request), then the record is placed.
            let n = match inner.client.partition_count_or_fetch(topic).await {
                Ok(n) => i32::try_from(n).unwrap_or(i32::MAX),
                Err(e) => {
                    unaccount();
                    return Err(e);
                }
            };
            if n <= 0 {
                unaccount();
                return Err(ClientError::UnknownTopicOrPartition(topic.to_string()));
            }
            let mut acc = lock(&inner.acc);
            let sticky = (acc.round_robin % n as u32) as i32;
            acc.topics.entry(topic.clone()).or_insert_with(|| TopicAcc {
                open: (0..n).map(|_| None).collect(),
                sticky,
            });
        }
        if notify {
            inner.wake.notify_one();
        }
        // A send that finds room never waits, so a caller sending in a loop would keep its
        // worker thread: spending tokio's cooperative budget yields now and then, which lets the
        // sender task (and anything else on that thread) run.
        tokio::task::consume_budget().await;
        Ok(())
    }

    /// Sends everything buffered and waits until every record has been reported.
    pub async fn flush(&self) {
        lock(&self.inner.acc).flush = true;
        self.inner.wake.notify_one();
        loop {
            let mut idle = pin!(self.inner.idle.notified());
            idle.as_mut().enable();
            if self.inner.outstanding.load(Ordering::SeqCst) == 0 {
                break;
            }
            idle.await;
        }
    }

    /// Records queued or in flight.
    pub fn outstanding(&self) -> usize {
        self.inner.outstanding.load(Ordering::SeqCst)
    }

    /// Flushes and stops the sender task.
    pub async fn close(mut self) {
        self.flush().await;
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.wake.notify_one();
        if let Some(h) = self.sender.take() {
            let _ = h.await;
        }
    }
}

/// Reads the topic's partition count again from the client's metadata cache; it only grows
/// (Kafka never removes partitions).
fn refresh_partitions(inner: &Inner, t: &mut TopicAcc, topic: &str) {
    if let Some(n) = inner.client.partition_count(topic) {
        let n = i32::try_from(n).unwrap_or(i32::MAX);
        if n > t.partitions() {
            t.open.resize_with(n as usize, || None);
        }
    }
}

/// Moves a batch to the ready queue; a keyless topic's sticky partition moves on. The topic's
/// partition count is read again from the metadata cache (partitions may have been added).
fn close_batch(
    inner: &Inner,
    ready: &mut VecDeque<Batch>,
    round_robin: &mut u32,
    t: &mut TopicAcc,
    topic: &str,
    b: Batch,
) {
    refresh_partitions(inner, t, topic);
    if t.sticky == b.partition {
        *round_robin = round_robin.wrapping_add(1);
        t.sticky = (b.partition + 1) % t.partitions().max(1);
    }
    ready.push_back(b);
}

async fn sender_loop(inner: Arc<Inner>) {
    // A millisecond linger must not become two (tokio's timer wheel rounds up to 1 ms ticks).
    let mut timer = PreciseTimer::new();
    loop {
        let (batches, deadline) = take_ready(&inner);
        if batches.is_empty() {
            if inner.closed.load(Ordering::SeqCst) {
                return;
            }
            let wake = inner.wake.notified();
            match deadline {
                Some(d) => {
                    tokio::select! {
                        _ = wake => {}
                        _ = timer.sleep_until(d) => {}
                    }
                }
                None => wake.await,
            }
            continue;
        }
        send_batches(&inner, batches).await;
    }
}

fn take_ready(inner: &Inner) -> (Vec<Batch>, Option<Instant>) {
    let now = Instant::now();
    let linger = inner.cfg.linger;
    let mut acc = lock(&inner.acc);
    let acc = &mut *acc;
    let flush = std::mem::take(&mut acc.flush);
    let mut deadline: Option<Instant> = None;
    for (name, t) in acc.topics.iter_mut() {
        for slot in 0..t.open.len() {
            let Some(created) = t.open[slot].as_ref().map(|b| b.created) else {
                continue;
            };
            if flush || linger.is_zero() || created + linger <= now {
                if let Some(b) = t.open[slot].take() {
                    close_batch(inner, &mut acc.ready, &mut acc.round_robin, t, name, b);
                }
            } else {
                let due = created + linger;
                deadline = Some(deadline.map_or(due, |d| d.min(due)));
            }
        }
    }
    (acc.ready.drain(..).collect(), deadline)
}

/// Groups batches into Produce requests (per leader; one batch per partition per request, so
/// a partition's batches go out in order) and sends them.
async fn send_batches(inner: &Arc<Inner>, batches: Vec<Batch>) {
    let mut rounds: Vec<HashMap<i32, Vec<Batch>>> = Vec::new();
    let mut seen: HashMap<(Arc<str>, i32), usize> = HashMap::new();
    for b in batches {
        let leader = match inner.client.leader(&b.topic, b.partition) {
            Ok(l) => l,
            Err(e) => {
                retry_or_fail(inner, b, e).await;
                continue;
            }
        };
        let round = seen.entry((b.topic.clone(), b.partition)).or_insert(0);
        if rounds.len() <= *round {
            rounds.push(HashMap::new());
        }
        rounds[*round].entry(leader).or_default().push(b);
        *round += 1;
    }
    for round in rounds {
        for (leader, batches) in round {
            send_request(inner, leader, batches).await;
        }
    }
}

fn encode(inner: &Inner, b: &mut Batch) -> Result<Bytes> {
    if let Some(e) = &b.encoded {
        return Ok(e.clone());
    }
    let stamp = if inner.cfg.idempotent {
        let mut acc = lock(&inner.acc);
        let seq = acc
            .next_sequence
            .entry((b.topic.clone(), b.partition))
            .or_insert(0);
        let base = *seq;
        *seq = seq.wrapping_add(b.tokens.len() as i32) & i32::MAX;
        ProducerStamp {
            producer_id: inner.producer.0,
            producer_epoch: inner.producer.1,
            base_sequence: base,
        }
    } else {
        ProducerStamp::NONE
    };
    let builder = b
        .builder
        .take()
        .ok_or_else(|| ClientError::InvalidArgument("batch has no records".into()))?;
    let bytes = builder.finish(inner.cfg.compression, stamp)?;
    b.encoded = Some(bytes.clone());
    Ok(bytes)
}

async fn send_request(inner: &Arc<Inner>, leader: i32, mut batches: Vec<Batch>) {
    let conn = match inner.client.broker_conn(leader).await {
        Ok(c) => c,
        Err(e) => {
            for b in batches {
                retry_or_fail(inner, b, clone_err(&e)).await;
            }
            return;
        }
    };
    let timeout_ms = inner.cfg.request_timeout.as_millis().min(i32::MAX as u128) as i32;
    let mut topics: Vec<ProduceSet> = Vec::new();
    let mut keep = Vec::with_capacity(batches.len());
    for mut b in batches.drain(..) {
        let bytes = match encode(inner, &mut b) {
            Ok(x) => x,
            Err(e) => {
                fail(inner, b, e).await;
                continue;
            }
        };
        match topics.iter_mut().find(|t| t.0 == b.topic) {
            Some(t) => t.1.push((b.partition, bytes)),
            None => topics.push((b.topic.clone(), vec![(b.partition, bytes)])),
        }
        keep.push(b);
    }
    if keep.is_empty() {
        return;
    }
    let sent = conn
        .send_produce(
            inner.cfg.acks,
            timeout_ms,
            &topics,
            inner.cfg.request_timeout,
        )
        .await;
    if sent.is_ok() {
        let sent_at = Some(std::time::Instant::now());
        for b in &mut keep {
            b.sent_at = sent_at;
        }
    }
    let fut = match sent {
        Ok(ProduceSent::Response(f)) => f,
        Ok(ProduceSent::Written(f)) => {
            // acks=0: no response; the batch counts as sent once its bytes are in the socket
            // (until then it is outstanding, so flush and close wait for it: a connection
            // dropped with frames still queued would discard them).
            let inner = inner.clone();
            tokio::spawn(async move {
                match f.written().await {
                    Ok(()) => {
                        for b in keep {
                            succeed(&inner, b, -1).await;
                        }
                    }
                    Err(e) => {
                        for b in keep {
                            fail(&inner, b, clone_err(&e)).await;
                        }
                    }
                }
            });
            return;
        }
        Err(e) => {
            for b in keep {
                if inner.cfg.acks == 0 {
                    fail(inner, b, clone_err(&e)).await;
                } else {
                    retry_or_fail(inner, b, clone_err(&e)).await;
                }
            }
            return;
        }
    };
    let inner = inner.clone();
    tokio::spawn(async move {
        let resp = match fut.wait().await {
            Ok(r) => r,
            Err(e) => {
                for b in keep {
                    retry_or_fail(&inner, b, clone_err(&e)).await;
                }
                return;
            }
        };
        let mut results: HashMap<(String, i32), (i16, i64)> = HashMap::new();
        for t in &resp.responses {
            for p in &t.partition_responses {
                results.insert(
                    (t.name.0.as_str().to_string(), p.index),
                    (p.error_code, p.base_offset),
                );
            }
        }
        for b in keep {
            match results.get(&(b.topic.to_string(), b.partition)) {
                // DUPLICATE_SEQUENCE_NUMBER: the broker already has this batch (a retry).
                Some(&(0, off)) | Some(&(46, off)) => succeed(&inner, b, off).await,
                Some(&(code, _)) => {
                    let ctx = format!("produce {}-{}", b.topic, b.partition);
                    retry_or_fail(&inner, b, ClientError::kafka(code, ctx)).await
                }
                None => {
                    let ctx = format!("produce {}-{}: missing in response", b.topic, b.partition);
                    fail(
                        &inner,
                        b,
                        ClientError::Protocol {
                            addr: String::new(),
                            msg: ctx,
                        },
                    )
                    .await
                }
            }
        }
    });
}

fn clone_err(e: &ClientError) -> ClientError {
    match e {
        ClientError::Kafka {
            code,
            name,
            context,
        } => ClientError::Kafka {
            code: *code,
            name: name.clone(),
            context: context.clone(),
        },
        ClientError::Io { addr, source } => ClientError::Io {
            addr: addr.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        ClientError::ConnectionClosed(a) => ClientError::ConnectionClosed(a.clone()),
        ClientError::Timeout(a) => ClientError::Timeout(a.clone()),
        ClientError::NoLeader(a) => ClientError::NoLeader(a.clone()),
        ClientError::UnknownTopicOrPartition(a) => ClientError::UnknownTopicOrPartition(a.clone()),
        other => ClientError::Protocol {
            addr: String::new(),
            msg: other.to_string(),
        },
    }
}

async fn retry_or_fail(inner: &Arc<Inner>, mut b: Batch, e: ClientError) {
    if e.is_retriable() && b.attempts < inner.cfg.retries && !inner.closed.load(Ordering::SeqCst) {
        b.attempts += 1;
        tracing::debug!(topic = %b.topic, partition = b.partition, attempt = b.attempts, error = %e, "retrying batch");
        let topic = b.topic.to_string();
        let _ = inner.client.refresh_metadata(&[topic]).await;
        tokio::time::sleep(Duration::from_millis(50 * b.attempts as u64)).await;
        lock(&inner.acc).ready.push_front(b);
        inner.wake.notify_one();
    } else {
        fail(inner, b, e).await;
    }
}

async fn succeed(inner: &Inner, b: Batch, base_offset: i64) {
    finish(inner, b, base_offset, None).await;
}

async fn fail(inner: &Inner, b: Batch, e: ClientError) {
    tracing::debug!(topic = %b.topic, partition = b.partition, error = %e, "batch failed");
    finish(inner, b, -1, Some(e)).await;
}

async fn finish(inner: &Inner, b: Batch, base_offset: i64, error: Option<ClientError>) {
    let n = b.tokens.len();
    let payload_bytes = b.payload;
    let wire_bytes = b.encoded.as_ref().map_or(0, |e| e.len());
    if let Some(Ok(buf)) = b.encoded.map(Bytes::try_into_mut) {
        // A buffer nobody else holds is kept, if it is at most twice batch_size, whatever the
        // size its batch reached: batches that linger closes are smaller than batch_size, and
        // reusing a buffer of their size spares the next one the growth (each step copies the
        // batch so far).
        if buf.capacity() <= inner.cfg.batch_size.saturating_mul(2) {
            let mut spare = lock(&inner.spare);
            if spare.len()
                < SPARE_BUFFERS.min(inner.cfg.buffer_memory / inner.cfg.batch_size.max(1))
            {
                spare.push(buf);
            }
        }
    }
    let report = Delivery {
        topic: b.topic,
        partition: b.partition,
        base_offset,
        tokens: b.tokens,
        payload_bytes,
        wire_bytes,
        error,
        sent_at: b.sent_at,
        completed_at: std::time::Instant::now(),
    };
    // The receiver going away is not an error of the producer: outcomes are then dropped.
    let _ = inner.reports.send(report).await;
    inner.memory.add_permits(b.bytes);
    if inner.outstanding.fetch_sub(n, Ordering::SeqCst) == n {
        inner.idle.notify_waiters();
    }
}
