//! Consumer groups on the broker: the per-shard group coordinator and its internal log
//! `__consumer_offsets` ([`coordinator`], its state in [`state`]), the pure offsets-log layout ([`offsets_log`]) and
//! consumer lag ([`lag`]). The Kafka APIs that reach them are in `crate::api::groups`.

pub mod coordinator;
pub mod lag;
pub mod offsets_log;
pub mod state;
