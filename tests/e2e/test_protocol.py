"""Protocol basics over raw sockets: ApiVersions (v0, v3, unsupported), Metadata v1,
Produce/Fetch round trip, auto-creation, pipelining."""

from __future__ import annotations

import time

import pytest

import kwire
from util import create_topic, unique_topic

pytestmark = pytest.mark.timeout(120)

# API key -> the lowest max version we need advertised (what the tests and the clients use).
REQUIRED_APIS = {
    0: ("Produce", 7),
    1: ("Fetch", 11),
    2: ("ListOffsets", 5),
    3: ("Metadata", 9),
    18: ("ApiVersions", 3),
    19: ("CreateTopics", 5),
    20: ("DeleteTopics", 4),
    21: ("DeleteRecords", 1),
    22: ("InitProducerId", 1),
    23: ("OffsetForLeaderEpoch", 3),
    32: ("DescribeConfigs", 1),
    33: ("AlterConfigs", 1),
    37: ("CreatePartitions", 1),
    44: ("IncrementalAlterConfigs", 1),
    60: ("DescribeCluster", 0),
}


def test_api_versions_v0_advertises_required_apis(broker):
    with kwire.Conn.to(broker.bootstrap) as c:
        av = c.api_versions(0)
    assert av.error_code == 0
    missing = []
    for key, (name, need_max) in REQUIRED_APIS.items():
        if key not in av.versions:
            missing.append(f"{name}({key}) not advertised")
            continue
        lo, hi = av.versions[key]
        assert 0 <= lo <= hi, f"{name}: bad range {lo}..{hi}"
        if hi < need_max:
            missing.append(f"{name}({key}) max v{hi} < v{need_max}")
    assert not missing, "; ".join(missing)
    # Our raw tests use these exact versions: they must be inside the advertised ranges.
    for key, v in ((kwire.PRODUCE, 3), (kwire.FETCH, 4), (kwire.METADATA, 1),
                   (kwire.INIT_PRODUCER_ID, 0)):
        lo, hi = av.versions[key]
        assert lo <= v <= hi, f"api {key} v{v} not in advertised {lo}..{hi}"


def test_api_versions_v3_flexible_request(broker):
    """librdkafka and the Java client open every connection with ApiVersions v3
    (flexible header v2, compact body); the response header stays v0."""
    with kwire.Conn.to(broker.bootstrap) as c:
        c.send_raw(kwire.api_versions_v3_request(77))
        av = kwire.parse_api_versions_v3(c.recv_response(77))
        assert av.error_code == 0
        assert kwire.API_VERSIONS in av.versions and av.versions[kwire.API_VERSIONS][1] >= 3
        assert kwire.PRODUCE in av.versions and kwire.FETCH in av.versions
        # The connection is still usable afterwards.
        assert c.metadata(None)["brokers"]


def test_api_versions_unsupported_version_gets_v0_error_response(broker):
    """KIP-511: an ApiVersions request with a version the broker does not know is
    answered in v0 format with UNSUPPORTED_VERSION and the supported range, so the
    client can retry with a version both sides speak."""
    with kwire.Conn.to(broker.bootstrap) as c:
        r = c.request(kwire.API_VERSIONS, 127, b"")
        av = kwire.parse_api_versions(r)
        assert av.error_code == kwire.UNSUPPORTED_VERSION
        assert kwire.API_VERSIONS in av.versions
        lo, hi = av.versions[kwire.API_VERSIONS]
        assert lo == 0 and hi >= 3
        # and the client retries on the same connection
        assert c.api_versions(0).error_code == 0


def test_metadata_v1_advertises_the_listen_address(broker):
    with kwire.Conn.to(broker.bootstrap) as c:
        md = c.metadata(None)
    assert len(md["brokers"]) == 1, md
    b = md["brokers"][0]
    assert (b["host"], b["port"]) == ("127.0.0.1", broker.port), \
        "clients connect to the advertised address: it must be the one we listen on"
    assert md["controller_id"] == b["node_id"]


def test_metadata_auto_creates_topic(broker):
    """auto.create.topics.enable defaults to true: Metadata v1 for an unknown topic
    creates it with the default partition count (1)."""
    topic = unique_topic("auto")
    deadline = time.monotonic() + 15
    with kwire.Conn.to(broker.bootstrap) as c:
        while True:
            t = c.metadata([topic])["topics"][topic]
            if t["error_code"] == 0 and t["partitions"]:
                break
            # LEADER_NOT_AVAILABLE (5) while being created is fine, anything else is not
            assert t["error_code"] in (0, 5), t
            assert time.monotonic() < deadline, f"topic not created: {t}"
            time.sleep(0.2)
        node = c.metadata(None)["brokers"][0]["node_id"]
    assert len(t["partitions"]) == 1
    p = t["partitions"][0]
    assert p["error_code"] == 0 and p["partition"] == 0 and p["leader"] == node
    assert p["replicas"] == [node] and p["isr"] == [node]


def test_produce_fetch_roundtrip_keeps_batch_bytes(broker):
    """A batch is stored verbatim: fetched back, everything after baseOffset /
    partitionLeaderEpoch (i.e. all CRC-covered bytes) is identical."""
    topic = unique_topic("raw")
    create_topic(broker.bootstrap, topic, 1)
    recs = [kwire.Record(f"k{i}".encode(), f"value-{i}".encode() * 3, [("h", str(i).encode())], i)
            for i in range(10)]
    batch = kwire.record_batch(recs, base_timestamp=1_700_000_000_000)
    with kwire.Conn.to(broker.bootstrap) as c:
        r1 = c.produce(topic, 0, batch, acks=-1)
        r2 = c.produce(topic, 0, batch, acks=1)
        assert (r1.error_code, r1.base_offset) == (0, 0)
        assert (r2.error_code, r2.base_offset) == (0, 10)
        f = c.fetch(topic, 0, 0)
        assert f.error_code == 0 and f.high_watermark == 20
        batches = kwire.parse_batches(f.records or b"")
        assert [b.base_offset for b in batches] == [0, 10]
        for b in batches:
            assert b.magic == 2 and b.crc_ok()
            assert b.raw[kwire.BATCH_ATTRIBUTES_AT - 4:] == batch[kwire.BATCH_ATTRIBUTES_AT - 4:]
            assert [(r.key, r.value, r.headers) for r in b.records] == \
                [(r.key, r.value, r.headers) for r in recs]
        # fetch from the middle of a batch returns the whole batch containing that offset
        f = c.fetch(topic, 0, 15)
        assert [b.base_offset for b in kwire.parse_batches(f.records or b"")][:1] == [10]
        # fetching at the end returns nothing (after max_wait), out of range is an error
        f = c.fetch(topic, 0, 20, max_wait_ms=50)
        assert f.error_code == 0 and not kwire.parse_batches(f.records or b"")
        f = c.fetch(topic, 0, 1000, max_wait_ms=50)
        assert f.error_code == 1  # OFFSET_OUT_OF_RANGE


def test_pipelined_requests_answered_in_order(broker):
    """Clients pipeline requests on one connection; responses must come back in
    request order even when the requests touch partitions on different shards."""
    topic = unique_topic("pipe")
    create_topic(broker.bootstrap, topic, 8)
    with kwire.Conn.to(broker.bootstrap) as c:
        ids = []
        for i in range(64):
            batch = kwire.record_batch([kwire.Record(None, f"m{i}".encode())])
            ids.append(c.send_request(kwire.PRODUCE, 3,
                                      kwire.produce_body(topic, i % 8, batch, acks=1)))
            if i % 5 == 0:
                ids.append(c.send_request(kwire.METADATA, 1, kwire.array(None)))
        got = []
        for _ in ids:
            r = kwire.Reader(c.recv_frame())
            got.append(r.i32())
    assert got == ids
