//! The shards and the channel mesh between them.
//!
//! * [`messages`]: what one shard asks another (`ShardReq`/`ShardResp`) and the parts they
//!   carry.
//! * [`shard`]: a shard's state, partition routing (`shard_for`), and sending a request to the
//!   owning shard and waiting for its answer.
//! * [`routing`]: which shard owns a partition, and a topic's directory name.
//! * [`data`]: what a shard does with the data-path requests for partitions it owns
//!   (produce with its acknowledgement wait, reads, long-poll waits, offsets).
//! * [`stats`]: the shard's metrics snapshot.
//! * [`scatter`]: the one helper that splits a request by owning shard, sends the pieces, joins
//!   the answers and puts them back in request order.
pub mod data;
pub mod messages;
pub mod routing;
pub mod scatter;
pub mod shard;
pub mod stats;
