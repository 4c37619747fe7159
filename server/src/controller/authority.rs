//! The metadata authority on shard 0: the one place metadata changes (create/delete topics,
//! add partitions, alter configs, allocate producer ids). A change is persisted in the
//! metadata store, then applied on every shard before the admin request is answered.

use std::rc::Rc;

use futures::future::{self};

use crate::controller::metadata::{self, MetaEvent, PartitionMeta, TopicMeta};
use crate::wire::errors;
use shardlog_coordinator::Untrusted;

use crate::controller::topics::remove_topic_dir;
use crate::mesh::messages::*;
use crate::mesh::routing::topic_dir;
use crate::mesh::shard::Shard;

impl Shard {
    // ---- metadata authority (shard 0) ----

    pub(crate) async fn admin(self: &Rc<Self>, req: AdminReq) -> AdminResp {
        if self.authority.is_none() {
            tracing::error!(
                shard = self.id,
                "admin request reached a shard that is not the metadata authority"
            );
            return AdminResp::Results(Vec::new());
        }
        let Ok(_permit) = self.admin_lock.acquire_permit(1).await else {
            return AdminResp::Results(Vec::new());
        };
        match req {
            AdminReq::AllocateProducerId => {
                let r = match &self.authority {
                    Some(a) => Some(a.lock().await.allocate_producer_id().await),
                    None => None,
                };
                AdminResp::ProducerId(match r {
                    Some(Ok(id)) => Ok(id),
                    Some(Err(e)) => {
                        tracing::error!(error = %e, "cannot persist producer id block");
                        Err(errors::KAFKA_STORAGE_ERROR)
                    }
                    None => Err(errors::NOT_CONTROLLER),
                })
            }
            AdminReq::CreateTopics {
                topics,
                validate_only,
            } => {
                let mut out = Vec::with_capacity(topics.len());
                for t in topics {
                    out.push(self.create_topic(t, validate_only).await);
                }
                AdminResp::Results(out)
            }
            AdminReq::DeleteTopics(names) => {
                let mut out = Vec::with_capacity(names.len());
                for name in names {
                    if self.topic(&name).is_none() {
                        tracing::info!(topic = %Untrusted(&name), "delete: UNKNOWN_TOPIC_OR_PARTITION");
                        out.push((name, errors::UNKNOWN_TOPIC_OR_PARTITION, None));
                        continue;
                    }
                    let dir = self.topic(&name).map(|t| topic_dir(&self.cfg.data_dir, &t));
                    let r = self.commit(MetaEvent::Deleted(name.clone())).await;
                    if r == errors::NONE {
                        tracing::info!(topic = %name, "deleted topic");
                        // Every shard has released and removed its partitions by now (`commit`
                        // waits for them): the topic's directory goes too, not at next start.
                        if let Some(dir) = dir {
                            remove_topic_dir(&dir).await;
                        }
                    }
                    out.push((name, r, None));
                }
                AdminResp::Results(out)
            }
            AdminReq::CreatePartitions {
                topics,
                validate_only,
            } => {
                let mut out = Vec::with_capacity(topics.len());
                for (name, count) in topics {
                    let Some(mut t) = self.topic(&name) else {
                        out.push((name, errors::UNKNOWN_TOPIC_OR_PARTITION, None));
                        continue;
                    };
                    let have = t.partitions.len() as i32;
                    if count <= have || count > 100_000 {
                        let msg = format!("topic has {have} partitions; requested {count}");
                        tracing::info!(topic = %Untrusted(&name), %msg, "create partitions: INVALID_PARTITIONS");
                        out.push((name, errors::INVALID_PARTITIONS, Some(msg)));
                        continue;
                    }
                    if validate_only {
                        out.push((name, errors::NONE, None));
                        continue;
                    }
                    t.partitions
                        .resize(count as usize, PartitionMeta { leader_epoch: 0 });
                    let r = self.commit(MetaEvent::Upsert(t)).await;
                    tracing::info!(topic = %name, partitions = count, error = errors::name(r), "increased partitions");
                    out.push((name, r, None));
                }
                AdminResp::Results(out)
            }
            AdminReq::AlterConfigs {
                topics,
                replace,
                validate_only,
            } => {
                let mut out = Vec::with_capacity(topics.len());
                for (name, ops) in topics {
                    let Some(mut t) = self.topic(&name) else {
                        out.push((name, errors::UNKNOWN_TOPIC_OR_PARTITION, None));
                        continue;
                    };
                    if replace {
                        t.configs.clear();
                    }
                    let applied = ops.into_iter().try_for_each(|(key, op, value)| {
                        metadata::apply_config_op(&mut t.configs, key, op, value)
                    });
                    if let Err((code, msg)) = applied {
                        tracing::info!(topic = %Untrusted(&name), %msg, error = errors::name(code), "alter configs refused");
                        out.push((name, code, Some(msg)));
                        continue;
                    }
                    if validate_only {
                        out.push((name, errors::NONE, None));
                        continue;
                    }
                    let r = self.commit(MetaEvent::Upsert(t)).await;
                    tracing::info!(topic = %name, error = errors::name(r), "altered topic configs");
                    out.push((name, r, None));
                }
                AdminResp::Results(out)
            }
        }
    }

    pub(crate) async fn create_topic(
        self: &Rc<Self>,
        t: NewTopic,
        validate_only: bool,
    ) -> AdminResult {
        let name = t.name.clone();
        if let Err(msg) = metadata::validate_topic_name(&name) {
            tracing::info!(topic = %Untrusted(&name), %msg, "create topic: INVALID_TOPIC_EXCEPTION");
            return (name, errors::INVALID_TOPIC_EXCEPTION, Some(msg));
        }
        if self.topic(&name).is_some() {
            return (
                name.clone(),
                errors::TOPIC_ALREADY_EXISTS,
                Some(format!("Topic '{name}' already exists.")),
            );
        }
        let partitions = if t.partitions == -1 {
            self.cfg.default_partitions
        } else {
            t.partitions
        };
        if !(1..=100_000).contains(&partitions) {
            let msg = format!("number of partitions must be in 1..=100000, got {partitions}");
            tracing::info!(topic = %Untrusted(&name), %msg, "create topic: INVALID_PARTITIONS");
            return (name, errors::INVALID_PARTITIONS, Some(msg));
        }
        let mut configs = std::collections::BTreeMap::new();
        for (k, v) in t.configs {
            if let Err((code, msg)) = metadata::apply_config_op(&mut configs, k, 0, Some(v)) {
                tracing::info!(topic = %Untrusted(&name), %msg, error = errors::name(code), "create topic refused");
                return (name, code, Some(msg));
            }
        }
        if validate_only {
            return (name, errors::NONE, None);
        }
        let meta = TopicMeta {
            name: name.clone(),
            id: metadata::new_topic_id(),
            partitions: vec![PartitionMeta { leader_epoch: 0 }; partitions as usize],
            configs,
        };
        let r = self.commit(MetaEvent::Upsert(meta)).await;
        if r == errors::NONE {
            tracing::info!(topic = %name, partitions, "created topic");
        }
        (name, r, None)
    }

    /// Persists a change on the authority, then applies it on every shard.
    pub(crate) async fn commit(self: &Rc<Self>, ev: MetaEvent) -> i16 {
        let persisted = match &self.authority {
            Some(a) => a.lock().await.apply(&ev).await,
            None => return errors::NOT_CONTROLLER,
        };
        if let Err(e) = persisted {
            tracing::error!(error = %e, "cannot persist metadata change");
            return errors::KAFKA_STORAGE_ERROR;
        }
        let mut acks = Vec::with_capacity(self.shards);
        for target in 0..self.shards {
            acks.push(self.send(target, ShardReq::Apply(ev.clone())).await);
        }
        for r in future::join_all(acks).await {
            if matches!(r, ShardResp::Failed) {
                tracing::warn!("a shard did not acknowledge a metadata change");
            }
        }
        errors::NONE
    }

    /// Asks the authority to run an admin request.
    pub async fn admin_call(self: &Rc<Self>, req: AdminReq) -> AdminResp {
        match self.call(0, ShardReq::Admin(req)).await {
            ShardResp::Admin(a) => a,
            _ => AdminResp::Results(Vec::new()),
        }
    }
}
