//! `shardlog consume TOPIC`: print records, from the beginning, the end, an offset or a
//! timestamp, optionally as a member of a consumer group (committing what it printed).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, ValueEnum};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use serde_json::json;
use shardlog_client::records::{decode_batch, split_batches};
use shardlog_client::{Client, ClientError, GroupMember, EARLIEST, LATEST};

use crate::conn::Conn;
use crate::error::{CliError, CliResult};
use crate::output::{show_bytes, Format};

/// How each record is printed.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// The value only.
    Value,
    /// Tab-separated: partition, offset, timestamp, key, headers, value.
    Full,
    /// One JSON object per line.
    Json,
}

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// Topic to read.
    pub topic: String,
    /// Read only this partition (default: all).
    #[arg(long, short = 'p')]
    pub partition: Option<i32>,
    /// Start at the log start.
    #[arg(long, group = "start")]
    pub from_beginning: bool,
    /// Start at the log end: only new records (the default without --group).
    #[arg(long, group = "start")]
    pub from_end: bool,
    /// Start at this offset.
    #[arg(long, group = "start", value_name = "OFFSET")]
    pub offset: Option<i64>,
    /// Start at the first record with a timestamp >= MS (milliseconds since the epoch).
    #[arg(long, group = "start", value_name = "MS")]
    pub timestamp: Option<i64>,
    /// Consume as a member of this group: start at its committed offsets (or where the start
    /// option says when none) and commit what was printed.
    #[arg(long, short = 'g')]
    pub group: Option<String>,
    /// Stop after this many records.
    #[arg(long, short = 'n', value_name = "N")]
    pub count: Option<u64>,
    /// Stop when no record arrived for this long (milliseconds).
    #[arg(long, value_name = "MS")]
    pub idle_timeout_ms: Option<u64>,
    /// Record format (`--format json` implies `--output json`).
    #[arg(long, value_enum, default_value_t = Output::Value)]
    pub output: Output,
}

/// A decoded record.
#[derive(Debug, Clone, PartialEq)]
pub struct Rec {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// Decodes one whole batch (CRC checked, decompressed) with the client's decoder; a control
/// batch gives no records. A LogAppendTime batch's records carry the broker's append time.
pub fn decode(batch: Bytes) -> CliResult<Vec<Rec>> {
    let records = decode_batch(batch)
        .map_err(|e| CliError::Failed(format!("cannot decode a record batch: {e}")))?;
    Ok(records
        .into_iter()
        .map(|r| Rec {
            offset: r.offset,
            timestamp: r.timestamp_ms,
            key: r.key,
            value: r.value,
            headers: r
                .headers
                .into_iter()
                .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v))
                .collect(),
        })
        .collect())
}

/// One printed line for `r` (without the newline).
pub fn format_record(out: Output, topic: &str, partition: i32, r: &Rec) -> Vec<u8> {
    let opt = |b: &Option<Bytes>| b.as_ref().map(|x| show_bytes(x));
    match out {
        Output::Value => r.value.as_ref().map(|v| v.to_vec()).unwrap_or_default(),
        Output::Full => {
            let headers = if r.headers.is_empty() {
                "-".to_string()
            } else {
                r.headers
                    .iter()
                    .map(|(k, v)| format!("{k}={}", opt(v).unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            format!(
                "{partition}\t{}\t{}\t{}\t{headers}\t{}",
                r.offset,
                r.timestamp,
                opt(&r.key).unwrap_or_else(|| "-".into()),
                opt(&r.value).unwrap_or_default()
            )
            .into_bytes()
        }
        Output::Json => {
            let headers: serde_json::Map<String, serde_json::Value> = r
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), json!(opt(v))))
                .collect();
            json!({
                "topic": topic,
                "partition": partition,
                "offset": r.offset,
                "timestamp": r.timestamp,
                "key": opt(&r.key),
                "value": opt(&r.value),
                "headers": headers,
            })
            .to_string()
            .into_bytes()
        }
    }
}

fn fetch_request(topic: &str, positions: &[(i32, i64)], wait: Duration) -> FetchRequest {
    let mut req = FetchRequest::default();
    req.replica_id = BrokerId(-1);
    req.max_wait_ms = wait.as_millis().min(i32::MAX as u128) as i32;
    req.min_bytes = 1;
    req.max_bytes = 16 << 20;
    req.isolation_level = 0;
    req.session_id = 0;
    req.session_epoch = -1;
    let mut t = FetchTopic::default();
    t.topic = TopicName(StrBytes::from_string(topic.to_string()));
    t.partitions = positions
        .iter()
        .map(|&(p, o)| {
            let mut fp = FetchPartition::default();
            fp.partition = p;
            fp.current_leader_epoch = -1;
            fp.fetch_offset = o;
            fp.last_fetched_epoch = -1;
            fp.log_start_offset = -1;
            fp.partition_max_bytes = 1 << 20;
            fp
        })
        .collect();
    req.topics = vec![t];
    req
}

/// One fetch round over all positions; returns records per partition (positions unchanged).
async fn fetch_round(
    client: &Client,
    topic: &str,
    positions: &BTreeMap<i32, i64>,
    wait: Duration,
) -> CliResult<Vec<(i32, Vec<Rec>, i64)>> {
    let mut by_leader: HashMap<i32, Vec<(i32, i64)>> = HashMap::new();
    for (&p, &o) in positions {
        let leader = client.leader(topic, p)?;
        by_leader.entry(leader).or_default().push((p, o));
    }
    let mut futures = Vec::new();
    for (leader, ps) in by_leader {
        let conn = client.broker_conn(leader).await?;
        futures.push(
            conn.send_with_timeout(&fetch_request(topic, &ps, wait), wait)
                .await?,
        );
    }
    let mut out = Vec::new();
    for f in futures {
        let resp = f.wait().await?;
        crate::admin::kafka_err(resp.error_code, "fetch")?;
        for t in resp.responses {
            for pd in t.partitions {
                let p = pd.partition_index;
                let Some(&pos) = positions.get(&p) else {
                    continue;
                };
                match pd.error_code {
                    0 => {}
                    6 | 74 | 75 => {
                        client.refresh_metadata(&[topic.to_string()]).await?;
                        continue;
                    }
                    1 => {
                        return Err(CliError::Failed(format!(
                            "offset {pos} is out of range for {topic}-{p} (log start {}, end {})",
                            pd.log_start_offset, pd.high_watermark
                        )))
                    }
                    code => crate::admin::kafka_err(code, format!("fetch {topic}-{p}"))?,
                }
                let mut recs = Vec::new();
                let mut next = pos;
                for (h, batch) in split_batches(pd.records.unwrap_or_default()) {
                    if h.last_offset() < pos {
                        continue;
                    }
                    next = next.max(h.last_offset() + 1);
                    if h.is_control() {
                        continue;
                    }
                    for r in decode(batch)? {
                        if r.offset >= pos {
                            recs.push(r);
                        }
                    }
                }
                out.push((p, recs, next));
            }
        }
    }
    Ok(out)
}

/// Start offsets of `partitions` from the start options (`None`: nothing chosen).
async fn start_offsets(
    client: &Client,
    a: &ConsumeArgs,
    partitions: &[i32],
    default_latest: bool,
) -> CliResult<BTreeMap<i32, i64>> {
    if partitions.is_empty() {
        return Ok(BTreeMap::new());
    }
    let list = |ts| client.list_offsets(&a.topic, partitions, ts);
    let offs: Vec<(i32, i64)> = if let Some(o) = a.offset {
        if o < 0 {
            return Err(CliError::Usage("--offset must be >= 0".into()));
        }
        partitions.iter().map(|&p| (p, o)).collect()
    } else if let Some(ts) = a.timestamp {
        if ts < 0 {
            return Err(CliError::Usage(
                "--timestamp must be >= 0 (ms since the epoch)".into(),
            ));
        }
        let at = list(ts).await?;
        let ends: BTreeMap<i32, i64> = list(LATEST).await?.into_iter().collect();
        at.into_iter()
            .map(|(p, o)| {
                (
                    p,
                    if o < 0 {
                        ends.get(&p).copied().unwrap_or(0)
                    } else {
                        o
                    },
                )
            })
            .collect()
    } else if a.from_beginning || (!a.from_end && !default_latest) {
        list(EARLIEST).await?
    } else {
        list(LATEST).await?
    };
    Ok(offs.into_iter().collect())
}

pub async fn run(mut a: ConsumeArgs) -> CliResult {
    if a.conn.format == Format::Json {
        a.output = Output::Json;
    }
    let client: Arc<Client> = a.conn.connect().await?;
    let meta = client.topic_meta(&a.topic).await.map_err(|e| {
        if matches!(e, ClientError::UnknownTopicOrPartition(_)) || e.kafka_code() == Some(3) {
            CliError::Failed(format!(
                "topic {:?} does not exist (`shardlog topic list` shows the topics)",
                a.topic
            ))
        } else {
            CliError::Failed(format!("topic {}: {e}", a.topic))
        }
    })?;
    let all: Vec<i32> = meta.partitions.iter().map(|p| p.partition).collect();
    if let Some(p) = a.partition {
        if !all.contains(&p) {
            return Err(CliError::Usage(format!(
                "topic {} has no partition {p}",
                a.topic
            )));
        }
        if a.group.is_some() {
            return Err(CliError::Usage(
                "--partition cannot be combined with --group (the group assigns partitions)".into(),
            ));
        }
    }
    let mut member = match &a.group {
        Some(g) => Some(
            GroupMember::join(client.clone(), g, &a.topic, Duration::from_secs(10))
                .await
                .map_err(|e| CliError::Failed(format!("cannot join group {g}: {e}")))?,
        ),
        None => None,
    };
    let mut positions = match &member {
        Some(m) => group_positions(&client, &a, m).await?,
        None => {
            let parts: Vec<i32> = match a.partition {
                Some(p) => vec![p],
                None => all.clone(),
            };
            start_offsets(&client, &a, &parts, true).await?
        }
    };

    let idle = a.idle_timeout_ms.map(Duration::from_millis);
    let mut last_record = Instant::now();
    let mut last_heartbeat = Instant::now();
    let mut printed = 0u64;
    let stdout = std::io::stdout();
    let limit = a.count.unwrap_or(u64::MAX);
    'outer: while printed < limit {
        if let Some(idle) = idle {
            if last_record.elapsed() >= idle {
                break;
            }
        }
        let wait = idle
            .map(|i| i.saturating_sub(last_record.elapsed()))
            .unwrap_or(Duration::from_millis(500))
            .clamp(Duration::from_millis(10), Duration::from_millis(500));
        let round = if positions.is_empty() {
            tokio::time::sleep(wait).await;
            Vec::new()
        } else {
            fetch_round(&client, &a.topic, &positions, wait).await?
        };
        let mut commit: Vec<(i32, i64)> = Vec::new();
        {
            let mut w = stdout.lock();
            for (p, recs, next) in round {
                for r in recs {
                    let line = format_record(a.output, &a.topic, p, &r);
                    match w.write_all(&line).and_then(|_| w.write_all(b"\n")) {
                        Ok(()) => {}
                        // The reader went away (`| head`): stop like kafka-console-consumer.
                        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break 'outer,
                        Err(e) => return Err(CliError::Failed(format!("writing stdout: {e}"))),
                    }
                    printed += 1;
                    last_record = Instant::now();
                    positions.insert(p, r.offset + 1);
                    if printed >= limit {
                        commit.push((p, r.offset + 1));
                        let _ = w.flush();
                        if let Some(m) = &member {
                            commit_all(m, &positions).await?;
                        }
                        break 'outer;
                    }
                }
                if positions.get(&p).copied().unwrap_or(0) < next {
                    positions.insert(p, next);
                }
                commit.push((p, positions.get(&p).copied().unwrap_or(next)));
            }
            let _ = w.flush();
        }
        if let Some(m) = member.as_mut() {
            if !commit.is_empty() {
                commit_all(m, &positions).await?;
            }
            if last_heartbeat.elapsed() >= Duration::from_secs(3) {
                last_heartbeat = Instant::now();
                let rebalance = m
                    .heartbeat()
                    .await
                    .map_err(|e| CliError::Failed(format!("heartbeat: {e}")))?;
                if rebalance {
                    commit_all(m, &positions).await?;
                    m.rejoin()
                        .await
                        .map_err(|e| CliError::Failed(format!("rejoin: {e}")))?;
                    positions = group_positions(&client, &a, m).await?;
                }
            }
        }
    }
    if let (Some(m), Some(g)) = (member, a.group.as_deref()) {
        commit_all(&m, &positions).await?;
        // Leave at once so the group's other members rebalance without waiting for the
        // session timeout (and an offset reset can follow right away).
        let coord = crate::admin::coordinator(&client, g).await?;
        if let Err(e) = crate::admin::leave_group(&coord, g, m.member_id()).await {
            tracing::warn!(error = %e, "could not leave the group; it will expire the member");
        }
    }
    Ok(())
}

async fn commit_all(m: &GroupMember, positions: &BTreeMap<i32, i64>) -> CliResult {
    let offs: Vec<(i32, i64)> = positions
        .iter()
        .filter(|(p, _)| m.assignment().contains(p))
        .map(|(&p, &o)| (p, o))
        .collect();
    if offs.is_empty() {
        return Ok(());
    }
    m.commit(&offs)
        .await
        .map_err(|e| CliError::Failed(format!("commit offsets: {e}")))
}

/// Positions of a group member's partitions: committed offsets, else the start options
/// (earliest unless told otherwise, like kafka-console-consumer with a new group... and
/// `auto.offset.reset=earliest`).
async fn group_positions(
    client: &Client,
    a: &ConsumeArgs,
    m: &GroupMember,
) -> CliResult<BTreeMap<i32, i64>> {
    let committed = m
        .committed()
        .await
        .map_err(|e| CliError::Failed(format!("committed offsets: {e}")))?;
    let explicit = a.offset.is_some() || a.timestamp.is_some() || a.from_beginning || a.from_end;
    let missing: Vec<i32> = m
        .assignment()
        .iter()
        .copied()
        .filter(|p| explicit || !committed.iter().any(|(cp, o)| cp == p && *o >= 0))
        .collect();
    let mut out = start_offsets(client, a, &missing, false).await?;
    if !explicit {
        for (p, o) in committed {
            if o >= 0 && m.assignment().contains(&p) {
                out.insert(p, o);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> Rec {
        Rec {
            offset: 7,
            timestamp: 1234,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"hello")),
            headers: vec![("h".into(), Some(Bytes::from_static(b"v")))],
        }
    }

    #[test]
    fn output_formats() {
        let r = rec();
        assert_eq!(format_record(Output::Value, "t", 2, &r), b"hello");
        assert_eq!(
            String::from_utf8(format_record(Output::Full, "t", 2, &r)).expect("utf8"),
            "2\t7\t1234\tk\th=v\thello"
        );
        let j: serde_json::Value =
            serde_json::from_slice(&format_record(Output::Json, "t", 2, &r)).expect("json");
        assert_eq!(j["partition"], 2);
        assert_eq!(j["offset"], 7);
        assert_eq!(j["key"], "k");
        assert_eq!(j["value"], "hello");
        assert_eq!(j["headers"]["h"], "v");
        let mut null = rec();
        null.key = None;
        null.value = None;
        null.headers.clear();
        assert_eq!(
            String::from_utf8(format_record(Output::Full, "t", 0, &null)).expect("utf8"),
            "0\t7\t1234\t-\t-\t"
        );
        let j: serde_json::Value =
            serde_json::from_slice(&format_record(Output::Json, "t", 0, &null)).expect("json");
        assert!(j["key"].is_null() && j["value"].is_null());
    }
}
