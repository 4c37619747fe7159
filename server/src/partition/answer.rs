//! The answer of a produce for one partition.
//!
//! Its fields are private, so the only way to a success (error NONE with offsets) is
//! [`ProduceResult::committed`], which takes the replica core's [`Committed`] proof and checks
//! that it covers the batch's last offset: a produce path that forgets to wait for its
//! acknowledgement level does not compile. (The group coordinator's OffsetCommit works the same
//! way with the engine's own `Committed`, see `groups::coordinator::append_durable`.)

use shardlog_replica::Committed;

use crate::wire::errors;

#[derive(Clone, Debug)]
pub struct ProduceResult {
    topic: String,
    partition: i32,
    error: i16,
    base_offset: i64,
    log_append_time_ms: i64,
    log_start_offset: i64,
    /// With NOT_LEADER_OR_FOLLOWER / FENCED_LEADER_EPOCH: (leader id, leader epoch) as this
    /// broker knows them, for KIP-951's `CurrentLeader` (Produce v10+).
    current_leader: Option<(i32, i32)>,
}

/// The proof handed to [`ProduceResult::committed`] does not reach the batch's last offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("commit proof through {through} does not cover offset {last_offset}")]
pub struct NotCovered {
    pub through: i64,
    pub last_offset: i64,
}

impl ProduceResult {
    /// A refused or failed produce. `error` is never NONE (that would be a success without a
    /// proof): NONE is answered as UNKNOWN_SERVER_ERROR.
    pub fn failed(topic: &str, partition: i32, error: i16) -> ProduceResult {
        debug_assert_ne!(error, errors::NONE, "a failure needs an error code");
        ProduceResult {
            topic: topic.to_string(),
            partition,
            error: if error == errors::NONE {
                errors::UNKNOWN_SERVER_ERROR
            } else {
                error
            },
            base_offset: -1,
            log_append_time_ms: -1,
            log_start_offset: -1,
            current_leader: None,
        }
    }

    /// The success answer for the batch at `base_offset..=last_offset`, once `proof` covers it.
    pub fn committed(
        topic: &str,
        partition: i32,
        proof: Committed,
        base_offset: i64,
        last_offset: i64,
        log_append_time_ms: Option<i64>,
    ) -> Result<ProduceResult, NotCovered> {
        if !proof.covers(last_offset) {
            return Err(NotCovered {
                through: proof.through(),
                last_offset,
            });
        }
        Ok(ProduceResult {
            topic: topic.to_string(),
            partition,
            error: errors::NONE,
            base_offset,
            log_append_time_ms: log_append_time_ms.unwrap_or(-1),
            log_start_offset: -1,
            current_leader: None,
        })
    }

    /// acks=0: the producer gets no answer at all (the response is never built), so this one
    /// carries no offsets and no error.
    pub fn unanswered(topic: &str, partition: i32) -> ProduceResult {
        ProduceResult {
            topic: topic.to_string(),
            partition,
            error: errors::NONE,
            base_offset: -1,
            log_append_time_ms: -1,
            log_start_offset: -1,
            current_leader: None,
        }
    }

    /// With the partition's log start offset (answered since Produce v5).
    pub fn with_log_start(mut self, log_start_offset: i64) -> ProduceResult {
        self.log_start_offset = log_start_offset;
        self
    }

    /// With the leader this broker knows of, `(leader id, leader epoch)`, when the answer is
    /// NOT_LEADER_OR_FOLLOWER or FENCED_LEADER_EPOCH (KIP-951: the client moves to it without
    /// a Metadata round); other answers carry no hint.
    pub fn with_leader_hint(mut self, leader: Option<(i32, i32)>) -> ProduceResult {
        if matches!(
            self.error,
            errors::NOT_LEADER_OR_FOLLOWER | errors::FENCED_LEADER_EPOCH
        ) {
            self.current_leader = leader;
        }
        self
    }

    /// A success without a proof, for tests of the response assembly only.
    #[cfg(test)]
    pub(crate) fn for_test(topic: &str, partition: i32, base_offset: i64) -> ProduceResult {
        ProduceResult {
            error: errors::NONE,
            base_offset,
            ..ProduceResult::unanswered(topic, partition)
        }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }
    pub fn partition(&self) -> i32 {
        self.partition
    }
    pub fn error(&self) -> i16 {
        self.error
    }
    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }
    pub fn log_append_time_ms(&self) -> i64 {
        self.log_append_time_ms
    }
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }
    /// KIP-951's hint: `(leader id, leader epoch)`, only on a leadership error.
    pub fn current_leader(&self) -> Option<(i32, i32)> {
        self.current_leader
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardlog_replica::{
        Acks, Action, Appended, BecameLeader, Config, LogEnds, NoDedup, ReplicaState,
    };

    /// A real proof from a single-replica core through `through`.
    fn proof(through: i64) -> Committed {
        let mut r = ReplicaState::new(Config::default(), LogEnds::at(0), 0, NoDedup).unwrap();
        r.became_leader(BecameLeader {
            leader_epoch: 0,
            partition_epoch: 0,
            replicas: vec![1],
            isr: vec![1],
            now_ms: 0,
        })
        .unwrap();
        let t = r.admit_produce(Acks::All).unwrap();
        let n = through + 1;
        let _ = r.appended(
            t,
            Appended {
                base_offset: 0,
                last_offset: through,
                ident: None,
                duplicate: false,
                at_ms: 0,
            },
        );
        let ends = LogEnds {
            log_start: 0,
            durable_end: n,
            written_end: n,
            log_end: n,
        };
        r.log_progress(ends)
            .unwrap()
            .into_iter()
            .find_map(|a| match a {
                Action::Complete { result, .. } => result.ok(),
                _ => None,
            })
            .expect("committed")
    }

    #[test]
    fn a_success_needs_a_proof_that_covers_the_batch() {
        let p = proof(9);
        let ok = ProduceResult::committed("t", 0, p, 5, 9, Some(77)).unwrap();
        assert_eq!(
            (ok.error(), ok.base_offset(), ok.log_append_time_ms()),
            (errors::NONE, 5, 77)
        );
        assert_eq!(
            ProduceResult::committed("t", 0, p, 10, 10, None).unwrap_err(),
            NotCovered {
                through: 9,
                last_offset: 10
            }
        );
    }

    #[test]
    fn a_failure_always_carries_an_error() {
        let r = ProduceResult::failed("t", 0, errors::NOT_ENOUGH_REPLICAS).with_log_start(3);
        assert_eq!(
            (r.error(), r.base_offset(), r.log_start_offset()),
            (errors::NOT_ENOUGH_REPLICAS, -1, 3)
        );
    }

    #[test]
    fn only_leadership_errors_carry_a_leader_hint() {
        for code in [errors::NOT_LEADER_OR_FOLLOWER, errors::FENCED_LEADER_EPOCH] {
            let r = ProduceResult::failed("t", 0, code).with_leader_hint(Some((2, 7)));
            assert_eq!(r.current_leader(), Some((2, 7)));
        }
        let r = ProduceResult::failed("t", 0, errors::NOT_ENOUGH_REPLICAS)
            .with_leader_hint(Some((2, 7)));
        assert_eq!(r.current_leader(), None);
        let ok = ProduceResult::committed("t", 0, proof(3), 0, 3, None)
            .unwrap()
            .with_leader_hint(Some((2, 7)));
        assert_eq!(ok.current_leader(), None);
    }
}
