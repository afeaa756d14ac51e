"""`attnscope predict`, `attnscope roofline` and `attnscope devices` as a user drives them."""

import json
import time

import pytest

from attnscope.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_predict_sdpa_json_has_time_and_mapping(capsys):
    start = time.process_time()
    code, out, _ = run(capsys, "predict", "--device", "h100-sxm", "--op", "sdpa", "--batch", "4", "--heads", "32",
                       "--kv-heads", "8", "--seq", "8192", "--head-dim", "128", "--dtype", "bf16", "--causal",
                       "--kernel", "fa3", "--json")  # fmt: skip
    assert time.process_time() - start < 2.0
    data = json.loads(out)
    assert code == 0 and data["time_s"] > data["roofline_s"] > 0
    assert data["bound"] == "tensor" and data["tiles"]["block_m"] >= 64 and 0 < data["tflops"] < 989
    assert data["hbm_bytes"] > 0 and data["kernel"] == "fa3"


def test_predict_text_and_other_ops(capsys):
    code, out, _ = run(capsys, "predict", "--device", "a100-sxm", "--op", "gemm", "--m", "4K", "--n", "4K", "--k", "4K")
    assert code == 0 and "TFLOP/s" in out and "cta_m=" in out
    code, out, _ = run(capsys, "predict", "--device", "h100-sxm", "--op", "sdpa", "--batch", "1", "--heads", "8",
                       "--seq", "2048", "--head-dim", "64", "--kernel", "unfused")  # fmt: skip
    assert code == 0 and "softmax" in out and "gemm" in out
    code, out, _ = run(capsys, "predict", "--device", "h100-sxm", "--op", "copy", "--nbytes", "1048576", "--json")
    assert code == 0 and json.loads(out)["bound"] in ("memory", "launch")


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (("predict", "--device", "h300", "--op", "copy", "--nbytes", "8"), "registered: a100-sxm"),
        (("predict", "--device", "a100-sxm", "--op", "sdpa", "--batch", "1", "--heads", "8", "--seq", "1024",
          "--head-dim", "1024", "--kernel", "fa2"), "smem_bytes_per_sm"),
        (("predict", "--device", "h100-sxm", "--op", "gemm", "--m", "8"), "gemm: missing n, k"),
        (("roofline", "--device", "h100-sxm", "--model", "gpt5", "--out", "x"), "known models: llama2-7b"),
        (("roofline", "--arch", "tpu-v9", "--model", "bert", "--out", "x"), "registered: "),
    ],
)  # fmt: skip
def test_bad_input_exits_2_naming_what_is_valid(capsys, argv, fragment):
    code, _, err = run(capsys, *argv)
    assert code == 2 and fragment in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("target", "model", "phase"),
    [(("--device", "h100-sxm"), "llama3-8b", "prefill"), (("--device", "orin-agx"), "mistral-7b", "decode"),
     (("--arch", "fusemax-cloud"), "bert", "prefill")],
)  # fmt: skip
def test_roofline_writes_report_and_png_quickly(capsys, tmp_path, target, model, phase):
    start = time.process_time()
    code, out, _ = run(capsys, "roofline", *target, "--model", model, "--phase", phase, "--seq", "4096",
                       "--batch", "2", "--out", str(tmp_path), "--json")  # fmt: skip
    assert time.process_time() - start < 2.0
    summary = json.loads(out)
    assert code == 0 and summary["model_time_s"] > 0 and summary["tokens_per_s"] > 0
    rows = {r["kernel"]: r for r in summary["rows"]}
    assert {"qkv_proj", "attention", "o_proj", "down_proj"} <= set(rows)
    assert all(r["time_s"] >= r["bound_s"] * (1 - 1e-9) for r in rows.values())
    report = (tmp_path / "report.md").read_text()
    assert "| kernel | Einsums | GFLOP" in report and "tokens per second" in report and "Assumptions" in report
    png = (tmp_path / "roofline.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_devices_lists_the_presets(capsys):
    code, out, _ = run(capsys, "devices")
    assert code == 0 and "h100-sxm" in out and "orin-nano-super" in out
    code, out, _ = run(capsys, "devices", "m2", "--json")
    assert code == 0 and json.loads(out)["kind"] == "edge"
