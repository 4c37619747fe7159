"""The history checker on hand-made histories: every anomaly kind is detected, clean histories
(legitimate gaps, indeterminate sends that did or did not land, retention, compaction, seeks)
pass; and a property test over random simulated logs with one injected anomaly each."""

from __future__ import annotations

import copy
import json
import random

import pytest

from history.__main__ import main as cli
from history.checker import KINDS, HistoryError, check_ops


class H:
    """Builds a history by hand. Records in polls are (partition, offset, value) on topic "t"
    with key None, or full [topic, partition, offset, key, value] lists."""

    def __init__(self, idempotence: bool = True, compacted: tuple = ()):
        self.ops = [{"type": "header", "version": 1, "idempotence": idempotence, "acks": "all",
                     "isolation": "read_uncommitted", "compacted_topics": list(compacted)}]
        self.t = 0

    def _op(self, **kw) -> H:
        self.t += 10
        self.ops.append({"invoke_ns": self.t, "complete_ns": self.t + 5, **kw})
        return self

    def send(self, value, offset=None, outcome="ok", partition=0, topic="t", key=None,
             proc="p0") -> H:
        return self._op(process=proc, type="send", outcome=outcome, topic=topic,
                        partition=partition, key=key, value=value,
                        offset=offset if outcome == "ok" else None,
                        error=None if outcome == "ok" else "_MSG_TIMED_OUT")

    @staticmethod
    def _recs(recs) -> list:
        return [list(r) if len(r) == 5 else ["t", r[0], r[1], None, r[2]] for r in recs]

    def poll(self, proc, *recs) -> H:
        return self._op(process=proc, type="poll", outcome="ok", records=self._recs(recs),
                        errors=[])

    def assign(self, proc, *parts) -> H:
        return self._op(process=proc, type="assign", outcome="ok",
                        partitions=[["t", p, pos] for p, pos in parts])

    def seek(self, proc, partition, pos) -> H:
        return self._op(process=proc, type="seek", outcome="ok", partitions=[["t", partition, pos]])

    def final(self, values: dict, partition=0, start=0, end=None, topic="t", keys=None) -> H:
        """values: offset -> value of the final read of one partition."""
        keys = keys or {}
        recs = [[topic, partition, o, keys.get(o), v] for o, v in sorted(values.items())]
        if recs:
            self._op(process="final", type="poll", outcome="ok", final=True, records=recs,
                     errors=[])
        if end is None:
            end = max(values, default=start - 1) + 1
        return self._op(process="final", type="final_read", outcome="ok", topic=topic,
                        partition=partition, start=start, end=end)

    def check(self) -> dict:
        return check_ops(self.ops)


def anomalies(r: dict) -> dict:
    return {k: n for k, n in r["counts"].items() if n}


def clean_base() -> H:
    h = H()
    for i in range(5):
        h.send(f"v{i}", i)
    h.assign("c0", (0, "beginning")).poll("c0", (0, 0, "v0"), (0, 1, "v1"))
    h.poll("c0", (0, 2, "v2"), (0, 3, "v3"), (0, 4, "v4"))
    return h.final({i: f"v{i}" for i in range(5)})


# -- clean histories --------------------------------------------------------------------------

def test_clean_history_is_valid():
    r = clean_base().check()
    assert r["valid"], r
    assert anomalies(r) == {}
    assert r["stats"]["sends_ok"] == 5 and r["stats"]["final_records"] == 5
    assert r["stats"]["polled_records"] == 5


def test_gap_that_the_final_read_also_has_is_legit():
    # offset 2 holds a transaction marker (a control batch: never returned to clients)
    h = H().send("a", 0).send("b", 1).send("c", 3)
    h.poll("c0", (0, 0, "a"), (0, 1, "b")).poll("c0", (0, 3, "c"))
    r = h.final({0: "a", 1: "b", 3: "c"}, end=4).check()
    assert r["valid"] and anomalies(r) == {}, r
    assert r["stats"]["gaps_legit"] == 1


def test_indeterminate_sends_may_or_may_not_land():
    h = H().send("a", 0).send("maybe-landed", outcome="info").send("maybe-not", outcome="info")
    r = h.final({0: "a", 1: "maybe-landed"}).check()
    assert r["valid"] and anomalies(r) == {}, r
    assert (r["stats"]["info_present"], r["stats"]["info_absent"]) == (1, 1)


def test_definite_failure_absent_is_fine():
    r = H().send("a", 0).send("refused", outcome="fail").final({0: "a"}).check()
    assert r["valid"], r


def test_retried_send_with_idempotence_lands_once():
    # the first attempt of "b" timed out in flight, librdkafka retried it with the same sequence
    # number; the broker deduplicated it, so it is in the log once, at the offset acknowledged
    h = H().send("a", 0).send("b", 1).send("c", 2)
    h.poll("c0", (0, 0, "a"), (0, 1, "b"), (0, 2, "c"))
    r = h.final({0: "a", 1: "b", 2: "c"}).check()
    assert r["valid"] and anomalies(r) == {}, r


def test_duplicates_without_idempotence_are_reported_but_allowed():
    h = H(idempotence=False).send("a", 0).send("b", 2)
    r = h.final({0: "a", 1: "a", 2: "b"}).check()
    assert r["counts"]["duplicates"] == 1
    assert "duplicates" not in r["judged"] and r["valid"], r
    assert r["examples"]["duplicates"][0]["at"] == [("t", 0, 0), ("t", 0, 1)]


def test_records_below_the_log_start_are_expired_not_lost():
    h = H().send("a", 0).send("b", 1).send("c", 2).poll("c0", (0, 0, "a"))
    r = h.final({2: "c"}, start=2).check()
    assert r["valid"] and anomalies(r) == {}, r
    assert r["stats"]["sends_expired"] == 2


def test_seek_back_with_a_marker_is_not_non_monotonic():
    h = H().send("a", 0).send("b", 1).send("c", 2)
    h.assign("c0", (0, 0)).poll("c0", (0, 0, "a"), (0, 1, "b"))
    h.seek("c0", 0, 1).poll("c0", (0, 1, "b"), (0, 2, "c"))
    h.assign("c0", (0, None)).poll("c0", (0, 0, "a"))  # reassigned at the committed offset
    r = h.final({0: "a", 1: "b", 2: "c"}).check()
    assert r["valid"] and anomalies(r) == {}, r


def test_compaction_removes_older_records_of_a_key_and_tombstones():
    h = H(compacted=("t",))
    h.send("k1-old", 0, key="k1").send("k2", 1, key="k2").send("k1-new", 2, key="k1")
    h.send("k3-old", 3, key="k3").send("k3-new", 4, key="k3")
    h.poll("c0", ["t", 0, 0, "k1", "k1-old"], ["t", 0, 1, "k2", "k2"])
    # a consumer saw the tombstone of k4 at offset 5; compaction removed it later
    h.poll("c1", ["t", 0, 5, "k4", None])
    r = h.final({1: "k2", 2: "k1-new", 4: "k3-new"}, end=6,
                keys={1: "k2", 2: "k1", 4: "k3"}).check()
    assert r["valid"] and anomalies(r) == {}, r
    assert r["stats"]["sends_compacted"] == 2  # k1-old, k3-old


def test_send_without_an_offset_is_found_anywhere_in_its_partition():
    r = H().send("a").final({7: "a"}, start=7).check()
    assert r["valid"], r


# -- each anomaly -------------------------------------------------------------------------------

def test_lost_write_missing():
    r = H().send("a", 0).send("b", 1).final({0: "a"}, end=2).check()
    assert not r["valid"] and anomalies(r) == {"lost": 1}, r
    assert r["examples"]["lost"][0]["value"] == "b"
    assert r["examples"]["lost"][0]["found"] == "missing"


def test_lost_write_at_another_offset():
    r = H().send("a", 0).send("b", 1).final({0: "b", 1: "a"}).check()
    assert anomalies(r) == {"lost": 2, "inconsistent_offsets": 2}, r
    assert {e["found"] for e in r["examples"]["lost"]} == {"moved"}


def test_lost_write_past_the_end_of_the_log():
    r = H().send("a", 0).send("b", 1).final({0: "a"}).check()
    assert anomalies(r) == {"lost": 1}, r
    assert r["examples"]["lost"][0]["found"] == "past the end"


def test_duplicates_with_idempotence():
    r = H().send("a", 0).send("b", 1).final({0: "a", 1: "b", 2: "b"}).check()
    assert not r["valid"] and anomalies(r) == {"duplicates": 1}, r
    assert r["idempotence"] is True


def test_inconsistent_offset_between_two_readers():
    h = H().send("a", 0)
    h.poll("c0", (0, 0, "a"), (0, 1, "x")).poll("c1", (0, 0, "a"), (0, 1, "y"))
    r = h.final({0: "a", 1: "x"}).check()
    assert r["counts"]["inconsistent_offsets"] == 1, r
    ex = r["examples"]["inconsistent_offsets"][0]
    assert ex["offset"] == 1 and {v["value"] for v in ex["values"]} == {"x", "y"}
    assert r["counts"]["truncated_reads"] == 1  # c1's "y" is not what the log kept


def test_inconsistent_offset_between_two_acknowledgements():
    r = H().send("a", 0).send("b", 0).final({0: "a"}).check()
    assert r["counts"]["inconsistent_offsets"] == 1 and r["counts"]["lost"] == 1, r


def test_non_monotonic_poll():
    h = H().send("a", 0).send("b", 1).send("c", 2)
    h.poll("c0", (0, 0, "a"), (0, 1, "b"), (0, 2, "c")).poll("c0", (0, 1, "b"))
    r = h.final({0: "a", 1: "b", 2: "c"}).check()
    assert not r["valid"] and anomalies(r) == {"non_monotonic_polls": 1}, r
    ex = r["examples"]["non_monotonic_polls"][0]
    assert (ex["previous"], ex["offset"], ex["process"]) == (2, 1, "c0")


@pytest.mark.parametrize("after", [
    [(0, 1, "v1")],  # one stray repeat, then on from the highest offset read
    [(0, 1, "v1"), (0, 2, "v2"), (0, 3, "v3")],  # a rewind, re-reading what it had read
])
def test_a_step_back_counts_once(after):
    h = H()
    for i in range(6):
        h.send(f"v{i}", i)
    h.poll("c0", (0, 0, "v0"), (0, 1, "v1"), (0, 2, "v2"), (0, 3, "v3"))
    h.poll("c0", *after).poll("c0", (0, 4, "v4"), (0, 5, "v5"))
    r = h.final({i: f"v{i}" for i in range(6)}).check()
    assert anomalies(r) == {"non_monotonic_polls": 1}, r


def test_non_monotonic_is_per_process_and_partition():
    # two consumers and two partitions interleaved: each sequence increases on its own
    h = H().send("a", 0).send("b", 0, partition=1)
    h.poll("c0", (0, 0, "a")).poll("c1", (0, 0, "a")).poll("c0", (1, 0, "b"))
    r = h.final({0: "a"}).final({0: "b"}, partition=1).check()
    assert r["valid"], r


def test_read_below_the_seek_position():
    h = H().send("a", 0).send("b", 1).seek("c0", 0, 1).poll("c0", (0, 0, "a"))
    r = h.final({0: "a", 1: "b"}).check()
    assert anomalies(r) == {"non_monotonic_polls": 1}, r


def test_skipped_offsets():
    h = H()
    for i in range(5):
        h.send(f"v{i}", i)
    h.poll("c0", (0, 0, "v0"), (0, 1, "v1")).poll("c0", (0, 4, "v4"))
    r = h.final({i: f"v{i}" for i in range(5)}).check()
    assert not r["valid"] and anomalies(r) == {"skipped_offsets": 1}, r
    ex = r["examples"]["skipped_offsets"][0]
    assert (ex["after"], ex["next_read"], ex["present_in_final"]) == (1, 4, 2)


def test_skipped_offsets_from_the_beginning():
    h = H().send("a", 0).send("b", 1).assign("c0", (0, "beginning")).poll("c0", (0, 1, "b"))
    r = h.final({0: "a", 1: "b"}).check()
    assert anomalies(r) == {"skipped_offsets": 1}, r


def test_read_of_data_later_truncated():
    # the consumer read offset 2 before the broker lost it (a read beyond the committed end)
    h = H().send("a", 0).send("b", 1).send("c", outcome="info")
    h.poll("c0", (0, 0, "a"), (0, 1, "b"), (0, 2, "c"))
    r = h.final({0: "a", 1: "b"}).check()
    assert not r["valid"] and anomalies(r) == {"truncated_reads": 1}, r
    assert r["examples"]["truncated_reads"][0]["final"] == "past the end"


def test_read_of_data_truncated_and_rewritten():
    h = H().send("a", 0).send("d", 2).send("c", outcome="info")
    h.poll("c0", (0, 0, "a"), (0, 1, "c"))
    r = h.final({0: "a", 1: "other", 2: "d"}).check()
    assert anomalies(r) == {"truncated_reads": 1, "inconsistent_offsets": 1}, r
    assert r["examples"]["truncated_reads"][0]["final"] == "other"


def test_failed_send_present_in_the_log():
    r = H().send("a", 0).send("refused", outcome="fail").final({0: "a", 1: "refused"}).check()
    assert not r["valid"] and anomalies(r) == {"failed_but_present": 1}, r


def test_failed_send_seen_by_a_consumer_only():
    h = H().send("a", 0).send("refused", outcome="fail").poll("c0", (0, 0, "a"), (0, 1, "refused"))
    r = h.final({0: "a"}).check()
    assert anomalies(r) == {"failed_but_present": 1, "truncated_reads": 1}, r


def test_compacted_topic_still_flags_a_different_value():
    h = H(compacted=("t",)).send("a", 0, key="k").send("b", 1, key="k")
    r = h.final({0: "zzz", 1: "b"}, keys={0: "k", 1: "k"}).check()
    assert r["counts"]["lost"] == 1 and r["counts"]["inconsistent_offsets"] == 1, r


def test_unchecked_partitions_are_counted_not_judged():
    r = H().send("a", 0, partition=3).poll("c0", (3, 0, "a")).final({}, partition=0).check()
    assert r["valid"]
    assert r["stats"]["sends_unchecked"] == 1 and r["stats"]["polled_unchecked"] == 1


# -- histories that cannot be judged -----------------------------------------------------------

@pytest.mark.parametrize("mutate, msg", [
    (lambda ops: ops.pop(0), "header"),
    (lambda ops: ops.append({**ops[1]}), "sent twice"),
    (lambda ops: ops.append({"type": "txn", "process": "p"}), "transactional"),
    (lambda ops: ops.append({"type": "send", "outcome": "maybe", "value": "z"}), "outcome"),
    (lambda ops: ops.append({"type": "poll", "final": True, "records": [["t", 9, 0, None, "q"]]}),
     "no final_read"),
    (lambda ops: ops.append({"type": "poll", "records": [["t", 0, -1, None, "q"]]}), "offset"),
])
def test_malformed_histories_are_refused(mutate, msg):
    ops = copy.deepcopy(clean_base().ops)
    mutate(ops)
    with pytest.raises(HistoryError, match=msg):
        check_ops(ops)


# -- the command line ----------------------------------------------------------------------------

def write(path, ops):
    path.write_text("".join(json.dumps(o) + "\n" for o in ops))


def test_cli_exit_status_and_json(tmp_path, capsys):
    good, bad, broken = tmp_path / "good.jsonl", tmp_path / "bad.jsonl", tmp_path / "x.jsonl"
    write(good, clean_base().ops)
    write(bad, H().send("a", 0).final({}, end=1).ops)
    broken.write_text('{"type": "header", "version": 1}\nnot json\n')
    assert cli(["check", str(good)]) == 0
    assert "VALID" in capsys.readouterr().out
    assert cli(["check", str(bad), "--json", str(tmp_path / "r.json")]) == 1
    out = capsys.readouterr().out
    assert "INVALID" in out and "lost 1" in out
    assert json.loads((tmp_path / "r.json").read_text())["counts"]["lost"] == 1
    assert cli(["check", str(broken)]) == 2
    assert "not JSON" in capsys.readouterr().err


# -- property test: random clean histories pass, one injected anomaly is found -------------------

def simulate(rng: random.Random) -> tuple[list, dict]:
    """A history of a correct broker: sends to 2 partitions (some indeterminate, some failed,
    some offsets taken by transaction markers), two consumers reading with random chunking and
    seeks, retention moving a partition's log start, and the final read."""
    h = H()
    logs: dict[int, list] = {0: [], 1: []}
    nxt = {0: 0, 1: 0}
    for i in range(rng.randint(20, 60)):
        p = rng.randrange(2)
        if rng.random() < 0.1:
            nxt[p] += 1  # a control batch takes an offset; no client ever sees it
        r = rng.random()
        outcome, landed = (("ok", True) if r < 0.7 else ("info", True) if r < 0.8
                           else ("info", False) if r < 0.9 else ("fail", False))
        off = None
        if landed:
            off = nxt[p]
            logs[p].append((off, f"v{i}"))
            nxt[p] += 1
        h.send(f"v{i}", off, outcome, partition=p)
    for proc in ("c0", "c1"):
        h.assign(proc, (0, "beginning"), (1, "beginning"))
        cursor = {0: 0, 1: 0}
        while any(cursor[p] < len(logs[p]) for p in logs):
            p = rng.choice([q for q in logs if cursor[q] < len(logs[q])])
            n = rng.randint(1, 5)
            recs = [(p, o, v) for o, v in logs[p][cursor[p]:cursor[p] + n]]
            h.poll(proc, *recs)
            cursor[p] += n
            if rng.random() < 0.1 and cursor[p] > 0:
                back = rng.randrange(min(cursor[p], len(logs[p])))
                h.seek(proc, p, logs[p][back][0])
                cursor[p] = back
    for p in logs:
        start = 0
        if logs[p] and rng.random() < 0.3:  # retention deleted a prefix
            start = logs[p][rng.randrange(len(logs[p]))][0]
        h.final({o: v for o, v in logs[p] if o >= start}, partition=p, start=start, end=nxt[p])
    return h.ops, {"logs": logs}


def consumer_polls(ops):
    return [o for o in ops if o.get("type") == "poll" and not o.get("final")]


def final_polls(ops):
    return [o for o in ops if o.get("type") == "poll" and o.get("final")]


def final_range(ops, p):
    return next(o for o in ops if o.get("type") == "final_read" and o["partition"] == p)


def inject(kind: str, ops: list, rng: random.Random) -> bool:
    """Puts one anomaly of `kind` into `ops`; False when this history offers no place for it."""
    final_recs = [(op, i) for op in final_polls(ops) for i in range(len(op["records"]))]
    acked_in_final = {(r[1], r[2]) for op in final_polls(ops) for r in op["records"]}
    if kind == "lost":
        cands = [o for o in ops if o.get("type") == "send" and o["outcome"] == "ok"
                 and (o["partition"], o["offset"]) in acked_in_final]
        if not cands:
            return False
        victim = rng.choice(cands)
        for op in final_polls(ops):
            op["records"] = [r for r in op["records"] if r[4] != victim["value"]]
        return True
    if kind == "duplicates":
        cands = [o for o in ops if o.get("type") == "send" and o["outcome"] == "ok"
                 and (o["partition"], o["offset"]) in acked_in_final]
        if not cands:
            return False
        s = rng.choice(cands)
        rng_ = final_range(ops, s["partition"])
        final_polls(ops)[-1]["records"].append(["t", s["partition"], rng_["end"], None, s["value"]])
        rng_["end"] += 1
        return True
    if kind == "inconsistent_offsets":
        polls = [op for op in consumer_polls(ops) if op["records"]]
        if not polls:
            return False
        op = rng.choice(polls)
        rec = rng.choice(op["records"])
        rec[4] = rec[4] + "-corrupt"
        return True
    if kind == "non_monotonic_polls":
        polls = [op for op in consumer_polls(ops) if len(op["records"]) >= 2]
        if not polls:
            return False
        op = rng.choice(polls)
        i = rng.randrange(1, len(op["records"]))
        op["records"].insert(i + 1, list(op["records"][i - 1]))  # a repeat of an earlier one
        return True
    if kind == "skipped_offsets":
        # drop a record that the same consumer follows with a later record of that partition,
        # and that the final read has
        cands = []
        for op in consumer_polls(ops):
            for i, r in enumerate(op["records"][:-1]):
                nxt = op["records"][i + 1]
                if nxt[1] == r[1] and nxt[2] > r[2] and (r[1], r[2]) in acked_in_final:
                    cands.append((op, i))
        if not cands:
            return False
        op, i = rng.choice(cands)
        del op["records"][i]
        return True
    if kind == "truncated_reads":
        polls = [op for op in consumer_polls(ops) if op["records"]]
        if not polls:
            return False
        op = polls[-1]
        p = op["records"][-1][1]
        end = final_range(ops, p)["end"]
        last = max(r[2] for q in consumer_polls(ops) for r in q["records"] if r[1] == p)
        op["records"].append(["t", p, max(end, last + 1), None, "never-kept"])
        return True
    if kind == "failed_but_present":
        present = {r[4] for op, i in final_recs for r in [op["records"][i]]}
        cands = [o for o in ops if o.get("type") == "send" and o["value"] in present]
        if not cands:
            return False
        s = rng.choice(cands)
        s["outcome"], s["offset"], s["error"] = "fail", None, "MSG_SIZE_TOO_LARGE"
        return True
    raise AssertionError(kind)


def test_property_random_clean_histories_pass_and_injected_anomalies_are_found():
    injected = {k: 0 for k in KINDS}
    for seed in range(300):
        rng = random.Random(seed)
        ops, _ = simulate(rng)
        r = check_ops(ops)
        assert r["valid"] and anomalies(r) == {}, (seed, r)
        kind = KINDS[seed % len(KINDS)]
        bad = copy.deepcopy(ops)
        if not inject(kind, bad, rng):
            continue
        injected[kind] += 1
        r = check_ops(bad)
        assert not r["valid"], (seed, kind, r)
        assert r["counts"][kind] >= 1, (seed, kind, r["counts"])
    assert all(n >= 30 for n in injected.values()), injected
