"""The operation-history recorder (tests/history) against a real broker: a recorded idempotent
producer, a group consumer that commits, seeks back and re-reads, and the final read give a
history that the checker finds valid; without its seek marker the re-read is a non-monotonic
poll. (The checker's own tests, on hand-made histories, are in tests/history.)"""

from __future__ import annotations

import json
import sys
import time
import uuid

import pytest
from confluent_kafka import TopicPartition

from conftest import REPO
from util import create_topic, unique_topic

sys.path.insert(0, str(REPO / "tests"))
from history.checker import check_file  # noqa: E402
from history.record import (HistoryWriter, RecordingConsumer, RecordingProducer,  # noqa: E402
                            final_read, read_history)

pytestmark = pytest.mark.timeout(90)


def consume_until(c: RecordingConsumer, n: int, timeout: float = 30.0) -> list:
    got, deadline = [], time.monotonic() + timeout
    while len(got) < n:
        assert time.monotonic() < deadline, f"only {len(got)} of {n} records in {timeout}s"
        got.extend(m for m in c.consume(num_messages=100, timeout=0.5) if m.error() is None)
    return got


def test_recorded_history_of_a_real_broker(broker, tmp_path):
    topic = unique_topic("history")
    create_topic(broker.bootstrap, topic, 2)
    path = tmp_path / "history.jsonl"
    w = HistoryWriter(path, idempotence=True, meta={"test": "e2e"})
    p = RecordingProducer(w, {"bootstrap.servers": broker.bootstrap, "enable.idempotence": True,
                              "acks": "all", "linger.ms": 5}, "producer-0")
    for i in range(200):
        p.produce(topic, value=f"v{i}".encode(), key=str(i % 5).encode())
    assert p.flush(30) == 0
    p.close()

    c = RecordingConsumer(w, {"bootstrap.servers": broker.bootstrap,
                              "group.id": f"history-{uuid.uuid4().hex[:8]}",
                              "auto.offset.reset": "earliest", "enable.auto.commit": False,
                              "fetch.wait.max.ms": 100}, "consumer-0")
    c.subscribe([topic])
    got = consume_until(c, 200)
    assert c.commit(asynchronous=False)
    p0 = sum(1 for m in got if m.partition() == 0)
    c.seek(TopicPartition(topic, 0, 0))
    again = consume_until(c, p0)
    assert {m.partition() for m in again} == {0}
    c.close()
    assert final_read(w, broker.bootstrap, topic, 2) == 200
    w.close()

    r = check_file(path)
    assert r["valid"] and not any(r["counts"].values()), r
    s = r["stats"]
    assert (s["sends_ok"], s["final_records"], s["commits_ok"]) == (200, 200, 1), s
    assert s["polled_records"] == 200 + p0, s
    ops = [op for _, op in read_history(path)]
    kinds = [op["type"] for op in ops]
    assert kinds[0] == "header" and {"assign", "seek", "commit", "final_read"} <= set(kinds)
    commit = next(op for op in ops if op["type"] == "commit")
    assert sorted(commit["offsets"]) == sorted(
        [topic, q, sum(1 for m in got if m.partition() == q)] for q in (0, 1))
    sends = [op for op in ops if op["type"] == "send"]
    assert all(op["offset"] is not None and op["invoke_ns"] <= op["complete_ns"] for op in sends)

    # the same history without the seek marker: the re-read of partition 0 goes back
    no_seek = tmp_path / "no-seek.jsonl"
    no_seek.write_text("".join(json.dumps(op) + "\n" for op in ops if op["type"] != "seek"))
    r = check_file(no_seek)
    assert not r["valid"] and r["counts"]["non_monotonic_polls"] == 1, r
