"""The history checker: reads an operation history (format in `history.record`) and reports
what the broker did wrong, with examples, and a verdict.

It trusts the history, not the harness: acknowledgements, polls and the final read-back are
compared with each other. Anomaly kinds (counts are per anomaly instance, defined below):

lost                  an `ok` send whose value is not at its acknowledged (topic, partition,
                      offset) in the final read: missing, at another offset ("moved"), or past
                      the end. Offsets below the final read's log start are expired by
                      retention, not lost. An ok send without an offset (acks=0) is lost when
                      its value is nowhere in its partition.
duplicates            a value of a recorded send present at two or more offsets of the final
                      read (count: copies beyond the first). Only a violation when the header
                      says idempotence was on; without it, retries may duplicate.
inconsistent_offsets  one (topic, partition, offset) seen with two different values, across
                      acknowledgements, every poll and the final read (count: such offsets).
non_monotonic_polls   within one consumer process, a partition's offset not increasing from
                      one returned record to the next (a repeat or a step back) with no
                      assign/seek of that partition in between; also a record below the
                      position the consumer was just assigned or seeked to. After a step back
                      the consumer may re-read up to the highest offset it had reached.
skipped_offsets       within one consumer process, a record of a partition more than one past
                      the highest offset that consumer had read there since its last
                      assign/seek (or past the assign/seek position itself), where the final
                      read has records in between (count: such gaps). Gaps the final read also has - transaction markers, aborted
                      or compacted records, retention - are not anomalies: control batches are
                      never returned to clients.
truncated_reads       a polled record at an offset that the final read shows with a different
                      value or not at all (read beyond what the log kept: beyond the committed
                      high watermark). A truncated and rewritten offset is also an
                      inconsistent offset: the two kinds look at it from the reader's and the
                      offset's side.
failed_but_present    a send with outcome `fail` (definitely not written) whose value was
                      read (final read or any poll). Sends with outcome `info` may or may not
                      be present; they are counted (stats.info_present / info_absent), never an
                      anomaly.

Final-read checks (lost, duplicates, skipped_offsets, truncated_reads) apply to partitions with a
`final_read` line; sends, gaps and reads in other partitions are counted as unchecked.

Compacted topics (header `compacted_topics`): compaction removes a record when a later record
has the same key, and removes tombstones (null values). There a send or read absent from the
final read is excused when the key has a record or an ok send at a higher offset, or its value
is null; a different value at the same offset is still an anomaly.

Not checked: transactions (aborted reads, uncommitted reads, commit atomicity). The recorder has
no transactional operations yet; a history with a `txn` operation is refused rather than judged
half-way. Commits are recorded and counted but not judged.
"""

from __future__ import annotations

import bisect
import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .record import FORMAT_VERSION, OUTCOMES, read_history, value_key

KINDS = ("lost", "duplicates", "inconsistent_offsets", "non_monotonic_polls", "skipped_offsets",
         "truncated_reads", "failed_but_present")
NOT_CHECKED = ["aborted_reads", "uncommitted_reads", "commit_semantics"]


class HistoryError(ValueError):
    """The history cannot be judged (malformed line, a value sent twice, unsupported op)."""


@dataclass(slots=True)
class Send:
    outcome: str
    topic: str
    partition: int | None
    offset: int | None
    key: Any
    process: str
    line: int


def _tp(t: Any, p: Any, line: int) -> tuple[str, int]:
    if not isinstance(t, str) or not isinstance(p, int) or isinstance(p, bool) or p < 0:
        raise HistoryError(f"line {line}: bad topic/partition {t!r}/{p!r}")
    return t, p


def _offset(o: Any, line: int) -> int:
    if not isinstance(o, int) or isinstance(o, bool) or o < 0:
        raise HistoryError(f"line {line}: bad offset {o!r}")
    return o


def _show(v: Any) -> Any:
    """A value as it appears in a report (the b64 tag kept readable)."""
    return {"b64": v[1]} if isinstance(v, tuple) else v


class Checker:
    """Feed it a history's lines in order (`feed`), then ask for the `report` (once: judging
    adds to the counts)."""

    def __init__(self, max_examples: int = 10):
        self.max_examples = max_examples
        self.header: dict | None = None
        self.compacted: set[str] = set()
        self.sends: dict[Any, Send] = {}  # value -> its send (values are unique per send)
        self.acked: dict[tuple, Any] = {}  # (t, p, o) -> value acknowledged there
        self.polled: dict[tuple, tuple] = {}  # (t, p, o) -> (value, process, line), 1st poll
        self.polled_other: dict[tuple, set] = defaultdict(set)  # other values polled there
        self.polled_values: set = set()
        self.polled_keys: dict[tuple, Any] = {}  # (t, p, o) -> key, compacted topics only
        self.final: dict[tuple, dict[int, tuple[Any, Any]]] = defaultdict(dict)  # tp -> o -> (v,k)
        self.ranges: dict[tuple, tuple[int, int]] = {}  # tp -> [start, end) of the final read
        self.conflicts: dict[tuple, dict[Any, str]] = {}  # (t,p,o) -> value -> where first seen
        self.positions: dict[str, dict[tuple, tuple]] = defaultdict(dict)  # proc -> tp -> state
        self.gaps: list[tuple] = []  # (process, t, p, from, to, line); to exclusive
        self.counts: Counter = Counter()
        self.examples: dict[str, list] = {k: [] for k in KINDS}
        self.stats: Counter = Counter()

    # -- reading -------------------------------------------------------------------------
    def _example(self, kind: str, ex: dict) -> None:
        self.counts[kind] += 1
        if len(self.examples[kind]) < self.max_examples:
            self.examples[kind].append(ex)

    def _observe(self, tpo: tuple, v: Any, where: str) -> None:
        """One observation of value v at (t, p, o), for inconsistent_offsets."""
        seen = []
        if tpo in self.acked:
            seen.append((self.acked[tpo], "ack"))
        if tpo in self.polled:
            v0, proc, line = self.polled[tpo]
            seen.append((v0, f"poll {proc} line {line}"))
        seen.extend((o, "poll") for o in self.polled_other.get(tpo, ()))
        fin = self.final.get(tpo[:2], {}).get(tpo[2])
        if fin is not None:
            seen.append((fin[0], "final read"))
        if any(s != v for s, _ in seen):
            c = self.conflicts.setdefault(tpo, {})
            for s, w in seen:
                c.setdefault(s, w)
            c.setdefault(v, where)

    def feed(self, op: dict, line: int) -> None:
        typ = op.get("type")
        if self.header is None:
            if typ != "header":
                raise HistoryError(f"line {line}: the first line must be the header")
            if op.get("version") != FORMAT_VERSION:
                raise HistoryError(f"line {line}: history format version {op.get('version')!r}, "
                                   f"this checker reads {FORMAT_VERSION}")
            self.header = op
            self.compacted = set(op.get("compacted_topics") or [])
            return
        outcome = op.get("outcome", "ok")
        if outcome not in OUTCOMES:
            raise HistoryError(f"line {line}: outcome {outcome!r} is not one of {OUTCOMES}")
        proc = str(op.get("process", "?"))
        if typ == "send":
            self._send(op, outcome, proc, line)
        elif typ == "poll":
            self.stats["polls"] += 1
            if op.get("final"):
                self._final_poll(op, line)
            else:
                self._poll(op, proc, line)
        elif typ == "final_read":
            tp = _tp(op.get("topic"), op.get("partition"), line)
            start, end = _offset(op.get("start"), line), _offset(op.get("end"), line)
            if end < start:
                raise HistoryError(f"line {line}: final_read end {end} < start {start}")
            self.ranges[tp] = (start, end)
        elif typ in ("assign", "seek"):
            self._reposition(typ, op, proc, line)
        elif typ == "commit":
            self.stats[f"commits_{outcome}"] += 1
        elif typ == "txn":
            raise HistoryError(f"line {line}: transactional operations are not checked yet")
        else:
            raise HistoryError(f"line {line}: unknown operation type {typ!r}")

    def _send(self, op: dict, outcome: str, proc: str, line: int) -> None:
        self.stats[f"sends_{outcome}"] += 1
        v = value_key(op.get("value"))
        if v is None:
            raise HistoryError(f"line {line}: a send needs a non-null value (values identify "
                               f"records)")
        if v in self.sends:
            raise HistoryError(f"line {line}: value {_show(v)!r} sent twice (first on line "
                               f"{self.sends[v].line}); values must be unique per send")
        topic = op.get("topic")
        part = op.get("partition")
        if part is not None:
            _tp(topic, part, line)
        off = op.get("offset")
        if outcome == "ok" and off is not None:
            if part is None:
                raise HistoryError(f"line {line}: an acknowledged offset needs a partition")
            off = _offset(off, line)
            tpo = (topic, part, off)
            self._observe(tpo, v, f"ack line {line}")
            self.acked.setdefault(tpo, v)
        elif outcome != "ok":
            off = None
        self.sends[v] = Send(outcome, topic, part, off, value_key(op.get("key")), proc, line)

    def _final_poll(self, op: dict, line: int) -> None:
        for r in op.get("records") or []:
            t, p, o, k, v = self._record(r, line)
            self.stats["final_records"] += 1
            self._observe((t, p, o), v, f"final read line {line}")
            self.final[(t, p)].setdefault(o, (v, k))

    def _record(self, r: Any, line: int) -> tuple:
        if not isinstance(r, list) or len(r) != 5:
            raise HistoryError(f"line {line}: a record is [topic, partition, offset, key, value]")
        t, p = _tp(r[0], r[1], line)
        return t, p, _offset(r[2], line), value_key(r[3]), value_key(r[4])

    def _poll(self, op: dict, proc: str, line: int) -> None:
        pos = self.positions[proc]
        for r in op.get("records") or []:
            t, p, o, k, v = self._record(r, line)
            self.stats["polled_records"] += 1
            tpo = (t, p, o)
            if t in self.compacted:
                self.polled_keys[tpo] = k
            self._observe(tpo, v, f"{proc} poll line {line}")
            first = self.polled.get(tpo)
            if first is None:
                self.polled[tpo] = (v, proc, line)
            elif first[0] != v:
                self.polled_other[tpo].add(v)
            if v is not None:
                self.polled_values.add(v)
            st = pos.get((t, p))
            high = o
            if st is not None:
                kind, last, high = st
                if kind == "beginning":
                    self.gaps.append((proc, t, p, None, o, line))  # from the log start
                elif o <= last:
                    # a repeat or a step back; reads up to `high` are re-reads from here on
                    self._example("non_monotonic_polls", {
                        "process": proc, "topic": t, "partition": p,
                        ("previous" if kind == "read" else "position"): last if kind == "read"
                        else last + 1, "offset": o, "line": line})
                elif o > high + 1:
                    self.gaps.append((proc, t, p, high + 1, o, line))
                high = max(high, o)
            pos[(t, p)] = ("read", o, high)

    def _reposition(self, typ: str, op: dict, proc: str, line: int) -> None:
        pos = self.positions[proc]
        if typ == "assign":
            pos.clear()
        for entry in op.get("partitions") or []:
            if not isinstance(entry, list) or len(entry) != 3:
                raise HistoryError(f"line {line}: {typ} partitions are [topic, partition, pos]")
            tp = _tp(entry[0], entry[1], line)
            at = entry[2]
            if at == "beginning":
                pos[tp] = ("beginning", -1, -1)
            elif at is None:
                pos.pop(tp, None)
            else:  # the next record must be at `at`: as if `at - 1` had just been read
                at = _offset(at, line)
                pos[tp] = ("seek", at - 1, at - 1)

    # -- judging -------------------------------------------------------------------------
    def report(self) -> dict:
        if self.header is None:
            raise HistoryError("empty history (no header)")
        if self.counts.get("_reported"):
            raise RuntimeError("report() was already called on this Checker")
        self.counts["_reported"] = 1
        idempotence = bool(self.header.get("idempotence"))
        compacted = self.compacted
        # The final read's range grows to cover every record it returned.
        ranges = dict(self.ranges)
        for tp, recs in self.final.items():
            if tp not in ranges:
                raise HistoryError(f"final records of {tp[0]}/{tp[1]} but no final_read line "
                                   f"for that partition")
            start, end = ranges[tp]
            ranges[tp] = (min(start, min(recs)), max(end, max(recs) + 1))
        final_pos: dict[Any, list[tuple]] = defaultdict(list)  # value -> where in the final read
        for tp, recs in self.final.items():
            for o, (v, _k) in recs.items():
                if v is not None:
                    final_pos[v].append((tp[0], tp[1], o))
        sorted_offs = {tp: sorted(recs) for tp, recs in self.final.items()}
        later_key = self._later_keys(compacted)

        def excused(t: str, p: int, o: int, k: Any, v: Any) -> bool:
            """Compaction may have removed (t, p, o)."""
            return t in compacted and (v is None or later_key.get((t, p, k), -1) > o)

        self._check_sends(ranges, final_pos, excused)
        self._check_duplicates(final_pos)
        self._check_polls(ranges, excused)
        self._check_gaps(ranges, sorted_offs)
        for tpo, vals in self.conflicts.items():
            self._example("inconsistent_offsets", {
                "topic": tpo[0], "partition": tpo[1], "offset": tpo[2],
                "values": [{"value": _show(v), "seen": w} for v, w in vals.items()]})
        self.stats["partitions_read_back"] = len(ranges)
        judged = [k for k in KINDS if k != "duplicates" or idempotence]
        counts = {k: self.counts[k] for k in KINDS}
        return {
            "valid": all(counts[k] == 0 for k in judged),
            "idempotence": idempotence,
            "judged": judged,
            "counts": counts,
            "examples": {k: v for k, v in self.examples.items() if v},
            "stats": dict(sorted(self.stats.items())),
            "not_checked": NOT_CHECKED,
        }

    def _later_keys(self, compacted: set) -> dict[tuple, int]:
        """(t, p, key) -> highest offset with that key, from ok sends and the final read, for
        compacted topics."""
        out: dict[tuple, int] = {}
        if not compacted:
            return out
        for s in self.sends.values():
            if s.topic in compacted and s.offset is not None:
                k = (s.topic, s.partition, s.key)
                out[k] = max(out.get(k, -1), s.offset)
        for (t, p), recs in self.final.items():
            if t in compacted:
                for o, (_v, key) in recs.items():
                    out[(t, p, key)] = max(out.get((t, p, key), -1), o)
        return out

    def _check_sends(self, ranges, final_pos, excused) -> None:
        for v, s in self.sends.items():
            present = v in final_pos or v in self.polled_values
            if s.outcome == "fail":
                if present:
                    self._example("failed_but_present", {
                        "value": _show(v), "process": s.process, "line": s.line,
                        "found_at": (final_pos.get(v) or ["polled only"])[:3]})
                continue
            if s.outcome == "info":
                self.stats["info_present" if present else "info_absent"] += 1
                continue
            tp = (s.topic, s.partition)
            if tp not in ranges:
                self.stats["sends_unchecked"] += 1
                continue
            start, end = ranges[tp]
            fin = self.final.get(tp, {})
            if s.offset is None:
                if not any(w[:2] == tp for w in final_pos.get(v, [])):
                    self._example("lost", {"value": _show(v), "process": s.process,
                                           "line": s.line, "offset": None, "found": "missing"})
                continue
            if s.offset < start:
                self.stats["sends_expired"] += 1
                continue
            at = fin.get(s.offset)
            if at is not None and at[0] == v:
                continue
            if at is None and excused(s.topic, s.partition, s.offset, s.key, v):
                self.stats["sends_compacted"] += 1
                continue
            elsewhere = final_pos.get(v, [])
            self._example("lost", {
                "value": _show(v), "process": s.process, "line": s.line, "topic": s.topic,
                "partition": s.partition, "offset": s.offset,
                "found": ("moved" if elsewhere else
                          "past the end" if s.offset >= end else "missing"),
                "final_value_there": None if at is None else _show(at[0]),
                "found_at": elsewhere[:3]})

    def _check_duplicates(self, final_pos) -> None:
        for v, where in final_pos.items():
            if len(where) > 1 and v in self.sends:
                self.counts["duplicates"] += len(where) - 1
                if len(self.examples["duplicates"]) < self.max_examples:
                    s = self.sends[v]
                    self.examples["duplicates"].append({
                        "value": _show(v), "at": where[:5], "send_outcome": s.outcome,
                        "acknowledged_offset": s.offset})

    def _check_polls(self, ranges, excused) -> None:
        for tpo, (v0, proc, line) in self.polled.items():
            tp = (tpo[0], tpo[1])
            if tp not in ranges:
                self.stats["polled_unchecked"] += 1
                continue
            start, end = ranges[tp]
            if tpo[2] < start:
                continue  # expired by retention since
            at = self.final.get(tp, {}).get(tpo[2])
            for v in [v0, *sorted(self.polled_other.get(tpo, ()), key=repr)]:
                if at is not None and at[0] == v:
                    continue
                if at is None and excused(tpo[0], tpo[1], tpo[2], self.polled_keys.get(tpo), v):
                    continue
                self._example("truncated_reads", {
                    "topic": tpo[0], "partition": tpo[1], "offset": tpo[2], "polled": _show(v),
                    "process": proc, "line": line,
                    "final": ("past the end" if tpo[2] >= end else "absent") if at is None
                    else _show(at[0])})

    def _check_gaps(self, ranges, sorted_offs) -> None:
        for proc, t, p, lo, hi, line in self.gaps:
            if (t, p) not in ranges:
                self.stats["gaps_unchecked"] += 1
                continue
            if lo is None:
                lo = ranges[(t, p)][0]
                if lo >= hi:
                    continue  # the first read was at the log start: no gap
            offs = sorted_offs.get((t, p), [])
            i, j = bisect.bisect_left(offs, lo), bisect.bisect_left(offs, hi)
            if j > i:
                self._example("skipped_offsets", {
                    "process": proc, "topic": t, "partition": p, "after": lo - 1,
                    "next_read": hi, "line": line, "present_in_final": j - i,
                    "first_skipped": offs[i:min(j, i + 5)]})
            else:
                self.stats["gaps_legit"] += 1


def check_ops(ops: Iterable[dict], max_examples: int = 10) -> dict:
    """Judges a history given as objects (the header first)."""
    c = Checker(max_examples)
    for n, op in enumerate(ops, 1):
        c.feed(op, n)
    return c.report()


def check_file(path: str | Path, max_examples: int = 10) -> dict:
    c = Checker(max_examples)
    try:
        for n, op in read_history(path):
            c.feed(op, n)
    except ValueError as e:
        raise HistoryError(str(e)) from None
    return c.report()


def summary(report: dict) -> str:
    """A few readable lines: the verdict, counts and the first examples."""
    s = report["stats"]
    lines = [
        f"history checker: {'VALID' if report['valid'] else 'INVALID'} "
        f"(idempotence {'on' if report['idempotence'] else 'off'})",
        f"  sends ok {s.get('sends_ok', 0)}, fail {s.get('sends_fail', 0)}, info "
        f"{s.get('sends_info', 0)} (present {s.get('info_present', 0)}, absent "
        f"{s.get('info_absent', 0)}); polled records {s.get('polled_records', 0)}; final read "
        f"{s.get('final_records', 0)} records in {s.get('partitions_read_back', 0)} partitions",
    ]
    for k in ("sends_expired", "sends_compacted", "sends_unchecked", "polled_unchecked",
              "gaps_unchecked", "gaps_legit"):
        if s.get(k):
            lines.append(f"  {k}: {s[k]}")
    lines.append("  " + ", ".join(
        f"{k} {n}" + ("" if k in report["judged"] else " (allowed)")
        for k, n in report["counts"].items()))
    for k, exs in report["examples"].items():
        for ex in exs[:3]:
            lines.append(f"  {k}: {json.dumps(ex)}")
    lines.append(f"  not checked: {', '.join(report['not_checked'])}")
    return "\n".join(lines)
