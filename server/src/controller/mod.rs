//! Cluster metadata: the image of topics, partitions, configs and their ids ([`metadata`]),
//! the records that change it ([`records`]), the log that commits them ([`log`]: the
//! [`log::MetadataLog`] trait and today's file implementation), the validation of admin
//! operations that produces records ([`validate`]), and the per-topic-partition map every
//! shard keys its tables by ([`topic_map`]).
//!
//! The controller's decisions about brokers, ISRs, leaders and replica placement are pure
//! functions in [`decide`].
//!
//! The one place that changes metadata, the metadata authority on shard 0, is in
//! [`authority`]; opening, closing and ticking the topics a shard owns in [`topics`].

pub mod authority;
pub mod decide;
pub mod lifecycle;
pub mod log;
pub mod metadata;
pub mod quorum;
pub mod raft_log;
pub mod records;
pub mod rpc;
pub mod topic_map;
pub mod topics;
pub mod transport;
pub mod validate;
