//! The replicated metadata log: [`MetadataLog`] over a `shardlog-quorum` raft node.
//!
//! The state machine ([`MetaMachine`]) decodes each committed entry as a [`MetadataRecord`],
//! applies it to the image with the same pure [`ClusterMeta::apply`] every shard runs, and
//! queues `(index, record)` for the shards; its snapshot is the image as JSON (the format of
//! `cluster-metadata.json`, which the single-node log of earlier versions wrote, so such a file
//! becomes the first snapshot of a fresh store: [`RaftMetadataLog::open`]).
//!
//! Nothing here owns a thread or a timer task: whoever holds the log drives it. The broker's
//! driver task (`crate::controller::quorum`) calls [`RaftMetadataLog::pump`] whenever a message
//! arrived or a tick is due, and [`RaftMetadataLog::commit`] pumps by itself while it waits for
//! its proposal, so a commit on a single voter is one Ready cycle: the entry is written and
//! fdatasynced once, committed, applied, and the commit index written without a second sync.
//! What the network delivers goes into [`QuorumIo`]'s bounded inbox (no lock on the log
//! needed); what raft sends goes to [`QuorumIo`]'s outbox function, which the transport sets.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::{self, Either, FutureExt};
use shardlog_engine::Storage;
use shardlog_quorum::{
    bootstrap_conf, Message, MessageType, QuorumConfig, QuorumError, QuorumNode, RaftStore,
    StateMachine,
};

use crate::controller::log::{CommittedRecord, MetaLogError, MetadataLog};
use crate::controller::metadata::{ClusterMeta, MetaError, PartitionMeta};
use crate::controller::records::MetadataRecord;

/// The file earlier versions kept the whole image in (`<data>/meta/`); read once, at the first
/// start of a single-voter store, as its first snapshot.
pub const LEGACY_FILE: &str = "cluster-metadata.json";
/// What the legacy file is renamed to once its content is the store's durable snapshot.
pub const LEGACY_MIGRATED: &str = "cluster-metadata.json.migrated";
/// Messages received and not yet stepped; more are dropped (raft retries what matters).
pub const MAX_INBOX: usize = 4096;

/// The image, and the records applied since someone last took them.
#[derive(Default)]
pub struct MetaMachine {
    image: ClusterMeta,
    applied: Vec<CommittedRecord>,
    /// A committed entry that is not a record this build reads: the log stops (every node
    /// must apply the same records, so skipping one would fork the image).
    corrupt: Option<String>,
}

impl MetaMachine {
    pub fn image(&self) -> &ClusterMeta {
        &self.image
    }
}

impl StateMachine for MetaMachine {
    fn apply(&mut self, index: u64, data: &[u8]) {
        if self.corrupt.is_some() {
            return;
        }
        match MetadataRecord::decode(data) {
            Ok(record) => {
                self.image.apply(&record);
                self.image.applied_index = index;
                self.applied.push(CommittedRecord { index, record });
            }
            Err(e) => {
                tracing::error!(index, error = %e, "metadata log: a committed entry is not a readable record; the metadata log stops");
                self.corrupt = Some(format!("entry {index}: {e}"));
            }
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        // Serializing plain maps, strings and integers cannot fail.
        serde_json::to_vec(&self.image).unwrap_or_default()
    }

    fn restore(&mut self, _index: u64, data: &[u8]) -> Result<(), String> {
        let new: ClusterMeta = serde_json::from_slice(data).map_err(|e| e.to_string())?;
        // The shards hold the old image: they get the records that turn it into the new one.
        let at = new.applied_index;
        for record in image_diff(&self.image, &new) {
            self.applied.push(CommittedRecord { index: at, record });
        }
        self.image = new;
        Ok(())
    }
}

/// Records that turn `old` into `new` when applied in order (for shards that held `old` when
/// a snapshot replaced it): deletions first, then creations, partition growth, partition
/// changes, configs, brokers and the producer-id block. A partition's state is carried over
/// exactly when its partition epoch moved (what every `PartitionChange` does).
pub fn image_diff(old: &ClusterMeta, new: &ClusterMeta) -> Vec<MetadataRecord> {
    let mut out = Vec::new();
    for (name, t) in &old.topics {
        if new.topics.get(name).is_none_or(|n| n.id != t.id) {
            out.push(MetadataRecord::DeleteTopic {
                name: name.clone(),
                id: t.id,
            });
        }
    }
    let change =
        |name: &str, id: u128, i: usize, p: &PartitionMeta| MetadataRecord::PartitionChange {
            name: name.to_string(),
            id,
            partition: i as u32,
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            replicas: p.replicas.clone(),
            isr: p.isr.clone(),
            elr: p.elr.clone(),
        };
    for (name, t) in &new.topics {
        let old_parts: &[PartitionMeta] = match old.topics.get(name) {
            Some(o) if o.id == t.id => {
                if t.configs != o.configs {
                    out.push(MetadataRecord::AlterConfigs {
                        name: name.clone(),
                        id: t.id,
                        configs: t.configs.clone(),
                    });
                }
                &o.partitions
            }
            _ => {
                out.push(MetadataRecord::CreateTopic {
                    name: name.clone(),
                    id: t.id,
                    assignments: t.partitions.iter().map(|p| p.replicas.clone()).collect(),
                    configs: t.configs.clone(),
                });
                &[]
            }
        };
        if t.partitions.len() > old_parts.len() && !old_parts.is_empty() {
            out.push(MetadataRecord::CreatePartitions {
                name: name.clone(),
                id: t.id,
                first: old_parts.len() as u32,
                assignments: t.partitions[old_parts.len()..]
                    .iter()
                    .map(|p| p.replicas.clone())
                    .collect(),
            });
        }
        for (i, p) in t.partitions.iter().enumerate() {
            let before = old_parts.get(i).map_or(0, |o| o.partition_epoch);
            if p.partition_epoch > before {
                out.push(change(name, t.id, i, p));
            }
        }
    }
    for (id, b) in &old.brokers {
        if new.brokers.get(id).is_none_or(|n| n.epoch != b.epoch) {
            out.push(MetadataRecord::UnregisterBroker {
                id: *id,
                epoch: b.epoch,
            });
        }
    }
    for (id, b) in &new.brokers {
        let same = old.brokers.get(id).filter(|o| o.epoch == b.epoch);
        if same.is_none() {
            out.push(MetadataRecord::RegisterBroker {
                id: *id,
                epoch: b.epoch,
                incarnation: b.incarnation,
                host: b.host.clone(),
                port: b.port,
            });
        }
        let (fenced, shutting_down) = same.map_or((true, false), |o| (o.fenced, o.shutting_down));
        if (fenced, shutting_down) != (b.fenced, b.shutting_down) {
            out.push(MetadataRecord::BrokerState {
                id: *id,
                epoch: b.epoch,
                fenced: b.fenced,
                shutting_down: b.shutting_down,
            });
        }
    }
    if new.producer_id_block_end > old.producer_id_block_end {
        out.push(MetadataRecord::ProducerIdBlock {
            block_end: new.producer_id_block_end,
        });
    }
    out
}

/// Hands a message to the transport; `false` when it could not be queued.
pub type Outbox = Box<dyn Fn(Message) -> bool>;

/// What the network side shares with the log without holding it: received messages, the
/// function that sends, the tick schedule, and what this node knows of the leader.
pub struct QuorumIo {
    inbox: RefCell<VecDeque<Message>>,
    /// Notified when a message arrives (the driver wakes up).
    pub arrived: event_listener::Event,
    next_tick: Cell<Instant>,
    /// Hands a message to the transport; `false` when it could not be queued.
    outbox: RefCell<Option<Outbox>>,
    dropped: Cell<u64>,
    /// The leader this node knows of (0: none), and whether it is this node.
    leader: Cell<u64>,
    term: Cell<u64>,
    /// Index of the last record every shard of this broker has applied.
    local_applied: Cell<u64>,
    pub local_applied_event: event_listener::Event,
    /// Nodes that made first contact and may have to be added as learners.
    joiners: RefCell<Vec<u64>>,
    /// Voters and learners in force (as last published).
    members: RefCell<Vec<u64>>,
    /// The controller leader's broker sessions (`crate::controller::lifecycle`).
    pub sessions: LeaderSessions,
}

impl QuorumIo {
    pub fn new() -> Rc<Self> {
        Rc::new(QuorumIo {
            inbox: RefCell::new(VecDeque::new()),
            arrived: event_listener::Event::new(),
            next_tick: Cell::new(Instant::now()),
            outbox: RefCell::new(None),
            dropped: Cell::new(0),
            leader: Cell::new(0),
            term: Cell::new(0),
            local_applied: Cell::new(0),
            local_applied_event: event_listener::Event::new(),
            joiners: RefCell::new(Vec::new()),
            members: RefCell::new(Vec::new()),
            sessions: Default::default(),
        })
    }

    /// Queues a received message for the next pump; drops it when the inbox is full.
    pub fn deliver(&self, msg: Message) {
        let mut inbox = self.inbox.borrow_mut();
        if inbox.len() >= MAX_INBOX {
            let n = self.dropped.get() + 1;
            self.dropped.set(n);
            if n.is_power_of_two() {
                tracing::warn!(
                    dropped = n,
                    "metadata quorum inbox full: dropping a raft message"
                );
            }
            return;
        }
        inbox.push_back(msg);
        drop(inbox);
        self.arrived.notify(usize::MAX);
    }

    /// Sets the function raft's outgoing messages go to.
    pub fn set_outbox(&self, f: Outbox) {
        *self.outbox.borrow_mut() = Some(f);
    }

    fn send(&self, msg: Message) -> bool {
        match &*self.outbox.borrow() {
            Some(f) => f(msg),
            None => false,
        }
    }

    /// Whether the driver has work: a message waits or a tick is due.
    pub fn due(&self) -> bool {
        !self.inbox.borrow().is_empty() || Instant::now() >= self.next_tick.get()
    }

    /// Waits until [`QuorumIo::due`] or `deadline`, whichever comes first.
    pub async fn wait_due(&self, deadline: Option<Instant>) {
        let listener = self.arrived.listen();
        if self.due() {
            return;
        }
        let mut until = self.next_tick.get();
        if let Some(d) = deadline {
            until = until.min(d);
        }
        let sleep = glommio::timer::sleep(until.saturating_duration_since(Instant::now()));
        let _ = future::select(listener, sleep.boxed_local()).await;
    }

    /// The leader this node knows of (0: none).
    pub fn leader(&self) -> u64 {
        self.leader.get()
    }

    pub fn term(&self) -> u64 {
        self.term.get()
    }

    /// Whether `id` is a voter or learner of the configuration in force.
    pub fn is_member(&self, id: u64) -> bool {
        self.members.borrow().contains(&id)
    }

    /// Records that every shard applied the records up to `index`.
    pub fn set_local_applied(&self, index: u64) {
        if index > self.local_applied.get() {
            self.local_applied.set(index);
            self.local_applied_event.notify(usize::MAX);
        }
    }

    pub fn local_applied(&self) -> u64 {
        self.local_applied.get()
    }

    /// Waits until every shard applied the records up to `index`, or `timeout` passed;
    /// returns whether it got there.
    pub async fn wait_local_applied(&self, index: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let listener = self.local_applied_event.listen();
            if self.local_applied.get() >= index {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let sleep = glommio::timer::sleep(left);
            let _ = future::select(listener, sleep.boxed_local()).await;
        }
    }

    /// Notes that node `id` made contact (the leader adds it as a learner if it is not a
    /// member yet); bounded, duplicates ignored.
    pub fn joined(&self, id: u64) {
        let mut j = self.joiners.borrow_mut();
        if !j.contains(&id) && j.len() < 1024 {
            j.push(id);
            drop(j);
            self.arrived.notify(usize::MAX);
        }
    }
}

/// Settings of the replicated log.
#[derive(Clone, Debug)]
pub struct RaftLogOptions {
    pub node_id: u64,
    /// The voters' ids (`controller.quorum.voters`); `[node_id]` for a single node.
    pub voters: Vec<u64>,
    /// Length of one raft tick.
    pub tick: Duration,
    /// Ticks without a leader before a follower campaigns (randomized up to twice that).
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    /// How long a commit waits for its proposal before answering NOT_CONTROLLER.
    pub commit_timeout: Duration,
    /// Snapshot after this many applied entries.
    pub snapshot_every: u64,
}

impl RaftLogOptions {
    /// A single voter with the broker's timings.
    pub fn single(node_id: u64) -> Self {
        RaftLogOptions {
            node_id,
            voters: vec![node_id],
            tick: Duration::from_millis(100),
            election_ticks: 10,
            heartbeat_ticks: 2,
            commit_timeout: Duration::from_secs(5),
            snapshot_every: 10_000,
        }
    }

    fn quorum_config(&self) -> QuorumConfig {
        let mut c = QuorumConfig::new(self.node_id);
        c.election_tick = self.election_ticks.max(2);
        c.heartbeat_tick = self.heartbeat_ticks.clamp(1, c.election_tick - 1);
        c.snapshot_every = self.snapshot_every;
        c
    }

    fn is_sole_voter(&self) -> bool {
        self.voters == [self.node_id]
    }
}

/// The metadata log replicated by raft (see the module docs).
pub struct RaftMetadataLog<S: Storage> {
    node: QuorumNode<S, MetaMachine>,
    io: Rc<QuorumIo>,
    opts: RaftLogOptions,
    /// The proposal a commit waits for, and what became of it.
    pending: Option<shardlog_quorum::Proposal>,
    outcome: Option<bool>,
    /// Why the log stopped (a failed write leaves raft mid-Ready; the broker must restart).
    broken: Option<String>,
}

fn meta_io(op: &'static str, path: &Path, e: impl std::fmt::Display) -> MetaError {
    MetaError::Io {
        op,
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    }
}

impl<S: Storage> RaftMetadataLog<S> {
    /// Opens the store in `dir` (creating it with the voters), restores the image and
    /// re-applies the committed log. `legacy_dir` is where an earlier version kept
    /// [`LEGACY_FILE`]: when the store is empty and that file exists, a single voter takes it as
    /// its first snapshot (index 1, term 1), durably, and renames the file to
    /// [`LEGACY_MIGRATED`]. A store of several voters refuses such a file (its peers would not
    /// share that history).
    pub async fn open(
        storage: S,
        dir: &Path,
        legacy_dir: Option<&Path>,
        opts: RaftLogOptions,
        io: Rc<QuorumIo>,
    ) -> Result<Self, MetaError> {
        let conf = bootstrap_conf(&opts.voters, &[]);
        if let Some(legacy_dir) = legacy_dir {
            Self::migrate(&storage, dir, legacy_dir, &opts, conf.clone()).await?;
        }
        let (mut node, report) = QuorumNode::open(
            storage,
            dir,
            opts.quorum_config(),
            conf,
            MetaMachine::default(),
        )
        .await
        .map_err(|e| meta_io("open metadata quorum", dir, e))?;
        tracing::info!(node = opts.node_id, voters = ?opts.voters, created = report.created, snapshot = report.snapshot_index, last = report.last_index, "metadata log opened");
        let sole_voter = opts.is_sole_voter();
        if sole_voter {
            // Its own majority: lead at once, so the broker serves admin requests from start.
            node.campaign().map_err(|e| meta_io("campaign", dir, e))?;
        }
        while node.has_ready() {
            // Messages of these cycles are not sent: the transport is not up yet, and raft
            // sends again what matters (heartbeats, probes).
            node.ready()
                .await
                .map_err(|e| meta_io("replay metadata log", dir, e))?;
        }
        if let Some(c) = &node.state_machine().corrupt {
            return Err(MetaError::Corrupt {
                path: dir.to_path_buf(),
                message: c.clone(),
            });
        }
        // The records replayed here are in the image the shards start from.
        node.state_machine_mut().applied.clear();
        io.next_tick.set(Instant::now() + opts.tick);
        io.set_local_applied(node.state_machine().image.applied_index);
        let mut log = RaftMetadataLog {
            node,
            io,
            opts,
            pending: None,
            outcome: None,
            broken: None,
        };
        log.publish();
        Ok(log)
    }

    async fn migrate(
        storage: &S,
        dir: &Path,
        legacy_dir: &Path,
        opts: &RaftLogOptions,
        conf: shardlog_quorum::ConfState,
    ) -> Result<(), MetaError> {
        let legacy = legacy_dir.join(LEGACY_FILE);
        let Some(bytes) = storage
            .read_file(&legacy)
            .await
            .map_err(|source| MetaError::Io {
                op: "read",
                path: legacy.clone(),
                source,
            })?
        else {
            return Ok(());
        };
        let mut image: ClusterMeta =
            serde_json::from_slice(&bytes).map_err(|e| MetaError::Corrupt {
                path: legacy.clone(),
                message: e.to_string(),
            })?;
        let (mut store, report) = RaftStore::open(storage.clone(), dir, conf.clone())
            .await
            .map_err(|e| meta_io("open metadata quorum", dir, e))?;
        if report.snapshot_index > 0 || report.last_index > 0 {
            // Migrated before (the rename did not happen): the store is the truth.
            tracing::warn!(file = %legacy.display(), "metadata store already holds a log; ignoring the old metadata file");
        } else {
            if !opts.is_sole_voter() {
                return Err(MetaError::Corrupt {
                    path: legacy.clone(),
                    message: "a metadata file of a single-node broker cannot seed a quorum of several voters: start this data directory as a single node, or start the quorum on empty data directories".into(),
                });
            }
            image.applied_index = 1;
            // Partitions from before replication live on this node alone.
            image.upgrade_single_node(opts.node_id as i32);
            let snap = shardlog_quorum::snapshot_at(
                1,
                1,
                conf,
                Bytes::from(serde_json::to_vec(&image).unwrap_or_default()),
            );
            store
                .install_snapshot(&snap, None)
                .await
                .map_err(|e| meta_io("write first metadata snapshot", dir, e))?;
            tracing::info!(file = %legacy.display(), topics = image.topics.len(), "metadata file of an earlier version is the metadata log's first snapshot");
        }
        drop(store);
        let to = legacy_dir.join(LEGACY_MIGRATED);
        storage
            .rename(&legacy, &to)
            .await
            .map_err(|source| MetaError::Io {
                op: "rename",
                path: legacy.clone(),
                source,
            })?;
        storage
            .sync_dir(legacy_dir)
            .await
            .map_err(|source| MetaError::Io {
                op: "sync dir",
                path: legacy_dir.to_path_buf(),
                source,
            })?;
        Ok(())
    }

    pub fn io(&self) -> &Rc<QuorumIo> {
        &self.io
    }

    pub fn node_id(&self) -> u64 {
        self.opts.node_id
    }

    pub fn options(&self) -> &RaftLogOptions {
        &self.opts
    }

    pub fn is_leader(&self) -> bool {
        self.node.is_leader()
    }

    /// The voters and learners in force.
    pub fn members(&self) -> (Vec<u64>, Vec<u64>) {
        let cs = self.node.conf_state();
        (cs.voters, cs.learners)
    }

    /// Why the log stopped, if it did.
    pub fn broken(&self) -> Option<&str> {
        self.broken
            .as_deref()
            .or(self.node.state_machine().corrupt.as_deref())
    }

    /// The records applied since they were last taken, in log order.
    pub fn take_applied(&mut self) -> Vec<CommittedRecord> {
        std::mem::take(&mut self.node.state_machine_mut().applied)
    }

    fn publish(&mut self) {
        self.io.leader.set(self.node.leader_id());
        self.io.term.set(self.node.term());
        let cs = self.node.conf_state();
        let mut m = self.io.members.borrow_mut();
        m.clear();
        m.extend(cs.voters.iter().chain(cs.learners.iter()));
    }

    /// Does what is due: elapsed ticks, received messages, Ready cycles (persist, apply,
    /// send). Records applied wait in [`RaftMetadataLog::take_applied`].
    pub async fn pump(&mut self) -> Result<(), MetaLogError> {
        if let Some(why) = self.broken() {
            return Err(MetaLogError::Broken(why.to_string()));
        }
        let now = Instant::now();
        let mut ticks = 0;
        while self.io.next_tick.get() <= now {
            self.node.tick();
            ticks += 1;
            let next = self.io.next_tick.get() + self.opts.tick;
            // After a long stall, tick once and start the schedule again from now, rather
            // than firing an election's worth of ticks at once.
            self.io.next_tick.set(if ticks >= 3 {
                now + self.opts.tick
            } else {
                next
            });
        }
        self.add_joiners();
        loop {
            let msgs: Vec<Message> = self.io.inbox.borrow_mut().drain(..).collect();
            for m in msgs {
                let (from, ty) = (m.from, m.get_msg_type());
                if let Err(e) = self.node.step(m) {
                    tracing::debug!(from, ?ty, error = %e, "metadata quorum: message not stepped");
                }
            }
            if !self.node.has_ready() {
                break;
            }
            let out = match self.node.ready().await {
                Ok(out) => out,
                Err(e) => {
                    tracing::error!(error = %e, "metadata log write failed; the metadata log stops until the broker restarts");
                    self.broken = Some(e.to_string());
                    return Err(MetaLogError::Broken(e.to_string()));
                }
            };
            if let Some(p) = self.pending {
                for c in &out.committed {
                    if c.index == p.index {
                        self.outcome = Some(c.term == p.term);
                    }
                }
                if self.outcome.is_none() && self.node.applied_index() >= p.index {
                    // Another entry (a new leader's no-op or configuration) took the index.
                    self.outcome = Some(false);
                }
            }
            for m in out.messages {
                let (to, snapshot) = (m.to, m.get_msg_type() == MessageType::MsgSnapshot);
                let queued = self.io.send(m);
                if snapshot {
                    self.node.report_snapshot(to, queued);
                }
                if !queued {
                    self.node.report_unreachable(to);
                }
            }
        }
        self.publish();
        Ok(())
    }

    /// On the leader: proposes each node that made contact and is not a member as a learner.
    fn add_joiners(&mut self) {
        if !self.node.is_leader() || self.io.joiners.borrow().is_empty() {
            return;
        }
        let joiners = std::mem::take(&mut *self.io.joiners.borrow_mut());
        let cs = self.node.conf_state();
        for id in joiners {
            if cs.voters.contains(&id) || cs.learners.contains(&id) {
                continue;
            }
            match self.node.propose_add_learner(id) {
                Ok(p) => tracing::info!(
                    node = id,
                    index = p.index,
                    "adding a broker to the metadata quorum as a learner"
                ),
                Err(e) => {
                    tracing::debug!(node = id, error = %e, "cannot add a learner now; will retry on its next contact")
                }
            }
        }
    }
}

impl<S: Storage> MetadataLog for RaftMetadataLog<S> {
    fn image(&self) -> &ClusterMeta {
        self.node.state_machine().image()
    }

    async fn commit(
        &mut self,
        record: MetadataRecord,
    ) -> Result<Vec<CommittedRecord>, MetaLogError> {
        if let Some(why) = self.broken() {
            return Err(MetaLogError::Broken(why.to_string()));
        }
        let data = record.encode()?;
        let p = match self.node.propose(data) {
            Ok(p) => p,
            Err(QuorumError::NotLeader { leader }) => {
                return Err(MetaLogError::NotController {
                    leader: (leader != 0).then_some(leader),
                })
            }
            Err(e) => return Err(MetaLogError::Broken(e.to_string())),
        };
        self.pending = Some(p);
        self.outcome = None;
        let deadline = Instant::now() + self.opts.commit_timeout;
        let result = loop {
            if let Err(e) = self.pump().await {
                break Err(e);
            }
            match self.outcome {
                Some(true) => break Ok(()),
                Some(false) => break Err(MetaLogError::NotCommitted { index: p.index }),
                None => {}
            }
            if self.node.term() != p.term || Instant::now() >= deadline {
                break Err(MetaLogError::NotCommitted { index: p.index });
            }
            self.io.wait_due(Some(deadline)).await;
        };
        self.pending = None;
        self.outcome = None;
        result.map(|()| self.take_applied())
    }
}

/// Where the broker keeps the quorum's files.
pub fn quorum_dir(meta_dir: &Path) -> PathBuf {
    meta_dir.join("quorum")
}

/// The controller leader's session table, for the term it was created in.
#[derive(Default)]
pub struct LeaderSessions {
    pub(crate) current: std::cell::RefCell<Option<(u64, crate::controller::decide::Sessions)>>,
    /// Voters whose controller port refused this node's connection, with the monotonic ms
    /// (`clock::mono_ms`) of the first refusal since the last connection (transport.rs);
    /// the leader's session expiry ends their sessions at once (`Sessions::expire_with`).
    pub(crate) refused: std::cell::RefCell<std::collections::BTreeMap<i32, u64>>,
}

/// Waits for `f` or the time `d`, whichever is first (`None` on time-out).
pub async fn with_timeout<T>(d: Duration, f: impl std::future::Future<Output = T>) -> Option<T> {
    match future::select(f.boxed_local(), glommio::timer::sleep(d).boxed_local()).await {
        Either::Left((v, _)) => Some(v),
        Either::Right(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::log::conformance;
    use crate::controller::log::MetadataAuthority;
    use crate::controller::metadata::{BrokerMeta, TopicMeta};
    use shardlog_engine::SimStorage;
    use std::collections::BTreeMap;

    fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F) {
        glommio::LocalExecutor::default().run(f());
    }

    fn opener(
        disk: &SimStorage,
    ) -> impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = RaftMetadataLog<SimStorage>>>>
    {
        let disk = disk.clone();
        move || {
            let disk = disk.clone();
            Box::pin(async move {
                RaftMetadataLog::open(
                    disk,
                    Path::new("/meta/quorum"),
                    Some(Path::new("/meta")),
                    RaftLogOptions::single(1),
                    QuorumIo::new(),
                )
                .await
                .expect("open")
            })
        }
    }

    #[test]
    fn raft_log_commits_apply_in_order() {
        let disk = SimStorage::default();
        run(|| conformance::commits_apply_in_order(opener(&disk)));
    }

    #[test]
    fn raft_log_restart_replays_to_the_same_image() {
        let disk = SimStorage::default();
        run(|| conformance::restart_replays_to_the_same_image(opener(&disk)));
    }

    #[test]
    fn raft_log_producer_ids_never_reused() {
        let disk = SimStorage::default();
        run(|| conformance::producer_ids_never_reused(opener(&disk)));
    }

    /// A commit is durable when it returns: a crash that keeps only fsynced data loses none
    /// of the committed records, and snapshots (every 3 entries here) restore the same image.
    #[test]
    fn committed_records_survive_a_crash_and_snapshots() {
        let disk = SimStorage::default();
        let open = |disk: SimStorage| async move {
            let mut o = RaftLogOptions::single(1);
            o.snapshot_every = 3;
            RaftMetadataLog::open(disk, Path::new("/q"), None, o, QuorumIo::new())
                .await
                .expect("open")
        };
        let d = disk.clone();
        let image = std::rc::Rc::new(RefCell::new(ClusterMeta::default()));
        let im = image.clone();
        run(move || async move {
            let mut log = open(d).await;
            for i in 0..10u32 {
                log.commit(MetadataRecord::CreateTopic {
                    name: format!("t{i}"),
                    id: u128::from(i) + 1,
                    assignments: vec![vec![1]; i as usize + 1],
                    configs: BTreeMap::new(),
                })
                .await
                .expect("commit");
            }
            *im.borrow_mut() = log.image().clone();
        });
        let crashed = disk.crash(shardlog_engine::io::sim::CrashMode::LoseUnsynced);
        run(move || async move {
            let log = open(crashed).await;
            assert_eq!(log.image(), &*image.borrow());
            assert_eq!(log.image().topics.len(), 10);
        });
    }

    /// A data directory of the single-node log of earlier versions (the JSON image, without
    /// an applied index) becomes the first snapshot: every topic, epoch, config and the
    /// producer-id block survive, the file is renamed, and later starts read the store.
    #[test]
    fn legacy_metadata_file_becomes_the_first_snapshot() {
        let disk = SimStorage::default();
        let old = r#"{
  "topics": {
    "orders": {
      "name": "orders",
      "id": 250622036839408135312370101040394568029,
      "partitions": [ { "leader_epoch": 0 }, { "leader_epoch": 3 } ],
      "configs": { "compression.type": "zstd", "retention.ms": "60000" }
    }
  },
  "producer_id_block_end": 7000
}"#;
        let d = disk.clone();
        run(move || async move {
            d.create_dir_all(Path::new("/meta")).await.expect("mkdir");
            d.sync_dir(Path::new("/")).await.expect("sync");
            d.write_file_atomic(&Path::new("/meta").join(LEGACY_FILE), old.as_bytes())
                .await
                .expect("write");
        });
        let check = |m: &ClusterMeta| {
            let o = &m.topics["orders"];
            assert_eq!(o.id, 250622036839408135312370101040394568029);
            assert_eq!(o.partitions[1].leader_epoch, 3);
            assert_eq!(o.configs["compression.type"], "zstd");
        };
        let open = opener(&disk);
        run(move || async move {
            let log = open().await;
            check(log.image());
            assert_eq!(log.image().producer_id_block_end, 7000);
            let mut a = MetadataAuthority::new(log);
            assert_eq!(a.allocate_producer_id().await.expect("allocate"), 7000);
            a.commit(MetadataRecord::CreateTopic {
                name: "new".into(),
                id: 5,
                assignments: vec![vec![1]],
                configs: BTreeMap::new(),
            })
            .await
            .expect("commit");
        });
        assert!(disk
            .files()
            .iter()
            .any(|p| p == &Path::new("/meta").join(LEGACY_MIGRATED)));
        assert!(!disk
            .files()
            .iter()
            .any(|p| p == &Path::new("/meta").join(LEGACY_FILE)));
        // Even after a crash that keeps only what was synced.
        let crashed = disk.crash(shardlog_engine::io::sim::CrashMode::LoseUnsynced);
        let open = opener(&crashed);
        run(move || async move {
            let log = open().await;
            check(log.image());
            assert!(log.image().topics.contains_key("new"));
            assert_eq!(log.image().producer_id_block_end, 8000);
        });
    }

    #[test]
    fn legacy_file_is_refused_by_a_quorum_of_several() {
        let disk = SimStorage::default();
        run(move || async move {
            disk.create_dir_all(Path::new("/meta"))
                .await
                .expect("mkdir");
            disk.write_file_atomic(
                &Path::new("/meta").join(LEGACY_FILE),
                b"{\"topics\":{},\"producer_id_block_end\":0}",
            )
            .await
            .expect("write");
            let mut o = RaftLogOptions::single(1);
            o.voters = vec![1, 2, 3];
            let r = RaftMetadataLog::open(
                disk,
                Path::new("/meta/quorum"),
                Some(Path::new("/meta")),
                o,
                QuorumIo::new(),
            )
            .await;
            assert!(matches!(r, Err(MetaError::Corrupt { .. })));
        });
    }

    fn topic(name: &str, id: u128, parts: usize, cfg: &[(&str, &str)]) -> TopicMeta {
        TopicMeta {
            name: name.into(),
            id,
            partitions: (0..parts)
                .map(|i| PartitionMeta::new(vec![1 + i as i32 % 3, 2, 3]))
                .collect(),
            configs: cfg
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// Applying the difference of two images to the first gives the second (what the shards
    /// get when a snapshot from the leader replaces the image).
    #[test]
    fn image_diff_turns_old_into_new() {
        let mut old = ClusterMeta::default();
        for t in [
            topic("same", 1, 2, &[]),
            topic("grown", 2, 1, &[("retention.ms", "5")]),
            topic("gone", 3, 1, &[]),
            topic("recreated", 4, 3, &[]),
        ] {
            old.topics.insert(t.name.clone(), t);
        }
        old.producer_id_block_end = 1000;
        let mut new = ClusterMeta::default();
        for t in [
            topic("same", 1, 2, &[]),
            topic("grown", 2, 4, &[("retention.ms", "9")]),
            topic("recreated", 5, 1, &[("segment.ms", "7")]),
            topic("fresh", 6, 2, &[]),
        ] {
            new.topics.insert(t.name.clone(), t);
        }
        new.producer_id_block_end = 3000;
        // A leader change on a partition that existed, and one on a new partition.
        for (topic, i) in [("same", 1), ("grown", 3), ("fresh", 0)] {
            let p = &mut new.topics.get_mut(topic).expect("topic").partitions[i];
            p.leader = 3;
            p.leader_epoch += 1;
            p.partition_epoch += 2;
            p.isr = vec![3, 2];
            p.elr = vec![1];
        }
        let broker = |id: i32, epoch: i64, fenced: bool| BrokerMeta {
            id,
            epoch,
            incarnation: 7,
            host: "h".into(),
            port: 9000 + id as u16,
            fenced,
            shutting_down: false,
        };
        old.brokers.insert(1, broker(1, 10, false));
        old.brokers.insert(2, broker(2, 11, false));
        old.brokers.insert(4, broker(4, 12, false));
        new.brokers.insert(1, broker(1, 10, true));
        new.brokers.insert(2, broker(2, 20, false));
        new.brokers.insert(3, broker(3, 21, true));
        let diff = image_diff(&old, &new);
        let mut got = old.clone();
        for r in &diff {
            got.apply(r);
        }
        assert_eq!(got, new);
        assert!(image_diff(&new, &new).is_empty());
        // Restoring a snapshot queues exactly those records.
        let mut m = MetaMachine {
            image: old.clone(),
            ..MetaMachine::default()
        };
        new.applied_index = 42;
        m.restore(50, &serde_json::to_vec(&new).expect("json"))
            .expect("restore");
        assert_eq!(m.image, new);
        let queued: Vec<_> = m.applied.iter().map(|c| c.record.clone()).collect();
        assert_eq!(queued, diff);
        assert!(m.applied.iter().all(|c| c.index == 42));
    }

    /// A commit whose write fails applies nothing: the image stays, the log stops (raft is
    /// mid-Ready; the broker must restart), and the error maps to KAFKA_STORAGE_ERROR.
    #[test]
    fn a_failed_write_applies_nothing() {
        let disk = SimStorage::default();
        let open = opener(&disk);
        run(move || async move {
            let mut a = MetadataAuthority::new(open().await);
            assert_eq!(a.allocate_producer_id().await.expect("allocate"), 0);
            let before = a.image().clone();
            disk.set_faults(shardlog_engine::io::sim::Faults {
                eio_sync_after: Some(0),
                ..Default::default()
            });
            let err = a
                .commit(MetadataRecord::CreateTopic {
                    name: "t".into(),
                    id: 1,
                    assignments: vec![vec![1]],
                    configs: BTreeMap::new(),
                })
                .await
                .expect_err("the fsync fails");
            assert!(matches!(err, MetaLogError::Broken(_)), "{err}");
            assert_eq!(err.error_code(), crate::wire::errors::KAFKA_STORAGE_ERROR);
            assert_eq!(a.image(), &before);
            disk.set_faults(Default::default());
            // Stopped: nothing more commits, nothing is applied.
            assert!(matches!(
                a.commit(MetadataRecord::ProducerIdBlock { block_end: 5000 })
                    .await,
                Err(MetaLogError::Broken(_))
            ));
            assert_eq!(a.image(), &before);
            assert!(a.log_mut().take_applied().is_empty());
        });
    }

    /// A committed entry that is not a record stops the log instead of being skipped.
    #[test]
    fn an_unreadable_entry_stops_the_machine() {
        let mut m = MetaMachine::default();
        m.apply(3, b"\x09garbage");
        assert!(m.corrupt.is_some());
        m.apply(
            4,
            &MetadataRecord::ProducerIdBlock { block_end: 5 }
                .encode()
                .expect("encode"),
        );
        assert_eq!(m.image.producer_id_block_end, 0, "nothing applies after it");
    }
}

/// Three raft-backed logs in one process, their messages carried between their inboxes by
/// a network the test can cut: leadership, commits seen by all, failover, loss of quorum.
#[cfg(test)]
mod cluster_tests {
    use super::*;
    use crate::controller::log::MetadataAuthority;
    use shardlog_engine::SimStorage;
    use std::collections::{BTreeMap, BTreeSet};

    type Log = RaftMetadataLog<SimStorage>;
    type Node = Rc<futures::lock::Mutex<MetadataAuthority<Log>>>;

    struct Cluster {
        nodes: Vec<(u64, Node, Rc<QuorumIo>)>,
        /// Records each node took out of its log, in order.
        applied: Rc<RefCell<BTreeMap<u64, Vec<CommittedRecord>>>>,
        down: Rc<RefCell<BTreeSet<u64>>>,
    }

    fn opts(id: u64) -> RaftLogOptions {
        let mut o = RaftLogOptions::single(id);
        o.voters = vec![1, 2, 3];
        o.tick = Duration::from_millis(10);
        o.commit_timeout = Duration::from_millis(1500);
        o
    }

    async fn cluster() -> Cluster {
        let down: Rc<RefCell<BTreeSet<u64>>> = Rc::default();
        let ios: Vec<Rc<QuorumIo>> = (0..3).map(|_| QuorumIo::new()).collect();
        let mut nodes = Vec::new();
        for id in 1..=3u64 {
            let io = ios[id as usize - 1].clone();
            let peers = ios.clone();
            let d = down.clone();
            io.set_outbox(Box::new(move |m: Message| {
                if d.borrow().contains(&m.from) || d.borrow().contains(&m.to) {
                    return false;
                }
                // Every message goes through the frame codec, as on the wire.
                let frame = shardlog_quorum::encode_message(&m, shardlog_quorum::DEFAULT_MAX_FRAME)
                    .expect("encode");
                let (m, _) =
                    shardlog_quorum::decode_frame(&frame, shardlog_quorum::DEFAULT_MAX_FRAME)
                        .expect("decode")
                        .expect("whole frame");
                peers[m.to as usize - 1].deliver(m);
                true
            }));
            let log = RaftMetadataLog::open(
                SimStorage::default(),
                Path::new("/q"),
                None,
                opts(id),
                io.clone(),
            )
            .await
            .expect("open");
            nodes.push((
                id,
                Rc::new(futures::lock::Mutex::new(MetadataAuthority::new(log))),
                io,
            ));
        }
        let applied: Rc<RefCell<BTreeMap<u64, Vec<CommittedRecord>>>> = Rc::default();
        for (id, node, io) in &nodes {
            let (id, node, io, applied, down) =
                (*id, node.clone(), io.clone(), applied.clone(), down.clone());
            glommio::spawn_local(async move {
                loop {
                    io.wait_due(Some(Instant::now() + Duration::from_millis(20)))
                        .await;
                    if down.borrow().contains(&id) {
                        glommio::timer::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                    let mut a = node.lock().await;
                    let _ = a.log_mut().pump().await;
                    let recs = a.log_mut().take_applied();
                    applied.borrow_mut().entry(id).or_default().extend(recs);
                }
            })
            .detach();
        }
        Cluster {
            nodes,
            applied,
            down,
        }
    }

    impl Cluster {
        async fn leader(&self, within: Duration) -> Option<u64> {
            let deadline = Instant::now() + within;
            while Instant::now() < deadline {
                for (id, node, _) in &self.nodes {
                    if !self.down.borrow().contains(id) && node.lock().await.log().is_leader() {
                        return Some(*id);
                    }
                }
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
            None
        }

        fn node(&self, id: u64) -> &Node {
            &self.nodes[id as usize - 1].1
        }

        /// Commits on `id`, as the broker does: the records the commit returned go to the
        /// same per-node list the driver fills.
        async fn commit(&self, id: u64, name: &str) -> Result<(), MetaLogError> {
            let mut a = self.node(id).lock().await;
            let r = a
                .commit(MetadataRecord::CreateTopic {
                    name: name.into(),
                    id: 1 + name.len() as u128,
                    assignments: vec![vec![1, 2, 3]],
                    configs: BTreeMap::new(),
                })
                .await;
            let mut recs = r.as_ref().map(Clone::clone).unwrap_or_default();
            recs.extend(a.log_mut().take_applied());
            self.applied
                .borrow_mut()
                .entry(id)
                .or_default()
                .extend(recs);
            r.map(|_| ())
        }

        async fn wait_topics(&self, id: u64, names: &[&str], within: Duration) -> bool {
            let deadline = Instant::now() + within;
            while Instant::now() < deadline {
                let a = self.node(id).lock().await;
                if names.iter().all(|n| a.image().topics.contains_key(*n)) {
                    return true;
                }
                drop(a);
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
            false
        }
    }

    fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F) {
        glommio::LocalExecutor::default().run(f());
    }

    #[test]
    fn three_logs_elect_commit_fail_over_and_stop_without_quorum() {
        run(|| async {
            let c = cluster().await;
            let leader = c.leader(Duration::from_secs(5)).await.expect("a leader");
            c.commit(leader, "a").await.expect("commit on the leader");
            for id in 1..=3 {
                assert!(
                    c.wait_topics(id, &["a"], Duration::from_secs(2)).await,
                    "node {id} has a"
                );
            }
            // A follower refuses, naming the leader.
            let follower = (1..=3).find(|i| *i != leader).expect("a follower");
            match c.commit(follower, "x").await {
                Err(MetaLogError::NotController { leader: Some(l) }) => assert_eq!(l, leader),
                other => panic!("follower commit: {other:?}"),
            }
            // The leader goes away: another takes over and commits.
            c.down.borrow_mut().insert(leader);
            let second = c
                .leader(Duration::from_secs(5))
                .await
                .expect("a new leader");
            assert_ne!(second, leader);
            c.commit(second, "bb")
                .await
                .expect("commit with one voter lost");
            let third = (1..=3)
                .find(|i| *i != leader && *i != second)
                .expect("third");
            assert!(
                c.wait_topics(third, &["a", "bb"], Duration::from_secs(2))
                    .await
            );
            // Two voters lost: nothing commits.
            c.down.borrow_mut().insert(third);
            let r = c.commit(second, "ccc").await;
            assert!(
                matches!(
                    r,
                    Err(MetaLogError::NotCommitted { .. })
                        | Err(MetaLogError::NotController { .. })
                ),
                "{r:?}"
            );
            // Back: the old leader catches up on everything committed without it.
            c.down.borrow_mut().clear();
            assert!(
                c.wait_topics(leader, &["a", "bb"], Duration::from_secs(5))
                    .await
            );
            // Every node took the same records, in the same order, each once.
            let applied = c.applied.borrow();
            let names = |id: u64| -> Vec<(u64, String)> {
                applied[&id]
                    .iter()
                    .map(|r| (r.index, r.record.topic().unwrap_or_default().to_string()))
                    .collect()
            };
            let first = names(third);
            assert!(first.windows(2).all(|w| w[0].0 < w[1].0), "{first:?}");
            for id in 1..=3 {
                let n = names(id);
                assert!(n.len() >= 2, "node {id}: {n:?}");
                assert_eq!(n[..2], first[..2], "node {id}");
            }
        });
    }
}

/// The log implementation the broker runs.
pub type ControllerLog = RaftMetadataLog<shardlog_engine::BrokerStorage>;
