"""The two-table report of published GPU figures (validate/published.py, `attnscope validate --published`)."""

import shutil

import pytest

from einsum.errors import AttnscopeError
from validate.published import DATA_DIR, DATASETS, load_points, predict_points, report, scored, summarize


@pytest.fixture(scope="module")
def points():
    return predict_points(load_points())


def test_every_figure_names_its_source_shape_convention_and_role(points):
    assert {p.dataset for p in points} == set(DATASETS)
    for p in points:
        assert p.source and p.flop_convention and p.measured_s > 0 and p.shape
        assert p.role in ("calibration", "design", "validation")
    # the presets' GEMM microbenchmarks are in-sample; the FA3 paper's forward figures shaped the fused kernels
    assert all(p.role == "calibration" for p in points if "MAMF" in p.source and p.device)
    assert all(p.role == "design" for p in points if p.dataset == "published-attention-h100.csv")
    # the backward figures arrived after the backward model: validation only
    assert {p.direction for p in points if p.role == "validation" and p.op == "sdpa"} == {"fwd", "bwd"}


def test_gemm_within_10_percent_on_each_calibrated_devices_validation_points(points):
    calibrated = {p.device for p in points if p.role == "calibration" and p.op == "gemm"}
    groups = {g.device: g for g in summarize(p for p in scored(points) if p.op == "gemm")}
    assert groups, "no GEMM validation figures scored"
    for device, g in groups.items():
        assert device in calibrated
        assert g.mean_abs_error <= 0.10, (device, g)


def test_wall_clock_rows_carry_their_sources_measured_floor(points):
    wall = [p for p in points if p.timing == "wall" and p.predicted_s is not None]
    floor_row = next(p for p in wall if p.role == "calibration")
    assert floor_row.error == pytest.approx(0.0, abs=1e-12)  # the floor is that row's residue, by construction
    assert all(p.predicted_s > floor_row.measured_s * 0.5 for p in wall)


def test_report_has_the_two_tables_and_the_reasons(points):
    text = report(points)
    assert "## Table 1: data used to design or calibrate" in text
    assert "## Table 2: data used only to validate" in text
    assert "### Mean error per (device, kernel, direction)" in text
    assert "no preset for this GPU" in text and "SKU, clocks and cuBLAS version unstated" in text


def test_cli_writes_the_report(tmp_path, capsys):
    from attnscope.cli import main

    assert main(["validate", "--published", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "report.md").exists() and "h100-sxm" in capsys.readouterr().out
    assert main(["validate", "--published", "--device", "h100-sxm", "--out", str(tmp_path)]) == 2
    assert "drop --device" in capsys.readouterr().err


def test_a_broken_file_is_named_with_its_line(tmp_path):
    for name in DATASETS:
        shutil.copy(DATA_DIR / name, tmp_path / name)
    path = tmp_path / "published-gemm.csv"
    lines = path.read_text().splitlines()
    lines[1] = lines[1].replace(",64,12288,12288,", ",sixty-four,12288,12288,", 1)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(AttnscopeError, match=r"published-gemm\.csv:2: expected integer m, n, k"):
        load_points(tmp_path)
    shutil.copy(DATA_DIR / "published-gemm.csv", path)
    (tmp_path / "published-attention-train.csv").unlink()
    with pytest.raises(AttnscopeError, match=r"published-attention-train\.csv: missing"):
        load_points(tmp_path)
