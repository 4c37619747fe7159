//! Replication on a shard: the hook that gives a partition its role when the metadata image
//! changes, the forwarding of a leader's ISR changes to the controller, and the follower
//! fetchers (`fetcher.rs`).
//!
//! Why here and not in the partition facade: the facade (`crate::partition::replication`)
//! decides and does the log work for one partition without knowing the shard, the mesh or the
//! network, so its tests exchange replica fetches between partitions directly; this folder
//! connects it to the image (roles, leader addresses), to shard 0 (AlterPartition) and to the
//! leaders' Kafka listeners (one fetcher per leader broker per shard).

pub mod fetcher;

use std::rc::Rc;
use std::time::Duration;

use crate::controller::metadata::{PartitionMeta, TopicMeta};
use crate::mesh::messages::{AdminReq, AdminResp, AlterPartitionReq};
use crate::mesh::shard::Shard;
use crate::partition::replication::Assignment;
use crate::partition::{AlterSink, IsrProposal, Partition, ReplicaSetup};
use shardlog_replica::Role;

/// How long a refused ISR change waits before the leader may propose again (the core proposes
/// on the next fetch or tick once told; without a pause a controller that keeps refusing would
/// be asked in a loop).
const ISR_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// A partition's assignment in the image, as the facade takes it (an image without replicas,
/// which `ClusterMeta::upgrade_single_node` fills in at load, counts as this broker's alone).
pub(crate) fn assignment_from_meta(pm: &PartitionMeta, node_id: i32) -> Assignment {
    if pm.replicas.is_empty() {
        return Assignment::sole(node_id, pm.leader_epoch);
    }
    Assignment {
        leader: pm.leader,
        leader_epoch: pm.leader_epoch,
        partition_epoch: pm.partition_epoch,
        replicas: pm.replicas.clone(),
        isr: pm.isr.clone(),
    }
}

impl Shard {
    /// The replica settings partitions of `t` open with on this shard.
    pub(crate) fn replica_setup(self: &Rc<Self>, t: &TopicMeta) -> ReplicaSetup {
        ReplicaSetup {
            node_id: self.cfg.node_id,
            replica_lag_time_max_ms: self.cfg.replica_lag_time_max_ms,
            min_insync_replicas: min_insync_replicas(t),
            alter_sink: Some(self.alter_sink()),
        }
    }

    /// Partition `i` of `t` as the image assigns it.
    pub(crate) fn assignment_of(&self, t: &TopicMeta, i: i32) -> Assignment {
        match t.partitions.get(i as usize) {
            Some(pm) => assignment_from_meta(pm, self.cfg.node_id),
            None => Assignment::sole(self.cfg.node_id, 0),
        }
    }

    /// The shard hook: a record changed partition `i` of `t` (or its topic's configs), and this
    /// shard owns it. The facade takes the new role and settings; the fetchers follow it.
    pub(crate) fn apply_partition_meta(self: &Rc<Self>, p: &Rc<Partition>, t: &TopicMeta, i: i32) {
        p.set_min_insync_replicas(min_insync_replicas(t));
        let a = self.assignment_of(t, i);
        if let Err(e) = p.apply_assignment(&a) {
            tracing::warn!(topic = %t.name, partition = i, leader = a.leader, leader_epoch = a.leader_epoch, error = %e, "partition assignment refused by the replica core");
        }
        self.follow(p);
    }

    /// Points the follower fetchers at the partition's leader (or at nobody), starting the
    /// leader's fetcher when this shard follows nothing else from it.
    pub(crate) fn follow(self: &Rc<Self>, p: &Partition) {
        let leader = match p.role() {
            Role::Follower { leader } => Some(leader),
            _ => None,
        };
        if let Some((leader, set)) = self.followers.point(&p.topic, p.index, leader) {
            tracing::info!(shard = self.id, leader, "starting a follower fetcher");
            glommio::spawn_local(fetcher::run(self.clone(), leader, set)).detach();
        }
    }

    /// Where this shard's partitions send their ISR proposals: to shard 0 as an
    /// AlterPartition, whose answer goes back to the partition. Holds the shard weakly (the
    /// shard holds the partitions that hold the sink).
    fn alter_sink(self: &Rc<Self>) -> AlterSink {
        let shard = Rc::downgrade(self);
        Rc::new(move |proposal: IsrProposal| {
            if let Some(shard) = shard.upgrade() {
                glommio::spawn_local(async move { shard.propose_isr_change(proposal).await })
                    .detach();
            }
        })
    }

    async fn propose_isr_change(self: Rc<Self>, proposal: IsrProposal) {
        let topic_id = self.topic(&proposal.topic).map_or(0, |t| t.id);
        let req = AlterPartitionReq {
            topic: proposal.topic.clone(),
            topic_id,
            partition: proposal.partition.max(0) as u32,
            leader: self.cfg.node_id,
            leader_epoch: proposal.alter.leader_epoch,
            broker_epoch: self.broker_epoch(),
            partition_epoch: proposal.alter.partition_epoch,
            new_isr: proposal
                .alter
                .isr
                .iter()
                .map(|m| (m.id, m.broker_epoch.unwrap_or(-1)))
                .collect(),
        };
        tracing::info!(topic = %req.topic, partition = req.partition, leader_epoch = req.leader_epoch, partition_epoch = req.partition_epoch, isr = ?req.new_isr, "proposing an ISR change");
        let answer = match self.admin_call(AdminReq::AlterPartition(req)).await {
            AdminResp::AlterPartition(Ok(pm)) => Ok(assignment_from_meta(&pm, self.cfg.node_id)),
            AdminResp::AlterPartition(Err(code)) => Err(code),
            _ => Err(crate::wire::errors::UNKNOWN_SERVER_ERROR),
        };
        if answer.is_err() {
            glommio::timer::sleep(ISR_RETRY_PAUSE).await;
        }
        if let Some(p) = self.partition(&proposal.topic, proposal.partition) {
            p.isr_answer(proposal.alter.leader_epoch, answer);
        }
    }

    /// This broker's epoch (KIP-903), -1 before it registered.
    pub(crate) fn broker_epoch(&self) -> i64 {
        self.meta
            .borrow()
            .brokers
            .get(&self.cfg.node_id)
            .map_or(-1, |b| b.epoch)
    }

    /// The advertised Kafka address of broker `id`, from the image.
    pub(crate) fn broker_address(&self, id: i32) -> Option<(String, u16)> {
        self.meta
            .borrow()
            .brokers
            .get(&id)
            .map(|b| (b.host.clone(), b.port))
    }

    /// The partition exists in the image and this broker holds no replica of it.
    pub(crate) fn replica_elsewhere(&self, topic: &str, partition: i32) -> bool {
        let meta = self.meta.borrow();
        let Some(pm) = u32::try_from(partition)
            .ok()
            .and_then(|p| meta.partition(topic, p))
        else {
            return false;
        };
        !pm.replicas.is_empty() && !pm.replicas.contains(&self.cfg.node_id)
    }

    /// (leader, leader epoch) of a partition in the image (KIP-951's `current_leader`).
    pub(crate) fn leader_in_image(&self, topic: &str, partition: i32) -> Option<(i32, i32)> {
        let meta = self.meta.borrow();
        let pm = meta.partition(topic, u32::try_from(partition).ok()?)?;
        Some((pm.leader, pm.leader_epoch))
    }

    /// Whether this broker holds a replica of partition `i` of `t` (every partition of an
    /// image without replicas). Only those are opened here.
    pub(crate) fn hosts_replica(&self, t: &TopicMeta, i: i32) -> bool {
        t.partitions
            .get(i as usize)
            .is_none_or(|pm| pm.replicas.is_empty() || pm.replicas.contains(&self.cfg.node_id))
    }
}

/// The topic's `min.insync.replicas` (1 when unset or unreadable: validation refuses others).
pub(crate) fn min_insync_replicas(t: &TopicMeta) -> usize {
    t.configs
        .get("min.insync.replicas")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
}
