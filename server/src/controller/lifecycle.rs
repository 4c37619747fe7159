//! Broker lifecycle (KIP-631) over the controller quorum: registration, heartbeats, session
//! expiry, controlled shutdown, and AlterPartition (KIP-497), on shard 0.
//!
//! **Every broker** registers with the controller leader before it serves a client (its own
//! controller when it leads, else over the controller RPC), waits until its shards applied
//! its registration, and heartbeats every `broker_heartbeat_interval_ms` (caught up once its
//! shards applied the log up to its registration); an answer of STALE_BROKER_EPOCH or
//! BROKER_ID_NOT_REGISTERED makes it register again. On SIGTERM it heartbeats with
//! `want_shutdown` until the controller answers `shutdown_ok` (it then leads nothing) or
//! [`SHUTDOWN_WAIT`] passed, before its shards drain. The epoch it had is written to
//! `<data>/meta/clean-epoch` after a clean close and removed at the next start, so the
//! next registration tells the controller whether the last stop was clean (KIP-966).
//!
//! **The controller leader** decides with `crate::controller::decide` against its image and
//! commits the records each decision returns, one decision at a time (`admin_lock`): so every
//! decision sees the records of the ones before it. Its session table lives in memory and is
//! created fresh for each term it leads; a new term also commits `decide::repair` once and
//! gives every broker a full session before [`Sessions::expire`] may fence it.

use std::cell::Cell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::clock::mono_ms;
use crate::config::DefaultFlush;
use crate::controller::decide::{self, AlterPartitionReq, Heartbeat, Registration, Sessions};
use crate::controller::metadata::PartitionMeta;
use crate::controller::records::MetadataRecord;
use crate::controller::rpc::{
    self, AlterPartitionAnswer, HeartbeatAnswerMsg, HeartbeatMsg, RegistrationAnswer,
    RegistrationMsg, RpcKind,
};
use crate::mesh::shard::Shard;
use crate::wire::errors;

/// How long SIGTERM waits for the controller to move this broker's leaderships.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);
/// How long start-up waits for a registration before serving anyway (it goes on trying).
pub const REGISTER_WAIT: Duration = Duration::from_secs(10);
/// How long a controller decision waits for the admin lock (a forwarded admin operation may
/// hold it while it commits).
const DECIDE_WAIT: Duration = Duration::from_secs(3);
const CLEAN_EPOCH_FILE: &str = "clean-epoch";

/// This broker's registration, as its heartbeat task keeps it.
pub struct BrokerSession {
    incarnation: u128,
    previous_epoch: i64,
    epoch: Cell<i64>,
    /// The leader's applied index that covers the registration.
    registered_at: Cell<u64>,
    fenced: Cell<bool>,
    /// The controller answered shutdown_ok (this broker leads nothing).
    pub shutdown_ok: Cell<bool>,
}

fn clean_epoch_path(shard: &Shard) -> PathBuf {
    shard.cfg.data_dir.join("meta").join(CLEAN_EPOCH_FILE)
}

impl BrokerSession {
    /// Reads (and removes, so a crash from now on counts as unclean) the epoch the last clean
    /// stop wrote.
    fn load(shard: &Shard) -> Self {
        let path = clean_epoch_path(shard);
        let previous_epoch = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .unwrap_or(-1);
        if std::fs::remove_file(&path).is_ok() {
            if let Some(dir) = path.parent() {
                let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
            }
        }
        BrokerSession {
            incarnation: crate::controller::metadata::new_topic_id(),
            previous_epoch,
            epoch: Cell::new(-1),
            registered_at: Cell::new(0),
            fenced: Cell::new(true),
            shutdown_ok: Cell::new(false),
        }
    }

    /// After a clean close: the epoch for the next start's registration.
    pub fn write_clean_epoch(&self, shard: &Shard) {
        let epoch = self.epoch.get();
        if epoch < 0 {
            return;
        }
        let path = clean_epoch_path(shard);
        if let Err(e) = shardlog_engine::io::atomic::write_file_atomic_blocking(
            &path,
            epoch.to_string().as_bytes(),
        ) {
            tracing::warn!(path = %path.display(), error = %e, "cannot record the clean shutdown; the next start counts as unclean");
        }
    }
}

impl Shard {
    fn registration(&self, s: &BrokerSession) -> Registration {
        let (host, port) = self.cfg.advertised_host_port();
        Registration {
            id: self.cfg.node_id,
            incarnation: s.incarnation,
            host,
            port: u16::try_from(port).unwrap_or(0),
            previous_epoch: s.previous_epoch,
        }
    }

    /// The leader's session table for the current term; a new term starts a fresh one and
    /// repairs what a previous leader may have left half done.
    async fn sessions_for_term(self: &Rc<Self>) -> bool {
        let Some(io) = self.quorum_io.clone() else {
            return false;
        };
        let term = io.term();
        let fresh = {
            let cur = io.sessions.current.borrow();
            cur.as_ref().is_none_or(|(t, _)| *t != term)
        };
        if fresh {
            let s = Sessions::new(self.cfg.broker_session_timeout_ms)
                .default_flush_every_batch(self.cfg.default_flush == DefaultFlush::EveryBatch);
            *io.sessions.current.borrow_mut() = Some((term, s));
            let records = match &self.authority {
                Some(a) => decide::repair(a.lock().await.image()),
                None => Vec::new(),
            };
            if !records.is_empty() {
                tracing::info!(
                    term,
                    records = records.len(),
                    "new controller leader: repairing partition leaders"
                );
            }
            return self.commit_all(records).await == errors::NONE;
        }
        true
    }

    /// Runs `f` on the session table and the image (leader only, under the admin lock) and
    /// commits the records it returns; `None` when this node does not lead.
    async fn decide<T>(
        self: &Rc<Self>,
        f: impl FnOnce(
            &mut Sessions,
            &crate::controller::metadata::ClusterMeta,
        ) -> (T, Vec<MetadataRecord>),
    ) -> Option<(T, i16)> {
        let permit = crate::controller::raft_log::with_timeout(
            DECIDE_WAIT,
            self.admin_lock.acquire_permit(1),
        )
        .await;
        let Some(Ok(_permit)) = permit else {
            return None;
        };
        if !self.leads_quorum() || !self.sessions_for_term().await {
            return None;
        }
        let io = self.quorum_io.clone()?;
        let (out, records) = {
            let a = self.authority.as_ref()?.lock().await;
            let mut cur = io.sessions.current.borrow_mut();
            let (_, sessions) = cur.as_mut()?;
            f(sessions, a.image())
        };
        let code = self.commit_all(records).await;
        Some((out, code))
    }

    /// Commits records in order, stopping at the first failure (its code).
    async fn commit_all(self: &Rc<Self>, records: Vec<MetadataRecord>) -> i16 {
        for r in records {
            let code = self.commit(r).await;
            if code != errors::NONE {
                return code;
            }
        }
        errors::NONE
    }

    fn local_applied(&self) -> u64 {
        self.quorum_io.as_ref().map_or(0, |io| io.local_applied())
    }

    pub(crate) async fn answer_registration(
        self: &Rc<Self>,
        r: Registration,
    ) -> RegistrationAnswer {
        let id = r.id;
        let decided = self
            .decide(|s, image| match s.register(image, &r, mono_ms()) {
                Ok((epoch, records)) => (Ok(epoch), records),
                Err(refusal) => (Err(refusal), Vec::new()),
            })
            .await;
        match decided {
            None => RegistrationAnswer {
                error: errors::NOT_CONTROLLER,
                epoch: -1,
                applied_index: 0,
            },
            Some((Ok(epoch), code)) => {
                if code == errors::NONE {
                    tracing::info!(broker = id, epoch, "broker registered");
                }
                RegistrationAnswer {
                    error: if code == errors::NONE {
                        errors::NONE
                    } else {
                        errors::NOT_CONTROLLER
                    },
                    epoch,
                    applied_index: self.local_applied(),
                }
            }
            Some((Err(refusal), _)) => {
                tracing::warn!(broker = id, code = refusal.code, message = ?refusal.message, "broker registration refused");
                RegistrationAnswer {
                    error: refusal.code,
                    epoch: -1,
                    applied_index: 0,
                }
            }
        }
    }

    pub(crate) async fn answer_heartbeat(
        self: &Rc<Self>,
        hb: Heartbeat,
        offline: Vec<(String, u32)>,
    ) -> HeartbeatAnswerMsg {
        match self
            .decide(|s, image| s.heartbeat_reporting(image, &hb, &offline, mono_ms()))
            .await
        {
            Some((a, code)) if code == errors::NONE => HeartbeatAnswerMsg {
                error: a.error,
                fenced: a.fenced,
                shutdown_ok: a.shutdown_ok,
                applied_index: self.local_applied(),
            },
            _ => HeartbeatAnswerMsg {
                error: errors::NOT_CONTROLLER,
                fenced: true,
                shutdown_ok: false,
                applied_index: 0,
            },
        }
    }

    pub(crate) async fn answer_alter_partition(
        self: &Rc<Self>,
        req: AlterPartitionReq,
    ) -> AlterPartitionAnswer {
        let (topic, partition) = (req.topic.clone(), req.partition);
        let decided = self
            .decide(|_, image| match decide::alter_partition(image, &req) {
                Ok(record) => (Ok(()), vec![record]),
                Err(code) => (Err(code), Vec::new()),
            })
            .await;
        let result = match decided {
            None => Err(errors::NOT_CONTROLLER),
            Some((Err(code), _)) => Err(code),
            Some((Ok(()), code)) if code != errors::NONE => Err(code),
            Some((Ok(()), _)) => self
                .meta
                .borrow()
                .partition(&topic, partition)
                .cloned()
                .ok_or(errors::UNKNOWN_TOPIC_OR_PARTITION),
        };
        AlterPartitionAnswer {
            result,
            applied_index: self.local_applied(),
        }
    }

    /// AlterPartition from a partition leader on this broker: decided by the controller
    /// leader (here or over the RPC); answered once this broker applied the change.
    pub(crate) async fn alter_partition(
        self: &Rc<Self>,
        req: AlterPartitionReq,
    ) -> Result<PartitionMeta, i16> {
        let io = self.quorum_io.clone().ok_or(errors::NOT_CONTROLLER)?;
        let deadline = Instant::now() + crate::controller::quorum::FORWARD_WAIT;
        loop {
            let answer = if self.leads_quorum() {
                Some(self.answer_alter_partition(req.clone()).await)
            } else {
                let body = rpc::to_body(&rpc::AlterPartitionMsg::from(&req));
                let left = deadline.saturating_duration_since(Instant::now());
                self.call_leader_as(
                    &io,
                    RpcKind::AlterPartition,
                    &body,
                    left,
                    |a: &AlterPartitionAnswer| a.result != Err(errors::NOT_CONTROLLER),
                )
                .await
            };
            if let Some(a) = answer {
                if a.result != Err(errors::NOT_CONTROLLER) {
                    io.wait_local_applied(a.applied_index, crate::controller::quorum::FORWARD_WAIT)
                        .await;
                    return a.result;
                }
            }
            if Instant::now() >= deadline {
                return Err(errors::NOT_CONTROLLER);
            }
            glommio::timer::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One registration attempt round (bounded by `wait`); true once registered and applied
    /// here.
    async fn register_once(self: &Rc<Self>, s: &BrokerSession, wait: Duration) -> bool {
        let Some(io) = self.quorum_io.clone() else {
            return false;
        };
        let reg = self.registration(s);
        let deadline = Instant::now() + wait;
        loop {
            let answer = if self.leads_quorum() {
                Some(self.answer_registration(reg.clone()).await)
            } else {
                let body = rpc::to_body(&RegistrationMsg {
                    id: reg.id,
                    incarnation: reg.incarnation,
                    host: reg.host.clone(),
                    port: reg.port,
                    previous_epoch: reg.previous_epoch,
                });
                let left = deadline.saturating_duration_since(Instant::now());
                self.call_leader_as(
                    &io,
                    RpcKind::BrokerRegistration,
                    &body,
                    left,
                    |a: &RegistrationAnswer| a.error != errors::NOT_CONTROLLER,
                )
                .await
            };
            match answer {
                Some(a) if a.error == errors::NONE => {
                    s.epoch.set(a.epoch);
                    s.registered_at.set(a.applied_index);
                    io.wait_local_applied(a.applied_index, wait).await;
                    tracing::info!(
                        node = reg.id,
                        epoch = a.epoch,
                        "registered with the controller"
                    );
                    return true;
                }
                Some(a) if a.error != errors::NOT_CONTROLLER => {
                    tracing::warn!(
                        node = reg.id,
                        error = errors::name(a.error),
                        "the controller refused this broker's registration; retrying"
                    );
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                return false;
            }
            glommio::timer::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One heartbeat; re-registers when the controller no longer knows this epoch.
    async fn heartbeat_once(self: &Rc<Self>, s: &BrokerSession, want_shutdown: bool) {
        let Some(io) = self.quorum_io.clone() else {
            return;
        };
        if s.epoch.get() < 0 {
            self.register_once(
                s,
                Duration::from_millis(self.cfg.broker_heartbeat_interval_ms * 4),
            )
            .await;
            return;
        }
        let hb = Heartbeat {
            id: self.cfg.node_id,
            epoch: s.epoch.get(),
            caught_up: io.local_applied() >= s.registered_at.get(),
            want_shutdown,
        };
        let timeout = Duration::from_millis(self.cfg.broker_heartbeat_interval_ms * 4);
        // Partitions whose log failed here (storage error, or it does not open): reported in
        // every heartbeat while they are offline; the controller moves them off this broker.
        let offline = self.global.offline.list(rpc::MAX_OFFLINE_REPORT);
        let answer = if self.leads_quorum() {
            Some(self.answer_heartbeat(hb, offline).await)
        } else {
            let body = rpc::to_body(&HeartbeatMsg {
                id: hb.id,
                epoch: hb.epoch,
                caught_up: hb.caught_up,
                want_shutdown,
                offline,
            });
            self.call_leader_as(
                &io,
                RpcKind::BrokerHeartbeat,
                &body,
                timeout,
                |a: &HeartbeatAnswerMsg| a.error != errors::NOT_CONTROLLER,
            )
            .await
        };
        let Some(a) = answer else {
            return;
        };
        match a.error {
            errors::NONE => {
                if s.fenced.get() != a.fenced {
                    tracing::info!(
                        node = hb.id,
                        epoch = hb.epoch,
                        fenced = a.fenced,
                        "broker state"
                    );
                }
                s.fenced.set(a.fenced);
                if a.shutdown_ok {
                    s.shutdown_ok.set(true);
                }
                io.wait_local_applied(a.applied_index, timeout).await;
            }
            errors::STALE_BROKER_EPOCH | errors::BROKER_ID_NOT_REGISTERED => {
                tracing::info!(
                    node = hb.id,
                    epoch = hb.epoch,
                    error = errors::name(a.error),
                    "the controller does not know this registration; registering again"
                );
                s.epoch.set(-1);
            }
            code => tracing::debug!(error = errors::name(code), "heartbeat refused"),
        }
    }
}

/// Registers this broker (bounded by [`REGISTER_WAIT`]), unfences it with a first heartbeat,
/// then keeps heartbeating and, on the leader, expiring sessions. Returns the session for the
/// shutdown path.
pub async fn start(shard: &Rc<Shard>) -> Rc<BrokerSession> {
    let s = Rc::new(BrokerSession::load(shard));
    if shard.register_once(&s, REGISTER_WAIT).await {
        // Unfenced before the first client: a single node serves at once.
        let until = Instant::now() + REGISTER_WAIT;
        while s.fenced.get() && Instant::now() < until && s.epoch.get() >= 0 {
            shard.heartbeat_once(&s, false).await;
            if s.fenced.get() {
                glommio::timer::sleep(Duration::from_millis(20)).await;
            }
        }
    } else {
        tracing::warn!(
            wait_ms = REGISTER_WAIT.as_millis() as u64,
            "no controller leader registered this broker yet; serving, and registering in the background"
        );
    }
    let interval = Duration::from_millis(shard.cfg.broker_heartbeat_interval_ms);
    {
        let (shard, s) = (shard.clone(), s.clone());
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(interval).await;
                if shard.is_shutting_down() {
                    break;
                }
                shard.heartbeat_once(&s, false).await;
            }
        })
        .detach();
    }
    {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            while !shard.is_shutting_down() {
                glommio::timer::sleep(interval).await;
                if shard.leads_quorum() {
                    let refused = shard
                        .quorum_io
                        .as_ref()
                        .map(|io| io.sessions.refused.borrow().clone())
                        .unwrap_or_default();
                    shard
                        .decide(|s, image| ((), s.expire_with(image, mono_ms(), &refused)))
                        .await;
                }
            }
        })
        .detach();
    }
    s
}

/// SIGTERM: heartbeats with `want_shutdown` until the controller answers shutdown_ok (this
/// broker then leads nothing) or [`SHUTDOWN_WAIT`] passed.
pub async fn controlled_shutdown(shard: &Rc<Shard>, s: &BrokerSession) {
    if s.epoch.get() < 0 {
        return;
    }
    let t0 = Instant::now();
    let mut leaderless_since: Option<Instant> = None;
    while !s.shutdown_ok.get() && t0.elapsed() < SHUTDOWN_WAIT {
        // With no controller leader for a second (the last brokers of a cluster stopping),
        // nobody can move anything: stop waiting.
        if shard.quorum_io.as_ref().is_some_and(|io| io.leader() == 0) {
            let since = *leaderless_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= Duration::from_secs(1) {
                tracing::warn!("controlled shutdown: no controller leader; stopping without it");
                return;
            }
        } else {
            leaderless_since = None;
        }
        shard.heartbeat_once(s, true).await;
        if !s.shutdown_ok.get() {
            glommio::timer::sleep(Duration::from_millis(50)).await;
        }
    }
    if s.shutdown_ok.get() {
        tracing::info!(
            ms = t0.elapsed().as_millis() as u64,
            "controlled shutdown: the controller moved this broker's leaderships"
        );
    } else {
        tracing::warn!(
            wait_ms = SHUTDOWN_WAIT.as_millis() as u64,
            "controlled shutdown: no shutdown_ok from the controller in time; stopping anyway"
        );
    }
}
