//! `shardlog cluster info|health`.

use clap::Subcommand;
use serde_json::json;

use crate::admin::{self, ClusterInfo};
use crate::conn::Conn;
use crate::error::{CliError, CliResult};
use crate::output::{emit, Table};

#[derive(Subcommand, Debug)]
pub enum ClusterAction {
    /// Cluster id, controller, brokers and topic/partition counts.
    Info,
    /// Reachability of every broker, under-replicated and offline partitions (exit 1 when
    /// anything is unhealthy).
    Health,
}

/// Partition health counts of a cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PartitionHealth {
    pub partitions: usize,
    /// ISR smaller than the replica set.
    pub under_replicated: Vec<(String, i32)>,
    /// No leader, or a partition-level error.
    pub offline: Vec<(String, i32)>,
}

pub fn partition_health(info: &ClusterInfo) -> PartitionHealth {
    let mut h = PartitionHealth::default();
    for t in &info.topics {
        for p in &t.partitions {
            h.partitions += 1;
            if p.leader < 0 || (p.error_code != 0 && p.error_code != 9) {
                h.offline.push((t.name.clone(), p.partition));
            } else if p.isr.len() < p.replicas.len() || p.error_code == 9 {
                // 9 = REPLICA_NOT_AVAILABLE
                h.under_replicated.push((t.name.clone(), p.partition));
            }
        }
    }
    h
}

/// `cluster info` as JSON and as text: Metadata's topic counts, and the brokers and controller
/// from DescribeCluster when the cluster answers it (fenced brokers included, v2), else from
/// Metadata (live brokers only).
pub fn info_view(
    info: &ClusterInfo,
    described: Option<&admin::DescribedCluster>,
) -> (serde_json::Value, String) {
    let h = partition_health(info);
    let (controller_id, brokers, with_fenced) = match described {
        Some(d) => (d.controller_id, &d.brokers, d.with_fenced),
        None => (info.controller_id, &info.brokers, false),
    };
    let fenced = brokers.iter().filter(|b| b.fenced).count();
    let json = json!({
        "cluster_id": info.cluster_id,
        "controller_id": controller_id,
        "brokers": brokers,
        "fenced_brokers_shown": with_fenced,
        "topics": info.topics.len(),
        "partitions": h.partitions,
        "under_replicated_partitions": h.under_replicated.len(),
        "offline_partitions": h.offline.len(),
    });
    let mut s = format!(
        "cluster {}  controller {}  brokers {} ({} fenced)  topics {}  partitions {} ({} under-replicated, {} offline)\n\n",
        info.cluster_id.as_deref().unwrap_or("-"),
        if controller_id >= 0 {
            controller_id.to_string()
        } else {
            "unknown".into()
        },
        brokers.len(),
        fenced,
        info.topics.len(),
        h.partitions,
        h.under_replicated.len(),
        h.offline.len(),
    );
    let mut t = Table::new(&["BROKER", "HOST", "PORT", "RACK", "STATE", "CONTROLLER"]);
    for b in brokers {
        t.row(vec![
            b.node_id.to_string(),
            b.host.clone(),
            b.port.to_string(),
            b.rack.clone().unwrap_or_else(|| "-".into()),
            if b.fenced { "fenced" } else { "live" }.into(),
            if b.node_id == controller_id {
                "*".into()
            } else {
                String::new()
            },
        ]);
    }
    s.push_str(&t.render());
    if !with_fenced {
        s.push_str("(live brokers only: the cluster does not report fenced ones)\n");
    }
    (json, s)
}

pub async fn run(conn: &Conn, action: ClusterAction) -> CliResult {
    let client = conn.connect().await?;
    let info = admin::metadata(&client, None).await?;
    match action {
        ClusterAction::Info => {
            let described = admin::describe_cluster(&client).await?;
            let (json, text) = info_view(&info, described.as_ref());
            emit(conn.format, &json, || text);
            Ok(())
        }
        ClusterAction::Health => {
            let h = partition_health(&info);
            let mut unreachable = Vec::new();
            for b in &info.brokers {
                if let Err(e) = client.broker_conn(b.node_id).await {
                    unreachable.push(json!({"node_id": b.node_id, "error": e.to_string()}));
                }
            }
            let healthy = unreachable.is_empty()
                && h.offline.is_empty()
                && h.under_replicated.is_empty()
                && !info.brokers.is_empty();
            let json = json!({
                "healthy": healthy,
                "brokers": info.brokers.len(),
                "unreachable_brokers": unreachable,
                "controller_id": info.controller_id,
                "partitions": h.partitions,
                "under_replicated_partitions": h.under_replicated,
                "offline_partitions": h.offline,
            });
            emit(conn.format, &json, || {
                let list = |v: &[(String, i32)]| {
                    if v.is_empty() {
                        "none".to_string()
                    } else {
                        v.iter()
                            .map(|(t, p)| format!("{t}-{p}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                };
                format!(
                    "healthy: {}\nbrokers: {} ({} unreachable)\ncontroller: {}\npartitions: {}\nunder-replicated: {}\noffline: {}\n",
                    if healthy { "yes" } else { "NO" },
                    info.brokers.len(),
                    unreachable.len(),
                    info.controller_id,
                    h.partitions,
                    list(&h.under_replicated),
                    list(&h.offline),
                )
            });
            if healthy {
                Ok(())
            } else {
                Err(CliError::Failed("the cluster is not healthy".into()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::{BrokerInfo, PartitionInfo, TopicInfo};

    fn part(p: i32, leader: i32, replicas: Vec<i32>, isr: Vec<i32>) -> PartitionInfo {
        PartitionInfo {
            partition: p,
            leader,
            leader_epoch: 0,
            replicas,
            isr,
            offline: vec![],
            error_code: 0,
        }
    }

    #[test]
    fn health_counts() {
        let info = ClusterInfo {
            cluster_id: None,
            controller_id: 0,
            brokers: vec![BrokerInfo {
                node_id: 0,
                host: "h".into(),
                port: 1,
                rack: None,
                fenced: false,
            }],
            topics: vec![TopicInfo {
                name: "t".into(),
                internal: false,
                error_code: 0,
                partitions: vec![
                    part(0, 0, vec![0], vec![0]),
                    part(1, -1, vec![0], vec![]),
                    part(2, 0, vec![0, 1, 2], vec![0, 1]),
                ],
            }],
        };
        let h = partition_health(&info);
        assert_eq!(h.partitions, 3);
        assert_eq!(h.offline, vec![("t".to_string(), 1)]);
        assert_eq!(h.under_replicated, vec![("t".to_string(), 2)]);
    }

    fn broker(id: i32, fenced: bool) -> BrokerInfo {
        BrokerInfo {
            node_id: id,
            host: format!("h{id}"),
            port: 9000 + id,
            rack: None,
            fenced,
        }
    }

    #[test]
    fn info_shows_fenced_brokers_and_the_controller() {
        let info = ClusterInfo {
            cluster_id: Some("c1".into()),
            controller_id: 1,
            brokers: vec![broker(1, false), broker(3, false)],
            topics: vec![TopicInfo {
                name: "t".into(),
                internal: false,
                error_code: 0,
                partitions: vec![
                    part(0, 1, vec![1, 2, 3], vec![1, 3]),
                    part(1, -1, vec![2], vec![2]),
                ],
            }],
        };
        let described = admin::DescribedCluster {
            controller_id: 3,
            brokers: vec![broker(1, false), broker(2, true), broker(3, false)],
            with_fenced: true,
        };
        let (json, text) = info_view(&info, Some(&described));
        assert_eq!(json["controller_id"], 3);
        assert_eq!(json["brokers"][1]["fenced"], true);
        assert_eq!(json["brokers"][1]["node_id"], 2);
        assert_eq!(json["under_replicated_partitions"], 1);
        assert_eq!(json["offline_partitions"], 1);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].contains("controller 3") && lines[0].contains("(1 fenced)"),
            "{text}"
        );
        let row = |id: &str| {
            lines
                .iter()
                .find(|l| l.split_whitespace().next() == Some(id))
                .map(|l| l.split_whitespace().collect::<Vec<_>>())
                .unwrap_or_default()
        };
        assert_eq!(row("2"), ["2", "h2", "9002", "-", "fenced"], "{text}");
        assert_eq!(row("3"), ["3", "h3", "9003", "-", "live", "*"], "{text}");
        assert!(!text.contains("live brokers only"));

        // Without DescribeCluster: Metadata's live brokers, said so.
        let (json, text) = info_view(&info, None);
        assert_eq!(json["controller_id"], 1);
        assert_eq!(json["brokers"].as_array().map(Vec::len), Some(2));
        assert!(text.contains("live brokers only"), "{text}");
    }
}
