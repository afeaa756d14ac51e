"""The mapping space of one Einsum on one compute array, as tables that Numba kernels stream through.

A point of the space is a loop nest in the form :mod:`simulator.nest` costs: per storage level a temporal
bound for every variable and a loop order, per array axis a spatial factor for every variable, and per level
which tensors it holds (the rest bypass it). The space, for a nest of L levels over an array of A axes:

* **Tiling.** Each variable's size (or, with ``imperfect``, a padded size: rounded up to a power of two or a
  multiple of an array axis, at most ``max_padding`` larger) is split into L temporal and A spatial factors
  in every ordered way. A spatial factor fits its axis; together the variables on one axis fit it, at most
  ``spatial_ranks_per_axis`` of them share it, and the PEs used reach ``min_utilization``.
* **Loop orders** per level over the loops of bound > 1. The cost model reuses a tile only through the
  innermost run of loops not indexing it, so orders that give every tensor the same run at a level are one
  point (symmetry pruning); the innermost level's order never matters (its only child is the compute).
* **Bypass.** Every level between the outermost and the innermost may hold or skip each tensor; the
  outermost holds everything and the innermost (the PE registers) holds every tensor by default.

Constraints (:mod:`mappers.constraints`) fix factors, orders, axes and bypass bits. :meth:`MapSpace.build`
checks them against the Einsum and architecture, and refuses a space in which some level cannot hold even
its smallest footprint, naming the level and that footprint.

The tables are plain arrays: per variable its factorizations grouped by their spatial part, the spatial
assignments (one group per variable), the distinct orders of each level per set of active loops, and the
bypass combinations. :meth:`MapSpace.enumerate` fills preallocated batch arrays from a cursor, dropping
points whose tiles overflow a level (capacity pruning) and counting every point it passes; nothing of the
space is held but the tables.

>>> from einsum.cascade import Cascade
>>> from einsum.lower import lower
>>> from simulator.specs import load_arch
>>> gemm = Cascade.from_text("input A[T,K], B[K,N]\\nC[t,n] = sum[k] A[t,k] * B[k,n]")
>>> e = lower(gemm, {"T": 64, "K": 64, "N": 64}).einsum("C")
>>> space = MapSpace.build(e, load_arch("flat-edge"), levels=("dram", "global_buffer", "pe_reg_2d"))
>>> space.level_names, space.axis_names, space.array
(('dram', 'global_buffer', 'pe_reg_2d'), ('rows', 'cols'), 'pe_2d')
>>> space.size > 10**6
True
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import numpy as np

from einsum.errors import SpecError
from einsum.lower import LoweredEinsum
from mappers.constraints import Constraints
from mappers.templates import divisors
from simulator.cost import cycles_per_point, nest_arch, nest_problem
from simulator.jit import kernel
from simulator.mapping import EinsumMapping, Loops
from simulator.nest import MappingBatch, NestArch, NestProblem
from simulator.specs import ArchSpec

__all__ = ["MAX_SPATIAL_ASSIGNMENTS", "MapSpace", "array_axes"]

MAX_SPATIAL_ASSIGNMENTS = 2_000_000
"""Spatial assignments a space may have; more asks for constraints on the axes."""

_MAX_KEEP_COMBOS = 4096


@dataclass(frozen=True, eq=False)
class MapSpace:
    """The mapping space of one Einsum on one compute array (module docstring); build with :meth:`build`."""

    einsum: LoweredEinsum
    """The Einsum."""
    arch: ArchSpec
    """The architecture."""
    array: str
    """The compute array that runs the Einsum."""
    level_names: tuple[str, ...]
    """Storage levels of the nest, outermost first; the last feeds the PEs."""
    axis_names: tuple[str, ...]
    """Array axes (rows, cols; pes; instances)."""
    problem: NestProblem
    """The Einsum as the cost kernel takes it."""
    nest_arch: NestArch
    """The levels and array as the cost kernel takes them (real bandwidths: DRAM's, and any on-chip one)."""
    cycles_per_point: float
    """PE cycles per iteration point on this array."""
    compute_energy_pj_per_point: float
    """Functional-unit energy per iteration point, in pJ."""
    constraints: Constraints
    """The constraints the space obeys."""
    trows: np.ndarray
    """int64[rows, L]: temporal factors of every factorization of every variable, grouped."""
    group_start: np.ndarray
    """int64[R, G]: first row of each variable's group (a group shares one spatial part and padded size)."""
    group_count: np.ndarray
    """int64[R, G]: rows per group (0 = no such group)."""
    group_spatial: np.ndarray
    """int64[R, G, A]: the spatial factors of each group."""
    assign: np.ndarray
    """int64[S, R]: the group of each variable, per spatial assignment."""
    assign_spatial: np.ndarray
    """int64[S, A, R]: the spatial factors of each assignment."""
    order_table: np.ndarray
    """int64[L, 2^R, O, R]: distinct full loop orders (outermost first) per level and set of active loops."""
    order_count: np.ndarray
    """int64[L, 2^R]: how many of them."""
    keep_table: np.ndarray
    """bool[K, L, T]: the allowed bypass combinations."""
    free_temporal: np.ndarray
    """bool[L, R]: temporal factors a local search may change (not fixed by a constraint)."""
    free_spatial: np.ndarray
    """bool[A, R]: spatial factors a local search may change (variable allowed on the axis, total not fixed)."""
    free_keep: np.ndarray
    """bool[L, T]: bypass bits not fixed."""
    order_fixed: np.ndarray
    """int64[L, R]: per level, -1 for a variable the order leaves free, else its forced slot (see ``_normalise``)."""
    outer_required: np.ndarray
    """int64[L, R]: per level, variables required outermost (in order), padded with -1."""
    inner_required: np.ndarray
    """int64[L, R]: per level, variables required innermost (outermost first), padded with -1."""
    min_utilization: float
    """Least fraction of the PEs a mapping uses."""
    notes: tuple[str, ...] = field(default=())
    """What narrowed the space (padding offered, constraints applied)."""

    # ------------------------------------------------------------------------------------------------ build

    @classmethod
    def build(
        cls,
        e: LoweredEinsum,
        arch: ArchSpec,
        array: str | None = None,
        constraints: Constraints | None = None,
        *,
        levels: Sequence[str] | None = None,
        imperfect: bool | None = None,
        spatial_ranks_per_axis: int | None = None,
    ) -> MapSpace:
        """The space of ``e`` on ``array`` (default: the array with the most PEs that supports its operators
        and lies under ``levels``, if given).

        ``levels``, ``imperfect`` and ``spatial_ranks_per_axis`` override the constraints' values. Raises
        :class:`einsum.errors.SpecError` listing every constraint problem, and when no mapping can fit.
        """
        c = constraints or Constraints()
        overrides = {
            "levels": tuple(levels) if levels is not None else c.levels,
            "imperfect": c.imperfect if imperfect is None else imperfect,
            "spatial_ranks_per_axis": c.spatial_ranks_per_axis
            if spatial_ranks_per_axis is None
            else spatial_ranks_per_axis,
        }
        c = Constraints(**{**{f: getattr(c, f) for f in c.__dataclass_fields__}, **overrides})
        array = array or _default_array(e, arch, c.levels)
        bound = _bind(e, arch, array, c)
        return _tables(e, arch, array, c, bound)

    # ------------------------------------------------------------------------------------------------ sizes

    @property
    def num_levels(self) -> int:
        return len(self.level_names)

    @property
    def num_axes(self) -> int:
        return len(self.axis_names)

    @property
    def num_assignments(self) -> int:
        """Spatial assignments."""
        return int(self.assign.shape[0])

    @property
    def num_keep(self) -> int:
        """Bypass combinations."""
        return int(self.keep_table.shape[0])

    @cached_property
    def tilings_per_assignment(self) -> np.ndarray:
        """float64[S]: temporal tilings of each spatial assignment."""
        counts = self.group_count[np.arange(self.problem.rank_sizes.shape[0])[None, :], self.assign]
        return np.prod(counts.astype(np.float64), axis=1)

    @cached_property
    def num_tilings(self) -> int:
        """Tilings (spatial assignment x temporal factors) over the whole space."""
        return int(self.tilings_per_assignment.sum())

    @cached_property
    def size(self) -> int:
        """Points of the space: tilings x distinct loop orders of their active loops x bypass combinations."""
        return round(_count_points_exact(self))

    @cached_property
    def fingerprint(self) -> bytes:
        """A digest of everything a search of this space reads: the tables, the kernel's problem and
        architecture arrays, the cost per point and the least utilization. Two spaces with one fingerprint
        hold the same points at the same costs (whatever their architectures are named)."""
        digest = hashlib.blake2b(digest_size=20)
        arrays = (
            self.trows, self.group_start, self.group_count, self.group_spatial, self.assign, self.assign_spatial,
            self.order_table, self.order_count, self.keep_table, self.problem.rank_sizes, self.problem.incidence,
            self.problem.is_output, self.nest_arch.capacity_words, self.nest_arch.instances,
            self.nest_arch.bandwidth_words_per_cycle, self.nest_arch.read_energy_pj_per_word,
            self.nest_arch.write_energy_pj_per_word, self.nest_arch.array_axes,
        )  # fmt: skip
        for a in arrays:
            digest.update(repr((a.dtype.str, a.shape)).encode())
            digest.update(np.ascontiguousarray(a).tobytes())
        scalars = (self.nest_arch.spatial_level, self.cycles_per_point, self.compute_energy_pj_per_point)
        digest.update(repr((*scalars, self.min_utilization, self.level_names, self.einsum.tensors)).encode())
        return digest.digest()

    @property
    def max_expansion(self) -> int:
        """Most points one tiling expands to (bypass combinations x distinct orders at every level)."""
        return self.num_keep * int(np.prod(self.order_count.max(axis=1).astype(np.float64)))

    # ------------------------------------------------------------------------------------------------ streaming

    def new_batch(self, capacity: int) -> MappingBatch:
        """Preallocated arrays for ``capacity`` mappings (raised to one tiling's expansion if smaller)."""
        n = max(capacity, self.max_expansion)
        num_levels, num_ranks = self.num_levels, self.problem.rank_sizes.shape[0]
        return MappingBatch(
            temporal=np.ones((n, num_levels, num_ranks), dtype=np.int64),
            spatial=np.ones((n, self.num_axes, num_ranks), dtype=np.int64),
            order=np.zeros((n, num_levels, num_ranks), dtype=np.int64),
            keep=np.ones((n, num_levels, len(self.einsum.tensors)), dtype=np.bool_),
        )

    def enumerate(self, cursor: np.ndarray, out: MappingBatch, min_occupancy: np.ndarray, max_tilings: int = 1 << 21):
        """Fill ``out`` from ``cursor`` (int64[2]: assignment, tiling; advanced in place) with feasible points.

        Returns (mappings written, points passed, pruned included). ``min_occupancy`` (float64[L]) is lowered
        to the least occupancy seen per level. At most ``max_tilings`` tilings are visited per call, so a call
        returns quickly even where everything is pruned. The space is exhausted when ``cursor[0]`` equals
        :attr:`num_assignments`.
        """
        n, points = _enumerate(
            cursor, self.assign, self.assign_spatial, self.group_start, self.group_count, self.trows,
            self.problem.incidence, self.nest_arch.capacity_words, self.nest_arch.spatial_level, self.keep_table,
            self.order_table, self.order_count, out.temporal, out.spatial, out.order, out.keep, min_occupancy,
            max_tilings,
        )  # fmt: skip
        return int(n), float(points)

    def enumerate_listed(
        self, tiling_s: np.ndarray, tiling_t: np.ndarray, keep_allowed: np.ndarray, cursor: np.ndarray,
        out: MappingBatch, source: np.ndarray,
    ) -> int:  # fmt: skip
        """Fill ``out`` with the fitting points of the listed tilings (assignment ``tiling_s[i]``, tiling
        ``tiling_t[i]``, bypass choices ``keep_allowed[i]``: bool[n, K]) from list index ``cursor[0]`` on (advanced in
        place; a tiling is never split between calls). ``source`` (int64, one per row of ``out``) gets each row's
        list index. Returns the rows written; the list is done when ``cursor[0]`` equals its length."""
        n, _ = _enumerate_listed(
            cursor, tiling_s, tiling_t, keep_allowed, self.assign, self.assign_spatial, self.group_start,
            self.group_count, self.trows, self.problem.incidence, self.nest_arch.capacity_words,
            self.nest_arch.spatial_level, self.keep_table, self.order_table, self.order_count, out.temporal,
            out.spatial, out.order, out.keep, source,
        )  # fmt: skip
        return int(n)

    def sample(self, rng: np.random.Generator, n: int) -> MappingBatch:
        """``n`` random points: a uniform spatial assignment, factorization per variable, bypass and orders.

        Points are drawn whether or not they fit (the cost kernel reports feasibility).
        """
        out = self.new_batch(n)
        num_ranks = self.problem.rank_sizes.shape[0]
        uniforms = rng.random((n, 2 + num_ranks + self.num_levels))
        _sample(
            uniforms, self.assign, self.assign_spatial, self.group_start, self.group_count, self.trows,
            self.keep_table, self.order_table, self.order_count, out.temporal, out.spatial, out.order, out.keep,
        )  # fmt: skip
        return _head(out, n)

    # ------------------------------------------------------------------------------------------------ results

    def to_mapping(self, batch: MappingBatch, i: int = 0) -> EinsumMapping:
        """Row ``i`` of a batch as an :class:`~simulator.mapping.EinsumMapping` (loops of bound 1 left out)."""
        names, tensors = self.einsum.vars, self.einsum.tensors

        def loops(level: int) -> Loops:
            bounds = batch.temporal[i, level]
            return tuple((names[r], int(bounds[r])) for r in batch.order[i, level] if bounds[r] > 1)

        spatial = tuple(tuple((names[r], int(f)) for r, f in enumerate(row) if f > 1) for row in batch.spatial[i])
        keep = tuple(
            frozenset(t for t, k in zip(tensors, batch.keep[i, level], strict=True) if k)
            for level in range(self.num_levels)
        )
        return EinsumMapping(
            array=self.array,
            levels=self.level_names,
            temporal=tuple(loops(level) for level in range(self.num_levels)),
            spatial=spatial,
            keep=keep,
        )

    def lower_bounds(self) -> tuple[float, float]:
        """(latency cycles, energy pJ) no mapping can beat: all PEs busy, or every input read once and the
        output written once at DRAM at its bandwidth; energy: those DRAM accesses plus the compute."""
        e = self.einsum
        pes = float(np.prod(self.nest_arch.array_axes.astype(np.float64)))
        points = float(np.prod(e.var_sizes.astype(np.float64)))
        words = [float(np.prod(e.var_sizes[row].astype(np.float64))) for row in e.incidence]
        out = int(np.flatnonzero(e.is_output)[0])
        compulsory = sum(words)
        latency = max(points * self.cycles_per_point / pes, compulsory / self.nest_arch.bandwidth_words_per_cycle[0])
        energy = (
            (compulsory - words[out]) * self.nest_arch.read_energy_pj_per_word[0]
            + words[out] * self.nest_arch.write_energy_pj_per_word[0]
            + points * self.compute_energy_pj_per_point
        )
        return float(latency), float(energy)


def _head(batch: MappingBatch, n: int) -> MappingBatch:
    return MappingBatch(batch.temporal[:n], batch.spatial[:n], batch.order[:n], batch.keep[:n])


# ---------------------------------------------------------------------------------------------------------
# Binding constraints to one Einsum and architecture: every problem collected, with its key and allowed values.


@dataclass
class _Bound:
    levels: tuple[str, ...]
    axis_names: tuple[str, ...]
    axis_sizes: tuple[int, ...]
    temporal_fixed: np.ndarray  # int64[L, R], 0 = free
    spatial_fixed: np.ndarray  # int64[R], 0 = free
    axis_allowed: np.ndarray  # bool[A, R]
    min_utilization: float
    outer: list[list[int]]  # per level
    inner: list[list[int]]  # per level
    keep_forced: np.ndarray  # int8[L, T]: 1 keep, 0 bypass, -1 free


def _default_array(e: LoweredEinsum, arch: ArchSpec, levels: Sequence[str] | None) -> str:
    """The array with the most PEs that supports the Einsum's operators (and lies under ``levels``)."""
    able = [a for a in arch.arrays if all(op in {o.name for o in a.ops} for op in e.ops_per_point)]
    if levels is not None:
        able = [a for a in able if set(levels) <= {lv.name for lv in arch.path(a.name)}] or able
    if not able:
        raise SpecError(
            f"{e.name} needs operators {', '.join(sorted(e.ops_per_point))}; no array of {arch.name} supports all of "
            f"them ({'; '.join(f'{a.name}: ' + ', '.join(o.name for o in a.ops) for a in arch.arrays)})"
        )
    return max(able, key=lambda a: a.pe_count).name


def array_axes(arch: ArchSpec, array: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """(names, sizes) of the axes of ``array``: rows and cols (2-D) or pes (1-D), then instances if several."""
    a = arch.array(array)
    names = ("rows", "cols") if a.kind == "2d" else ("pes",)
    if a.instances > 1:
        return (*names, "instances"), (*a.shape, a.instances)
    return names, tuple(a.shape)


def _bind(e: LoweredEinsum, arch: ArchSpec, array: str, c: Constraints) -> _Bound:
    spec_array = arch.array(array)  # raises listing the arrays
    for op in e.ops_per_point:
        spec_array.op(op)  # raises listing the operators the array supports
    path = [lv.name for lv in arch.path(array)]
    problems: list[str] = []
    where = c.origin

    def bad(key: str, what: str) -> None:
        problems.append(f"{where}: {key}: {what}")

    levels = tuple(c.levels) if c.levels is not None else tuple(path)
    if c.levels is not None:
        unknown = [lv for lv in levels if lv not in path]
        if unknown:
            bad("levels", f"{', '.join(map(repr, unknown))} not on the path of {array}; choose from {', '.join(path)}")
        elif list(levels) != [lv for lv in path if lv in levels]:
            bad("levels", f"must follow the path order {', '.join(path)}, got {', '.join(levels)}")
        elif levels[0] != path[0] or levels[-1] != path[-1]:
            bad("levels", f"must start at {path[0]!r} (outermost) and end at {path[-1]!r} (feeds {array})")
        if len(levels) < 2:
            bad("levels", "needs at least two levels (the outermost and the one feeding the PEs)")
    if problems:
        raise SpecError("\n".join(problems))

    num_levels, num_ranks, num_tensors = len(levels), len(e.vars), len(e.tensors)
    axis_names, axis_sizes = array_axes(arch, array)

    def var(name: str, key: str) -> int | None:
        if name in e.vars:
            return e.vars.index(name)
        hint = f"; {name!r} is a rank, loops are over variables: use {name.lower()!r}" if name.lower() in e.vars else ""
        bad(key, f"unknown variable {name!r}{hint}; variables of {e.name}: {', '.join(e.vars)}")
        return None

    def level(name: str, key: str) -> int | None:
        if name in levels:
            return levels.index(name)
        bad(key, f"unknown level {name!r}; levels of the nest: {', '.join(levels)}")
        return None

    temporal_fixed = np.zeros((num_levels, num_ranks), dtype=np.int64)
    outer: list[list[int]] = [[] for _ in levels]
    inner: list[list[int]] = [[] for _ in levels]
    for t in c.temporal:
        li = level(t.target, f"{t.where}.target")
        for name, bound in t.factors.items():
            r = var(name, f"{t.where}.factors.{name}")
            if li is None or r is None:
                continue
            if temporal_fixed[li, r] and temporal_fixed[li, r] != bound:
                bad(f"{t.where}.factors.{name}", f"conflicts with {temporal_fixed[li, r]} given earlier for {t.target}")
            temporal_fixed[li, r] = bound
        for key, listed, into in (("outer", t.outer, outer), ("permutation", t.permutation, inner)):
            rs = [var(n, f"{t.where}.{key}") for n in listed]
            if li is None or None in rs:
                continue
            if into[li] and into[li] != rs:
                bad(f"{t.where}.{key}", f"conflicts with the {key} given earlier for {t.target}")
            into[li] = rs  # type: ignore[assignment]
    for li in range(num_levels):
        both = set(outer[li]) & set(inner[li])
        if both:
            bad(
                f"targets for {levels[li]}",
                f"{', '.join(e.vars[r] for r in sorted(both))} required both outermost and innermost",
            )

    spatial_fixed = np.zeros(num_ranks, dtype=np.int64)
    axis_allowed = np.ones((len(axis_sizes), num_ranks), dtype=bool)
    min_util = 0.0
    for s in c.spatial:
        if s.target != array:
            bad(f"{s.where}.target", f"{s.target!r} is not the array {e.name} is mapped on; use {array!r}")
            continue
        for name, factor in s.factors.items():
            r = var(name, f"{s.where}.factors.{name}")
            if r is not None:
                spatial_fixed[r] = factor
        if s.axes is not None:
            axis_allowed[:] = False
            for axis, names in s.axes.items():
                if isinstance(axis, int) and 0 <= axis < len(axis_names):
                    a = axis
                elif axis in axis_names:
                    a = axis_names.index(axis)
                else:
                    bad(
                        f"{s.where}.axes.{axis}",
                        f"unknown axis; axes of {array}: {', '.join(axis_names)} (or 0..{len(axis_names) - 1})",
                    )
                    continue
                for name in names:
                    r = var(name, f"{s.where}.axes.{axis}")
                    if r is not None:
                        axis_allowed[a, r] = True
        min_util = max(min_util, s.min_utilization)

    keep_forced = np.full((num_levels, num_tensors), -1, dtype=np.int8)
    keep_forced[0, :] = 1
    keep_forced[-1, :] = 1
    for b in c.bypass:
        li = level(b.target, f"{b.where}.target")
        if li == 0:
            bad(f"{b.where}.target", f"the outermost level {levels[0]!r} holds every tensor; it cannot bypass")
            continue
        for key, names, value in (("keep", b.keep, 1), ("bypass", b.bypass, 0)):
            for t in names:
                if t not in e.tensors:
                    bad(f"{b.where}.{key}", f"unknown tensor {t!r}; tensors of {e.name}: {', '.join(e.tensors)}")
                elif li is not None:
                    keep_forced[li, e.tensors.index(t)] = value
        if li is not None and set(b.keep) & set(b.bypass):
            bad(f"{b.where}", f"{', '.join(sorted(set(b.keep) & set(b.bypass)))} both kept and bypassed")
    # A level the user opened for bypass keeps nothing forced except what they said.
    for b in c.bypass:
        li = levels.index(b.target) if b.target in levels else None
        if li == num_levels - 1:
            for t in range(num_tensors):
                if e.tensors[t] not in b.keep and e.tensors[t] not in b.bypass:
                    keep_forced[li, t] = -1

    for r, v in enumerate(e.vars):
        size = int(e.var_sizes[r])
        fixed = int(np.prod(temporal_fixed[:, r][temporal_fixed[:, r] > 0])) * max(1, int(spatial_fixed[r]))
        if not c.imperfect and size % fixed:
            bad(
                f"factors of {v}",
                f"the fixed factors multiply to {fixed}, which does not divide {v}'s size {size} "
                "(allow padding with imperfect: true)",
            )
        if spatial_fixed[r] > 1 and not axis_allowed[:, r].any():
            bad(f"spatial factors of {v}", f"fixed at {spatial_fixed[r]} but no axis allows {v}")
    if problems:
        head = [f"{where}: {len(problems)} problems binding the constraints to {e.name} on {array}:"]
        raise SpecError("\n".join(head + problems) if len(problems) > 1 else problems[0])
    return _Bound(
        levels, axis_names, axis_sizes, temporal_fixed, spatial_fixed, axis_allowed, min_util, outer, inner, keep_forced
    )


# ---------------------------------------------------------------------------------------------------------
# Tables


def _tables(e: LoweredEinsum, arch: ArchSpec, array: str, c: Constraints, b: _Bound) -> MapSpace:
    num_levels, num_ranks, num_axes = len(b.levels), len(e.vars), len(b.axis_sizes)
    nest = nest_arch(arch, b.levels, array, b.axis_sizes, bandwidth="all")
    problem = nest_problem(e)
    spec_array = arch.array(array)
    cpp = cycles_per_point(e, spec_array, arch.compat.sum_op_cycles)
    a_index = [a.name for a in arch.arrays].index(array)
    flat = arch.flat
    energy_per_point = float(
        sum(n * flat.op_energy_pj[a_index, flat.op_names.index(op)] for op, n in e.ops_per_point.items())
    )

    # Factorizations per variable, grouped by (spatial part, padded size).
    notes: list[str] = []
    groups: list[list[tuple[tuple[int, ...], np.ndarray]]] = []
    for r, v in enumerate(e.vars):
        size = int(e.var_sizes[r])
        sizes = _padded_sizes(size, b.axis_sizes, c.max_padding) if c.imperfect else [size]
        rank_groups = []
        for padded in sizes:
            rank_groups += _factorizations(padded, b, r, num_levels)
        if not rank_groups:
            raise SpecError(
                f"{c.origin}: no factorization of {v} (size {size}) meets the constraints: fixed temporal factors "
                f"{ {b.levels[l]: int(f) for l, f in enumerate(b.temporal_fixed[:, r]) if f} }, spatial factor "
                f"{int(b.spatial_fixed[r]) or 'free'}, axes allowing it: "
                f"{[n for a, n in enumerate(b.axis_names) if b.axis_allowed[a, r]] or 'none'} "
                f"(axis sizes {dict(zip(b.axis_names, b.axis_sizes, strict=True))})"
            )
        if len(sizes) > 1:
            notes.append(f"{v}: padded sizes offered {sizes}")
        groups.append(rank_groups)
    max_groups = max(len(g) for g in groups)
    group_start = np.zeros((num_ranks, max_groups), dtype=np.int64)
    group_count = np.zeros((num_ranks, max_groups), dtype=np.int64)
    group_spatial = np.ones((num_ranks, max_groups, num_axes), dtype=np.int64)
    rows: list[np.ndarray] = []
    start = 0
    for r, rank_groups in enumerate(groups):
        for g, (spatial, temporal) in enumerate(rank_groups):
            group_start[r, g], group_count[r, g] = start, len(temporal)
            group_spatial[r, g] = spatial
            rows.append(temporal)
            start += len(temporal)
    trows = np.ascontiguousarray(np.concatenate(rows).astype(np.int64))

    assign = _assignments(group_spatial, group_count, b, c.spatial_ranks_per_axis)
    if not len(assign):
        raise SpecError(
            f"{c.origin}: no spatial assignment fits {array} "
            f"(axes {dict(zip(b.axis_names, b.axis_sizes, strict=True))}) with at most "
            f"{c.spatial_ranks_per_axis} variable(s) per axis, fixed spatial factors "
            f"{ {e.vars[r]: int(f) for r, f in enumerate(b.spatial_fixed) if f} } and min_utilization "
            f"{b.min_utilization}"
        )
    assign_spatial = np.ascontiguousarray(
        group_spatial[np.arange(num_ranks)[None, :], assign].transpose(0, 2, 1).astype(np.int64)
    )

    order_table, order_count = _order_tables(
        e.incidence.tobytes(), e.incidence.shape, num_levels, tuple(map(tuple, b.outer)), tuple(map(tuple, b.inner))
    )
    free_keep = b.keep_forced < 0
    free_bits = np.argwhere(free_keep)
    if 2 ** len(free_bits) > _MAX_KEEP_COMBOS:
        raise SpecError(
            f"{c.origin}: {len(free_bits)} free bypass choices give {2 ** len(free_bits)} combinations (at most "
            f"{_MAX_KEEP_COMBOS}); fix some with bypass targets"
        )
    keep_table = np.repeat((b.keep_forced > 0)[None], 2 ** len(free_bits), axis=0)
    for k, bits in enumerate(itertools.product((True, False), repeat=len(free_bits))):
        for (li, t), bit in zip(free_bits, bits, strict=True):
            keep_table[k, li, t] = bit

    free_temporal = b.temporal_fixed == 0
    free_spatial = b.axis_allowed & (b.spatial_fixed == 0)[None, :]
    outer_required = np.full((num_levels, num_ranks), -1, dtype=np.int64)
    inner_required = np.full((num_levels, num_ranks), -1, dtype=np.int64)
    order_fixed = np.full((num_levels, num_ranks), -1, dtype=np.int64)
    for li in range(num_levels):
        outer_required[li, : len(b.outer[li])] = b.outer[li]
        inner_required[li, : len(b.inner[li])] = b.inner[li]
        for k, r in enumerate(b.outer[li]):
            order_fixed[li, r] = k
        for k, r in enumerate(b.inner[li]):
            order_fixed[li, r] = num_ranks - len(b.inner[li]) + k
    if c.temporal or c.spatial or c.bypass:
        notes.append(
            f"constraints from {c.origin}: {len(c.temporal)} temporal, {len(c.spatial)} spatial, "
            f"{len(c.bypass)} bypass target(s)"
        )
    space = MapSpace(
        einsum=e,
        arch=arch,
        array=array,
        level_names=b.levels,
        axis_names=b.axis_names,
        problem=problem,
        nest_arch=nest,
        cycles_per_point=float(cpp),
        compute_energy_pj_per_point=energy_per_point,
        constraints=c,
        trows=trows,
        group_start=group_start,
        group_count=group_count,
        group_spatial=group_spatial,
        assign=assign,
        assign_spatial=assign_spatial,
        order_table=order_table,
        order_count=order_count,
        keep_table=np.ascontiguousarray(keep_table),
        free_temporal=free_temporal,
        free_spatial=free_spatial,
        free_keep=free_keep,
        order_fixed=order_fixed,
        outer_required=outer_required,
        inner_required=inner_required,
        min_utilization=b.min_utilization,
        notes=tuple(notes),
    )
    _check_footprints(space, b)
    return space


def _padded_sizes(size: int, axis_sizes: tuple[int, ...], max_padding: float) -> list[int]:
    """``size`` and its round-ups to a power of two or a multiple of an axis size, within ``max_padding``."""
    quanta = {1 << k for k in range(size.bit_length() + 1)} | set(axis_sizes)
    out = {size}
    for q in quanta:
        padded = -(-size // q) * q
        if padded - size <= max_padding * size:
            out.add(padded)
    return sorted(out)


@lru_cache(maxsize=4096)
def _ordered_factorizations(n: int, parts: int) -> tuple[tuple[int, ...], ...]:
    """Every ordered way to write ``n`` as a product of ``parts`` factors."""
    if parts == 0:
        return ((),) if n == 1 else ()
    if parts == 1:
        return ((n,),)
    return tuple((d, *rest) for d in divisors(n) for rest in _ordered_factorizations(n // d, parts - 1))


def _factorizations(size: int, b: _Bound, r: int, num_levels: int) -> list[tuple[tuple[int, ...], np.ndarray]]:
    """(spatial part, int64[n, L] temporal parts) of every factorization of ``size`` meeting the constraints."""
    fixed_t = b.temporal_fixed[:, r]
    fixed_product = int(np.prod(fixed_t[fixed_t > 0]))
    if size % fixed_product:
        return []
    rest = size // fixed_product
    free_levels = [l for l in range(num_levels) if fixed_t[l] == 0]
    axis_options = []
    for a, cap in enumerate(b.axis_sizes):
        axis_options.append([d for d in divisors(rest) if d <= cap] if b.axis_allowed[a, r] else [1])
    out = []
    for spatial in itertools.product(*axis_options):
        sp = math.prod(spatial)
        if rest % sp or (b.spatial_fixed[r] and sp != b.spatial_fixed[r]):
            continue
        free = _ordered_factorizations(rest // sp, len(free_levels))
        if not free:
            continue
        temporal = np.repeat(np.where(fixed_t > 0, fixed_t, 1)[None, :], len(free), axis=0).astype(np.int64)
        temporal[:, free_levels] = np.array(free, dtype=np.int64).reshape(len(free), len(free_levels))
        out.append((tuple(spatial), temporal))
    return out


def _assignments(group_spatial: np.ndarray, group_count: np.ndarray, b: _Bound, per_axis: int) -> np.ndarray:
    """int64[S, R]: one group per variable such that the axes fit (sizes, variables per axis, utilization)."""
    num_ranks = group_spatial.shape[0]
    axis_sizes = np.array(b.axis_sizes, dtype=np.int64)
    combos = np.zeros((1, 0), dtype=np.int64)
    product = np.ones((1, len(axis_sizes)), dtype=np.int64)
    used = np.zeros((1, len(axis_sizes)), dtype=np.int64)
    for r in range(num_ranks):
        g = np.flatnonzero(group_count[r] > 0)
        sp = group_spatial[r, g]  # [G, A]
        new_product = (product[:, None, :] * sp[None, :, :]).reshape(-1, len(axis_sizes))
        new_used = (used[:, None, :] + (sp[None, :, :] > 1)).reshape(-1, len(axis_sizes))
        ok = np.all(new_product <= axis_sizes, axis=1) & np.all(new_used <= per_axis, axis=1)
        left = np.repeat(combos, len(g), axis=0)
        right = np.tile(g, len(combos))[:, None]
        combos = np.concatenate([left, right], axis=1)[ok]
        product, used = new_product[ok], new_used[ok]
        if len(combos) > MAX_SPATIAL_ASSIGNMENTS:
            raise SpecError(
                f"more than {MAX_SPATIAL_ASSIGNMENTS} spatial assignments; narrow them with a spatial target "
                "(axes, factors or min_utilization)"
            )
    if b.min_utilization > 0:
        keep = np.prod(product.astype(np.float64), axis=1) >= b.min_utilization * float(np.prod(axis_sizes))
        combos = combos[keep]
    return np.ascontiguousarray(combos.astype(np.int64))


def _innermost_run(loops: Sequence[int], indexes: np.ndarray) -> frozenset[int]:
    """The innermost loops (of ``loops``, outermost first) up to the first one indexing the tensor."""
    run = []
    for r in reversed(loops):
        if indexes[r]:
            break
        run.append(r)
    return frozenset(run)


@lru_cache(maxsize=256)
def _order_tables(
    incidence_bytes: bytes,
    shape: tuple[int, int],
    num_levels: int,
    outer: tuple[tuple[int, ...], ...],
    inner: tuple[tuple[int, ...], ...],
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct full orders per level and active-loop mask (one per distinct set of innermost runs).

    Keyed by the tensor x variable incidence (as bytes and shape) and the required orders, so Einsums of one
    shape share their tables; the arrays returned are read-only.
    """
    incidence = np.frombuffer(incidence_bytes, dtype=np.bool_).reshape(shape)
    num_ranks = incidence.shape[1]
    tables: list[list[list[list[int]]]] = []
    for li in range(num_levels):
        per_mask = []
        for mask in range(1 << num_ranks):
            required = set(outer[li]) | set(inner[li])
            free = [r for r in range(num_ranks) if r not in required]
            active = [r for r in free if mask >> r & 1]
            inert = [r for r in free if not mask >> r & 1]
            outer_active = [r for r in outer[li] if mask >> r & 1]
            inner_active = [r for r in inner[li] if mask >> r & 1]
            orders, seen = [], set()
            perms = [tuple(active)] if li == num_levels - 1 else _distinct_perms(active, incidence)
            for perm in perms:
                signature = tuple(_innermost_run([*outer_active, *perm, *inner_active], row) for row in incidence)
                if signature in seen:
                    continue
                seen.add(signature)
                orders.append([*outer[li], *perm, *inert, *inner[li]])
            per_mask.append(orders)
        tables.append(per_mask)
    most = max(len(o) for per_mask in tables for o in per_mask)
    table = np.zeros((num_levels, 1 << num_ranks, most, num_ranks), dtype=np.int64)
    count = np.zeros((num_levels, 1 << num_ranks), dtype=np.int64)
    for li, per_mask in enumerate(tables):
        for mask, orders in enumerate(per_mask):
            count[li, mask] = len(orders)
            table[li, mask, : len(orders)] = orders
    table.flags.writeable = count.flags.writeable = False
    return table, count


def _distinct_perms(active: list[int], incidence: np.ndarray) -> list[tuple[int, ...]]:
    """Orders of ``active`` (outermost first), built from the innermost loop outwards, stopping once every
    tensor's innermost run has ended (the loops further out cannot change any run)."""
    out: list[tuple[int, ...]] = []

    def grow(inner_first: list[int], open_tensors: frozenset[int], left: list[int]) -> None:
        if not left or not open_tensors:
            out.append(tuple(left) + tuple(reversed(inner_first)))
            return
        for r in left:
            closed = frozenset(t for t in open_tensors if incidence[t, r])
            grow([*inner_first, r], open_tensors - closed, [x for x in left if x != r])

    grow([], frozenset(range(incidence.shape[0])), list(active))
    return out


def _check_footprints(space: MapSpace, b: _Bound) -> None:
    """Refuse a space where some level cannot hold even its smallest footprint; name the level and footprint."""
    e = space.einsum
    num_levels, num_ranks = space.num_levels, len(e.vars)
    s = space.nest_arch.spatial_level
    # Least extent per variable, group and level: the smallest product of the factors at levels >= l.
    trows = space.trows.astype(np.float64)
    inner = np.flip(np.cumprod(np.flip(trows, axis=1), axis=1), axis=1)  # [rows, L]: product at levels >= l
    least = np.full((num_ranks, space.group_count.shape[1], num_levels), np.inf)
    for r in range(num_ranks):
        for g in np.flatnonzero(space.group_count[r]):
            lo, n = space.group_start[r, g], space.group_count[r, g]
            least[r, g] = inner[lo : lo + n].min(axis=0)
    ranks = np.arange(num_ranks)[None, :]
    extent = least[ranks, space.assign]  # [S, R, L]
    spatial = np.prod(space.assign_spatial.astype(np.float64), axis=1)  # [S, R]
    for li in range(1, num_levels):
        held = [t for t in range(len(e.tensors)) if b.keep_forced[li, t] > 0]
        if not held:
            continue
        ext = extent[:, :, li] * (spatial if li < s else 1.0)
        tiles = np.stack([np.prod(np.where(e.incidence[t][None, :], ext, 1.0), axis=1) for t in held], axis=1)
        footprint = tiles.sum(axis=1)
        k = int(np.argmin(footprint))
        capacity = space.nest_arch.capacity_words[li]
        if footprint[k] > capacity:
            parts = ", ".join(f"{e.tensors[t]} {tiles[k, j]:.0f}" for j, t in enumerate(held))
            raise SpecError(
                f"no mapping of {e.name} on {space.array} fits level {space.level_names[li]!r}: its smallest "
                f"footprint under these constraints is {footprint[k]:.0f} words ({parts}), its capacity "
                f"{capacity:.0f} words per instance; relax the constraints (fixed factors, spatial factors, "
                f"kept tensors) or give {space.level_names[li]!r} at least {footprint[k]:.0f} words"
            )


# ---------------------------------------------------------------------------------------------------------
# Kernels


@kernel
def _set_assignment(s, assign, assign_spatial, group_count, counts, spatial_rank):
    """Tilings of assignment ``s``; fills ``counts`` (factorizations per variable) and ``spatial_rank``."""
    total = 1
    for r in range(assign.shape[1]):
        counts[r] = group_count[r, assign[s, r]]
        total *= counts[r]
        f = 1.0
        for a in range(assign_spatial.shape[1]):
            f *= assign_spatial[s, a, r]
        spatial_rank[r] = f
    return total


@kernel
def _set_tiling(
    s, t, assign, group_start, counts, spatial_rank, trows, incidence, capacity, spatial_level, keep_table,
    keep_allowed, order_count, temporal, extent, tile, mask, ocount, feasible, min_occ,
):  # fmt: skip
    """Set up tiling ``t`` of assignment ``s``: its temporal factors, the active-loop mask and distinct orders of
    each level, and which bypass choices fit (and are allowed); returns (bypass choices that fit, orders)."""
    num_levels = trows.shape[1]
    num_ranks = assign.shape[1]
    num_tensors = incidence.shape[0]
    x = t
    for r in range(num_ranks - 1, -1, -1):
        row = group_start[r, assign[s, r]] + x % counts[r]
        x //= counts[r]
        for l in range(num_levels):
            temporal[l, r] = trows[row, l]
    for r in range(num_ranks):
        e = 1.0
        for l in range(num_levels - 1, -1, -1):
            e *= temporal[l, r]
            if l == spatial_level - 1:
                e *= spatial_rank[r]
            extent[l, r] = e
    for l in range(num_levels):
        for k in range(num_tensors):
            w = 1.0
            for r in range(num_ranks):
                if incidence[k, r]:
                    w *= extent[l, r]
            tile[l, k] = w
    n_orders = 1
    for l in range(num_levels):
        m = 0
        for r in range(num_ranks):
            if temporal[l, r] > 1:
                m |= 1 << r
        mask[l] = m
        ocount[l] = order_count[l, m]
        n_orders *= ocount[l]
    n_feasible = 0
    for k in range(keep_table.shape[0]):
        ok = True
        for l in range(1, num_levels):
            occ = 0.0
            for j in range(num_tensors):
                if keep_table[k, l, j]:
                    occ += tile[l, j]
            if occ < min_occ[l]:
                min_occ[l] = occ
            if occ > capacity[l]:
                ok = False
        feasible[k] = ok and keep_allowed[k]
        if feasible[k]:
            n_feasible += 1
    return n_feasible, n_orders


@kernel
def _write_tiling(
    s, pos, assign_spatial, keep_table, order_table, temporal, mask, ocount, n_orders, feasible, odig,
    out_t, out_sp, out_o, out_k,
):  # fmt: skip
    """Write the points of the tiling set up by :func:`_set_tiling` (fitting bypass choices x orders) from row
    ``pos`` on; returns the next free row."""
    num_levels, num_ranks = temporal.shape
    num_tensors = keep_table.shape[2]
    num_axes = assign_spatial.shape[1]
    for k in range(keep_table.shape[0]):
        if not feasible[k]:
            continue
        for l in range(num_levels):
            odig[l] = 0
        for _ in range(n_orders):
            for l in range(num_levels):
                for r in range(num_ranks):
                    out_t[pos, l, r] = temporal[l, r]
                    out_o[pos, l, r] = order_table[l, mask[l], odig[l], r]
                for j in range(num_tensors):
                    out_k[pos, l, j] = keep_table[k, l, j]
            for a in range(num_axes):
                for r in range(num_ranks):
                    out_sp[pos, a, r] = assign_spatial[s, a, r]
            pos += 1
            for l in range(num_levels - 1, -1, -1):
                odig[l] += 1
                if odig[l] < ocount[l]:
                    break
                odig[l] = 0
    return pos


@kernel
def _enumerate(
    cursor, assign, assign_spatial, group_start, group_count, trows, incidence, capacity, spatial_level,
    keep_table, order_table, order_count, out_t, out_sp, out_o, out_k, min_occ, max_tilings,
):  # fmt: skip
    """Write the feasible points from ``cursor`` on into the out arrays; return (written, points passed)."""
    n_cap = out_t.shape[0]
    num_levels = trows.shape[1]
    num_ranks = assign.shape[1]
    num_tensors = incidence.shape[0]
    num_keep = keep_table.shape[0]
    counts = np.empty(num_ranks, np.int64)
    temporal = np.empty((num_levels, num_ranks), np.int64)
    spatial_rank = np.empty(num_ranks)
    extent = np.empty((num_levels, num_ranks))
    tile = np.empty((num_levels, num_tensors))
    mask = np.empty(num_levels, np.int64)
    ocount = np.empty(num_levels, np.int64)
    odig = np.empty(num_levels, np.int64)
    feasible = np.empty(num_keep, np.bool_)
    every = np.ones(num_keep, np.bool_)
    pos = 0
    points = 0.0
    visited = 0
    s = cursor[0]
    t = cursor[1]
    while s < assign.shape[0]:
        total = _set_assignment(s, assign, assign_spatial, group_count, counts, spatial_rank)
        while t < total:
            if visited >= max_tilings:
                cursor[0] = s
                cursor[1] = t
                return pos, points
            n_feasible, n_orders = _set_tiling(
                s, t, assign, group_start, counts, spatial_rank, trows, incidence, capacity, spatial_level,
                keep_table, every, order_count, temporal, extent, tile, mask, ocount, feasible, min_occ,
            )  # fmt: skip
            if pos + n_feasible * n_orders > n_cap:
                cursor[0] = s
                cursor[1] = t
                return pos, points
            points += num_keep * n_orders
            visited += 1
            pos = _write_tiling(
                s, pos, assign_spatial, keep_table, order_table, temporal, mask, ocount, n_orders, feasible, odig,
                out_t, out_sp, out_o, out_k,
            )  # fmt: skip
            t += 1
        s += 1
        t = 0
    cursor[0] = s
    cursor[1] = 0
    return pos, points


@kernel
def _enumerate_listed(
    cursor, tiling_s, tiling_t, keep_allowed, assign, assign_spatial, group_start, group_count, trows, incidence,
    capacity, spatial_level, keep_table, order_table, order_count, out_t, out_sp, out_o, out_k, out_src,
):  # fmt: skip
    """Like :func:`_enumerate` over the listed tilings only (``cursor[0]`` indexes the list), each with its own
    allowed bypass choices (``keep_allowed[i]``); ``out_src`` gets the list index of each row's tiling. Returns
    (written, points of the tilings passed)."""
    n_cap = out_t.shape[0]
    num_levels = trows.shape[1]
    num_ranks = assign.shape[1]
    num_tensors = incidence.shape[0]
    num_keep = keep_table.shape[0]
    counts = np.empty(num_ranks, np.int64)
    temporal = np.empty((num_levels, num_ranks), np.int64)
    spatial_rank = np.empty(num_ranks)
    extent = np.empty((num_levels, num_ranks))
    tile = np.empty((num_levels, num_tensors))
    mask = np.empty(num_levels, np.int64)
    ocount = np.empty(num_levels, np.int64)
    odig = np.empty(num_levels, np.int64)
    feasible = np.empty(num_keep, np.bool_)
    min_occ = np.full(num_levels, np.inf)
    pos = 0
    points = 0.0
    i = cursor[0]
    last_s = -1
    while i < tiling_s.shape[0]:
        s = tiling_s[i]
        if s != last_s:
            _set_assignment(s, assign, assign_spatial, group_count, counts, spatial_rank)
            last_s = s
        n_feasible, n_orders = _set_tiling(
            s, tiling_t[i], assign, group_start, counts, spatial_rank, trows, incidence, capacity, spatial_level,
            keep_table, keep_allowed[i], order_count, temporal, extent, tile, mask, ocount, feasible, min_occ,
        )  # fmt: skip
        if pos + n_feasible * n_orders > n_cap:
            break
        points += num_keep * n_orders
        end = _write_tiling(
            s, pos, assign_spatial, keep_table, order_table, temporal, mask, ocount, n_orders, feasible, odig,
            out_t, out_sp, out_o, out_k,
        )  # fmt: skip
        out_src[pos:end] = i
        pos = end
        i += 1
    cursor[0] = i
    return pos, points


@kernel
def _sample(
    uniforms, assign, assign_spatial, group_start, group_count, trows, keep_table, order_table, order_count,
    out_t, out_sp, out_o, out_k,
):  # fmt: skip
    """Random points from pre-drawn uniforms (one row of uniforms per point: reproducible for a seed)."""
    num_levels = trows.shape[1]
    num_ranks = assign.shape[1]
    num_axes = assign_spatial.shape[1]
    num_tensors = keep_table.shape[2]
    for i in range(uniforms.shape[0]):
        s = min(int(uniforms[i, 0] * assign.shape[0]), assign.shape[0] - 1)
        k = min(int(uniforms[i, 1] * keep_table.shape[0]), keep_table.shape[0] - 1)
        for r in range(num_ranks):
            g = assign[s, r]
            row = group_start[r, g] + min(int(uniforms[i, 2 + r] * group_count[r, g]), group_count[r, g] - 1)
            for l in range(num_levels):
                out_t[i, l, r] = trows[row, l]
            for a in range(num_axes):
                out_sp[i, a, r] = assign_spatial[s, a, r]
        for l in range(num_levels):
            m = 0
            for r in range(num_ranks):
                if out_t[i, l, r] > 1:
                    m |= 1 << r
            c = order_count[l, m]
            o = min(int(uniforms[i, 2 + num_ranks + l] * c), c - 1)
            for r in range(num_ranks):
                out_o[i, l, r] = order_table[l, m, o, r]
            for j in range(num_tensors):
                out_k[i, l, j] = keep_table[k, l, j]


def _count_points_exact(space: MapSpace) -> float:
    """Points of the space (see :meth:`MapSpace.size`); factorization histograms shared between groups."""
    num_levels = space.num_levels
    num_ranks = space.problem.rank_sizes.shape[0]
    patterns = 1 << (num_levels - 1)
    bits = 1 << np.arange(num_levels - 1)
    # Class of each (variable, group): groups with the same histogram count alike.
    hist_rows: list[list[np.ndarray]] = []
    class_of = np.zeros(space.group_count.shape, dtype=np.int64)
    for r in range(num_ranks):
        seen: dict[bytes, int] = {}
        rows = []
        for g in np.flatnonzero(space.group_count[r]):
            lo, n = space.group_start[r, g], space.group_count[r, g]
            pattern = (space.trows[lo : lo + n, :-1] > 1) @ bits
            h = np.bincount(pattern, minlength=patterns).astype(np.float64)
            key = h.tobytes()
            if key not in seen:
                seen[key] = len(rows)
                rows.append(h)
            class_of[r, g] = seen[key]
        hist_rows.append(rows)
    most = max(len(rows) for rows in hist_rows)
    hist = np.zeros((num_ranks, most, patterns))
    for r, rows in enumerate(hist_rows):
        hist[r, : len(rows)] = rows
    classes = class_of[np.arange(num_ranks)[None, :], space.assign]
    unique, weights = np.unique(classes, axis=0, return_counts=True)
    # Sum over class vectors (weighted) of sum over activity patterns p (one per variable) of
    # prod_r hist[r, class_r, p_r] x F(p), F(p) = prod over levels of the distinct orders of the active loops:
    # a tensor contraction, one variable at a time along the tree of class-vector prefixes, variables with the
    # fewest classes first (the large early tensors are then shared by many class vectors).
    order = sorted(range(num_ranks), key=lambda r: len(np.unique(unique[:, r])))
    unique, hist = unique[:, order], hist[order]
    rest = np.indices((patterns,) * (num_ranks - 1)) if num_ranks > 1 else np.zeros((0,), dtype=np.int64)
    base = [  # the masks of the active loops at each level from variables 1.. of the new order
        sum(((rest[j] >> l) & 1) << order[j + 1] for j in range(num_ranks - 1)) if num_ranks > 1 else 0
        for l in range(num_levels - 1)
    ]

    def slab(p0: int) -> np.ndarray:
        """F with the first variable's pattern fixed at ``p0``."""
        out = np.ones((patterns,) * (num_ranks - 1))
        for l in range(num_levels - 1):
            out = out * space.order_count[l, base[l] | (((p0 >> l) & 1) << order[0])]
        return out

    def contract(tensor: np.ndarray, depth: int, rows: np.ndarray) -> float:
        if depth == num_ranks:
            return float(tensor) * float(weights[rows].sum())
        column = unique[rows, depth]
        return sum(
            contract(np.tensordot(hist[depth, c], tensor, axes=(0, 0)), depth + 1, rows[column == c])
            for c in np.unique(column)
        )

    total = 0.0
    every = np.arange(len(unique))
    for c in np.unique(unique[:, 0]):
        first = sum(hist[0, c, p0] * slab(p0) for p0 in range(patterns) if hist[0, c, p0])
        total += contract(np.asarray(first, dtype=np.float64), 1, every[unique[:, 0] == c])
    return total * space.num_keep
