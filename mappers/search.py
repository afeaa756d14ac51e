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

:func:`search_nest` (below) is the fixed three-level search the FuseMax study uses: spatial variables
given, the PE registers holding one word of each tensor.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import sys
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from einsum.errors import SpecError
from einsum.lower import LoweredEinsum
from mappers.heuristic import anneal
from mappers.space import MapSpace
from mappers.templates import divisors
from simulator.cost import nest_arch, nest_problem
from simulator.mapping import EinsumMapping, Loops
from simulator.nest import MappingBatch, NestArch, NestCosts, NestProblem, evaluate_nest
from simulator.specs import ArchSpec

__all__ = [
    "AUTO_EXHAUSTIVE_POINTS",
    "BENCH_ARCH",
    "DEFAULT_BUDGET",
    "MAX_DIVISORS",
    "METHODS",
    "OBJECTIVES",
    "MapResult",
    "Objective",
    "SearchResult",
    "bench_mapper",
    "bench_space",
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
        latency_bound, energy_bound = space.lower_bounds()

        def keys(costs: NestCosts) -> tuple[np.ndarray, np.ndarray]:
            latency = costs.latency_cycles
            energy = costs.energy_pj + costs.padded_points * per_point
            if self.name == "latency":
                return latency, energy
            if self.name == "energy":
                return energy, latency
            if self.name == "edp":
                return latency * energy, latency
            mixed = self.latency_weight * latency / latency_bound + self.energy_weight * energy / energy_bound
            return mixed, latency

        return keys

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
) -> MapResult:
    """The best feasible mapping of ``space`` under ``objective`` (module docstring).

    ``budget`` caps the evaluations and ``time_s`` the seconds (either ends an exhaustive search early);
    ``parallel`` spreads each batch over Numba's threads; ``progress`` shows a tqdm bar on stderr. Raises
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
    total, unit = (space.size, "pt") if method == "exhaustive" else (budget, "eval")
    interrupted = truncated = False
    with _bar(total, unit, progress) as bar, contextlib.closing(stages[method]()) as producer:
        try:
            batch = next(producer, None)
            while batch is not None:
                n = batch.num_mappings if budget is None else min(batch.num_mappings, budget - evaluated)
                truncated |= n < batch.num_mappings
                costs = None
                if n:
                    batch = _head(batch, n)
                    costs = evaluate_nest(
                        space.problem, space.nest_arch, batch, cycles_per_point=space.cycles_per_point,
                        parallel=parallel and n >= _PARALLEL_MIN,
                    )  # fmt: skip
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
    return MapResult(
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
        out = self.space.new_batch(batch_size)
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
    """The best feasible mapping seen so far (ties within :data:`_TIE` go to the first seen)."""

    def __init__(self, keys: Callable[[NestCosts], tuple[np.ndarray, np.ndarray]]):
        self.keys = keys
        self.key: tuple[float, float] | None = None
        self.batch: MappingBatch | None = None
        self.costs: NestCosts | None = None
        self.feasible = 0
        self.least_overflow = math.inf
        self.least_occupancy: np.ndarray | None = None

    def update(self, batch: MappingBatch, costs: NestCosts) -> None:
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
        i = int(near[np.argmin(secondary[near])])
        key = (float(primary[i]), float(secondary[i]))
        if self.key is None or _better(key, self.key):
            self.key = key
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
# The FuseMax study's three-level search: search_nest.

# Exhaustive search, with pruning, for the loop nest of one Einsum on a three-level hierarchy.
#
# The nest has the shape :func:`mappers.templates.loop_nest` builds: DRAM, a buffer level, the array's PE
# registers; ``spatial[a]`` names the variable spread over array axis ``a`` (factor: the axis size, or the
# variable's size if smaller). The space searched:
#
# * **Tiling.** The size each variable has left after its spatial factor is split into a DRAM bound and a
#   buffer bound. The buffer bound takes every divisor of that size; a size with more than
#   :data:`MAX_DIVISORS` divisors takes only the powers of two dividing it and the size itself
#   (:attr:`SearchResult.notes` names those variables). Variables in ``fixed_outer`` (e.g. batch and head)
#   stay wholly at DRAM, outermost, in the given order. The PE registers hold one word of each tensor.
# * **Loop orders** at DRAM and at the buffer, over the loops of bound > 1. Only the innermost run of loops
#   not indexing a tensor decides how often its tile is reloaded (the kernel's reuse model), so orders that
#   give every tensor the same run are the same point: one order per distinct set of runs is evaluated.
# * **Buffer bypass.** The buffer keeps every tensor, except (``bypass=True``) the inputs it does not
#   reuse (it reads each filled word once): those go from DRAM straight to the PEs. That moves the same DRAM
#   words and saves buffer energy and capacity, so a point takes its bypass variant whenever one exists.
#
# Pruning: a tiling whose output tile alone overflows the buffer is dropped before its orders are expanded.
# The rest streams through :func:`simulator.nest.evaluate_nest` in batches, costed with DRAM's real
# bandwidth and unbounded bandwidth elsewhere; a reducer keeps only the best feasible mapping, so memory is
# bounded by the batch size whatever the size of the space.

MAX_DIVISORS = 24
"""A remaining size with more divisors than this offers only powers of two (and itself) as buffer bounds."""

OBJECTIVES = ("latency", "energy", "edp")
"""``latency``: least latency, then least energy; ``energy``: the reverse; ``edp``: least product, then latency."""

DRAM, BUFFER, PE = 0, 1, 2


@dataclass(frozen=True)
class SearchResult:
    """The best feasible mapping found and what the search did."""

    mapping: EinsumMapping
    """The loop nest, levels (DRAM, buffer, PE registers) as :func:`mappers.templates.loop_nest` builds."""
    latency_cycles: float
    """max(compute at 1 cycle per point, DRAM words / DRAM words per cycle); scale compute for other op costs."""
    energy_pj: float
    """Storage access energy in pJ (no compute or network energy)."""
    dram_words: float
    """Words read from, filled into and updated in DRAM, summed over tensors."""
    evaluated: int
    """Mappings costed by the kernel (bypass variants included; pruned tilings excluded)."""
    space_size: int
    """Points in the space: tilings x distinct DRAM orders x distinct buffer orders (pruned ones included)."""
    feasible_count: int
    """Points whose best variant fits every level's capacity."""
    seconds: float
    """Wall time of the search."""
    notes: tuple[str, ...] = field(default=())
    """Where the space was narrowed (variables offered powers of two only)."""


@dataclass(frozen=True, eq=False)
class _Plan:
    """Everything fixed for one search: the kernel's problem and architecture, and the space's axes."""

    e: LoweredEinsum
    array: str
    levels: tuple[str, str, str]
    problem: NestProblem
    nest_arch: NestArch
    spatial: np.ndarray  # int64[A, R]: spatial factor of each variable on each axis
    remaining: np.ndarray  # int64[R]: size left per variable after its spatial factor
    choices: tuple[np.ndarray, ...]  # per variable: int64 buffer bounds offered
    fixed: tuple[int, ...]  # fixed_outer variable indices, outermost first
    free: np.ndarray  # bool[R]: not in fixed_outer
    output_spatial: float  # the output's buffer tile at buffer bounds 1 (its spatial extent)
    orders: dict[tuple[int, int], np.ndarray]  # (level, mask of active loops) -> int64[n, R] distinct orders
    notes: tuple[str, ...]

    def level_orders(self, level: int, mask: int) -> np.ndarray:
        """One full loop order per distinct reuse signature of the active loops ``mask`` at ``level``."""
        key = (level, mask)
        if key not in self.orders:
            self.orders[key] = _distinct_orders(self, level, mask)
        return self.orders[key]


def search_nest(
    e: LoweredEinsum,
    arch: ArchSpec,
    array: str,
    spatial: Sequence[str | None],
    buffer: str = "global_buffer",
    objective: str = "latency",
    fixed_outer: Sequence[str] = (),
    batch_size: int = 50_000,
    *,
    bypass: bool = True,
    parallel: bool = True,
) -> SearchResult:
    """The best feasible three-level loop nest of ``e`` on ``array`` under ``objective`` (module docstring).

    ``spatial[a]`` is the variable spread over array axis ``a`` (None: the axis idles). ``fixed_outer``
    variables run wholly at DRAM, outermost, in the given order. ``bypass`` lets inputs the buffer would
    not reuse skip it. ``parallel`` spreads each batch over Numba's threads. Latency is in cycles at one
    cycle per iteration point. Raises :class:`einsum.errors.SpecError` for bad arguments and when no
    mapping fits.

    >>> from einsum.cascade import Cascade
    >>> from einsum.lower import lower
    >>> from simulator.specs import load_arch
    >>> gemm = Cascade.from_text("input A[T,K], B[K,N]\\nC[t,n] = sum[k] A[t,k] * B[k,n]")
    >>> e = lower(gemm, {"T": 1024, "K": 256, "N": 256}).einsum("C")
    >>> best = search_nest(e, load_arch("fusemax-cloud"), "pe_2d", ("t", "n"))
    >>> best.dram_words == 1024 * 256 + 256 * 256 + 1024 * 256  # every word moves once
    True
    """
    start = time.perf_counter()
    plan = _plan(e, arch, array, spatial, buffer, objective, fixed_outer, batch_size)  # validate, lower once
    best = _Reducer(lambda costs: _keys(objective, costs))
    space_size = evaluated = feasible_count = 0
    for points, batch in _batches(plan, batch_size):  # tilings -> prune -> x distinct orders, streamed
        space_size += points
        if batch is None:
            continue
        costs, batch, runs = _evaluate(plan, batch, bypass, parallel)  # keep-all, then bypass variants
        evaluated += runs
        feasible_count += int(np.count_nonzero(costs.feasible))
        best.update(batch, costs)  # keep the best feasible
    if best.costs is None:
        raise SpecError(_nothing_fits(plan, best, space_size, evaluated))
    return SearchResult(
        mapping=_mapping(plan, best.batch),
        latency_cycles=float(best.costs.latency_cycles[0]),
        energy_pj=float(best.costs.energy_pj[0]),
        dram_words=float(_dram_words(best.costs)[0]),
        evaluated=evaluated,
        space_size=space_size,
        feasible_count=feasible_count,
        seconds=time.perf_counter() - start,
        notes=plan.notes,
    )


# --------------------------------------------------------------------------------------------------------
# Plan: check the arguments (collecting every problem), lower the architecture to the kernel's arrays.


def _plan(
    e: LoweredEinsum,
    arch: ArchSpec,
    array: str,
    spatial: Sequence[str | None],
    buffer: str,
    objective: str,
    fixed_outer: Sequence[str],
    batch_size: int,
) -> _Plan:
    where = f"search_nest({e.name} on {array})"
    spec_array = arch.array(array)  # raises listing the arrays
    path = arch.path(array)
    problems: list[str] = []
    inner = [lv.name for lv in path[1:-1] if lv.per_pe_of is None]
    if buffer not in inner:
        problems.append(f"buffer {buffer!r} is not a shared level between DRAM and {array}; choose from {inner}")
    if objective not in OBJECTIVES:
        problems.append(f"objective {objective!r} is unknown; choose from {', '.join(OBJECTIVES)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        problems.append(f"batch_size must be an int >= 1, got {batch_size!r}")
    if not e.vars:
        problems.append("the Einsum has no iteration variables: there is no loop nest to search")
    axes = spec_array.shape if spec_array.instances == 1 else (*spec_array.shape, spec_array.instances)
    if len(spatial) > len(axes):
        problems.append(f"spatial names {len(spatial)} axes, {array} has {len(axes)} ({axes})")
    for var in [*spatial, *fixed_outer]:
        if var is not None and var not in e.vars:
            problems.append(f"{var!r} is not a variable of {e.name}; its variables are {', '.join(e.vars)}")
    if len(set(fixed_outer)) != len(fixed_outer):
        problems.append(f"fixed_outer repeats a variable: {list(fixed_outer)}")
    if problems:
        raise SpecError(f"{where}: " + "; ".join(problems))

    num_vars = len(e.vars)
    remaining = e.var_sizes.astype(np.int64).copy()
    factors = np.ones((len(axes), num_vars), dtype=np.int64)
    for a, (size, var) in enumerate(zip(axes, [*spatial, *[None] * (len(axes) - len(spatial))], strict=True)):
        if var is None:
            continue
        r = e.vars.index(var)
        factor = min(size, int(remaining[r]))
        if remaining[r] % factor:
            raise SpecError(f"{where}: {var} ({remaining[r]} left) does not divide over {size} PEs of axis {a}")
        remaining[r] //= factor
        factors[a, r] = factor

    fixed = tuple(e.vars.index(v) for v in fixed_outer)
    choices: list[np.ndarray] = []
    notes: list[str] = []
    for r, var in enumerate(e.vars):
        size = int(remaining[r])
        options = divisors(size)
        if r in fixed:
            options = [1]
        elif len(options) > MAX_DIVISORS:
            options = sorted({d for d in options if d & (d - 1) == 0} | {size})
            notes.append(f"{var}: {size} has more than {MAX_DIVISORS} divisors; buffer bounds {options}")
        choices.append(np.array(options, dtype=np.int64))

    levels = (arch.levels[0].name, buffer, spec_array.fed_by)
    nest = nest_arch(arch, levels, spec_array.name, axes, bandwidth="dram")
    problem = nest_problem(e)
    spatial_per_var = factors.prod(axis=0).astype(np.float64)
    output_vars = e.incidence[np.flatnonzero(e.is_output)[0]]
    free = np.ones(num_vars, dtype=bool)
    free[list(fixed)] = False
    return _Plan(
        e=e,
        array=array,
        levels=levels,
        problem=problem,
        nest_arch=nest,
        spatial=factors,
        remaining=remaining,
        choices=tuple(choices),
        fixed=fixed,
        free=free,
        output_spatial=float(np.prod(spatial_per_var[output_vars])),
        orders={},
        notes=tuple(notes),
    )


# --------------------------------------------------------------------------------------------------------
# The space: tilings, each crossed with the distinct loop orders of its active loops.


def _distinct_orders(plan: _Plan, level: int, mask: int) -> np.ndarray:
    """Full orders (int64[n, R], outermost first) at ``level``: one per distinct innermost-run signature.

    The active loops are the variables in ``mask`` (bound > 1). At DRAM the fixed variables come first,
    then a permutation of the active free ones, then the rest (bound 1, inert). A tensor's signature is
    the set of loops in the innermost run not indexing it; orders with the same signature for every tensor
    cost the same.
    """
    num_vars = len(plan.e.vars)
    active = [r for r in range(num_vars) if mask >> r & 1]
    prefix = list(plan.fixed) if level == DRAM else []
    inert = [r for r in range(num_vars) if r not in active and r not in prefix]
    prefix_active = [r for r in prefix if plan.remaining[r] > 1]
    seen: set[tuple[frozenset[int], ...]] = set()
    orders = []
    for perm in itertools.permutations(active):
        loops = prefix_active + list(perm)
        signature = tuple(_innermost_run(loops, row) for row in plan.problem.incidence)
        if signature not in seen:
            seen.add(signature)
            orders.append(prefix + list(perm) + inert)
    return np.array(orders, dtype=np.int64).reshape(len(orders), num_vars)


def _innermost_run(loops: list[int], indexes: np.ndarray) -> frozenset[int]:
    """The innermost loops (of ``loops``, outermost first) up to the first one indexing the tensor."""
    run = []
    for r in reversed(loops):
        if indexes[r]:
            break
        run.append(r)
    return frozenset(run)


def _batches(plan: _Plan, batch_size: int) -> Iterator[tuple[int, MappingBatch | None]]:
    """Stream the space: (points covered since the last yield, next batch of <= ``batch_size`` mappings).

    Tilings are decoded from a flat index in chunks small enough that their expansion by the orders stays
    within about one batch, so memory does not grow with the space. The batch is None when the last points
    were all pruned.
    """
    num_vars = len(plan.e.vars)
    bits = np.left_shift(1, np.arange(num_vars, dtype=np.int64))
    full = int(bits[plan.free].sum())
    widest = len(plan.level_orders(DRAM, full)) * len(plan.level_orders(BUFFER, full))
    chunk = max(1, batch_size // widest)
    dims = tuple(len(c) for c in plan.choices)
    total = math.prod(dims)
    output = plan.problem.incidence[plan.problem.is_output][0]
    capacity = plan.nest_arch.capacity_words[BUFFER]
    pe_orders = np.arange(num_vars, dtype=np.int64)
    temporal_parts: list[np.ndarray] = []
    order_parts: list[np.ndarray] = []
    pending = points = 0
    for begin in range(0, total, chunk):
        digits = np.unravel_index(np.arange(begin, min(total, begin + chunk)), dims)
        buffer = np.stack([plan.choices[r][digits[r]] for r in range(num_vars)], axis=1)
        dram = plan.remaining[None, :] // buffer
        key = (((dram > 1) & plan.free) @ bits) << num_vars | (buffer > 1) @ bits
        output_tile = plan.output_spatial * np.prod(buffer[:, output].astype(np.float64), axis=1)
        fits = output_tile <= capacity  # prune: the output tile alone overflows the buffer
        for k in np.unique(key):
            rows = np.flatnonzero(key == k)
            d_orders = plan.level_orders(DRAM, int(k) >> num_vars)
            b_orders = plan.level_orders(BUFFER, int(k) & ((1 << num_vars) - 1))
            combos = len(d_orders) * len(b_orders)
            points += len(rows) * combos
            rows = rows[fits[rows]]
            if not len(rows):
                continue
            tiles = np.stack([dram[rows], buffer[rows], np.ones_like(buffer[rows])], axis=1)
            orders = np.stack(
                [
                    np.repeat(d_orders, len(b_orders), axis=0),
                    np.tile(b_orders, (len(d_orders), 1)),
                    np.broadcast_to(pe_orders, (combos, num_vars)),
                ],
                axis=1,
            )
            temporal_parts.append(np.repeat(tiles, combos, axis=0))
            order_parts.append(np.tile(orders, (len(rows), 1, 1)))
            pending += len(rows) * combos
        last = begin + chunk >= total
        while pending >= batch_size or (pending and last):
            temporal, order = np.concatenate(temporal_parts), np.concatenate(order_parts)
            temporal_parts, order_parts = [temporal[batch_size:]], [order[batch_size:]]
            pending = len(temporal_parts[0])
            yield points, _batch(plan, temporal[:batch_size], order[:batch_size])
            points = 0
    if points:
        yield points, None


def _batch(plan: _Plan, temporal: np.ndarray, order: np.ndarray) -> MappingBatch:
    """Kernel arrays for tilings and orders; every level keeps every tensor."""
    n = len(temporal)
    return MappingBatch(
        temporal=np.ascontiguousarray(temporal),
        spatial=np.ascontiguousarray(np.broadcast_to(plan.spatial, (n, *plan.spatial.shape))),
        order=np.ascontiguousarray(order),
        keep=np.ones((n, 3, len(plan.e.tensors)), dtype=bool),
    )


# --------------------------------------------------------------------------------------------------------
# Evaluation, bypass, reduction to the best.


def _evaluate(plan: _Plan, batch: MappingBatch, bypass: bool, parallel: bool) -> tuple[NestCosts, MappingBatch, int]:
    """Cost a keep-all batch; where an input is not reused at the buffer, cost and take its bypass variant.

    Returns the costs of each point's variant, the batch with the chosen keep bits, and the evaluations.
    """
    costs = evaluate_nest(plan.problem, plan.nest_arch, batch, parallel=parallel)
    if not bypass:
        return costs, batch, batch.num_mappings
    inputs = ~plan.problem.is_output
    reads, fills = costs.reads_words[:, BUFFER, :], costs.fills_words[:, BUFFER, :]
    no_reuse = inputs & (reads <= fills * (1 + _TIE))
    rows = np.flatnonzero(no_reuse.any(axis=1))
    if not len(rows):
        return costs, batch, batch.num_mappings
    keep = batch.keep.copy()
    keep[rows, BUFFER, :] = ~no_reuse[rows]
    variant = MappingBatch(batch.temporal[rows], batch.spatial[rows], batch.order[rows], keep[rows])
    bypassed = evaluate_nest(plan.problem, plan.nest_arch, variant, parallel=parallel)
    for name in _PER_MAPPING:
        getattr(costs, name)[rows] = getattr(bypassed, name)
    chosen = MappingBatch(batch.temporal, batch.spatial, batch.order, keep)
    return costs, chosen, batch.num_mappings + len(rows)


def _dram_words(costs: NestCosts) -> np.ndarray:
    """float64[N]: reads + fills + updates at DRAM, summed over tensors."""
    return (costs.reads_words[:, DRAM] + costs.fills_words[:, DRAM] + costs.updates_words[:, DRAM]).sum(axis=1)


def _keys(objective: str, costs: NestCosts) -> tuple[np.ndarray, np.ndarray]:
    """(primary, secondary) cost to minimise per mapping."""
    latency, energy = costs.latency_cycles, costs.energy_pj
    if objective == "latency":
        return latency, energy
    if objective == "energy":
        return energy, latency
    return latency * energy, latency


def _nothing_fits(plan: _Plan, best: _Reducer, space_size: int, evaluated: int) -> str:
    where = f"search_nest({plan.e.name} on {plan.array})"
    caps = plan.nest_arch.capacity_words
    if best.least_occupancy is None:
        return (
            f"{where}: no mapping fits: even the smallest output tile, {plan.output_spatial:.0f} words (the "
            f"spatial extent), overflows {plan.levels[BUFFER]!r} ({caps[BUFFER]:.0f} words); "
            f"all {space_size} points were pruned"
        )
    occ = best.least_occupancy
    return (
        f"{where}: none of the {space_size} points fits (evaluated {evaluated}); the closest needs "
        f"{occ[BUFFER]:.0f} words in {plan.levels[BUFFER]!r} (capacity {caps[BUFFER]:.0f}) and "
        f"{occ[PE]:.0f} words per PE in {plan.levels[PE]!r} (capacity {caps[PE]:.0f}); "
        "use a smaller spatial spread, a larger buffer, or registers for one word of every tensor"
    )


def _mapping(plan: _Plan, batch: MappingBatch) -> EinsumMapping:
    """The chosen row of a one-mapping batch as an :class:`EinsumMapping`."""
    names, tensors = plan.e.vars, plan.e.tensors

    def loops(level: int) -> Loops:
        bounds = batch.temporal[0, level]
        return tuple((names[r], int(bounds[r])) for r in batch.order[0, level] if bounds[r] > 1)

    spatial = tuple(tuple((names[r], int(f)) for r, f in enumerate(row) if f > 1) for row in batch.spatial[0])
    kept = frozenset(t for t, k in zip(tensors, batch.keep[0, BUFFER], strict=True) if k)
    return EinsumMapping(
        array=plan.array,
        levels=plan.levels,
        temporal=(loops(DRAM), loops(BUFFER), ()),
        spatial=spatial,
        keep=(frozenset(tensors), kept, frozenset(tensors)),
    )
