//! The per-shard coordinator: owns the groups of one shard and routes
//! requests, ticks, persistence acknowledgements and log replay to them.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::ErrorCode;
use crate::group::{respond, Group};
use crate::record::{OffsetValue, Record};
use crate::types::*;
use crate::untrusted::Untrusted;
use crate::Config;

/// Longest string accepted in ids, names and metadata (Kafka's non-compact
/// STRING limit). Keeps every accepted value encodable in a [`Record`].
pub const STRING_BYTES_MAX: usize = i16::MAX as usize;

/// Deterministic member-id suffixes (`splitmix64` over a seed and a counter),
/// formatted like a UUID. The server seeds it randomly at start-up so ids are
/// unique across restarts; tests seed it with a constant.
#[derive(Debug, Clone)]
struct IdGen {
    seed: u64,
    counter: u64,
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

impl IdGen {
    fn next(&mut self, prefix: &str) -> String {
        self.counter = self.counter.wrapping_add(1);
        let hi = splitmix64(self.seed ^ self.counter.wrapping_mul(2));
        let lo = splitmix64(self.seed ^ self.counter.wrapping_mul(2).wrapping_add(1));
        format!(
            "{prefix}-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            hi >> 32,
            (hi >> 16) & 0xffff,
            hi & 0xffff,
            lo >> 48,
            lo & 0xffff_ffff_ffff
        )
    }
}

/// Where a partitioned coordinator stands with one internal-log partition
/// (see [`GroupCoordinator::new_partitioned`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionLoad {
    /// Being replayed: its groups get COORDINATOR_LOAD_IN_PROGRESS.
    Loading,
    /// Loaded: this coordinator answers for its groups.
    Active,
}

/// The internal-log partitions a partitioned coordinator answers for.
#[derive(Debug, Clone)]
struct Ownership {
    /// Partitions of the internal log (`offsets_partition_for_group`'s modulus).
    partitions: usize,
    active: BTreeSet<usize>,
    /// Partitions being replayed, with the groups replayed so far (kept apart from the
    /// served groups: no tick, no request and no snapshot sees them until loaded).
    loading: BTreeMap<usize, BTreeMap<String, Group>>,
}

#[derive(Debug, Clone)]
struct PendingCommit {
    request_id: RequestId,
    group_id: String,
    incarnation: u64,
    /// Offsets to apply once durable; entries are dropped when a later
    /// tombstone or commit for the same partition supersedes them.
    apply: Vec<((String, i32), OffsetValue)>,
    /// The response, with `ErrorCode::None` in the accepted slots.
    response: OffsetCommitResponse,
    /// (topic index, partition index) of the accepted slots.
    accepted: Vec<(usize, usize)>,
}

/// Why a record could not be replayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("replay after finish_loading")]
    NotLoading,
    #[error("record of a group stored in partition {actual}, not in partition {expected}")]
    OtherPartition { expected: usize, actual: usize },
    #[error(transparent)]
    Decode(#[from] crate::record::DecodeError),
}

/// The classic group coordinator of one shard. See the crate docs for the
/// driving protocol.
#[derive(Debug, Clone)]
pub struct GroupCoordinator {
    config: Config,
    groups: BTreeMap<String, Group>,
    loading: bool,
    ids: IdGen,
    next_incarnation: u64,
    next_persist_id: u64,
    pending_commits: BTreeMap<PersistId, PendingCommit>,
    next_retention_check_ms: u64,
    /// `Some`: partitioned (answers only for the groups of partitions it loaded).
    owned: Option<Ownership>,
}

impl GroupCoordinator {
    /// A coordinator in the loading state: feed it the internal log with
    /// [`replay`](Self::replay), then call
    /// [`finish_loading`](Self::finish_loading). Requests before that get
    /// COORDINATOR_LOAD_IN_PROGRESS.
    pub fn new(config: Config) -> GroupCoordinator {
        let seed = config.member_id_seed;
        GroupCoordinator {
            config,
            groups: BTreeMap::new(),
            loading: true,
            ids: IdGen { seed, counter: 0 },
            next_incarnation: 1,
            next_persist_id: 1,
            pending_commits: BTreeMap::new(),
            next_retention_check_ms: 0,
            owned: None,
        }
    }

    /// A *partitioned* coordinator: it answers only for groups whose internal-log partition
    /// (of `partitions`) it has loaded, and starts owning none. The server drives each
    /// partition with [`begin_partition_load`](Self::begin_partition_load),
    /// [`replay_partition`](Self::replay_partition) and
    /// [`finish_partition_load`](Self::finish_partition_load) when it gains the partition
    /// (leadership of `__consumer_offsets` p), and
    /// [`unload_partition`](Self::unload_partition) when it loses it. Requests for a group
    /// of a partition being loaded get COORDINATOR_LOAD_IN_PROGRESS, of a partition not
    /// owned NOT_COORDINATOR (the client finds the coordinator again).
    pub fn new_partitioned(config: Config, partitions: usize) -> GroupCoordinator {
        let mut c = GroupCoordinator::new(config);
        c.loading = false;
        c.owned = Some(Ownership {
            partitions: partitions.max(1),
            active: BTreeSet::new(),
            loading: BTreeMap::new(),
        });
        c
    }

    /// Where this coordinator stands with `partition`: `None` when it does not own it (or
    /// is not partitioned).
    pub fn partition_load(&self, partition: usize) -> Option<PartitionLoad> {
        let o = self.owned.as_ref()?;
        if o.active.contains(&partition) {
            Some(PartitionLoad::Active)
        } else if o.loading.contains_key(&partition) {
            Some(PartitionLoad::Loading)
        } else {
            None
        }
    }

    /// The partitions loaded and answered for, ascending (empty when not partitioned).
    pub fn active_partitions(&self) -> Vec<usize> {
        self.owned
            .as_ref()
            .map(|o| o.active.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Starts loading `partition` (unloading it first if it was owned: a new leader epoch
    /// reloads from the log). Returns the answers the unload gave.
    pub fn begin_partition_load(&mut self, partition: usize) -> Vec<Output> {
        let out = self.unload_partition(partition);
        if let Some(o) = &mut self.owned {
            o.loading.insert(partition, BTreeMap::new());
        }
        out
    }

    /// Applies one record of `partition`'s log (in log order) while it loads.
    pub fn replay_partition(
        &mut self,
        partition: usize,
        record: Record,
    ) -> Result<(), ReplayError> {
        let Some(o) = &mut self.owned else {
            return Err(ReplayError::NotLoading);
        };
        let actual = crate::offsets_partition_for_group(record.group_id(), o.partitions);
        let Some(groups) = o.loading.get_mut(&partition) else {
            return Err(ReplayError::NotLoading);
        };
        // The no-op marker of an empty snapshot (a tombstone of the empty group id) hashes
        // to partition 0: only real records are checked.
        if actual != partition && !(record.is_tombstone() && record.group_id().is_empty()) {
            return Err(ReplayError::OtherPartition {
                expected: partition,
                actual,
            });
        }
        apply_record(groups, &mut self.next_incarnation, record);
        Ok(())
    }

    /// Decodes and applies one record of `partition` while it loads.
    pub fn replay_partition_bytes(
        &mut self,
        partition: usize,
        bytes: &[u8],
    ) -> Result<(), ReplayError> {
        let record = Record::decode(bytes)?;
        self.replay_partition(partition, record)
    }

    /// Ends loading `partition`: its groups are served from now on (restored members'
    /// sessions start now). False when it was not loading (unloaded meanwhile).
    pub fn finish_partition_load(&mut self, now_ms: u64, partition: usize) -> bool {
        let Some(o) = &mut self.owned else {
            return false;
        };
        let Some(groups) = o.loading.remove(&partition) else {
            return false;
        };
        o.active.insert(partition);
        for (id, mut g) in groups {
            for m in &mut g.members {
                m.last_heartbeat_ms = now_ms;
            }
            self.groups.insert(id, g);
        }
        if self.next_retention_check_ms == 0 {
            self.next_retention_check_ms =
                now_ms.saturating_add(self.config.offsets_retention_check_interval_ms);
        }
        self.check();
        true
    }

    /// Stops answering for `partition`: its groups are dropped (the log keeps them for the
    /// next owner), parked JoinGroup/SyncGroup requests and OffsetCommits waiting for their
    /// append are answered NOT_COORDINATOR (a later [`persisted`](Self::persisted) for them
    /// is ignored), and later requests for its groups get NOT_COORDINATOR.
    pub fn unload_partition(&mut self, partition: usize) -> Vec<Output> {
        let mut out = Vec::new();
        let Some(o) = &mut self.owned else {
            return out;
        };
        o.loading.remove(&partition);
        if !o.active.remove(&partition) {
            return out;
        }
        let n = o.partitions;
        let of_partition = |id: &str| crate::offsets_partition_for_group(id, n) == partition;
        let ids: Vec<String> = self
            .groups
            .keys()
            .filter(|id| of_partition(id))
            .cloned()
            .collect();
        for id in ids {
            let Some(g) = self.groups.remove(&id) else {
                continue;
            };
            for m in &g.members {
                if let Some(rid) = m.awaiting_join {
                    respond(
                        &mut out,
                        rid,
                        Response::JoinGroup(JoinGroupResponse::error(
                            ErrorCode::NotCoordinator,
                            &m.id,
                        )),
                    );
                }
                if let Some(rid) = m.awaiting_sync {
                    respond(
                        &mut out,
                        rid,
                        Response::SyncGroup(SyncGroupResponse::error(ErrorCode::NotCoordinator)),
                    );
                }
            }
        }
        let waiting: Vec<PersistId> = self
            .pending_commits
            .iter()
            .filter(|(_, pc)| of_partition(&pc.group_id))
            .map(|(&id, _)| id)
            .collect();
        for id in waiting {
            if let Some(pc) = self.pending_commits.remove(&id) {
                let rid = pc.request_id;
                let response = fail_commit(pc, ErrorCode::NotCoordinator);
                respond(&mut out, rid, Response::OffsetCommit(response));
            }
        }
        self.check();
        out
    }

    /// Why a partitioned coordinator does not answer for `group_id` now, if it does not.
    fn refusal(&self, group_id: &str) -> Option<ErrorCode> {
        let o = self.owned.as_ref()?;
        let p = crate::offsets_partition_for_group(group_id, o.partitions);
        if o.active.contains(&p) {
            None
        } else if o.loading.contains_key(&p) {
            Some(ErrorCode::CoordinatorLoadInProgress)
        } else {
            Some(ErrorCode::NotCoordinator)
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn is_loading(&self) -> bool {
        self.loading
    }

    /// Applies one record of the internal log (in log order).
    pub fn replay(&mut self, record: Record) -> Result<(), ReplayError> {
        if !self.loading {
            return Err(ReplayError::NotLoading);
        }
        apply_record(&mut self.groups, &mut self.next_incarnation, record);
        Ok(())
    }

    /// Decodes and applies one record.
    pub fn replay_bytes(&mut self, bytes: &[u8]) -> Result<(), ReplayError> {
        let record = Record::decode(bytes)?;
        self.replay(record)
    }

    /// Ends loading: restored members' sessions start now.
    pub fn finish_loading(&mut self, now_ms: u64) {
        for g in self.groups.values_mut() {
            // Retention of a restored Empty group still counts from its
            // recorded state timestamp; members' sessions restart now.
            for m in &mut g.members {
                m.last_heartbeat_ms = now_ms;
            }
        }
        self.loading = false;
        self.next_retention_check_ms =
            now_ms.saturating_add(self.config.offsets_retention_check_interval_ms);
        self.check();
    }

    /// The minimal records that rebuild the durable state: each group's last
    /// metadata record and its committed offsets. Write them to a fresh log
    /// segment and drop the old ones to bound replay time.
    pub fn snapshot(&self) -> Vec<Record> {
        let mut out = Vec::new();
        for g in self.groups.values() {
            if let Some(value) = &g.persisted {
                out.push(Record::GroupMetadata {
                    group_id: g.id.clone(),
                    value: Some(value.clone()),
                });
            }
            for ((topic, partition), v) in &g.offsets {
                out.push(Record::Offset {
                    group_id: g.id.clone(),
                    topic: topic.clone(),
                    partition: *partition,
                    value: Some(v.clone()),
                });
            }
        }
        out
    }

    /// Handles one request. Responses may be for this request or for requests
    /// parked earlier (JoinGroup/SyncGroup), and come with persist actions.
    pub fn handle(&mut self, now_ms: u64, request_id: RequestId, request: Request) -> Vec<Output> {
        let mut out = Vec::new();
        if self.loading {
            respond(
                &mut out,
                request_id,
                error_response(&request, ErrorCode::CoordinatorLoadInProgress),
            );
            return out;
        }
        let single = match &request {
            Request::JoinGroup(r) => Some(r.group_id.as_str()),
            Request::SyncGroup(r) => Some(r.group_id.as_str()),
            Request::Heartbeat(r) => Some(r.group_id.as_str()),
            Request::LeaveGroup(r) => Some(r.group_id.as_str()),
            Request::OffsetCommit(r) => Some(r.group_id.as_str()),
            Request::OffsetFetch(r) => Some(r.group_id.as_str()),
            Request::OffsetDelete(r) => Some(r.group_id.as_str()),
            Request::ListGroups(_) | Request::DescribeGroups(_) | Request::DeleteGroups(_) => None,
        };
        if let Some(error) = single.and_then(|id| self.refusal(id)) {
            respond(&mut out, request_id, error_response(&request, error));
            return out;
        }
        match request {
            Request::JoinGroup(r) => self.join(now_ms, request_id, r, &mut out),
            Request::SyncGroup(r) => self.sync(now_ms, request_id, r, &mut out),
            Request::Heartbeat(r) => {
                let e = self.heartbeat(now_ms, &r);
                respond(&mut out, request_id, Response::Heartbeat(e));
            }
            Request::LeaveGroup(r) => self.leave(now_ms, request_id, r, &mut out),
            Request::OffsetCommit(r) => self.commit(now_ms, request_id, r, &mut out),
            Request::OffsetFetch(r) => {
                let resp = self.fetch(&r);
                respond(&mut out, request_id, Response::OffsetFetch(resp));
            }
            Request::ListGroups(r) => {
                let resp = self.list(&r);
                respond(&mut out, request_id, Response::ListGroups(resp));
            }
            Request::DescribeGroups(ids) => {
                let resp = ids
                    .iter()
                    .map(|id| match self.refusal(id) {
                        Some(error) => DescribedGroup {
                            error,
                            group_id: id.clone(),
                            state: GroupState::Dead,
                            protocol_type: String::new(),
                            protocol_data: String::new(),
                            members: Vec::new(),
                        },
                        None => self.describe(id),
                    })
                    .collect();
                respond(&mut out, request_id, Response::DescribeGroups(resp));
            }
            Request::DeleteGroups(ids) => {
                let mut results = Vec::with_capacity(ids.len());
                for id in ids {
                    let e = match self.refusal(&id) {
                        Some(error) => error,
                        None => self.delete_group(&id, &mut out),
                    };
                    results.push((id, e));
                }
                respond(&mut out, request_id, Response::DeleteGroups(results));
            }
            Request::OffsetDelete(r) => self.offset_delete(request_id, r, &mut out),
        }
        self.check();
        out
    }

    /// Advances time: session and pending-member expiry, rebalance and sync
    /// timeouts, the initial rebalance delay, offset retention.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Output> {
        let mut out = Vec::new();
        if self.loading {
            return out;
        }
        let cfg = &self.config;
        for g in self.groups.values_mut() {
            if g.next_deadline_ms().is_some_and(|d| d <= now_ms) {
                g.on_tick(cfg, now_ms, &mut out);
            }
        }
        if now_ms >= self.next_retention_check_ms {
            self.next_retention_check_ms =
                now_ms.saturating_add(self.config.offsets_retention_check_interval_ms);
            self.expire_offsets(now_ms, &mut out);
        }
        self.check();
        out
    }

    /// When `tick` next has work (the server may sleep until then; new
    /// requests can only move it earlier).
    pub fn next_deadline_ms(&self) -> Option<u64> {
        if self.loading {
            return None;
        }
        self.groups
            .values()
            .filter_map(Group::next_deadline_ms)
            .chain(std::iter::once(self.next_retention_check_ms))
            .min()
    }

    /// The server finished (or failed) the append of a [`Persist`] with `ack`.
    /// On success the offsets become visible and the OffsetCommit is answered
    /// with success; on failure every accepted partition gets `result`'s error
    /// (COORDINATOR_NOT_AVAILABLE is what Kafka answers for most append
    /// failures; INVALID_COMMIT_OFFSET_SIZE for too-large batches).
    pub fn persisted(
        &mut self,
        _now_ms: u64,
        ack: PersistId,
        result: Result<(), ErrorCode>,
    ) -> Vec<Output> {
        let mut out = Vec::new();
        let Some(pc) = self.pending_commits.remove(&ack) else {
            // Answered already when its partition was unloaded.
            tracing::debug!(?ack, "persist acknowledgement for an unknown commit");
            return out;
        };
        let rid = pc.request_id;
        let response = match result {
            Ok(()) => {
                if let Some(g) = self.groups.get_mut(&pc.group_id) {
                    if g.incarnation == pc.incarnation {
                        for (tp, v) in pc.apply {
                            g.offsets.insert(tp, v);
                        }
                    }
                }
                pc.response
            }
            Err(error) => {
                let error = if error.is_ok() {
                    ErrorCode::UnknownServerError
                } else {
                    error
                };
                fail_commit(pc, error)
            }
        };
        respond(&mut out, rid, Response::OffsetCommit(response));
        self.check();
        out
    }

    /// Committed offsets of a group (admin path, lag), sorted by topic and
    /// partition; `None` for an unknown group.
    pub fn committed_offsets(&self, group_id: &str) -> Option<Vec<(String, i32, OffsetValue)>> {
        let g = self.groups.get(group_id)?;
        Some(
            g.offsets
                .iter()
                .map(|((t, p), v)| (t.clone(), *p, v.clone()))
                .collect(),
        )
    }

    /// Lag of every committed partition of a group; `high_watermark` looks up
    /// a partition's high watermark (`None` if unknown to the broker).
    pub fn group_lag(
        &self,
        group_id: &str,
        high_watermark: impl FnMut(&str, i32) -> Option<i64>,
    ) -> Option<Vec<crate::PartitionLag>> {
        let g = self.groups.get(group_id)?;
        Some(crate::compute_lag(
            g.offsets
                .iter()
                .map(|((t, p), v)| (t.as_str(), *p, v.offset)),
            high_watermark,
        ))
    }

    /// The state of a group (`Dead` if unknown).
    pub fn group_state(&self, group_id: &str) -> GroupState {
        self.groups
            .get(group_id)
            .map_or(GroupState::Dead, |g| g.state)
    }

    /// Number of groups held.
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// Current generation of a group.
    pub fn generation(&self, group_id: &str) -> Option<i32> {
        self.groups.get(group_id).map(|g| g.generation_id)
    }

    /// Checks every invariant; `Err` describes the first violation. Run after
    /// every call in debug builds; exposed for the server's own tests.
    pub fn check_invariants(&self) -> Result<(), String> {
        if self.pending_commits.len() > self.config.pending_commits_max {
            return Err("too many pending commits".into());
        }
        if self.groups.len() > self.config.groups_max {
            return Err("too many groups".into());
        }
        for (id, g) in &self.groups {
            if id != &g.id {
                return Err(format!("group {id} registered under another id"));
            }
            g.check_invariants(&self.config)?;
        }
        Ok(())
    }

    fn check(&self) {
        if cfg!(debug_assertions) {
            if let Err(e) = self.check_invariants() {
                panic!("coordinator invariant violated: {e}");
            }
        }
    }

    fn bump_incarnation(&mut self) -> u64 {
        let i = self.next_incarnation;
        self.next_incarnation += 1;
        i
    }

    /// Looks up a group, creating it (Empty) if allowed.
    fn get_or_create(&mut self, group_id: &str, now_ms: u64) -> Result<(), ErrorCode> {
        if self.groups.contains_key(group_id) {
            return Ok(());
        }
        if self.groups.len() >= self.config.groups_max {
            tracing::warn!(
                groups_max = self.config.groups_max,
                "coordinator full: refusing new group"
            );
            return Err(ErrorCode::CoordinatorNotAvailable);
        }
        let incarnation = self.bump_incarnation();
        self.groups.insert(
            group_id.to_owned(),
            Group::new(group_id.to_owned(), incarnation, now_ms),
        );
        Ok(())
    }

    fn join(&mut self, now_ms: u64, rid: RequestId, req: JoinGroupRequest, out: &mut Vec<Output>) {
        let fail = |out: &mut Vec<Output>, e: ErrorCode, member: &str| {
            respond(
                out,
                rid,
                Response::JoinGroup(JoinGroupResponse::error(e, member)),
            )
        };
        if req.group_id.is_empty() || req.group_id.len() > STRING_BYTES_MAX {
            return fail(out, ErrorCode::InvalidGroupId, &req.member_id);
        }
        let session = i64::from(req.session_timeout_ms);
        if session < i64::from(self.config.session_timeout_ms_min)
            || session > i64::from(self.config.session_timeout_ms_max)
        {
            return fail(out, ErrorCode::InvalidSessionTimeout, &req.member_id);
        }
        let too_long = [
            req.member_id.len(),
            req.client_id.len(),
            req.client_host.len(),
            req.protocol_type.len(),
            req.group_instance_id.as_ref().map_or(0, String::len),
        ]
        .into_iter()
        .chain(req.protocols.iter().map(|p| p.name.len()))
        .any(|l| l > STRING_BYTES_MAX);
        if too_long
            || req.protocol_type.is_empty()
            || req.protocols.is_empty()
            || req
                .protocols
                .iter()
                .any(|p| p.metadata.len() > u32::MAX as usize)
        {
            return fail(out, ErrorCode::InconsistentGroupProtocol, &req.member_id);
        }
        if !self.groups.contains_key(&req.group_id) {
            if !req.member_id.is_empty() {
                return fail(out, ErrorCode::UnknownMemberId, &req.member_id);
            }
            if let Err(e) = self.get_or_create(&req.group_id, now_ms) {
                return fail(out, e, &req.member_id);
            }
        }
        let cfg = &self.config;
        let ids = &mut self.ids;
        let Some(group) = self.groups.get_mut(&req.group_id) else {
            return fail(out, ErrorCode::CoordinatorNotAvailable, &req.member_id);
        };

        if req.member_id.is_empty() {
            let prefix = req.group_instance_id.as_deref().unwrap_or(&req.client_id);
            let mut new_id = ids.next(prefix);
            while group.contains_id(&new_id) {
                new_id = ids.next(prefix);
            }
            let known_static = req
                .group_instance_id
                .as_deref()
                .and_then(|i| group.member_by_instance(i))
                .map(|m| m.id.clone());
            if let Some(old_id) = known_static {
                if !group.supports_protocols(&req.protocol_type, &req.protocols, Some(&old_id)) {
                    return fail(out, ErrorCode::InconsistentGroupProtocol, &req.member_id);
                }
                tracing::debug!(group = %Untrusted(&group.id), old_id = %Untrusted(&old_id), new_id = %Untrusted(&new_id), "static member replaced");
                group.replace_static_member(cfg, now_ms, &old_id, new_id, &req, rid, out);
                return;
            }
            if !group.supports_protocols(&req.protocol_type, &req.protocols, None) {
                return fail(out, ErrorCode::InconsistentGroupProtocol, &req.member_id);
            }
            if group.is_full(cfg) {
                return fail(out, ErrorCode::GroupMaxSizeReached, &req.member_id);
            }
            if req.group_instance_id.is_none() && req.require_known_member_id {
                let deadline = now_ms.saturating_add(u64::try_from(session).unwrap_or(0));
                group.pending_members.insert(new_id.clone(), deadline);
                return fail(out, ErrorCode::MemberIdRequired, &new_id);
            }
            group.add_member_and_rebalance(cfg, now_ms, new_id, &req, rid, out);
            return;
        }

        // A member id was given.
        if group.pending_members.contains_key(&req.member_id) {
            if !group.supports_protocols(&req.protocol_type, &req.protocols, None) {
                return fail(out, ErrorCode::InconsistentGroupProtocol, &req.member_id);
            }
            group.pending_members.remove(&req.member_id);
            let id = req.member_id.clone();
            group.add_member_and_rebalance(cfg, now_ms, id, &req, rid, out);
            return;
        }
        if let Some(instance) = req.group_instance_id.as_deref() {
            match group.member_by_instance(instance) {
                None => return fail(out, ErrorCode::UnknownMemberId, &req.member_id),
                Some(m) if m.id != req.member_id => {
                    return fail(out, ErrorCode::FencedInstanceId, &req.member_id)
                }
                Some(_) => {}
            }
        }
        if !group.has_member(&req.member_id) {
            return fail(out, ErrorCode::UnknownMemberId, &req.member_id);
        }
        if !group.supports_protocols(&req.protocol_type, &req.protocols, Some(&req.member_id)) {
            return fail(out, ErrorCode::InconsistentGroupProtocol, &req.member_id);
        }
        let id = req.member_id.clone();
        group.join_known_member(cfg, now_ms, &id, &req, rid, out);
    }

    /// Validates member, instance and generation like Kafka's
    /// Heartbeat/SyncGroup/OffsetCommit paths.
    fn validate_member(
        group: &Group,
        member_id: &str,
        instance: Option<&str>,
        generation_id: i32,
    ) -> Result<(), ErrorCode> {
        if group.is_static_member_fenced(instance, member_id) {
            return Err(ErrorCode::FencedInstanceId);
        }
        if !group.has_member(member_id) {
            return Err(ErrorCode::UnknownMemberId);
        }
        if generation_id != group.generation_id {
            return Err(ErrorCode::IllegalGeneration);
        }
        Ok(())
    }

    fn sync(&mut self, now_ms: u64, rid: RequestId, req: SyncGroupRequest, out: &mut Vec<Output>) {
        let fail = |out: &mut Vec<Output>, e: ErrorCode| {
            respond(out, rid, Response::SyncGroup(SyncGroupResponse::error(e)))
        };
        if req.group_id.is_empty() {
            return fail(out, ErrorCode::InvalidGroupId);
        }
        let Some(group) = self.groups.get_mut(&req.group_id) else {
            return fail(out, ErrorCode::UnknownMemberId);
        };
        if let Err(e) = Self::validate_member(
            group,
            &req.member_id,
            req.group_instance_id.as_deref(),
            req.generation_id,
        ) {
            return fail(out, e);
        }
        let type_mismatch = req
            .protocol_type
            .as_ref()
            .is_some_and(|t| Some(t) != group.protocol_type.as_ref());
        let name_mismatch = req
            .protocol_name
            .as_ref()
            .is_some_and(|n| Some(n) != group.protocol_name.as_ref());
        if type_mismatch || name_mismatch {
            return fail(out, ErrorCode::InconsistentGroupProtocol);
        }
        group.sync(now_ms, req, rid, out);
    }

    fn heartbeat(&mut self, now_ms: u64, req: &HeartbeatRequest) -> ErrorCode {
        if req.group_id.is_empty() {
            return ErrorCode::InvalidGroupId;
        }
        let Some(group) = self.groups.get_mut(&req.group_id) else {
            return ErrorCode::UnknownMemberId;
        };
        if let Err(e) = Self::validate_member(
            group,
            &req.member_id,
            req.group_instance_id.as_deref(),
            req.generation_id,
        ) {
            return e;
        }
        group.touch(&req.member_id, now_ms);
        match group.state {
            GroupState::PreparingRebalance => ErrorCode::RebalanceInProgress,
            GroupState::CompletingRebalance | GroupState::Stable => ErrorCode::None,
            GroupState::Empty | GroupState::Dead => ErrorCode::UnknownMemberId,
        }
    }

    fn leave(
        &mut self,
        now_ms: u64,
        rid: RequestId,
        req: LeaveGroupRequest,
        out: &mut Vec<Output>,
    ) {
        if req.group_id.is_empty() {
            let resp = LeaveGroupResponse {
                error: ErrorCode::InvalidGroupId,
                members: Vec::new(),
            };
            return respond(out, rid, Response::LeaveGroup(resp));
        }
        let cfg = &self.config;
        let group = self.groups.get_mut(&req.group_id);
        let mut results = Vec::with_capacity(req.members.len());
        match group {
            None => {
                for m in req.members {
                    results.push(LeftMember {
                        member_id: m.member_id,
                        group_instance_id: m.group_instance_id,
                        error: ErrorCode::UnknownMemberId,
                    });
                }
            }
            Some(group) => {
                for m in req.members {
                    let error = Self::leave_one(cfg, now_ms, group, &m, out);
                    results.push(LeftMember {
                        member_id: m.member_id,
                        group_instance_id: m.group_instance_id,
                        error,
                    });
                }
            }
        }
        let resp = LeaveGroupResponse {
            error: ErrorCode::None,
            members: results,
        };
        respond(out, rid, Response::LeaveGroup(resp));
    }

    fn leave_one(
        cfg: &Config,
        now_ms: u64,
        group: &mut Group,
        leaving: &LeavingMember,
        out: &mut Vec<Output>,
    ) -> ErrorCode {
        let target = match leaving.group_instance_id.as_deref() {
            Some(instance) => match group.member_by_instance(instance) {
                None => return ErrorCode::UnknownMemberId,
                Some(m) if !leaving.member_id.is_empty() && m.id != leaving.member_id => {
                    return ErrorCode::FencedInstanceId
                }
                Some(m) => m.id.clone(),
            },
            None => {
                if group.pending_members.remove(&leaving.member_id).is_some() {
                    group.check_join_complete(now_ms, out);
                    return ErrorCode::None;
                }
                if !group.has_member(&leaving.member_id) {
                    return ErrorCode::UnknownMemberId;
                }
                leaving.member_id.clone()
            }
        };
        group.remove_member_and_update(cfg, now_ms, &target, ErrorCode::UnknownMemberId, out);
        ErrorCode::None
    }

    fn commit(
        &mut self,
        now_ms: u64,
        rid: RequestId,
        req: OffsetCommitRequest,
        out: &mut Vec<Output>,
    ) {
        let all = |e: ErrorCode, topics: &[TopicCommit]| OffsetCommitResponse {
            topics: topics
                .iter()
                .map(|t| TopicErrors {
                    topic: t.topic.clone(),
                    partitions: t.partitions.iter().map(|p| (p.partition, e)).collect(),
                })
                .collect(),
        };
        let group_error = self.validate_commit(now_ms, &req);
        if let Err(e) = group_error {
            return respond(out, rid, Response::OffsetCommit(all(e, &req.topics)));
        }
        let commit_ts = i64::try_from(now_ms).unwrap_or(i64::MAX);
        let mut response = all(ErrorCode::None, &req.topics);
        let mut apply = Vec::new();
        let mut accepted = Vec::new();
        for (ti, t) in req.topics.iter().enumerate() {
            for (pi, p) in t.partitions.iter().enumerate() {
                let metadata = p.metadata.clone().unwrap_or_default();
                let error = if metadata.len() > self.config.offset_metadata_bytes_max {
                    ErrorCode::OffsetMetadataTooLarge
                } else if t.topic.is_empty()
                    || t.topic.len() > STRING_BYTES_MAX
                    || metadata.len() > STRING_BYTES_MAX
                {
                    ErrorCode::InvalidCommitOffsetSize
                } else {
                    ErrorCode::None
                };
                response.topics[ti].partitions[pi].1 = error;
                if error.is_ok() {
                    accepted.push((ti, pi));
                    apply.push((
                        (t.topic.clone(), p.partition),
                        OffsetValue {
                            offset: p.offset,
                            leader_epoch: p.leader_epoch,
                            metadata,
                            commit_timestamp_ms: commit_ts,
                        },
                    ));
                }
            }
        }
        if apply.is_empty() {
            return respond(out, rid, Response::OffsetCommit(response));
        }
        if self.pending_commits.len() >= self.config.pending_commits_max {
            tracing::warn!("too many commits awaiting persistence");
            for (ti, pi) in accepted {
                response.topics[ti].partitions[pi].1 = ErrorCode::CoordinatorNotAvailable;
            }
            return respond(out, rid, Response::OffsetCommit(response));
        }
        let Some(group) = self.groups.get_mut(&req.group_id) else {
            return respond(
                out,
                rid,
                Response::OffsetCommit(all(ErrorCode::CoordinatorNotAvailable, &req.topics)),
            );
        };
        group.touch(&req.member_id, now_ms);
        let incarnation = group.incarnation;
        // A newer commit supersedes older in-flight ones for the same partitions.
        let tps: Vec<(String, i32)> = apply.iter().map(|(tp, _)| tp.clone()).collect();
        self.supersede(&req.group_id, |tp| tps.contains(tp));
        let ack = PersistId(self.next_persist_id);
        self.next_persist_id += 1;
        let records = apply
            .iter()
            .map(|((topic, partition), v)| Record::Offset {
                group_id: req.group_id.clone(),
                topic: topic.clone(),
                partition: *partition,
                value: Some(v.clone()),
            })
            .collect();
        out.push(Output::Persist(Persist {
            group_id: req.group_id.clone(),
            records,
            ack: Some(ack),
        }));
        self.pending_commits.insert(
            ack,
            PendingCommit {
                request_id: rid,
                group_id: req.group_id,
                incarnation,
                apply,
                response,
                accepted,
            },
        );
    }

    /// Kafka's `handleCommitOffsets`/`doCommitOffsets` validation.
    fn validate_commit(&mut self, now_ms: u64, req: &OffsetCommitRequest) -> Result<(), ErrorCode> {
        if req.group_id.is_empty() || req.group_id.len() > STRING_BYTES_MAX {
            return Err(ErrorCode::InvalidGroupId);
        }
        let Some(group) = self.groups.get(&req.group_id) else {
            if req.generation_id < 0 {
                // Simple (standalone) consumer: the group exists only to hold offsets.
                return self.get_or_create(&req.group_id, now_ms);
            }
            return Err(ErrorCode::IllegalGeneration);
        };
        if req.generation_id < 0 && group.state == GroupState::Empty {
            return Ok(());
        }
        Self::validate_member(
            group,
            &req.member_id,
            req.group_instance_id.as_deref(),
            req.generation_id,
        )?;
        match group.state {
            GroupState::Stable | GroupState::PreparingRebalance => Ok(()),
            GroupState::CompletingRebalance => Err(ErrorCode::RebalanceInProgress),
            GroupState::Empty | GroupState::Dead => Err(ErrorCode::UnknownMemberId),
        }
    }

    /// Drops in-flight commits of `group_id` for partitions matching `pred`
    /// (a later record for them is already on its way to the log).
    fn supersede(&mut self, group_id: &str, pred: impl Fn(&(String, i32)) -> bool) {
        for pc in self.pending_commits.values_mut() {
            if pc.group_id == group_id {
                pc.apply.retain(|(tp, _)| !pred(tp));
            }
        }
    }

    fn fetch(&self, req: &OffsetFetchRequest) -> OffsetFetchResponse {
        if req.group_id.is_empty() {
            return OffsetFetchResponse {
                error: ErrorCode::InvalidGroupId,
                topics: Vec::new(),
            };
        }
        let group = self.groups.get(&req.group_id);
        let fetched = |topic: &str, partition: i32| {
            let v = group.and_then(|g| g.offsets.get(&(topic.to_owned(), partition)));
            FetchedPartition {
                partition,
                committed_offset: v.map_or(-1, |v| v.offset),
                leader_epoch: v.map_or(-1, |v| v.leader_epoch),
                metadata: v.map(|v| v.metadata.clone()).unwrap_or_default(),
                error: ErrorCode::None,
            }
        };
        let topics = match &req.topics {
            Some(list) => list
                .iter()
                .map(|t| FetchedTopic {
                    topic: t.topic.clone(),
                    partitions: t.partitions.iter().map(|p| fetched(&t.topic, *p)).collect(),
                })
                .collect(),
            None => {
                let mut topics: Vec<FetchedTopic> = Vec::new();
                if let Some(g) = group {
                    for (topic, partition) in g.offsets.keys() {
                        if topics.last().is_none_or(|t| &t.topic != topic) {
                            topics.push(FetchedTopic {
                                topic: topic.clone(),
                                partitions: Vec::new(),
                            });
                        }
                        if let Some(t) = topics.last_mut() {
                            t.partitions.push(fetched(topic, *partition));
                        }
                    }
                }
                topics
            }
        };
        OffsetFetchResponse {
            error: ErrorCode::None,
            topics,
        }
    }

    fn list(&self, req: &ListGroupsRequest) -> ListGroupsResponse {
        // KIP-848's types filter names group types; every group here is "classic".
        let classic_wanted = req.types_filter.is_empty()
            || req
                .types_filter
                .iter()
                .any(|t| t.eq_ignore_ascii_case("classic"));
        let groups = if classic_wanted {
            self.groups
                .values()
                .filter(|g| req.states_filter.is_empty() || req.states_filter.contains(&g.state))
                .map(|g| ListedGroup {
                    group_id: g.id.clone(),
                    protocol_type: g.protocol_type.clone().unwrap_or_default(),
                    state: g.state,
                })
                .collect()
        } else {
            Vec::new()
        };
        ListGroupsResponse {
            error: ErrorCode::None,
            groups,
        }
    }

    fn describe(&self, group_id: &str) -> DescribedGroup {
        let mut d = DescribedGroup {
            error: ErrorCode::None,
            group_id: group_id.to_owned(),
            state: GroupState::Dead,
            protocol_type: String::new(),
            protocol_data: String::new(),
            members: Vec::new(),
        };
        if group_id.is_empty() {
            d.error = ErrorCode::InvalidGroupId;
            return d;
        }
        let Some(g) = self.groups.get(group_id) else {
            return d;
        };
        let stable = g.state == GroupState::Stable;
        d.state = g.state;
        d.protocol_type = g.protocol_type.clone().unwrap_or_default();
        if stable {
            d.protocol_data = g.protocol_name.clone().unwrap_or_default();
        }
        d.members = g
            .members
            .iter()
            .map(|m| DescribedMember {
                member_id: m.id.clone(),
                group_instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: if stable {
                    g.protocol_name
                        .as_deref()
                        .and_then(|p| m.protocols.iter().find(|q| q.name == p))
                        .map(|q| q.metadata.clone())
                        .unwrap_or_default()
                } else {
                    Default::default()
                },
                assignment: if stable {
                    m.assignment.clone().unwrap_or_default()
                } else {
                    Default::default()
                },
            })
            .collect();
        d
    }

    fn delete_group(&mut self, group_id: &str, out: &mut Vec<Output>) -> ErrorCode {
        if group_id.is_empty() {
            return ErrorCode::InvalidGroupId;
        }
        let Some(group) = self.groups.get(group_id) else {
            return ErrorCode::GroupIdNotFound;
        };
        if group.state != GroupState::Empty {
            return ErrorCode::NonEmptyGroup;
        }
        let Some(group) = self.groups.remove(group_id) else {
            return ErrorCode::GroupIdNotFound;
        };
        tracing::debug!(group = %Untrusted(group_id), "group deleted");
        // In-flight commits may still land in the log before these tombstones:
        // delete their partitions too, and keep them from applying in memory.
        let mut doomed: Vec<(String, i32)> = group.offsets.keys().cloned().collect();
        for pc in self.pending_commits.values() {
            if pc.group_id == group_id {
                doomed.extend(pc.apply.iter().map(|(tp, _)| tp.clone()));
            }
        }
        doomed.sort();
        doomed.dedup();
        self.supersede(group_id, |_| true);
        let records = tombstones(&group, doomed);
        if !records.is_empty() {
            out.push(Output::Persist(Persist {
                group_id: group_id.to_owned(),
                records,
                ack: None,
            }));
        }
        // Anyone still holding a MEMBER_ID_REQUIRED id will get UNKNOWN_MEMBER_ID.
        ErrorCode::None
    }

    fn offset_delete(&mut self, rid: RequestId, req: OffsetDeleteRequest, out: &mut Vec<Output>) {
        let reply = |out: &mut Vec<Output>, error: ErrorCode, topics: Vec<TopicErrors>| {
            respond(
                out,
                rid,
                Response::OffsetDelete(OffsetDeleteResponse { error, topics }),
            )
        };
        if req.group_id.is_empty() {
            return reply(out, ErrorCode::InvalidGroupId, Vec::new());
        }
        let Some(group) = self.groups.get_mut(&req.group_id) else {
            return reply(out, ErrorCode::GroupIdNotFound, Vec::new());
        };
        // `Some(set)`: the subscribed topics; `None`: unknown, so every topic
        // counts as subscribed.
        let subscribed = match group.state {
            GroupState::Empty => Some(Default::default()),
            _ if group.protocol_type.as_deref() == Some("consumer") => group.subscribed_topics(),
            _ => return reply(out, ErrorCode::NonEmptyGroup, Vec::new()),
        };
        let mut results = Vec::with_capacity(req.topics.len());
        let mut deleted = Vec::new();
        for t in &req.topics {
            let is_subscribed = subscribed.as_ref().is_none_or(|set| set.contains(&t.topic));
            let error = if is_subscribed {
                ErrorCode::GroupSubscribedToTopic
            } else {
                ErrorCode::None
            };
            if error.is_ok() {
                for p in &t.partitions {
                    group.offsets.remove(&(t.topic.clone(), *p));
                    deleted.push((t.topic.clone(), *p));
                }
            }
            results.push(TopicErrors {
                topic: t.topic.clone(),
                partitions: t.partitions.iter().map(|p| (*p, error)).collect(),
            });
        }
        if !deleted.is_empty() {
            let records = deleted
                .iter()
                .map(|(topic, partition)| Record::Offset {
                    group_id: req.group_id.clone(),
                    topic: topic.clone(),
                    partition: *partition,
                    value: None,
                })
                .collect();
            out.push(Output::Persist(Persist {
                group_id: req.group_id.clone(),
                records,
                ack: None,
            }));
            self.supersede(&req.group_id, |tp| deleted.contains(tp));
        }
        reply(out, ErrorCode::None, results);
    }

    /// KIP-211 offset retention, then removal of Empty groups without offsets.
    fn expire_offsets(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        let retention_ms = self.config.offsets_retention_ms;
        let busy: std::collections::BTreeSet<String> = self
            .pending_commits
            .values()
            .map(|pc| pc.group_id.clone())
            .collect();
        let mut dead = Vec::new();
        for g in self.groups.values_mut() {
            if busy.contains(&g.id) {
                continue;
            }
            let old = |commit_ts: i64| {
                now_ms.saturating_sub(u64::try_from(commit_ts).unwrap_or(0)) >= retention_ms
            };
            let expired: Vec<(String, i32)> = match (g.protocol_type.as_deref(), g.state) {
                (Some(_), GroupState::Empty) => {
                    if now_ms.saturating_sub(g.state_timestamp_ms) >= retention_ms {
                        g.offsets.keys().cloned().collect()
                    } else {
                        Vec::new()
                    }
                }
                (None, _) => g
                    .offsets
                    .iter()
                    .filter(|(_, v)| old(v.commit_timestamp_ms))
                    .map(|(tp, _)| tp.clone())
                    .collect(),
                (Some("consumer"), GroupState::Stable) => match g.subscribed_topics() {
                    Some(subscribed) => g
                        .offsets
                        .iter()
                        .filter(|((t, _), v)| !subscribed.contains(t) && old(v.commit_timestamp_ms))
                        .map(|(tp, _)| tp.clone())
                        .collect(),
                    None => Vec::new(),
                },
                _ => Vec::new(),
            };
            for tp in &expired {
                g.offsets.remove(tp);
            }
            let now_dead = g.state == GroupState::Empty
                && g.members.is_empty()
                && g.pending_members.is_empty()
                && g.offsets.is_empty();
            let records = if now_dead {
                tombstones(g, expired)
            } else {
                expired
                    .into_iter()
                    .map(|(topic, partition)| Record::Offset {
                        group_id: g.id.clone(),
                        topic,
                        partition,
                        value: None,
                    })
                    .collect()
            };
            if !records.is_empty() {
                tracing::debug!(group = %Untrusted(&g.id), records = records.len(), dead = now_dead, "offsets expired");
                out.push(Output::Persist(Persist {
                    group_id: g.id.clone(),
                    records,
                    ack: None,
                }));
            }
            if now_dead {
                dead.push(g.id.clone());
            }
        }
        for id in dead {
            // Empty ──▶ Dead: the group disappears.
            self.groups.remove(&id);
        }
    }
}

/// Tombstones for a group that goes Dead: its metadata (if it was ever
/// written) and the given offsets.
fn tombstones(group: &Group, offsets: Vec<(String, i32)>) -> Vec<Record> {
    let mut records: Vec<Record> = offsets
        .into_iter()
        .map(|(topic, partition)| Record::Offset {
            group_id: group.id.clone(),
            topic,
            partition,
            value: None,
        })
        .collect();
    if group.persisted.is_some() {
        records.push(Record::GroupMetadata {
            group_id: group.id.clone(),
            value: None,
        });
    }
    records
}

/// Applies one replayed record to `groups` (the served groups, or a loading partition's).
fn apply_record(groups: &mut BTreeMap<String, Group>, next_incarnation: &mut u64, record: Record) {
    let group_id = record.group_id().to_owned();
    if !groups.contains_key(&group_id) {
        if record.is_tombstone() {
            return;
        }
        let incarnation = *next_incarnation;
        *next_incarnation += 1;
        groups.insert(
            group_id.clone(),
            Group::new(group_id.clone(), incarnation, 0),
        );
    }
    let Some(group) = groups.get_mut(&group_id) else {
        return;
    };
    match record {
        Record::Offset {
            topic,
            partition,
            value,
            ..
        } => match value {
            Some(v) => {
                group.offsets.insert((topic, partition), v);
            }
            None => {
                group.offsets.remove(&(topic, partition));
            }
        },
        Record::GroupMetadata { value, .. } => match value {
            Some(v) => group.apply_metadata(v),
            None => {
                let offsets = std::mem::take(&mut group.offsets);
                let incarnation = group.incarnation;
                *group = Group::new(group_id.clone(), incarnation, 0);
                group.offsets = offsets;
            }
        },
    }
    if group.persisted.is_none() && group.offsets.is_empty() {
        groups.remove(&group_id);
    }
}

/// The answer of a pending OffsetCommit whose append failed: `error` in every accepted slot.
fn fail_commit(mut pc: PendingCommit, error: ErrorCode) -> OffsetCommitResponse {
    for (t, p) in &pc.accepted {
        if let Some(slot) = pc
            .response
            .topics
            .get_mut(*t)
            .and_then(|topic| topic.partitions.get_mut(*p))
        {
            slot.1 = error;
        }
    }
    pc.response
}

/// The error answer for any request (used while loading).
pub fn error_response(request: &Request, error: ErrorCode) -> Response {
    let topic_errors = |topics: Vec<(String, Vec<i32>)>| {
        topics
            .into_iter()
            .map(|(topic, ps)| TopicErrors {
                topic,
                partitions: ps.into_iter().map(|p| (p, error)).collect(),
            })
            .collect()
    };
    match request {
        Request::JoinGroup(r) => Response::JoinGroup(JoinGroupResponse::error(error, &r.member_id)),
        Request::SyncGroup(_) => Response::SyncGroup(SyncGroupResponse::error(error)),
        Request::Heartbeat(_) => Response::Heartbeat(error),
        Request::LeaveGroup(_) => Response::LeaveGroup(LeaveGroupResponse {
            error,
            members: Vec::new(),
        }),
        Request::OffsetCommit(r) => Response::OffsetCommit(OffsetCommitResponse {
            topics: topic_errors(
                r.topics
                    .iter()
                    .map(|t| {
                        (
                            t.topic.clone(),
                            t.partitions.iter().map(|p| p.partition).collect(),
                        )
                    })
                    .collect(),
            ),
        }),
        Request::OffsetFetch(_) => Response::OffsetFetch(OffsetFetchResponse {
            error,
            topics: Vec::new(),
        }),
        Request::ListGroups(_) => Response::ListGroups(ListGroupsResponse {
            error,
            groups: Vec::new(),
        }),
        Request::DescribeGroups(ids) => Response::DescribeGroups(
            ids.iter()
                .map(|id| DescribedGroup {
                    error,
                    group_id: id.clone(),
                    state: GroupState::Dead,
                    protocol_type: String::new(),
                    protocol_data: String::new(),
                    members: Vec::new(),
                })
                .collect(),
        ),
        Request::DeleteGroups(ids) => {
            Response::DeleteGroups(ids.iter().map(|id| (id.clone(), error)).collect())
        }
        Request::OffsetDelete(_) => Response::OffsetDelete(OffsetDeleteResponse {
            error,
            topics: Vec::new(),
        }),
    }
}
