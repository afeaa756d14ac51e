"""Cascade-level search: which array runs each Einsum, how a tile's work is staged, and how much is fused.

Given only a cascade and an architecture, two families of designs are generated and costed by the cascade
model (:func:`simulator.cost.evaluate_cascade`):

**One-pass fused cascades** (a rank partitioned ``M = M1 x M0``, e.g. ``fusemax``), :func:`search_fused`.
Every Einsum runs inside one loop over the ``m1`` tiles, for blocks of P1 x P0 queries. Searched:

* the **binding**: each Einsum on any array whose PEs support all its operators;
* the **schedule** of one tile: stages run one after another, and in a stage each array runs its Einsums back
  to back while the arrays overlap. An Einsum follows a producer on the same array in the same stage or later,
  and one on another array in a later stage. An Einsum whose results are read only by the next tile (through
  a recurrence) or after the loop - a *tail*, such as the running sums - may instead run at the start of the
  next tile (software pipelining by one tile), as long as it still precedes, in stage order, the readers of
  its result in that tile. Binding and schedule are searched together by branch and bound on a tile's compute
  cycles (a stage lasts as long as its busiest array), which the schedule alone decides;
* the **query block** P1: the largest whose buffer state fits, as in the study.

Placement follows the binding: recurrence state (read by the next tile) lives in the global buffer; an
intermediate whose readers all run on its producer's array stays in the PE registers; one read on another
array goes through the staging level (else the buffer). Loop nests: ``b``, ``h``, P2, ``m1`` at DRAM, P1 at
the buffer; a 2-D array spreads ``m0`` over its rows and ``p`` over its columns, a 1-D array ``p``. The
``candidates`` best (binding, schedule) pairs are costed in full and the lowest latency wins.

**Multi-pass cascades** (3-pass softmax), :func:`search_passes`: FLAT's choice space
(:func:`mappers.flat.flat_choices`: dataflow, fusion granularity, which operands stay on chip) plus the
unfused schedule, every point costed, lowest latency first. FLAT's own policy (:func:`mappers.flat.search_flat`)
is reported beside the minimum.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from einsum.cascade import Cascade
from einsum.lower import LoweredCascade, lower
from mappers.flat import BUFFER, fits_flat_rule, flat_choices, flat_mapping, search_flat
from mappers.templates import divisors, loop_nest
from simulator.cost import CascadeCost, _cycles_per_point, _nest, evaluate_cascade, phase_occupancy
from simulator.mapping import CascadeMapping, Phase
from simulator.specs import ArchSpec

__all__ = ["CascadeDesign", "FusedPlan", "search_fused", "search_passes"]


@dataclass(frozen=True)
class CascadeDesign:
    """One costed design and how it was found."""

    mapping: CascadeMapping
    cost: CascadeCost
    binding: Mapping[str, str]
    """Einsum -> array."""
    description: str
    """The choices, in words."""
    candidates: int = 0
    """Designs the search considered (binding x schedule pairs, or FLAT choices)."""
    evaluated: int = 0
    """Designs costed in full by the cascade model."""
    notes: tuple[str, ...] = field(default=())


# --------------------------------------------------------------------------------------------------------
# One-pass fused cascades


@dataclass(frozen=True)
class FusedPlan:
    """What the fused search derives from the cascade: tile loop, dependencies, tails, per-array cycles."""

    lowered: LoweredCascade
    tile_var: str
    """The partitioned rank's outer variable (one loop iteration = one tile), e.g. ``m1``."""
    inner_var: str
    """Its inner variable, spread over a 2-D array's rows, e.g. ``m0``."""
    query_var: str
    """The output's largest free variable, split P2 x P1 x P0, e.g. ``p``."""
    order: tuple[str, ...]
    """Einsums in dataflow order."""
    producers: Mapping[str, tuple[str, ...]]
    """Einsum -> Einsums whose results it reads in the same tile."""
    carried_readers: Mapping[str, tuple[str, ...]]
    """Einsum -> Einsums that read its result in the next tile."""
    tails: frozenset[str]
    """Einsums read only by the next tile or after the loop (may run at the start of the next tile)."""
    state: frozenset[str]
    """Recurrence results (live across tiles, in the buffer)."""
    arrays: Mapping[str, tuple[str, ...]]
    """Einsum -> arrays that support its operators."""
    cycles: Mapping[tuple[str, str], float]
    """(Einsum, array) -> compute cycles of the whole Einsum there."""


def plan_fused(cascade: Cascade, sizes: Mapping[str, int], arch: ArchSpec) -> FusedPlan:
    """Derive a fused plan from the cascade (its one partition gives the tile loop) and the architecture."""
    if len(cascade.partitions) != 1:
        raise ValueError(f"{cascade.name}: a fused one-pass search needs exactly one partitioned rank")
    (rank, parts) = next(iter(cascade.partitions.items()))
    outer, inner = (p.lower() for p in parts)
    width = max(a.shape[-1] for a in arch.arrays)
    lowered = lower(cascade, {**sizes, parts[1]: min(width, sizes[rank])})
    order = tuple(e.name for e in lowered.einsums)
    position = {n: i for i, n in enumerate(order)}
    producers, carried = {}, {n: [] for n in order}
    for e in lowered.einsums:
        own = []
        for t in e.inputs:
            p = lowered.producer.get(t)
            if p is None:
                continue
            if position[p] < position[e.name]:
                own.append(p)
            else:
                carried[p].append(e.name)
        producers[e.name] = tuple(dict.fromkeys(own))
    tails = set()
    for e in lowered.einsums:
        readers = lowered.consumers.get(e.name, ())
        in_loop = outer in e.vars
        same_tile = [r for r in readers if r not in carried[e.name] and outer in lowered.einsum(r).vars]
        if not in_loop or not same_tile:
            tails.add(e.name)
    state = frozenset(n for n, readers in carried.items() if readers)
    output = lowered.einsum(lowered.outputs[0])
    free = [v for v in output.vars if v not in ("b", "h")]
    query = max(free, key=output.var_size)
    arrays, cycles = {}, {}
    for e in lowered.einsums:
        able = tuple(a.name for a in arch.arrays if all(op in {o.name for o in a.ops} for op in e.ops_per_point))
        if not able:
            raise ValueError(f"no array of {arch.name} supports the operators of {e.name}: {sorted(e.ops_per_point)}")
        arrays[e.name] = able
        for a in able:
            nest = _fused_nest(lowered, arch, e.name, a, outer, inner, query, p1=1, keeps=())
            cpp = _cycles_per_point(e, arch.array(a), arch.compat.sum_op_cycles)
            cycles[e.name, a] = float(_nest(e, arch, nest).compute_cycles[0]) * cpp
    return FusedPlan(
        lowered, outer, inner, query, order, producers, {k: tuple(v) for k, v in carried.items()},
        frozenset(tails), state, arrays, cycles,
    )  # fmt: skip


def _fused_nest(lowered, arch, einsum, array, outer, inner, query, p1, keeps):
    s = lowered.sizes
    width = arch.array(array).shape[-1]
    q = lowered.einsum(lowered.outputs[0]).var_size(query)
    p2 = max(1, q // (width * p1))
    loops = [("b", s.get("B", 1)), ("h", s.get("H", 1)), (query, p2), (outer, s[outer.upper()])]
    spatial = (inner, query) if arch.array(array).kind == "2d" else (query,)
    return loop_nest(lowered.einsum(einsum), arch, array, loops, [(query, p1)], spatial, keeps)


Ranked = list[tuple[float, dict[str, str], tuple[dict[str, tuple[str, ...]], ...]]]


def schedules(plan: FusedPlan, keep: int = 16) -> tuple[Ranked, int]:
    """The ``keep`` (binding, schedule) pairs with the fewest compute cycles per phase, best first.

    Branch and bound over Einsums in dataflow order, each given an array and a stage (module docstring).
    Returns [(cycles, binding, stages)] with stages as per-array Einsum tuples, and how many complete
    (binding, schedule) pairs the search reached (the rest were cut by the bound).
    """
    order = plan.order
    best: list[tuple[float, dict[str, str], dict[str, int]]] = []
    bound = [math.inf]
    complete = [0]
    arrays_all = sorted({a for able in plan.arrays.values() for a in able})

    def cost(loads: dict[tuple[int, str], float]) -> float:
        stages = {k for k, _ in loads}
        return sum(max(loads.get((k, a), 0.0) for a in arrays_all) for k in stages)

    def visit(i: int, binding: dict[str, str], stage: dict[str, int], loads: dict[tuple[int, str], float]):
        current = cost(loads)
        if current >= bound[0]:
            return
        if i == len(order):
            complete[0] += 1
            best.append((current, dict(binding), dict(stage)))
            best.sort(key=lambda x: x[0])
            del best[keep:]
            if len(best) == keep:
                bound[0] = best[-1][0]
            return
        name = order[i]
        top = max(stage.values(), default=-1) + 1
        for a in plan.arrays[name]:
            low = max((stage[p] + (binding[p] != a) for p in plan.producers[name]), default=0)
            options = list(range(low, top + 1))
            if name in plan.tails:  # or at the start of the next tile, before its readers there
                limit = min(
                    (stage[r] - (binding[r] != a) for r in plan.carried_readers[name] if r in stage), default=top
                )
                options = sorted(set(options) | set(range(0, min(low, limit + 1))))
            for s in options:
                binding[name], stage[name] = a, s
                key = (s, a)
                loads[key] = loads.get(key, 0.0) + plan.cycles[name, a]
                visit(i + 1, binding, stage, loads)
                loads[key] -= plan.cycles[name, a]
                if loads[key] <= 0.0:
                    del loads[key]
                del binding[name], stage[name]

    visit(0, {}, {}, {})
    out = []
    for cycles, binding, stage in best:
        used = sorted(set(stage.values()))
        stages = tuple(
            {a: tuple(n for n in order if stage[n] == k and binding[n] == a) for a in arrays_all} for k in used
        )
        stages = tuple({a: es for a, es in s.items() if es} for s in stages)
        out.append((cycles, binding, stages))
    return out, complete[0]


def fused_mapping(plan: FusedPlan, arch: ArchSpec, binding: Mapping[str, str], phase: Phase, p1: int) -> CascadeMapping:
    """The fused mapping of a binding and schedule at query block P1 (placement as in the module docstring)."""
    lowered = plan.lowered
    placement: dict[str, str] = {t: BUFFER for t in plan.state}
    for e in lowered.einsums:
        if e.name in plan.state or e.name in lowered.outputs:
            continue
        readers = {binding[c] for c in lowered.consumers.get(e.name, ())}
        placement[e.name] = "pe" if readers <= {binding[e.name]} else (arch.staging_level or BUFFER)
    keeps = set(lowered.inputs) | set(plan.state) | {t for t, where in placement.items() if where == BUFFER}
    nests = {
        e.name: _fused_nest(
            lowered, arch, e.name, binding[e.name], plan.tile_var, plan.inner_var, plan.query_var, p1, keeps
        )
        for e in lowered.einsums
    }
    return CascadeMapping(name=f"fused-P1={p1}", einsums=nests, placement=placement, phases=(phase,))


def search_fused(
    cascade: Cascade, sizes: Mapping[str, int], arch: ArchSpec, candidates: int = 16
) -> tuple[CascadeDesign, list[CascadeDesign]]:
    """The lowest-latency fused design of a one-pass cascade (module docstring), and the others costed."""
    plan = plan_fused(cascade, sizes, arch)
    ranked, complete = schedules(plan, candidates)
    width = max(a.shape[-1] for a in arch.arrays)
    q = plan.lowered.einsum(plan.lowered.outputs[0]).var_size(plan.query_var)
    capacity = arch.level(BUFFER).capacity_words
    designs = []
    for cycles, binding, stages in ranked:
        phase = Phase(stages=stages)
        chosen = None
        for p1 in reversed(divisors(max(1, q // width))):
            mapping = fused_mapping(plan, arch, binding, phase, p1)
            if phase_occupancy(plan.lowered, mapping, phase, BUFFER) <= capacity or p1 == 1:
                chosen = mapping
                break
        cost = evaluate_cascade(plan.lowered, arch, chosen)
        text = "; ".join(
            f"stage {k}: " + ", ".join(f"{a} {'+'.join(es)}" for a, es in s.items()) for k, s in enumerate(stages)
        )
        designs.append(
            CascadeDesign(chosen, cost, binding, f"{chosen.name}; {text}", complete, len(ranked),
                          (f"tile compute {cycles:,.0f} cycles per phase",))
        )  # fmt: skip
    designs.sort(key=lambda d: (not d.cost.feasible, d.cost.latency_s, d.cost.energy_pj))
    return designs[0], designs


# --------------------------------------------------------------------------------------------------------
# Multi-pass cascades: FLAT's choices and the unfused schedule


def search_passes(lowered: LoweredCascade, arch: ArchSpec, row_blocks: Sequence[int] = (1, 2, 4)) -> dict:
    """Every FLAT choice costed (lowest latency first) and FLAT's own policy, for a 3-pass cascade."""
    width = arch.array("pe_2d").shape[-1]
    costed = []
    for choice in flat_choices(lowered.sizes["P"], width, row_blocks):
        mapping = flat_mapping(lowered, arch, choice)
        cost = evaluate_cascade(lowered, arch, mapping)
        costed.append((cost.latency_s, cost.energy_pj, choice, mapping, cost, fits_flat_rule(lowered, arch, mapping)))
    costed.sort(key=lambda x: (x[0], x[1]))
    flat_map, flat_cost, _ = search_flat(lowered, arch, row_blocks)
    binding = {e.name: e_map.array for e, e_map in ((e, costed[0][3].einsums[e.name]) for e in lowered.einsums)}

    def design(entry) -> CascadeDesign:
        _, _, choice, mapping, cost, fits = entry
        return CascadeDesign(
            mapping, cost, binding, choice.describe(lowered.sizes["P"]), len(costed), len(costed),
            ("fits FLAT's sizing rule" if fits else "spills past FLAT's sizing rule",),
        )  # fmt: skip

    fits = [c for c in costed if c[5]]
    return {
        "best": design(costed[0]),
        "best_within_flat_rule": design(fits[0]) if fits else None,
        "flat_policy": CascadeDesign(flat_map, flat_cost, binding, flat_map.notes[0], len(costed), len(costed)),
    }
