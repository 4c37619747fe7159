//! `shardlog produce TOPIC`: stdin lines become records.
//!
//! Records are batched per partition (up to `--batch-records` or 1 MiB, or `--linger-ms`) and
//! sent one batch at a time to the partition's leader, so the order of lines is the order of
//! offsets within a partition. Partitioning: `--partition`, else murmur2 of the key (like the
//! Java client), else round-robin per batch.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use clap::Args;
use indexmap::IndexMap;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use serde_json::json;
use shardlog_client::{partition_for_key, Client, ClientError};

use crate::conn::Conn;
use crate::error::{parse_kv, CliError, CliResult};
use crate::output::{emit, Format};

const MAX_BATCH_BYTES: usize = 1 << 20;

#[derive(Args, Debug)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// Topic to produce to.
    pub topic: String,
    /// Split each line at the first SEP into key and value (lines without it get no key).
    #[arg(long, short = 'K', value_name = "SEP")]
    pub key_separator: Option<String>,
    /// Header KEY=VALUE added to every record (repeatable).
    #[arg(long = "header", short = 'H', value_name = "KEY=VALUE")]
    pub headers: Vec<String>,
    /// Produce to this partition only.
    #[arg(long, short = 'p')]
    pub partition: Option<i32>,
    /// Acknowledgements: 0, 1 or all.
    #[arg(long, default_value = "all")]
    pub acks: String,
    /// Compression: none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// Records per batch, at most.
    #[arg(long, default_value_t = 1000)]
    pub batch_records: usize,
    /// How long a partly filled batch waits for more lines, in milliseconds.
    #[arg(long, default_value_t = 20)]
    pub linger_ms: u64,
    /// Ask the cluster to create the topic if it does not exist (it does when its
    /// auto.create.topics.enable is on); without this a missing topic is an error.
    #[arg(long)]
    pub allow_auto_topic_creation: bool,
}

/// `0`, `1`, `all`/`-1`.
pub fn parse_acks(s: &str) -> CliResult<i16> {
    match s.to_ascii_lowercase().as_str() {
        "0" => Ok(0),
        "1" => Ok(1),
        "all" | "-1" => Ok(-1),
        _ => Err(CliError::Usage(format!(
            "--acks {s:?}: expected 0, 1 or all"
        ))),
    }
}

/// Splits a line into (key, value) at the first `sep`.
pub fn split_line(line: &[u8], sep: Option<&[u8]>) -> (Option<Bytes>, Bytes) {
    if let Some(sep) = sep.filter(|s| !s.is_empty()) {
        if let Some(i) = line.windows(sep.len()).position(|w| w == sep) {
            return (
                Some(Bytes::copy_from_slice(&line[..i])),
                Bytes::copy_from_slice(&line[i + sep.len()..]),
            );
        }
    }
    (None, Bytes::copy_from_slice(line))
}

struct Pending {
    records: Vec<Record>,
    bytes: usize,
}

/// Encodes one RecordBatch v2 (offsets 0..n-1, no producer id).
pub fn encode(records: &mut [Record], compression: Compression) -> CliResult<Bytes> {
    for (i, r) in records.iter_mut().enumerate() {
        r.offset = i as i64;
        // The encoder derives baseSequence from the first record and starts a new batch when
        // offset - sequence changes: i - 1 keeps one batch with sequence -1.
        r.sequence = i as i32 - 1;
    }
    let mut buf = BytesMut::new();
    let opts = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut buf, records.iter(), &opts)
        .map_err(|e| CliError::Failed(format!("cannot encode the record batch: {e}")))?;
    Ok(buf.freeze())
}

async fn send_batch(
    client: &Client,
    topic: &str,
    partition: i32,
    batch: Bytes,
    acks: i16,
    timeout: Duration,
) -> CliResult<i64> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let r = send_once(client, topic, partition, batch.clone(), acks, timeout).await;
        match r {
            Err(e) if e.is_retriable() && attempt < 5 => {
                tracing::debug!(topic, partition, error = %e, "retrying produce");
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                let _ = client.refresh_metadata(&[topic.to_string()]).await;
            }
            Err(e) => {
                return Err(CliError::Failed(format!(
                    "produce to {topic}-{partition} failed: {e}"
                )))
            }
            Ok(off) => return Ok(off),
        }
    }
}

async fn send_once(
    client: &Client,
    topic: &str,
    partition: i32,
    batch: Bytes,
    acks: i16,
    timeout: Duration,
) -> Result<i64, ClientError> {
    let leader = client.leader(topic, partition)?;
    let conn = client.broker_conn(leader).await?;
    let mut req = ProduceRequest::default();
    req.acks = acks;
    req.timeout_ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    let mut pd = PartitionProduceData::default();
    pd.index = partition;
    pd.records = Some(batch);
    let mut td = TopicProduceData::default();
    td.name = TopicName(StrBytes::from_string(topic.to_string()));
    td.partition_data = vec![pd];
    req.topic_data = vec![td];
    if acks == 0 {
        conn.send_no_response(&req).await?;
        return Ok(-1);
    }
    let resp = conn.send_with_timeout(&req, timeout).await?.wait().await?;
    for t in resp.responses {
        for p in t.partition_responses {
            if p.index == partition {
                if p.error_code != 0 {
                    return Err(ClientError::kafka(
                        p.error_code,
                        format!("produce {topic}-{partition}"),
                    ));
                }
                return Ok(p.base_offset);
            }
        }
    }
    Err(ClientError::Protocol {
        addr: conn.addr().to_string(),
        msg: format!("no answer for {topic}-{partition}"),
    })
}

/// Whether an error says that a topic does not exist.
fn is_unknown_topic(e: &ClientError) -> bool {
    matches!(e, ClientError::UnknownTopicOrPartition(_)) || e.kafka_code() == Some(3)
}

/// The metadata of the topic to produce to. A missing topic is an error that says how to
/// create it: a typo in a topic name must not create a topic (as with rpk). With
/// `--allow-auto-topic-creation` the topic is asked for once more with auto-creation allowed,
/// as Kafka's console producer does: the cluster creates it when its
/// `auto.create.topics.enable` is on (said on stderr).
async fn topic_for_produce(
    client: &Client,
    topic: &str,
    allow_auto: bool,
) -> CliResult<shardlog_client::TopicMeta> {
    let other = |e: ClientError| {
        if e.kafka_code() == Some(17) {
            CliError::Usage(format!(
                "{topic:?} is not a valid topic name (up to 249 characters of a-z, A-Z, 0-9, '.', '_' and '-'; not \".\" or \"..\")"
            ))
        } else {
            CliError::Failed(format!("topic {topic}: {e}"))
        }
    };
    match client.topic_meta(topic).await {
        Ok(m) => return Ok(m),
        Err(e) if is_unknown_topic(&e) => {}
        Err(e) => return Err(other(e)),
    }
    if !allow_auto {
        return Err(CliError::Failed(format!(
            "topic {topic:?} does not exist, and shardlog produce does not create topics \
             (auto-creation is off unless --allow-auto-topic-creation is given)\n\
             hint: create it first: shardlog topic create {topic} --partitions N"
        )));
    }
    match client.topic_meta_auto_create(topic).await {
        Ok(m) => {
            eprintln!(
                "shardlog: topic {topic} did not exist; the cluster created it on first use \
                 (auto.create.topics.enable) with {} partition(s)",
                m.partitions.len()
            );
            Ok(m)
        }
        Err(e) if is_unknown_topic(&e) => Err(CliError::Failed(format!(
            "topic {topic:?} does not exist, and the cluster does not create topics on first use \
             (its auto.create.topics.enable is off)\nhint: create it first: shardlog topic create {topic} --partitions N"
        ))),
        Err(e) => Err(other(e)),
    }
}

/// Per-partition results: (records, first offset, last offset).
type Produced = BTreeMap<i32, (u64, i64, i64)>;

pub async fn run(a: ProduceArgs) -> CliResult {
    let acks = parse_acks(&a.acks)?;
    let compression = shardlog_client::records::parse_compression(&a.compression)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let headers: IndexMap<StrBytes, Option<Bytes>> = a
        .headers
        .iter()
        .map(|h| parse_kv(h).map(|(k, v)| (StrBytes::from_string(k), Some(Bytes::from(v)))))
        .collect::<CliResult<_>>()?;
    if a.batch_records == 0 {
        return Err(CliError::Usage("--batch-records must be >= 1".into()));
    }
    let client: Arc<Client> = a.conn.connect().await?;
    let meta = topic_for_produce(&client, &a.topic, a.allow_auto_topic_creation).await?;
    let n = meta.partitions.len() as i32;
    if n == 0 {
        return Err(CliError::Failed(format!(
            "topic {} has no partitions",
            a.topic
        )));
    }
    if let Some(p) = a.partition {
        if p < 0 || p >= n {
            return Err(CliError::Usage(format!(
                "--partition {p}: topic {} has partitions 0..{}",
                a.topic,
                n - 1
            )));
        }
    }

    // Lines come from a blocking reader thread.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(1024);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut lock = stdin.lock();
        loop {
            let mut line = Vec::new();
            match lock.read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                        if line.last() == Some(&b'\r') {
                            line.pop();
                        }
                    }
                    if tx.blocking_send(Ok(line)).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    break;
                }
            }
        }
    });

    let sep = a.key_separator.as_deref().map(str::as_bytes);
    let timeout = a.conn.timeout();
    let linger = Duration::from_millis(a.linger_ms);
    let progress = std::io::stderr().is_terminal() && a.conn.format == Format::Table;
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut pending: BTreeMap<i32, Pending> = BTreeMap::new();
    let mut produced: Produced = BTreeMap::new();
    let mut total = 0u64;
    let mut rr: i32 = 0;
    let mut oldest: Option<Instant> = None;
    loop {
        let wait = match oldest {
            Some(t) => linger.saturating_sub(t.elapsed()),
            None => Duration::from_secs(3600),
        };
        let next = tokio::select! {
            l = rx.recv() => Some(l),
            _ = tokio::time::sleep(wait) => None,
        };
        let mut flush_all = false;
        let eof = matches!(next, Some(None));
        match next {
            None => flush_all = true,       // linger expired
            Some(None) => flush_all = true, // end of input
            Some(Some(Err(e))) => {
                return Err(CliError::Failed(format!("reading stdin: {e}")));
            }
            Some(Some(Ok(line))) => {
                let (key, value) = split_line(&line, sep);
                let p = match (a.partition, &key) {
                    (Some(p), _) => p,
                    (None, Some(k)) => partition_for_key(k, n),
                    (None, None) => rr,
                };
                let size = key.as_ref().map_or(0, |k| k.len()) + value.len() + 32;
                let rec = Record {
                    transactional: false,
                    control: false,
                    delete_horizon: false,
                    partition_leader_epoch: -1,
                    producer_id: -1,
                    producer_epoch: -1,
                    timestamp_type: TimestampType::Creation,
                    offset: 0,
                    sequence: -1,
                    timestamp: shardlog_server::partition::now_ms(),
                    key,
                    value: Some(value),
                    headers: headers.clone(),
                };
                let e = pending.entry(p).or_insert_with(|| Pending {
                    records: Vec::new(),
                    bytes: 0,
                });
                e.records.push(rec);
                e.bytes += size;
                oldest.get_or_insert_with(Instant::now);
                if e.records.len() >= a.batch_records || e.bytes >= MAX_BATCH_BYTES {
                    if let Some(mut b) = pending.remove(&p) {
                        let count = b.records.len() as u64;
                        let bytes = encode(&mut b.records, compression)?;
                        let base = send_batch(&client, &a.topic, p, bytes, acks, timeout).await?;
                        note(&mut produced, p, count, base);
                        total += count;
                        if p == rr {
                            rr = (rr + 1) % n;
                        }
                    }
                    if pending.is_empty() {
                        oldest = None;
                    }
                }
            }
        }
        if flush_all {
            let parts: Vec<i32> = pending.keys().copied().collect();
            for p in parts {
                if let Some(mut b) = pending.remove(&p) {
                    let count = b.records.len() as u64;
                    let bytes = encode(&mut b.records, compression)?;
                    let base = send_batch(&client, &a.topic, p, bytes, acks, timeout).await?;
                    note(&mut produced, p, count, base);
                    total += count;
                }
            }
            rr = (rr + 1) % n;
            oldest = None;
            if eof {
                break;
            }
        }
        if progress && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            eprint!("\rproduced {total} records...");
        }
    }
    if progress && started.elapsed() >= Duration::from_secs(1) {
        eprintln!();
    }
    let json = json!({
        "topic": a.topic,
        "records": total,
        "acks": acks,
        "elapsed_ms": started.elapsed().as_millis() as u64,
        "partitions": produced.iter().map(|(p, (c, first, last))| json!({
            "partition": p, "records": c, "first_offset": first, "last_offset": last,
        })).collect::<Vec<_>>(),
    });
    match a.conn.format {
        Format::Json => emit(Format::Json, &json, String::new),
        Format::Table => eprintln!(
            "produced {total} records to {} in {} ms",
            a.topic,
            started.elapsed().as_millis()
        ),
    }
    Ok(())
}

fn note(produced: &mut Produced, p: i32, count: u64, base: i64) {
    let last = if base >= 0 {
        base + count as i64 - 1
    } else {
        -1
    };
    let e = produced.entry(p).or_insert((0, base, last));
    e.0 += count;
    if e.1 < 0 {
        e.1 = base;
    }
    e.2 = last;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_values() {
        assert_eq!(parse_acks("all").expect("all"), -1);
        assert_eq!(parse_acks("-1").expect("-1"), -1);
        assert_eq!(parse_acks("1").expect("1"), 1);
        assert_eq!(parse_acks("0").expect("0"), 0);
        assert!(parse_acks("2").is_err());
    }

    #[test]
    fn lines_split_at_the_first_separator() {
        let (k, v) = split_line(b"user-1:a:b", Some(b":"));
        assert_eq!(k.as_deref(), Some(&b"user-1"[..]));
        assert_eq!(&v[..], b"a:b");
        let (k, v) = split_line(b"no-sep", Some(b"::"));
        assert!(k.is_none());
        assert_eq!(&v[..], b"no-sep");
        let (k, v) = split_line(b"a::b", Some(b"::"));
        assert_eq!(k.as_deref(), Some(&b"a"[..]));
        assert_eq!(&v[..], b"b");
        let (k, _) = split_line(b"a:b", None);
        assert!(k.is_none());
    }

    #[test]
    fn batches_round_trip_with_headers() {
        let mut headers = IndexMap::new();
        headers.insert(
            StrBytes::from_static_str("h"),
            Some(Bytes::from_static(b"v")),
        );
        let mut recs: Vec<Record> = (0..3)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: 0,
                sequence: -1,
                timestamp: 1000 + i,
                key: None,
                value: Some(Bytes::from(format!("v{i}"))),
                headers: headers.clone(),
            })
            .collect();
        let bytes = encode(&mut recs, Compression::Lz4).expect("encode");
        let back = crate::consume::decode(bytes).expect("decode");
        assert_eq!(back.len(), 3);
        assert_eq!(back[2].offset, 2);
        assert_eq!(back[1].value.as_deref(), Some(&b"v1"[..]));
        assert_eq!(
            back[0].headers,
            vec![("h".to_string(), Some(Bytes::from_static(b"v")))]
        );
    }
}
