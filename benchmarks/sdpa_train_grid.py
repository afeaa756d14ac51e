"""Backward/forward time ratios and per-call time of ``predict --op sdpa --direction fwd+bwd`` over issue 15's
acceptance grid: a100-sxm and h100-sxm; fa2, fa3 (H100) and the standard (unfused) path; head dims 64/128/256;
causal and not; 512-16K tokens per sequence, in FlashAttention's benchmark setup (batch x seq = 16K tokens,
heads x head_dim = 2048).

Usage::

    .venv/bin/python benchmarks/sdpa_train_grid.py            # ratio table + slowest Python-API call
    .venv/bin/python benchmarks/sdpa_train_grid.py --cli      # also time each grid point as a fresh CLI process

The ratio table is what docs/gpu.md ("Backward") shows; the timings go to docs/benchmarks.md. ``--cli`` runs
180 ``attnscope predict`` processes one after another (a few minutes): run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simulator.gpu import predict  # noqa: E402

DEVICES = {"a100-sxm": ("fa2", "unfused"), "h100-sxm": ("fa2", "fa3", "unfused")}
HEAD_DIMS = (64, 128, 256)
SEQS = (512, 1024, 2048, 4096, 8192, 16384)


def grid():
    for device, kernels in DEVICES.items():
        for kernel in kernels:
            for d in HEAD_DIMS:
                for causal in (False, True):
                    yield device, kernel, d, causal


def shape(seq: int, d: int) -> dict:
    return {"batch": max(1, 16384 // seq), "heads": 2048 // d, "seq_q": seq, "head_dim": d}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cli", action="store_true", help="also time every grid point as a fresh CLI process")
    args = ap.parse_args()
    slowest, outside = 0.0, 0
    print("| device | kernel | head dim | causal | bwd/fwd at " + " / ".join(f"{s // 1024}K" if s >= 1024 else str(s)
                                                                       for s in SEQS) + " |")  # fmt: skip
    print("|---|---|---:|---|---|")
    for device, kernel, d, causal in grid():
        cells = []
        for seq in SEQS:
            start = time.perf_counter()
            p = predict(device, "sdpa", causal=causal, kernel=kernel, direction="fwd+bwd", **shape(seq, d))
            slowest = max(slowest, time.perf_counter() - start)
            ratio = p.times_s["bwd"] / p.times_s["fwd"]
            outside += not 2.0 <= ratio <= 3.0
            cells.append(f"{ratio:.2f}")
        print(f"| {device} | {kernel} | {d} | {'yes' if causal else 'no'} | {' / '.join(cells)} |")
    n = sum(1 for _ in grid()) * len(SEQS)
    print(f"\n{n} points, {outside} outside 2-3x; slowest Python-API call {slowest:.3f} s")
    if args.cli:
        exe = str(ROOT / ".venv" / "bin" / "attnscope")
        worst = 0.0
        for device, kernel, d, causal in grid():
            for seq in SEQS:
                s = shape(seq, d)
                cmd = [exe, "predict", "--device", device, "--op", "sdpa", "--kernel", kernel, "--batch",
                       str(s["batch"]), "--heads", str(s["heads"]), "--seq", str(seq), "--head-dim", str(d),
                       "--direction", "fwd+bwd", "--json"] + (["--causal"] if causal else [])  # fmt: skip
                start = time.perf_counter()
                subprocess.run(cmd, check=True, capture_output=True, env=os.environ | {"PYTHONPATH": str(ROOT)})
                worst = max(worst, time.perf_counter() - start)
        print(f"slowest CLI call (fresh process, wall clock) {worst:.2f} s; load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
