//! A follower fetcher: one task per (leader broker, shard), fetching every partition this
//! shard follows from that leader in one Kafka Fetch request (v12, replica id = this broker's
//! node id) over one connection to the leader's advertised Kafka address.
//!
//! Why Kafka's Fetch on the Kafka listener: the leader's side is the Fetch API it already
//! serves, with its zero-copy response of stored batches, its long poll and its limits; the
//! follower decodes the response with `kafka-protocol`, whose records are slices of the frame
//! it read, and `append_replicated` copies them once into the log's write buffer (the produce
//! path's one copy). Any Kafka tool can inspect it, and no second data protocol exists.
//!
//! Each round: the partitions that can fetch now (the facade's `fetch_position`: a follower
//! whose appended data is committed under its flush policy and that is not truncating) go into
//! one request with `replica.fetch.max.bytes` per partition and
//! `replica.fetch.response.max.bytes` in all; a caught-up follower waits at the leader up to
//! `replica.fetch.wait.max.ms` (the leader's append wakes it). The answer of each partition
//! goes to the facade (`follower_receive`) concurrently, so one fdatasync can cover several.
//! A response is read within the wait plus `replica.socket.timeout.ms` and at most
//! `max_frame_bytes`; a connection error, a timeout or an answer that does not decode closes
//! the connection with one log line and the fetcher pauses (from a tenth of
//! `replica.fetch.backoff.ms`, doubling up to it) before it connects again. A partition whose
//! answer is an error pauses alone, for `replica.fetch.backoff.ms`, except when the answer only
//! says that the two brokers do not agree on the leadership yet (NOT_LEADER_OR_FOLLOWER,
//! FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH, or an answer for an older role): the metadata
//! reaches the other side within milliseconds, so it tries again after [`LEADERSHIP_RETRY`]
//! (right after a leader change a new leader is often asked before it applied its own
//! election; a full backoff there held every acks=all produce for a second). The task ends
//! when the shard follows nothing from that leader.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures::future::{self, Either};
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt};
use glommio::net::TcpStream;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

use crate::mesh::shard::Shard;
use crate::partition::replication::{FetchPosition, FollowSet, FollowerError, LeaderData};
use crate::wire::errors;
use shardlog_replica::Role;

/// The Fetch version followers send: the newest the broker serves (diverging epochs need 12).
pub const FETCH_VERSION: i16 = 12;

/// How soon a partition fetches again after the leader and this broker disagreed about the
/// leadership (see the module docs).
pub const LEADERSHIP_RETRY: Duration = Duration::from_millis(20);

/// The leader's answer says the two brokers disagree about leadership or its epoch (one of
/// them has not applied the latest metadata yet): retried soon, not after the full backoff.
fn leadership_disagreement(code: i16) -> bool {
    matches!(
        code,
        errors::NOT_LEADER_OR_FOLLOWER | errors::FENCED_LEADER_EPOCH | errors::UNKNOWN_LEADER_EPOCH
    )
}

/// How long a partition pauses after its answer failed with `e`.
fn partition_pause_for(e: &FollowerError, backoff: Duration) -> Duration {
    match e {
        FollowerError::Leader(code) if leadership_disagreement(*code) => {
            LEADERSHIP_RETRY.min(backoff)
        }
        FollowerError::Stale { .. } => LEADERSHIP_RETRY.min(backoff),
        _ => backoff,
    }
}

/// Why a round failed as a whole (the connection is closed and the fetcher pauses).
#[derive(Debug, thiserror::Error)]
pub enum RoundError {
    #[error("no address known for broker {0}")]
    NoAddress(i32),
    #[error("cannot resolve {0}")]
    Resolve(String),
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: glommio::GlommioError<()>,
    },
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("response of {0} bytes is above max_frame_bytes")]
    TooLarge(usize),
    #[error("cannot encode the request: {0}")]
    Encode(String),
    #[error("undecodable response: {0}")]
    Decode(String),
    #[error("response to correlation id {got}, expected {expected}")]
    Correlation { got: i32, expected: i32 },
    #[error("leader answered {}", errors::name(*.0))]
    Leader(i16),
}

/// Pauses after failures: from a tenth of the maximum, doubling, reset by a success.
struct Pause {
    next: Duration,
    max: Duration,
}

impl Pause {
    fn new(max_ms: u64) -> Pause {
        let max = Duration::from_millis(max_ms.max(10));
        Pause {
            next: max / 10,
            max,
        }
    }

    fn take(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    fn reset(&mut self) {
        self.next = self.max / 10;
    }
}

/// One partition in the round's request, with the position it was asked from.
struct Wanted {
    topic: String,
    index: i32,
    position: FetchPosition,
}

/// Runs until the shard follows nothing from `leader` (or shuts down).
pub(crate) async fn run(shard: Rc<Shard>, leader: i32, set: Rc<FollowSet>) {
    let cfg = shard.cfg.clone();
    let mut conn: Option<TcpStream> = None;
    let mut pause = Pause::new(cfg.replica_fetch_backoff_ms);
    let partition_pause = Duration::from_millis(cfg.replica_fetch_backoff_ms);
    // Partitions paused after an error answer, until when (only partitions of the set).
    let mut paused: HashMap<(String, i32), Instant> = HashMap::new();
    let mut correlation: i32 = 0;
    loop {
        if shard.is_shutting_down() {
            break;
        }
        let now = Instant::now();
        let mut wanted = Vec::new();
        for (topic, index) in set.partitions() {
            let following = shard
                .partition(&topic, index)
                .filter(|p| p.role() == Role::Follower { leader });
            let Some(p) = following else {
                set.remove(&topic, index);
                continue;
            };
            if paused
                .get(&(topic.clone(), index))
                .is_some_and(|&until| until > now)
            {
                continue;
            }
            if let Some(position) = p.fetch_position() {
                wanted.push(Wanted {
                    topic,
                    index,
                    position,
                });
            }
        }
        paused.retain(|_, &mut until| until > now);
        if set.is_empty() {
            if shard.followers.retire(leader, &set) {
                break;
            }
            continue;
        }
        if wanted.is_empty() {
            // Nothing can fetch now (pauses, pending commits or truncations): look again soon,
            // or as soon as a partition joins.
            let woken = set.wake.listen();
            let tick = glommio::timer::sleep(Duration::from_millis(20));
            future::select(woken, tick.boxed_local()).await;
            continue;
        }
        correlation = correlation.wrapping_add(1) & 0x7fff_ffff;
        let answered = round(&shard, leader, &mut conn, correlation, &wanted).await;
        let response = match answered {
            Ok(r) => r,
            Err(e) => {
                conn = None;
                let d = pause.take();
                tracing::warn!(shard = shard.id, leader, error = %e, pause_ms = d.as_millis() as u64, "follower fetch failed; reconnecting after a pause");
                glommio::timer::sleep(d).await;
                continue;
            }
        };
        pause.reset();
        let lag = take_response(
            &shard,
            leader,
            response,
            &wanted,
            &mut paused,
            partition_pause,
        )
        .await;
        crate::metrics::follower_lag(leader, lag);
    }
    crate::metrics::follower_lag_remove(leader);
    tracing::info!(shard = shard.id, leader, "follower fetcher stopped");
}

/// Hands each partition's answer to its facade (all at once); pauses partitions whose answer
/// was an error. Returns the largest lag seen (the leader's high watermark minus the local
/// log end, in messages).
async fn take_response(
    shard: &Rc<Shard>,
    leader: i32,
    response: FetchResponse,
    wanted: &[Wanted],
    paused: &mut HashMap<(String, i32), Instant>,
    partition_pause: Duration,
) -> i64 {
    let asked: HashMap<(&str, i32), &FetchPosition> = wanted
        .iter()
        .map(|w| ((w.topic.as_str(), w.index), &w.position))
        .collect();
    let mut work = Vec::new();
    for t in response.responses {
        let topic = t.topic.0.to_string();
        for pd in t.partitions {
            let Some(position) = asked.get(&(topic.as_str(), pd.partition_index)) else {
                tracing::warn!(leader, topic = %topic, partition = pd.partition_index, "leader answered a partition that was not asked for; ignored");
                continue;
            };
            let Some(p) = shard.partition(&topic, pd.partition_index) else {
                continue;
            };
            let diverging = (pd.diverging_epoch.epoch >= 0 && pd.diverging_epoch.end_offset >= 0)
                .then_some((pd.diverging_epoch.epoch, pd.diverging_epoch.end_offset));
            let data = LeaderData {
                fetched_in_epoch: position.leader_epoch,
                error: pd.error_code,
                high_watermark: pd.high_watermark,
                log_start_offset: pd.log_start_offset,
                diverging,
                records: pd.records.unwrap_or_default(),
            };
            let hw = pd.high_watermark;
            let topic = topic.clone();
            work.push(async move {
                let result = p.follower_receive(data).await;
                let lag = (hw - p.log_end_offset()).max(0);
                (topic, p.index, result, lag)
            });
        }
    }
    let mut max_lag = 0;
    for (topic, index, result, lag) in future::join_all(work).await {
        max_lag = max_lag.max(lag);
        if let Err(e) = result {
            match &e {
                FollowerError::Leader(code) if leadership_disagreement(*code) => {
                    // The leader and this broker disagree about leadership until the
                    // metadata reaches both: wait for it.
                    tracing::debug!(leader, topic = %topic, partition = index, error = %e, "follower fetch refused; pausing the partition");
                }
                FollowerError::Stale { .. } => {
                    tracing::debug!(leader, topic = %topic, partition = index, error = %e, "answer for an older role; dropped");
                }
                _ => {
                    tracing::warn!(leader, topic = %topic, partition = index, error = %e, "follower could not take the leader's answer; pausing the partition");
                }
            }
            let pause = partition_pause_for(&e, partition_pause);
            paused.insert((topic, index), Instant::now() + pause);
        }
    }
    max_lag
}

/// One request and its response on the (re)opened connection.
async fn round(
    shard: &Rc<Shard>,
    leader: i32,
    conn: &mut Option<TcpStream>,
    correlation: i32,
    wanted: &[Wanted],
) -> Result<FetchResponse, RoundError> {
    let cfg = &shard.cfg;
    let socket_timeout = Duration::from_millis(cfg.replica_socket_timeout_ms);
    if conn.is_none() {
        let (host, port) = shard
            .broker_address(leader)
            .ok_or(RoundError::NoAddress(leader))?;
        let addr = (host.as_str(), port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| RoundError::Resolve(format!("{host}:{port}")))?;
        let stream = connect(addr, socket_timeout.min(CONNECT_TIMEOUT_MAX)).await?;
        tracing::info!(shard = shard.id, leader, %addr, "follower fetch connection open");
        *conn = Some(stream);
    }
    let Some(stream) = conn.as_mut() else {
        return Err(RoundError::NoAddress(leader));
    };
    let request = fetch_request(shard, wanted);
    let frame = encode(correlation, shard.id, &request)?;
    let wait = Duration::from_millis(cfg.replica_fetch_wait_max_ms) + socket_timeout;
    let body = exchange(stream, &frame, wait, cfg.max_frame_bytes).await?;
    let response = decode(body, correlation)?;
    if response.error_code != errors::NONE {
        return Err(RoundError::Leader(response.error_code));
    }
    Ok(response)
}

/// The longest a follower waits for a fetch connection to be accepted before it tries again
/// (after its pause). A connect across a failed network otherwise waits through TCP's SYN
/// retransmissions (1 s, 3 s, 7 s, 15 s after the first): after the network came back, the
/// follower resumed fetching only at the next retransmission, seconds later.
const CONNECT_TIMEOUT_MAX: Duration = Duration::from_secs(2);

/// Opens a fetch connection (TCP_NODELAY: requests are small and answered at once).
pub(crate) async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, RoundError> {
    let stream = TcpStream::connect_timeout(addr, timeout)
        .await
        .map_err(|source| RoundError::Connect { addr, source })?;
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%addr, error = %e, "cannot set TCP_NODELAY on a fetch connection");
    }
    // A fetch sent into a failed network fails within seconds, not after the socket timeout
    // and TCP's retransmission backoff (see `watch_peer`).
    if let Err(e) = crate::controller::transport::watch_peer(&stream, timeout) {
        tracing::debug!(%addr, error = %e, "cannot set keepalive on a fetch connection");
    }
    Ok(stream)
}

/// Writes `frame` and reads one response frame's body, within `wait` and at most
/// `max_frame` bytes (checked before anything is allocated for it).
pub(crate) async fn exchange(
    stream: &mut TcpStream,
    frame: &[u8],
    wait: Duration,
    max_frame: usize,
) -> Result<Bytes, RoundError> {
    let io = async {
        stream.write_all(frame).await?;
        stream.flush().await?;
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).await?;
        let len = i32::from_be_bytes(len);
        let len =
            usize::try_from(len).map_err(|_| RoundError::Decode(format!("frame length {len}")))?;
        if len > max_frame {
            return Err(RoundError::TooLarge(len));
        }
        let mut body = BytesMut::zeroed(len);
        stream.read_exact(&mut body).await?;
        Ok::<Bytes, RoundError>(body.freeze())
    };
    match future::select(Box::pin(io), glommio::timer::sleep(wait).boxed_local()).await {
        Either::Left((r, _)) => r,
        Either::Right(_) => Err(RoundError::Timeout(wait)),
    }
}

/// The round's request: every wanted partition from its position, the bounds from the config.
fn fetch_request(shard: &Shard, wanted: &[Wanted]) -> FetchRequest {
    let cfg = &shard.cfg;
    let mut by_topic: Vec<FetchTopic> = Vec::new();
    for w in wanted {
        let mut part = FetchPartition::default();
        part.partition = w.index;
        part.current_leader_epoch = w.position.leader_epoch;
        part.fetch_offset = w.position.fetch_offset;
        part.last_fetched_epoch = w.position.last_fetched_epoch;
        part.log_start_offset = w.position.log_start_offset;
        part.partition_max_bytes = i32::try_from(cfg.replica_fetch_max_bytes).unwrap_or(i32::MAX);
        match by_topic.last_mut() {
            Some(t) if t.topic.0.as_str() == w.topic => t.partitions.push(part),
            _ => {
                let mut t = FetchTopic::default();
                t.topic = TopicName(StrBytes::from_string(w.topic.clone()));
                t.partitions.push(part);
                by_topic.push(t);
            }
        }
    }
    let mut req = FetchRequest::default();
    req.replica_id = BrokerId(cfg.node_id);
    req.max_wait_ms = i32::try_from(cfg.replica_fetch_wait_max_ms).unwrap_or(i32::MAX);
    req.min_bytes = 1;
    req.max_bytes = i32::try_from(cfg.replica_fetch_response_max_bytes).unwrap_or(i32::MAX);
    req.isolation_level = 0;
    // No fetch session (KIP-227's final epoch): every request names its partitions.
    req.session_id = 0;
    req.session_epoch = -1;
    req.topics = by_topic;
    req
}

/// The request as a frame (size prefix, header v2, body).
fn encode(correlation: i32, shard: usize, req: &FetchRequest) -> Result<Bytes, RoundError> {
    let mut header = RequestHeader::default();
    header.request_api_key = ApiKey::Fetch as i16;
    header.request_api_version = FETCH_VERSION;
    header.correlation_id = correlation;
    header.client_id = Some(StrBytes::from_string(format!("shardlog-replica-{shard}")));
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    header
        .encode(&mut buf, FetchRequest::header_version(FETCH_VERSION))
        .map_err(|e| RoundError::Encode(e.to_string()))?;
    req.encode(&mut buf, FETCH_VERSION)
        .map_err(|e| RoundError::Encode(e.to_string()))?;
    let len = i32::try_from(buf.len() - 4)
        .map_err(|_| RoundError::Encode("request above 2 GiB".into()))?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

/// The response frame's body (after the size prefix).
pub(crate) fn decode(mut body: Bytes, correlation: i32) -> Result<FetchResponse, RoundError> {
    let header = ResponseHeader::decode(&mut body, FetchResponse::header_version(FETCH_VERSION))
        .map_err(|e| RoundError::Decode(format!("response header: {e}")))?;
    if header.correlation_id != correlation {
        return Err(RoundError::Correlation {
            got: header.correlation_id,
            expected: correlation,
        });
    }
    FetchResponse::decode(&mut body, FETCH_VERSION)
        .map_err(|e| RoundError::Decode(format!("Fetch v{FETCH_VERSION}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn leadership_disagreements_retry_soon_other_errors_back_off() {
        let backoff = Duration::from_millis(1000);
        for code in [
            errors::NOT_LEADER_OR_FOLLOWER,
            errors::FENCED_LEADER_EPOCH,
            errors::UNKNOWN_LEADER_EPOCH,
        ] {
            assert_eq!(
                partition_pause_for(&FollowerError::Leader(code), backoff),
                LEADERSHIP_RETRY
            );
        }
        assert_eq!(
            partition_pause_for(&FollowerError::Leader(errors::CORRUPT_MESSAGE), backoff),
            backoff
        );
        assert_eq!(
            partition_pause_for(
                &FollowerError::Leader(errors::UNKNOWN_TOPIC_OR_PARTITION),
                backoff
            ),
            backoff
        );
        // A configured backoff shorter than the retry wins.
        assert_eq!(
            partition_pause_for(
                &FollowerError::Leader(errors::NOT_LEADER_OR_FOLLOWER),
                Duration::from_millis(5)
            ),
            Duration::from_millis(5)
        );
    }

    /// A peer on a thread that reads the request and answers `answer` (then keeps the
    /// connection open for a while, as a hung peer would).
    fn peer(answer: Vec<u8>) -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = l.accept() {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let _ = s.write_all(&answer);
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        addr
    }

    /// What a malformed or hostile leader can send ends the round with a typed error (the
    /// fetcher logs it, closes the connection and pauses), never a panic or an allocation of
    /// the size it claims.
    #[test]
    fn a_malformed_answer_is_an_error_not_a_panic() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let frame = encode(5, 0, &FetchRequest::default()).expect("encodes");
                let wait = Duration::from_millis(300);
                let run = |answer: Vec<u8>| {
                    let frame = frame.clone();
                    async move {
                        let mut s = connect(peer(answer), wait).await.expect("connects");
                        match exchange(&mut s, &frame, wait, 1 << 20).await {
                            Ok(body) => decode(body, 5).map(|_| ()),
                            Err(e) => Err(e),
                        }
                    }
                };
                let mut garbage = 12i32.to_be_bytes().to_vec();
                garbage.extend_from_slice(&5i32.to_be_bytes());
                garbage.extend_from_slice(&[0xff; 8]);
                assert!(matches!(run(garbage).await, Err(RoundError::Decode(_))));
                let huge = (1i32 << 30).to_be_bytes().to_vec();
                assert!(matches!(run(huge).await, Err(RoundError::TooLarge(_))));
                let negative = (-7i32).to_be_bytes().to_vec();
                assert!(matches!(run(negative).await, Err(RoundError::Decode(_))));
                let short = 100i32.to_be_bytes().to_vec();
                assert!(matches!(run(short).await, Err(RoundError::Timeout(_))));
                let mut other = 5i32.to_be_bytes().to_vec();
                other.extend_from_slice(&9i32.to_be_bytes());
                other.push(0);
                assert!(matches!(
                    run(other).await,
                    Err(RoundError::Correlation { got: 9, .. })
                ));
            })
            .expect("executor")
            .join()
            .expect("test body");
    }
    fn getsockopt_int(fd: std::os::fd::RawFd, level: libc::c_int, name: libc::c_int) -> i32 {
        let mut v: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `v` and `len` outlive the call and `len` is `v`'s size.
        let r = unsafe {
            libc::getsockopt(
                fd,
                level,
                name,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(r, 0, "getsockopt: {}", std::io::Error::last_os_error());
        v
    }

    /// A fetch connection detects a dead peer within seconds: keepalive on, a TCP user
    /// timeout of at most 5 s (and at most the socket timeout), so a connection open when the
    /// network between two brokers failed errors out instead of waiting for TCP's
    /// retransmission backoff after the network is back (tuning/cluster-netfaults.py).
    #[test]
    fn fetch_connections_watch_their_peer() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                use std::os::fd::AsRawFd;
                for (timeout, want_ms) in [
                    (Duration::from_secs(30), 5000),
                    (Duration::from_millis(800), 800),
                ] {
                    let s = connect(peer(Vec::new()), timeout).await.expect("connects");
                    let fd = s.as_raw_fd();
                    assert_eq!(getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE), 1);
                    assert_eq!(
                        getsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT),
                        want_ms
                    );
                    assert!(getsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE) <= 5);
                }
                assert!(CONNECT_TIMEOUT_MAX <= Duration::from_secs(2));
            })
            .expect("executor")
            .join()
            .expect("test body");
    }

    use crate::wire::fetch::{encode_fetch_response, FetchTopicOut, ReadOut};
    use shardlog_engine::StoredBatch;

    /// The leader's hand-written v12 response (tagged diverging epoch and current leader, the
    /// stored batch bytes) decodes in the follower, field for field.
    #[test]
    fn the_leaders_replica_answer_decodes_in_the_follower() {
        let batch = Bytes::from(shardlog_engine::batch::build(0, 3, 10, 1));
        let topics = vec![FetchTopicOut {
            name: "t".into(),
            partitions: vec![
                ReadOut {
                    topic: "t".into(),
                    partition: 0,
                    high_watermark: 2,
                    log_start_offset: 0,
                    bytes: batch.len(),
                    batches: vec![StoredBatch::whole(batch.clone())],
                    ..ReadOut::default()
                },
                ReadOut {
                    topic: "t".into(),
                    partition: 1,
                    high_watermark: 7,
                    diverging_epoch: Some((3, 5)),
                    ..ReadOut::default()
                },
                ReadOut {
                    topic: "t".into(),
                    partition: 2,
                    error: errors::NOT_LEADER_OR_FOLLOWER,
                    current_leader: Some((4, 9)),
                    ..ReadOut::default()
                },
            ],
        }];
        let chunks = encode_fetch_response(FETCH_VERSION, 17, 0, 0, &topics).expect("fits");
        let whole: Vec<u8> = chunks.concat();
        let r = decode(Bytes::from(whole[4..].to_vec()), 17).expect("decodes");
        let ps = &r.responses[0].partitions;
        assert_eq!(ps[0].records.as_deref(), Some(&batch[..]));
        assert_eq!(ps[0].diverging_epoch.epoch, -1, "no diverging epoch sent");
        assert_eq!(
            (
                ps[1].diverging_epoch.epoch,
                ps[1].diverging_epoch.end_offset
            ),
            (3, 5)
        );
        assert_eq!(ps[2].error_code, errors::NOT_LEADER_OR_FOLLOWER);
        assert_eq!(
            (
                ps[2].current_leader.leader_id.0,
                ps[2].current_leader.leader_epoch
            ),
            (4, 9)
        );
        assert!(matches!(
            decode(Bytes::from(whole[4..].to_vec()), 18),
            Err(RoundError::Correlation { .. })
        ));
        assert!(matches!(
            decode(Bytes::from(whole[4..20].to_vec()), 17),
            Err(RoundError::Decode(_))
        ));
    }
}
