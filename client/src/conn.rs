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
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{
    encode_request_header_into_buffer, Decodable, Encodable, HeaderVersion, Request, StrBytes,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
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
    frame: Bytes,
    waiter: Option<Waiter>,
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

    /// Enqueues a request that has no response (Produce with acks=0). Returns once the frame
    /// is queued for the socket.
    pub async fn send_no_response<R: Request>(&self, req: &R) -> Result<()> {
        let key = api_key_of::<R>()?;
        let v = self.version_for(key)?;
        self.send_versioned::<R, R::Response>(req, key, v, false)
            .await
            .map(|_| ())
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
        if self.is_closed() {
            return Err(ClientError::ConnectionClosed(self.shared.addr.clone()));
        }
        let correlation_id = self.correlation.fetch_add(1, Ordering::Relaxed) & 0x7fff_ffff;
        let frame = self.encode(req, api_key, version, correlation_id)?;
        let (reply, rx) = oneshot::channel();
        let waiter = if expect_response {
            let permit = self
                .in_flight
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| ClientError::ConnectionClosed(self.shared.addr.clone()))?;
            Some(Waiter {
                correlation_id,
                reply,
                _permit: permit,
            })
        } else {
            drop(reply);
            None
        };
        self.tx
            .send(Outgoing { frame, waiter })
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

    fn encode<R: Encodable>(
        &self,
        req: &R,
        api_key: ApiKey,
        version: i16,
        correlation_id: i32,
    ) -> Result<Bytes> {
        let api = api_name(api_key);
        let mut header = RequestHeader::default();
        header.request_api_key = api_key as i16;
        header.request_api_version = version;
        header.correlation_id = correlation_id;
        header.client_id = Some(self.client_id.clone());
        let body = req.compute_size(version).map_err(|e| ClientError::Encode {
            api,
            msg: e.to_string(),
        })?;
        let mut buf = BytesMut::with_capacity(body + 64);
        buf.put_i32(0);
        encode_request_header_into_buffer(&mut buf, &header).map_err(|e| ClientError::Encode {
            api,
            msg: e.to_string(),
        })?;
        req.encode(&mut buf, version)
            .map_err(|e| ClientError::Encode {
                api,
                msg: format!("v{version}: {e}"),
            })?;
        let len = i32::try_from(buf.len() - 4).map_err(|_| ClientError::Encode {
            api,
            msg: "frame larger than 2 GiB".into(),
        })?;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        Ok(buf.freeze())
    }
}

fn api_key_of<R: Request>() -> Result<ApiKey> {
    ApiKey::try_from(R::KEY)
        .map_err(|_| ClientError::InvalidArgument(format!("api key {}", R::KEY)))
}

async fn write_loop(wr: OwnedWriteHalf, mut rx: mpsc::Receiver<Outgoing>, shared: Arc<Shared>) {
    let mut w = BufWriter::with_capacity(64 * 1024, wr);
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(out) = next.take() {
            if let Some(waiter) = out.waiter {
                shared.push_waiter(waiter);
            }
            if shared.closed.load(Ordering::SeqCst) {
                shared.fail_all("closed");
                return;
            }
            if let Err(e) = w.write_all(&out.frame).await {
                tracing::debug!(addr = %shared.addr, error = %e, "write failed");
                shared.fail_all(&format!("write: {e}"));
                return;
            }
            next = rx.try_recv().ok();
        }
        if let Err(e) = w.flush().await {
            tracing::debug!(addr = %shared.addr, error = %e, "flush failed");
            shared.fail_all(&format!("write: {e}"));
            return;
        }
    }
    let _ = w.shutdown().await;
}

async fn read_loop(rd: OwnedReadHalf, shared: Arc<Shared>) {
    let mut r = BufReader::with_capacity(256 * 1024, rd);
    loop {
        let len = match r.read_i32().await {
            Ok(n) => n,
            Err(e) => {
                shared.fail_all(&format!("read: {e}"));
                return;
            }
        };
        if len < 4 || len as usize > MAX_RESPONSE_FRAME {
            tracing::warn!(addr = %shared.addr, len, "bad response frame size");
            shared.fail_all(&format!("bad response frame size {len}"));
            return;
        }
        let mut buf = BytesMut::zeroed(len as usize);
        if let Err(e) = r.read_exact(&mut buf).await {
            shared.fail_all(&format!("read: {e}"));
            return;
        }
        let frame = buf.freeze();
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
