"""Sweep specs: which kernels to measure, read from YAML and validated before anything runs.

A sweep lists *cases*; each case names an operation (:data:`validate.harness.ops.OPS`), its role, dtypes,
backends, masks and shapes (an explicit list, a cartesian ``grid``, or both) and expands to one
:class:`Case` per combination. Every problem in the file is collected and reported in one
:class:`~einsum.errors.SpecError` naming the file, the line and the dotted key::

    name: example
    timing: {warmup_s: 0.02, budget_s: 0.1, min_runs: 5, max_runs: 50, rounds: 1, l2_flush: auto}
    cases:
      - op: sdpa
        dtypes: [fp32]
        backends: [flash, math]
        masks: [none, causal]
        grid: {batch: [1], heads: [4], seq_q: [256, 512], seq_kv: [256, 512], head_dim: [64]}
        where: seq_q == seq_kv

Built-in sweeps live beside this module in ``sweeps/`` (:func:`sweep_names`).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from einsum.errors import RegistryError, SpecError
from einsum.yamlio import Problems, read_yaml, show
from validate.harness.ops import CALIBRATION_OPS, DTYPES, OPS, ROLES, OpDecl
from validate.harness.schema import CONTENDED

SWEEP_DIR = Path(__file__).with_name("sweeps")
_TOP_KEYS = ("name", "description", "seed", "timing", "cases")
_CASE_KEYS = ("op", "role", "dtypes", "backends", "masks", "shapes", "grid", "where", "note")
_TIMING_KEYS = (
    "warmup_s", "budget_s", "min_runs", "max_runs", "rounds", "min_passes", "max_other_cpu", "quiet_wait_s",
    "l2_flush", "cpu_allocator",
)  # fmt: skip
_WHERE = ("seq_q == seq_kv",)


@dataclass(frozen=True)
class Timing:
    """How each kernel is timed (do_bench style: warm up for a while, then repeat within a budget)."""

    warmup_s: float = 0.025
    """Seconds of warm-up calls after the correctness call."""
    budget_s: float = 0.1
    """Seconds of timed calls to aim for (the run count is derived from a first estimate)."""
    min_runs: int = 5
    """Fewest timed calls, however slow the kernel."""
    max_runs: int = 100
    """Most timed calls, however fast the kernel."""
    rounds: int = 1
    """Most passes over the sweep: a later pass re-checks and re-times only the CPU cases whose kept timing was
    contended (other processes took more than max_other_cpu); each case keeps its fastest pass."""
    min_passes: int = 1
    """Passes that time every case, contended or not (at most ``rounds``): each case keeps its fastest pass, so a
    slowdown that no CPU counter shows (another VM's memory traffic, a clock change) during one pass does not set
    the row, and rows that are later compared (calibration and validation) are each timed at several moments."""
    max_other_cpu: float = CONTENDED
    """Share of the host's CPU time other processes may take during a CPU timing before it counts as contended."""
    quiet_wait_s: float = 0.0
    """Before each pass on a CPU: wait up to this long for other processes to fall below max_other_cpu."""
    l2_flush: str = "auto"
    """``auto`` (flush on GPUs, not on CPUs), ``on`` or ``off``: overwrite a cache-sized buffer before each call."""
    cpu_allocator: str = "cached"
    """CPU: ``cached`` keeps freed memory in the process (glibc mallopt), as the CUDA caching allocator does, so
    outputs above glibc's 32 MiB mmap threshold do not page-fault on every call; ``default`` leaves glibc alone."""


@dataclass(frozen=True)
class Case:
    """One kernel to measure: an operation at one dtype, backend, mask and shape."""

    op: str
    """Operation name (a key of :data:`validate.harness.ops.OPS`)."""
    role: str
    """``validation`` or ``calibration``."""
    dtype: str
    """Element type (fp64, fp32, bf16, fp16)."""
    backend: str
    """Backend (SDPA backend, ``compiled`` for FlexAttention, ``default`` otherwise)."""
    mask: str
    """Mask (none, causal, sliding_window, block_sparse)."""
    shape: tuple[tuple[str, int], ...]
    """Shape keys and sizes, complete (optional keys filled in), in the operation's key order."""

    @property
    def sizes(self) -> dict[str, int]:
        """The shape as a dict."""
        return dict(self.shape)

    @property
    def family(self) -> str:
        return OPS[self.op].family

    @property
    def shape_text(self) -> str:
        """``key=value`` pairs joined by ``;`` (the CSV ``shape`` column)."""
        return ";".join(f"{k}={v}" for k, v in self.shape)

    @property
    def label(self) -> str:
        """Short human label, e.g. ``sdpa/flash/causal fp32 batch=1;heads=4;...``."""
        parts = [self.op] + [p for p in (self.backend, self.mask) if p not in ("default", "none")]
        return f"{'/'.join(parts)} {self.dtype} {self.shape_text}"


@dataclass(frozen=True)
class Sweep:
    """A validated sweep: its cases in file order, expanded."""

    name: str
    """Sweep name (recorded in every row)."""
    description: str
    """What the sweep is for."""
    seed: int
    """Base seed; case i draws its inputs from seed + i."""
    timing: Timing
    """How kernels are timed."""
    cases: tuple[Case, ...] = field(repr=False)
    """Every case, expanded."""
    origin: str = "<dict>"
    """Where the sweep was read from."""

    def only(self, ops: tuple[str, ...]) -> Sweep:
        """The sweep restricted to some operations."""
        return Sweep(self.name, self.description, self.seed, self.timing,
                     tuple(c for c in self.cases if c.op in ops), self.origin)  # fmt: skip


def sweep_names() -> tuple[str, ...]:
    """Names of the built-in sweeps."""
    return tuple(sorted(p.stem for p in SWEEP_DIR.glob("*.yaml")))


def load_sweep(name_or_path: str | Path) -> Sweep:
    """A built-in sweep by name, or a YAML file by path, validated.

    >>> sweep = load_sweep("cpu-ci")
    >>> sweep.name, len(sweep.cases) >= 20
    ('cpu-ci', True)
    """
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        if str(name_or_path) not in sweep_names():
            raise RegistryError(f"unknown sweep {str(name_or_path)!r}; built-in: {', '.join(sweep_names())}"
                                " (or give a .yaml file)")  # fmt: skip
        path = SWEEP_DIR / f"{name_or_path}.yaml"
    return sweep_from_dict(read_yaml(path, str(path)), str(path))


def sweep_from_dict(data: Any, origin: str = "<dict>") -> Sweep:
    """Validate plain data (as loaded from YAML) and expand it; every problem goes into one SpecError, each
    named by its dotted key and, for data read from a file, its line.

    >>> from einsum.yamlio import read_yaml_text_data
    >>> sweep_from_dict(read_yaml_text_data("name: s\\ncases:\\n  - {op: matmul, grid: {m: 0, n: [1], k: [1]}}\\n"),
    ...                 "s.yaml")
    Traceback (most recent call last):
      ...
    einsum.errors.SpecError: s.yaml:3: cases[0].grid.m: expected a non-empty list of positive integers, got 0
    """
    p = Problems(origin, "sweep")
    if not isinstance(data, dict):
        p.add("", f"expected a mapping with keys {', '.join(_TOP_KEYS)}, got {show(data)}")
        raise SpecError(p.message())
    p.mapping(data, "", _TOP_KEYS)
    name = p.value(data, "", "name", "text")
    description = data.get("description", "")
    seed = p.value(data, "", "seed", (lambda v: _is_count(v, zero=True), "a non-negative integer"), default=0)
    timing = _read_timing(data.get("timing", {}), p, data)
    raw_cases = data.get("cases")
    cases: list[Case] = []
    if not isinstance(raw_cases, list) or not raw_cases:
        p.add("cases", f"expected a non-empty list of cases, got {show(raw_cases)}", data, "cases")
    else:
        for i in range(len(raw_cases)):
            cases.extend(_read_case(raw_cases, i, p))
    p.raise_if_any()
    return Sweep(name, str(description), seed, timing, tuple(cases), origin)


def _is_count(v: Any, zero: bool = False) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and (v >= 0 if zero else v > 0)


_SECONDS = (lambda v: isinstance(v, int | float) and not isinstance(v, bool) and v >= 0, "seconds >= 0")


def _read_timing(raw: Any, p: Problems, top: Mapping) -> Timing:
    if not isinstance(raw, dict):
        p.add("timing", f"expected a mapping with keys {', '.join(_TIMING_KEYS)}, got {show(raw)}", top, "timing")
        return Timing()
    p.mapping(raw, "timing", _TIMING_KEYS)
    values: dict[str, Any] = {}
    for key in ("warmup_s", "budget_s", "max_other_cpu", "quiet_wait_s"):
        if key in raw and (v := p.value(raw, "timing", key, _SECONDS)) is not None:
            values[key] = float(v)
    for key in ("min_runs", "max_runs", "rounds", "min_passes"):
        if key in raw and (v := p.value(raw, "timing", key, "count")) is not None:
            values[key] = v
    if "l2_flush" in raw:
        flush = raw["l2_flush"]
        if isinstance(flush, bool):  # YAML reads on/off unquoted as true/false
            flush = "on" if flush else "off"
        if flush not in ("auto", "on", "off"):
            p.add("timing.l2_flush", f"expected auto, on or off, got {show(raw['l2_flush'])}", raw, "l2_flush")
        else:
            values["l2_flush"] = flush
    if "cpu_allocator" in raw:
        if raw["cpu_allocator"] not in ("cached", "default"):
            what = f"expected cached or default, got {show(raw['cpu_allocator'])}"
            p.add("timing.cpu_allocator", what, raw, "cpu_allocator")
        else:
            values["cpu_allocator"] = raw["cpu_allocator"]
    timing = Timing(**values)
    if timing.min_runs > timing.max_runs:
        at = "min_runs" if "min_runs" in raw else "max_runs"
        p.add("timing", f"min_runs {timing.min_runs} exceeds max_runs {timing.max_runs}", raw, at)
    if timing.min_passes > timing.rounds:
        at = "min_passes" if "min_passes" in raw else "rounds"
        p.add("timing", f"min_passes {timing.min_passes} exceeds rounds {timing.rounds}", raw, at)
    return timing


def _choices(raw: Mapping, key: str, default: Any, path: str, allowed: tuple[str, ...], p: Problems) -> tuple[str, ...]:
    """``raw[key]`` (or ``default``): one or more names from ``allowed``, in order, without repeats."""
    chosen = raw.get(key, default)
    if isinstance(chosen, str):
        chosen = [chosen]
    if not isinstance(chosen, list) or not chosen:
        p.add(path, f"expected a non-empty list from {', '.join(allowed)}, got {show(chosen)}", raw, key)
        return ()
    bad = [x for x in chosen if x not in allowed]
    if bad:
        p.add(path, f"unknown {', '.join(map(str, bad))}; allowed: {', '.join(allowed)}", raw, key)
        return ()
    return tuple(dict.fromkeys(chosen))


def _read_case(raw_cases: list, i: int, p: Problems) -> list[Case]:
    raw, path, at = raw_cases[i], f"cases[{i}]", (raw_cases, i)
    if not isinstance(raw, dict):
        p.add(path, f"expected a mapping with keys {', '.join(_CASE_KEYS)}, got {show(raw)}", *at)
        return []
    p.mapping(raw, path, _CASE_KEYS)
    op_name = raw.get("op")
    if not isinstance(op_name, str) or op_name not in OPS:
        p.add(f"{path}.op", f"unknown operation {op_name!r:.60}; known: {', '.join(OPS)}", raw, "op")
        return []
    op = OPS[op_name]
    n_before = len(p)
    role = raw.get("role", "validation")
    if role not in ROLES:
        p.add(f"{path}.role", f"expected one of {', '.join(ROLES)}, got {show(role)}", raw, "role")
    elif role == "calibration" and op.name not in CALIBRATION_OPS:
        p.add(f"{path}.role", f"only {', '.join(CALIBRATION_OPS)} may calibrate (microbenchmarks), not {op.name}",
              raw, "role")  # fmt: skip
    dtypes = _choices(raw, "dtypes", ["fp32"], f"{path}.dtypes", DTYPES, p)
    backends = _choices(raw, "backends", list(op.backends[:1]), f"{path}.backends", op.backends, p)
    masks = _choices(raw, "masks", list(op.masks[:1]), f"{path}.masks", op.masks, p)
    where = raw.get("where")
    if where is not None and where not in _WHERE:
        p.add(f"{path}.where", f"expected one of {', '.join(_WHERE)}, got {show(where)}", raw, "where")
    shapes = _read_shapes(raw, path, op, p, at)
    if len(p) > n_before:
        return []
    if where == "seq_q == seq_kv":
        shapes = [s for s in shapes if s["seq_q"] == s["seq_kv"]]
    cases = []
    for shape, dtype, backend, mask in itertools.product(shapes, dtypes, backends, masks):
        problem = _shape_problem(op, shape, mask)
        if problem:
            p.add(path, f"shape {_text(shape)} with mask {mask}: {problem}", *at)
            continue
        full = _complete(op, shape, mask)
        cases.append(Case(op.name, role, dtype, backend, mask, tuple(full.items())))
    if not cases and len(p) == n_before:
        p.add(path, "expands to no case (check where:)", *at)
    return cases


def _read_shapes(raw: Mapping, path: str, op: OpDecl, p: Problems, at: tuple) -> list[dict[str, int]]:
    keys = op.shape + tuple(op.optional)
    shapes: list[dict[str, int]] = []
    if "shapes" not in raw and "grid" not in raw:
        p.add(path, f"give shapes: (a list) or grid: (lists per key) with keys {', '.join(op.shape)}", *at)
        return []
    listed = raw.get("shapes", [])
    if not isinstance(listed, list):
        p.add(f"{path}.shapes", f"expected a list of mappings, got {show(listed)}", raw, "shapes")
        listed = []
    for j, item in enumerate(listed):
        if _check_keys(item, f"{path}.shapes[{j}]", op, keys, p, _is_count, (listed, j)):
            shapes.append(dict(item))
    if "grid" in raw:
        grid = raw["grid"]
        ok = _check_keys(grid, f"{path}.grid", op, keys, p,
                         lambda v: isinstance(v, list) and bool(v) and all(_is_count(x) for x in v),
                         (raw, "grid"))  # fmt: skip
        if ok:
            names = list(grid)
            shapes.extend(dict(zip(names, combo, strict=True)) for combo in itertools.product(*grid.values()))
    return shapes


def _check_keys(item: Any, path: str, op: OpDecl, keys: tuple[str, ...], p: Problems, valid, at: tuple) -> bool:
    if not isinstance(item, dict):
        p.add(path, f"expected a mapping with keys {', '.join(op.shape)}, got {show(item)}", *at)
        return False
    n = len(p)
    p.mapping(item, path, keys)
    missing = [k for k in op.shape if k not in item]
    if missing:
        p.add(path, f"missing {', '.join(missing)}; {op.name} needs {', '.join(op.shape)}", *at)
    for key, value in item.items():
        if key in keys and not valid(value):
            grid = path.rsplit(".", 1)[-1] == "grid"
            what = "a non-empty list of positive integers" if grid else "a positive integer"
            p.add(f"{path}.{key}", f"expected {what}, got {show(value)}", item, key)
    return len(p) == n


def _shape_problem(op: OpDecl, shape: Mapping[str, int], mask: str) -> str | None:
    if "kv_heads" in op.optional and "kv_heads" in shape and shape["heads"] % shape["kv_heads"]:
        return f"heads {shape['heads']} is not a multiple of kv_heads {shape['kv_heads']}"
    if mask != "none" and "seq_q" in shape and shape["seq_q"] != shape["seq_kv"]:
        return "masked attention needs seq_q == seq_kv here (torch's causal mask is top-left aligned)"
    if mask == "sliding_window" and "window" not in shape:
        return "sliding_window needs window (keys within window positions before the query, itself included)"
    if mask == "block_sparse" and shape.get("seq_kv", 0) % shape.get("block", op.optional.get("block") or 1):
        return "block_sparse needs seq_kv to be a multiple of block"
    return None


def _complete(op: OpDecl, shape: Mapping[str, int], mask: str) -> dict[str, int]:
    full = {k: shape[k] for k in op.shape}
    for key, default in op.optional.items():
        if key == "kv_heads":
            full[key] = shape.get(key, shape["heads"])
        elif key == "window" and mask == "sliding_window":
            full[key] = shape[key]
        elif key == "block" and mask == "block_sparse":
            full[key] = shape.get(key, default)
    return full


def _text(shape: Mapping[str, int]) -> str:
    return ";".join(f"{k}={v}" for k, v in shape.items())
