"""Storage limits: file-name length, descriptors, partitions that cannot be opened.

* Topic names of every length Kafka accepts (up to 249) work end to end: their directory name
  must fit in 255 bytes (`<name>~<id>` up to 222 characters, the form older versions wrote;
  `<first 192>+~<id>` beyond), and the data survives a restart.
* A deleted topic leaves no directory behind, 255-byte names included.
* Sealed segments do not hold a descriptor each: the broker's open files stay bounded however
  many segments a partition has, and reading old segments reopens them.
* With RLIMIT_NOFILE reached, partitions that cannot be opened are offline in Metadata
  (LEADER_NOT_AVAILABLE, leader -1), answer KAFKA_STORAGE_ERROR, new connections are closed
  rather than left hanging, accept failures are counted, and once descriptors are free again
  the offline partitions come online by themselves (retried every partition_open_retry_ms).
* `shardlog check` says when the descriptor limit is too low for the data.
"""

from __future__ import annotations

import json
import re
import os
import resource
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

import kwire
from conftest import Broker, _require_binary, broker_with_admin, shardlog_bin

pytestmark = pytest.mark.timeout(180)

CREATE_TOPICS = 19
DELETE_TOPICS = 20
KAFKA_STORAGE_ERROR = 56
LEADER_NOT_AVAILABLE = 5


def create_topics(c: kwire.Conn, topics: list[tuple[str, int, dict[str, str]]]) -> dict[str, int]:
    """CreateTopics v2; returns {name: error_code}."""
    def topic(name: str, parts: int, configs: dict[str, str]) -> bytes:
        cfg = [kwire.string(k) + kwire.string(v) for k, v in configs.items()]
        return (kwire.string(name) + kwire.i32(parts) + kwire.i16(1) + kwire.array([])
                + kwire.array(cfg))
    body = kwire.array([topic(*t) for t in topics]) + kwire.i32(30000) + kwire.i8(0)
    r = c.request(CREATE_TOPICS, 2, body)
    r.i32()  # throttle time
    out = r.array(lambda r: (r.string(), r.i16(), r.string()))
    return {name: code for name, code, _ in out}


def delete_topics(c: kwire.Conn, names: list[str]) -> dict[str, int]:
    body = kwire.array([kwire.string(n) for n in names]) + kwire.i32(30000)
    r = c.request(DELETE_TOPICS, 1, body)
    r.i32()  # throttle time
    return dict(r.array(lambda r: (r.string(), r.i16())))


def batch(tag: str, n: int = 3, value_bytes: int = 0) -> bytes:
    pad = b"x" * value_bytes
    return kwire.record_batch([kwire.Record(None, f"{tag}-{i}".encode() + pad) for i in range(n)])


def values(fetched: bytes | None) -> list[bytes]:
    return [r.value for b in kwire.parse_batches(fetched or b"") for r in b.records]


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def limited_broker(tmp_path: Path, nofile: int | None, env: dict[str, str] | None = None) -> Broker:
    """A broker with its own admin port, optionally under RLIMIT_NOFILE = nofile (soft and
    hard, set by prlimit, which then execs the broker: same pid)."""
    b = broker_with_admin(tmp_path, name=f"limits-{nofile}", env=env)
    if nofile is not None:
        plain = b.argv
        b.argv = lambda: ["prlimit", f"--nofile={nofile}:{nofile}", "--", *plain()]  # type: ignore[method-assign]
    return b


# ---------------------------------------------------------------------------------------------

LENGTHS = [1, 222, 223, 240, 249]


def long_name(n: int) -> str:
    head = f"len{n}-"
    return (head + "abcdefghij" * 25)[:n] if n >= len(head) else "L" * n


def test_topic_names_of_every_legal_length_work_end_to_end(broker):
    names = [long_name(n) for n in LENGTHS]
    with kwire.Conn.to(broker.bootstrap) as c:
        assert create_topics(c, [(n, 2, {}) for n in names]) == {n: 0 for n in names}
        md = c.metadata(names)["topics"]
        for n in names:
            assert md[n]["error_code"] == 0
            for p in (0, 1):
                r = c.produce(n, p, batch(f"{len(n)}-{p}"), acks=-1)
                assert (r.error_code, r.base_offset) == (0, 0), f"produce to {len(n)} chars: {r}"
                f = c.fetch(n, p, 0)
                assert f.error_code == 0, f"fetch from {len(n)} chars: {f}"
                assert values(f.records) == [f"{len(n)}-{p}-{i}".encode() for i in range(3)]
    # On disk: exactly the name every earlier version wrote (`<name>~<id as 32 hex digits>`)
    # for names that fit, so existing data directories open unchanged; a cut name beyond.
    # (The topic ids live in the raft metadata log now; the name part and the id's form are
    # what the layout fixes.)
    dirs = sorted(d.name for d in (broker.data_dir / "logs").iterdir())
    for n in names:
        prefix = n if len(n) <= 222 else f"{n[:192]}+"
        want = re.compile(re.escape(prefix) + "~[0-9a-f]{32}")
        found = [d for d in dirs if want.fullmatch(d)]
        assert len(found) == 1, (len(n), dirs)
        assert len(found[0].encode()) <= 255
    broker.restart()
    with kwire.Conn.to(broker.bootstrap) as c:
        for n in names:
            for p in (0, 1):
                f = c.fetch(n, p, 0)
                assert f.error_code == 0, f"after restart, {len(n)} chars: {f}"
                assert values(f.records) == [f"{len(n)}-{p}-{i}".encode() for i in range(3)]


def test_deleted_topics_leave_no_directory(make_broker):
    b = make_broker(env={"SHARDLOG_SEGMENT_DELETE_DELAY_MS": "0"})
    names = [long_name(8) + "-del", long_name(222), long_name(249)]
    with kwire.Conn.to(b.bootstrap) as c:
        assert create_topics(c, [(n, 3, {}) for n in names]) == {n: 0 for n in names}
        for n in names:
            for p in range(3):
                assert c.produce(n, p, batch("d"), acks=-1).error_code == 0
        assert delete_topics(c, names) == {n: 0 for n in names}
    logs = b.data_dir / "logs"
    deadline = time.monotonic() + 20
    left = sorted(d.name for d in logs.iterdir())
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = sorted(d.name for d in logs.iterdir())
    assert left == [], f"left after deletion: {left}"
    assert "cannot remove" not in b.log_text()


def test_sealed_segments_do_not_hold_a_descriptor_each(tmp_path):
    b = limited_broker(tmp_path, None, env={"SHARDLOG_MAX_OPEN_SEGMENT_FILES": "8"})
    b.start()
    try:
        topic = "many-segments"
        with kwire.Conn.to(b.bootstrap) as c:
            assert create_topics(c, [(topic, 1, {"segment.bytes": "16384"})]) == {topic: 0}
            base = open_fds(b.proc.pid)
            sent = []
            for i in range(240):
                r = c.produce(topic, 0, batch(f"s{i}", 2, 3000), acks=-1)
                assert r.error_code == 0, r
                sent += [f"s{i}-{j}".encode() + b"x" * 3000 for j in range(2)]
            segs = len(list((b.data_dir / "logs").glob(f"{topic}~*/0/*.log")))
            assert segs > 60, segs
            grown = open_fds(b.proc.pid) - base
            # 8 sealed files at most per broker (4 per shard), and a spare for the roll.
            assert grown <= 10, f"{grown} more descriptors after {segs} segments"
        # Opening the logs again opens only active segments; reading old data (from disk: the
        # batch cache starts empty) reopens sealed ones, within the bound.
        b.restart()
        after = open_fds(b.proc.pid)
        assert after <= base + 2, f"{after} descriptors after a restart, {base} before any data"
        with kwire.Conn.to(b.bootstrap) as c:
            got, offset = [], 0
            while offset < len(sent):
                f = c.fetch(topic, 0, offset, max_bytes=20000)
                assert f.error_code == 0, f
                vs = values(f.records)
                assert vs, f"nothing at {offset}"
                got += vs
                offset += len(vs)
            assert got == sent
            assert open_fds(b.proc.pid) - base <= 10
        text = scrape(b.admin_port)
        assert metric(text, "shardlog_segment_files_opened_total") >= segs - 1
        assert metric(text, "shardlog_segment_files_open") <= 8
    finally:
        b.teardown()


def test_partitions_that_cannot_open_are_offline_and_come_back(tmp_path):
    _require_binary()
    (tmp_path / "probe").mkdir()
    probe = limited_broker(tmp_path / "probe", None)
    probe.start()
    base = open_fds(probe.proc.pid)
    probe.teardown()

    # Room for about 40 + 30 partition logs (one descriptor each) beyond the idle broker.
    limit = base + 70
    b = limited_broker(tmp_path, limit, env={"SHARDLOG_PARTITION_OPEN_RETRY_MS": "500"})
    b.start()
    try:
        with kwire.Conn.to(b.bootstrap) as c:
            assert create_topics(c, [("filler", 40, {})]) == {"filler": 0}
            assert create_topics(c, [("crowded", 60, {})]) == {"crowded": 0}
            md = c.metadata(["crowded"])["topics"]["crowded"]["partitions"]
            offline = sorted(p["partition"] for p in md if p["leader"] == -1)
            online = sorted(p["partition"] for p in md if p["leader"] != -1)
            assert len(offline) >= 5 and len(online) >= 5, (offline, online)
            for p in md:
                if p["leader"] == -1:
                    assert p["error_code"] == LEADER_NOT_AVAILABLE and p["isr"] == [], p
                else:
                    assert p["error_code"] == 0 and p["isr"] == [p["leader"]], p
            # The controller view counts them (no serving leader), as does the per-shard count
            # of logs that failed to open.
            text = scrape(b.admin_port)
            assert metric(text, "shardlog_partitions_offline") == len(offline)
            assert metric(text, "shardlog_partition_logs_offline") == len(offline)
            r = c.produce("crowded", offline[0], batch("x"), acks=-1)
            assert r.error_code == KAFKA_STORAGE_ERROR, r
            assert c.fetch("crowded", offline[0], 0).error_code == KAFKA_STORAGE_ERROR
            assert c.produce("crowded", online[0], batch("y"), acks=-1).error_code == 0

            # A new client is answered or closed, not left hanging in the accept backlog.
            t0 = time.monotonic()
            for _ in range(3):
                s = socket.create_connection((b.host, b.port), timeout=10)
                s.settimeout(10)
                try:
                    s.sendall(kwire.frame(kwire.request_header(18, 0, 1, "late")))
                    s.recv(4)  # an answer or b"" (closed): either way not a hang
                except (ConnectionResetError, BrokenPipeError):
                    pass  # closed by the broker (unread bytes turn the close into a reset)
                except socket.timeout:
                    pytest.fail("a new connection hung while descriptors were exhausted")
                finally:
                    s.close()
            assert time.monotonic() - t0 < 20

            # Free descriptors: the offline partitions open on a retry, nothing else needed.
            deleted = {}
            for _ in range(20):
                deleted = delete_topics(c, ["filler"])
                if deleted == {"filler": 0}:
                    break
                time.sleep(0.5)
            assert deleted == {"filler": 0}
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                md = c.metadata(["crowded"])["topics"]["crowded"]["partitions"]
                if all(p["leader"] != -1 for p in md):
                    break
                time.sleep(0.2)
            assert all(p["leader"] != -1 and p["error_code"] == 0 for p in md), md
            for p in offline:
                r = c.produce("crowded", p, batch(f"back{p}"), acks=-1)
                assert (r.error_code, r.base_offset) == (0, 0), (p, r)
                assert values(c.fetch("crowded", p, 0).records)[0] == f"back{p}-0".encode()
        text = scrape(b.admin_port)
        assert metric(text, "shardlog_accept_failures_total") >= 1, "accept failures are counted"
        assert metric(text, "shardlog_partitions_offline") == 0
        log = b.log_text()
        assert "the partition is offline until a retry succeeds" in log
        assert "the partition is online again" in log
        # Accept failures back off: a handful of lines, not hundreds a second.
        assert log.count("accept failed") < 60, log.count("accept failed")
    finally:
        b.teardown()


def test_check_warns_when_the_descriptor_limit_is_too_low_for_the_data(tmp_path):
    data = tmp_path / "data"
    for t in range(3):
        for p in range(40):
            d = data / "logs" / f"t{t}~{t:032x}" / str(p)
            d.mkdir(parents=True)
            for s in range(3):
                (d / f"{s:020}.log").write_bytes(b"")

    def check(nofile: int) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHARDLOG_")}
        p = subprocess.run(["prlimit", f"--nofile={nofile}:{nofile}", "--", shardlog_bin(), "check",
                            "--data-dir", str(data), "--format", "json"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=60)
        assert b"panicked" not in p.stderr
        out = json.loads(p.stdout)
        (f,) = [c for c in out["checks"] if c["check"] == "open files for the data"]
        return f

    low = check(100)
    assert low["status"] == "fail", low
    assert "120 partitions" in low["detail"] and "360 segment files" in low["detail"], low
    assert "offline" in low["fix"]
    assert check(200)["status"] == "warn"
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard >= 4096:
        assert check(4096)["status"] == "ok"
