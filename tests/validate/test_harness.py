"""The measurement harness: sweep specs, CSV schema, check-before-time, skips; torch tests import it lazily."""

import doctest
import math
import re
from pathlib import Path

import pytest

from attnscope.cli import main
from einsum.errors import AttnscopeError, RegistryError, SpecError
from validate.harness import COLUMNS, OPS, Measurement, load_sweep, read_csv, sweep_from_dict, sweep_names, write_csv

SCHEMA = Path(__file__).resolve().parents[2] / "validate" / "data" / "SCHEMA.md"


def _sweep(*cases, **timing):
    return {"name": "t", "timing": {"warmup_s": 0.0, "budget_s": 0.005, "min_runs": 3, "max_runs": 5, **timing},
            "cases": list(cases)}  # fmt: skip


# -- sweep specs (no torch) -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sweep_names())
def test_builtin_sweeps_load(name):
    sweep = load_sweep(name)
    assert sweep.name == name and sweep.cases
    assert {c.role for c in sweep.cases} == {"calibration", "validation"}


def test_ci_sweep_covers_twenty_shapes_of_matmul_softmax_and_sdpa():
    cases = [c for c in load_sweep("cpu-ci").cases if c.role == "validation"]
    shapes = {(c.op, c.shape) for c in cases if c.family in ("gemm", "softmax", "sdpa")}
    assert len(shapes) >= 20
    assert {c.family for c in cases} >= {"gemm", "softmax", "sdpa"}
    assert {c.backend for c in cases if c.op == "sdpa"} == {"flash", "math", "efficient", "cudnn"}


def test_sweep_expands_grid_where_and_defaults():
    sweep = sweep_from_dict(_sweep({
        "op": "sdpa", "backends": ["flash", "math"], "masks": ["none", "causal"],
        "grid": {"batch": [1], "heads": [4], "seq_q": [64, 128], "seq_kv": [64, 128], "head_dim": [32]},
        "where": "seq_q == seq_kv",
    }))  # fmt: skip
    assert len(sweep.cases) == 2 * 2 * 2
    first = sweep.cases[0]
    assert first.sizes == {"batch": 1, "heads": 4, "seq_q": 64, "seq_kv": 64, "head_dim": 32, "kv_heads": 4}
    assert first.label == "sdpa/flash fp32 batch=1;heads=4;seq_q=64;seq_kv=64;head_dim=32;kv_heads=4"


@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        ({"op": "conv"}, "cases[0].op: unknown operation 'conv'; known: matmul, bmm"),
        ({"op": "matmul", "shapes": [{"m": 4, "n": 4}]}, "cases[0].shapes[0]: missing k; matmul needs m, n, k"),
        ({"op": "matmul", "grid": {"m": [0], "n": [1], "k": [1]}}, "cases[0].grid.m: expected a non-empty list"),
        ({"op": "matmul", "shapes": [{"m": 4, "n": 4, "k": 4, "q": 1}]}, "cases[0].shapes[0].q: unknown key"),
        ({"op": "sdpa", "role": "calibration", "shapes": []}, "may calibrate (microbenchmarks), not sdpa"),
        ({"op": "sdpa", "backends": ["triton"], "shapes": []}, "cases[0].backends: unknown triton; allowed: flash"),
        ({"op": "softmax", "dtypes": ["int8"], "shapes": []}, "cases[0].dtypes: unknown int8"),
        ({"op": "copy"}, "cases[0]: give shapes: (a list) or grid:"),
        ({"op": "sdpa", "masks": ["causal"],
          "shapes": [{"batch": 1, "heads": 1, "seq_q": 4, "seq_kv": 8, "head_dim": 4}]}, "needs seq_q == seq_kv"),
        ({"op": "flex_attention", "masks": ["sliding_window"],
          "shapes": [{"batch": 1, "heads": 1, "seq_q": 4, "seq_kv": 4, "head_dim": 4}]}, "sliding_window needs window"),
        ({"op": "sdpa", "shapes": [{"batch": 1, "heads": 3, "kv_heads": 2, "seq_q": 4, "seq_kv": 4, "head_dim": 4}]},
         "heads 3 is not a multiple of kv_heads 2"),
    ],
)  # fmt: skip
def test_sweep_errors_name_the_key_and_what_is_allowed(case, fragment):
    with pytest.raises(SpecError) as err:
        sweep_from_dict(_sweep(case), "s.yaml")
    assert fragment in str(err.value)
    assert str(err.value).startswith("s.yaml: ")


def test_every_problem_is_reported_at_once():
    data = _sweep({"op": "conv"}, {"op": "matmul", "grid": {"m": "x"}}, rounds=0)
    with pytest.raises(SpecError) as err:
        sweep_from_dict(data, "s.yaml")
    text = str(err.value)
    assert "problems in the sweep" in text
    for fragment in ("timing.rounds: expected a positive integer", "cases[0].op", "cases[1].grid.m"):
        assert fragment in text


def test_problems_in_a_sweep_file_name_their_lines(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\ntiming: {rounds: 0}\ncases:\n  - op: matmul\n    dtypes: [int8]\n"
                    "    shapes: [{m: 4, n: 4}]\n  - 3\n")  # fmt: skip
    with pytest.raises(SpecError) as err:
        load_sweep(path)
    assert str(err.value) == (
        f"{path}: 4 problems in the sweep:\n"
        f"{path}:2: timing.rounds: expected a positive integer, got 0\n"
        f"{path}:5: cases[0].dtypes: unknown int8; allowed: fp64, fp32, bf16, fp16\n"
        f"{path}:6: cases[0].shapes[0]: missing k; matmul needs m, n, k\n"
        f"{path}:7: cases[1]: expected a mapping with keys op, role, dtypes, backends, masks, shapes, grid, where, "
        "note, got 3"
    )
    assert main(["measure", "--sweep", str(path), "--device", "cpu", "--quiet"]) == 2
    err_text = capsys.readouterr().err
    assert f"{path}:2: timing.rounds" in err_text and "Traceback" not in err_text


def test_module_doctests():
    import validate.harness.ops
    import validate.harness.sweep

    for module in (validate.harness.ops, validate.harness.sweep):
        assert doctest.testmod(module).failed == 0


def test_unknown_operation_lists_the_known_ones():
    from validate.harness import op_decl

    with pytest.raises(RegistryError, match="unknown operation 'conv'; known: matmul, bmm, softmax"):
        op_decl("conv")


def test_unknown_sweep_lists_the_builtin_ones():
    with pytest.raises(RegistryError) as err:
        load_sweep("gpu-huge")
    assert "cpu-ci" in str(err.value) and "gpu-standard" in str(err.value)


# -- CSV schema (no torch) ------------------------------------------------------------------------------------


def _row(**changes) -> Measurement:
    base = dict.fromkeys(COLUMNS, "x")
    base.update(case=0, seq_len=None, status="ok", check_error=1e-7, check_tolerance=2e-3, n_runs=5, rounds=1,
                warmup_runs=3, median_s=1e-3, q1_s=9e-4, q3_s=1.1e-3, iqr_s=2e-4, min_s=8e-4, flops=2e9, bytes=1e6,
                tflops=2.0, gbytes_per_s=1.0, l2_flush=False, seed=0, compute_units=2, clock_mhz=None,
                max_clock_mhz=None, memory_bytes=None, load_avg=0.5, other_cpu=None)  # fmt: skip
    base.update(changes)
    return Measurement(**base)


def test_csv_round_trip(tmp_path):
    rows = [_row(), _row(status="failed", median_s=None, check_error=math.inf, reason="wrong result, with a comma")]
    path = write_csv(rows, tmp_path / "d" / "x.csv")
    assert read_csv(path) == rows


def test_read_csv_names_the_missing_columns_and_bad_cells(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("op,median_s\nmatmul,1\n")
    with pytest.raises(SpecError, match="missing columns run_id, sweep"):
        read_csv(bad)
    path = write_csv([_row()], tmp_path / "ok.csv")
    path.write_text(path.read_text().replace(",ok,", ",fine,"))
    with pytest.raises(SpecError, match=r"ok.csv:2: column status: expected one of ok, failed, skipped"):
        read_csv(path)


def test_schema_md_documents_every_column_in_order():
    documented = re.findall(r"^\| `([a-z_0-9]+)` \|", SCHEMA.read_text(), flags=re.M)
    assert tuple(c for c in documented if c not in OPS) == COLUMNS


# -- running kernels (torch) ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def _run(data, **options):
    from validate.harness import run_sweep

    return run_sweep(sweep_from_dict(data), "cpu", **options)


def test_every_declared_operation_has_a_kernel(torch):
    from validate.harness.kernels import KERNELS

    assert set(KERNELS) == set(OPS)


def test_wrong_kernel_is_recorded_as_failed_and_never_timed(torch):
    from validate.harness.kernels import KERNELS

    calls = []

    def wrong_matmul(case, device, gen):
        prepared = KERNELS["matmul"](case, device, gen)

        def run():
            calls.append(1)
            return prepared.run().transpose(0, 1)  # a layout bug: right values, wrong places

        return type(prepared)(run, prepared.check, prepared.flops, prepared.bytes)

    rows = _run(_sweep({"op": "matmul", "shapes": [{"m": 64, "n": 64, "k": 32}]}, rounds=2),
                kernels={**KERNELS, "matmul": wrong_matmul})  # fmt: skip
    (row,) = rows
    assert row.status == "failed" and row.reason.startswith("wrong result: error")
    assert row.check_error > row.check_tolerance
    assert calls == [1]  # the correctness call only: no warm-up, no timing, no second round
    assert (row.median_s, row.n_runs, row.q1_s, row.tflops) == (None, None, None, None)


def test_a_kernel_that_raises_is_failed_and_an_unavailable_one_skipped(torch):
    from validate.harness.kernels import KERNELS, Unavailable

    def raises(case, device, gen):
        prepared = KERNELS["softmax"](case, device, gen)
        return type(prepared)(lambda: 1 / 0, prepared.check, 0.0, 0.0)

    def unavailable(case, device, gen):
        raise Unavailable("needs a Hopper GPU")

    rows = _run(_sweep({"op": "softmax", "shapes": [{"rows": 4, "cols": 8}]}, {"op": "exp", "grid": {"elements": [8]}}),
                kernels={**KERNELS, "softmax": raises, "exp": unavailable})  # fmt: skip
    assert (rows[0].status, rows[1].status) == ("failed", "skipped")
    assert "raised on first call: ZeroDivisionError" in rows[0].reason
    assert rows[1].reason == "needs a Hopper GPU" and rows[1].check_error is None


def test_timed_rows_passed_their_check_first_and_carry_provenance(torch):
    rows = _run(_sweep(
        {"op": "matmul", "shapes": [{"m": 96, "n": 80, "k": 72}]},
        {"op": "bmm", "shapes": [{"batch": 3, "m": 16, "n": 24, "k": 8}]},
        {"op": "softmax", "dtypes": ["fp32", "bf16"], "shapes": [{"rows": 300, "cols": 70}]},
        {"op": "unfused_attention", "masks": ["none", "causal"],
         "shapes": [{"batch": 2, "heads": 2, "seq_q": 40, "seq_kv": 40, "head_dim": 16}]},
        {"op": "sdpa", "backends": ["flash", "math", "auto"], "masks": ["none", "causal"],
         "shapes": [{"batch": 2, "heads": 4, "kv_heads": 2, "seq_q": 48, "seq_kv": 48, "head_dim": 16}]},
        {"op": "decode", "shapes": [{"batch": 2, "heads": 4, "kv_heads": 2, "cache_len": 100, "head_dim": 16}]},
        {"op": "copy", "role": "calibration", "grid": {"nbytes": [4096]}},
        {"op": "exp", "dtypes": ["fp64"], "grid": {"elements": [1000]}},
        {"op": "exp_chain", "role": "calibration", "grid": {"elements": [1000], "depth": [4]}},
        rounds=2,
    ))  # fmt: skip
    assert [r.status for r in rows] == ["ok"] * len(rows), [r.reason for r in rows if r.status != "ok"]
    for r in rows:
        assert r.check_error <= r.check_tolerance and r.median_s > 0 and r.q1_s <= r.median_s <= r.q3_s
        assert 1 <= r.rounds <= 2 and r.n_runs >= 3 and r.timer == "perf_counter" and r.device_kind == "cpu"
        assert r.torch == torch.__version__ and r.host and r.date and r.compute_units >= 1 and r.arch
    assert next(r for r in rows if r.op == "decode").seq_len == 101


def test_contended_timings_are_measured_again_in_later_rounds(torch, monkeypatch):
    import validate.harness.timing as timing

    data = _sweep({"op": "softmax", "shapes": [{"rows": 8, "cols": 8}]}, rounds=3)
    monkeypatch.setattr(timing, "_other_cpu", lambda before, after: 0.9)  # someone else took 90% of the machine
    (row,) = _run(data)
    assert (row.rounds, row.other_cpu) == (3, 0.9)
    monkeypatch.setattr(timing, "_other_cpu", lambda before, after: 0.0)
    (row,) = _run(data)
    assert (row.rounds, row.other_cpu) == (1, 0.0)


def test_waiting_for_a_quiet_host_stops_when_others_leave_or_time_runs_out(torch, monkeypatch):
    import validate.harness.timing as timing

    shares = iter([0.9, 0.8, 0.05, 0.9])
    monkeypatch.setattr(timing, "_other_cpu", lambda before, after: next(shares))
    assert timing.wait_for_quiet(0.15, 10.0, window_s=0.001) == 0.05
    monkeypatch.setattr(timing, "_other_cpu", lambda before, after: 0.9)
    assert timing.wait_for_quiet(0.15, 0.01, window_s=0.001) == 0.9
    assert timing.wait_for_quiet(0.15, 0.0) is None  # no wait asked: returns at once


def test_inputs_are_fresh_random_draws(torch):
    from validate.harness.kernels import KERNELS

    case = sweep_from_dict(_sweep({"op": "matmul", "shapes": [{"m": 8, "n": 8, "k": 8}]})).cases[0]
    outs = [KERNELS["matmul"](case, torch.device("cpu"), torch.Generator().manual_seed(s)).run() for s in (0, 1)]
    assert all(bool((o != 0).all()) for o in outs) and not torch.equal(*outs)


def test_sdpa_backends_absent_on_cpu_are_skipped_with_a_reason(torch):
    shape = {"batch": 1, "heads": 2, "seq_q": 32, "seq_kv": 32, "head_dim": 16}
    rows = _run(_sweep({"op": "sdpa", "backends": ["efficient", "cudnn"], "shapes": [shape]}))
    assert [r.status for r in rows] == ["skipped", "skipped"]
    assert all("SDPA backend" in r.reason for r in rows)


def test_flex_attention_runs_or_is_skipped_with_a_reason(torch):
    shape = {"batch": 1, "heads": 2, "seq_q": 128, "seq_kv": 128, "head_dim": 16, "block": 64}
    (row,) = _run(_sweep({"op": "flex_attention", "masks": ["block_sparse"], "shapes": [shape]}))
    assert row.status in ("ok", "skipped"), row.reason
    assert (row.status == "skipped" and row.reason) or row.check_error <= row.check_tolerance


def test_measure_cli_writes_the_csv(torch, tmp_path, capsys):
    sweep = tmp_path / "tiny.yaml"
    sweep.write_text("name: tiny\ntiming: {budget_s: 0.002, min_runs: 2, max_runs: 3}\n"
                     "cases:\n  - op: matmul\n    shapes: [{m: 8, n: 8, k: 8}]\n")  # fmt: skip
    out = tmp_path / "x.csv"
    assert main(["measure", "--sweep", str(sweep), "--device", "cpu", "--out", str(out), "--quiet"]) == 0
    assert "1 rows (1 ok, 0 failed, 0 skipped)" in capsys.readouterr().out
    assert read_csv(out)[0].sweep == "tiny"
    assert main(["measure", "--sweep", str(sweep), "--ops", "sdpa", "--out", str(out)]) == 2
    assert "--ops: sdpa not in sweep tiny; it has matmul" in capsys.readouterr().err


def test_gpu_rows_use_cuda_events_and_the_l2_flush(torch):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from validate.harness import run_sweep

    sweep = load_sweep("gpu-standard").only(("matmul", "sdpa"))
    picked = [c for c in sweep.cases if c.op == "matmul"][:1] + [c for c in sweep.cases if c.backend == "flash"][:2]
    rows = run_sweep(type(sweep)(sweep.name, "", 0, sweep.timing, tuple(picked)), "cuda")
    assert all(r.status == "ok" and r.timer == "cuda_event" and r.l2_flush for r in rows), [r.reason for r in rows]
    assert all(r.device_kind == "cuda" and r.arch.startswith("sm_") and r.compute_units > 1 for r in rows)


def test_min_passes_times_every_case_in_that_many_passes(torch):
    from validate.harness.kernels import KERNELS

    prepared = []

    def counted(case, device, gen):
        prepared.append(case.label)
        return KERNELS["matmul"](case, device, gen)

    spec = _sweep({"op": "matmul", "shapes": [{"m": 32, "n": 32, "k": 32}, {"m": 16, "n": 16, "k": 16}]}, rounds=3,
                  min_passes=2)  # fmt: skip
    rows = _run(spec, kernels={**KERNELS, "matmul": counted})
    assert all(r.status == "ok" and r.rounds >= 2 for r in rows)  # a third pass only for a contended timing
    assert len(prepared) == sum(r.rounds for r in rows)
    assert len(set(prepared[:2])) == 2  # pass 1 times both cases before pass 2 starts


def test_min_passes_above_rounds_is_named():
    with pytest.raises(AttnscopeError, match=r"timing: min_passes 3 exceeds rounds 2"):
        sweep_from_dict(_sweep({"op": "matmul", "shapes": [{"m": 8, "n": 8, "k": 8}]}, rounds=2, min_passes=3))
    assert sweep_from_dict(_sweep({"op": "matmul", "shapes": [{"m": 8, "n": 8, "k": 8}]})).timing.min_passes == 1
