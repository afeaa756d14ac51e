"""Mask geometry: where a cascade's Einsums do work, as formulas over their variables, and what that means
for boxes and tiles of points.

A static mask is a ``where`` on an index comparison. Its effect on the work is a **region**
(:func:`work_regions`): a Boolean combination of affine comparisons over an Einsum's variables
(:data:`Formula`), the points the rules of :func:`einsum.analysis.effective_points` count. Over boxes of
points a region may hold somewhere (:func:`may_hold`) or hold everywhere (:func:`must_hold`); over a grid
of tiles (boxes that move by a fixed step), :func:`count_tiles` counts per row of boxes the tiles where it
may hold (a kernel visits them) and those where it holds everywhere (interior: no mask select needed), by
segments (each comparison's extremes over a tile are affine in the tile index, so the answers change only
where one crosses zero). :func:`count_points` counts the points of a region exactly, over a box.

This is the one implementation of tile visibility: the spatial mappers (:mod:`mappers.cascade_search`) and
the GPU kernels (:mod:`simulator.kernels.variants`) both call it.

>>> import workloads
>>> c = workloads.get_cascade("attention-1pass-causal").cascade
>>> qk = work_regions(c, {"B": 1, "H": 1, "M": 8, "P": 8, "E": 2, "F": 2, "M0": 2})["QK"]
>>> t = count_tiles(qk, {"p": np.array([0, 4]), "m1": 0, "m0": 0}, {"p": np.array([3, 7]), "m1": 0, "m0": 1},
...                 step={"m1": 1}, tiles=4, pairs=True)
>>> t.visited.tolist(), t.interior.tolist(), t.pairs.tolist()
([2, 4], [0, 2], [10, 26])
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from einsum.ast import Access, BinOp, Call, Compare, Neg, Number
from einsum.cascade import Affine, Cascade, bind_index, var_offset
from einsum.errors import ShapeError
from einsum.interpreter import BINARY_OPS, FUNCTIONS

__all__ = [
    "Formula",
    "TileCounts",
    "affine_forms",
    "all_of",
    "any_of",
    "assign",
    "comparisons",
    "count_points",
    "count_projected",
    "count_tiles",
    "evaluate",
    "may_hold",
    "must_hold",
    "positions",
    "work_regions",
]


def work_regions(
    cascade: Cascade, sizes: Mapping[str, int], zero_inputs: frozenset[str] | set[str] = frozenset()
) -> dict[str, Formula]:
    """Where in its iteration space every Einsum does work, by the static rules of
    :func:`einsum.analysis.effective_points` (every input taken as data, except those in ``zero_inputs``,
    taken as all zeros), in cascade order.

    A region is a :data:`Formula` over the Einsum's variables (``True``: everywhere): the points that
    :func:`~einsum.analysis.effective_points` counts. Test it over boxes of points with :func:`may_hold`
    and :func:`must_hold`, over tiles with :func:`count_tiles`, count it with :func:`count_points`.

    >>> import workloads
    >>> c = workloads.get_cascade("attention-1pass-causal").cascade
    >>> regions = work_regions(c, {"B": 1, "H": 1, "M": 8, "P": 8, "E": 2, "F": 2, "M0": 4})
    >>> regions["RM"], bool(may_hold(regions["QK"], {"m1": 1, "m0": 0, "p": 0}, {"m1": 1, "m0": 3, "p": 3}))
    (True, False)
    """
    full = cascade.rank_sizes(sizes)
    key = (cascade, frozenset(zero_inputs))
    memo = _REGIONS.pop(key, [])
    _REGIONS[key] = memo  # the most recent last
    if len(_REGIONS) > _REGIONS_KEYS:
        _REGIONS.pop(next(iter(_REGIONS)))
    for reads, regions in memo:
        if all(type(full.get(rank)) is kind and full.get(rank) == value for rank, kind, value in reads):
            return dict(regions)
    read = _ReadSizes(full)
    found = _work_regions(cascade, read, set(zero_inputs))
    regions = {e.name: found[e.name] for e in cascade.einsums}
    if read.reads() is not None:
        memo.insert(0, (read.reads(), regions))
        del memo[_REGIONS_PER_KEY:]
    return dict(regions)


_REGIONS: dict[tuple[Cascade, frozenset[str]], list[tuple[tuple, dict[str, Formula]]]] = {}
"""The regions :func:`work_regions` found, per (cascade by identity, zero inputs), with the sizes they read: the
regions depend on the few sizes that bind the indices and conditions (``M0``, ``M - P``, a window), so one
serves every sequence length that leaves those unchanged. Callers get a copy (the formulas are immutable)."""
_REGIONS_KEYS, _REGIONS_PER_KEY = 256, 32


class _ReadSizes(Mapping):
    """Sizes that note which ranks a computation reads, with their values (every rank once it iterates them)."""

    def __init__(self, sizes: Mapping[str, int]) -> None:
        self._sizes = sizes
        self._read: dict[str, object] = {}
        self._all = False

    def __getitem__(self, rank: str) -> int:
        value = self._sizes.get(rank)
        self._read[rank] = value
        if value is None:
            raise KeyError(rank)
        return value

    def __iter__(self):
        self._all = True
        return iter(self._sizes)

    def __len__(self) -> int:
        self._all = True
        return len(self._sizes)

    def reads(self) -> tuple[tuple[str, type, object], ...] | None:
        """(rank, type, value) of every rank read (value None: read as absent), or None once iterated."""
        return None if self._all else tuple((r, type(v), v) for r, v in self._read.items())


def affine_forms(f: Formula) -> tuple[tuple[dict[str, int], int], ...]:
    """The affine forms ``sum(coeffs[v] * v) + const`` that the comparisons of ``f`` compare with 0, as
    (coeffs, const); a comparison and its negation share one."""
    return tuple((dict(leaf.coeffs), leaf.const) for leaf in dict.fromkeys(_leaves(f)))


def any_of(*formulas: Formula) -> Formula:
    """The formula that holds where one of ``formulas`` holds."""
    return _or(*formulas)


def all_of(*formulas: Formula) -> Formula:
    """The formula that holds where every one of ``formulas`` holds."""
    return _and(*formulas)


def comparisons(f: Formula) -> tuple[Formula, ...]:
    """The distinct comparisons of ``f``, each in one polarity (``x >= 0`` as ``x < 0``)."""
    return tuple(dict.fromkeys(_leaves(f))) if not isinstance(f, bool) else ()


def assign(f: Formula, truths: Mapping[Formula, bool]) -> Formula:
    """``f`` with the comparisons of ``truths`` (as :func:`comparisons` gives them) replaced by truth values."""
    return _assign(f, truths)


def evaluate(f: Formula, values: Mapping[str, np.ndarray | int]) -> np.ndarray | bool:
    """Whether ``f`` holds at the points ``values`` (arrays that broadcast together)."""
    return _feval(f, values)


def positions(f: Formula, strides: Mapping[str, int], name: str) -> Formula | None:
    """``f`` rewritten over one position variable ``name = sum(strides[v] * v)`` of the part variables in
    ``strides`` (``m1*M0 + m0``: strides ``{"m1": M0, "m0": 1}``), or None when some comparison uses the parts
    otherwise (a block index ``m1`` alone). ``name`` may be a variable of ``f`` already (the unsplit key).

    >>> f = _cmp({"m1": 4, "m0": 1, "p": -1}, 0, "<=")
    >>> positions(f, {"m1": 4, "m0": 1}, "m"), positions(f, {"m1": 2, "m0": 1}, "m")
    (_Cmp(coeffs=(('m', 1), ('p', -1)), const=0, op='<='), None)
    """
    if isinstance(f, bool):
        return f
    if isinstance(f, _Cmp):
        coeffs = dict(f.coeffs)
        parts = {v: coeffs.pop(v, 0) for v in strides}
        unit = next((c // strides[v] for v, c in parts.items() if c), 0)
        if any(c != unit * strides[v] for v, c in parts.items()):
            return None
        coeffs[name] = coeffs.get(name, 0) + unit
        return _cmp(coeffs, f.const, f.op)
    terms = [positions(t, strides, name) for t in f.terms]
    if any(t is None for t in terms):
        return None
    return _and(*terms) if isinstance(f, _And) else _or(*terms)


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


def must_hold(
    f: Formula, low: Mapping[str, np.ndarray | int], high: Mapping[str, np.ndarray | int]
) -> np.ndarray | bool:
    """Whether ``f`` holds at every integer point of the box (arrays broadcast as in :func:`may_hold`): where
    its negation cannot hold. Sound the other way round: never True where some point of the box falsifies
    ``f`` (so a tile it calls interior needs no mask), possibly False where ``f`` holds everywhere."""
    return np.logical_not(_may_hold(_pruned(_not(f)), low, high, {}))


@functools.lru_cache(maxsize=1024)
def _pruned(f: _Formula, facts: frozenset[tuple[_Cmp, bool]] = frozenset()) -> _Formula:
    """``f`` simplified in context: a comparison known to hold (or fail) where a term is evaluated is replaced
    by True (or False): ``A and (not A or B)`` is ``A and B``, ``A or (not A and B)`` is ``A or B``. The
    formula is equivalent, and :func:`may_hold` over-approximates it less (the terms of an ``and`` that can
    only hold at different points no longer both count)."""
    if isinstance(f, bool):
        return f
    if isinstance(f, _Cmp):
        atom, positive = _atom(f)
        if (atom, positive) in facts:
            return True
        return False if (atom, not positive) in facts else f
    literals = [_atom(t) for t in f.terms if isinstance(t, _Cmp)]
    terms = []
    for t in f.terms:
        own = _atom(t) if isinstance(t, _Cmp) else None
        if isinstance(f, _And):  # inside an and, the other comparisons hold
            known = facts | {lit for lit in literals if lit != own}
        else:  # inside an or, the other comparisons fail
            known = facts | {(a, not pos) for a, pos in literals if (a, pos) != own}
        terms.append(_pruned(t, frozenset(known)) if not isinstance(t, _Cmp) else _pruned(t, facts))
    return _and(*terms) if isinstance(f, _And) else _or(*terms)


def count_points(
    f: Formula, low: Mapping[str, np.ndarray | int], high: Mapping[str, np.ndarray | int]
) -> np.ndarray | int:
    """Integer points of the box ``low[v] <= v <= high[v]`` where ``f`` holds, exactly (for boxes given as
    1-D arrays of one length, or scalars: one count per box). Every variable of ``f`` needs bounds; the box
    counts the points of the variables it bounds (bound every variable the count is over).

    >>> f = _cmp({"k": 1, "q": -1}, 0, "<=")  # k <= q
    >>> int(count_points(f, {"k": 0, "q": 0}, {"k": 7, "q": 7})), count_points(f, {"k": 0, "q": np.array([0, 4])},
    ...     {"k": 7, "q": np.array([3, 7])}).tolist()
    (36, [10, 26])
    """
    variables = sorted(set(low) | set(high))
    missing = sorted(_fvars(f) - set(low) - set(high)) if not isinstance(f, bool) else []
    if missing:
        raise ShapeError(f"count_points: no bounds for {', '.join(missing)}, variables of the formula")
    shape = np.broadcast_shapes(*(np.shape(low[v]) for v in variables), *(np.shape(high[v]) for v in variables))
    lo = {v: np.broadcast_to(np.asarray(low[v], dtype=np.int64), shape).ravel() for v in variables}
    hi = {v: np.broadcast_to(np.asarray(high[v], dtype=np.int64), shape).ravel() for v in variables}
    n = int(np.prod(shape, dtype=np.int64)) if shape else 1
    out = np.zeros(n, dtype=np.int64)
    for i in range(n):
        extent = {v: int(hi[v][i] - lo[v][i] + 1) for v in variables}
        if min(extent.values(), default=1) <= 0:
            continue
        shifted = _subst(f, {v: Affine(((v, 1),), int(lo[v][i])) for v in variables})
        out[i] = _count(shifted, extent)
    return out.reshape(shape) if shape else int(out[0])


def count_projected(f: Formula, keep: Mapping[str, int], drop: Mapping[str, int]) -> int:
    """Points of the box ``0 <= v < keep[v]`` at which ``f`` holds for some values ``0 <= u < drop[u]`` of the
    other variables: the points of ``keep``'s variables that a region touches (where a computation hoisted out
    of the loops over ``drop`` is needed). Every variable of ``f`` is in ``keep`` or ``drop``.

    Each comparison is projected exactly (a form's extremes over the dropped box are at its corners: ``m <= p``
    holds for some m where ``0 <= p``), an ``or`` of projections is exact, and an ``and`` is taken to hold where
    each of its terms can, as in :func:`may_hold`: exact when the terms of an ``and`` drop different variables,
    or bound one form from two sides with unit steps (a window ``p - W < m <= p``); an upper bound otherwise.

    >>> f = _and(_cmp({"m": 1, "p": -1}, 0, "<="), _cmp({"p": 1}, -2, ">="))  # m <= p and p >= 2
    >>> count_projected(f, {"p": 8}, {"m": 8}), count_projected(f, {"m": 8}, {"p": 8}), _count(f, {"m": 8, "p": 8})
    (6, 8, 33)
    """
    if not isinstance(f, bool):
        missing = sorted(_fvars(f) - set(keep) - set(drop))
        if missing:
            raise ShapeError(f"count_projected: no size for {', '.join(missing)}, variables of the formula")
        if _fvars(f) & set(drop):
            f = _exists(_pruned(f), dict(drop))
    return _count(f, dict(keep))


def _exists(f: _Formula, drop: Mapping[str, int]) -> _Formula:
    """A formula over the other variables that holds where ``f`` holds for some ``0 <= u < drop[u]`` (exact for
    a comparison and an ``or``; an ``and`` of projections over-approximates, see :func:`count_projected`)."""
    if isinstance(f, bool):
        return f
    if isinstance(f, _Cmp):
        kept = {v: c for v, c in f.coeffs if v not in drop}
        spans = [c * (drop[v] - 1) for v, c in f.coeffs if v in drop]
        if not spans:
            return f
        lo, hi = f.const + sum(min(0, x) for x in spans), f.const + sum(max(0, x) for x in spans)
        if f.op in ("<", "<="):
            return _cmp(kept, lo, f.op)
        if f.op in (">", ">="):
            return _cmp(kept, hi, f.op)
        if f.op == "==":
            return _and(_cmp(kept, lo, "<="), _cmp(kept, hi, ">="))
        return True if lo != hi else _cmp(kept, lo, "!=")
    parts = [_exists(t, drop) for t in f.terms]
    return _and(*parts) if isinstance(f, _And) else _or(*parts)


@dataclass(frozen=True)
class TileCounts:
    """Per row of boxes (:func:`count_tiles`): the tiles where a region may hold and where it must hold."""

    visited: np.ndarray
    """int64[rows]: tiles in which the region may hold at some point (a kernel must visit them)."""
    interior: np.ndarray
    """int64[rows]: tiles in which it holds at every point (no mask select needed); ``interior <= visited``."""
    pairs: np.ndarray | None = None
    """int64[rows]: points of the region in the row's tiles together, exactly (when asked for)."""


def count_tiles(
    region: Formula,
    low: Mapping[str, np.ndarray | int],
    high: Mapping[str, np.ndarray | int],
    *,
    step: Mapping[str, int],
    tiles: int,
    last: Mapping[str, int] | None = None,
    pairs: bool = False,
    interior: Formula | None = None,
) -> TileCounts:
    """Count, for each row of boxes, the tiles where ``region`` may hold and those where it must hold.

    Tile ``t`` (``0 <= t < tiles``) of a row is the box ``low[v] + t * step[v] <= v <= high[v] + t * step[v]``
    for the tiled variables (those in ``step``; ``high`` clipped to ``last[v]`` where given: a short last
    tile), and ``low[v] <= v <= high[v]`` for the others. Bounds are scalars or 1-D arrays of one length (one
    entry per row). Each affine form's least and greatest values over tile ``t`` are affine in ``t`` (up to
    the clipped tail, evaluated tile by tile), so whether a comparison may hold, or must, changes only where
    one of them crosses zero: each comparison holds on intervals of ``t``, and the tiles are counted as
    :func:`may_hold` and :func:`must_hold` test them (exact for a comparison; see those for ``and``/``or``),
    as the length of a union of intervals or segment by segment between those crossings.

    ``interior``: count the tiles where this formula (instead of ``region``) must hold. ``pairs``: also count
    the region's points in each row's tiles taken together (:func:`count_points`; the tiles must then be
    contiguous, ``step[v] = high[v] - low[v] + 1``).
    """
    inside = region if interior is None else interior
    plan = _counting(region, inside)
    variables = sorted(set(low) | set(high))
    if set(low) != set(high):
        raise ShapeError(f"count_tiles: low and high bound different variables: {sorted(set(low) ^ set(high))}")
    missing = sorted(plan.variables - set(variables))
    if missing or not set(step) <= set(variables):
        raise ShapeError(f"count_tiles: no bounds for {', '.join(missing or sorted(set(step) - set(variables)))}")
    rows = max((np.size(b[v]) for b in (low, high) for v in variables if np.ndim(b[v])), default=1)
    if isinstance(region, bool) and isinstance(inside, bool) and not pairs:  # no mask: every tile or none
        return TileCounts(np.full(rows, tiles * region, dtype=np.int64), np.full(rows, tiles * inside, dtype=np.int64))
    lo = {v: _column(low[v], rows) for v in variables}
    hi = {v: _column(high[v], rows) for v in variables}
    last = dict(last or {})
    # the first tile whose box some clipped variable's bound would overshoot: from there on, tile by tile
    clip = tiles
    for v, top in last.items():
        if step.get(v, 0) > 0:
            first = np.floor_divide(top - hi[v], step[v]) + 1
            clip = min(clip, max(0, int(np.min(first))))

    def bounds(t):
        l, h = dict(lo), dict(hi)
        for v, s in step.items():
            l[v] = lo[v] + t * s
            h[v] = hi[v] + t * s
            if v in last:
                h[v] = np.minimum(h[v], last[v])
        return l, h

    outside = plan.outside

    def test(l, h, shape) -> tuple[np.ndarray, np.ndarray]:
        ranges: dict = {}  # the forms' ranges over the boxes, shared by the two tests
        may = np.broadcast_to(_may_hold(region, l, h, ranges), shape)
        must = np.broadcast_to(np.logical_not(_may_hold(outside, l, h, ranges)), shape)
        return may, must

    visited = np.zeros(rows, dtype=np.int64)
    within = np.zeros(rows, dtype=np.int64)
    if clip > 0 and all(step[v] > 0 for v in last if v in step):
        counts = _affine_counts(plan, lo, hi, step, rows, clip)
        visited += counts[0]
        within += counts[1]
    elif clip > 0:  # a clipped variable that does not step forward: the boxes of each segment clipped as they are
        cuts = [np.zeros((rows, 1), dtype=np.int64), np.full((rows, 1), clip, dtype=np.int64)]
        lo0, hi0 = bounds(0)
        forms = dict.fromkeys((tuple(sorted(c.items())), k) for c, k in (*affine_forms(region), *affine_forms(inside)))
        for coeff_items, const in forms:
            coeffs = dict(coeff_items)
            slope = sum(c * step.get(v, 0) for v, c in coeffs.items())
            if slope == 0:
                continue
            least = const + sum(c * (lo0[v] if c > 0 else hi0[v]) for v, c in coeffs.items())
            greatest = const + sum(c * (hi0[v] if c > 0 else lo0[v]) for v, c in coeffs.items())
            for value in (least, greatest):
                r = np.broadcast_to(np.asarray(value, dtype=np.int64), (rows, 1))
                cuts.append(-np.floor_divide(r, slope))  # ceil(-r / slope): where slope*t + r turns >= 0 (or <= 0)
                cuts.append(np.floor_divide(-r, slope) + 1)  # and where it turns > 0 (or < 0)
        edges = np.sort(np.clip(np.concatenate(cuts, axis=1), 0, clip), axis=1)
        lengths = np.diff(edges, axis=1)
        may, must = test(*bounds(edges[:, :-1]), lengths.shape)
        visited += (lengths * may).sum(axis=1)
        within += (lengths * must).sum(axis=1)
    if clip < tiles:
        t = np.arange(clip, tiles, dtype=np.int64)[None, :]
        may, must = test(*bounds(t), (rows, t.size))
        visited += may.sum(axis=1)
        within += must.sum(axis=1)
    counted = None
    if pairs:
        for v, s in step.items():
            if np.any(hi[v] - lo[v] + 1 != s):
                raise ShapeError(f"count_tiles: pairs need contiguous tiles (step of {v} = its tile's extent)")
        top = {v: hi[v] + (tiles - 1) * s for v, s in step.items()}
        top = {v: np.minimum(b, last[v]) if v in last else b for v, b in top.items()}
        counted = count_points(region, {v: lo[v][:, 0] for v in variables},
                               {v: (top.get(v, hi[v]))[:, 0] for v in variables})  # fmt: skip
    return TileCounts(visited, within, counted)


# How a comparison of a form's least (``lo``) or greatest (``hi``) value over tile t with 0 reads as tests
# ``(t >= turn) == want`` of the tiles where the value turns: ``A`` (rising: turns >= 0; falling: <= 0) and ``B``
# (rising: > 0; falling: < 0). (op, rising) -> terms, or-ed, of tests (side, turn, want), and-ed; the tests of
# :data:`_MAY_HOLD` (``<``: lo < 0, ``==``: lo <= 0 and hi >= 0, ``!=``: lo != 0 or hi != 0, ...).
_NOT_ZERO = ((("lo", "A", False),), (("lo", "B", True),), (("hi", "A", False),), (("hi", "B", True),))
_TURN_TESTS = {
    ("<", True): ((("lo", "A", False),),),
    ("<=", True): ((("lo", "B", False),),),
    (">", True): ((("hi", "B", True),),),
    (">=", True): ((("hi", "A", True),),),
    ("==", True): ((("lo", "B", False), ("hi", "A", True)),),
    ("!=", True): _NOT_ZERO,
    ("<", False): ((("lo", "B", True),),),
    ("<=", False): ((("lo", "A", True),),),
    (">", False): ((("hi", "A", False),),),
    (">=", False): ((("hi", "B", False),),),
    ("==", False): ((("lo", "A", True), ("hi", "B", False)),),
    ("!=", False): _NOT_ZERO,
}


_DNF_TERMS = 16
"""The most terms (conjunctions of tests on the tile index) a formula is expanded into before
:func:`_affine_counts` counts it by segments instead."""


@dataclass(frozen=True)
class _Counting:
    """What :func:`count_tiles` reads off its formulas (:func:`_counting`)."""

    region: _Formula
    outside: _Formula  # where the interior formula fails
    variables: frozenset[str]  # the variables of the region and the interior formula
    leaves: tuple[_Cmp, ...]  # the comparisons of the region and of outside, as written, once each
    region_terms: tuple[frozenset[_Cmp], ...] | None  # the region as an or of ands of its comparisons (None:
    outside_terms: tuple[frozenset[_Cmp], ...] | None  # more than _DNF_TERMS terms), and outside


@functools.lru_cache(maxsize=1024)
def _counting(region: _Formula, inside: _Formula) -> _Counting:
    """:class:`_Counting` of a region and the formula whose interior tiles are counted, keyed on both."""
    outside = _pruned(_not(inside))
    return _Counting(
        region,
        outside,
        frozenset(_fvars_of(region) | _fvars_of(inside)),
        tuple(dict.fromkeys((*_comparisons_in(region), *_comparisons_in(outside)))),
        _or_of_ands(region),
        _or_of_ands(outside),
    )


def _or_of_ands(f: _Formula) -> tuple[frozenset[_Cmp], ...] | None:
    """``f`` as an or of ands of its comparisons, each comparison a truth value of its own (as :func:`may_hold`
    takes them): terms repeated or containing another term dropped (absorption); None past :data:`_DNF_TERMS`."""
    if isinstance(f, bool):
        return (frozenset(),) if f else ()
    if isinstance(f, _Cmp):
        return (frozenset({f}),)
    parts = [_or_of_ands(t) for t in f.terms]
    if any(part is None for part in parts):
        return None
    if isinstance(f, _Or):
        terms = [term for part in parts for term in part]
    else:
        terms = [frozenset()]
        for part in parts:
            if len(terms) * len(part) > _DNF_TERMS * _DNF_TERMS:
                return None
            terms = _absorbed([a | b for a in terms for b in part])
    terms = _absorbed(terms)
    return tuple(terms) if len(terms) <= _DNF_TERMS else None


def _absorbed(terms: list[frozenset]) -> list[frozenset]:
    """The terms of an or without repeats and without those containing another (``A or (A and B)`` is ``A``)."""
    unique = list(dict.fromkeys(terms))
    return [t for t in unique if not any(u < t for u in unique)]


def _affine_counts(
    plan: _Counting, lo: Mapping, hi: Mapping, step: Mapping[str, int], rows: int, clip: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the tiles ``0 <= t < clip`` where the region may hold and where ``plan.outside`` cannot
    (``lo``/``hi``: the bounds of tile 0, (rows, 1) columns; every bound a clip would cut steps forward and is
    not reached before ``clip``). Each form's least and greatest values over tile t are their values at t = 0
    plus slope * t, so each comparison is a test of t against the tiles where its value turns
    (:data:`_TURN_TESTS`), and a formula is a union of intervals of t: its tiles are counted as the union's
    length (or, for a formula of more than :data:`_DNF_TERMS` intervals, segment by segment between the turns)."""
    forms: dict[tuple, tuple] = {}  # (coeffs, const) -> (least at t = 0, greatest at t = 0, slope)
    turns: dict[tuple, np.ndarray] = {}  # (form, side, turn) -> the tile per row, (rows, 1)
    leaf_terms: dict[_Cmp, list[_Term]] = {}  # each comparison's intervals (the same arrays for one comparison)
    for leaf in plan.leaves:
        form = (leaf.coeffs, leaf.const)
        if form not in forms:
            slope = sum(c * step.get(v, 0) for v, c in leaf.coeffs)
            least = leaf.const + sum(c * (lo[v] if c > 0 else hi[v]) for v, c in leaf.coeffs)
            greatest = leaf.const + sum(c * (hi[v] if c > 0 else lo[v]) for v, c in leaf.coeffs)
            forms[form] = (least, greatest, slope)
        least, greatest, slope = forms[form]
        if slope == 0:  # the same over every tile of a row
            truth = _MAY_HOLD[leaf.op](least, greatest)
            if np.ndim(truth) == 0:
                leaf_terms[leaf] = [((), (), ())] if truth else []
            else:
                leaf_terms[leaf] = [((), (), (truth,))]
            continue
        for term in _TURN_TESTS[leaf.op, slope > 0]:
            for side, turn, _ in term:
                if (form, side, turn) not in turns:
                    r = np.broadcast_to(np.asarray(least if side == "lo" else greatest, dtype=np.int64), (rows, 1))
                    # ceil(-r / slope): where slope*t + r turns >= 0 (or <= 0); floor(-r / slope) + 1: > 0 (or < 0)
                    turns[form, side, turn] = (
                        -np.floor_divide(r, slope) if turn == "A" else np.floor_divide(-r, slope) + 1
                    )
        leaf_terms[leaf] = [
            (tuple(turns[form, side, turn] for side, turn, want in term if want),
             tuple(turns[form, side, turn] for side, turn, want in term if not want), ())
            for term in _TURN_TESTS[leaf.op, slope > 0]
        ]  # fmt: skip

    def count(f: _Formula, ands: tuple[frozenset[_Cmp], ...] | None) -> np.ndarray:
        terms = None if ands is None else _intervals(ands, leaf_terms)
        if terms is None:
            return _tiles_by_segments(f, forms, turns, rows, clip)
        return _union_length(terms, rows, clip)

    return count(plan.region, plan.region_terms), clip - count(plan.outside, plan.outside_terms)


# a term: (tiles at which it starts to hold, tiles at which it stops, per-row truths), and-ed: an interval of t
_Term = tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...], tuple[np.ndarray, ...]]


def _intervals(ands: tuple[frozenset[_Cmp], ...], leaf_terms: Mapping[_Cmp, list[_Term]]) -> list[_Term] | None:
    """An or of ands of comparisons as a union of intervals of the tile index, each comparison's own intervals
    given (``leaf_terms``); repeated intervals once; None past :data:`_DNF_TERMS` intervals."""
    out: dict[tuple, _Term] = {}
    for conj in ands:
        terms: list[_Term] = [((), (), ())]
        for leaf in conj:
            own = leaf_terms[leaf]
            if len(terms) * len(own) > _DNF_TERMS:
                return None
            terms = [_joined(a, b) for a in terms for b in own]
        for t in terms:
            out.setdefault(_term_key(t), t)
        if len(out) > _DNF_TERMS:
            return None
    return list(out.values())


def _joined(a: _Term, b: _Term) -> _Term:
    """Both terms (and): each part's arrays once, by identity."""
    if not any(a):
        return b
    return tuple(tuple({id(x): x for x in (*a[i], *b[i])}.values()) for i in range(3))  # type: ignore[return-value]


def _term_key(t: _Term) -> tuple[frozenset[int], ...]:
    return tuple(frozenset(id(x) for x in part) for part in t)


def _union_length(terms: list[_Term], rows: int, clip: int) -> np.ndarray:
    """Per row, the tiles ``0 <= t < clip`` in the union of the terms' intervals."""
    starts, stops = [], []
    for begin, end, truths in terms:
        a = np.zeros(rows, dtype=np.int64)
        for x in begin:
            a = np.maximum(a, x[:, 0])
        b = np.full(rows, clip, dtype=np.int64)
        for x in end:
            b = np.minimum(b, x[:, 0])
        if truths:  # empty on the rows where a truth fails
            b = np.where(np.broadcast_to(functools.reduce(np.logical_and, truths), (rows, 1))[:, 0], b, a)
        starts.append(a)
        stops.append(b)
    if len(terms) <= 2:  # |A| + |B| - |A and B|
        length = sum((np.maximum(b - a, 0) for a, b in zip(starts, stops, strict=True)), np.zeros(rows, dtype=np.int64))
        if len(terms) == 2:
            length -= np.maximum(np.minimum(*stops) - np.maximum(*starts), 0)
        return length
    # the intervals by increasing start (as start * (clip + 1) + end, both clipped to [0, clip], sorted by a
    # network of compare-exchanges), then each adds what lies past the furthest end before it
    base = clip + 1
    keys = [np.minimum(a, clip) * base + np.clip(b, 0, clip) for a, b in zip(starts, stops, strict=True)]
    for i in range(1, len(keys)):
        for j in range(i, 0, -1):
            keys[j - 1], keys[j] = np.minimum(keys[j - 1], keys[j]), np.maximum(keys[j - 1], keys[j])
    length = np.zeros(rows, dtype=np.int64)
    reach = np.zeros(rows, dtype=np.int64)
    for key in keys:
        a, b = np.divmod(key, base)
        length += np.maximum(b - np.maximum(a, reach), 0)
        reach = np.maximum(reach, b)
    return length


def _tiles_by_segments(f: _Formula, forms: Mapping, turns: Mapping, rows: int, clip: int) -> np.ndarray:
    """Per row, the tiles ``0 <= t < clip`` where ``f`` holds: the range cut at the turns of its comparisons,
    each segment tested at its first tile."""
    leaves = tuple(dict.fromkeys(_comparisons_in(f)))
    own = [x for (form, _, _), x in turns.items() if any(form == (leaf.coeffs, leaf.const) for leaf in leaves)]
    cuts = [np.zeros((rows, 1), dtype=np.int64), np.full((rows, 1), clip, dtype=np.int64), *own]
    edges = np.sort(np.clip(np.concatenate(cuts, axis=1), 0, clip), axis=1)
    lengths = np.diff(edges, axis=1)
    start = edges[:, :-1]  # each segment's first tile (an empty segment may start at clip: it counts 0)
    truth: dict[_Cmp, np.ndarray | bool] = {}
    for leaf in leaves:
        form = (leaf.coeffs, leaf.const)
        least, greatest, slope = forms[form]
        if slope == 0:
            truth[leaf] = _MAY_HOLD[leaf.op](least, greatest)
            continue
        terms = []
        for term in _TURN_TESTS[leaf.op, slope > 0]:
            tests = [start >= turns[form, side, turn] if want else start < turns[form, side, turn]
                     for side, turn, want in term]  # fmt: skip
            terms.append(functools.reduce(np.logical_and, tests))
        truth[leaf] = functools.reduce(np.logical_or, terms)
    return (lengths * np.broadcast_to(_fevaluate(f, truth), lengths.shape)).sum(axis=1)


def _comparisons_in(f: _Formula):
    """The comparisons of a formula as written (not as atoms: ``x >= 0`` stays)."""
    if isinstance(f, _Cmp):
        yield f
    elif isinstance(f, _And | _Or):
        for t in f.terms:
            yield from _comparisons_in(t)


def _fevaluate(f: _Formula, truth: Mapping) -> np.ndarray | bool:
    """``f`` with its comparisons' truth values given (and: logical and, or: logical or)."""
    if isinstance(f, bool):
        return f
    if isinstance(f, _Cmp):
        return truth[f]
    parts = [_fevaluate(t, truth) for t in f.terms]
    return functools.reduce(np.logical_and if isinstance(f, _And) else np.logical_or, parts)


def _fvars_of(f: Formula) -> set[str]:
    return set() if isinstance(f, bool) else _fvars(f)


def _column(bound: np.ndarray | int, rows: int) -> np.ndarray:
    """A bound as an int64 (rows, 1) column."""
    return np.broadcast_to(np.asarray(bound, dtype=np.int64).reshape(-1, 1), (rows, 1))


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


def _connect(kind: type, absorbing: bool, terms: tuple[_Formula, ...]) -> _Formula:
    """``terms`` joined by ``kind`` (:class:`_And`, absorbing False; or :class:`_Or`, absorbing True): nested
    joins of the same kind flattened, duplicates and the identity dropped, a single term returned as it is."""
    flat: dict[_Formula, None] = {}
    for t in terms:
        if t is absorbing:
            return absorbing
        if t is (not absorbing):
            continue
        for x in t.terms if isinstance(t, kind) else (t,):
            flat[x] = None
    if not flat:
        return not absorbing
    return next(iter(flat)) if len(flat) == 1 else kind(tuple(flat))


def _and(*terms: _Formula) -> _Formula:
    return _connect(_And, False, terms)


def _or(*terms: _Formula) -> _Formula:
    return _connect(_Or, True, terms)


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
    # a second variable solved with the first (2-D segments) when every cut in x is affine in it: x has unit
    # coefficients, and no summed comparison involves it
    in_summed = set().union(*(_fvars(leaf) for leaf in summed)) if summed else set()
    unit = all(abs(dict(leaf.coeffs).get(x, 0)) <= 1 for leaf in leaves)
    pairable = [v for v in rest if v not in in_summed] if unit else []
    y = max(pairable, key=lambda v: (sizes[v], v)) if pairable else None
    if y is not None:
        rest.remove(y)
    rest_shape = [sizes[v] for v in rest]
    n_rest = math.prod(rest_shape)
    branches = []
    for truth in itertools.product((True, False), repeat=len(summed)):
        assigned = dict(zip(summed, truth, strict=True))
        g = _assign(f, assigned)
        if g is not False:
            branches.append((g, [(leaf if t else _not(leaf), summed[leaf]) for leaf, t in assigned.items()]))
    total = 0
    chunk = _COUNT_CHUNK if y is None else max(1, _COUNT_CHUNK // 256)
    for start in range(0, n_rest, chunk):
        flat = np.arange(start, min(n_rest, start + chunk), dtype=np.int64)
        coords = np.unravel_index(flat, rest_shape) if rest else ()
        env = {v: np.asarray(coords[i], dtype=np.int64)[:, None] for i, v in enumerate(rest)}
        for g, weights in branches:
            if y is None:
                counts = _segment_count(g, x, sizes[x], env, flat.size)
            else:
                counts = _plane_count(g, x, sizes[x], y, sizes[y], env, flat.size)
            for cond, v in weights:
                counts = counts * _segment_count(cond, v, sizes[v], env, flat.size)
            total += int(counts.sum())
    return total


def _plane_count(
    f: _Formula, x: str, size_x: int, y: str, size_y: int, env: Mapping[str, np.ndarray], rows: int
) -> np.ndarray:
    """Per enumerated row, the points ``0 <= x < size_x, 0 <= y < size_y`` where ``f`` holds, with every
    coefficient of ``x`` in -1, 0, 1. A comparison ``a*x + b*y + r`` changes sign in x at the lines
    ``x = -a*(b*y + r)`` (and one past it), affine in y; between the y where two lines cross (or one crosses
    0 or size_x), or where a comparison without x changes, the lines keep their order, every x-interval
    between consecutive lines keeps the truth of ``f``, and its length is affine in y: summed in closed form."""
    alphas, betas = [np.zeros((rows, 1), dtype=np.int64), np.full((rows, 1), size_x, dtype=np.int64)], [0, 0]
    ycuts = [np.zeros((rows, 1), dtype=np.int64), np.full((rows, 1), size_y, dtype=np.int64)]
    for leaf in dict.fromkeys(_leaves(f)):
        c = dict(leaf.coeffs)
        a, b = c.get(x, 0), c.get(y, 0)
        r = leaf.const + sum(k * env[v] for v, k in c.items() if v not in (x, y))
        r = np.broadcast_to(np.asarray(r, dtype=np.int64), (rows, 1))
        if a:
            alphas += [-a * r, -a * r + 1]
            betas += [-a * b, -a * b]
        elif b:
            ycuts += [-np.floor_divide(r, b), np.floor_divide(-r, b) + 1]
    alpha = np.concatenate(alphas, axis=1)  # (rows, L)
    beta = np.asarray(betas, dtype=np.int64)  # (L,)
    i, j = np.triu_indices(beta.size, 1)
    crossing = beta[i] != beta[j]
    i, j = i[crossing], j[crossing]
    num, den = alpha[:, j] - alpha[:, i], beta[i] - beta[j]  # lines i and j meet at y = num / den
    ycuts += [-np.floor_divide(-num, den), np.floor_divide(num, den) + 1]
    ys = np.sort(np.clip(np.concatenate(ycuts, axis=1), 0, size_y), axis=1)
    lo, n = ys[:, :-1], np.diff(ys, axis=1)  # y-segments [lo, lo + n)
    value = alpha[:, None, :] + beta[None, None, :] * lo[:, :, None]  # (rows, S, L) at the segment's first y
    inside = ((value > 0) & (value < size_x)) | ((value == 0) & (beta > 0)) | ((value == size_x) & (beta < 0))
    slope = np.where(inside, beta, 0)
    value = np.clip(value, 0, size_x)
    order = np.lexsort((slope, value), axis=-1)
    value = np.take_along_axis(value, order, axis=-1)
    slope = np.take_along_axis(slope, order, axis=-1)
    width, growth = np.diff(value, axis=-1), np.diff(slope, axis=-1)  # each x-interval's length at lo, per y
    nn = n[:, :, None]
    length = nn * width + growth * (nn * (nn - 1) // 2)
    # f on each x-interval, at a y of the segment where the interval is not empty (its first or its last)
    at_y = np.where(width > 0, lo[:, :, None], lo[:, :, None] + np.maximum(nn - 1, 0))
    at_x = value[:, :, :-1] + slope[:, :, :-1] * (at_y - lo[:, :, None])
    holds = _feval(f, {**{v: a[:, :, None] for v, a in env.items()}, x: at_x, y: at_y})
    return (length * np.broadcast_to(holds, length.shape)).sum(axis=(1, 2))


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


_BINARY_FUNCS = {**BINARY_OPS, "max": FUNCTIONS["max"], "min": FUNCTIONS["min"]}
_UNARY_FUNCS = {name: f for name, f in FUNCTIONS.items() if name not in ("max", "min")}
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
        pw = values[node.tensor]
        if all(isinstance(f, bool) for f in pw.values()):  # no positions to substitute (nor sizes to read)
            return {value: f for value, f in pw.items() if f is not False}
        mapping = {_positional(i): bind_index(idx, sizes) for i, idx in enumerate(node.indices)}
        return _pw_subst(pw, mapping)
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
