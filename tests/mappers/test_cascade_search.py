"""Tests of mappers.cascade_search: from cascade + architecture alone, FuseMax- and FLAT-class designs."""

from __future__ import annotations

import pytest

from einsum.lower import lower
from mappers.cascade_search import plan_fused, schedules, search_fused, search_passes
from mappers.fusemax import FUSEMAX_BINDINGS, FUSEMAX_SCHEDULES
from validate.fusemax.study import attention_sizes, study_arch
from workloads import get_cascade

# Published latencies, seconds (FuseMax artifact, results/attn-binding.csv and attn-flat.csv, BERT at 1K).
PUBLISHED_BINDING_BERT_1K = 0.002013140425531915
PUBLISHED_FLAT_BERT_1K = 0.013386076595744681


@pytest.fixture(scope="module")
def plan():
    return plan_fused(get_cascade("fusemax").cascade, attention_sizes("BERT", 1024), study_arch("binding", True))


def test_the_plan_is_derived_from_the_cascade(plan):
    assert (plan.tile_var, plan.inner_var, plan.query_var) == ("m1", "m0", "p")
    assert plan.state == {"RM", "RD", "RNV"}  # read by the next tile
    assert plan.tails == {"RD", "RNV", "AV"}  # read only by the next tile or after the loop
    assert plan.producers["SLN"] == ("QK", "RM") and plan.carried_readers["RD"] == ("SPD",)
    assert plan.arrays["AV"] == ("pe_1d",)  # only the 1-D array divides
    assert set(plan.arrays["QK"]) == {"pe_2d", "pe_1d"}


def check_schedule(plan, binding, stages) -> None:
    """Independent check of the schedule rules: producers first (a later stage across arrays), tails moved
    to the next tile still before their readers there."""
    stage = {e: k for k, s in enumerate(stages) for es in s.values() for e in es}
    assert sorted(stage) == sorted(plan.order)
    for e in plan.order:
        for p in plan.producers[e]:
            need = stage[p] + (binding[p] != binding[e])
            if stage[e] < need:
                assert e in plan.tails, (e, p)
                for r in plan.carried_readers[e]:
                    assert stage[r] >= stage[e] + (binding[r] != binding[e]), (e, r)
    for s in stages:
        for array, es in s.items():
            assert all(binding[e] == array for e in es)


def test_schedules_obey_the_rules_and_beat_or_match_the_studys(plan):
    ranked, complete = schedules(plan, 8)
    assert complete >= len(ranked)
    cycles = [c for c, _, _ in ranked]
    assert cycles == sorted(cycles)
    for _, binding, stages in ranked:
        check_schedule(plan, binding, stages)
    study = FUSEMAX_SCHEDULES["binding"]
    binding = {e: FUSEMAX_BINDINGS["binding"].get(e, "pe_1d") for e in plan.order}
    check_schedule(plan, binding, study.stages)  # the study's own schedule is in the searched space
    study_cycles = sum(max(sum(plan.cycles[e, a] for e in es) for a, es in s.items()) for s in study.stages)
    assert cycles[0] <= study_cycles


def test_fusemax_search_is_no_slower_than_the_published_binding():
    best, designs = search_fused(
        get_cascade("fusemax").cascade, attention_sizes("BERT", 1024), study_arch("binding", True)
    )
    assert best.cost.feasible
    assert best.cost.latency_s <= PUBLISHED_BINDING_BERT_1K * 1.02
    assert all(best.cost.latency_s <= d.cost.latency_s for d in designs)
    assert best.mapping.name.startswith("fused-P1=")


def test_flat_choice_search_finds_flat_within_5_percent():
    arch = study_arch("flat", True)
    lowered = lower(get_cascade("attention-3pass").cascade, attention_sizes("BERT", 1024))
    found = search_passes(lowered, arch, row_blocks=(1, 2, 4), pairing="flat", policy="study")
    assert found["flat_policy"].cost.latency_s == pytest.approx(PUBLISHED_FLAT_BERT_1K, rel=0.05)
    assert found["flat_policy"].description.startswith("FLAT: output-stationary")
    # searching blocks, bindings (the row sums on FLAT's 2-D adders) and dataflows finds faster designs
    assert search_passes(lowered, arch)["best"].cost.latency_s <= found["flat_policy"].cost.latency_s
