"""Consumer groups and committed offsets against a real `shardlog`, with real clients.

Group members run as separate processes (this file re-executed in `worker` mode) so that
`kill -9` of a member is a real crash: its session must expire on the broker. Workers report
assignments and consumed records as JSON lines on stdout, which a reader thread collects.

The broker runs with `group_initial_rebalance_delay_ms = 0` and the default 6 s minimum
session timeout; members use `session.timeout.ms = 6000`, so every wait here is bounded by a
few session timeouts.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SESSION_MS = 6000
GROUP_ENV = {"SHARDLOG_GROUP_INITIAL_REBALANCE_DELAY_MS": "0"}


# ---------------------------------------------------------------------------------------------
# worker process


def worker_main(args: dict) -> None:
    from confluent_kafka import Consumer, KafkaError, KafkaException

    out_lock = threading.Lock()

    def emit(**kw):
        with out_lock:
            sys.stdout.write(json.dumps(kw) + "\n")
            sys.stdout.flush()

    conf = {
        "bootstrap.servers": args["bootstrap"],
        "group.id": args["group"],
        "session.timeout.ms": SESSION_MS,
        "heartbeat.interval.ms": 500,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": args.get("auto_commit", False),
        "fetch.wait.max.ms": 100,
        "socket.timeout.ms": 10000,
    }
    conf.update(args.get("conf", {}))
    c = Consumer(conf)
    current: set[int] = set()

    def on_assign(consumer, parts):
        if conf.get("partition.assignment.strategy") == "cooperative-sticky":
            current.update(p.partition for p in parts)
            consumer.incremental_assign(parts)
        else:
            current.clear()
            current.update(p.partition for p in parts)
            consumer.assign(parts)
        emit(ev="assigned", partitions=sorted(current), added=sorted(p.partition for p in parts))

    def on_revoke(consumer, parts):
        if conf.get("partition.assignment.strategy") == "cooperative-sticky":
            current.difference_update(p.partition for p in parts)
            consumer.incremental_unassign(parts)
        else:
            current.clear()
            consumer.unassign()
        emit(ev="revoked", partitions=sorted(current), removed=sorted(p.partition for p in parts))

    c.subscribe([args["topic"]], on_assign=on_assign, on_revoke=on_revoke)
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("now", True))
    mode = args.get("mode", "watch")
    try:
        while not stop["now"]:
            msgs = c.consume(num_messages=args.get("batch", 500), timeout=0.2)
            values = []
            for m in msgs:
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(m.error())
                values.append(int(m.value()))
            if mode == "process" and values:
                # "Processing" is reporting the values (and taking a while); only then commit
                # (at-least-once).
                time.sleep(args.get("delay_ms", 0) / 1000)
                emit(ev="records", values=values)
                try:
                    c.commit(asynchronous=False)
                except KafkaException as e:
                    # A rebalance may have taken the partitions; the records will be redelivered.
                    emit(ev="commit_failed", error=str(e))
            elif values:
                emit(ev="polled", count=len(values))
    finally:
        c.close()  # graceful: LeaveGroup (dynamic members)
        emit(ev="closed")


# ---------------------------------------------------------------------------------------------
# test side


class Worker:
    def __init__(self, bootstrap: str, group: str, topic: str, **args):
        a = {"bootstrap": bootstrap, "group": group, "topic": topic, **args}
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "worker", json.dumps(a)],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.events: list[dict] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                self.events.append(ev)

    def assignment(self) -> list[int] | None:
        with self.lock:
            for ev in reversed(self.events):
                if ev["ev"] in ("assigned", "revoked"):
                    return ev["partitions"]
        return None

    def count(self, kind: str) -> int:
        with self.lock:
            return sum(1 for e in self.events if e["ev"] == kind)

    def values(self) -> list[int]:
        with self.lock:
            return [v for e in self.events if e["ev"] == "records" for v in e["values"]]

    def kill9(self):
        self.proc.kill()
        self.proc.wait(10)
        self.thread.join(5)

    def stop(self, timeout: float = 20.0):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.thread.join(5)


def wait_assignment(workers: list[Worker], partitions: int, expect: list[int] | None = None,
                    timeout: float = 40.0) -> list[list[int]]:
    """Wait until the workers' assignments partition `range(partitions)` exactly once, with
    sizes `expect` (sorted) if given."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        a = [w.assignment() for w in workers]
        last = a
        if all(x is not None for x in a):
            flat = sorted(p for x in a for p in x)
            sizes = sorted(len(x) for x in a)
            if flat == list(range(partitions)) and (expect is None or sizes == sorted(expect)):
                return a
        time.sleep(0.2)
    raise AssertionError(f"assignment did not settle within {timeout}s: {last}")


@pytest.fixture
def gbroker(make_broker):
    return make_broker(env=GROUP_ENV)


def produce_ints(bootstrap: str, topic: str, n: int, partitions: int, start: int = 0) -> None:
    import util
    p, errors = util.producer(bootstrap, linger_ms=20, acks="all")
    for i in range(start, start + n):
        p.produce(topic, value=str(i).encode(), partition=i % partitions)
        if i % 10000 == 0:
            p.poll(0)
    util.flush(p)
    assert not errors.fatal, errors.errors


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=20)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        c.close()


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.mark.timeout(150)
def test_group_splits_and_rebalances_on_join_leave_and_crash(gbroker):
    import util
    bs, topic, group = gbroker.bootstrap, uniq("grp-split"), uniq("g-split")
    util.create_topic(bs, topic, partitions=6)
    ws = [Worker(bs, group, topic) for _ in range(3)]
    try:
        a = wait_assignment(ws, 6, expect=[2, 2, 2])
        # A fourth member joins: 6 partitions over 4 members.
        ws.append(Worker(bs, group, topic))
        wait_assignment(ws, 6, expect=[1, 1, 2, 2])
        # One leaves cleanly (LeaveGroup): back to 2 each.
        ws[3].stop()
        ws.pop()
        wait_assignment(ws, 6, expect=[2, 2, 2])
        # kill -9: its session (6 s) must expire and its partitions move to the others.
        victim = ws.pop(0)
        lost = victim.assignment()
        t0 = time.monotonic()
        victim.kill9()
        a = wait_assignment(ws, 6, expect=[3, 3], timeout=SESSION_MS / 1000 * 3 + 10)
        took = time.monotonic() - t0
        assert took < SESSION_MS / 1000 * 2 + 5, f"rebalance after the crash took {took:.1f}s"
        assert set(lost) <= set(a[0]) | set(a[1])
    finally:
        for w in ws:
            w.stop()


@pytest.mark.timeout(200)
def test_at_least_once_with_random_kills_loses_nothing(gbroker):
    import util
    bs, topic, group = gbroker.bootstrap, uniq("grp-alo"), uniq("g-alo")
    n, parts = 100_000, 6
    util.create_topic(bs, topic, partitions=parts)
    produce_ints(bs, topic, n, parts)
    rng = random.Random(int(os.environ.get("E2E_SEED", "7")))
    slow = {"mode": "process", "batch": 200, "delay_ms": 50}
    live = [Worker(bs, group, topic, **slow) for _ in range(3)]
    dead: list[Worker] = []
    unfinished_kills = 0
    deadline = time.monotonic() + 150
    kills = 0
    try:
        # Kill a random member (kill -9) a few times while they work, replacing each.
        while kills < 4 and time.monotonic() < deadline:
            time.sleep(rng.uniform(1.0, 3.0))
            victim = live.pop(rng.randrange(len(live)))
            victim.kill9()
            dead.append(victim)
            kills += 1
            if len({v for w in live + dead for v in w.values()}) < n:
                unfinished_kills += 1
            live.append(Worker(bs, group, topic, **slow))
        # Let the survivors finish.
        while time.monotonic() < deadline:
            seen = set()
            for w in live + dead:
                seen.update(w.values())
            if len(seen) >= n:
                break
            time.sleep(0.5)
        all_values = [v for w in live + dead for v in w.values()]
        seen = set(all_values)
        missing = set(range(n)) - seen
        dups = len(all_values) - len(seen)
        print(f"at-least-once: {n} records, {kills} kills ({unfinished_kills} mid-run), "
              f"{dups} duplicates")
        assert unfinished_kills >= 2, "the kills must hit members that are still working"
        assert not missing, f"{len(missing)} records lost, e.g. {sorted(missing)[:10]}"
        assert seen == set(range(n))
        # Committed offsets reach the end once the survivors are done.
        for w in live:
            w.stop()
        c = committed(bs, group, topic, parts)
        assert sum(c.values()) == n, c
    finally:
        for w in live:
            w.stop()


@pytest.mark.timeout(120)
def test_at_most_once_with_auto_commit(gbroker):
    """With enable.auto.commit, the offsets of records returned by poll are committed in the
    background whether or not they were processed: a crash after that loses them for the group
    (at most once), and a new member resumes after them."""
    import util
    bs, topic, group = gbroker.bootstrap, uniq("grp-amo"), uniq("g-amo")
    util.create_topic(bs, topic, partitions=2)
    produce_ints(bs, topic, 1000, 2)
    w = Worker(bs, group, topic, mode="watch", auto_commit=True,
               conf={"auto.commit.interval.ms": 200})
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and sum(committed(bs, group, topic, 2).values()) < 1000:
            time.sleep(0.5)
        assert sum(committed(bs, group, topic, 2).values()) == 1000
        w.kill9()  # crash before "processing": the records are gone for this group
        produce_ints(bs, topic, 10, 2, start=1000)
        w2 = Worker(bs, group, topic, mode="process")
        try:
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline and len(w2.values()) < 10:
                time.sleep(0.3)
            time.sleep(1)
            assert sorted(w2.values()) == list(range(1000, 1010))
        finally:
            w2.stop()
    finally:
        w.stop()


@pytest.mark.timeout(150)
def test_committed_offsets_survive_restart_sigterm_and_kill9(gbroker):
    from confluent_kafka import Consumer, TopicPartition
    import util
    bs, topic, group = gbroker.bootstrap, uniq("grp-restart"), uniq("g-restart")
    util.create_topic(bs, topic, partitions=3)
    produce_ints(bs, topic, 900, 3)

    def consume_and_commit(upto_each: int) -> list[int]:
        c = Consumer({"bootstrap.servers": bs, "group.id": group, "enable.auto.commit": False,
                      "auto.offset.reset": "earliest", "session.timeout.ms": SESSION_MS})
        got = []
        try:
            c.subscribe([topic])
            deadline = time.monotonic() + 40
            positions: dict[int, int] = {}
            while time.monotonic() < deadline and sorted(positions.values()) != [upto_each] * 3:
                for m in c.consume(100, timeout=0.3):
                    if m.error():
                        continue
                    p = m.partition()
                    if positions.get(p, -1) <= m.offset() < upto_each:
                        got.append(int(m.value()))
                        positions[p] = m.offset() + 1
            c.commit(offsets=[TopicPartition(topic, p, o) for p, o in positions.items()],
                     asynchronous=False)
        finally:
            c.close()
        return got

    first = consume_and_commit(100)
    assert len(first) == 300
    assert committed(bs, group, topic, 3) == {0: 100, 1: 100, 2: 100}
    gbroker.restart()  # SIGTERM
    assert committed(bs, group, topic, 3) == {0: 100, 1: 100, 2: 100}
    second = consume_and_commit(200)
    assert sorted(second) == sorted(set(range(300, 600))), "resumed where the group left off"
    gbroker.restart(hard=True)  # kill -9
    assert committed(bs, group, topic, 3) == {0: 200, 1: 200, 2: 200}
    third = consume_and_commit(300)
    assert sorted(third) == list(range(600, 900))


@pytest.mark.timeout(120)
def test_cooperative_sticky_incremental_rebalance(gbroker):
    import util
    bs, topic, group = gbroker.bootstrap, uniq("grp-coop"), uniq("g-coop")
    util.create_topic(bs, topic, partitions=6)
    conf = {"partition.assignment.strategy": "cooperative-sticky"}
    ws = [Worker(bs, group, topic, conf=conf) for _ in range(2)]
    try:
        before = wait_assignment(ws, 6, expect=[3, 3])
        ws.append(Worker(bs, group, topic, conf=conf))
        after = wait_assignment(ws, 6, expect=[2, 2, 2])
        # Sticky and incremental: the old members kept what they still own, only revoking
        # the partitions that moved — never everything at once, as the eager protocol would.
        for i in range(2):
            assert set(after[i]) <= set(before[i]), (before, after)
            with ws[i].lock:
                for e in ws[i].events:
                    if e["ev"] == "revoked":
                        assert e["partitions"], f"a revocation took every partition: {ws[i].events}"
    finally:
        for w in ws:
            w.stop()


@pytest.mark.timeout(120)
def test_static_membership_rejoin_keeps_assignment(gbroker):
    import util
    bs, topic, group = gbroker.bootstrap, uniq("grp-static"), uniq("g-static")
    util.create_topic(bs, topic, partitions=4)
    mk = lambda inst: Worker(bs, group, topic, conf={"group.instance.id": inst,  # noqa: E731
                                                       "session.timeout.ms": 10000})
    a, b = mk("inst-a"), mk("inst-b")
    try:
        first = wait_assignment([a, b], 4, expect=[2, 2])
        revokes_b = b.count("revoked")
        a.kill9()  # a static member that crashes and comes back within its session timeout
        a2 = mk("inst-a")
        try:
            again = wait_assignment([a2, b], 4, expect=[2, 2])
            assert again[0] == first[0], "the static member got its partitions back"
            assert again[1] == first[1]
            time.sleep(2)
            assert b.count("revoked") == revokes_b, "no rebalance for the other member"
        finally:
            a2.stop()
    finally:
        b.stop()
        a.stop()


@pytest.mark.timeout(90)
def test_kafka_python_group_consumer(gbroker):
    from kafka import KafkaConsumer, TopicPartition as KTP
    import util
    bs, topic, group = gbroker.bootstrap, uniq("grp-kpy"), uniq("g-kpy")
    util.create_topic(bs, topic, partitions=3)
    produce_ints(bs, topic, 300, 3)

    def run(expect: int, total: int) -> list[int]:
        c = KafkaConsumer(topic, bootstrap_servers=bs, group_id=group, auto_offset_reset="earliest",
                          enable_auto_commit=False, session_timeout_ms=SESSION_MS,
                          heartbeat_interval_ms=1000, consumer_timeout_ms=8000)
        got = []
        try:
            for m in c:
                got.append(int(m.value))
                if len(got) >= expect:
                    break
            c.commit()
            parts = {KTP(topic, p) for p in range(3)}
            offsets = {tp.partition: c.committed(tp) for tp in parts}
            assert sum(offsets.values()) == total, offsets
        finally:
            c.close()
        return got

    assert sorted(run(300, 300)) == list(range(300))
    produce_ints(bs, topic, 30, 3, start=300)
    assert sorted(run(30, 330)) == list(range(300, 330))


@pytest.mark.timeout(60)
def test_kcat_group_consumer_commits(gbroker):
    import util
    bs, topic, group = gbroker.bootstrap, uniq("grp-kcat"), uniq("g-kcat")
    util.create_topic(bs, topic, partitions=2)
    produce_ints(bs, topic, 200, 2)

    def kcat() -> list[str]:
        r = subprocess.run(["kcat", "-b", bs, "-G", group, topic, "-X", "auto.offset.reset=earliest", "-e", "-q",
                            "-X", "enable.auto.commit=true", "-X", "auto.commit.interval.ms=100",
                            "-X", f"session.timeout.ms={SESSION_MS}"],
                           capture_output=True, text=True, timeout=40)
        return [x for x in r.stdout.splitlines() if x]

    assert sorted(map(int, kcat())) == list(range(200))
    assert sum(committed(bs, group, topic, 2).values()) == 200
    produce_ints(bs, topic, 4, 2, start=200)
    assert sorted(map(int, kcat())) == list(range(200, 204))


@pytest.mark.timeout(90)
def test_admin_list_describe_offsets_delete_and_internal_topic(gbroker):
    from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, TopicPartition
    from confluent_kafka.admin import AdminClient
    import util
    bs, topic = gbroker.bootstrap, uniq("grp-admin")
    groups = [uniq("g-admin") for _ in range(3)]
    util.create_topic(bs, topic, partitions=2)
    produce_ints(bs, topic, 100, 2)
    for i, g in enumerate(groups):
        from confluent_kafka import Consumer
        c = Consumer({"bootstrap.servers": bs, "group.id": g, "enable.auto.commit": False})
        c.commit(offsets=[TopicPartition(topic, 0, 10 * (i + 1)), TopicPartition(topic, 1, 5)],
                 asynchronous=False)
        c.close()
    a = AdminClient({"bootstrap.servers": bs})
    listed = a.list_consumer_groups(request_timeout=20).result(timeout=30)
    ids = {g.group_id for g in listed.valid}
    assert set(groups) <= ids, ids
    described = a.describe_consumer_groups(groups, request_timeout=20)
    for g, f in described.items():
        d = f.result(timeout=30)
        assert d.group_id == g and str(d.state).endswith("EMPTY"), d
    # OffsetFetch for several groups (one request per group in librdkafka, spread over shards).
    for i, g in enumerate(groups):
        r = a.list_consumer_group_offsets([ConsumerGroupTopicPartitions(g)])[g].result(timeout=30)
        got = {tp.partition: tp.offset for tp in r.topic_partitions if tp.topic == topic}
        assert got == {0: 10 * (i + 1), 1: 5}, got
    # DeleteGroups: the offsets are gone.
    res = a.delete_consumer_groups(groups[:2], request_timeout=20)
    for g, f in res.items():
        f.result(timeout=30)
    assert committed(bs, groups[0], topic, 2) == {0: -1001, 1: -1001}
    assert committed(bs, groups[2], topic, 2) == {0: 30, 1: 5}
    # The internal topic: hidden from listings, visible by name, not writable by clients.
    md = a.list_topics(timeout=10)
    assert "__consumer_offsets" not in md.topics
    md = a.list_topics("__consumer_offsets", timeout=10)
    t = md.topics["__consumer_offsets"]
    assert t.error is None and len(t.partitions) == 4, t  # 2 x cores
    p, errors = util.producer(bs, message_timeout_ms=5000, retries=0)
    failed = []
    p.produce("__consumer_offsets", value=b"x", partition=0,
              on_delivery=lambda err, msg: failed.append(err))
    p.flush(15)
    assert failed and failed[0] is not None, failed
    assert failed[0].code() in (KafkaError.TOPIC_EXCEPTION, KafkaError._MSG_TIMED_OUT), failed[0]


if __name__ == "__main__" and len(sys.argv) >= 3 and sys.argv[1] == "worker":
    worker_main(json.loads(sys.argv[2]))
