"""Consumer groups in a 3-broker cluster (issue 19): `__consumer_offsets` is a replicated
topic of the image and a group's coordinator is the leader of its partition. A group commits,
its coordinator broker is killed -9, FindCoordinator moves to the partition's new leader, the
group rejoins there and resumes exactly after its last commit: nothing lost, nothing
delivered again."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from util import admin, unique_topic

pytestmark = pytest.mark.timeout(120)

NO_DELAY = {"SHARDLOG_GROUP_INITIAL_REBALANCE_DELAY_MS": "0"}
OFFSETS = "__consumer_offsets"


def java_hash(s: str) -> int:
    """Java's String.hashCode masked to non-negative (Kafka's group -> partition hash)."""
    h = 0
    for unit in s.encode("utf-16-be").hex(" ", 2).split():
        h = (h * 31 + int(unit, 16)) & 0xFFFFFFFF
    return h & 0x7FFFFFFF


def consumer(bs: str, group: str) -> Consumer:
    return Consumer({"bootstrap.servers": bs, "group.id": group, "enable.auto.commit": False,
                     "auto.offset.reset": "earliest", "session.timeout.ms": 10000,
                     "heartbeat.interval.ms": 500, "fetch.wait.max.ms": 100,
                     "topic.metadata.refresh.interval.ms": 1000})


def read(c: Consumer, want: int, timeout: float) -> list[tuple[int, int, str]]:
    """(partition, offset, value) of up to `want` records, within `timeout` seconds."""
    out: list[tuple[int, int, str]] = []
    deadline = time.monotonic() + timeout
    while len(out) < want and time.monotonic() < deadline:
        for m in c.consume(num_messages=want - len(out), timeout=0.5):
            if m.error() is None:
                out.append((m.partition(), m.offset(), m.value().decode()))
    return out


def coordinator_of(bs: str, group: str) -> int:
    a = admin(bs)
    d = a.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=15)
    return d.coordinator.id


def test_offsets_survive_kill9_of_the_coordinator(make_cluster):
    c = make_cluster(env=NO_DELAY)
    t = unique_topic("cg")
    g = f"{t}-group"
    a = admin(c.bootstrap)
    a.create_topics([NewTopic(t, 2, 3)], request_timeout=20)[t].result(timeout=20)
    del a
    p = Producer({"bootstrap.servers": c.bootstrap, "acks": "all", "linger.ms": 5})
    for i in range(100):
        p.produce(t, value=f"v{i}".encode(), partition=i % 2)
    assert p.flush(20) == 0
    del p  # no producer left reconnecting to stopped brokers

    # The group consumes 60 records and commits exactly what it consumed.
    first = consumer(c.bootstrap, g)
    first.subscribe([t])
    got = read(first, 60, 25)
    assert len(got) == 60, got
    last: dict[int, int] = {}
    for part, off, _ in got:
        last[part] = max(last.get(part, -1), off)
    first.commit(offsets=[TopicPartition(t, part, off + 1) for part, off in last.items()],
                 asynchronous=False)
    first.close()

    # The coordinator is the leader of the group's __consumer_offsets partition.
    md = c.metadata([OFFSETS])["topics"][OFFSETS]
    n = len(md["partitions"])
    index = java_hash(g) % n
    leader = c.leader_of(OFFSETS, index)
    assert md["partitions"][index]["replicas"] and len(md["partitions"][index]["replicas"]) == 3, md
    old = coordinator_of(c.bootstrap, g)
    assert old == leader, (old, leader, md)

    c.kill(old)
    alive = ",".join(b.bootstrap for b in c.alive())

    def moved():
        new = c.leader_of(OFFSETS, index)
        return new if new is not None and new != old else None

    new = c.wait_until(moved, 40, f"a new leader of {OFFSETS} partition {index}")
    assert c.wait_until(lambda: coordinator_of(alive, g) == new, 20,
                        "FindCoordinator to name the new leader")

    # The group rejoins on the new coordinator: its committed offsets are intact and it
    # resumes right after them.
    second = consumer(alive, g)
    committed = second.committed([TopicPartition(t, part) for part in (0, 1)], timeout=15)
    assert {tp.partition: tp.offset for tp in committed} == {part: off + 1 for part, off in last.items()}
    second.subscribe([t])
    rest = read(second, 40, 25)
    extra = read(second, 1, 1.5)
    second.close()
    consumed = {(part, off) for part, off, _ in got}
    resumed = {(part, off) for part, off, _ in rest + extra}
    assert len(rest + extra) == 40 and not consumed & resumed, (sorted(resumed), last)
    assert sorted(v for _, _, v in got + rest) == sorted(f"v{i}" for i in range(100))


def test_snapshot_on_the_leader_then_failover(make_cluster):
    """The coordinator (leader) snapshots its partition and moves its log start; after kill -9
    of it the new leader, whose replica holds the snapshot too, loads the group with its last
    commit."""
    c = make_cluster(env={**NO_DELAY, "SHARDLOG_OFFSETS_SNAPSHOT_RECORDS": "100"})
    t = unique_topic("cgs")
    g = f"{t}-group"
    a = admin(c.bootstrap)
    a.create_topics([NewTopic(t, 1, 3)], request_timeout=20)[t].result(timeout=20)
    del a
    p = Producer({"bootstrap.servers": c.bootstrap, "acks": "all"})
    for i in range(300):
        p.produce(t, value=b"x", partition=0)
    assert p.flush(20) == 0
    del p  # no producer left reconnecting to stopped brokers
    # Simple (generation-less) commits, one record each: past the snapshot threshold.
    k = consumer(c.bootstrap, g)
    k.assign([TopicPartition(t, 0, 0)])
    for off in range(1, 251):
        k.commit(offsets=[TopicPartition(t, 0, off)], asynchronous=False)
    n = len(c.metadata([OFFSETS])["topics"][OFFSETS]["partitions"])
    index = java_hash(g) % n
    low, high = c.wait_until(
        lambda: (lambda w: w if w[0] > 0 else None)(
            k.get_watermark_offsets(TopicPartition(OFFSETS, index), timeout=5)),
        20, "the coordinator's snapshot to move the log start")
    assert 0 < low < high, (low, high)
    k.close()

    old = coordinator_of(c.bootstrap, g)
    c.kill(old)
    alive = ",".join(b.bootstrap for b in c.alive())
    c.wait_until(lambda: (lambda l: l is not None and l != old)(c.leader_of(OFFSETS, index)),
                 40, f"a new leader of {OFFSETS} partition {index}")
    k2 = consumer(alive, g)
    committed = c.wait_until(
        lambda: (lambda o: o if o >= 0 else None)(
            k2.committed([TopicPartition(t, 0)], timeout=10)[0].offset), 30,
        "the new coordinator's committed offset")
    k2.close()
    assert committed == 250
