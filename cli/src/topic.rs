//! `shardlog topic create|list|describe|alter-config|add-partitions|delete|delete-records`.

use std::collections::BTreeMap;

use clap::{ArgGroup, Subcommand};
use serde_json::json;
use shardlog_client::{NewTopic, EARLIEST, LATEST};

use crate::admin;
use crate::conn::Conn;
use crate::error::{parse_kv, CliError, CliResult};
use crate::output::{emit, human_bytes, Table};

#[derive(Subcommand, Debug)]
pub enum TopicAction {
    /// Create a topic.
    Create {
        /// Topic name.
        name: String,
        /// Number of partitions.
        #[arg(long, short = 'p', default_value_t = 1)]
        partitions: i32,
        /// Replication factor (-1: the broker's default).
        #[arg(long, short = 'r', default_value_t = -1, allow_negative_numbers = true)]
        replication_factor: i16,
        /// Topic config KEY=VALUE (repeatable), e.g. retention.ms=86400000.
        #[arg(long = "config", short = 'c', value_name = "KEY=VALUE")]
        configs: Vec<String>,
        /// Succeed when the topic already exists.
        #[arg(long)]
        if_not_exists: bool,
    },
    /// List topics with their partition counts.
    List {
        /// Include internal topics (such as __consumer_offsets).
        #[arg(long)]
        internal: bool,
    },
    /// Partitions (leader, replicas, ISR, offsets, sizes) and configs of topics.
    Describe {
        /// Topic names.
        #[arg(required = true)]
        names: Vec<String>,
        /// Leave out the config listing.
        #[arg(long)]
        no_configs: bool,
    },
    /// Set or delete topic configs.
    AlterConfig {
        /// Topic name.
        name: String,
        /// KEY=VALUE to set (repeatable).
        #[arg(long, value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// KEY to reset to the default (repeatable).
        #[arg(long, value_name = "KEY")]
        delete: Vec<String>,
        /// Only ask the broker to validate the change.
        #[arg(long)]
        dry_run: bool,
    },
    /// Grow a topic to a total number of partitions.
    AddPartitions {
        /// Topic name.
        name: String,
        /// The new total partition count.
        #[arg(long)]
        total: i32,
    },
    /// Delete topics.
    Delete {
        /// Topic names.
        #[arg(required = true)]
        names: Vec<String>,
        /// Succeed when a topic does not exist.
        #[arg(long)]
        if_exists: bool,
    },
    /// Delete the records before an offset (DeleteRecords): the partition's log start moves
    /// up to it and the records below can no longer be read.
    #[command(group(ArgGroup::new("target").required(true).args(["before", "offsets"])))]
    DeleteRecords {
        /// Topic name.
        name: String,
        /// Delete the records before OFFSET (a number, or `end`: everything written so far)
        /// in the partitions chosen by --partition or --all-partitions.
        #[arg(long, value_name = "OFFSET|end")]
        before: Option<String>,
        /// With --before: this partition (repeatable).
        #[arg(long, short = 'p', requires = "before")]
        partition: Vec<i32>,
        /// With --before: every partition of the topic.
        #[arg(long, requires = "before", conflicts_with = "partition")]
        all_partitions: bool,
        /// PARTITION=OFFSET: delete the records before OFFSET (or `end`) in PARTITION
        /// (repeatable, one per partition).
        #[arg(
            long = "offset",
            value_name = "PARTITION=OFFSET",
            conflicts_with = "before"
        )]
        offsets: Vec<String>,
        /// Show what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Where `delete-records` moves a partition's log start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteTo {
    /// Before this offset.
    Offset(i64),
    /// Before the high watermark: everything written so far.
    End,
}

/// `OFFSET` or `end`.
pub fn parse_delete_to(s: &str) -> CliResult<DeleteTo> {
    if s.eq_ignore_ascii_case("end") {
        return Ok(DeleteTo::End);
    }
    match s.parse::<i64>() {
        Ok(o) if o >= 0 => Ok(DeleteTo::Offset(o)),
        _ => Err(CliError::Usage(format!(
            "offset {s:?}: expected a number >= 0 or `end`"
        ))),
    }
}

/// The partitions and targets of `delete-records`, checked against the topic's partitions.
pub fn delete_plan(
    topic: &str,
    all: &[i32],
    before: Option<&str>,
    partitions: &[i32],
    all_partitions: bool,
    offsets: &[String],
) -> CliResult<Vec<(i32, DeleteTo)>> {
    let check = |p: i32| {
        if all.contains(&p) {
            Ok(p)
        } else {
            Err(CliError::Usage(format!(
                "topic {topic} has no partition {p} (it has {})",
                all.len()
            )))
        }
    };
    let mut plan: Vec<(i32, DeleteTo)> = Vec::new();
    if let Some(b) = before {
        let to = parse_delete_to(b)?;
        let ps: Vec<i32> = if all_partitions {
            all.to_vec()
        } else if partitions.is_empty() {
            return Err(CliError::Usage(
                "--before needs the partitions: --partition P (repeatable) or --all-partitions"
                    .into(),
            ));
        } else {
            partitions.to_vec()
        };
        for p in ps {
            plan.push((check(p)?, to));
        }
    } else {
        for o in offsets {
            let (p, off) = parse_kv(o).map_err(|_| {
                CliError::Usage(format!("--offset {o:?}: expected PARTITION=OFFSET"))
            })?;
            let p: i32 = p.parse().map_err(|_| {
                CliError::Usage(format!("--offset {o:?}: {p:?} is not a partition number"))
            })?;
            plan.push((check(p)?, parse_delete_to(&off)?));
        }
    }
    plan.sort_by_key(|&(p, _)| p);
    if let Some(w) = plan.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(CliError::Usage(format!(
            "partition {} is given more than once",
            w[0].0
        )));
    }
    Ok(plan)
}

pub async fn run(conn: &Conn, action: TopicAction) -> CliResult {
    let client = conn.connect().await?;
    let timeout = conn.timeout();
    match action {
        TopicAction::Create {
            name,
            partitions,
            replication_factor,
            configs,
            if_not_exists,
        } => {
            if partitions < 1 {
                return Err(CliError::Usage("--partitions must be >= 1".into()));
            }
            let configs = configs
                .iter()
                .map(|c| parse_kv(c))
                .collect::<CliResult<Vec<_>>>()?;
            let t = NewTopic {
                name: name.clone(),
                partitions,
                replication_factor,
                configs,
            };
            client
                .create_topics(&[t], timeout, if_not_exists)
                .await
                .map_err(|e| CliError::Failed(format!("cannot create topic {name}: {e}")))?;
            emit(
                conn.format,
                &json!({"topic": name, "created": true, "partitions": partitions}),
                || format!("created topic {name} with {partitions} partition(s)\n"),
            );
            Ok(())
        }
        TopicAction::List { internal } => {
            let md = admin::metadata(&client, None).await?;
            let topics: Vec<&admin::TopicInfo> = md
                .topics
                .iter()
                .filter(|t| internal || !(t.internal || t.name.starts_with("__")))
                .collect();
            let json = json!(topics
                .iter()
                .map(|t| json!({
                    "name": t.name,
                    "partitions": t.partitions.len(),
                    "replication_factor": t.partitions.first().map_or(0, |p| p.replicas.len()),
                    "internal": t.internal,
                    "error_code": t.error_code,
                }))
                .collect::<Vec<_>>());
            emit(conn.format, &json, || {
                let mut tab = Table::new(&["TOPIC", "PARTITIONS", "REPLICAS"]);
                for t in &topics {
                    tab.row(vec![
                        t.name.clone(),
                        t.partitions.len().to_string(),
                        t.partitions
                            .first()
                            .map_or(0, |p| p.replicas.len())
                            .to_string(),
                    ]);
                }
                tab.render()
            });
            Ok(())
        }
        TopicAction::Describe { names, no_configs } => {
            let mut docs = Vec::new();
            let mut text = String::new();
            for name in &names {
                let (doc, t) = describe(&client, name, !no_configs).await?;
                docs.push(doc);
                text.push_str(&t);
            }
            let json = if docs.len() == 1 {
                docs.pop().unwrap_or_default()
            } else {
                json!(docs)
            };
            emit(conn.format, &json, || text);
            Ok(())
        }
        TopicAction::AlterConfig {
            name,
            set,
            delete,
            dry_run,
        } => {
            if set.is_empty() && delete.is_empty() {
                return Err(CliError::Usage(
                    "nothing to change: give --set KEY=VALUE and/or --delete KEY".into(),
                ));
            }
            let set = set
                .iter()
                .map(|c| parse_kv(c))
                .collect::<CliResult<Vec<_>>>()?;
            admin::alter_topic_configs(&client, &name, &set, &delete, dry_run).await?;
            let verb = if dry_run { "validated" } else { "altered" };
            emit(
                conn.format,
                &json!({"topic": name, "set": set.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(), "deleted": delete, "dry_run": dry_run}),
                || {
                    format!(
                        "{verb} configs of topic {name}: {} set, {} deleted\n",
                        set.len(),
                        delete.len()
                    )
                },
            );
            Ok(())
        }
        TopicAction::AddPartitions { name, total } => {
            let before = admin::topic_info(&client, &name).await?.partitions.len();
            if total <= before as i32 {
                return Err(CliError::Usage(format!(
                    "topic {name} already has {before} partitions; --total must be larger"
                )));
            }
            admin::add_partitions(
                &client,
                &name,
                total,
                timeout.as_millis().min(i32::MAX as u128) as i32,
            )
            .await?;
            emit(
                conn.format,
                &json!({"topic": name, "partitions_before": before, "partitions": total}),
                || format!("topic {name}: {before} -> {total} partitions\n"),
            );
            Ok(())
        }
        TopicAction::DeleteRecords {
            name,
            before,
            partition,
            all_partitions,
            offsets,
            dry_run,
        } => {
            let info = admin::topic_info(&client, &name).await?;
            let all: Vec<i32> = info.partitions.iter().map(|p| p.partition).collect();
            let plan = delete_plan(
                &name,
                &all,
                before.as_deref(),
                &partition,
                all_partitions,
                &offsets,
            )?;
            delete_records(conn, &client, &name, plan, dry_run).await
        }
        TopicAction::Delete { names, if_exists } => {
            client
                .delete_topics(&names, timeout, if_exists)
                .await
                .map_err(|e| {
                    CliError::Failed(format!("cannot delete {}: {e}", names.join(", ")))
                })?;
            emit(conn.format, &json!({"deleted": names}), || {
                names
                    .iter()
                    .map(|n| format!("deleted topic {n}\n"))
                    .collect()
            });
            Ok(())
        }
    }
}

/// Each partition's log start and log end offsets, from its leader.
async fn log_bounds(
    client: &shardlog_client::Client,
    name: &str,
    ids: &[i32],
) -> CliResult<(BTreeMap<i32, i64>, BTreeMap<i32, i64>)> {
    let start = client.list_offsets(name, ids, EARLIEST).await?;
    let end = client.list_offsets(name, ids, LATEST).await?;
    Ok((start.into_iter().collect(), end.into_iter().collect()))
}

/// `topic delete-records`: checks every target against the partition's log end first (so
/// nothing is deleted when one is out of range), then sends DeleteRecords to the leaders.
async fn delete_records(
    conn: &Conn,
    client: &shardlog_client::Client,
    name: &str,
    plan: Vec<(i32, DeleteTo)>,
    dry_run: bool,
) -> CliResult {
    let ids: Vec<i32> = plan.iter().map(|&(p, _)| p).collect();
    client.refresh_metadata(&[name.to_string()]).await?;
    let (start, end) = log_bounds(client, name, &ids).await?;
    let mut sends = Vec::new();
    for &(p, to) in &plan {
        let e = end.get(&p).copied().unwrap_or(-1);
        if let DeleteTo::Offset(o) = to {
            if o > e {
                return Err(CliError::Usage(format!(
                    "{name}-{p}: offset {o} is past the end of the log ({e}); nothing was deleted \
                     (use `end` to delete everything written so far)"
                )));
            }
        }
        sends.push((
            p,
            match to {
                DeleteTo::Offset(o) => o,
                DeleteTo::End => -1,
            },
        ));
    }
    let results = if dry_run {
        BTreeMap::new()
    } else {
        let timeout_ms = conn.timeout().as_millis().min(i32::MAX as u128) as i32;
        admin::delete_records(client, name, &sends, timeout_ms).await?
    };
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for &(p, to) in &plan {
        let s = start.get(&p).copied().unwrap_or(-1);
        let e = end.get(&p).copied().unwrap_or(-1);
        let target = match to {
            DeleteTo::Offset(o) => o,
            DeleteTo::End => e,
        };
        let (new_start, error) = if dry_run {
            (target.max(s), None)
        } else {
            match results.get(&p) {
                Some(Ok(low)) => (*low, None),
                Some(Err(err)) => (s, Some(err.to_string())),
                None => (s, Some("no answer".to_string())),
            }
        };
        if let Some(err) = &error {
            failed.push(format!("{name}-{p}: {err}"));
        }
        rows.push((p, s, new_start, e, error));
    }
    let json = json!({
        "topic": name,
        "dry_run": dry_run,
        "partitions": rows.iter().map(|(p, s, n, e, err)| json!({
            "partition": p, "log_start_before": s, "log_start": n, "log_end": e,
            "deleted": (n - s).max(0), "error": err,
        })).collect::<Vec<_>>(),
    });
    emit(conn.format, &json, || {
        let mut t = Table::new(&[
            "PARTITION",
            "START-BEFORE",
            "START",
            "END",
            "DELETED",
            "ERROR",
        ]);
        for (p, s, n, e, err) in &rows {
            t.row(vec![
                p.to_string(),
                s.to_string(),
                n.to_string(),
                e.to_string(),
                (n - s).max(0).to_string(),
                err.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        let mut out = t.render();
        if dry_run {
            out.push_str("(dry run: nothing deleted)\n");
        }
        out
    });
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::Failed(format!(
            "deleting records failed for {}",
            failed.join("; ")
        )))
    }
}

/// Where the log bounds of a topic's partitions come from, for [`describe_view`].
#[derive(Debug, Default)]
struct Bounds {
    start: BTreeMap<i32, i64>,
    end: BTreeMap<i32, i64>,
    /// Why some or all are missing (offline partitions, an unreachable leader).
    note: Option<String>,
}

/// JSON and text description of one topic.
async fn describe(
    client: &shardlog_client::Client,
    name: &str,
    with_configs: bool,
) -> CliResult<(serde_json::Value, String)> {
    let md = admin::metadata(client, Some(&[name.to_string()])).await?;
    let t = match md.topics.iter().find(|t| t.name == name) {
        Some(t) if t.error_code == 0 => t.clone(),
        _ => return Err(CliError::Failed(format!("topic {name:?} does not exist"))),
    };
    // Only partitions with a leader can be asked for offsets; the description of a cluster
    // with offline partitions or an unreachable broker is still shown (that is when it is
    // needed), with the offsets it could not get left out and said so.
    let online: Vec<i32> = t
        .partitions
        .iter()
        .filter(|p| p.leader >= 0 && p.error_code == 0)
        .map(|p| p.partition)
        .collect();
    let mut bounds = Bounds::default();
    if online.len() < t.partitions.len() {
        bounds.note = Some(format!(
            "{} partition(s) without a leader: no offsets",
            t.partitions.len() - online.len()
        ));
    }
    if !online.is_empty() {
        // Make sure the client's cache knows the leaders before asking them for offsets.
        let got = match client.refresh_metadata(&[name.to_string()]).await {
            Ok(_) => log_bounds(client, name, &online).await,
            Err(e) => Err(e.into()),
        };
        match got {
            Ok((start, end)) => {
                bounds.start = start;
                bounds.end = end;
            }
            Err(e) => bounds.note = Some(format!("offsets not available: {e}")),
        }
    }
    let sizes = admin::partition_sizes(client, &md, name)
        .await
        .unwrap_or(None);
    let configs = if with_configs {
        admin::describe_topic_configs(client, name).await?
    } else {
        Vec::new()
    };
    Ok(describe_view(
        name,
        &t,
        &bounds,
        sizes.as_ref(),
        with_configs.then_some(&configs[..]),
    ))
}

/// A broker id list as `1,2,3` (`-` when empty).
fn ids(v: &[i32]) -> String {
    if v.is_empty() {
        "-".into()
    } else {
        v.iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The description of one topic from its metadata, log bounds, sizes and configs (no I/O).
fn describe_view(
    name: &str,
    t: &admin::TopicInfo,
    bounds: &Bounds,
    sizes: Option<&BTreeMap<i32, i64>>,
    configs: Option<&[admin::ConfigEntry]>,
) -> (serde_json::Value, String) {
    let mut tab = Table::new(&[
        "PARTITION",
        "LEADER",
        "EPOCH",
        "REPLICAS",
        "ISR",
        "OFFLINE",
        "START",
        "END",
        "RECORDS",
        "SIZE",
    ]);
    let mut parts_json = Vec::new();
    for p in &t.partitions {
        let s = bounds.start.get(&p.partition).copied();
        let e = bounds.end.get(&p.partition).copied();
        let size = sizes.and_then(|m| m.get(&p.partition)).copied();
        let opt = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
        tab.row(vec![
            p.partition.to_string(),
            if p.leader >= 0 {
                p.leader.to_string()
            } else {
                "none".into()
            },
            p.leader_epoch.to_string(),
            ids(&p.replicas),
            ids(&p.isr),
            ids(&p.offline),
            opt(s),
            opt(e),
            opt(s.zip(e).map(|(s, e)| (e - s).max(0))),
            size.map_or("-".to_string(), |b| human_bytes(b.max(0) as u64)),
        ]);
        parts_json.push(json!({
            "partition": p.partition, "leader": p.leader, "leader_epoch": p.leader_epoch,
            "replicas": p.replicas, "isr": p.isr, "offline_replicas": p.offline,
            "error_code": p.error_code,
            "log_start_offset": s, "log_end_offset": e, "size_bytes": size,
        }));
    }
    let under = t
        .partitions
        .iter()
        .filter(|p| p.isr.len() < p.replicas.len())
        .count();
    let offline = t.partitions.iter().filter(|p| p.leader < 0).count();
    let mut text = format!(
        "TOPIC {name}  partitions={}  replication={}  under-replicated={under}  offline={offline}\n",
        t.partitions.len(),
        t.partitions.first().map_or(0, |p| p.replicas.len())
    );
    text.push_str(&tab.render());
    if let Some(note) = &bounds.note {
        text.push_str(&format!("({note})\n"));
    }
    if sizes.is_none() {
        text.push_str("(sizes not shown: the cluster does not support DescribeLogDirs; see the shardlog_partition_size_bytes metric)\n");
    }
    if let Some(configs) = configs {
        let mut ct = Table::new(&["CONFIG", "VALUE", "SOURCE"]);
        for c in configs {
            let v = if c.sensitive {
                "(sensitive)".to_string()
            } else {
                c.value.clone().unwrap_or_else(|| "(null)".into())
            };
            ct.row(vec![c.name.clone(), v, c.source.to_string()]);
        }
        text.push('\n');
        text.push_str(&ct.render());
    }
    text.push('\n');
    let doc = json!({
        "name": name,
        "internal": t.internal,
        "partitions": parts_json,
        "under_replicated_partitions": under,
        "offline_partitions": offline,
        "offsets_note": bounds.note,
        "sizes_available": sizes.is_some(),
        "configs": configs.unwrap_or_default(),
    });
    (doc, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_targets() {
        assert_eq!(parse_delete_to("42").expect("n"), DeleteTo::Offset(42));
        assert_eq!(parse_delete_to("END").expect("end"), DeleteTo::End);
        assert!(parse_delete_to("-1").is_err());
        assert!(parse_delete_to("soon").is_err());
    }

    #[test]
    fn delete_plans() {
        let all = [0, 1, 2];
        let p = delete_plan("t", &all, Some("10"), &[], true, &[]).expect("all");
        assert_eq!(
            p,
            vec![
                (0, DeleteTo::Offset(10)),
                (1, DeleteTo::Offset(10)),
                (2, DeleteTo::Offset(10))
            ]
        );
        let p = delete_plan("t", &all, Some("end"), &[2], false, &[]).expect("one");
        assert_eq!(p, vec![(2, DeleteTo::End)]);
        let e = delete_plan("t", &all, Some("10"), &[], false, &[]).expect_err("which partitions");
        assert!(e.to_string().contains("--all-partitions"), "{e}");
        let p = delete_plan("t", &all, None, &[], false, &["2=5".into(), "0=end".into()])
            .expect("per partition");
        assert_eq!(p, vec![(0, DeleteTo::End), (2, DeleteTo::Offset(5))]);
        assert!(delete_plan("t", &all, None, &[], false, &["3=5".into()]).is_err());
        assert!(delete_plan("t", &all, None, &[], false, &["1=5".into(), "1=6".into()]).is_err());
        assert!(delete_plan("t", &all, None, &[], false, &["x=5".into()]).is_err());
        assert!(delete_plan("t", &all, None, &[], false, &["5".into()]).is_err());
    }

    fn part(
        p: i32,
        leader: i32,
        replicas: &[i32],
        isr: &[i32],
        offline: &[i32],
    ) -> admin::PartitionInfo {
        admin::PartitionInfo {
            partition: p,
            leader,
            leader_epoch: 4,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            offline: offline.to_vec(),
            error_code: if leader < 0 { 5 } else { 0 },
        }
    }

    #[test]
    fn describe_shows_leaders_replicas_isr_and_offline_replicas() {
        let t = admin::TopicInfo {
            name: "t".into(),
            internal: false,
            error_code: 0,
            partitions: vec![
                part(0, 2, &[2, 3, 1], &[2, 3, 1], &[]),
                part(1, 3, &[3, 1, 2], &[3, 1], &[2]),
                part(2, -1, &[1, 2, 3], &[1], &[1, 2, 3]),
            ],
        };
        let bounds = Bounds {
            start: [(0, 0), (1, 5)].into_iter().collect(),
            end: [(0, 10), (1, 7)].into_iter().collect(),
            note: Some("1 partition(s) without a leader: no offsets".into()),
        };
        let (json, text) = describe_view("t", &t, &bounds, None, None);
        let rows: Vec<Vec<&str>> = text
            .lines()
            .skip(2)
            .take(3)
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            rows[0],
            ["0", "2", "4", "2,3,1", "2,3,1", "-", "0", "10", "10", "-"],
            "{text}"
        );
        assert_eq!(
            rows[1],
            ["1", "3", "4", "3,1,2", "3,1", "2", "5", "7", "2", "-"],
            "{text}"
        );
        assert_eq!(
            rows[2],
            ["2", "none", "4", "1,2,3", "1", "1,2,3", "-", "-", "-", "-"],
            "{text}"
        );
        assert!(
            text.starts_with("TOPIC t  partitions=3  replication=3  under-replicated=2  offline=1"),
            "{text}"
        );
        assert!(
            text.contains("(1 partition(s) without a leader: no offsets)"),
            "{text}"
        );
        assert_eq!(json["partitions"][1]["offline_replicas"], json!([2]));
        assert_eq!(json["partitions"][2]["leader"], -1);
        assert_eq!(
            json["partitions"][2]["log_end_offset"],
            serde_json::Value::Null
        );
        assert_eq!(json["offline_partitions"], 1);
        assert_eq!(json["under_replicated_partitions"], 2);
    }
}
