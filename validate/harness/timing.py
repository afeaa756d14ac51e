"""Timing one call, ``triton.testing.do_bench`` style, with the right clock for the device.

Method: estimate the call's time from a few calls, warm up for ``warmup_s``, then time
``clamp(budget_s / estimate, min_runs, max_runs)`` calls one by one (optionally overwriting a cache-sized
buffer before each), and keep median, quartiles and minimum. On a GPU every call sits between two CUDA events
and the host synchronises once at the end (launch overhead is hidden, as in do_bench); on a CPU
``time.perf_counter`` brackets each call, which includes torch's dispatch overhead.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from validate.harness.sweep import Timing

FLUSH_BYTES = 256 * 2**20
"""Size of the buffer overwritten before each timed call when flushing (as do_bench: 256 MiB)."""
_ESTIMATE_CALLS = 3


@dataclass(frozen=True)
class Stats:
    """Timing statistics of one kernel, seconds."""

    n_runs: int
    warmup_runs: int
    median_s: float
    q1_s: float
    q3_s: float
    min_s: float
    other_cpu: float | None = None
    """Share of the host's CPU time that other processes used meanwhile (0..1; None where unreadable)."""

    @property
    def iqr_s(self) -> float:
        return self.q3_s - self.q1_s


def flush_wanted(timing: Timing, device: torch.device) -> bool:
    """Whether to flush caches before each call (``auto``: on GPUs only)."""
    return timing.l2_flush == "on" or (timing.l2_flush == "auto" and device.type == "cuda")


def make_flush(device: torch.device) -> Callable[[], None]:
    """A call that overwrites :data:`FLUSH_BYTES` (or twice the GPU's L2, if larger) on ``device``."""
    size = FLUSH_BYTES
    if device.type == "cuda":
        size = max(size, 2 * getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0))
    buffer = torch.empty(size // 4, dtype=torch.int32, device=device)

    def flush() -> None:
        buffer.fill_(1)

    return flush


def bench(fn: Callable[[], object], timing: Timing, device: torch.device, flush: Callable[[], None] | None) -> Stats:
    """Time ``fn`` (already called once by the correctness check) on ``device``; on a CPU, also measure how much
    of the machine other processes took meanwhile (``other_cpu``)."""
    before = _cpu_sample() if device.type == "cpu" else None
    stats = _bench_once(fn, timing, device, flush)
    return replace(stats, other_cpu=_other_cpu(before, _cpu_sample() if before else None))


def _bench_once(fn: Callable[[], object], timing: Timing, device: torch.device,
                flush: Callable[[], None] | None) -> Stats:  # fmt: skip
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else _noop
    sync()
    start = time.perf_counter()
    for _ in range(_ESTIMATE_CALLS):
        fn()
    sync()
    estimate = max((time.perf_counter() - start) / _ESTIMATE_CALLS, 1e-7)
    warmup = math.ceil(timing.warmup_s / estimate) if timing.warmup_s > 0 else 0
    for _ in range(warmup):
        fn()
    n = int(min(max(timing.budget_s / estimate, timing.min_runs), timing.max_runs))
    times = _cuda_times(fn, n, flush) if cuda else _cpu_times(fn, n, flush)
    q1, median, q3 = np.percentile(times, [25, 50, 75])
    return Stats(n, warmup + _ESTIMATE_CALLS, float(median), float(q1), float(q3), float(times.min()))


def _noop() -> None:
    return None


def wait_for_quiet(limit: float, timeout_s: float, window_s: float = 1.0) -> float | None:
    """Wait (up to ``timeout_s``) until other processes take at most ``limit`` of the host over ``window_s``;
    returns the last share seen (None where /proc/stat is unreadable)."""
    deadline = time.perf_counter() + timeout_s
    share = None
    while time.perf_counter() < deadline:
        before = _cpu_sample()
        time.sleep(window_s)
        share = _other_cpu(before, _cpu_sample())
        if share is None or share <= limit:
            break
    return share


def _cpu_sample() -> tuple[float, float, float] | None:
    """(busy CPU seconds of the whole host incl. steal, this process's CPU seconds, wall seconds), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [float(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0.0)  # all but idle and iowait
    if len(fields) > 8:
        busy -= sum(fields[8:10])  # guest time is already counted in user
    own = os.times()
    return busy / ticks, own.user + own.system, time.perf_counter()


def _other_cpu(before: tuple[float, float, float] | None, after: tuple[float, float, float] | None) -> float | None:
    if before is None or after is None or after[2] <= before[2]:
        return None
    others = (after[0] - before[0]) - (after[1] - before[1])
    return round(min(1.0, max(0.0, others / ((after[2] - before[2]) * (os.cpu_count() or 1)))), 3)


def _cpu_times(fn: Callable[[], object], n: int, flush: Callable[[], None] | None) -> np.ndarray:
    times = np.empty(n)
    for i in range(n):
        if flush is not None:
            flush()
        start = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - start
    return times


def _cuda_times(fn: Callable[[], object], n: int, flush: Callable[[], None] | None) -> np.ndarray:
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    for start, end in zip(starts, ends, strict=True):
        if flush is not None:
            flush()
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return np.array([s.elapsed_time(e) / 1e3 for s, e in zip(starts, ends, strict=True)])
