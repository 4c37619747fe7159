"""The cluster under process faults: three real brokers (the `cluster` fixture), an RF=3 topic
with min.insync.replicas=2, and an idempotent acks=all confluent-kafka producer running
throughout and recording an operation history (tests/history) that the history checker judges
at the end, together with the final read's offsets (contiguous from 0, every value once).

  * kill -9 of the partition leader, four times, each restarted;
  * kill -9 of a follower: it leaves the ISR, rejoins it, and once caught up every replica's
    segment files are byte-identical;
  * a rolling restart with SIGTERM (controlled shutdown) of all three brokers: no delivery
    error at all;
  * SIGSTOP of the leader past the broker session timeout: produce goes on on a new leader,
    and after SIGCONT the old leader acknowledges nothing sent straight to it;
  * kill -9 of the leader and a follower together under flush=never, twice: the ISR grows
    back to three each time.

The long-run versions (minutes per fault, failover-time measurement) are
tuning/cluster-faults.py."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tuning"))

from cluster_common import (ACK_GRACE_S, ClusterWorkload, HistoryWriter,  # noqa: E402
                            create_rf3_topic, judge, partition_state, stale_leader_produce,
                            wait_isr, wait_new_leader)
from test_replication import partition_gauge, segment_bytes  # noqa: E402
from util import unique_topic  # noqa: E402

pytestmark = [pytest.mark.timeout(150)]

RATE = 200  # records a second


def start_workload(cluster, tmp_path: Path, topic: str, name: str) -> ClusterWorkload:
    history = HistoryWriter(tmp_path / f"{name}.history.jsonl", idempotence=True, acks="all",
                            meta={"test": name, "topic": topic})
    wl = ClusterWorkload(cluster.bootstrap, topic, history, rate=RATE).start()
    wl.wait_acks(50, timeout=30)
    return wl


def finish_and_judge(cluster, wl: ClusterWorkload, topic: str):
    wl.finish()
    assert not wl.fatal, f"fatal producer errors: {wl.fatal}"
    assert wl.left_in_queue == 0, f"{wl.left_in_queue} records never answered"
    j = judge(wl.history, ",".join(b.bootstrap for b in cluster.alive()), topic)
    assert not j.problems(), j.problems()
    assert j.acked_sends == wl.acks_count() > 0
    # Every send acknowledged and in the final read once (info sends may or may not be).
    assert j.report["counts"]["lost"] == 0
    assert len(j.final_offsets) >= j.acked_sends
    return j


def test_kill9_leader_four_times(cluster, tmp_path):
    topic = unique_topic("kill-leader")
    create_rf3_topic(cluster, topic)
    wl = start_workload(cluster, tmp_path, topic, "kill-leader")
    failovers = []
    for _ in range(4):
        old = partition_state(cluster, topic)["leader"]
        t_kill = time.monotonic()
        cluster.kill(old)
        wait_new_leader(cluster, topic, old)
        first = wl.wait_ack_after(t_kill + ACK_GRACE_S, timeout=30)
        assert first is not None, f"no acknowledgement within 30 s of killing leader {old}"
        failovers.append(first - t_kill)
        wl.wait_acks(20)
        cluster.restart(old)
        wait_isr(cluster, topic, 3)  # back in the ISR before the next kill
        wl.wait_acks(20)
    print(f"kill -9 leader -> first ack: {[round(f, 2) for f in failovers]} s")
    j = finish_and_judge(cluster, wl, topic)
    assert not wl.failed, f"delivery errors: {dict(wl.failed)}"
    assert j.info_sends == 0 and j.acked_sends == wl.sent


def test_follower_leaves_and_rejoins_isr_byte_identical(cluster, tmp_path):
    topic = unique_topic("kill-follower")
    p0 = create_rf3_topic(cluster, topic)
    wl = start_workload(cluster, tmp_path, topic, "kill-follower")
    follower = next(r for r in p0["replicas"] if r != p0["leader"])
    t_kill = time.monotonic()
    cluster.kill(follower)
    s = wait_isr(cluster, topic, 2)
    assert follower not in s["isr"] and s["leader"] == p0["leader"]
    # acks=all goes on with the ISR of two, at once: the leader does not wait for the dead
    # follower as "caught up" (it did, for replica.lag.time.max.ms = 30 s)
    wl.wait_acks(RATE, timeout=10)
    gap = wl.longest_gap(t_kill, time.monotonic())
    assert gap < 5.0, f"{gap:.1f} s without an acknowledgement after the follower died"
    cluster.restart(follower)
    s = wait_isr(cluster, topic, 3)
    assert follower in s["isr"]
    wl.wait_acks(RATE // 2)
    j = finish_and_judge(cluster, wl, topic)
    assert not wl.failed, f"delivery errors: {dict(wl.failed)}"
    end = len(j.final_offsets)

    def caught_up():
        ends = [partition_gauge(cluster[i].admin_port, "shardlog_partition_log_end_offset",
                                topic, 0) for i in (1, 2, 3)]
        return ends if ends == [end] * 3 else None
    cluster.wait_until(caught_up, 30, f"every replica to end at {end}")
    logs = {i: segment_bytes(cluster[i].data_dir, topic) for i in (1, 2, 3)}
    assert len(logs[follower]) > end * 10
    assert logs[1] == logs[2] == logs[3], "replicas are byte-identical"


def test_rolling_restart_sigterm_no_failed_produce(cluster, tmp_path):
    topic = unique_topic("rolling")
    create_rf3_topic(cluster, topic)
    wl = start_workload(cluster, tmp_path, topic, "rolling")
    for node in (1, 2, 3):
        cluster.stop(node)  # controlled shutdown: must exit 0
        wl.wait_acks(RATE // 2)
        cluster.restart(node)
        wait_isr(cluster, topic, 3)
        wl.wait_acks(RATE // 4)
    j = finish_and_judge(cluster, wl, topic)
    assert not wl.failed, f"delivery errors during the rolling restart: {dict(wl.failed)}"
    assert j.info_sends == 0 and j.acked_sends == wl.sent


def test_paused_leader_acknowledges_nothing_after_waking(cluster, tmp_path):
    topic = unique_topic("pause")
    create_rf3_topic(cluster, topic)
    wl = start_workload(cluster, tmp_path, topic, "pause")
    old = partition_state(cluster, topic)["leader"]
    t_pause = time.monotonic()
    cluster.pause(old)
    new = wait_new_leader(cluster, topic, old)
    assert new != old
    assert wl.wait_ack_after(time.monotonic(), timeout=30) is not None, \
        "no acknowledgement from the new leader while the old one is paused"
    wl.wait_acks(RATE // 2)
    # Past the session timeout (1.8 s) for sure, then a produce straight to the old leader,
    # sent while it is still stopped: the first thing it handles on waking.
    time.sleep(max(0.0, t_pause + 4.0 - time.monotonic()))
    results: list = []
    stale = threading.Thread(target=lambda: results.append(
        stale_leader_produce(cluster[old], topic, b"to-the-stale-leader", timeout_ms=3000)))
    stale.start()
    time.sleep(0.3)
    cluster.resume(old)
    stale.join(20)
    assert results, "the stale produce did not finish"
    kind, detail = results[0]
    assert kind != "ok", f"the woken old leader acknowledged a produce at offset {detail}"
    if kind == "error":
        # NOT_LEADER_OR_FOLLOWER, NOT_ENOUGH_REPLICAS(_AFTER_APPEND)
        assert detail in (6, 19, 20), f"unexpected error code {detail}"
    s = wait_isr(cluster, topic, 3)
    assert s["leader"] != old or s["leader_epoch"] > 0
    wl.wait_acks(RATE // 4)
    j = finish_and_judge(cluster, wl, topic)
    assert "to-the-stale-leader" not in j.values, "the stale leader's record survived"
    assert not wl.failed, f"delivery errors: {dict(wl.failed)}"


def test_kill_two_under_flush_never_isr_grows_back(make_cluster, tmp_path):
    """kill -9 of the leader and a follower at once (below min.insync.replicas) under flush
    never, twice: the restarted brokers recover a truncated tail, the controller changes the
    partition's ELR (KIP-966) without changing its ISR, and the leader must still take the new
    partition epoch. Before that fix every later ISR expansion was refused with
    INVALID_UPDATE_VERSION and acks=all stayed unavailable for good (found by
    `tuning/cluster-faults.py --fault kill-two --flush never`)."""
    cluster = make_cluster(env={"SHARDLOG_DEFAULT_FLUSH": "never"})
    topic = unique_topic("kill-two")
    create_rf3_topic(cluster, topic)
    wl = start_workload(cluster, tmp_path, topic, "kill-two")
    for _ in range(2):
        s = partition_state(cluster, topic)
        leader = s["leader"]
        follower = next(r for r in s["replicas"] if r != leader)
        t_kill = time.monotonic()
        cluster.kill(leader)
        cluster.kill(follower)
        time.sleep(1.0)
        # Together: with the controller among them, neither is ready before the other runs.
        cluster.restart(leader, wait=False)
        cluster.restart(follower, wait=False)
        cluster[leader].wait_ready()
        cluster[follower].wait_ready()
        wait_isr(cluster, topic, 3, timeout=45)
        first = wl.wait_ack_after(t_kill + ACK_GRACE_S, timeout=30)
        assert first is not None, "no acknowledgement within 30 s of the restart"
        wl.wait_acks(RATE // 2)
    finish_and_judge(cluster, wl, topic)
