"""Analyses of a cascade: operation counts, tensor sizes and the number of passes over a rank.

Counting convention. An operator node of an Einsum's expression is evaluated once per point of the variables
its subtree depends on (through its accesses' indices and its ``where`` conditions), not once per point of
the Einsum's whole iteration space: a loop-invariant subexpression is hoisted out of the loops over the
variables it does not depend on, as a compiler (and a mapping) would, so the count does not depend on how
the text is written. In ``Y[m,p] = A[m,p] * exp(B[p])`` the ``exp`` counts P (as it would in an Einsum of
its own, ``EB[p] = exp(B[p])``), the ``mul`` M*P; a node of constants (``1/8``) counts once. A reduction
performs one accumulate per point of the Einsum's iteration space (all its variables, reduced ones
included, dense: masks do not remove points), into an output that starts at the operator's identity. So
``QK[m,p] = sum[e] Q[e,p]*K[e,m]`` counts M*P*E ``mul`` and M*P*E ``add``, the convention Timeloop and the
FuseMax study use (every node of their cascades depends on every variable). A bare copy counts nothing.
:func:`effective_op_counts` counts the same way over only the points that masks (``where`` conditions, and
0/1 mask inputs at a given density) leave to compute.

The lowering (:mod:`einsum.lower`) keeps ops *per point* of the loop nest the cost model maps: there each
node is evaluated at every point, unless a mapping hoists it.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass

from einsum.ast import Access, BinOp, Call, Compare, Neg, index_vars
from einsum.cascade import Cascade, Einsum, var_offset
from einsum.errors import ShapeError
from einsum.regions import (  # noqa: F401  (re-exported: the mask geometry used to live here)
    Formula,
    TileCounts,
    _count,
    affine_forms,
    all_of,
    any_of,
    count_points,
    count_projected,
    count_tiles,
    may_hold,
    must_hold,
    positions,
    work_regions,
)
from einsum.syntax import SELECT_FUNCS

#: operator kind of each expression node
OP_KINDS = {"+": "add", "-": "sub", "*": "mul", "/": "div"}
#: operator kind of each reduction
REDUCE_KINDS = {"sum": "add", "max": "max", "min": "min"}


def iteration_points(e: Einsum, sizes: Mapping[str, int]) -> int:
    """Number of points in an Einsum's iteration space."""
    return math.prod(sizes[v.upper()] for v in e.iter_vars)


def einsum_ops(e: Einsum, sizes: Mapping[str, int]) -> dict[str, int]:
    """Operation counts by kind for one Einsum (exact integers): every operator node once per point of the
    variables it depends on, the reduction once per point of the iteration space (see the module's
    convention). With every size 1 these are the operations per point of the iteration space."""
    counts: dict[str, int] = {}
    for kind, uses in operator_nodes(e):
        counts[kind] = counts.get(kind, 0) + sum(n * math.prod(sizes[v.upper()] for v in dep) for dep, n in uses)
    return counts


@functools.lru_cache(maxsize=4096)
def operator_nodes(e: Einsum) -> tuple[tuple[str, tuple[tuple[tuple[str, ...], int], ...]], ...]:
    """The operator nodes of an Einsum by kind (in the order their kinds first appear, the reduction last): per
    kind, (the variables a node's subtree depends on, in ``iter_vars`` order; how many nodes of that kind depend
    on exactly those). The reduction depends on every iteration variable.

    >>> from einsum.cascade import Cascade
    >>> c = Cascade.from_text("input A[M,P], B[P]\\nY[m,p] = A[m,p] * exp(B[p] / 8)")
    >>> operator_nodes(c.einsums[0])
    (('mul', ((('m', 'p'), 1),)), ('exp', ((('p',), 1),)), ('div', ((('p',), 1),)))
    """
    kinds: dict[str, dict[tuple[str, ...], int]] = {}

    def visit(node) -> frozenset[str]:
        if isinstance(node, Access):
            return frozenset(v.name for idx in node.indices for v in index_vars(idx))
        if isinstance(node, Compare):
            return frozenset(v.name for side in (node.left, node.right) for v in index_vars(side))
        if isinstance(node, BinOp):
            kind, children = OP_KINDS[node.op], (node.left, node.right)
        elif isinstance(node, Neg):
            kind, children = "neg", (node.operand,)
        elif isinstance(node, Call):
            kind, children = ("select" if node.func in ("where", *SELECT_FUNCS) else node.func), node.args
        else:
            return frozenset()
        uses = kinds.setdefault(kind, {})  # the node before its children: the order of walk()
        found = frozenset().union(*(visit(child) for child in children))
        dep = tuple(v for v in e.iter_vars if v in found)
        uses[dep] = uses.get(dep, 0) + 1
        return found

    visit(e.stmt.expr)
    if e.reduce_op is not None:
        uses = kinds.setdefault(REDUCE_KINDS[e.reduce_op], {})
        uses[e.iter_vars] = uses.get(e.iter_vars, 0) + 1
    return tuple((kind, tuple(uses.items())) for kind, uses in kinds.items())


def op_counts(cascade: Cascade, sizes: Mapping[str, int]) -> dict[str, dict[str, int]]:
    """Operation counts by kind for every Einsum, in cascade order."""
    full = cascade.rank_sizes(sizes)
    return {e.name: einsum_ops(e, full) for e in cascade.einsums}


def total_ops(cascade: Cascade, sizes: Mapping[str, int]) -> dict[str, int]:
    """Operation counts by kind summed over the cascade."""
    total: dict[str, int] = {}
    for counts in op_counts(cascade, sizes).values():
        for kind, n in counts.items():
            total[kind] = total.get(kind, 0) + n
    return dict(sorted(total.items()))


def tensor_sizes(cascade: Cascade, sizes: Mapping[str, int]) -> dict[str, int]:
    """Elements of every tensor (an iterative rank counts its initial step too)."""
    full = cascade.rank_sizes(sizes)
    return {n: math.prod(t.shape(full)) for n, t in cascade.tensors.items()}


@dataclass(frozen=True)
class PassAnalysis:
    """How many traversals of a rank's fiber a cascade needs, and why.

    ``einsum_pass[name]`` is the pass in which an Einsum runs (Einsums that do not traverse the fiber run
    between passes and have the pass after which they can run). ``carried`` lists the tensors that are
    indexed by the fiber, produced in one pass and read in a later one: a multi-pass implementation must
    keep them on chip (footprint grows with the rank) or spill and re-read them.
    """

    rank: str
    passes: int
    einsum_pass: dict[str, int]
    traverses: dict[str, bool]
    carried: tuple[str, ...]


def pass_analysis(cascade: Cascade, rank: str = "M") -> PassAnalysis:
    """The FuseMax pass analysis over ``rank`` (and the parts it is partitioned into).

    A pass is one traversal of the rank's fiber (for fixed values of all other ranks). An Einsum that walks
    the fiber can run in the pass in which the fiber elements it reads are produced; a value that needs the
    whole fiber (a full reduction, or the last step ``M1`` of a recurrence) is complete only at the end of
    its pass, so an Einsum that walks the fiber and reads it runs in the next pass.
    """
    if rank not in cascade.ranks:
        raise ShapeError(f"{cascade.name}: no rank {rank}; its ranks are {', '.join(cascade.ranks)}")
    fiber_vars = {r.lower() for r in (rank, *cascade.children(rank))}
    einsum_pass: dict[str, int] = {}
    traverses: dict[str, bool] = {}
    # For each tensor: (pass, streams) - streams: its fiber elements appear during that pass;
    # otherwise the whole tensor is complete at the end of that pass (pass 0 = before any traversal).
    avail: dict[str, tuple[int, bool]] = {}
    for name in cascade.inputs:
        streams = any(r in fiber_vars for r in (x.lower() for x in cascade.tensors[name].ranks))
        avail[name] = (1, True) if streams else (0, False)
    for e in cascade.einsums:
        walks = any(v in fiber_vars for v in e.iter_vars)
        need = 1 if walks else 0
        for acc in e.reads:
            if acc.tensor in avail:  # else: the previous step of a recurrence this Einsum belongs to
                need = max(need, _needed_pass(acc, avail, fiber_vars, walks, cascade))
        einsum_pass[e.name] = need
        traverses[e.name] = walks
        out_streams = walks and any(v in fiber_vars for v in e.out_vars)
        avail[e.name] = (need, out_streams)
    passes = max((p for n, p in einsum_pass.items() if traverses[n]), default=0)
    carried = tuple(
        t
        for t, (p, streams) in avail.items()
        if streams
        and cascade.tensors[t].role != "input"
        and any(traverses[e.name] and einsum_pass[e.name] > p and t in e.inputs for e in cascade.einsums)
    )
    return PassAnalysis(rank, passes, einsum_pass, traverses, carried)


def _needed_pass(
    acc: Access, avail: dict[str, tuple[int, bool]], fiber_vars: set[str], walks: bool, cascade: Cascade
) -> int:
    produced, streams = avail[acc.tensor]
    reads_elements = any(
        v.name in fiber_vars for idx in acc.indices for v in index_vars(idx)
    ) and not _reads_final_step(acc, cascade, fiber_vars)
    if streams and reads_elements:
        return produced
    # The whole fiber must be done: usable by a traversal only in the next pass.
    return produced + 1 if walks else produced


def _reads_final_step(acc: Access, cascade: Cascade, fiber_vars: set[str]) -> bool:
    """True when the access reads the last step (e.g. M1) of a recurrence over a rank of the fiber."""
    tensor = cascade.tensors[acc.tensor]
    d = tensor.iterative_dim
    return d is not None and tensor.ranks[d].lower() in fiber_vars and var_offset(acc.indices[d])[0] is None


def key_ranks(cascade: Cascade) -> tuple[str, str]:
    """(key rank, tile rank) of a cascade: the rank a fused kernel walks in tiles and the part whose index is the
    tile loop. The iterative rank of the recurrences (``M1`` of the running max) and the rank it partitions
    (``M``); without a recurrence, the rank reduced over computed values (the scores' ``M`` of
    ``AV = sum[m] S * V``; when several are, the one the most Einsums reduce, then the one the most iterate) and
    its outermost part.

    >>> from workloads import get_cascade
    >>> key_ranks(get_cascade("decode-splitk").cascade), key_ranks(get_cascade("attention-3pass").cascade)
    (('M', 'M1'), ('M', 'M'))
    """
    iterative = sorted(set(cascade.recurrences.values()))
    parents = {cascade.parent_of.get(v.upper()) for v in iterative}
    if len(iterative) > 1 and (len(parents) > 1 or None in parents):
        raise ShapeError(
            f"{cascade.name}: recurrences over {', '.join(v.upper() for v in iterative)}; one tile loop needs all "
            "recurrences to iterate one rank (or parts of one partitioned rank)"
        )
    if iterative:
        # Recurrences over several parts of one rank: the outermost is the tile loop; the others are scans
        # inside a tile (a chunk's running sum), the tile's work like any Einsum there.
        parts = cascade.partitions[parents.pop()] if len(iterative) > 1 else ()
        tile = min((v.upper() for v in iterative), key=parts.index) if parts else iterative[0].upper()
        return cascade.parent_of.get(tile, tile), tile
    computed = set(cascade.einsum_by_name)
    reduced: dict[str, int] = {}  # rank -> Einsums that reduce it over computed values
    for e in cascade.einsums:
        if any(t in computed for t in e.inputs):
            for r in {cascade.parent_of.get(v.upper(), v.upper()) for v in set(e.iter_vars) - set(e.out_vars)}:
                reduced[r] = reduced.get(r, 0) + 1
    if not reduced:
        raise ShapeError(
            f"{cascade.name}: no key rank: no recurrence (e.g. RM[m1+1] = ...) and no Einsum reducing over "
            "computed values (e.g. AV[f,p] = sum[m] S[m,p] * V[f,m])"
        )

    def iterated(r: str) -> int:
        return sum(any(v.upper() in (r, *cascade.children(r)) for v in e.iter_vars) for e in cascade.einsums)

    # The rank most Einsums reduce (as mappers.passes takes its pass variable): a derived backward pass reduces
    # the queries for dK and dV and the keys for dQ (FlashAttention-2 walks the queries), and a gradient of a
    # weight the batch, which every Einsum iterates; then the one most Einsums iterate.
    key = max(sorted(reduced), key=lambda r: (reduced[r], iterated(r), r))
    parts = cascade.partitions.get(key)
    return key, parts[0] if parts else key


# ---------------------------------------------------------------------------------------------------------
# Density-aware operation counts: only the iteration points that do work


def effective_points(
    cascade: Cascade, sizes: Mapping[str, int], density: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Iteration points of every Einsum that do work once masks are taken into account, in cascade order.

    The dense count (:func:`iteration_points`) assumes every point is computed. Here a point is counted only
    when its value is not a known constant and its result is used:

    - **Static masks.** ``where(cond, a, b)`` with an index comparison selects a branch per point; a branch
      that is a number (``-inf``, ``0``) makes the point's value a constant. Constants propagate through the
      operators: ``-inf - x = -inf``, ``exp(-inf) = 0``, ``0 * x = 0``, ``0 / x = 0``, ``max(-inf, x) = x``,
      so the masked points of the Einsums that consume masked scores (``exp``, the ``sum`` with V) are
      constants too. Values the analysis does not know are assumed finite (and non-zero where they divide).
    - **Skipped points.** A point whose value is a constant costs nothing: a map writes a known constant, and
      a reduction over constants is folded (in particular a point that contributes the reduction's identity,
      ``0`` to a sum or ``-inf`` to a max, is simply skipped).
    - **Dead values.** An element of an intermediate is computed only where some consumer uses it: at a
      consumer point that is counted and on the taken branch of every ``where`` around the access. So the
      scores ``QK`` of a causal cascade are computed only below the diagonal. This backward rule is applied
      when the consumer reads the tensor with plain variables (``QK[b,h,m1,m0,p]``) and the consumer's
      condition involves only those variables; otherwise the whole tensor counts as used (sound, not tight).
    - **Reductions** write a constant only when every point of the reduction is a constant of one value;
      otherwise their output is data (so tile-level savings after a reduction, e.g. skipping the running-max
      update of a fully masked tile, are not counted). Recurrences are data throughout.
    - **Data-dependent masks.** ``density`` maps input tensors that are 0/1 masks (e.g. a block mask applied
      as ``log(BM)``) to the fraction of their elements that are 1. Each such element is taken to be 0 with
      probability ``1 - density``, independently of the static conditions and of the other masks; counts are
      the expectation over those events (floats). With no density the counts are exact integers.

    Counting is exact for the static conditions: the points satisfying a Boolean combination of affine
    comparisons are counted on the conditions' variables only (see :func:`_count`: tile parts such as
    ``m1*M0+m0`` are merged back into one variable, the largest variable is solved segment by segment and
    the others enumerated in chunks), then multiplied by the sizes of the other variables; a causal mask at
    M = P = 2^20 takes well under a second.

    >>> import workloads
    >>> c = workloads.get_cascade("attention-3pass-causal").cascade
    >>> s = {"B": 1, "H": 1, "M": 8, "P": 8, "E": 2, "F": 2}
    >>> effective_points(c, s)["QK"], iteration_points(c.einsum_by_name["QK"], c.rank_sizes(s))
    (72, 128)
    """
    full = cascade.rank_sizes(sizes)
    density = dict(density or {})
    for name, d in density.items():
        if name not in cascade.inputs:
            raise ShapeError(
                f"{cascade.name}: density given for {name!r}, which is not an input; its inputs are "
                f"{', '.join(cascade.inputs)}"
            )
        if not 0.0 <= d <= 1.0:
            raise ShapeError(f"{cascade.name}: density of {name} must lie in [0, 1], got {d!r}")
    try:  # densities with their types: a weight of int 1 counts exact integers, 1.0 floats
        key = tuple((name, type(d), d) for name, d in sorted(density.items()))
        hash(key)
    except TypeError:
        return _effective_points(cascade, full, density)
    return dict(_effective_points_cached(cascade, tuple(sorted(full.items())), key))


@functools.lru_cache(maxsize=512)
def _effective_points_cached(cascade: Cascade, sizes: tuple, density: tuple) -> dict[str, float]:
    """:func:`effective_points` keyed on the cascade (by identity), its complete sizes (sorted) and the densities
    as (input, type, density), sorted; callers get a copy."""
    return _effective_points(cascade, dict(sizes), {name: d for name, _, d in density})


def _effective_points(cascade: Cascade, full: Mapping[str, int], density: Mapping[str, float]) -> dict[str, float]:
    """:func:`effective_points` at complete sizes, the densities checked."""
    names = sorted(density)
    result: dict[str, float] = {e.name: 0 for e in cascade.einsums}
    for world in itertools.product((False, True), repeat=len(names)):
        weight = math.prod(density[n] if nonzero else 1.0 - density[n] for n, nonzero in zip(names, world, strict=True))
        if weight == 0:
            continue
        zeros = {n for n, nonzero in zip(names, world, strict=True) if not nonzero}
        for name, points in _points_in_world(cascade, full, zeros).items():
            result[name] += weight * points
    return result


def effective_op_counts(
    cascade: Cascade, sizes: Mapping[str, int], density: Mapping[str, float] | None = None
) -> dict[str, dict[str, float]]:
    """Operation counts by kind for every Einsum over its effective points (see :func:`effective_points`).

    As :func:`einsum_ops` counts over the dense space: the reduction, and every operator node that depends on
    all of the Einsum's variables, once per effective point; a node that depends on fewer (hoisted) once per
    point of its variables at which some effective point needs it (:func:`einsum.regions.count_projected`:
    exact for the masks of the registered cascades, an upper bound for an ``and`` of conditions that share a
    dropped variable otherwise). Without masks or densities the two agree exactly.
    """
    full = cascade.rank_sizes(sizes)
    points = effective_points(cascade, full, density)
    hoisted = _hoisted_points(cascade, full, density or {})
    out: dict[str, dict[str, float]] = {}
    for e in cascade.einsums:
        counts: dict[str, float] = {}
        for kind, uses in operator_nodes(e):
            for dep, n in uses:
                at = points[e.name] if dep == e.iter_vars else hoisted[e.name, dep]
                counts[kind] = counts[kind] + n * at if kind in counts else n * at
        out[e.name] = counts
    return out


def _hoisted_points(
    cascade: Cascade, full: Mapping[str, int], density: Mapping[str, float]
) -> dict[tuple[str, tuple[str, ...]], float]:
    """(Einsum, the variables of a hoisted node) -> points of those variables that the Einsum's effective
    points need (the expectation over the mask inputs' worlds, as :func:`_effective_points`)."""
    wanted = [
        (e, dep)
        for e in cascade.einsums
        for dep in dict.fromkeys(dep for _, uses in operator_nodes(e) for dep, _ in uses)
        if dep != e.iter_vars
    ]
    if not wanted:
        return {}
    names = sorted(density)
    result: dict[tuple[str, tuple[str, ...]], float] = {(e.name, dep): 0 for e, dep in wanted}
    for world in itertools.product((False, True), repeat=len(names)):
        weight = math.prod(density[n] if nonzero else 1.0 - density[n] for n, nonzero in zip(names, world, strict=True))
        if weight == 0:
            continue
        zeros = {n for n, nonzero in zip(names, world, strict=True) if not nonzero}
        counted = work_regions(cascade, full, zeros)
        for e, dep in wanted:
            keep = {v: full[v.upper()] for v in dep}
            drop = {v: full[v.upper()] for v in e.iter_vars if v not in keep}
            result[e.name, dep] += weight * count_projected(counted[e.name], keep, drop)
    return result


def effective_total_ops(
    cascade: Cascade, sizes: Mapping[str, int], density: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Effective operation counts by kind summed over the cascade."""
    total: dict[str, float] = {}
    for counts in effective_op_counts(cascade, sizes, density).values():
        for kind, n in counts.items():
            total[kind] = total.get(kind, 0) + n
    return dict(sorted(total.items()))


# -- mask geometry lives in einsum.regions; re-exported here for the callers that import it from the analysis


def _points_in_world(cascade: Cascade, sizes: Mapping[str, int], zero_inputs: set[str]) -> dict[str, int]:
    """Effective points of every Einsum when the inputs in ``zero_inputs`` are all zero (the others data)."""
    counted = work_regions(cascade, sizes, zero_inputs)
    return {e.name: _count(counted[e.name], {v: sizes[v.upper()] for v in e.iter_vars}) for e in cascade.einsums}
