//! What a shard does with a [`ShardReq`] addressed to it, from another shard or from itself.
//!
//! The top of the shard: it reaches the data path (`mesh::data`), the topics and the metadata
//! authority (`controller`), the group coordinator (`groups`) and the metrics snapshot. The
//! mesh itself only carries requests; the broker hands [`serve`] to every [`Shard`] it builds.

use std::rc::Rc;

use futures::future::{self, LocalBoxFuture};
use futures::FutureExt;

use crate::mesh::messages::*;
use crate::mesh::shard::Shard;

/// Executes a request owned by this shard. Everything up to the returned future's first
/// poll (in particular, queueing appends) happens now.
pub fn serve(shard: &Rc<Shard>, req: ShardReq) -> LocalBoxFuture<'static, ShardResp> {
    match req {
        ShardReq::Produce { acks, parts } => shard.start_produce(acks, parts),
        ShardReq::Read { parts, max_bytes } => {
            let s = shard.clone();
            async move { ShardResp::Read(s.read(parts, max_bytes).await) }.boxed_local()
        }
        ShardReq::WaitData { parts, wait_ms } => {
            let s = shard.clone();
            async move {
                s.wait_data(parts, wait_ms).await;
                ShardResp::Waited
            }
            .boxed_local()
        }
        ShardReq::ListOffsets { parts } => {
            let s = shard.clone();
            async move { ShardResp::Offsets(s.list_offsets(parts).await) }.boxed_local()
        }
        ShardReq::DeleteRecords { parts } => {
            let s = shard.clone();
            async move { ShardResp::Offsets(s.delete_records(parts).await) }.boxed_local()
        }
        ShardReq::EpochEnd { parts } => ShardResp::Offsets(shard.epoch_end(parts))
            .pipe(future::ready)
            .boxed_local(),
        ShardReq::Admin(a) => {
            let s = shard.clone();
            async move { ShardResp::Admin(s.admin(a).await) }.boxed_local()
        }
        ShardReq::Group(r) => crate::groups::state::Groups::submit(shard, r)
            .map(ShardResp::Group)
            .boxed_local(),
        ShardReq::Apply(ev) => {
            let s = shard.clone();
            async move {
                s.apply(ev).await;
                ShardResp::Applied
            }
            .boxed_local()
        }
        ShardReq::Metrics => {
            let snap = crate::mesh::stats::snapshot(shard);
            future::ready(ShardResp::Metrics(Box::new(snap))).boxed_local()
        }
        ShardReq::LogSizes { topics } => {
            future::ready(ShardResp::LogSizes(shard.log_sizes(topics.as_deref()))).boxed_local()
        }
    }
}

trait Pipe: Sized {
    fn pipe<R>(self, f: impl FnOnce(Self) -> R) -> R {
        f(self)
    }
}
impl<T> Pipe for T {}
