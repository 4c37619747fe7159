//! The controller quorum inside the broker, on shard 0: opening the replicated metadata log,
//! the driver task that ticks it and steps what peers send, and the one path by which
//! committed records reach the shards.
//!
//! Every committed record, whoever proposed it, is applied on every shard of this broker
//! exactly once and in log order: records leave the log only through
//! [`RaftMetadataLog::take_applied`] (destructive), always under the authority's lock, and are
//! broadcast as [`ShardReq::Apply`] before that lock is released ([`Shard::apply_committed`]);
//! [`QuorumIo::set_local_applied`] then tells waiters (a forwarded admin request, a broker
//! waiting for its registration) that this broker's shards have them.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::future;

use crate::config::BrokerConfig;
use crate::controller::log::{CommittedRecord, ControllerLog, MetadataAuthority};
use crate::controller::metadata::MetaError;
use crate::controller::raft_log::{quorum_dir, QuorumIo, RaftLogOptions, RaftMetadataLog};
use crate::mesh::messages::{ShardReq, ShardResp};
use crate::mesh::shard::Shard;

/// This broker's node id in the quorum (raft ids start at 1).
pub fn node_id(cfg: &BrokerConfig) -> u64 {
    u64::try_from(cfg.node_id).unwrap_or(0).max(1)
}

/// The log options for `cfg`: its voters, or itself alone.
pub fn log_options(cfg: &BrokerConfig) -> RaftLogOptions {
    let id = node_id(cfg);
    let mut o = RaftLogOptions::single(id);
    let voters = crate::controller::transport::voters(cfg);
    if !voters.is_empty() {
        o.voters = voters.iter().map(|v| v.id).collect();
    }
    o
}

/// Opens shard 0's metadata log under `<data>/meta/quorum`, migrating an earlier version's
/// `<data>/meta/cluster-metadata.json` (see [`RaftMetadataLog::open`]).
pub async fn open_log(
    cfg: &BrokerConfig,
    storage: &shardlog_engine::BrokerStorage,
) -> Result<ControllerLog, MetaError> {
    let meta_dir = cfg.data_dir.join("meta");
    RaftMetadataLog::open(
        storage.clone(),
        &quorum_dir(&meta_dir),
        Some(&meta_dir),
        log_options(cfg),
        QuorumIo::new(),
    )
    .await
}

impl Shard {
    /// The quorum's shared side (shard 0 only).
    pub async fn quorum_io(&self) -> Option<Rc<QuorumIo>> {
        match &self.authority {
            Some(a) => Some(a.lock().await.log().io().clone()),
            None => None,
        }
    }

    /// Broadcasts committed records to every shard, in order, each acknowledged by all before
    /// the next; the caller holds the authority's lock (see the module docs).
    pub(crate) async fn apply_committed(self: &Rc<Self>, io: &QuorumIo, records: Vec<CommittedRecord>) {
        for c in records {
            let mut acks = Vec::with_capacity(self.shards);
            for target in 0..self.shards {
                acks.push(self.send(target, ShardReq::Apply(c.record.clone())).await);
            }
            for r in future::join_all(acks).await {
                if matches!(r, ShardResp::Failed) {
                    tracing::warn!(
                        index = c.index,
                        "a shard did not acknowledge a metadata change"
                    );
                }
            }
            io.set_local_applied(c.index);
        }
    }

    /// Pumps the log once under the authority's lock and applies what it committed.
    async fn pump_and_apply(
        self: &Rc<Self>,
        a: &futures::lock::Mutex<MetadataAuthority<ControllerLog>>,
        io: &QuorumIo,
        failing: &mut bool,
    ) {
        let mut a = a.lock().await;
        match a.log_mut().pump().await {
            Ok(()) => *failing = false,
            Err(e) => {
                if !*failing {
                    tracing::error!(error = %e, "metadata quorum stopped");
                }
                *failing = true;
            }
        }
        let records = a.log_mut().take_applied();
        if !records.is_empty() {
            self.apply_committed(io, records).await;
        }
    }
}

/// Starts the driver on shard 0: it pumps the log whenever a message arrived or a tick is
/// due, until the broker has drained.
pub fn spawn_driver(shard: Rc<Shard>, io: Rc<QuorumIo>) {
    glommio::spawn_local(async move {
        let Some(authority) = &shard.authority else {
            return;
        };
        let mut failing = false;
        loop {
            if shard.global.drained.load(Ordering::SeqCst) >= shard.shards {
                break;
            }
            io.wait_due(Some(std::time::Instant::now() + Duration::from_millis(200)))
                .await;
            if !io.due() {
                continue;
            }
            shard.pump_and_apply(authority, &io, &mut failing).await;
            if failing {
                glommio::timer::sleep(Duration::from_millis(500)).await;
            }
        }
    })
    .detach();
}
