"""kafkajs (the widely used JavaScript client, a protocol implementation of its own) against a
real broker, through the node scripts in tests/e2e/js/ (`tests/run.sh` installs the pinned
kafkajs there with `npm ci`): the admin API, produce with acks 0/1/all, the idempotent
producer, a consumer group that rebalances when a second member joins, and committed offsets
that a new member resumes from."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from util import unique_topic

pytestmark = pytest.mark.timeout(120)

JS = Path(__file__).resolve().parent / "js"


@pytest.fixture(scope="module")
def kjs_broker(tmp_path_factory):
    """One broker for the module, without the initial rebalance delay (groups form at once)."""
    from conftest import Broker, _require_binary
    _require_binary()
    if shutil.which("node") is None:
        pytest.fail("node is not installed (tests/run.sh expects Node 18+ and npm)", pytrace=False)
    if not (JS / "node_modules" / "kafkajs").is_dir():
        pytest.fail(f"kafkajs is not installed: run `npm ci` in {JS} (tests/run.sh does)", pytrace=False)
    b = Broker(tmp_path_factory.mktemp("kafkajs"),
               env={"SHARDLOG_GROUP_INITIAL_REBALANCE_DELAY_MS": "0"})
    b.start()
    yield b
    b.teardown()


def kjs(mode: str, broker, topic: str) -> dict:
    env = dict(os.environ, KAFKAJS_NO_PARTITIONER_WARNING="1")
    p = subprocess.run(["node", str(JS / "kjs.js"), mode, broker.bootstrap, topic],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=100, env=env, cwd=JS)
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 0, f"kjs.js {mode} exited {p.returncode}:\n{err[-6000:]}"
    return json.loads(p.stdout.decode().strip().splitlines()[-1])


def test_admin(kjs_broker):
    t = unique_topic("kjs-admin")
    r = kjs("admin", kjs_broker, t)
    assert r["created"] is True, r
    assert r["created_again"] is False, "a second CreateTopics of the same name must not succeed"
    assert r["listed"] and r["leaders"], r
    assert r["partitions"] == [0, 1, 2], r
    assert r["retention_ms"] == "3600000", r
    assert r["grown"] == 5, r
    assert [(o["partition"], o["low"], o["high"]) for o in r["offsets"]] == [(p, "0", "0") for p in range(5)]
    assert r["trimmed"] == [{"partition": 0, "low": "10", "high": "20"},
                            {"partition": 1, "low": "20", "high": "20"}], r["trimmed"]
    assert r["gone"] is True


def test_produce_acks_and_idempotence(kjs_broker):
    """100 records each with acks 0, 1 and all, then 300 from an idempotent gzip producer; all
    600 read back exactly once, in order per key."""
    t = unique_topic("kjs-produce")
    r = kjs("produce", kjs_broker, t)
    assert r["missing"] == [], r
    assert (r["sent"], r["got"], r["unique"]) == (600, 600, 600), r
    assert r["byKeyOrdered"], "records of one key out of order"
    assert r["acked"]["0"] == [], "acks=0 gets no answer"
    for acks in ("1", "-1"):
        assert r["acked"][acks] and all(p["errorCode"] == 0 and int(p["baseOffset"]) >= 0
                                        for p in r["acked"][acks]), r["acked"]


def test_group_rebalance_and_committed_offsets(kjs_broker):
    t = unique_topic("kjs-group")
    r = kjs("group", kjs_broker, t)
    # a alone owns all four partitions; after b joins, they split them.
    assert r["assigned_a"][0] == [0, 1, 2, 3], r
    last_a, last_b = r["assigned_a"][-1], r["assigned_b"][-1]
    assert last_a and last_b and sorted(last_a + last_b) == [0, 1, 2, 3], r
    assert r["described"]["state"] == "Stable" and r["described"]["members"] == 2, r["described"]
    assert r["seen_unique"] == 400, r
    # Committed offsets (OffsetFetch after both members left) are the log ends.
    assert r["committed"] == [{"partition": e["partition"], "offset": e["high"]} for e in r["ends"]], r
    assert sum(e["high"] for e in r["ends"]) == 400
    assert r["listed"], "ListGroups does not show the group"
    # A new member resumes after the committed offsets: only the 10 later records.
    assert sorted(r["after"]) == sorted(f"v{i}" for i in range(400, 410)), r["after"]
