"""Run a sweep: for every case, check the kernel against float64, then (only if it passed) time it.

The order per case is fixed: prepare fresh random inputs (seed = sweep seed + case index) → call the kernel
once → compare that output with the float64 reference → time it. A kernel whose output is wrong, or that raises,
is recorded as ``failed`` and never timed; one that cannot run here (backend absent, compile unavailable, out
of memory) is ``skipped`` with the reason.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, replace
from datetime import UTC, datetime

import torch

from validate.harness.env import Environment, cache_cpu_allocations, environment, resolve_device
from validate.harness.kernels import KERNELS, TOLERANCE, Kernel, Prepared, Unavailable, unavailable_reason
from validate.harness.schema import Measurement
from validate.harness.sweep import Case, Sweep
from validate.harness.timing import Stats, bench, flush_wanted, make_flush, wait_for_quiet


def run_sweep(
    sweep: Sweep,
    device: str = "auto",
    *,
    kernels: Mapping[str, Kernel] = KERNELS,
    progress: Callable[[str], None] | None = None,
) -> list[Measurement]:
    """Measure every case of ``sweep`` on ``device`` (auto, cpu, cuda, cuda:N); one row per case, in order.

    With ``timing.rounds`` > 1, later passes re-measure (check, then time) the cases whose kept timing was
    contended by other processes on the CPU, and the first ``timing.min_passes`` passes every case; a case keeps
    its fastest pass, and is ``failed`` if a pass failed.
    """
    dev = resolve_device(device)
    env = environment(dev)
    allocator = "cuda-caching" if dev.type == "cuda" else "default"
    if dev.type == "cpu" and sweep.timing.cpu_allocator == "cached":
        allocator = cache_cpu_allocations()
    run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{env.host}"
    flush = make_flush(dev) if flush_wanted(sweep.timing, dev) else None
    best: list[Measurement | None] = [None] * len(sweep.cases)
    passes = [0] * len(sweep.cases)
    for round_ in range(sweep.timing.rounds):
        every = round_ < sweep.timing.min_passes
        todo = [i for i in range(len(sweep.cases)) if every or _contended(best[i], sweep.timing.max_other_cpu)]
        if todo and dev.type == "cpu":
            wait_for_quiet(sweep.timing.max_other_cpu, sweep.timing.quiet_wait_s)
        for index in todo:
            case = sweep.cases[index]
            row = measure_case(case, index, sweep, dev, env, run_id, flush, kernels)
            best[index] = _better(best[index], row)
            passes[index] += 1
            if dev.type == "cuda":
                torch.cuda.empty_cache()
            if progress is not None:
                progress(case.label)
    return [replace(row, rounds=n, allocator=allocator) for row, n in zip(best, passes, strict=True) if row is not None]


def _contended(row: Measurement | None, limit: float) -> bool:
    return row is not None and row.status == "ok" and row.other_cpu is not None and row.other_cpu > limit


def _better(kept: Measurement | None, new: Measurement) -> Measurement:
    if kept is None or new.status != "ok":
        return new
    return new if new.median_s < kept.median_s else kept


def measure_case(
    case: Case,
    index: int,
    sweep: Sweep,
    device: torch.device,
    env: Environment,
    run_id: str,
    flush: Callable[[], None] | None = None,
    kernels: Mapping[str, Kernel] = KERNELS,
) -> Measurement:
    """One row: check ``case`` on ``device``, then time it if the check passed."""
    seed = sweep.seed + index
    tolerance = TOLERANCE[case.dtype]
    row = _Row(case, index, sweep, env, run_id, seed, tolerance, "perf_counter" if device.type == "cpu" else
               "cuda_event", flush is not None)  # fmt: skip
    gen = torch.Generator(device=device).manual_seed(seed)
    try:
        prepared = kernels[case.op](case, device, gen)
    except Exception as exc:  # any error while building inputs is recorded on the row, never swallowed
        return row.not_run(exc, "preparing inputs")
    with prepared.context(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = prepared.run()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        except Exception as exc:  # a kernel that raises is a failed (or unavailable) kernel: recorded, not timed
            return row.not_run(exc, "first call", [str(w.message) for w in caught])
        error = prepared.check(out)
        del out
        if not error <= tolerance:
            return row.failed(prepared, f"wrong result: error {error:.3g} > tolerance {tolerance:g}", error)
        stats = bench(prepared.run, sweep.timing, device, flush)
    return row.ok(prepared, error, stats)


class _Row:
    """Builds the row of one case; the provenance is filled in once."""

    def __init__(self, case: Case, index: int, sweep: Sweep, env: Environment, run_id: str, seed: int,
                 tolerance: float, timer: str, flushed: bool) -> None:  # fmt: skip
        sizes = case.sizes
        seq_len = sizes.get("seq_kv", sizes["cache_len"] + 1 if "cache_len" in sizes else None)
        self.base = {
            "run_id": run_id, "sweep": sweep.name, "case": index, "op": case.op, "family": case.family,
            "role": case.role, "backend": case.backend, "mask": case.mask, "dtype": case.dtype,
            "shape": case.shape_text, "seq_len": seq_len, "check_tolerance": tolerance, "timer": timer,
            "l2_flush": flushed, "seed": seed, **asdict(env),
        }  # fmt: skip

    def _make(self, status: str, reason: str, prepared: Prepared | None, error: float | None,
              stats: Stats | None) -> Measurement:  # fmt: skip
        timed: dict[str, float | int | None] = dict.fromkeys(
            ("n_runs", "warmup_runs", "median_s", "q1_s", "q3_s", "iqr_s", "min_s", "tflops", "gbytes_per_s",
             "other_cpu")
        )  # fmt: skip
        if stats is not None and prepared is not None:
            timed.update(n_runs=stats.n_runs, warmup_runs=stats.warmup_runs, median_s=stats.median_s,
                         q1_s=stats.q1_s, q3_s=stats.q3_s, iqr_s=stats.iqr_s, min_s=stats.min_s,
                         other_cpu=stats.other_cpu,
                         tflops=prepared.flops / stats.median_s / 1e12,
                         gbytes_per_s=prepared.bytes / stats.median_s / 1e9)  # fmt: skip
        return Measurement(
            **self.base, status=status, reason=reason, check_error=error, **timed,
            flops=prepared.flops if prepared else 0.0, bytes=prepared.bytes if prepared else 0.0,
            rounds=1, allocator="", load_avg=_load_avg(), date=datetime.now(UTC).isoformat(timespec="seconds"),
        )  # fmt: skip

    def ok(self, prepared: Prepared, error: float, stats: Stats) -> Measurement:
        return self._make("ok", "", prepared, error, stats)

    def failed(self, prepared: Prepared, reason: str, error: float) -> Measurement:
        return self._make("failed", reason, prepared, error if math.isfinite(error) else math.inf, None)

    def not_run(self, exc: BaseException, stage: str, caught: list[str] | None = None) -> Measurement:
        reason = str(exc) if isinstance(exc, Unavailable) else unavailable_reason(exc)
        if reason is not None:
            notes = "; ".join(dict.fromkeys(" ".join(m.split()) for m in caught or ()))
            return self._make("skipped", f"{reason}{': ' + notes if notes else ''}"[:500], None, None, None)
        text = " ".join(str(exc).split())
        return self._make("failed", f"raised on {stage}: {type(exc).__name__}: {text}"[:500], None, None, None)


def _load_avg() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None
