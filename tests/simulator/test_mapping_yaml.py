"""Mappings as YAML: round trip, and bad mappings named by file and dotted key (CLI exit 2)."""

import pytest
import yaml

from attnscope.cli import main
from einsum.errors import SpecError
from einsum.lower import lower
from mappers.fusemax import fusemax_family
from simulator.cost import evaluate_cascade
from simulator.mapping import load_mapping, mapping_from_dict, mapping_to_dict
from simulator.specs import load_arch
from workloads import get_cascade

SHAPE = "B=2,H=2,M=1K,E=64,F=64"
SIZES = {"B": 2, "H": 2, "E": 64, "F": 64, "M": 1024, "P": 1024}


@pytest.fixture(scope="module")
def design():
    return fusemax_family("binding", load_arch("fusemax-cloud"), SIZES)


def test_round_trip_gives_the_same_cost(design, tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(mapping_to_dict(design.mapping)))
    again = load_mapping(path)
    cost = evaluate_cascade(design.lowered, load_arch("fusemax-cloud"), again)
    assert cost.latency_s == design.cost.latency_s and cost.energy_pj == design.cost.energy_pj


def _broken(design, edit):
    data = mapping_to_dict(design.mapping)
    edit(data)
    return data


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda d: d["einsums"]["QK"]["temporal"].update(global_buffer=[["p", 4], ["e", 32]]),
         "einsums.QK: the bounds of e multiply to 32, its rank has size 64"),
        (lambda d: d["einsums"]["QK"].update(tempral={}),
         "einsums.QK.tempral: unknown key; allowed keys: array, levels"),
        (lambda d: d["einsums"]["QK"]["temporal"].update(dram=[["b", -2]]),
         "einsums.QK.temporal.dram[0]: expected [variable, positive integer bound], got ['b', -2]"),
        (lambda d: d["einsums"]["QK"].update(array="pe_3d"),
         "einsums.QK.array: unknown array 'pe_3d'; fusemax-cloud has"),
        (lambda d: d["einsums"]["QK"]["keep"].update(global_buffer=["Z"]), "einsums.QK.keep: Z is not a tensor of QK"),
        (lambda d: d["einsums"]["QK"]["temporal"]["global_buffer"].append(["z", 1]),
         "einsums.QK: unknown variable 'z'; QK iterates"),
        (lambda d: d.update(phases=[]), "phases: expected a list of phases"),
    ],
)  # fmt: skip
def test_bad_mappings_name_file_and_key(design, tmp_path, edit, fragment, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_broken(design, edit)))
    with pytest.raises(SpecError) as info:
        evaluate_cascade(design.lowered, load_arch("fusemax-cloud"), load_mapping(path))
    assert fragment in str(info.value) and str(path) in str(info.value)
    code = main(["cost", "--arch", "fusemax-cloud", "--workload", "fusemax", "--shape", SHAPE, "--mapping", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and fragment in err and "Traceback" not in err


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\neinsums: [\n")
    with pytest.raises(SpecError, match=r"bad\.yaml:\d+:\d+: invalid YAML"):
        load_mapping(path)


def test_mapping_from_dict_rejects_non_mappings():
    with pytest.raises(SpecError, match=r"^<m>: expected a mapping, got \[1, 2\] \(list\)$"):
        mapping_from_dict([1, 2], "<m>")


BAD_LINES = """\
name: x
einsums:
  QK:
    array: pe_2d
    levels: [dram, global_buffer]
    temporal:
      dram: [[b, -2]]
    tempral: {}
phases:
  - stages: [{pe_2d: [QK]}]
in_place: x
"""


def test_bad_mapping_file_names_the_line_of_each_problem(tmp_path, capsys):
    path = tmp_path / "m.yaml"
    path.write_text(BAD_LINES)
    with pytest.raises(SpecError) as info:
        load_mapping(path)
    assert str(info.value) == (
        f"{path}: 3 problems in the mapping:\n"
        f"{path}:8: einsums.QK.tempral: unknown key; allowed keys: array, levels, temporal, spatial, keep\n"
        f"{path}:7: einsums.QK.temporal.dram[0]: expected [variable, positive integer bound], got ['b', -2]\n"
        f"{path}:11: in_place: expected a list of lists"
    )
    code = main(["cost", "--arch", "fusemax-cloud", "--workload", "fusemax", "--shape", SHAPE, "--mapping", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and f"{path}:7: einsums.QK.temporal.dram[0]" in err and "Traceback" not in err


def test_cost_command_builds_and_saves_a_design(tmp_path, capsys):
    out = tmp_path / "m.yaml"
    argv = ["cost", "--arch", "fusemax-cloud", "--workload", "fusemax", "--shape", SHAPE, "--design", "binding"]
    assert main([*argv, "--save-mapping", str(out), "--json"]) == 0
    capsys.readouterr()
    lowered = lower(get_cascade("fusemax").cascade, {**SIZES, "M0": 256})
    assert evaluate_cascade(lowered, load_arch("fusemax-cloud"), load_mapping(out)).feasible


def test_bad_arch_file_exits_2_naming_file_and_key(tmp_path, capsys):
    arch = tmp_path / "arch.yaml"
    arch.write_text(
        yaml.safe_dump({**load_arch("fusemax-cloud").to_dict(), "levels": [{"name": "dram", "capacity_words": -4}]})
    )
    code = main(["cost", "--arch", str(arch), "--workload", "fusemax", "--shape", SHAPE, "--design", "binding"])
    err = capsys.readouterr().err
    assert code == 2 and str(arch) in err and "levels[0]" in err
