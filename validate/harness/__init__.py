"""Measure torch kernels with correctness checks and full provenance (the only package that imports torch).

The flow, one stage a line::

    sweep = load_sweep("cpu-ci")          # validate the YAML sweep spec, expand its cases
    rows = run_sweep(sweep, "auto")       # per case: fresh inputs -> float64 check -> (if it passed) timing
    write_csv(rows, path)                 # one row per case, provenance on every row (validate/data/SCHEMA.md)

Importing this package does not import torch; :func:`run_sweep` does, when called.
"""

from __future__ import annotations

from validate.harness.ops import OPS, OpDecl, op_decl
from validate.harness.schema import COLUMNS, Measurement, read_csv, write_csv
from validate.harness.sweep import Case, Sweep, Timing, load_sweep, sweep_from_dict, sweep_names

__all__ = [
    "COLUMNS", "OPS", "Case", "Measurement", "OpDecl", "Sweep", "Timing", "load_sweep", "op_decl", "read_csv",
    "run_sweep", "sweep_from_dict", "sweep_names", "write_csv",
]  # fmt: skip


def run_sweep(sweep: Sweep, device: str = "auto", **options) -> list[Measurement]:
    """Measure every case of ``sweep``; see :func:`validate.harness.runner.run_sweep` (imports torch)."""
    from validate.harness.runner import run_sweep as run

    return run(sweep, device, **options)
