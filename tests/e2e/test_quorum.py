"""The controller quorum across three real `shardlog` processes (voters 1, 2, 3).

Ports follow the cluster scheme: broker i with base B has Kafka B+10(i-1), controller
B+10(i-1)+1, admin HTTP B+10(i-1)+2. The processes are spawned here (not through the shared
cluster fixture), so this file stands alone.

* a topic created on a follower broker is forwarded to the controller leader and shows on
  all three brokers right after CreateTopics returns;
* kill -9 of the controller leader: another voter leads and a topic can still be created
  (one voter lost);
* two voters killed: creation fails (NOT_CONTROLLER / timed out) while the remaining broker
  still serves produce and fetch on an existing topic;
* both restarted: the quorum recovers and creation works again.
"""

from __future__ import annotations

import random
import re
import socket
import struct
import time
from pathlib import Path

import pytest

import kwire
from conftest import Broker

NOT_CONTROLLER = 41
REQUEST_TIMED_OUT = 7


def ports_free(base: int, n: int) -> bool:
    for p in range(base, base + 10 * n):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                return False
    return True


def pick_base(n: int) -> int:
    for _ in range(200):
        base = random.randrange(20000, 60000, 10)
        if ports_free(base, n):
            return base
    raise RuntimeError("no free port range")


class Node(Broker):
    """A broker with its id and the cluster's fixed ports."""

    def __init__(self, workdir: Path, i: int, base: int, voters: str):
        self.i = i
        self.base = base
        self.voters = voters
        super().__init__(workdir, name=f"node{i}", cores=1)
        self.port = base + 10 * (i - 1)

    def argv(self) -> list[str]:
        b = self.base + 10 * (self.i - 1)
        return [*super().argv(), "--node-id", str(self.i),
                "--controller-listen", f"127.0.0.1:{b + 1}",
                "--voters", self.voters, "--admin-listen", f"127.0.0.1:{b + 2}"]

    def controller_leader(self) -> int | None:
        """The leader this node's log says it is (from its log lines), if it leads."""
        m = re.findall(r"quorum role.*?role=(\w+).*?leader=(\d+)", self.log_text())
        return int(m[-1][1]) if m else None


def string(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def create_topic(n: Node, name: str, partitions: int = 1, timeout: float = 15.0) -> int:
    """CreateTopics v2 for one topic on `n`; returns its error code."""
    body = (struct.pack(">i", 1) + string(name) + struct.pack(">ihii", partitions, 1, 0, 0)
            + struct.pack(">ib", 10000, 0))
    with kwire.Conn(n.host, n.port, timeout=timeout) as c:
        r = c.request(19, 2, body)
        r.i32()  # throttle_time_ms
        topics = r.array(lambda r: (r.string(), r.i16(), r.string()))
    assert topics and topics[0][0] == name, topics
    return topics[0][1]


def has_topic(n: Node, name: str) -> bool:
    with kwire.Conn(n.host, n.port, timeout=5) as c:
        md = c.metadata([name])
    t = md["topics"].get(name)
    return t is not None and t["error_code"] == 0


def leader_of(nodes: list[Node], timeout: float = 15.0) -> Node:
    """The node whose log last said it leads (each node logs its role changes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for n in nodes:
            if n.alive():
                m = re.findall(r"quorum role.*?role=(\w+)", n.log_text())
                if m and m[-1] == "Leader":
                    return n
        time.sleep(0.1)
    raise AssertionError("no controller leader: " + "\n".join(n.describe() for n in nodes))


@pytest.fixture
def quorum_nodes(tmp_path: Path):
    base = pick_base(3)
    voters = ",".join(f"{i}@127.0.0.1:{base + 10 * (i - 1) + 1}" for i in (1, 2, 3))
    nodes = [Node(tmp_path, i, base, voters) for i in (1, 2, 3)]
    for n in nodes:
        n.start(wait=False)
    try:
        for n in nodes:
            n.wait_ready()
        yield nodes
    finally:
        for n in nodes:
            n.teardown()


def test_forwarding_failover_and_loss_of_quorum(quorum_nodes: list[Node]):
    nodes = quorum_nodes
    leader = leader_of(nodes)
    follower = next(n for n in nodes if n is not leader)

    # Created on a follower: forwarded, and on every broker once CreateTopics returned.
    # Three partitions over three brokers: placement gives each broker one to lead.
    assert create_topic(follower, "q-one", partitions=3) == 0
    for n in nodes:
        assert has_topic(n, "q-one"), n.name

    # Data on an existing topic, produced to the broker that will survive, on the partition
    # it leads.
    survivor = follower
    with kwire.Conn(survivor.host, survivor.port) as c:
        parts = c.metadata(["q-one"])["topics"]["q-one"]["partitions"]
        led = [p["partition"] for p in parts if p["leader"] == survivor.i]
        assert len(led) == 1, parts
        part = led[0]
        r = c.produce("q-one", part, kwire.record_batch([kwire.Record(None, b"before")]), acks=-1)
        assert r.error_code == 0, r

    # One voter lost (the leader): a new leader is elected and creation still works.
    leader.kill9()
    rest = [n for n in nodes if n is not leader]
    t0 = time.monotonic()
    new_leader = leader_of(rest, timeout=10)
    assert new_leader is not leader
    elected_s = time.monotonic() - t0
    assert create_topic(survivor, "q-two") == 0
    for n in rest:
        assert has_topic(n, "q-two"), n.name

    # Two lost: no metadata change commits; the survivor still serves produce and fetch.
    other = next(n for n in rest if n is not survivor)
    other.kill9()
    t0 = time.monotonic()
    code = create_topic(survivor, "q-three", timeout=30)
    assert code in (NOT_CONTROLLER, REQUEST_TIMED_OUT), code
    assert time.monotonic() - t0 < 20, "bounded wait"
    with kwire.Conn(survivor.host, survivor.port) as c:
        r = c.produce("q-one", part, kwire.record_batch([kwire.Record(None, b"during")]),
                      acks=-1)
        assert r.error_code == 0, r
        f = c.fetch("q-one", part, 0)
        assert f.error_code == 0, f
        assert b"before" in f.records and b"during" in f.records

    # Both back: the quorum recovers; the restarted ones caught up on q-two.
    leader.start(wait=False)
    other.start(wait=False)
    leader.wait_ready()
    other.wait_ready()
    leader_of(nodes, timeout=15)
    deadline = time.monotonic() + 20
    code = None
    while time.monotonic() < deadline:
        code = create_topic(survivor, "q-four")
        if code == 0:
            break
        time.sleep(0.5)
    assert code == 0, code
    for n in nodes:
        deadline = time.monotonic() + 10
        while not (has_topic(n, "q-two") and has_topic(n, "q-four")):
            assert time.monotonic() < deadline, n.describe()
            time.sleep(0.2)
    print(f"new controller leader after kill -9 seen in {elected_s:.2f} s")


def live_brokers(n: Node) -> set[int]:
    with kwire.Conn(n.host, n.port, timeout=5) as c:
        return {b["node_id"] for b in c.metadata([])["brokers"]}


def wait_brokers(n: Node, want: set[int], timeout: float) -> float:
    t0 = time.monotonic()
    got = None
    while time.monotonic() - t0 < timeout:
        got = live_brokers(n)
        if got == want:
            return time.monotonic() - t0
        time.sleep(0.05)
    raise AssertionError(f"{n.name}: live brokers {got}, want {want}\n{n.describe()}")


def test_registration_fencing_and_controlled_shutdown(quorum_nodes: list[Node]):
    """Every broker registers and is unfenced (Metadata lists it on every broker); a broker
    killed with -9 is fenced once its session (1.8 s) runs out; restarted, it registers again;
    SIGTERM is a controlled shutdown the controller acknowledges before the process exits."""
    nodes = quorum_nodes
    for n in nodes:
        wait_brokers(n, {1, 2, 3}, timeout=10)
    leader = leader_of(nodes)
    a, b = [n for n in nodes if n is not leader]

    a.kill9()
    fenced_s = wait_brokers(leader, {leader.i, b.i}, timeout=8)
    a.start()
    wait_brokers(leader, {1, 2, 3}, timeout=10)
    wait_brokers(a, {1, 2, 3}, timeout=10)

    t0 = time.monotonic()
    b.stop()
    stop_s = time.monotonic() - t0
    assert "controlled shutdown: the controller moved this broker's leaderships" in b.log_text(), b.describe()
    # Fenced at shutdown_ok: gone from Metadata at once, not after a session.
    wait_brokers(leader, {leader.i, a.i}, timeout=1.0)
    b.start()
    wait_brokers(leader, {1, 2, 3}, timeout=10)
    print(f"fenced {fenced_s:.2f} s after kill -9 (session 1.8 s); SIGTERM took {stop_s:.2f} s")
