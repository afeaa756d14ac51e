"""Tests of mappers.search.search: arguments, objectives, budgets, Ctrl-C, bounded memory, progress bar."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import mappers.search
from einsum.errors import SpecError
from mappers.search import AUTO_EXHAUSTIVE_POINTS, Objective, bench_mapper, bench_space, search
from mappers.space import MapSpace
from simulator.specs import with_overrides
from tests.mappers.test_validator import THREE, gemm, independent_problems, small_arch


@pytest.fixture(scope="module")
def space():
    # priced by the FuseMax study's 45 nm table (buffer words cost ~1000x register words): a real trade-off
    from validate.fusemax.study import published_figures

    arch = with_overrides(small_arch(4, 4, buffer=128, regs=8), published_figures("fusemax-cloud"))
    return MapSpace.build(gemm(16, 12, 8), arch, "pe_2d", levels=THREE)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("latency", Objective("latency")),
        ("edp", Objective("edp")),
        ("weighted", Objective("weighted", 1.0, 1.0)),
        ("weighted:2,0.5", Objective("weighted", 2.0, 0.5)),
    ],
)
def test_objectives_parse(text, expected):
    assert Objective.parse(text) == expected
    assert Objective.parse(str(expected)) == expected


@pytest.mark.parametrize("text", ["speed", "weighted:1", "weighted:a,b", "weighted:-1,2", "latency:2"])
def test_unknown_objectives_list_the_choices(text):
    with pytest.raises(SpecError, match="choose from latency, energy, edp, weighted or weighted:WL,WE"):
        Objective.parse(text)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"method": "genetic"}, "method 'genetic' is unknown; choose from auto, exhaustive, random, anneal"),
        ({"budget": 0}, "budget must be an int >= 1 (evaluations), got 0"),
        ({"time_s": -1}, "time_s must be a number > 0 (seconds), got -1"),
        ({"batch_size": 0}, "batch_size must be an int >= 1, got 0"),
    ],
)
def test_bad_arguments_are_named(space, kwargs, fragment):
    with pytest.raises(SpecError) as info:
        search(space, **kwargs)
    assert fragment in str(info.value)


def test_weighted_objective_trades_latency_for_energy(space):
    fast, frugal = search(space, "latency", method="exhaustive"), search(space, "energy", method="exhaustive")
    assert fast.latency_cycles < frugal.latency_cycles and frugal.energy_pj < fast.energy_pj
    by_weight = [search(space, f"weighted:{w},1", method="exhaustive") for w in (0.0, 1e6)]
    assert by_weight[0].energy_pj == pytest.approx(frugal.energy_pj, rel=1e-12)
    assert by_weight[1].latency_cycles == pytest.approx(fast.latency_cycles, rel=1e-12)


def test_auto_enumerates_small_spaces_and_anneals_large_ones(space):
    assert space.size < AUTO_EXHAUSTIVE_POINTS
    assert search(space).method == "exhaustive"
    assert search(space, budget=1000).method == "anneal"
    big = bench_space()
    assert big.size > AUTO_EXHAUSTIVE_POINTS
    assert search(big, budget=2000).method == "anneal"


def test_budgets_stop_an_exhaustive_search_early(space):
    partial = search(space, method="exhaustive", budget=1000, batch_size=300)
    assert partial.evaluated == 1000 and not partial.complete and not partial.interrupted
    timed = search(bench_space(), method="exhaustive", time_s=0.3, batch_size=4096)
    assert not timed.complete and timed.seconds < 5
    assert independent_problems(partial.space.einsum, partial.space.arch, partial.mapping) == []


def test_ctrl_c_returns_the_best_mapping_so_far(space, monkeypatch):
    calls = []
    real = mappers.search.evaluate_nest

    def interrupted_on_third_call(problem, arch, batch, **kwargs):
        calls.append(batch.num_mappings)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(problem, arch, batch, **kwargs)

    monkeypatch.setattr(mappers.search, "evaluate_nest", interrupted_on_third_call)
    monkeypatch.setattr(mappers.search, "_COMPLETE", type(mappers.search._COMPLETE)())  # searched anew, not recalled
    found = search(space, method="exhaustive", batch_size=500)
    assert found.interrupted and not found.complete
    assert found.evaluated == calls[0] + calls[1] > 0  # the two batches costed before Ctrl-C
    assert independent_problems(space.einsum, space.arch, found.mapping) == []
    calls.clear()
    monkeypatch.setattr(mappers.search, "evaluate_nest", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(SpecError, match="interrupted after 0 evaluations, before any mapping that fits"):
        search(space, method="anneal", budget=500)


def test_a_space_of_hundreds_of_millions_of_points_streams_in_bounded_memory():
    big = bench_space()
    assert big.size > 10**8
    peaks = []
    for budget in (100_000, 400_000):
        tracemalloc.start()
        found = search(big, method="exhaustive", budget=budget, batch_size=1 << 14)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert found.evaluated == budget
    assert max(peaks) < 32 * 2**20  # bytes: a few batches, whatever the space or the evaluations
    assert peaks[1] < 1.5 * peaks[0]


def test_progress_bar_goes_to_stderr(space, capsys, monkeypatch):
    monkeypatch.setattr(mappers.search, "_COMPLETE", type(mappers.search._COMPLETE)())  # searched, not recalled
    search(space, method="exhaustive", progress=True)
    err = capsys.readouterr().err
    assert "100%" in err and "pt" in err
    search(space, method="anneal", budget=2000, progress=True)
    assert "eval" in capsys.readouterr().err


def test_nothing_fits_is_explained(space):
    # Registers that hold only two words: every mapping keeping A, B and C there overflows.
    tight = MapSpace.build(gemm(16, 12, 8), small_arch(4, 4, buffer=128, regs=8), "pe_2d", levels=THREE)
    object.__setattr__(tight.nest_arch, "capacity_words", np.array([np.inf, 128.0, 2.0]))
    with pytest.raises(SpecError, match=r"no point of the space \(\d+ points\) fits: 'pe_reg_2d' needs at least 3"):
        search(tight, method="exhaustive")
    with pytest.raises(SpecError, match="none of the 500 random evaluations fits; the closest needs"):
        search(tight, method="random", budget=500)


def test_bench_mapper_reports_one_core_and_parallel_rates():
    result = bench_mapper(evaluations=20_000, repeats=1)
    assert result["evaluations_per_s"] > 0 and result["evaluations_per_s_parallel"] > 0
    assert result["space_size"] == bench_space().size and result["threads"] >= 1
    with pytest.raises(SpecError, match="evaluations must be an int >= 1"):
        bench_mapper(evaluations=0)
