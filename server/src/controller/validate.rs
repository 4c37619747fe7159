//! Validation of admin operations against the metadata image: each function either refuses
//! the operation with the Kafka error code (and message) the client gets, or returns the one
//! [`MetadataRecord`] that carries it out. Nothing is proposed to the metadata log before it
//! has passed here, so a committed record is always valid to apply; validation reads only the
//! image it is given, which makes it testable without a broker.

use std::collections::BTreeMap;

use crate::controller::decide;
use crate::controller::metadata::{self, ClusterMeta};
use crate::controller::records::MetadataRecord;
use crate::mesh::messages::{ConfigOps, NewTopic};
use crate::wire::errors;

/// Most partitions a topic may have.
pub const MAX_PARTITIONS: i32 = 100_000;

pub use crate::controller::decide::Refusal;

/// CreateTopics for one topic: a valid name, not taken, 1..=100000 partitions (-1: the
/// broker's `default_partitions`), known configs with valid values, and replicas: a manual
/// assignment as [`manual_assignment`] checks it, else `replication_factor` replicas per
/// partition placed by [`decide::place`] over the live brokers (more than there are:
/// INVALID_REPLICATION_FACTOR). `id` is the new topic's id (chosen by the caller so that
/// validation stays deterministic). Before any broker has registered (the single-node broker
/// without a quorum) the one live broker is `node_id`.
pub fn create_topic(
    image: &ClusterMeta,
    t: NewTopic,
    default_partitions: i32,
    id: u128,
    node_id: i32,
) -> Result<MetadataRecord, Refusal> {
    let name = t.name;
    if let Err(msg) = metadata::validate_topic_name(&name) {
        return Err(Refusal::new(errors::INVALID_TOPIC_EXCEPTION, msg));
    }
    if image.topics.contains_key(&name) {
        return Err(Refusal::new(
            errors::TOPIC_ALREADY_EXISTS,
            format!("Topic '{name}' already exists."),
        ));
    }
    let partitions = if !t.assignments.is_empty() {
        i32::try_from(t.assignments.len()).unwrap_or(i32::MAX)
    } else if t.partitions == -1 {
        default_partitions
    } else {
        t.partitions
    };
    if !(1..=MAX_PARTITIONS).contains(&partitions) {
        return Err(Refusal::new(
            errors::INVALID_PARTITIONS,
            format!("number of partitions must be in 1..={MAX_PARTITIONS}, got {partitions}"),
        ));
    }
    let mut configs = BTreeMap::new();
    for (k, v) in t.configs {
        metadata::apply_config_op(&mut configs, k, 0, Some(v))
            .map_err(|(code, msg)| Refusal::new(code, msg))?;
    }
    let assignments = if name == crate::groups::offsets_log::OFFSETS_TOPIC {
        // The internal topic (created by the broker when a group first needs it, never by a
        // client: the CreateTopics API refuses the name): its replication factor follows the
        // live brokers, and its writes need min(2, RF) in-sync replicas.
        let assignments = internal_topic_assignments(image, partitions as u32, node_id)?;
        let rf = assignments.first().map_or(1, Vec::len);
        metadata::apply_config_op(
            &mut configs,
            "min.insync.replicas".to_string(),
            0,
            Some(rf.min(2).to_string()),
        )
        .map_err(|(code, msg)| Refusal::new(code, msg))?;
        assignments
    } else if t.assignments.is_empty() {
        let rf = replication_factor(t.replication_factor)?;
        placement(image, partitions as u32, rf, 0, node_id)?
    } else {
        manual_assignment(image, t.assignments, None, node_id)?
    };
    Ok(MetadataRecord::CreateTopic {
        name,
        id,
        assignments,
        configs,
    })
}

/// Most replicas a partition may have (far above any useful replication factor; bounds what a
/// request makes the controller build).
pub const MAX_REPLICATION_FACTOR: i16 = 64;

/// A requested replication factor as a count: 1..=[`MAX_REPLICATION_FACTOR`]
/// (INVALID_REPLICATION_FACTOR otherwise, -1 included: the receiving broker resolves it).
fn replication_factor(rf: i16) -> Result<u16, Refusal> {
    if (1..=MAX_REPLICATION_FACTOR).contains(&rf) {
        Ok(rf as u16)
    } else {
        Err(Refusal::new(
            errors::INVALID_REPLICATION_FACTOR,
            format!(
                "Replication factor must be in 1..={MAX_REPLICATION_FACTOR}, or -1 to use the default value, got {rf}."
            ),
        ))
    }
}

/// No broker has registered yet (a single-node broker without a quorum): new replicas go on
/// this node.
fn no_brokers_yet(image: &ClusterMeta) -> bool {
    image.brokers.is_empty()
}

/// [`decide::place`], or every partition on `node_id` before any broker registered.
fn placement(
    image: &ClusterMeta,
    partitions: u32,
    rf: u16,
    first: u32,
    node_id: i32,
) -> Result<Vec<Vec<i32>>, Refusal> {
    if no_brokers_yet(image) {
        if rf != 1 {
            return Err(Refusal::new(
                errors::INVALID_REPLICATION_FACTOR,
                format!("replication factor {rf} is larger than the 1 available broker(s)"),
            ));
        }
        return Ok(vec![vec![node_id]; partitions as usize]);
    }
    decide::place(image, partitions, rf, first)
}

/// A manual replica assignment (CreateTopics `assignments`): partition indexes exactly
/// `0..n` (each once), every partition with the same number of replicas (`rf` when the topic
/// has one already), at least one and at most [`MAX_REPLICATION_FACTOR`], no broker twice,
/// every broker registered, unfenced and not shutting down (the first one leads at once and
/// all start in the ISR). Refusals are INVALID_REPLICA_ASSIGNMENT, with Kafka's wording where
/// it has one.
pub fn manual_assignment(
    image: &ClusterMeta,
    mut given: Vec<(i32, Vec<i32>)>,
    rf: Option<usize>,
    node_id: i32,
) -> Result<Vec<Vec<i32>>, Refusal> {
    let bad = |msg: String| Refusal::new(errors::INVALID_REPLICA_ASSIGNMENT, msg);
    given.sort_by_key(|(i, _)| *i);
    if given.iter().enumerate().any(|(n, (i, _))| *i != n as i32) {
        return Err(bad(
            "partitions should be a consecutive 0-based integer sequence".to_string(),
        ));
    }
    let want = rf.unwrap_or_else(|| given.first().map_or(0, |(_, r)| r.len()));
    let mut out = Vec::with_capacity(given.len());
    for (i, replicas) in given {
        if replicas.is_empty() || replicas.len() > MAX_REPLICATION_FACTOR as usize {
            return Err(bad(format!(
                "partition {i} has {} replicas; it needs 1..={MAX_REPLICATION_FACTOR}",
                replicas.len()
            )));
        }
        if replicas.len() != want {
            return Err(bad(format!(
                "All partitions should have the same number of replicas: partition {i} has {}, expected {want}",
                replicas.len()
            )));
        }
        for (k, b) in replicas.iter().enumerate() {
            if replicas[..k].contains(b) {
                return Err(bad(format!(
                    "partition {i} lists broker {b} more than once"
                )));
            }
            let usable = if no_brokers_yet(image) {
                *b == node_id
            } else {
                image
                    .brokers
                    .get(b)
                    .is_some_and(|m| !m.fenced && !m.shutting_down)
            };
            if !usable {
                let why = match image.brokers.get(b) {
                    _ if no_brokers_yet(image) => "no such broker",
                    None => "no such broker is registered",
                    Some(m) if m.fenced => "it is fenced",
                    Some(_) => "it is shutting down",
                };
                return Err(bad(format!(
                    "The manual partition assignment includes broker {b}, but {why}"
                )));
            }
        }
        out.push(replicas);
    }
    Ok(out)
}

/// The replicas of each partition of an internal topic (`__consumer_offsets`): the
/// replication factor is `min(3, live brokers)`, at least 1 (Kafka's
/// `offsets.topic.replication.factor` is 3, and an internal topic must come up on a smaller
/// cluster too).
pub fn internal_topic_assignments(
    image: &ClusterMeta,
    partitions: u32,
    node_id: i32,
) -> Result<Vec<Vec<i32>>, Refusal> {
    let live = image
        .brokers
        .values()
        .filter(|b| !b.fenced && !b.shutting_down)
        .count();
    let rf = live.clamp(1, 3) as u16;
    placement(image, partitions, rf, 0, node_id)
}

/// The refusal of an operator change to the internal topic (`__consumer_offsets`): deleting it
/// would drop every group's offsets, and growing it would move groups between partitions
/// (their coordinators find groups by `hash % partitions`).
fn internal_topic_refusal(name: &str, what: &str) -> Option<Refusal> {
    (name == crate::groups::offsets_log::OFFSETS_TOPIC).then(|| {
        Refusal::new(
            errors::INVALID_REQUEST,
            format!("{name} is the broker's internal topic; {what} it is not allowed"),
        )
    })
}

/// DeleteTopics for one topic: it must exist and not be the internal topic.
pub fn delete_topic(image: &ClusterMeta, name: &str) -> Result<MetadataRecord, Refusal> {
    if let Some(r) = internal_topic_refusal(name, "deleting") {
        return Err(r);
    }
    match image.topics.get(name) {
        Some(t) => Ok(MetadataRecord::DeleteTopic {
            name: t.name.clone(),
            id: t.id,
        }),
        None => Err(Refusal::new(errors::UNKNOWN_TOPIC_OR_PARTITION, None)),
    }
}

/// CreatePartitions for one topic: it must exist, not be the internal topic, and `count` must be more than it has and at
/// most 100000; the new partitions get the topic's replication factor (its first partition's
/// replica count), placed by [`decide::place`] continuing the rotation where the existing
/// partitions end (on `node_id` before any broker registered).
pub fn create_partitions(
    image: &ClusterMeta,
    name: &str,
    count: i32,
    node_id: i32,
) -> Result<MetadataRecord, Refusal> {
    if let Some(r) = internal_topic_refusal(name, "adding partitions to") {
        return Err(r);
    }
    let Some(t) = image.topics.get(name) else {
        return Err(Refusal::new(errors::UNKNOWN_TOPIC_OR_PARTITION, None));
    };
    let have = t.partitions.len() as i32;
    if count <= have || count > MAX_PARTITIONS {
        return Err(Refusal::new(
            errors::INVALID_PARTITIONS,
            format!("topic has {have} partitions; requested {count}"),
        ));
    }
    let rf = t.partitions.first().map_or(1, |p| p.replicas.len().max(1));
    let rf = u16::try_from(rf).unwrap_or(u16::MAX);
    let assignments = placement(image, (count - have) as u32, rf, have as u32, node_id)?;
    Ok(MetadataRecord::CreatePartitions {
        name: t.name.clone(),
        id: t.id,
        first: have as u32,
        assignments,
    })
}

/// AlterConfigs (`replace`: the request's configs are the whole new set) and
/// IncrementalAlterConfigs for one topic: it must exist and every operation must be valid;
/// the record carries the resulting set of explicit configs.
pub fn alter_configs(
    image: &ClusterMeta,
    name: &str,
    replace: bool,
    ops: ConfigOps,
) -> Result<MetadataRecord, Refusal> {
    let Some(t) = image.topics.get(name) else {
        return Err(Refusal::new(errors::UNKNOWN_TOPIC_OR_PARTITION, None));
    };
    let mut configs = if replace {
        BTreeMap::new()
    } else {
        t.configs.clone()
    };
    for (key, op, value) in ops {
        metadata::apply_config_op(&mut configs, key, op, value)
            .map_err(|(code, msg)| Refusal::new(code, msg))?;
    }
    Ok(MetadataRecord::AlterConfigs {
        name: t.name.clone(),
        id: t.id,
        configs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> ClusterMeta {
        let mut m = ClusterMeta::default();
        m.apply(&MetadataRecord::CreateTopic {
            name: "t".into(),
            id: 42,
            assignments: vec![vec![1]; 3],
            configs: [("retention.ms".to_string(), "5".to_string())].into(),
        });
        m
    }

    fn new_topic(name: &str, partitions: i32, configs: &[(&str, &str)]) -> NewTopic {
        NewTopic {
            name: name.into(),
            partitions,
            replication_factor: 1,
            assignments: Vec::new(),
            configs: configs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn code<T>(r: Result<T, Refusal>) -> i16 {
        r.err().map_or(errors::NONE, |e| e.code)
    }

    #[test]
    fn create_topic_checks_name_existence_partitions_configs() {
        let m = image();
        let ok = create_topic(&m, new_topic("u", -1, &[("segment.ms", "10")]), 4, 9, 2);
        assert_eq!(
            ok,
            Ok(MetadataRecord::CreateTopic {
                name: "u".into(),
                id: 9,
                assignments: vec![vec![2]; 4],
                configs: [("segment.ms".to_string(), "10".to_string())].into(),
            })
        );
        let cases = [
            (new_topic("a/b", 1, &[]), errors::INVALID_TOPIC_EXCEPTION),
            (new_topic("", 1, &[]), errors::INVALID_TOPIC_EXCEPTION),
            (new_topic("t", 1, &[]), errors::TOPIC_ALREADY_EXISTS),
            (new_topic("u", 0, &[]), errors::INVALID_PARTITIONS),
            (new_topic("u", -2, &[]), errors::INVALID_PARTITIONS),
            (new_topic("u", 100_001, &[]), errors::INVALID_PARTITIONS),
            (new_topic("u", 1, &[("bogus", "1")]), errors::INVALID_CONFIG),
            (
                new_topic("u", 1, &[("retention.ms", "x")]),
                errors::INVALID_CONFIG,
            ),
            (
                new_topic("u", 1, &[("cleanup.policy", "compact")]),
                errors::POLICY_VIOLATION,
            ),
        ];
        for (t, want) in cases {
            let what = format!("{t:?}");
            assert_eq!(code(create_topic(&m, t, 1, 9, 1)), want, "{what}");
        }
        // -1 with a default outside the range is refused too.
        assert_eq!(
            code(create_topic(&m, new_topic("u", -1, &[]), 0, 9, 1)),
            errors::INVALID_PARTITIONS
        );
        assert_eq!(
            create_topic(&m, new_topic("t", 1, &[]), 1, 9, 1)
                .err()
                .and_then(|r| r.message),
            Some("Topic 't' already exists.".to_string())
        );
    }

    #[test]
    fn delete_needs_an_existing_topic() {
        let m = image();
        assert_eq!(
            delete_topic(&m, "t"),
            Ok(MetadataRecord::DeleteTopic {
                name: "t".into(),
                id: 42
            })
        );
        assert_eq!(
            delete_topic(&m, "nope"),
            Err(Refusal::new(errors::UNKNOWN_TOPIC_OR_PARTITION, None))
        );
    }

    #[test]
    fn create_partitions_only_grows() {
        let m = image();
        assert_eq!(
            create_partitions(&m, "t", 5, 1),
            Ok(MetadataRecord::CreatePartitions {
                name: "t".into(),
                id: 42,
                first: 3,
                assignments: vec![vec![1]; 2],
            })
        );
        for n in [3, 2, 0, -1, 100_001] {
            assert_eq!(
                code(create_partitions(&m, "t", n, 1)),
                errors::INVALID_PARTITIONS,
                "{n}"
            );
        }
        assert_eq!(
            code(create_partitions(&m, "nope", 5, 1)),
            errors::UNKNOWN_TOPIC_OR_PARTITION
        );
    }

    #[test]
    fn alter_configs_incremental_replace_and_refusals() {
        let m = image();
        let set = |k: &str, v: &str| (k.to_string(), 0i8, Some(v.to_string()));
        let rec = alter_configs(&m, "t", false, vec![set("segment.ms", "7")]);
        assert_eq!(
            rec,
            Ok(MetadataRecord::AlterConfigs {
                name: "t".into(),
                id: 42,
                configs: [
                    ("retention.ms".to_string(), "5".to_string()),
                    ("segment.ms".to_string(), "7".to_string())
                ]
                .into(),
            })
        );
        // replace: the old explicit configs go.
        let rec = alter_configs(&m, "t", true, vec![set("segment.ms", "7")]);
        assert!(
            matches!(rec, Ok(MetadataRecord::AlterConfigs { configs, .. })
            if configs.len() == 1 && configs["segment.ms"] == "7")
        );
        // delete (op 1) and set-to-null remove a key.
        let rec = alter_configs(&m, "t", false, vec![("retention.ms".into(), 1, None)]);
        assert!(
            matches!(rec, Ok(MetadataRecord::AlterConfigs { configs, .. }) if configs.is_empty())
        );
        for (ops, want) in [
            (vec![set("bogus", "1")], errors::INVALID_CONFIG),
            (vec![set("flush.ms", "-3")], errors::INVALID_CONFIG),
            (
                vec![set("cleanup.policy", "compact")],
                errors::POLICY_VIOLATION,
            ),
            (
                vec![("retention.ms".into(), 2, Some("1".into()))],
                errors::INVALID_CONFIG,
            ),
            // one bad operation refuses the whole set
            (
                vec![set("segment.ms", "7"), set("bogus", "1")],
                errors::INVALID_CONFIG,
            ),
        ] {
            assert_eq!(code(alter_configs(&m, "t", false, ops)), want);
        }
        assert_eq!(
            code(alter_configs(&m, "nope", false, vec![])),
            errors::UNKNOWN_TOPIC_OR_PARTITION
        );
    }

    /// Brokers 1..=n registered; those in `fenced` fenced, the others live.
    fn brokers(n: i32, fenced: &[i32]) -> ClusterMeta {
        let mut m = image();
        for id in 1..=n {
            m.apply(&MetadataRecord::RegisterBroker {
                id,
                epoch: i64::from(id),
                incarnation: 1,
                host: "h".into(),
                port: 1,
            });
            if !fenced.contains(&id) {
                m.apply(&MetadataRecord::BrokerState {
                    id,
                    epoch: i64::from(id),
                    fenced: false,
                    shutting_down: false,
                });
            }
        }
        m
    }

    fn assignments(r: Result<MetadataRecord, Refusal>) -> Vec<Vec<i32>> {
        match r {
            Ok(MetadataRecord::CreateTopic { assignments, .. })
            | Ok(MetadataRecord::CreatePartitions { assignments, .. }) => assignments,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn replication_factor_places_over_live_brokers() {
        let m = brokers(3, &[]);
        let t = NewTopic {
            replication_factor: 3,
            ..new_topic("u", 3, &[])
        };
        assert_eq!(
            assignments(create_topic(&m, t, 1, 9, 1)),
            vec![vec![1, 2, 3], vec![2, 3, 1], vec![3, 1, 2]]
        );
        // More replicas than live brokers (broker 3 is fenced).
        let m = brokers(3, &[3]);
        let t = NewTopic {
            replication_factor: 3,
            ..new_topic("u", 1, &[])
        };
        let r = create_topic(&m, t, 1, 9, 1).unwrap_err();
        assert_eq!(r.code, errors::INVALID_REPLICATION_FACTOR);
        assert!(r.message.unwrap().contains("larger than the 2 available"));
        for rf in [0, -2, MAX_REPLICATION_FACTOR + 1] {
            let t = NewTopic {
                replication_factor: rf,
                ..new_topic("u", 1, &[])
            };
            assert_eq!(
                code(create_topic(&m, t, 1, 9, 1)),
                errors::INVALID_REPLICATION_FACTOR,
                "{rf}"
            );
        }
    }

    /// Without registered brokers (the single-node broker), partitions go on the node itself,
    /// as before replication; more than one replica is refused.
    #[test]
    fn single_node_places_on_itself() {
        let m = image();
        assert_eq!(
            assignments(create_topic(&m, new_topic("u", 2, &[]), 1, 9, 4)),
            vec![vec![4], vec![4]]
        );
        let t = NewTopic {
            replication_factor: 2,
            ..new_topic("u", 1, &[])
        };
        assert_eq!(
            code(create_topic(&m, t, 1, 9, 4)),
            errors::INVALID_REPLICATION_FACTOR
        );
        assert_eq!(
            assignments(create_partitions(&m, "t", 5, 4)),
            vec![vec![4], vec![4]]
        );
        assert_eq!(
            internal_topic_assignments(&m, 2, 4).unwrap(),
            vec![vec![4], vec![4]]
        );
        let manual = NewTopic {
            assignments: vec![(0, vec![4])],
            ..new_topic("u", -1, &[])
        };
        assert_eq!(
            assignments(create_topic(&m, manual, 1, 9, 4)),
            vec![vec![4]]
        );
    }

    #[test]
    fn manual_assignments_are_checked() {
        let m = brokers(4, &[4]);
        let with = |a: Vec<(i32, Vec<i32>)>| NewTopic {
            assignments: a,
            ..new_topic("u", -1, &[])
        };
        // Any order of partition indexes; the count comes from the assignment.
        assert_eq!(
            assignments(create_topic(
                &m,
                with(vec![(1, vec![3, 1]), (0, vec![2, 3])]),
                7,
                9,
                1
            )),
            vec![vec![2, 3], vec![3, 1]]
        );
        type Case = (Vec<(i32, Vec<i32>)>, &'static str);
        let cases: Vec<Case> = vec![
            (vec![(0, vec![1]), (2, vec![2])], "consecutive"),
            (vec![(1, vec![1])], "consecutive"),
            (vec![(0, vec![1]), (0, vec![2])], "consecutive"),
            (
                vec![(0, vec![1, 2]), (1, vec![3])],
                "same number of replicas",
            ),
            (vec![(0, vec![1, 1])], "more than once"),
            (vec![(0, vec![])], "needs 1..="),
            (vec![(0, vec![9])], "no such broker is registered"),
            (vec![(0, vec![1, 4])], "fenced"),
        ];
        for (a, why) in cases {
            let what = format!("{a:?}");
            let r = create_topic(&m, with(a), 1, 9, 1).unwrap_err();
            assert_eq!(r.code, errors::INVALID_REPLICA_ASSIGNMENT, "{what}");
            assert!(
                r.message.as_deref().unwrap_or("").contains(why),
                "{what}: {r:?}"
            );
        }
        let mut leaving = m.clone();
        leaving.apply(&MetadataRecord::BrokerState {
            id: 2,
            epoch: 2,
            fenced: false,
            shutting_down: true,
        });
        let r = create_topic(&leaving, with(vec![(0, vec![2])]), 1, 9, 1).unwrap_err();
        assert!(r.message.unwrap().contains("shutting down"));
    }

    #[test]
    fn new_partitions_keep_the_replication_factor_and_the_rotation() {
        let mut m = brokers(3, &[]);
        m.apply(&MetadataRecord::CreateTopic {
            name: "r".into(),
            id: 5,
            assignments: vec![vec![1, 2], vec![2, 3]],
            configs: BTreeMap::new(),
        });
        assert_eq!(
            create_partitions(&m, "r", 4, 1),
            Ok(MetadataRecord::CreatePartitions {
                name: "r".into(),
                id: 5,
                first: 2,
                assignments: vec![vec![3, 1], vec![1, 2]],
            })
        );
        let m = brokers(3, &[2, 3]);
        let mut m2 = m.clone();
        m2.apply(&MetadataRecord::CreateTopic {
            name: "r".into(),
            id: 5,
            assignments: vec![vec![1, 2]],
            configs: BTreeMap::new(),
        });
        assert_eq!(
            code(create_partitions(&m2, "r", 2, 1)),
            errors::INVALID_REPLICATION_FACTOR
        );
    }

    #[test]
    fn the_internal_topic_gets_up_to_three_replicas() {
        assert_eq!(
            internal_topic_assignments(&brokers(2, &[]), 2, 1).unwrap(),
            vec![vec![1, 2], vec![2, 1]]
        );
        assert_eq!(
            internal_topic_assignments(&brokers(5, &[]), 1, 1).unwrap(),
            vec![vec![1, 2, 3]]
        );
        assert_eq!(
            internal_topic_assignments(&brokers(5, &[1, 2, 3, 4]), 1, 1).unwrap(),
            vec![vec![5]]
        );
    }

    #[test]
    fn creating_the_internal_topic_places_it_like_kafka_and_sets_min_isr() {
        let name = crate::groups::offsets_log::OFFSETS_TOPIC;
        let created = |m: &ClusterMeta| match create_topic(m, new_topic(name, 4, &[]), 1, 9, 1) {
            Ok(MetadataRecord::CreateTopic {
                assignments,
                configs,
                ..
            }) => (assignments, configs),
            other => panic!("{other:?}"),
        };
        let (a, c) = created(&brokers(5, &[]));
        assert_eq!(a.len(), 4);
        assert!(a.iter().all(|r| r.len() == 3), "{a:?}");
        assert_eq!(c.get("min.insync.replicas").map(String::as_str), Some("2"));
        let (a, c) = created(&brokers(2, &[]));
        assert!(a.iter().all(|r| r.len() == 2), "{a:?}");
        assert_eq!(c.get("min.insync.replicas").map(String::as_str), Some("2"));
        let (a, c) = created(&brokers(3, &[2, 3]));
        assert_eq!(a, vec![vec![1]; 4]);
        assert_eq!(c.get("min.insync.replicas").map(String::as_str), Some("1"));
    }

    #[test]
    fn the_internal_topic_cannot_be_deleted_or_grown() {
        let name = crate::groups::offsets_log::OFFSETS_TOPIC;
        let m = brokers(3, &[]);
        let m = match create_topic(&m, new_topic(name, 4, &[]), 1, 9, 1) {
            Ok(rec) => {
                let mut m = m;
                assert!(m.apply(&rec));
                m
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(code(delete_topic(&m, name)), errors::INVALID_REQUEST);
        assert_eq!(
            code(create_partitions(&m, name, 8, 1)),
            errors::INVALID_REQUEST
        );
        assert!(m.topics.contains_key(name));
    }
}
