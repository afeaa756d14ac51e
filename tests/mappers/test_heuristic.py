"""Tests of the annealer (mappers.heuristic) and random sampling: gap to the exhaustive optimum, feasibility
of every returned mapping by the independent check, reproducibility for a seed."""

from __future__ import annotations

import numpy as np
import pytest

from einsum.lower import lower
from mappers.search import search
from mappers.space import MapSpace
from simulator.specs import with_overrides
from tests.mappers.test_validator import THREE, gemm, independent_problems, small_arch
from workloads import get_cascade

ATTENTION = get_cascade("attention-3pass").cascade
BUDGET = 10_000

SPACES = {
    "gemm, 3 levels, DRAM-bound": lambda: MapSpace.build(
        gemm(16, 12, 8), small_arch(4, 4, buffer=128, regs=8), "pe_2d", levels=THREE
    ),
    "gemm, 4 levels": lambda: MapSpace.build(
        gemm(8, 6, 4), small_arch(2, 4, buffer=64, regs=8, dram_bw=3.76e9), "pe_2d"
    ),
    "gemm, padded sizes": lambda: MapSpace.build(
        gemm(12, 10, 6), small_arch(4, 2, buffer=512, regs=16), "pe_2d", levels=THREE, imperfect=True
    ),
    "max reduction on the 1-D array": lambda: MapSpace.build(
        lower(ATTENTION, {"B": 2, "H": 2, "M": 64, "P": 16, "E": 4, "F": 4}).einsum("GM"),
        with_overrides(small_arch(buffer=128), {"arrays.pe_1d.pes": 8, "levels.pe_reg_1d.capacity_words": 8}),
        "pe_1d",
    ),
}
VALUE = {"latency": lambda r: r.latency_cycles, "energy": lambda r: r.energy_pj, "edp": lambda r: r.edp}


@pytest.fixture(scope="module", params=list(SPACES))
def space(request):
    return SPACES[request.param]()


@pytest.mark.parametrize("objective", ["latency", "energy", "edp"])
def test_annealing_gets_within_2_percent_of_the_exhaustive_optimum(space, objective):
    exhaustive = search(space, objective, method="exhaustive")
    assert space.size > 15 * BUDGET  # the annealer sees a small part of the space
    for seed in (0, 1):
        found = search(space, objective, method="anneal", budget=BUDGET, seed=seed)
        assert found.evaluated == BUDGET
        assert VALUE[objective](found) <= VALUE[objective](exhaustive) * 1.02
        assert VALUE[objective](found) >= VALUE[objective](exhaustive) * (1 - 1e-12)
        assert independent_problems(space.einsum, space.arch, found.mapping, padded=True) == []


@pytest.mark.parametrize("method", ["random", "anneal"])
def test_a_seed_reproduces_the_search(method):
    space = SPACES["gemm, 4 levels"]()
    a, b = (search(space, "edp", method=method, budget=3000, seed=7) for _ in range(2))
    assert a.mapping == b.mapping and a.evaluated == b.evaluated and a.feasible_evaluated == b.feasible_evaluated
    others = [search(space, "edp", method=method, budget=3000, seed=s) for s in (8, 9, 10)]
    assert len({(r.feasible_evaluated, r.mapping) for r in (a, *others)}) > 1  # the seed matters


def test_serial_and_parallel_kernels_give_the_same_search():
    space = SPACES["gemm, 3 levels, DRAM-bound"]()
    a = search(space, "energy", method="anneal", budget=20_000, seed=3, parallel=False)
    b = search(space, "energy", method="anneal", budget=20_000, seed=3, parallel=True)
    assert a.mapping == b.mapping and a.energy_pj == b.energy_pj


@pytest.mark.parametrize("seed", range(6))
def test_every_returned_mapping_is_feasible_on_random_spaces(seed):
    rng = np.random.default_rng(seed)
    sizes = [int(x) for x in rng.choice([2, 3, 4, 6, 8, 12, 16, 24], size=3)]
    rows, cols = (int(x) for x in rng.choice([1, 2, 4, 8], size=2))
    arch = small_arch(rows, cols, buffer=int(rng.choice([32, 64, 256, 1024])), regs=int(rng.choice([3, 4, 8, 16])))
    levels = THREE if rng.random() < 0.5 else None
    space = MapSpace.build(gemm(*sizes), arch, "pe_2d", levels=levels, imperfect=bool(rng.random() < 0.5))
    for method, budget in (("exhaustive", 300_000), ("random", 2000), ("anneal", 2000)):
        for objective in ("latency", "energy", "edp"):
            found = search(space, objective, method=method, budget=budget, seed=seed)
            assert independent_problems(space.einsum, arch, found.mapping, padded=True) == [], (method, objective)
            assert bool(found.costs.feasible[0])
