//! The controller listener and the connections between controllers (shard 0 of each broker).
//!
//! Raft messages: every broker dials every voter but itself and keeps one connection to each
//! (reconnecting with backoff, 100 ms doubling to 2 s); messages to a voter go over that
//! connection, through a bounded per-peer queue ([`MAX_QUEUED_FRAMES`] frames or
//! [`MAX_QUEUED_BYTES`]; beyond it a message is dropped, which raft tolerates, and raft is told
//! the peer is unreachable). A broker that is not a voter (a learner) has no address in the
//! voter list, so messages to it go back over the connection it dialed; its first contact
//! also asks the leader to add it as a learner. Frames are `shardlog_quorum::wire`'s (size
//! bound, CRC, version); a frame whose sender is not the connection's node, or whose node is
//! neither a voter nor a member of the quorum, closes the connection with one log line.
//!
//! Controller RPC (`crate::controller::rpc`): one connection per call, request then answer,
//! bounded in size and time.
//!
//! Every connection between brokers has TCP keepalive and a TCP user timeout
//! ([`watch_peer`]): across a network partition a connection fails within seconds and is
//! dialed again, so the quorum hears a cut-off broker again within about a second of the
//! network coming back (tuning/cluster-netfaults.py).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use futures::future::{self, Either, FutureExt};
use futures_lite::io::{AsyncRead, AsyncWrite};
use glommio::net::{TcpListener, TcpStream};
use shardlog_quorum::{decode_frame, encode_message, Message, Voter, DEFAULT_MAX_FRAME};

use crate::config::BrokerConfig;
use crate::controller::raft_log::QuorumIo;
use crate::controller::rpc::{self, Hello, RpcFrame, RpcKind, HELLO_LEN};
use crate::mesh::shard::Shard;

/// Frames queued for one peer at most.
pub const MAX_QUEUED_FRAMES: usize = 1024;
/// Bytes queued for one peer at most (one maximal snapshot frame fits).
pub const MAX_QUEUED_BYTES: usize = DEFAULT_MAX_FRAME + (1 << 20);
/// Inbound controller connections at once.
pub const MAX_INBOUND: usize = 256;
/// How long a new connection may take to send its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long bytes sent to another broker may stay unacknowledged by its kernel before the
/// connection is closed (TCP_USER_TIMEOUT). Without it a connection that was open when the
/// network between two brokers failed stays "established": the kernel retransmits with an
/// exponentially growing interval, so after a partition of 15 s the first retransmission
/// after the heal can come more than 10 s later, and a broker cut off from the quorum kept
/// believing it led for that long after the network was back.
pub(crate) const PEER_USER_TIMEOUT: Duration = Duration::from_secs(5);
/// TCP keepalive on connections between brokers: the first probe after this idle time, then
/// one every [`KEEPALIVE_INTERVAL_S`]; the connection closes after [`PEER_USER_TIMEOUT`] with
/// no answer. A connection that only reads (the accepting side of a raft connection) sees
/// its peer vanish this way instead of holding a task and an inbound slot forever.
const KEEPALIVE_IDLE_S: libc::c_int = 2;
const KEEPALIVE_INTERVAL_S: libc::c_int = 1;
const KEEPALIVE_PROBES: libc::c_int = 3;

/// The voters configured for this broker (empty: it is its own sole voter). The string was
/// checked when the configuration was loaded.
pub fn voters(cfg: &BrokerConfig) -> Vec<Voter> {
    cfg.voters
        .as_deref()
        .and_then(|v| shardlog_quorum::parse_voters(v).ok())
        .unwrap_or_default()
}

/// A voter's controller address.
pub fn voter_addr(cfg: &BrokerConfig, id: u64) -> Option<String> {
    voters(cfg).into_iter().find(|v| v.id == id).map(|v| {
        if v.host.contains(':') {
            format!("[{}]:{}", v.host, v.port)
        } else {
            format!("{}:{}", v.host, v.port)
        }
    })
}

/// One peer's outbound queue.
struct Link {
    queue: RefCell<VecDeque<Vec<u8>>>,
    bytes: Cell<usize>,
    ready: event_listener::Event,
    /// Set when a newer connection from the same (learner) peer replaced this one.
    closed: Cell<bool>,
}

impl Link {
    fn new() -> Rc<Self> {
        Rc::new(Link {
            queue: RefCell::new(VecDeque::new()),
            bytes: Cell::new(0),
            ready: event_listener::Event::new(),
            closed: Cell::new(false),
        })
    }

    fn push(&self, frame: Vec<u8>) -> bool {
        let mut q = self.queue.borrow_mut();
        if q.len() >= MAX_QUEUED_FRAMES || self.bytes.get() + frame.len() > MAX_QUEUED_BYTES {
            return false;
        }
        self.bytes.set(self.bytes.get() + frame.len());
        q.push_back(frame);
        drop(q);
        self.ready.notify(usize::MAX);
        true
    }

    fn pop(&self) -> Option<Vec<u8>> {
        let f = self.queue.borrow_mut().pop_front()?;
        self.bytes.set(self.bytes.get() - f.len());
        Some(f)
    }

    async fn next(&self) -> Option<Vec<u8>> {
        loop {
            let l = self.ready.listen();
            if self.closed.get() {
                return None;
            }
            if let Some(f) = self.pop() {
                return Some(f);
            }
            l.await;
        }
    }
}

/// The links of this node: to each voter, and to learners that dialed in.
struct Net {
    me: u64,
    voters: Vec<u64>,
    links: RefCell<HashMap<u64, Rc<Link>>>,
    inbound: Cell<usize>,
    dropped: Cell<u64>,
}

impl Net {
    fn send(&self, msg: Message) -> bool {
        let to = msg.to;
        let Some(link) = self.links.borrow().get(&to).cloned() else {
            return false;
        };
        let frame = match encode_message(&msg, DEFAULT_MAX_FRAME) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(to, error = %e, "raft message not sent");
                return false;
            }
        };
        let queued = link.push(frame);
        if !queued {
            let n = self.dropped.get() + 1;
            self.dropped.set(n);
            if n.is_power_of_two() {
                tracing::warn!(
                    to,
                    dropped = n,
                    "controller peer queue full: dropping raft messages"
                );
            }
        }
        queued
    }
}

/// Shared socket: read and written by two tasks, borrowed only inside a poll.
type Sock = Rc<RefCell<TcpStream>>;

async fn read_exact(s: &Sock, buf: &mut [u8]) -> std::io::Result<()> {
    let mut at = 0;
    while at < buf.len() {
        let n = future::poll_fn(|cx| Pin::new(&mut *s.borrow_mut()).poll_read(cx, &mut buf[at..]))
            .await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        at += n;
    }
    Ok(())
}

async fn write_all(s: &Sock, buf: &[u8]) -> std::io::Result<()> {
    let mut at = 0;
    while at < buf.len() {
        let n =
            future::poll_fn(|cx| Pin::new(&mut *s.borrow_mut()).poll_write(cx, &buf[at..])).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        at += n;
    }
    future::poll_fn(|cx| Pin::new(&mut *s.borrow_mut()).poll_flush(cx)).await
}

/// Reads one length-prefixed frame whose length `len_of` checks from the first four bytes.
async fn read_frame<E: std::fmt::Display>(
    s: &Sock,
    len_of: impl Fn(&[u8]) -> Result<Option<usize>, E>,
) -> Result<Vec<u8>, String> {
    let mut prefix = [0u8; 4];
    read_exact(s, &mut prefix)
        .await
        .map_err(|e| e.to_string())?;
    let len = match len_of(&prefix) {
        Ok(Some(n)) => n,
        Ok(None) => return Err("short prefix".into()),
        Err(e) => return Err(e.to_string()),
    };
    let mut buf = vec![0u8; len];
    buf[..4].copy_from_slice(&prefix);
    read_exact(s, &mut buf[4..])
        .await
        .map_err(|e| e.to_string())?;
    Ok(buf)
}

async fn with_timeout<T>(d: Duration, f: impl std::future::Future<Output = T>) -> Option<T> {
    match future::select(f.boxed_local(), glommio::timer::sleep(d).boxed_local()).await {
        Either::Left((v, _)) => Some(v),
        Either::Right(_) => None,
    }
}

fn setsockopt_int(
    fd: std::os::fd::RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> std::io::Result<()> {
    // SAFETY: `value` lives across the call and its size is passed; an invalid fd or option
    // is reported as an error, not undefined behaviour.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Dead-peer detection on a connection to another broker: keepalive probes and a limit on
/// how long sent data may stay unacknowledged ([`PEER_USER_TIMEOUT`], at most `limit`), so a
/// connection across a failed network errors out within seconds and is made again, instead
/// of waiting for TCP's retransmission backoff after the network is back.
pub(crate) fn watch_peer(stream: &TcpStream, limit: Duration) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = stream.as_raw_fd();
    let user_ms = PEER_USER_TIMEOUT.min(limit).as_millis().max(1);
    let user_ms = libc::c_int::try_from(user_ms).unwrap_or(libc::c_int::MAX);
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
    setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, KEEPALIVE_IDLE_S)?;
    setsockopt_int(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_KEEPINTVL,
        KEEPALIVE_INTERVAL_S,
    )?;
    setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, KEEPALIVE_PROBES)?;
    setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, user_ms)
}

fn watch(stream: &TcpStream, what: &str) {
    if let Err(e) = watch_peer(stream, PEER_USER_TIMEOUT) {
        tracing::debug!(error = %e, what, "cannot set keepalive/user timeout on a connection");
    }
}

fn resolve(addr: &str) -> Option<SocketAddr> {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs().ok()?.next()
}

/// Starts the transport on shard 0: the listener (when `controller_listen` is set), a dialer
/// per other voter, and the outbox raft sends through.
pub fn start(shard: &Rc<Shard>, io: &Rc<QuorumIo>, cfg: &BrokerConfig) -> Result<(), String> {
    let voters = voters(cfg);
    let me = node_id(cfg);
    let net = Rc::new(Net {
        me,
        voters: voters.iter().map(|v| v.id).collect(),
        links: RefCell::new(HashMap::new()),
        inbound: Cell::new(0),
        dropped: Cell::new(0),
    });
    {
        let net = net.clone();
        io.set_outbox(Box::new(move |m| net.send(m)));
    }
    for v in voters.iter().filter(|v| v.id != me) {
        let link = Link::new();
        net.links.borrow_mut().insert(v.id, link.clone());
        let addr = voter_addr(cfg, v.id).unwrap_or_default();
        glommio::spawn_local(dial(
            shard.clone(),
            io.clone(),
            net.clone(),
            v.id,
            addr,
            link,
        ))
        .detach();
    }
    if let Some(listen) = &cfg.controller_listen {
        let addr = resolve(listen).ok_or_else(|| format!("cannot resolve {listen}"))?;
        let listener =
            TcpListener::bind(addr).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        tracing::info!(controller_listen = %listen, node = me, voters = ?net.voters, "controller listener up");
        glommio::spawn_local(accept(shard.clone(), io.clone(), net, listener)).detach();
    }
    Ok(())
}

async fn accept(shard: Rc<Shard>, io: Rc<QuorumIo>, net: Rc<Net>, listener: TcpListener) {
    // Accepts until the broker drained, not just until shutdown began: a controlled
    // shutdown still talks to the quorum.
    // The pending accept is kept across the checks (never dropped half way).
    let mut pending = listener.accept().boxed_local();
    loop {
        if shard
            .global
            .drained
            .load(std::sync::atomic::Ordering::SeqCst)
            >= shard.shards
        {
            break;
        }
        let tick = glommio::timer::sleep(Duration::from_millis(200));
        let accepted = match future::select(&mut pending, tick.boxed_local()).await {
            Either::Left((r, _)) => {
                pending = listener.accept().boxed_local();
                r
            }
            Either::Right(_) => continue,
        };
        let stream = match accepted {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "controller listener: accept failed");
                glommio::timer::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let peer = stream.peer_addr().ok();
        if net.inbound.get() >= MAX_INBOUND {
            tracing::warn!(
                ?peer,
                limit = MAX_INBOUND,
                "controller listener: too many connections; closing a new one"
            );
            continue;
        }
        net.inbound.set(net.inbound.get() + 1);
        let (shard, io, net) = (shard.clone(), io.clone(), net.clone());
        glommio::spawn_local(async move {
            serve_inbound(&shard, &io, &net, stream, peer).await;
            net.inbound.set(net.inbound.get() - 1);
        })
        .detach();
    }
}

async fn serve_inbound(
    shard: &Rc<Shard>,
    io: &Rc<QuorumIo>,
    net: &Rc<Net>,
    stream: TcpStream,
    peer: Option<SocketAddr>,
) {
    let _ = stream.set_nodelay(true);
    watch(&stream, "inbound controller connection");
    let sock: Sock = Rc::new(RefCell::new(stream));
    let mut hello = [0u8; HELLO_LEN];
    match with_timeout(HELLO_TIMEOUT, read_exact(&sock, &mut hello)).await {
        Some(Ok(())) => {}
        Some(Err(e)) => {
            tracing::debug!(?peer, error = %e, "controller connection closed before its hello");
            return;
        }
        None => {
            tracing::warn!(
                ?peer,
                "controller connection sent no hello in time; closing it"
            );
            return;
        }
    }
    let hello = match rpc::decode_hello(&hello) {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(?peer, error = %e, "controller listener: refused a connection");
            return;
        }
    };
    match hello.purpose {
        rpc::PURPOSE_RAFT => raft_inbound(io, net, sock, hello, peer).await,
        _ => rpc_inbound(shard, sock, hello, peer).await,
    }
}

/// Reads raft frames from `sock` into the inbox until it fails; `from` is the connection's
/// node. Returns why it stopped.
async fn read_raft(io: &QuorumIo, net: &Net, sock: &Sock, from: u64) -> String {
    loop {
        let frame =
            match read_frame(sock, |b| shardlog_quorum::frame_len(b, DEFAULT_MAX_FRAME)).await {
                Ok(f) => f,
                Err(e) => return e,
            };
        let msg = match decode_frame(&frame, DEFAULT_MAX_FRAME) {
            Ok(Some((m, _))) => m,
            Ok(None) => return "incomplete frame".into(),
            Err(e) => return format!("refused frame: {e}"),
        };
        if msg.from != from || msg.to != net.me {
            return format!(
                "frame from node {} to node {} on node {from}'s connection to node {}",
                msg.from, msg.to, net.me
            );
        }
        if !net.voters.contains(&from) && !io.is_member(from) {
            return format!("frame from node {from}, which is neither a voter nor a member");
        }
        io.deliver(msg);
    }
}

async fn raft_inbound(
    io: &Rc<QuorumIo>,
    net: &Rc<Net>,
    sock: Sock,
    hello: Hello,
    peer: Option<SocketAddr>,
) {
    let from = hello.node;
    if from == net.me {
        tracing::warn!(
            ?peer,
            node = from,
            "controller listener: a connection claims this node's own id; closing it"
        );
        return;
    }
    // A learner's messages go back over the connection it dialed.
    let writer = if net.voters.contains(&from) {
        None
    } else {
        let link = Link::new();
        if let Some(old) = net.links.borrow_mut().insert(from, link.clone()) {
            old.closed.set(true);
            old.ready.notify(usize::MAX);
        }
        io.joined(from);
        let sock = sock.clone();
        let l = link.clone();
        Some((
            link,
            glommio::spawn_local(async move {
                while let Some(f) = l.next().await {
                    if write_all(&sock, &f).await.is_err() {
                        break;
                    }
                }
            }),
        ))
    };
    tracing::debug!(?peer, node = from, "controller peer connected");
    let why = read_raft(io, net, &sock, from).await;
    tracing::info!(?peer, node = from, reason = %why, "controller peer connection closed");
    if let Some((link, task)) = writer {
        link.closed.set(true);
        link.ready.notify(usize::MAX);
        {
            let mut links = net.links.borrow_mut();
            if links.get(&from).is_some_and(|l| Rc::ptr_eq(l, &link)) {
                links.remove(&from);
            }
        }
        task.cancel().await;
    }
}

/// Keeps a connection to voter `id` at `addr`: writes its queue, reads what it sends back.
async fn dial(
    shard: Rc<Shard>,
    io: Rc<QuorumIo>,
    net: Rc<Net>,
    id: u64,
    addr: String,
    link: Rc<Link>,
) {
    let mut backoff = BACKOFF_FIRST;
    let mut logged = false;
    while !shard.is_shutting_down() {
        let Some(sa) = resolve(&addr) else {
            if !logged {
                tracing::warn!(node = id, %addr, "cannot resolve a voter's controller address; retrying");
                logged = true;
            }
            glommio::timer::sleep(BACKOFF_MAX).await;
            continue;
        };
        let stream = match TcpStream::connect_timeout(sa, Duration::from_secs(1)).await {
            Ok(s) => s,
            Err(e) => {
                note_refused(&io, id, &e);
                if !logged {
                    tracing::info!(node = id, %addr, error = %e, "cannot reach a controller voter; retrying with backoff");
                    logged = true;
                }
                glommio::timer::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        watch(&stream, "raft connection");
        let sock: Sock = Rc::new(RefCell::new(stream));
        let hello = rpc::encode_hello(Hello {
            purpose: rpc::PURPOSE_RAFT,
            node: net.me,
        });
        if write_all(&sock, &hello).await.is_err() {
            glommio::timer::sleep(backoff).await;
            continue;
        }
        tracing::info!(node = id, %addr, "connected to controller voter");
        if let Ok(id) = i32::try_from(id) {
            io.sessions.refused.borrow_mut().remove(&id);
        }
        backoff = BACKOFF_FIRST;
        logged = false;
        let writer = async {
            while let Some(f) = link.next().await {
                if let Err(e) = write_all(&sock, &f).await {
                    return e.to_string();
                }
            }
            "closed".to_string()
        };
        let reader = read_raft(&io, &net, &sock, id);
        let why = match future::select(writer.boxed_local(), reader.boxed_local()).await {
            Either::Left((w, _)) => w,
            Either::Right((r, _)) => r,
        };
        tracing::info!(node = id, %addr, reason = %why, "connection to controller voter lost; reconnecting");
        glommio::timer::sleep(BACKOFF_FIRST).await;
    }
}

/// A refused connection to voter `id`'s controller port: nothing listens there, its process
/// is gone. Remembered (first refusal since the last connection) for the session expiry.
fn note_refused<T>(io: &QuorumIo, id: u64, e: &glommio::GlommioError<T>) {
    let refused = matches!(e, glommio::GlommioError::IoError(io_err)
        if io_err.kind() == std::io::ErrorKind::ConnectionRefused);
    if let (true, Ok(id)) = (refused, i32::try_from(id)) {
        io.sessions
            .refused
            .borrow_mut()
            .entry(id)
            .or_insert_with(crate::clock::mono_ms);
    }
}

async fn rpc_inbound(shard: &Rc<Shard>, sock: Sock, hello: Hello, peer: Option<SocketAddr>) {
    loop {
        let frame = match read_frame(&sock, rpc::frame_len).await {
            Ok(f) => f,
            Err(_) => return,
        };
        let req = match rpc::decode_frame(&frame) {
            Ok(Some((f, _))) if !f.answer => f,
            Ok(_) => {
                tracing::warn!(
                    ?peer,
                    node = hello.node,
                    "controller RPC: an answer where a request belongs; closing"
                );
                return;
            }
            Err(e) => {
                tracing::warn!(?peer, node = hello.node, error = %e, "controller RPC: refused a frame; closing");
                return;
            }
        };
        let answer = match shard.handle_rpc(hello.node, &req).await {
            Ok(body) => body,
            Err(e) => {
                tracing::warn!(?peer, node = hello.node, kind = ?req.kind, error = %e, "controller RPC: refused a request; closing");
                return;
            }
        };
        let out = match rpc::encode_frame(req.kind, true, req.id, &answer) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "controller RPC answer too large");
                return;
            }
        };
        if write_all(&sock, &out).await.is_err() {
            return;
        }
    }
}

/// Why an RPC call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("cannot resolve {0}")]
    Resolve(String),
    #[error("connect to {addr}: {error}")]
    Connect { addr: String, error: String },
    #[error("controller RPC to {0} timed out")]
    Timeout(String),
    #[error("controller RPC to {addr}: {error}")]
    Io { addr: String, error: String },
    #[error(transparent)]
    Frame(#[from] rpc::RpcError),
}

/// Sends one request to the controller at `addr` and waits for its answer (one connection).
pub async fn call(
    me: u64,
    addr: &str,
    kind: RpcKind,
    body: &[u8],
    timeout: Duration,
) -> Result<RpcFrame, CallError> {
    let sa = resolve(addr).ok_or_else(|| CallError::Resolve(addr.to_string()))?;
    let io_err = |e: String| CallError::Io {
        addr: addr.to_string(),
        error: e,
    };
    let run = async {
        let stream =
            TcpStream::connect_timeout(sa, timeout)
                .await
                .map_err(|e| CallError::Connect {
                    addr: addr.to_string(),
                    error: e.to_string(),
                })?;
        let _ = stream.set_nodelay(true);
        watch(&stream, "controller RPC connection");
        let sock: Sock = Rc::new(RefCell::new(stream));
        let mut out = rpc::encode_hello(Hello {
            purpose: rpc::PURPOSE_RPC,
            node: me,
        })
        .to_vec();
        out.extend(rpc::encode_frame(kind, false, 1, body)?);
        write_all(&sock, &out)
            .await
            .map_err(|e| io_err(e.to_string()))?;
        let frame = read_frame(&sock, rpc::frame_len).await.map_err(io_err)?;
        match rpc::decode_frame(&frame)? {
            Some((f, _)) if f.answer && f.kind == kind && f.id == 1 => Ok(f),
            _ => Err(io_err("answer does not match the request".into())),
        }
    };
    with_timeout(timeout, run)
        .await
        .unwrap_or_else(|| Err(CallError::Timeout(addr.to_string())))
}

/// This broker's node id in the quorum (raft ids start at 1).
pub fn node_id(cfg: &crate::config::BrokerConfig) -> u64 {
    u64::try_from(cfg.node_id).unwrap_or(0).max(1)
}
