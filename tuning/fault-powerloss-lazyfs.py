#!/usr/bin/env python3
"""Power-loss loop on LazyFS: a shardlog broker whose data directory is on LazyFS is killed with
SIGKILL at chosen moments, and LazyFS then drops every byte that was not fsynced, as a power
cut would; the broker restarts on what is left while an idempotent acks=all producer and a
consumer run. Afterwards the whole topic is read back and the losses are compared with what the
flush policy promises (docs/ARCHITECTURE.md, "Flush policies").

    .venv/bin/python tuning/fault-powerloss-lazyfs.py --policy every-batch [--duration 120]
        [--min-interval 3] [--max-interval 10] [--flush-interval-ms 1000] [--port 59093]
        [--workdir DIR] [--partitions 3] [--rate 2000] [--value-bytes 100]
        [--segment-bytes 1048576] [--lazyfs /opt/lazyfs/bin/lazyfs] [--seed N] [--json FILE]
        [--history FILE]

Needs root, /dev/fuse and LazyFS built by tuning/lazyfs-build.sh (its --root-dir option).

One power cut:
  1. SIGKILL the broker (nothing it does afterwards can reach the file system);
  2. `lazyfs::clear-cache`: LazyFS drops all data written since the last fsync of each file;
  3. SIGKILL LazyFS and unmount it (its memory is gone, as after a reboot), mount it again;
  4. start the broker on the same data directory and time restart-to-serving.
Cuts rotate over three moments:
  * random: a random moment MIN..MAX seconds after the last restart;
  * after-roll: as soon as a new segment file of the topic appears (segment.bytes is small,
    so segments roll every few seconds): catches a sealed segment or a new one whose data is
    acknowledged before it is durable (LazyFS passes file creations and directory operations
    straight through, so a lost directory entry cannot show here: docs/RELIABILITY.md);
  * after-create: a new 1-partition topic is created, 5 acks=all batches are produced to it
    with a raw wire client, and the power is cut right after the last acknowledgement.
After DURATION seconds: the producer flushes, the topic and every created topic are read back,
then the broker is stopped cleanly, the power is cut once more and everything is read back
again (a clean shutdown must leave everything durable under every policy). The producer and
the consumer also record an operation history (tests/history; default WORKDIR/history.jsonl.gz)
whose final read is taken beside the first read-back; the history checker judges it (report key
`history`).

Checks (exit 1 if one fails; 2 if the harness itself failed):
  every policy   no duplicates, no offset holes, no broker panic, a clean SIGTERM stop,
                 nothing lost across the clean shutdown + power cut, LazyFS cache below 95 %
                 (a full LazyFS cache writes through: the test would be meaningless);
                 per cut and partition, the acknowledged records lost are a suffix of that
                 partition (nothing acknowledged after a lost record survives), and they all
                 lie in the segment that was active at the cut (sealed segments are fsynced);
  every-batch    0 acknowledged records lost (topic and created topics), consumer_lost 0, no
                 fatal producer error, the history checker's verdict valid (every anomaly kind
                 0);
  interval       every lost record was acknowledged less than flush_interval_ms + slack before
                 the cut (its age is measured from the delivery report, which comes after the
                 broker's acknowledgement, so the age is a lower bound);
  never          only the bound above (the active segment).
  interval/never the history checker finds no duplicates and no failed send present (its
                 lost, truncated-read, inconsistent-offset, skipped and non-monotonic counts
                 are reported: losing acknowledged data is within these policies' promise, and
                 a consumer that read it then sees the log rewritten).
Under interval and never, losing acknowledged records breaks the idempotent producer's sequence
numbers and librdkafka fails it with a fatal error; the harness then starts a new producer
(reported as producer_restarts) and goes on.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from fault_common import (DEFAULT_BIN, PROBE_TOPIC, BrokerProc, HistoryWriter, Workload,
                          judge_history, latency_summary, log, read_back)

# tests/e2e, put on sys.path by fault_common
import kwire  # noqa: E402
from util import consume_all, create_topic  # noqa: E402

POLICIES = ("every-batch", "interval", "never")
CUT_KINDS = ("random", "after-roll", "after-create")


class LazyFS:
    """A LazyFS mount over `workdir/root` at `workdir/mnt`, controlled through its FIFO."""

    def __init__(self, binary: str, workdir: Path, cache_mb: int):
        self.binary = binary
        self.root = workdir / "root"
        self.mnt = workdir / "mnt"
        self.fifo = workdir / "faults.fifo"
        self.config = workdir / "lazyfs.toml"
        self.out_path = workdir / "lazyfs.out"
        self.cache_mb = cache_mb
        self.proc: subprocess.Popen | None = None
        self.mounts = 0

    def mounted(self) -> bool:
        mnt = str(self.mnt)
        with open("/proc/self/mountinfo") as f:
            return any(line.split()[4] == mnt for line in f)

    def mount(self, timeout: float = 60.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.mnt.mkdir(parents=True, exist_ok=True)
        # No eviction: pages stay in LazyFS's cache until fsync or until they are dropped.
        self.config.write_text(
            "[faults]\n"
            f'fifo_path="{self.fifo}"\n'
            "[cache]\n"
            "apply_eviction=false\n"
            "[cache.simple]\n"
            f'custom_size="{self.cache_mb}mb"\n'
            "blocks_per_page=1\n"
            "[filesystem]\n"
            "log_all_operations=false\n"
            'logfile=""\n')
        out = open(self.out_path, "ab", buffering=0)
        out.write(f"\n===== mount at {time.strftime('%H:%M:%S')}\n".encode())
        self.proc = subprocess.Popen(
            [self.binary, str(self.mnt), "--config-path", str(self.config),
             "--root-dir", str(self.root), "-f"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
        out.close()
        deadline = time.monotonic() + timeout
        while not self.mounted():
            if self.proc.poll() is not None:
                raise RuntimeError(f"lazyfs exited with status {self.proc.returncode}; "
                                   f"see {self.out_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"lazyfs not mounted after {timeout}s; see {self.out_path}")
            time.sleep(0.05)
        self.mounts += 1

    def _command(self, cmd: str, reply: str, timeout: float = 60.0) -> str:
        """Sends a FIFO command and waits for the line of LazyFS's output that matches `reply`."""
        start = self.out_path.stat().st_size
        fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(fd, (cmd + "\n").encode())
        finally:
            os.close(fd)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.out_path, "rb") as f:
                f.seek(start)
                m = re.search(reply, f.read().decode(errors="replace"))
            if m:
                return m.group(0)
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"lazyfs died while running {cmd}; see {self.out_path}")
            time.sleep(0.01)
        raise RuntimeError(f"lazyfs did not answer {cmd} in {timeout}s; see {self.out_path}")

    def cache_usage(self) -> float:
        """Percentage of LazyFS's cache pages in use."""
        line = self._command("lazyfs::display-cache-usage", r"cache usage \(%pages\) is [\d.]+%")
        return float(re.search(r"([\d.]+)%", line).group(1))

    def clear_cache(self) -> None:
        self._command("lazyfs::clear-cache", r"cache is cleared")

    def crash(self) -> None:
        """Kills LazyFS (whatever it still holds is gone) and removes the dead mount."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)
        self._umount()

    def unmount(self) -> None:
        """Clean unmount (LazyFS exits; its cache is not written back)."""
        self._umount()
        if self.proc is not None:
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def _umount(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.mounted():
            r = subprocess.run(["umount", str(self.mnt)], capture_output=True, text=True)
            if r.returncode == 0:
                break
            if time.monotonic() > deadline:  # still busy: detach it
                subprocess.run(["umount", "-l", str(self.mnt)], check=True)
                break
            time.sleep(0.05)


def segment_bases(root: Path, topic: str, partition: int) -> list[int]:
    """Base offsets of a partition's segment files in the backing directory, sorted."""
    return sorted(int(p.stem) for p in root.glob(f"data/logs/{topic}~*/{partition}/*.log")
                  if p.stem.isdigit())


@dataclass
class Cut:
    """One power cut."""
    number: int
    kind: str
    killed_at: float  # time.monotonic() of the SIGKILL
    restarted_at: float = 0.0  # spawn of the next broker: later delivery reports are its own
    active_bases: dict[int, int] = field(default_factory=dict)  # partition -> active segment
    cache_usage_pct: float = 0.0
    restart_s: float = 0.0


@dataclass
class CreatedTopic:
    """A topic created right before an after-create cut, with what was acknowledged in it."""
    name: str
    cut: int
    acked: dict[int, tuple[int, int]] = field(default_factory=dict)  # seq -> (0, offset)


class PowerLossRun:
    def __init__(self, args: argparse.Namespace, workdir: Path):
        self.args = args
        self.rng = random.Random(args.seed)
        self.lazyfs = LazyFS(args.lazyfs, workdir, args.lazyfs_cache_mb)
        settings = {"default_flush": args.policy}
        if args.policy == "interval":
            settings["flush_interval_ms"] = str(args.flush_interval_ms)
        self.broker = BrokerProc(args.bin, args.port, self.lazyfs.mnt / "data",
                                 workdir / "broker.log", args.cores, settings)
        self.topic = f"powerloss-{args.seed}"
        self.topic_config = {"segment.bytes": str(args.segment_bytes)}
        if args.retention_bytes > 0:
            # Retention deletes segments during the run, so rolls reuse their files: power cuts
            # then meet reused segment files whose old batches lie behind new, unsynced data.
            self.topic_config["retention.bytes"] = str(args.retention_bytes)
        self.cuts: list[Cut] = []
        self.created: list[CreatedTopic] = []
        self.wl: Workload | None = None
        self.history_path = args.history or workdir / "history.jsonl.gz"
        self.history: dict | None = None  # the checker's report

    # -- one power cut -----------------------------------------------------------------
    def power_cut(self, kind: str) -> Cut:
        cut = Cut(len(self.cuts) + 1, kind, time.monotonic())
        self.broker.kill9()
        cut.active_bases = {p: (segment_bases(self.lazyfs.root, self.topic, p) or [0])[-1]
                            for p in range(self.args.partitions)}
        cut.cache_usage_pct = self.lazyfs.cache_usage()
        self.lazyfs.clear_cache()
        self.lazyfs.crash()
        self.lazyfs.mount()
        self.broker.start()
        cut.restarted_at = self.broker.spawned_at
        cut.restart_s = self.broker.wait_serving(probe_ok=True)
        self.cuts.append(cut)
        return cut

    def wait_for_roll(self, timeout: float) -> bool:
        """Waits until a partition of the topic gets a new segment (a higher base offset; with
        retention the number of segments may stay the same)."""
        def newest(p: int) -> int:
            return max(segment_bases(self.lazyfs.root, self.topic, p), default=-1)
        before = {p: newest(p) for p in range(self.args.partitions)}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p, n in before.items():
                if newest(p) > n:
                    return True
            time.sleep(0.005)
        return False

    def create_and_produce(self) -> CreatedTopic:
        ct = CreatedTopic(f"{self.topic}-new{len(self.created) + 1}", len(self.cuts) + 1)
        create_topic(self.broker.bootstrap, ct.name, 1, self.topic_config)
        seq = 0
        with kwire.Conn("127.0.0.1", self.args.port, timeout=10) as c:
            for _ in range(5):
                recs = [kwire.Record(None, f"seq={seq + i}".encode()) for i in range(10)]
                r = c.produce(ct.name, 0, kwire.record_batch(recs), acks=-1)
                if r.error_code != 0:
                    raise RuntimeError(f"produce to new topic {ct.name}: error {r.error_code}")
                for i in range(10):
                    ct.acked[seq + i] = (0, r.base_offset + i)
                seq += 10
        self.created.append(ct)
        return ct

    # -- the run -----------------------------------------------------------------------
    def run(self) -> dict:
        a = self.args
        self.lazyfs.mount()
        self.broker.start()
        first = self.broker.wait_serving(probe_ok=False)
        create_topic(self.broker.bootstrap, PROBE_TOPIC, 1)
        create_topic(self.broker.bootstrap, self.topic, a.partitions, self.topic_config)
        log(f"serving after {first:.2f}s; policy {a.policy}; topic {self.topic} "
            f"({a.partitions} partitions, segment.bytes {a.segment_bytes}), {a.rate} rec/s of "
            f"{a.value_bytes} B, a cut every {a.min_interval}-{a.max_interval}s for {a.duration}s")
        # Losing acknowledged records (allowed unless every-batch) breaks the idempotent
        # producer's sequence numbers; librdkafka then fails it for good: start a new one.
        history = HistoryWriter(self.history_path, idempotence=True, acks="all",
                                meta={"harness": "fault-powerloss-lazyfs", "policy": a.policy,
                                      "seed": a.seed, "topic": self.topic,
                                      "partitions": a.partitions})
        wl = self.wl = Workload(self.broker.bootstrap, self.topic, a.partitions, a.rate,
                                a.value_bytes, consumer_group="fault-powerloss-live",
                                recreate_on_fatal=a.policy != "every-batch", history=history)
        prod, cons = wl.start()

        end = time.monotonic() + a.duration
        while time.monotonic() < end:
            kind = CUT_KINDS[len(self.cuts) % len(CUT_KINDS)]
            wait = self.rng.uniform(a.min_interval, a.max_interval)
            if time.monotonic() + wait >= end:
                break
            if kind == "after-roll":
                time.sleep(a.min_interval)
                if not self.wait_for_roll(min(wait, end - time.monotonic())):
                    kind = "random"  # no roll in time: cut anyway
            else:
                time.sleep(wait)
            if kind == "after-create":
                self.create_and_produce()
            if not self.broker.alive():
                raise RuntimeError(f"broker died on its own (status {self.broker.proc.returncode})")
            with wl.lock:
                acked_before = len(wl.acked)
            cut = self.power_cut(kind)
            log(f"cut #{cut.number} ({kind}): {acked_before} acknowledged so far; LazyFS cache "
                f"{cut.cache_usage_pct:.1f}% used; serving again after {cut.restart_s:.3f}s")

        log("loop over; stopping the producer and flushing")
        wl.finish(prod, cons)
        log("reading everything back")
        rb = read_back(self.broker.bootstrap, self.topic, a.partitions, wl.acked, wl.value,
                       wl.consumed, retention=a.retention_bytes > 0)
        created_lost = self.created_topics_lost()
        log(f"checking the operation history {self.history_path}")
        self.history = judge_history(history, self.broker.bootstrap, self.topic, a.partitions)

        log("clean stop, power cut, restart, read back again")
        panicked = self.broker.panicked()
        rc = self.broker.stop()
        self.lazyfs.clear_cache()
        self.lazyfs.crash()
        self.lazyfs.mount()
        self.broker.start()
        self.broker.wait_serving(probe_ok=False)
        lost = set(rb.lost)
        kept = {s: po for s, po in wl.acked.items() if s not in lost}
        after = read_back(self.broker.bootstrap, self.topic, a.partitions, kept, wl.value,
                          retention=a.retention_bytes > 0)
        panicked = panicked or self.broker.panicked()
        final_rc = self.broker.stop()
        self.lazyfs.unmount()

        return self.report(rb, created_lost, after, panicked, rc == 0 and final_rc == 0)

    def created_topics_lost(self) -> dict[str, int]:
        lost = {}
        for ct in self.created:
            msgs = consume_all(self.broker.bootstrap, ct.name, 1, timeout=60)
            at = {m.offset: m.value for m in msgs}
            lost[ct.name] = sum(1 for s, (_, o) in ct.acked.items()
                                if at.get(o) != f"seq={s}".encode())
        return lost

    # -- judging the losses --------------------------------------------------------------
    def window_of(self, acked_at: float) -> Cut | None:
        """The cut a record acknowledged at `acked_at` had to survive first, if any."""
        for cut in self.cuts:
            if acked_at < cut.restarted_at:
                return cut
        return None

    def judge_losses(self, lost: list[int]) -> tuple[list[dict], list[str]]:
        """Per cut: records lost, their maximum age; and every violation of the policy."""
        wl = self.wl
        lost_set = set(lost)
        by_cut: dict[int | None, dict[int, dict[str, list[int]]]] = defaultdict(
            lambda: defaultdict(lambda: {"lost": [], "kept": []}))
        ages: dict[int, float] = defaultdict(float)
        for seq, (p, off) in wl.acked.items():
            cut = self.window_of(wl.acked_at[seq])
            key = cut.number if cut else None
            by_cut[key][p]["lost" if seq in lost_set else "kept"].append(off)
            if seq in lost_set and cut is not None:
                ages[cut.number] = max(ages[cut.number], cut.killed_at - wl.acked_at[seq])
        violations = []
        per_cut = []
        for cut in self.cuts:
            parts = by_cut.get(cut.number, {})
            n_lost = sum(len(v["lost"]) for v in parts.values())
            per_cut.append({"cut": cut.number, "kind": cut.kind, "lost": n_lost,
                            "max_lost_age_ms": round(ages[cut.number] * 1000, 1) if n_lost else None,
                            "cache_usage_pct": round(cut.cache_usage_pct, 2),
                            "restart_s": round(cut.restart_s, 4)})
            for p, v in parts.items():
                if not v["lost"]:
                    continue
                if v["kept"] and max(v["kept"]) > min(v["lost"]):
                    violations.append(f"cut {cut.number} partition {p}: offset {max(v['kept'])} "
                                      f"survived but {min(v['lost'])} before it was lost")
                if min(v["lost"]) < cut.active_bases.get(p, 0):
                    violations.append(f"cut {cut.number} partition {p}: lost offset "
                                      f"{min(v['lost'])} below the active segment "
                                      f"{cut.active_bases[p]} (sealed data lost)")
            if n_lost and self.args.policy == "interval":
                bound = (self.args.flush_interval_ms + self.args.age_slack_ms) / 1000
                if ages[cut.number] > bound:
                    violations.append(f"cut {cut.number}: a record acknowledged "
                                      f"{ages[cut.number] * 1000:.0f} ms before the cut was lost "
                                      f"(flush_interval_ms {self.args.flush_interval_ms})")
        after_last = sum(len(v["lost"]) for v in by_cut.get(None, {}).values())
        if after_last:
            violations.append(f"{after_last} records acknowledged after the last cut were lost")
        return per_cut, violations

    def report(self, rb, created_lost, after, panicked: bool, clean_stop: bool) -> dict:
        a, wl = self.args, self.wl
        per_cut, violations = self.judge_losses(rb.lost)
        if a.policy == "every-batch":
            if rb.lost:
                violations.append(f"{len(rb.lost)} acknowledged records lost under every-batch")
            if sum(created_lost.values()):
                violations.append(f"acknowledged records lost in created topics: {created_lost}")
            if rb.consumer_lost:
                violations.append(f"{len(rb.consumer_lost)} records seen by the consumer, then lost")
        if rb.duplicates or after.duplicates:
            violations.append("duplicates in the read-back")
        if rb.holes or after.holes:
            violations.append(f"offset holes: {rb.holes or after.holes}")
        if after.lost:
            violations.append(f"{len(after.lost)} records lost across a clean stop + power cut")
        if wl.fatal and a.policy == "every-batch":
            violations.append(f"producer fatal error: {wl.fatal}")
        h = self.history
        if a.policy == "every-batch":
            if not h["valid"]:
                violations.append(f"history checker: {h['counts']}")
        elif h["counts"]["duplicates"] or h["counts"]["failed_but_present"]:
            violations.append(f"history checker: {h['counts']['duplicates']} duplicates, "
                              f"{h['counts']['failed_but_present']} failed sends present")
        if panicked:
            violations.append("the broker panicked")
        if not clean_stop:
            violations.append("the broker did not stop cleanly on SIGTERM")
        max_cache = max((c.cache_usage_pct for c in self.cuts), default=0)
        if max_cache >= 95:
            violations.append(f"LazyFS cache {max_cache}% full: writes may have bypassed it")
        restart = [c.restart_s for c in self.cuts]
        lost_ages = [c["max_lost_age_ms"] for c in per_cut if c["max_lost_age_ms"] is not None]
        return {
            "policy": a.policy, "seed": a.seed, "duration_s": a.duration,
            "flush_interval_ms": a.flush_interval_ms if a.policy == "interval" else None,
            "partitions": a.partitions, "rate": a.rate, "value_bytes": a.value_bytes,
            "segment_bytes": a.segment_bytes, "retention_bytes": a.retention_bytes or None,
            "expired_by_retention": rb.expired,
            "sent": wl.sent, "acknowledged": len(wl.acked),
            "delivery_failures": dict(wl.failed), "read_back": rb.messages,
            "lost": len(rb.lost), "lost_sample": rb.lost[:10],
            "max_lost_age_ms": max(lost_ages, default=None),
            "duplicates": sum(rb.duplicates.values()), "holes": sum(rb.holes.values()),
            "consumed_live": len(wl.consumed), "consumer_lost": len(rb.consumer_lost),
            "segments_per_partition_at_end": {
                p: len(segment_bases(self.lazyfs.root, self.topic, p)) for p in range(a.partitions)},
            "created_topics": len(self.created),
            "created_topics_acknowledged": sum(len(c.acked) for c in self.created),
            "created_topics_lost": sum(created_lost.values()),
            "after_clean_stop_and_cut": {"read_back": after.messages, "lost": len(after.lost),
                                         "duplicates": sum(after.duplicates.values()),
                                         "holes": sum(after.holes.values())},
            "power_cuts": len(self.cuts),
            "cuts_by_kind": {k: sum(1 for c in self.cuts if c.kind == k) for k in CUT_KINDS},
            "per_cut": per_cut, "max_lazyfs_cache_usage_pct": max_cache,
            "restart_to_serving_s": latency_summary(restart),
            "producer_fatal": wl.fatal, "producer_restarts": wl.producer_restarts,
            "producer_client_errors": dict(wl.client_errors),
            "consumer_errors": dict(wl.consumer_errors), "broker_panicked": panicked,
            "clean_stop": clean_stop, "history": h,
            "history_lost_equals_read_back_lost": h["counts"]["lost"] == len(rb.lost),
            "violations": violations,
        }


def print_summary(r: dict) -> None:
    rs = r["restart_to_serving_s"]
    fmt = (lambda v: "n/a" if v is None else f"{v:.3f}s")
    print(f"\n{r['policy']}: acknowledged {r['acknowledged']} (sent {r['sent']}, read back "
          f"{r['read_back']}), lost {r['lost']} (max age {r['max_lost_age_ms']} ms), duplicates "
          f"{r['duplicates']}, holes {r['holes']}, consumer-seen-then-lost {r['consumer_lost']}; "
          f"created topics {r['created_topics']} ({r['created_topics_acknowledged']} "
          f"acknowledged, {r['created_topics_lost']} lost); power cuts {r['power_cuts']} "
          f"{r['cuts_by_kind']}; after clean stop + cut: {r['after_clean_stop_and_cut']}; "
          f"restart-to-serving p50 {fmt(rs['p50'])} max {fmt(rs['max'])}; history checker: "
          f"{'valid' if r['history']['valid'] else 'INVALID'} {r['history']['counts']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", choices=POLICIES, required=True, help="broker default_flush")
    ap.add_argument("--duration", type=float, default=120.0, help="seconds of cuts (120)")
    ap.add_argument("--min-interval", type=float, default=3.0)
    ap.add_argument("--max-interval", type=float, default=10.0)
    ap.add_argument("--flush-interval-ms", type=int, default=1000,
                    help="flush_interval_ms under --policy interval (1000)")
    ap.add_argument("--age-slack-ms", type=int, default=200,
                    help="allowed excess of a lost record's age over flush_interval_ms (200)")
    ap.add_argument("--port", type=int, default=59093)
    ap.add_argument("--workdir", type=Path, default=None,
                    help="holds root/ (LazyFS backing), mnt/ and logs; must not hold an earlier "
                         "run (default: a fresh temporary directory, removed on success)")
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--rate", type=int, default=2000, help="records per second (2000)")
    ap.add_argument("--value-bytes", type=int, default=100, help="padding per value (100)")
    ap.add_argument("--retention-bytes", type=int, default=0,
                    help="topic retention.bytes (0: none); > 0 exercises reused segment files")
    ap.add_argument("--segment-bytes", type=int, default=1 << 20,
                    help="topic segment.bytes (1 MiB, the minimum: frequent rolls)")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--lazyfs", default="/opt/lazyfs/bin/lazyfs")
    ap.add_argument("--lazyfs-cache-mb", type=int, default=512)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None, help="write the report as JSON here")
    ap.add_argument("--history", type=Path, default=None,
                    help="operation history file (default WORKDIR/history.jsonl.gz)")
    ap.add_argument("--bin", default=DEFAULT_BIN)
    args = ap.parse_args()
    if not (0 < args.min_interval <= args.max_interval):
        ap.error("need 0 < --min-interval <= --max-interval")
    for path, hint in ((args.bin, "cargo build --release -p shardlog"),
                       (args.lazyfs, "tuning/lazyfs-build.sh SRC_DIR")):
        if not os.access(path, os.X_OK):
            print(f"{path} not found; build it with `{hint}`", file=sys.stderr)
            return 2
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        print("needs root and /dev/fuse (FUSE mounts)", file=sys.stderr)
        return 2
    if args.seed is None:
        args.seed = random.randrange(1 << 31)

    tmp = None
    if args.workdir is None:
        tmp = Path(tempfile.mkdtemp(prefix="shardlog-powerloss-", dir="/var/tmp"))
        workdir = tmp
    else:
        workdir = args.workdir
        if (workdir / "root").exists() and any((workdir / "root").iterdir()):
            print(f"{workdir}/root holds an earlier run's data; use a new --workdir",
                  file=sys.stderr)
            return 2
        workdir.mkdir(parents=True, exist_ok=True)
    run = PowerLossRun(args, workdir)
    log(f"seed {args.seed}; broker {run.broker.bootstrap}; workdir {workdir}")
    try:
        report = run.run()
    except Exception as e:  # noqa: BLE001 - harness failure: report it and exit 2
        log(f"HARNESS FAILURE: {e!r}")
        if run.wl is not None and run.wl.history is not None:
            run.wl.history.close()  # what was recorded stays readable
        if run.broker.alive():
            run.broker.proc.kill()
            run.broker.proc.wait()
        run.lazyfs.crash()
        return 2

    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    else:
        print(json.dumps(report, indent=2))
    print_summary(report)
    for v in report["violations"]:
        log(f"VIOLATION: {v}")
    if report["violations"]:
        log(f"FAIL (work directory kept: {workdir})")
        return 1
    log("PASS")
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
