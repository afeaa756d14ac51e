"""Tests of mappers.space: the pruned space loses no optimum, its size is exact, mappings convert faithfully."""

from __future__ import annotations

import doctest
import itertools
import math

import numpy as np
import pytest

import mappers.space
from mappers.search import Objective, search
from mappers.space import MapSpace
from simulator.cost import einsum_nest
from simulator.nest import MappingBatch, evaluate_nest
from tests.mappers.test_validator import THREE, gemm, independent_problems, small_arch


def _factorizations(n: int, parts: int) -> list[tuple[int, ...]]:
    if parts == 1:
        return [(n,)]
    return [(d, *rest) for d in range(1, n + 1) if n % d == 0 for rest in _factorizations(n // d, parts - 1)]


def brute_force(space: MapSpace) -> tuple[MappingBatch, np.ndarray]:
    """Every mapping of a 3-level, 2-axis space with every full loop order at the two outer levels, every
    buffer keep set, one variable per axis; costed directly (no pruning, no symmetry)."""
    e, axes = space.einsum, space.nest_arch.array_axes
    per_var = [
        [f for f in _factorizations(int(size), 5) if f[3] <= axes[0] and f[4] <= axes[1]] for size in e.var_sizes
    ]
    tilings = []
    for combo in itertools.product(*per_var):
        f = np.array(combo)  # [R, 5]
        spatial = f[:, 3:].T  # [A, R]
        if np.any(spatial.prod(axis=1) > axes) or np.any((spatial > 1).sum(axis=1) > 1):
            continue
        tilings.append((f[:, :3].T, spatial))
    perms = list(itertools.permutations(range(len(e.vars))))
    keeps = list(itertools.product((True, False), repeat=len(e.tensors)))
    n = len(tilings) * len(perms) ** 2 * len(keeps)
    temporal = np.empty((n, 3, len(e.vars)), np.int64)
    spatial = np.empty((n, 2, len(e.vars)), np.int64)
    order = np.empty((n, 3, len(e.vars)), np.int64)
    keep = np.ones((n, 3, len(e.tensors)), bool)
    for i, ((t, s), p0, p1, k) in enumerate(itertools.product(tilings, perms, perms, keeps)):
        temporal[i], spatial[i], order[i, 0], order[i, 1], order[i, 2], keep[i, 1] = t, s, p0, p1, perms[0], k
    return MappingBatch(temporal, spatial, order, keep), np.arange(n)


@pytest.fixture(scope="module")
def tiny():
    space = MapSpace.build(gemm(4, 6, 4), small_arch(2, 2, buffer=24, regs=4), levels=THREE)
    batch, _ = brute_force(space)
    costs = evaluate_nest(space.problem, space.nest_arch, batch, cycles_per_point=space.cycles_per_point)
    return space, costs


@pytest.mark.parametrize("objective", ["latency", "energy", "edp", "weighted:1,1"])
def test_pruned_exhaustive_search_finds_the_brute_force_optimum(tiny, objective):
    space, costs = tiny
    primary, secondary = Objective.parse(objective).keys(space)(costs)
    feasible = costs.feasible
    least = primary[feasible].min()
    near = feasible & (primary <= least * (1 + 1e-12))
    best = search(space, objective, method="exhaustive")
    assert best.complete
    found_primary, found_secondary = (k[0] for k in Objective.parse(objective).keys(space)(best.costs))
    assert found_primary == pytest.approx(least, rel=1e-12)
    assert found_secondary == pytest.approx(secondary[near].min(), rel=1e-12)
    assert independent_problems(space.einsum, space.arch, best.mapping) == []


def test_the_space_counts_its_points_exactly_and_prunes_only_by_capacity(tiny):
    space, costs = tiny
    result = search(space, method="exhaustive")
    assert result.points_passed == space.size
    assert result.evaluated == result.feasible_evaluated  # overflowing points never reach the kernel
    assert space.size < costs.feasible.size / 10  # symmetric loop orders are one point


def test_the_innermost_levels_order_never_changes_a_cost():
    space = MapSpace.build(gemm(16, 8, 8), small_arch(4, 4, buffer=256, regs=16), levels=THREE)
    batch = space.sample(np.random.default_rng(1), 500)
    shuffled = batch.order.copy()
    rng = np.random.default_rng(2)
    for row in shuffled:
        row[-1] = rng.permutation(row[-1])
    a = evaluate_nest(space.problem, space.nest_arch, batch)
    b = evaluate_nest(space.problem, space.nest_arch, MappingBatch(batch.temporal, batch.spatial, shuffled, batch.keep))
    np.testing.assert_array_equal(a.latency_cycles, b.latency_cycles)
    np.testing.assert_array_equal(a.energy_pj, b.energy_pj)


def test_size_matches_the_walk_on_a_four_level_space_with_padding():
    arch = small_arch(4, 2, buffer=4096, regs=16)
    space = MapSpace.build(gemm(6, 5, 2), arch, "pe_2d", imperfect=True)
    assert space.level_names == ("dram", "global_buffer", "reg_file_1d", "pe_reg_2d")
    assert space.notes == ("k: padded sizes offered [5, 6]",)
    result = search(space, "latency", method="exhaustive", budget=10**9)
    assert result.complete and result.points_passed == space.size
    assert independent_problems(space.einsum, arch, result.mapping, padded=True) == []


def test_mapping_reevaluates_to_the_same_costs_through_the_cascade_models_nest():
    arch = small_arch(4, 4, buffer=256, regs=16)
    space = MapSpace.build(gemm(32, 16, 8), arch, levels=THREE)
    best = search(space, "energy", method="anneal", budget=5000)
    again = einsum_nest(space.einsum, arch, best.mapping)
    assert float(again.energy_pj[0]) == pytest.approx(float(best.costs.energy_pj[0]), rel=1e-12)
    np.testing.assert_allclose(again.reads_words[0], best.costs.reads_words[0], rtol=1e-12)
    assert bool(again.feasible[0])


def test_default_array_is_the_largest_that_supports_the_operators():
    arch = small_arch()
    assert MapSpace.build(gemm(8, 8, 8), arch).array == "pe_1d"  # 256 PEs against 4 x 4
    assert MapSpace.build(gemm(8, 8, 8), arch, levels=THREE).array == "pe_2d"
    from einsum.cascade import Cascade
    from einsum.lower import lower

    div = lower(Cascade.from_text("input X[M], Y[M]\nZ[m] = X[m] / Y[m]"), {"M": 64}).einsum("Z")
    assert MapSpace.build(div, arch).array == "pe_1d"  # only the 1-D array divides


def test_lower_bounds_bound_every_result():
    space = MapSpace.build(gemm(32, 16, 8), small_arch(4, 4, buffer=256, regs=16), levels=THREE)
    latency, energy = space.lower_bounds()
    best = search(space, "latency", method="random", budget=3000)
    assert best.latency_cycles >= latency * (1 - 1e-12) and best.energy_pj >= energy
    assert latency == max(32 * 16 * 8 / 16, (32 * 16 + 16 * 8 + 32 * 8) / 1.0)
    assert math.isclose(best.edp, best.energy_pj * best.latency_s)


def test_doctest():
    assert doctest.testmod(mappers.space).failed == 0
