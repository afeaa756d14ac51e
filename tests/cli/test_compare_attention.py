"""`attnscope compare-attention` as a user drives it: files, columns, one row per (variant, length), errors."""

import csv
import doctest
import json
import os
import time

import pytest

import attnscope.compare_attention as compare_module
from attnscope.cli import main
from attnscope.compare_attention import COLUMNS, attention_variants, compare_attention
from einsum.errors import AttnscopeError

PNG = b"\x89PNG\r\n\x1a\n"


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_module_doctests():
    assert doctest.testmod(compare_module).failed == 0


@pytest.mark.parametrize(
    ("target", "variants"),
    [
        (("--device", "h100-sxm"), ["gqa", "sliding-window", "moba", "decode-splitk", "attention-3pass"]),
        (("--arch", "fusemax-cloud"), ["fusemax", "gqa", "attention-3pass"]),
    ],
)
def test_writes_table_report_and_plot_with_a_row_per_variant_and_length(capsys, tmp_path, target, variants):
    seqs = ("1K", "4K", "16K")
    code, out, err = run(capsys, "compare-attention", *target, "--model", "llama3-8b", "--seq", ",".join(seqs),
                         "--variants", ",".join(variants), "--out", str(tmp_path))  # fmt: skip
    assert code == 0, err
    with (tmp_path / "compare.csv").open() as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames) == COLUMNS
    assert sorted((r["variant"], r["seq"]) for r in rows) == sorted(
        (v, str(s)) for v in variants for s in (1024, 4096, 16384)
    )
    for r in rows:
        assert int(r["passes"]) >= 1 and r["status"]
        if r["status"] == "ok":
            assert float(r["latency_s"]) > 0 and float(r["dram_bytes"]) > 0 and r["bound"] != "-"
            assert (r["energy_pj"] != "") == (target[0] == "--arch")
    png = (tmp_path / "compare.png").read_bytes()
    assert png.startswith(PNG) and len(png) > 10_000
    report = (tmp_path / "report.md").read_text()
    assert all(v in report for v in variants) and "compare.png" in report
    assert "Traceback" not in err and "wrote" in out


def test_impossible_lengths_get_a_reason_instead_of_failing(tmp_path):
    study = compare_attention(device="h100-sxm", model="llama2-7b", seqs=[4096, 1 << 20],
                              variants=["attention-3pass", "attention-1pass-causal"])  # fmt: skip
    by = {(r.variant, r.seq): r for r in study.rows}
    unfused = by["attention-3pass", 1 << 20]
    assert unfused.latency_s is None and "dram_bytes" in unfused.status and unfused.status.startswith("impossible")
    assert by["attention-1pass-causal", 1 << 20].ok and by["attention-3pass", 4096].ok


def test_masked_variants_are_cheaper_than_dense_causal_on_the_gpu():
    masked = ["attention-1pass-causal", "sliding-window", "moba", "s2-attention"]
    study = compare_attention(device="h100-sxm", model="mistral-7b", seqs=[65536], variants=masked)
    t = {r.variant: r.latency_s for r in study.rows}
    assert max(t["sliding-window"], t["moba"], t["s2-attention"]) < t["attention-1pass-causal"]


def test_every_variant_at_six_lengths_on_the_gpu_within_the_time_budget(tmp_path):
    start = time.process_time()
    study = compare_attention(device="h100-sxm", model="llama3-8b", seqs=[1 << k for k in (10, 12, 14, 16, 18, 20)])
    compare_module.write_comparison(study, tmp_path)
    assert time.process_time() - start < 10.0
    assert {r.variant for r in study.rows} == set(attention_variants()) and len(study.rows) == 6 * len(study.variants)
    assert all(r.ok or r.status.startswith("impossible") for r in study.rows)


def test_worker_processes_give_the_same_rows_in_the_same_order(tmp_path):
    """``jobs`` > 1 spreads the cells over worker processes that rebuild each case and the target: the rows are
    those of the in-process loop, in its order."""
    kwargs = dict(arch="fusemax-cloud", model="bert", seqs=[1024, 1 << 20],
                  variants=["attention-3pass", "attention-2pass-causal", "sliding-window", "mla"])  # fmt: skip
    alone, spread = compare_attention(**kwargs), compare_attention(**kwargs, jobs=2)
    assert spread.rows == alone.rows and len(alone.rows) == 8
    with pytest.raises(AttnscopeError, match="jobs must be a positive integer"):
        compare_attention(**kwargs, jobs=0)
    # a device spec object (not picklable: its tables are read-only mappings) keeps its cells in this process
    from simulator.device import load_device

    on_device = dict(model="bert", seqs=[1024, 4096], variants=["attention-3pass", "gqa"])
    assert (compare_attention(device=load_device("h100-sxm"), **on_device, jobs=2).rows
            == compare_attention(device="h100-sxm", **on_device).rows)  # fmt: skip


def test_progress_bar_counts_the_cells_on_stderr(capsys):
    study = compare_attention(device="h100-sxm", model="bert", seqs=[1024, 4096], variants=["gqa", "mqa"],
                              progress=True)  # fmt: skip
    err = capsys.readouterr().err
    assert len(study.rows) == 4 and "compare-attention on h100-sxm" in err and "4/4" in err


def test_json_output(capsys, tmp_path):
    code, out, _ = run(capsys, "compare-attention", "--device", "h100-sxm", "--model", "bert", "--seq", "2K",
                       "--variants", "streaming-llm", "--window", "512", "--sinks", "8", "--no-plot", "--json",
                       "--out", str(tmp_path))  # fmt: skip
    data = json.loads(out)
    assert code == 0 and data["rows"][0]["params"] == "sinks=8;window=512" and "plot" not in data["files"]


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (("--device", "h100-sxm", "--model", "llama3-8b", "--variants", "gqa,flashy"),
         "unknown variant(s) flashy; valid variants: attention-3pass"),
        (("--device", "h100-sxm", "--model", "gpt-9"), "known models: llama2-7b"),
        (("--arch", "fusemax-cloud", "--model", "bert", "--seq", "4K,x"), "must be a positive integer"),
        (("--device", "h100-sxm", "--model", "bert", "--density", "2"), "not a number in (0, 1]"),
        (("--model", "bert",), "one of the arguments --device --arch is required"),
        (("--arch", "fusemax-cloud", "--model", "bert", "--jobs", "0"), "--jobs"),
    ],
)  # fmt: skip
def test_bad_input_exits_2_naming_what_is_valid(capsys, tmp_path, argv, fragment):
    code, _, err = run(capsys, "compare-attention", *argv, "--out", str(tmp_path))
    assert code == 2 and fragment in err and "Traceback" not in err


def test_direction_on_a_device_and_an_array():
    kw = {"model": "llama3-8b", "seqs": [1024]}
    gpu = {d: compare_attention(device="h100-sxm", variants=["gqa", "moba"], direction=d, **kw)
           for d in ("fwd", "bwd", "fwd+bwd")}  # fmt: skip
    rows = {d: {r.variant: r for r in study.rows} for d, study in gpu.items()}
    gqa = {d: r["gqa"] for d, r in rows.items()}
    assert gqa["fwd+bwd"].latency_s == pytest.approx(gqa["fwd"].latency_s + gqa["bwd"].latency_s, rel=1e-9)
    assert gqa["bwd"].kernel == "fa3-bwd" and gqa["fwd+bwd"].kernel == "fa3+fa3-bwd"
    assert rows["fwd"]["moba"].ok and not rows["bwd"]["moba"].ok
    assert rows["bwd"]["moba"].status.startswith("impossible: moba: no backward kernel on a device")
    assert gpu["bwd"].direction == "bwd" and any("Direction bwd" in n for n in gpu["bwd"].notes)
    array = {d: compare_attention(arch="fusemax-cloud", variants=["attention-1pass"], direction=d, **kw).rows[0]
             for d in ("fwd", "bwd", "fwd+bwd")}  # fmt: skip
    assert all(r.ok for r in array.values())
    assert array["bwd"].latency_s > array["fwd"].latency_s
    assert array["fwd+bwd"].energy_pj == pytest.approx(array["fwd"].energy_pj + array["bwd"].energy_pj, rel=1e-9)


def test_direction_in_the_report_and_json(capsys, tmp_path):
    code, out, err = run(capsys, "compare-attention", "--device", "h100-sxm", "--model", "llama3-8b", "--seq", "1K",
                         "--variants", "sliding-window", "--direction", "fwd+bwd", "--out", str(tmp_path), "--no-plot",
                         "--json")  # fmt: skip
    assert code == 0, err
    data = json.loads(out)
    assert data["direction"] == "fwd+bwd" and data["rows"][0]["kernel"] == "fa3+fa3-bwd"
    assert (tmp_path / "report.md").read_text().startswith("# Attention variants on h100-sxm: llama3-8b (forward +")


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (("--direction", "sideways"), "argument --direction: invalid choice: 'sideways'"),
        (("--direction", "bwd", "--dtype", "fp8"), "--direction bwd with --dtype fp8: the GPU backward kernels run"),
    ],
)
def test_bad_direction_exits_2_naming_the_flag(capsys, tmp_path, argv, fragment):
    code, _, err = run(capsys, "compare-attention", "--device", "h100-sxm", "--model", "llama3-8b", "--seq", "1K",
                       *argv, "--out", str(tmp_path))  # fmt: skip
    assert code == 2 and fragment in err and "Traceback" not in err


def _session_processes(sid: int) -> list[int]:
    """Processes of a session (Linux /proc): the run started as its leader and what it started."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid:  # after the command name: state, ppid, pgrp, session
                out.append(int(entry))
    return out


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the run's worker processes in /proc (Linux)")
def test_ctrl_c_with_worker_processes_exits_130_without_a_traceback(tmp_path):
    """Ctrl-C (SIGINT to the foreground process group, as a terminal sends it) while worker processes cost the
    cells: exit 130 and one line, no traceback from the parent or a worker, no process left behind."""
    import signal
    import subprocess
    import sys

    def foreground() -> None:  # SIGINT as in a terminal (a background suite's children may ignore it)
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    seqs = ",".join(f"{1 << k}K" for k in range(11))  # 1K..1M, every power of two: 260 cells, 10 s or more
    argv = [sys.executable, "-c", "from attnscope import cli; cli.run()", "compare-attention", "--arch",
            "fusemax-cloud", "--model", "bert", "--seq", seqs, "--jobs", "2", "--no-plot",
            "--out", str(tmp_path / "out")]  # fmt: skip
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=foreground, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while len(_session_processes(child.pid)) < 4 and time.monotonic() < deadline:  # the run, forkserver, 2 workers
        time.sleep(0.1)
    time.sleep(1.0)  # into the cells
    assert child.poll() is None, "the run ended before it could be interrupted"
    os.killpg(child.pid, signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    deadline = time.monotonic() + 20  # the workers go with the pool; the forkserver when it sees the parent gone
    while time.monotonic() < deadline:
        try:
            os.killpg(child.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        pytest.fail("processes of the run were left behind")
