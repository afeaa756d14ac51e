"""Device sweeps: a device axis, strategy-parameter and device-field axes, the sdpa and llm strategies, NULL
metrics, failed points, resumption, preset content in the point keys, pool/Dask execution, the plot command and
the shipped example renders. Expected figures come from the models themselves, never from constants."""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
import textwrap
from pathlib import Path

import pytest

from attnscope.cli import main
from einsum.errors import SpecError
from mappers.sweep import read_sweep_file, run_sweep, sweep_points
from mappers.sweep.pareto import pareto_front, store_front
from mappers.sweep.runner import make_executor
from mappers.sweep.store import Store
from mappers.sweep.targets import device_with_overrides
from simulator.device import DEVICES, DTYPE_BYTES, load_device
from simulator.gpu import predict
from simulator.roofline import model_rows
from simulator.specs import ARCHITECTURES
from workloads.llm import kv_cache_bytes, layer_kernels
from workloads.models import get_model

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "sweeps"

SMALL = """\
name: small-gpu
workload: {models: [llama3-8b], seq_lens: [512, 1K]}
mapping: {strategy: sdpa, batch: 1, dtype: bf16}
axes:
  device: [a100-sxm, h100-sxm]
  kernel: [fa2, fa3]
"""


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def rows(store: Path, sql: str = "SELECT * FROM points") -> list[dict]:
    with sqlite3.connect(store) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(sql)]


def attention_shape(model: str, seq: int, batch: int, phase: str = "prefill") -> dict:
    kernels = layer_kernels(get_model(model), phase, seq, batch)
    return dict(next(k for k in kernels if k.kind == "attention").shape)


def model_error(device: str, **shape) -> str | None:
    """The kernel model's own message for a shape it refuses (None if it accepts it)."""
    try:
        predict(device, "sdpa", **shape)
    except SpecError as exc:
        return f"SpecError: {exc}"
    return None


def test_small_device_sweep_rows_nulls_failures_and_resume(tmp_path):
    spec = read_sweep_file(write(tmp_path, SMALL))
    store = tmp_path / "s.sqlite"
    first = run_sweep(spec, store)
    points = sweep_points(spec)
    assert first.unique == first.computed == len(points) == 2 * 2 * 2
    stored = rows(store)
    assert len(stored) == len({r["key"] for r in stored}) == len(points)  # one row per point
    assert all(r["energy_j"] is None for r in stored)  # the GPU models give no energy: NULL, not 0
    expected_errors = 0
    for r in stored:
        shape = {**attention_shape("llama3-8b", r["seq_len"], 1), "kernel": r["kernel"]}
        error = model_error(r["device"], dtype="bf16", **shape)
        if error is not None:  # fa3 on the A100 (no warpgroup MMA): the model's message, recorded
            expected_errors += 1
            assert r["status"] == "error" and r["error"] == error and r["latency_s"] is None
            continue
        p = predict(r["device"], "sdpa", dtype="bf16", **shape)
        assert r["status"] == "ok" and r["latency_s"] == p.time_s and r["tflops"] == p.tflops
        assert (r["dram_bytes"], r["bound"], r["attn_kernel"], r["precision"]) == (p.hbm_bytes, p.bound, r["kernel"],
                                                                                  "bf16")  # fmt: skip
    failed = [r for r in stored if r["status"] == "error"]
    assert failed and {(r["device"], r["kernel"]) for r in failed} == {("a100-sxm", "fa3")}
    assert first.errors == expected_errors == len(failed)
    again = run_sweep(spec, store)
    assert again.computed == 0 and again.skipped == len(points)  # resume: nothing left to do
    retry = run_sweep(spec, store, retry_errors=True)
    assert retry.computed == len(failed)
    forced = run_sweep(spec, store, force=True)
    assert forced.computed == len(points)
    strip = ("seconds", "finished_at")
    assert [{k: v for k, v in r.items() if k not in strip} for r in rows(store, "SELECT * FROM points ORDER BY key")] \
        == [{k: v for k, v in r.items() if k not in strip} for r in sorted(stored, key=lambda r: r["key"])]  # fmt: skip
    with Store.open(store, readonly=True) as s:  # device rows have no `feasible`: the Pareto front keeps them
        front = store_front(s, ("latency_s", "dram_bytes"))
    ok = [r for r in stored if r["status"] == "ok"]
    best = pareto_front([[r["latency_s"], r["dram_bytes"]] for r in ok])
    assert sorted(front.column("key")) == sorted(ok[i]["key"] for i in best)


def test_preset_content_is_part_of_the_key(tmp_path):
    shutil.copy(DEVICES["h100-sxm"], tmp_path / "my-h100.yaml")
    spec_path = write(tmp_path, SMALL.replace("[a100-sxm, h100-sxm]", "[a100-sxm, ./my-h100.yaml]"))
    store = tmp_path / "s.sqlite"
    run_sweep(read_sweep_file(spec_path), store)
    before = {r["key"]: r for r in rows(store)}
    text = (tmp_path / "my-h100.yaml").read_text()
    line = next(x for x in text.splitlines() if x.startswith("dram_bytes_per_s:"))
    (tmp_path / "my-h100.yaml").write_text(text.replace(line, "dram_bytes_per_s: 4.0e12"))
    again = run_sweep(read_sweep_file(spec_path), store)
    mine = [k for k, r in before.items() if r["device"] == "./my-h100.yaml"]
    assert again.computed == len(mine) and again.skipped == len(before) - len(mine)  # only the edited preset's
    after = rows(store, "SELECT r.* FROM results r WHERE sweep = 'small-gpu'")
    assert not {r["key"] for r in after if r["device"] == "./my-h100.yaml"} & set(mine)


def test_device_field_and_parameter_axes(tmp_path):
    spec = read_sweep_file(write(tmp_path, """\
        name: bandwidth
        workload: {models: [llama3-8b], seq_lens: [2K]}
        mapping: {strategy: sdpa, kernel: unfused, batch: 2}
        axes:
          device: [h100-sxm]
          dram_bytes_per_s: [1.0e12, 4.0e12]
          causal: [true, false]
        metrics: [latency_s, dram_bytes]
        """))  # fmt: skip
    store = tmp_path / "s.sqlite"
    assert run_sweep(spec, store).errors == 0
    base = load_device("h100-sxm")
    for r in rows(store):
        device = device_with_overrides(base.to_dict(), {"dram_bytes_per_s": r["dram_bytes_per_s"]}, "h100-sxm")
        shape = {**attention_shape("llama3-8b", 2048, 2), "causal": bool(r["causal"]), "kernel": "unfused"}
        assert r["latency_s"] == predict(device, "sdpa", dtype="bf16", **shape).time_s
    slow, fast = (rows(store, f"SELECT * FROM points WHERE causal = 1 AND dram_bytes_per_s = {b}")[0] for b in
                  (1.0e12, 4.0e12))  # fmt: skip
    assert slow["latency_s"] > fast["latency_s"]  # the unfused chain is bound by DRAM


def test_direction_axis_of_the_sdpa_strategy_is_the_backward_model(tmp_path):
    spec = read_sweep_file(write(tmp_path, """\
        name: train
        workload: {models: [llama3-8b], seq_lens: [1K, 4K]}
        mapping: {strategy: sdpa, batch: 2}
        axes:
          device: [a100-sxm, h100-sxm]
          direction: [fwd, bwd, fwd+bwd]
        metrics: [latency_s, attn_kernel]
        """))  # fmt: skip
    store = tmp_path / "s.sqlite"
    assert run_sweep(spec, store).errors == 0
    got = rows(store)
    assert len(got) == 12
    for r in got:
        shape = attention_shape("llama3-8b", r["seq_len"], 2)
        p = predict(r["device"], "sdpa", dtype="bf16", direction=r["direction"], **shape)
        assert (r["latency_s"], r["attn_kernel"]) == (p.time_s, p.kernel)
    by = {(r["device"], r["seq_len"], r["direction"]): r["latency_s"] for r in got}
    for device, seq in {(d, s) for d, s, _ in by}:
        assert by[device, seq, "fwd+bwd"] == pytest.approx(by[device, seq, "fwd"] + by[device, seq, "bwd"], rel=1e-9)


def test_direction_of_the_cascade_and_llm_strategies(tmp_path):
    spec = read_sweep_file(write(tmp_path, """\
        name: cascade-train
        workload: {models: [llama3-8b], seq_lens: [1K]}
        mapping: {strategy: cascade, workload: moba, direction: fwd+bwd}
        axes:
          device: [h100-sxm, fusemax-cloud]
        """))  # fmt: skip
    store = tmp_path / "c.sqlite"
    assert run_sweep(spec, store).errors == 1  # moba has no backward kernel on a GPU: that point's error says so
    gpu, array = (rows(store, f"SELECT * FROM points WHERE device = '{d}'")[0] for d in ("h100-sxm", "fusemax-cloud"))
    assert "moba: no backward kernel on a device" in gpu["error"]
    assert array["status"] == "ok" and array["mapper"] == "fused+fused"
    spec = read_sweep_file(write(tmp_path, """\
        name: llm-train
        workload: {models: [llama3-8b], seq_lens: [1K]}
        mapping: {strategy: llm, direction: fwd+bwd}
        axes:
          device: [h100-sxm, flat-edge]
        """, "llm.yaml"))  # fmt: skip
    store = tmp_path / "l.sqlite"
    assert run_sweep(spec, store).errors == 1
    gpu, array = (rows(store, f"SELECT * FROM points WHERE device = '{d}'")[0] for d in ("h100-sxm", "flat-edge"))
    assert gpu["latency_s"] == model_rows("llama3-8b", "train", 1024, 1, device="h100-sxm", dtype="bf16").model_s
    assert "modelled for phase prefill on a device; flat-edge is a spatial-array preset" in array["error"]


def test_llm_on_a_device_and_a_spatial_array(tmp_path):
    spec = read_sweep_file(write(tmp_path, """\
        name: edge
        workload: {models: [llama3-8b], seq_lens: [1K]}
        mapping: {strategy: llm, phase: decode, dtype: fp16}
        axes:
          device: [orin-agx, flat-edge]
          kernel: [auto, fa2]
        """))  # fmt: skip
    store = tmp_path / "s.sqlite"
    run_sweep(spec, store)
    stored = {(r["device"], r["kernel"]): r for r in rows(store)}
    shape = get_model("llama3-8b")
    footprint = shape.params() * DTYPE_BYTES["fp16"] + kv_cache_bytes(shape, 1024, 1, DTYPE_BYTES["fp16"])
    for kernel in ("auto", "fa2"):
        study = model_rows("llama3-8b", "decode", 1024, 1, device="orin-agx", dtype="fp16",
                           kernel=None if kernel == "auto" else kernel)  # fmt: skip
        r = stored["orin-agx", kernel]
        assert r["status"] == "ok" and r["latency_s"] == study.model_s and r["tokens_per_s"] == study.tokens_per_s
        assert r["fits_dram"] == float(footprint <= load_device("orin-agx").dram_bytes)
        assert r["energy_j"] is None and r["precision"] == "fp16"
    study = model_rows("llama3-8b", "decode", 1024, 1, arch="flat-edge")
    arch = stored["flat-edge", "auto"]
    assert arch["latency_s"] == study.model_s and arch["tokens_per_s"] == study.tokens_per_s
    assert arch["energy_j"] is None and arch["fits_dram"] is None  # no energy model; DRAM capacity not given
    assert arch["footprint_bytes"] == footprint  # 2-byte words, as fp16
    assert (
        stored["flat-edge", "fa2"]["status"] == "error" and "applies to devices" in stored["flat-edge", "fa2"]["error"]
    )


BAD = [
    ("axes: {device: [h300]}", "axes.device.values[0]: unknown device 'h300'; device ids: a100-sxm, cpu-ci"),
    ("axes: {device: []}", "axes.device.values: empty axis; give device ids: a100-sxm"),
    ("axes: {device: h100-sxm}", "axes.device.values: expected a list of device ids, got 'h100-sxm' (str)"),
    ("axes: {device: [flat-edge]}", "axes.device.values[0]: 'flat-edge' is a spatial-array preset; strategy sdpa"),
    ("axes: {device: [h100-sxm, h100-sxm]}", "axes.device: 'h100-sxm' is listed twice"),
    ("axes: {device: [7]}", "axes.device.values[0]: expected a device id, got 7 (int); device ids: a100-sxm"),
    ("axes: {kernel: [fa2]}", "axes.device: missing; a device sweep lists its targets as axes: {device: [...]}"),
    ("axes: {device: [a100-sxm], kernel: [fa9]}", "axes.kernel.values[0]: strategy sdpa, parameter kernel: got 'fa9'; "
     "allowed: auto, fa2, fa3"),
    ("axes: {device: [a100-sxm], causal: [maybe]}", "parameter causal: got 'maybe'; allowed: model, true, false"),
    ("axes: {device: [a100-sxm], batch: [0]}", "axes.batch.values[0]: strategy sdpa, parameter batch: got 0; expected"),
    ("axes: {device: [a100-sxm], dram_bw: [1]}", "axes.dram_bw: a named axis needs paths: [dotted.path, ...] (or name "
     "the axis by a dotted path, a top-level field such as dram_bytes_per_s, or a parameter of strategy sdpa: kernel"),
    ("axes: {device: [a100-sxm], efficiency.gemx: [0.5]}", "axes.efficiency.gemx: path efficiency.gemx: a100-sxm: no "
     "field 'efficiency.gemx': efficiency has no 'gemx'; its keys: gemm, gemm_fp8, copy"),
    ("axes: {device: [a100-sxm], dram_bytes_per_s: [-1.0]}", "axes.dram_bytes_per_s: value -1.0 is refused: a100-sxm: "
     "dram_bytes_per_s: expected a number in [1e+06, 1e+16] B/s"),
    ("axes: {device: [a100-sxm], sm_count: [1.5]}", "axes.sm_count.values[0]: wrong type: the path holds an integer"),
    ("mapping: {strategy: sdpa, kernel: fa2}\naxes: {device: [a100-sxm], kernel: [fa2]}",
     "axes.kernel: the strategy parameter kernel is also set under mapping"),
    ("mapping: {batch: 2}", "mapping.strategy: missing; a sweep over devices needs a device strategy: sdpa, llm"),
    ("mapping: {strategy: llm}\naxes: {device: [a100-sxm, flat-edge], dram_bytes_per_s: [1.0e12]}",
     "axes.dram_bytes_per_s: device fields apply to devices; flat-edge in axes.device is a spatial-array preset"),
    ("workload: {cascades: [fusemax], models: [llama3-8b], seq_lens: [1K]}", "workload.cascades: strategy sdpa takes "
     "no cascades"),
    ("workload: {models: [gpt5], seq_lens: [1K]}", "workload.models[0]: unknown or unsupported model 'gpt5' (str); "
     "allowed: llama2-7b, llama3-8b"),
    ("arch: flat-edge", "arch: a device sweep (strategy sdpa) runs on the targets of axes.device; remove arch"),
    ("metrics: [area_mm2]", "metrics[0]: unknown metric 'area_mm2'; known: latency_s, tflops"),
    ("derived: {dram_bytes_per_s: 2}", "derived: derived values apply to architecture sweeps"),
    ("overrides: {dram_bytes_per_sec: 1.0}", "overrides: a100-sxm: no field 'dram_bytes_per_sec'"),
    ("mapping: {strategy: sdpa, direction: back}", "mapping.direction: got 'back'; allowed: fwd, bwd, fwd+bwd"),
    ("mapping: {strategy: sdpa, phase: decode, direction: bwd}", "mapping.direction: direction bwd needs phase "
     "prefill: a decode step (one new token against a KV cache) is inference only and has no backward pass "
     "(mapping.direction and mapping.phase)"),
    ("mapping: {strategy: sdpa, kernel: decode, direction: fwd+bwd}", "mapping.direction: direction fwd+bwd runs "
     "kernel fa2, fa3, unfused, math or auto; kernel decode is inference only (mapping.direction and mapping.kernel)"),
    ("mapping: {strategy: llm, direction: bwd}", "mapping.direction: got 'bwd'; allowed: fwd, fwd+bwd"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "fragment"), BAD)
def test_malformed_device_specs_name_the_key_and_the_allowed_values(tmp_path, change, fragment):
    base = {
        "name": "name: bad",
        "workload": "workload: {models: [llama3-8b], seq_lens: [1K]}",
        "mapping": "mapping: {strategy: sdpa}",
        "axes": "axes: {device: [a100-sxm]}",
    }
    keys = {line.split(":")[0] for line in change.splitlines()}
    path = write(tmp_path, "\n".join([v for k, v in base.items() if k not in keys] + [change]) + "\n")
    with pytest.raises(SpecError) as err:
        read_sweep_file(path)
    assert fragment in str(err.value) and f"{path}:" in str(err.value)


def test_unknown_device_lists_every_valid_id(tmp_path):
    path = write(tmp_path, SMALL.replace("[a100-sxm, h100-sxm]", "[a100-sxm, h300]"))
    with pytest.raises(SpecError) as err:
        read_sweep_file(path)
    assert all(d in str(err.value) for d in DEVICES)
    path = write(tmp_path, SMALL.replace("sdpa", "llm").replace("[fa2, fa3]", "[auto]").replace("a100-sxm,", "h9,"))
    with pytest.raises(SpecError) as err:  # llm also takes spatial-array presets: they are listed too
        read_sweep_file(path)
    assert all(name in str(err.value) for name in (*DEVICES, *ARCHITECTURES))


def test_pool_and_dask_store_what_one_process_stores(tmp_path):
    spec = read_sweep_file(write(tmp_path, SMALL))
    run_sweep(spec, tmp_path / "one.sqlite")
    reference = rows(tmp_path / "one.sqlite", "SELECT key, status, error, latency_s, bound FROM points ORDER BY key")
    with make_executor(workers=2) as pool:
        run_sweep(spec, tmp_path / "pool.sqlite", executor=pool, chunk_size=2)
    assert rows(tmp_path / "pool.sqlite", "SELECT key, status, error, latency_s, bound FROM points ORDER BY key") \
        == reference  # fmt: skip
    pytest.importorskip("distributed")
    with make_executor(dask_local=2) as dask:
        run_sweep(spec, tmp_path / "dask.sqlite", executor=dask, chunk_size=2)
    assert rows(tmp_path / "dask.sqlite", "SELECT key, status, error, latency_s, bound FROM points ORDER BY key") \
        == reference  # fmt: skip


def test_plot_command_draws_one_labelled_line_per_group(tmp_path, capsys, monkeypatch):
    spec = read_sweep_file(write(tmp_path, SMALL))
    store = tmp_path / "s.sqlite"
    run_sweep(spec, store)
    labels = {}
    import matplotlib.axes

    for name in ("set_xlabel", "set_ylabel"):
        original = getattr(matplotlib.axes.Axes, name)

        def spy(self, text, *a, _name=name, _original=original, **kw):
            labels[_name] = text
            return _original(self, text, *a, **kw)

        monkeypatch.setattr(matplotlib.axes.Axes, name, spy)
    out = tmp_path / "lines.png"
    argv = ["plot", str(store), "--x", "seq_len", "--y", "latency_s", "--group", "device,kernel", "--logx", "--logy"]
    assert main([*argv, "--out", str(out), "--json"]) == 0
    drawn = json.loads(capsys.readouterr().out)
    ok = rows(store, "SELECT device, kernel FROM points WHERE status = 'ok'")
    assert drawn["lines"] == len({(r["device"], r["kernel"]) for r in ok}) and drawn["points"] == len(ok)
    assert labels == {"set_xlabel": "sequence length (tokens)", "set_ylabel": "latency (s)"}
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["plot", str(store), "--x", "seq_len", "--y", "bound", "--out", str(out)]) == 2
    assert "column 'bound' holds names" in capsys.readouterr().err
    assert main(["plot", str(store), "--x", "seq", "--y", "latency_s", "--out", str(out)]) == 2
    assert "no column 'seq'; columns:" in capsys.readouterr().err


@pytest.mark.parametrize(("example", "keys"), [("gpu-seq", ("device", "kernel", "causal", "seq_len")),
                                               ("edge-decode", ("device", "seq_len"))])  # fmt: skip
def test_shipped_example_renders_are_current(tmp_path, example, keys):
    store = tmp_path / f"{example}.sqlite"
    run_sweep(read_sweep_file(EXAMPLES / f"{example}.yaml"), store)
    fresh = {tuple(str(int(r[k]) if isinstance(r[k], int) else r[k]) for k in keys): r for r in rows(store)}
    with (EXAMPLES / f"{example}.csv").open() as f:
        shipped = list(csv.DictReader(f))
    hint = f"re-render examples/sweeps/{example}.csv and .png: see the commands in its header"
    assert len(shipped) == len(fresh), hint
    for row in shipped:
        r = fresh[tuple(row[k] for k in keys)]
        assert row["status"] == r["status"], hint
        if r["status"] == "ok":
            assert float(row["latency_s"]) == pytest.approx(r["latency_s"], rel=1e-12), hint
        else:
            assert row["error"] == r["error"], hint
    assert (EXAMPLES / f"{example}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_docstring_examples(monkeypatch):
    import doctest

    import mappers.sweep.strategies
    import mappers.sweep.targets

    monkeypatch.chdir(ROOT)
    for module in (mappers.sweep.targets, mappers.sweep.strategies):
        assert doctest.testmod(module).failed == 0, module.__name__
