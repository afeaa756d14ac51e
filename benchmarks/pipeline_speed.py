"""Wall time of ``reproduce fusemax`` and ``compare-attention`` for two checkouts, in one run, interleaved.

Usage::

    git worktree add /tmp/base <commit>        # the checkout to compare against
    .venv/bin/python benchmarks/pipeline_speed.py --base /tmp/base [--repeats 3]

Each command runs as a fresh process with ``PYTHONPATH`` set to the checkout (so the same virtual environment
and the same Numba cache directory serve both), alternating base and current, after one warm-up run of each;
the median of ``--repeats`` is reported as a markdown table (paste it into docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

COMMANDS = {
    "reproduce fusemax": ["reproduce", "fusemax", "--out", "{out}/fusemax", "--quiet"],
    "compare-attention h100-sxm (24 variants x 1K..1M)": [
        "compare-attention", "--device", "h100-sxm", "--model", "llama3-8b", "--out", "{out}/cmp-gpu", "--no-plot",
    ],
    "compare-attention fusemax-cloud (24 variants x 1K..64K)": [
        "compare-attention", "--arch", "fusemax-cloud", "--model", "llama3-8b", "--seq", "1K,4K,16K,64K",
        "--out", "{out}/cmp-arch", "--no-plot",
    ],
}  # fmt: skip


def run_once(checkout: Path, argv: list[str], out: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    args = [sys.executable, "-m", "attnscope.cli", *(a.format(out=out) for a in argv)]
    start = time.perf_counter()
    done = subprocess.run(args, cwd=checkout, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{checkout}: {' '.join(argv)} failed:\n{done.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, type=Path, help="the checkout to compare against")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as out:
        for label, argv in COMMANDS.items():
            times: dict[str, list[float]] = {"base": [], "current": []}
            for checkout in (args.base, ROOT):  # warm-up: Numba caches, imports
                run_once(checkout, argv, out)
            for _ in range(args.repeats):
                times["base"].append(run_once(args.base, argv, out))
                times["current"].append(run_once(ROOT, argv, out))
            base, current = statistics.median(times["base"]), statistics.median(times["current"])
            rows.append(f"| {label} | {base:.2f} s | {current:.2f} s | {current / base:.2f} |")
            print(rows[-1], flush=True)
    print("\n| command | base | current | current / base |\n|---|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
