#!/usr/bin/env python3
"""Network faults against a 3-broker cluster, judged by the history checker (tests/history).

Three brokers run in their own network namespaces (tuning/netfault/cluster.py); clients run in
the root namespace and reach every broker throughout, except in the client-cut-* faults.
Two topics, RF 3, min.insync.replicas=2:

- `nf`: an idempotent acks=all producer and a live consumer (tuning/fault_common.Workload),
  both recording an operation history, plus **probes**: one thread per broker sends acks=all
  produces of unique values straight to that broker (kwire, no client-side leader routing) for
  every partition, so a broker that still believes it leads is asked to acknowledge writes even
  after it was cut off. Probes go into the same history.
- `nf1`: the same probes with acks=1, in a second history (acks=1 may lose records; judged
  separately against its documented promise).

Faults, in order, each held `--hold` seconds, then healed, then `--settle` seconds and until
every ISR is full again. `--faults` takes kinds and groups: `classic` (the default: the seven
router-rule faults below), `new` (the proxy and client faults), `all`.

  isolate-leader      the leader of nf/0 cut off from both other brokers (clients still reach it)
  isolate-controller  the controller Metadata names, cut off from the other brokers
  oneway-out          leader of nf/1: its packets to the other brokers dropped (theirs arrive)
  oneway-in           leader of nf/2: packets from the other brokers to it dropped
  bridge              leader of nf/0 and one follower cannot talk; the third broker talks to both
  split-all           every broker cut off from every other (no majority anywhere)
  flap                for `--hold` seconds, every 1-4 s: heal, then isolate a random broker

Through a tuning/netproxy.py in front of every broker (`--proxy auto`: started when one of
these is chosen; the proxies fault only connections between brokers, never a client's):

  slow-link           first half: every link between brokers delayed 50-200 ms each way
                      (`--slow-delay-ms` + up to `--slow-jitter-ms`, order kept); second half:
                      one link of the leader of nf/0 200-300 ms each way and 64 KiB/s
  lossy-link          every 0.2-2 s (`--lossy-gap`) a random link between two brokers loses its
                      connections: 2 in 3 times they are reset (RST), else the link stalls
                      (nothing forwarded, connections stay open) for 0.5-3 s
  slow-leader         every link to and from the leader of nf/0 (Kafka and controller ports)
                      delayed `--slow-leader-delay-ms` each way (default replica lag + 2 s)
  slow-leader-data    the same on its Kafka-port (replication) links only: the controller still
                      hears it in time, so it stays leader and must shrink its ISR itself

Router rules between the clients and one broker (the brokers still reach each other):

  client-cut-leader   the clients cannot reach the leader of nf/0: nothing may be lost; the
                      partitions it leads have no acknowledgement until the heal (a Kafka client
                      cannot make leadership move), the others must not stall
  client-cut-one      the clients cannot reach another broker (the one leading the fewest
                      partitions)

After the last fault: the producer stops, the final read of both topics goes into the histories,
the checker runs. The key property: a broker with no two-way path to any other broker ("cut")
must not acknowledge an acks=all produce sent to it after it was cut (+0.5 s for requests whose
replication was already under way): `isolated_acks_all` counts those, and must be 0.

Example (about 8 minutes): /work/wt-net/.venv/bin/python tuning/cluster-netfaults.py
  --hold 30 --settle 10 --out /tmp/shardlog-netfaults
The new kinds, 60 s each: ... --faults new --hold 60 --settle 10 --out /tmp/nf-new
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from fault_common import Workload, judge_history, log  # noqa: E402
from history.record import HistoryWriter, now_ns  # noqa: E402
from netfault.cluster import CLIENT, KAFKA_PORT, NetCluster, create_topic  # noqa: E402

import kwire  # noqa: E402

CLASSIC_FAULTS = ["isolate-leader", "isolate-controller", "oneway-out", "oneway-in", "bridge",
                  "split-all", "flap"]
# Faults through the proxies (NetCluster(proxies=True)): between brokers only.
PROXY_FAULTS = ["slow-link", "lossy-link", "slow-leader", "slow-leader-data"]
# Router rules between the clients and some brokers (the brokers reach each other).
CLIENT_FAULTS = ["client-cut-leader", "client-cut-one"]
ALL_FAULTS = CLASSIC_FAULTS + PROXY_FAULTS + CLIENT_FAULTS
GROUPS = {"classic": CLASSIC_FAULTS, "new": PROXY_FAULTS + CLIENT_FAULTS, "all": ALL_FAULTS}
# Produce error codes after which the batch is known not to be in the log (not retried here).
# Not NOT_LEADER_OR_FOLLOWER: a leader that loses leadership answers it to every produce still
# waiting for replication (as Kafka's DelayedProduce does), and such a batch may have reached
# the new leader before the move (the lossy-link run saw 2): indeterminate, like a timeout.
DEFINITE = {1: "OFFSET_OUT_OF_RANGE", 3: "UNKNOWN_TOPIC_OR_PARTITION",
            19: "NOT_ENOUGH_REPLICAS", 87: "INVALID_RECORD"}
NAMES = {7: "REQUEST_TIMED_OUT", 20: "NOT_ENOUGH_REPLICAS_AFTER_APPEND", 5: "LEADER_NOT_AVAILABLE",
         6: "NOT_LEADER_OR_FOLLOWER", **DEFINITE}


class Prober:
    """One thread per broker: acks=all to `topic_all` and acks=1 to `topic_one`, every
    partition, one produce at a time, each recorded in its history."""

    def __init__(self, cluster: NetCluster, topic_all: str, topic_one: str, partitions: int,
                 h_all: HistoryWriter, h_one: HistoryWriter, interval: float,
                 timeout_ms: int):
        self.cluster = cluster
        self.topics = [(topic_all, -1, h_all), (topic_one, 1, h_one)]
        self.partitions = partitions
        self.interval = interval
        self.timeout_ms = timeout_ms
        self.stop = threading.Event()
        self.lock = threading.Lock()
        # (broker, acks, invoke_mono, complete_mono, outcome, error, partition, offset, value)
        self.results: list[tuple] = []
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        for b in self.cluster.brokers:
            t = threading.Thread(target=self._loop, args=(b.node_id, b.ip), daemon=True,
                                 name=f"probe-{b.node_id}")
            t.start()
            self.threads.append(t)

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(self.timeout_ms / 1000 + 15)

    def _loop(self, node: int, ip: str) -> None:
        conn: kwire.Conn | None = None
        n = 0
        sock_timeout = self.timeout_ms / 1000 + 5
        while not self.stop.is_set():
            for topic, acks, hist in self.topics:
                for p in range(self.partitions):
                    if self.stop.is_set():
                        break
                    value = f"probe-b{node}-a{acks}-{n}".encode()
                    n += 1
                    inv_ns, inv = now_ns(), time.monotonic()
                    err: str | None = None
                    off: int | None = None
                    try:
                        if conn is None:
                            conn = kwire.Conn(ip, KAFKA_PORT, timeout=sock_timeout)
                        batch = kwire.record_batch([kwire.Record(value[:16], value)])
                        r = conn.produce(topic, p, batch, acks=acks, timeout_ms=self.timeout_ms)
                        if r.error_code == 0:
                            outcome, off = "ok", r.base_offset
                        else:
                            err = NAMES.get(r.error_code, f"error_{r.error_code}")
                            outcome = "fail" if r.error_code in DEFINITE else "info"
                    except Exception as e:  # noqa: BLE001 - connection trouble: indeterminate
                        outcome, err = "info", f"conn_{type(e).__name__}"
                        if conn is not None:
                            conn.close()
                        conn = None
                        self.stop.wait(0.2)
                    done = time.monotonic()
                    hist.write({"process": f"probe-b{node}", "type": "send", "invoke_ns": inv_ns,
                                "complete_ns": now_ns(), "outcome": outcome, "topic": topic,
                                "partition": p, "key": value[:16].decode(),
                                "value": value.decode(), "offset": off, "error": err})
                    with self.lock:
                        self.results.append((node, acks, inv, done, outcome, err, p, off,
                                             value.decode()))
            self.stop.wait(self.interval)
        if conn is not None:
            conn.close()


def isr_full(c: NetCluster, topic: str, partitions: int, timeout: float) -> float | None:
    t0 = time.monotonic()
    try:
        c.wait_isr_full(topic, partitions, timeout)
        return time.monotonic() - t0
    except Exception as e:  # noqa: BLE001 - reported, the run goes on
        log(f"ISR not full after {timeout}s: {e}")
        return None


@dataclass
class Knobs:
    """Parameters of the proxy faults (from the command line)."""
    slow_delay_ms: float = 50.0
    slow_jitter_ms: float = 150.0
    slow_leader_delay_ms: float = 12000.0
    lossy_gap: tuple[float, float] = (0.2, 2.0)


def hold_watching(c: NetCluster, topic: str, seconds: float, e: dict,
                  avoid: set[int] = frozenset(), every: float = 2.0) -> None:
    """Sleeps `seconds`, sampling every `every` seconds each partition's leader and ISR as
    each broker not in `avoid` answers Metadata (a slowed or cut-off broker's view can be
    stale); changes go to e["states"] as [seconds since the event began, broker asked,
    partition, leader, isr]."""
    end = time.monotonic() + seconds
    last: dict[tuple[int, int], tuple] = {}
    states = e.setdefault("states", [])
    while True:
        if time.monotonic() >= end:
            return
        for b in c.ids:
            if b in avoid:
                continue
            try:
                t = c.metadata([topic], via=b, timeout=1.5)["topics"].get(topic)
            except Exception:  # noqa: BLE001 - no answer this time
                continue
            for p in (t or {}).get("partitions", []):
                st = (p["leader"], tuple(sorted(p["isr"])))
                if last.get((b, p["partition"])) != st:
                    last[(b, p["partition"])] = st
                    states.append([round(time.monotonic() - e["start"], 1), b, p["partition"],
                                   st[0], list(st[1])])
        time.sleep(max(0.0, min(every, end - time.monotonic())))


def inject(c: NetCluster, kind: str, topic: str, hold: float, rng: random.Random,
           events: list[dict], knobs: Knobs) -> None:
    """Applies fault `kind`, holds it, heals. Appends one event (or several for flap) with
    `cut`: brokers with no two-way path to any other broker during the event, and
    `client_cut`: brokers the clients cannot reach."""
    def leader(p: int) -> int:
        lead = c.leader_of(topic, p)
        if lead is None:
            raise RuntimeError(f"{topic}/{p} has no leader")
        return lead

    def leaders() -> dict[int, int]:
        parts = c.metadata([topic])["topics"][topic]["partitions"]
        return {p["partition"]: p["leader"] for p in parts}

    def ev(desc: str, cut: list[int], client_cut: list[int] | None = None,
           slowed: list[int] | None = None) -> dict:
        e = {"kind": kind, "desc": desc, "cut": cut, "client_cut": client_cut or [],
             "slowed": slowed or [],
             "start": time.monotonic(), "heal": None, "rules": sorted(c.blocked),
             "proxy_rules": [[at, peer, lst, r] for (at, peer, lst), r
                             in sorted(c.proxy_rules.items())]}
        events.append(e)
        return e

    ids = c.ids
    if kind == "flap":
        end = time.monotonic() + hold
        while time.monotonic() < end:
            x = rng.choice(ids)
            c.isolate(x)
            e = ev(f"isolate {x}", [x])
            time.sleep(min(rng.uniform(1, 4), max(0.0, end - time.monotonic())))
            c.heal()
            e["heal"] = time.monotonic()
        return
    if kind == "lossy-link":
        # Random links lose their connections: 2 in 3 times every open connection of the link
        # is reset (RST both ways), else the link stalls (nothing forwarded) for 0.5-3 s.
        e = ev("random links reset or stalled", [])
        resets = stalls = conns = 0
        end = time.monotonic() + hold
        while time.monotonic() < end:
            a, b = rng.sample(ids, 2)
            if rng.random() < 2 / 3:
                conns += c.reset_link(a, b)
                resets += 1
            else:
                c.link(a, b, blackhole=True)
                stalls += 1
                time.sleep(min(rng.uniform(0.5, 3.0), max(0.0, end - time.monotonic())))
                c.proxy_heal()
            time.sleep(min(rng.uniform(*knobs.lossy_gap), max(0.0, end - time.monotonic())))
        c.heal()
        e["heal"] = time.monotonic()
        e["desc"] = (f"{resets} link resets ({conns} connections reset), {stalls} link stalls "
                     "of 0.5-3 s, random links")
        return
    avoid: set[int] = set()
    if kind == "isolate-leader":
        x = leader(0)
        c.isolate(x)
        e = ev(f"isolate leader of {topic}/0: broker {x}", [x])
    elif kind == "isolate-controller":
        x = c.controller()
        if x is None:
            raise RuntimeError("no controller in Metadata")
        c.isolate(x)
        e = ev(f"isolate controller {x}", [x])
    elif kind == "oneway-out":
        x = leader(1 % c_partitions(c, topic))
        for o in ids:
            if o != x:
                c.one_way(x, o)
        e = ev(f"drop {x} -> others (leader of {topic}/1)", [x])
    elif kind == "oneway-in":
        x = leader(2 % c_partitions(c, topic))
        for o in ids:
            if o != x:
                c.one_way(o, x)
        e = ev(f"drop others -> {x} (leader of {topic}/2)", [x])
    elif kind == "bridge":
        x = leader(0)
        y = next(o for o in ids if o != x)
        c.partition(x, y)
        e = ev(f"partition {x} <-> {y}; the third broker reaches both", [])
    elif kind == "split-all":
        for i in ids:
            for j in ids:
                if i < j:
                    c.partition(i, j)
        e = ev("every broker cut off from every other", list(ids))
    elif kind == "slow-link":
        # First half: every link between brokers delayed; second half: one link of the
        # leader of partition 0, slower and throttled.
        d, j = knobs.slow_delay_ms, knobs.slow_jitter_ms
        c.all_links(delay_ms=d, jitter_ms=j)
        e = ev(f"every link {d:g}-{d + j:g} ms each way, then one link of the leader of "
               f"{topic}/0 200-300 ms each way and 64 KiB/s", [])
        e["leaders_at_start"] = leaders()
        hold_watching(c, topic, hold / 2, e)
        x = leader(0)
        y = rng.choice([o for o in ids if o != x])
        c.proxy_heal()
        c.link(x, y, delay_ms=200, jitter_ms=100, bandwidth_bps=64 * 1024)
        e["second_half"] = {"t": round(time.monotonic() - e["start"], 1), "link": [x, y]}
        hold_watching(c, topic, hold / 2, e)
        c.heal()
        e["heal"] = time.monotonic()
        return
    elif kind in ("slow-leader", "slow-leader-data"):
        x = leader(0)
        d = knobs.slow_leader_delay_ms
        listener = "kafka" if kind == "slow-leader-data" else "*"
        c.node_links(x, listener=listener, delay_ms=d)
        what = "replication (Kafka port) link" if listener == "kafka" else "link"
        e = ev(f"every {what} to and from broker {x} (leader of {topic}/0) delayed {d:g} ms "
               "each way", [], slowed=[x])
        e["leaders_at_start"] = leaders()
    elif kind == "client-cut-leader":
        x = leader(0)
        c.partition(CLIENT, x)
        avoid = {x}
        e = ev(f"clients cut off from broker {x} (leader of {topic}/0); brokers connected",
               [], [x])
        e["leaders_at_start"] = leaders()
    elif kind == "client-cut-one":
        lead = leaders()
        x0 = leader(0)
        led = Counter(lead.values())
        cands = [o for o in ids if o != x0]
        fewest = min(led.get(o, 0) for o in cands)
        x = rng.choice([o for o in cands if led.get(o, 0) == fewest])
        c.partition(CLIENT, x)
        avoid = {x}
        e = ev(f"clients cut off from broker {x} (not the leader of {topic}/0; leads "
               f"{led.get(x, 0)} partitions); brokers connected", [], [x])
        e["leaders_at_start"] = lead
    else:
        raise ValueError(f"unknown fault {kind}")
    hold_watching(c, topic, hold, e, avoid)
    c.heal()
    e["heal"] = time.monotonic()


def c_partitions(c: NetCluster, topic: str) -> int:
    return len(c.metadata([topic])["topics"][topic]["partitions"])


def gaps(ack_times: dict[int, list[float]], start: float, end: float,
         only: set[int] | None = None) -> float:
    """Longest stretch inside [start, end] with no acknowledgement on some partition (of
    `only`, if given)."""
    worst = 0.0
    for p, ts in ack_times.items():
        if only is not None and p not in only:
            continue
        inside = [start] + [t for t in ts if start <= t <= end] + [end]
        worst = max(worst, max(b - a for a, b in zip(inside, inside[1:])))
    return worst


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("/tmp/shardlog-netfaults"))
    ap.add_argument("--faults", default="classic",
                    help=f"comma-separated kinds or groups ({', '.join(GROUPS)}); kinds: "
                         f"{', '.join(ALL_FAULTS)}")
    ap.add_argument("--rounds", type=int, default=1, help="repeat the fault list")
    ap.add_argument("--hold", type=float, default=30.0)
    ap.add_argument("--settle", type=float, default=10.0)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--rate", type=int, default=100, help="acks=all producer, records/s")
    ap.add_argument("--probe-interval", type=float, default=0.2)
    ap.add_argument("--probe-timeout-ms", type=int, default=4000)
    ap.add_argument("--replica-lag-ms", type=int, default=10000,
                    help="replica_lag_time_max_ms (default 30000 in the broker)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--block", type=int, default=0,
                    help="address block 0..3 of 10.77.0.0/24 (runs at once need different ones)")
    ap.add_argument("--prefix", default="slnf")
    ap.add_argument("--proxy", choices=["auto", "on", "off"], default="auto",
                    help="run a tuning/netproxy.py in front of every broker (auto: when a "
                         "proxy fault is chosen)")
    ap.add_argument("--slow-delay-ms", type=float, default=50.0,
                    help="slow-link, first half: every link delayed this much each way ...")
    ap.add_argument("--slow-jitter-ms", type=float, default=150.0, help="... plus up to this")
    ap.add_argument("--slow-leader-delay-ms", type=float, default=None,
                    help="slow-leader(-data): delay each way (default replica lag + 2000 ms)")
    ap.add_argument("--lossy-gap", default="0.2,2.0",
                    help="lossy-link: seconds between link losses, min,max")
    a = ap.parse_args()
    faults = [k for f in a.faults.split(",") if f for k in GROUPS.get(f, [f])] * a.rounds
    for f in faults:
        if f not in ALL_FAULTS:
            ap.error(f"unknown fault {f}; known: {', '.join(ALL_FAULTS)} or a group "
                     f"({', '.join(GROUPS)})")
    proxies = a.proxy == "on" or (a.proxy == "auto" and any(f in PROXY_FAULTS for f in faults))
    if not proxies and any(f in PROXY_FAULTS for f in faults):
        ap.error("proxy faults need --proxy on or auto")
    try:
        lo, hi = (float(x) for x in a.lossy_gap.split(","))
    except ValueError:
        ap.error("--lossy-gap wants MIN,MAX seconds")
    knobs = Knobs(a.slow_delay_ms, a.slow_jitter_ms,
                  a.slow_leader_delay_ms if a.slow_leader_delay_ms is not None
                  else a.replica_lag_ms + 2000.0, (lo, hi))
    shutil.rmtree(a.out, ignore_errors=True)
    a.out.mkdir(parents=True)
    rng = random.Random(a.seed)
    settings = {"replica_lag_time_max_ms": str(a.replica_lag_ms)}
    report: dict = {"args": {k: str(v) for k, v in vars(a).items()}, "events": []}
    with NetCluster(a.out, settings=settings, prefix=a.prefix, block=a.block,
                    proxies=proxies) as c:
        c.start()
        cfg = {"min.insync.replicas": "2"}
        create_topic(c.bootstrap, "nf", a.partitions, 3, cfg)
        create_topic(c.bootstrap, "nf1", a.partitions, 3, cfg)
        c.wait_isr_full("nf", a.partitions, 60)
        c.wait_isr_full("nf1", a.partitions, 60)
        log(f"cluster up: {c.metadata(['nf'])['topics']['nf']['partitions']}")
        h_all = HistoryWriter(a.out / "history-acks-all.jsonl.gz", idempotence=True, acks="all",
                              meta={"run": "cluster-netfaults", "topic": "nf"})
        h_one = HistoryWriter(a.out / "history-acks-1.jsonl.gz", idempotence=False, acks="1",
                              meta={"run": "cluster-netfaults", "topic": "nf1"})
        wl = Workload(c.bootstrap, "nf", a.partitions, a.rate, history=h_all,
                      recreate_on_fatal=True, consumer_group="netfaults-live")
        prod, cons = wl.start()
        prober = Prober(c, "nf", "nf1", a.partitions, h_all, h_one, a.probe_interval,
                        a.probe_timeout_ms)
        prober.start()
        time.sleep(5)
        events: list[dict] = []
        recov: list[float | None] = []
        for kind in faults:
            log(f"fault {kind}")
            n0 = len(events)
            try:
                inject(c, kind, "nf", a.hold, rng, events, knobs)
            except Exception as e:  # noqa: BLE001 - recorded; heal and go on
                log(f"fault {kind} not applied: {e!r}")
                c.heal()
                continue
            for e in events[n0:]:
                log(f"  {e['desc']}: {e['heal'] - e['start']:.1f}s")
            healed = events[-1]["heal"]
            r = isr_full(c, "nf", a.partitions, 120)
            r1 = isr_full(c, "nf1", a.partitions, 60)
            r = None if r is None else time.monotonic() - healed
            time.sleep(max(0.0, healed + a.settle - time.monotonic()))
            recov.append(r)
            events[n0]["isr_full_after_heal_s"] = r
            events[n0]["end"] = time.monotonic()
            log(f"  healed; every ISR full {r if r is None else round(r, 1)}s after the heal "
                f"(nf1 too: {r1 is not None})")
        time.sleep(3)
        prober.join()
        wl.finish(prod, cons)
        log(f"producer: sent {wl.sent}, acked {len(wl.acked)}, failed {dict(wl.failed)}, "
            f"fatal {wl.fatal}, restarts {wl.producer_restarts}")
        isr_full(c, "nf", a.partitions, 120)
        isr_full(c, "nf1", a.partitions, 60)
        rep_all = judge_history(h_all, c.bootstrap, "nf", a.partitions)
        rep_one = judge_history(h_one, c.bootstrap, "nf1", a.partitions, examples=1_000_000)
        panics = [b.node_id for b in c.brokers if b.panicked()]
        dead = [b.node_id for b in c.brokers if not b.alive()]

    # -- judgement of the probes against the fault windows ------------------------------------
    t_base = events[0]["start"] if events else 0.0
    lost_one = {ex.get("value") for ex in rep_one.get("examples", {}).get("lost", [])}
    isolated_acks_all: list[dict] = []
    one_by_cut: Counter = Counter()  # acks=1 probes answered by cut brokers, by outcome
    # acks=1 acknowledgements lost: by whether the broker was cut when it acknowledged
    lost_1: Counter = Counter()
    lost_1_uncut: list[dict] = []
    lost_1_after_heal: list[float] = []  # seconds after the heal they were sent
    for (node, acks, inv, done, outcome, err, p, off, value) in prober.results:
        cut_ev = None
        for e in events:
            if node in e["cut"] and e["start"] <= done and inv <= (e["heal"] or 0):
                cut_ev = e
                break
        if cut_ev is not None and cut_ev["start"] + 0.5 <= inv and done <= cut_ev["heal"]:
            if acks == -1 and outcome == "ok":
                isolated_acks_all.append({"broker": node, "partition": p, "offset": off,
                                          "value": value, "fault": cut_ev["desc"],
                                          "t": round(inv - t_base, 2)})
            if acks == 1:
                one_by_cut[f"{outcome}:{err}"] += 1
        if acks == 1 and outcome == "ok" and value in lost_one:
            # the last event that cut this broker off and healed before the acknowledgement
            before = [e for e in events if node in e["cut"] and e["heal"] is not None
                      and e["heal"] <= inv]
            since_heal = inv - before[-1]["heal"] if before else None
            slow_ev = any(node in e["slowed"] and e["start"] <= done
                          and inv <= (e["heal"] or 0) for e in events)
            if cut_ev is not None:
                lost_1["acknowledged by a cut broker"] += 1
            elif slow_ev:
                lost_1["acknowledged by a broker whose links were slowed"] += 1
            elif any(node in e["cut"] and 0 <= e["start"] - done < 1.0 for e in events):
                lost_1["acknowledged by a broker less than 1 s before it was cut"] += 1
            elif since_heal is not None and since_heal < 10:
                lost_1["acknowledged by a formerly cut broker within 10 s after the heal"] += 1
                lost_1_after_heal.append(round(since_heal, 2))
            else:
                lost_1["acknowledged by a connected broker"] += 1
                if len(lost_1_uncut) < 20:
                    lost_1_uncut.append({"broker": node, "partition": p, "offset": off,
                                         "value": value, "t": round(inv - t_base, 2)})
    ack_times: dict[int, list[float]] = defaultdict(list)
    for seq, (p, _o) in wl.acked.items():
        ack_times[p].append(wl.acked_at[seq])
    for ts in ack_times.values():
        ts.sort()
    unavail = []
    for e in events:
        end = e.get("end") or e["heal"]
        if e["heal"] is None:
            continue
        g = gaps(ack_times, e["start"], end if e.get("end") else e["heal"])
        unavail.append(g)
        extra = {"max_ack_gap_s": round(g, 2)}
        if e["client_cut"] and e.get("leaders_at_start"):
            # partitions whose leader the clients could not reach, and the others
            cut_led = {p for p, lead in e["leaders_at_start"].items() if lead in e["client_cut"]}
            others = set(range(a.partitions)) - cut_led
            extra["partitions_led_by_client_cut"] = sorted(cut_led)
            extra["max_ack_gap_led_by_client_cut_s"] = (
                round(gaps(ack_times, e["start"], end, cut_led), 2) if cut_led else None)
            extra["max_ack_gap_other_partitions_s"] = (
                round(gaps(ack_times, e["start"], end, others), 2) if others else None)
            extra["first_ack_after_heal_s"] = {
                p: next((round(t - e["heal"], 2) for t in ack_times.get(p, [])
                         if t > e["heal"]), None) for p in sorted(cut_led)}
        report["events"].append({k: (round(v - t_base, 2) if k in ("start", "heal", "end")
                                     and v is not None else v) for k, v in e.items()} | extra)
    probe_counts = Counter((f"b{r[0]}", f"acks={r[1]}", r[4], r[5]) for r in prober.results)
    report.update({
        "acks_all": {k: rep_all.get(k) for k in ("valid", "counts", "stats", "examples",
                                                 "file")},
        "acks_1": {k: rep_one.get(k) for k in ("valid", "counts", "stats", "file")},
        "producer": {"sent": wl.sent, "acked": len(wl.acked), "failed": dict(wl.failed),
                     "fatal": wl.fatal, "restarts": wl.producer_restarts,
                     "consumer_errors": dict(wl.consumer_errors)},
        "isolated_acks_all": isolated_acks_all,
        "acks_1_probes_to_cut_brokers": dict(one_by_cut),
        "acks_1_lost": dict(lost_1),
        "acks_1_lost_after_heal_s": sorted(lost_1_after_heal),
        "acks_1_lost_by_connected_broker_examples": lost_1_uncut,
        "probe_counts": {" ".join(map(str, k)): v for k, v in sorted(probe_counts.items(),
                                                                       key=str)},
        "unavailability_s": {"per_event": [round(x, 2) for x in unavail],
                             "median": round(statistics.median(unavail), 2) if unavail else None,
                             "max": round(max(unavail), 2) if unavail else None},
        "isr_full_after_heal_s": [None if x is None else round(x, 2) for x in recov],
        "panics": panics, "dead_brokers": dead,
    })
    (a.out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    ca, c1 = rep_all.get("counts", {}), rep_one.get("counts", {})
    print(json.dumps({
        "acks_all_acknowledged": rep_all.get("stats", {}).get("sends_ok"),
        "acks_all_anomalies": {k: v for k, v in ca.items() if v},
        "acks_all_valid": rep_all.get("valid"),
        "isolated_acks_all": len(isolated_acks_all),
        "acks_1_acknowledged": rep_one.get("stats", {}).get("sends_ok"),
        "acks_1_anomalies": {k: v for k, v in c1.items() if v},
        "acks_1_probes_to_cut_brokers": dict(one_by_cut),
        "acks_1_lost": dict(lost_1),
        "acks_1_lost_after_heal_max_s": max(lost_1_after_heal, default=None),
        "unavailability_s": report["unavailability_s"],
        "events": [{k: ev.get(k) for k in ("kind", "desc", "max_ack_gap_s",
                                            "max_ack_gap_led_by_client_cut_s",
                                            "max_ack_gap_other_partitions_s",
                                            "first_ack_after_heal_s",
                                            "isr_full_after_heal_s") if k in ev}
                   for ev in report["events"] if "isr_full_after_heal_s" in ev
                   or ev["kind"] != "flap"],
        "panics": panics, "dead": dead, "report": str(a.out / "report.json")}, indent=1))
    bad = (any(ca.values()) or isolated_acks_all or panics or dead)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
