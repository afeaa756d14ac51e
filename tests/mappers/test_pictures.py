"""Pictures a reader can trust (issue 16): roofs only in the axes' units, infeasible points counted and shown,
log axes where values span decades. One test per item, named after it."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import matplotlib.figure
import pytest

from attnscope.cli import main
from mappers.sweep import read_sweep_file, run_sweep
from mappers.sweep.pareto import LOG_SPAN, spans_decades

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sweeps" / "fusemax-pe-buffer.yaml"


@pytest.fixture(scope="module")
def pe_store(tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("pe") / "pe.sqlite"
    run_sweep(read_sweep_file(EXAMPLE), store)
    return store


def spy_figures(monkeypatch) -> list[matplotlib.figure.Figure]:
    """Every figure saved while the test runs."""
    saved = []
    original = matplotlib.figure.Figure.savefig

    def savefig(self, *args, **kwargs):
        saved.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    return saved


def test_pareto_says_how_many_infeasible_points_it_left_out(pe_store, capsys):
    with sqlite3.connect(pe_store) as conn:
        infeasible = conn.execute("SELECT COUNT(*) FROM points WHERE status = 'ok' AND feasible = 0").fetchone()[0]
    assert infeasible > 0  # the example has some: buffers too small for the mapping
    assert main(["pareto", str(pe_store), "--x", "area_mm2", "--y", "latency_s"]) == 0
    out = capsys.readouterr().out
    assert f"{infeasible} infeasible point(s) left out" in out
    assert main(["pareto", str(pe_store), "--x", "area_mm2", "--y", "latency_s", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["infeasible_left_out"] == infeasible
    assert main(["pareto", str(pe_store), "--x", "area_mm2", "--y", "latency_s", "--include-infeasible", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["infeasible_left_out"] == 0


def test_pareto_plot_shows_infeasible_points_and_log_axes_where_values_span_decades(
    pe_store, tmp_path, capsys, monkeypatch
):
    figures = spy_figures(monkeypatch)
    assert (
        main(["pareto", str(pe_store), "--x", "area_mm2", "--y", "latency_s", "--plot", str(tmp_path / "f.png")]) == 0
    )
    ax = figures[-1].axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(label.startswith("infeasible, not on the front (") for label in labels)
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")  # area and latency span decades here
    assert spans_decades([1.0, LOG_SPAN]) and not spans_decades([1.0, LOG_SPAN / 2]) and not spans_decades([0, 10])
    # restricted to one PE size, latencies span less than the log threshold: a linear axis
    assert main(["pareto", str(pe_store), "--x", "area_mm2", "--y", "latency_s", "--where", "pe_dim = 256",
                 "--plot", str(tmp_path / "g.png")]) == 0  # fmt: skip
    with sqlite3.connect(pe_store) as conn:
        lat = [r[0] for r in conn.execute("SELECT latency_s FROM points WHERE status = 'ok' AND pe_dim = 256")]
    assert figures[-1].axes[0].get_yscale() == ("log" if spans_decades(lat) else "linear")
    capsys.readouterr()


def test_roofline_draws_only_roofs_in_its_units_and_lists_the_others(tmp_path, capsys, monkeypatch):
    figures = spy_figures(monkeypatch)
    assert main(["roofline", "--device", "h100-sxm", "--model", "llama3-8b", "--seq", "4096",
                 "--out", str(tmp_path / "r")]) == 0  # fmt: skip
    ax = figures[-1].axes[0]
    drawn = [line.get_label() for line in ax.get_lines()]
    assert not any("exp" in label or label.startswith("L2") for label in drawn)
    assert any(label.startswith("tensor bf16") for label in drawn) and any("DRAM slope" in label for label in drawn)
    notes = " ".join(t.get_text() for t in ax.texts)
    assert "not drawn" in notes and "exp (SFU)" in notes and "Texp/s" in notes and "L2" in notes
    points = [t.get_text() for t in ax.get_legend().get_texts() if t.get_text().endswith("-bound)")]
    assert points and all("(" in p for p in points)
    capsys.readouterr()
