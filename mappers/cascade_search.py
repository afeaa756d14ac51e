"""Cascade-level search: which array runs each Einsum, how a tile's work is staged, and how much is fused.

Given only a cascade and an architecture, two families of designs are generated and costed by the cascade
model (:func:`simulator.cost.evaluate_cascade`):

**One-pass fused cascades** (every variant whose work is one pass over the keys: FuseMax, online softmax,
GQA/MQA/MLA, decode and split-K decode, masked, block-sparse, sharded, linear, sigmoid and softplus attention),
:func:`search_fused`. Every Einsum runs inside one loop over tiles of the key rank (``m1`` of ``M = M1 x M0``),
or just before or after it, for blocks of queries. Searched:

* the **binding**: each Einsum on any array whose PEs support all its operators;
* the **schedule** of one tile: stages run one after another, and in a stage each array runs its Einsums back
  to back while the arrays overlap. An Einsum follows a producer on the same array in the same stage or later,
  and one on another array in a later stage. An Einsum whose results are read only by the next tile (through
  a recurrence) or after the loop - a *tail*, such as the running sums - may instead run at the start of the
  next tile (software pipelining by one tile), as long as it still precedes, in stage order, the readers of
  its result in that tile. Binding and schedule are searched together by branch and bound on a tile's compute
  cycles (a stage lasts as long as its busiest array), which the schedule alone decides (:func:`schedules`);
* the **query block** P1: the fastest (then lowest-energy) block whose buffer state fits (the study takes the
  largest; a smaller one re-reads K/V more but skips more tiles of a mask; without skipped tiles the blocks
  are costed largest first until one is no better than the one above it);
* the **key tile** (the study's ``M0``) where the cascade leaves it free (:func:`tile_choices`): one and two
  times each 2-D array's rows, and the size the shape gives.

Which variables loop where, what the array axes spread and where intermediates live are rules derived from
the cascade, stated in :func:`search_fused` and :func:`fused_mapping`. The best binding is costed in full,
then every other whose latency bound (tile cycles, compulsory DRAM time) can still match it, and the lowest
latency (then energy) wins.

**Multi-pass cascades** (2- and 3-pass softmax), :func:`search_passes`: the space of :mod:`mappers.passes`,
derived from the cascade (hand-offs fused on chip or spilled to DRAM, each contraction's dataflow, fusion
granularity, which inputs and outputs stay on chip), every point costed, lowest latency first, with FLAT's own
policy (:func:`mappers.passes.flat_policy`) reported beside it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from einsum.analysis import key_ranks, pass_analysis
from einsum.cascade import Cascade
from einsum.errors import AttnscopeError, ShapeError
from einsum.lower import LoweredCascade, LoweredEinsum, lower
from einsum.regions import Formula, affine_forms, any_of, count_tiles, work_regions
from mappers.passes import flat_policy, search_pass_designs
from mappers.templates import divisors
from simulator.cost import (
    CascadeCost,
    cycles_per_point,
    einsum_nest,
    evaluate_cascade,
    phase_occupancy,
    shared_buffer,
    spatial_tile_words,
)
from simulator.jit import kernel
from simulator.mapping import CascadeMapping, EinsumMapping, Phase
from simulator.specs import ArchSpec

__all__ = [
    "CascadeDesign",
    "FusedPlan",
    "FusedSearchError",
    "search_fused",
    "search_fused_at",
    "search_passes",
    "tile_choices",
]


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
    lowered: LoweredCascade | None = field(default=None, compare=False, repr=False)
    """The lowering the mapping was costed on (tiles re-sized to the array; masked tiles cut where skipped)."""


# --------------------------------------------------------------------------------------------------------
# One-pass fused cascades


@dataclass(frozen=True)
class FusedPlan:
    """What the fused search derives from the cascade: the tile loop, which variables the array axes spread,
    the dependencies within and across tiles, and each Einsum's compute cycles on each array that can run it.
    """

    lowered: LoweredCascade
    key_rank: str
    """The rank the tile loop walks (the keys, ``M``)."""
    tile_var: str
    """The tile loop's variable (one iteration = one tile): the recurrence's ``m1``, or the key variable
    ``m`` itself when the key rank is not partitioned."""
    tile_count: int
    """Iterations of the tile loop (per split and per query block)."""
    outer_vars: tuple[str, ...]
    """Parts of the key rank outside the tile loop, looped at DRAM (the splits ``s`` of ``M = S*M1*M0``)."""
    inner_vars: tuple[str, ...]
    """Key positions inside one tile, innermost first (``m0``; ``m0, n`` for ``M = M1*N*M0``), spread over a
    2-D array's rows."""
    key_var: str | None
    """The key rank's own variable where Einsums iterate it unsplit (``m`` of ``FK[b,h,e,m]``, or every ``m``
    of an unpartitioned cascade): it runs on the tile loop, ``tile_count`` tiles of ``tile_keys`` keys."""
    tile_keys: int
    """Key positions in one tile."""
    query_vars: tuple[str, ...]
    """Variables spread over the arrays' columns, in fill order (``p``; ``p0, p1``; ``r, p`` in decode)."""
    columns: Mapping[str, int]
    """Query variable -> its factor across the widest array's columns (the rest is blocked, P1 x P2)."""
    batch_vars: tuple[str, ...]
    """Loops outside everything, at DRAM (``b``, ``h``)."""
    order: tuple[str, ...]
    """Einsums in dataflow order."""
    in_loop: frozenset[str]
    """Einsums inside the tile loop (they iterate the tile or key variable); the others run before or after it."""
    producers: Mapping[str, tuple[str, ...]]
    """Einsum -> Einsums whose results it reads in the same tile."""
    carried_readers: Mapping[str, tuple[str, ...]]
    """Einsum -> Einsums that read its result in the next tile."""
    tails: frozenset[str]
    """Einsums read only by the next tile or after the loop (may run at the start of the next tile)."""
    state: frozenset[str]
    """Results live across tiles and held in the buffer: recurrences and non-output accumulators."""
    accumulators: frozenset[str]
    """In-loop Einsums whose result has no tile or key variable: summed across the tiles in the buffer."""
    arrays: Mapping[str, tuple[str, ...]]
    """Einsum -> arrays that support its operators."""
    cycles: Mapping[tuple[str, str], float]
    """(Einsum, array) -> compute cycles of the whole Einsum there."""

    @property
    def inner_var(self) -> str:
        """The innermost key variable of a tile (``m0``)."""
        return self.inner_vars[0] if self.inner_vars else self.tile_var

    @property
    def query_var(self) -> str | None:
        """The first query variable (``p``), None when the outputs have none."""
        return self.query_vars[0] if self.query_vars else None

    def query_blocks(self) -> list[dict[str, int]]:
        """The query blocks held in the buffer (the study's P1), smallest first: per query variable, the factor
        iterated at the buffer level above the columns; what is left of it loops at DRAM (P2). Blocks fill the
        query variables in column order (the first completely before the next)."""
        left = {v: self.lowered.sizes[v.upper()] // self.columns[v] for v in self.query_vars}
        blocks: dict[int, dict[str, int]] = {1: {}}
        whole: dict[str, int] = {}
        for v in self.query_vars:
            for d in divisors(left[v]):
                block = {**whole, v: d}
                blocks.setdefault(math.prod(block.values()), block)
            whole[v] = left[v]
        return [blocks[k] for k in sorted(blocks)]


class FusedSearchError(AttnscopeError):
    """A cascade the fused one-pass search cannot map (several passes, no tile loop, unsupported operators)."""


def plan_fused(cascade: Cascade, sizes: Mapping[str, int], arch: ArchSpec) -> FusedPlan:
    """Derive a fused plan from the cascade and the architecture (the rules are :func:`search_fused`'s).

    >>> from simulator.specs import load_arch
    >>> from workloads import get_cascade
    >>> plan = plan_fused(get_cascade("fusemax").cascade, {"B": 1, "H": 1, "E": 64, "F": 64, "M": 1024,
    ...                   "P": 1024}, load_arch("fusemax-cloud"))
    >>> plan.tile_var, plan.tile_count, plan.inner_vars, plan.query_vars
    ('m1', 4, ('m0',), ('p',))
    """
    key_rank, tile_rank = _tile_ranks(cascade)
    passes = pass_analysis(cascade, tile_rank).passes
    if passes > 1:
        raise FusedSearchError(
            f"{cascade.name}: needs {passes} passes over {tile_rank} (einsum.analysis.pass_analysis); the fused "
            "search runs one tile loop. Cost multi-pass cascades with mappers.cascade_search.search_passes"
        )
    rows = _tile_rows(arch)
    full = cascade.rank_sizes(_with_tile_size(cascade, sizes, key_rank, rows))
    return _derive(cascade, lower(cascade, full), arch, key_rank, tile_rank, rows)


def _tile_ranks(cascade: Cascade) -> tuple[str, str]:
    """(key rank, tile rank): :func:`einsum.analysis.key_ranks`, its refusal as the fused search's."""
    try:
        return key_ranks(cascade)
    except ShapeError as exc:
        raise FusedSearchError(str(exc)) from None


def _tile_rows(arch: ArchSpec) -> int:
    """Keys per tile when the cascade leaves it free: the rows of the largest 2-D array (else the widest array)."""
    two = [a.shape[0] for a in arch.arrays if a.kind == "2d"]
    return max(two) if two else max(a.shape[-1] for a in arch.arrays)


def _largest_divisor(n: int, cap: int) -> int:
    return max(d for d in divisors(n) if d <= max(1, cap))


def _with_tile_size(cascade: Cascade, sizes: Mapping[str, int], key_rank: str, rows: int) -> dict[str, int]:
    """The sizes, with the innermost part of the key partition set to fill the rows when none of its parts
    is given (the study's M0 = 256); given parts are the algorithm's (a mask's block size) and are kept."""
    out = dict(sizes)
    parts = cascade.partitions.get(key_rank, ())
    if parts and key_rank in out and not any(p in out for p in parts):
        out[parts[-1]] = _largest_divisor(out[key_rank], rows)
    return out


def _derive(
    cascade: Cascade, lowered: LoweredCascade, arch: ArchSpec, key_rank: str, tile_rank: str, rows: int
) -> FusedPlan:
    """The plan at the lowered sizes (see :func:`search_fused` for the rules)."""
    size = lowered.sizes
    parts = cascade.partitions.get(key_rank, ())
    tile_var = tile_rank.lower()
    if parts:
        at = parts.index(tile_rank)
        outer = tuple(p.lower() for p in parts[:at])
        inner = tuple(p.lower() for p in reversed(parts[at + 1 :]))
    else:
        outer, inner = (), ()
    iterated = {v for e in lowered.einsums for v in e.vars}
    key_var = key_rank.lower() if key_rank.lower() in iterated else None
    if parts:
        tile_keys = math.prod(size[p] for p in parts[parts.index(tile_rank) + 1 :])
        tile_count = size[tile_rank]
    else:  # a recurrence over an unsplit rank steps one key at a time
        tile_keys = 1 if cascade.recurrences else _largest_divisor(size[key_rank], rows)
        tile_count = size[key_rank] // tile_keys
    keyish = {tile_var, *outer, *inner} | ({key_var} if key_var else set())
    order = tuple(e.name for e in lowered.einsums)
    einsum = {e.name: e for e in lowered.einsums}
    in_loop = frozenset(n for n in order if tile_var in einsum[n].vars or (key_var and key_var in einsum[n].vars))

    # Query variables: free variables of the outputs that index no input read at key positions (K, V: those
    # spread keys, not queries); where some are iterated by every Einsum that works on a tile's keys, those.
    in_tile = set(inner) | ({key_var} if key_var else set())
    streamed: set[str] = set()
    for e in lowered.einsums:
        for ti, t in enumerate(e.tensors):
            if t in lowered.inputs and any(e.incidence[ti, e.vars.index(v)] for v in in_tile if v in e.vars):
                streamed |= {v for v, on in zip(e.vars, e.incidence[ti], strict=True) if on}
    free = [v for out in lowered.outputs for v in einsum[out].vars if v in _out_vars(einsum[out])]
    candidates = list(dict.fromkeys(v for v in free if v not in keyish and v not in streamed))
    tile_work = [e for e in lowered.einsums if (set(inner) or in_tile) & set(e.vars)]  # e.g. the scores
    common = [v for v in candidates if tile_work and all(v in e.vars for e in tile_work)]
    query = common or candidates

    def rank_order(v: str) -> tuple[int, int]:
        rank = v.upper()
        parent = cascade.parent_of.get(rank, rank)
        siblings = cascade.partitions.get(parent, (rank,))
        return (-size[parent], siblings[::-1].index(rank) if rank in siblings else 0)

    query_vars = tuple(sorted(query, key=rank_order))
    width = max(a.shape[-1] * a.instances for a in arch.arrays)
    columns: dict[str, int] = {}
    for v in query_vars:
        columns[v] = _largest_divisor(size[v.upper()], width)
        width //= columns[v]

    # Batch variables: iterated by every Einsum an output depends on (its chain), outside everything. An output
    # computed from inputs alone (a weight's gradient dW = sum[b,p] dO * X in a derived backward pass) is one
    # product beside the loop: its own variables do not loop the others at DRAM (unless every output is one).
    batch: list[str] = []
    chained = [out for out in lowered.outputs if _ancestors(cascade, out)] or lowered.outputs
    for out in chained:
        chain = _ancestors(cascade, out) | {out}
        shared = set.intersection(*(set(einsum[n].vars) for n in chain))
        batch += [v for v in einsum[out].vars if v in shared and v not in keyish and v not in query_vars]
    batch_vars = tuple(dict.fromkeys(batch))

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
    for n in order:
        same_tile = [r for r in lowered.consumers.get(n, ()) if r not in carried[n] and r in in_loop]
        if n not in in_loop or not same_tile:
            tails.add(n)
    accumulators = frozenset(n for n in in_loop if not {tile_var, key_var} & _out_vars(einsum[n]))
    state = frozenset(n for n, readers in carried.items() if readers) | (accumulators - set(lowered.outputs))

    arrays, cycles = {}, {}
    plan = FusedPlan(
        lowered, key_rank, tile_var, tile_count, outer, inner, key_var, tile_keys, query_vars, columns, batch_vars,
        order, in_loop, producers, {k: tuple(v) for k, v in carried.items()}, frozenset(tails), state,
        accumulators, arrays, cycles,
    )  # fmt: skip
    for e in lowered.einsums:
        able = tuple(a.name for a in arch.arrays if set(e.ops_per_point) <= {o.name for o in a.ops})
        if not able:
            support = "; ".join(f"{a.name} supports {', '.join(o.name for o in a.ops)}" for a in arch.arrays)
            raise FusedSearchError(
                f"no array of {arch.name} supports every operator of {e.name} ({', '.join(sorted(e.ops_per_point))})"
                f": {support}. Add the missing operators to an array's ops in the architecture spec"
            )
        arrays[e.name] = able
        for a in able:
            nest = _fused_nest(plan, arch, e.name, a, {}, ())
            cpp = cycles_per_point(e, arch.array(a), arch.compat.sum_op_cycles)
            cycles[e.name, a] = float(einsum_nest(e, arch, nest).compute_cycles[0]) * cpp
    return plan


def _out_vars(e: LoweredEinsum) -> set[str]:
    return {v for v, on in zip(e.vars, e.incidence[0], strict=True) if on}


def _ancestors(cascade: Cascade, name: str) -> set[str]:
    """Einsums whose results ``name`` depends on (through any chain of reads)."""
    seen, todo = set(), [name]
    by_name = cascade.einsum_by_name
    while todo:
        for t in by_name[todo.pop()].inputs:
            if t in by_name and t not in seen:
                seen.add(t)
                todo.append(t)
    return seen


def _fill(remaining: dict[str, int], prefer: Sequence[str], room: int) -> list[tuple[str, int]]:
    """Spread the preferred variables over an axis of ``room`` PEs, each by its largest divisor that fits."""
    loops = []
    for v in prefer:
        n = remaining.get(v, 1)
        if room <= 1:
            break
        if n <= 1:
            continue
        f = _largest_divisor(n, room)
        if f > 1:
            remaining[v] //= f
            room //= f
            loops.append((v, f))
    return loops


def _fused_nest(
    plan: FusedPlan, arch: ArchSpec, einsum: str, array: str, block: Mapping[str, int], keeps: Iterable[str]
) -> EinsumMapping:
    """One Einsum's loop nest in the fused loop, for query block ``block`` (rules in :func:`search_fused`)."""
    e = plan.lowered.einsum(einsum)
    spec = arch.array(array)
    size = plan.lowered.sizes
    remaining = {v: e.var_size(v) for v in e.vars}

    def take(loops: list[tuple[str, int]], var: str, bound: int) -> None:
        if var in remaining and bound > 1:
            remaining[var] //= bound
            loops.append((var, bound))

    dram: list[tuple[str, int]] = []
    buffer: list[tuple[str, int]] = []
    for v in plan.batch_vars:
        take(dram, v, remaining.get(v, 1))
    for v in plan.query_vars:
        take(dram, v, size[v.upper()] // (plan.columns[v] * block.get(v, 1)))
    for v in plan.outer_vars:
        take(dram, v, remaining.get(v, 1))
    # The tile loop: every tile of the Einsum's own tile rank (in a skipping plan, the tiles it computes).
    per_tile = plan.tile_keys if plan.tile_var == plan.key_var else 1
    take(dram, plan.tile_var, remaining.get(plan.tile_var, 1) // per_tile)
    if plan.key_var and plan.key_var != plan.tile_var:
        take(dram, plan.key_var, remaining.get(plan.key_var, 1) // plan.tile_keys)
    for v in plan.query_vars:
        take(buffer, v, block.get(v, 1))

    keys = (*plan.inner_vars, *((plan.key_var,) if plan.key_var else ()))
    others = sorted((v for v in e.vars if v not in keys and v not in plan.query_vars), key=lambda v: -remaining[v])
    axes = spec.shape if spec.instances == 1 else (*spec.shape, spec.instances)
    roles = ("keys", *("queries",) * (len(axes) - 1)) if spec.kind == "2d" else ("queries",) * len(axes)
    spread, filled = [], set()
    for axis, role in zip(axes, roles, strict=True):
        prefer = keys if role == "keys" else plan.query_vars
        loops = _fill(remaining, prefer, axis)
        if not loops and role not in filled:  # none of the role's variables: spread the largest others
            fallback = (*keys, *others) if spec.kind == "1d" else others
            loops = _fill(remaining, fallback, axis)
        if loops:
            filled.add(role)
        spread.append(tuple(loops))
    # What no axis takes iterates innermost at the buffer (a PE holds one word of each operand); a query
    # variable's rest on an array narrower than the column block joins its block loop.
    blocked = {v: i for i, (v, _) in enumerate(buffer)}
    for v, n in remaining.items():
        if n > 1 and v in blocked:
            buffer[blocked[v]] = (v, buffer[blocked[v]][1] * n)
        elif n > 1:
            buffer.append((v, n))
    return EinsumMapping(
        array=array,
        levels=(arch.levels[0].name, shared_buffer(arch), spec.fed_by),
        temporal=(tuple(dram), tuple(buffer), ()),
        spatial=tuple(spread),
        keep=(frozenset(e.tensors), frozenset(keeps) & set(e.tensors), frozenset(e.tensors)),
    )


Ranked = list[tuple[float, dict[str, str], tuple[dict[str, tuple[str, ...]], ...]]]

NEGLIGIBLE = 0.01
"""An Einsum whose least cycles are at most this fraction of a perfectly balanced tile is placed greedily."""
VISITS = 5000
"""The branch and bound stops after this many partial assignments once it has a complete one (deterministic:
every registered cascade reaches the result of the unbounded search well before)."""


def schedules(plan: FusedPlan, keep: int = 16, within: float | None = None) -> tuple[Ranked, int]:
    """Bindings with few compute cycles per phase, each with its best schedule found, fewest cycles first.

    Without ``within``: the ``keep`` bindings with the fewest cycles. With it: the first ``keep`` bindings found
    whose cycles are at most ``within`` (the search stops there).

    Branch and bound over Einsums in dataflow order, each given an array and a stage (rules in
    :func:`search_fused`). Only a binding's best schedule is kept: its other schedules have the same placement,
    traffic and energy and more cycles. The space is narrowed in two documented ways: per array an Einsum is
    tried in the earliest stage it may join, in the earliest stage where it adds the least time, and in a new
    last stage; and an Einsum whose least cycles are at most :data:`NEGLIGIBLE` of a perfectly balanced tile
    takes the single cheapest of those places. A partial assignment is cut when a lower bound on its cycles
    reaches the bound (the ``keep``-th best binding's cycles, or ``within``): the stages so far plus the
    remaining Einsums' least work beyond the idle time the stages already leave (no array is busy longer than
    the whole), and no array's own work. Returns [(cycles, binding, stages)] with stages as per-array Einsum
    tuples, and how many complete (binding, schedule) pairs the search reached.

    The search runs in :func:`_schedule_search` (Numba); this side lays the plan out as arrays and reads the
    bindings back.
    """
    order = plan.order
    n = len(order)
    arrays_all = sorted({a for able in plan.arrays.values() for a in able})
    width = len(arrays_all)
    at = {a: k for k, a in enumerate(arrays_all)}
    index = {e: i for i, e in enumerate(order)}
    cyc = plan.cycles
    able = np.zeros((n, width), dtype=np.bool_)
    cycles = np.zeros((n, width))
    for i, e in enumerate(order):
        for a in plan.arrays[e]:
            able[i, at[a]] = True
            cycles[i, at[a]] = cyc[e, a]
    least = [min(cyc[e, a] for a in plan.arrays[e]) for e in order]
    rest = [sum(least[i:]) for i in range(n + 1)]
    minor = np.array([c <= NEGLIGIBLE * rest[0] / width for c in least], dtype=np.bool_)
    forced = np.zeros((n + 1, width))
    for i in range(n - 1, -1, -1):
        forced[i] = forced[i + 1]
        if len(plan.arrays[order[i]]) == 1:
            a = at[plan.arrays[order[i]][0]]
            forced[i, a] = forced[i + 1, a] + cyc[order[i], plan.arrays[order[i]][0]]
    # Two arrays: the remaining Einsums' least possible makespan, splitting them fractionally between the
    # arrays (each starts on its faster array; work moves to the other one, best exchange rate first).
    flex_start = np.zeros(n + 2, dtype=np.int64)
    flex: list[tuple[float, float, float]] = []
    for i in range(n + 1):
        flex_start[i] = len(flex)
        if width == 2 and i < n:
            first, second = arrays_all
            both = [e for e in order[i:] if len(plan.arrays[e]) == 2]
            flex += sorted((cyc[e, second] / cyc[e, first], cyc[e, first], cyc[e, second]) for e in both)
    flex_start[n + 1] = len(flex)
    flexible = np.array([(c0, c1) for _, c0, c1 in flex], dtype=np.float64).reshape(-1, 2)

    def csr(lists: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        starts = np.cumsum([0, *(len(x) for x in lists)]).astype(np.int64)
        return starts, np.array([v for x in lists for v in x], dtype=np.int64)

    prod_start, prods = csr([[index[p] for p in plan.producers[e]] for e in order])
    read_start, readers = csr([[index[r] for r in plan.carried_readers.get(e, ()) if r in index] for e in order])
    tails = np.array([e in plan.tails for e in order], dtype=np.bool_)
    count, costs, binds, stage_of, complete = _schedule_search(
        able, cycles, np.array(rest), minor, forced, flex_start, flexible, prod_start, prods, read_start, readers,
        tails, keep, -1.0 if within is None else float(within), VISITS,
    )  # fmt: skip
    out = []
    for k in sorted(range(count), key=lambda k: costs[k]):  # stable: ties in the order they were found
        bound_to = {e: arrays_all[binds[k, i]] for i, e in enumerate(order)}
        stages = tuple(
            {a: es for a in arrays_all if (es := tuple(e for i, e in enumerate(order) if stage_of[k, i] == s
                                                        and bound_to[e] == a))}
            for s in sorted(set(stage_of[k].tolist()))
        )  # fmt: skip
        out.append((float(costs[k]), bound_to, stages))
    return out, int(complete)


@kernel
def _balanced(i, totals, forced, flex_start, flexible):  # pragma: no cover - compiled
    """Two arrays: the least makespan of the work placed so far and the remaining Einsums split fractionally."""
    load = np.empty(2)
    load[0] = totals[0] + forced[i, 0]
    load[1] = totals[1] + forced[i, 1]
    lo, hi = flex_start[i], flex_start[i + 1]
    for k in range(lo, hi):
        c0, c1 = flexible[k, 0], flexible[k, 1]
        load[1 if c1 < c0 else 0] += min(c0, c1)
    # Move work from the more loaded array to the other, cheapest exchange first, until the two balance: off the
    # first array the Einsums no slower there in ascending c1/c0, off the second those faster there, descending.
    if load[0] > load[1] or load[1] > load[0]:
        h = 0 if load[0] > load[1] else 1
        for j in range(hi - lo):
            k = lo + j if h == 0 else hi - 1 - j
            ch, cl = flexible[k, h], flexible[k, 1 - h]
            if not (ch <= cl if h == 0 else ch < cl):
                continue
            gap = load[h] - load[1 - h]
            if gap <= 0:
                break
            f = min(1.0, gap / (flexible[k, 0] + flexible[k, 1]))
            load[h] -= f * ch
            load[1 - h] += f * cl
    return max(load[0], load[1])


@kernel
def _schedule_search(
    able,
    cycles,
    rest,
    minor,
    forced,
    flex_start,
    flexible,
    prod_start,
    prods,
    read_start,
    readers,
    tails,
    keep,
    within,
    max_visits,
):  # pragma: no cover - compiled (tests/mappers/test_schedules.py holds it to the Python search, step for step)
    """:func:`schedules`' branch and bound: Einsum ``i`` (dataflow order) on array ``a`` (sorted names) in stage
    ``s``; ``within`` < 0: none. Returns the bindings kept (count, cycles, arrays, stages, in the order found)
    and the complete assignments reached."""
    n, width = cycles.shape
    inf = np.inf
    bound = inf if within < 0 else within * (1 + 1e-12)
    cap = keep + 1
    best_cost = np.zeros(cap)
    best_bind = np.zeros((cap, n), dtype=np.int64)
    best_stage = np.zeros((cap, n), dtype=np.int64)
    nbest = 0
    complete = 0
    binding = np.full(n, -1, dtype=np.int64)
    stage = np.full(n, -1, dtype=np.int64)
    loads = np.zeros((n + 1, width))
    stage_max = np.zeros(n + 1)
    top = 0
    totals = np.zeros(width)
    cost = 0.0
    visits = 0
    slots = 3 * width
    cand_delta = np.zeros((n, slots))
    cand_s = np.zeros((n, slots), dtype=np.int64)
    cand_a = np.zeros((n, slots), dtype=np.int64)
    cand_count = np.zeros(n, dtype=np.int64)
    cand_pos = np.zeros(n, dtype=np.int64)
    old_max = np.zeros(n)
    opened = np.zeros(n, dtype=np.bool_)

    enter, step, back = 0, 1, 2  # enter visit(i); try Einsum i's next place; return from visit(i)
    i = 0
    action = enter
    while True:
        if action == enter:
            visits += 1
            leave = (within >= 0 and nbest >= keep) or (nbest > 0 and visits > max_visits)
            if not leave:
                placed = 0.0
                for a in range(width):
                    placed += totals[a]
                idle = width * cost - placed
                if cost + max(0.0, (rest[i] - idle) / width) >= bound:
                    leave = True
                else:
                    own = -inf
                    for a in range(width):
                        own = max(own, totals[a] + forced[i, a])
                    if (
                        own >= bound
                        or (_balanced(i, totals, forced, flex_start, flexible) if width == 2 else 0.0) >= bound
                    ):
                        leave = True
            if not leave and i == n:
                complete += 1
                found = -1
                for k in range(nbest):
                    same = True
                    for j in range(n):
                        if best_bind[k, j] != binding[j]:
                            same = False
                            break
                    if same:
                        found = k
                        break
                if not (found >= 0 and best_cost[found] <= cost):
                    if found < 0:
                        found = nbest
                        nbest += 1
                    best_cost[found] = cost
                    best_bind[found] = binding
                    best_stage[found] = stage
                    if within < 0 and nbest > keep:  # drop the first of the most costly
                        worst = 0
                        for k in range(1, nbest):
                            if best_cost[k] > best_cost[worst]:
                                worst = k
                        for k in range(worst, nbest - 1):
                            best_cost[k] = best_cost[k + 1]
                            best_bind[k] = best_bind[k + 1]
                            best_stage[k] = best_stage[k + 1]
                        nbest -= 1
                    if within < 0 and nbest == keep:
                        bound = best_cost[0]
                        for k in range(1, nbest):
                            bound = max(bound, best_cost[k])
                leave = True
            if leave:
                action = back
            else:
                # The places tried for Einsum i, cheapest first (see schedules).
                m = 0
                for a in range(width):
                    if not able[i, a]:
                        continue
                    low = 0
                    for k in range(prod_start[i], prod_start[i + 1]):
                        p = prods[k]
                        low = max(low, stage[p] + (1 if binding[p] != a else 0))
                    limit = -1
                    if tails[i]:
                        limit = top
                        seen = False
                        for k in range(read_start[i], read_start[i + 1]):
                            r = readers[k]
                            if stage[r] >= 0:
                                v = stage[r] - (1 if binding[r] != a else 0)
                                limit = v if not seen else min(limit, v)
                                seen = True
                    c = cycles[i, a]
                    first_d, first_s = -1.0, -1
                    cheap_d, cheap_s = inf, -1
                    for s_ in range(top + 1):
                        if not (s_ >= low or s_ <= limit):
                            continue
                        d = c if s_ == top else max(0.0, loads[s_, a] + c - stage_max[s_])
                        if first_s < 0:
                            first_d, first_s = d, s_
                        if d < cheap_d or (d == cheap_d and s_ < cheap_s):
                            cheap_d, cheap_s = d, s_
                    for d, s_ in ((cheap_d, cheap_s), (first_d, first_s), (c, top)):
                        dup = False
                        for k in range(m):
                            if cand_delta[i, k] == d and cand_s[i, k] == s_ and cand_a[i, k] == a:
                                dup = True
                                break
                        if not dup:
                            cand_delta[i, m] = d
                            cand_s[i, m] = s_
                            cand_a[i, m] = a
                            m += 1
                for k in range(1, m):  # insertion sort by (delta, stage, array)
                    d, s_, a = cand_delta[i, k], cand_s[i, k], cand_a[i, k]
                    j = k - 1
                    while j >= 0 and (
                        cand_delta[i, j] > d
                        or (cand_delta[i, j] == d and (cand_s[i, j] > s_ or (cand_s[i, j] == s_ and cand_a[i, j] > a)))
                    ):
                        cand_delta[i, j + 1] = cand_delta[i, j]
                        cand_s[i, j + 1] = cand_s[i, j]
                        cand_a[i, j + 1] = cand_a[i, j]
                        j -= 1
                    cand_delta[i, j + 1] = d
                    cand_s[i, j + 1] = s_
                    cand_a[i, j + 1] = a
                cand_count[i] = 1 if minor[i] else m
                cand_pos[i] = 0
                action = step
        elif action == back:
            i -= 1  # back in visit(i - 1): undo the place its loop tried
            if i < 0:
                break
            a, s_ = binding[i], stage[i]
            c = cycles[i, a]
            cost -= cand_delta[i, cand_pos[i] - 1]
            totals[a] -= c
            stage_max[s_] = old_max[i]
            loads[s_, a] -= c
            if loads[s_, a] <= 0.0:
                loads[s_, a] = 0.0
            if opened[i]:
                top -= 1
            binding[i] = -1
            stage[i] = -1
            action = step
        else:
            if cand_pos[i] < cand_count[i]:
                k = cand_pos[i]
                cand_pos[i] += 1
                d, s_, a = cand_delta[i, k], cand_s[i, k], cand_a[i, k]
                c = cycles[i, a]
                binding[i], stage[i] = a, s_
                opened[i] = s_ == top
                if opened[i]:
                    stage_max[top] = 0.0
                    top += 1
                old_max[i] = stage_max[s_]
                loads[s_, a] += c
                stage_max[s_] = max(old_max[i], loads[s_, a])
                totals[a] += c
                cost += d
                i += 1
                action = enter
            else:
                action = back
    return nbest, best_cost[:nbest].copy(), best_bind[:nbest].copy(), best_stage[:nbest].copy(), complete


def fused_mapping(
    plan: FusedPlan,
    arch: ArchSpec,
    binding: Mapping[str, str],
    phase: Phase,
    block: Mapping[str, int] | int,
    nests: dict | None = None,
) -> CascadeMapping:
    """The fused mapping of a binding and schedule for query block ``block`` (query variable -> factor held
    in the buffer; an int is that factor of the first query variable, the study's P1).

    Placement: recurrence state and cross-tile sums live in the buffer, and so does a result computed
    outside the tile loop and read inside it (every tile reads it, like an input); any other intermediate
    stays in its producer's PE registers when all its readers run on the producer's array, else it goes
    through the staging level while its double-buffered spatial tile still fits there (smallest first), else
    the buffer. The buffer also holds the inputs' tiles and the output
    accumulators. ``nests`` is an optional cache of loop nests shared between calls on one plan.
    """
    if isinstance(block, int):
        block = {plan.query_vars[0]: block} if plan.query_vars else {}
    lowered = plan.lowered
    buffer = shared_buffer(arch)
    placement: dict[str, str] = dict.fromkeys(plan.state, buffer)
    for e in lowered.einsums:
        if e.name in plan.state or e.name in lowered.outputs:
            continue
        readers = lowered.consumers.get(e.name, ())
        if e.name not in plan.in_loop and any(r in plan.in_loop for r in readers):
            placement[e.name] = buffer
            continue
        arrays = {binding[c] for c in readers}
        placement[e.name] = "pe" if arrays <= {binding[e.name]} else (arch.staging_level or buffer)
    cache = {} if nests is None else nests

    def nests_for(placement: Mapping[str, str]) -> dict[str, EinsumMapping]:
        keeps = set(lowered.inputs) | set(plan.state) | set(plan.accumulators)
        keeps |= {t for t, at in placement.items() if at == buffer}
        chosen = {}
        for e in lowered.einsums:
            key = (e.name, binding[e.name], tuple(sorted(block.items())), frozenset(keeps & set(e.tensors)))
            if key not in cache:
                cache[key] = _fused_nest(plan, arch, e.name, binding[e.name], block, key[3])
            chosen[e.name] = cache[key]
        return chosen

    chosen = nests_for(placement)
    staged = [t for t, at in placement.items() if at == arch.staging_level]
    if staged:
        # The staging level holds a double buffer of each staged tensor's spatial tile; what does not fit goes
        # through the buffer instead (smallest tiles staged first).
        room = float(arch.level(arch.staging_level).capacity_words)
        tiles = {t: 2 * spatial_tile_words(lowered.einsum(t), chosen[t], 0) for t in staged}
        for t in sorted(staged, key=lambda t: (tiles[t], t)):
            if tiles[t] <= room:
                room -= tiles[t]
            else:
                placement[t] = buffer
        if any(placement[t] == buffer for t in staged):
            chosen = nests_for(placement)
    return CascadeMapping(name=f"fused-P1={math.prod(block.values())}", einsums=chosen, placement=placement,
                          phases=(phase,))  # fmt: skip


def tile_choices(
    cascade: Cascade, sizes: Mapping[str, int], arch: ArchSpec, density: Mapping[str, float] | None = None
) -> tuple[int, ...]:
    """The key-tile sizes :func:`search_fused` tries: where the key rank is split in two (``M = M1 x M0``), its
    inner part is not a declared ``param`` and no mask (a ``where`` or an input mask's density) depends on the
    tiling, the largest divisor of the keys up to one and up to two times each 2-D array's rows (and the size
    the shape gives, the registry's default); else none (the tile stays as given)."""
    try:
        key_rank, _ = key_ranks(cascade)
    except ShapeError:
        return ()
    parts = cascade.partitions.get(key_rank, ())
    masked = bool(density) or bool(cascade.densities) or any("where(" in e.text for e in cascade.einsums)
    if len(parts) != 2 or parts[-1] in cascade.params or masked or key_rank not in sizes:
        return ()
    keys = sizes[key_rank]
    rows = [a.shape[0] for a in arch.arrays if a.kind == "2d"] or [_tile_rows(arch)]
    out = {_largest_divisor(keys, k * r) for r in rows for k in (1, 2)}
    if parts[-1] in sizes:
        out.add(sizes[parts[-1]])
    return tuple(sorted(out))


def search_fused(
    cascade: Cascade,
    sizes: Mapping[str, int],
    arch: ArchSpec,
    candidates: int = 16,
    density: Mapping[str, float] | None = None,
    plan: FusedPlan | None = None,
    tiles: Sequence[int] | None = None,
) -> tuple[CascadeDesign, list[CascadeDesign]]:
    """The lowest-latency fused design of a one-pass cascade over the key-tile sizes ``tiles`` (default
    :func:`tile_choices`: the tile is searched where it is free, the study's ``M0 = 256`` is one candidate), and
    the others costed, best first (``plan``: the cascade's :func:`plan_fused` at these sizes on this
    architecture, when the caller has it already). Each tile is searched by :func:`search_fused_at`; the best
    design's notes say which tile won."""
    options = tile_choices(cascade, sizes, arch, density) if tiles is None else tuple(tiles)
    if len(options) <= 1 and (not options or sizes.get(_inner_part(cascade), options[0]) == options[0]):
        return search_fused_at(cascade, sizes, arch, candidates, density, plan)
    inner = _inner_part(cascade)
    key_rank = cascade.parent_of[inner]
    results = []
    for size in options:
        resized = {k: v for k, v in sizes.items() if k not in cascade.partitions[key_rank]} | {inner: size}
        reuse = plan if plan is not None and plan.lowered.sizes.get(inner) == size else None
        results.append(search_fused_at(cascade, resized, arch, candidates, density, reuse))
    designs = sorted((d for _, ds in results for d in ds), key=_rank)
    best = designs[0]
    note = f"key tile {inner} = {best.lowered.sizes[inner]} searched among {', '.join(map(str, options))}"
    best = replace(best, notes=(*best.notes, note))
    return best, [best, *designs[1:]]


def _inner_part(cascade: Cascade) -> str:
    """The innermost part of the key rank's partition."""
    key_rank, _ = key_ranks(cascade)
    return cascade.partitions[key_rank][-1]


def search_fused_at(
    cascade: Cascade,
    sizes: Mapping[str, int],
    arch: ArchSpec,
    candidates: int = 16,
    density: Mapping[str, float] | None = None,
    plan: FusedPlan | None = None,
) -> tuple[CascadeDesign, list[CascadeDesign]]:
    """The lowest-latency fused design of a one-pass cascade at the given sizes (key tile included), and the
    others costed (``plan``: the cascade's :func:`plan_fused` at these sizes on this architecture, when the
    caller has it already).

    The rules (assumptions of the model, stated once here):

    * **The tile loop** walks the *key rank*: the iterative rank of the cascade's recurrences (``m1`` of the
      running max) and the rank it partitions (``M``); a cascade without a recurrence (sigmoid, softplus
      attention: no normalising pass) tiles the rank it reduces over computed values (``sum[m] SG * V``),
      in tiles of the largest 2-D array's rows. Parts of the key rank before the tile part are loops
      outside it (the splits ``s`` of ``M = S * M1 * M0``, run one after another); parts after it are the
      keys of one tile, spread over a 2-D array's rows (``m0``, then ``n`` of ``M = M1 * N * M0``). An
      Einsum that iterates the key rank unsplit (``FK[b,h,e,m]``) runs on the same tiles. When no part of
      the partition is given, the innermost one fills the rows (the study's ``M0 = 256``); given parts are
      kept here, and :func:`search_fused` searches the tile over :func:`tile_choices` where it is free (not
      a declared parameter, no mask reads it). A cascade that needs more than one pass over the tile
      rank (:func:`einsum.analysis.pass_analysis`) is refused: :func:`search_passes` costs those. Einsums
      that do not iterate the tile loop run before it (``QL = Q . WK``) or after it (the division, a
      split-K combine over ``s``).
    * **Columns**: the arrays' columns (and a 1-D array's PEs) spread the *query variables*: free variables
      of the outputs that index no input read at key positions, in the order of their rank's size (the
      innermost part of a partitioned query rank first). So in decode (P = 1) the heads that share one K/V
      head (``r`` of GQA, ``h`` of MQA and MLA) fill the columns, as GQA decode kernels pack them, and
      block-sparse queries ``p0`` then ``p1`` do. What the widest array's columns do not take is blocked:
      a block held in the buffer (the study's P1: the fastest, then lowest-energy, block whose buffer state
      fits; see ``cost_binding`` below) and the rest looped at DRAM (P2). Every other variable shared by an
      output's whole chain (``b``, ``h``) loops at DRAM outside everything; the rest (``e``, ``f``) iterate
      innermost at the buffer. An Einsum with none of an axis's variables spreads its largest others there
      (``f`` of ``AV = OL . WV`` over the rows; a 1-D array takes the keys first), so no Einsum runs on one
      PE.
    * **Binding and schedule** (:func:`schedules`): each Einsum on any array whose PEs support all its
      operators; a tile's stages run one after another, the arrays of a stage overlap. An Einsum follows a
      producer on the same array in the same stage or later, one on another array in a later stage; a
      *tail* (read only by the next tile or after the loop) may run at the start of the next tile, before
      its readers there. The binding with the fewest tile cycles is costed in full by
      :func:`simulator.cost.evaluate_cascade`. A binding's latency is at least its latency bound: its tile
      cycles, and the compulsory DRAM time (every input read and every output written once). When the first
      design's latency meets its own bound no other binding can be faster; otherwise up to
      ``candidates - 1`` others whose bound does not exceed the best latency so far are costed too, and the
      lowest latency (then energy) wins.
    * **Placement**: see :func:`fused_mapping`.
    * **Block masks** (``density``: input mask -> fraction of ones, as in
      :func:`einsum.analysis.effective_points`): a mask indexed by the tile variable and by no key inside a
      tile (``BM[b,h,m1,p1]``) lets a kernel skip a whole tile (one tile step for one query block held in
      the buffer), as block-sparse kernels iterate over the kept blocks only: no K/V read, no compute.
      With mask elements independent (the analysis's assumption), a tile that covers ``k`` elements of a
      mask of density ``d`` is computed with probability ``1 - (1 - d)^k`` (with several masks the product,
      an upper bound), and the loop is costed at ``ceil`` of the expected number of computed tiles. Smaller
      query blocks skip more and re-read K/V more.
    * **Static masks** (``where`` on index comparisons: causal, windows, sinks, strided shards, the chunk of
      chunked linear attention) skip tiles the same way: a kernel skips the key tiles that no query of the
      block can see, and the loop is costed at ``ceil`` of the computed tiles per query block, averaged
      over the query blocks (:func:`_visible_tiles`). What a tile must compute is the analysis's own
      (:func:`einsum.regions.work_regions`: a score is computed only where a mask selects it, and so are
      the exp, max and sums that consume it). The in-loop Einsums that iterate a query variable fall into
      groups connected by what they read within the tile (the retrieval and the streaming heads of
      DuoAttention are two), and a group computes a tile when some point of the (query block x tile) box
      may lie in the work region of one of its Einsums; Einsums that iterate no key inside a tile and work
      everywhere - the running max, sum and output updates - are assumed to be the identity on a tile
      whose scores are all masked (the running state is unchanged), so they follow their group, as in
      FlashAttention-style kernels. The test is sound: a tile is skipped only when the region provably
      misses the whole box (:func:`einsum.regions.may_hold`), so work is never under-counted. A query
      block is a contiguous run of ``columns x P1`` queries (the loops nest outer to inner); a condition
      on another variable (the head's shard in S2-attention) is evaluated for each of its values and the
      tiles averaged (over its whole range at once past :data:`ENUMERATED` combinations, which keeps a
      tile any value sees). With a block mask too, the two combine multiplicatively (independent).
    * With either kind of mask, skipped tiles read no K or V: the plan is re-derived with each Einsum's tile
      loop cut to the tiles it computes (:func:`_skipping`). Einsums of the loop that iterate no query
      variable (the key-only state of linear attention) run once for all query blocks and compute every
      tile.
    """
    plan = plan or plan_fused(cascade, sizes, arch)
    masks = _block_masks(cascade, plan, density)
    statics = _static_masks(cascade, plan)
    buffer = shared_buffer(arch)
    capacity = arch.level(buffer).capacity_words if buffer else math.inf
    blocks = plan.query_blocks()
    nests: dict = {}
    counted: dict[tuple, dict[str, int]] = {}
    skipping: dict[tuple, tuple[FusedPlan, dict]] = {}
    designs: list[CascadeDesign] = []

    def tile_counts(block: Mapping[str, int]) -> dict[str, int]:
        key = tuple(sorted(block.items()))
        if key not in counted:
            counted[key] = _tile_counts(plan, masks, statics, block)
        return counted[key]

    fewest = min(tile_counts(blocks[0]).values(), default=plan.tile_count)
    skips = bool(masks) or fewest < plan.tile_count

    def design(cycles: float, binding: dict[str, str], stages, block: Mapping[str, int]) -> CascadeDesign:
        run, cache, note = plan, nests, f"tile compute {cycles:,.0f} cycles per phase"
        if skips:
            counts = tile_counts(block)
            key = tuple(sorted(counts.items()))
            if key not in skipping:
                skipping[key] = (_skipping(cascade, plan, arch, counts), {})
            run, cache = skipping[key]
            note += "; " + _skip_note(plan, masks, statics, counts)
        phase = Phase(stages=stages)
        mapping = fused_mapping(run, arch, binding, phase, block, cache)
        cost = evaluate_cascade(run.lowered, arch, mapping)
        text = "; ".join(
            f"stage {k}: " + ", ".join(f"{a} {'+'.join(es)}" for a, es in s.items()) for k, s in enumerate(stages)
        )
        return CascadeDesign(mapping, cost, binding, f"{mapping.name}; {text}", 0, 0, (note,), run.lowered)

    def least_cycles(stages, block: Mapping[str, int]) -> float:
        """A binding's compute cycles with each Einsum's tile loop cut to the tiles it computes at ``block``
        (a lower bound on its compute there; the smallest block, which skips the most, bounds every block)."""
        counts = tile_counts(block)

        def stage_cycles(stage: Mapping[str, tuple[str, ...]]) -> float:
            return max(sum(plan.cycles[e, a] * counts.get(e, plan.tile_count) for e in es) for a, es in stage.items())

        return sum(stage_cycles(stage) for stage in stages) / plan.tile_count

    def cost_binding(cycles: float, binding: dict[str, str], stages) -> float:
        """Cost a binding at the query blocks whose buffer state fits and return the least latency (the ranking,
        :func:`_rank`, then chooses by feasibility, latency and energy). When tiles are skipped every fitting block
        is costed, smallest first, unless its compute alone exceeds the best latency so far: a smaller block
        skips more tiles and re-reads K/V more. Otherwise a smaller block computes the same tiles and re-reads
        K/V more: the blocks are costed largest first, and the descent stops at the first block that is not
        better - in latency, or at equal latency in energy - than the larger one before it."""
        fit = _largest_fitting(plan, arch, binding, Phase(stages=stages), blocks, capacity, buffer, nests)
        above = None
        for block in blocks[: fit + 1] if skips else reversed(blocks[: fit + 1]):
            so_far = min((d.cost.latency_s for d in designs if d.cost.feasible), default=math.inf)
            if least_cycles(stages, block) / arch.clock_hz > so_far * (1 + 1e-12):
                continue
            designs.append(design(cycles, binding, stages, block))
            if not skips and above is not None and _rank(designs[-1]) >= _rank(above):
                break
            above = designs[-1]
        return min(d.cost.latency_s for d in designs)

    ranked, complete = schedules(plan, 1)
    best = cost_binding(*ranked[0])
    # Another binding can win or tie only when its latency bound - its tile cycles (scaled by the fewest
    # tiles a mask leaves any Einsum, at the smallest query block), and the compulsory DRAM time when no
    # tile is skipped - is at most the best latency; none can beat a best design that already meets the
    # fewest cycles' bound.
    scale = fewest / plan.tile_count if skips else 1.0
    floor = 0.0 if skips else _compulsory_s(plan.lowered, arch)
    if candidates > 1 and best > max(ranked[0][0] * scale / arch.clock_hz, floor) * (1 + 1e-12):
        more, reached = schedules(plan, candidates, within=best * arch.clock_hz / scale)
        complete += reached
        for cycles, binding, stages in more:
            if binding == ranked[0][1]:
                continue
            if max(cycles * scale / arch.clock_hz, floor) > best * (1 + 1e-12):
                break
            if skips and least_cycles(stages, blocks[0]) / arch.clock_hz > best * (1 + 1e-12):
                continue
            best = cost_binding(cycles, binding, stages)
    designs = [replace(d, candidates=complete, evaluated=len(designs)) for d in designs]
    designs.sort(key=_rank)
    return designs[0], designs


def _compulsory_s(lowered: LoweredCascade, arch: ArchSpec) -> float:
    """Seconds to read every input and write every output once at the DRAM bandwidth."""
    bandwidth = arch.levels[0].bandwidth_bytes_per_s
    words = sum(lowered.tensor_words[t] for t in (*lowered.inputs, *lowered.outputs))
    return words * arch.word_bytes / bandwidth if bandwidth else 0.0


def _rank(d: CascadeDesign) -> tuple[bool, float, float]:
    return (not d.cost.feasible, d.cost.latency_s, d.cost.energy_pj)


def _largest_fitting(
    plan: FusedPlan,
    arch: ArchSpec,
    binding: Mapping[str, str],
    phase: Phase,
    blocks: list[dict[str, int]],
    capacity: float,
    buffer: str | None,
    nests: dict,
) -> int:
    """Index of the largest query block whose buffer occupancy fits (0 when none does); occupancy grows
    with the block, so a bisection finds it."""
    lo, hi = 0, len(blocks) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        mapping = fused_mapping(plan, arch, binding, phase, blocks[mid], nests)
        if phase_occupancy(plan.lowered, mapping, phase, buffer) <= capacity:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _block_masks(
    cascade: Cascade, plan: FusedPlan, density: Mapping[str, float] | None
) -> dict[str, tuple[float, tuple[str, ...]]]:
    """Validate ``density`` (block masks only, see :func:`search_fused`); mask -> (density, its variables)."""
    if not density:
        return {}
    lowered = plan.lowered
    if plan.key_rank not in cascade.partitions:
        raise ShapeError(
            f"{cascade.name}: density of {', '.join(density)}: block masks skip tiles, which needs the key rank "
            f"partitioned into tiles (partition {plan.key_rank} = {plan.key_rank}1 * {plan.key_rank}0)"
        )
    keys = {*plan.inner_vars, *((plan.key_var,) if plan.key_var else ())} - {plan.tile_var}
    out = {}
    for name, d in density.items():
        if name not in lowered.inputs:
            raise ShapeError(
                f"{cascade.name}: density given for {name!r}, which is not an input; its inputs are "
                f"{', '.join(lowered.inputs)}"
            )
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0.0 < d <= 1.0:
            raise ShapeError(f"{cascade.name}: density of {name} must lie in (0, 1], got {d!r}")
        ranks = cascade.tensors[name].ranks
        if plan.tile_var.upper() not in ranks or keys & {r.lower() for r in ranks}:
            raise ShapeError(
                f"{cascade.name}: density of {name}[{','.join(ranks)}]: the fused search skips tiles of a block mask, "
                f"an input indexed by the tile rank {plan.tile_var.upper()} and by no key inside a tile "
                f"({', '.join(sorted(v.upper() for v in keys)) or 'none'})"
            )
        out[name] = (float(d), tuple(r.lower() for r in ranks))
    return out


def _kept_tiles(
    plan: FusedPlan,
    masks: Mapping[str, tuple[float, tuple[str, ...]]],
    block: Mapping[str, int],
    tiles: float | None = None,
) -> int:
    """Expected tiles computed per query block out of ``tiles`` (every tile of the loop by default; the
    tiles a static mask leaves), rounded up (:func:`search_fused`). A tile covers one element of a mask
    along the loops outside it (batch, splits, the tile loop), the query block along a query variable, and
    the whole rank along any other."""
    outside = {*plan.batch_vars, *plan.outer_vars, plan.tile_var}
    live = 1.0
    for d, variables in masks.values():
        covered = 1
        for v in variables:
            if v in plan.columns:
                covered *= plan.columns[v] * block.get(v, 1)
            elif v not in outside:
                covered *= plan.lowered.sizes[v.upper()]
        live *= 1.0 - (1.0 - d) ** covered
    return max(1, math.ceil((plan.tile_count if tiles is None else tiles) * live - 1e-9))


@dataclass(frozen=True)
class _StaticMask:
    """In-loop Einsums that skip a tile together under a static mask, and where their tile work lies."""

    einsums: tuple[str, ...]
    region: Formula
    """Where the group has work: where one of its Einsums has (:func:`einsum.regions.work_regions`)."""


ENUMERATED = 1 << 18
"""A static mask's condition on variables other than the keys and the queries (heads) is evaluated for each
of their values while the (query block x split x value) combinations stay within this many
(:func:`search_fused`)."""


def _per_query(plan: FusedPlan) -> list[str]:
    """The in-loop Einsums that iterate a query variable: their tiles are computed per query block."""
    return [n for n in plan.order if n in plan.in_loop and set(plan.query_vars) & set(plan.lowered.einsum(n).vars)]


def _static_masks(cascade: Cascade, plan: FusedPlan) -> tuple[_StaticMask, ...]:
    """The groups of per-query in-loop Einsums whose tiles a static mask may skip (rules in
    :func:`search_fused`); a group with some Einsum that works everywhere in a tile skips nothing."""
    per_query = _per_query(plan)
    parent = {n: n for n in per_query}

    def root(n: str) -> str:
        while parent[n] != n:
            n = parent[n]
        return n

    for n in per_query:
        for t in plan.lowered.einsum(n).inputs:
            if t in parent:
                parent[root(t)] = root(n)
    regions = work_regions(cascade, plan.lowered.sizes)
    in_tile = {*plan.inner_vars, *((plan.key_var,) if plan.key_var else ())}
    groups = []
    for r in dict.fromkeys(root(n) for n in per_query):
        members = tuple(n for n in per_query if root(n) == r)
        work = [regions[n] for n in members if regions[n] is not True or in_tile & set(plan.lowered.einsum(n).vars)]
        if work and all(w is not True for w in work):
            groups.append(_StaticMask(members, any_of(*work)))
    return tuple(groups)


def _visible_tiles(plan: FusedPlan, mask: _StaticMask, block: Mapping[str, int]) -> float:
    """Tiles per query block (and per split) in which the group's work region may hold somewhere, averaged
    over the query blocks, the splits and the values of the region's other variables (:func:`search_fused`).

    The (query block x tile) boxes are enumerated as rows (blocks, splits, other values) and the tile loop
    is counted by :func:`einsum.regions.count_tiles` (by segments of the tile index).
    """
    sizes = plan.lowered.sizes
    used = {v for coeffs, _ in affine_forms(mask.region) for v in coeffs}
    tiles, width, tile = plan.tile_count, plan.tile_keys, plan.tile_var
    key = plan.key_var if plan.key_var in used else None
    axes: list[tuple[str, np.ndarray, np.ndarray]] = []  # enumerated: (variable, low, high) per value
    for v in plan.query_vars:
        if v in used:
            extent = plan.columns[v] * block.get(v, 1)
            start = np.arange(0, sizes[v.upper()], extent)
            axes.append((v, start, start + extent - 1))
    for v in plan.outer_vars:
        if v in used or key:
            axes.append((v, np.arange(sizes[v.upper()]), np.arange(sizes[v.upper()])))
    low: dict[str, np.ndarray | int] = {v: 0 for v in plan.inner_vars}
    high: dict[str, np.ndarray | int] = {v: sizes[v.upper()] - 1 for v in plan.inner_vars}
    known = {tile, *plan.inner_vars, *plan.query_vars, *plan.outer_vars, *((plan.key_var,) if plan.key_var else ())}
    others = sorted(used - known)
    boxes = math.prod(len(lo) for _, lo, _ in axes)
    enumerate_others = boxes * math.prod(sizes[v.upper()] for v in others) <= ENUMERATED
    for v in others:
        if enumerate_others:
            axes.append((v, np.arange(sizes[v.upper()]), np.arange(sizes[v.upper()])))
        else:
            low[v], high[v] = 0, sizes[v.upper()] - 1
    grids = np.meshgrid(*(np.arange(len(lo)) for _, lo, _ in axes), indexing="ij")
    rows = math.prod(len(lo) for _, lo, _ in axes)
    for (v, lo, hi), grid in zip(axes, grids, strict=True):
        low[v], high[v] = lo[grid.ravel()], hi[grid.ravel()]
    split = 0
    for v in plan.outer_vars if key else ():
        split = split * sizes[v.upper()] + low[v]
    step: dict[str, int] = {}
    if tile != plan.key_var:
        low[tile] = high[tile] = 0
        step[tile] = 1
    if key:
        low[key] = split * tiles * width
        high[key] = low[key] + width - 1
        step[key] = width
    counts = count_tiles(mask.region, low, high, step=step, tiles=tiles)
    return float(counts.visited.sum()) / rows


def _tile_counts(
    plan: FusedPlan,
    masks: Mapping[str, tuple[float, tuple[str, ...]]],
    statics: Sequence[_StaticMask],
    block: Mapping[str, int],
) -> dict[str, int]:
    """Tiles per query block that each per-query in-loop Einsum computes under the block masks and the
    static masks (:func:`search_fused`); Einsums not listed compute every tile."""
    counts = dict.fromkeys(_per_query(plan), _kept_tiles(plan, masks, block)) if masks else {}
    for mask in statics:
        counts.update(dict.fromkeys(mask.einsums, _kept_tiles(plan, masks, block, _visible_tiles(plan, mask, block))))
    return counts


def _skip_note(
    plan: FusedPlan,
    masks: Mapping[str, tuple[float, tuple[str, ...]]],
    statics: Sequence[_StaticMask],
    counts: Mapping[str, int],
) -> str:
    """The tiles computed per query block, in words."""
    if not statics:
        return f"block mask: {next(iter(counts.values()))} of {plan.tile_count} tiles computed per query block"
    kind = "block and static masks" if masks else "static mask"
    groups = "; ".join(f"{counts[m.einsums[0]]} of {plan.tile_count} for {', '.join(m.einsums)}" for m in statics)
    return f"{kind}: tiles computed per query block: {groups}"


def _skipping(cascade: Cascade, plan: FusedPlan, arch: ArchSpec, counts: Mapping[str, int]) -> FusedPlan:
    """The plan re-derived with each Einsum's tile loop cut to the tiles it computes (``counts``: Einsum ->
    tiles; the others compute every tile). Each Einsum is lowered at its own size of the tile rank, and so
    is the tensor it writes; the inputs keep the largest."""
    tiles = {n: counts.get(n, plan.tile_count) for n in plan.order}
    if all(k == plan.tile_count for k in tiles.values()):
        return plan
    tile_rank = plan.tile_var.upper()
    parts = cascade.partitions.get(plan.key_rank)

    def lowered_at(k: int) -> LoweredCascade:
        sizes = dict(plan.lowered.sizes)
        if parts:
            sizes[tile_rank] = k
            sizes[plan.key_rank] = math.prod(sizes[p] for p in parts)
        else:  # the tile rank is the key rank, in tiles of tile_keys keys
            sizes[plan.key_rank] = k * plan.tile_keys
        return lower(cascade, sizes)

    lowered = {k: lowered_at(k) for k in sorted(set(tiles.values()))}
    run = lowered[max(lowered)]
    if len(lowered) > 1:
        words = dict(run.tensor_words) | {n: lowered[k].tensor_words[n] for n, k in tiles.items()}
        einsums = tuple(lowered[tiles[e.name]].einsum(e.name) for e in run.einsums)
        run = replace(run, einsums=einsums, tensor_words=words)
    return _derive(cascade, run, arch, plan.key_rank, tile_rank, plan.tile_keys)


# --------------------------------------------------------------------------------------------------------
# Multi-pass cascades: the space of mappers.passes, derived from the cascade


def search_passes(
    lowered: LoweredCascade,
    arch: ArchSpec,
    row_blocks: Sequence[int] | None = None,
    pairing: str = "searched",
    policy: str = "model",
    best_only: bool = False,
) -> dict:
    """Multi-pass fusion designs derived from the cascade and the architecture (:mod:`mappers.passes`).

    The space is costed (query blocks searched unless ``row_blocks`` fixes them, which array runs each
    Einsum searched). Returns ``best`` (feasible first, then lowest latency, then energy),
    ``best_within_flat_rule`` (the same among designs whose buffered tiles fit FLAT's sizing rule) and
    ``flat_policy`` (FLAT's own choice, :func:`mappers.passes.flat_policy` under ``policy``), each None where
    no design qualifies. ``pairing`` (:data:`mappers.passes.PAIRINGS`): ``searched`` adds the reduce dataflow
    to FLAT's pairings, ``any`` searches each contraction's dataflow independently of the hand-offs. A
    design's notes say whether it spills and where the softmax ran. ``best_only`` (query blocks searched):
    ``best`` alone, the same design, found by a branch and bound with proven bounds that costs fewer designs
    (:func:`mappers.passes.iter_pass_designs`).
    """
    plan, designs = search_pass_designs(lowered, arch, row_blocks, pairing, best_only and row_blocks is None)

    def design(d) -> CascadeDesign:
        rule = "fits FLAT's sizing rule" if d.fits_rule else "spills past FLAT's sizing rule"
        fit = "fits the buffer" if d.fits else "spills: its buffer occupancy exceeds the buffer"
        where = d.choice.softmax_where(plan).removeprefix("; ") or "softmax on the 1-D array"
        return CascadeDesign(
            d.mapping, d.cost, dict(d.choice.binding), d.choice.describe(plan), len(designs), len(designs),
            (rule, fit, where),
        )  # fmt: skip

    if best_only and row_blocks is None:
        return {"best": design(designs[0])}
    fits = [d for d in designs if d.fits_rule]
    return {
        "best": design(designs[0]),
        "best_within_flat_rule": design(fits[0]) if fits else None,
        "flat_policy": design(chosen) if (chosen := flat_policy(designs, policy)) else None,
    }
