//! One client connection: read frames, place requests in order, write responses in order.
//!
//! The reader decodes a frame, runs the handler's placing phase, spawns the answer phase as a
//! task and pushes the task into a bounded queue (`max_inflight_requests`): a full queue stops
//! reading, which is the per-connection back-pressure. The writer takes tasks from the queue
//! in order and writes each finished response, so responses leave in request order however
//! the answers complete (Kafka requires it; clients pipeline freely).
//!
//! Writes are vectored: a response is a list of `Bytes` chunks (for Fetch, the stored batches
//! themselves) sent with `sendmsg(MSG_DONTWAIT)` over an iovec array; when the socket is full
//! the writer waits for writability through glommio and continues. The socket is shared by
//! the reader and writer tasks through `Rc<RefCell<_>>`, borrowed only inside a poll.
//!
//! A malformed, oversized or unknown request closes this connection only, with a log line;
//! in-flight answers are still written first.
//!
//! Request memory: every request byte read is charged to the shard's share of
//! `max_request_memory_bytes` (a length prefix alone costs nothing) and held until the request
//! is answered; when the share is used up, connections stop reading (back-pressure).
//!
//! Answer memory: every answer counts against the connection's `max_response_queue_bytes`
//! from the moment its request is handled until it has been written: a Fetch reserves its
//! response limit up front (see `fetch::response_limit`), every answer holds its real size once
//! encoded. A request whose reservation does not fit waits before it is handled, and the
//! reader stops meanwhile, so a client that pipelines fetches and never reads holds at most
//! that budget (plus the one first batch KIP-74 lets exceed a fetch's limit), not one
//! response per request. A connection that held large answers asks the allocator to give
//! its freed memory back to the system when it closes (`alloc::release_freed_memory`).
//!
//! Timeouts keep a stalled client from holding a connection (and its buffer) forever:
//! once the first byte of a frame has arrived, the whole frame must arrive within
//! `request_read_timeout_ms` (a slowloris client that sends half a frame and stops is cut
//! off); and a connection with nothing in flight that starts no new frame for
//! `connection_idle_timeout_ms` (Kafka's `connections.max.idle.ms`) since its last request
//! or response is closed. Requests still being answered (a long-poll Fetch, a produce
//! waiting for its fsync) do not count as idle. A client that reads none of its answers for
//! `request_read_timeout_ms` while one is waiting to be written is cut off too (it would
//! otherwise hold up to `max_inflight_requests` answers forever).

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::os::unix::io::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::future::{self, Either, FutureExt};
use futures_lite::io::{AsyncRead, AsyncWrite};
use glommio::channels::local_channel::{self, LocalReceiver};
use glommio::net::TcpStream;
use glommio::sync::Semaphore;
use glommio::task::JoinHandle;
use kafka_protocol::messages::RequestKind;

use crate::api;
use crate::mesh::shard::Shard;
use crate::wire::protocol::{self, Parsed};
use shardlog_coordinator::Untrusted;

type Stream = Rc<RefCell<TcpStream>>;

async fn read_some(stream: &Stream, buf: &mut [u8]) -> io::Result<usize> {
    future::poll_fn(|cx| Pin::new(&mut *stream.borrow_mut()).poll_read(cx, buf)).await
}

async fn write_some(stream: &Stream, buf: &[u8]) -> io::Result<usize> {
    future::poll_fn(|cx| Pin::new(&mut *stream.borrow_mut()).poll_write(cx, buf)).await
}

#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error(transparent)]
    Frame(#[from] protocol::FrameError),
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error("read: {0}")]
    Io(#[from] io::Error),
    #[error("frame not complete {0:?} after its first byte (request_read_timeout_ms)")]
    RequestTimeout(Duration),
    #[error("idle for {0:?} (connection_idle_timeout_ms)")]
    Idle(Duration),
}

/// What the reader needs to know about the writer to tell an idle connection from a busy one.
struct Activity {
    /// Requests placed and not yet answered (written or dropped).
    inflight: Cell<usize>,
    /// When the last answer was finished.
    last_answer: Cell<Instant>,
}

#[derive(Clone, Copy)]
struct Timeouts {
    /// No frame started, nothing in flight: close after this.
    idle: Duration,
    /// A started frame must be complete within this.
    request: Duration,
}

/// Request memory held by one frame: the bytes of it that have arrived. Given back when
/// dropped (when the request is answered, or the connection gives up on it).
struct Reservation {
    sem: Rc<Semaphore>,
    units: u64,
}

impl Reservation {
    fn new(sem: &Rc<Semaphore>) -> Self {
        Self {
            sem: sem.clone(),
            units: 0,
        }
    }

    /// Holds `units` more if the shard's share has them now.
    fn try_grow(&mut self, units: u64) -> bool {
        let got = units == 0 || matches!(self.sem.try_acquire(units), Ok(true));
        if got {
            self.units += units;
        }
        got
    }

    /// Holds `units` more, waiting for them (for when `try_grow` found the share used up).
    async fn grow_waiting(&mut self, units: u64) -> io::Result<()> {
        crate::metrics::request_memory_wait();
        self.sem
            .acquire(units)
            .await
            .map_err(|e| io::Error::other(e.to_string()))?;
        self.units += units;
        Ok(())
    }

    /// Gives back `units` of what is held.
    fn shrink(&mut self, units: u64) {
        let units = units.min(self.units);
        self.units -= units;
        self.sem.signal(units);
    }

    /// Gives back whatever is held beyond `units`.
    fn hold(&mut self, units: u64) {
        let extra = self.units.saturating_sub(units);
        if extra > 0 {
            self.shrink(extra);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.sem.signal(self.units);
    }
}

/// Reserves `units` more for the frame being read; a wait for memory in the middle of a frame
/// counts against `request_read_timeout_ms` from the frame's first byte.
async fn charge(
    memory: &mut Reservation,
    units: u64,
    frame_start: Option<Instant>,
    timeouts: Timeouts,
) -> Result<(), ReadError> {
    // The common case takes no timer.
    if memory.try_grow(units) {
        return Ok(());
    }
    match frame_start {
        Some(t0) => {
            let left = frame_time_left(t0, timeouts);
            match glommio::timer::timeout(left, async { Ok(memory.grow_waiting(units).await) })
                .await
            {
                Ok(r) => Ok(r?),
                Err(_) => Err(ReadError::RequestTimeout(timeouts.request)),
            }
        }
        None => Ok(memory.grow_waiting(units).await?),
    }
}

/// What is left of `request_read_timeout_ms` for a frame that started at `t0`.
fn frame_time_left(t0: Instant, timeouts: Timeouts) -> Duration {
    timeouts.request.saturating_sub(t0.elapsed())
}

/// Waits for the socket to bring bytes into `dst`, with the timeout that applies: what is left
/// of `request_read_timeout_ms` once a frame has started; otherwise the idle timeout, counted
/// from the later of `waiting_since` and the last answer, and not at all while answers are in
/// flight. The read stays pending across re-armed timers; it is dropped only on timeout.
async fn read_or_timeout(
    stream: &Stream,
    dst: &mut [u8],
    frame_start: Option<Instant>,
    waiting_since: Instant,
    timeouts: Timeouts,
    activity: &Activity,
) -> Result<io::Result<usize>, ReadError> {
    let read = read_some(stream, dst);
    futures::pin_mut!(read);
    loop {
        let wait = match frame_start {
            Some(t0) => {
                let left = frame_time_left(t0, timeouts);
                if left.is_zero() {
                    return Err(ReadError::RequestTimeout(timeouts.request));
                }
                left
            }
            None if activity.inflight.get() > 0 => timeouts.idle,
            None => {
                let since = waiting_since.max(activity.last_answer.get());
                let left = timeouts.idle.saturating_sub(since.elapsed());
                if left.is_zero() {
                    return Err(ReadError::Idle(timeouts.idle));
                }
                left
            }
        };
        let timer = glommio::timer::sleep(wait);
        futures::pin_mut!(timer);
        if let Either::Left((r, _)) = future::select(read.as_mut(), timer).await {
            return Ok(r);
        }
    }
}

/// Answer bytes of one connection (`max_response_queue_bytes`): reserved by answers being
/// prepared and held by answers waiting to be written. Mirrored in the shard's
/// `shardlog_response_queue_bytes` gauge.
struct AnswerQueue {
    limit: u64,
    used: Cell<u64>,
    /// The writer gave up (the client is gone or reads nothing): no more requests are handled.
    closed: Cell<bool>,
    /// The most this connection ever had reserved or queued.
    peak: Cell<u64>,
    freed: event_listener::Event,
}

/// The part of an [`AnswerQueue`] one answer holds; given back when dropped (once the answer
/// is written, or abandoned).
struct AnswerGrant {
    queue: Rc<AnswerQueue>,
    units: u64,
}

impl AnswerQueue {
    fn new(limit: u64) -> Rc<Self> {
        Rc::new(Self {
            limit,
            used: Cell::new(0),
            closed: Cell::new(false),
            peak: Cell::new(0),
            freed: event_listener::Event::new(),
        })
    }

    /// One answer always fits an empty queue, however large its reservation.
    fn fits(&self, units: u64) -> bool {
        let used = self.used.get();
        used == 0 || used.saturating_add(units) <= self.limit
    }

    /// Reserves `units`, waiting until earlier answers are written if they do not fit now;
    /// `None` once the writer has given up on the connection.
    async fn reserve(self: &Rc<Self>, units: u64) -> Option<AnswerGrant> {
        if !self.fits(units) {
            crate::metrics::response_queue_wait();
            loop {
                let freed = self.freed.listen();
                if self.fits(units) || self.closed.get() {
                    break;
                }
                freed.await;
            }
        }
        if self.closed.get() {
            return None;
        }
        self.add(units);
        Some(AnswerGrant {
            queue: self.clone(),
            units,
        })
    }

    /// The writer stops: requests already read are not handled (their answers could not be
    /// sent; a pipelined fetch would read for nothing).
    fn close(&self) {
        self.closed.set(true);
        self.freed.notify(usize::MAX);
    }

    fn add(&self, units: u64) {
        let used = self.used.get() + units;
        self.used.set(used);
        self.peak.set(self.peak.get().max(used));
        crate::metrics::response_queue_add(units);
    }

    fn sub(&self, units: u64) {
        self.used.set(self.used.get().saturating_sub(units));
        crate::metrics::response_queue_sub(units);
        self.freed.notify(usize::MAX);
    }
}

impl AnswerGrant {
    /// Holds exactly `units` from now on (an answer's real size once it is encoded; it may be
    /// more than was reserved by one oversized first batch).
    fn resize(&mut self, units: u64) {
        if units > self.units {
            self.queue.add(units - self.units);
        } else {
            self.queue.sub(self.units - units);
        }
        self.units = units;
    }
}

impl Drop for AnswerGrant {
    fn drop(&mut self) {
        self.queue.sub(self.units);
    }
}

/// What a request reserves of its connection's answer budget before it is handled: a Fetch
/// its response limit (its answer is mostly record bytes), anything else nothing up front
/// (its answer is small, and counted at its real size once encoded).
fn answer_reservation(body: &RequestKind, cfg: &crate::config::BrokerConfig) -> u64 {
    match body {
        RequestKind::Fetch(req) => {
            crate::wire::fetch::response_limit(req.max_bytes, cfg.fetch_max_bytes) as u64
        }
        _ => 0,
    }
}

/// An answer's frame and the part of the answer budget it holds until written.
type Answer = (Option<Vec<Bytes>>, AnswerGrant);

/// A whole request frame (without its length prefix) and the request memory it holds until
/// it is answered.
struct Frame {
    body: Bytes,
    memory: Reservation,
}

/// `recv(MSG_DONTWAIT)` straight into `buf`'s spare capacity, up to `max` bytes, so the
/// kernel fills the frame buffer without it being zeroed first. `None` when nothing is
/// ready (wait through glommio).
fn recv_into_spare(fd: i32, buf: &mut BytesMut, max: usize) -> Option<io::Result<usize>> {
    buf.reserve(max);
    let spare = buf.spare_capacity_mut();
    let want = spare.len().min(max);
    // SAFETY: the pointer and length describe `buf`'s own spare capacity; recv writes at most
    // `want` bytes there and returns how many it wrote.
    let n = unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), want, libc::MSG_DONTWAIT) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => None,
            _ => Some(Err(e)),
        };
    }
    let n = n as usize;
    // SAFETY: recv initialised exactly `n` bytes after the current length.
    unsafe { buf.set_len(buf.len() + n) };
    Some(Ok(n))
}

/// Reads one frame into `buf`'s front; `Ok(None)` at a clean end of stream.
///
/// Every byte read is first reserved from the shard's request-memory budget, so what a
/// connection holds is what it has sent, not what its length prefix claims (a claim alone
/// costs nothing). When the budget is used up the connection stops reading (back-pressure);
/// that wait counts against `request_read_timeout_ms` like any other stall in the middle of a
/// frame, so connections that hold memory and wait for more cannot wait forever.
async fn read_frame(
    stream: &Stream,
    buf: &mut BytesMut,
    max: usize,
    timeouts: Timeouts,
    activity: &Activity,
    request_memory: &Rc<Semaphore>,
) -> Result<Option<Frame>, ReadError> {
    const CHUNK: usize = 64 << 10;
    /// The most one `recv` into a frame's buffer asks for (and reserves first).
    const READ_CHUNK: usize = 1 << 20;
    /// What is zero-filled for a read that has to wait for the socket first.
    const WAIT_CHUNK: usize = 16 << 10;
    let fd = stream.borrow().as_raw_fd();
    let mut need: Option<usize> = None;
    let mut memory = Reservation::new(request_memory);
    let waiting_since = Instant::now();
    // Bytes left over from the previous read are the start of this frame.
    let mut frame_start = (!buf.is_empty()).then_some(waiting_since);
    loop {
        if need.is_none() && buf.len() >= 4 {
            let len = protocol::check_frame_len([buf[0], buf[1], buf[2], buf[3]], max)?;
            need = Some(4 + len);
            // Room for the whole (validated) frame at once: address space, not memory, until
            // the bytes arrive (they are charged to the reservation as they do).
            buf.reserve((4 + len).saturating_sub(buf.len()));
        }
        // Bytes that have arrived are charged before anything is done with them.
        let arrived = (buf.len() as u64).saturating_sub(memory.units);
        charge(&mut memory, arrived, frame_start, timeouts).await?;
        if let Some(n) = need {
            if buf.len() >= n {
                let mut frame = buf.split_to(n);
                let _ = frame.split_to(4);
                // Bytes already read past this frame belong to the next one.
                memory.shrink(buf.len() as u64);
                return Ok(Some(Frame {
                    body: frame.freeze(),
                    memory,
                }));
            }
        }
        // Read at most what the (validated) frame still needs, in chunks.
        let grow = match need {
            Some(n) => (n - buf.len()).min(READ_CHUNK),
            None => CHUNK,
        };
        // Once the frame's length is known, what this read may bring in is reserved before
        // it (an idle connection between frames holds nothing).
        if need.is_some() {
            charge(&mut memory, grow as u64, frame_start, timeouts).await?;
        }
        let start = buf.len();
        let r = match recv_into_spare(fd, buf, grow) {
            Some(r) => r,
            None => {
                // Nothing ready: wait for the socket through glommio with a small zeroed area,
                // holding only as much memory as that read can bring in.
                let wait_grow = grow.min(WAIT_CHUNK);
                let keep = start + if need.is_some() { wait_grow } else { 0 };
                memory.hold(keep as u64);
                buf.resize(start + wait_grow, 0);
                let read = &mut buf[start..];
                let r =
                    read_or_timeout(stream, read, frame_start, waiting_since, timeouts, activity)
                        .await;
                match r {
                    Ok(r) => {
                        buf.truncate(start + *r.as_ref().unwrap_or(&0));
                        r
                    }
                    Err(e) => {
                        buf.truncate(start);
                        return Err(e);
                    }
                }
            }
        };
        match r {
            Ok(0) => {
                return if start == 0 {
                    Ok(None)
                } else {
                    Err(ReadError::Truncated)
                };
            }
            Ok(_) => {
                frame_start.get_or_insert_with(Instant::now);
                // Hold exactly what arrived.
                memory.hold(buf.len() as u64);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Writes every chunk, vectored, waiting for the socket when it is full — but not longer than
/// `stall` at a time: a client that stops reading its answers is cut off.
async fn write_chunks(stream: &Stream, chunks: &[Bytes], stall: Duration) -> io::Result<()> {
    const MAX_IOV: usize = 64;
    let fd = stream.borrow().as_raw_fd();
    let mut idx = 0usize;
    let mut off = 0usize;
    while idx < chunks.len() {
        if off >= chunks[idx].len() {
            idx += 1;
            off = 0;
            continue;
        }
        let mut iov: Vec<libc::iovec> = Vec::with_capacity(MAX_IOV);
        for (i, c) in chunks[idx..].iter().enumerate().take(MAX_IOV) {
            let s = if i == 0 { &c[off..] } else { &c[..] };
            if !s.is_empty() {
                iov.push(libc::iovec {
                    iov_base: s.as_ptr() as *mut libc::c_void,
                    iov_len: s.len(),
                });
            }
        }
        // SAFETY: a zeroed msghdr is valid; iov points at `iov.len()` iovecs that reference
        // live `Bytes` (kept alive by `chunks`) for the duration of the call.
        let n = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = iov.as_mut_ptr();
            msg.msg_iovlen = iov.len() as _;
            libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
        };
        let mut written = if n >= 0 {
            n as usize
        } else {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => {
                    // Wait for room through glommio, writing part of the current chunk.
                    let part = &chunks[idx][off..];
                    match glommio::timer::timeout(stall, async {
                        Ok(write_some(stream, part).await)
                    })
                    .await
                    {
                        Ok(r) => r?,
                        Err(_) => {
                            return Err(io::Error::new(
                                io::ErrorKind::TimedOut,
                                format!(
                                    "client read nothing for {stall:?} (request_read_timeout_ms)"
                                ),
                            ))
                        }
                    }
                }
                io::ErrorKind::Interrupted => 0,
                _ => return Err(e),
            }
        };
        while written > 0 && idx < chunks.len() {
            let left = chunks[idx].len() - off;
            if written >= left {
                written -= left;
                idx += 1;
                off = 0;
            } else {
                off += written;
                written = 0;
            }
        }
    }
    Ok(())
}

async fn writer(
    stream: Stream,
    rx: LocalReceiver<JoinHandle<Answer>>,
    peer: SocketAddr,
    activity: Rc<Activity>,
    answers: Rc<AnswerQueue>,
    stall: Duration,
) {
    let answered = || {
        activity
            .inflight
            .set(activity.inflight.get().saturating_sub(1));
        activity.last_answer.set(Instant::now());
    };
    while let Some(task) = rx.recv().await {
        let Some((Some(chunks), grant)) = task.await else {
            answered();
            continue;
        };
        let written = write_chunks(&stream, &chunks, stall).await;
        // Written (or given up): its bytes leave the connection's answer budget.
        drop(chunks);
        drop(grant);
        answered();
        if let Err(e) = written {
            if e.kind() == io::ErrorKind::TimedOut {
                tracing::info!(%peer, error = %e, "closing connection: timeout");
            } else {
                tracing::debug!(%peer, error = %e, "write failed; closing connection");
            }
            // The reader stops too: it sees the end of the stream, or the closed queue.
            answers.close();
            let _ = stream
                .borrow()
                .shutdown(std::net::Shutdown::Both)
                .now_or_never();
            break;
        }
    }
    // Drain (and so await) whatever is still queued, without writing.
    while let Some(task) = rx.recv().await {
        let _ = task.await;
    }
}

/// Serves one connection until the client closes it, it misbehaves, or the broker shuts down.
pub async fn serve(shard: Rc<Shard>, stream: TcpStream, peer: SocketAddr) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "TCP_NODELAY");
    }
    let stream: Stream = Rc::new(RefCell::new(stream));
    let (tx, rx) = local_channel::new_bounded(shard.cfg.max_inflight_requests);
    let activity = Rc::new(Activity {
        inflight: Cell::new(0),
        last_answer: Cell::new(Instant::now()),
    });
    let timeouts = Timeouts {
        idle: Duration::from_millis(shard.cfg.connection_idle_timeout_ms),
        request: Duration::from_millis(shard.cfg.request_read_timeout_ms),
    };
    let answers = AnswerQueue::new(shard.cfg.max_response_queue_bytes as u64);
    let writer_task = glommio::spawn_local(writer(
        stream.clone(),
        rx,
        peer,
        activity.clone(),
        answers.clone(),
        timeouts.request,
    ));
    let mut buf = BytesMut::with_capacity(64 << 10);
    let max = shard.cfg.max_frame_bytes;
    loop {
        let stop = shard.shutdown_event.listen();
        if shard.is_shutting_down() {
            break;
        }
        let read = read_frame(
            &stream,
            &mut buf,
            max,
            timeouts,
            &activity,
            &shard.request_memory,
        )
        .boxed_local();
        let frame = match future::select(read, stop).await {
            Either::Left((r, _)) => r,
            Either::Right(_) => {
                tracing::debug!(%peer, "shutdown: connection stops reading");
                break;
            }
        };
        let Frame {
            body: frame,
            memory,
        } = match frame {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e @ (ReadError::Idle(_) | ReadError::RequestTimeout(_))) => {
                tracing::info!(%peer, error = %e, "closing connection: timeout");
                break;
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing connection: bad frame");
                crate::metrics::bad_request();
                break;
            }
        };
        let pending: future::LocalBoxFuture<'static, Answer> = match protocol::parse_request(frame)
        {
            Ok(Parsed::Request {
                header,
                api_key,
                body,
            }) => {
                let arrived = std::time::Instant::now();
                // Room for the answer first: while earlier answers fill the budget, this
                // request waits and nothing more is read.
                let reserve = answers.reserve(answer_reservation(&body, &shard.cfg));
                let stop = shard.shutdown_event.listen();
                let mut grant = match future::select(reserve.boxed_local(), stop).await {
                    Either::Left((Some(g), _)) => g,
                    Either::Left((None, _)) => break,
                    Either::Right(_) => {
                        tracing::debug!(%peer, "shutdown: connection stops reading");
                        break;
                    }
                };
                let answer = api::dispatch(&shard, peer, header, api_key, *body).await;
                async move {
                    let r = answer.await;
                    crate::metrics::request(api_key as i16, arrived.elapsed());
                    drop(memory);
                    let size = r
                        .as_ref()
                        .map_or(0, |c| c.iter().map(Bytes::len).sum::<usize>());
                    grant.resize(size as u64);
                    (r, grant)
                }
                .boxed_local()
            }
            Ok(Parsed::ApiVersionsUnsupported { correlation_id }) => {
                tracing::info!(%peer, correlation_id, "ApiVersions version not supported: answering UNSUPPORTED_VERSION");
                let r = protocol::api_versions_unsupported(correlation_id)
                    .ok()
                    .map(|b| vec![b]);
                let Some(mut grant) = answers.reserve(0).await else {
                    break;
                };
                grant.resize(r.as_ref().map_or(0, |c| c[0].len() as u64));
                future::ready((r, grant)).boxed_local()
            }
            Err(e) => {
                // The decoder's message may quote request bytes.
                tracing::warn!(%peer, error = %Untrusted(&e.to_string()), "closing connection: bad request");
                crate::metrics::bad_request();
                break;
            }
        };
        let task = glommio::spawn_local(pending).detach();
        activity.inflight.set(activity.inflight.get() + 1);
        if tx.send(task).await.is_err() {
            break;
        }
    }
    drop(tx);
    writer_task.await;
    let _ = stream
        .borrow()
        .shutdown(std::net::Shutdown::Both)
        .now_or_never();
    let peak = answers.peak.get();
    if peak >= crate::alloc::RELEASE_AFTER_BYTES {
        // Its answers were large: their buffers are free now; have them returned to the system
        // rather than kept by the allocator (see `alloc`).
        crate::alloc::release_freed_memory();
    }
    tracing::debug!(%peer, peak_answer_bytes = peak, "connection closed");
}
