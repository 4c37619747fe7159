#!/usr/bin/env bash
# How long a broker takes to delete a 1000-partition topic and to shut down holding another.
#
#   bash tuning/release-time.sh [LABEL]
#
# Starts target/release/shardlog with one shard on 127.0.0.1:$PORT (29172) and an empty data
# directory, creates topics ta and tb with 1000 partitions each, writes one 100-byte record to
# every partition (confluent-kafka from .venv, as tests/run.sh installs it), then times
# `shardlog topic delete ta` and SIGTERM until the process has exited.
set -euo pipefail
cd "$(dirname "$0")/.."
LABEL=${1:-run}
PORT=${PORT:-29172}
B=target/release/shardlog
D=$(mktemp -d /var/tmp/shardlog-release-XXXXXX)
trap 'rm -rf "$D"' EXIT
"$B" start --listen "127.0.0.1:$PORT" --admin-listen "" --data-dir "$D" --cores 1 >"$D.log" 2>&1 &
BP=$!
for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
for t in ta tb; do "$B" topic create "$t" --partitions 1000 --brokers "127.0.0.1:$PORT" >/dev/null; done
.venv/bin/python - "$PORT" <<'PY'
import sys
from confluent_kafka import Producer
p = Producer({"bootstrap.servers": f"127.0.0.1:{sys.argv[1]}", "linger.ms": 5})
for t in ("ta", "tb"):
    for i in range(1000):
        p.produce(t, value=b"x" * 100, partition=i)
assert p.flush(60) == 0
PY
s=$(date +%s.%N); "$B" topic delete ta --brokers "127.0.0.1:$PORT" >/dev/null; e=$(date +%s.%N)
echo "$LABEL: delete 1000 partitions $(python3 -c "print(f'{$e - $s:.2f}')") s"
s=$(date +%s.%N); kill -TERM "$BP"; wait "$BP"; e=$(date +%s.%N)
echo "$LABEL: SIGTERM with 1000 partitions $(python3 -c "print(f'{$e - $s:.2f}')") s"
rm -f "$D.log"
