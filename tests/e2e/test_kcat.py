"""kcat (Debian's, linked against librdkafka 2.0.2): the oldest client generation we test."""

from __future__ import annotations

import collections
import json
import shutil
import subprocess

import pytest

from util import create_topic, unique_topic

pytestmark = pytest.mark.timeout(300)

N_MESSAGES = 100_000
N_KEYS = 1000
PARTITIONS = 6


def kcat() -> str:
    path = shutil.which("kcat") or shutil.which("kafkacat")
    if path is None:
        pytest.fail("kcat is not installed (tests/run.sh installs it with apt-get)", pytrace=False)
    return path


def run(args: list[str], input_bytes: bytes | None = None, timeout: float = 180) -> bytes:
    p = subprocess.run(args, input=input_bytes, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout)
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {p.returncode}\nstderr:\n"
                             f"{p.stderr.decode(errors='replace')[-4000:]}")
    return p.stdout


def test_kcat_metadata(module_broker):
    out = run([kcat(), "-b", module_broker.bootstrap, "-L", "-J", "-m", "10"], timeout=30)
    md = json.loads(out)
    assert [b["name"] for b in md["brokers"]] == [module_broker.bootstrap], md["brokers"]


def test_kcat_100k_keyed_messages_with_headers(module_broker):
    bs = module_broker.bootstrap
    topic = unique_topic("kcat")
    create_topic(bs, topic, PARTITIONS)

    # key k<i % N_KEYS>, value "<seq-within-key>:<global index>"; per-key sequence lets us
    # check ordering, the global index checks exactness.
    per_key = collections.Counter()
    lines = []
    for i in range(N_MESSAGES):
        k = f"k{i % N_KEYS}"
        lines.append(f"{k}\t{per_key[k]}:{i}")
        per_key[k] += 1
    payload = ("\n".join(lines) + "\n").encode()

    run([kcat(), "-P", "-b", bs, "-t", topic, "-K", "\t",
         "-H", "origin=kcat", "-H", "run=e2e-100k",
         "-X", "acks=all", "-X", "linger.ms=20", "-X", "batch.num.messages=5000",
         "-X", "message.timeout.ms=60000"], input_bytes=payload)

    # -e: exit at the end of every partition; -f: partition, offset, key, value, headers
    out = run([kcat(), "-C", "-b", bs, "-t", topic, "-o", "beginning", "-e", "-q",
               "-f", "%p\t%o\t%k\t%s\t%h\n"])
    rows = out.decode().splitlines()
    assert len(rows) == N_MESSAGES, f"consumed {len(rows)} messages, produced {N_MESSAGES}"

    seen_index = set()
    key_partition: dict[str, int] = {}
    last_seq: dict[str, int] = {}
    offsets = collections.defaultdict(list)
    for row in rows:
        part_s, off_s, key, value, headers = row.split("\t")
        part, off = int(part_s), int(off_s)
        offsets[part].append(off)
        seq_s, idx_s = value.split(":")
        seq, idx = int(seq_s), int(idx_s)
        assert key == f"k{idx % N_KEYS}", row
        assert idx not in seen_index, f"duplicate message {row}"
        seen_index.add(idx)
        hdrs = dict(h.split("=", 1) for h in headers.split(","))
        assert hdrs == {"origin": "kcat", "run": "e2e-100k"}, row
        # same key -> same partition, in produce order
        assert key_partition.setdefault(key, part) == part, f"key {key} on two partitions"
        assert seq == last_seq.get(key, -1) + 1, f"key {key}: seq {seq} after {last_seq.get(key)}"
        last_seq[key] = seq

    assert len(seen_index) == N_MESSAGES
    assert all(last_seq[f"k{k}"] == per_key[f"k{k}"] - 1 for k in range(N_KEYS))
    # offsets are contiguous from 0 in every partition, and the keys spread over partitions
    for part, offs in offsets.items():
        assert offs == list(range(len(offs))), f"partition {part}: offsets not contiguous"
    assert len(offsets) == PARTITIONS, f"keys landed on partitions {sorted(offsets)} only"


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_kcat_compressed(module_broker, codec):
    bs = module_broker.bootstrap
    topic = unique_topic(f"kcat-{codec}")
    create_topic(bs, topic, 2)
    values = [f"{codec}-message-{i:06d}-" + "x" * (i % 200) for i in range(5000)]
    run([kcat(), "-P", "-b", bs, "-t", topic, "-z", codec, "-X", "linger.ms=20"],
        input_bytes=("\n".join(values) + "\n").encode())
    out = run([kcat(), "-C", "-b", bs, "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%s\n"])
    assert sorted(out.decode().splitlines()) == sorted(values)
