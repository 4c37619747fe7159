"""A partition leader cut off from the other brokers (but not from clients) by a real network
partition: three brokers in network namespaces (tuning/netfault/cluster.py).

- While cut off it must not acknowledge an acks=all produce (Jepsen's Kafka 0.8 finding: an
  isolated leader shrinking the ISR to itself and acknowledging alone).
- Another broker takes over; after the network heals the old leader learns within seconds that
  it no longer leads (before TCP keepalive and user timeouts on broker-to-broker connections it
  took about 12 s after a 15 s partition, during which it still took acks=1 writes that were
  then truncated).
- Every acknowledged acks=all record is read back at its offset.

A leader whose replication links are slow (tuning/netproxy.py in front of every broker, faults
on broker-to-broker connections only; the controller links and the clients are not delayed):
its followers fall behind by more than `replica_lag_time_max_ms`, so it must shrink its ISR to
itself and refuse acks=all (min.insync.replicas 2) instead of acknowledging alone or hanging;
after the heal the ISR is full again and every acknowledged record is read back.

Needs root and `ip netns`; skipped otherwise. The long version is tuning/cluster-netfaults.py.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tuning"))

import kwire  # noqa: E402
from conftest import free_port, shardlog_bin  # noqa: E402
from netproxy import ProxyControl  # noqa: E402
from netfault.cluster import (KAFKA_PORT, NetCluster, create_topic,  # noqa: E402
                              namespaces_available)

pytestmark = pytest.mark.timeout(120)

TOPIC = "np"
ISOLATION_S = 15.0
NOT_ENOUGH_REPLICAS = 19
LEARN_WITHIN_S = 6.0


# The slow-replication test: lag time and the delay (each way) on the leader's Kafka-port
# links; a follower's fetch round trip then takes more than twice the lag time.
LAG_MS = 1500
SLOW_MS = 2000


def _cluster(tmp_path: Path, prefix: str, **kw):
    why = namespaces_available()
    if why is not None:
        pytest.skip(f"network namespaces unavailable: {why}")
    if not os.access(shardlog_bin(), os.X_OK):
        pytest.skip("no shardlog binary")
    c = NetCluster(tmp_path, prefix=f"{prefix}{os.getpid() % 100000}", block=3,
                   binary=shardlog_bin(), **kw)
    try:
        c.start(timeout=60)
        yield c
    finally:
        c.heal()
        c.stop_all()
        c.teardown_network()
        panics = [b.node_id for b in c.brokers if b.panicked()]
        assert not panics, f"brokers panicked: {panics} (logs in {tmp_path})"


@pytest.fixture
def netcluster(tmp_path: Path):
    yield from _cluster(tmp_path, "slt")


@pytest.fixture
def proxycluster(tmp_path: Path):
    yield from _cluster(tmp_path, "slp", proxies=True,
                        settings={"replica_lag_time_max_ms": str(LAG_MS)})


def produce(c: NetCluster, node: int, value: bytes, acks: int, timeout_ms: int = 3000):
    with kwire.Conn(c[node].ip, KAFKA_PORT, timeout=timeout_ms / 1000 + 5) as conn:
        return conn.produce(TOPIC, 0, kwire.record_batch([kwire.Record(None, value)]),
                            acks=acks, timeout_ms=timeout_ms)


def read_all(c: NetCluster, node: int, topic: str = TOPIC) -> dict[int, bytes]:
    """Partition 0 of `topic` read from broker `node` up to its high watermark."""
    got: dict[int, bytes] = {}
    with kwire.Conn(c[node].ip, KAFKA_PORT, timeout=10) as conn:
        offset = 0
        while True:
            f = conn.fetch(topic, 0, offset)
            assert f.error_code == 0, f
            batches = kwire.parse_batches(f.records or b"")
            if not batches:
                break
            for b in batches:
                for i, rec in enumerate(b.records):
                    got[b.base_offset + i] = rec.value
                offset = b.base_offset + len(b.records)
            if offset >= f.high_watermark:
                break
    return got


def rf3_topic_with_one_record(c) -> tuple[int, dict[int, bytes]]:
    """Creates TOPIC (1 partition, RF 3, min.insync.replicas 2), waits for its full ISR and
    writes one acks=all record through the leader. Returns the leader and {offset: value}."""
    create_topic(c.bootstrap, TOPIC, 1, 3, {"min.insync.replicas": "2"})
    c.wait_isr_full(TOPIC, 1, 30)
    leader = c.leader_of(TOPIC, 0)
    r = produce(c, leader, b"before", -1)
    assert r.error_code == 0, r
    return leader, {r.base_offset: b"before"}


def test_isolated_leader_refuses_acks_all_and_steps_down_after_heal(netcluster):
    c = netcluster
    old, acked = rf3_topic_with_one_record(c)

    c.isolate(old)
    t_cut = time.monotonic()
    time.sleep(0.5)
    r = produce(c, old, b"isolated-acks-all", -1)
    assert r.error_code != 0, f"the isolated leader acknowledged an acks=all produce: {r}"
    others = [i for i in c.ids if i != old]
    new = c.wait_until(lambda: (lambda lead: lead if lead in others else None)(
        c.leader_of(TOPIC, 0, via=others[0])), 15, "another broker to lead")
    r = produce(c, new, b"after-failover", -1)
    assert r.error_code == 0, r
    acked[r.base_offset] = b"after-failover"
    # the old leader is still cut off: still no acks=all acknowledgement from it
    r = produce(c, old, b"isolated-acks-all-2", -1)
    assert r.error_code != 0, f"the isolated leader acknowledged an acks=all produce: {r}"

    time.sleep(max(0.0, ISOLATION_S - (time.monotonic() - t_cut)))
    c.heal()
    t_heal = time.monotonic()
    c.wait_until(lambda: c.leader_of(TOPIC, 0, via=old) == new, 30,
                 f"broker {old} to learn that {new} leads")
    learnt = time.monotonic() - t_heal
    assert learnt < LEARN_WITHIN_S, (
        f"the old leader learnt of the new leader {learnt:.1f}s after the heal")

    c.wait_isr_full(TOPIC, 1, 30)
    got = read_all(c, new)
    for off, v in acked.items():
        assert got.get(off) == v, f"acknowledged {v!r} at {off}, read {got.get(off)!r}"
    assert b"isolated-acks-all" not in got.values()


def test_slow_replication_links_shrink_the_isr_and_refuse_acks_all(proxycluster):
    c = proxycluster
    lead, acked = rf3_topic_with_one_record(c)

    # Every replication connection to and from the leader (the followers' fetches) slow;
    # the controller links are not, so the leader stays registered and leading.
    c.node_links(lead, listener="kafka", delay_ms=SLOW_MS)
    t_slow = time.monotonic()

    def shrunk_while_writing() -> dict | None:
        # A follower at the leader's end counts as caught up however late its fetches
        # (Kafka's isCaughtUp): the log must grow for the lag to show. acks=1 does not wait
        # for the followers.
        v = f"acks-1-{len(acked)}".encode()
        r = produce(c, lead, v, 1)
        assert r.error_code == 0, r
        acked[r.base_offset] = v
        p = c.partition_state(TOPIC, 0, via=lead)
        return p if p and p["isr"] == [lead] else None

    st = c.wait_until(shrunk_while_writing, 30, f"broker {lead} to shrink its ISR to itself")
    assert st["leader"] == lead, st
    shrunk = time.monotonic() - t_slow
    # ISR [leader] < min.insync.replicas 2: refused at once, never acknowledged alone
    r = produce(c, lead, b"alone", -1)
    assert r.error_code == NOT_ENOUGH_REPLICAS, (
        f"an acks=all produce to a leader alone in its ISR answered {r} "
        f"(ISR shrank {shrunk:.1f}s after the links slowed)")
    # the proxies fault only connections between brokers: a client's are untouched
    t0 = time.monotonic()
    c.metadata([TOPIC], via=lead)
    assert time.monotonic() - t0 < SLOW_MS / 1000, "a client connection was delayed"

    c.heal()
    c.wait_isr_full(TOPIC, 1, 30)
    r = produce(c, lead, b"after-heal", -1)
    assert r.error_code == 0, r
    acked[r.base_offset] = b"after-heal"
    got = read_all(c, lead)
    for off, v in acked.items():
        assert got.get(off) == v, f"acknowledged {v!r} at {off}, read {got.get(off)!r}"
    assert b"alone" not in got.values()


def test_netproxy_faults_peer_connections_only(tmp_path: Path):
    """tuning/netproxy.py on loopback, no namespaces needed: 127.0.0.2 is the "peer", 127.0.0.1
    a client. Delay (order kept under jitter), stall and resume, reset; the client's
    connection is never touched."""
    echo = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve_echo() -> None:
        echo.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = echo.accept()
            except OSError:
                continue

            def pump(conn=conn) -> None:
                with conn:
                    try:
                        while (d := conn.recv(65536)):
                            conn.sendall(d)
                    except OSError:
                        pass  # the proxy reset it
            threading.Thread(target=pump, daemon=True).start()

    threading.Thread(target=serve_echo, daemon=True).start()
    port = free_port()
    ctl_path = tmp_path / "p.sock"
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "tuning" / "netproxy.py"), "serve", "--listen",
         f"e=127.0.0.1:{port}=127.0.0.1:{echo.getsockname()[1]}", "--peers", "127.0.0.2",
         "--control", str(ctl_path), "--seed", "1"],
        stdout=subprocess.PIPE, stderr=open(tmp_path / "proxy.log", "wb"))
    try:
        assert proc.stdout.readline().strip() == b"ready"
        ctl = ProxyControl(str(ctl_path))

        def connect(src: str) -> socket.socket:
            s = socket.socket()
            s.bind((src, 0))
            s.connect(("127.0.0.1", port))
            s.settimeout(10)
            return s

        def round_trip(s: socket.socket, payload: bytes) -> float:
            t = time.monotonic()
            s.sendall(payload)
            got = b""
            while len(got) < len(payload):
                got += s.recv(65536)
            assert got == payload
            return time.monotonic() - t

        peer, client = connect("127.0.0.2"), connect("127.0.0.1")
        ctl.call("set", peer="*", listener="e", delay_ms=150, jitter_ms=100)
        assert 0.3 <= round_trip(peer, b"x" * 100) < 3.0  # both directions delayed
        assert round_trip(client, b"y" * 100) < 0.25
        data = b"".join(b"%06d" % i for i in range(3000))
        for i in range(0, len(data), 500):
            peer.sendall(data[i:i + 500])
        got = b""
        while len(got) < len(data):
            got += peer.recv(65536)
        assert got == data, "bytes reordered or lost under jitter"

        ctl.call("set", peer="127.0.0.2", listener="*", blackhole=True)
        peer.settimeout(1.0)
        peer.sendall(b"held")
        with pytest.raises(socket.timeout):
            peer.recv(10)
        assert round_trip(client, b"z" * 10) < 0.25
        ctl.call("clear")
        peer.settimeout(10)
        assert peer.recv(10) == b"held"

        assert ctl.call("reset")["reset"] == 1  # the peer's connection only
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            peer.sendall(b"after")
            if not peer.recv(10):
                raise ConnectionResetError("closed")
        assert round_trip(client, b"still") < 0.25
        with pytest.raises(RuntimeError, match="unknown keys"):
            ctl.call("set", delay=5)
        peer.close()
        client.close()
    finally:
        proc.terminate()
        proc.wait(10)
        stop.set()
        echo.close()
