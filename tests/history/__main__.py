"""Command line: `python -m history check FILE [--examples N] [--json OUT]` (from `tests/`).

Prints the summary; exit status 0 when the history is valid, 1 when it shows an anomaly, 2 when
it cannot be judged (malformed, a value sent twice, unsupported operations)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .checker import HistoryError, check_file, summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m history", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    chk = sub.add_parser("check", help="judge a history file (JSON lines, optionally .gz)")
    chk.add_argument("file", type=Path)
    chk.add_argument("--examples", type=int, default=10, help="examples kept per kind (10)")
    chk.add_argument("--json", type=Path, default=None, help="write the full report here")
    args = ap.parse_args(argv)
    try:
        report = check_file(args.file, args.examples)
    except (HistoryError, OSError) as e:
        print(f"cannot check {args.file}: {e}", file=sys.stderr)
        return 2
    print(summary(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["valid"] else 1


if __name__ == "__main__":
    sys.exit(main())
