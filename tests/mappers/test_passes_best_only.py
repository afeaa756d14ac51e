"""The multi-pass search's best-only mode (mappers.passes.iter_pass_designs ``best_only``): the same best design
as the full search, and the compute bound it prunes with holds on every design of the space."""

from __future__ import annotations

from dataclasses import replace

import pytest

from einsum.lower import lower
from mappers.cascade_search import search_passes
from mappers.passes import (
    choice_compute_s,
    fits_buffer,
    fits_sizing_rule,
    pass_choices,
    pass_mapping,
    plan_passes,
)
from simulator.cost import evaluate_cascade, phase_occupancy
from simulator.specs import load_arch, with_overrides
from validate.fusemax.study import SEQ_LENS, attention_sizes
from workloads import get_cascade

SMALL_BUFFER = with_overrides(load_arch("fusemax-cloud"), {"levels.global_buffer.capacity_words": 1 << 16})
"""fusemax-cloud with a 64K-word buffer: most designs spill, the fastest ones are memory-bound."""

CASES = [
    ("fusemax-cloud", "attention-3pass", "BERT", "1K"),
    ("fusemax-cloud", "attention-3pass", "BERT", "16K"),
    ("fusemax-cloud", "attention-3pass", "BERT", "256K"),
    ("fusemax-cloud", "attention-3pass-causal", "BERT", "64K"),
    ("fusemax-cloud", "attention-2pass-causal", "BERT", "4K"),
    ("fusemax-cloud", "attention-2pass", "TrXL", "1M"),
    ("flat-cloud", "attention-3pass", "TrXL", "64K"),
    ("flat-cloud", "attention-2pass", "BERT", "16K"),
    ("flat-edge", "attention-3pass", "BERT", "4K"),
    ("flat-edge", "attention-3pass-causal", "T5", "256K"),
    ("small-buffer", "attention-3pass", "BERT", "4K"),
    ("small-buffer", "attention-2pass", "BERT", "64K"),
]


def _arch(name: str):
    return SMALL_BUFFER if name == "small-buffer" else load_arch(name)


def _lowered(cascade: str, model: str, seq: str):
    return lower(get_cascade(cascade).cascade, attention_sizes(model, SEQ_LENS[seq]))


@pytest.mark.parametrize("arch,cascade,model,seq", CASES, ids=lambda x: x)
def test_best_only_finds_the_full_searchs_best_design(arch, cascade, model, seq):
    low, spec = _lowered(cascade, model, seq), _arch(arch)
    full = search_passes(low, spec)["best"]
    found = search_passes(low, spec, best_only=True)
    assert set(found) == {"best"}
    best = found["best"]
    assert best.description == full.description
    assert best.mapping == full.mapping
    assert (best.cost.feasible, best.cost.latency_s, best.cost.energy_pj) == (
        full.cost.feasible,
        full.cost.latency_s,
        full.cost.energy_pj,
    )
    assert best.evaluated <= full.evaluated


@pytest.mark.parametrize(
    "arch,cascade,model,seq,stride",
    [
        ("fusemax-cloud", "attention-3pass-causal", "BERT", "1K", 1),  # every choice
        ("fusemax-cloud", "attention-2pass", "BERT", "256K", 7),
        ("small-buffer", "attention-3pass", "BERT", "16K", 5),
        ("flat-edge", "attention-3pass", "TrXL", "64K", 5),
    ],
    ids=str,
)
def test_the_compute_bound_holds_on_every_design(arch, cascade, model, seq, stride):
    """Every choice (every query block, not only those the search picks; a stride samples the larger spaces):
    the compute time from the loop nests is the cost model's own (same floats), it does not depend on the primary
    tensors kept on chip, and no design is faster than its busiest array computes."""
    low, spec = _lowered(cascade, model, seq), _arch(arch)
    plan = plan_passes(low, spec)
    choices = pass_choices(plan, spec, pairing="searched")
    plain = {}
    for c in choices:
        if not c.on_chip:
            cost = evaluate_cascade(low, spec, pass_mapping(plan, spec, c))
            plain[c.fusion, c.dataflow, c.binding, c.p1] = dict(cost.compute_s_by_array)
    for c in choices[::stride]:
        mapping = pass_mapping(plan, spec, c)
        cost = evaluate_cascade(low, spec, mapping)
        compute = choice_compute_s(plan, spec, c.fusion, c.dataflow, c.binding, c.p1)
        assert compute == dict(cost.compute_s_by_array), c
        assert compute == plain[c.fusion, c.dataflow, c.binding, c.p1], c
        assert cost.latency_s >= max(compute.values()) * (1 - 1e-9), c


@pytest.mark.parametrize("arch,cascade,model,seq", [CASES[1], CASES[4], CASES[10]], ids=str)
def test_the_fit_tests_are_the_occupancy_with_and_without_the_hand_offs(arch, cascade, model, seq):
    """The search's fit tests read the memoized occupancy parts: FLAT's sizing rule is the occupancy of the mapping
    with no hand-off placed in the buffer, the buffer test the cost model's own occupancy."""
    low, spec = _lowered(cascade, model, seq), _arch(arch)
    plan = plan_passes(low, spec)
    capacity = spec.level(plan.buffer).capacity_words
    seen = set()
    for c in pass_choices(plan, spec, pairing="searched")[::3]:
        mapping = pass_mapping(plan, spec, c)
        no_handoff = replace(mapping, placement={t: p for t, p in mapping.placement.items() if p != plan.buffer})
        rule = phase_occupancy(low, no_handoff, mapping.phases[0], plan.buffer) <= capacity
        assert fits_sizing_rule(plan, spec, mapping) == rule, c
        cost = evaluate_cascade(low, spec, mapping)
        assert fits_buffer(plan, spec, mapping) == all(w <= capacity for w in cost.buffer_occupancy_words), c
        seen.add((rule, fits_buffer(plan, spec, mapping)))
    assert len(seen) > 1  # the cases hold designs on both sides of the tests
