//! The admin HTTP listener (`admin_listen`, default 127.0.0.1:9644) on shard 0.
//!
//! * `GET /metrics`: Prometheus text format; every shard is asked over the mesh for a
//!   snapshot of its counters (see `crate::metrics`), so nothing on the data path takes a lock.
//! * `GET /health`: `200` while the broker serves and every shard answers within a second,
//!   `503` once shutdown has begun or when a shard does not answer (for load balancers).
//!
//! A deliberately small HTTP/1.x server: one request per connection (`Connection: close`),
//! request heads up to 8 KiB, 5 s to send the head and 10 s to take the response. Anything
//! else is answered with a 4xx and the connection closed.
//!
//! The listener is unauthenticated and a liveness probe restarts the broker when /health stops
//! answering, so connections that send nothing (or a byte now and then) must not keep a probe
//! out. At most [`MAX_CONNECTIONS`] are open at once; when one more arrives, the **oldest**
//! open connection is closed to make room instead of refusing the newcomer. A real probe sends
//! its request at once and is answered within milliseconds, so it is never the oldest; a flood
//! of idle or slow-drip connections only evicts itself. (Refusing the newcomer, as before,
//! let 40 idle connections reopened as they timed out fail every probe.) Each connection costs
//! a task and at most an 8 KiB head buffer, so the limit bounds memory at about 2 MiB.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::future::{self, Either, FutureExt};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use crate::mesh::messages::{ShardReq, ShardResp};
use crate::mesh::shard::Shard;
use crate::metrics::{self, Extra, ShardSnapshot};

const MAX_HEAD: usize = 8 << 10;
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Admin connections open at once; past it the oldest is closed to admit a new one.
pub const MAX_CONNECTIONS: usize = 256;
const SHARD_TIMEOUT: Duration = Duration::from_secs(1);

/// Binds the admin listener and serves it on the current shard (call on shard 0) until the
/// broker has drained. A bind failure is logged and leaves the broker running without it.
pub fn spawn(shard: Rc<Shard>, addr: SocketAddr, started: Instant) {
    // Bound at once when the address is free (the common case), so /metrics answers as soon
    // as the broker is ready; otherwise in the task, after waiting for the other listener.
    let bound_now = if listening(addr) {
        None
    } else {
        let Some(l) = bind(addr) else { return };
        Some(l)
    };
    glommio::spawn_local(async move {
        let listener = match bound_now {
            Some(l) => l,
            None => match wait_until_free(addr).await.then(|| bind(addr)).flatten() {
                Some(l) => l,
                None => return,
            },
        };
        tracing::info!(%addr, "admin HTTP listener: /metrics, /health");
        let open = Rc::new(Open::default());
        loop {
            let drained = shard
                .global
                .drained
                .load(std::sync::atomic::Ordering::SeqCst);
            if drained >= shard.shards {
                break;
            }
            let tick = glommio::timer::sleep(Duration::from_millis(200));
            let accepted =
                match future::select(listener.accept().boxed_local(), tick.boxed_local()).await {
                    Either::Left((r, _)) => r,
                    Either::Right(_) => continue,
                };
            let stream = match accepted {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "admin accept failed");
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            open.make_room();
            let id = open.next_id.get();
            open.next_id.set(id + 1);
            let (s, o) = (shard.clone(), open.clone());
            let task = glommio::spawn_local(async move {
                let _slot = Slot { open: o, id };
                serve(&s, stream, started).await;
            })
            .detach();
            open.tasks.borrow_mut().insert(id, task);
        }
        tracing::debug!("admin HTTP listener closed");
    })
    .detach();
}

/// The open admin connections, oldest first (ids are handed out in accept order).
#[derive(Default)]
struct Open {
    next_id: Cell<u64>,
    tasks: RefCell<BTreeMap<u64, glommio::task::JoinHandle<()>>>,
}

thread_local! {
    /// Connections closed to make room (shard 0 only; exported as a counter).
    static EVICTED: Cell<u64> = const { Cell::new(0) };
}

/// Admin connections closed so far to admit newer ones (on the admin listener's shard).
pub fn evicted_connections() -> u64 {
    EVICTED.with(Cell::get)
}

impl Open {
    /// At the limit, cancels the oldest connection's task (which closes its socket).
    fn make_room(&self) {
        loop {
            // The borrow ends before `cancel`, which may drop the task's future (and its
            // `Slot`, which borrows `tasks` again).
            let oldest = {
                let mut tasks = self.tasks.borrow_mut();
                if tasks.len() < MAX_CONNECTIONS {
                    return;
                }
                tasks.pop_first()
            };
            if let Some((_, task)) = oldest {
                task.cancel();
                EVICTED.with(|e| e.set(e.get() + 1));
                tracing::debug!(
                    open = MAX_CONNECTIONS,
                    "admin HTTP: connection limit reached; closed the oldest connection"
                );
            }
        }
    }
}

/// Removes its connection from [`Open`] when the connection's task ends or is cancelled.
struct Slot {
    open: Rc<Open>,
    id: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut tasks) = self.open.tasks.try_borrow_mut() {
            tasks.remove(&self.id);
        }
    }
}

/// The address a listener bound to `addr` answers on (loopback for an unspecified address).
fn probe_addr(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    }
}

/// Whether something listens on `addr` now (a blocking connect of at most 300 ms). glommio
/// binds with SO_REUSEPORT, so a second broker on this host with the same address would
/// otherwise silently share the port: the broker checks its Kafka listener and this admin
/// listener with it before binding.
pub(crate) fn listening(addr: SocketAddr) -> bool {
    addr.port() != 0
        && std::net::TcpStream::connect_timeout(&probe_addr(addr), Duration::from_millis(300))
            .is_ok()
}

/// Waits up to 3 s, without blocking the shard, for the listener on `addr` to go away (a
/// previous incarnation's socket may linger for a moment after a kill -9); false if it stays.
async fn wait_until_free(addr: SocketAddr) -> bool {
    for _ in 0..15 {
        glommio::timer::sleep(Duration::from_millis(200)).await;
        if TcpStream::connect_timeout(probe_addr(addr), Duration::from_millis(300))
            .await
            .is_err()
        {
            return true;
        }
    }
    tracing::error!(%addr, "cannot bind the admin HTTP listener (admin_listen): another process listens there; /metrics and /health are unavailable");
    false
}

/// Binds the admin listener; a failure is logged.
fn bind(addr: SocketAddr) -> Option<TcpListener> {
    TcpListener::bind(addr)
        .map_err(|e| tracing::error!(%addr, error = %e, "cannot bind the admin HTTP listener (admin_listen); /metrics and /health are unavailable"))
        .ok()
}

/// What a request asks for, from its head.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Metrics,
    Health,
    Index,
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

/// Parses the request line of `head` (bytes up to the blank line).
pub fn route(head: &[u8]) -> (Route, bool) {
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let Ok(line) = std::str::from_utf8(&head[..line_end]) else {
        return (Route::BadRequest, false);
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return (Route::BadRequest, false);
    };
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return (Route::BadRequest, false);
    }
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return (Route::MethodNotAllowed, false);
    }
    let path = target.split('?').next().unwrap_or("");
    let r = match path {
        "/metrics" => Route::Metrics,
        "/health" | "/healthz" | "/ready" => Route::Health,
        "/" => Route::Index,
        _ => Route::NotFound,
    };
    (r, head_only)
}

/// Reads until the end of the request head; `None` when it is too big, cut short or slow.
async fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; MAX_HEAD];
    let mut len = 0usize;
    let mut scanned = 0usize;
    let deadline = Instant::now() + HEAD_TIMEOUT;
    loop {
        // Only the new bytes (and the 3 before them) are searched: a client sending one byte
        // at a time costs O(n), not O(n²).
        let from = scanned.saturating_sub(3);
        scanned = len;
        if buf[from..len].windows(4).any(|w| w == b"\r\n\r\n")
            || buf[from..len].windows(2).any(|w| w == b"\n\n")
        {
            buf.truncate(len);
            return Some(buf);
        }
        if len == buf.len() {
            return None;
        }
        let left = deadline.checked_duration_since(Instant::now())?;
        let read = stream.read(&mut buf[len..]).boxed_local();
        match future::select(read, glommio::timer::sleep(left).boxed_local()).await {
            Either::Left((Ok(0), _)) | Either::Left((Err(_), _)) | Either::Right(_) => return None,
            Either::Left((Ok(n), _)) => len += n,
        }
    }
}

async fn serve(shard: &Rc<Shard>, mut stream: TcpStream, started: Instant) {
    let (status, ctype, body, head_only) = match read_head(&mut stream).await {
        None => (
            "431 Request Header Fields Too Large",
            "text/plain",
            "request head too large, incomplete or too slow\n".to_string(),
            false,
        ),
        Some(head) => {
            let (r, head_only) = route(&head);
            let (status, ctype, body) = match r {
                Route::Metrics => {
                    let (snaps, _) = gather(shard).await;
                    let mut extra = extra(shard, started);
                    extra.groups = group_lags(shard).await;
                    (
                        "200 OK",
                        "text/plain; version=0.0.4; charset=utf-8",
                        metrics::render(&snaps, &extra),
                    )
                }
                Route::Health => {
                    let (snaps, all) = gather(shard).await;
                    let down = shard.is_shutting_down();
                    let status = if down {
                        "shutting_down"
                    } else if !all {
                        "shard_unresponsive"
                    } else {
                        "ok"
                    };
                    let body = serde_json::json!({
                        "status": status,
                        "node_id": shard.cfg.node_id,
                        "shards": shard.shards,
                        "shards_answering": snaps.len(),
                        "uptime_s": started.elapsed().as_secs(),
                    })
                    .to_string()
                        + "\n";
                    let code = if status == "ok" {
                        "200 OK"
                    } else {
                        "503 Service Unavailable"
                    };
                    (code, "application/json", body)
                }
                Route::Index => (
                    "200 OK",
                    "text/plain",
                    "shardlog admin: /metrics (Prometheus), /health\n".to_string(),
                ),
                Route::NotFound => ("404 Not Found", "text/plain", "not found\n".to_string()),
                Route::MethodNotAllowed => (
                    "405 Method Not Allowed",
                    "text/plain",
                    "only GET and HEAD\n".to_string(),
                ),
                Route::BadRequest => ("400 Bad Request", "text/plain", "bad request\n".to_string()),
            };
            (status, ctype, body, head_only)
        }
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    let write = async {
        stream.write_all(&out).await?;
        stream.flush().await
    }
    .boxed_local();
    match future::select(write, glommio::timer::sleep(WRITE_TIMEOUT).boxed_local()).await {
        Either::Left((Err(e), _)) => tracing::debug!(error = %e, "admin HTTP write failed"),
        Either::Right(_) => tracing::debug!("admin HTTP write timed out"),
        Either::Left((Ok(()), _)) => {}
    }
    let _ = stream.close().await;
}

fn extra(shard: &Rc<Shard>, started: Instant) -> Extra {
    let meta = shard.meta.borrow();
    let health = crate::api::cluster::view(shard, &meta).health(|topic, p| {
        shard.global.offline.count() > 0 && shard.global.offline.of_topic(topic).contains(&p)
    });
    Extra {
        node_id: shard.cfg.node_id,
        shards: shard.shards,
        uptime: started.elapsed(),
        shutting_down: shard.is_shutting_down(),
        groups: Vec::new(),
        admin_connections_evicted: evicted_connections(),
        partitions_under_replicated: health.under_replicated_led as u64,
        partitions_offline: health.offline as u64,
        brokers_live: health.live_brokers as u64,
        controller_leader: shard.global.controller.get().unwrap_or(-1),
    }
}

/// Committed offset and lag of every group partition (empty when a shard does not answer
/// in time; the rest of the scrape is still served).
async fn group_lags(shard: &Rc<Shard>) -> Vec<metrics::GroupLag> {
    let lags = crate::groups::lag::all_group_lags(shard).boxed_local();
    match future::select(lags, glommio::timer::sleep(SHARD_TIMEOUT).boxed_local()).await {
        Either::Left((Ok(groups), _)) => groups
            .into_iter()
            .flat_map(|(group, parts)| {
                parts.into_iter().filter_map(move |p| {
                    Some(metrics::GroupLag {
                        group: group.clone(),
                        topic: p.topic,
                        partition: p.partition,
                        committed: p.committed_offset,
                        lag: p.lag?,
                    })
                })
            })
            .collect(),
        Either::Left((Err(e), _)) => {
            tracing::debug!(error = ?e, "group lag unavailable for this scrape");
            Vec::new()
        }
        Either::Right(_) => Vec::new(),
    }
}

/// Snapshots of every shard that answers within [`SHARD_TIMEOUT`]; `true` when all did.
async fn gather(shard: &Rc<Shard>) -> (Vec<ShardSnapshot>, bool) {
    let mut waits = Vec::with_capacity(shard.shards);
    for i in 0..shard.shards {
        waits.push(shard.send(i, ShardReq::Metrics).await);
    }
    let all = future::join_all(waits);
    let snaps: Vec<ShardSnapshot> = match future::select(
        all.boxed_local(),
        glommio::timer::sleep(SHARD_TIMEOUT).boxed_local(),
    )
    .await
    {
        Either::Left((rs, _)) => rs
            .into_iter()
            .filter_map(|r| match r {
                ShardResp::Metrics(s) => Some(*s),
                _ => None,
            })
            .collect(),
        Either::Right(_) => Vec::new(),
    };
    let complete = snaps.len() == shard.shards;
    (snaps, complete)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            (Route::Metrics, false)
        );
        assert_eq!(
            route(b"HEAD /health HTTP/1.0\r\n\r\n"),
            (Route::Health, true)
        );
        assert_eq!(
            route(b"GET /metrics?x=1 HTTP/1.1\r\n\r\n"),
            (Route::Metrics, false)
        );
        assert_eq!(route(b"GET /nope HTTP/1.1\r\n\r\n").0, Route::NotFound);
        assert_eq!(
            route(b"POST /metrics HTTP/1.1\r\n\r\n").0,
            Route::MethodNotAllowed
        );
        assert_eq!(route(b"GET /metrics\r\n\r\n").0, Route::BadRequest);
        assert_eq!(route(b"GET /metrics SPDY/3\r\n\r\n").0, Route::BadRequest);
        assert_eq!(route(b"\xff\xfe /x HTTP/1.1\r\n\r\n").0, Route::BadRequest);
        assert_eq!(route(b"").0, Route::BadRequest);
    }
}
