"""KIP-951 leader discovery hints on the wire (issue 19): a Produce v10 sent to a broker that
does not lead the partition is answered NOT_LEADER_OR_FOLLOWER with the partition's
CurrentLeader (leader id and epoch) and the leader's NodeEndpoint, so a client moves without
a Metadata round. Raw requests (kwire) against the three-broker `cluster` fixture: a follower
of an RF 3 partition (the replica core refuses), and a broker holding no replica of an RF 1
partition (the shard answers from the image). Produce v9 carries no hint."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

import kwire
from util import create_topic, unique_topic

pytestmark = [pytest.mark.timeout(120)]

UNKNOWN_TOPIC_OR_PARTITION = 3
NOT_LEADER_OR_FOLLOWER = 6


def produce_flexible(conn: kwire.Conn, version: int, topic: str, partition: int,
                     records: bytes) -> dict:
    """Produce v9/v10 (flexible: request header v2, compact body) of one batch to one
    partition, acks=all; the answer of that partition and the response's node endpoints."""
    assert version in (9, 10)
    header = (kwire.i16(kwire.PRODUCE) + kwire.i16(version) + kwire.i32(conn.next_id)
              + kwire.string("kwire") + kwire.uvarint(0))
    cid = conn.next_id
    conn.next_id += 1
    part = kwire.i32(partition) + kwire.uvarint(len(records) + 1) + records + kwire.uvarint(0)
    topic_data = kwire.compact_string(topic) + kwire.uvarint(2) + part + kwire.uvarint(0)
    body = (kwire.uvarint(0)  # transactional_id: null
            + kwire.i16(-1) + kwire.i32(10000)
            + kwire.uvarint(2) + topic_data + kwire.uvarint(0))
    conn.send_raw(kwire.frame(header + body))
    r = conn.recv_response(cid)

    uv = r.uvarint

    def cstring() -> str | None:
        n = uv()
        return None if n == 0 else r.take(n - 1).decode()

    def tags(known: dict) -> dict:
        """Reads a tagged-field section: known tags decoded by their reader, others kept raw."""
        out = {}
        for _ in range(uv()):
            tag, size = uv(), uv()
            start = r.pos
            if tag in known:
                out[tag] = known[tag]()
                assert r.pos - start == size, f"tag {tag}: read {r.pos - start} of {size} bytes"
            else:
                out[tag] = r.take(size)
        return out

    def leader() -> tuple[int, int]:
        lid, epoch = r.i32(), r.i32()
        tags({})
        return lid, epoch

    def endpoint() -> dict:
        e = {"node_id": r.i32(), "host": cstring(), "port": r.i32(), "rack": cstring()}
        tags({})
        return e

    tags({})  # response header v1
    parts = []
    for _ in range(uv() - 1):
        name = cstring()
        for _ in range(uv() - 1):
            p = {"topic": name, "partition": r.i32(), "error_code": r.i16(),
                 "base_offset": r.i64()}
            r.i64()  # log_append_time_ms
            r.i64()  # log_start_offset
            for _ in range(uv() - 1):  # record_errors
                r.i32()
                cstring()
                tags({})
            cstring()  # error_message
            p["tags"] = tags({0: leader})
            parts.append(p)
        tags({})
    r.i32()  # throttle_time_ms
    top = tags({0: lambda: [endpoint() for _ in range(uv() - 1)]})
    assert r.done(), "nothing after the response's tagged fields"
    assert len(parts) == 1, parts
    return {**parts[0], "node_endpoints": top.get(0), "top_tags": top}


def batch(text: str) -> bytes:
    return kwire.record_batch([kwire.Record(key=None, value=text.encode())])


def produce_when_known(cluster, node: int, version: int, topic: str, partition: int,
                       text: str) -> dict:
    """Produce `text` through broker `node`, again while it answers UNKNOWN_TOPIC_OR_PARTITION:
    the topic's creation reaches each broker's image, and its replica opens, a little after
    Metadata shows the partition placed (the ISR at creation is every replica). A refused
    produce stores nothing, so retrying it is harmless."""
    def attempt():
        with kwire.Conn(cluster[node].host, cluster[node].port) as c:
            a = produce_flexible(c, version, topic, partition, batch(text))
        return a if a["error_code"] != UNKNOWN_TOPIC_OR_PARTITION else None

    return cluster.wait_until(attempt, 30, f"broker {node} to know {topic}-{partition}")


def partition_of(cluster, topic: str, index: int) -> dict | None:
    t = cluster.metadata([topic])["topics"].get(topic)
    if not t or t["error_code"] != 0:
        return None
    for p in t["partitions"]:
        if p["partition"] == index and p["error_code"] == 0 and p["leader"] >= 0:
            return p
    return None


def test_produce_to_a_non_leader_names_the_leader(cluster):
    # Broker addresses as clients learn them (Metadata), to compare the endpoints with.
    brokers = {b["node_id"]: (b["host"], b["port"]) for b in cluster.metadata()["brokers"]}
    assert sorted(brokers) == [1, 2, 3], brokers

    # An RF 3 partition: its followers hold a replica and refuse through the replica core.
    rf3 = unique_topic("hint3")
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    futs = admin.create_topics([NewTopic(rf3, num_partitions=1, replication_factor=3)])
    futs[rf3].result(30)
    p = cluster.wait_until(
        lambda: (q := partition_of(cluster, rf3, 0)) and len(q["isr"]) == 3 and q,
        30, "the RF 3 partition to have a leader and a full ISR")
    leader, epoch = p["leader"], p["leader_epoch"]
    followers = [n for n in (1, 2, 3) if n != leader]

    for f in followers:
        a = produce_when_known(cluster, f, 10, rf3, 0, f"to follower {f}")
        assert a["error_code"] == NOT_LEADER_OR_FOLLOWER, a
        assert a["tags"].get(0) == (leader, epoch), a
        assert a["node_endpoints"] == [
            {"node_id": leader, "host": brokers[leader][0], "port": brokers[leader][1],
             "rack": None}], a

        # v9 has no tagged fields in the answer: the same refusal, no hint.
        with kwire.Conn(cluster[f].host, cluster[f].port) as c:
            a9 = produce_flexible(c, 9, rf3, 0, batch("v9"))
        assert a9["error_code"] == NOT_LEADER_OR_FOLLOWER, a9
        assert a9["tags"] == {} and a9["top_tags"] == {}, a9

    # The leader takes the batch and answers without a hint.
    ok = produce_when_known(cluster, leader, 10, rf3, 0, "to the leader")
    assert ok["error_code"] == 0 and ok["base_offset"] >= 0, ok
    assert ok["tags"] == {} and ok["top_tags"] == {}, ok

    # RF 1 partitions are spread over the brokers: one that holds no replica of a partition
    # answers from its image.
    rf1 = unique_topic("hint1")
    create_topic(cluster.bootstrap, rf1, partitions=3)
    placed = cluster.wait_until(
        lambda: all(partition_of(cluster, rf1, i) for i in range(3))
        and [partition_of(cluster, rf1, i) for i in range(3)],
        30, "every RF 1 partition to have a leader")
    q = placed[0]
    elsewhere = next(n for n in (1, 2, 3) if n not in q["replicas"])
    a = produce_when_known(cluster, elsewhere, 10, rf1, 0, "to a broker without a replica")
    assert a["error_code"] == NOT_LEADER_OR_FOLLOWER, a
    assert a["tags"].get(0) == (q["leader"], q["leader_epoch"]), a
    assert [e["node_id"] for e in a["node_endpoints"]] == [q["leader"]], a
    assert (a["node_endpoints"][0]["host"], a["node_endpoints"][0]["port"]) == \
        brokers[q["leader"]], a

    # ApiVersions advertises Produce up to 10.
    with kwire.Conn(cluster[leader].host, cluster[leader].port) as c:
        assert c.api_versions().versions[kwire.PRODUCE][1] == 10
