"""The operator surface of a multi-broker cluster: `shardlog dev cluster`, the `cluster`
fixture itself, Metadata/DescribeCluster/FindCoordinator from the image, the CLI and the
controller-view metrics."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

import kwire
from conftest import BrokerError, free_port_base, shardlog_bin, _require_binary

pytestmark = pytest.mark.timeout(180)


# ---- shardlog dev cluster ----------------------------------------------------------------

class DevCluster:
    """A `shardlog dev cluster` supervisor process and what it wrote."""

    def __init__(self, tmp_path: Path, brokers: int, extra: list[str] | None = None):
        _require_binary()
        self.dir = tmp_path / "dev"
        self.base = free_port_base(brokers)
        self.out_path = tmp_path / "dev-cluster.out"
        self._out = open(self.out_path, "wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHARDLOG_")}
        env["NO_COLOR"] = "1"
        self.argv = [shardlog_bin(), "dev", "cluster", "--brokers", str(brokers),
                     "--data-dir", str(self.dir), "--base-port", str(self.base), *(extra or [])]
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.pids: list[int] = []

    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def wait_output(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            assert time.monotonic() < deadline, f"{text!r} not printed:\n{self.output()}"
            time.sleep(0.1)

    def wait_json(self, timeout: float = 30) -> dict:
        path = self.dir / "cluster.json"
        deadline = time.monotonic() + timeout
        while not path.exists():
            assert self.proc.poll() is None, f"dev cluster exited:\n{self.output()}"
            assert time.monotonic() < deadline, f"no cluster.json:\n{self.output()}"
            time.sleep(0.1)
        doc = json.loads(path.read_text())
        self.pids = [b["pid"] for b in doc["brokers"]]
        return doc

    def cleanup(self) -> None:
        """Leaves nothing running whatever the test did."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for pid in self.pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        self._out.close()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def wait_gone(pids: list[int], timeout: float = 10) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in pids if pid_alive(p)]
        if not left:
            return []
        time.sleep(0.1)
    return [p for p in pids if pid_alive(p)]


def kafka_ready(host_port: str) -> bool:
    host, port = host_port.rsplit(":", 1)
    try:
        with kwire.Conn(host, int(port), timeout=3) as c:
            return c.api_versions().error_code == 0 and bool(c.metadata(None)["brokers"])
    except (OSError, kwire.ConnectionClosed):
        return False


def test_dev_cluster_starts_every_broker_and_sigterm_stops_them_all(tmp_path):
    dev = DevCluster(tmp_path, 3)
    try:
        doc = dev.wait_json()
        assert [b["id"] for b in doc["brokers"]] == [1, 2, 3]
        assert doc["voters"] == ",".join(f"{i}@127.0.0.1:{dev.base + 10 * (i - 1) + 1}" for i in (1, 2, 3))
        assert len(set(dev.pids)) == 3 and all(pid_alive(p) for p in dev.pids), doc
        for i, b in enumerate(doc["brokers"], start=1):
            cmdline = Path(f"/proc/{b['pid']}/cmdline").read_bytes().split(b"\0")
            assert [b"start", b"--node-id", str(i).encode()] == cmdline[1:4], cmdline
            assert b["kafka"] == f"127.0.0.1:{dev.base + 10 * (i - 1)}"
            assert b["admin"] == f"127.0.0.1:{dev.base + 10 * (i - 1) + 2}"
            assert Path(b["data_dir"]) == dev.dir / f"broker-{i}"
        # Every broker serves Kafka and admin HTTP, and logs to its own file.
        deadline = time.monotonic() + 60
        while not all(kafka_ready(b["kafka"]) for b in doc["brokers"]):
            assert time.monotonic() < deadline, dev.output()
            time.sleep(0.2)
        for b in doc["brokers"]:
            host, port = b["admin"].rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=5) as s:
                s.sendall(b"GET /health HTTP/1.0\r\n\r\n")
                status = s.recv(64)
                assert status.startswith(b"HTTP/1.") and b" 200 " in status, (b, status)
            assert b["admin"] in Path(b["log"]).read_text(errors="replace"), b["log"]
        dev.wait_output("cluster ready")
        out = dev.output()
        for b in doc["brokers"]:
            assert f"{b['pid']}" in out and b["controller"] in out, out

        dev.proc.send_signal(signal.SIGTERM)
        assert dev.proc.wait(60) == 0, dev.output()
        assert wait_gone(dev.pids) == [], f"brokers left running:\n{dev.output()}"
        out = dev.output()
        assert "cluster stopped" in out and out.count("stopped: exit status 0") == 3, out
    finally:
        dev.cleanup()


def test_dev_cluster_reports_a_dead_broker_and_kills_a_hung_one(tmp_path):
    dev = DevCluster(tmp_path, 2, ["--grace-secs", "1"])
    try:
        dev.wait_json()
        dev.wait_output("cluster ready")
        one, two = dev.pids
        os.kill(one, signal.SIGKILL)
        dev.wait_output(f"broker 1 (pid {one}) exited: killed by signal 9 (not restarted")
        assert dev.proc.poll() is None, "the supervisor keeps the others running"
        assert pid_alive(two)
        os.kill(two, signal.SIGSTOP)  # a hung broker ignores SIGTERM until killed
        dev.proc.send_signal(signal.SIGINT)
        assert dev.proc.wait(30) == 1, dev.output()
        assert f"broker 2 (pid {two}) still running after the grace period: SIGKILL" in dev.output()
        assert wait_gone(dev.pids) == []
    finally:
        dev.cleanup()


def test_dev_cluster_refuses_ports_in_use(tmp_path):
    base = free_port_base(2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", base + 11))
        s.listen()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHARDLOG_")}
        p = subprocess.run([shardlog_bin(), "dev", "cluster", "--brokers", "2", "--data-dir",
                            str(tmp_path / "d"), "--base-port", str(base)],
                           capture_output=True, timeout=30, env=env)
    assert p.returncode == 2, p
    assert f"127.0.0.1:{base + 11}" in p.stderr.decode() and b"ports in use" in p.stderr
    assert not (tmp_path / "d" / "cluster.json").exists()


# ---- Metadata, DescribeCluster and the CLI on one broker ------------------------------------

def cli(args: list[str], ok: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARDLOG_")}
    p = subprocess.run([shardlog_bin(), *args], capture_output=True, timeout=60, env=env)
    out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    assert "panicked" not in err, err
    if ok:
        assert p.returncode == 0, f"shardlog {' '.join(args)} exited {p.returncode}:\n{out}\n{err}"
    p.out, p.err = out, err  # type: ignore[attr-defined]
    return p


def test_cluster_info_and_topic_describe_on_one_broker(broker):
    b = ["--brokers", broker.bootstrap]
    info = json.loads(cli(["cluster", "info", "--format", "json", *b]).out)
    assert info["fenced_brokers_shown"] is True, "DescribeCluster v2 answered"
    assert info["controller_id"] == 1
    assert info["brokers"] == [{"node_id": 1, "host": "127.0.0.1", "port": broker.port,
                                "rack": None, "fenced": False}]
    text = cli(["cluster", "info", *b]).out
    rows = [line.split() for line in text.splitlines()]
    assert ["BROKER", "HOST", "PORT", "RACK", "STATE", "CONTROLLER"] in rows, text
    assert ["1", "127.0.0.1", str(broker.port), "-", "live", "*"] in rows, text
    assert "controller 1" in text and "(0 fenced)" in text, text

    cli(["topic", "create", "described", "--partitions", "2", *b])
    d = json.loads(cli(["topic", "describe", "described", "--format", "json", *b]).out)
    assert [(p["leader"], p["replicas"], p["isr"], p["offline_replicas"], p["error_code"])
            for p in d["partitions"]] == [(1, [1], [1], [], 0)] * 2
    assert d["offline_partitions"] == 0 and d["under_replicated_partitions"] == 0
    text = cli(["topic", "describe", "described", "--no-configs", *b]).out
    header = text.splitlines()[1].split()
    assert header[:6] == ["PARTITION", "LEADER", "EPOCH", "REPLICAS", "ISR", "OFFLINE"], text
    assert text.splitlines()[2].split()[:6] == ["0", "1", "0", "1", "1", "-"], text


# ---- the 3-broker cluster ---------------------------------------------------------------------

def create_replicated(bootstrap: str, name: str, partitions: int = 1, rf: int = 3,
                      config: dict | None = None) -> None:
    from confluent_kafka.admin import NewTopic
    from util import admin
    a = admin(bootstrap)  # kept alive until the answer: a dropped client cancels it
    futs = a.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=rf, config=config or {})],
        operation_timeout=30, request_timeout=30)
    futs[name].result(timeout=30)


def test_the_cluster_fixture(cluster):
    """The fixture's own helpers: addresses, Metadata from every broker, kill -9 / SIGSTOP /
    SIGTERM and restart on the same ports and data directory."""
    assert cluster.bootstrap == ",".join(f"127.0.0.1:{cluster.base + 10 * i}" for i in range(3))
    for i in (1, 2, 3):
        md = cluster.metadata(via=i)
        assert sorted(b["node_id"] for b in md["brokers"]) == [1, 2, 3], (i, md)
        assert md["controller_id"] == cluster.controller(via=1), "one controller, seen by all"
    assert (cluster[2].data_dir / "shardlog.log").exists()

    create_replicated(cluster.bootstrap, "fixture", partitions=1, rf=1)
    leader = cluster.wait_until(lambda: cluster.leader_of("fixture", 0), 30, "a leader")
    assert leader in (1, 2, 3)

    cluster.kill(3)
    assert not cluster[3].alive()
    cluster.restart(3)
    cluster.wait_formed()
    assert cluster[3].starts == 2 and cluster[3].log_text().count("===== start #") == 2

    cluster.pause(2)
    assert [b.node_id for b in cluster.alive()] == [1, 3]
    with pytest.raises(OSError):
        with kwire.Conn("127.0.0.1", cluster[2].port, timeout=1) as c:
            c.api_versions()  # accepted by the kernel, never answered
    cluster.resume(2)
    assert cluster.wait_until(lambda: kafka_ready(cluster[2].bootstrap), 30, "broker 2 answers")

    assert cluster.stop(1) == 0
    cluster.restart(1)
    cluster.wait_formed()
    # Same data directory: the topic is still there, on the broker it was placed on.
    md = cluster.metadata(["fixture"], via=1)["topics"]["fixture"]
    assert md["error_code"] == 0 and md["partitions"][0]["replicas"] == [leader], md
    with pytest.raises(BrokerError, match="timed out after 0.3s waiting for never"):
        cluster.wait_until(lambda: False, 0.3, "never")


def test_metadata_describe_and_metrics_follow_a_lost_broker(cluster):
    """Every broker answers with the image: all brokers, each partition's leader, replicas and
    ISR; a broker killed -9 leaves the brokers list once fenced and shows as an offline
    replica; cluster info, topic describe and the metrics say the same."""
    from util import metrics
    b = ["--brokers", cluster.bootstrap]
    create_replicated(cluster.bootstrap, "seen", partitions=3, rf=3)
    cluster.wait_until(lambda: all(cluster.leader_of("seen", p) for p in range(3)), 30,
                       "every partition led")
    for i in (1, 2, 3):
        t = cluster.metadata(["seen"], via=i)["topics"]["seen"]
        for p in t["partitions"]:
            assert sorted(p["replicas"]) == [1, 2, 3] and sorted(p["isr"]) == [1, 2, 3], (i, p)
        m = metrics(cluster[i].admin_port, combine=max)
        assert m["shardlog_brokers_live"] == 3
        assert m["shardlog_partitions_offline"] == 0
        assert m["shardlog_controller_leader"] == cluster.controller(via=i)
    d = json.loads(cli(["topic", "describe", "seen", "--format", "json", "--no-configs", *b]).out)
    assert all(sorted(p["isr"]) == [1, 2, 3] and p["leader"] in p["replicas"]
               for p in d["partitions"]), d

    victim = next(i for i in (3, 2, 1) if i != cluster.controller())
    before = {p["partition"]: p for p in cluster.metadata(["seen"])["topics"]["seen"]["partitions"]}
    elections = {i: metrics(cluster[i].admin_port)["shardlog_leader_elections_total"]
                 for i in (1, 2, 3) if i != victim}
    cluster.kill(victim)

    def fenced() -> bool:
        md = cluster.metadata(["seen"])
        if sorted(x["node_id"] for x in md["brokers"]) != sorted({1, 2, 3} - {victim}):
            return False
        # A partition the victim led has a new leader in a new leader epoch.
        return all(p["leader"] not in (-1, victim) and victim not in p["isr"]
                   and victim in p["offline"]
                   and (before[p["partition"]]["leader"] != victim
                        or p["leader_epoch"] > before[p["partition"]]["leader_epoch"])
                   for p in md["topics"]["seen"]["partitions"])
    cluster.wait_until(fenced, 60, f"broker {victim} fenced and out of every ISR")

    info = json.loads(cli(["cluster", "info", "--format", "json", *b]).out)
    state = {x["node_id"]: x["fenced"] for x in info["brokers"]}
    assert state.get(victim, True) is True and all(not f for i, f in state.items() if i != victim), info
    d = json.loads(cli(["topic", "describe", "seen", "--format", "json", "--no-configs", *b]).out)
    for p in d["partitions"]:
        assert victim in p["offline_replicas"] and victim not in p["isr"], p
        assert p["leader"] != victim and p["leader"] >= 0, p
    live = [i for i in (1, 2, 3) if i != victim]
    m = {i: metrics(cluster[i].admin_port, combine=max) for i in live}
    assert all(m[i]["shardlog_brokers_live"] == 2 for i in live), m
    # Placement spread the leaders, so the victim led one partition: its successor counted
    # the leadership it took.
    assert len({p["leader"] for p in before.values()}) == 3, before
    taken = sum(metrics(cluster[i].admin_port)["shardlog_leader_elections_total"] - elections[i]
                for i in live)
    lost = sum(1 for p in before.values() if p["leader"] == victim)
    assert taken >= lost >= 1, (taken, lost)
    # Under-replicated partitions are counted by their leaders: 3 in all.
    assert sum(metrics(cluster[i].admin_port)["shardlog_partitions_under_replicated"]
               for i in live) == 3


def test_partitions_of_a_lost_broker_go_offline_everywhere(cluster):
    """RF 1: a broker killed -9 is fenced; every other broker then lists it in no Metadata,
    reports its partitions leaderless with it as the offline replica, and counts them in
    shardlog_partitions_offline; cluster info shows it fenced, topic describe still works."""
    from util import metrics
    b = ["--brokers", cluster.bootstrap]
    create_replicated(cluster.bootstrap, "lonely", partitions=3, rf=1)
    leaders = cluster.wait_until(
        lambda: [cluster.leader_of("lonely", p) for p in range(3)]
        if all(cluster.leader_of("lonely", p) for p in range(3)) else None, 30, "leaders")
    victim = leaders[0]
    mine = [p for p in range(3) if leaders[p] == victim]
    cluster.kill(victim)
    live = [i for i in (1, 2, 3) if i != victim]

    def gone_everywhere() -> bool:
        for i in live:
            md = cluster.metadata(["lonely"], via=i)
            if victim in [x["node_id"] for x in md["brokers"]]:
                return False
            for p in md["topics"]["lonely"]["partitions"]:
                if p["partition"] in mine and not (
                        p["leader"] == -1 and p["error_code"] == 5 and p["offline"] == [victim]):
                    return False
        return True
    cluster.wait_until(gone_everywhere, 60, f"broker {victim} fenced and its partitions offline")

    for i in live:
        m = metrics(cluster[i].admin_port, combine=max)
        assert m["shardlog_brokers_live"] == 2, (i, m["shardlog_brokers_live"])
        assert m["shardlog_partitions_offline"] >= len(mine), (i, m["shardlog_partitions_offline"])
        assert m["shardlog_controller_leader"] in live
    info = json.loads(cli(["cluster", "info", "--format", "json", *b]).out)
    assert {x["node_id"]: x["fenced"] for x in info["brokers"]}.get(victim) is True, info
    assert info["offline_partitions"] >= len(mine), info
    d = json.loads(cli(["topic", "describe", "lonely", "--format", "json", "--no-configs", *b]).out)
    for p in d["partitions"]:
        if p["partition"] in mine:
            assert (p["leader"], p["offline_replicas"], p["log_end_offset"]) == (-1, [victim], None), p
        else:
            assert p["leader"] in live and p["log_end_offset"] == 0, p
    assert d["offline_partitions"] == len(mine) and "without a leader" in d["offsets_note"], d

    cluster.restart(victim)
    cluster.wait_formed()
    cluster.wait_until(lambda: all(cluster.leader_of("lonely", p) == leaders[p] for p in mine),
                       60, "the restarted broker leads its partitions again")
