//! shardlog-server: a Kafka-compatible broker on thread-per-core shards.
//!
//! * [`config`]: layered configuration (defaults, TOML file, `SHARDLOG_*`, flags).
//! * [`broker`]: start-up, one pinned glommio executor per shard, signals, shutdown.
//! * [`shard`]: partition ownership, the channel mesh between shards, metadata authority.
//! * [`partition`]: a partition's log, producer state and append queue.
//! * [`connection`]: framing, pipelining, in-order vectored response writes.
//! * [`protocol`]: request headers, version negotiation, response framing.
//! * [`handlers`]: the Kafka APIs.
//! * [`fetch`]: zero-copy Fetch response encoding and fetch sessions.
//! * [`groups`]: the per-shard group coordinator, its internal log `__consumer_offsets`, lag.
//! * [`group_api`]: the consumer-group Kafka APIs (splitting and forwarding per group shard).
//! * [`metadata`], [`producer_state`], [`errors`]: pure state and mappings.
//! * [`alloc`]: the global allocator that keeps wire-chosen allocation sizes from aborting.
//! * [`limits`]: connection admission (`max_connections`, `max_connections_per_ip`).
//! * [`metrics`], [`admin_http`]: per-shard counters gathered at scrape time; `/metrics` and
//!   `/health` on the admin listener.
//!
//! The operator CLI (`shardlog topic|produce|consume|group|cluster|config|check`) is the crate
//! `shardlog-cli`, and the `shardlog` binary the crate `shardlog` (`bin/`): the broker carries
//! neither them nor the tokio-based client they run on.

pub mod admin;
pub mod alloc;
pub mod api;
pub mod broker;
pub mod config;
pub mod connection;
pub mod controller;
pub mod dispatch;
pub mod groups;
pub mod mesh;
pub mod metrics;
pub mod partition;
pub mod wire;

/// Every binary and test linking the server gets the guarded allocator (see [`alloc`]).
#[global_allocator]
static GLOBAL: alloc::GuardedAlloc = alloc::GuardedAlloc;
