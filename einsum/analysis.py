"""Analyses of a cascade: operation counts, tensor sizes and the number of passes over a rank.

Counting convention (the one Timeloop and the FuseMax study use): every operator node of an Einsum's
expression is applied once per point of the Einsum's iteration space (all its variables, reduced ones
included, dense: masks do not remove points), and a reduction performs one accumulate per point into an
output that starts at the operator's identity. So ``QK[m,p] = sum[e] Q[e,p]*K[e,m]`` counts M*P*E ``mul``
and M*P*E ``add``. A bare copy counts nothing. :func:`effective_op_counts` counts the same way over only
the points that masks (``where`` conditions, and 0/1 mask inputs at a given density) leave to compute.
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from einsum.ast import Access, BinOp, Call, Compare, Neg, Number, index_vars, walk
from einsum.cascade import Affine, Cascade, Einsum, bind_index, var_offset
from einsum.errors import ShapeError

#: operator kind of each expression node
OP_KINDS = {"+": "add", "-": "sub", "*": "mul", "/": "div"}
#: operator kind of each reduction
REDUCE_KINDS = {"sum": "add", "max": "max", "min": "min"}


def iteration_points(e: Einsum, sizes: Mapping[str, int]) -> int:
    """Number of points in an Einsum's iteration space."""
    return math.prod(sizes[v.upper()] for v in e.iter_vars)


def einsum_ops(e: Einsum, sizes: Mapping[str, int]) -> dict[str, int]:
    """Operation counts by kind for one Einsum (exact integers)."""
    points = iteration_points(e, sizes)
    counts: dict[str, int] = {}
    for node in walk(e.stmt.expr):
        if isinstance(node, BinOp):
            kind = OP_KINDS[node.op]
        elif isinstance(node, Neg):
            kind = "neg"
        elif isinstance(node, Call):
            kind = "select" if node.func == "where" else node.func
        else:
            continue
        counts[kind] = counts.get(kind, 0) + points
    if e.reduce_op is not None:
        kind = REDUCE_KINDS[e.reduce_op]
        counts[kind] = counts.get(kind, 0) + points
    return counts


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

    Every operator node of an Einsum counts once per effective point, as :func:`einsum_ops` counts it once
    per dense point; without masks or densities the two agree exactly.
    """
    full = cascade.rank_sizes(sizes)
    points = effective_points(cascade, full, density)
    ones = dict.fromkeys(full, 1)
    return {
        e.name: {kind: per_point * points[e.name] for kind, per_point in einsum_ops(e, ones).items()}
        for e in cascade.einsums
    }


def effective_total_ops(
    cascade: Cascade, sizes: Mapping[str, int], density: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Effective operation counts by kind summed over the cascade."""
    total: dict[str, float] = {}
    for counts in effective_op_counts(cascade, sizes, density).values():
        for kind, n in counts.items():
            total[kind] = total.get(kind, 0) + n
    return dict(sorted(total.items()))


# -- where a static mask leaves work, over boxes of points (tile skipping in mappers.cascade_search) ----------


def work_regions(cascade: Cascade, sizes: Mapping[str, int]) -> dict[str, Formula]:
    """Where in its iteration space every Einsum does work, by the static rules of :func:`effective_points`
    (every input taken as data), in cascade order.

    A region is a :data:`Formula` over the Einsum's variables (``True``: everywhere): the points that
    :func:`effective_points` counts. Test it over boxes of points with :func:`may_hold`.

    >>> import workloads
    >>> c = workloads.get_cascade("attention-1pass-causal").cascade
    >>> regions = work_regions(c, {"B": 1, "H": 1, "M": 8, "P": 8, "E": 2, "F": 2, "M0": 4})
    >>> regions["RM"], bool(may_hold(regions["QK"], {"m1": 1, "m0": 0, "p": 0}, {"m1": 1, "m0": 3, "p": 3}))
    (True, False)
    """
    regions = _work_regions(cascade, cascade.rank_sizes(sizes), set())
    return {e.name: regions[e.name] for e in cascade.einsums}


def affine_forms(f: Formula) -> tuple[tuple[dict[str, int], int], ...]:
    """The affine forms ``sum(coeffs[v] * v) + const`` that the comparisons of ``f`` compare with 0, as
    (coeffs, const); a comparison and its negation share one."""
    return tuple((dict(leaf.coeffs), leaf.const) for leaf in dict.fromkeys(_leaves(f)))


def any_of(*formulas: Formula) -> Formula:
    """The formula that holds where one of ``formulas`` holds."""
    return _or(*formulas)


def may_hold(
    f: Formula, low: Mapping[str, np.ndarray | int], high: Mapping[str, np.ndarray | int]
) -> np.ndarray | bool:
    """Whether ``f`` can hold at some integer point of the box ``low[v] <= v <= high[v]``, for boxes given as
    arrays that broadcast together. False only where every point of the box falsifies ``f``.

    An affine form takes its extremes over a box at its corners, so each comparison is decided exactly: it
    can hold unless the form's whole range falsifies it. ``f`` has no negation (comparisons are negated in
    place), so an ``or`` can hold where one of its terms can, and an ``and`` is taken to hold where each of
    its terms can: sound (never False where ``f`` holds somewhere) but an over-approximation where the terms
    hold at different points of the box only. The two sides of a window bound one form, for which that is
    exact when the form takes every integer between its extremes (a key position minus a query position).
    """
    return _may_hold(f, low, high, {})


_MAY_HOLD = {
    "<": lambda lo, hi: lo < 0,
    "<=": lambda lo, hi: lo <= 0,
    ">": lambda lo, hi: hi > 0,
    ">=": lambda lo, hi: hi >= 0,
    "==": lambda lo, hi: (lo <= 0) & (hi >= 0),
    "!=": lambda lo, hi: (lo != 0) | (hi != 0),
}


def _may_hold(f: _Formula, low: Mapping, high: Mapping, ranges: dict) -> np.ndarray | bool:
    """:func:`may_hold`, with each affine form's range over the box computed once (``ranges``)."""
    if isinstance(f, bool):
        return f
    if isinstance(f, _Cmp):
        form = (f.coeffs, f.const)
        if form not in ranges:
            missing = sorted(v for v, _ in f.coeffs if v not in low or v not in high)
            if missing:
                raise ShapeError(f"may_hold: no bounds for {', '.join(missing)}, a variable of {_show(f)}")
            lo = f.const + sum(c * (low[v] if c > 0 else high[v]) for v, c in f.coeffs)
            hi = f.const + sum(c * (high[v] if c > 0 else low[v]) for v, c in f.coeffs)
            ranges[form] = (lo, hi)
        return _MAY_HOLD[f.op](*ranges[form])
    parts = [_may_hold(t, low, high, ranges) for t in f.terms]
    return functools.reduce(np.logical_and if isinstance(f, _And) else np.logical_or, parts)


def _show(leaf: _Cmp) -> str:
    terms = " + ".join(f"{c}*{v}" for v, c in leaf.coeffs)
    return f"{terms} + {leaf.const} {leaf.op} 0"


# -- formulas: Boolean combinations of affine comparisons `sum(coef * var) + const  op  0` ------------------


@dataclass(frozen=True)
class _Cmp:
    coeffs: tuple[tuple[str, int], ...]
    const: int
    op: str


@dataclass(frozen=True)
class _And:
    terms: tuple[_Formula, ...]


@dataclass(frozen=True)
class _Or:
    terms: tuple[_Formula, ...]


_Formula = bool | _Cmp | _And | _Or
Formula = _Formula
"""A Boolean combination (and, or; no negation) of comparisons ``sum(coef * var) + const  op  0`` over
integer variables, or a constant bool: where a static mask condition holds (:func:`work_regions`)."""
_NEGATED = {"<": ">=", ">=": "<", "<=": ">", ">": "<=", "==": "!=", "!=": "=="}
_MIRRORED = {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "==": "==", "!=": "!="}
_CMP_FUNCS = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


def _cmp(coeffs: Mapping[str, int], const: int, op: str) -> _Formula:
    """A comparison, written with a positive first coefficient so that equal conditions compare equal."""
    kept = tuple(sorted((v, c) for v, c in coeffs.items() if c != 0))
    if not kept:
        return bool(_CMP_FUNCS[op](const, 0))
    if kept[0][1] < 0:
        return _Cmp(tuple((v, -c) for v, c in kept), -const, _MIRRORED[op])
    return _Cmp(kept, const, op)


def _atom(leaf: _Cmp) -> tuple[_Cmp, bool]:
    """The comparison as (atom with op <, <= or ==, polarity): ``x >= 0`` is (``x < 0``, False)."""
    if leaf.op in ("<", "<=", "=="):
        return leaf, True
    return _Cmp(leaf.coeffs, leaf.const, _NEGATED[leaf.op]), False


def _and(*terms: _Formula) -> _Formula:
    flat: dict[_Formula, None] = {}
    for t in terms:
        if t is False:
            return False
        if t is True:
            continue
        for x in t.terms if isinstance(t, _And) else (t,):
            flat[x] = None
    if not flat:
        return True
    return next(iter(flat)) if len(flat) == 1 else _And(tuple(flat))


def _or(*terms: _Formula) -> _Formula:
    flat: dict[_Formula, None] = {}
    for t in terms:
        if t is True:
            return True
        if t is False:
            continue
        for x in t.terms if isinstance(t, _Or) else (t,):
            flat[x] = None
    if not flat:
        return False
    return next(iter(flat)) if len(flat) == 1 else _Or(tuple(flat))


def _not(f: _Formula) -> _Formula:
    if isinstance(f, bool):
        return not f
    if isinstance(f, _Cmp):
        return _Cmp(f.coeffs, f.const, _NEGATED[f.op])
    if isinstance(f, _And):
        return _or(*(_not(t) for t in f.terms))
    return _and(*(_not(t) for t in f.terms))


def _subst(f: _Formula, mapping: Mapping[str, Affine]) -> _Formula:
    """Replace variables by affine expressions (variables not in ``mapping`` stay)."""
    if isinstance(f, bool):
        return f
    if isinstance(f, _Cmp):
        coeffs: dict[str, int] = {}
        const = f.const
        for var, c in f.coeffs:
            if var in mapping:
                aff = mapping[var]
                const += c * aff.const
                for v2, c2 in aff.coeffs:
                    coeffs[v2] = coeffs.get(v2, 0) + c * c2
            else:
                coeffs[var] = coeffs.get(var, 0) + c
        return _cmp(coeffs, const, f.op)
    parts = [_subst(t, mapping) for t in f.terms]
    return _and(*parts) if isinstance(f, _And) else _or(*parts)


def _fvars(f: _Formula) -> set[str]:
    if isinstance(f, bool):
        return set()
    if isinstance(f, _Cmp):
        return {v for v, _ in f.coeffs}
    return set().union(*(_fvars(t) for t in f.terms))


def _leaves(f: _Formula):
    """The atoms of a formula (a comparison and its negation share one)."""
    if isinstance(f, _Cmp):
        yield _atom(f)[0]
    elif isinstance(f, _And | _Or):
        for t in f.terms:
            yield from _leaves(t)


def _feval(f: _Formula, env: Mapping[str, np.ndarray]) -> np.ndarray | bool:
    if isinstance(f, bool):
        return f
    if isinstance(f, _Cmp):
        value = f.const + sum(c * env[v] for v, c in f.coeffs)
        return _CMP_FUNCS[f.op](value, 0)
    parts = [_feval(t, env) for t in f.terms]
    return functools.reduce(np.logical_and if isinstance(f, _And) else np.logical_or, parts)


_COUNT_CHUNK = 1 << 18


def _count(f: _Formula, var_sizes: Mapping[str, int]) -> int:
    """Number of integer points of the box ``0 <= v < size(v)`` where ``f`` holds (exact).

    Only the formula's variables are visited. Two exact reductions come first: a pair of variables that
    every comparison uses as one mixed-radix number (``m1*M0 + m0``) becomes one variable, and a variable
    that occurs in a single comparison not involving the solved variable is summed out by counting that
    comparison's true and false values. Then the largest variable is solved segment by segment (every
    comparison is linear in it, so its truth is constant between the cut points) and the rest enumerated.
    """
    box = math.prod(var_sizes.values())
    if isinstance(f, bool):
        return box if f else 0
    own = tuple(sorted((v, var_sizes[v]) for v in _fvars(f)))
    return box // math.prod(n for _, n in own) * _count_own(f, own)


@functools.lru_cache(maxsize=256)
def _count_own(f: _Formula, own: tuple[tuple[str, int], ...]) -> int:
    """:func:`_count` over the formula's own variables (the Einsums of a cascade share their masks)."""
    f, sizes = _merge_radix(f, dict(own))
    order = sorted(sizes, key=lambda v: (sizes[v], v))
    x = order[-1]
    leaves = list(dict.fromkeys(_leaves(f)))
    summed: dict[_Cmp, str] = {}  # comparison -> the variable summed out through it
    for v in order[:-1]:
        holders = [leaf for leaf in leaves if v in _fvars(leaf)]
        if len(holders) == 1 and x not in _fvars(holders[0]) and holders[0] not in summed:
            summed[holders[0]] = v
    for leaf, v in list(summed.items()):  # the other variables of a summed comparison stay enumerated
        if any(w in summed.values() for w in _fvars(leaf) - {v}):
            del summed[leaf]
    rest = [v for v in order[:-1] if v not in summed.values()]
    rest_shape = [sizes[v] for v in rest]
    n_rest = math.prod(rest_shape)
    branches = []
    for truth in itertools.product((True, False), repeat=len(summed)):
        assigned = dict(zip(summed, truth, strict=True))
        g = _assign(f, assigned)
        if g is not False:
            branches.append((g, [(leaf if t else _not(leaf), summed[leaf]) for leaf, t in assigned.items()]))
    total = 0
    for start in range(0, n_rest, _COUNT_CHUNK):
        flat = np.arange(start, min(n_rest, start + _COUNT_CHUNK), dtype=np.int64)
        coords = np.unravel_index(flat, rest_shape) if rest else ()
        env = {v: np.asarray(coords[i], dtype=np.int64)[:, None] for i, v in enumerate(rest)}
        for g, weights in branches:
            counts = _segment_count(g, x, sizes[x], env, flat.size)
            for cond, v in weights:
                counts = counts * _segment_count(cond, v, sizes[v], env, flat.size)
            total += int(counts.sum())
    return total


def _segment_count(f: _Formula, x: str, size_x: int, env: Mapping[str, np.ndarray], rows: int) -> np.ndarray:
    """Per enumerated row, the number of ``0 <= x < size_x`` where ``f`` holds."""
    cuts = [np.zeros((rows, 1), dtype=np.int64), np.full((rows, 1), size_x, dtype=np.int64)]
    for leaf in dict.fromkeys(_leaves(f)):
        a = dict(leaf.coeffs).get(x, 0)
        if a == 0:
            continue
        r = leaf.const + sum(c * env[v] for v, c in leaf.coeffs if v != x)
        r = np.broadcast_to(np.asarray(r, dtype=np.int64), (rows, 1))
        # a*x + r changes sign around x = -r/a: every comparison's truth is constant between these cuts.
        cuts.append(-np.floor_divide(r, a))  # ceil(-r / a)
        cuts.append(np.floor_divide(-r, a) + 1)  # floor(-r / a) + 1
    bounds = np.sort(np.clip(np.concatenate(cuts, axis=1), 0, size_x), axis=1)
    lengths = np.diff(bounds, axis=1)
    holds = np.broadcast_to(_feval(f, {**env, x: bounds[:, :-1]}), lengths.shape)
    return (lengths * holds).sum(axis=1)


def _assign(f: _Formula, truth: Mapping[_Cmp, bool]) -> _Formula:
    """``f`` with the given comparisons replaced by truth values."""
    if isinstance(f, bool):
        return f
    if isinstance(f, _Cmp):
        atom, positive = _atom(f)
        return f if atom not in truth else truth[atom] == positive
    parts = [_assign(t, truth) for t in f.terms]
    return _and(*parts) if isinstance(f, _And) else _or(*parts)


def _merge_radix(f: _Formula, sizes: dict[str, int]) -> tuple[_Formula, dict[str, int]]:
    """Merge variables u, w that every comparison uses only as ``c*(u*size(w) + w)`` into one variable."""
    while True:
        leaves = list(dict.fromkeys(_leaves(f)))
        coef = [dict(leaf.coeffs) for leaf in leaves]
        pair = next(
            (
                (u, w)
                for u in sizes
                for w in sizes
                if u != w
                and any(c.get(w, 0) for c in coef)
                and all(c.get(u, 0) == sizes[w] * c.get(w, 0) for c in coef)
            ),
            None,
        )
        if pair is None:
            return f, sizes
        u, w = pair
        merged = f"{u}:{w}"
        mapping = {u: Affine(((merged, 0),), 0), w: Affine(((merged, 1),), 0)}
        f = _subst(f, mapping)
        sizes = {v: n for v, n in sizes.items() if v not in pair} | {merged: sizes[u] * sizes[w]}


# -- abstract values: per point, a known constant or DATA, as {value: formula where it holds} -----------------

_DATA = "data"
_NAN = float("nan")
_Piecewise = dict  # value (float constant or _DATA) -> _Formula


def _canon(value: float) -> float:
    return _NAN if math.isnan(value) else float(value)


def _pw_map(fn, *pws: _Piecewise) -> _Piecewise:
    out: _Piecewise = {}
    for combo in itertools.product(*(pw.items() for pw in pws)):
        region = _and(*(f for _, f in combo))
        if region is False:
            continue
        value = fn(*(v for v, _ in combo))
        out[value] = _or(out.get(value, False), region)
    return out


def _pw_subst(pw: _Piecewise, mapping: Mapping[str, Affine]) -> _Piecewise:
    out: _Piecewise = {}
    for value, f in pw.items():
        g = _subst(f, mapping)
        if g is not False:
            out[value] = _or(out.get(value, False), g)
    return out


def _abs_binary(op: str, a, b):
    if a is not _DATA and b is not _DATA:
        with np.errstate(all="ignore"):
            return _canon(_BINARY_FUNCS[op](a, b))
    const, data_left = (b, True) if a is _DATA else (a, False)
    if b is _DATA and a is _DATA:
        return _DATA
    inf = math.isinf(const)
    if op == "+" and inf:
        return const
    if op == "-" and inf:
        return -const if data_left else const
    if op == "*" and const == 0:
        return 0.0
    if op == "/" and ((not data_left and const == 0) or (data_left and inf)):
        return 0.0
    if op == "max" and const == math.inf:
        return const
    if op == "min" and const == -math.inf:
        return const
    return _DATA


def _abs_unary(func: str, a):
    if a is _DATA:
        return _DATA
    with np.errstate(all="ignore"):
        return _canon(_UNARY_FUNCS[func](np.float64(a)))


_BINARY_FUNCS = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide, "max": np.maximum, "min": np.minimum}
_UNARY_FUNCS = {
    "exp": np.exp,
    "log": np.log,
    "sqrt": np.sqrt,
    "sigmoid": lambda x: 0.5 * (1.0 + np.tanh(0.5 * x)),
    "softplus": lambda x: np.logaddexp(0.0, x),
    "relu": lambda x: np.maximum(x, 0.0),
}
_IDENTITY_FOLD = {"sum": lambda c, n: c * n, "max": lambda c, n: c, "min": lambda c, n: c}


def _condition(cmp: Compare, sizes: Mapping[str, int]) -> _Formula:
    left, right = bind_index(cmp.left, sizes), bind_index(cmp.right, sizes)
    coeffs = dict(left.coeffs)
    for v, c in right.coeffs:
        coeffs[v] = coeffs.get(v, 0) - c
    return _cmp(coeffs, left.const - right.const, cmp.op)


def _positional(i: int) -> str:
    return f"#{i}"


def _abstract(node, values: Mapping[str, _Piecewise], sizes: Mapping[str, int]) -> _Piecewise:
    """The abstract value of an expression over the Einsum's variables."""
    if isinstance(node, Number):
        return {_canon(node.value): True}
    if isinstance(node, Access):
        mapping = {_positional(i): bind_index(idx, sizes) for i, idx in enumerate(node.indices)}
        return _pw_subst(values[node.tensor], mapping)
    if isinstance(node, BinOp):
        left, right = _abstract(node.left, values, sizes), _abstract(node.right, values, sizes)
        return _pw_map(lambda a, b: _abs_binary(node.op, a, b), left, right)
    if isinstance(node, Neg):
        return _pw_map(lambda a: a if a is _DATA else _canon(-a), _abstract(node.operand, values, sizes))
    if node.func == "where":
        cond = _condition(node.args[0], sizes)
        out: _Piecewise = {}
        for branch, guard in ((node.args[1], cond), (node.args[2], _not(cond))):
            for value, f in _abstract(branch, values, sizes).items():
                region = _and(guard, f)
                if region is not False:
                    out[value] = _or(out.get(value, False), region)
        return out
    args = [_abstract(a, values, sizes) for a in node.args]
    if node.func in ("max", "min"):
        return _pw_map(lambda a, b: _abs_binary(node.func, a, b), *args)
    return _pw_map(lambda a: _abs_unary(node.func, a), *args)


def _access_paths(node, guard: _Formula, sizes: Mapping[str, int]):
    """Every tensor access of an expression with the condition under which its ``where`` branches take it."""
    if isinstance(node, Access):
        yield node, guard
    elif isinstance(node, BinOp):
        yield from _access_paths(node.left, guard, sizes)
        yield from _access_paths(node.right, guard, sizes)
    elif isinstance(node, Neg):
        yield from _access_paths(node.operand, guard, sizes)
    elif isinstance(node, Call) and node.func == "where":
        cond = _condition(node.args[0], sizes)
        yield from _access_paths(node.args[1], _and(guard, cond), sizes)
        yield from _access_paths(node.args[2], _and(guard, _not(cond)), sizes)
    elif isinstance(node, Call):
        for arg in node.args:
            yield from _access_paths(arg, guard, sizes)


def _points_in_world(cascade: Cascade, sizes: Mapping[str, int], zero_inputs: set[str]) -> dict[str, int]:
    """Effective points of every Einsum when the inputs in ``zero_inputs`` are all zero (the others data)."""
    counted = _work_regions(cascade, sizes, zero_inputs)
    return {e.name: _count(counted[e.name], {v: sizes[v.upper()] for v in e.iter_vars}) for e in cascade.einsums}


def _work_regions(cascade: Cascade, sizes: Mapping[str, int], zero_inputs: set[str]) -> dict[str, _Formula]:
    """Where every Einsum does work (its counted points) when the inputs in ``zero_inputs`` are all zero."""
    values: dict[str, _Piecewise] = {}
    for name, t in cascade.tensors.items():
        if t.role == "input":
            values[name] = {0.0: True} if name in zero_inputs else {_DATA: True}
        elif t.iterative_dim is not None:
            values[name] = {_DATA: True}
    data_region: dict[str, _Formula] = {}
    for e in cascade.einsums:
        pw = _abstract(e.stmt.expr, values, sizes)
        data_region[e.name] = pw.get(_DATA, False)
        if e.name in values:  # a recurrence: data throughout
            continue
        if e.reduce_op is not None:
            consts = [v for v in pw if v is not _DATA]
            if _DATA in pw or len(consts) != 1:
                values[e.name] = {_DATA: True}
            else:
                n = math.prod(sizes[v.upper()] for v in e.reduce_vars)
                values[e.name] = {_canon(_IDENTITY_FOLD[e.reduce_op](consts[0], n)): True}
        else:
            rename = {v: Affine(((_positional(i), 1),), 0) for i, v in enumerate(e.out_vars)}
            values[e.name] = _pw_subst(pw, rename)

    live: dict[str, _Formula] = {
        name: t.role == "output" or t.iterative_dim is not None for name, t in cascade.tensors.items()
    }
    counted: dict[str, _Formula] = {}
    for e in reversed(cascade.einsums):
        back = {_positional(i): Affine(((v, 1),), 0) for i, v in enumerate(e.out_vars)}
        used = _and(_subst(live[e.name], back), data_region[e.name])
        counted[e.name] = used
        for acc, guard in _access_paths(e.stmt.expr, True, sizes):
            tensor = cascade.tensors[acc.tensor]
            if tensor.role == "input":
                continue
            need = _and(used, guard)
            if need is False:
                continue
            plain = [var_offset(idx) for idx in acc.indices]
            names = [v.name if v is not None and off == 0 else None for v, off in plain]
            if None in names or len(set(names)) != len(names) or not _fvars(need) <= set(names):
                live[acc.tensor] = True
                continue
            to_pos = {v: Affine(((_positional(i), 1),), 0) for i, v in enumerate(names)}
            live[acc.tensor] = _or(live[acc.tensor], _subst(need, to_pos))
    return counted
