"""Replication of partition data between real brokers: three processes (the `cluster` fixture),
an RF=3 topic, an acks=all idempotent producer (confluent-kafka), every replica's log
byte-identical once the followers caught up, then kill -9 of the leader: a new leader serves
every acknowledged record at its acknowledged offset."""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from util import unique_topic

pytestmark = [pytest.mark.timeout(240)]

RECORDS = 3000


def partition_gauge(admin_port: int, metric: str, topic: str, partition: int) -> float | None:
    """One partition's sample of `metric` from a broker's /metrics (None when absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    want = f'{metric}{{topic="{topic}",partition="{partition}"}} '
    for line in text.splitlines():
        if line.startswith(want):
            return float(line[len(want):])
    return None


def segment_bytes(data_dir: Path, topic: str) -> bytes:
    """The partition's segment files, concatenated in offset order, without the zeros that
    preallocation leaves past the data."""
    dirs = [d for d in (data_dir / "logs").iterdir() if d.name.startswith(topic)]
    assert len(dirs) == 1, dirs
    segs = sorted((dirs[0] / "0").glob("*.log"))
    assert segs, f"no segments in {dirs[0]}"
    return b"".join(s.read_bytes().rstrip(b"\0") for s in segs)


def test_rf3_acks_all_replicas_are_identical_and_survive_the_leader(cluster):
    topic = unique_topic("rep")
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    futures = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=3,
                                            config={"min.insync.replicas": "2"})])
    futures[topic].result(30)

    def placed():
        t = cluster.metadata([topic])["topics"].get(topic)
        if not t or t["error_code"] != 0:
            return None
        p = t["partitions"][0]
        return p if p["leader"] >= 0 and len(p["isr"]) == 3 else None

    p0 = cluster.wait_until(placed, 30, "the RF=3 topic to have a leader and a full ISR")
    assert sorted(p0["replicas"]) == [1, 2, 3]

    acked: dict[int, bytes] = {}
    failed: list[str] = []

    def delivered(err, msg):
        if err is not None:
            failed.append(str(err))
        else:
            acked[msg.offset()] = msg.value()

    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all",
                         "enable.idempotence": True, "linger.ms": 5,
                         "message.timeout.ms": 60000})
    for i in range(RECORDS):
        producer.produce(topic, value=f"record-{i:06d}".encode(), partition=0,
                         on_delivery=delivered)
        if i % 500 == 0:
            producer.poll(0)
    assert producer.flush(90) == 0, "every record answered"
    assert not failed, failed[:5]
    assert sorted(acked) == list(range(RECORDS)), "contiguous acknowledged offsets"

    # The followers catch up: every replica ends where the leader does, with the same bytes.
    def caught_up():
        ends = [partition_gauge(cluster[i].admin_port, "shardlog_partition_log_end_offset",
                                topic, 0) for i in (1, 2, 3)]
        return ends if ends == [RECORDS] * 3 else None

    cluster.wait_until(caught_up, 30, "every replica to hold every record")
    logs = {i: segment_bytes(cluster[i].data_dir, topic) for i in (1, 2, 3)}
    assert len(logs[1]) > RECORDS * 10
    assert logs[1] == logs[2] == logs[3], "replicas are byte-identical"

    old = p0["leader"]
    cluster.kill(old)

    def new_leader():
        for b in cluster.alive():
            try:
                leader = cluster.leader_of(topic, 0, via=b.node_id)
            except Exception:  # noqa: BLE001 - that broker is not answering yet
                continue
            if leader is not None and leader != old:
                return leader
        return None

    started = time.monotonic()
    leader = cluster.wait_until(new_leader, 60, "a new leader after kill -9 of the old one")
    failover_s = time.monotonic() - started
    print(f"new leader {leader} after {failover_s:.2f} s")

    consumer = Consumer({"bootstrap.servers": ",".join(b.bootstrap for b in cluster.alive()),
                         "group.id": unique_topic("g"), "enable.auto.commit": False,
                         "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(topic, 0, 0)])
    seen: dict[int, bytes] = {}
    deadline = time.monotonic() + 60
    while len(seen) < RECORDS and time.monotonic() < deadline:
        m = consumer.poll(1.0)
        if m is None or m.error():
            continue
        seen[m.offset()] = m.value()
    consumer.close()
    missing = [o for o in acked if seen.get(o) != acked[o]]
    assert not missing, f"{len(missing)} acknowledged records lost or changed, e.g. {missing[:5]}"

    # The new leader takes acks=all produces (min.insync 2 with the two left).
    after = Producer({"bootstrap.servers": ",".join(b.bootstrap for b in cluster.alive()),
                      "acks": "all", "message.timeout.ms": 30000})
    result: list = []
    after.produce(topic, value=b"after-failover", partition=0,
                  on_delivery=lambda err, msg: result.append((err, msg.offset())))
    assert after.flush(40) == 0
    assert result and result[0][0] is None, result
    assert result[0][1] == RECORDS
