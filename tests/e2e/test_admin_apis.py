"""Admin and group APIs as Kafka answers them (issue 17, items 3, 11, 12, 13):

* CreateTopics naming one topic twice answers INVALID_REQUEST for every entry of that name
  and creates none of them (raw wire: client libraries refuse to send such a request);
* OffsetCommit for a topic that does not exist, or a partition index past the topic's count,
  answers UNKNOWN_TOPIC_OR_PARTITION for those partitions and stores nothing for them
  (raw wire and librdkafka);
* DescribeGroups gives each member's client host ("/127.0.0.1"), to confluent-kafka's
  AdminClient and to the CLI's HOST column;
* DescribeLogDirs (API 35) reports the data directory, real partition sizes and the volume's
  total/usable bytes, to kafka-python's `describe_log_dirs()`, to a raw v1 request, and to
  `shardlog topic describe`.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

import kwire
from conftest import shardlog_bin
from util import create_topic, unique_topic

pytestmark = pytest.mark.timeout(120)

CREATE_TOPICS = 19
OFFSET_COMMIT = 8
OFFSET_FETCH = 9
DESCRIBE_LOG_DIRS = 35
INVALID_REQUEST = 42
INVALID_REPLICATION_FACTOR = 38
INVALID_REPLICA_ASSIGNMENT = 39


def cli(args: list[str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARDLOG_")}
    p = subprocess.run([shardlog_bin(), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=60, env=env)
    out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    assert "panicked" not in err, err
    assert p.returncode == 0, f"shardlog {' '.join(args)} exited {p.returncode}:\n{out}\n{err}"
    p.out = out  # type: ignore[attr-defined]
    return p


# ---------------------------------------------------------------------------------------------
# CreateTopics: a name given twice


def _creatable(name: str, partitions: int, rf: int = 1, assignments=()) -> bytes:
    # CreateTopics v4 CreatableTopic: name, num_partitions, replication_factor, assignments
    # (partition index, broker ids), configs.
    assigned = kwire.array([kwire.i32(i) + kwire.array([kwire.i32(b) for b in brokers])
                            for i, brokers in assignments])
    return kwire.string(name) + kwire.i32(partitions) + kwire.i16(rf) + assigned + kwire.array([])


def _create_topics_v4(c: kwire.Conn, topics: list, validate_only: bool = False):
    body = kwire.array([_creatable(*t) for t in topics]) + kwire.i32(10000) + kwire.i8(int(validate_only))
    r = c.request(CREATE_TOPICS, 4, body)
    r.i32()  # throttle_time_ms
    out = r.array(lambda r: (r.string(), r.i16(), r.string()))
    assert r.done()
    return out


def test_create_topics_same_name_twice_is_refused_for_every_entry(module_broker):
    dup, other = unique_topic("dup"), unique_topic("dup-other")
    with kwire.Conn.to(module_broker.bootstrap) as c:
        # validate_only first: the same refusal, nothing created.
        checked = _create_topics_v4(c, [(dup, 1), (dup, 1)], validate_only=True)
        assert [(n, e) for n, e, _ in checked] == [(dup, INVALID_REQUEST), (dup, INVALID_REQUEST)]

        got = _create_topics_v4(c, [(dup, 1), (other, 2), (dup, 3)])
        assert [(n, e) for n, e, _ in got] == [
            (dup, INVALID_REQUEST), (other, kwire.NONE), (dup, INVALID_REQUEST)], got
        assert all(m for n, e, m in got if e == INVALID_REQUEST), got
        # Metadata for all topics (no auto-creation): the duplicated name was not created, the
        # other one was, with its own partition count.
        topics = c.metadata(None)["topics"]
        assert dup not in topics
        assert len(topics[other]["partitions"]) == 2
        # The name is still free: one entry creates it.
        assert [(n, e) for n, e, _ in _create_topics_v4(c, [(dup, 1)])] == [(dup, kwire.NONE)]


def test_create_topics_replication_factor_and_assignment_on_one_node(module_broker):
    """One broker: replication factor -1 (the default, 1) and 1 create the topic; 2 is refused
    with INVALID_REPLICATION_FACTOR and a message; a manual assignment naming this node creates
    it, one naming another broker is INVALID_REPLICA_ASSIGNMENT, and one given with a partition
    count is INVALID_REQUEST, as in Kafka."""
    default, two, manual, other, both = (unique_topic(p) for p in ("rf-default", "rf-two", "rf-manual", "rf-other", "rf-both"))
    with kwire.Conn.to(module_broker.bootstrap) as c:
        got = _create_topics_v4(c, [(default, 2, -1), (two, 1, 2), (manual, -1, -1, [(1, [1]), (0, [1])]),
                                    (other, -1, -1, [(0, [7])]), (both, 3, -1, [(0, [1])])])
        codes = {n: (e, m) for n, e, m in got}
        assert codes[default][0] == kwire.NONE, codes
        assert codes[manual][0] == kwire.NONE, codes
        assert codes[two][0] == INVALID_REPLICATION_FACTOR and "replication factor 2" in codes[two][1], codes
        assert codes[other][0] == INVALID_REPLICA_ASSIGNMENT and "broker 7" in codes[other][1], codes
        assert codes[both][0] == INVALID_REQUEST and codes[both][1], codes
        topics = c.metadata(None)["topics"]
        assert len(topics[default]["partitions"]) == 2
        assert len(topics[manual]["partitions"]) == 2
        assert two not in topics and other not in topics and both not in topics


# ---------------------------------------------------------------------------------------------
# OffsetCommit: topics and partitions that do not exist


def _offset_commit_v2(c: kwire.Conn, group: str, commits: dict[str, dict[int, int]]):
    topics = [kwire.string(t) + kwire.array([kwire.i32(p) + kwire.i64(o) + kwire.string("")
                                             for p, o in parts.items()])
              for t, parts in commits.items()]
    body = (kwire.string(group) + kwire.i32(-1) + kwire.string("") + kwire.i64(-1)
            + kwire.array(topics))
    r = c.request(OFFSET_COMMIT, 2, body)
    out = r.array(lambda r: (r.string(), r.array(lambda r: (r.i32(), r.i16()))))
    assert r.done()
    return {t: dict(ps) for t, ps in out}


def _offset_fetch_v1(c: kwire.Conn, group: str, wanted: dict[str, list[int]]):
    body = kwire.string(group) + kwire.array(
        [kwire.string(t) + kwire.array([kwire.i32(p) for p in ps]) for t, ps in wanted.items()])
    r = c.request(OFFSET_FETCH, 1, body)
    out = r.array(lambda r: (r.string(), r.array(lambda r: (r.i32(), r.i64(), r.string(), r.i16()))))
    assert r.done()
    return {t: {p: o for p, o, _, _ in ps} for t, ps in out}


def test_offset_commit_unknown_topic_or_partition_raw(module_broker):
    known, missing = unique_topic("oc-known"), unique_topic("oc-missing")
    create_topic(module_broker.bootstrap, known, partitions=2)
    group = unique_topic("oc-group")
    with kwire.Conn.to(module_broker.bootstrap) as c:
        got = _offset_commit_v2(c, group, {known: {0: 7, 1: 9, 2: 11, -1: 1}, missing: {0: 5}})
        assert got == {
            known: {0: kwire.NONE, 1: kwire.NONE, 2: kwire.UNKNOWN_TOPIC_OR_PARTITION,
                    -1: kwire.UNKNOWN_TOPIC_OR_PARTITION},
            missing: {0: kwire.UNKNOWN_TOPIC_OR_PARTITION},
        }
        fetched = _offset_fetch_v1(c, group, {known: [0, 1, 2], missing: [0]})
        assert fetched[known] == {0: 7, 1: 9, 2: -1}
        assert fetched[missing] == {0: -1}
        # Only refused partitions: answered without touching the group, nothing stored.
        lone = unique_topic("oc-lone")
        assert _offset_commit_v2(c, lone, {missing: {0: 3}}) == {
            missing: {0: kwire.UNKNOWN_TOPIC_OR_PARTITION}}
        assert _offset_fetch_v1(c, lone, {missing: [0]}) == {missing: {0: -1}}
        # The refused topic was not created by the commit.
        assert missing not in c.metadata(None)["topics"]


def test_librdkafka_commit_to_missing_topic_gets_unknown_topic(module_broker):
    missing = unique_topic("oc-rdk-missing")
    c = Consumer({"bootstrap.servers": module_broker.bootstrap, "group.id": unique_topic("oc-rdk"),
                  "enable.auto.commit": False, "socket.timeout.ms": 10000})
    try:
        try:
            res = c.commit(offsets=[TopicPartition(missing, 0, 5)], asynchronous=False)
            errors = [tp.error.code() if tp.error else 0 for tp in res]
        except KafkaException as e:
            errors = [e.args[0].code()]
    finally:
        c.close()
    from confluent_kafka import KafkaError
    assert errors == [KafkaError.UNKNOWN_TOPIC_OR_PART], errors


# ---------------------------------------------------------------------------------------------
# DescribeGroups: the member's client host


def test_describe_groups_gives_client_host(module_broker):
    topic, group = unique_topic("host"), unique_topic("host-group")
    create_topic(module_broker.bootstrap, topic, partitions=1)
    c = Consumer({"bootstrap.servers": module_broker.bootstrap, "group.id": group,
                  "client.id": "host-test", "auto.offset.reset": "earliest",
                  "session.timeout.ms": 10000, "enable.auto.commit": False})
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + 30
        while not c.assignment():
            assert time.monotonic() < deadline, "no assignment within 30 s"
            c.poll(0.2)
        a = AdminClient({"bootstrap.servers": module_broker.bootstrap})
        desc = a.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=15)
        assert [(m.client_id, m.host) for m in desc.members] == [("host-test", "/127.0.0.1")]

        p = cli(["group", "describe", group, "--brokers", module_broker.bootstrap, "--format", "json"])
        doc = json.loads(p.out)
        doc = doc[0] if isinstance(doc, list) else doc
        assert [m["client_host"] for m in doc["members"]] == ["/127.0.0.1"]
        assert [r["host"] for r in doc["partitions"]] == ["/127.0.0.1"]
        text = cli(["group", "describe", group, "--brokers", module_broker.bootstrap]).out
        row = next(line for line in text.splitlines() if line.startswith(topic))
        assert row.split()[-1] == "/127.0.0.1", text
    finally:
        c.close()


# ---------------------------------------------------------------------------------------------
# DescribeLogDirs


def _sizes(log_dirs: list[dict], topic: str) -> dict[int, int]:
    return {p["partition_index"]: p["partition_size"]
            for d in log_dirs for t in d["topics"] if t["name"] == topic for p in t["partitions"]}


def test_describe_log_dirs_sizes_and_space(module_broker):
    from kafka import KafkaAdminClient

    topic = unique_topic("logdirs")
    create_topic(module_broker.bootstrap, topic, partitions=2)
    n, size = 200, 1000
    p = Producer({"bootstrap.servers": module_broker.bootstrap, "acks": "all", "linger.ms": 5})
    for i in range(n):
        p.produce(topic, value=os.urandom(size), partition=0)
    assert p.flush(30) == 0

    a = KafkaAdminClient(bootstrap_servers=module_broker.bootstrap, request_timeout_ms=10000)
    try:
        everything = a.describe_log_dirs()
        assert len(everything) == 1
        dirs = everything[0]["log_dirs"]
        assert len(dirs) == 1
        d = dirs[0]
        assert d["error_code"] == 0
        assert d["log_dir"] == os.path.abspath(module_broker.data_dir)
        sizes = _sizes(dirs, topic)
        assert sizes[1] == 0
        # Every record's bytes are on disk, plus batch and record overhead.
        assert n * size <= sizes[0] < n * size * 1.5, sizes
        # v4 (what kafka-python negotiates): the volume's size and usable space from statvfs.
        st = os.statvfs(module_broker.data_dir)
        assert d["total_bytes"] == st.f_blocks * st.f_frsize
        assert abs(d["usable_bytes"] - st.f_bavail * st.f_frsize) < 1 << 30
        assert 0 < d["usable_bytes"] <= d["total_bytes"]

        # Only what is asked for; unknown topics and partitions are left out.
        some = a.describe_log_dirs(topic_partitions={topic: [1, 7], "no-such-topic": [0]})
        only = some[0]["log_dirs"][0]["topics"]
        assert [(t["name"], [x["partition_index"] for x in t["partitions"]]) for t in only] == [(topic, [1])]
    finally:
        a.close()

    # The CLI reads the same sizes through DescribeLogDirs.
    doc = json.loads(cli(["topic", "describe", topic, "--no-configs", "--brokers",
                          module_broker.bootstrap, "--format", "json"]).out)
    assert doc["sizes_available"] is True
    assert {x["partition"]: x["size_bytes"] for x in doc["partitions"]} == sizes
    text = cli(["topic", "describe", topic, "--no-configs", "--brokers", module_broker.bootstrap]).out
    assert "sizes not shown" not in text, text


def test_describe_log_dirs_raw_v1_and_advertised(module_broker):
    topic = unique_topic("logdirs-raw")
    create_topic(module_broker.bootstrap, topic, partitions=3)
    with kwire.Conn.to(module_broker.bootstrap) as c:
        assert c.api_versions(0).versions[DESCRIBE_LOG_DIRS] == (1, 4)
        # v1, a null topic list: every partition of the broker.
        r = c.request(DESCRIBE_LOG_DIRS, 1, kwire.array(None))
        assert r.i32() == 0  # throttle_time_ms
        results = r.array(lambda r: {
            "error_code": r.i16(), "log_dir": r.string(),
            "topics": r.array(lambda r: {"name": r.string(), "partitions": r.array(lambda r: {
                "partition_index": r.i32(), "partition_size": r.i64(), "offset_lag": r.i64(),
                "is_future_key": r.i8() != 0})})})
        assert r.done()
    assert [d["error_code"] for d in results] == [0]
    assert results[0]["log_dir"] == os.path.abspath(module_broker.data_dir)
    # The internal topic's partitions are logs in the same directory (4 with 2 shards).
    assert sorted(_sizes(results, "__consumer_offsets")) == [0, 1, 2, 3]
    parts = [p for t in results[0]["topics"] if t["name"] == topic for p in t["partitions"]]
    assert [(p["partition_index"], p["partition_size"], p["offset_lag"], p["is_future_key"])
            for p in parts] == [(0, 0, 0, False), (1, 0, 0, False), (2, 0, 0, False)]
