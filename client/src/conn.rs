//! One TCP connection to one broker: pipelined requests, responses matched by correlation id.
//!
//! A writer task drains a bounded queue of encoded frames into the socket; a reader task reads
//! response frames and hands each to the request that is next in line (Kafka answers in request
//! order on a connection, and the correlation id is checked against that order). The number of
//! requests awaiting a response is bounded by a semaphore (`max_in_flight`).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, ProduceResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{
    encode_request_header_into_buffer, Decodable, Encodable, HeaderVersion, Request, StrBytes,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::error::{ClientError, Result};
use crate::versions::client_range;

/// Largest response frame accepted (bounds the allocation made from a length read off the wire).
pub const MAX_RESPONSE_FRAME: usize = 512 * 1024 * 1024;
/// Depth of the queue of frames waiting for the writer task.
const WRITE_QUEUE: usize = 64;

type Reply = oneshot::Sender<Result<Bytes>>;

struct Waiter {
    correlation_id: i32,
    reply: Reply,
    _permit: OwnedSemaphorePermit,
}

struct Outgoing {
    /// The frame in pieces written one after the other (large record sets are not copied
    /// into one buffer).
    frame: Vec<Bytes>,
    waiter: Option<Waiter>,
    /// A request without a response: told (with an empty frame) once its bytes are in the
    /// socket; dropped, unanswered, when they never get there.
    written: Option<Reply>,
}

struct Shared {
    addr: String,
    closed: AtomicBool,
    pending: Mutex<VecDeque<Waiter>>,
}

impl Shared {
    fn fail_all(&self, why: &str) {
        self.closed.store(true, Ordering::SeqCst);
        let drained: Vec<Waiter> = match self.pending.lock() {
            Ok(mut q) => q.drain(..).collect(),
            Err(poisoned) => poisoned.into_inner().drain(..).collect(),
        };
        for w in drained {
            let _ = w.reply.send(Err(ClientError::ConnectionClosed(format!(
                "{} ({why})",
                self.addr
            ))));
        }
    }

    fn push_waiter(&self, w: Waiter) {
        match self.pending.lock() {
            Ok(mut q) => q.push_back(w),
            Err(poisoned) => poisoned.into_inner().push_back(w),
        }
    }

    fn pop_waiter(&self) -> Option<Waiter> {
        match self.pending.lock() {
            Ok(mut q) => q.pop_front(),
            Err(poisoned) => poisoned.into_inner().pop_front(),
        }
    }
}

/// A response that will arrive later; await it with [`ResponseFuture::wait`].
pub struct ResponseFuture<T> {
    rx: oneshot::Receiver<Result<Bytes>>,
    api_key: ApiKey,
    version: i16,
    addr: String,
    timeout: Duration,
    _marker: std::marker::PhantomData<fn() -> T>,
}

impl<T> ResponseFuture<T> {
    /// For a request without a response: waits until its frame is written to the socket.
    /// `ConnectionClosed` when it never will be (the connection failed or was dropped first).
    pub async fn written(self) -> Result<()> {
        match tokio::time::timeout(self.timeout, self.rx).await {
            Err(_) => Err(ClientError::Timeout(format!(
                "writing {:?} v{} to {}",
                self.api_key, self.version, self.addr
            ))),
            Ok(Err(_)) => Err(ClientError::ConnectionClosed(self.addr)),
            Ok(Ok(r)) => r.map(|_| ()),
        }
    }
}

impl<T: Decodable + HeaderVersion> ResponseFuture<T> {
    /// Waits for the response and decodes it.
    pub async fn wait(self) -> Result<T> {
        let frame = match tokio::time::timeout(self.timeout, self.rx).await {
            Err(_) => {
                return Err(ClientError::Timeout(format!(
                    "{:?} v{} to {}",
                    self.api_key, self.version, self.addr
                )))
            }
            Ok(Err(_)) => return Err(ClientError::ConnectionClosed(self.addr)),
            Ok(Ok(r)) => r?,
        };
        decode_response::<T>(frame, self.api_key, self.version)
    }
}

fn api_name(k: ApiKey) -> &'static str {
    // Debug names are not 'static; the common ones are spelled out for error messages.
    match k {
        ApiKey::Produce => "Produce",
        ApiKey::Fetch => "Fetch",
        ApiKey::ListOffsets => "ListOffsets",
        ApiKey::Metadata => "Metadata",
        ApiKey::ApiVersions => "ApiVersions",
        ApiKey::CreateTopics => "CreateTopics",
        ApiKey::DeleteTopics => "DeleteTopics",
        ApiKey::InitProducerId => "InitProducerId",
        ApiKey::FindCoordinator => "FindCoordinator",
        ApiKey::JoinGroup => "JoinGroup",
        ApiKey::SyncGroup => "SyncGroup",
        ApiKey::Heartbeat => "Heartbeat",
        ApiKey::LeaveGroup => "LeaveGroup",
        ApiKey::OffsetCommit => "OffsetCommit",
        ApiKey::OffsetFetch => "OffsetFetch",
        _ => "request",
    }
}

fn decode_response<T: Decodable + HeaderVersion>(
    mut frame: Bytes,
    api_key: ApiKey,
    version: i16,
) -> Result<T> {
    let api = api_name(api_key);
    ResponseHeader::decode(&mut frame, T::header_version(version)).map_err(|e| {
        ClientError::Decode {
            api,
            msg: format!("response header: {e}"),
        }
    })?;
    T::decode(&mut frame, version).map_err(|e| ClientError::Decode {
        api,
        msg: format!("v{version}: {e}"),
    })
}

/// A connection to one broker.
pub struct Connection {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Outgoing>,
    in_flight: Arc<Semaphore>,
    correlation: AtomicI32,
    client_id: StrBytes,
    versions: HashMap<i16, (i16, i16)>,
    request_timeout: Duration,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.shared.addr)
            .finish()
    }
}

/// Options of a connection.
#[derive(Debug, Clone)]
pub struct ConnectionOptions {
    /// Sent in every request header.
    pub client_id: String,
    /// Requests awaiting a response at once, at most.
    pub max_in_flight: usize,
    /// How long a connect may take.
    pub connect_timeout: Duration,
    /// How long a response may take (added to any broker-side wait the request asks for).
    pub request_timeout: Duration,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        ConnectionOptions {
            client_id: "shardlog-client".to_string(),
            max_in_flight: 5,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
        }
    }
}

impl Connection {
    /// Connects and negotiates API versions.
    pub async fn connect(addr: &str, opts: &ConnectionOptions) -> Result<Connection> {
        let stream = tokio::time::timeout(opts.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout(format!("connect to {addr}")))?
            .map_err(|source| ClientError::Io {
                addr: addr.to_string(),
                source,
            })?;
        stream.set_nodelay(true).map_err(|source| ClientError::Io {
            addr: addr.to_string(),
            source,
        })?;
        let (rd, wr) = stream.into_split();
        let shared = Arc::new(Shared {
            addr: addr.to_string(),
            closed: AtomicBool::new(false),
            pending: Mutex::new(VecDeque::new()),
        });
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let reader = tokio::spawn(read_loop(rd, shared.clone()));
        let writer = tokio::spawn(write_loop(wr, rx, shared.clone()));
        let mut conn = Connection {
            shared,
            tx,
            in_flight: Arc::new(Semaphore::new(opts.max_in_flight.max(1))),
            correlation: AtomicI32::new(1),
            client_id: StrBytes::from_string(opts.client_id.clone()),
            versions: HashMap::new(),
            request_timeout: opts.request_timeout,
            tasks: vec![reader, writer],
        };
        conn.versions = conn.negotiate().await?;
        tracing::debug!(addr, apis = conn.versions.len(), "connected");
        Ok(conn)
    }

    async fn negotiate(&self) -> Result<HashMap<i16, (i16, i16)>> {
        let mut req = ApiVersionsRequest::default();
        req.client_software_name = StrBytes::from_static_str("shardlog-client");
        req.client_software_version = StrBytes::from_static_str(env!("CARGO_PKG_VERSION"));
        // Try v3; a broker that does not know it answers with error 35 (UNSUPPORTED_VERSION)
        // in a v0 body carrying its own ranges.
        let resp: Result<ApiVersionsResponse> = self
            .send_versioned(&req, ApiKey::ApiVersions, 3, true)
            .await?
            .wait()
            .await;
        let resp = match resp {
            Ok(r) if r.error_code == 0 => r,
            Ok(r) if r.error_code == 35 => {
                self.send_versioned(&req, ApiKey::ApiVersions, 0, true)
                    .await?
                    .wait()
                    .await?
            }
            Ok(r) => return Err(ClientError::kafka(r.error_code, "ApiVersions")),
            Err(ClientError::Decode { .. }) => {
                self.send_versioned(&req, ApiKey::ApiVersions, 0, true)
                    .await?
                    .wait()
                    .await?
            }
            Err(e) => return Err(e),
        };
        if resp.error_code != 0 {
            return Err(ClientError::kafka(resp.error_code, "ApiVersions"));
        }
        Ok(resp
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect())
    }

    /// The broker address.
    pub fn addr(&self) -> &str {
        &self.shared.addr
    }

    /// Whether the connection has failed or was closed.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
    }

    /// The broker's version range of an API, if it has the API.
    pub fn broker_range(&self, api_key: i16) -> Option<(i16, i16)> {
        self.versions.get(&api_key).copied()
    }

    /// The highest version both the broker and this client implement.
    pub fn version_for(&self, api_key: ApiKey) -> Result<i16> {
        let key = api_key as i16;
        let (cmin, cmax) = client_range(api_key);
        let (bmin, bmax) = self.broker_range(key).ok_or(ClientError::UnsupportedApi {
            addr: self.shared.addr.clone(),
            api_key: key,
            broker_min: -1,
            broker_max: -1,
            client_min: cmin,
            client_max: cmax,
        })?;
        let lo = bmin.max(cmin);
        let hi = bmax.min(cmax);
        if lo > hi {
            return Err(ClientError::UnsupportedApi {
                addr: self.shared.addr.clone(),
                api_key: key,
                broker_min: bmin,
                broker_max: bmax,
                client_min: cmin,
                client_max: cmax,
            });
        }
        Ok(hi)
    }

    /// Sends a request at the negotiated version and waits for its response.
    pub async fn request<R: Request>(&self, req: &R) -> Result<R::Response> {
        let key = api_key_of::<R>()?;
        let v = self.version_for(key)?;
        self.send_versioned(req, key, v, true).await?.wait().await
    }

    /// Enqueues a request at the negotiated version (in order with other sends on this
    /// connection); the response is awaited separately. Waits while `max_in_flight` requests
    /// are outstanding.
    pub async fn send<R: Request>(&self, req: &R) -> Result<ResponseFuture<R::Response>> {
        let key = api_key_of::<R>()?;
        let v = self.version_for(key)?;
        self.send_versioned(req, key, v, true).await
    }

    /// Sends a request that has no response (Produce with acks=0). Returns once the frame is
    /// written to the socket (not merely queued: a connection dropped meanwhile discards its
    /// queue), as Kafka's clients count an acks=0 send done.
    pub async fn send_no_response<R: Request>(&self, req: &R) -> Result<()> {
        let key = api_key_of::<R>()?;
        let v = self.version_for(key)?;
        self.send_versioned::<R, R::Response>(req, key, v, false)
            .await?
            .written()
            .await
    }

    /// Like [`Connection::send`] with an explicit version and an extra response deadline.
    pub async fn send_with_timeout<R: Request>(
        &self,
        req: &R,
        extra: Duration,
    ) -> Result<ResponseFuture<R::Response>> {
        let key = api_key_of::<R>()?;
        let v = self.version_for(key)?;
        let mut f = self.send_versioned(req, key, v, true).await?;
        f.timeout += extra;
        Ok(f)
    }

    async fn send_versioned<R: Encodable, T>(
        &self,
        req: &R,
        api_key: ApiKey,
        version: i16,
        expect_response: bool,
    ) -> Result<ResponseFuture<T>> {
        let api = api_name(api_key);
        let body = req.compute_size(version).map_err(|e| ClientError::Encode {
            api,
            msg: e.to_string(),
        })?;
        let mut frame = FrameWriter::new(body + 64);
        req.encode(frame.buf(), version)
            .map_err(|e| ClientError::Encode {
                api,
                msg: format!("v{version}: {e}"),
            })?;
        self.send_frame(frame, api_key, version, expect_response)
            .await
    }

    /// Sends a Produce request whose record sets go to the socket as they are (not copied
    /// into the request's buffer); the version is the negotiated one. `topics`: (name,
    /// [(partition, records)]).
    pub async fn send_produce(
        &self,
        acks: i16,
        timeout_ms: i32,
        topics: &[ProduceSet],
        extra_timeout: Duration,
    ) -> Result<ProduceSent> {
        let version = self.version_for(ApiKey::Produce)?;
        let mut frame = FrameWriter::new(256);
        encode_produce_body(&mut frame, version, acks, timeout_ms, topics)?;
        let expect_response = acks != 0;
        let mut f = self
            .send_frame(frame, ApiKey::Produce, version, expect_response)
            .await?;
        f.timeout += extra_timeout;
        Ok(if expect_response {
            ProduceSent::Response(f)
        } else {
            ProduceSent::Written(f)
        })
    }

    /// Puts the header in front of `frame`'s body, fills in the size, and queues it.
    async fn send_frame<T>(
        &self,
        frame: FrameWriter,
        api_key: ApiKey,
        version: i16,
        expect_response: bool,
    ) -> Result<ResponseFuture<T>> {
        if self.is_closed() {
            return Err(ClientError::ConnectionClosed(self.shared.addr.clone()));
        }
        let correlation_id = self.correlation.fetch_add(1, Ordering::Relaxed) & 0x7fff_ffff;
        let api = api_name(api_key);
        let mut header = RequestHeader::default();
        header.request_api_key = api_key as i16;
        header.request_api_version = version;
        header.correlation_id = correlation_id;
        header.client_id = Some(self.client_id.clone());
        let mut head = BytesMut::with_capacity(64);
        head.put_i32(0);
        encode_request_header_into_buffer(&mut head, &header).map_err(|e| ClientError::Encode {
            api,
            msg: e.to_string(),
        })?;
        let frame = frame.finish(head).ok_or_else(|| ClientError::Encode {
            api,
            msg: "frame larger than 2 GiB".into(),
        })?;
        let (reply, rx) = oneshot::channel();
        let (waiter, written) = if expect_response {
            let permit = self
                .in_flight
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| ClientError::ConnectionClosed(self.shared.addr.clone()))?;
            let w = Waiter {
                correlation_id,
                reply,
                _permit: permit,
            };
            (Some(w), None)
        } else {
            (None, Some(reply))
        };
        self.tx
            .send(Outgoing {
                frame,
                waiter,
                written,
            })
            .await
            .map_err(|_| ClientError::ConnectionClosed(self.shared.addr.clone()))?;
        Ok(ResponseFuture {
            rx,
            api_key,
            version,
            addr: self.shared.addr.clone(),
            timeout: self.request_timeout,
            _marker: std::marker::PhantomData,
        })
    }
}

/// A Produce request handed to the connection.
pub enum ProduceSent {
    /// acks 1 / all: the broker's answer, to be awaited.
    Response(ResponseFuture<ProduceResponse>),
    /// acks=0: no answer; [`ResponseFuture::written`] tells when the frame is in the socket.
    Written(ResponseFuture<ProduceResponse>),
}

/// The record sets of one topic in a Produce request: (topic, [(partition, records)]).
pub type ProduceSet = (Arc<str>, Vec<(i32, Bytes)>);

/// A request body built in pieces: small fields go into a buffer, large byte strings are kept
/// as they are.
struct FrameWriter {
    pieces: Vec<Bytes>,
    cur: BytesMut,
}

impl FrameWriter {
    fn new(capacity: usize) -> FrameWriter {
        FrameWriter {
            pieces: Vec::new(),
            cur: BytesMut::with_capacity(capacity),
        }
    }

    fn buf(&mut self) -> &mut BytesMut {
        &mut self.cur
    }

    /// Appends `b` without copying it (small ones are copied: a piece costs an iovec).
    fn put_shared(&mut self, b: &Bytes) {
        if b.len() < 4096 {
            self.cur.extend_from_slice(b);
        } else {
            if !self.cur.is_empty() {
                self.pieces.push(self.cur.split().freeze());
            }
            self.pieces.push(b.clone());
        }
    }

    /// The frame: `head` (the size placeholder and the request header) then the body, with
    /// the size filled in. None past 2 GiB.
    fn finish(mut self, mut head: BytesMut) -> Option<Vec<Bytes>> {
        let body: usize = self.pieces.iter().map(|p| p.len()).sum::<usize>() + self.cur.len();
        let size = i32::try_from(head.len() - 4 + body).ok()?;
        head[..4].copy_from_slice(&size.to_be_bytes());
        let mut out = Vec::with_capacity(self.pieces.len() + 2);
        out.push(head.freeze());
        out.append(&mut self.pieces);
        if !self.cur.is_empty() {
            out.push(self.cur.freeze());
        }
        Some(out)
    }
}

fn put_uvarint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// The body of a ProduceRequest v3-v12 (flexible from v9), byte for byte what
/// `ProduceRequest::encode` writes for the same fields (no transactional id, no tagged fields).
fn encode_produce_body(
    w: &mut FrameWriter,
    version: i16,
    acks: i16,
    timeout_ms: i32,
    topics: &[ProduceSet],
) -> Result<()> {
    let too_big = |what: &str| ClientError::Encode {
        api: "Produce",
        msg: format!("{what} too large"),
    };
    if !(3..=12).contains(&version) {
        return Err(ClientError::Encode {
            api: "Produce",
            msg: format!("version {version} not encoded here"),
        });
    }
    let flexible = version >= 9;
    let b = w.buf();
    // transactional_id: null
    if flexible {
        put_uvarint(b, 0);
    } else {
        b.put_i16(-1);
    }
    b.put_i16(acks);
    b.put_i32(timeout_ms);
    let count = |b: &mut BytesMut, n: usize| -> Result<()> {
        let n = i32::try_from(n).map_err(|_| too_big("array"))?;
        if flexible {
            put_uvarint(b, n as u64 + 1);
        } else {
            b.put_i32(n);
        }
        Ok(())
    };
    count(b, topics.len())?;
    for (name, parts) in topics {
        let b = w.buf();
        let len = i16::try_from(name.len()).map_err(|_| too_big("topic name"))?;
        if flexible {
            put_uvarint(b, len as u64 + 1);
        } else {
            b.put_i16(len);
        }
        b.extend_from_slice(name.as_bytes());
        count(b, parts.len())?;
        for (index, records) in parts {
            let b = w.buf();
            b.put_i32(*index);
            let len = i32::try_from(records.len()).map_err(|_| too_big("record set"))?;
            if flexible {
                put_uvarint(b, len as u64 + 1);
            } else {
                b.put_i32(len);
            }
            w.put_shared(records);
            if flexible {
                put_uvarint(w.buf(), 0);
            }
        }
        if flexible {
            put_uvarint(w.buf(), 0);
        }
    }
    if flexible {
        put_uvarint(w.buf(), 0);
    }
    Ok(())
}

fn api_key_of<R: Request>() -> Result<ApiKey> {
    ApiKey::try_from(R::KEY)
        .map_err(|_| ClientError::InvalidArgument(format!("api key {}", R::KEY)))
}

/// Frames taken off the queue and written together (with as few `writev` calls as the socket
/// allows).
const WRITE_BATCH: usize = 16;
/// Pieces handed to one `writev` at most.
const MAX_IOVECS: usize = 64;

async fn write_loop(mut wr: OwnedWriteHalf, mut rx: mpsc::Receiver<Outgoing>, shared: Arc<Shared>) {
    let mut pieces: VecDeque<Bytes> = VecDeque::new();
    // Requests without a response in this round, told once the round is written.
    let mut written: Vec<Reply> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(out) = next.take() {
            // The waiter is queued before its frame is written, so the reader finds it.
            if let Some(waiter) = out.waiter {
                shared.push_waiter(waiter);
            }
            written.extend(out.written);
            pieces.extend(out.frame.into_iter().filter(|p| !p.is_empty()));
            taken += 1;
            if taken < WRITE_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if shared.closed.load(Ordering::SeqCst) {
            shared.fail_all("closed");
            return;
        }
        if let Err(e) = write_pieces(&mut wr, &mut pieces).await {
            tracing::debug!(addr = %shared.addr, error = %e, "write failed");
            shared.fail_all(&format!("write: {e}"));
            return;
        }
        for w in written.drain(..) {
            let _ = w.send(Ok(Bytes::new()));
        }
    }
    let _ = wr.shutdown().await;
}

/// Writes every piece, in order, with vectored writes.
async fn write_pieces(
    wr: &mut OwnedWriteHalf,
    pieces: &mut VecDeque<Bytes>,
) -> std::io::Result<()> {
    while !pieces.is_empty() {
        let slices: Vec<std::io::IoSlice<'_>> = pieces
            .iter()
            .take(MAX_IOVECS)
            .map(|p| std::io::IoSlice::new(p))
            .collect();
        let mut n = wr.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let Some(front) = pieces.front_mut() else {
                break;
            };
            if n >= front.len() {
                n -= front.len();
                pieces.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }
    Ok(())
}

/// Room a read buffer is given at least, so that small responses (produce acks) that arrive
/// together are read with one call and share one allocation.
const READ_CHUNK: usize = 256 * 1024;

async fn read_loop(mut rd: OwnedReadHalf, shared: Arc<Shared>) {
    // Each response's bytes are copied once, by the kernel, into the buffer the caller gets:
    // responses are cut out of the read buffer (`split_to`), and a response larger than the
    // room left gets a buffer of its own before its body is read. A size prefix is read on its
    // own when nothing is buffered, so a large response's body is not read into the wrong
    // buffer first (a fetch response can be tens of MB).
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    loop {
        let head = match fill(&mut rd, &mut buf, 4, true).await {
            Ok(()) => (&buf[..4]).get_i32(),
            Err(e) => {
                shared.fail_all(&e);
                return;
            }
        };
        if head < 4 || head as usize > MAX_RESPONSE_FRAME {
            tracing::warn!(addr = %shared.addr, len = head, "bad response frame size");
            shared.fail_all(&format!("bad response frame size {head}"));
            return;
        }
        let len = head as usize;
        buf.advance(4);
        if let Err(e) = fill(&mut rd, &mut buf, len, false).await {
            shared.fail_all(&e);
            return;
        }
        let frame = buf.split_to(len).freeze();
        let correlation_id = (&frame[..4]).get_i32();
        let Some(waiter) = shared.pop_waiter() else {
            tracing::warn!(addr = %shared.addr, correlation_id, "response nobody waits for");
            shared.fail_all("unexpected response");
            return;
        };
        if waiter.correlation_id != correlation_id {
            let msg = format!(
                "correlation id {correlation_id}, expected {}",
                waiter.correlation_id
            );
            let _ = waiter.reply.send(Err(ClientError::Protocol {
                addr: shared.addr.clone(),
                msg: msg.clone(),
            }));
            shared.fail_all(&msg);
            return;
        }
        let _ = waiter.reply.send(Ok(frame));
    }
}

/// Reads until `buf` holds at least `need` bytes. With `exact`, a read asks for no more than
/// the bytes missing; otherwise it fills the room there is (and may take the start of the next
/// responses with it). A buffer with less room than `need` is replaced by one with room for
/// all of it, holding the bytes already read (the old one stays with the responses cut from it).
async fn fill(
    rd: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    need: usize,
    exact: bool,
) -> Result<(), String> {
    if buf.len() >= need {
        return Ok(());
    }
    if buf.capacity() < need || buf.capacity() - buf.len() < READ_CHUNK / 16 {
        let mut fresh = BytesMut::with_capacity(need.max(READ_CHUNK));
        fresh.extend_from_slice(buf);
        *buf = fresh;
    }
    while buf.len() < need {
        let read = if exact {
            let missing = need - buf.len();
            rd.read_buf(&mut (&mut *buf).limit(missing)).await
        } else {
            rd.read_buf(buf).await
        };
        match read {
            Ok(0) => return Err("read: connection closed mid-frame".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, TopicName};

    fn topics() -> Vec<ProduceSet> {
        vec![
            (
                Arc::from("alpha"),
                vec![
                    (0, Bytes::from(vec![1u8; 10_000])),
                    (3, Bytes::from(vec![2u8; 17])),
                ],
            ),
            (Arc::from("b"), vec![(7, Bytes::from(vec![3u8; 300]))]),
            (Arc::from("empty-topic"), vec![]),
        ]
    }

    #[test]
    fn produce_body_is_what_the_reference_encoder_writes() {
        for version in 3..=12 {
            let mut req = ProduceRequest::default();
            req.acks = -1;
            req.timeout_ms = 30_000;
            for (name, parts) in topics() {
                let mut t = TopicProduceData::default();
                t.name = TopicName(StrBytes::from_string(name.to_string()));
                for (index, records) in parts {
                    let mut p = PartitionProduceData::default();
                    p.index = index;
                    p.records = Some(records);
                    t.partition_data.push(p);
                }
                req.topic_data.push(t);
            }
            let mut want = BytesMut::new();
            req.encode(&mut want, version).expect("reference");

            let mut w = FrameWriter::new(16);
            encode_produce_body(&mut w, version, -1, 30_000, &topics()).expect("encode");
            let head = BytesMut::from(&[0u8, 0, 0, 0, 9, 9][..]);
            let pieces = w.finish(head).expect("frame");
            assert!(pieces.len() > 2, "the large record set is its own piece");
            let got: Vec<u8> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
            assert_eq!(&got[..4], &((want.len() + 2) as i32).to_be_bytes());
            assert_eq!(&got[6..], &want[..], "v{version}");
        }
        let mut w = FrameWriter::new(16);
        assert!(encode_produce_body(&mut w, 13, 1, 1, &topics()).is_err());
    }

    #[tokio::test]
    async fn pieces_arrive_in_order_through_partial_writes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let reader = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut all = Vec::new();
            s.read_to_end(&mut all).await.expect("read");
            all
        });
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (_rd, mut wr) = stream.into_split();
        // More pieces than one writev takes, and more bytes than the socket buffer holds.
        let mut pieces: VecDeque<Bytes> = (0..200u32)
            .map(|i| Bytes::from(vec![(i % 251) as u8; 1 + (i as usize * 7919) % 40_000]))
            .collect();
        let want: Vec<u8> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
        write_pieces(&mut wr, &mut pieces).await.expect("write");
        assert!(pieces.is_empty());
        wr.shutdown().await.expect("shutdown");
        drop(wr);
        drop(_rd);
        assert_eq!(reader.await.expect("join"), want);
    }

    #[tokio::test]
    async fn responses_of_every_size_are_cut_exactly_from_the_stream() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        // Sizes around the read chunk and far above it, and runs of small ones that arrive
        // together; each frame is its correlation id and then a pattern of its own.
        let sizes: Vec<usize> = [
            4,
            5,
            100,
            READ_CHUNK - 8,
            READ_CHUNK,
            READ_CHUNK + 3,
            3 << 20,
        ]
        .into_iter()
        .chain((0..50).map(|i| 4 + (i * 37) % 300))
        .chain([READ_CHUNK / 16, 1 << 20, 6])
        .collect();
        let frames: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(id, &len)| {
                let mut f = (id as i32).to_be_bytes().to_vec();
                f.extend((4..len).map(|j| (j * 31 + id) as u8));
                f
            })
            .collect();
        let stream: Vec<u8> = frames
            .iter()
            .flat_map(|f| {
                (f.len() as i32)
                    .to_be_bytes()
                    .into_iter()
                    .chain(f.iter().copied())
            })
            .collect();
        let writer = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            // Uneven pieces, so prefixes and bodies are split across reads.
            let mut at = 0;
            let mut step = 1;
            while at < stream.len() {
                let end = (at + step).min(stream.len());
                s.write_all(&stream[at..end]).await.expect("write");
                at = end;
                step = (step * 7 + 3) % 700_000 + 1;
                tokio::task::yield_now().await;
            }
        });
        let (rd, _wr) = TcpStream::connect(addr)
            .await
            .expect("connect")
            .into_split();
        let permits = Arc::new(tokio::sync::Semaphore::new(frames.len()));
        let mut replies = Vec::new();
        let mut pending = VecDeque::new();
        for id in 0..frames.len() {
            let (tx, rx) = oneshot::channel();
            pending.push_back(Waiter {
                correlation_id: id as i32,
                reply: tx,
                _permit: permits.clone().try_acquire_owned().expect("permit"),
            });
            replies.push(rx);
        }
        let shared = Arc::new(Shared {
            addr: addr.to_string(),
            closed: AtomicBool::new(false),
            pending: Mutex::new(pending),
        });
        let reading = tokio::spawn(read_loop(rd, shared.clone()));
        for (rx, want) in replies.into_iter().zip(&frames) {
            let got = rx.await.expect("reply").expect("frame");
            assert_eq!(got.len(), want.len());
            assert!(got[..] == want[..], "frame of {} bytes differs", want.len());
        }
        writer.await.expect("writer");
        // The server closes: the loop ends, and nothing was failed before that.
        reading.await.expect("reader");
    }
}
