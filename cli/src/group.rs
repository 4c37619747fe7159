//! `shardlog group list|describe|reset-offsets|delete`, on the Kafka group APIs
//! (ListGroups, DescribeGroups, OffsetFetch, ListOffsets, OffsetCommit, DeleteGroups).

use std::collections::{BTreeMap, BTreeSet};

use clap::{ArgGroup, Subcommand};
use serde_json::json;
use shardlog_client::{Client, EARLIEST, LATEST};

use crate::admin;
use crate::conn::Conn;
use crate::error::{CliError, CliResult};
use crate::output::{emit, Table};

#[derive(Subcommand, Debug)]
pub enum GroupAction {
    /// List consumer groups.
    List,
    /// Members, assignments, committed offsets, log ends and lag per partition.
    Describe {
        /// Group ids.
        #[arg(required = true)]
        groups: Vec<String>,
    },
    /// Move a group's committed offsets (the group must have no active members).
    #[command(group(ArgGroup::new("target").required(true).args(["to_earliest", "to_latest", "to_offset", "to_timestamp"])))]
    ResetOffsets {
        /// Group id.
        group: String,
        /// Topic whose offsets move.
        #[arg(long, short = 't')]
        topic: String,
        /// Only these partitions (repeatable; default: all).
        #[arg(long, short = 'p')]
        partition: Vec<i32>,
        /// To the log start.
        #[arg(long)]
        to_earliest: bool,
        /// To the log end (skip everything).
        #[arg(long)]
        to_latest: bool,
        /// To this offset (clamped to the partition's start..end).
        #[arg(long, value_name = "OFFSET")]
        to_offset: Option<i64>,
        /// To the first record with a timestamp >= MS (ms since the epoch; the end if none).
        #[arg(long, value_name = "MS")]
        to_timestamp: Option<i64>,
        /// Show the new offsets without committing them.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete groups (they must have no members).
    Delete {
        /// Group ids.
        #[arg(required = true)]
        groups: Vec<String>,
    },
}

/// One row of `group describe`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LagRow {
    pub topic: String,
    pub partition: i32,
    pub member_id: Option<String>,
    pub client_id: Option<String>,
    pub host: Option<String>,
    /// -1: nothing committed.
    pub committed: i64,
    pub log_end: i64,
    /// None when nothing is committed.
    pub lag: Option<i64>,
}

/// Lag of one partition: log end minus committed offset (never negative), `None` when the
/// group has no committed offset there.
pub fn lag(committed: i64, log_end: i64) -> Option<i64> {
    (committed >= 0).then(|| (log_end - committed).max(0))
}

/// Where `reset-offsets` moves one partition.
pub fn clamp_target(target: i64, start: i64, end: i64) -> i64 {
    target.clamp(start, end.max(start))
}

pub async fn run(conn: &Conn, action: GroupAction) -> CliResult {
    let client = conn.connect().await?;
    match action {
        GroupAction::List => {
            let md = admin::metadata(&client, Some(&[])).await?;
            let groups = admin::list_groups(&client, &md).await?;
            emit(conn.format, &json!(groups), || {
                let mut t = Table::new(&["GROUP", "STATE", "PROTOCOL-TYPE", "COORDINATOR"]);
                for g in &groups {
                    t.row(vec![
                        g.group.clone(),
                        g.state.clone(),
                        g.protocol_type.clone(),
                        g.coordinator.to_string(),
                    ]);
                }
                t.render()
            });
            Ok(())
        }
        GroupAction::Describe { groups } => {
            let mut docs = Vec::new();
            let mut text = String::new();
            let mut missing = Vec::new();
            for g in &groups {
                match describe(&client, g).await? {
                    Some((doc, t)) => {
                        docs.push(doc);
                        text.push_str(&t);
                    }
                    None => missing.push(g.as_str()),
                }
            }
            if !docs.is_empty() {
                let json = if groups.len() == 1 {
                    docs.pop().unwrap_or_default()
                } else {
                    json!(docs)
                };
                emit(conn.format, &json, || text);
            }
            if missing.is_empty() {
                Ok(())
            } else {
                Err(CliError::Failed(format!(
                    "{} {} not exist (no members and no committed offsets); `shardlog group list` shows the groups",
                    missing
                        .iter()
                        .map(|g| format!("group {g:?}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    if missing.len() == 1 { "does" } else { "do" }
                )))
            }
        }
        GroupAction::ResetOffsets {
            group,
            topic,
            partition,
            to_earliest,
            to_latest,
            to_offset,
            to_timestamp,
            dry_run,
        } => {
            let info = admin::topic_info(&client, &topic).await?;
            let all: Vec<i32> = info.partitions.iter().map(|p| p.partition).collect();
            let parts: Vec<i32> = if partition.is_empty() {
                all.clone()
            } else {
                for p in &partition {
                    if !all.contains(p) {
                        return Err(CliError::Usage(format!(
                            "topic {topic} has no partition {p}"
                        )));
                    }
                }
                partition.clone()
            };
            client
                .refresh_metadata(std::slice::from_ref(&topic))
                .await?;
            let starts: BTreeMap<i32, i64> = client
                .list_offsets(&topic, &parts, EARLIEST)
                .await?
                .into_iter()
                .collect();
            let ends: BTreeMap<i32, i64> = client
                .list_offsets(&topic, &parts, LATEST)
                .await?
                .into_iter()
                .collect();
            let at_time: BTreeMap<i32, i64> = match to_timestamp {
                Some(ts) if ts < 0 => {
                    return Err(CliError::Usage("--to-timestamp must be >= 0".into()))
                }
                Some(ts) => client
                    .list_offsets(&topic, &parts, ts)
                    .await?
                    .into_iter()
                    .collect(),
                None => BTreeMap::new(),
            };
            let coord = admin::coordinator(&client, &group).await?;
            let committed = admin::committed_offsets(&coord, &group).await?;
            let mut plan: Vec<(i32, i64, i64)> = Vec::new();
            for &p in &parts {
                let (s, e) = (
                    starts.get(&p).copied().unwrap_or(0),
                    ends.get(&p).copied().unwrap_or(0),
                );
                let target = if to_earliest {
                    s
                } else if to_latest {
                    e
                } else if let Some(o) = to_offset {
                    clamp_target(o, s, e)
                } else {
                    match at_time.get(&p).copied() {
                        Some(o) if o >= 0 => o,
                        _ => e,
                    }
                };
                let current = committed.get(&(topic.clone(), p)).copied().unwrap_or(-1);
                plan.push((p, current, target));
            }
            if !dry_run {
                let g = admin::describe_group(&coord, &group).await?;
                if !g.members.is_empty() {
                    return Err(CliError::Failed(format!(
                        "group {group} has {} active member(s) (state {}); stop its consumers before resetting offsets",
                        g.members.len(),
                        g.state
                    )));
                }
                let offs: Vec<(i32, i64)> = plan.iter().map(|&(p, _, t)| (p, t)).collect();
                admin::commit_offsets(&coord, &group, &topic, &offs).await?;
            }
            let json = json!({
                "group": group, "topic": topic, "dry_run": dry_run,
                "partitions": plan.iter().map(|(p, c, t)| json!({"partition": p, "current": c, "new": t})).collect::<Vec<_>>(),
            });
            emit(conn.format, &json, || {
                let mut t = Table::new(&["TOPIC", "PARTITION", "CURRENT", "NEW"]);
                for (p, c, n) in &plan {
                    let cur = if *c < 0 {
                        "-".to_string()
                    } else {
                        c.to_string()
                    };
                    t.row(vec![topic.clone(), p.to_string(), cur, n.to_string()]);
                }
                let mut s = t.render();
                s.push_str(if dry_run {
                    "(dry run: nothing committed)\n"
                } else {
                    "offsets committed\n"
                });
                s
            });
            Ok(())
        }
        GroupAction::Delete { groups } => {
            for g in &groups {
                let coord = admin::coordinator(&client, g).await?;
                admin::delete_group(&coord, g).await?;
            }
            emit(conn.format, &json!({"deleted": groups}), || {
                groups
                    .iter()
                    .map(|g| format!("deleted group {g}\n"))
                    .collect()
            });
            Ok(())
        }
    }
}

/// Whether a described group is one the coordinator does not know: Kafka answers such a
/// DescribeGroups with state `Dead` (or GROUP_ID_NOT_FOUND), and an unknown group has no
/// committed offsets either.
pub fn group_missing(state: &str, members: usize, committed: usize) -> bool {
    state == "Dead" && members == 0 && committed == 0
}

/// The JSON and text of one group; `None` when the group does not exist.
async fn describe(client: &Client, group: &str) -> CliResult<Option<(serde_json::Value, String)>> {
    let coord = admin::coordinator(client, group).await?;
    let g = admin::describe_group(&coord, group).await?;
    let committed = admin::committed_offsets(&coord, group).await?;
    if group_missing(&g.state, g.members.len(), committed.len()) {
        return Ok(None);
    }
    // Every partition of every topic the group commits to or is assigned.
    let mut topics: BTreeSet<String> = committed.keys().map(|(t, _)| t.clone()).collect();
    for m in &g.members {
        for (t, _) in &m.assignment {
            topics.insert(t.clone());
        }
    }
    let mut owner: BTreeMap<(String, i32), &admin::MemberInfo> = BTreeMap::new();
    for m in &g.members {
        for (t, ps) in &m.assignment {
            for p in ps {
                owner.insert((t.clone(), *p), m);
            }
        }
    }
    let mut rows = Vec::new();
    for t in &topics {
        let info = match admin::topic_info(client, t).await {
            Ok(i) => i,
            Err(e) => {
                tracing::debug!(topic = %t, error = %e, "topic of a group offset is gone");
                continue;
            }
        };
        let parts: Vec<i32> = info.partitions.iter().map(|p| p.partition).collect();
        client.refresh_metadata(std::slice::from_ref(t)).await?;
        let ends: BTreeMap<i32, i64> = client
            .list_offsets(t, &parts, LATEST)
            .await?
            .into_iter()
            .collect();
        for p in parts {
            let c = committed.get(&(t.clone(), p)).copied().unwrap_or(-1);
            let m = owner.get(&(t.clone(), p));
            if c < 0 && m.is_none() {
                continue;
            }
            let end = ends.get(&p).copied().unwrap_or(-1);
            rows.push(LagRow {
                topic: t.clone(),
                partition: p,
                member_id: m.map(|m| m.member_id.clone()),
                client_id: m.map(|m| m.client_id.clone()),
                host: m.map(|m| m.client_host.clone()),
                committed: c,
                log_end: end,
                lag: lag(c, end),
            });
        }
    }
    let total: i64 = rows.iter().filter_map(|r| r.lag).sum();
    let doc = json!({
        "group": group,
        "state": g.state,
        "protocol_type": g.protocol_type,
        "protocol": g.protocol,
        "members": g.members,
        "partitions": rows,
        "total_lag": total,
    });
    let mut text = format!(
        "GROUP {group}  state={}  protocol={}  members={}  total-lag={total}\n",
        g.state,
        if g.protocol.is_empty() {
            "-"
        } else {
            &g.protocol
        },
        g.members.len()
    );
    let mut t = Table::new(&[
        "TOPIC",
        "PARTITION",
        "COMMITTED",
        "LOG-END",
        "LAG",
        "MEMBER",
        "CLIENT-ID",
        "HOST",
    ]);
    for r in &rows {
        t.row(vec![
            r.topic.clone(),
            r.partition.to_string(),
            if r.committed < 0 {
                "-".into()
            } else {
                r.committed.to_string()
            },
            r.log_end.to_string(),
            r.lag.map_or("-".into(), |l| l.to_string()),
            r.member_id.clone().unwrap_or_else(|| "-".into()),
            r.client_id.clone().unwrap_or_else(|| "-".into()),
            r.host.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    text.push_str(&t.render());
    text.push('\n');
    Ok(Some((doc, text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_math() {
        assert_eq!(lag(5, 12), Some(7));
        assert_eq!(lag(12, 12), Some(0));
        assert_eq!(
            lag(15, 12),
            Some(0),
            "a commit past the end (truncation) is no lag"
        );
        assert_eq!(lag(-1, 12), None);
        assert_eq!(clamp_target(100, 3, 50), 50);
        assert_eq!(clamp_target(0, 3, 50), 3);
        assert_eq!(clamp_target(7, 3, 50), 7);
        assert_eq!(clamp_target(7, 10, 5), 10);
    }

    #[test]
    fn only_dead_groups_without_offsets_are_missing() {
        assert!(group_missing("Dead", 0, 0));
        assert!(!group_missing("Empty", 0, 0));
        assert!(
            !group_missing("Empty", 0, 3),
            "a group with only offsets exists"
        );
        assert!(!group_missing("Dead", 0, 1));
        assert!(!group_missing("Stable", 2, 0));
    }

    #[test]
    fn assignment_decoding() {
        use bytes::{BufMut, BytesMut};
        use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
        use kafka_protocol::messages::{ConsumerProtocolAssignment, TopicName};
        use kafka_protocol::protocol::{Encodable, StrBytes};
        let mut tp = TopicPartition::default();
        tp.topic = TopicName(StrBytes::from_static_str("orders"));
        tp.partitions = vec![3, 1];
        let mut a = ConsumerProtocolAssignment::default();
        a.assigned_partitions = vec![tp];
        let mut b = BytesMut::new();
        b.put_i16(1);
        a.encode(&mut b, 1).expect("encode");
        assert_eq!(
            admin::decode_assignment(b.freeze()),
            vec![("orders".to_string(), vec![1, 3])]
        );
        assert!(admin::decode_assignment(bytes::Bytes::new()).is_empty());
        assert!(admin::decode_assignment(bytes::Bytes::from_static(&[0, 0, 0xff])).is_empty());
    }
}
