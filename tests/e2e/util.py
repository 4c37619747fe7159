"""Client-side helpers shared by the e2e tests (confluent-kafka based)."""

from __future__ import annotations

import itertools
import os
import time
import urllib.request
import uuid
from dataclasses import dataclass

from confluent_kafka import (OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer,
                             TopicPartition)
from confluent_kafka.admin import AdminClient, NewTopic

_seq = itertools.count()


def unique_topic(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{next(_seq)}-{uuid.uuid4().hex[:6]}"


def metrics(port: int, combine=lambda a, b: a + b) -> dict[str, float]:
    """Every metric of the broker's admin listener on `port`, its samples (shards, labels)
    combined by `combine` (summed by default)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name_labels, value = line.rsplit(" ", 1)
        name = name_labels.split("{", 1)[0]
        out[name] = combine(out[name], float(value)) if name in out else float(value)
    return out


def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 10000})


def create_topic(bootstrap: str, name: str, partitions: int = 1, config: dict | None = None,
                 timeout: float = 30.0) -> None:
    """Create a topic through the admin API and wait until every partition has a leader."""
    a = admin(bootstrap)
    futs = a.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1,
                                     config=config or {})], operation_timeout=timeout,
                           request_timeout=timeout)
    futs[name].result(timeout=timeout)
    wait_for_partitions(bootstrap, name, partitions, timeout)


def wait_for_partitions(bootstrap: str, name: str, partitions: int, timeout: float = 30.0) -> None:
    a = admin(bootstrap)
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        md = a.list_topics(name, timeout=10)
        t = md.topics.get(name)
        last = t
        if t is not None and t.error is None and len(t.partitions) == partitions and all(
                p.leader >= 0 for p in t.partitions.values()):
            return
        time.sleep(0.2)
    raise AssertionError(f"topic {name} did not get {partitions} led partitions: {last}")


class Delivery:
    """Collects delivery reports of a confluent-kafka Producer."""

    def __init__(self):
        self.ok: list = []  # confluent_kafka.Message
        self.failed: list = []  # (KafkaError, Message)

    def __call__(self, err, msg):
        if err is not None:
            self.failed.append((err, msg))
        else:
            self.ok.append(msg)


class ErrorLog:
    """error_cb for clients: remembers every error, and fatal ones separately."""

    def __init__(self):
        self.errors: list[KafkaError] = []

    def __call__(self, err: KafkaError):
        self.errors.append(err)

    @property
    def fatal(self) -> list[KafkaError]:
        return [e for e in self.errors if e.fatal()]


def producer(bootstrap: str, **conf) -> tuple[Producer, ErrorLog]:
    errors = ErrorLog()
    base = {"bootstrap.servers": bootstrap, "error_cb": errors, "linger.ms": 5,
            "message.timeout.ms": 60000}
    base.update({k.replace("_", "."): v for k, v in conf.items()})
    return Producer(base), errors


def flush(p: Producer, timeout: float = 60.0) -> None:
    left = p.flush(timeout)
    assert left == 0, f"{left} messages still undelivered after {timeout}s"


@dataclass
class Msg:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list | None
    timestamp: tuple[int, int]


def consume_all(bootstrap: str, topic: str, partitions: list[int] | int | None = None,
                timeout: float = 60.0, start: int | None = None, **conf) -> list[Msg]:
    """Read every partition from `start` (default: beginning) up to its end (partition EOF)
    with a librdkafka consumer using manual assignment (no consumer group)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"e2e-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False, "enable.auto.offset.store": False,
                  "enable.partition.eof": True, "fetch.wait.max.ms": 100,
                  "socket.timeout.ms": 10000, **{k.replace("_", "."): v for k, v in conf.items()}})
    try:
        if partitions is None:
            md = c.list_topics(topic, timeout=10)
            partitions = sorted(md.topics[topic].partitions)
        elif isinstance(partitions, int):
            partitions = list(range(partitions))
        off = OFFSET_BEGINNING if start is None else start
        c.assign([TopicPartition(topic, p, off) for p in partitions])
        pending = set(partitions)
        out: list[Msg] = []
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise AssertionError(f"consume timed out after {timeout}s; partitions not at end: "
                                     f"{sorted(pending)}; got {len(out)} messages")
            for m in c.consume(num_messages=10000, timeout=0.5):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        pending.discard(m.partition())
                        continue
                    raise KafkaException(m.error())
                pending.add(m.partition())  # more data after an EOF: not at end any more
                out.append(Msg(m.partition(), m.offset(), m.key(), m.value(), m.headers(),
                               m.timestamp()))
        return out
    finally:
        c.close()


def watermarks(bootstrap: str, topic: str, partition: int) -> tuple[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"e2e-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)
    finally:
        c.close()

