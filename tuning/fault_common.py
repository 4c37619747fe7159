"""Pieces shared by the fault harnesses (fault-kill9-loop.py, fault-powerloss-lazyfs.py): a
broker process that can be killed and restarted, an idempotent acks=all producer and a live
consumer that record what was acknowledged and seen, and the final read-back check.

With a `HistoryWriter` (tests/history), the workload's clients also record every operation in an
operation history, and `judge_history` adds the final read to it and runs the history checker:
an independent second judgement of the same run (the harness's own counts stay as they were)."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))
sys.path.insert(0, str(REPO / "tests"))  # the `history` package

import kwire  # noqa: E402
from confluent_kafka import (OFFSET_BEGINNING, Consumer, KafkaError, KafkaException,  # noqa: E402
                             Producer, TopicPartition)

from history.checker import check_file, summary  # noqa: E402
from history.record import (HistoryWriter, RecordingConsumer, RecordingProducer,  # noqa: E402
                            final_read)
from util import consume_all, watermarks  # noqa: E402

PROBE_TOPIC = "fault-probe"
DEFAULT_BIN = os.environ.get("SHARDLOG_BIN") or str(REPO / "target" / "release" / "shardlog")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = max(0, math.ceil(p / 100.0 * len(s)) - 1)  # nearest rank
    return s[k]


def latency_summary(values: list[float]) -> dict:
    """p50/p99/max (nearest rank) and every sample, in seconds."""
    return {"p50": percentile(values, 50), "p99": percentile(values, 99),
            "max": max(values) if values else None, "all": [round(x, 4) for x in values]}


def seq_of(value: bytes) -> int:
    """The n of a record value `seq=<n>` (possibly followed by `;` and padding)."""
    return int(value.split(b"=", 1)[1].split(b";", 1)[0])


class BrokerProc:
    """One `shardlog start` process on a fixed port and data directory, restartable.

    `settings` are broker config keys passed as SHARDLOG_<KEY> environment variables (the
    caller's own SHARDLOG_* variables are not inherited)."""

    def __init__(self, binary: str, port: int, data_dir: Path, log_path: Path, cores: int,
                 settings: dict[str, str] | None = None):
        self.binary = binary
        self.port = port
        self.data_dir = data_dir
        self.log_path = log_path
        self.cores = cores
        self.settings = settings or {}
        self.proc: subprocess.Popen | None = None
        self.spawned_at = 0.0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHARDLOG_")}
        env.update({f"SHARDLOG_{k.upper()}": v for k, v in self.settings.items()})
        env.setdefault("NO_COLOR", "1")
        env.setdefault("RUST_BACKTRACE", "1")
        logf = open(self.log_path, "ab", buffering=0)
        logf.write(f"\n===== start at {time.strftime('%H:%M:%S')}\n".encode())
        self.spawned_at = time.monotonic()
        self.proc = subprocess.Popen(
            [self.binary, "start", "--listen", self.bootstrap, "--data-dir", str(self.data_dir),
             "--cores", str(self.cores), "--admin-listen", ""],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)
        logf.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> int | None:
        if not self.alive():
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def wait_serving(self, probe_ok: bool, timeout: float = 60.0) -> float:
        """Seconds from spawn until Metadata and (if probe_ok) an acks=all produce succeed."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"broker exited during start-up (status {self.proc.returncode}); "
                                   f"see {self.log_path}")
            try:
                with kwire.Conn("127.0.0.1", self.port, timeout=5) as c:
                    md = c.metadata(None)
                    if not md["brokers"]:
                        raise RuntimeError("Metadata lists no brokers")
                    if probe_ok:
                        batch = kwire.record_batch([kwire.Record(None, b"probe")])
                        r = c.produce(PROBE_TOPIC, 0, batch, acks=-1)
                        if r.error_code != 0:
                            raise RuntimeError(f"probe produce error {r.error_code}")
                    return time.monotonic() - self.spawned_at
            except Exception as e:  # noqa: BLE001 - retry until the deadline
                last = e
                time.sleep(0.02)
        raise RuntimeError(f"broker not serving after {timeout}s (last error: {last!r})")

    def panicked(self) -> bool:
        try:
            return "panicked at" in self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return False


class Workload:
    """An idempotent acks=all producer thread (values `seq=<n>`, n unique, at most `rate` per
    second, padded with `value_bytes` bytes) and a live consumer thread on `topic`."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, rate: int,
                 value_bytes: int = 0, consumer_group: str = "fault-live",
                 recreate_on_fatal: bool = False, history: HistoryWriter | None = None):
        self.bootstrap = bootstrap
        self.history = history
        self.topic = topic
        self.partitions = partitions
        self.rate = rate
        self.padding = b";" + b"x" * (value_bytes - 1) if value_bytes > 0 else b""
        self.consumer_group = consumer_group
        self.recreate_on_fatal = recreate_on_fatal
        self.producer_restarts = 0
        self.stop_producing = threading.Event()
        self.stop_consuming = threading.Event()
        self.lock = threading.Lock()
        self.sent = 0
        self.acked: dict[int, tuple[int, int]] = {}  # seq -> (partition, offset)
        self.acked_at: dict[int, float] = {}  # seq -> time.monotonic() of its delivery report
        self.failed: Counter = Counter()  # error name -> count
        self.fatal: list[str] = []  # fatal producer errors, in order
        self.client_errors: Counter = Counter()
        self.consumed: dict[tuple[int, int], bytes] = {}  # (partition, offset) -> value
        self.consumer_errors: Counter = Counter()
        self.consumer_reordered = 0

    def value(self, seq: int) -> bytes:
        return f"seq={seq}".encode() + self.padding

    # -- producer --------------------------------------------------------------
    def _on_error(self, err: KafkaError) -> None:
        with self.lock:
            self.client_errors[err.name()] += 1
            if err.fatal():
                self.fatal.append(str(err))

    def _on_delivery(self, err, msg) -> None:
        seq = seq_of(msg.value())
        now = time.monotonic()
        with self.lock:
            if err is not None:
                self.failed[err.name()] += 1
            else:
                self.acked[seq] = (msg.partition(), msg.offset())
                self.acked_at[seq] = now

    def produce_loop(self) -> None:
        """Produces until told to stop. A fatal producer error ends the loop, or, with
        `recreate_on_fatal`, the producer is replaced by a new one (a new producer id)."""
        t0 = time.monotonic()
        while True:
            conf = {
                "bootstrap.servers": self.bootstrap, "enable.idempotence": True, "acks": "all",
                "linger.ms": 5, "message.timeout.ms": 120000, "socket.timeout.ms": 10000,
                "reconnect.backoff.ms": 20, "reconnect.backoff.max.ms": 200,
                "retry.backoff.ms": 50, "error_cb": self._on_error, "log_level": 2,
            }
            p = (Producer(conf) if self.history is None else
                 RecordingProducer(self.history, conf, f"producer-{self.producer_restarts}"))
            fatal_before = len(self.fatal)
            try:
                self._produce(p, t0, fatal_before)
                left = p.flush(150)
                if left:
                    with self.lock:
                        self.failed["still_queued_at_end"] += left
            except (KafkaException, KafkaError) as e:  # produce()/poll() raise the former,
                err = e.args[0] if isinstance(e, KafkaException) else e  # flush() the latter
                if not (err.fatal() or err.code() == KafkaError._FATAL):
                    raise
                with self.lock:
                    if len(self.fatal) == fatal_before:
                        self.fatal.append(str(err))
                    self.failed["abandoned_after_fatal"] += len(p)
            if self.history is not None:
                p.close()  # sends left without a delivery report: indeterminate
            if self.stop_producing.is_set() or not self.recreate_on_fatal:
                return
            with self.lock:
                self.producer_restarts += 1

    def _produce(self, p: Producer, t0: float, fatal_before: int) -> None:
        """Sends `seq=<n>` values from n = `self.sent` on, paced to `rate` per second since t0,
        until told to stop or the producer hits a fatal error."""
        seq = self.sent
        while not self.stop_producing.is_set() and len(self.fatal) == fatal_before:
            ahead = seq / self.rate - (time.monotonic() - t0)
            if ahead > 0:
                p.poll(min(ahead, 0.05))
                continue
            try:
                p.produce(self.topic, value=self.value(seq), key=str(seq).encode(),
                          on_delivery=self._on_delivery)
            except BufferError:
                p.poll(0.05)
                continue
            seq += 1
            with self.lock:
                self.sent = seq
            p.poll(0)

    # -- consumer --------------------------------------------------------------
    def consume_loop(self) -> None:
        conf = {"bootstrap.servers": self.bootstrap, "group.id": self.consumer_group,
                "enable.auto.commit": False, "fetch.wait.max.ms": 100,
                "socket.timeout.ms": 10000, "reconnect.backoff.ms": 20,
                "reconnect.backoff.max.ms": 200, "log_level": 2,
                "error_cb": lambda e: self.consumer_errors.update([e.name()])}
        c = (Consumer(conf) if self.history is None else
             RecordingConsumer(self.history, conf, "consumer-0"))
        c.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in range(self.partitions)])
        last: dict[int, int] = {}
        try:
            while not self.stop_consuming.is_set():
                for m in c.consume(num_messages=1000, timeout=0.2):
                    if m.error():
                        self.consumer_errors[m.error().name()] += 1
                        continue
                    p, o = m.partition(), m.offset()
                    if p in last and o <= last[p]:
                        self.consumer_reordered += 1
                    last[p] = o
                    self.consumed[(p, o)] = m.value()
        finally:
            c.close()

    def start(self) -> tuple[threading.Thread, threading.Thread]:
        prod = threading.Thread(target=self.produce_loop, name="producer", daemon=True)
        cons = threading.Thread(target=self.consume_loop, name="consumer", daemon=True)
        prod.start()
        cons.start()
        return prod, cons

    def finish(self, prod: threading.Thread, cons: threading.Thread) -> None:
        """Stops producing, waits for every delivery report, lets the consumer catch up."""
        self.stop_producing.set()
        prod.join(170)
        if prod.is_alive():
            raise RuntimeError("producer did not finish flushing in 170s")
        time.sleep(1.0)
        self.stop_consuming.set()
        cons.join(30)


@dataclass
class ReadBack:
    """The whole topic read back after the run, compared with what was acknowledged."""
    messages: int = 0
    lost: list[int] = field(default_factory=list)  # seqs acknowledged but not at their offset
    duplicates: dict[bytes, int] = field(default_factory=dict)  # value -> extra copies
    holes: dict[int, int] = field(default_factory=dict)  # partition -> offsets missing
    consumer_lost: list[tuple[int, int]] = field(default_factory=list)  # seen live, then gone
    ends: dict[int, int] = field(default_factory=dict)  # partition -> end offset read back
    # acknowledged but below the partition's log start: deleted by retention (with --retention)
    expired: int = 0


def read_back(bootstrap: str, topic: str, partitions: int, acked: dict[int, tuple[int, int]],
              value_of, consumed: dict[tuple[int, int], bytes] | None = None,
              timeout: float = 120.0, retention: bool = False) -> ReadBack:
    """With `retention`, records below each partition's log start (asked for after reading,
    from the broker) count as expired, not lost, and holes are counted from the log start."""
    msgs = consume_all(bootstrap, topic, partitions, timeout=timeout)
    # Each partition's log start offset (low watermark), as the broker reports it.
    starts = ({p: watermarks(bootstrap, topic, p)[0] for p in range(partitions)}
              if retention else {})

    def live(po: tuple[int, int]) -> bool:
        return po[1] >= starts.get(po[0], 0)
    at: dict[tuple[int, int], bytes] = {}
    values: Counter = Counter()
    per_part: dict[int, list[int]] = defaultdict(list)
    for m in msgs:
        at[(m.partition, m.offset)] = m.value
        values[m.value] += 1
        per_part[m.partition].append(m.offset)
    rb = ReadBack(messages=len(msgs))
    rb.lost = sorted(s for s, po in acked.items() if live(po) and at.get(po) != value_of(s))
    rb.expired = sum(1 for po in acked.values() if not live(po))
    rb.duplicates = {v: n - 1 for v, n in values.items() if n > 1}
    for p in range(partitions):
        start = starts.get(p, 0)
        offs = {o for o in per_part.get(p, []) if o >= start}
        rb.ends[p] = max(offs) + 1 if offs else start
        missing = rb.ends[p] - start - len(offs)
        if missing:
            rb.holes[p] = missing
    rb.consumer_lost = [po for po, v in (consumed or {}).items()
                        if live(po) and at.get(po) != v]
    return rb


def judge_history(history: HistoryWriter, bootstrap: str, topic: str, partitions: int,
                  examples: int = 10) -> dict:
    """Adds the final read of `topic` (from each partition's log start to its high watermark)
    to the history, closes it and runs the history checker on the file. Returns the checker's
    report plus the history's path; prints the checker's summary."""
    final_read(history, bootstrap, topic, partitions)
    history.close()
    report = check_file(history.path, examples)
    print(summary(report), flush=True)
    return {"file": str(history.path), "lines": history.lines, **report}
