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
use std::time::{Duration, Instant};

use futures::future;

use crate::config::BrokerConfig;
use crate::controller::log::{CommittedRecord, MetadataAuthority};
use crate::controller::metadata::MetaError;
use crate::controller::raft_log::ControllerLog;
use crate::controller::raft_log::{quorum_dir, QuorumIo, RaftLogOptions, RaftMetadataLog};
use crate::controller::rpc::{self, ForwardAnswer, ForwardReq, RpcFrame, RpcKind};
use crate::controller::transport;
use crate::mesh::messages::{AdminReq, AdminResp, ShardReq, ShardResp};
use crate::mesh::shard::Shard;
use crate::wire::errors;

pub use crate::controller::transport::node_id;

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
    /// Broadcasts committed records to every shard, in order, each acknowledged by all before
    /// the next; the caller holds the authority's lock (see the module docs).
    pub(crate) async fn apply_committed(
        self: &Rc<Self>,
        io: &QuorumIo,
        records: Vec<CommittedRecord>,
    ) {
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
        // Metadata, DescribeCluster and /metrics on every shard read the leader from here.
        let leader = io.leader();
        self.global
            .controller
            .set((leader != 0).then(|| i32::try_from(leader).unwrap_or(-1)));
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

/// How long a broker looks for a controller leader (and waits for its answer) before it
/// answers NOT_CONTROLLER: a few election timeouts, so a failover in progress is waited out.
pub const FORWARD_WAIT: Duration = Duration::from_secs(6);
/// How long one forwarded call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Every name of `req` answered with `code`.
fn all_failed(req: &AdminReq, code: i16) -> AdminResp {
    let names: Vec<String> = match req {
        AdminReq::CreateTopics { topics, .. } => topics.iter().map(|t| t.name.clone()).collect(),
        AdminReq::DeleteTopics(n) => n.clone(),
        AdminReq::CreatePartitions { topics, .. } => topics.iter().map(|t| t.0.clone()).collect(),
        AdminReq::AlterConfigs { topics, .. } => topics.iter().map(|t| t.0.clone()).collect(),
        AdminReq::AllocateProducerId => return AdminResp::ProducerId(Err(code)),
        AdminReq::AlterPartition(_) => return AdminResp::AlterPartition(Err(code)),
    };
    AdminResp::Results(names.into_iter().map(|n| (n, code, None)).collect())
}

impl Shard {
    fn quorum_io_now(&self) -> Option<&Rc<QuorumIo>> {
        self.quorum_io.as_ref()
    }

    /// Whether this broker's controller is the quorum's leader (as of its last pump).
    pub(crate) fn leads_quorum(&self) -> bool {
        self.quorum_io_now()
            .is_some_and(|io| io.leader() == node_id(&self.cfg))
    }

    /// Sends `req` to the controller leader and answers once this broker's shards applied
    /// what it committed; NOT_CONTROLLER when no leader answered within [`FORWARD_WAIT`].
    pub(crate) async fn forward(self: &Rc<Self>, req: AdminReq) -> AdminResp {
        let Some(io) = self.quorum_io_now().cloned() else {
            return all_failed(&req, errors::NOT_CONTROLLER);
        };
        let Some(fwd) = ForwardReq::from_admin(&req) else {
            return all_failed(&req, errors::NOT_CONTROLLER);
        };
        match self
            .call_leader(&io, RpcKind::Forward, &rpc::to_body(&fwd))
            .await
        {
            Some(a) => {
                if !io.wait_local_applied(a.applied_index, FORWARD_WAIT).await {
                    tracing::warn!(
                        index = a.applied_index,
                        "forwarded admin change not applied here in time; answering anyway"
                    );
                }
                a.into_admin()
            }
            None if self.leads_quorum() => self.admin_local(req).await,
            None => {
                tracing::warn!(
                    wait_ms = FORWARD_WAIT.as_millis() as u64,
                    "no controller leader answered: NOT_CONTROLLER"
                );
                all_failed(&req, errors::NOT_CONTROLLER)
            }
        }
    }

    /// Calls the leader with a forward request until one answers (not NOT_CONTROLLER) or
    /// [`FORWARD_WAIT`] passed, or this node leads (then `None`).
    async fn call_leader(
        &self,
        io: &QuorumIo,
        kind: RpcKind,
        body: &[u8],
    ) -> Option<ForwardAnswer> {
        self.call_leader_as(io, kind, body, FORWARD_WAIT, |a: &ForwardAnswer| {
            a.error != errors::NOT_CONTROLLER
        })
        .await
    }

    /// Calls the leader with `kind` until it gives an answer `done` accepts, `wait` passes,
    /// or this node leads (then `None`).
    pub(crate) async fn call_leader_as<A: for<'de> serde::Deserialize<'de>>(
        &self,
        io: &QuorumIo,
        kind: RpcKind,
        body: &[u8],
        wait: Duration,
        done: impl Fn(&A) -> bool,
    ) -> Option<A> {
        let me = node_id(&self.cfg);
        let deadline = Instant::now() + wait;
        let mut logged = false;
        loop {
            let leader = io.leader();
            if leader == me {
                return None;
            }
            if leader != 0 {
                if let Some(addr) = transport::voter_addr(&self.cfg, leader) {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match transport::call(me, &addr, kind, body, left.min(CALL_TIMEOUT)).await {
                        Ok(frame) => match rpc::body::<A>(&frame) {
                            Ok(a) if done(&a) => return Some(a),
                            Ok(_) => {
                                tracing::debug!(leader, "the controller we asked no longer leads")
                            }
                            Err(e) => {
                                tracing::warn!(leader, error = %e, "unreadable controller answer")
                            }
                        },
                        Err(e) => {
                            if !logged {
                                tracing::info!(leader, error = %e, "cannot reach the controller leader; retrying");
                                logged = true;
                            }
                        }
                    }
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            glommio::timer::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A producer id from this broker's block; a new block comes from the controller (this
    /// one when it leads) when it is used up.
    pub(crate) async fn allocate_producer_id(self: &Rc<Self>) -> Result<i64, i16> {
        let Some(a) = &self.authority else {
            return Err(errors::NOT_CONTROLLER);
        };
        if let Some(id) = a.lock().await.take_producer_id() {
            return Ok(id);
        }
        let (start, end) = if self.leads_quorum() {
            self.commit_producer_block().await?
        } else {
            let io = self
                .quorum_io_now()
                .cloned()
                .ok_or(errors::NOT_CONTROLLER)?;
            let body = rpc::to_body(&ForwardReq::ProducerIdBlock);
            match self.call_leader(&io, RpcKind::Forward, &body).await {
                Some(ForwardAnswer {
                    block: Some(block), ..
                }) => block?,
                Some(_) => return Err(errors::NOT_CONTROLLER),
                None if self.leads_quorum() => self.commit_producer_block().await?,
                None => return Err(errors::NOT_CONTROLLER),
            }
        };
        let mut g = a.lock().await;
        g.set_producer_block(start, end);
        g.take_producer_id().ok_or(errors::NOT_CONTROLLER)
    }

    /// On the leader: commits a producer-id block and applies what the commit applied.
    async fn commit_producer_block(self: &Rc<Self>) -> Result<(i64, i64), i16> {
        let Some(a) = &self.authority else {
            return Err(errors::NOT_CONTROLLER);
        };
        let mut g = a.lock().await;
        let io = g.log().io().clone();
        let r = g.commit_producer_block().await;
        let mut records = match &r {
            Ok((_, recs)) => recs.clone(),
            Err(_) => Vec::new(),
        };
        records.extend(g.log_mut().take_applied());
        self.apply_committed(&io, records).await;
        r.map(|(block, _)| block).map_err(|e| {
            tracing::error!(error = %e, "cannot commit a producer id block");
            e.error_code()
        })
    }

    /// Answers one controller RPC request from node `from` (an error closes the connection).
    pub(crate) async fn handle_rpc(
        self: &Rc<Self>,
        from: u64,
        req: &RpcFrame,
    ) -> Result<Vec<u8>, rpc::RpcError> {
        if let Some(io) = self.quorum_io_now() {
            io.joined(from);
        }
        match req.kind {
            RpcKind::Forward => {
                let fwd: ForwardReq = rpc::body(req)?;
                Ok(rpc::to_body(&self.answer_forward(fwd).await))
            }
            RpcKind::BrokerRegistration => {
                let r: rpc::RegistrationMsg = rpc::body(req)?;
                Ok(rpc::to_body(&self.answer_registration(r.into()).await))
            }
            RpcKind::BrokerHeartbeat => {
                let mut h: rpc::HeartbeatMsg = rpc::body(req)?;
                let mut offline = std::mem::take(&mut h.offline);
                offline.truncate(rpc::MAX_OFFLINE_REPORT);
                Ok(rpc::to_body(
                    &self.answer_heartbeat(h.into(), offline).await,
                ))
            }
            RpcKind::AlterPartition => {
                let a: rpc::AlterPartitionMsg = rpc::body(req)?;
                Ok(rpc::to_body(&self.answer_alter_partition(a.into()).await))
            }
        }
    }

    async fn answer_forward(self: &Rc<Self>, fwd: ForwardReq) -> ForwardAnswer {
        let Ok(_permit) = self.admin_lock.acquire_permit(1).await else {
            return ForwardAnswer::not_controller();
        };
        if !self.leads_quorum() {
            return ForwardAnswer::not_controller();
        }
        let mut answer = ForwardAnswer {
            error: errors::NONE,
            results: Vec::new(),
            block: None,
            applied_index: 0,
        };
        match fwd.into_admin() {
            None => answer.block = Some(self.commit_producer_block().await),
            Some(req) => match self.admin_local(req).await {
                AdminResp::Results(r) => answer.results = r,
                AdminResp::ProducerId(_) | AdminResp::AlterPartition(_) => {}
            },
        }
        answer.applied_index = self.quorum_io_now().map_or(0, |io| io.local_applied());
        answer
    }
}
