"""The command line as a user drives it."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from attnscope.cli import main
from tests.reference import softmax_attention


def run_cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cascades_table_and_json(capsys):
    code, out, _ = run_cli(capsys, "cascades")
    assert code == 0
    for name in ("attention-3pass", "attention-2pass", "attention-1pass", "fusemax", "fusemax-causal"):
        assert name in out
    code, out, _ = run_cli(capsys, "cascades", "--json", "--shape", "M=4K,E=128,F=128")
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["attention-3pass"]["passes"] == 3 and rows["fusemax"]["einsums"] == 12
    assert rows["fusemax"]["shape"]["M"] == 4096 and rows["fusemax"]["shape"]["M0"] == 256


def test_show_json_reports_ranks_in_array_order(capsys):
    code, out, _ = run_cli(capsys, "cascade", "show", "fusemax", "--json")
    info = json.loads(out)
    assert code == 0
    assert info["name"] == "fusemax" and info["passes"] == 1
    assert info["inputs"] == {"Q": ["B", "H", "E", "P"], "K": ["B", "H", "E", "M"], "V": ["B", "H", "F", "M"]}
    assert info["outputs"] == {"AV": ["B", "H", "F", "P"]}
    assert len(info["einsums"]) == 12 and info["einsums"][0].startswith("QK[b,h,m1,m0,p] = sum[e]")


def test_show_text(capsys):
    code, out, _ = run_cli(capsys, "cascade", "show", "attention-3pass", "--shape", "M=512")
    assert code == 0
    assert "passes over M: 3" in out and "GM[b,h,p] = max[m] QK[b,h,m,p]" in out


def test_run_with_given_inputs_computes_attention(tmp_path, capsys):
    rng = np.random.default_rng(3)
    q, k, v = rng.standard_normal((1, 2, 8, 16)), rng.standard_normal((1, 2, 8, 32)), rng.standard_normal((1, 2, 4, 32))
    np.savez(tmp_path / "in.npz", Q=q, K=k, V=v)
    code, _, err = run_cli(
        capsys, "cascade", "run", "fusemax-causal", "--shape", "B=1,H=2,M=32,P=16,E=8,F=4,M0=8",
        "--inputs", str(tmp_path / "in.npz"), "--out", str(tmp_path / "out.npz"),
    )  # fmt: skip
    assert code == 0, err
    with np.load(tmp_path / "out.npz") as out:
        np.testing.assert_allclose(out["AV"], softmax_attention(q, k, v, causal=True), rtol=1e-9)


def test_run_draws_missing_inputs_from_the_seed(tmp_path, capsys):
    args = ["cascade", "run", "attention-2pass", "--shape", "B=1,H=2,M=128,P=64,E=32,F=32", "--save-inputs"]
    assert main([*args, "--seed", "5", "--out", str(tmp_path / "a.npz")]) == 0
    assert main([*args, "--seed", "5", "--out", str(tmp_path / "b.npz")]) == 0
    capsys.readouterr()
    with np.load(tmp_path / "a.npz") as a, np.load(tmp_path / "b.npz") as b:
        assert a["AV"].shape == (1, 2, 32, 64)
        np.testing.assert_array_equal(a["AV"], b["AV"])
        np.testing.assert_allclose(a["AV"], softmax_attention(a["Q"], a["K"], a["V"]), rtol=1e-9)


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["cascade", "show", "flash"], "unknown cascade 'flash'; registered cascades: attention-1pass"),
        (["cascade", "show", "fusemax", "--shape", "M=1000,M0=256"], "M=1000 is not divisible by M0=256"),
        (["cascade", "show", "fusemax", "--shape", "m=4"], "rank names are UPPER case"),
        (["cascade", "show", "fusemax", "--shape", "M=abc"], "must be a positive integer"),
        (["cascade", "show", "fusemax", "--shape", "Z=4"], "unknown rank Z"),
        (["cascade", "show", "missing.einsum"], "cannot read cascade file missing.einsum"),
        (["cascade", "run", "fusemax", "--out", "/nonexistent/dir/x.npz"], "cannot write /nonexistent/dir/x.npz"),
        (["cascade", "run", "fusemax", "--inputs", "nope.npz", "--out", "x.npz"], "cannot read inputs nope.npz"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_input_exits_2_with_a_message(argv, fragment, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert fragment in err
    assert "Traceback" not in err


def test_wrong_input_shape_is_reported(tmp_path, capsys):
    np.savez(tmp_path / "in.npz", Q=np.zeros((1, 1, 3, 3)), W=np.zeros(2))
    code, _, err = run_cli(
        capsys, "cascade", "run", "attention-3pass", "--inputs", str(tmp_path / "in.npz"), "--out", "x.npz"
    )
    assert code == 2 and "unknown input array(s) W" in err


def test_console_script_runs_in_a_fresh_process(tmp_path):
    bad = tmp_path / "bad.einsum"
    bad.write_text("input Q[M]\nX[m] = Q[m] $ 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "attnscope.cli", "cascade", "show", str(bad)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "unexpected character '$'" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "attnscope.cli", "cascades"], capture_output=True, text=True)
    assert proc.returncode == 0 and "fusemax" in proc.stdout


def test_console_script_quick_exit_keeps_every_byte_and_the_status(capsys, tmp_path):
    """``run`` leaves without the interpreter's teardown: the output must still be complete (a long JSON document
    through a pipe), the status main's, and the ``atexit`` handlers run (here: one that writes a file)."""
    code, expected, _ = run_cli(capsys, "cascade", "show", "fusemax", "--json", "--direction", "bwd")
    assert code == 0 and len(expected) > 5_000

    def console_script(*argv: str, marker: Path | None = None) -> subprocess.CompletedProcess:
        hook = f"atexit.register(pathlib.Path({str(marker)!r}).write_text, 'yes'); " if marker else ""
        argv_line = f"sys.argv = {['attnscope', *argv]!r}; "
        script = f"import atexit, pathlib, sys; from attnscope import cli; {hook}{argv_line}cli.run()"
        return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)

    proc = console_script("cascade", "show", "fusemax", "--json", "--direction", "bwd")
    assert proc.returncode == 0 and proc.stdout == expected
    marker = tmp_path / "atexit-ran"
    proc = console_script("cascade", "show", "no-such-cascade", marker=marker)
    assert proc.returncode == 2 and "no-such-cascade" in proc.stderr and "Traceback" not in proc.stderr
    assert marker.read_text() == "yes"


def test_a_reader_that_stops_reading_ends_the_command_quietly():
    """``attnscope cascades | head -1``: the pipe's reader goes away; no traceback and no "cannot use a file"
    message, the exit status of a command killed by SIGPIPE (141)."""
    proc = subprocess.Popen([sys.executable, "-m", "attnscope.cli", "cascades"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    proc.stdout.close()  # the reader is gone before the first line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert err == ""
