"""Four client generations against a real 3-broker cluster: kcat (librdkafka), kafka-python,
aiokafka and kafkajs each produce to and consume (in a consumer group, with committed offsets
a later member resumes from) an RF=3 topic, bootstrapping from a broker that does not lead the
topic's partition 0, so the client has to follow Metadata to the leaders and FindCoordinator
to the group's coordinator."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import NewTopic

from conftest import Cluster, _require_binary
from util import admin, unique_topic

pytestmark = pytest.mark.timeout(90)

JS = Path(__file__).resolve().parent / "js"
NO_DELAY = {"SHARDLOG_GROUP_INITIAL_REBALANCE_DELAY_MS": "0"}


@pytest.fixture(scope="module")
def cl(tmp_path_factory):
    """One 3-broker cluster for the module, groups without the initial rebalance delay."""
    _require_binary()
    c = Cluster(tmp_path_factory.mktemp("cluster-clients"), env=NO_DELAY)
    try:
        c.start()
        yield c
    finally:
        c.teardown()


def rf3_topic(c: Cluster, prefix: str, partitions: int) -> str:
    """Creates an RF=3 topic and waits until every partition has a leader and three in-sync
    replicas in every broker's Metadata."""
    t = unique_topic(prefix)
    a = admin(c.bootstrap)  # kept alive until the result is in
    fs = a.create_topics([NewTopic(t, partitions, 3)], request_timeout=20)
    fs[t].result(timeout=20)
    del a

    def ready() -> bool:
        for b in c.alive():
            md = c.metadata([t], via=b.node_id)["topics"].get(t)
            if md is None or md["error_code"] != 0 or len(md["partitions"]) != partitions:
                return False
            if any(p["leader"] < 0 or len(p["isr"]) != 3 for p in md["partitions"]):
                return False
        return True

    c.wait_until(ready, 20, f"{t} to have leaders and 3 in-sync replicas")
    return t


def non_leader_bootstrap(c: Cluster, topic: str) -> str:
    """The address of a broker that does not lead partition 0 of `topic`."""
    leader = c.leader_of(topic, 0)
    b = next(b for b in c.brokers if b.node_id != leader)
    return b.bootstrap


# ---- kcat ---------------------------------------------------------------------------------

def kcat() -> str:
    path = shutil.which("kcat") or shutil.which("kafkacat")
    if path is None:
        pytest.fail("kcat is not installed (tests/run.sh installs it with apt-get)", pytrace=False)
    return path


def kcat_group_read(bs: str, group: str, topic: str, count: int) -> list[str]:
    """Reads `count` records as a member of `group` (balanced consumer); committing on close."""
    p = subprocess.run([kcat(), "-b", bs, "-G", group, "-X", "auto.offset.reset=earliest",
                        "-X", "auto.commit.interval.ms=200", "-c", str(count), "-q",
                        "-f", "%s\n", topic],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=40)
    assert p.returncode == 0, p.stderr.decode(errors="replace")[-3000:]
    return p.stdout.decode().split()


def test_kcat(cl):
    t = rf3_topic(cl, "cc-kcat", 3)
    bs = non_leader_bootstrap(cl, t)
    g = f"{t}-g"
    first = "\n".join(f"a{i}" for i in range(100)) + "\n"
    p = subprocess.run([kcat(), "-P", "-b", bs, "-t", t, "-X", "acks=all"], input=first.encode(),
                       stderr=subprocess.PIPE, timeout=30)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    got = kcat_group_read(bs, g, t, 100)
    assert sorted(got) == sorted(f"a{i}" for i in range(100))
    # The group committed on close: a new member reads only what comes after.
    more = "\n".join(f"b{i}" for i in range(20)) + "\n"
    p = subprocess.run([kcat(), "-P", "-b", bs, "-t", t, "-X", "acks=all"], input=more.encode(),
                       stderr=subprocess.PIPE, timeout=30)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    again = kcat_group_read(bs, g, t, 20)
    assert sorted(again) == sorted(f"b{i}" for i in range(20))


# ---- kafka-python -------------------------------------------------------------------------

def test_kafka_python(cl):
    from kafka import KafkaConsumer, KafkaProducer

    t = rf3_topic(cl, "cc-kpy", 3)
    bs = non_leader_bootstrap(cl, t)
    g = f"{t}-g"
    prod = KafkaProducer(bootstrap_servers=bs, acks="all", linger_ms=5)
    for i in range(200):
        prod.send(t, key=f"k{i}".encode(), value=f"v{i}".encode())
    prod.flush(timeout=20)

    def consume(expect: int) -> list[str]:
        c = KafkaConsumer(t, bootstrap_servers=bs, group_id=g, auto_offset_reset="earliest",
                          enable_auto_commit=False, fetch_max_wait_ms=100,
                          session_timeout_ms=10000, heartbeat_interval_ms=500)
        seen: list[str] = []
        deadline = time.monotonic() + 25
        while len(seen) < expect and time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=200).values():
                seen.extend(r.value.decode() for r in recs)
        c.commit()
        c.close()
        return seen

    seen = consume(200)
    assert sorted(seen) == sorted(f"v{i}" for i in range(200))
    for i in range(200, 210):
        prod.send(t, value=f"v{i}".encode())
    prod.flush(timeout=20)
    prod.close()
    assert sorted(consume(10)) == sorted(f"v{i}" for i in range(200, 210))


# ---- aiokafka -----------------------------------------------------------------------------

async def aio_scenario(bs: str, t: str) -> tuple[list[str], list[str]]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    g = f"{t}-g"
    prod = AIOKafkaProducer(bootstrap_servers=bs, acks="all")
    await prod.start()

    async def consume(expect: int) -> list[str]:
        c = AIOKafkaConsumer(t, bootstrap_servers=bs, group_id=g, auto_offset_reset="earliest",
                             enable_auto_commit=False, fetch_max_wait_ms=100,
                             session_timeout_ms=10000, heartbeat_interval_ms=500)
        await c.start()
        seen: list[str] = []
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 25
            while len(seen) < expect and loop.time() < deadline:
                for recs in (await c.getmany(timeout_ms=200)).values():
                    seen.extend(r.value.decode() for r in recs)
            await c.commit()
        finally:
            await c.stop()
        return seen

    try:
        for i in range(200):
            await prod.send(t, value=f"v{i}".encode())
        await prod.flush()
        first = await consume(200)
        for i in range(200, 210):
            await prod.send(t, value=f"v{i}".encode())
        await prod.flush()
        second = await consume(10)
    finally:
        await prod.stop()
    return first, second


def test_aiokafka(cl):
    t = rf3_topic(cl, "cc-aio", 3)
    bs = non_leader_bootstrap(cl, t)
    first, second = asyncio.run(asyncio.wait_for(aio_scenario(bs, t), 60))
    assert sorted(first) == sorted(f"v{i}" for i in range(200))
    assert sorted(second) == sorted(f"v{i}" for i in range(200, 210))


# ---- kafkajs ------------------------------------------------------------------------------

def test_kafkajs(cl):
    """kjs.js's group scenario (two members, a rebalance, committed offsets a third member
    resumes from) on an RF=3 topic created beforehand (kjs.js's own CreateTopics then finds
    it existing)."""
    if shutil.which("node") is None:
        pytest.fail("node is not installed (tests/run.sh expects Node 18+ and npm)", pytrace=False)
    if not (JS / "node_modules" / "kafkajs").is_dir():
        pytest.fail(f"kafkajs is not installed: run `npm ci` in {JS} (tests/run.sh does)", pytrace=False)
    t = rf3_topic(cl, "cc-kjs", 4)
    bs = non_leader_bootstrap(cl, t)
    env = dict(os.environ, KAFKAJS_NO_PARTITIONER_WARNING="1")
    p = subprocess.run(["node", str(JS / "kjs.js"), "group", bs, t],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=80, env=env, cwd=JS)
    assert p.returncode == 0, p.stderr.decode(errors="replace")[-6000:]
    r = json.loads(p.stdout.decode().strip().splitlines()[-1])
    # The two members split the four partitions at some generation (after a leaves, b may
    # get all four before it leaves too).
    assert any(x and y and sorted(x + y) == [0, 1, 2, 3]
               for x in r["assigned_a"] for y in r["assigned_b"]), r
    assert r["seen_unique"] == 400, r
    assert r["committed"] == [{"partition": e["partition"], "offset": e["high"]} for e in r["ends"]], r
    assert sum(e["high"] for e in r["ends"]) == 400, r
    assert sorted(r["after"]) == sorted(f"v{i}" for i in range(400, 410)), r["after"]
