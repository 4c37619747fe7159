//! Validation of admin operations against the metadata image: each function either refuses
//! the operation with the Kafka error code (and message) the client gets, or returns the one
//! [`MetadataRecord`] that carries it out. Nothing is proposed to the metadata log before it
//! has passed here, so a committed record is always valid to apply; validation reads only the
//! image it is given, which makes it testable without a broker.

use std::collections::BTreeMap;

use crate::controller::metadata::{self, ClusterMeta};
use crate::controller::records::MetadataRecord;
use crate::mesh::messages::{ConfigOps, NewTopic};
use crate::wire::errors;

/// Most partitions a topic may have.
pub const MAX_PARTITIONS: i32 = 100_000;

/// A refused admin operation: the error code and the optional message of the response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: i16,
    pub message: Option<String>,
}

impl Refusal {
    fn new(code: i16, message: impl Into<Option<String>>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// CreateTopics for one topic: a valid name, not taken, 1..=100000 partitions (-1: the
/// broker's `default_partitions`), known configs with valid values. `id` is the new topic's
/// id (chosen by the caller so that validation stays deterministic); every partition is
/// placed on `node_id`.
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
    let partitions = if t.partitions == -1 {
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
    Ok(MetadataRecord::CreateTopic {
        name,
        id,
        assignments: vec![vec![node_id]; partitions as usize],
        configs,
    })
}

/// DeleteTopics for one topic: it must exist.
pub fn delete_topic(image: &ClusterMeta, name: &str) -> Result<MetadataRecord, Refusal> {
    match image.topics.get(name) {
        Some(t) => Ok(MetadataRecord::DeleteTopic {
            name: t.name.clone(),
            id: t.id,
        }),
        None => Err(Refusal::new(errors::UNKNOWN_TOPIC_OR_PARTITION, None)),
    }
}

/// CreatePartitions for one topic: it must exist and `count` must be more than it has and at
/// most 100000; the new partitions are placed on `node_id`.
pub fn create_partitions(
    image: &ClusterMeta,
    name: &str,
    count: i32,
    node_id: i32,
) -> Result<MetadataRecord, Refusal> {
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
    Ok(MetadataRecord::CreatePartitions {
        name: t.name.clone(),
        id: t.id,
        first: have as u32,
        assignments: vec![vec![node_id]; (count - have) as usize],
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
}
