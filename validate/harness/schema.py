"""One measured row and its CSV form (the columns are documented in ``validate/data/SCHEMA.md``).

Every row carries its full provenance (device, clocks, driver and library versions, host, date), so a CSV
can be read on its own. Rows that were not timed (``failed``, ``skipped``) leave the timing columns empty.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from einsum.errors import SpecError

STATUSES = ("ok", "failed", "skipped")
CONTENDED = 0.15
"""A CPU timing during which other processes took more than this share of the host is *contended*: later
passes re-measure it, calibration does not use it, and the report lists it apart instead of scoring it."""


@dataclass(frozen=True)
class Measurement:
    """One kernel at one shape: its correctness check, its timing statistics and where it ran."""

    run_id: str
    """Identifier shared by every row of one harness run (UTC start time and host)."""
    sweep: str
    """Name of the sweep spec the row came from."""
    case: int
    """Index of the case in the expanded sweep."""
    op: str
    """Operation (matmul, bmm, softmax, unfused_attention, sdpa, flex_attention, decode, copy, exp)."""
    family: str
    """Kernel family the report groups by (gemm, softmax, unfused, sdpa, flex, decode, copy, exp)."""
    role: str
    """``calibration`` (microbenchmark rows that calibrate fits) or ``validation`` (rows the model is judged on)."""
    backend: str
    """Backend (flash, efficient, cudnn, math, auto for SDPA and decode; compiled for Flex; default otherwise)."""
    mask: str
    """Mask (none, causal, sliding_window, block_sparse)."""
    dtype: str
    """Element type of inputs and outputs (fp64, fp32, bf16, fp16)."""
    shape: str
    """Shape as ``key=value`` pairs joined by ``;`` (keys per operation: SCHEMA.md)."""
    seq_len: int | None
    """Key/value sequence length for attention rows (seq_kv; cache_len + 1 for decode), else empty."""
    status: str
    """``ok`` (checked and timed), ``failed`` (wrong result or error: not timed), ``skipped`` (unavailable here)."""
    reason: str
    """Why a row failed or was skipped; empty for ok rows."""
    check_error: float | None
    """max |output - float64 reference| / max |reference| over the checked rows; empty if the kernel never ran."""
    check_tolerance: float | None
    """Largest accepted check_error for this dtype."""
    n_runs: int | None
    """Timed calls (in the kept round)."""
    rounds: int
    """Passes that measured this case: a later pass re-checks and re-times a CPU case whose timing was contended
    (other_cpu above the sweep's max_other_cpu); the row keeps the pass with the lowest median."""
    warmup_runs: int | None
    """Untimed calls after the correctness call and before timing."""
    median_s: float | None
    """Median time of one call, seconds."""
    q1_s: float | None
    """First quartile of the call times, seconds."""
    q3_s: float | None
    """Third quartile of the call times, seconds."""
    iqr_s: float | None
    """Interquartile range q3_s - q1_s, seconds."""
    min_s: float | None
    """Fastest call, seconds."""
    flops: float
    """Useful floating-point operations of one call (0 for softmax, copy, exp)."""
    bytes: float
    """Bytes one call must move at least (inputs read once, outputs written once)."""
    tflops: float | None
    """flops / median_s / 1e12."""
    gbytes_per_s: float | None
    """bytes / median_s / 1e9 (GB/s, 10^9 bytes)."""
    timer: str
    """``perf_counter`` (CPU, time.perf_counter around each call) or ``cuda_event`` (CUDA events)."""
    l2_flush: bool
    """Whether a cache-sized buffer was overwritten before each timed call."""
    allocator: str
    """``cuda-caching`` (torch's CUDA caching allocator), ``glibc-cached`` (CPU: glibc keeps freed blocks, so
    outputs above 32 MiB do not page-fault on every call) or ``default`` (CPU, glibc as configured)."""
    seed: int
    """Seed of the case's inputs (torch.randn)."""
    device_kind: str
    """``cpu`` or ``cuda``."""
    device_name: str
    """Device name as the driver reports it (CPU model name for CPUs)."""
    arch: str
    """GPU compute capability (e.g. sm_90) or the CPU vector ISA torch dispatches to (e.g. AVX512)."""
    compute_units: int
    """Streaming multiprocessors (GPU) or threads torch used (CPU)."""
    clock_mhz: float | None
    """SM clock (GPU, nvidia-smi) or current core clock (CPU, /proc/cpuinfo) when the run started, if readable."""
    max_clock_mhz: float | None
    """Maximum SM clock (GPU) or CPU maximum frequency, if readable."""
    memory_bytes: int | None
    """Device memory (GPU) or system memory (CPU), bytes."""
    driver: str
    """GPU driver version, empty on CPU."""
    cuda: str
    """CUDA version torch was built with, empty on CPU builds."""
    cudnn: str
    """cuDNN version, empty when absent."""
    torch: str
    """torch version."""
    python: str
    """Python version."""
    host: str
    """Host name."""
    load_avg: float | None
    """1-minute load average of the host when the row was measured (this process's threads included)."""
    other_cpu: float | None
    """Share (0-1) of the host's CPU time that other processes and hypervisor steal took while the kept timing
    ran (from /proc/stat; 10 ms resolution); empty where unreadable."""
    date: str
    """UTC time the row was measured (ISO 8601)."""

    @property
    def contended(self) -> bool:
        """Whether other processes took more than :data:`CONTENDED` of the host while this row was timed."""
        return self.other_cpu is not None and self.other_cpu > CONTENDED


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Measurement))
_INT = {"case", "seq_len", "n_runs", "rounds", "warmup_runs", "seed", "compute_units", "memory_bytes"}
_FLOAT = {"check_error", "check_tolerance", "median_s", "q1_s", "q3_s", "iqr_s", "min_s", "flops", "bytes",
          "tflops", "gbytes_per_s", "clock_mhz", "max_clock_mhz", "load_avg", "other_cpu"}  # fmt: skip
_OPTIONAL = {f.name for f in fields(Measurement) if "None" in str(f.type)}


def write_csv(rows: Iterable[Measurement], path: str | Path) -> Path:
    """Write rows with a header of :data:`COLUMNS`; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(v) for k, v in asdict(row).items()})
    return path


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.6g}"
    return str(value)


def read_csv(path: str | Path) -> list[Measurement]:
    """Rows of a measured CSV, typed; a missing column or a bad cell raises SpecError naming file and line."""
    path = Path(path)
    try:
        f = path.open(newline="")
    except OSError as exc:
        raise SpecError(f"cannot read measurements {path}: {exc.strerror}") from None
    with f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise SpecError(f"{path}: not a measurement CSV: missing columns {', '.join(missing)} (see SCHEMA.md)")
        rows = []
        for line, raw in enumerate(reader, start=2):
            try:
                rows.append(Measurement(**{c: _parse(c, raw[c]) for c in COLUMNS}))
            except ValueError as exc:
                raise SpecError(f"{path}:{line}: {exc}") from None
    return rows


def _parse(column: str, text: str):
    if text == "" and column in _OPTIONAL:
        return None
    try:
        if column in _INT:
            return int(text)
        if column in _FLOAT:
            return float(text)
    except ValueError:
        raise ValueError(f"column {column}: expected a number, got {text!r}") from None
    if column == "l2_flush":
        if text not in ("True", "False"):
            raise ValueError(f"column l2_flush: expected True or False, got {text!r}")
        return text == "True"
    if column == "status" and text not in STATUSES:
        raise ValueError(f"column status: expected one of {', '.join(STATUSES)}, got {text!r}")
    return text
