"""``attnscope reproduce fusemax``: the study's CSVs, figures and a report against the published numbers.

The published CSVs (``shared/reference/fusemax``) are read only here, to compare; the model never sees
them. Headline averages are arithmetic means of per-row ratios over all (model, sequence length) rows, as
the paper's 6.7x / 79% / 5.3x / 83% are.
"""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from validate.fusemax import WORKER_PRELOAD
from validate.fusemax.study import (
    CONFIGS,
    EINSUM_COLUMNS,
    END2END_PLATFORMS,
    PE_DIMS,
    SEQ_LENS,
    STUDY_MODELS,
    StudyResult,
    merge_results,
    pe_sweep,
    run_study,
    study_preset,
)

TOLERANCE = {"latency": 0.05, "traffic": 0.05, "energy": 0.10}  # relative
UTIL_TOLERANCE = 0.03  # absolute
PARETO_COLUMNS = (
    "accel", "model", "PE_dim", "traffic", "mem_lat", "comp_2d_lat", "comp_1d_lat", "latency", "array_2d_area", "area",
)  # fmt: skip
TECHNOLOGY_NODES_NM = (16, 7)
"""Nodes the report re-runs FLAT and FuseMax at with the technology model, beside the presets' own 45 nm."""
PUBLISHED_HEADLINE = {
    "attention speedup vs FLAT": 6.7,
    "attention energy vs FLAT": 0.79,
    "end-to-end speedup vs FLAT": 5.3,
    "end-to-end energy vs FLAT": 0.83,
}


def reference_dir() -> Path | None:
    """``$ATTNSCOPE_SHARED/reference/fusemax``, else ``../shared/reference/fusemax`` beside the checkout."""
    candidates = []
    if os.environ.get("ATTNSCOPE_SHARED"):
        candidates.append(Path(os.environ["ATTNSCOPE_SHARED"]) / "reference" / "fusemax")
    candidates.append(Path(__file__).resolve().parents[3] / "shared" / "reference" / "fusemax")
    return next((c for c in candidates if c.is_dir()), None)


def read_reference(directory: Path | None) -> dict[str, dict[tuple[str, str], dict[str, float]]]:
    """Published rows by file stem and (model, seq_len)."""
    out: dict[str, dict[tuple[str, str], dict[str, float]]] = {}
    if directory is None:
        return out
    for path in sorted(directory.glob("*.csv")):
        with path.open() as f:
            rows = {}
            for row in csv.DictReader(f):
                if "model" not in row:
                    break
                rows[row["model"], row["seq_len"]] = {k: float(v) for k, v in row.items() if k and _is_number(v)}
            out[path.stem] = rows
    return out


def _is_number(text: str | None) -> bool:
    try:
        float(text or "")
    except ValueError:
        return False
    return True


def write_csv(path: Path, rows: list[dict], columns: Iterable[str]) -> None:
    columns = list(columns)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})


def attention_columns(config: str) -> tuple[str, ...]:
    return ("model", "seq_len", "traffic", "latency", "energy", "util_2d", "util_1d", *EINSUM_COLUMNS[config])


@dataclass(frozen=True)
class Comparison:
    """One reproduced cell beside the published one."""

    file: str
    model: str
    seq_len: str
    column: str
    ours: float
    published: float

    @property
    def error(self) -> float:
        """Relative error for latency/traffic/energy, absolute for utilizations."""
        if self.column.startswith("util") or self.column in {"QK", "AV", "LM", "SLN", "SLD", "SLNV"}:
            return abs(self.ours - self.published)
        return abs(self.ours - self.published) / abs(self.published) if self.published else math.inf

    @property
    def within(self) -> bool:
        if self.column in TOLERANCE:
            return self.error <= TOLERANCE[self.column]
        return self.error <= UTIL_TOLERANCE


def compare(result: StudyResult, reference: Mapping[str, Mapping]) -> list[Comparison]:
    """Every reproduced cell that has a published counterpart."""
    out = []
    tables = {f"attn-{c}": rows for c, rows in result.attention.items()}
    tables |= {f"end2end-{p}": rows for p, rows in result.end2end.items()}
    for stem, rows in tables.items():
        published = reference.get(stem, {})
        for row in rows:
            ref = published.get((row["model"], row["seq_len"]))
            if ref is None:
                continue
            for column, value in row.items():
                if column in ("model", "seq_len") or column not in ref:
                    continue
                out.append(Comparison(stem, row["model"], row["seq_len"], column, float(value), ref[column]))
    return out


def headline(attention: Mapping[str, list[dict]], end2end: Mapping[str, list[dict]]) -> dict[str, float]:
    """Arithmetic means over rows of FuseMax (binding) vs FLAT, attention-only and end-to-end."""
    flat = {(r["model"], r["seq_len"]): r for r in attention["flat"]}
    fm = {(r["model"], r["seq_len"]): r for r in attention["binding"]}
    e2e_flat = {(r["model"], r["seq_len"]): r for r in end2end["flat"]}
    e2e_fm = {(r["model"], r["seq_len"]): r for r in end2end["proposal"]}
    keys = [k for k in fm if k in flat]
    if not keys:
        return {}

    def mean(values):
        values = list(values)
        return sum(values) / len(values)

    out = {
        "attention speedup vs FLAT": mean(flat[k]["latency"] / fm[k]["latency"] for k in keys),
        "attention energy vs FLAT": mean(fm[k]["energy"] / flat[k]["energy"] for k in keys),
    }
    keys2 = [k for k in keys if k in e2e_flat and k in e2e_fm]
    if keys2:
        out["end-to-end speedup vs FLAT"] = mean(
            (flat[k]["latency"] + e2e_flat[k]["latency"]) / (fm[k]["latency"] + e2e_fm[k]["latency"]) for k in keys2
        )
        out["end-to-end energy vs FLAT"] = mean(
            (fm[k]["energy"] + e2e_fm[k]["energy"]) / (flat[k]["energy"] + e2e_flat[k]["energy"]) for k in keys2
        )
    return out


def published_tables(reference: Mapping[str, Mapping]) -> tuple[dict[str, list[dict]], dict[str, list[dict]]]:
    """The published attention and end-to-end rows in the study-result shape (for the headline check)."""
    attention = {c: [{"model": m, "seq_len": s, **v} for (m, s), v in reference.get(f"attn-{c}", {}).items()]
                 for c in CONFIGS}  # fmt: skip
    end2end = {p: [{"model": m, "seq_len": s, **v} for (m, s), v in reference.get(f"end2end-{p}", {}).items()]
               for p in END2END_PLATFORMS}  # fmt: skip
    return attention, end2end


NODE_CONFIGS = ("flat", "binding")
"""The configurations re-run at each of :data:`TECHNOLOGY_NODES_NM`."""


@dataclass(frozen=True)
class _Task:
    """One piece of the study that a worker computes: one model's share of a run (``node_nm``: the corrected model
    at that node, FLAT and FuseMax only) or of a PE sweep."""

    run: str
    model: str
    as_published: bool
    node_nm: int | None = None
    sweep: bool = False

    def steps(self, seqs: tuple[str, ...]) -> int:
        """Progress steps: the cells (configurations and end-to-end platforms per sequence length) or sweep points."""
        if self.sweep:
            return len(PE_DIMS)
        return len(seqs) * (len(CONFIGS if self.node_nm is None else NODE_CONFIGS) + len(END2END_PLATFORMS))

    def compute(self, seqs: tuple[str, ...]) -> StudyResult | list[dict]:
        if self.sweep:
            return pe_sweep(self.as_published, (self.model,))
        configs = CONFIGS if self.node_nm is None else NODE_CONFIGS
        return run_study(self.as_published, (self.model,), seqs, node_nm=self.node_nm, configs=configs)


FIGURE_RUNS = ("published", "corrected", "published PE sweep")
"""The pieces the figures are drawn from (computed first, so that the figures are drawn while the rest runs)."""


def _tasks(models: tuple[str, ...]) -> list[_Task]:
    """Every piece of the study: what the figures need first, the longest first (the as-published and corrected
    runs, the as-published sweep), then the nodes and the corrected sweep."""
    runs = [("published", True, None), ("corrected", False, None)]
    runs += [(f"{node} nm", False, node) for node in TECHNOLOGY_NODES_NM]
    tasks = [_Task(run, m, published, node) for run, published, node in runs for m in models]
    sweeps = [_Task(f"{'published' if p else 'corrected'} PE sweep", m, p, sweep=True)
              for p in (True, False) for m in models]  # fmt: skip
    return tasks[: 2 * len(models)] + sweeps[: len(models)] + tasks[2 * len(models) :] + sweeps[len(models) :]


def progress_steps(models: Iterable[str], seqs: Iterable[str]) -> int:
    """The progress steps of :func:`reproduce` (what its ``progress`` callback is told, in all)."""
    seqs = tuple(seqs)
    return sum(t.steps(seqs) for t in _tasks(tuple(models)))


def _computed(tasks: list[_Task], seqs: tuple[str, ...], jobs: int):
    """(task, its result) of every task, in this process in order, or over ``jobs`` workers as they finish."""
    jobs = min(jobs, len(tasks))
    if jobs <= 1:
        for task in tasks:
            yield task, task.compute(seqs)
        return
    from concurrent.futures import as_completed

    from mappers.workers import worker_pool

    with worker_pool(jobs, WORKER_PRELOAD) as pool:
        futures = {pool.submit(task.compute, seqs): task for task in tasks}
        for future in as_completed(futures):
            yield futures[future], future.result()


def reproduce(
    out: Path,
    models: Iterable[str] = STUDY_MODELS,
    seqs: Iterable[str] = tuple(SEQ_LENS),
    progress: Callable[[str, int], None] | None = None,
    figures: bool = True,
    jobs: int = 1,
) -> dict:
    """Run the study both ways, write the CSVs, figures and report.md into ``out``; returns a summary.

    ``jobs`` > 1 spreads the study's pieces (one model's share of a run or sweep) over that many worker processes;
    the results are the same. ``progress(label, steps)`` is told each piece as it finishes and how many of
    :func:`progress_steps` it was.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"reproduce: jobs must be a positive integer (worker processes), got {jobs!r}")
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    models, seqs = tuple(models), tuple(seqs)
    tasks = _tasks(models)
    if jobs > 1:
        from mappers.workers import pool_context

        pool_context(WORKER_PRELOAD)  # the forkserver imports and warms up while this process loads matplotlib
    if figures:
        from validate.fusemax import figures as drawing  # matplotlib only when drawing
    reference = read_reference(reference_dir())
    done: dict[_Task, StudyResult | list[dict]] = {}

    merged: dict[str, StudyResult] = {}

    def run(name: str) -> StudyResult:
        """One run's parts merged (once: it is asked for when all its parts are done)."""
        if name not in merged:
            merged[name] = merge_results(done[t] for t in tasks if t.run == name)
        return merged[name]

    def sweep_rows(as_published: bool) -> list[dict]:
        return [row for t in tasks if t.sweep and t.as_published == as_published for row in done[t]]

    drawn: list[str] | None = None if figures else []
    for task, value in _computed(tasks, seqs, jobs):
        done[task] = value
        if progress:
            progress(f"{task.run} {task.model}", task.steps(seqs))
        if drawn is None and all(t in done for t in tasks if t.run in FIGURE_RUNS):
            # drawn while the workers finish the other pieces
            drawn = drawing.draw_all(out, run("published"), run("corrected"), sweep_rows(True), reference)
    figure_files = drawn or []
    published, corrected = run("published"), run("corrected")
    sweep, sweep_corrected = sweep_rows(True), sweep_rows(False)
    by_node = {45: corrected} | {node: run(f"{node} nm") for node in TECHNOLOGY_NODES_NM}
    for config, rows in published.attention.items():
        write_csv(out / f"attn-{config}.csv", rows, attention_columns(config))
        write_csv(out / f"corrected-attn-{config}.csv", corrected.attention[config], attention_columns(config))
    for platform, rows in published.end2end.items():
        cols = ("model", "seq_len", "traffic", "latency", "energy")
        write_csv(out / f"end2end-{platform}.csv", rows, cols)
        write_csv(out / f"corrected-end2end-{platform}.csv", corrected.end2end[platform], cols)
    write_csv(out / "pareto.csv", sweep, PARETO_COLUMNS)
    write_csv(out / "corrected-pareto.csv", sweep_corrected, PARETO_COLUMNS)

    comparisons = compare(published, reference)
    heads = {
        "published (paper)": PUBLISHED_HEADLINE,
        "reproduced (as published)": headline(published.attention, published.end2end),
        "corrected model": headline(corrected.attention, corrected.end2end),
    }
    if reference:
        shipped = published_tables(reference)
        keys = {(r["model"], r["seq_len"]) for r in shipped[0]["flat"]}
        heads[f"from the published CSVs ({len(keys)} rows shipped)"] = headline(*shipped)
        heads[f"reproduced, the same {len(keys)} rows"] = headline(
            {c: [r for r in rows if (r["model"], r["seq_len"]) in keys] for c, rows in published.attention.items()},
            {p: [r for r in rows if (r["model"], r["seq_len"]) in keys] for p, rows in published.end2end.items()},
        )
    elapsed = time.perf_counter() - start
    summary = {
        "out": str(out),
        "seconds": elapsed,
        "cells_compared": len(comparisons),
        "cells_within_tolerance": sum(c.within for c in comparisons),
        "headline": heads,
        "figures": figure_files,
        "technology": {f"{node} nm": headline(r.attention, r.end2end) for node, r in by_node.items()},
    }
    (out / "report.md").write_text(
        _report(published, corrected, comparisons, heads, sweep, figure_files, elapsed, reference)
        + _technology_section(published, by_node, models, seqs)
    )
    return summary


def _technology_section(published: StudyResult, by_node: Mapping[int, StudyResult], models, seqs) -> str:
    """The study at other technology nodes under the technology model: headline ratios, areas, energy shares."""
    lines = [
        "",
        "## The same study at 45, 16 and 7 nm with the technology model",
        "",
        "The as-published run above prices every action with the study's 45 nm Accelergy figures",
        "(`validate/fusemax/accelergy-45nm.yaml`). attnscope's presets instead take every energy, leakage and area",
        "from its technology model (`simulator/technology`: CACTI SRAM arrays by capacity, width and banks, functional",
        "units by datatype, DRAM per bit; sources in `docs/architecture.md`). The corrected model at the presets' own",
        "45 nm, and FLAT and FuseMax re-run at 16 and 7 nm (latency and traffic do not depend on the node; the",
        "mappings are re-chosen, since FLAT breaks latency ties by energy):",
        "",
        "| model and node | " + " | ".join(PUBLISHED_HEADLINE) + " | FLAT area mm^2 | FuseMax area mm^2 |",
        "|---|" + "---|" * (len(PUBLISHED_HEADLINE) + 2),
    ]
    pub = headline(published.attention, published.end2end)
    areas = {node: {c: study_preset(p, False, node).area_um2() * 1e-6 for c, p in (("flat", "flat-cloud"),
             ("binding", "fusemax-cloud"))} for node in by_node}  # fmt: skip
    pub_areas = {c: study_preset(p, True).area_um2() * 1e-6 for c, p in (("flat", "flat-cloud"),
                 ("binding", "fusemax-cloud"))}  # fmt: skip
    lines.append("| as published (Accelergy 45 nm) | " + " | ".join(_fmt(pub.get(k, math.nan)) for k in PUBLISHED_HEADLINE)
                 + f" | {_fmt(pub_areas['flat'])} | {_fmt(pub_areas['binding'])} |")  # fmt: skip
    for node, result in by_node.items():
        h = headline(result.attention, result.end2end)
        lines.append(f"| technology model, {node} nm | " + " | ".join(_fmt(h.get(k, math.nan)) for k in PUBLISHED_HEADLINE)
                     + f" | {_fmt(areas[node]['flat'])} | {_fmt(areas[node]['binding'])} |")  # fmt: skip
    model, seq = next(iter(models)), next(iter(seqs))
    lines += ["", f"Where the energy goes ({model} {seq}, attention; share of the total):", "",
              "| design | node | energy pJ | " + " | ".join(_SHARES) + " |", "|---|---|---|" + "---|" * len(_SHARES)]  # fmt: skip
    rows = [("as published", published)] + [(f"{n} nm", r) for n, r in by_node.items()]
    for config in ("flat", "binding"):
        for label, result in rows:
            cost = result.designs[config, model, seq].cost
            shares = _energy_shares(cost.energy_breakdown_pj)
            lines.append(
                f"| {config} | {label} | {_fmt(cost.energy_pj)} | "
                + " | ".join(f"{shares[k]:.1%}" for k in _SHARES)
                + " |"
            )
    h45, h7 = headline(by_node[45].attention, by_node[45].end2end), headline(by_node[7].attention, by_node[7].end2end)
    key = "attention energy vs FLAT"
    lines += [
        "",
        "What changes: latency and DRAM traffic are the same at every node (the clock and bandwidths are the",
        "presets'). Energy falls with the node for on-chip actions (CACTI arrays scale with the node, logic with the",
        "Stillmaker-Baas equations) but not for DRAM (pJ per bit of the HBM2 part), so DRAM's share grows as the node",
        "shrinks and the designs' energy ratio moves towards their DRAM-traffic ratio: FuseMax / FLAT attention energy",
        f"{_fmt(h45.get(key, math.nan))} at 45 nm and {_fmt(h7.get(key, math.nan))} at 7 nm (as published"
        f" {_fmt(pub.get(key, math.nan))}). Against the published 45 nm table, the model charges the PE register",
        "files by their size (a few tenths of a pJ per access, not the ~2.2 pJ of the pinned Accelergy, which ignored",
        "its scaling keys) for every PE, prices the fp16 MAC by Horowitz (ISSCC 2014) rather than the study's 17 pJ",
        "table entry, and gives the global buffers the artifact's banking (32 banks for FuseMax, 4 for FLAT), where the",
        "pinned Accelergy priced one bank: the model's one-bank 16 MiB array reproduces the published 12513 / 15751 pJ",
        "and 84.2 mm^2 (the calibration point). Areas here count every unit (adders included).",
    ]
    return "\n".join(lines) + "\n"


_SHARES = ("dram", "global buffer", "registers", "compute")


def _energy_shares(breakdown: Mapping[str, float]) -> dict[str, float]:
    """Energy breakdown grouped into DRAM, the global buffer, register files/staging, and functional units."""
    total = sum(breakdown.values()) or 1.0
    groups = dict.fromkeys(_SHARES, 0.0)
    for component, pj in breakdown.items():
        name = component.lower()
        if "dram" in name:
            groups["dram"] += pj
        elif "global_buffer" in name:
            groups["global buffer"] += pj
        elif "reg" in name:
            groups["registers"] += pj
        else:
            groups["compute"] += pj
    return {k: v / total for k, v in groups.items()}


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _pair(row: dict, published: dict | None, key: str) -> str:
    """``ours / published (error)`` for one cell."""
    ours = row[key]
    if not published or key not in published:
        return f"{ours:.3f} / -" if key.startswith("util") else f"{_fmt(ours)} / -"
    pub = published[key]
    if key.startswith("util"):
        return f"{ours:.3f} / {pub:.3f} ({abs(ours - pub):.3f})"
    return f"{_fmt(ours)} / {_fmt(pub)} ({abs(ours - pub) / abs(pub):.2%})"


def _report(published, corrected, comparisons, heads, sweep, figure_files, elapsed, reference) -> str:
    lines = [
        "# FuseMax study reproduced by attnscope",
        "",
        "Reproduces Nayak et al., *FuseMax* (MICRO 2024): attention and end-to-end latency, DRAM traffic, energy",
        "and utilization of five designs for BERT, TrXL, T5 and XLM at 1K-1M tokens, and the PE-array sweep.",
        "Every number comes from attnscope's general model: the cascades of `workloads/`, the presets of",
        "`simulator/presets/`, mappings built by `mappers/fusemax.py` or searched (`mappers/flat.py`,",
        "`mappers/search.py`), costed by `simulator/cost.py`. The published CSVs are read only for this report.",
        "",
        "Two runs: **as published** applies the artifact's quirks (compat settings `fusemax-artifact*`: register-file",
        "energy of one PE, +Cascade's dropped exp energy and 16 MiB tiling on FLAT's 32 MiB tables, +Architecture's",
        "stall of 256 x LM, +Cascade's unpipelined 1-D PEs); **corrected** is attnscope's default model.",
        "",
        f"Wall time of this run (both models, figures included): {elapsed:.1f} s.",
        "",
        "## Headline averages (FuseMax vs FLAT, arithmetic mean over rows)",
        "",
        "| | " + " | ".join(PUBLISHED_HEADLINE) + " |",
        "|---|" + "---|" * len(PUBLISHED_HEADLINE),
    ]
    for label, values in heads.items():
        lines.append(f"| {label} | " + " | ".join(_fmt(values.get(k, math.nan)) for k in PUBLISHED_HEADLINE) + " |")
    paper = PUBLISHED_HEADLINE
    rep = heads.get("reproduced (as published)", {})
    if rep:
        errs = ", ".join(f"{k}: {abs(rep[k] - paper[k]) / paper[k]:.1%}" for k in paper if k in rep)
        lines += ["", f"Relative error of the reproduced headline vs the paper: {errs}."]
    lines += ["", "## Agreement with every published cell", ""]
    if comparisons:
        within = sum(c.within for c in comparisons)
        lines.append(
            f"{within} of {len(comparisons)} cells within tolerance (latency, traffic 5%; energy 10%; utilizations 0.03)."
        )
        lines += ["", "| file | metric | cells | max error | mean error | within |", "|---|---|---|---|---|---|"]
        groups: dict[tuple[str, str], list[Comparison]] = {}
        for c in comparisons:
            groups.setdefault((c.file, c.column), []).append(c)
        for (file, column), cs in sorted(groups.items()):
            errors = [c.error for c in cs]
            unit = "" if column in TOLERANCE else " (abs)"
            show = (lambda x: f"{x:.2%}") if column in TOLERANCE else (lambda x: f"{x:.4f}")
            lines.append(
                f"| {file} | {column}{unit} | {len(cs)} | {show(max(errors))} | {show(sum(errors) / len(errors))} | "
                f"{sum(c.within for c in cs)}/{len(cs)} |"
            )
        worst = sorted(comparisons, key=lambda c: c.error / (TOLERANCE.get(c.column, UTIL_TOLERANCE)), reverse=True)
        lines += ["", "Worst cells relative to their tolerance:", "", "| file | model | seq | metric | ours | published | error |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for c in worst[:10]:
            lines.append(
                f"| {c.file} | {c.model} | {c.seq_len} | {c.column} | {_fmt(c.ours)} | {_fmt(c.published)} | "
                + (f"{c.error:.2%} |" if c.column in TOLERANCE else f"{c.error:.4f} (abs) |")
            )
    else:
        lines.append("No published reference found (set ATTNSCOPE_SHARED to the folder holding reference/fusemax).")
    lines += [
        "",
        "## Every row: reproduced (as published) vs published, and the corrected model",
        "",
        "Each cell: ours / published (relative error; absolute for utilizations). `-`: no published row (XLM).",
        "",
    ]
    for config in CONFIGS:
        lines += [f"### attention, {config}", "", "| model | seq | latency s | traffic B | energy pJ | util 2D | util 1D | corrected latency s | corrected energy pJ | mapping |",
                  "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        ref = reference.get(f"attn-{config}", {})
        for row, crow in zip(published.attention[config], corrected.attention[config], strict=True):
            design = published.designs[config, row["model"], row["seq_len"]]
            pub = ref.get((row["model"], row["seq_len"]))
            cells = [_pair(row, pub, k) for k in ("latency", "traffic", "energy", "util_2d", "util_1d")]
            lines.append(
                f"| {row['model']} | {row['seq_len']} | " + " | ".join(cells) + f" | {_fmt(crow['latency'])} | "
                f"{_fmt(crow['energy'])} | {'; '.join(design.mapping.notes)} |"
            )
        lines.append("")
    for platform in published.end2end:
        lines += [f"### end-to-end matmuls, {platform} platform", "", "| model | seq | latency s | traffic B | energy pJ | corrected energy pJ |", "|---|---|---|---|---|---|"]  # fmt: skip
        ref = reference.get(f"end2end-{platform}", {})
        for row, crow in zip(published.end2end[platform], corrected.end2end[platform], strict=True):
            pub = ref.get((row["model"], row["seq_len"]))
            cells = [_pair(row, pub, k) for k in ("latency", "traffic", "energy")]
            lines.append(f"| {row['model']} | {row['seq_len']} | " + " | ".join(cells) + f" | {_fmt(crow['energy'])} |")
        lines.append("")
    lines += ["## PE-array sweep (FuseMax, 256K, buffer by the study's rule)", "",
              "| model | PE_dim | traffic B | latency s | 2-D array area um^2 | area um^2 |", "|---|---|---|---|---|---|"]  # fmt: skip
    for r in sweep:
        lines.append(
            f"| {r['model']} | {r['PE_dim']} | {_fmt(r['traffic'])} | {_fmt(r['latency'])} | "
            f"{_fmt(r['array_2d_area'])} | {_fmt(r['area'])} |"
        )
    if figure_files:
        lines += ["", "## Figures", ""] + [f"![{Path(f).stem}]({Path(f).name})" for f in figure_files]
    lines += [
        "",
        "## Model assumptions that matter here",
        "",
        "- FLAT's choices come from `mappers/flat.py`: fused output-stationary at the coarsest granularity whose score",
        "  block fits FLAT's sizing rule (row blocks of 1, 2, 4 array widths), else weight-stationary; placements by",
        "  latency then energy. The real occupancy adds double-buffered hand-off tiles between the arrays; the excess",
        "  spills to DRAM.",
        "- FuseMax-family tilings take the largest P1 whose per-query state (Q, RM, RD, RNV; +Cascade also QK and SLN",
        "  rows) fits the buffer.",
        "- Unfused QK/AV and every end-to-end matmul are mapped by the exhaustive nest search (`mappers/search.py`);",
        "  the artifact used Timeloop's heuristic mapper, so these rows may differ where its mappings were not optimal.",
        f"- The PE sweep uses PE_dim in {list(PE_DIMS)}; the buffer's area scales with its capacity.",
        "- Not reproduced: the artifact's empirical extra buffer reads (fusemax-study.md §F.8).",
    ]
    return "\n".join(lines) + "\n"
