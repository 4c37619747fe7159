//! `shardlog topic create|list|describe|alter-config|add-partitions|delete`.

use std::collections::BTreeMap;

use clap::Subcommand;
use serde_json::json;
use shardlog_client::{NewTopic, EARLIEST, LATEST};

use super::admin;
use super::output::{emit, human_bytes, Table};
use super::{parse_kv, CliError, CliResult, Conn};

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
    let ids: Vec<i32> = t.partitions.iter().map(|p| p.partition).collect();
    // Make sure the client's cache knows the leaders before asking them for offsets.
    client.refresh_metadata(&[name.to_string()]).await?;
    let start: BTreeMap<i32, i64> = client
        .list_offsets(name, &ids, EARLIEST)
        .await?
        .into_iter()
        .collect();
    let end: BTreeMap<i32, i64> = client
        .list_offsets(name, &ids, LATEST)
        .await?
        .into_iter()
        .collect();
    let sizes = admin::partition_sizes(client, &md, name)
        .await
        .unwrap_or(None);
    let configs = if with_configs {
        admin::describe_topic_configs(client, name).await?
    } else {
        Vec::new()
    };

    let mut tab = Table::new(&[
        "PARTITION",
        "LEADER",
        "EPOCH",
        "REPLICAS",
        "ISR",
        "START",
        "END",
        "RECORDS",
        "SIZE",
    ]);
    let mut parts_json = Vec::new();
    for p in &t.partitions {
        let s = start.get(&p.partition).copied().unwrap_or(-1);
        let e = end.get(&p.partition).copied().unwrap_or(-1);
        let size = sizes.as_ref().and_then(|m| m.get(&p.partition)).copied();
        tab.row(vec![
            p.partition.to_string(),
            p.leader.to_string(),
            p.leader_epoch.to_string(),
            format!("{:?}", p.replicas),
            format!("{:?}", p.isr),
            s.to_string(),
            e.to_string(),
            (e - s).max(0).to_string(),
            size.map_or("-".to_string(), |b| human_bytes(b.max(0) as u64)),
        ]);
        parts_json.push(json!({
            "partition": p.partition, "leader": p.leader, "leader_epoch": p.leader_epoch,
            "replicas": p.replicas, "isr": p.isr, "offline_replicas": p.offline,
            "log_start_offset": s, "log_end_offset": e, "size_bytes": size,
        }));
    }
    let mut text = format!(
        "TOPIC {name}  partitions={}  replication={}\n",
        t.partitions.len(),
        t.partitions.first().map_or(0, |p| p.replicas.len())
    );
    text.push_str(&tab.render());
    if sizes.is_none() {
        text.push_str("(sizes not shown: the cluster does not support DescribeLogDirs; see the shardlog_partition_size_bytes metric)\n");
    }
    if with_configs {
        let mut ct = Table::new(&["CONFIG", "VALUE", "SOURCE"]);
        for c in &configs {
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
        "sizes_available": sizes.is_some(),
        "configs": configs,
    });
    Ok((doc, text))
}
