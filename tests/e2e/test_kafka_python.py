"""kafka-python: a separate, pure-Python implementation of the protocol (it negotiates
its own API versions and encodes batches itself)."""

from __future__ import annotations

import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
from kafka.errors import (InvalidPartitionsError, TopicAlreadyExistsError,
                          UnknownTopicOrPartitionError)

from util import unique_topic

pytestmark = pytest.mark.timeout(180)

CODECS = [None, "gzip", "snappy", "lz4", "zstd"]


def admin(bs: str) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=bs, request_timeout_ms=30000, client_id="e2e-admin")


def wait_partitions(a: KafkaAdminClient, topic: str, n: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        topics = {t["name"]: t for t in a.describe_topics([topic])}
        t = topics.get(topic)
        if t and t["error_code"] == 0 and len(t["partitions"]) == n and all(
                p["leader_id"] >= 0 for p in t["partitions"]):
            return
        assert time.monotonic() < deadline, f"topic {topic} not ready: {t}"
        time.sleep(0.2)


def create(bs: str, topic: str, partitions: int, configs: dict | None = None) -> None:
    a = admin(bs)
    try:
        a.create_topics({topic: {"num_partitions": partitions, "replication_factor": 1,
                                 "configs": configs or {}}})
        wait_partitions(a, topic, partitions)
    finally:
        a.close()


def consume(bs: str, topic: str, partitions: int, timeout: float = 60) -> list:
    """Read every partition from the beginning to its current end offset."""
    c = KafkaConsumer(bootstrap_servers=bs, group_id=None, enable_auto_commit=False,
                      fetch_max_wait_ms=100, request_timeout_ms=30000)
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        end = c.end_offsets(tps)
        out = []
        deadline = time.monotonic() + timeout
        while any(c.position(tp) < end[tp] for tp in tps):
            assert time.monotonic() < deadline, \
                f"consume timed out: positions {[c.position(tp) for tp in tps]} end {end}"
            for recs in c.poll(timeout_ms=500).values():
                out.extend(recs)
        return out
    finally:
        c.close()


def produce(bs: str, topic: str, n: int, partitions: int, **conf) -> list:
    p = KafkaProducer(bootstrap_servers=bs, linger_ms=5, request_timeout_ms=30000, **conf)
    try:
        futs = [p.send(topic, key=f"k{i % 13}".encode(), value=f"v-{i:06d}".encode() * (1 + i % 7),
                       partition=i % partitions, headers=[("i", str(i).encode())])
                for i in range(n)]
        p.flush(60)
        return [f.get(timeout=60) for f in futs]
    finally:
        p.close(10)


def check(records: list, n: int, partitions: int) -> None:
    assert len(records) == n, f"consumed {len(records)}, produced {n}"
    seen = set()
    for r in records:
        i = int(dict(r.headers)["i"])
        assert i not in seen, f"duplicate {i}"
        seen.add(i)
        assert r.key == f"k{i % 13}".encode()
        assert r.value == f"v-{i:06d}".encode() * (1 + i % 7)
        assert r.partition == i % partitions
    for part in range(partitions):
        offs = [r.offset for r in records if r.partition == part]
        assert offs == list(range(len(offs)))


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c or "none")
def test_produce_consume_codec(module_broker, codec):
    bs = module_broker.bootstrap
    topic = unique_topic(f"kp-{codec or 'none'}")
    create(bs, topic, 3)
    md = produce(bs, topic, 1500, 3, compression_type=codec)
    assert sorted((m.partition, m.offset) for m in md) == \
        sorted((p, o) for p in range(3) for o in range(500))
    check(consume(bs, topic, 3), 1500, 3)


@pytest.mark.parametrize("acks", [0, 1, "all"])
def test_produce_acks(module_broker, acks):
    bs = module_broker.bootstrap
    topic = unique_topic(f"kp-acks{acks}")
    create(bs, topic, 2)
    produce(bs, topic, 1000, 2, acks=acks, enable_idempotence=False)
    if acks == 0:
        c = KafkaConsumer(bootstrap_servers=bs, group_id=None)
        tps = [TopicPartition(topic, p) for p in range(2)]
        deadline = time.monotonic() + 20
        while sum(c.end_offsets(tps).values()) < 1000:
            assert time.monotonic() < deadline, "acks=0 records did not all arrive"
            time.sleep(0.2)
        c.close()
    check(consume(bs, topic, 2), 1000, 2)


def test_idempotent_producer(module_broker):
    bs = module_broker.bootstrap
    topic = unique_topic("kp-idem")
    create(bs, topic, 3)
    md = produce(bs, topic, 6000, 3, enable_idempotence=True, acks="all",
                 max_in_flight_requests_per_connection=5, batch_size=4096)
    assert len(md) == 6000
    check(consume(bs, topic, 3), 6000, 3)


def test_offsets_for_times(module_broker):
    bs = module_broker.bootstrap
    topic = unique_topic("kp-time")
    create(bs, topic, 1)
    t0 = 1_600_000_000_000
    p = KafkaProducer(bootstrap_servers=bs, linger_ms=0)
    for i in range(50):
        p.send(topic, value=f"m{i}".encode(), partition=0, timestamp_ms=t0 + 10 * i)
    p.flush(30)
    p.close()
    tp = TopicPartition(topic, 0)
    c = KafkaConsumer(bootstrap_servers=bs, group_id=None)
    try:
        def at(ts):
            r = c.offsets_for_times({tp: ts})[tp]
            return None if r is None else (r.offset, r.timestamp)

        assert at(t0) == (0, t0)
        assert at(t0 + 105) == (11, t0 + 110)
        assert at(t0 + 490) == (49, t0 + 490)
        assert at(t0 + 491) is None
        assert c.beginning_offsets([tp]) == {tp: 0}
        assert c.end_offsets([tp]) == {tp: 50}
    finally:
        c.close()
    recs = consume(bs, topic, 1)
    assert [r.timestamp for r in recs] == [t0 + 10 * i for i in range(50)]
    assert all(r.timestamp_type == 0 for r in recs)  # CreateTime


def test_admin_topics_and_configs(module_broker):
    bs = module_broker.bootstrap
    topic = unique_topic("kp-admin")
    a = admin(bs)
    try:
        a.create_topics({topic: {"num_partitions": 2, "replication_factor": 1}}, validate_only=True)
        time.sleep(0.5)
        assert topic not in a.list_topics()

        a.create_topics({topic: {"num_partitions": 2, "replication_factor": 1,
                                 "configs": {"retention.ms": "86400000"}}})
        wait_partitions(a, topic, 2)
        assert topic in a.list_topics()
        with pytest.raises(TopicAlreadyExistsError):
            a.create_topics({topic: {"num_partitions": 2, "replication_factor": 1}})

        res = ConfigResource(ConfigResourceType.TOPIC, topic)
        cfg = a.describe_configs([res], config_filter="all")["topic"][topic]
        assert cfg["retention.ms"]["value"] == "86400000"
        assert cfg["retention.ms"]["config_source"] == "DYNAMIC_TOPIC_CONFIG"
        assert cfg["segment.bytes"]["config_source"] in ("DEFAULT_CONFIG", "STATIC_BROKER_CONFIG")
        # default filter: only what was modified
        modified = a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])["topic"][topic]
        assert set(modified) == {"retention.ms"}, modified

        out = a.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                              configs={"retention.bytes": "1000000",
                                                       "flush.messages": "1"})])
        assert out == {"topic": {topic: "OK"}}, out
        cfg = a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])["topic"][topic]
        assert {k: v["value"] for k, v in cfg.items()} == {
            "retention.ms": "86400000", "retention.bytes": "1000000", "flush.messages": "1"}

        a.create_partitions({topic: 4})
        wait_partitions(a, topic, 4)
        with pytest.raises(InvalidPartitionsError):
            a.create_partitions({topic: 4})  # not an increase

        a.delete_topics([topic])
        deadline = time.monotonic() + 15
        while topic in a.list_topics():
            assert time.monotonic() < deadline
            time.sleep(0.2)
        with pytest.raises(UnknownTopicOrPartitionError):
            a.delete_topics([topic])
    finally:
        a.close()
    # the re-created topic starts empty
    create(bs, topic, 1)
    assert consume(bs, topic, 1) == []


def test_api_version_negotiation(module_broker):
    """kafka-python infers a broker version from ApiVersions; it must come out recent
    enough for idempotence, zstd and incremental configs (>= 2.4)."""
    p = KafkaProducer(bootstrap_servers=module_broker.bootstrap)
    try:
        assert p.config["api_version"] >= (2, 4), p.config["api_version"]
    finally:
        p.close()
