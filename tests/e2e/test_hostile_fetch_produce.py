"""Hostile Fetch and Produce requests, by raw socket (issue 17, items 1, 3 and 9):

* a Fetch is bounded by min(request max_bytes, broker fetch_max_bytes) and each partition's
  limit, whatever limits it names (<= 0, 2^31-1), across partitions on different shards, and
  still returns a first batch larger than every limit (KIP-74);
* a connection that pipelines fetches and never reads holds at most max_response_queue_bytes
  of answers (measured by the broker's gauge and its RSS), and memory is given back when it
  closes;
* the same partition twice in one Produce is refused as a whole (INVALID_REQUEST, nothing
  stored); a transactional batch without a transaction is refused
  (TRANSACTIONAL_ID_AUTHORIZATION_FAILED); acks=all on a topic whose min.insync.replicas is
  above its one replica is NOT_ENOUGH_REPLICAS; an isolation level other than 0 or 1 in Fetch
  or ListOffsets is INVALID_REQUEST.

Data is small (a few MB) and the broker's fetch limit is set to 1 MiB to match.
"""

from __future__ import annotations

import socket
import struct
import time

import pytest

import kwire
from conftest import Broker, broker_with_admin
from kwire import Reader, array, i8, i16, i32, i64, nbytes, string
from util import create_topic, metrics, unique_topic

pytestmark = pytest.mark.timeout(180)

MIB = 1 << 20
FETCH_MAX = 1 * MIB
QUEUE_MAX = 4 * MIB
INT32_MAX = (1 << 31) - 1

INVALID_REQUEST = 42
NOT_ENOUGH_REPLICAS = 19
TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53
LIST_OFFSETS = 2


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = broker_with_admin(tmp_path_factory.mktemp("hostile"), cores=2,
                          env={"SHARDLOG_FETCH_MAX_BYTES": str(FETCH_MAX),
                               "SHARDLOG_MAX_RESPONSE_QUEUE_BYTES": str(QUEUE_MAX),
                               # Fetches read from disk (fresh buffers), not from cached batches that
                               # every answer would share.
                               "SHARDLOG_LOG_CACHE_BYTES": str(256 << 10),
                               "SHARDLOG_REQUEST_READ_TIMEOUT_MS": "3000"})
    b.start()
    yield b
    b.teardown()


def never_reading_fetches(broker: Broker, topic: str, n: int) -> kwire.Conn:
    """A connection with a tiny receive buffer that pipelines `n` "fetch everything" requests
    (partition 0 from offset 0, no limits) and then reads nothing."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((broker.host, broker.port))
    hog = kwire.Conn.wrap(s)
    for _ in range(n):
        hog.send_request(kwire.FETCH, 4, kwire.fetch_body(topic, 0, 0, max_bytes=0,
                                                         partition_max_bytes=INT32_MAX))
    return hog


def fill(conn: kwire.Conn, topic: str, partition: int, batches: int, value_bytes: int) -> list[int]:
    """Appends `batches` one-record batches of `value_bytes`; returns their sizes."""
    sizes = []
    for i in range(batches):
        b = kwire.record_batch([kwire.Record(None, bytes([i % 251]) * value_bytes)])
        r = conn.produce(topic, partition, b, acks=1)
        assert r.error_code == 0, r
        sizes.append(len(b))
    return sizes


def fetch_v4(conn: kwire.Conn, parts: list[tuple[str, int, int, int]], *, max_bytes: int,
             isolation_level: int = 0) -> tuple[int, list[tuple[str, int, int, bytes]]]:
    """Fetch v4 of (topic, partition, offset, partition_max_bytes) entries. Returns the
    response's size prefix and (topic, partition, error, records) per partition."""
    by_topic: dict[str, list[bytes]] = {}
    for topic, p, offset, pmax in parts:
        by_topic.setdefault(topic, []).append(i32(p) + i64(offset) + i32(pmax))
    body = (i32(-1) + i32(100) + i32(1) + i32(max_bytes) + i8(isolation_level)
            + array([string(t) + array(ps) for t, ps in by_topic.items()]))
    cid = conn.send_request(kwire.FETCH, 4, body)
    (size,) = struct.unpack(">i", conn.recv_exact(4))
    assert 0 < size < 256 * MIB, f"response size prefix {size}"
    r = Reader(conn.recv_exact(size))
    assert r.i32() == cid
    r.i32()  # throttle
    out = []

    def part(r: Reader, name: str):
        idx, err = r.i32(), r.i16()
        r.i64()  # high watermark
        r.i64()  # last stable offset
        r.array(lambda r: (r.i64(), r.i64()))
        out.append((name, idx, err, r.nbytes() or b""))

    def topic_(r: Reader):
        name = r.string()
        r.array(lambda r: part(r, name))

    r.array(topic_)
    assert r.done()
    return size, out


def test_fetch_is_bounded_by_the_broker_limit_whatever_the_request_asks(broker):
    topic = unique_topic("bounded")
    create_topic(broker.bootstrap, topic, 1)
    with kwire.Conn.to(broker.bootstrap) as c:
        sizes = fill(c, topic, 0, 40, 100_000)  # ~4 MB
        for max_bytes in (0, -1, INT32_MAX):
            size, [(_, _, err, records)] = fetch_v4(c, [(topic, 0, 0, INT32_MAX)], max_bytes=max_bytes)
            assert err == 0
            assert len(records) == sum(sizes[:10]), (max_bytes, len(records))
            assert len(records) <= FETCH_MAX
            assert len(records) < size < len(records) + 200, "size prefix = the response's length"
            assert [b.base_offset for b in kwire.parse_batches(records)] == list(range(10))
        # A request limit below the broker's wins; so does a partition limit.
        _, [(_, _, _, records)] = fetch_v4(c, [(topic, 0, 0, INT32_MAX)], max_bytes=250_000)
        assert len(records) == sum(sizes[:2])
        _, [(_, _, _, records)] = fetch_v4(c, [(topic, 0, 5, 350_000)], max_bytes=0)
        assert len(records) == sum(sizes[5:8])


def test_limit_holds_across_partitions_on_every_shard(broker):
    topic = unique_topic("shards")
    create_topic(broker.bootstrap, topic, 4)  # 4 partitions over 2 shards
    per_part = {}
    with kwire.Conn.to(broker.bootstrap) as c:
        for p in range(4):
            per_part[p] = fill(c, topic, p, 8, 200_000)  # 1.6 MB each
        _, out = fetch_v4(c, [(topic, p, 0, INT32_MAX) for p in range(4)], max_bytes=INT32_MAX)
    got = {p: len(rec) for _, p, err, rec in out if not err}
    assert sorted(got) == [0, 1, 2, 3]
    # Filled in request order: partition 0 takes what fits (5 batches), nothing else does.
    assert sum(got.values()) <= FETCH_MAX, got
    assert got[0] == sum(per_part[0][:5]), got
    assert got[1] == got[2] == got[3] == 0, got


def test_first_batch_larger_than_every_limit_is_returned(broker):
    topic = unique_topic("first")
    create_topic(broker.bootstrap, topic, 1)
    with kwire.Conn.to(broker.bootstrap) as c:
        sizes = fill(c, topic, 0, 3, 300_000)
        for max_bytes, pmax in ((1000, 1000), (0, 0), (1, -5)):
            _, [(_, _, err, records)] = fetch_v4(c, [(topic, 0, 1, pmax)], max_bytes=max_bytes)
            assert err == 0
            batches = kwire.parse_batches(records)
            assert [b.base_offset for b in batches] == [1], (max_bytes, pmax)
            assert len(records) == sizes[1]


def test_pipelined_fetches_that_are_never_read_hold_a_bounded_queue(broker):
    topic = unique_topic("pipeline")
    create_topic(broker.bootstrap, topic, 1)
    with kwire.Conn.to(broker.bootstrap) as c:
        fill(c, topic, 0, 60, 100_000)  # ~6 MB
    pid = broker.proc.pid
    before = metrics(broker.admin_port)
    before.setdefault("shardlog_response_queue_waits_total", 0.0)
    rss_before = rss_bytes(pid)
    # 60 fetches of "everything" pipelined on a socket with a tiny receive buffer that is
    # never read. Without limits each answer would hold the whole partition (~6 MB: 360 MB);
    # with the fetch limit alone, 1 MiB each (60 MiB); with the answer queue, 4 MiB in all.
    hog = never_reading_fetches(broker, topic, 60)
    peak_rss = rss_bytes(pid)
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        peak_rss = max(peak_rss, rss_bytes(pid))
        time.sleep(0.05)
    print(f"RSS before {rss_before / MIB:.1f} MiB, peak {peak_rss / MIB:.1f} MiB")
    assert peak_rss - rss_before < 32 * MIB, (rss_before, peak_rss)
    m = metrics(broker.admin_port)
    # The queue held at most its budget (plus one batch a fetch may exceed its limit by); the
    # peak is per shard, and only this connection ever needed more than one fetch's limit.
    peak = metrics(broker.admin_port, max)["shardlog_response_queue_peak_bytes"]
    assert QUEUE_MAX - FETCH_MAX <= peak <= QUEUE_MAX + 200_000, peak
    assert m["shardlog_response_queue_waits_total"] > before["shardlog_response_queue_waits_total"]
    # The client that reads nothing is cut off; everything it held is given back.
    deadline = time.monotonic() + 15
    while metrics(broker.admin_port)["shardlog_response_queue_bytes"] != 0:
        assert time.monotonic() < deadline, "answers of the closed connection still held"
        time.sleep(0.2)
    hog.close()
    assert "client read nothing for" in broker.log_text()
    # Everyone else is served meanwhile and afterwards.
    with kwire.Conn.to(broker.bootstrap) as other:
        size, [(_, _, err, records)] = fetch_v4(other, [(topic, 0, 0, INT32_MAX)], max_bytes=0)
        assert err == 0 and 0 < len(records) <= FETCH_MAX


def test_memory_of_large_answers_is_given_back_when_connections_close(tmp_path):
    """Larger answers than the module broker's (16 MiB fetches, 32 MiB per connection): once
    the connections are closed, RSS is back where it started. (At this size glibc returned
    the memory here even without `alloc::release_freed_memory`; with 55 MiB fetches it kept
    81 MiB of it, see docs/RELIABILITY.md.)"""
    b = broker_with_admin(tmp_path, cores=2,
                          env={"SHARDLOG_FETCH_MAX_BYTES": str(16 * MIB),
                               "SHARDLOG_MAX_RESPONSE_QUEUE_BYTES": str(32 * MIB),
                               "SHARDLOG_LOG_CACHE_BYTES": str(256 << 10)})
    b.start()
    try:
        topic = unique_topic("giveback")
        create_topic(b.bootstrap, topic, 1)
        with kwire.Conn.to(b.bootstrap) as c:
            fill(c, topic, 0, 40, 1_000_000)  # ~40 MB
        pid = b.proc.pid
        time.sleep(0.5)
        rss_before = rss_bytes(pid)
        hogs = []
        for _ in range(8):
            hogs.append(never_reading_fetches(b, topic, 4))
        peak_rss = rss_before
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            peak_rss = max(peak_rss, rss_bytes(pid))
            time.sleep(0.05)
        for hog in hogs:
            hog.close()
        deadline = time.monotonic() + 10
        while metrics(b.admin_port)["shardlog_response_queue_bytes"] != 0:
            assert time.monotonic() < deadline, "answers of the closed connections still held"
            time.sleep(0.1)
        time.sleep(1.5)  # a release is at most a second after the previous one
        rss_after = rss_bytes(pid)
        print(f"RSS before {rss_before / MIB:.1f} MiB, peak {peak_rss / MIB:.1f} MiB, "
              f"after close {rss_after / MIB:.1f} MiB")
        assert peak_rss - rss_before > 128 * MIB, "the hogs' answers should have held memory"
        assert rss_after - rss_before < 16 * MIB, (rss_before, peak_rss, rss_after)
    finally:
        b.teardown()


# --- Produce ------------------------------------------------------------------------------

def produce_raw(conn: kwire.Conn, topics: list[tuple[str, list[tuple[int, bytes]]]], acks: int = -1,
                transactional_id: str | None = None) -> list[tuple[str, int, int, int]]:
    """Produce v3 with the given (topic, [(partition, records)]) entries, duplicates allowed.
    Returns (topic, partition, error, base_offset) per answered entry, in order."""
    body = (string(transactional_id) + i16(acks) + i32(10000)
            + array([string(t) + array([i32(p) + nbytes(rec) for p, rec in ps]) for t, ps in topics]))
    r = conn.request(kwire.PRODUCE, 3, body)
    out = []

    def part(r: Reader, name: str):
        idx, err, base = r.i32(), r.i16(), r.i64()
        r.i64()  # log append time
        out.append((name, idx, err, base))

    def topic_(r: Reader):
        name = r.string()
        r.array(lambda r: part(r, name))

    r.array(topic_)
    r.i32()
    return out


def high_watermark(conn: kwire.Conn, topic: str, partition: int) -> int:
    return conn.fetch(topic, partition, 0, max_wait_ms=0).high_watermark


def batch(tag: bytes, **kw) -> bytes:
    return kwire.record_batch([kwire.Record(None, tag)], **kw)


def test_same_partition_twice_in_one_produce_is_refused_and_nothing_stored(broker):
    topic = unique_topic("dup")
    create_topic(broker.bootstrap, topic, 2)
    with kwire.Conn.to(broker.bootstrap) as c:
        got = produce_raw(c, [(topic, [(0, batch(b"a")), (0, batch(b"b")), (1, batch(b"c"))])])
        assert got == [(topic, 0, INVALID_REQUEST, -1), (topic, 0, INVALID_REQUEST, -1),
                       (topic, 1, INVALID_REQUEST, -1)]
        # The same topic named twice, with the partition in each.
        got = produce_raw(c, [(topic, [(1, batch(b"d"))]), (topic, [(1, batch(b"e"))])])
        assert [e[2] for e in got] == [INVALID_REQUEST, INVALID_REQUEST]
        assert high_watermark(c, topic, 0) == 0 and high_watermark(c, topic, 1) == 0
        # Distinct partitions in one request each get their own offset.
        got = produce_raw(c, [(topic, [(0, batch(b"f")), (1, batch(b"g"))])])
        assert got == [(topic, 0, 0, 0), (topic, 1, 0, 0)]
    assert "produce names a partition twice" in broker.log_text()


def test_transactional_batch_without_a_transaction_is_refused(broker):
    topic = unique_topic("txn")
    create_topic(broker.bootstrap, topic, 1)
    with kwire.Conn.to(broker.bootstrap) as c:
        err, pid, epoch = c.init_producer_id()
        assert err == 0
        txn = batch(b"t", producer_id=pid, producer_epoch=epoch, base_sequence=0,
                    attributes=0x10)
        plain = batch(b"p", producer_id=pid, producer_epoch=epoch, base_sequence=0)
        for acks in (1, -1):
            got = produce_raw(c, [(topic, [(0, txn)])], acks=acks)
            assert got == [(topic, 0, TRANSACTIONAL_ID_AUTHORIZATION_FAILED, -1)]
        assert high_watermark(c, topic, 0) == 0
        # The producer's ordinary batch is stored, at offset 0.
        assert produce_raw(c, [(topic, [(0, plain)])]) == [(topic, 0, 0, 0)]
    assert "transactional produce refused" in broker.log_text()


def test_acks_all_with_min_insync_above_the_replica_count(broker):
    strict = unique_topic("minisr")
    create_topic(broker.bootstrap, strict, 1, config={"min.insync.replicas": "2"})
    normal = unique_topic("minisr1")
    create_topic(broker.bootstrap, normal, 1, config={"min.insync.replicas": "1"})
    with kwire.Conn.to(broker.bootstrap) as c:
        assert produce_raw(c, [(strict, [(0, batch(b"x"))])], acks=-1) == \
            [(strict, 0, NOT_ENOUGH_REPLICAS, -1)]
        assert high_watermark(c, strict, 0) == 0
        # acks=1 does not ask for replicas; another topic in the same request is not affected.
        assert produce_raw(c, [(strict, [(0, batch(b"y"))])], acks=1) == [(strict, 0, 0, 0)]
        got = produce_raw(c, [(strict, [(0, batch(b"z"))]), (normal, [(0, batch(b"w"))])], acks=-1)
        assert got == [(strict, 0, NOT_ENOUGH_REPLICAS, -1), (normal, 0, 0, 0)]


def test_unknown_isolation_level_is_invalid_request(broker):
    topic = unique_topic("iso")
    create_topic(broker.bootstrap, topic, 1)
    with kwire.Conn.to(broker.bootstrap) as c:
        fill(c, topic, 0, 2, 100)
        for level, want in ((0, 0), (1, 0), (2, INVALID_REQUEST), (-1, INVALID_REQUEST)):
            _, [(_, _, err, records)] = fetch_v4(c, [(topic, 0, 0, MIB)], max_bytes=MIB,
                                                 isolation_level=level)
            assert err == want, level
            assert (len(records) > 0) == (want == 0)
            # ListOffsets v2: replica_id, isolation_level, topics.
            body = (i32(-1) + i8(level)
                    + array([string(topic) + array([i32(0) + i64(-1)])]))
            r = c.request(LIST_OFFSETS, 2, body)
            r.i32()  # throttle
            [(name, [(p, lerr, _, offset)])] = r.array(
                lambda r: (r.string(), r.array(lambda r: (r.i32(), r.i16(), r.i64(), r.i64()))))
            assert (name, p, lerr) == (topic, 0, want), level
            assert offset == (2 if want == 0 else -1)
