"""The measurement tools' own logic, on synthetic input (no broker)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _stat(reads: int, writes: int, write_ticks: int, io_ticks: int, flushes: int) -> list[int]:
    v = [0] * 17
    v[0], v[4], v[7], v[9], v[15] = reads, writes, write_ticks, io_ticks, flushes
    return v


def test_diskwatch_finds_a_stall_and_slow_writes_in_the_right_second(tmp_path):
    """Two seconds of 50 ms samples: in the first the device completes 10 writes of 0.2 ms per
    sample; in the second it completes nothing for 150 ms while busy, then writes of 5 ms."""
    t0 = 1_000_000.0
    samples, writes, ticks, io = [], 0, 0, 0
    for i in range(41):
        t = t0 + i * 0.05
        if 0 < i <= 20:
            writes, ticks, io = writes + 10, ticks + 2, io + 20
        elif 20 < i <= 23:  # stall: busy, nothing completed
            io += 50
        elif i > 23:
            writes, ticks, io = writes + 10, ticks + 50, io + 50
        samples.append({"t": t, "stat": _stat(0, writes, ticks, io, writes // 2)})
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    point = {"publish": {"p999_ms": 1.0, "max_ms": 2.0}, "produce_mbps": 100.0, "phase": "measure"}
    result = {"started_unix_ms": 0, "timeline_start_unix_ms": int(t0 * 1000),
              "timeline": [{**point, "t_s": 1.0}, {**point, "t_s": 2.0}]}
    (tmp_path / "r.json").write_text(json.dumps(result))
    out = subprocess.run([sys.executable, str(REPO / "tuning" / "diskwatch.py"), "seconds",
                          str(tmp_path / "s.jsonl"), str(tmp_path / "r.json")],
                         check=True, capture_output=True, text=True).stdout
    first, second = json.loads(out)
    assert first["stall_ms"] == 0 and first["writes"] == 200
    assert abs(first["write_ms_mean"] - 0.2) < 1e-9
    assert second["stall_ms"] == 150
    assert abs(second["write_ms_peak_100ms"] - 5.0) < 1e-9
    assert second["writes"] == 170
