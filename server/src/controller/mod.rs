//! Cluster metadata: topics, partitions, configs and their ids ([`metadata`]: the pure state,
//! its events and the file store), and the per-topic-partition map every shard keys its
//! tables by ([`topic_map`]).
//!
//! The one place that changes metadata, the metadata authority on shard 0, is in
//! [`authority`]; opening, closing and ticking the topics a shard owns in [`topics`].

pub mod authority;
pub mod metadata;
pub mod topic_map;
pub mod topics;
