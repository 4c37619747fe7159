//! The metadata authority on shard 0: the one place metadata changes (create/delete topics,
//! add partitions, alter configs, allocate producer ids). An admin operation is validated
//! against the metadata log's image ([`crate::controller::validate`]), committed to the log as
//! one record ([`MetadataLog::commit`]), and the committed records are applied on every shard
//! before the admin request is answered. The authority knows the log only through the
//! [`MetadataLog`] trait.

use std::rc::Rc;

use crate::controller::metadata::{self, ClusterMeta};
use crate::controller::records::MetadataRecord;
use crate::controller::validate::{self, Refusal};
use crate::wire::errors;
use shardlog_coordinator::Untrusted;

use crate::controller::topics::remove_topic_dir;
use crate::mesh::messages::*;
use crate::mesh::routing::topic_dir;
use crate::mesh::shard::Shard;

impl Shard {
    // ---- metadata authority (shard 0) ----

    /// Runs an admin request: here when this broker's controller leads the quorum, else
    /// forwarded to the leader (`crate::controller::quorum`).
    pub(crate) async fn admin(self: &Rc<Self>, req: AdminReq) -> AdminResp {
        if self.authority.is_none() {
            tracing::error!(
                shard = self.id,
                "admin request reached a shard that is not the metadata authority"
            );
            return AdminResp::Results(Vec::new());
        }
        // Decided under the admin lock by the controller leader (here or over the RPC): not
        // under this broker's lock, which the leader's decision takes when it is this one.
        if let AdminReq::AlterPartition(r) = req {
            return AdminResp::AlterPartition(self.alter_partition(r).await);
        }
        let Ok(_permit) = self.admin_lock.acquire_permit(1).await else {
            return AdminResp::Results(Vec::new());
        };
        if let AdminReq::AllocateProducerId = req {
            return AdminResp::ProducerId(self.allocate_producer_id().await);
        }
        if let AdminReq::AlterPartition(r) = &req {
            if !self.leads_quorum() {
                // Forwarding AlterPartition over the controller RPC is not wired: a leader on
                // another broker keeps its committed ISR and proposes again later.
                tracing::debug!(topic = %r.topic, partition = r.partition, "AlterPartition off the controller leader: NOT_CONTROLLER");
                return AdminResp::AlterPartition(Err(errors::NOT_CONTROLLER));
            }
        }
        if self.leads_quorum() {
            self.admin_local(req).await
        } else {
            self.forward(req).await
        }
    }

    /// Runs an admin request against this controller's image and log; the caller holds
    /// `admin_lock` (one admin operation at a time: validate, then commit).
    pub(crate) async fn admin_local(self: &Rc<Self>, req: AdminReq) -> AdminResp {
        match req {
            AdminReq::AllocateProducerId => {
                AdminResp::ProducerId(self.allocate_producer_id().await)
            }
            // `admin` handles it before taking the admin lock; never forwarded as an admin
            // request (it has its own RPC).
            AdminReq::AlterPartition(_) => AdminResp::AlterPartition(Err(errors::INVALID_REQUEST)),
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
                    let record = match self.validate(|m| validate::delete_topic(m, &name)).await {
                        Ok(r) => r,
                        Err(r) => {
                            tracing::info!(topic = %Untrusted(&name), "delete: UNKNOWN_TOPIC_OR_PARTITION");
                            out.push((name, r.code, r.message));
                            continue;
                        }
                    };
                    let dir = self.topic(&name).map(|t| topic_dir(&self.cfg.data_dir, &t));
                    let r = self.commit(record).await;
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
                let node_id = self.cfg.node_id;
                for (name, count) in topics {
                    let record = match self
                        .validate(|m| validate::create_partitions(m, &name, count, node_id))
                        .await
                    {
                        Ok(r) => r,
                        Err(r) => {
                            if let Some(msg) = &r.message {
                                tracing::info!(topic = %Untrusted(&name), %msg, "create partitions: INVALID_PARTITIONS");
                            }
                            out.push((name, r.code, r.message));
                            continue;
                        }
                    };
                    if validate_only {
                        out.push((name, errors::NONE, None));
                        continue;
                    }
                    let r = self.commit(record).await;
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
                    let record = match self
                        .validate(|m| validate::alter_configs(m, &name, replace, ops))
                        .await
                    {
                        Ok(r) => r,
                        Err(r) => {
                            if let Some(msg) = &r.message {
                                tracing::info!(topic = %Untrusted(&name), %msg, error = errors::name(r.code), "alter configs refused");
                            }
                            out.push((name, r.code, r.message));
                            continue;
                        }
                    };
                    if validate_only {
                        out.push((name, errors::NONE, None));
                        continue;
                    }
                    let r = self.commit(record).await;
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
        let default_partitions = self.cfg.default_partitions;
        let node_id = self.cfg.node_id;
        let id = metadata::new_topic_id();
        let record = match self
            .validate(|m| validate::create_topic(m, t, default_partitions, id, node_id))
            .await
        {
            Ok(r) => r,
            Err(r) => {
                let msg = r.message.as_deref().unwrap_or_default();
                match r.code {
                    errors::TOPIC_ALREADY_EXISTS => {}
                    errors::INVALID_TOPIC_EXCEPTION => {
                        tracing::info!(topic = %Untrusted(&name), %msg, "create topic: INVALID_TOPIC_EXCEPTION");
                    }
                    errors::INVALID_PARTITIONS => {
                        tracing::info!(topic = %Untrusted(&name), %msg, "create topic: INVALID_PARTITIONS");
                    }
                    code => {
                        tracing::info!(topic = %Untrusted(&name), %msg, error = errors::name(code), "create topic refused");
                    }
                }
                return (name, r.code, r.message);
            }
        };
        if validate_only {
            return (name, errors::NONE, None);
        }
        let partitions = match &record {
            MetadataRecord::CreateTopic { assignments, .. } => assignments.len(),
            _ => 0,
        };
        let r = self.commit(record).await;
        if r == errors::NONE {
            tracing::info!(topic = %name, partitions, "created topic");
        }
        (name, r, None)
    }

    /// Runs a validation against the authority's committed image.
    async fn validate(
        &self,
        check: impl FnOnce(&ClusterMeta) -> Result<MetadataRecord, Refusal>,
    ) -> Result<MetadataRecord, Refusal> {
        match &self.authority {
            Some(a) => check(a.lock().await.image()),
            None => Err(Refusal {
                code: errors::NOT_CONTROLLER,
                message: None,
            }),
        }
    }

    /// Commits a validated record to the metadata log, then applies every record the commit
    /// applied on every shard, in log order, before returning. The lock is held until the
    /// shards have them, so records reach the shards in log order whoever takes them out of
    /// the log (this, or the quorum driver for records other controllers committed).
    pub(crate) async fn commit(self: &Rc<Self>, record: MetadataRecord) -> i16 {
        let Some(a) = &self.authority else {
            return errors::NOT_CONTROLLER;
        };
        let mut a = a.lock().await;
        let committed = a.commit(record).await;
        // Others' records applied during a failed commit go out too.
        let mut records = match committed {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot commit metadata change");
                let rest = a.log_mut().take_applied();
                let io = a.log().io().clone();
                self.apply_committed(&io, rest).await;
                return e.error_code();
            }
        };
        records.extend(a.log_mut().take_applied());
        let io = a.log().io().clone();
        self.apply_committed(&io, records).await;
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
