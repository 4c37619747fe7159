//! The whole broker on the simulated disk: the real start-up (`Broker::start_with`), the real
//! Kafka protocol over loopback TCP with the project's client, and the partition logs, group
//! offsets log and producer snapshots on a `SimStorage` the test can crash.
//!
//! What only a broker-level test shows: what a produce *acknowledged* survives a crash of the
//! disk at any point, with the broker's append queue, flush policy and recovery in the loop,
//! not just the engine's log. The metadata file stays on the real disk (in a temporary
//! directory), as `start_with` documents.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use shardlog_client::consumer::{Consumer, ConsumerConfig, StartAt};
use shardlog_client::producer::{Delivery, Producer, ProducerConfig, Token};
use shardlog_client::records::OutRecord;
use shardlog_client::{Client, ClientConfig, NewTopic};
use shardlog_engine::io::sim::{CrashMode, Faults};
use shardlog_engine::{BrokerStorage, SimStorage};
use shardlog_server::broker::Broker;
use shardlog_server::clock::{Clock, ManualClock};
use shardlog_server::config::BrokerConfig;

/// A port nobody listens on right now (the broker binds it a moment later).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

fn config(data_dir: &std::path::Path) -> BrokerConfig {
    let port = free_port();
    BrokerConfig {
        listen: format!("127.0.0.1:{port}"),
        data_dir: data_dir.to_path_buf(),
        cores: 1,
        admin_listen: String::new(),
        io_memory_bytes: 1 << 20,
        shutdown_grace_ms: 3000,
        offsets_topic_partitions: 1,
        log_preallocate_bytes: 0,
        ..BrokerConfig::default()
    }
}

/// A broker on `storage` plus a tokio runtime for the client side.
struct Running {
    broker: Broker,
    addr: String,
}

fn start(data_dir: &std::path::Path, storage: &SimStorage) -> Running {
    start_cfg(config(data_dir), storage, Clock::System)
}

fn start_cfg(cfg: BrokerConfig, storage: &SimStorage, clock: Clock) -> Running {
    let addr = cfg.listen.clone();
    let broker =
        Broker::start_with(cfg, BrokerStorage::Sim(storage.clone()), clock).expect("broker starts");
    Running { broker, addr }
}

impl Running {
    fn stop(self) {
        self.broker.shutdown();
        self.broker.join().expect("clean shutdown");
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn client(addr: &str) -> Arc<Client> {
    Arc::new(
        Client::connect(ClientConfig::new(addr))
            .await
            .expect("connect"),
    )
}

async fn create_topic(c: &Client, name: &str, configs: &[(&str, &str)]) {
    c.create_topics(
        &[NewTopic {
            name: name.into(),
            partitions: 1,
            replication_factor: 1,
            configs: configs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }],
        Duration::from_secs(10),
        false,
    )
    .await
    .expect("create topic");
}

fn value(i: u64) -> Bytes {
    Bytes::from(format!("record-{i:06}"))
}

/// Sends records `from..to` to partition 0 with `acks`; returns every batch's outcome.
async fn produce(
    c: &Arc<Client>,
    topic: &str,
    acks: i16,
    from: u64,
    to: u64,
    retries: u32,
) -> Vec<Delivery> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let cfg = ProducerConfig {
        acks,
        batch_size: 100,
        linger: Duration::from_millis(1),
        retries,
        request_timeout: Duration::from_secs(5),
        ..ProducerConfig::default()
    };
    let p = Producer::new(c.clone(), cfg, tx).await.expect("producer");
    let topic: Arc<str> = Arc::from(topic);
    let collect = tokio::spawn(async move {
        let mut out = Vec::new();
        while let Some(d) = rx.recv().await {
            out.push(d);
        }
        out
    });
    for i in from..to {
        let r = OutRecord {
            key: None,
            value: Some(value(i)),
            timestamp_ms: 1_700_000_000_000 + i as i64,
        };
        p.send(&topic, Some(0), r, Token(i, 0)).await.expect("send");
    }
    p.flush().await;
    p.close().await;
    collect.await.expect("collector")
}

/// (offset, record number) of every acknowledged record.
fn acknowledged(deliveries: &[Delivery]) -> Vec<(i64, u64)> {
    let mut acked: Vec<(i64, u64)> = deliveries
        .iter()
        .filter(|d| d.error.is_none() && d.base_offset >= 0)
        .flat_map(|d| {
            d.tokens
                .iter()
                .enumerate()
                .map(move |(k, t)| (d.base_offset + k as i64, t.0))
        })
        .collect();
    acked.sort_unstable();
    acked
}

/// A consumer of partition 0 of `topic` from its earliest offset, with short long polls.
async fn earliest_consumer(c: &Arc<Client>, topic: &str) -> Consumer {
    let mut consumer = Consumer::new(
        c.clone(),
        ConsumerConfig {
            max_wait: Duration::from_millis(50),
            ..ConsumerConfig::default()
        },
    );
    consumer
        .assign(topic, &[0], StartAt::Earliest)
        .await
        .expect("assign");
    consumer
}

/// Every record of partition 0 from offset 0 up to the high watermark, as (offset, value).
async fn read_all(c: &Arc<Client>, topic: &str) -> Vec<(i64, Bytes)> {
    let mut consumer = earliest_consumer(c, topic).await;
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        assert!(std::time::Instant::now() < deadline, "reading timed out");
        let polled = consumer.poll().await.expect("fetch");
        let mut hw = None;
        for pr in polled {
            hw = Some(pr.high_watermark);
            for r in pr.records {
                out.push((r.offset, r.value.unwrap_or_default()));
            }
        }
        let next = out.last().map_or(0, |(o, _)| o + 1);
        if hw.is_some_and(|hw| next >= hw) {
            return out;
        }
    }
}

/// The log holds exactly the records `0..n` at offsets `0..n`.
fn assert_prefix(log: &[(i64, Bytes)]) {
    for (k, (offset, v)) in log.iter().enumerate() {
        assert_eq!(*offset, k as i64, "offsets are contiguous from 0");
        let expect = value(k as u64);
        assert_eq!(v, &expect, "offset {offset} holds record {k}");
    }
}

#[test]
fn produce_then_fetch_acks_1_and_all() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let disk = SimStorage::default();
    let b = start(tmp.path(), &disk);
    let rt = runtime();
    rt.block_on(async {
        let c = client(&b.addr).await;
        create_topic(&c, "t", &[]).await;
        let one = produce(&c, "t", 1, 0, 150, 0).await;
        let all = produce(&c, "t", -1, 150, 300, 0).await;
        let acked: Vec<_> = acknowledged(&one)
            .into_iter()
            .chain(acknowledged(&all))
            .collect();
        assert_eq!(acked.len(), 300, "every record acknowledged");
        for (offset, n) in &acked {
            assert_eq!(*offset, *n as i64, "record {n} at offset {n}");
        }
        let log = read_all(&c, "t").await;
        assert_eq!(log.len(), 300);
        assert_prefix(&log);
    });
    drop(rt);
    // The records are on the simulated disk, not anywhere under the real data directory.
    assert!(!tmp.path().join("logs").exists() || dir_has_no_files(&tmp.path().join("logs")));
    b.stop();
}

fn dir_has_no_files(dir: &std::path::Path) -> bool {
    walk(dir).is_empty()
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn restart_after_clean_shutdown_keeps_everything() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let disk = SimStorage::default();
    let b = start(tmp.path(), &disk);
    let rt = runtime();
    rt.block_on(async {
        let c = client(&b.addr).await;
        create_topic(&c, "r", &[]).await;
        let d = produce(&c, "r", 1, 0, 200, 0).await;
        assert_eq!(acknowledged(&d).len(), 200);
    });
    b.stop();
    // A clean shutdown left everything durable: even a power cut right after it loses nothing.
    let image = disk.crash(CrashMode::LoseUnsynced);
    let b = start(tmp.path(), &image);
    rt.block_on(async {
        let c = client(&b.addr).await;
        let log = read_all(&c, "r").await;
        assert_eq!(log.len(), 200, "every record is back after the restart");
        assert_prefix(&log);
        let d = produce(&c, "r", -1, 200, 210, 0).await;
        assert_eq!(
            acknowledged(&d),
            (200..210).map(|i| (i as i64, i)).collect::<Vec<_>>(),
            "appends continue at the old log end"
        );
    });
    drop(rt);
    b.stop();
}

// A small seeded generator (SplitMix64) for crash points: the simulated disk's.
use shardlog_engine::io::sim::SplitMix as Seeded;

/// flush = every batch, acks = all: the disk stops at a seeded operation while records stream
/// in (every later write, fsync, rename... fails with EIO and has no effect: the process "died"
/// there), the disk is crashed keeping a random subset of unsynced writes with the last one
/// torn, and a new broker starts on that image. Every acknowledged record must be there at
/// its acknowledged offset, the log must be a gap-free prefix of what was sent, and the
/// broker must take new records after it.
#[test]
fn crash_mid_append_keeps_every_acknowledged_record() {
    let mut rng = Seeded(0x5eed_0018);
    for round in 0..12u64 {
        let seed = rng.next_u64();
        // Topic creation and the first appends are done before the disk is armed; the crash
        // lands somewhere among the stream's disk operations (a write and an fsync per group
        // of batches the appender commits together: some 60 for this stream).
        let halt_after = seed % 60;
        let tmp = tempfile::tempdir().expect("tempdir");
        let disk = SimStorage::default();
        let b = start(tmp.path(), &disk);
        let rt = runtime();
        let acked = rt.block_on(async {
            let c = client(&b.addr).await;
            create_topic(&c, "c", &[("flush.messages", "1")]).await;
            let warm = produce(&c, "c", -1, 0, 20, 0).await;
            assert_eq!(acknowledged(&warm).len(), 20);
            disk.set_faults(Faults {
                halt_after_ops: Some(halt_after),
                ..Faults::default()
            });
            let d = produce(&c, "c", -1, 20, 600, 0).await;
            let mut acked = acknowledged(&warm);
            acked.extend(acknowledged(&d));
            acked
        });
        drop(rt);
        let ops = disk.ops();
        // What a shutdown does after the halt cannot reach the disk; the broker is only
        // stopped to free its port and threads.
        b.broker.shutdown();
        let _ = b.broker.join();
        let image = disk.crash(CrashMode::Torn { seed });
        let b = start(tmp.path(), &image);
        let rt = runtime();
        rt.block_on(async {
            let c = client(&b.addr).await;
            let log = read_all(&c, "c").await;
            assert_prefix(&log);
            for (offset, n) in &acked {
                assert_eq!(
                    log.get(*offset as usize).map(|(o, _)| *o),
                    Some(*offset),
                    "round {round} (seed {seed:#x}, halt after {halt_after} of {ops} ops): acknowledged record {n} at offset {offset} is missing ({} records survived)",
                    log.len()
                );
                assert_eq!(*offset, *n as i64, "record {n} acknowledged at offset {offset}");
            }
            eprintln!("round {round}: halt after {halt_after} of {ops} ops, {} acknowledged, {} recovered", acked.len(), log.len());
            let end = log.len() as u64;
            let d = produce(&c, "c", -1, end, end + 5, 0).await;
            assert_eq!(
                acknowledged(&d),
                (end..end + 5).map(|i| (i as i64, i)).collect::<Vec<_>>(),
                "round {round}: the restarted broker appends at the recovered log end"
            );
        });
        drop(rt);
        b.stop();
    }
}

/// Retention on the manual clock: segments whose newest record is older than `retention.ms`
/// by the broker's clock go, and not before the clock says so (the records carry timestamps
/// from 2023: on the system clock they would be deleted at once).
#[test]
fn retention_follows_the_manual_clock() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let disk = SimStorage::default();
    // Ten seconds after the newest record's timestamp (see `produce`).
    let clock = ManualClock::new(1_700_000_000_000 + 10_000);
    let cfg = BrokerConfig {
        retention_check_interval_ms: 100,
        ..config(tmp.path())
    };
    let b = start_cfg(cfg, &disk, Clock::Manual(clock.clone()));
    let rt = runtime();
    rt.block_on(async {
        let c = client(&b.addr).await;
        create_topic(
            &c,
            "ret",
            &[("retention.ms", "60000"), ("segment.bytes", "1024")],
        )
        .await;
        let d = produce(&c, "ret", -1, 0, 200, 0).await;
        assert_eq!(acknowledged(&d).len(), 200);
        let earliest = || async {
            c.list_offsets("ret", &[0], shardlog_client::EARLIEST)
                .await
                .expect("list offsets")[0]
                .1
        };
        // Retention checks run (every 100 ms of real time); the clock has not moved.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            earliest().await,
            0,
            "nothing is older than retention.ms yet"
        );
        clock.advance(120_000);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let start = loop {
            let s = earliest().await;
            if s > 0 {
                break s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "retention did not run after the clock moved"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // The active segment stays; what is left is still the records at their offsets.
        let log = read_all(&c, "ret").await;
        assert!(start < 200 && !log.is_empty(), "log start {start}");
        assert_eq!(
            log[0].0, start,
            "the log now starts at the new log start offset"
        );
        for (offset, v) in &log {
            assert_eq!(v, &value(*offset as u64), "offset {offset}");
        }
    });
    drop(rt);
    b.stop();
}

/// EIO on a read: a bad sector under the segment, read once the batch cache no longer holds
/// those records. The fetch that hits it is answered KAFKA_STORAGE_ERROR (56) at once, the
/// broker stays up and keeps serving, and once the disk reads again so does the fetch. (One
/// broker: the partition has no other replica to take over, so it stays here, as with a full
/// disk; with replicas elsewhere the same failure takes it offline on this broker, see
/// `partition::replication_tests`.)
#[test]
fn eio_on_a_read_answers_kafka_storage_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let disk = SimStorage::default();
    let cfg = BrokerConfig {
        // Only the newest batch stays in the cache; the older ones are read from the disk.
        log_cache_bytes: 2048,
        ..config(tmp.path())
    };
    let b = start_cfg(cfg, &disk, Clock::System);
    let rt = runtime();
    rt.block_on(async {
        let c = client(&b.addr).await;
        create_topic(&c, "bad", &[]).await;
        let d = produce(&c, "bad", -1, 0, 300, 0).await;
        assert_eq!(acknowledged(&d).len(), 300);
        disk.set_faults(Faults {
            eio_read_of: Some(".log".into()),
            ..Faults::default()
        });
        let mut consumer = earliest_consumer(&c, "bad").await;
        let started = std::time::Instant::now();
        let err = consumer.poll().await.expect_err("the read fails");
        assert_eq!(err.kafka_code(), Some(56), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "answered at once"
        );
        // Still serving: metadata, and a produce (writes are not affected).
        c.refresh_metadata(&["bad".to_string()])
            .await
            .expect("metadata");
        let more = produce(&c, "bad", -1, 300, 310, 0).await;
        assert_eq!(
            acknowledged(&more),
            (300..310).map(|i| (i as i64, i)).collect::<Vec<_>>()
        );
        disk.set_faults(Faults::default());
        let log = read_all(&c, "bad").await;
        assert_eq!(log.len(), 310);
        assert_prefix(&log);
    });
    drop(rt);
    b.stop();
}
