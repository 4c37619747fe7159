"""Checks of the test helper itself (no broker): the hand-built record batches must be
exactly what a real client library builds, or the raw-socket tests prove nothing."""

from __future__ import annotations

import kwire
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder


def test_crc32c_known_answers():
    # RFC 3720 B.4 test vectors
    assert kwire.crc32c_pure(b"") == 0
    assert kwire.crc32c_pure(b"123456789") == 0xE3069283
    assert kwire.crc32c_pure(bytes(32)) == 0x8A9136AA
    assert kwire.crc32c_pure(bytes([0xFF] * 32)) == 0x62A8AB43
    assert kwire.crc32c(b"123456789") == 0xE3069283


def test_varint_zigzag():
    for v, enc in [(0, b"\x00"), (-1, b"\x01"), (1, b"\x02"), (63, b"\x7e"), (-64, b"\x7f"),
                   (64, b"\x80\x01"), (300, b"\xd8\x04")]:
        assert kwire.varint(v) == enc
        assert kwire.Reader(enc).varint() == v


def test_record_batch_is_byte_identical_to_kafka_python():
    recs = [kwire.Record(b"k1", b"v1", [("h", b"x"), ("n", None)]),
            kwire.Record(None, b"v2" * 100, [], 5),
            kwire.Record(b"k3", None, [], 9)]
    ours = kwire.record_batch(recs, base_timestamp=1_700_000_000_000, producer_id=7,
                              producer_epoch=1, base_sequence=3)
    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False,
                                  producer_id=7, producer_epoch=1, base_sequence=3,
                                  batch_size=1 << 20)
    for i, r in enumerate(recs):
        b.append(i, 1_700_000_000_000 + r.timestamp_delta, r.key, r.value, r.headers)
    theirs = bytes(b.build())
    assert ours == theirs

    parsed = DefaultRecordBatch(ours)
    assert parsed.validate_crc()
    assert [(r.key, r.value) for r in parsed] == [(r.key, r.value) for r in recs]


def test_parse_and_corrupt():
    batch = kwire.record_batch([kwire.Record(None, b"x" * 10)] * 3)
    (p,) = kwire.parse_batches(batch + batch[:20])  # a trailing partial batch is ignored
    assert p.crc_ok() and p.magic == 2 and p.last_offset_delta == 2 and len(p.records) == 3
    assert not kwire.parse_batches(kwire.corrupt(batch))[0].crc_ok()
    assert not DefaultRecordBatch(kwire.corrupt(batch)).validate_crc()
