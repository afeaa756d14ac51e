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
