//! End-to-end: a 5-second scenario against a real `shardlog` (path in `SHARDLOG_BIN`), then the
//! result file is checked for completeness and against what the broker stored.
//!
//! Skipped, with a message, only when `SHARDLOG_BIN` is not set.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shardlog_bench::report::RunResult;
use shardlog_bench::runner::{run, write_outputs, RunOptions};
use shardlog_bench::scenario::parse_scenario;
use shardlog_client::{
    Client, ClientConfig, Consumer, ConsumerConfig, Delivery, NewTopic, Producer, ProducerConfig,
    StartAt, Token, EARLIEST, LATEST,
};

/// A running `shardlog` with its own data directory, killed when dropped.
struct Broker {
    child: Child,
    addr: String,
    _data: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a broker on a free loopback port, or returns None (and says so) when `SHARDLOG_BIN`
/// is not set.
fn broker_or_skip() -> Option<Broker> {
    let Some(bin) = std::env::var_os("SHARDLOG_BIN").map(PathBuf::from) else {
        eprintln!("SKIPPED: set SHARDLOG_BIN=/path/to/shardlog to run the bench end-to-end test");
        return None;
    };
    let data = tempfile::tempdir().expect("tempdir");
    // The tests here start their brokers at the same moment: a port the kernel hands out twice
    // would let both bind it (SO_REUSEPORT) before either sees the other. Never reuse one.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let port = loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            break port;
        }
    };
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(&bin)
        .args(["start", "--listen", &addr, "--data-dir"])
        .arg(data.path())
        .args(["--cores", "1"])
        // The broker reads SHARDLOG_* variables as configuration; keep the test's own out.
        .env_remove("SHARDLOG_BIN")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
    let mut broker = Broker {
        child,
        addr,
        _data: data,
    };
    // Ready means a client connects and gets metadata, as the Python suite's harness checks: a
    // TCP connect alone once let a test go ahead and then be refused.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = broker.child.try_wait() {
            panic!("broker exited before it was ready: {status}");
        }
        let ready = rt.block_on(Client::connect(ClientConfig::new(broker.addr.clone())));
        if ready.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "broker on {} was not ready in 20 s",
            broker.addr
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(broker)
}

#[test]
fn five_second_scenario_is_complete_and_matches_the_broker() {
    let Some(broker) = broker_or_skip() else {
        return;
    };
    let addr = broker.addr.clone();
    let out = tempfile::tempdir().expect("tempdir");

    let scenario = r#"
        name = "e2e"
        [workload]
        partitions = 3
        producers = 2
        consumers = 1
        message_size = { dist = "uniform", min = 100, max = 900 }
        keys = { dist = "zipf", count = 1000, exponent = 1.0 }
        batch_size = 65536
        linger_ms = 2
        acks = "all"
        idempotent = true
        compression = "lz4"
        rate_records_per_s = 20000.0
        warmup_s = 1
        duration_s = 5
        drain_s = 10
    "#;
    let variants = parse_scenario(scenario, "e2e", &[]).expect("scenario");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let opts = RunOptions {
        bootstrap: addr.clone(),
        progress: false,
        interval: Duration::from_millis(500),
        command: "e2e test".into(),
    };
    let (result, hdr) = rt.block_on(run(&variants[0], &opts)).expect("run");
    write_outputs(out.path(), "e2e-default", result, &hdr).expect("write");

    // The result file is complete.
    let text = std::fs::read_to_string(out.path().join("e2e-default.json")).expect("json");
    let r: RunResult = serde_json::from_str(&text).expect("parse json");
    for f in &r.files {
        let p = out.path().join(f);
        assert!(
            p.metadata().map(|m| m.len() > 0).unwrap_or(false),
            "{f} missing or empty"
        );
    }
    assert_eq!(r.files.len(), 4, "hlog + 3 plots: {:?}", r.files);
    // The timeline's clock starts once topics and clients are set up.
    assert!(
        r.timeline_start_unix_ms >= r.started_unix_ms
            && r.timeline_start_unix_ms < r.started_unix_ms + 60_000,
        "started {} timeline {}",
        r.started_unix_ms,
        r.timeline_start_unix_ms
    );
    assert!(r.errors.is_empty(), "errors: {:?}", r.errors);
    assert_eq!(r.failed_total, 0);
    assert!(
        r.measured_s >= 4.9 && r.measured_s < 6.0,
        "measured {}",
        r.measured_s
    );
    assert!(r.produce.records > 0 && r.consume.records > 0);
    // Open loop at 20000/s for 5 s: the acknowledged count is near 100000.
    let expect = 20_000.0 * r.measured_s;
    assert!(
        (r.produce.records as f64 - expect).abs() < expect * 0.2,
        "produced {} in the window, expected about {expect}",
        r.produce.records
    );
    // One latency per record.
    assert_eq!(r.publish_latency.count, r.produce.records);
    assert_eq!(r.publish_latency_uncorrected.count, r.produce.records);
    assert_eq!(r.e2e_latency.count, r.consume.records);
    // The breakdown: every measured record has a queueing part, which is never more than its
    // publish latency; every measured batch a request time.
    assert_eq!(r.publish_queue_latency.count, r.produce.records);
    assert!(r.publish_queue_latency.max_ms <= r.publish_latency.max_ms);
    assert!(r.produce_request_latency.count > 0);
    assert!(r.produce_request_latency.count <= r.produce.records);
    assert!(r.produce_request_latency.max_ms <= r.publish_latency.max_ms);
    let l = &r.publish_latency;
    assert!(l.p50_ms <= l.p90_ms && l.p90_ms <= l.p99_ms && l.p99_ms <= l.p999_ms);
    assert!(l.p999_ms <= l.p9999_ms && l.p9999_ms <= l.max_ms && l.max_ms > 0.0);
    assert!(!r.publish_spectrum.is_empty() && !r.e2e_spectrum.is_empty());
    // The time series adds up to the totals.
    let ts_produced: f64 = r.timeline.iter().map(|p| p.produce_rps * p.dt_s).sum();
    let ts_consumed: f64 = r.timeline.iter().map(|p| p.consume_rps * p.dt_s).sum();
    assert!((ts_produced - r.produced_total as f64).abs() < 1.0);
    assert!((ts_consumed - r.consumed_total as f64).abs() < 1.0);
    // Everything acknowledged was consumed (the drain waits for it).
    assert_eq!(r.consumed_total, r.produced_total);

    // Counts match what the broker stored, asked independently of the bench.
    assert!(r.broker_check.consistent, "{:?}", r.broker_check);
    let client = rt
        .block_on(Client::connect(ClientConfig::new(addr.clone())))
        .expect("client");
    let client = Arc::new(client);
    let topic = r.topics[0].clone();
    let parts = [0, 1, 2];
    let ends = rt
        .block_on(client.list_offsets(&topic, &parts, LATEST))
        .expect("latest");
    let starts = rt
        .block_on(client.list_offsets(&topic, &parts, EARLIEST))
        .expect("earliest");
    let stored: i64 = ends.iter().zip(&starts).map(|(e, s)| e.1 - s.1).sum();
    assert_eq!(stored as u64, r.produced_total, "broker holds {stored}");
    for pc in &r.broker_check.partitions {
        let e = ends
            .iter()
            .find(|x| x.0 == pc.partition)
            .expect("partition")
            .1;
        assert_eq!(pc.high_watermark, e);
        assert_eq!(pc.acked_end, e);
    }
    // Reading the topic back gives the same number of records.
    let read = rt.block_on(async {
        let mut c = Consumer::new(client.clone(), ConsumerConfig::default());
        c.assign(&topic, &parts, StartAt::Earliest)
            .await
            .expect("assign");
        let mut n = 0u64;
        let deadline = Instant::now() + Duration::from_secs(20);
        while n < stored as u64 && Instant::now() < deadline {
            for pr in c.poll().await.expect("poll") {
                n += pr.records.len() as u64;
            }
        }
        n
    });
    assert_eq!(read, stored as u64);

    // The HdrHistogram log parses and holds interval histograms.
    let log = std::fs::read(out.path().join("e2e-default.hlog")).expect("hlog");
    let intervals = hdrhistogram::serialization::interval_log::IntervalLogIterator::new(&log)
        .filter(|e| {
            matches!(
                e,
                Ok(hdrhistogram::serialization::interval_log::LogEntry::Interval(_))
            )
        })
        .count();
    assert!(intervals >= 10, "{intervals} intervals in the log");
}

/// Creates `topic` with `partitions` partitions on the broker at `addr` and a producer for it;
/// its delivery reports arrive on the returned channel.
async fn producer_on_new_topic(
    addr: &str,
    topic: &str,
    partitions: i32,
    cfg: ProducerConfig,
) -> (Producer, tokio::sync::mpsc::Receiver<Delivery>) {
    let client = Arc::new(
        Client::connect(ClientConfig::new(addr.to_string()))
            .await
            .expect("client"),
    );
    let new = NewTopic {
        name: topic.into(),
        partitions,
        replication_factor: 1,
        configs: Vec::new(),
    };
    client
        .create_topics(&[new], Duration::from_secs(10), false)
        .await
        .expect("create");
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let producer = Producer::new(client, cfg, tx).await.expect("producer");
    (producer, rx)
}

/// Keyless records fill a batch up to `batch_size` before the sticky partition moves on, and the
/// record that no longer fits goes to the next partition's batch (not to a batch of its own).
#[test]
fn keyless_batches_fill_up_before_the_sticky_partition_moves() {
    let Some(broker) = broker_or_skip() else {
        return;
    };
    let addr = broker.addr.clone();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let reports: Vec<Delivery> = rt.block_on(async {
        let (producer, mut rx) = producer_on_new_topic(
            &addr,
            "sticky",
            2,
            ProducerConfig {
                acks: 1,
                batch_size: 16 * 1024,
                linger: Duration::from_millis(200),
                ..ProducerConfig::default()
            },
        )
        .await;
        let name: Arc<str> = Arc::from("sticky");
        let value = vec![7u8; 1000];
        for i in 0..600u64 {
            let parts: [&[u8]; 1] = [&value];
            producer
                .send_parts(&name, None, None, Some(&parts), 0, Token(i, i))
                .await
                .expect("send");
        }
        producer.close().await;
        let mut out = Vec::new();
        while let Ok(d) = rx.try_recv() {
            out.push(d);
        }
        out
    });
    let records: usize = reports.iter().map(|d| d.tokens.len()).sum();
    assert_eq!(records, 600);
    assert!(reports.iter().all(|d| d.error.is_none()));
    // A batch counts each record's key and value plus 16 bytes: 16 KiB holds 16 records of
    // 1000 bytes (16 256 bytes). Every batch but the last of each partition is full.
    for p in [0, 1] {
        // Reports of different requests may arrive out of order: order them by offset.
        let mut batches: Vec<(i64, usize)> = reports
            .iter()
            .filter(|d| d.partition == p)
            .map(|d| (d.base_offset, d.tokens.len()))
            .collect();
        batches.sort_unstable();
        let sizes: Vec<usize> = batches.iter().map(|b| b.1).collect();
        assert!(sizes.len() > 10, "partition {p}: {sizes:?}");
        let full = &sizes[..sizes.len() - 1];
        assert!(full.iter().all(|&n| n == 16), "partition {p}: {sizes:?}");
    }
}

#[test]
fn a_sending_loop_lets_other_tasks_on_its_thread_run() {
    let Some(broker) = broker_or_skip() else {
        return;
    };
    let addr = broker.addr.clone();
    // One thread: a loop of sends that always find room must still give it up now and then.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (ran_during_sends, reported) = rt.block_on(async {
        let (producer, mut rx) = producer_on_new_topic(
            &addr,
            "coop",
            1,
            ProducerConfig {
                acks: 1,
                batch_size: 1 << 20,
                linger: Duration::from_secs(1),
                ..ProducerConfig::default()
            },
        )
        .await;
        let name: Arc<str> = Arc::from("coop");
        let value = vec![1u8; 100];
        let sending = tokio::spawn(async move {
            let ticks = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let counter = ticks.clone();
            let other = tokio::spawn(async move {
                loop {
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
            });
            // The first send fetches the topic's metadata (it waits for the network); the
            // other task starts meanwhile. The sends after it only ever find room.
            let parts: [&[u8]; 1] = [&value];
            producer
                .send_parts(&name, Some(0), None, Some(&parts), 0, Token(0, 0))
                .await
                .expect("send");
            let before = ticks.load(std::sync::atomic::Ordering::Relaxed);
            for i in 1..20_000u64 {
                let parts: [&[u8]; 1] = [&value];
                producer
                    .send_parts(&name, Some(0), None, Some(&parts), 0, Token(i, i))
                    .await
                    .expect("send");
            }
            let during = ticks.load(std::sync::atomic::Ordering::Relaxed) - before;
            other.abort();
            producer.close().await;
            during
        });
        let during = sending.await.expect("sending task");
        let mut records = 0;
        while let Ok(d) = rx.try_recv() {
            assert!(d.error.is_none(), "{:?}", d.error);
            records += d.tokens.len();
        }
        (during, records)
    });
    assert_eq!(reported, 20_000);
    // tokio's budget is 128 operations per poll: 20 000 sends yield about 150 times.
    assert!(
        ran_during_sends >= 50,
        "the other task ran {ran_during_sends} times during 20 000 sends"
    );
}
