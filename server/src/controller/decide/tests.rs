//! Unit tests of every decision rule, and seeded random event sequences checking the
//! invariants (and the KIP-966 safety property) after every step.

use std::collections::{BTreeMap, BTreeSet};

use shardlog_engine::io::sim::SplitMix;

use super::*;
use crate::config::{BrokerConfig, DefaultFlush};
use crate::controller::metadata;
use shardlog_engine::FlushPolicy;

const TIMEOUT: u64 = 1000;
const ID: u128 = 77;

fn reg(id: i32, incarnation: u128, previous_epoch: i64) -> Registration {
    Registration {
        id,
        incarnation,
        host: "h".into(),
        port: 9000 + id as u16,
        previous_epoch,
    }
}

fn apply_all(image: &mut ClusterMeta, recs: &[MetadataRecord]) {
    for r in recs {
        image.apply(r);
    }
}

/// Brokers `ids` registered and unfenced at time 0, and topic "t" with these assignments and
/// configs.
fn cluster(
    ids: &[i32],
    assignments: Vec<Vec<i32>>,
    configs: &[(&str, &str)],
) -> (ClusterMeta, Sessions) {
    let mut image = ClusterMeta::default();
    let mut s = Sessions::new(TIMEOUT);
    for &id in ids {
        let (epoch, recs) = s
            .register(&image, &reg(id, id as u128, -1), 0)
            .expect("register");
        apply_all(&mut image, &recs);
        let (a, recs) = s.heartbeat(&image, &hb(id, epoch), 0);
        assert_eq!(a.error, errors::NONE);
        apply_all(&mut image, &recs);
        assert!(!image.brokers[&id].fenced);
    }
    if !assignments.is_empty() {
        let configs = configs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        add_topic(&mut image, "t", ID, configs, assignments);
    }
    (image, s)
}

/// A new topic as CreateTopic makes it: leader = first replica, ISR = replicas, epochs 0.
fn add_topic(
    image: &mut ClusterMeta,
    name: &str,
    id: u128,
    configs: BTreeMap<String, String>,
    assignments: Vec<Vec<i32>>,
) {
    let partitions = assignments.into_iter().map(PartitionMeta::new).collect();
    image.topics.insert(
        name.to_string(),
        TopicMeta {
            name: name.to_string(),
            id,
            partitions,
            configs,
        },
    );
}

fn hb(id: i32, epoch: i64) -> Heartbeat {
    Heartbeat {
        id,
        epoch,
        caught_up: true,
        want_shutdown: false,
    }
}

fn epoch_of(image: &ClusterMeta, id: i32) -> i64 {
    image.brokers[&id].epoch
}

fn part(image: &ClusterMeta, p: u32) -> &PartitionMeta {
    &image.topics["t"].partitions[p as usize]
}

/// Partition `p`'s (leader, ISR, leader epoch, partition epoch).
fn epochs(image: &ClusterMeta, p: u32) -> (i32, Vec<i32>, i32, i32) {
    let pm = part(image, p);
    (
        pm.leader,
        pm.isr.clone(),
        pm.leader_epoch,
        pm.partition_epoch,
    )
}

/// Overwrites partition `p`'s state (a PartitionChange with the next partition epoch).
fn set_partition(image: &mut ClusterMeta, p: u32, leader: i32, isr: &[i32], elr: &[i32]) {
    let cur = part(image, p).clone();
    let rec = MetadataRecord::PartitionChange {
        name: "t".into(),
        id: ID,
        partition: p,
        leader,
        leader_epoch: cur.leader_epoch + i32::from(leader != cur.leader),
        partition_epoch: cur.partition_epoch + 1,
        replicas: cur.replicas.clone(),
        isr: isr.to_vec(),
        elr: elr.to_vec(),
    };
    assert!(image.apply(&rec));
}

fn alter(image: &ClusterMeta, p: u32, isr: &[i32]) -> AlterPartitionReq {
    let pm = part(image, p);
    AlterPartitionReq {
        topic: "t".into(),
        topic_id: ID,
        partition: p,
        leader: pm.leader,
        leader_epoch: pm.leader_epoch,
        broker_epoch: epoch_of(image, pm.leader),
        partition_epoch: pm.partition_epoch,
        new_isr: isr.iter().map(|&id| (id, epoch_of(image, id))).collect(),
    }
}

// ----- registration ----------------------------------------------------------------------------

#[test]
fn registration_hands_out_unique_growing_epochs_and_starts_fenced() {
    let mut image = ClusterMeta {
        applied_index: 40,
        ..ClusterMeta::default()
    };
    let mut s = Sessions::new(TIMEOUT);
    let (e1, recs) = s.register(&image, &reg(1, 11, -1), 0).unwrap();
    assert_eq!(e1, 41, "above the applied index");
    assert_eq!(
        recs,
        vec![MetadataRecord::RegisterBroker {
            id: 1,
            epoch: 41,
            incarnation: 11,
            host: "h".into(),
            port: 9001
        }]
    );
    apply_all(&mut image, &recs);
    assert!(image.brokers[&1].fenced);
    // Decided before the first commit moved the applied index: still unique.
    let (e2, recs) = s.register(&image, &reg(2, 22, -1), 0).unwrap();
    assert_eq!(e2, 42);
    apply_all(&mut image, &recs);
    // A broker unregistered since: the applied index has passed its registration, so no
    // later epoch repeats its epoch.
    image.apply(&MetadataRecord::UnregisterBroker { id: 2, epoch: 42 });
    image.applied_index = 50;
    let (e3, _) = s.register(&image, &reg(2, 23, -1), 0).unwrap();
    assert_eq!(e3, 51);
}

#[test]
fn same_incarnation_gets_its_epoch_back_and_changes_nothing() {
    let (image, mut s) = cluster(&[1], vec![vec![1]], &[]);
    let e = epoch_of(&image, 1);
    assert_eq!(s.register(&image, &reg(1, 1, -1), 5), Ok((e, vec![])));
    // The same incarnation claiming another address is a broken request.
    let mut other = reg(1, 1, -1);
    other.port = 1;
    assert_eq!(
        s.register(&image, &other, 5).map_err(|r| r.code),
        Err(errors::INVALID_REQUEST)
    );
}

#[test]
fn another_incarnation_of_a_live_broker_is_refused_until_its_session_ends() {
    let (mut image, mut s) = cluster(&[1, 2], vec![vec![1, 2]], &[]);
    let old = epoch_of(&image, 1);
    let err = s.register(&image, &reg(1, 99, old), 500).unwrap_err();
    assert_eq!(err.code, errors::DUPLICATE_BROKER_REGISTRATION);
    assert!(err.message.unwrap().contains("another live incarnation"));
    // Broker 2 heartbeats, broker 1 does not: after the timeout, the new incarnation may
    // register; the old one stops leading at once (it is fenced by the registration).
    let (_, recs) = s.heartbeat(&image, &hb(2, epoch_of(&image, 2)), TIMEOUT + 1);
    assert!(recs.is_empty());
    let (e, recs) = s.register(&image, &reg(1, 99, old), TIMEOUT + 1).unwrap();
    assert!(e > old);
    apply_all(&mut image, &recs);
    let p = part(&image, 0);
    assert_eq!((p.leader, p.isr.clone(), p.leader_epoch), (2, vec![2], 1));
    assert!(image.brokers[&1].fenced);
}

#[test]
fn registration_refuses_bad_input_and_too_many_brokers() {
    let mut s = Sessions::new(TIMEOUT);
    let mut image = ClusterMeta::default();
    assert_eq!(
        s.register(&image, &reg(-1, 1, -1), 0).unwrap_err().code,
        errors::INVALID_REQUEST
    );
    let mut r = reg(1, 1, -1);
    r.host.clear();
    assert_eq!(
        s.register(&image, &r, 0).unwrap_err().code,
        errors::INVALID_REQUEST
    );
    for id in 0..MAX_BROKERS as i32 {
        image.apply(&MetadataRecord::RegisterBroker {
            id,
            epoch: i64::from(id) + 1,
            incarnation: 1,
            host: "h".into(),
            port: 1,
        });
    }
    let err = s.register(&image, &reg(5000, 1, -1), 0).unwrap_err();
    assert_eq!(err.code, errors::INVALID_REQUEST);
    // The session table never holds more than the registered brokers (plus the one
    // registering now).
    let _ = s.expire(&image, 0);
    assert!(s.len() <= image.brokers.len());
}

// ----- heartbeats, fencing, shutdown -------------------------------------------------------------

#[test]
fn heartbeat_refuses_stale_and_unknown_brokers() {
    let (image, mut s) = cluster(&[1], vec![], &[]);
    let e = epoch_of(&image, 1);
    let (a, recs) = s.heartbeat(&image, &hb(1, e - 1), 1);
    assert_eq!((a.error, recs.len()), (errors::STALE_BROKER_EPOCH, 0));
    let (a, _) = s.heartbeat(&image, &hb(7, e), 1);
    assert_eq!(a.error, errors::BROKER_ID_NOT_REGISTERED);
    assert!(a.fenced);
}

#[test]
fn a_fenced_broker_is_unfenced_only_once_caught_up() {
    let mut image = ClusterMeta::default();
    let mut s = Sessions::new(TIMEOUT);
    let (e, recs) = s.register(&image, &reg(1, 1, -1), 0).unwrap();
    apply_all(&mut image, &recs);
    let (a, recs) = s.heartbeat(
        &image,
        &Heartbeat {
            caught_up: false,
            ..hb(1, e)
        },
        1,
    );
    assert_eq!((a.fenced, recs.len()), (true, 0));
    let (a, recs) = s.heartbeat(&image, &hb(1, e), 2);
    assert!(!a.fenced);
    assert_eq!(
        recs,
        vec![MetadataRecord::BrokerState {
            id: 1,
            epoch: e,
            fenced: false,
            shutting_down: false
        }]
    );
    apply_all(&mut image, &recs);
    // Unfenced already: nothing more to write.
    let (_, recs) = s.heartbeat(&image, &hb(1, e), 3);
    assert!(recs.is_empty());
}

#[test]
fn expiry_fences_moves_leaders_and_shrinks_isrs() {
    let (mut image, mut s) = cluster(&[1, 2, 3], vec![vec![1, 2, 3], vec![2, 1], vec![1]], &[]);
    let (e2, e3) = (epoch_of(&image, 2), epoch_of(&image, 3));
    assert!(s.expire(&image, TIMEOUT).is_empty(), "inside the session");
    s.heartbeat(&image, &hb(2, e2), 600);
    s.heartbeat(&image, &hb(3, e3), 600);
    let recs = s.expire(&image, TIMEOUT + 1);
    assert!(matches!(
        recs[0],
        MetadataRecord::BrokerState {
            id: 1,
            fenced: true,
            ..
        }
    ));
    apply_all(&mut image, &recs);
    assert_eq!(epochs(&image, 0), (2, vec![2, 3], 1, 1));
    let p1 = part(&image, 1);
    assert_eq!(
        (p1.leader, p1.isr.clone(), p1.leader_epoch),
        (2, vec![2], 0),
        "a follower just leaves"
    );
    // The last ISR member: offline, the ISR kept as the last known.
    let p2 = part(&image, 2);
    assert_eq!(
        (p2.leader, p2.isr.clone(), p2.leader_epoch),
        (NO_LEADER, vec![1], 1)
    );
    // Expiring again writes nothing.
    assert!(s.expire(&image, TIMEOUT + 2).is_empty());
    // Broker 1 comes back (same incarnation, heartbeats caught up): it leads its offline
    // partition again, and only that one.
    let (a, recs) = s.heartbeat(&image, &hb(1, epoch_of(&image, 1)), TIMEOUT + 3);
    assert!(!a.fenced);
    apply_all(&mut image, &recs);
    assert_eq!(recs.len(), 2);
    let p2 = part(&image, 2);
    assert_eq!(
        (p2.leader, p2.isr.clone(), p2.leader_epoch),
        (1, vec![1], 2)
    );
    assert_eq!(
        part(&image, 0).leader,
        2,
        "no automatic move back to the preferred leader"
    );
}

#[test]
fn a_new_controller_gives_every_live_broker_a_full_session() {
    let (image, _) = cluster(&[1, 2], vec![vec![1, 2]], &[]);
    let mut fresh = Sessions::new(TIMEOUT);
    assert!(fresh.expire(&image, 50_000).is_empty());
    assert_eq!(fresh.len(), 2);
    assert!(fresh.expire(&image, 50_000 + TIMEOUT).is_empty());
    // Fence 1 (p0 moves to 2), fence 2 (p0 goes offline).
    assert_eq!(fresh.expire(&image, 50_001 + TIMEOUT).len(), 4);
}

#[test]
fn a_refused_controller_connection_retires_the_broker_at_once() {
    let (mut image, mut s) = cluster(&[1, 2, 3], vec![vec![1, 2, 3]], &[]);
    for id in [1, 2, 3] {
        s.heartbeat(&image, &hb(id, epoch_of(&image, id)), 100);
    }
    // Broker 1's port refused a connection at 150, well inside its session: it is retired
    // (shutting down, not fenced: still listed to clients), its leadership moves.
    let refused = BTreeMap::from([(1, 150)]);
    let recs = s.expire_with(&image, 200, &refused);
    assert!(matches!(
        recs[0],
        MetadataRecord::BrokerState {
            id: 1,
            fenced: false,
            shutting_down: true,
            ..
        }
    ));
    apply_all(&mut image, &recs);
    assert_eq!(
        (part(&image, 0).leader, part(&image, 0).isr.clone()),
        (2, vec![2, 3])
    );
    assert!(s.expire_with(&image, 300, &refused).is_empty(), "once");
    // Its session times out later: fenced then.
    s.heartbeat(&image, &hb(2, epoch_of(&image, 2)), TIMEOUT);
    s.heartbeat(&image, &hb(3, epoch_of(&image, 3)), TIMEOUT);
    let recs = s.expire_with(&image, TIMEOUT + 101, &refused);
    assert!(matches!(
        recs[..],
        [MetadataRecord::BrokerState {
            id: 1,
            fenced: true,
            ..
        }]
    ));
}

#[test]
fn a_heartbeat_after_the_refusal_keeps_or_takes_the_broker_back() {
    let (mut image, mut s) = cluster(&[1, 2], vec![vec![1, 2]], &[]);
    s.heartbeat(&image, &hb(1, epoch_of(&image, 1)), 300);
    s.heartbeat(&image, &hb(2, epoch_of(&image, 2)), 300);
    // Renewed after the refusal: nothing happens.
    let refused = BTreeMap::from([(2, 250)]);
    assert!(s.expire_with(&image, 310, &refused).is_empty());
    // Refused after its last heartbeat: retired; then the same process heartbeats (it was
    // reachable after all): back, and it leads where a leader is missing.
    let refused = BTreeMap::from([(1, 400)]);
    let recs = s.expire_with(&image, 410, &refused);
    apply_all(&mut image, &recs);
    assert!(image.brokers[&1].shutting_down && !image.brokers[&1].fenced);
    assert_eq!(part(&image, 0).leader, 2);
    let (a, recs) = s.heartbeat(&image, &hb(1, epoch_of(&image, 1)), 420);
    apply_all(&mut image, &recs);
    assert!(!a.fenced);
    assert!(!image.brokers[&1].shutting_down);
    assert!(s.expire_with(&image, 430, &refused).is_empty());
}

#[test]
fn a_refused_broker_is_retired_at_once_by_a_new_controller_too() {
    let (image, _) = cluster(&[1, 2, 3], vec![vec![1, 2, 3]], &[]);
    let mut fresh = Sessions::new(TIMEOUT);
    // The refusal came before this controller's term: it never heard from broker 1.
    let recs = fresh.expire_with(&image, 50_000, &BTreeMap::from([(1, 10)]));
    assert!(matches!(
        recs[0],
        MetadataRecord::BrokerState {
            id: 1,
            shutting_down: true,
            ..
        }
    ));
    // The others keep their full session.
    assert!(recs
        .iter()
        .all(|r| !matches!(r, MetadataRecord::BrokerState { id: 2 | 3, .. })));
}

#[test]
fn a_registration_replaces_a_refused_incarnation_inside_its_session() {
    let (mut image, mut s) = cluster(&[1, 2], vec![vec![1, 2]], &[]);
    s.heartbeat(&image, &hb(1, epoch_of(&image, 1)), 100);
    // kill -9 and restart faster than the session timeout: refused at 150, retired, then the
    // new process registers at once (no DUPLICATE_BROKER_REGISTRATION wait).
    let refused = BTreeMap::from([(1, 150)]);
    let recs = s.expire_with(&image, 160, &refused);
    apply_all(&mut image, &recs);
    let (e1, recs) = s
        .register(&image, &reg(1, 1234, -1), 170)
        .expect("the dead one is gone");
    apply_all(&mut image, &recs);
    assert_eq!(epoch_of(&image, 1), e1);
    let (a, recs) = s.heartbeat(&image, &hb(1, e1), 175);
    apply_all(&mut image, &recs);
    assert!(!a.fenced);
    assert!(!image.brokers[&1].shutting_down);
    assert!(s.expire_with(&image, 180, &refused).is_empty());
}

#[test]
fn controlled_shutdown_moves_leadership_then_says_ok() {
    let (mut image, mut s) = cluster(&[1, 2], vec![vec![1, 2], vec![2, 1], vec![1]], &[]);
    let e1 = epoch_of(&image, 1);
    let bye = Heartbeat {
        want_shutdown: true,
        ..hb(1, e1)
    };
    let (a, recs) = s.heartbeat(&image, &bye, 10);
    assert!(matches!(
        recs[0],
        MetadataRecord::BrokerState {
            id: 1,
            shutting_down: true,
            fenced: false,
            ..
        }
    ));
    apply_all(&mut image, &recs);
    assert!(
        a.shutdown_ok,
        "its single-replica partition went offline, the others moved"
    );
    assert!(a.fenced, "fenced once it may go");
    let p0 = part(&image, 0);
    assert_eq!(
        (p0.leader, p0.isr.clone(), p0.leader_epoch),
        (2, vec![2], 1)
    );
    assert_eq!(
        part(&image, 1).isr,
        vec![2],
        "KIP-841: a shutting-down broker leaves the ISR"
    );
    assert_eq!(
        (part(&image, 2).leader, part(&image, 2).isr.clone()),
        (NO_LEADER, vec![1])
    );
    // A heartbeat without want_shutdown does not undo it.
    let (a, recs) = s.heartbeat(&image, &hb(1, e1), 11);
    assert!(a.fenced && recs.is_empty());
    // Its next incarnation registers at once (fenced already), after a clean shutdown.
    let (_, recs) = s.register(&image, &reg(1, 2, e1), 12).unwrap();
    apply_all(&mut image, &recs);
    let e = epoch_of(&image, 1);
    let (_, recs) = s.heartbeat(&image, &hb(1, e), 13);
    apply_all(&mut image, &recs);
    assert_eq!(part(&image, 2).leader, 1);
}

#[test]
fn shutdown_waits_while_no_other_leader_is_possible_only_if_it_still_leads() {
    // Broker 2 is in broker 1's ISR but fenced: no one else can lead p0, so it goes offline
    // and the shutdown may proceed; a broker that leads nothing is ok at once.
    let (mut image, mut s) = cluster(&[1, 2], vec![vec![2, 1]], &[]);
    let e1 = epoch_of(&image, 1);
    let (a, recs) = s.heartbeat(
        &image,
        &Heartbeat {
            want_shutdown: true,
            ..hb(1, e1)
        },
        1,
    );
    apply_all(&mut image, &recs);
    assert!(a.shutdown_ok);
    assert_eq!(part(&image, 0).isr, vec![2]);
    assert_eq!(part(&image, 0).leader, 2);
}

// ----- AlterPartition ----------------------------------------------------------------------------

#[test]
fn alter_partition_accepts_a_valid_change() {
    let (image, _) = cluster(&[1, 2, 3], vec![vec![1, 2, 3]], &[]);
    let rec = alter_partition(&image, &alter(&image, 0, &[1, 3])).unwrap();
    assert_eq!(
        rec,
        MetadataRecord::PartitionChange {
            name: "t".into(),
            id: ID,
            partition: 0,
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 1,
            replicas: vec![1, 2, 3],
            isr: vec![1, 3],
            elr: vec![],
        }
    );
    // Unknown broker epochs (-1) are not checked, as in Kafka; the ISR is kept in assignment
    // order whatever the request's order.
    let mut req = alter(&image, 0, &[1, 3]);
    req.new_isr = vec![(3, -1), (1, -1)];
    assert!(
        matches!(alter_partition(&image, &req), Ok(MetadataRecord::PartitionChange { isr, .. }) if isr == [1, 3])
    );
}

#[test]
fn alter_partition_refusals() {
    let (mut image, _) = cluster(&[1, 2, 3, 4], vec![vec![1, 2, 3]], &[]);
    set_partition(&mut image, 0, 1, &[1, 2], &[]); // partition epoch 1
    let ok = alter(&image, 0, &[1, 2, 3]);
    assert!(alter_partition(&image, &ok).is_ok());
    let code = |f: &dyn Fn(&mut AlterPartitionReq)| {
        let mut r = ok.clone();
        f(&mut r);
        alter_partition(&image, &r).unwrap_err()
    };
    assert_eq!(
        code(&|r| r.topic = "nope".into()),
        errors::UNKNOWN_TOPIC_OR_PARTITION
    );
    assert_eq!(
        code(&|r| r.partition = 1),
        errors::UNKNOWN_TOPIC_OR_PARTITION
    );
    assert_eq!(code(&|r| r.topic_id = 5), errors::UNKNOWN_TOPIC_ID);
    assert_eq!(code(&|r| r.leader_epoch = 1), errors::NOT_CONTROLLER);
    assert_eq!(code(&|r| r.partition_epoch = 2), errors::NOT_CONTROLLER);
    assert_eq!(
        code(&|r| r.leader_epoch = -1),
        ErrorCode::FencedLeaderEpoch.code()
    );
    assert_eq!(code(&|r| r.broker_epoch -= 1), errors::STALE_BROKER_EPOCH);
    let e2 = epoch_of(&image, 2);
    assert_eq!(
        code(&|r| {
            r.leader = 2;
            r.broker_epoch = e2;
        }),
        ErrorCode::NotLeaderOrFollower.code()
    );
    assert_eq!(
        code(&|r| r.partition_epoch = 0),
        errors::INVALID_UPDATE_VERSION
    );
    assert_eq!(
        code(&|r| r.new_isr.push((2, -1))),
        errors::INVALID_REQUEST,
        "duplicate"
    );
    assert_eq!(
        code(&|r| r.new_isr.push((4, -1))),
        errors::INVALID_REQUEST,
        "not a replica"
    );
    assert_eq!(
        code(&|r| {
            r.new_isr.remove(0);
        }),
        errors::INVALID_REQUEST,
        "without the leader"
    );
    assert_eq!(
        code(&|r| r.new_isr[2].1 -= 1),
        errors::INELIGIBLE_REPLICA,
        "KIP-903"
    );
    assert_eq!(
        code(&|r| r.new_isr = vec![(1, -1), (2, -1)]),
        errors::INVALID_REQUEST,
        "no change"
    );
    // Fenced and shutting-down brokers may not join (KIP-841).
    let e3 = epoch_of(&image, 3);
    let mut fenced = image.clone();
    fenced.apply(&MetadataRecord::BrokerState {
        id: 3,
        epoch: e3,
        fenced: true,
        shutting_down: false,
    });
    assert_eq!(
        alter_partition(&fenced, &ok),
        Err(errors::INELIGIBLE_REPLICA)
    );
    let mut leaving = image.clone();
    leaving.apply(&MetadataRecord::BrokerState {
        id: 3,
        epoch: e3,
        fenced: false,
        shutting_down: true,
    });
    assert_eq!(
        alter_partition(&leaving, &ok),
        Err(errors::INELIGIBLE_REPLICA)
    );
    let mut gone = image.clone();
    gone.apply(&MetadataRecord::UnregisterBroker { id: 3, epoch: e3 });
    assert_eq!(alter_partition(&gone, &ok), Err(errors::INELIGIBLE_REPLICA));
}

// ----- placement ---------------------------------------------------------------------------------

#[test]
fn placement_spreads_leaders_and_replicas_round_robin() {
    let (mut image, _) = cluster(&[1, 2, 3], vec![], &[]);
    let a = place(&image, 6, 2, 0).unwrap();
    assert_eq!(
        a,
        vec![
            vec![1, 2],
            vec![2, 3],
            vec![3, 1],
            vec![1, 2],
            vec![2, 3],
            vec![3, 1]
        ]
    );
    let mut leaders = BTreeMap::new();
    let mut replicas = BTreeMap::new();
    for r in &a {
        *leaders.entry(r[0]).or_insert(0) += 1;
        for b in r {
            *replicas.entry(*b).or_insert(0) += 1;
        }
    }
    assert!(leaders.values().all(|&n| n == 2) && replicas.values().all(|&n| n == 4));
    // New partitions continue the rotation.
    assert_eq!(
        place(&image, 2, 3, 4).unwrap(),
        vec![vec![2, 3, 1], vec![3, 1, 2]]
    );
    let err = place(&image, 1, 4, 0).unwrap_err();
    assert_eq!(err.code, errors::INVALID_REPLICATION_FACTOR);
    assert!(err
        .message
        .unwrap()
        .contains("replication factor 4 is larger than the 3 available"));
    assert_eq!(
        place(&image, 1, 0, 0).unwrap_err().code,
        errors::INVALID_REPLICATION_FACTOR
    );
    // Fenced and shutting-down brokers get nothing.
    let e2 = epoch_of(&image, 2);
    image.apply(&MetadataRecord::BrokerState {
        id: 2,
        epoch: e2,
        fenced: true,
        shutting_down: false,
    });
    assert_eq!(
        place(&image, 2, 2, 0).unwrap(),
        vec![vec![1, 3], vec![3, 1]]
    );
    assert_eq!(
        place(&image, 1, 3, 0).unwrap_err().code,
        errors::INVALID_REPLICATION_FACTOR
    );
}

// ----- KIP-966 -----------------------------------------------------------------------------------

const MIN2: &[(&str, &str)] = &[
    ("min.insync.replicas", "2"),
    ("flush.messages", "9223372036854775807"),
];

#[test]
fn replicas_leaving_below_min_isr_become_eligible() {
    let (mut image, _) = cluster(&[1, 2, 3], vec![vec![1, 2, 3]], MIN2);
    // Down to {1, 2}: still at min ISR, 3 may miss committed data: not eligible.
    let rec = alter_partition(&image, &alter(&image, 0, &[1, 2])).unwrap();
    image.apply(&rec);
    assert_eq!(part(&image, 0).elr, Vec::<i32>::new());
    // Down to {1}: the high watermark stops, 2 holds everything below it.
    let rec = alter_partition(&image, &alter(&image, 0, &[1])).unwrap();
    image.apply(&rec);
    assert_eq!(
        (part(&image, 0).isr.clone(), part(&image, 0).elr.clone()),
        (vec![1], vec![2])
    );
    // 2 back in the ISR: it leaves the ELR (min ISR reached again: the ELR is empty).
    let rec = alter_partition(&image, &alter(&image, 0, &[1, 2])).unwrap();
    image.apply(&rec);
    assert_eq!(
        (part(&image, 0).isr.clone(), part(&image, 0).elr.clone()),
        (vec![1, 2], vec![])
    );
}

/// ISR {1}, ELR {2}: 1 is fenced (offline, last known ISR {1}); then 2 is elected from the
/// ELR when it is unfenced, even though 1 was the last ISR member.
#[test]
fn an_eligible_replica_is_elected_when_the_isr_is_gone() {
    let (mut image, mut s) = cluster(&[1, 2, 3], vec![vec![1, 2, 3]], MIN2);
    let (e1, e2) = (epoch_of(&image, 1), epoch_of(&image, 2));
    image.apply(&MetadataRecord::BrokerState {
        id: 2,
        epoch: e2,
        fenced: true,
        shutting_down: false,
    });
    set_partition(&mut image, 0, 1, &[1], &[2]);
    s.heartbeat(&image, &hb(3, epoch_of(&image, 3)), 900);
    s.heartbeat(&image, &hb(2, e2), 900);
    let _ = e1;
    let recs = s.expire(&image, TIMEOUT + 1);
    apply_all(&mut image, &recs);
    let p = part(&image, 0);
    assert_eq!(
        (p.leader, p.isr.clone(), p.elr.clone()),
        (NO_LEADER, vec![1], vec![2])
    );
    let (_, recs) = s.heartbeat(&image, &hb(2, e2), TIMEOUT + 2);
    apply_all(&mut image, &recs);
    let p = part(&image, 0);
    assert_eq!(
        (p.leader, p.isr.clone(), p.elr.clone()),
        (2, vec![2], vec![1])
    );
}

/// The "last replica standing" case: 1 was the last ISR member and crashed without flushing;
/// 2 left the ISR when the high watermark had stopped. 1 must not lead again over 2.
#[test]
fn an_unclean_restart_does_not_lead_over_an_eligible_replica() {
    let (mut image, mut s) = cluster(&[1, 2, 3], vec![vec![1, 2, 3]], MIN2);
    let (e1, e2, e3) = (
        epoch_of(&image, 1),
        epoch_of(&image, 2),
        epoch_of(&image, 3),
    );
    for (id, e) in [(1, e1), (2, e2)] {
        image.apply(&MetadataRecord::BrokerState {
            id,
            epoch: e,
            fenced: true,
            shutting_down: false,
        });
    }
    set_partition(&mut image, 0, NO_LEADER, &[1], &[2]);
    s.heartbeat(&image, &hb(3, e3), 0);
    // 1 restarts uncleanly (previous epoch -1): it leaves the last known ISR.
    let (n1, recs) = s.register(&image, &reg(1, 100, -1), 10).unwrap();
    apply_all(&mut image, &recs);
    let p = part(&image, 0);
    assert_eq!(
        (p.leader, p.isr.clone(), p.elr.clone()),
        (NO_LEADER, vec![], vec![2])
    );
    let (_, recs) = s.heartbeat(&image, &hb(1, n1), 11);
    apply_all(&mut image, &recs);
    assert_eq!(part(&image, 0).leader, NO_LEADER, "1 may not lead");
    let (_, recs) = s.heartbeat(&image, &hb(2, e2), 12);
    apply_all(&mut image, &recs);
    let p = part(&image, 0);
    assert_eq!(
        (p.leader, p.isr.clone(), p.elr.clone()),
        (2, vec![2], vec![])
    );
}

#[test]
fn a_clean_restart_keeps_its_place() {
    let (mut image, mut s) = cluster(&[1, 2], vec![vec![1, 2]], MIN2);
    let (e1, e2) = (epoch_of(&image, 1), epoch_of(&image, 2));
    for (id, e) in [(1, e1), (2, e2)] {
        image.apply(&MetadataRecord::BrokerState {
            id,
            epoch: e,
            fenced: true,
            shutting_down: false,
        });
    }
    set_partition(&mut image, 0, NO_LEADER, &[1], &[2]);
    let (n1, recs) = s.register(&image, &reg(1, 100, e1), 10).unwrap();
    apply_all(&mut image, &recs);
    assert!(recs.len() == 1, "only the registration: {recs:?}");
    let (_, recs) = s.heartbeat(&image, &hb(1, n1), 11);
    apply_all(&mut image, &recs);
    assert_eq!(part(&image, 0).leader, 1);
}

#[test]
fn the_only_replica_left_comes_back_even_after_an_unclean_restart() {
    // RF=1 (the single-node broker) and RF=2 with nobody else eligible.
    for (ids, assignment) in [(vec![1], vec![1]), (vec![1, 2], vec![1, 2])] {
        let (mut image, mut s) = cluster(&ids, vec![assignment], &[("flush.ms", "1000")]);
        let e1 = epoch_of(&image, 1);
        image.apply(&MetadataRecord::BrokerState {
            id: 1,
            epoch: e1,
            fenced: true,
            shutting_down: false,
        });
        set_partition(&mut image, 0, NO_LEADER, &[1], &[]);
        let (n1, recs) = s.register(&image, &reg(1, 100, -1), 10).unwrap();
        apply_all(&mut image, &recs);
        assert_eq!(part(&image, 0).isr, vec![1]);
        let (_, recs) = s.heartbeat(&image, &hb(1, n1), 11);
        apply_all(&mut image, &recs);
        assert_eq!(part(&image, 0).leader, 1, "{ids:?}");
    }
}

#[test]
fn partitions_that_fsync_every_batch_keep_an_uncleanly_restarted_replica() {
    for (configs, every_batch_default, kept) in [
        (vec![("flush.messages", "1")], false, true),
        (vec![("flush.ms", "0")], false, true),
        (vec![], true, true),
        (vec![], false, false),
        (vec![("flush.ms", "5")], true, false),
    ] {
        let mut configs = configs;
        configs.push(("min.insync.replicas", "2"));
        let (mut image, s) = cluster(&[1, 2], vec![vec![1, 2]], &configs);
        let mut s = s.default_flush_every_batch(every_batch_default);
        let (e1, e2) = (epoch_of(&image, 1), epoch_of(&image, 2));
        for (id, e) in [(1, e1), (2, e2)] {
            image.apply(&MetadataRecord::BrokerState {
                id,
                epoch: e,
                fenced: true,
                shutting_down: false,
            });
        }
        set_partition(&mut image, 0, NO_LEADER, &[1], &[2]);
        let (_, recs) = s.register(&image, &reg(1, 100, -1), 10).unwrap();
        apply_all(&mut image, &recs);
        assert_eq!(
            part(&image, 0).isr.contains(&1),
            kept,
            "{configs:?} {every_batch_default}"
        );
    }
}

#[test]
fn flush_rule_matches_the_log_config_mapping() {
    for default in [
        DefaultFlush::EveryBatch,
        DefaultFlush::Interval,
        DefaultFlush::Never,
    ] {
        let broker = BrokerConfig {
            default_flush: default,
            ..BrokerConfig::default()
        };
        for configs in [
            vec![],
            vec![("flush.messages", "1")],
            vec![("flush.messages", "5")],
            vec![("flush.ms", "0")],
            vec![("flush.ms", "100")],
            vec![("flush.messages", "1"), ("flush.ms", "100")],
            vec![("flush.messages", "9223372036854775807")],
        ] {
            let t = TopicMeta {
                name: "t".into(),
                id: 1,
                partitions: vec![],
                configs: configs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            };
            assert_eq!(
                flushes_every_batch(&t, default == DefaultFlush::EveryBatch),
                metadata::log_config(&t, &broker).flush == FlushPolicy::EveryBatch,
                "{default:?} {configs:?}"
            );
        }
    }
}

#[test]
fn repair_moves_leaders_off_fenced_brokers_and_elects() {
    let (mut image, _) = cluster(&[1, 2], vec![vec![1, 2], vec![2, 1]], &[]);
    let e1 = epoch_of(&image, 1);
    // A fence committed without its partition changes (a partial commit before a failover).
    image.apply(&MetadataRecord::BrokerState {
        id: 1,
        epoch: e1,
        fenced: true,
        shutting_down: false,
    });
    let recs = repair(&image);
    apply_all(&mut image, &recs);
    assert_eq!(
        (part(&image, 0).leader, part(&image, 0).isr.clone()),
        (2, vec![2])
    );
    assert!(repair(&image).is_empty());
}

fn offline(parts: &[u32]) -> Vec<(String, u32)> {
    parts.iter().map(|&p| ("t".to_string(), p)).collect()
}

#[test]
fn a_failed_log_moves_leadership_and_leaves_the_isr() {
    // p0 led by 1; p1 followed by 1; p2 without broker 1.
    let (mut image, mut s) = cluster(
        &[1, 2, 3],
        vec![vec![1, 2, 3], vec![2, 1, 3], vec![2, 3]],
        &[("min.insync.replicas", "2")],
    );
    let e1 = epoch_of(&image, 1);
    let (a, recs) = s.heartbeat_reporting(&image, &hb(1, e1), &offline(&[0, 1, 2]), 10);
    assert_eq!((a.error, a.fenced), (errors::NONE, false));
    apply_all(&mut image, &recs);
    assert_eq!(recs.len(), 2, "p2 has no replica on broker 1: {recs:?}");
    let p0 = part(&image, 0);
    assert_eq!(
        (
            p0.leader,
            p0.isr.clone(),
            p0.elr.clone(),
            p0.leader_epoch,
            p0.partition_epoch
        ),
        (2, vec![2, 3], vec![], 1, 1),
        "the next ISR member leads, with a new leader epoch"
    );
    assert_eq!(
        epochs(&image, 1),
        (2, vec![2, 3], 0, 1),
        "a follower just leaves the ISR"
    );
    // The broker stays unfenced and keeps the rest.
    assert!(!image.brokers[&1].fenced);
    // Reported again (every heartbeat while offline): nothing more.
    let (_, recs) = s.heartbeat_reporting(&image, &hb(1, e1), &offline(&[0, 1]), 20);
    assert!(recs.is_empty(), "{recs:?}");
    // Back online (no longer reported): it is not in the ISR, so nothing changes; the
    // leader adds it back once it caught up (AlterPartition).
    let (_, recs) = s.heartbeat_reporting(&image, &hb(1, e1), &[], 30);
    assert!(recs.is_empty(), "{recs:?}");
}

#[test]
fn a_failed_log_of_the_last_isr_member_takes_the_partition_offline_until_it_is_back() {
    // Broker 1 is the last ISR member of p0 (2 left it earlier; min.insync.replicas=1, so
    // no ELR).
    let (mut image, mut s) = cluster(&[1, 2], vec![vec![1, 2]], &[]);
    set_partition(&mut image, 0, 1, &[1], &[]);
    let e1 = epoch_of(&image, 1);
    let before = part(&image, 0).clone();
    let (_, recs) = s.heartbeat_reporting(&image, &hb(1, e1), &offline(&[0]), 10);
    apply_all(&mut image, &recs);
    let p0 = part(&image, 0);
    assert_eq!(
        (p0.leader, p0.isr.clone(), p0.leader_epoch),
        (NO_LEADER, vec![1], before.leader_epoch + 1),
        "no unclean election of broker 2; the ISR is kept as the last known"
    );
    // Another broker's heartbeat does not elect the out-of-sync replica.
    let e2 = epoch_of(&image, 2);
    let (_, recs) = s.heartbeat_reporting(&image, &hb(2, e2), &[], 15);
    assert!(recs.is_empty(), "{recs:?}");
    // Still reported: still offline.
    let (_, recs) = s.heartbeat_reporting(&image, &hb(1, e1), &offline(&[0]), 20);
    assert!(recs.is_empty(), "{recs:?}");
    // Its log opened again: it leads again.
    let (_, recs) = s.heartbeat_reporting(&image, &hb(1, e1), &[], 30);
    apply_all(&mut image, &recs);
    let p0 = part(&image, 0);
    assert_eq!(
        (p0.leader, p0.isr.clone(), p0.leader_epoch),
        (1, vec![1], before.leader_epoch + 2)
    );
}

#[test]
fn a_failed_log_below_min_isr_leaves_an_eligible_replica() {
    // RF 3, min.insync.replicas=3: leaving the ISR below m keeps the replica eligible (its
    // log holds everything up to the high watermark, which stood still).
    let (mut image, mut s) = cluster(
        &[1, 2, 3],
        vec![vec![1, 2, 3]],
        &[("min.insync.replicas", "3")],
    );
    let e1 = epoch_of(&image, 1);
    let (_, recs) = s.heartbeat_reporting(&image, &hb(1, e1), &offline(&[0]), 10);
    apply_all(&mut image, &recs);
    let p0 = part(&image, 0);
    assert_eq!(
        (p0.leader, p0.isr.clone(), p0.elr.clone()),
        (2, vec![2, 3], vec![1])
    );
}

#[test]
fn offline_reports_that_do_not_apply_change_nothing() {
    let (mut image, mut s) = cluster(&[1, 2], vec![vec![1, 2]], &[]);
    let e1 = epoch_of(&image, 1);
    // Unknown topic, unknown partition, a stale epoch, an unknown broker.
    let junk = vec![("nope".to_string(), 0), ("t".to_string(), 7)];
    let (_, recs) = s.heartbeat_reporting(&image, &hb(1, e1), &junk, 10);
    assert!(recs.is_empty(), "{recs:?}");
    let (a, recs) = s.heartbeat_reporting(&image, &hb(1, e1 + 100), &offline(&[0]), 10);
    assert_eq!(a.error, errors::STALE_BROKER_EPOCH);
    assert!(recs.is_empty());
    assert!(offline_replicas(&image, 9, &offline(&[0])).is_empty());
    // A broker shutting down moves its leaderships anyway; the report adds nothing.
    let mut shut = hb(1, e1);
    shut.want_shutdown = true;
    let (_, recs) = s.heartbeat_reporting(&image, &shut, &offline(&[0]), 10);
    let (_, plain) = s.clone().heartbeat(&image, &shut, 10);
    assert_eq!(recs, plain);
    apply_all(&mut image, &recs);
    assert_eq!(part(&image, 0).leader, 2);
}

// ----- random sequences --------------------------------------------------------------------------

/// A broker process as the property test models it.
#[derive(Clone, Debug, Default)]
struct Proc {
    incarnation: u128,
    /// The epoch it registered with in this incarnation (None: not registered).
    epoch: Option<i64>,
    /// Shut down cleanly with this epoch last time.
    clean_epoch: i64,
}

struct Model {
    image: ClusterMeta,
    s: Sessions,
    now: u64,
    procs: BTreeMap<i32, Proc>,
    /// Per (topic, partition): the replicas holding every committed record.
    holders: BTreeMap<(String, u32), BTreeSet<i32>>,
    epochs_seen: BTreeMap<i32, i64>,
    all_epochs: BTreeSet<i64>,
    next_incarnation: u128,
    /// Elections of a replica that had lost data (allowed only as the last one standing).
    lossy_elections: u64,
    /// Leaders elected from the ELR.
    elr_elections: u64,
    refused_registrations: u64,
    accepted_alters: u64,
    unclean_demotions: u64,
}

impl Model {
    fn commit(&mut self, recs: Vec<MetadataRecord>) {
        for rec in recs {
            if std::env::var("DECIDE_TRACE").is_ok() {
                eprintln!("{rec:?}");
            }
            let before = self.image.clone();
            match &rec {
                MetadataRecord::PartitionChange {
                    name, partition, ..
                } => {
                    let old = before.topics[name].partitions[*partition as usize].clone();
                    assert!(
                        self.image.apply(&rec),
                        "a record for an unchanged partition: {rec:?}"
                    );
                    let new = self.image.topics[name].partitions[*partition as usize].clone();
                    assert_ne!(
                        (&old.leader, &old.isr, &old.elr, &old.replicas),
                        (&new.leader, &new.isr, &new.elr, &new.replicas),
                        "a record for an unchanged partition"
                    );
                    assert_eq!(new.partition_epoch, old.partition_epoch + 1);
                    assert!(new.leader_epoch >= old.leader_epoch);
                    assert_eq!(
                        new.leader_epoch > old.leader_epoch,
                        new.leader != old.leader
                    );
                    let key = (name.clone(), *partition);
                    let leader_up = self.up(new.leader);
                    if new.leader != NO_LEADER
                        && new.leader != old.leader
                        && old.elr.contains(&new.leader)
                    {
                        self.elr_elections += 1;
                    }
                    if old.isr.iter().chain(&old.elr).count()
                        > new.isr.iter().chain(&new.elr).count()
                    {
                        self.unclean_demotions += 1;
                    }
                    let h = self.holders.entry(key).or_default();
                    // An ISR expansion: the new member caught up to the high watermark.
                    if new.leader == old.leader {
                        for r in &new.isr {
                            if !old.isr.contains(r) {
                                h.insert(*r);
                            }
                        }
                    }
                    // KIP-966's point: a leader lacking committed data only when no replica the
                    // controller could elect (old ISR ∪ ELR) is known to hold it all, and then
                    // only the last one standing. (A leader whose process is down cannot serve;
                    // it must register again first, and that decision sees the restart.)
                    if new.leader != NO_LEADER
                        && new.leader != old.leader
                        && leader_up
                        && !h.contains(&new.leader)
                    {
                        let candidates: BTreeSet<i32> =
                            old.isr.iter().chain(&old.elr).copied().collect();
                        assert!(
                            h.is_disjoint(&candidates),
                            "elected {} without all committed data over a replica that has it; holders {h:?}; {old:?} -> {new:?}",
                            new.leader
                        );
                        assert!(
                            candidates.iter().all(|&r| r == new.leader),
                            "elected {} (lost data) while others were eligible: {old:?} -> {new:?}",
                            new.leader
                        );
                        // What it lost is lost: its log is the partition's from here on.
                        *h = BTreeSet::from([new.leader]);
                        self.lossy_elections += 1;
                    }
                }
                MetadataRecord::RegisterBroker { id, epoch, .. } => {
                    assert!(
                        self.all_epochs.insert(*epoch),
                        "epoch {epoch} handed out twice"
                    );
                    if let Some(old) = self.epochs_seen.insert(*id, *epoch) {
                        assert!(*epoch > old);
                    }
                    self.image.apply(&rec);
                }
                _ => {
                    self.image.apply(&rec);
                }
            }
            self.image.applied_index += 1;
        }
        self.check();
    }

    /// The broker's process runs with the registration the image has.
    fn up(&self, id: i32) -> bool {
        let registered = self.image.brokers.get(&id).map(|b| b.epoch);
        self.procs
            .get(&id)
            .is_some_and(|p| p.epoch.is_some() && p.epoch == registered)
    }

    /// Worst case for the eligibility rules: records are committed whenever the replica core
    /// could commit them (a leader, an ISR of at least the effective min ISR, every member
    /// running and fetching), so exactly the ISR then holds everything committed.
    fn commit_data(&mut self) {
        for t in self.image.topics.values() {
            for (i, p) in t.partitions.iter().enumerate() {
                if p.leader != NO_LEADER
                    && p.isr.len() >= effective_min_isr(t, p.replicas.len())
                    && p.isr.iter().all(|&r| self.up(r))
                {
                    let h = self.holders.entry((t.name.clone(), i as u32)).or_default();
                    assert!(
                        h.is_empty() || h.contains(&p.leader),
                        "leader {} lacks committed data and commits more: holders {h:?} {p:?}",
                        p.leader
                    );
                    *h = p.isr.iter().copied().collect();
                }
            }
        }
    }

    fn check(&self) {
        for t in self.image.topics.values() {
            for p in &t.partitions {
                let set = |v: &[i32]| v.iter().copied().collect::<BTreeSet<i32>>();
                let (isr, elr, replicas) = (set(&p.isr), set(&p.elr), set(&p.replicas));
                assert_eq!(isr.len(), p.isr.len(), "duplicates in {p:?}");
                assert_eq!(elr.len(), p.elr.len(), "duplicates in {p:?}");
                assert!(
                    isr.is_subset(&replicas) && elr.is_subset(&replicas),
                    "{p:?}"
                );
                assert!(isr.is_disjoint(&elr), "{p:?}");
                assert!(
                    !(isr.is_empty() && elr.is_empty()),
                    "nothing left to elect: {p:?}"
                );
                if p.leader != NO_LEADER {
                    assert!(isr.contains(&p.leader), "leader outside the ISR: {p:?}");
                    let b = &self.image.brokers[&p.leader];
                    assert!(!b.fenced && !b.shutting_down, "leader {b:?} of {p:?}");
                }
                if p.isr.len() >= effective_min_isr(t, p.replicas.len()) {
                    assert!(p.elr.is_empty(), "{p:?}");
                }
            }
        }
        assert!(self.s.len() <= self.image.brokers.len() + 1);
    }
}

fn run_random(seed: u64, steps: usize) -> [u64; 5] {
    let mut rng = SplitMix(seed);
    let every_batch_default = rng.chance(0.3);
    let n = 3 + rng.below(2) as i32;
    let mut m = Model {
        image: ClusterMeta::default(),
        s: Sessions::new(TIMEOUT).default_flush_every_batch(every_batch_default),
        now: 0,
        procs: (1..=n)
            .map(|id| {
                (
                    id,
                    Proc {
                        clean_epoch: -1,
                        ..Proc::default()
                    },
                )
            })
            .collect(),
        holders: BTreeMap::new(),
        epochs_seen: BTreeMap::new(),
        all_epochs: BTreeSet::new(),
        next_incarnation: 1,
        lossy_elections: 0,
        elr_elections: 0,
        refused_registrations: 0,
        accepted_alters: 0,
        unclean_demotions: 0,
    };
    let mut topics = 0;
    for _ in 0..steps {
        m.now += rng.below(400);
        let id = 1 + rng.below(n as u64) as i32;
        match rng.below(20) {
            // (Re)start a process: a new incarnation registers.
            0 => {
                // Clean only when the process stopped after its controlled shutdown (its
                // logs flushed); any other restart is a crash, which loses what was not
                // flushed (the worst case: the controller cannot tell more either). A crash
                // sometimes presents a stale clean-shutdown epoch.
                let registered = m.image.brokers.get(&id).map(|b| b.epoch);
                let p = m.procs.get_mut(&id).unwrap();
                let clean = p.epoch.is_none() && Some(p.clean_epoch) == registered;
                let previous = if clean || rng.chance(0.3) {
                    p.clean_epoch
                } else {
                    -1
                };
                p.incarnation = m.next_incarnation;
                m.next_incarnation += 1;
                p.epoch = None;
                let r = Registration {
                    incarnation: p.incarnation,
                    ..reg(id, 0, previous)
                };
                // A crash loses what was not flushed: drop it from the holders where that
                // matters (flush policy not every batch).
                if !clean {
                    for t in m.image.topics.values() {
                        if !flushes_every_batch(t, every_batch_default) {
                            for i in 0..t.partitions.len() {
                                if let Some(h) = m.holders.get_mut(&(t.name.clone(), i as u32)) {
                                    h.remove(&id);
                                }
                            }
                        }
                    }
                }
                match m.s.register(&m.image, &r, m.now) {
                    Ok((epoch, recs)) => {
                        m.commit(recs);
                        m.procs.get_mut(&id).unwrap().epoch = Some(epoch);
                    }
                    Err(e) => {
                        assert_eq!(e.code, errors::DUPLICATE_BROKER_REGISTRATION);
                        m.refused_registrations += 1;
                    }
                }
            }
            1..=4 => {
                let Some(epoch) = m.procs[&id].epoch else {
                    continue;
                };
                let want_shutdown = rng.chance(0.1);
                let h = Heartbeat {
                    id,
                    epoch,
                    caught_up: rng.chance(0.8),
                    want_shutdown,
                };
                let (a, recs) = m.s.heartbeat(&m.image, &h, m.now);
                m.commit(recs);
                if a.error == errors::NONE && a.shutdown_ok {
                    assert!(!leads_anything(&m.image, id));
                    // The process stops cleanly.
                    let p = m.procs.get_mut(&id).unwrap();
                    p.clean_epoch = epoch;
                    p.epoch = None;
                }
            }
            5..=6 => {
                let recs = m.s.expire(&m.image, m.now);
                m.commit(recs);
            }
            7 if topics < 4 => {
                let partitions = 1 + rng.below(3) as u32;
                let rf = 1 + rng.below(3) as u16;
                if let Ok(assignments) = place(&m.image, partitions, rf, 0) {
                    let name = format!("t{topics}");
                    topics += 1;
                    let min = 1 + rng.below(3);
                    let mut configs =
                        BTreeMap::from([("min.insync.replicas".to_string(), min.to_string())]);
                    if rng.chance(0.5) {
                        configs.insert("flush.ms".into(), "1000".into());
                    }
                    for (i, a) in assignments.iter().enumerate() {
                        m.holders
                            .insert((name.clone(), i as u32), a.iter().copied().collect());
                    }
                    add_topic(&mut m.image, &name, topics as u128, configs, assignments);
                    m.check();
                }
            }
            // The partition leader proposes an ISR change (sometimes from stale state).
            8..=13 => {
                let Some(t) = m
                    .image
                    .topics
                    .values()
                    .nth(rng.below(topics.max(1) as u64) as usize)
                else {
                    continue;
                };
                let i = rng.below(t.partitions.len() as u64) as u32;
                let p = t.partitions[i as usize].clone();
                // Only a running leader proposes, and only a running replica catches up.
                if p.leader == NO_LEADER || !m.up(p.leader) {
                    continue;
                }
                let mut isr = p.isr.clone();
                let r = p.replicas[rng.below(p.replicas.len() as u64) as usize];
                if isr.contains(&r) {
                    if r != p.leader {
                        isr.retain(|&x| x != r);
                    }
                } else if m.up(r) {
                    isr.push(r);
                } else {
                    continue;
                }
                let epoch_of = |id: i32| m.image.brokers.get(&id).map_or(-1, |b| b.epoch);
                let mut req = AlterPartitionReq {
                    topic: t.name.clone(),
                    topic_id: t.id,
                    partition: i,
                    leader: p.leader,
                    leader_epoch: p.leader_epoch,
                    broker_epoch: epoch_of(p.leader),
                    partition_epoch: p.partition_epoch,
                    new_isr: isr.iter().map(|&id| (id, epoch_of(id))).collect(),
                };
                if rng.chance(0.1) {
                    req.partition_epoch -= 1;
                }
                if rng.chance(0.1) {
                    req.leader_epoch -= 1;
                }
                let stale =
                    req.partition_epoch != p.partition_epoch || req.leader_epoch != p.leader_epoch;
                if let Ok(rec) = alter_partition(&m.image, &req) {
                    assert!(!stale, "accepted a stale request {req:?}");
                    m.accepted_alters += 1;
                    m.commit(vec![rec]);
                }
            }
            // Every running process heartbeats (mostly caught up).
            14..=16 => {
                for id in 1..=n {
                    let Some(epoch) = m.procs[&id].epoch else {
                        continue;
                    };
                    let h = Heartbeat {
                        id,
                        epoch,
                        caught_up: rng.chance(0.9),
                        want_shutdown: false,
                    };
                    let (_, recs) = m.s.heartbeat(&m.image, &h, m.now);
                    m.commit(recs);
                }
            }
            // Time passes without other events.
            _ => {}
        }
        m.commit_data();
    }
    [
        m.elr_elections,
        m.lossy_elections,
        m.refused_registrations,
        m.accepted_alters,
        m.unclean_demotions,
    ]
}

#[test]
fn random_event_sequences_keep_the_invariants() {
    let seeds: u64 = std::env::var("DECIDE_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let mut totals = [0u64; 5];
    for seed in 0..seeds {
        if std::env::var("DECIDE_TRACE").is_ok() {
            eprintln!("seed {seed}");
        }
        let got = run_random(seed, 400);
        for (t, g) in totals.iter_mut().zip(got) {
            *t += g;
        }
    }
    // The sequences reach the interesting cases (else the invariants would hold vacuously).
    eprintln!("elr elections, lossy elections, refused registrations, accepted alters, demotions: {totals:?}");
    assert!(totals.iter().all(|&t| t > 0), "{totals:?}");
}
