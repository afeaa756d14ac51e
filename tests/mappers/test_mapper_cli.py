"""``attnscope map`` and ``attnscope bench mapper`` as a user drives them (small spaces; no timing asserted)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from attnscope.cli import main

ROOT = Path(__file__).resolve().parents[2]


def run_cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


GEMM_ARGS = ("map", "--arch", "flat-edge", "--workload", "gemm", "--shape", "T=64,K=64,N=64")
THREE = ("--levels", "dram,global_buffer,pe_reg_2d")


def test_map_prints_the_loop_nest_costs_and_search_figures(capsys):
    code, out, err = run_cli(capsys, *GEMM_ARGS, *THREE, "--budget", "3000", "--quiet")
    assert code == 0, err
    for fragment in (
        "C[t,n] = sum[k] A[t,k] * B[k,n]    (T=64, K=64, N=64)",
        "on pe_2d of flat-edge (32 rows x 32 cols); levels dram > global_buffer > pe_reg_2d",
        "objective latency; method anneal (3,000 evaluations); seed 0",
        "evaluations/s",
        "best mapping (outermost loop first; par-for = spatial):",
        "par-for",
        "-- spread over pe_2d --",
        "latency ",
        "lower bound",
    ):
        assert fragment in out
    header = next(line for line in out.splitlines() if line.startswith("level "))
    assert header.split() == [
        "level",
        "words",
        "holds",
        "occupancy",
        "reads",
        "fills",
        "updates",
        "energy_pj",
        "cycles",
    ]
    assert any(line.startswith("compute ") for line in out.splitlines())


def test_map_json_reports_latency_energy_edp(capsys):
    argv = ("map", "--arch", "fusemax-cloud", "--workload", "attention-3pass", "--shape", "B=2,H=2,M=256,E=64")
    code, out, err = run_cli(capsys, *argv, "--einsum", "QK", "--budget", "2000", "--seed", "4", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["einsum"] == "QK" and data["method"] == "anneal" and data["evaluations"] == 2000
    assert data["edp"] == pytest.approx(data["latency_s"] * data["energy_pj"])
    assert data["latency_s"] >= data["lower_bound_latency_s"] * (1 - 1e-12)
    assert data["space_size"] > 10**9 and data["evaluations_per_s"] > 0 and data["seed"] == 4
    assert [lv["level"] for lv in data["mapping"]["levels"]] == ["dram", "global_buffer", "reg_file_1d", "pe_reg_2d"]
    assert set(data["mapping"]["spatial"]) == {"rows", "cols"}
    assert data["shape"]["P"] == 256


def test_map_exhaustive_with_constraints_and_objective(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(
        "targets:\n  - {target: pe_2d, type: spatial, factors: {t: 32, n: 32}, axes: {rows: [t], cols: [n]}}\n"
    )
    argv = (*GEMM_ARGS, *THREE, "--constraints", str(path), "--objective", "energy", "--exhaustive", "--json")
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    data = json.loads(out)
    assert data["complete"] and data["method"] == "exhaustive" and data["objective"] == "energy"
    assert data["mapping"]["spatial"] == {"rows": [["t", 32]], "cols": [["n", 32]]}


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (
            ("map", "--arch", "fusemax-cloud", "--workload", "attention-3pass", "--einsum", "ZZ"),
            "is not an Einsum of attention-3pass; choose from QK, GM",
        ),
        (("map", "--device", "h100-sxm", "--workload", "attention-3pass", "--einsum", "QK"), "give --arch"),
        (
            ("map", "--arch", "fusemax-cloud", "--workload", "linear-attention", "--mapper", "fusemax-binding"),
            "written for the Einsums of the 'fusemax' cascade",
        ),
        (("map", "--arch", "fusemax-cloud", "--workload", "gqa", "--param", "window=64"), "unknown parameter 'window'"),
        (("map", "--arch", "fusemax-cloud", "--workload", "gemm", "--shape", "T=8,K=8"), "needs T, K and N"),
        ((*GEMM_ARGS, "--objective", "speed"), "objective 'speed' is unknown"),
        ((*GEMM_ARGS, "--levels", "dram,sram"), "'sram' not on the path of pe_2d"),
        ((*GEMM_ARGS, "--exhaustive", "--budget", "5"), "not allowed with argument"),
        ((*GEMM_ARGS, "--constraints", "/no/such.yaml"), "/no/such.yaml: cannot read"),
        (("map", "--arch", "nope", "--workload", "gemm", "--shape", "T=8,K=8,N=8"), "unknown architecture 'nope'"),
    ],
)
def test_map_errors_exit_2_with_a_message(capsys, argv, fragment):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert fragment in err and "Traceback" not in err


def test_bench_mapper_json(capsys):
    code, out, err = run_cli(capsys, "bench", "mapper", "--evaluations", "5000", "--repeats", "1", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["evaluations_per_s"] > 0 and data["evaluations_per_s_parallel"] > 0
    code, out, _ = run_cli(capsys, "bench", "mapper", "--evaluations", "5000", "--repeats", "1")
    assert code == 0 and "one core:" in out and "evaluations/s" in out


def _sigint_default() -> None:
    """In the child before exec: SIGINT as in a terminal's foreground job. A suite started in the background by a
    non-interactive shell ignores SIGINT, and its children inherit that (then Python installs no handler)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process")
def test_ctrl_c_prints_the_best_mapping_so_far():
    """A long exhaustive walk (a 6.5e12-point space; a budget makes it walk in order rather than branch and bound,
    so it costs points from the start) interrupted by SIGINT."""
    argv = [
        sys.executable, "-m", "attnscope.cli", "map", "--arch", "fusemax-cloud", "--workload", "gemm",
        "--shape", "T=4096,K=4096,N=4096", "--method", "exhaustive", "--budget", str(10**15), "--json",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=_sigint_default)  # fmt: skip
    time.sleep(15)  # past imports and any Numba compile (a fresh cache), well inside the ~8-minute search
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    data = json.loads(out)
    assert data["interrupted"] and not data["complete"] and data["evaluations"] > 0


@pytest.mark.parametrize("target", [("--arch", "flat-edge"), ("--device", "orin-agx")])
def test_map_without_einsum_maps_the_whole_cascade_with_the_issue_keys(capsys, tmp_path, target):
    saved = tmp_path / "m.yaml"
    code, out, err = run_cli(capsys, "map", "--workload", "sliding-window", "--shape", "H=2,M=2K", "--param",
                             "window=256", *target, "--json", "--save-mapping", str(saved))  # fmt: skip
    assert code == 0, err
    data = json.loads(out)
    assert {"latency_s", "bound", "dram_bytes", "energy_j", "area_mm2", "utilization", "feasible", "onchip_bytes",
            "spill_bytes", "mapping", "target", "workload", "shape"} <= set(data)  # fmt: skip
    assert data["shape"]["W"] == 256 and data["workload"] == "sliding-window"
    assert (data["energy_j"] is None) == (target[0] == "--device")
    assert saved.exists()
    if target[0] == "--arch":  # a design that skips masked tiles cannot be costed again from its file
        code, _, err = run_cli(capsys, "map", "--workload", "sliding-window", "--shape", "H=2,M=2K", "--param",
                               "window=256", *target, "--mapping", str(saved))  # fmt: skip
        assert code == 2 and "computed_tiles" in err


def test_a_saved_whole_cascade_mapping_costs_the_same_again(capsys, tmp_path):
    saved = tmp_path / "m.yaml"
    argv = ("map", "--workload", "attention-1pass", "--shape", "H=2,M=2K", "--arch", "flat-edge", "--json")
    code, out, err = run_cli(capsys, *argv, "--save-mapping", str(saved))
    assert code == 0, err
    code, again, err = run_cli(capsys, *argv, "--mapping", str(saved))
    assert code == 0, err
    first, second = json.loads(out), json.loads(again)
    assert second["mapper"] == "mapping" and second["latency_s"] == pytest.approx(first["latency_s"], rel=1e-12)
    assert second["energy_j"] == pytest.approx(first["energy_j"], rel=1e-12)


def test_a_saved_device_design_loads_again_and_its_tile_can_be_pinned(capsys, tmp_path):
    import yaml

    saved = tmp_path / "gpu.yaml"
    argv = ("map", "--workload", "sliding-window", "--shape", "H=8,M=8K,E=128,F=128", "--device", "h100-sxm", "--json")
    code, out, err = run_cli(capsys, *argv, "--save-mapping", str(saved))
    assert code == 0, err
    code, again, err = run_cli(capsys, *argv, "--mapping", str(saved))
    assert code == 0, err
    first, second = json.loads(out), json.loads(again)
    assert second["latency_s"] == first["latency_s"] and second["mapping"]["tiles"] == first["mapping"]["tiles"]
    data = yaml.safe_load(saved.read_text())
    data["tiles"]["block_m"] = 64 if data["tiles"]["block_m"] != 64 else 128  # another tile that fits
    saved.write_text(yaml.safe_dump(data))
    code, pinned, err = run_cli(capsys, *argv, "--mapping", str(saved))
    assert code == 0, err
    pinned = json.loads(pinned)
    assert pinned["mapping"]["tiles"]["block_m"] == data["tiles"]["block_m"]
    assert pinned["latency_s"] >= first["latency_s"]  # the search kept the fastest
    data["dtype"] = "fp16"
    saved.write_text(yaml.safe_dump(data))
    code, _, err = run_cli(capsys, *argv, "--mapping", str(saved))
    assert code == 2 and "give --dtype fp16" in err
