"""Tests of mappers.bound and the branch-and-bound exhaustive search: every bound is below every cost it bounds,
and the pruned search returns exactly the mapping the unpruned walk returns (hypothesis over GEMM and QK shapes,
arrays, buffers, bandwidths, bypass and objectives)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import mappers.bound
import mappers.search
from einsum.cascade import Cascade
from einsum.errors import SpecError
from einsum.lower import lower
from mappers.bound import BOUND_SLACK, keep_bounds, tiling_bounds
from mappers.constraints import constraints_from_dict
from mappers.search import Objective, search
from mappers.space import MapSpace
from simulator.nest import evaluate_nest
from tests.mappers.test_validator import THREE, gemm, small_arch

QK = Cascade.from_text("input I[B,H,M,K], W[B,H,K,N]\nO[b,h,m,n] = sum[k] I[b,h,m,k] * W[b,h,k,n]", name="qk")
OBJECTIVES = ("latency", "energy", "edp", "weighted:1,0.5", "weighted:0,1")
FIELDS = ("temporal", "spatial", "order", "keep")


@pytest.fixture(autouse=True)
def _small_probe(monkeypatch):
    """The walk's first batch (mappers.search._PROBE) answers whole spaces below 32K points without bounds; these
    tests' spaces are smaller, so the probe shrinks to make them branch and bound."""
    import mappers.search

    monkeypatch.setattr(mappers.search, "_PROBE", 64)


def qk(b: int, h: int, m: int, n: int, k: int):
    return lower(QK, {"B": b, "H": h, "M": m, "N": n, "K": k}).einsum("O")


def both(space: MapSpace, objective: str):
    """(branch and bound, the unpruned walk), neither answered from the memo of complete searches."""
    mappers.search._COMPLETE.clear()
    pruned = search(space, objective, method="exhaustive")
    walked = search(space, objective, method="exhaustive", prune=False)
    return pruned, walked


def assert_same(pruned, walked) -> None:
    assert pruned.complete and walked.complete
    for field in FIELDS:
        np.testing.assert_array_equal(getattr(pruned.batch, field), getattr(walked.batch, field), err_msg=field)
    assert pruned.mapping == walked.mapping
    assert (pruned.latency_cycles, pruned.energy_pj) == (walked.latency_cycles, walked.energy_pj)
    assert pruned.points_passed == walked.points_passed == pruned.space.size


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize(
    ("einsum", "arch", "levels"),
    [
        (gemm(16, 12, 8), small_arch(4, 4, buffer=128, regs=8), THREE),
        (gemm(8, 8, 8), small_arch(2, 2, buffer=64, regs=12), None),  # symmetric: many exact ties
        (qk(2, 3, 8, 8, 4), small_arch(4, 4, buffer=256, regs=12, dram_bw=4e9), THREE),
        (qk(1, 2, 8, 4, 4), small_arch(2, 2, buffer=128, regs=16), None),
    ],
)
def test_branch_and_bound_returns_the_walks_mapping(einsum, arch, levels, objective):
    space = MapSpace.build(einsum, arch, "pe_2d", levels=levels)
    pruned, walked = both(space, objective)
    assert_same(pruned, walked)
    assert pruned.evaluated < walked.evaluated


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(["gemm", "qk"]),
    sizes=st.lists(st.sampled_from([1, 2, 3, 4, 6, 8, 12, 16]), min_size=5, max_size=5),
    rows=st.sampled_from([1, 2, 4]),
    cols=st.sampled_from([1, 2, 4]),
    buffer=st.sampled_from([8, 32, 128, 1024]),
    regs=st.sampled_from([3, 4, 8, 16]),
    dram_bw=st.sampled_from([0.3e9, 1.88e9, 1e11]),
    four_levels=st.booleans(),
    imperfect=st.booleans(),
    objective=st.sampled_from(OBJECTIVES),
)
def test_branch_and_bound_equals_the_walk_on_random_spaces(
    kind, sizes, rows, cols, buffer, regs, dram_bw, four_levels, imperfect, objective
):
    e = gemm(*sizes[:3]) if kind == "gemm" else qk(min(sizes[0], 2), min(sizes[1], 3), *sizes[2:])
    arch = small_arch(rows, cols, buffer=buffer, regs=regs, dram_bw=dram_bw)
    try:
        space = MapSpace.build(e, arch, "pe_2d", levels=None if four_levels else THREE, imperfect=imperfect)
    except SpecError:
        assume(False)  # nothing fits these capacities
    assume(space.size <= 100_000)
    try:
        pruned, walked = both(space, objective)
    except SpecError:  # no point fits: both say so
        with pytest.raises(SpecError):
            search(space, objective, method="exhaustive", prune=False)
        return
    assert_same(pruned, walked)


@pytest.mark.parametrize(
    ("einsum", "arch", "levels"),
    [
        (gemm(16, 12, 8), small_arch(4, 4, buffer=128, regs=8), THREE),
        (qk(1, 2, 8, 4, 4), small_arch(2, 2, buffer=128, regs=16, dram_bw=4e9), None),
    ],
)
def test_no_point_costs_less_than_its_tilings_bounds(einsum, arch, levels):
    space = MapSpace.build(einsum, arch, "pe_2d", levels=levels)
    tiling_s, tiling_t, latency, energy = tiling_bounds(space)
    keep_latency, keep_energy = keep_bounds(space, tiling_s, tiling_t)
    every = np.ones((len(tiling_s), space.num_keep), dtype=bool)
    out = space.new_batch(1 << 16)
    source = np.empty(out.num_mappings, dtype=np.int64)
    cursor = np.zeros(1, dtype=np.int64)
    seen = 0
    weights = 1 << np.arange(space.keep_table[0].size)
    codes = space.keep_table.reshape(space.num_keep, -1) @ weights
    by_code = np.argsort(codes)
    while cursor[0] < len(tiling_s):
        n = space.enumerate_listed(tiling_s, tiling_t, every, cursor, out, source)
        batch = mappers.search._head(out, n)
        costs = evaluate_nest(space.problem, space.nest_arch, batch, cycles_per_point=space.cycles_per_point)
        cost_latency = costs.latency_cycles
        cost_energy = costs.energy_pj + costs.padded_points * space.compute_energy_pj_per_point
        i = source[:n]
        k = by_code[np.searchsorted(codes[by_code], batch.keep.reshape(n, -1) @ weights)]  # each row's bypass choice
        low = 1 - BOUND_SLACK
        assert np.all(cost_latency >= latency[i] * low) and np.all(cost_energy >= energy[i] * low)
        assert np.all(cost_latency >= keep_latency[i, k] * low) and np.all(cost_energy >= keep_energy[i, k] * low)
        assert costs.feasible.all()
        seen += n
    # the bounded tilings hold every point that fits (the walk costs exactly those)
    assert seen == search(space, method="exhaustive", prune=False).evaluated
    # and the ordered bound is the tighter one
    assert np.all(np.nanmin(np.where(np.isfinite(keep_energy), keep_energy, np.nan), axis=1) >= energy * (1 - 1e-12))


def test_the_bounds_are_tight_on_the_zigzag_benchmark_shape():
    """QK as in benchmarks/zigzag_compare.py (m over the rows, n over the columns), scaled to a 16 x 16 array: the
    pruned search costs a small fraction of the points the walk costs."""
    same_spatial = constraints_from_dict(
        {"targets": [{"target": "pe_2d", "type": "spatial", "factors": {"m": 16, "n": 16},
                      "axes": {"rows": ["m"], "cols": ["n"]}}]},
        "<test>",
    )  # fmt: skip
    arch = small_arch(16, 16, buffer=1 << 14, regs=12)
    space = MapSpace.build(qk(2, 12, 128, 128, 64), arch, constraints=same_spatial, levels=THREE)
    pruned, walked = both(space, "latency")
    assert_same(pruned, walked)
    assert pruned.evaluated < walked.evaluated / 100


def test_too_many_tilings_to_bound_falls_back_to_the_walk(monkeypatch):
    space = MapSpace.build(gemm(16, 12, 8), small_arch(4, 4, buffer=128, regs=8), "pe_2d", levels=THREE)
    monkeypatch.setattr(mappers.bound, "tiling_bounds", lambda space: None)
    pruned, walked = both(space, "latency")
    assert_same(pruned, walked)
    assert pruned.evaluated == walked.evaluated


def test_combined_keys_grow_with_latency_and_energy():
    space = MapSpace.build(gemm(16, 12, 8), small_arch(4, 4, buffer=128, regs=8), "pe_2d", levels=THREE)
    latency = np.array([1.0, 2.0, 2.0, 3.0]) * 1e3
    energy = np.array([5.0, 5.0, 7.0, 6.0]) * 1e6
    for objective in OBJECTIVES:
        combine = Objective.parse(objective).combine(space)
        low = combine(latency, energy)
        for more_latency, more_energy in ((latency * 2, energy), (latency, energy * 2)):
            high = combine(more_latency, more_energy)
            assert np.all(high[0] >= low[0])
