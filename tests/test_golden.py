"""Golden numbers: every CLI invocation of ``tests/golden/cases.py`` re-run on the current code and compared with
the output frozen in ``tests/golden/<family>.json`` (made by ``benchmarks/golden.py`` at the commit recorded there).

Numbers must agree to ``rel=1e-9``; strings, booleans, nulls and expected errors exactly. A difference that is
understood goes into ``EXPLAINED`` with its reason, and the reason is shown (as a warning) on every run.
"""

from __future__ import annotations

import fnmatch
import json
import math
import warnings
from functools import cache

import pytest

from tests.golden.cases import FAMILIES, GOLDEN_DIR, Invocation, evaluate, invocations, shared_root

REL = 1e-9

# (golden file, "COMMAND :: ROW :: FIELD") -> reason (skipped) or (reason, rel) (compared at that tolerance).
# Each part is an fnmatch pattern and trailing parts may be left off ("COMMAND" covers all its rows, "COMMAND :: ROW"
# all its fields). ROW "error" is an expected error; FIELD "*" with a missing row also covers the row itself. E.g.
#   ("compare.json", "attnscope compare-attention --arch fusemax-cloud * :: * :: kernel"): "mapping labels reworded",
#   ("predict.json", "attnscope predict * --kernel fa2 * :: prediction :: time_s"): ("one FlashAttention model", 0.01),
EXPLAINED: dict[tuple[str, str], str | tuple[str, float]] = {}
# Re-frozen after issues 13-15 (one pipeline; the technology model, on-chip limits and searched tiles of the arrays;
# the GPU kernels' fill/drain, stream-K, re-derived efficiencies and backward kernels): the reasons for each moved
# number are in this file's history (git log -p tests/test_golden.py) and in those commits.

# Cells that need the published FuseMax CSVs (shared/reference/fusemax); skipped where they are not found.
NEEDS_REFERENCE = ("cells_compared", "cells_within_tolerance", "headline.from the published CSVs*",
                   "headline.reproduced, the same 18 rows*")  # fmt: skip


@cache
def _golden(family: str) -> dict:
    path = GOLDEN_DIR / f"{family}.json"
    if not path.exists():
        pytest.fail(f"{path} is missing: run `PYTHONPATH=. python benchmarks/golden.py {family}` at the base commit")
    return json.loads(path.read_text())


def _explained(file: str, command: str, row: str, field: str) -> str | tuple[str, float] | None:
    parts = (command, row, field)
    for (f, key), reason in EXPLAINED.items():
        patterns = [p.strip() for p in key.split(" :: ")]
        if f == file and all(fnmatch.fnmatchcase(part, p) for part, p in zip(parts, patterns, strict=False)):
            return reason
    return None


def _needs_reference(field: str) -> bool:
    return any(fnmatch.fnmatchcase(field, p) for p in NEEDS_REFERENCE)


def _same(expected, actual, rel: float) -> bool:
    if isinstance(expected, bool) or expected is None or isinstance(expected, str):
        return type(actual) is type(expected) and actual == expected
    if isinstance(actual, bool) or not isinstance(actual, int | float):
        return False
    if math.isnan(expected) or math.isinf(expected):
        return math.isnan(actual) if math.isnan(expected) else actual == expected
    return actual == pytest.approx(expected, rel=rel, abs=0)


class _Diff:
    """Differences of one command: problems, and the explanations used (reason -> first place)."""

    def __init__(self, file: str, command: str):
        self.file, self.command = file, command
        self.problems: list[str] = []
        self.notes: dict[str, str] = {}

    def check(self, row: str, field: str, expected, actual, *, missing: str | None = None) -> None:
        where = f"{self.file} | {self.command} | row {row!r} | {field}"
        explained = _explained(self.file, self.command, row, field)
        if explained is None and row == "summary" and _needs_reference(field) and shared_root() is None:
            explained = "no shared/reference/fusemax here (set ATTNSCOPE_SHARED)"
        if explained is not None:
            reason = explained if isinstance(explained, str) else explained[0]
            self.notes.setdefault(reason, where)
            if isinstance(explained, str):
                return  # skipped
        rel = REL if explained is None else explained[1]
        if missing is None and _same(expected, actual, rel):
            return
        text = missing or f"expected {expected!r}, got {actual!r}{_rel_diff(expected, actual)}"
        beyond = "" if explained is None else f" (beyond the explained rel={rel}: {explained[0]})"
        self.problems.append(f"{where}: {text}{beyond}")


def _rel_diff(expected, actual) -> str:
    numbers = all(isinstance(x, int | float) and not isinstance(x, bool) for x in (expected, actual))
    if numbers and expected and math.isfinite(expected):
        return f" (rel diff {(actual - expected) / abs(expected):.3g})"
    return ""


def compare(file: str, command: str, expected: dict, actual: dict) -> _Diff:
    """Every row and field of the frozen record against the re-computed one."""
    diff = _Diff(file, command)
    if "error" in expected or "error" in actual:
        if "error" not in actual:
            diff.check("error", "*", expected["error"], None, missing=f"failed at the golden commit with "
                       f"{expected['error']}, now succeeds")  # fmt: skip
        elif "error" not in expected:
            diff.check("error", "*", None, actual["error"], missing=f"now fails: {actual['error']}")
        else:
            for field in sorted(expected["error"].keys() | actual["error"].keys()):
                diff.check("error", field, expected["error"].get(field), actual["error"].get(field))
        return diff
    rows = actual["rows"]
    for row, fields in expected["rows"].items():
        if row not in rows:
            diff.check(row, "*", None, None, missing="row missing from the output")
            continue
        for field, value in fields.items():
            if field in rows[row]:
                diff.check(row, field, value, rows[row][field])
            else:
                diff.check(row, field, value, None, missing="field missing from the output")
    for row in rows.keys() - expected["rows"].keys():
        diff.check(row, "*", None, None, missing="new row, not in the golden file")
    return diff


INVOCATIONS = invocations()


@pytest.mark.parametrize("inv", INVOCATIONS, ids=[inv.command.removeprefix("attnscope ") for inv in INVOCATIONS])
def test_golden(inv: Invocation, tmp_path):
    golden = _golden(inv.family)
    file = f"{inv.family}.json"
    if inv.command not in golden["commands"]:
        pytest.fail(f"{file} has no {inv.command}: regenerate it at the base commit ({golden['commit']})")
    diff = compare(file, inv.command, golden["commands"][inv.command], evaluate(inv, tmp_path))
    for reason, where in diff.notes.items():
        warnings.warn(f"EXPLAINED: {reason} (first at {where})", stacklevel=1)
    if diff.problems:
        shown = diff.problems[:40]
        more = f"\n... and {len(diff.problems) - len(shown)} more" if len(diff.problems) > len(shown) else ""
        head = f"{len(diff.problems)} differences from the golden commit {golden['commit'][:12]}:\n"
        pytest.fail(head + "\n".join(shown) + more, pytrace=False)


@pytest.mark.parametrize("family", FAMILIES)
def test_golden_file_holds_exactly_the_invocations(family):
    golden = _golden(family)
    assert golden["commit"] and not golden["dirty"], f"{family}.json was not made from a clean commit"
    wanted = {inv.command for inv in invocations([family])}
    stale, absent = golden["commands"].keys() - wanted, wanted - golden["commands"].keys()
    assert not stale and not absent, (
        f"{family}.json: not invoked any more {sorted(stale)}, never frozen {sorted(absent)}"
    )


def test_explained_keys_name_golden_commands():
    for file, key in EXPLAINED:
        family = file.removesuffix(".json")
        assert family in FAMILIES, f"EXPLAINED names an unknown golden file {file}"
        pattern = key.split(" :: ")[0].strip()
        assert any(fnmatch.fnmatchcase(c, pattern) for c in _golden(family)["commands"]), f"{key} matches nothing"
