"""`--model path/to/config.json` as a user drives it: roofline, compare-attention and sweeps on the published
configs of examples/models, equal to the zoo where the zoo has the model; malformed configs exit 2."""

import json
import shutil
import textwrap
from pathlib import Path

import pytest

from attnscope.cli import main
from einsum.errors import SpecError
from mappers.sweep import read_sweep_file, run_sweep

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "examples" / "models"
FOUR = {"llama-3-8b.json": "llama3-8b", "mistral-7b-v0.1.json": "mistral-7b", "qwen2-7b.json": None,
        "deepseek-v2-lite.json": None}  # fmt: skip


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def roofline(capsys, tmp_path, model, phase):
    code, out, err = run(capsys, "roofline", "--device", "h100-sxm", "--model", model, "--phase", phase, "--seq",
                         "4K", "--batch", "4", "--out", tmp_path / "rl", "--no-plot", "--json")  # fmt: skip
    assert code == 0, err
    return json.loads(out), err


@pytest.mark.parametrize("phase", ["prefill", "decode"])
@pytest.mark.parametrize("file", list(FOUR))
def test_roofline_runs_on_each_config_and_equals_the_zoo(capsys, tmp_path, file, phase):
    summary, err = roofline(capsys, tmp_path, CONFIGS / file, phase)
    assert summary["model"] == Path(file).stem and summary["model_time_s"] > 0
    kernels = [r["kernel"] for r in summary["rows"]]
    if FOUR[file]:
        zoo, _ = roofline(capsys, tmp_path, FOUR[file], phase)
        assert summary["rows"] == zoo["rows"]
        assert (summary["model_time_s"], summary["tokens_per_s"]) == (zoo["model_time_s"], zoo["tokens_per_s"])
    if file.startswith("deepseek"):
        assert "router" in kernels and "experts_gate_up_proj" in kernels and summary["dense_layers"] == 1
        assert ("kv_b_proj" if phase == "prefill" else "q_absorb") in kernels or any(
            "expanded form" in n for n in summary["notes"])  # fmt: skip
        assert any(n.startswith("MLA (latent 512, rope 64") for n in summary["notes"])
        assert "note: " in err and "topk_method" in err  # what the reader left out, on stderr too
        dense = summary["dense_layer_time_s"]
        layer = sum(r["time_s"] for r in summary["rows"] if r["kernel"] != "lm_head")
        head = next(r["time_s"] for r in summary["rows"] if r["kernel"] == "lm_head")
        assert summary["model_time_s"] == pytest.approx(26 * layer + dense + head)


def compare(capsys, tmp_path, model, variants="gqa,sliding-window,mla,mla-expanded,attention-1pass-causal"):
    code, out, err = run(capsys, "compare-attention", "--device", "h100-sxm", "--model", model, "--seq", "1K,8K",
                         "--variants", variants, "--out", tmp_path / "cmp", "--no-plot", "--json")  # fmt: skip
    assert code == 0, err
    return json.loads(out)


@pytest.mark.parametrize("file", list(FOUR))
def test_compare_attention_runs_on_each_config_and_equals_the_zoo(capsys, tmp_path, file):
    study = compare(capsys, tmp_path, CONFIGS / file)
    rows = {(r["variant"], r["seq"]): r for r in study["rows"]}
    assert len(rows) == 10 and any("The model's own attention is" in n for n in study["notes"])
    if FOUR[file]:
        zoo = compare(capsys, tmp_path, FOUR[file])
        assert study["rows"] == zoo["rows"] and study["native"] == zoo["native"]
    native = {"llama-3-8b.json": "gqa", "mistral-7b-v0.1.json": "sliding-window", "qwen2-7b.json": "gqa",
              "deepseek-v2-lite.json": "mla"}[file]  # fmt: skip
    assert study["native"] == native
    if file.startswith("mistral"):
        assert rows["sliding-window", 8192]["params"] == "window=4096"
    if file.startswith("qwen2"):
        assert rows["gqa", 1024]["kv_heads"] == 4
    if file.startswith("deepseek"):  # MLA at the model's latent and rope sizes
        expanded = rows["mla-expanded", 1024]
        assert expanded["params"] == "latent=512;rope=64" and expanded["status"] == "ok"
        assert rows["mla", 1024]["params"] == "latent=512;rope=64"  # ran, or says why not (the kernel model's limit)
        assert rows["mla", 1024]["status"] == "ok" or rows["mla", 1024]["status"].startswith("impossible: ")


def test_mla_and_moe_on_a_spatial_array_say_they_are_not_modelled(capsys, tmp_path):
    code, _, err = run(capsys, "roofline", "--arch", "fusemax-cloud", "--model", CONFIGS / "deepseek-v2-lite.json",
                       "--out", tmp_path, "--no-plot")  # fmt: skip
    assert code == 2 and "Traceback" not in err
    assert "deepseek-v2-lite: the layer as a cascade of Einsums (spatial-array targets) has no multi-head latent " \
           "attention and mixture of experts form yet" in err  # fmt: skip


def bad_config(tmp_path, change=None, drop=(), text=None):
    path = tmp_path / "bad.json"
    if text is not None:
        path.write_bytes(text)
        return path
    data = {k: v for k, v in json.loads((CONFIGS / "llama-3-8b.json").read_text()).items() if k not in drop}
    path.write_text(json.dumps({**data, **(change or {})}, indent=2))
    return path


BAD = [
    (lambda t: bad_config(t, drop=("num_hidden_layers",)), "bad.json: num_hidden_layers: missing; expected a positive "
     "integer"),
    (lambda t: bad_config(t, {"num_attention_heads": "32"}), "bad.json:15: num_attention_heads: expected a positive "
     "integer, got '32' (str)"),
    (lambda t: bad_config(t, {"num_attention_heads": -32}), "bad.json:15: num_attention_heads: expected a positive "
     "integer, got -32"),
    (lambda t: bad_config(t, {"num_key_value_heads": 6}), "bad.json:17: num_key_value_heads: 6 does not divide "
     "num_attention_heads=32"),
    (lambda t: bad_config(t, text=b'{"model_type": "llama"\n"x": 1}'), "bad.json:2:1: invalid JSON: Expecting ','"),
    (lambda t: bad_config(t, text=bytes(range(256))), "bad.json: not a JSON text file (byte 128 is not UTF-8)"),
    (lambda t: t, "is a folder without a config.json"),
    (lambda t: t / "missing.json", "missing.json: cannot read the model config: No such file or directory"),
]  # fmt: skip


@pytest.mark.parametrize(("make", "fragment"), BAD)
@pytest.mark.parametrize("command", ["roofline", "compare-attention"])
def test_malformed_configs_exit_2_naming_file_and_key(capsys, tmp_path, make, fragment, command):
    target = ("--device", "h100-sxm")
    code, _, err = run(capsys, command, *target, "--model", make(tmp_path), "--out", tmp_path / "o", "--no-plot")
    assert code == 2 and fragment in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()  # nothing written for a bad model


SPEC = """\
name: hf-llm
workload: {{models: [{model}], seq_lens: [2K]}}
mapping: {{strategy: llm, phase: decode}}
axes:
  device: [h100-sxm]
"""


def test_sweep_specs_take_config_paths_relative_to_the_spec(tmp_path):
    (tmp_path / "models").mkdir()
    shutil.copy(CONFIGS / "mistral-7b-v0.1.json", tmp_path / "models" / "mistral.json")
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(SPEC.format(model="models/mistral.json"))
    spec = read_sweep_file(spec_path)
    assert spec.workload.models == (str((tmp_path / "models" / "mistral.json").resolve()),)
    run_sweep(spec, tmp_path / "s.sqlite")
    zoo = tmp_path / "zoo.yaml"
    zoo.write_text(SPEC.format(model="mistral-7b"))
    run_sweep(read_sweep_file(zoo), tmp_path / "z.sqlite")
    import sqlite3

    def latency(store):
        with sqlite3.connect(store) as conn:
            return conn.execute("SELECT latency_s FROM points").fetchall()

    assert latency(tmp_path / "s.sqlite") == latency(tmp_path / "z.sqlite")
    spec_path.write_text(SPEC.format(model="models/nope.json"))
    with pytest.raises(SpecError, match=r"spec\.yaml:2: workload\.models\[0\]: .*nope\.json: cannot read the model"):
        read_sweep_file(spec_path)
    (tmp_path / "models" / "broken.json").write_text(textwrap.dedent('{"model_type": "llama"}'))
    spec_path.write_text(SPEC.format(model="models/broken.json"))
    with pytest.raises(SpecError, match=r"workload\.models\[0\]: .*broken\.json: vocab_size: missing"):
        read_sweep_file(spec_path)


def test_an_llm_sweep_counts_a_moe_models_dense_layers(tmp_path):
    shutil.copy(CONFIGS / "deepseek-v2-lite.json", tmp_path / "ds.json")
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(SPEC.format(model="ds.json"))
    run_sweep(read_sweep_file(spec_path), tmp_path / "s.sqlite")
    import sqlite3

    with sqlite3.connect(tmp_path / "s.sqlite") as conn:
        flops, latency = conn.execute("SELECT flops, latency_s FROM points").fetchone()
    from simulator.roofline import model_rows

    study = model_rows(str(tmp_path / "ds.json"), "decode", 2048, 1, device="h100-sxm")
    layer = sum(r.flops for r in study.rows)
    dense = sum(r.flops for r in study.dense_rows)
    assert study.dense_layers == 1 and dense != layer
    assert flops == pytest.approx(26 * layer + dense + study.head.flops) and latency == study.model_s


def test_a_cascade_cannot_replace_mla_attention_in_roofline(capsys, tmp_path):
    code, _, err = run(capsys, "roofline", "--device", "h100-sxm", "--model", CONFIGS / "deepseek-v2-lite.json",
                       "--workload", "mla", "--out", tmp_path, "--no-plot")  # fmt: skip
    assert code == 2 and "has multi-head latent attention" in err and "drop --workload" in err
