"""A tiny, explicit Kafka wire-protocol helper for the raw-socket tests.

Only what the tests need, encoded by hand so that the tests can also send
*wrong* bytes on purpose:

* request header v1 (api_key, api_version, correlation_id, client_id)
* ApiVersions v0, Metadata v1, Produce v3..v8, Fetch v4, InitProducerId v0
* RecordBatch v2 (magic 2) with CRC32C, optionally corrupted afterwards

Every request/response used here is a non-flexible version, so response headers
are v0 (just the correlation id). All integers are big-endian, as on the wire.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field

# ---------------------------------------------------------------------------
# API keys and error codes (from the Kafka protocol)

PRODUCE = 0
FETCH = 1
METADATA = 3
API_VERSIONS = 18
INIT_PRODUCER_ID = 22

NONE = 0
CORRUPT_MESSAGE = 2
UNKNOWN_TOPIC_OR_PARTITION = 3
MESSAGE_TOO_LARGE = 10
INVALID_REQUIRED_ACKS = 21
UNSUPPORTED_VERSION = 35
OUT_OF_ORDER_SEQUENCE_NUMBER = 45
DUPLICATE_SEQUENCE_NUMBER = 46


# ---------------------------------------------------------------------------
# CRC32C (Castagnoli), as used by RecordBatch v2. Pure Python, with the
# `crc32c` package used when it is installed (much faster for big batches).

def _make_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _make_table()


def crc32c_pure(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


try:  # pragma: no cover - depends on the environment
    from crc32c import crc32c as _crc32c_fast  # type: ignore

    def crc32c(data: bytes) -> int:
        return _crc32c_fast(data)
except ImportError:  # pragma: no cover
    crc32c = crc32c_pure

# Known answer from RFC 3720 (iSCSI): crc32c(b"123456789") == 0xE3069283
assert crc32c_pure(b"123456789") == 0xE3069283


# ---------------------------------------------------------------------------
# Primitive encoders

def i8(v: int) -> bytes:
    return struct.pack(">b", v)


def i16(v: int) -> bytes:
    return struct.pack(">h", v)


def i32(v: int) -> bytes:
    return struct.pack(">i", v)


def u32(v: int) -> bytes:
    return struct.pack(">I", v)


def i64(v: int) -> bytes:
    return struct.pack(">q", v)


def string(s: str | None) -> bytes:
    if s is None:
        return i16(-1)
    b = s.encode()
    return i16(len(b)) + b


def nbytes(b: bytes | None) -> bytes:
    if b is None:
        return i32(-1)
    return i32(len(b)) + b


def array(items: list[bytes] | None) -> bytes:
    if items is None:
        return i32(-1)
    return i32(len(items)) + b"".join(items)


def varint(v: int) -> bytes:
    """Zig-zag varint (Kafka records use signed varints / varlongs)."""
    z = (v << 1) ^ (v >> 63)
    out = bytearray()
    while True:
        byte = z & 0x7F
        z >>= 7
        if z:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class Reader:
    """Sequential big-endian decoder over one response body."""

    def __init__(self, buf: bytes):
        self.buf = buf
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            raise ValueError(f"short response: need {n} bytes at {self.pos}, have {len(self.buf)}")
        b = self.buf[self.pos:self.pos + n]
        self.pos += n
        return b

    def i8(self) -> int:
        return struct.unpack(">b", self.take(1))[0]

    def i16(self) -> int:
        return struct.unpack(">h", self.take(2))[0]

    def i32(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def i64(self) -> int:
        return struct.unpack(">q", self.take(8))[0]

    def uvarint(self) -> int:
        """An unsigned varint (compact lengths, tagged-field counts)."""
        shift = v = 0
        while True:
            b = self.take(1)[0]
            v |= (b & 0x7F) << shift
            if not b & 0x80:
                return v
            shift += 7

    def string(self) -> str | None:
        n = self.i16()
        return None if n < 0 else self.take(n).decode()

    def nbytes(self) -> bytes | None:
        n = self.i32()
        return None if n < 0 else self.take(n)

    def array(self, item) -> list | None:
        n = self.i32()
        if n < 0:
            return None
        if n > len(self.buf):
            raise ValueError(f"implausible array length {n}")
        return [item(self) for _ in range(n)]

    def varint(self) -> int:
        shift = 0
        z = 0
        while True:
            b = self.take(1)[0]
            z |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
        return (z >> 1) ^ -(z & 1)

    def done(self) -> bool:
        return self.pos == len(self.buf)


# ---------------------------------------------------------------------------
# RecordBatch v2

@dataclass
class Record:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)
    timestamp_delta: int = 0


def encode_record(r: Record, offset_delta: int) -> bytes:
    body = bytearray()
    body += i8(0)  # attributes (unused)
    body += varint(r.timestamp_delta)
    body += varint(offset_delta)
    if r.key is None:
        body += varint(-1)
    else:
        body += varint(len(r.key)) + r.key
    if r.value is None:
        body += varint(-1)
    else:
        body += varint(len(r.value)) + r.value
    body += varint(len(r.headers))
    for hk, hv in r.headers:
        k = hk.encode()
        body += varint(len(k)) + k
        body += varint(-1) if hv is None else varint(len(hv)) + hv
    return varint(len(body)) + bytes(body)


def record_batch(records: list[Record], *, base_timestamp: int | None = None,
                 producer_id: int = -1, producer_epoch: int = -1, base_sequence: int = -1,
                 attributes: int = 0, base_offset: int = 0) -> bytes:
    """An uncompressed RecordBatch v2 with a correct CRC32C."""
    if base_timestamp is None:
        base_timestamp = int(time.time() * 1000)
    recs = b"".join(encode_record(r, i) for i, r in enumerate(records))
    max_ts = base_timestamp + max((r.timestamp_delta for r in records), default=0)
    # Everything the CRC covers: attributes .. end of records.
    after_crc = (
        i16(attributes)
        + i32(len(records) - 1)  # lastOffsetDelta
        + i64(base_timestamp)
        + i64(max_ts)
        + i64(producer_id)
        + i16(producer_epoch)
        + i32(base_sequence)
        + i32(len(records))
        + recs
    )
    crc = crc32c(after_crc)
    # batchLength counts the bytes after the batchLength field itself.
    after_len = i32(0) + i8(2) + u32(crc) + after_crc  # partitionLeaderEpoch, magic, crc
    return i64(base_offset) + i32(len(after_len)) + after_len


# Byte offsets inside a RecordBatch v2 header.
BATCH_CRC_AT = 17
BATCH_ATTRIBUTES_AT = 21
BATCH_HEADER_LEN = 61


def corrupt(batch: bytes, at: int | None = None) -> bytes:
    """Flip one bit inside the CRC-covered area (by default in the last record)."""
    b = bytearray(batch)
    pos = len(b) - 1 if at is None else at
    assert pos >= BATCH_ATTRIBUTES_AT, "corrupt inside the CRC-covered area"
    b[pos] ^= 0x01
    return bytes(b)


@dataclass
class Batch:
    base_offset: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records: list[Record]
    raw: bytes

    def crc_ok(self) -> bool:
        return crc32c(self.raw[BATCH_ATTRIBUTES_AT:]) == self.crc


def parse_batches(data: bytes) -> list[Batch]:
    """Parse consecutive RecordBatch v2 (uncompressed records are decoded;
    for compressed batches `records` is left empty). A trailing partial batch
    (allowed in Fetch responses) is ignored."""
    out = []
    pos = 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from(">i", data, pos + 8)
        end = pos + 12 + length
        if end > len(data):
            break
        raw = data[pos:end]
        r = Reader(raw)
        base_offset = r.i64()
        r.i32()
        ple = r.i32()
        magic = r.i8()
        (crc,) = struct.unpack(">I", r.take(4))
        attrs = r.i16()
        lod = r.i32()
        bts = r.i64()
        mts = r.i64()
        pid = r.i64()
        pep = r.i16()
        bseq = r.i32()
        count = r.i32()
        records = []
        if attrs & 0x07 == 0:
            for _ in range(count):
                r.varint()  # length
                r.i8()
                tsd = r.varint()
                r.varint()  # offset delta
                kl = r.varint()
                key = None if kl < 0 else r.take(kl)
                vl = r.varint()
                value = None if vl < 0 else r.take(vl)
                headers = []
                for _ in range(r.varint()):
                    hk = r.take(r.varint()).decode()
                    hl = r.varint()
                    headers.append((hk, None if hl < 0 else r.take(hl)))
                records.append(Record(key, value, headers, tsd))
        out.append(Batch(base_offset, ple, magic, crc, attrs, lod, bts, mts, pid, pep, bseq,
                         records, raw))
        pos = end
    return out


# ---------------------------------------------------------------------------
# Requests

def request_header(api_key: int, api_version: int, correlation_id: int,
                   client_id: str | None = "kwire") -> bytes:
    return i16(api_key) + i16(api_version) + i32(correlation_id) + string(client_id)


def frame(payload: bytes) -> bytes:
    return i32(len(payload)) + payload


def produce_body(topic: str, partition: int, records: bytes | None, *, acks: int = -1,
                 timeout_ms: int = 10000, transactional_id: str | None = None) -> bytes:
    """Produce v3..v8 request body (same layout for all of them)."""
    part = i32(partition) + nbytes(records)
    return string(transactional_id) + i16(acks) + i32(timeout_ms) + array([string(topic) + array([part])])


def fetch_body(topic: str, partition: int, offset: int, *, max_wait_ms: int = 100,
               min_bytes: int = 1, max_bytes: int = 1 << 20, partition_max_bytes: int = 1 << 20) -> bytes:
    """Fetch v4 request body."""
    part = i32(partition) + i64(offset) + i32(partition_max_bytes)
    return (i32(-1) + i32(max_wait_ms) + i32(min_bytes) + i32(max_bytes) + i8(0)
            + array([string(topic) + array([part])]))


# ---------------------------------------------------------------------------
# Responses

@dataclass
class ApiVersionsResponse:
    error_code: int
    versions: dict[int, tuple[int, int]]


@dataclass
class PartitionProduceResponse:
    topic: str
    partition: int
    error_code: int
    base_offset: int
    log_append_time: int


@dataclass
class PartitionFetchResponse:
    topic: str
    partition: int
    error_code: int
    high_watermark: int
    records: bytes | None


class ConnectionClosed(Exception):
    pass


class Conn:
    """One blocking TCP connection to a broker."""

    def __init__(self, host: str, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.next_id = 1

    @classmethod
    def wrap(cls, sock: socket.socket) -> "Conn":
        """A Conn over a socket the caller set up and connected itself (source address,
        buffer sizes)."""
        c = cls.__new__(cls)
        c.sock = sock
        c.next_id = 1
        return c

    @classmethod
    def to(cls, bootstrap: str, timeout: float = 10.0) -> "Conn":
        host, port = bootstrap.rsplit(":", 1)
        return cls(host, int(port), timeout)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- raw I/O -----------------------------------------------------------
    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionClosed(f"connection closed after {len(buf)} of {n} bytes")
            buf += chunk
        return bytes(buf)

    def recv_frame(self) -> bytes:
        (size,) = struct.unpack(">i", self.recv_exact(4))
        if size < 4 or size > 256 << 20:
            raise ValueError(f"bad response size {size}")
        return self.recv_exact(size)

    def send_request(self, api_key: int, api_version: int, body: bytes,
                     client_id: str | None = "kwire") -> int:
        cid = self.next_id
        self.next_id += 1
        self.send_raw(frame(request_header(api_key, api_version, cid, client_id) + body))
        return cid

    def recv_response(self, correlation_id: int) -> Reader:
        r = Reader(self.recv_frame())
        got = r.i32()
        if got != correlation_id:
            raise ValueError(f"correlation id {got}, expected {correlation_id}")
        return r

    def request(self, api_key: int, api_version: int, body: bytes) -> Reader:
        return self.recv_response(self.send_request(api_key, api_version, body))

    def closed_by_peer(self, timeout: float = 10.0) -> bool:
        """True if the broker closes the connection (EOF or reset) within `timeout`
        without sending anything; False if it sends bytes or keeps it open."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False
        return data == b""

    # -- typed requests ----------------------------------------------------
    def api_versions(self, version: int = 0) -> ApiVersionsResponse:
        r = self.request(API_VERSIONS, version, b"")
        return parse_api_versions(r)

    def metadata(self, topics: list[str] | None = None) -> dict:
        """Metadata v1. topics=None asks for all topics."""
        body = array(None if topics is None else [string(t) for t in topics])
        r = self.request(METADATA, 1, body)
        brokers = r.array(lambda r: {"node_id": r.i32(), "host": r.string(), "port": r.i32(),
                                     "rack": r.string()})
        controller_id = r.i32()

        def partition(r: Reader) -> dict:
            return {"error_code": r.i16(), "partition": r.i32(), "leader": r.i32(),
                    "replicas": r.array(Reader.i32), "isr": r.array(Reader.i32)}

        topics_out = r.array(lambda r: {"error_code": r.i16(), "name": r.string(),
                                        "internal": r.i8() != 0,
                                        "partitions": r.array(partition)})
        return {"brokers": brokers, "controller_id": controller_id,
                "topics": {t["name"]: t for t in topics_out}}

    def produce(self, topic: str, partition: int, records: bytes | None, *, acks: int = -1,
                version: int = 3, timeout_ms: int = 10000) -> PartitionProduceResponse | None:
        """Produce one batch to one partition. Returns None for acks=0 (no response)."""
        assert 3 <= version <= 8
        cid = self.send_request(PRODUCE, version,
                                produce_body(topic, partition, records, acks=acks, timeout_ms=timeout_ms))
        if acks == 0:
            return None
        r = self.recv_response(cid)
        out = []

        def part(r: Reader, name: str):
            p = PartitionProduceResponse(name, r.i32(), r.i16(), r.i64(), r.i64())
            if version >= 5:
                r.i64()  # log_start_offset
            if version >= 8:
                r.array(lambda r: (r.i32(), r.string()))  # record_errors
                r.string()  # error_message
            out.append(p)

        def topic_(r: Reader):
            name = r.string()
            r.array(lambda r: part(r, name))

        r.array(topic_)
        r.i32()  # throttle_time_ms
        if len(out) != 1:
            raise ValueError(f"expected one partition in produce response, got {out}")
        return out[0]

    def fetch(self, topic: str, partition: int, offset: int, **kw) -> PartitionFetchResponse:
        r = self.request(FETCH, 4, fetch_body(topic, partition, offset, **kw))
        r.i32()  # throttle
        out = []

        def part(r: Reader, name: str):
            idx, err, hw = r.i32(), r.i16(), r.i64()
            r.i64()  # last stable offset
            r.array(lambda r: (r.i64(), r.i64()))  # aborted transactions
            out.append(PartitionFetchResponse(name, idx, err, hw, r.nbytes()))

        def topic_(r: Reader):
            name = r.string()
            r.array(lambda r: part(r, name))

        r.array(topic_)
        if len(out) != 1:
            raise ValueError(f"expected one partition in fetch response, got {out}")
        return out[0]

    def init_producer_id(self) -> tuple[int, int, int]:
        """InitProducerId v0 for an idempotent (non-transactional) producer.
        Returns (error_code, producer_id, producer_epoch)."""
        r = self.request(INIT_PRODUCER_ID, 0, string(None) + i32(60000))
        r.i32()  # throttle
        return r.i16(), r.i64(), r.i16()


def uvarint(v: int) -> bytes:
    out = bytearray()
    while True:
        byte = v & 0x7F
        v >>= 7
        if v:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def compact_string(s: str) -> bytes:
    b = s.encode()
    return uvarint(len(b) + 1) + b


def api_versions_v3_request(correlation_id: int, client_id: str = "kwire") -> bytes:
    """ApiVersions v3 is a flexible version: request header v2 (client_id stays a
    classic nullable string, then an empty tagged-field section) and a compact body."""
    header = i16(API_VERSIONS) + i16(3) + i32(correlation_id) + string(client_id) + uvarint(0)
    body = compact_string("kwire") + compact_string("1.0") + uvarint(0)
    return frame(header + body)


def parse_api_versions_v3(r: Reader) -> ApiVersionsResponse:
    """ApiVersions v3 response body (the response header is v0 even here)."""
    uv = r.uvarint

    def skip_tags() -> None:
        for _ in range(uv()):
            uv()
            r.take(uv())

    err = r.i16()
    n = uv() - 1
    versions = {}
    for _ in range(max(n, 0)):
        k, lo, hi = r.i16(), r.i16(), r.i16()
        skip_tags()
        versions[k] = (lo, hi)
    r.i32()  # throttle_time_ms
    skip_tags()
    return ApiVersionsResponse(err, versions)


def parse_api_versions(r: Reader) -> ApiVersionsResponse:
    err = r.i16()
    entries = r.array(lambda r: (r.i16(), r.i16(), r.i16())) or []
    return ApiVersionsResponse(err, {k: (lo, hi) for k, lo, hi in entries})
