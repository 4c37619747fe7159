"""Pieces shared by the cluster fault harnesses (tuning/cluster-faults.py and
tests/e2e/test_cluster_faults.py): a 3-broker cluster of real `shardlog start` processes (the
e2e `Cluster` class, here also on fixed ports), an RF=3 topic, a paced idempotent producer
thread that records an operation history (tests/history) and the time of every
acknowledgement, leader/ISR look-ups, and the final judgement by the history checker plus the
offset-contiguity check.

Import from a tuning script: `from cluster_common import ...` (this directory is the script's).
Import from tests/e2e: the test puts tuning/ on sys.path first."""

from __future__ import annotations

import bisect
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for p in (REPO / "tests" / "e2e", REPO / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import kwire  # noqa: E402
from confluent_kafka import KafkaError, KafkaException  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402
from conftest import (CLUSTER_PORT_STRIDE, Cluster, ClusterBroker,  # noqa: E402
                      metadata_v7)

from history.checker import Checker, check_file, summary  # noqa: E402
from history.record import (HistoryWriter, RecordingProducer, final_read, now_ns,  # noqa: E402
                            read_history)


class FixedCluster(Cluster):
    """A `Cluster` on the fixed port block base, base+10, base+20 (for scripts that use a
    given port range instead of random free ports)."""

    def __init__(self, workdir: Path, base: int, brokers: int = 3, cores: int = 1,
                 extra_args: list[str] | None = None, env: dict[str, str] | None = None):
        self.workdir = workdir
        self.base = base
        self.voters = ",".join(f"{i}@127.0.0.1:{base + CLUSTER_PORT_STRIDE * (i - 1) + 1}"
                               for i in range(1, brokers + 1))
        self.brokers = [ClusterBroker(workdir, i, base, self.voters, cores, extra_args, env)
                        for i in range(1, brokers + 1)]

    def start(self, wait: bool = True) -> "FixedCluster":
        """Refuses to start when a port of the block is taken (an earlier run still going),
        and checks that every broker came up."""
        import socket
        for b in self.brokers:
            for port in (b.port, b.controller_port, b.admin_port):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                    s.settimeout(1)
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        raise RuntimeError(f"port {port} is in use: is another cluster running "
                                           f"on base port {self.base}?")
        super().start(wait=wait)
        if wait:
            for b in self.brokers:
                b.wait_ready()
        return self


def partition_state(cluster: Cluster, topic: str, partition: int = 0,
                    via: int | None = None) -> dict | None:
    """The partition's Metadata entry (leader, leader_epoch, replicas, isr) or None."""
    t = cluster.metadata([topic], via=via)["topics"].get(topic)
    if not t or t["error_code"] != 0:
        return None
    for p in t["partitions"]:
        if p["partition"] == partition:
            return p
    return None


def create_rf3_topic(cluster: Cluster, topic: str, partitions: int = 1,
                     min_isr: int = 2, timeout: float = 60.0) -> dict:
    """Creates the topic (RF=3, min.insync.replicas) and waits for a leader and a full ISR on
    every partition. Returns partition 0's Metadata entry."""
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap, "socket.timeout.ms": 10000})
    deadline = time.monotonic() + timeout
    while True:
        futs = admin.create_topics([NewTopic(topic, num_partitions=partitions,
                                             replication_factor=3,
                                             config={"min.insync.replicas": str(min_isr)})],
                                   operation_timeout=30, request_timeout=30)
        try:
            futs[topic].result(timeout)
            break
        except KafkaException as e:
            # Right after start-up a broker may still be fenced (registered, not yet caught
            # up): the controller counts only unfenced brokers for placement.
            if (e.args[0].code() != KafkaError.INVALID_REPLICATION_FACTOR
                    or time.monotonic() > deadline):
                raise
            time.sleep(0.2)
    for p in range(partitions):
        wait_isr(cluster, topic, 3, partition=p, timeout=timeout)
    return partition_state(cluster, topic, 0)


def wait_isr(cluster: Cluster, topic: str, size: int, partition: int = 0,
             timeout: float = 60.0, via: int | None = None) -> dict:
    """Until the partition has a leader and an ISR of `size` (as every live broker's Metadata
    says when `via` is None)."""
    def ok():
        vias = [via] if via is not None else [b.node_id for b in cluster.alive()]
        states = [partition_state(cluster, topic, partition, via=v) for v in vias]
        if all(s is not None and s["leader"] >= 0 and len(s["isr"]) == size for s in states):
            return states[0]
        return None
    return cluster.wait_until(ok, timeout,
                              f"{topic}/{partition} to have a leader and ISR of {size}")


def wait_new_leader(cluster: Cluster, topic: str, old: int, partition: int = 0,
                    timeout: float = 60.0, interval: float = 0.05) -> int:
    """Until some live broker's Metadata names a leader other than `old`; returns it."""
    def new():
        for b in cluster.alive():
            try:
                s = partition_state(cluster, topic, partition, via=b.node_id)
            except Exception:  # noqa: BLE001 - that broker does not answer (yet)
                continue
            if s is not None and s["leader"] >= 0 and s["leader"] != old:
                return s["leader"]
        return None
    return cluster.wait_until(new, timeout, f"a leader other than {old} for {topic}/{partition}",
                              interval=interval)


PRODUCER_CONF = {
    "enable.idempotence": True, "acks": "all", "linger.ms": 5,
    "message.timeout.ms": 60000, "request.timeout.ms": 5000, "socket.timeout.ms": 5000,
    "reconnect.backoff.ms": 20, "reconnect.backoff.max.ms": 200, "retry.backoff.ms": 20,
    "retry.backoff.max.ms": 200, "topic.metadata.refresh.fast.interval.ms": 50,
    "log_level": 2,
}


# Acknowledgements within this long after a fault are not counted as "the first after it":
# answers the old leader sent just before it died are still being read by the client then.
ACK_GRACE_S = 0.05


class ClusterWorkload:
    """An idempotent acks=all (or acks=1) confluent-kafka producer thread sending unique values
    `seq=<n>` to one partition at most `rate` a second, every send recorded in `history`.
    Keeps the monotonic time of every acknowledgement (`ack_times`, sorted) for
    unavailability windows, and counts delivery errors by name."""

    def __init__(self, bootstrap: str, topic: str, history: HistoryWriter, rate: int = 200,
                 partition: int = 0, acks: str = "all", extra_conf: dict | None = None):
        self.bootstrap = bootstrap
        self.topic = topic
        self.history = history
        self.rate = rate
        self.partition = partition
        self.acks = acks
        self.extra_conf = extra_conf or {}
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.sent = 0
        self.acked = 0
        self.ack_times: list[float] = []
        self.ack_offsets: list[int] = []
        self.failed: Counter = Counter()
        self.client_errors: Counter = Counter()
        self.fatal: list[str] = []
        self.left_in_queue = 0
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def _on_error(self, err: KafkaError) -> None:
        with self.lock:
            self.client_errors[err.name()] += 1
            if err.fatal():
                self.fatal.append(str(err))

    def _delivered(self, err, msg) -> None:
        now = time.monotonic()
        with self.lock:
            if err is not None:
                self.failed[err.name()] += 1
            else:
                self.acked += 1
                self.ack_times.append(now)  # delivery callbacks run on this one thread: sorted
                self.ack_offsets.append(msg.offset())

    def _run(self) -> None:
        conf = {**PRODUCER_CONF, "bootstrap.servers": self.bootstrap, "acks": self.acks,
                "enable.idempotence": self.acks == "all", "error_cb": self._on_error,
                **self.extra_conf}
        if self.acks != "all":
            conf["enable.idempotence"] = False
            conf["max.in.flight.requests.per.connection"] = 1
        p = RecordingProducer(self.history, conf, "producer-0")
        t0 = time.monotonic()
        seq = 0
        try:
            while not self.stop_event.is_set() and not self.fatal:
                ahead = seq / self.rate - (time.monotonic() - t0)
                if ahead > 0:
                    p.poll(min(ahead, 0.02))
                    continue
                try:
                    p.produce(self.topic, value=f"seq={seq}".encode(), key=str(seq).encode(),
                              partition=self.partition, on_delivery=self._delivered)
                except BufferError:
                    p.poll(0.05)
                    continue
                except KafkaException as e:
                    if e.args[0].fatal():
                        with self.lock:
                            self.fatal.append(str(e.args[0]))
                        break
                    raise
                seq += 1
                self.sent = seq
                p.poll(0)
            self.left_in_queue = p.flush(90)
        except BaseException as e:  # noqa: BLE001 - reported by finish()
            self.error = e
        finally:
            p.close()

    def start(self) -> "ClusterWorkload":
        self.thread = threading.Thread(target=self._run, name="producer", daemon=True)
        self.thread.start()
        return self

    def finish(self) -> None:
        """Stops producing and waits for every delivery report (flush)."""
        self.stop_event.set()
        assert self.thread is not None
        self.thread.join(120)
        if self.thread.is_alive():
            raise RuntimeError("producer did not finish flushing in 120 s")
        if self.error is not None:
            raise RuntimeError(f"producer thread failed: {self.error!r}") from self.error

    # -- observations ------------------------------------------------------------------
    def acks_count(self) -> int:
        with self.lock:
            return self.acked

    def wait_acks(self, more: int, timeout: float = 30.0) -> None:
        """Until `more` acknowledgements beyond the current count have come."""
        want = self.acks_count() + more
        deadline = time.monotonic() + timeout
        while self.acks_count() < want:
            if time.monotonic() > deadline:
                raise AssertionError(f"producer got {self.acks_count()} acks, wanted {want} "
                                     f"within {timeout}s (errors {dict(self.failed)})")
            time.sleep(0.02)

    def first_ack_after(self, t: float) -> float | None:
        """The monotonic time of the first acknowledgement after `t`, None if none yet."""
        with self.lock:
            i = bisect.bisect_right(self.ack_times, t)
            return self.ack_times[i] if i < len(self.ack_times) else None

    def last_ack_before(self, t: float) -> float | None:
        with self.lock:
            i = bisect.bisect_left(self.ack_times, t)
            return self.ack_times[i - 1] if i > 0 else None

    def longest_gap(self, t0: float, t1: float) -> float:
        """The longest time without an acknowledgement that overlaps [t0, t1]: from the last
        acknowledgement before t0 to the first after t1, the largest step between two in a
        row (to t1 if none came after it yet)."""
        with self.lock:
            lo = max(bisect.bisect_left(self.ack_times, t0) - 1, 0)
            hi = bisect.bisect_right(self.ack_times, t1)
            ts = self.ack_times[lo:hi + 1]
        if not ts:
            return t1 - t0
        if ts[-1] < t1:
            ts.append(t1)
        if ts[0] > t0:
            ts.insert(0, t0)
        return max(b - a for a, b in zip(ts, ts[1:])) if len(ts) > 1 else 0.0

    def wait_ack_after(self, t: float, timeout: float = 60.0) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            a = self.first_ack_after(t)
            if a is not None:
                return a
            time.sleep(0.005)
        return None


@dataclass
class Judgement:
    report: dict  # the history checker's report
    final_offsets: list[int]
    final_values: int
    values: set
    acked_sends: int
    info_sends: int
    failed_sends: int

    def problems(self) -> list[str]:
        """Everything wrong: checker anomalies, holes in the final read, ok sends missing."""
        out = []
        if not self.report["valid"]:
            out.append(f"history checker: {summary(self.report)}")
        offs = self.final_offsets
        if offs != list(range(offs[0] if offs else 0, (offs[-1] + 1) if offs else 0)):
            out.append(f"final read offsets not contiguous ({len(offs)} records, "
                       f"first {offs[:1]}, last {offs[-1:]})")
        if offs and offs[0] != 0:
            out.append(f"final read starts at {offs[0]}, not 0")
        if self.final_values != len(offs):
            out.append(f"{len(offs) - self.final_values} duplicated values in the final read")
        return out


def judge(history: HistoryWriter, bootstrap: str, topic: str, partitions: int = 1) -> Judgement:
    """Adds the final read to the history, closes it, runs the checker, and counts the final
    read's offsets and distinct values (partition 0) and the sends by outcome."""
    final_read(history, bootstrap, topic, partitions)
    history.close()
    report = check_file(history.path, 10)
    offsets: list[int] = []
    values: set = set()
    outcomes: Counter = Counter()
    for _, op in read_history(history.path):
        if op.get("type") == "poll" and op.get("final"):
            for t, p, o, _k, v in op["records"]:
                if p == 0:
                    offsets.append(o)
                    values.add(str(v))
        elif op.get("type") == "send":
            outcomes[op["outcome"]] += 1
    offsets.sort()
    return Judgement(report, offsets, len(values), values, outcomes["ok"], outcomes["info"],
                     outcomes["fail"])


def stale_leader_produce(broker: ClusterBroker, topic: str, value: bytes,
                         timeout_ms: int = 3000, acks: int = -1) -> tuple[str, object]:
    """One produce straight to `broker` (a raw connection, no client metadata): ("ok", offset),
    ("error", error code) or ("timeout"/"io", description)."""
    try:
        with kwire.Conn(broker.host, broker.port, timeout=timeout_ms / 1000 + 5) as c:
            r = c.produce(topic, 0, kwire.record_batch([kwire.Record(None, value)]),
                          acks=acks, timeout_ms=timeout_ms)
    except TimeoutError as e:
        return "timeout", repr(e)
    except OSError as e:
        return "io", repr(e)
    if r.error_code == 0:
        return "ok", r.base_offset
    return "error", r.error_code


__all__ = ["ACK_GRACE_S", "FixedCluster", "Cluster", "ClusterBroker", "ClusterWorkload",
           "HistoryWriter",
           "Judgement", "Checker", "judge", "create_rf3_topic", "wait_isr", "wait_new_leader",
           "partition_state", "stale_leader_produce", "metadata_v7", "now_ns", "kwire"]
