"""Hostile and careless inputs of issue 16, each through the real CLI: exit 2 with the fault named, or a sane
result. One test per item of the issue's lists, named after it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from attnscope.cli import main
from einsum import interpreter
from einsum.cascade import Cascade
from einsum.syntax import MAX_NESTING


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, out.out, out.err


GEMM = "input A[T,K], B[K,N]\nC[t,n] = sum[k] A[t,k] * B[k,n]\n"


@pytest.mark.parametrize("flag", ["--arch", "--device"])
def test_binary_file_as_a_spec_is_named(tmp_path, capsys, flag):
    spec = tmp_path / "blob.yaml"
    spec.write_bytes(bytes([0xD1, 0x00, 0xFF, 0x80]) * 64)
    argv = (
        ["cost", "--arch", str(spec), "--workload", "attention-1pass", "--design", "flat"]
        if flag == "--arch"
        else ["predict", "--device", str(spec), "--op", "gemm", "--m", "64", "--n", "64", "--k", "64"]
    )
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and "blob.yaml: not a YAML text file (byte 0 is not UTF-8)" in err


def test_binary_file_as_an_einsum_is_named(tmp_path, capsys):
    blob = tmp_path / "blob.einsum"
    blob.write_bytes(bytes([0xD1, 0x00, 0xFF, 0x80]) * 64)
    code, _, err = run_cli(capsys, "cascade", "show", str(blob))
    assert code == 2 and "blob.einsum: not a cascade text file (byte 0 is not UTF-8)" in err


@pytest.mark.parametrize("opener", ["(", "-"])
def test_deeply_nested_einsum_is_a_syntax_error(tmp_path, capsys, opener):
    closer = ")" if opener == "(" else ""
    deep = tmp_path / "deep.einsum"
    deep.write_text(f"input Q[M,E]\nZ[m] = {opener * 3000}Q[m,0]{closer * 3000}\n")
    code, _, err = run_cli(capsys, "cascade", "show", str(deep), "--shape", "M=4,E=2")
    assert code == 2 and f"deep.einsum:2:{8 + MAX_NESTING}: nested more than {MAX_NESTING} levels deep" in err
    # as deep as allowed still parses
    Cascade.from_text(f"input Q[M,E]\nZ[m] = {'(' * MAX_NESTING}Q[m,0]{')' * MAX_NESTING}\n")


def test_negative_seed_is_refused(capsys):
    code, _, err = run_cli(capsys, "map", "--arch", "fusemax-cloud", "--workload", "gemm", "--shape",
                           "T=64,K=64,N=64", "--einsum", "C", "--seed", "-1")  # fmt: skip
    assert code == 2 and "argument --seed: expected a whole number >= 0, got '-1'" in err


def test_sdpa_larger_than_device_memory_is_refused_before_work(capsys):
    code, _, err = run_cli(capsys, "predict", "--device", "h100-sxm", "--op", "sdpa", "--seq", "1099511627776",
                           "--heads", "16", "--head-dim", "64")  # fmt: skip
    assert code == 2
    assert "inputs and outputs take 8.389e+06 GiB in bf16, more than NVIDIA H100 SXM5 80GB's 74.51 GiB of DRAM" in err


def test_interpreter_run_larger_than_memory_is_refused_before_work(tmp_path, capsys, monkeypatch):
    code, _, err = run_cli(capsys, "cascade", "run", "fusemax", "--shape", "B=1,H=1,M=1M,P=1M,E=64,F=64",
                           "--out", str(tmp_path / "o.npz"))  # fmt: skip
    assert code == 2 and "interpreting it at these sizes needs about" in err and "Einsum QK" in err
    assert not (tmp_path / "o.npz").exists()
    # the estimate is what decides: a small run passes, the same run refused with less memory available
    small = ("cascade", "run", "attention-1pass", "--shape", "B=1,H=1,M=64,P=64,E=8,F=8", "--out", str(tmp_path / "s"))
    assert run_cli(capsys, *small)[0] == 0
    monkeypatch.setattr(interpreter, "available_memory_bytes", lambda: 1e3)
    code, _, err = run_cli(capsys, *small)
    assert code == 2 and "GiB is available; give smaller sizes" in err


def test_shape_with_a_rank_twice_is_refused(capsys):
    code, _, err = run_cli(capsys, "cascade", "show", "attention-1pass", "--shape", "M=4K,M=8K")
    assert code == 2 and "shape item 'M=8K': M is given twice (M=4096 before); give each rank once" in err


def test_out_without_npz_reports_the_file_written(tmp_path, capsys):
    out = tmp_path / "result"
    code, stdout, _ = run_cli(capsys, "cascade", "run", "attention-1pass", "--shape", "B=1,H=1,M=64,P=64,E=8,F=8",
                              "--out", str(out), "--json")  # fmt: skip
    assert code == 0 and json.loads(stdout)["out"] == f"{out}.npz"
    with np.load(f"{out}.npz") as data:
        assert data["AV"].shape == (1, 1, 8, 64)
    (tmp_path / "d.npz").mkdir()
    code, _, err = run_cli(capsys, "cascade", "run", "attention-1pass", "--shape", "B=1,H=1,M=64,P=64,E=8,F=8",
                           "--out", str(tmp_path / "d.npz"))  # fmt: skip
    assert code == 2 and "d.npz: it is a directory" in err


def test_roofline_prefill_with_the_decode_kernel_is_refused(tmp_path, capsys):
    code, _, err = run_cli(capsys, "roofline", "--device", "h100-sxm", "--model", "llama3-8b", "--seq", "4096",
                           "--phase", "prefill", "--kernel", "decode", "--out", str(tmp_path / "r"))  # fmt: skip
    assert code == 2 and "kernel 'decode' runs the decode phase" in err and "fa2 or fa3" in err


def test_predict_gemm_with_causal_is_refused(capsys):
    code, _, err = run_cli(capsys, "predict", "--device", "h100-sxm", "--op", "gemm", "--m", "64", "--n", "64",
                           "--k", "64", "--causal")  # fmt: skip
    assert code == 2 and "--causal does not apply to --op gemm; it takes --m, --n, --k, --batch" in err


def test_unknown_pass_rank_is_refused_and_a_cascade_without_key_rank_says_so(tmp_path, capsys):
    gemm = tmp_path / "g.einsum"
    gemm.write_text(GEMM)
    code, _, err = run_cli(capsys, "cascade", "show", str(gemm), "--shape", "T=4,K=4,N=4", "--rank", "ZZ")
    assert code == 2 and "g: no rank 'ZZ' to walk; its ranks are K, N, T" in err
    code, out, _ = run_cli(capsys, "cascade", "show", str(gemm), "--shape", "T=4,K=4,N=4", "--json")
    info = json.loads(out)
    assert code == 0 and info["passes"] is None and "give --rank R to walk one" in info["pass_note"]
    code, out, _ = run_cli(capsys, "cascade", "show", str(gemm), "--shape", "T=4,K=4,N=4", "--rank", "K", "--json")
    assert json.loads(out)["passes"] == 1 and json.loads(out)["pass_rank"] == "K"
    code, out, _ = run_cli(capsys, "cascade", "show", "decode-splitk", "--json")  # the key rank by default
    assert json.loads(out)["pass_rank"] == "M"


def test_roofline_of_an_encoder_model_covers_every_layer(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "roofline", "--device", "h100-sxm", "--model", "bert", "--seq", "512",
                           "--out", str(tmp_path / "r"), "--no-plot", "--json")  # fmt: skip
    study = json.loads(out)
    assert code == 0 and study["layers"] == 12  # BERT-Base
    assert study["model_time_s"] == pytest.approx(12 * study["layer_time_s"], rel=1e-12)


@pytest.mark.parametrize("target", ["arch", "device"])
def test_absurd_dram_bandwidth_is_refused_with_the_range(tmp_path, capsys, target):
    import yaml

    from simulator.device import DEVICES
    from simulator.specs import load_arch

    if target == "arch":
        data = load_arch("fusemax-cloud").to_dict()
        data["levels"][0]["bandwidth_bytes_per_s"] = 1e-30
        argv = ["cost", "--arch", "{}", "--workload", "attention-3pass", "--design", "flat"]
        key = "levels[0].bandwidth_bytes_per_s"
    else:
        data = yaml.safe_load(DEVICES["h100-sxm"].read_text())
        data["dram_bytes_per_s"] = 1e-30
        argv = ["predict", "--device", "{}", "--op", "gemm", "--m", "64", "--n", "64", "--k", "64"]
        key = "dram_bytes_per_s"
    spec = tmp_path / "slow.yaml"
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    code, _, err = run_cli(capsys, *[str(spec) if a == "{}" else a for a in argv])
    assert code == 2 and f"{key}: expected a number in [1e+06, 1e+16] B/s (1 MB/s to 10 PB/s)" in err
    assert "got 1e-30" in err


def test_sweep_store_in_a_missing_folder_names_the_folder(tmp_path, capsys):
    store = tmp_path / "no-such-folder" / "s.sqlite"
    spec = Path(__file__).resolve().parents[2] / "examples" / "sweeps" / "edge-decode.yaml"
    assert main(["sweep", str(spec), "--store", str(store), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"folder {store.parent} does not exist" in err and "Traceback" not in err
    assert not store.parent.exists()
