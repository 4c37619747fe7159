//! Scenario tests of the coordinator: every state × event and error path,
//! plus a property test over random event sequences.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::*;

const SESSION: i32 = 10_000;
const REBALANCE: i32 = 30_000;

fn cfg() -> Config {
    Config {
        initial_rebalance_delay_ms: 0,
        member_id_seed: 7,
        offsets_retention_check_interval_ms: 1_000,
        ..Config::default()
    }
}

/// Test harness: a coordinator plus a clock, request ids, and a simulated
/// internal log (records of persists that succeeded, in order).
struct H {
    c: GroupCoordinator,
    now: u64,
    next_rid: u64,
    /// Records in append order, tagged with their persist ack (if any).
    log: Vec<(Option<PersistId>, Record)>,
    /// Responses by request id (asserts each request is answered once).
    answers: BTreeMap<u64, Response>,
    /// Persist acks not yet delivered, with their records.
    unacked: Vec<(PersistId, Vec<Record>)>,
    auto_ack: bool,
}

impl H {
    fn new(config: Config) -> H {
        let mut c = GroupCoordinator::new(config);
        c.finish_loading(0);
        H {
            c,
            now: 0,
            next_rid: 0,
            log: Vec::new(),
            answers: BTreeMap::new(),
            unacked: Vec::new(),
            auto_ack: true,
        }
    }

    fn absorb(&mut self, outs: Vec<Output>) {
        for o in outs {
            match o {
                Output::Respond {
                    request_id,
                    response,
                } => {
                    let prev = self.answers.insert(request_id.0, response);
                    assert!(prev.is_none(), "request {request_id:?} answered twice");
                }
                Output::Persist(p) => {
                    for r in &p.records {
                        // Every record must survive the encoding.
                        let bytes = r.encode().expect("encodable");
                        assert_eq!(&Record::decode(&bytes).expect("decodable"), r);
                    }
                    // The server appends in output order; acks come later.
                    self.log
                        .extend(p.records.iter().cloned().map(|r| (p.ack, r)));
                    if let Some(ack) = p.ack {
                        self.unacked.push((ack, p.records));
                    }
                }
            }
        }
        if self.auto_ack {
            self.ack_all(Ok(()));
        }
    }

    fn ack_all(&mut self, result: Result<(), ErrorCode>) {
        for (ack, _) in std::mem::take(&mut self.unacked) {
            if result.is_err() {
                // A failed append leaves nothing in the log.
                self.log.retain(|(tag, _)| *tag != Some(ack));
            }
            let outs = self.c.persisted(self.now, ack, result);
            self.absorb(outs);
        }
    }

    fn send(&mut self, req: Request) -> RequestId {
        self.next_rid += 1;
        let rid = RequestId(self.next_rid);
        let outs = self.c.handle(self.now, rid, req);
        self.absorb(outs);
        rid
    }

    fn answer(&self, rid: RequestId) -> Option<&Response> {
        self.answers.get(&rid.0)
    }

    fn join_answer(&self, rid: RequestId) -> Option<JoinGroupResponse> {
        match self.answer(rid)? {
            Response::JoinGroup(j) => Some(j.clone()),
            other => panic!("not a join answer: {other:?}"),
        }
    }

    fn sync_answer(&self, rid: RequestId) -> Option<SyncGroupResponse> {
        match self.answer(rid)? {
            Response::SyncGroup(s) => Some(s.clone()),
            other => panic!("not a sync answer: {other:?}"),
        }
    }

    /// Runs the initial rebalance delay out: one delay, plus one more because
    /// members joined during the first.
    fn settle(&mut self) {
        let d = self.c.config().initial_rebalance_delay_ms;
        self.advance(d);
        self.advance(d);
    }

    fn advance(&mut self, ms: u64) {
        self.now += ms;
        let outs = self.c.tick(self.now);
        self.absorb(outs);
    }

    fn join(
        &mut self,
        group: &str,
        member: &str,
        instance: Option<&str>,
        protos: &[(&str, &[u8])],
    ) -> RequestId {
        self.send(Request::JoinGroup(join_req(
            group, member, instance, protos,
        )))
    }

    /// The v4 two-step join of a dynamic member; returns (member id, parked join rid).
    fn join_new(&mut self, group: &str, protos: &[(&str, &[u8])]) -> (String, RequestId) {
        let rid = self.join(group, "", None, protos);
        let first = self.join_answer(rid).expect("answered");
        assert_eq!(first.error, ErrorCode::MemberIdRequired);
        assert!(
            first.member_id.starts_with("client-"),
            "{}",
            first.member_id
        );
        let id = first.member_id;
        let rid = self.join(group, &id, None, protos);
        (id, rid)
    }

    fn heartbeat(&mut self, group: &str, member: &str, generation: i32) -> ErrorCode {
        let rid = self.send(Request::Heartbeat(HeartbeatRequest {
            group_id: group.into(),
            generation_id: generation,
            member_id: member.into(),
            group_instance_id: None,
        }));
        match self.answer(rid) {
            Some(Response::Heartbeat(e)) => *e,
            other => panic!("{other:?}"),
        }
    }

    fn sync(
        &mut self,
        group: &str,
        member: &str,
        generation: i32,
        assignments: &[(&str, &[u8])],
    ) -> RequestId {
        self.send(Request::SyncGroup(SyncGroupRequest {
            group_id: group.into(),
            generation_id: generation,
            member_id: member.into(),
            group_instance_id: None,
            protocol_type: Some("consumer".into()),
            protocol_name: None,
            assignments: assignments
                .iter()
                .map(|(m, a)| ((*m).to_owned(), Bytes::copy_from_slice(a)))
                .collect(),
        }))
    }

    fn state(&self, group: &str) -> GroupState {
        self.c.group_state(group)
    }

    /// Builds a Stable group of `n` dynamic members; returns ids (leader first) and generation.
    fn stable_group(&mut self, group: &str, n: usize) -> (Vec<String>, i32) {
        let mut parked = Vec::new();
        for _ in 0..n {
            parked.push(self.join_new(group, RANGE));
        }
        // With no initial delay the first member completes a generation alone;
        // everyone holding an answer rejoins until all are in one generation.
        for _ in 0..4 * n + 4 {
            let completing = self.state(group) == GroupState::CompletingRebalance;
            let gen = self.c.generation(group).unwrap_or(-1);
            let stale: Vec<usize> = (0..parked.len())
                .filter(|i| match self.join_answer(parked[*i].1) {
                    None => false,
                    Some(j) => !completing || j.generation_id != gen,
                })
                .collect();
            if completing && stale.is_empty() {
                break;
            }
            for i in stale {
                let id = parked[i].0.clone();
                parked[i].1 = self.join(group, &id, None, RANGE);
            }
        }
        assert_eq!(self.state(group), GroupState::CompletingRebalance);
        let gen = self.c.generation(group).expect("group");
        let leader = self.join_answer(parked[0].1).expect("joined").leader;
        let mut ids: Vec<String> = parked.iter().map(|(id, _)| id.clone()).collect();
        ids.sort_by_key(|id| id != &leader);
        let assignments: Vec<(String, Vec<u8>)> = ids
            .iter()
            .map(|id| (id.clone(), format!("assign-{id}").into_bytes()))
            .collect();
        let refs: Vec<(&str, &[u8])> = assignments
            .iter()
            .map(|(m, a)| (m.as_str(), a.as_slice()))
            .collect();
        let rid = self.sync(group, &leader, gen, &refs);
        assert_eq!(
            self.sync_answer(rid).expect("leader sync").error,
            ErrorCode::None
        );
        for id in &ids[1..] {
            let rid = self.sync(group, id, gen, &[]);
            let s = self.sync_answer(rid).expect("sync");
            assert_eq!(s.assignment, Bytes::from(format!("assign-{id}")));
        }
        assert_eq!(self.state(group), GroupState::Stable);
        (ids, gen)
    }

    fn commit(
        &mut self,
        group: &str,
        member: &str,
        generation: i32,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> RequestId {
        self.send(Request::OffsetCommit(OffsetCommitRequest {
            group_id: group.into(),
            generation_id: generation,
            member_id: member.into(),
            group_instance_id: None,
            topics: vec![TopicCommit {
                topic: topic.into(),
                partitions: vec![PartitionCommit {
                    partition,
                    offset,
                    leader_epoch: 3,
                    metadata: Some("m".into()),
                }],
            }],
        }))
    }

    fn commit_error(&self, rid: RequestId) -> Option<ErrorCode> {
        match self.answer(rid)? {
            Response::OffsetCommit(r) => Some(r.topics[0].partitions[0].1),
            other => panic!("{other:?}"),
        }
    }

    fn fetched(&mut self, group: &str, topic: &str, partition: i32) -> i64 {
        let rid = self.send(Request::OffsetFetch(OffsetFetchRequest {
            group_id: group.into(),
            topics: Some(vec![TopicPartitions {
                topic: topic.into(),
                partitions: vec![partition],
            }]),
        }));
        match self.answer(rid) {
            Some(Response::OffsetFetch(r)) => r.topics[0].partitions[0].committed_offset,
            other => panic!("{other:?}"),
        }
    }
}

const RANGE: &[(&str, &[u8])] = &[("range", b"r-meta")];

fn join_req(
    group: &str,
    member: &str,
    instance: Option<&str>,
    protos: &[(&str, &[u8])],
) -> JoinGroupRequest {
    JoinGroupRequest {
        group_id: group.into(),
        member_id: member.into(),
        group_instance_id: instance.map(str::to_owned),
        client_id: "client".into(),
        client_host: "/10.0.0.1".into(),
        session_timeout_ms: SESSION,
        rebalance_timeout_ms: REBALANCE,
        protocol_type: "consumer".into(),
        protocols: protos
            .iter()
            .map(|(n, m)| Protocol {
                name: (*n).into(),
                metadata: Bytes::copy_from_slice(m),
            })
            .collect(),
        require_known_member_id: true,
    }
}

// ---------------------------------------------------------------- JoinGroup

#[test]
fn join_rejects_invalid_group_id_and_session_timeouts() {
    let mut h = H::new(cfg());
    let rid = h.join("", "", None, RANGE);
    assert_eq!(h.join_answer(rid).unwrap().error, ErrorCode::InvalidGroupId);
    for timeout in [5_999, 1_800_001, -1] {
        let mut req = join_req("g", "", None, RANGE);
        req.session_timeout_ms = timeout;
        let rid = h.send(Request::JoinGroup(req));
        assert_eq!(
            h.join_answer(rid).unwrap().error,
            ErrorCode::InvalidSessionTimeout
        );
    }
    assert_eq!(h.c.group_count(), 0, "failed joins create no group");
}

#[test]
fn join_rejects_empty_protocols_or_type() {
    let mut h = H::new(cfg());
    let rid = h.join("g", "", None, &[]);
    assert_eq!(
        h.join_answer(rid).unwrap().error,
        ErrorCode::InconsistentGroupProtocol
    );
    let mut req = join_req("g", "", None, RANGE);
    req.protocol_type = String::new();
    let rid = h.send(Request::JoinGroup(req));
    assert_eq!(
        h.join_answer(rid).unwrap().error,
        ErrorCode::InconsistentGroupProtocol
    );
}

#[test]
fn join_unknown_group_with_member_id_is_unknown_member() {
    let mut h = H::new(cfg());
    let rid = h.join("g", "ghost", None, RANGE);
    assert_eq!(
        h.join_answer(rid).unwrap().error,
        ErrorCode::UnknownMemberId
    );
    let (_, _) = h.join_new("g", RANGE);
    let rid = h.join("g", "ghost", None, RANGE);
    assert_eq!(
        h.join_answer(rid).unwrap().error,
        ErrorCode::UnknownMemberId
    );
}

#[test]
fn member_id_required_then_join_completes_generation_one() {
    let mut h = H::new(cfg());
    let (id, rid) = h.join_new("g", RANGE);
    let j = h.join_answer(rid).expect("no delay: completes at once");
    assert_eq!(j.error, ErrorCode::None);
    assert_eq!(j.generation_id, 1);
    assert_eq!(j.leader, id);
    assert_eq!(j.member_id, id);
    assert_eq!(j.protocol_name.as_deref(), Some("range"));
    assert_eq!(j.protocol_type.as_deref(), Some("consumer"));
    assert_eq!(j.members.len(), 1);
    assert_eq!(j.members[0].metadata, Bytes::from_static(b"r-meta"));
    assert_eq!(h.state("g"), GroupState::CompletingRebalance);
}

#[test]
fn member_ids_are_deterministic_for_a_seed() {
    let run = || {
        let mut h = H::new(cfg());
        h.join_new("g", RANGE).0
    };
    assert_eq!(run(), run());
    let mut other = H::new(Config {
        member_id_seed: 8,
        ..cfg()
    });
    assert_ne!(other.join_new("g", RANGE).0, run());
}

#[test]
fn old_clients_join_without_member_id_required() {
    let mut h = H::new(cfg());
    let mut req = join_req("g", "", None, RANGE);
    req.require_known_member_id = false;
    let rid = h.send(Request::JoinGroup(req));
    let j = h.join_answer(rid).unwrap();
    assert_eq!(j.error, ErrorCode::None);
    assert_eq!(j.generation_id, 1);
}

#[test]
fn pending_member_expires_after_session_timeout() {
    let mut h = H::new(cfg());
    let rid = h.join("g", "", None, RANGE);
    let id = h.join_answer(rid).unwrap().member_id;
    h.advance(SESSION as u64);
    let rid = h.join("g", &id, None, RANGE);
    assert_eq!(
        h.join_answer(rid).unwrap().error,
        ErrorCode::UnknownMemberId
    );
}

#[test]
fn inconsistent_protocols_are_rejected() {
    let mut h = H::new(cfg());
    h.join_new("g", RANGE);
    // No common protocol.
    let rid = h.join("g", "", None, &[("roundrobin", b"")]);
    assert_eq!(
        h.join_answer(rid).unwrap().error,
        ErrorCode::InconsistentGroupProtocol
    );
    // Other protocol type.
    let mut req = join_req("g", "", None, RANGE);
    req.protocol_type = "connect".into();
    let rid = h.send(Request::JoinGroup(req));
    assert_eq!(
        h.join_answer(rid).unwrap().error,
        ErrorCode::InconsistentGroupProtocol
    );
}

#[test]
fn protocol_selection_by_votes_and_tie_break() {
    let mut h = H::new(Config {
        initial_rebalance_delay_ms: 3_000,
        ..cfg()
    });
    let (_, a) = h.join_new(
        "g",
        &[("range", b"ra"), ("roundrobin", b"rra"), ("sticky", b"sa")],
    );
    let (_, b) = h.join_new("g", &[("roundrobin", b"rrb"), ("range", b"rb")]);
    let (_, c) = h.join_new("g", &[("roundrobin", b"rrc"), ("range", b"rc")]);
    h.settle();
    let ja = h.join_answer(a).unwrap();
    assert_eq!(
        ja.protocol_name.as_deref(),
        Some("roundrobin"),
        "2 votes against 1"
    );
    // The leader sees every member's metadata for the selected protocol.
    let metas: Vec<&[u8]> = ja.members.iter().map(|m| m.metadata.as_ref()).collect();
    assert_eq!(metas, vec![&b"rra"[..], b"rrb", b"rrc"]);
    for r in [b, c] {
        let j = h.join_answer(r).unwrap();
        assert!(j.members.is_empty(), "followers get no member list");
        assert_eq!(j.leader, ja.member_id);
    }

    // Tie: the first member's preference wins.
    let mut h = H::new(Config {
        initial_rebalance_delay_ms: 3_000,
        ..cfg()
    });
    let (_, a) = h.join_new("t", &[("sticky", b""), ("range", b"")]);
    h.join_new("t", &[("range", b""), ("sticky", b"")]);
    h.settle();
    assert_eq!(
        h.join_answer(a).unwrap().protocol_name.as_deref(),
        Some("sticky")
    );
}

#[test]
fn initial_rebalance_delay_is_extended_by_new_members() {
    let mut h = H::new(Config {
        initial_rebalance_delay_ms: 3_000,
        ..cfg()
    });
    let (_, a) = h.join_new("g", RANGE);
    assert_eq!(h.state("g"), GroupState::PreparingRebalance);
    h.advance(2_000);
    let (_, b) = h.join_new("g", RANGE);
    h.advance(1_000); // t = 3000: a member was added, wait another delay
    assert!(h.join_answer(a).is_none());
    h.advance(2_999);
    assert!(h.join_answer(a).is_none());
    h.advance(1); // t = 6000
    assert_eq!(h.join_answer(a).unwrap().generation_id, 1);
    assert_eq!(h.join_answer(b).unwrap().generation_id, 1);
    assert_eq!(h.join_answer(a).unwrap().members.len(), 2);
}

#[test]
fn initial_delay_is_bounded_by_the_rebalance_timeout() {
    let mut h = H::new(Config {
        initial_rebalance_delay_ms: 3_000,
        ..cfg()
    });
    let mut req = join_req("g", "", None, RANGE);
    req.rebalance_timeout_ms = 4_000;
    req.require_known_member_id = false;
    let a = h.send(Request::JoinGroup(req.clone()));
    h.advance(1_000);
    h.send(Request::JoinGroup(req.clone()));
    h.advance(2_000); // t=3000: reschedule for min(3000, remaining 1000)
    assert!(h.join_answer(a).is_none());
    h.send(Request::JoinGroup(req));
    h.advance(1_000); // t=4000: remaining 0, complete even though a member was added
    assert_eq!(h.join_answer(a).unwrap().members.len(), 3);
}

#[test]
fn group_max_size_reached() {
    let mut h = H::new(Config {
        members_per_group_max: 2,
        ..cfg()
    });
    h.join_new("g", RANGE);
    let rid = h.join("g", "", None, RANGE);
    assert_eq!(
        h.join_answer(rid).unwrap().error,
        ErrorCode::MemberIdRequired
    );
    let rid = h.join("g", "", None, RANGE);
    assert_eq!(
        h.join_answer(rid).unwrap().error,
        ErrorCode::GroupMaxSizeReached,
        "pending members count"
    );
    let rid = h.join("g", "", Some("static"), RANGE);
    assert_eq!(
        h.join_answer(rid).unwrap().error,
        ErrorCode::GroupMaxSizeReached
    );
}

#[test]
fn groups_max_bounds_new_groups() {
    let mut h = H::new(Config {
        groups_max: 1,
        ..cfg()
    });
    h.join_new("g1", RANGE);
    let rid = h.join("g2", "", None, RANGE);
    assert_eq!(
        h.join_answer(rid).unwrap().error,
        ErrorCode::CoordinatorNotAvailable
    );
    let rid = h.commit("g3", "", -1, "t", 0, 1);
    assert_eq!(
        h.commit_error(rid),
        Some(ErrorCode::CoordinatorNotAvailable)
    );
    assert_eq!(h.c.group_count(), 1);
}

#[test]
fn rejoin_in_completing_rebalance() {
    let mut h = H::new(cfg());
    let (id, rid) = h.join_new("g", RANGE);
    let first = h.join_answer(rid).unwrap();
    // Lost response: same metadata gets the same answer, no new generation.
    let again = h.join("g", &id, None, RANGE);
    assert_eq!(h.join_answer(again).unwrap(), first);
    // Changed metadata: rebalance; with a single member it completes at once.
    let changed = h.join("g", &id, None, &[("range", b"new")]);
    let j = h.join_answer(changed).unwrap();
    assert_eq!(j.generation_id, 2);
    assert_eq!(j.members[0].metadata, Bytes::from_static(b"new"));
}

#[test]
fn rejoin_in_stable_follower_vs_leader() {
    let mut h = H::new(cfg());
    let (ids, gen) = h.stable_group("g", 2);
    let rid = h.join("g", &ids[1], None, RANGE);
    let j = h.join_answer(rid).unwrap();
    assert_eq!((j.error, j.generation_id), (ErrorCode::None, gen));
    assert_eq!(h.state("g"), GroupState::Stable);
    // The leader rejoining triggers a rebalance.
    let rid = h.join("g", &ids[0], None, RANGE);
    assert!(h.join_answer(rid).is_none());
    assert_eq!(h.state("g"), GroupState::PreparingRebalance);
    // A follower changing its metadata does too (checked via a fresh group).
    let mut h = H::new(cfg());
    let (ids, _) = h.stable_group("g", 2);
    h.join("g", &ids[1], None, &[("range", b"changed")]);
    assert_eq!(h.state("g"), GroupState::PreparingRebalance);
}

#[test]
fn new_member_triggers_rebalance_and_everyone_rejoins() {
    let mut h = H::new(cfg());
    let (ids, gen) = h.stable_group("g", 2);
    let (new_id, new_rid) = h.join_new("g", RANGE);
    assert_eq!(h.state("g"), GroupState::PreparingRebalance);
    assert!(h.join_answer(new_rid).is_none());
    assert_eq!(
        h.heartbeat("g", &ids[0], gen),
        ErrorCode::RebalanceInProgress
    );
    let r0 = h.join("g", &ids[0], None, RANGE);
    assert!(h.join_answer(r0).is_none());
    let r1 = h.join("g", &ids[1], None, RANGE);
    for r in [r0, r1, new_rid] {
        assert_eq!(h.join_answer(r).unwrap().generation_id, gen + 1);
    }
    assert_eq!(
        h.join_answer(r0).unwrap().leader,
        ids[0],
        "leader keeps leadership"
    );
    assert_eq!(h.join_answer(r0).unwrap().members.len(), 3);
    assert!(h.join_answer(new_rid).unwrap().members.is_empty());
    assert_eq!(h.heartbeat("g", &new_id, gen + 1), ErrorCode::None);
}

#[test]
fn rebalance_timeout_removes_members_that_do_not_rejoin() {
    let mut h = H::new(cfg());
    let (ids, gen) = h.stable_group("g", 3);
    let r1 = h.join("g", &ids[1], None, RANGE); // follower changes nothing... use leader to force
    assert!(h.join_answer(r1).is_some());
    let r0 = h.join("g", &ids[0], None, RANGE);
    assert!(h.join_answer(r0).is_none());
    // ids[1] and ids[2] keep heartbeating but never rejoin.
    for _ in 0..5 {
        h.advance((REBALANCE / 5) as u64 - 1);
        h.heartbeat("g", &ids[1], gen);
        h.heartbeat("g", &ids[2], gen);
    }
    h.advance(5);
    let j = h
        .join_answer(r0)
        .expect("completed at the rebalance timeout");
    assert_eq!(j.generation_id, gen + 1);
    assert_eq!(j.members.len(), 1);
    assert_eq!(h.heartbeat("g", &ids[1], gen), ErrorCode::UnknownMemberId);
}

#[test]
fn resent_join_supersedes_the_parked_one() {
    let mut h = H::new(cfg());
    let (ids, _) = h.stable_group("g", 2);
    let first = h.join("g", &ids[0], None, RANGE);
    let second = h.join("g", &ids[0], None, RANGE);
    assert_eq!(
        h.join_answer(first).unwrap().error,
        ErrorCode::RebalanceInProgress
    );
    assert!(h.join_answer(second).is_none());
}

#[test]
fn parked_join_outlives_the_session_timeout() {
    let mut h = H::new(cfg());
    let (ids, gen) = h.stable_group("g", 2);
    let r0 = h.join("g", &ids[0], None, RANGE);
    for _ in 0..2 {
        h.advance((SESSION - 1) as u64);
        assert_eq!(
            h.heartbeat("g", &ids[1], gen),
            ErrorCode::RebalanceInProgress
        );
    }
    assert!(h.join_answer(r0).is_none(), "still parked, not expired");
    let r1 = h.join("g", &ids[1], None, RANGE);
    assert_eq!(h.join_answer(r0).unwrap().members.len(), 2);
    assert!(h.join_answer(r1).is_some());
}

// ---------------------------------------------------------------- SyncGroup

#[test]
fn sync_error_paths() {
    let mut h = H::new(cfg());
    let rid = h.sync("nope", "m", 1, &[]);
    assert_eq!(
        h.sync_answer(rid).unwrap().error,
        ErrorCode::UnknownMemberId
    );
    let rid = h.sync("", "m", 1, &[]);
    assert_eq!(h.sync_answer(rid).unwrap().error, ErrorCode::InvalidGroupId);
    let (ids, gen) = h.stable_group("g", 2);
    let rid = h.sync("g", "stranger", gen, &[]);
    assert_eq!(
        h.sync_answer(rid).unwrap().error,
        ErrorCode::UnknownMemberId
    );
    let rid = h.sync("g", &ids[1], gen + 5, &[]);
    assert_eq!(
        h.sync_answer(rid).unwrap().error,
        ErrorCode::IllegalGeneration
    );
    let mut req = SyncGroupRequest {
        group_id: "g".into(),
        generation_id: gen,
        member_id: ids[1].clone(),
        group_instance_id: None,
        protocol_type: Some("consumer".into()),
        protocol_name: Some("roundrobin".into()),
        assignments: vec![],
    };
    let rid = h.send(Request::SyncGroup(req.clone()));
    assert_eq!(
        h.sync_answer(rid).unwrap().error,
        ErrorCode::InconsistentGroupProtocol
    );
    req.protocol_name = Some("range".into());
    req.protocol_type = Some("connect".into());
    let rid = h.send(Request::SyncGroup(req));
    assert_eq!(
        h.sync_answer(rid).unwrap().error,
        ErrorCode::InconsistentGroupProtocol
    );
    // PreparingRebalance.
    h.join("g", &ids[0], None, RANGE);
    let rid = h.sync("g", &ids[1], gen, &[]);
    assert_eq!(
        h.sync_answer(rid).unwrap().error,
        ErrorCode::RebalanceInProgress
    );
}

#[test]
fn follower_sync_waits_for_the_leader() {
    let mut h = H::new(Config {
        initial_rebalance_delay_ms: 100,
        ..cfg()
    });
    let (a, ra) = h.join_new("g", RANGE);
    let (b, _) = h.join_new("g", RANGE);
    h.settle();
    let leader = h.join_answer(ra).unwrap().leader;
    assert_eq!(leader, a);
    let fs = h.sync("g", &b, 1, &[]);
    assert!(h.sync_answer(fs).is_none(), "parked until the leader syncs");
    let log_before = h.log.len();
    let ls = h.sync("g", &a, 1, &[(&b, b"for-b")]);
    assert_eq!(
        h.sync_answer(fs).unwrap().assignment,
        Bytes::from_static(b"for-b")
    );
    let mine = h.sync_answer(ls).unwrap();
    assert_eq!(
        mine.assignment,
        Bytes::new(),
        "leader omitted itself: empty assignment"
    );
    assert_eq!(mine.protocol_name.as_deref(), Some("range"));
    assert_eq!(h.state("g"), GroupState::Stable);
    // The Stable generation was persisted.
    assert!(
        matches!(&h.log[log_before..], [(None, Record::GroupMetadata { value: Some(v), .. })] if v.generation_id == 1 && v.members.len() == 2)
    );
    // Sync in Stable answers immediately with the stored assignment.
    let again = h.sync("g", &b, 1, &[]);
    assert_eq!(
        h.sync_answer(again).unwrap().assignment,
        Bytes::from_static(b"for-b")
    );
}

#[test]
fn members_that_do_not_sync_in_time_are_removed() {
    let mut h = H::new(Config {
        initial_rebalance_delay_ms: 100,
        ..cfg()
    });
    let (_, ra) = h.join_new("g", RANGE);
    let (b, _) = h.join_new("g", RANGE);
    h.settle();
    let leader = h.join_answer(ra).unwrap().leader;
    let fs = h.sync("g", &b, 1, &[]);
    // The leader never syncs; the follower's parked sync keeps it alive.
    h.advance(REBALANCE as u64);
    assert_eq!(
        h.sync_answer(fs).unwrap().error,
        ErrorCode::RebalanceInProgress
    );
    assert_eq!(h.state("g"), GroupState::PreparingRebalance);
    assert_eq!(h.heartbeat("g", &leader, 1), ErrorCode::UnknownMemberId);
    let rb = h.join("g", &b, None, RANGE);
    let j = h.join_answer(rb).unwrap();
    assert_eq!(
        (j.generation_id, j.leader.as_str()),
        (2, b.as_str()),
        "new leader elected"
    );
}

// ---------------------------------------------------------------- Heartbeat

#[test]
fn heartbeat_table() {
    let mut h = H::new(Config {
        initial_rebalance_delay_ms: 100,
        ..cfg()
    });
    assert_eq!(h.heartbeat("", "m", 1), ErrorCode::InvalidGroupId);
    assert_eq!(
        h.heartbeat("g", "m", 1),
        ErrorCode::UnknownMemberId,
        "unknown group"
    );
    let (a, ra) = h.join_new("g", RANGE);
    // PreparingRebalance (initial delay), generation 0.
    assert_eq!(h.heartbeat("g", &a, 0), ErrorCode::RebalanceInProgress);
    assert_eq!(h.heartbeat("g", &a, 1), ErrorCode::IllegalGeneration);
    assert_eq!(h.heartbeat("g", "stranger", 0), ErrorCode::UnknownMemberId);
    h.advance(100);
    assert!(h.join_answer(ra).is_some());
    // CompletingRebalance.
    assert_eq!(h.heartbeat("g", &a, 1), ErrorCode::None);
    assert_eq!(h.heartbeat("g", &a, 0), ErrorCode::IllegalGeneration);
    h.sync("g", &a, 1, &[]);
    // Stable.
    assert_eq!(h.state("g"), GroupState::Stable);
    assert_eq!(h.heartbeat("g", &a, 1), ErrorCode::None);
    assert_eq!(h.heartbeat("g", &a, 2), ErrorCode::IllegalGeneration);
}

#[test]
fn session_expiry_removes_member_and_rebalances() {
    let mut h = H::new(cfg());
    let (ids, gen) = h.stable_group("g", 2);
    h.advance((SESSION / 2) as u64);
    assert_eq!(h.heartbeat("g", &ids[0], gen), ErrorCode::None);
    h.advance((SESSION / 2) as u64 - 1);
    assert_eq!(h.heartbeat("g", &ids[0], gen), ErrorCode::None);
    h.advance(1);
    // ids[1] stopped heartbeating a session ago: gone, group rebalancing.
    assert_eq!(h.state("g"), GroupState::PreparingRebalance);
    assert_eq!(h.heartbeat("g", &ids[1], gen), ErrorCode::UnknownMemberId);
    assert_eq!(
        h.heartbeat("g", &ids[0], gen),
        ErrorCode::RebalanceInProgress
    );
    let r = h.join("g", &ids[0], None, RANGE);
    assert_eq!(h.join_answer(r).unwrap().members.len(), 1);
}

#[test]
fn next_deadline_reports_session_expiry() {
    let mut h = H::new(cfg());
    let (_, _) = h.stable_group("g", 1);
    let d = h.c.next_deadline_ms().unwrap();
    assert!(d <= h.now + SESSION as u64);
}

// ---------------------------------------------------------------- LeaveGroup

fn leave(h: &mut H, group: &str, members: &[(&str, Option<&str>)]) -> LeaveGroupResponse {
    let rid = h.send(Request::LeaveGroup(LeaveGroupRequest {
        group_id: group.into(),
        members: members
            .iter()
            .map(|(m, i)| LeavingMember {
                member_id: (*m).into(),
                group_instance_id: i.map(str::to_owned),
            })
            .collect(),
    }));
    match h.answer(rid) {
        Some(Response::LeaveGroup(r)) => r.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn leave_unknown_group_and_member() {
    let mut h = H::new(cfg());
    let r = leave(&mut h, "g", &[("a", None)]);
    assert_eq!(r.error, ErrorCode::None);
    assert_eq!(r.members[0].error, ErrorCode::UnknownMemberId);
    assert_eq!(leave(&mut h, "", &[]).error, ErrorCode::InvalidGroupId);
    h.stable_group("g", 1);
    assert_eq!(
        leave(&mut h, "g", &[("b", None)]).members[0].error,
        ErrorCode::UnknownMemberId
    );
}

#[test]
fn last_member_leaving_empties_the_group() {
    let mut h = H::new(cfg());
    let (ids, gen) = h.stable_group("g", 2);
    let r = leave(&mut h, "g", &[(&ids[0], None), (&ids[1], None)]);
    assert!(r.members.iter().all(|m| m.error == ErrorCode::None));
    assert_eq!(h.state("g"), GroupState::Empty);
    assert_eq!(h.c.generation("g"), Some(gen + 1));
    assert!(
        matches!(h.log.last().map(|(_, r)| r), Some(Record::GroupMetadata { value: Some(v), .. }) if v.members.is_empty())
    );
}

#[test]
fn leave_of_member_with_parked_join() {
    let mut h = H::new(cfg());
    let (ids, gen) = h.stable_group("g", 2);
    let r0 = h.join("g", &ids[0], None, RANGE);
    leave(&mut h, "g", &[(&ids[0], None)]);
    assert_eq!(h.join_answer(r0).unwrap().error, ErrorCode::UnknownMemberId);
    // The remaining member is alone and has not rejoined yet.
    assert_eq!(h.state("g"), GroupState::PreparingRebalance);
    let r1 = h.join("g", &ids[1], None, RANGE);
    let j = h.join_answer(r1).unwrap();
    assert_eq!(
        (j.generation_id, j.leader.clone()),
        (gen + 1, ids[1].clone())
    );
}

#[test]
fn leave_pending_member_completes_the_join() {
    let mut h = H::new(cfg());
    let (ids, _) = h.stable_group("g", 1);
    let pending = h.join("g", "", None, RANGE);
    let pid = h.join_answer(pending).unwrap().member_id;
    let r0 = h.join("g", &ids[0], None, RANGE); // leader rejoins: PreparingRebalance
    assert!(h.join_answer(r0).is_none(), "waits for the pending member");
    let r = leave(&mut h, "g", &[(&pid, None)]);
    assert_eq!(r.members[0].error, ErrorCode::None);
    assert!(h.join_answer(r0).is_some());
}

// ---------------------------------------------------------------- static membership

fn static_stable(h: &mut H, instances: &[&str]) -> (Vec<String>, i32) {
    let mut rids = Vec::new();
    for i in instances {
        rids.push(h.join("g", "", Some(i), RANGE));
    }
    h.settle();
    let gen = h.c.generation("g").unwrap();
    let mut ids = Vec::new();
    for r in &rids {
        let j = h.join_answer(*r).expect("joined");
        assert_eq!(j.generation_id, gen);
        ids.push(j.member_id);
    }
    let assignments: Vec<(String, Vec<u8>)> = ids
        .iter()
        .map(|id| (id.clone(), id.as_bytes().to_vec()))
        .collect();
    let refs: Vec<(&str, &[u8])> = assignments
        .iter()
        .map(|(m, a)| (m.as_str(), a.as_slice()))
        .collect();
    h.sync("g", &ids[0], gen, &refs);
    for id in &ids[1..] {
        h.sync("g", id, gen, &[]);
    }
    assert_eq!(h.state("g"), GroupState::Stable);
    (ids, gen)
}

fn static_heartbeat(h: &mut H, member: &str, instance: &str, gen: i32) -> ErrorCode {
    let rid = h.send(Request::Heartbeat(HeartbeatRequest {
        group_id: "g".into(),
        generation_id: gen,
        member_id: member.into(),
        group_instance_id: Some(instance.into()),
    }));
    match h.answer(rid) {
        Some(Response::Heartbeat(e)) => *e,
        other => panic!("{other:?}"),
    }
}

#[test]
fn static_member_joins_without_member_id_required() {
    let mut h = H::new(Config {
        initial_rebalance_delay_ms: 100,
        ..cfg()
    });
    let rid = h.join("g", "", Some("inst-1"), RANGE);
    assert!(
        h.join_answer(rid).is_none(),
        "parked, not MEMBER_ID_REQUIRED"
    );
    h.advance(100);
    assert!(h.join_answer(rid).unwrap().member_id.starts_with("inst-1-"));
}

#[test]
fn static_rejoin_with_same_metadata_replaces_without_rebalance() {
    let mut h = H::new(Config {
        initial_rebalance_delay_ms: 100,
        ..cfg()
    });
    let (ids, gen) = static_stable(&mut h, &["i1", "i2"]);
    let log_before = h.log.len();
    let rid = h.join("g", "", Some("i2"), RANGE);
    let j = h.join_answer(rid).expect("answered at once");
    assert_eq!(j.error, ErrorCode::None);
    assert_eq!(j.generation_id, gen);
    assert_ne!(j.member_id, ids[1]);
    assert!(!j.skip_assignment);
    assert_eq!(j.leader, ids[0]);
    assert_eq!(h.state("g"), GroupState::Stable);
    assert_eq!(h.log.len(), log_before + 1, "new member id persisted");
    // The zombie is fenced; the new id works and keeps the assignment.
    assert_eq!(
        static_heartbeat(&mut h, &ids[1], "i2", gen),
        ErrorCode::FencedInstanceId
    );
    assert_eq!(
        static_heartbeat(&mut h, &j.member_id, "i2", gen),
        ErrorCode::None
    );
    let s = h.sync("g", &j.member_id, gen, &[]);
    assert_eq!(
        h.sync_answer(s).unwrap().assignment,
        Bytes::from(ids[1].clone())
    );
    // Zombie paths: join with old id + instance, commit, leave.
    let r = h.join("g", &ids[1], Some("i2"), RANGE);
    assert_eq!(h.join_answer(r).unwrap().error, ErrorCode::FencedInstanceId);
    let mut c = OffsetCommitRequest {
        group_id: "g".into(),
        generation_id: gen,
        member_id: ids[1].clone(),
        group_instance_id: Some("i2".into()),
        topics: vec![TopicCommit {
            topic: "t".into(),
            partitions: vec![PartitionCommit {
                partition: 0,
                offset: 1,
                leader_epoch: -1,
                metadata: None,
            }],
        }],
    };
    let r = h.send(Request::OffsetCommit(c.clone()));
    assert_eq!(h.commit_error(r), Some(ErrorCode::FencedInstanceId));
    c.member_id = j.member_id.clone();
    let r = h.send(Request::OffsetCommit(c));
    assert_eq!(h.commit_error(r), Some(ErrorCode::None));
    let l = leave(&mut h, "g", &[(&ids[1], Some("i2"))]);
    assert_eq!(l.members[0].error, ErrorCode::FencedInstanceId);
    let l = leave(&mut h, "g", &[("", Some("nobody"))]);
    assert_eq!(l.members[0].error, ErrorCode::UnknownMemberId);
    // KIP-345 admin removal by instance id alone.
    let l = leave(&mut h, "g", &[("", Some("i2"))]);
    assert_eq!(l.members[0].error, ErrorCode::None);
    assert_eq!(h.state("g"), GroupState::PreparingRebalance);
}

#[test]
fn static_leader_replacement_keeps_leadership_and_skips_assignment() {
    let mut h = H::new(Config {
        initial_rebalance_delay_ms: 100,
        ..cfg()
    });
    let (ids, gen) = static_stable(&mut h, &["i1", "i2"]);
    let rid = h.join("g", "", Some("i1"), RANGE);
    let j = h.join_answer(rid).unwrap();
    assert_eq!(j.generation_id, gen);
    assert_eq!(j.leader, j.member_id, "leadership moves to the new id");
    assert!(j.skip_assignment);
    assert_eq!(j.members.len(), 2);
    assert_eq!(
        static_heartbeat(&mut h, &ids[0], "i1", gen),
        ErrorCode::FencedInstanceId
    );
}

#[test]
fn static_rejoin_with_changed_metadata_rebalances() {
    let mut h = H::new(Config {
        initial_rebalance_delay_ms: 100,
        ..cfg()
    });
    let (_, gen) = static_stable(&mut h, &["i1", "i2"]);
    let rid = h.join("g", "", Some("i2"), &[("range", b"other-topics")]);
    assert!(h.join_answer(rid).is_none());
    assert_eq!(h.state("g"), GroupState::PreparingRebalance);
    assert_eq!(h.c.generation("g"), Some(gen));
}

#[test]
fn static_replacement_fences_parked_requests() {
    // Parked join (PreparingRebalance).
    let mut h = H::new(Config {
        initial_rebalance_delay_ms: 100,
        ..cfg()
    });
    let (ids, gen) = static_stable(&mut h, &["i1", "i2"]);
    let old = h.join("g", &ids[1], Some("i2"), &[("range", b"x")]);
    assert!(h.join_answer(old).is_none());
    let new = h.join("g", "", Some("i2"), &[("range", b"x")]);
    assert_eq!(
        h.join_answer(old).unwrap().error,
        ErrorCode::FencedInstanceId
    );
    assert!(h.join_answer(new).is_none());
    let r0 = h.join("g", &ids[0], Some("i1"), RANGE);
    assert_eq!(h.join_answer(new).unwrap().generation_id, gen + 1);
    assert!(h.join_answer(r0).is_some());

    // Parked sync (CompletingRebalance): the group rebalances again.
    let mut h = H::new(Config {
        initial_rebalance_delay_ms: 100,
        ..cfg()
    });
    let r1 = h.join("g", "", Some("i1"), RANGE);
    let r2 = h.join("g", "", Some("i2"), RANGE);
    h.settle();
    let m2 = h.join_answer(r2).unwrap().member_id;
    let s2 = h.sync("g", &m2, 1, &[]);
    let new = h.join("g", "", Some("i2"), RANGE);
    assert_eq!(
        h.sync_answer(s2).unwrap().error,
        ErrorCode::FencedInstanceId
    );
    assert_eq!(h.state("g"), GroupState::PreparingRebalance);
    let m1 = h.join_answer(r1).unwrap().member_id;
    h.join("g", &m1, Some("i1"), RANGE);
    assert_eq!(h.join_answer(new).unwrap().generation_id, 2);
}

#[test]
fn static_join_with_known_member_id_checks_instance() {
    let mut h = H::new(Config {
        initial_rebalance_delay_ms: 100,
        ..cfg()
    });
    let (ids, _) = static_stable(&mut h, &["i1"]);
    let r = h.join("g", &ids[0], Some("unknown-instance"), RANGE);
    assert_eq!(h.join_answer(r).unwrap().error, ErrorCode::UnknownMemberId);
    let r = h.join("g", "someone-else", Some("i1"), RANGE);
    assert_eq!(h.join_answer(r).unwrap().error, ErrorCode::FencedInstanceId);
}

// ---------------------------------------------------------------- offsets

#[test]
fn simple_commit_is_acknowledged_only_after_persist() {
    let mut h = H::new(cfg());
    h.auto_ack = false;
    let rid = h.commit("g", "", -1, "t", 0, 42);
    assert!(h.answer(rid).is_none(), "not acknowledged before durable");
    assert_eq!(h.unacked.len(), 1);
    assert_eq!(h.fetched("g", "t", 0), -1, "not visible before durable");
    h.ack_all(Ok(()));
    assert_eq!(h.commit_error(rid), Some(ErrorCode::None));
    assert_eq!(h.fetched("g", "t", 0), 42);
    assert_eq!(h.state("g"), GroupState::Empty);
}

#[test]
fn failed_persist_fails_the_commit() {
    let mut h = H::new(cfg());
    h.auto_ack = false;
    let rid = h.commit("g", "", -1, "t", 0, 42);
    h.ack_all(Err(ErrorCode::CoordinatorNotAvailable));
    assert_eq!(
        h.commit_error(rid),
        Some(ErrorCode::CoordinatorNotAvailable)
    );
    assert_eq!(h.fetched("g", "t", 0), -1);
    // Unknown acks are ignored.
    assert!(h.c.persisted(0, PersistId(999), Ok(())).is_empty());
}

#[test]
fn commit_validation_table() {
    let mut h = H::new(cfg());
    let r = h.commit("", "", -1, "t", 0, 1);
    assert_eq!(h.commit_error(r), Some(ErrorCode::InvalidGroupId));
    let r = h.commit("nope", "m", 3, "t", 0, 1);
    assert_eq!(h.commit_error(r), Some(ErrorCode::IllegalGeneration));
    let (ids, gen) = h.stable_group("g", 2);
    let r = h.commit("g", "", -1, "t", 0, 1);
    assert_eq!(
        h.commit_error(r),
        Some(ErrorCode::UnknownMemberId),
        "simple commit to a live group"
    );
    let r = h.commit("g", "stranger", gen, "t", 0, 1);
    assert_eq!(h.commit_error(r), Some(ErrorCode::UnknownMemberId));
    let r = h.commit("g", &ids[1], gen - 1, "t", 0, 1);
    assert_eq!(h.commit_error(r), Some(ErrorCode::IllegalGeneration));
    let r = h.commit("g", &ids[1], gen, "t", 0, 1);
    assert_eq!(h.commit_error(r), Some(ErrorCode::None), "Stable");
    // PreparingRebalance: the current generation may still commit (on revoke).
    let r0 = h.join("g", &ids[0], None, RANGE);
    let r = h.commit("g", &ids[1], gen, "t", 0, 2);
    assert_eq!(
        h.commit_error(r),
        Some(ErrorCode::None),
        "PreparingRebalance"
    );
    h.join("g", &ids[1], None, RANGE);
    assert!(h.join_answer(r0).is_some());
    // CompletingRebalance.
    let r = h.commit("g", &ids[1], gen + 1, "t", 0, 3);
    assert_eq!(h.commit_error(r), Some(ErrorCode::RebalanceInProgress));
    assert_eq!(h.fetched("g", "t", 0), 2);
}

#[test]
fn commit_partition_errors() {
    let mut h = H::new(cfg());
    let rid = h.send(Request::OffsetCommit(OffsetCommitRequest {
        group_id: "g".into(),
        generation_id: -1,
        member_id: String::new(),
        group_instance_id: None,
        topics: vec![TopicCommit {
            topic: "t".into(),
            partitions: vec![
                PartitionCommit {
                    partition: 0,
                    offset: 5,
                    leader_epoch: 1,
                    metadata: Some("x".repeat(4097)),
                },
                PartitionCommit {
                    partition: 1,
                    offset: 6,
                    leader_epoch: 1,
                    metadata: None,
                },
            ],
        }],
    }));
    match h.answer(rid) {
        Some(Response::OffsetCommit(r)) => assert_eq!(
            r.topics[0].partitions,
            vec![(0, ErrorCode::OffsetMetadataTooLarge), (1, ErrorCode::None)]
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(h.fetched("g", "t", 0), -1);
    assert_eq!(h.fetched("g", "t", 1), 6);
}

#[test]
fn pending_commits_are_bounded() {
    let mut h = H::new(Config {
        pending_commits_max: 1,
        ..cfg()
    });
    h.auto_ack = false;
    let a = h.commit("g", "", -1, "t", 0, 1);
    let b = h.commit("g", "", -1, "t", 1, 1);
    assert!(h.answer(a).is_none());
    assert_eq!(h.commit_error(b), Some(ErrorCode::CoordinatorNotAvailable));
}

#[test]
fn offset_fetch_all_listed_and_unknown() {
    let mut h = H::new(cfg());
    h.commit("g", "", -1, "b", 1, 11);
    h.commit("g", "", -1, "a", 0, 10);
    h.commit("g", "", -1, "b", 0, 12);
    let rid = h.send(Request::OffsetFetch(OffsetFetchRequest {
        group_id: "g".into(),
        topics: None,
    }));
    let Some(Response::OffsetFetch(all)) = h.answer(rid).cloned() else {
        panic!()
    };
    let flat: Vec<(String, i32, i64, i32, String)> = all
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| {
                (
                    t.topic.clone(),
                    p.partition,
                    p.committed_offset,
                    p.leader_epoch,
                    p.metadata.clone(),
                )
            })
        })
        .collect();
    assert_eq!(
        flat,
        vec![
            ("a".into(), 0, 10, 3, "m".into()),
            ("b".into(), 0, 12, 3, "m".into()),
            ("b".into(), 1, 11, 3, "m".into())
        ]
    );
    assert_eq!(h.fetched("unknown", "a", 0), -1);
    let rid = h.send(Request::OffsetFetch(OffsetFetchRequest {
        group_id: "unknown".into(),
        topics: None,
    }));
    assert!(
        matches!(h.answer(rid), Some(Response::OffsetFetch(r)) if r.topics.is_empty() && r.error == ErrorCode::None)
    );
    let rid = h.send(Request::OffsetFetch(OffsetFetchRequest {
        group_id: String::new(),
        topics: None,
    }));
    assert!(
        matches!(h.answer(rid), Some(Response::OffsetFetch(r)) if r.error == ErrorCode::InvalidGroupId)
    );
}

#[test]
fn lag_from_committed_offsets() {
    let mut h = H::new(cfg());
    h.commit("g", "", -1, "t", 0, 10);
    h.commit("g", "", -1, "t", 1, 50);
    h.commit("g", "", -1, "u", 0, 5);
    let lag =
        h.c.group_lag("g", |t, p| match (t, p) {
            ("t", 0) => Some(15),
            ("t", 1) => Some(40), // truncated log: never negative
            _ => None,
        })
        .unwrap();
    let got: Vec<(&str, i32, Option<i64>)> = lag
        .iter()
        .map(|l| (l.topic.as_str(), l.partition, l.lag))
        .collect();
    assert_eq!(
        got,
        vec![("t", 0, Some(5)), ("t", 1, Some(0)), ("u", 0, None)]
    );
    assert!(h.c.group_lag("nope", |_, _| None).is_none());
    assert_eq!(compute_lag([("x", 0, -1)], |_, _| Some(3))[0].lag, None);
}

#[test]
fn empty_consumer_group_offsets_expire_after_retention() {
    let retention = 100_000;
    let mut h = H::new(Config {
        offsets_retention_ms: retention,
        ..cfg()
    });
    let (ids, gen) = h.stable_group("g", 1);
    h.commit("g", &ids[0], gen, "t", 0, 7);
    leave(&mut h, "g", &[(&ids[0], None)]);
    assert_eq!(h.state("g"), GroupState::Empty);
    let became_empty = h.now;
    h.advance(retention - 2_000);
    assert_eq!(h.fetched("g", "t", 0), 7);
    h.advance(2_000 + 1_000);
    assert!(h.now >= became_empty + retention);
    assert_eq!(h.state("g"), GroupState::Dead, "expired and removed");
    let tail = &h.log[h.log.len() - 2..];
    assert!(matches!(&tail[0].1, Record::Offset { value: None, .. }));
    assert!(matches!(
        &tail[1].1,
        Record::GroupMetadata { value: None, .. }
    ));
}

#[test]
fn simple_group_offsets_expire_one_by_one() {
    let retention = 10_000;
    let mut h = H::new(Config {
        offsets_retention_ms: retention,
        ..cfg()
    });
    h.commit("g", "", -1, "t", 0, 1);
    h.advance(5_000);
    h.commit("g", "", -1, "t", 1, 1);
    h.advance(5_000);
    assert_eq!(h.fetched("g", "t", 0), -1);
    assert_eq!(h.fetched("g", "t", 1), 1);
    h.advance(5_000);
    assert_eq!(h.state("g"), GroupState::Dead);
}

#[test]
fn stable_consumer_group_expires_only_unsubscribed_topics() {
    let retention = 10_000;
    let mut h = H::new(Config {
        offsets_retention_ms: retention,
        initial_rebalance_delay_ms: 0,
        ..cfg()
    });
    let sub = encode_subscription(&["t"]);
    let protos: &[(&str, &[u8])] = &[("range", &sub)];
    let (id, rid) = h.join_new("g", protos);
    h.join_answer(rid).unwrap();
    h.sync("g", &id, 1, &[]);
    h.commit("g", &id, 1, "t", 0, 1);
    h.commit("g", &id, 1, "old", 0, 1);
    for _ in 0..3 {
        h.advance(5_000);
        assert_eq!(h.heartbeat("g", &id, 1), ErrorCode::None);
    }
    assert_eq!(h.fetched("g", "t", 0), 1);
    assert_eq!(h.fetched("g", "old", 0), -1);
}

#[test]
fn empty_group_without_offsets_is_reaped() {
    let mut h = H::new(cfg());
    let (ids, _) = h.stable_group("g", 1);
    leave(&mut h, "g", &[(&ids[0], None)]);
    h.advance(1_000);
    assert_eq!(h.state("g"), GroupState::Dead);
    assert!(matches!(
        h.log.last().map(|(_, r)| r),
        Some(Record::GroupMetadata { value: None, .. })
    ));
}

// ---------------------------------------------------------------- admin

#[test]
fn list_groups_with_filters() {
    let mut h = H::new(cfg());
    h.stable_group("a", 1);
    h.commit("b", "", -1, "t", 0, 1);
    let list = |h: &mut H, states: Vec<GroupState>, types: Vec<&str>| {
        let rid = h.send(Request::ListGroups(ListGroupsRequest {
            states_filter: states,
            types_filter: types.into_iter().map(str::to_owned).collect(),
        }));
        match h.answer(rid) {
            Some(Response::ListGroups(r)) => r
                .groups
                .iter()
                .map(|g| (g.group_id.clone(), g.protocol_type.clone(), g.state))
                .collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        list(&mut h, vec![], vec![]),
        vec![
            ("a".into(), "consumer".into(), GroupState::Stable),
            ("b".into(), String::new(), GroupState::Empty)
        ]
    );
    assert_eq!(list(&mut h, vec![GroupState::Empty], vec![]).len(), 1);
    assert_eq!(list(&mut h, vec![], vec!["Classic"]).len(), 2);
    assert_eq!(list(&mut h, vec![], vec!["consumer"]).len(), 0);
    assert_eq!(GroupState::parse("stable"), Some(GroupState::Stable));
    assert_eq!(GroupState::parse("nope"), None);
}

#[test]
fn describe_groups_in_each_state() {
    let mut h = H::new(cfg());
    let (ids, _) = h.stable_group("g", 2);
    let describe = |h: &mut H, id: &str| {
        let rid = h.send(Request::DescribeGroups(vec![id.into()]));
        match h.answer(rid) {
            Some(Response::DescribeGroups(v)) => v[0].clone(),
            other => panic!("{other:?}"),
        }
    };
    let d = describe(&mut h, "g");
    assert_eq!(
        (d.state, d.protocol_data.as_str(), d.members.len()),
        (GroupState::Stable, "range", 2)
    );
    assert_eq!(
        d.members[1].assignment,
        Bytes::from(format!("assign-{}", ids[1]))
    );
    assert_eq!(d.members[0].metadata, Bytes::from_static(b"r-meta"));
    h.join("g", &ids[0], None, RANGE);
    let d = describe(&mut h, "g");
    assert_eq!(d.state, GroupState::PreparingRebalance);
    assert!(d.protocol_data.is_empty() && d.members[0].assignment.is_empty());
    let d = describe(&mut h, "unknown");
    assert_eq!((d.error, d.state), (ErrorCode::None, GroupState::Dead));
    assert_eq!(describe(&mut h, "").error, ErrorCode::InvalidGroupId);
}

#[test]
fn delete_groups_table() {
    let mut h = H::new(cfg());
    h.stable_group("live", 1);
    h.commit("idle", "", -1, "t", 0, 1);
    let rid = h.send(Request::DeleteGroups(vec![
        "live".into(),
        "idle".into(),
        "none".into(),
        String::new(),
    ]));
    match h.answer(rid) {
        Some(Response::DeleteGroups(r)) => assert_eq!(
            r.iter().map(|(_, e)| *e).collect::<Vec<_>>(),
            vec![
                ErrorCode::NonEmptyGroup,
                ErrorCode::None,
                ErrorCode::GroupIdNotFound,
                ErrorCode::InvalidGroupId
            ]
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(h.state("idle"), GroupState::Dead);
    assert_eq!(h.fetched("idle", "t", 0), -1);
    assert!(matches!(
        h.log.last().map(|(_, r)| r),
        Some(Record::Offset { value: None, .. })
    ));
}

#[test]
fn in_flight_commit_does_not_resurrect_deleted_offsets() {
    let mut h = H::new(cfg());
    h.auto_ack = false;
    let rid = h.commit("g", "", -1, "t", 0, 5);
    // Move the commit's records into the log (append order), ack later.
    let (ack, _) = h.unacked.remove(0);
    h.send(Request::DeleteGroups(vec!["g".into()]));
    let outs = h.c.persisted(h.now, ack, Ok(()));
    h.absorb(outs);
    assert_eq!(h.commit_error(rid), Some(ErrorCode::None));
    assert_eq!(h.state("g"), GroupState::Dead);
    assert_restart_equivalent(&h);

    // Same for OffsetDelete.
    let mut h = H::new(cfg());
    h.commit("g", "", -1, "t", 1, 1);
    h.auto_ack = false;
    h.commit("g", "", -1, "t", 0, 5);
    let (ack, _) = h.unacked.remove(0);
    h.send(Request::OffsetDelete(OffsetDeleteRequest {
        group_id: "g".into(),
        topics: vec![TopicPartitions {
            topic: "t".into(),
            partitions: vec![0],
        }],
    }));
    let outs = h.c.persisted(h.now, ack, Ok(()));
    h.absorb(outs);
    assert_eq!(h.fetched("g", "t", 0), -1);
    assert_restart_equivalent(&h);
}

#[test]
fn offset_delete_table() {
    let mut h = H::new(cfg());
    let od = |h: &mut H, group: &str, topic: &str| {
        let rid = h.send(Request::OffsetDelete(OffsetDeleteRequest {
            group_id: group.into(),
            topics: vec![TopicPartitions {
                topic: topic.into(),
                partitions: vec![0],
            }],
        }));
        match h.answer(rid) {
            Some(Response::OffsetDelete(r)) => {
                (r.error, r.topics.first().map(|t| t.partitions[0].1))
            }
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(od(&mut h, "", "t").0, ErrorCode::InvalidGroupId);
    assert_eq!(od(&mut h, "none", "t").0, ErrorCode::GroupIdNotFound);
    h.commit("simple", "", -1, "t", 0, 1);
    assert_eq!(
        od(&mut h, "simple", "t"),
        (ErrorCode::None, Some(ErrorCode::None))
    );
    assert_eq!(h.fetched("simple", "t", 0), -1);

    let sub = encode_subscription(&["t"]);
    let (id, rid) = h.join_new("c", &[("range", &sub)]);
    h.join_answer(rid).unwrap();
    h.sync("c", &id, 1, &[]);
    h.commit("c", &id, 1, "t", 0, 1);
    h.commit("c", &id, 1, "u", 0, 1);
    assert_eq!(
        od(&mut h, "c", "t"),
        (ErrorCode::None, Some(ErrorCode::GroupSubscribedToTopic))
    );
    assert_eq!(
        od(&mut h, "c", "u"),
        (ErrorCode::None, Some(ErrorCode::None))
    );
    assert_eq!(h.fetched("c", "t", 0), 1);
    assert_eq!(h.fetched("c", "u", 0), -1);

    // Unparseable subscription: everything counts as subscribed.
    let (id, rid) = h.join_new("opaque", RANGE);
    h.join_answer(rid).unwrap();
    h.sync("opaque", &id, 1, &[]);
    assert_eq!(
        od(&mut h, "opaque", "t").1,
        Some(ErrorCode::GroupSubscribedToTopic)
    );

    // Non-consumer protocol with members.
    let mut req = join_req("connect", "", None, RANGE);
    req.protocol_type = "connect".into();
    req.require_known_member_id = false;
    h.send(Request::JoinGroup(req));
    assert_eq!(od(&mut h, "connect", "t").0, ErrorCode::NonEmptyGroup);
}

// ---------------------------------------------------------------- loading, replay, snapshot

#[test]
fn loading_answers_load_in_progress() {
    let mut c = GroupCoordinator::new(cfg());
    assert!(c.is_loading());
    assert!(c.tick(5).is_empty());
    assert_eq!(c.next_deadline_ms(), None);
    let reqs = vec![
        Request::JoinGroup(join_req("g", "", None, RANGE)),
        Request::Heartbeat(HeartbeatRequest {
            group_id: "g".into(),
            generation_id: 1,
            member_id: "m".into(),
            group_instance_id: None,
        }),
        Request::DescribeGroups(vec!["g".into()]),
        Request::DeleteGroups(vec!["g".into()]),
        Request::ListGroups(ListGroupsRequest::default()),
        Request::OffsetFetch(OffsetFetchRequest {
            group_id: "g".into(),
            topics: None,
        }),
    ];
    for (i, r) in reqs.into_iter().enumerate() {
        let outs = c.handle(0, RequestId(i as u64), r);
        let [Output::Respond { response, .. }] = outs.as_slice() else {
            panic!("{outs:?}")
        };
        let code = match response {
            Response::JoinGroup(j) => j.error,
            Response::Heartbeat(e) => *e,
            Response::DescribeGroups(v) => v[0].error,
            Response::DeleteGroups(v) => v[0].1,
            Response::ListGroups(l) => l.error,
            Response::OffsetFetch(f) => f.error,
            other => panic!("{other:?}"),
        };
        assert_eq!(code, ErrorCode::CoordinatorLoadInProgress);
    }
    c.finish_loading(0);
    assert_eq!(
        c.replay(Record::GroupMetadata {
            group_id: "g".into(),
            value: None
        }),
        Err(ReplayError::NotLoading)
    );
}

/// Replays `h.log` (encoded, as the server would store it) into a fresh
/// coordinator and checks it holds the same durable state, and that its
/// snapshot replays to the same state again.
fn assert_restart_equivalent(h: &H) -> GroupCoordinator {
    let mut restored = GroupCoordinator::new(h.c.config().clone());
    for (_, r) in &h.log {
        restored.replay_bytes(&r.encode().unwrap()).unwrap();
    }
    restored.finish_loading(h.now);
    assert_eq!(
        restored.snapshot(),
        h.c.snapshot(),
        "log replay == live durable state"
    );
    let mut again = GroupCoordinator::new(h.c.config().clone());
    for r in restored.snapshot() {
        again.replay(r).unwrap();
    }
    again.finish_loading(h.now);
    assert_eq!(
        again.snapshot(),
        restored.snapshot(),
        "snapshot replay is a fixpoint"
    );
    restored
}

#[test]
fn replay_restores_stable_groups_and_offsets() {
    let mut h = H::new(cfg());
    let (ids, gen) = h.stable_group("g", 3);
    h.commit("g", &ids[1], gen, "t", 0, 100);
    h.commit("g", &ids[1], gen, "t", 0, 101);
    h.commit("s", "", -1, "t", 3, 9);
    let mut restored = assert_restart_equivalent(&h);
    assert_eq!(restored.group_state("g"), GroupState::Stable);
    assert_eq!(restored.generation("g"), Some(gen));
    assert_eq!(restored.committed_offsets("g").unwrap()[0].2.offset, 101);
    assert_eq!(restored.group_state("s"), GroupState::Empty);
    // Members carry on with their generation after the restart.
    let outs = restored.handle(
        h.now,
        RequestId(1),
        Request::Heartbeat(HeartbeatRequest {
            group_id: "g".into(),
            generation_id: gen,
            member_id: ids[2].clone(),
            group_instance_id: None,
        }),
    );
    assert!(matches!(
        outs.as_slice(),
        [Output::Respond {
            response: Response::Heartbeat(ErrorCode::None),
            ..
        }]
    ));
    let outs = restored.handle(
        h.now,
        RequestId(2),
        Request::SyncGroup(SyncGroupRequest {
            group_id: "g".into(),
            generation_id: gen,
            member_id: ids[1].clone(),
            group_instance_id: None,
            protocol_type: None,
            protocol_name: None,
            assignments: vec![],
        }),
    );
    assert!(
        matches!(outs.as_slice(), [Output::Respond { response: Response::SyncGroup(s), .. }] if s.assignment == format!("assign-{}", ids[1]).as_bytes())
    );
    // Restored sessions start at load time and expire normally.
    let outs = restored.tick(h.now + SESSION as u64);
    assert!(
        matches!(outs.last(), Some(Output::Persist(_))),
        "Empty generation persisted"
    );
    assert_eq!(
        restored.group_state("g"),
        GroupState::Empty,
        "every session expired"
    );
}

#[test]
fn replay_of_tombstones_and_deleted_groups() {
    let mut h = H::new(cfg());
    let (ids, _) = h.stable_group("g", 1);
    h.commit("d", "", -1, "t", 0, 1);
    h.send(Request::DeleteGroups(vec!["d".into()]));
    leave(&mut h, "g", &[(&ids[0], None)]);
    h.advance(1_000); // reap "g"
    let restored = assert_restart_equivalent(&h);
    assert_eq!(restored.group_count(), 0);
    assert!(h.c.snapshot().is_empty());
}

#[test]
fn replay_rejects_corrupt_records() {
    let mut c = GroupCoordinator::new(cfg());
    assert!(matches!(
        c.replay_bytes(&[1, 7, 0]),
        Err(ReplayError::Decode(DecodeError::UnknownKind(7)))
    ));
    assert!(matches!(
        c.replay_bytes(&[]),
        Err(ReplayError::Decode(DecodeError::Truncated))
    ));
    assert_eq!(c.group_count(), 0);
}

#[test]
fn replay_sanitizes_inconsistent_metadata() {
    let mut c = GroupCoordinator::new(cfg());
    let member = MemberRecord {
        member_id: "m".into(),
        group_instance_id: None,
        client_id: "c".into(),
        client_host: "h".into(),
        rebalance_timeout_ms: 1000,
        session_timeout_ms: 6000,
        subscription: Bytes::new(),
        assignment: Bytes::new(),
    };
    // Members without a protocol, and a leader that is not a member.
    c.replay(Record::GroupMetadata {
        group_id: "a".into(),
        value: Some(GroupMetadataValue {
            protocol_type: "consumer".into(),
            generation_id: 4,
            protocol_name: None,
            leader: Some("x".into()),
            state_timestamp_ms: 1,
            members: vec![member.clone()],
        }),
    })
    .unwrap();
    c.replay(Record::GroupMetadata {
        group_id: "b".into(),
        value: Some(GroupMetadataValue {
            protocol_type: "consumer".into(),
            generation_id: 4,
            protocol_name: Some("range".into()),
            leader: Some("x".into()),
            state_timestamp_ms: 1,
            members: vec![member.clone(), member],
        }),
    })
    .unwrap();
    c.finish_loading(0);
    assert_eq!(c.group_state("a"), GroupState::Empty);
    assert_eq!(c.group_state("b"), GroupState::Stable);
    c.check_invariants().unwrap();
}

// ---------------------------------------------------------------- placement

#[test]
fn offsets_partition_matches_java_hash_code() {
    // Values of java.lang.String#hashCode.
    assert_eq!(offsets_partition_for_group("", 50), 0);
    assert_eq!(offsets_partition_for_group("a", 1000), 97);
    assert_eq!(offsets_partition_for_group("abc", 1_000_000), 96354);
    assert_eq!(offsets_partition_for_group("hello", 1 << 30), 99162322);
    // Surrogate pair: hashed as two UTF-16 units.
    assert_eq!(
        offsets_partition_for_group("\u{1F600}", 1 << 30),
        55357 * 31 + 56832
    );
    // Negative Java hash: masked, not abs'ed. "polygenelubricants".hashCode() == Integer.MIN_VALUE.
    assert_eq!(offsets_partition_for_group("polygenelubricants", 50), 0);
    assert_eq!(offsets_partition_for_group("x", 0), 0);
    assert_eq!(shard_for_group("x", 0), 0);
}

#[test]
fn group_and_its_log_partition_share_a_shard() {
    for shards in 1..8 {
        let partitions = shards * 7;
        for i in 0..200 {
            let g = format!("group-{i}");
            let p = offsets_partition_for_group(&g, partitions);
            assert_eq!(
                shard_for_offsets_partition(p, shards),
                shard_for_group(&g, shards)
            );
        }
    }
}

// ---------------------------------------------------------------- property test

mod prop {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        JoinNew {
            group: u8,
            v4: bool,
            proto: u8,
        },
        JoinStatic {
            group: u8,
            instance: u8,
            proto: u8,
        },
        Rejoin {
            group: u8,
            member: u8,
            proto: u8,
        },
        Sync {
            group: u8,
            member: u8,
            stale: bool,
        },
        Heartbeat {
            group: u8,
            member: u8,
        },
        Leave {
            group: u8,
            member: u8,
        },
        Commit {
            group: u8,
            member: u8,
            simple: bool,
            partition: u8,
        },
        OffsetDelete {
            group: u8,
            partition: u8,
        },
        Delete {
            group: u8,
        },
        Ack {
            ok: bool,
        },
        Advance {
            ms: u16,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..2, any::<bool>(), 0u8..3).prop_map(|(group, v4, proto)| Op::JoinNew {
                group,
                v4,
                proto
            }),
            (0u8..2, 0u8..3, 0u8..3).prop_map(|(group, instance, proto)| Op::JoinStatic {
                group,
                instance,
                proto
            }),
            (0u8..2, any::<u8>(), 0u8..3).prop_map(|(group, member, proto)| Op::Rejoin {
                group,
                member,
                proto
            }),
            (0u8..2, any::<u8>(), any::<bool>()).prop_map(|(group, member, stale)| Op::Sync {
                group,
                member,
                stale
            }),
            (0u8..2, any::<u8>()).prop_map(|(group, member)| Op::Heartbeat { group, member }),
            (0u8..2, any::<u8>()).prop_map(|(group, member)| Op::Leave { group, member }),
            (0u8..2, any::<u8>(), any::<bool>(), 0u8..3).prop_map(
                |(group, member, simple, partition)| Op::Commit {
                    group,
                    member,
                    simple,
                    partition
                }
            ),
            (0u8..2, 0u8..3).prop_map(|(group, partition)| Op::OffsetDelete { group, partition }),
            (0u8..2).prop_map(|group| Op::Delete { group }),
            any::<bool>().prop_map(|ok| Op::Ack { ok }),
            (0u16..20_000).prop_map(|ms| Op::Advance { ms }),
        ]
    }

    fn protos(p: u8) -> Vec<(&'static str, &'static [u8])> {
        match p {
            0 => vec![("range", b"a")],
            1 => vec![("range", b"b"), ("roundrobin", b"b")],
            _ => vec![("roundrobin", b"c"), ("range", b"c")],
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Random event sequences: invariants hold after every step (checked
        /// inside the coordinator in debug builds), generations never go back,
        /// every request is answered exactly once, Stable groups have an
        /// assignment for every member, and the log replays to the same state.
        #[test]
        fn random_sequences_hold_invariants(ops in proptest::collection::vec(op(), 1..80), delay in prop_oneof![Just(0u64), Just(3_000u64)]) {
            let mut h = H::new(Config { initial_rebalance_delay_ms: delay, members_per_group_max: 4, pending_commits_max: 3, ..cfg() });
            h.auto_ack = false;
            let groups = ["g0", "g1"];
            let mut known: Vec<String> = Vec::new();
            let mut sent: Vec<RequestId> = Vec::new();
            let mut generations: BTreeMap<&str, i32> = BTreeMap::new();
            for op in ops {
                let pick = |i: u8, known: &Vec<String>| known.get(i as usize % known.len().max(1)).cloned().unwrap_or_default();
                match op {
                    Op::JoinNew { group, v4, proto } => {
                        let mut req = join_req(groups[group as usize], "", None, &protos(proto));
                        req.require_known_member_id = v4;
                        sent.push(h.send(Request::JoinGroup(req)));
                    }
                    Op::JoinStatic { group, instance, proto } => {
                        let inst = format!("inst{instance}");
                        sent.push(h.join(groups[group as usize], "", Some(&inst), &protos(proto)));
                    }
                    Op::Rejoin { group, member, proto } => {
                        let m = pick(member, &known);
                        sent.push(h.join(groups[group as usize], &m, None, &protos(proto)));
                    }
                    Op::Sync { group, member, stale } => {
                        let g = groups[group as usize];
                        let m = pick(member, &known);
                        let gen = h.c.generation(g).unwrap_or(0) - i32::from(stale);
                        let assignments: Vec<(String, Vec<u8>)> = known.iter().map(|k| (k.clone(), k.as_bytes().to_vec())).collect();
                        let refs: Vec<(&str, &[u8])> = assignments.iter().map(|(a, b)| (a.as_str(), b.as_slice())).collect();
                        sent.push(h.sync(g, &m, gen, &refs));
                    }
                    Op::Heartbeat { group, member } => {
                        let g = groups[group as usize];
                        let gen = h.c.generation(g).unwrap_or(0);
                        h.heartbeat(g, &pick(member, &known), gen);
                    }
                    Op::Leave { group, member } => {
                        leave(&mut h, groups[group as usize], &[(&pick(member, &known), None)]);
                    }
                    Op::Commit { group, member, simple, partition } => {
                        let g = groups[group as usize];
                        let (m, gen) = if simple { (String::new(), -1) } else { (pick(member, &known), h.c.generation(g).unwrap_or(0)) };
                        sent.push(h.commit(g, &m, gen, "t", i32::from(partition), 5));
                    }
                    Op::OffsetDelete { group, partition } => {
                        h.send(Request::OffsetDelete(OffsetDeleteRequest { group_id: groups[group as usize].into(), topics: vec![TopicPartitions { topic: "t".into(), partitions: vec![i32::from(partition)] }] }));
                    }
                    Op::Delete { group } => { h.send(Request::DeleteGroups(vec![groups[group as usize].into()])); }
                    Op::Ack { ok } => h.ack_all(if ok { Ok(()) } else { Err(ErrorCode::CoordinatorNotAvailable) }),
                    Op::Advance { ms } => h.advance(u64::from(ms)),
                }
                // Learn member ids from answers.
                for resp in h.answers.values() {
                    if let Response::JoinGroup(j) = resp {
                        if !j.member_id.is_empty() && !known.contains(&j.member_id) {
                            known.push(j.member_id.clone());
                        }
                    }
                }
                for g in groups {
                    if let Some(gen) = h.c.generation(g) {
                        let prev = generations.entry(g).or_insert(gen);
                        // Generation is monotonic while the group lives (a
                        // deleted group restarts from 0).
                        prop_assert!(gen >= *prev || h.c.group_state(g) == GroupState::Empty || gen <= 1, "generation went back: {prev} -> {gen}");
                        *prev = gen;
                    } else {
                        generations.remove(g);
                    }
                }
                h.c.check_invariants().map_err(TestCaseError::fail)?;
            }
            // Drain: deliver acks, then run time forward until nothing is due.
            h.ack_all(Ok(()));
            for _ in 0..50 {
                match h.c.next_deadline_ms() {
                    Some(d) if h.c.group_count() > 0 => {
                        h.now = h.now.max(d);
                        let outs = h.c.tick(h.now);
                        h.absorb(outs);
                    }
                    _ => break,
                }
            }
            for rid in &sent {
                prop_assert!(h.answer(*rid).is_some(), "request {rid:?} never answered");
            }
            assert_restart_equivalent(&h);
        }
    }
}

// ---- partitioned ownership: load and unload with `__consumer_offsets` leadership ----------

const PARTS: usize = 4;

/// Two group ids stored in different partitions (of `PARTS`), with their partitions.
fn groups_in_two_partitions() -> ((String, usize), (String, usize)) {
    let a = "ga".to_string();
    let pa = offsets_partition_for_group(&a, PARTS);
    let b = (0..100)
        .map(|i| format!("gb{i}"))
        .find(|g| offsets_partition_for_group(g, PARTS) != pa)
        .expect("a group of another partition");
    let pb = offsets_partition_for_group(&b, PARTS);
    ((a, pa), (b, pb))
}

fn partitioned() -> H {
    let mut h = H::new(cfg());
    h.c = GroupCoordinator::new_partitioned(cfg(), PARTS);
    h
}

fn fetch_error(h: &mut H, group: &str) -> ErrorCode {
    let rid = h.send(Request::OffsetFetch(OffsetFetchRequest {
        group_id: group.into(),
        topics: None,
    }));
    match h.answer(rid) {
        Some(Response::OffsetFetch(r)) => r.error,
        other => panic!("{other:?}"),
    }
}

#[test]
fn partitioned_coordinator_answers_only_for_loaded_partitions() {
    let ((a, pa), (b, pb)) = groups_in_two_partitions();
    let mut h = partitioned();
    assert_eq!(h.c.partition_load(pa), None);
    assert_eq!(fetch_error(&mut h, &a), ErrorCode::NotCoordinator);
    assert_eq!(h.heartbeat(&a, "m", 1), ErrorCode::NotCoordinator);
    assert!(h.c.begin_partition_load(pa).is_empty());
    assert_eq!(h.c.partition_load(pa), Some(PartitionLoad::Loading));
    assert_eq!(
        fetch_error(&mut h, &a),
        ErrorCode::CoordinatorLoadInProgress
    );
    let rid = h.commit(&a, "", -1, "t", 0, 5);
    assert_eq!(
        h.commit_error(rid),
        Some(ErrorCode::CoordinatorLoadInProgress)
    );
    assert!(h.c.finish_partition_load(h.now, pa));
    assert_eq!(h.c.active_partitions(), vec![pa]);
    assert_eq!(fetch_error(&mut h, &a), ErrorCode::None);
    let rid = h.commit(&a, "", -1, "t", 0, 5);
    assert_eq!(h.commit_error(rid), Some(ErrorCode::None));
    assert_eq!(h.fetched(&a, "t", 0), 5);
    // The other partition is still someone else's.
    assert_eq!(fetch_error(&mut h, &b), ErrorCode::NotCoordinator);
    let rid = h.send(Request::DescribeGroups(vec![a.clone(), b.clone()]));
    match h.answer(rid) {
        Some(Response::DescribeGroups(d)) => {
            assert_eq!(d[0].error, ErrorCode::None);
            assert_eq!(d[0].state, GroupState::Empty);
            assert_eq!(d[1].error, ErrorCode::NotCoordinator);
        }
        other => panic!("{other:?}"),
    }
    let rid = h.send(Request::DeleteGroups(vec![b.clone()]));
    assert_eq!(
        h.answer(rid),
        Some(&Response::DeleteGroups(vec![(
            b.clone(),
            ErrorCode::NotCoordinator
        )]))
    );
    // ListGroups lists the loaded groups only.
    let rid = h.send(Request::ListGroups(ListGroupsRequest::default()));
    match h.answer(rid) {
        Some(Response::ListGroups(l)) => {
            assert_eq!(
                l.groups
                    .iter()
                    .map(|g| g.group_id.as_str())
                    .collect::<Vec<_>>(),
                [a.as_str()]
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h.c.partition_load(pb), None);
}

#[test]
fn unload_answers_parked_requests_and_pending_commits_with_not_coordinator() {
    let ((a, pa), _) = groups_in_two_partitions();
    let mut h = partitioned();
    h.c.begin_partition_load(pa);
    h.c.finish_partition_load(h.now, pa);
    let (ids, gen) = h.stable_group(&a, 2);
    // A commit whose append is still in flight, and a new member parked in a rebalance.
    h.auto_ack = false;
    let commit = h.commit(&a, &ids[0], gen, "t", 0, 42);
    assert_eq!(h.commit_error(commit), None);
    let (_, parked) = h.join_new(&a, RANGE);
    assert!(h.join_answer(parked).is_none(), "parked in the rebalance");
    let outs = h.c.unload_partition(pa);
    h.absorb(outs);
    assert_eq!(h.commit_error(commit), Some(ErrorCode::NotCoordinator));
    assert_eq!(
        h.join_answer(parked).expect("answered").error,
        ErrorCode::NotCoordinator
    );
    assert_eq!(h.c.group_count(), 0);
    assert_eq!(h.c.partition_load(pa), None);
    // The append's late acknowledgement changes nothing and answers nobody twice.
    let before = h.answers.len();
    h.ack_all(Ok(()));
    assert_eq!(h.answers.len(), before);
    assert_eq!(h.heartbeat(&a, &ids[1], gen), ErrorCode::NotCoordinator);
    h.c.check_invariants().expect("invariants");
}

#[test]
fn a_new_owner_loads_the_groups_from_the_partitions_log() {
    let ((a, pa), (b, pb)) = groups_in_two_partitions();
    let mut old = partitioned();
    for p in [pa, pb] {
        old.c.begin_partition_load(p);
        old.c.finish_partition_load(old.now, p);
    }
    let (ids, gen) = old.stable_group(&a, 2);
    old.commit(&a, &ids[0], gen, "t", 0, 100);
    old.commit(&a, &ids[1], gen, "t", 1, 200);
    old.commit(&b, "", -1, "t", 0, 7);
    // The new owner of `pa` replays that partition's records only.
    let mut new = partitioned();
    new.now = old.now + 50;
    new.c.begin_partition_load(pa);
    let mut other = 0;
    for (_, r) in &old.log {
        let bytes = r.encode().expect("encode");
        match new.c.replay_partition_bytes(pa, &bytes) {
            Ok(()) => {}
            Err(ReplayError::OtherPartition { expected, actual }) => {
                assert_eq!((expected, actual), (pa, pb));
                other += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(other > 0, "b's records are not pa's");
    assert_eq!(
        fetch_error(&mut new, &a),
        ErrorCode::CoordinatorLoadInProgress
    );
    assert!(new.c.finish_partition_load(new.now, pa));
    assert_eq!(new.c.group_state(&a), GroupState::Stable);
    assert_eq!(new.c.generation(&a), Some(gen));
    assert_eq!(new.fetched(&a, "t", 0), 100);
    assert_eq!(new.fetched(&a, "t", 1), 200);
    // Members carry on with their generation on the new coordinator.
    assert_eq!(new.heartbeat(&a, &ids[1], gen), ErrorCode::None);
    assert_eq!(fetch_error(&mut new, &b), ErrorCode::NotCoordinator);
    // Same durable state as the old owner had for `pa`.
    let of_pa = |c: &GroupCoordinator| -> Vec<Record> {
        c.snapshot()
            .into_iter()
            .filter(|r| offsets_partition_for_group(r.group_id(), PARTS) == pa)
            .collect()
    };
    assert_eq!(of_pa(&new.c), of_pa(&old.c));
    // A record replayed outside a load is refused.
    let r = old.log[0].1.encode().expect("encode");
    assert_eq!(
        new.c.replay_partition_bytes(pa, &r),
        Err(ReplayError::NotLoading)
    );
    // Reloading (a new leader epoch) starts over from the log.
    new.c.begin_partition_load(pa);
    assert_eq!(new.c.group_count(), 0);
    assert_eq!(
        fetch_error(&mut new, &a),
        ErrorCode::CoordinatorLoadInProgress
    );
    assert!(new.c.finish_partition_load(new.now, pa));
    assert_eq!(fetch_error(&mut new, &a), ErrorCode::None);
    assert_eq!(new.c.group_count(), 0, "nothing replayed this time");
}
