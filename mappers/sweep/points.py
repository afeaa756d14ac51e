"""A sweep's points: sampling the axes, derived values, workloads, and each point's stable key.

The key of a point is the SHA-256 of its full inputs as canonical JSON: the model version, a fingerprint of
the base architecture (the preset after the spec's fixed overrides), the point's overrides (path -> value),
the workload with its rank sizes, and the mapping strategy with its parameters (fixed and swept). A point of a
device sweep has, instead of the architecture, its target: the device axis's value with the fingerprint of
the preset's content (editing a device YAML recomputes its points), and as sizes the zoo model's shape.
Axis names, the sweep's name and the sampling seed are not inputs: drawing the same point twice, or in
another sweep, reuses the stored row.

Sampling (numpy ``Generator(PCG64(seed))``): ``grid`` takes the product of the axes' values; ``random``
draws every axis independently and uniformly (a log range uniformly in log); ``lhs`` is a Latin hypercube:
each axis's [0, 1) is cut into ``points`` strata, each used once, in an independent random order per axis.
A discrete axis maps u in [0, 1) to ``values[floor(u * len)]``. Every architecture point is evaluated on
every workload (cascade x model x sequence length).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from einsum.errors import SpecError
from mappers.sweep.expressions import Expression, ExpressionError
from mappers.sweep.spec import DEFAULT_MAX_POINTS, DEVICE_AXIS, Axis, Scalar, SweepSpec
from mappers.sweep.targets import Target
from simulator.specs import ArchSpec
from workloads import get_cascade
from workloads.models import get_model


def _package_version() -> str:
    try:
        return metadata.version("attnscope")
    except metadata.PackageNotFoundError:
        return "source"


MODEL_VERSION = f"attnscope {_package_version()} sweep-1"
"""Part of every point's key: a new attnscope release (or a new sweep format) recomputes the points."""


@dataclass(frozen=True)
class Workload:
    """One workload: a registered cascade at one model's shape and sequence length (device sweeps: no
    cascade; the model is a zoo id of :mod:`workloads.llm`)."""

    cascade: str
    model: str
    seq_len: int

    def sizes(self) -> dict[str, Any]:
        """The model's rank sizes that the cascade uses (M = P = seq_len); without a cascade, the zoo model's
        shape (heads, head dim, layers...)."""
        if not self.cascade:
            return get_model(self.model).shape_fields()
        ranks = set(get_cascade(self.cascade).cascade.ranks)
        return {k: v for k, v in get_model(self.model).sizes(self.seq_len, ranks).items() if k in ranks}


@dataclass(frozen=True)
class Point:
    """One point of a sweep: where it sits in the sample order, its key, its values and its inputs."""

    index: int
    key: str
    values: Mapping[str, Scalar]  # column -> value, for the axes and derived values
    overrides: tuple[tuple[str, Any], ...]  # (dotted path, value), applied to the base architecture (device)
    workload: Workload
    sizes: Mapping[str, Any]
    params: tuple[tuple[str, Any], ...] = ()  # the strategy's parameters at this point (fixed and swept)
    target: Target | None = None  # device sweeps: the device axis's value, resolved

    def inputs(self) -> dict[str, Any]:
        """The point's own inputs as plain data (stored with its row)."""
        out = {"overrides": dict(self.overrides), "workload": vars(self.workload), "sizes": dict(self.sizes)}
        out["params"] = dict(self.params)
        if self.target is not None:
            out["target"] = self.target.as_input
        return out


def _pick(axis: Axis, u: np.ndarray) -> list[Scalar]:
    values = axis.discrete
    if values is not None:
        return [values[min(int(x * len(values)), len(values) - 1)] for x in u]
    return [axis.at(float(x)) for x in u]


def sample_axes(spec: SweepSpec) -> list[dict[str, Scalar]]:
    """The architecture points: axis name -> value, in sample order (module docstring for the methods)."""
    axes, sampling = spec.axes, spec.sampling
    if sampling.method == "grid":
        return [
            dict(zip((a.name for a in axes), combo, strict=True))
            for combo in itertools.product(*(a.discrete for a in axes))
        ]
    n = sampling.points
    rng = np.random.Generator(np.random.PCG64(sampling.seed))
    columns = []
    for axis in axes:
        u = rng.random(n) if sampling.method == "random" else (rng.permutation(n) + rng.random(n)) / n
        columns.append(_pick(axis, u))
    if not axes:
        return [{}]
    return [dict(zip((a.name for a in axes), row, strict=True)) for row in zip(*columns, strict=True)]


def workloads(spec: SweepSpec) -> list[Workload]:
    """Every workload of the spec: cascades x models x sequence lengths."""
    w = spec.workload
    return [Workload(c, m, s) for c, m, s in itertools.product(w.cascades or ("",), w.models, w.seq_lens)]


def canonical_json(data: Any) -> str:
    """JSON with sorted keys and no spaces: equal data, equal text."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


@cache
def _fingerprint(arch_json: str) -> str:
    return hashlib.sha256(arch_json.encode()).hexdigest()


def arch_fingerprint(arch: ArchSpec) -> str:
    """SHA-256 of the architecture as canonical JSON."""
    return _fingerprint(canonical_json(arch.to_dict()))


def _file_digests(spec: SweepSpec, params: Mapping[str, Any]) -> dict[str, Any]:
    """SHA-256 of the files the strategy's file parameters name (editing one recomputes its points)."""
    files = dict(spec.files)
    digests = {}
    for name in spec.strategy.file_params:
        value = params.get(name)
        if value in files:
            digests[value] = hashlib.sha256(Path(files[value]).read_bytes()).hexdigest()
    return {"files": digests} if digests else {}


_POINT_BYTES = 1400
"""Memory one Point takes (measured: about 1.2 KiB with four axes), plus _COLUMN_BYTES per axis or derived value."""
_COLUMN_BYTES = 120
_SAMPLE_BYTES = 48
"""Memory the sampler takes per axis and drawn point (two numpy draws, the value and its slot in a row)."""


@dataclass(frozen=True)
class SweepSize:
    """How big a sweep is, by formula, before anything is sampled."""

    points: int  # architecture (or device) points x workloads
    axis_points: int  # points drawn from the axes
    workloads: int
    memory_bytes: int  # what sampling and holding the points would take, about
    how: str  # the formula, in words

    def describe(self) -> str:
        return f"{self.points:,} points ({self.how})"


def sweep_size(spec: SweepSpec) -> SweepSize:
    """The number of points of a sweep and the memory they would take, computed from the spec alone."""
    w = spec.workload
    loads = max(1, len(w.cascades)) * len(w.models) * len(w.seq_lens)
    if spec.sampling.method == "grid":
        sizes = [a.size or 1 for a in spec.axes]
        axis_points = math.prod(sizes)
        how = "grid: " + " x ".join(f"{n:,}" for n in sizes) + " axis values" if sizes else "grid: no axes"
    else:
        axis_points = spec.sampling.points or 1
        how = f"{spec.sampling.method}: {axis_points:,} draws"
    how += f" x {loads:,} workload{'s' if loads != 1 else ''}"
    points = axis_points * loads
    columns = len(spec.axes) + len(spec.derived)
    memory = axis_points * _SAMPLE_BYTES * max(1, len(spec.axes)) + points * (_POINT_BYTES + _COLUMN_BYTES * columns)
    return SweepSize(points, axis_points, loads, memory, how)


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_size(spec: SweepSpec, max_points: int | None = None) -> SweepSize:
    """The sweep's size, or a SpecError (exit 2) when it passes the limit (max_points, else the spec's
    ``sampling.max_points``, else :data:`~mappers.sweep.spec.DEFAULT_MAX_POINTS`) or this machine's memory."""
    size = sweep_size(spec)
    limit = max_points or spec.sampling.max_points or DEFAULT_MAX_POINTS
    memory = f"about {_bytes(size.memory_bytes)} of memory to sample and hold them"
    if size.points > limit:
        raise SpecError(
            f"{spec.origin}: the sweep has {size.describe()}, over the limit of {limit:,} points ({memory}); "
            "sample fewer (fewer axis values, or sampling: {method: lhs, points: N}), or raise the limit with "
            "--max-points N or sampling.max_points"
        )
    physical = _physical_memory()
    if physical is not None and size.memory_bytes > physical // 2:
        raise SpecError(
            f"{spec.origin}: the sweep has {size.describe()}, {memory}; this machine has {_bytes(physical)}; "
            "sample fewer points, or split the sweep into several (one store takes them all)"
        )
    return size


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.3g} PiB"


def sweep_points(spec: SweepSpec, max_points: int | None = None) -> list[Point]:
    """Every point of the sweep in sample order (axis points outer, workloads inner).

    The same inputs drawn twice give two points with one key. A sweep over the size limit (:func:`check_size`)
    is refused before anything is sampled.
    """
    check_size(spec, max_points)
    exprs = []
    names = {a.name for a in spec.axes}
    for d in spec.derived:
        exprs.append((d, Expression(d.expr, names, spec.arch)))
        names.add(d.column)
    loads = [(w, w.sizes()) for w in workloads(spec)]
    on_devices = spec.point_kind == "device"
    path_axes = [a for a in spec.axes if a.role == "path"]
    param_axes = [a for a in spec.axes if a.role == "param"]
    targets = {t.name: t for t in spec.targets}
    fixed_overrides = dict(spec.overrides) if on_devices else {}  # an arch sweep's are in spec.arch already
    fixed_by_params: dict[str, str] = {}
    files = dict(spec.files)  # a file parameter's points are keyed by its value as written and its content
    points = []
    for values in sample_axes(spec):
        overrides = {**fixed_overrides, **{path: values[a.name] for a in path_axes for path in a.paths}}
        params = {**spec.mapping.param_dict, **{a.name: values[a.name] for a in param_axes}}
        values = dict(values)
        for d, expr in exprs:
            try:
                values[d.column] = overrides[d.path] = expr.evaluate(values, overrides, d.integer)
            except ExpressionError as exc:
                raise SpecError(f"{spec.origin}: derived.{d.path}: at point {values}: {exc}") from None
        ordered = tuple(sorted(overrides.items()))
        fixed = fixed_by_params.get(canonical_json(params))
        if fixed is None:
            mapping = {"strategy": spec.mapping.strategy, "params": params, **_file_digests(spec, params)}
            base = {} if on_devices else {"arch": arch_fingerprint(spec.arch)}
            fixed = fixed_by_params[canonical_json(params)] = canonical_json(
                {"model_version": MODEL_VERSION, **base, "mapping": mapping}
            )
        target = targets[values[DEVICE_AXIS]] if on_devices else None
        where = {"target": target.as_input} if target is not None else {}
        params = {k: files.get(v, v) if k in spec.strategy.file_params else v for k, v in params.items()}
        for workload, sizes in loads:
            own = canonical_json({**where, "overrides": ordered, "workload": vars(workload), "sizes": sizes})
            key = hashlib.sha256(f"{fixed}|{own}".encode()).hexdigest()[:32]
            points.append(
                Point(len(points), key, values, ordered, workload, sizes, tuple(sorted(params.items())), target)
            )
    return points
