//! One group's state and the classic rebalance protocol's transitions.
//!
//! Everything here is synchronous and time-free: callers pass `now_ms` and a
//! `Vec<Output>` to append responses and persist actions to. The
//! [`crate::GroupCoordinator`] owns the groups and routes requests; this module
//! owns the per-group rules (who may join, when a generation completes, who
//! gets fenced).
//!
//! State diagram (Kafka's `GroupMetadata`):
//!
//! ```text
//!          join                all joined / timeout          leader SyncGroup
//! Empty ─────────▶ PreparingRebalance ─────────▶ CompletingRebalance ─────────▶ Stable
//!   ▲                  ▲   │ (no member left)          │ member change/expiry      │
//!   └──────────────────┼───┘                           ▼                           │
//!                      └──────────────────────── PreparingRebalance ◀──────────────┘
//!  Empty + no offsets ──▶ Dead (removed from the coordinator at once)
//! ```

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use crate::error::ErrorCode;
use crate::record::{GroupMetadataValue, MemberRecord, OffsetValue, Record};
use crate::types::*;
use crate::untrusted::Untrusted;
use crate::Config;

/// A member of a group.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: u64,
    pub rebalance_timeout_ms: u64,
    /// Supported protocols in preference order.
    pub protocols: Vec<Protocol>,
    /// Set by the leader's SyncGroup; `None` until then in each generation.
    pub assignment: Option<Bytes>,
    /// A JoinGroup waiting for the rebalance to complete.
    pub awaiting_join: Option<RequestId>,
    /// A SyncGroup waiting for the leader's assignment.
    pub awaiting_sync: Option<RequestId>,
    pub last_heartbeat_ms: u64,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Option<&Bytes> {
        self.protocols
            .iter()
            .find(|p| p.name == protocol)
            .map(|p| &p.metadata)
    }

    /// Session deadline, or `None` while the member is parked in a join or
    /// sync (those are bounded by the rebalance/sync deadlines instead, like
    /// Kafka's `shouldKeepAlive`).
    pub fn session_deadline_ms(&self) -> Option<u64> {
        if self.awaiting_join.is_some() || self.awaiting_sync.is_some() {
            None
        } else {
            Some(
                self.last_heartbeat_ms
                    .saturating_add(self.session_timeout_ms),
            )
        }
    }
}

/// Bookkeeping of the initial rebalance delay (Kafka's `InitialDelayedJoin`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct InitialJoin {
    pub remaining_ms: u64,
    pub new_member_added: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub id: String,
    /// Distinguishes a re-created group from an earlier one with the same id.
    pub incarnation: u64,
    pub state: GroupState,
    pub state_timestamp_ms: u64,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub generation_id: i32,
    pub leader: Option<String>,
    /// In join order.
    pub members: Vec<Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with their deadlines.
    pub pending_members: BTreeMap<String, u64>,
    /// Deadline of the current join phase (PreparingRebalance only).
    pub join_deadline_ms: Option<u64>,
    pub initial_join: Option<InitialJoin>,
    /// Members that got a JoinGroup response but have not sent SyncGroup.
    pub pending_sync: BTreeSet<String>,
    pub sync_deadline_ms: Option<u64>,
    pub offsets: BTreeMap<(String, i32), OffsetValue>,
    /// The last group metadata value handed out (or replayed): what the log says.
    pub persisted: Option<GroupMetadataValue>,
}

pub(crate) fn respond(out: &mut Vec<Output>, request_id: RequestId, response: Response) {
    out.push(Output::Respond {
        request_id,
        response,
    });
}

impl Group {
    pub fn new(id: String, incarnation: u64, now_ms: u64) -> Group {
        Group {
            id,
            incarnation,
            state: GroupState::Empty,
            state_timestamp_ms: now_ms,
            protocol_type: None,
            protocol_name: None,
            generation_id: 0,
            leader: None,
            members: Vec::new(),
            pending_members: BTreeMap::new(),
            join_deadline_ms: None,
            initial_join: None,
            pending_sync: BTreeSet::new(),
            sync_deadline_ms: None,
            offsets: BTreeMap::new(),
            persisted: None,
        }
    }

    pub fn member(&self, id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    fn member_mut(&mut self, id: &str) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.id == id)
    }

    pub fn has_member(&self, id: &str) -> bool {
        self.member(id).is_some()
    }

    pub fn member_by_instance(&self, instance: &str) -> Option<&Member> {
        self.members
            .iter()
            .find(|m| m.instance_id.as_deref() == Some(instance))
    }

    /// KIP-345: a request naming a known instance id with another member id
    /// comes from a replaced (zombie) member.
    pub fn is_static_member_fenced(&self, instance: Option<&str>, member_id: &str) -> bool {
        match instance.and_then(|i| self.member_by_instance(i)) {
            Some(m) => m.id != member_id,
            None => false,
        }
    }

    pub fn is_full(&self, cfg: &Config) -> bool {
        self.members.len() + self.pending_members.len() >= cfg.members_per_group_max
    }

    pub fn contains_id(&self, id: &str) -> bool {
        self.has_member(id) || self.pending_members.contains_key(id)
    }

    /// Largest rebalance timeout among members (Kafka's `rebalanceTimeoutMs`).
    pub fn rebalance_timeout_ms(&self) -> u64 {
        self.members
            .iter()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0)
    }

    /// Would a member with these protocols fit the group? `except` excludes the
    /// joining member's own stale entry.
    pub fn supports_protocols(
        &self,
        protocol_type: &str,
        protocols: &[Protocol],
        except: Option<&str>,
    ) -> bool {
        if protocol_type.is_empty() || protocols.is_empty() {
            return false;
        }
        let others: Vec<&Member> = self
            .members
            .iter()
            .filter(|m| Some(m.id.as_str()) != except)
            .collect();
        if others.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        protocols.iter().any(|p| {
            others
                .iter()
                .all(|m| m.protocols.iter().any(|q| q.name == p.name))
        })
    }

    /// Kafka's `selectProtocol`: among the protocols every member supports,
    /// each member votes for its most preferred one; most votes wins, ties go
    /// to the earliest in the first member's (join order) preference list.
    pub fn select_protocol(&self) -> Option<String> {
        let first = self.members.first()?;
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|p| p.name.as_str())
            .filter(|name| {
                self.members
                    .iter()
                    .all(|m| m.protocols.iter().any(|q| q.name == *name))
            })
            .collect();
        let mut votes = vec![0usize; candidates.len()];
        for m in &self.members {
            if let Some(choice) = m
                .protocols
                .iter()
                .find_map(|p| candidates.iter().position(|c| *c == p.name))
            {
                votes[choice] += 1;
            }
        }
        let mut best: Option<usize> = None;
        for (i, v) in votes.iter().enumerate() {
            if best.is_none_or(|b| *v > votes[b]) {
                best = Some(i);
            }
        }
        best.map(|i| candidates[i].to_owned())
    }

    /// Topics the members subscribe to, when the group uses the consumer
    /// protocol and every subscription parses; `None` means "unknown" (treat
    /// every topic as subscribed).
    pub fn subscribed_topics(&self) -> Option<BTreeSet<String>> {
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let protocol = self.protocol_name.as_deref()?;
        let mut topics = BTreeSet::new();
        for m in &self.members {
            let meta = m.metadata_for(protocol)?;
            topics.extend(crate::consumer::subscription_topics(meta)?);
        }
        Some(topics)
    }

    pub fn metadata_value(&self) -> GroupMetadataValue {
        let protocol = self.protocol_name.as_deref();
        GroupMetadataValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation_id: self.generation_id,
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone(),
            state_timestamp_ms: i64::try_from(self.state_timestamp_ms).unwrap_or(i64::MAX),
            members: self
                .members
                .iter()
                .map(|m| MemberRecord {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: i32::try_from(m.rebalance_timeout_ms).unwrap_or(i32::MAX),
                    session_timeout_ms: i32::try_from(m.session_timeout_ms).unwrap_or(i32::MAX),
                    subscription: protocol
                        .and_then(|p| m.metadata_for(p).cloned())
                        .unwrap_or_default(),
                    assignment: m.assignment.clone().unwrap_or_default(),
                })
                .collect(),
        }
    }

    /// Emits the group's metadata record (fire and forget).
    pub fn persist_metadata(&mut self, out: &mut Vec<Output>) {
        let value = self.metadata_value();
        self.persisted = Some(value.clone());
        out.push(Output::Persist(Persist {
            group_id: self.id.clone(),
            records: vec![Record::GroupMetadata {
                group_id: self.id.clone(),
                value: Some(value),
            }],
            ack: None,
        }));
    }

    fn transition(&mut self, state: GroupState, now_ms: u64) {
        tracing::debug!(group = %Untrusted(&self.id), from = ?self.state, to = ?state, "group state transition");
        self.state = state;
        self.state_timestamp_ms = now_ms;
    }

    /// The JoinGroup answer for `member_id` in the current generation.
    pub fn join_response(&self, member_id: &str, include_members: bool) -> JoinGroupResponse {
        let protocol = self.protocol_name.clone();
        let members = if include_members {
            self.members
                .iter()
                .map(|m| JoinGroupMember {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    metadata: protocol
                        .as_deref()
                        .and_then(|p| m.metadata_for(p).cloned())
                        .unwrap_or_default(),
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinGroupResponse {
            error: ErrorCode::None,
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: protocol,
            leader: self.leader.clone().unwrap_or_default(),
            skip_assignment: false,
            member_id: member_id.to_owned(),
            members,
        }
    }

    fn is_leader(&self, member_id: &str) -> bool {
        self.leader.as_deref() == Some(member_id)
    }

    /// Adds a new member that is waiting in a JoinGroup, and rebalances.
    pub fn add_member_and_rebalance(
        &mut self,
        cfg: &Config,
        now_ms: u64,
        member_id: String,
        req: &JoinGroupRequest,
        request_id: RequestId,
        out: &mut Vec<Output>,
    ) {
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        if self.leader.is_none() {
            self.leader = Some(member_id.clone());
        }
        self.members.push(Member {
            id: member_id,
            instance_id: req.group_instance_id.clone(),
            client_id: req.client_id.clone(),
            client_host: req.client_host.clone(),
            session_timeout_ms: timeout_ms(req.session_timeout_ms),
            rebalance_timeout_ms: rebalance_timeout_of(req),
            protocols: req.protocols.clone(),
            assignment: None,
            awaiting_join: Some(request_id),
            awaiting_sync: None,
            last_heartbeat_ms: now_ms,
        });
        if let Some(initial) = self.initial_join.as_mut() {
            initial.new_member_added = true;
        }
        self.maybe_prepare_rebalance(cfg, now_ms, out);
        self.check_join_complete(now_ms, out);
    }

    /// Updates a known member's protocols and parks its JoinGroup.
    pub fn update_member(
        &mut self,
        member_id: &str,
        req: &JoinGroupRequest,
        request_id: RequestId,
        out: &mut Vec<Output>,
    ) {
        let Some(m) = self.member_mut(member_id) else {
            return;
        };
        m.protocols = req.protocols.clone();
        m.session_timeout_ms = timeout_ms(req.session_timeout_ms);
        m.rebalance_timeout_ms = rebalance_timeout_of(req);
        if let Some(old) = m.awaiting_join.replace(request_id) {
            // A resent JoinGroup supersedes the earlier one: answer it so the
            // server does not keep it forever.
            respond(
                out,
                old,
                Response::JoinGroup(JoinGroupResponse::error(
                    ErrorCode::RebalanceInProgress,
                    member_id,
                )),
            );
        }
    }

    /// Starts a rebalance unless one is already being prepared.
    pub fn maybe_prepare_rebalance(&mut self, cfg: &Config, now_ms: u64, out: &mut Vec<Output>) {
        if matches!(
            self.state,
            GroupState::Empty | GroupState::Stable | GroupState::CompletingRebalance
        ) {
            self.prepare_rebalance(cfg, now_ms, out);
        }
    }

    fn prepare_rebalance(&mut self, cfg: &Config, now_ms: u64, out: &mut Vec<Output>) {
        // Members waiting for an assignment of the generation being abandoned
        // must rejoin.
        for m in &mut self.members {
            if self.state == GroupState::CompletingRebalance {
                m.assignment = None;
            }
            if let Some(rid) = m.awaiting_sync.take() {
                respond(
                    out,
                    rid,
                    Response::SyncGroup(SyncGroupResponse::error(ErrorCode::RebalanceInProgress)),
                );
            }
        }
        self.pending_sync.clear();
        self.sync_deadline_ms = None;
        let rebalance_timeout_ms = self.rebalance_timeout_ms();
        if self.state == GroupState::Empty && cfg.initial_rebalance_delay_ms > 0 {
            let delay_ms = cfg.initial_rebalance_delay_ms;
            self.initial_join = Some(InitialJoin {
                remaining_ms: rebalance_timeout_ms.saturating_sub(delay_ms),
                new_member_added: false,
            });
            self.join_deadline_ms = Some(now_ms.saturating_add(delay_ms));
        } else {
            self.initial_join = None;
            self.join_deadline_ms = Some(now_ms.saturating_add(rebalance_timeout_ms));
        }
        self.transition(GroupState::PreparingRebalance, now_ms);
        // Like Kafka's tryCompleteElseWatch: everyone may already be in.
        self.check_join_complete(now_ms, out);
    }

    /// Completes the join phase early once every member has rejoined (not
    /// during the initial delay, which always runs its course).
    pub fn check_join_complete(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        if self.state == GroupState::PreparingRebalance
            && self.initial_join.is_none()
            && self.pending_members.is_empty()
            && self.members.iter().all(|m| m.awaiting_join.is_some())
        {
            self.complete_join(now_ms, out);
        }
    }

    /// The join deadline passed.
    pub fn on_join_deadline(&mut self, cfg: &Config, now_ms: u64, out: &mut Vec<Output>) {
        if let Some(initial) = self.initial_join {
            if initial.new_member_added && initial.remaining_ms > 0 {
                let delay_ms = cfg.initial_rebalance_delay_ms.min(initial.remaining_ms);
                self.initial_join = Some(InitialJoin {
                    remaining_ms: initial.remaining_ms - delay_ms,
                    new_member_added: false,
                });
                self.join_deadline_ms = Some(now_ms.saturating_add(delay_ms));
                return;
            }
        }
        self.complete_join(now_ms, out);
    }

    /// Kafka's `onCompleteJoin`: drop members that did not rejoin, start the
    /// next generation and answer every parked JoinGroup.
    fn complete_join(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        debug_assert_eq!(self.state, GroupState::PreparingRebalance);
        self.initial_join = None;
        self.join_deadline_ms = None;
        let before = self.members.len();
        self.members.retain(|m| m.awaiting_join.is_some());
        if self.members.len() != before {
            tracing::debug!(group = %Untrusted(&self.id), removed = before - self.members.len(), "members did not rejoin in time");
        }
        if !self
            .leader
            .as_deref()
            .is_some_and(|l| self.members.iter().any(|m| m.id == l))
        {
            self.leader = self.members.first().map(|m| m.id.clone());
        }
        self.generation_id = self.generation_id.wrapping_add(1).max(1);
        if self.members.is_empty() {
            self.protocol_name = None;
            self.transition(GroupState::Empty, now_ms);
            self.persist_metadata(out);
            return;
        }
        self.protocol_name = self.select_protocol();
        self.transition(GroupState::CompletingRebalance, now_ms);
        let leader = self.leader.clone().unwrap_or_default();
        let responses: Vec<(RequestId, JoinGroupResponse)> = self
            .members
            .iter()
            .filter_map(|m| {
                m.awaiting_join
                    .map(|rid| (rid, self.join_response(&m.id, m.id == leader)))
            })
            .collect();
        for m in &mut self.members {
            m.awaiting_join = None;
            m.assignment = None;
            m.last_heartbeat_ms = now_ms;
        }
        for (rid, resp) in responses {
            respond(out, rid, Response::JoinGroup(resp));
        }
        self.pending_sync = self.members.iter().map(|m| m.id.clone()).collect();
        self.sync_deadline_ms = Some(now_ms.saturating_add(self.rebalance_timeout_ms()));
    }

    /// Removes a member (leave, session expiry) and reacts like Kafka's
    /// `removeMemberAndUpdateGroup`.
    pub fn remove_member_and_update(
        &mut self,
        cfg: &Config,
        now_ms: u64,
        member_id: &str,
        error: ErrorCode,
        out: &mut Vec<Output>,
    ) {
        self.remove_member(member_id, error, out);
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(cfg, now_ms, out)
            }
            GroupState::PreparingRebalance => self.check_join_complete(now_ms, out),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// Removes a member, answering its parked requests with `error`.
    fn remove_member(&mut self, member_id: &str, error: ErrorCode, out: &mut Vec<Output>) {
        let Some(pos) = self.members.iter().position(|m| m.id == member_id) else {
            return;
        };
        let m = self.members.remove(pos);
        if let Some(rid) = m.awaiting_join {
            respond(
                out,
                rid,
                Response::JoinGroup(JoinGroupResponse::error(error, member_id)),
            );
        }
        if let Some(rid) = m.awaiting_sync {
            respond(
                out,
                rid,
                Response::SyncGroup(SyncGroupResponse::error(error)),
            );
        }
        self.pending_sync.remove(member_id);
        if self.is_leader(member_id) {
            self.leader = self.members.first().map(|m| m.id.clone());
        }
    }

    /// A static member rejoined with an unknown member id: the new member id
    /// replaces the old one (KIP-345). The old id's parked requests are fenced.
    /// Returns the member's new id.
    #[allow(clippy::too_many_arguments)]
    pub fn replace_static_member(
        &mut self,
        cfg: &Config,
        now_ms: u64,
        old_id: &str,
        new_id: String,
        req: &JoinGroupRequest,
        request_id: RequestId,
        out: &mut Vec<Output>,
    ) {
        let was_leader = self.is_leader(old_id);
        let selected = self.protocol_name.clone();
        let Some(m) = self.member_mut(old_id) else {
            return;
        };
        let old_metadata = selected.as_deref().and_then(|p| m.metadata_for(p).cloned());
        if let Some(rid) = m.awaiting_join.take() {
            respond(
                out,
                rid,
                Response::JoinGroup(JoinGroupResponse::error(
                    ErrorCode::FencedInstanceId,
                    old_id,
                )),
            );
        }
        if let Some(rid) = m.awaiting_sync.take() {
            respond(
                out,
                rid,
                Response::SyncGroup(SyncGroupResponse::error(ErrorCode::FencedInstanceId)),
            );
        }
        m.id = new_id.clone();
        m.client_id = req.client_id.clone();
        m.client_host = req.client_host.clone();
        m.protocols = req.protocols.clone();
        m.session_timeout_ms = timeout_ms(req.session_timeout_ms);
        m.rebalance_timeout_ms = rebalance_timeout_of(req);
        m.last_heartbeat_ms = now_ms;
        let new_metadata = selected.as_deref().and_then(|p| m.metadata_for(p).cloned());
        if was_leader {
            self.leader = Some(new_id.clone());
        }
        if self.pending_sync.remove(old_id) {
            self.pending_sync.insert(new_id.clone());
        }
        match self.state {
            GroupState::Stable
                if self.select_protocol() == selected && old_metadata == new_metadata =>
            {
                // Nothing the leader assigned from changed: keep the
                // generation, persist the new member id, answer at once.
                self.persist_metadata(out);
                let mut resp = self.join_response(&new_id, was_leader);
                resp.skip_assignment = was_leader;
                respond(out, request_id, Response::JoinGroup(resp));
            }
            GroupState::PreparingRebalance => {
                if let Some(m) = self.member_mut(&new_id) {
                    m.awaiting_join = Some(request_id);
                }
                self.check_join_complete(now_ms, out);
            }
            _ => {
                // Stable with changed metadata or protocol, or
                // CompletingRebalance (the leader may be assigning to the old
                // id): rebalance.
                if let Some(m) = self.member_mut(&new_id) {
                    m.awaiting_join = Some(request_id);
                }
                self.prepare_rebalance(cfg, now_ms, out);
            }
        }
    }

    /// JoinGroup from a member the group already knows.
    pub fn join_known_member(
        &mut self,
        cfg: &Config,
        now_ms: u64,
        member_id: &str,
        req: &JoinGroupRequest,
        request_id: RequestId,
        out: &mut Vec<Output>,
    ) {
        let Some(m) = self.member(member_id) else {
            return;
        };
        let unchanged = m.protocols == req.protocols;
        match self.state {
            GroupState::PreparingRebalance => {
                self.update_member(member_id, req, request_id, out);
                self.check_join_complete(now_ms, out);
            }
            GroupState::CompletingRebalance if unchanged => {
                // The member lost its JoinGroup response: send it again.
                let resp = self.join_response(member_id, self.is_leader(member_id));
                respond(out, request_id, Response::JoinGroup(resp));
            }
            GroupState::Stable if unchanged && !self.is_leader(member_id) => {
                // A follower with unchanged metadata: nothing to rebalance.
                let resp = self.join_response(member_id, false);
                respond(out, request_id, Response::JoinGroup(resp));
            }
            _ => {
                // Changed metadata, or the leader rejoining (it wants a new
                // assignment, e.g. because topic metadata changed).
                self.update_member(member_id, req, request_id, out);
                self.prepare_rebalance(cfg, now_ms, out);
            }
        }
    }

    /// SyncGroup in a state where the member and generation are valid.
    pub fn sync(
        &mut self,
        now_ms: u64,
        req: SyncGroupRequest,
        request_id: RequestId,
        out: &mut Vec<Output>,
    ) {
        match self.state {
            GroupState::PreparingRebalance => respond(
                out,
                request_id,
                Response::SyncGroup(SyncGroupResponse::error(ErrorCode::RebalanceInProgress)),
            ),
            GroupState::CompletingRebalance => {
                self.pending_sync.remove(&req.member_id);
                let is_leader = self.is_leader(&req.member_id);
                if let Some(m) = self.member_mut(&req.member_id) {
                    m.last_heartbeat_ms = now_ms;
                    if let Some(old) = m.awaiting_sync.replace(request_id) {
                        respond(
                            out,
                            old,
                            Response::SyncGroup(SyncGroupResponse::error(
                                ErrorCode::RebalanceInProgress,
                            )),
                        );
                    }
                }
                if is_leader {
                    let mut by_member: BTreeMap<String, Bytes> =
                        req.assignments.into_iter().collect();
                    for m in &mut self.members {
                        m.assignment = Some(by_member.remove(&m.id).unwrap_or_default());
                    }
                    self.transition(GroupState::Stable, now_ms);
                    self.persist_metadata(out);
                    let mut answers = Vec::new();
                    for m in &mut self.members {
                        if let Some(rid) = m.awaiting_sync.take() {
                            answers.push((rid, m.assignment.clone().unwrap_or_default()));
                        }
                    }
                    for (rid, assignment) in answers {
                        let resp = self.sync_response(assignment);
                        respond(out, rid, Response::SyncGroup(resp));
                    }
                }
            }
            GroupState::Stable => {
                self.pending_sync.remove(&req.member_id);
                let assignment = match self.member_mut(&req.member_id) {
                    Some(m) => {
                        m.last_heartbeat_ms = now_ms;
                        m.assignment.clone().unwrap_or_default()
                    }
                    None => Bytes::new(),
                };
                let resp = self.sync_response(assignment);
                respond(out, request_id, Response::SyncGroup(resp));
            }
            GroupState::Empty | GroupState::Dead => respond(
                out,
                request_id,
                Response::SyncGroup(SyncGroupResponse::error(ErrorCode::UnknownMemberId)),
            ),
        }
    }

    fn sync_response(&self, assignment: Bytes) -> SyncGroupResponse {
        SyncGroupResponse {
            error: ErrorCode::None,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            assignment,
        }
    }

    pub fn touch(&mut self, member_id: &str, now_ms: u64) {
        if let Some(m) = self.member_mut(member_id) {
            m.last_heartbeat_ms = now_ms;
        }
    }

    /// Expires sessions, pending members and the join/sync deadlines.
    pub fn on_tick(&mut self, cfg: &Config, now_ms: u64, out: &mut Vec<Output>) {
        let expired_pending: Vec<String> = self
            .pending_members
            .iter()
            .filter(|(_, deadline)| **deadline <= now_ms)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired_pending {
            tracing::debug!(group = %Untrusted(&self.id), member = %Untrusted(&id), "pending member expired");
            self.pending_members.remove(&id);
            self.check_join_complete(now_ms, out);
        }
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.session_deadline_ms().is_some_and(|d| d <= now_ms))
            .map(|m| m.id.clone())
            .collect();
        for id in expired {
            tracing::debug!(group = %Untrusted(&self.id), member = %Untrusted(&id), "member session expired");
            self.remove_member_and_update(cfg, now_ms, &id, ErrorCode::UnknownMemberId, out);
        }
        if self.state == GroupState::PreparingRebalance
            && self.join_deadline_ms.is_some_and(|d| d <= now_ms)
        {
            self.on_join_deadline(cfg, now_ms, out);
        }
        if self.sync_deadline_ms.is_some_and(|d| d <= now_ms) {
            self.sync_deadline_ms = None;
            if matches!(
                self.state,
                GroupState::CompletingRebalance | GroupState::Stable
            ) && !self.pending_sync.is_empty()
            {
                let laggards: Vec<String> =
                    std::mem::take(&mut self.pending_sync).into_iter().collect();
                tracing::debug!(group = %Untrusted(&self.id), laggards = laggards.len(), first = %Untrusted(laggards.first().map_or("", String::as_str)), "members did not sync in time");
                for id in &laggards {
                    self.remove_member(id, ErrorCode::UnknownMemberId, out);
                }
                self.prepare_rebalance(cfg, now_ms, out);
            }
        }
    }

    /// Earliest time at which `on_tick` has something to do.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        let members = self.members.iter().filter_map(Member::session_deadline_ms);
        let pending = self.pending_members.values().copied();
        let join = self
            .join_deadline_ms
            .filter(|_| self.state == GroupState::PreparingRebalance);
        members
            .chain(pending)
            .chain(join)
            .chain(self.sync_deadline_ms)
            .min()
    }

    /// Restores a group from its metadata record (log replay).
    pub fn apply_metadata(&mut self, value: GroupMetadataValue) {
        let protocol = value.protocol_name.clone();
        let mut members: Vec<Member> = Vec::new();
        if protocol.is_some() {
            for r in &value.members {
                if members.iter().any(|m| m.id == r.member_id) {
                    continue;
                }
                members.push(Member {
                    id: r.member_id.clone(),
                    instance_id: r.group_instance_id.clone(),
                    client_id: r.client_id.clone(),
                    client_host: r.client_host.clone(),
                    session_timeout_ms: timeout_ms(r.session_timeout_ms),
                    rebalance_timeout_ms: timeout_ms(r.rebalance_timeout_ms),
                    protocols: protocol
                        .iter()
                        .map(|name| Protocol {
                            name: name.clone(),
                            metadata: r.subscription.clone(),
                        })
                        .collect(),
                    assignment: Some(r.assignment.clone()),
                    awaiting_join: None,
                    awaiting_sync: None,
                    last_heartbeat_ms: 0,
                });
            }
        }
        self.protocol_type = if value.protocol_type.is_empty() {
            None
        } else {
            Some(value.protocol_type.clone())
        };
        self.generation_id = value.generation_id;
        self.protocol_name = if members.is_empty() { None } else { protocol };
        self.leader = value
            .leader
            .clone()
            .filter(|l| members.iter().any(|m| &m.id == l))
            .or_else(|| members.first().map(|m| m.id.clone()));
        self.state = if members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
        self.state_timestamp_ms = u64::try_from(value.state_timestamp_ms).unwrap_or(0);
        self.members = members;
        self.pending_members.clear();
        self.pending_sync.clear();
        self.join_deadline_ms = None;
        self.sync_deadline_ms = None;
        self.initial_join = None;
        self.persisted = Some(value);
    }

    /// Checks the group's invariants; returns a description of the first broken one.
    pub fn check_invariants(&self, cfg: &Config) -> Result<(), String> {
        let fail = |what: &str| Err(format!("group {}: {what} ({:?})", self.id, self.state));
        if self.state == GroupState::Dead {
            return fail("dead group still registered");
        }
        if self.state == GroupState::Empty && !self.members.is_empty() {
            return fail("Empty group has members");
        }
        match &self.leader {
            Some(l) if !self.has_member(l) => return fail("leader is not a member"),
            None if !self.members.is_empty() => return fail("members but no leader"),
            _ => {}
        }
        let ids: BTreeSet<&str> = self.members.iter().map(|m| m.id.as_str()).collect();
        if ids.len() != self.members.len() {
            return fail("duplicate member ids");
        }
        let instances: Vec<&str> = self
            .members
            .iter()
            .filter_map(|m| m.instance_id.as_deref())
            .collect();
        if instances.iter().collect::<BTreeSet<_>>().len() != instances.len() {
            return fail("duplicate instance ids");
        }
        if self
            .pending_members
            .keys()
            .any(|p| ids.contains(p.as_str()))
        {
            return fail("pending member is also a member");
        }
        if self.members.len() + self.pending_members.len() > cfg.members_per_group_max {
            return fail("more members than members_per_group_max");
        }
        if self.pending_sync.iter().any(|p| !ids.contains(p.as_str())) {
            return fail("pending sync member is not a member");
        }
        let rebalancing = self.state == GroupState::PreparingRebalance;
        if rebalancing != self.join_deadline_ms.is_some() {
            return fail("join deadline set outside PreparingRebalance");
        }
        if !rebalancing && self.initial_join.is_some() {
            return fail("initial join outside PreparingRebalance");
        }
        if !rebalancing && self.members.iter().any(|m| m.awaiting_join.is_some()) {
            return fail("parked JoinGroup outside PreparingRebalance");
        }
        if self.state != GroupState::CompletingRebalance
            && self.members.iter().any(|m| m.awaiting_sync.is_some())
        {
            return fail("parked SyncGroup outside CompletingRebalance");
        }
        if !matches!(
            self.state,
            GroupState::CompletingRebalance | GroupState::Stable
        ) && !self.pending_sync.is_empty()
        {
            return fail("pending sync outside CompletingRebalance/Stable");
        }
        if self.state == GroupState::Stable {
            if self.protocol_name.is_none() {
                return fail("Stable without a protocol");
            }
            if self.members.iter().any(|m| m.assignment.is_none()) {
                return fail("Stable member without assignment");
            }
        }
        if self.state == GroupState::CompletingRebalance && self.protocol_name.is_none() {
            return fail("CompletingRebalance without a protocol");
        }
        Ok(())
    }
}

/// Timeouts arrive as `i32` on the wire; negative means zero.
pub(crate) fn timeout_ms(raw: i32) -> u64 {
    u64::try_from(raw).unwrap_or(0)
}

fn rebalance_timeout_of(req: &JoinGroupRequest) -> u64 {
    if req.rebalance_timeout_ms > 0 {
        timeout_ms(req.rebalance_timeout_ms)
    } else {
        timeout_ms(req.session_timeout_ms)
    }
}
