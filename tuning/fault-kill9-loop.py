#!/usr/bin/env python3
"""kill -9 loop: a single shardlog broker killed with SIGKILL at random intervals while an
idempotent acks=all producer and a consumer run; afterwards the whole topic is read back.

    .venv/bin/python tuning/fault-kill9-loop.py [--duration 120] [--min-interval 3]
        [--max-interval 20] [--port 59092] [--data-dir DIR] [--partitions 3] [--rate 2000]
        [--seed N] [--json FILE]

What it does:
  * starts `target/release/shardlog start --listen 127.0.0.1:PORT --data-dir DIR --cores 2`
    (admin listener disabled), creates the topic (PARTITIONS partitions) and a 1-partition
    probe topic;
  * a producer thread (confluent-kafka, enable.idempotence=true, acks=all) sends values
    `seq=<n>` with a unique n, at most RATE per second; every delivery-report success is an
    *acknowledged* record with its (partition, offset);
  * a consumer thread (confluent-kafka, manual assignment from the beginning) reads along;
  * the main thread sleeps a random MIN..MAX seconds, kills the broker with SIGKILL, starts it
    again on the same port and data directory and measures *restart-to-serving*: from the new
    process's spawn until a Metadata request and an acks=all produce (raw wire client, probe
    topic) both succeed; repeated until DURATION seconds have passed;
  * then the producer stops and flushes, and the whole topic is read back from offset 0 to the
    end with a fresh consumer.

Report (stdout, and JSON with --json):
  acknowledged   records whose delivery report succeeded
  lost           acknowledged records missing from the read-back, or found at another offset
  duplicates     values present more than once in the read-back (0 expected: idempotence)
  holes          per partition, offsets missing between 0 and the end of the read-back
  consumer_lost  records the live consumer saw that are not at the same offset afterwards
  restarts       kill -9 + restart cycles; restart_to_serving p50/p99/max in seconds

Exit status: 0 when lost, duplicates, holes and consumer_lost are all 0, the producer had no
fatal error and the broker never panicked; 1 otherwise; 2 when the harness itself failed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

import kwire  # noqa: E402
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition  # noqa: E402

from util import consume_all, create_topic  # noqa: E402

PROBE_TOPIC = "fault-probe"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = max(0, math.ceil(p / 100.0 * len(s)) - 1)  # nearest rank
    return s[k]


class BrokerProc:
    def __init__(self, binary: str, port: int, data_dir: Path, log_path: Path, cores: int):
        self.binary = binary
        self.port = port
        self.data_dir = data_dir
        self.log_path = log_path
        self.cores = cores
        self.proc: subprocess.Popen | None = None
        self.spawned_at = 0.0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHARDLOG_")}
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
    def __init__(self, bootstrap: str, topic: str, partitions: int, rate: int):
        self.bootstrap = bootstrap
        self.topic = topic
        self.partitions = partitions
        self.rate = rate
        self.stop_producing = threading.Event()
        self.stop_consuming = threading.Event()
        self.lock = threading.Lock()
        self.sent = 0
        self.acked: dict[int, tuple[int, int]] = {}  # seq -> (partition, offset)
        self.failed: Counter = Counter()  # error name -> count
        self.fatal: list[str] = []
        self.client_errors: Counter = Counter()
        self.consumed: dict[tuple[int, int], bytes] = {}  # (partition, offset) -> value
        self.consumer_errors: Counter = Counter()
        self.consumer_reordered = 0

    # -- producer --------------------------------------------------------------
    def _on_error(self, err: KafkaError) -> None:
        with self.lock:
            self.client_errors[err.name()] += 1
            if err.fatal():
                self.fatal.append(str(err))

    def _on_delivery(self, err, msg) -> None:
        seq = int(msg.value().split(b"=", 1)[1])
        with self.lock:
            if err is not None:
                self.failed[err.name()] += 1
            else:
                self.acked[seq] = (msg.partition(), msg.offset())

    def produce_loop(self) -> None:
        p = Producer({
            "bootstrap.servers": self.bootstrap, "enable.idempotence": True, "acks": "all",
            "linger.ms": 5, "message.timeout.ms": 120000, "socket.timeout.ms": 10000,
            "reconnect.backoff.ms": 20, "reconnect.backoff.max.ms": 200,
            "retry.backoff.ms": 50, "error_cb": self._on_error, "log_level": 2,
        })
        self.producer = p
        seq = 0
        t0 = time.monotonic()
        while not self.stop_producing.is_set():
            if self.fatal:
                break
            # pace to `rate` records per second
            ahead = seq / self.rate - (time.monotonic() - t0)
            if ahead > 0:
                p.poll(min(ahead, 0.05))
                continue
            value = f"seq={seq}".encode()
            try:
                p.produce(self.topic, value=value, key=str(seq).encode(),
                          on_delivery=self._on_delivery)
            except BufferError:
                p.poll(0.05)
                continue
            seq += 1
            with self.lock:
                self.sent = seq
            p.poll(0)
        left = p.flush(150)
        if left:
            with self.lock:
                self.failed["still_queued_at_end"] += left

    # -- consumer --------------------------------------------------------------
    def consume_loop(self) -> None:
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "fault-kill9-live",
                      "enable.auto.commit": False, "fetch.wait.max.ms": 100,
                      "socket.timeout.ms": 10000, "reconnect.backoff.ms": 20,
                      "reconnect.backoff.max.ms": 200, "log_level": 2,
                      "error_cb": lambda e: self.consumer_errors.update([e.name()])})
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=120.0, help="seconds of kill loop (120)")
    ap.add_argument("--min-interval", type=float, default=3.0)
    ap.add_argument("--max-interval", type=float, default=20.0)
    ap.add_argument("--port", type=int, default=59092)
    ap.add_argument("--data-dir", type=Path, default=None,
                    help="data directory (default: a fresh temporary one, removed on success)")
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--rate", type=int, default=2000, help="records per second (2000)")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None, help="write the report as JSON here")
    ap.add_argument("--bin", default=os.environ.get("SHARDLOG_BIN")
                    or str(REPO / "target" / "release" / "shardlog"))
    args = ap.parse_args()
    if not (0 < args.min_interval <= args.max_interval):
        ap.error("need 0 < --min-interval <= --max-interval")
    if not os.access(args.bin, os.X_OK):
        print(f"shardlog binary not found at {args.bin}; build it with "
              f"`cargo build --release -p shardlog-server`", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    rng = random.Random(seed)

    tmp = None
    if args.data_dir is None:
        tmp = Path(tempfile.mkdtemp(prefix="shardlog-kill9-"))
        data_dir = tmp / "data"
    else:
        data_dir = args.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = (tmp or data_dir.parent) / "fault-kill9-broker.log"
    broker = BrokerProc(args.bin, args.port, data_dir, log_path, args.cores)
    topic = f"kill9-{seed}"
    log(f"seed {seed}; broker {broker.bootstrap}, data {data_dir}, log {log_path}")

    restart_s: list[float] = []
    kills = 0
    try:
        broker.start()
        first = broker.wait_serving(probe_ok=False)
        create_topic(broker.bootstrap, PROBE_TOPIC, 1)
        create_topic(broker.bootstrap, topic, args.partitions)
        log(f"serving after {first:.2f}s; topic {topic} ({args.partitions} partitions), "
            f"{args.rate} rec/s, kill every {args.min_interval}-{args.max_interval}s "
            f"for {args.duration}s")

        wl = Workload(broker.bootstrap, topic, args.partitions, args.rate)
        prod = threading.Thread(target=wl.produce_loop, name="producer", daemon=True)
        cons = threading.Thread(target=wl.consume_loop, name="consumer", daemon=True)
        prod.start()
        cons.start()

        end = time.monotonic() + args.duration
        while True:
            wait = rng.uniform(args.min_interval, args.max_interval)
            if time.monotonic() + wait >= end:
                time.sleep(max(0.0, end - time.monotonic()))
                break
            time.sleep(wait)
            if not broker.alive():
                raise RuntimeError(f"broker died on its own (status {broker.proc.returncode}); "
                                   f"see {log_path}")
            with wl.lock:
                acked_before = len(wl.acked)
            broker.kill9()
            kills += 1
            broker.start()
            s = broker.wait_serving(probe_ok=True)
            restart_s.append(s)
            log(f"kill #{kills}: {acked_before} acknowledged so far; serving again after {s:.3f}s")

        log("loop over; stopping the producer and flushing")
        wl.stop_producing.set()
        prod.join(170)
        if prod.is_alive():
            raise RuntimeError("producer did not finish flushing in 170s")
        time.sleep(1.0)  # let the live consumer catch up
        wl.stop_consuming.set()
        cons.join(30)

        log("reading the whole topic back")
        msgs = consume_all(broker.bootstrap, topic, args.partitions, timeout=120)
        at: dict[tuple[int, int], bytes] = {}
        values: Counter = Counter()
        per_part: dict[int, list[int]] = defaultdict(list)
        for m in msgs:
            at[(m.partition, m.offset)] = m.value
            values[m.value] += 1
            per_part[m.partition].append(m.offset)

        lost = [s for s, po in wl.acked.items() if at.get(po) != f"seq={s}".encode()]
        dups = {v: n for v, n in values.items() if n > 1}
        holes = {}
        for p in range(args.partitions):
            offs = sorted(per_part.get(p, []))
            expect = offs[-1] + 1 if offs else 0
            missing = expect - len(set(offs))
            if missing:
                holes[p] = missing
        consumer_lost = [po for po, v in wl.consumed.items() if at.get(po) != v]
        panicked = broker.panicked()
        rc = broker.stop()
        clean_stop = rc == 0

        report = {
            "seed": seed, "duration_s": args.duration, "partitions": args.partitions,
            "rate": args.rate, "sent": wl.sent, "acknowledged": len(wl.acked),
            "delivery_failures": dict(wl.failed), "read_back": len(msgs),
            "lost": len(lost), "lost_sample": lost[:10], "duplicates": sum(n - 1 for n in dups.values()),
            "duplicate_sample": [v.decode() for v in list(dups)[:10]],
            "holes": sum(holes.values()), "holes_per_partition": holes,
            "consumed_live": len(wl.consumed), "consumer_lost": len(consumer_lost),
            "consumer_reordered": wl.consumer_reordered,
            "restarts": kills,
            "restart_to_serving_s": {"p50": percentile(restart_s, 50),
                                     "p99": percentile(restart_s, 99),
                                     "max": max(restart_s) if restart_s else None,
                                     "all": [round(x, 4) for x in restart_s]},
            "producer_fatal": wl.fatal, "producer_client_errors": dict(wl.client_errors),
            "consumer_errors": dict(wl.consumer_errors), "broker_panicked": panicked,
            "clean_stop_at_end": clean_stop,
        }
    except Exception as e:  # noqa: BLE001 - harness failure: report it and exit 2
        log(f"HARNESS FAILURE: {e!r}")
        if broker.alive():
            broker.proc.kill()
            broker.proc.wait()
        return 2

    rs = report["restart_to_serving_s"]
    fmt = (lambda v: "n/a" if v is None else f"{v:.3f}s")
    print(json.dumps(report, indent=2) if args.json is None else "", end="")
    print(f"\nacknowledged {report['acknowledged']} (sent {report['sent']}, read back "
          f"{report['read_back']}), lost {report['lost']}, duplicates {report['duplicates']}, "
          f"holes {report['holes']}, consumer-seen-then-lost {report['consumer_lost']}; "
          f"restarts {kills}, restart-to-serving p50 {fmt(rs['p50'])} p99 {fmt(rs['p99'])} "
          f"max {fmt(rs['max'])}")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    bad = (report["lost"] or report["duplicates"] or report["holes"] or report["consumer_lost"]
           or report["producer_fatal"] or panicked)
    if bad:
        log(f"FAIL (data dir and broker log kept: {data_dir}, {log_path})")
        return 1
    if not clean_stop:
        log(f"FAIL: broker did not stop cleanly on SIGTERM at the end (status {rc})")
        return 1
    log("PASS")
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
