"""Configured limits enforced on a real broker: connections per client address and the
shard-wide memory for request bytes read and not yet answered (back-pressure)."""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest

import kwire
from conftest import Broker, _require_binary, broker_with_admin
from util import create_topic, metrics, unique_topic

pytestmark = pytest.mark.timeout(120)


def connect_from(broker: Broker, source_ip: str) -> kwire.Conn:
    """A kwire connection whose source address is `source_ip` (any 127.0.0.0/8 address works
    on loopback)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(10)
    s.bind((source_ip, 0))
    s.connect((broker.host, broker.port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return kwire.Conn.wrap(s)


@pytest.fixture
def limited(tmp_path):
    b = broker_with_admin(tmp_path, cores=1,
                          env={"SHARDLOG_MAX_CONNECTIONS_PER_IP": "3",
                               "SHARDLOG_MAX_FRAME_BYTES": str(2 << 20),
                               "SHARDLOG_MAX_REQUEST_MEMORY_BYTES": str(2 << 20),
                               "SHARDLOG_REQUEST_READ_TIMEOUT_MS": "20000"})
    b.start()
    yield b
    b.teardown()


def test_connections_per_ip(limited):
    # The readiness probe's connection is closed by now, but give the broker a moment to
    # count it out.
    time.sleep(0.2)
    held = [connect_from(limited, "127.0.0.1") for _ in range(3)]
    for c in held:
        assert c.api_versions().error_code == 0
    extra = connect_from(limited, "127.0.0.1")
    assert extra.closed_by_peer(10), "a 4th connection from 127.0.0.1 must be refused"
    extra.close()
    # Another address has its own count.
    other = connect_from(limited, "127.0.0.2")
    assert other.api_versions().error_code == 0
    other.close()
    # A place freed is a place again.
    held.pop().close()
    deadline = time.monotonic() + 5
    while True:
        again = connect_from(limited, "127.0.0.1")
        try:
            assert again.api_versions().error_code == 0
            again.close()
            break
        except (kwire.ConnectionClosed, ConnectionResetError):
            again.close()
            assert time.monotonic() < deadline, "the freed place was not given back"
            time.sleep(0.1)
    for c in held:
        c.close()
    assert "max_connections_per_ip (3) reached for 127.0.0.1" in limited.log_text()
    assert metrics(limited.admin_port)["shardlog_connections_refused_total"] >= 1


def test_request_memory_back_pressure(limited):
    topic = unique_topic("mem")
    create_topic(limited.bootstrap, topic, 1)
    # A claim alone reserves nothing: a client that announces a frame as large as the whole
    # budget and sends a few bytes of it does not stop others.
    claim = connect_from(limited, "127.0.0.5")
    claim.send_raw(struct.pack(">i", (2 << 20) - 16) + b"\x00" * 100)
    with connect_from(limited, "127.0.0.6") as c0:
        assert c0.api_versions().error_code == 0
    claim.close()

    # A client that sends almost all of such a frame holds almost the whole budget.
    hog = connect_from(limited, "127.0.0.3")
    announced = (2 << 20) - 16
    hog.send_raw(struct.pack(">i", announced) + b"\x00" * (announced - 1000))
    deadline = time.monotonic() + 10
    while metrics(limited.admin_port)["shardlog_request_memory_bytes"] < announced - 1000:
        assert time.monotonic() < deadline, "the hog's bytes were not charged"
        time.sleep(0.1)

    # A well-formed produce now waits for memory instead of being read.
    c = connect_from(limited, "127.0.0.4")
    batch = kwire.record_batch([kwire.Record(b"k", b"v" * 100)])
    result: dict = {}

    def produce():
        t0 = time.monotonic()
        try:
            result["response"] = c.produce(topic, 0, batch, acks=1)
        except Exception as e:  # noqa: BLE001 - reported below
            result["error"] = e
        result["seconds"] = time.monotonic() - t0

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    time.sleep(1.0)
    assert t.is_alive(), f"the produce should be waiting for request memory: {result}"
    assert metrics(limited.admin_port)["shardlog_request_memory_waits_total"] >= 1

    # The hog goes away: its reservation is returned and the produce is answered.
    hog.close()
    t.join(10)
    assert not t.is_alive() and "error" not in result, result
    r = result["response"]
    assert (r.error_code, r.base_offset) == (0, 0), r
    assert result["seconds"] >= 1.0
    assert metrics(limited.admin_port)["shardlog_request_memory_bytes"] == 0
    c.close()


def test_client_that_reads_no_answers_is_cut_off(tmp_path):
    _require_binary()
    b = Broker(tmp_path, cores=1, env={"SHARDLOG_REQUEST_READ_TIMEOUT_MS": "1500"})
    b.start()
    try:
        topic = unique_topic("noread")
        create_topic(b.bootstrap, topic, 1)
        with kwire.Conn.to(b.bootstrap) as p:
            for i in range(8):
                batch = kwire.record_batch([kwire.Record(None, bytes([i]) * 60_000) for _ in range(8)])
                assert p.produce(topic, 0, batch, acks=1).error_code == 0
        # Pipelined fetches of ~0.5 MB each, never read, into a small receive buffer.
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect((b.host, b.port))
        c = kwire.Conn.wrap(s)
        for _ in range(32):
            c.send_request(kwire.FETCH, 4, kwire.fetch_body(topic, 0, 0, max_bytes=1 << 20))
        deadline = time.monotonic() + 15
        while "client read nothing for" not in b.log_text():
            assert time.monotonic() < deadline, "a client that reads nothing was not cut off"
            time.sleep(0.2)
        # Everyone else is served.
        with kwire.Conn.to(b.bootstrap) as other:
            assert other.api_versions().error_code == 0
        c.close()
    finally:
        b.teardown()
