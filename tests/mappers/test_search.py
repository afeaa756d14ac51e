"""Tests of mappers.search: compulsory-traffic optima, re-evaluation, objectives, brute force, streaming."""

from __future__ import annotations

import doctest
import itertools
import math

import numpy as np
import pytest

import mappers.search
from einsum.cascade import Cascade
from einsum.errors import SpecError
from einsum.lower import lower
from mappers.search import MapResult, nest_constraints, search_nest
from mappers.templates import divisors, loop_nest
from simulator.cost import einsum_nest
from simulator.mapping import EinsumMapping
from simulator.specs import ArchSpec, load_arch, with_overrides
from workloads import get_cascade

GEMM = Cascade.from_text("input A[T,K], B[K,N]\nC[t,n] = sum[k] A[t,k] * B[k,n]")
T, K, N = 65536, 768, 768


def gemm(t: int = T, k: int = K, n: int = N):
    return lower(GEMM, {"T": t, "K": k, "N": n}).einsum("C")


def dram_words_per_cycle(arch: ArchSpec) -> float:
    return arch.level("dram").bandwidth_bytes_per_s / (arch.word_bytes * arch.clock_hz)


def reevaluate(e, arch: ArchSpec, mapping: EinsumMapping) -> tuple[float, float, float, bool]:
    """(latency cycles, energy pJ, DRAM words, feasible) of a mapping through the cascade model's nest."""
    costs = einsum_nest(e, arch, mapping)
    dram = float(costs.reads_words[0, 0].sum() + costs.fills_words[0, 0].sum() + costs.updates_words[0, 0].sum())
    latency = max(float(costs.compute_cycles[0]), dram / dram_words_per_cycle(arch))
    return latency, float(costs.energy_pj[0]), dram, bool(costs.feasible[0])


def storage_energy(best: MapResult) -> float:
    """The kernel's storage energy (the search's energy adds the functional units')."""
    return best.energy_pj - best.compute_energy_pj


def test_gemm_reaches_compulsory_traffic_and_the_roofline():
    arch = load_arch("fusemax-cloud")
    best = search_nest(gemm(), arch, "pe_2d", ("t", "n"))
    compulsory = T * K + K * N + T * N
    assert best.dram_words == compulsory
    roofline = max(T * K * N / 65536, compulsory / dram_words_per_cycle(arch))
    assert best.latency_cycles == pytest.approx(roofline, rel=1e-9)
    assert best.mapping.levels == ("dram", "global_buffer", "pe_reg_2d")
    assert best.mapping.spatial == ((("t", 256),), (("n", 256),))
    assert 0 < best.feasible_evaluated <= best.evaluated <= best.space_size


def test_attention_qk_reaches_compulsory_traffic():
    sizes = {"B": 2, "H": 2, "M": 1024, "P": 1024, "E": 64, "F": 64}
    qk = lower(get_cascade("attention-3pass").cascade, sizes).einsum("QK")
    best = search_nest(qk, load_arch("fusemax-cloud"), "pe_2d", ("m", "p"), fixed_outer=("b", "h"))
    assert best.dram_words == 2 * 2 * (1024 * 64 + 1024 * 64 + 1024 * 1024)
    assert best.mapping.temporal[0] == (("b", 2), ("h", 2))  # fixed, outermost, in the given order
    assert all(v not in ("b", "h") for v, _ in best.mapping.temporal[1])


def test_small_buffer_pays_above_compulsory_and_keeps_the_best_feasible():
    arch = with_overrides(load_arch("fusemax-cloud"), {"levels.global_buffer.capacity_words": 3 * 65536})
    e = gemm()
    best = search_nest(e, arch, "pe_2d", ("t", "n"))
    assert best.dram_words > T * K + K * N + T * N
    _, _, dram, feasible = reevaluate(e, arch, best.mapping)
    assert feasible and dram == best.dram_words
    # The unconstrained optimum (B and a row block of C resident) no longer fits.
    big = search_nest(e, load_arch("fusemax-cloud"), "pe_2d", ("t", "n"))
    assert not reevaluate(e, arch, big.mapping)[3]
    # Hand-written feasible nests do no better.
    for outer, middle, keeps in (
        ((("t", 256), ("n", 3), ("k", 3)), (("k", 256),), {"A", "B", "C"}),  # exactly fills the buffer
        ((("n", 3), ("t", 256), ("k", 768)), (), {"C"}),  # output-stationary in the PEs
        ((("t", 256), ("k", 768)), (("n", 3),), {"C"}),
        ((("k", 768), ("t", 256)), (("n", 3),), {"C"}),
    ):
        hand = loop_nest(e, arch, "pe_2d", outer, middle, ("t", "n"), keeps)
        hand_latency, _, _, hand_feasible = reevaluate(e, arch, hand)
        assert hand_feasible and hand_latency >= best.latency_cycles * (1 - 1e-12)


def test_nothing_fits_raises_with_the_sizes():
    arch = with_overrides(load_arch("fusemax-cloud"), {"levels.global_buffer.capacity_words": 4096})
    with pytest.raises(
        SpecError,
        match=r"fits level 'global_buffer': its smallest footprint .* is 65536 words \(C 65536\), its capacity 4096",
    ):
        search_nest(gemm(), arch, "pe_2d", ("t", "n"))
    tiny_regs = with_overrides(load_arch("fusemax-cloud"), {"levels.pe_reg_2d.capacity_words": 2})
    with pytest.raises(
        SpecError, match=r"fits level 'pe_reg_2d': its smallest footprint .* is 3 words \(C 1, A 1, B 1\)"
    ):
        search_nest(gemm(1024, 256, 256), tiny_regs, "pe_2d", ("t", "n"))


@pytest.mark.parametrize("objective", ["latency", "energy", "edp"])
@pytest.mark.parametrize("capacity", [None, 3 * 65536])
def test_mapping_reevaluates_to_the_same_numbers(objective, capacity):
    arch = load_arch("fusemax-cloud")
    if capacity:
        arch = with_overrides(arch, {"levels.global_buffer.capacity_words": capacity})
    e = gemm()
    best = search_nest(e, arch, "pe_2d", ("t", "n"), objective=objective)
    latency, energy, dram, feasible = reevaluate(e, arch, best.mapping)
    assert feasible
    assert latency == pytest.approx(best.latency_cycles, rel=1e-12)
    assert energy == pytest.approx(storage_energy(best), rel=1e-12)
    assert dram == best.dram_words


def test_objective_changes_the_choice():
    arch = load_arch("fusemax-cloud")
    e = gemm()
    by = {o: search_nest(e, arch, "pe_2d", ("t", "n"), objective=o) for o in ("latency", "energy", "edp")}
    fast, frugal, edp = by["latency"], by["energy"], by["edp"]
    assert fast.latency_cycles < frugal.latency_cycles
    assert frugal.energy_pj < fast.energy_pj
    assert edp.edp <= min(r.edp for r in by.values())
    # Compute-bound at the optimum: the fastest mapping is also the least-energy one among the fastest.
    assert fast.latency_cycles == T * K * N / 65536


def test_streaming_in_tiny_batches_finds_the_same_mapping():
    arch = with_overrides(load_arch("fusemax-cloud"), {"levels.global_buffer.capacity_words": 3 * 65536})
    e = gemm()
    whole = search_nest(e, arch, "pe_2d", ("t", "n"), objective="edp")
    streamed = search_nest(e, arch, "pe_2d", ("t", "n"), objective="edp", batch_size=7)
    assert streamed.mapping == whole.mapping
    assert (streamed.space_size, streamed.evaluated, streamed.feasible_evaluated) == (
        whole.space_size,
        whole.evaluated,
        whole.feasible_evaluated,
    )


# ------------------------------------------------------------------------------------------------------
# Brute force: every tiling, every full loop order at both levels, every buffer keep set, as EinsumMappings
# evaluated one by one through simulator.cost.einsum_nest.

TINY_ARCH = {
    "arrays.pe_2d.rows": 2,
    "arrays.pe_2d.cols": 2,
    "levels.global_buffer.capacity_words": 32,
    "levels.global_buffer.access_width_words": 4,
    "levels.dram.bandwidth_bytes_per_s": 1.88e9,  # one word per cycle: DRAM-bound, so loop orders matter
}


def brute_force(e, arch: ArchSpec, spatial: dict[str, int]) -> list[tuple[float, float, bool, bool, bool]]:
    """(latency, energy, feasible, keeps all, same DRAM words as keeping all) of every mapping of the space."""
    sizes = {v: e.var_size(v) // spatial.get(v, 1) for v in e.vars}
    rows = []
    for bounds in itertools.product(*(divisors(sizes[v]) for v in e.vars)):
        buffer = dict(zip(e.vars, bounds, strict=True))
        for dram_order, buffer_order in itertools.product(itertools.permutations(e.vars), repeat=2):
            outer = tuple((v, sizes[v] // buffer[v]) for v in dram_order if sizes[v] > buffer[v])
            middle = tuple((v, buffer[v]) for v in buffer_order if buffer[v] > 1)
            keep_all_dram = None
            for kept in itertools.product((True, False), repeat=len(e.inputs)):
                keep = frozenset(t for t, k in zip(e.inputs, kept, strict=True) if k) | {e.name}
                mapping = EinsumMapping(
                    array="pe_2d",
                    levels=("dram", "global_buffer", "pe_reg_2d"),
                    temporal=(outer, middle, ()),
                    spatial=((("t", spatial["t"]),), (("n", spatial["n"]),)),
                    keep=(frozenset(e.tensors), keep, frozenset(e.tensors)),
                )
                latency, energy, dram, feasible = reevaluate(e, arch, mapping)
                keep_all_dram = dram if keep_all_dram is None else keep_all_dram
                rows.append((latency, energy, feasible, all(kept), dram == keep_all_dram))
    return rows


def best_of(rows, objective: str) -> tuple[float, float]:
    """(primary, secondary) key of the best row: ties on the primary within 1e-12 go to the secondary."""
    keys = [{"latency": (lat, en), "energy": (en, lat), "edp": (lat * en, lat)}[objective] for lat, en, *_ in rows]
    least = min(k[0] for k in keys)
    return least, min(k[1] for k in keys if k[0] <= least * (1 + 1e-12))


@pytest.fixture(scope="module")
def tiny():
    arch = with_overrides(load_arch("fusemax-cloud"), TINY_ARCH)
    e = gemm(8, 6, 4)
    return e, arch, brute_force(e, arch, {"t": 2, "n": 2})


@pytest.mark.parametrize("objective", ["latency", "energy", "edp"])
@pytest.mark.parametrize("bypass", [False, True])
def test_tiny_case_matches_brute_force(tiny, objective, bypass):
    e, arch, rows = tiny
    # Without bypass the buffer keeps everything; with it, bypasses that cost no extra DRAM words count too.
    allowed = [r for r in rows if r[2] and (r[4] if bypass else r[3])]
    best = search_nest(e, arch, "pe_2d", ("t", "n"), objective=objective, bypass=bypass)
    assert best_of([(best.latency_cycles, storage_energy(best))], objective) == pytest.approx(
        best_of(allowed, objective), rel=1e-12
    )
    assert best.space_size < len(rows) / 4  # symmetric orders pruned


# ------------------------------------------------------------------------------------------------------
# Arguments


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"objective": "speed"}, "objective 'speed' is unknown; choose from latency, energy, edp"),
        ({"buffer": "pe_reg_2d"}, "buffer 'pe_reg_2d' is not a shared level between DRAM and pe_2d"),
        ({"spatial": ("t", "x")}, "'x' is not a variable of C; its variables are t, n, k"),
        ({"fixed_outer": ("t", "t")}, "fixed_outer repeats a variable"),
        ({"spatial": ("t", "n", "k")}, "spatial names 3 axes, pe_2d has 2"),
        ({"batch_size": 0}, "batch_size must be an int >= 1"),
        ({"spatial": ("k", None), "e": (1024, 600, 256)}, "k (600 left) does not divide over 256 PEs of axis 0"),
    ],
)
def test_bad_arguments_are_named(kwargs, fragment):
    args = {"spatial": ("t", "n")} | kwargs
    e = gemm(*args.pop("e", (1024, 256, 256)))
    with pytest.raises(SpecError) as info:
        search_nest(e, load_arch("fusemax-cloud"), "pe_2d", **args)
    assert fragment in str(info.value)


def test_every_divisor_is_a_buffer_bound():
    e = gemm(256, 5040 * 4, 256)  # k: 20160 = 2^6 * 315 has 84 divisors, every one a buffer bound
    space = mappers.search.MapSpace.build(
        e, load_arch("fusemax-cloud"), "pe_2d", nest_constraints(e, load_arch("fusemax-cloud"), "pe_2d", ("t", "n"))
    )
    k = e.vars.index("k")
    offered = {
        int(row[1])
        for g in np.flatnonzero(space.group_count[k])
        for row in space.trows[space.group_start[k, g] : space.group_start[k, g] + space.group_count[k, g]]
    }
    assert offered == set(divisors(20160))
    best = search_nest(e, load_arch("fusemax-cloud"), "pe_2d", ("t", "n"))
    assert math.prod(b for v, b in (*best.mapping.temporal[0], *best.mapping.temporal[1]) if v == "k") == 20160


def test_a_repeated_search_is_answered_from_the_first():
    arch = load_arch("fusemax-cloud")
    renamed = with_overrides(arch, {"name": "same-numbers"})
    first = search_nest(gemm(), arch, "pe_2d", ("t", "n"), objective="edp")
    again = search_nest(gemm(), renamed, "pe_2d", ("t", "n"), objective="edp")
    assert again.space.arch.name == "same-numbers" and again.mapping == first.mapping
    assert again.latency_cycles == first.latency_cycles and again.energy_pj == first.energy_pj
    slower = with_overrides(arch, {"levels.dram.bandwidth_bytes_per_s": 1e9})  # other costs: searched anew
    assert search_nest(gemm(), slower, "pe_2d", ("t", "n"), objective="edp").latency_cycles > first.latency_cycles


def test_doctest():
    assert doctest.testmod(mappers.search).failed == 0
