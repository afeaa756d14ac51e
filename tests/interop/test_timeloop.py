"""Timeloop/Accelergy import and export (attnscope.interop.timeloop and ``attnscope import/export timeloop``).

The architectures under data/timeloop/ are copies of the public Timeloop/Accelergy exercises (SOURCE.md there).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

import workloads
from attnscope.cli import main
from attnscope.interop.common import Converted, read_tagged
from attnscope.interop.timeloop import (
    dimension_letters,
    export_arch,
    export_mapping,
    export_problem,
    export_timeloop,
    import_arch,
    import_mapping,
    import_problem,
    import_timeloop,
    representable,
)
from einsum.cascade import Cascade
from simulator.specs import ARCHITECTURES, load_arch, spec_from_dict
from workloads.models import get_model

DATA = Path(__file__).parent / "data" / "timeloop"
ARCHES = {
    "eyeriss_like_v03": ["arch.yaml", "ART.yaml"],
    "eyeriss_like_v04": ["arch.yaml", "ERT.yaml"],
    "simple_weight_stationary_v03": ["arch.yaml"],
    "simple_output_stationary_v03": ["arch.yaml"],
    "simba_like_v03": ["arch.yaml", "ERT.yaml"],
}


def factors_of(text: str) -> dict[str, int]:
    """Timeloop factors ``A4 B1`` (or ``A=4,B=1``) as {dimension: factor}."""
    return {m[0]: int(m[1]) for m in re.findall(r"([A-Z])=?(\d+)", text)}


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def effective(spec) -> dict:
    """Every figure a spec costs with (levels, arrays, clock, words, staging, compat), whatever YAML gave it."""
    return {
        "name": spec.name,
        "clock_hz": spec.clock_hz,
        "word_bytes": spec.word_bytes,
        "staging_level": spec.staging_level,
        "compat": spec.compat,
        "levels": [{k: v for k, v in vars(lv).items() if k != "given"} for lv in spec.levels],
        "arrays": [
            {k: v for k, v in vars(a).items() if k not in ("units",)}
            | {"units": [{k: v for k, v in vars(u).items() if k != "given"} for u in a.units]}
            for a in spec.arrays
        ],
    }


def assert_close(a, b, path=""):
    """Equal, numbers to 1e-12 relative (the unit conversions Timeloop's fields need: words/cycle, s/cycle)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list | tuple) and not isinstance(a, str):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-12), (path, a, b)
    else:
        assert a == b, (path, a, b)


# ----------------------------------------------------------------------------------------------- acceptance 1


@pytest.mark.parametrize("name", sorted(set(ARCHES) - {"simba_like_v03"}))  # simba: see the test below
def test_published_architectures_import_validate_and_cost(name, tmp_path, capsys):
    files = [str(DATA / name / f) for f in ARCHES[name]]
    out = tmp_path / name
    code, text, err = run_cli(capsys, "import", "timeloop", *files, "--out", str(out), "--ops-from",
                              "fusemax-cloud:pe_1d", "--json")  # fmt: skip
    assert code == 0, err
    result = json.loads(text)
    assert result["unrepresented"], "every published example has fields attnscope cannot represent"
    assert any("a multiply-accumulate unit" in item["why"] for item in result["unrepresented"])
    arch = out / "arch.yaml"
    code, text, err = run_cli(capsys, "arch", "show", str(arch))
    assert code == 0, err
    spec = load_arch(str(arch))
    # GEMM: one Einsum's loop-nest search
    code, text, err = run_cli(capsys, "map", "--workload", "gemm", "--shape", "T=512,K=768,N=768", "--arch",
                              str(arch), "--method", "random", "--budget", "20000", "--quiet", "--json")  # fmt: skip
    assert code == 0, err
    gemm = json.loads(text)
    assert gemm["latency_s"] > 0 and gemm["mapping"]["levels"][0]["level"] == spec.levels[0].name
    # BERT-Base attention (12 heads of 64, 512 tokens): the whole cascade
    bert = get_model("bert")
    from attnscope.api import evaluate

    d = evaluate("attention-1pass", str(arch), shape={"B": 1, "H": bert.heads, "M": 512, "E": bert.head_dim,
                                                       "F": bert.head_dim})  # fmt: skip
    assert d.latency_s > 0 and d.target == spec.name


def test_v03_geometry_and_art_areas():
    result = import_timeloop([DATA / "eyeriss_like_v03" / f for f in ARCHES["eyeriss_like_v03"]])
    spec = spec_from_dict(result.files["arch.yaml"])
    assert spec.array("mac").shape == (12, 14)  # PE[0..167] with meshX 14
    glb = spec.level("shared_glb")
    assert glb.capacity_words == 16384 * 64 // 16 and glb.access_width_words == 4 and glb.area_um2 == 1162549.0
    assert glb.bandwidth_bytes_per_s == 16 * 2 * spec.clock_hz  # 16 words/cycle of 2 bytes
    assert spec.level("dummy_buffer").instances == 14
    assert [lv.name for lv in spec.path("mac")][-3:] == ["ifmap_spad", "weights_spad", "psum_spad"]
    assert spec.level("psum_spad").per_pe_of == "mac"
    keys = {k for k, _ in result.unrepresented}
    assert glb.banks == 32 and "architecture.subtree[0].subtree[0].local[0].attributes.n_banks" not in keys
    assert "architecture.subtree[0].subtree[0].subtree[0].local[2].attributes.update_fifo_depth" in keys
    assert any(k == "clock_hz" for k, _ in result.assumed)  # no global_cycle_seconds in v0.3
    # no ERT: energies (and areas the ART lacks) from attnscope's technology model at the spec's node and DRAM
    assert result.files["arch.yaml"]["technology"] == {"node_nm": 45, "dram": "LPDDR4"}
    assert "technology" not in str(keys) and "attributes.type" not in str(keys)
    assert glb.read_energy_pj > 0 and spec.array("mac").unit("mac").energy_pj > 0
    assumed = dict(result.assumed)
    assert assumed["levels.shared_glb.read_energy_pj"].endswith("from attnscope's technology model at 45 nm")
    assert "levels.shared_glb.area_um2" not in assumed  # the ART gave it


def test_v04_parallel_spads_and_ert_energies():
    result = import_timeloop([DATA / "eyeriss_like_v04" / f for f in ARCHES["eyeriss_like_v04"]])
    spec = spec_from_dict(result.files["arch.yaml"])
    assert spec.array("mac").shape == (12, 14)  # PE_column meshX 14 x PE meshY 12
    assert spec.clock_hz == 1e9 and spec.word_bytes == 1
    assert spec.level("shared_glb").read_energy_pj == 18.183829 and spec.level("dram").write_energy_pj == 512.0
    assert spec.array("mac").unit("mac").energy_pj == 0.207692
    keys = {k for k, _ in result.unrepresented}
    assert "architecture.nodes[6]" in keys  # the !Parallel spads, chained
    assert "architecture.nodes[6].nodes[2].attributes.datawidth" in keys  # 16-bit psums on an 8-bit spec
    assert spec.level("shared_glb").leakage_w == 0.005652e-12 * 1e9  # ERT leak: pJ per cycle, at 1 GHz


def test_v03_ert_per_argument_set_and_vector_macs():
    result = import_timeloop([DATA / "simba_like_v03" / f for f in ARCHES["simba_like_v03"]])
    spec = spec_from_dict(result.files["arch.yaml"])
    assert spec.array("lmac").shape == (16, 16)  # PE[0..15] x LMAC[0..15], meshX 16
    assert spec.level("pe_input_buffer").instances == 16 and spec.level("pe_weight_buffer").instances == 64
    assert spec.level("pe_weight_regs").per_pe_of == "lmac"
    # the random access (address_delta = data_delta = 1) of the per-argument entries; a register's one action
    assert spec.level("pe_input_buffer").read_energy_pj == 0.237
    assert spec.level("pe_weight_regs").write_energy_pj == 0.009
    assert spec.array("lmac").unit("mac").energy_pj == 0.561
    assert spec.level("pe_accu_buffer").capacity_words == 128 * 24 // 8  # 24-bit words counted in 8-bit ones
    dropped = dict(result.unrepresented)
    assert "address_delta" in dropped["ERT.tables[1].actions[0]"] and "idle" in dropped["ERT.tables[0].actions[2]"]
    assert any(k == "levels.pe_weight_buffer: width" for k, _ in result.assumed)  # Timeloop's default width
    # its MACs read inputs and partial sums from the shared buffers above a 1-word weight register: attnscope's
    # innermost PE level must hold every operand, so the import says no loop nest fits
    assert "3 words for a MAC" in dropped["architecture.subtree[0].subtree[0].subtree[0].local[3]"]


def test_one_word_operand_registers_merge_listed():
    result = import_timeloop([DATA / "simple_output_stationary_v03" / "arch.yaml"])
    # no ERT: the technology model derives every level's figures, the 6-byte merged registers' too (register
    # files below its SRAM table's 8 B are extrapolated log-log), and the import lists each as assumed
    assumed = dict(result.assumed)
    assert result.files["arch.yaml"]["technology"] == {"node_nm": 45, "dram": "LPDDR4"}
    for level in ("pe_spad", "mac_registers"):
        assert assumed[f"levels.{level}.read_energy_pj"].endswith("from attnscope's technology model at 45 nm")
    spec = spec_from_dict(result.files["arch.yaml"])
    regs = spec.level("mac_registers")
    assert 0 < regs.read_energy_pj < spec.level("pe_spad").read_energy_pj and regs.leakage_w > 0
    assert regs.capacity_words == 3 and regs.per_pe_of == "mac" and spec.array("mac").fed_by == "mac_registers"
    merged = [k for k, why in result.unrepresented if "merged into mac_registers" in why]
    assert merged == [", ".join(f"architecture.subtree[0].subtree[0].subtree[0].local[{i}]" for i in (2, 3, 4))]


def test_combined_input_with_conv_problem_lists_what_it_drops():
    result = import_timeloop([DATA / "three_level_spatial_v04" / "input.yaml"])
    keys = [k for k, _ in result.unrepresented]
    assert "problem.shape.data_spaces[1].projection[1]" in keys  # Inputs[C, R+P]: a sliding window
    assert "problem" in keys and "mapping" in keys
    assert set(result.files) == {"arch.yaml"}
    spec = spec_from_dict(result.files["arch.yaml"])
    assert spec.array("macc").shape == (16,) and spec.level("global_buffer").capacity_words == 32768 * 64 // 8


# ----------------------------------------------------------------------------------------------- acceptance 2


def test_export_fusemax_qk_bounds_and_capacities(tmp_path, capsys):
    out = tmp_path / "qk"
    code, _, err = run_cli(capsys, "export", "timeloop", "--workload", "fusemax", "--arch", "fusemax-cloud",
                              "--shape", "M=4K", "--einsum", "QK", "--out", str(out), "--json")  # fmt: skip
    assert code == 0, err
    problem = read_tagged(out / "QK" / "problem.yaml")["problem"]
    mapping = read_tagged(out / "QK" / "mapping.yaml")["mapping"]
    arch = read_tagged(out / "QK" / "arch.yaml")["architecture"]
    rank_of = read_tagged(out / "QK" / "names.yaml")["attnscope"]["dimensions"]  # one-letter dims -> ranks
    assert rank_of == {"M": "M1", "A": "M0"}
    loaded = workloads.get_cascade("fusemax")
    sizes = loaded.sizes({"M": 4096})
    qk = loaded.cascade.einsums[0]
    assert qk.name == "QK"
    dims = problem["shape"]["dimensions"]
    assert all(len(d) == 1 for d in dims)  # Timeloop reads factors and permutations letter by letter
    assert [rank_of.get(d, d) for d in dims] == [v.upper() for v in qk.iter_vars]
    assert {rank_of.get(d, d): n for d, n in problem["instance"].items()} == {v.upper(): sizes[v.upper()]
                                                                             for v in qk.iter_vars}  # fmt: skip
    products = dict.fromkeys(dims, 1)
    for entry in mapping:
        if entry["type"] in ("temporal", "spatial"):
            assert sorted(entry.get("permutation", "")) == sorted(dims) or entry["type"] == "spatial"
            for dim, factor in factors_of(entry["factors"]).items():
                products[dim] *= factor
    assert products == problem["instance"]  # the loop bounds multiply to the iteration space, per rank
    spec = load_arch("fusemax-cloud")
    found = {}

    def walk(node):
        for comp in node.get("local", []):
            if "depth" in comp["attributes"]:
                a = comp["attributes"]
                found[comp["name"].split("[")[0]] = a["depth"] * a["width"] // a["datawidth"]
        for child in node.get("subtree", []):
            walk(child)

    for node in arch["subtree"]:
        walk(node)
    path = spec.path("pe_2d")
    assert found == {lv.name: lv.capacity_words for lv in path if lv.capacity_words is not None}
    k = next(ds for ds in problem["shape"]["data_spaces"] if ds["name"] == "K")
    assert k["projection"][3] == [["M", "size_M0_in_M"], ["A"]]  # K[b,h,e,m1*M0+m0]


# ----------------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_every_preset_round_trips(name):
    spec = load_arch(name)
    arch, ert, art = export_arch(spec)
    back, result = import_arch(arch["architecture"], "export", (ert, "ERT"), (art, "ART"))
    assert not result.unrepresented and not result.assumed
    assert_close(effective(spec_from_dict(back)), effective(spec))


@pytest.mark.parametrize("name", sorted(workloads.CASCADES))
def test_registered_einsums_round_trip(name):
    """import(export(x)) == x for every registered single-Einsum workload, and for every Einsum of every
    registered cascade that Timeloop can state (the others are named, with the reason, by the export)."""
    entry = workloads.get_cascade(name)
    cascade, sizes = entry.cascade, entry.sizes({})
    stated = 0
    for e in cascade.einsums:
        if representable(e, cascade, sizes) is not None:
            continue
        renames = {d: r for r, d in dimension_letters(e).items()}
        text, back_sizes = import_problem(export_problem(e, cascade, sizes)["problem"], "export", Converted(), renames)
        back = Cascade.from_text(text)
        (b,) = back.einsums
        assert b.text.replace(" ", "") == e.text.replace(" ", "")
        assert {t: back.tensors[t].ranks for t in (b.name, *b.inputs)} == {
            t: cascade.tensors[t].ranks for t in (e.name, *e.inputs)
        }
        assert back_sizes == {v.upper(): sizes[v.upper()] for v in e.iter_vars}
        stated += 1
    if len(cascade.einsums) == 1:
        assert stated == 1, f"{name}: a single-Einsum workload Timeloop cannot state"


def test_mapping_round_trips_through_timeloop(tmp_path):
    result = export_timeloop("fusemax", "fusemax-cloud", {"M": 4096}, einsum_name="QK", budget=2000)
    result.write(tmp_path)
    back = import_timeloop([tmp_path / "QK" / f for f in ("arch.yaml", "problem.yaml", "mapping.yaml", "names.yaml")]
                           + [tmp_path / "ERT.yaml", tmp_path / "ART.yaml"])  # fmt: skip
    nest = back.files["mapping.yaml"]["einsums"]["QK"]
    exported = read_tagged(tmp_path / "QK" / "mapping.yaml")["mapping"]
    rank_of = {"M": "M1", "A": "M0"}
    for entry in exported:
        if entry["type"] == "temporal":
            want = {rank_of.get(d, d).lower(): f for d, f in factors_of(entry["factors"]).items() if f > 1}
            have = {}
            for v, b in nest["temporal"][entry["target"]]:
                have[v] = have.get(v, 1) * b
            assert have == want, entry["target"]
    spec = spec_from_dict(back.files["arch.yaml"])
    cascade = Cascade.from_text(back.files["workload.einsum"])
    em_data = back.files["mapping.yaml"]
    (e,) = cascade.einsums
    ranks = cascade.rank_sizes({})
    sizes = {v.upper(): ranks[v.upper()] for v in e.iter_vars}
    again = import_mapping(
        export_mapping_from_dict(em_data, spec, cascade), "again", spec, e, sizes, Converted(), rank_of
    )
    assert again["einsums"] == em_data["einsums"]


def export_mapping_from_dict(data, spec, cascade):
    from simulator.mapping import mapping_from_dict

    em = mapping_from_dict(data).einsums["QK"]
    return export_mapping(em, spec, cascade.einsums[0])


def test_export_with_a_given_mapping(tmp_path, capsys):
    mapping = tmp_path / "m.yaml"
    code, _, err = run_cli(capsys, "cost", "--arch", "fusemax-cloud", "--workload", "fusemax", "--shape",
                           "B=1,H=2,M=4K", "--design", "binding", "--save-mapping", str(mapping))  # fmt: skip
    assert code == 0, err
    code, text, err = run_cli(capsys, "export", "timeloop", "--workload", "fusemax", "--arch", "fusemax-cloud",
                              "--shape", "B=1,H=2,M=4K", "--mapping", str(mapping), "--out", str(tmp_path / "x"),
                              "--json")  # fmt: skip
    assert code == 0, err
    assert {item["key"] for item in json.loads(text)["unrepresented"]} >= {"fusemax.LM", "fusemax.RM", "fusemax.AV"}
    given = read_tagged(mapping)["einsums"]["QK"]["temporal"]
    exported = read_tagged(tmp_path / "x" / "QK" / "mapping.yaml")["mapping"]
    rank_of = read_tagged(tmp_path / "x" / "QK" / "names.yaml")["attnscope"]["dimensions"]
    for entry in exported:
        if entry["type"] == "temporal":
            want = {}
            for v, b in given.get(entry["target"]) or []:
                want[v.upper()] = want.get(v.upper(), 1) * b
            have = {rank_of.get(d, d): f for d, f in factors_of(entry["factors"]).items() if f > 1}
            assert have == want, entry["target"]
    code, _, err = run_cli(capsys, "export", "timeloop", "--workload", "fusemax", "--arch", "fusemax-cloud",
                           "--shape", "B=1,H=4,M=4K", "--mapping", str(mapping), "--out",
                           str(tmp_path / "y"))  # fmt: skip
    assert code == 2 and "shape.H = 2, but the workload has H = 4" in err


def test_exported_einsum_costs_the_same_after_the_way_back(tmp_path, capsys):
    """Export QK with attnscope's searched mapping, import the Timeloop files, cost the imported mapping on the
    imported architecture and on the preset: the same latency and energy as the search reported."""
    from einsum.lower import lower
    from mappers.search import search
    from mappers.space import MapSpace

    out, back = tmp_path / "qk", tmp_path / "back"
    export_timeloop("fusemax", "fusemax-cloud", {"M": 4096}, einsum_name="QK", budget=2000).write(out)
    files = [*(out / "QK").glob("*.yaml"), out / "ERT.yaml", out / "ART.yaml"]
    code, _, err = run_cli(capsys, "import", "timeloop", *map(str, files), "--out", str(back))
    assert code == 0, err
    costs = []
    for arch in (str(back / "arch.yaml"), "fusemax-cloud"):
        code, text, err = run_cli(capsys, "cost", "--arch", arch, "--workload", str(back / "workload.einsum"),
                                  "--mapping", str(back / "mapping.yaml"), "--json")  # fmt: skip
        assert code == 0, err
        costs.append(json.loads(text))
    entry = workloads.get_cascade("fusemax")
    e = lower(entry.cascade, entry.sizes({"M": 4096})).einsum("QK")
    best = search(MapSpace.build(e, load_arch("fusemax-cloud")), "latency", budget=2000, parallel=False)
    # the cascade cost adds leakage x latency and the wires between the buffer and the arrays (on the preset,
    # whose buffer the technology model prices), which the loop-nest search leaves out
    for c in costs:
        assert c["feasible"]
        assert math.isclose(c["latency_s"], best.latency_s, rel_tol=1e-9)
        dynamic = c["energy_pj"] - sum(c["energy_breakdown_pj"].get(k, 0.0) for k in ("leakage", "wires"))
        assert math.isclose(dynamic, best.energy_pj, rel_tol=1e-9)


GEMM_PROBLEM = """problem:
  version: 0.4
  shape:
    name: gemm
    dimensions: [M, N, K]
    data_spaces:
    - {name: A, projection: [[[M]], [[K]]]}
    - {name: B, projection: [[[K]], [[N]]]}
    - {name: Z, projection: [[[M]], [[N]]], read_write: true}
  instance: {M: 32, N: 8, K: 4}
"""
GEMM_MAPPING = """mapping:
- {target: MainMemory, type: temporal, factors: 'M=2,N=1,K=1', permutation: NKM}
- {target: MainMemory, type: spatial, factors: 'M=16,N=1,K=1', permutation: MNK, split: 1}
- {target: GlobalBuffer, type: temporal, factors: 'M=1,N=8,K=1', permutation: MKN}
- {target: GlobalBuffer, type: datatype, keep: [A, Z], bypass: [B]}
- {target: RegisterFile, type: temporal, factors: M1 N1 K4, permutation: KMN}
"""


def test_a_hand_written_mapping_on_a_published_v04_architecture(tmp_path, capsys):
    """Timeloop's string forms (M=2,N=1 and M1 N1; permutations innermost first) and a spatial directive on the
    level above the PE fan-out, onto the three-level spatial exercise; then costed."""
    (tmp_path / "problem.yaml").write_text(GEMM_PROBLEM)
    (tmp_path / "mapping.yaml").write_text(GEMM_MAPPING)
    files = [DATA / "three_level_spatial_v04" / "arch.yaml", tmp_path / "problem.yaml", tmp_path / "mapping.yaml"]
    result = import_timeloop(files)
    nest = result.files["mapping.yaml"]["einsums"]["Z"]
    assert nest["levels"] == ["main_memory", "global_buffer", "register_file"]
    assert nest["temporal"] == {"main_memory": [["m", 2]], "global_buffer": [["n", 8]], "register_file": [["k", 4]]}
    assert nest["spatial"] == [[["m", 16]]] and nest["keep"]["global_buffer"] == ["A", "Z"]
    result.write(tmp_path / "out")
    code, text, err = run_cli(capsys, "cost", "--arch", str(tmp_path / "out" / "arch.yaml"), "--workload",
                              str(tmp_path / "out" / "workload.einsum"), "--mapping",
                              str(tmp_path / "out" / "mapping.yaml"), "--json")  # fmt: skip
    assert code == 0, err
    cost = json.loads(text)
    assert cost["feasible"] and cost["utilization"]["macc"] > 0
