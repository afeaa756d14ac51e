"""Wall time and peak memory of ``attnscope cascade run`` (the numpy reference interpreter), for this checkout
and optionally an older one, in one run.

Usage::

    git archive <commit> | tar -x -C /tmp/interp-base       # the checkout to compare against (optional)
    .venv/bin/python benchmarks/interpreter_speed.py --base /tmp/interp-base --base-unchecked [--repeats 2]
    .venv/bin/python benchmarks/interpreter_speed.py --case fusemax:B=1,H=1,M=64K,P=64K,E=64,F=64

Each run is a fresh process under ``/usr/bin/time -v`` (wall clock, user + system CPU, maximum resident set
size) with ``PYTHONPATH`` set to the checkout, so the same virtual environment serves both. The best of
``--repeats`` is reported (the machine may be shared) with the 1-minute load average at the start, as a
markdown table to paste into docs/benchmarks.md. A run the interpreter refuses (its memory check) is reported
as refused with the estimate it printed; ``--base-unchecked`` runs the base with that check off.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CASES = [
    "fusemax:B=1,H=1,M=4K,P=4K,E=64,F=64",
    "fusemax-causal:B=1,H=1,M=4K,P=4K,E=64,F=64",
    "attention-3pass:B=1,H=1,M=4K,P=4K,E=64,F=64",
]
"""Default cases (cascade:shape); the 64K head takes minutes, so it is asked for with --case."""


UNCHECKED = (
    "import sys; import einsum.interpreter as i; i.available_memory_bytes = lambda: float('inf'); "
    "from attnscope.cli import main; sys.exit(main(sys.argv[1:]))"
)
"""``attnscope`` with the interpreter's memory check off: the broadcasting interpreter's estimate (4 arrays of
the largest iteration space) refuses a 4K FuseMax head on a 24 GiB machine, though it ran in 8.6 GB."""


def run_once(checkout: Path, cascade: str, shape: str, out: str, limit: float | None, check: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    cli = ["-m", "attnscope.cli"] if check else ["-c", UNCHECKED]
    args = ["/usr/bin/time", "-v", sys.executable, *cli, "cascade", "run", cascade, "--shape", shape, "--out", out]
    with subprocess.Popen(
        args, cwd=checkout, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    ) as proc:
        try:
            _, stderr = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # time and the interpreter under it
            proc.communicate()
            return {"status": f"stopped after {limit:.0f} s"}
    done = subprocess.CompletedProcess(args, proc.returncode, "", stderr)
    if done.returncode == 2 and "needs about" in done.stderr:
        needs = re.search(r"needs about ([\d,.]+ GiB)", done.stderr)
        return {"status": f"refused (needs about {needs.group(1) if needs else '?'})"}
    if done.returncode != 0:
        raise SystemExit(f"{checkout}: cascade run {cascade} --shape {shape} failed:\n{done.stderr}")

    def field(label: str) -> str:
        return re.search(rf"{re.escape(label)}: (.+)", done.stderr).group(1).strip()

    minutes, _, seconds = field("Elapsed (wall clock) time (h:mm:ss or m:ss)").rpartition(":")
    wall = float(seconds) + 60 * sum(float(x) * 60**k for k, x in enumerate(reversed(minutes.split(":"))) if x)
    cpu = float(field("User time (seconds)")) + float(field("System time (seconds)"))
    return {"status": "ok", "wall": wall, "cpu": cpu, "rss": int(field("Maximum resident set size (kbytes)")) * 1024}


def best(runs: list[dict]) -> dict:
    done = [r for r in runs if r["status"] == "ok"]
    return min(done, key=lambda r: r["wall"]) if done else runs[0]


def cell(r: dict) -> str:
    if r["status"] != "ok":
        return r["status"]
    return f"{r['wall']:.2f} s (CPU {r['cpu']:.2f} s), {r['rss'] / 2**20:,.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, help="an older checkout to compare against")
    parser.add_argument("--case", action="append", help="cascade:shape (repeatable); default: " + ", ".join(CASES))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--base-limit", type=float, default=600.0, help="seconds before a base run is stopped")
    parser.add_argument(
        "--base-unchecked", action="store_true", help="run the base without its memory check (see UNCHECKED)"
    )
    args = parser.parse_args()
    cases = args.case or CASES
    checkouts = {"current": ROOT} if args.base is None else {"base": args.base, "current": ROOT}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            cascade, _, shape = case.partition(":")
            load = os.getloadavg()[0]
            results = {}
            for label, checkout in checkouts.items():
                limit = args.base_limit if label == "base" else None
                runs = []
                for _ in range(args.repeats):
                    check = label == "current" or not args.base_unchecked
                    runs.append(run_once(checkout, cascade, shape, f"{tmp}/{label}.npz", limit, check))
                    if runs[-1]["status"] != "ok" or runs[-1]["wall"] > 60:
                        break  # a refused, stopped or minutes-long run is not repeated
                results[label] = best(runs)
            load = os.getloadavg()[0]
            rows.append(
                f"| `{cascade}` {shape} | " + " | ".join(cell(results[k]) for k in checkouts) + f" | {load:.1f} |"
            )
    header = "| case | " + " | ".join(checkouts) + " | load (1 min) |"
    print(f"{datetime.date.today().isoformat()}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(header)
    print("|" + "---|" * (len(checkouts) + 2))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
