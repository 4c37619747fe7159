//! Where a group request goes: the group's shard (one group) or one request per owning
//! shard (several groups), and the client identity a member is recorded with.

use std::net::IpAddr;
use std::rc::Rc;

use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use shardlog_coordinator::{error_response, ErrorCode, Request, Response};

use crate::api::common::s;
use crate::groups::offsets_log::group_shard;
use crate::mesh::messages::{ShardReq, ShardResp};
use crate::mesh::scatter;
use crate::mesh::shard::Shard;

/// FindCoordinator key type of a transactional id (we have no transaction coordinator).
pub(crate) const KEY_TYPE_TRANSACTION: i8 = 1;

pub(crate) fn opt_s(x: &Option<String>) -> Option<StrBytes> {
    x.as_deref().map(s)
}

pub(crate) fn client_id(header: &RequestHeader) -> String {
    header
        .client_id
        .as_ref()
        .map(|c| c.to_string())
        .unwrap_or_default()
}

/// A member's client host as Kafka reports it: `/` and the address, IPv6 written out in full
/// (`/0:0:0:0:0:0:0:1`) and an IPv4-mapped IPv6 address as IPv4, like Java's
/// `InetAddress.toString()` for an address without a host name.
pub fn client_host(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(a) => format!("/{a}"),
        IpAddr::V6(a) => {
            let groups: Vec<String> = a.segments().iter().map(|g| format!("{g:x}")).collect();
            format!("/{}", groups.join(":"))
        }
    }
}

/// Places `req` on the shard owning `group_id`; the future yields the coordinator's answer
/// (COORDINATOR_NOT_AVAILABLE if the shard is gone).
pub async fn place(
    shard: &Rc<Shard>,
    group_id: &str,
    req: Request,
) -> LocalBoxFuture<'static, Response> {
    let fallback = error_response(&req, ErrorCode::CoordinatorNotAvailable);
    let target = shard.groups.shard_of(group_id, shard.shards);
    let answer = shard.send(target, ShardReq::Group(req)).await;
    async move {
        match answer.await {
            ShardResp::Group(r) => r,
            _ => fallback,
        }
    }
    .boxed_local()
}

/// Splits `ids` by owning shard: (shard, positions in `ids`), shards ascending.
pub fn split_by_shard(
    ids: &[String],
    partitions: usize,
    shards: usize,
) -> Vec<(usize, Vec<usize>)> {
    scatter::split_by_owner(0..ids.len(), |&i| group_shard(&ids[i], partitions, shards))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_by_shard_covers_every_id_once_and_matches_ownership() {
        let ids: Vec<String> = (0..100).map(|i| format!("g{i}")).collect();
        for shards in 1..=4 {
            let parts = split_by_shard(&ids, 2 * shards, shards);
            let mut seen = vec![false; ids.len()];
            let mut last_shard = None;
            for (target, positions) in &parts {
                assert!(last_shard < Some(*target), "shards ascending, each once");
                last_shard = Some(*target);
                for &p in positions {
                    assert!(!seen[p]);
                    seen[p] = true;
                    assert_eq!(group_shard(&ids[p], 2 * shards, shards), *target);
                }
                // Positions keep request order inside a shard.
                assert!(positions.windows(2).all(|w| w[0] < w[1]));
            }
            assert!(seen.iter().all(|&s| s));
        }
    }

    #[test]
    fn client_host_is_written_like_kafka() {
        use std::net::{Ipv4Addr, Ipv6Addr};
        assert_eq!(
            client_host(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1))),
            "/127.0.0.1"
        );
        assert_eq!(
            client_host(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            "/0:0:0:0:0:0:0:1"
        );
        assert_eq!(
            client_host(IpAddr::V6(Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped())),
            "/10.1.2.3"
        );
        assert_eq!(
            client_host("2001:db8::ff00:42:8329".parse().unwrap()),
            "/2001:db8:0:0:0:ff00:42:8329"
        );
    }
}
