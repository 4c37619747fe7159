"""confluent-kafka (PyPI wheel, bundled librdkafka 2.1x): produce/consume, codecs, acks,
idempotence, timestamps and ListOffsets, long poll, admin API."""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import (KafkaError, KafkaException, TopicPartition, Consumer,
                             TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME)
from confluent_kafka.admin import (AlterConfigOpType, ConfigEntry, ConfigResource, NewPartitions,
                                   NewTopic)

from util import (Delivery, admin, consume_all, create_topic, flush, producer, unique_topic,
                  wait_for_partitions, watermarks)

pytestmark = pytest.mark.timeout(180)

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def produce_n(bs: str, topic: str, n: int, partitions: int, **conf) -> Delivery:
    p, errors = producer(bs, **conf)
    d = Delivery()
    for i in range(n):
        p.produce(topic, key=f"key-{i % 37}".encode(), value=f"value-{i:07d}-".encode() + b"z" * (i % 300),
                  partition=i % partitions, headers=[("i", str(i).encode()), ("nil", None)],
                  on_delivery=d)
        if i % 1000 == 0:
            p.poll(0)
    flush(p)
    assert not errors.fatal, errors.fatal
    return d


def check_exact(msgs, n: int, partitions: int) -> None:
    assert len(msgs) == n, f"consumed {len(msgs)}, produced {n}"
    by_i = {}
    for m in msgs:
        hdr = dict(m.headers or [])
        i = int(hdr["i"])
        assert i not in by_i, f"duplicate message {i}"
        by_i[i] = m
        assert hdr["nil"] is None
        assert m.key == f"key-{i % 37}".encode()
        assert m.value == f"value-{i:07d}-".encode() + b"z" * (i % 300)
        assert m.partition == i % partitions
    # order inside each partition follows produce order, offsets contiguous from 0
    for part in range(partitions):
        in_part = [m for m in msgs if m.partition == part]
        assert [m.offset for m in in_part] == list(range(len(in_part)))
        idx = [int(dict(m.headers)["i"]) for m in in_part]
        assert idx == sorted(idx), f"partition {part} out of order"


@pytest.mark.parametrize("codec", CODECS)
def test_produce_consume_codec(module_broker, codec):
    bs = module_broker.bootstrap
    topic = unique_topic(f"ck-{codec}")
    create_topic(bs, topic, 3)
    d = produce_n(bs, topic, 3000, 3, compression_type=codec, acks="all", linger_ms=20)
    assert not d.failed, d.failed[:3]
    assert len(d.ok) == 3000
    check_exact(consume_all(bs, topic, 3), 3000, 3)


@pytest.mark.parametrize("acks", ["0", "1", "all"])
def test_produce_acks(module_broker, acks):
    bs = module_broker.bootstrap
    topic = unique_topic(f"ck-acks{acks}")
    create_topic(bs, topic, 2)
    d = produce_n(bs, topic, 2000, 2, acks=acks, enable_idempotence=False)
    assert not d.failed, d.failed[:3]
    if acks != "0":
        # acknowledged offsets are real and contiguous per partition
        for part in range(2):
            offs = sorted(m.offset() for m in d.ok if m.partition() == part)
            assert offs == list(range(1000)), f"partition {part}: acked offsets {offs[:5]}..."
    else:
        # acks=0: the broker sends no response; wait until the data shows up
        deadline = time.monotonic() + 20
        while sum(watermarks(bs, topic, p)[1] for p in range(2)) < 2000:
            assert time.monotonic() < deadline, "acks=0 messages did not all arrive"
            time.sleep(0.2)
    check_exact(consume_all(bs, topic, 2), 2000, 2)


def test_invalid_required_acks_is_rejected(module_broker):
    """acks=2 is not a valid value: INVALID_REQUIRED_ACKS for the produce."""
    bs = module_broker.bootstrap
    topic = unique_topic("ck-acks2")
    create_topic(bs, topic, 1)
    p, _ = producer(bs, acks=2, enable_idempotence=False, retries=0, message_timeout_ms=15000)
    d = Delivery()
    p.produce(topic, value=b"x", on_delivery=d)
    p.flush(20)
    assert len(d.failed) == 1, (d.ok, d.failed)
    assert d.failed[0][0].code() == KafkaError.INVALID_REQUIRED_ACKS


def test_idempotent_producer(module_broker):
    bs = module_broker.bootstrap
    topic = unique_topic("ck-idem")
    create_topic(bs, topic, 4)
    d = produce_n(bs, topic, 20000, 4, enable_idempotence=True, acks="all",
                  max_in_flight_requests_per_connection=5, linger_ms=2, batch_num_messages=200)
    assert not d.failed, d.failed[:3]
    check_exact(consume_all(bs, topic, 4), 20000, 4)


def test_message_too_large(module_broker):
    """A batch above the topic's max.message.bytes gets MESSAGE_TOO_LARGE; smaller ones pass."""
    bs = module_broker.bootstrap
    topic = unique_topic("ck-large")
    create_topic(bs, topic, 1, config={"max.message.bytes": "100000"})
    p, _ = producer(bs, message_max_bytes=10_000_000, retries=0, enable_idempotence=False,
                    compression_type="none")
    d = Delivery()
    p.produce(topic, value=b"a" * 200_000, on_delivery=d)
    flush(p)
    p.produce(topic, value=b"b" * 50_000, on_delivery=d)
    flush(p)
    assert [e.code() for e, _ in d.failed] == [KafkaError.MSG_SIZE_TOO_LARGE]
    assert len(d.ok) == 1 and d.ok[0].offset() == 0
    msgs = consume_all(bs, topic, 1)
    assert [m.value for m in msgs] == [b"b" * 50_000]


def test_create_time_and_offsets_for_times(module_broker):
    bs = module_broker.bootstrap
    topic = unique_topic("ck-time")
    create_topic(bs, topic, 1)
    t0 = 1_700_000_000_000
    p, _ = producer(bs, linger_ms=0, batch_num_messages=10)
    for i in range(100):
        p.produce(topic, value=f"m{i}".encode(), partition=0, timestamp=t0 + i * 1000)
    flush(p)
    msgs = consume_all(bs, topic, 1)
    assert [m.timestamp for m in msgs] == [(TIMESTAMP_CREATE_TIME, t0 + i * 1000) for i in range(100)]

    c = Consumer({"bootstrap.servers": bs, "group.id": "e2e-times", "enable.auto.commit": False})
    try:
        def lookup(ts):
            (tp,) = c.offsets_for_times([TopicPartition(topic, 0, ts)], timeout=10)
            assert tp.error is None, tp.error
            return tp.offset

        assert lookup(t0) == 0
        assert lookup(t0 - 10_000) == 0
        assert lookup(t0 + 50_000) == 50
        assert lookup(t0 + 50_001) == 51  # first offset with timestamp >= T
        assert lookup(t0 + 99_000) == 99
        assert lookup(t0 + 99_001) == -1  # none: librdkafka reports OFFSET_END (-1)
        assert c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False) == (0, 100)
    finally:
        c.close()


def test_log_append_time(module_broker):
    bs = module_broker.bootstrap
    topic = unique_topic("ck-lat")
    create_topic(bs, topic, 1, config={"message.timestamp.type": "LogAppendTime"})
    p, _ = producer(bs)
    before = int(time.time() * 1000)
    for i in range(10):
        p.produce(topic, value=b"x", timestamp=1_000_000_000_000)  # an old CreateTime
    flush(p)
    after = int(time.time() * 1000)
    msgs = consume_all(bs, topic, 1)
    assert len(msgs) == 10
    for m in msgs:
        kind, ts = m.timestamp
        assert kind == TIMESTAMP_LOG_APPEND_TIME, m.timestamp
        assert before - 1000 <= ts <= after + 1000, (before, ts, after)


def test_long_poll_is_woken_by_produce(module_broker):
    """A fetch waiting on an empty partition (fetch.wait.max.ms=10s) returns as soon as
    data is appended, not when max_wait_ms expires."""
    bs = module_broker.bootstrap
    topic = unique_topic("ck-poll")
    create_topic(bs, topic, 1)
    c = Consumer({"bootstrap.servers": bs, "group.id": "e2e-poll", "enable.auto.commit": False,
                  "fetch.wait.max.ms": 10000, "fetch.min.bytes": 1})
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        assert c.poll(2.0) is None  # nothing there yet; now a fetch is parked on the broker
        time.sleep(1.0)
        p, _ = producer(bs, linger_ms=0)
        sent = time.monotonic()
        p.produce(topic, value=b"wake-up")
        flush(p)
        m = None
        while m is None and time.monotonic() - sent < 15:
            m = c.poll(0.1)
        latency = time.monotonic() - sent
        assert m is not None and m.error() is None and m.value() == b"wake-up"
        assert latency < 3.0, f"message took {latency:.1f}s: the fetch was not woken by the append"
    finally:
        c.close()


def test_fetch_max_bytes_still_returns_a_big_batch(module_broker):
    """A batch larger than max.partition.fetch.bytes is still returned whole (KIP-74),
    so a consumer never gets stuck."""
    bs = module_broker.bootstrap
    topic = unique_topic("ck-maxb")
    create_topic(bs, topic, 1)
    p, _ = producer(bs, linger_ms=50, compression_type="none")
    for i in range(50):
        p.produce(topic, value=bytes([i]) * 10_000)
    flush(p)
    msgs = consume_all(bs, topic, 1, max_partition_fetch_bytes=1024, fetch_max_bytes=1024,
                       message_max_bytes=1000)
    assert [m.value for m in msgs] == [bytes([i]) * 10_000 for i in range(50)]


def test_produce_to_unknown_partition_fails(module_broker):
    bs = module_broker.bootstrap
    topic = unique_topic("ck-nopart")
    create_topic(bs, topic, 1)
    p, _ = producer(bs, message_timeout_ms=5000)
    d = Delivery()
    p.produce(topic, value=b"x", partition=7, on_delivery=d)
    p.flush(15)
    assert len(d.failed) == 1
    assert d.failed[0][0].code() in (KafkaError._UNKNOWN_PARTITION, KafkaError.UNKNOWN_TOPIC_OR_PART)


def test_auto_create_on_produce(module_broker):
    bs = module_broker.bootstrap
    topic = unique_topic("ck-auto")
    d = produce_n(bs, topic, 10, 1)
    assert not d.failed and len(d.ok) == 10
    check_exact(consume_all(bs, topic, 1), 10, 1)


# ---------------------------------------------------------------------------
# Admin API


def result(futs: dict, key):
    return futs[key].result(timeout=30)


def describe(a, topic) -> dict:
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    entries = result(a.describe_configs([res], request_timeout=30), res)
    return {k: v.value for k, v in entries.items()}


def test_admin_create_describe_alter_delete(module_broker):
    bs = module_broker.bootstrap
    a = admin(bs)
    topic = unique_topic("ck-admin")

    # validate_only creates nothing
    result(a.create_topics([NewTopic(topic, 3, 1)], validate_only=True, request_timeout=30), topic)
    time.sleep(0.5)
    assert topic not in a.list_topics(timeout=10).topics

    result(a.create_topics([NewTopic(topic, 3, 1, config={"retention.ms": "3600000",
                                                          "segment.bytes": "1048576"})],
                           request_timeout=30), topic)
    wait_for_partitions(bs, topic, 3)

    # creating it again: TOPIC_ALREADY_EXISTS
    with pytest.raises(KafkaException) as e:
        result(a.create_topics([NewTopic(topic, 3, 1)], request_timeout=30), topic)
    assert e.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS

    cfg = describe(a, topic)
    assert cfg["retention.ms"] == "3600000"
    assert cfg["segment.bytes"] == "1048576"
    for name in ("max.message.bytes", "message.timestamp.type",
                 "retention.bytes", "flush.messages", "flush.ms"):
        assert name in cfg, f"DescribeConfigs lacks {name}: {sorted(cfg)}"

    # IncrementalAlterConfigs
    res = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("max.message.bytes", "2000000", incremental_operation=AlterConfigOpType.SET),
    ])
    result(a.incremental_alter_configs([res], request_timeout=30), res)
    cfg = describe(a, topic)
    assert (cfg["retention.ms"], cfg["max.message.bytes"]) == ("7200000", "2000000")

    # legacy AlterConfigs replaces the whole set of dynamic configs
    res = ConfigResource(ConfigResource.Type.TOPIC, topic, set_config={"retention.bytes": "123456789"})
    result(a.alter_configs([res], request_timeout=30), res)
    cfg = describe(a, topic)
    assert cfg["retention.bytes"] == "123456789"
    assert cfg["retention.ms"] != "7200000", "AlterConfigs must reset configs it does not name"

    # a bad value is refused with INVALID_CONFIG and changes nothing
    res = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "not-a-number", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException) as e:
        result(a.incremental_alter_configs([res], request_timeout=30), res)
    assert e.value.args[0].code() == KafkaError.INVALID_CONFIG
    assert describe(a, topic)["retention.bytes"] == "123456789"

    # delete: gone from metadata, describe says unknown
    result(a.delete_topics([topic], request_timeout=30), topic)
    deadline = time.monotonic() + 15
    while topic in a.list_topics(timeout=10).topics:
        assert time.monotonic() < deadline, "deleted topic still in metadata"
        time.sleep(0.2)
    with pytest.raises(KafkaException) as e:
        result(a.delete_topics([topic], request_timeout=30), topic)
    assert e.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_admin_create_topic_errors(module_broker):
    a = admin(module_broker.bootstrap)
    bad_parts = unique_topic("ck-bad")
    with pytest.raises(KafkaException) as e:
        result(a.create_topics([NewTopic(bad_parts, 0, 1)], request_timeout=30), bad_parts)
    assert e.value.args[0].code() == KafkaError.INVALID_PARTITIONS
    bad_rf = unique_topic("ck-bad")
    with pytest.raises(KafkaException) as e:
        result(a.create_topics([NewTopic(bad_rf, 1, 3)], request_timeout=30), bad_rf)
    assert e.value.args[0].code() == KafkaError.INVALID_REPLICATION_FACTOR
    bad_cfg = unique_topic("ck-bad")
    with pytest.raises(KafkaException) as e:
        result(a.create_topics([NewTopic(bad_cfg, 1, 1, config={"retention.ms": "soon"})],
                               request_timeout=30), bad_cfg)
    assert e.value.args[0].code() == KafkaError.INVALID_CONFIG
    bad_name = "bad/name"
    with pytest.raises(KafkaException) as e:
        result(a.create_topics([NewTopic(bad_name, 1, 1)], request_timeout=30), bad_name)
    assert e.value.args[0].code() == KafkaError.TOPIC_EXCEPTION
    names = a.list_topics(timeout=10).topics
    assert not {bad_parts, bad_rf, bad_cfg, bad_name} & set(names)


def test_admin_create_partitions(module_broker):
    bs = module_broker.bootstrap
    a = admin(bs)
    topic = unique_topic("ck-parts")
    create_topic(bs, topic, 2)
    produce_n(bs, topic, 100, 2)

    result(a.create_partitions([NewPartitions(topic, 5)], request_timeout=30), topic)
    wait_for_partitions(bs, topic, 5)

    # fewer partitions than now: INVALID_PARTITIONS
    with pytest.raises(KafkaException) as e:
        result(a.create_partitions([NewPartitions(topic, 3)], request_timeout=30), topic)
    assert e.value.args[0].code() == KafkaError.INVALID_PARTITIONS

    # the new partitions take data, the old data is intact
    p, _ = producer(bs)
    d = Delivery()
    for part in range(5):
        p.produce(topic, value=f"new-{part}".encode(), partition=part, on_delivery=d)
    flush(p)
    assert not d.failed, d.failed
    assert sorted((m.partition(), m.offset()) for m in d.ok) == \
        [(0, 50), (1, 50), (2, 0), (3, 0), (4, 0)]
    msgs = consume_all(bs, topic, 5)
    assert len(msgs) == 105


def test_describe_cluster(module_broker):
    a = admin(module_broker.bootstrap)
    desc = a.describe_cluster(request_timeout=30).result(timeout=30)
    assert len(desc.nodes) == 1
    node = desc.nodes[0]
    assert (node.host, node.port) == ("127.0.0.1", module_broker.port)
    assert desc.controller is not None and desc.controller.id == node.id
    assert desc.cluster_id


def test_delete_records(module_broker):
    bs = module_broker.bootstrap
    a = admin(bs)
    topic = unique_topic("ck-delrec")
    create_topic(bs, topic, 1)
    p, _ = producer(bs, linger_ms=0, batch_num_messages=1)
    for i in range(100):
        p.produce(topic, value=f"{i}".encode())
    flush(p)
    futs = a.delete_records([TopicPartition(topic, 0, 60)], request_timeout=30)
    (tp,) = [f.result(timeout=30) for f in futs.values()]
    assert tp.low_watermark == 60
    assert watermarks(bs, topic, 0) == (60, 100)
    msgs = consume_all(bs, topic, 1)
    assert [m.value for m in msgs] == [f"{i}".encode() for i in range(60, 100)]


def test_many_concurrent_clients(module_broker):
    """Several producers and consumers at once, on partitions spread over shards."""
    bs = module_broker.bootstrap
    topic = unique_topic("ck-conc")
    create_topic(bs, topic, 8)
    errors = []

    def work(w):
        try:
            p, _ = producer(bs, linger_ms=5)
            d = Delivery()
            for i in range(2000):
                p.produce(topic, key=f"w{w}".encode(), value=f"{w}:{i}".encode(), on_delivery=d)
            flush(p)
            assert not d.failed
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert not errors, errors
    msgs = consume_all(bs, topic, 8)
    assert len(msgs) == 8000
    for w in range(4):
        seq = [int(m.value.split(b":")[1]) for m in msgs if m.key == f"w{w}".encode()]
        assert seq == list(range(2000)), f"worker {w}: order or count wrong"
