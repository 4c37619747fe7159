#!/usr/bin/env python3
"""Power loss across a 3-broker cluster on LazyFS, judged against docs/RELIABILITY.md's
guarantee table (RF 3, min.insync.replicas=2, acks=all).

Each broker runs in its own network namespace (tuning/netfault/cluster.py) with its data
directory on its own LazyFS mount (tuning/fault-powerloss-lazyfs.py's `LazyFS`; build LazyFS
with tuning/lazyfs-build.sh). A power cut of a set of brokers: SIGKILL them all, then for each
`lazyfs::clear-cache` (every byte not fsynced is dropped), kill LazyFS and mount it again, and
start the brokers. A process crash (`kill -9` only) keeps LazyFS's cache, as a machine that
keeps running keeps its page cache.

Modes:

  --mode loop   an idempotent acks=all producer and a live consumer record a history on topic
                `pl` (3 partitions, segment.bytes 1 MiB) while power cuts alternate: one broker
                (the leader of pl/0, or a random one), then all brokers. Each cut waits for the
                cluster to serve with full ISRs again before the next. At the end the history
                checker judges the run and every lost acknowledged record is attributed to the
                first all-brokers cut after its acknowledgement:
                  every-batch: nothing may be lost;
                  interval:    only records acknowledged less than flush_interval_ms + slack
                               before an all-brokers cut;
                  never:       only records acknowledged before an all-brokers cut;
                and under every policy nothing may be lost without an all-brokers cut after it.

  --mode elr    KIP-966's "last replica standing", for real (policy never, so a replica's power
                cut loses everything it had not fsynced). Five brokers (five controller voters,
                so the quorum outlives the replicas below); topic `elr`, 1 partition, replicas
                [1, 2, 3], leader 1:
                  1. phase A acknowledged by all three;
                  2. broker 2 crashes (kill -9): ISR {1, 3};
                  3. phase B acknowledged by 1 and 3;
                  4. broker 1 crashes (kill -9, its data kept): ISR {3} (below min ISR: 1 goes
                     to the ELR), 3 leads;
                  5. broker 3 loses power (its unsynced A and B are gone) and restarts, and so
                     does broker 2 (the stale replica). Neither may lead: 3 lost
                     data it had acknowledged, 2 never had B. The partition must stay offline
                     for --offline-check seconds;
                  6. broker 1 restarts: it must be elected, and A and B read back whole.
                Without the unclean-restart rule in server/src/controller/decide.rs, step 5
                elects 3 and A and B are gone for good.

    .venv/bin/python tuning/cluster-powerloss.py --mode loop --policy every-batch
        [--duration 120] [--out /tmp/shardlog-cluster-powerloss]
    .venv/bin/python tuning/cluster-powerloss.py --mode elr
Needs root, /dev/fuse, `ip` and LazyFS (default /opt/lazyfs/bin/lazyfs). Exit 1 on a violation.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from fault_common import Workload, judge_history, log, seq_of  # noqa: E402
from history.record import HistoryWriter  # noqa: E402
from netfault.cluster import KAFKA_PORT, NetCluster, create_topic  # noqa: E402

import kwire  # noqa: E402

_spec = importlib.util.spec_from_file_location("fault_powerloss_lazyfs",
                                               HERE / "fault-powerloss-lazyfs.py")
_plf = importlib.util.module_from_spec(_spec)
sys.modules["fault_powerloss_lazyfs"] = _plf  # its dataclasses look their module up
_spec.loader.exec_module(_plf)
LazyFS = _plf.LazyFS

POLICIES = ("every-batch", "interval", "never")


class PowerCluster:
    """A NetCluster whose brokers keep their data on LazyFS mounts."""

    def __init__(self, a: argparse.Namespace, settings: dict[str, str], brokers: int = 3):
        self.fs = {i: LazyFS(a.lazyfs, a.out / f"lazyfs-{i}", a.lazyfs_cache_mb)
                   for i in range(1, brokers + 1)}
        for fs in self.fs.values():
            fs.mount()
        self.c = NetCluster(a.out, brokers=brokers, settings=settings, prefix=a.prefix,
                            data_dirs={i: fs.mnt / "data" for i, fs in self.fs.items()},
                            block=a.block)
        self.cuts: list[dict] = []

    def power_cut(self, ids: list[int], restart: bool = True) -> dict:
        """SIGKILL `ids` at once, drop what LazyFS holds unsynced, remount, start them."""
        t = time.monotonic()
        for i in ids:
            self.c[i].kill9()
        killed = time.monotonic()  # no broker of `ids` acknowledges anything after this
        usage = {}
        for i in ids:
            usage[i] = self.fs[i].cache_usage()
            self.fs[i].clear_cache()
            self.fs[i].crash()
            self.fs[i].mount()
        if restart:
            for i in ids:
                self.c[i].start()
        cut = {"brokers": ids, "t": t, "killed": killed, "cache_usage_pct": usage}
        self.cuts.append(cut)
        return cut

    def close(self) -> None:
        try:
            self.c.heal()
            self.c.stop_all()
            self.c.teardown_network()
        finally:
            for fs in self.fs.values():
                fs.unmount()


def wait_serving(c: NetCluster, topic: str, partitions: int, timeout: float) -> float:
    t0 = time.monotonic()
    c.wait_formed(timeout)
    c.wait_isr_full(topic, partitions, timeout)
    return time.monotonic() - t0


# -- loop mode ---------------------------------------------------------------------------------
def run_loop(a: argparse.Namespace, pc: PowerCluster) -> tuple[dict, list[str]]:
    c = pc.c
    rng = random.Random(a.seed)
    c.start()
    topic = "pl"
    create_topic(c.bootstrap, topic, a.partitions, 3,
                 {"min.insync.replicas": "2", "segment.bytes": str(1 << 20)})
    c.wait_isr_full(topic, a.partitions, 60)
    h = HistoryWriter(a.out / "history.jsonl.gz", idempotence=True, acks="all",
                      meta={"run": "cluster-powerloss", "policy": a.policy})
    wl = Workload(c.bootstrap, topic, a.partitions, a.rate, value_bytes=a.value_bytes,
                  history=h, recreate_on_fatal=True, consumer_group="powerloss-live")
    prod, cons = wl.start()
    t_run = time.monotonic()
    end = t_run + a.duration
    kinds = ["one", "all"]
    k = 0
    recover: list[float] = []
    while time.monotonic() < end:
        time.sleep(rng.uniform(a.min_interval, a.max_interval))
        kind = kinds[k % 2]
        k += 1
        if kind == "one":
            lead = c.leader_of(topic, 0)
            ids = [lead if lead is not None and rng.random() < 0.7 else rng.choice(c.ids)]
        else:
            ids = list(c.ids)
        cut = pc.power_cut(ids)
        cut["kind"] = kind
        try:
            r = wait_serving(c, topic, a.partitions, 120)
        except Exception as e:  # noqa: BLE001 - recorded; the read-back judges
            log(f"cut {len(pc.cuts)} ({kind} {ids}): not serving with full ISRs: {e}")
            r = None
        cut["serving_after_s"] = r
        recover.append(r if r is not None else float("inf"))
        log(f"cut {len(pc.cuts)}: power loss of {ids} ({kind}); cache "
            f"{cut['cache_usage_pct']}; full ISRs after {r if r is None else round(r, 1)}s")
    wl.finish(prod, cons)
    log(f"producer: sent {wl.sent}, acked {len(wl.acked)}, failed {dict(wl.failed)}, "
        f"restarts {wl.producer_restarts}")
    c.wait_isr_full(topic, a.partitions, 120)
    rep = judge_history(h, c.bootstrap, topic, a.partitions, examples=1_000_000)

    # Attribute each lost acknowledged record to the first all-brokers cut whose kills were
    # done no earlier than `report_slack` before its delivery report: the report comes after
    # the broker's acknowledgement (librdkafka hands it to the application in poll()), so one
    # that arrives just after the kills was acknowledged before them.
    window = (a.flush_interval_ms + a.age_slack_ms) / 1000
    report_slack = a.report_slack_ms / 1000
    alls = [cut for cut in pc.cuts if cut["kind"] == "all"]
    lost_vals = [ex["value"] for ex in rep.get("examples", {}).get("lost", [])]
    ages: list[float] = []
    no_all_cut = 0
    lost_detail: list[dict] = []
    for v in lost_vals:
        try:
            seq = seq_of(v.encode())
        except (ValueError, IndexError):
            continue
        at = wl.acked_at.get(seq)
        if at is None:
            continue
        nxt = next((cut for cut in alls if cut["killed"] + report_slack >= at), None)
        if nxt is None:
            no_all_cut += 1
            lost_detail.append({"seq": seq, "acked_at": round(at - t_run, 3), "cut": None})
        else:
            ages.append(max(0.0, nxt["t"] - at))
            lost_detail.append({"seq": seq, "acked_at": round(at - t_run, 3),
                                "cut_at": round(nxt["t"] - t_run, 3),
                                "age_s": round(nxt["t"] - at, 3)})
    violations = []
    counts = rep.get("counts", {})
    if no_all_cut:
        violations.append(f"{no_all_cut} acknowledged records lost with no all-brokers power "
                          f"loss after their acknowledgement")
    if a.policy == "every-batch":
        for kind, n in counts.items():
            if n:
                violations.append(f"history checker: {kind} {n}")
    else:
        for kind in ("duplicates", "failed_but_present"):
            if counts.get(kind):
                violations.append(f"history checker: {kind} {counts[kind]}")
        if a.policy == "interval":
            old = [x for x in ages if x > window]
            if old:
                violations.append(f"{len(old)} lost records acknowledged more than {window:.2f}s "
                                  f"before an all-brokers cut (oldest {max(old):.2f}s)")
    if wl.fatal and a.policy == "every-batch":
        violations.append(f"fatal producer errors: {wl.fatal}")
    report = {
        "mode": "loop", "policy": a.policy,
        "cuts": [{"kind": cut["kind"], "brokers": cut["brokers"],
                  "at_s": round(cut["t"] - t_run, 3),
                  "kills_done_s": round(cut["killed"] - t_run, 3),
                  "serving_after_s": cut["serving_after_s"],
                  "cache_usage_pct": cut["cache_usage_pct"]} for cut in pc.cuts],
        "acknowledged": len(wl.acked), "sent": wl.sent,
        "checker": {"valid": rep.get("valid"), "counts": counts, "stats": rep.get("stats")},
        "lost": len(lost_vals),
        "lost_age_before_all_cut_s": {"max": max(ages) if ages else None,
                                      "n": len(ages)},
        "lost_without_all_cut": no_all_cut,
        "lost_oldest": sorted(lost_detail, key=lambda d: -(d.get("age_s") or 1e9))[:20],
        "producer_restarts": wl.producer_restarts, "fatal": wl.fatal[:5],
        "recovery_s": recover,
    }
    return report, violations


# -- elr mode ----------------------------------------------------------------------------------
def produce_phase(c: NetCluster, leader: int, topic: str, batches: int, tag: str,
                  acked: dict[str, int]) -> None:
    with kwire.Conn(c[leader].ip, KAFKA_PORT, timeout=15) as conn:
        for b in range(batches):
            vals = [f"{tag}-{b}-{i}" for i in range(10)]
            batch = kwire.record_batch([kwire.Record(None, v.encode()) for v in vals])
            deadline = time.monotonic() + 20
            while True:
                r = conn.produce(topic, 0, batch, acks=-1, timeout_ms=10000)
                # not appended (the leader has not opened the partition yet): again
                if r.error_code not in (3, 5, 6) or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            if r.error_code != 0:
                raise RuntimeError(f"phase {tag} batch {b}: error {r.error_code}")
            for i, v in enumerate(vals):
                acked[v] = r.base_offset + i


def isr_of(c: NetCluster, topic: str, via: int) -> list[int] | None:
    st = c.partition_state(topic, 0, via=via)
    return None if st is None else sorted(st["isr"])


def run_elr(a: argparse.Namespace, pc: PowerCluster) -> tuple[dict, list[str]]:
    c = pc.c
    topic = "elr"
    steps: list[str] = []
    violations: list[str] = []

    def step(msg: str) -> None:
        log(msg)
        steps.append(f"{time.strftime('%H:%M:%S')} {msg}")

    c.start()
    create_topic(c.bootstrap, topic, 1, 3, {"min.insync.replicas": "2"})
    c.wait_isr_full(topic, 1, 60)
    st = c.partition_state(topic, 0)
    if st["replicas"] != [1, 2, 3] or st["leader"] != 1:
        raise RuntimeError(f"expected replicas [1, 2, 3] led by 1, got {st}")
    acked: dict[str, int] = {}
    produce_phase(c, 1, topic, a.batches, "A", acked)
    c.wait_isr_full(topic, 1, 60)
    step(f"1. phase A: {len(acked)} records acknowledged by ISR {isr_of(c, topic, 1)}")
    c[2].kill9()
    c.wait_until(lambda: isr_of(c, topic, 1) == [1, 3], 30, "ISR {1, 3}")
    # The leader's high watermark still waits for a fenced follower that was caught up until
    # replica_lag_time_max_ms passes (reported bug: the replica core has no ISR-eligibility
    # check, Kafka's isReplicaIsrEligible): wait that out.
    time.sleep(a.replica_lag_ms / 1000 + 1)
    step("2. broker 2 crashed (kill -9); ISR [1, 3]")
    produce_phase(c, 1, topic, a.batches, "B", acked)
    step(f"3. phase B: {len(acked)} records acknowledged in all")
    c[1].kill9()
    c.wait_until(lambda: c.leader_of(topic, 0, via=3) == 3 and isr_of(c, topic, 3) == [3], 30,
                 "broker 3 to lead with ISR [3]")
    step("4. broker 1 crashed (kill -9, data kept); broker 3 leads, ISR [3]")
    cut = pc.power_cut([3], restart=False)
    c[3].start()
    c[2].start()
    step(f"5. broker 3 lost power (LazyFS cache {cut['cache_usage_pct'][3]}% dropped) and "
         f"restarted with broker 2")
    c.wait_until(lambda: {b["node_id"] for b in c.metadata(via=3)["brokers"]} >= {2, 3}, 60,
                 "brokers 2 and 3 registered")
    end = time.monotonic() + a.offline_check
    leaders = set()
    while time.monotonic() < end:
        for via in (2, 3):
            try:
                st = c.partition_state(topic, 0, via=via)
                leaders.add(None if st is None or st["leader"] < 0 else st["leader"])
            except Exception:  # noqa: BLE001 - a broker still starting
                pass
        time.sleep(0.3)
    with kwire.Conn(c[3].ip, KAFKA_PORT, timeout=15) as conn:
        r = conn.produce(topic, 0, kwire.record_batch([kwire.Record(None, b"C-probe")]),
                         acks=-1, timeout_ms=3000)
    step(f"   leaders seen by brokers 2 and 3 over {a.offline_check}s: "
         f"{sorted(leaders, key=str)}; an acks=all produce to 3 answered error {r.error_code}")
    if leaders - {None}:
        violations.append(f"elected {sorted(leaders - {None})} while the only replica holding "
                          f"every acknowledged record (1) was down")
    if r.error_code == 0:
        violations.append("broker 3 acknowledged a produce after losing acknowledged data")
    c[1].start()
    c.wait_until(lambda: c.leader_of(topic, 0) is not None, 60, "a leader")
    lead = c.leader_of(topic, 0)
    step(f"6. broker 1 restarted; leader {lead}")
    c.wait_isr_full(topic, 1, 120)
    msgs = read_all(c, topic)
    at = {o: v for o, v in msgs}
    lost = [v for v, o in acked.items() if at.get(o) != v.encode()]
    step(f"   read back {len(msgs)} records; acknowledged {len(acked)}, lost {len(lost)}")
    if lost:
        violations.append(f"{len(lost)} acknowledged records lost (first {lost[:3]})")
    return {"mode": "elr", "steps": steps, "acknowledged": len(acked), "lost": len(lost),
            "leaders_while_1_down": sorted(leaders, key=str), "leader_after": lead}, violations


def read_all(c: NetCluster, topic: str) -> list[tuple[int, bytes]]:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
    cons = Consumer({"bootstrap.servers": c.bootstrap, "group.id": f"elr-{time.time()}",
                     "enable.auto.commit": False, "enable.partition.eof": True,
                     "log_level": 2})
    lo, hi = cons.get_watermark_offsets(TopicPartition(topic, 0), timeout=30, cached=False)
    cons.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    out: list[tuple[int, bytes]] = []
    deadline = time.monotonic() + 60
    done = hi <= lo
    while not done and time.monotonic() < deadline:
        for m in cons.consume(1000, 0.5):
            if m.error():
                if m.offset() >= hi:
                    done = True
                continue
            out.append((m.offset(), m.value()))
            if m.offset() >= hi - 1:
                done = True
    cons.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=("loop", "elr"), default="loop")
    ap.add_argument("--policy", choices=POLICIES, default=None,
                    help="broker default_flush (loop: required; elr: never)")
    ap.add_argument("--duration", type=float, default=120.0)
    ap.add_argument("--min-interval", type=float, default=4.0)
    ap.add_argument("--max-interval", type=float, default=8.0)
    ap.add_argument("--flush-interval-ms", type=int, default=1000)
    ap.add_argument("--age-slack-ms", type=int, default=300,
                    help="interval: allowed excess of a lost record's age over flush_interval_ms")
    ap.add_argument("--report-slack-ms", type=int, default=500,
                    help="longest delay from an acknowledgement to its delivery report")
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--rate", type=int, default=300)
    ap.add_argument("--value-bytes", type=int, default=100)
    ap.add_argument("--batches", type=int, default=50, help="elr: batches of 10 per phase")
    ap.add_argument("--offline-check", type=float, default=15.0)
    ap.add_argument("--replica-lag-ms", type=int, default=3000,
                    help="replica_lag_time_max_ms (broker default 30000)")
    ap.add_argument("--lazyfs", default="/opt/lazyfs/bin/lazyfs")
    ap.add_argument("--lazyfs-cache-mb", type=int, default=256)
    ap.add_argument("--out", type=Path, default=Path("/tmp/shardlog-cluster-powerloss"))
    ap.add_argument("--prefix", default="slpl")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--block", type=int, default=1,
                    help="address block 0..3 of 10.77.0.0/24 (runs at once need different ones)")
    a = ap.parse_args()
    if a.mode == "loop" and a.policy is None:
        ap.error("--mode loop needs --policy")
    if a.mode == "elr":
        a.policy = a.policy or "never"
    if not os.access(a.lazyfs, os.X_OK):
        print(f"{a.lazyfs} not found: build it with tuning/lazyfs-build.sh", file=sys.stderr)
        return 2
    shutil.rmtree(a.out, ignore_errors=True)
    a.out.mkdir(parents=True)
    settings = {"default_flush": a.policy, "replica_lag_time_max_ms": str(a.replica_lag_ms)}
    if a.policy == "interval":
        settings["flush_interval_ms"] = str(a.flush_interval_ms)
    # elr: five voters, so the controller quorum survives the partition's three replicas
    # being down or restarting (brokers 4 and 5 hold no replica of it)
    pc = PowerCluster(a, settings, brokers=5 if a.mode == "elr" else 3)
    try:
        report, violations = (run_loop if a.mode == "loop" else run_elr)(a, pc)
        report["panics"] = [b.node_id for b in pc.c.brokers if b.panicked()]
        if report["panics"]:
            violations.append(f"broker panics: {report['panics']}")
    finally:
        pc.close()
    report["violations"] = violations
    (a.out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    print(json.dumps(report, indent=1, default=str))
    for v in violations:
        log(f"VIOLATION: {v}")
    log("FAIL" if violations else "PASS")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
