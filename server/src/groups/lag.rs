//! Consumer lag, from any shard: committed offsets from the group's shard (an OffsetFetch
//! through its coordinator), high watermarks from the partitions' shards. The CLI (through
//! the Kafka APIs) and `/metrics` use it.

use std::collections::HashMap;
use std::rc::Rc;

use shardlog_coordinator::{
    ErrorCode, ListGroupsRequest, OffsetFetchRequest, PartitionLag, Request, Response,
};

use crate::mesh::messages::{ShardReq, ShardResp};
use crate::mesh::shard::Shard;

/// Errors of the lag admin path.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LagError {
    #[error("group coordinator error {0:?}")]
    Coordinator(ErrorCode),
    #[error("a shard did not answer (shutting down)")]
    ShardGone,
}

/// Lag of one group, per committed partition: high watermark − committed offset. Callable from
/// any shard. `Ok(None)` when the group has no committed offsets (or does not exist).
pub async fn group_lag(
    shard: &Rc<Shard>,
    group_id: &str,
) -> Result<Option<Vec<PartitionLag>>, LagError> {
    let target = shard.groups.shard_of(group_id, shard.shards);
    let req = Request::OffsetFetch(OffsetFetchRequest {
        group_id: group_id.to_string(),
        topics: None,
    });
    let committed: Vec<(String, i32, i64)> = match shard.call(target, ShardReq::Group(req)).await {
        ShardResp::Group(Response::OffsetFetch(r)) => {
            if !r.error.is_ok() {
                return Err(LagError::Coordinator(r.error));
            }
            r.topics
                .into_iter()
                .flat_map(|t| {
                    let topic = t.topic;
                    t.partitions
                        .into_iter()
                        .filter(|p| p.committed_offset >= 0)
                        .map(move |p| (topic.clone(), p.partition, p.committed_offset))
                })
                .collect()
        }
        _ => return Err(LagError::ShardGone),
    };
    if committed.is_empty() {
        return Ok(None);
    }
    let hws = high_watermarks(shard, committed.iter().map(|(t, p, _)| (t.clone(), *p))).await;
    Ok(Some(shardlog_coordinator::compute_lag(
        committed.iter().map(|(t, p, o)| (t.as_str(), *p, *o)),
        |t, p| hws.get(&(t.to_string(), p)).copied(),
    )))
}

/// Lag of every group of the broker that has committed offsets, sorted by group id.
pub async fn all_group_lags(
    shard: &Rc<Shard>,
) -> Result<Vec<(String, Vec<PartitionLag>)>, LagError> {
    let mut ids = Vec::new();
    for target in 0..shard.shards {
        let req = Request::ListGroups(ListGroupsRequest::default());
        match shard.call(target, ShardReq::Group(req)).await {
            ShardResp::Group(Response::ListGroups(r)) => {
                ids.extend(r.groups.into_iter().map(|g| g.group_id))
            }
            _ => return Err(LagError::ShardGone),
        }
    }
    ids.sort();
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(lag) = group_lag(shard, &id).await? {
            out.push((id, lag));
        }
    }
    Ok(out)
}

/// High watermarks of the given partitions, asked of their owning shards.
async fn high_watermarks(
    shard: &Rc<Shard>,
    parts: impl Iterator<Item = (String, i32)>,
) -> HashMap<(String, i32), i64> {
    let by_shard = crate::mesh::scatter::split_by_owner(parts.map(|(t, p)| (t, p, -1)), |q| {
        shard.owner(&q.0, q.1)
    });
    let mut out = HashMap::new();
    for (target, parts) in by_shard {
        if let ShardResp::Offsets(rs) = shard.call(target, ShardReq::ListOffsets { parts }).await {
            for r in rs {
                if r.error == crate::wire::errors::NONE && r.offset >= 0 {
                    out.insert((r.topic, r.partition), r.offset);
                }
            }
        }
    }
    out
}
