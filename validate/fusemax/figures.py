"""Figures of the reproduced study (matplotlib, Agg backend); published values drawn beside ours."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from validate.fusemax.study import CONFIGS, EINSUM_COLUMNS, SWEEP_SEQ, StudyResult

E2E_PLATFORM = {"unfused": "flat", "flat": "flat", "cascade": "flat", "arch": "proposal", "binding": "proposal"}


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def _ratios(result: StudyResult, config: str, metric: str, end2end: bool) -> dict[tuple[str, str], float]:
    """Per row: unfused / config for latency (speedup), config / unfused for energy."""

    def total(c, row):
        value = row[metric]
        if end2end:
            e2e = {(r["model"], r["seq_len"]): r for r in result.end2end[E2E_PLATFORM[c]]}
            value += e2e[row["model"], row["seq_len"]][metric]
        return value

    base = {(r["model"], r["seq_len"]): total("unfused", r) for r in result.attention["unfused"]}
    out = {}
    for r in result.attention[config]:
        key = (r["model"], r["seq_len"])
        mine = total(config, r)
        out[key] = base[key] / mine if metric == "latency" else mine / base[key]
    return out


def _published_result(reference: Mapping[str, Mapping]) -> StudyResult | None:
    if not reference:
        return None
    attention = {c: [{"model": m, "seq_len": s, **v} for (m, s), v in reference.get(f"attn-{c}", {}).items()]
                 for c in CONFIGS}  # fmt: skip
    end2end = {p: [{"model": m, "seq_len": s, **v} for (m, s), v in reference.get(f"end2end-{p}", {}).items()]
               for p in ("flat", "proposal")}  # fmt: skip
    if not all(attention.values()):
        return None
    return StudyResult(True, attention, {}, end2end)


def draw_all(
    out: Path, published: StudyResult, corrected: StudyResult, sweep: list[dict], reference: Mapping
) -> list[str]:
    """Write every figure into ``out``; returns the file names."""
    paper = _published_result(reference)
    files = [
        _utilization(out, published, corrected, paper),
        _relative(out, published, corrected, paper, "latency", "speedup vs unfused", "speedup.png"),
        _relative(out, published, corrected, paper, "energy", "energy / unfused", "energy.png"),
        _breakdown(out, published),
        _pareto(out, sweep),
    ]
    plt.close("all")
    return files


def _bars(ax, series: Mapping[str, list[float]], labels: list[str]) -> None:
    width = 0.8 / len(series)
    for i, (name, values) in enumerate(series.items()):
        ax.bar([x + i * width for x in range(len(labels))], values, width, label=name)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(labels))], labels)
    ax.legend(fontsize=8)


def _utilization(out: Path, published: StudyResult, corrected: StudyResult, paper: StudyResult | None) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, column in zip(axes, ("util_2d", "util_1d"), strict=True):
        keys = {(r["model"], r["seq_len"]) for r in paper.attention["flat"]} if paper else None

        def mean_of(result, config, column=column, keys=keys):
            return _mean(
                r[column] for r in result.attention[config] if keys is None or (r["model"], r["seq_len"]) in keys
            )

        series = {"attnscope (as published)": [mean_of(published, c) for c in CONFIGS]}
        series["attnscope (corrected)"] = [mean_of(corrected, c) for c in CONFIGS]
        if paper:
            series["published"] = [_mean(r[column] for r in paper.attention[c]) for c in CONFIGS]
        _bars(ax, series, list(CONFIGS))
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{'2-D' if column == 'util_2d' else '1-D'} array utilization (mean over rows)")
    fig.tight_layout()
    fig.savefig(out / "utilization.png", dpi=110)
    return str(out / "utilization.png")


def _relative(out, published, corrected, paper, metric: str, ylabel: str, name: str) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    # Compare over the rows the published data has (it ships no XLM rows).
    rows = set(_ratios(paper, "flat", metric, False)) if paper else None

    def mean_over(result, config, end2end):
        ratios = _ratios(result, config, metric, end2end)
        return _mean(v for k, v in ratios.items() if rows is None or k in rows)

    for ax, end2end in zip(axes, (False, True), strict=True):
        series = {
            "attnscope (as published)": [mean_over(published, c, end2end) for c in CONFIGS],
            "attnscope (corrected)": [mean_over(corrected, c, end2end) for c in CONFIGS],
        }
        if paper:
            series["published"] = [mean_over(paper, c, end2end) for c in CONFIGS]
        _bars(ax, series, list(CONFIGS))
        ax.set_ylabel(ylabel)
        where = f"mean over the {len(rows)} published rows" if rows else "mean over rows"
        ax.set_title(("end-to-end" if end2end else "attention") + f" ({where})", fontsize=10)
        if metric == "latency":
            ax.set_yscale("log")
    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    return str(out / name)


def _breakdown(out: Path, published: StudyResult) -> str:
    configs = [c for c in CONFIGS if EINSUM_COLUMNS[c]]
    fig, axes = plt.subplots(1, len(configs), figsize=(4 * len(configs), 4), sharey=True)
    for ax, config in zip(axes, configs, strict=True):
        rows = [r for r in published.attention[config] if r["model"] == "BERT"]
        seqs = [r["seq_len"] for r in rows]
        bottom = [0.0] * len(rows)
        for einsum in EINSUM_COLUMNS[config]:
            values = [r[einsum] for r in rows]
            ax.bar(seqs, values, bottom=bottom, label=einsum)
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        ax.set_title(f"BERT, {config}: 2-D busy time per Einsum")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("fraction of latency")
    fig.tight_layout()
    fig.savefig(out / "breakdown-bert.png", dpi=110)
    return str(out / "breakdown-bert.png")


def _pareto(out: Path, sweep: list[dict]) -> str:
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for model in dict.fromkeys(r["model"] for r in sweep):
        rows = [r for r in sweep if r["model"] == model]
        ax.plot([r["area"] / 1e8 for r in rows], [r["latency"] for r in rows], "o-", label=model)
        for r in rows:
            ax.annotate(str(r["PE_dim"]), (r["area"] / 1e8, r["latency"]), fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("area (cm^2)")
    ax.set_ylabel("latency (s)")
    ax.set_title(f"FuseMax PE sweep at {SWEEP_SEQ}: latency vs area")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "pareto.png", dpi=110)
    return str(out / "pareto.png")
