//! What a client learns about the cluster: Metadata and DescribeCluster, and where a group's
//! coordinator is (FindCoordinator asks [`ClusterView::coordinator`]).
//!
//! Every answer is built from this broker's copy of the metadata image, so any broker answers
//! the same (up to how far it has applied the log): the brokers are the image's registered,
//! unfenced ones; a partition's leader, replicas, ISR and leader epoch are the controller's
//! last committed [`PartitionMeta`]. The building is pure ([`ClusterView`]) and unit-tested
//! on hand-made images; the handlers only gather this broker's own facts (its id and address,
//! the controller leader it knows of, the partitions whose log failed to open here).
//!
//! Two choices beyond copying the image:
//! * a partition whose leader is not a live broker (fenced, or not registered) is answered
//!   as leaderless (LEADER_NOT_AVAILABLE, leader -1), so a leader id in an answer is always
//!   among the answer's brokers: clients resolve the leader's address from that list, and one
//!   they cannot resolve costs them a metadata round anyway;
//! * while the image has no registered broker (a single node before it registered itself, or
//!   an image from before replication), this broker stands in as the one live broker, which is
//!   exactly the single-node broker's answer.

use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::*;

use crate::controller::metadata::{self, ClusterMeta, PartitionMeta, NO_LEADER};
use crate::groups::offsets_log::OFFSETS_TOPIC;
use crate::mesh::shard::Shard;
use crate::wire::errors;

use crate::api::common::*;

use crate::api::admin::*;

/// A broker as clients see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Node {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub fenced: bool,
}

/// The image as this broker answers from it: the brokers (this one standing in while none
/// registered), this broker's id and the controller leader it knows of.
pub(crate) struct ClusterView<'a> {
    pub image: &'a ClusterMeta,
    /// Every registered broker by id, fenced ones too.
    pub nodes: BTreeMap<i32, Node>,
    pub node_id: i32,
    controller: Option<i32>,
}

impl<'a> ClusterView<'a> {
    /// `host`/`port`: this broker's advertised address; `controller`: the controller leader
    /// this broker knows of.
    pub fn new(
        image: &'a ClusterMeta,
        node_id: i32,
        host: &str,
        port: i32,
        controller: Option<i32>,
    ) -> Self {
        let mut nodes: BTreeMap<i32, Node> = image
            .brokers
            .values()
            .map(|b| {
                let me = b.id == node_id;
                (
                    b.id,
                    Node {
                        id: b.id,
                        // This broker's own entry uses its current advertised address.
                        host: if me { host.to_string() } else { b.host.clone() },
                        port: if me { port } else { i32::from(b.port) },
                        fenced: b.fenced,
                    },
                )
            })
            .collect();
        if nodes.is_empty() {
            nodes.insert(
                node_id,
                Node {
                    id: node_id,
                    host: host.to_string(),
                    port,
                    fenced: false,
                },
            );
        }
        ClusterView {
            image,
            nodes,
            node_id,
            controller,
        }
    }

    /// A registered, unfenced broker.
    pub fn live(&self, id: i32) -> Option<&Node> {
        self.nodes.get(&id).filter(|n| !n.fenced)
    }

    /// Every live broker, by id.
    pub fn live_nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values().filter(|n| !n.fenced)
    }

    /// The controller id clients are told: the controller leader when it is a live broker
    /// (clients can only reach listed brokers), else this broker, which forwards admin
    /// requests to the controller.
    pub fn controller_id(&self) -> i32 {
        self.controller
            .filter(|&c| self.live(c).is_some())
            .unwrap_or(self.node_id)
    }

    /// The serving leader of `pm`: its leader if that is a live broker and, when it is this
    /// broker, the log opened here (`local_offline` false).
    pub fn serving_leader(&self, pm: &PartitionMeta, local_offline: bool) -> Option<&Node> {
        if pm.leader == NO_LEADER || (pm.leader == self.node_id && local_offline) {
            return None;
        }
        self.live(pm.leader)
    }

    /// Replicas on a broker that is fenced or not registered, and this broker's replica when
    /// its log failed to open (`local_offline`).
    pub fn offline_replicas(&self, pm: &PartitionMeta, local_offline: bool) -> Vec<i32> {
        pm.replicas
            .iter()
            .copied()
            .filter(|&r| self.live(r).is_none() || (local_offline && r == self.node_id))
            .collect()
    }

    /// One partition of a Metadata answer.
    pub fn partition(
        &self,
        index: i32,
        pm: &PartitionMeta,
        local_offline: bool,
    ) -> metadata_response::MetadataResponsePartition {
        let mut p = metadata_response::MetadataResponsePartition::default();
        p.partition_index = index;
        p.leader_epoch = pm.leader_epoch;
        p.replica_nodes = pm.replicas.iter().map(|&r| BrokerId(r)).collect();
        p.isr_nodes = pm
            .isr
            .iter()
            .filter(|&&r| !(local_offline && r == self.node_id))
            .map(|&r| BrokerId(r))
            .collect();
        p.offline_replicas = self
            .offline_replicas(pm, local_offline)
            .into_iter()
            .map(BrokerId)
            .collect();
        match self.serving_leader(pm, local_offline) {
            Some(l) => p.leader_id = BrokerId(l.id),
            None => {
                p.error_code = errors::LEADER_NOT_AVAILABLE;
                p.leader_id = BrokerId(NO_LEADER);
            }
        }
        p
    }

    /// One topic of a Metadata answer; `offline`: the partitions whose log failed to open
    /// on this broker.
    pub fn topic(
        &self,
        t: &metadata::TopicMeta,
        offline: &HashSet<i32>,
    ) -> metadata_response::MetadataResponseTopic {
        let mut tr = metadata_response::MetadataResponseTopic::default();
        tr.name = Some(tname(&t.name));
        tr.topic_id = uuid::Uuid::from_u128(t.id);
        tr.is_internal = t.name == OFFSETS_TOPIC;
        tr.partitions = t
            .partitions
            .iter()
            .enumerate()
            .map(|(i, pm)| self.partition(i as i32, pm, offline.contains(&(i as i32))))
            .collect();
        tr
    }

    /// The live brokers of a Metadata answer.
    pub fn metadata_brokers(&self) -> Vec<metadata_response::MetadataResponseBroker> {
        self.live_nodes()
            .map(|n| {
                let mut b = metadata_response::MetadataResponseBroker::default();
                b.node_id = BrokerId(n.id);
                b.host = s(&n.host);
                b.port = n.port;
                b
            })
            .collect()
    }

    /// The brokers of a DescribeCluster answer: the live ones, and the fenced ones too when
    /// asked (v2, KIP-1073).
    pub fn describe_brokers(
        &self,
        include_fenced: bool,
    ) -> Vec<describe_cluster_response::DescribeClusterBroker> {
        self.nodes
            .values()
            .filter(|n| include_fenced || !n.fenced)
            .map(|n| {
                let mut b = describe_cluster_response::DescribeClusterBroker::default();
                b.broker_id = BrokerId(n.id);
                b.host = s(&n.host);
                b.port = n.port;
                b.is_fenced = n.fenced;
                b
            })
            .collect()
    }

    /// The coordinator of `group`: the live leader of its `__consumer_offsets` partition
    /// (`partitions` of them). While the image does not hold that topic (the single-node
    /// broker keeps it outside the image) this broker coordinates every group.
    pub fn coordinator(&self, group: &str, partitions: usize) -> Option<&Node> {
        let index = shardlog_coordinator::offsets_partition_for_group(group, partitions);
        match self.image.partition(OFFSETS_TOPIC, index as u32) {
            Some(pm) => self.serving_leader(pm, false),
            None => self
                .live(self.node_id)
                .or_else(|| self.nodes.get(&self.node_id)),
        }
    }

    /// The controller's view of partition health, for /metrics: partitions this broker
    /// leads whose ISR is smaller than their replica set, partitions without a serving
    /// leader (all of the image; `local_offline` says which logs failed to open here).
    pub fn health(&self, local_offline: impl Fn(&str, i32) -> bool) -> ImageHealth {
        let mut h = ImageHealth {
            live_brokers: self.live_nodes().count(),
            ..ImageHealth::default()
        };
        for t in self.image.topics.values() {
            for (i, pm) in t.partitions.iter().enumerate() {
                let local = pm.leader == self.node_id && local_offline(&t.name, i as i32);
                match self.serving_leader(pm, local) {
                    None => h.offline += 1,
                    Some(l) if l.id == self.node_id && pm.isr.len() < pm.replicas.len() => {
                        h.under_replicated_led += 1
                    }
                    Some(_) => {}
                }
            }
        }
        h
    }
}

/// Partition counts for the controller-view metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImageHealth {
    /// Partitions this broker leads with an ISR smaller than the replica set.
    pub under_replicated_led: usize,
    /// Partitions of the whole image without a serving leader.
    pub offline: usize,
    /// Registered, unfenced brokers.
    pub live_brokers: usize,
}

/// This broker's [`ClusterView`] of its current image.
pub(crate) fn view<'a>(shard: &Shard, image: &'a ClusterMeta) -> ClusterView<'a> {
    let (host, port) = shard.cfg.advertised_host_port();
    ClusterView::new(
        image,
        shard.cfg.node_id,
        &host,
        port,
        shard.global.controller.get(),
    )
}

pub(crate) async fn metadata_api(
    shard: Rc<Shard>,
    v: i16,
    corr: i32,
    req: MetadataRequest,
) -> Option<Vec<Bytes>> {
    let requested: Option<Vec<Option<String>>> = match req.topics {
        None => None,
        Some(t) if v == 0 && t.is_empty() => None,
        Some(t) => Some(
            t.iter()
                .map(|x| x.name.as_ref().map(|n| n.0.to_string()))
                .collect(),
        ),
    };
    let allow_auto = v < 4 || req.allow_auto_topic_creation;
    if let (Some(names), true) = (&requested, allow_auto) {
        let names: Vec<String> = names.iter().flatten().cloned().collect();
        auto_create(&shard, &names).await;
    }
    let mut r = MetadataResponse::default();
    r.cluster_id = Some(s(&shard.cfg.cluster_id));
    let meta = shard.meta.borrow();
    let cv = view(&shard, &meta);
    r.brokers = cv.metadata_brokers();
    r.controller_id = BrokerId(cv.controller_id());
    // A partition whose log failed to open here is reported as Kafka reports a partition
    // whose replica is offline: the replica in offline_replicas and not in the ISR, and, when
    // this broker leads it, LEADER_NOT_AVAILABLE with leader -1.
    let topic_resp = |t: &metadata::TopicMeta| {
        let offline = shard.global.offline.of_topic(&t.name);
        cv.topic(t, &offline)
    };
    r.topics = match requested {
        None => meta.topics.values().map(topic_resp).collect(),
        Some(names) => names
            .into_iter()
            .map(|n| match n {
                Some(name) => match meta.topics.get(&name) {
                    Some(t) => topic_resp(t),
                    // The internal topic is listed only when asked for by name; while it is
                    // not in the image on a single node it is on this broker alone (in a
                    // cluster it does not exist until a group first needs it).
                    None if name == OFFSETS_TOPIC && !shard.groups.replicated => {
                        let internal = metadata::TopicMeta {
                            name: name.clone(),
                            id: 0,
                            partitions: vec![
                                metadata::PartitionMeta::new(vec![shard.cfg.node_id]);
                                shard.groups.partitions
                            ],
                            configs: Default::default(),
                        };
                        topic_resp(&internal)
                    }
                    None => {
                        let mut tr = metadata_response::MetadataResponseTopic::default();
                        tr.error_code = if metadata::validate_topic_name(&name).is_err() {
                            errors::INVALID_TOPIC_EXCEPTION
                        } else {
                            errors::UNKNOWN_TOPIC_OR_PARTITION
                        };
                        tr.name = Some(tname(&name));
                        tr
                    }
                },
                None => {
                    let mut tr = metadata_response::MetadataResponseTopic::default();
                    tr.error_code = errors::UNKNOWN_TOPIC_OR_PARTITION;
                    tr
                }
            })
            .collect(),
    };
    drop(meta);
    respond(ApiKey::Metadata, v, corr, &r)
}

pub(crate) fn describe_cluster(
    shard: &Rc<Shard>,
    v: i16,
    corr: i32,
    req: &DescribeClusterRequest,
) -> Option<Vec<Bytes>> {
    let meta = shard.meta.borrow();
    let cv = view(shard, &meta);
    let mut r = DescribeClusterResponse::default();
    r.cluster_id = s(&shard.cfg.cluster_id);
    r.controller_id = BrokerId(cv.controller_id());
    r.brokers = cv.describe_brokers(v >= 2 && req.include_fenced_brokers);
    r.endpoint_type = 1;
    drop(meta);
    respond(ApiKey::DescribeCluster, v, corr, &r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::metadata::{BrokerMeta, TopicMeta};

    fn broker(id: i32, fenced: bool) -> BrokerMeta {
        BrokerMeta {
            id,
            epoch: 10 + i64::from(id),
            incarnation: id as u128,
            host: format!("h{id}"),
            port: 9000 + id as u16,
            fenced,
            shutting_down: false,
        }
    }

    fn pm(leader: i32, replicas: &[i32], isr: &[i32]) -> PartitionMeta {
        PartitionMeta {
            leader_epoch: 7,
            partition_epoch: 9,
            leader,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            elr: Vec::new(),
        }
    }

    fn topic(name: &str, partitions: Vec<PartitionMeta>) -> TopicMeta {
        TopicMeta {
            name: name.into(),
            id: 42,
            partitions,
            configs: Default::default(),
        }
    }

    /// Brokers 1 and 3 live, 2 fenced. Topic `t`: p0 led by 1 with 2 out of the ISR, p1
    /// offline (no leader), p2 still naming the fenced broker 2 as leader, p3 led by 3.
    fn image() -> ClusterMeta {
        let mut m = ClusterMeta::default();
        for (id, fenced) in [(1, false), (2, true), (3, false)] {
            m.brokers.insert(id, broker(id, fenced));
        }
        m.topics.insert(
            "t".into(),
            topic(
                "t",
                vec![
                    pm(1, &[1, 2, 3], &[1, 3]),
                    pm(NO_LEADER, &[2], &[2]),
                    pm(2, &[2, 3], &[2, 3]),
                    pm(3, &[3, 1], &[3, 1]),
                ],
            ),
        );
        m
    }

    fn ids(v: &[BrokerId]) -> Vec<i32> {
        v.iter().map(|b| b.0).collect()
    }

    #[test]
    fn brokers_are_the_live_registered_ones_and_fenced_ones_only_on_request() {
        let m = image();
        let cv = ClusterView::new(&m, 1, "me", 1111, Some(3));
        let b = cv.metadata_brokers();
        assert_eq!(
            b.iter()
                .map(|b| (b.node_id.0, b.host.to_string(), b.port))
                .collect::<Vec<_>>(),
            // This broker's own entry carries its current advertised address.
            vec![(1, "me".to_string(), 1111), (3, "h3".to_string(), 9003)]
        );
        let all = cv.describe_brokers(true);
        assert_eq!(
            all.iter()
                .map(|b| (b.broker_id.0, b.is_fenced))
                .collect::<Vec<_>>(),
            vec![(1, false), (2, true), (3, false)]
        );
        assert_eq!(cv.describe_brokers(false).len(), 2);
    }

    #[test]
    fn partitions_carry_leader_replicas_isr_offline_replicas_and_epoch() {
        let m = image();
        let cv = ClusterView::new(&m, 1, "me", 1111, None);
        let none = HashSet::new();
        let t = cv.topic(&m.topics["t"], &none);
        assert_eq!(t.topic_id, uuid::Uuid::from_u128(42));
        assert!(!t.is_internal);
        let p = &t.partitions;
        assert_eq!(
            (p[0].error_code, p[0].leader_id.0, p[0].leader_epoch),
            (0, 1, 7)
        );
        assert_eq!(ids(&p[0].replica_nodes), [1, 2, 3]);
        assert_eq!(ids(&p[0].isr_nodes), [1, 3]);
        assert_eq!(ids(&p[0].offline_replicas), [2]);
        // No leader: LEADER_NOT_AVAILABLE, leader -1, the replica on the fenced broker offline.
        assert_eq!(
            (p[1].error_code, p[1].leader_id.0),
            (errors::LEADER_NOT_AVAILABLE, -1)
        );
        assert_eq!(ids(&p[1].offline_replicas), [2]);
        assert_eq!(p[1].leader_epoch, 7);
        // A leader that is not a live broker is not given to clients.
        assert_eq!(
            (p[2].error_code, p[2].leader_id.0),
            (errors::LEADER_NOT_AVAILABLE, -1)
        );
        assert_eq!(ids(&p[2].isr_nodes), [2, 3]);
        assert_eq!((p[3].error_code, p[3].leader_id.0), (0, 3));
        assert!(p[3].offline_replicas.is_empty());

        // This broker's log of p0 failed to open: it leads nothing there and is offline.
        let local: HashSet<i32> = [0, 3].into_iter().collect();
        let t = cv.topic(&m.topics["t"], &local);
        let p = &t.partitions;
        assert_eq!(
            (p[0].error_code, p[0].leader_id.0),
            (errors::LEADER_NOT_AVAILABLE, -1)
        );
        assert_eq!(ids(&p[0].isr_nodes), [3]);
        assert_eq!(ids(&p[0].offline_replicas), [1, 2]);
        // ... and where it follows, its replica is offline while the leader serves.
        assert_eq!((p[3].error_code, p[3].leader_id.0), (0, 3));
        assert_eq!(ids(&p[3].isr_nodes), [3]);
        assert_eq!(ids(&p[3].offline_replicas), [1]);
    }

    #[test]
    fn an_unknown_broker_is_an_offline_replica() {
        let mut m = image();
        m.brokers.remove(&3);
        let cv = ClusterView::new(&m, 1, "me", 1111, None);
        let t = cv.topic(&m.topics["t"], &HashSet::new());
        assert_eq!(ids(&t.partitions[0].offline_replicas), [2, 3]);
        assert_eq!(t.partitions[3].leader_id.0, -1);
    }

    #[test]
    fn controller_id_is_the_known_live_leader_else_this_broker() {
        let m = image();
        let at = |c| ClusterView::new(&m, 1, "me", 1, c).controller_id();
        assert_eq!(at(Some(3)), 3);
        assert_eq!(at(Some(1)), 1);
        assert_eq!(at(Some(2)), 1, "fenced: clients could not reach it");
        assert_eq!(at(Some(7)), 1, "not registered");
        assert_eq!(at(None), 1);
    }

    #[test]
    fn before_any_registration_this_broker_is_the_cluster() {
        let mut m = ClusterMeta::default();
        m.topics
            .insert("t".into(), topic("t", vec![PartitionMeta::new(vec![5]); 2]));
        let cv = ClusterView::new(&m, 5, "me", 1111, None);
        let b = cv.metadata_brokers();
        assert_eq!(b.len(), 1);
        assert_eq!((b[0].node_id.0, b[0].port), (5, 1111));
        assert_eq!(cv.controller_id(), 5);
        let t = cv.topic(&m.topics["t"], &HashSet::new());
        assert!(t
            .partitions
            .iter()
            .all(|p| p.error_code == 0 && p.leader_id.0 == 5 && ids(&p.isr_nodes) == [5]));
        assert_eq!(cv.coordinator("g", 4).map(|n| n.id), Some(5));
    }

    #[test]
    fn the_coordinator_is_the_leader_of_the_groups_offsets_partition() {
        let mut m = image();
        let n = 4;
        m.topics.insert(
            OFFSETS_TOPIC.into(),
            topic(
                OFFSETS_TOPIC,
                vec![
                    pm(1, &[1, 3], &[1, 3]),
                    pm(3, &[3, 1], &[3, 1]),
                    pm(NO_LEADER, &[2], &[2]),
                    pm(2, &[2, 1], &[2, 1]),
                ],
            ),
        );
        let cv = ClusterView::new(&m, 1, "me", 1111, None);
        let expect = [Some(1), Some(3), None, None];
        let mut seen = [false; 4];
        for i in 0..200 {
            let g = format!("group-{i}");
            let p = shardlog_coordinator::offsets_partition_for_group(&g, n);
            seen[p] = true;
            let c = cv.coordinator(&g, n);
            assert_eq!(c.map(|c| c.id), expect[p], "{g} -> partition {p}");
            if let Some(c) = c.filter(|c| c.id == 3) {
                assert_eq!((c.host.as_str(), c.port), ("h3", 9003));
            }
        }
        assert_eq!(seen, [true; 4], "every partition was exercised");
        let t = cv.topic(&m.topics[OFFSETS_TOPIC], &HashSet::new());
        assert!(t.is_internal);
    }

    #[test]
    fn health_counts_offline_everywhere_and_under_replicated_where_this_broker_leads() {
        let m = image();
        let h = ClusterView::new(&m, 1, "me", 1, None).health(|_, _| false);
        assert_eq!(
            h,
            ImageHealth {
                under_replicated_led: 1, // p0 (p3 is led by 3)
                offline: 2,              // p1, p2
                live_brokers: 2,
            }
        );
        let h = ClusterView::new(&m, 3, "me", 1, None).health(|_, _| false);
        assert_eq!(h.under_replicated_led, 0);
        // The log of p0 failed to open on its leader: offline.
        let h = ClusterView::new(&m, 1, "me", 1, None).health(|t, p| t == "t" && p == 0);
        assert_eq!((h.offline, h.under_replicated_led), (3, 0));
    }
}
