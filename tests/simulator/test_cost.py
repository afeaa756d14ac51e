"""The cascade cost model: hand-derived values, physical direction, invariants over random mappings."""

import ast
import math
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from einsum.errors import SpecError
from einsum.lower import lower
from mappers.flat import flat_choices, flat_mapping
from mappers.fusemax import fusemax_family, fusemax_mapping
from mappers.templates import divisors
from simulator.cost import evaluate_cascade
from simulator.specs import load_arch, with_overrides
from workloads import get_cascade

BERT = {"B": 64, "H": 12, "E": 64, "F": 64}


def bert(seq):
    return {**BERT, "M": seq, "P": seq}


def test_fusemax_binding_matches_the_hand_derivation():
    # fusemax-study.md §C.1 worked example, derived by hand from the Einsums: X = N / 65536 cycles per sweep.
    arch = with_overrides(load_arch("fusemax-cloud"), {"compat": "fusemax-artifact"})
    design = fusemax_family("binding", arch, bert(1024))
    x = 64 * 12 * 1024 * 1024 / 65536
    assert design.cost.latency_s == pytest.approx(154 * x / arch.clock_hz, rel=1e-12)
    unit = 2 * 64 * 12 * 1024 * 64  # bytes of Q (= K = V = AV)
    assert design.cost.dram_bytes == pytest.approx(4 * unit, rel=1e-12)
    assert design.cost.utilization["pe_2d"] == pytest.approx(137 / 154)
    assert design.cost.utilization["pe_1d"] == pytest.approx(1.0)
    assert design.cost.einsum_utilization["QK"] == pytest.approx(64 / 154)


def test_largest_query_tile_that_fits_is_chosen():
    arch = load_arch("fusemax-cloud")
    design = fusemax_family("binding", arch, bert(1 << 20))
    # per query: Q (64) + RM + RD + RNV (64) words; K and V tiles of 256 x 64 each
    proposed = (arch.level("global_buffer").capacity_words - 2 * 256 * 64) // (130 * 256)
    best = max(d for d in divisors(4096) if d <= proposed)
    assert design.mapping.name.endswith(f"P1={best}")


def test_flat_three_pass_is_compute_bound_on_the_1d_array_at_1k():
    arch = load_arch("flat-cloud")
    lowered = lower(get_cascade("attention-3pass").cascade, bert(1024))
    choice = next(c for c in flat_choices(1024, 256) if c.stationarity == "output" and not c.on_chip)
    cost = evaluate_cascade(lowered, arch, flat_mapping(lowered, arch, choice))
    n = 64 * 12 * 1024 * 1024
    assert cost.latency_s == pytest.approx(4 * n / 256 / arch.clock_hz)  # four softmax Einsums, one cycle each
    assert cost.utilization["pe_1d"] == pytest.approx(1.0)


@pytest.mark.parametrize("config", ["cascade", "arch", "binding"])
def test_smaller_array_is_slower_and_slower_dram_never_helps(config):
    sizes = bert(16384)
    base = fusemax_family(config, load_arch("fusemax-cloud"), sizes).cost
    small = with_overrides(load_arch("fusemax-cloud"), {"arrays.pe_2d.rows": 128, "arrays.pe_2d.cols": 128,
                                                        "arrays.pe_1d.pes": 128})  # fmt: skip
    slow_dram = with_overrides(load_arch("fusemax-cloud"), {"levels.dram.bandwidth_bytes_per_s": 200 * 2**30})
    assert fusemax_family(config, small, sizes).cost.latency_s > base.latency_s
    slower = fusemax_family(config, slow_dram, sizes).cost
    assert slower.latency_s >= base.latency_s
    assert slower.memory_s == pytest.approx(2 * base.memory_s)


def test_half_bandwidth_doubles_memory_bound_latency():
    arch = load_arch("flat-cloud")
    lowered = lower(get_cascade("attention-3pass").cascade, bert(1 << 18))
    choice = next(c for c in flat_choices(1 << 18, 256) if c.stationarity == "weight" and c.p1 == 1024
                  and c.on_chip == frozenset({"Q", "AV"}))  # fmt: skip
    mapping = flat_mapping(lowered, arch, choice)
    fast = evaluate_cascade(lowered, arch, mapping)
    slow = evaluate_cascade(lowered, with_overrides(arch, {"levels.dram.bandwidth_bytes_per_s": 200 * 2**30}), mapping)
    assert fast.memory_s > fast.compute_bound_s  # memory-bound at 256K
    assert slow.latency_s == pytest.approx(2 * fast.latency_s)
    assert slow.dram_bytes == fast.dram_bytes


def test_bigger_buffer_means_fewer_kv_rereads():
    sizes = bert(1 << 18)
    small = fusemax_family("binding", load_arch("fusemax-cloud"), sizes).cost
    big_arch = with_overrides(load_arch("fusemax-cloud"), {"levels.global_buffer.capacity_words": 4 * 8388608})
    assert fusemax_family("binding", big_arch, sizes).cost.dram_bytes < small.dram_bytes


def test_no_study_constant_in_the_cost_model_code():
    study = {256, 940, 940e6, 400, 400 * 2**30, 16 * 2**20, 8 * 2**20, 65536}
    root = Path(__file__).resolve().parents[2] / "simulator"
    for name in ("cost.py", "nest.py", "mapping.py"):
        tree = ast.parse((root / name).read_text())
        numbers = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and type(n.value) in (int, float)}
        assert not numbers & study, (name, numbers & study)


@st.composite
def fusemax_points(draw):
    config = draw(st.sampled_from(["cascade", "arch", "binding"]))
    width = draw(st.sampled_from([16, 32, 64]))
    seq = width * draw(st.sampled_from([1, 2, 4, 8, 16]))
    e = draw(st.sampled_from([16, 32, 64]))
    sizes = {"B": draw(st.integers(1, 4)), "H": draw(st.integers(1, 4)), "E": e, "F": e, "M": seq, "P": seq}
    arch = with_overrides(
        load_arch("fusemax-cloud" if config != "cascade" else "flat-cloud"),
        {
            "arrays.pe_2d.rows": width,
            "arrays.pe_2d.cols": width,
            "arrays.pe_1d.pes": width,
            "levels.global_buffer.capacity_words": draw(st.sampled_from([2**12, 2**14, 2**16, 2**20])),
            "levels.dram.bandwidth_bytes_per_s": draw(st.sampled_from([1e9, 1e11, 4e11, 4e12])),
        },
    )
    lowered = lower(get_cascade("fusemax").cascade, {**sizes, "M0": width})
    p1 = draw(st.sampled_from(divisors(seq // width)))
    return config, arch, lowered, fusemax_mapping(config, lowered, arch, p1)


@settings(max_examples=40, deadline=None)
@given(fusemax_points())
def test_invariants_over_random_mappings(point):
    _, arch, lowered, mapping = point
    cost = evaluate_cascade(lowered, arch, mapping)
    bw = arch.level("dram").bandwidth_bytes_per_s
    roofline = max(cost.compute_bound_s, cost.dram_bytes / bw)
    assert cost.latency_s >= roofline * (1 - 1e-12)
    assert all(0 <= u <= 1 + 1e-12 for u in cost.utilization.values())
    compulsory = sum(lowered.tensor_words[t] for t in (*lowered.inputs, *lowered.outputs)) * arch.word_bytes
    assert cost.dram_bytes >= compulsory * (1 - 1e-12)
    occupancy = cost.buffer_occupancy_words[0]
    assert cost.feasible == (occupancy <= arch.level("global_buffer").capacity_words)
    assert cost.energy_pj > 0 and math.isfinite(cost.energy_pj)


def test_a_mapping_whose_factors_do_not_cover_a_rank_is_rejected():
    arch = load_arch("fusemax-cloud")
    lowered = lower(get_cascade("fusemax").cascade, {**bert(1024), "M0": 256})
    mapping = fusemax_mapping("binding", lowered, arch, 4)
    lowered_bigger = lower(get_cascade("fusemax").cascade, {**bert(1024), "E": 128, "M0": 256})
    with pytest.raises(SpecError, match=r"einsums\.QK: the bounds of e multiply to 64, its rank has size 128"):
        evaluate_cascade(lowered_bigger, arch, mapping)


@pytest.mark.parametrize("bad", [0, -2, 2.5, True])
def test_a_loop_bound_that_is_not_a_positive_integer_is_rejected(bad):
    """The cascade check covers what the nest kernel's own input check would (the plan's nests skip it): a bound of
    0, a negative pair that still multiplies to the rank size, a fraction, a bool."""
    arch = load_arch("fusemax-cloud")
    lowered = lower(get_cascade("fusemax").cascade, {**bert(1024), "M0": 256})
    mapping = fusemax_mapping("binding", lowered, arch, 4)
    qk = mapping.einsums["QK"]
    level = next(i for i, loops in enumerate(qk.temporal) if loops)
    var, bound = qk.temporal[level][0]
    loops = ((var, bad), (var, bound)) if bad == -2 else ((var, bad),)
    temporal = (*qk.temporal[:level], loops + qk.temporal[level][1:], *qk.temporal[level + 1 :])
    broken = replace(mapping, einsums={**mapping.einsums, "QK": replace(qk, temporal=temporal)})
    with pytest.raises(SpecError, match=rf"einsums\.QK\.temporal\[{level}\]: {var} has bound {bad!r}"):
        evaluate_cascade(lowered, arch, broken)


@settings(max_examples=30, deadline=None)
@given(
    seq=st.sampled_from([256, 512, 1024, 2048]),
    pick=st.integers(0, 10**6),
    capacity=st.sampled_from([2**16, 2**18, 2**20, 2**24]),
    bandwidth=st.sampled_from([1e10, 4e11, 4e12]),
)
def test_invariants_over_random_flat_choices(seq, pick, capacity, bandwidth):
    arch = with_overrides(
        load_arch("flat-cloud"),
        {"levels.global_buffer.capacity_words": capacity, "levels.dram.bandwidth_bytes_per_s": bandwidth},
    )
    sizes = {"B": 2, "H": 2, "E": 64, "F": 64, "M": seq, "P": seq}
    lowered = lower(get_cascade("attention-3pass").cascade, sizes)
    choices = flat_choices(seq, 256)
    cost = evaluate_cascade(lowered, arch, flat_mapping(lowered, arch, choices[pick % len(choices)]))
    assert cost.latency_s >= max(cost.compute_bound_s, cost.dram_bytes / bandwidth) * (1 - 1e-12)
    assert all(0 <= u <= 1 + 1e-12 for u in cost.utilization.values())
    compulsory = sum(lowered.tensor_words[t] for t in ("Q", "K", "V", "AV")) * 2
    assert cost.dram_bytes >= compulsory * (1 - 1e-12)
    assert all(0 <= ps < 1 for ps in cost.spill_fraction)
    if cost.spill_fraction[0] > 0:  # overflowing occupancy is charged, never ignored
        assert cost.buffer_occupancy_words[0] > capacity
