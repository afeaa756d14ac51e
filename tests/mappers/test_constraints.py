"""Tests of mappers.constraints: every problem named with its key and the allowed values; constraints obeyed."""

from __future__ import annotations

import doctest

import pytest

import mappers.constraints
from attnscope.cli import main
from einsum.errors import SpecError
from einsum.lower import lower
from mappers.constraints import constraints_from_dict, read_constraints
from mappers.search import search
from mappers.space import MapSpace
from tests.mappers.test_validator import THREE, gemm, independent_problems, small_arch
from workloads import get_cascade


@pytest.mark.parametrize(
    ("data", "fragments"),
    [
        ({"target": []}, ["target: unknown key; allowed keys: levels, imperfect, max_padding"]),
        ({"targets": [{"target": "dram", "type": "tempral"}]}, ["type: unknown type 'tempral'; allowed: temporal, sp"]),
        ({"targets": [{"target": "dram"}]}, ["targets[0].type: missing; allowed: temporal, spatial, bypass"]),
        (
            {"targets": [{"target": "dram", "type": "bypass", "factors": {"k": 2}}]},
            ["targets[0].factors: unknown key for a bypass target; allowed keys: target, type, keep, bypass"],
        ),
        (
            {"targets": [{"target": "dram", "type": "temporal", "factors": {"k": 0, "t": "4"}}]},
            ["2 problems", "factors.k: expected a positive integer bound, got 0", "factors.t: expected a positive"],
        ),
        ({"imperfect": "yes"}, ["imperfect: expected true or false, got 'yes'"]),
        ({"spatial_ranks_per_axis": 5}, ["spatial_ranks_per_axis: expected 1, 2 or 3, got 5"]),
        (
            {"targets": [{"target": "pe_2d", "type": "spatial", "min_utilization": 2}]},
            ["targets[0].min_utilization: expected a fraction in 0..1, got 2"],
        ),
        ({"targets": [{"type": "temporal", "outer": "k"}]}, ["targets[0].target: expected a level or array name"]),
    ],
)
def test_structural_problems_name_the_key_and_what_is_allowed(data, fragments):
    with pytest.raises(SpecError) as info:
        constraints_from_dict(data, "c.yaml")
    for fragment in fragments:
        assert fragment in str(info.value)
    assert str(info.value).startswith("c.yaml: ")


BAD_LINES = """\
targets:
  - target: dram
    type: temporal
    factors: {k: 0}
  - {target: global_buffer, type: tempral}
imperfect: 3
"""


def test_problems_in_a_constraints_file_name_their_lines(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(BAD_LINES)
    with pytest.raises(SpecError) as info:
        read_constraints(path)
    assert str(info.value) == (
        f"{path}: 3 problems in the constraints:\n"
        f"{path}:6: imperfect: expected true or false, got 3\n"
        f"{path}:4: targets[0].factors.k: expected a positive integer bound, got 0\n"
        f"{path}:5: targets[1].type: unknown type 'tempral'; allowed: temporal, spatial, bypass"
    )
    argv = ["map", "--arch", "flat-edge", "--workload", "gemm", "--shape", "T=64,K=64,N=64", "--constraints", str(path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{path}:4: targets[0].factors.k" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("targets", "fragment"),
    [
        (
            [{"target": "dram", "type": "temporal", "factors": {"x": 2}}],
            "factors.x: unknown variable 'x'; variables of QK: b, h, m, p, e",
        ),
        (
            [{"target": "dram", "type": "temporal", "factors": {"T": 2}}],
            "unknown variable 'T'; 'T' is a rank, loops are over variables: use 't'",
        ),
        (
            [{"target": "sram", "type": "temporal", "outer": ["t"]}],
            "targets[0].target: unknown level 'sram'; levels of the nest: dram, global_buffer, pe_reg_2d",
        ),
        (
            [{"target": "global_buffer", "type": "bypass", "keep": ["D"]}],
            "targets[0].keep: unknown tensor 'D'; tensors of C: C, A, B",
        ),
        ([{"target": "dram", "type": "bypass", "bypass": ["A"]}], "the outermost level 'dram' holds every tensor"),
        (
            [{"target": "pe_1d", "type": "spatial", "factors": {"t": 4}}],
            "targets[0].target: 'pe_1d' is not the array C is mapped on; use 'pe_2d'",
        ),
        (
            [{"target": "pe_2d", "type": "spatial", "axes": {"x": ["t"]}}],
            "targets[0].axes.x: unknown axis; axes of pe_2d: rows, cols (or 0..1)",
        ),
        (
            [{"target": "global_buffer", "type": "temporal", "factors": {"k": 5}}],
            "factors of k: the fixed factors multiply to 5, which does not divide k's size 8",
        ),
        (
            [{"target": "global_buffer", "type": "temporal", "outer": ["k"], "permutation": ["k"]}],
            "k required both outermost and innermost",
        ),
    ],
)
def test_binding_problems_name_the_key_and_what_is_allowed(targets, fragment):
    c = constraints_from_dict({"targets": targets}, "c.yaml")
    if targets[0].get("factors", {}).get("x"):
        sizes = {"B": 1, "H": 1, "M": 16, "P": 16, "E": 8, "F": 8}
        e = lower(get_cascade("attention-3pass").cascade, sizes).einsum("QK")
    else:
        e = gemm(16, 8, 8)
    with pytest.raises(SpecError) as info:
        MapSpace.build(e, small_arch(), "pe_2d", c, levels=THREE)
    assert fragment in str(info.value)


def test_all_binding_problems_come_together():
    c = constraints_from_dict(
        {"targets": [{"target": "sram", "type": "temporal"}, {"target": "dram", "type": "temporal", "outer": ["x"]}]}
    )
    with pytest.raises(SpecError) as info:
        MapSpace.build(gemm(16, 8, 8), small_arch(), "pe_2d", c, levels=THREE)
    message = str(info.value)
    assert "2 problems binding the constraints to C on pe_2d" in message
    assert "unknown level 'sram'" in message and "unknown variable 'x'" in message


def test_unsatisfiable_constraints_name_the_level_and_the_smallest_footprint():
    c = constraints_from_dict(
        {
            "targets": [
                {"target": "pe_2d", "type": "spatial", "factors": {"t": 4, "n": 4}},
                {"target": "global_buffer", "type": "bypass", "keep": ["C"]},
            ]
        }
    )
    with pytest.raises(SpecError) as info:
        MapSpace.build(gemm(16, 8, 8), small_arch(4, 4, buffer=8), "pe_2d", c, levels=THREE)
    assert (
        "no mapping of C on pe_2d fits level 'global_buffer': its smallest footprint under these constraints is "
        "16 words (C 16), its capacity 8 words per instance" in str(info.value)
    )
    with pytest.raises(SpecError) as info:
        MapSpace.build(gemm(16, 8, 8), small_arch(4, 4, regs=2), "pe_2d", levels=THREE)
    assert "fits level 'pe_reg_2d': its smallest footprint under these constraints is 3 words (C 1, A 1, B 1)" in str(
        info.value
    )
    # Opening the registers to bypass makes the same architecture mappable.
    opened = constraints_from_dict({"targets": [{"target": "pe_reg_2d", "type": "bypass", "keep": ["C"]}]})
    space = MapSpace.build(gemm(16, 8, 8), small_arch(4, 4, regs=2), "pe_2d", opened, levels=THREE)
    assert independent_problems(space.einsum, space.arch, search(space, method="random", budget=2000).mapping) == []


CONSTRAINED = """
levels: [dram, global_buffer, pe_reg_2d]
targets:
  - {target: dram, type: temporal, factors: {b: 2, h: 3}, outer: [b, h]}
  - {target: global_buffer, type: temporal, factors: {e: 1}, permutation: [m, p]}
  - {target: global_buffer, type: bypass, keep: [K, QK], bypass: [Q]}
  - {target: pe_2d, type: spatial, axes: {rows: [m], cols: [p]}, min_utilization: 0.5}
"""


@pytest.mark.parametrize("method", ["exhaustive", "random", "anneal"])
def test_results_obey_the_constraints(tmp_path, method):
    path = tmp_path / "c.yaml"
    path.write_text(CONSTRAINED)
    c = read_constraints(path)
    sizes = {"B": 2, "H": 3, "M": 32, "P": 16, "E": 8, "F": 8}
    e = lower(get_cascade("attention-3pass").cascade, sizes).einsum("QK")
    arch = small_arch(4, 4, buffer=1024, regs=16)
    space = MapSpace.build(e, arch, "pe_2d", c)
    best = search(space, "latency", method=method, budget=None if method == "exhaustive" else 4000, seed=3)
    m = best.mapping
    assert independent_problems(e, arch, m) == []
    assert m.temporal[0][:2] == (("b", 2), ("h", 3))  # fixed, outermost, in order
    assert all(v not in ("b", "h", "e") for v, _ in m.temporal[1])
    inner = [v for v, _ in m.temporal[1] if v in ("m", "p")]
    assert [v for v, _ in m.temporal[1]][-len(inner) :] == inner and inner == [v for v in ("m", "p") if v in inner]
    assert m.keep[1] == frozenset({"K", "QK"})
    assert all(v == "m" for v, _ in m.spatial[0]) and all(v == "p" for v, _ in m.spatial[1])
    assert best.costs.pes_used[0] >= 8


def test_doctest():
    assert doctest.testmod(mappers.constraints).failed == 0
