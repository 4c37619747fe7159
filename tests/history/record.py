"""Operation histories: the JSON-lines format, a writer that streams it to disk, and recording
wrappers around confluent-kafka's Producer and Consumer.

A history is what clients did and saw during a run, written so that `history.checker` can judge
the broker afterwards without trusting the harness's own bookkeeping (Jepsen's approach: the
client records, a separate checker decides).

Format (version 1): one JSON object per line, UTF-8. The first line is the header, every other
line one completed operation, in the order operations completed (one writer, one lock).

    {"type": "header", "version": 1, "idempotence": true, "acks": "all",
     "isolation": "read_uncommitted", "compacted_topics": [], "meta": {...}}

Every operation has `process` (the client that did it: a producer or consumer instance; one
process does one thing at a time, except a producer, whose sends overlap), `type`, `invoke_ns`
and `complete_ns` (time.monotonic_ns() when the call was made and when its outcome was known)
and `outcome`: `ok` (it happened), `fail` (it definitely did not happen) or `info`
(indeterminate: timed out, connection lost, producer failed with sends in flight; it may or may
not have happened - Jepsen's convention).

    send    {"type": "send", "topic": T, "partition": P|null, "key": K, "value": V,
             "offset": O|null, "error": NAME|null}
            one produced record; `offset` is the acknowledged offset when ok (null if the
            client did not get one, e.g. acks=0); `partition` is null when a failed send was
            never assigned one. Values must be unique per send and not null: they identify
            records (so tombstones cannot be recorded as sends; polls may return them).
    poll    {"type": "poll", "records": [[T, P, O, K, V], ...], "errors": [NAME, ...],
             "final": true?}
            what one poll/consume call returned, in order (empty polls are not written). Polls
            marked `final` are the read-back after the run (process "final").
    final_read {"type": "final_read", "topic": T, "partition": P, "start": S, "end": E}
            the final read of (T, P) covered [S, E): S is the log start offset, E the high
            watermark; every record in that range the broker returns is in the `final` polls.
    assign  {"type": "assign", "partitions": [[T, P, POS], ...]}
            a new assignment (also after a rebalance) of this consumer: POS is an offset, the
            string "beginning", or null (committed/unknown). Partitions not listed are dropped.
    seek    {"type": "seek", "partitions": [[T, P, POS], ...]}
            a seek of the listed partitions; the others keep their position.
    commit  {"type": "commit", "offsets": [[T, P, O], ...], "error": NAME|null}
            offsets committed (synchronous commits; asynchronous ones are `info`).

Keys and values (K, V) are JSON strings holding the bytes as UTF-8 text, null for a null key or
value, or {"b64": "..."} for bytes that are not UTF-8. The recorder shortens values longer than
`max_value_bytes` to `<first 32 bytes>...<length>:<crc32 hex>` so padded workloads give small
histories while two different values still compare different.

Bounded memory: the writer streams each line to disk as it comes (a path ending in `.gz` is
gzip-compressed); the producer wrapper keeps only sends that are still in flight, which
librdkafka's own queue bounds (queue.buffering.max.messages: produce() raises BufferError
beyond it).
"""

from __future__ import annotations

import base64
import functools
import gzip
import io
import json
import threading
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator

FORMAT_VERSION = 1
OUTCOMES = ("ok", "fail", "info")

# Delivery errors after which the record is known NOT to be in the log: librdkafka fails these
# before sending (too large, no such partition) or the broker refused the batch without
# appending it, and none is retried (so no earlier attempt can have landed). Every other error
# (timeouts, transport errors, a fatal idempotent-producer error, errors after append such as
# NOT_ENOUGH_REPLICAS_AFTER_APPEND, and purges: a purged queue also holds messages waiting for
# a retry after an attempt that may have landed) is indeterminate: `info`. confluent-kafka does
# not expose librdkafka's per-message persistence status, which would be more precise.
DEFINITE_SEND_ERRORS = frozenset({
    "_MSG_SIZE_TOO_LARGE", "MSG_SIZE_TOO_LARGE", "RECORD_LIST_TOO_LARGE",
    "_UNKNOWN_PARTITION", "_UNKNOWN_TOPIC", "UNKNOWN_TOPIC_OR_PART", "_INVALID_ARG",
    "INVALID_RECORD", "INVALID_MSG", "INVALID_TIMESTAMP", "INVALID_REQUIRED_ACKS",
    "TOPIC_AUTHORIZATION_FAILED", "UNSUPPORTED_FOR_MESSAGE_FORMAT", "POLICY_VIOLATION",
})


def encode_bytes(b: bytes | None, max_bytes: int | None = None) -> Any:
    """Bytes as they appear in a history (see the module docs)."""
    if b is None:
        return None
    if max_bytes is not None and len(b) > max_bytes:
        head = b[:32].decode("utf-8", errors="backslashreplace")
        return f"{head}...{len(b)}:{zlib.crc32(b):08x}"
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(b).decode("ascii")}


def value_key(v: Any) -> Any:
    """A hashable form of a recorded key/value (the b64 object becomes a tagged tuple)."""
    if isinstance(v, dict):
        return ("b64", v.get("b64"))
    return v


def now_ns() -> int:
    return time.monotonic_ns()


def open_history(path: str | Path, mode: str = "r") -> io.TextIOBase:
    path = str(path)
    if path.endswith(".gz"):  # level 1: the writer runs beside the workload on a busy machine
        return gzip.open(path, mode + "t", encoding="utf-8", compresslevel=1)
    return open(path, mode, encoding="utf-8")


def read_history(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-empty line; a line that is not a JSON object raises
    ValueError naming the line."""
    with open_history(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not JSON: {e}") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{n}: not a JSON object")
            yield n, obj


class HistoryWriter:
    """Appends operations to a history file, one line each, as they complete (thread-safe)."""

    def __init__(self, path: str | Path, idempotence: bool, acks: str = "all",
                 isolation: str = "read_uncommitted", compacted_topics: list[str] | None = None,
                 meta: dict | None = None, max_value_bytes: int = 64):
        self.path = Path(path)
        self.max_value_bytes = max_value_bytes
        self.lock = threading.Lock()
        self.lines = 0
        self._f = open_history(self.path, "w")
        self.write({"type": "header", "version": FORMAT_VERSION, "idempotence": idempotence,
                    "acks": acks, "isolation": isolation,
                    "compacted_topics": list(compacted_topics or []), "meta": meta or {}})

    def enc(self, b: bytes | None) -> Any:
        return encode_bytes(b, self.max_value_bytes)

    def write(self, op: dict) -> None:
        line = json.dumps(op, separators=(",", ":")) + "\n"
        with self.lock:
            if self._f is None:
                raise ValueError("history already closed")
            self._f.write(line)
            self.lines += 1

    def close(self) -> None:
        with self.lock:
            if self._f is not None:
                self._f.close()
                self._f = None

    def __enter__(self) -> HistoryWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def send_outcome(err) -> str:
    """ok / fail / info for a delivery report's error (None: ok)."""
    if err is None:
        return "ok"
    return "fail" if err.name() in DEFINITE_SEND_ERRORS and not err.retriable() else "info"


class RecordingProducer:
    """A confluent_kafka.Producer that writes every send's outcome to a history.

    Only `produce`, `poll`, `flush`, `purge` and `len()` are offered. `close()` writes every send
    still in flight (no delivery report came) as `info` with error "no_delivery_report"."""

    def __init__(self, history: HistoryWriter, conf: dict, process: str):
        from confluent_kafka import Producer
        self.history = history
        self.process = process
        self._p = Producer(conf)
        self._lock = threading.Lock()
        self._next = 0
        self._pending: dict[int, tuple] = {}  # token -> (invoke_ns, topic, key, value)

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                partition: int | None = None, on_delivery: Callable | None = None,
                **kw) -> None:
        with self._lock:
            token = self._next
            self._next += 1
            self._pending[token] = (now_ns(), topic, self.history.enc(key),
                                    self.history.enc(value))
        cb = functools.partial(self._delivered, token, on_delivery)
        args = {"value": value, "key": key, "on_delivery": cb, **kw}
        if partition is not None:
            args["partition"] = partition
        try:
            self._p.produce(topic, **args)
        except BaseException:
            with self._lock:  # not queued: no delivery report will come; nothing was sent
                self._pending.pop(token, None)
            raise

    def _delivered(self, token: int, user_cb: Callable | None, err, msg) -> None:
        with self._lock:
            pend = self._pending.pop(token, None)
        if pend is not None:
            invoke, topic, key, value = pend
            part = msg.partition()
            off = msg.offset() if err is None else None
            self.history.write({
                "process": self.process, "type": "send", "invoke_ns": invoke,
                "complete_ns": now_ns(), "outcome": send_outcome(err), "topic": topic,
                "partition": part if part is not None and part >= 0 else None, "key": key,
                "value": value, "offset": off if off is not None and off >= 0 else None,
                "error": None if err is None else err.name()})
        if user_cb is not None:
            user_cb(err, msg)

    def poll(self, timeout: float = 0) -> int:
        return self._p.poll(timeout)

    def flush(self, timeout: float = -1) -> int:
        return self._p.flush(timeout)

    def purge(self, *a, **kw) -> None:
        self._p.purge(*a, **kw)

    def __len__(self) -> int:
        return len(self._p)

    def in_flight(self) -> int:
        with self._lock:
            return len(self._pending)

    def close(self) -> None:
        """Records the sends without a delivery report as indeterminate."""
        with self._lock:
            left, self._pending = self._pending, {}
        t = now_ns()
        for invoke, topic, key, value in left.values():
            self.history.write({
                "process": self.process, "type": "send", "invoke_ns": invoke, "complete_ns": t,
                "outcome": "info", "topic": topic, "partition": None, "key": key,
                "value": value, "offset": None, "error": "no_delivery_report"})


def _position(off: int) -> Any:
    from confluent_kafka import OFFSET_BEGINNING
    if off == OFFSET_BEGINNING:
        return "beginning"
    return off if off >= 0 else None


class RecordingConsumer:
    """A confluent_kafka.Consumer that writes polls, assignments, seeks and commits to a
    history. `consume`, `poll`, `assign`, `seek`, `subscribe` (its rebalance callbacks are
    recorded as assignments), `commit`, `get_watermark_offsets` and `close` are offered."""

    def __init__(self, history: HistoryWriter, conf: dict, process: str):
        from confluent_kafka import Consumer
        self.history = history
        self.process = process
        self._c = Consumer(conf)
        self._assigned: dict[tuple[str, int], Any] = {}

    def _op(self, type_: str, invoke: int, outcome: str = "ok", **fields) -> None:
        self.history.write({"process": self.process, "type": type_, "invoke_ns": invoke,
                            "complete_ns": now_ns(), "outcome": outcome, **fields})

    def _record_poll(self, invoke: int, msgs: list) -> None:
        from confluent_kafka import KafkaError
        recs, errors = [], []
        enc = self.history.enc
        for m in msgs:
            e = m.error()
            if e is not None:
                if e.code() != KafkaError._PARTITION_EOF:
                    errors.append(e.name())
                continue
            recs.append([m.topic(), m.partition(), m.offset(), enc(m.key()), enc(m.value())])
        if recs or errors:
            self._op("poll", invoke, "ok" if recs or not errors else "fail", records=recs,
                     errors=errors)

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list:
        t = now_ns()
        msgs = self._c.consume(num_messages=num_messages, timeout=timeout)
        self._record_poll(t, msgs)
        return msgs

    def poll(self, timeout: float = -1):
        t = now_ns()
        m = self._c.poll(timeout)
        if m is not None:
            self._record_poll(t, [m])
        return m

    def assign(self, partitions: list) -> None:
        t = now_ns()
        self._c.assign(partitions)
        self._assigned = {(tp.topic, tp.partition): _position(tp.offset) for tp in partitions}
        self._op("assign", t, partitions=[[k[0], k[1], v] for k, v in self._assigned.items()])

    def seek(self, tp) -> None:
        t = now_ns()
        self._c.seek(tp)
        self._op("seek", t, partitions=[[tp.topic, tp.partition, _position(tp.offset)]])

    def subscribe(self, topics: list[str], on_assign: Callable | None = None,
                  on_revoke: Callable | None = None, **kw) -> None:
        def assigned(c, parts):
            # eager protocol: the whole new assignment; positions come from committed offsets
            self._assigned = {(tp.topic, tp.partition): _position(tp.offset) for tp in parts}
            self._op("assign", now_ns(),
                     partitions=[[k[0], k[1], v] for k, v in self._assigned.items()])
            if on_assign is not None:
                on_assign(c, parts)

        def revoked(c, parts):
            for tp in parts:
                self._assigned.pop((tp.topic, tp.partition), None)
            self._op("assign", now_ns(),
                     partitions=[[k[0], k[1], v] for k, v in self._assigned.items()])
            if on_revoke is not None:
                on_revoke(c, parts)

        self._c.subscribe(topics, on_assign=assigned, on_revoke=revoked, **kw)

    def commit(self, message=None, offsets=None, asynchronous: bool = False):
        from confluent_kafka import KafkaException
        t = now_ns()
        kw = {"asynchronous": asynchronous}
        if message is not None:
            kw["message"] = message
        if offsets is not None:
            kw["offsets"] = offsets
        try:
            res = self._c.commit(**kw)
        except KafkaException as e:
            asked = offsets or []
            self._op("commit", t, "info" if e.args[0].retriable() else "fail",
                     offsets=[[tp.topic, tp.partition, tp.offset] for tp in asked],
                     error=e.args[0].name())
            raise
        if asynchronous:  # the outcome comes later, to the on_commit callback: unknown here
            if offsets is not None:
                offs = [[tp.topic, tp.partition, tp.offset] for tp in offsets]
            elif message is not None:
                offs = [[message.topic(), message.partition(), message.offset() + 1]]
            else:
                offs = []
            self._op("commit", t, "info", offsets=offs, error=None)
        else:
            self._op("commit", t, "ok",
                     offsets=[[tp.topic, tp.partition, tp.offset] for tp in res or []],
                     error=None)
        return res

    def get_watermark_offsets(self, *a, **kw):
        return self._c.get_watermark_offsets(*a, **kw)

    def close(self) -> None:
        self._c.close()


def final_read(history: HistoryWriter, bootstrap: str, topic: str, partitions: int,
               timeout: float = 120.0, isolation: str = "read_uncommitted",
               chunk: int = 1000) -> int:
    """Reads every partition of `topic` from its log start to its high watermark and records
    it as `final` polls (at most `chunk` records a line) plus one `final_read` line per
    partition. Returns the number of records read."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, \
        TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"history-final-{now_ns()}",
                  "enable.auto.commit": False, "enable.auto.offset.store": False,
                  "enable.partition.eof": True, "fetch.wait.max.ms": 100,
                  "isolation.level": isolation, "socket.timeout.ms": 10000, "log_level": 2})
    enc = history.enc
    n = 0
    try:
        tps = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)]
        marks = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=30, cached=False)
                 for p in range(partitions)}
        c.assign(tps)
        pending = {p for p in range(partitions) if marks[p][1] > marks[p][0]}
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"final read of {topic} timed out; partitions not at end: "
                                   f"{sorted(pending)}")
            t = now_ns()
            recs = []
            for m in c.consume(num_messages=chunk, timeout=0.5):
                e = m.error()
                if e is not None:
                    if e.code() == KafkaError._PARTITION_EOF:
                        if m.offset() >= marks[m.partition()][1]:
                            pending.discard(m.partition())
                        continue
                    raise KafkaException(e)
                recs.append([topic, m.partition(), m.offset(), enc(m.key()), enc(m.value())])
            if recs:
                n += len(recs)
                history.write({"process": "final", "type": "poll", "invoke_ns": t,
                               "complete_ns": now_ns(), "outcome": "ok", "final": True,
                               "records": recs, "errors": []})
        t = now_ns()
        for p in range(partitions):
            lo, hi = marks[p]
            history.write({"process": "final", "type": "final_read", "invoke_ns": t,
                           "complete_ns": now_ns(), "outcome": "ok", "topic": topic,
                           "partition": p, "start": lo, "end": hi})
    finally:
        c.close()
    return n
