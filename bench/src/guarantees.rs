//! What a configuration survives, for the tuning lab's report: the one place in the code that
//! states it.
//!
//! KEEP IN STEP WITH THE DOCS: this mirrors the guarantee table of `docs/RELIABILITY.md`
//! ("Guarantees: what survives which failure") and ARCHITECTURE.md's flush-policy table; when
//! they change, change [`survives`] and its tests. The doc's RF 3 rows assume
//! min.insync.replicas=2; with 1 the ISR may shrink to the leader alone, so acks=all promises no
//! more than acks=1 (Kafka's rule), which is what this table says for it.

use crate::experiment::{Acks, Flush};

/// Whether acknowledged records survive one kind of failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Survival {
    /// Every acknowledged record survives.
    Yes,
    /// Acknowledged records may be lost; how many.
    Loses(String),
    /// Nothing is acknowledged (acks=0), so nothing is promised.
    NotAcked,
}

impl Survival {
    /// Text for a report cell.
    pub fn text(&self) -> String {
        match self {
            Survival::Yes => "yes".into(),
            Survival::Loses(what) => format!("no: {what}"),
            Survival::NotAcked => "no (acks=0: nothing acknowledged)".into(),
        }
    }

    /// Whether nothing acknowledged is lost.
    pub fn is_yes(&self) -> bool {
        *self == Survival::Yes
    }
}

/// What one configuration survives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guarantee {
    /// One broker killed (kill -9; restarted, or replaced by a follower).
    pub one_broker_killed: Survival,
    /// Every broker killed at once (kill -9 of every process; the machines stay up).
    pub all_brokers_killed: Survival,
    /// Power loss (or kernel crash) of one machine.
    pub power_loss_one: Survival,
    /// Power loss of every machine at once.
    pub power_loss: Survival,
    /// One machine lost for good: its disk gone, the broker replaced by an empty one.
    pub machine_lost: Survival,
    /// Where the row comes from.
    pub source: &'static str,
}

const SINGLE: &str =
    "measured: docs/RELIABILITY.md (kill -9 loop, LazyFS power loss per flush policy)";
const REPLICATED: &str = "measured: docs/RELIABILITY.md cluster rows (kill -9, pause and \
     rolling-restart loops; LazyFS power loss of one and of all brokers per flush policy; \
     one machine lost: the KIP-966 run, a replica back with an empty log not elected; \
     RF 3, min.insync.replicas=2)";
/// Rows with fewer than two in-sync copies behind an acknowledgement (acks=1, or acks=all with
/// min.insync.replicas=1) are Kafka's stated rule, not a measurement of what is lost.
const REPLICATED_WEAK: &str = "Kafka's rule for one in-sync copy; what is lost is not measured \
     here (docs/RELIABILITY.md measures acks=1 losses under kill -9 and network faults)";

/// What acknowledged records survive under `acks`, `rf` replicas, `flush` and
/// `min_insync` (None: the topic default, 1).
pub fn survives(
    acks: Acks,
    rf: i16,
    flush: Flush,
    min_insync: Option<i16>,
    flush_interval_ms: u64,
) -> Guarantee {
    let unsynced = |flush: Flush| match flush {
        Flush::EveryBatch => "the batches written but not yet fsync'd (milliseconds)".to_string(),
        Flush::Interval => format!("up to the last {flush_interval_ms} ms (flush.ms)"),
        Flush::Never => "everything since the last segment seal".to_string(),
    };
    if acks == Acks::None {
        return Guarantee {
            one_broker_killed: Survival::NotAcked,
            all_brokers_killed: Survival::NotAcked,
            power_loss_one: Survival::NotAcked,
            power_loss: Survival::NotAcked,
            machine_lost: Survival::NotAcked,
            source: if rf > 1 { REPLICATED } else { SINGLE },
        };
    }
    if rf <= 1 {
        // One copy. acks=1 and acks=all are the same here: answered once the batch reached the
        // device (O_DIRECT write completed), under EveryBatch acks=all only after the fsync.
        let power_loss = match (acks, flush) {
            (Acks::All, Flush::EveryBatch) => Survival::Yes,
            (_, f) => Survival::Loses(unsynced(f)),
        };
        return Guarantee {
            one_broker_killed: Survival::Yes,
            all_brokers_killed: Survival::Yes,
            power_loss_one: power_loss.clone(),
            power_loss,
            machine_lost: Survival::Loses("everything on that machine (one copy)".into()),
            source: SINGLE,
        };
    }
    // Replicated.
    let in_sync_copies = match acks {
        Acks::All => min_insync.unwrap_or(1).max(1),
        _ => 1,
    };
    if in_sync_copies < 2 {
        let tail = if acks == Acks::Leader {
            "records the failed leader acknowledged before a follower fetched them"
        } else {
            "records acknowledged while the ISR had shrunk to the leader (min.insync.replicas=1)"
        };
        return Guarantee {
            one_broker_killed: Survival::Loses(tail.into()),
            all_brokers_killed: Survival::Loses(tail.into()),
            power_loss_one: Survival::Loses(tail.into()),
            power_loss: Survival::Loses(format!("{tail}, and {}", unsynced(flush))),
            machine_lost: Survival::Loses(tail.into()),
            source: REPLICATED_WEAK,
        };
    }
    // At least two replicas hold the record before the answer, each counted only once its own
    // flush policy is satisfied: a machine's power loss loses at most its own unsynced tail,
    // and that replica is not elected over one that holds more.
    let power_loss = match flush {
        Flush::EveryBatch => Survival::Yes,
        Flush::Interval => Survival::Loses(format!(
            "up to the last {flush_interval_ms} ms (flush.ms) that no replica had fsync'd"
        )),
        Flush::Never => {
            Survival::Loses("everything since the last fsync on each replica".to_string())
        }
    };
    Guarantee {
        one_broker_killed: Survival::Yes,
        all_brokers_killed: Survival::Yes,
        power_loss_one: Survival::Yes,
        power_loss,
        // Another in-sync replica holds every acknowledged record; the empty replacement
        // comes back with a new broker epoch and is not elected over it (KIP-903, KIP-966).
        machine_lost: Survival::Yes,
        source: REPLICATED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_node_rows_match_the_flush_policy_table() {
        // docs/ARCHITECTURE.md: only EveryBatch with acks=all survives power loss; every policy
        // survives kill -9 of the broker.
        for flush in [Flush::Never, Flush::Interval, Flush::EveryBatch] {
            for acks in [Acks::Leader, Acks::All] {
                let g = survives(acks, 1, flush, None, 1000);
                assert!(g.one_broker_killed.is_yes() && g.all_brokers_killed.is_yes());
                assert!(!g.machine_lost.is_yes(), "one copy: {acks} {flush}");
                assert_eq!(g.power_loss_one, g.power_loss);
                assert_eq!(
                    g.power_loss.is_yes(),
                    acks == Acks::All && flush == Flush::EveryBatch,
                    "{acks} {flush}"
                );
            }
            assert_eq!(
                survives(Acks::None, 1, flush, None, 1000).power_loss,
                Survival::NotAcked
            );
        }
        assert!(survives(Acks::All, 1, Flush::Interval, Some(1), 250)
            .power_loss
            .text()
            .contains("250 ms"));
    }

    #[test]
    fn replicated_rows_need_two_in_sync_copies() {
        // docs/RELIABILITY.md's RF 3 acks=all rows (min.insync.replicas=2).
        for flush in [Flush::Never, Flush::Interval, Flush::EveryBatch] {
            let g = survives(Acks::All, 3, flush, Some(2), 1000);
            assert!(g.one_broker_killed.is_yes() && g.all_brokers_killed.is_yes());
            assert!(
                g.power_loss_one.is_yes() && g.machine_lost.is_yes(),
                "{flush}"
            );
            assert_eq!(g.power_loss.is_yes(), flush == Flush::EveryBatch, "{flush}");
        }
        let g = survives(Acks::All, 3, Flush::EveryBatch, Some(1), 1000);
        assert!(!g.one_broker_killed.is_yes() && !g.power_loss.is_yes());
        assert!(!g.machine_lost.is_yes());
        let g = survives(Acks::Leader, 3, Flush::EveryBatch, None, 1000);
        assert!(!g.one_broker_killed.is_yes());
        assert_eq!(g.source, REPLICATED_WEAK);
        assert_eq!(
            survives(Acks::All, 3, Flush::Never, Some(2), 1000).source,
            REPLICATED
        );
    }
}
