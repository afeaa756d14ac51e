"""Sweep specs: YAML -> validated, frozen dataclasses.

A sweep varies architecture parameters (any field of a preset, by the dotted paths of
:func:`simulator.specs.with_overrides`) and workloads (cascades x models x sequence lengths), maps every
point with one strategy and records metrics. Example (``examples/sweeps/fusemax-pe-buffer.yaml``)::

    name: fusemax-pe-buffer                # identifier of the sweep inside a store
    arch: fusemax-cloud                    # a preset name, or a .yaml path relative to this file
    overrides: {compat: corrected}         # optional: fixed values applied to the preset first
    workload: {cascades: [fusemax], models: [BERT], seq_lens: [4K]}
    mapping: {strategy: fixed-binding, config: binding}
    axes:
      pe_dim:                              # a named axis sets one value at several paths
        paths: [arrays.pe_2d.rows, arrays.pe_2d.cols, arrays.pe_1d.pes]
        values: [16, 32, 64, 128, 256, 512]
      buffer_words:                        # a range: count -> that many grid values, else continuous
        paths: [levels.global_buffer.capacity_words]
        min: 65536
        max: 33554432
        scale: log                         # linear (default) or log
        count: 10
      levels.dram.bandwidth_bytes_per_s: [2.0e11, 4.0e11]   # an axis named by its path: a list of values
    derived:                               # per-point values computed from the axes (one expression each)
      levels.global_buffer.area_um2: base('levels.global_buffer.area_um2') * buffer_words / 8388608
    sampling: {method: grid}               # grid | random | lhs (Latin hypercube); random/lhs take points, seed
    metrics: [latency_s, energy_j, area_mm2]

A **device sweep** runs a device strategy (``sdpa``: one layer's attention kernel; ``llm``: a whole forward pass,
see :mod:`mappers.sweep.strategies`) on the values of a ``device`` axis, for zoo models (:mod:`workloads.llm`)
at sequence lengths. Other axes may sweep the strategy's parameters (an axis named like the parameter) and
device fields (dotted paths into the device YAML, applied to every device). Example
(``examples/sweeps/gpu-seq.yaml``)::

    name: gpu-seq
    workload: {models: [llama3-8b], seq_lens: [512, 1K, 2K, 4K, 8K, 16K, 32K]}
    mapping: {strategy: sdpa, batch: 4, dtype: bf16}   # fixed strategy parameters
    axes:
      device: [a100-sxm, h100-sxm, h200]   # device ids, .yaml paths (llm also: spatial-array presets)
      kernel: [fa2, fa3, unfused]          # an axis named like a strategy parameter sweeps it
      causal: [true, false]
      # dram_bytes_per_s: [2.0e12, 4.0e12] # a device field (efficiency.gemm, tensor_tflops.bf16, ...)
    metrics: [latency_s, tflops, dram_bytes, bound]

Validation collects every problem and raises one :class:`~einsum.errors.SpecError` whose lines read
``FILE:LINE: dotted.key: what is wrong; what is allowed``. The architecture paths are checked against the
preset (every device of a device sweep): an unknown path, a value of the wrong type (an integer field given
2.5) or a value the preset's own validation refuses is reported at the axis that sets it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from einsum.errors import AttnscopeError, SpecError
from einsum.yamlio import LineDict, Problems, join, line_of, read_yaml_text, show
from mappers.sweep.expressions import MISSING, Expression, ExpressionError, base_value
from mappers.sweep.metrics import METRICS, metric_names, resolve_metric, stored_metrics
from mappers.sweep.store import BASE_COLUMNS
from mappers.sweep.strategies import STRATEGIES, Strategy, get_strategy
from mappers.sweep.targets import Target, device_with_overrides, fingerprint, resolve_target, valid_targets
from simulator.specs import ARCHITECTURES, ArchSpec, load_arch, with_overrides
from workloads.models import MODEL_NAMES, get_model, is_config_path
from workloads.registry import CASCADES, parse_size

SAMPLING_METHODS = ("grid", "random", "lhs")
SCALES = ("linear", "log")
DEFAULT_METRICS = ("latency_s", "energy_j", "dram_bytes", "area_mm2")
DEVICE_AXIS = "device"
"""The axis that lists a device sweep's targets."""
_TOP_KEYS = (
    "name",
    "description",
    "arch",
    "overrides",
    "workload",
    "mapping",
    "axes",
    "derived",
    "sampling",
    "metrics",
)
EXACT_COUNT = 100_000
"""A range with a larger count is counted as count values (not computed) when sizing a sweep."""
_PROBED = 1000
"""A range with more grid values is checked against the preset at its two ends only."""
DEFAULT_MAX_POINTS = 1_000_000
"""The most points a sweep may have unless ``--max-points`` or ``sampling.max_points`` raises it."""
_AXIS_KEYS = ("paths", "values", "min", "max", "scale", "count", "integer")
_WORKLOAD_KEYS = ("cascades", "models", "seq_lens")
_SAMPLING_KEYS = ("method", "points", "seed", "max_points")
_IDENT = re.compile(r"[a-z_][a-z0-9_]*\Z")
_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\[\d+\])*(?:\.[A-Za-z_][A-Za-z0-9_]*(?:\[\d+\])*)+\Z")
Scalar = int | float | str | bool


@dataclass(frozen=True)
class Axis:
    """One swept parameter: the same value is written at every one of its architecture paths."""

    name: str
    """Column name in the store (an identifier; a path-named axis has its dots turned into underscores)."""
    paths: tuple[str, ...]
    """Dotted paths into the architecture (as :func:`simulator.specs.with_overrides` takes them)."""
    values: tuple[Scalar, ...] | None = None
    """The discrete values (None for a range)."""
    min: float | None = None
    """Lower end of a range (inclusive)."""
    max: float | None = None
    """Upper end of a range (inclusive)."""
    scale: str = "linear"
    """How a range is spread: linear or log."""
    count: int | None = None
    """Grid values of a range; None = continuous (random and lhs sampling only)."""
    integer: bool = False
    """Range values are rounded to integers."""
    role: str = "path"
    """``path``: sets preset fields at paths; ``device``: the targets of a device sweep; ``param``: a strategy
    parameter (named like it)."""

    @property
    def discrete(self) -> tuple[Scalar, ...] | None:
        """The values this axis takes, or None for a continuous range."""
        if self.values is not None:
            return self.values
        if self.count is None:
            return None
        if self.count == 1:
            return (self._convert(self.min),)
        u = [i / (self.count - 1) for i in range(self.count)]
        return tuple(dict.fromkeys(self.at(x) for x in u))  # rounding may merge neighbours

    @property
    def size(self) -> int | None:
        """How many values a grid takes from this axis, by formula (a range's ``count`` bounds it: rounding may
        merge neighbours, counted only when the count is small); None for a continuous range."""
        if self.values is not None:
            return len(self.values)
        if self.count is None:
            return None
        return len(self.discrete) if self.count <= EXACT_COUNT else self.count

    @property
    def first(self) -> Scalar:
        """The axis's first value (a range's lower end)."""
        return self.values[0] if self.values is not None else self._convert(float(self.min))

    def at(self, u: float) -> Scalar:
        """The value at fraction u in [0, 1] of a range (linear or log spacing, rounded if integer)."""
        lo, hi = float(self.min), float(self.max)
        x = math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))) if self.scale == "log" else lo + u * (hi - lo)
        return self._convert(min(max(x, lo), hi))

    def _convert(self, x: float) -> Scalar:
        return round(x) if self.integer else float(x)


@dataclass(frozen=True)
class Derived:
    """A per-point value computed from the axes and written at an architecture path."""

    path: str
    """Dotted path it sets."""
    column: str
    """Column name in the store."""
    expr: str
    """The expression: numbers, + - * / // % **, axis names, min/max/round/int/float/sqrt/log2/ceil/floor,
    ``base('path')`` (the preset's value) and ``value('path')`` (this point's value)."""
    integer: bool = False
    """The path holds an integer: the result must be integral."""


@dataclass(frozen=True)
class WorkloadSpec:
    """The workloads every point is evaluated on (their cross product)."""

    cascades: tuple[str, ...]  # () for a device sweep (its strategy runs the models' layers)
    models: tuple[str, ...]  # zoo models (workloads.models): ids or study labels, or config.json paths (absolute)
    seq_lens: tuple[int, ...]


@dataclass(frozen=True)
class MappingSpec:
    """How every point is mapped: a registered strategy and its parameters."""

    strategy: str
    params: tuple[tuple[str, Any], ...]

    @property
    def param_dict(self) -> dict[str, Any]:
        return dict(self.params)


@dataclass(frozen=True)
class Sampling:
    """How the architecture points are drawn from the axes."""

    method: str  # grid | random | lhs
    points: int | None  # random and lhs: how many architecture points
    seed: int  # random and lhs: numpy Generator seed
    max_points: int | None = None  # the size limit the spec sets (None: DEFAULT_MAX_POINTS)


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep."""

    name: str
    description: str
    arch_ref: str  # as written: preset name or path ("" for a device sweep)
    arch: ArchSpec | None = field(compare=False)  # the preset with the fixed overrides applied (None: device sweep)
    overrides: tuple[tuple[str, Any], ...]  # fixed overrides applied to the preset (to every device)
    axes: tuple[Axis, ...]
    derived: tuple[Derived, ...]
    workload: WorkloadSpec
    mapping: MappingSpec
    sampling: Sampling
    metrics: tuple[str, ...]  # reported metrics (every stored metric is computed anyway)
    origin: str = field(default="<dict>", compare=False)
    text: str = field(default="", compare=False, repr=False)  # the YAML as given, kept with the store
    targets: tuple[Target, ...] = ()  # device sweeps: the device axis's values, resolved
    files: tuple[tuple[str, str], ...] = ()
    """File values of the strategy's file parameters as written -> their absolute paths (read relative to the spec)."""

    @property
    def columns(self) -> tuple[str, ...]:
        """Store columns of the axes and derived values, in spec order."""
        return tuple(a.name for a in self.axes) + tuple(d.column for d in self.derived)

    @property
    def strategy(self) -> Strategy:
        """The registered strategy that evaluates every point."""
        return get_strategy(self.mapping.strategy)

    @property
    def point_kind(self) -> str:
        """``arch`` (variants of one architecture) or ``device`` (targets of the device axis)."""
        return self.strategy.point_kind

    def metric_columns(self) -> dict[str, str]:
        """Metric column -> SQL type of every metric the points store (all computed, whatever ``metrics`` says)."""
        if self.point_kind == "device":
            return {m: METRICS[m].sql_type for m in self.strategy.metrics}
        return dict.fromkeys(stored_metrics(self.arch), "REAL")

    def fingerprint(self) -> str:
        """SHA-256 of what the points are evaluated on: the architecture, or the device axis's targets."""
        if self.arch is not None:
            return fingerprint(self.arch.to_dict())
        return fingerprint({t.name: t.fingerprint for t in self.targets})


# ------------------------------------------------------------------------------------------------ validation


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def read_sweep_file(path: str | Path) -> SweepSpec:
    """Read and validate a sweep spec; every problem is named in one SpecError (file:line: key: what).

    >>> spec = read_sweep_file("examples/sweeps/fusemax-pe-buffer.yaml")
    >>> spec.name, spec.sampling.method, [a.name for a in spec.axes]
    ('fusemax-pe-buffer', 'grid', ['pe_dim', 'buffer_words'])
    """
    origin = str(path)
    data, text = read_yaml_text(path, origin)
    return sweep_from_dict(data, origin, Path(path).parent, text)


def sweep_from_dict(data: Any, origin: str = "<dict>", base_dir: Path | None = None, text: str = "") -> SweepSpec:
    """Validate plain data (as loaded from YAML) and build the spec; arch paths are relative to base_dir."""
    p = Problems(origin, "sweep spec")
    if not isinstance(data, dict):
        raise SpecError(f"{origin}: expected a mapping with keys {', '.join(_TOP_KEYS)}, got {show(data)}")
    p.mapping(data, "", _TOP_KEYS)
    name = data.get("name")
    if not (isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name)):
        what = "missing" if "name" not in data else f"got {show(name)}"
        p.add("name", f"{what}; expected letters, digits, '-', '_', '.' (e.g. fusemax-pe-buffer)", data, "name")
    description = data.get("description", "")
    if not isinstance(description, str):
        p.add("description", f"expected text, got {show(description)}", data, "description")
    base_dir = base_dir or Path(".")
    files = _resolve_files(p, data, base_dir)
    raw_axes = data.get("axes")
    has_devices = isinstance(raw_axes, dict) and DEVICE_AXIS in raw_axes
    strategy, mapping, given = _read_mapping(p, data, has_devices)
    kind = strategy.point_kind if strategy is not None else ("device" if has_devices else "arch")
    arch_ref, arch, space, targets = "", None, None, []
    if kind == "arch":
        arch_ref, arch = _read_arch(p, data, base_dir)
    elif "arch" in data:
        p.add("arch", f"a device sweep (strategy {mapping.strategy}) runs on the targets of axes.device; remove arch"
              + (" (a spatial-array preset can be a value of the device axis)" if strategy.arch_presets else ""),
              data, "arch")  # fmt: skip
    overrides = _read_overrides(p, data)
    if arch is not None and overrides:
        try:
            arch = with_overrides(arch, dict(overrides))
        except AttnscopeError as exc:
            p.add("overrides", _strip(str(exc), arch), data, "overrides")
            arch = None
    workload = _read_workload(p, data, strategy, kind, base_dir)
    sampling = _read_sampling(p, data)
    if kind == "device":
        targets = _read_targets(p, data, strategy, base_dir)
        space = _DeviceSpace(targets) if targets is not None else None
        if space is not None and overrides:
            problem = space.problem("overrides") or space.refused(dict(overrides))
            if problem:
                p.add("overrides", problem, data, "overrides")
    elif arch is not None:
        space = _ArchSpace(arch)
    if has_devices and kind == "arch" and strategy is not None:
        needs = f"a device axis needs a device strategy (mapping.strategy: {', '.join(_device_strategies())})"
        p.add(f"axes.{DEVICE_AXIS}", f"strategy {strategy.name} maps the architecture given by arch; {needs}",
              raw_axes, DEVICE_AXIS)  # fmt: skip
    axes = _read_axes(p, data, space, sampling.method, strategy, kind)
    for axis in axes:
        if axis.role == "param" and axis.name in given:
            p.add(f"axes.{axis.name}", f"the strategy parameter {axis.name} is also set under mapping; set it in one "
                  "place", raw_axes, axis.name)  # fmt: skip
    derived = _read_derived(p, data, arch, axes, kind)
    metrics = _read_metrics(p, data, arch, strategy if kind == "device" else None)
    columns = [a.name for a in axes] + [d.column for d in derived]
    for column in dict.fromkeys(c for c in columns if columns.count(c) > 1):
        p.add("axes", f"two axes or derived values share the column name {column!r}; rename one", data, "axes")
    own_metrics = strategy.metrics if kind == "device" and strategy is not None else metric_names(arch)
    taken = {*BASE_COLUMNS, "sweep", "idx", *own_metrics}
    for column in sorted(set(columns) & taken):
        p.add("axes", f"column name {column!r} is taken by the store or a metric; rename the axis", data, "axes")
    p.raise_if_any()
    return SweepSpec(
        name=name,
        description=description.strip(),
        arch_ref=arch_ref,
        arch=arch,
        overrides=overrides,
        axes=tuple(axes),
        derived=tuple(derived),
        workload=workload,
        mapping=mapping,
        sampling=sampling,
        metrics=metrics,
        origin=origin,
        text=text,
        targets=tuple(targets or ()),
        files=tuple(sorted(files.items())),
    )


def _resolve_files(p: Problems, data: dict, base_dir: Path) -> dict[str, str]:
    """The file values of the strategy's file parameters (``workload: mine.einsum``, under ``mapping`` or as an
    axis), as written -> absolute path read relative to the spec's folder; a file that does not load is a
    problem of its key. Columns keep the value as written; the point keys hold the file's content
    (:func:`mappers.sweep.points.sweep_points`)."""
    from workloads.cases import load_workload

    mapping, axes = data.get("mapping"), data.get("axes")
    name = mapping.get("strategy") if isinstance(mapping, dict) else None
    strategy = STRATEGIES.get(name) if isinstance(name, str) else None  # a bad value is _read_mapping's to name
    files: dict[str, str] = {}
    for name in strategy.file_params if strategy is not None else ():
        axis = axes.get(name) if isinstance(axes, dict) else None
        values = axis.get("values") if isinstance(axis, dict) else axis
        where = [(mapping, name, f"mapping.{name}", mapping.get(name))] if name in mapping else []
        if isinstance(values, list):
            where += [(values, i, f"axes.{name}.values[{i}]" if isinstance(axis, dict) else f"axes.{name}[{i}]", v)
                      for i, v in enumerate(values)]  # fmt: skip
        for parent, key, path, value in where:
            if not (isinstance(value, str) and value.endswith(".einsum")) or value in files:
                continue
            full = str(Path(value) if Path(value).is_absolute() else (base_dir / value).resolve())
            try:
                load_workload(full)
            except AttnscopeError as exc:
                p.add(path, str(exc).splitlines()[0], parent, key)
                continue
            files[value] = full
    return files


def _read_arch(p: Problems, data: dict, base_dir: Path) -> tuple[str, ArchSpec | None]:
    ref = data.get("arch")
    if not (isinstance(ref, str) and ref.strip()):
        what = "missing" if "arch" not in data else f"got {show(ref)}"
        p.add("arch", f"{what}; expected a preset name or the path of an architecture .yaml", data, "arch")
        return "", None
    is_path = ref.endswith((".yaml", ".yml")) or "/" in ref
    try:
        return ref, load_arch(base_dir / ref if is_path else ref)
    except AttnscopeError as exc:
        p.add("arch", str(exc), data, "arch")
        return ref, None


def _strip(message: str, arch: ArchSpec) -> str:
    """A with_overrides message without its origin prefix (the sweep's own location replaces it)."""
    lines = [line.removeprefix(f"{arch.origin} + overrides: ") for line in message.splitlines()]
    return "; ".join(line.strip() for line in lines if "problems in the architecture spec" not in line)


def _read_overrides(p: Problems, data: dict) -> tuple[tuple[str, Any], ...]:
    raw = p.mapping(data.get("overrides", {}), "overrides", None, data, "overrides") or {}
    out = []
    for path, value in raw.items():
        if not (isinstance(path, str) and (_PATH.match(path) or _IDENT.match(path))):
            p.add(join("overrides", path), "expected a dotted path like levels.dram.bandwidth_bytes_per_s", raw, path)
            continue
        out.append((path, value))
    return tuple(out)


def _device_strategies() -> list[str]:
    return [n for n, s in STRATEGIES.items() if s.point_kind == "device"]


def _read_mapping(p: Problems, data: dict, has_devices: bool) -> tuple[Any, MappingSpec, set[str]]:
    """The strategy, its parameters (defaults filled in) and the names of those the spec gave."""
    raw = data.get("mapping", {"strategy": "fixed-binding"})
    m = p.mapping(raw, "mapping", None, data, "mapping") or {}
    if "strategy" not in m and has_devices:
        p.add("mapping.strategy", f"missing; a sweep over devices needs a device strategy: "
              f"{', '.join(_device_strategies())}", data, "mapping")  # fmt: skip
        return None, MappingSpec("", ()), set()
    name = m.get("strategy", "fixed-binding")
    if not isinstance(name, str) or name not in STRATEGIES:
        p.add("mapping.strategy", f"unknown strategy {show(name)}; registered: {', '.join(STRATEGIES)}", m, "strategy")
        return None, MappingSpec(str(name), ()), set()
    strategy = get_strategy(name)
    params = {}
    for key, value in m.items():
        if key == "strategy":
            continue
        if key not in strategy.params:
            allowed = ", ".join(("strategy", *strategy.params))
            p.add(join("mapping", key), f"unknown key for strategy {name}; allowed keys: {allowed}", m, key)
            continue
        problem = strategy.params[key].check(value)
        if problem:
            p.add(join("mapping", key), problem, m, key)
        params[key] = value
    given = set(params)
    for key, param in strategy.params.items():
        params.setdefault(key, param.default)
    if strategy.conflicts is not None:  # values fixed together that cannot run together (a swept one: per point)
        for keys, problem in strategy.conflicts({k: v for k, v in params.items() if k in given}):
            if all(k in given for k in keys):
                p.add(join("mapping", keys[0]), f"{problem} (mapping.{' and mapping.'.join(keys)})", m, keys[0])
    return strategy, MappingSpec(name, tuple(sorted(params.items()))), given


def _read_workload(p: Problems, data: dict, strategy: Any, kind: str, base_dir: Path) -> WorkloadSpec:
    device = kind == "device"
    if "workload" not in data:
        expected = "{models: [...], seq_lens: [...]}" if device else "{cascades: [...], models: [...], seq_lens: [...]}"
        p.add("workload", f"missing; expected {expected}", data, "workload")
    m = p.mapping(data.get("workload", {}), "workload", _WORKLOAD_KEYS, data, "workload") or {}
    allowed_cascades = strategy.cascades if strategy is not None and strategy.cascades else tuple(sorted(CASCADES))
    out: dict[str, tuple] = {"cascades": ()}
    if device and "cascades" in m:
        what = f"strategy {strategy.name}" if strategy is not None else "a device sweep"
        p.add("workload.cascades", f"{what} takes no cascades: it runs the layers of the zoo models in "
              "workload.models; remove cascades", m, "cascades")  # fmt: skip
    lists = (("models", MODEL_NAMES), ("seq_lens", None))
    if not device:
        lists = (("cascades", allowed_cascades), ("models", MODEL_NAMES), ("seq_lens", None))
    for key, allowed in lists:
        path = f"workload.{key}"
        if key not in m:
            p.add(path, "missing; give a list" + (f" from {', '.join(allowed)}" if allowed else ""), m, None)
            out[key] = ()
            continue
        items = _as_list(m[key])
        if not items:
            p.add(path, "empty; give at least one" + (f" of {', '.join(allowed)}" if allowed else " length"), m, key)
        values = []
        for i, item in enumerate(items):
            where, parent, idx = (f"{path}[{i}]", m[key], i) if isinstance(m[key], list) else (path, m, key)
            if key == "seq_lens":
                length = _seq_len(item)
                if length is None:
                    p.add(where, f"expected a positive integer or a size like 4K, got {show(item)}", parent, idx)
                values.append(length)
                continue
            if key == "models" and is_config_path(item):  # a Hugging Face config.json, read relative to the spec
                full = str(Path(item) if Path(item).is_absolute() else (base_dir / item).resolve())
                try:
                    get_model(full)
                except AttnscopeError as exc:
                    p.add(where, str(exc).splitlines()[-1], parent, idx)
                values.append(full)
                continue
            if item not in allowed:
                extra = f" by strategy {strategy.name}" if key == "cascades" and strategy is not None else ""
                also = " (or a Hugging Face config.json path)" if key == "models" else ""
                p.add(where, f"unknown or unsupported {key[:-1]} {show(item)}{extra}; allowed: {', '.join(allowed)}"
                      f"{also}", parent, idx)  # fmt: skip
            values.append(item)
        listed = [v for v in values if isinstance(v, Hashable)]  # a list or mapping item is already named above
        for dup in dict.fromkeys(v for v in listed if listed.count(v) > 1):
            p.add(path, f"{dup!r} is listed twice", m, key)
        out[key] = tuple(values)
    return WorkloadSpec(**out)


def _seq_len(item: Any) -> int | None:
    if _is_int(item) and item > 0:
        return item
    if isinstance(item, str):
        try:
            return parse_size(item, "seq_len")
        except AttnscopeError:
            return None
    return None


def _read_sampling(p: Problems, data: dict) -> Sampling:
    m = p.mapping(data.get("sampling", {}), "sampling", _SAMPLING_KEYS, data, "sampling") or {}
    method = m.get("method", "grid")
    if method not in SAMPLING_METHODS:
        p.add("sampling.method", f"got {show(method)}; allowed: {', '.join(SAMPLING_METHODS)}", m, "method")
        method = "grid"
    points, seed = m.get("points"), m.get("seed", 0)
    if method == "grid" and "points" in m:
        p.add("sampling.points", "grid sampling takes every combination; remove points or use random or lhs", m,
              "points")  # fmt: skip
    if method != "grid" and not (_is_int(points) and points > 0):
        what = "missing" if "points" not in m else f"got {show(points)}"
        p.add("sampling.points", f"{what}; {method} sampling needs a positive integer number of points", m, "points")
    if not (_is_int(seed) and seed >= 0):
        p.add("sampling.seed", f"expected an integer >= 0, got {show(seed)}", m, "seed")
    limit = m.get("max_points")
    if limit is not None and not (_is_int(limit) and limit > 0):
        p.add("sampling.max_points", f"expected a positive integer (the sweep's size limit, default "
              f"{DEFAULT_MAX_POINTS:,}), got {show(limit)}", m, "max_points")  # fmt: skip
        limit = None
    return Sampling(method, points if method != "grid" else None, seed if _is_int(seed) else 0, limit)


class _ArchSpace:
    """Where the path axes of an architecture sweep point: the preset (after the fixed overrides)."""

    def __init__(self, arch: ArchSpec):
        self.arch = arch
        self.example = "clock_hz"

    def bases(self, path: str) -> list[Any]:
        return [base_value(self.arch, path)]

    def has(self, key: str) -> bool:
        return base_value(self.arch, key) is not MISSING

    def problem(self, where: str) -> str | None:
        return None

    def refused(self, overrides: Mapping[str, Any]) -> str | None:
        """What the preset's own validation says about overrides (None: accepted)."""
        try:
            with_overrides(self.arch, overrides)
        except AttnscopeError as exc:
            return _strip(str(exc), self.arch)
        return None


class _DeviceSpace:
    """Where the path axes of a device sweep point: every device of the device axis (its YAML fields)."""

    def __init__(self, targets: list[Target]):
        self.targets = targets
        self.example = "dram_bytes_per_s"

    def bases(self, path: str) -> list[Any]:
        return [base_value(t.data, path) for t in self.targets if t.kind == "device"]

    def has(self, key: str) -> bool:
        return all(b is not MISSING for b in self.bases(key))

    def problem(self, where: str) -> str | None:
        """Why device-field values cannot be set here (a spatial-array preset among the targets), or None."""
        archs = [t.name for t in self.targets if t.kind == "arch"]
        if archs:
            return (f"device fields apply to devices; {', '.join(archs)} in axes.{DEVICE_AXIS} "
                    f"{'is a spatial-array preset' if len(archs) == 1 else 'are spatial-array presets'}")  # fmt: skip
        return None

    def refused(self, overrides: Mapping[str, Any]) -> str | None:
        for t in self.targets:
            try:
                device_with_overrides(t.data, overrides, t.name)
            except AttnscopeError as exc:
                lines = [line.strip().replace(" + overrides", "") for line in str(exc).splitlines()]
                return "; ".join(line for line in lines if "problems in the device spec" not in line)
        return None


def _read_targets(p: Problems, data: dict, strategy: Strategy | None, base_dir: Path) -> list[Target] | None:
    """The device axis of a device sweep, resolved; None if it is missing or has a bad value."""
    arch_presets = strategy is not None and strategy.arch_presets
    raw = data.get("axes") if isinstance(data.get("axes"), dict) else {}
    where = f"axes.{DEVICE_AXIS}"
    if DEVICE_AXIS not in raw:
        p.add(where, f"missing; a device sweep lists its targets as axes: {{{DEVICE_AXIS}: [...]}} with "
              f"{valid_targets(arch_presets)}", data, "axes")  # fmt: skip
        return None
    item = raw[DEVICE_AXIS]
    if isinstance(item, dict):
        m = p.mapping(item, where, ("values",), raw, DEVICE_AXIS) or {}
        item = m.get("values")
        parent, key = m, "values"
    else:
        parent, key = raw, DEVICE_AXIS
    if not isinstance(item, list) or not item:
        what = "empty axis" if isinstance(item, list) else f"expected a list of device ids, got {show(item)}"
        p.add(join(where, "values"), f"{what}; give {valid_targets(arch_presets)}", parent, key)
        return None
    targets, ok = [], True
    for i, value in enumerate(item):
        try:
            if not arch_presets and isinstance(value, str) and value in ARCHITECTURES:
                raise SpecError(f"{value!r} is a spatial-array preset; strategy {strategy.name} runs on devices only "
                                f"(llm also takes spatial-array presets); {valid_targets(False)}")  # fmt: skip
            targets.append(resolve_target(value, base_dir, arch_presets))
        except AttnscopeError as exc:
            p.add(f"{where}.values[{i}]", str(exc), item, i)
            ok = False
    names = [t.name for t in targets]
    for dup in dict.fromkeys(n for n in names if names.count(n) > 1):
        p.add(where, f"{dup!r} is listed twice", raw, DEVICE_AXIS)
        ok = False
    return targets if ok else None


def _read_axes(p: Problems, data: dict, space: Any, method: str, strategy: Strategy | None, kind: str) -> list[Axis]:
    raw = p.mapping(data.get("axes", {}), "axes", None, data, "axes") or {}
    axes = []
    for key, item in raw.items():
        if key == DEVICE_AXIS and kind == "device":
            values = item.get("values") if isinstance(item, dict) else item
            if isinstance(values, list) and all(isinstance(v, str) for v in values):
                axes.append(Axis(name=DEVICE_AXIS, paths=(), values=tuple(values), role="device"))
            continue
        if key == DEVICE_AXIS:
            continue  # reported with the strategy
        axis = _read_axis(p, raw, key, item, space, method, strategy, kind)
        if axis is not None:
            axes.append(axis)
    return axes


def _read_axis(
    p: Problems, raw: dict, key: Any, item: Any, space: Any, method: str, strategy: Strategy | None, kind: str
) -> Axis | None:
    where = join("axes", key)
    named = isinstance(key, str) and bool(_IDENT.match(key))
    if not (named or (isinstance(key, str) and _PATH.match(key))):
        p.add(where, "an axis is named by an identifier (with paths: [...]) or by a dotted path", raw, key)
        return None
    if isinstance(item, list):  # shorthand: the list of values
        m = LineDict(values=item)
        m.lines = {"values": line_of(raw, key)}
    else:
        m = p.mapping(item, where, _AXIS_KEYS, raw, key) or {}
    if not m:
        return None
    if named and "paths" not in m and strategy is not None and key in strategy.params:
        return _param_axis(p, m, key, where, strategy, raw)
    problem = space.problem(where) if space is not None else None
    if problem:
        p.add(where, problem, raw, key)
        return None
    top_level = space is not None and named and "paths" not in m and space.has(key)
    paths = _axis_paths(p, m, key, where, named and not top_level, raw, space, strategy)
    has_values, has_range = "values" in m, "min" in m or "max" in m
    if has_values == has_range:
        p.add(where, "give either values: [...] or a range (min, max[, scale, count, integer])", raw, key)
        return None
    bases = [b for path in paths for b in space.bases(path)] if space is not None else []
    kinds = {_kind(b) for b in bases if b is not MISSING}
    if has_values:
        values = _axis_values(p, m, where, kinds)
        if values is None:
            return None
        axis = Axis(name=_column(key), paths=paths, values=values)
    else:
        axis = _axis_range(p, m, key, where, kinds, method, raw)
        if axis is None:
            return None
        axis = Axis(name=_column(key), paths=paths, **axis)
    if space is not None and paths:
        _check_axis_on_space(p, axis, space, where, raw, key)
    return axis


def _param_axis(p: Problems, m: dict, key: str, where: str, strategy: Strategy, raw: dict) -> Axis | None:
    """An axis named like a strategy parameter: a list of its values."""
    values = m.get("values")
    if set(m) - {"values"} or not isinstance(values, list):
        p.add(where, f"an axis over the strategy parameter {key} takes a list of values "
              f"({strategy.params[key].doc})", raw, key)  # fmt: skip
        return None
    if not values:
        p.add(join(where, "values"), "empty axis; give at least one value", m, "values")
        return None
    ok = True
    for i, value in enumerate(values):
        problem = strategy.params[key].check(value)
        if problem:
            p.add(f"{where}.values[{i}]", f"strategy {strategy.name}, parameter {key}: {problem}", values, i)
            ok = False
    for dup in dict.fromkeys(v for v in values if values.count(v) > 1):
        p.add(join(where, "values"), f"{dup!r} is listed twice", m, "values")
        ok = False
    return Axis(name=key, paths=(), values=tuple(values), role="param") if ok else None


def _axis_paths(
    p: Problems, m: dict, key: str, where: str, named: bool, raw: dict, space: Any, strategy: Strategy | None
) -> tuple[str, ...]:
    if not named:
        if "paths" in m:
            p.add(join(where, "paths"), "this axis is named by its path; remove paths or name the axis", m, "paths")
        return (key,)
    paths = m.get("paths")
    if paths is None:
        example = space.example if space is not None else "clock_hz"
        params = f", or a parameter of strategy {strategy.name}: {', '.join(strategy.params)}" if strategy else ""
        p.add(where, f"a named axis needs paths: [dotted.path, ...] (or name the axis by a dotted path, a top-level "
              f"field such as {example}{params})", raw, key)  # fmt: skip
        return ()
    paths = _as_list(paths)
    good = []
    for i, path in enumerate(paths):
        if isinstance(path, str) and (_PATH.match(path) or _IDENT.match(path)):
            good.append(path)
        else:
            p.add(f"{where}.paths[{i}]", f"expected a dotted path like arrays.pe_2d.rows, got {show(path)}",
                  m["paths"], i)  # fmt: skip
    if not paths:
        p.add(join(where, "paths"), "empty; give at least one dotted path", m, "paths")
    return tuple(good)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    return "any"  # null (a nullable number), a mapping or a list: the preset's validation decides


_KIND_TEXT = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string"}


def _fits(value: Any, kinds: set[str]) -> bool:
    checks = {
        "bool": lambda v: isinstance(v, bool),
        "int": _is_int,
        "float": _is_number,
        "str": lambda v: isinstance(v, str),
        "any": lambda v: True,
    }
    return all(checks[k](value) for k in kinds)


def _axis_values(p: Problems, m: dict, where: str, kinds: set[str]) -> tuple[Scalar, ...] | None:
    values = m["values"]
    if not isinstance(values, list):
        p.add(join(where, "values"), f"expected a list of values, got {show(values)}", m, "values")
        return None
    if not values:
        p.add(join(where, "values"), "empty axis; give at least one value", m, "values")
        return None
    out, ok = [], True
    want = " and ".join(_KIND_TEXT[k] for k in sorted(kinds - {"any"})) or "a number, string or true/false"
    for i, v in enumerate(values):
        if not isinstance(v, int | float | str | bool) or (isinstance(v, float) and not math.isfinite(v)):
            p.add(f"{where}.values[{i}]", f"expected {want}, got {show(v)}", values, i)
            ok = False
        elif not _fits(v, kinds):
            p.add(f"{where}.values[{i}]", f"wrong type: the path holds {want}, got {show(v)}", values, i)
            ok = False
        else:
            out.append(float(v) if kinds == {"float"} else v)
    for dup in dict.fromkeys(v for v in out if out.count(v) > 1):
        p.add(join(where, "values"), f"{dup!r} is listed twice", m, "values")
        ok = False
    return tuple(out) if ok else None


def _axis_range(
    p: Problems, m: dict, key: str, where: str, kinds: set[str], method: str, raw: dict
) -> dict[str, Any] | None:
    ok = True
    for end in ("min", "max"):
        if not _is_number(m.get(end)):
            what = "missing" if end not in m else f"got {show(m.get(end))}"
            p.add(join(where, end), f"{what}; a range needs a finite number", m, end if end in m else None)
            ok = False
    scale = m.get("scale", "linear")
    if scale not in SCALES:
        p.add(join(where, "scale"), f"got {show(scale)}; allowed: {', '.join(SCALES)}", m, "scale")
        ok = False
    count = m.get("count")
    if count is not None and not (_is_int(count) and count > 0):
        p.add(join(where, "count"), f"expected a positive integer, got {show(count)}", m, "count")
        ok = False
    if not kinds <= {"int", "float", "any"}:
        p.add(where, f"a range needs a numeric field; the path holds {' and '.join(sorted(kinds))}", raw, key)
        return None
    if not ok:
        return None
    lo, hi = m["min"], m["max"]
    integer = m.get("integer", "int" in kinds or (_is_int(lo) and _is_int(hi) and "float" not in kinds))
    if not isinstance(integer, bool):
        p.add(join(where, "integer"), f"expected true or false, got {show(integer)}", m, "integer")
        return None
    if "int" in kinds and not integer:
        p.add(join(where, "integer"), "the path holds an integer; a range over it must be integer", m, "integer")
        return None
    if not lo < hi:
        p.add(where, f"min ({lo}) must be below max ({hi})", raw, key)
        return None
    if scale == "log" and lo <= 0:
        p.add(join(where, "min"), f"a log range needs min > 0, got {lo}", m, "min")
        return None
    if method == "grid" and count is None:
        p.add(where, "grid sampling needs count (the number of grid values) for a range axis", raw, key)
        return None
    return {"min": lo, "max": hi, "scale": scale, "count": count, "integer": integer}


def _check_axis_on_space(p: Problems, axis: Axis, space: Any, where: str, raw: dict, key: str) -> None:
    """Every path exists and the presets' own validation accepts the axis's values (range ends for a range)."""
    size = axis.size
    probes = axis.discrete if size is not None and size <= _PROBED else (axis.at(0.0), axis.at(1.0))
    for path in axis.paths:
        bases = space.bases(path)
        known = bool(bases) and all(b is not MISSING for b in bases)
        problem = space.refused({path: bases[0] if known else probes[0]})
        if problem:
            p.add(where, f"path {path}: {problem}", raw, key)
            return
    for value in probes:
        problem = space.refused(dict.fromkeys(axis.paths, value))
        if problem:
            p.add(where, f"value {value!r} is refused: {problem}", raw, key)


def _column(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", key).strip("_")


def _read_derived(p: Problems, data: dict, arch: ArchSpec | None, axes: list[Axis], kind: str) -> list[Derived]:
    raw = p.mapping(data.get("derived", {}), "derived", None, data, "derived") or {}
    if raw and kind == "device":
        p.add("derived", "derived values apply to architecture sweeps (arch: ...); a device sweep sets device "
              "fields with axes", data, "derived")  # fmt: skip
        return []
    out: list[Derived] = []
    names = {a.name for a in axes}
    first = None if arch is None else {a.name: a.first for a in axes}
    first_paths = {} if first is None else {path: first[a.name] for a in axes for path in a.paths}
    for path, text in raw.items():
        where = join("derived", path)
        if not (isinstance(path, str) and _PATH.match(path)):
            p.add(where, "a derived value is keyed by the dotted path it sets, e.g. levels.global_buffer.area_um2",
                  raw, path)  # fmt: skip
            continue
        if not isinstance(text, str | int | float) or isinstance(text, bool):
            p.add(where, f"expected an expression, got {show(text)}", raw, path)
            continue
        setters = [a.name for a in axes if path in a.paths]
        if setters:
            p.add(where, f"axis {setters[0]} sets this path already; a path takes one value per point", raw, path)
            continue
        base = base_value(arch, path) if arch is not None else MISSING
        if arch is not None and base is MISSING:
            p.add(where, f"unknown path {path}: the preset has no value there", raw, path)
            continue
        try:
            expr = Expression(str(text), names | {d.column for d in out}, arch)
        except ExpressionError as exc:
            p.add(where, str(exc), raw, path)
            continue
        integer = _kind(base) == "int"
        if first is not None:
            try:
                first[_column(path)] = first_paths[path] = expr.evaluate(first, first_paths, integer)
            except ExpressionError as exc:
                p.add(where, f"at the first point: {exc}", raw, path)
                first = None
        out.append(Derived(path=path, column=_column(path), expr=str(text), integer=integer))
    return out


def _read_metrics(p: Problems, data: dict, arch: ArchSpec | None, strategy: Strategy | None) -> tuple[str, ...]:
    """The reported metrics: an architecture sweep's (strategy None), or a device strategy's own."""
    allowed = strategy.metrics if strategy is not None else None
    default = allowed if allowed is not None else DEFAULT_METRICS
    raw = data.get("metrics", list(default))
    if not isinstance(raw, list) or not raw:
        known = ", ".join(allowed if allowed is not None else metric_names(arch))
        p.add("metrics", f"expected a non-empty list of metrics from {known}", data, "metrics")
        return tuple(default)
    out = []
    for i, name in enumerate(raw):
        try:
            resolve_metric(name, arch, allowed)
        except AttnscopeError as exc:
            p.add(f"metrics[{i}]", str(exc), raw, i)
            continue
        out.append(name)
    return tuple(dict.fromkeys(out))


def spec_summary(spec: SweepSpec) -> Mapping[str, Any]:
    """The spec as plain data (what the store keeps next to the YAML text)."""
    return {
        "name": spec.name,
        "arch": spec.arch_ref,
        "overrides": dict(spec.overrides),
        "axes": {
            a.name: {"paths": list(a.paths), "values": a.discrete, **({"role": a.role} if a.role != "path" else {})}
            for a in spec.axes
        },
        "derived": {d.path: d.expr for d in spec.derived},
        "workload": {
            "cascades": list(spec.workload.cascades),
            "models": list(spec.workload.models),
            "seq_lens": list(spec.workload.seq_lens),
        },
        "mapping": {"strategy": spec.mapping.strategy, **spec.mapping.param_dict},
        "sampling": {"method": spec.sampling.method, "points": spec.sampling.points, "seed": spec.sampling.seed},
        "metrics": list(spec.metrics),
        **({"targets": {t.name: t.as_input for t in spec.targets}} if spec.targets else {}),
    }
