"""simulator.cost.cascade_plan: a plan made on one spec costs every spec of its structure as a fresh evaluation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from einsum.lower import lower
from mappers.flat import flat_choices, flat_mapping
from mappers.fusemax import fusemax_mapping
from simulator import cost
from simulator.cost import (
    _capacities,
    _fit,
    _nest_fits,
    _nest_uncached,
    cascade_plan,
    evaluate_cascade,
    spec_structure,
)
from simulator.specs import load_arch, with_overrides
from workloads import get_cascade

BERT = {"B": 2, "H": 2, "E": 64, "F": 64}


def _fresh(lowered, arch, mapping):
    """The cost with no plan cached (as before plans existed: everything derived from this spec)."""
    saved = dict(cost._PLAN_CACHE)
    cost._PLAN_CACHE.clear()
    try:
        return evaluate_cascade(lowered, arch, mapping)
    finally:
        cost._PLAN_CACHE.clear()
        cost._PLAN_CACHE.update(saved)


NUMBERS = st.fixed_dictionaries(
    {
        "levels.global_buffer.capacity_words": st.integers(2**10, 2**24),
        "levels.dram.bandwidth_bytes_per_s": st.floats(1e10, 4e12),
        "clock_hz": st.floats(2e8, 2e9),
    }
)


@settings(max_examples=25, deadline=None)
@given(numbers=NUMBERS)
def test_flat_spilling_mapping_costs_as_fresh_on_every_spec_of_the_structure(numbers):
    base = load_arch("flat-cloud")
    lowered = lower(get_cascade("attention-3pass").cascade, {**BERT, "M": 1024, "P": 1024})
    choice = next(c for c in flat_choices(1024, 256) if c.stationarity == "output" and c.on_chip)
    mapping = flat_mapping(lowered, base, choice)
    evaluate_cascade(lowered, base, mapping)  # the plan, built on the base spec
    arch = with_overrides(base, numbers)
    assert evaluate_cascade(lowered, arch, mapping) == _fresh(lowered, arch, mapping)


@settings(max_examples=25, deadline=None)
@given(numbers=NUMBERS, reg_words=st.integers(1, 64))
def test_fusemax_mapping_costs_as_fresh_including_infeasible_nests(numbers, reg_words):
    base = load_arch("fusemax-cloud")
    lowered = lower(get_cascade("fusemax").cascade, {**BERT, "M": 1024, "P": 1024, "M0": 256})
    mapping = fusemax_mapping("binding", lowered, base, 4)
    evaluate_cascade(lowered, base, mapping)
    arch = with_overrides(base, {**numbers, "levels.pe_reg_2d.capacity_words": reg_words})
    got = evaluate_cascade(lowered, arch, mapping)
    assert got == _fresh(lowered, arch, mapping)
    if reg_words < 3:  # QK's PE registers hold a word of Q, K and the score: too few words is infeasible
        assert not got.feasible and any("pe_reg_2d" in p for p in got.infeasible)


def test_a_plan_is_shared_by_specs_that_differ_in_numbers_only():
    base = load_arch("fusemax-cloud")
    lowered = lower(get_cascade("fusemax").cascade, {**BERT, "M": 1024, "P": 1024, "M0": 256})
    mapping = fusemax_mapping("binding", lowered, base, 4)
    other = with_overrides(base, {"levels.global_buffer.capacity_words": 12345, "clock_hz": 1e9})
    assert spec_structure(other) == spec_structure(base)
    assert cascade_plan(lowered, other, mapping) is cascade_plan(lowered, base, mapping)
    smaller = with_overrides(base, {"arrays.pe_1d.pes": 128})
    assert spec_structure(smaller) != spec_structure(base)


@pytest.mark.parametrize(("buffer", "regs"), [(256, 1), (4096, 2), (2**14, 3), (2**20, 64), (2**22, 64)])
def test_nest_fits_is_the_kernels_feasibility(buffer, regs):
    base = load_arch("fusemax-cloud")
    arch = with_overrides(base, {"levels.global_buffer.capacity_words": buffer,
                                 "levels.pe_reg_2d.capacity_words": regs})  # fmt: skip
    lowered = lower(get_cascade("fusemax").cascade, {**BERT, "M": 1024, "P": 1024, "M0": 256})
    mapping = fusemax_mapping("binding", lowered, base, 4)
    for e in lowered.einsums:
        em = mapping.einsums[e.name]
        bounded = _nest_uncached(e, arch, em)
        unbounded = _nest_uncached(e, arch, em, unbounded=True)
        assert _nest_fits(_fit(unbounded, em), _capacities(arch)) == bool(bounded.feasible[0])
