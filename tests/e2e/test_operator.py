"""The operator experience against a real broker: the `shardlog` CLI (topic lifecycle,
produce/consume round trip, consumer-group lag and offset resets), the admin HTTP listener
(/metrics parsed by the Prometheus text-format parser, /health) and `shardlog check`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import free_port, shardlog_bin
from util import unique_topic

pytestmark = pytest.mark.timeout(120)


def cli(args: list[str], stdin: str | None = None, ok: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARDLOG_")}
    p = subprocess.run([shardlog_bin(), *args], input=(stdin or "").encode(), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout, env=env)
    p.out = p.stdout.decode(errors="replace")  # type: ignore[attr-defined]
    p.err = p.stderr.decode(errors="replace")  # type: ignore[attr-defined]
    assert "panicked" not in p.err, p.err
    if ok:
        assert p.returncode == 0, f"shardlog {' '.join(args)} exited {p.returncode}:\n{p.out}\n{p.err}"
    return p


def cli_json(args: list[str], **kw):
    p = cli([*args, "--format", "json"], **kw)
    return json.loads(p.out)


@pytest.fixture(scope="module")
def admin_broker(tmp_path_factory):
    """One broker with its admin HTTP listener on a free port."""
    from conftest import Broker, _require_binary
    _require_binary()
    admin_port = free_port()
    b = Broker(tmp_path_factory.mktemp("operator"),
               extra_args=["--admin-listen", f"127.0.0.1:{admin_port}"])
    b.admin_port = admin_port
    b.start()
    yield b
    b.teardown()


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    status, text = http_get(port, "/metrics")
    assert status == 200, text
    samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_topic_lifecycle(admin_broker):
    b = ["--brokers", admin_broker.bootstrap]
    t = unique_topic("op-life")
    cli(["topic", "create", t, "--partitions", "3", "--config", "retention.ms=3600000", *b])
    again = cli(["topic", "create", t, "--partitions", "3", *b], ok=False)
    assert again.returncode == 1 and "TopicAlreadyExists" in again.err, again.err
    cli(["topic", "create", t, "--partitions", "3", "--if-not-exists", *b])

    listed = cli_json(["topic", "list", *b])
    assert {"name": t, "partitions": 3} in [{k: x[k] for k in ("name", "partitions")} for x in listed]
    assert t in cli(["topic", "list", *b]).out

    d = cli_json(["topic", "describe", t, *b])
    assert [p["partition"] for p in d["partitions"]] == [0, 1, 2]
    assert all(p["leader"] >= 0 and p["isr"] == p["replicas"] for p in d["partitions"])
    cfg = {c["name"]: c for c in d["configs"]}
    assert cfg["retention.ms"]["value"] == "3600000" and cfg["retention.ms"]["source"] == "dynamic-topic"

    cli(["topic", "alter-config", t, "--set", "retention.ms=7200000", "--set", "flush.messages=10", *b])
    cfg = {c["name"]: c["value"] for c in cli_json(["topic", "describe", t, *b])["configs"]}
    assert cfg["retention.ms"] == "7200000" and cfg["flush.messages"] == "10"
    cli(["topic", "alter-config", t, "--delete", "flush.messages", *b])
    cfg = {c["name"]: c for c in cli_json(["topic", "describe", t, *b])["configs"]}
    assert cfg["flush.messages"]["source"] == "default"

    cli(["topic", "add-partitions", t, "--total", "5", *b])
    assert len(cli_json(["topic", "describe", t, *b])["partitions"]) == 5
    shrink = cli(["topic", "add-partitions", t, "--total", "2", *b], ok=False)
    assert shrink.returncode == 2, shrink.err

    cli(["topic", "delete", t, *b])
    assert t not in [x["name"] for x in cli_json(["topic", "list", *b])]
    gone = cli(["topic", "describe", t, *b], ok=False)
    assert gone.returncode == 1 and "does not exist" in gone.err
    cli(["topic", "delete", t, "--if-exists", *b])


def test_errors_and_help(admin_broker):
    down = cli(["topic", "list", "--brokers", f"127.0.0.1:{free_port()}", "--timeout-ms", "3000"], ok=False)
    assert down.returncode == 1 and "cannot reach" in down.err, down.err
    usage = cli(["topic", "list", "--format", "xml"], ok=False)
    assert usage.returncode == 2
    for sub in (["topic"], ["produce"], ["consume"], ["group"], ["cluster"], ["check"]):
        h = cli([*sub, "--help"])
        assert "Examples:" in h.out and "--brokers" in h.out or sub == ["check"], h.out


def test_produce_consume_round_trip(admin_broker):
    b = ["--brokers", admin_broker.bootstrap]
    t = unique_topic("op-rt")
    cli(["topic", "create", t, "--partitions", "2", *b])
    lines = [f"key{i % 4}:value {i}" for i in range(40)]
    res = cli_json(["produce", t, "--key-separator", ":", "--header", "src=e2e", "--compression", "lz4", *b],
                   stdin="\n".join(lines) + "\n")
    assert res["records"] == 40 and sum(p["records"] for p in res["partitions"]) == 40

    out = cli(["consume", t, "--from-beginning", "-n", "40", "--output", "json", *b]).out.splitlines()
    recs = [json.loads(x) for x in out]
    assert len(recs) == 40
    assert sorted(f"{r['key']}:{r['value']}" for r in recs) == sorted(lines)
    assert all(r["headers"] == {"src": "e2e"} for r in recs)
    # Same key, same partition; per partition, offsets are contiguous and in line order.
    by_key = {}
    for r in recs:
        by_key.setdefault(r["key"], set()).add(r["partition"])
    assert all(len(ps) == 1 for ps in by_key.values()), by_key
    for p in (0, 1):
        offs = [r["offset"] for r in recs if r["partition"] == p]
        assert offs == list(range(len(offs)))
        vals = [int(r["value"].split()[1]) for r in recs if r["partition"] == p]
        assert vals == sorted(vals)

    # Plain values from an offset of one partition; full format; stop on idle.
    p0 = [r for r in recs if r["partition"] == 0]
    plain = cli(["consume", t, "--partition", "0", "--offset", "2", "--idle-timeout-ms", "1500", *b]).out
    assert plain.splitlines() == [r["value"] for r in p0[2:]]
    full = cli(["consume", t, "--partition", "0", "--from-beginning", "-n", "1", "--output", "full", *b]).out
    assert full.rstrip("\n").split("\t") == ["0", "0", str(p0[0]["timestamp"]), p0[0]["key"], "src=e2e",
                                            p0[0]["value"]]
    # From a timestamp after everything: nothing, and the idle timeout ends it.
    later = str(int(time.time() * 1000) + 60_000)
    assert cli(["consume", t, "--timestamp", later, "--idle-timeout-ms", "1000", *b]).out == ""
    # Explicit partition, acks=1, plain value lines.
    cli(["produce", t, "--partition", "1", "--acks", "1", *b], stdin="x\ny\n")
    tail = cli(["consume", t, "--partition", "1", "--from-beginning", "--idle-timeout-ms", "1500", *b]).out
    assert tail.splitlines()[-2:] == ["x", "y"]
    bad = cli(["produce", t, "--partition", "9", *b], stdin="z\n", ok=False)
    assert bad.returncode == 2 and "partition" in bad.err


def test_consume_shows_log_append_time(admin_broker):
    """On a LogAppendTime topic the CLI prints the broker's append time, not the CreateTime a
    producer set (librdkafka here, with a timestamp from 2001)."""
    from confluent_kafka import Producer
    b = ["--brokers", admin_broker.bootstrap]
    t = unique_topic("op-lat")
    cli(["topic", "create", t, "--config", "message.timestamp.type=LogAppendTime", *b])
    before = int(time.time() * 1000)
    p = Producer({"bootstrap.servers": admin_broker.bootstrap})
    for i in range(3):
        p.produce(t, value=f"v{i}".encode(), headers=[("h", b"x")], timestamp=1_000_000_000_000)
    assert p.flush(30) == 0
    after = int(time.time() * 1000)
    recs = [json.loads(x) for x in
            cli(["consume", t, "--from-beginning", "-n", "3", "--output", "json", *b]).out.splitlines()]
    assert [r["value"] for r in recs] == ["v0", "v1", "v2"]
    assert all(r["headers"] == {"h": "x"} for r in recs)
    for r in recs:
        assert before - 1000 <= r["timestamp"] <= after + 1000, (before, r["timestamp"], after)


def test_group_lag_and_reset(admin_broker):
    b = ["--brokers", admin_broker.bootstrap]
    t = unique_topic("op-grp")
    g = unique_topic("op-group")
    cli(["topic", "create", t, "--partitions", "2", *b])
    cli(["produce", t, "--partition", "0", *b], stdin="".join(f"a{i}\n" for i in range(30)))
    cli(["produce", t, "--partition", "1", *b], stdin="".join(f"b{i}\n" for i in range(10)))

    # Consume 12 records as the group (partial), then describe: lag = 40 - 12.
    got = cli(["consume", t, "--group", g, "--from-beginning", "-n", "12", *b]).out.splitlines()
    assert len(got) == 12
    d = cli_json(["group", "describe", g, *b])
    assert d["state"] == "Empty" and d["members"] == []
    parts = {p["partition"]: p for p in d["partitions"]}
    assert parts[0]["log_end"] == 30 and parts[1]["log_end"] == 10
    committed = parts[0]["committed"] + parts[1]["committed"]
    assert committed == 12, parts
    assert d["total_lag"] == 40 - 12
    for p in parts.values():
        assert p["lag"] == p["log_end"] - p["committed"]
    assert g in [x["group"] for x in cli_json(["group", "list", *b])]
    m = scrape(admin_broker.admin_port)
    assert sum(value(m, "shardlog_group_lag", group=g, topic=t, partition=str(p)) for p in (0, 1)) == 28
    assert sum(value(m, "shardlog_group_committed_offset", group=g, topic=t, partition=str(p))
               for p in (0, 1)) == 12

    # Dry run changes nothing; then reset partition 0 to offset 5 and everything to latest.
    dry = cli_json(["group", "reset-offsets", g, "--topic", t, "--to-earliest", "--dry-run", *b])
    assert [p["new"] for p in dry["partitions"]] == [0, 0]
    assert cli_json(["group", "describe", g, *b])["total_lag"] == 28
    cli(["group", "reset-offsets", g, "--topic", t, "--partition", "0", "--to-offset", "5", *b])
    parts = {p["partition"]: p for p in cli_json(["group", "describe", g, *b])["partitions"]}
    assert parts[0]["committed"] == 5 and parts[0]["lag"] == 25
    # The group resumes from the reset offset.
    nxt = cli(["consume", t, "--group", g, "-n", "1", "--idle-timeout-ms", "5000", *b]).out.splitlines()
    assert nxt and nxt[0] in ("a5", f"b{parts[1]['committed']}"), nxt
    cli(["group", "reset-offsets", g, "--topic", t, "--to-latest", *b])
    assert cli_json(["group", "describe", g, *b])["total_lag"] == 0
    cli(["group", "delete", g, *b])
    assert g not in [x["group"] for x in cli_json(["group", "list", *b])]


def test_cluster_info_and_health(admin_broker):
    b = ["--brokers", admin_broker.bootstrap]
    info = cli_json(["cluster", "info", *b])
    assert info["brokers"][0]["port"] == admin_broker.port and info["controller_id"] == 1
    h = cli_json(["cluster", "health", *b])
    assert h["healthy"] is True and h["offline_partitions"] == [] and h["under_replicated_partitions"] == []


def test_metrics_and_health(admin_broker):
    b = ["--brokers", admin_broker.bootstrap]
    port = admin_broker.admin_port
    status, body = http_get(port, "/health")
    assert status == 200 and json.loads(body)["status"] == "ok", body
    assert http_get(port, "/nope")[0] == 404

    t = unique_topic("op-metrics")
    cli(["topic", "create", t, "--partitions", "1", *b])
    before = scrape(port)
    for name in ("shardlog_up", "shardlog_connections_accepted_total", "shardlog_requests_total",
                 "shardlog_request_duration_seconds_bucket", "shardlog_produce_stage_duration_seconds_bucket",
                 "shardlog_partition_log_end_offset", "shardlog_batch_cache_bytes",
                 "shardlog_partitions_under_replicated", "shardlog_partitions_offline",
                 "shardlog_brokers_live", "shardlog_controller_leader"):
        assert any(k[0] == name for k in before), f"{name} missing"
    part = {"topic": t, "partition": "0"}
    assert value(before, "shardlog_partition_log_end_offset", **part) == 0

    payload = "".join(f"record-{i}\n" for i in range(100))
    cli(["produce", t, *b], stdin=payload)
    cli(["consume", t, "--from-beginning", "-n", "100", *b])
    bad = cli(["produce", unique_topic("op-missing"), *b], stdin="x\n", ok=False)
    assert bad.returncode == 1
    after = scrape(port)

    assert value(after, "shardlog_partition_records_in_total", **part) == 100
    assert value(after, "shardlog_partition_records_out_total", **part) >= 100
    assert value(after, "shardlog_partition_bytes_in_total", **part) > len(payload)
    assert value(after, "shardlog_partition_log_end_offset", **part) == 100
    assert value(after, "shardlog_partition_high_watermark", **part) == 100
    assert value(after, "shardlog_partition_size_bytes", **part) > 0
    for api in ("Produce", "Fetch", "Metadata"):
        assert value(after, "shardlog_requests_total", api=api) > value(before, "shardlog_requests_total", api=api), api
    n = lambda s, stage: value(s, "shardlog_produce_stage_duration_seconds_count", stage=stage)  # noqa: E731
    for stage in ("queue", "append", "fsync_wait"):
        assert n(after, stage) > n(before, stage), stage
    assert value(after, "shardlog_fsync_wait_duration_seconds_count") > 0
    d = lambda s, op: value(s, "shardlog_disk_op_duration_seconds_count", op=op)  # noqa: E731
    for op in ("write", "fdatasync"):
        assert d(after, op) > d(before, op), op
    assert value(after, "shardlog_request_duration_seconds_bucket", api="Produce", le="+Inf") == \
        value(after, "shardlog_request_duration_seconds_count", api="Produce")
    assert value(after, "shardlog_connections_accepted_total") > value(before, "shardlog_connections_accepted_total")


def test_dashboard_queries_only_metrics_the_broker_exports(admin_broker):
    """Every series docs/grafana-dashboard.json queries is a metric family /metrics declares."""
    dash = json.loads((Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    names = {n for e in exprs for n in re.findall(r"\bshardlog_[a-z_]+", e)}
    assert len(names) > 10, names
    status, text = http_get(admin_broker.admin_port, "/metrics")
    assert status == 200
    declared = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    missing = {n for n in names if re.sub(r"_(bucket|sum|count)$", "", n) not in declared}
    assert not missing, f"queried but not exported: {sorted(missing)}"


def test_batch_caches_stay_within_the_total_budget(tmp_path):
    """Forty partitions, each allowed the default 16 MiB of batch cache, share
    log_cache_total_bytes (4 MiB over two shards): the caches stay within each shard's share
    while 20 MB go in, and what was evicted is read back complete from disk."""
    from conftest import Broker
    from util import consume_all, create_topic, flush, producer
    admin_port = free_port()
    b = Broker(tmp_path, name="budget", cores=2,
               extra_args=["--admin-listen", f"127.0.0.1:{admin_port}"],
               env={"SHARDLOG_LOG_CACHE_TOTAL_BYTES": str(4 << 20)})
    b.start()
    try:
        t = unique_topic("op-budget")
        create_topic(b.bootstrap, t, partitions=40)
        p, errors = producer(b.bootstrap, acks="all")
        n = 20_000
        peak = {}
        for i in range(n):
            p.produce(t, key=str(i).encode(), value=(f"{i:08d}" * 128).encode())
            if i % 2000 == 1999:
                flush(p)
                m = scrape(admin_port)
                for (name, labels), v in m.items():
                    if name == "shardlog_batch_cache_bytes":
                        peak[labels] = max(peak.get(labels, 0), v)
                        limit = value(m, "shardlog_batch_cache_limit_bytes", **dict(labels))
                        assert limit == 2 << 20, labels
                        assert v <= limit, (labels, v, limit)
        flush(p)
        assert not errors.errors, errors.errors
        assert len(peak) == 2 and all(v > 1 << 20 for v in peak.values()), peak
        got = consume_all(b.bootstrap, t, timeout=120)
        assert len(got) == n
        assert sorted(int(m.key) for m in got) == list(range(n))
        assert all(m.value == (f"{int(m.key):08d}" * 128).encode() for m in got)
    finally:
        b.teardown()


def test_second_broker_does_not_share_the_admin_port(admin_broker, tmp_path):
    """A second broker given the same admin_listen logs that it cannot have it and serves Kafka
    anyway; /metrics keeps answering for the first broker only."""
    from conftest import Broker
    other = Broker(tmp_path, name="second", cores=1,
                   extra_args=["--admin-listen", f"127.0.0.1:{admin_broker.admin_port}"])
    other.start()
    try:
        deadline = time.time() + 10
        while "cannot bind the admin HTTP listener" not in other.log_text():
            assert time.time() < deadline, other.log_tail()
            time.sleep(0.1)
        t = unique_topic("op-second")
        cli(["topic", "create", t, "--brokers", other.bootstrap])
        for _ in range(20):  # with a shared port, some of these would reach the second broker
            status, text = http_get(admin_broker.admin_port, "/metrics")
            assert status == 200 and t not in text
    finally:
        other.teardown()


def test_check_good_and_bad_data_dirs(tmp_path):
    good = tmp_path / "good"
    p = cli(["check", "--data-dir", str(good), "--format", "json"], ok=False)
    report = json.loads(p.out)
    checks = {c["check"]: c for c in report["checks"]}
    for name in ("io_uring", "locked memory", "open files", "filesystem", "O_DIRECT", "free disk",
                 "clock source", "vm.overcommit_memory"):
        assert name in checks, name
    if checks["filesystem"]["detail"].find("tmpfs") < 0:
        assert checks["O_DIRECT"]["status"] == "ok", checks["O_DIRECT"]
        assert (p.returncode == 0) == report["ok"]
    assert not list(good.iterdir()), "the probe file is removed"

    # A tmpfs mount is refused with a clear message and a non-zero exit.
    mnt = tmp_path / "ram"
    mnt.mkdir()
    m = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True)
    if m.returncode == 0:
        try:
            bad = cli(["check", "--data-dir", str(mnt)], ok=False)
            assert bad.returncode == 1, bad.out
            assert "tmpfs" in bad.out and "FAIL" in bad.out and "What to change" in bad.out, bad.out
        finally:
            subprocess.run(["umount", str(mnt)], check=False)
    # A data directory that cannot be created fails too (also without root).
    blocker = tmp_path / "file"
    blocker.write_text("x")
    bad = cli(["check", "--data-dir", str(blocker / "data"), "--format", "json"], ok=False)
    assert bad.returncode == 1
    assert any(c["status"] == "fail" for c in json.loads(bad.out)["checks"])


def test_config_check(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('listen = "127.0.0.1:9092"\nadmin_listen = "127.0.0.1:9644"\nlog_format = "json"\ncores = 1\n')
    assert json.loads(cli(["config", "check", str(good), "--format", "json"]).out)["valid"] is True
    for text, word in (('listen = "nope"\n', "listen"), ('admin_listen = "x"\n', "admin_listen"),
                       ('log_format = "xml"\n', "log_format"), ('lisen = "x"\n', "lisen")):
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        p = cli(["config", "check", str(bad)], ok=False)
        assert p.returncode == 2 and word in p.err, (text, p.err)
