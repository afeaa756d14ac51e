"""The FuseMax study against every published row (the reference is read only by the comparison)."""

import csv
import itertools
import re

import pytest

from attnscope.cli import main
from validate.fusemax.report import (
    PUBLISHED_HEADLINE,
    compare,
    headline,
    progress_steps,
    read_reference,
    reference_dir,
    reproduce,
)
from validate.fusemax.study import CONFIGS, SEQ_LENS, merge_results, pe_sweep, run_study

REFERENCE = read_reference(reference_dir())
needs_reference = pytest.mark.skipif(not REFERENCE, reason="shared/reference/fusemax not found beside the checkout")


@pytest.fixture(scope="module")
def published():
    return run_study(as_published=True)


@needs_reference
def test_every_published_cell_is_within_tolerance(published):
    comparisons = compare(published, REFERENCE)
    expected = sum(len(REFERENCE[f"attn-{c}"]) for c in CONFIGS) + sum(
        len(REFERENCE[f"end2end-{p}"]) for p in ("flat", "proposal")
    )
    assert len({(c.file, c.model, c.seq_len) for c in comparisons}) == expected
    bad = [c for c in comparisons if not c.within]
    assert not bad, bad[:5]


def test_headline_averages_within_five_percent_of_the_paper(published):
    ours = headline(published.attention, published.end2end)
    for key, paper in PUBLISHED_HEADLINE.items():
        assert ours[key] == pytest.approx(paper, rel=0.05), key


def test_xlm_rows_are_computed_by_the_same_code(published):
    xlm = [r for r in published.attention["binding"] if r["model"] == "XLM"]
    bert = [r for r in published.attention["binding"] if r["model"] == "BERT"]
    assert [r["seq_len"] for r in xlm] == list(SEQ_LENS)
    # E = F = 128 doubles the QK and SLNV work per score: XLM is slower than BERT at every length
    assert all(x["latency"] > b["latency"] for x, b in zip(xlm, bert, strict=True))


def test_corrected_model_differs_only_where_the_quirks_are():
    corrected = run_study(False, models=("BERT",), seqs=("1K",))
    quirky = run_study(True, models=("BERT",), seqs=("1K",))
    fix, pub = corrected.attention, quirky.attention
    assert fix["binding"][0]["latency"] < pub["binding"][0]["latency"]  # exp pipelined: 6 MAC cycles, not 7
    assert fix["arch"][0]["latency"] < pub["arch"][0]["latency"]  # no stall of 256 x LM
    assert fix["cascade"][0]["latency"] < pub["cascade"][0]["latency"]  # pipelined 1-D PEs
    reg = [r.designs["binding", "BERT", "1K"].cost.energy_breakdown_pj["pe_reg_2d"] for r in (corrected, quirky)]
    assert reg[0] > reg[1]  # every PE's register file counted (at the technology model's smaller energy per access)


def test_pe_sweep_trades_area_for_latency():
    rows = pe_sweep(True, models=("BERT",))
    assert [r["PE_dim"] for r in rows] == [16, 32, 64, 128, 256, 512]
    assert all(a["latency"] > b["latency"] and a["area"] < b["area"] for a, b in itertools.pairwise(rows))
    assert all(r["latency"] >= max(r["mem_lat"], r["comp_2d_lat"], r["comp_1d_lat"]) * (1 - 1e-12) for r in rows)


def test_reproduce_command_writes_csvs_figures_and_report(tmp_path, capsys):
    out = tmp_path / "fm"
    assert main(["reproduce", "fusemax", "--out", str(out), "--models", "BERT", "--seqs", "1K,4K", "--quiet"]) == 0
    for config in CONFIGS:
        with (out / f"attn-{config}.csv").open() as f:
            rows = list(csv.DictReader(f))
        assert [r["seq_len"] for r in rows] == ["1K", "4K"] and rows[0]["model"] == "BERT"
    with (out / "pareto.csv").open() as f:
        header = next(csv.reader(f))
    assert header == [
        "accel",
        "model",
        "PE_dim",
        "traffic",
        "mem_lat",
        "comp_2d_lat",
        "comp_1d_lat",
        "latency",
        "array_2d_area",
        "area",
    ]
    for name in ("utilization.png", "speedup.png", "energy.png", "breakdown-bert.png", "pareto.png", "report.md"):
        assert (out / name).stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "Headline averages" in report
    assert "## The same study at 45, 16 and 7 nm with the technology model" in report
    assert "| technology model, 7 nm |" in report and "| as published (Accelergy 45 nm) |" in report
    assert "wrote" in capsys.readouterr().out


def test_reproduce_rejects_unknown_models(tmp_path, capsys):
    assert main(["reproduce", "fusemax", "--out", str(tmp_path), "--models", "GPT"]) == 2
    assert "--models: unknown GPT; allowed: BERT, TrXL, T5, XLM" in capsys.readouterr().err


def test_merged_parts_are_the_whole_run():
    """One model's share per part, merged in model order: the rows and designs of the whole run, in its order."""
    whole_models = ("BERT", "T5")
    whole = run_study(False, models=whole_models, seqs=("1K",), node_nm=7, configs=("flat", "binding"))
    parts = [run_study(False, models=(m,), seqs=("1K",), node_nm=7, configs=("flat", "binding")) for m in whole_models]
    merged = merge_results(parts)
    assert merged.attention == whole.attention and merged.end2end == whole.end2end
    assert merged.designs.keys() == whole.designs.keys()
    with pytest.raises(ValueError, match="parts of one run"):
        merge_results([parts[0], run_study(True, models=("T5",), seqs=("1K",), configs=("flat",))])


def test_reproduce_over_workers_writes_what_one_process_writes(tmp_path):
    """``--jobs 2`` (worker processes) and ``--jobs 1``: the same CSVs byte for byte and the same report but for the
    time it took; progress is told every piece, and the steps add up to the bar's total."""
    told: dict[int, list[tuple[str, int]]] = {1: [], 2: []}
    for jobs in (1, 2):
        reproduce(tmp_path / str(jobs), ("BERT",), ("1K", "4K"), lambda label, n, j=jobs: told[j].append((label, n)),
                  figures=False, jobs=jobs)  # fmt: skip
    csvs = sorted(p.name for p in (tmp_path / "1").glob("*.csv"))
    assert len(csvs) == 16
    assert all((tmp_path / "1" / n).read_bytes() == (tmp_path / "2" / n).read_bytes() for n in csvs)

    def report(jobs):
        text = (tmp_path / str(jobs) / "report.md").read_text()
        return re.sub(r"[0-9.]+ s\b", "T s", text)

    assert report(1) == report(2)
    total = progress_steps(("BERT",), ("1K", "4K"))
    for jobs in (1, 2):
        assert sum(n for _, n in told[jobs]) == total
        assert sorted(label for label, _ in told[jobs]) == sorted(label for label, _ in told[1])


def test_reproduce_progress_bar_total_counts_every_step(tmp_path, capsys):
    """The bar ends at its total (it once counted 337 steps of 529)."""
    assert main(["reproduce", "fusemax", "--out", str(tmp_path), "--models", "T5", "--seqs", "1K", "--jobs", "1",
                 "--no-figures"]) == 0  # fmt: skip
    err = capsys.readouterr().err
    total = progress_steps(("T5",), ("1K",))
    counts = [(int(done), int(of)) for done, of in re.findall(r"\| *(\d+)/(\d+) \[", err)]
    assert counts and counts[-1] == (total, total)
    assert all(of == total and done <= total for done, of in counts)
