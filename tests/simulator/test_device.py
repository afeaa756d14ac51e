"""Device presets: every preset loads, figures are dense and cited, validation names the dotted key."""

import doctest
import re

import pytest
import yaml

import simulator.device
from einsum.errors import RegistryError, SpecError
from simulator.device import (
    DEVICES,
    device_from_dict,
    load_device,
    read_device_file,
    replace_fields,
    with_efficiency,
    write_device,
)

REQUIRED = ("a100-sxm", "h100-sxm", "h100-pcie", "h200", "l4", "rtx4090", "orin-agx", "orin-nano",
            "orin-nano-super", "m2", "m2-max")  # fmt: skip


def test_module_doctests():
    assert doctest.testmod(simulator.device).failed == 0


@pytest.mark.parametrize("name", REQUIRED)
def test_required_presets_load_and_are_dense(name):
    spec = load_device(name)
    assert spec.id == name and spec.kind in ("gpu", "edge")
    # dense figures: a whole number of MACs per SM per clock (sparse figures would double it)
    per_clock = spec.tensor_flops_per_sm_per_clock("fp16")
    assert min(abs(per_clock / p - 1) for p in (256, 512, 1024, 2048, 4096)) < 0.01, per_clock
    assert min(abs(spec.fp32_ops_per_sm_per_clock() / p - 1) for p in (64, 128)) < 0.1  # H100: 67 TF is at 1980 MHz
    assert 0 < spec.efficiency.gemm <= 1 and spec.efficiency.calibration.method


@pytest.mark.parametrize("name", REQUIRED)
def test_every_value_in_a_preset_carries_a_citation_or_says_it_is_an_assumption(name):
    text = DEVICES[name].read_text()
    data = yaml.safe_load(text)
    tags = set(data["references"])
    header = ""
    for line in text.splitlines():
        top = re.match(r"^([a-z0-9_]+):\s*(#.*)?$", line)
        if top:
            header = top[2] or ""  # a block's citation covers its indented entries
            continue
        m = re.match(r"^(\s*)([a-z0-9_]+):\s*([-+0-9.e]+)\s*(#.*)?$", line)
        if not m:
            continue
        comment = (m[4] or "") + (header if m[1] else "")
        cited = re.findall(r"\[([A-Z][A-Z0-9, ]*)\]", comment)
        assert cited or re.search(r"assum|uncalibrated|no ", comment), f"{name}: {line.strip()!r} has no source"
        for tag in (t for c in cited for t in re.findall(r"[A-Z][A-Z0-9]*", c)):
            assert tag in tags, f"{name}: {line.strip()!r} cites {tag}, not in references"


def test_hopper_presets_match_the_issue_facts():
    a100, h100, h200 = load_device("a100-sxm"), load_device("h100-sxm"), load_device("h200")
    assert (a100.tensor_tflops["bf16"], a100.dram_bytes_per_s, a100.sm_count, a100.l2_bytes) == (
        312.0, 2.039e12, 108, 40 * 2**20)  # fmt: skip
    assert (h100.tensor_tflops["bf16"], h100.dram_bytes_per_s, h100.sm_count, h100.l2_bytes) == (
        989.0, 3.35e12, 132, 50 * 2**20)  # fmt: skip
    assert h100.clock_hz == 1.83e9 and h200.dram_bytes_per_s == 4.8e12
    assert h100.efficiency.copy * h100.dram_bytes_per_s == pytest.approx(3.0e12, rel=0.01)


def test_unknown_device_lists_the_registered_ids():
    with pytest.raises(RegistryError) as err:
        load_device("h300")
    for name in REQUIRED:
        assert name in str(err.value)


def _data(name="h100-sxm"):
    return load_device(name).to_dict()


@pytest.mark.parametrize(
    ("path", "value", "fragment"),
    [
        ("sm_count", 0, "sm_count: expected a positive integer"),
        ("kind", "tpu", "kind: expected one of gpu, edge, cpu"),
        ("tensor_tflops.fp4", 10.0, "tensor_tflops.fp4: unknown dtype; allowed: fp32, tf32, fp16, bf16, fp8"),
        ("efficiency.gemm", 1.2, "efficiency.gemm: expected a number in (0, 1]"),
        ("efficiency.calibration.date", "", "efficiency.calibration.date: expected a non-empty string"),
        ("clock_mhz", 1830, "clock_mhz: unknown key; allowed keys: id, name, kind"),
        ("tensor_instruction", "wmma", "tensor_instruction: expected one of wgmma, mma, none"),
    ],
)
def test_validation_names_the_dotted_key(tmp_path, path, value, fragment):
    data = _data()
    node = data
    steps = path.split(".")
    for step in steps[:-1]:
        node = node[step]
    node[steps[-1]] = value
    with pytest.raises(SpecError) as err:
        device_from_dict(data, "bad.yaml")
    assert str(err.value).startswith(f"bad.yaml: {fragment}")  # a dict built in Python: no line
    file = tmp_path / "bad.yaml"
    file.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(SpecError) as err:
        read_device_file(file, "bad.yaml")
    line = re.match(rf"bad\.yaml:(\d+): {re.escape(fragment)}", str(err.value))
    assert line, str(err.value)
    assert file.read_text().splitlines()[int(line[1]) - 1].strip().startswith(f"{steps[-1]}:")


def test_validation_collects_every_problem():
    data = _data()
    del data["dram_bytes_per_s"]
    data["clock_hz"] = -1
    with pytest.raises(SpecError) as err:
        device_from_dict(data, "bad.yaml")
    assert str(err.value).splitlines() == [
        "bad.yaml: 2 problems in the device spec:",
        "bad.yaml: clock_hz: expected a number in [1e+06, 1e+11] Hz (1 MHz to 100 GHz), got -1",
        "bad.yaml: dram_bytes_per_s: missing; expected a number in [1e+06, 1e+16] B/s (1 MB/s to 10 PB/s)",
    ]


def test_a_problem_in_a_yaml_file_is_reported_with_its_line(tmp_path):
    file = write_device(load_device("h100-sxm"), tmp_path / "bad.yaml")
    edits = {"sm_count: 132": "sm_count: 0", "  fp8: 1979.0": "  fp4: 1979.0", "  gemm: 0.8708": "  gemm: 1.2"}
    lines = [edits.get(line, line) for line in file.read_text().splitlines()]
    file.write_text("\n".join(lines) + "\n")
    sm, fp4, gemm = (lines.index(edited) + 1 for edited in edits.values())
    with pytest.raises(SpecError) as err:
        load_device(file)
    assert str(err.value).splitlines() == [
        f"{file}: 3 problems in the device spec:",
        f"{file}:{sm}: sm_count: expected a positive integer, got 0",
        f"{file}:{fp4}: tensor_tflops.fp4: unknown dtype; allowed: fp32, tf32, fp16, bf16, fp8",
        f"{file}:{gemm}: efficiency.gemm: expected a number in (0, 1], got 1.2",
    ]


def test_yaml_errors_carry_line_and_column(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("id: x\nid: y\n")
    with pytest.raises(SpecError, match=r"dup.yaml:2:1: invalid YAML: duplicate key 'id'"):
        read_device_file(path)


def test_with_efficiency_and_write_round_trip(tmp_path):
    spec = load_device("h100-sxm")
    provenance = {"data_file": "validate/data/x.csv", "date": "2025-07-01", "method": "median of 50 runs"}
    tuned = with_efficiency(spec, {"gemm": 0.8, "copy": 0.91}, provenance)
    assert (tuned.efficiency.gemm, tuned.efficiency.copy, tuned.efficiency.softmax) == (0.8, 0.91, 0.597)
    assert tuned.efficiency.calibration.data_file == "validate/data/x.csv"
    back = read_device_file(write_device(tuned, tmp_path / "tuned.yaml"))
    assert back == tuned
    assert load_device(tmp_path / "tuned.yaml") == tuned
    with pytest.raises(SpecError, match="unknown efficiency 'attention'; allowed: gemm, gemm_fp8, copy, exp, softmax"):
        with_efficiency(spec, {"attention": 0.5}, provenance)


def test_cpu_kind_uses_the_same_schema():
    data = _data()
    data.update(id="cpu-test", kind="cpu", sm_count=16, tensor_instruction="none", tensor_tflops={"fp32": 1.2})
    spec = device_from_dict(data)
    assert spec.kind == "cpu" and spec.tensor_peak_flops("fp32") == 1.2e12
    with pytest.raises(SpecError, match="no bf16 matrix throughput; this device has fp32"):
        spec.tensor_peak_flops("bf16")


def test_replace_fields_revalidates():
    faster = replace_fields(load_device("h100-sxm"), dram_bytes_per_s=4.8e12)
    assert faster.dram_bytes_per_s == 4.8e12 and faster.sm_count == 132
    with pytest.raises(SpecError, match="sm_count: expected a positive integer"):
        replace_fields(faster, sm_count=-3)
