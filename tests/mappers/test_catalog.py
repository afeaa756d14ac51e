"""The mapper registry: every registered cascade gets a design on every target kind, through one flow."""

import doctest

import pytest

import mappers.base as base_module
from attnscope.api import evaluate
from einsum.errors import AttnscopeError
from mappers.base import MAPPERS, MapperError, choose_mapper
from simulator.targets import load_target
from workloads import CASCADES
from workloads.cases import make_case

TARGETS = ("fusemax-cloud", "flat-edge", "h100-sxm", "orin-agx")
SHAPE = {"B": 1, "H": 4, "M": 1024, "E": 64, "F": 64}


def test_module_doctests():
    assert doctest.testmod(base_module).failed == 0


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", list(CASCADES))
def test_every_registered_cascade_has_a_sane_design_on_every_target_kind(name, target):
    case = make_case(name, {k: v for k, v in SHAPE.items() if k in CASCADES[name].cascade.ranks})
    d = evaluate(case, target)  # no skip: a cascade without a design on a target fails here
    assert d.target_kind == load_target(target).kind
    assert d.latency_s > 0 and d.dram_bytes > 0
    assert 0.0 <= d.utilization <= 1.0 + 1e-9
    assert d.spill_bytes >= 0.0 and d.onchip_bytes >= 0.0
    t = load_target(target)
    if t.kind == "arch":
        assert d.energy_j > 0 and d.area_mm2 > 0
        assert d.latency_s >= d.detail.memory_s * (1 - 1e-9)  # never below its own DRAM time
    else:
        assert d.energy_j is None and d.area_mm2 is None
        assert d.latency_s >= d.detail.roofline_s * (1 - 1e-9)
    assert set(d.to_dict()) >= {"latency_s", "bound", "dram_bytes", "energy_j", "area_mm2", "utilization",
                                "feasible", "onchip_bytes", "spill_bytes", "mapping", "target", "workload",
                                "shape"}  # fmt: skip


def test_every_registered_mapper_has_a_known_kind_and_runs_somewhere():
    assert {m.kind for m in MAPPERS.values()} == {"arch", "device"}
    auto = {m.kind for m in MAPPERS.values() if m.auto}
    assert auto == {"arch", "device"}


@pytest.mark.parametrize(
    ("workload", "mapper", "fragment"),
    [
        ("linear-attention", "fusemax-binding", "written for the Einsums of the 'fusemax' cascade"),
        ("gqa", "flat", "written for the Einsums of the 'attention-3pass' cascade"),
        ("fusemax", "kernel", "maps onto devices"),
        ("fusemax", "nonesuch", "unknown mapper"),
    ],
)
def test_a_template_that_does_not_fit_is_a_clear_error_never_another_workloads_numbers(workload, mapper, fragment):
    case = make_case(workload, {"M": 1024})
    with pytest.raises(AttnscopeError) as info:
        choose_mapper(case, load_target("fusemax-cloud"), mapper)
    assert fragment in str(info.value)


def test_the_study_templates_need_the_study_arrays(tmp_path):
    from simulator.specs import load_arch, with_overrides

    narrow = with_overrides(load_arch("fusemax-cloud"), {"arrays.pe_1d.pes": 64})
    with pytest.raises(MapperError, match="narrower than the 2-D array"):
        choose_mapper(make_case("fusemax", {"M": 1024}), load_target(narrow), "fusemax-binding")


def test_a_template_on_its_own_cascade_matches_the_default_search_or_loses():
    shape = {"B": 64, "H": 12, "M": 4096, "E": 64, "F": 64}
    template = evaluate("fusemax", "fusemax-cloud", shape=shape, mapper="fusemax-binding")
    searched = evaluate("fusemax", "fusemax-cloud", shape=shape)
    assert searched.mapper == "fused" and searched.latency_s <= template.latency_s * (1 + 1e-12)


@pytest.mark.parametrize("workload", ["attention-3pass", "attention-2pass", "fusemax"])
def test_a_one_d_array_narrower_than_the_two_d_columns_is_mapped_not_a_crash(workload):
    from simulator.specs import load_arch, with_overrides

    narrow = with_overrides(load_arch("fusemax-cloud"), {"arrays.pe_1d.pes": 64})
    d = evaluate(workload, narrow, shape={"H": 4, "M": 4096})
    wide = evaluate(workload, "fusemax-cloud", shape={"H": 4, "M": 4096})
    assert d.feasible and d.latency_s >= wide.latency_s * (1 - 1e-9)  # fewer PEs are never faster


def test_a_mapping_that_loops_a_variable_twice_in_one_level_is_refused():
    from einsum.lower import lower
    from simulator.cost import evaluate_cascade
    from simulator.mapping import mapping_from_dict

    d = evaluate("attention-1pass", "flat-edge", shape={"H": 2, "M": 1024})
    data = {k: v for k, v in d.mapping.items() if k != "shape"}
    level = data["einsums"]["QK"]["temporal"]["global_buffer"]
    level.append(list(level[0]))  # the same variable again in the same level
    case = make_case("attention-1pass", d.shape)
    with pytest.raises(AttnscopeError, match="looped over twice"):
        evaluate_cascade(lower(case.cascade, dict(case.sizes)), load_target("flat-edge").spec, mapping_from_dict(data))
