//! Runs one workload against a broker and produces a [`RunResult`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use bytes::Bytes;
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shardlog_client::records::{parse_compression, Compression};
use shardlog_client::{
    Client, ClientConfig, ClientError, Consumer, ConsumerConfig, Delivery, GroupMember, NewTopic,
    PreciseTimer, Producer, ProducerConfig, StartAt, Token, EARLIEST, LATEST,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::dist::{KeyGen, Pacer};
use crate::report::{BrokerCheck, PartitionCheck, RunResult, Throughput};
use crate::scenario::{ConsumerMode, StartFrom, Variant, Workload};
use crate::stats::{spectrum, LatencySummary, Phase, RecordLatency, Recorder};

/// Options of a run that are not part of the workload.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Bootstrap `host:port`.
    pub bootstrap: String,
    /// Print a progress line every interval.
    pub progress: bool,
    /// Interval of the time series and the progress line.
    pub interval: Duration,
    /// The command line (recorded in the result).
    pub command: String,
}

/// Interval histograms kept for the HdrHistogram log: (start s, duration s, tag, histogram).
pub type IntervalHistograms = Vec<(f64, f64, &'static str, Histogram<u64>)>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn err_name(e: &ClientError) -> String {
    match e {
        ClientError::Kafka { name, .. } => name.clone(),
        ClientError::Io { .. } => "io".into(),
        ClientError::ConnectionClosed(_) => "ConnectionClosed".into(),
        ClientError::Timeout(_) => "Timeout".into(),
        ClientError::NoLeader(_) => "NoLeader".into(),
        ClientError::UnknownTopicOrPartition(_) => "UnknownTopicOrPartition".into(),
        other => format!("{}", other)
            .split(':')
            .next()
            .unwrap_or("error")
            .to_string(),
    }
}

/// A payload pool: values are cut from it at random offsets after their 16-byte header
/// (wrapping around at its end).
struct Payload {
    pool: Bytes,
}

impl Payload {
    /// Pool size without compression: small enough to stay in a core's L2 cache, so the
    /// bench's own copy of each value into its batch is not slowed by cache misses (the broker
    /// under test pays for those).
    const LEN: usize = 256 * 1024;
    /// Pool size with compression: larger than a batch, so a compressor does not find the pool
    /// repeated within a batch and the ratio reflects `payload_entropy`.
    const COMPRESSIBLE_LEN: usize = 8 * 1024 * 1024;

    fn new(entropy: f64, seed: u64, len: usize) -> Payload {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut v = vec![0u8; len];
        // Blocks of 64 bytes: random with probability `entropy`, else a repeated phrase.
        const PHRASE: &[u8] = b"shardlog benchmark payload: the quick brown fox jumps over it. ";
        for (i, chunk) in v.chunks_mut(64).enumerate() {
            if rng.gen_bool(entropy) {
                rng.fill(chunk);
            } else {
                for (j, b) in chunk.iter_mut().enumerate() {
                    *b = PHRASE[(i + j) % PHRASE.len()];
                }
            }
        }
        Payload {
            pool: Bytes::from(v),
        }
    }

    /// A value of `size` bytes: due time (wall ns) and a sequence number, then pool bytes
    /// from a random offset (wrapping around). Returned as the 16-byte head and the rest, which
    /// the producer copies into its batch.
    fn value(&self, size: usize, due_wall_ns: u64, seq: u64, rng: &mut StdRng) -> Value<'_> {
        let size = size.max(16);
        let mut head = [0u8; 16];
        head[..8].copy_from_slice(&due_wall_ns.to_be_bytes());
        head[8..].copy_from_slice(&seq.to_be_bytes());
        Value {
            head,
            pool: &self.pool,
            off: rng.gen_range(0..self.pool.len()),
            len: size - 16,
        }
    }
}

/// A bench record's value: `head`, then `len` bytes of `pool` from `off`, wrapping around.
struct Value<'a> {
    head: [u8; 16],
    pool: &'a [u8],
    off: usize,
    len: usize,
}

impl Value<'_> {
    /// The value's parts in order (`out` is cleared first).
    fn parts<'s>(&'s self, out: &mut Vec<&'s [u8]>) {
        out.clear();
        out.push(&self.head);
        let (mut off, mut left) = (self.off, self.len);
        while left > 0 {
            let n = left.min(self.pool.len() - off);
            out.push(&self.pool[off..off + n]);
            left -= n;
            off = 0;
        }
    }

    #[cfg(test)]
    fn to_vec(&self) -> Vec<u8> {
        let mut parts = Vec::new();
        self.parts(&mut parts);
        parts.concat()
    }
}

/// Reads the due time (wall ns) from a value written by the bench.
pub fn value_timestamp(v: &[u8]) -> Option<u64> {
    let b: [u8; 8] = v.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

struct Ctx {
    w: Workload,
    topics: Vec<Arc<str>>,
    rec: Arc<Mutex<Recorder>>,
    stop_producers: AtomicBool,
    stop_consumers: AtomicBool,
    clock: Instant,
    wall_at_clock: u64,
    payload: Payload,
    keys: KeyGen,
}

impl Ctx {
    fn now_ns(&self) -> u64 {
        self.clock.elapsed().as_nanos() as u64
    }
}

async fn new_client(bootstrap: &str, w: &Workload, tag: &str) -> anyhow::Result<Arc<Client>> {
    let mut cfg = ClientConfig::new(bootstrap);
    cfg.conn.client_id = format!("shardlog-bench-{tag}");
    cfg.conn.max_in_flight = w.max_in_flight;
    Ok(Arc::new(
        Client::connect(cfg)
            .await
            .with_context(|| format!("connecting to {bootstrap}"))?,
    ))
}

fn producer_config(w: &Workload) -> anyhow::Result<ProducerConfig> {
    Ok(ProducerConfig {
        acks: w.acks_value()?,
        batch_size: w.batch_size,
        linger: Duration::from_millis(w.linger_ms),
        compression: parse_compression(&w.compression)?,
        idempotent: w.idempotent,
        buffer_memory: w.buffer_mb * 1024 * 1024,
        request_timeout: Duration::from_secs(30),
        retries: 3,
    })
}

/// Runs one variant.
pub async fn run(
    v: &Variant,
    opts: &RunOptions,
) -> anyhow::Result<(RunResult, IntervalHistograms)> {
    let w = v.workload.clone();
    w.validate()?;
    let started_unix_ms = wall_ns() / 1_000_000;
    let admin = new_client(&opts.bootstrap, &w, "admin").await?;
    let topics: Vec<Arc<str>> = (0..w.topics)
        .map(|i| Arc::from(format!("{}-{}-{}", w.topic_prefix, started_unix_ms, i)))
        .collect();
    let new_topics: Vec<NewTopic> = topics
        .iter()
        .map(|t| NewTopic {
            name: t.to_string(),
            partitions: w.partitions,
            replication_factor: w.replication_factor,
            configs: w
                .topic_configs
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
        .collect();
    admin
        .create_topics(&new_topics, Duration::from_secs(60), true)
        .await
        .context("creating topics")?;
    wait_for_leaders(&admin, &topics, w.partitions).await?;
    tracing::info!(
        topics = topics.len(),
        partitions = w.partitions,
        "topics ready"
    );

    let ctx = Arc::new(Ctx {
        keys: KeyGen::new(&w.keys)?,
        payload: Payload::new(
            w.payload_entropy,
            0x5eed,
            if parse_compression(&w.compression)? == Compression::None {
                Payload::LEN
            } else {
                Payload::COMPRESSIBLE_LEN
            },
        ),
        w: w.clone(),
        topics: topics.clone(),
        rec: Arc::new(Mutex::new(Recorder::new())),
        stop_producers: AtomicBool::new(false),
        stop_consumers: AtomicBool::new(false),
        clock: Instant::now(),
        wall_at_clock: wall_ns(),
    });

    if w.preload_mb > 0.0 {
        lock(&ctx.rec).set_phase(Phase::Preload);
        preload(&ctx, &opts.bootstrap).await?;
    }

    // Consumers start before producers so that "latest" sees everything produced.
    let mut consumer_tasks = Vec::new();
    for c in 0..w.consumers {
        let client = new_client(&opts.bootstrap, &w, &format!("c{c}")).await?;
        let consumer = setup_consumer(&ctx, client, c).await?;
        consumer_tasks.push(tokio::spawn(consume_loop(ctx.clone(), consumer)));
    }

    let target = w.target_records_per_s();
    let per_producer = target.map(|t| t / w.producers.max(1) as f64);
    let mut producer_tasks = Vec::new();
    for p in 0..w.producers {
        let client = new_client(&opts.bootstrap, &w, &format!("p{p}")).await?;
        let (tx, rx) = mpsc::channel::<Delivery>(1024);
        let producer = Producer::new(client, producer_config(&w)?, tx)
            .await
            .context("creating producer")?;
        let collector = tokio::spawn(collect(ctx.clone(), rx));
        let pacer = match per_producer {
            Some(r) => Some(Pacer::new(ctx.now_ns(), r)?),
            None => None,
        };
        producer_tasks.push((
            tokio::spawn(produce_loop(ctx.clone(), producer, pacer, p as u64)),
            collector,
        ));
    }

    // Phases: warm-up, measure, drain; a time series point every interval.
    let mut timeline = Vec::new();
    let mut hdr: IntervalHistograms = Vec::new();
    let t0 = Instant::now();
    let timeline_start_unix_ms = wall_ns() / 1_000_000;
    let warm_end = t0 + Duration::from_secs_f64(w.warmup_s);
    let measure_end = warm_end + Duration::from_secs_f64(w.duration_s);
    lock(&ctx.rec).set_phase(if w.warmup_s > 0.0 {
        Phase::Warmup
    } else {
        Phase::Measure
    });
    let mut measure_started = if w.warmup_s > 0.0 { None } else { Some(t0) };
    let measure_stopped;
    let mut last = t0;
    let mut next_tick = t0 + opts.interval;
    let caught_up_target = if w.producers == 0 {
        Some(high_watermarks(&admin, &topics, w.partitions).await?)
    } else {
        None
    };
    loop {
        let now = Instant::now();
        let phase = lock(&ctx.rec).phase;
        if measure_started.is_none() && now >= warm_end {
            lock(&ctx.rec).set_phase(Phase::Measure);
            measure_started = Some(now);
        }
        let consumers_done = caught_up_target.is_some()
            && consumer_tasks
                .iter()
                .all(|t: &tokio::task::JoinHandle<_>| t.is_finished());
        if phase == Phase::Measure && (now >= measure_end || consumers_done) {
            lock(&ctx.rec).set_phase(Phase::Drain);
            measure_stopped = Some(now);
            break;
        }
        if consumers_done && phase != Phase::Measure {
            bail!("consumers finished before the measured window started");
        }
        let mut wake = next_tick.min(if measure_started.is_none() {
            warm_end
        } else {
            measure_end
        });
        if caught_up_target.is_some() {
            // Consume-only: notice the consumers finishing within 5 ms, not at the next tick.
            wake = wake.min(now + Duration::from_millis(5));
        }
        tokio::time::sleep_until(wake).await;
        let now = Instant::now();
        if now >= next_tick {
            tick(
                &ctx,
                t0,
                &mut last,
                now,
                &mut timeline,
                &mut hdr,
                opts.progress,
            );
            next_tick += opts.interval;
        }
    }
    let measured_s = match (measure_started, measure_stopped) {
        (Some(a), Some(b)) => (b - a).as_secs_f64(),
        _ => 0.0,
    };

    // Drain: producers stop and flush; consumers read until they reach what was acknowledged.
    ctx.stop_producers.store(true, Ordering::SeqCst);
    for (task, collector) in producer_tasks {
        task.await.context("producer task")??;
        collector.await.context("collector task")?;
    }
    // Settle: the high watermark can trail what the producers were told. acks=0 counts a
    // record once its bytes are in the socket, with nothing saying when the leader appended
    // it; acks=1 with replicas acknowledges before the followers have the records, and the
    // high watermark (what consumers and the broker check see) moves only as they fetch. So
    // the high watermarks are read until they hold everything produced, for as long as they
    // keep moving (at most SETTLE_MAX): what is still missing after that is reported by the
    // broker check as not stored, not as "not yet".
    let settle_started = Instant::now();
    let produced = lock(&ctx.rec).produced_total.records;
    let (mut held, mut moved_at) = (0u64, Instant::now());
    loop {
        let hw = high_watermarks(&admin, &topics, w.partitions).await?;
        let now_held: u64 = hw.values().map(|(_, e)| (*e).max(0) as u64).sum();
        if now_held > held {
            moved_at = Instant::now();
        }
        held = now_held;
        if held >= produced
            || moved_at.elapsed() >= SETTLE_STILL
            || settle_started.elapsed() >= SETTLE_MAX
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let settle_s = settle_started.elapsed().as_secs_f64();
    if settle_s > 1.0 {
        tracing::info!(
            settle_s,
            produced,
            held,
            "waited for the high watermark to reach what was produced"
        );
    }
    let drain_deadline = Instant::now() + Duration::from_secs_f64(w.drain_s);
    if w.consumers > 0 {
        let hw = high_watermarks(&admin, &topics, w.partitions).await?;
        let want: u64 = hw.values().map(|(s, e)| (e - s).max(0) as u64).sum();
        loop {
            let got = lock(&ctx.rec).consumed_total.records;
            let all_done = consumer_tasks.iter().all(|t| t.is_finished());
            if got >= want || all_done || Instant::now() >= drain_deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    ctx.stop_consumers.store(true, Ordering::SeqCst);
    for t in consumer_tasks {
        t.await.context("consumer task")??;
    }
    let now = Instant::now();
    tick(
        &ctx,
        t0,
        &mut last,
        now,
        &mut timeline,
        &mut hdr,
        opts.progress,
    );
    if opts.progress {
        eprintln!();
    }

    let mut check = broker_check(&admin, &ctx, w.partitions).await?;
    check.settle_s = settle_s;
    if w.delete_topics {
        let names: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        if let Err(e) = admin
            .delete_topics(&names, Duration::from_secs(30), true)
            .await
        {
            tracing::warn!(error = %e, "deleting topics failed");
        }
    }

    let rec = lock(&ctx.rec);
    let tp = |c: crate::stats::Counts| Throughput {
        records: c.records,
        bytes: c.bytes,
        records_per_s: if measured_s > 0.0 {
            c.records as f64 / measured_s
        } else {
            0.0
        },
        mb_per_s: if measured_s > 0.0 {
            c.bytes as f64 / measured_s / 1e6
        } else {
            0.0
        },
    };
    let result = RunResult {
        format: 1,
        scenario: v.scenario.clone(),
        variant: v.name.clone(),
        bootstrap: opts.bootstrap.clone(),
        command: opts.command.clone(),
        started_unix_ms,
        timeline_start_unix_ms,
        workload: Some(w.clone()),
        topics: topics.iter().map(|t| t.to_string()).collect(),
        target_records_per_s: target,
        measured_s,
        produce: tp(rec.produced),
        consume: tp(rec.consumed),
        publish_latency: LatencySummary::of(&rec.publish),
        publish_latency_uncorrected: LatencySummary::of(&rec.publish_raw),
        publish_queue_latency: LatencySummary::of(&rec.publish_queue),
        produce_request_latency: LatencySummary::of(&rec.produce_request),
        e2e_latency: LatencySummary::of(&rec.e2e),
        publish_spectrum: spectrum(&rec.publish),
        e2e_spectrum: spectrum(&rec.e2e),
        produced_total: rec.produced_total.records,
        consumed_total: rec.consumed_total.records,
        failed_total: rec.failed_total,
        errors: rec.errors.clone(),
        timeline,
        broker_check: check,
        files: Vec::new(),
    };
    Ok((result, hdr))
}

fn tick(
    ctx: &Ctx,
    t0: Instant,
    last: &mut Instant,
    now: Instant,
    timeline: &mut Vec<crate::stats::IntervalPoint>,
    hdr: &mut IntervalHistograms,
    progress: bool,
) {
    let dt = (now - *last).as_secs_f64();
    let start = (*last - t0).as_secs_f64();
    let t = (now - t0).as_secs_f64();
    let (p, hp, he) = lock(&ctx.rec).take_interval(t, dt);
    *last = now;
    if progress {
        eprint!(
            "\r[{t:7.1}s {:>7}] produce {:>9.0} rec/s {:>8.2} MB/s p99 {:>8.2} ms | consume {:>9.0} rec/s {:>8.2} MB/s e2e p99 {:>8.2} ms | errors {}   ",
            format!("{:?}", p.phase).to_lowercase(),
            p.produce_rps,
            p.produce_mbps,
            p.publish.p99_ms,
            p.consume_rps,
            p.consume_mbps,
            p.e2e.p99_ms,
            p.errors
        );
    }
    if !hp.is_empty() {
        hdr.push((start, dt, "publish", hp));
    }
    if !he.is_empty() {
        hdr.push((start, dt, "e2e", he));
    }
    timeline.push(p);
}

/// After the producers stop, the high watermarks are read until they hold everything produced
/// while they keep moving: at most this long in all...
const SETTLE_MAX: Duration = Duration::from_secs(120);
/// ...and given up once they have not moved for this long.
const SETTLE_STILL: Duration = Duration::from_secs(3);

async fn wait_for_leaders(
    client: &Client,
    topics: &[Arc<str>],
    partitions: i32,
) -> anyhow::Result<()> {
    let names: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metas = client.refresh_metadata(&names).await?;
        let ready = names.iter().all(|n| {
            metas.iter().any(|m| {
                &m.name == n
                    && m.error_code == 0
                    && m.partitions.len() == partitions as usize
                    && m.partitions.iter().all(|p| p.leader >= 0)
            })
        });
        // Metadata from one broker can name a leader before that leader serves the partition
        // (a new topic reaches each broker of a cluster on its own schedule): the leaders are
        // asked too, and UNKNOWN_TOPIC_OR_PARTITION / NOT_LEADER is retried like a missing
        // leader, as Kafka clients do.
        let mut not_served = None;
        if ready {
            match high_watermarks(client, topics, partitions).await {
                Ok(_) => return Ok(()),
                Err(e) => not_served = Some(e),
            }
        }
        if Instant::now() >= deadline {
            match not_served {
                Some(e) => bail!("topics' leaders do not serve them after 30 s: {e}"),
                None => bail!("topics have no leaders after 30 s: {metas:?}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `(log start, high watermark)` of every partition.
async fn high_watermarks(
    client: &Client,
    topics: &[Arc<str>],
    partitions: i32,
) -> anyhow::Result<HashMap<(String, i32), (i64, i64)>> {
    let parts: Vec<i32> = (0..partitions).collect();
    let mut out = HashMap::new();
    for t in topics {
        let ends = client.list_offsets(t, &parts, LATEST).await?;
        let starts = client.list_offsets(t, &parts, EARLIEST).await?;
        let starts: HashMap<i32, i64> = starts.into_iter().collect();
        for (p, e) in ends {
            out.insert(
                (t.to_string(), p),
                (starts.get(&p).copied().unwrap_or(0), e),
            );
        }
    }
    Ok(out)
}

async fn broker_check(client: &Client, ctx: &Ctx, partitions: i32) -> anyhow::Result<BrokerCheck> {
    let hw = high_watermarks(client, &ctx.topics, partitions).await?;
    let rec = lock(&ctx.rec);
    let mut check = BrokerCheck {
        acked_records: rec.produced_total.records,
        consistent: true,
        ..Default::default()
    };
    let mut keys: Vec<&(String, i32)> = hw.keys().collect();
    keys.sort();
    let known_offsets = ctx.w.acks_value().unwrap_or(1) != 0;
    for k in keys {
        let (start, end) = hw[k];
        let acked = rec.acked_per_partition.get(k).copied().unwrap_or(0);
        let acked_end = rec
            .acked_end
            .get(k)
            .copied()
            .unwrap_or(if acked == 0 { 0 } else { -1 });
        // The topic is new, so the broker assigned offsets 0..end; retention may since have
        // moved the log start, which is why the count is the high watermark, not end - start.
        check.broker_records += end.max(0) as u64;
        let ok = end.max(0) as u64 == acked && (!known_offsets || acked_end == end);
        if !ok {
            check.consistent = false;
        }
        check.partitions.push(PartitionCheck {
            topic: k.0.clone(),
            partition: k.1,
            log_start: start,
            high_watermark: end,
            acked,
            acked_end: if known_offsets { acked_end } else { -1 },
        });
    }
    if check.broker_records != check.acked_records {
        check.consistent = false;
    }
    Ok(check)
}

async fn preload(ctx: &Arc<Ctx>, bootstrap: &str) -> anyhow::Result<()> {
    let w = &ctx.w;
    let client = new_client(bootstrap, w, "preload").await?;
    let (tx, rx) = mpsc::channel::<Delivery>(1024);
    let producer = Producer::new(client, producer_config(w)?, tx).await?;
    let collector = tokio::spawn(collect(ctx.clone(), rx));
    let target = (w.preload_mb * 1e6) as u64;
    let mut rng = StdRng::seed_from_u64(0xfeed);
    let mut sent = 0u64;
    let mut i = 0u64;
    let mut key_buf = Vec::new();
    while sent < target {
        let size = w.message_size.sample(&mut rng);
        let now = ctx.now_ns();
        let token = Token(now, now);
        send_record(ctx, &producer, &mut rng, &mut key_buf, size, i, token).await?;
        sent += size as u64;
        i += 1;
    }
    producer.close().await;
    collector.await?;
    tracing::info!(records = i, bytes = sent, "preloaded");
    Ok(())
}

/// Sends one bench record: the next topic in turn, a key from the key distribution, a value
/// of `size` bytes stamped with its due time (`token.0`) and sequence number. `key_buf` is
/// scratch space.
async fn send_record(
    ctx: &Ctx,
    producer: &Producer,
    rng: &mut StdRng,
    key_buf: &mut Vec<u8>,
    size: usize,
    seq: u64,
    token: Token,
) -> Result<(), shardlog_client::ClientError> {
    let due_wall_ns = ctx.wall_at_clock + token.0;
    let topic = &ctx.topics[(seq % ctx.topics.len() as u64) as usize];
    let key = match ctx.keys.next_index(rng) {
        Some(k) => {
            key_buf.clear();
            KeyGen::write_key(k, key_buf);
            Some(&key_buf[..])
        }
        None => None,
    };
    let value = ctx.payload.value(size, due_wall_ns, seq, rng);
    let (two, more);
    let parts: &[&[u8]] = if value.off + value.len <= value.pool.len() {
        two = [
            &value.head[..],
            &value.pool[value.off..value.off + value.len],
        ];
        &two
    } else {
        let mut v = Vec::new();
        value.parts(&mut v);
        more = v;
        &more
    };
    producer
        .send_parts(
            topic,
            None,
            key,
            Some(parts),
            (due_wall_ns / 1_000_000) as i64,
            token,
        )
        .await
}

async fn produce_loop(
    ctx: Arc<Ctx>,
    producer: Producer,
    pacer: Option<Pacer>,
    index: u64,
) -> anyhow::Result<()> {
    let mut rng = StdRng::seed_from_u64(0xabc0 + index);
    let mut i = 0u64;
    let mut key_buf = Vec::new();
    // tokio's own timer would wake the pacer up to 2 ms late, and that lateness would count as
    // the broker's latency (it is measured from the due time).
    let mut timer = PreciseTimer::new();
    while !ctx.stop_producers.load(Ordering::Relaxed) {
        // One clock read per record (two after a sleep): it is a few percent of the
        // generator's CPU at several hundred thousand records a second.
        let (due, sent_at) = match &pacer {
            Some(p) => {
                let due = p.due(i);
                let mut now = ctx.now_ns();
                // A record due within 100 us is sent now: fewer wake-ups, at most that early.
                if due > now + 100_000 {
                    timer
                        .sleep_until(tokio::time::Instant::now() + Duration::from_nanos(due - now))
                        .await;
                    if ctx.stop_producers.load(Ordering::Relaxed) {
                        break;
                    }
                    now = ctx.now_ns();
                }
                (due, now)
            }
            // Closed loop: the record is due when it is sent.
            None => {
                let now = ctx.now_ns();
                (now, now)
            }
        };
        let size = ctx.w.message_size.sample(&mut rng);
        let seq = (index << 40) | i;
        let token = Token(due, sent_at);
        send_record(&ctx, &producer, &mut rng, &mut key_buf, size, seq, token)
            .await
            .context("producer send")?;
        i += 1;
    }
    producer.close().await;
    Ok(())
}

async fn collect(ctx: Arc<Ctx>, mut rx: mpsc::Receiver<Delivery>) {
    while let Some(d) = rx.recv().await {
        let now = ctx.now_ns();
        let mut rec = lock(&ctx.rec);
        // The client's instants on the bench's clock (ns); a batch never sent counts as sent
        // when its outcome was known.
        let on_clock = |i: std::time::Instant| {
            i.saturating_duration_since(ctx.clock.into_std()).as_nanos() as u64
        };
        let done = on_clock(d.completed_at);
        let sent = d.sent_at.map_or(done, on_clock);
        match &d.error {
            None => rec.acked(
                &d.topic,
                d.partition,
                d.base_offset,
                d.tokens.iter().map(|t| RecordLatency {
                    corrected: now.saturating_sub(t.0) / 1000,
                    raw: now.saturating_sub(t.1) / 1000,
                    queue: sent.saturating_sub(t.0) / 1000,
                }),
                done.saturating_sub(sent) / 1000,
                d.payload_bytes as u64,
            ),
            Some(e) => rec.failed(&err_name(e), d.tokens.len() as u64),
        }
    }
}

enum BenchConsumer {
    Assigned(Consumer),
    Group(Consumer, Vec<GroupMember>),
}

async fn setup_consumer(
    ctx: &Arc<Ctx>,
    client: Arc<Client>,
    index: u32,
) -> anyhow::Result<BenchConsumer> {
    let w = &ctx.w;
    let cfg = ConsumerConfig {
        max_wait: Duration::from_millis(w.fetch_max_wait_ms),
        min_bytes: w.fetch_min_bytes,
        max_bytes: w.fetch_max_bytes,
        partition_max_bytes: w.partition_max_bytes,
        isolation_level: 0,
    };
    let start = match w.consume_from {
        StartFrom::Latest => StartAt::Latest,
        StartFrom::Earliest => StartAt::Earliest,
    };
    let mut consumer = Consumer::new(client.clone(), cfg);
    match w.consumer_mode {
        ConsumerMode::Assigned => {
            for t in &ctx.topics {
                let mine: Vec<i32> = (0..w.partitions)
                    .filter(|p| (*p as u32) % w.consumers == index)
                    .collect();
                if !mine.is_empty() {
                    consumer.assign(t, &mine, start).await?;
                }
            }
            Ok(BenchConsumer::Assigned(consumer))
        }
        ConsumerMode::Group => {
            let mut members = Vec::new();
            for t in &ctx.topics {
                let group = format!("{t}-group");
                let m = GroupMember::join(client.clone(), &group, t, Duration::from_secs(10))
                    .await
                    .with_context(|| format!("joining group {group}"))?;
                let committed = m.committed().await?;
                let mut fresh = Vec::new();
                for (p, off) in committed {
                    if off >= 0 {
                        consumer.assign(t, &[p], StartAt::Offset(off)).await?;
                    } else {
                        fresh.push(p);
                    }
                }
                if !fresh.is_empty() {
                    consumer.assign(t, &fresh, start).await?;
                }
                members.push(m);
            }
            Ok(BenchConsumer::Group(consumer, members))
        }
    }
}

async fn consume_loop(ctx: Arc<Ctx>, bc: BenchConsumer) -> anyhow::Result<()> {
    let (mut consumer, members) = match bc {
        BenchConsumer::Assigned(c) => (c, Vec::new()),
        BenchConsumer::Group(c, m) => (c, m),
    };
    let mut last_heartbeat = Instant::now();
    // With no producers, stop once every partition reaches the high watermark seen at start.
    let stop_at: Option<HashMap<(String, i32), i64>> = if ctx.w.producers == 0 {
        let mut m = HashMap::new();
        for (t, p, _) in consumer.positions() {
            m.insert((t.to_string(), p), -1);
        }
        Some(m)
    } else {
        None
    };
    let mut caught_up: HashMap<(String, i32), bool> = HashMap::new();
    while !ctx.stop_consumers.load(Ordering::Relaxed) {
        let batch = match consumer.poll().await {
            Ok(b) => b,
            Err(e) => {
                lock(&ctx.rec).failed(&format!("fetch:{}", err_name(&e)), 0);
                if !e.is_retriable() {
                    return Err(anyhow::anyhow!(e).context("consumer poll"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let now_wall = wall_ns();
        // End-to-end latency only means something for records produced during the run (with
        // no producers, consumers read preloaded data whose age is not a latency).
        let e2e = ctx.w.producers > 0;
        for pr in &batch {
            let mut bytes = 0u64;
            let lat: Vec<u64> = pr
                .records
                .iter()
                .map(|r| {
                    bytes += r.value.as_ref().map_or(0, |v| v.len() as u64)
                        + r.key.as_ref().map_or(0, |k| k.len() as u64);
                    r.value
                        .as_deref()
                        .and_then(value_timestamp)
                        .map(|ts| now_wall.saturating_sub(ts) / 1000)
                        .unwrap_or(0)
                })
                .collect();
            let n = pr.records.len() as u64;
            let lat = if e2e { lat } else { Vec::new() };
            lock(&ctx.rec).consumed(lat.into_iter(), n, bytes);
            if stop_at.is_some() {
                let pos = consumer
                    .positions()
                    .into_iter()
                    .find(|(t, p, _)| **t == *pr.topic && *p == pr.partition)
                    .map(|x| x.2)
                    .unwrap_or(0);
                caught_up.insert(
                    (pr.topic.to_string(), pr.partition),
                    pos >= pr.high_watermark,
                );
            }
        }
        if let Some(targets) = &stop_at {
            if targets
                .keys()
                .all(|k| caught_up.get(k).copied().unwrap_or(false))
            {
                break;
            }
        }
        if !members.is_empty() && last_heartbeat.elapsed() >= Duration::from_secs(1) {
            last_heartbeat = Instant::now();
            for m in &members {
                if m.heartbeat().await? {
                    tracing::warn!(
                        member = m.member_id(),
                        "rebalance signalled; keeping the current assignment"
                    );
                }
            }
        }
    }
    for m in members {
        let offs: Vec<(i32, i64)> = consumer
            .positions()
            .into_iter()
            .filter(|(t, _, _)| **t == *m.topic())
            .map(|(_, p, o)| (p, o))
            .collect();
        if let Err(e) = m.commit(&offs).await {
            tracing::warn!(error = %e, "offset commit failed");
        }
        let _ = m.leave().await;
    }
    Ok(())
}

/// Writes the run's HdrHistogram interval log (V2 compressed histograms, tags publish / e2e,
/// values in µs) as `dir/<stem>.hlog` and returns the file name.
pub fn write_hlog(
    dir: &Path,
    stem: &str,
    result: &RunResult,
    hdr: &IntervalHistograms,
) -> anyhow::Result<String> {
    use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
    use hdrhistogram::serialization::V2DeflateSerializer;
    let hlog = format!("{stem}.hlog");
    let mut buf = Vec::new();
    let mut ser = V2DeflateSerializer::new();
    let start = UNIX_EPOCH + Duration::from_millis(result.started_unix_ms);
    // Interval timestamps count from the timeline's start.
    let base = UNIX_EPOCH + Duration::from_millis(result.timeline_start_unix_ms);
    let mut writer = IntervalLogWriterBuilder::new()
        .add_comment(&format!(
            "shardlog-bench {} / {}: latency in microseconds",
            result.scenario, result.variant
        ))
        .with_start_time(start)
        .with_base_time(base)
        .with_max_value_divisor(1000.0)
        .begin_log_with(&mut buf, &mut ser)
        .map_err(|e| anyhow::anyhow!("hdr log: {e:?}"))?;
    for (start, dur, tag, h) in hdr {
        writer
            .write_histogram(
                h,
                Duration::from_secs_f64(*start),
                Duration::from_secs_f64(*dur),
                Tag::new(tag),
            )
            .map_err(|e| anyhow::anyhow!("hdr log: {e:?}"))?;
    }
    drop(writer);
    std::fs::write(dir.join(&hlog), buf)?;
    Ok(hlog)
}

/// Writes the JSON, the HdrHistogram interval log and the plots into `dir` as
/// `<stem>.json`, `<stem>.hlog`, `<stem>-*.svg`; returns the result with `files` filled.
pub fn write_outputs(
    dir: &Path,
    stem: &str,
    mut result: RunResult,
    hdr: &IntervalHistograms,
) -> anyhow::Result<RunResult> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut files = vec![write_hlog(dir, stem, &result, hdr)?];
    for (suffix, svg) in crate::report::plots(&result)? {
        let name = format!("{stem}-{suffix}");
        std::fs::write(dir.join(&name), svg)?;
        files.push(name);
    }
    result.files = files;
    let json = format!("{stem}.json");
    std::fs::write(dir.join(&json), serde_json::to_string_pretty(&result)?)?;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_carry_their_timestamp() {
        let p = Payload::new(0.5, 1, Payload::LEN);
        let mut rng = StdRng::seed_from_u64(2);
        let v = p.value(1024, 123_456_789, 42, &mut rng).to_vec();
        assert_eq!(v.len(), 1024);
        assert_eq!(value_timestamp(&v), Some(123_456_789));
        assert_eq!(&v[8..16], &42u64.to_be_bytes());
        assert_eq!(p.value(16, 1, 1, &mut rng).to_vec().len(), 16);
        // Past the pool's end the value wraps around to its start.
        let v = p.value(3 * Payload::LEN, 7, 8, &mut rng);
        let big = v.to_vec();
        assert_eq!(big.len(), 3 * Payload::LEN);
        let at = |i: usize| p.pool[(v.off + i) % Payload::LEN];
        assert!((0..big.len() - 16).all(|i| big[16 + i] == at(i)));
        assert_eq!(value_timestamp(&[1, 2, 3]), None);
    }
}
