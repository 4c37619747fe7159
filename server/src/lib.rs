//! shardlog-server: a Kafka-compatible broker on thread-per-core shards.
//!
//! Folders by concern, each layer importing only the ones below it (no import cycles):
//!
//! * [`broker`] (start-up, one pinned glommio executor per shard, signals, shutdown),
//!   [`connection`] (framing, pipelining, in-order vectored response writes) and [`dispatch`]
//!   (what a shard does with a request addressed to it): the top.
//! * [`api`]: the Kafka APIs by family (produce, fetch, offsets, cluster metadata, topic admin,
//!   configs, groups, log dirs); each splits its request by owning shard and assembles the
//!   response in request order.
//! * [`admin`]: the admin HTTP listener (`/metrics`, `/health`).
//! * [`controller`]: cluster metadata (pure state and store), the metadata authority on shard 0,
//!   and opening, closing and ticking the topics a shard owns.
//! * [`groups`]: the per-shard group coordinator, its internal log `__consumer_offsets`, lag.
//! * [`mesh`]: a shard's state, partition routing, the messages between shards, the data path
//!   on the owning shard, and the one split / send / join / reorder helper (`mesh::scatter`).
//! * [`partition`]: a partition's log, producer state, compression policy and append queue.
//! * [`wire`]: request headers and version negotiation, error codes, connection admission,
//!   the zero-copy Fetch encoding and fetch sessions.
//! * [`metrics`]: per-shard counters (the partitions update them; a shard's snapshot of them
//!   is `mesh::stats`).
//! * [`clock`]: the wall clock time-based log work reads (system, or manual in tests).
//! * [`config`]: layered configuration (defaults, TOML file, `SHARDLOG_*`, flags);
//!   [`alloc`]: the global allocator that keeps wire-chosen allocation sizes from aborting.
//!
//! The operator CLI (`shardlog topic|produce|consume|group|cluster|config|check`) is the crate
//! `shardlog-cli`, and the `shardlog` binary the crate `shardlog` (`bin/`): the broker carries
//! neither them nor the tokio-based client they run on.

pub mod admin;
pub mod alloc;
pub mod api;
pub mod broker;
pub mod clock;
pub mod config;
pub mod connection;
pub mod controller;
pub mod dispatch;
pub mod groups;
pub mod mesh;
pub mod metrics;
pub mod partition;
pub mod replication;
pub mod wire;

/// Every binary and test linking the server gets the guarded allocator (see [`alloc`]).
#[global_allocator]
static GLOBAL: alloc::GuardedAlloc = alloc::GuardedAlloc;
