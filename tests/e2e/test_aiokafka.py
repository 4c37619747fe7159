"""aiokafka (asyncio Kafka client for Python, its own protocol implementation) against a real
broker: the admin API, produce with acks 0/1/all and every codec, the idempotent producer,
a consumer group that rebalances when a second member joins, and committed offsets that a new
member resumes from."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic, RecordsToDelete
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from util import unique_topic

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def aio_broker(tmp_path_factory):
    """One broker for the module, without the initial rebalance delay (groups form at once)."""
    from conftest import Broker, _require_binary
    _require_binary()
    b = Broker(tmp_path_factory.mktemp("aiokafka"),
               env={"SHARDLOG_GROUP_INITIAL_REBALANCE_DELAY_MS": "0"})
    b.start()
    yield b
    b.teardown()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


async def until(what: str, timeout: float, check) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def create(bootstrap: str, topic: str, partitions: int) -> None:
    a = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await a.start()
    try:
        await a.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await a.close()


async def read_all(bootstrap: str, topic: str, partitions: int, expect: int) -> list:
    """Every record of the topic, read without a group (assign + seek to the beginning)."""
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100)
    await c.start()
    try:
        c.assign([TopicPartition(topic, p) for p in range(partitions)])
        await c.seek_to_beginning()
        out = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while len(out) < expect and loop.time() < deadline:
            got = await c.getmany(timeout_ms=200)
            for recs in got.values():
                out.extend(recs)
        # Anything past the expected count (a duplicate) would arrive now.
        for recs in (await c.getmany(timeout_ms=300)).values():
            out.extend(recs)
        return out
    finally:
        await c.stop()


def test_admin(aio_broker):
    t = unique_topic("aio-admin")

    async def go():
        a = AIOKafkaAdminClient(bootstrap_servers=aio_broker.bootstrap)
        await a.start()
        try:
            await a.create_topics([NewTopic(t, 3, 1, topic_configs={"retention.ms": "3600000"})])
            assert t in await a.list_topics()
            d = await a.describe_topics([t])
            assert d[0]["error_code"] == 0, d
            assert sorted(p["partition"] for p in d[0]["partitions"]) == [0, 1, 2]
            assert all(p["leader"] >= 0 for p in d[0]["partitions"]), d
            cfg = await a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t)])
            entries = {e[0]: e[1] for r in cfg for res in r.resources for e in res[4]}
            assert entries.get("retention.ms") == "3600000", entries
            await a.create_partitions({t: NewPartitions(total_count=5)})
            d = await a.describe_topics([t])
            assert len(d[0]["partitions"]) == 5, d
            # DeleteRecords: before offset 10 of partition 0, everything (-1) of partition 1.
            p = AIOKafkaProducer(bootstrap_servers=aio_broker.bootstrap)
            await p.start()
            try:
                for i in range(40):
                    await p.send_and_wait(t, f"r{i}".encode(), partition=i % 2)
            finally:
                await p.stop()
            low = await a.delete_records({TopicPartition(t, 0): RecordsToDelete(10),
                                          TopicPartition(t, 1): RecordsToDelete(-1)})
            assert {tp.partition: v for tp, v in low.items()} == {0: 10, 1: 20}, low
            await a.delete_topics([t])
            for _ in range(100):
                if t not in await a.list_topics():
                    break
                await asyncio.sleep(0.1)
            assert t not in await a.list_topics()
        finally:
            await a.close()

    run(go())


@pytest.mark.parametrize("acks", [0, 1, "all"])
def test_produce_acks(aio_broker, acks):
    t = unique_topic(f"aio-acks{acks}")
    n = 500

    async def go():
        await create(aio_broker.bootstrap, t, 2)
        p = AIOKafkaProducer(bootstrap_servers=aio_broker.bootstrap, acks=acks, linger_ms=5)
        await p.start()
        try:
            futs = [await p.send(t, key=f"k{i % 9}".encode(), value=f"v{i}".encode(),
                                 headers=[("n", str(i).encode())]) for i in range(n)]
            metas = await asyncio.gather(*futs)
        finally:
            await p.stop()
        if acks != 0:
            # Every acknowledged record got its own offset.
            offs = {(m.partition, m.offset) for m in metas}
            assert len(offs) == n and all(o >= 0 for _, o in offs)
        got = await read_all(aio_broker.bootstrap, t, 2, n)
        values = [r.value.decode() for r in got]
        assert sorted(values) == sorted(f"v{i}" for i in range(n)), f"{len(values)} records read"
        # Per key, the records are in the order they were sent.
        for part in (0, 1):
            seq = [int(r.value[1:]) for r in sorted(got, key=lambda r: r.offset) if r.partition == part]
            by_key: dict[bytes, list[int]] = {}
            for r in sorted((r for r in got if r.partition == part), key=lambda r: r.offset):
                by_key.setdefault(r.key, []).append(int(r.value[1:]))
            assert all(v == sorted(v) for v in by_key.values()), seq[:50]
        assert {dict(r.headers)["n"].decode() for r in got} == {str(i) for i in range(n)}

    run(go())


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_idempotent_producer(aio_broker, codec):
    """enable_idempotence: InitProducerId, sequence numbers, acks=all; exactly once per record."""
    t = unique_topic(f"aio-idem-{codec}")
    n = 400

    async def go():
        await create(aio_broker.bootstrap, t, 3)
        p = AIOKafkaProducer(bootstrap_servers=aio_broker.bootstrap, enable_idempotence=True,
                             compression_type=codec, linger_ms=5)
        await p.start()
        try:
            futs = [await p.send(t, key=f"k{i % 11}".encode(), value=f"v{i}".encode()) for i in range(n)]
            metas = await asyncio.gather(*futs)
            pid = p._sender._txn_manager.producer_id if p._sender._txn_manager else None
        finally:
            await p.stop()
        assert pid is not None and pid >= 0, "the idempotent producer got no producer id"
        assert len({(m.partition, m.offset) for m in metas}) == n
        got = await read_all(aio_broker.bootstrap, t, 3, n)
        assert sorted(r.value.decode() for r in got) == sorted(f"v{i}" for i in range(n))
        for part in range(3):
            recs = sorted((r for r in got if r.partition == part), key=lambda r: r.offset)
            assert [r.offset for r in recs] == list(range(len(recs))), "holes or duplicates"

    run(go())


class Recorder(ConsumerRebalanceListener):
    def __init__(self):
        self.assigned: list[list[int]] = []

    async def on_partitions_revoked(self, revoked):
        pass

    async def on_partitions_assigned(self, assigned):
        self.assigned.append(sorted(tp.partition for tp in assigned))


def test_group_rebalance_and_committed_offsets(aio_broker):
    t = unique_topic("aio-grp")
    g = unique_topic("aio-group")
    bs = aio_broker.bootstrap

    async def go():
        await create(bs, t, 4)
        p = AIOKafkaProducer(bootstrap_servers=bs, acks="all", linger_ms=5)
        await p.start()

        async def produce(lo, hi):
            futs = [await p.send(t, key=f"k{i}".encode(), value=f"v{i}".encode()) for i in range(lo, hi)]
            await asyncio.gather(*futs)

        def member(rec: Recorder) -> AIOKafkaConsumer:
            c = AIOKafkaConsumer(bootstrap_servers=bs, group_id=g, auto_offset_reset="earliest",
                                 enable_auto_commit=False, fetch_max_wait_ms=100,
                                 heartbeat_interval_ms=300, session_timeout_ms=10000)
            c.subscribe([t], listener=rec)
            return c

        seen: dict[str, list[str]] = {"a": [], "b": []}

        async def pump(name: str, c: AIOKafkaConsumer, stop: asyncio.Event):
            dirty = False
            while not stop.is_set():
                got = await c.getmany(timeout_ms=100)
                for recs in got.values():
                    seen[name].extend(r.value.decode() for r in recs)
                dirty = dirty or bool(got)
                if dirty:
                    try:
                        await c.commit()
                        dirty = False
                    except KafkaError:
                        pass  # a commit that meets a rebalance: the next round commits again

        ra, rb = Recorder(), Recorder()
        ca = member(ra)
        await ca.start()
        stop = asyncio.Event()
        ta = asyncio.create_task(pump("a", ca, stop))
        await until("a to be assigned", 20, lambda: ra.assigned)
        assert ra.assigned[-1] == [0, 1, 2, 3]
        await produce(0, 200)
        await until("a to read 200", 20, lambda: len(set(seen["a"])) >= 200)

        cb = member(rb)
        await cb.start()
        tb = asyncio.create_task(pump("b", cb, stop))
        await until("the rebalance", 30, lambda: rb.assigned and len(ra.assigned) >= 2
                    and len(ra.assigned[-1]) + len(rb.assigned[-1]) == 4)
        assert sorted(ra.assigned[-1] + rb.assigned[-1]) == [0, 1, 2, 3]
        assert ra.assigned[-1] and rb.assigned[-1], (ra.assigned, rb.assigned)
        await produce(200, 400)
        await until("all 400", 30, lambda: len(set(seen["a"]) | set(seen["b"])) >= 400)
        assert set(seen["a"]) | set(seen["b"]) == {f"v{i}" for i in range(400)}

        # The committed offsets reach the log ends.
        tps = [TopicPartition(t, i) for i in range(4)]
        ends = await ca.end_offsets(tps)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while True:
            committed = {tp.partition: await ca.committed(tp) for tp in tps}
            if committed == {tp.partition: ends[tp] for tp in tps} or loop.time() > deadline:
                break
            await asyncio.sleep(0.1)
        assert committed == {tp.partition: ends[tp] for tp in tps}, (committed, ends)
        stop.set()
        await asyncio.gather(ta, tb)
        assert sum(ends.values()) == 400
        await ca.stop()
        await cb.stop()

        a = AIOKafkaAdminClient(bootstrap_servers=bs)
        await a.start()
        try:
            assert g in [x[0] for x in await a.list_consumer_groups()]
            offs = await a.list_consumer_group_offsets(g)
            assert {tp.partition: m.offset for tp, m in offs.items()} == committed
        finally:
            await a.close()

        # A new member resumes after the committed offsets.
        await produce(400, 410)
        await p.stop()
        rc = Recorder()
        cc = member(rc)
        await cc.start()
        seen["c"] = []
        stop = asyncio.Event()
        tc = asyncio.create_task(pump("c", cc, stop))
        await until("the 10 new records", 20, lambda: len(seen["c"]) >= 10)
        await asyncio.sleep(0.3)
        stop.set()
        await tc
        await cc.stop()
        assert sorted(seen["c"]) == sorted(f"v{i}" for i in range(400, 410))

    run(go())
