"""Operations under hostile input (issue 17, items 6-9).

* Client text cannot forge or flood log lines: topic names and transactional ids holding
  newlines, NUL, ANSI escapes or 30 KB are logged escaped, quoted and cut, in the text and the
  JSON log format.
* The unauthenticated admin listener keeps answering /health and /metrics within a second
  while 100 idle and 20 slow-drip connections are held open (and reopened when closed).
* Idempotent-producer state expires after producer_id_expiration_ms, is bounded by
  max_producer_ids_per_partition, is counted in /metrics, and what expired stays expired after
  a restart (SIGTERM and kill -9).
* The locked-memory log line says what happened when the limit could not be raised.
"""

from __future__ import annotations

import json
import re
import selectors
import shutil
import socket
import subprocess
import threading
import time
import urllib.request

import pytest

import kwire
from conftest import free_port, shardlog_bin
from util import create_topic, unique_topic

pytestmark = pytest.mark.timeout(120)

CREATE_TOPICS = 19
INVALID_TOPIC_EXCEPTION = 17
TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53

FORGED = "2026-12-04T00:00:00.000000Z ERROR shardlog: forged by a client"
HOSTILE_NAMES = [
    "nl\n" + FORGED + "\n",
    "nul\0byte",
    "esc\x1b[31mred\x1b[0m",
    "long-" + "x" * 30_000,
]


# ---------------------------------------------------------------------------------------------
# helpers

def create_topics_v2(conn: kwire.Conn, names: list[str]) -> list[tuple[str, int]]:
    """CreateTopics v2 with one partition each; returns (name, error_code) per topic."""
    topics = [kwire.string(n) + kwire.i32(1) + kwire.i16(1) + kwire.array([]) + kwire.array([])
              for n in names]
    r = conn.request(CREATE_TOPICS, 2, kwire.array(topics) + kwire.i32(10_000) + kwire.i8(0))
    r.i32()  # throttle
    return r.array(lambda r: (r.string(), r.i16(), r.string())) or []


def init_transactional(conn: kwire.Conn, tid: str) -> int:
    r = conn.request(kwire.INIT_PRODUCER_ID, 0, kwire.string(tid) + kwire.i32(60_000))
    r.i32()  # throttle
    return r.i16()


def admin_args(port: int) -> list[str]:
    return ["--admin-listen", f"127.0.0.1:{port}"]


def http_get(port: int, path: str, timeout: float = 1.0) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return r.status, r.read().decode()


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total, seen = 0.0, False
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        m = re.match(r"^([a-z_]+)(\{[^}]*\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
            seen = True
    assert seen, f"no sample of {name} {labels}"
    return total


def idem_batch(pid: int, epoch: int, seq: int) -> bytes:
    return kwire.record_batch([kwire.Record(None, f"v{seq}".encode())], producer_id=pid,
                              producer_epoch=epoch, base_sequence=seq)


def wait_for(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


# ---------------------------------------------------------------------------------------------
# 6. client text in log lines

def provoke_hostile_log_lines(b) -> None:
    with kwire.Conn.to(b.bootstrap) as c:
        got = create_topics_v2(c, HOSTILE_NAMES)
        assert [code for _, code, _ in got] == [INVALID_TOPIC_EXCEPTION] * len(HOSTILE_NAMES), got
        assert init_transactional(c, "tx\n" + FORGED + "\x1b[2J") == TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        # still serving
        assert c.api_versions().error_code == 0


def broker_lines(b) -> list[str]:
    # The harness writes "===== start #n" lines; everything else is the broker's stderr.
    raw = b.log_path.read_bytes()
    assert b"\0" not in raw, "a NUL byte from a client reached the log"
    assert b"\x1b" not in raw, "an escape sequence from a client reached the log"
    return [l for l in raw.decode().splitlines() if not l.startswith("===== start")]


def test_client_text_is_escaped_and_cut_in_text_logs(make_broker):
    b = make_broker("textlog", extra_args=admin_args(free_port()))
    provoke_hostile_log_lines(b)
    b.stop()
    lines = broker_lines(b)
    # No line starts with the forged text: it stays inside the line that logged it.
    assert not [l for l in lines if l.startswith(FORGED) or l.startswith(FORGED[:20])], lines[-20:]
    refused = [l for l in lines if "INVALID_TOPIC_EXCEPTION" in l]
    assert len(refused) == len(HOSTILE_NAMES), refused
    joined = "\n".join(refused)
    assert 'topic="nl\\n' + FORGED + '\\n"' in joined
    assert 'topic="nul\\u{0}byte"' in joined
    assert 'topic="esc\\u{1b}[31mred\\u{1b}[0m"' in joined
    assert re.search(r'topic="long-x{195}"\.\.\.\(30005 bytes, 29805 cut\)', joined), joined[-600:]
    assert max(len(l) for l in refused) < 1000, "a 30 KB name must not make a 30 KB log line"
    tx = [l for l in lines if "transactions are not supported" in l]
    assert len(tx) == 1 and 'transactional_id="tx\\n' + FORGED + '\\u{1b}[2J"' in tx[0], tx


def test_client_text_is_escaped_and_cut_in_json_logs(make_broker):
    b = make_broker("jsonlog", extra_args=admin_args(free_port()),
                    env={"SHARDLOG_LOG_FORMAT": "json"})
    provoke_hostile_log_lines(b)
    b.stop()
    events = []
    for l in broker_lines(b):
        if not l.strip():
            continue
        events.append(json.loads(l))  # every line is one whole JSON object
    refused = [e for e in events if "INVALID_TOPIC_EXCEPTION" in e["fields"].get("message", "")]
    topics = sorted(e["fields"]["topic"] for e in refused)
    assert len(topics) == len(HOSTILE_NAMES)
    assert all(len(t) < 300 for t in topics), [len(t) for t in topics]
    assert '"nl\\n' + FORGED + '\\n"' in topics
    assert '"nul\\u{0}byte"' in topics
    assert any(t.startswith('"long-xxxx') and t.endswith('"...(30005 bytes, 29805 cut)') for t in topics)


# ---------------------------------------------------------------------------------------------
# 7. the admin listener under idle and slow connection floods

class AdminFlood:
    """`idle` connections that send nothing and `slow` ones that send a request head one byte
    every 200 ms, each reopened as soon as the broker closes it."""

    def __init__(self, port: int, idle: int, slow: int):
        self.port, self.idle, self.slow = port, idle, slow
        self.stop = threading.Event()
        self.reopened = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def open(self) -> socket.socket | None:
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=2)
        except OSError:
            return None
        s.setblocking(False)
        return s

    def run(self) -> None:
        sel = selectors.DefaultSelector()
        head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 4000
        conns: dict[socket.socket, list] = {}

        def add(kind: str) -> None:
            s = self.open()
            if s is not None:
                conns[s] = [kind, 0]
                sel.register(s, selectors.EVENT_READ)

        for _ in range(self.idle):
            add("idle")
        for _ in range(self.slow):
            add("slow")
        next_drip = time.monotonic()
        while not self.stop.is_set():
            for key, _ in sel.select(timeout=0.05):
                s = key.fileobj
                try:
                    data = s.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:  # closed by the broker: reopen one of the same kind
                    kind = conns.pop(s)[0]
                    sel.unregister(s)
                    s.close()
                    self.reopened += 1
                    add(kind)
            if time.monotonic() >= next_drip:
                next_drip += 0.2
                for s, st in list(conns.items()):
                    if st[0] == "slow" and st[1] < len(head):
                        try:
                            s.send(head[st[1]:st[1] + 1])
                            st[1] += 1
                        except OSError:
                            pass
            # keep the flood at full strength (a failed connect is retried)
            while sum(1 for v in conns.values() if v[0] == "idle") < self.idle and not self.stop.is_set():
                add("idle")
                if sum(1 for v in conns.values() if v[0] == "idle") < self.idle:
                    break
        for s in conns:
            s.close()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)


def test_admin_listener_answers_under_idle_and_slow_floods(make_broker):
    port = free_port()
    b = make_broker("adminflood", extra_args=admin_args(port))
    assert http_get(port, "/health")[0] == 200
    failures, probes, worst = [], 0, 0.0
    with AdminFlood(port, idle=100, slow=20) as flood:
        time.sleep(1.0)  # the flood is established
        end = time.monotonic() + 12.0  # past the 5 s head timeout: connections get reopened
        while time.monotonic() < end:
            for path in ("/health", "/metrics"):
                t0 = time.monotonic()
                try:
                    status, body = http_get(port, path, timeout=1.0)
                    if status != 200 or (path == "/health" and '"ok"' not in body):
                        failures.append((path, status, body[:100]))
                except Exception as e:  # noqa: BLE001 - every failure is reported
                    failures.append((path, repr(e)))
                worst = max(worst, time.monotonic() - t0)
                probes += 1
            time.sleep(0.2)
        reopened = flood.reopened
    assert not failures, f"{len(failures)} of {probes} probes failed: {failures[:5]}"
    assert worst < 1.0, worst
    assert reopened > 0, "the flood's connections were never closed and reopened"


def test_admin_listener_bounds_connections_and_evicts_the_oldest(make_broker):
    """More connections than the limit (256): the oldest are closed, probes still answer."""
    port = free_port()
    b = make_broker("admincap", extra_args=admin_args(port))
    socks = []
    try:
        for _ in range(300):
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=2))
        status, body = http_get(port, "/health", timeout=2.0)
        assert status == 200
        _, text = http_get(port, "/metrics", timeout=2.0)
        assert metric(text, "shardlog_admin_connections_evicted_total") >= 300 + 1 - 256  # the /health connection is closed by then
        # the first ones opened were the ones closed
        socks[0].settimeout(2)
        assert socks[0].recv(1) == b""
    finally:
        for s in socks:
            s.close()


# ---------------------------------------------------------------------------------------------
# 8. idempotent-producer state expires, is bounded, is counted, and stays expired

@pytest.mark.parametrize("hard", [pytest.param(False, id="sigterm"), pytest.param(True, id="kill9")])
def test_idle_producer_state_expires_and_stays_expired_after_restart(make_broker, hard):
    port = free_port()
    b = make_broker("pexpire", extra_args=admin_args(port), env={
        "SHARDLOG_PRODUCER_ID_EXPIRATION_MS": "2000",
        "SHARDLOG_PRODUCER_ID_EXPIRATION_CHECK_INTERVAL_MS": "100",
    })
    topic = unique_topic("pexp")
    create_topic(b.bootstrap, topic, 1)
    ids = lambda: metric(http_get(port, "/metrics")[1], "shardlog_producer_ids")  # noqa: E731
    with kwire.Conn.to(b.bootstrap) as c:
        pids = []
        for _ in range(30):
            err, pid, epoch = c.init_producer_id()
            assert err == 0
            r = c.produce(topic, 0, idem_batch(pid, epoch, 0))
            assert r.error_code == 0, r
            pids.append((pid, epoch))
        assert ids() == 30
        # one producer keeps appending; the others are idle
        active, seq = pids[0], 1
        deadline = time.monotonic() + 3.5
        while time.monotonic() < deadline:
            r = c.produce(topic, 0, idem_batch(*active, seq))
            assert r.error_code == 0, r
            seq += 1
            time.sleep(0.25)
        wait_for(lambda: ids() == 1, 5, "idle producers to expire")
        text = http_get(port, "/metrics")[1]
        assert metric(text, "shardlog_producer_ids_forgotten_total", reason="expired") == 29
        # a producer that was forgotten carries on where it was: no fatal sequence error
        pid, epoch = pids[1]
        r = c.produce(topic, 0, idem_batch(pid, epoch, 1))
        assert r.error_code == 0, r
        # while the active one is still known: a retry of its last batch is a duplicate
        dup = c.produce(topic, 0, idem_batch(*active, seq - 1))
        assert dup.error_code in (0, kwire.DUPLICATE_SEQUENCE_NUMBER)
        hw = c.fetch(topic, 0, 0).high_watermark
        assert hw == 30 + (seq - 1) + 1, "the duplicate was appended again"
    time.sleep(0.5)  # the snapshot rewritten after expiry is on disk
    # From here on only start-up applies expiry (the periodic check is 10 min away): what
    # the broker holds right after a restart is what the snapshot and the log brought back.
    b.extra_env["SHARDLOG_PRODUCER_ID_EXPIRATION_CHECK_INTERVAL_MS"] = "600000"
    b.restart(hard=hard)
    # expired producers do not come back from the snapshot or the log
    assert ids() <= 2
    time.sleep(2.5)
    b.restart(hard=hard)
    assert ids() == 0, "producers idle past the expiration before a restart are not restored"


def test_producer_ids_per_partition_are_bounded(make_broker):
    port = free_port()
    b = make_broker("pcap", extra_args=admin_args(port),
                    env={"SHARDLOG_MAX_PRODUCER_IDS_PER_PARTITION": "16"})
    topic = unique_topic("pcap")
    create_topic(b.bootstrap, topic, 1)
    with kwire.Conn.to(b.bootstrap) as c:
        last = None
        for _ in range(100):
            err, pid, epoch = c.init_producer_id()
            assert err == 0
            assert c.produce(topic, 0, idem_batch(pid, epoch, 0)).error_code == 0
            last = (pid, epoch)
        # the most recent producer is still known: its retry is a duplicate, not appended
        assert c.produce(topic, 0, idem_batch(*last, 0)).error_code in (0, kwire.DUPLICATE_SEQUENCE_NUMBER)
        assert c.fetch(topic, 0, 0).high_watermark == 100
    text = http_get(port, "/metrics")[1]
    assert metric(text, "shardlog_producer_ids") <= 16
    assert metric(text, "shardlog_producer_ids_forgotten_total", reason="limit") >= 84


# ---------------------------------------------------------------------------------------------
# 9. the locked-memory log line

@pytest.mark.skipif(shutil.which("setpriv") is None or shutil.which("prlimit") is None,
                    reason="needs setpriv and prlimit (util-linux)")
def test_memlock_line_says_what_happened_when_it_cannot_be_raised(make_broker):
    """Soft = hard = 8 MiB and no CAP_SYS_RESOURCE (an unprivileged service): the limit cannot
    be raised, and the log must not claim it was ("from_kib=8192 to_kib=8192")."""
    probe = subprocess.run(["setpriv", "--inh-caps=-sys_resource", "--bounding-set=-sys_resource",
                            "prlimit", "--memlock=8388608:8388608", "--", "true"],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot drop CAP_SYS_RESOURCE here: {probe.stderr.decode()[:200]}")
    b = make_broker("memlock", start=False, extra_args=admin_args(free_port()))
    inner = b.argv
    b.argv = lambda: ["setpriv", "--inh-caps=-sys_resource", "--bounding-set=-sys_resource",  # type: ignore[method-assign]
                      "prlimit", "--memlock=8388608:8388608", "--", *inner()]
    b.start()
    b.stop()
    text = b.log_text()
    assert "raised the locked-memory limit" not in text, text[:2000]
    assert "locked-memory limit not raised: the soft limit is already the hard limit" in text
    assert shardlog_bin()  # the broker that ran is the one under test
