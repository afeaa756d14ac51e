"""Search for the best mapping of one Einsum: exhaustive with pruning, random sampling, or annealing.

The flow, one stage per line; each stage streams into the next, so memory is bounded by one batch however
large the space::

    space = MapSpace.build(einsum, arch, array, constraints)      # tables; constraints checked (mappers.space)
    batches = exhaustive | random | anneal                         # mappings as arrays, batch by batch
    costs = evaluate_nest(problem, nest_arch, batch)               # the Numba cost kernel (simulator.nest)
    best.update(batch, costs)                                      # keep only the best feasible mapping

* **Exhaustive** walks the whole space in order, dropping points whose tiles overflow a level before they
  are costed (capacity pruning) and never generating two loop orders that give every tensor the same reuse
  (symmetry pruning, in the tables). It stops early, with ``complete=False``, at an evaluation or time budget.
  Without a budget it **branches and bounds** (:func:`_branch_and_bound`, bounds in :mod:`mappers.bound`): every
  tiling gets a lower bound on latency and energy, tilings are costed best bound first, and a tiling or bypass
  choice that the best mapping found provably beats is skipped with all its points; the answer is the walk's
  (the same mapping, ties to the point the space lists first), proven optimal without costing most points.
* **Random** costs uniformly drawn points (spatial assignment, factorizations, orders, bypass).
* **Anneal** runs many simulated-annealing chains side by side (:mod:`mappers.heuristic`).

Objectives (:class:`Objective`): ``latency`` (then energy), ``energy`` (then latency), ``edp`` (then
latency), or ``weighted:WL,WE``: WL x latency / its lower bound + WE x energy / its lower bound. Latency is
the cost kernel's (compute overlapped with every level's transfers at their bandwidths); energy adds the
functional units' energy per computed point (padding included) to the kernel's storage energy.

A search is reproducible for a seed (all random draws come from one ``numpy.random.Generator``); Ctrl-C
returns the best mapping found so far (``interrupted=True``); ``progress=True`` shows a tqdm bar.

>>> from einsum.cascade import Cascade
>>> from einsum.lower import lower
>>> from simulator.specs import load_arch
>>> gemm = Cascade.from_text("input A[T,K], B[K,N]\\nC[t,n] = sum[k] A[t,k] * B[k,n]")
>>> e = lower(gemm, {"T": 64, "K": 64, "N": 64}).einsum("C")
>>> space = MapSpace.build(e, load_arch("flat-edge"), levels=("dram", "global_buffer", "pe_reg_2d"))
>>> best = search(space, "latency", method="exhaustive")
>>> best.complete, best.latency_cycles == space.lower_bounds()[0]  # compulsory DRAM traffic at full bandwidth
(True, True)

:func:`search_nest` (below) is the FuseMax study's three-level space as constraints on this one
(:func:`nest_constraints`: spatial variables given, the PE registers holding one word of each tensor),
searched exhaustively.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from einsum.errors import SpecError
from einsum.lower import LoweredEinsum
from mappers.constraints import BypassConstraint, Constraints, SpatialConstraint, TemporalConstraint
from mappers.heuristic import anneal
from mappers.space import MapSpace, array_axes
from simulator.mapping import EinsumMapping
from simulator.nest import MappingBatch, NestCosts, empty_costs, evaluate_nest
from simulator.specs import ArchSpec

__all__ = [
    "AUTO_EXHAUSTIVE_POINTS",
    "BENCH_ARCH",
    "DEFAULT_BUDGET",
    "METHODS",
    "MapResult",
    "Objective",
    "bench_mapper",
    "bench_space",
    "nest_constraints",
    "search",
    "search_nest",
]

METHODS = ("auto", "exhaustive", "random", "anneal")
"""``auto``: exhaustive when the space has at most the budget (default :data:`AUTO_EXHAUSTIVE_POINTS`)
points, else anneal."""
AUTO_EXHAUSTIVE_POINTS = 10**7
"""Without a budget, ``auto`` enumerates spaces up to this many points and anneals larger ones."""
DEFAULT_BUDGET = 200_000
"""Evaluations of ``random`` and ``anneal`` when neither a budget nor a time is given."""
DEFAULT_BATCH = 1 << 16
"""Mappings per kernel call."""
_PARALLEL_MIN = 4096
"""Smaller batches run on one thread (starting Numba's threads costs more than they save)."""

_PROBE = 1 << 15
"""Points (and tilings visited) of the walk's first batch in a branch and bound: its first incumbent, and the
whole walk where the space is that small. Walking 32K points takes tens of milliseconds, less than computing the
bounds of a space that small (the FuseMax study's matmul spaces, 1K-21K fitting points, walk 2x faster than they
branch and bound)."""

_TIE = 1e-12
"""Relative difference below which two costs count as equal (the secondary key then decides)."""


@dataclass(frozen=True)
class Objective:
    """What to minimise (module docstring). Build from text with :meth:`parse`.

    >>> Objective.parse("weighted:2,1")
    Objective(name='weighted', latency_weight=2.0, energy_weight=1.0)
    """

    name: str
    """latency, energy, edp or weighted."""
    latency_weight: float = 1.0
    """Weight of latency / its lower bound (weighted only)."""
    energy_weight: float = 1.0
    """Weight of energy / its lower bound (weighted only)."""

    @classmethod
    def parse(cls, text: str | Objective) -> Objective:
        """``latency``, ``energy``, ``edp``, ``weighted`` (equal weights) or ``weighted:WL,WE``."""
        if isinstance(text, Objective):
            return text
        name, _, weights = str(text).partition(":")
        if name in ("latency", "energy", "edp") and not weights:
            return cls(name)
        if name == "weighted":
            if not weights:
                return cls(name)
            parts = weights.split(",")
            try:
                wl, we = (float(p) for p in parts)
            except ValueError:
                wl = we = -1.0
            if len(parts) == 2 and wl >= 0 and we >= 0 and wl + we > 0:
                return cls(name, wl, we)
        raise SpecError(
            f"objective {text!r} is unknown; choose from latency, energy, edp, weighted or weighted:WL,WE "
            "(two weights >= 0, e.g. weighted:1,0.5)"
        )

    def keys(self, space: MapSpace) -> Callable[[NestCosts], tuple[np.ndarray, np.ndarray]]:
        """(primary, secondary) cost per mapping, both minimised; energy includes the compute."""
        per_point = space.compute_energy_pj_per_point
        combine = self.combine(space)

        def keys(costs: NestCosts) -> tuple[np.ndarray, np.ndarray]:
            return combine(costs.latency_cycles, costs.energy_pj + costs.padded_points * per_point)

        return keys

    def combine(self, space: MapSpace) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """(primary, secondary) from latency cycles and energy pJ; both grow with each, so lower bounds on latency
        and energy give lower bounds on the keys (the branch and bound relies on it)."""
        latency_bound, energy_bound = space.lower_bounds()

        def combine(latency: np.ndarray, energy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            if self.name == "latency":
                return latency, energy
            if self.name == "energy":
                return energy, latency
            if self.name == "edp":
                return latency * energy, latency
            mixed = self.latency_weight * latency / latency_bound + self.energy_weight * energy / energy_bound
            return mixed, latency

        return combine

    def __str__(self) -> str:
        return f"weighted:{self.latency_weight:g},{self.energy_weight:g}" if self.name == "weighted" else self.name


@dataclass(frozen=True, eq=False)
class MapResult:
    """The best feasible mapping a search found, its costs, and what the search did."""

    space: MapSpace
    """The space searched."""
    objective: Objective
    """What was minimised."""
    method: str
    """exhaustive, random or anneal."""
    mapping: EinsumMapping
    """The best mapping as a loop nest."""
    batch: MappingBatch
    """The same mapping as kernel arrays (one row)."""
    costs: NestCosts
    """Its costs from the kernel (one row)."""
    evaluated: int
    """Mappings costed."""
    feasible_evaluated: int
    """Of those, the ones that fit every level."""
    points_passed: float
    """Points of the space the exhaustive walk passed, pruned ones included (0 for sampling methods)."""
    seconds: float
    """Wall time of the search (building the space excluded)."""
    complete: bool
    """Whether the whole space was covered (exhaustive, not stopped by a budget or Ctrl-C)."""
    interrupted: bool
    """Whether Ctrl-C ended the search."""
    seed: int
    """Seed of the random draws."""

    @property
    def latency_cycles(self) -> float:
        return float(self.costs.latency_cycles[0])

    @property
    def latency_s(self) -> float:
        return self.latency_cycles / self.space.arch.clock_hz

    @property
    def dram_words(self) -> float:
        """Words read from, filled into and updated in DRAM (the outermost level), summed over tensors."""
        c = self.costs
        return float(c.reads_words[0, 0].sum() + c.fills_words[0, 0].sum() + c.updates_words[0, 0].sum())

    @property
    def compute_energy_pj(self) -> float:
        return float(self.costs.padded_points[0]) * self.space.compute_energy_pj_per_point

    @property
    def energy_pj(self) -> float:
        """Storage plus compute energy, in pJ."""
        return float(self.costs.energy_pj[0]) + self.compute_energy_pj

    @property
    def edp(self) -> float:
        """Energy-delay product, in pJ x s."""
        return self.energy_pj * self.latency_s

    @property
    def evaluations_per_s(self) -> float:
        return self.evaluated / self.seconds if self.seconds > 0 else math.inf

    @property
    def space_size(self) -> int:
        return self.space.size

    def breakdown(self) -> list[dict[str, Any]]:
        """Per level (then the compute): capacity, occupancy, words read/filled/updated, energy, cycles."""
        c, arch, e = self.costs, self.space.nest_arch, self.space.einsum
        rows = []
        for l, name in enumerate(self.space.level_names):
            reads, fills, updates = c.reads_words[0, l], c.fills_words[0, l], c.updates_words[0, l]
            rows.append(
                {
                    "level": name,
                    "capacity_words": float(arch.capacity_words[l]),
                    "instances": int(arch.instances[l]),
                    "occupancy_words": float(c.occupancy_words[0, l]),
                    "keeps": [t for t, k in zip(e.tensors, self.batch.keep[0, l], strict=True) if k],
                    "reads_words": {t: float(w) for t, w in zip(e.tensors, reads, strict=True)},
                    "fills_words": {t: float(w) for t, w in zip(e.tensors, fills, strict=True)},
                    "updates_words": {t: float(w) for t, w in zip(e.tensors, updates, strict=True)},
                    "energy_pj": float(
                        reads.sum() * arch.read_energy_pj_per_word[l]
                        + (fills.sum() + updates.sum()) * arch.write_energy_pj_per_word[l]
                    ),
                    "transfer_cycles": float(c.transfer_cycles[0, l]),
                }
            )
        rows.append(
            {
                "level": "compute",
                "energy_pj": self.compute_energy_pj,
                "transfer_cycles": float(c.compute_cycles[0]),
                "points": float(c.padded_points[0]),
                "pes_used": float(c.pes_used[0]),
            }
        )
        return rows

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready)."""
        latency_bound, energy_bound = self.space.lower_bounds()
        m = self.mapping
        return {
            "einsum": self.space.einsum.name,
            "text": self.space.einsum.text,
            "arch": self.space.arch.name,
            "array": self.space.array,
            "objective": str(self.objective),
            "method": self.method,
            "latency_s": self.latency_s,
            "latency_cycles": self.latency_cycles,
            "energy_pj": self.energy_pj,
            "edp": self.edp,
            "utilization": float(self.costs.utilization[0]),
            "lower_bound_latency_s": latency_bound / self.space.arch.clock_hz,
            "lower_bound_energy_pj": energy_bound,
            "space_size": self.space_size,
            "evaluations": self.evaluated,
            "feasible_evaluations": self.feasible_evaluated,
            "evaluations_per_s": self.evaluations_per_s,
            "seconds": self.seconds,
            "complete": self.complete,
            "interrupted": self.interrupted,
            "seed": self.seed,
            "mapping": {
                "levels": [
                    {"level": name, "loops": [list(loop) for loop in loops], "keeps": sorted(keeps)}
                    for name, loops, keeps in zip(m.levels, m.temporal, m.keep, strict=True)
                ],
                "spatial": {
                    axis: [list(loop) for loop in loops]
                    for axis, loops in zip(self.space.axis_names, m.spatial, strict=True)
                },
            },
            "breakdown": self.breakdown(),
            "notes": list(self.space.notes),
        }


def search(
    space: MapSpace,
    objective: str | Objective = "latency",
    *,
    method: str = "auto",
    budget: int | None = None,
    time_s: float | None = None,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH,
    parallel: bool = True,
    progress: bool = False,
    prune: bool = True,
) -> MapResult:
    """The best feasible mapping of ``space`` under ``objective`` (module docstring).

    ``budget`` caps the evaluations and ``time_s`` the seconds (either ends an exhaustive search early);
    ``parallel`` spreads each batch over Numba's threads; ``progress`` shows a tqdm bar on stderr. An exhaustive
    search without a budget or time limit branches and bounds (:func:`_branch_and_bound`) unless ``prune`` is
    false (then every fitting point is costed; the answer is the same). Raises
    :class:`einsum.errors.SpecError` for bad arguments and when no evaluated mapping fits.
    """
    objective = Objective.parse(objective)
    problems = []
    if method not in METHODS:
        problems.append(f"method {method!r} is unknown; choose from {', '.join(METHODS)}")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
        problems.append(f"budget must be an int >= 1 (evaluations), got {budget!r}")
    if time_s is not None and not (isinstance(time_s, int | float) and time_s > 0):
        problems.append(f"time_s must be a number > 0 (seconds), got {time_s!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        problems.append(f"batch_size must be an int >= 1, got {batch_size!r}")
    if problems:
        raise SpecError("search: " + "; ".join(problems))
    if method == "auto":
        method = "exhaustive" if space.size <= (budget or AUTO_EXHAUSTIVE_POINTS) else "anneal"
    if method != "exhaustive" and budget is None and time_s is None:
        budget = DEFAULT_BUDGET

    whole = method == "exhaustive" and budget is None and time_s is None
    memo = (space.fingerprint, str(objective), prune) if whole else None
    if memo in _COMPLETE:  # a space with the same points at the same costs: the same complete answer
        _COMPLETE.move_to_end(memo)
        found = _COMPLETE[memo]
        return dataclasses.replace(found, space=space, mapping=space.to_mapping(found.batch), seed=seed)
    if whole and prune:
        found = _branch_and_bound(space, objective, batch_size, parallel, progress, seed)
        if found is not None:
            if found.complete:
                _remember(memo, found)
            return found

    rng = np.random.default_rng(seed)
    keys = objective.keys(space)
    best = _Reducer(keys)
    walk = _Walk(space)
    start = time.perf_counter()
    evaluated = 0

    def spent() -> float:
        """Fraction of the budget (evaluations or time) spent."""
        fractions = [0.0]
        if budget is not None:
            fractions.append(evaluated / budget)
        if time_s is not None:
            fractions.append((time.perf_counter() - start) / time_s)
        return max(fractions)

    stages: dict[str, Callable[[], Generator[MappingBatch, NestCosts, None]]] = {
        "exhaustive": lambda: walk.batches(batch_size),
        "random": lambda: _random(space, rng, batch_size, spent),
        "anneal": lambda: anneal(space, keys, rng, spent, chains=_chains(budget)),
    }
    total, unit = (space.size if progress else None, "pt") if method == "exhaustive" else (budget, "eval")
    interrupted = truncated = False
    buffer: NestCosts | None = None
    with _bar(total, unit, progress) as bar, contextlib.closing(stages[method]()) as producer:
        try:
            batch = next(producer, None)
            while batch is not None:
                n = batch.num_mappings if budget is None else min(batch.num_mappings, budget - evaluated)
                truncated |= n < batch.num_mappings
                costs = None
                if n:
                    batch = _head(batch, n)
                    if buffer is None or buffer.feasible.shape[0] < n:  # outputs allocated once, rows reused
                        buffer = empty_costs(max(n, batch_size), space.num_levels, len(space.einsum.tensors))
                    costs = evaluate_nest(
                        space.problem, space.nest_arch, batch, cycles_per_point=space.cycles_per_point,
                        parallel=parallel and n >= _PARALLEL_MIN, check=not evaluated, out=buffer,
                    )  # fmt: skip  # the first batch is checked; the rest come from the same tables
                    evaluated += n
                    best.update(batch, costs)
                bar.update(walk.take_points() if method == "exhaustive" else n)
                if spent() >= 1.0:
                    break
                batch = _send(producer, costs)
        except KeyboardInterrupt:
            interrupted = True
    seconds = time.perf_counter() - start
    if best.batch is None:
        raise SpecError(_explain_nothing_fits(space, best, walk, method, evaluated, interrupted))
    found = MapResult(
        space=space,
        objective=objective,
        method=method,
        mapping=space.to_mapping(best.batch),
        batch=best.batch,
        costs=best.costs,
        evaluated=evaluated,
        feasible_evaluated=best.feasible,
        points_passed=walk.points,
        seconds=seconds,
        complete=method == "exhaustive" and walk.done and not (interrupted or truncated),
        interrupted=interrupted,
        seed=seed,
    )
    if memo is not None and found.complete:
        _remember(memo, found)
    return found


def _remember(memo: tuple[bytes, str, bool], found: MapResult) -> None:
    _COMPLETE[memo] = dataclasses.replace(found, space=None)  # type: ignore[arg-type]  # the tables not kept
    while len(_COMPLETE) > _COMPLETE_KEPT:
        _COMPLETE.popitem(last=False)


_COMPLETE: OrderedDict[tuple[bytes, str, bool], MapResult] = OrderedDict()
"""Complete exhaustive results by (space fingerprint, objective, pruned), least recently used first; kept without their
space (a hit is given the space it was asked for), so the memo holds one mapping and its costs per entry."""
_COMPLETE_KEPT = 1024


def _branch_and_bound(
    space: MapSpace, objective: Objective, batch_size: int, parallel: bool, progress: bool, seed: int
) -> MapResult | None:
    """Exhaustive search that skips what provably cannot win; None where the bounds would cost too much (the
    caller then walks the whole space).

    Every tiling that fits at all gets a lower bound on latency and energy (:func:`mappers.bound.tiling_bounds`).
    Tilings are visited best bound first, so the incumbent is good early; before a group of tilings is costed,
    each tiling's bypass choices get the tighter bounds of :func:`mappers.bound.keep_bounds` (orders shared between
    tensors), and a tiling or bypass choice whose bound the incumbent beats is skipped with all its points. The
    walk ends at the first tiling whose bound the incumbent beats on the primary key (the rest are sorted after
    it). The answer is the walk's: ties go to the point the whole space lists first (:class:`_Reducer`).
    """
    from mappers.bound import BOUND_SLACK, keep_bounds, tiling_bounds

    start = time.perf_counter()
    keys = objective.keys(space)
    # The walk's first batch: the whole answer where the space fits in one batch, else a first incumbent (and what
    # Ctrl-C returns while the bounds are computed).
    walk, first = _Walk(space), _Reducer(keys)
    out = space.new_batch(min(batch_size, _PROBE))
    buffer = empty_costs(max(batch_size, out.num_mappings), space.num_levels, len(space.einsum.tensors))
    evaluated = 0
    interrupted = False

    def cost(batch: MappingBatch) -> NestCosts:
        return evaluate_nest(
            space.problem, space.nest_arch, batch, cycles_per_point=space.cycles_per_point,
            parallel=parallel and batch.num_mappings >= _PARALLEL_MIN, check=not evaluated, out=buffer,
        )  # fmt: skip

    def result(reducer: _Reducer, complete: bool) -> MapResult:
        feasible = first.feasible + (best.feasible if best is not None else 0)
        with _bar(space.size if progress else None, "pt", progress) as bar:
            bar.update(space.size if complete else 0)
        return MapResult(
            space=space, objective=objective, method="exhaustive", mapping=space.to_mapping(reducer.batch),
            batch=reducer.batch, costs=reducer.costs, evaluated=evaluated, feasible_evaluated=feasible,
            points_passed=float(space.size) if complete else walk.points, seconds=time.perf_counter() - start,
            complete=complete, interrupted=not complete, seed=seed,
        )  # fmt: skip

    best: _Reducer | None = None
    try:
        n, points = space.enumerate(walk.cursor, out, walk.min_occupancy, max_tilings=_PROBE)
        walk.points += points
        if n:
            first.update(_head(out, n), cost(_head(out, n)))
            evaluated += n
        if walk.done:
            return result(first, True) if first.batch is not None else None  # the walk itself; None: it explains
        rows = tiling_bounds(space)
    except KeyboardInterrupt:
        if first.batch is None:
            raise SpecError(_explain_nothing_fits(space, first, walk, "exhaustive", evaluated, True)) from None
        return result(first, False)
    if rows is None or not len(rows[0]):
        return None  # too many tilings to bound, or none fits (the walk explains which level overflows)
    tiling_s, tiling_t, latency, energy = rows
    combine = objective.combine(space)
    low = 1.0 - BOUND_SLACK

    def bounds(latency: np.ndarray, energy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lower bounds on the keys (inf where a bypass choice overflows)."""
        overflow = ~(np.isfinite(latency) & np.isfinite(energy))
        primary, secondary = combine(np.where(overflow, 1.0, latency) * low, np.where(overflow, 1.0, energy) * low)
        return np.where(overflow, np.inf, primary * low), np.where(overflow, np.inf, secondary * low)

    primary, secondary = bounds(latency, energy)
    ranked = np.lexsort((secondary, primary))
    offsets = np.concatenate([[0], np.cumsum(space.tilings_per_assignment)]).astype(np.int64)
    position = offsets[tiling_s] + tiling_t  # the tiling's place in the space's order (for ties)
    best = _Reducer(keys)
    out = space.new_batch(batch_size)
    source = np.empty(out.num_mappings, dtype=np.int64)

    def incumbent() -> tuple[float, float] | None:
        """The best key seen (the walk's first batch included): what a tiling's bounds are held against."""
        if best.key is None or (first.key is not None and _better(first.key, best.key)):
            return first.key
        return best.key

    i, group = 0, 16
    try:
        while i < len(ranked):
            key = incumbent()
            if key is not None and key[0] < primary[ranked[i]] * (1 - _TIE):
                break  # every tiling left is worse on the primary key
            chosen = ranked[i : i + group]
            i, group = i + len(chosen), min(group * 2, 4096)
            if key is not None:
                chosen = chosen[~_beaten(key, primary[chosen], secondary[chosen])]
            if not len(chosen):
                continue
            keep_latency, keep_energy = keep_bounds(space, tiling_s[chosen], tiling_t[chosen])
            keep_primary, keep_secondary = bounds(keep_latency, keep_energy)
            allowed = np.isfinite(keep_primary)
            if key is not None:
                allowed &= ~_beaten(key, keep_primary, keep_secondary)
            chosen, allowed = chosen[allowed.any(axis=1)], allowed[allowed.any(axis=1)]
            listed_s, listed_t = tiling_s[chosen], tiling_t[chosen]
            cursor = np.zeros(1, dtype=np.int64)
            while cursor[0] < len(chosen):
                n = space.enumerate_listed(listed_s, listed_t, allowed, cursor, out, source)
                batch = _head(out, n)
                costs = cost(batch)
                evaluated += n
                best.update(batch, costs, position[chosen][source[:n]])
    except KeyboardInterrupt:
        interrupted = True
    if interrupted:
        found = [r for r in (best, first) if r.batch is not None]
        if not found:
            raise SpecError(_explain_nothing_fits(space, best, walk, "exhaustive", evaluated, True))
        return result(found[1] if len(found) > 1 and _better(found[1].key, found[0].key) else found[0], False)
    if best.batch is None:
        return None  # nothing fits (the walk explains which level overflows)
    return result(best, True)


def _beaten(key: tuple[float, float], primary: np.ndarray, secondary: np.ndarray) -> np.ndarray:
    """Where ``key`` beats every point whose keys are at least (``primary``, ``secondary``) (see :func:`_better`):
    those points can neither win nor tie."""
    return (key[0] < primary * (1 - _TIE)) | ((key[0] <= primary * (1 + _TIE)) & (key[1] < secondary * (1 - _TIE)))


def _chains(budget: int | None) -> int:
    return 256 if budget is None else int(min(256, max(32, budget // 300)))


def _send(producer: Generator[MappingBatch, NestCosts, None], costs: NestCosts | None) -> MappingBatch | None:
    try:
        return producer.send(costs)
    except StopIteration:
        return None


@contextlib.contextmanager
def _bar(total: float | None, unit: str, enabled: bool) -> Iterator[Any]:
    """A tqdm bar on stderr (a no-op stand-in when disabled)."""
    if not enabled:

        class _Off:
            def update(self, n: float) -> None:
                pass

        yield _Off()
        return
    from tqdm import tqdm

    with tqdm(total=total, unit=unit, unit_scale=True, file=sys.stderr, dynamic_ncols=True, smoothing=0.1) as bar:
        yield bar


def _head(batch: MappingBatch, n: int) -> MappingBatch:
    if n == batch.num_mappings:
        return batch
    return MappingBatch(batch.temporal[:n], batch.spatial[:n], batch.order[:n], batch.keep[:n])


class _Walk:
    """The exhaustive stage: streams the space from a cursor into one reused batch; counts points passed."""

    def __init__(self, space: MapSpace):
        self.space = space
        self.cursor = np.zeros(2, dtype=np.int64)
        self.min_occupancy = np.full(space.num_levels, np.inf)
        self.points = 0.0
        self._unreported = 0.0

    @property
    def done(self) -> bool:
        return bool(self.cursor[0] >= self.space.num_assignments)

    def take_points(self) -> float:
        """Points passed since the last call (for the progress bar)."""
        n, self._unreported = self._unreported, 0.0
        return n

    def batches(self, batch_size: int) -> Generator[MappingBatch, NestCosts, None]:
        most = self.space.num_tilings * self.space.max_expansion  # a small space, a small batch
        out = self.space.new_batch(min(batch_size, max(1, most)))
        while not self.done:
            n, points = self.space.enumerate(self.cursor, out, self.min_occupancy)
            self.points += points
            self._unreported += points
            yield _head(out, n)


def _random(
    space: MapSpace, rng: np.random.Generator, batch_size: int, spent: Callable[[], float]
) -> Generator[MappingBatch, NestCosts, None]:
    """The random stage: uniform draws until the budget is spent."""
    while spent() < 1.0:
        yield space.sample(rng, batch_size)


_PER_MAPPING = tuple(name for name in NestCosts.__dataclass_fields__ if name != "useful_points")


class _Reducer:
    """The best feasible mapping seen so far (ties within :data:`_TIE` go to the first seen, or, given positions,
    to the point with the least position: its place in the space's order)."""

    def __init__(self, keys: Callable[[NestCosts], tuple[np.ndarray, np.ndarray]]):
        self.keys = keys
        self.key: tuple[float, float] | None = None
        self.position: tuple[int, int] = (0, 0)
        self.batch: MappingBatch | None = None
        self.costs: NestCosts | None = None
        self.feasible = 0
        self.least_overflow = math.inf
        self.least_occupancy: np.ndarray | None = None

    def update(self, batch: MappingBatch, costs: NestCosts, positions: np.ndarray | None = None) -> None:
        """Take the batch's best if it beats the best so far. ``positions`` (one per row, non-decreasing within a
        tiling, whose rows are consecutive and in the space's order) order ties when the batch is not in the
        space's order."""
        k = int(np.argmin(costs.overflow_ratio))
        if costs.overflow_ratio[k] < self.least_overflow:
            self.least_overflow = float(costs.overflow_ratio[k])
            self.least_occupancy = costs.occupancy_words[k].copy()
        feasible = np.flatnonzero(costs.feasible)
        self.feasible += len(feasible)
        if not len(feasible):
            return
        primary, secondary = self.keys(costs)
        near = feasible[primary[feasible] <= primary[feasible].min() * (1 + _TIE)]
        if positions is None:
            i = int(near[np.argmin(secondary[near])])
            position = (0, 0)
        else:
            least = near[secondary[near] == secondary[near].min()]
            i = int(least[np.lexsort((least, positions[least]))[0]])
            position = (int(positions[i]), i)
        key = (float(primary[i]), float(secondary[i]))
        if (
            self.key is None
            or _better(key, self.key)
            or (positions is not None and not _better(self.key, key) and position < self.position)
        ):
            self.key = key
            self.position = position
            self.batch = MappingBatch(
                *(a[i : i + 1].copy() for a in (batch.temporal, batch.spatial, batch.order, batch.keep))
            )
            self.costs = NestCosts(
                **{name: getattr(costs, name)[i : i + 1].copy() for name in _PER_MAPPING},
                useful_points=costs.useful_points,
            )


def _better(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether key ``a`` beats ``b``: a clearly smaller primary, or an equal primary and smaller secondary."""
    if a[0] < b[0] * (1 - _TIE):
        return True
    return a[0] <= b[0] * (1 + _TIE) and a[1] < b[1] * (1 - _TIE)


def _explain_nothing_fits(
    space: MapSpace, best: _Reducer, walk: _Walk, method: str, evaluated: int, interrupted: bool
) -> str:
    where = f"search({space.einsum.name} on {space.array})"
    if interrupted:
        return f"{where}: interrupted after {evaluated} evaluations, before any mapping that fits was found"
    caps = space.nest_arch.capacity_words
    if method == "exhaustive" and walk.done:
        levels = [
            f"{name!r} needs at least {walk.min_occupancy[l]:.0f} words (capacity {caps[l]:.0f})"
            for l, name in enumerate(space.level_names)
            if l and walk.min_occupancy[l] > caps[l]
        ]
        detail = "; ".join(levels) or "the levels cannot all fit at once"
        return f"{where}: no point of the space ({space.size} points) fits: {detail}"
    occ = best.least_occupancy
    closest = (
        ""
        if occ is None
        else "; the closest needs "
        + ", ".join(
            f"{occ[l]:.0f} words in {name!r} (capacity {caps[l]:.0f})" for l, name in enumerate(space.level_names) if l
        )
    )
    return (
        f"{where}: none of the {evaluated} {method} evaluations fits{closest}; "
        "give a larger budget or search exhaustively"
    )


# --------------------------------------------------------------------------------------------------------
# The standard benchmark: evaluation throughput of the exhaustive search on a three-level GEMM space.

BENCH_ARCH: dict[str, Any] = {
    "name": "bench-3level",
    "source": "attnscope bench mapper: DRAM, a 1 Mi-word buffer, 64-word registers under a 16 x 16 array",
    "clock_hz": 1.0e9,
    "word_bytes": 2,
    "levels": [
        {"name": "dram", "capacity_words": None, "instances": 1, "access_width_words": 1,
         "bandwidth_bytes_per_s": 64.0e9, "read_energy_pj": 62.4, "write_energy_pj": 62.4, "area_um2": 0.0},
        {"name": "global_buffer", "capacity_words": 1 << 20, "instances": 1, "access_width_words": 1,
         "bandwidth_bytes_per_s": 256.0e9, "read_energy_pj": 6.0, "write_energy_pj": 7.0, "area_um2": 0.0},
        {"name": "pe_reg", "capacity_words": 64, "per_pe_of": "pe_2d", "access_width_words": 1,
         "bandwidth_bytes_per_s": 8.0e9, "read_energy_pj": 0.5, "write_energy_pj": 0.5, "area_um2": 0.0},
    ],
    "arrays": {
        "pe_2d": {"kind": "2d", "rows": 16, "cols": 16, "fed_by": "pe_reg",
                  "units": {"mac": {"energy_pj": 1.0, "area_um2": 0.0}}, "ops": {"mac": {"mac": 1}}},
    },
}  # fmt: skip
"""The benchmark architecture: 32 / 128 / 4 words per cycle at DRAM / buffer / each PE's registers."""
BENCH_GEMM = "input A[T,K], B[K,N]\nC[t,n] = sum[k] A[t,k] * B[k,n]"
"""The benchmark workload, at T = K = N = 512."""


def bench_space() -> MapSpace:
    """The benchmark space: every tiling, order and bypass of a 512^3 GEMM on :data:`BENCH_ARCH`."""
    from einsum.cascade import Cascade
    from einsum.lower import lower
    from simulator.specs import spec_from_dict

    gemm = Cascade.from_text(BENCH_GEMM, name="gemm")
    e = lower(gemm, {"T": 512, "K": 512, "N": 512}).einsum("C")
    return MapSpace.build(e, spec_from_dict(BENCH_ARCH, "<bench-3level>"))


def bench_mapper(evaluations: int = 3_000_000, repeats: int = 3) -> dict[str, Any]:
    """Evaluations per second of the exhaustive search on :func:`bench_space`: one core, then all threads.

    Each figure is the best of ``repeats`` searches of ``evaluations`` mappings after a warm-up that
    compiles the kernels; the time covers generation, pruning, costing and reduction. One core means
    Numba's serial kernel with one thread.
    """
    import numba

    if isinstance(evaluations, bool) or not isinstance(evaluations, int) or evaluations < 1:
        raise SpecError(f"bench_mapper: evaluations must be an int >= 1, got {evaluations!r}")
    space = bench_space()
    threads = numba.config.NUMBA_NUM_THREADS
    search(space, method="exhaustive", budget=min(evaluations, 100_000), parallel=False)  # warm-up
    search(space, method="exhaustive", budget=min(evaluations, 100_000), parallel=True)
    rates = {}
    for label, parallel, n_threads in (("one_core", False, 1), ("parallel", True, threads)):
        numba.set_num_threads(n_threads)
        try:
            runs = [
                search(space, method="exhaustive", budget=evaluations, parallel=parallel)
                for _ in range(max(1, repeats))
            ]
        finally:
            numba.set_num_threads(threads)
        rates[label] = max(r.evaluations_per_s for r in runs)
    return {
        "space": "GEMM 512^3 on bench-3level (DRAM / 1 Mi-word buffer / 64-word registers, 16 x 16 PEs)",
        "space_size": space.size,
        "evaluations": evaluations,
        "repeats": repeats,
        "evaluations_per_s": rates["one_core"],
        "evaluations_per_s_parallel": rates["parallel"],
        "threads": threads,
    }


# --------------------------------------------------------------------------------------------------------
# The FuseMax study's three-level search: a preset of the space above, searched exhaustively.


def nest_constraints(
    e: LoweredEinsum,
    arch: ArchSpec,
    array: str,
    spatial: Sequence[str | None],
    fixed_outer: Sequence[str] = (),
    buffer: str = "global_buffer",
    *,
    bypass: bool = True,
) -> Constraints:
    """The FuseMax study's three-level space of ``e`` on ``array`` as :class:`~mappers.constraints.Constraints`.

    The nest is DRAM, ``buffer``, the array's PE registers. ``spatial[a]`` is the variable spread over array
    axis ``a`` (None: the axis idles) by the axis size, or by the variable's size if smaller; no other
    variable is spread. ``fixed_outer`` variables run wholly at DRAM, outermost, in the given order. The PE
    registers hold one word of each tensor (no loop there). The buffer keeps the output; with ``bypass`` each
    input may skip it, else it keeps every tensor. Raises :class:`einsum.errors.SpecError` naming every
    argument at fault.
    """
    where = f"search_nest({e.name} on {array})"
    spec_array = arch.array(array)  # raises listing the arrays
    inner = [lv.name for lv in arch.path(array)[1:-1] if lv.per_pe_of is None]
    axes = dict(zip(*array_axes(arch, array), strict=True))
    problems = []
    if buffer not in inner:
        problems.append(f"buffer {buffer!r} is not a shared level between DRAM and {array}; choose from {inner}")
    if len(spatial) > len(axes):
        problems.append(f"spatial names {len(spatial)} axes, {array} has {len(axes)} ({tuple(axes.values())})")
    for var in [*spatial, *fixed_outer]:
        if var is not None and var not in e.vars:
            problems.append(f"{var!r} is not a variable of {e.name}; its variables are {', '.join(e.vars)}")
    if len(set(fixed_outer)) != len(fixed_outer):
        problems.append(f"fixed_outer repeats a variable: {list(fixed_outer)}")
    if problems:
        raise SpecError(f"{where}: " + "; ".join(problems))

    remaining = dict(zip(e.vars, (int(s) for s in e.var_sizes), strict=True))
    factors: dict[str, int] = {}
    on_axis: dict[str, tuple[str, ...]] = {}
    for a, (axis, size) in enumerate(axes.items()):
        var = spatial[a] if a < len(spatial) else None
        on_axis[axis] = () if var is None else (var,)
        if var is None:
            continue
        factor = min(size, remaining[var])
        if remaining[var] % factor:
            raise SpecError(f"{where}: {var} ({remaining[var]} left) does not divide over {size} PEs of axis {a}")
        remaining[var] //= factor
        factors[var] = factors.get(var, 1) * factor
    dram, registers = arch.levels[0].name, spec_array.fed_by
    output = e.tensors[int(np.flatnonzero(e.is_output)[0])]
    return Constraints(
        levels=(dram, buffer, registers),
        spatial_ranks_per_axis=max(1, *(spatial.count(v) for v in spatial if v is not None)),
        temporal=(
            TemporalConstraint(dram, {v: remaining[v] for v in fixed_outer}, outer=tuple(fixed_outer)),
            TemporalConstraint(buffer, dict.fromkeys(fixed_outer, 1)),
            TemporalConstraint(registers, dict.fromkeys(e.vars, 1)),
        ),
        spatial=(SpatialConstraint(array, {v: factors.get(v, 1) for v in e.vars}, axes=on_axis),),
        bypass=(BypassConstraint(buffer, keep=(output,) if bypass else tuple(e.tensors)),),
        origin=where,
    )


def search_nest(
    e: LoweredEinsum,
    arch: ArchSpec,
    array: str,
    spatial: Sequence[str | None],
    buffer: str = "global_buffer",
    objective: str = "latency",
    fixed_outer: Sequence[str] = (),
    batch_size: int = DEFAULT_BATCH,
    *,
    bypass: bool = True,
    parallel: bool = True,
) -> MapResult:
    """The best feasible mapping of ``e`` in the study's three-level space (:func:`nest_constraints`),
    searched exhaustively under ``objective``.

    >>> from einsum.cascade import Cascade
    >>> from einsum.lower import lower
    >>> from simulator.specs import load_arch
    >>> gemm = Cascade.from_text("input A[T,K], B[K,N]\\nC[t,n] = sum[k] A[t,k] * B[k,n]")
    >>> e = lower(gemm, {"T": 1024, "K": 256, "N": 256}).einsum("C")
    >>> best = search_nest(e, load_arch("fusemax-cloud"), "pe_2d", ("t", "n"))
    >>> best.dram_words == 1024 * 256 + 256 * 256 + 1024 * 256  # every word moves once
    True
    """
    constraints = nest_constraints(e, arch, array, spatial, fixed_outer, buffer, bypass=bypass)
    space = MapSpace.build(e, arch, array, constraints)
    return search(space, objective, method="exhaustive", batch_size=batch_size, parallel=parallel)
