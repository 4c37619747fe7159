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

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::client::Client;
use crate::error::{ClientError, Result};
use crate::murmur2::partition_for_key;
use crate::records::{encode_batch, Compression, OutRecord, ProducerStamp};

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
}

struct Batch {
    topic: Arc<str>,
    partition: i32,
    records: Vec<OutRecord>,
    tokens: Vec<Token>,
    bytes: usize,
    created: Instant,
    encoded: Option<Bytes>,
    attempts: u32,
}

#[derive(Default)]
struct Accum {
    open: HashMap<(Arc<str>, i32), Batch>,
    ready: VecDeque<Batch>,
    sticky: HashMap<Arc<str>, i32>,
    round_robin: u32,
    next_sequence: HashMap<(Arc<str>, i32), i32>,
    flush: bool,
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
}

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
        let inner = &self.inner;
        if inner.closed.load(Ordering::SeqCst) {
            return Err(ClientError::Closed);
        }
        let size = record.key.as_ref().map_or(0, |k| k.len())
            + record.value.as_ref().map_or(0, |v| v.len())
            + RECORD_OVERHEAD;
        if size > inner.cfg.buffer_memory {
            return Err(ClientError::InvalidArgument(format!(
                "record of {size} bytes exceeds buffer_memory"
            )));
        }
        let n = inner.client.partition_count_or_fetch(topic).await? as i32;
        if n == 0 {
            return Err(ClientError::UnknownTopicOrPartition(topic.to_string()));
        }
        let permit = inner
            .memory
            .acquire_many(size as u32)
            .await
            .map_err(|_| ClientError::Closed)?;
        permit.forget();
        inner.outstanding.fetch_add(1, Ordering::SeqCst);
        let mut notify = inner.cfg.linger.is_zero();
        {
            let mut acc = lock(&inner.acc);
            let p = match (partition, record.key.as_ref()) {
                (Some(p), _) => {
                    if p < 0 || p >= n {
                        drop(acc);
                        inner.memory.add_permits(size);
                        inner.outstanding.fetch_sub(1, Ordering::SeqCst);
                        return Err(ClientError::UnknownTopicOrPartition(format!("{topic}-{p}")));
                    }
                    p
                }
                (None, Some(k)) => partition_for_key(k, n),
                (None, None) => {
                    let rr = acc.round_robin;
                    *acc.sticky
                        .entry(topic.clone())
                        .or_insert((rr % n as u32) as i32)
                        % n
                }
            };
            let key = (topic.clone(), p);
            let batch = acc.open.entry(key.clone()).or_insert_with(|| {
                notify = true;
                Batch {
                    topic: topic.clone(),
                    partition: p,
                    records: Vec::new(),
                    tokens: Vec::new(),
                    bytes: 0,
                    created: Instant::now(),
                    encoded: None,
                    attempts: 0,
                }
            });
            batch.records.push(record);
            batch.tokens.push(token);
            batch.bytes += size;
            if batch.bytes >= inner.cfg.batch_size {
                if let Some(b) = acc.open.remove(&key) {
                    close_batch(&mut acc, b, n);
                }
                notify = true;
            }
        }
        if notify {
            inner.wake.notify_one();
        }
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

/// Moves a batch to the ready queue; a keyless topic's sticky partition moves on.
fn close_batch(acc: &mut Accum, b: Batch, partitions: i32) {
    if acc.sticky.get(&b.topic) == Some(&b.partition) {
        acc.round_robin = acc.round_robin.wrapping_add(1);
        let next = (b.partition + 1) % partitions.max(1);
        acc.sticky.insert(b.topic.clone(), next);
    }
    acc.ready.push_back(b);
}

async fn sender_loop(inner: Arc<Inner>) {
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
                        _ = tokio::time::sleep_until(d) => {}
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
    let flush = std::mem::take(&mut acc.flush);
    let expired: Vec<(Arc<str>, i32)> = acc
        .open
        .iter()
        .filter(|(_, b)| flush || linger.is_zero() || b.created + linger <= now)
        .map(|(k, _)| k.clone())
        .collect();
    for k in expired {
        if let Some(b) = acc.open.remove(&k) {
            let n = inner.client.partition_count(&b.topic).unwrap_or(1) as i32;
            close_batch(&mut acc, b, n);
        }
    }
    let deadline = acc.open.values().map(|b| b.created + linger).min();
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
        *seq = seq.wrapping_add(b.records.len() as i32) & i32::MAX;
        ProducerStamp {
            producer_id: inner.producer.0,
            producer_epoch: inner.producer.1,
            base_sequence: base,
        }
    } else {
        ProducerStamp::NONE
    };
    let bytes = encode_batch(&b.records, inner.cfg.compression, stamp)?;
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
    let mut req = ProduceRequest::default();
    req.acks = inner.cfg.acks;
    req.timeout_ms = inner.cfg.request_timeout.as_millis().min(i32::MAX as u128) as i32;
    let mut topics: Vec<TopicProduceData> = Vec::new();
    let mut keep = Vec::with_capacity(batches.len());
    for mut b in batches.drain(..) {
        let bytes = match encode(inner, &mut b) {
            Ok(x) => x,
            Err(e) => {
                fail(inner, b, e).await;
                continue;
            }
        };
        let mut pd = PartitionProduceData::default();
        pd.index = b.partition;
        pd.records = Some(bytes);
        match topics.iter_mut().find(|t| t.name.0.as_str() == &*b.topic) {
            Some(t) => t.partition_data.push(pd),
            None => {
                let mut t = TopicProduceData::default();
                t.name = TopicName(StrBytes::from_string(b.topic.to_string()));
                t.partition_data.push(pd);
                topics.push(t);
            }
        }
        keep.push(b);
    }
    if keep.is_empty() {
        return;
    }
    req.topic_data = topics;
    if inner.cfg.acks == 0 {
        let r = conn.send_no_response(&req).await;
        for b in keep {
            match &r {
                Ok(()) => succeed(inner, b, -1).await,
                Err(e) => fail(inner, b, clone_err(e)).await,
            }
        }
        return;
    }
    let fut = match conn
        .send_with_timeout(&req, inner.cfg.request_timeout)
        .await
    {
        Ok(f) => f,
        Err(e) => {
            for b in keep {
                retry_or_fail(inner, b, clone_err(&e)).await;
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
    let n = b.records.len();
    let payload_bytes = b
        .records
        .iter()
        .map(|r| r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len()))
        .sum();
    let wire_bytes = b.encoded.as_ref().map_or(0, |e| e.len());
    let report = Delivery {
        topic: b.topic,
        partition: b.partition,
        base_offset,
        tokens: b.tokens,
        payload_bytes,
        wire_bytes,
        error,
    };
    // The receiver going away is not an error of the producer: outcomes are then dropped.
    let _ = inner.reports.send(report).await;
    inner.memory.add_permits(b.bytes);
    if inner.outstanding.fetch_sub(n, Ordering::SeqCst) == n {
        inner.idle.notify_waiters();
    }
}
