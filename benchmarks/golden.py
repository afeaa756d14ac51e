"""Regenerate the golden numbers, ``tests/golden/<family>.json``, from the code at hand.

    PYTHONPATH=. python benchmarks/golden.py                 # every family
    PYTHONPATH=. python benchmarks/golden.py predict cost    # some of them

Run it on a clean checkout of the commit you want to freeze (``git worktree add /tmp/golden-base HEAD``), with
``PYTHONPATH`` set to that checkout so its packages win over an editable install. The invocations and what is
kept of their outputs live in ``tests/golden/cases.py``, which ``tests/test_golden.py`` reads too. Each file
records the commit, the versions that produce the floats, and per command its CLI line and its rows (or the
error it fails with today). The FuseMax study is checked against the published CSVs it compares to: every one
of those cells must be among the frozen ones.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.golden.cases import FAMILIES, GOLDEN_DIR, count_leaves, evaluate, invocations, shared_root  # noqa: E402

GENERATOR = "PYTHONPATH=. python benchmarks/golden.py"


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def _versions() -> dict[str, str]:
    import numba
    import numpy

    return {"python": platform.python_version(), "numpy": numpy.__version__, "numba": numba.__version__}


def published_cells(rows: dict) -> list[str]:
    """The study's cells that have a published counterpart (``validate.fusemax.report.compare``'s rule)."""
    shared = shared_root()
    if shared is None:
        return []
    out = []
    for path in sorted((shared / "reference" / "fusemax").glob("*.csv")):
        if not path.stem.startswith(("attn-", "end2end-")):
            continue
        with path.open() as f:
            for ref in csv.DictReader(f):
                key = f"{path.stem}/{ref['model']}/{ref['seq_len']}"
                for column in ref:
                    if column and column not in ("model", "seq_len") and key in rows and column in rows[key]:
                        out.append(f"{key}:{column}")
    return out


def generate(family: str, meta: dict) -> dict:
    commands, numbers, other, started = {}, 0, 0, time.perf_counter()
    for inv in invocations([family]):
        with tempfile.TemporaryDirectory(prefix="golden-") as out:
            tick = time.perf_counter()
            record = evaluate(inv, Path(out))
        n, o = count_leaves(record)
        numbers, other = numbers + n, other + o
        status = "ERROR " + json.dumps(record["error"]) if "error" in record else f"{n} numbers"
        print(f"  {time.perf_counter() - tick:6.2f} s  {inv.command}: {status}", file=sys.stderr)
        commands[inv.command] = {"argv": list(inv.argv), **record}
    doc = {
        "family": family,
        "generated_by": f"{GENERATOR} {family}",
        **meta,
        "numbers": numbers,
        "other_leaves": other,
        "expected_errors": sorted(c for c, r in commands.items() if "error" in r),
        "seconds": round(time.perf_counter() - started, 1),
    }
    if family == "fusemax":
        (record,) = commands.values()
        cells = published_cells(record.get("rows", {}))
        summary = record.get("rows", {}).get("summary", {})
        compared = summary.get("cells_compared")
        if cells and compared is not None and len(cells) != compared:
            raise SystemExit(f"{len(cells)} published cells found among the frozen rows, the study compares {compared}")
        doc["published_cells"] = {"count": len(cells), "cells": cells}
    doc["commands"] = commands
    return doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("families", nargs="*", help=f"some of {', '.join(FAMILIES)} (default: all)")
    args = parser.parse_args(argv)
    unknown = [f for f in args.families if f not in FAMILIES]
    if unknown:
        parser.error(f"unknown families {unknown}; known: {', '.join(FAMILIES)}")
    import attnscope

    if not Path(attnscope.__file__).resolve().is_relative_to(ROOT):
        parser.error(f"attnscope is imported from {attnscope.__file__}, not {ROOT}: set PYTHONPATH={ROOT}")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    meta = {"commit": _git("rev-parse", "HEAD"), "dirty": dirty, "versions": _versions()}
    if dirty:
        print("warning: tracked files differ from the commit; the golden numbers will not be that commit's",
              file=sys.stderr)  # fmt: skip
    if shared_root() is None:
        print("warning: no shared/reference/fusemax found (set ATTNSCOPE_SHARED)", file=sys.stderr)
    for family in args.families or FAMILIES:
        print(f"{family}:", file=sys.stderr)
        doc = generate(family, meta)
        path = GOLDEN_DIR / f"{family}.json"
        path.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"  -> {path.relative_to(ROOT)}: {doc['numbers']} numbers, {doc['other_leaves']} other leaves, "
              f"{len(doc['expected_errors'])} expected errors, {doc['seconds']} s", file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
