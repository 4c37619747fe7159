"""Restarts in the middle of work, with SIGTERM (drain, flush, exit 0) and kill -9.

Acknowledged data must survive both (acks=all is acknowledged only once fsynced),
a clean shutdown loses nothing at all, and idempotent-producer state (producer id,
epoch, last sequences) survives so that a producer carrying on after the restart
gets neither duplicates nor OUT_OF_ORDER_SEQUENCE_NUMBER.
"""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka.admin import ConfigResource

import kwire
from util import Delivery, admin, consume_all, create_topic, flush, producer, unique_topic

pytestmark = pytest.mark.timeout(300)

MODES = [pytest.param(False, id="sigterm"), pytest.param(True, id="kill9")]


def idem_batch(pid: int, epoch: int, seq: int, n: int, tag: str) -> bytes:
    recs = [kwire.Record(None, f"{tag}-{seq + i}".encode()) for i in range(n)]
    return kwire.record_batch(recs, producer_id=pid, producer_epoch=epoch, base_sequence=seq)


@pytest.mark.parametrize("hard", MODES)
def test_raw_idempotent_state_survives_restart(broker, hard):
    topic = unique_topic("rs-idem")
    create_topic(broker.bootstrap, topic, 1)
    with kwire.Conn.to(broker.bootstrap) as c:
        err, pid, epoch = c.init_producer_id()
        assert err == 0 and pid >= 0 and epoch >= 0
        r0 = c.produce(topic, 0, idem_batch(pid, epoch, 0, 5, "a"), acks=-1)
        r1 = c.produce(topic, 0, idem_batch(pid, epoch, 5, 5, "a"), acks=-1)
        assert (r0.error_code, r0.base_offset, r1.error_code, r1.base_offset) == (0, 0, 0, 5)
        # a retry of the last batch before the restart is a duplicate already
        d = c.produce(topic, 0, idem_batch(pid, epoch, 5, 5, "a"), acks=-1)
        assert d.error_code in (kwire.NONE, kwire.DUPLICATE_SEQUENCE_NUMBER), d
        if d.error_code == kwire.NONE:
            assert d.base_offset == 5, "a duplicate must get its original offset back"

    broker.restart(hard=hard)

    with kwire.Conn.to(broker.bootstrap) as c:
        # the producer retries its last batch after the restart: still a duplicate
        d = c.produce(topic, 0, idem_batch(pid, epoch, 5, 5, "a"), acks=-1)
        assert d.error_code in (kwire.NONE, kwire.DUPLICATE_SEQUENCE_NUMBER), d
        if d.error_code == kwire.NONE:
            assert d.base_offset == 5, "a duplicate must get its original offset back"
        # a gap in the sequence is refused
        gap = c.produce(topic, 0, idem_batch(pid, epoch, 20, 5, "a"), acks=-1)
        assert gap.error_code == kwire.OUT_OF_ORDER_SEQUENCE_NUMBER, gap
        # the next sequence continues the log
        nxt = c.produce(topic, 0, idem_batch(pid, epoch, 10, 5, "a"), acks=-1)
        assert (nxt.error_code, nxt.base_offset) == (0, 10), nxt
        f = c.fetch(topic, 0, 0)
        assert f.error_code == 0 and f.high_watermark == 15
        batches = kwire.parse_batches(f.records or b"")
        values = [r.value for b in batches for r in b.records]
        assert values == [f"a-{i}".encode() for i in range(15)]
        assert all(b.producer_id == pid and b.crc_ok() for b in batches)


@pytest.mark.parametrize("hard", MODES)
def test_producer_keeps_going_across_restart(broker, hard):
    """An idempotent librdkafka producer streams while the broker restarts under it.
    Every acknowledged message is there afterwards, exactly once and in order, and the
    producer never sees a fatal (sequence/epoch) error."""
    bs = broker.bootstrap
    topic = unique_topic("rs-stream")
    create_topic(bs, topic, 4)
    p, errors = producer(bs, enable_idempotence=True, acks="all", linger_ms=5,
                         message_timeout_ms=120000, retry_backoff_ms=50,
                         reconnect_backoff_ms=50, reconnect_backoff_max_ms=500)
    d = Delivery()
    total = 40_000
    stop = threading.Event()
    sent = [0]

    def pump():
        for i in range(total):
            if stop.is_set():
                break
            while True:
                try:
                    p.produce(topic, key=f"k{i % 16}".encode(), value=f"{i}".encode(),
                              partition=i % 4, on_delivery=d)
                    break
                except BufferError:
                    p.poll(0.05)
            sent[0] = i + 1
            if i % 100 == 0:
                p.poll(0)
                time.sleep(0.005)  # keep it streaming for a few seconds

    t = threading.Thread(target=pump)
    t.start()
    try:
        deadline = time.monotonic() + 60
        while len(d.ok) < 5000:
            assert time.monotonic() < deadline, f"only {len(d.ok)} acked before restart"
            time.sleep(0.05)
        acked_before = len(d.ok)
        broker.restart(hard=hard)
        t.join(180)
        assert not t.is_alive()
        flush(p, 120)
    finally:
        stop.set()
        t.join(5)

    assert not errors.fatal, [str(e) for e in errors.fatal]
    assert not d.failed, [(str(e), m.value()) for e, m in d.failed[:5]]
    assert len(d.ok) == sent[0] == total
    assert acked_before >= 5000

    msgs = consume_all(bs, topic, 4)
    values = [int(m.value) for m in msgs]
    assert len(values) == len(set(values)), "duplicates after restart"
    assert set(values) == set(range(total)), f"missing: {sorted(set(range(total)) - set(values))[:10]}"
    for part in range(4):
        in_part = [int(m.value) for m in msgs if m.partition == part]
        assert in_part == sorted(in_part), f"partition {part} out of order"
        assert [m.offset for m in msgs if m.partition == part] == list(range(len(in_part)))
    # acknowledged offsets are the offsets the data is found at
    where = {int(m.value): (m.partition, m.offset) for m in msgs}
    for m in d.ok:
        assert where[int(m.value())] == (m.partition(), m.offset())


def test_clean_shutdown_loses_nothing_even_with_acks_1(broker):
    """SIGTERM flushes and closes the logs: data acknowledged with acks=1 under a lazy
    flush policy is all there after the restart, and the restart is quick."""
    bs = broker.bootstrap
    topic = unique_topic("rs-clean")
    create_topic(bs, topic, 3, config={"flush.messages": "1000000", "flush.ms": "3600000"})
    p, _ = producer(bs, acks=1, enable_idempotence=False, linger_ms=5)
    d = Delivery()
    for i in range(30_000):
        p.produce(topic, value=f"{i}".encode(), partition=i % 3, on_delivery=d)
        if i % 1000 == 0:
            p.poll(0)
    flush(p)
    assert len(d.ok) == 30_000
    ready_s = broker.restart(hard=False)
    assert ready_s < 10, f"restart after a clean shutdown took {ready_s:.1f}s"
    msgs = consume_all(bs, topic, 3)
    assert sorted(int(m.value) for m in msgs) == list(range(30_000))


@pytest.mark.parametrize("hard", MODES)
def test_topics_and_configs_survive_restart(broker, hard):
    bs = broker.bootstrap
    topic = unique_topic("rs-meta")
    create_topic(bs, topic, 5, config={"retention.ms": "123456789",
                                       "message.timestamp.type": "LogAppendTime"})
    p, _ = producer(bs, acks="all")
    for part in range(5):
        p.produce(topic, value=b"x", partition=part)
    flush(p)
    broker.restart(hard=hard)
    a = admin(bs)
    md = a.list_topics(topic, timeout=10).topics[topic]
    assert md.error is None and len(md.partitions) == 5
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    cfg = a.describe_configs([res], request_timeout=30)[res].result(timeout=30)
    assert cfg["retention.ms"].value == "123456789"
    assert cfg["message.timestamp.type"].value == "LogAppendTime"
    msgs = consume_all(bs, topic, 5)
    assert sorted(m.partition for m in msgs) == [0, 1, 2, 3, 4]
    # the high watermark came back too: new data lands after the old
    p, _ = producer(bs, acks="all")
    d = Delivery()
    p.produce(topic, value=b"y", partition=0, on_delivery=d)
    flush(p)
    assert d.ok[0].offset() == 1


def test_old_data_read_from_disk_by_concurrent_consumers(broker):
    """After a restart the batch cache is empty: everything is read back from the segment
    files (aligned DMA reads), by two consumers at once with large fetch sizes."""
    bs = broker.bootstrap
    topic = unique_topic("rs-disk")
    create_topic(bs, topic, 2)
    per_partition = 24 * 1024  # 24 MiB of 1 KiB values per partition: above the 16 MiB cache
    p, _ = producer(bs, acks=1, enable_idempotence=False, linger_ms=20,
                    batch_size=1_000_000, compression_type="none")
    for i in range(2 * per_partition):
        while True:
            try:
                p.produce(topic, value=(b"%08d" % i) * 128, partition=i % 2)
                break
            except BufferError:
                p.poll(0.05)
    flush(p, 120)
    broker.restart(hard=False)

    results: dict[int, list] = {}
    errors: list[BaseException] = []

    def read(part: int) -> None:
        try:
            results[part] = consume_all(bs, topic, [part], timeout=120,
                                        max_partition_fetch_bytes=8 << 20,
                                        fetch_max_bytes=16 << 20)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=read, args=(part,)) for part in (0, 1)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(180)
    assert not errors, errors
    for part in (0, 1):
        msgs = results[part]
        assert len(msgs) == per_partition, f"partition {part}: {len(msgs)} of {per_partition}"
        assert [m.offset for m in msgs] == list(range(per_partition))
        for k, m in enumerate(msgs):
            assert m.value == (b"%08d" % (2 * k + part)) * 128, f"partition {part} offset {k}"


def test_orphaned_partition_data_is_freed_in_the_background(broker):
    """Directories under logs/ that belong to no topic (a topic deleted while the broker was
    stopping, or a deletion that was interrupted) are freed after a restart, through the paced
    deleter, while the broker serves."""
    topic = unique_topic("rs-orphan")
    create_topic(broker.bootstrap, topic, 1)
    p, errors = producer(broker.bootstrap, acks="all")
    for i in range(100):
        p.produce(topic, value=f"v{i}".encode())
    flush(p)
    assert not errors.fatal
    broker.stop()
    logs = broker.data_dir / "logs"
    orphan = logs / "gone-topic~0123456789abcdef0123456789abcdef"
    leftover = logs / "older-topic~fedcba9876543210fedcba9876543210.deleted-17"
    for d in (orphan, leftover):
        (d / "0").mkdir(parents=True)
        (d / "0" / "00000000000000000000.log").write_bytes(b"\x07" * (1 << 20))
    broker.start()
    assert not orphan.exists(), "the orphan is renamed away before the broker serves"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(".deleted-" in x.name for x in logs.iterdir()):
        time.sleep(0.1)
    left = sorted(x.name for x in logs.iterdir() if not x.name.startswith(topic))
    assert [x for x in left if "gone-topic" in x or "older-topic" in x] == [], left
    assert "removing partition data of a deleted topic" in broker.log_text()
    got = consume_all(broker.bootstrap, topic, 1)
    assert sorted(m.value for m in got) == sorted(f"v{i}".encode() for i in range(100))
