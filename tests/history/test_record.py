"""The recorder without a broker: value encoding, the writer's format (plain and gzip), and
the producer wrapper's outcomes for sends that never reached a broker."""

from __future__ import annotations

import json
import time

from history.checker import check_file
from history.record import (DEFINITE_SEND_ERRORS, HistoryWriter, RecordingProducer, encode_bytes,
                            read_history, send_outcome)


def test_encode_bytes():
    assert encode_bytes(None) is None
    assert encode_bytes(b"seq=1") == "seq=1"
    assert encode_bytes(b"\xff\x00") == {"b64": "/wA="}
    long1, long2 = b"seq=1;" + b"x" * 100, b"seq=1;" + b"x" * 99 + b"y"
    e1, e2 = encode_bytes(long1, 64), encode_bytes(long2, 64)
    assert e1.startswith("seq=1;xxx") and e1 != e2 and len(e1) < 64
    assert encode_bytes(long1, 64) == e1  # deterministic


class FakeErr:
    def __init__(self, name: str, retriable: bool = False):
        self._n, self._r = name, retriable

    def name(self) -> str:
        return self._n

    def retriable(self) -> bool:
        return self._r


def test_send_outcome_is_definite_only_for_refusals_before_append():
    assert send_outcome(None) == "ok"
    assert send_outcome(FakeErr("_UNKNOWN_PARTITION")) == "fail"
    assert send_outcome(FakeErr("MSG_SIZE_TOO_LARGE")) == "fail"
    for indeterminate in ("_MSG_TIMED_OUT", "_TRANSPORT", "REQUEST_TIMED_OUT", "_FATAL",
                          "NOT_ENOUGH_REPLICAS_AFTER_APPEND", "_PURGE_INFLIGHT", "_PURGE_QUEUE",
                          "OUT_OF_ORDER_SEQUENCE_NUMBER", "KAFKA_STORAGE_ERROR"):
        assert indeterminate not in DEFINITE_SEND_ERRORS
        assert send_outcome(FakeErr(indeterminate)) == "info"
    assert send_outcome(FakeErr("MSG_SIZE_TOO_LARGE", retriable=True)) == "info"


def test_writer_streams_lines_plain_and_gzip(tmp_path):
    for name in ("h.jsonl", "h.jsonl.gz"):
        w = HistoryWriter(tmp_path / name, idempotence=True, meta={"run": 1})
        w.write({"process": "p", "type": "send", "outcome": "info", "topic": "t",
                 "partition": None, "key": None, "value": "a", "offset": None, "error": "x"})
        w.close()
        lines = list(read_history(tmp_path / name))
        assert [n for n, _ in lines] == [1, 2]
        assert lines[0][1]["type"] == "header" and lines[0][1]["meta"] == {"run": 1}
        r = check_file(tmp_path / name)
        assert r["valid"] and r["stats"]["sends_info"] == 1


def test_producer_wrapper_records_purged_and_unreported_sends(tmp_path):
    path = tmp_path / "h.jsonl"
    w = HistoryWriter(path, idempotence=False)
    # nothing listens on port 1: no send can reach a broker
    p = RecordingProducer(w, {"bootstrap.servers": "127.0.0.1:1", "log_level": 0,
                              "message.timeout.ms": 60000}, "producer-0")
    seen = []
    for i in range(3):
        p.produce("t", value=f"v{i}".encode(), key=b"k", on_delivery=lambda e, m: seen.append(e))
    assert p.in_flight() == 3
    p.purge(in_queue=True, in_flight=True)
    deadline = time.monotonic() + 10
    while len(seen) < 3 and time.monotonic() < deadline:
        p.poll(0.1)
    assert len(seen) == 3  # the caller's own callback still runs
    p.produce("t", value=b"v3")  # still queued when the harness gives up on it
    p.close()
    w.close()
    ops = [o for _, o in read_history(path)][1:]
    assert [(o["value"], o["outcome"], o["error"]) for o in ops] == [
        ("v0", "info", "_PURGE_QUEUE"), ("v1", "info", "_PURGE_QUEUE"),
        ("v2", "info", "_PURGE_QUEUE"), ("v3", "info", "no_delivery_report")]
    assert all(o["invoke_ns"] <= o["complete_ns"] and o["key"] in ("k", None) for o in ops)
    assert json.loads(path.read_text().splitlines()[0])["idempotence"] is False
    r = check_file(path)
    assert r["valid"] and r["stats"]["sends_info"] == 4 and r["stats"]["info_absent"] == 4
