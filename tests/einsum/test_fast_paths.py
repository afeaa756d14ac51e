"""The fast paths of the mask geometry and the lowering (caches keyed on what a result depends on, tile counts
as unions of intervals) give what the plain definitions give."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import einsum.regions
import workloads
from einsum.errors import ShapeError
from einsum.lower import lower
from einsum.regions import _and, _cmp, _or, count_tiles, may_hold, must_hold, work_regions
from workloads.cases import make_case

OPS = ("<", "<=", ">", ">=", "==", "!=")
VARS = ("k", "q", "h")


@st.composite
def comparisons(draw):
    used = draw(st.lists(st.sampled_from(VARS), min_size=1, max_size=3, unique=True))
    coeffs = {v: draw(st.sampled_from((-3, -2, -1, 1, 2, 4))) for v in used}
    return _cmp(coeffs, draw(st.integers(-30, 30)), draw(st.sampled_from(OPS)))


@st.composite
def formulas(draw, depth=2):
    if depth == 0 or draw(st.booleans()):
        return draw(comparisons())
    terms = draw(st.lists(formulas(depth=depth - 1), min_size=2, max_size=3))
    return (_and if draw(st.booleans()) else _or)(*terms)


@st.composite
def tilings(draw):
    """Rows of boxes (array or scalar bounds), a forward step per tiled variable, a clip on some."""
    rows = draw(st.integers(1, 5))
    low, high = {}, {}
    for v in VARS:
        if draw(st.booleans()):
            lo = np.array(draw(st.lists(st.integers(-8, 20), min_size=rows, max_size=rows)))
            width = np.array(draw(st.lists(st.integers(0, 6), min_size=rows, max_size=rows)))
            low[v], high[v] = lo, lo + width
        else:
            lo = draw(st.integers(-5, 10))
            low[v], high[v] = lo, lo + draw(st.integers(0, 5))
    tiled = draw(st.lists(st.sampled_from(VARS), min_size=1, max_size=2, unique=True))
    step = {v: draw(st.integers(0, 7)) for v in tiled}
    last = {v: int(np.max(high[v])) + draw(st.integers(-3, 40)) for v in tiled if step[v] > 0 and draw(st.booleans())}
    return low, high, step, draw(st.integers(0, 20)), last


def _tile_by_tile(region, inside, low, high, step, tiles, last):
    """Per row: the tiles where the region may hold and where ``inside`` must hold, each tile tested on its own."""
    rows = max((np.size(b) for b in (*low.values(), *high.values())), default=1)
    visited, interior = np.zeros(rows, dtype=np.int64), np.zeros(rows, dtype=np.int64)
    for t in range(tiles):
        lo, hi = dict(low), dict(high)
        for v, s in step.items():
            lo[v], hi[v] = low[v] + t * s, high[v] + t * s
            if v in last:
                hi[v] = np.minimum(hi[v], last[v])
        visited += np.broadcast_to(may_hold(region, lo, hi), (rows,))
        interior += np.broadcast_to(must_hold(inside, lo, hi), (rows,))
    return visited, interior


@settings(max_examples=400, deadline=None)
@given(formulas(), st.one_of(st.none(), formulas()), tilings())
def test_tile_counts_match_testing_every_tile(region, interior, tiling):
    low, high, step, tiles, last = tiling
    got = count_tiles(region, low, high, step=step, tiles=tiles, last=last, interior=interior)
    visited, inside = _tile_by_tile(region, region if interior is None else interior, low, high, step, tiles, last)
    assert got.visited.tolist() == visited.tolist()
    assert got.interior.tolist() == inside.tolist()


def test_a_formula_of_many_intervals_is_counted_by_segments():
    f = _and(*(_or(_cmp({"k": 1, "q": -1}, c, "!="), _cmp({"k": 1}, -c, ">")) for c in range(5)))
    assert einsum.regions._counting(f, f).region_terms is None
    low, high = {"k": 0, "q": np.arange(6)}, {"k": 2, "q": np.arange(6) + 1}
    got = count_tiles(f, low, high, step={"k": 3}, tiles=9)
    visited, inside = _tile_by_tile(f, f, low, high, {"k": 3}, 9, {})
    assert got.visited.tolist() == visited.tolist() and got.interior.tolist() == inside.tolist()


@pytest.mark.parametrize("name", ["streaming-llm", "duo-attention", "s2-attention", "linear-attention-causal", "moba"])
def test_work_regions_served_from_the_memo_equal_fresh_ones(name):
    cascade = workloads.get_cascade(name).cascade
    for seq in (512, 2048, 512, 8192):
        ranks = {"B": 1, "H": 4, "E": 16, "F": 16, "M": seq, "P": seq}
        sizes = make_case(name, {k: v for k, v in ranks.items() if k in cascade.ranks}).sizes
        for zeros in (frozenset(), frozenset(cascade.inputs[-1:])):
            got = work_regions(cascade, sizes, zeros)
            fresh = einsum.regions._work_regions(cascade, cascade.rank_sizes(sizes), set(zeros))
            assert got == {e.name: fresh[e.name] for e in cascade.einsums}
            got.clear()  # a copy: the memo keeps its own


def test_rank_sizes_are_cached_by_value_and_type_and_returned_as_copies():
    cascade = workloads.get_cascade("attention-1pass-causal").cascade
    given = {"B": 1, "H": 2, "E": 8, "F": 8, "M": 64, "P": 64, "M0": 16}
    first = cascade.rank_sizes(given)
    first["M1"] = 999
    assert cascade.rank_sizes(given)["M1"] == 4
    assert list(cascade.rank_sizes(dict(reversed(given.items()))))[:7] == list(reversed(given))
    with pytest.raises(ShapeError, match="positive integer"):
        cascade.rank_sizes({**given, "B": True})
    with pytest.raises(ShapeError, match="not divisible"):
        cascade.rank_sizes({**given, "M0": 48})
    with pytest.raises(ShapeError, match="not divisible"):  # errors are not cached: raised again
        cascade.rank_sizes({**given, "M0": 48})


def test_lowerings_share_read_only_einsums_where_their_sizes_agree():
    cascade = workloads.get_cascade("attention-1pass-causal").cascade
    shape = {"B": 1, "H": 2, "E": 8, "F": 8, "M0": 16}
    a = lower(cascade, {**shape, "M": 64, "P": 64})
    b = lower(cascade, {**shape, "M": 64, "P": 128})
    c = lower(cascade, {**shape, "M": 64, "P": 64})
    assert all(x is y for x, y in zip(a.einsums, c.einsums, strict=True))
    assert a.einsum("QK") is not b.einsum("QK") and a.einsum("QK").var_size("p") == 64
    assert b.einsum("QK").var_size("p") == 128
    for e in a.einsums:
        assert not (e.var_sizes.flags.writeable or e.incidence.flags.writeable or e.is_output.flags.writeable)
    with pytest.raises(KeyError):
        a.einsum("nope")
    with pytest.raises(ValueError):
        a.einsum("QK").var_size("nope")
    a.consumers["Q"] = ()  # each lowering has its own mappings
    assert c.consumers["Q"] != ()
