"""Mask geometry (einsum.regions): the tile counter against a brute-force walk over every point of small boxes."""

import doctest
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import einsum.analysis
import einsum.regions
from einsum.errors import ShapeError
from einsum.regions import _and, _cmp, _or, count_points, count_tiles, may_hold, must_hold, positions


def test_module_doctests():
    assert doctest.testmod(einsum.regions).failed == 0


def test_the_analysis_re_exports_the_mask_geometry():
    for name in ("Formula", "work_regions", "affine_forms", "may_hold", "any_of", "count_tiles", "must_hold"):
        assert getattr(einsum.analysis, name) is getattr(einsum.regions, name)


OPS = ("<", "<=", ">", ">=", "==", "!=")


@st.composite
def comparisons(draw, variables=("k", "q", "h")):
    used = draw(st.lists(st.sampled_from(variables), min_size=1, max_size=3, unique=True))
    coeffs = {v: draw(st.integers(-3, 3)) for v in used}
    return _cmp(coeffs, draw(st.integers(-12, 12)), draw(st.sampled_from(OPS)))


@st.composite
def formulas(draw, depth=2):
    if depth == 0 or draw(st.booleans()):
        return draw(comparisons())
    terms = draw(st.lists(formulas(depth=depth - 1), min_size=2, max_size=3))
    return (_and if draw(st.booleans()) else _or)(*terms)


def _holds(f, env):
    """Brute-force truth of a formula at integer points (env: variable -> array)."""
    if isinstance(f, bool):
        return np.full(np.broadcast(*env.values()).shape, f)
    if isinstance(f, einsum.regions._Cmp):
        value = f.const + sum(c * env[v] for v, c in f.coeffs)
        return einsum.regions._CMP_FUNCS[f.op](value, 0)
    parts = [_holds(t, env) for t in f.terms]
    return np.logical_and.reduce(parts) if isinstance(f, einsum.regions._And) else np.logical_or.reduce(parts)


def _walk(f, rows, k_tiles, h_range):
    """Per row (a q interval) and tile (a k interval): any point holds, every point holds, points that hold."""
    out = []
    for qlo, qhi in rows:
        anys, alls, pairs = 0, 0, 0
        for klo, khi in k_tiles:
            q, k, h = np.meshgrid(np.arange(qlo, qhi + 1), np.arange(klo, khi + 1), np.arange(*h_range),
                                  indexing="ij")  # fmt: skip
            held = _holds(f, {"q": q, "k": k, "h": h})
            anys += bool(held.any())
            alls += bool(held.all())
            pairs += int(held.sum())
        out.append((anys, alls, pairs))
    return out


def _boxes(q_size, br, k_size, bc):
    rows = [(s, min(s + br, q_size) - 1) for s in range(0, q_size, br)]
    tiles = [(s, min(s + bc, k_size) - 1) for s in range(0, k_size, bc)]
    return rows, tiles


def _counted(f, q_size, br, k_size, bc, h_range):
    rows, _ = _boxes(q_size, br, k_size, bc)
    low = {"q": np.array([a for a, _ in rows]), "k": 0, "h": h_range[0]}
    high = {"q": np.array([b for _, b in rows]), "k": bc - 1, "h": h_range[1] - 1}
    return count_tiles(f, low, high, step={"k": bc}, tiles=-(-k_size // bc), last={"k": k_size - 1}, pairs=True)


@settings(max_examples=150, deadline=None)
@given(f=formulas(), q_size=st.integers(1, 13), br=st.integers(1, 5), k_size=st.integers(1, 17),
       bc=st.integers(1, 6), h=st.integers(1, 3))  # fmt: skip
def test_tile_counts_are_sound_and_pairs_exact_against_every_point(f, q_size, br, k_size, bc, h):
    truth = _walk(f, *_boxes(q_size, br, k_size, bc), (0, h))
    got = _counted(f, q_size, br, k_size, bc, (0, h))
    for (anys, alls, pairs), visited, interior, counted in zip(truth, got.visited, got.interior, got.pairs,
                                                                 strict=True):  # fmt: skip
        assert visited >= anys  # never skips a tile some point of the region lies in
        assert interior <= alls  # never drops the mask on a tile some point of it misses
        assert interior <= visited
        assert counted == pairs


@st.composite
def intervals(draw):
    """Masks of the registered kinds over a key k and a query q: a half-plane, a window (one form bounded on
    both sides), a sink condition on the key alone, and their unions. The key - query form takes every integer
    between its extremes over a box (unit coefficients: may_hold is exact for it)."""
    a = 1
    lo, width = draw(st.integers(-6, 6)), draw(st.integers(1, 8))
    window = _and(_cmp({"k": 1, "q": -a}, -lo, ">="), _cmp({"k": 1, "q": -a}, -(lo + width), "<"))
    causal = _cmp({"k": 1, "q": -a}, -lo, "<=")
    sink = _cmp({"k": 1}, -draw(st.integers(0, 5)), "<")
    choice = draw(st.sampled_from(("causal", "window", "window-or-sink", "causal-sink")))
    masks = {"causal": causal, "window": window, "window-or-sink": _or(window, sink),
             "causal-sink": _and(causal, _or(_cmp({"k": 1, "q": -a}, -(lo - width), ">"),
                                             _and(_cmp({"k": 1, "q": -a}, -(lo - width), "<="), sink)))}  # fmt: skip
    return choice, masks[choice]


@settings(max_examples=150, deadline=None)
@given(mask=intervals(), q_size=st.integers(1, 13), br=st.integers(1, 5), k_size=st.integers(1, 17),
       bc=st.integers(1, 6))  # fmt: skip
def test_tile_counts_are_exact_for_windows_sinks_and_causal_masks(mask, q_size, br, k_size, bc):
    kind, f = mask
    truth = _walk(f, *_boxes(q_size, br, k_size, bc), (0, 1))
    got = _counted(f, q_size, br, k_size, bc, (0, 1))
    assert [t[0] for t in truth] == got.visited.tolist()
    assert [t[2] for t in truth] == got.pairs.tolist()
    if "sink" in kind:  # a tile the window and the sinks cover together may be taken to need the mask
        assert all(i <= t[1] for t, i in zip(truth, got.interior, strict=True))
    else:
        assert [t[1] for t in truth] == got.interior.tolist()


@settings(max_examples=80, deadline=None)
@given(f=formulas(), lo=st.tuples(*(st.integers(-4, 4),) * 3), ext=st.tuples(*(st.integers(1, 5),) * 3))
def test_may_and_must_hold_bracket_the_truth_on_a_box(f, lo, ext):
    grids = np.meshgrid(*(np.arange(a, a + n) for a, n in zip(lo, ext, strict=True)), indexing="ij")
    held = _holds(f, dict(zip("kqh", grids, strict=True)))
    low = dict(zip("kqh", lo, strict=True))
    high = {v: a + n - 1 for v, a, n in zip("kqh", lo, ext, strict=True)}
    assert bool(may_hold(f, low, high)) >= bool(held.any())
    assert bool(must_hold(f, low, high)) <= bool(held.all())
    assert count_points(f, low, high) == int(held.sum())


def test_positions_merge_a_partition_only_where_its_parts_come_together():
    causal = _cmp({"m1": 8, "m0": 1, "p": -1}, 0, "<=")
    block = _cmp({"m1": 1, "p1": -1}, 0, "==")
    assert positions(causal, {"m1": 8, "m0": 1}, "m") == _cmp({"m": 1, "p": -1}, 0, "<=")
    assert positions(_and(causal, block), {"m1": 8, "m0": 1}, "m") is None
    assert positions(block, {"p1": 4, "p0": 1}, "p") is None
    assert positions(True, {"m1": 8}, "m") is True
    # the merged formula counts the same points as the parts it stands for
    for m1, m0, p in itertools.product(range(3), range(8), range(20)):
        assert _holds(causal, {"m1": m1, "m0": m0, "p": p}) == _holds(
            positions(causal, {"m1": 8, "m0": 1}, "m"), {"m": m1 * 8 + m0, "p": p}
        )


def test_count_tiles_names_a_missing_bound():
    with pytest.raises(ShapeError, match="no bounds for q"):
        count_tiles(_cmp({"k": 1, "q": -1}, 0, "<="), {"k": 0}, {"k": 3}, step={"k": 4}, tiles=2)


@st.composite
def unit_formulas(draw, depth=2):
    """Formulas whose k coefficients are -1, 0 or 1 (counted in the plane of k and another variable)."""
    if depth == 0 or draw(st.booleans()):
        coeffs = {"k": draw(st.integers(-1, 1)), "q": draw(st.integers(-3, 3)), "h": draw(st.integers(-2, 2))}
        return _cmp(coeffs, draw(st.integers(-15, 15)), draw(st.sampled_from(OPS)))
    terms = draw(st.lists(unit_formulas(depth=depth - 1), min_size=2, max_size=3))
    return (_and if draw(st.booleans()) else _or)(*terms)


@settings(max_examples=200, deadline=None)
@given(f=unit_formulas(), sizes=st.tuples(st.integers(1, 40), st.integers(1, 30), st.integers(1, 4)))
def test_points_counted_in_the_plane_match_every_point(f, sizes):
    grids = np.meshgrid(*(np.arange(n) for n in sizes), indexing="ij")
    held = _holds(f, dict(zip("kqh", grids, strict=True)))
    einsum.regions._count_own.cache_clear()
    got = count_points(f, dict.fromkeys("kqh", 0), {v: n - 1 for v, n in zip("kqh", sizes, strict=True)})
    assert got == int(held.sum())
