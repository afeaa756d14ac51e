"""AccelForge import and export (attnscope.interop.accelforge and ``attnscope import/export accelforge``).

The specs under data/accelforge/ are copies of AccelForge's own examples (SOURCE.md there).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import workloads
from attnscope.cli import main
from attnscope.interop.accelforge import export_accelforge, export_arch, import_accelforge
from attnscope.interop.common import dump_yaml, read_tagged, render_jinja
from einsum.cascade import Cascade
from einsum.errors import SpecError
from simulator.specs import ARCHITECTURES, load_arch, spec_from_dict
from tests.interop.test_timeloop import assert_close, effective

DATA = Path(__file__).parent / "data" / "accelforge"


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_attention_example_round_trips(tmp_path, capsys):
    """AccelForge's attention workload -> cascade -> AccelForge -> the same cascade, at the same sizes."""
    code, text, err = run_cli(capsys, "import", "accelforge", str(DATA / "multi_head_attention.yaml"), "--out",
                              str(tmp_path / "in"), "--json")  # fmt: skip
    assert code == 0, err
    listed = {item["key"] for item in json.loads(text)["unrepresented"]}
    assert {"workload.bits_per_value", "workload.persistent_tensors", "workload.einsums[0].is_copy_operation"} <= listed
    assert any("V[E: f]" in key for key in listed)  # V's rank E indexed by f: declared with rank F (both 128)
    first = (tmp_path / "in" / "workload.einsum").read_text()
    cascade = Cascade.from_text(first)
    assert [e.name for e in cascade.einsums] == ["I", "V_new", "K_new", "Q_new", "QK", "QK_softmax", "AV", "Z"]
    assert cascade.einsums[4].text == "QK[b,m,p,h] = sum[e] Q_new[b,m,h,e] * K[b,p,h,e]"
    assert cascade.rank_sizes({})["P"] == 8192 and cascade.rank_sizes({})["D"] == 7 * 1024

    code, _, err = run_cli(capsys, "export", "accelforge", "--workload", str(tmp_path / "in" / "workload.einsum"),
                           "--out", str(tmp_path / "out"))  # fmt: skip
    assert code == 0, err
    exported = read_tagged(tmp_path / "out" / "workload.yaml")
    original = read_tagged(DATA / "multi_head_attention.yaml", text=render_jinja(
        (DATA / "multi_head_attention.yaml").read_text(), "af"))  # fmt: skip
    assert exported["workload"]["rank_sizes"] == original["workload"]["rank_sizes"]
    plain = [e["einsum"] if isinstance(e, dict) else e for e in original["workload"]["einsums"]]
    assert exported["workload"]["einsums"] == [e.replace("E: f", "f") for e in plain]

    code, _, err = run_cli(capsys, "import", "accelforge", str(tmp_path / "out" / "workload.yaml"), "--out",
                           str(tmp_path / "again"))  # fmt: skip
    assert code == 0, err
    again = (tmp_path / "again" / "workload.einsum").read_text()
    assert again.splitlines()[1:] == first.splitlines()[1:]  # all but the "imported from" comment


def test_jinja_variables_override_defaults(tmp_path):
    result = import_accelforge([DATA / "multi_head_attention.yaml"], {"N_TOKENS": 4096, "N_HEADS": 8})
    sizes = Cascade.from_text(result.files["workload.einsum"]).rank_sizes({})
    assert sizes["P"] == 4096 and sizes["H"] == 8 and sizes["E"] == 128


def test_simple_arch_imports_with_a_finite_buffer():
    with pytest.raises(SpecError, match=r"simple.yaml:\d+: arch.nodes\[1\].size: inf: attnscope needs a finite"):
        import_accelforge([DATA / "simple.yaml"])
    result = import_accelforge([DATA / "simple.yaml"], {"GlobalBufferSize": 8 * 2**20})
    spec = spec_from_dict(result.files["arch.yaml"])
    assert spec.level("global_buffer").capacity_words == 2**19  # 8 Mibit of 16-bit words
    assert spec.level("main_memory").read_energy_pj == 1e12  # AccelForge: 1 J per (1-bit) action
    keys = {k for k, _ in result.unrepresented}
    assert "arch.nodes[0].tensors" in keys and "arch.nodes[2].actions.compute.throughput" in keys


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_every_preset_round_trips(name, tmp_path):
    spec = load_arch(name)
    path = tmp_path / "arch.yaml"
    path.write_text(dump_yaml(export_arch(spec)))
    result = import_accelforge([path])
    assert not result.unrepresented and not result.assumed
    assert_close(effective(spec_from_dict(result.files["arch.yaml"])), effective(spec))


def test_export_lists_einsums_accelforge_cannot_state():
    result = export_accelforge("fusemax", None, {"M": 1024})
    einsums = result.files["workload.yaml"]["workload"]["einsums"]
    assert einsums[0] == "QK[b, h, m1, m0, p] = Q[b, h, e, p] * K[b, h, e, M: m1*256+m0]"
    dropped = dict(result.unrepresented)
    assert "max reduction" in dropped["fusemax.LM"] and "offset" in dropped["fusemax.RM"]
    assert len(einsums) + len(dropped) == 12


@pytest.mark.parametrize("name", sorted(workloads.CASCADES))
def test_registered_cascades_round_trip_through_accelforge(name, tmp_path):
    """Every Einsum AccelForge can state comes back as the same Einsum over the same ranks; the others are named."""
    entry = workloads.get_cascade(name)
    cascade, sizes = entry.cascade, entry.sizes({})
    result = export_accelforge(name, None)
    dropped = {key.split(".", 1)[1] for key, _ in result.unrepresented if key.startswith(f"{name}.")}
    exported = result.files["workload.yaml"]["workload"]["einsums"]
    assert len(exported) + len(dropped) == len(cascade.einsums)
    if not exported:
        return
    path = tmp_path / "w.yaml"
    path.write_text(dump_yaml(result.files["workload.yaml"]))
    back = Cascade.from_text(import_accelforge([path]).files["workload.einsum"])
    assert back.rank_sizes({}) == {r: s for r, s in sizes.items() if r in back.rank_sizes({})}
    for e in cascade.einsums:
        if e.name in dropped:
            continue
        b = next(x for x in back.einsums if x.name == e.name)
        assert b.text.replace(" ", "") == e.text.replace(" ", "")
        for t in (e.name, *e.inputs):
            assert back.tensors[t].ranks == cascade.tensors[t].ranks
