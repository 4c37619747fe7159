"""Compressed batches on produce (issue 17): undecodable batches are refused, and the
`compression.type` topic config recompresses what producers send.

Raw-socket tests (kwire) send what no client library would: codec ids 5-7, a codec bit over
records that are not compressed with it, a decompression bomb. Each is refused with nothing
stored, and the next good batch is readable by a real consumer. The `compression.type` tests
produce with one codec into a topic set to another and read the result back with
confluent-kafka, kafka-python and kcat.
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
import time

import pytest
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource
from kafka import KafkaConsumer, TopicPartition

import kwire
from util import admin, consume_all, create_topic, flush, producer, unique_topic

CORRUPT_MESSAGE = 2
MESSAGE_TOO_LARGE = 10

CODEC_IDS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def good(value: bytes) -> bytes:
    return kwire.record_batch([kwire.Record(b"k", value, [("h", b"v")])])


def with_attributes(batch: bytes, attributes: int) -> bytes:
    """`batch` with other attributes and a CRC that matches them (so only the codec is wrong)."""
    b = bytearray(batch)
    b[kwire.BATCH_ATTRIBUTES_AT:kwire.BATCH_ATTRIBUTES_AT + 2] = kwire.i16(attributes)
    b[kwire.BATCH_CRC_AT:kwire.BATCH_CRC_AT + 4] = kwire.u32(
        kwire.crc32c(bytes(b[kwire.BATCH_ATTRIBUTES_AT:])))
    return bytes(b)


def with_records_section(batch: bytes, section: bytes, attributes: int) -> bytes:
    """`batch`'s header over another records section (batchLength and CRC fixed up)."""
    b = bytearray(batch[:kwire.BATCH_HEADER_LEN] + section)
    b[8:12] = kwire.i32(len(b) - 12)
    return with_attributes(bytes(b), attributes)


def stored(conn: kwire.Conn, topic: str) -> list[kwire.Batch]:
    f = conn.fetch(topic, 0, 0)
    assert f.error_code == 0, f
    return kwire.parse_batches(f.records or b"")


def expect_refused_then_readable(bootstrap: str, topic: str, bad: list[tuple[bytes, int]]):
    """Produces good, then each bad batch (expecting its error), then good again; checks
    that only the good batches are stored and that a librdkafka consumer reads all of them
    (before the fix it looped on "Decompression failed" at the bad batch's offset)."""
    with kwire.Conn.to(bootstrap) as c:
        r = c.produce(topic, 0, good(b"first"))
        assert r.error_code == 0, r
        for batch, code in bad:
            r = c.produce(topic, 0, batch)
            assert r.error_code == code, (r, batch[:kwire.BATCH_HEADER_LEN].hex())
        r = c.produce(topic, 0, good(b"after"))
        assert r.error_code == 0, r
        assert r.base_offset == 1, f"nothing stored between the good batches: {r}"
        batches = stored(c, topic)
        assert [(b.base_offset, b.attributes & 7) for b in batches] == [(0, 0), (1, 0)]
    msgs = consume_all(bootstrap, topic, 1, timeout=30)
    assert [m.value for m in msgs] == [b"first", b"after"]


def test_unknown_codec_refused(module_broker):
    topic = unique_topic("codec-unknown")
    create_topic(module_broker.bootstrap, topic)
    bad = [(with_attributes(good(b"x" * 100), codec), CORRUPT_MESSAGE) for codec in (5, 6, 7)]
    # The transactional/timestamp bits beside an unknown codec change nothing.
    bad.append((with_attributes(good(b"y"), 0x08 | 6), CORRUPT_MESSAGE))
    expect_refused_then_readable(module_broker.bootstrap, topic, bad)
    log = module_broker.log_text()
    assert "unknown compression codec 5" in log and "refused batch" in log


def test_codec_bit_over_records_not_in_that_codec_refused(module_broker):
    topic = unique_topic("codec-lie")
    create_topic(module_broker.bootstrap, topic)
    plain = good(b"z" * 300)
    bad = [(with_attributes(plain, CODEC_IDS[c]), CORRUPT_MESSAGE)
           for c in ("gzip", "snappy", "lz4", "zstd")]
    # Real gzip, but of records that do not match the header (2 records where 1 is declared).
    two = kwire.record_batch([kwire.Record(None, b"a"), kwire.Record(None, b"b")])
    bad.append((with_records_section(plain, gzip.compress(two[kwire.BATCH_HEADER_LEN:]), 1),
                CORRUPT_MESSAGE))
    # gzip cut short.
    whole = gzip.compress(plain[kwire.BATCH_HEADER_LEN:])
    bad.append((with_records_section(plain, whole[:-6], 1), CORRUPT_MESSAGE))
    expect_refused_then_readable(module_broker.bootstrap, topic, bad)
    assert "do not decompress as gzip" in module_broker.log_text()


def test_decompression_bomb_refused(module_broker):
    """48 MiB of zeros in a 48 KiB gzip member: refused at max_decompressed_batch_bytes
    (32 MiB by default) with MESSAGE_TOO_LARGE."""
    topic = unique_topic("codec-bomb")
    create_topic(module_broker.bootstrap, topic)
    value = bytes(48 << 20)
    plain = kwire.record_batch([kwire.Record(None, value)])
    bomb = with_records_section(plain, gzip.compress(plain[kwire.BATCH_HEADER_LEN:], 9), 1)
    assert len(bomb) < 128 << 10
    expect_refused_then_readable(module_broker.bootstrap, topic, [(bomb, MESSAGE_TOO_LARGE)])
    assert "decompress to more than 33554432 bytes" in module_broker.log_text()


def test_unknown_codec_refused_with_validation_off(make_broker):
    """Without decompression (validate_compressed_batches = false) a codec Kafka does not
    define is still refused: the check reads two header bits."""
    b = make_broker(env={"SHARDLOG_VALIDATE_COMPRESSED_BATCHES": "false"})
    topic = unique_topic("codec-noval")
    create_topic(b.bootstrap, topic)
    expect_refused_then_readable(
        b.bootstrap, topic, [(with_attributes(good(b"q"), 7), CORRUPT_MESSAGE)])
    # The other side of the setting: a lying codec bit is stored as sent.
    with kwire.Conn.to(b.bootstrap) as c:
        r = c.produce(topic, 0, with_attributes(good(b"w"), 1))
        assert r.error_code == 0, r


# ---------------------------------------------------------------------------------------------
# compression.type


def kafka_python_read(bs: str, topic: str, n: int) -> list:
    c = KafkaConsumer(bootstrap_servers=bs, group_id=None, enable_auto_commit=False,
                      fetch_max_wait_ms=100, request_timeout_ms=30000)
    try:
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        c.seek_to_beginning(tp)
        out: list = []
        deadline = time.monotonic() + 60
        while len(out) < n:
            assert time.monotonic() < deadline, f"kafka-python read {len(out)} of {n}"
            for recs in c.poll(timeout_ms=500).values():
                out.extend(recs)
        return out
    finally:
        c.close()


def kcat_read(bs: str, topic: str) -> list[str]:
    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    assert kcat, "kcat is not installed"
    out = subprocess.run([kcat, "-C", "-b", bs, "-t", topic, "-o", "beginning", "-e", "-q",
                          "-f", "%o %k %s %h\n"], capture_output=True, timeout=120, check=True)
    return out.stdout.decode().splitlines()


@pytest.mark.parametrize("producer_codec,topic_codec", [
    ("gzip", "lz4"), ("none", "zstd"), ("zstd", "uncompressed"), ("lz4", "snappy"),
])
def test_compression_type_recompresses_for_every_client(module_broker, producer_codec,
                                                        topic_codec):
    bs = module_broker.bootstrap
    topic = unique_topic(f"ctype-{topic_codec}")
    # What librdkafka's own admin test does: compression.type at creation must succeed.
    create_topic(bs, topic, config={"compression.type": topic_codec})
    n = 300
    p, errors = producer(bs, compression_type=producer_codec, enable_idempotence=True,
                         linger_ms=20)
    base_ts = 1_700_000_000_000
    for i in range(n):
        p.produce(topic, key=f"k{i}".encode(), value=f"value-{i:05d}".encode() * 4,
                  headers=[("i", str(i).encode())], timestamp=base_ts + i)
    flush(p)
    assert not errors.errors, errors.errors
    want_codec = 0 if topic_codec == "uncompressed" else CODEC_IDS[topic_codec]
    with kwire.Conn.to(bs) as c:
        batches = stored(c, topic)
    assert batches, "stored batches"
    assert {b.attributes & 7 for b in batches} == {want_codec}, \
        [(b.base_offset, b.attributes) for b in batches]
    assert all(b.crc_ok() and b.producer_id >= 0 for b in batches)
    assert [b.base_sequence for b in batches] == [b.base_offset for b in batches], \
        "the producer's sequences are kept"
    got = consume_all(bs, topic, 1, timeout=60)
    assert [(m.offset, m.key, m.value, m.headers, m.timestamp[1]) for m in got] == [
        (i, f"k{i}".encode(), f"value-{i:05d}".encode() * 4, [("i", str(i).encode())],
         base_ts + i) for i in range(n)]
    kp = kafka_python_read(bs, topic, n)
    assert [(r.offset, r.key, r.value, list(r.headers), r.timestamp) for r in kp] == [
        (i, f"k{i}".encode(), f"value-{i:05d}".encode() * 4, [("i", str(i).encode())],
         base_ts + i) for i in range(n)]
    lines = kcat_read(bs, topic)
    assert lines == [f"{i} k{i} {f'value-{i:05d}' * 4} i={i}" for i in range(n)]


def test_compression_type_keeps_idempotent_dedup_and_follows_alter(module_broker):
    """A retried idempotent batch is still answered with its first offset when the topic
    recompresses; an altered compression.type applies to the next batch."""
    bs = module_broker.bootstrap
    topic = unique_topic("ctype-idem")
    create_topic(bs, topic, config={"compression.type": "gzip"})
    with kwire.Conn.to(bs) as c:
        err, pid, epoch = c.init_producer_id()
        assert err == 0
        recs = [kwire.Record(b"k", b"v" * 200), kwire.Record(b"k", b"w" * 200)]
        b0 = kwire.record_batch(recs, producer_id=pid, producer_epoch=epoch, base_sequence=0)
        b1 = kwire.record_batch(recs, producer_id=pid, producer_epoch=epoch, base_sequence=2)
        assert c.produce(topic, 0, b0).base_offset == 0
        again = c.produce(topic, 0, b0)
        assert (again.error_code, again.base_offset) == (0, 0), "duplicate answered, not stored"
        assert c.produce(topic, 0, b1).base_offset == 2
        a = admin(bs)
        res = ConfigResource("topic", topic, incremental_configs=[
            ConfigEntry("compression.type", "zstd",
                        incremental_operation=AlterConfigOpType.SET)])
        a.incremental_alter_configs([res])[res].result(timeout=30)
        b2 = kwire.record_batch(recs, producer_id=pid, producer_epoch=epoch, base_sequence=4)
        assert c.produce(topic, 0, b2).base_offset == 4
        batches = stored(c, topic)
    assert [(b.base_offset, b.attributes & 7, b.base_sequence) for b in batches] == [
        (0, 1, 0), (2, 1, 2), (4, 4, 4)]
    assert len(consume_all(bs, topic, 1, timeout=30)) == 6


def test_compression_type_values_checked(module_broker):
    bs = module_broker.bootstrap
    a = admin(bs)
    from confluent_kafka.admin import NewTopic
    topic = unique_topic("ctype-bad")
    fut = a.create_topics([NewTopic(topic, 1, 1, config={"compression.type": "brotli"})])[topic]
    with pytest.raises(Exception) as e:
        fut.result(timeout=30)
    assert "compression.type must be one of" in str(e.value)
    good_topic = unique_topic("ctype-desc")
    create_topic(bs, good_topic, config={"compression.type": "lz4"})
    res = ConfigResource("topic", good_topic)
    desc = a.describe_configs([res])[res].result(timeout=30)
    assert desc["compression.type"].value == "lz4"
